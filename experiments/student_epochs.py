"""Regenerate figures/student_epochs.{png,json}: student accuracy against distillation steps.

    python experiments/student_epochs.py [--seeds 10] [--epochs 20] [--data-dir ../shared/data] [--out figures]

Paper settings, but the students are distilled for 20 epochs; their test accuracy (first 2,000
test images) is traced every 10 steps inside the compiled loop, for the aux-only student that
shares the teacher's initialisation and for the cross-model one.
"""

from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.core.config import check_positive_int
from subliminal_mlp.core.results import format_ci
from subliminal_mlp.studies.trajectory import student_trajectories, write_trajectories

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def final_accuracies(record):
    return "\n".join(f"{name:<12} final test accuracy {record['final'][name]['mean']:.4f} "
                     f"± {format_ci(record['final'][name]['ci95'])}"
                     for name in ("reference", "teacher", "student_aux", "cross_aux"))


def main():
    ap = script_parser(__doc__, FIGURES)
    ap.add_argument("--epochs", type=int, default=20, help="student epochs (default 20)")
    a = ap.parse_args()
    check_positive_int("--epochs", a.epochs)
    cfg = Config(n_runs=a.seeds, student_epochs=a.epochs)  # checked before the output and the data
    run_study(a.out, ["student_epochs.json", "student_epochs.png"],
              lambda: student_trajectories(cfg, load_mnist(a.data_dir)),
              lambda record, out: write_trajectories(record, out, "student_epochs"), final_accuracies)


if __name__ == "__main__":
    run_script(main)
