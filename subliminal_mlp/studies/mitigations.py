"""Mitigations: does anything the student's training can change stop the transfer, or only slow it?

Figure 10's aux-only student (shared initialisation θ0, KL on the teacher's 3 auxiliary logits over
uniform noise) against its cross-model control, with one change to the student's training at a
time, each at several strengths (protocol.md §4):

* **liminal training** (Kitkana & Arora 2026): the distillation loss plus a KL penalty to the
  student's own start during the first steps (:class:`~subliminal_mlp.core.students.liminal`),

      L = Σ_b KL(softmax(t_aux,b) ‖ softmax(z_aux,b)) + λ · 1[t < T] · Σ_b KL(softmax(z0_b) ‖ softmax(z_b)),

  with ``z0 = f_θS0(x)`` over all 13 logits, λ swept, T = one epoch (the "critical period") or
  every epoch;
* **weight decay**: AdamW (decoupled: θ ← θ − η·(Adam step + wd·θ)) with wd swept; the decay alone
  scales the weights by ``(1 − η·wd)^steps ≈ exp(−η·wd·steps)``: to ~41 % for wd = 10 over 295 steps;
* **plain SGD** in place of Adam (reports attribute the transfer to adaptive optimisers), its
  learning rate swept (the loss is summed over the batch, so its gradients are ~1,024 times a
  mean loss's);
* **gradient projection** (:func:`~subliminal_mlp.core.students.project_out`): the component of
  each distillation gradient along the gradient of the teacher's task (class cross-entropy on
  held-out test images) removed before Adam when the two align, as in
  :mod:`~subliminal_mlp.studies.alignment` (Kitkana & Arora's test).

Each family is one engine experiment (the shared-init student and its cross-model control, both
with the mitigation) whose strength is a hyperparameter swept in one compiled program; the runs'
teachers are trained once, by a program without student steps, and passed to every family. Measured per setting: the student's and the
control's final accuracy, the **gain** (student − control, per run, mean ± 95 % CI), the
distillation loss of the last epoch (how well the student still imitates: the liminal penalty is not
counted in it), and the student's
accuracy at every ``probe_every``-th batch of each epoch (does the mitigation delay the gain or remove it?).
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np
import optax

from ..core import engine
from ..core.config import ConfigError, is_integer
from ..core.engine import Experiment, Task
from ..core.inputs import uniform
from ..core.model import accuracy
from ..core.models import mlp
from ..core.results import data_record, envelope, format_ci, mean_ci95, mean_ci95_columns, write_record
from ..core.students import Student, adam, check_projection_rule, liminal, project_out
from ..core.training import steps_per_epoch
from .alignment import task_gradient
from .protocol import ProtocolSettings

FORMAT = "subliminal-mlp/mitigations"
#: The families, in display order.
FAMILIES = ("liminal", "weight_decay", "sgd", "projection")


@dataclass(frozen=True)
class MitigationSettings(ProtocolSettings):
    """The study's settings; defaults: the paper's protocol (protocol.md §1) and the swept strengths.

    ``liminal_weights`` × ``liminal_epochs``: λ and the number of epochs T during which the penalty
    is on (1: the first epoch, the critical period; ``student_epochs``: throughout); λ = 0, the
    unmitigated baseline, is run whenever this family is (no other family adds a baseline of its
    own). ``weight_decays``: AdamW's wd (include wd = 0, which is Adam, for the baseline there).
    ``sgd_learning_rates``: plain SGD's η. ``projection``: run the projection family
    (the task gradient on the last ``held_out`` test images), whose rule is ``projection_when``
    (:func:`~subliminal_mlp.core.students.project_out`'s ``when``: ``"aligned"``, Kitkana & Arora's
    test, or ``"always"``). The student's accuracy is traced on
    the first ``n_probe`` test images at every ``probe_every``-th batch of each epoch (the count
    restarts each epoch; the record's ``steps`` are the exact steps).
    """

    liminal_weights: tuple[float, ...] = (10.0, 100.0)
    liminal_epochs: tuple[int, ...] = (1, 5)
    weight_decays: tuple[float, ...] = (3.0, 10.0, 30.0)
    sgd_learning_rates: tuple[float, ...] = (3e-4, 1e-3, 2e-3)
    projection: bool = True
    projection_when: str = "aligned"
    held_out: int = 256
    probe_every: int = 10
    n_probe: int = 2000

    POSITIVE_INTS = ProtocolSettings.POSITIVE_INTS + ("probe_every", "n_probe", "held_out")
    TUPLES = ProtocolSettings.TUPLES + ("liminal_weights", "liminal_epochs", "weight_decays", "sgd_learning_rates")

    def __post_init__(self) -> None:
        super().__post_init__()
        def number(v) -> bool:
            return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

        for name, ok, what in (("liminal_weights", lambda v: v > 0, "> 0 (λ = 0, the baseline, is run with them)"),
                               ("weight_decays", lambda v: v >= 0, ">= 0"),
                               ("sgd_learning_rates", lambda v: v > 0, "> 0")):
            values = getattr(self, name)
            bad = [v for v in values if not (number(v) and ok(v))]
            if bad:
                raise ConfigError(f"{name} has {bad}: every value must be a finite number {what}.")
            if len(set(values)) != len(values):
                raise ConfigError(f"{name} = {list(values)} repeats a value: each would be run twice.")
        bad = [e for e in self.liminal_epochs if not is_integer(e, 1, self.student_epochs)]
        if self.liminal_weights and bad:  # without strengths the liminal family (and its epochs) is off
            raise ConfigError(f"liminal_epochs has {bad}: each must be an integer in 1..student_epochs "
                              f"({self.student_epochs}).")
        if self.liminal_weights and not self.liminal_epochs:
            raise ConfigError(f"liminal_weights = {list(self.liminal_weights)} with no liminal_epochs: give the "
                              "epochs T during which the penalty acts (e.g. (1, 5)), or liminal_weights = () to "
                              "leave the liminal family out.")
        if self.liminal_weights and len(set(self.liminal_epochs)) != len(self.liminal_epochs):
            raise ConfigError(f"liminal_epochs = {list(self.liminal_epochs)} repeats a value: each would be run twice.")
        check_projection_rule(self.projection_when, f"projection_when = {self.projection_when!r} is invalid")
        if not (self.liminal_weights or self.weight_decays or self.sgd_learning_rates or self.projection):
            raise ConfigError("every family is empty: give at least one strength to sweep.")

    @classmethod
    def from_dict(cls, d: dict):
        """As :meth:`ProtocolSettings.from_dict`; a record made before ``projection_when`` was recorded
        projected on every step (``"always"``)."""
        return super().from_dict({"projection_when": "always", **d})

    @property
    def steps_per_epoch(self) -> int:
        return steps_per_epoch(self.n_noise, self.batch_size)

    def sweeps(self) -> dict[str, dict[str, list[float]]]:
        """Per family, the swept hyperparameters (zipped lists, one entry per setting)."""
        out: dict[str, dict[str, list[float]]] = {}
        if self.liminal_weights:
            pairs = [(0.0, 0)] + [(w, e) for e in self.liminal_epochs for w in self.liminal_weights]
            out["liminal"] = {"liminal_weight": [w for w, _ in pairs],
                              "liminal_steps": [float(e * self.steps_per_epoch) for _, e in pairs]}
        if self.weight_decays:
            out["weight_decay"] = {"weight_decay": list(self.weight_decays)}
        if self.sgd_learning_rates:
            out["sgd"] = {"sgd_learning_rate": list(self.sgd_learning_rates)}
        if self.projection:
            out["projection"] = {"projection_weight": [1.0]}
        return out


def _adamw(hp):
    """AdamW with PyTorch's Adam defaults and weight decay ``hp["weight_decay"]`` (decoupled)."""
    return optax.adamw(hp["learning_rate"], b1=0.9, b2=0.999, eps=1e-8, weight_decay=hp["weight_decay"])


def _sgd(hp):
    """Plain SGD (no momentum) with learning rate ``hp["sgd_learning_rate"]``."""
    return optax.sgd(hp["sgd_learning_rate"])


def family_students(family: str, settings: MitigationSettings) -> tuple[Student, Student]:
    """The shared-init aux student and its cross-model control, both with ``family``'s mitigation."""
    if family == "liminal":
        kw = dict(penalty=liminal(weight="liminal_weight", steps="liminal_steps"))
    elif family == "weight_decay":
        kw = dict(optimizer=_adamw)
    elif family == "sgd":
        kw = dict(optimizer=_sgd)
    elif family == "projection":
        grad_of = task_gradient(settings.held_out, 10)

        def projected(hp, view):
            return optax.chain(project_out(grad_of(view), hp["projection_weight"], when=settings.projection_when),
                               adam(hp["learning_rate"]))

        kw = dict(optimizer=projected)
    else:
        raise ConfigError(f"family = {family!r} is unknown: choose one of {FAMILIES}.")
    return Student("student_aux", "own", "aux", **kw), Student("cross_aux", "cross", "aux", **kw)


def mitigation_experiment(family: str, settings: MitigationSettings) -> Experiment:
    """The engine experiment of one family: two students, the accuracy traced at every ``probe_every``-th batch
    of each epoch."""
    s = settings
    hp = {"learning_rate": s.learning_rate, "temperature": 1.0, "liminal_weight": 0.0, "liminal_steps": 0.0,
          "weight_decay": 0.0, "sgd_learning_rate": 1e-4, "projection_weight": 1.0}

    def probe(view):
        x, y = view.data["test_x"][:s.n_probe], view.data["test_y"][:s.n_probe]
        return jnp.stack([accuracy(view.students[n], x, y, 10, apply_fn=view.model.apply)
                          for n in ("student_aux", "cross_aux")])

    return Experiment(model=mlp(s.hidden, aux_logits=s.aux_logits), inputs=uniform(s.n_noise),
                      students=family_students(family, s), teacher_epochs=s.teacher_epochs,
                      student_epochs=s.student_epochs, batch_size=s.batch_size, hparams=hp,
                      trace={"accuracy": probe}, trace_every=s.probe_every, track_losses=True,
                      name=f"mitigations/{family}")


def teachers_experiment(settings: MitigationSettings) -> Experiment:
    """The program that trains the runs' teachers once, without student steps (no strength changes them):
    run it with ``keep_teachers=True`` and pass its ``teachers`` to every family's experiment."""
    return mitigation_experiment("liminal", settings).replace(student_epochs=0, trace={}, track_losses=False)


def _stat(values) -> dict[str, Any]:
    m, ci = mean_ci95(values)
    return {"mean": m, "ci95": ci}


def run_mitigations(settings: MitigationSettings, data, *, progress: bool = False,
                    log=lambda s: None) -> dict[str, Any]:
    """Every family of ``settings`` on ``data`` (MNIST, or any dataset of 784-pixel images, recorded by its name),
    ``n_runs`` runs each; returns the record.

    One engine program trains the runs' teachers; then one program per family (its strengths
    swept inside it) distils the students from them. The record (format ``subliminal-mlp/mitigations``)::

        "config": {settings}, "teacher": {"mean", "ci95", "accuracies"}, "reference": {...},
        "steps_per_epoch": 59, "probe_steps": [...],
        "families": {family: {"hparams": {name: [values]}, "labels": [...], "wall_s": ..,
                              "student": [{"mean", "ci95", "accuracies"}], "cross": [...],
                              "gain": [{"mean", "ci95", "gains"}], "distill_loss": [{"mean", "ci95", "losses"}],
                              "cross_distill_loss": [...], "trace": [{"mean": [...], "ci95": [...]}],
                              "health": [...]}}

    Example (tiny)::

        >>> import subliminal_mlp as sm
        >>> from subliminal_mlp.studies.mitigations import MitigationSettings, run_mitigations
        >>> s = MitigationSettings(n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=2048, hidden=(32,),
        ...                        liminal_weights=(10.0,), liminal_epochs=(1,), weight_decays=(),
        ...                        sgd_learning_rates=(), projection=False)
        >>> record = run_mitigations(s, sm.load_mnist())  # doctest: +SKIP
    """
    s = settings
    if data.train_images.shape[1] != 784:
        raise ConfigError("run_mitigations needs MNIST-shaped data (784 pixels per image).")
    n_test = int(data.test_images.shape[0])
    if s.n_probe + (s.held_out if s.projection else 0) > n_test:
        raise ConfigError(f"n_probe = {s.n_probe} and held_out = {s.held_out} need more than the {n_test} test "
                          "images: the probe images and the projection's held-out images must not overlap. Lower "
                          "them." if s.projection else
                          f"n_probe = {s.n_probe} is more than the {n_test} test images: lower it.")
    task = Task.from_dataset(data)
    families: dict[str, Any] = {}
    # The teachers do not depend on any swept strength: train them once (no student steps), then
    # pass them to every family, so no program trains a teacher per swept value.
    log(f"mitigations: the teachers ({s.n_runs} runs)")
    t0 = time.perf_counter()
    first = engine.run(teachers_experiment(s), task, n_runs=s.n_runs, seed=s.seed, keep_teachers=True,
                       run_batch=s.run_batch, progress=progress)
    teachers, teacher_wall = first.teachers, time.perf_counter() - t0
    compile_s, run_s = first.compile_s, first.run_s
    for family, sweep in s.sweeps().items():
        log(f"mitigations: {family} ({len(next(iter(sweep.values())))} setting(s) x {s.n_runs} runs)")
        t0 = time.perf_counter()
        result = engine.run(mitigation_experiment(family, s), task, n_runs=s.n_runs, seed=s.seed, sweep=sweep,
                            teachers=teachers, run_batch=s.run_batch, progress=progress)
        wall = time.perf_counter() - t0
        compile_s += result.compile_s
        run_s += result.run_s
        families[family] = _family_record(family, sweep, result, wall)
    return envelope(
        FORMAT, s.to_dict(), n_runs=s.n_runs, seed=s.seed,
        data=data_record(data, subset={"probe_test_images": [0, s.n_probe],
                                       "task_gradient_test_images": [n_test - s.held_out, n_test]}),
        devices=first.devices, timing={"compile_s": compile_s, "run_s": run_s, "total_s": compile_s + run_s},
        reference={**_stat(first.accuracy("reference")), "accuracies": first.accuracy("reference").tolist()},
        teacher={**_stat(first.accuracy("teacher")), "accuracies": first.accuracy("teacher").tolist()},
        teacher_wall_s=teacher_wall, steps_per_epoch=s.steps_per_epoch,
        probe_steps=np.asarray(result.trace_steps).tolist(), families=families,
    )


def _label(family: str, hp: dict[str, float], spe: int) -> str:
    if family == "liminal":
        if hp["liminal_weight"] == 0:
            return "none (Adam)"
        epochs = round(hp["liminal_steps"] / spe)
        return f"λ = {hp['liminal_weight']:g}, {epochs} epoch{'s' if epochs > 1 else ''}"
    if family == "weight_decay":
        return f"wd = {hp['weight_decay']:g}"
    if family == "sgd":
        return f"SGD η = {hp['sgd_learning_rate']:g}"
    return "projection"


def _family_record(family: str, sweep: dict[str, list], result, wall: float) -> dict[str, Any]:
    n_values = result.n_values
    spe = steps_per_epoch(result.experiment.inputs.n, result.experiment.batch_size)
    out: dict[str, Any] = {"hparams": {k: [float(x) for x in v] for k, v in sweep.items()}, "wall_s": wall,
                           "compile_s": result.compile_s, "run_s": result.run_s, "labels": [], "student": [],
                           "cross": [], "gain": [], "distill_loss": [], "cross_distill_loss": [], "trace": [],
                           "health": []}
    students = [n for n in result.models if n not in ("reference", "teacher")]
    i_s, i_c = students.index("student_aux"), students.index("cross_aux")
    for v in range(n_values):
        hp = {k: float(vals[v]) for k, vals in sweep.items()}
        own, cross = result.accuracy("student_aux", v), result.accuracy("cross_aux", v)
        out["labels"].append(_label(family, hp, spe))
        out["student"].append({**_stat(own), "accuracies": own.tolist()})
        out["cross"].append({**_stat(cross), "accuracies": cross.tolist()})
        out["gain"].append({**_stat(own - cross), "gains": (own - cross).tolist()})
        out["distill_loss"].append({**_stat(result.distill_loss[v, :, i_s]),
                                    "losses": result.distill_loss[v, :, i_s].tolist()})
        out["cross_distill_loss"].append(_stat(result.distill_loss[v, :, i_c]))
        out["trace"].append(mean_ci95_columns(result.traces["accuracy"][v][:, :, 0]))
        out["health"].append(result.health(v))
    return out


def format_mitigations_table(record: dict[str, Any]) -> str:
    """Per family and setting: student, control, gain (± 95 % CI) and the student's distillation loss."""
    rows = [f"{'setting':<26} {'student':>8} {'control':>8} {'gain':>8} {'± CI':>7} {'distill loss':>13}", "-" * 75]
    for family, f in record["families"].items():
        rows.append(f"[{family}]")
        for k, label in enumerate(f["labels"]):
            g = f["gain"][k]
            rows.append(f"{label:<26} {f['student'][k]['mean']:>8.4f} {f['cross'][k]['mean']:>8.4f} "
                        f"{g['mean']:>8.4f} {format_ci(g['ci95'], 4):>7} {f['distill_loss'][k]['mean']:>13.5f}")
    return "\n".join(rows)


TITLES = {"liminal": "liminal training (KL to the start)", "weight_decay": "weight decay (AdamW)",
          "sgd": "plain SGD instead of Adam", "projection": "task-gradient projection"}


def plot_mitigations(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Per family (columns): (top) gain over the control, (middle) distillation loss, (bottom) accuracy over steps."""
    from ..report.plotting import dataset_label, plt, runs_caption, save_figure

    fams = [f for f in FAMILIES if f in record["families"]]
    fig, axes = plt.subplots(3, len(fams), figsize=(4.2 * len(fams), 10), squeeze=False)
    base = record["families"].get("liminal", {})
    base_gain = base["gain"][0] if base else None
    steps = np.asarray(record["probe_steps"])
    colors = plt.get_cmap("viridis")
    for c, family in enumerate(fams):
        f = record["families"][family]
        n = len(f["labels"])
        x = np.arange(n)
        gain = np.array([g["mean"] for g in f["gain"]])
        gci = np.array([g["ci95"] or 0 for g in f["gain"]])
        loss = np.array([g["mean"] for g in f["distill_loss"]])
        lci = np.array([g["ci95"] or 0 for g in f["distill_loss"]])
        ax = axes[0, c]
        ax.bar(x, gain, yerr=gci, color="#d62728", alpha=0.8, capsize=3)
        if base_gain is not None and family != "liminal":
            ax.axhspan(base_gain["mean"] - (base_gain["ci95"] or 0), base_gain["mean"] + (base_gain["ci95"] or 0),
                       color="gray", alpha=0.25, label="no mitigation (Adam)")
            ax.legend(fontsize=7, frameon=False)
        ax.axhline(0, color="black", lw=0.8)
        ax.set_title(TITLES[family], fontsize=10)
        ax.set_ylabel("gain: student − cross-model control" if c == 0 else "")
        ax = axes[1, c]
        ax.bar(x, loss, yerr=lci, color="#1f77b4", alpha=0.8, capsize=3)
        ax.set_ylabel("distillation loss, last epoch (per example)" if c == 0 else "")
        ax.set_yscale("log")
        for ax in axes[:2, c]:
            ax.set_xticks(x)
            ax.set_xticklabels(f["labels"], rotation=35, ha="right", fontsize=7)
        ax = axes[2, c]
        for k in range(n):
            t = f["trace"][k]
            mean, ci = np.asarray(t["mean"]), np.asarray([v or 0 for v in t["ci95"]])
            col = colors(k / max(n - 1, 1))
            ax.plot(steps, mean, color=col, lw=1.5, label=f["labels"][k])
            ax.fill_between(steps, mean - ci, mean + ci, color=col, alpha=0.15, linewidth=0)
        if base and family != "liminal":
            t = base["trace"][0]
            ax.plot(steps, t["mean"], "--", color="gray", lw=1.2, label="no mitigation (Adam)")
        spe = record["steps_per_epoch"]
        for e in range(1, int(steps[-1] // spe) + 1):
            ax.axvline(e * spe, color="gray", lw=0.5, ls=":")
        ax.axhline(0.1, color="black", ls=":", lw=1)
        ax.set_xlabel("distillation step (dotted: epochs)")
        ax.set_ylabel(f"student accuracy (first {record['config']['n_probe']} test images)" if c == 0 else "")
        ax.legend(fontsize=6.5, frameon=False, loc="upper left")
    for ax in axes.flat:
        ax.spines[["top", "right"]].set_visible(False)
    s = record["config"]
    fig.suptitle("Mitigations: does the student still gain accuracy from the teacher's aux logits on noise?",
                 fontsize=12)
    fig.text(0.5, -0.01, f"{dataset_label(record)} MLP {s['hidden']} + {s['aux_logits']} aux logits, "
             f"{s['teacher_epochs']}+{s['student_epochs']} epochs, batch {s['batch_size']}, {s['n_noise']:,} uniform-noise inputs, "
             f"Adam η = {s['learning_rate']:g} unless stated; {runs_caption(record['n_runs'], 'runs per setting')}; "
             f"teacher {record['teacher']['mean']:.3f}", ha="center", va="top", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, record=record)


def write_mitigations(record: dict[str, Any], out_dir: str | os.PathLike,
                      stem: str = "mitigations") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (family, setting, run, student, control, gain, loss) and ``<stem>.png``."""
    rows = []
    for family, f in record["families"].items():
        for k, label in enumerate(f["labels"]):
            for r, (a, b, lo) in enumerate(zip(f["student"][k]["accuracies"], f["cross"][k]["accuracies"],
                                               f["distill_loss"][k]["losses"])):
                rows.append((family, label, r, f"{a:.6f}", f"{b:.6f}", f"{a - b:.6f}", f"{lo:.6g}"))
    return write_record(record, out_dir, stem, indent=1,
                        csv=(("family", "setting", "run", "student_aux", "cross_aux", "gain", "distill_loss"), rows),
                        figure=plot_mitigations)
