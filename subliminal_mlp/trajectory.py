"""Student accuracy over the distillation steps, traced inside the compiled training loop.

For each run: the teacher as in the protocol, then two aux-only students (from the teacher's
initialisation and from another run's), whose test accuracy on a fixed subset of the test set is
measured every ``probe_every`` steps inside the ``lax.scan`` (no host round-trip).

The computation is an engine :class:`~subliminal_mlp.engine.Experiment` (:func:`trajectory_experiment`):
the two students are a table, the probe is a ``trace``; :func:`student_trajectories` runs it with
:func:`engine.run` (one compiled, sharded program) and turns the
:class:`~subliminal_mlp.engine.Result` into this module's record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from . import engine, inputs
from .config import Config
from .engine import Experiment, RunModels, run_keys
from .experiment import require_plain_students
from .losses import distillation_loss
from .model import accuracy, concat_params, logit_mask, stack_params
from .models import config_model
from .results import data_record, envelope, mean_ci95, mean_ci95_columns, run_timing, write_record
from .students import Student, adam
from .training import scan_epochs, steps_per_epoch, teacher_train_step

FORMAT = "subliminal-mlp/trajectory"
STUDENTS = ("student_aux", "cross_aux")
#: Kept for traits.py until it imports experiment.require_plain_students directly.
require_uniform_noise = require_plain_students


def _check_probe(probe_every, n_probe) -> None:
    if isinstance(probe_every, bool) or not isinstance(probe_every, int) or probe_every < 1:
        raise ValueError(f"probe_every = {probe_every!r} is invalid: it must be an integer >= 1 (steps).")
    if isinstance(n_probe, bool) or not isinstance(n_probe, int) or n_probe < 1:
        raise ValueError(f"n_probe = {n_probe!r} is invalid: it must be an integer >= 1 (test images).")


def probe_accuracy(n_probe: int):
    """The trace ``f(RunModels) -> (2,)``: each student's accuracy on the first ``n_probe`` test images."""

    def probe(view: RunModels) -> jax.Array:
        stack = stack_params(*[view.students[name] for name in STUDENTS])
        px, py = view.data["test_x"][:n_probe], view.data["test_y"][:n_probe]
        return jax.vmap(accuracy, (0, None, None, None, None, None))(stack, px, py, view.model.n_classes, 1000,
                                                                     view.model.apply)

    return probe


def trajectory_experiment(cfg: Config, *, probe_every: int = 10, n_probe: int = 2000) -> Experiment:
    """The engine experiment: ``cfg``'s teacher, two aux-only students (own and cross start), the probe as a trace."""
    _check_probe(probe_every, n_probe)
    table = tuple(Student(name, start, "aux", loss=cfg.loss) for name, start in zip(STUDENTS, ("own", "cross")))
    return Experiment(model=config_model(cfg), inputs=inputs.uniform(cfg.n_noise, shape=(cfg.input_dim,)),
                      students=table, teacher_epochs=cfg.teacher_epochs, student_epochs=cfg.student_epochs,
                      batch_size=cfg.batch_size,
                      hparams={"learning_rate": cfg.learning_rate, "temperature": cfg.temperature},
                      trace={"accuracy": probe_accuracy(n_probe)}, trace_every=probe_every,
                      name=f"trajectory:{cfg.dataset}")


