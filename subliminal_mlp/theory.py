r"""Single-step gradient analysis: checking the paper's Lemma 1 and Theorem 1 (protocol.md §2).

The setting (Cloud et al. 2025, §6.1 and Appendix C). A network ``f_θ`` with ``n`` outputs; a
teacher and a student initialisation ``θT0``, ``θS0``. The teacher takes one gradient step on any
differentiable loss ``L_T``::

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
``L_T(θS0 + αΔθS) − L_T(θS0) = −α·ΔθT·ΔθS + O(α²ε²) = −αεA + O(ε²)``: the teacher's loss drops.
With ``θS0 ≠ θT0`` (the control), ``ΔθS(ε) = ΔθS(0) + O(ε)``: to leading order the student gets the
update of the *untrained* teacher, the teacher's step drops out at first order, and no sign is
guaranteed.

API overview
------------
Everything is a pure function of parameter pytrees (as built by :func:`subliminal_mlp.model.init_params`
for any widths, depth and m; ``apply_fn`` defaults to :func:`subliminal_mlp.model.apply`). The
kernels are ``jax.jit``-compiled and can be ``jax.vmap``-ped (over ``eps``, say):

* :class:`StudentLoss` — a student loss setting; :func:`mse_all`, :func:`mse_aux`, :func:`ce_all`,
  :func:`ce_aux`, :func:`standard_losses` build the four standard ones;
* :func:`teacher_update` — ``ΔθT = −∇L_T(θT0)``;
* :func:`student_update` — ``ΔθS(ε)``;
* :func:`output_tangent`, :func:`alignment_matrix`, :func:`quadratic_form`,
  :func:`first_order_coefficient` — ``v``, ``M(x)``, ``vᵀM(x)v`` and ``A``;
* :func:`alignment` — ``ΔθS·ΔθT``, the cosine and the change of ``L_T`` at one ``ε``;
* :func:`sweep` — the same over a whole grid of ``ε``, several loss settings and several student
  initialisations in *one* compiled call, sharing what does not depend on ``ε`` or on the loss;
* :func:`run_theorem_check`, :func:`summarize`, :func:`format_tables`, :func:`plot_theorem` —
  the check on the paper's MLP and MNIST used by ``subliminal-mlp theorem`` and
  ``experiments/theorem_single_step.py``.

Precision: the checks need float64 (``ΔθS·ΔθT/ε − A`` is ``O(ε)``, far below float32 rounding
at small ``ε``). Importing this module does not enable 64-bit mode; use the scope
:func:`float64` (``jax.enable_x64``) and :func:`to_float64`, or ``precision="float64"`` of
:func:`run_theorem_check`::

    with theory.float64():
        params = theory.to_float64(params)
        ...
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import math
import os
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from .config import Config
from .losses import class_cross_entropy, masked_log_softmax
from .model import apply as model_apply
from .model import init_params, logit_mask

__all__ = [
    "StudentLoss", "mse_all", "mse_aux", "ce_all", "ce_aux", "standard_losses", "STANDARD_LOSSES",
    "float64", "to_float64", "tree_dot", "tree_norm", "tree_cosine",
    "student_loss_value", "output_gradient", "alignment_matrix", "quadratic_form",
    "teacher_update", "student_update", "output_tangent", "first_order_coefficient", "alignment",
    "SweepResult", "sweep", "eps_grid", "mnist_teacher_loss", "l2_teacher_loss",
    "run_theorem_check", "summarize", "format_tables", "plot_theorem", "theorem_holds", "settings_caption",
    "FORMAT", "FORMAT_VERSION",
]

Params = Any
LossT = Callable[..., jax.Array]

#: The names of the four standard loss settings, in display order.
STANDARD_LOSSES = ("mse_all", "mse_aux", "ce_all", "ce_aux")
FORMAT = "subliminal-mlp/theorem"
FORMAT_VERSION = 1


# ----------------------------------------------------------------------------- precision


@contextlib.contextmanager
def float64() -> Iterator[None]:
    """A scope in which JAX computes in 64 bits (``jax.enable_x64(True)``), restored on exit.

    The library itself stays in float32 outside the scope; importing this module changes
    nothing. Arrays created inside are float64 only if their inputs are: cast parameters and data
    with :func:`to_float64`.
    """
    with jax.enable_x64(True):
        yield


def to_float64(tree: Any) -> Any:
    """Cast every floating leaf of ``tree`` to float64 (must be called inside :func:`float64`)."""
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


def tree_dot(a: Params, b: Params) -> jax.Array:
    """``a·b`` of two parameter pytrees of the same structure (via ``ravel_pytree``)."""
    return jnp.vdot(ravel_pytree(a)[0], ravel_pytree(b)[0])


def tree_norm(a: Params) -> jax.Array:
    """Euclidean norm of a parameter pytree seen as one vector."""
    return jnp.linalg.norm(ravel_pytree(a)[0])


def tree_cosine(a: Params, b: Params) -> jax.Array:
    """``a·b / (‖a‖‖b‖)`` (0 when either is the zero vector)."""
    fa, fb = ravel_pytree(a)[0], ravel_pytree(b)[0]
    den = jnp.linalg.norm(fa) * jnp.linalg.norm(fb)
    return jnp.where(den > 0, jnp.vdot(fa, fb) / jnp.where(den > 0, den, 1.0), 0.0)


def _leaves_dot(a, b):
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _axpy(alpha, d, p):
    """``p + alpha·d`` leaf by leaf."""
    return jax.tree.map(lambda pi, di: pi + alpha * di, p, d)


# ----------------------------------------------------------------------------- validation


def _is_concrete(x) -> bool:
    try:
        np.asarray(x)
    except (jax.errors.TracerArrayConversionError, jax.errors.ConcretizationTypeError):
        return False
    return True


def _check_positive(name: str, value) -> None:
    """``value > 0`` everywhere (skipped for traced values, e.g. under ``vmap``)."""
    if not _is_concrete(value):
        return
    arr = np.asarray(value)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: give at least one value > 0.")
    if not np.all(np.isfinite(arr)) or np.any(arr <= 0):
        bad = arr[~(np.isfinite(arr) & (arr > 0))].ravel()[:3]
        raise ValueError(f"{name} must be finite and > 0 (the theorem is about a small positive step); "
                         f"got {bad.tolist()}.")


def _check_trees(ref_name: str, ref: Params, **others: Params) -> None:
    """Each tree in ``others`` has the pytree structure and leaf shapes of ``ref``."""
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


def _check_inputs(apply_fn, theta: Params, x, losses: Sequence["StudentLoss"] = ()) -> int:
    """``x`` is a non-empty ``(batch, input_dim)`` array the network accepts; returns ``n_outputs``."""
    if jnp.ndim(x) != 2 or jnp.shape(x)[0] == 0:
        raise ValueError(f"x must be a non-empty 2-D batch (n_examples, input_dim); got shape {jnp.shape(x)}.")
    try:
        out = jax.eval_shape(apply_fn, theta, x)
    except Exception as e:  # noqa: BLE001 - re-raised with context
        raise ValueError(f"x of shape {jnp.shape(x)} does not fit the network: {e}") from e
    n_out = out.shape[-1]
    for loss in losses:
        if loss.n_outputs != n_out:
            raise ValueError(f"loss setting {loss.label!r} has {loss.n_outputs} logit weights but the "
                             f"network has {n_out} outputs: build it for this network (e.g. mse_all(cfg)).")
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
    :func:`ce_all`, :func:`ce_aux`.
    """

    kind: str
    weights: tuple[float, ...]
    name: str = ""

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
                                 f"got {w}.")
            if not any(v == 1.0 for v in w):
                raise ValueError("the cross-entropy logit subset is empty: select at least one logit "
                                 "(e.g. the aux logits, or all).")

    @classmethod
    def mse(cls, weights, name: str = "") -> "StudentLoss":
        """Weighted squared error ``Σ w_i (z_i − y_i)²`` (``weights``: one ``w_i ≥ 0`` per logit)."""
        return cls("mse", tuple(np.asarray(weights, dtype=np.float64).ravel()), name)

    @classmethod
    def ce(cls, subset, n_outputs: int | None = None, name: str = "") -> "StudentLoss":
        """Softmax cross-entropy on a logit subset: a 0/1 mask, or indices with ``n_outputs``."""
        if n_outputs is not None:
            idx = [int(i) for i in np.asarray(subset, dtype=np.int64).ravel()]
            if any(i < 0 or i >= n_outputs for i in idx):
                raise ValueError(f"subset indices {idx} out of range for {n_outputs} logits.")
            mask = np.zeros(n_outputs)
            mask[idx] = 1.0
        else:
            mask = np.asarray(subset, dtype=np.float64)
        return cls("ce", tuple(mask.ravel()), name)

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


