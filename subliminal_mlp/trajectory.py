"""Student accuracy over the distillation steps, traced inside the compiled training loop.

For each run: the teacher as in the protocol, then two aux-only students (from the teacher's
initialisation and from another run's), whose test accuracy on a fixed subset of the test set is
measured every ``probe_every`` steps by a probe inside the ``lax.scan`` (no host round-trip).
All runs are one jitted program (``lax.map`` over runs).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from .config import Config
from .experiment import map_runs, references, require_plain_students, run_keys
from .model import accuracy, concat_params, logit_mask, stack_params
from .results import data_record, envelope, mean_ci95, mean_ci95_columns, run_timing, write_record
from .training import distill_students, probe_steps, steps_per_epoch, train_teacher

FORMAT = "subliminal-mlp/trajectory"
STUDENTS = ("student_aux", "cross_aux")


def traced_run(cfg: Config, run, train_x, train_y, test_x, test_y, probe_every: int, n_probe: int):
    """One run (traceable): ``(reference, teacher, students, trace)``; ``trace`` is (P, 2) accuracies."""
    keys = run_keys(cfg.seed, run)
    refs = references(cfg, cfg.seed, run)
    ref = refs["own"]
    teacher = train_teacher(ref, train_x, train_y, keys["teacher_shuffle"], cfg)
    start = stack_params(ref, refs["cross"])
    px, py = test_x[:n_probe], test_y[:n_probe]
    probe = lambda s: jax.vmap(accuracy, (0, None, None, None))(s, px, py, cfg.n_classes)  # noqa: E731
    mask = logit_mask(cfg, "aux")
    students, trace = distill_students(start, teacher, jnp.stack([mask, mask]), keys["noise"],
                                       keys["student_shuffle"], cfg, probe=probe, probe_every=probe_every)
    return ref, teacher, students, trace


def final_accuracies(ref, teacher, students, test_x, test_y, n_classes):
    """Test accuracy of (reference, teacher, shared-init student, cross-model student)."""
    models = concat_params(stack_params(ref, teacher), students)
    return jax.vmap(accuracy, (0, None, None, None))(models, test_x, test_y, n_classes)


def student_trajectories(cfg: Config, data, *, probe_every: int = 10, n_probe: int = 2000) -> dict[str, Any]:
    """The accuracy traces of ``cfg.n_runs`` runs: a JSON-ready record with per-step mean and 95 % CI.

    The record is the envelope of :mod:`.results` (format ``subliminal-mlp/trajectory``, version 1;
    ``data.subset`` names the probe images) with this payload::

        "probe_every": 10, "n_probe": 2000, "steps": [probed steps], "steps_per_epoch": ..,
        "curves": {student: {"mean": [one per probe], "ci95": [...], "per_run": [[...], ...]}},
        "final": {model: {"mean", "ci95", "accuracies": [one per run]}}   # reference, teacher, students
    """
    require_plain_students(cfg, "student_trajectories")
    cfg.check_data(data.train_images.shape[0], data.train_images.shape[1])

    def one_run(run, train_x, train_y, test_x, test_y):
        ref, teacher, students, trace = traced_run(cfg, run, train_x, train_y, test_x, test_y, probe_every, n_probe)
        return trace, final_accuracies(ref, teacher, students, test_x, test_y, cfg.n_classes)

    args = (data.train_images, data.train_labels, data.test_images, data.test_labels)
    (traces, final), compile_s, run_s = map_runs(one_run, cfg.n_runs, args)
    steps = probe_steps(cfg.n_noise, cfg.batch_size, cfg.student_epochs, probe_every)
    per_epoch = steps_per_epoch(cfg.n_noise, cfg.batch_size)
    curves = {}
    for k, name in enumerate(STUDENTS):
        curves[name] = {**mean_ci95_columns(traces[:, :, k]), "per_run": traces[:, :, k].tolist()}
    finals = {name: dict(zip(("mean", "ci95"), mean_ci95(final[:, i])), accuracies=final[:, i].tolist())
              for i, name in enumerate(("reference", "teacher", *STUDENTS))}
    subset = {"probe_test_images": [0, min(n_probe, data.test_images.shape[0])]}
    return envelope(FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
                    data=data_record(data, name=cfg.dataset, subset=subset),
                    devices=[str(d) for d in jax.devices()], timing=run_timing(compile_s, run_s),
                    probe_every=probe_every, n_probe=n_probe, steps=steps.tolist(), steps_per_epoch=per_epoch,
                    curves=curves, final=finals)


def plot_trajectories(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Mean accuracy ± 95 % CI against distillation steps (epochs on the top axis)."""
    from .plotting import COLORS, plt, save_figure, settings_caption

    steps = np.asarray(record["steps"])
    fig, ax = plt.subplots(figsize=(8, 4.4))
    labels = {"student_aux": "student (aux only), same init", "cross_aux": "cross-model (aux only)"}
    for name, c in record["curves"].items():
        mean = np.asarray(c["mean"])
        ci = np.asarray([0.0 if v is None else v for v in c["ci95"]])
        ax.plot(steps, mean, color=COLORS[name], lw=2, label=labels[name])
        ax.fill_between(steps, mean - ci, mean + ci, color=COLORS[name], alpha=0.2, linewidth=0)
    ax.axhline(record["final"]["teacher"]["mean"], color=COLORS["teacher"], ls="--", lw=1.2, label="teacher")
    ax.axhline(0.1, color="black", ls=":", lw=1.2, label="chance")
    ax.set_ylim(0, 1)
    ax.set_xlabel("distillation step")
    ax.set_ylabel(f"test accuracy (first {record['n_probe']} test images)")
    top = ax.secondary_xaxis("top", functions=(lambda s: s / record["steps_per_epoch"],
                                               lambda e: e * record["steps_per_epoch"]))
    top.set_xlabel("epoch")
    ax.legend(fontsize=8, loc="center right", frameon=False)
    ax.spines[["right"]].set_visible(False)
    fig.text(0.5, -0.02, settings_caption(record["config"], record["n_runs"]), ha="center", va="top", fontsize=7)
    return save_figure(fig, path)


def write_trajectories(record: dict[str, Any], out_dir: str | os.PathLike, stem: str) -> dict[str, Path]:
    """Write ``<stem>.json`` (:func:`.results.write_record`) and ``<stem>.png`` atomically; return their paths."""
    out = Path(out_dir)
    return {**write_record(record, out, stem, indent=1), "png": plot_trajectories(record, out / f"{stem}.png")}
