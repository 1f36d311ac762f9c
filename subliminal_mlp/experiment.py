"""The Figure-10 experiment (protocol.md §1): N runs of reference, teacher and four students.

Run ``i`` derives every key from ``fold_in(PRNGKey(seed), i)``, so its numbers do not depend on
how many runs are made (except the cross-model students, see below), on how runs are batched,
or on how many devices share them. Within a run:

* ``reference``: the shared initialisation θ0 ~ N(0, 1/fan_in);
* ``teacher``: θ0 trained on the task (class cross-entropy);
* ``student_aux`` / ``student_all``: θ0 distilled on the teacher's aux / all logits over noise;
* ``cross_aux`` / ``cross_all``: the same students started from the reference of run
  ``(i + 1) mod max(N, 2)`` — a different initialisation, same teacher, same noise.

Variants are config fields: what the students are distilled on (``student_inputs``,
``input_mix``), the KL ``temperature``, and noise added to the shared-init students' start
(``init_noise``, ``init_noise_kind``). Fields in :data:`TRACED_FIELDS` can take several values in
one program (:func:`run_traced_sweep`).

The whole experiment is one jitted program. The run axis is split over all local devices with
``shard_map``; on each device ``lax.map(..., batch_size=run_batch)`` advances ``run_batch`` runs
together (a ``vmap``) and loops over the groups. The teacher phase runs for all runs first, then
the distillation phase, in which the teacher's logits on each noise batch are computed once and
shared by the four students that imitate it, and all six models are evaluated. Memory grows with
``run_batch``, not with N: noise is generated batch by batch and nothing is stored per run beyond
the teacher's parameters.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .internal import compile_program
from .config import MODELS, Config, ConfigError
from .model import accuracy, concat_params, init_params, logit_mask, perturbed, stack_params
from .training import distill_students, distillation_inputs, train_teacher

# Key streams within a run (5-7 are used by the trait experiment only).
_INIT, _TEACHER_SHUFFLE, _NOISE, _STUDENT_SHUFFLE, _INIT_NOISE = 0, 1, 2, 3, 4
_TRAIT_SHUFFLE, _HELD_OUT_NOISE, _SAMPLES = 5, 6, 7
#: Which reference each distilled student starts from, and which logits it imitates.
STUDENTS = (("student_aux", "own", "aux"), ("student_all", "own", "all"),
            ("cross_aux", "cross", "aux"), ("cross_all", "cross", "all"))


def run_key(seed: int, run: int | jax.Array) -> jax.Array:
    """The key of run ``run`` of the experiment seeded ``seed``."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), run)


def run_keys(seed: int, run: int | jax.Array) -> dict[str, jax.Array]:
    """Named keys of one run: ``init``, ``teacher_shuffle``, ``noise``, ``student_shuffle``,
    ``init_noise``, and for the trait experiment ``trait_shuffle``, ``held_out_noise``, ``samples``."""
    k = run_key(seed, run)
    streams = {"init": _INIT, "teacher_shuffle": _TEACHER_SHUFFLE, "noise": _NOISE,
               "student_shuffle": _STUDENT_SHUFFLE, "init_noise": _INIT_NOISE, "trait_shuffle": _TRAIT_SHUFFLE,
               "held_out_noise": _HELD_OUT_NOISE, "samples": _SAMPLES}
    return {name: jax.random.fold_in(k, i) for name, i in streams.items()}


def cross_run(run: int | jax.Array, n_runs: int):
    """The run whose reference initialises run ``run``'s cross-model students."""
    return (run + 1) % max(n_runs, 2)


def references(cfg: Config, seed, run) -> dict:
    """``{"own": θ0 of run, "cross": θ0 of run cross_run(run)}`` (the cross-model students' start).

    Inside a compiled program the two are computed once and stored (an optimisation barrier):
    otherwise XLA fuses the random initialisation into each of its consumers and draws it anew
    for every one of them.
    """
    own = init_params(run_keys(seed, run)["init"], cfg)
    cross = init_params(run_keys(seed, cross_run(run, cfg.n_runs))["init"], cfg)
    return lax.optimization_barrier({"own": own, "cross": cross})


