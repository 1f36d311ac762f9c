"""Figures drawn from records: the Figure-10 bar chart, an engine record's bars, a sweep's lines."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Iterator, Sequence

import matplotlib
import numpy as np

if not os.environ.get("MPLBACKEND"):  # files only, no windows; a chosen backend (Jupyter's inline one) is kept
    matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from ..core.results import atomic_write, few_runs_note, health_title  # noqa: E402

LABELS = {"reference": "reference\n(untrained)", "teacher": "teacher", "student_aux": "student\n(aux only)",
          "student_all": "student\n(all logits)", "cross_aux": "cross-model\n(aux only)",
          "cross_all": "cross-model\n(all logits)"}
COLORS = {"reference": "#9e9e9e", "teacher": "#1f77b4", "student_aux": "#d62728", "student_all": "#ff7f0e",
          "cross_aux": "#8c564b", "cross_all": "#bcbd22"}


#: How a figure marks unhealthy runs, diverged or whose teacher did not learn (:func:`health_warning`): a red
#: box centred above everything drawn (:func:`save_figure`).
WARNING_STYLE = dict(ha="center", va="bottom", fontsize=8, color="#b00020", fontweight="bold",
                     bbox=dict(facecolor="white", edgecolor="#b00020", boxstyle="round,pad=0.3"))


def save_figure(fig, path: str | os.PathLike, dpi: int = 150, record: dict[str, Any] | None = None,
                warning: str = "") -> Path:
    """Save ``fig`` atomically (temporary file + rename) and close it.

    With the ``record`` it was drawn from, a record whose ``health`` found diverged runs gets the
    red mark of :func:`health_warning` above everything drawn (it covers no data); a record with a
    ``health`` per part (``split_head.health``, ``families.liminal.health[i]``) is marked for each
    unhealthy part. ``warning``: a mark of the caller's own instead.
    """
    warning = warning or (record_health_warning(record) if record else "")
    if warning:  # above the top of everything drawn (titles included): the saved image grows to hold it
        top = max([fig.transFigure.inverted().transform(a.get_tightbbox().corners()).max(0)[1]
                   for a in fig.get_children() if hasattr(a, "get_tightbbox") and a.get_visible()
                   and a is not fig.patch] or [1.0])
        fig.text(0.5, top + 0.03, warning, **WARNING_STYLE)
    try:
        fmt = Path(path).suffix[1:] or "png"  # the temporary file's random name is no format
        return atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=dpi, bbox_inches="tight", format=fmt))
    finally:
        plt.close(fig)


#: Settings that change what a Figure-10 run computes beyond the caption's first line, with the paper's value:
#: the caption names each that differs (``init_noise_kind`` too when σ = 0: its sweep's base is σ = 0).
CAPTION_EXTRAS = {"temperature": 1.0, "student_inputs": "uniform", "input_mix": 0.5, "init_noise": 0.0,
                  "init_noise_kind": "isotropic"}


def dataset_label(record: dict[str, Any]) -> str:
    """How a caption names the dataset a record's models learned (its ``data.dataset``): ``MNIST``,
    ``Fashion-MNIST``, or the name as recorded."""
    name = (record.get("data") or {}).get("dataset")
    return {"mnist": "MNIST", "fashion-mnist": "Fashion-MNIST"}.get(name, name or "unnamed data")


#: What a dataset's images show, for sentences: (plural noun, adjective), e.g. "learns digits it never saw",
#: "the digit skill"; :func:`dataset_items` falls back to ``("images", "task")``.
DATASET_ITEMS = {"mnist": ("digits", "digit"), "fashion-mnist": ("clothing items", "clothing")}


def dataset_items(record: dict[str, Any]) -> tuple[str, str]:
    """The (plural noun, adjective) of what a record's dataset shows (:data:`DATASET_ITEMS`).

    >>> dataset_items({"data": {"dataset": "fashion-mnist"}})
    ('clothing items', 'clothing')
    """
    return DATASET_ITEMS.get((record.get("data") or {}).get("dataset"), ("images", "task"))


#: What the students are distilled on, by ``Config.student_inputs``: the caption's noun for its n_noise images.
INPUT_NOUNS = {"uniform": "noise images", "gaussian": "noise images", "task": "training images",
               "mix": "images (training images and noise)", "fashion-mnist": "Fashion-MNIST images"}


def inputs_noun(config: dict[str, Any], skip: Sequence[str] = ()) -> str:
    """The noun for a Figure-10 config's distillation inputs (:data:`INPUT_NOUNS`); ``"distillation inputs"``
    when ``student_inputs`` is swept (in ``skip``) or not one of them.

    >>> inputs_noun({"student_inputs": "task"}), inputs_noun({"student_inputs": "task"}, skip=("student_inputs",))
    ('training images', 'distillation inputs')
    """
    return "distillation inputs" if "student_inputs" in skip else INPUT_NOUNS.get(
        config.get("student_inputs", "uniform"), "distillation inputs")


def runs_caption(n_runs: int | Sequence[int], unit: str = "runs") -> str:
    """``"10 runs (mean ± 95% CI)"``; ``"1 run (no CI)"`` for one run, which has no interval; below 10 runs the
    interval is said to be the paper's approximation, narrow there (:func:`~.results.few_runs_note`).

    >>> runs_caption(10), runs_caption(1), runs_caption(3, "runs per setting")
    ('10 runs (mean ± 95% CI)', '1 run (no CI)', '3 runs per setting (mean ± 1.96·sd/√n, narrower than a 95% CI)')
    """
    if n_runs == 1:
        return "1 " + unit.replace("runs", "run", 1) + " (no CI)"
    fewest = min(n_runs) if isinstance(n_runs, (list, tuple)) else n_runs  # a sweep's values may differ in runs
    return f"{n_runs} {unit} (mean ± " + ("95% CI)" if few_runs_note(fewest) is None else
                                          "1.96·sd/√n, narrower than a 95% CI)")


def settings_caption(config: dict[str, Any], n_runs: int, skip: Sequence[str] = ()) -> str:
    """One line of the settings that define a Figure-10 run, then any of :data:`CAPTION_EXTRAS` that is not
    the paper's (``input_mix`` only for mixed inputs). A field in ``skip`` (a sweep's swept field) is not
    given a value: the line shows ``[field]`` in its place, or leaves it out of the extras."""
    def v(field: str) -> str:
        value = config[field]
        return f"[{field}]" if field in skip else (f"{value:g}" if isinstance(value, float) else str(value))

    widths = "[hidden_widths]" if "hidden_widths" in skip else "→".join(map(str, config["hidden_widths"]))
    extras = [f"{field} {v(field)}" for field, paper in CAPTION_EXTRAS.items()
              if field in config and field not in skip and config[field] != paper
              and (field != "input_mix" or config.get("student_inputs") == "mix")]
    return (f"{v('dataset')}, MLP {v('input_dim')}→{widths}→{v('n_classes')}+{v('aux_logits')}, "
            f"loss {v('loss')}, Adam lr {v('learning_rate')}, batch {v('batch_size')}, "
            f"{v('teacher_epochs')}+{v('student_epochs')} epochs, {v('n_noise')} {inputs_noun(config, skip)}, "
            + "".join(f"{e}, " for e in extras) + runs_caption(n_runs))


def plot_fig10(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """The six-bar chart of Figure 10 from a results record: mean ± 95 % CI, chance as a dotted line."""
    if not isinstance(record.get("models"), dict) or "config" not in record:
        raise ValueError(f"plot_fig10 draws a Figure-10 record (format subliminal-mlp/fig10); this one is "
                         f"{record.get('format')!r}: draw an engine record (Result.write) with plot_experiment.")
    models = record["models"]
    names = list(models)
    means = [models[n]["mean"] for n in names]
    cis = [models[n]["ci95"] or 0.0 for n in names]
    fig, ax = plt.subplots(figsize=(8.5, 4.6))
    bars = ax.bar(range(len(names)), means, yerr=cis, capsize=5,
                  color=[COLORS.get(n, "#777777") for n in names], edgecolor="black", linewidth=0.6)
    chance = models["reference"]["mean"] if "reference" in models else record.get("chance", 0.1)
    ax.axhline(chance, color="black", linestyle=":", linewidth=1.2, label=f"reference (chance) = {chance:.3f}")
    for bar, m, ci in zip(bars, means, cis):
        ax.text(bar.get_x() + bar.get_width() / 2, m + ci + 0.015, f"{m:.3f}", ha="center", va="bottom", fontsize=9)
    model_ticks(ax, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy (MNIST test set)" if record["config"]["dataset"] == "mnist" else "test accuracy")
    ax.set_title(f"Subliminal learning: students distilled on a teacher's logits over {inputs_noun(record['config'])}",
                 fontsize=11)
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.5, -0.02, settings_caption(record["config"], record["n_runs"]), ha="center", va="top", fontsize=7.5)
    return save_figure(fig, path, warning=health_warning(record.get("health"), record["n_runs"]))


def experiment_caption(record: dict[str, Any], width: int = 150) -> str:
    """The settings of an engine record (``Result.write``, format ``subliminal-mlp/experiment``), wrapped. A
    swept hyperparameter reads ``name [swept]`` (its values label the bars), not the base value it replaces."""
    import textwrap

    c = record["config"]
    model = c["model"]
    inp = c["inputs"]
    shape = "×".join(map(str, model.get("input_shape", [])))
    arch = ", ".join(f"{k} {v}" for k, v in model.items() if k not in ("name", "input_shape", "n_classes",
                                                                        "aux_logits", "init", "apply"))  # in the JSON

    def item(k: str, v: Any) -> str:
        return f"{k} {v:g}" if isinstance(v, (int, float)) else f"{k} {v}"

    swept = {p for v in record.get("values", ()) for p in (v.get("sweep") or {})}  # one value per bar: see legend
    hp = ", ".join(f"{k} [swept]" if k in swept else item(k, v) for k, v in c["hparams"].items())
    own = [item(s["name"], s["temperature"]) for s in c.get("students", [])
           if s.get("temperature") not in ("temperature", None)]  # rows not at the hyperparameter T
    if own:
        hp += f" (students' own temperature: {', '.join(own)})"
    text = (f"{c.get('name') or 'experiment'}: model {model.get('name')} ({shape} → {model.get('n_classes')}"
            f"+{model.get('aux_logits')}{', ' + arch if arch else ''}), inputs {inp.get('name')} (n = {inp.get('n')}), "
            f"{c['teacher_epochs']}+{c['student_epochs']} epochs, batch {c['batch_size']}, {hp}, "
            f"{runs_caption(record['n_runs'])}")
    return "\n".join(textwrap.wrap(text, width))


def plot_experiment(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """Bars of every model's accuracy in an engine record (``Result.write``): mean ± 95 % CI per model, one bar
    per swept value (its label in the legend), chance as a dotted line, the settings as the caption.

    >>> import tempfile, numpy as np, subliminal_mlp as sm
    >>> x = np.random.default_rng(0).uniform(-1, 1, (256, 8)).astype(np.float32)
    >>> task = sm.Task(x, (x[:, 0] > 0).astype(np.int32), x, (x[:, 0] > 0).astype(np.int32), n_classes=2)
    >>> exp = sm.Experiment(model=sm.mlp((8,), n_classes=2, aux_logits=2, input_dim=8), teacher_epochs=10,
    ...                     student_epochs=2, batch_size=64, inputs=sm.inputs.uniform(128, shape=(8,)),
    ...                     hparams={"learning_rate": 1e-2, "temperature": 1.0})
    >>> result = sm.run(exp, task, n_runs=2, sweep={"temperature": [1.0, 4.0]})
    >>> out = tempfile.mkdtemp()
    >>> files = result.write(out, "toy")
    >>> plot_experiment(sm.read_results(files["json"]), f"{out}/toy.png").name
    'toy.png'
    """
    if not isinstance(record.get("models"), (list, tuple)) or "values" not in record:
        raise ValueError(f"plot_experiment draws an engine record (format subliminal-mlp/experiment, "
                         f"Result.write); this one is {record.get('format')!r} (a Figure-10 record: plot_fig10).")
    names, values = list(record["models"]), record["values"]
    k = len(values)
    width = 0.8 / k
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(names) + 2.0), 4.6))
    colors = plt.get_cmap("viridis")(np.linspace(0.15, 0.85, k)) if k > 1 else None
    for j, v in enumerate(values):
        means = [v["models"][n]["mean"] for n in names]
        cis = [v["models"][n]["ci95"] or 0.0 for n in names]
        xs = np.arange(len(names)) + (j - (k - 1) / 2) * width
        label = ", ".join(f"{p} = {x:g}" if isinstance(x, (int, float)) else f"{p} = {x}"
                          for p, x in (v.get("sweep") or {}).items()) or None
        bars = ax.bar(xs, means, width=width * 0.95, yerr=cis, capsize=3, edgecolor="black", linewidth=0.5,
                      color=[COLORS.get(n, "#777777") for n in names] if colors is None else colors[j],
                      label=label if k > 1 else None)  # one value's bars have the models' colours: titled, not keyed
        if k == 1 and label:
            ax.set_title(label, fontsize=9)
        if k <= 3:  # side by side, the numbers stand upright so that neighbours do not overlap
            for bar, m, ci in zip(bars, means, cis):
                ax.text(bar.get_x() + bar.get_width() / 2, m + ci + 0.015, f"{m:.3f}", ha="center", va="bottom",
                        fontsize=8 if k == 1 else 7, rotation=0 if k == 1 else 90)
    chance = record.get("chance")
    if chance is not None:
        ax.axhline(chance, color="black", linestyle=":", linewidth=1.2, label=f"chance = {chance:.3f}")
    model_ticks(ax, names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("test accuracy")
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8, frameon=False)  # beside the bars, not on them
    ax.spines[["top", "right"]].set_visible(False)
    fig.text(0.5, -0.02, experiment_caption(record), ha="center", va="top", fontsize=7.5)
    return save_figure(fig, path, record=record)


def model_label(name: str, width: int = 12) -> str:
    r"""A model's tick label: the paper's models by their labels (:data:`LABELS`); a name of one's own broken
    after its underscores into lines of at most ``width`` characters where it can be, so that it fits its bar.

    >>> model_label("student_aux"), model_label("student_aux_mse"), model_label("my_student_on_class_logits")
    ('student\n(aux only)', 'student_aux_\nmse', 'my_student_\non_class_\nlogits')
    """
    if name in LABELS:
        return LABELS[name]
    lines = [""]
    for part in re.findall(r"[^_]+_*|_+", name):
        if lines[-1] and len(lines[-1]) + len(part) > width:
            lines.append(part)
        else:
            lines[-1] += part
    return "\n".join(lines)


def model_ticks(ax, names: list[str]) -> None:
    """One x tick per model at 0, 1, ..., labelled by :func:`model_label`."""
    ax.set_xticks(range(len(names)), [model_label(n) for n in names], fontsize=9)


def health_warning(health: dict[str, Any] | None, n_runs: int) -> str:
    """The figure's mark of unhealthy runs (a record's ``health``: :func:`~.results.health_title`): "" when every
    run is healthy."""
    if not health or health.get("ok", True):
        return ""
    lines = [f"WARNING: {health_title(health)}"]
    bad_runs = sorted({run for run, _ in health["nonfinite"]})
    if bad_runs:
        models = sorted({model for _, model in health["nonfinite"]})
        lines.append(f"non-finite parameters in {len(bad_runs)} of {n_runs} runs ({', '.join(models)}): accuracy NaN")
    if health["teacher_not_better"]:
        lines.append(f"teacher no better than its untrained reference in {len(health['teacher_not_better'])} of "
                     f"{n_runs} runs")
    lines.append('see "health" in the JSON record')
    return "\n".join(lines)


def _healths(node: Any, where: str = "") -> Iterator[tuple[str, dict]]:
    """Every ``health`` entry in a record, with where it is (``""`` at the top, ``families.sgd[0]`` ...)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "health":
                for i, h in (enumerate(value) if isinstance(value, list) else [(None, value)]):
                    if isinstance(h, dict):
                        yield where + ("" if i is None else f"[{i}]"), h
            elif isinstance(value, (dict, list)):
                yield from _healths(value, f"{where}.{key}".lstrip("."))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            if isinstance(value, dict):
                yield from _healths(value, f"{where}[{i}]")


