"""The ``subliminal-mlp theorem`` subcommand (placeholder until theory.py lands)."""


def register(sub) -> None:
    """Add the ``theorem`` subcommand to the ``subliminal-mlp`` parser."""
