r"""Single-step gradient analysis, the kernels: the quantities of Lemma 1 and Theorem 1 (protocol.md §2).

The setting (Cloud et al. 2025, §6.1 and Appendix C). A network ``f_θ`` with ``n`` outputs (any
:class:`~subliminal_mlp.core.models.Model`); a teacher and a student initialisation ``θT0``, ``θS0``.
The teacher takes one gradient step on any differentiable loss ``L_T``::

    θT(ε) = θT0 + ε·ΔθT,            ΔθT = −∇L_T(θT0).

Inputs ``x`` (noise, say) are labelled by the teacher, ``y(ε) = f_{θT(ε)}(x)``, and the student
takes one step of size ``α`` on ``E_x L_S(f_θ(x), y(ε))`` (a *mean* over the batch of ``x``)::

    ΔθS(ε) = −∇_θ E_x L_S(f_θS0(x), y(ε)),      θS = θS0 + α·ΔθS(ε).

**Lemma 1.** If ``θS0 = θT0`` and ``L_S`` is squared error with weights ``w_i ≥ 0`` or softmax
cross-entropy (on all logits or on a fixed subset), then ``ΔθS·ΔθT ≥ 0`` for small enough ``ε``.
**Theorem 1.** Under the same assumptions either ``ΔθS·ΔθT = 0`` for all ``ε``, or
``L_T(θS0 + α·ΔθS(ε)) < L_T(θS0)`` for small enough ``ε``.

Why (the quantity this module computes exactly). With a shared initialisation ``∂L_S/∂z`` vanishes
at ``ε = 0`` (``z = y``), and expanding in ``ε``::

    ΔθS(ε)·ΔθT = ε·A + O(ε²),   A = E_x[vᵀ M(x) v],   v = J_x ΔθT = ∂/∂ε f_{θT0+εΔθT}(x) at ε=0,

with ``M(x) = −∂²L_S/∂y∂z`` (at ``z = y = f_θT0(x)``), positive semi-definite in closed form:

* squared error ``L_S = Σ_i w_i (z_i − y_i)²``: ``M = 2·diag(w)``; null space = the coordinates
  with ``w_i = 0``;
* softmax cross-entropy on a subset ``S`` (``S`` = all logits or, e.g., the aux logits),
  ``L_S = −Σ_{i∈S} σ(y_S)_i log σ(z_S)_i``: ``M = diag(p) − p pᵀ`` on ``S`` and 0 elsewhere,
  ``p = σ(y_S)`` at the teacher's *initial* outputs — the covariance of a one-hot categorical;
  null space = the all-ones vector on ``S`` plus every coordinate off ``S``.

``v`` is obtained with one :func:`jax.jvp` of ``f(·, x)`` at ``θT0`` along ``ΔθT`` — no finite
differences — so ``A`` is exact and ``ΔθS·ΔθT/ε → A`` can be checked to ``O(ε)``. Then
``L_T(θS0 + αΔθS) − L_T(θS0) = −α·ΔθT·ΔθS + O(α²ε²) = −αεA + O(αε²) + O(α²ε²)`` with the shared
initialisation (there ``∇L_T(θS0) = −ΔθT``): the teacher's loss drops.
With ``θS0 ≠ θT0`` (the control), ``ΔθS(ε) = ΔθS(0) + O(ε)``: to leading order the student gets the
update of the *untrained* teacher, the teacher's step drops out at first order, and no sign is
guaranteed.

API overview
------------
Everything is a pure function of parameter pytrees. The network is a
:class:`~subliminal_mlp.core.models.Model` passed as ``model=`` (any ``(init, apply)`` pair: an
:func:`~subliminal_mlp.core.models.mlp` of any widths and activation, a Flax CNN through
:func:`~subliminal_mlp.core.models.from_flax`, ...); ``apply_fn=`` still works, and with neither the
network is the paper's ReLU MLP read off the parameters (:func:`subliminal_mlp.core.model.apply`).
The kernels are ``jax.jit``-compiled and can be ``jax.vmap``-ped (over ``eps``, say):

* :class:`StudentLoss` — a student loss setting; :func:`mse_all`, :func:`mse_aux`, :func:`ce_all`,
  :func:`ce_aux`, :func:`standard_losses` build the four standard ones for a model (or a Config);
* :class:`TeacherLoss` — a teacher loss *bound to a model*: :func:`class_cross_entropy_loss`
  (``model``), :meth:`TeacherLoss.custom`; :func:`mnist_teacher_loss` is the one of the paper's
  ReLU MLP and :func:`l2_teacher_loss` applies to any parameters. A kernel given a teacher loss
  bound to another network raises :class:`~subliminal_mlp.core.models.ModelError`, naming both; any
  teacher loss (a plain function too) is traced abstractly first, and one that cannot be applied
  to the model's parameters is a ``ModelError`` before any compute;
* :func:`teacher_update` — ``ΔθT = −∇L_T(θT0)``;
* :func:`student_update` — ``ΔθS(ε)``;
* :func:`output_tangent`, :func:`alignment_matrix`, :func:`quadratic_form`,
  :func:`first_order_coefficient` — ``v``, ``M(x)``, ``vᵀM(x)v`` and ``A``;
* :func:`alignment` — ``ΔθS·ΔθT``, the cosine and the change of ``L_T`` at one ``ε``;
* :func:`sweep` — the same over a whole grid of ``ε``, several loss settings and several student
  initialisations in *one* compiled call, sharing what does not depend on ``ε`` or on the loss.

The ``subliminal-mlp theorem`` command's protocol and report (``run_theorem_check``,
``summarize``, ``format_tables``, ``plot_theorem``) live in :mod:`subliminal_mlp.theory.theorem`.

Precision: the checks need float64 (``ΔθS·ΔθT/ε − A`` is ``O(ε)``, far below float32 rounding
at small ``ε``). Importing this module does not enable 64-bit mode; use the scope
:func:`float64` (``jax.enable_x64``) and :func:`to_float64`::

    with theory.float64():
        params = theory.to_float64(model.init(key))
        ...

Every kernel (:func:`teacher_update` too) warns (:class:`PrecisionWarning`) when it will compute in
float32: outside the scope, or inside it on float32 parameters (a float32 ``x`` or teacher-loss data
beside float64 parameters is promoted: the kernel computes in float64, and says nothing).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import sys
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from ..core.config import Config, is_integer
from ..core.losses import class_cross_entropy, masked_log_softmax
from ..core.model import apply as model_apply
from ..core.models import MLP, Model, ModelError, same_tree_shapes

__all__ = [
    "StudentLoss", "mse_all", "mse_aux", "ce_all", "ce_aux", "standard_losses", "STANDARD_LOSSES",
    "float64", "to_float64", "tree_dot", "tree_norm", "tree_cosine",
    "student_loss_value", "output_gradient", "alignment_matrix", "quadratic_form",
    "teacher_update", "student_update", "output_tangent", "first_order_coefficient", "alignment",
    "SweepResult", "sweep", "eps_grid", "TeacherLoss", "class_cross_entropy_loss", "mnist_teacher_loss",
    "l2_teacher_loss", "ModelError", "DEFAULT_NETWORK", "PrecisionWarning", "EPS_FLOOR",
]

Params = Any
LossT = Callable[..., jax.Array]

#: The names of the four standard loss settings, in display order.
STANDARD_LOSSES = ("mse_all", "mse_aux", "ce_all", "ce_aux")


# ----------------------------------------------------------------------------- precision


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """A scope in which JAX computes in 64 bits (``jax.enable_x64(True)``), restored on exit.

    The library itself stays in float32 outside the scope; importing this module changes
    nothing. Arrays created inside are float64 only if their inputs are: cast parameters and data
    with :func:`to_float64`. Run the training protocol (``sm.run``) outside it: inside (or under
    ``JAX_ENABLE_X64=1``) its parameters stay float32, but some of its intermediates do not, so its
    accuracies differ from the float32 program's in the last digits (its record says ``"x64": true``).

    >>> import jax.numpy as jnp
    >>> with float64():
    ...     print(to_float64(jnp.ones(2)).dtype)
    float64
    """
    with jax.enable_x64(True):
        yield


def to_float64(tree: Any) -> Any:
    """Cast every floating leaf of ``tree`` to float64 (must be called inside :func:`float64`).

    Integer leaves keep their dtype; outside the scope it raises ``RuntimeError`` (JAX would keep float32):

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.theory import float64, to_float64
    >>> tree = {"w": jnp.ones(2), "index": jnp.arange(2)}  # float32 and int32, made outside the scope
    >>> with float64():
    ...     cast = to_float64(tree)
    ...     print(cast["w"].dtype, cast["index"].dtype)
    float64 int32
    >>> to_float64(tree)
    Traceback (most recent call last):
    ...
    RuntimeError: to_float64 needs 64-bit mode: call it inside `with theory.float64():` ...
    """
    if not jax.config.jax_enable_x64:
        raise RuntimeError(
            "to_float64 needs 64-bit mode: call it inside `with theory.float64():` "
            "(otherwise JAX would silently keep float32)."
        )

    def cast(a):
        a = jnp.asarray(a)
        return a.astype(jnp.float64) if jnp.issubdtype(a.dtype, jnp.floating) else a

    return jax.tree.map(cast, tree)


# ----------------------------------------------------------------------------- pytrees


def _same_tree(a: Params, b: Params) -> None:
    """ValueError unless ``a`` and ``b`` have one pytree structure and leaf shapes (:func:`~subliminal_mlp.core.models.
    same_tree_shapes`; else their flat vectors would pair unrelated entries, or fail with a bare shape error)."""
    if not same_tree_shapes(a, b, dtypes=False):
        ta, tb = jax.tree.structure(a), jax.tree.structure(b)
        what = f"structure ({ta} vs {tb})" if ta != tb else "a leaf's shape"
        raise ValueError(f"the two parameter pytrees differ in {what}: give two trees of one architecture.")


def tree_dot(a: Params, b: Params) -> jax.Array:
    """``a·b`` of two parameter pytrees of the same structure and shapes (via ``ravel_pytree``; a
    ``ValueError`` otherwise).

    >>> float(tree_dot({"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, 4.0])}))
    11.0
    """
    _same_tree(a, b)
    return jnp.vdot(ravel_pytree(a)[0], ravel_pytree(b)[0])


def tree_norm(a: Params) -> jax.Array:
    """Euclidean norm ``‖a‖`` of a parameter pytree seen as one vector.

    All leaves together, whatever their shapes (here ``√(3² + 4²)``):

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.theory import tree_norm
    >>> float(tree_norm({"w": jnp.array([3.0]), "b": jnp.array([[4.0]])}))
    5.0
    """
    return jnp.linalg.norm(ravel_pytree(a)[0])


def tree_cosine(a: Params, b: Params) -> jax.Array:
    """``a·b / (‖a‖‖b‖)`` (0 when either is the zero vector) of two pytrees of one structure (as :func:`tree_dot`).

    The cosine of ``(1, 0)`` and ``(1, 1)`` is ``1/√2``; against the zero vector it is 0, not NaN:

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.theory import tree_cosine
    >>> a, b = {"w": jnp.array([1.0, 0.0])}, {"w": jnp.array([1.0, 1.0])}
    >>> round(float(tree_cosine(a, b)), 4), float(tree_cosine(a, {"w": jnp.zeros(2)}))  # 1/√2 = 0.70711
    (0.7071, 0.0)
    """
    _same_tree(a, b)
    fa, fb = ravel_pytree(a)[0], ravel_pytree(b)[0]
    den = jnp.linalg.norm(fa) * jnp.linalg.norm(fb)
    return jnp.where(den > 0, jnp.vdot(fa, fb) / jnp.where(den > 0, den, 1.0), 0.0)


def _leaves_dot(a, b):
    """``a·b`` summed leaf by leaf (no flattening copy)."""
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _axpy(alpha, d, p):
    """``p + alpha·d`` leaf by leaf."""
    return jax.tree.map(lambda pi, di: pi + alpha * di, p, d)


# ----------------------------------------------------------------------------- the network


class _Net(NamedTuple):
    """The network a kernel differentiates: its ``apply``, its :class:`Model` (if given), a label."""

    apply: Callable
    model: Optional[Model]
    label: str


#: How errors name the network used when neither ``model=`` nor ``apply_fn=`` is given.
DEFAULT_NETWORK = "the paper's ReLU MLP (subliminal_mlp.core.model.apply, the default; widths read off the parameters)"


def _model_label(model: Model) -> str:
    """``'name' (n_classes=…, aux_logits=…, input_shape=…, …)``: a model as errors name it."""
    info = ", ".join(f"{k}={v}" for k, v in model.describe().items() if k != "name")
    return f"model {model.name!r} ({info})"


def _fn_name(fn) -> str:
    return getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or repr(fn)


def _network(model: Optional[Model], apply_fn: Optional[Callable]) -> _Net:
    """Resolve ``model=`` / ``apply_fn=`` to the network: ``model.apply``, ``apply_fn``, or the default MLP."""
    if model is not None:
        if not isinstance(model, Model):
            raise ModelError(f"model = {model!r} is not a subliminal_mlp.core.models.Model: build one with mlp(...), "
                             "from_flax(...) or Model(init, apply, ...).")
        if apply_fn is not None and apply_fn != model.apply:
            raise ModelError(f"{_model_label(model)} and apply_fn = {_fn_name(apply_fn)} are two different networks: "
                             "give only model= (apply_fn= is the older spelling of model.apply).")
        return _Net(model.apply, model, _model_label(model))
    if apply_fn is not None:
        return _Net(apply_fn, None, f"apply_fn {_fn_name(apply_fn)}")
    return _Net(model_apply, None, DEFAULT_NETWORK)


def _same_network(model: Model, net: _Net) -> bool:
    """Whether a kernel's ``net`` computes ``model``'s function (the same model or apply, or both the paper's ReLU MLP)."""
    return (net.model == model or net.apply == model.apply
            or (_is_reference_apply(net.apply) and _is_reference_apply(model.apply)))


def _is_reference_apply(fn) -> bool:
    """Whether ``fn`` computes the paper's ReLU MLP (:func:`subliminal_mlp.core.model.apply` or an ``mlp`` ReLU)."""
    if fn is model_apply:
        return True
    module = getattr(fn, "module", None)
    return (isinstance(module, MLP) and module.activation is jax.nn.relu
            and not getattr(fn, "method_kwargs", ()) and getattr(fn, "index", None) is None)


# ----------------------------------------------------------------------------- validation


def _is_concrete(x) -> bool:
    try:
        np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


def _check_positive(name: str, value, *, scalar: bool = False) -> None:
    """``value > 0`` everywhere (skipped for traced values, e.g. under ``vmap``); with ``scalar``, one number
    (an array would broadcast against the parameters: a different step per column, silently)."""
    if scalar and jnp.ndim(value) != 0:
        raise ValueError(f"{name} must be one number; got an array of shape {jnp.shape(value)} "
                         f"(for a grid of values, use sweep() or vmap over {name}).")
    if not _is_concrete(value):
        return
    arr = np.asarray(value)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: give at least one value > 0.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))].ravel()[:3]
        raise ValueError(f"{name} must be finite and > 0 (the theorem is about a small positive step); "
                         f"got {bad.tolist()}.")


def _check_count(name: str, value, minimum: int = 1) -> int:
    """``value`` as an ``int`` if it is an integer ``>= minimum``; else a ``ValueError`` naming it (a float such
    as 2.5 would be truncated, or fail inside JAX; a bool is no count)."""
    if not is_integer(value, minimum, numpy=True):
        raise ValueError(f"{name} = {value!r} is invalid: give an integer >= {minimum}.")
    return int(value)


#: The smallest step ``ε`` that :func:`eps_grid` (and the theorem check) accepts. The student's update is
#: computed from the teacher's outputs minus its own, ``f(θT0 + εΔθT) − f(θT0)`` at a shared start, which loses
#: ``u·‖f‖`` to cancellation (``u = 2.2e-16``, float64): a relative error ``u·‖f‖/(ε‖J ΔθT‖)`` of ``ΔθS·ΔθT/ε``,
#: which the check allows as ``1e-13/ε`` (:data:`subliminal_mlp.theory.theorem.CANCELLATION`, enough for
#: ``‖f‖/‖J ΔθT‖`` up to ~450). Below ``1e-13 / 1e-3 = 1e-10`` that allowance reaches the default tolerance 1e-3
#: of the relative gap, so the check could no longer tell a wrong first-order term from rounding (the rounding
#: itself is usually far smaller: on the paper's MLP ~1e-7..1e-5 of the ratio at ``ε = 1e-10``, up to ~1e-3 at
#: ``1e-13``), and far below it the steps underflow (``ε = 1e-200`` moves nothing; ``1e-320`` is subnormal).
EPS_FLOOR = 1e-10
#: Why a smaller ε is refused (the messages of :func:`eps_grid`, :func:`~subliminal_mlp.theory.theorem.check_eps`
#: and ``subliminal-mlp theorem``).
EPS_FLOOR_REASON = ("below it the check's allowance for float64 cancellation in f(θT0 + εΔθT) − f(θT0), 1e-13/ε of "
                    "ΔθS·ΔθT/ε, reaches its 1e-3 tolerance, so it could no longer tell a wrong first-order term from "
                    "rounding, and far smaller steps underflow")


class PrecisionWarning(UserWarning):
    """A kernel computes in float32, which a theorem check at ε ~ 1e-6 cannot afford, or :func:`sweep` is given a
    step below :data:`EPS_FLOOR`, where float64 rounding dominates (filter it to do so on purpose)."""


#: Within one kernel call (and the kernels it calls), the PrecisionWarnings given already: each is said once a call.
_WARNED: contextvars.ContextVar[Optional[set]] = contextvars.ContextVar("subliminal_mlp_precision_warned",
                                                                        default=None)
_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _precision_warning(message: str) -> None:
    """Warn (:class:`PrecisionWarning`) at the user's line (the first caller outside ``subliminal_mlp``), each
    message once per kernel call (outside the scope, the parameters' check and the inputs' said it twice)."""
    warned = _WARNED.get()
    if warned is not None:
        if message in warned:
            return
        warned.add(message)
    frame, level = sys._getframe(0), 1  # level 1: this function, the frame calling warnings.warn
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE_DIR + os.sep):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, PrecisionWarning, stacklevel=level)


