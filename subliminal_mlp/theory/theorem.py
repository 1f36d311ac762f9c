r"""The ``subliminal-mlp theorem`` check: its protocol, verdict, tables and figure (protocol.md §2).

The kernels (:mod:`subliminal_mlp.theory.kernels`) compute, for one teacher step ``ΔθT = −∇L_T(θT0)`` and
one student step ``ΔθS(ε)`` on the teacher's outputs, ``ΔθS·ΔθT``, the first-order coefficient
``A = E_x[vᵀM(x)v]`` and the change of ``L_T``. This module runs them as the theorem check on any
:class:`~subliminal_mlp.core.models.Model` (default: the paper's MLP 784→256→256→10+3):

* :func:`run_theorem_check` — per seed, ``θT0`` and a control ``θS0' ≠ θT0`` from ``model.init``,
  uniform-noise inputs, ``L_T`` built for the model (the class cross-entropy on a batch of MNIST
  training images, ``½‖θ‖²``, or your own :class:`~subliminal_mlp.theory.kernels.TeacherLoss`), and one
  :func:`~subliminal_mlp.theory.kernels.sweep` over ε, the loss settings and both initialisations; returns
  a JSON-ready record (format :data:`FORMAT`) whose ``settings["model"]`` describes the model;
* :func:`summarize`, :func:`theorem_holds`, :func:`verdict` — the verdict of Lemma 1 / Theorem 1 from a record;
* :func:`format_tables`, :func:`settings_caption`, :func:`plot_theorem` — the report, from a record
  (whatever the model).

Used by ``subliminal-mlp theorem`` (:mod:`subliminal_mlp.cli.theorem`) and
``experiments/theorem_single_step.py``.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from typing import Any, Callable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core.config import Config, check_seed
from ..core.results import envelope, plain_scalar, register_format
from ..core.models import Model, ModelError, check_model, config_model
from .kernels import (EPS_FLOOR, EPS_FLOOR_REASON, STANDARD_LOSSES, PrecisionWarning, StudentLoss, TeacherLoss, _check_count,
                     _check_positive, _check_teacher_loss, _fn_name, _network, class_cross_entropy_loss, eps_grid,
                     float64, l2_teacher_loss, standard_losses, sweep, to_float64)

__all__ = ["run_theorem_check", "summarize", "theorem_holds", "format_tables", "settings_caption", "plot_theorem",
           "check_eps", "FORMAT", "FORMAT_VERSION", "COMPARISON_RANGE"]

#: The ``format`` of a theorem record. Version 2: the common envelope (``config`` holds what version 1
#: called ``settings``; ``n_runs``/``seeds`` added); :func:`settings_of` reads both.
FORMAT = "subliminal-mlp/theorem"
FORMAT_VERSION = 2
register_format(FORMAT, FORMAT_VERSION)


# ----------------------------------------------------------------------------- the full check


def _resolve_model(cfg: Config | None, model: Model | None) -> Model:
    """``model``, else the :func:`~subliminal_mlp.core.models.mlp` of ``cfg``, else the paper's MLP."""
    if model is None:
        return config_model(cfg if cfg is not None else Config())
    if not isinstance(model, Model):
        raise ModelError(f"model = {model!r} is not a subliminal_mlp.core.models.Model: build one with mlp(...), "
                         "from_flax(...) or Model(init, apply, ...).")
    if cfg is not None and config_model(cfg) != model:
        raise ValueError("give cfg or model, not both: cfg describes an MLP that is not this model "
                         f"({model.name!r}); pass model= alone.")
    return model


def _resolve_teacher_loss(teacher_loss, model: Model) -> tuple[Callable, str]:
    """``(L_T, its name in the record)``: ``"ce"``, ``"l2"``, a TeacherLoss or a plain function."""
    if isinstance(teacher_loss, str):
        if teacher_loss == "ce":
            return class_cross_entropy_loss(model), "ce"
        if teacher_loss == "l2":
            return l2_teacher_loss, "l2"
        raise ValueError(f"teacher_loss = {teacher_loss!r}: choose 'ce' (MNIST class cross-entropy), 'l2', a "
                         "TeacherLoss built for the model, or a function L_T(params, *args).")
    if isinstance(teacher_loss, TeacherLoss):
        return teacher_loss, "ce" if teacher_loss.kind == "class_ce" else teacher_loss.label
    if callable(teacher_loss):
        return teacher_loss, _fn_name(teacher_loss)
    raise ValueError(f"teacher_loss = {teacher_loss!r} is neither a name ('ce', 'l2'), a TeacherLoss nor a function.")


#: Where the ε grid must have a point ``ε₁`` above its smallest ``ε₀``, as multiples of ``ε₀``: "vanishes like
#: ε" (:func:`_vanishes_like_eps`) compares the two. Below 5·ε₀ the comparison's factor-2 allowance for the
#: O(ε²) term lets a √ε pass (at ε₁ < 4·ε₀; a constant at ε₁ < 2·ε₀). Above, ε₁ can leave the range where the
#: teacher's step is small: a drift or gap linear in ε that sits at its tolerance (1e-3) at ε₀ is of order 1 —
#: no longer a perturbation, so possibly saturating — at ~1e3·ε₀ (a 2-point grid [1e-6, 1] judged a control
#: whose drift was 1.9e-6 at ε₀ "first order", because its drift at ε = 1 had saturated below 0.95). The bound is
#: 10^3.5, half a decade above 1e3, so that a log-spaced grid about three decades apart qualifies (3 points
#: in [1e-6, 1]; the quick figure's 1e-6, 1.1e-3, 1).
COMPARISON_RANGE = (5.0, 10 ** 3.5)


