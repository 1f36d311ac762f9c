"""Training the teacher and distilling students, as pure functions on parameter pytrees.

Both loops have the same shape (protocol.md §1): Adam(lr), minibatches of ``batch_size`` drawn
from a fresh permutation every epoch, the last partial batch kept. An epoch is a ``lax.scan``
over the full batches followed by one step on the remainder; the epochs are a ``lax.scan`` too,
so a whole training run is one traced program with no host round-trip per step.

Students never see a digit: their inputs are uniform noise in [-1, 1], one fixed set of
``n_noise`` images per run. Noise image ``j`` is ``uniform(fold_in(noise_key, j))``, generated
inside the step that uses it, so the set is fixed and reused every epoch but never stored.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from .config import Config
from .losses import class_cross_entropy, distillation_loss
from .model import apply
from .inputs import per_example
from .students import adam
from .prng import permutation

Tick = Optional[Callable[[jax.Array], None]]


def optimizer(cfg: Config, learning_rate=None) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8) and ``cfg.learning_rate``.

    ``learning_rate`` overrides the config's and may be a traced scalar (a swept value).
    """
    return adam(cfg.learning_rate if learning_rate is None else learning_rate)


def noise_images(noise_key: jax.Array, indices: jax.Array, input_dim: int = 784) -> jax.Array:
    """Noise images ``indices`` of the fixed set named by ``noise_key``: U[-1, 1]^input_dim each.

    Image ``j`` depends only on ``(noise_key, j)``, so any batch of the set can be generated on
    demand in any order, and the set is identical across epochs without being stored.
    """
    return per_example(noise_key, indices,
                      lambda k: jax.random.uniform(k, (input_dim,), jnp.float32, minval=-1.0, maxval=1.0))


