"""Typed configuration with the paper's values as defaults (protocol.md §1).

Every setting of the Figure-10 protocol lives in one frozen dataclass, :class:`Config`, so that a
run is fully described by it (it is written verbatim into every results JSON) and a sweep can vary
any field by name. Invalid values raise :class:`ConfigError` at construction, before any compute.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

LOSSES = ("kl", "mse")
#: What the students are distilled on: uniform noise in [-1, 1] (the paper), Gaussian noise with the
#: same mean and variance (N(0, 1/3)), the teacher's own training images (unlabelled), mixtures
#: ``input_mix · image + (1 − input_mix) · uniform noise``, or Fashion-MNIST training images.
STUDENT_INPUTS = ("uniform", "gaussian", "task", "mix", "fashion-mnist")
#: Noise added to the shared-init students' starting point: isotropic, or orthogonal to the
#: teacher's total update θ_teacher − θ_0 (Jiang et al.).
INIT_NOISE_KINDS = ("isotropic", "orthogonal")
DATASETS = ("mnist", "fashion-mnist")
#: The six models of Figure 10, in the paper's order. Results are keyed by these names.
MODELS = ("reference", "teacher", "student_aux", "student_all", "cross_aux", "cross_all")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and what to do."""


class SettingWarning(UserWarning):
    """A setting that runs but cannot do what it is there for (e.g. a student distilled by KL on one logit,
    which never moves); the message names it and what to do. The command line shows it as one line."""


def plain_scalar(value: Any) -> Any:
    """A numpy or JAX scalar (0-d) as the Python number it holds; any other value as it is."""
    return np.asarray(value).item() if hasattr(value, "dtype") and np.ndim(value) == 0 else value


def plain_fields(settings: Any) -> None:
    """Replace, in a frozen settings dataclass, numpy/JAX scalars by Python numbers (also inside tuples,
    lists, ranges and 1-d arrays, which become tuples), so ``np.arange``'s values are taken as ints and
    records hold plain JSON."""
    for f in dataclasses.fields(settings):
        value = getattr(settings, f.name)
        if isinstance(value, (tuple, list, range)) or (isinstance(value, np.ndarray) and value.ndim == 1):
            value = tuple(plain_scalar(v) for v in value)
        object.__setattr__(settings, f.name, plain_scalar(value))


def is_sequence(value: Any) -> bool:
    """Whether ``value`` can be a sequence of settings: iterable, and not a string or bytes (whose letters
    would be taken for values).

    >>> is_sequence((1, 2)), is_sequence(range(3)), is_sequence(3), is_sequence("kl")
    (True, True, False, False)
    """
    return not isinstance(value, (str, bytes)) and hasattr(value, "__iter__")


def is_integer(value: Any, low: Optional[int] = None, high: Optional[int] = None, *, numpy: bool = False) -> bool:
    """Whether ``value`` is an integer in ``low .. high`` (both included; None: unbounded). A boolean is not
    an integer here; a numpy integer is one only with ``numpy=True`` (where the value is converted before use).

    >>> is_integer(3, 1), is_integer(True, 0), is_integer(2.0, 1), is_integer(np.int64(5), 1, 4, numpy=True)
    (True, False, False, False)
    """
    kinds = (int, np.integer) if numpy else int
    return bool(not isinstance(value, bool) and isinstance(value, kinds)
                and (low is None or value >= low) and (high is None or value <= high))


def normalised(config: dict[str, Any]) -> dict[str, Any]:
    """A record's ``config`` as this version writes it: fields added since the record was written take
    their defaults (what the record's runs used), so that an older record of the same settings compares equal."""
    return Config.from_dict(config).to_dict()


#: The most optimiser steps a phase may take, and the most runs (times swept values) one experiment may have: steps
#: and run indices are counted in int32 inside the compiled program.
MAX_STEPS = MAX_RUNS = 2**31 - 1


