"""Where the time of one training step goes: XLA's own per-kernel trace of the protocol's loops.

    python benchmarks/bench_step.py [--data-dir ../shared/data] [--epochs 1] [--top 12]

Compiles one run's teacher epochs and its distillation epochs (the four students of Figure 10)
with the engine's own steps (``training.teacher_train_step`` and the engine's distillation step,
one stacked group, each in ``training.scan_epochs``) as the engine compiles its program
(``internal.compile_program``), times them, then runs them once more under
``jax.profiler`` and reads the trace back (``jax.profiler.ProfileData``). Kernels are classified
with the compiled program's HLO: a *matmul* kernel is a dot or a fusion around one. For each
phase it prints the time per step, the part of it during which some matmul runs (on any thread),
what the matmuls would take at the machine's fp32 matmul peak, and the longest non-matmul kernels
(their summed durations per step, with the JAX operation they come from). Kernels on different
threads overlap, so the summed durations do not add up to the step time. Nothing is asserted; it
prints what it measures.
"""

from __future__ import annotations

import argparse
import collections
import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_protocol import best_seconds, matmul_peak  # noqa: E402
from xla_trace import covered_ns, trace_events  # noqa: E402

from subliminal_mlp import Config, engine, inputs, load_mnist  # noqa: E402
from subliminal_mlp.report.flops import forward_flops, train_step_flops  # noqa: E402
from subliminal_mlp.internal import compile_program  # noqa: E402
from subliminal_mlp.core.model import stack_params  # noqa: E402
from subliminal_mlp.core.models import config_model  # noqa: E402
from subliminal_mlp.core.students import FIGURE10, adam, output_mask  # noqa: E402
from subliminal_mlp.core.training import scan_epochs, steps_per_epoch, teacher_train_step  # noqa: E402


def kernel_kinds(hlo: str) -> tuple[set[str], dict[str, str]]:
    """(names of the matmul kernels, kernel name -> the JAX op_name it carries) from optimised HLO."""
    fused = {m.group(1): m.group(2) for m in re.finditer(r"^%(\S+) .*?\{\n(.*?)\n\}", hlo, re.S | re.M)}
    matmuls, origin = set(), {}
    for m in re.finditer(r"^\s*(?:ROOT )?%(\S+) = [^\n]*", hlo, re.M):
        name, line = m.group(1), m.group(0)
        calls = re.search(r"calls=%([\w.\-]+)", line)
        body = fused.get(calls.group(1), "") if calls else ""
        if re.search(r" dot\(", line) or " dot(" in body:
            matmuls.add(name)
        op = re.search(r'op_name="([^"]+)"', line) or re.search(r'op_name="([^"]+)"', body)
        if op:
            scopes = [p for p in op.group(1).split("/") if p != "body"]
            origin[name] = "/".join(p for p in scopes if not p.startswith(("while", "closed_call", "jit(")))
    return matmuls, origin


def report(name: str, compiled, args, steps: int, flops_per_step: float, peak: float, top: int):
    """Time, trace and print one phase (see the module docstring); returns ``compiled(*args)``."""
    wall = best_seconds(lambda: compiled(*args), 3) / steps
    matmuls, origin = kernel_kinds(compiled.as_text())
    out = []
    events = trace_events(lambda: out.append(jax.block_until_ready(compiled(*args))))
    span = (events[-1][1] - events[0][0]) / steps
    mm = covered_ns((s, e) for s, e, n in events if n in matmuls) / steps
    other = collections.Counter()
    for s, e, n in events:
        if n not in matmuls:
            other[n] += e - s
    print(f"\n{name}: {wall * 1e3:.2f} ms per step (best of 3 untraced; {span / 1e6:.2f} ms traced), "
          f"{flops_per_step / wall / 1e9:.0f} GFLOP/s = {flops_per_step / wall / peak:.2f} of the matmul peak")
    print(f"    some matmul running: {mm / 1e6:.2f} ms per traced step; the step's model FLOPs at the peak: "
          f"{flops_per_step / peak * 1e3:.2f} ms")
    print("    longest non-matmul kernels (summed per step, ms; overlapping threads):")
    for n, v in other.most_common(top):
        print(f"      {v / steps / 1e6:6.3f}  {n:32s} {origin.get(n, '')[-90:]}")
    return out[0]


