"""What carries the signal: which shared layers matter, and how alike the representations become.

Two questions of issue 4.3, answered by one program:

* **Head compatibility** ("Learning through noise", 2026). The student shares with the teacher's
  initialisation θ0 only the output layer, only the hidden layers, all of them, or none; the
  other layers come from another run's reference θ0' (as for the cross-model students). Each is
  distilled on the aux logits only (the subliminal setting) and on all logits, over the run's
  noise, exactly as in Figure 10.
* **Representation similarity**. For every student, linear CKA and the mean feature cosine
  (``similarity.penultimate_similarity``) between its penultimate activations and the teacher's on
  MNIST test images, beside its accuracy. To spread the students along the similarity axis, the
  run also distils aux-only students started from θ0 + σ·ξ (isotropic Gaussian noise, Jiang et
  al.'s perturbation) for several σ.

Starting points (``own`` = θ0, ``other`` = θ0' of run ``cross_run(i)``):

==================  ==============  ===========
student             hidden layers   output layer
==================  ==============  ===========
``shared_all``      own             own
``shared_hidden``   own             other
``shared_head``     other           own
``shared_none``     other           other
==================  ==============  ===========

The computation is an engine :class:`~subliminal_mlp.core.engine.Experiment` (:func:`heads_experiment`):
the students are a table (:func:`heads_students`: ``layers`` and ``perturbed`` starts), the
similarities are metrics; :func:`run_heads` runs it with :func:`engine.run` (one compiled,
sharded program) and turns the :class:`~subliminal_mlp.core.engine.Result` into this module's record.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ..core import engine
from ..core.config import Config, ConfigError, is_integer, is_sequence, plain_scalar
from ..core.engine import Experiment, RunModels
from .figure10 import config_students, experiment_from_config, given_input_dataset
from ..core.model import stack_params
from ..core.results import data_record, envelope, format_ci, run_timing, summary, write_record
from ..theory.similarity import penultimate_similarity
from ..core.students import Student, layers, perturbed

FORMAT = "subliminal-mlp/heads"
#: (name, hidden layers from, output layer from).
SHARING = (("shared_all", "own", "own"), ("shared_hidden", "own", "other"), ("shared_head", "other", "own"),
           ("shared_none", "other", "other"))
DEFAULT_SIGMAS = (0.005, 0.01, 0.02, 0.05, 0.1)
#: The engine's name of each reference: θ0 is ``"own"``, θ0' is ``"cross"``.
_REF = {"own": "own", "other": "cross"}


def compose(hidden_from: dict, head_from: dict) -> dict:
    """A parameter pytree with every hidden layer of ``hidden_from`` and the ``head`` of ``head_from``.

    The start ``layers({"head": head}, default=hidden)`` of :func:`heads_students` builds the same.
    """
    return {**hidden_from, "head": head_from["head"]}


def student_names(sigmas: Sequence[float]) -> list[str]:
    """The students of a run, in the order of the record's arrays."""
    return ([f"{n}_{w}" for w in ("aux", "all") for n, _, _ in SHARING]
            + [f"perturbed_{s:g}_aux" for s in sigmas])


def _start(hidden: str, head: str):
    if hidden == head:
        return _REF[hidden]
    return layers({"head": _REF[head]}, default=_REF[hidden])


def heads_students(sigmas: Sequence[float], orthogonal: bool = False) -> tuple[Student, ...]:
    """The student table, in :func:`student_names` order: the four sharings × (aux, all), then θ0 + σ·ξ (aux);
    with ``orthogonal``, ξ is taken ⟂ the teacher's update (:class:`~subliminal_mlp.core.students.perturbed`)."""
    table = [Student(f"{n}_{w}", _start(h, o), w) for w in ("aux", "all") for n, h, o in SHARING]
    table += [Student(f"perturbed_{s:g}_aux", perturbed(float(s), orthogonal=orthogonal), "aux") for s in sigmas]
    return tuple(table)


