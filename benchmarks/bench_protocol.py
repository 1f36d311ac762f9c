"""Speed and memory of the Figure-10 protocol, as ratios measured in one run.

    python benchmarks/bench_protocol.py [--data-dir ../shared/data] [--runs 2] [--scaling 1 4 16]
                                        [--memory-runs 100] [--run-batches 1 4 16 32 100]
                                        [--precision float32|tensorfloat32|default]

On a GPU (``pip install -e '.[cuda]'``)::

    python benchmarks/bench_protocol.py --runs 100 --repeats 2 --scaling --memory-runs 0 \
        --run-batches 1 4 16 32 100

1. Throughput. The model FLOPs the protocol needs (``subliminal_mlp.report.flops.protocol_flops``: per
   example and layer (i, o), 2io forward, 4io backward, 2io backward for the first layer; one
   teacher forward and four student steps per noise example; evaluation not counted), divided by
   the protocol's wall time (compilation excluded and reported apart; evaluation included), divided
   by the best fp32 matmul throughput XLA reaches on this machine (square matmuls of several
   sizes, measured before and after the protocol in this same run). Both sides are the best of
   several timings (``--repeats`` for the protocol), since the machine is shared and noisy; the
   median is printed too. Target on 2 CPU cores: >= 0.70. For comparison it also prints the rate
   XLA sustains over 100 back-to-back matmuls in one program (lower than a single matmul's burst)
   and the protocol's fraction of that; the target is judged against the burst peak.
2. Scaling. Wall time for 1, 4, 16 runs (shortened to 1 + 1 epochs): it should grow linearly,
   i.e. time per run constant.
3. Memory. Peak resident memory of a fresh process running ``--memory-runs`` runs (1 + 1 epochs:
   memory does not depend on the number of epochs), beside one running 4 runs: the process's own peak
   (``peak_rss_mb``, Linux's ``VmHWM``; logs before 2026-11-25 read ``ru_maxrss``, which a child
   inherits from this parent, so they show this process's peak instead). Target: < 3 GB for 100 runs.
   ``--runs 0 --scaling --memory-runs 100`` measures the memory alone (``cpu.sh memory``).
4. ``--run-batches``: the wall time of ``--runs`` runs for each ``run_batch`` (runs advanced
   together per device); the one the library picks from the device's memory is section 1's.

Matmul precision. On CPU every float32 matmul is computed in float32. On NVIDIA GPUs since
Ampere, XLA may compute float32 matmuls with TensorFloat-32 inputs at JAX's default precision;
``--precision`` runs the protocol *and* the matmul peak at the same precision
(``jax.default_matmul_precision``), and the header prints the error of a 1024×1024 float32 matmul
against float64 at each precision, so the reader sees which arithmetic ran. The ratio is given
against the peak at the protocol's precision and against the true-float32 peak.
Nothing here asserts a time; it prints what it measures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from subliminal_mlp import Config, load_mnist, run_experiment
from subliminal_mlp.report.flops import protocol_flops


def best_seconds(run, repeats: int) -> float:
    """The shortest of ``repeats`` timings of ``run()`` (results waited for), after one untimed call."""
    jax.block_until_ready(run())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run())
        times.append(time.perf_counter() - t)
    return min(times)


def matmul_peak(sizes=None, repeats=5) -> tuple[float, int]:
    """Best fp32 matmul FLOP/s XLA reaches here over square sizes (best of ``repeats`` each),
    at the matmul precision in force (``jax.default_matmul_precision``)."""
    if sizes is None:
        sizes = (1024, 2048, 3072) if jax.default_backend() == "cpu" else (4096, 8192, 16384)
    best = (0.0, 0)
    for n in sizes:
        a = jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32)
        f = jax.jit(lambda a: a @ a)
        best = max(best, (2 * n**3 / best_seconds(lambda: f(a), repeats), n))
    return best


def matmul_sustained(n: int = 1024, count: int = 100, repeats: int = 5) -> float:
    """fp32 FLOP/s of ``count`` back-to-back n×n matmuls in one compiled loop (best of ``repeats``).

    ``b ← q @ b`` with ``q`` orthogonal, so the values stay O(1) and nothing but the matmuls runs:
    the rate XLA keeps up over ~0.5 s, as the protocol must, rather than one matmul's burst.
    """
    q = jnp.linalg.qr(jax.random.normal(jax.random.PRNGKey(0), (n, n), jnp.float32))[0]
    b = jax.random.normal(jax.random.PRNGKey(1), (n, n), jnp.float32)
    f = jax.jit(lambda q, b: jax.lax.fori_loop(0, count, lambda i, b: q @ b, b))
    return count * 2 * n**3 / best_seconds(lambda: f(q, b), repeats)


def matmul_error(precision) -> float:
    """Relative error of a 1024×1024 float32 matmul at ``precision`` against float64 (numpy)."""
    a = np.random.default_rng(0).standard_normal((1024, 1024)).astype(np.float32)
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
        got = np.asarray(jax.jit(lambda a: a @ a)(jnp.asarray(a)), np.float64)
    ref = a.astype(np.float64) @ a.astype(np.float64)
    return float(np.linalg.norm(got - ref) / np.linalg.norm(ref))


MEMORY_CHILD = """
import json, sys
from subliminal_mlp import Config, load_mnist, run_experiment
from subliminal_mlp.core.results import peak_rss_mb
data = load_mnist(sys.argv[2])
base = peak_rss_mb()
r = run_experiment(Config(n_runs=int(sys.argv[1]), teacher_epochs=1, student_epochs=1), data)
print(json.dumps({"peak_rss_mb": peak_rss_mb(), "after_data_mb": base, "run_s": r.run_s}))
"""


def peak_memory(n_runs: int, data_dir: str) -> dict:
    out = subprocess.run([sys.executable, "-c", MEMORY_CHILD, str(n_runs), data_dir],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--runs", type=int, default=2,
                    help="runs of the full protocol for the throughput ratio (0: skip it and --run-batches)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="times the protocol is timed; the best is used, as for the matmul peak")
    ap.add_argument("--scaling", type=int, nargs="*", default=[1, 4, 16])
    ap.add_argument("--memory-runs", type=int, default=100, help="0 to skip the memory measurement")
    ap.add_argument("--run-batches", type=int, nargs="*", default=[],
                    help="time --runs runs at each of these run_batch values (e.g. 1 4 16 32 100 on a GPU)")
    ap.add_argument("--precision", default="default", choices=["default", "float32", "tensorfloat32"],
                    help="jax.default_matmul_precision for the protocol and the matmul peak")
    args = ap.parse_args()
    data = load_mnist(args.data_dir)
    dev = jax.devices()[0]
    print(f"device: {dev.platform} ({dev.device_kind}), {len(jax.devices())} device(s); jax {jax.__version__}")
    print("float32 matmul error against float64 (1024x1024): "
          + ", ".join(f"{p or 'default'} {matmul_error(p):.1e}" for p in (None, "float32", "tensorfloat32")))
    precision = None if args.precision == "default" else args.precision
    with jax.default_matmul_precision(precision) if precision else contextlib.nullcontext():
        measure(args, data)


def throughput(args, data) -> None:
    """Section [1]: the protocol's model FLOPs per second against the matmul peak, measured before and after it."""
    peak0, n0 = matmul_peak()
    sustained0 = matmul_sustained()
    cfg = Config(n_runs=args.runs)
    timed = [run_experiment(cfg, data) for _ in range(max(1, args.repeats))]
    peak1, n1 = matmul_peak()
    sustained = max(sustained0, matmul_sustained())
    peak, n = max((peak0, n0), (peak1, n1))
    walls = sorted(r.run_s for r in timed)
    best, median = walls[0], walls[len(walls) // 2]
    flops = protocol_flops(cfg)["total"]
    achieved = flops / best
    print(f"\n[1] throughput, {args.runs} run(s) of the full protocol (5 + 5 epochs), timed {len(walls)} times")
    print(f"    fp32 matmul peak (XLA, {n}x{n}): {peak / 1e9:.0f} GFLOP/s "
          f"(best of 5 per size; before {peak0 / 1e9:.0f}, after {peak1 / 1e9:.0f})")
    print(f"    protocol wall times: {', '.join(f'{w:.2f}' for w in walls)} s "
          f"(compile {timed[0].compile_s:.1f} s apart)")
    print(f"    model FLOPs {flops / 1e12:.3f} TFLOP in {best:.2f} s (best) = {achieved / 1e9:.0f} GFLOP/s")
    print(f"    RATIO protocol / matmul peak = {achieved / peak:.3f} with the best time, "
          f"{flops / median / peak:.3f} with the median   (target >= 0.70 on 2 CPU cores, >= 0.5 on a GPU)")
    if jax.default_backend() != "cpu":  # on CPU every precision is float32: the peak above
        with jax.default_matmul_precision("float32"):
            fp32_peak, fp32_n = matmul_peak()
        print(f"    true-float32 matmul peak ({fp32_n}x{fp32_n}): {fp32_peak / 1e9:.0f} GFLOP/s; "
              f"protocol / it = {achieved / fp32_peak:.3f}")
    print(f"    for comparison, the sustained matmul rate (100 back-to-back 1024x1024 matmuls in one program, "
          f"best of 5): {sustained / 1e9:.0f} GFLOP/s; the protocol reaches {achieved / sustained:.3f} of it")
    print(f"    per run: {best / args.runs:.2f} s -> 100 runs ~ {100 * best / args.runs / 60:.1f} min "
          f"(run_batch {timed[0].run_batch})")


def measure(args, data) -> None:
    """Sections [1]–[4] of the module docstring, at the matmul precision in force ([1] not with ``--runs 0``)."""
    if args.runs:
        throughput(args, data)

    if args.scaling:
        print("\n[2] scaling with the number of runs (1 + 1 epochs)")
        base = None
        for n_runs in args.scaling:
            rr = run_experiment(Config(n_runs=n_runs, teacher_epochs=1, student_epochs=1), data)
            per = rr.run_s / n_runs
            base = base or per
            print(f"    {n_runs:>4} runs: {rr.run_s:7.2f} s  ({per:.3f} s/run, x{per / base:.2f} of the "
                  f"1-run time per run; compile {rr.compile_s:.1f} s)")

    if args.run_batches and args.runs:
        print(f"\n[4] wall time of {args.runs} runs of the full protocol against run_batch")
        for b in args.run_batches:
            rr = run_experiment(Config(n_runs=args.runs, run_batch=b), data)
            print(f"    run_batch {b:>4}: {rr.run_s:7.2f} s  (compile {rr.compile_s:.1f} s)", flush=True)

    if args.memory_runs:
        print("\n[3] peak resident memory (fresh process, 1 + 1 epochs)")
        for n_runs in sorted({4, args.memory_runs}):
            m = peak_memory(n_runs, str(Path(data.source_dir).parent))
            print(f"    {n_runs:>4} runs: peak RSS {m['peak_rss_mb']:.0f} MiB, the process's own "
                  f"({m['after_data_mb']:.0f} MiB after loading the data)   (target < 3000 MB)")


if __name__ == "__main__":
    main()
