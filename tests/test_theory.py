"""Tests of subliminal_mlp.theory.kernels and subliminal_mlp.theory.theorem: the single-step check of Lemma 1 / Theorem 1 (§2).

The kernels are compared with independent computations: plain ``jax.grad`` of a separately
written student loss, central finite differences in float64, ``jax.jacfwd`` of ``jax.grad`` for
``M(x)``, a network whose head is restricted to the cross-entropy subset, and, for models other
than the paper's ReLU MLP, a hand-written tanh network and a small Flax CNN.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, assume, given, settings
from hypothesis import strategies as st

from subliminal_mlp.theory import theorem
from subliminal_mlp import theory
from subliminal_mlp.cli import main as cli_main
from subliminal_mlp.core.config import Config
from subliminal_mlp.core.model import apply, init_params
from subliminal_mlp.core.models import Model, ModelError, from_flax, mlp

ROOT = Path(__file__).resolve().parents[1]

# Every example compiles new shapes, so examples are few and failing cases are not shrunk.
HYP = settings(max_examples=8, deadline=None, derandomize=True,
               phases=(Phase.explicit, Phase.reuse, Phase.generate),
               suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


# ----------------------------------------------------------------------------- helpers


def make_net(widths, m, n_classes, input_dim, n_x, seed, teacher_loss="ce"):
    """float64 (must be called in theory.float64()): θT0, a different θS0, noise x, L_T and its args."""
    cfg = Config(hidden_widths=tuple(widths), aux_logits=m, n_classes=n_classes, input_dim=input_dim)
    k = jax.random.PRNGKey(seed)
    k1, k2, k3, k4, k5 = jax.random.split(k, 5)
    t0 = theory.to_float64(init_params(k1, cfg))
    other = theory.to_float64(init_params(k2, cfg))
    x = jax.random.uniform(k3, (n_x, input_dim), jnp.float64, -1.0, 1.0)
    if teacher_loss == "ce":
        imgs = jax.random.normal(k4, (7, input_dim), jnp.float64)
        labels = jax.random.randint(k5, (7,), 0, n_classes)
        return cfg, t0, other, x, theory.mnist_teacher_loss(n_classes), (imgs, labels)
    if teacher_loss == "l2":
        return cfg, t0, other, x, theory.l2_teacher_loss, ()
    # a loss on other inputs: squared norm of the outputs on a second input batch
    other_x = jax.random.normal(k4, (5, input_dim), jnp.float64)
    return cfg, t0, other, x, _other_inputs_loss, (other_x,)


def _other_inputs_loss(params, xs):
    return jnp.mean(jnp.sum(jnp.square(apply(params, xs)), axis=-1)) + 0.1 * jnp.sum(apply(params, xs)[:, 0])


def ref_student_loss(loss: theory.StudentLoss, z, y):
    """An independent per-example L_S: slices the subset and uses jax.nn (no masks)."""
    w = np.asarray(loss.weights)
    if loss.kind == "mse":
        return jnp.sum(jnp.asarray(w) * (z - y) ** 2, axis=-1)
    idx = np.nonzero(w)[0]
    return -jnp.sum(jax.nn.softmax(y[..., idx], axis=-1) * jax.nn.log_softmax(z[..., idx], axis=-1), axis=-1)


@functools.partial(jax.jit, static_argnums=0)
def ref_update(loss, theta_S0, theta_T, x):
    """−∇_θ mean_x L_S(f_θS0(x), f_θT(x)) by plain jax.grad."""
    y = apply(theta_T, x)
    g = jax.grad(lambda p: jnp.mean(ref_student_loss(loss, apply(p, x), y)))(theta_S0)
    return jax.tree.map(jnp.negative, g)


@functools.partial(jax.jit, static_argnums=0)
def _ref_dot(loss, theta_S0, theta_T0, delta_T, x, e):
    theta_T = jax.tree.map(lambda a, d: a + e * d, theta_T0, delta_T)
    return theory.tree_dot(ref_update(loss, theta_S0, theta_T, x), delta_T)


@functools.partial(jax.jit, static_argnums=0)
def _mean_student_loss(loss, p, x, y):
    return jnp.mean(ref_student_loss(loss, apply(p, x), y))


def ref_dot(loss, theta_S0, theta_T0, delta_T, x, e):
    """ΔθS(ε)·ΔθT from plain jax.grad (any real ε, negative included)."""
    return float(_ref_dot(loss, theta_S0, theta_T0, delta_T, x, jnp.asarray(e, x.dtype)))


def kink_margin(params, x) -> float:
    """Smallest |pre-activation| of a hidden ReLU at ``params`` on ``x``.

    ReLU networks are differentiable at θT0 (as the theorem assumes) when this is > 0. Biases
    start at 0, so a unit fed only by dead units sits exactly at the kink (margin 0): there the
    one-sided slope in ε differs from the jvp (which uses relu'(0) = 0).
    """
    h, margin = x, np.inf
    for i in range(len(params) - 1):
        pre = h @ params[f"hidden_{i}"]["kernel"] + params[f"hidden_{i}"]["bias"]
        margin = min(margin, float(jnp.min(jnp.abs(pre))))
        h = jax.nn.relu(pre)
    return margin


def random_direction(tree, key):
    leaves, tdef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree.unflatten(tdef, [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)])


def loss_settings(cfg, draw_weights=None):
    out = list(theory.standard_losses(cfg))
    if draw_weights is not None:
        out.append(theory.StudentLoss.mse(draw_weights, "mse_random"))
    return out


net_shapes = st.fixed_dictionaries({
    "widths": st.lists(st.integers(1, 6), min_size=1, max_size=3),
    "m": st.integers(1, 3),
    "n_classes": st.integers(2, 4),
    "input_dim": st.integers(1, 5),
    "n_x": st.integers(1, 6),
    "seed": st.integers(0, 2**16),
})


# ----------------------------------------------------------------------------- the theorem


@settings(HYP, max_examples=4)  # each example compiles its kernels anew (~4 s)
@given(shape=net_shapes, loss_i=st.integers(0, 4), teacher_loss=st.sampled_from(["ce", "l2", "other"]),
       wseed=st.integers(0, 1000))
def test_shared_init_first_order(shape, loss_i, teacher_loss, wseed):
    """ΔθS·ΔθT ≥ 0, ΔθS·ΔθT/ε → A with an error linear in ε, L_T decreases (Lemma 1, Theorem 1)."""
    with theory.float64():
        cfg, t0, _, x, loss_T, args = make_net(**shape, teacher_loss=teacher_loss)
        rng = np.random.default_rng(wseed)
        w = rng.uniform(0, 2, cfg.n_outputs) * (rng.uniform(size=cfg.n_outputs) < 0.7)
        w[rng.integers(cfg.n_outputs)] = 1.0
        loss = loss_settings(cfg, w)[loss_i]
        assume(kink_margin(t0, x) > 1e-7)  # f differentiable at θT0 (the theorem's assumption)
        d_t = theory.teacher_update(loss_T, t0, *args)
        A = float(theory.first_order_coefficient(loss, t0, d_t, x))
        size = float(theory.tree_dot(d_t, d_t)) + 1e-300
        assert A >= -1e-12 * size
        eps = np.array([1e-3, 1e-4, 1e-5])
        # the single-ε kernel, vmapped over ε (the sweep is checked against it below and elsewhere)
        res = jax.vmap(lambda e: theory.alignment(loss, loss_T, t0, t0, d_t, x, e, 1.0, args))(jnp.asarray(eps))
        dot = np.asarray(res["dot"])
        # independent: plain jax.grad of a separately written student loss
        for e, d in zip(eps, dot):
            ref = ref_dot(loss, t0, t0, d_t, x, e)
            assert d == pytest.approx(ref, rel=1e-8, abs=1e-14 * size * e)
        assert np.all(dot >= -1e-12 * size * eps)
        err = np.abs(dot / eps - A)
        # linear in ε: err/ε stays bounded as ε shrinks (rounding allowed at the 1e-10 level)
        slope = err / eps
        floor = 1e-9 * (A + size) / eps
        assert np.all(err[1:] <= 2.0 * max(slope[0], slope[1]) * eps[1:] + floor[1:]), (err, A)
        assert err[-1] <= 1e-3 * A + 1e-9 * size / eps[-1] * 1e-4
        # L_T decreases for small ε, by α·ε·A to first order
        dlt = np.asarray(res["delta_LT"])
        if A > 1e-8 * size:
            assert dlt[-1] < 0
            assert dlt[-1] == pytest.approx(-eps[-1] * A, rel=2e-2)


@settings(HYP, max_examples=3)
@given(shape=net_shapes, teacher_loss=st.sampled_from(["ce", "other"]))
def test_different_init_control(shape, teacher_loss):
    """θS0 ≠ θT0: ΔθS(ε) = ΔθS(0) + O(ε) — the teacher's step drops out at first order."""
    with theory.float64():
        cfg, t0, other, x, loss_T, args = make_net(**shape, teacher_loss=teacher_loss)
        eps = np.array([1e-2, 1e-3, 1e-4, 1e-5])
        res = theory.sweep(theory.standard_losses(cfg), loss_T, t0, [t0, other], x, eps, loss_T_args=args)
        change = np.asarray(res.change[1])  # (K, E)
        n0 = np.asarray(res.norm_S0[1])
        # ‖ΔθS(ε) − ΔθS(0)‖ / ε is bounded as ε → 0
        ratio = change / eps
        assert np.all(ratio[:, -1] <= 2.0 * np.maximum(ratio[:, 1], ratio[:, 0]) + 1e-9 * (n0 + 1) / eps[-1])
        # ΔθS·ΔθT → ΔθS(0)·ΔθT (the untrained teacher's update), computed independently
        dot0 = np.asarray(res.dot0[1])
        d_t = theory.teacher_update(loss_T, t0, *args)
        norm_t = float(res.norm_T)
        for k, loss in enumerate(theory.standard_losses(cfg)):
            ref0 = float(theory.tree_dot(ref_update(loss, other, t0, x), d_t))
            assert dot0[k] == pytest.approx(ref0, rel=1e-8, abs=1e-12)
            # so ΔθS(ε)·ΔθT → ΔθS(0)·ΔθT at rate O(ε) (Cauchy–Schwarz with the bound above)
            gap = np.abs(np.asarray(res.dot[1, k]) - dot0[k])
            assert np.all(gap <= change[k] * norm_t * (1 + 1e-9) + 1e-13)
        # the shared-initialisation rows of the same sweep have ΔθS(0) = 0
        assert np.all(np.asarray(res.norm_S0[0]) == 0)


# ----------------------------------------------------------------------------- M(x)


@HYP
@given(n=st.integers(1, 7), batch=st.integers(1, 4), seed=st.integers(0, 10_000), kind=st.sampled_from(["mse", "ce"]))
def test_quadratic_form_psd_and_null_spaces(n, batch, seed, kind):
    """vᵀM(x)v ≥ 0 for every x; M's null spaces are those of §2."""
    rng = np.random.default_rng(seed)
    with theory.float64():
        mask = (rng.uniform(size=n) < 0.6).astype(float)
        mask[rng.integers(n)] = 1.0
        if kind == "mse":
            loss = theory.StudentLoss.mse(mask * rng.uniform(0.1, 3.0, n))
        else:
            loss = theory.StudentLoss.ce(mask)
        y = jnp.asarray(rng.normal(0, 3, (batch, n)))
        v = jnp.asarray(rng.normal(0, 2, (batch, n)))
        q = np.asarray(theory.quadratic_form(loss, y, v))
        M = np.asarray(theory.alignment_matrix(loss, y))
        assert q.shape == (batch,)
        assert np.all(q >= -1e-12)
        np.testing.assert_allclose(q, np.einsum("bi,bij,bj->b", v, M, v), rtol=1e-10, atol=1e-12)
        on = np.asarray(loss.weights) > 0
        for b in range(batch):
            evals = np.linalg.eigvalsh(M[b])
            assert np.all(evals >= -1e-12)
            if kind == "mse":
                # null space = coordinates with w_i = 0
                np.testing.assert_array_equal(np.abs(M[b]).sum(0) == 0, ~on)
                assert np.linalg.matrix_rank(M[b]) == on.sum()
            else:
                # null space = the all-ones vector on S, plus every coordinate off S
                np.testing.assert_allclose(M[b] @ np.ones(n), 0, atol=1e-14)
                np.testing.assert_allclose(M[b][~on], 0, atol=0)
                np.testing.assert_allclose(M[b][:, ~on], 0, atol=0)
                assert np.linalg.matrix_rank(M[b], tol=1e-10) == on.sum() - 1
                # and it is orthogonal to ∂L_S/∂z (which sums to 0 on S)
                g = np.asarray(theory.output_gradient(loss, y + 0.5, y))
                assert abs(g[b].sum()) < 1e-12


@pytest.mark.parametrize("kind", ["mse_all", "mse_aux", "ce_all", "ce_aux"])
def test_closed_forms_match_autodiff(kind):
    """M = −∂²L_S/∂y∂z (jax.jacfwd of jax.grad) and ∂L_S/∂z match their closed forms."""
    cfg = Config(hidden_widths=(3,), aux_logits=2, n_classes=3, input_dim=2)
    loss = dict(zip(theory.STANDARD_LOSSES, theory.standard_losses(cfg)))[kind]
    rng = np.random.default_rng(0)
    with theory.float64():
        y = jnp.asarray(rng.normal(size=5))
        z = jnp.asarray(rng.normal(size=5))
        cross = jax.jacfwd(jax.grad(lambda z_, y_: ref_student_loss(loss, z_, y_)), argnums=1)(y, y)
        np.testing.assert_allclose(theory.alignment_matrix(loss, y), -cross, atol=1e-13)
        g = jax.grad(lambda z_: ref_student_loss(loss, z_, y))(z)
        np.testing.assert_allclose(theory.output_gradient(loss, z, y), g, atol=1e-13)
        np.testing.assert_allclose(theory.student_loss_value(loss, z, y), ref_student_loss(loss, z, y), atol=1e-13)


# ----------------------------------------------------------------------------- finite differences


def test_kernel_gradients_match_central_finite_differences():
    """ΔθT, ΔθS(ε), A (as an ε-slope) and ∂A/∂θT0 against central differences, float64, tiny net."""
    with theory.float64():
        cfg, t0, other, x, loss_T, args = make_net([3, 2], 2, 3, 3, 4, seed=5)
        # random biases, so that no ReLU sits at its kink (finite differences would straddle it)
        t0, other = (jax.tree_util.tree_map_with_path(
            lambda path, a, k=k: a + 0.5 * jax.random.normal(jax.random.fold_in(k, len(str(path))), a.shape, a.dtype)
            if "bias" in str(path) else a, p) for p, k in ((t0, jax.random.PRNGKey(1)), (other, jax.random.PRNGKey(2))))
        assert min(kink_margin(t0, x), kink_margin(other, x)) > 1e-3
        h = 1e-5
        d_t = theory.teacher_update(loss_T, t0, *args)
        lt = jax.jit(loss_T)
        for i in range(3):
            u = random_direction(t0, jax.random.PRNGKey(i))
            fd = (lt(jax.tree.map(lambda a, b: a + h * b, t0, u), *args)
                  - lt(jax.tree.map(lambda a, b: a - h * b, t0, u), *args)) / (2 * h)
            assert float(-theory.tree_dot(d_t, u)) == pytest.approx(float(fd), rel=1e-7, abs=1e-10)
        for loss in theory.standard_losses(cfg):
            for theta_S0 in (t0, other):
                e = 0.3
                d_s = theory.student_update(loss, theta_S0, t0, d_t, x, e)
                y = apply(jax.tree.map(lambda a, b: a + e * b, t0, d_t), x)
                mean_ls = lambda p: _mean_student_loss(loss, p, x, y)  # noqa: E731
                for i in range(2):
                    u = random_direction(t0, jax.random.PRNGKey(10 + i))
                    fd = (mean_ls(jax.tree.map(lambda a, b: a + h * b, theta_S0, u))
                          - mean_ls(jax.tree.map(lambda a, b: a - h * b, theta_S0, u))) / (2 * h)
                    assert float(-theory.tree_dot(d_s, u)) == pytest.approx(float(fd), rel=1e-6, abs=1e-10)
            # A = d/dε (ΔθS·ΔθT) at ε = 0, by central differences of the plain-jax.grad dot
            A = float(theory.first_order_coefficient(loss, t0, d_t, x))
            hh = 1e-4
            slope = (ref_dot(loss, t0, t0, d_t, x, hh) - ref_dot(loss, t0, t0, d_t, x, -hh)) / (2 * hh)
            assert A == pytest.approx(slope, rel=1e-6, abs=1e-12)
            if loss.name == "mse_all":
                continue  # the other three settings cover ∂A/∂θT0
            # the kernels are differentiable: ∂A/∂θT0 by jax.grad vs central differences
            gA = jax.grad(lambda p: theory.first_order_coefficient(loss, p, d_t, x))(t0)
            u = random_direction(t0, jax.random.PRNGKey(99))
            def fA(s):
                return theory.first_order_coefficient(loss, jax.tree.map(lambda a, b: a + s * b, t0, u), d_t, x)

            fd = (fA(h) - fA(-h)) / (2 * h)
            assert float(theory.tree_dot(gA, u)) == pytest.approx(float(fd), rel=1e-6, abs=1e-10)


# ----------------------------------------------------------------------------- subset CE


def _restrict_head(params, idx):
    out = dict(params)
    out["head"] = {"kernel": params["head"]["kernel"][:, idx], "bias": params["head"]["bias"][idx]}
    return out


@settings(HYP, max_examples=4)
@given(shape=net_shapes)
def test_ce_subset_is_ce_on_the_restricted_network(shape):
    """CE on a subset S = full CE on a network whose head keeps only the logits in S."""
    with theory.float64():
        cfg, t0, other, x, loss_T, args = make_net(**shape)
        sub = theory.ce_aux(cfg)
        idx = np.nonzero(np.asarray(sub.weights))[0]
        full_r = theory.StudentLoss.ce(np.ones(len(idx)))
        d_t = theory.teacher_update(loss_T, t0, *args)
        t0_r, d_t_r, other_r = (_restrict_head(p, idx) for p in (t0, d_t, other))
        A = theory.first_order_coefficient(sub, t0, d_t, x)
        A_r = theory.first_order_coefficient(full_r, t0_r, d_t_r, x)
        np.testing.assert_allclose(A, A_r, rtol=1e-10, atol=1e-15)
        for theta_S0, theta_S0_r in ((t0, t0_r), (other, other_r)):
            d_s = theory.student_update(sub, theta_S0, t0, d_t, x, 1e-2)
            d_r = theory.student_update(full_r, theta_S0_r, t0_r, d_t_r, x, 1e-2)
            for k in d_s:
                if k == "head":
                    np.testing.assert_allclose(d_s["head"]["kernel"][:, idx], d_r["head"]["kernel"], atol=1e-13)
                    off = np.setdiff1d(np.arange(cfg.n_outputs), idx)
                    assert np.all(np.asarray(d_s["head"]["kernel"][:, off]) == 0)
                else:
                    for leaf in d_s[k]:
                        np.testing.assert_allclose(d_s[k][leaf], d_r[k][leaf], atol=1e-13)
        # and the subset with every logit is ce_all
        assert theory.StudentLoss.ce(np.ones(cfg.n_outputs), name="ce_all") == theory.ce_all(cfg)


# ----------------------------------------------------------------------------- vmap / sweep consistency


def test_vmap_over_eps_matches_sweep():
    """One compiled sweep = the single-ε kernels vmapped over ε, for every loss and initialisation."""
    with theory.float64():
        cfg, t0, other, x, loss_T, args = make_net([4, 3], 2, 3, 3, 5, seed=1)
        losses = theory.standard_losses(cfg)
        eps = theory.eps_grid(1e-4, 1e-1, 5)
        d_t = theory.teacher_update(loss_T, t0, *args)
        res = theory.sweep(losses, loss_T, t0, [t0, other], x, eps, alpha=0.5, loss_T_args=args, eps_batch=2)
        for i, s0 in enumerate((t0, other)):
            for k, loss in enumerate(losses):
                out = jax.vmap(lambda e: theory.alignment(loss, loss_T, s0, t0, d_t, x, e, 0.5, args))(
                    jnp.asarray(eps))
                np.testing.assert_allclose(res.dot[i, k], out["dot"], rtol=1e-10, atol=1e-15)
                np.testing.assert_allclose(res.cos[i, k], out["cos"], rtol=1e-10, atol=1e-15)
                np.testing.assert_allclose(res.delta_LT[i, k], out["delta_LT"], rtol=1e-8, atol=1e-14)
                d = jax.vmap(lambda e: theory.student_update(loss, s0, t0, d_t, x, e))(jnp.asarray(eps))
                np.testing.assert_allclose(res.norm_S[i, k], jax.vmap(theory.tree_norm)(d), rtol=1e-10)
                # ... and at ε = 0 (the student's step on the untrained teacher): its norm and dot with ΔθT.
                d0 = ref_update(loss, s0, t0, x)
                np.testing.assert_allclose(res.norm_S0[i, k], theory.tree_norm(d0), rtol=1e-10, atol=1e-12)
                np.testing.assert_allclose(res.dot0[i, k], theory.tree_dot(d0, d_t), rtol=1e-10, atol=1e-15)
            np.testing.assert_allclose(res.LT0[i], loss_T(s0, *args), rtol=1e-14)
        np.testing.assert_allclose(res.A, [theory.first_order_coefficient(l, t0, d_t, x) for l in losses], rtol=1e-12)


def test_a_zero_student_update_has_cosine_zero():
    """Softmax CE on one logit has zero gradient (its softmax is 1 whatever the logit): ΔθS ≡ 0, and its cosine,
    dot and A are 0 (not 1, not NaN)."""
    with theory.float64():
        cfg, t0, other, x, loss_T, args = make_net([4, 3], 2, 3, 3, 5, seed=2)
        one = theory.StudentLoss.ce([4], n_outputs=5)
        d_t = theory.teacher_update(loss_T, t0, *args)
        res = theory.sweep([one], loss_T, t0, [t0, other], x, theory.eps_grid(1e-3, 1e-1, 3), loss_T_args=args)
        for field in ("norm_S", "cos", "dot", "norm_S0", "A"):
            np.testing.assert_array_equal(getattr(res, field), 0.0, err_msg=field)
        assert float(theory.tree_cosine({"w": jnp.zeros(3)}, {"w": jnp.ones(3)})) == 0.0
        assert float(theory.tree_cosine(d_t, d_t)) == pytest.approx(1.0)


def test_float32_outside_the_scope_and_import_keeps_x64_off():
    code = ("import jax; import subliminal_mlp.theory.kernels as t; assert not jax.config.jax_enable_x64\n"
            "with t.float64():\n    assert jax.config.jax_enable_x64\n"
            "assert not jax.config.jax_enable_x64\n"
            "try:\n    t.to_float64({'a': 1.0})\nexcept RuntimeError as e:\n    print('ok', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith("ok")


# ----------------------------------------------------------------------------- bad arguments


@pytest.mark.filterwarnings("ignore::subliminal_mlp.theory.kernels.PrecisionWarning")  # refusals, in float32
def test_bad_arguments_raise_clear_errors():
    with theory.float64():
        cfg, t0, other, x, loss_T, args = make_net([4], 2, 3, 3, 4, seed=0)
        loss = theory.ce_aux(cfg)
        d_t = theory.teacher_update(loss_T, t0, *args)
        wide = theory.to_float64(init_params(jax.random.PRNGKey(0), cfg.replace(hidden_widths=(5,))))
        deep = theory.to_float64(init_params(jax.random.PRNGKey(0), cfg.replace(hidden_widths=(4, 4))))
        with pytest.raises(ValueError, match=r"theta_S0\['\w+'\]\['\w+'\] has shape .* but theta_T0"):
            theory.student_update(loss, wide, t0, d_t, x, 0.1)
        with pytest.raises(ValueError, match="not the same parameter pytree.*extra"):
            theory.alignment(loss, loss_T, deep, t0, d_t, x, 0.1, 1.0, args)
        with pytest.raises(ValueError, match="delta_T"):
            theory.first_order_coefficient(loss, t0, {"head": d_t["head"]}, x)
        half = jax.tree.map(lambda a: a.astype(jnp.float32), t0)  # float32 params beside float64 ones
        with pytest.warns(UserWarning), pytest.raises(ValueError, match=r"theta_S0\['\w+'\]\['\w+'\] is float32 but "
                                                                       r"theta_T0\['\w+'\]\['\w+'\] is float64"):
            theory.student_update(loss, half, t0, d_t, x, 0.1)
    # Outside float64(): a float64 tree made inside it is computed in float32, as documented, also beside a float32
    # one (it was refused, naming the two); numpy float64 arrays are converted to float32 by JAX, as always.
    t32, d32 = (jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), t) for t in (t0, d_t))
    assert float(theory.first_order_coefficient(loss, t32, d_t, np.asarray(x, np.float32))) == \
        float(theory.first_order_coefficient(loss, t32, d32, np.asarray(x, np.float32)))
    d_np = jax.tree.map(lambda a: np.asarray(a, np.float64), d_t)
    assert float(theory.first_order_coefficient(loss, t32, d_np, np.asarray(x, np.float32))) == pytest.approx(
        float(theory.first_order_coefficient(loss, t32, d32, np.asarray(x, np.float32))))
    with theory.float64():
        with pytest.raises(ValueError, match=r"students\[1\]"):
            theory.sweep([loss], loss_T, t0, [t0, wide], x, [0.1], loss_T_args=args)
        for bad in (0.0, -1e-3, float("nan")):
            with pytest.raises(ValueError, match="eps must be finite and > 0"):
                theory.student_update(loss, t0, t0, d_t, x, bad)
        with pytest.raises(ValueError, match="eps must be finite and > 0"):
            theory.sweep([loss], loss_T, t0, [t0], x, [1e-3, 0.0], loss_T_args=args)
        with pytest.raises(ValueError, match="alpha must be finite and > 0"):
            theory.alignment(loss, loss_T, t0, t0, d_t, x, 0.1, 0.0, args)
        with pytest.raises(ValueError, match="subset is empty"):
            theory.StudentLoss.ce(np.zeros(cfg.n_outputs))
        with pytest.raises(ValueError, match="subset is empty"):
            theory.StudentLoss.ce([], n_outputs=cfg.n_outputs)
        with pytest.raises(ValueError, match="all zero"):
            theory.StudentLoss.mse(np.zeros(cfg.n_outputs))
        with pytest.raises(ValueError, match=">= 0"):
            theory.StudentLoss.mse([1.0, -0.5, 1.0])
        with pytest.raises(ValueError, match="0/1 mask"):
            theory.StudentLoss.ce([0.5, 1.0])
        with pytest.raises(ValueError, match="0/1 mask .* as indices, give the number of logits too"):
            theory.StudentLoss.ce([10, 11, 12])  # indices without n_outputs
        assert theory.StudentLoss.ce([10, 11, 12], n_outputs=13).weights == (0.0,) * 10 + (1.0,) * 3
        with pytest.raises(ValueError, match="kind"):
            theory.StudentLoss("kl", (1.0,))
        with pytest.raises(ValueError, match="has 2 logit weights but the network has 5 outputs"):
            theory.student_update(theory.StudentLoss.mse([1, 1]), t0, t0, d_t, x, 0.1)
        with pytest.raises(ValueError, match="does not fit the network"):
            theory.student_update(loss, t0, t0, d_t, x[:, :2], 0.1)
        rounded = Model(lambda k: {"w": jnp.ones((3, 5))}, lambda q, xx: jnp.round(xx @ q["w"]).astype(jnp.int32),
                        n_classes=3, aux_logits=2, input_shape=(3,))
        w0 = theory.to_float64(rounded.init(None))
        with pytest.raises(ModelError, match="outputs of dtype int32: .* must be floating-point"):
            theory.student_update(theory.ce_aux(rounded), w0, w0, w0, x, 0.1, model=rounded)
        # The pytree helpers refuse two trees of different structures or shapes (they paired unrelated entries).
        tree = {"a": jnp.ones(2), "b": jnp.ones((2, 2))}
        for other in ({"a": jnp.ones(2), "c": jnp.ones((2, 2))}, {"a": jnp.ones(2), "b": jnp.ones((4,))},
                      {"a": jnp.ones(2), "b": jnp.ones((2, 3))}):
            for helper in (theory.tree_dot, theory.tree_cosine):
                with pytest.raises(ValueError, match="differ in (structure|a leaf's shape)"):
                    helper(tree, other)
        with pytest.raises(ValueError, match="unknown loss setting"):
            theory.standard_losses(cfg, ["kl_aux"])
        with pytest.raises(ValueError, match="eps_min"):
            theory.eps_grid(0.0, 1.0, 8)
        with pytest.raises(ValueError, match="losses is empty"):
            theory.sweep([], loss_T, t0, [t0], x, [0.1], loss_T_args=args)
        # one loss or one initialisation where lists go: said so (they failed as 'not iterable', or as a tree whose
        # leaves were the parameter tree's keys)
        with pytest.raises(ValueError, match=r"losses is one StudentLoss \(.+\): give a list of them, e.g. \[loss\]"):
            theory.sweep(loss, loss_T, t0, [t0], x, [0.1], loss_T_args=args)
        with pytest.raises(ValueError, match=r"students is one dict: give a list of student initialisations"):
            theory.sweep([loss], loss_T, t0, t0, x, [0.1], loss_T_args=args)
        # integer inputs are taken as floats of the parameters' precision (ε and α too), as alignment does
        xi = jnp.asarray(np.arange(12).reshape(4, 3) % 3)
        got = theory.sweep([loss], loss_T, t0, [t0], xi, [1e-3, 0.5], alpha=0.5, loss_T_args=args)
        want = theory.sweep([loss], loss_T, t0, [t0], xi.astype(jnp.float64), [1e-3, 0.5], alpha=0.5, loss_T_args=args)
        np.testing.assert_array_equal(np.asarray(got.dot), np.asarray(want.dot))
        assert np.all(np.asarray(got.dot) != 0)
        single = theory.alignment(loss, loss_T, t0, t0, d_t, xi.astype(jnp.float64), 0.5, 0.5, args)["dot"]
        assert float(got.dot[0, 0, 1]) == pytest.approx(float(single), rel=1e-12)
    with pytest.raises(ValueError, match="seeds is empty"):
        theorem.run_theorem_check(model=mlp((4,), n_classes=3, aux_logits=2, input_dim=3), teacher_loss="l2", seeds=[])
    for bad in (-1, 2**32, 1.5):
        with pytest.raises(ValueError, match="seed = "):
            theorem.run_theorem_check(model=mlp((4,), n_classes=3, aux_logits=2, input_dim=3), teacher_loss="l2",
                                      seeds=[0, bad])
    with pytest.raises(ValueError, match="teacher_batch = 32 has no effect with teacher_loss = 'l2'"):  # as the CLI
        theorem.run_theorem_check(model=mlp((4,), n_classes=3, aux_logits=2, input_dim=3), teacher_loss="l2",
                                  teacher_batch=32)
    assert theorem.summarize({"eps": [1e-6, 1e-5], "losses": {}, "config": {"seeds": []}})["ok"] is False


