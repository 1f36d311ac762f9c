"""Regenerate figures/input_families.{png,json,csv}: which distillation inputs carry the transfer.

    python experiments/input_families.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

Paper settings (Figure 10: 784-256-256-10+3, 5 + 5 epochs, 60,000 inputs per epoch); the aux-only
student (shared θ0) and its cross-model control are distilled on each family of inputs in turn:
the pixel distribution (uniform, Gaussian, Bernoulli ±1), a random k-dimensional subspace, blurred
noise and a phase-randomised MNIST-spectrum surrogate, the number of distinct noise images, and
the noise scale (subliminal_mlp.studies.input_families).
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script
from subliminal_mlp.core.results import check_output
from subliminal_mlp.studies.input_families import (FAMILIES, InputFamilySettings, format_input_families_table,
                                                   run_input_families, write_input_families)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10, help="runs per setting (default 10)")
    ap.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    a = ap.parse_args()
    check_output(a.out, files=[f"input_families.{ext}" for ext in ("json", "csv", "png")])
    record = run_input_families(Config(n_runs=a.seeds), load_mnist(a.data_dir),
                                InputFamilySettings(families=tuple(a.families)), progress=True, log=print)
    print(format_input_families_table(record))
    for path in write_input_families(record, a.out).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
