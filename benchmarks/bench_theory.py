"""Benchmark of the single-step theorem sweep (``subliminal_mlp.theory.kernels.sweep``).

The full sweep of the issue: 64 values of ε × 4 loss settings (mse_all, mse_aux, ce_all, ce_aux)
× 2 student initialisations (shared, different) on the paper's MLP 784→256→256→10+3, a 1,024-image
noise batch, L_T = class cross-entropy on 1,024 MNIST training images, in float64. Reports, from
one run:

* the sweep's wall time after compilation (best of ``--repeats``);
* its model FLOPs per second, and that as a fraction of the float64 matmul throughput XLA reaches on
  this machine (the best of a few large jitted matmuls, measured in the same run);
* the speed-up over a straightforward loop that calls a jitted ``jax.grad`` once per
  (ε, loss, initialisation) — the teacher forward, the student's forward and backward and the
  ``L_T`` evaluation inside each call; ``L_T(θS0)`` is hoisted out of the loop (once per
  initialisation), so the baseline is not padded.

Model FLOPs follow :mod:`subliminal_mlp.report.flops` (dense layers only: ``2·i·o`` per example forward,
``4·i·o`` backward, ``2·i·o`` for the first layer's backward): per ε one teacher forward on the
noise (shared by all losses and initialisations); per (ε, loss, init) one student backward on the
noise and one forward of ``L_T`` on the MNIST batch; per init the student's forward, ``L_T(θS0)``
and the ε = 0 backward per loss; the teacher's jvp (forward + tangent) once. The baseline's FLOPs
are counted the same way and printed too, so the speed-up can be split into FLOPs saved and
efficiency.

Run (2 CPU cores, nothing else running)::

    .venv/bin/python benchmarks/bench_theory.py            # --repeats 3 --baseline-repeats 3

Prints numbers; asserts nothing about time. It does check that the sweep and the baseline agree.
"""

from __future__ import annotations

import argparse
import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from subliminal_mlp import theory
from subliminal_mlp.core.config import Config
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.report.flops import forward_flops, train_step_flops
from subliminal_mlp.core.models import Model, config_model
from subliminal_mlp.core.training import noise_images


def matmul_peak(reps: int = 5) -> tuple[float, dict]:
    """Best float64 GFLOP/s of a few jitted matmuls (square and the sweep's layer shapes)."""
    key = jax.random.PRNGKey(0)
    shapes = [(2048, 2048, 2048), (3072, 3072, 3072), (1024, 784, 8192), (8192, 256, 1024)]
    out = {}
    mm = jax.jit(lambda a, b: a @ b)
    for m, k, n in shapes:
        a = jax.random.normal(key, (m, k), jnp.float64)
        b = jax.random.normal(key, (k, n), jnp.float64)
        mm(a, b).block_until_ready()
        best = float("inf")
        for _ in range(reps):
            t = time.perf_counter()
            mm(a, b).block_until_ready()
            best = min(best, time.perf_counter() - t)
        out[f"{m}x{k}x{n}"] = 2 * m * k * n / best / 1e9
    return max(out.values()), out


def setup(model: Model, n_noise: int, teacher_batch: int, seed: int = 0):
    """float64 ``θT0``, a control ``θS0``, ``n_noise`` noise inputs and a random MNIST batch for ``L_T``."""
    ds = load_mnist(os.environ.get("SUBLIMINAL_MLP_DATA"))
    key = jax.random.PRNGKey(seed)
    k_init, k_other, k_noise, k_batch = jax.random.split(key, 4)
    cast = theory.to_float64
    theta_T0 = cast(model.init(k_init))
    theta_other = cast(model.init(k_other))
    x = cast(noise_images(k_noise, jnp.arange(n_noise), model.input_shape[0]))
    idx = np.asarray(jax.random.choice(k_batch, ds.train_images.shape[0], (teacher_batch,), replace=False))
    args = (cast(jnp.asarray(ds.train_images[idx])), jnp.asarray(ds.train_labels[idx]))
    return theta_T0, theta_other, x, args


def baseline_loop(model, losses, loss_T, theta_T0, students, delta_T, x, eps, alpha, args):
    """The straightforward loop: one jitted ``jax.grad`` of ``E_x L_S`` per (ε, loss, initialisation) (§2)."""
    out = np.zeros((len(students), len(losses), len(eps), 3))
    A = [float(theory.first_order_coefficient(l, theta_T0, delta_T, x, model=model)) for l in losses]
    for i, theta_S0 in enumerate(students):
        lt0 = _lt(theta_S0, args, loss_T)  # hoisted: once per initialisation
        for k, loss in enumerate(losses):
            for e_i, e in enumerate(eps):
                dot, cos, lt = _point(theta_S0, theta_T0, delta_T, x, e, alpha, args, loss=loss, loss_T=loss_T,
                                      apply=model.apply)
                out[i, k, e_i] = float(dot), float(cos), float(lt - lt0)
    return np.asarray(A), out


_lt = jax.jit(lambda p, args, loss_T: loss_T(p, *args), static_argnums=2)


def _point_impl(theta_S0, theta_T0, delta_T, x, e, alpha, args, *, loss, loss_T, apply):
    """``(ΔθS·ΔθT, cos(ΔθS, ΔθT), L_T(θS0 + αΔθS))`` at one ε, ``ΔθS = −∇ E_x L_S`` by plain ``jax.grad``."""
    def student_loss(p):
        y = apply(jax.tree.map(lambda a, d: a + e * d, theta_T0, delta_T), x)
        return jnp.mean(theory.student_loss_value(loss, apply(p, x), y))

    d_s = jax.tree.map(jnp.negative, jax.grad(student_loss)(theta_S0))
    lt = loss_T(jax.tree.map(lambda a, d: a + alpha * d, theta_S0, d_s), *args)
    return theory.tree_dot(d_s, delta_T), theory.tree_cosine(d_s, delta_T), lt