def test_values_that_would_silently_compute_something_else_are_refused_or_warned():
    """An ε or α array broadcast against the parameters (a step per column), labels outside the classes (an
    example dropped from ΔθT), data passed where the Config goes, float32 inputs in the float64 scope."""
    net = mlp((5,), n_classes=3, aux_logits=2, input_dim=6)
    with theory.float64():
        p = theory.to_float64(net.init(jax.random.PRNGKey(0)))
        x = theory.to_float64(jnp.ones((4, 6)))
        loss, L_T = theory.ce_aux(net), theory.class_cross_entropy_loss(net)
        labels = jnp.arange(4) % 3
        d_t = theory.teacher_update(L_T, p, x, labels, model=net)
        with pytest.raises(ValueError, match=r"eps must be one number; got an array of shape \(5,\)"):
            theory.student_update(loss, p, p, d_t, x, jnp.full(5, 1e-3), model=net)  # W's columns: 5
        with pytest.raises(ValueError, match="alpha must be one number"):
            theory.alignment(loss, L_T, p, p, d_t, x, 1e-3, jnp.ones(5), (x, labels), model=net)
        with pytest.raises(ValueError, match="alpha must be one number"):
            theory.sweep([loss], L_T, p, [p], x, [1e-3], alpha=jnp.ones(2), loss_T_args=(x, labels), model=net)
        # a step below the floor: float64 rounding dominates, and at 1e-300 the teacher does not move (an exact 0)
        with pytest.warns(theory.PrecisionWarning, match="eps = 1e-300 is below 1e-10, the smallest step"):
            tiny = theory.sweep([loss], L_T, p, [p], x, [1e-300, 1e-3], loss_T_args=(x, labels), model=net)
        assert float(tiny.dot[0, 0, 0]) == 0.0 and float(tiny.dot[0, 0, 1]) != 0.0
        for bad in (labels + 1, labels - 1):  # 1-based, negative
            with pytest.raises(ValueError, match=r"labels must be integers in 0..2; got int(32|64) labels from (1 to 3|-1 to 1)\."):
                theory.teacher_update(L_T, p, x, bad, model=net)
        with pytest.raises(ModelError, match="indices must be of integer type"):
            theory.teacher_update(L_T, p, x, labels * 0.5, model=net)
        # the class cross-entropy's arguments forgotten, or one-hot labels: said as such, not as a failure to apply
        with pytest.raises(ValueError, match=r"takes loss_T_args=\(images, labels\).*got 0 argument"):
            theory.teacher_update(L_T, p, model=net)
        with pytest.raises(ValueError, match=r"one class index per image, shape \(4,\); got shape \(4, 3\).*one-hot"):
            theory.teacher_update(L_T, p, x, jax.nn.one_hot(labels, 3), model=net)
        q = net.init(jax.random.PRNGKey(0))  # float32, as a model's init gives them
        with pytest.warns(theory.PrecisionWarning, match="theta_T0 is float32 inside theory.float64"):
            theory.student_update(loss, q, q, q, x, 1e-3, model=net)
        with pytest.warns(theory.PrecisionWarning) as caught:  # float32 x beside float32 parameters: both said
            theory.student_update(loss, q, q, q, jnp.ones((4, 6), jnp.float32), 1e-3, model=net)
        assert sorted(str(w.message).split(" is float32 inside theory.float64")[0] for w in caught) == ["theta_T0", "x"]
    # Outside the scope a kernel computes in float32 whatever its inputs (float64 arrays made inside included):
    # said on concrete arrays; not inside a traced program (the one-step study's float32 predictors).
    import warnings

    with pytest.warns(theory.PrecisionWarning, match="runs outside theory.float64.*computes in float32") as caught:
        warnings.filterwarnings("ignore", "Explicitly requested dtype float64", UserWarning)  # JAX's own, the same
        theory.first_order_coefficient(loss, p, d_t, x, model=net)
    # once a call (the parameters' check and the inputs' both said it), at the caller's line, not the library's
    assert [(w.filename, w.lineno) for w in caught if w.category is theory.PrecisionWarning] == \
        [(__file__, sys._getframe().f_lineno - 3)]

    # Every kernel, on float64 arrays made inside the scope, computes in float32 after it (the sweep, alignment and
    # student update failed inside differentiation, float64 primals against float32 cotangents).
    with theory.float64():
        A64 = theory.first_order_coefficient(loss, p, d_t, x, model=net)
    with pytest.warns(theory.PrecisionWarning, match="runs outside theory.float64"):
        res = theory.sweep([loss], L_T, p, [p], x, [1e-6, 1e-5], loss_T_args=(x, labels), model=net)
        al = theory.alignment(loss, L_T, p, p, d_t, x, 1e-3, 1.0, (x, labels), model=net)
        upd = theory.student_update(loss, p, p, d_t, x, 1e-3, model=net)
        A32 = theory.first_order_coefficient(loss, p, d_t, x, model=net)
    assert res.A.dtype == jnp.float32 and {a.dtype for a in jax.tree.leaves(upd)} == {jnp.dtype(jnp.float32)}
    assert A32.dtype == jnp.float32 and float(A32) == pytest.approx(float(A64), rel=1e-5)
    assert np.isfinite(np.asarray(al["dot"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error", theory.PrecisionWarning)
        jax.jit(lambda q, d, xx: theory.first_order_coefficient(loss, q, d, xx, model=net))(
            net.init(jax.random.PRNGKey(0)), net.init(jax.random.PRNGKey(1)), jnp.ones((4, 6), jnp.float32))
    with pytest.raises(ValueError, match="cfg = ndarray is not a Config.*images= and labels= by name"):
        theorem.run_theorem_check(np.zeros((3, 6)), np.zeros(3), model=net)
    with pytest.raises(ValueError, match="cfg = Model is not a Config.*pass model=, images= and labels= by name"):
        theorem.run_theorem_check(net, images=np.zeros((3, 6)), labels=np.zeros(3))  # the model given first


# ----------------------------------------------------------------------------- CLI, figure


@pytest.mark.slow
def test_cli_on_mnist(data_root, tmp_path, capsys):
    out = tmp_path / "theorem.json"
    rc = cli_main(["theorem", "--hidden", "32", "16", "-m", "4", "--n-noise", "96", "--teacher-batch", "200",
                   "--n-eps", "6", "--seeds", "2", "--data-dir", str(data_root), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    for name in theory.STANDARD_LOSSES:
        assert f"loss setting: {name}" in text
    assert "PASS" in text and "rel gap" in text
    rec = json.loads(out.read_text())
    assert rec["format"] == theorem.FORMAT and rec["summary"]["ok"] is True
    assert rec["config"]["hidden_widths"] == [32, 16] and rec["config"]["aux_logits"] == 4
    assert len(rec["eps"]) == 6 and len(rec["losses"]["ce_aux"]["A"]) == 2
    assert rec["data"]["sha256"]
    # the figure from the same record
    path = theorem.plot_theorem(rec, tmp_path / "fig.png")
    assert path.stat().st_size > 10_000


def test_cli_exit_status_when_the_prediction_fails(capsys):
    args = ["theorem", "--teacher-loss", "l2", "--hidden", "5", "-m", "2", "--n-noise", "8", "--n-eps", "3",
            "--seeds", "1", "--losses", "ce_aux", "mse_all"]
    assert cli_main(args) == 0
    assert "PASS" in capsys.readouterr().out
    assert cli_main(args + ["--gap-tol", "1e-300"]) == 1  # an impossible tolerance: reported as a failure
    assert ("FAIL: the theorem's prediction was not met (the rows marked NO): ce_aux seed 0: dot/ε is not A (the "
            "gap is above the tolerance, or does not vanish like ε); mse_all seed 0: dot/ε is not A") in (
        capsys.readouterr().out)
    assert cli_main(args + ["--eps-min", "0"]) == 2
    assert "--eps-min" in capsys.readouterr().err
    assert cli_main(args + ["--eps-max", "1e-9"]) == 2
    # the last seed, seed + seeds - 1, must still be a key's seed (< 2**32)
    assert cli_main(args + ["--seed", str(2**32 - 1), "--seeds", "2"]) == 2
    assert "2**32" in capsys.readouterr().err
    # another model from the command line: the tanh MLP, with L_T built for it
    assert cli_main(args + ["--activation", "tanh"]) == 0
    assert "MLP 784→5→10+2 (tanh)" in capsys.readouterr().out


# ----------------------------------------------------------------------------- any model


def tanh_forward(params, x):
    """A hand-written tanh MLP: h ← tanh(h W_i + b_i) for each hidden layer, then the head (no Flax)."""
    h = x
    for i in range(len(params) - 1):
        h = jnp.tanh(h @ params[f"hidden_{i}"]["kernel"] + params[f"hidden_{i}"]["bias"])
    return h @ params["head"]["kernel"] + params["head"]["bias"]


def hand_class_ce(forward, params, images, labels, n_classes):
    """−mean_i log softmax(f(x_i)[:n_classes])[label_i], written without the library's losses."""
    z = forward(params, images)[:, :n_classes]
    return -jnp.mean(jax.nn.log_softmax(z, axis=-1)[jnp.arange(labels.shape[0]), labels])


def assert_trees_close(a, b, **kw):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, **kw)


def test_tanh_mlp_kernels_differentiate_the_tanh_network():
    """The tanh MLP: ΔθT = −jax.grad of the tanh network's own CE; A is its own (not the ReLU network's)."""
    tanh = mlp((5, 4), n_classes=3, aux_logits=2, input_dim=6, activation="tanh")
    relu = mlp((5, 4), n_classes=3, aux_logits=2, input_dim=6)
    with theory.float64():
        t0 = theory.to_float64(tanh.init(jax.random.PRNGKey(3)))
        k1, k2, k3 = jax.random.split(jax.random.PRNGKey(4), 3)
        imgs = jax.random.normal(k1, (9, 6), jnp.float64)
        labels = jax.random.randint(k2, (9,), 0, 3)
        x = jax.random.uniform(k3, (8, 6), jnp.float64, -1.0, 1.0)
        loss_T = theory.class_cross_entropy_loss(tanh)
        d_t = theory.teacher_update(loss_T, t0, imgs, labels, model=tanh)
        ref = jax.grad(hand_class_ce, argnums=1)(tanh_forward, t0, imgs, labels, 3)
        assert_trees_close(d_t, jax.tree.map(jnp.negative, ref), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(loss_T(t0, imgs, labels), hand_class_ce(tanh_forward, t0, imgs, labels, 3),
                                   rtol=1e-14)
        # the ReLU network on the same parameters has another update (the reported bug: it was used instead)
        d_relu = theory.teacher_update(theory.class_cross_entropy_loss(relu), t0, imgs, labels, model=relu)
        assert float(theory.tree_norm(jax.tree.map(jnp.subtract, d_t, d_relu))) > 1e-3 * float(theory.tree_norm(d_t))
        y0, v = jax.jvp(lambda p: tanh_forward(p, x), (t0,), (d_t,))
        for loss, loss_relu in zip(theory.standard_losses(tanh), theory.standard_losses(relu)):
            A = float(theory.first_order_coefficient(loss, t0, d_t, x, model=tanh))
            # independent A: jvp of the hand-written network, M = −∂²L_S/∂y∂z by jacfwd(grad)
            M = jax.vmap(lambda y: -jax.jacfwd(jax.grad(lambda z, y_: ref_student_loss(loss, z, y_)),
                                               argnums=1)(y, y))(y0)
            A_ref = float(jnp.mean(jnp.einsum("bi,bij,bj->b", v, M, v)))
            assert A == pytest.approx(A_ref, rel=1e-10) and A > 0
            A_relu = float(theory.first_order_coefficient(loss_relu, t0, d_relu, x, model=relu))
            assert abs(A - A_relu) > 1e-3 * A
            # the theorem on the tanh network (smooth: no kinks): ΔθS·ΔθT/ε → A, L_T decreases
            out = theory.alignment(loss, loss_T, t0, t0, d_t, x, 1e-6, 1.0, (imgs, labels), model=tanh)
            assert float(out["dot"]) / 1e-6 == pytest.approx(A, rel=1e-4)
            assert float(out["delta_LT"]) < 0
        # the paper's loss (ReLU MLP read off the parameters) with the tanh model: an error, not the ReLU gradient
        with pytest.raises(ModelError, match=r"built for the paper's ReLU MLP.*network here is model 'mlp'.*tanh"):
            theory.alignment(theory.ce_aux(tanh), theory.mnist_teacher_loss(3), t0, t0, d_t, x, 1e-3, 1.0,
                             (imgs, labels), model=tanh)
        with pytest.raises(ModelError, match="network here is apply_fn"):
            theory.sweep(theory.standard_losses(tanh), theory.mnist_teacher_loss(3), t0, [t0], x, [1e-3],
                         loss_T_args=(imgs, labels), apply_fn=tanh.apply)
        # with the ReLU mlp the paper's loss is the same loss as class_cross_entropy_loss(relu)
        d_ref = theory.teacher_update(theory.mnist_teacher_loss(3), t0, imgs, labels, model=relu)
        assert_trees_close(d_ref, d_relu, rtol=0, atol=0)


class SmallCNN(nn.Module):
    """A 28×28×1 image → conv 5×5 stride 4 (4 channels) → tanh → dense → 13 logits."""

    n_outputs: int = 13

    @nn.compact
    def __call__(self, x):
        x = jnp.tanh(nn.Conv(4, (5, 5), strides=(4, 4), padding="VALID", name="conv")(x))
        return nn.Dense(self.n_outputs, name="dense")(x.reshape(x.shape[0], -1))


def small_cnn():
    return from_flax(SmallCNN(), n_classes=10, aux_logits=3, input_shape=(28, 28, 1), name="small_cnn")


def cnn_problem(n_x=6):
    """float64 (in theory.float64()): a CNN, θT0, another θS0, noise images, an MNIST-like labelled batch."""
    cnn = small_cnn()
    t0, other = (theory.to_float64(cnn.init(jax.random.PRNGKey(s))) for s in (0, 1))
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(2), 3)
    x = jax.random.uniform(k1, (n_x, 28, 28, 1), jnp.float64, -1.0, 1.0)
    imgs = jax.random.uniform(k2, (7, 784), jnp.float64)  # flat, as load_mnist gives them
    labels = jax.random.randint(k3, (7,), 0, 10)
    return cnn, t0, other, x, imgs, labels


def test_cnn_runs_through_the_kernels_and_the_sweep():
    """A Flax CNN: ΔθT is −jax.grad of its own CE; the sweep matches the single-ε kernels; dot/ε → A ≥ 0."""
    with theory.float64():
        cnn, t0, other, x, imgs, labels = cnn_problem()
        loss_T = theory.class_cross_entropy_loss(cnn)
        args = (imgs, labels)
        d_t = theory.teacher_update(loss_T, t0, *args, model=cnn)
        fwd = lambda p, xs: cnn.apply(p, xs.reshape(xs.shape[0], 28, 28, 1))  # noqa: E731
        ref = jax.grad(hand_class_ce, argnums=1)(fwd, t0, imgs, labels, 10)
        assert_trees_close(d_t, jax.tree.map(jnp.negative, ref), rtol=1e-12, atol=1e-15)
        losses = theory.standard_losses(cnn)
        eps = np.array([1e-6, 1e-3, 1e-1])
        res = theory.sweep(losses, loss_T, t0, [t0, other], x, eps, loss_T_args=args, model=cnn)
        A = np.asarray(res.A)
        assert np.all(A > 0)
        np.testing.assert_allclose(np.asarray(res.dot[0, :, 0]) / eps[0], A, rtol=1e-4)
        assert np.all(np.asarray(res.delta_LT[0, :, 0]) < 0)
        # A student at the teacher's own start gets no update: exactly 0 on a CPU; on a GPU the student's and the
        # teacher's convolutions may round differently (1.8e-16 seen on an H100), so up to float64 rounding.
        assert np.all(np.asarray(res.norm_S0[0]) <= 1e-12 * np.asarray(res.norm_S0[1]))
        assert np.all(np.asarray(res.norm_S0[1]) > 0)
        for k, loss in enumerate(losses):
            np.testing.assert_allclose(A[k], theory.first_order_coefficient(loss, t0, d_t, x, model=cnn), rtol=1e-12)
            for i, s0 in enumerate((t0, other)):
                out = theory.alignment(loss, loss_T, s0, t0, d_t, x, 1e-3, 1.0, args, model=cnn)
                np.testing.assert_allclose(res.dot[i, k, 1], out["dot"], rtol=1e-10, atol=1e-15)
                np.testing.assert_allclose(res.delta_LT[i, k, 1], out["delta_LT"], rtol=1e-8, atol=1e-14)
        y0, v = theory.output_tangent(t0, d_t, x, model=cnn)
        assert y0.shape == v.shape == (x.shape[0], 13)


def mlp_only_loss(params, images, labels):
    """A plain L_T that only fits an MLP: it reads params["hidden_0"]."""
    h = jnp.tanh(images.reshape(images.shape[0], -1) @ params["hidden_0"]["kernel"])
    return jnp.mean(h) + 0.0 * labels.sum()


def test_a_teacher_loss_for_another_model_is_an_error():
    """Teacher loss bound to model X, used with model Y, raises naming both; a plain loss that cannot apply raises."""
    tanh = mlp((4,), n_classes=10, aux_logits=3, activation="tanh")
    relu = mlp((4,))
    with theory.float64():
        cnn, t0, other, x, imgs, labels = cnn_problem(n_x=3)
        p_mlp = theory.to_float64(relu.init(jax.random.PRNGKey(0)))
        x_flat = x.reshape(x.shape[0], -1)
        d_t = theory.teacher_update(theory.l2_teacher_loss, p_mlp)
        for loss_T, net, params, xs in ((theory.class_cross_entropy_loss(tanh), relu, p_mlp, x_flat),
                                        (theory.class_cross_entropy_loss(relu), tanh, p_mlp, x_flat),
                                        (theory.class_cross_entropy_loss(relu), cnn, t0, x),
                                        (theory.class_cross_entropy_loss(cnn), relu, p_mlp, x_flat),
                                        (theory.mnist_teacher_loss(10), cnn, t0, x)):
            want = loss_T.network_label.split(" (")[0]
            with pytest.raises(ModelError, match=rf"is built for {want}.*but the network here is model '{net.name}'"):
                theory.sweep(theory.standard_losses(net), loss_T, params, [params], xs, [1e-3],
                             loss_T_args=(imgs, labels), model=net)
            with pytest.raises(ModelError, match="is built for"):
                theory.teacher_update(loss_T, params, imgs, labels, model=net)
        # the default network (no model=) is the paper's ReLU MLP: a tanh-bound loss does not silently run on it
        with pytest.raises(ModelError, match=r"built for model 'mlp' \(.*activation=tanh\).*paper's ReLU MLP"):
            theory.alignment(theory.ce_aux(relu), theory.class_cross_entropy_loss(tanh), p_mlp, p_mlp, d_t,
                             x_flat, 1e-3, 1.0, (imgs, labels))
        # Nor does a student loss built for the tanh model (model= forgotten: the default network would be used).
        for kernel in (lambda loss, **kw: theory.sweep([loss], theory.l2_teacher_loss, p_mlp, [p_mlp], x_flat, [1e-3], **kw),
                       lambda loss, **kw: theory.first_order_coefficient(loss, p_mlp, d_t, x_flat, **kw),
                       lambda loss, **kw: theory.student_update(loss, p_mlp, p_mlp, d_t, x_flat, 1e-3, **kw)):
            with pytest.raises(ModelError, match=r"loss setting 'ce_aux' was built for model 'mlp' \(.*activation=tanh\)"
                                                 r".*paper's ReLU MLP.*pass the same model="):
                kernel(theory.ce_aux(tanh))
            with pytest.raises(ModelError, match=r"'mse_all' was built for .*activation=tanh.*here is model 'mlp' "
                                                 r"\(.*activation=relu"):
                kernel(theory.mse_all(tanh), model=relu)
            kernel(theory.ce_aux(tanh), model=tanh)  # its own network
            kernel(theory.ce_aux(relu))  # a ReLU MLP's loss on the default network (the same function)
            kernel(theory.ce_aux(mlp((7,))), model=relu)  # two ReLU MLPs: widths come from the parameters
            kernel(theory.ce_aux(Config()), model=tanh)  # built from counts only: no network to check
        assert theory.ce_aux(tanh) == theory.ce_aux(relu) and hash(theory.ce_aux(tanh)) == hash(theory.ce_aux(relu))
        # a plain function that cannot be applied to the CNN's parameters: a clear error before any compute
        for call in (lambda: theory.sweep(theory.standard_losses(cnn), mlp_only_loss, t0, [t0], x, [1e-3],
                                          loss_T_args=(imgs, labels), model=cnn),
                     lambda: theory.teacher_update(mlp_only_loss, t0, imgs, labels, model=cnn),
                     lambda: theory.alignment(theory.ce_aux(cnn), mlp_only_loss, t0, t0, t0, x, 1e-3, 1.0,
                                              (imgs, labels), model=cnn)):
            with pytest.raises(ModelError, match=r"teacher loss .*mlp_only_loss cannot be applied to the parameters "
                                                 r"of model 'small_cnn' .*KeyError: .*hidden_0"):
                call()
        with pytest.raises(ModelError, match="cannot be applied to the parameters of model 'small_cnn'"):
            theorem.run_theorem_check(model=cnn, teacher_loss=mlp_only_loss, teacher_loss_args=(imgs, labels),
                                      n_noise=2, seeds=[0], eps=[1e-6, 1e-5])
        with pytest.raises(ModelError, match="must return a scalar"):
            theory.teacher_update(lambda p: jax.tree.leaves(p)[0], t0, model=cnn)
        with pytest.raises(ModelError, match="two different networks"):
            theory.first_order_coefficient(theory.ce_aux(cnn), t0, t0, x, model=cnn, apply_fn=relu.apply)
        with pytest.raises(ModelError, match=r"does not fit the network: model 'small_cnn'.*\(batch, 28, 28, 1\)"):
            theory.first_order_coefficient(theory.ce_aux(cnn), t0, t0, x_flat, model=cnn)
        with pytest.raises(ModelError, match="does not fit the network"):
            theory.first_order_coefficient(theory.ce_aux(relu), t0, t0, x_flat, model=relu)  # CNN params, MLP model
        with pytest.raises(ValueError, match="has 5 logit weights but the network has 13 outputs"):
            theory.student_update(theory.StudentLoss.mse(np.ones(5)), t0, t0, t0, x, 0.1, model=cnn)
        with pytest.raises(ModelError, match="needs a subliminal_mlp.core.models.Model"):
            theory.class_cross_entropy_loss(Config())
        # A 10-class MNIST loss on a ReLU MLP with 3 classes would read aux logits as classes: refused.
        three = mlp((4,), n_classes=3, aux_logits=2)
        p3 = theory.to_float64(three.init(jax.random.PRNGKey(0)))
        with pytest.raises(ModelError, match="is built for"):
            theory.teacher_update(theory.mnist_teacher_loss(10), p3, imgs, labels % 3, model=three)
        theory.teacher_update(theory.mnist_teacher_loss(3), p3, imgs, labels % 3, model=three)  # its own count
    with pytest.raises(ValueError, match="give cfg or model, not both"):
        theorem.run_theorem_check(Config(hidden_widths=(5,)), model=tanh, teacher_loss="l2")


def test_run_theorem_check_on_other_models_records_the_model(tmp_path):
    """run_theorem_check with a CNN (CE on flat images) and a tanh MLP (L2): settings["model"], verdict, report."""
    cnn = small_cnn()
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 1, (40, 784)).astype(np.float32)
    labels = rng.integers(0, 10, 40).astype(np.int32)
    eps = theory.eps_grid(1e-6, 1e-1, 4)
    rec = theorem.run_theorem_check(images=images, labels=labels, model=cnn, eps=eps, seeds=[0, 1], n_noise=12,
                                    teacher_batch=16)
    s = rec["config"]
    assert s["model"] == cnn.describe() and s["model"]["name"] == "small_cnn"
    assert s["model"]["input_shape"] == [28, 28, 1] and s["hidden_widths"] is None and s["input_dim"] == 784
    assert s["teacher_loss"] == "ce" and s["teacher_batch"] == 16 and s["losses"] == list(theory.STANDARD_LOSSES)
    summary = theorem.summarize(rec)
    assert theorem.theorem_holds(summary), theorem.format_tables(summary)
    assert "small_cnn 28×28×1→10+3" in theorem.settings_caption(rec)
    assert "PASS" in theorem.format_tables(summary)
    json.dumps(rec)  # JSON-ready
    from subliminal_mlp.report import plotting

    titles, save = [], plotting.save_figure
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plotting, "save_figure", lambda fig, path, **k: (
            titles.extend(ax.get_title() for ax in fig.axes if ax.get_title()), save(fig, path, **k))[1])
        assert theorem.plot_theorem(rec, tmp_path / "cnn.png").stat().st_size > 10_000
    # six panels, each its own letter (three were all "(c)"), shared initialisation on top
    assert [t[:3] for t in titles] == ["(a)", "(b)", "(c)", "(d)", "(e)", "(f)"], titles
    assert all("shared init" in t for t in titles[:3]) and all("different init" in t for t in titles[3:])

    tanh = mlp((6,), n_classes=3, aux_logits=2, input_dim=5, activation="tanh")
    kw = dict(teacher_loss="l2", eps=eps, seeds=[0], n_noise=8, losses=["ce_aux", "mse_all"])
    rec = theorem.run_theorem_check(model=tanh, **kw)
    assert rec["config"]["model"] == {"name": "mlp", "n_classes": 3, "aux_logits": 2, "input_shape": [5],
                                        "hidden_widths": [6], "activation": "tanh"}
    assert rec["config"]["teacher_loss"] == "l2" and rec["config"]["teacher_batch"] is None
    assert theorem.theorem_holds(theorem.summarize(rec))
    # the check ran in 64-bit mode, though the process-wide mode ("x64", when the record is written) is off
    assert rec["environment"]["x64_in_check"] is True and rec["environment"]["x64"] is False
    assert np.asarray(rec["losses"]["ce_aux"]["shared"]["dot"]).dtype == np.float64
    assert theorem.settings_caption(rec).startswith("MLP 5→6→3+2 (tanh); L_T = ½‖θ‖²")
    # a TeacherLoss built for the model, and the cfg path (the CLI's) = the same MLP given as model=
    custom = theory.TeacherLoss.custom(lambda m, p, xs: jnp.mean(m.apply(p, xs) ** 2), tanh, "mean_square")
    xs = rng.normal(size=(4, 5))
    rec_c = theorem.run_theorem_check(model=tanh, **dict(kw, teacher_loss=custom), teacher_loss_args=(xs,))
    assert rec_c["config"]["teacher_loss"] == "mean_square" and theorem.theorem_holds(theorem.summarize(rec_c))
    cfg = Config(hidden_widths=(6,), aux_logits=2, n_classes=3, input_dim=5)
    a = theorem.run_theorem_check(cfg, **kw)
    b = theorem.run_theorem_check(model=mlp((6,), n_classes=3, aux_logits=2, input_dim=5), **kw)
    assert a["losses"] == b["losses"] and a["config"] == b["config"]
    assert a["config"]["model"]["activation"] == "relu"


def test_committed_record_report_from_the_record():
    """summarize / settings_caption work from a record alone: the committed figure's verdict and caption."""
    rec = json.loads((ROOT / "figures" / "theorem_single_step.json").read_text())
    summary = theorem.summarize(rec)
    assert summary == rec["summary"] and theorem.theorem_holds(summary)
    assert theorem.settings_caption(rec) == rec["caption"]
    assert rec["format"] == theorem.FORMAT and rec["format_version"] == theorem.FORMAT_VERSION


def _theorem_record(A=2.0, ratio=2.0, dlt=-1e-3, change=1e-6, norm_T=1.0, ratio_large=None, change_large=None,
                    norm_S=(1.0, 1.0)):
    """A hand-made theorem record: one loss, one seed, ε grid (1e-6, 1e-3); at the smallest ε the shared
    start's ΔθS·ΔθT/ε is ``ratio``, its L_T change ``dlt``, and the control's relative change ``change``;
    at ε = 1e-3, ΔθS·ΔθT/ε is ``ratio_large`` (default 0.9·ratio: a first-order term) and the control's
    change ``change_large`` (default 1e3·change: linear in ε)."""
    eps = [1e-3, 1e-6]  # the smallest is not first: summarize must find it
    ratio_large = 0.9 * ratio if ratio_large is None else ratio_large
    change_large = 1e3 * change if change_large is None else change_large
    shared = {"dot": [[ratio_large * 1e-3, ratio * 1e-6]], "cos": [[0.1, 0.1]], "delta_LT": [[dlt * 1e3, dlt]],
              "norm_S": [list(norm_S)], "change": [[0.0, 0.0]], "dot0": [0.0], "norm_S0": [1.0]}
    different = {"dot": [[0.5, 0.5]], "cos": [[0.01, 0.01]], "delta_LT": [[0.1, 0.1]], "norm_S": [[1.0, 1.0]],
                 "change": [[change_large, change]], "dot0": [0.5], "norm_S0": [1.0]}
    return {"config": {"seeds": [7]}, "eps": eps, "norm_T": [norm_T], "LT0": {"shared": [2.3], "different": [2.3]},
            "losses": {"ce_aux": {"A": [A], "shared": shared, "different": different}}}


def test_vanishing_like_eps_is_judged_near_the_smallest_eps():
    # A remainder linear up to 1e-5 and sublinear beyond (saturating) vanishes like ε: judged at ε₁ = 10·ε₀, not
    # against 100·ε₀, where the saturation would fail it; rounding (the floor) is allowed.
    eps = np.array([1e-4, 1e-6, 1e-5])  # in any order
    zero = np.zeros(3)
    assert theorem._vanishes_like_eps(np.array([2e-5, 1e-6, 1e-5]), eps, zero)
    assert not theorem._vanishes_like_eps(np.array([2e-5, 1e-6, 2e-6]), eps, zero)  # shrinks 2× over 10×: not ∝ ε
    assert theorem._vanishes_like_eps(np.array([2e-5, 1e-6, 2e-6]), eps, np.full(3, 1e-6))  # ... unless rounding
    # a grid without an ε between 5 and 10^3.5 times the smallest cannot tell (one ε; 2·ε₀; ε₀ and 1e6·ε₀)
    for grid in ([1e-6], [1e-6, 2e-6], [1e-6, 1.0]):
        with pytest.raises(ValueError, match="has no ε between 5 and 3162 times its smallest"):
            theorem._vanishes_like_eps(np.zeros(len(grid)), np.array(grid), np.zeros(len(grid)))


@pytest.mark.parametrize("changes, failed", [
    ({}, []),                                                   # every prediction holds
    ({"ratio": 2.01}, ["gap"]),                                 # ΔθS·ΔθT/ε is not A (rel. gap 5e-3 > 1e-3)
    ({"ratio": -2.0}, ["gap", "sign"]),                         # against the teacher (so off A too)
    ({"dlt": 1e-4}, ["LT_decreases"]),                          # L_T goes up at the smallest ε
    ({"change": 1e-2}, ["control_first_order"]),                # the control's step depends on ε at first order
    ({"A": 0.0, "ratio": 0.0, "dlt": 0.0}, []),                 # A = 0: the other branch holds
    ({"A": 0.0, "ratio": 0.1, "dlt": 0.0}, ["gap"]),            # A = 0 but the dot product moves at first order
    ({"A": 0.0, "ratio": 0.0, "dlt": 1e-6}, ["LT_decreases"]),  # A = 0 but L_T moves beyond rounding
    # A = 0 and ΔθS·ΔθT/ε small (5e-4 of ‖ΔθT‖², under gap_tol) but not vanishing with ε: a first-order term that
    # A missed (the committed ce_aux signal is of this size) ...
    ({"A": 0.0, "ratio": 5e-4, "dlt": 0.0}, ["gap"]),
    ({"A": 0.0, "ratio": 5e-4, "ratio_large": 0.5, "dlt": 0.0}, []),  # ... unlike a second-order one (∝ ε)
    # ... unless it is negative: Lemma 1 (ΔθS·ΔθT ≥ 0 at small ε) holds in this branch too; rounding is allowed
    ({"A": 0.0, "ratio": -5e-4, "ratio_large": -0.5, "dlt": 0.0}, ["sign"]),
    ({"A": 0.0, "ratio": -5e-7, "ratio_large": -5e-4, "dlt": 0.0}, []),  # |ΔθS·ΔθT/ε| ≤ 1e-12·‖ΔθS‖‖ΔθT‖/ε
    ({"change": 1e-4, "change_large": 3.2e-3}, ["control_first_order"]),  # drift ∝ √ε: under the tolerance, not O(ε)
    # A off by 1e-4 (under gap_tol): ΔθS·ΔθT/ε − A does not vanish with ε ...
    ({"ratio": 2.0002, "ratio_large": 2.0002}, ["gap"]),
    ({"ratio": 2.0002, "ratio_large": 2.2}, []),  # ... unlike Lemma 1's O(ε) remainder
    # A remainder that is exactly 0 (a one-hidden-layer ReLU net's aux logits: linear in ε until a unit flips),
    # so rounding alone, growing like 1/ε from the cancellation in f(θT0 + εΔθT) − f(θT0): the numbers of
    # `theorem --hidden 32 --seeds 1 --n-noise 64 --n-eps 8 --teacher-batch 64`'s mse_aux, ‖ΔθS‖ ∝ ε ...
    ({"A": 1.4188, "ratio": 1.4188 * (1 + 1.8e-11), "ratio_large": 1.4188 * (1 + 1.8e-14), "norm_T": 6.42,
      "norm_S": (2.81e-3, 2.81e-6)}, []),
    # ... while an A off by 1e-6 of itself is still seen
    ({"A": 1.4188, "ratio": 1.4188 * (1 + 1e-6), "ratio_large": 1.4188 * (1 + 1e-6), "norm_T": 6.42,
      "norm_S": (2.81e-3, 2.81e-6)}, ["gap"]),
])
def test_the_verdict_fails_on_each_broken_prediction_alone(changes, failed):
    s = theorem.summarize(_theorem_record(**changes))
    row = s["losses"]["ce_aux"][0]
    assert row["seed"] == 7 and s["eps_min"] == 1e-6
    assert [k for k, v in row["checks"].items() if not v] == failed
    assert row["ok"] == theorem.theorem_holds(s) == (not failed)
    assert not theorem.theorem_holds(theorem.summarize({**_theorem_record(), "losses": {}}))  # nothing checked


def test_the_verdict_line_says_which_branch_held_and_what_a_float32_or_still_teacher_means():
    """PASS names the branch each row took (A > 0: alignment and L_T down; A = 0: the other branch), says when
    the teacher did not move (ΔθT = 0: nothing was checked), and a float32 FAIL says that rounding can fail it."""
    def line(record):
        return theorem.format_tables(theorem.summarize(record)).splitlines()[-1]

    assert line(_theorem_record()) == ("PASS: ΔθS·ΔθT/ε → A > 0 and L_T decreases at small ε with a shared "
                                       "initialisation; the teacher's step drops out at first order with a different one.")
    zero = line(_theorem_record(A=0.0, ratio=0.0, dlt=0.0))
    assert zero.startswith("PASS: where A = 0 (ce_aux seed 7: no first-order alignment, the theorem's other branch, "
                           "ΔθS·ΔθT = 0 for all ε, checked to first order) ΔθS·ΔθT = O(ε²), not below zero") and "L_T decreases" not in zero
    assert "But ΔθT = 0 in ce_aux seed 7: the teacher did not move" in line(
        _theorem_record(A=0.0, ratio=0.0, dlt=0.0, norm_T=0.0))
    f32 = {**_theorem_record(ratio=2.01), "config": {"seeds": [7], "precision": "float32"}}
    assert theorem.summarize(f32)["precision"] == "float32" and "precision" not in theorem.summarize(_theorem_record())
    assert line(f32).endswith("(computed in float32: the tolerances are float64's, so rounding alone can fail them; "
                              "run in float64 to check the theorem)")


def test_a_float32_check_asked_for_is_not_warned_about():
    import warnings

    net = mlp((8,), n_classes=3, aux_logits=2, input_dim=6)
    x = np.random.default_rng(0).uniform(0, 1, (32, 6)).astype(np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", theory.PrecisionWarning)
        rec = theorem.run_theorem_check(model=net, images=x, labels=np.arange(32) % 3, seeds=[0], n_noise=16,
                                        teacher_batch=16, eps=[1e-3, 1e-2], precision="float32")
    assert rec["config"]["precision"] == "float32"
    assert rec["environment"]["x64_in_check"] is False  # as computed: not in the 64-bit scope


@pytest.mark.parametrize("bad, message", [
    (["--eps-min", "1e-3", "--eps-max", "1e-3"], "--eps-max = 0.001 is invalid"),
    (["--eps-max", "inf"], "--eps-max = inf is invalid"),
    (["--n-eps", "1"], "--n-eps = 1 is invalid"),
    (["--seeds", "0"], "--seeds = 0"),
    (["--seed", "-1"], "--seed = -1"),
    (["--seed", str(2**32), "--seeds", "1"], "2**32"),
    (["--n-noise", "0"], "--n-noise = 0 is invalid"),
    (["--teacher-loss", "ce", "--teacher-batch", "0"], "--teacher-batch = 0 is invalid"),
    (["--teacher-batch", "17"], "--teacher-batch = 17 has no effect with --teacher-loss l2"),
    (["--alpha", "0"], "--alpha = 0.0 is invalid"),
    (["--alpha", "inf"], "--alpha = inf is invalid"),
    (["--change-tol", "0"], "--change-tol = 0.0 is invalid: the tolerance must be finite and > 0"),
    (["--gap-tol", "-1"], "--gap-tol = -1.0 is invalid"),
    (["--gap-tol", "nan"], "--gap-tol = nan is invalid"),
    (["--change-tol", "inf"], "--change-tol = inf is invalid"),  # every drift would be within it
    # an ε grid the verdict cannot judge on: ε_min where float64 rounding fails the check (1e-13: a relative gap of
    # 1e-2; 1e-200: nothing moves; 1e-320: -Infinity in the JSON), no ε within 10^3.5·ε_min (2 points in [1e-6, 1]:
    # the second is past the range where the teacher's step is small), none at least 5·ε_min
    (["--eps-min", "1e-13"], "--eps-min = 1e-13 is invalid: below 1e-10"),
    (["--eps-min", "1e-200"], "--eps-min = 1e-200 is invalid: below 1e-10"),
    (["--eps-min", "1e-320"], "--eps-min = 1e-320 is invalid: below 1e-10"),
    (["--n-eps", "2"], ("--n-eps = 2 is too few for ε in [1e-06, 1]:", "give --n-eps >= 3")),
    (["--eps-min", "1e-10", "--n-eps", "3"], ("--n-eps = 3 is too few for ε in [1e-10, 1]:", "give --n-eps >= 4")),
    (["--eps-min", "1e-6", "--eps-max", "4e-6"], ("--eps-max = 4e-06 is invalid:", "--eps-max >= 5·--eps-min = 5e-06")),
    # flags with no effect, or nothing to write
    (["--json", ""], "--json = '' is invalid: give the path of the JSON file to write, or leave --json out"),
    (["--data-dir", "/nonexistent"], "--data-dir = /nonexistent has no effect with --teacher-loss l2"),
    (["--losses", "ce_aux", "ce_aux"], "repeats a setting"),
])
def test_cli_refuses_arguments_outside_the_checks_domain_before_any_compute(bad, message, capsys, monkeypatch):
    monkeypatch.setattr(theorem, "run_theorem_check", lambda *a, **k: pytest.fail("computed"))
    assert cli_main(["theorem", "--teacher-loss", "l2", *bad]) == 2
    err = capsys.readouterr().err
    assert err.startswith("subliminal-mlp: error: "), err
    for part in (message,) if isinstance(message, str) else message:  # a message, or parts of it in order
        assert part in err, err
        err = err[err.index(part) + len(part):]


def test_cli_hands_its_arguments_to_the_check(monkeypatch, capsys):
    # run_theorem_check and summarize replaced by recorders: what the command computes and how it judges it.
    class Stop(Exception):
        pass

    got = {}
    monkeypatch.setattr(theorem, "run_theorem_check", lambda **kw: got.update(check=kw) or "the record")

    def summarize(record, **kw):
        got["summary"] = (record, kw)
        raise Stop

    monkeypatch.setattr(theorem, "summarize", summarize)
    with pytest.raises(Stop):
        cli_main(["theorem", "--teacher-loss", "l2", "--hidden", "7", "5", "-m", "4", "--activation", "tanh",
                  "--losses", "mse_all", "ce_aux", "--eps-min", "1e-4", "--eps-max", "0.5", "--n-eps", "5",
                  "--seeds", "2", "--seed", str(2**32 - 2), "--n-noise", "33",
                  "--alpha", "0.25", "--gap-tol", "0.01", "--change-tol", "0.02"])
    kw = got["check"]
    assert kw["model"] == mlp((7, 5), aux_logits=4, activation="tanh")
    assert kw["seeds"] == [2**32 - 2, 2**32 - 1]  # the last seed 2**32 - 1 is still valid
    np.testing.assert_array_equal(kw["eps"], np.geomspace(1e-4, 0.5, 5))
    assert (kw["losses"], kw["n_noise"], kw["alpha"], kw["teacher_loss"]) == (["mse_all", "ce_aux"], 33, 0.25, "l2")
    assert kw["images"] is None and kw["labels"] is None and kw["data_info"] == {}  # l2: no data
    assert got["summary"] == ("the record", {"gap_tol": 0.01, "change_tol": 0.02})
    with pytest.raises(Stop):
        cli_main(["theorem", "--teacher-loss", "l2"])
    kw = got["check"]
    assert kw["seeds"] == [0, 1, 2] and kw["model"] == mlp((256, 256), aux_logits=3) and len(kw["eps"]) == 64
    assert (kw["n_noise"], kw["teacher_batch"], kw["alpha"], list(kw["losses"])) == (
        1024, None, 1.0, list(theory.STANDARD_LOSSES))  # l2 draws no batch: none given (the check refuses one)
    assert got["summary"][1] == {"gap_tol": 1e-3, "change_tol": 1e-3}


# ----------------------------------------------------------------------------- the ε grid, precision, counts


def _record_on_grid(eps, drift):
    """A hand-made theorem record (one loss, seed 7) on the grid ``eps``: the shared start as Lemma 1 has it
    (ΔθS·ΔθT = Aε(1 + ε), A = 2; L_T falls by Aε) and the control's drift ``drift(ε)``."""
    eps = np.asarray(eps, float)
    shared = {"dot": [(2.0 * eps * (1 + eps)).tolist()], "cos": [[0.1] * len(eps)], "delta_LT": [(-2.0 * eps).tolist()],
              "norm_S": [eps.tolist()], "change": [[0.0] * len(eps)], "dot0": [0.0], "norm_S0": [1.0]}
    different = {"dot": [[0.5] * len(eps)], "cos": [[0.01] * len(eps)], "delta_LT": [[0.1] * len(eps)],
                 "norm_S": [[1.0] * len(eps)], "change": [np.asarray(drift(eps), float).tolist()], "dot0": [0.5],
                 "norm_S0": [1.0]}
    return {"config": {"seeds": [7]}, "eps": eps.tolist(), "norm_T": [1.0], "LT0": {"shared": [2.3], "different": [2.3]},
            "losses": {"ce_aux": {"A": [2.0], "shared": shared, "different": different}}}


def test_the_verdict_does_not_hang_on_a_grid_that_cannot_judge(monkeypatch):
    """"Vanishes like ε" compares ε₀ with an ε₁ between 5·ε₀ and 10^3.5·ε₀: a grid without one is refused (by
    summarize, by run_theorem_check and eps_grid before any compute), and one with ε₁ too close is not used."""
    # a control drift linear in ε until the teacher's step is no longer small, then saturating below 1 (the
    # `theorem --hidden 16 --n-eps 2` control: 1.9e-6 at ε = 1e-6, under 0.95 at ε = 1)
    saturating = lambda e: 1.9 * e / (1 + 2 * e)  # noqa: E731
    for eps in ([1e-6, 1e-3, 1.0], theory.eps_grid(1e-6, 1.0, 64), [1e-3, 1e-6]):
        s = theorem.summarize(_record_on_grid(eps, saturating))
        assert theorem.theorem_holds(s), theorem.format_tables(s)
    # with ε = 1 as the only other point, the saturation read as a first-order dependence: now refused
    for eps in ([1e-6, 1.0], [1e-6], [1e-6, 1e-6], [1e-6, 3e-6]):
        with pytest.raises(ValueError, match=r"the record's eps = .* has no ε between 5 and 3162 times its smallest"):
            theorem.summarize(_record_on_grid(eps, saturating))
    # a drift that does not vanish (5e-4 at every ε: under the tolerance) fails, judged at 1e-3 and not at the
    # 2e-6 nearer 10·ε₀ (2·ε₀, where even a constant passes the factor-2 allowance)
    s = theorem.summarize(_record_on_grid([1e-6, 2e-6, 1e-3], lambda e: np.full_like(e, 5e-4)))
    assert [k for k, v in s["losses"]["ce_aux"][0]["checks"].items() if not v] == ["control_first_order"]
    # ε_min where float64 rounding fails the check (and 1e-320 wrote -Infinity into the JSON)
    for eps in ([1e-13, 1e-12], [1e-320, 1e-3]):
        with pytest.raises(ValueError, match="below 1e-10: below it the check.s allowance for float64 cancellation"):
            theorem.summarize(_record_on_grid(eps, saturating))
    # run_theorem_check refuses the same grids before any compute
    monkeypatch.setattr(theorem, "sweep", lambda *a, **k: pytest.fail("computed"))
    net = mlp((4,), n_classes=3, aux_logits=2, input_dim=3)
    for eps, message in [([1e-6], "no ε between 5 and 3162"), ([1e-6, 1e-6], "no ε between 5 and 3162"),
                         ([1e-6, 1.0], "no ε between 5 and 3162"), ([1e-13, 1e-12, 1e-11], "below 1e-10"),
                         ([1e-320, 1e-3], "below 1e-10"), ([[1e-6, 1e-5]], "1-D grid"), (["a", "b"], "not a grid"),
                         ([1e-6, float("nan")], "eps must be finite and > 0"), ([], "eps is empty")]:
        with pytest.raises(ValueError, match=message):
            theorem.run_theorem_check(model=net, teacher_loss="l2", seeds=[0], n_noise=2, eps=eps)
    with pytest.raises(ValueError, match="eps_min = 1e-13 is below 1e-10"):
        theory.eps_grid(1e-13, 1.0, 8)
    np.testing.assert_allclose(theory.eps_grid(1e-10, 1e-1, 4), [1e-10, 1e-7, 1e-4, 1e-1], rtol=1e-12)


def test_the_summary_records_each_vanishes_like_eps_comparison():
    """Each row says what its "vanishes like ε" comparisons compared: the value at ε₀ (rel_gap, ctrl_change), at the
    summary's ε₁ and the bound, 2·(ε₀/ε₁)·|v(ε₁)| plus the rounding floors, worked here by hand."""
    eps = [1e-6, 2e-6, 1e-3]  # ε₁ = 1e-3: 2e-6 is too close to ε₀ (COMPARISON_RANGE)
    s = theorem.summarize(_record_on_grid(eps, lambda e: np.full_like(e, 5e-4)))  # a drift that does not vanish
    row = s["losses"]["ce_aux"][0]
    assert s["eps_compare"] == 1e-3 and s["eps_min"] == 1e-6
    r, A = 1e-6 / 1e-3, 2.0
    # the shared start: ΔθS·ΔθT/ε − A = Aε (A = 2, _record_on_grid), relative to A; the floor is the dot product's
    # rounding (1e-12·‖ΔθS‖‖ΔθT‖/ε with ‖ΔθS‖ = ε, ‖ΔθT‖ = 1), A's own (1e-12·A) and the cancellation's
    floor = lambda e: 1e-12 + 1e-12 * A + theorem.CANCELLATION * A / e  # noqa: E731
    gap = row["vanishes_like_eps"]["gap"]
    assert gap["at_eps_min"] == row["rel_gap"] == pytest.approx(1e-6, rel=1e-9)
    assert gap["at_eps_compare"] == pytest.approx(1e-3, rel=1e-9)
    assert gap["bound"] == pytest.approx((2 * r * A * 1e-3 + floor(1e-6) + floor(1e-3) * r) / A, rel=1e-9)
    assert gap["at_eps_min"] <= gap["bound"] and row["checks"]["gap"]
    ctrl = row["vanishes_like_eps"]["control"]  # the drift: 5e-4 at every ε, floor 1e-12
    assert ctrl["at_eps_min"] == row["ctrl_change"] == 5e-4 and ctrl["at_eps_compare"] == 5e-4
    assert ctrl["bound"] == pytest.approx(2 * r * 5e-4 + 1e-12 + 1e-12 * r, rel=1e-12)
    assert ctrl["at_eps_min"] > ctrl["bound"] and not row["checks"]["control_first_order"]
    json.dumps(s, allow_nan=False)  # plain floats, as the figure's JSON holds them


def test_the_check_holds_at_the_smallest_eps_it_accepts():
    """At ε_min = 1e-10, the floor, float64 rounding leaves the gap far under its tolerance: the floor is not
    stricter than it needs to be."""
    tanh = mlp((6,), n_classes=3, aux_logits=2, input_dim=5, activation="tanh")
    rec = theorem.run_theorem_check(model=tanh, teacher_loss="l2", eps=theory.eps_grid(1e-10, 1e-2, 5), seeds=[0],
                                    n_noise=8, losses=["ce_aux", "mse_all"])
    s = theorem.summarize(rec)
    assert theorem.theorem_holds(s), theorem.format_tables(s)
    assert s["eps_min"] == 1e-10 and max(r["rel_gap"] for rs in s["losses"].values() for r in rs) < 1e-4


def test_similarities_are_scale_free_in_float32():
    """linear_cka and feature_cosine of features scaled by 1e-8 ... 1e20 (float32) are those of the unscaled
    features, computed independently in float64 (the textbook formulas); constant features still give 0 and
    non-finite ones NaN."""
    from subliminal_mlp.theory.similarity import feature_cosine, linear_cka

    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(0), 3)
    x = jax.random.normal(k1, (1000, 256), jnp.float32)
    y = jnp.tanh(x @ jax.random.normal(k2, (256, 256)) / 16) + x + 0.5 * jax.random.normal(k3, (1000, 256))
    xn, yn = np.asarray(x, np.float64), np.asarray(y, np.float64)
    xc, yc = xn - xn.mean(axis=0), yn - yn.mean(axis=0)
    cka = np.sum((yc.T @ xc) ** 2) / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))
    cos = np.mean(np.sum(xn * yn, axis=1) / (np.linalg.norm(xn, axis=1) * np.linalg.norm(yn, axis=1)))
    assert 0.1 < cka < 0.99 and 0.1 < cos < 0.99  # neither trivial
    for sx, sy in [(1.0, 1.0), (1e-8, 1e-8), (1e3, 1e3), (1e20, 1e20), (1e20, 1e-8)]:
        assert float(linear_cka(sx * x, sy * y)) == pytest.approx(cka, rel=1e-4), (sx, sy)
        assert float(feature_cosine(sx * x, sy * y)) == pytest.approx(cos, rel=1e-4), (sx, sy)
    assert float(linear_cka(1e20 * x, jnp.full((1000, 3), 1e20))) == 0.0  # constant features
    assert float(feature_cosine(1e20 * x.at[5].set(0.0), y)) == pytest.approx(cos - float(
        np.sum(xn[5] * yn[5]) / (np.linalg.norm(xn[5]) * np.linalg.norm(yn[5]))) / 1000, rel=1e-4)  # a zero row: 0
    for bad in (jnp.inf, jnp.nan):
        assert np.isnan(float(linear_cka(1e3 * x.at[2, 7].set(bad), y)))
        assert np.isnan(float(feature_cosine(1e3 * x.at[2, 7].set(bad), y)))


