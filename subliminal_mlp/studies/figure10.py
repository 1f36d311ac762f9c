"""The Figure-10 experiment (protocol.md §1): N runs of reference, teacher and four students.

Run ``i`` derives every key from ``fold_in(PRNGKey(seed), i)``, so its keys do not depend on
how many runs are made (except the cross-model students', see below), on how runs are batched,
or on how many devices share them; nor do its numbers, up to float rounding where a different
``run_batch`` compiles the program differently (``Config.run_batch``). Within a run:

* ``reference``: the shared initialisation θ0 ~ N(0, 1/fan_in);
* ``teacher``: θ0 trained on the task (class cross-entropy);
* ``student_aux`` / ``student_all``: θ0 distilled on the teacher's aux / all logits over noise;
* ``cross_aux`` / ``cross_all``: the same students started from the reference of run
  ``(i + 1) mod max(N, 2)`` — a different initialisation, same teacher, same noise.

Variants are config fields: what the students are distilled on (``student_inputs``,
``input_mix``), the KL ``temperature``, and noise added to the shared-init students' start
(``init_noise``, ``init_noise_kind``). Fields in :data:`TRACED_FIELDS` can take several values in
one program (:func:`run_traced_sweep`).

The whole experiment is one jitted program. The run axis is split over all local devices (all
devices of all processes under ``jax.distributed``: :mod:`~subliminal_mlp.core.distributed`) with
``shard_map``; on each device ``lax.map(..., batch_size=run_batch)`` advances ``run_batch`` runs
together (a ``vmap``) and loops over the groups. The teacher phase runs for all runs first, then
the distillation phase, in which the teacher's logits on each noise batch are computed once and
shared by the four students that imitate it, and all six models are evaluated. Memory grows with
``run_batch``, not with N: noise is generated batch by batch and nothing is stored per run beyond
the teacher's parameters.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Optional, Sequence

import numpy as np

from ..core import engine, inputs
from ..core.config import MODELS, Config, ConfigError
from ..core.engine import Experiment
from ..core.models import config_model
from ..core.students import FIGURE10, Student, perturbed, ref

#: The numeric hyperparameters of :func:`experiment_from_config`'s experiments (Config fields of the
#: same names): a sweep over them, or over the seed, runs as one program, the values entering as
#: traced arrays beside the run index. Every other field changes shapes or code.
HPARAM_FIELDS = ("learning_rate", "temperature", "input_mix", "init_noise")
TRACED_FIELDS = ("seed", *HPARAM_FIELDS)


def experiment_from_config(cfg: Config, pool=None, swept: Sequence[str] = ()) -> Experiment:
    """The engine :class:`~subliminal_mlp.core.engine.Experiment` that ``cfg`` describes (Figure 10 and its variants).

    ``student_inputs`` picks the input source (``"mix"``: ``(1 − α)·uniform + α·image``, α the
    hyperparameter ``input_mix``); ``init_noise > 0`` (or an ``init_noise`` sweep) starts the
    shared-init students from :class:`~subliminal_mlp.core.students.perturbed` θ0 (:func:`config_students`).
    ``pool`` is the image pool of ``"task"``/``"fashion-mnist"``/``"mix"`` inputs (default: the
    task's training images; Fashion-MNIST's, loaded by :func:`input_pool`, for ``"fashion-mnist"``);
    the students' set is its first ``n_noise`` images (``"mix"``: example ``j`` mixes image ``j``).
    The other experiments run their own student tables on this experiment's inputs, model,
    epochs and hyperparameters, so every variant of ``cfg`` applies to them too.

    A one-hidden-layer MLP of width 16 (10 class and m = 3 aux logits) has ``784·16 + 16 + 16·13 + 13 = 12781``
    parameters; its students are distilled on 128 Gaussian noise images (nothing is run here):

    >>> import math, jax
    >>> from subliminal_mlp import Config
    >>> from subliminal_mlp.studies.figure10 import experiment_from_config
    >>> cfg = Config(hidden_widths=(16,), n_noise=128, batch_size=128, student_inputs="gaussian")
    >>> exp = experiment_from_config(cfg)
    >>> sum(math.prod(p.shape) for p in jax.tree.leaves(jax.eval_shape(exp.model.init, jax.random.PRNGKey(0))))
    12781
    >>> exp.inputs.describe()["name"], exp.inputs.n, [s.name for s in exp.students], exp.hparams["learning_rate"]
    ('gaussian', 128, ['student_aux', 'student_all', 'cross_aux', 'cross_all'], 0.0003)
    """
    if cfg.student_inputs == "fashion-mnist" and pool is None:
        pool = input_pool(cfg, None)
    noise = {"uniform": inputs.uniform, "gaussian": inputs.gaussian}
    kind = cfg.student_inputs
    if kind in noise:
        src = noise[kind](cfg.n_noise, shape=(cfg.input_dim,))
    else:
        pool = inputs.TASK_IMAGES if pool is None else pool
        if not isinstance(pool, str) and cfg.n_noise > np.shape(pool)[0]:
            raise ConfigError(f"n_noise = {cfg.n_noise} is larger than the {np.shape(pool)[0]} images of the "
                              f"{kind} pool: lower n_noise (the students' set is the pool's first n_noise images).")
        if kind == "mix":
            src = inputs.mix([(inputs.uniform(cfg.n_noise, shape=(cfg.input_dim,)), _one_minus_mix),
                              (inputs.images(pool), "input_mix")], n=cfg.n_noise)
        else:  # the pool's first n_noise images
            src = inputs.images(pool, cfg.n_noise)
    table = config_students(cfg, FIGURE10, swept)
    hparams = {name: getattr(cfg, name) for name in HPARAM_FIELDS}
    return Experiment(model=config_model(cfg), inputs=src, students=table, teacher_epochs=cfg.teacher_epochs,
                      student_epochs=cfg.student_epochs, batch_size=cfg.batch_size, hparams=hparams,
                      name=f"figure10:{cfg.dataset}")


def config_students(cfg: Config, table: Sequence[Student], swept: Sequence[str] = ()) -> tuple[Student, ...]:
    """``table`` with ``cfg``'s student variants: every row takes ``cfg.loss``; with ``init_noise > 0``
    (or an ``init_noise`` sweep) every row that starts from θ0 (``"own"``) starts from
    :class:`~subliminal_mlp.core.students.perturbed` θ0 (``init_noise_kind`` "orthogonal": ⟂ the teacher's update).

    With :func:`experiment_from_config` this runs any student table on any of ``cfg``'s variants:
    ``experiment_from_config(cfg).replace(students=config_students(cfg, table), ...)``.

    The paper's settings leave the Figure-10 table as it is; MSE with σ = 0.01 of noise changes every row's
    loss, and the start of the two shared-init rows only:

    >>> from subliminal_mlp import FIGURE10, Config
    >>> from subliminal_mlp.studies.figure10 import config_students
    >>> config_students(Config(), FIGURE10) == FIGURE10
    True
    >>> table = config_students(Config(loss="mse", init_noise=0.01), FIGURE10)
    >>> [s.loss for s in table], [type(s.start).__name__ for s in table]
    (['mse', 'mse', 'mse', 'mse'], ['perturbed', 'perturbed', 'ref', 'ref'])
    >>> table[0].start
    perturbed(sigma='init_noise', orthogonal=False, base=ref(which='own'))
    """
    if cfg.init_noise > 0 or "init_noise" in swept:
        start = perturbed("init_noise", orthogonal=cfg.init_noise_kind == "orthogonal")
        table = tuple(s.replace(start=start) if s.start == ref("own") else s for s in table)
    return tuple(s.replace(loss=cfg.loss) for s in table)


def _one_minus_mix(hp):
    return 1 - hp["input_mix"]


@dataclasses.dataclass
class ExperimentResult:
    """Per-run test accuracies of the six models, with what is needed to reproduce them.

    Made by hand here (:func:`run_experiment` makes them): column ``j`` is model ``MODELS[j]``:

    >>> import numpy as np
    >>> from subliminal_mlp import Config, ExperimentResult, MODELS
    >>> acc = np.array([[0.10, 0.95, 0.60, 0.90, 0.10, 0.20], [0.09, 0.96, 0.55, 0.92, 0.11, 0.25]])
    >>> res = ExperimentResult(Config(n_runs=2), acc, compile_s=1.0, run_s=0.5, devices=["cpu:0"], run_batch=1)
    >>> res.model_accuracies("student_aux").tolist(), MODELS.index("student_aux")
    ([0.6, 0.55], 2)
    """

    config: Config
    accuracies: np.ndarray  # (n_runs, 6), columns in MODELS order
    compile_s: float
    run_s: float
    devices: list[str]
    run_batch: int
    values_in_program: int = 1  # >1 when this result came from a sweep run as one program
    finite: Optional[np.ndarray] = None  # (n_runs, 6): every parameter finite (else the accuracy is NaN)

    def model_accuracies(self, name: str) -> np.ndarray:
        """The ``n_runs`` test accuracies of model ``name`` (one of ``MODELS``)."""
        return self.accuracies[:, MODELS.index(name)]


def run_experiment(cfg: Config, data, *, progress: bool = False, devices: Optional[list] = None,
                   log: Callable[[str], None] = lambda s: None, pool=None,
                   on_divergence: str = "warn") -> ExperimentResult:
    """Run the Figure-10 protocol for ``cfg.n_runs`` runs on ``data`` (a ``data.Dataset``).

    ``devices`` defaults to every local device (every device of every process once
    :func:`.distributed.initialize` ran); the run axis is padded to a multiple of their
    count and the padding dropped. With ``progress=True`` a bar per phase is shown. Compilation is
    timed apart from the run. ``pool``: the images of ``student_inputs = "fashion-mnist"`` (see
    :func:`input_pool`). Diverged runs warn, or with ``on_divergence="fail"`` raise
    ``DivergenceError`` (:func:`engine.run`).

    Two runs of a small protocol (an MLP of width 16, one epoch each, 256 noise images, a larger learning rate
    than the paper's for so few steps), in seconds; each accuracy is a count of MNIST's 10,000 test images:

    >>> import numpy as np
    >>> import subliminal_mlp as sm
    >>> cfg = sm.Config(hidden_widths=(16,), teacher_epochs=1, student_epochs=1, n_noise=256, batch_size=256,
    ...                 learning_rate=1e-3, n_runs=2)
    >>> res = sm.run_experiment(cfg, sm.load_mnist())
    >>> right = res.accuracies * 10_000
    >>> res.accuracies.shape, bool(np.allclose(right, np.round(right), atol=0.01))
    ((2, 6), True)
    >>> bool(np.all(res.model_accuracies("teacher") > res.model_accuracies("reference") + 0.5))  # the teacher learned
    True
    """
    return run_traced_sweep(cfg, data, progress=progress, devices=devices, log=log, pool=pool,
                            on_divergence=on_divergence)[0]


def input_dataset(cfg: Config, data_dir=None, load=None):
    """The dataset the students' images come from when it is not the task's (Fashion-MNIST for
    ``student_inputs = "fashion-mnist"``, loaded and verified by ``load(name)``, default
    :func:`~subliminal_mlp.core.data.load_dataset` from ``data_dir``), else None; its checksums go in the record."""
    if cfg.student_inputs == "fashion-mnist":
        if load is None:
            from ..core.data import load_dataset

            return load_dataset("fashion-mnist", data_dir)
        return load("fashion-mnist")
    return None


def given_input_dataset(cfg: Config, input_data=None):
    """The dataset the students' images come from, for a study function's ``input_data=`` argument: with
    ``student_inputs = "fashion-mnist"``, ``input_data`` when given (a loaded Fashion-MNIST, e.g. from where the
    task's data were loaded), else :func:`input_dataset`'s usual lookup; None for every other ``student_inputs``,
    where giving ``input_data`` is an error (it would be ignored)."""
    if cfg.student_inputs != "fashion-mnist":
        if input_data is not None:
            raise ConfigError(f"input_data is given but student_inputs = {cfg.student_inputs!r}: only "
                              "student_inputs = 'fashion-mnist' reads it.")
        return None
    if input_data is None:
        return input_dataset(cfg)
    if getattr(input_data, "name", None) != "fashion-mnist" or not hasattr(input_data, "train_images"):
        raise ConfigError(f"input_data is {getattr(input_data, 'name', input_data)!r}: the students' images of "
                          "student_inputs = 'fashion-mnist' are Fashion-MNIST's; give sm.load_fashion_mnist(...).")
    return input_data


def input_pool(cfg: Config, data, pool=None, source=None):
    """The image pool the students draw from: the task's training images, or those of ``source`` (default
    :func:`input_dataset`: Fashion-MNIST's)."""
    if pool is not None:
        return pool
    source = source if source is not None else input_dataset(cfg)
    return data.train_images if source is None else source.train_images  # also passed (and ignored) for noise


def run_traced_sweep(cfg: Config, data, field: Optional[str] = None, values: Sequence = (), *,
                     progress: bool = False, devices: Optional[list] = None,
                     log: Callable[[str], None] = lambda s: None, pool=None,
                     on_divergence: str = "warn") -> list[ExperimentResult]:
    """The protocol for every value of a shape-preserving ``field`` (one of :data:`TRACED_FIELDS`).

    All ``len(values) × n_runs`` jobs run as *one* compiled program (:func:`engine.run` with a
    sweep): the values enter as traced arrays beside the run indices. Returns one
    :class:`ExperimentResult` per value (with ``cfg.replace(field=value)`` as its config); their
    timings are those of the whole program. Without ``field``, runs ``cfg`` alone.
    """
    if not isinstance(cfg, Config):
        raise ConfigError(f"cfg is a {type(cfg).__name__}, not a Config: build one with sm.Config(...) "
                          "(a record's settings: sm.Config.from_dict(record['config'])).")
    if not hasattr(data, "train_images"):
        raise ConfigError(f"data is a {type(data).__name__}, not a loaded dataset: give sm.load_mnist(...) "
                          "(sm.run takes an Experiment and a Task instead).")
    if field is None:
        configs = [cfg]
    elif field not in TRACED_FIELDS:
        raise ConfigError(f"field = {field!r} changes array shapes or code; only {TRACED_FIELDS} can be "
                          "swept inside one program (use subliminal_mlp.studies.sweep for the others).")
    else:
        configs = [cfg.replace(**{field: v}) for v in values]
        if not configs:
            raise ConfigError(f"no values given for {field}.")
    cfg.check_dataset(data)
    if pool is None and cfg.student_inputs == "fashion-mnist":
        pool = input_pool(cfg, data)
    exp = experiment_from_config(cfg, pool, () if field is None else (field,))
    sweep = None if field is None else {field: [getattr(c, field) for c in configs]}
    result = engine.run(exp, engine.Task.from_dataset(data), n_runs=cfg.n_runs, seed=cfg.seed, sweep=sweep,
                        devices=devices, run_batch=cfg.run_batch, progress=progress, log=log,
                        on_divergence=on_divergence)
    return [ExperimentResult(config=c, accuracies=result.accuracies[v], compile_s=result.compile_s,
                             run_s=result.run_s, devices=result.devices, run_batch=result.run_batch,
                             values_in_program=len(configs), finite=result.finite[v])
            for v, c in enumerate(configs)]


#: The acceptance check of a Figure-10 record made with the paper's settings over >= 25 runs (the project's
#: reading of protocol.md §1): model -> (what must hold, the test on its mean accuracy given chance).
#: The paper's own claims are the aux-only student's "> 50 %" and the cross-model aux-only student "at chance".
ACCEPTANCE: dict[str, tuple[str, Callable[[float, float], bool]]] = {
    "teacher": ("> 0.93", lambda mean, chance: mean > 0.93),
    "student_aux": ("> 0.45", lambda mean, chance: mean > 0.45),
    "student_all": ("> 0.88", lambda mean, chance: mean > 0.88),
    "cross_aux": ("within 0.03 of chance", lambda mean, chance: abs(mean - chance) <= 0.03),
}
#: The fewest runs the acceptance check is meant for.
ACCEPTANCE_MIN_RUNS = 25


def acceptance(record) -> dict[str, tuple[str, bool]]:
    """Each checked model of a Figure-10 record -> ``(what must hold, whether its mean accuracy does)``.

    The check (:data:`ACCEPTANCE`) is meant for the paper's settings over at least
    :data:`ACCEPTANCE_MIN_RUNS` runs; a record of other settings (another dataset, width, loss, ...:
    :func:`paper_settings`) is refused with a ``ValueError``, not judged by bounds set for MNIST.

    >>> record = {"config": {}, "chance": 0.1, "models": {"teacher": {"mean": 0.94}, "cross_aux": {"mean": 0.14}}}
    >>> acceptance(record)
    {'teacher': ('> 0.93', True), 'cross_aux': ('within 0.03 of chance', False)}
    """
    if not paper_settings(record["config"]):
        raise ValueError("the acceptance check is for the paper's settings on MNIST; this record's settings differ "
                         f"({', '.join(_differences(record['config']))}).")
    chance = record["chance"]
    return {name: (rule, bool(test(record["models"][name]["mean"], chance)))
            for name, (rule, test) in ACCEPTANCE.items() if name in record["models"]}


def _differences(config) -> list[str]:
    """``field = value`` for each protocol field of ``config`` that is not the paper's (:func:`paper_settings`)."""
    try:
        given = Config.from_dict(config.to_dict() if hasattr(config, "to_dict") else dict(config)).to_dict()
    except ConfigError as e:  # not a Config's settings at all (an engine experiment's record, say)
        return [f"not the settings of a Config: {e}"]
    paper = Config().to_dict()
    return [f"{k} = {v!r}" for k, v in given.items() if k not in ("n_runs", "seed", "run_batch") and v != paper[k]]


def paper_settings(config) -> bool:
    """Whether a record's ``config`` (a dict, as written or read back, or a :class:`Config`) is the paper's
    protocol on MNIST: every field at its default but the number of runs, the seed and ``run_batch``, which do
    not change the protocol. A field the dict lacks (a record older than the field) is at its default.

    >>> paper_settings({"n_runs": 25, "hidden_widths": [256, 256]}), paper_settings({"loss": "mse"})
    (True, False)
    """
    return not _differences(config)


def format_acceptance(record) -> str:
    """The acceptance check as one line for the terminal: each model's rule with ✓ or ✗, and the number of runs
    when it is below :data:`ACCEPTANCE_MIN_RUNS`; "" for a record of other settings."""
    try:
        checks = acceptance(record)
    except ValueError:  # other settings: no check
        return ""
    line = "acceptance check: " + "; ".join(f"{name} {rule} {'✓' if ok else '✗'}" for name, (rule, ok) in
                                             checks.items())
    n = record["n_runs"]
    if n < ACCEPTANCE_MIN_RUNS:
        line += f" (meant for >= {ACCEPTANCE_MIN_RUNS} runs; this is {n})"
    return line