def student_masks(cfg: Config) -> jax.Array:
    """The ``(len(STUDENTS), n_outputs)`` logit masks of the four students, in :data:`STUDENTS` order."""
    return jnp.stack([logit_mask(cfg, which) for _, _, which in STUDENTS])


def require_plain_students(cfg: Config, experiment: str) -> None:
    """Raise ``ConfigError`` unless ``cfg`` has uniform-noise inputs and unperturbed starts.

    For the experiments that build their own students on the paper's noise (``experiment`` names
    the function), so that a variant they do not implement is an error, not silently ignored.
    """
    if cfg.student_inputs != "uniform" or cfg.init_noise != 0:
        raise ConfigError(f"{experiment} distils its students on uniform noise from unperturbed starts; "
                          f"student_inputs = {cfg.student_inputs!r} and init_noise = {cfg.init_noise!r} are not "
                          "supported there. Use the defaults ('uniform', 0), or run_experiment / the sweep "
                          "command for these variants.")


def default_run_batch(cfg: Config, platform: str, n_local: int) -> int:
    """Runs advanced together per device: 1 on CPU (the matmuls already fill the cores), more on GPU."""
    if cfg.run_batch is not None:
        return min(cfg.run_batch, n_local)
    return 1 if platform == "cpu" else min(n_local, 32)


#: Config fields whose values keep every array shape: a sweep over them runs as one program, the
#: values entering as traced arrays beside the run index.
TRACED_FIELDS = ("learning_rate", "seed", "temperature", "input_mix", "init_noise")


def make_program(cfg: Config, mesh: Mesh, run_batch: int, tick: Optional[Callable[[int, Any], None]] = None):
    """The jitted experiment: ``(jobs, train_x, train_y, test_x, test_y, pool) -> accuracies (J, 6)``.

    ``jobs`` maps ``"run"`` to the run index of each job and may map fields of
    :data:`TRACED_FIELDS` to per-job values that replace the config's (a sweep in one program);
    its arrays are sharded over ``mesh``'s ``"runs"`` axis, the data are replicated. ``pool`` holds
    the images the students are distilled on when ``cfg.student_inputs`` needs images.
    ``tick(phase, epoch)`` is called on the host once per job and epoch (phase 0: teacher,
    1: students) when given.
    """
    masks = student_masks(cfg)
    teacher_tick = None if tick is None else (lambda e: jax.debug.callback(tick, 0, e))
    student_tick = None if tick is None else (lambda e: jax.debug.callback(tick, 1, e))

    def per_device(jobs, train_x, train_y, test_x, test_y, pool):
        def teacher_of(job):
            keys = run_keys(job.get("seed", cfg.seed), job["run"])
            ref = init_params(keys["init"], cfg)
            return train_teacher(ref, train_x, train_y, keys["teacher_shuffle"], cfg, teacher_tick,
                                 learning_rate=job.get("learning_rate"))

        def students_and_accuracies(args):
            job, teacher = args
            seed, run = job.get("seed", cfg.seed), job["run"]
            keys = run_keys(seed, run)
            refs = references(cfg, seed, run)
            starts = dict(refs)
            sigma = job.get("init_noise", cfg.init_noise)
            if "init_noise" in job or cfg.init_noise > 0:  # perturb the shared-init students' start
                away = (jax.tree.map(jnp.subtract, teacher, refs["own"])
                        if cfg.init_noise_kind == "orthogonal" else None)
                starts["own"] = perturbed(refs["own"], keys["init_noise"], sigma, away)
            start = stack_params(*[starts[r] for _, r, _ in STUDENTS])
            inputs, n_inputs = distillation_inputs(cfg, keys["noise"], pool, job.get("input_mix"))
            students = distill_students(start, teacher, masks, keys["noise"], keys["student_shuffle"],
                                        cfg, student_tick, learning_rate=job.get("learning_rate"),
                                        inputs=inputs, n_inputs=n_inputs, temperature=job.get("temperature"))
            models = concat_params(stack_params(refs["own"], teacher), students)
            return jax.vmap(accuracy, in_axes=(0, None, None, None))(models, test_x, test_y, cfg.n_classes)

        teachers = lax.map(teacher_of, jobs, batch_size=run_batch)
        return lax.map(students_and_accuracies, (jobs, teachers), batch_size=run_batch)

    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=(P("runs"), P(), P(), P(), P(), P()),
                            out_specs=P("runs"), check_vma=False)
    return jax.jit(sharded)


