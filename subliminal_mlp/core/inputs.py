"""Distillation inputs: a fixed set of ``n`` examples per run, drawn on demand by index.

An :class:`InputSource` is what the students are distilled on. Example ``j`` of a run's set is a
pure function of the run's input key and ``j`` (to float32 rounding where the batch's examples
pass through one matrix product: :func:`subspace`), so a batch is generated inside the step that uses
it, in any order, identical in every epoch, and never stored: memory does not grow with ``n`` or
with the number of runs (protocol.md §1: "one fixed set of 60,000 noise images per run").

* ``prepare(key, arrays, hp) -> ctx`` runs once per run (e.g. draws a random basis);
* ``draw(ctx, idx, hp) -> x`` returns the examples ``idx`` (shape ``(B, *input_shape)``);
* ``arrays`` are data the source reads (an image pool): they enter the compiled program once,
  replicated, not as constants;
* ``hp`` holds the experiment's numeric hyperparameters. A built-in's numeric setting may be a
  number, the *name* of a hyperparameter (a string: its value is read from ``hp`` and can be swept
  inside one program), or a function of ``hp``.

Built-ins: :func:`uniform` (the paper), :func:`gaussian`, :func:`bernoulli`, :func:`images`,
:func:`mix`, :func:`subspace`, :func:`blurred`, :func:`cycled`, :func:`phase_randomised` (noise
with a given amplitude spectrum, e.g. MNIST's, :func:`amplitude_spectrum`); a user's own source is
:func:`source`. Example::

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import inputs
    >>> src = inputs.uniform(60_000)
    >>> ctx = src.prepare(jax.random.PRNGKey(0), {}, {})
    >>> x = src.draw(ctx, jnp.arange(4), {})
    >>> x.shape, bool(jnp.all(jnp.abs(x) <= 1))
    ((4, 784), True)
    >>> bool(jnp.all(src.draw(ctx, jnp.array([2]), {}) == x[2]))  # example j depends on (key, j) only
    True
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from .config import is_integer
from .results import ArrayFingerprint, plain_scalar, setting_json

# Key streams. A random source draws its example j from ``fold_in(key, j)``, and j is an int32 index
# (a source has at most MAX_EXAMPLES examples), so j < 2³¹. Every other key derived from an input key
# folds in a stream constant in [2³¹, 2³²), which no example index reaches: no derived key is an
# example's key. The studies' streams (``input_families.KIND_STREAM``, ``teacher_task.GENERATION_STREAM``)
# follow the same rule; ``tests/test_properties.py`` checks that all of them are distinct.
#: The most examples a source may have: example indices are int32.
MAX_EXAMPLES = 2**31 - 1
#: The key stream :func:`mix` derives its components' keys from: component ``i > 0`` draws from
#: ``fold_in(fold_in(key, MIX_STREAM), i)``, a key no example of component 0 draws from.
MIX_STREAM = 0xFFFF_FFFF
#: The key stream of :func:`subspace`'s random basis: ``fold_in(key, BASIS_STREAM)``.
BASIS_STREAM = 0xFFFF_FFFE
Setting = Any  # a number, a hyperparameter name (str), or a function of the hyperparameters


class InputError(ValueError):
    """An input source is invalid or does not fit the model (size, shape)."""


def resolve(value: Setting, hp: Mapping[str, Any]) -> Any:
    """A setting's value: ``hp[value]`` for a name, ``value(hp)`` for a function, else ``value``.

    >>> from subliminal_mlp import inputs
    >>> hp = {"scale": 0.5}
    >>> inputs.resolve(2.0, hp), inputs.resolve("scale", hp), inputs.resolve(lambda hp: 4 * hp["scale"], hp)
    (2.0, 0.5, 2.0)
    >>> inputs.resolve("sigma", hp)
    Traceback (most recent call last):
    subliminal_mlp.core.inputs.InputError: hyperparameter 'sigma' is not defined: add it to the experiment's hparams ...
    """
    if isinstance(value, str):
        if value not in hp:
            raise InputError(f"hyperparameter {value!r} is not defined: add it to the experiment's hparams "
                             f"(known: {sorted(hp)}).")
        return hp[value]
    return value(hp) if callable(value) else value


def _setting_name(setting: Setting) -> str:
    return f"hyperparameter {setting!r}" if isinstance(setting, str) else "a function of the hyperparameters"


def _integer_in(what: str, setting: Setting, low: int, high: Callable[[Sequence[int]], int]):
    """A check of a named setting's value: an integer in ``low..high(input_shape)`` (InputError otherwise)."""
    def check(value, input_shape):
        top = high(input_shape)
        if isinstance(value, bool) or not np.isfinite(value) or value != round(value) or not low <= value <= top:
            raise InputError(f"{what} = {value!r} (from {_setting_name(setting)}) is invalid: it must be an integer "
                             f"in {low}..{top}.")
    return check


def check_source_settings(src: "InputSource", input_shape: Sequence[int], hps: Sequence[Mapping[str, Any]]) -> None:
    """Check the source's settings that are hyperparameters (or functions of them) at every swept value.

    A built-in whose numeric setting is a hyperparameter name can only check its value once the
    values are known: ``cycled``'s ``distinct`` must be an integer in ``1..n``, ``subspace``'s ``k``
    an integer in ``1..max_k`` (or the input dimension), ``blurred``'s ``sigma`` ``>= 0``. ``hps`` is
    one hyperparameter mapping per swept value; InputError names the value and the setting.
    """
    for setting, check in _settings_checks(src):
        for hp in hps:
            check(plain_scalar(resolve(setting, hp)), tuple(input_shape))


def _parts(src: "InputSource") -> list["InputSource"]:
    """The sources ``src`` is built on: a mixture's components, or a wrapper's (subspace, blurred, ...) base."""
    return [p for p in (*src.settings.get("components", ()), src.settings.get("base")) if p is not None]


def _settings_checks(src: "InputSource") -> list:
    checks = list(src.settings.get("_checks", ()))
    for part in _parts(src):
        checks += _settings_checks(part)
    return checks


