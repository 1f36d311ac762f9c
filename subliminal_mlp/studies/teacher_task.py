"""What the teacher's task must be: its number of classes, its training, the student's, and generations.

Four questions about Figure 10's aux-only student (protocol.md §1; issue 12, item 4). Each part
varies one setting of the paper's protocol and keeps the others. Every setting runs ``n_runs``
runs of two students: ``student_aux``, distilled from the teacher's initialisation θ0, and its
control ``cross_aux``, the same student started from another run's θ0 (Figure 10's
``student_aux`` and ``cross_aux``). Both imitate only the teacher's m auxiliary logits on noise.

* **(a) classes** K ∈ :attr:`TeacherTaskSettings.classes`: the teacher learns digits 0..K−1
  (``Task.from_dataset(data, classes=range(K))``, a model with K class logits and m aux logits).
  Everything is scored on the test images of those K digits, so chance is 1/K. Per setting the
  record gives the paired gain over the control (``student_aux − cross_aux`` per run), the
  accuracy above chance (``acc − 1/K``) and that gain normalised by its range,
  ``(acc − 1/K)/(1 − 1/K)`` (0 at chance, 1 for a perfect classifier).
* **(b) teacher epochs** ∈ :attr:`TeacherTaskSettings.teacher_epochs`, at the config's student epochs.
* **(c) student epochs** ∈ :attr:`TeacherTaskSettings.student_epochs`, at the config's teacher
  epochs, with the baseline's trained teachers (``engine.run(..., teachers=...)``). One program
  distils for the largest value and measures both students' test accuracy at the start of every
  epoch inside the loop (an engine ``trace``, :func:`epoch_accuracy`). Epoch e's batches depend
  only on the run's key and e (``fold_in(student_shuffle key, e)``), so the student after e epochs
  of that run *is* the student trained for e epochs; the record compares the traced value at the
  config's student epochs with the baseline's separately trained students
  (``parts.student_epochs.check``).
* **(d) generations** g = 1..G: generation 1 is the ordinary student of the teacher; the
  shared-init student of generation g−1 is the teacher of generation g. Each generation starts
  again from θ0 and is distilled on the previous generation's aux logits over a *fresh* noise set:
  generation 1 uses the run's noise key (the paper's set), generation g ≥ 2 the key
  ``fold_in(fold_in(noise key, GENERATION_STREAM), g)`` (:func:`fresh_noise`). The images are
  still drawn by index inside the step and never stored; the batch order (the run's
  ``student_shuffle`` key) is the same in every generation, the images are not. Generation g's
  control is another run's θ0 distilled on the same teacher and noise. The decay of
  ``acc_g − chance`` is fitted by :func:`fit_decay`: ``acc_g − chance ≈ a·r^g`` by least squares
  on the logarithm, per run (r with a 95 % CI across runs) and on the means.

The setting at the config's values (K = ``n_classes``, its teacher and student epochs,
generation 1) is computed once and shared by parts (a), (b) and (d) (``"shared": true`` in the
record). Every other setting of (a) and (b) is one :func:`engine.run` (one compiled program each:
K and the epochs change shapes or code). The shared-init student's trained parameters leave the program
(``engine.run(..., keep_students=True)``) and are the next generation's teachers (:func:`next_teachers`);
all generations from the second share one program (the generation index is a traced hyperparameter).

Example (a tiny run on MNIST, about a minute on 2 CPU cores)::

    from subliminal_mlp import Config, load_mnist
    from subliminal_mlp.studies.teacher_task import (TeacherTaskSettings, format_teacher_task_table,
                                                     run_teacher_task, write_teacher_task)

    cfg = Config(hidden_widths=(32,), n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=2048,
                 batch_size=512)
    settings = TeacherTaskSettings(classes=(2, 10), teacher_epochs=(1, 2), student_epochs=(1, 2), generations=3)
    record = run_teacher_task(cfg, load_mnist(), settings)
    print(format_teacher_task_table(record))
    write_teacher_task(record, "out")   # out/teacher_task.json, .csv, .png
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core import engine
from ..core.config import Config, ConfigError, is_integer
from ..core.engine import Experiment, RunModels
from ..core.inputs import InputSource, resolve
from ..core.model import accuracy, stack_params
from ..core.results import (DivergenceWarning, data_record, envelope, format_ci, format_health, health,
                            mean_ci95, register_format, summary, write_record)
from ..core.students import Student
from .figure10 import config_students, experiment_from_config

FORMAT = "subliminal-mlp/teacher-task"
FORMAT_VERSION = 1
register_format(FORMAT, FORMAT_VERSION)  # also listed in results.FORMATS, so read_results needs no import of this
#: The two students of every setting (Figure 10's aux-only student and its cross-model control).
STUDENTS = ("student_aux", "cross_aux")
#: The models every setting evaluates, in the record's order.
MODELS = ("reference", "teacher", *STUDENTS)
#: The four parts, in the record's (and the figure's) order.
PARTS = ("classes", "teacher_epochs", "student_epochs", "generations")
#: The largest number of classes (MNIST's digits).
MAX_CLASSES = 10
#: The key stream of the generations' noise: generation g ≥ 2 draws from
#: ``fold_in(fold_in(noise key, GENERATION_STREAM), g)``. A stream constant in [2³¹, 2³²) (see
#: :mod:`subliminal_mlp.core.inputs`), so it is no example's key (example j of a set is drawn from
#: ``fold_in(noise key, j)``, j < 2³¹).
GENERATION_STREAM = 0xFFFF_FFFC
#: The hyperparameter holding the generation index (traced, so that generations share a program).
GENERATION = "generation"


def _int_values(name: str, values, low: int, high: Optional[int] = None) -> tuple[int, ...]:
    try:
        values = tuple(values)
    except TypeError:
        raise ConfigError(f"{name} = {values!r} is invalid: give a list of integers.") from None
    bad = [v for v in values if not is_integer(v, low, high, numpy=True)]
    if not values or bad:
        bound = f"in {low}..{high}" if high is not None else f">= {low}"
        raise ConfigError(f"{name} = {list(values)!r} is invalid: give one or more integers {bound}"
                          + (f" ({bad} {'is' if len(bad) == 1 else 'are'} not)." if bad else "."))
    if len(set(values)) != len(values):
        raise ConfigError(f"{name} = {list(values)!r} is invalid: a value is repeated.")
    return tuple(sorted(int(v) for v in values))


@dataclasses.dataclass(frozen=True)
class TeacherTaskSettings:
    """The values each part varies (the rest of the protocol is a :class:`~subliminal_mlp.core.config.Config`).

    ``classes``: the numbers of classes K of part (a), each in 2..10; ``teacher_epochs``: part
    (b)'s teacher epochs (each >= 1); ``student_epochs``: part (c)'s student epochs (each >= 1);
    ``generations``: G of part (d), the number of student generations (>= 1; the decay is fitted
    from G >= 2). Values are kept sorted; invalid ones raise :class:`ConfigError` at construction.
    """

    classes: tuple[int, ...] = (2, 3, 4, 5, 6, 7, 8, 9, 10)
    teacher_epochs: tuple[int, ...] = (1, 2, 5, 10, 20)
    student_epochs: tuple[int, ...] = (1, 2, 5, 10, 20, 40)
    generations: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", _int_values("classes", self.classes, 2, MAX_CLASSES))
        object.__setattr__(self, "teacher_epochs", _int_values("teacher_epochs", self.teacher_epochs, 1))
        object.__setattr__(self, "student_epochs", _int_values("student_epochs", self.student_epochs, 1))
        g = self.generations
        if not is_integer(g, 1, numpy=True):
            raise ConfigError(f"generations = {g!r} is invalid: it must be an integer >= 1 (generation 1 is the "
                              "ordinary student of the teacher).")
        object.__setattr__(self, "generations", int(g))

    def check(self, cfg: Config) -> None:
        """Raise :class:`ConfigError` if these settings do not fit ``cfg`` (before any compute)."""
        if cfg.n_classes > MAX_CLASSES:
            raise ConfigError(f"n_classes = {cfg.n_classes} is invalid here: the baseline task has at most "
                              f"{MAX_CLASSES} classes (digits 0..{MAX_CLASSES - 1}).")
        if cfg.teacher_epochs < 1 or cfg.student_epochs < 1:
            raise ConfigError(f"teacher_epochs = {cfg.teacher_epochs}, student_epochs = {cfg.student_epochs}: both "
                              "must be >= 1 (an untrained teacher or student answers none of these questions).")
        if cfg.student_inputs not in ("uniform", "gaussian"):
            raise ConfigError(f"student_inputs = {cfg.student_inputs!r}: the generations need a fresh noise set "
                              "each, so the students' inputs must be noise ('uniform' or 'gaussian').")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready values (lists)."""
        return {"classes": list(self.classes), "teacher_epochs": list(self.teacher_epochs),
                "student_epochs": list(self.student_epochs), "generations": self.generations}


