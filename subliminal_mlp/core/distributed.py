"""Many processes, many hosts: JAX's distributed runtime, and who writes.

Once :func:`initialize` has run (it calls ``jax.distributed.initialize``), :func:`engine.run
<subliminal_mlp.core.engine.run>` shards its jobs over *every* device of *every* process
(``jax.devices()``): each process feeds only its own devices, the per-run results are gathered to
every process, and only process 0 (:func:`is_main_process`) writes files and draws progress bars.
The seeds decide the numbers, not the layout: one process or many give the same per-run numbers
(with the same ``run_batch``). Every process must run the same script with the same arguments.

Turning it on:

* in a script: ``subliminal_mlp.core.distributed.initialize()`` before anything touches JAX;
* on the command line: ``subliminal-mlp --distributed reproduce ...``, or the environment variable
  ``SUBLIMINAL_MLP_DISTRIBUTED=1`` (:data:`ENV`; the ``experiments/`` scripts honour it too).

Where the processes are: under SLURM and Open MPI, JAX finds everything itself; elsewhere give the
coordinator (``host:port`` of process 0), the number of processes and this process's id, as
arguments, command-line flags (``--coordinator-address``, ``--num-processes``, ``--process-id``)
or environment variables: ``JAX_COORDINATOR_ADDRESS`` (read by JAX itself), ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID`` (read here). A process that dies is noticed by the others within the
heartbeat timeout (:data:`HEARTBEAT_ENV`, default 100 s, JAX's); they then exit with an error
instead of waiting for ever. See ``docs/distributed.md``.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional, Sequence

import jax
import numpy as np

from .config import is_integer

#: Environment variable: any value but "", "0" makes the command line and scripts call :func:`initialize`.
ENV = "SUBLIMINAL_MLP_DISTRIBUTED"
#: Environment variables read for the process count and this process's id (JAX reads ``JAX_COORDINATOR_ADDRESS``).
COORDINATOR_ENV, NUM_PROCESSES_ENV, PROCESS_ID_ENV = "JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID"
#: Seconds without a heartbeat after which a process counts as dead (JAX's default: 100).
HEARTBEAT_ENV = "SUBLIMINAL_MLP_HEARTBEAT_TIMEOUT"
#: Seconds to wait for every process to connect at start (JAX's default: 300).
INIT_TIMEOUT_ENV = "SUBLIMINAL_MLP_INIT_TIMEOUT"


class DistributedError(RuntimeError):
    """The distributed runtime could not be started as asked."""


def requested(flag: bool = False) -> bool:
    """Whether distributed mode is asked for: ``flag`` (``--distributed``) or :data:`ENV` set (not "", "0")."""
    return bool(flag) or os.environ.get(ENV, "") not in ("", "0")


def is_initialized() -> bool:
    """Whether JAX's distributed runtime is running in this process."""
    return jax.distributed.is_initialized()


def process_index() -> int:
    """This process's index (0 without the distributed runtime)."""
    return jax.process_index()


def process_count() -> int:
    """The number of processes (1 without the distributed runtime)."""
    return jax.process_count()


def is_main_process() -> bool:
    """True in process 0, the one that writes files, logs and draws progress bars (always True in one process).

    Without the distributed runtime it is True without starting a JAX backend.
    """
    return not jax.distributed.is_initialized() or jax.process_index() == 0


def main_print(*args: Any, **kwargs: Any) -> None:
    """``print`` in process 0 only: the default log of the commands, so that N processes log once."""
    if is_main_process():
        print(*args, **kwargs)


def _env_int(name: str) -> Optional[int]:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise DistributedError(f"${name} = {text!r} is not an integer.") from None