def _warn_float32(**trees: Any) -> None:
    """Warn (:class:`PrecisionWarning`) when a kernel will compute in float32: inside :func:`float64`, when a
    float32 array is given (JAX keeps its inputs' precision); outside it (64-bit mode off), when it is
    called on concrete arrays, whatever their dtype (a float64 array made inside the scope is computed in
    float32 after it). Inside a traced program (the one-step study's float32 predictors) nothing is said."""
    if not jax.config.jax_enable_x64:
        leaves = [a for tree in trees.values() for a in jax.tree.leaves(tree)]
        if leaves and all(_is_concrete(a) for a in leaves if hasattr(a, "dtype")):
            _precision_warning("this theory kernel runs outside theory.float64() (JAX's 64-bit mode is off), so it "
                               "computes in float32, whatever the inputs' dtype: call it inside `with "
                               "theory.float64():` (or filter theory.PrecisionWarning to compute in float32 on "
                               "purpose).")
        return
    for name, tree in trees.items():
        if any(getattr(a, "dtype", None) == jnp.float32 for a in jax.tree.leaves(tree)):
            _precision_warning(f"{name} is float32 inside theory.float64(): this kernel computes in float32. Cast "
                               "parameters and data with theory.to_float64 for float64 results.")
            return


def _float32_outside_scope(kernel: Callable) -> Callable:
    """``kernel`` computing outside :func:`float64` in float32, as documented, on float64 JAX arrays made inside
    the scope too (they keep their dtype after it, and mixed with JAX's float32 they fail inside
    differentiation): such arrays among its arguments are cast to float32 first. Inside the scope, and on
    traced or other values, nothing changes. A call gives each :class:`PrecisionWarning` once."""
    def cast(a):
        return (a.astype(jnp.float32) if isinstance(a, jax.Array) and a.dtype == jnp.float64 and _is_concrete(a)
                else a)

    @functools.wraps(kernel)
    def run(*args, **kwargs):
        if not jax.config.jax_enable_x64:
            args, kwargs = jax.tree.map(cast, (args, kwargs))
        token = _WARNED.set(set()) if _WARNED.get() is None else None  # each warning once per outermost call
        try:
            return kernel(*args, **kwargs)
        finally:
            if token is not None:
                _WARNED.reset(token)

    return run