# ----------------------------------------------------------------------------- the experiment values


def students(cfg: Config) -> tuple[Student, ...]:
    """The student table of every setting: :data:`STUDENTS` with ``cfg``'s variants (loss, init noise)."""
    return config_students(cfg, [Student("student_aux", "own", "aux"), Student("cross_aux", "cross", "aux")])


def next_teachers(result: engine.Result, name: str = "student_aux") -> Any:
    """The next generation's teachers: student ``name``'s trained parameters in ``result``, one per run.

    ``result`` is one setting's :func:`engine.run` with ``keep_students=True`` (leaves
    ``(1, n_runs, ...)``); the value is its pytree with leaves ``(n_runs, ...)``, for ``run(..., teachers=)``.
    """
    return jax.tree.map(lambda a: a[0], result.students[name])


def fresh_noise(base: InputSource, generation: Any = GENERATION) -> InputSource:
    """``base`` (a noise source) with a fresh set per generation, still drawn from keys by index.

    Generation ``g`` (a setting: a number, or the name of a hyperparameter, by default
    :data:`GENERATION`, so that it can be traced) prepares ``base`` with the key
    ``fold_in(fold_in(key, GENERATION_STREAM), g)`` instead of the run's noise key ``key``; g <= 1
    keeps ``key`` itself (generation 1 is the paper's student, on the run's own set).
    """

    def prepare(key, arrays, hp):
        g = jnp.asarray(resolve(generation, hp))
        fresh = jax.random.fold_in(jax.random.fold_in(key, GENERATION_STREAM), g.astype(jnp.uint32))
        return base.prepare(jnp.where(g <= 1, key, fresh), arrays, hp)

    return InputSource(n=base.n, draw=base.draw, prepare=prepare, arrays=base.arrays,
                       name=f"{base.name}, fresh per generation",
                       settings={"base": base, "rebuild": lambda b: fresh_noise(b, generation),
                                 "generation": generation, "stream": GENERATION_STREAM})


