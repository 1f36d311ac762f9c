"""Do XLA:CPU compiler options change the speed or the bits of the protocol's two phases?

    python benchmarks/bench_xla_options.py [--data-dir ../shared/data] [--rounds 3] \
        [xla_cpu_enable_concurrency_optimized_scheduler=true xla_cpu_use_onednn=true ...]

Builds one run's teacher epochs and distillation epochs with the engine's own steps
(``bench_step.phase_programs``, one epoch each), then compiles them under the library's CPU options
(``subliminal_mlp.internal.CPU_COMPILER_OPTIONS``, the baseline) and under each ``option=value``
given on top of them (``true``/``false`` as booleans, digits as integers), lowering as the library
does (``internal.unrolled_threefry``). The variants are run in turn, ``--rounds`` times, so that the
host's drift falls on all of them alike. For each it prints the time per step of each phase (best of
3 per round), how long both phases took to compile, and whether the final parameters of both phases
equal the baseline's bit for bit.
Nothing is asserted; it prints what it measures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_step import phase_programs  # noqa: E402

from subliminal_mlp import Config, load_mnist  # noqa: E402
from subliminal_mlp.core.training import steps_per_epoch  # noqa: E402
from subliminal_mlp.internal import CPU_COMPILER_OPTIONS, unrolled_threefry  # noqa: E402


def parse_option(text: str) -> tuple[str, object]:
    """``name=value`` -> (name, value): ``true``/``false`` as booleans, digits as integers, else the string."""
    name, _, value = text.partition("=")
    return name, {"true": True, "false": False}.get(value, int(value) if value.isdigit() else value)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("options", nargs="*", help="XLA options to try, each on top of the library's (name=value)")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--rounds", type=int, default=3, help="times each variant is timed, in turn")
    a = ap.parse_args()
    data = load_mnist(a.data_dir)
    cfg = Config(n_runs=1, teacher_epochs=1, student_epochs=1)
    steps = steps_per_epoch(data.train_images.shape[0], cfg.batch_size)
    train, train_args, distil, start = phase_programs(cfg, data)
    teacher = train(*train_args)  # the distillation's teacher, from plain jit
    with unrolled_threefry():
        lowered = (train.lower(*train_args), distil.lower(start, teacher))
    variants = {"baseline": dict(CPU_COMPILER_OPTIONS)}
    variants.update({text: {**CPU_COMPILER_OPTIONS, **dict([parse_option(text)])} for text in a.options})
    compiled, reference = {}, None
    for name, options in variants.items():
        try:
            t = time.perf_counter()
            compiled[name] = [low.compile(compiler_options=options) for low in lowered]
            seconds = time.perf_counter() - t
        except Exception as e:  # an option this XLA does not know, or a value it refuses
            print(f"{name}: cannot compile ({str(e).splitlines()[0][:160]})")
            continue
        out = [np.concatenate([np.asarray(leaf).ravel() for leaf in jax.tree.leaves(jax.block_until_ready(f(*args)))])
               for f, args in zip(compiled[name], (train_args, (start, teacher)))]
        reference = out if reference is None else reference
        same = all(np.array_equal(o, r) for o, r in zip(out, reference))
        print(f"{name}: {'the same bits as the baseline' if same else 'DIFFERENT bits from the baseline'}; "
              f"both phases compiled in {seconds:.2f} s")
    print(f"ms per step (best of 3 per round; teacher | distillation; {steps} steps per phase):")
    for r in range(a.rounds):
        for name, (teach, dist) in compiled.items():
            times = []
            for f, args in ((teach, train_args), (dist, (start, teacher))):
                best = np.inf
                for _ in range(3):
                    t = time.perf_counter()
                    jax.block_until_ready(f(*args))
                    best = min(best, time.perf_counter() - t)
                times.append(best / steps * 1e3)
            print(f"  round {r + 1}  {name:55s} {times[0]:6.2f} | {times[1]:6.2f}", flush=True)


if __name__ == "__main__":
    main()
