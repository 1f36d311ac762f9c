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
    """The Flax module for ``cfg`` (widths ``cfg.hidden_widths``, ``cfg.n_outputs`` logits).

    Two hidden layers and 10 classes + m = 5 aux logits:

    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.model import build_model
    >>> net = build_model(sm.Config(hidden_widths=(32, 16), aux_logits=5))
    >>> type(net).__name__, net.hidden_widths, net.n_outputs
    ('MLP', (32, 16), 15)
    """
    return MLP(hidden_widths=tuple(cfg.hidden_widths), n_outputs=cfg.n_outputs)


def init_params(key: jax.Array, cfg: Config) -> dict:
    """A fresh parameter pytree (the *reference* model): W ~ N(0, 1/fan_in), b = 0.

    A 784 → 32 → 10 + 3 MLP: its first kernel's 25,088 entries have mean ≈ 0 and standard deviation
    ≈ 1/√784 = 1/28; every bias is 0:

    >>> import jax, numpy as np
    >>> import subliminal_mlp as sm
    >>> p = sm.init_params(jax.random.PRNGKey(0), sm.Config(hidden_widths=(32,)))
    >>> w, b = np.asarray(p["hidden_0"]["kernel"]), np.asarray(p["head"]["bias"])
    >>> w.shape, bool(abs(w.std() * 28 - 1) < 0.02), bool(abs(w.mean() * 28) < 0.03), float(np.abs(b).max())
    ((784, 32), True, True, 0.0)
    """
    dummy = jnp.zeros((1, cfg.input_dim), jnp.float32)
    return build_model(cfg).init(key, dummy)["params"]


def apply(params: dict, x: jax.Array) -> jax.Array:
    """Logits ``f_θ(x)`` of shape ``(..., n_classes + m)`` of the paper's ReLU MLP, its widths read off ``params``.

    Only the paper's MLP: the parameters of ``sm.mlp(..., activation="tanh")`` have the same names and
    shapes, so they cannot tell; for any other model use its own ``model.apply(params, x)``. Parameters
    of another architecture (a split head, a Flax module of your own) are refused with a ValueError.

    Checked against the same network written in numpy:

    >>> import jax, numpy as np
    >>> import subliminal_mlp as sm
    >>> p = jax.tree.map(np.asarray, sm.init_params(jax.random.PRNGKey(0), sm.Config(hidden_widths=(32,))))
    >>> x = np.random.default_rng(0).uniform(-1, 1, (3, 784)).astype(np.float32)
    >>> h = np.maximum(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"], 0)  # the ReLU layer
    >>> logits = sm.apply(p, x)
    >>> logits.shape, bool(np.allclose(logits, h @ p["head"]["kernel"] + p["head"]["bias"], atol=1e-5))
    ((3, 13), True)
    >>> sm.apply({"w": np.zeros((784, 13))}, x)
    Traceback (most recent call last):
    ValueError: these parameters are not the paper's MLP's ...
    """
    return _module_for(params).apply({"params": params}, x)


def features(params: dict, x: jax.Array) -> jax.Array:
    """Penultimate-layer activations of the paper's ReLU MLP (the last hidden layer after its ReLU);
    only that MLP's parameters, as :func:`apply`.

    The hidden ReLU layer, in numpy, and the logits as the head applied to it:

    >>> import jax, numpy as np
    >>> import subliminal_mlp as sm
    >>> p = jax.tree.map(np.asarray, sm.init_params(jax.random.PRNGKey(0), sm.Config(hidden_widths=(32,))))
    >>> x = np.random.default_rng(0).uniform(-1, 1, (3, 784)).astype(np.float32)
    >>> h = sm.features(p, x)
    >>> h.shape, bool(np.allclose(h, np.maximum(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"], 0), atol=1e-5))
    ((3, 32), True)
    >>> bool(np.allclose(sm.apply(p, x), np.asarray(h) @ p["head"]["kernel"] + p["head"]["bias"], atol=1e-5))
    True
    """
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
    """Stack parameter pytrees along a new leading axis (a stack of models for ``vmap``).

    Two "models" as one stack, and a function of one model's parameters ``vmap``-ed over the stack
    (for real models: ``jax.vmap(sm.apply, (0, None))(stack, x)``, one set of logits per model):

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp.core.model import stack_params
    >>> both = stack_params({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 4.0])})
    >>> both["w"].tolist(), jax.vmap(lambda p: p["w"].sum())(both).tolist()  # 1 + 2, 3 + 4
    ([[1.0, 2.0], [3.0, 4.0]], [3.0, 7.0])
    """
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def concat_params(*stacks: dict) -> dict:
    """Concatenate stacks of parameter pytrees along their leading axis.

    A stack of one model and a stack of two make a stack of three:

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.core.model import concat_params, stack_params
    >>> one, two = stack_params({"w": jnp.zeros(2)}), stack_params({"w": jnp.ones(2)}, {"w": jnp.full(2, 2.0)})
    >>> concat_params(one, two)["w"].tolist()
    [[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]
    """
    return jax.tree.map(lambda *a: jnp.concatenate(a), *stacks)


def all_finite(tree) -> jax.Array:
    """True where every entry of every leaf of ``tree`` (a model's parameters) is finite (True for no leaf).

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.core.model import all_finite
    >>> ok, nan = {"w": jnp.ones(2), "b": jnp.zeros(2)}, {"w": jnp.ones(2), "b": jnp.array([0.0, jnp.nan])}
    >>> inf = {"w": jnp.array([1.0, -jnp.inf])}
    >>> bool(all_finite(ok)), bool(all_finite(nan)), bool(all_finite(inf)), bool(all_finite({}))
    (True, False, False, True)
    """
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
    """0/1 weights over the ``n_outputs`` logits: ``"aux"`` selects the m aux logits, ``"all"`` all.

    With 10 classes + m = 3, the aux mask picks logits 10, 11 and 12 (10 + 11 + 12 = 33 of ``0, 1, ..., 12``):

    >>> import numpy as np
    >>> import subliminal_mlp as sm
    >>> aux, every = np.asarray(sm.logit_mask(sm.Config(), "aux")), np.asarray(sm.logit_mask(sm.Config(), "all"))
    >>> float(aux @ np.arange(13.0)), float(aux.sum()), float(every.sum())
    (33.0, 3.0, 13.0)
    """
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
