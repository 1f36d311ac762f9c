"""Models as ``(init, apply)`` pairs on parameter pytrees: the paper's MLP, a split-head MLP, yours.

A :class:`Model` is what training, evaluation, the experiment engine and the theory kernels take:

* ``init(key) -> params``: a fresh parameter pytree (a plain nested dict of arrays);
* ``apply(params, x) -> logits`` with ``x`` of shape ``(batch, *input_shape)`` and logits of shape
  ``(batch, n_classes + aux_logits)``: the first ``n_classes`` are the *class logits* the teacher
  learns, the last ``aux_logits`` (m) the *auxiliary logits* the aux-only student imitates;
* ``features(params, x)`` (optional): the penultimate activations, for representation similarity.

Because parameters are plain pytrees, ``jax.vmap`` (a stack of students), ``jax.jvp`` (the
theorem's output tangent ``v = J_x Δθ_T``) and ``jax.flatten_util.ravel_pytree`` apply directly.

Built-ins: :func:`mlp` (the paper's 784 → 256 → 256 → 10 + m ReLU MLP, any widths and activation)
and :func:`split_head_mlp` (one trunk, a separate class head and aux head, as in "Learning through
noise", arXiv 2605.23645). Any Flax module plugs in through :func:`from_flax`, and any pair of
functions through :class:`Model` itself::

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp.core.models import Model, mlp
    >>> net = mlp((32,), aux_logits=3)
    >>> params = net.init(jax.random.PRNGKey(0))
    >>> net.apply(params, jnp.zeros((5, 784))).shape
    (5, 13)
    >>> linear = Model(init=lambda k: {"w": jax.random.normal(k, (784, 13)) / 28.0},
    ...                apply=lambda p, x: x @ p["w"], n_classes=10, aux_logits=3)
    >>> check_model(linear).shape
    (2, 13)
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from .config import is_integer, is_sequence
from .results import plain_scalar, setting_json

Params = Any

#: N(0, 1/fan_in) for a (fan_in, fan_out) kernel; "normal" is the untruncated normal (protocol.md §1).
kernel_init = nn.initializers.variance_scaling(1.0, "fan_in", "normal")
def identity(x: jax.Array) -> jax.Array:
    """``x`` (a linear network's activation)."""
    return x


#: Activations :func:`mlp` accepts by name (any callable works too).
ACTIVATIONS = {"relu": nn.relu, "tanh": jnp.tanh, "gelu": nn.gelu, "sigmoid": nn.sigmoid, "identity": identity}


class ModelError(ValueError):
    """A model does not fit the experiment (wrong output count, input shape, or parameters)."""


@dataclass(frozen=True)
class Model:
    """A classifier with m auxiliary logits, as an ``(init, apply)`` pair on parameter pytrees.

    ``init(key) -> params``; ``apply(params, x) -> logits`` of shape ``(..., n_classes + aux_logits)``
    for ``x`` of shape ``(..., *input_shape)``; ``features(params, x)`` (optional) the penultimate
    activations. ``settings`` describes the model in records (name/value pairs). Models compare and
    hash by their fields, so the same model built twice is one model: students given it are distilled
    as one group. (Each ``run`` compiles its program afresh; JAX's persistent compilation cache,
    ``JAX_COMPILATION_CACHE_DIR``, makes the second compile of the same program fast.)

    A linear classifier of 4 inputs with 2 classes and m = 1 aux logit (on ones, its logits are the
    column sums of ``w``: 0+3+6+9, 1+4+7+10, 2+5+8+11), and the built-in MLP built twice:

    >>> import jax, jax.numpy as jnp
    >>> import subliminal_mlp as sm
    >>> net = sm.Model(init=lambda k: {"w": jnp.arange(12.0).reshape(4, 3)}, apply=lambda p, x: x @ p["w"],
    ...                n_classes=2, aux_logits=1, input_shape=(4,))
    >>> params = net.init(jax.random.PRNGKey(0))
    >>> net.n_outputs, sm.check_model(net).shape, net.apply(params, jnp.ones((1, 4))).tolist()
    (3, (2, 3), [[18.0, 22.0, 26.0]])
    >>> sm.mlp((8,)) == sm.mlp((8,)), sm.mlp((8,)) == sm.mlp((16,))  # compared by their fields
    (True, False)
    """

    init: Callable[[jax.Array], Params]
    apply: Callable[[Params, jax.Array], jax.Array]
    n_classes: int = 10
    aux_logits: int = 3
    input_shape: tuple[int, ...] = (784,)
    features: Optional[Callable[[Params, jax.Array], jax.Array]] = None
    name: str = "model"
    settings: tuple[tuple[str, Any], ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "input_shape", tuple(self.input_shape))
        for field in ("n_classes", "aux_logits"):
            v = getattr(self, field)
            if not is_integer(v, 2 if field == "n_classes" else 0):
                raise ModelError(f"{field} = {v!r} is invalid: it must be an integer >= "
                                 f"{2 if field == 'n_classes' else 0}.")

    @property
    def n_outputs(self) -> int:
        """``n_classes + aux_logits``: the logits ``apply`` returns per example."""
        return self.n_classes + self.aux_logits

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for records: name, classes, m, input shape and ``settings``. A model of your
        own given no ``settings`` (nor built by :func:`from_flax`) is described by its ``init`` and ``apply``
        too (their qualified names and the values they close over: :func:`~.results.setting_json`), so that
        two such models are told apart in records.

        >>> own = Model(init=lambda k: {"w": jax.numpy.zeros((784, 13))}, apply=lambda p, x: x @ p["w"])
        >>> sorted(own.describe())
        ['apply', 'aux_logits', 'init', 'input_shape', 'n_classes', 'name']
        """
        own = {} if self.settings or isinstance(self.apply, _FlaxApply) else {
            "init": setting_json(self.init), "apply": setting_json(self.apply)}
        return {"name": self.name, "n_classes": self.n_classes, "aux_logits": self.aux_logits,
                "input_shape": list(self.input_shape), **own, **{k: setting_json(v) for k, v in self.settings}}

    def replace(self, **changes: Any) -> "Model":
        return dataclasses.replace(self, **changes)


def param_shapes(model: Model) -> Any:
    """The pytree of ``ShapeDtypeStruct`` of ``model``'s parameters: ``init`` traced abstractly, no compute.

    The shapes of a 784 → 32 → 10 + 3 MLP, the same (and dtypes) as a real ``init``'s:

    >>> import jax
    >>> from subliminal_mlp.core.models import mlp, param_shapes, same_tree_shapes
    >>> net = mlp((32,))
    >>> shapes = param_shapes(net)
    >>> jax.tree.map(lambda s: s.shape, shapes)
    {'head': {'bias': (13,), 'kernel': (32, 13)}, 'hidden_0': {'bias': (32,), 'kernel': (784, 32)}}
    >>> same_tree_shapes(shapes, net.init(jax.random.PRNGKey(1)))
    True
    """
    return jax.eval_shape(model.init, jax.random.PRNGKey(0))


def same_tree_shapes(a: Any, b: Any, *, dtypes: bool = True) -> bool:
    """Whether two pytrees (of arrays or ``ShapeDtypeStruct``) have one structure and, leaf by leaf, one
    shape (and one dtype, unless ``dtypes=False``).

    >>> import jax.numpy as jnp
    >>> same_tree_shapes({"w": jnp.zeros(3)}, {"w": jnp.ones(3)}), same_tree_shapes({"w": jnp.zeros(3)}, {"w": 1.0})
    (True, False)
    """
    def sig(x: Any) -> tuple:
        return (jnp.shape(x), jnp.result_type(x)) if dtypes else (jnp.shape(x),)

    return jax.tree.structure(a) == jax.tree.structure(b) and all(
        sig(x) == sig(y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def check_model(model: Model, key: Optional[jax.Array] = None) -> jax.ShapeDtypeStruct:
    """Trace ``init`` and ``apply`` abstractly (no compute) and check the output count.

    Returns the ``ShapeDtypeStruct`` of ``apply(params, x)`` for a batch of 2; raises
    :class:`ModelError` naming the problem when ``model`` is not a :class:`Model` (a bare Flax
    module: wrap it with :func:`from_flax`), is not hashable, or its ``apply`` fails or does not
    return ``(2, n_classes + aux_logits)`` logits.

    >>> check_model(mlp((8,), aux_logits=3)).shape
    (2, 13)
    >>> check_model(mlp((8,), aux_logits=3).replace(aux_logits=5))
    Traceback (most recent call last):
    subliminal_mlp.core.models.ModelError: model 'mlp' returns logits of shape (2, 13) for a batch of 2, ...
    """
    if not isinstance(model, Model):
        hint = ("wrap the Flax module with from_flax(module, n_classes=..., aux_logits=...)"
                if isinstance(model, nn.Module) else "build one with mlp(...), from_flax(...) or Model(init, apply, ...)")
        raise ModelError(f"model = {type(model).__name__} is not a subliminal_mlp Model: {hint}.")
    key = jax.random.PRNGKey(0) if key is None else key
    try:
        hash(model)
    except TypeError as e:
        raise ModelError(f"model {model.name!r} is not hashable ({e}): compiled programs take the model as a static "
                         "argument, so its functions and Flax module must be hashable (e.g. give nn.Sequential a "
                         "tuple of layers, not a list).") from e
    try:
        params = jax.eval_shape(model.init, key)
        out = jax.eval_shape(model.apply, params, jax.ShapeDtypeStruct((2, *model.input_shape), jnp.float32))
    except ModelError:  # the model's own refusal says what is wrong
        raise
    except Exception as e:  # noqa: BLE001 - any failure of a user's model is reported with its cause
        raise ModelError(f"model {model.name!r} cannot be applied to inputs of shape (batch, "
                         f"{', '.join(map(str, model.input_shape))}): {type(e).__name__}: {e}") from e
    if hasattr(out, "dtype") and not jnp.issubdtype(out.dtype, jnp.floating):
        raise ModelError(f"model {model.name!r} returns logits of dtype {out.dtype}: they must be floating-point "
                         "(the students are trained by gradients of the logits; an integer or rounded output has none).")
    if not hasattr(out, "shape") or tuple(out.shape) != (2, model.n_outputs):
        shape = getattr(out, "shape", None)
        extra_axes = shape is not None and len(shape) > 2 and len(model.input_shape) > 1
        raise ModelError(f"model {model.name!r} returns logits of shape {shape if shape is not None else out} for "
                         f"a batch of 2, but n_classes + aux_logits = {model.n_classes} + {model.aux_logits} = "
                         f"{model.n_outputs} outputs are expected: " + (
                             f"one vector per example. Its inputs have shape {model.input_shape}: flatten them "
                             "in the model (x.reshape(x.shape[0], -1)) or give input_shape="
                             f"({math.prod(model.input_shape)},)." if extra_axes else
                             "fix the model's last layer or its n_classes / aux_logits."))
    return out


@dataclass(frozen=True)
class _FlaxInit:
    module: nn.Module
    input_shape: tuple[int, ...]

    def __call__(self, key: jax.Array) -> Params:
        variables = self.module.init(key, jnp.zeros((1, *self.input_shape), jnp.float32))
        others = sorted(set(variables) - {"params"})
        if others:
            raise ModelError(f"Flax module {type(self.module).__name__} has variables besides its parameters "
                             f"(collections {others}): a model is a pure function of its parameters, so from_flax "
                             "keeps only 'params'. Use a module without state (e.g. nn.LayerNorm for nn.BatchNorm).")
        return variables["params"]


@dataclass(frozen=True)
class _FlaxApply:
    module: nn.Module
    method_kwargs: tuple[tuple[str, Any], ...] = ()
    index: Optional[int] = None

    def __call__(self, params: Params, x: jax.Array) -> jax.Array:
        out = self.module.apply({"params": params}, x, **dict(self.method_kwargs))
        return out if self.index is None else out[self.index]


def from_flax(module: nn.Module, *, n_classes: int = 10, aux_logits: int = 3, input_shape: Sequence[int] = (784,),
              name: Optional[str] = None, features: bool = False, settings: dict | None = None) -> Model:
    """A :class:`Model` from a Flax module whose ``__call__(x)`` returns the logits.

    ``init(key) = module.init(key, zeros((1, *input_shape)))["params"]``; ``apply(params, x) =
    module.apply({"params": params}, x)``: a pure function of the parameters, so a module with other
    variables (``nn.BatchNorm``'s ``batch_stats``) is refused with a :class:`ModelError` when it is
    first initialised (:func:`check_model`, which ``sm.run`` calls before any compute). With
    ``features=True`` the module's ``__call__(x, return_features=True)`` must return ``(logits,
    features)``. The model's description (in records, and in the teacher cache's key) holds
    ``settings``, or, when none are given, the module's own attributes (its dataclass fields, e.g.
    ``width=16``), so that two configurations of one module class are told apart.

    >>> import jax, jax.numpy as jnp, flax.linen as nn
    >>> class Tiny(nn.Module):
    ...     width: int = 16
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return nn.Dense(13)(jnp.tanh(nn.Dense(self.width)(x)))
    >>> net = from_flax(Tiny(width=8))
    >>> params = net.init(jax.random.PRNGKey(0))
    >>> net.apply(params, jnp.ones((4, 784))).shape, net.describe()["width"], net.n_outputs
    ((4, 13), 8, 13)
    """
    shape = tuple(input_shape)
    feats = _FlaxApply(module, (("return_features", True),), 1) if features else None
    if settings is None:
        settings = {f.name: getattr(module, f.name) for f in dataclasses.fields(module)
                    if f.name not in ("parent", "name") and hasattr(module, f.name)}
    return Model(init=_FlaxInit(module, shape), apply=_FlaxApply(module), n_classes=n_classes,
                 aux_logits=aux_logits, input_shape=shape, features=feats,
                 name=name or type(module).__name__, settings=tuple(settings.items()))


def trunk(x: jax.Array, hidden_widths: Sequence[int], activation: Callable) -> jax.Array:
    """The hidden layers ``hidden_0, hidden_1, ...``: ``x -> act(Dense(w_i)(x))``; call inside a compact method.

    A 784 → 32 → 16 tanh trunk in a module of one's own, checked against the same layers in numpy:

    >>> import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
    >>> from subliminal_mlp.core.models import trunk
    >>> class Body(nn.Module):
    ...     @nn.compact
    ...     def __call__(self, x):
    ...         return trunk(x, (32, 16), jnp.tanh)
    >>> x = np.random.default_rng(0).uniform(-1, 1, (2, 784)).astype(np.float32)
    >>> p = Body().init(jax.random.PRNGKey(0), x)["params"]
    >>> layer = lambda h, name: np.tanh(h @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"]))
    >>> by_hand = layer(layer(x, "hidden_0"), "hidden_1")
    >>> sorted(p), bool(np.allclose(Body().apply({"params": p}, x), by_hand, atol=1e-5))
    (['hidden_0', 'hidden_1'], True)
    """
    for i, width in enumerate(hidden_widths):
        x = activation(nn.Dense(width, kernel_init=kernel_init, name=f"hidden_{i}")(x))
    return x


class MLP(nn.Module):
    """``x -> Dense -> act -> ... -> Dense``: ``len(hidden_widths)`` hidden layers, one head of ``n_outputs``.

    Weights N(0, 1/fan_in), biases 0 (protocol.md §1). Parameters ``hidden_0, hidden_1, ..., head``.

    A 784 → 32 → 10 + 3 ReLU network, its features and logits checked against the same layers in numpy:

    >>> import jax, numpy as np
    >>> from subliminal_mlp import MLP
    >>> net, x = MLP(hidden_widths=(32,), n_outputs=13), np.random.default_rng(0).uniform(-1, 1, (3, 784))
    >>> x = x.astype(np.float32)
    >>> p = jax.tree.map(np.asarray, net.init(jax.random.PRNGKey(0), x)["params"])
    >>> logits, h = net.apply({"params": p}, x, return_features=True)
    >>> by_hand = np.maximum(x @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"], 0)  # the hidden ReLU layer
    >>> head = by_hand @ p["head"]["kernel"] + p["head"]["bias"]
    >>> bool(np.allclose(h, by_hand, atol=1e-5)), bool(np.allclose(logits, head, atol=1e-5))
    (True, True)
    """

    hidden_widths: Sequence[int]
    n_outputs: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        x = trunk(x, self.hidden_widths, self.activation)
        logits = nn.Dense(self.n_outputs, kernel_init=kernel_init, name="head")(x)
        return (logits, x) if return_features else logits


class SplitHeadMLP(nn.Module):
    """A trunk of hidden layers, then a *class head* (``n_classes``) and a separate *aux head* (m).

    Parameters ``hidden_0, ..., class_head, aux_head``; the logits are ``[class_head(h), aux_head(h)]``
    so class and aux logits sit where they sit in :class:`MLP`. Same initialisation rule.

    The last m = 3 logits are the aux head's, on the trunk's output:

    >>> import jax, numpy as np
    >>> from subliminal_mlp.core.models import SplitHeadMLP
    >>> net, x = SplitHeadMLP(hidden_widths=(32, 16), n_classes=10, aux_logits=3), np.ones((2, 784), np.float32)
    >>> p = jax.tree.map(np.asarray, net.init(jax.random.PRNGKey(0), x)["params"])
    >>> logits, h = net.apply({"params": p}, x, return_features=True)
    >>> aux = h @ p["aux_head"]["kernel"] + p["aux_head"]["bias"]
    >>> sorted(p), logits.shape, bool(np.allclose(logits[:, 10:], aux, atol=1e-5))
    (['aux_head', 'class_head', 'hidden_0', 'hidden_1'], (2, 13), True)
    """

    hidden_widths: Sequence[int]
    n_classes: int
    aux_logits: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        x = trunk(x, self.hidden_widths, self.activation)
        logits = jnp.concatenate([nn.Dense(self.n_classes, kernel_init=kernel_init, name="class_head")(x),
                                  nn.Dense(self.aux_logits, kernel_init=kernel_init, name="aux_head")(x)], axis=-1)
        return (logits, x) if return_features else logits


class SplitHeadCNN(nn.Module):
    """A small CNN trunk with the class and aux heads of :class:`SplitHeadMLP` on a ``width``-unit layer.

    ``x`` (784 pixels) → 28×28×1 → ``conv_0``: 3×3, ``channels[0]``, stride 2 → act → ``conv_1``:
    3×3, ``channels[1]``, stride 2 → act → flatten → ``hidden_0``: Dense(``width``) → act →
    ``class_head``, ``aux_head``. Every kernel N(0, 1/fan_in), biases 0. Its heads have the shapes
    of a split-head MLP's whose last hidden layer is ``width`` wide, so they can be taken from one.

    Shapes only (no compute): two stride-2 convolutions take 28 × 28 to 14 × 14 to 7 × 7, so ``hidden_0``
    has 7·7·4 = 196 inputs; any leading axes of ``x`` are kept:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp.core.models import SplitHeadCNN
    >>> cnn = SplitHeadCNN(channels=(2, 4), width=8, n_classes=10, aux_logits=3)
    >>> p = jax.eval_shape(cnn.init, jax.random.PRNGKey(0), jnp.ones((1, 784)))["params"]
    >>> {name: layer["kernel"].shape for name, layer in p.items()}
    {'aux_head': (8, 3), 'class_head': (8, 10), 'conv_0': (3, 3, 1, 2), 'conv_1': (3, 3, 2, 4), 'hidden_0': (196, 8)}
    >>> jax.eval_shape(lambda p, x: cnn.apply({"params": p}, x), p, jnp.ones((2, 5, 784))).shape
    (2, 5, 13)
    """

    channels: Sequence[int]
    width: int
    n_classes: int
    aux_logits: int
    activation: Callable[[jax.Array], jax.Array] = nn.relu

    @nn.compact
    def __call__(self, x: jax.Array, return_features: bool = False):
        lead = x.shape[:-1]
        h = x.reshape((-1, 28, 28, 1))
        for i, c in enumerate(self.channels):
            h = self.activation(nn.Conv(c, (3, 3), strides=2, kernel_init=kernel_init, name=f"conv_{i}")(h))
        h = h.reshape((h.shape[0], -1))
        h = self.activation(nn.Dense(self.width, kernel_init=kernel_init, name="hidden_0")(h))
        logits = jnp.concatenate([nn.Dense(self.n_classes, kernel_init=kernel_init, name="class_head")(h),
                                  nn.Dense(self.aux_logits, kernel_init=kernel_init, name="aux_head")(h)], axis=-1)
        logits, h = logits.reshape((*lead, -1)), h.reshape((*lead, -1))
        return (logits, h) if return_features else logits


def _activation(activation: str | Callable) -> tuple[Callable, str]:
    if callable(activation):
        # its record (a partial's or an object's repr, a closure's values), as one string: a Model's settings hash
        name = setting_json(activation)
        return activation, name if isinstance(name, str) else json.dumps(name, sort_keys=True)
    if activation not in ACTIVATIONS:
        raise ModelError(f"activation = {activation!r} is unknown: choose one of {tuple(ACTIVATIONS)} "
                         "or pass a function.")
    return ACTIVATIONS[activation], activation


def _widths(hidden_widths: Sequence[int]) -> tuple[int, ...]:
    if not is_sequence(hidden_widths):  # mlp(256): one width is a sequence of one
        example = f"({plain_scalar(hidden_widths)!r},)" if is_integer(hidden_widths, 1, numpy=True) else "(256, 256)"
        raise ModelError(f"hidden_widths = {hidden_widths!r} is invalid: give a sequence of widths, e.g. {example}.")
    widths = tuple(plain_scalar(w) for w in hidden_widths)
    if not widths or any(not is_integer(w, 1) for w in widths):
        raise ModelError(f"hidden_widths = {hidden_widths!r} is invalid: give one or more positive integer "
                         "widths, e.g. (256, 256).")
    return widths


def mlp(hidden_widths: Sequence[int] = (256, 256), *, n_classes: int = 10, aux_logits: int = 3,
        input_dim: int = 784, activation: str | Callable = "relu") -> Model:
    """The paper's MLP ``input_dim -> hidden_widths... -> n_classes + aux_logits`` (protocol.md §1).

    ``mlp()`` is Figure 10's 784 → 256 → 256 → 10 + 3 ReLU network; every weight N(0, 1/fan_in),
    every bias 0. ``activation`` is a name in :data:`ACTIVATIONS` or a function.

    >>> import jax, jax.numpy as jnp
    >>> net = mlp()
    >>> p = net.init(jax.random.PRNGKey(0))
    >>> {name: layer["kernel"].shape for name, layer in p.items()}
    {'hidden_0': (784, 256), 'hidden_1': (256, 256), 'head': (256, 13)}
    >>> abs(float(p["hidden_0"]["kernel"].std()) * 28 - 1) < 0.02, float(jnp.abs(p["head"]["bias"]).max())  # 1/√784
    (True, 0.0)
    """
    act, act_name = _activation(activation)
    widths = _widths(hidden_widths)
    module = MLP(hidden_widths=widths, n_outputs=n_classes + aux_logits, activation=act)
    return from_flax(module, n_classes=n_classes, aux_logits=aux_logits, input_shape=(input_dim,), name="mlp",
                     features=True, settings={"hidden_widths": widths, "activation": act_name})


def split_head_mlp(hidden_widths: Sequence[int] = (256, 256), *, n_classes: int = 10, aux_logits: int = 3,
                   input_dim: int = 784, activation: str | Callable = "relu") -> Model:
    """:class:`SplitHeadMLP`: a shared trunk with a separate class head and aux head.

    >>> import jax, jax.numpy as jnp
    >>> net = split_head_mlp((32, 16))
    >>> p = net.init(jax.random.PRNGKey(0))
    >>> sorted(p), p["aux_head"]["kernel"].shape
    (['aux_head', 'class_head', 'hidden_0', 'hidden_1'], (16, 3))
    >>> x = jnp.ones((2, 784))
    >>> h = net.features(p, x)  # the trunk's output; the class logits come first, as in mlp()
    >>> bool(jnp.allclose(net.apply(p, x)[:, :10], h @ p["class_head"]["kernel"] + p["class_head"]["bias"]))
    True
    """
    act, act_name = _activation(activation)
    widths = _widths(hidden_widths)
    module = SplitHeadMLP(hidden_widths=widths, n_classes=n_classes, aux_logits=aux_logits, activation=act)
    return from_flax(module, n_classes=n_classes, aux_logits=aux_logits, input_shape=(input_dim,),
                     name="split_head_mlp", features=True,
                     settings={"hidden_widths": widths, "activation": act_name})


def split_head_cnn(channels: Sequence[int] = (16, 32), width: int = 256, *, n_classes: int = 10,
                   aux_logits: int = 3, activation: str | Callable = "relu") -> Model:
    """:class:`SplitHeadCNN` on 28×28 images given as 784 pixels: a small CNN with split heads.

    >>> import jax, jax.numpy as jnp
    >>> net = split_head_cnn((4, 8), width=16)
    >>> p = jax.eval_shape(net.init, jax.random.PRNGKey(0))  # shapes only, no compute
    >>> p["conv_1"]["kernel"].shape, jax.eval_shape(net.apply, p, jnp.ones((2, 784))).shape  # 28 → 14 → 7
    ((3, 3, 4, 8), (2, 13))
    >>> p["hidden_0"]["kernel"].shape  # 7·7·8 inputs
    (392, 16)
    """
    act, act_name = _activation(activation)
    channels = _widths(channels)
    module = SplitHeadCNN(channels=channels, width=_widths((width,))[0], n_classes=n_classes,
                          aux_logits=aux_logits, activation=act)
    return from_flax(module, n_classes=n_classes, aux_logits=aux_logits, input_shape=(784,),
                     name="split_head_cnn", features=True,
                     settings={"channels": channels, "width": width, "activation": act_name})


def config_model(cfg) -> Model:
    """The :func:`mlp` a :class:`~subliminal_mlp.core.config.Config` describes (widths, m, classes, input size).

    The same model as :func:`mlp` given the config's settings (models compare by their fields):

    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.models import config_model
    >>> cfg = sm.Config(hidden_widths=(8,), input_dim=4, aux_logits=2)
    >>> net = config_model(cfg)
    >>> net == sm.mlp((8,), aux_logits=2, input_dim=4), net.n_outputs, net.input_shape
    (True, 12, (4,))
    """
    return mlp(cfg.hidden_widths, n_classes=cfg.n_classes, aux_logits=cfg.aux_logits, input_dim=cfg.input_dim)


def class_logits(logits: jax.Array, n_classes: int) -> jax.Array:
    """The first ``n_classes`` logits (what the teacher is trained and evaluated on).

    >>> import jax.numpy as jnp
    >>> logits = jnp.arange(13.0)  # 10 classes + m = 3
    >>> class_logits(logits, 10).tolist(), aux_logits(logits, 10).tolist()
    ([0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0], [10.0, 11.0, 12.0])
    """
    return logits[..., :n_classes]


def aux_logits(logits: jax.Array, n_classes: int) -> jax.Array:
    """The auxiliary logits, every logit after the first ``n_classes``.

    Two examples' logits, 10 classes + m = 3: the aux logits are the last 3, and with the class logits
    they make up the whole output:

    >>> import jax.numpy as jnp, numpy as np
    >>> from subliminal_mlp import aux_logits, class_logits
    >>> z = jnp.arange(26.0).reshape(2, 13)
    >>> aux_logits(z, 10).tolist(), np.array_equal(np.concatenate([class_logits(z, 10), aux_logits(z, 10)], -1), z)
    ([[10.0, 11.0, 12.0], [23.0, 24.0, 25.0]], True)
    """
    return logits[..., n_classes:]
