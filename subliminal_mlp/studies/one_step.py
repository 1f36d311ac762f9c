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
  default: ``−g/(|g| + ε)`` elementwise, bias-corrected) and ``D``;
* ``A``: the theorem's first-order coefficient at θ0 for the teacher's *first* task step
  ``ΔθT = −∇L_T(θ0)`` (the class cross-entropy on the teacher's own first batch of digits) and the
  student's first batch: ``A = E_x[vᵀ M(x) v]``, ``v = J_x ΔθT``
  (:func:`~subliminal_mlp.theory.kernels.first_order_coefficient`).

Both cosines are computed from the shared start θ0 (``student_aux``) and from another run's θ0'
(``cross_aux``, the control). The study (:func:`run_one_step`) reruns each setting of the record
with 0 student epochs (the same seeds, so the same teachers, inputs and first batches: only the
single-step quantities are computed) and pairs them with the record's per-run gains
``acc(student_aux) − acc(cross_aux)``. It reports Spearman's rank correlation between each quantity
and the gain across all settings (each distinct setting once) and within each family.

Example (a tiny record, about two minutes on a laptop; the committed figure uses
``figures/input_families.json``, ``experiments/one_step.py``)::

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
from typing import Any, Callable, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core import engine
from ..core.config import Config, ConfigError
from ..core.results import data_record, envelope, register_format, summary, write_record
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
      depend on the learning rate) from that gradient;
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
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
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


def spearman(x, y) -> Optional[float]:
    """Spearman's rank correlation ρ of two sequences: Pearson's r of their ranks (ties: average ranks).

    None when there are fewer than 3 pairs or either sequence is constant (ρ is undefined).

    >>> spearman([1, 2, 3, 4], [10, 20, 25, 100]), spearman([1, 2, 3], [3, 2, 1])
    (1.0, -1.0)
    """
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman needs two 1-d sequences of one length; got shapes {x.shape} and {y.shape}.")
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
        programs.append({"name": exp.name, "settings": len(group), "compile_s": res.compile_s, "run_s": res.run_s,
                         "wall_s": time.perf_counter() - t0})
        for j, v in enumerate(group):
            found[v] = (res, j)
    entries, paper = [], (0.0, 1.0, 0.0, float(cfg.n_noise), float(cfg.input_dim))  # U[-1, 1], the paper's inputs
    for fam, f in record["families"].items():
        for r, s in zip((r for r in table if r.family == fam), f["settings"]):
            if r.label != s["label"]:
                raise ConfigError(f"input-families record: setting {s['label']!r} of {fam} does not match "
                                  f"{r.label!r}; the record was made with other settings.")
            res, j = found[r.hp]
            key = PAPER if r.hp == paper else "inputs=" + "/".join(f"{x:g}" for x in r.hp)
            entries.append(_entry(fam, s["label"], key, s["gain"]["values"],
                                  res.metrics["one_step_cos"][j], res.metrics["one_step_A"][j]))
    return entries, programs, first


def _teacher_task_settings(record: Mapping[str, Any], data, progress, log) -> tuple[list[dict], list[dict], Any]:
    """The classes and teacher-epochs settings of a committed teacher-task record, with their one-step quantities.

    Each setting is its own program (K and the teacher's epochs change shapes or code), with 0 student
    epochs: the teachers are trained again, as in the record (same seeds). The student-epochs part is
    left out (its first step is the baseline's for every number of epochs: nothing to rank), and so are
    the generations (their teachers are the previous generation's students: the chain would be rerun).
    """
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
            programs.append({"name": exp.name, "settings": 1, "compile_s": res.compile_s, "run_s": res.run_s,
                             "wall_s": time.perf_counter() - t0})
            label = f"K = {pt['value']}" if part == "classes" else f"{pt['value']} epochs"
            key = PAPER if c == cfg else f"K={c.n_classes}/teacher_epochs={c.teacher_epochs}"
            entries.append(_entry(part, label, key,
                                  pt["gain_over_cross"]["values"], res.metrics["one_step_cos"][0],
                                  res.metrics["one_step_A"][0]))
    return entries, programs, first


def _entry(family: str, label: str, key: str, gains, cos, A) -> dict[str, Any]:
    """One setting: its gain (from the study record) and its single-step quantities, per run."""
    cos, A = np.asarray(cos, np.float64), np.asarray(A, np.float64)
    return {"family": family, "label": label, "key": key, "gain": summary(gains),
            "cos_update": {s: summary(cos[:, i, 0]) for i, s in enumerate(STARTS)},
            "cos_grad": {s: summary(cos[:, i, 1]) for i, s in enumerate(STARTS)},
            "A": summary(A)}