def student_trajectories(cfg: Config, data, *, probe_every: int = 10, n_probe: int = 2000) -> dict[str, Any]:
    """The accuracy traces of ``cfg.n_runs`` runs: a JSON-ready record with per-step mean and 95 % CI.

    The record is the envelope of :mod:`.results` (format ``subliminal-mlp/trajectory``, version 1;
    ``data.subset`` names the probe images) with this payload::

        "probe_every": 10, "n_probe": 2000, "steps": [probed steps], "steps_per_epoch": ..,
        "curves": {student: {"mean": [one per probe], "ci95": [...], "per_run": [[...], ...]}},
        "final": {model: {"mean", "ci95", "accuracies": [one per run]}}   # reference, teacher, students
    """
    require_plain_students(cfg, "student_trajectories")
    exp = trajectory_experiment(cfg, probe_every=probe_every, n_probe=n_probe)
    cfg.check_data(data.train_images.shape[0], data.train_images.shape[1])
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=cfg.n_runs, seed=cfg.seed,
                        run_batch=cfg.run_batch)
    traces = result.traces["accuracy"][0]  # (runs, P, 2)
    curves = {name: {**mean_ci95_columns(traces[:, :, k]), "per_run": traces[:, :, k].tolist()}
              for k, name in enumerate(STUDENTS)}
    finals = {}
    for name in ("reference", "teacher", *STUDENTS):
        acc = result.accuracy(name)
        finals[name] = dict(zip(("mean", "ci95"), mean_ci95(acc)), accuracies=acc.tolist())
    subset = {"probe_test_images": [0, min(n_probe, data.test_images.shape[0])]}
    return envelope(FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
                    data=data_record(data, name=cfg.dataset, subset=subset),
                    devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
                    probe_every=probe_every, n_probe=n_probe, steps=result.trace_steps.tolist(),
                    steps_per_epoch=steps_per_epoch(cfg.n_noise, cfg.batch_size), curves=curves, final=finals)


def traced_run(cfg: Config, run, train_x, train_y, test_x, test_y, probe_every: int, n_probe: int):
    """Run ``run`` of :func:`trajectory_experiment` as a traceable function: ``(reference, teacher, students, trace)``.

    For callers that put one run inside a program of their own (the demo, which also shows the
    noise and the aux outputs): the same keys, teacher, students and probe as the engine's run
    (teacher: :func:`training.teacher_train_step` over :func:`training.scan_epochs`; students: the
    aux-only pair stacked, one Adam over the stack); ``students`` is their stack (own, cross) and
    ``trace`` the ``(P, 2)`` probe accuracies.
    """
    _check_probe(probe_every, n_probe)
    model = config_model(cfg)
    keys = run_keys(cfg.seed, run)
    refs = engine.references(model, cfg.seed, run, cfg.n_runs)
    ref = refs["own"]
    opt = adam(cfg.learning_rate)
    teach = teacher_train_step(model.apply, cfg.n_classes, opt, train_x, train_y, with_loss=False)
    teacher = scan_epochs(teach, (ref, opt.init(ref)), keys["teacher_shuffle"], train_x.shape[0], cfg.batch_size,
                          cfg.teacher_epochs).state[0]
    src = inputs.uniform(cfg.n_noise, shape=(cfg.input_dim,))
    src_ctx = src.prepare(keys["noise"], {}, {})
    loss_fn = distillation_loss(cfg.loss)
    if cfg.loss == "kl" and cfg.temperature != 1:
        base, T = loss_fn, cfg.temperature
        loss_fn = lambda z, y, m: base(z / T, y / T, m) * T**2  # noqa: E731
    grads = jax.vmap(jax.grad(lambda p, x, t, m: loss_fn(model.apply(p, x), t, m)), (0, None, None, 0))
    masks = jnp.stack([logit_mask(cfg, "aux")] * len(STUDENTS))

    def step(state, idx):
        p, o = state
        x = src.draw(src_ctx, idx, {})
        updates, o = opt.update(grads(p, x, model.apply(teacher, x), masks), o, p)
        return (optax.apply_updates(p, updates), o), ()

    px, py = test_x[:n_probe], test_y[:n_probe]
    probe = lambda st: jax.vmap(accuracy, (0, None, None, None))(st[0], px, py, cfg.n_classes)  # noqa: E731
    start = stack_params(ref, refs["cross"])
    (students, _), _, trace = scan_epochs(step, (start, opt.init(start)), keys["student_shuffle"], cfg.n_noise,
                                          cfg.batch_size, cfg.student_epochs, probe=probe, probe_every=probe_every)
    return ref, teacher, students, trace


def final_accuracies(ref, teacher, students, test_x, test_y, n_classes):
    """Test accuracy of (reference, teacher, shared-init student, cross-model student)."""
    models = concat_params(stack_params(ref, teacher), students)
    return jax.vmap(accuracy, (0, None, None, None))(models, test_x, test_y, n_classes)


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