def _comparison_index(eps: np.ndarray) -> int | None:
    """The index of ``ε₁``: the grid's ``ε`` nearest ``10·ε₀`` (on a log scale) among those in
    :data:`COMPARISON_RANGE` times the smallest ``ε₀``; None when there is none."""
    e0 = eps.min()
    lo, hi = COMPARISON_RANGE
    # a relative slack of 1e-9: a log-spaced grid's points are off their exact multiple by rounding
    usable = np.nonzero((eps >= lo * e0 * (1 - 1e-9)) & (eps <= hi * e0 * (1 + 1e-9)))[0]
    if usable.size == 0:
        return None
    return int(usable[np.argmin(np.abs(np.log(eps[usable] / (10 * e0))))])


def check_eps(eps, what: str = "eps") -> np.ndarray:
    """``eps`` as a 1-D float64 array if the theorem check can judge on it, else a ``ValueError`` naming it.

    Every ``ε`` finite and ``>= EPS_FLOOR`` (1e-10: below it float64 cancellation in the student's
    targets alone fails the 1e-3 tolerance; :data:`~subliminal_mlp.theory.kernels.EPS_FLOOR`), and a second
    ``ε₁`` between 5 and 10^3.5 times the smallest (:data:`COMPARISON_RANGE`): without it whether a quantity
    vanishes like ε cannot be told (so one value, or repeats of it, are refused). Any order.

    >>> check_eps([1e-6, 1e-3]).tolist()
    [1e-06, 0.001]
    """
    try:
        arr = np.asarray(eps, dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{what} = {eps!r} is not a grid of numbers: give step sizes ε > 0, e.g. "
                         "theory.eps_grid().") from e
    if arr.ndim != 1:
        raise ValueError(f"{what} must be a 1-D grid of step sizes; got shape {arr.shape}.")
    _check_positive(what, arr)
    if arr.min() < EPS_FLOOR:
        raise ValueError(f"{what} has ε = {arr.min():g}, below {EPS_FLOOR:g}: {EPS_FLOOR_REASON}; make the "
                         f"smallest ε >= {EPS_FLOOR:g} (1e-6 is the default).")
    if _comparison_index(arr) is None:
        lo, hi = COMPARISON_RANGE
        raise ValueError(f"{what} = {arr.tolist()} has no ε between {lo:g} and {hi:.0f} times its smallest, "
                         f"{arr.min():g}: the check needs one to tell a first-order quantity from one that vanishes "
                         "like ε (closer, a √ε passes; farther, ε may be past the range where the teacher's step is "
                         "small). Give a denser grid, e.g. theory.eps_grid(1e-6, 1, 64).")
    return arr


