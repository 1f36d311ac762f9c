"""The ``subliminal-mlp theorem`` subcommand: a self-check of the paper's Theorem 1 (protocol.md §2).

For each seed it builds the MLP (default: the paper's 784→256→256→10+3 ReLU network; ``--hidden``,
``-m`` and ``--activation`` choose another :func:`subliminal_mlp.core.models.mlp`), a teacher step on
``L_T`` built for that model (default: its class cross-entropy on a batch of MNIST training
images), a batch of noise inputs, and runs :func:`subliminal_mlp.theory.kernels.sweep` over a grid of ε for
the chosen student loss settings with a shared and with a different initialisation
(:func:`subliminal_mlp.theory.theorem.run_theorem_check`). It prints one table per loss setting and exits
with status 1 when the theorem's prediction fails (0 when it holds; 2 on bad arguments or data), so
it doubles as a self-check of the library.
"""

from __future__ import annotations

import argparse
import json
import math

from ..core.config import Config, ConfigError

_DESCRIPTION = (
    "Check Lemma 1 / Theorem 1 of the paper on one gradient step: with a shared initialisation, "
    "ΔθS·ΔθT/ε → A = E_x[vᵀM(x)v] ≥ 0 and L_T(θS0 + αΔθS) < L_T(θS0) for small ε; with a different "
    "initialisation the teacher's step drops out at first order. Exit status 1 if the prediction fails."
)


def register(sub) -> None:
    """Add the ``theorem`` subcommand to the ``subliminal-mlp`` parser (``sub``: its subparsers)."""
    from ..core.models import ACTIVATIONS
    from ..theory.kernels import STANDARD_LOSSES

    d = Config()
    t = sub.add_parser("theorem", help="check the gradient-alignment theorem (one step, exact, float64)",
                       description=_DESCRIPTION)
    t.add_argument("--hidden", type=int, nargs="+", default=list(d.hidden_widths), metavar="W",
                   help="hidden layer widths (default 256 256, the paper's MLP)")
    t.add_argument("--aux-logits", "-m", type=int, default=d.aux_logits, help="number of auxiliary logits m (default %(default)s)")
    t.add_argument("--activation", choices=tuple(ACTIVATIONS), default="relu",
                   help="the MLP's activation (default relu, the paper's)")
    t.add_argument("--losses", nargs="+", choices=STANDARD_LOSSES, default=list(STANDARD_LOSSES),
                   help="student loss settings (default: all four)")
    t.add_argument("--teacher-loss", choices=("ce", "l2"), default="ce",
                   help="L_T: ce = class cross-entropy on MNIST training images (default), l2 = ½‖θ‖² (no data)")
    t.add_argument("--eps-min", type=float, default=1e-6,
                   help="smallest teacher step ε (default 1e-6; at least 1e-10, below which float64 rounding fails "
                        "the check)")
    t.add_argument("--eps-max", type=float, default=1.0, help="largest teacher step ε (default 1)")
    t.add_argument("--n-eps", type=int, default=64,
                   help="number of log-spaced ε values (default 64); the grid needs one between 5 and 10^3.5 times "
                        "--eps-min (3 values in [1e-6, 1])")
    t.add_argument("--seeds", type=int, default=3, metavar="N", help="number of seeds (default 3)")
    t.add_argument("--seed", type=int, default=0, help="first seed; seeds are seed, seed+1, ... (default 0)")
    t.add_argument("--n-noise", type=int, default=1024, help="noise inputs x per seed (default 1024)")
    t.add_argument("--teacher-batch", type=int, default=None,
                   help="MNIST training images in L_T, with --teacher-loss ce only (default 1024)")
    t.add_argument("--alpha", type=float, default=1.0, help="student step size α (default 1)")
    t.add_argument("--gap-tol", type=float, default=1e-3,
                   help="tolerance of the relative gap |ΔθS·ΔθT/ε − A|/A at the smallest ε (default 1e-3); the gap "
                        "must also vanish like ε (no tolerance: see the source's docs/experiments/theorem.md)")
    t.add_argument("--change-tol", type=float, default=1e-3,
                   help="control: tolerance of ‖ΔθS(ε)−ΔθS(0)‖/‖ΔθS(0)‖ at the smallest ε (default 1e-3); it must "
                        "also vanish like ε")
    t.add_argument("--data-dir", default=None,
                   help="data root holding mnist/ (else $SUBLIMINAL_MLP_DATA, the cache, then a download)")
    t.add_argument("--json", default=None, metavar="OUT", help="also write the record and summary to OUT (JSON)")
    t.set_defaults(func=_cmd_theorem)