@dataclasses.dataclass
class ExperimentResult:
    """Per-run test accuracies of the six models, with what is needed to reproduce them."""

    config: Config
    accuracies: np.ndarray  # (n_runs, 6), columns in MODELS order
    compile_s: float
    run_s: float
    devices: list[str]
    run_batch: int
    values_in_program: int = 1  # >1 when this result came from a sweep run as one program

    def model_accuracies(self, name: str) -> np.ndarray:
        """The ``n_runs`` test accuracies of model ``name`` (one of ``MODELS``)."""
        return self.accuracies[:, MODELS.index(name)]


class RunProgress:
    """A tqdm bar over the runs of a compiled program, advanced from inside it.

    ``after(value)`` (called while tracing a run) advances the bar when ``value`` has been
    computed, through ``jax.debug.callback``; the bar opens on ``with`` (after compilation) and is a
    no-op when ``enabled`` is False::

        bar = RunProgress(n_runs, "runs", enabled=progress)
        ... inside the traced run: bar.after(result) ...
        with bar:
            out = compiled(...)
    """

    def __init__(self, total: int, desc: str, enabled: bool = True):
        self.total, self.desc, self.enabled, self.bar = total, desc, enabled, None

    def after(self, value) -> None:
        if self.enabled:
            jax.debug.callback(self._tick, value)

    def _tick(self, _value) -> None:
        if self.bar is not None and self.bar.n < self.bar.total:
            self.bar.update(1)

    def __enter__(self) -> "RunProgress":
        if self.enabled:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, desc=self.desc, unit="run")
        return self

    def __exit__(self, *exc) -> None:
        if self.bar is not None:
            jax.effects_barrier()  # let the last callbacks land before closing
            self.bar.close()
            self.bar = None


def map_runs(one_run: Callable, n_runs: int, args: tuple, bar: Optional[RunProgress] = None):
    """``lax.map(lambda r: one_run(r, *args), arange(n_runs))`` as one jitted program, timed.

    For the experiments whose runs are independent: every run is traced once and the program loops
    over them on the device. Returns ``(outputs on the host, compile_s, run_s)``; ``bar`` (a
    :class:`RunProgress` that ``one_run`` advances) is opened after compilation.
    """
    program = jax.jit(lambda runs, *a: lax.map(lambda r: one_run(r, *a), runs))
    runs = jnp.arange(n_runs)
    t0 = time.perf_counter()
    compiled = compile_program(program, runs, *args)
    t1 = time.perf_counter()
    with bar or RunProgress(n_runs, "", enabled=False):
        out = jax.device_get(compiled(runs, *args))
    return out, t1 - t0, time.perf_counter() - t1


class _Progress:
    """tqdm bars for the teacher and distillation phases, advanced by the program's callbacks."""

    def __init__(self, cfg: Config, n_values: int = 1):
        n = cfg.n_runs * n_values
        self.totals = (n * cfg.teacher_epochs, n * cfg.student_epochs)
        self.bars: list = []

    def start(self) -> None:
        """Open the bars (after compilation, so that their clocks time the run only)."""
        from tqdm.auto import tqdm

        self.bars = [tqdm(total=self.totals[0], desc="teacher training   ", unit="epoch", position=0),
                     tqdm(total=self.totals[1], desc="student distillation", unit="epoch", position=1)]

    def tick(self, phase, epoch) -> None:
        bar = self.bars[int(phase)]
        if bar.n == 0:
            bar.reset()  # start this phase's clock at its first epoch, not when the bars opened
        if bar.n < bar.total:
            bar.update(1)

    def close(self) -> None:
        for bar in self.bars:
            bar.close()


def run_experiment(cfg: Config, data, *, progress: bool = False, devices: Optional[list] = None,
                   log: Callable[[str], None] = lambda s: None, pool=None) -> ExperimentResult:
    """Run the Figure-10 protocol for ``cfg.n_runs`` runs on ``data`` (a ``data.Dataset``).

    ``devices`` defaults to every local device; the run axis is padded to a multiple of their
    count and the padding dropped. With ``progress=True`` a bar per phase is shown. Compilation is
    timed apart from the run. ``pool``: the images of ``student_inputs = "fashion-mnist"`` (see
    :func:`input_pool`).
    """
    return run_traced_sweep(cfg, data, progress=progress, devices=devices, log=log, pool=pool)[0]


