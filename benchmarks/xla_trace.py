"""XLA:CPU kernel traces read back from ``jax.profiler``: the events of a call and the time they cover.

Shared by ``bench_step.py`` and ``bench_program_gaps.py``; it imports nothing of this library, so it
works with any checkout of it (run a benchmark with ``PYTHONPATH`` set to another checkout).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import jax


def trace_events(run) -> list[tuple[int, int, str]]:
    """(start ns, end ns, kernel name) of every XLA kernel executed while ``run()`` runs."""
    with tempfile.TemporaryDirectory() as tmp:
        with jax.profiler.trace(tmp):
            run()
        pb = sorted(Path(tmp).rglob("*.xplane.pb"))[-1]
        profile = jax.profiler.ProfileData.from_file(str(pb))
    skip = ("ThunkExecutor", "Threadpool", "end:", "SlinkyThreadPool", "while")
    events = []
    for plane in profile.planes:
        for line in plane.lines:
            if not line.name.startswith("tf_XLAEigen"):
                continue
            events += [(e.start_ns, e.start_ns + e.duration_ns, e.name) for e in line.events
                       if not e.name.startswith(skip)]
    return sorted(events)


def covered_ns(intervals) -> int:
    """Length of the union of ``(start, end)`` intervals."""
    total, cur = 0, None
    for s, e in sorted(intervals):
        if cur is None or s > cur[1]:
            total += 0 if cur is None else cur[1] - cur[0]
            cur = [s, e]
        else:
            cur[1] = max(cur[1], e)
    return total + (0 if cur is None else cur[1] - cur[0])
