"""How the Threefry lowering of ``internal.unrolled_threefry`` changes compile time, run time and bits.

    python benchmarks/bench_threefry_lowering.py [--data-dir ../shared/data] [--rounds 2] [--no-run]

Three lowerings of the same engine programs, on CPU: the library's (``UNROLL_MIN_SIZE``: a hash of
one number keeps JAX's rolled loop, every larger one is unrolled), every hash unrolled (the
library before session 26) and every hash rolled (JAX's own CPU lowering). For three Figure-10
experiments (no training steps; a tiny one; the paper's, one run) it prints the compile time of
each lowering (best of ``--rounds``, the persistent compilation cache off, the variants taken in
turn so that the host's drift falls on all alike), its ratio to the library's, the paper run's
time (``--no-run``: the small two only), and whether every lowering gives the library's accuracies
bit for bit.
The XLA options are the library's; set ``XLA_FLAGS`` to compare others (the test suite compiles
with ``--xla_cpu_use_fusion_emitters=false``, see tests/conftest.py). Nothing is asserted.
"""

from __future__ import annotations

import argparse

import jax
import numpy as np

import subliminal_mlp as sm
from subliminal_mlp import inputs, internal

LOWERINGS = {"library (by size)": internal.UNROLL_MIN_SIZE, "all unrolled": 0, "all rolled": 2**62}


def experiments() -> dict[str, sm.Experiment]:
    tiny = sm.Experiment(model=sm.mlp((32,)), inputs=inputs.uniform(2048), teacher_epochs=1, student_epochs=1,
                         batch_size=512)
    return {"no steps": tiny.replace(teacher_epochs=0, student_epochs=0), "tiny": tiny, "paper": sm.Experiment()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--no-run", action="store_true",
                    help="leave out the paper's program (its run takes ~12 s per lowering and round)")
    a = ap.parse_args()
    jax.config.update("jax_enable_compilation_cache", False)
    task = sm.Task.from_dataset(sm.load_mnist(a.data_dir))
    compile_s, run_s, acc = {}, {}, {}
    for name, exp in experiments().items():
        if a.no_run and name == "paper":
            continue
        for _ in range(a.rounds):
            for low, size in LOWERINGS.items():
                internal.UNROLL_MIN_SIZE = size
                r = sm.run(exp, task, n_runs=1)
                key = (name, low)
                compile_s[key] = min(compile_s.get(key, np.inf), r.compile_s)
                run_s[key] = min(run_s.get(key, np.inf), r.run_s)
                acc[key] = np.asarray(r.accuracies)
    lib = next(iter(LOWERINGS))
    print(f"{'program':10s} {'lowering':18s} {'compile s':>9s} {'vs library':>10s} {'run s':>7s}  same bits")
    for (name, low), c in compile_s.items():
        same = np.array_equal(acc[name, low], acc[name, lib])
        print(f"{name:10s} {low:18s} {c:9.2f} {c / compile_s[name, lib]:10.2f} {run_s[name, low]:7.2f}  {same}")


if __name__ == "__main__":
    main()