def _value(entry: dict, quantity: str, start: str = "own") -> dict:
    return entry["A"] if quantity == "A" else entry[quantity][start]


def correlations(entries: list[dict]) -> dict[str, Any]:
    """Spearman's ρ between each quantity (of the shared start) and the gain.

    ``settings``: over the settings' means, each distinct setting (``key``) once; ``runs``: over every
    (setting, run) pair; ``families``: over the settings of each family with at least 3 of them.
    """
    distinct = list({e["key"]: e for e in entries}.values())

    def rho(es, q):
        return spearman([_value(e, q)["mean"] for e in es], [e["gain"]["mean"] for e in es])

    out: dict[str, Any] = {"settings": {q: rho(distinct, q) for q in QUANTITIES}, "n_settings": len(distinct)}
    out["runs"] = {q: spearman(np.concatenate([_value(e, q)["values"] for e in distinct]),
                               np.concatenate([e["gain"]["values"] for e in distinct])) for q in QUANTITIES}
    fams: dict[str, list] = {}
    for e in entries:
        fams.setdefault(e["family"], []).append(e)
    out["families"] = {f: {**{q: rho(es, q) for q in QUANTITIES}, "n_settings": len(es)}
                       for f, es in fams.items() if len(es) >= 3}
    return out


#: The study records this module reads: keyword of :func:`run_one_step` -> (record format, settings function).
SOURCES = {"input_families": ("subliminal-mlp/input-families", _input_families_settings),
           "teacher_task": ("subliminal-mlp/teacher-task", _teacher_task_settings)}


def run_one_step(data, *, input_families: Optional[Mapping[str, Any]] = None,
                 teacher_task: Optional[Mapping[str, Any]] = None, progress: bool = False,
                 log: Callable[[str], None] = lambda s: None) -> dict[str, Any]:
    """The single-step quantities of every setting of the given study records, against their gains.

    ``input_families``: a record of :func:`~subliminal_mlp.studies.input_families.run_input_families`
    (``read_results("figures/input_families.json")``); ``teacher_task``: one of
    :func:`~subliminal_mlp.studies.teacher_task.run_teacher_task` (its classes and teacher-epochs
    parts). Each record's protocol (config, seeds, settings) is rerun with 0 student epochs, on
    ``data`` (the dataset the records were made on: checked by checksum). The records must share
    their config's protocol (``n_runs``, seed). Returns the record (format ``subliminal-mlp/one-step``,
    version 1)::

        "settings": [{"family", "label", "key", "gain": {...per run},
                      "cos_update" | "cos_grad": {"own" | "cross": {"mean", "ci95", "values"}},
                      "A": {...}}],
        "correlations": {"settings": {quantity: ρ}, "n_settings", "runs": {...}, "families": {...}},
        "sources": {name: {"format", "created"}}, "programs": [...]

    A family is an input family (distribution, subspace, ...) or a teacher-task part (classes,
    teacher_epochs); ``key`` names the setting, so a setting shown in several families counts once.
    """
    t_start = time.perf_counter()
    given = {name: rec for name, rec in (("input_families", input_families), ("teacher_task", teacher_task))
             if rec is not None}
    if not given:
        raise ConfigError("give at least one study record: input_families= or teacher_task= (read_results(...)).")
    for name, rec in given.items():
        fmt = SOURCES[name][0]
        if rec.get("format") != fmt:
            raise ConfigError(f"{name} is a {rec.get('format')!r} record; give a {fmt} record "
                              f"(read_results('figures/{name}.json')).")
    configs = {repr(Config.from_dict(rec["config"])) for rec in given.values()}
    if len(configs) > 1:  # one protocol: the paper's setting of each record is the same computation
        raise ConfigError("the records were made with different configs (protocol, runs, seed); give records of "
                          "one protocol.")
    first_rec = next(iter(given.values()))
    rec_data = data_record(data, name=first_rec["config"].get("dataset", "mnist"))
    for name, rec in given.items():
        want = rec.get("data", {}).get("sha256")
        if want and rec_data.get("sha256") and want != rec_data["sha256"]:
            raise ConfigError(f"the data differ from those the {name} record was made on (checksums); "
                              "load the same dataset files.")
    entries, programs, first = [], [], None
    for name, rec in given.items():
        e, p, f = SOURCES[name][1](rec, data, progress, log)
        entries += e
        programs += p
        first = first or f
    return envelope(FORMAT, first_rec["config"], n_runs=first_rec["n_runs"], seed=first_rec["seeds"]["seed"],
                    data=rec_data, devices=first.devices,
                    timing={"compile_s": sum(p["compile_s"] for p in programs),
                            "run_s": sum(p["run_s"] for p in programs), "total_s": time.perf_counter() - t_start},
                    settings=entries, correlations=correlations(entries),
                    sources={name: {"format": rec["format"], "created": rec.get("created")}
                             for name, rec in given.items()},
                    programs=programs,
                    definitions={"cos_update": "cos(first Adam update of the student, θT − θ0)",
                                 "cos_grad": "cos(−∇L_S at the start, θT − θ0)",
                                 "A": "first-order coefficient at θ0, teacher's first task step (theorem, §2)",
                                 "gain": "acc(student_aux) − acc(cross_aux), from the source record"})


