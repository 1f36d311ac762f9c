"""The training and distillation losses (protocol.md §1, §2).

Distillation losses take a vector ``w`` of non-negative weights over the logits. The KL loss uses
only which logits it selects (``w_i > 0``; their values do not weight it): the softmax restricted
to them (``w`` = aux mask: the paper's aux-only student; ``w`` = ones: the all-logits student). The
squared-error loss is the theorem's weighted squared error ``Σ_i w_i (z_i - y_i)²``, each logit
weighted by its ``w_i``.

Batch reduction: the class cross-entropy is a *mean* over the batch (PyTorch's default, used for
the teacher); distillation losses are *summed* over the batch, as in the authors' script. With
Adam the overall scale of a loss changes nothing beyond Adam's ε.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def class_cross_entropy(logits: jax.Array, labels: jax.Array, n_classes: int) -> jax.Array:
    """Mean over the batch of ``-log softmax(z[:n_classes])[label]`` (aux logits not in the loss).

    Worked by hand: class logits ``(0, log 3)`` give ``softmax = (1/4, 3/4)``, so label 1 costs
    ``-log(3/4) = 0.2877`` whatever the aux logit (here 5) is:

    >>> import jax.numpy as jnp
    >>> z = jnp.array([[0.0, jnp.log(3.0), 5.0]])
    >>> round(float(class_cross_entropy(z, jnp.array([1]), n_classes=2)), 4)
    0.2877
    """
    z = logits[..., :n_classes]
    logp = jax.nn.log_softmax(z, axis=-1)
    return -jnp.mean(jnp.take_along_axis(logp, labels[..., None], axis=-1))


def masked_log_softmax(z: jax.Array, mask: jax.Array) -> jax.Array:
    """``log softmax`` over the logits where ``mask > 0``; entries off the mask are garbage (finite where ``z`` is).

    ``z_i - logsumexp_{j: mask_j>0} z_j``. Written so that gradients stay finite whatever the
    off-mask logits are (they receive exactly zero gradient through the masked sums).

    On the last three logits, as numpy's log-softmax of those three alone; the first logit (off the mask)
    changes nothing and gets no gradient:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from subliminal_mlp.core.losses import masked_log_softmax
    >>> z, mask, zs = jnp.array([[50.0, 1.0, 2.0, 3.0]]), jnp.array([0.0, 1.0, 1.0, 1.0]), np.array([1.0, 2.0, 3.0])
    >>> bool(np.allclose(masked_log_softmax(z, mask)[0, 1:], zs - np.log(np.exp(zs).sum()), atol=1e-6))
    True
    >>> jax.jit(jax.grad(lambda z: masked_log_softmax(z, mask)[0, 1]))(z).tolist()[0][0]
    0.0
    """
    on = mask > 0
    shift = jax.lax.stop_gradient(jnp.max(jnp.where(on, z, -jnp.inf), axis=-1, keepdims=True))
    e = jnp.exp(jnp.where(on, z - shift, -jnp.inf))
    return z - (jnp.log(jnp.sum(e, axis=-1, keepdims=True)) + shift)


def kl_distillation(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array,
                    example_weights: jax.Array | None = None) -> jax.Array:
    """``Σ_batch KL(softmax(y_S) ‖ softmax(z_S))`` over the logit subset ``S = {i: mask_i > 0}``.

    ``y`` = teacher logits, ``z`` = student logits; KL = Σ_{i∈S} p_i (log p_i − log q_i) with
    ``p = softmax(y_S)``, ``q = softmax(z_S)`` (the paper's distillation loss; its gradient in z
    is ``q − p`` on S and 0 off S). ``example_weights`` (shape: the batch) weights each example's
    KL in the sum; a weight of 0 removes the example (filtering).

    Worked by hand, on the aux logits only (mask ``(0, 0, 1, 1)``): teacher ``y_S = (0, log 3)``,
    ``p = (1/4, 3/4)``; student ``z_S = (0, 0)``, ``q = (1/2, 1/2)``; KL = ``¼ log ½ + ¾ log(3/2) = 0.1308``
    (the class logits, off the mask, do not count):

    >>> import jax.numpy as jnp
    >>> mask = jnp.array([0.0, 0.0, 1.0, 1.0])
    >>> y, z = jnp.array([[9.0, 1.0, 0.0, jnp.log(3.0)]]), jnp.array([[-4.0, 2.0, 0.0, 0.0]])
    >>> round(float(kl_distillation(z, y, mask)), 4), float(kl_distillation(y, y, mask))
    (0.1308, 0.0)
    """
    on = mask > 0
    logp = masked_log_softmax(teacher_logits, mask)
    logq = masked_log_softmax(student_logits, mask)
    p = jnp.where(on, jnp.exp(logp), 0.0)
    terms = jnp.where(on, p * (logp - logq), 0.0)
    if example_weights is None:
        return jnp.sum(terms)
    return jnp.sum(example_weights * jnp.sum(terms, axis=-1))


def mse_distillation(student_logits: jax.Array, teacher_logits: jax.Array, mask: jax.Array,
                     example_weights: jax.Array | None = None) -> jax.Array:
    """``Σ_batch Σ_i w_i (z_i − y_i)²``: weighted squared error on raw logits (Jiang et al.; §2).

    A sum over the batch and the logits, not a mean (the "mse" of the name is Jiang et al.'s; their
    reduction is not stated, protocol.md §4; with Adam the scale changes nothing beyond Adam's ε).
    ``example_weights`` (shape: the batch) weights each example's error in the sum.

    >>> import jax.numpy as jnp
    >>> z, y = jnp.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), jnp.zeros((2, 3))
    >>> float(mse_distillation(z, y, jnp.array([0.0, 1.0, 1.0])))  # (4 + 9) + (1 + 1)
    15.0
    >>> float(mse_distillation(z, y, jnp.array([0.0, 1.0, 1.0]), example_weights=jnp.array([1.0, 0.0])))
    13.0
    """
    terms = mask * jnp.square(student_logits - teacher_logits)
    if example_weights is None:
        return jnp.sum(terms)
    return jnp.sum(example_weights * jnp.sum(terms, axis=-1))


def one_hot_logits(labels: jax.Array, n: int, gap: float = 1e4) -> jax.Array:
    """Logits whose softmax is exactly ``one_hot(labels, n)`` in float32: 0 at the label, −gap elsewhere.

    ``exp(−1e4)`` underflows to 0, so a distillation loss fed these "teacher logits" trains on the
    one-hot target itself: the KL loss becomes the cross-entropy ``−log q_label`` with gradient
    ``q − one_hot`` (used for students trained on *sampled* teacher outputs).

    Their softmax is the one-hot target, and the KL loss on them is the cross-entropy ``−log q_label``
    (here ``q = softmax(0, 1, 2, 3)``, label 2):

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from subliminal_mlp.core.losses import one_hot_logits, kl_distillation
    >>> target, z = one_hot_logits(jnp.array([2]), 4), jnp.array([[0.0, 1.0, 2.0, 3.0]])
    >>> jax.nn.softmax(target).tolist()
    [[0.0, 0.0, 1.0, 0.0]]
    >>> ce = -np.log(np.exp(2.0) / np.exp([0.0, 1.0, 2.0, 3.0]).sum())
    >>> bool(np.isclose(kl_distillation(z, target, jnp.ones(4)), ce, atol=1e-5))
    True
    """
    return jnp.where(jax.nn.one_hot(labels, n, dtype=bool), 0.0, -gap).astype(jnp.float32)


DISTILLATION_LOSSES = {"kl": kl_distillation, "mse": mse_distillation}


def distillation_loss(kind: str):
    """The distillation loss function named ``kind`` (``"kl"`` or ``"mse"``).

    Worked by hand on the aux logits only (mask ``(0, 0, 1, 1)``): teacher ``y_S = (0, 0)``, ``p = (½, ½)``;
    student ``z_S = (0, log 3)``, ``q = (¼, ¾)``: KL = ``½ log 2 + ½ log(2/3) = ½ log(4/3) = 0.1438``;
    squared error ``0² + (log 3)² = 1.2069`` (the class logits, off the mask, do not count):

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.core.losses import distillation_loss
    >>> mask = jnp.array([0.0, 0.0, 1.0, 1.0])
    >>> y, z = jnp.array([[9.0, 1.0, 0.0, 0.0]]), jnp.array([[-4.0, 2.0, 0.0, jnp.log(3.0)]])
    >>> round(float(distillation_loss("kl")(z, y, mask)), 4), round(float(distillation_loss("mse")(z, y, mask)), 4)
    (0.1438, 1.2069)
    """
    try:
        return DISTILLATION_LOSSES[kind]
    except KeyError:
        raise ValueError(f"loss = {kind!r}: choose one of {tuple(DISTILLATION_LOSSES)}.") from None