def _jax_dtype(a) -> np.dtype:
    """The dtype JAX computes ``a`` in: a JAX array's own (a float64 array made inside :func:`float64` stays
    float64 after it), a numpy array's or number's as JAX would convert it (float64 → float32 without x64)."""
    return a.dtype if isinstance(a, jax.Array) else jax.dtypes.canonicalize_dtype(np.result_type(a))


def _check_trees(ref_name: str, ref: Params, **others: Params) -> None:
    """Each tree in ``others`` has the pytree structure, leaf shapes and dtypes (as JAX would use them) of
    ``ref`` (and, inside :func:`float64`, a float32 tree is warned about)."""
    _warn_float32(**{ref_name: ref}, **others)
    ref_leaves, ref_def = jax.tree_util.tree_flatten_with_path(ref)
    ref_paths = [jax.tree_util.keystr(p) for p, _ in ref_leaves]
    for name, tree in others.items():
        leaves, tdef = jax.tree_util.tree_flatten_with_path(tree)
        paths = [jax.tree_util.keystr(p) for p, _ in leaves]
        if tdef != ref_def:
            missing = sorted(set(ref_paths) - set(paths))
            extra = sorted(set(paths) - set(ref_paths))
            detail = []
            if missing:
                detail.append(f"{name} lacks {missing[:4]}")
            if extra:
                detail.append(f"{name} has extra {extra[:4]}")
            if not detail:
                detail.append(f"structures {tdef} vs {ref_def}")
            raise ValueError(f"{name} and {ref_name} are not the same parameter pytree: "
                             + "; ".join(detail) + ". Both must come from the same architecture.")
        for path, (_, a), (_, b) in zip(ref_paths, ref_leaves, leaves):
            sa, sb = jnp.shape(a), jnp.shape(b)
            if sa != sb:
                raise ValueError(f"{name}{path} has shape {sb} but {ref_name}{path} has shape {sa}: "
                                 "the two pytrees must come from the same architecture (widths, m).")
            da, db = (_jax_dtype(v) for v in (a, b))
            if da != db:
                raise ValueError(f"{name}{path} is {db} but {ref_name}{path} is {da}: give every tree in one "
                                 "precision (inside theory.float64(), cast each with theory.to_float64).")


def _check_inputs(net: _Net, theta: Params, x, losses: Sequence["StudentLoss"] = ()) -> int:
    """``x`` is a non-empty ``(batch, *input_shape)`` array the network accepts; returns ``n_outputs``.

    A float32 ``x`` inside :func:`float64` is warned about only when the kernel computes in float32: beside
    float64 parameters JAX promotes it, and the kernel computes in float64 (on ``x``'s values, which are what
    they are)."""
    if not (jax.config.jax_enable_x64 and any(_jax_dtype(a) == np.float64 for a in jax.tree.leaves(theta))):
        _warn_float32(x=x)
    shape = tuple(jnp.shape(x))
    if len(shape) < 2 or shape[0] == 0:
        raise ValueError(f"x must be a non-empty batch (n_examples, *input_shape), e.g. (n, input_dim) for an "
                         f"MLP; got shape {shape}.")
    if net.model is not None and shape[1:] != net.model.input_shape:
        raise ModelError(f"x of shape {shape} does not fit the network: {net.label} takes inputs of shape "
                         f"(batch, {', '.join(map(str, net.model.input_shape))}).")
    try:
        out = jax.eval_shape(net.apply, theta, x)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ModelError(f"x of shape {shape} does not fit the network ({net.label}), or the parameters are not "
                         f"this network's: {type(e).__name__}: {e}") from e
    out_shape = tuple(getattr(out, "shape", ()))
    if not jnp.issubdtype(getattr(out, "dtype", jnp.float32), jnp.floating):
        raise ModelError(f"{net.label} returns outputs of dtype {out.dtype}: the theorem differentiates the "
                         "logits, which must be floating-point (an integer or rounded output has no gradient).")
    if len(out_shape) != 2 or out_shape[0] != shape[0]:
        raise ModelError(f"{net.label} returns outputs of shape {out_shape} for {shape[0]} inputs; "
                         "logits of shape (batch, n_outputs) are expected.")
    n_out = out_shape[-1]
    if net.model is not None and n_out != net.model.n_outputs:
        raise ModelError(f"{net.label} returns {n_out} logits but declares n_classes + aux_logits = "
                         f"{net.model.n_outputs}: fix the model's last layer or its n_classes / aux_logits.")
    for loss in losses:
        if loss.model is not None and not _same_network(loss.model, net):
            raise ModelError(f"loss setting {loss.label!r} was built for {_model_label(loss.model)}, but the network "
                             f"here is {net.label}: pass the same model= to the kernel (its outputs would be another "
                             "network's).")
        if loss.n_outputs != n_out:
            raise ValueError(f"loss setting {loss.label!r} has {loss.n_outputs} logit weights but the "
                             f"network has {n_out} outputs: build it for this network (e.g. mse_all(model)).")
    return n_out


# ----------------------------------------------------------------------------- loss settings


@dataclass(frozen=True)
class StudentLoss:
    """A student loss setting of the theorem (hashable, so it can be a static ``jit`` argument).

    ``kind = "mse"``: ``L_S(z, y) = Σ_i w_i (z_i − y_i)²`` with ``weights = w`` (all ``w_i ≥ 0``,
    not all zero); ``M = 2·diag(w)``.

    ``kind = "ce"``: softmax cross-entropy on the subset ``S = {i: weights_i = 1}`` (``weights`` is
    a 0/1 mask, non-empty): ``L_S = −Σ_{i∈S} σ(y_S)_i log σ(z_S)_i``; ``M = diag(p) − ppᵀ`` on S.
    With S = all logits this is the full softmax cross-entropy; the paper's aux-only student uses
    S = the m aux logits (protocol.md §2: the theorem holds for a fixed subset too).

    Build with :meth:`mse`, :meth:`ce` or the standard settings :func:`mse_all`, :func:`mse_aux`,
    :func:`ce_all`, :func:`ce_aux`::

        >>> StudentLoss.ce([3, 4], n_outputs=5).weights
        (0.0, 0.0, 0.0, 1.0, 1.0)
    """

    kind: str
    weights: tuple[float, ...]
    name: str = ""
    #: The network the setting was built for (by :func:`mse_all` etc. from a Model), or None. A kernel
    #: run on another network raises ModelError: it never differentiates a network the loss was not
    #: built for (e.g. the default ReLU MLP when ``model=`` was forgotten). Not part of equality.
    model: Optional[Model] = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.kind not in ("mse", "ce"):
            raise ValueError(f"StudentLoss kind = {self.kind!r}: choose 'mse' (squared error) or 'ce' "
                             "(softmax cross-entropy).")
        w = tuple(float(v) for v in np.asarray(self.weights, dtype=np.float64).ravel())
        object.__setattr__(self, "weights", w)
        if len(w) == 0:
            raise ValueError("StudentLoss weights are empty: give one weight per logit.")
        if not all(math.isfinite(v) for v in w):
            raise ValueError(f"StudentLoss weights must be finite; got {w}.")
        if self.kind == "mse":
            if any(v < 0 for v in w):
                raise ValueError(f"squared-error weights must be >= 0 (M = 2·diag(w) must be positive "
                                 f"semi-definite); got {w}.")
            if not any(v > 0 for v in w):
                raise ValueError("squared-error weights are all zero: the loss would be identically 0; "
                                 "give at least one positive weight.")
        else:
            if any(v not in (0.0, 1.0) for v in w):
                raise ValueError(f"cross-entropy weights must be a 0/1 mask selecting the logit subset S; "
                                 f"got {w}. To give the subset as indices, give the number of logits too: "
                                 f"StudentLoss.ce([10, 11, 12], n_outputs=13).")
            if not any(v == 1.0 for v in w):
                raise ValueError("the cross-entropy logit subset is empty: select at least one logit "
                                 "(e.g. the aux logits, or all).")
            # One logit is allowed though its softmax is constant (the loss is identically 0, A = 0: the
            # theorem's other branch): it is m = 1 of the aux-logit sweep (figures/one_step.json).

    @classmethod
    def mse(cls, weights, name: str = "", model: Optional[Model] = None) -> "StudentLoss":
        """Weighted squared error ``Σ w_i (z_i − y_i)²`` (``weights``: one ``w_i ≥ 0`` per logit)."""
        return cls("mse", tuple(np.asarray(weights, dtype=np.float64).ravel()), name, model)

    @classmethod
    def ce(cls, subset, n_outputs: int | None = None, name: str = "", model: Optional[Model] = None) -> "StudentLoss":
        """Softmax cross-entropy on a logit subset: a 0/1 mask, or indices with ``n_outputs``."""
        if n_outputs is not None:
            n_outputs = _check_count("n_outputs", n_outputs)
            raw = np.asarray(subset)
            if raw.dtype == np.bool_ or not (np.issubdtype(raw.dtype, np.number) or raw.size == 0):
                raise ValueError(f"subset = {subset!r} with n_outputs: give the logits' indices as integers (a 0/1 "
                                 "or boolean mask goes without n_outputs).")
            if raw.size and not (np.all(np.isfinite(raw)) and np.all(raw == np.round(raw))):
                raise ValueError(f"subset indices {raw.ravel().tolist()} are not all integers: give the logits' "
                                 "indices, e.g. [10, 11, 12] (a float index would be truncated to another logit).")
            idx = [int(i) for i in raw.astype(np.int64).ravel()]
            if any(i < 0 or i >= n_outputs for i in idx):
                raise ValueError(f"subset indices {idx} out of range for {n_outputs} logits.")
            mask = np.zeros(n_outputs)
            mask[idx] = 1.0
        else:
            mask = np.asarray(subset, dtype=np.float64)
        return cls("ce", tuple(mask.ravel()), name, model)

    @property
    def n_outputs(self) -> int:
        """Number of logits the setting is defined on."""
        return len(self.weights)

    @property
    def label(self) -> str:
        """``name`` if given, else a description."""
        return self.name or f"{self.kind}[{','.join(f'{w:g}' for w in self.weights)}]"

    def weight_array(self, dtype=None) -> jax.Array:
        """The weights (or the 0/1 subset mask) as an array."""
        return jnp.asarray(self.weights, dtype=dtype)


