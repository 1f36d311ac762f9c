"""The MLP: shapes, the paper's initialisation statistics, and the pytree API."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from subliminal_mlp.core.config import Config
from subliminal_mlp.core.model import accuracy, apply, aux_logits, class_logits, features, init_params, logit_mask


def test_shapes_and_layer_names():
    cfg = Config(hidden_widths=(32, 16, 8), aux_logits=4)
    p = init_params(jax.random.PRNGKey(0), cfg)
    assert set(p) == {"hidden_0", "hidden_1", "hidden_2", "head"}
    assert p["hidden_0"]["kernel"].shape == (784, 32)
    assert p["head"]["kernel"].shape == (8, 14)
    x = jnp.ones((5, 784))
    z = apply(p, x)
    assert z.shape == (5, 14)
    assert class_logits(z, 10).shape == (5, 10) and aux_logits(z, 10).shape == (5, 4)
    assert features(p, x).shape == (5, 8)


def test_initialisation_is_plain_normal_with_variance_one_over_fan_in():
    cfg = Config()
    p = init_params(jax.random.PRNGKey(1), cfg)
    for name, fan_in in [("hidden_0", 784), ("hidden_1", 256), ("head", 256)]:
        w = np.asarray(p[name]["kernel"], np.float64) * np.sqrt(fan_in)
        n = w.size
        assert abs(w.mean()) < 5 / np.sqrt(n)
        assert abs(w.var() - 1.0) < 6 * np.sqrt(2.0 / n)
        assert np.all(np.asarray(p[name]["bias"]) == 0)
    # Not truncated: a N(0,1) sample of 200k has |w| > 3 about 540 times; a 2σ-truncated one never.
    w0 = np.asarray(p["hidden_0"]["kernel"]) * np.sqrt(784)
    assert np.sum(np.abs(w0) > 3) > 300
    # Kurtosis of a normal is 3 (a truncated normal's is about 2.2).
    assert abs(np.mean(w0**4) / np.mean(w0**2) ** 2 - 3.0) < 0.1


def test_forward_matches_numpy():
    cfg = Config(hidden_widths=(7, 5), aux_logits=2)
    p = init_params(jax.random.PRNGKey(2), cfg)
    p = jax.tree.map(lambda a: a + 0.01, p)  # non-zero biases
    x = np.random.default_rng(0).uniform(-1, 1, (3, 784)).astype(np.float32)
    h = x
    for name in ["hidden_0", "hidden_1"]:
        h = np.maximum(h @ np.asarray(p[name]["kernel"]) + np.asarray(p[name]["bias"]), 0)
    z = h @ np.asarray(p["head"]["kernel"]) + np.asarray(p["head"]["bias"])
    np.testing.assert_allclose(np.asarray(apply(p, x)), z, rtol=1e-5, atol=1e-5)


NUMPY_ACTIVATIONS = {
    "relu": lambda x: np.maximum(x, 0), "tanh": np.tanh, "sigmoid": lambda x: 1 / (1 + np.exp(-x)),
    "identity": lambda x: x,  # Flax's gelu is the tanh approximation by default
    "gelu": lambda x: 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) * (x + 0.044715 * x**3))),
}


@pytest.mark.parametrize("name", sorted(NUMPY_ACTIVATIONS))
def test_every_named_activation_is_its_formula_in_both_mlps(name):
    from subliminal_mlp.core.models import ACTIVATIONS, mlp, split_head_mlp

    assert set(ACTIVATIONS) == set(NUMPY_ACTIVATIONS)
    act = NUMPY_ACTIVATIONS[name]
    x = np.random.default_rng(0).uniform(-2, 2, (4, 6)).astype(np.float32)
    plain = mlp((5,), n_classes=3, aux_logits=2, input_dim=6, activation=name)
    p = jax.tree.map(lambda a: a + 0.1, plain.init(jax.random.PRNGKey(0)))  # non-zero biases
    h = act(x @ np.asarray(p["hidden_0"]["kernel"]) + np.asarray(p["hidden_0"]["bias"]))
    want = h @ np.asarray(p["head"]["kernel"]) + np.asarray(p["head"]["bias"])
    np.testing.assert_allclose(plain.apply(p, x), want, rtol=1e-5, atol=1e-5)
    # The split-head MLP: one trunk, then the class head and the aux head side by side (classes first).
    split = split_head_mlp((5,), n_classes=3, aux_logits=2, input_dim=6, activation=name)
    q = jax.tree.map(lambda a: a + 0.1, split.init(jax.random.PRNGKey(1)))
    h = act(x @ np.asarray(q["hidden_0"]["kernel"]) + np.asarray(q["hidden_0"]["bias"]))
    heads = [h @ np.asarray(q[k]["kernel"]) + np.asarray(q[k]["bias"]) for k in ("class_head", "aux_head")]
    np.testing.assert_allclose(split.apply(q, x), np.concatenate(heads, axis=1), rtol=1e-5, atol=1e-5)


def test_a_model_must_be_per_example_and_a_classifier():
    from subliminal_mlp.core.models import Model, ModelError, check_model

    def init(key):
        return {"w": jax.random.normal(key, (784, 13))}

    check_model(Model(init, lambda p, x: x @ p["w"]))  # (batch, 13): fine
    # One row for the whole batch (a mean over examples) is not a logit per example.
    with pytest.raises(ModelError, match=r"shape \(1, 13\) for a batch of 2"):
        check_model(Model(init, lambda p, x: (x @ p["w"]).mean(0, keepdims=True)))
    with pytest.raises(ModelError, match=r"shape \(13,\) for a batch of 2"):
        check_model(Model(init, lambda p, x: (x @ p["w"]).mean(0)))
    for bad in ({"n_classes": 1}, {"aux_logits": -1}, {"n_classes": 2.0}):
        with pytest.raises(ModelError, match=f"{next(iter(bad))} = {next(iter(bad.values()))!r} is invalid"):
            Model(init, lambda p, x: x @ p["w"], **bad)
    # A Flax module with state besides its parameters (BatchNorm's batch_stats) is no pure function of them.
    import flax.linen as nn

    from subliminal_mlp.core.models import from_flax

    class Normed(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(13)(nn.BatchNorm(use_running_average=True)(nn.Dense(16)(x)))

    with pytest.raises(ModelError, match=r"^Flax module Normed has variables besides its parameters \(collections "
                                         r"\['batch_stats'\]\).*nn.LayerNorm"):
        check_model(from_flax(Normed()))
    # Image-shaped inputs a Dense-only module does not flatten: the hint is the inputs, not the last layer.
    with pytest.raises(ModelError, match=r"shape \(2, 28, 13\) for a batch of 2.*inputs have shape \(28, 28\): "
                                         r"flatten them in the model .* or give input_shape=\(784,\)"):
        check_model(from_flax(nn.Dense(13), input_shape=(28, 28)))
    with pytest.raises(ModelError, match="fix the model's last layer"):  # flat inputs, a wrong head: the head
        check_model(from_flax(nn.Dense(12)))
    with pytest.raises(ModelError, match="returns logits of dtype int32: they must be floating-point"):
        check_model(Model(init, lambda p, x: jnp.round(x @ p["w"]).astype(jnp.int32)))


def test_the_papers_mlp_functions_refuse_the_parameters_of_another_architecture():
    """apply, features and accuracy read the paper's MLP off its parameters: another architecture's (a split
    head, a Flax module of the user's) is refused naming what to call instead, not a bare KeyError."""
    import subliminal_mlp as sm

    x, y = jnp.zeros((4, 784)), jnp.zeros((4,), jnp.int32)
    split = sm.split_head_mlp((16,)).init(jax.random.PRNGKey(0))
    for call in (lambda: apply(split, x), lambda: features(split, x), lambda: accuracy(split, x, y, 10),
                 lambda: apply({"hidden_0": split["hidden_0"], "head": {"w": 1}}, x), lambda: apply([1, 2], x)):
        with pytest.raises(ValueError, match="not the paper's MLP's .* model.apply\\(params, x\\), or "
                                             "accuracy\\(..., apply_fn=model.apply\\)"):
            call()
    # With its own apply, fine: the accuracy of its class logits on inputs that are not all 0 (a zero input and
    # zero biases would give every net the same zero logits), against an argmax in numpy.
    net = sm.split_head_mlp((16,))
    xr = jax.random.uniform(jax.random.PRNGKey(1), (64, 784), minval=-1.0, maxval=1.0)
    yr = jax.random.randint(jax.random.PRNGKey(2), (64,), 0, 10)
    want = np.mean(np.argmax(np.asarray(net.apply(split, xr))[:, :10], axis=1) == np.asarray(yr))
    assert float(accuracy(split, xr, yr, 10, apply_fn=net.apply)) == pytest.approx(want)
    paper = init_params(jax.random.PRNGKey(0), Config(hidden_widths=(16, 8)))
    paper = jax.tree.map(lambda a: a + 0.1, paper)  # nonzero biases too
    got = apply(paper, xr)
    np.testing.assert_array_equal(got, sm.mlp((16, 8)).apply(paper, xr))
    assert float(jnp.abs(got).max()) > 0.1 and not np.allclose(got, sm.mlp((16, 8), activation="tanh").apply(paper, xr))


def test_init_is_deterministic_and_vmappable():
    cfg = Config(hidden_widths=(16,))
    keys = jax.random.split(jax.random.PRNGKey(3), 3)
    stacked = jax.vmap(lambda k: init_params(k, cfg))(keys)
    single = init_params(keys[1], cfg)
    for a, b in zip(jax.tree.leaves(stacked), jax.tree.leaves(single)):
        np.testing.assert_array_equal(a[1], b)


def test_logit_mask_and_accuracy():
    cfg = Config(aux_logits=3)
    np.testing.assert_array_equal(logit_mask(cfg, "aux"), [0] * 10 + [1] * 3)
    np.testing.assert_array_equal(logit_mask(cfg, "all"), [1] * 13)
    with pytest.raises(ValueError, match="which"):
        logit_mask(cfg, "class")
    p = init_params(jax.random.PRNGKey(0), Config(hidden_widths=(8,)))
    x = jax.random.uniform(jax.random.PRNGKey(1), (50, 784))
    pred = np.argmax(np.asarray(apply(p, x))[:, :10], axis=1)
    labels = np.where(np.arange(50) < 20, pred, (pred + 1) % 10)
    assert float(accuracy(p, x, jnp.asarray(labels), 10)) == pytest.approx(0.4)


def test_perturbed_adds_isotropic_or_orthogonal_noise_of_size_sigma():
    from jax.flatten_util import ravel_pytree

    from subliminal_mlp.core.model import perturb as perturbed

    cfg = Config(hidden_widths=(64,))
    p = init_params(jax.random.PRNGKey(0), cfg)
    d = jax.tree.map(lambda a: jnp.ones_like(a), p)  # a direction to avoid
    key = jax.random.PRNGKey(1)
    flat = ravel_pytree(p)[0]
    assert np.array_equal(ravel_pytree(perturbed(p, key, 0.0))[0], flat)
    iso = ravel_pytree(perturbed(p, key, 0.1))[0] - flat
    assert abs(float(jnp.std(iso)) - 0.1) < 0.002
    orth = ravel_pytree(perturbed(p, key, 0.1, orthogonal_to=d))[0] - flat
    u = ravel_pytree(d)[0] / np.sqrt(flat.size)
    assert abs(float(jnp.dot(orth, u))) < 1e-3 * float(jnp.linalg.norm(orth))
    assert float(jnp.linalg.norm(orth)) == pytest.approx(float(jnp.linalg.norm(iso)), rel=1e-5)
    assert abs(float(jnp.dot(iso, u))) > 10 * abs(float(jnp.dot(orth, u)))


@pytest.mark.parametrize("n, chunk", [(2500, 1000), (3000, 1000), (999, 1000), (7, 3)])
def test_accuracy_taken_in_chunks_equals_the_whole_batch_count(n, chunk):
    cfg = Config(hidden_widths=(16,))
    p = init_params(jax.random.PRNGKey(2), cfg)
    x = jax.random.uniform(jax.random.PRNGKey(3), (n, 784), minval=-1, maxval=1)
    labels = jax.random.randint(jax.random.PRNGKey(4), (n,), 0, 10)
    expected = np.mean(np.argmax(np.asarray(apply(p, x))[:, :10], axis=1) == np.asarray(labels))
    got = accuracy(p, x, labels, 10, chunk=chunk)
    assert got.dtype == jnp.float32 and float(got) == pytest.approx(expected, abs=1e-7)
    with pytest.raises(ValueError, match="chunk = 0"):
        accuracy(p, x, labels, 10, chunk=0)
