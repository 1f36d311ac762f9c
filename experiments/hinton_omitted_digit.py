"""Regenerate figures/omitted_digit.{png,json,csv}: Hinton's omitted digit, in this library's MLP.

    python experiments/hinton_omitted_digit.py [--seeds 10] [--digit 3] [--data-dir ../shared/data] [--out figures]

The teacher learns all of MNIST (paper settings); students are distilled on all its logits over
the MNIST training images with every example of the digit removed (5 epochs, KL, Adam 3e-4).
"""

from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.omitted_digit import format_omitted_table, run_omitted_digit, write_omitted

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES)
    ap.add_argument("--digit", type=int, default=3,
                    help="the digit removed from the students' distillation images (default %(default)s)")
    a = ap.parse_args()
    run_study(a.out, [f"omitted_digit.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_omitted_digit(Config(n_runs=a.seeds), load_mnist(a.data_dir), a.digit),
              write_omitted, format_omitted_table)


if __name__ == "__main__":
    run_script(main)