def run_theorem_check(cfg: Config | None = None, images: np.ndarray | None = None, labels: np.ndarray | None = None,
                      *, model: Model | None = None, losses: Sequence[str | StudentLoss] = STANDARD_LOSSES,
                      eps: Sequence[float] | None = None, seeds: Sequence[int] = (0, 1, 2), n_noise: int = 1024,
                      teacher_batch: int | None = None, alpha: float = 1.0, teacher_loss: str | TeacherLoss | Callable = "ce",
                      teacher_loss_args: tuple = (), precision: str = "float64", eps_batch: int | None = None,
                      data_info: dict | None = None) -> dict[str, Any]:
    """Run the single-step check of Lemma 1 / Theorem 1 (protocol.md §2) on ``model``; a JSON-ready record.

    ``model``: any :class:`~subliminal_mlp.core.models.Model` (default the :func:`~subliminal_mlp.core.models.mlp`
    of ``cfg``, or the paper's MLP when neither is given). ``cfg`` gives only the architecture: the check's
    seeds and noise inputs are ``seeds`` and ``n_noise``, not ``cfg.seed`` and ``cfg.n_noise``. Seed ``s`` (keys ``fold_in(run_key(s, 0), i)``):
    ``θT0 = model.init(k_init)``, the control student ``θS0' = model.init(k_other)`` (a different
    initialisation), ``n_noise`` uniform-noise inputs ``x`` in [-1, 1]
    (:func:`subliminal_mlp.core.training.noise_images`, reshaped to ``model.input_shape``), and ``L_T``:

    * ``teacher_loss="ce"``: :func:`~subliminal_mlp.theory.kernels.class_cross_entropy_loss` (``model``), the
      mean class cross-entropy on ``teacher_batch`` (default 1024) training examples drawn at random from
      ``images, labels`` (flattened images are reshaped to the model's input shape);
    * ``"l2"``: ``½‖θ‖²`` (no data);
    * a :class:`~subliminal_mlp.theory.kernels.TeacherLoss` built for ``model`` (a class cross-entropy one
      draws its batch as ``"ce"`` does; a custom one gets ``teacher_loss_args``), or a plain
      ``L_T(params, *teacher_loss_args)``. One bound to another network, or one that cannot be
      applied to the model's parameters, raises ``ModelError`` before any compute.

    One :func:`~subliminal_mlp.theory.kernels.sweep` per seed covers every loss setting in ``losses``
    (names of the standard settings, or StudentLoss objects), every ``ε`` and both
    initialisations: ``A = E_x[vᵀM(x)v]``, ``ΔθS(ε)·ΔθT``, its cosine, ``L_T(θS0+αΔθS) − L_T(θS0)``
    and ``‖ΔθS(ε) − ΔθS(0)‖``. ``record["config"]["model"]`` is ``model.describe()``.

    ``eps``: the grid of ``ε`` (default :func:`~subliminal_mlp.theory.kernels.eps_grid`, 64 values in
    [1e-6, 1]); it must let :func:`summarize` judge (:func:`check_eps`: every ``ε >= 1e-10`` and one between
    5 and 10^3.5 times the smallest), else a ``ValueError`` before any compute. ``n_noise``,
    ``teacher_batch`` and ``eps_batch`` (the sweep's group of ε) are integers >= 1.

    ``record["environment"]["x64_in_check"]`` says whether the sweep ran in JAX's 64-bit mode (inside
    :func:`~subliminal_mlp.theory.kernels.float64` for ``precision="float64"``); the envelope's own
    ``"x64"`` is the process-wide mode when the record is written (off, usually).

    ``precision``: ``"float64"`` (the check) or ``"float32"``, to see what rounding does: in float32
    the first-order gap at ε ~ 1e-6 is rounding (~1e-2 relative, against :func:`summarize`'s
    ``gap_tol`` 1e-3), so its verdict fails for that reason, not because the theorem does.

    >>> from subliminal_mlp.core.models import mlp
    >>> rec = run_theorem_check(model=mlp((8,), activation="tanh"), teacher_loss="l2", n_noise=16, seeds=[0],
    ...                         eps=[1e-6, 1e-3], losses=["ce_aux"])
    >>> rec["config"]["model"]["activation"], theorem_holds(summarize(rec))
    ('tanh', True)
    """
    from ..core.engine import run_key
    from ..core.training import noise_images

    if cfg is not None and not isinstance(cfg, Config):
        raise ValueError(f"cfg = {type(cfg).__name__} is not a Config: the first argument is the architecture's "
                         "Config (or None); pass model=, images= and labels= by name.")
    model = _resolve_model(cfg, model)
    check_model(model)
    if precision not in ("float64", "float32"):
        raise ValueError(f"precision = {precision!r}: choose 'float64' or 'float32'.")
    loss_T, lt_name = _resolve_teacher_loss(teacher_loss, model)
    needs_batch = isinstance(loss_T, TeacherLoss) and loss_T.kind == "class_ce"
    loss_settings = tuple(l if isinstance(l, StudentLoss) else standard_losses(model, [l])[0] for l in losses)
    if not loss_settings:
        raise ValueError("losses is empty: give at least one loss setting, e.g. STANDARD_LOSSES.")
    names = [l.label for l in loss_settings]
    if len(set(names)) != len(names):
        raise ValueError(f"losses {names} repeat a setting name: each needs its own name in the record.")
    eps = check_eps(eps_grid() if eps is None else eps)
    _check_positive("alpha", alpha, scalar=True)
    n_noise = _check_count("n_noise", n_noise)
    if eps_batch is not None:
        eps_batch = _check_count("eps_batch", eps_batch)
    seeds = list(seeds)
    if not seeds:
        raise ValueError("seeds is empty: give at least one seed (a check of nothing would pass).")
    for s in seeds:
        check_seed(plain_scalar(s), error=ValueError)
    input_dim = math.prod(model.input_shape)
    if teacher_batch is not None and not needs_batch:
        raise ValueError(f"teacher_batch = {teacher_batch} has no effect with teacher_loss = {lt_name!r} (its L_T "
                         "draws no batch of images): leave it out, or use teacher_loss='ce'.")
    teacher_batch = 1024 if teacher_batch is None else _check_count("teacher_batch", teacher_batch)
    if needs_batch:
        if images is None or labels is None:
            raise ValueError("teacher_loss='ce' needs MNIST images and labels.")
        if not 1 <= teacher_batch <= images.shape[0]:
            raise ValueError(f"teacher_batch = {teacher_batch} must be in 1..{images.shape[0]}.")
        if math.prod(images.shape[1:]) != input_dim:
            raise ModelError(f"images of shape {images.shape[1:]} do not fit model {model.name!r}, whose inputs "
                             f"have shape {model.input_shape}.")
        abstract_args = (jax.ShapeDtypeStruct((teacher_batch, *images.shape[1:]), images.dtype),
                         jax.ShapeDtypeStruct((teacher_batch,), labels.dtype))
    else:
        abstract_args = tuple(teacher_loss_args)
    # the teacher loss is bound to this model and applies to its parameters: checked before any compute
    _check_teacher_loss(loss_T, jax.eval_shape(model.init, jax.random.PRNGKey(0)), abstract_args,
                        _network(model, None))
    scope = float64() if precision == "float64" else contextlib.nullcontext()
    per_seed = []
    timing = []
    with scope, warnings.catch_warnings():
        x64_in_check = bool(jax.config.jax_enable_x64)
        if precision == "float32":  # asked for: the kernels' warning would only repeat it
            warnings.simplefilter("ignore", PrecisionWarning)
        cast = to_float64 if precision == "float64" else (lambda t: t)
        for s in seeds:
            k = run_key(int(s), 0)
            k_init, k_other, k_noise, k_batch = (jax.random.fold_in(k, i) for i in range(4))
            theta_T0 = cast(model.init(k_init))
            theta_other = cast(model.init(k_other))
            x = noise_images(k_noise, jnp.arange(n_noise), input_dim).reshape(n_noise, *model.input_shape)
            x = cast(x)
            if needs_batch:
                idx = np.asarray(jax.random.choice(k_batch, images.shape[0], (teacher_batch,), replace=False))
                args = (cast(jnp.asarray(images[idx])), jnp.asarray(labels[idx]))
            else:
                args = tuple(cast(a) for a in teacher_loss_args)
            t0 = time.perf_counter()
            res = sweep(loss_settings, loss_T, theta_T0, (theta_T0, theta_other), x, eps, alpha=alpha,
                        loss_T_args=args, eps_batch=eps_batch, model=model)
            res = jax.tree.map(lambda a: np.asarray(a, dtype=np.float64), res)
            timing.append(time.perf_counter() - t0)
            per_seed.append(res)

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
        rec_losses[setting.label] = entry
    described = model.describe()
    widths = described.get("hidden_widths")
    settings = {"hidden_widths": None if widths is None else list(widths), "aux_logits": model.aux_logits,
                "n_classes": model.n_classes, "input_dim": input_dim, "n_noise": n_noise,
                "teacher_loss": lt_name, "teacher_batch": teacher_batch if needs_batch else None,
                "alpha": float(alpha), "precision": precision, "seeds": [int(s) for s in seeds],
                "losses": names, "model": described}
    return envelope(
        FORMAT, settings, n_runs=len(per_seed), seed=[int(s) for s in seeds], runs=[0] * len(per_seed),
        data=data_info or {}, devices=[str(d) for d in jax.devices()], format_version=FORMAT_VERSION,
        environment_extra={"x64_in_check": x64_in_check},
        timing={"sweep_s_per_seed_incl_compile": timing, "total_s": float(sum(timing))},
        eps=eps.tolist(),
        LT0={"shared": [float(r.LT0[0]) for r in per_seed], "different": [float(r.LT0[1]) for r in per_seed]},
        norm_T=[float(r.norm_T) for r in per_seed],
        losses=rec_losses,
    )


