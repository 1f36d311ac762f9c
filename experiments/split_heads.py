"""Regenerate figures/split_heads.{png,json,csv}: does the transfer need a shared hidden initialisation,
or only the teacher's initial output heads (arXiv 2605.23645)?

    python experiments/split_heads.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

A split-head teacher (a trunk, a class head, an aux head); students distilled on its aux logits over
noise, with fresh hidden layers and the teacher's initial heads (both, one, neither), with a layer
added or removed, or a small CNN; and the same question in the paper's single-head MLP
(subliminal_mlp.studies.split_heads).
"""

from pathlib import Path

from subliminal_mlp import load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.split_heads import (SplitHeadSettings, format_split_heads_table, run_split_heads,
                                                write_split_heads)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    d = SplitHeadSettings()
    ap = script_parser(__doc__, FIGURES, seeds=d.n_runs)
    ap.add_argument("--no-single-head", action="store_true", help="leave the single-head comparison out")
    a = ap.parse_args()
    settings = SplitHeadSettings(n_runs=a.seeds, single_head=not a.no_single_head)
    run_study(a.out, [f"split_heads.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_split_heads(settings, load_mnist(a.data_dir), progress=True, log=print),
              write_split_heads, format_split_heads_table)


if __name__ == "__main__":
    run_script(main)