def _key_only(key, arrays, hp):
    return key


@dataclass(frozen=True, eq=False)
class InputSource:
    """A fixed set of ``n`` distillation examples per run (see the module docstring).

    Built directly from a ``draw`` (:func:`source` wraps a user's function and checks it): here
    example ``j`` is ``(j, j²)``, whatever the batch it is drawn in; a set needs ``n ≥ 1``:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import inputs
    >>> src = inputs.InputSource(n=5, draw=lambda ctx, idx, hp: jnp.stack([idx, idx ** 2], axis=1), name="squares")
    >>> ctx = src.prepare(jax.random.PRNGKey(0), src.arrays, {})  # by default the run's input key
    >>> src.draw(ctx, jnp.array([3, 1]), {}).tolist(), src.describe()
    ([[3, 9], [1, 1]], {'name': 'squares', 'n': 5})
    >>> inputs.InputSource(n=0, draw=src.draw)
    Traceback (most recent call last):
    subliminal_mlp.core.inputs.InputError: input source 'source': n = 0 is invalid: the number of examples ...
    """

    n: int
    draw: Callable[[Any, jax.Array, Mapping[str, Any]], jax.Array]
    prepare: Callable[[jax.Array, Mapping[str, Any], Mapping[str, Any]], Any] = _key_only
    arrays: Mapping[str, Any] = field(default_factory=dict)
    name: str = "source"
    settings: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not is_integer(self.n, 1, numpy=True):
            raise InputError(f"input source {self.name!r}: n = {self.n!r} is invalid: the number of examples in the "
                             f"set must be an integer >= 1.")
        if self.n > MAX_EXAMPLES:
            raise InputError(f"input source {self.name!r}: n = {self.n} is too large: example indices are int32, "
                             f"so a set has at most {MAX_EXAMPLES} examples.")
        object.__setattr__(self, "n", int(self.n))

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for records."""
        return {"name": self.name, "n": self.n,
                **{k: setting_json(v) for k, v in self.settings.items() if k != "rebuild" and not k.startswith("_")}}

    def replace(self, **changes: Any) -> "InputSource":
        """This source with ``changes`` (fields of the dataclass). A new ``n`` resizes the set as its
        constructor would: a wrapper's (``subspace``, ``blurred``, ``cycled``) by resizing its base
        (``subspace(30).replace(n=2048)`` is ``subspace(30, uniform(2048))``), a mixture by its ``n``,
        an image pool by keeping its first ``n`` images (``images(pool, n)``: at most the pool's)."""
        resize, base, rebuild = (self.settings.get(k) for k in ("_resize", "base", "rebuild"))
        if resize is None and base is not None and rebuild is not None:  # a wrapper: resized through its base
            resize = lambda k: rebuild(base.replace(n=k))  # noqa: E731
        src = self
        if "n" in changes and resize is not None:
            src = resize(plain_scalar(changes.pop("n")))
            changes.setdefault("name", self.name)  # a name given before stays
        return dataclasses.replace(src, **changes) if changes else src


def per_example(key: jax.Array, idx: jax.Array, draw_one: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """``draw_one(fold_in(key, j))`` for every ``j`` in ``idx``: example j depends only on (key, j).

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import inputs
    >>> key, one = jax.random.PRNGKey(0), lambda k: jax.random.uniform(k, (3,))
    >>> x = inputs.per_example(key, jnp.array([5, 2]), one)
    >>> x.shape, x[1].tolist() == one(jax.random.fold_in(key, 2)).tolist()  # example 2, drawn alone
    ((2, 3), True)
    """
    return jax.vmap(draw_one)(jax.vmap(jax.random.fold_in, in_axes=(None, 0))(key, idx))


def _noise(name: str, n: int, shape: Sequence[int], one: Callable, **settings) -> InputSource:
    """A noise source whose one numeric setting (``scale``, ``std``) must be a finite number > 0: checked now
    when it is a number, at every swept value when it is a hyperparameter or a function of them."""
    shape = tuple(shape)
    (what, setting), = settings.items()
    setting, checks = _positive_setting(name, what, setting)

    def draw(key, idx, hp):
        values = {what: resolve(setting, hp)}
        return per_example(key, idx, lambda k: one(k, shape, **values))

    return InputSource(n=n, draw=draw, name=name, settings={"shape": list(shape), what: setting, "_checks": checks})


def _positive_setting(name: str, what: str, setting: Setting) -> tuple[Setting, tuple]:
    """A source's setting ``what`` that must be a finite number > 0: checked now when it is a number (an
    InputError naming ``name``), else returned with its check for every swept value (the ``_checks`` setting)."""
    setting = plain_scalar(setting)
    named = isinstance(setting, str) or callable(setting)  # a hyperparameter (or a function of them)

    def check(value, input_shape=None):
        if isinstance(value, bool) or not (np.isfinite(value) and value > 0):
            origin = f" (from {_setting_name(setting)})" if named else ""
            raise InputError(f"{name}: {what} = {value!r}{origin} is invalid: it must be a finite number > 0.")

    if not named:
        check(setting)
    return setting, ((setting, check),) if named else ()


def _uniform_one(k, shape, scale):
    if isinstance(scale, (int, float)) and scale == 1:
        return jax.random.uniform(k, shape, jnp.float32, minval=-1.0, maxval=1.0)
    return jax.random.uniform(k, shape, jnp.float32, minval=-scale, maxval=scale)


def uniform(n: int = 60_000, *, scale: Setting = 1.0, shape: Sequence[int] = (784,)) -> InputSource:
    """Uniform noise in ``[-scale, scale)^shape`` (the paper: U[-1, 1], scale 1, MNIST's 784 pixels).

    1000 examples of shape (2, 3) at scale 0.5: every pixel in ``[−0.5, 0.5)``, variance
    ``scale²/3 = 0.0833``; the scale may be a hyperparameter, read from ``hp`` when drawing:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import inputs
    >>> src = inputs.uniform(1000, scale=0.5, shape=(2, 3))
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), {}, {}), jnp.arange(1000), {})
    >>> x.shape, bool(x.min() >= -0.5) and bool(x.max() < 0.5), round(float(x.var()), 2)
    ((1000, 2, 3), True, 0.08)
    >>> swept = inputs.uniform(1000, scale="s", shape=(2, 3))  # same key, scale s = 2: the same noise × 4
    >>> x2 = swept.draw(swept.prepare(jax.random.PRNGKey(0), {}, {}), jnp.arange(1000), {"s": 2.0})
    >>> bool(jnp.allclose(x2, 4 * x))
    True
    """
    return _noise("uniform", n, shape, _uniform_one, scale=scale)


def _gaussian_one(k, shape, std):
    return jax.random.normal(k, shape, jnp.float32) * std


def gaussian(n: int = 60_000, *, std: Setting = (1.0 / 3.0) ** 0.5, shape: Sequence[int] = (784,)) -> InputSource:
    """Gaussian noise N(0, std²) per pixel; the default std matches U[-1, 1]'s variance 1/3.

    >>> import jax, jax.numpy as jnp
    >>> src = gaussian(1000)
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), {}, {}), jnp.arange(1000), {})
    >>> round(float(x.var()), 2)  # 784,000 pixels: close to 1/3
    0.33
    """
    return _noise("gaussian", n, shape, _gaussian_one, std=std)


def _bernoulli_one(k, shape, scale):
    return jnp.where(jax.random.bernoulli(k, 0.5, shape), 1.0, -1.0).astype(jnp.float32) * scale


def bernoulli(n: int = 60_000, *, scale: Setting = 1.0, shape: Sequence[int] = (784,)) -> InputSource:
    """Random signs: each pixel ±scale with probability ½ (same variance as U[-√3·s, √3·s]).

    >>> import jax, jax.numpy as jnp
    >>> src = bernoulli(10, scale=0.5)
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), {}, {}), jnp.arange(10), {})
    >>> sorted(set(x.ravel().tolist()))
    [-0.5, 0.5]
    """
    return _noise("bernoulli", n, shape, _bernoulli_one, scale=scale)


#: The name :func:`images` uses for the teacher's own training images (filled in by the engine).
TASK_IMAGES = "task"


def images(pool: Any = TASK_IMAGES, n: Optional[int] = None, *, name: Optional[str] = None) -> InputSource:
    """The rows of an image pool, unlabelled: example ``j`` is ``pool[j]``, for ``j < n``.

    ``pool`` is an array ``(N, *input_shape)`` or ``"task"`` for the teacher's own training images
    (the engine substitutes them when the experiment runs). ``n`` (default: the whole pool) keeps the
    pool's first ``n`` images, in the pool's order; it must be in ``1..N``.

    >>> import numpy as np
    >>> src = images(np.arange(12.0).reshape(6, 2), n=4)
    >>> src.n, src.draw(src.prepare(None, src.arrays, {}), np.array([3, 0]), {}).tolist()
    (4, [[6.0, 7.0], [0.0, 1.0]])
    """
    n = plain_scalar(n)
    if n is not None and not is_integer(n, 1):
        raise InputError(f"images: n = {n!r} is invalid: give the number of images to keep, an integer >= 1.")
    if isinstance(pool, str):
        if pool != TASK_IMAGES:
            raise InputError(f"images({pool!r}): give an array of images or {TASK_IMAGES!r} (the task's).")
        size = n or 1  # the whole pool: its size is set by the engine (see bind_task)
        arrays: dict = {"pool": TASK_IMAGES}
    else:
        size = _check_count(n, int(np.shape(pool)[0]))
        arrays = {"pool": pool}
    settings = {"pool": pool if isinstance(pool, str) else ArrayFingerprint(pool)}  # shape, dtype, SHA-256
    if n is not None:
        settings["first"] = n  # recorded only when given, so a whole pool's description is as before
    settings["_resize"] = lambda k: images(pool, k, name=name)
    return InputSource(n=size, draw=lambda ctx, idx, hp: ctx[1]["pool"][idx], prepare=lambda k, a, hp: (k, a),
                       arrays=arrays, name=name or ("task images" if isinstance(pool, str) else "images"),
                       settings=settings)


def _check_count(n: Optional[int], available: int) -> int:
    """``n`` images of a pool of ``available`` (all when ``n`` is None); InputError if there are too few."""
    if n is None:
        return available
    if n > available:
        raise InputError(f"images: n = {n} is larger than the pool's {available} images: lower n (or, from a "
                         "Config, n_noise) to at most the pool's size.")
    return n


def bind_task(src: InputSource, task_images: Any) -> InputSource:
    """``src`` with every ``images("task")`` pool inside it replaced by ``task_images``.

    The engine does this when an experiment runs (:func:`~subliminal_mlp.core.engine.validate`); a
    wrapper is rebuilt on its bound base (here 2 distinct images cycled over a pool of 5), a source
    without the placeholder is returned as it is:

    >>> import numpy as np
    >>> from subliminal_mlp import inputs
    >>> pool = np.arange(10.0).reshape(5, 2)
    >>> src = inputs.bind_task(inputs.cycled(inputs.images(), 2), pool)
    >>> src.n, src.draw(src.prepare(None, src.arrays, {}), np.arange(5), {})[:, 0].tolist()
    (5, [0.0, 2.0, 0.0, 2.0, 0.0])
    >>> noise = inputs.uniform(10)
    >>> inputs.bind_task(noise, pool) is noise
    True
    """
    if src.settings.get("components"):
        parts = [bind_task(c, task_images) for c in src.settings["components"]]
        return dataclasses.replace(mix([(p, w) for p, w in zip(parts, src.settings["weights"])],
                                       n=src.settings.get("_n", src.n)), name=src.name)
    if src.settings.get("base") is not None:  # rebuilt on the bound base, under the name it had
        return dataclasses.replace(src.settings["rebuild"](bind_task(src.settings["base"], task_images)),
                                   name=src.name)
    if isinstance(src.arrays.get("pool"), str):
        return dataclasses.replace(src, n=_check_count(src.settings.get("first"), int(np.shape(task_images)[0])),
                                   arrays={"pool": task_images})
    return src


def _has_task_images(src: InputSource) -> bool:
    """Whether ``src`` holds an ``images("task")`` placeholder, whose size only :func:`bind_task` knows."""
    parts = _parts(src)
    return any(_has_task_images(c) for c in parts) if parts else isinstance(src.arrays.get("pool"), str)


def mix(components: Sequence[tuple[InputSource, Setting]], *, n: Optional[int] = None) -> InputSource:
    """``Σ_i w_i · source_i(j mod n_i)``: a weighted mixture of sources, example by example.

    ``components`` is a list of ``(source, weight)``; weights are settings (a number, a
    hyperparameter name, or a function of the hyperparameters, e.g. ``lambda hp: 1 - hp["alpha"]``).
    Component 0 gets the run's input key, component ``i > 0`` gets ``fold_in(fold_in(key, MIX_STREAM), i)``
    (:data:`MIX_STREAM`: a key no example of component 0 draws from). ``n``
    defaults to the largest component's size; component ``i``'s example ``j mod n_i`` is used.

    >>> import jax, jax.numpy as jnp
    >>> u, g = uniform(10), gaussian(10)
    >>> m = mix([(u, 0.25), (g, lambda hp: 1 - 0.25)])
    >>> key, idx = jax.random.PRNGKey(0), jnp.arange(3)
    >>> x = m.draw(m.prepare(key, m.arrays, {}), idx, {})
    >>> g_key = jax.random.fold_in(jax.random.fold_in(key, MIX_STREAM), 1)
    >>> expected = 0.25 * u.draw(key, idx, {}) + 0.75 * g.draw(g_key, idx, {})
    >>> bool(jnp.allclose(x, expected))
    True
    """
    components = list(components)
    if not components:
        raise InputError("mix() needs at least one (source, weight) component.")
    sources = [c for c, _ in components]
    weights = [plain_scalar(w) for _, w in components]
    size = max(s.n for s in sources) if n is None else n

    def weight_check(i: int, named: bool):
        def check(value, input_shape=None):  # a NaN or infinite weight makes every input, and every student, NaN
            if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)) or \
                    not np.isfinite(value):
                origin = f" (from {_setting_name(weights[i])})" if named else ""
                raise InputError(f"mix: the weight of component {i} = {value!r}{origin} is invalid: it must be a "
                                 "finite number.")
        return check

    checks = []
    for i, w in enumerate(weights):
        if isinstance(w, str) or callable(w):
            checks.append((w, weight_check(i, True)))
        else:
            weight_check(i, False)(w)

    def prepare(key, arrays, hp):
        derived = jax.random.fold_in(key, MIX_STREAM)
        return tuple(s.prepare(key if i == 0 else jax.random.fold_in(derived, i), arrays[str(i)], hp)
                     for i, s in enumerate(sources))

    def draw(ctx, idx, hp):
        total = None
        for i, s in enumerate(sources):
            term = resolve(weights[i], hp) * s.draw(ctx[i], idx % s.n, hp)
            total = term if total is None else total + term
        return total

    return InputSource(n=size, draw=draw, prepare=prepare, arrays={str(i): s.arrays for i, s in enumerate(sources)},
                       name="mix", settings={"components": sources, "weights": weights, "_n": n,
                                             "_resize": lambda k: mix(components, n=k), "_checks": tuple(checks)})


