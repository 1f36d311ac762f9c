"""The ``subliminal-mlp`` command line, and the error handling of the ``experiments/`` scripts.

Errors a user can fix (an invalid setting, missing or damaged data, an output destination that
cannot be written, a distributed runtime that cannot start) are one line, ``subliminal-mlp: error: ...``
(an ``experiments/`` script's own name in place of ``subliminal-mlp``), exit status 2, found before any
compute; runs that diverged under ``--on-divergence fail`` exit with status 3 after writing
nothing; a diverged run under the default ``--on-divergence warn`` is reported as
``subliminal-mlp: warning: ...`` on stderr (the record's ``health`` and the figure say so too).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import sys
import threading
import time
import warnings
from typing import Any, Callable, Mapping, NoReturn, Optional, Sequence

from ..core.config import DATASETS, INIT_NOISE_KINDS, LOSSES, STUDENT_INPUTS, Config, ConfigError

PROG = "subliminal-mlp"


class _Given(argparse.Action):
    """Store the value, and remember that the flag was given (``namespace.given``): a sweep refuses a
    flag for the field it sweeps even when it repeats the default."""

    def __call__(self, parser, namespace, values, option_string=None):
        setattr(namespace, self.dest, values)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def _config_args(p: argparse.ArgumentParser) -> None:
    d = Config()
    g = p.add_argument_group("protocol (defaults: the paper's settings)")
    g.add_argument = _remembering(g.add_argument)
    g.add_argument("--seeds", "--runs", dest="seeds", type=int, default=d.n_runs, metavar="N",
                   help=f"number of runs, one seed each (default {d.n_runs})")
    g.add_argument("--seed", type=int, default=d.seed, help="base seed; run i uses fold_in(seed, i) (default %(default)s)")
    g.add_argument("--epochs", type=int, default=None, help="teacher and student epochs (sets both)")
    g.add_argument("--teacher-epochs", type=int, default=None, help=f"(default {d.teacher_epochs})")
    g.add_argument("--student-epochs", type=int, default=None, help=f"(default {d.student_epochs})")
    g.add_argument("--aux-logits", "-m", type=int, default=d.aux_logits, help="number of auxiliary logits m (default %(default)s)")
    g.add_argument("--loss", choices=LOSSES, default=d.loss, help="distillation loss: kl (paper, the default) or mse")
    g.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden_widths), metavar="W",
                   help="hidden layer widths (default 256 256)")
    g.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate of the teacher and the students (default %(default)s)")
    g.add_argument("--batch-size", type=int, default=d.batch_size, help="(default %(default)s)")
    g.add_argument("--n-noise", type=int, default=d.n_noise,
                   help="size of the fixed distillation set per run (image inputs: the pool's first N images; "
                        "default %(default)s)")
    g.add_argument("--dataset", choices=DATASETS, default=d.dataset, help="the teacher's task (default %(default)s)")
    g.add_argument("--temperature", type=float, default=d.temperature, help="KL distillation temperature (default %(default)s)")
    g.add_argument("--student-inputs", choices=STUDENT_INPUTS, default=d.student_inputs,
                   help="what the students are distilled on (default: uniform noise, the paper)")
    g.add_argument("--input-mix", type=float, default=d.input_mix,
                   help="image weight α of --student-inputs mix (α·image + (1−α)·noise; default %(default)s)")
    g.add_argument("--init-noise", type=float, default=d.init_noise, metavar="SIGMA",
                   help="σ of N(0, σ²) noise added to the shared-init students' start (default 0)")
    g.add_argument("--init-noise-kind", choices=INIT_NOISE_KINDS, default=d.init_noise_kind,
                   help="isotropic (default), or orthogonal: without its component along the teacher's update")
    g.add_argument("--run-batch", type=int, default=None, help="runs advanced together per device")


def _remembering(add_argument: Callable) -> Callable:
    """``add_argument`` whose stored flags are :class:`_Given`."""
    def add(*names, **kw):
        return add_argument(*names, **({"action": _Given, **kw} if "action" not in kw else kw))
    return add


def _run_args(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--data-dir", default=None,
                   help="data root holding mnist/ (and fashion-mnist/ for --dataset or --student-inputs fashion-mnist; "
                        "else $SUBLIMINAL_MLP_DATA, the cache, then a download)")
    p.add_argument("--out", default=out, help=f"output directory (default {out})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--on-divergence", choices=("warn", "fail"), default="warn",
                   help="runs with non-finite parameters, or a teacher no better than its untrained reference: "
                        "warn and mark them (default), or fail (exit status 3) without writing results")


def _distributed_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("several processes or hosts (JAX's distributed runtime; "
                             "see the source's docs/distributed.md)")
    g.add_argument("--distributed", action="store_true", default=argparse.SUPPRESS,
                   help="start jax.distributed (also: $SUBLIMINAL_MLP_DISTRIBUTED=1): shard the runs over every "
                        "device of every process; process 0 writes. Under SLURM / Open MPI nothing else is needed")
    g.add_argument("--coordinator-address", default=argparse.SUPPRESS, metavar="HOST:PORT",
                   help="process 0's address and a free port (else $JAX_COORDINATOR_ADDRESS or the cluster's)")
    g.add_argument("--num-processes", type=int, default=argparse.SUPPRESS, metavar="N",
                   help="number of processes (else $JAX_NUM_PROCESSES or the cluster's)")
    g.add_argument("--process-id", type=int, default=argparse.SUPPRESS, metavar="I",
                   help="this process's id, 0..N-1 (else $JAX_PROCESS_ID or the cluster's)")


def _layout(a: argparse.Namespace) -> dict[str, Any]:
    """The process layout given on the command line (``--coordinator-address``, ...)."""
    return {k: getattr(a, k) for k in ("coordinator_address", "num_processes", "process_id") if hasattr(a, k)}


def _distributed_requested(a: argparse.Namespace) -> bool:
    """Whether the command starts JAX's distributed runtime (``--distributed``, a process layout, or
    $SUBLIMINAL_MLP_DISTRIBUTED)."""
    from ..core import distributed

    return bool(distributed.requested(getattr(a, "distributed", False)) or _layout(a))


def _start_distributed(a: argparse.Namespace) -> None:
    """``jax.distributed.initialize`` when ``--distributed`` (or a process layout, or $SUBLIMINAL_MLP_DISTRIBUTED) asks."""
    from ..core import distributed

    if _distributed_requested(a):
        info = distributed.initialize(**_layout(a))
        if info["process_count"] > 1:
            distributed.main_print(f"distributed: {info['process_count']} processes, {info['devices']} devices")


#: Each Config field and the argparse dest of the flag that sets it (``--epochs`` sets both epoch fields).
#: A sweep refuses the flag of the field it sweeps.
FIELD_DESTS = {"hidden_widths": "hidden", "aux_logits": "aux_logits", "learning_rate": "lr",
               "batch_size": "batch_size", "teacher_epochs": "teacher_epochs", "student_epochs": "student_epochs",
               "n_noise": "n_noise", "loss": "loss", "n_runs": "seeds", "seed": "seed", "dataset": "dataset",
               "run_batch": "run_batch", "temperature": "temperature", "student_inputs": "student_inputs",
               "input_mix": "input_mix", "init_noise": "init_noise", "init_noise_kind": "init_noise_kind"}


def _config_from(a: argparse.Namespace, **swept: Any) -> Config:
    """The command's Config from its flags; ``swept``: a sweep's field at one of its values (the flag's default
    for that field may not fit the other flags: ``sweep batch_size 64 128 --n-noise 256``)."""
    if a.epochs is not None and (a.teacher_epochs is not None or a.student_epochs is not None):
        raise ConfigError("give --epochs (both phases) or --teacher-epochs / --student-epochs, not both.")
    te, se = (a.epochs, a.epochs) if a.epochs is not None else (
        Config.teacher_epochs if a.teacher_epochs is None else a.teacher_epochs,
        Config.student_epochs if a.student_epochs is None else a.student_epochs)
    fields = {field: getattr(a, dest) for field, dest in FIELD_DESTS.items() if not field.endswith("_epochs")}
    try:
        return Config(**{**fields, "hidden_widths": tuple(a.hidden), "teacher_epochs": te, "student_epochs": se,
                         **swept})
    except ConfigError as e:  # "n_runs = 0 is invalid ...": name the flags given for the fields it names
        given, flags = getattr(a, "given", set()), []
        for field in re.findall(r"\b([a-z_]+)(?:\[\d+\])?(?: \(m\))? = ", str(e)):
            dest = "epochs" if field.endswith("_epochs") and "epochs" in given else FIELD_DESTS.get(field)
            flag = f"--{dest.replace('_', '-')}" if dest else None
            if field in swept and f"{field}: a value of the sweep" not in flags:
                flags.append(f"{field}: a value of the sweep")
            elif dest in given and field not in swept and flag not in flags:
                flags.append(flag)
        if not [f for f in flags if f.startswith("--")]:  # only defaults (and the sweep's own value): as it is
            raise
        raise ConfigError(f"{e} (from {', '.join(flags)})") from None


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from .reproduce import reproduce

    cfg = _config_from(a)
    reproduce(cfg, data_dir=a.data_dir, out_dir=a.out, stem=a.stem, progress=not a.no_progress,
              on_divergence=a.on_divergence)
    return 0


def _sweep_values(a: argparse.Namespace) -> list:
    """The sweep's typed values, after refusing what would be silently unused or repeated."""
    from ..studies.sweep import parse_values, value_label

    values = parse_values(a.param, a.values)
    dest = FIELD_DESTS.get(a.param)
    if dest in getattr(a, "given", ()):
        flag, given = "--" + dest.replace("_", "-"), getattr(a, dest)
        raise ConfigError(f"{flag} {' '.join(map(str, given)) if isinstance(given, list) else given} is not used: the "
                          f"sweep sets {a.param} to each of its values. Leave {flag} out.")
    if a.param.endswith("_epochs") and "epochs" in getattr(a, "given", ()):
        other = "--student-epochs" if a.param == "teacher_epochs" else "--teacher-epochs"
        raise ConfigError(f"--epochs {a.epochs} sets both phases, but the sweep sets {a.param} to each of its "
                          f"values: give {other} for the other phase instead.")
    labels = [value_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"repeated values in the sweep over {a.param}: {labels}." + (
            " A space separates two values; the widths of one value are joined by commas (256,256 is one value, "
            "256 256 two)." if a.param == "hidden_widths" else ""))
    return values