def _mask(net: Config | Model, which: str) -> np.ndarray:
    """0/1 weights over the ``n_classes + m`` logits of ``net`` (a Model or a Config): ``aux`` or ``all``."""
    if not isinstance(net, (Config, Model)):
        raise ValueError(f"{net!r} is neither a Model nor a Config: build loss settings for a model, "
                         "e.g. mse_all(mlp()).")
    if which == "aux":
        return np.concatenate([np.zeros(net.n_classes), np.ones(net.aux_logits)])
    return np.ones(net.n_classes + net.aux_logits)


def _model_of(net: Config | Model) -> Optional[Model]:
    return net if isinstance(net, Model) else None


def mse_all(net: Config | Model) -> StudentLoss:
    """Squared error ``Σ_i (z_i − y_i)²`` on all ``n_classes + m`` logits of ``net`` (a Model or a Config).

    Weight 1 on each of the 3 + 2 logits of a small MLP; ``L_S`` of ``z = (1, 2, 0, 0, 0)``, ``y = 0`` is
    ``1² + 2²``:

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import mse_all, student_loss_value
    >>> loss = mse_all(mlp((8,), n_classes=3, aux_logits=2, input_dim=4))
    >>> loss.weights, float(student_loss_value(loss, jnp.array([1.0, 2.0, 0.0, 0.0, 0.0]), jnp.zeros(5)))
    ((1.0, 1.0, 1.0, 1.0, 1.0), 5.0)
    """
    return StudentLoss.mse(_mask(net, "all"), "mse_all", _model_of(net))


def mse_aux(net: Config | Model) -> StudentLoss:
    """Squared error on the m aux logits only (weight 0 on the class logits; Jiang et al.).

    With 3 classes and 2 aux logits the class logits' errors (here 5) count for nothing: ``1² + 2²``:

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import mse_aux, student_loss_value
    >>> loss = mse_aux(mlp((8,), n_classes=3, aux_logits=2, input_dim=4))
    >>> loss.weights, float(student_loss_value(loss, jnp.array([5.0, 5.0, 5.0, 1.0, 2.0]), jnp.zeros(5)))
    ((0.0, 0.0, 0.0, 1.0, 1.0), 5.0)
    """
    return StudentLoss.mse(_mask(net, "aux"), "mse_aux", _model_of(net))


def ce_all(net: Config | Model) -> StudentLoss:
    """Softmax cross-entropy on all logits (the paper's all-logits student).

    With teacher logits ``y = 0`` (``σ(y)`` uniform) ``L_S = −mean_i log σ(z)_i``, checked in NumPy:

    >>> import numpy as np
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import ce_all, student_loss_value
    >>> loss, z = ce_all(mlp((8,), n_classes=3, aux_logits=2, input_dim=4)), np.float32([0.5, -1.0, 2.0, 0.0, 1.0])
    >>> log_softmax = z - np.log(np.exp(z).sum())
    >>> bool(np.isclose(student_loss_value(loss, z, np.zeros(5, np.float32)), -log_softmax.mean()))
    True
    """
    return StudentLoss.ce(_mask(net, "all"), name="ce_all", model=_model_of(net))


def ce_aux(net: Config | Model) -> StudentLoss:
    """Softmax cross-entropy on the m aux logits only (the paper's aux-only student).

    The softmax is over the aux logits alone (the last 2 of 3 + 2 here; the class logits do not enter), checked
    in NumPy with teacher logits ``y = 0``:

    >>> import numpy as np
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import ce_aux, student_loss_value
    >>> loss, z = ce_aux(mlp((8,), n_classes=3, aux_logits=2, input_dim=4)), np.float32([9.0, -9.0, 9.0, 0.5, 2.0])
    >>> log_softmax_aux = z[3:] - np.log(np.exp(z[3:]).sum())
    >>> bool(np.isclose(student_loss_value(loss, z, np.zeros(5, np.float32)), -log_softmax_aux.mean()))
    True
    """
    return StudentLoss.ce(_mask(net, "aux"), name="ce_aux", model=_model_of(net))


_STANDARD = {"mse_all": mse_all, "mse_aux": mse_aux, "ce_all": ce_all, "ce_aux": ce_aux}


def standard_losses(net: Config | Model, names: Sequence[str] = STANDARD_LOSSES) -> tuple[StudentLoss, ...]:
    """The standard loss settings named ``names`` (default all four) for ``net`` (a Model or a Config).

    >>> from subliminal_mlp.core.models import mlp
    >>> [loss.label for loss in standard_losses(mlp((8,), aux_logits=2), ["mse_aux", "ce_aux"])]
    ['mse_aux', 'ce_aux']
    """
    out = []
    for n in names:
        if n not in _STANDARD:
            raise ValueError(f"unknown loss setting {n!r}: choose from {STANDARD_LOSSES}.")
        out.append(_STANDARD[n](net))
    return tuple(out)


# ----------------------------------------------------------------------------- closed forms


def student_loss_value(loss: StudentLoss, z: jax.Array, y: jax.Array) -> jax.Array:
    """``L_S(z, y)`` per example (shape ``z.shape[:-1]``): student logits ``z``, teacher logits ``y``.

    Squared error: ``Σ_i w_i (z_i − y_i)²``. Cross-entropy on S: ``−Σ_{i∈S} σ(y_S)_i log σ(z_S)_i``; on all
    logits, a batch of 3 checked against :func:`jax.nn.softmax` and :func:`jax.nn.log_softmax`:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from subliminal_mlp.theory import StudentLoss, student_loss_value
    >>> z, y = jnp.asarray(np.random.default_rng(0).normal(size=(2, 3, 5)), jnp.float32)  # 3 examples, 5 logits
    >>> value = student_loss_value(StudentLoss.ce([1.0] * 5), z, y)
    >>> value.shape, bool(jnp.allclose(value, -jnp.sum(jax.nn.softmax(y) * jax.nn.log_softmax(z), axis=-1)))
    ((3,), True)
    """
    w = loss.weight_array(z.dtype)
    if loss.kind == "mse":
        return jnp.sum(w * jnp.square(z - y), axis=-1)
    on = w > 0
    p = jnp.where(on, jnp.exp(masked_log_softmax(y, w)), 0.0)
    return -jnp.sum(jnp.where(on, p * masked_log_softmax(z, w), 0.0), axis=-1)


def output_gradient(loss: StudentLoss, z: jax.Array, y: jax.Array) -> jax.Array:
    """``∂L_S/∂z`` per example, in closed form.

    Squared error: ``2 w ⊙ (z − y)``. Cross-entropy on S: ``σ(z_S) − σ(y_S)`` on S, 0 off S. Both
    vanish at ``z = y``: the reason the student's update is ``O(ε)`` with a shared initialisation.

    The closed form is :func:`jax.grad` of :func:`student_loss_value` (here cross-entropy on logits 3 and 4 of
    5), and is exactly 0 at ``z = y``:

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from subliminal_mlp.theory import StudentLoss, output_gradient, student_loss_value
    >>> loss = StudentLoss.ce([3, 4], n_outputs=5)
    >>> z, y = jnp.asarray(np.random.default_rng(0).normal(size=(2, 5)), jnp.float32)
    >>> g = jax.jit(jax.grad(lambda z: student_loss_value(loss, z, y)))(z)
    >>> bool(jnp.allclose(output_gradient(loss, z, y), g, atol=1e-6)), output_gradient(loss, y, y).tolist()
    (True, [0.0, 0.0, 0.0, 0.0, 0.0])
    """
    w = loss.weight_array(z.dtype)
    if loss.kind == "mse":
        return 2.0 * w * (z - y)
    on = w > 0
    q = jnp.exp(masked_log_softmax(z, w))
    p = jnp.exp(masked_log_softmax(y, w))
    return jnp.where(on, q - p, 0.0)


