"""The engine: an experiment is a value, and one function runs it as one compiled, sharded program.

An :class:`Experiment` says *what* runs in every run: a ``model`` (an ``(init, apply)`` pair), the
distillation ``inputs`` (an :class:`~subliminal_mlp.core.inputs.InputSource`), the ``students`` (a
table of :class:`~subliminal_mlp.core.students.Student`), the static settings that fix shapes and code
(epochs, batch size) and the numeric ``hparams`` (learning rate, temperature, σ, ...), any of which
can be swept inside one program. A :class:`Task` holds the teacher's data. :func:`run` runs
``n_runs`` runs (times the swept values) and returns a :class:`Result` of per-run numbers.

Within run ``i`` of seed ``s`` (the runs of protocol.md §1; the key scheme is this library's), every key
is ``fold_in(fold_in(PRNGKey(s), i), stream)`` (:func:`run_keys`):

* ``reference``: θ0 = ``model.init(keys["init"])``, the shared initialisation;
* ``teacher``: θ0 trained ``teacher_epochs`` epochs on the task's class cross-entropy (Adam);
* every student of the table: its start (θ0, the reference of run ``(i + 1) mod max(N, 2)`` for
  ``"cross"``, ...) distilled ``student_epochs`` epochs on the teacher's logits over the run's
  fixed input set; each batch's teacher logits are computed once and shared by all students;
* all models are evaluated on the task's test set (argmax over the class logits).

The program: the job axis (runs × swept values) is split over the devices with ``shard_map``; on
each device ``lax.map(..., batch_size=run_batch)`` advances ``run_batch`` runs together (a ``vmap``);
the teacher phase runs for all jobs first, then the distillation phase. Students that share their
loss, teacher, optimiser and hooks form one stacked group (one ``vmap``); Figure 10's four students
are one group. Memory grows with ``run_batch``, not with N: inputs are drawn batch by batch, and what a run
keeps is its results and its trained teacher's parameters (docs/performance.md, "Memory").

Example (a tiny Figure 10 on MNIST)::

    from subliminal_mlp import engine, inputs, load_mnist
    exp = engine.Experiment(teacher_epochs=1, student_epochs=1, inputs=inputs.uniform(4096))
    result = engine.run(exp, engine.Task.from_dataset(load_mnist()), n_runs=4)
    result.accuracy("student_aux")      # (4,) per-run test accuracies
    result.table()                      # mean ± 95 % CI of every model
"""

from __future__ import annotations

import dataclasses
import inspect
import os
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .inputs import InputSource, bind_task, check_source, check_source_settings, resolve, uniform
from ..internal import compile_program
from .data import ARRAYS as DATASET_ARRAYS
from .config import (MAX_RUNS, Config, SettingWarning, check_seed, check_steps, float32_trouble, is_integer,
                     is_sequence)
from .results import (DivergenceError, DivergenceWarning, array_fingerprint, check_on_divergence, data_record,
                      few_runs_note, format_ci, format_health, health, plain_scalar, register_format, setting_json)
from .losses import distillation_loss
from .model import accuracy, all_finite
from .models import Model, check_model, mlp, param_shapes, same_tree_shapes
from .students import (FIGURE10, OPTIMIZER_FORMS, RESERVED, StartContext, Student, StudentError, _whole_number, adam,
                       check_start_settings, check_students, hparams_as_arrays, loss_reads_hparams, make_optimizer,
                       output_mask)
from .training import probe_steps, scan_epochs, steps_per_epoch, teacher_train_step

#: Key streams within a run (trait experiment: 5-7; fresh starts: 8).
STREAMS = {"init": 0, "teacher_shuffle": 1, "noise": 2, "student_shuffle": 3, "init_noise": 4, "trait_shuffle": 5,
           "held_out_noise": 6, "samples": 7, "fresh": 8}
#: The paper's numeric hyperparameters (protocol.md §1); any of them, and any a user adds, can be swept.
PAPER_HPARAMS = {"learning_rate": 3e-4, "temperature": 1.0}
#: The format tag of :meth:`Result.record`.
RECORD_FORMAT = "subliminal-mlp/experiment"
register_format(RECORD_FORMAT, 1)


class ExperimentError(ValueError):
    """An experiment's static settings are invalid or do not fit the task."""


def run_key(seed, run) -> jax.Array:
    """The key of run ``run`` of the experiment seeded ``seed``: ``fold_in(PRNGKey(seed), run)``.

    >>> import jax
    >>> from subliminal_mlp import engine
    >>> engine.run_key(0, 3).tolist() == jax.random.fold_in(jax.random.PRNGKey(0), 3).tolist()
    True
    >>> len({tuple(engine.run_key(seed, run).tolist()) for seed in range(3) for run in range(4)})  # all distinct
    12
    """
    return jax.random.fold_in(jax.random.PRNGKey(seed), run)


def run_keys(seed, run) -> dict[str, jax.Array]:
    """Named keys of one run (:data:`STREAMS`): ``fold_in(run_key(seed, run), stream)``.

    >>> import jax
    >>> from subliminal_mlp import engine
    >>> keys = engine.run_keys(0, 3)
    >>> print(*keys)
    init teacher_shuffle noise student_shuffle init_noise trait_shuffle held_out_noise samples fresh
    >>> keys["noise"].tolist() == jax.random.fold_in(engine.run_key(0, 3), engine.STREAMS["noise"]).tolist()
    True
    >>> len({tuple(k.tolist()) for run in range(4) for k in engine.run_keys(0, run).values()})  # 4 runs × 9 streams
    36
    """
    k = run_key(seed, run)
    return {name: jax.random.fold_in(k, i) for name, i in STREAMS.items()}


def cross_run(run, n_runs: int):
    """The run whose reference initialises run ``run``'s cross-model students: ``(run + 1) mod max(N, 2)``.

    For ``N ≥ 2`` a cycle over the runs, so no run is its own cross run; with one run, run 1's
    reference (drawn from its key, never trained) is used:

    >>> from subliminal_mlp import engine
    >>> [engine.cross_run(run, 4) for run in range(4)], engine.cross_run(0, 1)
    ([1, 2, 3, 0], 1)
    """
    return (run + 1) % max(n_runs, 2)


def references(model: Model, seed, run, n_runs: int) -> dict:
    """``{"own": θ0 of run, "cross": θ0 of run cross_run(run)}``, as the engine draws them.

    Every copy of a run's θ0 the engine stores (its teacher's start, its students' own starts,
    its evaluated reference, and the cross start of the run before it) is one float32 array,
    bit for bit (tested). The optimisation barrier asks XLA not to merge the draws with
    their consumers; XLA's CPU compiler drops it before fusing, and may then recompute the last
    elementwise steps of the draw inside a consumer that computes with θ0, contracting its final
    multiply with the consumer's add into one fused multiply-add: such a consumer sees θ0 before
    its last rounding (so ``students − reference`` for a student that never moved is within
    half an ulp of θ0, not 0; docs/concepts.md).

    Run 3 of 4: its own θ0 from its ``init`` key, and run 0's (its :func:`cross_run`):

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import engine, mlp
    >>> net = mlp((4,), n_classes=2, aux_logits=1, input_dim=3)
    >>> refs = engine.references(net, 0, 3, n_runs=4)
    >>> same = lambda a, b: all(bool(jnp.array_equal(u, v)) for u, v in zip(jax.tree.leaves(a), jax.tree.leaves(b)))
    >>> own_3, own_0 = (net.init(engine.run_keys(0, run)["init"]) for run in (3, 0))
    >>> same(refs["own"], own_3), same(refs["cross"], own_0)
    (True, True)
    """
    own = model.init(run_keys(seed, run)["init"])
    cross = model.init(run_keys(seed, cross_run(run, n_runs))["init"])
    return lax.optimization_barrier({"own": own, "cross": cross})


@dataclass(frozen=True, eq=False)
class Task:
    """The teacher's task: training and test arrays, the number of classes, and what the data are.

    ``data`` describes the data for records (dataset, directory, SHA-256 of the files, and any
    subset applied). Build one with :meth:`from_dataset`; a task of your own arrays given no ``data`` is
    described by their fingerprints (shape, dtype, SHA-256: :func:`~.results.array_fingerprint`).

    A 3-class task of your own arrays: whole-valued float labels become int32 class indices, and a
    label outside ``0..n_classes − 1`` is refused:

    >>> import numpy as np
    >>> from subliminal_mlp import engine
    >>> x = np.random.default_rng(0).uniform(-1, 1, (6, 4)).astype(np.float32)
    >>> task = engine.Task(x[:4], np.array([0.0, 1.0, 2.0, 1.0]), x[4:], np.array([2, 0]), n_classes=3)
    >>> task.train_y.tolist(), task.data["arrays"]["train_y"]  # the record names the arrays by fingerprint
    ([0, 1, 2, 1], 'array[4] int32 sha256:...')
    >>> engine.Task(x[:4], np.array([0, 1, 2, 3]), x[4:], np.array([2, 0]), n_classes=3)
    Traceback (most recent call last):
    subliminal_mlp.core.engine.ExperimentError: Task: train_y holds labels from 0 to 3, but a task of n_classes = 3 ...
    """

    train_x: Any
    train_y: Any
    test_x: Any
    test_y: Any
    n_classes: int
    data: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n_classes = plain_scalar(self.n_classes)
        if not is_integer(n_classes, 2):
            raise ExperimentError(f"Task: n_classes = {self.n_classes!r} is invalid: it must be an integer >= 2.")
        object.__setattr__(self, "n_classes", n_classes)
        for split in ("train", "test"):
            x, y = getattr(self, f"{split}_x"), getattr(self, f"{split}_y")
            if np.ndim(x) < 2 or np.ndim(y) != 1 or np.shape(x)[0] != np.shape(y)[0] or np.shape(x)[0] == 0:
                raise ExperimentError(f"Task: {split}_x has shape {np.shape(x)} and {split}_y {np.shape(y)}: give "
                                      f"one label per example, {split}_x of shape (N, *input_shape) with N >= 1 and "
                                      f"{split}_y of shape (N,).")
            labels = np.asarray(y)
            if not np.issubdtype(labels.dtype, np.number) or np.any(labels != np.round(labels)) or \
                    labels.min() < 0 or labels.max() >= n_classes:
                raise ExperimentError(f"Task: {split}_y holds labels {_label_range(labels)}, but a task of "
                                      f"n_classes = {n_classes} needs integer labels in 0..{n_classes - 1}.")
            if not np.issubdtype(labels.dtype, np.integer):  # whole-valued floats: the class indices they are
                object.__setattr__(self, f"{split}_y", labels.astype(np.int32))
        if np.shape(self.train_x)[1:] != np.shape(self.test_x)[1:]:
            raise ExperimentError(f"Task: the training examples have shape {np.shape(self.train_x)[1:]}, the test "
                                  f"examples {np.shape(self.test_x)[1:]}: they must match.")
        for split in ("train", "test"):
            x = np.asarray(getattr(self, f"{split}_x"))
            _warn_if_raw_pixels(split, x, _value_range(split, x))
        if not self.data:  # arrays of the user's own: the record names them by their fingerprints
            object.__setattr__(self, "data", {"arrays": {k: array_fingerprint(getattr(self, k))
                                                         for k in ("train_x", "train_y", "test_x", "test_y")}})

    @classmethod
    def from_dataset(cls, dataset, classes: Optional[Sequence[int]] = None) -> "Task":
        """A :class:`~subliminal_mlp.core.data.Dataset` as a task; ``classes`` keeps only those labels.

        With ``classes = (c_0, ..., c_{K-1})`` the examples of other classes are dropped from both
        splits and label ``c_k`` becomes ``k``: a K-class task (the model needs ``n_classes = K``).
        The record says which classes were kept and how many examples remain.

        >>> from subliminal_mlp import load_mnist
        >>> task = Task.from_dataset(load_mnist(), classes=(0, 1, 2, 3, 4))  # digits 0-4: a 5-class task
        >>> task.n_classes, task.data["subset"]
        (5, {'classes': [0, 1, 2, 3, 4], 'n_train': 30596, 'n_test': 5139})
        """
        if not all(hasattr(dataset, a) for a in DATASET_ARRAYS):
            raise ExperimentError(f"Task.from_dataset takes a loaded dataset (sm.load_mnist(data_dir), "
                                  f"sm.load_fashion_mnist(...)), not a {type(dataset).__name__}"
                                  + (f" ({dataset!r}: load it with sm.load_mnist({dataset!r}))"
                                     if isinstance(dataset, (str, os.PathLike)) else "") + ".")
        data = data_record(dataset)
        if classes is None:
            return cls(dataset.train_images, dataset.train_labels, dataset.test_images, dataset.test_labels,
                       int(dataset.n_classes), data)
        given = list(classes) if isinstance(classes, (Sequence, np.ndarray)) and not isinstance(classes, str) else None
        if given is None or not all(_whole_number(c) and 0 <= c < dataset.n_classes for c in given):
            raise ExperimentError(f"classes = {classes!r} is invalid: give a sequence of integer labels in "
                                  f"0..{dataset.n_classes - 1}.")
        classes = [int(c) for c in given]
        if len(set(classes)) != len(classes) or len(classes) < 2:
            raise ExperimentError(f"classes = {classes} is invalid: give >= 2 distinct labels in "
                                  f"0..{dataset.n_classes - 1}.")
        lut = np.full(int(dataset.n_classes), -1, np.int32)
        lut[classes] = np.arange(len(classes))

        def keep(x, y):
            y = np.asarray(y)
            m = lut[y] >= 0
            return np.asarray(x)[m], lut[y[m]]

        tx, ty = keep(dataset.train_images, dataset.train_labels)
        vx, vy = keep(dataset.test_images, dataset.test_labels)
        data["subset"] = {"classes": classes, "n_train": int(tx.shape[0]), "n_test": int(vx.shape[0])}
        return cls(tx, ty, vx, vy, len(classes), data)


