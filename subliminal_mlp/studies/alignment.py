"""Multi-step gradient alignment during distillation, and the projection test (protocol.md §4).

Kitkana & Arora (2026) report that, through many distillation steps, the distillation gradient
stays weakly but consistently aligned with the gradient of the teacher's task (the "trait"), and
that this alignment drives trait acquisition. Here, at every distillation step and for every
student, the experiment's step metric ``cos`` (:func:`alignment_experiment`) measures

    cos_t = cos(g_distill, g_task),   g_task = ∇ L_class(θ_t) on a fixed held-out MNIST batch,

(equivalently the cosine between the update −g_distill and the task-improving direction −g_task),
inside the compiled loop, stacked over steps by the scan (an engine ``step_metrics`` entry). The
causal test (Kitkana & Arora's, protocol.md §4) removes from each distillation gradient its component
along g_task when they align, before Adam sees it,

    g ← g − (max(g·g_task, 0) / ‖g_task‖²) · g_task

(:func:`~subliminal_mlp.core.students.project_out` chained before Adam), and measures how much
accuracy the student still gains. One run trains four students on the same noise: shared and
cross-model initialisation, each with and without the projection.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ..core import engine
from ..core.config import Config, ConfigError, check_positive_int, plain_scalar
from ..core.engine import Experiment
from .figure10 import config_students, experiment_from_config, given_input_dataset
from ..core.losses import class_cross_entropy
from ..core.model import accuracy
from ..core.results import data_record, envelope, format_ci, mean_ci95, mean_ci95_columns, run_timing, write_record
from ..core.students import Student, adam, check_projection_rule, cosine, project_out
from ..core.training import steps_per_epoch
from .trajectory import check_probe

FORMAT = "subliminal-mlp/alignment"
#: (name, initialisation, projection weight) of the four students of a run.
STUDENTS = (("student_aux", "own", 0.0), ("cross_aux", "cross", 0.0),
            ("student_aux_projected", "own", 1.0), ("cross_aux_projected", "cross", 1.0))


def task_gradient(held_out: int, n_classes: int):
    """``view -> (params -> ∇ L_class(params))`` on the run's last ``held_out`` test images (the trait gradient)."""
    def for_run(view):
        x, y = view.data["test_x"][-held_out:], view.data["test_y"][-held_out:]
        return jax.grad(lambda p: class_cross_entropy(view.model.apply(p, x), y, n_classes))

    return for_run


def alignment_experiment(cfg: Config, *, held_out: int = 256, probe_every: int = 10,
                         n_probe: int = 2000, pool=None, projection: str = "aligned") -> Experiment:
    """The engine experiment of :func:`run_alignment`: four aux students, two with the projection.

    Students (:data:`STUDENTS`): shared and cross-model initialisation, each plain (Adam) and with
    :func:`~subliminal_mlp.core.students.project_out` of the task gradient chained before Adam (its rule
    ``projection``: ``"aligned"``, Kitkana & Arora's test, or ``"always"``). Step
    metric ``cos``: cos(raw distillation gradient, task gradient) per student at every step;
    trace ``accuracy``: each student's accuracy on the first ``n_probe`` test images at
    every ``probe_every``-th batch of each epoch (the count restarts each epoch; the record's
    ``steps`` are the exact steps). ``cfg``'s variants apply (inputs, ``pool``, init noise, loss:
    :func:`~subliminal_mlp.studies.figure10.config_students`).
    """
    probe_every, n_probe = check_probe(probe_every, n_probe)
    held_out = plain_scalar(held_out)
    check_positive_int("held_out", held_out, unit="test images")
    base = experiment_from_config(cfg, pool)
    grad_of = task_gradient(held_out, cfg.n_classes)
    projection = check_projection_rule(projection, f"projection = {projection!r} is invalid")

    def projected(hp, view):
        return optax.chain(project_out(grad_of(view), when=projection), adam(hp["learning_rate"]))

    names = [n for n, _, _ in STUDENTS]
    table = config_students(cfg, [Student(n, start, "aux", optimizer=projected if w else None)
                                  for n, start, w in STUDENTS])

    def cos(now):
        g_task = grad_of(now.run)
        return jnp.stack([cosine(now.grads[n], g_task(now.run.students[n])) for n in names])

    def probe(view):
        x, y = view.data["test_x"][:n_probe], view.data["test_y"][:n_probe]
        return jnp.stack([accuracy(view.students[n], x, y, cfg.n_classes, apply_fn=view.model.apply) for n in names])

    return base.replace(students=table, step_metrics={"cos": cos}, trace={"accuracy": probe},
                        trace_every=probe_every, name="alignment")