def settings_of(record: dict[str, Any]) -> dict[str, Any]:
    """A theorem record's settings: its ``config`` (format version 2, the common envelope) or, in a
    version-1 record, its ``settings``."""
    return record["config"] if "config" in record else record["settings"]


#: The relative rounding of ΔθS·ΔθT/ε allowed per unit of 1/ε where A ≠ 0 (:func:`summarize`): the shared start's
#: targets minus outputs, f(θT0 + εΔθT) − f(θT0), lose u·‖f‖ to cancellation (u = 2.2e-16, float64), a relative
#: u·‖f‖/(ε‖J ΔθT‖); 1e-13 allows ‖f‖/‖J ΔθT‖ up to ~450 (a one-hidden-layer MLP's aux logits: ~0.1), and still
#: sees an A off by 1e-7 of itself at ε = 1e-6.
CANCELLATION = 1e-13


def summarize(record: dict[str, Any], *, gap_tol: float = 1e-3, change_tol: float = 1e-3) -> dict[str, Any]:
    """Per loss setting and seed, the table's numbers and the verdict of the theorem's predictions (§2).

    Works from the record alone, whatever the model it was run on.

    Shared initialisation, at the smallest ``ε``: the relative gap ``|ΔθS·ΔθT/ε − A| / A`` must be
    ``≤ gap_tol`` and ``ΔθS·ΔθT/ε − A`` must vanish like ``ε`` (Lemma 1's first-order term: an ``A``
    off by less than ``gap_tol`` fails too), ``ΔθS·ΔθT/ε ≥ −gap_tol·A`` and ``L_T`` must decrease
    (Theorem 1). When ``A = 0`` (``|A| ≤ 1e-14·‖ΔθT‖²``) the theorem's other branch, ``ΔθS·ΔθT = 0``
    for all ``ε``, is checked to first order instead: ``ΔθS·ΔθT = O(ε²)``, so ``ΔθS·ΔθT/ε`` must
    vanish like ``ε`` (see below; its size ``|ΔθS·ΔθT/ε| / ‖ΔθT‖²`` is reported as the gap), must
    not be negative beyond float64 rounding (Lemma 1: an ``O(ε²)`` product below zero fails the sign
    check), and ``L_T`` must not increase beyond rounding. (A nonzero second-order term would still put the
    row under the first branch, ``L_T`` falling at small ``ε``; the check does not look that far. With
    ``m = 1`` and ``ce_aux``, ``ΔθS ≡ 0`` and the branch holds exactly.)
    Different initialisation (control): the drift ``‖ΔθS(ε) − ΔθS(0)‖ / ‖ΔθS(0)‖`` must be
    ``≤ change_tol`` at the smallest ``ε`` and vanish like ``ε`` — the teacher's step enters only at
    first order; the control's sign is reported, not checked (no sign is predicted).

    ``gap_tol`` and ``change_tol`` must be finite and > 0, and the record's ε grid one the check can
    judge on (:func:`check_eps`): else a ``ValueError``.

    "Vanishes like ``ε``" (:func:`_vanishes_like_eps`): the value at the smallest ``ε₀`` is at most
    twice ``ε₀/ε₁`` times its value at ``ε₁``, the grid's ``ε`` nearest ``10·ε₀`` among those between
    5·ε₀ and 10^3.5·ε₀ (:data:`COMPARISON_RANGE`: closer, a √ε passes; farther, ``ε₁`` may be past the
    range where the teacher's step is small, and a quantity linear in ε there may have saturated), plus float64
    rounding (of the dot product, of ``A``, and the cancellation in the shared start's targets minus
    outputs, which grows like ``1/ε``: :data:`CANCELLATION`). A quantity that tends to a constant (a
    first-order term the record's ``A`` missed) or shrinks more slowly than ``ε`` (``√ε``, say) fails it.
    The summary names ``ε₁`` (``eps_compare``), and each row its two comparisons
    (``vanishes_like_eps``: ``gap``, in the units of ``rel_gap``, and ``control``, in those of
    ``ctrl_change``): the value at ``ε₀`` (``at_eps_min``: ``rel_gap`` and ``ctrl_change`` themselves),
    at ``ε₁`` (``at_eps_compare``), and the ``bound`` the first must not exceed.

    On a tiny check (one seed, ``L_T = ½‖θ‖²``): every check of the row passes, and its relative gap is
    ``|ΔθS·ΔθT/ε − A| / A`` recomputed from the record at ``ε = 1e-6``:

    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import run_theorem_check, summarize
    >>> rec = run_theorem_check(model=mlp((8,), activation="tanh"), teacher_loss="l2", n_noise=16, seeds=[0],
    ...                         eps=[1e-6, 1e-3], losses=["ce_aux"])
    >>> row, entry = summarize(rec)["losses"]["ce_aux"][0], rec["losses"]["ce_aux"]
    >>> row["branch"], row["checks"]
    ('A > 0', {'gap': True, 'sign': True, 'LT_decreases': True, 'control_first_order': True})
    >>> ratio, A = entry["shared"]["dot"][0][0] / 1e-6, entry["A"][0]  # ΔθS·ΔθT/ε at the record's eps[0] = 1e-6
    >>> bool(abs(row["rel_gap"] - abs(ratio - A) / A) <= 1e-9 * row["rel_gap"]), row["rel_gap"] < 1e-3
    (True, True)
    >>> like = row["vanishes_like_eps"]["gap"]  # the gap at ε₀ = 1e-6 and at ε₁ = 1e-3: it shrank like ε
    >>> like["at_eps_min"] == row["rel_gap"], like["at_eps_min"] <= like["bound"], like["at_eps_compare"] > 100 * like["at_eps_min"]
    (True, True, True)
    """
    for name, tol in (("gap_tol", gap_tol), ("change_tol", change_tol)):
        if isinstance(tol, (bool, np.bool_)) or not isinstance(tol, (int, float, np.integer, np.floating)) \
                or not (math.isfinite(tol) and tol > 0):
            raise ValueError(f"{name} = {tol!r} is invalid: the tolerance must be a finite number > 0 "
                             "(default 1e-3).")
    eps = check_eps(record["eps"], "the record's eps")
    i0 = int(np.argmin(eps))
    e0 = eps[i0]
    out: dict[str, Any] = {"eps_min": float(e0), "eps_compare": float(eps[_comparison_index(eps)]),
                           "gap_tol": gap_tol, "change_tol": change_tol, "losses": {}}
    all_ok = True
    for name, entry in record["losses"].items():
        rows = []
        for s_i, seed in enumerate(settings_of(record)["seeds"]):
            A = entry["A"][s_i]
            sh, df = entry["shared"], entry["different"]
            dot = np.asarray(sh["dot"][s_i])
            ratio = dot[i0] / e0
            dlt = np.asarray(sh["delta_LT"][s_i])
            scale = max(abs(A), 1e-300)
            size = max(record["norm_T"][s_i] ** 2, 1e-300)  # ‖ΔθT‖²: the natural scale of A
            # The rounding of a float64 dot product, divided by ε: 1e-12·‖ΔθS‖‖ΔθT‖/ε.
            dot_floor = 1e-12 * np.asarray(sh["norm_S"][s_i]) * record["norm_T"][s_i] / eps
            zero_branch = abs(A) <= 1e-14 * size
            if zero_branch:
                # Theorem 1's other branch: no first-order alignment, so ΔθS·ΔθT/ε → 0 like ε and L_T does
                # not move at first order: an increase beyond rounding fails (a decrease does not).
                gap = abs(ratio) / size
                like_eps = _first_order(dot / eps, eps, dot_floor, size)
                # Lemma 1 holds here too (ΔθS·ΔθT ≥ 0 at small ε; Theorem 1: = 0): a product below zero by more
                # than rounding (the dot product's, and that of an A this small) fails, even one that is O(ε²).
                ok_sign = ratio >= -(dot_floor[i0] + 1e-14 * size)
                ok_lt = dlt[i0] <= 1e-12 * max(1.0, abs(record["LT0"]["shared"][s_i]))
            else:  # the gap is Lemma 1's O(ε) remainder: small, and vanishing like ε (A itself right)
                gap = abs(ratio - A) / scale
                # the dot product's rounding, A's own, and the cancellation in the student's targets minus its
                # outputs, f(θT0 + εΔθT) − f(θT0): relative u·‖f‖/(ε‖J ΔθT‖), growing like 1/ε (CANCELLATION): a
                # remainder that is exactly 0 (a ReLU net linear in ε there, e.g. one hidden layer's aux logits)
                # is rounding alone, and passes
                floor = dot_floor + 1e-12 * abs(A) + CANCELLATION * abs(A) / eps
                like_eps = _first_order(dot / eps - A, eps, floor, scale)
                ok_sign = ratio >= -gap_tol * scale
                ok_lt = dlt[i0] < 0
            ok_gap = gap <= gap_tol and like_eps["at_eps_min"] <= like_eps["bound"]
            decreasing = np.nonzero(dlt < 0)[0]
            # the largest ε up to which L_T decreases at every grid point (from the smallest up)
            order = np.argsort(eps)
            run_ok = np.cumprod(dlt[order] < 0).astype(bool)
            eps_dec = float(eps[order][run_ok].max()) if run_ok.any() else None
            d_dot = np.asarray(df["dot"][s_i])
            drift = np.asarray(df["change"][s_i]) / max(df["norm_S0"][s_i], 1e-300)
            d_change = drift[i0]
            ctrl_like_eps = _first_order(drift, eps, np.full_like(eps, 1e-12))
            ok_ctrl = d_change <= change_tol and ctrl_like_eps["at_eps_min"] <= ctrl_like_eps["bound"]
            ok = bool(ok_gap and ok_sign and ok_lt and ok_ctrl)
            all_ok &= ok
            rows.append({
                "seed": seed, "A": A, "branch": "A = 0" if zero_branch else "A > 0",
                "norm_T": float(record["norm_T"][s_i]), "ratio": float(ratio), "rel_gap": float(gap),
                "delta_LT": float(dlt[i0]), "cos": float(sh["cos"][s_i][i0]),
                "eps_LT_decreases_up_to": eps_dec, "n_eps_LT_decreases": int(decreasing.size),
                "ctrl_ratio": float(d_dot[i0] / e0), "ctrl_dot": float(d_dot[i0]),
                "ctrl_cos": float(df["cos"][s_i][i0]), "ctrl_delta_LT": float(df["delta_LT"][s_i][i0]),
                "ctrl_change": float(d_change),
                "vanishes_like_eps": {"gap": like_eps, "control": ctrl_like_eps},
                "checks": {"gap": bool(ok_gap), "sign": bool(ok_sign), "LT_decreases": bool(ok_lt),
                           "control_first_order": bool(ok_ctrl)},
                "ok": ok,
            })
        out["losses"][name] = rows
    out["ok"] = bool(all_ok) and any(out["losses"].values())  # no rows checked: not a pass
    precision = settings_of(record).get("precision", "float64")
    if precision != "float64":  # the tolerances are float64's: said with the verdict
        out["precision"] = precision
    return out


