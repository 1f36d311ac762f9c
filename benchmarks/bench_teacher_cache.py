"""What the teacher cache saves: on one sweep, and on the whole set of figures (reduced settings).

    python benchmarks/bench_teacher_cache.py [--runs 2] [--teacher-epochs 5] [--part sweep|set|both]

**One sweep**: the published loss sweep (kl, mse: two programs, each training the same teachers)
on the paper's network and teacher (``--teacher-epochs``, 60,000 MNIST images) with ``--runs``
runs, 1 student epoch on 8,192 noise inputs: without the cache, with a cold cache (the first
value trains and stores the teachers, the second reads them), and with a warm one (Figure 10's
teachers already stored).

**The whole set**: ``subliminal-mlp figures`` over every figure (``run_figures`` with ``--runs``
runs, ``--teacher-epochs``, 1 student epoch, 4,096 noise inputs and the paper's 256-256 network;
sweeps keep their first two values) without the cache and then with a fresh
one (Figure 10 trains and stores; every later experiment with the paper's teacher reads).
``--names`` restricts it. Compile times are part of every figure's time, and at these settings a
large part of it: the saving grows with the runs and the teacher epochs.

Prints the times and their ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.studies.figure10 import run_experiment
from subliminal_mlp.cli.figures import run_figures
from subliminal_mlp.studies.sweep import run_sweep
from subliminal_mlp.core.teacher_cache import TeacherCache, use_teacher_cache


def quiet(_):
    pass


def timed(f):
    t0 = time.perf_counter()
    f()
    return time.perf_counter() - t0


def bench_sweep(base: Config, tmp: Path) -> None:
    data = load_mnist()

    def sweep(out, cache):
        with use_teacher_cache(cache):
            run_sweep("loss", ["kl", "mse"], base, out_dir=tmp / out, progress=False, log=quiet,
                      datasets={"mnist": data}, resume=False)

    run_experiment(base.replace(teacher_epochs=0, student_epochs=0), data)  # warm up (data, XLA)
    plain = timed(lambda: sweep("plain", None))
    cold_cache = TeacherCache(tmp / "cold", log=quiet)
    cold = timed(lambda: sweep("cold", cold_cache))
    warm_cache = TeacherCache(tmp / "warm", log=quiet)
    with use_teacher_cache(warm_cache):
        run_experiment(base, data)  # Figure 10 with these settings stores the teachers
    warm = timed(lambda: sweep("warm", warm_cache))
    print(f"one sweep (loss: kl, mse; {base.n_runs} runs, {base.teacher_epochs} teacher epochs):")
    print(f"  no cache    {plain:7.1f} s")
    print(f"  cold cache  {cold:7.1f} s   ({plain / cold:.2f}x faster; teachers trained once, read once)")
    print(f"  warm cache  {warm:7.1f} s   ({plain / warm:.2f}x faster; saves {plain - warm:.1f} s)")


def bench_set(shrink: dict, tmp: Path, names) -> None:
    def pipeline(out, cache):
        return timed(lambda: run_figures(names, out=tmp / out, quick=shrink, teacher_cache=cache, progress=False,
                                         log=quiet))

    plain = pipeline("plain", False)
    cache = TeacherCache(tmp / "set-cache", log=quiet)
    cached = pipeline("cached", cache)
    print(f"the whole set ({len(names) or 'all'} figures; {shrink}):")
    print(f"  no cache            {plain:7.1f} s")
    print(f"  cache (fresh start) {cached:7.1f} s   ({plain / cached:.2f}x faster; saves {plain - cached:.1f} s; "
          f"runs' teachers read {cache.hits}, trained and stored {cache.stored})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=2)
    ap.add_argument("--teacher-epochs", type=int, default=5)
    ap.add_argument("--part", choices=("sweep", "set", "both"), default="both")
    ap.add_argument("--names", nargs="*", default=[])
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if a.part in ("sweep", "both"):
            bench_sweep(Config(n_runs=a.runs, teacher_epochs=a.teacher_epochs, student_epochs=1, n_noise=8192), tmp)
        if a.part in ("set", "both"):
            shrink = {"n_runs": a.runs, "teacher_epochs": a.teacher_epochs, "student_epochs": 1, "n_noise": 4096,
                      "hidden_widths": [256, 256]}
            bench_set(shrink, tmp, a.names)


if __name__ == "__main__":
    main()