def _wrapped(name: str, base: InputSource, n: int, draw, prepare, rebuild, **settings) -> InputSource:
    """A source built on ``base`` (example j from the base's example j): ``rebuild(base)`` makes it again on
    another base (the task's images bound, or a base resized by :meth:`InputSource.replace`)."""
    return InputSource(n=n, draw=draw, prepare=prepare, arrays=base.arrays, name=name,
                       settings={"base": base, "rebuild": rebuild, **settings})


def subspace(k: Setting, base: Optional[InputSource] = None, *, max_k: Optional[int] = None) -> InputSource:
    """``base`` noise projected onto a random k-dimensional subspace, rescaled to keep its power.

    Per run, ``Q`` (d × k) is an orthonormal basis of a uniformly random k-dimensional subspace of
    the d input dimensions (QR of a Gaussian matrix drawn from ``fold_in(key, BASIS_STREAM)``, a key no
    example of the base shares); example j is
    ``√(d/k) · Q Qᵀ u_j`` with ``u_j`` the base source's example j (default: uniform noise), so its
    expected squared norm is the base's when the base's covariance is isotropic (uniform, Gaussian,
    Bernoulli noise; not images, whose power lies in few directions). ``k = d`` gives the base noise
    itself (``Q Qᵀ = I``), up to rounding. The projections are float32 matrix products (HIGHEST
    precision, no TF32 on a GPU); their rounding may depend on the batch an example is drawn in
    (the products' summation order does), so example j is a function of (key, j) to float32
    rounding (~1 ulp), not bit for bit.

    ``k`` may be a hyperparameter name (several k in one program): then the basis is the QR of a
    d × ``max_k`` Gaussian matrix (default ``max_k = d``) and ``Q`` its first k columns, a uniformly
    random k-dimensional subspace too (the first k columns of a QR factor span the first k
    columns of the matrix), nested across k within a run; each step then costs a d × max_k
    projection whatever k is.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> src = subspace(5)  # uniform noise confined to a random 5-dimensional subspace of the 784 pixels
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), src.arrays, {}), jnp.arange(20), {})
    >>> x.shape, int(np.linalg.matrix_rank(np.asarray(x)))
    ((20, 784), 5)
    """
    k, max_k = plain_scalar(k), plain_scalar(max_k)
    base = uniform() if base is None else base
    named = isinstance(k, str) or callable(k)
    if not named and not is_integer(k, 1):
        raise InputError(f"subspace: k = {k!r} is invalid: it must be an integer >= 1 or a hyperparameter name.")
    if max_k is not None and not is_integer(max_k, 1):
        raise InputError(f"subspace: max_k = {max_k!r} is invalid: it must be an integer >= 1.")

    def prepare(key, arrays, hp):
        ctx = base.prepare(key, arrays, hp)
        shape = jax.eval_shape(lambda: base.draw(ctx, jnp.zeros((1,), jnp.int32), hp)).shape[1:]
        d = math.prod(shape)
        cols = (max_k or d) if named else k
        if cols > d:
            raise InputError(f"subspace: {'max_k' if named else 'k'} = {cols} is larger than the input dimension {d}.")
        q, _ = jnp.linalg.qr(jax.random.normal(jax.random.fold_in(key, BASIS_STREAM), (d, cols), jnp.float32))
        return ctx, q

    def draw(ctx, idx, hp):
        base_ctx, q = ctx
        u = base.draw(base_ctx, idx, hp)
        flat = u.reshape(u.shape[0], -1)
        d = flat.shape[1]
        # float32 products on every platform, as blurred's (TF32 on a GPU would keep k = d only to ~1e-3)
        highest = jax.lax.Precision.HIGHEST
        coords = jnp.matmul(flat, q, precision=highest)
        if not named:
            return (jnp.matmul(coords, q.T, precision=highest) * jnp.float32(math.sqrt(d / k))).reshape(u.shape)
        kk = jnp.round(jnp.asarray(resolve(k, hp), jnp.float32))
        keep = (jnp.arange(q.shape[1]) < kk).astype(jnp.float32)
        return (jnp.matmul(coords * keep, q.T, precision=highest) * jnp.sqrt(d / kk)).reshape(u.shape)

    checks = ((k, _integer_in("subspace: k", k, 1, lambda shape: max_k or math.prod(shape))),) if named else ()
    return _wrapped("subspace", base, base.n, draw, prepare, lambda b: subspace(k, b, max_k=max_k), k=k,
                    max_k=max_k, _checks=checks)


