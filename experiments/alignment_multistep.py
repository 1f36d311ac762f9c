"""Regenerate figures/alignment.{png,json}: gradient alignment through distillation, and its removal.

    python experiments/alignment_multistep.py [--seeds 10] [--held-out 256] [--n-probe 2000]
        [--probe-every 10] [--projection aligned] [--data-dir ../shared/data] [--out figures]

Paper settings. At every distillation step, the cosine between each aux-only student's
distillation gradient and the gradient of the class cross-entropy on held-out MNIST images; then
the same students with that component projected out of every step where the two align (Kitkana &
Arora 2026; --projection always: on every step).
"""

from pathlib import Path

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.alignment import format_alignment_table, run_alignment, write_alignment

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES)
    ap.add_argument("--held-out", type=int, default=256,
                    help="last test images of the task gradient the updates are compared with (default %(default)s)")
    ap.add_argument("--n-probe", type=int, default=2000,
                    help="first test images of the accuracy trace; with --held-out at most the 10,000 test images "
                         "(default %(default)s)")
    ap.add_argument("--probe-every", type=int, default=10,
                    help="the accuracy is traced before every n-th batch of each epoch (default %(default)s)")
    ap.add_argument("--projection", choices=("aligned", "always"), default="aligned",
                    help="remove the task component on the steps where it aligns with the update (Kitkana & Arora's "
                         "test), or on every step (default %(default)s)")
    a = ap.parse_args()
    run_study(a.out, ["alignment.json", "alignment.png"],
              lambda: run_alignment(Config(n_runs=a.seeds), load_mnist(a.data_dir), held_out=a.held_out,
                                    n_probe=a.n_probe, probe_every=a.probe_every, projection=a.projection,
                                    progress=True),
              write_alignment, format_alignment_table)


if __name__ == "__main__":
    run_script(main)