def test_precision_warnings_say_what_the_kernel_computes():
    """teacher_update warns as the other kernels do (ΔθT has θT0's precision); a float32 x beside float64
    parameters is promoted (the kernel computes in float64), so nothing is said."""
    import warnings

    net = mlp((5,), n_classes=3, aux_logits=2, input_dim=6)
    q = net.init(jax.random.PRNGKey(0))  # float32
    x32 = jax.random.uniform(jax.random.PRNGKey(1), (4, 6), jnp.float32, -1.0, 1.0)
    labels = jnp.arange(4) % 3
    L_T = theory.class_cross_entropy_loss(net)
    with pytest.warns(theory.PrecisionWarning, match="runs outside theory.float64.*computes in float32"):
        theory.teacher_update(theory.l2_teacher_loss, q, model=net)
    with theory.float64():
        with pytest.warns(theory.PrecisionWarning, match="theta_T0 is float32 inside theory.float64"):
            d = theory.teacher_update(L_T, q, x32, labels, model=net)
        assert {a.dtype for a in jax.tree.leaves(d)} == {jnp.dtype(jnp.float32)}
        p = theory.to_float64(q)
        with warnings.catch_warnings():
            warnings.simplefilter("error", theory.PrecisionWarning)
            d_t = theory.teacher_update(L_T, p, x32, labels, model=net)
            res = theory.sweep([theory.ce_aux(net)], L_T, p, [p], x32, [1e-6, 1e-5], loss_T_args=(x32, labels),
                               model=net)
            A = theory.first_order_coefficient(theory.ce_aux(net), p, d_t, x32, model=net)
        assert {a.dtype for a in jax.tree.leaves(d_t)} == {jnp.dtype(jnp.float64)}
        assert res.dot.dtype == jnp.float64 and A.dtype == jnp.float64
        x64 = theory.to_float64(x32)  # the same values: the same float64 numbers
        want = theory.sweep([theory.ce_aux(net)], L_T, p, [p], x64, [1e-6, 1e-5], loss_T_args=(x64, labels), model=net)
        np.testing.assert_allclose(np.asarray(res.dot), np.asarray(want.dot), rtol=1e-13)