def run_alignment(cfg: Config, data, *, held_out: int = 256, probe_every: int = 10,
                  n_probe: int = 2000, projection: str = "aligned", progress: bool = False,
                  input_data=None) -> dict[str, Any]:
    """Alignment traces and accuracies of the four students of ``cfg.n_runs`` runs (one engine program).

    The held-out batch for g_task is the last ``held_out`` test images; accuracy is traced on the
    first ``n_probe`` test images (disjoint when ``n_probe + held_out <= 10,000``) and measured at the
    end on the whole test set. ``progress``: bars over the phases. ``input_data``: the students'
    images when ``cfg.student_inputs`` is "fashion-mnist" (a loaded Fashion-MNIST; default: the usual
    lookup), recorded under ``data["inputs"]``. Returns the JSON-ready record (the
    envelope of :mod:`.results`, format ``subliminal-mlp/alignment``, version 1) with this payload::

        "held_out": 256, "probe_every": 10, "n_probe": 2000, "projection": "aligned",
        "probe_steps": [...], "steps_per_epoch": ..,
        "cosine": {student: {"mean": [one per step], "ci95": [...]}},
        "mean_cosine": {student: {"mean", "ci95", "fraction_positive"}},
        "accuracy_trace": {student: {"mean": [one per probe], "ci95": [...]}},
        "final": {model: {"mean", "ci95", "accuracies": [one per run]}},   # reference, teacher, students

    and ``data.subset`` naming the test images used for g_task and for the probe.
    """
    cfg.check_dataset(data)
    if cfg.student_epochs == 0:
        raise ConfigError("student_epochs = 0: the alignment study measures the distillation gradient at every "
                          "student step, and there would be none; give student_epochs >= 1.")
    n_test, held_out = data.test_images.shape[0], plain_scalar(held_out)
    probe_every, n_probe = check_probe(probe_every, n_probe, n_test)
    source = given_input_dataset(cfg, input_data)
    exp = alignment_experiment(cfg, held_out=held_out, probe_every=probe_every, n_probe=n_probe,
                               projection=projection, pool=None if source is None else source.train_images)
    if held_out + n_probe > n_test:
        raise ConfigError(f"held_out = {held_out} and n_probe = {n_probe} need more than the {n_test} test images: "
                          "the held-out batch and the probe images must not overlap. Lower them.")
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=cfg.n_runs, seed=cfg.seed,
                        run_batch=cfg.run_batch, progress=progress)
    cos = result.step_metrics["cos"][0]     # (runs, steps, S)
    acc = result.traces["accuracy"][0]      # (runs, probes, S)
    final = result.accuracies[0]            # (runs, 2 + S)
    names = [n for n, _, _ in STUDENTS]

    subset = {"task_gradient_test_images": [n_test - held_out, n_test], "probe_test_images": [0, n_probe]}
    return envelope(
        FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
        data=data_record(data, name=cfg.dataset, subset=subset, inputs=source),
        devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
        held_out=held_out, probe_every=probe_every, n_probe=n_probe, projection=projection,
        probe_steps=result.trace_steps.tolist(),
        steps_per_epoch=steps_per_epoch(result.experiment.inputs.n, cfg.batch_size),
        cosine={n: mean_ci95_columns(cos[:, :, k]) for k, n in enumerate(names)},
        mean_cosine={n: dict(zip(("mean", "ci95"), mean_ci95(cos[:, :, k].mean(axis=1))),
                             fraction_positive=_fraction_positive(cos[:, :, k])) for k, n in enumerate(names)},
        accuracy_trace={n: mean_ci95_columns(acc[:, :, k]) for k, n in enumerate(names)},
        final={n: dict(zip(("mean", "ci95"), mean_ci95(final[:, i])), accuracies=final[:, i].tolist())
               for i, n in enumerate(("reference", "teacher", *names))},
        health=result.health(0),
    )


