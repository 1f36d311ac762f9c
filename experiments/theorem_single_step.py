"""Regenerate figures/theorem_single_step.png and .json: the single-step check of Theorem 1.

Paper MLP (784→256→256→10+3), L_T = class cross-entropy on 1,024 MNIST training images, 1,024
uniform-noise inputs, α = 1, 64 values of ε in [1e-6, 1], the four student loss settings, shared
and different initialisation, 5 seeds, float64 (protocol.md §2). Panels, shared initialisation:
(a) ΔθS·ΔθT/ε → A, (b) its relative gap to A, (c) the change of L_T; different initialisation:
(d) ΔθS·ΔθT/ε, (e) the change of L_T, (f) ‖ΔθS(ε) − ΔθS(0)‖/‖ΔθS(0)‖. The logic lives in
``subliminal_mlp.theory.theorem`` (run_theorem_check, summarize, plot_theorem) on the kernels of
``subliminal_mlp.theory.kernels``; this script configures, runs and saves.

    python experiments/theorem_single_step.py [--data-dir ../shared/data] [--seeds 5] [--out figures]
"""

from __future__ import annotations

import json
from pathlib import Path

from subliminal_mlp import theory
from subliminal_mlp.cli import run_study, run_script, script_parser
from subliminal_mlp.core.config import check_positive_int
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.models import mlp
from subliminal_mlp.core.results import atomic_write_text, data_record
from subliminal_mlp.theory import theorem

FIGURES = Path(__file__).resolve().parents[1] / "figures"
STEM = "theorem_single_step"


def main() -> int:
    """Run the check (protocol.md §2) with the figure's settings, print the tables, write the PNG and JSON."""
    a = script_parser(__doc__, FIGURES, seeds=5, seeds_help="seeds (initialisations) checked").parse_args()
    check_positive_int("--seeds", a.seeds)

    def compute() -> dict:
        model = mlp((256, 256), n_classes=10, aux_logits=3, input_dim=784, activation="relu")  # the paper's MLP
        ds = load_mnist(a.data_dir)
        record = theorem.run_theorem_check(
            images=ds.train_images, labels=ds.train_labels, model=model, losses=theory.STANDARD_LOSSES,
            eps=theory.eps_grid(1e-6, 1.0, 64), seeds=range(a.seeds), n_noise=1024, teacher_batch=1024,
            alpha=1.0, teacher_loss="ce", data_info=data_record(ds))
        record["summary"] = theorem.summarize(record)
        record["caption"] = theorem.settings_caption(record)
        return record

    def write(record: dict, out) -> dict:
        json_path = atomic_write_text(Path(out) / f"{STEM}.json", json.dumps(record, indent=1) + "\n")
        png = Path(out) / f"{STEM}.png"
        theorem.plot_theorem(record, png)
        return {"json": json_path, "png": png}

    record = run_study(a.out, [f"{STEM}.json", f"{STEM}.png"], compute, write,
                       lambda r: theorem.format_tables(r["summary"]))
    return 0 if record["summary"]["ok"] else 1


if __name__ == "__main__":
    run_script(main)
