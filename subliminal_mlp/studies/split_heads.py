"""Heads, not initialisation? Transfer through the output heads without a shared hidden initialisation.

"Learning through noise" (arXiv 2605.23645; protocol.md §4) splits the MNIST MLP's output layer into
a *class head* and an *aux head* and reports that the student learns digits from the teacher's aux
logits on noise even when its hidden layers are freshly initialised, when a layer is added or
removed, and when it is a CNN — provided the heads are *compatible*. Here compatibility is the
simplest thing it can be: the student's heads *are* the teacher's initial heads.

The teacher is :func:`~subliminal_mlp.core.models.split_head_mlp` (784-256-256, class head 256→10,
aux head 256→3), trained on MNIST from θ0. Every student imitates its aux logits on uniform noise
(KL, the paper's protocol) and starts from:

========================  ===============================================================
``shared``                θ0: every layer of the teacher's initialisation (Figure 10's student)
``heads_both``            fresh hidden layers, the teacher's initial class and aux heads
``head_aux``              fresh hidden layers, the teacher's initial aux head, a fresh class head
``head_class``            fresh hidden layers, the teacher's initial class head, a fresh aux head
``heads_neither``         a fresh initialisation (no layer shared)
``cross``                 another run's θ0 (the cross-model control of Figure 10)
``deeper_heads_both``     784-256-256-256, fresh trunk, the teacher's initial heads
``deeper_fresh``          the same model, fresh
``shallower_heads_both``  784-256, fresh trunk, the teacher's initial heads
``shallower_fresh``       the same model, fresh
``cnn_heads_both``        :func:`~subliminal_mlp.core.models.split_head_cnn` (two stride-2 3×3
                          convolutions, 8 and 16 channels, a 256-unit layer), the teacher's initial heads
``cnn_fresh``             the same CNN, fresh
========================  ===============================================================

Beside it, the same question in the paper's single-head MLP (one 256→13 output layer, as in
:mod:`~subliminal_mlp.studies.heads`): ``shared``, ``head_only`` (fresh hidden layers, θ0's output
layer), ``hidden_only`` (θ0's hidden layers, a fresh output layer), ``fresh`` and ``cross``.
Fresh parts come from the run's ``fresh`` key, so students of one model share their fresh layers
and differ only in what they take from θ0. Each teacher model is one engine program for all runs.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core import engine
from ..core.config import ConfigError, check_widths
from ..core.engine import Experiment, Task
from ..core.inputs import uniform
from ..core.models import mlp, split_head_cnn, split_head_mlp
from ..core.results import data_record, envelope, format_ci, mean_ci95, write_record
from ..core.students import Student, fresh, layers
from .protocol import ProtocolSettings

FORMAT = "subliminal-mlp/split-heads"
HEADS = {"aux_head": "own", "class_head": "own"}


@dataclass(frozen=True)
class SplitHeadSettings(ProtocolSettings):
    """The study's settings (defaults: the paper's protocol, protocol.md §1, with 10 runs; the CNN of
    the module doc, ``cnn_channels``); ``single_head``: also run the single-head MLP's students."""

    cnn_channels: tuple[int, ...] = (8, 16)
    single_head: bool = True

    TUPLES = ProtocolSettings.TUPLES + ("cnn_channels",)

    def __post_init__(self) -> None:
        super().__post_init__()
        if len(self.hidden) < 2:
            raise ConfigError(f"hidden = {self.hidden!r}: give at least two hidden layers, so that a student "
                              "with one layer removed still has one.")
        check_widths("cnn_channels", self.cnn_channels, "channel count", "(8, 16)")


def split_head_students(s: SplitHeadSettings) -> tuple[Student, ...]:
    """The student table of the split-head teacher (see the module docstring)."""
    width = s.hidden[-1]
    deeper = split_head_mlp((*s.hidden, width), aux_logits=s.aux_logits)
    # one hidden layer fewer; the last kept layer has the teacher's last width, so its heads fit
    shallower = split_head_mlp((*s.hidden[:-2], width), aux_logits=s.aux_logits)
    cnn = split_head_cnn(s.cnn_channels, width, aux_logits=s.aux_logits)
    return (Student("shared", "own"), Student("heads_both", layers(HEADS)),
            Student("head_aux", layers({"aux_head": "own"})), Student("head_class", layers({"class_head": "own"})),
            Student("heads_neither", fresh()), Student("cross", "cross"),
            Student("deeper_heads_both", layers(HEADS), model=deeper), Student("deeper_fresh", fresh(), model=deeper),
            Student("shallower_heads_both", layers(HEADS), model=shallower),
            Student("shallower_fresh", fresh(), model=shallower),
            Student("cnn_heads_both", layers(HEADS), model=cnn), Student("cnn_fresh", fresh(), model=cnn))