def alignment_matrix(loss: StudentLoss, y: jax.Array) -> jax.Array:
    """``M(x) = −∂²L_S/∂y∂z`` at ``z = y`` in closed form, shape ``y.shape + (n,)`` (protocol.md §2).

    Squared error: ``2·diag(w)``. Cross-entropy on S: ``diag(p) − ppᵀ`` on S×S (0 elsewhere),
    ``p = σ(y_S)``. Positive semi-definite in both cases.

    >>> alignment_matrix(StudentLoss.ce([1.0, 1.0]), jnp.zeros(2)).tolist()
    [[0.25, -0.25], [-0.25, 0.25]]
    """
    w = loss.weight_array(y.dtype)
    n = w.shape[0]
    if loss.kind == "mse":
        return jnp.broadcast_to(2.0 * jnp.diag(w), y.shape[:-1] + (n, n))
    on = w > 0
    p = jnp.where(on, jnp.exp(masked_log_softmax(y, w)), 0.0)
    return p[..., :, None] * jnp.eye(n, dtype=y.dtype) - p[..., :, None] * p[..., None, :]


def quadratic_form(loss: StudentLoss, y: jax.Array, v: jax.Array) -> jax.Array:
    """``vᵀ M(x) v`` per example without forming ``M`` (``≥ 0``; see :func:`alignment_matrix`).

    Squared error: ``2 Σ w_i v_i²``. Cross-entropy on S: ``Σ_S p_i v_i² − (Σ_S p_i v_i)²``, the
    variance of ``v`` under the categorical ``p``.

    It is ``vᵀ M v`` with ``M`` from :func:`alignment_matrix`; for two logits with ``p = σ(y) = (1/4, 3/4)``,
    ``p₁p₂(v₁ − v₂)² = (3/16)·4``:

    >>> import math, jax.numpy as jnp
    >>> from subliminal_mlp.theory import StudentLoss, alignment_matrix, quadratic_form
    >>> loss, y, v = StudentLoss.ce([1.0, 1.0]), jnp.array([0.0, math.log(3.0)]), jnp.array([1.0, 3.0])
    >>> round(float(quadratic_form(loss, y, v)), 5), round(float(v @ alignment_matrix(loss, y) @ v), 5)
    (0.75, 0.75)
    """
    w = loss.weight_array(y.dtype)
    if loss.kind == "mse":
        return 2.0 * jnp.sum(w * jnp.square(v), axis=-1)
    on = w > 0
    p = jnp.where(on, jnp.exp(masked_log_softmax(y, w)), 0.0)
    mean = jnp.sum(p * v, axis=-1, keepdims=True)
    return jnp.sum(p * jnp.square(v - mean), axis=-1)  # = Σ p v² − (Σ p v)², without cancellation


# ----------------------------------------------------------------------------- teacher losses


@dataclass(frozen=True)
class TeacherLoss:
    """A teacher loss ``L_T(params, *args) -> scalar`` *bound to the network it differentiates*.

    Hashable (a static ``jit`` argument) and callable like a plain loss. ``kind``:

    * ``"class_ce"``: ``L_T(θ; X, labels) = −mean_i log softmax(f_θ(X_i)[:n_classes])[label_i]``,
      the paper's teacher loss (mean class cross-entropy, aux logits not in the loss). ``f`` is
      ``model.apply``; ``model = None`` means the paper's ReLU MLP read off the parameters
      (:func:`mnist_teacher_loss`). Images are reshaped to ``(batch, *model.input_shape)``.
    * ``"custom"``: ``L_T(θ, *args) = fn(model, θ, *args)`` (see :meth:`custom`).

    A kernel given ``model=`` (or ``apply_fn=``) and a teacher loss bound to a different network
    raises :class:`~subliminal_mlp.core.models.ModelError` naming both, so the teacher's step ``ΔθT``
    is never the gradient of another network. Build with :func:`class_cross_entropy_loss`.

    A class cross-entropy bound to a small MLP (``n_classes`` taken from the model), checked in NumPy on the
    model's first ``n_classes`` logits:

    >>> import jax, numpy as np
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import TeacherLoss
    >>> net = mlp((4,), input_dim=3)  # 10 classes + 3 aux logits
    >>> L_T, p = TeacherLoss("class_ce", model=net), net.init(jax.random.PRNGKey(0))
    >>> X, labels = np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32), np.array([0, 1, 2, 3, 9])
    >>> logits = np.asarray(net.apply(p, X))[:, :10]  # the aux logits are not in the loss
    >>> log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    >>> L_T.n_classes, bool(np.isclose(L_T(p, X, labels), -log_p[np.arange(5), labels].mean()))
    (10, True)
    """

    kind: str
    model: Optional[Model] = None
    n_classes: int = 10
    fn: Optional[Callable] = None
    name: str = ""

    def __post_init__(self) -> None:
        if self.kind not in ("class_ce", "custom"):
            raise ValueError(f"TeacherLoss kind = {self.kind!r}: choose 'class_ce' or 'custom'.")
        if self.model is not None and not isinstance(self.model, Model):
            raise ModelError(f"TeacherLoss model = {self.model!r} is not a subliminal_mlp.core.models.Model.")
        if self.kind == "class_ce" and self.model is not None:
            object.__setattr__(self, "n_classes", self.model.n_classes)
        if self.kind == "custom" and (self.model is None or not callable(self.fn)):
            raise ValueError("a custom TeacherLoss needs a model and fn(model, params, *args) -> scalar.")

    @classmethod
    def custom(cls, fn: Callable, model: Model, name: str = "") -> "TeacherLoss":
        """``L_T(θ, *args) = fn(model, θ, *args)``: any differentiable loss of ``model``'s outputs.

        >>> from subliminal_mlp.core.models import mlp
        >>> net = mlp((4,), input_dim=3)
        >>> L_T = TeacherLoss.custom(lambda m, p, x: jnp.mean(m.apply(p, x) ** 2), net, "mean_square")
        >>> float(L_T(net.init(jax.random.PRNGKey(0)), jnp.zeros((2, 3))))
        0.0
        """
        return cls("custom", model=model, n_classes=model.n_classes, fn=fn, name=name or _fn_name(fn))

    @property
    def label(self) -> str:
        """``name`` if given, else the kind."""
        return self.name or self.kind

    @property
    def network_label(self) -> str:
        """The network the loss differentiates, as errors name it."""
        return DEFAULT_NETWORK if self.model is None else _model_label(self.model)

    def __call__(self, params: Params, *args) -> jax.Array:
        """``L_T(params, *args)`` (see the class docstring for the formula of each kind)."""
        if self.kind == "custom":
            return self.fn(self.model, params, *args)
        if len(args) != 2:
            raise TypeError(f"the class cross-entropy L_T takes (params, images, labels); got {len(args)} "
                            "argument(s) after params.")
        images, labels = args
        if self.model is None:
            return class_cross_entropy(model_apply(params, images), labels, self.n_classes)
        images = jnp.reshape(images, (jnp.shape(images)[0], *self.model.input_shape))
        return class_cross_entropy(self.model.apply(params, images), labels, self.n_classes)

    def fits(self, net: _Net) -> bool:
        """Whether the network ``net`` of a kernel is the one this loss differentiates."""
        m = self.model
        if m is not None and net.model is not None and net.model == m:
            return True
        if m is not None and net.model is None and net.apply == m.apply:
            return True
        # both are the paper's ReLU MLP (the parameters' shapes then decide the widths)
        reference = _is_reference_apply(net.apply) and (m is None or _is_reference_apply(m.apply))
        classes = {c for c in (self.n_classes, None if net.model is None else net.model.n_classes) if c is not None}
        return reference and len(classes) == 1 and (m is None or net.model is None or m == net.model)


def class_cross_entropy_loss(model: Model) -> TeacherLoss:
    """The paper's teacher loss for ``model``: ``L_T(θ; X, labels)`` = mean class cross-entropy of ``f_θ(X)``.

    ``L_T = −(1/B) Σ_i log softmax(f_θ(X_i)[:n_classes])[label_i]`` with ``f = model.apply``; its
    gradient ``−ΔθT`` goes through ``model``'s own network (protocol.md §2, the teacher's step).

    >>> from subliminal_mlp.core.models import mlp
    >>> net = mlp((8,), activation="tanh")
    >>> L_T = class_cross_entropy_loss(net)
    >>> round(float(L_T(net.init(jax.random.PRNGKey(0)), jnp.zeros((4, 784)), jnp.arange(4))), 4)  # log 10
    2.3026
    """
    if not isinstance(model, Model):
        raise ModelError(f"class_cross_entropy_loss needs a subliminal_mlp.core.models.Model; got {model!r}. For the "
                         "paper's MLP read off the parameters use mnist_teacher_loss(n_classes).")
    return TeacherLoss("class_ce", model=model, n_classes=model.n_classes, name="class_ce")


def mnist_teacher_loss(n_classes: int = 10) -> TeacherLoss:
    """``L_T(params, images, labels)``: mean class cross-entropy of the paper's ReLU MLP.

    The network is :func:`subliminal_mlp.core.model.apply` (the ReLU MLP, widths read off the
    parameters): the kernels accept it only with that network (the default, or an ``mlp`` with
    ReLU and ``n_classes`` classes) and raise ``ModelError`` with any other. For another model use
    :func:`class_cross_entropy_loss` (``model``).

    On a small ReLU MLP's parameters (synthetic images and labels), checked against the mean class
    cross-entropy of the model's own ``apply``:

    >>> import jax, numpy as np
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import mnist_teacher_loss
    >>> net = mlp((4,), input_dim=3)  # ReLU, 10 classes + 3 aux logits
    >>> p, X = net.init(jax.random.PRNGKey(0)), np.random.default_rng(0).uniform(-1, 1, (5, 3)).astype(np.float32)
    >>> logits, labels = np.asarray(net.apply(p, X))[:, :10], np.array([0, 1, 2, 3, 9])
    >>> log_p = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    >>> bool(np.isclose(mnist_teacher_loss()(p, X, labels), -log_p[np.arange(5), labels].mean()))
    True
    """
    return TeacherLoss("class_ce", model=None, n_classes=int(n_classes), name="class_ce")


