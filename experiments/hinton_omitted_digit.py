"""Regenerate figures/omitted_digit.{png,json,csv}: Hinton's omitted digit, in this library's MLP.

    python experiments/hinton_omitted_digit.py [--seeds 10] [--digit 3] [--data-dir ../shared/data] [--out figures]

The teacher learns all of MNIST (paper settings); students are distilled on all its logits over
the MNIST training images with every example of the digit removed (5 epochs, KL, Adam 3e-4).
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script
from subliminal_mlp.studies.omitted_digit import format_omitted_table, run_omitted_digit, write_omitted
from subliminal_mlp.core.results import check_output

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--digit", type=int, default=3)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    args = ap.parse_args()
    check_output(args.out, files=[f"omitted_digit.{ext}" for ext in ("json", "csv", "png")])
    record = run_omitted_digit(Config(n_runs=args.seeds), load_mnist(args.data_dir), args.digit)
    print(format_omitted_table(record))
    for path in write_omitted(record, args.out).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
