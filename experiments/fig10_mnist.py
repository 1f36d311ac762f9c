"""Regenerate figures/fig10_mnist.{png,json,csv}: Figure 10 of the paper with its settings.

    python experiments/fig10_mnist.py [--seeds 100] [--data-dir ../shared/data] [--out figures]

Every setting is the paper's (``Config()`` defaults); the JSON records them, the number of runs,
the data checksums, the package versions, the device, the wall time and the peak memory.
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, reproduce
from subliminal_mlp.cli import run_script

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=100, help="number of runs (paper: 100)")
    ap.add_argument("--data-dir", default=None, help="data root holding mnist/")
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    ap.add_argument("--on-divergence", choices=("warn", "fail"), default="warn")
    args = ap.parse_args()
    reproduce(Config(n_runs=args.seeds), data_dir=args.data_dir, out_dir=args.out, stem="fig10_mnist",
              on_divergence=args.on_divergence)


if __name__ == "__main__":
    run_script(main)
