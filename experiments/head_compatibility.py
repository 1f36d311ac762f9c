"""Regenerate figures/head_compatibility.{png,json,csv}: which shared layers carry the signal, and CKA.

    python experiments/head_compatibility.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

Paper settings. Students share with the teacher's initialisation all layers, only the hidden
layers, only the output layer, or nothing (aux-only and all-logit distillation), plus aux-only
students started from θ0 + σ·ξ; for each, its MNIST accuracy and the linear CKA between its
penultimate features and the teacher's (subliminal_mlp.studies.heads).
"""

from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.heads import DEFAULT_SIGMAS, format_heads_table, run_heads, write_heads

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES)
    ap.add_argument("--sigmas", type=float, nargs="+", default=list(DEFAULT_SIGMAS),
                    help="σ of the students started from a perturbed θ0 (default %(default)s)")
    a = ap.parse_args()
    run_study(a.out, [f"head_compatibility.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_heads(Config(n_runs=a.seeds), load_mnist(a.data_dir), sigmas=a.sigmas, progress=True),
              write_heads, format_heads_table)


if __name__ == "__main__":
    run_script(main)
