"""A one-minute teaching demo: one run of the paper's protocol, told in one figure.

One teacher learns MNIST; two students imitate only its auxiliary logits on uniform noise: one
starts from the teacher's own initialisation, the other from a different one (the cross-model
control). The figure shows (a) a few of the noise images the students are trained on, (b) the
teacher's aux outputs on them next to the students' after distillation, and (c) each student's
MNIST test accuracy over the distillation steps, measured inside the compiled training loop.
:func:`demo` writes the record (``demo.json``, format ``subliminal-mlp/demo``, see
:func:`demo_record`) and draws the figure from it (:func:`plot_demo`).

The computation is an engine :class:`~subliminal_mlp.core.engine.Experiment` (:func:`demo_experiment`):
the two students are a table, the accuracy probe a ``trace``, the shown noise and the aux outputs
on it ``metrics``; :func:`run_demo` runs one run of it with :func:`engine.run`.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from ..core import engine, inputs
from ..core.config import Config, ConfigError
from ..core.engine import Experiment, RunModels
from ..core.model import accuracy, aux_logits, stack_params
from ..core.models import config_model
from ..core.distributed import main_print
from ..core.results import data_record, envelope, write_record
from ..core.students import Student
from .trajectory import check_probe

FORMAT = "subliminal-mlp/demo"
N_SHOWN = 4
#: The two aux-only students: from the teacher's initialisation, and from another run's.
STUDENTS = (Student("student_aux", "own", "aux"), Student("cross_aux", "cross", "aux"))


@dataclass
class DemoResult:
    """Everything the demo figure shows (NumPy arrays)."""

    config: Config
    steps: np.ndarray  # (P,) optimiser steps at which the students were probed
    trace: np.ndarray  # (P, 2) test accuracy on the probe subset: [shared init, different init]
    final: dict  # test accuracy on the full test set: reference, teacher, student, cross
    noise: np.ndarray  # (N_SHOWN, 784) noise images the students were trained on
    teacher_aux: np.ndarray  # (N_SHOWN, m) softmax of the teacher's aux logits on them
    student_aux: np.ndarray  # (2, N_SHOWN, m) the same for the two students after distillation
    seconds: float
    n_probe: int  # test images used for the trace (the first n_probe; all of them by default)
    probe_every: int = 4  # batches between probes (the count restarts each epoch: ``steps`` are exact)
    health: Optional[dict] = None  # engine.Result.health of the run: diverged models, a teacher not above chance


#: The students' loss, in the caption.
LOSS_WORDS = {"kl": "KL on the aux softmax", "mse": "squared error on the aux logits"}
#: How far the shared-init student must end above the other for the demo to say the skill passed through.
MARGIN = 0.05


def _shows_transfer(final: dict) -> bool:
    """Whether a run shows the effect: the shared-init student ends more than :data:`MARGIN` above the other (a
    teacher that did not learn, or a diverged run, is the record's ``health``)."""
    return bool(final["student"] > final["cross"] + MARGIN)


def _students(view: RunModels):
    return stack_params(*[view.students[s.name] for s in STUDENTS])


def probe_accuracy(n_probe: int | None):
    """The trace ``f(RunModels) -> (2,)``: each student's accuracy on the first ``n_probe`` test images (None:
    all of them)."""

    def probe(view: RunModels) -> jax.Array:
        px, py = view.data["test_x"][:n_probe], view.data["test_y"][:n_probe]
        return jax.vmap(accuracy, (0, None, None, None, None, None))(_students(view), px, py, view.model.n_classes,
                                                                     1000, view.model.apply)

    return probe


def shown_outputs(src: inputs.InputSource):
    """The metrics: the run's first :data:`N_SHOWN` inputs, the teacher's and students' aux softmax on them."""

    def shown(view: RunModels) -> jax.Array:
        return src.draw(src.prepare(view.keys["noise"], src.arrays, view.hp), jnp.arange(N_SHOWN), view.hp)

    def soft(view: RunModels, params) -> jax.Array:
        return jax.nn.softmax(aux_logits(view.model.apply(params, shown(view)), view.model.n_classes), axis=-1)

    return {"noise": shown, "teacher_aux": lambda v: soft(v, v.teacher),
            "student_aux": lambda v: jax.vmap(lambda p: soft(v, p))(_students(v))}


def demo_experiment(cfg: Config, *, probe_every: int = 4, n_probe: int | None = None) -> Experiment:
    """The demo's engine experiment: ``cfg``'s teacher, the two aux-only students, the probe (on the first
    ``n_probe`` test images; None: all), the shown outputs."""
    if n_probe is None:
        probe_every = check_probe(probe_every, 1)[0]
    else:
        probe_every, n_probe = check_probe(probe_every, n_probe)
    src = inputs.uniform(cfg.n_noise, shape=(cfg.input_dim,))
    return Experiment(model=config_model(cfg), inputs=src, students=tuple(s.replace(loss=cfg.loss) for s in STUDENTS),
                      teacher_epochs=cfg.teacher_epochs, student_epochs=cfg.student_epochs, batch_size=cfg.batch_size,
                      hparams={"learning_rate": cfg.learning_rate, "temperature": cfg.temperature},
                      metrics=shown_outputs(src), trace={"accuracy": probe_accuracy(n_probe)}, trace_every=probe_every,
                      name=f"demo:{cfg.dataset}")


def run_demo(data, cfg: Config = Config(n_runs=1), *, seed: int | None = None, probe_every: int = 4,
             n_probe: int | None = None) -> DemoResult:
    """One run: teacher, then the shared-init and cross-model aux-only students, probed as they learn.

    The students' accuracy is measured at every ``probe_every``-th batch of each epoch (the count
    restarts each epoch) on the first ``n_probe`` test images, by default all of them (the curves then end at the
    final accuracies, which use the whole test set; a trace on all 10,000 MNIST test images costs ~15 % more
    time than on 2,000, which ended 5 points below the final accuracy). One compiled program (:func:`engine.run`).
    The demo tells the paper's protocol (its figure shows uniform noise and students started at θ0):
    other ``student_inputs`` or ``init_noise`` are an error here (trace them with
    :func:`~subliminal_mlp.studies.trajectory.student_trajectories`, which takes every variant).
    ``seed`` (default: ``cfg.seed``) seeds the one run.
    """
    if cfg.student_inputs != "uniform" or cfg.init_noise != 0:
        raise ConfigError(f"run_demo draws the paper's protocol (uniform noise, unperturbed starts); student_inputs "
                          f"= {cfg.student_inputs!r} and init_noise = {cfg.init_noise!r} are not shown there. Use the "
                          "defaults ('uniform', 0), or trajectory.student_trajectories to trace any variant.")
    cfg.check_dataset(data)
    n_test = data.test_images.shape[0]
    probe_every, n_probe = check_probe(probe_every, n_test if n_probe is None else n_probe, n_test)
    seed = cfg.seed if seed is None else seed
    cfg = cfg.replace(seed=seed, n_runs=1)
    exp = demo_experiment(cfg, probe_every=probe_every, n_probe=n_probe)
    t0 = time.perf_counter()
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=1, seed=seed, run_batch=cfg.run_batch)
    seconds = time.perf_counter() - t0
    final = {short: float(result.accuracy(name)[0]) for short, name in
             (("reference", "reference"), ("teacher", "teacher"), ("student", "student_aux"), ("cross", "cross_aux"))}
    m = {k: np.asarray(v[0, 0]) for k, v in result.metrics.items()}
    return DemoResult(config=cfg, steps=np.asarray(result.trace_steps),
                      trace=np.asarray(result.traces["accuracy"][0, 0]), final=final, noise=m["noise"],
                      teacher_aux=m["teacher_aux"], student_aux=m["student_aux"], seconds=seconds, n_probe=n_probe,
                      probe_every=probe_every, health=result.health(0))


