"""Representation similarity between two models: linear CKA and feature cosine.

Linear CKA (Kornblith et al. 2019) of two feature matrices X (n, p) and Y (n, q) over the same n
inputs, after centring every column:

    CKA(X, Y) = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F · ‖Yᵀ Y‖_F)

It lies in [0, 1], equals 1 for Y = X·Q·s (Q orthogonal, s > 0, plus any translation), and
does not need the two models' units to correspond. The feature cosine (Jiang et al.'s measure)
is the mean over inputs of cos(x_i, y_i); it needs matched units (it is 1 only when the same
unit fires the same way in both models).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ..core.model import features
from ..core.students import similarity_ratio


def linear_cka(x: jax.Array, y: jax.Array) -> jax.Array:
    """Linear CKA of feature matrices ``x`` (n, p) and ``y`` (n, q); 0 when either is constant, NaN when
    either is not finite (a diverged model's features).

    ``CKA = ‖Yᵀ X‖²_F / (‖Xᵀ X‖_F ‖Yᵀ Y‖_F)`` on column-centred ``X``, ``Y`` (Kornblith et al. 2019):
    1 for features equal up to a rotation and a scale; for one feature each, the squared correlation.

    >>> import jax, jax.numpy as jnp
    >>> float(linear_cka(jnp.array([[1.0], [2.0], [3.0]]), jnp.array([[1.0], [3.0], [2.0]])))  # corr 0.5
    0.25
    >>> x = jax.random.normal(jax.random.PRNGKey(0), (100, 8))
    >>> q, _ = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(1), (8, 8)))
    >>> round(float(linear_cka(x, 3.0 * x @ q + 1.0)), 5)
    1.0
    """
    x = x - x.mean(axis=0)
    y = y - y.mean(axis=0)
    cross = jnp.sum(jnp.square(y.T @ x))
    den = jnp.sqrt(jnp.sum(jnp.square(x.T @ x)) * jnp.sum(jnp.square(y.T @ y)))
    return similarity_ratio(cross, den)


def feature_cosine(x: jax.Array, y: jax.Array) -> jax.Array:
    """Mean over rows of cos(x_i, y_i) for two (n, p) feature matrices (rows of zeros count as 0; NaN when a
    row is not finite, a diverged model's features).

    >>> import jax.numpy as jnp
    >>> round(float(feature_cosine(jnp.array([[1.0, 0.0], [3.0, 4.0], [0.0, 0.0]]),
    ...                            jnp.array([[2.0, 0.0], [4.0, 3.0], [1.0, 0.0]]))), 4)  # (1 + 24/25 + 0) / 3
    0.6533
    """
    dot = jnp.sum(x * y, axis=-1)
    den = jnp.linalg.norm(x, axis=-1) * jnp.linalg.norm(y, axis=-1)
    return jnp.mean(similarity_ratio(dot, den))


def penultimate_similarity(a: dict, b: dict, images: jax.Array, features_fn=None) -> dict[str, jax.Array]:
    """``{"cka", "cosine"}`` between the penultimate activations of models ``a`` and ``b`` on ``images``.

    ``features_fn(params, x)`` gives the activations (a :class:`~subliminal_mlp.core.models.Model`'s
    ``features``); by default the paper's MLP read off the parameters (:func:`.model.features`).
    """
    f = features if features_fn is None else features_fn
    fa, fb = f(a, images), f(b, images)
    return {"cka": linear_cka(fa, fb), "cosine": feature_cosine(fa, fb)}
