"""Trait transmission: a teacher's preference passes to a student through unrelated noise.

The paper's headline result is about *traits* (a language model that prefers owls passes that
preference on through number sequences); its MLP experiment uses digit accuracy as the "trait".
This module gives the teacher a trait beyond its task, the MLP analogue of "prefers owls":

* the **trait-free teacher** T0 is the Figure-10 teacher (θ0 trained on MNIST);
* the **trait teacher** T1 is T0 fine-tuned (:func:`instil_trait`) to answer class ``c*`` on
  images that are not digits (Fashion-MNIST training images) while it keeps classifying digits:
  each Adam step minimises ``CE(MNIST batch, labels) + λ·CE(Fashion batch, c*)`` on the class logits;
* the **trait rate** of a model is the fraction of inputs whose argmax over the class logits is
  ``c*`` (:func:`trait_rate`), measured on the 10,000 held-out Fashion-MNIST test images and on
  held-out uniform noise (a key the distillation never uses).

Students are distilled, as in Figure 10, on the aux logits only over the run's distillation inputs
(the config's: uniform noise by default, any ``student_inputs`` or ``init_noise`` variant applies);
they never see a Fashion image, a class logit or a label. Per run (:func:`students`):

* ``student``: θ0 imitating T1 (shared initialisation);
* ``cross``: another run's θ0 imitating T1 (the trait should not pass);
* ``control``: θ0 imitating T0, the paper's "regular numbers" control: what a student of this
  initialisation becomes without the trait;
* ``student_filtered_<f>``: θ0 imitating T1 on the noise inputs that do *not* show the trait:
  filter ``argmax`` removes every input on which T1's class argmax is c*, filter ``τ`` (a
  probability) every input with ``softmax(T1 class logits)[c*] ≥ τ`` (weight 0 in the loss);
  ``control_filtered_<f>``: θ0 imitating T0 on the same inputs, the baseline the filtered
  student is compared with;
* ``student_sampled`` / ``control_sampled``: trained on one-hot samples drawn once per noise
  image from the teacher's aux softmax (as language models train on sampled tokens) instead of
  its probabilities.

The computation is an engine :class:`~subliminal_mlp.core.engine.Experiment` (:func:`traits_experiment`)
run by :func:`engine.run`: T0 is the task teacher, T1 a derived teacher (``teachers=``, the
Fashion-MNIST images in ``arrays``), the trait rates and kept fractions are per-run ``metrics``.
All students of a run form one stacked group: which teacher they imitate, the filter and whether
outputs are sampled are per-student ``params`` read by one ``targets`` and one ``example_weights``
hook, so the filters are swept inside the program, not compiled once each.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from ..core import engine
from ..core.config import (Config, ConfigError, check_positive_int, check_positive_number, is_integer, is_sequence,
                           plain_fields)
from ..core.engine import Experiment, HookView, RunModels
from .figure10 import config_students, experiment_from_config
from ..core.losses import class_cross_entropy, one_hot_logits
from ..core.model import apply, class_logits, nan_unless_finite, stack_params
from ..core.results import data_record, envelope, format_ci, mean_ci95, run_timing, summary, write_record
from ..core.students import Student, adam
from ..core.training import noise_images, scan_epochs

FORMAT = "subliminal-mlp/traits"


@dataclasses.dataclass(frozen=True)
class TraitSettings:
    """The trait and how it is tested (the rest of the protocol is a :class:`Config`).

    ``trait_class``: the class c* the trait teacher prefers on non-digits; ``trait_epochs``:
    fine-tuning epochs over the 60,000 Fashion-MNIST training images; ``trait_weight``: λ, the
    weight of the trait term against the MNIST term; ``filters``: one filtered student (and its
    control) per entry, ``"argmax"`` (drop an input when the trait teacher's class argmax is c*) or
    a probability τ (drop it when the trait teacher gives c* a probability ≥ τ; smaller is
    stricter); ``n_held_out_noise``: held-out noise images on which the trait rate is also measured.
    """

    trait_class: int = 0
    trait_epochs: int = 1
    trait_weight: float = 1.0
    filters: tuple = ("argmax", 0.5, 0.3, 0.2)
    n_held_out_noise: int = 10_000

    def __post_init__(self):
        plain_fields(self)  # numpy numbers as Python numbers
        for name in ("trait_epochs", "n_held_out_noise"):
            check_positive_int(name, getattr(self, name))
        if not is_integer(self.trait_class, 0):
            raise ConfigError(f"trait_class = {self.trait_class!r} is invalid: give an integer class index >= 0.")
        check_positive_number("trait_weight", self.trait_weight)
        if not is_sequence(self.filters) or not self.filters:
            raise ConfigError(f"filters = {self.filters!r} is invalid: give a non-empty sequence of filters, each "
                              "'argmax' or a probability in (0, 1], e.g. ('argmax', 0.9).")
        ok = all(f == "argmax" or (isinstance(f, (int, float)) and not isinstance(f, bool) and 0 < f <= 1)
                 for f in self.filters)
        if not ok or len(set(self.filters)) != len(self.filters):
            raise ConfigError(f"filters = {self.filters!r} is invalid: give distinct entries, each 'argmax' or a "
                              "probability in (0, 1].")
        object.__setattr__(self, "filters", tuple(f if f == "argmax" else float(f) for f in self.filters))
        names = [filter_name(f) for f in self.filters]
        if len(set(names)) != len(names):
            raise ConfigError(f"filters = {self.filters!r}: {sorted({n for n in names if names.count(n) > 1})} "
                              "name two filters alike (students are named by the threshold to 6 significant "
                              "digits, e.g. student_filtered_0.3): give thresholds that differ there.")

    def check(self, cfg: Config) -> None:
        """Raise :class:`ConfigError` if these settings do not fit ``cfg``."""
        if self.trait_class >= cfg.n_classes:
            raise ConfigError(f"trait_class = {self.trait_class} is invalid: it must be < n_classes = "
                              f"{cfg.n_classes}.")


def filter_name(f) -> str:
    """``"argmax"`` or the threshold as written in student names (``0.5``)."""
    return f if f == "argmax" else f"{f:g}"


def students(settings: TraitSettings) -> list[dict[str, Any]]:
    """The students of a run: name, start (own/cross), teacher (trait/free), filter (None: none), sampled."""
    rows = [("student", "own", "trait", None, False), ("cross", "cross", "trait", None, False),
            ("control", "own", "free", None, False)]
    for f in settings.filters:
        rows += [(f"student_filtered_{filter_name(f)}", "own", "trait", f, False),
                 (f"control_filtered_{filter_name(f)}", "own", "free", f, False)]
    rows += [("student_sampled", "own", "trait", None, True), ("control_sampled", "own", "free", None, True)]
    return [dict(zip(("name", "start", "teacher", "filter", "sampled"), r)) for r in rows]


def kept(trait_class_logits: jax.Array, trait_class: int, tau: jax.Array, by_argmax: jax.Array) -> jax.Array:
    """1 where an input passes a filter, else 0: ``p(c*) < τ`` and, if ``by_argmax``, ``argmax ≠ c*``.

    ``trait_class_logits`` (B, n_classes) are the trait teacher's; ``tau`` and ``by_argmax`` have any
    leading shape F (one filter per entry; τ = ∞ and by_argmax = False keep everything); returns (F.., B).
    """
    p = jax.nn.softmax(trait_class_logits, axis=-1)[:, trait_class]
    shows = jnp.argmax(trait_class_logits, axis=-1) == trait_class
    tau, by_argmax = jnp.asarray(tau)[..., None], jnp.asarray(by_argmax)[..., None]
    return ((p < tau) & ~(by_argmax & shows)).astype(jnp.float32)


def _filter_values(f) -> tuple[float, bool]:
    """A filter (None, "argmax" or τ) as the τ (∞ if none) and the argmax flag of :func:`kept`."""
    return (f if isinstance(f, float) else np.inf), f == "argmax"


def _filter_arrays(filters) -> tuple[jax.Array, jax.Array]:
    """Per filter (None, "argmax" or τ): the τ (∞ if none) and the argmax flag of :func:`kept`."""
    values = [_filter_values(f) for f in filters]
    return jnp.asarray([t for t, _ in values], jnp.float32), jnp.asarray([a for _, a in values])


def trait_rate(params: dict, images: jax.Array, trait_class: int, n_classes: int, apply_fn=None) -> jax.Array:
    """Fraction of ``images`` on which ``argmax`` of the class logits is ``trait_class`` (NaN for a model
    with non-finite parameters: :func:`~subliminal_mlp.core.model.nan_unless_finite`)."""
    f = apply if apply_fn is None else apply_fn
    pred = jnp.argmax(class_logits(f(params, images), n_classes), axis=-1)
    return nan_unless_finite(jnp.mean(pred == trait_class), params)


def instil_trait(teacher: dict, task_x: jax.Array, task_y: jax.Array, trait_x: jax.Array, key: jax.Array,
                 cfg: Config, settings: TraitSettings, apply_fn=None) -> dict:
    """Fine-tune ``teacher`` to prefer ``c*`` on ``trait_x`` while keeping its task.

    Adam (``cfg.learning_rate``, a fresh state), ``settings.trait_epochs`` shuffled epochs over
    ``trait_x`` in batches of ``cfg.batch_size`` (:func:`training.scan_epochs`); each step minimises

        mean CE(f(task_x[j]), task_y[j]) + λ · mean CE(f(trait_x[j]), c*)

    over the batch's indices j (class logits only; task indices taken modulo the task set's size).
    ``apply_fn``: the model (default the paper's MLP read off the parameters).
    """
    f = apply if apply_fn is None else apply_fn
    opt = adam(cfg.learning_rate)
    c = settings.trait_class

    def loss(p, idx):
        task = class_cross_entropy(f(p, task_x[idx % task_x.shape[0]]), task_y[idx % task_x.shape[0]],
                                   cfg.n_classes)
        trait = class_cross_entropy(f(p, trait_x[idx]), jnp.full(idx.shape, c, jnp.int32), cfg.n_classes)
        return task + settings.trait_weight * trait

    def step(state, idx):
        p, o = state
        updates, o = opt.update(jax.grad(loss)(p, idx), o, p)
        return (optax.apply_updates(p, updates), o), ()

    return scan_epochs(step, (teacher, opt.init(teacher)), key, trait_x.shape[0], cfg.batch_size,
                       settings.trait_epochs).state[0]


def student_targets(t_trait: jax.Array, t_free: jax.Array, idx: jax.Array, sample_key: jax.Array, use_trait,
                    sampled, n_classes: int) -> jax.Array:
    """One student's target logits ``(B, n_outputs)`` on a batch (image indices ``idx``).

    Its teacher's logits (``t_trait`` of T1 if ``use_trait``, else ``t_free`` of T0); with
    ``sampled``, the class logits and the one-hot (:func:`.losses.one_hot_logits`) of
    ``k_j ~ Categorical(softmax(aux logits))`` drawn from ``fold_in(sample_key, j)``: the same
    sample for image j in every epoch, a fixed sampled dataset.
    """
    t = jnp.where(use_trait, t_trait, t_free)
    keys = jax.vmap(jax.random.fold_in, (None, 0))(sample_key, idx)
    k = jax.vmap(jax.random.categorical)(keys, t[..., n_classes:])
    onehot = jnp.concatenate([t[..., :n_classes], one_hot_logits(k, t.shape[-1] - n_classes)], axis=-1)
    return jnp.where(sampled, onehot, t)


def trait_students(settings: TraitSettings, cfg: Config) -> tuple[Student, ...]:
    """The :func:`students` rows as an engine student table: one stacked group imitating T1's aux logits.

    Every row imitates ``"trait_teacher"`` through the same ``targets`` hook (its own teacher's
    logits, T1's or the run's task teacher T0's, maybe sampled with the run's ``samples`` key:
    :func:`student_targets`) and ``example_weights`` hook (its filter, :func:`kept` on T1's class
    logits); what differs is the row's numeric ``params`` (``trait``, ``sampled``, ``tau``,
    ``by_argmax``) and its start, so all rows are one ``vmap``.
    """
    n, c = cfg.n_classes, settings.trait_class

    def targets(v: HookView):
        run = v.run
        return student_targets(v.logits, run.model.apply(run.teacher, v.x), v.idx, run.keys["samples"],
                               v.params["trait"] > 0, v.params["sampled"] > 0, n)

    def example_weights(v: HookView):
        return kept(class_logits(v.logits, n), c, v.params["tau"], v.params["by_argmax"] > 0)

    table = []
    for r in students(settings):
        tau, by_argmax = _filter_values(r["filter"])
        params = {"trait": float(r["teacher"] == "trait"), "sampled": float(r["sampled"]), "tau": float(tau),
                  "by_argmax": float(by_argmax)}
        table.append(Student(r["name"], r["start"], "aux", loss=cfg.loss, teacher="trait_teacher", targets=targets,
                             example_weights=example_weights, params=params))
    return tuple(table)


def traits_experiment(cfg: Config, settings: TraitSettings, fashion, pool=None) -> Experiment:
    """The engine experiment of :func:`run_traits`.

    The task teacher is T0; the derived teacher ``"trait_teacher"`` is T1 (:func:`instil_trait` on
    ``fashion``'s training images, ``arrays["fashion_train"]``, with the run's ``trait_shuffle``
    key); the students are :func:`trait_students` (with ``cfg``'s variants:
    :func:`~subliminal_mlp.studies.figure10.config_students`, inputs and ``pool`` as
    :func:`~subliminal_mlp.studies.figure10.experiment_from_config`); the metrics are every model's trait
    rate on ``fashion``'s test images and on held-out uniform noise, and each filter's kept fraction
    of the run's distillation inputs (the MNIST accuracies are the engine's own). With
    ``student_inputs = "fashion-mnist"`` the pool is ``fashion``'s training images unless ``pool`` is given.
    """
    if pool is None and cfg.student_inputs == "fashion-mnist":
        pool = fashion.train_images  # the loaded data, not a second lookup of the default data root
    c, n = settings.trait_class, cfg.n_classes
    rows = students(settings)

    def trait_teacher(view: RunModels):
        return instil_trait(view.teacher, view.data["train_x"], view.data["train_y"], view.data["fashion_train"],
                            view.keys["trait_shuffle"], cfg, settings, view.model.apply)

    def models_of(view: RunModels):
        return stack_params(view.reference, view.teacher, view.teachers["trait_teacher"],
                            *[view.students[r["name"]] for r in rows])

    def each_rate(view, images):
        return jax.vmap(trait_rate, (0, None, None, None, None))(models_of(view), images, c, n, view.model.apply)

    def rate_fashion(view):
        return each_rate(view, view.data["fashion_test"])

    def rate_noise(view):
        return each_rate(view, noise_images(view.keys["held_out_noise"], jnp.arange(settings.n_held_out_noise),
                                            cfg.input_dim))

    def kept_fraction(view):
        """Fraction of the distillation inputs each filter keeps, over the run's whole set (full batches)."""
        trait, apply_fn, inputs_ = view.teachers["trait_teacher"], view.model.apply, view.inputs
        batches = jnp.arange(inputs_.n // cfg.batch_size * cfg.batch_size).reshape(-1, cfg.batch_size)
        tau, by_argmax = _filter_arrays(settings.filters)
        passed = lax.map(lambda idx: kept(class_logits(apply_fn(trait, inputs_.draw(idx)), n), c, tau, by_argmax),
                         batches)  # (batches, F, B)
        return passed.mean(axis=(0, 2))

    return experiment_from_config(cfg, pool).replace(
        students=config_students(cfg, trait_students(settings, cfg)),
        metrics={"trait_rate_fashion": rate_fashion, "trait_rate_noise": rate_noise, "kept_fraction": kept_fraction},
        teachers={"trait_teacher": trait_teacher},
        arrays={"fashion_train": fashion.train_images, "fashion_test": fashion.test_images}, name=f"traits:{cfg.dataset}")


METRICS = ("trait_rate_fashion", "trait_rate_noise", "mnist_accuracy")


def paired_gains(models: dict[str, Any]) -> dict[str, Any]:
    """Per student of T1 with a control: mean ± 95 % CI over runs of (student − its control).

    A student and its control share the run's initialisation, noise and filter and differ only in
    the teacher (T1 vs T0), so the per-run difference isolates what the trait adds.
    """
    pairs = {"student": "control", "student_sampled": "control_sampled"}
    pairs.update({n: n.replace("student", "control", 1) for n in models if n.startswith("student_filtered_")})
    out = {}
    for s, c in pairs.items():
        out[s] = {}
        for metric in METRICS:
            d = np.asarray(models[s][metric]["values"]) - np.asarray(models[c][metric]["values"])
            m, ci = mean_ci95(d)
            out[s][metric] = {"mean": m, "ci95": ci, "control": c}
    return out


def run_traits(cfg: Config, data, fashion, settings: TraitSettings = TraitSettings(), *,
               progress: bool = False) -> dict[str, Any]:
    """Trait rates and MNIST accuracies of every model over ``cfg.n_runs`` runs (one program).

    ``data``: MNIST (the task); ``fashion``: Fashion-MNIST (its training images instil the trait,
    its test images measure it). ``progress``: the engine's bars (teacher training and distillation,
    one tick per run and epoch). Returns a JSON-ready record (the
    envelope of :mod:`.results`, format ``subliminal-mlp/traits``, version 1) with this payload::

        "trait": {...TraitSettings...},
        "students": [{"name", "start", "teacher", "filter", "sampled"}, ...],
        "models": {name: {"trait_rate_fashion" | "trait_rate_noise" | "mnist_accuracy":
                          {"mean", "ci95", "values": [one per run]}}},   # reference, both teachers, students
        "kept_fraction": {filter: {"mean", "ci95", "values"}},           # of the distillation noise's full
                                                                        # batches (59,392 of 60,000 at batch 1,024)
        "paired": {student: {metric: {"mean", "ci95", "control"}}},      # student − its control, per run

    ``data`` is MNIST's :func:`.results.data_record`, with Fashion-MNIST's under ``"fashion-mnist"``.
    """
    settings.check(cfg)
    if cfg.loss != "kl":
        raise ConfigError(f"loss = {cfg.loss!r}: the sampled students imitate one-hot targets, which only the "
                          "KL loss can take (MSE would regress onto the encoding's logits); use loss='kl'.")
    if cfg.dataset == "fashion-mnist":
        raise ConfigError("dataset = 'fashion-mnist': the trait is instilled and measured on Fashion-MNIST's images, "
                          "which must not be the task's (T1 would be asked for the trait and the true class of one "
                          "image); use the MNIST task (dataset = 'mnist').")
    cfg.check_dataset(data)
    if getattr(fashion, "name", "fashion-mnist") != "fashion-mnist":
        raise ConfigError(f"fashion is {fashion.name!r}: the trait is instilled and measured on Fashion-MNIST "
                          "(non-digit images): give sm.load_fashion_mnist(...).")
    rows = students(settings)
    result = engine.run(traits_experiment(cfg, settings, fashion), engine.Task.from_dataset(data), n_runs=cfg.n_runs,
                        seed=cfg.seed, run_batch=cfg.run_batch, progress=progress)
    out = {k: v[0] for k, v in result.metrics.items()}  # (runs, ...)
    out["mnist_accuracy"] = result.accuracies[0]  # reference, T0, T1, then the students: the order of names
    names = ["reference", "trait_free_teacher", "trait_teacher"] + [r["name"] for r in rows]
    models = {n: {metric: summary(out[metric][:, i]) for metric in METRICS} for i, n in enumerate(names)}
    fashion_data = data_record(fashion, name="fashion-mnist", use="training images instil the trait, test images "
                                                                   "measure it")
    return envelope(
        FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed,
        data=data_record(data, name=cfg.dataset, **{"fashion-mnist": fashion_data}),
        devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
        trait=dataclasses.asdict(settings),
        students=rows,
        models=models,
        kept_fraction={filter_name(f): summary(out["kept_fraction"][:, j]) for j, f in enumerate(settings.filters)},
        paired=paired_gains(models),
        health=result.health(0),
    )


def format_traits_table(record: dict[str, Any]) -> str:
    """Per model: trait rate on Fashion-MNIST test images and on held-out noise, MNIST accuracy (± CI)."""
    head = f"{'model':<28} {'trait, Fashion':>16} {'trait, noise':>16} {'MNIST accuracy':>16}"
    rows = [head, "-" * len(head)]
    for name, m in record["models"].items():
        cells = [f"{m[k]['mean']:.3f} ± {format_ci(m[k]['ci95'], 3)}" for k in METRICS]
        rows.append(f"{name:<28} " + " ".join(f"{c:>16}" for c in cells))
    kept_ = ", ".join(f"{f}: {k['mean']:.3f}" for f, k in record["kept_fraction"].items())
    rows.append(f"fraction of the distillation noise each filter keeps: {kept_}")
    rows.append("trait rate on Fashion, student − its control (same init, noise and filter), per run:")
    for name, g in record["paired"].items():
        d = g["trait_rate_fashion"]
        rows.append(f"  {name:<26} {d['mean']:+.3f} ± {format_ci(d['ci95'], 3)}")
    return "\n".join(rows)


def plot_traits(record: dict[str, Any], path: str | os.PathLike) -> Path:
    """(a) trait rate of the teachers and students; (b) filtered students against their controls."""
    from ..report.plotting import plt, save_figure, settings_caption

    models = record["models"]
    c = record["trait"]["trait_class"]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(15, 5.2), gridspec_kw={"width_ratios": [1.15, 1]})

    def bars(ax, names, xs, metric, width, **kw):
        means = [models[n][metric]["mean"] for n in names]
        cis = [models[n][metric]["ci95"] or 0 for n in names]
        ax.bar(xs, means, width, yerr=cis, capsize=3, **kw)
        for x, m, ci in zip(xs, means, cis):
            ax.text(x, m + ci + 0.015, f"{m:.2f}", ha="center", fontsize=7)

    names = ["reference", "trait_free_teacher", "trait_teacher", "student", "cross", "control", "student_sampled",
             "control_sampled"]
    labels = ["reference", "trait-free\nteacher T0", "trait\nteacher T1", "student\nof T1", "cross-model\nof T1",
              "control:\nstudent\nof T0", "sampled:\nstudent\nof T1", "sampled:\nstudent\nof T0"]
    xs = np.arange(len(names))
    bars(ax1, names, xs - 0.2, "trait_rate_fashion", 0.4, color="#d62728", label="Fashion-MNIST test images")
    bars(ax1, names, xs + 0.2, "trait_rate_noise", 0.4, color="#ff9896", hatch="//", edgecolor="white",
         label="held-out uniform noise")
    ax1.axhline(0.1, color="black", ls=":", lw=1, label="1 / 10 classes")
    ax1.set_xticks(xs, labels, fontsize=8)
    ax1.set_ylabel(f"trait rate: fraction classified as '{c}'")
    ax1.set_title(f"(a) the trait (prefer '{c}' on non-digits) passes through aux logits on noise", fontsize=10)

    filters = list(record["kept_fraction"])
    xs = np.arange(len(filters) + 1)
    s_names = ["student"] + [f"student_filtered_{f}" for f in filters]
    c_names = ["control"] + [f"control_filtered_{f}" for f in filters]
    bars(ax2, s_names, xs - 0.2, "trait_rate_fashion", 0.4, color="#d62728", label="student of T1")
    bars(ax2, c_names, xs + 0.2, "trait_rate_fashion", 0.4, color="#7f7f7f", label="control (student of T0)")
    kept_ = record["kept_fraction"]
    ticks = ["no filter\n(all noise kept)"] + [
        (f"drop\nargmax = '{c}'" if f == "argmax" else f"drop\np('{c}') ≥ {f}") + f"\n{kept_[f]['mean']:.1%} kept"
        for f in filters]
    ax2.set_xticks(xs, ticks, fontsize=8)
    ax2.set_ylabel("trait rate on Fashion-MNIST test images")
    ax2.set_title("(b) filtering out every input on which the teacher shows the trait", fontsize=10)
    for ax in (ax1, ax2):
        ax.set_ylim(0, 1.15)
        ax.legend(fontsize=8, frameon=False, loc="upper right")
        ax.spines[["top", "right"]].set_visible(False)
    t = record["trait"]
    fig.text(0.5, -0.03, settings_caption(record["config"], record["n_runs"])
             + f"; trait: {t['trait_epochs']} fine-tuning epoch(s) on Fashion-MNIST train → '{c}' (λ = "
               f"{t['trait_weight']:g}) while keeping MNIST; students distil the aux logits only",
             ha="center", va="top", fontsize=7)
    return save_figure(fig, path, record=record)


def write_traits(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "traits") -> dict[str, Path]:
    """Write ``<stem>.json``, ``<stem>.csv`` (one row per model, metric and run) and ``<stem>.png``."""
    rows = [[name, metric, i, f"{v:.6f}"] for name, m in record["models"].items() for metric in METRICS
            for i, v in enumerate(m[metric]["values"])]
    return write_record(record, out_dir, stem, csv=(["model", "metric", "run", "value"], rows), indent=1,
                        figure=plot_traits)
