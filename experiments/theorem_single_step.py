"""Regenerate figures/theorem_single_step.png and .json: the single-step check of Theorem 1.

Paper MLP (784→256→256→10+3), L_T = class cross-entropy on 1,024 MNIST training images, 1,024
uniform-noise inputs, α = 1, 64 values of ε in [1e-6, 1], the four student loss settings, shared
and different initialisation, 5 seeds, float64 (protocol.md §2). Panels: (a) ΔθS·ΔθT/ε → A,
(b) the change of L_T, (c) both with a different initialisation. The logic lives in
``subliminal_mlp.theory.theorem`` (run_theorem_check, summarize, plot_theorem) on the kernels of
``subliminal_mlp.theory.kernels``; this script configures, runs and saves.

    .venv/bin/python experiments/theorem_single_step.py [--data-dir ../shared/data] [--seeds 5]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from subliminal_mlp.theory import theorem
from subliminal_mlp import theory
from subliminal_mlp.cli import run_script
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.models import mlp
from subliminal_mlp.core.results import atomic_write_text, check_output, data_record

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    """Run the check (protocol.md §2) with the figure's settings, print the tables, write the PNG and JSON."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data-dir", default=None, help="data root holding mnist/ (else $SUBLIMINAL_MLP_DATA, ...)")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "figures" / "theorem_single_step"), help="output path stem")
    a = ap.parse_args()
    out = Path(a.out)
    for path in (out.with_suffix(".json"), out.with_suffix(".png")):
        check_output(path, kind="file")

    model = mlp((256, 256), n_classes=10, aux_logits=3, input_dim=784, activation="relu")  # the paper's MLP
    ds = load_mnist(a.data_dir)
    record = theorem.run_theorem_check(
        images=ds.train_images, labels=ds.train_labels, model=model, losses=theory.STANDARD_LOSSES,
        eps=theory.eps_grid(1e-6, 1.0, 64), seeds=range(a.seeds), n_noise=1024, teacher_batch=1024,
        alpha=1.0, teacher_loss="ce",
        data_info=data_record(ds))
    summary = theorem.summarize(record)
    record["summary"] = summary
    record["caption"] = theorem.settings_caption(record)
    print(theorem.format_tables(summary))
    atomic_write_text(out.with_suffix(".json"), json.dumps(record, indent=1) + "\n")
    theorem.plot_theorem(record, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.png')} and {out.with_suffix('.json')}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    run_script(main)
