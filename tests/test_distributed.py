"""Several processes (JAX's distributed runtime) on one machine: the same numbers as one process, process 0
writes, and a process that dies takes the others down within the heartbeat timeout instead of hanging.

Each test starts real processes on 127.0.0.1 (a free port), one CPU device each, collectives through gloo.
"""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from subliminal_mlp.core import distributed

# Run by every process: a tiny Figure 10 for two learning rates as one program (the command line's sweep,
# which starts the distributed runtime when asked), then the same command again, which must resume from
# process 0's records (process 1 has none in its own directory) without computing. Prints one JSON line.
WORKER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from subliminal_mlp.cli import main
    root, out = sys.argv[1], Path(sys.argv[2])
    command = ["sweep", "learning_rate", "3e-4", "1e-3", "--hidden", "32", "--seeds", "3", "--epochs", "1",
               "--n-noise", "2048", "--batch-size", "512", "--run-batch", "1", "--data-dir", root,
               "--out", str(out), *sys.argv[3:]]
    assert main(command) == 0
    print("second time", flush=True)
    assert main([*command, "--no-progress"]) == 0
    import jax
    from subliminal_mlp.core import distributed
    records = {p.name: json.loads(p.read_text()) for p in out.rglob("*.json")}
    print(json.dumps({"process": jax.process_index(), "processes": jax.process_count(),
                      "main": distributed.is_main_process(), "records": records,
                      "files": sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())}))
""")

# Started, then one process is killed: the survivor must not hang.
DIE = textwrap.dedent("""
    import sys, time
    from subliminal_mlp.core import distributed
    distributed.initialize()
    print("ready", flush=True)
    import subliminal_mlp as sm
    from subliminal_mlp import inputs
    task = sm.Task.from_dataset(sm.load_mnist(sys.argv[1]))
    exp = sm.Experiment(model=sm.mlp((16,)), inputs=inputs.uniform(1024), teacher_epochs=1, student_epochs=1,
                        batch_size=512)
    for _ in range(100):  # the other process is gone: the collectives cannot finish
        sm.run(exp, task, n_runs=2, run_batch=1)
    print("finished without the other process", flush=True)
""")

# The figures pipeline in every process, with a figure that runs the engine (collectives: all must make it, or
# all skip it). Each process has its own output directory: process 1's host does not see process 0's files.
FIGURES = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    import numpy as np
    import subliminal_mlp as sm
    from subliminal_mlp.cli.figures import Figure, run_figures
    from subliminal_mlp.core import distributed
    from subliminal_mlp.core.results import atomic_write_text, envelope, register_format, write_record
    distributed.initialize()
    register_format("subliminal-mlp/test-figure", 1)
    out = Path(sys.argv[1])
    x = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    task = sm.Task(x, (x[:, 0] > 0).astype(np.int32), x, (x[:, 0] > 0).astype(np.int32), n_classes=2)
    # a task its teachers learn (at the paper's learning rate they stay at their start: "no better" warnings)
    exp = sm.Experiment(model=sm.mlp((4,), n_classes=2, aux_logits=2, input_dim=8), teacher_epochs=5,
                        inputs=sm.inputs.uniform(64, shape=(8,)), student_epochs=1, batch_size=64,
                        hparams={"learning_rate": 0.05})
    made = []

    def make(s, o, ctx):
        made.append(sm.run(exp, task, n_runs=2, run_batch=1).accuracies.tolist())
        write_record(envelope("subliminal-mlp/test-figure", {"x": s["x"]}, n_runs=2, seed=0, data={}), o, "tiny")
        atomic_write_text(o / "tiny.png", "png")

    fig = Figure("tiny", ("tiny.json", "tiny.png"), settings=lambda r: {"x": r["config"]["x"]},
                 defaults=lambda: {"x": 1}, make=make, quick=lambda s, q: s, command=lambda s: "tiny",
                 runs=lambda s: 2)
    kw = dict(out=out, source=out, registry={"tiny": fig}, teacher_cache=False, progress=False)
    first, second = run_figures(**kw), run_figures(**kw)
    print(json.dumps({"first": first, "second": second, "made": made,
                      "files": sorted(p.name for p in out.rglob("*") if p.is_file())}))
""")