def format_one_step_table(record: dict[str, Any]) -> str:
    """Per setting: the gain and the single-step quantities (shared start; cross start in brackets)."""
    head = f"{'family':<13} {'setting':<16} {'gain':>8} {'cos update':>18} {'cos grad':>18} {'A':>10}"
    lines = [head, "-" * len(head)]
    for e in record["settings"]:
        cu, cg = e["cos_update"], e["cos_grad"]
        lines.append(f"{e['family']:<13} {e['label']:<16} {e['gain']['mean']:>+8.3f} "
                     f"{cu['own']['mean']:>8.4f} ({cu['cross']['mean']:+.4f}) "
                     f"{cg['own']['mean']:>8.4f} ({cg['cross']['mean']:+.4f}) {e['A']['mean']:>10.3g}")
    c = record["correlations"]
    fmt = lambda v: "—" if v is None else f"{v:+.2f}"  # noqa: E731
    lines.append(f"Spearman ρ with the gain over {c['n_settings']} settings: "
                 + ", ".join(f"{q} {fmt(c['settings'][q])}" for q in QUANTITIES))
    for f, v in c["families"].items():
        lines.append(f"  within {f} ({v['n_settings']}): " + ", ".join(f"{q} {fmt(v[q])}" for q in QUANTITIES))
    return "\n".join(lines)


def plot_one_step(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Three panels, one per quantity (shared start): the gain against it, one point per setting,
    mean ± 95 % CI over the runs on both axes, coloured by family; ρ in each title."""
    from ..report.plotting import plt, save_figure, settings_caption

    fams = list(dict.fromkeys(e["family"] for e in record["settings"]))
    colors = dict(zip(fams, plt.get_cmap("tab10").colors))
    titles = {"cos_update": "cos(first Adam update, θT − θ0)", "cos_grad": "cos(−∇L_S(θ0), θT − θ0)",
              "A": "A (theorem, teacher's first step)"}
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    c = record["correlations"]
    for ax, q in zip(axes, QUANTITIES):
        for f in fams:
            es = [e for e in record["settings"] if e["family"] == f]
            x = [_value(e, q)["mean"] for e in es]
            ax.errorbar(x, [e["gain"]["mean"] for e in es], xerr=[_value(e, q)["ci95"] or 0 for e in es],
                        yerr=[e["gain"]["ci95"] or 0 for e in es], ls="none", marker="o", ms=4, capsize=2,
                        color=colors[f], label=f)
        if q != "A":  # the control: the same quantity from another run's θ0'
            xs = [e[q]["cross"]["mean"] for e in record["settings"]]
            ax.scatter(xs, [e["gain"]["mean"] * 0 for e in record["settings"]], marker="x", s=14, color="#888888",
                       label="cross start θ0' (at gain 0)")
        if q == "A":  # A spans orders of magnitude (it grows with the input scale): a symmetric-log axis
            positive = [_value(e, q)["mean"] for e in record["settings"] if _value(e, q)["mean"] > 0]
            ax.set_xscale("symlog", linthresh=min(positive) if positive else 1.0)
        rho = c["settings"][q]
        ax.set_title(f"{titles[q]}\nSpearman ρ = {'—' if rho is None else f'{rho:+.2f}'} "
                     f"({c['n_settings']} settings)", fontsize=9.5)
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
        cols = [e["gain"]["values"], e["cos_update"]["own"]["values"], e["cos_grad"]["own"]["values"],
                e["cos_update"]["cross"]["values"], e["cos_grad"]["cross"]["values"], e["A"]["values"]]
        for i, vals in enumerate(zip(*cols)):
            out.append([e["family"], e["label"], i, *(f"{v:.6g}" for v in vals)])
    return ["family", "setting", "run", "gain", "cos_update_own", "cos_grad_own", "cos_update_cross",
            "cos_grad_cross", "A"], out


def write_one_step(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "one_step") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (one row per setting and run) and ``<stem>.png`` atomically."""
    out = Path(out_dir)
    files = write_record(record, out, stem, csv=_csv_rows(record), indent=1)
    return {**files, "png": plot_one_step(record, out / f"{stem}.png")}