def _value_range(split: str, x: np.ndarray) -> Optional[tuple]:
    """``(min, max)`` of a numeric, non-empty ``x`` (None otherwise), in one pass each; refuses values that are not
    finite (:class:`ExperimentError`, naming the first): a NaN test image made every model's accuracy the share of
    class 0 and the record say the teacher did not learn; a NaN training image makes every model NaN."""
    if not np.issubdtype(x.dtype, np.number) or x.size == 0:
        return None
    low, top = np.min(x), np.max(x)  # NaN propagates to both
    if np.isfinite(low) and np.isfinite(top):
        return low, top
    flat = x.reshape(len(x), -1)
    example, feature = np.argwhere(~np.isfinite(flat))[0]
    raise ExperimentError(f"Task: {split}_x holds values that are not finite (example {example} has "
                          f"{float(flat[example, feature])} at feature {feature}): every model trained or "
                          "evaluated on it would be meaningless. Drop or repair those examples.")


def _warn_if_raw_pixels(split: str, x: np.ndarray, value_range: Optional[tuple]) -> None:
    """Warn (:class:`SettingWarning`) when ``x`` looks like raw 8-bit pixels: whole numbers in 0..255 reaching 128
    or more.

    The library's datasets hold pixels as ``x / 255 * 2 - 1`` in ``[-1, 1]`` and its noise sources draw on
    that scale (:func:`~.inputs.uniform`: ``[-1, 1]``), so a task of 0..255 pixels trains a teacher whose
    inputs lie far from the noise the students see. Features on other scales (standardised, counts, token
    ids, [0, 1]) are left alone. The range is the whole array's (``value_range``: :func:`_value_range`, None
    for no numbers), whole values are checked on an evenly strided sample of at most 100,000 entries (a few
    milliseconds for MNIST).
    """
    if value_range is None:
        return
    low, top = value_range
    if not (0 <= low and 128 <= top <= 255):
        return
    flat = x.reshape(-1)
    sample = flat[::max(1, flat.size // 100_000)]
    if np.issubdtype(x.dtype, np.integer) or bool(np.all(sample % 1 == 0)):
        warnings.warn(f"Task: {split}_x holds whole numbers from {low.item()!r} to {top.item()!r} ({x.dtype}), "
                      "which look like raw 8-bit pixels; the library's datasets and noise inputs use pixels in "
                      "[-1, 1]. Rescale them (x / 255 * 2 - 1, as sm.load_mnist does); if this scale is meant, "
                      "ignore this warning.", SettingWarning, stacklevel=4)


def _label_range(labels: np.ndarray) -> str:
    if not np.issubdtype(labels.dtype, np.number):
        return f"of dtype {labels.dtype}"
    return f"from {labels.min().item()!r} to {labels.max().item()!r}" + (
        "" if np.all(labels == np.round(labels)) else ", not integers")


@dataclass(frozen=True, eq=False)
class Experiment:
    """What every run computes (see the module docstring). Defaults: the paper's Figure 10.

    The objectives (protocol.md §1; :mod:`~subliminal_mlp.core.losses`): the teacher minimises the
    mean class cross-entropy ``L_T(θ) = −(1/B) Σ_b log softmax(f_θ(x_b)[:K])[label_b]`` over the
    task's batches (Adam, ``hparams["learning_rate"]``); each student minimises, on batches of the
    input set, ``L_S(θ) = T² Σ_b w_b · ℓ(f_θ(x_b)/T, y_b/T; mask) + penalty(θ)`` with ``y_b`` its
    teacher's logits, ``ℓ`` its loss (``"kl"``: KL(softmax(y_S) ‖ softmax(z_S)) on the logit subset
    ``S`` = its ``outputs``; ``"mse"``: ``Σ_{i∈S} (z_i − y_i)²``, never scaled by T), ``T`` its
    temperature, ``w_b`` its ``example_weights`` (1 without the hook) and ``penalty`` its own
    (0 without), with its optimiser (Adam at the learning rate unless ``Student.optimizer``).

    ``hparams`` are the numeric hyperparameters (name → number): they are constants of the program
    unless swept (``run(..., sweep={name: values})``), when they enter as traced per-job values.
    ``metrics`` maps a name to ``f(RunModels) -> array``, evaluated inside the program per run
    after distillation; ``trace`` likewise, but evaluated before every ``trace_every``-th full batch
    of each epoch (the count restarts each epoch) and after the last step, stacked over steps
    (``Result.traces``; ``Result.trace_steps`` gives the exact steps).
    ``step_metrics`` maps a name to ``f(StepView) -> array`` evaluated at *every* distillation step
    (it sees each student's raw gradient, e.g. its cosine with the teacher's task gradient),
    stacked over all steps (``Result.step_metrics``).
    ``teachers`` maps extra teacher names to ``f(RunModels) -> params`` derived from the task
    teacher in each run (e.g. a fine-tuned copy); students may imitate them, and they are evaluated
    beside the others. ``arrays`` are extra data (name → array) that metrics, traces, derived
    teachers and hooks read from ``RunModels.data``; they enter the program once, replicated.
    ``track_losses=True`` also returns the teacher's and each student's loss over the last epoch;
    computing the loss values makes XLA fuse the steps differently, so the parameters (and the
    accuracies) can differ from an untracked run in the last bits — the committed figures are
    untracked.

    The defaults are protocol.md §1's settings (784-256-256-(10+3) MLP, 60,000 U[-1, 1] inputs,
    5 + 5 epochs, batch 1024, Adam at 3e-4); an invalid setting is refused when the value is built
    (a run checks the rest against its task: :func:`validate`):

    >>> from subliminal_mlp import engine
    >>> exp = engine.Experiment()
    >>> exp.model.describe()["hidden_widths"], exp.inputs.n, exp.teacher_epochs, exp.batch_size, exp.hparams
    ([256, 256], 60000, 5, 1024, {'learning_rate': 0.0003, 'temperature': 1.0})
    >>> [s.name for s in exp.students], exp.replace(student_epochs=1).student_epochs
    (['student_aux', 'student_all', 'cross_aux', 'cross_all'], 1)
    >>> exp.replace(hparams={"learning_rate": 0.0})
    Traceback (most recent call last):
    subliminal_mlp.core.engine.ExperimentError: hparams['learning_rate'] = 0.0 is invalid: the learning rate must ...
    """

    model: Model = field(default_factory=mlp)
    inputs: InputSource = field(default_factory=uniform)
    students: tuple = FIGURE10
    teacher_epochs: int = 5
    student_epochs: int = 5
    batch_size: int = 1024
    hparams: Mapping[str, float] = field(default_factory=lambda: dict(PAPER_HPARAMS))
    metrics: Mapping[str, Callable] = field(default_factory=dict)
    trace: Mapping[str, Callable] = field(default_factory=dict)
    trace_every: int = 1
    step_metrics: Mapping[str, Callable] = field(default_factory=dict)
    teachers: Mapping[str, Callable] = field(default_factory=dict)
    arrays: Mapping[str, Any] = field(default_factory=dict)
    track_losses: bool = False
    name: str = "experiment"

    def __post_init__(self) -> None:
        if not isinstance(self.model, Model):  # a bare Flax module: refused here, as at run (check_model says how)
            check_model(self.model)
        if not isinstance(self.inputs, InputSource):
            raise ExperimentError(f"inputs = {self.inputs!r} is not an input source: give one from sm.inputs, "
                                  "e.g. sm.inputs.uniform(60000) for the paper's 60,000 noise images.")
        if isinstance(self.students, Student):
            raise ExperimentError(f"students is one Student ({self.students.name!r}), not a table of them: give a "
                                  "sequence of rows, e.g. students=(row,) for one.")
        if not is_sequence(self.students) or isinstance(self.students, Mapping):
            raise ExperimentError(f"students = {self.students!r} is not a table of students: give a sequence of "
                                  "sm.Student rows.")
        object.__setattr__(self, "students", tuple(self.students))
        for name in ("teacher_epochs", "student_epochs", "batch_size", "trace_every"):  # numpy integers as ints
            object.__setattr__(self, name, plain_scalar(getattr(self, name)))
        object.__setattr__(self, "hparams", {k: plain_scalar(v) for k, v in self.hparams.items()})
        for name in ("teacher_epochs", "student_epochs"):
            v = getattr(self, name)
            if not is_integer(v, 0):
                raise ExperimentError(f"{name} = {v!r} is invalid: it must be an integer >= 0.")
            check_steps(name.split("_")[0], v, error=ExperimentError)  # against the data's size: validate
        if not is_integer(self.batch_size, 1):
            raise ExperimentError(f"batch_size = {self.batch_size!r} is invalid: it must be an integer >= 1.")
        if not is_integer(self.trace_every, 1):
            raise ExperimentError(f"trace_every = {self.trace_every!r} is invalid: it must be an integer >= 1 (steps).")
        clash = set(self.arrays) & {"train_x", "train_y", "test_x", "test_y"}
        if clash:
            raise ExperimentError(f"arrays {sorted(clash)} would hide the task's data: choose other names.")
        positive = self.positive_hparams()
        for k, v in self.hparams.items():
            if k in ("run", "seed"):  # the program's own per-job inputs: one of these would replace them
                raise ExperimentError(f"hparams[{k!r}] is reserved: every run is given its run index and seed "
                                      "under these names. Name the hyperparameter otherwise (the seed is swept "
                                      "as sweep={'seed': [...]}).")
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise ExperimentError(f"hparams[{k!r}] = {v!r} is not a number: hyperparameters are numeric "
                                      "(settings that change shapes or code are fields of the Experiment).")
            _check_hparam_value(k, v, positive)

    def positive_hparams(self) -> set[str]:
        """The hyperparameters that must be > 0: the learning rate and every temperature the students read."""
        names = {"learning_rate", "temperature"}
        names |= {s.temperature for s in self.students if isinstance(getattr(s, "temperature", None), str)}
        return names

    def replace(self, **changes: Any) -> "Experiment":
        return dataclasses.replace(self, **changes)

    def describe(self) -> dict[str, Any]:
        """JSON-ready settings for records; derived teachers, metrics and traces as ``{name: function}`` (its
        qualified name and the values it closes over: :func:`~.results.setting_json`)."""
        return {"name": self.name, "model": self.model.describe(), "inputs": self.inputs.describe(),
                "students": [s.describe() for s in self.students], "teacher_epochs": self.teacher_epochs,
                "student_epochs": self.student_epochs, "batch_size": self.batch_size,
                "hparams": {k: float(v) for k, v in self.hparams.items()},
                # the functions by name and the values they close over, as students' hooks are
                **{part: {k: setting_json(f) for k, f in sorted(getattr(self, part).items())}
                   for part in ("metrics", "trace", "step_metrics", "teachers")},
                "trace_every": self.trace_every,
                "arrays": {k: array_fingerprint(v) for k, v in self.arrays.items()},
                "track_losses": self.track_losses}


class InputSet(NamedTuple):
    """A run's fixed set of distillation inputs: ``n`` examples; ``draw(idx)`` gives examples ``idx``
    exactly as the students see them (the experiment's input source with the run's ``noise`` key).

    Built by hand as the engine builds it for run 1 of seed 0 (:class:`RunModels`' example checks
    that a run's ``inputs`` are these): the set is fixed, so drawing indices in another order gives
    the same examples in that order:

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp import engine, inputs
    >>> src = inputs.uniform(100, shape=(8,))
    >>> ctx = src.prepare(engine.run_keys(0, 1)["noise"], {}, {})
    >>> s = engine.InputSet(src.n, lambda idx: src.draw(ctx, idx, {}))
    >>> idx = jnp.array([7, 3, 99])
    >>> s.draw(idx).shape, bool(jnp.array_equal(s.draw(idx[::-1]), s.draw(idx)[::-1]))
    ((3, 8), True)
    """

    n: int
    draw: Callable[[jax.Array], jax.Array]


class RunModels(NamedTuple):
    """What a per-run metric, trace, derived teacher or hook sees in one run.

    ``reference`` (θ0), ``teacher`` (the task teacher), ``students`` ({name: params}, empty for a
    derived teacher and a hook), ``data`` (``train_x``, ``train_y``, ``test_x``, ``test_y`` and the
    experiment's extra ``arrays``), ``hp``, the run's ``keys``, the ``model`` and every
    ``teachers`` ({name: params}, the derived ones included once they exist), ``refs`` ({"own": θ0,
    "cross": the cross run's θ0}, exactly the students' "own"/"cross" starts), the ``run`` index and
    the run's distillation ``inputs`` (an :class:`InputSet`).

    A metric sees one run: here it recomputes the teacher's test accuracy from the view's model and
    data (it matches the engine's), reads the run index, and draws the run's first inputs, which
    are the input source's drawn with the run's ``noise`` key (:func:`run_keys`):

    >>> import numpy as np, jax.numpy as jnp
    >>> from subliminal_mlp import Student, engine, inputs, mlp
    >>> x = np.random.default_rng(0).uniform(-1, 1, (256, 8)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> task = engine.Task(x[:192], y[:192], x[192:], y[192:], n_classes=2)
    >>> def test_accuracy(m):  # the class logits come first: argmax over the 2 of them
    ...     z = m.model.apply(m.teacher, m.data["test_x"])[:, :2]
    ...     return jnp.mean(jnp.argmax(z, axis=1) == m.data["test_y"])
    >>> src = inputs.uniform(64, shape=(8,))
    >>> exp = engine.Experiment(model=mlp((16,), n_classes=2, aux_logits=2, input_dim=8), inputs=src,
    ...                         students=(Student("s"),), teacher_epochs=5, student_epochs=1, batch_size=32,
    ...                         hparams={"learning_rate": 1e-2},
    ...                         metrics={"accuracy": test_accuracy, "run": lambda m: m.run,
    ...                                  "x": lambda m: m.inputs.draw(jnp.arange(2))})
    >>> result = engine.run(exp, task, n_runs=2)
    >>> result.metrics["run"].tolist(), np.allclose(result.metrics["accuracy"][0], result.accuracy("teacher"))
    ([[0, 1]], True)
    >>> x1 = src.draw(src.prepare(engine.run_keys(0, 1)["noise"], {}, {}), jnp.arange(2), {})  # run 1's
    >>> result.metrics["x"].shape, np.array_equal(result.metrics["x"][0, 1], x1)  # (n_values, n_runs, 2, 8)
    ((1, 2, 2, 8), True)
    """

    reference: Any
    teacher: Any
    students: Mapping[str, Any]
    data: Mapping[str, jax.Array]
    hp: Mapping[str, Any]
    keys: Mapping[str, jax.Array]
    model: Model
    teachers: Mapping[str, Any]
    refs: Optional[Mapping[str, Any]] = None
    run: Any = None
    inputs: Optional[InputSet] = None


class HookView(NamedTuple):
    """What a student's ``targets`` / ``example_weights`` hook sees: one student on one batch.

    ``run`` (the run's :class:`RunModels`: its ``teachers`` — the task teacher and the derived
    ones —, ``keys``, ``data``, ``hp``, ``model``, ``refs`` and ``run`` index; ``students`` is
    empty), ``logits`` (the logits of the teacher this student imitates on ``x``), the batch ``x``,
    its indices ``idx`` into the run's input set, ``params`` (the student row's numeric
    ``params``, one scalar each: the hook is ``vmap``-ed over the students of a group) and the
    distillation ``step`` (0-based, over all epochs).

    ``example_weights(view)`` returns ``w`` of shape (batch,): the student's loss on the batch is
    ``Σ_b w_b · ℓ_b`` (0 drops example b: filtering); ``targets(view)`` returns the logits ``y``
    it imitates on the batch in place of ``view.logits`` (see :class:`Experiment` for ``L_S``).

    A filter that keeps the examples of even index, called on a hand-built view (:class:`StepView`'s
    example runs it in an experiment): a weight of 0 removes the example from the KL sum:

    >>> import jax.numpy as jnp
    >>> from subliminal_mlp import engine, kl_distillation
    >>> keep_even = lambda v: (v.idx % 2 == 0).astype(jnp.float32)  # Student(..., example_weights=keep_even)
    >>> y, z = jnp.array([[0.0, 1.0], [2.0, 0.0], [1.0, 3.0]]), jnp.zeros((3, 2))  # teacher's, student's logits
    >>> view = engine.HookView(run=None, logits=y, x=jnp.zeros((3, 8)), idx=jnp.array([4, 7, 10]), params={}, step=0)
    >>> w, on = keep_even(view), jnp.ones(2)  # the KL over both logits
    >>> w.tolist(), bool(jnp.isclose(kl_distillation(z, y, on, w), kl_distillation(z[::2], y[::2], on)))
    ([1.0, 0.0, 1.0], True)
    """

    run: RunModels
    logits: jax.Array
    x: jax.Array
    idx: jax.Array
    params: Mapping[str, Any]
    step: Any = None


class PenaltyView(NamedTuple):
    """What a student's ``penalty`` sees: one student on one batch, differentiated through ``theta``.

    ``theta`` (the student's current parameters: the penalty's gradient flows through them),
    ``start`` (its starting parameters θ_S0, its "base model"), the batch ``x``, ``logits`` (its
    teacher's logits on ``x``), ``step`` (the distillation step, 0-based, over all epochs),
    ``model`` (the student's model), ``run`` (the run's :class:`RunModels`, as for a hook) and
    ``params`` (the student row's numeric ``params``).

    A pull towards the start, ``½‖θ − θ_S0‖²``, on a hand-built view of two-parameter "models"
    (:class:`StepView`'s example runs it in an experiment): the gradient it adds to the student's
    is ``θ − θ_S0``:

    >>> import jax, jax.numpy as jnp
    >>> from subliminal_mlp import engine
    >>> pull = lambda v: 0.5 * sum(jnp.sum((a - b) ** 2) for a, b in zip(*map(jax.tree.leaves, (v.theta, v.start))))
    >>> theta, start = {"w": jnp.array([3.0, 1.0])}, {"w": jnp.array([1.0, 1.5])}
    >>> view = engine.PenaltyView(theta, start, x=None, logits=None, step=0, model=None, run=None, params={})
    >>> grad = jax.grad(lambda th: pull(view._replace(theta=th)))(theta)  # Student(..., penalty=pull)
    >>> float(pull(view)), grad["w"].tolist()  # ½ (2² + 0.5²), θ − θ_S0
    (2.125, [2.0, -0.5])
    """

    theta: Any
    start: Any
    x: jax.Array
    logits: jax.Array
    step: jax.Array
    model: Model
    run: RunModels
    params: Mapping[str, Any]


class DistillState(NamedTuple):
    """The distillation loop's state: ``groups`` (per student group: stacked parameters and optimiser
    state) and ``step`` (optimiser steps taken so far, an int32 scalar)."""

    groups: tuple
    step: jax.Array


class StepView(NamedTuple):
    """What a per-step metric sees at one distillation step, before the optimiser updates.

    ``run`` (a :class:`RunModels` whose ``students`` are the parameters before this step),
    ``grads`` ({student: ∇_θ of its whole objective on this batch: L_S at its temperature, with its
    hooks' targets and weights, plus its ``penalty``}), the batch ``x``,
    ``logits`` ({teacher: its logits on x}), the batch indices ``idx``, the ``step`` (0-based) and
    ``updates`` ({student: the update its optimiser applies at this step, ``θ ← θ + update``: for
    Adam ``−η·m̂/(√v̂ + ε)``, for a projection or weight decay the transformed step}).

    A student that drops the odd-indexed inputs (an ``example_weights`` hook, :class:`HookView`)
    and is pulled towards its start (a ``penalty``, :class:`PenaltyView`); a step metric recomputes
    its objective ``Σ_b w_b·KL_b + ½‖θ − θ0‖²`` from the view (T = 1, KL on the 2 aux logits) and
    checks the engine's gradient against ``jax.grad`` of it at every step; Adam's first update has
    size ``η`` (``m̂/√v̂ = ±1``):

    >>> import numpy as np, jax, jax.numpy as jnp
    >>> from subliminal_mlp import Student, engine, inputs, mlp
    >>> x = np.random.default_rng(0).uniform(-1, 1, (256, 8)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> task = engine.Task(x[:192], y[:192], x[192:], y[192:], n_classes=2)
    >>> sq = lambda tree: sum(jnp.sum(a ** 2) for a in jax.tree.leaves(tree))  # ‖θ‖² over every parameter
    >>> diff = lambda a, b: jax.tree.map(jnp.subtract, a, b)
    >>> even = lambda v: (v.idx % 2 == 0).astype(jnp.float32)
    >>> def objective(theta, v):
    ...     p, q = (jax.nn.log_softmax(z[:, 2:]) for z in (v.logits["teacher"], v.run.model.apply(theta, v.x)))
    ...     return jnp.sum(even(v) * jnp.sum(jnp.exp(p) * (p - q), axis=1)) + 0.5 * sq(diff(theta, v.run.refs["own"]))
    >>> def gradient_error(v):  # relative to the gradient's norm
    ...     g = jax.grad(objective)(v.run.students["s"], v)
    ...     return jnp.sqrt(sq(diff(v.grads["s"], g)) / sq(g))
    >>> def largest_update(v):
    ...     return jnp.max(jnp.stack([jnp.abs(u).max() for u in jax.tree.leaves(v.updates["s"])]))
    >>> s = Student("s", example_weights=even, penalty=lambda v: 0.5 * sq(diff(v.theta, v.start)))
    >>> exp = engine.Experiment(model=mlp((16,), n_classes=2, aux_logits=2, input_dim=8), students=(s,),
    ...                         inputs=inputs.uniform(64, shape=(8,)), teacher_epochs=5, student_epochs=2,
    ...                         batch_size=16, hparams={"learning_rate": 1e-2},
    ...                         step_metrics={"error": gradient_error, "update": largest_update})
    >>> m = engine.run(exp, task, n_runs=2).step_metrics  # (n_values, n_runs, n_steps): 2 epochs of 4 steps
    >>> m["error"].shape, bool(m["error"].max() < 1e-3), [round(float(u), 4) for u in m["update"][0, :, 0]]
    ((1, 2, 8), True, [0.01, 0.01])
    """

    run: RunModels
    grads: Mapping[str, Any]
    x: jax.Array
    logits: Mapping[str, jax.Array]
    idx: jax.Array
    step: Any = None
    updates: Optional[Mapping[str, Any]] = None


@dataclass
class Result:
    """Per-run outputs of :func:`run`, with what is needed to reproduce them.

    ``accuracies`` has shape ``(n_values, n_runs, n_models)`` (models in :attr:`models` order:
    ``reference``, ``teacher``, the derived ``teachers`` in their order, then the students); ``teacher_loss`` ``(n_values, n_runs)`` is the
    mean over the last epoch's steps of each batch's mean loss (a partial last batch weighs as much
    as a full one) and ``distill_loss`` ``(n_values, n_runs, n_students)`` the sum over the last
    epoch's steps of each batch's summed distillation loss divided by the input set's size ``n`` (a
    student's ``penalty`` is not counted: it moves the gradient, not the loss that measures how well the
    student imitates): the mean per-example loss when the student has unit weights (both ``None``
    unless ``Experiment.track_losses``); ``metrics`` maps each metric to
    ``(n_values, n_runs, ...)``; ``sweep`` maps each
    swept hyperparameter to its values (empty without a sweep); ``traces`` maps each trace to
    ``(n_values, n_runs, n_entries, ...)`` taken before the optimiser steps ``trace_steps``;
    ``step_metrics`` each step metric to ``(n_values, n_runs, n_steps, ...)``. ``students`` (only with
    ``run(..., keep_students=True)``) maps each student to its final parameters, every leaf
    ``(n_values, n_runs, ...)``.
    ``finite`` ``(n_values, n_runs, n_models)`` is True where every parameter of that model ended
    finite (and its tracked loss, if any); where it is False the accuracy is NaN, never the
    accuracy of non-finite parameters. :meth:`health` says which runs diverged.

    :func:`run` returns one (its example, and :class:`RunModels`'); built here by hand from the
    accuracies of 3 runs of a reference and a teacher, to show the layout and the summary: mean
    0.8, 95 % CI half-width ``1.96 · 0.1 / √3`` (sample std 0.1):

    >>> import numpy as np
    >>> from subliminal_mlp import engine
    >>> acc = np.array([[[0.1, 0.9], [0.1, 0.8], [0.1, 0.7]]])  # (n_values, n_runs, n_models) = (1, 3, 2)
    >>> r = engine.Result(engine.Experiment(), {}, ("reference", "teacher"), acc, None, None, {}, n_runs=3, seed=0,
    ...                   sweep={}, compile_s=0.0, run_s=0.0, devices=["cpu"], run_batch=1)
    >>> s = r.summary()["teacher"]
    >>> r.accuracy("teacher").tolist(), round(s["mean"], 4), round(s["ci95"], 4), r.health()["ok"]
    ([0.9, 0.8, 0.7], 0.8, 0.1132, True)
    """

    experiment: Experiment
    task_data: dict
    models: tuple[str, ...]
    accuracies: np.ndarray
    teacher_loss: Optional[np.ndarray]
    distill_loss: Optional[np.ndarray]
    metrics: dict[str, np.ndarray]
    n_runs: int
    seed: int
    sweep: dict[str, list]
    compile_s: float
    run_s: float
    devices: list[str]
    run_batch: int
    teachers: Any = None
    traces: dict[str, np.ndarray] = field(default_factory=dict)
    trace_steps: Optional[np.ndarray] = None
    step_metrics: dict[str, np.ndarray] = field(default_factory=dict)
    finite: Optional[np.ndarray] = None
    teacher_cache: Optional[str] = None
    teachers_given: bool = False
    teacher_cache_key: Optional[str] = None
    students: Optional[dict[str, Any]] = None

    @property
    def n_values(self) -> int:
        return self.accuracies.shape[0]

    def accuracy(self, model: str, value: int = 0) -> np.ndarray:
        """The ``n_runs`` test accuracies of ``model`` for swept value number ``value``."""
        if model not in self.models:
            raise KeyError(f"no model {model!r}: the models are {self.models}.")
        return self.accuracies[self._value(value), :, self.models.index(model)]

    def _value(self, value: int) -> int:
        """``value`` checked against the swept values (a negative index counts from the end, as in numpy)."""
        if not is_integer(value, -self.n_values, self.n_values - 1, numpy=True):
            raise IndexError(f"value = {value!r} is out of range: this result has {self.n_values} swept value(s), "
                             f"numbered 0 to {self.n_values - 1}.")
        return int(value)

    def summary(self, value: int = 0) -> dict[str, dict[str, Any]]:
        """``{model: {"mean", "ci95", "values"}}`` for swept value number ``value`` (95 % CI: 1.96·std/√n)."""
        from .results import summary

        return {name: summary(self.accuracy(name, value)) for name in self.models}

    def health(self, value: int = 0) -> dict[str, Any]:
        """Which runs of swept value ``value`` diverged (:func:`~subliminal_mlp.core.results.health`).

        ``{"ok", "nonfinite": [[run, model], ...], "teacher_not_better": [run, ...], "teacher_margin"}``;
        the teacher is checked when it was trained (``teacher_epochs > 0``: here or read from the teacher
        cache) or given (``run(..., teachers=...)``); with ``teacher_epochs = 0`` and none given it is the
        untrained reference by design, and is not checked.
        """
        value = self._value(value)
        return health(self.models, self.accuracies[value], None if self.finite is None else self.finite[value],
                      chance=1.0 / self.experiment.model.n_classes,
                      check_teacher=self.experiment.teacher_epochs > 0 or self.teachers_given)

    def value_label(self, value: int) -> str:
        """The swept settings of value ``value``, e.g. ``"learning_rate = 0.001"`` ("" when nothing is swept)."""
        value = self._value(value)
        return ", ".join(f"{k} = {vals[value]:g}" if isinstance(vals[value], float) else f"{k} = {vals[value]}"
                         for k, vals in self.sweep.items())

    def health_report(self) -> str:
        """What :meth:`health` found over every swept value, for the terminal ("" when every run is healthy)."""
        parts = []
        for v in range(self.n_values):
            label = self.value_label(v)
            parts.append(format_health(self.health(v), self.n_runs, f"{self.experiment.name}{', ' if label else ''}"
                                                                    f"{label}"))
        return "\n".join(p for p in parts if p)

    def record(self) -> dict[str, Any]:
        """The JSON-ready record (format ``subliminal-mlp/experiment``): settings, seeds, data, per-run numbers.

        Payload: ``models`` (their names), ``values`` (per swept value: ``sweep``, its swept settings;
        ``models``, each model's mean, CI and per-run accuracies (NaN where its parameters ended
        non-finite); and ``health``, :meth:`health`), ``chance`` (1 / n_classes), ``teachers``
        (where the task teachers came from: ``"trained"`` in this program, ``"cache"`` (the teacher
        cache: bit-identical to training them) or ``"given"`` (``run(..., teachers=...)``, used as
        given)), ``teacher_cache`` (when a cache was used: ``{"state": "hit" | "miss", "key"}``, the
        entry read or stored), ``losses`` (when tracked), ``metrics``, ``step_metrics`` and ``traces`` (per-run values).
        """
        from .results import envelope

        values = [{"sweep": {k: v[i] for k, v in self.sweep.items()}, "models": self.summary(i),
                   "health": self.health(i)} for i in range(self.n_values)]
        payload: dict[str, Any] = {"models": list(self.models), "values": values,
                                   "chance": 1.0 / self.experiment.model.n_classes,
                                   "teachers": ("given" if self.teachers_given else
                                                "cache" if self.teacher_cache == "hit" else "trained")}
        if self.teacher_cache:  # which entry of the cache (its key names every setting that made the teachers)
            payload["teacher_cache"] = {"state": self.teacher_cache, "key": self.teacher_cache_key}
        if self.teacher_loss is not None:
            payload["losses"] = {"teacher": self.teacher_loss.tolist(), "students": self.distill_loss.tolist()}
        if self.metrics:
            payload["metrics"] = {k: np.asarray(v).tolist() for k, v in self.metrics.items()}
        if self.step_metrics:
            payload["step_metrics"] = {k: np.asarray(v).tolist() for k, v in self.step_metrics.items()}
        if self.traces:
            payload["traces"] = {"steps": np.asarray(self.trace_steps).tolist(),
                                 **{k: np.asarray(v).tolist() for k, v in self.traces.items()}}
        seed = None if "seed" in self.sweep else self.seed  # swept: each value's seed is in values[i]["sweep"]
        return envelope(RECORD_FORMAT, self.experiment.describe(), n_runs=self.n_runs, seed=seed,
                        data=self.task_data, devices=self.devices,
                        timing={"compile_s": self.compile_s, "run_s": self.run_s,
                                "total_s": self.compile_s + self.run_s},
                        environment_extra={"run_batch": self.run_batch}, **payload)

    def write(self, out_dir, stem: str) -> dict[str, Any]:
        """Write ``<stem>.json`` (:meth:`record`) and ``<stem>.csv`` atomically.

        The CSV has one row per swept value, model and run: ``value_index`` (0 when nothing is
        swept), one column per swept setting (its value), ``model``, ``run``, ``accuracy``.
        """
        from .results import write_record

        swept = list(self.sweep)
        rows = [(v, *(self.sweep[k][v] for k in swept), name, r, f"{self.accuracies[v, r, j]:.6f}")
                for v in range(self.n_values) for j, name in enumerate(self.models) for r in range(self.n_runs)]
        return write_record(self.record(), out_dir, stem,
                            csv=(("value_index", *swept, "model", "run", "accuracy"), rows))

    def table(self, value: int | None = None) -> str:
        """A plain-text table: model, mean accuracy, 95 % CI half-width, runs.

        Of swept value ``value``; by default of every swept value in turn. In a sweep each table
        is headed by its :meth:`value_label` (one table, unlabelled, when nothing is swept).
        """
        if value is None:
            return "\n\n".join(self.table(v) for v in range(self.n_values))
        lines = [self.value_label(value)] if self.n_values > 1 else []
        lines += [f"{'model':<16} {'accuracy':>9} {'± 95% CI':>9}   runs", "-" * 43]
        for name, s in self.summary(value).items():
            lines.append(f"{name:<16} {s['mean']:>9.4f} {format_ci(s['ci95']):>9}   {len(s['values'])}")
        note = few_runs_note(self.n_runs)
        return "\n".join(lines + ([note] if note else []))


def _check_hparam_value(name: str, value: Any, positive: set[str], swept: bool = False) -> None:
    """A hyperparameter's value must be finite, and > 0 for the learning rate and the temperatures."""
    what = f"swept value {name} = {value!r}" if swept else f"hparams[{name!r}] = {value!r}"
    if not np.isfinite(value):
        raise ExperimentError(f"{what} is invalid: hyperparameters must be finite numbers.")
    if name in positive and not value > 0:
        raise ExperimentError(f"{what} is invalid: the {'learning rate' if name == 'learning_rate' else 'temperature'} "
                              "must be > 0.")
    trouble = float32_trouble(float(value), positive=name in positive)
    if trouble:
        raise ExperimentError(f"{what} is invalid: {trouble}.")


def _sweep_list(name: str, values: Any) -> list:
    """A sweep's values as a list; a single number (or a string) is an error that says to give a list."""
    if not is_sequence(values) or np.ndim(values) == 0:
        example = values if np.ndim(values) == 0 and not isinstance(values, (str, bytes)) else 1e-3
        raise ExperimentError(f"sweep[{name!r}] = {values!r} is invalid: give a list of numbers, e.g. "
                              f"sweep={{{name!r}: [{plain_scalar(example)!r}]}}.")
    return list(values)


#: Hyperparameters the library's parts read by name by default: Adam's step size (teacher and students), the
#: students' temperature and ``perturbed``'s σ.
READ_BY_NAME = ("learning_rate", "temperature", "init_noise")


def _not_a_hyperparameter(exp: Experiment, name: str) -> str:
    """Why ``name`` cannot be swept in one program, and what to do instead (for the error)."""
    head = f"cannot sweep {name!r}: it is not a hyperparameter of the experiment (hparams: {sorted(exp.hparams)}, or " \
           "'seed')"
    loop = "each value is a program of its own: run them in a loop"
    if name in READ_BY_NAME:
        return (f"{head}. Add it to the experiment's hyperparameters, exp.replace(hparams={{**exp.hparams, {name!r}: "
                f"value}}): the library's parts that use it read hp[{name!r}].")
    if name in {f.name for f in dataclasses.fields(Experiment)}:
        return (f"{head}. It is a field of the Experiment, which fixes the program's shapes or its parts: {loop}, "
                f"[sm.run(exp.replace({name}=v), task) for v in values].")
    if name in set(exp.model.describe()) - {"name", "init", "apply"}:
        example = (f", e.g. for the paper's MLP [sm.run(exp.replace(model=sm.mlp({name}=v)), task) for v in values]"
                   if name in inspect.signature(mlp).parameters else ", exp.replace(model=...) for each value")
        return f"{head}. It is a setting of the model: {loop}, one model per value{example}."
    if name in {f.name for f in dataclasses.fields(Config)}:
        return (f"{head}. It is a field of the paper's protocol (Config): sm.run_sweep({name!r}, values, "
                "sm.Config(...)) runs the protocol for each value, or change the Experiment in a loop.")
    return (f"{head}. To sweep a number of your own, add it to Experiment.hparams (with the value a run without "
            f"the sweep uses) and read it where it acts, hp[{name!r}] (e.g. a Student's optimizer=lambda hp: "
            f"optax.adam(hp[{name!r}])).")


def _check_swept_read(closed_jaxpr, args, sweep: Mapping[str, Sequence]) -> None:
    """A swept hyperparameter that takes several values but that no output of the program depends on
    (``internal.unused_inputs``: nothing reads ``hp[name]``, or what does is dropped) raises an ExperimentError:
    its values would change nothing. (One value repeated, e.g. a fused study's setting its source leaves out, is
    no claim.)"""
    from ..internal import unused_inputs

    varied = [name for name, values in sweep.items() if name != "seed" and len({repr(v) for v in values}) > 1]
    unused = unused_inputs(closed_jaxpr) if varied else None
    if unused is None:
        return
    paths = [path for path, _ in jax.tree_util.tree_flatten_with_path(args)[0]]
    for name in varied:
        at = [k for k, path in enumerate(paths) if path == (jax.tree_util.SequenceKey(0), jax.tree_util.DictKey(name))]
        if at and all(unused[k] for k in at):
            raise ExperimentError(
                f"sweep[{name!r}]: nothing in the experiment reads the hyperparameter {name!r} (no student's "
                f"optimiser, loss, temperature, start or input source, and no function of your own, uses "
                f"hp[{name!r}]): its values would change nothing. "
                + ("A student reads it only with loss = 'kl' and temperature = 'temperature' (the default): an "
                   "'mse' student is never scaled by T." if name == "temperature" else
                   f"Read it where it should act, e.g. a Student's optimizer=lambda hp: optax.adam(hp[{name!r}]) "
                   f"or its loss=lambda z, y, mask, w, hp: ... hp[{name!r}] ..."))


def _check_hparams(exp: Experiment, sweep: Mapping[str, Sequence]) -> int:
    """The number of swept values (1 with no sweep), after checking every value."""
    n_values, first = None, None
    positive = exp.positive_hparams()
    for name, values in sweep.items():
        if name != "seed" and name not in exp.hparams:
            raise ExperimentError(_not_a_hyperparameter(exp, name))
        values = _sweep_list(name, values)
        if name != "seed":
            for v in values:
                _check_hparam_value(name, v, positive, swept=True)
        if not values:
            raise ExperimentError(f"no values given for {name!r}.")
        if n_values is not None and len(values) != n_values:
            raise ExperimentError(f"swept values must have one length (they are zipped): {name!r} has "
                                  f"{len(values)}, {first!r} has {n_values}.")
        n_values, first = len(values), first or name
    return n_values or 1


def _warn_repeated_values(sweep: Mapping[str, Sequence]) -> None:
    """Warn where two positions of a (checked) sweep hold the same values, zipped over the names: they are computed
    twice and give the same numbers (``run_sweep`` and the command line refuse a repeated value)."""
    seen: dict = {}
    for i, combo in enumerate(zip(*sweep.values())):
        if combo in seen:
            where = ", ".join(f"{k} = {v!r}" for k, v in zip(sweep, combo))
            warnings.warn(f"the sweep repeats {where} (values {seen[combo]} and {i}): it is computed twice and gives "
                          "the same numbers; give each value once.", SettingWarning, stacklevel=3)
            return
        seen[combo] = i


def validate(exp: Experiment, task: Task, *, n_runs: int = 1, sweep: Mapping[str, Sequence] = (),
             teachers: Any = None) -> InputSource:
    """Check everything that can be checked before compute; return the inputs bound to the task.

    Raises :class:`ExperimentError`, :class:`~subliminal_mlp.core.models.ModelError`,
    :class:`~subliminal_mlp.core.inputs.InputError` or :class:`~subliminal_mlp.core.students.StudentError`
    naming the value and what to do.

    The task's own images as inputs (``inputs.images()``) are bound to its 8 training images; a
    10-class model on a 2-class task is refused before anything is compiled:

    >>> import numpy as np
    >>> from subliminal_mlp import engine, inputs, mlp
    >>> x, y = np.zeros((8, 4), np.float32), np.arange(8) % 2
    >>> task = engine.Task(x, y, x, y, n_classes=2)
    >>> exp = engine.Experiment(model=mlp((4,), n_classes=2, input_dim=4), inputs=inputs.images(), batch_size=4)
    >>> engine.validate(exp, task).n
    8
    >>> engine.validate(exp.replace(model=mlp((4,), input_dim=4)), task)
    Traceback (most recent call last):
    subliminal_mlp.core.engine.ExperimentError: the model has n_classes = 10 but the task has 2 classes: build the ...
    """
    if not isinstance(exp, Experiment):
        raise ExperimentError(f"the experiment is a {type(exp).__name__}, not an Experiment: build one with "
                              "sm.Experiment(...) (sm.run_experiment runs a Config).")
    if not isinstance(task, Task):
        hint = (" wrap the dataset: sm.Task.from_dataset(data)" if hasattr(task, "train_images")
                else " build one with sm.Task(...) or sm.Task.from_dataset(sm.load_mnist())")
        raise ExperimentError(f"the task is a {type(task).__name__}, not a Task:{hint}.")
    if not is_integer(n_runs, 1):
        raise ExperimentError(f"n_runs = {n_runs!r} is invalid: it must be an integer >= 1.")
    sweep = {k: _sweep_list(k, v) for k, v in dict(sweep).items()}
    n_values = _check_hparams(exp, sweep)
    if n_values * n_runs > MAX_RUNS:
        raise ExperimentError(f"n_runs = {n_runs}{f' times {n_values} swept values' if n_values > 1 else ''} is too "
                              f"many runs: they are indexed in int32 (at most {MAX_RUNS:,}).")
    model = exp.model
    check_model(model)
    if model.n_classes != task.n_classes:
        raise ExperimentError(f"the model has n_classes = {model.n_classes} but the task has {task.n_classes} "
                              "classes: build the model with the task's n_classes.")
    if tuple(np.shape(task.train_x)[1:]) != model.input_shape:
        raise ExperimentError(f"the task's examples have shape {tuple(np.shape(task.train_x)[1:])} but the model "
                              f"takes {model.input_shape}: reshape the data or the model's input_shape.")
    n_train = int(np.shape(task.train_x)[0])
    if exp.batch_size > n_train:
        raise ExperimentError(f"batch_size = {exp.batch_size} is larger than the {n_train} training examples: "
                              "lower batch_size.")
    for name in exp.teachers:  # first: the students' teachers are named among them
        if name in RESERVED or name in {s.name for s in exp.students}:
            owner = "the task's models" if name in RESERVED else "a student"
            raise ExperimentError(f"derived teacher name {name!r} is taken (by {owner}): give each model its own "
                                  f"name, other than {RESERVED} and the students' names.")
    check_students(exp.students, model, ("teacher", *exp.teachers))
    for s in exp.students:
        if isinstance(s.temperature, str) and s.temperature != "temperature" and s.temperature not in exp.hparams:
            raise ExperimentError(f"student {s.name!r}: temperature = {s.temperature!r} is not a hyperparameter of the "
                                  f"experiment (hparams: {sorted(exp.hparams)}): add it to Experiment.hparams.")
    src = bind_task(exp.inputs, task.train_x)
    if exp.batch_size > src.n:
        raise ExperimentError(f"batch_size = {exp.batch_size} is larger than the input set's n = {src.n}: lower "
                              "batch_size or raise the number of distillation examples.")
    check_steps("teacher", exp.teacher_epochs, n_train, exp.batch_size, error=ExperimentError)
    check_steps("student", exp.student_epochs, src.n, exp.batch_size, error=ExperimentError)
    hps = [{**exp.hparams, **{k: v[i] for k, v in sweep.items()}} for i in range(n_values)]  # one per swept value
    for s in exp.students:
        check_start_settings(s, hps)
        _check_temperature(s, hps)
    check_source(src, model.input_shape, hps[0])
    check_source_settings(src, model.input_shape, hps)
    if "learning_rate" not in exp.hparams:
        raise ExperimentError("hparams has no 'learning_rate': the teacher's Adam needs one.")
    if teachers is not None:
        leading = {np.shape(a)[0] for a in jax.tree.leaves(teachers)}
        if leading != {n_runs}:
            raise ExperimentError(f"teachers have leading axis {sorted(leading)}, expected n_runs = {n_runs}: pass "
                                  "the teachers of a Result with the same n_runs and seed.")
        want = param_shapes(model)
        got = jax.tree.map(lambda a: jax.ShapeDtypeStruct(np.shape(a)[1:], jnp.result_type(a)), teachers)
        if not same_tree_shapes(got, want):
            raise ExperimentError("teachers= do not fit the experiment's model: per run they have "
                                  f"{_shapes(got)}, the model's parameters are {_shapes(want)}. Pass teachers of "
                                  "this model (e.g. Result.teachers of a run with the same model).")
    return src


def _check_temperature(student: Student, hps: Sequence[Mapping[str, Any]]) -> None:
    """A student's temperature is a finite number > 0: a number at once, a name or a function at every swept
    value (the hyperparameter ``"temperature"`` itself is checked with the hyperparameters); else
    ExperimentError naming it."""
    T = plain_scalar(student.temperature)
    if isinstance(T, (int, float)) and not isinstance(T, bool):
        if not 0 < T < np.inf:
            raise ExperimentError(f"student {student.name!r}: temperature = {T!r} is invalid: it must be a finite "
                                  "number > 0.")
        return
    if student.loss == "mse" or not (callable(T) or isinstance(T, str)) or T == "temperature":
        return
    what = repr(T) if isinstance(T, str) else "a function of the hyperparameters"
    for hp in hps:
        value = plain_scalar(_users(f"student {student.name!r}: its temperature", resolve, T,
                                    hparams_as_arrays(hp)))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < np.inf:
            raise ExperimentError(f"student {student.name!r}: temperature = {what} gives {value!r}"
                                  f"{f' at {_swept_at(hp, hps)}' if len(hps) > 1 else ''}: it must be a finite "
                                  "number > 0.")


def _swept_at(hp: Mapping[str, Any], hps: Sequence[Mapping[str, Any]]) -> str:
    """The values of ``hp`` that differ between the swept values ``hps`` (for messages)."""
    keys = [k for k in hp if len({repr(h.get(k)) for h in hps}) > 1]
    return ", ".join(f"{k} = {hp[k]!r}" for k in keys)


def _shapes(tree: Any) -> str:
    """``{path: shape dtype}`` of a pytree of shapes, short, for messages."""
    leaves = jax.tree_util.tree_flatten_with_path(tree)[0]
    return "{" + ", ".join(f"{jax.tree_util.keystr(p)}: {tuple(a.shape)} {a.dtype}" for p, a in leaves[:6]) + \
        (", ..." if len(leaves) > 6 else "") + "}"


def _start_params(s: Student, ctx: StartContext) -> Any:
    """Student ``s``'s starting parameters ``s.start(ctx)``, at trace time: a start that fails, or that gives
    parameters its model (``ctx.model``) does not take (another structure or shapes), is an error naming the
    student, before any compute."""
    try:
        params = _users(f"student {s.name!r}'s start", s.start, ctx)
    except StudentError as e:
        raise StudentError(f"student {s.name!r}: {e}") from None
    want = param_shapes(ctx.model)
    if not same_tree_shapes(params, want, dtypes=False):
        raise StudentError(f"student {s.name!r}: its start gives parameters {_shapes(params)}, but its model's are "
                           f"{_shapes(want)}: give it a start of its own model's parameters (e.g. fresh(), or "
                           "layers({...}, default=fresh()) with only layers whose shapes fit).")
    return params


def _metric_values(kind: str, fns: Mapping[str, Callable], view: Any) -> dict[str, jax.Array]:
    """``{name: f(view)}``, each one array (a number is made one); anything else is an error at trace time,
    before the run, naming the metric."""
    out = {}
    for name, f in fns.items():
        value = _users(f"{kind} {name!r}", f, view)
        if isinstance(value, (bool, int, float, np.number, np.bool_)):
            value = jnp.asarray(value)
        if not (hasattr(value, "shape") and hasattr(value, "dtype")):
            raise ExperimentError(f"{kind} {name!r} returned {type(value).__name__}, not an array: a {kind} returns "
                                  "one array (for several values, give each its own name).")
        out[name] = value
    return out


def _users(what: str, fn: Callable, *args, hint: Callable[[Exception], str] = lambda e: ""):
    """``fn(*args)``, a user's code (a metric, a derived teacher, a student's optimiser or hook: :func:`_user_code`)
    run while the program is traced: an error it raises is an ExperimentError naming ``what`` failed (and
    ``hint(error)``), before any compute. A KeyError of a function of a view with students lists them."""
    try:
        return fn(*args)
    except (ExperimentError, StudentError):
        raise
    except Exception as e:  # noqa: BLE001 - a user's function: report it by name
        names = getattr(args[0], "students", None) if args else None
        extra = hint(e) or (f" (the students are {sorted(names)})" if isinstance(e, KeyError)
                            and isinstance(names, Mapping) and names else "")
        raise ExperimentError(f"{what} failed while the program was built: {type(e).__name__}: {e}{extra}") from e


def _groups(students: Sequence[Student]) -> list[list[int]]:
    keys: dict = {}
    for i, s in enumerate(students):
        keys.setdefault(s.group_key(), []).append(i)
    return list(keys.values())


def _stack(trees):
    return jax.tree.map(lambda *a: jnp.stack(a), *trees)


def _distillation_loss(student: Student, hp):
    """The student's loss ``(z, y, mask, example_weights) -> scalar`` at its temperature; a user's own loss is
    called through :func:`_user_code` (its error, or a non-scalar value, names the student), with the run's
    hyperparameters as a fifth argument when it takes one (:func:`~.students.loss_reads_hparams`)."""
    if isinstance(student.loss, str):
        loss = distillation_loss(student.loss)
    else:
        reads = loss_reads_hparams(student.loss)
        own = student.loss if reads != "keyword" else lambda z, y, m, w, hp: student.loss(z, y, m, w, hp=hp)
        extra = (hp,) if reads else ()

        def loss(z, y, m, w=None):
            value = _user_code(student, "loss", own, z, y, m, w, *extra)
            if jnp.shape(value) != ():
                raise ExperimentError(f"student {student.name!r}: its loss returned an array of shape "
                                      f"{jnp.shape(value)}; it must return a scalar (the loss summed over the batch).")
            return value
    temperature = student.temperature
    # the default name falls back to T = 1 when the experiment defines no temperature; any other name must exist
    T = 1.0 if temperature == "temperature" and temperature not in hp else resolve(temperature, hp)
    if isinstance(T, (int, float)) and T == 1 or student.loss == "mse":
        return loss
    return lambda z, y, m, w=None: loss(z / T, y / T, m, w) * T**2


def _program(exp: Experiment, src: InputSource, n_classes: int, n_train: int, n_runs: int, swept: Sequence[str],
             mesh: Mesh, run_batch: int, tick=None, have_teachers: bool = False, keep_students: bool = False):
    model = exp.model
    students = exp.students
    model_of = lambda s: model if s.model is None else s.model  # noqa: E731
    groups = _groups(students)
    order = [i for g in groups for i in g]
    inverse = np.argsort(order)
    masks = [jnp.stack([output_mask(students[i].outputs, model.n_classes, model.aux_logits) for i in g])
             for g in groups]
    consts = dict(exp.hparams)
    n_steps = steps_per_epoch(src.n, exp.batch_size)

    def ticker(phase: int, job):
        """The progress bar's tick at each epoch's end: one call per run. The job's run index is batched under
        lax.map's vmap, so JAX unrolls the callback into one call per run advanced together; a callback of
        unbatched values only would be called once per batch of ``run_batch`` runs."""
        return None if tick is None else (lambda e: jax.debug.callback(tick, phase, e, job["run"]))

    def hparams(job):
        return {**consts, **{k: job[k] for k in swept if k != "seed"}}

    def per_device(jobs, arrays):
        def teacher_of(job):
            hp = hparams(job)
            keys = run_keys(job["seed"], job["run"])
            if have_teachers:
                return jax.tree.map(lambda a: a[job["run"]], arrays["teachers"]), jnp.float32(jnp.nan)
            ref = model.init(keys["init"])
            opt = adam(hp["learning_rate"])
            step = teacher_train_step(model.apply, n_classes, opt, arrays["train_x"], arrays["train_y"],
                                      with_loss=exp.track_losses)
            (teacher, _), metrics, _ = scan_epochs(step, (ref, opt.init(ref)), keys["teacher_shuffle"], n_train,
                                                   exp.batch_size, exp.teacher_epochs, ticker(0, job))
            if not (exp.track_losses and exp.teacher_epochs):
                return teacher, jnp.float32(jnp.nan)
            return teacher, jnp.mean(metrics["loss"][-steps_per_epoch(n_train, exp.batch_size):])

        def students_of(args):
            job, (teacher, teacher_loss) = args
            hp = hparams(job)
            seed, run = job["seed"], job["run"]
            keys = run_keys(seed, run)
            refs = references(model, seed, run, n_runs)
            data = {**{k: arrays[k] for k in ("train_x", "train_y", "test_x", "test_y")}, **arrays["extra"]}
            src_ctx = src.prepare(keys["noise"], arrays["inputs"], hp)
            input_set = InputSet(src.n, lambda idx: src.draw(src_ctx, idx, hp))
            base = RunModels(refs["own"], teacher, {}, data, hp, keys, model, {"teacher": teacher}, refs, run,
                             input_set)
            teachers = {"teacher": teacher, **{name: _derived_teacher(name, f, base, teacher)
                                               for name, f in exp.teachers.items()}}
            cache: dict = {}

            def start_of(s: Student):
                ctx = StartContext(refs, teachers, keys, hp, model_of(s))
                try:
                    hash((s.start, ctx.model))
                except TypeError:  # an unhashable start
                    return _start_params(s, ctx)
                if (s.start, ctx.model) not in cache:
                    cache[s.start, ctx.model] = _start_params(s, ctx)
                return cache[s.start, ctx.model]

            def by_name(groups_params):
                stacked = (jax.tree.map(lambda *a: jnp.concatenate(a), *groups_params) if len(groups_params) > 1
                           else groups_params[0])
                if list(order) != list(range(len(order))):
                    stacked = jax.tree.map(lambda a: a[inverse], stacked)
                return stacked

            def named(groups_params):  # {student name: its parameters}, in table order
                out = {students[i].name: jax.tree.map(lambda a, j=j: a[j], p)
                       for p, g in zip(groups_params, groups) for j, i in enumerate(g)}
                return {s.name: out[s.name] for s in students}

            def view_of(groups_params):
                return base._replace(students=named(groups_params), teachers=teachers)

            def traced(state):
                view = view_of([p for p, _ in state.groups])
                return _metric_values("trace", exp.trace, view)

            probe = traced if exp.trace else None

            params = [_stack([start_of(students[i]) for i in g]) for g in groups]
            state = DistillState(tuple((p, _stacked_optimizer(students[g[0]], hp, base).init(p))
                                       for p, g in zip(params, groups)), jnp.int32(0))
            step = _distill_step(model, students, groups, masks, hp, src, src_ctx, teachers, exp.track_losses,
                                 base._replace(teachers=teachers), exp.step_metrics,
                                 named, starts=params)
            state, metrics, trace = scan_epochs(step, state, keys["student_shuffle"], src.n, exp.batch_size,
                                                exp.student_epochs, ticker(1, job), probe, exp.trace_every)
            fixed = [refs["own"], *teachers.values()]

            def evaluate(models_params, apply_fn):
                acc_one = lambda p: accuracy(p, arrays["test_x"], arrays["test_y"], n_classes, 1000, apply_fn)  # noqa: E731
                return jax.vmap(acc_one)(models_params), jax.vmap(all_finite)(models_params)

            if all(s.model is None for s in students):
                stacked = by_name([p for p, _ in state.groups])
                everyone = jax.tree.map(lambda *a: jnp.concatenate(a), _stack(fixed), stacked)
                acc, finite = evaluate(everyone, model.apply)
            else:  # students of other models: each group evaluated with its own apply, then put in order
                parts = [evaluate(_stack(fixed), model.apply)]
                parts += [evaluate(p, model_of(students[g[0]]).apply) for (p, _), g in zip(state.groups, groups)]
                acc_parts, finite_parts = zip(*parts)
                where = np.concatenate([np.arange(len(fixed)), len(fixed) + inverse])
                acc, finite = jnp.concatenate(acc_parts)[where], jnp.concatenate(finite_parts)[where]
            losses = metrics[0]
            if exp.track_losses and exp.student_epochs:
                per_step = jnp.concatenate([m for m in losses], axis=1) if len(losses) > 1 else losses[0]
                distill_loss = jnp.sum(per_step[-n_steps:], axis=0)[inverse] / src.n
            else:
                distill_loss = jnp.full((len(students),), jnp.nan, jnp.float32)
            out = {"accuracy": acc, "teacher_loss": teacher_loss, "distill_loss": distill_loss, "finite": finite}
            if exp.metrics:
                view = view_of([p for p, _ in state.groups])
                out["metrics"] = _metric_values("metric", exp.metrics, view)
            if exp.trace:
                out["trace"] = trace
            if keep_students:
                out["students"] = named([p for p, _ in state.groups])
            if exp.step_metrics:  # without a step, (0, ...) arrays, which lax.map's batches cannot carry: one
                out["step_metrics"] = metrics[1] if exp.student_epochs else jax.tree.map(  # slot, dropped on the host
                    lambda a: jnp.zeros((1, *a.shape[1:]), a.dtype), metrics[1])
            return out

        teachers = lax.map(teacher_of, jobs, batch_size=run_batch)
        out = lax.map(students_of, (jobs, teachers), batch_size=run_batch)
        if have_teachers:
            return out, None
        return out, teachers[0]

    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P("runs"), P()), out_specs=P("runs"), check_vma=False)
    return jax.jit(sharded)