def mse_all(cfg: Config) -> StudentLoss:
    """Squared error on all ``n_classes + m`` logits, unit weights."""
    return StudentLoss.mse(np.asarray(logit_mask(cfg, "all")), "mse_all")


def mse_aux(cfg: Config) -> StudentLoss:
    """Squared error on the m aux logits only (weight 0 on the class logits; Jiang et al.)."""
    return StudentLoss.mse(np.asarray(logit_mask(cfg, "aux")), "mse_aux")


def ce_all(cfg: Config) -> StudentLoss:
    """Softmax cross-entropy on all logits (the paper's all-logits student)."""
    return StudentLoss.ce(np.asarray(logit_mask(cfg, "all")), name="ce_all")


def ce_aux(cfg: Config) -> StudentLoss:
    """Softmax cross-entropy on the m aux logits only (the paper's aux-only student)."""
    return StudentLoss.ce(np.asarray(logit_mask(cfg, "aux")), name="ce_aux")


_STANDARD = {"mse_all": mse_all, "mse_aux": mse_aux, "ce_all": ce_all, "ce_aux": ce_aux}


def standard_losses(cfg: Config, names: Sequence[str] = STANDARD_LOSSES) -> tuple[StudentLoss, ...]:
    """The standard loss settings named ``names`` (default all four) for the network of ``cfg``."""
    out = []
    for n in names:
        if n not in _STANDARD:
            raise ValueError(f"unknown loss setting {n!r}: choose from {STANDARD_LOSSES}.")
        out.append(_STANDARD[n](cfg))
    return tuple(out)