def _cmd_sweep(a: argparse.Namespace) -> int:
    from ..studies.sweep import run_sweep

    values = _sweep_values(a)
    run_sweep(a.param, values, _config_from(a, **{a.param: values[0]}), data_dir=a.data_dir, out_dir=a.out, resume=not a.no_resume,
              progress=not a.no_progress, on_divergence=a.on_divergence)
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from ..studies.demo import demo

    demo(a.data_dir, a.out, a.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=PROG,
        description="Subliminal learning in MLP classifiers: reproduce the paper's MNIST experiment "
                    "(Figure 10) and check its single-step gradient-alignment theorem.")
    from .. import __version__

    p.add_argument("--version", action="version", version=f"subliminal-mlp {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="run the paper's MNIST experiment (Figure 10)",
                       description="Teacher, aux-only and all-logit students, and cross-model controls, "
                                   "over N runs; writes JSON, CSV and the bar chart.")
    _config_args(r)
    _run_args(r, "results")
    r.add_argument("--stem", default="fig10", help="file name stem of the outputs (default %(default)s)")
    r.set_defaults(func=_cmd_reproduce)
    w = sub.add_parser("sweep", help="the Figure-10 protocol for each value of a config field",
                       description="Runs the protocol per value of PARAM (any Config field: aux_logits, "
                                   "hidden_widths as 512,512 or 512x512, learning_rate, loss, ...), writes a line "
                                   "plot, JSON and CSV; an interrupted sweep resumes from the finished values.")
    from ..studies.sweep import SWEEPABLE

    w.add_argument("param", help=f"the Config field to sweep: {', '.join(SWEEPABLE)}")
    w.add_argument("values", nargs="+", help="its values (hidden_widths: comma-separated widths)")
    _config_args(w)
    _run_args(w, "results/sweep")
    w.add_argument("--no-resume", action="store_true", help="recompute values that are already done")
    w.set_defaults(func=_cmd_sweep)
    d = sub.add_parser("demo", help="a one-minute teaching demo: one figure that tells the story",
                       description="One teacher, two students on noise (same and different initialisation); "
                                   "writes one figure (and its JSON record beside it) and says what it shows.")
    d.add_argument("--data-dir", default=None,
                   help="data root holding mnist/ (else $SUBLIMINAL_MLP_DATA, the cache, then a download)")
    d.add_argument("--out", default="results/demo.png", help="figure path (default results/demo.png; the record: the same stem, .json)")
    d.add_argument("--seed", type=int, default=0, help="seed of the teacher, students and noise (default 0)")
    d.set_defaults(func=_cmd_demo)
    from .figures import register as register_figures
    from .theorem import register as register_theorem

    register_theorem(sub)
    register_figures(sub)
    _distributed_args(p)  # before the command (subliminal-mlp --distributed reproduce) or after it
    for command in sub.choices.values():
        _distributed_args(command)
    return p


