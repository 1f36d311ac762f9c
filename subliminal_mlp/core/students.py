"""A run's students as a table: where each starts, what it imitates, with which loss and optimiser.

A :class:`Student` row says:

* ``start``: where its parameters start (a function of the run's :class:`StartContext`): ``"own"`` (the run's reference θ0, the teacher's initialisation),
  ``"cross"`` (another run's reference: a different initialisation), :class:`perturbed` (θ0 plus
  N(0, σ²) noise, optionally orthogonal to the teacher's displacement), :class:`layers` (top-level
  layers composed from several starts), :class:`fresh` (a new initialisation);
* ``outputs``: which logits it imitates: ``"aux"`` (the m auxiliary logits, the paper's student),
  ``"all"``, ``"class"``, or explicit logit indices;
* ``loss``: ``"kl"`` (the paper), ``"mse"`` (Jiang et al.) or a function
  ``loss(z, y, mask, example_weights) -> scalar`` (summed over the batch), where ``z`` are the
  student's logits ``(B, classes + m)``, ``y`` the targets (the teacher's logits), ``mask`` the
  ``outputs``' logit mask and
  ``example_weights`` the ``(B,)`` weights (ones without an ``example_weights`` hook), or ``None``
  when the student has no hook and no ``penalty`` (every example weighs 1), as in :func:`~subliminal_mlp.core.losses.kl_distillation`;
  ``loss(z, y, mask, example_weights, hp)`` also gets the run's hyperparameters, so that a setting of
  the loss (a Huber δ, say: ``hp["delta"]``) can be swept in one program;
* ``teacher``: the name of the teacher it imitates;
* ``temperature``: ``T`` (a setting: a number, a hyperparameter name or a function of them; default
  the hyperparameter ``"temperature"``, or 1 when the experiment has none): the loss becomes
  ``T² · loss(z/T, y/T, mask, example_weights)`` (Hinton et al.), a user's loss too; ``"mse"`` is
  never scaled by T;
* ``example_weights`` / ``targets``: optional hooks ``f(view)`` returning per-example weights
  ``(B,)`` (filtering: 0 drops an example) or replacement target logits ``(B, n_outputs)``
  (sampled outputs, another teacher's logits), where ``view`` is an
  :class:`~subliminal_mlp.core.engine.HookView`: ``view.logits`` (its teacher's logits on the batch),
  ``view.x``, ``view.idx`` (the batch's indices into the input set), ``view.params`` (this row's
  numeric ``params``) and ``view.run`` (the run's :class:`~subliminal_mlp.core.engine.RunModels`:
  every teacher, the keys, data and hyperparameters), e.g. keep only the inputs on which the
  teacher's class argmax is not 0::

      Student("filtered", example_weights=lambda v: (jnp.argmax(v.logits[:, :10], -1) != 0) * 1.0)

* ``optimizer``: an optax ``GradientTransformation`` (or a function of the hyperparameters
  returning one), e.g. ``optax.chain(optax.add_decayed_weights(1e-4), optax.adam(3e-4))`` or
  ``optax.sgd(0.1)``; by default Adam(``hp["learning_rate"]``) with PyTorch's defaults. A record
  holds a transformation's settings (the values its functions close over: SGD's step size, AdamW's
  weight decay). To sweep them in one program, give a function of the hyperparameters, e.g.
  ``lambda hp: optax.adamw(hp["learning_rate"], weight_decay=hp["wd"])`` with ``wd`` in ``hparams``
  (the record then has the swept values, and the function by name).
* ``penalty``: an optional term ``f(view) -> scalar`` added to the distillation loss the student
  descends (its gradient moves the student; the tracked ``Result.distill_loss`` leaves it out), where
  ``view`` is a :class:`~subliminal_mlp.core.engine.PenaltyView` (the student's current
  parameters ``theta``, its ``start``, the batch, the distillation ``step``, ...), e.g.
  :func:`liminal` (a KL penalty to the student's own start during the first steps);
* ``model``: the student's own ``(init, apply)`` model (default: the experiment's), e.g. a small
  CNN or a deeper MLP with the teacher's classes and aux logits; its starts see this model
  (``fresh()`` initialises it; :class:`layers` can take the teacher's heads into it).

Figure 10's four students are :data:`FIGURE10`::

    >>> from subliminal_mlp.core.students import FIGURE10
    >>> [(s.name, s.outputs) for s in FIGURE10]
    [('student_aux', 'aux'), ('student_all', 'all'), ('cross_aux', 'aux'), ('cross_all', 'all')]
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from .config import ConfigError, SettingWarning, is_integer
from .inputs import Setting, resolve, takes_hparams
from .losses import distillation_loss
from .models import Model, check_model, param_shapes, same_tree_shapes
from .results import setting_json

#: Names the engine reserves for the models it evaluates besides the students.
RESERVED = ("reference", "teacher")


class StudentError(ValueError):
    """A student table is invalid (unknown teacher, empty outputs, repeated names, ...)."""


class StartContext(NamedTuple):
    """What a start sees in one run: ``refs`` ({"own": θ0, "cross": θ0 of the cross run}), the
    ``teachers`` ({name: params}), the run's named ``keys``, the hyperparameters ``hp``, the ``model``.

    A start of one's own is a function of this context, e.g. halfway between θ0 and the cross run's θ0:

    >>> import jax, jax.numpy as jnp
    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.students import StartContext
    >>> midway = lambda ctx: jax.tree.map(lambda a, b: (a + b) / 2, ctx.refs["own"], ctx.refs["cross"])
    >>> ctx = StartContext(refs={"own": {"w": jnp.zeros(2)}, "cross": {"w": jnp.ones(2)}}, teachers={}, keys={},
    ...                    hp={}, model=None)  # toy stand-ins for what the engine passes in a run
    >>> midway(ctx)["w"].tolist(), sm.Student("midway", start=midway).start is midway
    ([0.5, 0.5], True)
    """

    refs: Mapping[str, Any]
    teachers: Mapping[str, Any]
    keys: Mapping[str, jax.Array]
    hp: Mapping[str, Any]
    model: Model


@dataclass(frozen=True)
class ref:
    """The run's own reference (``"own"``: θ0, shared with the teacher) or the cross run's (``"cross"``).

    A student's ``start="cross"`` is ``ref("cross")``:

    >>> import jax.numpy as jnp
    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.students import StartContext
    >>> ctx = StartContext(refs={"own": {"w": jnp.zeros(2)}, "cross": {"w": jnp.ones(2)}}, teachers={}, keys={},
    ...                    hp={}, model=None)  # toy stand-ins for what the engine passes in a run
    >>> sm.ref()(ctx)["w"].tolist(), sm.ref("cross")(ctx)["w"].tolist(), sm.Student("s", start="cross").start
    ([0.0, 0.0], [1.0, 1.0], ref(which='cross'))
    """

    which: str = "own"

    def __call__(self, ctx: StartContext):
        return ctx.refs[self.which]


@dataclass(frozen=True)
class fresh:
    """A new initialisation ``model.init(fold_in(keys["fresh"], stream))``, shared with no teacher.

    >>> import jax, numpy as np
    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.students import StartContext
    >>> net, key = sm.mlp((8,)), jax.random.PRNGKey
    >>> ctx = StartContext(refs={"own": net.init(key(0))}, teachers={}, keys={"fresh": key(7)}, hp={}, model=net)
    >>> new, by_hand = sm.fresh(stream=1)(ctx), net.init(jax.random.fold_in(key(7), 1))
    >>> same = lambda a, b: jax.tree.all(jax.tree.map(np.array_equal, a, b))
    >>> same(new, by_hand), same(new, ctx.refs["own"])  # not θ0
    (True, False)
    """

    stream: int = 0

    def __post_init__(self) -> None:  # 1.5 was folded in as 1 (and recorded as 1.5), -1 an OverflowError
        if not is_integer(self.stream, 0, 2**32 - 1, numpy=True):
            raise StudentError(f"fresh: stream = {self.stream!r} is invalid: it must be an integer in 0..2**32 - 1 "
                               "(folded into the run's fresh key).")
        object.__setattr__(self, "stream", int(self.stream))

    def __call__(self, ctx: StartContext):
        return ctx.model.init(jax.random.fold_in(ctx.keys["fresh"], self.stream))


@dataclass(frozen=True)
class perturbed:
    """``θ + σ·ξ``, ξ ~ N(0, I) over every parameter (Jiang et al.'s initialisation noise).

    ``θ = base`` (default the own reference), ``σ = sigma`` (a setting: number, hyperparameter
    name or function; default the hyperparameter ``"init_noise"``), ξ from the run's
    ``init_noise`` key. With ``orthogonal=True``, ξ loses its component along the teacher's total
    update ``d = θ_teacher − θ0`` and is rescaled to its original norm, so the perturbation has the
    same size but cannot move along d. ``d`` is always the experiment's own teacher (``"teacher"``)
    minus the own reference, whatever ``base`` and the student's ``teacher``.

    With σ = 0.1 read from the hyperparameters, on toy parameters (P = 10,000, θ0 = 0, a teacher that moved
    by d = 1 in every parameter): the start's distance from the teacher's initialisation θ0 is ≈ σ√P = 10,
    and the orthogonal noise has the same size and no component along ``d``:

    >>> import jax, jax.numpy as jnp
    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.students import StartContext, cosine
    >>> theta0, d = {"w": jnp.zeros(10_000)}, {"w": jnp.ones(10_000)}
    >>> ctx = StartContext(refs={"own": theta0}, teachers={"teacher": d}, keys={"init_noise": jax.random.PRNGKey(1)},
    ...                    hp={"init_noise": 0.1}, model=None)  # toy stand-ins for the run's values
    >>> xi, perp = sm.perturbed()(ctx)["w"], sm.perturbed(orthogonal=True)(ctx)["w"]  # θ_S0 − θ0, as θ0 = 0
    >>> round(float(jnp.linalg.norm(xi)), 0), bool(jnp.isclose(jnp.linalg.norm(perp), jnp.linalg.norm(xi), rtol=1e-4))
    (10.0, True)
    >>> abs(float(cosine(perp, d["w"]))) < 1e-4, abs(float(cosine(xi, d["w"]))) < 1e-4  # only the orthogonal is ⟂ d
    (True, False)
    """

    sigma: Setting = "init_noise"
    orthogonal: bool = False
    base: Any = ref("own")

    def __post_init__(self) -> None:
        object.__setattr__(self, "base", as_start(self.base))
        if not isinstance(self.sigma, str) and not callable(self.sigma):
            _check_sigma(self.sigma, "perturbed")

    def __call__(self, ctx: StartContext):
        params = self.base(ctx)
        away = (jax.tree.map(jnp.subtract, ctx.teachers["teacher"], ctx.refs["own"]) if self.orthogonal else None)
        return perturb(params, ctx.keys["init_noise"], resolve(self.sigma, ctx.hp), away)


def _check_sigma(sigma: Any, where: str) -> None:
    try:
        value = float(np.asarray(sigma))
    except (TypeError, ValueError):
        raise StudentError(f"{where}: sigma = {sigma!r} is not a number: give σ >= 0, a hyperparameter name or a "
                           "function of the hyperparameters.") from None
    if not 0 <= value < np.inf:
        raise StudentError(f"{where}: sigma = {value:.6g} is invalid: the noise's standard deviation must be a finite "
                           "number >= 0.")


def _perturbations(start: Any) -> list:
    """Every :class:`perturbed` inside a start (itself, its base, a :class:`layers`' parts and default)."""
    if isinstance(start, perturbed):
        return [start, *_perturbations(start.base)]
    if isinstance(start, layers):
        return [p for _, part in start.parts for p in _perturbations(part)] + _perturbations(start.default)
    return []


def hparams_as_arrays(hp: Mapping[str, Any]) -> dict[str, Any]:
    """The hyperparameters as the program passes them: numbers as arrays (a function of them may use array
    methods), for checks that resolve a setting before compute."""
    return {k: jnp.asarray(v) if isinstance(v, (int, float, np.number)) else v for k, v in hp.items()}


def check_start_settings(student: "Student", hps: Sequence[Mapping[str, Any]]) -> None:
    """Every σ of a student's perturbed start, at every swept value: defined and a finite number >= 0 (else
    :class:`StudentError` naming the student), before compute."""
    for p in _perturbations(student.start):
        what = repr(p.sigma) if isinstance(p.sigma, str) else "a function of the hyperparameters"
        for hp in hps:
            try:
                sigma = resolve(p.sigma, hparams_as_arrays(hp))
            except Exception as e:  # noqa: BLE001 - a missing hyperparameter or a user's function failing
                raise StudentError(f"student {student.name!r}: its start perturbed(sigma={what}) cannot be "
                                   f"resolved: {e}") from e
            _check_sigma(sigma, f"student {student.name!r}: its start perturbed(sigma={what})")


def perturb(params, key: jax.Array, sigma, orthogonal_to=None):
    """``θ + σ·ξ`` with ξ ~ N(0, I) (see :class:`perturbed`); with ``orthogonal_to = d``, ξ ⟂ d, same norm.

    >>> import jax, jax.numpy as jnp
    >>> theta, d = {"w": jnp.zeros(10_000)}, {"w": jnp.ones(10_000)}
    >>> key = jax.random.PRNGKey(0)
    >>> plain, perp = perturb(theta, key, 0.1), perturb(theta, key, 0.1, orthogonal_to=d)
    >>> bool(jnp.isclose(jnp.linalg.norm(plain["w"]), jnp.linalg.norm(perp["w"]), rtol=1e-5))  # the same size
    True
    >>> abs(float(tree_dot(perp, d))) < 1e-3, round(float(jnp.linalg.norm(plain["w"])), 0)  # ⟂ d; ≈ σ·√10,000
    (True, 10.0)
    """
    flat, unravel = ravel_pytree(params)
    xi = jax.random.normal(key, flat.shape, flat.dtype)
    if orthogonal_to is not None:
        u = ravel_pytree(orthogonal_to)[0]
        u = u / jnp.maximum(jnp.linalg.norm(u), jnp.finfo(u.dtype).tiny)
        xi_perp = xi - jnp.dot(xi, u) * u
        xi = xi_perp * (jnp.linalg.norm(xi) / jnp.linalg.norm(xi_perp))
    return unravel(flat + sigma * xi)


@dataclass(frozen=True)
class layers:
    """Top-level layers composed from several starts: ``layers({"head": "own"}, default=fresh())``.

    Every top-level entry of the parameter pytree (e.g. ``hidden_0``, ``head``) named in
    ``parts`` comes from that start, the others from ``default``.

    >>> import jax
    >>> from subliminal_mlp.core.models import mlp
    >>> net, key = mlp((8,)), jax.random.PRNGKey(0)
    >>> own, cross = net.init(key), net.init(jax.random.PRNGKey(1))
    >>> ctx = StartContext(refs={"own": own, "cross": cross}, teachers={}, keys={"fresh": key}, hp={}, model=net)
    >>> start = layers({"head": "own"}, default="cross")  # θ0's head on the cross run's trunk
    >>> params = start(ctx)
    >>> params["head"] is own["head"], params["hidden_0"] is cross["hidden_0"]
    (True, True)
    """

    parts: Any
    default: Any = fresh()

    def __post_init__(self) -> None:
        items = self.parts.items() if isinstance(self.parts, Mapping) else self.parts
        object.__setattr__(self, "parts", tuple((k, as_start(v)) for k, v in items))
        object.__setattr__(self, "default", as_start(self.default))

    def __call__(self, ctx: StartContext):
        out = dict(self.default(ctx))
        for name, start in self.parts:
            if name not in out:
                raise StudentError(f"layers: the model has no top-level layer {name!r} (it has {sorted(out)}).")
            given = start(ctx)
            if name not in given:
                raise StudentError(
                    f"layers: {name!r} is to come from {start!r}, whose parameters have no such top-level layer "
                    f"(they have {sorted(given)})" + (": 'own' and 'cross' are θ0s of the experiment's model, not of "
                                                      "a student's own model" if isinstance(start, ref) else "") + ".")
            out[name] = given[name]
        return out


def as_start(start: Any):
    """``"own"``/``"cross"`` → :class:`ref`; a start (callable) is returned as it is.

    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.students import as_start
    >>> as_start("cross"), as_start(sm.fresh(1))
    (ref(which='cross'), fresh(stream=1))
    >>> as_start("teacher")
    Traceback (most recent call last):
    subliminal_mlp.core.students.StudentError: start = 'teacher' is unknown: ...
    """
    if isinstance(start, str):
        if start not in ("own", "cross"):
            raise StudentError(f"start = {start!r} is unknown: use 'own', 'cross' or a start such as perturbed(...).")
        return ref(start)
    if not callable(start):
        raise StudentError(f"start = {start!r} is not a start: give 'own', 'cross' or a function of StartContext.")
    return start


@dataclass(frozen=True)
class Student:
    """One row of the student table (see the module docstring).

    A table is a tuple of rows; Figure 10's plus a student started from θ0 + N(0, 0.01²) noise and one
    trained with decoupled weight decay (an optax optimiser):

    >>> import optax
    >>> table = FIGURE10 + (Student("noisy_aux", perturbed(0.01)),
    ...                     Student("wd_aux", optimizer=optax.adamw(3e-4, weight_decay=1e-4)))
    >>> [s.name for s in table]
    ['student_aux', 'student_all', 'cross_aux', 'cross_all', 'noisy_aux', 'wd_aux']
    >>> print(table[4].describe()["start"])
    perturbed(sigma=0.01, orthogonal=False, base=ref(which='own'))
    """

    name: str
    start: Any = "own"
    outputs: Any = "aux"
    loss: Any = "kl"
    teacher: str = "teacher"
    temperature: Setting = "temperature"
    optimizer: Any = None
    example_weights: Optional[Callable] = None
    targets: Optional[Callable] = None
    params: Mapping[str, float] = field(default_factory=dict)
    penalty: Optional[Callable] = None
    model: Optional[Model] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", as_start(self.start))
        if isinstance(self.outputs, (tuple, list, range, np.ndarray, jax.Array)):
            bad = [i for i in np.asarray(self.outputs, dtype=object).ravel() if not _whole_number(i)]
            if bad:  # 10.5 would be logit 10, and the record would still say 10.5
                raise StudentError(f"student {self.name!r}: outputs {bad} are not logit indices: give integers, e.g. "
                                   "outputs=(10, 11), or 'aux', 'all', 'class'.")
            object.__setattr__(self, "outputs", tuple(int(i) for i in np.asarray(self.outputs, dtype=object).ravel()))
            repeated = sorted({i for i in self.outputs if self.outputs.count(i) > 1})
            if repeated:  # the logit mask is 0/1: a repeated index would count once, not twice
                raise StudentError(f"student {self.name!r}: outputs {list(self.outputs)} repeat {repeated}: a logit "
                                   "is imitated once; name each at most once.")
        elif not (isinstance(self.outputs, str) and self.outputs in ("aux", "all", "class")):
            raise StudentError(f"student {self.name!r}: outputs = {self.outputs!r} is unknown: use 'aux', 'all', "
                               "'class' or logit indices, e.g. outputs=(10, 11).")
        if isinstance(self.temperature, (bool, np.bool_)):
            raise StudentError(f"student {self.name!r}: temperature = {self.temperature!r} is invalid: give a number "
                               "> 0, a hyperparameter's name or a function of the hyperparameters.")
        if not isinstance(self.params, Mapping) or not all(
                isinstance(k, str) and isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(
                    v, (bool, np.bool_)) for k, v in self.params.items()):
            raise StudentError(f"student {self.name!r}: params = {self.params!r} is invalid: give a dict of names to "
                               "numbers (its hooks and penalty read them as view.params).")
        if isinstance(self.loss, str):
            try:
                distillation_loss(self.loss)  # validates the name
            except ValueError as e:
                raise StudentError(f"student {self.name!r}: {e} Or give a function loss(z, y, mask, example_weights) "
                                   "-> scalar (the loss summed over the batch).") from None
        if isinstance(self.outputs, tuple) and not self.outputs:
            raise StudentError(f"student {self.name!r} imitates an empty set of outputs: name at least one logit.")
        if not (self.optimizer is None or isinstance(self.optimizer, optax.GradientTransformation)
                or callable(self.optimizer)):
            raise StudentError(f"student {self.name!r}: optimizer = {self.optimizer!r} is not an optimiser: "
                               f"{OPTIMIZER_FORMS}.")
        if self.loss == "mse" and ((isinstance(self.temperature, (int, float, np.number)) and self.temperature != 1)
                                   or callable(self.temperature)
                                   or (isinstance(self.temperature, str) and self.temperature != "temperature")):
            what = "a function of the hyperparameters" if callable(self.temperature) else repr(self.temperature)
            raise StudentError(f"student {self.name!r}: temperature = {what} has no effect with loss = "
                               "'mse' (raw logits, never scaled by T): use loss = 'kl', or leave temperature out.")

    def replace(self, **changes: Any) -> "Student":
        return dataclasses.replace(self, **changes)

    def group_key(self) -> tuple:
        """Students with equal keys are distilled as one stacked (vmapped) group."""
        return (self.loss, self.teacher, self.temperature, _hashable(self.optimizer), self.example_weights,
                self.targets, tuple(sorted(self.params)), _hashable(self.penalty), self.model)

    def describe(self) -> dict[str, Any]:
        """JSON-ready description for records (:func:`~subliminal_mlp.core.results.setting_json`: a function or an
        optax transformation by its name and the values it closes over, such as a learning rate); an ``"mse"``
        student's ``temperature`` is None, as it uses none."""
        name = setting_json
        return {"name": self.name, "start": name(self.start) if not isinstance(self.start, ref) else self.start.which,
                "outputs": name(self.outputs), "loss": name(self.loss), "teacher": self.teacher,
                "temperature": None if self.loss == "mse" else name(self.temperature),  # mse: never scaled by T
                "optimizer": name(self.optimizer) if self.optimizer else "adam",
                "example_weights": name(self.example_weights), "targets": name(self.targets),
                "params": {k: name(v) for k, v in self.params.items()}, "penalty": name(self.penalty),
                "model": None if self.model is None else self.model.describe()}


def _whole_number(v: Any) -> bool:
    """Whether ``v`` is an integer or a whole-valued float (``10`` or ``10.0``, numpy's too; not ``True``)."""
    return (isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, (bool, np.bool_))
            and bool(np.isfinite(v)) and float(v) == round(float(v)))


def _hashable(v):
    try:
        hash(v)
        return v
    except TypeError:
        return id(v)


#: The four students of Figure 10, in the paper's order (protocol.md §1).
FIGURE10 = (Student("student_aux", "own", "aux"), Student("student_all", "own", "all"),
            Student("cross_aux", "cross", "aux"), Student("cross_all", "cross", "all"))


def output_mask(outputs: Any, n_classes: int, aux_logits: int) -> jax.Array:
    """0/1 weights over the ``n_classes + m`` logits for ``outputs`` ("aux", "all", "class", indices).

    >>> output_mask("aux", 4, 2).tolist(), output_mask((0, 5), 4, 2).tolist()
    ([0.0, 0.0, 0.0, 0.0, 1.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0, 1.0])
    """
    n = n_classes + aux_logits
    if outputs == "aux":
        return jnp.concatenate([jnp.zeros(n_classes), jnp.ones(aux_logits)]).astype(jnp.float32)
    if outputs == "all":
        return jnp.ones(n, jnp.float32)
    if outputs == "class":
        return jnp.concatenate([jnp.ones(n_classes), jnp.zeros(aux_logits)]).astype(jnp.float32)
    if isinstance(outputs, tuple):
        return jnp.zeros(n, jnp.float32).at[jnp.asarray(outputs, jnp.int32)].set(1.0)
    raise StudentError(f"outputs = {outputs!r} is unknown: use 'aux', 'all', 'class' or logit indices.")


def check_students(students: Sequence[Student], model: Model, teachers: Sequence[str] = ("teacher",)) -> None:
    """Raise :class:`StudentError` naming the row and the value for an invalid table, before compute
    (:class:`~subliminal_mlp.core.models.ModelError` for an invalid per-student ``model``)."""
    if not students:
        raise StudentError("the student table is empty: give at least one Student.")
    seen: set[str] = set()
    for s in students:
        if not isinstance(s, Student):
            raise StudentError(f"{s!r} is not a Student.")
        if not isinstance(s.name, str) or not s.name:
            raise StudentError(f"student name {s.name!r} is invalid: give each student a non-empty string name "
                               "(it names the student's results).")
        if s.name in RESERVED or s.name in seen:
            raise StudentError(f"student name {s.name!r} is {'reserved' if s.name in RESERVED else 'repeated'}: "
                               f"every student needs its own name, other than {RESERVED}.")
        seen.add(s.name)
        if s.model is not None:
            if not isinstance(s.model, Model):
                raise StudentError(f"student {s.name!r}: model = {s.model!r} is not a Model (build one with "
                                   "subliminal_mlp.models.mlp, from_flax or Model(init, apply, ...)).")
            check_model(s.model)
            if (s.model.n_classes, s.model.aux_logits) != (model.n_classes, model.aux_logits):
                raise StudentError(f"student {s.name!r}: its model has {s.model.n_classes} classes and "
                                   f"{s.model.aux_logits} aux logits, the teacher's {model.n_classes} and "
                                   f"{model.aux_logits}: a student imitates the teacher's outputs, so they must match.")
            if s.model.input_shape != model.input_shape:
                raise StudentError(f"student {s.name!r}: its model takes inputs of shape {s.model.input_shape}, "
                                   f"the teacher's {model.input_shape}: they must match.")
            if isinstance(s.start, ref) and not _same_shapes(s.model, model):
                raise StudentError(f"student {s.name!r}: start = {s.start.which!r} is a θ0 of the experiment's model, "
                                   "whose parameters do not fit the student's own model: start it with fresh() or "
                                   "layers({...}, default=fresh()).")
        if s.penalty is not None and not callable(s.penalty):
            raise StudentError(f"student {s.name!r}: penalty = {s.penalty!r} is not a function of a PenaltyView.")
        if s.teacher not in teachers:
            raise StudentError(f"student {s.name!r} imitates teacher {s.teacher!r}, which the experiment does not "
                               f"have (teachers: {tuple(teachers)}).")
        if s.outputs == "aux" and model.aux_logits == 0:
            raise StudentError(f"student {s.name!r} imitates the aux logits, but the model has aux_logits (m) = 0: "
                               "an aux-only student needs m >= 1.")
        if isinstance(s.outputs, tuple):  # (an empty tuple is refused when the Student is built)
            bad = [i for i in s.outputs if not 0 <= i < model.n_outputs]
            if bad:
                raise StudentError(f"student {s.name!r}: outputs {bad} are out of range 0..{model.n_outputs - 1}.")
        else:
            try:
                output_mask(s.outputs, model.n_classes, model.aux_logits)
            except StudentError as e:
                raise StudentError(f"student {s.name!r}: {e}") from None
        one = (f"the one logit {s.outputs[0]}" if isinstance(s.outputs, tuple) and len(set(s.outputs)) == 1 else
               "the one aux logit (m = 1)" if s.outputs == "aux" and model.aux_logits == 1 else None)
        if s.loss == "kl" and one:
            warnings.warn(f"student {s.name!r}: KL on {one} is 0 whatever the logits (a softmax over one logit is "
                          "1): the student never moves from its start. Give two or more outputs (m >= 2), or "
                          "loss='mse'.", SettingWarning, stacklevel=4)


def _same_shapes(a: Model, b: Model) -> bool:
    """Whether two models' parameter pytrees have the same structure, shapes and dtypes (abstractly, no compute)."""
    return same_tree_shapes(param_shapes(a), param_shapes(b))


#: What ``Student.optimizer`` may be, for messages.
OPTIMIZER_FORMS = ("give an optax GradientTransformation (e.g. optax.sgd(1e-3)) or a function of the hyperparameters "
                   "returning one (e.g. lambda hp: optax.sgd(hp['learning_rate'])); an optax factory such as optax.sgd "
                   "itself is neither")


def make_optimizer(student: Student, hp: Mapping[str, Any], view: Any = None) -> optax.GradientTransformation:
    """The student's optimiser: its own, or Adam(``hp["learning_rate"]``, β = (0.9, 0.999), ε = 1e-8).

    ``student.optimizer`` may be a transformation, ``f(hp)`` or ``f(hp, view)`` where ``view`` is the
    run's :class:`~subliminal_mlp.core.engine.RunModels` (its data, teachers and keys: e.g. a projection
    that needs the teacher's task gradient, :func:`project_out`).

    One step on the gradient ``g = (0.5, −2, 1)`` at learning rate 0.1: by default Adam's first step,
    ``−lr·g/(|g| + ε) ≈ −lr·sign(g)``; with SGD of the same rate, ``−lr·g``:

    >>> import jax, optax, jax.numpy as jnp
    >>> import subliminal_mlp as sm
    >>> from subliminal_mlp.core.students import make_optimizer
    >>> g, hp = {"w": jnp.array([0.5, -2.0, 1.0])}, {"learning_rate": 0.1}
    >>> step = lambda tx: [round(u, 4) for u in jax.jit(lambda g: tx.update(g, tx.init(g))[0])(g)["w"].tolist()]
    >>> sgd = sm.Student("sgd", optimizer=lambda hp: optax.sgd(hp["learning_rate"]))
    >>> step(make_optimizer(sm.Student("s"), hp)), step(make_optimizer(sgd, hp))
    ([-0.1, 0.1, -0.1], [-0.05, 0.2, -0.1])
    """
    opt = student.optimizer
    if opt is None:
        return adam(hp["learning_rate"])
    if isinstance(opt, optax.GradientTransformation):
        return opt
    made = opt(hp, view) if _n_args(opt) >= 2 else opt(hp)
    if not isinstance(made, optax.GradientTransformation):
        raise StudentError(f"student {student.name!r}: its optimizer returned {type(made).__name__}, not an optax "
                           f"GradientTransformation: {OPTIMIZER_FORMS}.")
    return made


def loss_reads_hparams(loss: Callable) -> str | None:
    """How a user's loss takes the run's hyperparameters (:func:`~.inputs.takes_hparams` after its four
    arguments): ``"positional"`` for ``loss(z, y, mask, example_weights, hp)`` (a fifth positional parameter
    without a default, or one named ``hp``), ``"keyword"`` for an ``hp`` that comes later or is keyword-only
    (``loss(z, y, mask, w, *, hp)``), else ``None``: ``loss(z, y, mask, example_weights)`` (a ``*args`` loss
    is called with the four).

    >>> loss_reads_hparams(lambda z, y, m, w, hp: 0.0), loss_reads_hparams(lambda z, y, m, w=None: 0.0)
    ('positional', None)
    """
    return takes_hparams(loss, 4)


def _n_args(fn) -> int:
    import inspect

    try:
        return len(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return 1


def tree_dot(a, b) -> jax.Array:
    """``Σ_leaves Σ a·b``: the dot product of two parameter pytrees as flat vectors.

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.core.students import tree_dot
    >>> a = {"w": jnp.array([[1.0, 2.0]]), "b": jnp.array([3.0])}
    >>> b = {"w": jnp.array([[4.0, -1.0]]), "b": jnp.array([0.5])}
    >>> float(tree_dot(a, b))  # 1·4 + 2·(−1) + 3·0.5
    3.5
    """
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def cosine(a, b) -> jax.Array:
    """``a·b / (‖a‖‖b‖)`` of two pytrees as flat vectors (0 when either is 0; NaN when either is not finite).

    As numpy's cosine of the two raveled trees; then against a zero tree and a tree with an infinite entry:

    >>> import jax, numpy as np
    >>> from subliminal_mlp.core.students import cosine
    >>> rng = np.random.default_rng(0)
    >>> a, b = ({"w": rng.normal(size=(3, 4)), "b": rng.normal(size=4)} for _ in range(2))
    >>> u, v = (np.concatenate([leaf.ravel() for leaf in jax.tree.leaves(t)]) for t in (a, b))
    >>> bool(np.isclose(cosine(a, b), u @ v / (np.linalg.norm(u) * np.linalg.norm(v)), atol=1e-6))
    True
    >>> zero, diverged = {"w": np.zeros((3, 4)), "b": np.zeros(4)}, {"w": b["w"], "b": np.full(4, np.inf)}
    >>> float(cosine(a, zero)), float(cosine(a, diverged))
    (0.0, nan)
    """
    den = jnp.sqrt(tree_dot(a, a) * tree_dot(b, b))
    return similarity_ratio(tree_dot(a, b), den)


def similarity_ratio(num: jax.Array, den: jax.Array) -> jax.Array:
    """``num / den`` for a normalised similarity: 0 where ``den`` is 0 (a zero vector), NaN where it is not finite
    (a diverged model's parameters or features: never 0, which would read as "unrelated").

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.core.students import similarity_ratio
    >>> similarity_ratio(jnp.array([1.0, 0.0, 1.0]), jnp.array([4.0, 0.0, jnp.inf])).tolist()  # 1/4; zero; diverged
    [0.25, 0.0, nan]
    """
    return jnp.where(jnp.isfinite(den), jnp.where(den > 0, num / jnp.where(den > 0, den, 1.0), 0.0), jnp.nan)


#: The rules of :func:`project_out`: remove the component only when the update and the direction align
#: (Kitkana & Arora's projection test, the default), or always.
PROJECTION_RULES = ("aligned", "always")


def check_projection_rule(rule: str, what: str) -> str:
    """``rule`` if it is one of :data:`PROJECTION_RULES`, else a :class:`ConfigError` whose message starts with
    ``what`` (the setting as the caller names it)."""
    if rule not in PROJECTION_RULES:
        raise ConfigError(f"{what}: choose 'aligned' (remove the component only on the steps where the update and "
                          "the direction align: Kitkana & Arora's test) or 'always'.")
    return rule


def project_out(direction: Callable[[Any], Any], weight: float = 1.0, *,
                when: str = "aligned") -> optax.GradientTransformation:
    """An optax transformation removing from each update its component along ``direction(params)``.

    With ``d = direction(params)`` (e.g. the gradient of the teacher's task loss at the student's
    current parameters, the "trait gradient") and ``w = weight``, a number (or array) in [0, 1]
    (1: all of the component, 0: none):

    * ``when="aligned"`` (the default; Kitkana & Arora's projection test, protocol.md §4: the
      distillation gradient is projected onto the plane normal to the trait gradient *when they
      align*): ``g ← g − w · max(g·d, 0) / ‖d‖² · d``. A ``g`` with ``g·d ≤ 0`` (a step that does
      not descend the trait's loss) is left as it is.
    * ``when="always"``: ``g ← g − w · (g·d / ‖d‖²) · d``, whatever the sign of ``g·d``.

    ``g`` and ``d`` are both gradients of losses (a descent step is ``−g``), so ``g·d > 0`` means
    the step along ``−g`` also lowers the trait's loss. To sweep ``w``, build the optimiser from the
    hyperparameters: ``optimizer=lambda hp: optax.chain(project_out(d, hp["w"]), adam(hp["learning_rate"]))``.
    Chain it before the optimiser: ``optax.chain(project_out(d), adam(lr))``. It projects the
    *gradient*: Adam's update, rescaled per coordinate by its moment estimates, is then not exactly
    orthogonal to ``d`` (its cosine with ``d`` is small, not 0); chain it after the optimiser
    (``optax.chain(adam(lr), project_out(d, when="always"))``) to make the applied update itself
    orthogonal (after the optimiser the updates are steps, ``−lr · …``, not gradients, so "aligned"
    would select the opposite sign there).

    >>> import jax.numpy as jnp
    >>> tx = project_out(lambda params: {"w": jnp.array([1.0, 0.0])})  # the first coordinate, when aligned
    >>> state, params = tx.init(None), {"w": jnp.zeros(2)}
    >>> tx.update({"w": jnp.array([3.0, 4.0])}, state, params)[0]["w"].tolist()   # aligned: removed
    [0.0, 4.0]
    >>> tx.update({"w": jnp.array([-3.0, 4.0])}, state, params)[0]["w"].tolist()  # opposed: kept
    [-3.0, 4.0]
    >>> always = project_out(lambda params: {"w": jnp.array([1.0, 0.0])}, when="always")
    >>> always.update({"w": jnp.array([-3.0, 4.0])}, state, params)[0]["w"].tolist()
    [0.0, 4.0]
    """
    check_projection_rule(when, f"project_out(when={when!r})")

    def update(updates, state, params=None):
        if params is None:
            raise ValueError("project_out needs the parameters: call update(updates, state, params).")
        d = direction(params)
        dd = tree_dot(d, d)
        gd = tree_dot(updates, d)
        if when == "aligned":
            gd = jnp.maximum(gd, 0.0)
        coef = weight * jnp.where(dd > 0, gd / jnp.where(dd > 0, dd, 1.0), 0.0)
        return jax.tree.map(lambda g, t: g - coef * t, updates, d), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update)


@dataclass(frozen=True)
class liminal:
    """Liminal training (Kitkana & Arora 2026): a KL penalty to the student's own start, early on.

    With ``z_θ = f_θ(x)`` the student's logits on the batch and ``z_0 = f_{θ_S0}(x)`` those of
    its start (its "base model"), the penalty added to the distillation loss at step ``t`` is

        λ · 1[t < T] · Σ_b KL(softmax(z_0,b) ‖ softmax(z_θ,b))    (over the logits ``outputs``),

    summed over the batch like the distillation loss, so λ = 1 weighs both alike. ``weight`` (λ)
    and ``steps`` (T, the "critical period": e.g. one epoch) are settings: a number, a
    hyperparameter name (swept in one program) or a function of the hyperparameters;
    ``outputs`` chooses the logits ("all", the default: the whole output; "class"; "aux").
    Use it as a student's ``penalty``::

        Student("liminal", penalty=liminal(weight="liminal_weight", steps="liminal_steps"))

    Checked against the KL computed in numpy, with λ = 0.5 and T = 10, on a stand-in for the engine's
    :class:`~subliminal_mlp.core.engine.PenaltyView` holding the fields it reads:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> import subliminal_mlp as sm
    >>> from types import SimpleNamespace as View
    >>> net, x = sm.mlp((8,)), np.random.default_rng(0).uniform(-1, 1, (4, 784)).astype(np.float32)
    >>> start, theta = net.init(jax.random.PRNGKey(0)), net.init(jax.random.PRNGKey(1))
    >>> run = View(hp={"liminal_weight": 0.5, "liminal_steps": 10})
    >>> penalty = sm.students.liminal()  # weight "liminal_weight", steps "liminal_steps", all logits
    >>> at = jax.jit(lambda t: penalty(View(model=net, start=start, theta=theta, x=x, step=t, run=run)))
    >>> logsm = lambda z: z - np.log(np.exp(z).sum(-1, keepdims=True))
    >>> logp, logq = (logsm(np.asarray(net.apply(params, x), np.float64)) for params in (start, theta))
    >>> kl = (np.exp(logp) * (logp - logq)).sum()  # summed over the batch
    >>> bool(np.isclose(at(3), 0.5 * kl, rtol=1e-4)), float(at(10))  # λ·KL before step T, 0 from step T on
    (True, 0.0)
    """

    weight: Setting = "liminal_weight"
    steps: Setting = "liminal_steps"
    outputs: Any = "all"

    def __call__(self, view) -> jax.Array:
        model = view.model
        mask = output_mask(self.outputs, model.n_classes, model.aux_logits)
        z0 = jax.lax.stop_gradient(model.apply(view.start, view.x))
        kl = distillation_loss("kl")(model.apply(view.theta, view.x), z0, mask)
        on = (view.step < resolve(self.steps, view.run.hp)).astype(kl.dtype)
        return resolve(self.weight, view.run.hp) * on * kl


def adam(learning_rate) -> optax.GradientTransformation:
    """Adam with PyTorch's defaults (β = (0.9, 0.999), ε = 1e-8), the paper's optimiser (protocol.md §1).

    Its first step is ``−lr·m̂/(√v̂ + ε) = −lr·g/(|g| + ε)``: ``−lr·sign(g)``, but half of it for a
    gradient as small as ε = 1e-8:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp.core.students import adam
    >>> tx, g = adam(0.1), {"w": jnp.array([0.5, -2.0, 1e-8])}
    >>> first_step = jax.jit(lambda g: tx.update(g, tx.init(g))[0])  # from a fresh state
    >>> [round(u, 4) for u in first_step(g)["w"].tolist()]
    [-0.1, 0.1, -0.05]
    """
    return optax.adam(learning_rate, b1=0.9, b2=0.999, eps=1e-8)