def l2_teacher_loss(params) -> jax.Array:
    """``L_T(params) = ½‖θ‖²``: a regulariser as the teacher's loss (``ΔθT = −θT0``), for any model.

    All leaves together, here ``½(3² + 4² + 1²)`` (its gradient ``θ``: :func:`teacher_update` gives ``−θT0``):

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp.theory import l2_teacher_loss
    >>> float(l2_teacher_loss({"w": jnp.array([3.0, 4.0]), "b": jnp.array([[1.0]])}))
    13.0
    """
    return 0.5 * _leaves_dot(params, params)


def _check_teacher_loss(loss_T, theta: Params, args: tuple, net: Optional[_Net]) -> None:
    """Raise before any compute when ``loss_T`` is bound to a network other than ``net``, or cannot be applied.

    ``net = None``: no network to match (``teacher_update`` without ``model=``/``apply_fn=``).
    """
    if not callable(loss_T):
        raise ValueError(f"loss_T = {loss_T!r} is not callable: give L_T(params, *args) -> scalar, e.g. "
                         "class_cross_entropy_loss(model).")
    bound = isinstance(loss_T, TeacherLoss)
    if bound and net is not None and not loss_T.fits(net):
        raise ModelError(f"teacher loss {loss_T.label!r} is built for {loss_T.network_label}, but the network here "
                         f"is {net.label}: its gradient would be another network's. Build the teacher loss for this "
                         "model (class_cross_entropy_loss(model)) and pass the same model= to every kernel.")
    label = repr(loss_T.label) if bound else _fn_name(loss_T)
    where = loss_T.network_label if bound else (net.label if net is not None else "the given parameters")
    if bound and loss_T.kind == "class_ce":  # its arguments said plainly, not as a failure to apply it
        if len(args) != 2:
            raise ValueError(f"teacher loss {label} takes loss_T_args=(images, labels): the digits of the teacher's "
                             f"step and their class indices; got {len(args)} argument(s).")
        images, labels = np.shape(args[0]), np.shape(args[1])
        if len(labels) != 1 or not images or labels[0] != images[0]:
            raise ValueError(f"teacher loss {label}: labels must be one class index per image, shape "
                             f"({images[0] if images else 'n'},); got shape {labels} for images of shape {images}"
                             + (" (one-hot labels? pass their argmax)" if len(labels) == 2 else "") + ".")
    try:
        out = jax.eval_shape(loss_T, theta, *args)
    except Exception as e:  # noqa: BLE001 - any failure of a user's loss is reported with its cause
        raise ModelError(f"teacher loss {label} cannot be applied to the parameters of {where} "
                         f"(with {len(args)} loss_T_args): {type(e).__name__}: {e}") from e
    if tuple(getattr(out, "shape", (None,))) != ():
        raise ModelError(f"teacher loss {label} must return a scalar; on the parameters of {where} it returns "
                         f"{getattr(out, 'shape', out)}.")
    if bound and loss_T.kind == "class_ce" and isinstance(args[1], (np.ndarray, jax.Array)) \
            and _is_concrete(args[1]):
        labels = np.asarray(args[1])  # out of range, take_along_axis drops an example from ΔθT without a word
        if labels.size and (not np.issubdtype(labels.dtype, np.integer) or labels.min() < 0
                            or labels.max() >= loss_T.n_classes):
            raise ValueError(f"teacher loss {label}: labels must be integers in 0..{loss_T.n_classes - 1}; got "
                             f"{labels.dtype} labels from {labels.min()} to {labels.max()}.")


# ----------------------------------------------------------------------------- kernels

def _jit(*static):
    return functools.partial(jax.jit, static_argnames=static)


@_jit("loss_T")
def _teacher_update(theta_T0, loss_T_args, *, loss_T):
    g = jax.grad(loss_T)(theta_T0, *loss_T_args)
    return jax.tree.map(jnp.negative, g)


@_float32_outside_scope
def teacher_update(loss_T: LossT, theta_T0: Params, *loss_T_args, model: Optional[Model] = None,
                   apply_fn: Optional[Callable] = None) -> Params:
    """``ΔθT = −∇L_T(θT0)`` for any differentiable ``L_T(params, *loss_T_args) -> scalar`` (protocol.md §2).

    ``L_T`` can be the class cross-entropy of a model (:func:`class_cross_entropy_loss`), a
    regulariser (:func:`l2_teacher_loss`), a loss on other inputs, ... Pass data as
    ``loss_T_args`` rather than closing over it, so it is not baked into the compiled program.
    With ``model=`` (or ``apply_fn=``) a :class:`TeacherLoss` bound to another network raises;
    any ``L_T`` that cannot be applied to ``θT0`` raises a ``ModelError`` before any compute.

    >>> from subliminal_mlp.core.models import mlp
    >>> net = mlp((4,), input_dim=3)
    >>> with float64():
    ...     p = to_float64(net.init(jax.random.PRNGKey(0)))
    ...     bool(tree_dot(teacher_update(l2_teacher_loss, p, model=net), p) == -tree_dot(p, p))  # ΔθT = −θT0
    True

    Like the other kernels it warns (:class:`PrecisionWarning`) when ``ΔθT`` will be float32: float32
    ``θT0`` inside :func:`float64`, or any call outside it.
    """
    net = _network(model, apply_fn) if (model is not None or apply_fn is not None) else None
    # ΔθT has θT0's precision (the gradient of float32 parameters is float32, whatever the data's)
    _warn_float32(theta_T0=theta_T0)
    _check_teacher_loss(loss_T, theta_T0, tuple(loss_T_args), net)
    return _teacher_update(theta_T0, tuple(loss_T_args), loss_T=loss_T)


@_jit("loss", "apply_fn")
def _student_update(theta_S0, theta_T0, delta_T, x, eps, *, loss, apply_fn):
    y = apply_fn(_axpy(eps, delta_T, theta_T0), x)
    z0, vjp = jax.vjp(lambda p: apply_fn(p, x), theta_S0)
    g = output_gradient(loss, z0, y) / x.shape[0]
    return jax.tree.map(jnp.negative, vjp(g)[0])


@_float32_outside_scope
def student_update(loss: StudentLoss, theta_S0: Params, theta_T0: Params, delta_T: Params, x: jax.Array,
                   eps, *, apply_fn: Optional[Callable] = None, model: Optional[Model] = None) -> Params:
    """``ΔθS(ε) = −∇_θ E_x L_S(f_θS0(x), f_{θT0+εΔθT}(x))`` (mean over the rows of ``x``; protocol.md §2).

    Computed as the VJP of the student's outputs applied to the closed-form ``∂L_S/∂z``
    (:func:`output_gradient`). ``eps > 0`` (a scalar; ``vmap`` over it for a grid). ``f`` is
    ``model.apply`` (or ``apply_fn``; default the paper's ReLU MLP).

    A student ``θS0 ≠ θT0`` imitating the teacher after its step of size ``ε = 0.5``: the update is minus
    :func:`jax.grad` of the mean squared error on the teacher's outputs:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import (float64, l2_teacher_loss, mse_all, student_loss_value, student_update,
    ...                                    teacher_update, to_float64, tree_norm)
    >>> net = mlp((8,), n_classes=3, aux_logits=2, input_dim=4, activation="tanh")
    >>> with float64():
    ...     t0, s0 = (to_float64(net.init(jax.random.PRNGKey(k))) for k in (0, 1))
    ...     x = jax.random.uniform(jax.random.PRNGKey(1), (16, 4), jnp.float64, -1.0, 1.0)
    ...     d_t = teacher_update(l2_teacher_loss, t0)
    ...     d_s = student_update(mse_all(net), s0, t0, d_t, x, 0.5, model=net)
    ...     y = net.apply(jax.tree.map(lambda p, d: p + 0.5 * d, t0, d_t), x)  # the teacher's outputs at ε
    ...     g = jax.jit(jax.grad(lambda p: jnp.mean(student_loss_value(mse_all(net), net.apply(p, x), y))))(s0)
    ...     print(bool(tree_norm(jax.tree.map(jnp.add, d_s, g)) < 1e-12 * tree_norm(g)))  # ΔθS = −g
    True
    """
    net = _network(model, apply_fn)
    _check_positive("eps", eps, scalar=True)
    _check_trees("theta_T0", theta_T0, theta_S0=theta_S0, delta_T=delta_T)
    _check_inputs(net, theta_T0, x, (loss,))
    return _student_update(theta_S0, theta_T0, delta_T, x, eps, loss=loss, apply_fn=net.apply)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _output_tangent(theta_T0, delta_T, x, *, apply_fn):
    return jax.jvp(lambda p: apply_fn(p, x), (theta_T0,), (delta_T,))