def _vanishes_like_eps(values: np.ndarray, eps: np.ndarray, floor: np.ndarray) -> bool:
    """Whether ``values`` (one per ``ε`` of the grid) shrink at least like ``ε`` towards the smallest ``ε₀``:
    ``|v(ε₀)| ≤ 2·(ε₀/ε₁)·|v(ε₁)| + floor(ε₀) + floor(ε₁)·ε₀/ε₁``, with ``ε₁`` the grid's ``ε`` nearest
    ``10·ε₀`` (on a log scale) among those between 5·ε₀ and 10^3.5·ε₀ (:data:`COMPARISON_RANGE`), and
    ``floor`` the values' rounding at each ``ε``. Linear behaviour (``v = cε + O(ε²)``) passes with
    room for the ``O(ε²)`` term (it fails only where ``v(ε₁)`` is under half its linear extrapolation);
    a constant, or ``√ε``, fails by a factor of 5 or 1.6 (at ``ε₁ = 10·ε₀``; ``5/2`` and ``√5/2`` at
    ``5·ε₀``). A grid without such an ``ε₁`` cannot tell: a ``ValueError`` (:func:`check_eps`).

    >>> eps = np.array([1e-6, 1e-5, 1e-4, 1e-3])
    >>> zero = np.zeros(4)
    >>> _vanishes_like_eps(3 * eps + eps**2, eps, zero), _vanishes_like_eps(np.sqrt(eps), eps, zero)
    (True, False)
    >>> _vanishes_like_eps(np.full(4, 1e-3), eps, zero), _vanishes_like_eps(zero, eps, zero)
    (False, True)
    """
    comparison = _first_order(values, eps, floor)
    return bool(comparison["at_eps_min"] <= comparison["bound"])


