"""Training: noise, batching, loss decrease, and the stacked-student equivalences (through the engine)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import subliminal_mlp as sm
from subliminal_mlp.core.config import Config
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.losses import class_cross_entropy, kl_distillation
from subliminal_mlp.core.model import apply, init_params
from subliminal_mlp.core.students import adam, output_mask
from subliminal_mlp.core.training import epoch_batches, noise_images, scan_epochs, teacher_train_step


def test_noise_is_uniform_in_range_and_addressable_by_index():
    key = jax.random.PRNGKey(0)
    x = np.asarray(noise_images(key, jnp.arange(2000)))
    assert x.shape == (2000, 784) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() < 1.0
    # Image j is jax.random.uniform on [-1, 1) from fold_in(key, j), the whole range (not a scaled copy).
    for j in (0, 1234):
        np.testing.assert_array_equal(x[j], jax.random.uniform(jax.random.fold_in(key, j), (784,), minval=-1.0,
                                                               maxval=1.0))
    assert x.min() < -0.999 and x.max() > 0.999
    assert abs(x.mean()) < 0.005 and abs(x.var() - 1 / 3) < 0.005  # U[-1,1]: mean 0, variance 1/3
    # Image j depends only on (key, j): any order, any batch.
    np.testing.assert_array_equal(np.asarray(noise_images(key, jnp.array([1999, 3, 3]))), x[[1999, 3, 3]])
    assert not np.array_equal(np.asarray(noise_images(jax.random.PRNGKey(1), jnp.arange(3))), x[:3])


def test_epoch_batches_are_a_permutation_with_the_partial_batch_kept():
    full, rest = epoch_batches(jax.random.PRNGKey(0), 2500, 1024)
    assert full.shape == (2, 1024) and rest.shape == (452,)
    np.testing.assert_array_equal(np.sort(np.concatenate([np.ravel(full), rest])), np.arange(2500))
    full2, _ = epoch_batches(jax.random.PRNGKey(1), 2500, 1024)
    assert not np.array_equal(full, full2)


def test_scan_epochs_takes_one_step_per_batch_including_the_last_partial_one():
    seen = scan_epochs(lambda s, idx: (s + 1, s), jnp.array(0.0), jax.random.PRNGKey(0), 2500, 1024, 3)
    assert float(seen.state) == 9.0  # 3 epochs x (2 full + 1 partial)
    np.testing.assert_array_equal(seen.metrics, np.arange(9.0))  # metrics stacked in step order
    assert seen.trace is None
    total = scan_epochs(lambda s, idx: (s + idx.shape[0], ()), 0, jax.random.PRNGKey(0), 2500, 1024, 2).state
    assert int(total) == 5000
    # Epoch e's batches are epoch_batches(fold_in(key, e)): a new shuffle each epoch, in the step order.
    key, n, b = jax.random.PRNGKey(3), 2500, 1024
    seen = scan_epochs(lambda s, idx: (s, jnp.pad(idx, (0, b - idx.shape[0]), constant_values=-1)), 0, key, n, b, 3)
    for e in range(3):
        full, rest = epoch_batches(jax.random.fold_in(key, e), n, b)
        np.testing.assert_array_equal(seen.metrics[3 * e:3 * e + 2], full)
        np.testing.assert_array_equal(seen.metrics[3 * e + 2, :rest.shape[0]], rest)
    assert not np.array_equal(seen.metrics[:3], seen.metrics[3:6])


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_mnist(data_root)


def test_teacher_training_lowers_the_class_loss_and_learns(mnist):
    cfg = Config(hidden_widths=(64,), teacher_epochs=2, batch_size=256)
    x, y = jnp.asarray(mnist.train_images[:4096]), jnp.asarray(mnist.train_labels[:4096])
    p0 = init_params(jax.random.PRNGKey(0), cfg)
    opt = adam(cfg.learning_rate)
    step = teacher_train_step(apply, 10, opt, x, y)
    out = jax.jit(lambda p: scan_epochs(step, (p, opt.init(p)), jax.random.PRNGKey(1), 4096, 256, 2))(p0)
    p1 = out.state[0]
    before, after = (float(class_cross_entropy(apply(p, x), y, 10)) for p in (p0, p1))
    assert after < 0.7 * before
    assert out.metrics["loss"].shape == (2 * 16,) and float(out.metrics["loss"][0]) == pytest.approx(before, rel=0.1)
    # Aux logits are not in the teacher's loss: the head's aux columns never move.
    np.testing.assert_array_equal(np.asarray(p1["head"]["kernel"][:, 10:]), np.asarray(p0["head"]["kernel"][:, 10:]))


# Distillation through the engine: a small task, 1,000 noise inputs in batches of 300 (3 full + 1 partial).
N_NOISE = 1000


def _params(view):
    """Every student's final parameters as one flat vector each: (students, P)."""
    return jnp.stack([ravel_pytree(p)[0] for p in view.students.values()])


