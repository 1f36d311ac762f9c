"""Where a Figure-10 run's wall time goes between kernels: the run against the time its kernels cover.

    python benchmarks/bench_program_gaps.py [--data-dir ../shared/data] [--top 30]
    # the same with another checkout of the library (e.g. the code before the engine, c45de7f):
    git worktree add /tmp/old c45de7f && PYTHONPATH=/tmp/old python benchmarks/bench_program_gaps.py

One run of the paper's protocol (``run_experiment(Config(n_runs=1))``): compiled and run once, then
run 3 times (the best ``run_s``, the executable's own time: compilation excluded), then once under
``jax.profiler`` (``xla_trace.trace_events``). It prints the run time, the time during which some
XLA kernel runs on any thread (the union of their intervals), the difference (the gaps between
kernels: the runtime's control flow and scheduling), the number of kernel events, and the kernels
with the longest summed durations. It uses only ``Config``, ``load_mnist`` and ``run_experiment``,
which every version of the library has, so two versions compare kernel by kernel. Nothing is
asserted; it prints what it measures.
"""

from __future__ import annotations

import argparse
import collections
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from xla_trace import covered_ns, trace_events  # noqa: E402

import subliminal_mlp  # noqa: E402
from subliminal_mlp import Config, load_mnist, run_experiment  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--top", type=int, default=30, help="kernels to list")
    a = ap.parse_args()
    print(f"library: {subliminal_mlp.__file__}")
    data, cfg = load_mnist(a.data_dir), Config(n_runs=1)
    run_experiment(cfg, data)  # compile once and warm up
    run_s = min(run_experiment(cfg, data).run_s for _ in range(3))
    events = trace_events(lambda: run_experiment(cfg, data))
    covered = covered_ns([(s, e) for s, e, _ in events]) / 1e9
    print(f"one run of the protocol: {run_s:.2f} s (best of 3, compilation apart); kernels cover {covered:.3f} s "
          f"(traced run); gaps {run_s - covered:.2f} s; {len(events)} kernel events")
    total, count = collections.Counter(), collections.Counter()
    for s, e, name in events:
        total[name] += e - s
        count[name] += 1
    print("longest kernels (summed ms, calls, name):")
    for name, ns in total.most_common(a.top):
        print(f"{ns / 1e6:9.1f}  {count[name]:6d}  {name}")


if __name__ == "__main__":
    main()