def _stacked_optimizer(student: Student, hp, view=None) -> optax.GradientTransformation:
    """The optimiser of a group of S stacked students, as one transformation over the stack.

    The default Adam is elementwise, so one Adam over the stack is S independent Adams (and is
    what the committed figures were computed with); any other optimiser is ``vmap``-ed over the
    stack, so a transformation that mixes coordinates (a projection, a global-norm clip) sees
    one student at a time.
    """
    opt = _user_code(student, "optimizer", make_optimizer, student, hp, view)
    if student.optimizer is None:
        return opt
    return optax.GradientTransformation(jax.vmap(opt.init), jax.vmap(opt.update))


def _distill_step(model, students, groups, masks, hp, src, src_ctx, teachers, with_loss: bool, view=None,
                  step_metrics=None, named=None, starts=None):
    """``step(state, idx) -> (state, metrics)``: one batch of inputs, each teacher's logits once, every group's update.

    ``state`` is a :class:`DistillState`. For a group of S students with logit masks ``w_s``:
    ``g_s = ∇_θ [Σ_b L(f_θs(x_b), t_b; w_s) + penalty_s]`` (``t`` = the teacher's logits or the
    group's ``targets``; per-example weights if given; each hook called with a :class:`HookView` of
    ``view``, the run's :class:`RunModels`; ``penalty_s`` the student's ``penalty`` of a
    :class:`PenaltyView`, whose ``start`` comes from ``starts``, the groups' stacked starting
    parameters), then each student's optimiser step. ``f`` is the student's model (the
    experiment's ``model`` unless the row gives its own). The step's metrics are ``(losses,)``: one
    ``(S,)`` array of batch distillation losses (a penalty's term not included: the gradient includes it) per
    group (``with_loss``), else empty (only
    the gradients are computed; see :class:`Experiment`); with ``step_metrics``,
    ``(losses, {name: f(StepView)})``.
    """
    def group_fns(g):
        s0 = students[g[0]]
        f = model if s0.model is None else s0.model
        loss_fn = _distillation_loss(s0, hp)
        opt = _stacked_optimizer(s0, hp, view)
        pvals = {k: jnp.asarray([students[i].params[k] for i in g], jnp.float32) for k in sorted(s0.params)}
        if s0.penalty is None:
            objective = lambda p, x, t, m, w=None, extra=None: loss_fn(f.apply(p, x), t, m, w)  # noqa: E731
            grad = jax.grad(objective)
            value_and_grad = jax.value_and_grad(objective) if with_loss else (lambda *a: (None, grad(*a)))
        else:  # the gradient of distillation + penalty; the tracked loss is the distillation loss alone
            def objective(p, x, t, m, w=None, extra=None):
                start, t_step, pv = extra
                pen = _user_code(s0, "penalty", s0.penalty, PenaltyView(p, start, x, t, t_step, f, view, pv))
                if jnp.shape(pen) != ():
                    raise ExperimentError(f"student {s0.name!r}: its penalty returned an array of shape "
                                          f"{jnp.shape(pen)}; it must return a scalar (added to the batch's loss).")
                loss = loss_fn(f.apply(p, x), t, m, w)
                return loss + pen, loss
            with_aux = jax.value_and_grad(objective, has_aux=True)

            def value_and_grad(*a):
                (_, loss), g = with_aux(*a)
                return (loss if with_loss else None), g
        return s0, opt, pvals, value_and_grad

    fns = [group_fns(g) for g in groups]
    used = list(dict.fromkeys(students[g[0]].teacher for g in groups))
    starts = [None] * len(groups) if starts is None else starts

    def step(state, idx):
        t_step = state.step
        x = src.draw(src_ctx, idx, hp)
        logits = {name: model.apply(teachers[name], x) for name in used}
        new_state, losses, raw = [], [], []
        for (p, o), mask, (s0, opt, pvals, vg), start in zip(state.groups, masks, fns, starts):
            t = logits[s0.teacher]
            if s0.targets is None and s0.example_weights is None and s0.penalty is None:
                loss, g = jax.vmap(vg, in_axes=(0, None, None, 0))(p, x, t, mask)
            else:  # per student: its hooks' targets and weights (the teacher's logits, ones), its penalty's inputs
                tt, w = jax.vmap(lambda pv: _hooked(s0, view, t, x, idx, pv, t_step), axis_size=mask.shape[0])(pvals)
                extra, axes = (None, None) if s0.penalty is None else ((start, t_step, pvals), (0, None, 0))
                loss, g = jax.vmap(vg, in_axes=(0, None, 0, 0, 0, axes))(p, x, tt, mask, w, extra)
            updates, o = opt.update(g, o, p)
            raw.append((p, g, updates))
            new_state.append((optax.apply_updates(p, updates), o))
            losses.append(loss)
        metrics = (tuple(losses) if with_loss else (),)
        if step_metrics:
            now = StepView(view._replace(students=named([p for p, _, _ in raw])), named([g for _, g, _ in raw]), x,
                           logits, idx, t_step, named([u for _, _, u in raw]))
            metrics = metrics + (_metric_values("step metric", step_metrics, now),)
        return DistillState(tuple(new_state), t_step + 1), metrics

    return step