def _kl_before_after(view):
    """KL over all logits of the cross-started student "all" against the teacher on the run's inputs."""
    x = noise_images(view.keys["noise"], jnp.arange(N_NOISE))
    t, mask = view.model.apply(view.teacher, x), output_mask("all", 10, 3)
    return jnp.stack([kl_distillation(view.model.apply(p, x), t, mask) for p in (view.refs["cross"],
                                                                                 view.students["all"])])


DISTIL = sm.Experiment(
    model=sm.mlp((16,)), inputs=sm.inputs.uniform(N_NOISE), teacher_epochs=1, student_epochs=2, batch_size=300,
    # "aux" and "all" are one stacked group, so are "mse_aux" and "mse_all"; the "_alone" copies of
    # these (other params keys) are a group each.
    students=(sm.Student("aux", "own", "aux"), sm.Student("all", "cross", "all"),
              sm.Student("mse_aux", "own", "aux", loss="mse"), sm.Student("mse_all", "cross", "all", loss="mse"),
              sm.Student("mse_aux_alone", "own", "aux", loss="mse", params={"a": 0.0}),
              sm.Student("mse_all_alone", "cross", "all", loss="mse", params={"b": 0.0}),
              sm.Student("aux_alone", "own", "aux", params={"c": 0.0}),
              sm.Student("all_alone", "cross", "all", params={"d": 0.0})),
    hparams={"learning_rate": 3e-3, "temperature": 1.0}, metrics={"params": _params, "kl": _kl_before_after})


@pytest.fixture(scope="module")
def small_task(mnist):
    return sm.Task(mnist.train_images[:2048], mnist.train_labels[:2048], mnist.test_images[:1000],
                   mnist.test_labels[:1000], 10)


@pytest.fixture(scope="module")
def distilled(small_task, xla_defaults_context):
    with xla_defaults_context():  # compared bit for bit with a probed run (see below)
        return sm.run(DISTIL, small_task, n_runs=1)


def test_distillation_lowers_the_distillation_loss(distilled):
    before, after = distilled.metrics["kl"][0, 0]
    assert after < 0.8 * before


def test_stacked_students_equal_students_trained_one_by_one(distilled):
    p = distilled.metrics["params"][0, 0]
    assert len({s.group_key() for s in DISTIL.students}) == 6
    # The paper's KL students, stacked and alone: equal to rounding, which Adam's −lr·m̂/(√v̂ + ε) amplifies where a
    # gradient entry is near 0 (a step of up to lr on a few parameters: here 4 of 12,781 differ by more than 1e-5,
    # by at most 8e-4). On average they differ by 3e-7, two different students by 5e-3.
    for a, b in ((0, 6), (1, 7)):
        np.testing.assert_allclose(p[a], p[b], atol=3e-3)
        assert np.mean(np.abs(p[a] - p[b])) < 1e-6 and np.sum(np.abs(p[a] - p[b]) > 1e-5) <= 20
    np.testing.assert_allclose(p[2], p[4], rtol=2e-5, atol=2e-6)  # the MSE ones
    np.testing.assert_allclose(p[3], p[5], rtol=2e-5, atol=2e-6)
    assert not np.allclose(p[0], p[1]) and not np.allclose(p[2], p[3]) and not np.allclose(p[0], p[2])