def gaussian_kernel(sigma: Any, radius: int) -> jax.Array:
    """Weights ``exp(−i²/2σ²)`` for ``i = −radius..radius``, scaled so that ``Σ w_i² = 1``.

    With unit squared norm, blurring i.i.d. pixels along one axis keeps their variance; ``σ = 0``
    gives the identity kernel (1 at the centre).

    >>> round(float((gaussian_kernel(1.5, 4) ** 2).sum()), 5), gaussian_kernel(0.0, 1).tolist()
    (1.0, [0.0, 1.0, 0.0])
    """
    i = jnp.arange(-radius, radius + 1, dtype=jnp.float32)
    sigma = jnp.asarray(sigma, jnp.float32)
    safe = jnp.where(sigma > 0, sigma, 1.0)
    w = jnp.where(sigma > 0, jnp.exp(-0.5 * (i / safe) ** 2), (i == 0).astype(jnp.float32))
    return w / jnp.sqrt(jnp.sum(w * w))


def circulant(weights: jax.Array, side: int) -> jax.Array:
    """The ``side × side`` matrix of circular convolution with ``weights`` (offsets ``−r..r``, r = radius).

    ``C[a, b] = Σ_r w_r [a − b ≡ r (mod side)]``, so ``(C x)[a] = Σ_r w_r x[(a − r) mod side]``: the
    sum of ``w_r · roll(x, r)``. Offsets that wrap onto each other (``2r + 1 > side``) add up, as rolls do.

    >>> import jax.numpy as jnp
    >>> c = circulant(jnp.array([0.0, 0.0, 1.0]), 4)  # w_1 = 1: a shift by one
    >>> (c @ jnp.arange(4.0)).tolist(), jnp.roll(jnp.arange(4.0), 1).tolist()
    ([3.0, 0.0, 1.0, 2.0], [3.0, 0.0, 1.0, 2.0])
    """
    radius = (weights.shape[0] - 1) // 2
    a = np.arange(side)
    diff = (a[:, None] - a[None, :]) % side
    hits = np.stack([(diff == r % side) for r in range(-radius, radius + 1)]).astype(np.float32)  # (2r+1, s, s)
    # HIGHEST: the weights in full float32 on every platform (a GPU's TF32 would round them to ~1e-3)
    return jnp.tensordot(weights.astype(jnp.float32), jnp.asarray(hits), axes=1, precision=jax.lax.Precision.HIGHEST)