def _derived_teacher(name: str, fn: Callable, run: "RunModels", teacher: Any) -> Any:
    """A derived teacher's parameters, ``fn(run)``, which must have the teacher's tree and shapes (students of
    the experiment's model imitate it); else ExperimentError naming it, while the program is traced."""
    params = _users(f"derived teacher {name!r}", fn, run)
    if not same_tree_shapes(params, teacher, dtypes=False):
        got, want = (jax.tree.map(lambda a: jax.ShapeDtypeStruct(jnp.shape(a), jnp.result_type(a)), t)
                     for t in (params, teacher))
        raise ExperimentError(f"derived teacher {name!r} returned parameters {_shapes(got)}, but the model's are "
                              f"{_shapes(want)}: return a tree like the teacher's (e.g. jax.tree.map over run.teacher).")
    return params


def _user_code(student: Student, what: str, fn: Callable, *args):
    """``fn(*args)``, a student's own code (its optimiser, a hook), run while the program is traced: an
    error it raises is an ExperimentError naming the student and what failed, before any compute."""
    def hint(e: Exception) -> str:
        hp = args[1] if what == "optimizer" else args[4] if what == "loss" and len(args) > 4 else None
        if isinstance(e, KeyError) and isinstance(hp, Mapping):
            return f" (hyperparameters it reads must be in Experiment.hparams: {sorted(hp)})"
        return f" (a student's optimizer: {OPTIMIZER_FORMS})" if what == "optimizer" and isinstance(e, TypeError) else ""

    return _users(f"student {student.name!r}: its {what}", fn, *args, hint=hint)