# ----------------------------------------------------------------------------- closed forms


def student_loss_value(loss: StudentLoss, z: jax.Array, y: jax.Array) -> jax.Array:
    """``L_S(z, y)`` per example (shape ``z.shape[:-1]``): student logits ``z``, teacher logits ``y``."""
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
    """
    w = loss.weight_array(y.dtype)
    if loss.kind == "mse":
        return 2.0 * jnp.sum(w * jnp.square(v), axis=-1)
    on = w > 0
    p = jnp.where(on, jnp.exp(masked_log_softmax(y, w)), 0.0)
    mean = jnp.sum(p * v, axis=-1, keepdims=True)
    return jnp.sum(p * jnp.square(v - mean), axis=-1)  # = Σ p v² − (Σ p v)², without cancellation


# ----------------------------------------------------------------------------- kernels

def _jit(*static):
    return functools.partial(jax.jit, static_argnames=static)


@_jit("loss_T")
def _teacher_update(theta_T0, loss_T_args, *, loss_T):
    g = jax.grad(loss_T)(theta_T0, *loss_T_args)
    return jax.tree.map(jnp.negative, g)


def teacher_update(loss_T: LossT, theta_T0: Params, *loss_T_args) -> Params:
    """``ΔθT = −∇L_T(θT0)`` for any differentiable ``L_T(params, *loss_T_args) -> scalar``.

    ``L_T`` can be the MNIST class cross-entropy (:func:`mnist_teacher_loss`), a regulariser
    (:func:`l2_teacher_loss`), a loss on other inputs, ... Pass data as ``loss_T_args`` rather
    than closing over it, so it is not baked into the compiled program.
    """
    return _teacher_update(theta_T0, tuple(loss_T_args), loss_T=loss_T)


@_jit("loss", "apply_fn")
def _student_update(theta_S0, theta_T0, delta_T, x, eps, *, loss, apply_fn):
    y = apply_fn(_axpy(eps, delta_T, theta_T0), x)
    z0, vjp = jax.vjp(lambda p: apply_fn(p, x), theta_S0)
    g = output_gradient(loss, z0, y) / x.shape[0]
    return jax.tree.map(jnp.negative, vjp(g)[0])


def student_update(loss: StudentLoss, theta_S0: Params, theta_T0: Params, delta_T: Params, x: jax.Array,
                   eps, *, apply_fn: Callable = model_apply) -> Params:
    """``ΔθS(ε) = −∇_θ E_x L_S(f_θS0(x), f_{θT0+εΔθT}(x))`` (mean over the rows of ``x``).

    Computed as the VJP of the student's outputs applied to the closed-form ``∂L_S/∂z``
    (:func:`output_gradient`). ``eps > 0`` (a scalar; ``vmap`` over it for a grid).
    """
    _check_positive("eps", eps)
    _check_trees("theta_T0", theta_T0, theta_S0=theta_S0, delta_T=delta_T)
    _check_inputs(apply_fn, theta_T0, x, (loss,))
    return _student_update(theta_S0, theta_T0, delta_T, x, eps, loss=loss, apply_fn=apply_fn)


@functools.partial(jax.jit, static_argnames=("apply_fn",))
def _output_tangent(theta_T0, delta_T, x, *, apply_fn):
    return jax.jvp(lambda p: apply_fn(p, x), (theta_T0,), (delta_T,))


def output_tangent(theta_T0: Params, delta_T: Params, x: jax.Array, *,
                   apply_fn: Callable = model_apply) -> tuple[jax.Array, jax.Array]:
    """``(y0, v)``: the teacher's initial outputs ``f_θT0(x)`` and ``v = J_x ΔθT`` by ``jax.jvp``."""
    _check_trees("theta_T0", theta_T0, delta_T=delta_T)
    _check_inputs(apply_fn, theta_T0, x)
    return _output_tangent(theta_T0, delta_T, x, apply_fn=apply_fn)


@_jit("loss", "apply_fn")
def _first_order_coefficient(theta_T0, delta_T, x, *, loss, apply_fn):
    y0, v = jax.jvp(lambda p: apply_fn(p, x), (theta_T0,), (delta_T,))
    return jnp.mean(quadratic_form(loss, y0, v))


def first_order_coefficient(loss: StudentLoss, theta_T0: Params, delta_T: Params, x: jax.Array, *,
                            apply_fn: Callable = model_apply) -> jax.Array:
    """``A = E_x[vᵀ M(x) v]``, ``v = J_x ΔθT`` (jvp), ``M`` in closed form: ``ΔθS·ΔθT = εA + O(ε²)``.

    Exact (no finite differences); ``A ≥ 0`` (Lemma 1). Valid for the shared initialisation.
    """
    _check_trees("theta_T0", theta_T0, delta_T=delta_T)
    _check_inputs(apply_fn, theta_T0, x, (loss,))
    return _first_order_coefficient(theta_T0, delta_T, x, loss=loss, apply_fn=apply_fn)


