"""The training loop of the library: shuffled epochs of a ``(state, batch) -> (state, metrics)`` step.

Every loop has the same shape (protocol.md §1): minibatches of ``batch_size`` drawn from a fresh
permutation every epoch, the last partial batch kept. An epoch is a ``lax.scan`` over the full
batches followed by one step on the remainder; the epochs are a ``lax.scan`` too, so a whole
training run is one traced program with no host round-trip per step (:func:`scan_epochs`). The
engine (:mod:`~subliminal_mlp.core.engine`) runs the teacher (:func:`teacher_train_step`) and the
students through it; a user's own loop can too.

The paper's students never see a digit: their inputs are uniform noise in [-1, 1], one fixed set
of ``n_noise`` images per run. Noise image ``j`` is ``uniform(fold_in(noise_key, j))``
(:func:`noise_images`), generated inside the step that uses it, so the set is fixed and reused
every epoch but never stored.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from .inputs import per_example
from .losses import class_cross_entropy
from .prng import permutation

Tick = Optional[Callable[[jax.Array], None]]


def noise_images(noise_key: jax.Array, indices: jax.Array, input_dim: int = 784) -> jax.Array:
    """Noise images ``indices`` of the fixed set named by ``noise_key``: U[-1, 1]^input_dim each.

    Image ``j`` depends only on ``(noise_key, j)``, so any batch of the set can be generated on
    demand in any order, and the set is identical across epochs without being stored.

    >>> import jax, jax.numpy as jnp
    >>> key = jax.random.PRNGKey(0)
    >>> batch = noise_images(key, jnp.array([7, 3]))
    >>> batch.shape, bool(jnp.all(batch == noise_images(key, jnp.arange(8))[jnp.array([7, 3])]))
    ((2, 784), True)
    >>> bool(batch.min() >= -1.0) and bool(batch.max() <= 1.0)
    True
    """
    return per_example(noise_key, indices,
                      lambda k: jax.random.uniform(k, (input_dim,), jnp.float32, minval=-1.0, maxval=1.0))


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n`` examples: the full batches and the kept partial one.

    ``⌈n / batch_size⌉``: the paper's 60,000 noise images in batches of 1024 are 58 full batches and
    one of 608:

    >>> from subliminal_mlp.core.training import steps_per_epoch
    >>> steps_per_epoch(60_000, 1024), 60_000 - 58 * 1024, steps_per_epoch(2048, 1024)
    (59, 608, 2)
    """
    return -(-n // batch_size)


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A random permutation of ``range(n)`` split into full batches ``(n // B, B)`` and the rest.

    The permutation is ``jax.random.permutation(key, n)``, computed by :func:`prng.permutation`.

    10 examples in batches of 4: two full batches and a partial one of 2, together every index once,
    in ``jax.random.permutation``'s order:

    >>> import jax, numpy as np
    >>> from subliminal_mlp.core.training import epoch_batches
    >>> key = jax.random.PRNGKey(0)
    >>> full, rest = epoch_batches(key, 10, 4)
    >>> full.shape, rest.shape, sorted(np.concatenate([np.ravel(full), rest]).tolist()) == list(range(10))
    ((2, 4), (2,), True)
    >>> np.concatenate([np.ravel(full), rest]).tolist() == jax.random.permutation(key, 10).tolist()
    True
    """
    perm = permutation(key, n)
    n_full = n // batch_size
    return perm[: n_full * batch_size].reshape(n_full, batch_size), perm[n_full * batch_size :]


class Scanned(NamedTuple):
    """What :func:`scan_epochs` returns: the final ``state``, the per-step ``metrics`` and the probe ``trace``.

    (:func:`scan_epochs`' example unpacks one.)
    """

    state: Any
    metrics: Any
    trace: Any


def scan_epochs(step: Callable, state, key: jax.Array, n: int, batch_size: int, epochs: int, tick: Tick = None,
                probe: Optional[Callable] = None, probe_every: int = 1) -> Scanned:
    """``epochs`` shuffled epochs of ``step(state, batch_indices) -> (state, metrics)`` over ``range(n)``.

    The training-step contract of the library (Flax's ``train_step(state, batch) -> (state,
    metrics)``). Epoch ``e`` uses the permutation drawn from ``fold_in(key, e)``
    (:func:`epoch_batches`): a ``lax.scan`` over its full batches, then one step on the partial
    batch if any (protocol.md §1: "last partial batch kept"); the epochs are a ``lax.scan`` too.
    ``metrics`` are stacked by the scan: every leaf gets a leading axis of
    ``epochs · steps_per_epoch(n, batch_size)`` entries, in step order. ``tick(e)`` (a host
    callback, if given) runs at the end of each epoch.

    With ``probe``, ``trace`` is ``probe(state)`` evaluated inside the compiled loop (no host
    round-trip) before every ``probe_every``-th full batch of each epoch and once after the last
    step, stacked along a leading axis (:func:`probe_steps` gives the optimiser step count at each
    entry); without, ``trace`` is None.

    A step that counts its calls and reports its batch: 2 epochs of 10 examples in batches of 4 are
    ``2 · 3`` steps, each epoch visits every example once, and a probe of the count reads, at each
    entry, the number of steps :func:`probe_steps` says were taken before it:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp.core.training import probe_steps, scan_epochs
    >>> def step(count, idx):  # (state, batch) -> (state, metrics)
    ...     return count + 1, {"seen": jnp.zeros(10, jnp.int32).at[idx].add(1)}
    >>> run = jax.jit(lambda key: scan_epochs(step, 0, key, 10, 4, epochs=2, probe=lambda count: count))
    >>> state, metrics, trace = run(jax.random.PRNGKey(0))
    >>> seen = metrics["seen"]  # (steps, examples)
    >>> int(state), seen.shape, seen[:3].sum(0).tolist() == [1] * 10, seen[3:].sum(0).tolist() == [1] * 10
    (6, (6, 10), True, True)
    >>> trace.tolist(), probe_steps(10, 4, 2).tolist()
    ([0, 1, 3, 4, 6], [0, 1, 3, 4, 6])
    """
    if probe is not None and (not isinstance(probe_every, int) or probe_every < 1):
        raise ValueError(f"probe_every = {probe_every!r} is invalid: it must be an integer >= 1.")

    def epoch(state, e):
        full, rest = epoch_batches(jax.random.fold_in(key, e), n, batch_size)
        if probe is None:
            state, metrics = lax.scan(step, state, full)
            seen = None
        else:
            blank = jax.tree.map(lambda a: jnp.zeros(a.shape, a.dtype), jax.eval_shape(probe, state))

            def probed_step(s, xs):
                idx, j = xs
                seen = lax.cond(j % probe_every == 0, probe, lambda _: blank, s)
                s, m = step(s, idx)
                return s, (m, seen)

            state, (metrics, seen) = lax.scan(probed_step, state, (full, jnp.arange(full.shape[0])))
            seen = jax.tree.map(lambda a: a[::probe_every], seen)
        if rest.shape[0]:
            state, last = step(state, rest)
            metrics = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), metrics, last)
        if tick is not None:
            tick(e)
        return state, (metrics, seen)

    state, (metrics, seen) = lax.scan(epoch, state, jnp.arange(epochs))
    metrics = jax.tree.map(lambda a: a.reshape((-1,) + a.shape[2:]), metrics)
    if probe is None:
        return Scanned(state, metrics, None)
    last = probe(state)
    trace = jax.tree.map(lambda a, b: jnp.concatenate([a.reshape((-1,) + a.shape[2:]), b[None]]), seen, last)
    return Scanned(state, metrics, trace)


def teacher_train_step(apply_fn: Callable, n_classes: int, opt: optax.GradientTransformation,
                       images: jax.Array, labels: jax.Array, with_loss: bool = True) -> Callable:
    """``step((params, opt_state), idx) -> ((params, opt_state), {"loss": L})`` for the teacher.

    ``L = mean_b −log softmax(z_b[:n_classes])[y_b]`` over the batch ``idx`` of ``(images,
    labels)`` (the aux logits are not in the loss, protocol.md §1); one ``opt`` update of ∇L.
    With ``with_loss=False`` the metrics are ``{}`` and only ∇L is computed: XLA then fuses the
    step differently, so the parameters can differ from ``with_loss=True`` in the last bits.

    One SGD step on a batch of 3 of 5 examples, on a small MLP: the loss is the class cross-entropy
    computed in NumPy on the 2 class logits (the 2 aux logits do not enter), and the update is
    ``−lr·∇L``, with ``∇L`` by :func:`jax.grad` of that cross-entropy written with ``jax.nn``:

    >>> import jax, jax.numpy as jnp, numpy as np, optax
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.core.training import teacher_train_step
    >>> net = mlp((8,), n_classes=2, aux_logits=2, input_dim=4)
    >>> x, y = np.random.default_rng(0).uniform(-1, 1, (5, 4)).astype(np.float32), np.array([0, 1, 1, 0, 1])
    >>> p, opt, idx = net.init(jax.random.PRNGKey(0)), optax.sgd(0.1), np.array([4, 0, 2])
    >>> step = teacher_train_step(net.apply, 2, opt, jnp.asarray(x), jnp.asarray(y))  # jax arrays: indexed in the step
    >>> (p1, _), m = jax.jit(step)((p, opt.init(p)), idx)
    >>> z = np.asarray(net.apply(p, x[idx]), np.float64)[:, :2]
    >>> ce = np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(3), y[idx]])
    >>> L = lambda q: -jnp.mean(jax.nn.log_softmax(net.apply(q, x[idx])[:, :2])[jnp.arange(3), y[idx]])
    >>> g = jax.jit(jax.grad(L))(p)
    >>> sgd = jax.tree.map(lambda a, b, c: bool(np.allclose(a, b - 0.1 * c, atol=1e-6)), p1, p, g)
    >>> bool(np.isclose(m["loss"], ce, atol=1e-5)), all(jax.tree.leaves(sgd))
    (True, True)
    """
    loss_fn = lambda p, x, y: class_cross_entropy(apply_fn(p, x), y, n_classes)  # noqa: E731
    value_and_grad = jax.value_and_grad(loss_fn) if with_loss else (lambda *a: (None, jax.grad(loss_fn)(*a)))

    def step(state, idx):
        p, o = state
        loss, g = value_and_grad(p, images[idx], labels[idx])
        updates, o = opt.update(g, o, p)
        return (optax.apply_updates(p, updates), o), ({"loss": loss} if with_loss else {})

    return step


def probe_steps(n: int, batch_size: int, epochs: int, probe_every: int = 1) -> np.ndarray:
    """Optimiser steps taken before each entry of :func:`scan_epochs`' trace (same arguments).

    10 examples in batches of 4 (2 full batches and a partial one: 3 steps an epoch), 2 epochs:
    before each full batch of each epoch, then after the last step; with ``probe_every = 2``, before
    every other full batch:

    >>> from subliminal_mlp.core.training import probe_steps
    >>> probe_steps(10, 4, 2).tolist(), probe_steps(10, 4, 2, probe_every=2).tolist()
    ([0, 1, 3, 4, 6], [0, 3, 6])
    """
    n_full = n // batch_size
    per_epoch = steps_per_epoch(n, batch_size)
    within = np.arange(0, n_full, probe_every)
    steps = [e * per_epoch + within for e in range(epochs)]
    return np.concatenate(steps + [np.array([epochs * per_epoch])])