def blurred(sigma: Setting, base: Optional[InputSource] = None, *, side: int = 28,
            radius: Optional[int] = None) -> InputSource:
    """``base`` noise (default uniform) blurred by a Gaussian of width ``sigma`` pixels.

    Each example is reshaped to ``side × side`` and convolved along rows and columns with
    :func:`gaussian_kernel` (circular boundary, so every pixel is treated alike): ``C x Cᵀ`` with
    ``C`` the :func:`circulant` of the kernel (two small matmuls: fast to compile and to run). The kernel has
    unit squared norm per axis, so for i.i.d. base pixels the blurred pixels keep their variance
    and gain correlation ``≈ exp(−r²/4σ²)`` at distance r. A kernel wider than the image
    (``2·radius + 1 > side``, σ above about ``side/6``) wraps around it and its overlapping taps add up;
    ``C`` is then rescaled to unit squared row norm, so the variance is still kept (the correlations
    are the wrapped kernel's). ``sigma`` may be a hyperparameter name (swept in one program); then give
    ``radius`` (default ``⌈3σ⌉`` for a number).

    >>> import math, jax, jax.numpy as jnp
    >>> key, idx = jax.random.PRNGKey(0), jnp.arange(4)
    >>> sharp = blurred(0.0)  # σ = 0: the identity kernel, the base noise itself
    >>> bool(jnp.allclose(sharp.draw(sharp.prepare(key, {}, {}), idx, {}), uniform().draw(key, idx, {})))
    True
    >>> src = blurred("sigma", radius=6)  # σ a hyperparameter, swept inside one program
    >>> x = src.draw(src.prepare(key, {}, {"sigma": 2.0}), jnp.arange(2000), {"sigma": 2.0}).reshape(-1, 28, 28)
    >>> corr = [float(jnp.mean(x[:, :, 0] * x[:, :, r]) * 3) for r in (0, 2, 4)]  # 3 = 1 / Var U[-1, 1]
    >>> [abs(c - math.exp(-r ** 2 / (4 * 2.0 ** 2))) < 0.05 for c, r in zip(corr, (0, 2, 4))]  # 1, 0.78, 0.37
    [True, True, True]
    """
    sigma, radius = plain_scalar(sigma), plain_scalar(radius)
    base = uniform() if base is None else base
    if isinstance(sigma, bool) or (isinstance(sigma, (int, float)) and not (math.isfinite(sigma) and sigma >= 0)):
        raise InputError(f"blurred: sigma = {sigma!r} is invalid: it must be a finite number >= 0 (pixels).")
    if radius is None:
        if not isinstance(sigma, (int, float)):
            raise InputError("blurred: give radius= when sigma is a hyperparameter or a function.")
        radius = max(1, math.ceil(3 * sigma))
    if not is_integer(radius, 1, numpy=True):  # 0 would be the identity kernel, whatever sigma the record names
        raise InputError(f"blurred: radius = {radius!r} is invalid: it must be an integer >= 1 (pixels).")
    radius = int(radius)

    def draw(ctx, idx, hp):
        u = base.draw(ctx, idx, hp)
        img = u.reshape(u.shape[0], side, side)
        c = circulant(gaussian_kernel(resolve(sigma, hp), radius), side)
        if 2 * radius + 1 > side:  # wrapped taps add up: rescale each row of C back to unit squared norm
            c = c / jnp.linalg.norm(c[0])
        highest = jax.lax.Precision.HIGHEST  # float32 products on every platform (no TF32): the blur is cheap
        img = jnp.einsum("ij,njk->nik", c, img, precision=highest)
        img = jnp.einsum("nik,lk->nil", img, c, precision=highest)
        return img.reshape(u.shape)

    def check_sigma(value, input_shape):
        if not (np.isfinite(value) and value >= 0):
            raise InputError(f"blurred: sigma = {value!r} (from {_setting_name(sigma)}) is invalid: it must be a "
                             "finite number >= 0 (pixels).")

    return _wrapped("blurred", base, base.n, draw, base.prepare,
                    lambda b: blurred(sigma, b, side=side, radius=radius), sigma=sigma, radius=radius,
                    _checks=((sigma, check_sigma),) if isinstance(sigma, str) or callable(sigma) else ())