def _teacher_batch(a: argparse.Namespace) -> int:
    """The MNIST images of ``L_T = ce``: ``--teacher-batch``, 1024 when it is left out."""
    return 1024 if a.teacher_batch is None else a.teacher_batch


def _check(a: argparse.Namespace) -> None:
    """Raise ConfigError (exit status 2) for arguments outside the check's domain (ε > 0, α > 0, ...), an ε grid
    the verdict cannot judge on (``--eps-min`` below 1e-10, or no ε between 5 and 10^3.5 times it:
    :func:`subliminal_mlp.theory.theorem.check_eps`), flags with no effect, and a ``--json`` path that is empty
    or cannot be written. Reads ``a`` only: the CLI calls it before a distributed
    runtime is started (``cli._precheck``), and :func:`_cmd_theorem` relies on it."""
    def bad(msg: str) -> None:
        raise ConfigError(msg)

    from ..theory.kernels import EPS_FLOOR, EPS_FLOOR_REASON
    from ..theory.theorem import COMPARISON_RANGE

    if not (math.isfinite(a.eps_min) and a.eps_min > 0):
        bad(f"--eps-min = {a.eps_min} is invalid: the teacher's step ε must be > 0.")
    if a.eps_min < EPS_FLOOR:
        bad(f"--eps-min = {a.eps_min} is invalid: {EPS_FLOOR_REASON.replace('below it', f'below {EPS_FLOOR:g}')}: "
            f"give --eps-min >= {EPS_FLOOR:g} (default 1e-6).")
    if not (math.isfinite(a.eps_max) and a.eps_max > a.eps_min):
        bad(f"--eps-max = {a.eps_max} is invalid: it must be finite and larger than --eps-min = {a.eps_min}.")
    if a.n_eps < 2:
        bad(f"--n-eps = {a.n_eps} is invalid: the ε grid needs at least 2 values.")
    lo, hi = COMPARISON_RANGE
    if a.eps_max < lo * a.eps_min:
        bad(f"--eps-max = {a.eps_max} is invalid: the check compares the smallest ε with one between {lo:g} and "
            f"{hi:.0f} times it (whether a quantity vanishes like ε); give --eps-max >= {lo:g}·--eps-min = "
            f"{lo * a.eps_min:g}.")
    # log-spaced points step by this factor: with --eps-max >= 5·--eps-min, one lies between 5 and 10^3.5 times
    # --eps-min exactly when it is at most 10^3.5 (the band spans more than a factor 5)
    if (a.eps_max / a.eps_min) ** (1 / (a.n_eps - 1)) > hi * (1 + 1e-9):
        need = 1 + math.ceil(math.log(a.eps_max / a.eps_min) / math.log(hi))
        bad(f"--n-eps = {a.n_eps} is too few for ε in [{a.eps_min:g}, {a.eps_max:g}]: the check compares the smallest "
            f"ε with one between {lo:g} and {hi:.0f} times it (farther, ε may be past the range where the teacher's "
            f"step is small, where a quantity linear at small ε can saturate and look first order); give --n-eps >= {need}, or a "
            "smaller --eps-max.")
    if a.seeds < 1 or a.seed < 0 or a.seed + a.seeds > 2**32:
        bad(f"--seeds = {a.seeds}, --seed = {a.seed}: need at least one seed, and seeds in 0 .. 2**32 - 1.")
    if a.n_noise < 1:
        bad(f"--n-noise = {a.n_noise} is invalid: give at least one noise input.")
    if a.teacher_batch is not None and a.teacher_loss != "ce":
        bad(f"--teacher-batch = {a.teacher_batch} has no effect with --teacher-loss {a.teacher_loss} (L_T uses "
            "no data): leave it out, or use --teacher-loss ce.")
    if a.data_dir is not None and a.teacher_loss != "ce":
        bad(f"--data-dir = {a.data_dir} has no effect with --teacher-loss {a.teacher_loss} (L_T = ½‖θ‖² uses no "
            "data, and no MNIST is loaded): leave it out, or use --teacher-loss ce.")
    if _teacher_batch(a) < 1:
        bad(f"--teacher-batch = {a.teacher_batch} is invalid: give at least one MNIST image.")
    if not (math.isfinite(a.alpha) and a.alpha > 0):
        bad(f"--alpha = {a.alpha} is invalid: the student's step size must be > 0.")
    for flag, tol in (("--gap-tol", a.gap_tol), ("--change-tol", a.change_tol)):
        if not (math.isfinite(tol) and tol > 0):
            bad(f"{flag} = {tol} is invalid: the tolerance must be finite and > 0 (default 1e-3).")
    if len(set(a.losses)) != len(a.losses):
        bad(f"--losses {a.losses} repeats a setting.")
    if a.json is not None:
        from ..core.results import check_output

        if not a.json.strip():
            bad(f"--json = {a.json!r} is invalid: give the path of the JSON file to write, or leave --json out.")

        check_output(a.json, kind="file")


