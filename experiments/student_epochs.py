"""Regenerate figures/student_epochs.{png,json}: student accuracy against distillation steps.

    python experiments/student_epochs.py [--seeds 10] [--epochs 20] [--data-dir ../shared/data] [--out figures]

Paper settings, but the students are distilled for 20 epochs; their test accuracy (first 2,000
test images) is traced every 10 steps inside the compiled loop, for the aux-only student that
shares the teacher's initialisation and for the cross-model one.
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script
from subliminal_mlp.core.results import check_output
from subliminal_mlp.studies.trajectory import student_trajectories, write_trajectories

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    a = ap.parse_args()
    check_output(a.out, files=["student_epochs.json", "student_epochs.png"])
    record = student_trajectories(Config(n_runs=a.seeds, student_epochs=a.epochs), load_mnist(a.data_dir))
    for name in ("reference", "teacher", "student_aux", "cross_aux"):
        f = record["final"][name]
        print(f"{name:<12} final test accuracy {f['mean']:.4f} ± {f['ci95']:.4f}")
    for path in write_trajectories(record, a.out, "student_epochs").values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
