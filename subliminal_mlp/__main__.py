"""``python -m subliminal_mlp``: the same as the ``subliminal-mlp`` command."""

import sys

from .cli import main

sys.exit(main())