def _fraction_positive(cos: np.ndarray) -> float:
    """The fraction of steps whose cosine is > 0; NaN when any is NaN (a diverged run's, as its mean)."""
    return float(np.mean(cos > 0)) if np.isfinite(cos).all() else float("nan")


def format_alignment_table(record: dict[str, Any]) -> str:
    """Per student: mean cosine over all steps, fraction of positive steps, final accuracy."""
    rows = [f"{'student':<24} {'mean cos':>10} {'± CI':>8} {'cos > 0':>8} {'final acc':>10} {'± CI':>8}",
            "-" * 74]
    for n, c in record["mean_cosine"].items():
        f = record["final"][n]
        rows.append(f"{n:<24} {c['mean']:>10.4f} {format_ci(c['ci95'], 4):>8} {c['fraction_positive']:>8.2f} "
                    f"{f['mean']:>10.4f} {format_ci(f['ci95'], 4):>8}")
    return "\n".join(rows)


def plot_alignment(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """(a) cosine between distillation and task gradients per step; (b) accuracy over steps."""
    from ..report.plotting import plt, save_figure, settings_caption

    colors = {"student_aux": "#d62728", "cross_aux": "#8c564b", "student_aux_projected": "#ff9896",
              "cross_aux_projected": "#c49c94"}
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.4))
    for n in ("student_aux", "cross_aux"):
        c = record["cosine"][n]
        mean, ci = np.asarray(c["mean"]), np.asarray([v or 0 for v in c["ci95"]])
        steps = np.arange(len(mean))
        ax1.plot(steps, mean, color=colors[n], lw=1.2, label=n.replace("_", " "))
        ax1.fill_between(steps, mean - ci, mean + ci, color=colors[n], alpha=0.25, linewidth=0)
    ax1.axhline(0, color="black", lw=0.8)
    ax1.set_xlabel("distillation step")
    ax1.set_ylabel("cos(distillation gradient, task gradient)")
    ax1.set_title("(a) alignment of each distillation step with the teacher's task", fontsize=10)
    ax1.legend(fontsize=8, frameon=False)
    steps = np.asarray(record["probe_steps"])
    removed = {"aligned": "(aligned task component removed)", "always": "(task component removed)"}[
        record.get("projection", "always")]  # records before the rule was recorded removed it on every step
    for n, c in record["accuracy_trace"].items():
        mean, ci = np.asarray(c["mean"]), np.asarray([v or 0 for v in c["ci95"]])
        style = "--" if n.endswith("projected") else "-"
        label = n.replace("_", " ").replace("projected", removed)
        ax2.plot(steps, mean, style, color=colors[n], lw=2, label=label)
        ax2.fill_between(steps, mean - ci, mean + ci, color=colors[n], alpha=0.2, linewidth=0)
    ax2.axhline(0.1, color="black", ls=":", lw=1, label="chance")
    ax2.set_ylim(0, 1)
    ax2.set_xlabel("distillation step")
    ax2.set_ylabel(f"test accuracy (first {record['n_probe']} test images)")
    ax2.set_title("(b) accuracy gained, with and without the projection", fontsize=10)
    ax2.legend(fontsize=8, frameon=False, loc="upper left")
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.5, -0.02, settings_caption(record["config"], record["n_runs"])
             + f"; task gradient on {record['held_out']} held-out test images", ha="center", va="top", fontsize=7.5)
    return save_figure(fig, path, record=record)


def write_alignment(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "alignment") -> dict[str, Path]:
    """Write ``<stem>.json`` (:func:`.results.write_record`) and ``<stem>.png`` atomically; return their paths."""
    return write_record(record, out_dir, stem, indent=1, figure=plot_alignment)
