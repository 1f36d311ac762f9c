"""Cost of tracking gradient alignment during distillation, measured in one run.

    python benchmarks/bench_alignment.py [--data-dir ../shared/data] [--held-out 256] [--repeats 3]

Runs the alignment experiment's distillation (:func:`alignment.alignment_experiment`: four aux
students, shared and cross-model initialisation, each with and without the projection of the task
gradient) for one epoch of the paper's protocol in one run, through the engine, with and without
its per-step ``cos`` step metric (task gradient on a held-out batch, cosine with every student's
raw gradient). Both get the same untrained teacher (``teachers=``), so only distillation is run;
each is timed after compilation (the engine's ``run_s``, best of ``--repeats``). Target: tracking
adds at most 40 % to the wall time. Nothing is asserted.
"""

import argparse
import warnings

import jax

from subliminal_mlp import Config, engine, load_mnist
from subliminal_mlp.studies.alignment import alignment_experiment
from subliminal_mlp.core.results import DivergenceWarning


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--held-out", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    task = engine.Task.from_dataset(load_mnist(a.data_dir))
    cfg = Config(n_runs=1, student_epochs=1)
    tracked = alignment_experiment(cfg, held_out=a.held_out).replace(trace={})
    teachers = jax.tree.map(lambda p: p[None], tracked.model.init(jax.random.PRNGKey(0)))
    times = {}
    for name, exp in (("plain", tracked.replace(step_metrics={})), ("tracked", tracked)):
        with warnings.catch_warnings():  # the untrained teacher is meant: no "diverged" warning
            warnings.simplefilter("ignore", DivergenceWarning)
            times[name] = min(engine.run(exp, task, n_runs=1, teachers=teachers).run_s for _ in range(a.repeats))
    print(f"one distillation epoch, {len(tracked.students)} students, batch {cfg.batch_size}, "
          f"held-out batch {a.held_out}:")
    print(f"  without tracking {times['plain']:.3f} s, with tracking {times['tracked']:.3f} s")
    print(f"  overhead of tracking: {100 * (times['tracked'] / times['plain'] - 1):.1f} %   (target <= 40 %)")


if __name__ == "__main__":
    main()
