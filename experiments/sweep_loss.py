"""Regenerate figures/sweeps/loss/: the Figure-10 protocol swept over loss (see PUBLISHED_SWEEPS).

    python experiments/sweep_loss.py [--seeds 10] [--data-dir ../shared/data] [--values ...]
"""

from pathlib import Path

from subliminal_mlp.cli import run_script
from subliminal_mlp.studies.sweep import published_sweep_main

if __name__ == "__main__":
    run_script(lambda: published_sweep_main("loss", Path(__file__).resolve().parents[1] / "figures" / "sweeps"))