# Process 1 cannot load its data (a wrong --data-dir on its host): it must leave at once, not wait in JAX's
# shutdown barrier while process 0 waits for it in the experiment's collectives.
FAILS = textwrap.dedent("""
    import sys
    from subliminal_mlp.cli import main
    sys.exit(main(["--distributed", "reproduce", "--hidden", "16", "--seeds", "2", "--epochs", "1",
                   "--n-noise", "1024", "--batch-size", "512", "--no-progress", "--data-dir", sys.argv[1],
                   "--out", sys.argv[2]]))
""")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", distributed.ENV)}
    # one CPU device per process: the suite's XLA flags (tests/conftest.py) but no device count
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env.update(JAX_PLATFORMS="cpu", JAX_CPU_COLLECTIVES_IMPLEMENTATION="gloo", XLA_FLAGS=" ".join(flags), **extra)
    return env


def _layout(port: int, n: int, i: int) -> dict:
    return {distributed.COORDINATOR_ENV: f"127.0.0.1:{port}", distributed.NUM_PROCESSES_ENV: str(n),
            distributed.PROCESS_ID_ENV: str(i)}


def _last_json(text: str) -> dict:
    return json.loads(text.strip().splitlines()[-1])


def test_two_processes_give_one_process_numbers_bit_for_bit_and_only_process_0_writes(data_root, tmp_path):
    port = _free_port()
    cmd = [sys.executable, "-c", WORKER, str(data_root)]
    # The single-process reference and the two processes of the distributed run, all at once.
    procs = {"one": subprocess.Popen([*cmd, str(tmp_path / "one")], env=_env(), stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True)}
    for i in range(2):
        procs[i] = subprocess.Popen([*cmd, str(tmp_path / f"p{i}"), "--distributed"], env=_env(**_layout(port, 2, i)),
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    outs = {}
    try:
        for k, p in procs.items():
            out, err = p.communicate(timeout=240)
            assert p.returncode == 0, f"{k}: {err[-3000:]}"
            outs[k] = (_last_json(out), (out, err))
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
    one, p0, p1 = outs["one"][0], outs[0][0], outs[1][0]
    assert (one["processes"], p0["processes"], p1["processes"]) == (1, 2, 2)
    assert (p0["process"], p0["main"], p1["process"], p1["main"]) == (0, True, 1, False)
    # Only process 0 wrote, the same files as one process.
    assert p1["files"] == [] and p0["files"] == one["files"]
    names = ["learning_rate=0.0003.json", "learning_rate=0.001.json", "sweep_learning_rate.json"]
    assert sorted(one["records"]) == names
    # The same per-run numbers (3 runs: one is padding on two devices), every model, both values.
    for name in names[:2]:
        a, b = one["records"][name], p0["records"][name]
        assert len(a["environment"]["devices"]) == 1 and len(b["environment"]["devices"]) == 2  # one CPU device each
        assert a["config"] == b["config"] and len(a["models"]) == 6
        for model, m in a["models"].items():
            assert len(m["accuracies"]) == 3
            assert b["models"][model]["accuracies"] == m["accuracies"], (name, model)  # JSON floats: exact
    assert p0["records"][names[2]]["models"] == one["records"][names[2]]["models"]
    # Progress bars and the log are process 0's; the second time every process resumed from process 0's records.
    (out0, err0), (out1, err1) = outs[0][1], outs[1][1]
    assert "teacher training" in err0 and "(process 0: 3 of 6 runs)" in err0
    assert "teacher training" not in err1 and "student distillation" not in err1
    assert "distributed: 2 processes, 2 devices" in out0 and "wrote" in out0 and "resuming: 2 of 2" in out0
    assert "wrote" not in out1 and "resuming" not in out1 and "compiling" not in out1
    assert out1.split("second time")[1].strip().count("\n") == 0  # nothing logged but the JSON line


def test_the_figures_pipeline_decides_in_process_0_and_only_process_0_keeps_its_state(tmp_path):
    port = _free_port()
    procs = [subprocess.Popen([sys.executable, "-c", FIGURES, str(tmp_path / f"p{i}")], env=_env(**_layout(port, 2, i),
                              **{distributed.HEARTBEAT_ENV: "10"}), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for i in range(2)]
    outs = []
    try:
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=180)
            assert p.returncode == 0, f"process {i}: {err[-3000:]}"
            assert "diverged" not in err, err  # its teachers learn
            outs.append(_last_json(out))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    p0, p1 = outs
    # Made once by both (process 0 found nothing), then skipped by both (process 0 found it up to date),
    # though process 1's own directory stays empty (process 0's holds the locks .figures-locks/state and /tiny).
    assert p0["first"] == p1["first"] == {"tiny": "made"} and p0["second"] == p1["second"] == {"tiny": "skipped"}
    assert len(p0["made"]) == len(p1["made"]) == 1 and p0["made"] == p1["made"]
    assert p0["files"] == [".figures-state.json", "state", "tiny", "tiny.json", "tiny.png"] and p1["files"] == []


def test_a_process_that_fails_with_an_error_leaves_at_once_and_the_other_stops_soon(data_root, tmp_path):
    port = _free_port()
    dirs = [str(data_root), str(tmp_path / "no-data-here")]
    procs = [subprocess.Popen([sys.executable, "-c", FAILS, dirs[i], str(tmp_path / f"out{i}")],
                              env=_env(**_layout(port, 2, i), **{distributed.HEARTBEAT_ENV: "5"}),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    t0 = time.monotonic()
    try:
        _, err1 = procs[1].communicate(timeout=120)
        t1 = time.monotonic() - t0
        procs[0].communicate(timeout=120)
        t0_done = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    assert procs[1].returncode == 2 and "subliminal-mlp: error: data root" in err1 and "no-data-here" in err1
    assert procs[0].returncode != 0
    # Not JAX's 300 s shutdown barrier: process 1 left once its error was printed, process 0 within the heartbeat.
    assert t1 < 90 and t0_done < 110, (t1, t0_done)


def test_a_process_whose_partner_never_comes_says_first_where_it_waits_and_for_how_long(tmp_path):
    # One process of two started alone: JAX stops it after the initialisation timeout with a message blaming a
    # dead task; the line written before it names the address, the count and the timeout to check.
    cmd = [sys.executable, "-c", "from subliminal_mlp.core import distributed; distributed.initialize()"]
    env = _env(**_layout(_free_port(), 2, 1), **{distributed.INIT_TIMEOUT_ENV: "2"})
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    first = done.stderr.strip().splitlines()[0]
    assert first.startswith("subliminal-mlp: process 1 of 2 connecting to the coordinator at 127.0.0.1:"), done.stderr
    assert "within 2 s or all stop" in first and "2 processes and its own process id" in first


@pytest.mark.parametrize("killed", [1, 0])
def test_a_process_that_dies_makes_the_other_fail_within_the_heartbeat_timeout(data_root, tmp_path, killed):
    port = _free_port()
    procs, logs = [], []
    for i in range(2):
        logs.append((tmp_path / f"out{i}", tmp_path / f"err{i}"))
        env = _env(**_layout(port, 2, i), **{distributed.HEARTBEAT_ENV: "5"})
        procs.append(subprocess.Popen([sys.executable, "-c", DIE, str(data_root)], env=env,
                                      stdout=open(logs[i][0], "w"), stderr=open(logs[i][1], "w")))
    survivor = procs[1 - killed]
    try:
        deadline = time.monotonic() + 120
        while not all(Path(o).exists() and "ready" in Path(o).read_text() for o, _ in logs):
            assert time.monotonic() < deadline, "the processes did not start: " + logs[0][1].read_text()[-2000:]
            assert all(p.poll() is None for p in procs), [e.read_text()[-2000:] for _, e in logs]
            time.sleep(0.2)
        procs[killed].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        survivor.wait(timeout=60)
        waited = time.monotonic() - t0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    err = logs[1 - killed][1].read_text()
    assert survivor.returncode != 0 and waited < 60
    assert "finished without the other process" not in logs[1 - killed][0].read_text()
    # JAX's coordination service says why (its agent aborts the process: SIGABRT).
    assert "Terminating process because the JAX distributed service detected fatal errors" in err, err[-3000:]
    assert ("stopped sending heartbeats" in err) if killed == 1 else ("leader" in err or "coordination service" in err)


def test_without_the_runtime_every_process_is_the_main_one_and_the_switch_reads_the_environment(monkeypatch):
    assert distributed.is_main_process() and distributed.process_count() == 1
    assert distributed.broadcast_from_main({"a": 1}) == {"a": 1} and distributed.agree_min(3) == 3
    monkeypatch.delenv(distributed.ENV, raising=False)
    assert not distributed.requested() and distributed.requested(True)
    monkeypatch.setenv(distributed.ENV, "0")
    assert not distributed.requested() and distributed.initialize_if_requested() is None
    monkeypatch.setenv(distributed.ENV, "1")
    assert distributed.requested()
    monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "two")
    with pytest.raises(distributed.DistributedError, match="JAX_NUM_PROCESSES"):
        distributed.initialize()
    monkeypatch.delenv(distributed.NUM_PROCESSES_ENV)
    # An impossible layout is named as such (JAX's own message was about the coordinator's address).
    with pytest.raises(distributed.DistributedError, match="num_processes = 0 is invalid"):
        distributed.initialize("127.0.0.1:1", 0, 0)
    with pytest.raises(distributed.DistributedError, match=r"process_id = 2 is invalid: .* 0..1"):
        distributed.initialize("127.0.0.1:1", 2, 2)
    with pytest.raises(distributed.DistributedError, match=r"process_id = -1 is invalid: it must be an integer >= 0"):
        distributed.initialize("127.0.0.1:1", None, -1)  # the count from the cluster: -1 went on to JAX
    # So is a coordinator that is no host:port (JAX failed on it with an IndexError, or a gRPC server that could not
    # start), from an argument or the environment.
    for bad in ("nonsense", "127.0.0.1:notaport", "127.0.0.1:", ":1234", "127.0.0.1:70000"):
        with pytest.raises(distributed.DistributedError, match=f"coordinator address '{bad}' is invalid: give host:port"):
            distributed.initialize(bad, 1, 0)
    monkeypatch.setenv(distributed.COORDINATOR_ENV, "nonsense")
    with pytest.raises(distributed.DistributedError, match="coordinator address 'nonsense' is invalid"):
        distributed.initialize(None, 1, 0)


def test_the_switch_without_the_runtime_warns_that_every_process_does_all_the_work(monkeypatch):
    import numpy as np

    import subliminal_mlp as sm

    x = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    task = sm.Task(x, (x[:, 0] > 0).astype(np.int32), x, (x[:, 0] > 0).astype(np.int32), n_classes=2)
    exp = sm.Experiment(model=sm.mlp((4,), n_classes=2, aux_logits=2, input_dim=8),
                        inputs=sm.inputs.uniform(64, shape=(8,)), teacher_epochs=5, student_epochs=1, batch_size=64,
                        hparams={"learning_rate": 0.05})  # teachers that learn: no warning but the switch's
    monkeypatch.setenv(distributed.ENV, "1")
    with pytest.warns(sm.SettingWarning, match="SUBLIMINAL_MLP_DISTRIBUTED is set but .* not started.*initialize"):
        sm.run(exp, task, n_runs=1)
    monkeypatch.setenv(distributed.ENV, "0")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm.run(exp, task, n_runs=1)


def test_initialize_hands_the_layout_and_timeouts_to_jax_and_says_why_it_cannot_start(monkeypatch, capsys):
    # jax.distributed.initialize replaced by a recorder: what it is given, without starting anything.
    import jax

    calls = []

    def fake(*args, **kwargs):
        calls.append((args, kwargs))

    monkeypatch.setattr(jax.distributed, "initialize", fake)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    monkeypatch.setattr(jax, "local_device_count", lambda: 2)
    monkeypatch.setattr(jax, "device_count", lambda: 6)
    for name in (distributed.ENV, distributed.COORDINATOR_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(distributed.NUM_PROCESSES_ENV, "3")
    monkeypatch.setenv(distributed.PROCESS_ID_ENV, "2")
    monkeypatch.setenv(distributed.HEARTBEAT_ENV, "7")
    monkeypatch.setenv(distributed.INIT_TIMEOUT_ENV, "11")
    info = distributed.initialize("host:1234")
    # before it waits, each process says where and for how long; not with verbose=False, nor for one process
    assert capsys.readouterr().err == distributed.connecting_message("host:1234", 3, 2, 11) + "\n"
    distributed.initialize("host:1234", verbose=False)
    distributed.initialize("host:1234", 1, 0)
    assert capsys.readouterr().err == ""
    del calls[1:]
    assert calls == [(("host:1234", 3, 2), {"local_device_ids": None, "heartbeat_timeout_seconds": 7,
                                             "initialization_timeout": 11})]
    assert info["local_devices"] == 2 and info["devices"] == 6  # this process's devices, then every process's
    # arguments win over the environment; a caller's own JAX keyword wins over the timeout variables
    calls.clear()
    distributed.initialize("h:1", 2, 0, heartbeat_timeout_s=9, initialization_timeout=30)
    assert calls == [(("h:1", 2, 0), {"local_device_ids": None, "heartbeat_timeout_seconds": 9,
                                       "initialization_timeout": 30})]
    # without the variables JAX gets None (it detects SLURM / Open MPI itself) and no timeouts of ours
    for name in (distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV, distributed.HEARTBEAT_ENV,
                 distributed.INIT_TIMEOUT_ENV):
        monkeypatch.delenv(name)
    calls.clear()
    assert distributed.initialize_if_requested() is None and calls == []  # not asked for
    distributed.initialize_if_requested(True)  # --distributed
    assert calls == [((None, None, None), {"local_device_ids": None})]

    # JAX's own refusal (a ValueError: no coordinator outside a cluster) is a DistributedError naming the flags
    def refuses(*args, **kwargs):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", refuses)
    with pytest.raises(distributed.DistributedError, match="coordinator_address should be defined.*--coordinator-address") \
            as err:
        distributed.initialize()
    assert ".." not in str(err.value)  # JAX's full stop, then ours

    # A coordinator port another program holds (JAX's bare "Failed to start RPC server") says so; another runtime
    # error is JAX's own.
    def port_taken(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("UNKNOWN: Failed to start RPC server")

    monkeypatch.setattr(jax.distributed, "initialize", port_taken)
    with pytest.raises(distributed.DistributedError, match=r"coordinator at 127.0.0.1:7777: its port is in use .* "
                                                           r"another free port .*JAX said: UNKNOWN: Failed to start"):
        distributed.initialize("127.0.0.1:7777", 2, 0)

    def other(*args, **kwargs):
        raise jax.errors.JaxRuntimeError("UNKNOWN: something else")

    monkeypatch.setattr(jax.distributed, "initialize", other)
    with pytest.raises(jax.errors.JaxRuntimeError, match="something else"):
        distributed.initialize("127.0.0.1:7777", 2, 0)
    # once running, calling it again starts nothing
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    assert distributed.initialize()["devices"] == 6


def test_with_two_simulated_processes_process_0_is_the_main_one_and_its_values_are_agreed(monkeypatch, capsys):
    # Two processes simulated in one: jax's process index and count, and multihost_utils's collectives, faked.
    import jax
    import numpy as np
    from jax.experimental import multihost_utils

    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    sent = []  # what process 0 broadcasts, in order; process 1 receives it

    monkeypatch.setattr(jax, "process_index", lambda: 0)
    assert distributed.is_main_process()
    distributed.main_print("from process 0")
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda x: (sent.append(np.copy(x)), x)[1])
    value = {"done": ["a", "b"], "n": 3}
    assert distributed.broadcast_from_main(value) == value

    monkeypatch.setattr(jax, "process_index", lambda: 1)
    assert not distributed.is_main_process()
    distributed.main_print("from process 1")
    assert capsys.readouterr().out == "from process 0\n"
    received = iter(sent)
    monkeypatch.setattr(multihost_utils, "broadcast_one_to_all", lambda x: next(received))
    assert distributed.broadcast_from_main({"its own": "value"}) == value  # process 0's, not its own

    monkeypatch.setattr(multihost_utils, "process_allgather", lambda x: np.array([x, 2, 7], np.int64))
    assert distributed.agree_min(5) == 2 and distributed.agree_min(1) == 1


def test_before_the_runtime_starts_the_command_checks_output_names_not_the_directory(monkeypatch, tmp_path):
    """No process knows it is process 0 before the runtime starts: a host that cannot see (or write) the output
    directory must not stop there, and leave the others waiting for it until the start times out. The directory
    is checked after the start, in process 0 only (reproduce, run_sweep); a bad file name is refused at once."""
    from subliminal_mlp.cli import _precheck, build_parser
    from subliminal_mlp.core.results import OutputError

    afile = tmp_path / "afile"
    afile.write_text("")
    monkeypatch.delenv(distributed.ENV, raising=False)
    for argv in (["reproduce", "--out", str(afile)], ["sweep", "aux_logits", "1", "3", "--out", str(afile)]):
        with pytest.raises(OutputError, match="afile"):  # one process: checked at once
            _precheck(build_parser().parse_args(argv))
        for on in (["--distributed"], ["--coordinator-address", "127.0.0.1:1", "--num-processes", "2",
                                       "--process-id", "1"]):
            _precheck(build_parser().parse_args(on + argv))  # not here
    with pytest.raises(OutputError, match="stem"):
        _precheck(build_parser().parse_args(["--distributed", "reproduce", "--stem", ".."]))
    monkeypatch.setenv(distributed.ENV, "1")
    _precheck(build_parser().parse_args(["reproduce", "--out", str(afile)]))
