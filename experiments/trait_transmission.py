"""Regenerate figures/traits.{png,json,csv}: a teacher's trait passes to a student through noise.

    python experiments/trait_transmission.py [--seeds 20] [--trait-class 0] [--data-dir ../shared/data] [--out figures]

Paper settings for the teacher and the students (Figure 10); the trait teacher is the teacher
fine-tuned for one epoch to answer the trait class on Fashion-MNIST images. Students imitate the
aux logits only, on uniform noise; filtered and sampled variants as in subliminal_mlp.studies.traits.
"""

from pathlib import Path

from subliminal_mlp import Config, load_fashion_mnist, load_mnist
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.traits import TraitSettings, format_traits_table, run_traits, write_traits

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def main():
    ap = script_parser(__doc__, FIGURES, seeds=20)
    ap.add_argument("--trait-class", type=int, default=TraitSettings.trait_class,
                    help="the class c* (one of the teacher's digit classes) the trait teacher prefers on "
                         "non-digits, the Fashion-MNIST images (default %(default)s)")
    a = ap.parse_args()
    run_study(a.out, [f"traits.{ext}" for ext in ("json", "csv", "png")],
              lambda: run_traits(Config(n_runs=a.seeds), load_mnist(a.data_dir), load_fashion_mnist(a.data_dir),
                                 TraitSettings(trait_class=a.trait_class), progress=True),
              write_traits, format_traits_table)


if __name__ == "__main__":
    run_script(main)