def gaussian_images(noise_key: jax.Array, indices: jax.Array, input_dim: int = 784) -> jax.Array:
    """Like :func:`noise_images`, but N(0, 1/3) per pixel: the mean and variance of U[-1, 1]."""
    return per_example(noise_key, indices,
                       lambda k: jax.random.normal(k, (input_dim,), jnp.float32) * (1.0 / 3.0) ** 0.5)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Optimiser steps in one epoch of ``n`` examples: the full batches and the kept partial one."""
    return -(-n // batch_size)


def epoch_batches(key: jax.Array, n: int, batch_size: int) -> tuple[jax.Array, jax.Array]:
    """A random permutation of ``range(n)`` split into full batches ``(n // B, B)`` and the rest.

    The permutation is ``jax.random.permutation(key, n)``, computed by :func:`prng.permutation`.
    """
    perm = permutation(key, n)
    n_full = n // batch_size
    return perm[: n_full * batch_size].reshape(n_full, batch_size), perm[n_full * batch_size :]


class Scanned(NamedTuple):
    """What :func:`scan_epochs` returns: the final ``state``, the per-step ``metrics`` and the probe ``trace``."""

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


def run_epochs(step: Callable, state, key: jax.Array, n: int, batch_size: int, epochs: int, tick: Tick = None,
               probe: Optional[Callable] = None, probe_every: int = 1):
    """:func:`scan_epochs` for a step without metrics, ``state = step(state, batch_indices)``.

    Returns ``state``, or ``(state, trace)`` when ``probe`` is given (see :func:`scan_epochs`).
    """
    out = scan_epochs(lambda s, idx: (step(s, idx), ()), state, key, n, batch_size, epochs, tick, probe, probe_every)
    return out.state if probe is None else (out.state, out.trace)


def teacher_train_step(apply_fn: Callable, n_classes: int, opt: optax.GradientTransformation,
                       images: jax.Array, labels: jax.Array, with_loss: bool = True) -> Callable:
    """``step((params, opt_state), idx) -> ((params, opt_state), {"loss": L})`` for the teacher.

    ``L = mean_b −log softmax(z_b[:n_classes])[y_b]`` over the batch ``idx`` of ``(images,
    labels)`` (the aux logits are not in the loss, protocol.md §1); one ``opt`` update of ∇L.
    With ``with_loss=False`` the metrics are ``{}`` and only ∇L is computed: XLA then fuses the
    step differently, so the parameters can differ from ``with_loss=True`` in the last bits.
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
    """Optimiser steps taken before each entry of :func:`run_epochs`' trace (same arguments)."""
    n_full = n // batch_size
    per_epoch = steps_per_epoch(n, batch_size)
    within = np.arange(0, n_full, probe_every)
    steps = [e * per_epoch + within for e in range(epochs)]
    return np.concatenate(steps + [np.array([epochs * per_epoch])])


def train_teacher(params: dict, images: jax.Array, labels: jax.Array, key: jax.Array, cfg: Config,
                  tick: Tick = None, learning_rate=None) -> dict:
    """Train a copy of ``params`` on (images, labels): Adam, mean class cross-entropy (aux logits unused).

    Returns the teacher's parameters after ``cfg.teacher_epochs`` epochs; ``key`` draws the
    epoch permutations; ``learning_rate`` (optional, may be traced) overrides the config's.
    """
    opt = optimizer(cfg, learning_rate)
    grad_fn = jax.grad(lambda p, x, y: class_cross_entropy(apply(p, x), y, cfg.n_classes))

    def step(state, idx):
        p, o = state
        g = grad_fn(p, images[idx], labels[idx])
        updates, o = opt.update(g, o, p)
        return optax.apply_updates(p, updates), o

    state = (params, opt.init(params))
    return run_epochs(step, state, key, images.shape[0], cfg.batch_size, cfg.teacher_epochs, tick)[0]


def distill_students(students: dict, teacher: dict, masks: jax.Array, noise_key: jax.Array,
                     shuffle_key: jax.Array, cfg: Config, tick: Tick = None,
                     probe: Optional[Callable[[dict], Any]] = None, probe_every: int = 1, learning_rate=None,
                     inputs: Optional[Callable[[jax.Array], jax.Array]] = None, n_inputs: Optional[int] = None,
                     temperature=None, on_grads: Optional[Callable] = None,
                     targets: Optional[Callable] = None):
    """Distil a stack of students on one teacher's logits over noise (protocol.md §1).

    ``students`` is a parameter pytree with a leading axis of size S (one entry per student),
    ``masks`` an ``(S, n_outputs)`` array of logit weights (see ``model.logit_mask``). Each step
    draws one noise batch, computes the teacher's logits on it *once*, and takes an Adam step for
    every student on ``cfg.loss`` between its logits and the teacher's over its mask. Adam is
    elementwise, so one optimiser state over the stack equals S independent optimisers.

    With ``probe`` (a function of the student stack, e.g. each student's test accuracy), returns
    ``(students, trace)``: ``probe`` evaluated every ``probe_every`` steps inside the compiled loop
    (see :func:`run_epochs`; :func:`probe_steps` gives the steps). ``learning_rate`` (optional,
    may be traced) overrides the config's.

    ``inputs`` replaces the noise: a function from batch indices into a fixed distillation set of
    ``n_inputs`` examples to the inputs themselves (e.g. ``lambda idx: images[idx]`` for real
    images); by default the set is the ``cfg.n_noise`` uniform-noise images of ``noise_key``.
    ``temperature`` (optional, may be traced) overrides ``cfg.temperature``: the KL loss is taken
    between ``softmax(y/T)`` and ``softmax(z/T)`` and multiplied by T² (Hinton et al. 2015).

    ``on_grads(students, grads) -> (grads, record)`` (optional) sees every step's distillation
    gradients before Adam, may change them, and returns a per-step record (an array) that is
    written into a buffer carried through the scan; the call then returns
    ``(students, probe_trace or None, records)`` with ``records`` stacked over all steps in order.

    ``targets(teacher_logits, x, idx) -> (target_logits, example_weights)`` (optional) replaces
    what each student imitates: ``target_logits`` (S, B, n_outputs) per student, e.g. another
    teacher's logits or sampled one-hot outputs (``losses.one_hot_logits``), and
    ``example_weights`` (S, B) weighting each example in each student's loss (0 drops it: filtering).
    """
    if inputs is None:
        inputs, n_inputs = (lambda idx: noise_images(noise_key, idx, cfg.input_dim)), cfg.n_noise
    elif n_inputs is None or n_inputs < cfg.batch_size:
        raise ValueError(f"n_inputs = {n_inputs!r}: give the size of the distillation set (>= batch_size "
                         f"{cfg.batch_size}) with inputs.")
    opt = optimizer(cfg, learning_rate)
    loss_fn = distillation_loss(cfg.loss)
    T = cfg.temperature if temperature is None else temperature
    if cfg.loss == "kl" and (temperature is not None or cfg.temperature != 1):
        base_loss = loss_fn
        loss_fn = lambda z, y, m, w=None: base_loss(z / T, y / T, m, w) * T**2  # noqa: E731
    grad_fn = jax.grad(lambda p, x, t, m, w=None: loss_fn(apply(p, x), t, m, w))
    grads_all = jax.vmap(grad_fn, in_axes=(0, None, None, 0))
    grads_each = jax.vmap(grad_fn, in_axes=(0, None, 0, 0, 0))

    def step(state, idx):
        p, o, *rec = state
        x = inputs(idx)
        t = apply(teacher, x)
        if targets is None:
            g = grads_all(p, x, t, masks)
        else:
            tt, w = targets(t, x, idx)
            g = grads_each(p, x, tt, masks, w)
        if on_grads is not None:
            g, r = on_grads(p, g)
            n, buf = rec
            rec = [n + 1, buf.at[n].set(r)]
        updates, o = opt.update(g, o, p)
        return (optax.apply_updates(p, updates), o, *rec)

    state = (students, opt.init(students))
    if on_grads is not None:
        n_steps = cfg.student_epochs * steps_per_epoch(n_inputs, cfg.batch_size)
        shape = jax.eval_shape(on_grads, students, students)[1]
        state = (*state, jnp.int32(0), jnp.zeros((n_steps, *shape.shape), shape.dtype))
    if probe is None:
        state, trace = run_epochs(step, state, shuffle_key, n_inputs, cfg.batch_size, cfg.student_epochs, tick), None
    else:
        state, trace = run_epochs(step, state, shuffle_key, n_inputs, cfg.batch_size, cfg.student_epochs, tick,
                                  probe=lambda st: probe(st[0]), probe_every=probe_every)
    if on_grads is not None:
        return state[0], trace, state[3]
    return state[0] if probe is None else (state[0], trace)


def distill_student(student: dict, teacher: dict, mask: jax.Array, noise_key: jax.Array,
                    shuffle_key: jax.Array, cfg: Config) -> dict:
    """One student: :func:`distill_students` with a stack of size 1."""
    stack = jax.tree.map(lambda a: a[None], student)
    out = distill_students(stack, teacher, mask[None], noise_key, shuffle_key, cfg)
    return jax.tree.map(lambda a: a[0], out)
