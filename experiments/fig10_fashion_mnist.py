"""Regenerate figures/fig10_fashion_mnist.{png,json,csv}: Figure 10 with Fashion-MNIST as the task.

    python experiments/fig10_fashion_mnist.py [--seeds 25] [--data-dir ../shared/data] [--out figures]

Every other setting is the paper's (``Config()`` defaults): the teacher learns Fashion-MNIST, the
students imitate it on uniform noise, and all six models are evaluated on the Fashion-MNIST test set.
"""

from pathlib import Path

from subliminal_mlp import Config, reproduce
from subliminal_mlp.cli import run_script, script_parser

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES, seeds=25)
    ap.add_argument("--on-divergence", choices=("warn", "fail"), default="warn",
                    help="diverged runs: warn and mark them (default), or fail (exit status 3) writing nothing")
    a = ap.parse_args()
    reproduce(Config(n_runs=a.seeds, dataset="fashion-mnist"), data_dir=a.data_dir, out_dir=a.out,
              stem="fig10_fashion_mnist", on_divergence=a.on_divergence)


if __name__ == "__main__":
    run_script(main)