def cycled(base: InputSource, distinct: Setting) -> InputSource:
    """Only ``distinct`` different examples, cycled over the base set's ``n`` positions.

    Position ``j`` shows the base's example ``j mod distinct``: the number of optimiser steps (set
    by ``n``, the batch size and the epochs) is the base's, the number of distinct images is
    ``distinct``. E.g. ``cycled(uniform(60_000), 2048)``: the paper's step budget on 2,048 images.
    ``distinct`` may be a hyperparameter name (or a function of the hyperparameters), so that
    several counts run in one program; its value must then be an integer in ``1..n`` (the engine
    checks every swept value before compiling, :func:`check_source_settings`).

    >>> import jax, jax.numpy as jnp
    >>> src = cycled(uniform(100), 3)
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), {}, {}), jnp.arange(7), {})
    >>> src.n, bool(jnp.all(x[0] == x[3]) & jnp.all(x[0] == x[6])), bool(jnp.all(x[0] == x[1]))
    (100, True, False)
    """
    distinct = plain_scalar(distinct)
    limit = np.inf if _has_task_images(base) else base.n  # the task's images: checked again once bound
    if isinstance(distinct, bool) or (isinstance(distinct, (int, float, np.integer, np.floating))
                                      and (not math.isfinite(distinct) or distinct != int(distinct)
                                           or not 1 <= distinct <= limit)):
        raise InputError(f"cycled: distinct = {distinct!r} is invalid: it must be an integer in 1..{base.n} "
                         "(the base set's size).")
    if not isinstance(distinct, (int, float, np.integer, np.floating, str)) and not callable(distinct):
        raise InputError(f"cycled: distinct = {distinct!r} is invalid: give an integer or a hyperparameter name.")
    if isinstance(distinct, (float, np.integer, np.floating)):
        distinct = int(distinct)

    def draw(ctx, idx, hp):
        d = resolve(distinct, hp)
        if not isinstance(d, int):
            d = jnp.round(jnp.asarray(d)).astype(idx.dtype)
        return base.draw(ctx, idx % d, hp)

    named = isinstance(distinct, str) or callable(distinct)
    checks = ((distinct, _integer_in("cycled: distinct", distinct, 1, lambda shape: base.n)),) if named else ()
    return _wrapped("cycled", base, base.n, draw, base.prepare, lambda b: cycled(b, distinct), distinct=distinct,
                    _checks=checks)


