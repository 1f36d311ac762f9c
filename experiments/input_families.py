"""Regenerate figures/input_families.{png,json,csv}: which distillation inputs carry the transfer.

    python experiments/input_families.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

Paper settings (Figure 10: 784-256-256-10+3, 5 + 5 epochs, 60,000 inputs per epoch); the aux-only
student (shared θ0) and its cross-model control are distilled on each family of inputs in turn:
the pixel distribution (uniform, Gaussian, Bernoulli ±1), a random k-dimensional subspace, blurred
noise and a phase-randomised MNIST-spectrum surrogate, the number of distinct noise images, and
the noise scale (subliminal_mlp.studies.input_families).
"""

from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.input_families import (FAMILIES, InputFamilySettings, format_input_families_table,
                                                   run_input_families, write_input_families)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES, seeds_help="runs per setting")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES,
                    help="the families of inputs to run (default: all)")
    a = ap.parse_args()
    run_study(a.out, [f"input_families.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_input_families(Config(n_runs=a.seeds), load_mnist(a.data_dir),
                                         InputFamilySettings(families=tuple(a.families)), progress=True, log=print),
              write_input_families, format_input_families_table)


if __name__ == "__main__":
    run_script(main)
