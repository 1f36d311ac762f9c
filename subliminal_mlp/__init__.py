"""subliminal-mlp: subliminal learning in MLP classifiers, exact and fast, in JAX."""

__version__ = "0.1.0"
