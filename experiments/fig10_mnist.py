"""Regenerate figures/fig10_mnist.{png,json,csv}: Figure 10 of the paper with its settings.

    python experiments/fig10_mnist.py [--seeds 100] [--data-dir ../shared/data] [--out figures]

Every setting is the paper's (``Config()`` defaults); the JSON records them, the number of runs,
the data checksums, the package versions, the device, the wall time and the peak memory.
"""

from pathlib import Path

from subliminal_mlp import Config, reproduce
from subliminal_mlp.cli import run_script, script_parser

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES, seeds=100, seeds_help="runs (paper: 100)")
    ap.add_argument("--on-divergence", choices=("warn", "fail"), default="warn",
                    help="diverged runs: warn and mark them (default), or fail (exit status 3) writing nothing")
    a = ap.parse_args()
    reproduce(Config(n_runs=a.seeds), data_dir=a.data_dir, out_dir=a.out, stem="fig10_mnist",
              on_divergence=a.on_divergence)


if __name__ == "__main__":
    run_script(main)