def test_optimizer_is_adam_with_pytorch_defaults():
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, -4.0])}
    opt = adam(0.1)
    u, _ = opt.update(g, opt.init(p), p)
    # First Adam step: m̂ = g, v̂ = g², update = -lr · g / (|g| + ε).
    np.testing.assert_allclose(np.asarray(u["w"]), -0.1 * np.sign([0.5, -4.0]), rtol=1e-5)  # float32 bias correction
    # Three steps with changing gradients against Adam written out by hand (PyTorch's defaults: the first step
    # alone cannot see β1, β2 or ε).
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    grads = np.array([[0.5, -4.0], [-0.3, 1e-9], [2.0, -1e-9]])
    m, v, state = np.zeros(2), np.zeros(2), opt.init(p)
    for t, gt in enumerate(grads, start=1):
        m, v = b1 * m + (1 - b1) * gt, b2 * v + (1 - b2) * gt**2
        want = -lr * (m / (1 - b1**t)) / (np.sqrt(v / (1 - b2**t)) + eps)
        u, state = opt.update({"w": jnp.asarray(gt, jnp.float32)}, state, p)
        np.testing.assert_allclose(np.asarray(u["w"]), want, rtol=1e-4)


def test_probe_trace_is_taken_at_the_documented_steps():
    from subliminal_mlp.core.training import probe_steps

    for n, b, epochs, every in [(2500, 1024, 3, 1), (5000, 512, 2, 3), (4096, 1024, 2, 2)]:
        out = scan_epochs(lambda s, idx: (s + 1, ()), jnp.array(0), jax.random.PRNGKey(0), n, b, epochs,
                          probe=lambda s: s, probe_every=every)
        want = probe_steps(n, b, epochs, every)
        np.testing.assert_array_equal(np.asarray(out.trace), want)
        assert int(out.state) == want[-1]
    with pytest.raises(ValueError, match="probe_every = 0"):
        scan_epochs(lambda s, idx: (s, ()), 0, jax.random.PRNGKey(0), 10, 5, 1, probe=lambda s: s, probe_every=0)


def test_probing_and_a_traced_temperature_of_one_change_nothing_and_two_is_the_softened_loss(distilled, small_task,
                                                                                               xla_defaults):
    # T swept (traced) over [1, 2] with a trace every 2 steps, against the plain run (T = 1, a constant). Bit for
    # bit on a CPU as a user compiles them (xla_defaults): unoptimised builds of the two programs differ in the last
    # bits. On a GPU the two programs' kernels differ (seen on an H200: up to 2.9e-4 apart after 6 Adam steps, each
    # of which moves a weight with a near-zero gradient by up to lr = 3e-4 whatever its last bits): there, 1e-3.
    bias = lambda v: v.students["aux"]["head"]["bias"][12]  # noqa: E731
    probed = sm.run(DISTIL.replace(trace={"bias": bias}, trace_every=2, metrics={**DISTIL.metrics, "bias": bias}),
                    small_task, n_runs=1, sweep={"temperature": [1.0, 2.0]})
    cpu = jax.default_backend() == "cpu"
    gpu_close = dict(rtol=0, atol=1e-3)
    if cpu:
        np.testing.assert_array_equal(probed.metrics["params"][0], distilled.metrics["params"][0])
    else:
        np.testing.assert_allclose(probed.metrics["params"][0], distilled.metrics["params"][0], **gpu_close)
    trace = probed.traces["bias"][0, 0]
    assert trace.shape == (2 * 2 + 1,)  # 3 full batches per epoch probed at 0 and 2, plus the end
    np.testing.assert_array_equal(probed.trace_steps, [0, 2, 4, 6, 8])
    assert float(trace[0]) == 0.0 and float(trace[-1]) == float(probed.metrics["bias"][0, 0])  # θ0's bias is 0
    # T = 2 as a constant equals T = 2 swept (traced), and differs from T = 1.
    t2 = sm.run(DISTIL.replace(hparams={**DISTIL.hparams, "temperature": 2.0}), small_task, n_runs=1)
    np.testing.assert_allclose(t2.metrics["params"][0], probed.metrics["params"][1],
                               **(dict(rtol=1e-6, atol=1e-7) if cpu else gpu_close))  # 8.9e-6 apart on an H200
    assert not np.allclose(t2.metrics["params"][0], distilled.metrics["params"][0], **gpu_close)  # 0.03 apart


