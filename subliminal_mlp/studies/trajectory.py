"""Student accuracy over the distillation steps, traced inside the compiled training loop.

For each run: the teacher as in the protocol, then two aux-only students (from the teacher's
initialisation and from another run's), whose test accuracy on a fixed subset of the test set is
measured at every ``probe_every``-th batch of each epoch (the count restarts each epoch; the
record's ``steps`` are the exact steps) and after the last step, inside the ``lax.scan`` (no host
round-trip).

The computation is an engine :class:`~subliminal_mlp.core.engine.Experiment` (:func:`trajectory_experiment`):
the two students are a table, the probe is a ``trace``; :func:`student_trajectories` runs it with
:func:`engine.run` (one compiled, sharded program) and turns the
:class:`~subliminal_mlp.core.engine.Result` into this module's record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import numpy as np

from ..core import engine
from ..core.config import Config, ConfigError, check_positive_int, plain_scalar
from ..core.engine import Experiment, RunModels
from .figure10 import config_students, experiment_from_config, given_input_dataset
from ..core.model import accuracy, stack_params
from ..core.results import data_record, envelope, mean_ci95, mean_ci95_columns, run_timing, write_record
from ..core.students import Student
from ..core.training import steps_per_epoch

FORMAT = "subliminal-mlp/trajectory"
STUDENTS = ("student_aux", "cross_aux")


def check_probe(probe_every, n_probe, n_test=None) -> tuple[int, int]:
    """``(probe_every, n_probe)`` as Python ints; ConfigError unless both are integers >= 1 and, when the
    number of test images ``n_test`` is given, ``n_probe <= n_test``."""
    probe_every, n_probe = plain_scalar(probe_every), plain_scalar(n_probe)
    check_positive_int("probe_every", probe_every, unit="steps")
    check_positive_int("n_probe", n_probe, unit="test images")
    if n_test is not None and n_probe > n_test:
        raise ConfigError(f"n_probe = {n_probe} is larger than the {n_test} test images: lower it.")
    return probe_every, n_probe


def probe_accuracy(n_probe: int):
    """The trace ``f(RunModels) -> (2,)``: each student's accuracy on the first ``n_probe`` test images."""

    def probe(view: RunModels) -> jax.Array:
        stack = stack_params(*[view.students[name] for name in STUDENTS])
        px, py = view.data["test_x"][:n_probe], view.data["test_y"][:n_probe]
        return jax.vmap(accuracy, (0, None, None, None, None, None))(stack, px, py, view.model.n_classes, 1000,
                                                                     view.model.apply)

    return probe


def trajectory_experiment(cfg: Config, *, probe_every: int = 10, n_probe: int = 2000, pool=None) -> Experiment:
    """The engine experiment: ``cfg``'s teacher, two aux-only students (own and cross start), the probe as a trace.

    ``cfg``'s variants apply (inputs, ``pool``, init noise, loss:
    :func:`~subliminal_mlp.studies.figure10.config_students`).
    """
    probe_every, n_probe = check_probe(probe_every, n_probe)
    table = config_students(cfg, [Student(name, start, "aux") for name, start in zip(STUDENTS, ("own", "cross"))])
    return experiment_from_config(cfg, pool).replace(students=table, trace={"accuracy": probe_accuracy(n_probe)},
                                                     trace_every=probe_every, name=f"trajectory:{cfg.dataset}")


