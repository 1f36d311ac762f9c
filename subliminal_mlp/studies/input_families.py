"""What the inputs must be: which distillation inputs carry the transfer (issue 12, item 3).

Figure 10's subliminal student (θ0 distilled on the teacher's m aux logits over U[-1, 1] noise)
is rerun with other distillation inputs, one family at a time, each swept over its setting:

* ``distribution``: i.i.d. pixels, uniform U[-1, 1] (the paper), Gaussian N(0, 1/3) (the same
  variance) or Bernoulli ±1 (random signs, variance 1);
* ``subspace``: U[-1, 1] noise projected onto a random k-dimensional subspace and rescaled to keep
  its power, ``√(784/k)·QQᵀu`` (:func:`~subliminal_mlp.core.inputs.subspace`), k ∈ {10, …, 784};
* ``correlated``: U[-1, 1] noise blurred by a Gaussian of width σ ∈ {0, …, 2} pixels (pixel
  variance kept, :func:`~subliminal_mlp.core.inputs.blurred`), and a phase-randomised surrogate of
  MNIST: the mean amplitude spectrum A(f) of the 60,000 training images (pixels in [-1, 1]) with
  uniformly random phases, the mean (DC) term dropped and scaled so that every image has pixel
  mean 0 and mean square 1/3, that of U[-1, 1]
  (:func:`~subliminal_mlp.core.inputs.phase_randomised`, :func:`~subliminal_mlp.core.inputs.amplitude_spectrum`);
* ``distinct``: only d ∈ {256, …, 60,000} distinct U[-1, 1] images, cycled over the paper's
  60,000 positions per epoch, so the step budget is the paper's (:func:`~subliminal_mlp.core.inputs.cycled`);
* ``scale``: uniform noise in [−s, s], s ∈ {0.1, …, 10}.

Everything else is the paper's protocol (protocol.md §1, a :class:`~subliminal_mlp.core.config.Config`).
For every setting and run i the two aux-only students of Figure 10 are distilled on the same
inputs from the same teacher: ``student_aux`` starts from the teacher's initialisation θ0,
``cross_aux`` from another run's θ0' (the control). The record gives, over the runs, the mean
and 95 % CI (``1.96·std/√n``, :func:`~subliminal_mlp.core.results.mean_ci95`) of each student's
MNIST test accuracy and of the paired **gain** ``g_i = acc(student_aux_i) − acc(cross_aux_i)``
(same run: same teacher, same inputs; only the student's initialisation differs).

**Programs.** Every setting is a value of five hyperparameters (:data:`FUSED_HPARAMS`) of one input
source (:func:`fused_source`): ``cycled(blurred(select_kinds({uniform(scale=s), gaussian, bernoulli,
surrogate, subspace(k)}), σ), d)``, the kind chosen by ``noise_kind``, with σ = 0 the identity
kernel and d = n the identity cycle, so each value computes exactly its family's inputs. Each kind
draws from its own key (:func:`kind_key`; the uniform kind from the run's noise key: its noise is
the paper's, bit for bit), so a setting's numbers do not depend on which program computes it.
:func:`program_groups` splits the settings into programs (:func:`fused_experiment`), their values
swept inside each: by default one per code path (a kind, blurred or not; the subspace family is
one program over k, a d × d random basis masked to its first k columns), each step computing only
its own inputs; with ``fuse=True`` one program for all (one compilation, but every kind, the blur
and the projection are computed at every step, since under ``vmap`` a selection cannot skip a
branch: for tiny configurations, where compiling dominates). A setting that several families
share (U[-1, 1] at σ = 0, d = n, s = 1) is computed once and shown in each. The teachers are
trained once per run (by the first program, or alone first when every program is swept and
``fuse`` is off) and given to every other program. Each family's wall time is recorded: its share of every program (the
program's wall time split evenly over its values, a value shown by several families split among
them).

Example (a tiny configuration, a minute on a laptop; the committed figure uses 10 runs of the
paper's settings, ``experiments/input_families.py``)::

    from subliminal_mlp import Config, load_mnist
    from subliminal_mlp.studies.input_families import (InputFamilySettings, format_input_families_table,
                                                       run_input_families, write_input_families)

    cfg = Config(n_runs=2, hidden_widths=(32,), n_noise=2048, batch_size=512, teacher_epochs=1, student_epochs=1)
    settings = InputFamilySettings(subspace_k=(10,), distinct=(256, 2048), scales=(0.3, 1.0))
    record = run_input_families(cfg, load_mnist(), settings)
    print(format_input_families_table(record))       # student, cross-model and gain per setting
    write_input_families(record, "results")          # results/input_families.{json,csv,png}
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import jax.numpy as jnp
import numpy as np

from ..core import engine, inputs
from ..core.config import Config, ConfigError, is_integer, is_sequence
from ..core.engine import Experiment
from ..core.results import data_record, envelope, format_ci, register_format, summary, write_record
from ..core.students import FIGURE10
from .figure10 import config_students, experiment_from_config

FORMAT = "subliminal-mlp/input-families"
register_format(FORMAT, 1)
#: The families, in the record's (and the figure's) order.
FAMILIES = ("distribution", "subspace", "correlated", "distinct", "scale")
#: The noise kinds of the fused program (the hyperparameter ``noise_kind`` is the index).
KINDS = ("uniform", "gaussian", "bernoulli", "spectrum", "subspace")
#: The two students of every setting: Figure 10's aux-only student and its cross-model control.
STUDENTS = tuple(s for s in FIGURE10 if s.name in ("student_aux", "cross_aux"))
#: How each kind is described in the record.
KIND_TEXT = {"uniform": "uniform U[-1, 1]", "gaussian": "Gaussian N(0, 1/3)", "bernoulli": "Bernoulli ±1",
             "spectrum": "MNIST amplitude spectrum, random phases", "subspace": "U[-1, 1] in a random subspace"}
#: Per family: panel title, x-axis label, and how its settings are spaced ("geometric" or "categorical").
FAMILY_AXES = {
    "distribution": ("i.i.d. pixel distribution", "distribution of each pixel", "categorical"),
    "subspace": ("noise in a random k-dimensional subspace", "subspace dimension k (of 784)", "geometric"),
    "correlated": ("spatially correlated noise", "Gaussian blur σ (pixels), or MNIST's spectrum", "categorical"),
    "distinct": ("distinct noise images at the paper's step budget",
                 "distinct images d (of 60,000 positions per epoch)", "geometric"),
    "scale": ("noise scale: uniform in [−s, s]", "scale s", "geometric"),
}
#: The side of the images the blur and the surrogate work on (MNIST's 28 × 28).
SIDE = 28


def _ints(name: str, values, low: int) -> tuple[int, ...]:
    values = tuple(values) if is_sequence(values) else values  # a list, tuple, range or 1-d array
    if not isinstance(values, tuple) or not values:
        raise ConfigError(f"{name} = {values!r} is invalid: give a non-empty list of integers >= {low}.")
    if any(not is_integer(v, low, numpy=True) for v in values):
        raise ConfigError(f"{name} = {list(values)!r} is invalid: every value must be an integer >= {low}.")
    if len(set(values)) != len(values):
        raise ConfigError(f"{name} = {list(values)!r} repeats a value.")
    return tuple(int(v) for v in values)


def _floats(name: str, values, positive: bool) -> tuple[float, ...]:
    values = tuple(values) if is_sequence(values) else values
    ok = isinstance(values, tuple) and values and all(
        isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool) and math.isfinite(v)
        and (v > 0 if positive else v >= 0) for v in values)
    if not ok:
        raise ConfigError(f"{name} = {values!r} is invalid: give a non-empty list of finite numbers "
                          f"{'> 0' if positive else '>= 0'}.")
    if len(set(float(v) for v in values)) != len(values):
        raise ConfigError(f"{name} = {list(values)!r} repeats a value.")
    return tuple(float(v) for v in values)


@dataclasses.dataclass(frozen=True)
class InputFamilySettings:
    """Which families run and their swept values (the rest of the protocol is a :class:`Config`).

    ``families``: a subset of :data:`FAMILIES`; ``distributions``: of ``"uniform"`` (U[-1, 1]),
    ``"gaussian"`` (N(0, 1/3), U[-1, 1]'s variance), ``"bernoulli"`` (±1); ``subspace_k``: the
    dimensions k (at most the input dimension); ``blur_sigmas``: blur widths σ >= 0 in pixels;
    ``spectrum``: add the phase-randomised MNIST surrogate to the correlated family; ``distinct``:
    numbers of distinct noise images (at most ``Config.n_noise``, the positions per epoch);
    ``scales``: half-widths s > 0 of uniform noise in [−s, s]. Invalid values raise
    :class:`~subliminal_mlp.core.config.ConfigError` at construction (:meth:`check`: against a Config).
    """

    families: tuple = FAMILIES
    distributions: tuple = ("uniform", "gaussian", "bernoulli")
    subspace_k: tuple = (10, 30, 100, 300, 784)
    blur_sigmas: tuple = (0.0, 0.5, 1.0, 2.0)
    spectrum: bool = True
    distinct: tuple = (256, 1024, 4096, 16384, 60_000)
    scales: tuple = (0.1, 0.3, 1.0, 3.0, 10.0)

    def __post_init__(self) -> None:
        fams, dists = (tuple(v) if is_sequence(v) else v for v in (self.families, self.distributions))
        if (not isinstance(fams, tuple) or not fams or any(f not in FAMILIES for f in fams)
                or len(set(fams)) != len(fams)):
            raise ConfigError(f"families = {fams!r} is invalid: give distinct names from {FAMILIES}.")
        if (not isinstance(dists, tuple) or not dists or any(d not in KINDS[:3] for d in dists)
                or len(set(dists)) != len(dists)):
            raise ConfigError(f"distributions = {dists!r} is invalid: give distinct names from {KINDS[:3]}.")
        if not isinstance(self.spectrum, bool):
            raise ConfigError(f"spectrum = {self.spectrum!r} is invalid: give True or False.")
        object.__setattr__(self, "families", tuple(f for f in FAMILIES if f in fams))
        object.__setattr__(self, "distributions", tuple(dists))
        object.__setattr__(self, "subspace_k", _ints("subspace_k", self.subspace_k, 1))
        object.__setattr__(self, "distinct", _ints("distinct", self.distinct, 1))
        object.__setattr__(self, "blur_sigmas", _floats("blur_sigmas", self.blur_sigmas, positive=False))
        object.__setattr__(self, "scales", _floats("scales", self.scales, positive=True))

    def check(self, cfg: Config) -> None:
        """Raise :class:`ConfigError` if these settings do not fit ``cfg`` (before any compute)."""
        if "subspace" in self.families and max(self.subspace_k) > cfg.input_dim:
            raise ConfigError(f"subspace_k = {list(self.subspace_k)}: k must be at most the input dimension "
                              f"{cfg.input_dim}.")
        if "distinct" in self.families and max(self.distinct) > cfg.n_noise:
            raise ConfigError(f"distinct = {list(self.distinct)}: at most n_noise = {cfg.n_noise} distinct images "
                              "(the positions per epoch); lower them or raise n_noise.")
        if "correlated" in self.families and cfg.input_dim != SIDE * SIDE:
            raise ConfigError(f"the correlated family blurs {SIDE} × {SIDE} images, but input_dim = {cfg.input_dim}: "
                              "leave it out of families.")
        if cfg.student_inputs != "uniform" or cfg.input_mix != Config.input_mix:
            raise ConfigError(f"student_inputs = {cfg.student_inputs!r}: this study sets the distillation inputs "
                              "itself; leave student_inputs and input_mix at their defaults.")
        if cfg.init_noise != 0:
            raise ConfigError(f"init_noise = {cfg.init_noise!r}: the students start from θ0 and θ0' exactly here; "
                              "leave init_noise at 0.")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists for tuples)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "InputFamilySettings":
        """Inverse of :meth:`to_dict`."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class Row(NamedTuple):
    """One setting of one family: what the record shows, and what computes it.

    ``hp``: its hyperparameters (:data:`FUSED_HPARAMS`: ``noise_kind``, ``noise_scale``,
    ``blur_sigma``, ``distinct``, ``subspace_k``); rows with equal ``hp`` are one computation.
    """

    family: str
    label: str
    value: Any
    inputs: str
    hp: tuple


def rows(cfg: Config, settings: InputFamilySettings) -> list[Row]:
    """Every setting of every family in ``settings.families``, in the record's order."""
    n, dim = cfg.n_noise, float(cfg.input_dim)
    out: list[Row] = []
    for fam in settings.families:
        if fam == "distribution":
            out += [Row(fam, d, d, KIND_TEXT[d], (float(KINDS.index(d)), 1.0, 0.0, float(n), dim))
                    for d in settings.distributions]
        elif fam == "subspace":
            out += [Row(fam, f"{k}", k, f"U[-1, 1] in a random {k}-dimensional subspace, √({dim}/k)·QQᵀu",
                        (float(KINDS.index("subspace")), 1.0, 0.0, float(n), float(k))) for k in settings.subspace_k]
        elif fam == "correlated":
            out += [Row(fam, f"σ = {s:g}", s, f"U[-1, 1] blurred, Gaussian σ = {s:g} px (variance kept)",
                        (0.0, 1.0, s, float(n), dim)) for s in settings.blur_sigmas]
            if settings.spectrum:
                out.append(Row(fam, "MNIST spectrum", None, KIND_TEXT["spectrum"] + ", mean 0, mean square 1/3",
                               (float(KINDS.index("spectrum")), 1.0, 0.0, float(n), dim)))
        elif fam == "distinct":
            out += [Row(fam, f"{d}", d, f"U[-1, 1], {d} distinct images cycled over {n} positions",
                        (0.0, 1.0, 0.0, float(d), dim)) for d in settings.distinct]
        elif fam == "scale":
            out += [Row(fam, f"{s:g}", s, f"uniform in [−{s:g}, {s:g}]", (0.0, s, 0.0, float(n), dim))
                    for s in settings.scales]
    return out


#: The fused program's hyperparameters, in :class:`Row`'s ``hp`` order.
FUSED_HPARAMS = ("noise_kind", "noise_scale", "blur_sigma", "distinct", "subspace_k")
#: Noise kind k > 0 draws from the key ``fold_in(fold_in(run's noise key, KIND_STREAM), k)``; kind 0
#: (uniform) from the run's noise key itself, so its noise is the paper's. A stream constant in
#: [2³¹, 2³²) (see :mod:`subliminal_mlp.core.inputs`): no noise example's key.
KIND_STREAM = 0xFFFF_FFFD


def kind_key(key, k: int):
    """The key noise kind ``k`` draws from (:data:`KIND_STREAM`), whichever kinds share its program."""
    import jax

    return key if k == 0 else jax.random.fold_in(jax.random.fold_in(key, KIND_STREAM), k)


def select_kinds(sources: dict[int, inputs.InputSource], n: int) -> inputs.InputSource:
    """Example j of kind ``hp["noise_kind"]``: ``Σ_k [noise_kind = k] · source_k(j)``.

    Each kind draws from :func:`kind_key` of the run's key, so a kind's examples are the same
    whether it runs alone or beside others (the other kinds add exact zeros). Under ``vmap`` every
    kind is drawn for every batch.
    """
    kinds = sorted(sources)

    def prepare(key, arrays, hp):
        return {k: sources[k].prepare(kind_key(key, k), arrays[str(k)], hp) for k in kinds}

    def draw(ctx, idx, hp):
        if len(kinds) == 1:
            return sources[kinds[0]].draw(ctx[kinds[0]], idx, hp)
        which = jnp.round(jnp.asarray(hp["noise_kind"]))
        return sum(jnp.where(which == k, sources[k].draw(ctx[k], idx, hp), 0.0) for k in kinds)

    return inputs.InputSource(n=n, draw=draw, prepare=prepare, arrays={str(k): sources[k].arrays for k in kinds},
                              name="kinds", settings={"kinds": [KINDS[k] for k in kinds], "select": "noise_kind"})


def _base(cfg: Config) -> Experiment:
    return experiment_from_config(cfg).replace(students=config_students(cfg, STUDENTS))


def fused_source(cfg: Config, values: Sequence[tuple], amplitude=None) -> inputs.InputSource:
    """The input source of :func:`fused_experiment` for the hyperparameter tuples ``values``.

    Only the kinds, the blur and the cycling that some value needs are built in:
    ``cycled(blurred(select_kinds(kinds), "blur_sigma"), "distinct")``.
    """
    n = cfg.n_noise
    kinds = sorted({int(round(v[0])) for v in values})
    make = {0: lambda: inputs.uniform(n, scale="noise_scale", shape=(cfg.input_dim,)),
            1: lambda: inputs.gaussian(n, shape=(cfg.input_dim,)),
            2: lambda: inputs.bernoulli(n, shape=(cfg.input_dim,)),
            3: lambda: inputs.phase_randomised(n, amplitude, side=SIDE),
            4: lambda: inputs.subspace("subspace_k", inputs.uniform(n, shape=(cfg.input_dim,)))}
    if 3 in kinds and amplitude is None:
        raise ConfigError("the MNIST-spectrum surrogate needs the amplitude spectrum (inputs.amplitude_spectrum).")
    src = select_kinds({k: make[k]() for k in kinds}, n)
    sigmas = {v[2] for v in values}
    if sigmas != {0.0}:
        src = inputs.blurred("blur_sigma", src, side=SIDE, radius=max(1, math.ceil(3 * max(sigmas))))
    if {v[3] for v in values} != {float(n)}:
        src = inputs.cycled(src, "distinct")
    return src


def fused_experiment(cfg: Config, values: Sequence[tuple], amplitude=None) -> tuple[Experiment, dict[str, list]]:
    """``(experiment, sweep)``: settings of any of the families (distribution, correlated, subspace, distinct, scale)
    as one program.

    ``values`` are distinct hyperparameter tuples (:data:`FUSED_HPARAMS`); the sweep zips them.
    ``amplitude``: the target amplitude spectrum of the surrogate (when a value uses it).
    """
    exp = _base(cfg)
    hp = {**exp.hparams, "noise_kind": 0.0, "noise_scale": 1.0, "blur_sigma": 0.0, "distinct": float(cfg.n_noise),
          "subspace_k": float(cfg.input_dim)}
    exp = exp.replace(inputs=fused_source(cfg, values, amplitude), hparams=hp)
    return exp, {name: [v[i] for v in values] for i, name in enumerate(FUSED_HPARAMS)}


def program_groups(values: Sequence[tuple], fuse: bool) -> dict[str, list[tuple]]:
    """The programs that compute the settings ``values`` (hyperparameter tuples): ``{name: [tuples]}``.

    ``fuse=True``: one program for all (the fewest compilations; every kind, the blur, the cycling
    and the subspace projection are computed at every step). ``fuse=False``: one program per code
    path (a noise kind, blurred or not), each computing only what its settings need.
    """
    if fuse:
        return {"fused": list(values)} if values else {}
    groups: dict[str, list[tuple]] = {}
    for v in values:
        name = KINDS[int(round(v[0]))] + ("_blurred" if v[2] > 0 else "")
        groups.setdefault(name, []).append(v)
    return groups


def _paired(result, v: int) -> dict[str, Any]:
    s, c = result.accuracy("student_aux", v), result.accuracy("cross_aux", v)
    return {"student_aux": summary(s), "cross_aux": summary(c), "gain": summary(s - c)}


def run_input_families(cfg: Config, data, settings: InputFamilySettings = InputFamilySettings(), *,
                       fuse: bool = False, progress: bool = False,
                       log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run every family of ``settings`` on ``data`` (MNIST) with ``cfg``'s protocol; return the record.

    ``fuse``: the programs of the settings (:func:`program_groups`): one per code path
    (default: each step computes only its own inputs) or one for all (fewer compilations, slower
    steps: for tiny configurations, where compiling dominates). The numbers are the same either
    way up to float rounding (each kind draws from its own key). Everything is validated before compute. Returns a JSON-ready record (the envelope of
    :mod:`~subliminal_mlp.core.results`, format ``subliminal-mlp/input-families``, version 1) with
    this payload::

        "input_settings": {...InputFamilySettings...},
        "families": {family: {"title", "x_label", "axis", "wall_s",
                              "settings": [{"label", "value", "inputs", "program",
                                            "student_aux" | "cross_aux" | "gain":
                                                {"mean", "ci95", "values": [one per run]},
                                            "health"}]}},
        "programs": [{"name", "inputs", "labels", "compile_s", "run_s", "wall_s", "teacher_cache"}],
        "fuse": false,
        "teacher": {"accuracy": {...}}, "reference": {"accuracy": {...}},
        "spectrum": {"amplitude": [[28 × 28]], "source": ..., "std": ...},   # when the surrogate ran
        "chance": 0.1, "health": {...}                                       # every program's, merged

    ``timing`` holds the whole call's wall time (``total_s``) and the programs' compile and run times.
    A family's ``wall_s`` is its share of the programs' wall times: each program's split evenly over
    its values (a value several families show, split among them), a teachers-only program's over
    every value; the families' times add up to the programs'.
    """
    t_start = time.perf_counter()
    settings.check(cfg)
    cfg.check_dataset(data)
    table = rows(cfg, settings)
    values = list(dict.fromkeys(r.hp for r in table))
    amplitude = None
    if any(int(v[0]) == KINDS.index("spectrum") for v in values):
        amplitude = inputs.amplitude_spectrum(data.train_images, SIDE)
    task = engine.Task.from_dataset(data)
    programs: list[dict[str, Any]] = []
    results: dict[Any, tuple[int, Any, int]] = {}  # row key -> (program index, result, value index)
    teachers = None

    def run(exp, sweep, labels):
        nonlocal teachers
        log(f"{exp.name}: {len(labels)} setting(s) × {cfg.n_runs} runs")
        t0 = time.perf_counter()
        result = engine.run(exp, task, n_runs=cfg.n_runs, seed=cfg.seed, sweep=sweep, run_batch=cfg.run_batch,
                            progress=progress, log=log, teachers=teachers, keep_teachers=teachers is None)
        if teachers is None:
            teachers = result.teachers
        programs.append({"name": exp.name, "inputs": exp.inputs.describe(), "labels": labels,
                         "compile_s": result.compile_s, "run_s": result.run_s,
                         "wall_s": time.perf_counter() - t0, "teacher_cache": result.teacher_cache})
        return result

    # The programs, fewest values first: the first trains the teachers and every later one is given
    # them. A swept program would train one copy per value (the same key and data: identical), so
    # unless every program is swept and fuse asks for the fewest compilations, they are trained
    # alone first.
    plan = []
    for name, group in program_groups(values, fuse).items():
        exp, sweep = fused_experiment(cfg, group, amplitude)
        labels = [" / ".join(f"{r.family}: {r.label}" for r in table if r.hp == v) for v in group]
        plan.append((exp.replace(name=f"input_families:{name}"), sweep, labels,
                     {r: group.index(r.hp) for r in table if r.hp in group}))
    plan.sort(key=lambda p: len(p[2]))
    if len(plan[0][2]) > 1 and cfg.teacher_epochs > 0 and not fuse:
        run(_base(cfg).replace(student_epochs=0, name="input_families:teachers"), None, [])
    first = None
    for exp, sweep, labels, where in plan:
        res = run(exp, sweep, labels)
        first = first or res
        for r, v in where.items():
            results[r] = (len(programs) - 1, res, v)

    # Wall time per family: its share of each program (split evenly over the program's values, a
    # value shown by several families split among them). A teachers-only program serves every
    # value: its time is split evenly over all of them, so the families' times add up to the programs'.
    shares: dict[str, float] = {f: 0.0 for f in settings.families}
    fams_of: dict[tuple[int, int], list[str]] = {}  # (program, value) -> the families showing it
    for r, (p, _, v) in results.items():
        fams_of.setdefault((p, v), []).append(r.family)
    for p_index, prog in enumerate(programs):
        served = [pv for pv in fams_of if pv[0] == p_index] or list(fams_of)
        for pv in served:
            for f in fams_of[pv]:
                shares[f] += prog["wall_s"] / len(served) / len(fams_of[pv])

    families: dict[str, Any] = {}
    merged = {"ok": True, "nonfinite": [], "teacher_not_better": first.health(0)["teacher_not_better"],
              "teacher_margin": first.health(0)["teacher_margin"]}
    for fam in settings.families:
        title, x_label, axis = FAMILY_AXES[fam]
        x_label = x_label.replace("784", f"{cfg.input_dim}").replace("60,000", f"{cfg.n_noise:,}")
        entries = []
        for r in (r for r in table if r.family == fam):
            p, res, v = results[r]
            h = res.health(v)
            merged["nonfinite"] += [[run_, f"{fam} {r.label}: {model}"] for run_, model in h["nonfinite"]]
            entries.append({"label": r.label, "value": r.value, "inputs": r.inputs, "program": p,
                            **_paired(res, v), "health": h})
        families[fam] = {"title": title, "x_label": x_label, "axis": axis, "wall_s": shares[fam],
                         "settings": entries}
    merged["ok"] = not merged["nonfinite"] and not merged["teacher_not_better"]
    payload: dict[str, Any] = {}
    if amplitude is not None:
        payload["spectrum"] = {
            "source": f"mean |fft2| of the {data.train_images.shape[0]} {cfg.dataset} training images in [-1, 1]",
            "std": (1.0 / 3.0) ** 0.5, "dc": "dropped (every surrogate image has mean 0)",
            "amplitude": np.asarray(amplitude, np.float64).round(6).tolist()}
    compile_s = sum(p["compile_s"] for p in programs)
    run_s = sum(p["run_s"] for p in programs)
    return envelope(
        FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed, data=data_record(data, name=cfg.dataset),
        devices=first.devices, timing={"compile_s": compile_s, "run_s": run_s,
                                       "total_s": time.perf_counter() - t_start},
        environment_extra={"run_batch": first.run_batch},
        input_settings=settings.to_dict(), fuse=fuse, families=families, programs=programs,
        teacher={"accuracy": summary(first.accuracy("teacher"))},
        reference={"accuracy": summary(first.accuracy("reference"))},
        **payload, chance=1.0 / cfg.n_classes, health=merged)


def format_input_families_table(record: dict[str, Any]) -> str:
    """Per family and setting: student (aux), cross-model (aux) and the paired gain, mean ± 95 % CI."""
    head = f"{'family':<13} {'setting':<16} {'student aux':>15} {'cross aux':>15} {'gain':>16}"
    lines = [head, "-" * len(head)]
    for fam, f in record["families"].items():
        for s in f["settings"]:
            cells = [f"{s[k]['mean']:.3f} ± {format_ci(s[k]['ci95'], 3)}" for k in ("student_aux", "cross_aux")]
            g = s["gain"]
            lines.append(f"{fam:<13} {s['label']:<16} {cells[0]:>15} {cells[1]:>15} "
                         f"{g['mean']:>+8.3f} ± {format_ci(g['ci95'], 3)}")
        lines.append(f"{'':<13} wall time {f['wall_s'] / 60:.1f} min")
    t = record["teacher"]["accuracy"]
    lines.append(f"teacher {t['mean']:.3f} ± {format_ci(t['ci95'], 3)}; chance {record['chance']:.2f}")
    return "\n".join(lines)


def plot_input_families(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """One panel per family: the aux-only student, its cross-model control and the paired gain
    (student − cross) against the family's setting, mean ± 95 % CI over the runs; chance dotted."""
    from ..report.plotting import COLORS, plt, save_figure, settings_caption

    fams = list(record["families"])
    ncol = 3
    nrow = -(-(len(fams) + 1) // ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(5.2 * ncol, 3.9 * nrow), squeeze=False)
    axes = axes.ravel()
    series = (("student_aux", "student, aux only (shared θ0)", COLORS["student_aux"], "o", "-"),
              ("cross_aux", "cross-model, aux only (θ0')", COLORS["cross_aux"], "s", "-"),
              ("gain", "gain = student − cross (paired)", "black", "D", "--"))
    teacher = record["teacher"]["accuracy"]["mean"]
    for ax, fam in zip(axes, fams):
        f = record["families"][fam]
        # Evenly spaced settings (the numeric sweeps are roughly geometric: the spacing reads as a log axis).
        x = np.arange(len(f["settings"]), dtype=float)
        for j, (key, label, color, marker, ls) in enumerate(series):
            mean = np.asarray([s[key]["mean"] for s in f["settings"]])
            ci = np.asarray([s[key]["ci95"] or 0.0 for s in f["settings"]])
            ax.errorbar(x + 0.07 * (j - 1), mean, yerr=ci, color=color, marker=marker, ms=4, ls=ls, lw=1.2,
                        capsize=3, label=label)  # shifted a little: the error bars stay apart
        ax.axhline(record["chance"], color="black", ls=":", lw=1)
        ax.axhline(0, color="#cccccc", lw=0.8)
        ax.set_xlim(-0.5, len(x) - 0.5)
        ax.set_xticks(x, [s["label"] for s in f["settings"]], fontsize=8)
        ax.set_ylim(-0.15, 1.0)
        ax.set_xlabel(f["x_label"], fontsize=8.5)
        ax.set_ylabel("MNIST test accuracy / gain", fontsize=8.5)
        ax.set_title(f"{f['title']} ({f['wall_s'] / 60:.1f} min)", fontsize=9.5)
        ax.spines[["top", "right"]].set_visible(False)
    legend_ax = axes[len(fams)]
    handles, names = axes[0].get_legend_handles_labels()
    legend_ax.axis("off")
    legend_ax.legend(handles, names, loc="upper left", fontsize=9, frameon=False)
    legend_ax.text(0.0, 0.45, f"dotted: chance ({record['chance']:.2f})\nteacher: {teacher:.3f}\n"
                              "error bars: 95 % CI over the runs", fontsize=9, va="top",
                   transform=legend_ax.transAxes)
    for ax in axes[len(fams) + 1:]:
        ax.axis("off")
    cfg = record["config"]
    fig.suptitle("What the inputs must be: subliminal transfer (aux logits only) against the distillation inputs",
                 fontsize=11)
    fig.text(0.5, -0.01, settings_caption(cfg, record["n_runs"]).replace(f"{cfg['n_noise']} noise images",
                                                                         f"{cfg['n_noise']} inputs per epoch"),
             ha="center", va="top", fontsize=7.5)
    fig.tight_layout()
    return save_figure(fig, path, record=record)


def _csv_rows(record: dict[str, Any]) -> tuple[list[str], list[list]]:
    out = []
    for fam, f in record["families"].items():
        for s in f["settings"]:
            for i, (a, c, g) in enumerate(zip(s["student_aux"]["values"], s["cross_aux"]["values"],
                                              s["gain"]["values"])):
                out.append([fam, s["label"], "" if s["value"] is None else s["value"], i, f"{a:.6f}", f"{c:.6f}",
                            f"{g:.6f}"])
    return ["family", "setting", "value", "run", "student_aux", "cross_aux", "gain"], out


def write_input_families(record: dict[str, Any], out_dir: str | os.PathLike,
                         stem: str = "input_families") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (one row per family, setting and run) and ``<stem>.png`` atomically."""
    return write_record(record, out_dir, stem, csv=_csv_rows(record), indent=1, figure=plot_input_families)