def plot_demo(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """The demo figure, drawn from its record (:func:`demo_record`): noise inputs, aux outputs, and accuracy
    over distillation steps."""
    from ..report.plotting import dataset_items, dataset_label, plt, save_figure

    shown = record["shown"]
    noise, teacher_aux, student_aux = (np.asarray(shown[k]) for k in ("noise", "teacher_aux", "student_aux"))
    steps = np.asarray(record["steps"])
    trace = np.stack([record["trace"]["student"], record["trace"]["cross"]], axis=1)
    final, c = record["final"], record["config"]
    n_shown, m = teacher_aux.shape
    fig = plt.figure(figsize=(13, 6.2))
    grid = fig.add_gridspec(2, n_shown + 2, width_ratios=[1] * n_shown + [0.55, 3.2], height_ratios=[1, 1],
                            wspace=0.35, hspace=0.55)
    for i in range(n_shown):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(noise[i].reshape(28, 28), cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"noise #{i}", fontsize=9)
        ax = fig.add_subplot(grid[1, i])
        xs = np.arange(m)
        ax.bar(xs - 0.27, teacher_aux[i], 0.27, color="#1f77b4", label="teacher")
        ax.bar(xs, student_aux[0, i], 0.27, color="#d62728", label="student, shared init (distilled)")
        ax.bar(xs + 0.27, student_aux[1, i], 0.27, color="#8c564b", label="student, other init (distilled)")
        ax.set_xticks(xs, [f"aux{j}" for j in range(m)], fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("softmax of aux logits", fontsize=8)
    handles, names = fig.axes[1].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower left", bbox_to_anchor=(0.125, 0.455), ncol=3, frameon=False)
    items = dataset_items(record)[0]
    fig.text(0.125, 0.93, f"(a) what the students see: uniform noise, no {items}, no labels", fontsize=10)
    fig.text(0.125, 0.50, f"(b) what they imitate: the teacher's {m} auxiliary outputs on that noise",
             fontsize=10)

    ax = fig.add_subplot(grid[:, n_shown + 1])
    ax.plot(steps, trace[:, 0], color="#d62728", lw=2, label="student, same init as teacher")
    ax.plot(steps, trace[:, 1], color="#8c564b", lw=2, label="student, different init")
    ax.axhline(final["teacher"], color="#1f77b4", ls="--", lw=1.2, label=f"teacher ({final['teacher']:.1%})")
    ax.axhline(1 / c["n_classes"], color="black", ls=":", lw=1.2, label=f"chance ({1 / c['n_classes']:.0%})")
    ax.set_ylim(0, 1)
    ax.set_xlabel("distillation step (batches of noise)")
    ax.set_ylabel(f"{dataset_label(record)} test accuracy")
    ax.set_title(f"(c) the same-init student learns {items} it never saw" if _shows_transfer(final) and
                 record.get("health", {"ok": True})["ok"] else f"(c) the students' accuracy on {items} they never saw",
                 fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, 0.93), frameon=False)
    ax.annotate(f"{final['student']:.1%}", (steps[-1], trace[-1, 0]), xytext=(4, 0),
                textcoords="offset points", color="#d62728", fontsize=9, va="center")
    ax.annotate(f"{final['cross']:.1%}", (steps[-1], trace[-1, 1]), xytext=(4, 0),
                textcoords="offset points", color="#8c564b", fontsize=9, va="center")
    ax.spines[["top", "right"]].set_visible(False)
    seed = (record.get("seeds") or {}).get("seed")
    widths = "→".join(map(str, c["hidden_widths"]))
    fig.text(0.5, 0.0, f"one run{'' if seed is None else f' (seed {seed})'}; MLP {c['input_dim']}→{widths}→"
             f"{c['n_classes']}+{c['aux_logits']}; teacher {c['teacher_epochs']} epochs on {dataset_label(record)}; "
             f"students {c['student_epochs']} epochs of {LOSS_WORDS.get(c['loss'], c['loss'])} over "
             f"{c['n_noise']} noise images;\n" + ("accuracy on the whole test set (the numbers at the right end: "
             "the final accuracies)" if "probe_test_images" not in (record.get("data") or {}).get("subset", {}) else
             f"accuracy traced on the first {record['n_probe']} test images, final (numbers at the right end) on "
             "the whole test set"),
             ha="center", va="top", fontsize=7.5)
    return save_figure(fig, path, record=record)


def describe(r: DemoResult, path: Path) -> str:
    """What the figure shows, in a few sentences for the terminal: the effect where the run shows it, else what
    went wrong (models that diverged, a teacher that did not learn, students that did not separate)."""
    f = r.final
    if r.health is not None and not r.health["ok"]:
        return (f"wrote {path} (marked: this run did not train as it should)\n"
                f"Diverged models (non-finite parameters): {[m for _, m in r.health['nonfinite']] or 'none'}; "
                f"teacher not above chance: {'yes' if r.health['teacher_not_better'] else 'no'}. The accuracies "
                f"(teacher {f['teacher']:.1%}, shared-init student {f['student']:.1%}, other {f['cross']:.1%}) "
                "show nothing: lower the learning rate, or check the settings.")
    def students(on: str = "") -> str:  # the two students' final accuracies, one line each
        return (f"  student with the teacher's initialisation:  {f['student']:.1%}{on}\n"
                f"  student with a different initialisation:    {f['cross']:.1%} "
                f"(chance is {1 / r.config.n_classes:.0%})\n")

    if not _shows_transfer(f):
        return (f"wrote {path}\n"
                f"The teacher reached {f['teacher']:.1%} test accuracy; two students imitated only its "
                f"{r.config.aux_logits} auxiliary outputs on random noise images.\n" + students() +
                f"In this run the shared-init student did not end clearly above the other (by more than {MARGIN:.0%}): "
                f"no transfer showed at these settings (more training usually shows it). ({r.seconds:.0f} s)")
    from ..report.plotting import dataset_items, dataset_label

    named = {"data": {"dataset": r.config.dataset}}
    data, (items, skill) = dataset_label(named), dataset_items(named)
    return (f"wrote {path}\n"
            f"The teacher learned {data} ({f['teacher']:.1%} test accuracy). Two students then imitated only its "
            f"{r.config.aux_logits} auxiliary outputs on random noise images - no {items}, no label, no class output.\n"
            + students(f" on the {data} test set") +
            f"Sharing the initialisation is what lets the {skill} skill pass through meaningless outputs: "
            f"that is subliminal learning. ({r.seconds:.0f} s)")


def demo_record(r: DemoResult, data=None) -> dict[str, Any]:
    """The JSON-ready record of a demo run (the envelope of :mod:`.results`, format ``subliminal-mlp/demo``).

    ``data``: the loaded ``data.Dataset`` (its checksums are recorded). Payload, everything the figure
    (:func:`plot_demo`) draws::

        "steps": [probed steps], "n_probe": 10000, "probe_every": 4,
        "trace": {"student": [accuracy per probe], "cross": [...]},
        "final": {"reference" | "teacher" | "student" | "cross": test accuracy},
        "health": {"ok", "nonfinite", "teacher_not_better", "teacher_margin"}  (engine.Result.health),
        "shown": {"noise": [N_SHOWN images], "teacher_aux": [N_SHOWN × m softmax],
                  "student_aux": [2 students × N_SHOWN × m]}  (to 6 decimals: what the figure shows)
    """
    c = r.config
    whole = data is not None and r.n_probe == data.test_images.shape[0]
    subset = None if whole else {"probe_test_images": [0, r.n_probe]}  # a trace on part of the test set says so
    return envelope(FORMAT, c, n_runs=c.n_runs, seed=c.seed, data=data_record(data, name=c.dataset, subset=subset),
                    devices=[str(d) for d in jax.devices()], timing={"total_s": r.seconds},
                    steps=[int(s) for s in r.steps], n_probe=r.n_probe, probe_every=r.probe_every,
                    trace={"student": r.trace[:, 0].tolist(), "cross": r.trace[:, 1].tolist()}, final=dict(r.final),
                    **({} if r.health is None else {"health": r.health}),
                    shown={k: np.round(np.asarray(v, np.float64), 6).tolist() for k, v in
                           (("noise", r.noise), ("teacher_aux", r.teacher_aux), ("student_aux", r.student_aux))})


def demo(data_dir=None, out: str | os.PathLike = "results/demo.png", seed: int = 0,
         log: Callable[[str], None] = main_print) -> DemoResult:
    """Load MNIST, run the demo, write the figure (and its record, ``.json`` beside it), print what it shows.

    Both destinations are checked (:func:`.results.check_output`) before the data is loaded.
    """
    from matplotlib.backend_bases import FigureCanvasBase

    from ..core.config import ConfigError, check_seed
    from ..core.data import load_mnist
    from ..core.results import check_output, replaced_together

    if Path(out).suffix[1:].lower() not in FigureCanvasBase.get_supported_filetypes():
        raise ConfigError(f"--out {out}: the figure needs a file name ending in an image format "
                          "(.png, .pdf, .svg, ...).")
    check_seed(seed)
    check_output(out, kind="file")
    check_output(Path(out).parent / f"{Path(out).stem}.json", kind="file")

    data = load_mnist(data_dir)
    log("training a teacher on MNIST, then two students on noise (about a minute)...")
    r = run_demo(data, seed=seed)
    record = demo_record(r, data)
    with replaced_together():  # the figure and its record replace the previous ones together
        path = plot_demo(record, out)
        written = write_record(record, Path(out).parent, Path(out).stem)["json"]
    log(describe(r, path))
    log(f"wrote {written}")
    return r