def student_trajectories(cfg: Config, data, *, probe_every: int = 10, n_probe: int = 2000,
                         input_data=None) -> dict[str, Any]:
    """The accuracy traces of ``cfg.n_runs`` runs: a JSON-ready record with per-step mean and 95 % CI.

    ``input_data``: the students' images when ``cfg.student_inputs`` is "fashion-mnist" (a loaded
    Fashion-MNIST; default: the usual lookup), recorded under ``data["inputs"]``.

    The record is the envelope of :mod:`.results` (format ``subliminal-mlp/trajectory``, version 1;
    ``data.subset`` names the probe images) with this payload::

        "probe_every": 10, "n_probe": 2000, "steps": [probed steps], "steps_per_epoch": ..,
        "curves": {student: {"mean": [one per probe], "ci95": [...], "per_run": [[...], ...]}},
        "final": {model: {"mean", "ci95", "accuracies": [one per run]}}   # reference, teacher, students
    """
    probe_every, n_probe = check_probe(probe_every, n_probe, data.test_images.shape[0])
    source = given_input_dataset(cfg, input_data)
    exp = trajectory_experiment(cfg, probe_every=probe_every, n_probe=n_probe,
                                pool=None if source is None else source.train_images)
    cfg.check_dataset(data)
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=cfg.n_runs, seed=cfg.seed,
                        run_batch=cfg.run_batch)
    traces = result.traces["accuracy"][0]  # (runs, P, 2)
    curves = {name: {**mean_ci95_columns(traces[:, :, k]), "per_run": traces[:, :, k].tolist()}
              for k, name in enumerate(STUDENTS)}
    finals = {}
    for name in ("reference", "teacher", *STUDENTS):
        acc = result.accuracy(name)
        finals[name] = dict(zip(("mean", "ci95"), mean_ci95(acc)), accuracies=acc.tolist())
    subset = {"probe_test_images": [0, n_probe]}
    return envelope(FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
                    data=data_record(data, name=cfg.dataset, subset=subset, inputs=source),
                    devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
                    probe_every=probe_every, n_probe=n_probe, steps=result.trace_steps.tolist(),
                    steps_per_epoch=steps_per_epoch(result.experiment.inputs.n, cfg.batch_size), curves=curves,
                    final=finals, health=result.health(0))


def plot_trajectories(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Mean accuracy ± 95 % CI against distillation steps (epochs on the top axis)."""
    from matplotlib.ticker import MaxNLocator

    from ..report.plotting import COLORS, plt, save_figure, settings_caption

    steps = np.asarray(record["steps"])
    fig, ax = plt.subplots(figsize=(8, 4.4))
    labels = {"student_aux": "student (aux only), same init", "cross_aux": "cross-model (aux only)"}
    for name, c in record["curves"].items():
        mean = np.asarray(c["mean"])
        ci = np.asarray([0.0 if v is None else v for v in c["ci95"]])
        ax.plot(steps, mean, color=COLORS[name], lw=2, label=labels[name])
        ax.fill_between(steps, mean - ci, mean + ci, color=COLORS[name], alpha=0.2, linewidth=0)
    # The end point on the whole test set (the numbers the tables quote), beside the probe's curve.
    end = steps[-1] + 0.025 * (steps[-1] - steps[0] or 1)
    for name in record["curves"]:
        final = record["final"][name]
        ax.errorbar([end], [final["mean"]], yerr=[final["ci95"] or 0.0], fmt="D", ms=5, capsize=3,
                    color=COLORS[name])
        ax.annotate(f"{final['mean']:.3f}", (end, final["mean"]), xytext=(7, 0), textcoords="offset points",
                    va="center", fontsize=8, color=COLORS[name],
                    bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none"))
    ax.errorbar([], [], fmt="D", ms=5, color="grey", label="after the last epoch, all test images")
    ax.axhline(record["final"]["teacher"]["mean"], color=COLORS["teacher"], ls="--", lw=1.2,
               label="teacher (all test images)")
    ax.axhline(0.1, color="black", ls=":", lw=1.2, label="chance")
    ax.set_ylim(0, 1)
    ax.set_xlim(right=steps[-1] + 0.09 * (steps[-1] - steps[0] or 1))
    ax.set_xlabel("distillation step")
    ax.set_ylabel(f"test accuracy (curves: first {record['n_probe']} test images)")
    top = ax.secondary_xaxis("top", functions=(lambda s: s / record["steps_per_epoch"],
                                               lambda e: e * record["steps_per_epoch"]))
    top.xaxis.set_major_locator(MaxNLocator(integer=True, steps=[1, 2, 5, 10]))
    top.set_xlabel("epoch")
    ax.legend(fontsize=8, loc="center right", frameon=False)
    ax.spines[["right"]].set_visible(False)
    fig.text(0.5, -0.02, settings_caption(record["config"], record["n_runs"]), ha="center", va="top", fontsize=7)
    return save_figure(fig, path, record=record)


def write_trajectories(record: dict[str, Any], out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.json`` (:func:`.results.write_record`) and ``<stem>.png`` atomically; return their paths."""
    return write_record(record, out_dir, stem, indent=1, figure=plot_trajectories)