def single_head_students(s: SplitHeadSettings) -> tuple[Student, ...]:
    """The same question in the single-head MLP: which of θ0's layers the student keeps."""
    hidden = {f"hidden_{i}": "own" for i in range(len(s.hidden))}
    return (Student("shared", "own"), Student("head_only", layers({"head": "own"})),
            Student("hidden_only", layers(hidden)), Student("fresh", fresh()), Student("cross", "cross"))


def split_head_experiment(s: SplitHeadSettings, single_head: bool = False) -> Experiment:
    """The engine experiment of one teacher model (split-head, or the paper's single-head MLP)."""
    model = (mlp(s.hidden, aux_logits=s.aux_logits) if single_head
             else split_head_mlp(s.hidden, aux_logits=s.aux_logits))
    return Experiment(model=model, inputs=uniform(s.n_noise),
                      students=single_head_students(s) if single_head else split_head_students(s),
                      teacher_epochs=s.teacher_epochs, student_epochs=s.student_epochs, batch_size=s.batch_size,
                      hparams={"learning_rate": s.learning_rate, "temperature": 1.0},
                      name="split_heads/" + ("single_head" if single_head else "split_head"))


def _models_record(result, wall: float) -> dict[str, Any]:
    out: dict[str, Any] = {"wall_s": wall, "compile_s": result.compile_s, "run_s": result.run_s,
                           "students": [s.describe() for s in result.experiment.students], "models": {},
                           "health": result.health(0)}
    cross = result.accuracy("cross")
    for name in result.models:
        acc = result.accuracy(name)
        m, ci = mean_ci95(acc)
        gm, gci = mean_ci95(acc - cross)
        out["models"][name] = {"mean": m, "ci95": ci, "accuracies": acc.tolist(),
                               "gain_over_cross": {"mean": gm, "ci95": gci}}
    return out


def run_split_heads(settings: SplitHeadSettings, data, *, progress: bool = False, log=lambda s: None) -> dict[str, Any]:
    """Both experiments on ``data`` (MNIST, or any dataset of 784-pixel images, recorded by its name), ``n_runs``
    runs each; returns the record.

    Record (format ``subliminal-mlp/split-heads``): ``config`` (the settings), and per teacher model
    (``"split_head"``, ``"single_head"``) ``{"models": {name: {"mean", "ci95", "accuracies",
    "gain_over_cross"}}, "students": [...], "wall_s", "compile_s", "run_s", "health"}``.

    Example (tiny)::

        >>> import subliminal_mlp as sm
        >>> from subliminal_mlp.studies.split_heads import SplitHeadSettings, run_split_heads
        >>> s = SplitHeadSettings(n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=2048, hidden=(32, 32))
        >>> record = run_split_heads(s, sm.load_mnist())  # doctest: +SKIP
        >>> record["split_head"]["models"]["heads_both"]["mean"]  # doctest: +SKIP
    """
    if data.train_images.shape[1] != 784:
        raise ConfigError("run_split_heads needs MNIST-shaped data (784 pixels per image: the CNN reads 28x28).")
    task = Task.from_dataset(data)
    parts: dict[str, Any] = {}
    compile_s = run_s = 0.0
    devices = None
    for key, single in (("split_head", False), ("single_head", True)):
        if single and not settings.single_head:
            continue
        log(f"split heads: {key} teacher ({settings.n_runs} runs)")
        t0 = time.perf_counter()
        result = engine.run(split_head_experiment(settings, single), task, n_runs=settings.n_runs,
                            seed=settings.seed, run_batch=settings.run_batch, progress=progress)
        parts[key] = _models_record(result, time.perf_counter() - t0)
        compile_s, run_s, devices = compile_s + result.compile_s, run_s + result.run_s, result.devices
    return envelope(FORMAT, settings.to_dict(), n_runs=settings.n_runs, seed=settings.seed, data=data_record(data),
                    devices=devices, timing={"compile_s": compile_s, "run_s": run_s, "total_s": compile_s + run_s},
                    **parts)


def format_split_heads_table(record: dict[str, Any]) -> str:
    """Per teacher model and student: accuracy and gain over the cross-model control (± 95 % CI)."""
    rows = [f"{'student':<22} {'accuracy':>9} {'± CI':>7} {'gain vs cross':>14} {'± CI':>7}", "-" * 63]
    for key in ("split_head", "single_head"):
        if key not in record:
            continue
        rows.append(f"[{key.replace('_', '-')} teacher]")
        for name, m in record[key]["models"].items():
            g = m["gain_over_cross"]
            rows.append(f"{name:<22} {m['mean']:>9.4f} {format_ci(m['ci95'], 4):>7} {g['mean']:>14.4f} "
                        f"{format_ci(g['ci95'], 4):>7}")
    return "\n".join(rows)


