"""Regenerate figures/fig10_fashion_mnist.{png,json,csv}: Figure 10 with Fashion-MNIST as the task.

    python experiments/fig10_fashion_mnist.py [--seeds 25] [--data-dir ../shared/data] [--out figures]

Every other setting is the paper's (``Config()`` defaults): the teacher learns Fashion-MNIST, the
students imitate it on uniform noise, and all six models are evaluated on the Fashion-MNIST test set.
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, reproduce
from subliminal_mlp.cli import run_script

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=25, help="number of runs")
    ap.add_argument("--data-dir", default=None, help="data root holding fashion-mnist/")
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    ap.add_argument("--on-divergence", choices=("warn", "fail"), default="warn")
    args = ap.parse_args()
    reproduce(Config(n_runs=args.seeds, dataset="fashion-mnist"), data_dir=args.data_dir, out_dir=args.out,
              stem="fig10_fashion_mnist", on_divergence=args.on_divergence)


if __name__ == "__main__":
    run_script(main)