@_float32_outside_scope
def output_tangent(theta_T0: Params, delta_T: Params, x: jax.Array, *, apply_fn: Optional[Callable] = None,
                   model: Optional[Model] = None) -> tuple[jax.Array, jax.Array]:
    """``(y0, v)``: the teacher's initial outputs ``f_θT0(x)`` and ``v = J_x ΔθT`` by ``jax.jvp`` (§2).

    ``v`` is the derivative of the outputs along the teacher's step, checked here by a central finite
    difference in float64:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import float64, l2_teacher_loss, output_tangent, teacher_update, to_float64
    >>> net = mlp((8,), n_classes=3, aux_logits=2, input_dim=4, activation="tanh")
    >>> with float64():
    ...     t0 = to_float64(net.init(jax.random.PRNGKey(0)))
    ...     x = jax.random.uniform(jax.random.PRNGKey(1), (16, 4), jnp.float64, -1.0, 1.0)
    ...     d_t = teacher_update(l2_teacher_loss, t0)
    ...     y0, v = output_tangent(t0, d_t, x, model=net)
    ...     f = jax.jit(lambda h: net.apply(jax.tree.map(lambda p, d: p + h * d, t0, d_t), x))  # f_{θT0 + hΔθT}(x)
    ...     fd = (f(1e-6) - f(-1e-6)) / 2e-6
    ...     print(v.shape, bool(jnp.allclose(v, fd, atol=1e-7)), bool(jnp.allclose(y0, f(0.0))))
    (16, 5) True True
    """
    net = _network(model, apply_fn)
    _check_trees("theta_T0", theta_T0, delta_T=delta_T)
    _check_inputs(net, theta_T0, x)
    return _output_tangent(theta_T0, delta_T, x, apply_fn=net.apply)


@_jit("loss", "apply_fn")
def _first_order_coefficient(theta_T0, delta_T, x, *, loss, apply_fn):
    y0, v = jax.jvp(lambda p: apply_fn(p, x), (theta_T0,), (delta_T,))
    return jnp.mean(quadratic_form(loss, y0, v))


@_float32_outside_scope
def first_order_coefficient(loss: StudentLoss, theta_T0: Params, delta_T: Params, x: jax.Array, *,
                            apply_fn: Optional[Callable] = None, model: Optional[Model] = None) -> jax.Array:
    """``A = E_x[vᵀ M(x) v]``, ``v = J_x ΔθT`` (jvp), ``M`` in closed form: ``ΔθS·ΔθT = εA + O(ε²)`` (§2).

    Exact (no finite differences); ``A ≥ 0`` (Lemma 1). Valid for the shared initialisation.
    ``f`` is ``model.apply`` (or ``apply_fn``; default the paper's ReLU MLP).

    >>> from subliminal_mlp.core.models import mlp
    >>> net = mlp((8,), n_classes=3, aux_logits=2, input_dim=4, activation="tanh")
    >>> with float64():
    ...     t0 = to_float64(net.init(jax.random.PRNGKey(0)))
    ...     x = jax.random.uniform(jax.random.PRNGKey(1), (16, 4), jnp.float64, -1.0, 1.0)
    ...     d_t = teacher_update(l2_teacher_loss, t0)
    ...     A = float(first_order_coefficient(ce_aux(net), t0, d_t, x, model=net))
    >>> A > 0
    True
    """
    net = _network(model, apply_fn)
    _check_trees("theta_T0", theta_T0, delta_T=delta_T)
    _check_inputs(net, theta_T0, x, (loss,))
    return _first_order_coefficient(theta_T0, delta_T, x, loss=loss, apply_fn=net.apply)


@_jit("loss", "loss_T", "apply_fn")
def _alignment(theta_S0, theta_T0, delta_T, x, eps, alpha, loss_T_args, *, loss, loss_T, apply_fn):
    d_s = _student_update(theta_S0, theta_T0, delta_T, x, eps, loss=loss, apply_fn=apply_fn)
    dot = tree_dot(d_s, delta_T)
    lt0 = loss_T(theta_S0, *loss_T_args)
    lt1 = loss_T(_axpy(alpha, d_s, theta_S0), *loss_T_args)
    return {"dot": dot, "cos": tree_cosine(d_s, delta_T), "delta_LT": lt1 - lt0}


@_float32_outside_scope
def alignment(loss: StudentLoss, loss_T: LossT, theta_S0: Params, theta_T0: Params, delta_T: Params,
              x: jax.Array, eps, alpha=1.0, loss_T_args: tuple = (), *, apply_fn: Optional[Callable] = None,
              model: Optional[Model] = None) -> dict[str, jax.Array]:
    """At one ``ε``: ``{"dot": ΔθS·ΔθT, "cos": cos(ΔθS, ΔθT), "delta_LT": L_T(θS0+αΔθS) − L_T(θS0)}`` (§2).

    Vmappable over ``eps`` (and ``alpha``). For a grid prefer :func:`sweep`, which shares the
    work that does not depend on ``ε`` or on the loss. ``loss_T`` must be built for the network
    (``model``; a :class:`TeacherLoss` bound to another one raises ``ModelError``).

    Shared initialisation at a small ``ε``: ``ΔθS·ΔθT/ε`` is :func:`first_order_coefficient`'s ``A`` up to
    ``O(ε)`` (Lemma 1), and the teacher's loss ``L_T = ½‖θ‖²`` decreases (Theorem 1):

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import (alignment, ce_aux, first_order_coefficient, float64, l2_teacher_loss,
    ...                                    teacher_update, to_float64)
    >>> net = mlp((8,), n_classes=3, aux_logits=2, input_dim=4, activation="tanh")
    >>> with float64():
    ...     t0 = to_float64(net.init(jax.random.PRNGKey(0)))
    ...     x = jax.random.uniform(jax.random.PRNGKey(1), (16, 4), jnp.float64, -1.0, 1.0)
    ...     d_t = teacher_update(l2_teacher_loss, t0)
    ...     out = alignment(ce_aux(net), l2_teacher_loss, t0, t0, d_t, x, 1e-5, model=net)
    ...     A = first_order_coefficient(ce_aux(net), t0, d_t, x, model=net)
    ...     print(bool(abs(out["dot"] / 1e-5 - A) < 1e-3 * A), bool(out["delta_LT"] < 0), bool(out["cos"] > 0))
    True True True
    """
    net = _network(model, apply_fn)
    _check_positive("eps", eps, scalar=True)
    _check_positive("alpha", alpha, scalar=True)
    _check_trees("theta_T0", theta_T0, theta_S0=theta_S0, delta_T=delta_T)
    _check_inputs(net, theta_T0, x, (loss,))
    _check_teacher_loss(loss_T, theta_S0, tuple(loss_T_args), net)
    return _alignment(theta_S0, theta_T0, delta_T, x, eps, alpha, tuple(loss_T_args), loss=loss,
                      loss_T=loss_T, apply_fn=net.apply)


# ----------------------------------------------------------------------------- the sweep


class SweepResult(NamedTuple):
    """Output of :func:`sweep`: axes ``I`` = student initialisations, ``K`` = loss settings, ``E`` = ε.

    ``A`` (K,): first-order coefficient ``E_x vᵀMv`` (shared initialisation).
    ``dot`` (I,K,E): ``ΔθS(ε)·ΔθT``. ``cos`` (I,K,E): their cosine.
    ``delta_LT`` (I,K,E): ``L_T(θS0 + αΔθS(ε)) − L_T(θS0)``. ``LT0`` (I,): ``L_T(θS0)``.
    ``norm_S`` (I,K,E): ``‖ΔθS(ε)‖``. ``norm_T`` (): ``‖ΔθT‖``.
    ``dot0`` (I,K), ``norm_S0`` (I,K): ``ΔθS(0)·ΔθT`` and ``‖ΔθS(0)‖`` (the untrained teacher's
    update; exactly 0 for a shared initialisation). ``change`` (I,K,E): ``‖ΔθS(ε) − ΔθS(0)‖``,
    which is ``O(ε)``: the teacher's step only enters the student's update at first order.

    From :func:`sweep` with ``L_T = ½‖θ‖²`` (so ``ΔθT = −θT0``): ``norm_T = ‖θT0‖``, ``LT0 = ½‖θS0‖²``
    per student, and ``dot0 = 0`` for the shared initialisation (student 0):

    >>> import jax, jax.numpy as jnp, numpy as np
    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import float64, l2_teacher_loss, standard_losses, sweep, to_float64, tree_norm
    >>> net = mlp((8,), n_classes=3, aux_logits=2, input_dim=4, activation="tanh")
    >>> with float64():
    ...     t0, other = (to_float64(net.init(jax.random.PRNGKey(s))) for s in (0, 1))
    ...     x = jax.random.uniform(jax.random.PRNGKey(2), (16, 4), jnp.float64, -1.0, 1.0)
    ...     res = sweep(standard_losses(net), l2_teacher_loss, t0, [t0, other], x, [1e-6, 1e-3], model=net)
    ...     norms = [float(tree_norm(p)) for p in (t0, other)]
    >>> res = jax.tree.map(np.asarray, res)
    >>> bool(np.isclose(res.norm_T, norms[0])), bool(np.allclose(res.LT0, np.square(norms) / 2))
    (True, True)
    >>> res.dot0.shape, bool(np.all(np.abs(res.dot0[0]) < 1e-12))  # (students, losses)
    ((2, 4), True)
    """

    A: jax.Array
    dot: jax.Array
    cos: jax.Array
    delta_LT: jax.Array
    LT0: jax.Array
    norm_S: jax.Array
    norm_T: jax.Array
    dot0: jax.Array
    norm_S0: jax.Array
    change: jax.Array