@_jit("loss", "loss_T", "apply_fn")
def _alignment(theta_S0, theta_T0, delta_T, x, eps, alpha, loss_T_args, *, loss, loss_T, apply_fn):
    d_s = _student_update(theta_S0, theta_T0, delta_T, x, eps, loss=loss, apply_fn=apply_fn)
    dot = tree_dot(d_s, delta_T)
    lt0 = loss_T(theta_S0, *loss_T_args)
    lt1 = loss_T(_axpy(alpha, d_s, theta_S0), *loss_T_args)
    return {"dot": dot, "cos": tree_cosine(d_s, delta_T), "delta_LT": lt1 - lt0}


def alignment(loss: StudentLoss, loss_T: LossT, theta_S0: Params, theta_T0: Params, delta_T: Params,
              x: jax.Array, eps, alpha=1.0, loss_T_args: tuple = (), *,
              apply_fn: Callable = model_apply) -> dict[str, jax.Array]:
    """At one ``ε``: ``{"dot": ΔθS·ΔθT, "cos": cos(ΔθS, ΔθT), "delta_LT": L_T(θS0+αΔθS) − L_T(θS0)}``.

    Vmappable over ``eps`` (and ``alpha``). For a grid prefer :func:`sweep`, which shares the
    work that does not depend on ``ε`` or on the loss.
    """
    _check_positive("eps", eps)
    _check_positive("alpha", alpha)
    _check_trees("theta_T0", theta_T0, theta_S0=theta_S0, delta_T=delta_T)
    _check_inputs(apply_fn, theta_T0, x, (loss,))
    return _alignment(theta_S0, theta_T0, delta_T, x, eps, alpha, tuple(loss_T_args), loss=loss,
                      loss_T=loss_T, apply_fn=apply_fn)


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


