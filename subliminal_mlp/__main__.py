"""``python -m subliminal_mlp``: the same as the ``subliminal-mlp`` command."""

from .cli import entry

entry()