def similarity_metrics(names: Sequence[str], n_similarity: int) -> dict[str, Any]:
    """The metrics ``{"similarity": (2, S), "reference_similarity": (2, 2)}`` (rows: CKA, cosine).

    Per student (``names`` order), and for θ0 and θ0': similarity of the penultimate features to
    the teacher's on the first ``n_similarity`` test images. θ0 and θ0' are the run's
    ``view.reference`` and ``view.refs["cross"]``: exactly the students' "own" and "cross" starts,
    whatever seed or sweep the experiment is run with.
    """
    def measure(view: RunModels, stack):
        sim = jax.vmap(penultimate_similarity, (None, 0, None, None))(
            view.teacher, stack, view.data["test_x"][:n_similarity], view.model.features)
        return jnp.stack([sim["cka"], sim["cosine"]])

    def students(view: RunModels):
        return measure(view, stack_params(*[view.students[n] for n in names]))

    def references(view: RunModels):
        return measure(view, stack_params(view.reference, view.refs["cross"]))

    return {"similarity": students, "reference_similarity": references}


def heads_experiment(cfg: Config, sigmas: Sequence[float] = DEFAULT_SIGMAS, n_similarity: int = 2000,
                     pool=None) -> Experiment:
    """The engine experiment: ``cfg``'s teacher, the :func:`heads_students` table, the similarity metrics.

    ``cfg``'s inputs (and ``pool``) and loss apply, and ``init_noise_kind`` to the σ students' ξ
    ("orthogonal": ⟂ the teacher's update); ``init_noise`` is an error here, as the students' starts
    (shared layers, θ0 + σ·ξ) are what this experiment varies.
    """
    if cfg.init_noise != 0:
        raise ConfigError(f"init_noise = {cfg.init_noise!r}: the heads experiment sets its students' starts itself "
                          "(shared layers, and θ0 + σ·ξ for each sigma); pass the σ values as sigmas instead.")
    names = student_names(sigmas)
    return experiment_from_config(cfg, pool).replace(
        students=config_students(cfg, heads_students(sigmas, cfg.init_noise_kind == "orthogonal")),
        metrics=similarity_metrics(names, n_similarity),
        name=f"heads:{cfg.dataset}")


def run_heads(cfg: Config, data, sigmas: Sequence[float] = DEFAULT_SIGMAS, n_similarity: int = 2000, *,
              progress: bool = False, input_data=None) -> dict[str, Any]:
    """Accuracy and teacher-student similarity of every student of :func:`student_names` (one program).

    Similarities are measured on the first ``n_similarity`` MNIST test images; accuracy on all of
    them. Also recorded: the similarity of the two references θ0 and θ0' to the teacher (where the
    students start). ``progress``: bars over the teacher and distillation epochs. ``input_data``:
    the students' images when ``cfg.student_inputs`` is "fashion-mnist" (a loaded Fashion-MNIST;
    default: the usual lookup), recorded under ``data["inputs"]``. Returns a
    JSON-ready record (the envelope of :mod:`.results`, format ``subliminal-mlp/heads``, version 1;
    ``data.subset`` names the similarity images) with this payload::

        "sigmas": [...], "n_similarity": 2000, "sharing": [...],
        "students": {name: {"accuracy" | "cka" | "cosine": {"mean", "ci95", "values": [one per run]}}},
        "references": {"own" | "other": {"cka" | "cosine": {...}}},     # θ0, θ0' against the teacher
        "teacher": {"accuracy": {...}}, "reference": {"accuracy": {...}},
        "correlation": {"cka" | "cosine": {"pearson", "spearman", "n_points"}},  # over all students
        "correlation_within": {"aux" | "all": {"cka" | "cosine": {...}}}
    """
    cfg.check_dataset(data)
    n_similarity = plain_scalar(n_similarity)
    n_test = data.test_images.shape[0]
    if not is_integer(n_similarity, 3, n_test):  # 2 centred images span one direction: every CKA would be 1
        raise ConfigError(f"n_similarity = {n_similarity!r} is invalid: give an integer number of test images in "
                          f"3..{n_test} (with 2, the centred features have rank 1 and every linear CKA is 1).")
    if not is_sequence(sigmas) or not all(
            isinstance(s, (int, float, np.integer, np.floating)) and not isinstance(s, bool) for s in sigmas):
        raise ConfigError(f"sigmas = {sigmas!r} is invalid: give a sequence of numbers, e.g. sigmas = (0.05,).")
    sigmas = tuple(float(s) for s in sigmas)
    if any(not 0 < s < math.inf for s in sigmas):
        raise ConfigError(f"sigmas = {sigmas}: every σ must be a finite number > 0 (σ = 0 is the student "
                          "shared_all_aux).")
    names = student_names(sigmas)
    if len(set(names)) != len(names):
        raise ConfigError(f"sigmas = {sigmas} repeat a value (as the students' names write them, with :g): give "
                          "distinct values.")
    source = given_input_dataset(cfg, input_data)
    exp = heads_experiment(cfg, sigmas, n_similarity, pool=None if source is None else source.train_images)
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=cfg.n_runs, seed=cfg.seed,
                        run_batch=cfg.run_batch, progress=progress)
    acc = np.stack([result.accuracy(n) for n in names], axis=1)  # (runs, students)
    sim = np.asarray(result.metrics["similarity"][0])  # (runs, 2, students)
    ref = np.asarray(result.metrics["reference_similarity"][0])  # (runs, 2, 2): [cka, cosine] × [own, other]
    cka, cos = sim[:, 0], sim[:, 1]
    return envelope(
        FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
        data=data_record(data, name=cfg.dataset, subset={"similarity_test_images": [0, n_similarity]},
                         inputs=source),
        devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
        sigmas=list(sigmas), n_similarity=n_similarity,
        sharing=[{"name": n, "hidden_layers": h, "output_layer": o} for n, h, o in SHARING],
        students={n: {"accuracy": summary(acc[:, j]), "cka": summary(cka[:, j]), "cosine": summary(cos[:, j])}
                  for j, n in enumerate(names)},
        references={n: {"cka": summary(ref[:, 0, j]), "cosine": summary(ref[:, 1, j])}
                    for j, n in enumerate(("own", "other"))},
        teacher={"accuracy": summary(result.accuracy("teacher"))},
        reference={"accuracy": summary(result.accuracy("reference"))},
        health=result.health(0),
        correlation={kind: _correlations(np.asarray(v), acc) for kind, v in (("cka", cka), ("cosine", cos))},
        correlation_within=correlations_within(names, acc, cka, cos),
    )