def sweep(losses: Sequence[StudentLoss], loss_T: LossT, theta_T0: Params, students: Sequence[Params],
          x: jax.Array, eps, *, alpha=1.0, loss_T_args: tuple = (), delta_T: Params | None = None,
          apply_fn: Callable = model_apply, eps_batch: int | None = None) -> SweepResult:
    """The whole single-step analysis over a grid of ``ε`` in one compiled call.

    For every student initialisation in ``students`` (e.g. ``(θT0, θ_other)``: the shared
    initialisation and the control), every loss setting in ``losses`` and every ``ε`` in ``eps``
    (1-D, all > 0), computes ``ΔθS(ε)·ΔθT``, the cosine, ``L_T(θS0 + αΔθS(ε)) − L_T(θS0)``, and
    ``A = E_x vᵀMv`` (see :class:`SweepResult`). ``ΔθT = −∇L_T(θT0)`` unless ``delta_T`` is given.

    Work is shared as the structure allows: the teacher's jvp (for ``A``) once; each student's
    forward pass and VJP at ``θS0`` once (they do not depend on ``ε``); the teacher's outputs
    ``y(ε)`` once per ``ε`` for all losses and students. The ``ε`` axis is a ``lax.map`` over
    groups of ``eps_batch`` values advanced together (a ``vmap``), which bounds memory; by default
    ``eps_batch = max(1, 8 // (len(losses)·len(students)))``, about eight student updates per step
    (larger groups were slower on CPU: the batched matmuls gain nothing and memory traffic grows).
    """
    losses = tuple(losses)
    students = tuple(students)
    if not losses:
        raise ValueError("losses is empty: give at least one StudentLoss (e.g. standard_losses(cfg)).")
    if not students:
        raise ValueError("students is empty: give at least one student initialisation θS0.")
    for i, l in enumerate(losses):
        if not isinstance(l, StudentLoss):
            raise ValueError(f"losses[{i}] = {l!r} is not a StudentLoss.")
    eps = jnp.asarray(eps)
    if eps.ndim != 1:
        raise ValueError(f"eps must be a 1-D grid of step sizes; got shape {eps.shape}.")
    _check_positive("eps", eps)
    _check_positive("alpha", alpha)
    _check_trees("theta_T0", theta_T0, **{f"students[{i}]": s for i, s in enumerate(students)})
    _check_inputs(apply_fn, theta_T0, x, losses)
    if delta_T is None:
        delta_T = teacher_update(loss_T, theta_T0, *loss_T_args)
    else:
        _check_trees("theta_T0", theta_T0, delta_T=delta_T)
    if eps_batch is None:  # about 8 (student, loss) parameter sets per step: measured fastest on CPU
        eps_batch = max(1, min(8 // (len(losses) * len(students)), eps.shape[0]))
    eps_batch = int(eps_batch)
    if eps_batch < 1:
        raise ValueError(f"eps_batch must be >= 1; got {eps_batch}.")
    return _sweep(theta_T0, students, delta_T, x, eps.astype(x.dtype), jnp.asarray(alpha, x.dtype),
                  tuple(loss_T_args), losses=losses, loss_T=loss_T, apply_fn=apply_fn, eps_batch=eps_batch)


def eps_grid(eps_min: float = 1e-6, eps_max: float = 1.0, n: int = 64) -> np.ndarray:
    """``n`` log-spaced step sizes from ``eps_min`` to ``eps_max`` (float64 NumPy array)."""
    if not (eps_min > 0 and eps_max > eps_min and math.isfinite(eps_max)):
        raise ValueError(f"need 0 < eps_min < eps_max < inf; got eps_min={eps_min}, eps_max={eps_max}.")
    if n < 2:
        raise ValueError(f"the ε grid needs at least 2 values; got n={n}.")
    return np.geomspace(eps_min, eps_max, n)


# ----------------------------------------------------------------------------- teacher losses


def mnist_teacher_loss(n_classes: int = 10) -> LossT:
    """``L_T(params, images, labels)``: mean class cross-entropy (the paper's teacher loss)."""
    return _CE_LOSSES.setdefault(n_classes, functools.partial(_mnist_ce, n_classes=n_classes))


def _mnist_ce(params, images, labels, *, n_classes):
    return class_cross_entropy(model_apply(params, images), labels, n_classes)


_CE_LOSSES: dict[int, LossT] = {}


def l2_teacher_loss(params) -> jax.Array:
    """``L_T(params) = ½‖θ‖²``: a regulariser as the teacher's loss (``ΔθT = −θT0``)."""
    return 0.5 * _leaves_dot(params, params)


# ----------------------------------------------------------------------------- the full check


def run_theorem_check(cfg: Config, images: np.ndarray | None = None, labels: np.ndarray | None = None, *,
                      losses: Sequence[str] = STANDARD_LOSSES, eps: Sequence[float] | None = None,
                      seeds: Sequence[int] = (0, 1, 2), n_noise: int = 1024, teacher_batch: int = 1024,
                      alpha: float = 1.0, teacher_loss: str = "ce", precision: str = "float64",
                      eps_batch: int | None = None, data_info: dict | None = None) -> dict[str, Any]:
    """Run the single-step check on the MLP of ``cfg`` for each seed; return a JSON-ready record.

    Seed ``s``: ``θT0 = init_params(k_init)``, the control student ``θS0' = init_params(k_other)``
    (a different initialisation), ``n_noise`` uniform-noise inputs ``x`` in [-1, 1]
    (:func:`subliminal_mlp.training.noise_images`), and ``L_T`` = the class cross-entropy on
    ``teacher_batch`` training examples drawn at random from ``images, labels``
    (``teacher_loss="ce"``) or ``½‖θ‖²`` (``"l2"``, no data needed). One :func:`sweep` per seed
    covers every loss setting in ``losses``, every ``ε`` and both initialisations.
    """
    from .experiment import run_key
    from .training import noise_images

    if precision not in ("float64", "float32"):
        raise ValueError(f"precision = {precision!r}: choose 'float64' or 'float32'.")
    if teacher_loss not in ("ce", "l2"):
        raise ValueError(f"teacher_loss = {teacher_loss!r}: choose 'ce' (MNIST class cross-entropy) or 'l2'.")
    loss_settings = standard_losses(cfg, losses)
    eps = np.asarray(eps_grid() if eps is None else eps, dtype=np.float64)
    _check_positive("eps", eps)
    _check_positive("alpha", alpha)
    if teacher_loss == "ce":
        if images is None or labels is None:
            raise ValueError("teacher_loss='ce' needs MNIST images and labels.")
        if not 1 <= teacher_batch <= images.shape[0]:
            raise ValueError(f"teacher_batch = {teacher_batch} must be in 1..{images.shape[0]}.")
    if n_noise < 1:
        raise ValueError(f"n_noise = {n_noise} must be >= 1.")
    scope = float64() if precision == "float64" else contextlib.nullcontext()
    per_seed = []
    timing = []
    with scope:
        cast = to_float64 if precision == "float64" else (lambda t: t)
        for s in seeds:
            k = run_key(int(s), 0)
            k_init, k_other, k_noise, k_batch = (jax.random.fold_in(k, i) for i in range(4))
            theta_T0 = cast(init_params(k_init, cfg))
            theta_other = cast(init_params(k_other, cfg))
            x = cast(noise_images(k_noise, jnp.arange(n_noise), cfg.input_dim))
            if teacher_loss == "ce":
                idx = np.asarray(jax.random.choice(k_batch, images.shape[0], (teacher_batch,), replace=False))
                args = (cast(jnp.asarray(images[idx])), jnp.asarray(labels[idx]))
                loss_T = mnist_teacher_loss(cfg.n_classes)
            else:
                args = ()
                loss_T = l2_teacher_loss
            t0 = time.perf_counter()
            res = sweep(loss_settings, loss_T, theta_T0, (theta_T0, theta_other), x, eps, alpha=alpha,
                        loss_T_args=args, eps_batch=eps_batch)
            res = jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), res)
            timing.append(time.perf_counter() - t0)
            per_seed.append(res)
    from .results import environment

    rec_losses = {}
    for k_i, setting in enumerate(loss_settings):
        entry = {"kind": setting.kind, "weights": list(setting.weights)}
        for init_i, init in enumerate(("shared", "different")):
            entry[init] = {
                "dot": [r.dot[init_i, k_i].tolist() for r in per_seed],
                "cos": [r.cos[init_i, k_i].tolist() for r in per_seed],
                "delta_LT": [r.delta_LT[init_i, k_i].tolist() for r in per_seed],
                "norm_S": [r.norm_S[init_i, k_i].tolist() for r in per_seed],
                "change": [r.change[init_i, k_i].tolist() for r in per_seed],
                "dot0": [float(r.dot0[init_i, k_i]) for r in per_seed],
                "norm_S0": [float(r.norm_S0[init_i, k_i]) for r in per_seed],
            }
        entry["A"] = [float(r.A[k_i]) for r in per_seed]
        rec_losses[setting.name] = entry
    return {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "settings": {"hidden_widths": list(cfg.hidden_widths), "aux_logits": cfg.aux_logits,
                     "n_classes": cfg.n_classes, "input_dim": cfg.input_dim, "n_noise": n_noise,
                     "teacher_loss": teacher_loss, "teacher_batch": teacher_batch if teacher_loss == "ce" else None,
                     "alpha": float(alpha), "precision": precision, "seeds": [int(s) for s in seeds],
                     "losses": list(losses)},
        "eps": eps.tolist(),
        "LT0": {"shared": [float(r.LT0[0]) for r in per_seed], "different": [float(r.LT0[1]) for r in per_seed]},
        "norm_T": [float(r.norm_T) for r in per_seed],
        "losses": rec_losses,
        "data": data_info or {},
        "environment": environment([str(d) for d in jax.devices()]),
        "timing": {"sweep_s_per_seed_incl_compile": timing},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def summarize(record: dict[str, Any], *, gap_tol: float = 1e-3, change_tol: float = 1e-3) -> dict[str, Any]:
    """Per loss setting and seed, the table's numbers and the verdict of the theorem's predictions.

    Shared initialisation, at the smallest ``ε``: the relative gap ``|ΔθS·ΔθT/ε − A| / A`` must be
    ``≤ gap_tol`` (Lemma 1's first-order term; when ``A = 0`` the theorem's other branch,
    ``ΔθS·ΔθT/ε ≈ 0``, is checked instead), ``ΔθS·ΔθT/ε ≥ −gap_tol·A`` and ``L_T`` must decrease
    (Theorem 1). Different initialisation (control): ``‖ΔθS(ε) − ΔθS(0)‖ / ‖ΔθS(0)‖ ≤ change_tol``
    at the smallest ``ε`` — the teacher's step drops out at first order; its sign is reported, not
    checked (no sign is predicted).
    """
    eps = np.asarray(record["eps"])
    i0 = int(np.argmin(eps))
    e0 = eps[i0]
    out: dict[str, Any] = {"eps_min": float(e0), "gap_tol": gap_tol, "change_tol": change_tol, "losses": {}}
    all_ok = True
    for name, entry in record["losses"].items():
        rows = []
        for s_i, seed in enumerate(record["settings"]["seeds"]):
            A = entry["A"][s_i]
            sh, df = entry["shared"], entry["different"]
            dot = np.asarray(sh["dot"][s_i])
            ratio = dot[i0] / e0
            dlt = np.asarray(sh["delta_LT"][s_i])
            scale = max(abs(A), 1e-300)
            size = max(record["norm_T"][s_i] ** 2, 1e-300)  # ‖ΔθT‖²: the natural scale of A
            if abs(A) <= 1e-14 * size:
                # Theorem 1's other branch: no first-order alignment, so ΔθS·ΔθT/ε ≈ 0 and L_T does
                # not move at first order (only rounding is allowed).
                gap = abs(ratio) / size
                ok_gap = gap <= gap_tol
                ok_sign = True
                ok_lt = dlt[i0] <= 1e-12 * max(1.0, abs(record["LT0"]["shared"][s_i]))
            else:
                gap = abs(ratio - A) / scale
                ok_gap = gap <= gap_tol
                ok_sign = ratio >= -gap_tol * scale
                ok_lt = dlt[i0] < 0
            decreasing = np.nonzero(dlt < 0)[0]
            # the largest ε up to which L_T decreases at every grid point (from the smallest up)
            order = np.argsort(eps)
            run_ok = np.cumprod(dlt[order] < 0).astype(bool)
            eps_dec = float(eps[order][run_ok].max()) if run_ok.any() else None
            d_dot = np.asarray(df["dot"][s_i])
            d_change = np.asarray(df["change"][s_i])[i0] / max(df["norm_S0"][s_i], 1e-300)
            ok_ctrl = d_change <= change_tol
            ok = bool(ok_gap and ok_sign and ok_lt and ok_ctrl)
            all_ok &= ok
            rows.append({
                "seed": seed, "A": A, "ratio": float(ratio), "rel_gap": float(gap),
                "delta_LT": float(dlt[i0]), "cos": float(sh["cos"][s_i][i0]),
                "eps_LT_decreases_up_to": eps_dec, "n_eps_LT_decreases": int(decreasing.size),
                "ctrl_ratio": float(d_dot[i0] / e0), "ctrl_dot": float(d_dot[i0]),
                "ctrl_cos": float(df["cos"][s_i][i0]), "ctrl_delta_LT": float(df["delta_LT"][s_i][i0]),
                "ctrl_change": float(d_change),
                "checks": {"gap": bool(ok_gap), "sign": bool(ok_sign), "LT_decreases": bool(ok_lt),
                           "control_first_order": bool(ok_ctrl)},
                "ok": ok,
            })
        out["losses"][name] = rows
    out["ok"] = bool(all_ok)
    return out


def theorem_holds(summary: dict[str, Any]) -> bool:
    """Whether every check of :func:`summarize` passed."""
    return bool(summary["ok"])


def _opt(v) -> str:
    return "-" if v is None else f"{v:.1e}"


def _sign(v: float) -> str:
    return "−" if v < 0 else ("+" if v > 0 else "0")


def format_tables(summary: dict[str, Any]) -> str:
    """One plain-text table per loss setting (rows: seeds), then the verdict."""
    e0 = summary["eps_min"]
    lines = []
    for name, rows in summary["losses"].items():
        lines.append(f"loss setting: {name}    (ε_min = {e0:.1e}; shared init: θS0 = θT0; control: θS0 ≠ θT0)")
        head = (f"{'seed':>4} {'A':>11} {'dot/ε@ε_min':>12} {'rel gap':>9} {'ΔL_T@ε_min':>11} {'sign':>4} "
                f"{'L_T↓ to ε':>9} {'cos':>9} | {'ctrl dot/ε':>11} {'ctrl cos':>9} {'ctrl ΔL_T':>10} "
                f"{'ctrl drift':>10}  ok")
        lines.append(head)
        lines.append("-" * len(head))
        for r in rows:
            lines.append(
                f"{r['seed']:>4} {r['A']:>11.4e} {r['ratio']:>12.4e} {r['rel_gap']:>9.1e} {r['delta_LT']:>11.3e} "
                f"{_sign(r['delta_LT']):>4} {_opt(r['eps_LT_decreases_up_to']):>9} {r['cos']:>9.2e} | "
                f"{r['ctrl_ratio']:>11.3e} {r['ctrl_cos']:>9.2e} {r['ctrl_delta_LT']:>10.2e} "
                f"{r['ctrl_change']:>10.1e}  {'yes' if r['ok'] else 'NO'}")
        lines.append("")
    verdict = ("PASS: ΔθS·ΔθT/ε → A ≥ 0 and L_T decreases at small ε with a shared initialisation; "
               "the teacher's step drops out at first order with a different one."
               if summary["ok"] else
               "FAIL: the theorem's prediction was not met (see the rows marked NO).")
    lines.append(f"dot = ΔθS·ΔθT; rel gap = |dot/ε − A|/A (tolerance {summary['gap_tol']:g}); ΔL_T = "
                 "L_T(θS0+αΔθS) − L_T(θS0); L_T↓ to ε = largest ε up to which L_T decreases on the whole grid;")
    lines.append(f"cos = cos(ΔθS, ΔθT); all at ε_min. ctrl drift = ‖ΔθS(ε_min)−ΔθS(0)‖/‖ΔθS(0)‖ with a "
                 f"different init (tolerance {summary['change_tol']:g}): the teacher's step enters only at O(ε).")
    lines.append(verdict)
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure

_COLORS = {"mse_all": "#1f77b4", "mse_aux": "#2ca02c", "ce_all": "#ff7f0e", "ce_aux": "#d62728"}


def settings_caption(record: dict[str, Any]) -> str:
    """One line describing the settings of a theorem record."""
    s = record["settings"]
    widths = "→".join(str(w) for w in [s["input_dim"], *s["hidden_widths"]])
    lt = (f"L_T = class cross-entropy on {s['teacher_batch']} MNIST training images"
          if s["teacher_loss"] == "ce" else "L_T = ½‖θ‖²")
    eps = record["eps"]
    return (f"MLP {widths}→{s['n_classes']}+{s['aux_logits']}; {lt}; x = {s['n_noise']} uniform-noise images; "
            f"α = {s['alpha']:g}; {len(eps)} ε in [{min(eps):.0e}, {max(eps):.0e}]; {s['precision']}; "
            f"seeds {s['seeds']}")


def plot_theorem(record: dict[str, Any], path: str | os.PathLike):
    """The figure of ``experiments/theorem_single_step.py`` from a :func:`run_theorem_check` record.

    Top row, shared initialisation: (a) ``ΔθS·ΔθT/ε`` against ``ε`` (log–log), one line per seed and
    loss setting, converging to ``A`` (dashed); (a′) the relative gap ``|ΔθS·ΔθT/ε − A|/A``, which
    shrinks linearly in ``ε``; (b) the change of ``L_T``. Bottom row, different initialisation (c):
    ``ΔθS·ΔθT/ε``, the change of ``L_T`` (symmetric-log axes: both signs occur) and
    ``‖ΔθS(ε) − ΔθS(0)‖/‖ΔθS(0)‖`` (the teacher's step enters at first order only).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from .plotting import save_figure

    eps = np.asarray(record["eps"])
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.8))
    (ax_a, ax_g, ax_b), (ax_c1, ax_c2, ax_c3) = axes
    lines = dict(lw=1.1, alpha=0.8)
    sym = {ax_b: [], ax_c1: [], ax_c2: []}
    for name, entry in record["losses"].items():
        c = _COLORS.get(name, None)
        sh, df = entry["shared"], entry["different"]
        for s_i, A in enumerate(entry["A"]):
            r = np.asarray(sh["dot"][s_i]) / eps
            pos = r > 0
            ax_a.plot(eps[pos], r[pos], color=c, **lines)
            ax_a.axhline(A, color=c, ls="--", lw=0.8, alpha=0.7)
            gap = np.abs(r - A) / abs(A) if A else np.abs(r)
            ax_g.plot(eps[gap > 0], gap[gap > 0], color=c, **lines)
            for ax, y in ((ax_b, np.asarray(sh["delta_LT"][s_i])), (ax_c1, np.asarray(df["dot"][s_i]) / eps),
                          (ax_c2, np.asarray(df["delta_LT"][s_i]))):
                ax.plot(eps, y, color=c, **lines)
                sym[ax].append(np.abs(y))
            ch = np.asarray(df["change"][s_i]) / max(df["norm_S0"][s_i], 1e-300)
            ax_c3.plot(eps[ch > 0], ch[ch > 0], color=c, **lines)
    guide = eps[eps <= 1e-2]
    for ax in (ax_g, ax_c3):
        (g,) = ax.plot(guide, guide, color="black", ls=":", lw=1.0)
        ax.legend([g], ["∝ ε (slope 1)"], loc="lower right", frameon=False, fontsize=8)
    n_seeds = len(record["settings"]["seeds"])
    ax_a.set(xscale="log", yscale="log", xlabel="ε (teacher's step size)", ylabel="ΔθS·ΔθT / ε",
             title="(a) shared init: ΔθS·ΔθT/ε → A (dashed)")
    ax_g.set(xscale="log", yscale="log", xlabel="ε", ylabel="|ΔθS·ΔθT/ε − A| / A",
             title="(a′) shared init: relative gap to A, O(ε)")
    ax_b.set(xscale="log", xlabel="ε", ylabel="L_T(θS0 + αΔθS) − L_T(θS0)",
             title="(b) shared init: change of the teacher's loss L_T")
    ax_c1.set(xscale="log", xlabel="ε", ylabel="ΔθS·ΔθT / ε",
              title="(c) different init: ΔθS·ΔθT/ε, no limit, either sign")
    ax_c2.set(xscale="log", xlabel="ε", ylabel="L_T(θS0 + αΔθS) − L_T(θS0)",
              title="(c) different init: change of L_T, either sign")
    ax_c3.set(xscale="log", yscale="log", xlabel="ε", ylabel="‖ΔθS(ε) − ΔθS(0)‖ / ‖ΔθS(0)‖",
              title="(c) different init: the teacher's step enters at O(ε)")
    for ax, vals in sym.items():
        v = np.concatenate(vals)
        v = v[v > 0]
        lo = math.floor(math.log10(np.percentile(v, 5))) if v.size else -8
        hi = math.ceil(math.log10(v.max())) if v.size else 0
        ax.set_yscale("symlog", linthresh=10.0 ** lo)
        step = max(1, math.ceil((hi - lo) / 6))
        dec = [10.0 ** d for d in range(hi, lo, -step)]
        ax.set_yticks([-d for d in dec] + [0.0] + dec[::-1])
        ax.axhline(0, color="black", lw=0.6)
    for ax in axes.ravel():
        ax.grid(True, which="major", alpha=0.3)
        ax.spines[["top", "right"]].set_visible(False)
    handles = [Line2D([], [], color=_COLORS.get(n), lw=2) for n in record["losses"]]
    handles.append(Line2D([], [], color="0.3", ls="--", lw=1))
    fig.legend(handles, [f"student loss {n}" for n in record["losses"]] + ["A = E_x[vᵀM(x)v] (jvp, exact)"],
               loc="upper center", ncol=len(handles), frameon=False, fontsize=9, bbox_to_anchor=(0.5, 0.955))
    fig.suptitle(f"Single-step check of Lemma 1 / Theorem 1 (protocol.md §2), {n_seeds} seeds (one line each): "
                 "one imitation step on noise lowers the teacher's loss only with a shared initialisation",
                 fontsize=11, y=0.99)
    fig.text(0.5, 0.005, settings_caption(record), ha="center", va="bottom", fontsize=8.5)
    fig.tight_layout(rect=(0, 0.02, 1, 0.93))
    return save_figure(fig, path)
