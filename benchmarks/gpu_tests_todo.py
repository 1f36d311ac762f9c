"""The tests that have not yet reported an outcome on a GPU, for the next session that has one.

    python benchmarks/gpu_tests_todo.py benchmarks/gpu-logs/*/tests*.log [--shard 1/2]

Prints one test id per line: every test of the suite as it is now (``pytest --collect-only``) less
those named ``PASSED`` or ``SKIPPED`` in the given logs (``pytest -v`` output; a log of ``pytest -q``
names no test, so it counts for nothing). A test named ``FAILED`` stays on the list. ``--shard i/n``
keeps every n-th id from the i-th (1-based), to split the run over several commands when one
command cannot run them all (the device machine stops a command after 10 minutes). Used by
``benchmarks/gpu.sh todo``; nothing here needs a GPU.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def collected() -> list[str]:
    """Every test id of the suite, in collection order."""
    done = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-n", "0", "-p", "no:cacheprovider"],
                          cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:  # say why (an import error, XLA refusing a flag), not only that it failed
        said = ((done.stdout + done.stderr)[-3000:].strip()
                or "(no output: a process that aborts at its start, as XLA does on a flag it does not know, "
                   "may say nothing)")
        flags = os.environ.get("XLA_FLAGS", "")
        sys.exit(f"pytest --collect-only failed (exit {done.returncode}; XLA_FLAGS={flags!r}):\n{said}")
    return [line.strip() for line in done.stdout.splitlines() if "::" in line]


def reported(logs: list[Path], ids: list[str]) -> set[str]:
    """The ``ids`` named ``PASSED`` or ``SKIPPED`` in ``pytest -v`` logs (with xdist the outcome comes
    before the id, without it after; ids may hold spaces, so they are looked up whole)."""
    text = "\n".join(log.read_text(errors="replace") for log in logs)
    return {t for t in ids for outcome in ("PASSED", "SKIPPED")
            if f"{outcome} {t} " in text or f"{outcome} {t}\n" in text or f"{t} {outcome}" in text}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("logs", nargs="*", type=Path, help="pytest -v logs of earlier GPU runs")
    ap.add_argument("--shard", default="1/1", help="i/n: every n-th test from the i-th (default 1/1: all)")
    a = ap.parse_args()
    i, n = (int(v) for v in a.shard.split("/"))
    if not 1 <= i <= n:
        ap.error(f"--shard {a.shard} is invalid: give i/n with 1 <= i <= n")
    ids = collected()
    done = reported(a.logs, ids)
    todo = [t for t in ids if t not in done]
    print("\n".join(todo[i - 1::n]))
    print(f"{len(todo)} of the suite's tests have no outcome in the {len(a.logs)} log(s); shard {i}/{n}: "
          f"{len(todo[i - 1::n])}", file=sys.stderr)


if __name__ == "__main__":
    main()
