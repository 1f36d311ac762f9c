"""Hinton's omitted digit (Hinton, Vinyals & Dean 2015; protocol.md §1).

The teacher learns all of MNIST. Students are distilled on *all* of the teacher's logits over the
MNIST training images with every example of one digit (3 by default) removed, so they never see
that digit, yet they classify it. Two students per run: one from the teacher's initialisation,
one from a different one (Hinton's student was an independent network).

The computation is an engine :class:`~subliminal_mlp.core.engine.Experiment`
(:func:`omitted_digit_experiment`): the distillation inputs are ``inputs.images(pool)`` with the
pool the training images without the digit, the two students a table, the per-subset accuracies a
metric; :func:`run_omitted_digit` runs it with :func:`engine.run` (one compiled, sharded program)
and turns the :class:`~subliminal_mlp.core.engine.Result` into this module's record.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ..core import engine, inputs
from ..core.config import Config, ConfigError, is_integer, plain_scalar
from ..core.engine import Experiment, RunModels
from ..core.model import class_logits, concat_params, nan_unless_finite, stack_params
from ..core.models import config_model
from ..core.results import data_record, envelope, format_ci, mean_ci95, run_timing, write_record
from ..core.students import Student

FORMAT = "subliminal-mlp/omitted-digit"
MODELS = ("teacher", "student_same_init", "student_other_init")
SUBSETS = ("all_digits", "omitted_digit", "other_digits")
#: The distilled students (engine names, in :data:`MODELS` order after the teacher): start, outputs.
STUDENTS = (Student("student_same_init", "own", "all"), Student("student_other_init", "cross", "all"))


def accuracy_on(params: dict, images: jax.Array, labels: jax.Array, where: jax.Array, n_classes: int,
                apply_fn=None) -> jax.Array:
    """Accuracy over the test examples selected by the boolean mask ``where`` (NaN for a model with
    non-finite parameters, as the engine's accuracies: :func:`~subliminal_mlp.core.model.nan_unless_finite`).

    ``apply_fn(params, x)`` is the model (default: the paper's MLP read off ``params``).
    """
    if apply_fn is None:
        from ..core.model import apply as apply_fn
    hit = jnp.argmax(class_logits(apply_fn(params, images), n_classes), axis=-1) == labels
    return nan_unless_finite(jnp.sum(hit & where) / jnp.maximum(jnp.sum(where), 1), params)


def subset_accuracies(digit: int):
    """The metric ``f(RunModels) -> (3, 3)``: accuracy of each of :data:`MODELS` (rows) on each of :data:`SUBSETS`."""

    def metric(view: RunModels) -> jax.Array:
        test_x, test_y = view.data["test_x"], view.data["test_y"]
        models = concat_params(stack_params(view.teacher), stack_params(*[view.students[s.name] for s in STUDENTS]))
        wheres = jnp.stack([jnp.ones_like(test_y, bool), test_y == digit, test_y != digit])
        per_subset = jax.vmap(accuracy_on, (None, None, None, 0, None, None))
        return jax.vmap(per_subset, (0, None, None, None, None, None))(models, test_x, test_y, wheres,
                                                                       view.model.n_classes, view.model.apply)

    return metric


def distillation_pool(data, digit: int) -> np.ndarray:
    """The training images without ``digit``, in their order: the students' fixed distillation set."""
    keep = np.flatnonzero(np.asarray(data.train_labels) != digit)
    return np.asarray(data.train_images)[keep]


def omitted_digit_experiment(cfg: Config, pool, digit: int = 3) -> Experiment:
    """The engine experiment: ``cfg``'s teacher on all classes, two all-logit students on ``pool``, the metric.

    The students take ``cfg``'s loss and start noise (:func:`~.figure10.config_students`); their
    inputs are the first ``min(n_noise, len(pool))`` images of ``pool`` (the default ``n_noise`` keeps
    them all).
    """
    from .figure10 import config_students

    first = cfg.n_noise if cfg.n_noise < np.shape(pool)[0] else None  # None: the whole pool
    return Experiment(model=config_model(cfg),
                      inputs=inputs.images(pool, first, name="training images without the digit"),
                      students=config_students(cfg, STUDENTS), teacher_epochs=cfg.teacher_epochs,
                      student_epochs=cfg.student_epochs, batch_size=cfg.batch_size,
                      hparams={"learning_rate": cfg.learning_rate, "temperature": cfg.temperature,
                               **({"init_noise": cfg.init_noise} if cfg.init_noise > 0 else {})},
                      metrics={"subset_accuracy": subset_accuracies(digit)}, name=f"omitted_digit:{cfg.dataset}")


def run_omitted_digit(cfg: Config, data, digit: int = 3) -> dict[str, Any]:
    """Teacher on all digits, students on the teacher's logits over training images without ``digit``.

    Returns the JSON-ready record (the envelope of :mod:`.results`, format
    ``subliminal-mlp/omitted-digit``, version 1) with this payload::

        "digit": 3, "n_distillation_images": 53869,
        "models": {model: {subset: {"mean", "ci95", "accuracies": [one per run]}}}

    per model (teacher, student from the same / another initialisation) and test subset (all
    digits, the omitted digit, the others); ``data.subset`` records the distillation filter.
    ``cfg``'s loss, start noise and ``n_noise`` (at most that many distillation images) apply; its
    ``student_inputs`` must stay "uniform" (the inputs are this study's images).
    """
    digit = plain_scalar(digit)
    if not is_integer(digit, 0, cfg.n_classes - 1):
        raise ConfigError(f"digit = {digit!r} is invalid: give an integer class index in 0..{cfg.n_classes - 1}.")
    if cfg.student_inputs != Config.student_inputs:
        raise ConfigError(f"student_inputs = {cfg.student_inputs!r}: the omitted-digit students are distilled on "
                          "the training images without the digit; leave student_inputs at its default.")
    cfg.check_dataset(data)
    pool = distillation_pool(data, digit)
    if cfg.batch_size > len(pool):
        raise ConfigError(f"batch_size = {cfg.batch_size} is larger than the distillation set: the {len(pool)} "
                          f"training images without digit {digit}. Lower batch_size to at most {len(pool)}.")
    exp = omitted_digit_experiment(cfg, pool, digit)
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=cfg.n_runs, seed=cfg.seed,
                        run_batch=cfg.run_batch)
    acc = np.asarray(result.metrics["subset_accuracy"][0])  # (runs, models, subsets)
    models = {}
    for i, name in enumerate(MODELS):
        models[name] = {}
        for j, subset in enumerate(SUBSETS):
            mean, ci = mean_ci95(acc[:, i, j])
            models[name][subset] = {"mean": mean, "ci95": ci, "accuracies": [float(a) for a in acc[:, i, j]]}
    n_pool = exp.inputs.n
    subset = {"distillation_inputs": "training images without the omitted digit",
              "classes": [k for k in range(cfg.n_classes) if k != digit], "n_train": n_pool}
    return envelope(FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
                    data=data_record(data, name=cfg.dataset, subset=subset),
                    devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
                    digit=digit, n_distillation_images=n_pool, models=models, health=result.health(0))


def format_omitted_table(record: dict[str, Any]) -> str:
    """Mean test accuracy (± 95 % CI) per model on all digits, the omitted digit and the others."""
    d = record["digit"]
    head = f"{'model':<20} {'all digits':>16} {f'digit {d}':>16} {'other digits':>16}"
    rows = [head, "-" * len(head)]
    for name, subsets in record["models"].items():
        cells = [f"{s['mean']:.4f} ± {format_ci(s['ci95'], 4)}" for s in subsets.values()]
        rows.append(f"{name:<20} " + " ".join(f"{c:>16}" for c in cells))
    return "\n".join(rows)


def plot_omitted(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Grouped bars: each model's accuracy on all digits, on the omitted digit and on the others."""
    from ..report.plotting import plt, save_figure, settings_caption

    fig, ax = plt.subplots(figsize=(8, 4.4))
    width = 0.26
    colors = ("#1f77b4", "#d62728", "#7f7f7f")
    for j, subset in enumerate(SUBSETS):
        means = [record["models"][m][subset]["mean"] for m in MODELS]
        cis = [record["models"][m][subset]["ci95"] or 0 for m in MODELS]
        label = {"all_digits": "all test digits", "omitted_digit": f"test '{record['digit']}'s (never distilled on)",
                 "other_digits": "other test digits"}[subset]
        xs = np.arange(len(MODELS)) + (j - 1) * width
        ax.bar(xs, means, width, yerr=cis, capsize=3, color=colors[j], label=label)
        for x, m, ci in zip(xs, means, cis):
            ax.text(x, m + ci + 0.015, f"{m:.2f}", ha="center", fontsize=8)
    ax.set_xticks(range(len(MODELS)), ["teacher", "student\n(same init)", "student\n(other init)"])
    ax.set_ylim(0, 1.2)
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title(f"Hinton's omitted digit: students distilled on all logits over MNIST without any "
                 f"'{record['digit']}'", fontsize=10)
    ax.legend(fontsize=8, loc="upper center", ncol=3, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    caption = settings_caption({**record["config"], "n_noise": record["n_distillation_images"]}, record["n_runs"])
    fig.text(0.5, -0.02, caption.replace("noise images", "training images (no omitted digit)"), ha="center",
             va="top", fontsize=7)
    return save_figure(fig, path, record=record)


def write_omitted(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "omitted_digit") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (model, subset, run, accuracy) and ``<stem>.png`` atomically."""
    rows = [[name, subset, i, f"{a:.6f}"] for name, subsets in record["models"].items()
            for subset, s in subsets.items() for i, a in enumerate(s["accuracies"])]
    return write_record(record, out_dir, stem, csv=(["model", "subset", "run", "accuracy"], rows), figure=plot_omitted)


__all__ = ["run_omitted_digit", "omitted_digit_experiment", "distillation_pool", "subset_accuracies",
           "format_omitted_table", "plot_omitted", "write_omitted", "accuracy_on", "MODELS", "SUBSETS", "STUDENTS"]
