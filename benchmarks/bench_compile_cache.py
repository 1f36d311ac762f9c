"""What JAX's persistent compilation cache saves a user who runs the same command again.

    python benchmarks/bench_compile_cache.py [--data-dir ../shared/data] [--runs 2] [--epochs 1]

The library compiles each experiment's program anew in every process. JAX can keep the compiled
executables on disk and read them back in a later process (its persistent compilation cache,
turned on by ``JAX_COMPILATION_CACHE_DIR``; ``JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0`` keeps
every program, not only those that took over a second). This script runs
``subliminal-mlp reproduce --runs R --epochs E --no-progress`` three times, each in a fresh process
(a JAX < 0.11 never stores a program with host callbacks, which the progress bars are), and reads
``timing.compile_s`` / ``timing.run_s`` from the record each one writes:

1. without the cache;
2. with a fresh, empty cache directory (the programs are compiled and stored);
3. again with that directory (the programs are read back).

It prints the three timings, the compile-time ratio of (1) to (3), the ``run_batch`` each process
used (on an accelerator it is fitted from XLA's memory analysis of a compiled program, which a warm
cache must not change), and whether the three records' accuracies are identical (they must be: the
cache hands back the same executable). Compilation
does not depend on the number of epochs (they are a ``lax.scan``), so the default 1 + 1 epochs
time the paper's programs. Prints numbers; asserts nothing about time.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from subliminal_mlp import read_results


def reproduce(out: Path, args: argparse.Namespace, cache: str | None) -> dict:
    """``timing`` and the per-model accuracies of one ``subliminal-mlp reproduce`` in a fresh process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JAX_COMPILATION_CACHE")}
    if cache is not None:
        env.update(JAX_COMPILATION_CACHE_DIR=cache, JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
    cmd = [sys.executable, "-m", "subliminal_mlp.cli", "reproduce", "--runs", str(args.runs),
           "--epochs", str(args.epochs), "--out", str(out), "--no-progress"]
    if args.data_dir:
        cmd += ["--data-dir", args.data_dir]
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    rec = read_results(out / "fig10.json")
    env_ = rec["environment"]
    return {"timing": rec["timing"], "devices": f"{', '.join(env_['devices'])}, jax {env_['jax']}",
            "run_batch": env_["run_batch"],
            "accuracies": {m: v["accuracies"] for m, v in rec["models"].items()}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-dir", default=None, help="MNIST root (default: the loader's search)")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--epochs", type=int, default=1, help="teacher and student epochs")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="bench-compile-cache-") as tmp:
        tmp = Path(tmp)
        cache = str(tmp / "jax-cache")
        rows = [("no cache", reproduce(tmp / "none", args, None)),
                ("cold cache (compiled, stored)", reproduce(tmp / "cold", args, cache)),
                ("warm cache (read back)", reproduce(tmp / "warm", args, cache))]
        stored = sum(1 for _ in Path(cache).iterdir())
    print(f"subliminal-mlp reproduce --runs {args.runs} --epochs {args.epochs} --no-progress, each in a fresh process "
          f"({rows[0][1]['devices']})")
    print("| process | compile | run | run_batch |\n| --- | --- | --- | --- |")
    for name, r in rows:
        print(f"| {name} | {r['timing']['compile_s']:.2f} s | {r['timing']['run_s']:.2f} s | {r['run_batch']} |")
    none, warm = rows[0][1]["timing"]["compile_s"], rows[2][1]["timing"]["compile_s"]
    print(f"compile without the cache / with a warm one: {none / warm:.2f}x ({stored} programs stored)")
    same = all(r["accuracies"] == rows[0][1]["accuracies"] for _, r in rows)
    print(f"accuracies identical in all three: {same}")
    same_batch = len({r["run_batch"] for _, r in rows}) == 1
    if not same_batch:
        print("run_batch differs between the processes: the cached program's memory analysis is not the compiled one's")
    return 0 if same and same_batch else 1


if __name__ == "__main__":
    raise SystemExit(main())