def initialize(coordinator_address: Optional[str] = None, num_processes: Optional[int] = None,
               process_id: Optional[int] = None, *, local_device_ids: Optional[Sequence[int]] = None,
               heartbeat_timeout_s: Optional[int] = None, initialization_timeout_s: Optional[int] = None,
               verbose: bool = True, **kwargs: Any) -> dict[str, int]:
    """Start JAX's distributed runtime (``jax.distributed.initialize``); call before any JAX computation.

    Arguments left None come from the environment: ``coordinator_address`` ("host:port" of process
    0) from ``$JAX_COORDINATOR_ADDRESS``, ``num_processes`` from ``$JAX_NUM_PROCESSES``,
    ``process_id`` from ``$JAX_PROCESS_ID``, the timeouts (seconds) from :data:`HEARTBEAT_ENV` and
    :data:`INIT_TIMEOUT_ENV`; what is still unset JAX detects itself (SLURM, Open MPI, ...).
    ``kwargs`` go to ``jax.distributed.initialize`` as they are. Calling it again once running
    does nothing. Returns ``{"process_index", "process_count", "local_devices", "devices"}``.

    With ``verbose`` (the default) each process first says on stderr where it connects and for how
    long every process may take to (:func:`connecting_message`): a process that waits for one that
    never comes is otherwise silent until JAX stops it, blaming a dead task.
    """
    if not jax.distributed.is_initialized():
        coordinator_address = coordinator_address or os.environ.get(COORDINATOR_ENV) or None
        num_processes = num_processes if num_processes is not None else _env_int(NUM_PROCESSES_ENV)
        process_id = process_id if process_id is not None else _env_int(PROCESS_ID_ENV)
        heartbeat = heartbeat_timeout_s if heartbeat_timeout_s is not None else _env_int(HEARTBEAT_ENV)
        init_timeout = initialization_timeout_s if initialization_timeout_s is not None else _env_int(INIT_TIMEOUT_ENV)
        if coordinator_address is not None:
            _check_address(coordinator_address)
        if num_processes is not None and not is_integer(num_processes, 1):
            raise DistributedError(f"num_processes = {num_processes!r} is invalid: it must be an integer >= 1.")
        if process_id is not None and num_processes is None and not is_integer(process_id, 0):
            raise DistributedError(f"process_id = {process_id!r} is invalid: it must be an integer >= 0.")
        if process_id is not None and num_processes is not None and not is_integer(process_id, 0, num_processes - 1):
            raise DistributedError(f"process_id = {process_id!r} is invalid: with {num_processes} processes it must "
                                   f"be an integer in 0..{num_processes - 1}.")
        if heartbeat is not None:
            kwargs.setdefault("heartbeat_timeout_seconds", heartbeat)
        if init_timeout is not None:
            kwargs.setdefault("initialization_timeout", init_timeout)
        if verbose and num_processes != 1:
            print(connecting_message(coordinator_address, num_processes, process_id,
                                     kwargs.get("initialization_timeout")), file=sys.stderr, flush=True)
        try:
            jax.distributed.initialize(coordinator_address, num_processes, process_id,
                                       local_device_ids=local_device_ids, **kwargs)
        except (ValueError, TypeError) as e:  # JAX's own messages say what is missing
            raise DistributedError(
                f"cannot start the distributed runtime: {str(e).rstrip('.')}. Outside SLURM / Open MPI give the "
                f"coordinator (host:port of process 0), the number of processes and this process's id: "
                f"${COORDINATOR_ENV}, ${NUM_PROCESSES_ENV} and ${PROCESS_ID_ENV} (for any command or script), or the "
                f"subliminal-mlp command's --coordinator-address, --num-processes and --process-id.") from e
        except jax.errors.JaxRuntimeError as e:
            if "Failed to start RPC server" not in str(e):
                raise
            where = coordinator_address or "the address JAX detected"
            raise DistributedError(  # process 0 listens on the coordinator's port: another program holds it
                f"cannot start the distributed runtime's coordinator at {where}: its port is in use (or not allowed) "
                f"on this host. Give every process another free port (${COORDINATOR_ENV} or --coordinator-address "
                f"host:PORT). JAX said: {str(e).strip()}") from e
    return {"process_index": jax.process_index(), "process_count": jax.process_count(),
            "local_devices": jax.local_device_count(), "devices": jax.device_count()}


def connecting_message(coordinator_address: Optional[str], num_processes: Optional[int],
                       process_id: Optional[int], initialization_timeout: Optional[int]) -> str:
    """The line :func:`initialize` writes before it waits for the other processes (None: JAX detects it).

    >>> print(connecting_message("10.0.0.1:1234", 2, 1, None))  # doctest: +NORMALIZE_WHITESPACE
    subliminal-mlp: process 1 of 2 connecting to the coordinator at 10.0.0.1:1234; every process must
    connect within 300 s or all stop (JAX then reports DEADLINE_EXCEEDED ... RegisterTask, or a task
    that died): if so, check that each one was started with this address and port, 2 processes and its
    own process id.
    """
    who = "process " + ("(id from the cluster)" if process_id is None else str(process_id))
    n = "(count from the cluster)" if num_processes is None else str(num_processes)
    where = "(address from the cluster)" if coordinator_address is None else coordinator_address
    timeout = 300 if initialization_timeout is None else initialization_timeout  # JAX's default
    return (f"subliminal-mlp: {who} of {n} connecting to the coordinator at {where}; every process must connect "
            f"within {timeout} s or all stop (JAX then reports DEADLINE_EXCEEDED ... RegisterTask, or a task that "
            f"died): if so, check that each one was started with this address and port, {n} processes and its "
            f"own process id.")


def _check_address(address: Any) -> None:
    """A coordinator address must be ``host:port`` with a port in 1..65535 (``[::1]:1234`` for IPv6); else a
    DistributedError naming it (JAX would fail on it with an IndexError, or a gRPC server that cannot start).

    >>> _check_address("10.0.0.1:1234"), _check_address("[::1]:8476")
    (None, None)
    >>> _check_address("nonsense")
    Traceback (most recent call last):
    subliminal_mlp.core.distributed.DistributedError: coordinator address 'nonsense' is invalid: give host:port of process 0 (e.g. 10.0.0.1:1234).
    """
    host, sep, port = str(address).rpartition(":")
    if not (isinstance(address, str) and sep and host and port.isdigit() and 1 <= int(port) <= 65535):
        raise DistributedError(f"coordinator address {address!r} is invalid: give host:port of process 0 "
                               "(e.g. 10.0.0.1:1234).")


def initialize_if_requested(flag: bool = False, **kwargs: Any) -> Optional[dict[str, int]]:
    """:func:`initialize` when :func:`requested` (``flag`` or :data:`ENV`); else nothing (returns None)."""
    return initialize(**kwargs) if requested(flag) else None


def broadcast_from_main(value: Any) -> Any:
    """Process 0's ``value`` (anything picklable) in every process; ``value`` itself in one process.

    For decisions that read files (which values of a sweep are done): every process must take
    process 0's, or they would run different programs.
    """
    if jax.process_count() == 1:
        return value
    import pickle

    from jax.experimental import multihost_utils

    data = np.frombuffer(pickle.dumps(value), np.uint8) if is_main_process() else np.zeros(0, np.uint8)
    n = int(multihost_utils.broadcast_one_to_all(np.int64(data.size)))
    buf = np.zeros(n, np.uint8)
    if is_main_process():
        buf[:] = data
    return pickle.loads(np.asarray(multihost_utils.broadcast_one_to_all(buf)).tobytes())


def agree_min(value: int) -> int:
    """The smallest of every process's ``value`` (``value`` in one process)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.int64(value))))
