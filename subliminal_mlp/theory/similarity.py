"""Representation similarity between two models: linear CKA and feature cosine.

Linear CKA (Kornblith et al. 2019) of two feature matrices X (n, p) and Y (n, q) over the same n
inputs, after centring every column:

    CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)

It lies in [0, 1], equals 1 for Y = X·Q·s (Q orthogonal, s > 0, plus any translation), and
does not need the two models' units to correspond. The feature cosine (Jiang et al.'s measure, a
"penultimate-layer cosine similarity", protocol.md §1; the per-input mean is this library's reading)
is the mean over inputs of cos(x_i, y_i); it needs matched units (it is 1 only when the same
unit fires the same way in both models).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.model import features
from ..core.students import similarity_ratio


def _unit_scale(a: jax.Array, axis=None) -> jax.Array:
    """``a`` divided by its largest ``|a|`` (over ``axis``; all of it by default), so that its entries are at most 1
    in size: the similarities are scale-free, and their squares and products then neither overflow nor
    underflow in float32. All-zero parts stay zero; a part with a non-finite entry becomes NaN."""
    a = jnp.asarray(a)
    if not jnp.issubdtype(a.dtype, jnp.floating):
        a = a.astype(jnp.result_type(float))
    m = jnp.max(jnp.abs(a), axis=axis, keepdims=True)
    # inf/inf is NaN, and a finite entry beside an inf becomes 0: make the whole part NaN either way
    m = jnp.where(jnp.isfinite(m), m, jnp.nan)
    return a / jnp.where(m > 0, m, 1.0)


def linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
    """Linear CKA of feature matrices ``x`` (n, p) and ``y`` (n, q); 0 when either is constant, NaN when
    either is not finite (a diverged model's features).

    ``CKA = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` on column-centred ``X``, ``Y`` (Kornblith et al. 2019):
    1 for features equal up to a rotation and a scale; for one feature each, the squared correlation.

    >>> import jax, jax.numpy as jnp
    >>> round(float(linear_cka(jnp.array([[1.0], [2.0], [3.0]]), jnp.array([[1.0], [3.0], [2.0]]))), 6)  # corr 0.5
    0.25
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (100, 8))
    >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(1), (8, 8)))
    >>> round(float(linear_cka(x, 3.0 * x @ q + 1.0)), 5)
    1.0

    Computed scale-free: each matrix is scaled to a largest entry of 1, centred, and scaled to a Frobenius norm
    of 1 (``CKA`` does not change), so every term lies in [0, 1] and float32 neither overflows nor underflows
    (the textbook formula's ``‖XᵀX‖²_F`` grows like the fourth power of the features' scale). One compiled
    program per pair of shapes.
    """
    return _linear_cka(x, y)


@jax.jit
def _linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
    x, y = _centred_unit(x), _centred_unit(y)
    cross = jnp.sum(jnp.square(y.T @ x))
    den = jnp.sqrt(jnp.sum(jnp.square(x.T @ x))) * jnp.sqrt(jnp.sum(jnp.square(y.T @ y)))
    return similarity_ratio(cross, den)


def _centred_unit(a: jax.Array) -> jax.Array:
    """``a`` with every column centred and a Frobenius norm of 1 (zero if ``a`` is constant, NaN if not finite),
    computed at unit scale so that no intermediate overflows or underflows."""
    # such a column centres to 0 exactly (not to a mean's rounding, scaled up); one of infs stays non-finite (NaN)
    constant = jnp.all(a == a[:1], axis=0) & jnp.all(jnp.isfinite(a), axis=0)
    a = _unit_scale(a)  # before centring: the column sums of huge features overflow too
    a = _unit_scale(jnp.where(constant, 0.0, a - a.mean(axis=0)))
    norm = jnp.sqrt(jnp.sum(jnp.square(a)))  # >= 1 unless a is all zeros (its largest entry is ±1)
    return a / jnp.where(norm > 0, norm, 1.0)


def feature_cosine(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over rows of cos(x_i, y_i) for two (n, p) feature matrices (rows of zeros count as 0; NaN when a
    row is not finite, a diverged model's features). Each row is scaled to a largest entry of 1 first, so any
    scale of the features gives the same cosine in float32 (no overflow or underflow of ``x_i·y_i``).

    >>> import jax.numpy as jnp
    >>> round(float(feature_cosine(jnp.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]]),
    ...                            jnp.array([[2.0, 0.0], [4.0, 3.0], [1.0, 0.0]]))), 4)  # (1 + 24/25 + 0) / 3
    0.6533
    """
    return _feature_cosine(x, y)


@jax.jit
def _feature_cosine(x: jax.Array, y: jax.Array) -> jax.Array:
    x, y = _unit_scale(x, axis=-1), _unit_scale(y, axis=-1)  # per row: the cosine is scale-free, float32 is not
    dot = jnp.sum(x * y, axis=-1)
    den = jnp.linalg.norm(x, axis=-1) * jnp.linalg.norm(y, axis=-1)
    return jnp.mean(similarity_ratio(dot, den))


def penultimate_similarity(a: dict, b: dict, images: jax.Array, features_fn=None) -> dict[str, jax.Array]:
    """``{"cka", "cosine"}`` between the penultimate activations of models ``a`` and ``b`` on ``images``.

    ``features_fn(params, x)`` gives the activations (a :class:`~subliminal_mlp.core.models.Model`'s
    ``features``); by default the paper's MLP read off the parameters (:func:`.model.features`).

    Here ``features_fn`` is a one-layer network's activations ``tanh(x W)`` (its parameters: the matrix ``W``).
    A network against itself scores 1 on both; against another one, the CKA is the textbook formula on the
    centred features (NumPy, float64):

    >>> import numpy as np
    >>> from subliminal_mlp.theory.similarity import penultimate_similarity
    >>> rng = np.random.default_rng(0)
    >>> x, w_a, w_b = (rng.normal(size=shape).astype(np.float32) for shape in ((100, 4), (4, 8), (4, 8)))
    >>> layer = lambda w, x: np.tanh(x @ w)
    >>> {k: round(float(v), 4) for k, v in penultimate_similarity(w_a, w_a, x, layer).items()}
    {'cka': 1.0, 'cosine': 1.0}
    >>> h_a, h_b = (layer(w, x).astype(np.float64) for w in (w_a, w_b))
    >>> h_a, h_b = h_a - h_a.mean(axis=0), h_b - h_b.mean(axis=0)
    >>> cka = np.sum((h_b.T @ h_a) ** 2) / (np.linalg.norm(h_a.T @ h_a) * np.linalg.norm(h_b.T @ h_b))
    >>> bool(np.isclose(penultimate_similarity(w_a, w_b, x, layer)["cka"], cka, rtol=1e-4))
    True
    """
    f = features if features_fn is None else features_fn
    fa, fb = f(a, images), f(b, images)
    return {"cka": linear_cka(fa, fb), "cosine": feature_cosine(fa, fb)}
