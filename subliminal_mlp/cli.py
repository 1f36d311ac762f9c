"""The ``subliminal-mlp`` command line."""

from __future__ import annotations

import argparse
import sys

from .config import DATASETS, LOSSES, STUDENT_INPUTS, Config, ConfigError


def _config_args(p: argparse.ArgumentParser) -> None:
    d = Config()
    g = p.add_argument_group("protocol (defaults: the paper's settings)")
    g.add_argument("--seeds", type=int, default=d.n_runs, metavar="N", help=f"number of runs (default {d.n_runs})")
    g.add_argument("--seed", type=int, default=d.seed, help="base seed; run i uses fold_in(seed, i)")
    g.add_argument("--epochs", type=int, default=None, help="teacher and student epochs (sets both)")
    g.add_argument("--teacher-epochs", type=int, default=d.teacher_epochs)
    g.add_argument("--student-epochs", type=int, default=d.student_epochs)
    g.add_argument("--aux-logits", "-m", type=int, default=d.aux_logits, help="number of auxiliary logits m")
    g.add_argument("--loss", choices=LOSSES, default=d.loss, help="distillation loss: kl (paper) or mse")
    g.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden_widths), metavar="W",
                   help="hidden layer widths (default 256 256)")
    g.add_argument("--lr", type=float, default=d.learning_rate, help="Adam learning rate")
    g.add_argument("--batch-size", type=int, default=d.batch_size)
    g.add_argument("--n-noise", type=int, default=d.n_noise, help="size of the fixed noise set per run")
    g.add_argument("--dataset", choices=DATASETS, default=d.dataset, help="the teacher's task")
    g.add_argument("--temperature", type=float, default=d.temperature, help="KL distillation temperature")
    g.add_argument("--student-inputs", choices=STUDENT_INPUTS, default=d.student_inputs,
                   help="what the students are distilled on (default: uniform noise, the paper)")
    g.add_argument("--input-mix", type=float, default=d.input_mix,
                   help="image weight α of --student-inputs mix (α·image + (1−α)·noise)")
    g.add_argument("--run-batch", type=int, default=None, help="runs advanced together per device")


def _run_args(p: argparse.ArgumentParser, out: str) -> None:
    p.add_argument("--data-dir", default=None,
                   help="data root holding mnist/ (else $SUBLIMINAL_MLP_DATA, the cache, then a download)")
    p.add_argument("--out", default=out, help=f"output directory (default {out})")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def _config_from(a: argparse.Namespace) -> Config:
    te, se = (a.epochs, a.epochs) if a.epochs is not None else (a.teacher_epochs, a.student_epochs)
    return Config(hidden_widths=tuple(a.hidden), aux_logits=a.aux_logits, learning_rate=a.lr,
                  batch_size=a.batch_size, teacher_epochs=te, student_epochs=se, n_noise=a.n_noise,
                  loss=a.loss, n_runs=a.seeds, seed=a.seed, dataset=a.dataset, run_batch=a.run_batch,
                  temperature=a.temperature, student_inputs=a.student_inputs, input_mix=a.input_mix)


def _cmd_reproduce(a: argparse.Namespace) -> int:
    from .reproduce import reproduce

    cfg = _config_from(a)
    reproduce(cfg, data_dir=a.data_dir, out_dir=a.out, stem=a.stem, progress=not a.no_progress)
    return 0


def _cmd_sweep(a: argparse.Namespace) -> int:
    from .sweep import parse_values, run_sweep

    values = parse_values(a.param, a.values)
    run_sweep(a.param, values, _config_from(a), data_dir=a.data_dir, out_dir=a.out, resume=not a.no_resume,
              progress=not a.no_progress)
    return 0


def _cmd_demo(a: argparse.Namespace) -> int:
    from .demo import demo

    demo(a.data_dir, a.out, a.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="subliminal-mlp",
        description="Subliminal learning in MLP classifiers: reproduce the paper's MNIST experiment "
                    "(Figure 10) and check its single-step gradient-alignment theorem.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("reproduce", help="run the paper's MNIST experiment (Figure 10)",
                       description="Teacher, aux-only and all-logit students, and cross-model controls, "
                                   "over N runs; writes JSON, CSV and the bar chart.")
    _config_args(r)
    _run_args(r, "results")
    r.add_argument("--stem", default="fig10", help="file name stem of the outputs")
    r.set_defaults(func=_cmd_reproduce)
    w = sub.add_parser("sweep", help="the Figure-10 protocol for each value of a config field",
                       description="Runs the protocol per value of PARAM (any Config field: aux_logits, "
                                   "hidden_widths as 512,512, learning_rate, loss, ...), writes a line plot, "
                                   "JSON and CSV; an interrupted sweep resumes from the finished values.")
    w.add_argument("param", help="the Config field to sweep, e.g. aux_logits")
    w.add_argument("values", nargs="+", help="its values (hidden_widths: comma-separated widths)")
    _config_args(w)
    _run_args(w, "results/sweep")
    w.add_argument("--no-resume", action="store_true", help="recompute values that are already done")
    w.set_defaults(func=_cmd_sweep)
    d = sub.add_parser("demo", help="a one-minute teaching demo: one figure that tells the story",
                       description="One teacher, two students on noise (same and different initialisation); "
                                   "writes one figure and says what it shows.")
    d.add_argument("--data-dir", default=None, help="data root holding mnist/")
    d.add_argument("--out", default="results/demo.png", help="figure path (default results/demo.png)")
    d.add_argument("--seed", type=int, default=0)
    d.set_defaults(func=_cmd_demo)
    from .theorem_cli import register as register_theorem

    register_theorem(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    from .data import DataError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, DataError) as e:
        print(f"subliminal-mlp: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
