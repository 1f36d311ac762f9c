"""``python -m subliminal_mlp.cli``: the same as the ``subliminal-mlp`` command."""

import sys

from . import main

sys.exit(main())
