"""Each loss against a hand computation, and its gradient against the closed form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from subliminal_mlp.core.losses import (
    class_cross_entropy,
    distillation_loss,
    kl_distillation,
    masked_log_softmax,
    mse_distillation,
)


def _softmax(v):
    e = np.exp(v - v.max())
    return e / e.sum()


def test_class_cross_entropy_by_hand():
    # Two examples, 3 classes + 2 aux logits that must not enter the loss.
    z = np.array([[1.0, 2.0, 0.5, 9.0, -9.0], [0.0, 0.0, 0.0, 5.0, 5.0]], np.float32)
    y = np.array([1, 2])
    # log-sum-exp of (1, 2, 0.5) = 2 + log(1 + e^-1 + e^-1.5)
    l0 = -(2.0 - (2.0 + np.log(1 + np.exp(-1) + np.exp(-1.5))))
    l1 = np.log(3.0)
    assert float(class_cross_entropy(jnp.asarray(z), jnp.asarray(y), 3)) == pytest.approx((l0 + l1) / 2, rel=1e-6)


def test_kl_on_aux_subset_by_hand():
    t = np.array([[5.0, -1.0, 0.3, 1.0, 2.0]])
    s = np.array([[0.0, 7.0, 1.0, -0.5, 0.25]])
    mask = np.array([0, 0, 1, 1, 1], np.float32)
    p, q = _softmax(t[0, 2:]), _softmax(s[0, 2:])
    want = np.sum(p * np.log(p / q))
    assert float(kl_distillation(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask))) == pytest.approx(want, rel=1e-5)
    full = np.ones(5, np.float32)
    P, Q = _softmax(t[0]), _softmax(s[0])
    assert float(kl_distillation(jnp.asarray(s), jnp.asarray(t), full)) == pytest.approx(np.sum(P * np.log(P / Q)), rel=1e-5)


def test_kl_sums_over_the_batch_and_gradient_is_q_minus_p_on_the_subset():
    rng = np.random.default_rng(0)
    t = rng.normal(size=(4, 6)).astype(np.float32)
    s = rng.normal(size=(4, 6)).astype(np.float32)
    mask = jnp.array([1, 0, 1, 1, 0, 0], jnp.float32)
    total = kl_distillation(jnp.asarray(s), jnp.asarray(t), mask)
    each = sum(float(kl_distillation(jnp.asarray(s[i:i + 1]), jnp.asarray(t[i:i + 1]), mask)) for i in range(4))
    assert float(total) == pytest.approx(each, rel=1e-5)
    g = np.asarray(jax.grad(kl_distillation)(jnp.asarray(s), jnp.asarray(t), mask))
    on = np.asarray(mask) > 0
    for i in range(4):
        np.testing.assert_allclose(g[i, on], _softmax(s[i, on]) - _softmax(t[i, on]), atol=1e-6)
        np.testing.assert_array_equal(g[i, ~on], 0.0)


def test_mse_by_hand_with_weights():
    s = jnp.array([[1.0, 2.0, 3.0], [0.0, -1.0, 1.0]])
    t = jnp.array([[0.0, 2.0, 5.0], [1.0, 1.0, 1.0]])
    w = jnp.array([2.0, 0.0, 0.5])
    want = 2 * 1 + 0.5 * 4 + 2 * 1 + 0 + 0
    assert float(mse_distillation(s, t, w)) == pytest.approx(want)


def test_fractional_example_weights_scale_each_examples_loss():
    # Per-example weights that are not 0/1: the loss is Σ_b w_b ℓ_b, each ℓ_b computed alone.
    rng = np.random.default_rng(1)
    s, t = (jnp.asarray(rng.normal(size=(3, 5)).astype(np.float32)) for _ in range(2))
    w = jnp.array([0.5, 2.0, 0.0])
    mask = jnp.array([0.0, 1.0, 1.0, 1.0, 0.0])
    for loss in (kl_distillation, mse_distillation):
        alone = [float(loss(s[b:b + 1], t[b:b + 1], mask)) for b in range(3)]
        assert float(loss(s, t, mask, w)) == pytest.approx(0.5 * alone[0] + 2.0 * alone[1], rel=1e-5), loss
    # By hand for MSE: errors 13 and 2 (the docstring's example), weighted 0.5 and 3.
    z, y = jnp.array([[1.0, 2.0, 3.0], [1.0, 1.0, 1.0]]), jnp.zeros((2, 3))
    assert float(mse_distillation(z, y, jnp.array([0.0, 1.0, 1.0]), jnp.array([0.5, 3.0]))) == pytest.approx(12.5)


def test_masked_log_softmax_is_finite_whatever_the_off_mask_logits():
    z = jnp.array([[1e30, 0.0, 1.0, -1e30]])
    mask = jnp.array([0.0, 1.0, 1.0, 0.0])
    out = masked_log_softmax(z, mask)
    np.testing.assert_allclose(np.asarray(out)[0, 1:3], np.log(_softmax(np.array([0.0, 1.0]))), rtol=1e-6)
    g = jax.grad(lambda z: kl_distillation(z, jnp.zeros_like(z), mask))(z)
    assert np.all(np.isfinite(np.asarray(g)))


def test_unknown_loss_name():
    assert distillation_loss("kl") is kl_distillation
    with pytest.raises(ValueError, match="loss = 'ce'"):
        distillation_loss("ce")


logits = arrays(np.float32, (3, 5), elements=st.floats(-20, 20, width=32))
masks = arrays(np.float32, (5,), elements=st.sampled_from([0.0, 1.0])).filter(lambda m: m.sum() > 0)


@settings(max_examples=40, deadline=None)
@given(s=logits, t=logits, mask=masks)
def test_kl_is_non_negative_and_zero_only_at_the_teacher(s, t, mask):
    kl = float(kl_distillation(jnp.asarray(s), jnp.asarray(t), jnp.asarray(mask)))
    assert kl >= -1e-4
    # The same sum written out in float64 on the selected logits: > 0 wherever the two softmaxes differ.
    on = mask > 0
    sel = lambda z: np.asarray(z, np.float64)[:, on]  # noqa: E731
    logp = sel(t) - np.log(np.exp(sel(t) - sel(t).max(1, keepdims=True)).sum(1, keepdims=True)) - sel(t).max(1, keepdims=True)
    logq = sel(s) - np.log(np.exp(sel(s) - sel(s).max(1, keepdims=True)).sum(1, keepdims=True)) - sel(s).max(1, keepdims=True)
    want = float(np.sum(np.exp(logp) * (logp - logq)))
    assert kl == pytest.approx(want, rel=1e-3, abs=1e-3)
    if np.abs(np.exp(logp) - np.exp(logq)).max() > 0.1:
        assert kl > 1e-4
    assert abs(float(kl_distillation(jnp.asarray(t), jnp.asarray(t), jnp.asarray(mask)))) < 1e-4
    # Shifting the student's logits by a constant changes nothing (softmax invariance).
    kl_shift = float(kl_distillation(jnp.asarray(s + 3.0), jnp.asarray(t), jnp.asarray(mask)))
    assert kl_shift == pytest.approx(kl, rel=1e-3, abs=1e-3)
