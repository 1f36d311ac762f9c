"""A one-minute teaching demo: one run of the paper's protocol, told in one figure.

One teacher learns MNIST; two students imitate only its auxiliary logits on uniform noise: one
starts from the teacher's own initialisation, the other from a different one (the cross-model
control). The figure shows (a) a few of the noise images the students are trained on, (b) the
teacher's aux outputs on them next to the students' after distillation, and (c) each student's
MNIST test accuracy over the distillation steps, measured inside the compiled training loop.
:func:`demo` also writes the numbers beside the figure (``demo.json``, format
``subliminal-mlp/demo``, see :func:`demo_record`).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from .config import Config
from .experiment import require_plain_students, run_keys
from .model import apply, aux_logits
from .results import data_record, envelope, write_record
from .training import noise_images, probe_steps
from .trajectory import final_accuracies, traced_run

FORMAT = "subliminal-mlp/demo"
N_SHOWN = 4


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
    n_probe: int  # test images used for the trace


def run_demo(data, cfg: Config = Config(n_runs=1), *, seed: int = 0, probe_every: int = 4,
             n_probe: int = 2000) -> DemoResult:
    """One run: teacher, then the shared-init and cross-model aux-only students, probed as they learn.

    The students' accuracy is measured every ``probe_every`` steps on the first ``n_probe`` test
    images; the final accuracies use the whole test set. One compiled program.
    """
    require_plain_students(cfg, "run_demo")
    cfg.check_data(data.train_images.shape[0], data.train_images.shape[1])
    cfg = cfg.replace(seed=seed, n_runs=1)
    keys = run_keys(seed, 0)
    n = cfg.n_classes

    @jax.jit
    def program(train_x, train_y, test_x, test_y):
        ref, teacher, students, trace = traced_run(cfg, 0, train_x, train_y, test_x, test_y, probe_every, n_probe)
        shown = noise_images(keys["noise"], jnp.arange(N_SHOWN), cfg.input_dim)
        soft = lambda p: jax.nn.softmax(aux_logits(apply(p, shown), n), axis=-1)  # noqa: E731
        final = final_accuracies(ref, teacher, students, test_x, test_y, n)
        return trace, final, shown, soft(teacher), jax.vmap(soft)(students)

    t0 = time.perf_counter()
    trace, final, shown, t_aux, s_aux = jax.device_get(
        program(data.train_images, data.train_labels, data.test_images, data.test_labels))
    return DemoResult(config=cfg, steps=probe_steps(cfg.n_noise, cfg.batch_size, cfg.student_epochs, probe_every),
                      trace=np.asarray(trace), final=dict(zip(("reference", "teacher", "student", "cross"),
                                                              map(float, final))),
                      noise=np.asarray(shown), teacher_aux=np.asarray(t_aux), student_aux=np.asarray(s_aux),
                      seconds=time.perf_counter() - t0, n_probe=min(n_probe, data.test_images.shape[0]))


def plot_demo(r: DemoResult, path: str | os.PathLike) -> Path:
    """The demo figure: noise inputs, aux outputs, and accuracy over distillation steps."""
    from .plotting import plt, save_figure

    m = r.teacher_aux.shape[1]
    fig = plt.figure(figsize=(13, 6.2))
    grid = fig.add_gridspec(2, N_SHOWN + 2, width_ratios=[1] * N_SHOWN + [0.55, 3.2], height_ratios=[1, 1],
                            wspace=0.35, hspace=0.55)
    for i in range(N_SHOWN):
        ax = fig.add_subplot(grid[0, i])
        ax.imshow(r.noise[i].reshape(28, 28), cmap="gray", vmin=-1, vmax=1)
        ax.set_xticks([]), ax.set_yticks([])
        ax.set_title(f"noise #{i}", fontsize=9)
        ax = fig.add_subplot(grid[1, i])
        xs = np.arange(m)
        ax.bar(xs - 0.27, r.teacher_aux[i], 0.27, color="#1f77b4", label="teacher")
        ax.bar(xs, r.student_aux[0, i], 0.27, color="#d62728", label="student, shared init")
        ax.bar(xs + 0.27, r.student_aux[1, i], 0.27, color="#8c564b", label="student, other init")
        ax.set_xticks(xs, [f"aux{j}" for j in range(m)], fontsize=7)
        ax.set_ylim(0, 1)
        ax.tick_params(labelsize=7)
        if i == 0:
            ax.set_ylabel("softmax of aux logits", fontsize=8)
    handles, names = fig.axes[1].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=8, loc="lower left", bbox_to_anchor=(0.125, 0.455), ncol=3, frameon=False)
    fig.text(0.125, 0.93, "(a) what the students see: uniform noise, no digits, no labels", fontsize=10)
    fig.text(0.125, 0.50, f"(b) what they imitate: the teacher's {m} auxiliary outputs on that noise",
             fontsize=10)

    ax = fig.add_subplot(grid[:, N_SHOWN + 1])
    ax.plot(r.steps, r.trace[:, 0], color="#d62728", lw=2, label="student, same init as teacher")
    ax.plot(r.steps, r.trace[:, 1], color="#8c564b", lw=2, label="student, different init")
    ax.axhline(r.final["teacher"], color="#1f77b4", ls="--", lw=1.2, label=f"teacher ({r.final['teacher']:.2f})")
    ax.axhline(1 / r.config.n_classes, color="black", ls=":", lw=1.2, label="chance (0.10)")
    ax.set_ylim(0, 1)
    ax.set_xlabel("distillation step (batches of noise)")
    ax.set_ylabel("MNIST test accuracy")
    ax.set_title("(c) the same-init student learns digits it never saw", fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(0, 0.93), frameon=False)
    ax.annotate(f"{r.final['student']:.0%}", (r.steps[-1], r.trace[-1, 0]), xytext=(4, 0),
                textcoords="offset points", color="#d62728", fontsize=9, va="center")
    ax.annotate(f"{r.final['cross']:.0%}", (r.steps[-1], r.trace[-1, 1]), xytext=(4, 0),
                textcoords="offset points", color="#8c564b", fontsize=9, va="center")
    ax.spines[["top", "right"]].set_visible(False)
    c = r.config
    fig.text(0.5, 0.0, f"one run, seed-derived keys; MLP {c.input_dim}→{'→'.join(map(str, c.hidden_widths))}→"
             f"{c.n_classes}+{c.aux_logits}; teacher {c.teacher_epochs} epochs on MNIST; students {c.student_epochs} "
             f"epochs of KL on the aux softmax over {c.n_noise} noise images;\naccuracy traced on "
             f"the first {r.n_probe} test images, final (numbers at the right end) on the whole test set", ha="center", va="top", fontsize=7.5)
    return save_figure(fig, path)


def describe(r: DemoResult, path: Path) -> str:
    """What the figure shows, in a few sentences for the terminal."""
    f = r.final
    return (f"wrote {path}\n"
            f"The teacher learned MNIST ({f['teacher']:.1%} test accuracy). Two students then imitated only its "
            f"{r.config.aux_logits} auxiliary outputs on random noise images - no digit, no label, no class output.\n"
            f"  student with the teacher's initialisation:  {f['student']:.1%} on the MNIST test set\n"
            f"  student with a different initialisation:    {f['cross']:.1%} (chance is 10%)\n"
            f"Sharing the initialisation is what lets the digit skill pass through meaningless outputs: "
            f"that is subliminal learning. ({r.seconds:.0f} s)")


def demo_record(r: DemoResult, data=None) -> dict[str, Any]:
    """The JSON-ready record of a demo run (the envelope of :mod:`.results`, format ``subliminal-mlp/demo``).

    ``data``: the loaded ``data.Dataset`` (its checksums are recorded). Payload::

        "steps": [probed steps], "n_probe": 2000,
        "trace": {"student": [accuracy per probe], "cross": [...]},
        "final": {"reference" | "teacher" | "student" | "cross": test accuracy}
    """
    c = r.config
    subset = {"probe_test_images": [0, r.n_probe]}
    return envelope(FORMAT, c, n_runs=c.n_runs, seed=c.seed, data=data_record(data, name=c.dataset, subset=subset),
                    devices=[str(d) for d in jax.devices()], timing={"total_s": r.seconds},
                    steps=[int(s) for s in r.steps], n_probe=r.n_probe,
                    trace={"student": r.trace[:, 0].tolist(), "cross": r.trace[:, 1].tolist()}, final=dict(r.final))


def demo(data_dir=None, out: str | os.PathLike = "results/demo.png", seed: int = 0,
         log: Callable[[str], None] = print) -> DemoResult:
    """Load MNIST, run the demo, write the figure (and its record, ``.json`` beside it), print what it shows."""
    from .data import load_mnist

    data = load_mnist(data_dir)
    log("training a teacher on MNIST, then two students on noise (about a minute)...")
    r = run_demo(data, seed=seed)
    path = plot_demo(r, out)
    record = write_record(demo_record(r, data), path.parent, path.stem)["json"]
    log(describe(r, path))
    log(f"wrote {record}")
    return r
