"""``python -m subliminal_mlp.cli``: the same as the ``subliminal-mlp`` command."""

from . import entry

entry()
