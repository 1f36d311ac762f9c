"""Training: noise, batching, loss decrease, and the stacked-student equivalences."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from subliminal_mlp.config import Config
from subliminal_mlp.data import load_mnist
from subliminal_mlp.losses import class_cross_entropy, kl_distillation
from subliminal_mlp.model import apply, init_params, logit_mask
from subliminal_mlp.training import (
    distill_student,
    distill_students,
    epoch_batches,
    noise_images,
    optimizer,
    run_epochs,
    train_teacher,
)


def test_noise_is_uniform_in_range_and_addressable_by_index():
    key = jax.random.PRNGKey(0)
    x = np.asarray(noise_images(key, jnp.arange(2000)))
    assert x.shape == (2000, 784) and x.dtype == np.float32
    assert x.min() >= -1.0 and x.max() < 1.0
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


def test_run_epochs_takes_one_step_per_batch_including_the_last_partial_one():
    seen = run_epochs(lambda s, idx: s + 1, jnp.array(0.0), jax.random.PRNGKey(0), 2500, 1024, 3)
    assert float(seen) == 9.0  # 3 epochs x (2 full + 1 partial)
    total = run_epochs(lambda s, idx: s + idx.shape[0], 0, jax.random.PRNGKey(0), 2500, 1024, 2)
    assert int(total) == 5000


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_mnist(data_root)


def test_teacher_training_lowers_the_class_loss_and_learns(mnist):
    cfg = Config(hidden_widths=(64,), teacher_epochs=2, batch_size=256)
    x, y = jnp.asarray(mnist.train_images[:4096]), jnp.asarray(mnist.train_labels[:4096])
    p0 = init_params(jax.random.PRNGKey(0), cfg)
    p1 = jax.jit(lambda p: train_teacher(p, x, y, jax.random.PRNGKey(1), cfg))(p0)
    before, after = (float(class_cross_entropy(apply(p, x), y, 10)) for p in (p0, p1))
    assert after < 0.7 * before
    # Aux logits are not in the teacher's loss: the head's aux columns never move.
    np.testing.assert_array_equal(np.asarray(p1["head"]["kernel"][:, 10:]), np.asarray(p0["head"]["kernel"][:, 10:]))


def test_distillation_lowers_the_distillation_loss_and_touches_only_the_students():
    cfg = Config(hidden_widths=(32,), n_noise=2048, batch_size=256, student_epochs=2)
    teacher = init_params(jax.random.PRNGKey(0), cfg)
    student = init_params(jax.random.PRNGKey(1), cfg)
    mask = logit_mask(cfg, "aux")
    nk, sk = jax.random.PRNGKey(2), jax.random.PRNGKey(3)
    trained = jax.jit(lambda s: distill_student(s, teacher, mask, nk, sk, cfg))(student)
    x = noise_images(nk, jnp.arange(2048))
    before, after = (float(kl_distillation(apply(p, x), apply(teacher, x), mask)) for p in (student, trained))
    assert after < 0.8 * before


def test_stacked_students_equal_students_trained_one_by_one():
    cfg = Config(hidden_widths=(16,), n_noise=1000, batch_size=300, student_epochs=2, loss="mse")
    teacher = init_params(jax.random.PRNGKey(0), cfg)
    starts = [init_params(jax.random.PRNGKey(i), cfg) for i in (1, 2)]
    masks = jnp.stack([logit_mask(cfg, "aux"), logit_mask(cfg, "all")])
    nk, sk = jax.random.PRNGKey(5), jax.random.PRNGKey(6)
    stack = jax.tree.map(lambda *a: jnp.stack(a), *starts)
    together = distill_students(stack, teacher, masks, nk, sk, cfg)
    for i in range(2):
        alone = distill_student(starts[i], teacher, masks[i], nk, sk, cfg)
        for a, b in zip(jax.tree.leaves(together), jax.tree.leaves(alone)):
            np.testing.assert_allclose(np.asarray(a[i]), np.asarray(b), rtol=2e-5, atol=2e-6)


def test_optimizer_is_adam_with_pytorch_defaults():
    cfg = Config(learning_rate=0.1)
    p = {"w": jnp.array([1.0, -2.0])}
    g = {"w": jnp.array([0.5, -4.0])}
    opt = optimizer(cfg)
    u, _ = opt.update(g, opt.init(p), p)
    # First Adam step: m̂ = g, v̂ = g², update = -lr · g / (|g| + ε).
    np.testing.assert_allclose(np.asarray(u["w"]), -0.1 * np.sign([0.5, -4.0]), rtol=1e-5)  # float32 bias correction


def test_probe_trace_is_taken_at_the_documented_steps():
    from subliminal_mlp.training import probe_steps

    for n, b, epochs, every in [(2500, 1024, 3, 1), (5000, 512, 2, 3), (4096, 1024, 2, 2)]:
        count, trace = run_epochs(lambda s, idx: s + 1, jnp.array(0), jax.random.PRNGKey(0), n, b, epochs,
                                  probe=lambda s: s, probe_every=every)
        want = probe_steps(n, b, epochs, every)
        np.testing.assert_array_equal(np.asarray(trace), want)
        assert int(count) == want[-1]
    with pytest.raises(ValueError, match="probe_every = 0"):
        run_epochs(lambda s, idx: s, 0, jax.random.PRNGKey(0), 10, 5, 1, probe=lambda s: s, probe_every=0)


def test_probing_does_not_change_the_training():
    cfg = Config(hidden_widths=(16,), n_noise=1000, batch_size=300, student_epochs=2)
    teacher = init_params(jax.random.PRNGKey(0), cfg)
    stack = jax.tree.map(lambda a: a[None], init_params(jax.random.PRNGKey(1), cfg))
    masks = logit_mask(cfg, "aux")[None]
    keys = (jax.random.PRNGKey(2), jax.random.PRNGKey(3))
    plain = distill_students(stack, teacher, masks, *keys, cfg)
    probed, trace = distill_students(stack, teacher, masks, *keys, cfg,
                                     probe=lambda s: s["head"]["bias"][:, 12], probe_every=2)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(probed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert trace.shape == (2 * 2 + 1, 1)  # 3 full batches per epoch probed at 0 and 2, plus the end
    assert float(trace[0, 0]) == 0.0 and float(trace[-1, 0]) == float(probed["head"]["bias"][0, 12])


def test_config_input_sources_of_every_kind():
    from subliminal_mlp.experiment import experiment_from_config
    from subliminal_mlp.inputs import bind_task
    from subliminal_mlp.training import gaussian_images

    key = jax.random.PRNGKey(0)
    g = np.asarray(gaussian_images(key, jnp.arange(3000)))
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
    src, draw = source(Config(student_inputs="task"))
    assert src.n == 700 and np.array_equal(np.asarray(draw(idx[:2])), np.asarray(pool[jnp.array([0, 699])]))
    src, draw = source(Config(student_inputs="mix", input_mix=1.0, n_noise=2000))
    assert src.n == 2000 and np.array_equal(np.asarray(draw(idx)), np.asarray(pool[idx % 700]))
    src, draw = source(Config(student_inputs="mix", n_noise=2000), {"input_mix": 0.0})
    np.testing.assert_array_equal(np.asarray(draw(idx)), np.asarray(noise_images(key, idx)))
    src, draw = source(Config(student_inputs="mix", input_mix=0.25, n_noise=2000))
    np.testing.assert_allclose(np.asarray(draw(idx)), 0.25 * np.asarray(pool[idx % 700])
                               + 0.75 * np.asarray(noise_images(key, idx)), atol=1e-6)


def test_temperature_one_changes_nothing_and_two_is_the_softened_loss():
    cfg = Config(hidden_widths=(16,), n_noise=600, batch_size=300, student_epochs=1)
    teacher = init_params(jax.random.PRNGKey(0), cfg)
    stack = jax.tree.map(lambda a: a[None], init_params(jax.random.PRNGKey(1), cfg))
    masks = logit_mask(cfg, "all")[None]
    keys = (jax.random.PRNGKey(2), jax.random.PRNGKey(3))
    plain = distill_students(stack, teacher, masks, *keys, cfg)
    t1 = distill_students(stack, teacher, masks, *keys, cfg, temperature=jnp.float32(1.0))
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(t1)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # T = 2 through the config equals T = 2 passed as a (traced) override, and differs from T = 1.
    t2 = distill_students(stack, teacher, masks, *keys, cfg.replace(temperature=2.0))
    t2b = distill_students(stack, teacher, masks, *keys, cfg, temperature=jnp.float32(2.0))
    for a, b, c in zip(jax.tree.leaves(t2), jax.tree.leaves(t2b), jax.tree.leaves(plain)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-7)
    assert not np.allclose(np.asarray(t2["head"]["kernel"]), np.asarray(plain["head"]["kernel"]))