_point = jax.jit(_point_impl, static_argnames=("loss", "loss_T", "apply"))


def main() -> None:
    """Time the sweep and the baseline loop on the paper's MLP; print rates, the speed-up and their agreement."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-eps", type=int, default=64)
    ap.add_argument("--n-noise", type=int, default=1024)
    ap.add_argument("--teacher-batch", type=int, default=1024)
    ap.add_argument("--eps-batch", type=int, default=None, help="ε values advanced together (default: library)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--baseline-repeats", type=int, default=3,
                    help="times the loop is timed; the best is used, as for the sweep (default 3)")
    a = ap.parse_args()

    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"jax {jax.__version__}, devices {jax.devices()}, CPU cores available: {cpus}")
    cfg = Config()
    model = config_model(cfg)  # the paper's MLP 784→256→256→10+3 (FLOPs are counted from cfg)
    n_i, n_l, n_e, n, nt = 2, 4, a.n_eps, a.n_noise, a.teacher_batch
    with theory.float64():
        peak, peaks = matmul_peak()
        print("float64 matmul throughput (GFLOP/s): " + ", ".join(f"{k}: {v:.1f}" for k, v in peaks.items())
              + f"  -> peak {peak:.1f}")
        theta_T0, theta_other, x, args = setup(model, n, nt)
        losses = theory.standard_losses(model)
        loss_T = theory.class_cross_entropy_loss(model)
        eps = theory.eps_grid(1e-6, 1.0, n_e)
        students = (theta_T0, theta_other)

        def run_sweep():
            r = theory.sweep(losses, loss_T, theta_T0, students, x, eps, alpha=1.0, loss_T_args=args,
                             eps_batch=a.eps_batch, model=model)
            return jax.block_until_ready(r)

        t = time.perf_counter()
        res = run_sweep()
        first = time.perf_counter() - t
        times = []
        for _ in range(a.repeats):
            t = time.perf_counter()
            res = run_sweep()
            times.append(time.perf_counter() - t)
        sweep_s = min(times)

        delta_T = theory.teacher_update(loss_T, theta_T0, *args, model=model)
        # warm up every compilation the baseline makes (per loss: its A and its point at an ε taken from the
        # grid, so the same argument types; L_T; the subtraction), by one untimed pass over the first ε
        baseline_loop(model, losses, loss_T, theta_T0, students, delta_T, x, eps[:1], 1.0, args)
        base_times = []
        for _ in range(a.baseline_repeats):
            t = time.perf_counter()
            A_b, out_b = baseline_loop(model, losses, loss_T, theta_T0, students, delta_T, x, eps, 1.0, args)
            base_times.append(time.perf_counter() - t)
        base_s = min(base_times)

    # agreement between the two
    dot, cos, dlt = np.asarray(res.dot), np.asarray(res.cos), np.asarray(res.delta_LT)
    rel = lambda u, v: float(np.max(np.abs(u - v) / (np.abs(v) + 1e-12 * np.max(np.abs(v)))))  # noqa: E731
    print(f"agreement sweep vs baseline: max rel diff A {rel(np.asarray(res.A), A_b):.1e}, "
          f"dot {rel(dot, out_b[..., 0]):.1e}, cos {rel(cos, out_b[..., 1]):.1e}, "
          f"ΔL_T {float(np.max(np.abs(dlt - out_b[..., 2]))):.1e} (abs)")

    F = forward_flops(cfg)
    B = train_step_flops(cfg) - F
    jvp = 2 * F * n  # primal + tangent (an upper bound: the first layer's tangent has one matmul, not two)
    sweep_flops = (jvp + n_i * (F * n + n_l * B * n + F * nt)
                   + n_e * (F * n + n_i * n_l * (B * n + F * nt)))
    base_flops = n_l * jvp + n_i * F * nt + n_e * n_i * n_l * (F * n + F * n + B * n + F * nt)
    rate = sweep_flops / sweep_s / 1e9
    print(f"sweep: {n_e} ε × {n_l} losses × {n_i} initialisations, noise batch {n}, L_T batch {nt}, float64")
    print(f"  first call (incl. compile) {first:.2f} s; after compilation: {sweep_s:.3f} s "
          f"(best of {a.repeats}: {', '.join(f'{t:.3f}' for t in times)})")
    print(f"  model FLOPs {sweep_flops / 1e9:.1f} GFLOP -> {rate:.1f} GFLOP/s = {rate / peak:.2f} of the "
          f"float64 matmul peak ({peak:.1f} GFLOP/s)   [target >= 0.5]")
    print(f"baseline loop ({n_e * n_l * n_i} jitted jax.grad calls, compiled before it is timed): {base_s:.3f} s "
          f"(best of {len(base_times)}: {', '.join(f'{t:.3f}' for t in base_times)}), "
          f"model FLOPs {base_flops / 1e9:.1f} GFLOP -> {base_flops / base_s / 1e9:.1f} GFLOP/s")
    print(f"  speed-up of the sweep over the loop: {base_s / sweep_s:.2f}x   [target >= 2]  "
          f"(FLOPs ratio {base_flops / sweep_flops:.2f}x, efficiency ratio "
          f"{(sweep_flops / sweep_s) / (base_flops / base_s):.2f}x)")


if __name__ == "__main__":
    main()