@contextlib.contextmanager
def _library_warnings(prog: str = PROG):
    """Show every DivergenceWarning (each one, not once), and every SettingWarning (e.g. a student that can never
    move), as ``<prog>: warning: ...`` on stderr; other warnings as Python shows them."""
    from ..core.config import SettingWarning
    from ..core.results import DivergenceWarning

    show = warnings.showwarning

    def shown(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, (DivergenceWarning, SettingWarning)):
            print(f"{prog}: warning: {message}", file=sys.stderr)
        else:
            show(message, category, filename, lineno, file, line)

    with warnings.catch_warnings():
        warnings.simplefilter("always", DivergenceWarning)
        warnings.showwarning = shown
        yield


def guarded(func: Callable[..., Any], *args: Any, **kwargs: Any) -> int:
    """``func(*args, **kwargs)`` as a command: its exit status, with the command line's error handling.

    An error a user can fix (``ConfigError``, e.g. an invalid setting or an output destination that
    cannot be written, ``DataError``, a missing or damaged record, ``RecordError``, ...) prints ``subliminal-mlp: error: ...`` and returns 2; a
    ``DivergenceError`` (``on_divergence="fail"``) prints it and returns 3; a program that needs more
    memory than the device has prints what to lower and returns 1. Ctrl-C prints one line, not
    a traceback, and returns 130 (SIGTERM, under :func:`entry`: 143); a reader that leaves (``| head``)
    ends the command quietly (1). A return value that is not an int (a record) counts as success (0).
    """

    return _guarded(PROG, lambda: func(*args, **kwargs))