def _rank(v: np.ndarray) -> np.ndarray:
    """Ranks of ``v`` (average ranks for ties), for Spearman's correlation."""
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v))
    for value in np.unique(v):
        tied = v == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def _correlations(similarity: np.ndarray, acc: np.ndarray) -> dict[str, float]:
    """Pearson and Spearman correlation of similarity and accuracy over all (run, student) pairs."""
    s, a = similarity.ravel(), acc.ravel()
    return {"pearson": float(np.corrcoef(s, a)[0, 1]), "spearman": float(np.corrcoef(_rank(s), _rank(a))[0, 1]),
            "n_points": int(s.size)}


def correlations_within(names: Sequence[str], acc: np.ndarray, cka: np.ndarray, cos: np.ndarray) -> dict[str, Any]:
    """:func:`_correlations` over the aux-only students alone and over the all-logit students alone.

    Pooling both groups mixes two regimes (all-logit students learn the task whatever they share,
    aux-only students only with a shared start), so the within-group numbers are reported too.
    """
    out = {}
    for which in ("aux", "all"):
        cols = [j for j, n in enumerate(names) if n.endswith(f"_{which}")]
        out[which] = {kind: _correlations(v[:, cols], acc[:, cols]) for kind, v in (("cka", cka), ("cosine", cos))}
    return out


def format_heads_table(record: dict[str, Any]) -> str:
    """Per student: MNIST accuracy, CKA and feature cosine with the teacher (mean ± 95 % CI)."""
    head = f"{'student':<24} {'accuracy':>16} {'linear CKA':>16} {'feature cosine':>16}"
    rows = [head, "-" * len(head)]
    for name, s in record["students"].items():
        cells = [f"{s[k]['mean']:.3f} ± {format_ci(s[k]['ci95'], 3)}" for k in ("accuracy", "cka", "cosine")]
        rows.append(f"{name:<24} " + " ".join(f"{c:>16}" for c in cells))
    for name, s in record["references"].items():
        rows.append(f"{'reference (' + name + ')':<24} {'':>16} " + " ".join(
            f"{s[k]['mean']:.3f} ± {format_ci(s[k]['ci95'], 3)}".rjust(16) for k in ("cka", "cosine")))
    groups = [("all students", record["correlation"])]
    groups += [(f"{w}-logit students", c) for w, c in record["correlation_within"].items()]
    for group, corr in groups:
        for kind, c in corr.items():
            rows.append(f"{kind} vs accuracy, {group} ({c['n_points']}): Pearson {c['pearson']:.3f}, "
                        f"Spearman {c['spearman']:.3f}")
    return "\n".join(rows)