def _cmd_theorem(a: argparse.Namespace) -> int:
    """Run the check for the parsed arguments ``a``; print the tables; 0 if the theorem holds, else 1."""
    from ..theory import theorem
    from .. import theory
    from ..core.models import mlp
    from ..core.results import atomic_write_text, data_record

    teacher_batch = _teacher_batch(a)
    cfg = Config(hidden_widths=tuple(a.hidden), aux_logits=a.aux_logits)
    model = mlp(cfg.hidden_widths, n_classes=cfg.n_classes, aux_logits=cfg.aux_logits, input_dim=cfg.input_dim,
                activation=a.activation)
    images = labels = None
    data_info = {}
    if a.teacher_loss == "ce":
        from ..core.data import load_mnist

        ds = load_mnist(a.data_dir)
        if teacher_batch > ds.train_images.shape[0]:
            raise ConfigError(f"--teacher-batch = {teacher_batch} exceeds the {ds.train_images.shape[0]} "
                              "MNIST training images.")
        images, labels = ds.train_images, ds.train_labels
        data_info = data_record(ds)
    eps = theory.eps_grid(a.eps_min, a.eps_max, a.n_eps)
    seeds = list(range(a.seed, a.seed + a.seeds))
    record = theorem.run_theorem_check(images=images, labels=labels, model=model, losses=a.losses, eps=eps,
                                       seeds=seeds, n_noise=a.n_noise, alpha=a.alpha,
                                       teacher_batch=teacher_batch if a.teacher_loss == "ce" else None,
                                       teacher_loss=a.teacher_loss, data_info=data_info)
    summary = theorem.summarize(record, gap_tol=a.gap_tol, change_tol=a.change_tol)
    print("Theorem 1 single-step check: " + theorem.settings_caption(record))
    print()
    print(theorem.format_tables(summary))
    if a.json is not None:
        record = dict(record, summary=summary)
        atomic_write_text(a.json, json.dumps(record, indent=1) + "\n")
        print(f"wrote {a.json}")
    return 0 if theorem.theorem_holds(summary) else 1