def _first_order(values: np.ndarray, eps: np.ndarray, floor: np.ndarray, scale: float = 1.0) -> dict[str, float]:
    """The comparison of :func:`_vanishes_like_eps`, as a row records it, in units of ``scale``: ``|v(ε₀)|``
    (``at_eps_min``), ``|v(ε₁)|`` (``at_eps_compare``) and ``bound = 2·(ε₀/ε₁)·|v(ε₁)| + floor(ε₀) +
    floor(ε₁)·ε₀/ε₁``; the values vanish like ``ε`` when ``at_eps_min ≤ bound``."""
    values, eps, floor = np.abs(np.asarray(values, float)), np.asarray(eps, float), np.asarray(floor, float)
    i0 = int(np.argmin(eps))
    i1 = _comparison_index(eps)
    if i1 is None:
        check_eps(eps)  # raises, saying what the grid lacks
    r = eps[i0] / eps[i1]
    bound = 2 * r * values[i1] + floor[i0] + floor[i1] * r
    return {"at_eps_min": float(values[i0] / scale), "at_eps_compare": float(values[i1] / scale),
            "bound": float(bound / scale)}


#: What each of a row's ``checks`` (:func:`summarize`) says when it fails (the verdict line of :func:`format_tables`).
CHECK_NAMES = {"gap": "dot/ε is not A (the gap is above the tolerance, or does not vanish like ε)",
               "sign": "dot/ε is negative", "LT_decreases": "L_T does not decrease (or increases where A = 0)",
               "control_first_order": "the control's step depends on ε at first order"}