def record_health_warning(record: dict[str, Any]) -> str:
    """:func:`health_warning` of a whole record: its top-level ``health``, or one line per unhealthy part."""
    bad = [(where, h) for where, h in _healths(record) if not h.get("ok", True)]
    n_runs = record.get("n_runs", 0)
    if not bad:
        return ""
    if [where for where, _ in bad] == [""]:
        return health_warning(bad[0][1], n_runs)
    lines = [f"WARNING: {health_title(*(h for _, h in bad))}"]
    for where, h in bad:
        lines += [f"{where}: {line}" for line in health_warning(h, n_runs).splitlines()[1:-1]]
    return "\n".join(lines + ['see "health" in the JSON record'])


#: What a swept Config field is, for a sweep figure's axis (the field's name follows in brackets).
SWEPT_AXIS = {
    "aux_logits": "number of auxiliary logits m",
    "hidden_widths": "hidden layer widths",
    "init_noise": "σ of the noise added to the shared-init students' start",
    "input_mix": "weight α of task images in the students' inputs",
    "student_inputs": "the students' distillation inputs",
    "loss": "distillation loss",
    "temperature": "softmax temperature T",
    "learning_rate": "Adam learning rate",
    "n_noise": "number of noise images",
    "student_epochs": "student epochs",
    "teacher_epochs": "teacher epochs",
    "batch_size": "batch size",
}