def setting_experiment(cfg: Config) -> Experiment:
    """The engine experiment of one setting: ``cfg``'s teacher and inputs, the :func:`students` table.

    ``cfg`` carries the setting (``n_classes``, ``teacher_epochs``, ``student_epochs``).
    """
    return experiment_from_config(cfg).replace(students=students(cfg), name=f"teacher_task:{cfg.dataset}")


def epoch_accuracy(view: RunModels) -> jax.Array:
    """The trace ``f(RunModels) -> (2,)``: each of :data:`STUDENTS`' accuracy on the whole test set."""
    stack = stack_params(*[view.students[name] for name in STUDENTS])
    return jax.vmap(accuracy, (0, None, None, None, None, None))(stack, view.data["test_x"], view.data["test_y"],
                                                                 view.model.n_classes, 1000, view.model.apply)


def student_epochs_experiment(cfg: Config, epochs: int) -> Experiment:
    """Part (c)'s experiment: ``epochs`` student epochs, both students' test accuracy traced at every epoch start.

    The trace's entry at optimiser step ``e · steps_per_epoch`` is the accuracy after ``e`` epochs
    (:func:`traced_epochs`); its last entry is the accuracy after ``epochs``.
    """
    exp = setting_experiment(cfg.replace(student_epochs=epochs))
    return exp.replace(trace={"accuracy": epoch_accuracy}, trace_every=max(1, cfg.n_noise // cfg.batch_size),
                       name=f"teacher_task_student_epochs:{cfg.dataset}")


def traced_epochs(result: engine.Result, epochs: Sequence[int], n: int, batch_size: int) -> dict[int, np.ndarray]:
    """``{e: (n_runs, 2)}``: the traced accuracies of :data:`STUDENTS` after ``e`` epochs, for each ``e``."""
    from ..core.training import steps_per_epoch

    steps = list(np.asarray(result.trace_steps))
    per_epoch = steps_per_epoch(n, batch_size)
    trace = np.asarray(result.traces["accuracy"][0], np.float64)  # (runs, probes, 2)
    return {e: trace[:, steps.index(e * per_epoch)] for e in epochs}


def generation_experiment(cfg: Config) -> Experiment:
    """The experiment of generations g >= 2: :func:`setting_experiment` on :func:`fresh_noise` inputs.

    Run it with the previous generation's students as ``teachers=`` (:func:`next_teachers`) and
    ``sweep={GENERATION: [g]}``.
    """
    exp = setting_experiment(cfg)
    return exp.replace(inputs=fresh_noise(exp.inputs), hparams={**exp.hparams, GENERATION: 2.0},
                       name=f"teacher_task_generations:{cfg.dataset}")


def task_for(data, k: int) -> engine.Task:
    """The task of digits 0..k−1 (the whole dataset when k is its number of classes)."""
    if k == data.n_classes:
        return engine.Task.from_dataset(data)
    return engine.Task.from_dataset(data, classes=range(k))


def _task_classes(task: engine.Task) -> dict[str, Any]:
    """``{"classes", "n_train", "n_test"}`` of a task of digits 0..K−1."""
    return {"classes": list(range(task.n_classes)), "n_train": int(np.shape(task.train_y)[0]),
            "n_test": int(np.shape(task.test_y)[0])}


# ----------------------------------------------------------------------------- the decay fit


def _ols(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Least-squares ``y ≈ intercept + slope·x``: ``(slope, intercept)``."""
    xm, ym = x.mean(), y.mean()
    slope = float(np.sum((x - xm) * (y - ym)) / np.sum((x - xm) ** 2))
    return slope, float(ym - slope * xm)


def fit_decay(accuracies, chance: float, generations: Optional[Sequence[float]] = None) -> Optional[dict[str, Any]]:
    """Fit ``acc_g − chance ≈ a·r^g`` by least squares on ``log(acc_g − chance)``, per run and on the means.

    ``accuracies`` is ``(n_runs, G)``: generation ``generations[j]`` (default 1..G) in column j.
    A run's fit uses its generations with ``acc > chance`` (the logarithm needs them); a run with
    fewer than two such points has no fit (``nan``; counted in ``r.n_runs``). Returns None for
    G < 2, else::

        {"model": "acc_g - chance = a * r**g", "generations": [...], "chance": ..,
         "per_run": {"r": [...], "a": [...], "n_points": [...]},
         "r": {"mean", "ci95", "n_runs"},        # over the runs with a fit (95 % CI: 1.96·std/√n)
         "log_r": {"mean", "ci95", "n_runs"},
         "half_life": generations for acc − chance to halve, ln 2 / −ln r of the fit on the means
                      (None unless 0 < r < 1),
         "on_means": {"r", "a", "n_points"}}    # the fit of the mean accuracy per generation
    """
    acc = np.asarray(accuracies, np.float64)
    if acc.ndim != 2:
        raise ValueError(f"accuracies must be (n_runs, G), not of shape {acc.shape}.")
    g = np.arange(1, acc.shape[1] + 1, dtype=np.float64) if generations is None else np.asarray(generations, float)
    if g.shape != (acc.shape[1],):
        raise ValueError(f"{g.size} generations for {acc.shape[1]} columns of accuracies.")
    if acc.shape[1] < 2:
        return None

    def one(row):
        ok = np.isfinite(row) & (row > chance)
        if ok.sum() < 2:
            return math.nan, math.nan, int(ok.sum())
        slope, intercept = _ols(g[ok], np.log(row[ok] - chance))
        return math.exp(slope), math.exp(intercept), int(ok.sum())

    per_run = [one(row) for row in acc]
    r = np.array([p[0] for p in per_run])
    fitted = r[np.isfinite(r)]

    def stat(v):
        if v.size == 0:
            return {"mean": None, "ci95": None, "n_runs": 0}
        m, ci = mean_ci95(v)
        return {"mean": m, "ci95": ci, "n_runs": int(v.size)}

    r_m, a_m, n_m = one(np.nanmean(acc, axis=0))
    half = math.log(2) / -math.log(r_m) if 0 < r_m < 1 else None
    return {"model": "acc_g - chance = a * r**g", "generations": g.tolist(), "chance": float(chance),
            "per_run": {"r": r.tolist(), "a": [p[1] for p in per_run], "n_points": [p[2] for p in per_run]},
            "r": stat(fitted), "log_r": stat(np.log(fitted)), "half_life": half,
            "on_means": {"r": r_m, "a": a_m, "n_points": n_m}}


# ----------------------------------------------------------------------------- running


def _point(result: engine.Result, value: int, chance: float, wall_s: float, *, check_teacher: bool = True,
           data_subset: Optional[dict] = None, students: Optional[np.ndarray] = None) -> dict[str, Any]:
    """One setting's entry of the record (see :func:`run_teacher_task`); ``students``: (n_runs, 2)
    accuracies of :data:`STUDENTS` to use instead of the result's final ones (a traced epoch)."""
    acc = {m: np.asarray(result.accuracy(m), np.float64) for m in MODELS}
    if students is not None:
        acc.update({m: np.asarray(students[:, j], np.float64) for j, m in enumerate(STUDENTS)})
    stu, cross = acc["student_aux"], acc["cross_aux"]
    h = health(result.models, result.accuracies[0], None if result.finite is None else result.finite[0],
               chance=chance, check_teacher=check_teacher)
    point = {"value": int(value), "chance": chance, "models": {m: summary(a) for m, a in acc.items()},
             "gain_over_cross": summary(stu - cross),
             "above_chance": {m: summary(acc[m] - chance) for m in STUDENTS},
             "normalised": {m: summary((acc[m] - chance) / (1 - chance)) for m in STUDENTS},
             "health": h, "shared": False,
             "timing": {"compile_s": result.compile_s, "run_s": result.run_s, "wall_s": wall_s}}
    if data_subset is not None:
        point["data"] = data_subset
    return point


def _shared(point: dict[str, Any], value: int) -> dict[str, Any]:
    return {**point, "value": int(value), "shared": True}


def _aggregate_health(parts: dict[str, Any]) -> dict[str, Any]:
    """One ``health`` for the figure: every point's, its models named ``part=value:model``."""
    nonfinite, not_better = [], set()
    for part, p in parts.items():
        for pt in p["points"]:
            h = pt["health"]
            nonfinite += [[run, f"{part}={pt['value']}:{model}"] for run, model in h["nonfinite"]]
            not_better |= set(h["teacher_not_better"])
    first = next(iter(parts.values()))["points"][0]["health"]
    return {"ok": not nonfinite and not not_better, "nonfinite": nonfinite, "teacher_not_better": sorted(not_better),
            "teacher_margin": first["teacher_margin"]}


def run_teacher_task(cfg: Config, data, settings: TeacherTaskSettings = TeacherTaskSettings(), *,
                     progress: bool = False, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """Run the four parts (module docstring) for ``cfg.n_runs`` runs each; return the JSON-ready record.

    ``cfg``: the protocol (the paper's by default) and the baseline setting (``n_classes``,
    ``teacher_epochs``, ``student_epochs``); ``data``: MNIST (or Fashion-MNIST), a
    :class:`~subliminal_mlp.core.data.Dataset`; ``settings``: the values each part varies.
    Everything is validated before compute. ``progress``: the engine's bars; ``log``: one line per
    setting (what runs, then its wall time). The record is the envelope of :mod:`.results`
    (format ``subliminal-mlp/teacher-task``, version 1) with this payload::

        "settings": {...TeacherTaskSettings...},
        "models": ["reference", "teacher", "student_aux", "cross_aux"],
        "baseline": {"n_classes", "teacher_epochs", "student_epochs"},   # the shared setting
        "parts": {part: {"param": .., "values": [...], "wall_s": ..,     # this part's own compute
                         "points": [{"value", "chance",
                                     "models": {model: {"mean", "ci95", "values": [one per run]}},
                                     "gain_over_cross": {...},           # student_aux − cross_aux, per run
                                     "above_chance": {student: {...}},   # acc − chance
                                     "normalised": {student: {...}},     # (acc − chance) / (1 − chance)
                                     "health": {...}, "shared": bool,    # shared: the baseline setting
                                     "timing": {"compile_s", "run_s", "wall_s"},
                                     "data": {...}}]},                   # part (a): classes, n_train, n_test
                  "student_epochs": {..., "timing": {...},               # its one program; a point's timing
                                     "check": {"vs_baseline", "last_vs_final", "what"}},  # is {"traced_in"}
                  "generations": {..., "teacher": {...}, "noise": "...", "fit": fit_decay(...)}},
        "health": {...},                                                 # every point's, for the figure

    In part (d), a point's ``teacher`` is that generation's teacher (generation g−1's student;
    generation 1's is the task teacher, also ``parts.generations.teacher``); its teacher is not
    required to beat chance (the health check skips it). ``timing`` adds ``parts`` (wall seconds
    per part, and of the shared baseline).
    """
    settings.check(cfg)
    cfg.check_dataset(data)
    if cfg.n_classes > data.n_classes or max(settings.classes) > data.n_classes:
        raise ConfigError(f"the dataset has {data.n_classes} classes: n_classes = {cfg.n_classes} and classes = "
                          f"{list(settings.classes)} must not exceed it.")
    for k in settings.classes:  # part (a)'s teachers learn digits 0..K-1 only: checked before any compute
        n_k = int(np.sum(np.asarray(data.train_labels) < k))
        if cfg.batch_size > n_k:
            raise ConfigError(f"batch_size = {cfg.batch_size} is larger than the {n_k} training examples of the "
                              f"K = {k}-class task (classes = {list(settings.classes)}): lower batch_size.")
    t_start = time.perf_counter()
    n, seed = cfg.n_runs, cfg.seed
    chance0 = 1.0 / cfg.n_classes
    compile_s = run_s = 0.0

    def go(label, exp, task, **kw):
        nonlocal compile_s, run_s
        log(f"{label}: {n} runs ...")
        t0 = time.perf_counter()
        result = engine.run(exp, task, n_runs=n, seed=seed, run_batch=cfg.run_batch, progress=progress, **kw)
        wall = time.perf_counter() - t0
        compile_s, run_s = compile_s + result.compile_s, run_s + result.run_s
        log(f"{label}: done in {wall:.1f} s (compile {result.compile_s:.1f} s); student_aux "
            f"{np.nanmean(result.accuracy('student_aux')):.4f}, cross_aux {np.nanmean(result.accuracy('cross_aux')):.4f}")
        return result, wall

    base_task = task_for(data, cfg.n_classes)
    base, base_wall = go(f"baseline (K = {cfg.n_classes}, {cfg.teacher_epochs} + {cfg.student_epochs} epochs)",
                         setting_experiment(cfg), base_task, keep_teachers=True,
                         keep_students=settings.generations > 1)
    base_point = _point(base, 1, chance0, base_wall, data_subset=_task_classes(base_task))
    walls: dict[str, float] = {"baseline": base_wall}
    parts: dict[str, Any] = {}

    # (d) generations: the student of generation g-1 teaches generation g, on fresh noise.
    t0 = time.perf_counter()
    points = [_shared(base_point, 1)]
    gen_acc = [base.accuracy("student_aux")]
    prev = base
    gen_exp = generation_experiment(cfg) if settings.generations > 1 else None
    for g in range(2, settings.generations + 1):
        with warnings.catch_warnings():  # a teacher near chance is expected here: health is checked below
            warnings.simplefilter("ignore", DivergenceWarning)
            res, wall = go(f"generation {g}", gen_exp, base_task, sweep={GENERATION: [float(g)]},
                           teachers=next_teachers(prev), keep_students=True)
        pt = _point(res, g, chance0, wall, check_teacher=False)
        if not pt["health"]["ok"]:
            warnings.warn(format_health(pt["health"], n, f"generation {g}"), DivergenceWarning, stacklevel=2)
        points.append(pt)
        gen_acc.append(res.accuracy("student_aux"))
        prev = res
    walls["generations"] = time.perf_counter() - t0
    parts["generations"] = {"param": "generation", "values": list(range(1, settings.generations + 1)),
                            "points": points, "teacher": summary(base.accuracy("teacher")),
                            "noise": ("generation 1: the run's noise key (the paper's set); generation g >= 2: "
                                      f"fold_in(fold_in(noise key, {GENERATION_STREAM}), g)"),
                            "fit": fit_decay(np.stack(gen_acc, axis=1), chance0), "wall_s": walls["generations"]}

    # (c) student epochs: the baseline's teachers, one distillation for the most epochs, read at each value.
    t0 = time.perf_counter()
    longest = max(*settings.student_epochs, cfg.student_epochs)  # the baseline's epochs are checked against
    res, wall = go(f"student epochs {', '.join(map(str, settings.student_epochs))} (one run of {longest})",
                   student_epochs_experiment(cfg, longest), base_task, teachers=base.teachers)
    seen = traced_epochs(res, sorted({*settings.student_epochs, cfg.student_epochs}), res.experiment.inputs.n,
                         cfg.batch_size)
    final = _point(res, longest, chance0, wall)
    points = []
    for e in settings.student_epochs:
        pt = _point(res, e, chance0, wall, students=seen[e])
        pt["timing"] = {"traced_in": longest}
        points.append(pt)
    ours = np.stack([base.accuracy(m) for m in STUDENTS], axis=1)
    walls["student_epochs"] = time.perf_counter() - t0
    parts["student_epochs"] = {
        "param": "student_epochs", "values": list(settings.student_epochs), "points": points,
        "timing": final["timing"], "wall_s": walls["student_epochs"],
        "check": {"what": f"traced accuracy after {cfg.student_epochs} epochs minus the baseline's separately "
                          f"trained {cfg.student_epochs}-epoch students, and the last traced entry minus the final "
                          "accuracy: max |difference| over runs and students",
                  "vs_baseline": float(np.nanmax(np.abs(seen[cfg.student_epochs] - ours))),
                  "last_vs_final": float(np.nanmax(np.abs(seen[longest] - np.stack(
                      [res.accuracy(m) for m in STUDENTS], axis=1))))}}

    # (b) teacher epochs.
    t0 = time.perf_counter()
    points = []
    for e in settings.teacher_epochs:
        if e == cfg.teacher_epochs:
            points.append(_shared(base_point, e))
            continue
        res, wall = go(f"teacher epochs {e}", setting_experiment(cfg.replace(teacher_epochs=e)), base_task)
        points.append(_point(res, e, chance0, wall))
    walls["teacher_epochs"] = time.perf_counter() - t0
    parts["teacher_epochs"] = {"param": "teacher_epochs", "values": list(settings.teacher_epochs), "points": points,
                               "wall_s": walls["teacher_epochs"]}

    # (a) classes: digits 0..K-1.
    t0 = time.perf_counter()
    points = []
    for k in settings.classes:
        if k == cfg.n_classes:
            points.append(_shared(base_point, k))
            continue
        task = task_for(data, k)
        res, wall = go(f"K = {k} classes", setting_experiment(cfg.replace(n_classes=k)), task)
        points.append(_point(res, k, 1.0 / k, wall, data_subset=_task_classes(task)))
    walls["classes"] = time.perf_counter() - t0
    parts["classes"] = {"param": "n_classes", "values": list(settings.classes), "points": points,
                        "wall_s": walls["classes"]}

    parts = {p: parts[p] for p in PARTS}
    total = time.perf_counter() - t_start
    return envelope(
        FORMAT, cfg, n_runs=n, seed=seed, format_version=FORMAT_VERSION,
        data=data_record(data, name=cfg.dataset), devices=base.devices,
        timing={"compile_s": compile_s, "run_s": run_s, "total_s": total, "parts": walls},
        environment_extra={"run_batch": base.run_batch},
        settings=settings.to_dict(), models=list(MODELS),
        baseline={"n_classes": cfg.n_classes, "teacher_epochs": cfg.teacher_epochs,
                  "student_epochs": cfg.student_epochs},
        parts=parts, health=_aggregate_health(parts))


# ----------------------------------------------------------------------------- tables, figure, files

#: The baseline setting's value on each part's axis (``record["baseline"]``).
BASELINE_KEYS = {"classes": "n_classes", "teacher_epochs": "teacher_epochs", "student_epochs": "student_epochs"}
PART_LABELS = {"classes": "number of classes K", "teacher_epochs": "teacher epochs",
               "student_epochs": "student epochs", "generations": "generation"}


def _pm(s: dict[str, Any], digits: int = 3, signed: bool = False) -> str:
    return f"{s['mean']:{'+' if signed else ''}.{digits}f} ± {format_ci(s.get('ci95'), digits)}"


def format_teacher_task_table(record: dict[str, Any]) -> str:
    """Per part and value: teacher, student and control accuracy, paired gain, normalised student (± 95 % CI)."""
    head = (f"{'part':<15} {'value':>5} {'chance':>6} {'teacher':>15} {'student_aux':>15} {'cross_aux':>15} "
            f"{'gain (paired)':>16} {'normalised':>15}")
    rows = [head, "-" * len(head)]
    for part, p in record["parts"].items():
        for pt in p["points"]:
            m = pt["models"]
            rows.append(f"{part:<15} {pt['value']:>5} {pt['chance']:>6.3f} {_pm(m['teacher']):>15} "
                        f"{_pm(m['student_aux']):>15} {_pm(m['cross_aux']):>15} "
                        f"{_pm(pt['gain_over_cross'], signed=True):>16} {_pm(pt['normalised']['student_aux']):>15}")
    fit = record["parts"]["generations"].get("fit")
    if fit:
        r, on = fit["r"], fit["on_means"]
        per_run = "—" if r["mean"] is None else _pm(r)
        rows.append(f"generations: acc_g − chance ≈ a·r^g; per run r = {per_run} ({r['n_runs']} runs with a fit); "
                    f"on the means r = {on['r']:.3f}, a = {on['a']:.3f}")
    t = record["timing"]["parts"]
    rows.append("wall time: " + ", ".join(f"{k} {v / 60:.1f} min" for k, v in t.items()))
    return "\n".join(rows)


def plot_teacher_task(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Four panels, drawn from the record only: accuracy (mean ± 95 % CI) of the shared-init student,
    its cross-model control and the teacher against (a) K, (b) teacher epochs, (c) student epochs and
    (d) the generation, with chance, and in (d) the fitted decay ``chance + a·r^g`` (fit on the means)."""
    from ..report.plotting import COLORS, plt, save_figure, settings_caption

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    labels = {"teacher": "teacher", "student_aux": "student (aux only), shared init",
              "cross_aux": "cross-model control (aux only)"}
    titles = {"classes": "(a) the teacher learns digits 0..K−1", "teacher_epochs": "(b) teacher epochs",
              "student_epochs": "(c) student epochs (the same teachers)",
              "generations": "(d) generations: the student teaches the next student"}
    base = record["baseline"]
    common, shared = {*labels.values(), "chance (1/K)"}, {}
    for ax, (part, p) in zip(axes.ravel(), record["parts"].items()):
        pts = p["points"]
        x = np.asarray([pt["value"] for pt in pts], float)
        for k, name in enumerate(("teacher", "student_aux", "cross_aux")):
            if part == "generations" and name == "teacher":
                continue
            mean = np.asarray([pt["models"][name]["mean"] for pt in pts])
            ci = np.asarray([pt["models"][name]["ci95"] or 0.0 for pt in pts])
            ax.errorbar(x, mean, yerr=ci, color=COLORS[name], marker="os^"[k], ms=5, capsize=3, lw=1.5,
                        alpha=0.6 if name == "teacher" else 1.0, label=labels[name])
        chance = np.asarray([pt["chance"] for pt in pts])
        if np.all(chance == chance[0]):  # one K: a line across the panel (also when only one value was run)
            ax.axhline(chance[0], color="black", ls=":", lw=1.2, label="chance (1/K)")
        else:
            ax.plot(x, chance, color="black", ls=":", lw=1.2, label="chance (1/K)")
        if part == "generations":
            t = p["teacher"]
            ax.errorbar([0], [t["mean"]], yerr=[t["ci95"] or 0.0], color=COLORS["teacher"], marker="o", ms=6,
                        capsize=3, ls="none", label="teacher (generation 0, trained on digits)")
            fit = p.get("fit")
            if fit and fit["on_means"]["r"] == fit["on_means"]["r"]:  # not NaN
                g = np.linspace(1, x.max(), 100)
                on, r = fit["on_means"], fit["r"]
                per_run = "" if r["mean"] is None else f"; per run r = {_pm(r)}"
                ax.plot(g, fit["chance"] + on["a"] * on["r"] ** g, color=COLORS["student_aux"], ls="--", lw=1.2,
                        label=f"fit on the means: chance + {on['a']:.2f}·{on['r']:.3f}^g{per_run}")
            ax.set_xticks(np.arange(0, x.max() + 1))
        else:
            if x.max() / x.min() >= 8:
                ax.set_xscale("log")
            ax.set_xticks(x, [f"{v:g}" for v in x])
            ax.minorticks_off()
        if part in BASELINE_KEYS and x.min() <= base[BASELINE_KEYS[part]] <= x.max():  # the others' setting
            ax.axvline(base[BASELINE_KEYS[part]], color="#bbbbbb", lw=0.8, zorder=0)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(PART_LABELS[part] + ("" if part == "generations" else
                                           f" (others at K = {base['n_classes']}, {base['teacher_epochs']} + "
                                           f"{base['student_epochs']} epochs)"))
        ax.set_ylabel("test accuracy" + (" (digits 0..K−1)" if part == "classes" else ""))
        ax.set_title(titles[part], fontsize=10)
        ax.spines[["top", "right"]].set_visible(False)
        own = []  # (d)'s own entries (the fit, generation 0's teacher); the others are the shared legend's
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab in common:
                shared.setdefault(lab, h)
            else:
                own.append((h, lab))
        if own:
            ax.legend(*zip(*own), fontsize=7.5, frameon=False, loc="upper right")
    # The entries the panels share, once above them (inside a panel, a legend covers some curve).
    fig.legend(list(shared.values()), list(shared), loc="upper center", ncol=len(shared), fontsize=9, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.965))
    fig.text(0.5, -0.01, settings_caption(record["config"], record["n_runs"])
             + "; one setting varied per panel, students imitate the aux logits only", ha="center", va="top",
             fontsize=7.5)
    return save_figure(fig, path, record=record)


def csv_rows(record: dict[str, Any]) -> tuple[list[str], list[list]]:
    """The CSV: one row per part, value, model and run (``part,value,model,run,accuracy``)."""
    rows = [[part, pt["value"], model, run, f"{a:.6f}"] for part, p in record["parts"].items() for pt in p["points"]
            for model, s in pt["models"].items() for run, a in enumerate(s["values"])]
    return ["part", "value", "model", "run", "accuracy"], rows


def write_teacher_task(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "teacher_task") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (:func:`csv_rows`) and ``<stem>.png``, each atomically."""
    return write_record(record, out_dir, stem, csv=csv_rows(record), indent=1, figure=plot_teacher_task)