def verdict(summary: dict[str, Any]) -> str:
    """The verdict line of a :func:`summarize` summary (the last line of :func:`format_tables`): PASS with
    what held (each branch of Theorem 1 that was checked), or FAIL with each failing row and what failed."""
    rows = [(name, r) for name, rs in summary["losses"].items() for r in rs]
    if not summary["ok"]:
        failed = [f"{name} seed {r['seed']}: {', '.join(CHECK_NAMES[k] for k, v in r['checks'].items() if not v)}"
                  for name, r in rows if not r["ok"]]
        text = "FAIL: the theorem's prediction was not met (the rows marked NO): " + (
            "; ".join(failed) or "no loss setting was checked")
        if summary.get("precision", "float64") != "float64":
            text += (f" (computed in {summary['precision']}: the tolerances are float64's, so rounding alone can fail "
                     "them; run in float64 to check the theorem)")
        return text
    zero = [f"{name} seed {r['seed']}" for name, r in rows if r.get("branch") == "A = 0"]
    held = []
    if len(zero) < len(rows):
        held.append("ΔθS·ΔθT/ε → A > 0 and L_T decreases at small ε with a shared initialisation"
                    + (" (where A > 0)" if zero else ""))
    if zero:
        held.append(f"where A = 0 ({', '.join(zero)}: no first-order alignment, the theorem's other branch, "
                    "ΔθS·ΔθT = 0 for all ε, checked to first order) ΔθS·ΔθT = O(ε²), not below zero, and L_T does "
                    "not increase beyond rounding")
    text = "PASS: " + "; ".join(held) + "; the teacher's step drops out at first order with a different one."
    still = [f"{name} seed {r['seed']}" for name, r in rows if r.get("norm_T", 1.0) == 0]
    if still:
        text += (f" But ΔθT = 0 in {', '.join(still)}: the teacher did not move, so there the check says nothing "
                 "(choose a teacher loss with a gradient at θT0).")
    return text


def theorem_holds(summary: dict[str, Any]) -> bool:
    """Whether every check of :func:`summarize` passed.

    A tiny check passes at the default tolerances, and fails when the gap's tolerance is below its ``O(ε)``
    remainder:

    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import run_theorem_check, summarize, theorem_holds
    >>> rec = run_theorem_check(model=mlp((8,), activation="tanh"), teacher_loss="l2", n_noise=16, seeds=[0],
    ...                         eps=[1e-6, 1e-3], losses=["ce_aux"])
    >>> theorem_holds(summarize(rec)), theorem_holds(summarize(rec, gap_tol=1e-12))
    (True, False)
    """
    return bool(summary["ok"])


def _opt(v) -> str:
    """``v`` as ``1.0e-03``, or ``-`` for None (a table cell)."""
    return "-" if v is None else f"{v:.1e}"


def _sign(v: float) -> str:
    """The sign of ``v`` as one character (a table cell)."""
    return "−" if v < 0 else ("+" if v > 0 else "0")


def format_tables(summary: dict[str, Any]) -> str:
    """One plain-text table per loss setting (rows: seeds) of a :func:`summarize` summary, then the verdict.

    Columns: ``A = E_x[vᵀM(x)v]``, ``ΔθS·ΔθT/ε`` and its relative gap to ``A`` at the smallest ε,
    the change of ``L_T``, the cosine, and the control's ``ΔθS·ΔθT/ε``, cosine, change of ``L_T``
    and drift ``‖ΔθS(ε) − ΔθS(0)‖/‖ΔθS(0)‖`` (protocol.md §2).

    The report of a tiny check (its first line, the end of its one row, the verdict's first word):

    >>> from subliminal_mlp import mlp
    >>> from subliminal_mlp.theory import run_theorem_check, format_tables, summarize
    >>> rec = run_theorem_check(model=mlp((8,), activation="tanh"), teacher_loss="l2", n_noise=16, seeds=[0],
    ...                         eps=[1e-6, 1e-3], losses=["ce_aux"])
    >>> lines = format_tables(summarize(rec)).splitlines()
    >>> print(lines[0]); print(lines[3][-3:], lines[-1].split(":")[0])
    loss setting: ce_aux    (ε_min = 1.0e-06; shared init: θS0 = θT0; control: θS0 ≠ θT0)
    yes PASS
    """
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
    lines.append(f"dot = ΔθS·ΔθT; rel gap = |dot/ε − A|/A (tolerance {summary['gap_tol']:g}; where A = 0, "
                 "|dot/ε|/‖ΔθT‖², which must also vanish like ε); ΔL_T = L_T(θS0+αΔθS) − L_T(θS0);")
    lines.append("L_T↓ to ε = largest ε up to which L_T decreases on the whole grid; cos = cos(ΔθS, ΔθT); all at "
                 "ε_min.")
    lines.append(f"ctrl drift = ‖ΔθS(ε_min)−ΔθS(0)‖/‖ΔθS(0)‖ with a different init (tolerance "
                 f"{summary['change_tol']:g}, and vanishing like ε): the teacher's step enters only at O(ε).")
    lines.append(verdict(summary))
    return "\n".join(lines)


