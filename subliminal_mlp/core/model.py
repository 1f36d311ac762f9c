"""The MLP of the paper (protocol.md §1) as a Flax module, and pure functions on its parameters.

``MLP`` maps a flattened image to ``n_classes + m`` logits: the first ``n_classes`` are the class
logits the teacher is trained on, the last ``m`` are the *auxiliary* logits the aux-only student
imitates. Every weight matrix is drawn from N(0, 1/fan_in) (plain normal, not truncated) and every
bias is 0, as in the authors' script.

Everything outside this module works on the plain parameter pytree returned by
:func:`init_params`, so ``jax.vmap``, ``jax.jvp`` and ``jax.flatten_util.ravel_pytree`` apply
directly.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from .config import Config, is_integer
from .models import MLP, aux_logits, class_logits, kernel_init  # noqa: F401 (re-exported)
from .students import output_mask
from .students import perturb  # noqa: F401 (θ + σ·ξ, Jiang et al.; the start spec is students.perturbed)


def build_model(cfg: Config) -> MLP:
    """The Flax module for ``cfg`` (widths ``cfg.hidden_widths``, ``cfg.n_outputs`` logits)."""
    return MLP(hidden_widths=tuple(cfg.hidden_widths), n_outputs=cfg.n_outputs)


def init_params(key: jax.Array, cfg: Config) -> dict:
    """A fresh parameter pytree (the *reference* model): W ~ N(0, 1/fan_in), b = 0."""
    dummy = jnp.zeros((1, cfg.input_dim), jnp.float32)
    return build_model(cfg).init(key, dummy)["params"]


def apply(params: dict, x: jax.Array) -> jax.Array:
    """Logits ``f_θ(x)`` of shape ``(..., n_classes + m)`` of the paper's ReLU MLP, its widths read off ``params``.

    Only the paper's MLP: the parameters of ``sm.mlp(..., activation="tanh")`` have the same names and
    shapes, so they cannot tell; for any other model use its own ``model.apply(params, x)``. Parameters
    of another architecture (a split head, a Flax module of your own) are refused with a ValueError.
    """
    return _module_for(params).apply({"params": params}, x)


def features(params: dict, x: jax.Array) -> jax.Array:
    """Penultimate-layer activations of the paper's ReLU MLP (the last hidden layer after its ReLU);
    only that MLP's parameters, as :func:`apply`."""
    return _module_for(params).apply({"params": params}, x, return_features=True)[1]


def _module_for(params: dict) -> MLP:
    """The paper's MLP whose parameters ``params`` are (names ``hidden_0``, ..., ``head``); ValueError if not."""
    names = sorted(params) if hasattr(params, "keys") else None
    n_hidden = len(names) - 1 if names else 0
    expected = sorted([*(f"hidden_{i}" for i in range(n_hidden)), "head"])
    if names != expected or any(not hasattr(params[k], "keys") or sorted(params[k]) != ["bias", "kernel"]
                                for k in expected):
        got = names if names is not None else type(params).__name__
        raise ValueError(f"these parameters are not the paper's MLP's (layers hidden_0, ..., head, each a kernel "
                         f"and a bias; got {got}): subliminal_mlp's apply, features and accuracy read that MLP "
                         "off its parameters. For another model, call its own apply: model.apply(params, x), or "
                         "accuracy(..., apply_fn=model.apply).")
    widths = tuple(params[f"hidden_{i}"]["bias"].shape[-1] for i in range(n_hidden))
    return MLP(hidden_widths=widths, n_outputs=params["head"]["bias"].shape[-1])


def stack_params(*trees: dict) -> dict:
    """Stack parameter pytrees along a new leading axis (a stack of models for ``vmap``)."""
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def concat_params(*stacks: dict) -> dict:
    """Concatenate stacks of parameter pytrees along their leading axis."""
    return jax.tree.map(lambda *a: jnp.concatenate(a), *stacks)


def all_finite(tree) -> jax.Array:
    """True where every entry of every leaf of ``tree`` (a model's parameters) is finite (True for no leaf)."""
    return jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in jax.tree.leaves(tree)] or [jnp.bool_(True)]))


def nan_unless_finite(value: jax.Array, *trees) -> jax.Array:
    """``value`` where every parameter of ``trees`` is finite, else NaN: a measurement of a diverged model is
    NaN, as its accuracy is, never a number computed from non-finite parameters (argmax of NaN logits is
    class 0, so a trait rate of 1 or a subset accuracy of 0.098 would look real).

    >>> import jax.numpy as jnp
    >>> ok, bad = {"w": jnp.ones(2)}, {"w": jnp.array([1.0, jnp.inf])}
    >>> float(nan_unless_finite(jnp.float32(0.5), ok)), float(nan_unless_finite(0.5, ok, bad))
    (0.5, nan)
    """
    return jnp.where(all_finite(trees), value, jnp.nan)  # the trees together are one tree


def logit_mask(cfg: Config, which: str) -> jax.Array:
    """0/1 weights over the ``n_outputs`` logits: ``"aux"`` selects the m aux logits, ``"all"`` all."""
    if which not in ("aux", "all"):
        raise ValueError(f"which = {which!r}: choose 'aux' or 'all'.")
    return output_mask(which, cfg.n_classes, cfg.aux_logits)


def accuracy(params: dict, images: jax.Array, labels: jax.Array, n_classes: int, chunk: int = 1000,
             apply_fn=None) -> jax.Array:
    """Fraction of ``images`` (n, ...) whose argmax over the class logits equals ``labels``.

    ``apply_fn(params, x)`` is the model (a :class:`~subliminal_mlp.core.models.Model`'s ``apply``);
    by default the paper's ReLU MLP read off ``params`` (:func:`apply`): pass ``apply_fn`` for any
    other model, including an ``sm.mlp`` with another activation (its parameters look the same).

    The images are taken ``chunk`` at a time (a ``lax.map``), so the activations stay in cache:
    each logit is the same dot product whatever the chunking, so the result is too. NaN where any
    of ``params`` is non-finite (:func:`nan_unless_finite`): a diverged model's argmax of NaN logits
    is class 0, which would read as a real accuracy (in the traces of the studies too).

    >>> import jax.numpy as jnp
    >>> identity = lambda params, x: x  # a "model" whose logits are its inputs: 2 classes + m = 1
    >>> x = jnp.array([[2.0, 1.0, 9.0], [0.0, 1.0, 9.0], [3.0, 0.0, 0.0]])  # the aux logit is ignored
    >>> round(float(accuracy(None, x, jnp.array([0, 1, 1]), n_classes=2, chunk=2, apply_fn=identity)), 4)  # 2 of 3
    0.6667
    """
    if not is_integer(chunk, 1):
        raise ValueError(f"chunk = {chunk!r} is invalid: it must be an integer >= 1 (images per block).")

    f = apply if apply_fn is None else apply_fn

    def correct(x, y):
        return jnp.sum(jnp.argmax(class_logits(f(params, x), n_classes), axis=-1) == y)

    n = images.shape[0]
    n_full = n // chunk if n > chunk else 0
    cut = n_full * chunk
    total = correct(images[cut:], labels[cut:]) if cut < n else 0
    if n_full:
        blocks = (images[:cut].reshape(n_full, chunk, *images.shape[1:]), labels[:cut].reshape(n_full, chunk))
        total = total + jnp.sum(lax.map(lambda b: correct(*b), blocks))
    return nan_unless_finite(total / n, params)
