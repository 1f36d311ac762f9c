"""Regenerate figures/head_compatibility.{png,json,csv}: which shared layers carry the signal, and CKA.

    python experiments/head_compatibility.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

Paper settings. Students share with the teacher's initialisation all layers, only the hidden
layers, only the output layer, or nothing (aux-only and all-logit distillation), plus aux-only
students started from θ0 + σ·ξ; for each, its MNIST accuracy and the linear CKA between its
penultimate features and the teacher's (subliminal_mlp.studies.heads).
"""

import argparse
from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script
from subliminal_mlp.studies.heads import DEFAULT_SIGMAS, format_heads_table, run_heads, write_heads
from subliminal_mlp.core.results import check_output

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS))
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    a = ap.parse_args()
    check_output(a.out, files=[f"head_compatibility.{ext}" for ext in ("json", "csv", "png")])
    record = run_heads(Config(n_runs=a.seeds), load_mnist(a.data_dir), sigmas=a.sigmas, progress=True)
    print(format_heads_table(record))
    for path in write_heads(record, a.out).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