def input_pool(cfg: Config, data, pool=None, data_dir=None):
    """The image pool the students draw from: the task's training images, or Fashion-MNIST's."""
    if pool is not None:
        return pool
    if cfg.student_inputs == "fashion-mnist":
        from .data import load_dataset

        return load_dataset("fashion-mnist", data_dir).train_images
    return data.train_images  # also passed (and ignored) for noise inputs


def run_traced_sweep(cfg: Config, data, field: Optional[str] = None, values: Sequence = (), *,
                     progress: bool = False, devices: Optional[list] = None,
                     log: Callable[[str], None] = lambda s: None, pool=None) -> list[ExperimentResult]:
    """The protocol for every value of a shape-preserving ``field`` (one of :data:`TRACED_FIELDS`).

    All ``len(values) × n_runs`` jobs run as *one* compiled program: the values enter as traced
    arrays beside the run indices. Returns one :class:`ExperimentResult` per value (with
    ``cfg.replace(field=value)`` as its config); their timings are those of the whole program.
    Without ``field``, runs ``cfg`` alone (this is :func:`run_experiment`).
    """
    if field is None:
        configs = [cfg]
    elif field not in TRACED_FIELDS:
        raise ValueError(f"field = {field!r} changes array shapes or code; only {TRACED_FIELDS} can be "
                         "swept inside one program (use subliminal_mlp.sweep for the others).")
    else:
        configs = [cfg.replace(**{field: v}) for v in values]
        if not configs:
            raise ValueError(f"no values given for {field}.")
    cfg.check_data(data.train_images.shape[0], data.train_images.shape[1])
    devices = list(devices or jax.local_devices())
    n_dev, n_val, n_runs = len(devices), len(configs), cfg.n_runs
    n_jobs = n_val * n_runs
    n_pad = -(-n_jobs // n_dev) * n_dev
    pick = np.minimum(np.arange(n_pad), n_jobs - 1)  # padding repeats the last job; dropped below
    jobs = {"run": (pick % n_runs).astype(np.int32)}
    if field is not None:
        dtype = np.uint32 if field == "seed" else np.float32
        jobs[field] = np.asarray([getattr(c, field) for c in configs], dtype)[pick // n_runs]
    run_batch = default_run_batch(cfg, devices[0].platform, n_pad // n_dev)
    mesh = Mesh(np.array(devices), ("runs",))
    bars = _Progress(cfg, n_val) if progress else None
    program = make_program(cfg, mesh, run_batch, bars.tick if bars else None)

    replicated = NamedSharding(mesh, P())
    pool = input_pool(cfg, data, pool)
    train_x = jax.device_put(data.train_images, replicated)
    if pool is data.train_images:
        pool = train_x  # the same buffer, not a second copy
    elif cfg.student_inputs in ("uniform", "gaussian"):
        pool = np.zeros((1, cfg.input_dim), np.float32)  # unused
    args = (jax.device_put(jobs, NamedSharding(mesh, P("runs"))), train_x,
            *(jax.device_put(a, replicated) for a in (data.train_labels, data.test_images, data.test_labels, pool)))
    log(f"compiling the experiment program ({n_jobs} runs on {n_dev} {devices[0].platform} device(s))...")
    t0 = time.perf_counter()
    compiled = compile_program(program, *args, platform=devices[0].platform)
    t1 = time.perf_counter()
    log(f"compiled in {t1 - t0:.1f} s; running")
    if bars:
        bars.start()
    try:
        acc = np.asarray(jax.block_until_ready(compiled(*args)))[:n_jobs].reshape(n_val, n_runs, len(MODELS))
    finally:
        if bars:
            bars.close()
    t2 = time.perf_counter()
    return [ExperimentResult(config=c, accuracies=acc[v], compile_s=t1 - t0, run_s=t2 - t1,
                             devices=[str(d) for d in devices], run_batch=run_batch, values_in_program=n_val)
            for v, c in enumerate(configs)]