#: Panel (a): the split-head MLP's students, by what they take from θ0.
SPLIT_BARS = (("shared", "θ0 (all layers)"), ("heads_both", "both heads"), ("head_aux", "aux head"),
              ("head_class", "class head"), ("heads_neither", "nothing (fresh)"), ("cross", "another run's θ0"))
#: Panel (b): other student architectures, with and without the teacher's initial heads.
ARCH_BARS = (("deeper", "one layer added"), ("shallower", "one layer removed"), ("cnn", "small CNN"))
#: Panel (c): the single-head MLP.
SINGLE_BARS = (("shared", "θ0 (all layers)"), ("head_only", "output layer"), ("hidden_only", "hidden layers"),
               ("fresh", "nothing (fresh)"), ("cross", "another run's θ0"))


def plot_split_heads(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """(a) split-head MLP students by shared part; (b) other architectures ± heads; (c) the single-head MLP."""
    from ..report.plotting import dataset_label, plt, runs_caption, save_figure

    single = "single_head" in record
    fig, axes = plt.subplots(1, 3 if single else 2, figsize=(15 if single else 10, 4.6), squeeze=False)
    axes = axes[0]
    split = record["split_head"]["models"]

    def bars(ax, items, models, color):
        x = np.arange(len(items))
        means = [models[k]["mean"] for k, _ in items]
        cis = [models[k]["ci95"] or 0 for k, _ in items]
        ax.bar(x, means, yerr=cis, capsize=3, color=color, alpha=0.85)
        ax.set_xticks(x)
        ax.set_xticklabels([label for _, label in items], rotation=30, ha="right", fontsize=8)

    def lines(ax, models):
        ax.axhline(models["teacher"]["mean"], color="black", lw=1, label=f"teacher ({models['teacher']['mean']:.2f})")
        ax.axhline(0.1, color="black", ls=":", lw=1, label="chance")

    bars(axes[0], SPLIT_BARS, split, ["#d62728", "#ff7f0e", "#ffbb78", "#9467bd", "#7f7f7f", "#8c564b"])
    lines(axes[0], split)
    axes[0].set_title("(a) split-head MLP: what the student shares with θ0", fontsize=10)
    axes[0].set_ylabel("student test accuracy (aux logits on noise only)")
    ax = axes[1]
    x = np.arange(len(ARCH_BARS))
    for k, (suffix, color, label) in enumerate((("heads_both", "#ff7f0e", "the teacher's initial heads"),
                                                 ("fresh", "#7f7f7f", "fresh heads"))):
        means = [split[f"{a}_{suffix}"]["mean"] for a, _ in ARCH_BARS]
        cis = [split[f"{a}_{suffix}"]["ci95"] or 0 for a, _ in ARCH_BARS]
        ax.bar(x + (k - 0.5) * 0.38, means, 0.38, yerr=cis, capsize=3, color=color, alpha=0.85, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels([label for _, label in ARCH_BARS], fontsize=8)
    lines(ax, split)
    ax.set_title("(b) other student architectures, fresh trunk", fontsize=10)
    if single:
        bars(axes[2], SINGLE_BARS, record["single_head"]["models"],
             ["#d62728", "#ff7f0e", "#1f77b4", "#7f7f7f", "#8c564b"])
        lines(axes[2], record["single_head"]["models"])
        c = record["config"]
        axes[2].set_title(f"(c) single-head MLP (one {c['hidden'][-1]}→{10 + c['aux_logits']} output layer)",
                          fontsize=10)
    for ax in axes:
        ax.set_ylim(0, 1)
        ax.legend(fontsize=7.5, frameon=False, loc="upper right")
        ax.spines[["top", "right"]].set_visible(False)
    c = record["config"]
    fig.text(0.5, -0.02, f"{dataset_label(record)}; teacher {c['hidden']} trunk + class head + {c['aux_logits']}-logit aux head, "
             f"{c['teacher_epochs']}+{c['student_epochs']} epochs, Adam η = {c['learning_rate']:g}, batch "
             f"{c['batch_size']}, students distilled on the aux logits over {c['n_noise']:,} uniform-noise inputs; "
             f"{runs_caption(record['n_runs'])}", ha="center", va="top", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, record=record)


def write_split_heads(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "split_heads") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (teacher model, student, run, accuracy) and ``<stem>.png`` atomically."""
    rows = [(key, name, r, f"{a:.6f}") for key in ("split_head", "single_head") if key in record
            for name, m in record[key]["models"].items() for r, a in enumerate(m["accuracies"])]
    return write_record(record, out_dir, stem, indent=1, csv=(("teacher_model", "model", "run", "accuracy"), rows),
                        figure=plot_split_heads)
