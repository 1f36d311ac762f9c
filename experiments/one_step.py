"""Regenerate figures/one_step.{png,json,csv}: does the first step predict the final transfer?

    python experiments/one_step.py [--input-families figures/input_families.json]
                                   [--teacher-task figures/teacher_task.json] [--mitigations figures/mitigations.json]
                                   [--split-heads figures/split_heads.json] [--sweeps figures/sweeps]
                                   [--only] [--data-dir ../shared/data] [--out figures]

For every setting of the committed study records (input families, teacher task, mitigations, split
heads, the published sweeps; each used when it exists; same runs and seeds; with --only, just the
records given on the command line, e.g. your own tiny ones), the single-step
quantities at the start of distillation — the cosine of the student's first optimiser update and of
its first gradient step with the teacher's total displacement θT − θ0, and the theorem's coefficient
A — against the student's final gain over its cross-model control, with Spearman's rank correlation
across settings and within each family (subliminal_mlp.studies.one_step).
"""

from pathlib import Path

from subliminal_mlp import ConfigError, load_mnist, read_results
from subliminal_mlp.cli import run_script, run_study, script_parser
from subliminal_mlp.studies.one_step import (format_one_step_table, read_published_sweeps, run_one_step,
                                            write_one_step)

FIGURES = Path(__file__).resolve().parents[1] / "figures"
#: The study records read when they exist (the input families' record is required).
OPTIONAL = ("teacher_task", "mitigations", "split_heads")


def main():
    ap = script_parser(__doc__, FIGURES, seeds=None)  # the runs are the records'
    ap.add_argument("--input-families", default=None,
                    help="its record (default: figures/input_families.json, unless --only)")
    for name in OPTIONAL:
        ap.add_argument("--" + name.replace("_", "-"), default=None,
                        help=f"its record (default: figures/{name}.json, used if it exists, unless --only)")
    ap.add_argument("--sweeps", default=None,
                    help="the published sweeps' directory (default: figures/sweeps, used if it exists, unless --only)")
    ap.add_argument("--only", action="store_true",
                    help="use only the records given on the command line (not the committed ones beside them)")
    a = ap.parse_args()
    # A path given on the command line must exist; a default is used only where it exists (and not with --only).
    given = {name: getattr(a, name) for name in ("input_families", *OPTIONAL) if getattr(a, name) is not None}
    for name, path in given.items():
        if not Path(path).is_file():
            raise ConfigError(f"--{name.replace('_', '-')} {path}: no such record file.")
    if a.sweeps is not None and not Path(a.sweeps).is_dir():
        raise ConfigError(f"--sweeps {a.sweeps}: no such directory.")
    if a.only and not given and a.sweeps is None:
        raise ConfigError("--only uses the records given on the command line, and none is: give at least one of "
                          "--input-families, --teacher-task, --mitigations, --split-heads, --sweeps.")
    defaults = {} if a.only else {name: str(FIGURES / f"{name}.json") for name in ("input_families", *OPTIONAL)
                                  if name == "input_families" or (FIGURES / f"{name}.json").is_file()}
    paths = {**defaults, **given}
    sweeps_dir = a.sweeps or (str(FIGURES / "sweeps") if not a.only and (FIGURES / "sweeps").is_dir() else None)
    records = {name: read_results(path) for name, path in paths.items()}  # damaged records: refused before compute
    for name, path in paths.items():
        if name not in given:
            print(f"{name}: using the committed record {path} (--only would leave it out)")
    sweeps = read_published_sweeps(sweeps_dir) if sweeps_dir else None

    def compute():
        return run_one_step(load_mnist(a.data_dir), sweeps=sweeps, data_dir=a.data_dir, progress=True, log=print,
                            **records)

    run_study(a.out, [f"one_step.{ext}" for ext in ("json", "csv", "png")], compute, write_one_step,
              format_one_step_table)


if __name__ == "__main__":
    run_script(main)
