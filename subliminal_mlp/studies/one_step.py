"""Predicting transfer from one step: single-step quantities at θ0 against the multi-step gain (issue 12, item 5).

The theorem (protocol.md §2) is about one small step: with a shared initialisation the student's
first imitation step never moves against the teacher's update, ``ΔθS·ΔθT = εA + O(ε²)`` with
``A ≥ 0``. Does that single step predict how much a student gains over the whole protocol? For
every setting of a committed study record this module computes, per run, at the start of
distillation (:func:`one_step_metrics`):

* ``cos_grad``: the cosine between the student's first gradient step ``−∇_θ L_S(θS0)`` and the
  teacher's total displacement ``D = θT − θ0``. ``L_S`` is the softmax cross-entropy on the aux
  logits against the *trained* teacher's aux logits (the gradient of Figure 10's KL loss at
  temperature 1), on the student's first batch: the first ``batch_size`` indices of its epoch-0
  permutation, exactly the inputs of its first optimiser step;
* ``cos_update``: the cosine between the first update of the student's optimiser (Adam by
  default: ``−g/(|g| + ε)`` elementwise, bias-corrected) and ``D``. ``g`` is the batch *mean*
  gradient, while the engine's students descend the batch *sum* ``B·g``, whose first Adam update
  is ``−g/(|g| + ε/B)``: the two differ only through Adam's ε (by up to 0.6 % of the cosine on the
  paper's MLP; :func:`update_cosines` reads the engine's own update);
* ``A``: the theorem's first-order coefficient at θ0 for the teacher's *first* task step
  ``ΔθT = −∇L_T(θ0)`` (the class cross-entropy on the teacher's own first batch of digits) and the
  student's first batch: ``A = E_x[vᵀ M(x) v]``, ``v = J_x ΔθT``
  (:func:`~subliminal_mlp.theory.kernels.first_order_coefficient`).

Both cosines are computed from the shared start θ0 (``student_aux``) and from another run's θ0'
(``cross_aux``, the control). For a student whose loss, start, penalty or optimiser is not the
paper's, :func:`update_cosines` reads the same two cosines inside the engine at its first step
(``StepView.updates``: the update its own optimiser applies), and :func:`first_step` runs an
experiment for that one epoch. The study (:func:`run_one_step`) reruns each setting of the given
records (input families, teacher task, mitigations, split heads, the published sweeps) with the
same seeds, so the same teachers, inputs and first batches, and pairs the single-step quantities
with the record's per-run gains (the shared-start student's accuracy minus its control's). It
reports Spearman's rank correlation between each quantity and the gain across all settings (each
distinct setting once) and within each family.

Example (a tiny record, about two minutes on a laptop; the committed figure reads every committed
study record: ``experiments/one_step.py``)::

    from subliminal_mlp import Config, load_mnist
    from subliminal_mlp.studies.input_families import InputFamilySettings, run_input_families
    from subliminal_mlp.studies.one_step import format_one_step_table, run_one_step

    cfg = Config(n_runs=2, hidden_widths=(32,), n_noise=2048, batch_size=512, teacher_epochs=1, student_epochs=1)
    data = load_mnist()
    families = run_input_families(cfg, data, InputFamilySettings(families=("subspace",), subspace_k=(10, 784)))
    print(format_one_step_table(run_one_step(data, input_families=families)))
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core import engine
from ..core.config import DATASETS, Config, ConfigError, is_integer
from ..core.results import data_record, envelope, register_format, same_data, summary, write_record
from ..core.training import epoch_batches
from ..theory.kernels import (class_cross_entropy_loss, ce_aux, first_order_coefficient, student_update,
                              teacher_update, tree_cosine)

FORMAT = "subliminal-mlp/one-step"
register_format(FORMAT, 1)
#: The single-step quantities, in the record's order: the two cosines per start, then A.
QUANTITIES = ("cos_update", "cos_grad", "A")
#: The key of the paper's own setting (Figure 10's aux-only student), whichever record shows it.
PAPER = "paper"
#: The starts the cosines are computed from (the runs' ``refs``): θ0 and another run's θ0'.
STARTS = ("own", "cross")


def first_batch(key: jax.Array, n: int, batch_size: int) -> jax.Array:
    """Indices of a student's first optimiser step: the first full batch of its epoch-0 permutation.

    The engine draws epoch ``e``'s batches from ``fold_in(key, e)`` (``training.scan_epochs``), so
    with the run's ``student_shuffle`` key these are the inputs of the first distillation step (with
    ``teacher_shuffle`` and the training set, the teacher's first step). ``n < batch_size``: all of them.
    """
    full, rest = epoch_batches(jax.random.fold_in(key, 0), n, batch_size)
    return full[0] if full.shape[0] else rest


def one_step_metrics(batch_size: int, *, loss=None, optimizer: Optional[optax.GradientTransformation] = None,
                     teacher_batch_size: Optional[int] = None) -> dict[str, Callable]:
    """Engine metrics (``Experiment.metrics``) of the single step at the start of distillation.

    Returns ``{"one_step_cos": f, "one_step_A": g}``, functions of a run's
    :class:`~subliminal_mlp.core.engine.RunModels` ``view``:

    * ``f(view)``: shape ``(2, 2)``, rows :data:`STARTS` (``view.refs["own"]`` = θ0,
      ``view.refs["cross"]`` = θ0'), columns ``[cos_update, cos_grad]``:
      ``cos(u, D)`` and ``cos(−g, D)`` with ``D = θT − θ0`` (``view.teacher − view.reference``),
      ``g = ∇_θ E_x L_S(f_θ(x), f_θT(x))`` at the start on the first distillation batch
      (:func:`first_batch` of ``view.keys["student_shuffle"]`` over ``view.inputs``), and
      ``u`` the first update of ``optimizer`` (default ``optax.adam(1.0)``: the cosine does not
      depend on the learning rate) from that (batch-mean) gradient;
    * ``g(view)``: the scalar ``A`` at θ0 (:func:`~subliminal_mlp.theory.kernels.first_order_coefficient`)
      for ``ΔθT = −∇L_T(θ0)``, ``L_T`` the class cross-entropy of ``view.model`` on the teacher's
      first batch (``teacher_batch_size``, default ``batch_size``), and the same student batch.

    ``loss``: a :class:`~subliminal_mlp.theory.kernels.StudentLoss` (default ``ce_aux(view.model)``:
    the aux-only student of Figure 10, whose KL loss at temperature 1 has the same gradient).
    The metrics read only the run's starts, teacher, data and inputs, so they mean the same with any
    number of student epochs; run with ``student_epochs=0`` to compute nothing else.

    >>> import subliminal_mlp as sm
    >>> exp = sm.Experiment(model=sm.mlp((16,)), inputs=sm.inputs.uniform(1024), teacher_epochs=1,
    ...                     student_epochs=0, batch_size=512, metrics=one_step_metrics(512))
    >>> # sm.run(exp, task, n_runs=2).metrics["one_step_cos"].shape == (1, 2, 2, 2)
    """
    if not is_integer(batch_size, 1):
        raise ConfigError(f"batch_size = {batch_size!r} is invalid: give the students' batch size (an integer >= 1).")
    opt = optax.adam(1.0) if optimizer is None else optimizer
    t_batch = batch_size if teacher_batch_size is None else teacher_batch_size

    def batch(view):
        idx = first_batch(view.keys["student_shuffle"], view.inputs.n, batch_size)
        return view.inputs.draw(idx)

    def displacement(view):
        return jax.tree.map(jnp.subtract, view.teacher, view.reference)

    def cosines(view):
        x, d = batch(view), displacement(view)
        student_loss = ce_aux(view.model) if loss is None else loss
        rows = []
        for start in STARTS:
            theta = view.refs[start]
            # −∇L_S at θ: student_update imitates θ0 + 1·D = θT.
            step = student_update(student_loss, theta, view.reference, d, x, 1.0, model=view.model)
            grad = jax.tree.map(jnp.negative, step)
            update, _ = opt.update(grad, opt.init(theta), theta)
            rows.append(jnp.stack([tree_cosine(update, d), tree_cosine(step, d)]))
        return jnp.stack(rows)

    def coefficient(view):
        n_train = view.data["train_x"].shape[0]
        idx = first_batch(view.keys["teacher_shuffle"], n_train, t_batch)
        d_t = teacher_update(class_cross_entropy_loss(view.model), view.reference, view.data["train_x"][idx],
                             view.data["train_y"][idx], model=view.model)
        student_loss = ce_aux(view.model) if loss is None else loss
        return first_order_coefficient(student_loss, view.reference, d_t, batch(view), model=view.model)

    return {"one_step_cos": cosines, "one_step_A": coefficient}


#: The name of :func:`update_cosines`' step metric in :func:`first_step`'s experiments.
FIRST_UPDATE = "first_update"


def update_cosines(names: Sequence[str]) -> Callable:
    """Engine step metric (``Experiment.step_metrics``): the cosines of each student's actual update.

    ``f(view)`` (a :class:`~subliminal_mlp.core.engine.StepView`) has shape ``(len(names), 2)``: per
    student ``s``, ``[cos(u_s, D), cos(−g_s, D)]`` with ``u_s = view.updates[s]`` the update its own
    optimiser applies at this step (Adam, AdamW, SGD, a projection: whatever the student's row
    says), ``g_s = view.grads[s]`` its raw gradient (its penalty included) and ``D = θT − θ0`` the
    displacement of the teacher it imitates from the run's θ0 (``view.run.teacher −
    view.run.reference``). At step 0 this is the single step at the start of distillation for any
    student table, with no assumption about its loss, start or optimiser; :func:`one_step_metrics`
    computes the same for the paper's student without taking a step. Every named student must have
    the teacher's parameter shapes (a student of another architecture has no cosine with ``D``).

    >>> import subliminal_mlp as sm
    >>> exp = sm.Experiment(model=sm.mlp((16,)), inputs=sm.inputs.uniform(1024), teacher_epochs=1,
    ...                     student_epochs=1, batch_size=512,
    ...                     step_metrics={"first_update": update_cosines(["student_aux", "cross_aux"])})
    >>> # sm.run(exp, task, n_runs=2).step_metrics["first_update"][:, :, 0]: (1, 2, 2, 2) at step 0
    >>> # (one value, 2 runs, the 2 students named, [cos(u, D), cos(−g, D)])
    """
    names = tuple(names)

    def cosines(view):
        d = jax.tree.map(jnp.subtract, view.run.teacher, view.run.reference)
        return jnp.stack([jnp.stack([tree_cosine(view.updates[n], d),
                                     tree_cosine(jax.tree.map(jnp.negative, view.grads[n]), d)]) for n in names])

    return cosines


def first_step(exp: engine.Experiment, task: engine.Task, names: Sequence[str], *, n_runs: int, seed: int,
               full: bool = False, metrics: Optional[Mapping[str, Callable]] = None,
               **run_kw) -> tuple[engine.Result, np.ndarray]:
    """Run ``exp`` with the :func:`update_cosines` of students ``names`` and return them at step 0.

    Only the students ``names`` are kept, in that order, and (unless ``full``) distilled for one
    epoch without traces or tracked losses: the first step is the same for any number of epochs.
    ``metrics`` replace the experiment's per-run metrics. ``run_kw`` go to :func:`engine.run`
    (``sweep``, ``teachers``, ``run_batch``, ...). Returns ``(result, cos)``, ``cos`` of shape
    ``(n_values, n_runs, len(names), 2)``.
    """
    names = tuple(names)
    rows = {s.name: s for s in exp.students}
    missing = [n for n in names if n not in rows]
    if missing:
        raise ConfigError(f"the experiment {exp.name!r} has no student {missing}; its students are {list(rows)}.")
    changes: dict[str, Any] = dict(students=tuple(rows[n] for n in names),
                                   step_metrics={FIRST_UPDATE: update_cosines(names)})
    if not full:
        changes.update(student_epochs=1, trace={}, track_losses=False)
    if metrics is not None:
        changes["metrics"] = dict(metrics)
    res = engine.run(exp.replace(**changes), task, n_runs=n_runs, seed=seed, **run_kw)
    return res, np.asarray(res.step_metrics[FIRST_UPDATE])[:, :, 0]


def spearman(x, y) -> Optional[float]:
    """Spearman's rank correlation ρ of two sequences: Pearson's r of their ranks (ties: average ranks).

    A pair with a NaN or infinite value (a diverged run's gain or cosine) is left out: it has no
    rank. None when fewer than 3 pairs remain or either sequence is constant (ρ is undefined).

    >>> spearman([1, 2, 3, 4], [10, 20, 25, 100]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    >>> spearman([1, 2, 3, float("nan"), 5], [1, 2, 3, 0, 4])  # the pair (nan, 0) left out
    1.0
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-d sequences of one length; got shapes {x.shape} and {y.shape}.")
    finite = np.isfinite(x) & np.isfinite(y)
    x, y = x[finite], y[finite]
    if x.size < 3:
        return None

    def ranks(v):
        order = np.argsort(v, kind="stable")
        r = np.empty(v.size)
        r[order] = np.arange(1, v.size + 1)
        for value in np.unique(v):  # ties share their average rank
            tie = v == value
            r[tie] = r[tie].mean()
        return r

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return None
    return float(np.corrcoef(rx, ry)[0, 1])


# ----------------------------------------------------------------------------- the input-families part


def _input_families_settings(record: Mapping[str, Any], data, progress, log) -> tuple[list[dict], list[dict], Any]:
    """Every setting of a committed input-families record, with its one-step quantities per run."""
    from . import input_families as fam_mod

    cfg = Config.from_dict(record["config"])
    settings = fam_mod.InputFamilySettings.from_dict(record["input_settings"])
    settings.check(cfg)
    table = fam_mod.rows(cfg, settings)
    own_rows = {fam: [r for r in table if r.family == fam] for fam in record["families"]}
    for fam, f in record["families"].items():  # the record's settings are the rebuilt table's, one for one
        labels = [r.label for r in own_rows[fam]]
        if labels != [x["label"] for x in f["settings"]]:
            raise ConfigError(f"input-families record: the settings of {fam}, {[x['label'] for x in f['settings']]}, "
                              f"are not its settings' {labels}; the record was made with other settings.")
    values = list(dict.fromkeys(r.hp for r in table))
    amplitude = None
    if any(int(v[0]) == fam_mod.KINDS.index("spectrum") for v in values):
        amplitude = fam_mod.inputs.amplitude_spectrum(data.train_images, fam_mod.SIDE)
    task = engine.Task.from_dataset(data)
    metrics = one_step_metrics(cfg.batch_size)
    teachers, programs, first = None, [], None
    found: dict[tuple, tuple[Any, int]] = {}
    # The record's programs (one per code path, or one for all when it was fused), fewest values
    # first: a program of one value trains the teachers once and gives them to the others (a swept
    # program would train one identical copy per value); if none has one value, a program of one
    # value goes first, unless there is only one program.
    groups = sorted(fam_mod.program_groups(values, fuse=bool(record.get("fuse"))).items(), key=lambda kv: len(kv[1]))
    if len(groups[0][1]) > 1 and len(groups) > 1:
        groups = [("teachers", groups[0][1][:1]), *groups]
    for name, group in groups:
        exp, sweep = fam_mod.fused_experiment(cfg, group, amplitude)
        exp = exp.replace(student_epochs=0, metrics=metrics, name=f"one_step:input_families:{name}")
        log(f"{exp.name}: {len(group)} setting(s) × {cfg.n_runs} runs")
        t0 = time.perf_counter()
        res = engine.run(exp, task, n_runs=cfg.n_runs, seed=cfg.seed, sweep=sweep, run_batch=cfg.run_batch,
                         progress=progress, log=log, teachers=teachers, keep_teachers=teachers is None)
        teachers = res.teachers if teachers is None else teachers
        first = first or res
        programs.append(_program(exp.name, len(group), res, t0))
        for j, v in enumerate(group):
            found[v] = (res, j)
    entries, paper = [], (0.0, 1.0, 0.0, float(cfg.n_noise), float(cfg.input_dim))  # U[-1, 1], the paper's inputs
    for fam, f in record["families"].items():
        for r, s in zip(own_rows[fam], f["settings"]):
            res, j = found[r.hp]
            key = PAPER if r.hp == paper else "inputs=" + "/".join(f"{x:g}" for x in r.hp)
            entries.append(_entry(fam, s["label"], key, s["gain"]["values"],
                                  res.metrics["one_step_cos"][j], res.metrics["one_step_A"][j]))
    return entries, programs, first


def _teacher_task_settings(record: Mapping[str, Any], data, progress, log) -> tuple[list[dict], list[dict], Any]:
    """The classes, teacher-epochs and generations settings of a committed teacher-task record, with their
    one-step quantities.

    Each classes or teacher-epochs setting is its own program (K and the teacher's epochs change
    shapes or code), with 0 student epochs: the teachers are trained again, as in the record (same
    seeds). The generations are the chain again (generation g's teacher is generation g−1's
    student, so each generation is distilled in full), each run with :func:`update_cosines`: the
    first update of generation g against its teacher's displacement θ_{g−1} − θ0; A is left out for
    g ≥ 2 (the theorem's A is the task teacher's). The student-epochs part is left out: its first
    step is the baseline's for every number of epochs (nothing to rank).
    """
    import warnings

    from ..core.results import DivergenceWarning
    from . import teacher_task as tt

    cfg = Config.from_dict(record["config"])
    metrics = one_step_metrics(cfg.batch_size)
    base = record["baseline"]
    entries, programs, first = [], [], None
    for part, field in (("teacher_epochs", "teacher_epochs"), ("classes", "n_classes")):
        for pt in record["parts"][part]["points"]:
            setting = {"n_classes": base["n_classes"], "teacher_epochs": base["teacher_epochs"], field: pt["value"]}
            c = cfg.replace(**setting)
            exp = tt.setting_experiment(c).replace(student_epochs=0, metrics=metrics,
                                                   name=f"one_step:teacher_task:{part}={pt['value']}")
            log(f"{exp.name}: {cfg.n_runs} runs")
            t0 = time.perf_counter()
            res = engine.run(exp, tt.task_for(data, c.n_classes), n_runs=cfg.n_runs, seed=cfg.seed,
                             run_batch=cfg.run_batch, progress=progress, log=log)
            first = first or res
            programs.append(_program(exp.name, 1, res, t0))
            label = f"K = {pt['value']}" if part == "classes" else f"{pt['value']} epochs"
            key = PAPER if c == cfg else f"K={c.n_classes}/teacher_epochs={c.teacher_epochs}"
            entries.append(_entry(part, label, key,
                                  pt["gain_over_cross"]["values"], res.metrics["one_step_cos"][0],
                                  res.metrics["one_step_A"][0]))
    points = record["parts"].get("generations", {}).get("points", [])
    if len(points) < 2:
        return entries, programs, first
    task = tt.task_for(data, cfg.n_classes)
    prev = None
    for g, pt in enumerate(points, start=1):
        if g == 1:
            exp, kw = tt.setting_experiment(cfg), {}
        else:
            exp = tt.generation_experiment(cfg)
            kw = dict(sweep={tt.GENERATION: [float(g)]}, teachers=tt.next_teachers(prev))
        exp = exp.replace(name=f"one_step:teacher_task:generation={g}")
        log(f"{exp.name}: {cfg.n_runs} runs (distilled in full: the next generation's teacher)")
        t0 = time.perf_counter()
        with warnings.catch_warnings():  # a teacher near chance is expected in late generations
            warnings.simplefilter("ignore", DivergenceWarning)
            prev, cos = first_step(exp, task, tt.STUDENTS, n_runs=cfg.n_runs, seed=cfg.seed, full=True,
                                   run_batch=cfg.run_batch, progress=progress, log=log, keep_students=True, **kw)
        program = _program(exp.name, 1, prev, t0)
        # The chain is the record's again: its students' accuracies, against the record's.
        program["max_abs_accuracy_difference_from_record"] = float(np.nanmax(np.abs(
            prev.accuracy("student_aux") - np.asarray(pt["models"]["student_aux"]["values"]))))
        programs.append(program)
        entries.append(_entry("generations", f"generation {g}", PAPER if g == 1 else f"generation={g}",
                              pt["gain_over_cross"]["values"], cos[0]))
    return entries, programs, first


def _mitigations_settings(record: Mapping[str, Any], data, progress, log) -> tuple[list[dict], list[dict], Any]:
    """Every setting of a committed mitigations record: the first update of its mitigated student.

    The teachers are trained once (a program without student steps), then each family's strengths
    run as one program for one student epoch with :func:`update_cosines`, which reads the update the
    student's own optimiser applies (AdamW, SGD, Adam after the projection) and its raw gradient
    (with the liminal penalty, whose gradient is zero at the start: the penalty is a divergence from
    the start itself). A is left out: the theorem's A is the plain gradient step's, the same for
    every mitigation.
    """
    from . import mitigations as mit

    s = mit.MitigationSettings.from_dict(record["config"])
    task = engine.Task.from_dataset(data)
    t0 = time.perf_counter()
    log(f"one_step:mitigations: the teachers ({s.n_runs} runs)")
    first = engine.run(mit.teachers_experiment(s), task, n_runs=s.n_runs, seed=s.seed, keep_teachers=True,
                       run_batch=s.run_batch, progress=progress, log=log)
    programs = [_program("one_step:mitigations:teachers", 0, first, t0)]
    entries = []
    for family, sweep in s.sweeps().items():
        fam = record["families"].get(family)
        if fam is None or fam["hparams"] != {k: [float(x) for x in v] for k, v in sweep.items()}:
            raise ConfigError(f"mitigations record: the {family} family does not match its settings; the record "
                              "was made with other settings.")
        exp = mit.mitigation_experiment(family, s).replace(name=f"one_step:mitigations:{family}")
        log(f"{exp.name}: {len(fam['labels'])} setting(s) × {s.n_runs} runs")
        t0 = time.perf_counter()
        res, cos = first_step(exp, task, ("student_aux", "cross_aux"), n_runs=s.n_runs, seed=s.seed, sweep=sweep,
                              teachers=first.teachers, run_batch=s.run_batch, progress=progress, log=log)
        programs.append(_program(exp.name, len(fam["labels"]), res, t0))
        for v, label in enumerate(fam["labels"]):
            baseline = family == "liminal" and sweep["liminal_weight"][v] == 0
            entries.append(_entry(family, label, PAPER if baseline else f"{family}:{label}",
                                  fam["gain"][v]["gains"], cos[v]))
    return entries, programs, first


#: The split-heads students whose parameters have the teacher's shapes (a cosine with θT − θ0 exists):
#: per teacher model, ``(record key, students, family)``; every gain is over the record's ``cross``.
SPLIT_STUDENTS = (("split_head", ("shared", "heads_both", "head_aux", "head_class", "heads_neither"),
                   "split-head MLP"),
                  ("single_head", ("shared", "head_only", "hidden_only", "fresh"), "single-head MLP"))


def _split_heads_settings(record: Mapping[str, Any], data, progress, log) -> tuple[list[dict], list[dict], Any]:
    """The split-heads students of the teacher's architecture: the first update of each against θT − θ0.

    One program per teacher model, one student epoch, the students of :data:`SPLIT_STUDENTS` and
    the ``cross`` control; the students of other architectures (a layer added or removed, the CNN)
    are left out (their parameters are not in θT − θ0's space). A is that of the student starting
    from θ0 (``shared``); the others start elsewhere.
    """
    from . import split_heads as sh

    s = sh.SplitHeadSettings.from_dict(record["config"])
    task = engine.Task.from_dataset(data)
    labels = dict(sh.SPLIT_BARS + sh.SINGLE_BARS)
    entries, programs, first = [], [], None
    for part, names, family in SPLIT_STUDENTS:
        if part not in record:
            continue
        models = record[part]["models"]
        exp = sh.split_head_experiment(s, part == "single_head").replace(name=f"one_step:split_heads:{part}")
        log(f"{exp.name}: {len(names)} students × {s.n_runs} runs")
        t0 = time.perf_counter()
        res, cos = first_step(exp, task, (*names, "cross"), n_runs=s.n_runs, seed=s.seed,
                              metrics={"one_step_A": one_step_metrics(s.batch_size)["one_step_A"]},
                              run_batch=s.run_batch, progress=progress, log=log)
        first = first or res
        programs.append(_program(exp.name, len(names), res, t0))
        cross = np.asarray(models["cross"]["accuracies"])
        for i, name in enumerate(names):
            pair = np.stack([cos[0][:, i], cos[0][:, -1]], axis=1)  # (runs, [student, cross], 2)
            paper = part == "single_head" and name == "shared"
            entries.append(_entry(family, labels.get(name, name), PAPER if paper else f"{part}:{name}",
                                  np.asarray(models[name]["accuracies"]) - cross, pair,
                                  res.metrics["one_step_A"][0] if name == "shared" else None))
    return entries, programs, first


def read_published_sweeps(root: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """The committed published sweeps under ``root`` (``figures/sweeps``): ``{name: {"summary": record,
    "values": [each value's Figure-10 record]}}``, for each name of
    :data:`~subliminal_mlp.studies.sweep.PUBLISHED_SWEEPS` whose summary exists."""
    from ..core.results import read_results, sweep_value_paths
    from .sweep import PUBLISHED_SWEEPS, read_sweep

    out = {}
    for name, (field, *_rest) in PUBLISHED_SWEEPS.items():
        path = Path(root) / name / f"sweep_{field}.json"
        if path.is_file():
            summary_rec = read_sweep(path)
            out[name] = {"summary": summary_rec,
                         "values": [read_results(f) for f in sweep_value_paths(summary_rec, path)]}
    return out


#: The protocol every source record states (its ``config``), in Config's names; ProtocolSettings
#: calls the widths ``hidden``. A record whose protocol differs from the paper's qualifies its keys.
PROTOCOL_FIELDS = ("hidden_widths", "aux_logits", "learning_rate", "batch_size", "teacher_epochs",
                   "student_epochs", "n_noise", "loss", "temperature", "n_classes", "dataset", "student_inputs",
                   "input_mix", "init_noise", "init_noise_kind")


def _protocol_config(config: Mapping[str, Any], dataset: Optional[str]) -> dict[str, Any]:
    """The one-step record's ``config``: its first source's protocol as a full :class:`Config` dict (a study's
    settings, ``hidden`` and all, mapped onto the fields they share; the rest the paper's), so that its caption
    and readers see one shape whichever record came first."""
    import dataclasses

    if "hidden_widths" in config:  # a Config's own
        return Config.from_dict(dict(config)).to_dict()
    fields = {f.name for f in dataclasses.fields(Config)}
    kw = {k: tuple(v) if isinstance(v, list) else v for k, v in config.items() if k in fields}
    if "hidden" in config:
        kw["hidden_widths"] = tuple(config["hidden"])
    if dataset in DATASETS:
        kw["dataset"] = dataset
    return Config(**kw).to_dict()


def _protocol_changes(config: Mapping[str, Any], skip: Sequence[str] = ()) -> dict[str, Any]:
    """The :data:`PROTOCOL_FIELDS` of a record's ``config`` that differ from the paper's (``skip`` aside)."""
    paper = Config().to_dict()
    c = dict(config)
    if "hidden" in c:
        c["hidden_widths"] = c["hidden"]
    if c.get("init_noise", 0) == 0:  # no noise: its kind does not matter
        c.pop("init_noise_kind", None)
    norm = lambda v: list(v) if isinstance(v, (list, tuple)) else v  # noqa: E731
    return {k: norm(c[k]) for k in PROTOCOL_FIELDS if k in c and k not in skip and norm(c[k]) != norm(paper[k])}


def _qualified(key: str, changes: Mapping[str, Any]) -> str:
    """``key`` (a setting within its record's protocol) made global: ``key@field=value,...`` where the
    protocol is not the paper's, so equal keys always name the same computation."""
    return key if not changes else key + "@" + ",".join(f"{k}={v}" for k, v in sorted(changes.items()))


def _sweep_key(cfg: Config, param: str) -> str:
    """A setting of a sweep, named by the fields that differ from the paper's (``n_runs`` and ``run_batch``
    aside): the paper's setting qualified by every protocol field that differs (:func:`_qualified`), whichever
    field the sweep varies, so one configuration reached by two sweeps (the loss sweep's mse, the MSE depth
    sweep's 256,256) is one key; ``param`` is not part of it."""
    paper = Config(n_runs=cfg.n_runs, seed=cfg.seed, run_batch=cfg.run_batch)
    if cfg.init_noise == 0:  # no noise: its kind does not matter
        cfg = cfg.replace(init_noise_kind=paper.init_noise_kind)
    mine, theirs = cfg.to_dict(), paper.to_dict()
    protocol = _protocol_changes(mine)
    changed = {k: v for k, v in mine.items() if v != theirs[k] and k not in protocol}
    key = PAPER if not changed else "config:" + ",".join(f"{k}={v}" for k, v in sorted(changed.items()))
    return _qualified(key, protocol)


def _sweeps_settings(sweeps: Mapping[str, Mapping[str, Any]], data, progress, log,
                     input_data=None) -> tuple[list[dict], list[dict], Any]:
    """Every value of the published sweeps (:func:`read_published_sweeps`): the first update of Figure 10's
    aux-only student and its control, against the value record's gain. ``input_data``: the dataset of
    the students' images where a sweep's are another dataset's (Fashion-MNIST), loaded by the caller.

    A setting shared by several sweeps (the paper's, above all) is computed once. Values of a
    numeric hyperparameter (temperature, input mix, initial noise) run as one program; the others one
    program each, their teachers from the teacher cache where they are the same (:func:`run_one_step`
    keeps one). A is kept where the student is the theorem's (KL at temperature 1, from θ0).
    """
    from . import figure10 as f10

    task = engine.Task.from_dataset(data)
    names = ("student_aux", "cross_aux")
    done: dict[str, tuple] = {}
    entries, programs, first = [], [], None
    for name, sw in sweeps.items():
        summ, recs = sw["summary"], sw["values"]
        field = summ["param"]
        cfgs = [Config.from_dict(r["config"]) for r in recs]
        keys = [_sweep_key(c, field) for c in cfgs]
        todo = [i for i, k in enumerate(keys) if k not in done and k not in keys[:i]]  # each new setting once
        traced = field in f10.HPARAM_FIELDS and len(todo) > 1
        for group in [todo] if traced else [[i] for i in todo]:
            c0 = cfgs[group[0]]
            pool = f10.input_pool(c0, data, source=input_data) if c0.student_inputs == "fashion-mnist" else None
            exp = f10.experiment_from_config(c0, pool, swept=[field] if traced else ()).replace(
                name=f"one_step:sweep:{name}:" + ",".join(summ["labels"][i] for i in group))
            log(f"{exp.name}: {len(group)} setting(s) × {c0.n_runs} runs")
            t0 = time.perf_counter()
            res, cos = first_step(exp, task, names, n_runs=c0.n_runs, seed=c0.seed,
                                  sweep={field: [getattr(cfgs[i], field) for i in group]} if traced else None,
                                  metrics={"one_step_A": one_step_metrics(c0.batch_size)["one_step_A"]},
                                  run_batch=c0.run_batch, progress=progress, log=log)
            first = first or res
            programs.append(_program(exp.name, len(group), res, t0))
            for j, i in enumerate(group):
                c = cfgs[i]
                theorem = c.loss == "kl" and c.temperature == 1 and c.init_noise == 0
                done[keys[i]] = (cos[j], res.metrics["one_step_A"][j] if theorem else None)
        for i, r in enumerate(recs):
            acc = r["models"]
            gains = np.asarray(acc["student_aux"]["accuracies"]) - np.asarray(acc["cross_aux"]["accuracies"])
            cos, A = done[keys[i]]
            entries.append(_entry(f"sweep: {name}", summ["labels"][i], keys[i], gains, cos, A))
    return entries, programs, first


def _entry(family: str, label: str, key: str, gains, cos, A=None) -> dict[str, Any]:
    """One setting: its gain (from the study record) and its single-step quantities, per run.

    ``cos`` ``(n_runs, 2, 2)``: rows the shared-start student and its control (:data:`STARTS`),
    columns ``[cos_update, cos_grad]``; ``A`` ``(n_runs,)``, or None where the theorem's A is not
    this setting's (another loss, start or teacher: see :func:`run_one_step`).
    """
    cos = np.asarray(cos, np.float64)
    return {"family": family, "label": label, "key": key, "gain": summary(gains),
            "cos_update": {s: summary(cos[:, i, 0]) for i, s in enumerate(STARTS)},
            "cos_grad": {s: summary(cos[:, i, 1]) for i, s in enumerate(STARTS)},
            "A": None if A is None else summary(np.asarray(A, np.float64))}


def _value(entry: dict, quantity: str, start: str = "own") -> Optional[dict]:
    return entry["A"] if quantity == "A" else entry[quantity][start]


def _program(name: str, settings: int, res, t0: float) -> dict[str, Any]:
    return {"name": name, "settings": settings, "compile_s": res.compile_s, "run_s": res.run_s,
            "wall_s": time.perf_counter() - t0}


def correlations(entries: list[dict]) -> dict[str, Any]:
    """Spearman's ρ between each quantity (of the shared start) and the gain.

    ``settings``: over the settings' means, each distinct setting (``key``) once (its first entry,
    with A from any of its entries that records it); ``runs``: over every
    (setting, run) pair; ``families``: over the settings of each family with at least 3 of them.
    """
    first_seen: dict[str, dict] = {}
    for e in entries:  # a setting shown by several records counts once: its first entry, A from any that has it
        kept = first_seen.setdefault(e["key"], e)
        if kept["A"] is None and e["A"] is not None:
            first_seen[e["key"]] = {**kept, "A": e["A"]}
    distinct = list(first_seen.values())

    def rho(es, q):
        es = [e for e in es if _value(e, q) is not None]
        return spearman([_value(e, q)["mean"] for e in es], [e["gain"]["mean"] for e in es])

    def pooled(q):
        es = [e for e in distinct if _value(e, q) is not None]
        if len(es) < 3:
            return None
        return spearman(np.concatenate([_value(e, q)["values"] for e in es]),
                        np.concatenate([e["gain"]["values"] for e in es]))

    out: dict[str, Any] = {"settings": {q: rho(distinct, q) for q in QUANTITIES}, "n_settings": len(distinct),
                           "n_settings_A": sum(e["A"] is not None for e in distinct)}
    out["runs"] = {q: pooled(q) for q in QUANTITIES}
    fams: dict[str, list] = {}
    for e in entries:
        fams.setdefault(e["family"], []).append(e)
    out["families"] = {f: {**{q: rho(es, q) for q in QUANTITIES}, "n_settings": len(es)}
                       for f, es in fams.items() if len(es) >= 3}
    return out


#: The study records this module reads: keyword of :func:`run_one_step` -> (record format, settings function).
SOURCES = {"input_families": ("subliminal-mlp/input-families", _input_families_settings),
           "teacher_task": ("subliminal-mlp/teacher-task", _teacher_task_settings),
           "mitigations": ("subliminal-mlp/mitigations", _mitigations_settings),
           "split_heads": ("subliminal-mlp/split-heads", _split_heads_settings),
           "sweeps": ("subliminal-mlp/sweep", _sweeps_settings)}


def _protocol(name: str, rec: Mapping[str, Any]) -> tuple:
    """What every record must share: runs and seed (a sweep: each value's)."""
    if name == "sweeps":
        return tuple(sorted({(v["n_runs"], v["seeds"]["seed"]) for sw in rec.values() for v in sw["values"]}))
    return ((rec["n_runs"], rec["seeds"]["seed"]),)


def run_one_step(data, *, input_families: Optional[Mapping[str, Any]] = None,
                 teacher_task: Optional[Mapping[str, Any]] = None, mitigations: Optional[Mapping[str, Any]] = None,
                 split_heads: Optional[Mapping[str, Any]] = None, sweeps: Optional[Mapping[str, Any]] = None,
                 data_dir=None, progress: bool = False, log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The single-step quantities of every setting of the given study records, against their gains.

    ``input_families``: a record of :func:`~subliminal_mlp.studies.input_families.run_input_families`
    (``read_results("figures/input_families.json")``); ``teacher_task``: one of
    :func:`~subliminal_mlp.studies.teacher_task.run_teacher_task` (its classes, teacher-epochs and
    generations parts); ``mitigations``: one of :func:`~subliminal_mlp.studies.mitigations.run_mitigations`;
    ``split_heads``: one of :func:`~subliminal_mlp.studies.split_heads.run_split_heads` (the students
    of the teacher's architecture); ``sweeps``: the published sweeps (:func:`read_published_sweeps`).
    Each record's protocol (config, seeds, settings) is rerun on ``data`` (the dataset the records
    were made on: checked by checksum; a sweep whose students see Fashion-MNIST images loads them
    from ``data_dir``, found as :func:`~subliminal_mlp.core.data.load_dataset` finds it) for as long
    as its first step needs (0 or 1 student epochs; the generations in full). The records must share
    their runs and seed. The input-families settings and the teacher task's classes and teacher-epochs
    settings use :func:`one_step_metrics` (the paper's student, its first Adam update computed from θ0);
    the others, the teacher task's generations included, :func:`update_cosines` (each student's own
    first update, read in the engine). Without an active teacher cache a temporary
    one is used, so identical teachers are trained once. Returns the record (format
    ``subliminal-mlp/one-step``, version 1)::

        "settings": [{"family", "label", "key", "gain": {...per run},
                      "cos_update" | "cos_grad": {"own" | "cross": {"mean", "ci95", "values"}},
                      "A": {...} or None}],
        "correlations": {"settings": {quantity: ρ}, "n_settings", "n_settings_A", "runs": {...},
                         "families": {...}},
        "sources": {name: {"format", "created"}}, "programs": [...]

    (``sources["sweeps"]`` also has ``"records": {sweep: its summary's "created"}``; its own
    ``created`` is the first sweep's.)

    A family is an input family (distribution, subspace, ...), a teacher-task part (classes,
    teacher_epochs, generations), a mitigation, a split-heads teacher or a published sweep; ``key``
    names the setting, so a setting shown in several families counts once in the correlations. A
    record made with another protocol than the paper's (:data:`PROTOCOL_FIELDS`: a tiny one, say)
    has its keys qualified by it (``paper@batch_size=512,...``): equal keys are the same computation.
    """
    import contextlib
    import tempfile

    from ..core.teacher_cache import TeacherCache, active_teacher_cache, use_teacher_cache

    t_start = time.perf_counter()
    given = {name: rec for name, rec in (("input_families", input_families), ("teacher_task", teacher_task),
                                         ("mitigations", mitigations), ("split_heads", split_heads),
                                         ("sweeps", sweeps)) if rec}
    if not given:
        raise ConfigError("give at least one study record: input_families=, teacher_task=, mitigations=, "
                          "split_heads= (read_results(...)) or sweeps= (read_published_sweeps(...)).")
    heads = {name: (rec if name != "sweeps" else next(iter(rec.values()))["summary"]) for name, rec in given.items()}
    for name, rec in heads.items():
        fmt = SOURCES[name][0]
        if rec.get("format") != fmt:
            raise ConfigError(f"{name} is a {rec.get('format')!r} record; give a {fmt} record "
                              f"(read_results('figures/{name}.json')).")
    protocols = {p for name, rec in given.items() for p in _protocol(name, rec)}
    if len(protocols) > 1:  # one set of runs and seeds: then equal keys (_qualified) are the same computation
        each = "; ".join(f"{name}: " + ", ".join(f"{n} runs from seed {seed}" for n, seed in _protocol(name, rec))
                         for name, rec in given.items())
        raise ConfigError(f"the records were made with different runs and seeds ({each}); give records of one "
                          "protocol.")
    (n_runs, seed), = protocols
    first_rec = next(iter(heads.values()))
    fashion = [Config.from_dict(v["config"]) for sw in (sweeps or {}).values() for v in sw["values"]
               if v["config"].get("student_inputs") == "fashion-mnist"]
    input_data = None
    if fashion:  # its students' images, loaded once from data_dir, checksummed in the record
        from .figure10 import input_dataset

        input_data = input_dataset(fashion[0], data_dir)
    rec_data = data_record(data, inputs=input_data)
    for name, rec in heads.items():
        if not same_data(rec.get("data"), rec_data):
            raise ConfigError(f"the data differ from those the {name} record was made on (its data's checksums "
                              "or arrays' fingerprints); give the same data.")
    entries, programs, first = [], [], None
    with contextlib.ExitStack() as stack:
        if active_teacher_cache() is None:
            stack.enter_context(use_teacher_cache(TeacherCache(stack.enter_context(tempfile.TemporaryDirectory()))))
        for name, rec in given.items():
            e, p, f = SOURCES[name][1](rec, data, progress, log, **({"input_data": input_data} if name == "sweeps"
                                                                    else {}))
            changes = {} if name == "sweeps" else _protocol_changes(rec["config"])  # a sweep's keys are global
            entries += [{"source": name, **x, "key": _qualified(x["key"], changes)} for x in e]
            programs += [{**q, "source": name} for q in p]
            first = first or f
    return envelope(FORMAT, _protocol_config(first_rec["config"], rec_data["dataset"]), n_runs=n_runs, seed=seed,
                    data=rec_data, devices=first.devices,
                    timing={"compile_s": sum(p["compile_s"] for p in programs),
                            "run_s": sum(p["run_s"] for p in programs), "total_s": time.perf_counter() - t_start},
                    settings=entries, correlations=correlations(entries),
                    sources={name: {"format": rec["format"], "created": rec.get("created"),
                                    **({"records": {sw: v["summary"].get("created") for sw, v in given[name].items()}}
                                       if name == "sweeps" else {})}
                             for name, rec in heads.items()},
                    programs=programs,
                    definitions={"cos_update": "cos(the student's first optimiser update, θT − θ0)",
                                 "cos_grad": "cos(−∇L_S at the start, θT − θ0)",
                                 "A": "first-order coefficient at θ0, teacher's first task step (theorem, §2); "
                                      "None where the student is not the theorem's",
                                 "gain": "acc(student) − acc(its cross-model control), from the source record"})


def format_one_step_table(record: dict[str, Any]) -> str:
    """Per setting: the gain and the single-step quantities (shared start; cross start in brackets)."""
    head = f"{'family':<13} {'setting':<16} {'gain':>8} {'cos update':>18} {'cos grad':>18} {'A':>10}"
    lines = [head, "-" * len(head)]
    for e in record["settings"]:
        cu, cg = e["cos_update"], e["cos_grad"]
        lines.append(f"{e['family']:<13} {e['label']:<16} {e['gain']['mean']:>+8.3f} "
                     f"{cu['own']['mean']:>8.4f} ({cu['cross']['mean']:+.4f}) "
                     f"{cg['own']['mean']:>8.4f} ({cg['cross']['mean']:+.4f}) "
                     + ("—".rjust(10) if e["A"] is None else f"{e['A']['mean']:>10.3g}"))
    c = record["correlations"]
    fmt = lambda v: "—" if v is None else f"{v:+.2f}"  # noqa: E731
    lines.append(f"Spearman ρ with the gain over {c['n_settings']} settings ({c.get('n_settings_A', '')} with A): "
                 + ", ".join(f"{q} {fmt(c['settings'][q])}" for q in QUANTITIES))
    for f, v in c["families"].items():
        lines.append(f"  within {f} ({v['n_settings']}): " + ", ".join(f"{q} {fmt(v[q])}" for q in QUANTITIES))
    return "\n".join(lines)


#: How the figure names each source record.
SOURCE_LABELS = {"input_families": "input families", "teacher_task": "teacher task", "mitigations": "mitigations",
                 "split_heads": "split heads", "sweeps": "published sweeps"}


def plot_one_step(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Three panels, one per quantity (shared start): the gain against it, one point per setting,
    mean ± 95 % CI over the runs on both axes, coloured by source record; ρ in each title."""
    from ..report.plotting import plt, save_figure, settings_caption

    # One colour per source record (a family's name is in the table beside the figure; there are too many to colour).
    group = lambda e: SOURCE_LABELS.get(e.get("source"), e["family"])  # noqa: E731
    fams = list(dict.fromkeys(group(e) for e in record["settings"]))
    colors = dict(zip(fams, plt.get_cmap("tab10").colors * (1 + len(fams) // 10)))
    titles = {"cos_update": "cos(first optimiser update, θT − θ0)", "cos_grad": "cos(−∇L_S at the start, θT − θ0)",
              "A": "A (theorem, teacher's first step)"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    c = record["correlations"]
    for ax, q in zip(axes, QUANTITIES):
        for f in fams:
            es = [e for e in record["settings"] if group(e) == f and _value(e, q) is not None]
            x = [_value(e, q)["mean"] for e in es]
            ax.errorbar(x, [e["gain"]["mean"] for e in es], xerr=[_value(e, q)["ci95"] or 0 for e in es],
                        yerr=[e["gain"]["ci95"] or 0 for e in es], ls="none", marker="o", ms=4, capsize=2,
                        color=colors[f], label=f)
        if q != "A":  # the control: the same quantity from another run's θ0'
            xs = [e[q]["cross"]["mean"] for e in record["settings"]]
            ax.scatter(xs, [e["gain"]["mean"] * 0 for e in record["settings"]], marker="x", s=14, color="#888888",
                       label="cross start θ0' (at gain 0)")
        if q == "A":  # A spans orders of magnitude (it grows with the input scale): a symmetric-log axis
            positive = [e["A"]["mean"] for e in record["settings"] if e["A"] is not None and e["A"]["mean"] > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        rho = c["settings"][q]
        n = c.get("n_settings_A", c["n_settings"]) if q == "A" else c["n_settings"]
        ax.set_title(f"{titles[q]}\nSpearman ρ = {'—' if rho is None else f'{rho:+.2f}'} "
                     f"({n} settings)", fontsize=9.5)
        ax.set_xlabel(titles[q], fontsize=8.5)
        ax.set_ylabel("gain: student − cross-model (accuracy)", fontsize=8.5)
        ax.axhline(0, color="#cccccc", lw=0.8)
        ax.spines[["top", "right"]].set_visible(False)
    axes[0].legend(fontsize=7.5, frameon=False)
    fig.suptitle("Predicting transfer from one step: single-step quantities at θ0 against the student's final gain",
                 fontsize=11)
    fig.text(0.5, -0.01, settings_caption(record["config"], record["n_runs"]), ha="center", va="top", fontsize=7.5)
    fig.tight_layout()
    return save_figure(fig, path, record=record)


def _csv_rows(record: dict[str, Any]) -> tuple[list[str], list[list]]:
    out = []
    for e in record["settings"]:
        n = len(e["gain"]["values"])
        cols = [e["gain"]["values"], e["cos_update"]["own"]["values"], e["cos_grad"]["own"]["values"],
                e["cos_update"]["cross"]["values"], e["cos_grad"]["cross"]["values"],
                [None] * n if e["A"] is None else e["A"]["values"]]
        for i, vals in enumerate(zip(*cols)):
            out.append([e["family"], e["label"], i, *("" if v is None else f"{v:.6g}" for v in vals)])
    return ["family", "setting", "run", "gain", "cos_update_own", "cos_grad_own", "cos_update_cross",
            "cos_grad_cross", "A"], out


def write_one_step(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "one_step") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (one row per setting and run) and ``<stem>.png`` atomically."""
    return write_record(record, out_dir, stem, csv=_csv_rows(record), indent=1, figure=plot_one_step)