@functools.partial(jax.jit, static_argnames=("losses", "loss_T", "apply_fn", "eps_batch"))
def _sweep(theta_T0, students, delta_T, x, eps, alpha, loss_T_args, *, losses, loss_T, apply_fn, eps_batch):
    n = x.shape[0]
    f = lambda p: apply_fn(p, x)  # noqa: E731
    y0, v = jax.jvp(f, (theta_T0,), (delta_T,))
    A = jnp.stack([jnp.mean(quadratic_form(loss, y0, v)) for loss in losses])
    norm_T = jnp.sqrt(_leaves_dot(delta_T, delta_T))

    def grads(z0, y):  # (K, N, n): ∂(mean_x L_S)/∂z for every loss setting
        return jnp.stack([output_gradient(loss, z0, y) for loss in losses]) / n

    # ε-independent, once per student: its forward pass and VJP at θS0, L_T(θS0), ΔθS(0).
    per_student = []
    for theta_S0 in students:
        z0, vjp = jax.vjp(f, theta_S0)
        back = jax.vmap(lambda g, vjp=vjp: jax.tree.map(jnp.negative, vjp(g)[0]))
        d0 = back(grads(z0, y0))
        per_student.append((z0, back, d0, loss_T(theta_S0, *loss_T_args)))
    base = jax.tree.map(lambda *a: jnp.stack(a), *students)  # (I, ...)
    n_l = len(losses)

    def one_eps(e):
        y = f(_axpy(e, delta_T, theta_T0))  # the teacher's outputs: shared by all losses and students
        d_s, rows = [], []
        for z0, back, d0, _ in per_student:
            d = back(grads(z0, y))  # (K, ...) student updates
            d_s.append(d)
            dot = jax.vmap(_leaves_dot, (0, None))(d, delta_T)
            norm = jnp.sqrt(jax.vmap(_leaves_dot)(d, d))
            diff = jax.tree.map(jnp.subtract, d, d0)
            rows.append((dot, norm, jnp.sqrt(jax.vmap(_leaves_dot)(diff, diff))))
        # L_T at θS0 + αΔθS for every (student, loss) in one vmapped call.
        stacked = jax.tree.map(lambda *a: jnp.concatenate(a), *d_s)  # (I*K, ...)
        starts = jax.tree.map(lambda b: jnp.repeat(b, n_l, axis=0), base)
        lt = jax.vmap(lambda p, d: loss_T(_axpy(alpha, d, p), *loss_T_args))(starts, stacked)
        dot, norm, change = (jnp.stack(c) for c in zip(*rows))
        return dot, norm, change, lt.reshape(len(per_student), n_l)

    dot, norm, change, lt = jax.lax.map(one_eps, eps, batch_size=eps_batch)  # leading axis E
    mv = lambda a: jnp.moveaxis(a, 0, -1)  # noqa: E731  (E, I, K) -> (I, K, E)
    dot, norm, change, lt = mv(dot), mv(norm), mv(change), mv(lt)
    lt0 = jnp.stack([s[3] for s in per_student])
    d0s = [s[2] for s in per_student]
    dot0 = jnp.stack([jax.vmap(_leaves_dot, (0, None))(d0, delta_T) for d0 in d0s])
    norm0 = jnp.stack([jnp.sqrt(jax.vmap(_leaves_dot)(d0, d0)) for d0 in d0s])
    den = norm * norm_T
    cos = jnp.where(den > 0, dot / jnp.where(den > 0, den, 1.0), 0.0)
    return SweepResult(A=A, dot=dot, cos=cos, delta_LT=lt - lt0[:, None, None], LT0=lt0, norm_S=norm,
                       norm_T=norm_T, dot0=dot0, norm_S0=norm0, change=change)


@_float32_outside_scope
def sweep(losses: Sequence[StudentLoss], loss_T: LossT, theta_T0: Params, students: Sequence[Params],
          x: jax.Array, eps, *, alpha=1.0, loss_T_args: tuple = (), delta_T: Params | None = None,
          apply_fn: Optional[Callable] = None, model: Optional[Model] = None,
          eps_batch: int | None = None) -> SweepResult:
    """The whole single-step analysis (protocol.md §2) over a grid of ``ε`` in one compiled call.

    For every student initialisation in ``students`` (e.g. ``(θT0, θ_other)``: the shared
    initialisation and the control), every loss setting in ``losses`` and every ``ε`` in ``eps``
    (1-D, all > 0), computes ``ΔθS(ε)·ΔθT``, the cosine, ``L_T(θS0 + αΔθS(ε)) − L_T(θS0)``, and
    ``A = E_x vᵀMv`` (see :class:`SweepResult`). ``ΔθT = −∇L_T(θT0)`` unless ``delta_T`` is given.
    The network is ``model.apply`` (or ``apply_fn``; default the paper's ReLU MLP) and ``loss_T``
    must be built for it (a :class:`TeacherLoss` bound to another network raises ``ModelError``).

    Work is shared as the structure allows: the teacher's jvp (for ``A``) once; each student's
    forward pass and VJP at ``θS0`` once (they do not depend on ``ε``); the teacher's outputs
    ``y(ε)`` once per ``ε`` for all losses and students. The ``ε`` axis is a ``lax.map`` over
    groups of ``eps_batch`` values advanced together (a ``vmap``), which bounds memory; by default
    ``eps_batch = max(1, min(8 // (len(losses)·len(students)), len(eps)))``, about eight student updates per step
    (larger groups were slower on CPU: the batched matmuls gain nothing and memory traffic grows).

    >>> from subliminal_mlp.core.models import mlp
    >>> net = mlp((8,), n_classes=3, aux_logits=2, input_dim=4, activation="tanh")
    >>> with float64():
    ...     t0, other = (to_float64(net.init(jax.random.PRNGKey(s))) for s in (0, 1))
    ...     x = jax.random.uniform(jax.random.PRNGKey(2), (16, 4), jnp.float64, -1.0, 1.0)
    ...     res = sweep(standard_losses(net), l2_teacher_loss, t0, [t0, other], x, [1e-6, 1e-3], model=net)
    ...     res = jax.tree.map(np.asarray, res)
    >>> bool(np.allclose(res.dot[0, :, 0] / 1e-6, res.A, rtol=1e-4)), res.dot.shape  # ΔθS·ΔθT/ε → A
    (True, (2, 4, 2))
    """
    net = _network(model, apply_fn)
    if isinstance(losses, StudentLoss):
        raise ValueError(f"losses is one StudentLoss ({losses.label}): give a list of them, e.g. [loss], or "
                         "standard_losses(model).")
    if isinstance(students, Mapping) or isinstance(students, (jax.Array, np.ndarray)):
        raise ValueError(f"students is one {type(students).__name__}: give a list of student initialisations θS0, "
                         "e.g. [theta_T0, theta_other] (the shared start and a control), each a parameter tree.")
    losses = tuple(losses)
    students = tuple(students)
    if not losses:
        raise ValueError("losses is empty: give at least one StudentLoss (e.g. standard_losses(model)).")
    if not students:
        raise ValueError("students is empty: give at least one student initialisation θS0.")
    for i, l in enumerate(losses):
        if not isinstance(l, StudentLoss):
            raise ValueError(f"losses[{i}] = {l!r} is not a StudentLoss.")
    eps = jnp.asarray(eps)
    if eps.ndim != 1:
        raise ValueError(f"eps must be a 1-D grid of step sizes; got shape {eps.shape}.")
    _check_positive("eps", eps)
    smallest = float(jnp.min(eps)) if _is_concrete(eps) else EPS_FLOOR
    if smallest < EPS_FLOOR:  # 1e-300: an exact 0, the teacher does not move
        _precision_warning(f"eps = {smallest:g} is below {EPS_FLOOR:g}, the smallest step eps_grid and the theorem "
                           f"check take: {EPS_FLOOR_REASON} (at 1e-300 the products are exactly 0).")
    _check_positive("alpha", alpha, scalar=True)
    _check_trees("theta_T0", theta_T0, **{f"students[{i}]": s for i, s in enumerate(students)})
    _check_inputs(net, theta_T0, x, losses)
    _check_teacher_loss(loss_T, theta_T0, tuple(loss_T_args), net)
    if delta_T is None:
        delta_T = _teacher_update(theta_T0, tuple(loss_T_args), loss_T=loss_T)
    else:
        _check_trees("theta_T0", theta_T0, delta_T=delta_T)
    if eps_batch is None:  # about 8 (student, loss) parameter sets per step: measured fastest on CPU
        eps_batch = max(1, min(8 // (len(losses) * len(students)), eps.shape[0]))
    eps_batch = _check_count("eps_batch", eps_batch)
    # ε and α in the parameters' precision (and x's, if wider); integer inputs become floats of it
    dtype = jnp.result_type(*jax.tree.leaves(theta_T0), x)
    if not jnp.issubdtype(dtype, jnp.floating):
        dtype = jnp.result_type(float)
    x = x if jnp.issubdtype(x.dtype, jnp.floating) else x.astype(dtype)
    return _sweep(theta_T0, students, delta_T, x, eps.astype(dtype), jnp.asarray(alpha, dtype),
                  tuple(loss_T_args), losses=losses, loss_T=loss_T, apply_fn=net.apply, eps_batch=eps_batch)


def eps_grid(eps_min: float = 1e-6, eps_max: float = 1.0, n: int = 64) -> np.ndarray:
    """``n`` log-spaced step sizes ``ε_k = eps_min·(eps_max/eps_min)^(k/(n−1))`` (float64 NumPy array).

    ``n``: an integer >= 2; ``eps_min``: at least :data:`EPS_FLOOR` (1e-10), below which float64
    cancellation in the student's targets makes the theorem's first-order check meaningless.

    >>> eps_grid(1e-4, 1e-1, 4).tolist()
    [0.0001, 0.001, 0.01, 0.1]
    """
    for name, v in (("eps_min", eps_min), ("eps_max", eps_max)):
        if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, float, np.integer, np.floating)):
            raise ValueError(f"{name} = {v!r} is not a number: give a step size ε > 0.")
    if not (eps_min > 0 and eps_max > eps_min and math.isfinite(eps_max)):
        raise ValueError(f"need 0 < eps_min < eps_max < inf; got eps_min={eps_min}, eps_max={eps_max}.")
    if eps_min < EPS_FLOOR:
        raise ValueError(f"eps_min = {eps_min} is below {EPS_FLOOR:g}: {EPS_FLOOR_REASON}; give eps_min >= "
                         f"{EPS_FLOOR:g} (1e-6 is the default).")
    n = _check_count("n (the number of ε values)", n, 2)
    return np.geomspace(eps_min, eps_max, n)
