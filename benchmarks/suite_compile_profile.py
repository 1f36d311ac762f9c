"""Where the test suite's time goes: a pytest plugin that adds up JAX's compile events per test.

    python -m pytest -p benchmarks.suite_compile_profile          (the checkout on PYTHONPATH)
    python benchmarks/suite_compile_profile.py [DIR]              (the summary of the files it wrote)

Each test process (xdist worker) listens to ``jax.monitoring``'s duration events (backend compile,
lowering to MLIR, tracing, persistent-cache hits) and, at the end of the session, writes
``<DIR>/compile-profile-<worker>.json``: per test id, each event's total seconds and count, and the
test's wall time (``DIR``: ``$SUITE_PROFILE_DIR``, default the system's temporary directory). It
also counts each test's :func:`subliminal_mlp.run` calls: those that raised (most often a refusal
before any compute) and those that ran, with their ``Result.compile_s`` (tracing, lowering and
compiling, or finding the program in the cache) and ``run_s``, and each run's configuration (the
experiment's ``describe()``, the task's shapes and the arguments that shape the program), so that
the summary can say how many are configurations of their own. The summary prints the totals and
the tests by wall time and by compile time. Time spent in the subprocesses some tests start is in
their wall time only. It measures, it asserts nothing.
"""

from __future__ import annotations

import collections
import functools
import glob
import json
import os
import sys
import tempfile
import time

import pytest

COMPILE = "/jax/core/compile/backend_compile_duration"
LOWER = "/jax/core/compile/jaxpr_to_mlir_module_duration"
TRACE = "/jax/core/compile/jaxpr_trace_duration"


def _dir() -> str:
    return os.environ.get("SUITE_PROFILE_DIR") or tempfile.gettempdir()


_current = ["<between tests>"]
_totals: dict = collections.defaultdict(lambda: collections.defaultdict(float))
_configs: set = set()  # the configurations of the engine runs that ran
ENGINE = "engine.run"


def _listener(event: str, duration: float, **_: object) -> None:
    _totals[_current[0]][event] += duration
    _totals[_current[0]][event + "#n"] += 1


def _config_key(exp, task, kw) -> str:
    import numpy as np

    shaping = {k: kw.get(k) for k in ("n_runs", "sweep", "run_batch", "keep_students", "keep_teachers")}
    shaping["teachers"] = kw.get("teachers") is not None
    return json.dumps([exp.describe(), [np.shape(a) for a in (task.train_x, task.test_x)], task.n_classes,
                       shaping], sort_keys=True, default=str)


def _counted(run):
    @functools.wraps(run)  # (its __module__ too: the examples' public-API check reads it)
    def counted(exp, task, **kw):
        totals = _totals[_current[0]]
        try:
            result = run(exp, task, **kw)
        except Exception:  # most often a refusal, before any compute (the tests of invalid values)
            totals[ENGINE + " raised#n"] += 1
            raise
        totals[ENGINE + " ran#n"] += 1
        totals[ENGINE + " compile"] += result.compile_s
        totals[ENGINE + " run"] += result.run_s
        try:
            _configs.add(_config_key(exp, task, kw))
        except Exception:  # a configuration that does not describe itself is not counted
            pass
        return result

    return counted


def pytest_configure(config):
    import jax.monitoring

    import subliminal_mlp
    from subliminal_mlp.core import engine

    jax.monitoring.register_event_duration_secs_listener(_listener)
    counted = _counted(engine.run)
    engine.run = subliminal_mlp.run = counted


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    _current[0] = item.nodeid
    start = time.perf_counter()
    yield
    _totals[item.nodeid]["wall"] += time.perf_counter() - start
    _current[0] = "<between tests>"


def pytest_sessionfinish(session):
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    os.makedirs(_dir(), exist_ok=True)
    with open(os.path.join(_dir(), f"compile-profile-{worker}.json"), "w", encoding="utf-8") as f:
        json.dump({**_totals, "<engine configurations>": sorted(_configs)}, f)


def summarize(directory: str, top: int = 25) -> str:
    """The totals over every test process's file in ``directory``, and the ``top`` tests by wall and compile time."""
    totals: dict = collections.defaultdict(float)
    rows = []
    configs: list = []
    for path in sorted(glob.glob(os.path.join(directory, "compile-profile-*.json"))):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
            configs += data.pop("<engine configurations>", [])
            for test, events in data.items():
                for k, v in events.items():
                    totals[k] += v
                rows.append((events.get("wall", 0.0), events.get(COMPILE, 0.0), int(events.get(COMPILE + "#n", 0)),
                             test))
    lines = [f"in-process test time {totals['wall']:.1f} s: backend compile {totals[COMPILE]:.1f} s "
             f"({int(totals[COMPILE + '#n'])} compiles), lowering {totals[LOWER]:.1f} s, "
             f"tracing {totals[TRACE]:.1f} s, "
             f"persistent-cache hits {int(totals['/jax/compilation_cache/cache_retrieval_time_sec#n'])} "
             f"(compile time saved {totals['/jax/compilation_cache/compile_time_saved_sec']:.1f} s)",
             f"engine runs: {int(totals[ENGINE + ' ran#n'])} ran (Result.compile_s {totals[ENGINE + ' compile']:.1f} s, "
             f"run_s {totals[ENGINE + ' run']:.1f} s; {len(set(configs))} configurations of their own, "
             f"{len(configs)} counted per process), {int(totals[ENGINE + ' raised#n'])} raised"]
    for title, key in (("by wall time", 0), ("by compile time", 1)):
        lines.append(f"\n{title}:  wall  compile  compiles  test")
        lines += [f"{w:7.1f} {c:8.1f} {n:9d}  {t}" for w, c, n, t in sorted(rows, key=lambda r: -r[key])[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1] if len(sys.argv) > 1 else _dir()))