def _hooked(s0: Student, view, t, x, idx, pv, t_step):
    """One student's (targets, example weights) on the batch from its hooks (the teacher's logits, ones)."""
    seen = HookView(view, t, x, idx, pv, t_step)
    tt = t if s0.targets is None else _user_code(s0, "targets hook", s0.targets, seen)
    w = (jnp.ones(x.shape[0], jnp.float32) if s0.example_weights is None
         else _user_code(s0, "example_weights hook", s0.example_weights, seen))
    for what, value, want in (("targets", tt, t.shape), ("example_weights", w, (x.shape[0],))):
        if tuple(jnp.shape(value)) != tuple(want):
            raise ExperimentError(f"student {s0.name!r}: its {what} hook returned shape {tuple(jnp.shape(value))} "
                                  f"for a batch of {x.shape[0]}, expected {tuple(want)}.")
    return tt, w


def default_run_batch(platform: str, n_local: int, run_batch: Optional[int] = None) -> int:
    """Runs advanced together per device without measuring: ``run_batch`` if given (at most the runs
    a device holds), else 1 on CPU (one run's matmuls already fill the cores) and every run elsewhere.

    On an accelerator :func:`run` does not use the fallback: it measures what fits
    (:func:`fitted_run_batch`).

    >>> from subliminal_mlp import engine
    >>> engine.default_run_batch("cpu", 8), engine.default_run_batch("gpu", 8), engine.default_run_batch("gpu", 8, 3)
    (1, 8, 3)
    >>> engine.default_run_batch("cpu", 2, run_batch=5)  # at most the runs the device holds
    2
    """
    if run_batch is not None:
        return min(run_batch, n_local)
    return 1 if platform == "cpu" else n_local