def phase_programs(cfg: Config, data):
    """The engine's two phases of run 0 of ``cfg`` as jitted programs, built from its own steps.

    Returns ``(train, train_args, distil, start)``: ``train(θ0, x, y)`` runs the teacher's epochs
    (``training.teacher_train_step`` in ``training.scan_epochs``) and returns the teacher;
    ``distil(start, teacher)`` runs Figure 10's four students as one stacked group through the
    engine's distillation step and returns their parameters; ``start`` stacks their starts (θ0 or
    the cross run's θ0).
    """
    model, hp = config_model(cfg), {"learning_rate": cfg.learning_rate, "temperature": cfg.temperature}
    keys = engine.run_keys(cfg.seed, 0)
    refs = engine.references(model, cfg.seed, 0, cfg.n_runs)
    x, y = jnp.asarray(data.train_images), jnp.asarray(data.train_labels)
    opt = adam(cfg.learning_rate)

    def train(p, x, y):
        step = teacher_train_step(model.apply, cfg.n_classes, opt, x, y, with_loss=False)
        return scan_epochs(step, (p, opt.init(p)), keys["teacher_shuffle"], x.shape[0], cfg.batch_size,
                           cfg.teacher_epochs).state[0]

    src = inputs.bind_task(inputs.uniform(cfg.n_noise, shape=(cfg.input_dim,)), x)
    masks = [jnp.stack([output_mask(s.outputs, model.n_classes, model.aux_logits) for s in FIGURE10])]

    def distil(start, teacher):
        step = engine._distill_step(model, FIGURE10, [list(range(len(FIGURE10)))], masks, hp, src,
                                    src.prepare(keys["noise"], src.arrays, hp), {"teacher": teacher}, False)
        state = engine.DistillState(((start, opt.init(start)),), jnp.int32(0))
        return scan_epochs(step, state, keys["student_shuffle"], src.n, cfg.batch_size,
                           cfg.student_epochs).state.groups[0][0]

    start = stack_params(*[refs[s.start.which] for s in FIGURE10])
    return jax.jit(train), (refs["own"], x, y), jax.jit(distil), start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--epochs", type=int, default=1, help="epochs of each phase to time and trace")
    ap.add_argument("--top", type=int, default=12, help="non-matmul kernels to list per phase")
    args = ap.parse_args()
    data = load_mnist(args.data_dir)
    cfg = Config(n_runs=1, teacher_epochs=args.epochs, student_epochs=args.epochs)
    peak, n = matmul_peak()
    print(f"device: {jax.devices()[0].platform}; fp32 matmul peak (XLA, {n}x{n}): {peak / 1e9:.0f} GFLOP/s")
    train, train_args, distil, start = phase_programs(cfg, data)
    x = train_args[1]
    steps = args.epochs * steps_per_epoch(x.shape[0], cfg.batch_size)
    per_example = train_step_flops(cfg)
    teach = compile_program(train, *train_args)
    teacher = report("teacher step (1 model, batch 1024)", teach, train_args, steps,
                     x.shape[0] * args.epochs * per_example / steps, peak, args.top)
    distil = compile_program(distil, start, teacher)
    n_noise = cfg.n_noise * args.epochs
    report(f"distillation step ({len(FIGURE10)} students + the shared teacher forward, batch 1024)", distil,
           (start, teacher), steps, n_noise * (forward_flops(cfg) + len(FIGURE10) * per_example) / steps, peak,
           args.top)


if __name__ == "__main__":
    main()
