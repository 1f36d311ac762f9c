"""Where the test suite's time goes: a pytest plugin that adds up JAX's compile events per test.

    python -m pytest -p benchmarks.suite_compile_profile          (the checkout on PYTHONPATH)
    python benchmarks/suite_compile_profile.py [DIR]              (the summary of the files it wrote)

Each test process (xdist worker) listens to ``jax.monitoring``'s duration events (backend compile,
lowering to MLIR, tracing, persistent-cache hits) and, at the end of the session, writes
``<DIR>/compile-profile-<worker>.json``: per test id, each event's total seconds and count, and the
test's wall time (``DIR``: ``$SUITE_PROFILE_DIR``, default the system's temporary directory). The
summary prints the totals and the tests by wall time and by compile time. Time spent in the
subprocesses some tests start is in their wall time only. It measures, it asserts nothing.
"""

from __future__ import annotations

import collections
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


def _listener(event: str, duration: float, **_: object) -> None:
    _totals[_current[0]][event] += duration
    _totals[_current[0]][event + "#n"] += 1


def pytest_configure(config):
    import jax.monitoring

    jax.monitoring.register_event_duration_secs_listener(_listener)


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
        json.dump(_totals, f)


def summarize(directory: str, top: int = 25) -> str:
    """The totals over every test process's file in ``directory``, and the ``top`` tests by wall and compile time."""
    totals: dict = collections.defaultdict(float)
    rows = []
    for path in sorted(glob.glob(os.path.join(directory, "compile-profile-*.json"))):
        with open(path, encoding="utf-8") as f:
            for test, events in json.load(f).items():
                for k, v in events.items():
                    totals[k] += v
                rows.append((events.get("wall", 0.0), events.get(COMPILE, 0.0), int(events.get(COMPILE + "#n", 0)),
                             test))
    lines = [f"in-process test time {totals['wall']:.1f} s: backend compile {totals[COMPILE]:.1f} s "
             f"({int(totals[COMPILE + '#n'])} compiles), lowering {totals[LOWER]:.1f} s, "
             f"tracing {totals[TRACE]:.1f} s, "
             f"persistent-cache hits {int(totals['/jax/compilation_cache/cache_retrieval_time_sec#n'])} "
             f"(compile time saved {totals['/jax/compilation_cache/compile_time_saved_sec']:.1f} s)"]
    for title, key in (("by wall time", 0), ("by compile time", 1)):
        lines.append(f"\n{title}:  wall  compile  compiles  test")
        lines += [f"{w:7.1f} {c:8.1f} {n:9d}  {t}" for w, c, n, t in sorted(rows, key=lambda r: -r[key])[:top]]
    return "\n".join(lines)


if __name__ == "__main__":
    print(summarize(sys.argv[1] if len(sys.argv) > 1 else _dir()))
