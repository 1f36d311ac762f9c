"""Regenerate figures/alignment.{png,json}: gradient alignment through distillation, and its removal.

    python experiments/alignment_multistep.py [--seeds 10] [--held-out 256] [--data-dir ../shared/data] [--out figures]

Paper settings. At every distillation step, the cosine between each aux-only student's
distillation gradient and the gradient of the class cross-entropy on held-out MNIST images; then
the same students with that component projected out of every step (Kitkana & Arora 2026).
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.studies.alignment import format_alignment_table, run_alignment, write_alignment
from subliminal_mlp.cli import run_script
from subliminal_mlp.core.results import check_output

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--held-out", type=int, default=256)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    a = ap.parse_args()
    check_output(a.out, files=["alignment.json", "alignment.png"])
    record = run_alignment(Config(n_runs=a.seeds), load_mnist(a.data_dir), held_out=a.held_out, progress=True)
    print(format_alignment_table(record))
    for path in write_alignment(record, a.out).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