def test_config_input_sources_of_every_kind():
    from subliminal_mlp.studies.figure10 import experiment_from_config
    from subliminal_mlp.core.config import ConfigError
    from subliminal_mlp.core.inputs import InputError, bind_task
    from subliminal_mlp.core.inputs import per_example

    key = jax.random.PRNGKey(0)  # the gaussian source, written out: N(0, 1/3) per pixel, example j from its own key
    g = np.asarray(per_example(key, jnp.arange(3000), lambda k: jax.random.normal(k, (784,), jnp.float32) * (1 / 3) ** 0.5))
    assert abs(g.mean()) < 0.005 and abs(g.var() - 1 / 3) < 0.005 and g.min() < -1.5  # N(0, 1/3), unbounded
    pool = jax.random.uniform(jax.random.PRNGKey(1), (700, 784))
    idx = jnp.array([0, 699, 700, 1401])

    def source(cfg, hp=None):
        src = bind_task(experiment_from_config(cfg).inputs, pool)
        hp = {"input_mix": cfg.input_mix} if hp is None else hp
        return src, (lambda i: src.draw(src.prepare(key, src.arrays, hp), i, hp))

    src, draw = source(Config(n_noise=2000))
    assert src.n == 2000 and np.array_equal(np.asarray(draw(idx)), np.asarray(noise_images(key, idx)))
    src, draw = source(Config(student_inputs="gaussian", n_noise=3000))
    np.testing.assert_array_equal(np.asarray(draw(jnp.arange(3000))), g)
    src, draw = source(Config(student_inputs="task", n_noise=700, batch_size=100))
    assert src.n == 700 and np.array_equal(np.asarray(draw(idx[:2])), np.asarray(pool[jnp.array([0, 699])]))
    src, draw = source(Config(student_inputs="task", n_noise=500, batch_size=100))  # the pool's first 500 images
    assert src.n == 500 and np.array_equal(np.asarray(draw(jnp.arange(500))), np.asarray(pool[:500]))
    with pytest.raises(InputError, match="n = 701 is larger than the pool's 700 images"):
        source(Config(student_inputs="task", n_noise=701, batch_size=100))
    with pytest.raises(ConfigError, match="n_noise = 701 is larger than the 700 images"):
        experiment_from_config(Config(student_inputs="fashion-mnist", n_noise=701, batch_size=100), pool=pool)
    src, draw = source(Config(student_inputs="mix", input_mix=1.0, n_noise=2000))
    assert src.n == 2000 and np.array_equal(np.asarray(draw(idx)), np.asarray(pool[idx % 700]))
    src, draw = source(Config(student_inputs="mix", n_noise=2000), {"input_mix": 0.0})
    np.testing.assert_array_equal(np.asarray(draw(idx)), np.asarray(noise_images(key, idx)))
    src, draw = source(Config(student_inputs="mix", input_mix=0.25, n_noise=2000))
    np.testing.assert_allclose(np.asarray(draw(idx)), 0.25 * np.asarray(pool[idx % 700])
                               + 0.75 * np.asarray(noise_images(key, idx)), atol=1e-6)