def plot_heads(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """(a) accuracy by which layers are shared; (b) accuracy against linear CKA with the teacher."""
    from ..report.plotting import plt, save_figure, settings_caption

    studs = record["students"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(14, 4.8))
    xs = np.arange(len(SHARING))
    for k, (which, color) in enumerate((("aux", "#d62728"), ("all", "#ff7f0e"))):
        names = [f"{n}_{which}" for n, _, _ in SHARING]
        means = [studs[n]["accuracy"]["mean"] for n in names]
        cis = [studs[n]["accuracy"]["ci95"] or 0 for n in names]
        x = xs + (k - 0.5) * 0.4
        ax1.bar(x, means, 0.4, yerr=cis, capsize=3, color=color,
                label="aux logits only" if which == "aux" else "all logits")
        for xi, m, ci in zip(x, means, cis):
            ax1.text(xi, m + ci + 0.015, f"{m:.2f}", ha="center", fontsize=8)
    teacher = record["teacher"]["accuracy"]["mean"]
    ax1.axhline(teacher, color="#1f77b4", ls="--", lw=1, label=f"teacher ({teacher:.2f})")
    ax1.axhline(0.1, color="black", ls=":", lw=1, label="chance")
    ax1.set_xticks(xs, ["all layers", "hidden layers\nonly", "output layer\nonly", "nothing\n(cross-model)"])
    ax1.set_xlabel("what the student's initialisation shares with the teacher's")
    ax1.set_ylabel("student's MNIST test accuracy")
    ax1.set_ylim(0, 1.3)
    ax1.set_title("(a) head compatibility: which shared layers carry the signal", fontsize=10)
    ax1.legend(fontsize=8, frameon=False, loc="upper center", ncol=2)

    groups = {"shared_all": ("all layers", "#d62728"), "shared_hidden": ("hidden only", "#9467bd"),
              "shared_head": ("output only", "#2ca02c"), "shared_none": ("nothing", "#8c564b")}
    for prefix, (label, color) in groups.items():
        for which, marker in (("aux", "o"), ("all", "^")):
            s = studs[f"{prefix}_{which}"]
            ax2.scatter(s["cka"]["values"], s["accuracy"]["values"], s=16, marker=marker, color=color, alpha=0.75,
                        label=f"{label}, {which} logits")
    cmap = plt.get_cmap("Greys")
    for j, sigma in enumerate(record["sigmas"]):
        s = studs[f"perturbed_{sigma:g}_aux"]
        ax2.scatter(s["cka"]["values"], s["accuracy"]["values"], s=16, marker="s",
                    color=cmap(0.35 + 0.6 * j / max(1, len(record["sigmas"]) - 1)), alpha=0.85,
                    label=(f"θ0 + σ·ξ, aux; σ = {record['sigmas'][0]:g} (light) … {record['sigmas'][-1]:g} (dark)"
                           if j == 0 else None))
    c, w = record["correlation"]["cka"], record["correlation_within"]
    ax2.axhline(0.1, color="black", ls=":", lw=1)
    ax2.set_xlabel(f"linear CKA with the teacher's penultimate features ({record['n_similarity']} test images)")
    ax2.set_ylabel("student's MNIST test accuracy")
    ax2.set_title(f"(b) representation similarity vs accuracy: Pearson {c['pearson']:.2f} over all "
                  f"{c['n_points']} students\n({w['aux']['cka']['pearson']:.2f} within aux-only, "
                  f"{w['all']['cka']['pearson']:.2f} within all-logit students)", fontsize=10)
    ax2.legend(fontsize=7, frameon=False, loc="upper left", ncol=2)
    for ax in (ax1, ax2):
        ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.5, -0.05, settings_caption(record["config"], record["n_runs"])
             + "; other layers from another run's reference", ha="center", va="top", fontsize=7.5)
    return save_figure(fig, path, record=record)


def write_heads(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "head_compatibility") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (student, run, accuracy, cka, cosine) and ``<stem>.png``."""
    rows = [[name, i, f"{a:.6f}", f"{k:.6f}", f"{c:.6f}"] for name, s in record["students"].items()
            for i, (a, k, c) in enumerate(zip(s["accuracy"]["values"], s["cka"]["values"], s["cosine"]["values"]))]
    return write_record(record, out_dir, stem, csv=(["student", "run", "accuracy", "cka", "cosine"], rows), indent=1,
                        figure=plot_heads)