def _guarded(prog: str, command: Callable[[], Any]) -> int:
    """:func:`guarded`, its messages starting ``<prog>:`` (an ``experiments/`` script's own name)."""
    from ..core.data import DataError
    from ..core.distributed import DistributedError
    from ..core.engine import ExperimentError
    from ..core.inputs import InputError
    from ..core.models import ModelError
    from ..core.results import DivergenceError, RecordError
    from ..core.students import StudentError

    try:
        with _library_warnings(prog):
            rc = command()
    except (ConfigError, DataError, DistributedError, ExperimentError, InputError, ModelError, RecordError,
            StudentError) as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except DivergenceError as e:
        print(f"{prog}: error: {e}\nnothing was written (--on-divergence fail; with --on-divergence warn "
              "the record is written, with its \"health\", and the figure marked).", file=sys.stderr)
        return 3
    except KeyboardInterrupt as e:
        _STOPPING.set()
        print(_stopped_line(prog, isinstance(e, Terminated)), file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
    except BrokenPipeError:  # the reader of the output left (`... | head`): stop quietly, as a Unix tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # (Python flushes stdout again at exit)
        return 1
    except Exception as e:  # noqa: BLE001 - only an allocation that failed is answered here; the rest propagates
        if not _out_of_memory(e):
            raise
        lower = ("lower the number of runs (--seeds) or the sizes (e.g. --n-noise), or give --run-batch N to advance "
                 "N runs at a time" if prog == PROG else "lower the number of runs (--seeds, where the script "
                 "takes it) or the sizes")
        print(f"{prog}: error: out of memory: {str(e).strip().splitlines()[0]}\nThe program needs more "
              f"memory than the device has: {lower}.", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


def _out_of_memory(e: Exception) -> bool:
    """Whether a JAX runtime error is an allocation that failed (XLA's RESOURCE_EXHAUSTED, or its CPU client's
    "Out of memory allocating ..." under another status)."""
    jax = sys.modules.get("jax")
    text = str(e)
    return (jax is not None and isinstance(e, jax.errors.JaxRuntimeError)
            and ("RESOURCE_EXHAUSTED" in text or "Out of memory" in text))


class Terminated(KeyboardInterrupt):
    """SIGTERM (sent by ``timeout`` or a batch scheduler), raised where the command is, as Ctrl-C is: it stops
    the same way (files written atomically, temporary files removed) and exits with 143."""


def _on_sigterm(signum: int, frame: Any) -> None:
    raise Terminated()


def _leave(rc: int) -> NoReturn:
    """End the process with status ``rc``. Stopped (Ctrl-C: 130, SIGTERM: 143), at once with ``os._exit``: an
    ordinary exit would first wait for the compiled program still running on the device, minutes for a full
    run, while the shell waits too."""
    if rc in (130, 143):
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(rc)
    sys.exit(rc)


def _stopped_line(prog: str, terminated: bool) -> str:
    """What a command stopped by Ctrl-C (SIGTERM: ``terminated``) prints."""
    return (f"{prog}: {'terminated' if terminated else 'interrupted'} (every file is written atomically: none is "
            "left half-written; a sweep or the figures pipeline resumes from what it finished)")


_STOPPING = threading.Event()  # set where a command has caught its Ctrl-C or SIGTERM and is leaving
STOP_GRACE_S = 5.0  # how long a stopped command's main thread has to leave before the process is ended for it


def _watch_for_stops(prog: str) -> None:
    """End the process ``STOP_GRACE_S`` seconds after a Ctrl-C or SIGTERM that its main thread has not acted on.

    Python runs a signal's handler in the main thread, between two of its bytecodes. On a GPU the call of a long
    compiled program does not return until near its end: XLA's host thread drives the program's loops, its kernel
    launches wait for the device once the launch queue is full, and a loop on a value the device computes waits
    for that value at every step. A Ctrl-C would wait for the whole program, minutes or hours. A thread woken by
    the signal itself (``signal.set_wakeup_fd``: the C-level handler writes the signal's number to a pipe) gives
    the main thread ``STOP_GRACE_S`` seconds to stop as usual (:func:`_guarded`); after that it prints the same
    line and ends the process with the same status (130, or 143 for SIGTERM) with ``os._exit``. A second signal
    ends it at once. Files are written atomically (to a temporary name, then renamed), so none is left half
    written. Called from the main thread (``set_wakeup_fd`` must be)."""
    import signal

    read, write = os.pipe()
    os.set_blocking(write, False)  # a full pipe must never block the C-level handler
    signal.set_wakeup_fd(write, warn_on_full_buffer=False)

    def watch() -> None:
        deadline = None
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not select.select([read], [], [], wait)[0]:  # the grace period is over: the main thread is stuck
                break
            got = set(os.read(read, 512)) & {signal.SIGINT, signal.SIGTERM}
            if got and deadline is not None:  # a second stop: at once
                break
            if got:
                terminated = signal.SIGTERM in got
                deadline = time.monotonic() + STOP_GRACE_S
        if not _STOPPING.is_set():  # the main thread has not printed why it stops: say it here
            print(_stopped_line(prog, terminated), file=sys.stderr, flush=True)
        _STOPPING.set()
        sys.stdout.flush()
        os._exit(143 if terminated else 130)

    threading.Thread(target=watch, name="subliminal-mlp stop watch", daemon=True).start()


def _as_process(command: Callable[[], int], prog: str = PROG) -> NoReturn:
    """``command()`` as the process: SIGTERM stops it as Ctrl-C does, its status ends the process
    (:func:`_leave`: a stopped command at once), and a stop its main thread does not act on ends the process
    within seconds (:func:`_watch_for_stops`: a GPU's program call that does not return)."""
    import signal

    signal.signal(signal.SIGTERM, _on_sigterm)
    _watch_for_stops(prog)
    _leave(command())


def entry() -> NoReturn:
    """The ``subliminal-mlp`` command as a process (its console script, ``python -m subliminal_mlp``):
    :func:`main` through :func:`_as_process`."""
    _as_process(main)


def run_script(func: Callable[..., Any], *args: Any, **kwargs: Any) -> NoReturn:
    """Run an ``experiments/`` script's main function with :func:`guarded` and exit with its status; its
    messages start with the script's name (``fig10_mnist.py: error: ...``), as argparse's own do.

    With ``$SUBLIMINAL_MLP_DISTRIBUTED=1`` JAX's distributed runtime is started first
    (:func:`.distributed.initialize`: the process layout from the cluster or the ``JAX_*`` variables).
    """
    from ..core import distributed

    prog = _script_name()
    _as_process(lambda: _ending_together(lambda: _guarded(prog, lambda: (distributed.initialize_if_requested(),
                                                                        func(*args, **kwargs))[1])), prog)


def _script_name() -> str:
    """The running script's file name, as argparse names it in its own errors (``fig10_mnist.py``);
    ``subliminal-mlp`` where there is none (``python -c``, an interactive session)."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name if name and name not in ("-c", "-m", "python", "python3") else PROG


def _ending_together(command: Callable[[], int]) -> int:
    """``command()``'s exit status; under several processes (``jax.distributed``) a process that fails (an
    error, or a status other than 0) leaves at once with ``os._exit``, after printing the traceback of an
    unexpected error: an ordinary exit would wait in JAX's shutdown barrier (5 min by default) while the
    others wait for it in their collectives; gone, it is missed within the heartbeat timeout."""
    from ..core.results import distributed_process

    def several() -> bool:
        process = distributed_process()
        return process is not None and process[1] > 1

    try:
        rc = command()
    except BaseException as e:
        if not several():
            raise
        import traceback

        traceback.print_exc()
        rc = e.code if isinstance(e, SystemExit) and isinstance(e.code, int) else 1
    if rc and several():
        sys.stdout.flush(), sys.stderr.flush()
        os._exit(rc)
    return rc


def script_parser(doc: str, out: str | os.PathLike, *, seeds: int | None = 10,
                  seeds_help: str = "runs") -> argparse.ArgumentParser:
    """The parser an ``experiments/`` script starts from: its docstring as the description,
    ``--seeds`` (``seeds_help``, default ``seeds``; left out where ``seeds`` is None), ``--data-dir``
    (the data root: :func:`~subliminal_mlp.load_mnist`'s search where not given) and ``--out``
    (default ``out``, the repository's ``figures/``)."""
    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    if seeds is not None:
        ap.add_argument("--seeds", "--runs", dest="seeds", type=int, default=seeds, help=f"{seeds_help} (default {seeds})")
    ap.add_argument("--data-dir", default=None,
                    help="data root holding mnist/ and fashion-mnist/ (default: the loader's search)")
    ap.add_argument("--out", default=str(out), help=f"output directory (default: {out})")
    return ap


def run_study(out: str | os.PathLike, files: Sequence[str], compute: Callable[[], dict],
              write: Callable[[dict, str | os.PathLike], Mapping[str, Any]],
              table: Optional[Callable[[dict], str]] = None) -> dict:
    """The body of an ``experiments/`` script: check that ``out`` can take ``files`` (before any
    compute or data loading: :func:`~subliminal_mlp.core.results.check_output`), then
    ``record = compute()``, ``write(record, out)``, print ``table(record)`` and the paths written
    (written first, so that nothing computed is lost to the report). Returns the record."""
    from ..core.results import check_output

    check_output(out, files=list(files))
    record = compute()
    written = write(record, out)
    if table is not None:
        print(table(record))
    for path in written.values():
        print(f"wrote {path}")
    return record


def _precheck(a: argparse.Namespace) -> None:
    """What can be checked before a distributed runtime is started (which waits for the other processes; JAX
    may be imported, but no backend is started here): the protocol's settings (a command's Config), the
    theorem's arguments, the figures' flags and plan, and the outputs. The commands rely on it: it is
    their only check of these."""
    if a.command == "theorem":
        from .theorem import _check

        _check(a)
    elif a.command == "figures":
        from .figures import _check_args

        _check_args(a)
    elif a.command in ("reproduce", "sweep"):  # the commands whose settings are a Config
        from ..core.results import check_output, check_stem, check_stem_outputs

        # Before a distributed runtime starts, no process knows whether it is process 0, the one that writes: then
        # only the file names are checked here, the output directory after the start (the commands check it again,
        # in process 0 only; a host that cannot see it must not stop the others).
        local = not _distributed_requested(a)
        if a.command == "sweep":
            configs = [_config_from(a, **{a.param: value}) for value in _sweep_values(a)]  # as the sweep runs them
            if local:
                check_output(a.out)
        else:
            configs = [_config_from(a)]
            if local:
                check_stem_outputs(a.out, a.stem, ("json", "csv", "png"))
            else:
                check_stem(a.stem)
        if "init_noise_kind" in getattr(a, "given", ()) and all(c.init_noise == 0 for c in configs):
            raise ConfigError(f"--init-noise-kind {a.init_noise_kind} has no effect with init_noise = 0 (no noise "
                              "is added to the students' start): give --init-noise σ > 0, or leave it out.")


def _cache_stores_callback_programs() -> bool:
    """Whether this JAX's persistent compilation cache stores programs with host callbacks (the progress bars).

    JAX before 0.11 refuses them (its ``compiler.py``: "Not writing persistent cache entry ... because it uses
    host callbacks"); JAX 0.11 stores them and plumbs the callbacks into the program read back (jax-ml/jax
    pull request 38405). Seen both ways: jax 0.10.2 on CPU stores no program with bars, jax 0.11.2 on an H200
    stored them (``tests/test_compile_cache.py``)."""
    import jax

    return jax.__version_info__ >= (0, 11)


def _compile_cache_note(a: argparse.Namespace) -> None:
    """A note on stderr where JAX's persistent compilation cache is on (``$JAX_COMPILATION_CACHE_DIR``) and the
    command shows progress bars, with a JAX that stores no program with host callbacks, which the bars are
    (:func:`_cache_stores_callback_programs`): the experiment's programs would be compiled anew every time
    (docs/gpu.md, "Compile once"). Not for ``figures``: its experiments run without bars (its own bar, over the
    figures, is the host's), so their programs are stored either way."""
    if (os.environ.get("JAX_COMPILATION_CACHE_DIR") and getattr(a, "no_progress", True) is False
            and getattr(a, "command", None) != "figures" and not _cache_stores_callback_programs()):
        print("subliminal-mlp: note: JAX does not store programs with progress bars (host callbacks) in its "
              "compilation cache ($JAX_COMPILATION_CACHE_DIR): pass --no-progress to store and reuse them",
              file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return _ending_together(lambda: guarded(lambda: (_precheck(args), _compile_cache_note(args),
                                                     _start_distributed(args), args.func(args))[3]))

