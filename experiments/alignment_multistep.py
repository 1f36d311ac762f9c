"""Regenerate figures/alignment.{png,json}: gradient alignment through distillation, and its removal.

    python experiments/alignment_multistep.py [--seeds 10] [--held-out 256] [--data-dir ../shared/data]

Paper settings. At every distillation step, the cosine between each aux-only student's
distillation gradient and the gradient of the class cross-entropy on held-out MNIST images; then
the same students with that component projected out of every step (Kitkana & Arora 2026).
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.alignment import format_alignment_table, run_alignment, write_alignment

FIGURES = Path(__file__).resolve().parents[1] / "figures"

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--held-out", type=int, default=256)
    ap.add_argument("--data-dir", default=None)
    a = ap.parse_args()
    record = run_alignment(Config(n_runs=a.seeds), load_mnist(a.data_dir), held_out=a.held_out, progress=True)
    print(format_alignment_table(record))
    for path in write_alignment(record, FIGURES).values():
        print(f"wrote {path}")