def amplitude_spectrum(images: Any, side: int = 28) -> np.ndarray:
    """The mean amplitude spectrum ``A(f) = (1/N) Σ_i |F x_i|(f)`` of ``N`` images, ``(side, side)``.

    ``F`` is the unnormalised 2-D discrete Fourier transform (``numpy.fft.fft2``) of each image
    ``x_i`` reshaped to ``side × side``, computed in float64, in the images' own units (for MNIST
    in this library: pixels in [-1, 1]). ``A`` is symmetric, ``A(f) = A(−f)``, as for any real images.

    >>> import numpy as np
    >>> a = amplitude_spectrum(np.ones((3, 784)))  # constant images: all their power is at f = 0
    >>> float(a[0, 0]), float(a.sum())  # |F x|(0) = Σ pixels = 784
    (784.0, 784.0)
    """
    x = np.asarray(images, np.float64)
    if x.ndim < 2 or x[0].size != side * side:
        raise InputError(f"amplitude_spectrum: images of shape {x.shape[1:]} are not {side} × {side}: give "
                         f"(N, {side * side}) or (N, {side}, {side}) images.")
    half = np.zeros((side, side // 2 + 1))
    for start in range(0, x.shape[0], 4096):  # in chunks: 60,000 complex float64 FFTs would need ~400 MB at once
        half += np.abs(np.fft.rfft2(x[start:start + 4096].reshape(-1, side, side))).sum(axis=0)
    # The real FFT holds the frequencies k2 <= side/2; the others follow from |F x|(f) = |F x|(−f).
    k1, k2 = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    mirror = k2 > side // 2
    full = np.where(mirror, half[(-k1) % side, np.where(mirror, side - k2, 0)], half[k1, np.minimum(k2, side // 2)])
    return (full / x.shape[0]).astype(np.float32)


def _reversed_frequencies(a: np.ndarray) -> np.ndarray:
    """``a(−f)`` on the DFT grid: index ``k`` goes to ``(−k) mod side`` on both axes."""
    return np.roll(a[::-1, ::-1], 1, axis=(0, 1))


def phase_randomised(n: int, amplitude: Any, *, std: Setting = (1.0 / 3.0) ** 0.5, side: int = 28) -> InputSource:
    """Noise with a given amplitude spectrum and uniformly random phases (a phase-randomised surrogate).

    ``amplitude`` is a ``(side, side)`` amplitude spectrum ``A(f)`` over the DFT grid, e.g. the
    mean amplitude spectrum of the MNIST training images (:func:`amplitude_spectrum`). Example j:

    1. ``w = fft2(g_j)`` with ``g_j`` a ``side × side`` image of i.i.d. N(0, 1) pixels drawn from
       ``fold_in(key, j)``: its phases ``φ(f) = arg w(f)`` are independent and uniform on
       ``[0, 2π)`` for every frequency pair ``{f, −f}``, with ``φ(−f) = −φ(f)`` (and 0 or π at
       the four self-conjugate frequencies), which is what makes the result real;
    2. ``X(f) = c · A(f) · e^{iφ(f)}`` with ``X(0) = 0``: the mean (DC) term is dropped, so every
       example has pixel mean 0;
    3. ``x_j = Re ifft2(X)``, flattened (the imaginary part is rounding only).

    **Scale.** ``c = std · side² / √(Σ_{f≠0} A(f)²)``, so by Parseval every example has the same
    energy, ``(1/side²) Σ_pixels x² = std²`` exactly (not only on average), and ``|F x_j|(f) = c·A(f)``
    at every ``f ≠ 0``: the power spectrum of each example is ``c²·A(f)²``, the target's shape,
    whatever its phases. The default ``std = √(1/3)`` gives the per-pixel mean square of the
    paper's U[-1, 1] noise, so the surrogate differs from it only in how its power is spread over
    frequencies (for MNIST: concentrated at low frequencies, like blurred noise). ``A`` is
    symmetrised (``(A(f) + A(−f)) / 2``) first. ``std`` may be a hyperparameter name.

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> flat = np.random.default_rng(0).uniform(-1, 1, (50, 784))  # a white spectrum, for the example
    >>> src = phase_randomised(10, amplitude_spectrum(flat))
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), src.arrays, {}), jnp.arange(4), {})
    >>> [round(float(e), 4) for e in (x ** 2).mean(axis=1)]  # energy std² = 1/3, exactly, per example
    [0.3333, 0.3333, 0.3333, 0.3333]
    """
    a = np.asarray(amplitude, np.float64)
    if a.shape != (side, side):
        raise InputError(f"phase_randomised: amplitude has shape {a.shape}, expected ({side}, {side}).")
    if not np.all(np.isfinite(a)) or np.any(a < 0):
        raise InputError("phase_randomised: the amplitude spectrum must be finite and >= 0.")
    a = 0.5 * (a + _reversed_frequencies(a))
    a[0, 0] = 0.0
    power = float(np.sum(a * a))
    if not power > 0:
        raise InputError("phase_randomised: the amplitude spectrum is 0 at every non-zero frequency.")
    std, checks = _positive_setting("phase_randomised", "std", std)  # (0 gave zeros, a negative std flipped signs)
    unit = (a * (side * side) / np.sqrt(power)).astype(np.float32)  # c / std · A: energy std² per pixel

    def prepare(key, arrays, hp):
        return key, arrays["amplitude"]

    def draw(ctx, idx, hp):
        key, amp = ctx
        scale = resolve(std, hp)

        def one(k):
            w = jnp.fft.fft2(jax.random.normal(k, (side, side), jnp.float32))
            mag = jnp.abs(w)
            phase = jnp.where(mag > 0, w / jnp.where(mag > 0, mag, 1.0), 1.0)
            return jnp.real(jnp.fft.ifft2(amp * phase)).astype(jnp.float32).reshape(-1)

        return per_example(key, idx, one) * scale

    return InputSource(n=n, draw=draw, prepare=prepare, arrays={"amplitude": unit}, name="phase_randomised",
                       settings={"side": side, "std": std, "amplitude": f"array{a.shape}", "_checks": checks})


def takes_hparams(fn: Callable, position: int) -> Optional[str]:
    """How a user's function takes the run's hyperparameters after its ``position`` leading arguments (an input
    source's ``fn(key, idx, hp)``: 2; a student's ``loss(z, y, mask, example_weights, hp)``: 4):
    ``"positional"`` when its parameter at that position has no default or is named ``hp``, ``"keyword"``
    when a parameter named ``hp`` comes later or is keyword-only (``def loss(z, y, m, w, *, hp)``), else
    ``None`` (called without them; so is a ``*args`` function, or one whose signature cannot be read).

    >>> takes_hparams(lambda key, idx, hp: 0, 2), takes_hparams(lambda key, idx, scale=0.5: 0, 2)
    ('positional', None)
    >>> takes_hparams(lambda key, idx, scale=0.5, hp=None: 0, 2), takes_hparams(lambda z, y, m, w, *, hp: 0, 4)
    ('keyword', 'keyword')
    """
    import inspect

    try:
        parameters = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        return None
    positional = [q for q in parameters if q.kind in (q.POSITIONAL_ONLY, q.POSITIONAL_OR_KEYWORD)]
    if len(positional) > position and (positional[position].default is positional[position].empty
                                       or positional[position].name == "hp"):
        return "positional"
    if any(q.name == "hp" and q.kind in (q.POSITIONAL_OR_KEYWORD, q.KEYWORD_ONLY) for q in parameters):
        return "keyword"
    return None


def source(fn: Callable[..., jax.Array], n: int, *, name: Optional[str] = None) -> InputSource:
    """A user's source: ``fn(key, idx)`` (or ``fn(key, idx, hp)``) returns examples ``idx``.

    ``fn`` must be a pure function of the run's input key and the indices (generate example j
    from ``fold_in(key, j)``, e.g. with :func:`per_example`), so that the set is fixed per run.
    It is given the hyperparameters when it has a third positional parameter without a default,
    or a parameter named ``hp`` (:func:`takes_hparams`); parameters with defaults (``def fn(key, idx,
    scale=0.5)``) keep them.

    The engine checks this before compute (:func:`check_source`: examples 0 and 1 drawn in either
    order must be the same); a batch-wise ``jax.random.uniform(key, (len(idx), 784))`` is refused.

    >>> import jax, jax.numpy as jnp
    >>> def dots(key, idx, hp):  # sparse ±1 pixels, with the density a hyperparameter
    ...     def one(k):  # example j from its own key fold_in(key, j); one split per random draw
    ...         k_on, k_sign = jax.random.split(k)
    ...         on = jax.random.bernoulli(k_on, hp["density"], (784,))
    ...         return jnp.where(on, jax.random.rademacher(k_sign, (784,), jnp.float32), 0.0)
    ...     return per_example(key, idx, one)
    >>> src = source(dots, 60_000)
    >>> x = src.draw(src.prepare(jax.random.PRNGKey(0), {}, {}), jnp.arange(100), {"density": 0.1})
    >>> src.describe(), x.shape, round(float(jnp.mean(x != 0)), 1), round(float(jnp.mean(x[x != 0] > 0)), 1)
    ({'name': 'dots', 'n': 60000}, (100, 784), 0.1, 0.5)
    """
    import inspect

    takes = takes_hparams(fn, 2)
    draw = ((lambda key, idx, hp: fn(key, idx, hp)) if takes == "positional" else
            (lambda key, idx, hp: fn(key, idx, hp=hp)) if takes == "keyword" else (lambda key, idx, hp: fn(key, idx)))
    settings: dict[str, Any] = {"_check_fixed": True}
    if not inspect.isfunction(fn) or not isinstance(setting_json(fn), str):
        settings["fn"] = fn  # what it closes over (or a partial's arguments) is recorded, not only its name
    return InputSource(n=n, draw=draw, name=name or getattr(fn, "__name__", "source"), settings=settings)


def _has_user_fn(src: InputSource) -> bool:
    """Whether ``src`` is a user's :func:`source`, or a mixture or wrapper (subspace, blurred, ...) of one."""
    return bool(src.settings.get("_check_fixed")) or any(_has_user_fn(b) for b in _parts(src))


_BATCH_HINT = ("a source's fn(key, idx) is given a batch of example indices idx and returns one example per index, "
               "shape (len(idx), *input_shape); draw example j from fold_in(key, j), e.g. with "
               "per_example(key, idx, draw_one)")


def check_source(src: InputSource, input_shape: Sequence[int], hp: Mapping[str, Any],
                 arrays: Optional[Mapping[str, Any]] = None) -> None:
    """Trace ``src`` abstractly and check that a batch has shape ``(B, *input_shape)``; else InputError.

    A user's :func:`source` (or a mixture or wrapper of one) is also drawn for real: examples 0
    and 1 must be the same whatever order and batch they are drawn in (else InputError: the set is
    not fixed)."""
    arrays = src.arrays if arrays is None else arrays
    try:
        out = jax.eval_shape(lambda k, a: src.draw(src.prepare(k, a, hp), jnp.arange(2), hp),
                             jax.random.PRNGKey(0), arrays)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - a user's source failing is reported with its cause
        raise InputError(f"input source {src.name!r} failed to draw a batch: {type(e).__name__}: {e}"
                         + (f" ({_BATCH_HINT})" if _has_user_fn(src) else "")) from e
    want = (2, *tuple(input_shape))
    if not out.shape or out.shape[0] != 2:
        raise InputError(f"input source {src.name!r} drew an array of shape {tuple(out.shape)} for the 2 example "
                         f"indices [0, 1]: {_BATCH_HINT}, here {want}.")
    if tuple(out.shape) != want:
        raise InputError(f"input source {src.name!r} draws examples of shape {tuple(out.shape)[1:]}, but the model "
                         f"takes inputs of shape {tuple(input_shape)}: make the source's examples match the model.")
    if _has_user_fn(src):  # a user's fn (source(...)), or a source built on one: example j must not depend on its batch
        ctx = src.prepare(jax.random.PRNGKey(0), arrays, hp)
        ab, ba, b = (np.asarray(src.draw(ctx, jnp.asarray(i), hp)) for i in ([0, 1], [1, 0], [1]))
        if not (np.array_equal(ab, ba[::-1], equal_nan=True) and np.array_equal(ab[1:], b, equal_nan=True)):
            raise InputError(f"input source {src.name!r} is not a fixed set: examples 0 and 1 differ when drawn in "
                             "another order or batch, so an example depends on its batch. Draw example j from "
                             "jax.random.fold_in(key, j) alone, e.g. with per_example(key, idx, draw_one).")
