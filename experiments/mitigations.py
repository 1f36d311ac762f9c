"""Regenerate figures/mitigations.{png,json,csv}: does liminal training, weight decay, plain SGD or the
task-gradient projection stop the student's gain, or only slow it, and at what cost to imitation?

    python experiments/mitigations.py [--seeds 10] [--data-dir ../shared/data] [--out figures]

The paper's protocol otherwise (subliminal_mlp.studies.mitigations); each family's strengths are
swept in one compiled program, and the runs' teachers are trained once for every family.
"""

from pathlib import Path

from subliminal_mlp import load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.mitigations import (MitigationSettings, format_mitigations_table, run_mitigations,
                                                write_mitigations)

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    d = MitigationSettings()
    ap = script_parser(__doc__, FIGURES, seeds=d.n_runs, seeds_help="runs per setting")
    ap.add_argument("--liminal-weights", type=float, nargs="*", default=list(d.liminal_weights),
                    help="λ of the liminal penalty, > 0; the baseline λ = 0 always runs (default %(default)s)")
    ap.add_argument("--liminal-epochs", type=int, nargs="*", default=list(d.liminal_epochs),
                    help="epochs T under the penalty, each in 1..student epochs (default %(default)s)")
    ap.add_argument("--weight-decays", type=float, nargs="*", default=list(d.weight_decays),
                    help="AdamW weight decays (default %(default)s)")
    ap.add_argument("--sgd-learning-rates", type=float, nargs="*", default=list(d.sgd_learning_rates),
                    help="plain SGD learning rates (default %(default)s)")
    ap.add_argument("--no-projection", action="store_true", help="leave the projection family out")
    a = ap.parse_args()
    settings = MitigationSettings(n_runs=a.seeds, liminal_weights=a.liminal_weights, liminal_epochs=a.liminal_epochs,
                                  weight_decays=a.weight_decays, sgd_learning_rates=a.sgd_learning_rates,
                                  projection=not a.no_projection)
    run_study(a.out, [f"mitigations.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_mitigations(settings, load_mnist(a.data_dir), progress=True, log=print),
              write_mitigations, format_mitigations_table)


if __name__ == "__main__":
    run_script(main)