def check_steps(phase: str, epochs: int, n: int | None = None, batch_size: int = 1,
                error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` when ``epochs`` epochs of ``n`` examples in batches of ``batch_size`` are more than
    :data:`MAX_STEPS` steps (``n`` None: the data are not known yet, and an epoch is at least one step);
    ``phase``, "teacher" or "student", says whose ``{phase}_epochs`` is named."""
    steps = epochs * (1 if n is None else -(-n // batch_size))
    if steps > MAX_STEPS:
        what = "each epoch is at least one step" if n is None else f"{n:,} examples in batches of {batch_size}"
        raise error(f"{phase}_epochs = {epochs} is too many: {steps:,} steps ({what}), and steps are counted in "
                    f"int32 (at most {MAX_STEPS:,}). Lower {phase}_epochs.")


def float32_trouble(value: float, positive: bool = False) -> str | None:
    """Why a finite setting cannot enter a float32 program as itself, or None: beyond float32's range (it would be
    inf), or, for a setting that must be > 0, so small that it rounds to 0.

    >>> float32_trouble(3e-4) is None, float32_trouble(1e-50) is None
    (True, True)
    >>> float32_trouble(1e39)
    "it is beyond float32's range (the programs compute in float32: at most 3.4e+38)"
    >>> float32_trouble(1e-50, positive=True)
    'it rounds to 0 in float32 (the programs compute in float32: the smallest positive number is 1.4e-45)'
    """
    big, tiny = float(np.finfo(np.float32).max), float(np.finfo(np.float32).smallest_subnormal)
    if abs(value) > big:
        return f"it is beyond float32's range (the programs compute in float32: at most {big:.1e})"
    if positive and 0 < value < tiny / 2:
        return (f"it rounds to 0 in float32 (the programs compute in float32: the smallest positive number is "
                f"{tiny:.1e})")
    return None


def check_positive_number(name: str, value: Any, hint: str = "") -> None:
    """Raise ConfigError unless ``value`` is a finite real number > 0 (NaN, infinity and booleans are not) that a
    float32 program holds as a positive number (:func:`float32_trouble`)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise ConfigError(f"{name} = {value!r} is invalid: it must be a positive number{hint}.")
    trouble = float32_trouble(value, positive=True)
    if trouble:
        raise ConfigError(f"{name} = {value!r} is invalid: {trouble}.")


def check_positive_int(name: str, value: Any, *, allow_zero: bool = False, unit: str = "") -> None:
    """Raise ConfigError unless ``value`` is an integer >= 1 (>= 0 with ``allow_zero``; booleans are not);
    ``unit`` (e.g. ``"steps"``) is named in the message."""
    low = 0 if allow_zero else 1
    if not is_integer(value, low):
        raise ConfigError(f"{name} = {value!r} is invalid: it must be an integer >= {low}"
                          + (f" ({unit})." if unit else "."))


def check_widths(name: str, widths: Any, what: str = "hidden layer width", example: str = "(256, 256)") -> None:
    """Raise ConfigError unless ``widths`` is a non-empty tuple of integers >= 1 (layer widths, channel counts)."""
    if not isinstance(widths, tuple) or len(widths) == 0:
        raise ConfigError(f"{name} = {widths!r} is invalid: give at least one {what}, e.g. {example}.")
    for i, w in enumerate(widths):
        check_positive_int(f"{name}[{i}]", w)


def check_seed(value: Any, error: type[Exception] = ConfigError) -> None:
    """Raise ``error`` unless ``value`` is a seed JAX's keys take: an integer in ``0 .. 2**32 - 1``."""
    if not is_integer(value, 0, 2**32 - 1):
        raise error(f"seed = {value!r} is invalid: it must be an integer in 0 .. 2**32 - 1.")


@dataclass(frozen=True)
class Config:
    """Settings of one subliminal-learning experiment (paper defaults, protocol.md §1).

    Model: an MLP ``input_dim -> hidden_widths... -> n_classes + aux_logits`` with ReLU.
    Teacher: Adam(``learning_rate``), ``batch_size``, ``teacher_epochs`` epochs of cross-entropy
    on the class logits. Students: ``student_epochs`` epochs imitating the teacher on a fixed set
    of ``n_noise`` uniform-noise images in [-1, 1] (with image inputs: the pool's first ``n_noise``
    images), with ``loss`` (``"kl"``: KL between softmaxes, the paper; ``"mse"``: squared error on raw
    logits, Jiang et al.) over the aux logits only or over all logits. ``n_runs`` independent runs
    derive their keys from ``seed``.

    ``temperature`` T softens the KL loss (``softmax(y/T)`` vs ``softmax(z/T)``, times T², as in
    Hinton et al.); ``student_inputs`` picks the distillation inputs (:data:`STUDENT_INPUTS`),
    ``input_mix`` the image weight α of the ``"mix"`` inputs.

    ``init_noise`` σ adds N(0, σ²) noise to every parameter of the shared-init students' starting
    point (``init_noise_kind="orthogonal"``: the same noise with its component along the teacher's
    total update removed, rescaled to the same norm); the reference and the teacher are untouched.

    ``run_batch`` is how many runs one device advances together (a ``vmap`` inside a
    ``lax.map``); ``None`` picks 1 on CPU and, on an accelerator, the most runs that fit in its
    memory (``engine.choose_run_batch``). It changes speed and memory; the
    numbers are bit-identical for the same ``run_batch`` on the same platform, whatever the number
    of devices, while a different ``run_batch`` may change float rounding (batched matmuls).

    >>> cfg = Config(n_runs=10)  # the paper's settings otherwise
    >>> cfg.hidden_widths, cfg.aux_logits, cfg.replace(aux_logits=10).aux_logits
    ((256, 256), 3, 10)
    >>> Config(aux_logits=0)
    Traceback (most recent call last):
    subliminal_mlp.core.config.ConfigError: aux_logits (m) = 0 is invalid: the aux-only student imitates ...
    """

    hidden_widths: tuple[int, ...] = (256, 256)
    aux_logits: int = 3
    n_classes: int = 10
    input_dim: int = 784
    learning_rate: float = 3e-4
    batch_size: int = 1024
    teacher_epochs: int = 5
    student_epochs: int = 5
    n_noise: int = 60_000
    loss: str = "kl"
    n_runs: int = 100
    seed: int = 0
    dataset: str = "mnist"
    temperature: float = 1.0
    student_inputs: str = "uniform"
    input_mix: float = 0.5
    init_noise: float = 0.0
    init_noise_kind: str = "isotropic"
    run_batch: int | None = None

    def __post_init__(self) -> None:
        plain_fields(self)  # numpy values (np.arange's, say) as Python numbers; a list of widths as a tuple
        check_widths("hidden_widths", self.hidden_widths)
        if not is_integer(self.aux_logits, 1):
            raise ConfigError(
                f"aux_logits (m) = {self.aux_logits!r} is invalid: the aux-only student imitates "
                "the m auxiliary logits, so m must be an integer >= 1 (the paper uses m = 3)."
            )
        if not is_integer(self.n_classes, 2):
            raise ConfigError(f"n_classes = {self.n_classes!r} is invalid: it must be an integer >= 2 (a classifier "
                              "needs at least two classes).")
        check_positive_int("input_dim", self.input_dim)
        check_positive_number("learning_rate", self.learning_rate, " (the paper uses 3e-4)")
        check_positive_int("batch_size", self.batch_size)
        check_positive_int("teacher_epochs", self.teacher_epochs, allow_zero=True)
        check_positive_int("student_epochs", self.student_epochs, allow_zero=True)
        check_positive_int("n_noise", self.n_noise)
        from .inputs import MAX_EXAMPLES

        if self.n_noise > MAX_EXAMPLES:
            raise ConfigError(f"n_noise = {self.n_noise} is too large: example indices are int32, so an input set has "
                              f"at most {MAX_EXAMPLES} examples.")
        if self.batch_size > self.n_noise:
            raise ConfigError(
                f"batch_size = {self.batch_size} is larger than n_noise = {self.n_noise}: lower "
                "batch_size or raise n_noise so that at least one batch of noise exists."
            )
        check_steps("student", self.student_epochs, self.n_noise, self.batch_size)
        check_steps("teacher", self.teacher_epochs)  # (against the data's size when the experiment runs)
        if self.loss not in LOSSES:
            raise ConfigError(f"loss = {self.loss!r} is invalid: choose one of {LOSSES}.")
        check_positive_int("n_runs", self.n_runs)
        if self.n_runs > MAX_RUNS:
            raise ConfigError(f"n_runs = {self.n_runs} is too many: runs are indexed in int32 (at most {MAX_RUNS:,}).")
        check_seed(self.seed)
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset = {self.dataset!r} is invalid: choose one of {DATASETS}.")
        check_positive_number("temperature", self.temperature)
        if self.loss == "mse" and self.temperature != 1:
            raise ConfigError(f"temperature = {self.temperature} has no meaning for loss = 'mse' (raw logits): "
                              "use loss = 'kl' or temperature = 1.")
        if self.student_inputs not in STUDENT_INPUTS:
            raise ConfigError(f"student_inputs = {self.student_inputs!r} is invalid: choose one of {STUDENT_INPUTS}.")
        if isinstance(self.input_mix, bool) or not (isinstance(self.input_mix, (int, float))
                                                    and 0 <= self.input_mix <= 1):
            raise ConfigError(f"input_mix = {self.input_mix!r} is invalid: it must be a number in [0, 1].")
        if self.input_mix != Config.input_mix and self.student_inputs != "mix":
            raise ConfigError(f"input_mix = {self.input_mix!r} has no effect with student_inputs = "
                              f"{self.student_inputs!r}: it weighs the images of student_inputs = 'mix'.")
        if isinstance(self.init_noise, bool) or not (isinstance(self.init_noise, (int, float))
                                                     and 0 <= self.init_noise < math.inf):
            raise ConfigError(f"init_noise = {self.init_noise!r} is invalid: it must be a finite number >= 0.")
        if self.init_noise_kind not in INIT_NOISE_KINDS:
            raise ConfigError(f"init_noise_kind = {self.init_noise_kind!r} is invalid: choose one of {INIT_NOISE_KINDS}.")
        if self.run_batch is not None:
            check_positive_int("run_batch", self.run_batch)

    @property
    def n_outputs(self) -> int:
        """Total number of logits, ``n_classes + m``."""
        return self.n_classes + self.aux_logits

    @property
    def layer_sizes(self) -> tuple[int, ...]:
        """``(input_dim, *hidden_widths, n_outputs)``."""
        return (self.input_dim, *self.hidden_widths, self.n_outputs)

    def check_data(self, n_train: int, input_dim: int, n_classes: int | None = None) -> None:
        """Check the settings against a loaded dataset (a batch, and a set of task images, no larger than
        the data; its classes)."""
        if n_classes is not None and n_classes != self.n_classes:
            raise ConfigError(f"n_classes = {self.n_classes} does not match the data's {n_classes} classes.")
        if input_dim != self.input_dim:
            raise ConfigError(
                f"input_dim = {self.input_dim} does not match the data's {input_dim} features."
            )
        if self.batch_size > n_train:
            raise ConfigError(
                f"batch_size = {self.batch_size} is larger than the {n_train} training examples: "
                "lower batch_size."
            )
        if self.student_inputs in ("task", "mix") and self.n_noise > n_train:
            raise ConfigError(
                f"n_noise = {self.n_noise} is larger than the {n_train} training images the students are "
                f"distilled on (student_inputs = {self.student_inputs!r}, the first n_noise of them): lower n_noise."
            )

    def check_dataset(self, data: Any, n_classes: int | None = None) -> None:
        """:meth:`check_data` against a loaded dataset (and ``n_classes``, its classes, when given), and its
        name against ``dataset`` (a record names the data its numbers come from: Fashion-MNIST settings run on
        MNIST arrays would mislabel them)."""
        name = getattr(data, "name", None)
        if name is not None and name != self.dataset:
            raise ConfigError(f"dataset = {self.dataset!r} but the data given are {name!r}: load "
                              f"sm.load_dataset({self.dataset!r}) or set dataset = {name!r}.")
        self.check_data(data.train_images.shape[0], data.train_images.shape[1], n_classes)

    def replace(self, **changes: Any) -> "Config":
        """A copy with some fields changed (validated again); an unknown field raises ConfigError, as in
        :meth:`from_dict`."""
        names = {f.name for f in dataclasses.fields(self)}
        unknown = set(changes) - names
        if unknown:
            raise ConfigError(f"unknown config field(s) {sorted(unknown)}; known: {sorted(names)}")
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting as JSON-ready values (tuples become lists)."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d["hidden_widths"] = list(self.hidden_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Inverse of :meth:`to_dict`; unknown keys raise ConfigError."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ConfigError(f"unknown config field(s) {sorted(unknown)}; known: {sorted(names)}")
        d = dict(d)
        if isinstance(d.get("hidden_widths"), list):  # JSON's list; anything else is checked by the Config
            d["hidden_widths"] = tuple(d["hidden_widths"])
        return cls(**d)
