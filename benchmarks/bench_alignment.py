"""Cost of tracking gradient alignment during distillation, measured in one run.

    python benchmarks/bench_alignment.py [--data-dir ../shared/data] [--held-out 256] [--repeats 3]

Distils the two aux-only students of one run (shared and cross-model initialisation) for one
epoch of the paper's protocol, with and without the per-step alignment hook (task gradient on a
held-out batch, cosine, projection), each compiled once and timed after compilation (best of
``--repeats``). Target: tracking adds at most 40 % to the wall time. Nothing is asserted.
"""

import argparse
import time

import jax
import jax.numpy as jnp

from subliminal_mlp import Config, load_mnist
from subliminal_mlp.alignment import alignment_hook
from subliminal_mlp.losses import class_cross_entropy
from subliminal_mlp.model import apply, init_params, logit_mask
from subliminal_mlp.training import distill_students


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--held-out", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    data = load_mnist(a.data_dir)
    cfg = Config(student_epochs=1)
    teacher = init_params(jax.random.PRNGKey(0), cfg)
    start = jax.tree.map(lambda *p: jnp.stack(p), *[init_params(jax.random.PRNGKey(i), cfg) for i in (0, 1)])
    masks = jnp.stack([logit_mask(cfg, "aux")] * 2)
    hx, hy = jnp.asarray(data.test_images[-a.held_out:]), jnp.asarray(data.test_labels[-a.held_out:])
    task_grad = jax.grad(lambda p: class_cross_entropy(apply(p, hx), hy, cfg.n_classes))
    hook = alignment_hook(task_grad, jnp.zeros(2))
    keys = (jax.random.PRNGKey(2), jax.random.PRNGKey(3))
    plain = jax.jit(lambda s: distill_students(s, teacher, masks, *keys, cfg))
    tracked = jax.jit(lambda s: distill_students(s, teacher, masks, *keys, cfg, on_grads=hook))
    times = {}
    for name, f in (("plain", plain), ("tracked", tracked)):
        jax.block_until_ready(f(start))
        best = float("inf")
        for _ in range(a.repeats):
            t = time.perf_counter()
            jax.block_until_ready(f(start))
            best = min(best, time.perf_counter() - t)
        times[name] = best
    print(f"one distillation epoch, 2 students, batch {cfg.batch_size}, held-out batch {a.held_out}:")
    print(f"  without tracking {times['plain']:.3f} s, with tracking {times['tracked']:.3f} s")
    print(f"  overhead of tracking: {100 * (times['tracked'] / times['plain'] - 1):.1f} %   (target <= 40 %)")


if __name__ == "__main__":
    main()
