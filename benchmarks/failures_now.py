"""A pytest plugin for runs that may be stopped before pytest's summary: each failing test's report is
printed the moment it arrives, so a log cut off by a time limit still holds every traceback it saw.

    python -m pytest -p benchmarks.failures_now ...      (the checkout on PYTHONPATH)

Used by ``benchmarks/gpu.sh``: the device machine stops a command after 10 minutes, and the suite
runs under a ``timeout`` there. Under xdist the workers' reports reach the controlling process's
``pytest_runtest_logreport``, which prints them (what the workers themselves print is not shown).
"""

from __future__ import annotations


def pytest_runtest_logreport(report):
    if report.failed:
        print(f"\n=== FAILED ({report.when}) {report.nodeid} ===\n{report.longreprtext}\n=== end {report.nodeid} ===",
              flush=True)