# ----------------------------------------------------------------------------- figure

_COLORS = {"mse_all": "#1f77b4", "mse_aux": "#2ca02c", "ce_all": "#ff7f0e", "ce_aux": "#d62728"}


def _model_caption(s: dict[str, Any]) -> str:
    """The model of a record's settings in words: ``MLP 784→256→256→10+3`` (legacy records too)."""
    m = s.get("model")
    if m is None or (m.get("name") == "mlp" and s.get("hidden_widths") is not None):
        widths = "→".join(str(w) for w in [s["input_dim"], *s["hidden_widths"]])
        act = "" if m is None or m.get("activation", "relu") == "relu" else f" ({m['activation']})"
        return f"MLP {widths}→{s['n_classes']}+{s['aux_logits']}{act}"
    shape = "×".join(str(d) for d in m["input_shape"])
    rest = ", ".join(f"{k} {v}" for k, v in m.items() if k not in ("name", "n_classes", "aux_logits", "input_shape"))
    return f"{m['name']} {shape}→{m['n_classes']}+{m['aux_logits']}" + (f" ({rest})" if rest else "")


def settings_caption(record: dict[str, Any]) -> str:
    """One line describing the settings of a theorem record: model, ``L_T``, inputs, α, ε grid, seeds.

    >>> settings_caption({"config": {"hidden_widths": [256, 256], "input_dim": 784, "n_classes": 10,
    ...     "aux_logits": 3, "teacher_loss": "l2", "teacher_batch": None, "n_noise": 8, "alpha": 1.0,
    ...     "precision": "float64", "seeds": [0]}, "eps": [1e-6, 1.0]})
    'MLP 784→256→256→10+3; L_T = ½‖θ‖²; x = 8 uniform-noise images; α = 1; 2 ε in [1e-06, 1e+00]; float64; seeds [0]'
    """
    s = settings_of(record)
    if s["teacher_loss"] == "ce":
        lt = f"L_T = class cross-entropy on {s['teacher_batch']} MNIST training images"
    elif s["teacher_loss"] == "l2":
        lt = "L_T = ½‖θ‖²"
    else:
        lt = f"L_T = {s['teacher_loss']}"
    eps = record["eps"]
    return (f"{_model_caption(s)}; {lt}; x = {s['n_noise']} uniform-noise images; "
            f"α = {s['alpha']:g}; {len(eps)} ε in [{min(eps):.0e}, {max(eps):.0e}]; {s['precision']}; "
            f"seeds {s['seeds']}")


def plot_theorem(record: dict[str, Any], path: str | os.PathLike):
    """The figure of ``experiments/theorem_single_step.py`` from a :func:`run_theorem_check` record.

    Top row, shared initialisation (Lemma 1 and Theorem 1): (a) ``ΔθS·ΔθT/ε`` against ``ε`` (log–log), one
    line per seed and loss setting, converging to ``A`` (dashed); (b) the relative gap ``|ΔθS·ΔθT/ε − A|/A``,
    which shrinks linearly in ``ε``; (c) the change of ``L_T``. Bottom row, different initialisation:
    (d) ``ΔθS·ΔθT/ε`` and (e) the change of ``L_T`` (symmetric-log axes: both signs occur), (f)
    ``‖ΔθS(ε) − ΔθS(0)‖/‖ΔθS(0)‖`` (the teacher's step enters at first order only).
    """
    import matplotlib.pyplot as plt
    from matplotlib.lines import Line2D

    from ..report.plotting import save_figure

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
    n_seeds = len(settings_of(record)["seeds"])
    ax_a.set(xscale="log", yscale="log", xlabel="ε (teacher's step size)", ylabel="ΔθS·ΔθT / ε",
             title="(a) shared init: ΔθS·ΔθT/ε → A (dashed)")
    ax_g.set(xscale="log", yscale="log", xlabel="ε", ylabel="|ΔθS·ΔθT/ε − A| / A",
             title="(b) shared init: relative gap to A, O(ε)")
    ax_b.set(xscale="log", xlabel="ε", ylabel="L_T(θS0 + αΔθS) − L_T(θS0)",
             title="(c) shared init: change of the teacher's loss L_T")
    ax_c1.set(xscale="log", xlabel="ε", ylabel="ΔθS·ΔθT / ε",
              title="(d) different init: ΔθS·ΔθT/ε, no limit, either sign")
    ax_c2.set(xscale="log", xlabel="ε", ylabel="L_T(θS0 + αΔθS) − L_T(θS0)",
              title="(e) different init: change of L_T, either sign")
    ax_c3.set(xscale="log", yscale="log", xlabel="ε", ylabel="‖ΔθS(ε) − ΔθS(0)‖ / ‖ΔθS(0)‖",
              title="(f) different init: the teacher's step enters at O(ε)")
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
    seeds = f"{n_seeds} seed{'s' if n_seeds != 1 else ''}"
    fig.suptitle(f"Single-step check of Lemma 1 / Theorem 1 (protocol.md §2), {seeds} (one line each): "
                 "one imitation step on noise lowers the teacher's loss only with a shared initialisation",
                 fontsize=11, y=0.99)
    fig.text(0.5, 0.005, settings_caption(record), ha="center", va="bottom", fontsize=8.5)
    fig.tight_layout(rect=(0, 0.02, 1, 0.93))
    return save_figure(fig, path)