def test_counts_tolerances_and_indices_that_would_be_truncated_are_refused(monkeypatch):
    net = mlp((4,), n_classes=3, aux_logits=2, input_dim=3)
    monkeypatch.setattr(theorem, "sweep", lambda *a, **k: pytest.fail("computed"))
    images, labels = np.zeros((8, 3), np.float32), np.arange(8) % 3
    for kw, message in [({"n_noise": 2.5}, "n_noise = 2.5 is invalid: give an integer >= 1"),
                        ({"n_noise": 0}, "n_noise = 0 is invalid"), ({"n_noise": True}, "n_noise = True is invalid"),
                        ({"eps_batch": 1.7}, "eps_batch = 1.7 is invalid: give an integer >= 1"),
                        ({"eps_batch": 0}, "eps_batch = 0 is invalid"),
                        ({"teacher_loss": "ce", "teacher_batch": 2.5, "images": images, "labels": labels},
                         "teacher_batch = 2.5 is invalid")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            theorem.run_theorem_check(model=net, **{"teacher_loss": "l2", "seeds": [0], "eps": [1e-6, 1e-5], **kw})
    with theory.float64():
        p = theory.to_float64(net.init(jax.random.PRNGKey(0)))
        with pytest.raises(ValueError, match="eps_batch = 1.7 is invalid"):  # was truncated to 1
            theory.sweep([theory.ce_aux(net)], theory.l2_teacher_loss, p, [p], jnp.ones((2, 3)), [1e-3, 1e-2],
                         model=net, eps_batch=1.7)
    record = _theorem_record()
    for kw in ({"gap_tol": -1.0}, {"gap_tol": float("nan")}, {"gap_tol": float("inf")}, {"change_tol": 0},
               {"change_tol": "1e-3"}, {"gap_tol": True}):
        name, value = next(iter(kw.items()))
        with pytest.raises(ValueError, match=re.escape(f"{name} = {value!r} is invalid: the tolerance must be")):
            theorem.summarize(record, **kw)
    assert theorem.summarize(record, gap_tol=1e-2, change_tol=1)["ok"]
    with pytest.raises(ValueError, match=re.escape("subset indices [3.7, 4.2] are not all integers")):
        theory.StudentLoss.ce([3.7, 4.2], n_outputs=5)  # was logits 3 and 4
    with pytest.raises(ValueError, match="give the logits' indices as integers"):
        theory.StudentLoss.ce([True, False, True], n_outputs=3)  # a mask given as indices: logits 1, 0, 1
    with pytest.raises(ValueError, match="n_outputs = 2.5 is invalid"):
        theory.StudentLoss.ce([1], n_outputs=2.5)
    assert theory.StudentLoss.ce(np.array([3.0, 4.0]), n_outputs=5).weights == (0.0, 0.0, 0.0, 1.0, 1.0)
    for n in (2.5, "8", None):
        with pytest.raises(ValueError, match=re.escape(f"n (the number of ε values) = {n!r} is invalid")):
            theory.eps_grid(1e-6, 1.0, n)
    with pytest.raises(ValueError, match="eps_min = '1e-6' is not a number"):
        theory.eps_grid("1e-6", 1.0, 8)