def swept_axis_label(param: str, base_config: dict[str, Any]) -> str:
    """The sweep figure's x label: what the field is (:data:`SWEPT_AXIS`), then its name."""
    what = SWEPT_AXIS.get(param)
    if param == "init_noise" and base_config.get("init_noise_kind") == "orthogonal":
        what += ", orthogonal to the teacher's update"
    return f"{what} ({param})" if what else param


def plot_sweep(summary: dict[str, Any], path: str | os.PathLike) -> Path:
    """Each model's accuracy against the swept value: mean line, 95 % CI band, chance line.

    Numeric values spanning a factor of 20 or more, and not evenly spaced, are spread on a log axis;
    with a 0 among them, a symmetric-log axis, linear up to the smallest positive value, so that 0,
    0.005, 0.01 and 1 are all told apart (an evenly spaced grid, 0, 0.05, ..., 1, stays linear). The
    reference is dashed and drawn above the other lines, so that it shows where one lies at its level.
    """
    from ..studies.sweep import numeric_axis

    x = numeric_axis(summary["values"])
    categorical = x is None
    if categorical:
        x = np.arange(len(summary["values"]), dtype=float)
    fig, ax = plt.subplots(figsize=(8, 4.6))
    for name, m in summary["models"].items():
        mean = np.asarray(m["mean"])
        ci = np.asarray([0.0 if c is None else c for c in m["ci95"]])
        color = COLORS.get(name, "#777777")
        ax.plot(x, mean, marker="o", ms=4, color=color, label=LABELS.get(name, name).replace("\n", " "),
                **({"ls": "--", "zorder": 3} if name == "reference" else {}))
        ax.fill_between(x, mean - ci, mean + ci, color=color, alpha=0.2, linewidth=0)
    ax.axhline(summary["chance"], color="black", linestyle=":", linewidth=1.2, label="chance")
    positive = x[x > 0] if not categorical else x
    gaps = np.diff(np.unique(x)) if not categorical else np.ones(1)
    even = len(gaps) > 0 and gaps.max() <= 2 * gaps.min()  # an evenly spaced grid reads best on a linear axis
    if categorical:
        ax.set_xticks(x, summary["labels"], fontsize=8)
    elif not even and np.all(x >= 0) and len(positive) >= 2 and positive.max() / positive.min() >= 20:
        if np.all(x > 0):
            ax.set_xscale("log")
        else:  # a 0 among them: linear up to the smallest positive value, logarithmic beyond
            ax.set_xscale("symlog", linthresh=positive.min(), linscale=0.5)
            ax.set_xlim(-0.3 * positive.min(), positive.max() * 1.3)  # autoscale pads into the negative decades
        ax.set_xticks(x, summary["labels"], fontsize=8)
        ax.minorticks_off()
    ax.set_ylim(0, 1.02)
    ax.set_xlabel(swept_axis_label(summary["param"], summary["base_config"]))
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Subliminal learning against {summary['param']}", fontsize=11)
    ax.legend(fontsize=7.5, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.spines[["top", "right"]].set_visible(False)
    runs = sorted(set(summary["n_runs"]))
    caption = settings_caption(summary["base_config"], runs[0] if len(runs) == 1 else runs, skip=(summary["param"],))
    fig.text(0.5, -0.02, f"swept: {summary['param']}; otherwise " + caption, ha="center", va="top", fontsize=7)
    bad = [(label, h) for label, h in zip(summary["labels"], summary.get("health") or []) if h and not h["ok"]]
    warning = (f"WARNING: {health_title(*(h for _, h in bad))} at {summary['param']} = "
               f"{', '.join(label for label, _ in bad)}\n" 'see "health" in the JSON records') if bad else ""
    return save_figure(fig, path, warning=warning)


#: Each record format's drawing function (module, name): every figure is drawn from its record alone.
DRAWERS = {
    "subliminal-mlp/fig10": ("subliminal_mlp.report.plotting", "plot_fig10"),
    "subliminal-mlp/experiment": ("subliminal_mlp.report.plotting", "plot_experiment"),
    "subliminal-mlp/sweep": ("subliminal_mlp.report.plotting", "plot_sweep"),
    "subliminal-mlp/theorem": ("subliminal_mlp.theory.theorem", "plot_theorem"),
    "subliminal-mlp/trajectory": ("subliminal_mlp.studies.trajectory", "plot_trajectories"),
    "subliminal-mlp/alignment": ("subliminal_mlp.studies.alignment", "plot_alignment"),
    "subliminal-mlp/heads": ("subliminal_mlp.studies.heads", "plot_heads"),
    "subliminal-mlp/omitted-digit": ("subliminal_mlp.studies.omitted_digit", "plot_omitted"),
    "subliminal-mlp/traits": ("subliminal_mlp.studies.traits", "plot_traits"),
    "subliminal-mlp/input-families": ("subliminal_mlp.studies.input_families", "plot_input_families"),
    "subliminal-mlp/teacher-task": ("subliminal_mlp.studies.teacher_task", "plot_teacher_task"),
    "subliminal-mlp/mitigations": ("subliminal_mlp.studies.mitigations", "plot_mitigations"),
    "subliminal-mlp/split-heads": ("subliminal_mlp.studies.split_heads", "plot_split_heads"),
    "subliminal-mlp/demo": ("subliminal_mlp.studies.demo", "plot_demo"),
    "subliminal-mlp/one-step": ("subliminal_mlp.studies.one_step", "plot_one_step"),
}


def draw(record: dict[str, Any] | str | os.PathLike, path: str | os.PathLike) -> Path:
    """Draw ``record`` (a record of any of the library's formats, e.g. from ``read_results``, or the path of
    its JSON file) to ``path`` with its format's plotting function (:data:`DRAWERS`); no compute. Returns the
    path written.

    ``sm.draw``; ``subliminal-mlp figures --redraw`` redraws the committed figures this way.

    >>> import tempfile, subliminal_mlp as sm
    >>> from subliminal_mlp.cli.figures import FIGURES_DIR   # the committed figures of a checkout
    >>> record = sm.read_results(FIGURES_DIR / "fig10_mnist.json")
    >>> sm.draw(record, f"{tempfile.mkdtemp()}/fig10.png").name
    'fig10.png'
    """
    import importlib

    from ..core.results import RecordError, check_output, read_results

    check_output(path, kind="file")  # before drawing: a directory, say, is refused, not found at the rename
    if isinstance(record, (str, os.PathLike)):
        record = read_results(record)
    if not isinstance(record, dict):
        raise TypeError(f"draw takes a record (a dict from read_results or Result.record()) or its JSON file's path, "
                        f"not a {type(record).__name__}.")
    fmt = record.get("format")
    if fmt not in DRAWERS:
        raise RecordError(f"no figure is drawn from a record of format {fmt!r}: the drawable formats are "
                          f"{', '.join(sorted(DRAWERS))}.")
    module, name = DRAWERS[fmt]
    return Path(getattr(importlib.import_module(module), name)(record, path) or path)
