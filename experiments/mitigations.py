"""Regenerate figures/mitigations.{png,json,csv}: does liminal training, weight decay, plain SGD or the
task-gradient projection stop the student's gain, or only slow it, and at what cost to imitation?

    python experiments/mitigations.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

The paper's protocol otherwise (subliminal_mlp.studies.mitigations); each family's strengths are
swept in one compiled program, and the runs' teachers are trained once for every family.
"""

import argparse
from pathlib import Path

from subliminal_mlp import load_mnist
from subliminal_mlp.cli import run_script
from subliminal_mlp.core.results import check_output
from subliminal_mlp.studies.mitigations import (MitigationSettings, format_mitigations_table, run_mitigations,
                                                write_mitigations)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    d = MitigationSettings()
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=d.n_runs, help=f"runs per setting (default {d.n_runs})")
    ap.add_argument("--liminal-weights", type=float, nargs="*", default=list(d.liminal_weights))
    ap.add_argument("--liminal-epochs", type=int, nargs="*", default=list(d.liminal_epochs))
    ap.add_argument("--weight-decays", type=float, nargs="*", default=list(d.weight_decays))
    ap.add_argument("--sgd-learning-rates", type=float, nargs="*", default=list(d.sgd_learning_rates))
    ap.add_argument("--no-projection", action="store_true", help="leave the projection family out")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--out", default=str(FIGURES), help="output directory (default: figures/)")
    a = ap.parse_args()
    settings = MitigationSettings(n_runs=a.seeds, liminal_weights=a.liminal_weights, liminal_epochs=a.liminal_epochs,
                                  weight_decays=a.weight_decays, sgd_learning_rates=a.sgd_learning_rates,
                                  projection=not a.no_projection)
    check_output(a.out, files=[f"mitigations.{ext}" for ext in ("json", "csv", "png")])
    record = run_mitigations(settings, load_mnist(a.data_dir), progress=True, log=print)
    print(format_mitigations_table(record))
    for path in write_mitigations(record, a.out).values():
        print(f"wrote {path}")


if __name__ == "__main__":
    run_script(main)