#: Fraction of a device's free memory that :func:`fitted_run_batch` plans to fill.
MEMORY_HEADROOM = 0.8
_FITTED: dict = {}
_FITTED_MAX = 16


def free_device_memory(device) -> Optional[int]:
    """Bytes the device's allocator can still hand out (``memory_stats``), or None where unknown (CPU).

    ``bytes_limit − bytes_in_use``, on stand-ins for a device with 16 GiB of which 1 GiB is in use, and
    for one without statistics:

    >>> from types import SimpleNamespace
    >>> from subliminal_mlp import engine
    >>> gpu = SimpleNamespace(memory_stats=lambda: {"bytes_limit": 16 * 2**30, "bytes_in_use": 2**30})
    >>> engine.free_device_memory(gpu) / 2**30, engine.free_device_memory(SimpleNamespace(memory_stats=lambda: None))
    (15.0, None)
    """
    try:
        stats = device.memory_stats()
    except Exception:  # a backend without memory statistics
        return None
    if not stats or "bytes_limit" not in stats:
        return None
    return int(stats["bytes_limit"]) - int(stats.get("bytes_in_use", 0))


def fitted_run_batch(compile_for: Callable[[int], Any], n_local: int, free_bytes: int,
                     headroom: float = MEMORY_HEADROOM) -> tuple[int, Any]:
    """The largest ``run_batch`` whose program fits in ``headroom × free_bytes``, and its executable if compiled.

    ``compile_for(b)`` compiles the program advancing ``b`` runs together. The program for ``b = 1``
    is compiled once and XLA's memory analysis of it read: its arguments and outputs (the data,
    every run's results) are paid once, its temporary buffers once per run advanced together, so
    ``memory(b) ≤ args + outputs + b · temp(1)`` (an upper bound: temporaries that do not grow with
    ``b`` are counted ``b`` times). Returns ``(b, compiled)`` where ``compiled`` is the ``b = 1``
    executable when ``b == 1`` (else None: the caller compiles the chosen ``b``). Raises
    :class:`ExperimentError` when even one run does not fit, before anything runs.

    On a stand-in compiler whose program takes 240 bytes of arguments and outputs and 100 of
    temporaries: ``⌊(0.8 · 1000 − 240) / 100⌋ = 5`` runs fit in 1000 free bytes, 1 in 450 (its
    program is the one compiled), none in 300:

    >>> from types import SimpleNamespace
    >>> from subliminal_mlp import engine
    >>> mem = SimpleNamespace(argument_size_in_bytes=200, output_size_in_bytes=40, temp_size_in_bytes=100)
    >>> compile_for = lambda b: SimpleNamespace(b=b, memory_analysis=lambda: mem)
    >>> engine.fitted_run_batch(compile_for, 16, 1000), engine.fitted_run_batch(compile_for, 16, 450)[1].b
    ((5, None), 1)
    >>> engine.fitted_run_batch(compile_for, 16, 300)
    Traceback (most recent call last):
    subliminal_mlp.core.engine.ExperimentError: one run of this experiment needs about 0.00 GiB on the device, ...
    """
    compiled = compile_for(1)
    try:
        mem = compiled.memory_analysis()
        fixed = int(mem.argument_size_in_bytes) + int(mem.output_size_in_bytes)
        per_run = max(int(mem.temp_size_in_bytes), 1)
    except Exception:  # no memory analysis on this backend: the runs a device holds
        return n_local, (compiled if n_local == 1 else None)
    budget = headroom * free_bytes - fixed
    if budget < per_run:
        raise ExperimentError(
            f"one run of this experiment needs about {(fixed + per_run) / 2**30:.2f} GiB on the device, more "
            f"than {headroom:.0%} of the {free_bytes / 2**30:.2f} GiB free: use a smaller model, batch or data "
            f"set, free device memory, or run on CPU (JAX_PLATFORMS=cpu).")
    b = int(min(n_local, budget // per_run))
    return b, (compiled if b == 1 else None)


def choose_run_batch(compile_for: Callable[[int], Any], n_local: int, device, run_batch: Optional[int] = None,
                     *, platform: Optional[str] = None, key: Any = None,
                     log: Callable[[str], None] = lambda s: None) -> tuple[int, Any]:
    """``(run_batch, compiled program)`` for ``n_local`` runs on ``device``.

    A given ``run_batch`` is used as is (at most ``n_local``). Otherwise, on CPU, 1; on an
    accelerator whose free memory is known, the largest that fits (:func:`fitted_run_batch`),
    measured once per ``key`` in this process; where the memory is unknown, every run.

    With a stand-in compiler: on CPU one run at a time unless told; on a stand-in accelerator with
    1000 free bytes, what :func:`fitted_run_batch` finds fits (5 runs of 100 bytes beside 240):

    >>> import jax
    >>> from types import SimpleNamespace
    >>> from subliminal_mlp import engine
    >>> mem = SimpleNamespace(argument_size_in_bytes=200, output_size_in_bytes=40, temp_size_in_bytes=100)
    >>> compile_for = lambda b: SimpleNamespace(b=b, memory_analysis=lambda: mem)
    >>> cpu = jax.devices("cpu")[0]
    >>> gpu = SimpleNamespace(platform="gpu", memory_stats=lambda: {"bytes_limit": 1000})
    >>> [engine.choose_run_batch(compile_for, 8, d, b)[1].b for d, b in ((cpu, None), (cpu, 4), (cpu, 16), (gpu, None))]
    [1, 4, 8, 5]
    """
    platform = platform or device.platform
    free = free_device_memory(device) if run_batch is None and platform != "cpu" else None
    if free is None:
        batch = default_run_batch(platform, n_local, run_batch)
        return batch, compile_for(batch)
    if key is not None and key in _FITTED:
        batch, compiled = _FITTED[key], None
    else:
        batch, compiled = fitted_run_batch(compile_for, n_local, free)
        if key is not None:
            if len(_FITTED) >= _FITTED_MAX:  # the key holds the experiment (and its arrays): keep few
                _FITTED.pop(next(iter(_FITTED)))
            _FITTED[key] = batch
    log(f"run_batch = {batch}: the most runs per device that fit in {MEMORY_HEADROOM:.0%} of "
        f"{free / 2**30:.1f} GiB free")
    return batch, compiled if compiled is not None else compile_for(batch)


def _fit_key(exp, src, task, n_runs, swept, n_local, device, have_teachers, keep_students=False):
    """What a fitted ``run_batch`` depends on (None if unhashable: then it is measured every time)."""
    key = (exp, src, tuple(np.shape(task.train_x)), tuple(np.shape(task.test_x)), task.n_classes, n_runs,
           tuple(swept), n_local, device.device_kind, have_teachers, keep_students)
    try:
        hash(key)
    except TypeError:
        return None
    return key


def default_devices() -> list:
    """The devices :func:`run` shards over by default: every device of every process (``jax.devices()``)
    once JAX's distributed runtime is running (:mod:`~subliminal_mlp.core.distributed`), else the local ones.

    >>> import jax
    >>> from subliminal_mlp import engine
    >>> engine.default_devices() == jax.local_devices()  # one process: this machine's devices
    True
    """
    return jax.devices() if jax.process_count() > 1 else jax.local_devices()


def _put(tree, sharding: NamedSharding):
    """``tree``'s arrays placed with ``sharding``; across processes each process feeds only its own devices.

    Every process holds the whole (host) array; ``make_array_from_callback`` asks it only for the
    pieces on its addressable devices.
    """
    if sharding.is_fully_addressable:
        return jax.device_put(tree, sharding)

    def one(a):
        a = np.asarray(a)
        a = a.astype(jax.dtypes.canonicalize_dtype(a.dtype), copy=False)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree.map(one, tree)


def _gather(tree):
    """``tree``'s arrays on the host, whole, in every process (gathered from all processes where sharded)."""
    leaves = jax.tree.leaves(tree)
    if all(getattr(a, "is_fully_addressable", True) for a in leaves):
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


class _Progress:
    """tqdm bars for the teacher and distillation phases, advanced by the program's callbacks.

    With several processes only process 0 draws them (``show=False`` elsewhere: the callbacks stay in
    the program, so every process runs the same one, and do nothing); its callbacks see only the jobs
    on its own devices, ``n_jobs`` of them, and the bars say so.
    """

    def __init__(self, n_jobs: int, teacher_epochs: int, student_epochs: int, show: bool = True,
                 note: str = "", n_ticking: Optional[int] = None):
        self.totals = (n_jobs * teacher_epochs, n_jobs * student_epochs)
        # the jobs whose epochs tick: the real ones and the padding that fills the last device's share
        n_ticking = n_jobs if n_ticking is None else n_ticking
        self.expected = (n_ticking * teacher_epochs, n_ticking * student_epochs)
        self.received = [0, 0]
        self.per = (f"{_count(n_jobs, 'run')} × {_count(teacher_epochs, 'epoch')}",
                    f"{_count(n_jobs, 'run')} × {_count(student_epochs, 'epoch')}")
        self.bars: list = []
        self.show, self.note = show, note

    def start(self) -> None:
        """Open the first phase's bar (the teacher's, or the students' where the teachers are given).

        One bar is open at a time: the students' opens when the teachers' is done (or at its own first
        tick, if the teachers' ticks are still coming from another device). Two bars open together are
        redrawn with cursor movements, which a log file or a pipe shows as garbage.
        """
        if not self.show:
            return
        self.bars = [None, None]
        self._open(0 if self.totals[0] else 1)

    def _open(self, phase: int) -> None:
        """Open phase ``phase``'s bar, unless it has no epoch (no teacher bar where the teachers are given)."""
        from tqdm.auto import tqdm

        if not self.totals[phase]:
            return
        # one tick per run and epoch: the totals are runs × epochs (a sweep's values count as runs)
        what = ("teacher training", "student distillation")[phase]
        self.bars[phase] = tqdm(total=self.totals[phase], desc=f"{what} ({self.per[phase]}){self.note}", unit="epoch")

    def tick(self, phase, epoch, run=None) -> None:
        """One epoch of one run (``run``: its index, unused) of phase 0 (teachers) or 1 (students) is done."""
        if not self.bars:
            return
        phase = int(phase)
        if self.bars[phase] is None:
            self._open(phase)
        bar = self.bars[phase]
        if bar is None:
            return
        if bar.n == 0:
            bar.reset()  # start this phase's clock at its first epoch, not when the bar opened
        if bar.n < bar.total:
            bar.update(1)
        self.received[phase] += 1
        if self.received[phase] == self.expected[phase]:  # the phase is done, padding included: its bar stops
            bar.close()                                     # its clock (a notebook's turns done)
            if phase == 0 and self.bars[1] is None:
                self._open(1)

    def close(self) -> None:
        for bar in self.bars:
            if bar is not None:
                bar.close()


def _count(n: int, word: str) -> str:
    """``"1 run"``, ``"2 runs"``: a count and its noun, for logs and progress bars."""
    return f"{n} {word}{'' if n == 1 else 's'}"


def _swept_number(name: str, value: Any):
    """A swept value as a Python number (numpy and JAX scalars too), so that records and labels show it as given."""
    if np.ndim(value) != 0 or not np.issubdtype(np.asarray(value).dtype, np.number):
        raise ExperimentError(f"swept value {name} = {value!r} is not a number: sweep numeric hyperparameters "
                              "(settings that change shapes or code are fields of the Experiment).")
    return plain_scalar(value)


def _teacher_cache_key(teacher_cache, exp, task, sweep, seed, n_runs, n_local, n_dev, device, run_batch, log):
    """``(cache, key)`` for this run's teachers, or ``(cache, None)`` when the cache is off or cannot be used."""
    from .teacher_cache import active_teacher_cache, teacher_key

    cache = active_teacher_cache() if teacher_cache is None else (teacher_cache or None)
    if cache is None:
        return None, None
    platform = device.platform
    reason = None
    if exp.teacher_epochs == 0:
        reason = "teacher_epochs = 0 (nothing to train)"
    elif "seed" in sweep or "learning_rate" in sweep:
        reason = "the seed or the learning rate is swept (the teachers differ per value)"
    elif exp.track_losses:
        reason = "losses are tracked (the teacher's loss is computed while training it)"
    elif run_batch is None and platform != "cpu":
        reason = f"run_batch is fitted to the memory of the {platform} device: pass run_batch to use the cache"
    elif jax.process_count() > 1:
        reason = ("several processes run the program (each must compile the same one, and a hit in one "
                  "process's cache may be a miss in another's)")
    key = None
    if reason is None:
        key = teacher_key(exp, task, seed=int(seed), run_batch=default_run_batch(platform, n_local, run_batch),
                          n_runs=n_runs, n_devices=n_dev, platform=platform, device_kind=device.device_kind,
                          learning_rate=exp.hparams["learning_rate"],
                          n_values=max((len(v) for v in sweep.values()), default=1))
        if key is None:
            reason = ("the model's code cannot be identified (a function with neither source nor bytecode, or an "
                      "object without attributes): teacher_cache.code_identity names what makes a key")
    if reason is not None:
        log(f"teacher cache not used: {reason}")
    return cache, key


def run(exp: Experiment, task: Task, *, n_runs: int = 100, seed: int = 0,
        sweep: Optional[Mapping[str, Sequence]] = None,
        devices: Optional[list] = None, run_batch: Optional[int] = None, progress: bool = False,
        teachers: Any = None, keep_teachers: bool = False, keep_students: bool = False,
        log: Callable[[str], None] = lambda s: None, on_divergence: str = "warn", teacher_cache: Any = None) -> Result:
    """Run ``exp`` on ``task`` for ``n_runs`` runs (× the swept values) as one compiled program.

    ``sweep`` maps hyperparameter names (keys of ``exp.hparams``, or ``"seed"``) to equally long
    lists of values, zipped: value set ``v`` runs all ``n_runs`` runs with those values, traced,
    in the same program (one compile). ``devices`` defaults to every local device, or, once JAX's
    distributed runtime runs (:mod:`~subliminal_mlp.core.distributed`), to every device of every process:
    each process then feeds its own devices, the results are gathered to every process, and the
    progress bars are process 0's (the numbers are those of one process); ``run_batch``
    runs advance together per device (default: 1 on CPU; on an accelerator the most that fit in its
    memory, :func:`choose_run_batch`; a different
    ``run_batch`` may change float rounding, the number of devices does not). ``teachers`` (a
    pytree with leading axis ``n_runs``, e.g. ``Result.teachers`` of an earlier run with the same
    seed) replaces teacher training; they are used as given (any parameters of the model: e.g. a
    previous generation's students), and the record says ``"teachers": "given"``.
    ``keep_teachers=True`` returns the teachers in ``Result.teachers``; ``keep_students=True`` every
    student's final parameters in ``Result.students`` (``{name: pytree}``, each leaf with leading axes
    ``(n_values, n_runs)``: ``n_values × n_runs × students`` copies of the parameters in host memory,
    which is why it is off by default; records never hold them).
    Everything is validated before compilation (:func:`validate`).

    Diverged runs (:meth:`Result.health`: non-finite parameters in any model, a trained teacher no
    better than its reference) are reported with a :class:`~subliminal_mlp.core.results.DivergenceWarning`
    (``on_divergence="warn"``, the default) or raise :class:`~subliminal_mlp.core.results.DivergenceError`
    (``"fail"``; its ``result`` holds the Result).

    ``teacher_cache``: a :class:`~subliminal_mlp.core.teacher_cache.TeacherCache` (or the directory of
    one) to read the trained teachers from (and store them in, when they are missing), ``False`` for
    none, or None (the default) for the cache of an enclosing ``with use_teacher_cache(cache):`` block, if any
    (:mod:`~subliminal_mlp.core.teacher_cache`: the key, when it is skipped). Teachers read from the
    cache give bit-identical results to training them here; ``Result.teacher_cache`` says
    ``"hit"`` or ``"miss"`` (None when no cache was used).

    A whole protocol on a toy task (is ``x_0 > 0``?) in seconds: the paper's four students, a 2-class
    MLP with m = 2, 256 noise inputs, a larger learning rate than the paper's for so few steps:

    >>> import numpy as np
    >>> from subliminal_mlp import engine, inputs, mlp
    >>> x = np.random.default_rng(0).uniform(-1, 1, (512, 8)).astype(np.float32)
    >>> y = (x[:, 0] > 0).astype(np.int32)
    >>> task = engine.Task(x[:384], y[:384], x[384:], y[384:], n_classes=2)
    >>> exp = engine.Experiment(model=mlp((16,), n_classes=2, aux_logits=2, input_dim=8),
    ...                         inputs=inputs.uniform(256, shape=(8,)), teacher_epochs=20, student_epochs=20,
    ...                         batch_size=64, hparams={"learning_rate": 1e-2, "temperature": 1.0})
    >>> result = engine.run(exp, task, n_runs=4)
    >>> result.models
    ('reference', 'teacher', 'student_aux', 'student_all', 'cross_aux', 'cross_all')
    >>> result.accuracy("teacher").shape, bool(result.accuracy("teacher").mean() > 0.9)
    ((4,), True)
    """
    check_on_divergence(on_divergence)
    n_runs, seed = plain_scalar(n_runs), plain_scalar(seed)
    sweep = {k: [_swept_number(k, x) for x in _sweep_list(k, v)] for k, v in (sweep or {}).items()}
    if (keep_teachers or teachers is not None) and {"seed", "learning_rate"} & set(sweep):
        raise ExperimentError("keep_teachers / teachers cannot be combined with a sweep of the seed or the learning "
                              "rate: the teachers differ from one swept value to the next. Run each value on its own.")
    src = validate(exp, task, n_runs=n_runs, sweep=sweep, teachers=teachers)
    _warn_repeated_values(sweep)
    for value in [seed, *sweep.get("seed", [])]:
        check_seed(value, ExperimentError)
    run_batch = plain_scalar(run_batch)
    if run_batch is not None and not is_integer(run_batch, 1):
        raise ExperimentError(f"run_batch = {run_batch!r} is invalid: give the number of runs a device advances "
                              "together, an integer >= 1, or None to choose it from the device.")
    devices = None if devices is None else list(devices)
    if devices == []:
        raise ExperimentError("devices = [] is invalid: give the devices to shard the runs over, or None for every "
                              "local device.")
    if devices and not all(isinstance(d, jax.Device) for d in devices):
        raise ExperimentError(f"devices = {devices!r} is invalid: give jax.Device objects (e.g. jax.local_devices()), "
                              "or None for every local device.")
    if isinstance(teacher_cache, (str, os.PathLike)):  # a directory, as the command line's --teacher-cache takes
        from .teacher_cache import TeacherCache

        teacher_cache = TeacherCache(teacher_cache)
    elif teacher_cache not in (None, False) and not all(hasattr(teacher_cache, m) for m in ("load", "store")):
        raise ExperimentError(f"teacher_cache = {teacher_cache!r} is invalid: give a TeacherCache, a directory for "
                              "one, False for none, or None for the enclosing use_teacher_cache block's.")
    n_values = _check_hparams(exp, sweep)
    from . import distributed

    if devices is None and distributed.requested() and not distributed.is_initialized():
        warnings.warn(f"{distributed.ENV} is set but JAX's distributed runtime was not started in this process: "
                      "it runs alone on its own devices, and every process started this way does all the work. "
                      "Call subliminal_mlp.core.distributed.initialize() first (the source's docs/distributed.md).",
                      SettingWarning, stacklevel=2)
    devices = list(devices or default_devices())
    n_dev = len(devices)
    n_jobs = n_values * n_runs
    n_pad = -(-n_jobs // n_dev) * n_dev
    here = [k for k, d in enumerate(devices) if d.process_index == jax.process_index()]
    if not here:
        raise ExperimentError(f"none of the {n_dev} devices given is one of this process's "
                              f"(process {jax.process_index()}): give devices that include its own.")
    pick = np.minimum(np.arange(n_pad), n_jobs - 1)  # padding repeats the last job; dropped below
    seeds = np.asarray(sweep.get("seed", [seed] * n_values), np.uint32)
    jobs = {"run": (pick % n_runs).astype(np.int32), "seed": seeds[pick // n_runs]}
    swept = [k for k in sweep if k != "seed"]
    for k in swept:
        jobs[k] = np.asarray(sweep[k], np.float32)[pick // n_runs]
    platform = devices[0].platform
    cache, cache_key, cache_state = None, None, None
    if teachers is None:
        cache, cache_key = _teacher_cache_key(teacher_cache, exp, task, sweep, seed, n_runs, n_pad // n_dev, n_dev,
                                              devices[0], run_batch, log)
    if cache_key is not None:
        loaded = cache.load(cache_key, n_runs, param_shapes(exp.model))
        cache_state = "miss" if loaded is None else "hit"
        log(f"teacher cache: {cache_state} ({n_runs} run(s) under {cache.path(cache_key, 0).parent})")
    else:
        loaded = None
    given = teachers
    if loaded is not None:
        teachers = loaded
    mesh = Mesh(np.array(devices), ("runs",))
    multi = any(d.process_index != jax.process_index() for d in devices)  # devices of other processes too
    per = n_pad // n_dev
    mine = sum(max(0, min(n_jobs, (k + 1) * per) - k * per) for k in here)  # real jobs on this process's devices
    bars = _Progress(mine, 0 if teachers is not None else exp.teacher_epochs, exp.student_epochs,
                     show=jax.process_index() == 0, n_ticking=per * len(here),
                     note=f" (process 0: {mine} of {n_jobs} runs)" if multi else "") if progress else None

    def program_for(b: int):
        return _program(exp, src, task.n_classes, int(np.shape(task.train_x)[0]), n_runs, swept, mesh, b,
                        bars.tick if bars else None, have_teachers=teachers is not None,
                        keep_students=bool(keep_students))

    replicated = NamedSharding(mesh, P())
    arrays = {"train_x": task.train_x, "train_y": task.train_y, "test_x": task.test_x, "test_y": task.test_y,
              "inputs": src.arrays, "extra": dict(exp.arrays)}
    if teachers is not None:
        arrays["teachers"] = teachers
    arrays = _put(arrays, replicated)
    args = (_put(jobs, NamedSharding(mesh, P("runs"))), arrays)
    n_proc = len({d.process_index for d in devices})
    log(f"compiling the experiment program ({_count(n_jobs, 'run')} on {_count(n_dev, platform + ' device')}"
        f"{f' of {n_proc} processes' if multi else ''})...")
    t0 = time.perf_counter()
    local = devices[here[0]]
    checked = []  # the first trace tells whether every swept hyperparameter is read, before anything is compiled

    def compile_for(b: int):
        def check_read(jaxpr):
            _check_swept_read(jaxpr, args, sweep)
            checked.append(True)

        return compile_program(program_for(b), *args, platform=platform,
                               inspect=None if checked or not swept else check_read)

    batch, compiled = choose_run_batch(
        compile_for, per, local, run_batch,
        key=_fit_key(exp, src, task, n_runs, swept, per, local, teachers is not None, bool(keep_students)), log=log)
    if multi:  # every process must run the same program: the smallest run_batch any of them chose
        from .distributed import agree_min

        agreed = agree_min(batch)
        if agreed != batch:
            batch, compiled = agreed, compile_for(agreed)
    t1 = time.perf_counter()
    log(f"compiled in {t1 - t0:.1f} s; running")
    if bars:
        bars.start()
    try:
        out, trained = jax.block_until_ready(compiled(*args))
        out = _gather(out)
    finally:
        if bars:
            # The ticks are jax.debug.callbacks: on a GPU they may still be running when the outputs are
            # ready (on a CPU they never are), and a bar closed before its last tick stops short of it.
            jax.effects_barrier()
            bars.close()
    t2 = time.perf_counter()

    def shaped(a):
        a = np.asarray(a)[:n_jobs]
        return a.reshape(n_values, n_runs, *a.shape[1:])

    kept = None
    if (keep_teachers or cache_state == "miss") and teachers is None:
        kept = jax.tree.map(lambda a: np.asarray(a)[:n_jobs][:n_runs], _gather(trained))
    if cache_state == "miss":
        cache.store(cache_key, kept)
    if given is not None:
        kept = given
    elif cache_state == "hit":
        kept = teachers
    models = (*RESERVED, *exp.teachers, *(s.name for s in exp.students))
    finite = np.array(shaped(out["finite"]), bool)  # a writable copy
    if exp.track_losses:  # a non-finite tracked loss flags its model too (untracked losses are NaN: skipped)
        if teachers is None and exp.teacher_epochs:
            finite[..., 1] &= np.isfinite(shaped(out["teacher_loss"]))
        if exp.student_epochs:
            finite[..., len(models) - len(exp.students):] &= np.isfinite(shaped(out["distill_loss"]))
    result = Result(experiment=exp.replace(inputs=src), task_data=dict(task.data), models=models,
                    accuracies=np.where(finite, shaped(out["accuracy"]), np.float32(np.nan)),
                    teacher_loss=shaped(out["teacher_loss"]) if exp.track_losses else None,
                    distill_loss=shaped(out["distill_loss"]) if exp.track_losses else None,
                    metrics={k: shaped(v) for k, v in out.get("metrics", {}).items()},
                    traces={k: shaped(v) for k, v in out.get("trace", {}).items()},
                    step_metrics={k: shaped(v)[:, :, :0] if not exp.student_epochs else shaped(v)
                                  for k, v in out.get("step_metrics", {}).items()},
                    trace_steps=(probe_steps(src.n, exp.batch_size, exp.student_epochs, exp.trace_every)
                                 if exp.trace else None), n_runs=n_runs, seed=int(seed),
                    sweep=sweep, compile_s=t1 - t0, run_s=t2 - t1, devices=[str(d) for d in devices],
                    run_batch=batch, teachers=kept if keep_teachers or given is not None else None,
                    students=({s.name: jax.tree.map(shaped, out["students"][s.name]) for s in exp.students}
                              if keep_students else None),  # in table order (a pytree's dict comes back sorted)
                    finite=finite, teacher_cache=cache_state, teachers_given=given is not None,
                    teacher_cache_key=cache_key if cache_state else None)
    report = result.health_report()
    if report and on_divergence == "fail":
        raise DivergenceError(report, result, [result.health(v) for v in range(result.n_values)])
    if report:
        warnings.warn(report, DivergenceWarning, stacklevel=2)
    return result
