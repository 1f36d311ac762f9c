"""The engine, input sources and student tables: independent computations, properties, real small runs."""

import json
import re
import os
import subprocess
import sys
import textwrap
import types
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings, strategies as st

import subliminal_mlp as sm
from subliminal_mlp import inputs
from subliminal_mlp.core import engine
from subliminal_mlp.core.students import StartContext, adam, output_mask, perturb

TINY = sm.Experiment(model=sm.mlp((32,)), inputs=inputs.uniform(2048), teacher_epochs=1, student_epochs=1,
                     batch_size=512)


@pytest.fixture(scope="module")
def task(data_root):
    return sm.Task.from_dataset(sm.load_mnist(data_root))


def draw(src, idx, key=0, hp=None):
    hp = {} if hp is None else hp
    return src.draw(src.prepare(jax.random.PRNGKey(key), src.arrays, hp), jnp.asarray(idx), hp)


# ----------------------------------------------------------------------------- input sources


@settings(max_examples=10, deadline=None)
@given(st.lists(st.integers(0, 10_000), min_size=1, max_size=8))
def test_every_source_draws_example_j_from_key_and_j_only(idx):
    pool = np.random.default_rng(0).uniform(-1, 1, (50, 784)).astype(np.float32)
    for src in (inputs.uniform(10_001), inputs.gaussian(10_001), inputs.bernoulli(10_001), inputs.subspace(7),
                inputs.blurred(1.0), inputs.cycled(inputs.uniform(10_001), 13),
                inputs.mix([(inputs.uniform(10_001), 0.5), (inputs.images(pool), 0.5)])):
        whole = draw(src, idx)
        for pos, j in enumerate(idx):
            # A matmul (a convolution on GPUs): blocking by batch size moves the last bits only.
            if src.name == "subspace" or (src.name == "blurred" and jax.default_backend() != "cpu"):
                np.testing.assert_allclose(draw(src, [j])[0], whole[pos], atol=1e-5, err_msg=src.name)
            else:
                np.testing.assert_array_equal(draw(src, [j])[0], whole[pos], err_msg=src.name)
        assert whole.shape == (len(idx), 784)


def test_uniform_is_the_papers_noise_and_scale_and_bernoulli_are_what_they_say():
    legacy = sm.noise_images(jax.random.PRNGKey(3), jnp.arange(64))
    np.testing.assert_array_equal(draw(inputs.uniform(), np.arange(64), key=3), legacy)
    x = np.asarray(draw(inputs.uniform(scale=0.25), np.arange(512)))
    assert np.abs(x).max() <= 0.25 and np.abs(x).max() > 0.24
    b = np.asarray(draw(inputs.bernoulli(), np.arange(256)))
    assert set(np.unique(b)) == {-1.0, 1.0} and abs(b.mean()) < 0.02
    g = np.asarray(draw(inputs.gaussian(), np.arange(512)))
    assert abs(g.var() - 1 / 3) < 0.01


def test_subspace_noise_has_rank_k_and_keeps_the_power():
    x = np.asarray(draw(inputs.subspace(30), np.arange(400)), np.float64)
    s = np.linalg.svd(x, compute_uv=False)
    assert np.sum(s > 1e-3 * s[0]) == 30
    u = np.asarray(draw(inputs.uniform(), np.arange(400)), np.float64)
    assert abs(np.mean(np.sum(x**2, 1)) / np.mean(np.sum(u**2, 1)) - 1) < 0.05
    # A different run key draws a different subspace.
    y = np.asarray(draw(inputs.subspace(30), np.arange(400), key=1), np.float64)
    assert np.sum(np.linalg.svd(np.vstack([x, y]), compute_uv=False) > 1e-3 * s[0]) > 30
    # The basis is orthonormal: with k = d, Q Qᵀ = I and the source is the base noise itself (up to rounding);
    # and projecting an example onto its own subspace again leaves it as it is (P² = P).
    np.testing.assert_allclose(draw(inputs.subspace(784), np.arange(8)), u[:8], atol=2e-5)
    src = inputs.subspace(30)
    _, q = src.prepare(jax.random.PRNGKey(0), src.arrays, {})
    q = np.asarray(q, np.float64)
    np.testing.assert_allclose(q.T @ q, np.eye(30), atol=1e-5)
    np.testing.assert_allclose(x @ q @ q.T, x, atol=1e-4)


def test_subspace_and_blur_multiply_in_float32_on_every_platform():
    # Every product of the projection (and of the blur) asks for HIGHEST precision: a GPU's TF32 would keep k = d
    # only to ~1e-3 (what the CPU computes is float32 either way). Asked of the source itself, not of the suite's
    # default precision (highest).
    def precisions(src, hp):
        ctx = src.prepare(jax.random.PRNGKey(0), src.arrays, hp)
        with jax.default_matmul_precision("default"):
            jaxpr = jax.make_jaxpr(lambda i: src.draw(ctx, i, hp))(jnp.arange(4))
        return [str(e.params["precision"]) for e in jaxpr.eqns if e.primitive.name == "dot_general"]

    for src, hp in ((inputs.subspace(30), {}), (inputs.subspace("k", max_k=64), {"k": 8.0}),
                    (inputs.blurred(1.0), {})):
        found = precisions(src, hp)
        assert found and all("HIGHEST" in p for p in found), (src.name, found)


def test_blur_against_a_direct_convolution_and_zero_width_is_the_base():
    base = inputs.uniform()
    np.testing.assert_array_equal(draw(inputs.blurred(0.0), [5]), draw(base, [5]))
    sigma, radius = 1.0, 3
    u = np.asarray(draw(base, [5]), np.float64).reshape(28, 28)
    i = np.arange(-radius, radius + 1)
    w = np.exp(-i**2 / (2 * sigma**2))
    w /= np.sqrt(np.sum(w**2))
    want = np.zeros_like(u)
    for a in range(28):
        for b in range(28):
            want[a, b] = sum(w[p + radius] * w[q + radius] * u[(a - p) % 28, (b - q) % 28] for p in i for q in i)
    got = np.asarray(draw(inputs.blurred(sigma, radius=radius), [5]), np.float64).reshape(28, 28)
    np.testing.assert_allclose(got, want, atol=1e-5)
    # The default radius is ⌈3σ⌉ (for σ = 1.5: 5).
    assert inputs.blurred(1.5).settings["radius"] == 5
    np.testing.assert_array_equal(draw(inputs.blurred(1.5), [0, 9]), draw(inputs.blurred(1.5, radius=5), [0, 9]))
    x = np.asarray(draw(inputs.blurred(2.0), np.arange(300)), np.float64).reshape(300, 28, 28)
    assert abs(x.var() / (1 / 3) - 1) < 0.1  # unit-norm kernel: the pixel variance is kept
    assert np.corrcoef(x[:, 10, 10], x[:, 10, 11])[0, 1] > 0.8
    # A kernel wider than the image wraps around it; the variance is still kept (it grew to 0.58 at σ = 10).
    for sigma in (10.0, 100.0):
        x = np.asarray(draw(inputs.blurred(sigma), np.arange(2000)), np.float64)
        assert abs(np.mean(x ** 2) / (1 / 3) - 1) < 0.1, sigma


def test_cycled_has_exactly_the_distinct_examples_and_mix_weights_its_parts():
    x = np.asarray(draw(inputs.cycled(inputs.uniform(3000), 7), np.arange(3000)))
    assert len(np.unique(x, axis=0)) == 7 and np.array_equal(x[3], x[10])
    # Position j is the base's example j mod 7 (not a shifted one), from the same key.
    np.testing.assert_array_equal(x[:20], draw(inputs.uniform(3000), np.arange(20) % 7))
    pool = np.random.default_rng(1).uniform(-1, 1, (9, 784)).astype(np.float32)
    m = inputs.mix([(inputs.uniform(100), lambda hp: 1 - hp["a"]), (inputs.images(pool), "a")])
    got = draw(m, [3, 12], hp={"a": 0.25})
    want = 0.75 * draw(inputs.uniform(100), [3, 12]) + 0.25 * pool[[3, 12 % 9]]
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_a_new_n_resizes_a_source_as_its_constructor_would_and_the_run_uses_it():
    """``replace(n=...)`` on a wrapper resizes its base (it was rebuilt from the base when the task was bound,
    so the run used 60,000 examples, silently); on a mixture it is the mixture's n; on an image pool its first
    n images; the engine runs the n it is given (its record says so)."""
    pool = np.random.default_rng(1).uniform(-1, 1, (9, 784)).astype(np.float32)
    sub = inputs.subspace(30).replace(n=2048)
    assert (sub.n, sub.describe()["base"]["n"]) == (2048, 2048)
    for src in (sub, inputs.blurred(1.0).replace(n=100), inputs.cycled(inputs.uniform(300), 7).replace(n=100)):
        bound = inputs.bind_task(src, pool)
        assert bound.n == src.n and bound.describe() == src.describe()
        np.testing.assert_array_equal(draw(bound, [3, 99]), draw(src, [3, 99]))
    np.testing.assert_array_equal(draw(sub, [5]), draw(inputs.subspace(30, inputs.uniform(2048)), [5]))
    m = inputs.mix([(inputs.uniform(10), 0.5), (inputs.gaussian(20), 0.5)]).replace(n=7)
    assert m.n == 7 and inputs.bind_task(m, pool).n == 7
    assert inputs.images(pool).replace(n=4).describe() == inputs.images(pool, 4).describe()
    assert inputs.bind_task(inputs.subspace(30, inputs.images()).replace(n=5), pool).n == 5  # the task's first 5
    with pytest.raises(sm.InputError, match="n = 10 is larger than the pool's 9 images"):
        inputs.images(pool).replace(n=10)
    with pytest.raises(sm.InputError, match="distinct = 7 is invalid"):
        inputs.cycled(inputs.uniform(300), 7).replace(n=5)
    assert inputs.uniform(10).replace(n=3, name="u3").describe() == {"name": "u3", "n": 3, "shape": [784], "scale": 1.0}
    # A name given before stays (through a resize, and when the task is bound); a wrapper made outside
    # inputs (base and rebuild in its settings: the teacher-task study's fresh noise) resizes its base too.
    named = inputs.subspace(30).replace(name="mine")
    assert named.replace(n=64).name == inputs.bind_task(named, pool).name == "mine"
    from subliminal_mlp.studies.teacher_task import fresh_noise

    fresh = fresh_noise(inputs.subspace(30)).replace(n=64)
    assert inputs.bind_task(fresh, pool).n == 64 and fresh.describe()["base"]["base"]["n"] == 64
    x = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    exp = sm.Experiment(model=sm.mlp((8,), n_classes=2, aux_logits=2, input_dim=8), teacher_epochs=5,
                        student_epochs=1, batch_size=16, hparams={"learning_rate": 0.05},
                        inputs=inputs.subspace(3, inputs.uniform(1000, shape=(8,))).replace(n=32))
    r = sm.run(exp, sm.Task(x, y, x, y, n_classes=2), n_runs=1)
    assert r.record()["config"]["inputs"]["n"] == 32 and r.record()["config"]["inputs"]["base"]["n"] == 32


def test_a_user_source_closing_over_values_records_them():
    def laplace(scale):
        def lap(key, idx):
            return inputs.per_example(key, idx, lambda k: scale * jax.random.laplace(k, (784,)))
        return lap

    a, b = inputs.source(laplace(0.1), 100).describe(), inputs.source(laplace(5.0), 100).describe()
    assert a != b and a["fn"] == {"test_a_user_source_closing_over_values_records_them.laplace.lap": {"scale": 0.1}}
    plain = inputs.source(lambda key, idx: inputs.per_example(key, idx, lambda k: jax.random.normal(k, (784,))), 64)
    assert plain.describe() == {"name": "<lambda>", "n": 64}  # nothing closed over: its name, as before
    import functools

    def lap(key, idx, scale=1.0):
        return inputs.per_example(key, idx, lambda k: scale * jax.random.laplace(k, (784,)))

    partials = [inputs.source(functools.partial(lap, scale=s), 100).describe()["fn"] for s in (0.1, 5.0)]
    assert partials[0] != partials[1] and all(p.endswith(f"lap>, scale={s})") for p, s in zip(partials, (0.1, 5.0)))


def test_bad_sources_fail_with_their_value():
    with pytest.raises(sm.InputError, match="n = 0 is invalid: the number of examples in the set must be an integer"):
        inputs.uniform(0)
    with pytest.raises(sm.InputError, match=r"'fn': n = 4096.0 is invalid: .* must be an integer >= 1"):
        inputs.source(lambda k, j, hp: jnp.zeros(784), 4096.0, name="fn")  # a float count: named as such
    with pytest.raises(sm.InputError, match="distinct = 5000"):
        inputs.cycled(inputs.uniform(100), 5000)
    # Non-finite settings, and a blur that would be the identity whatever σ its record names (radius 0; a NaN σ
    # took the σ = 0 branch): refused where the source is made, naming the value (raw ValueErrors before).
    for d in (float("nan"), float("inf")):
        with pytest.raises(sm.InputError, match=f"cycled: distinct = {d} is invalid"):
            inputs.cycled(inputs.uniform(100), d)
    for kw, what in ((dict(sigma=float("nan")), "sigma = nan"), (dict(sigma=float("inf")), "sigma = inf"),
                     (dict(sigma=-1.0), "sigma = -1.0"), (dict(sigma=True), "sigma = True"),
                     (dict(sigma=1.0, radius=0), "radius = 0"), (dict(sigma=1.0, radius=1.5), "radius = 1.5"),
                     (dict(sigma="s", radius=-3), "radius = -3")):
        with pytest.raises(sm.InputError, match=f"blurred: {what} is invalid"):
            inputs.blurred(**kw)
    assert inputs.blurred(1.0, radius=np.int64(4)).describe()["radius"] == 4
    with pytest.raises(sm.InputError, match="shape"):
        inputs.check_source(inputs.uniform(10, shape=(100,)), (784,), {})
    with pytest.raises(sm.InputError, match="k = 900"):
        inputs.check_source(inputs.subspace(900), (784,), {})
    with pytest.raises(sm.InputError, match="n = 2147483648 is too large: example indices are int32"):
        inputs.uniform(2**31)
    inputs.uniform(inputs.MAX_EXAMPLES)
    user = inputs.source(lambda key, idx: inputs.per_example(key, idx, lambda k: jax.random.normal(k, (784,))), 64)
    assert draw(user, [0, 1]).shape == (2, 784)
    inputs.check_source(user, (784,), {})
    # A user's fn written for one example (its idx is a batch), or returning one image for a batch: the message says
    # what fn is given and must return.
    for fn, match in ((lambda key, j: jax.random.uniform(jax.random.fold_in(key, j), (784,)),
                       r"'one' failed to draw a batch: TypeError: .*\(a source's fn\(key, idx\) is given a batch of "
                       r"example indices idx and returns one example per index"),
                      (lambda key, idx: jax.random.uniform(key, (28, 28)),
                       r"'one' drew an array of shape \(28, 28\) for the 2 example indices \[0, 1\]: .* here "
                       r"\(2, 784\)")):
        with pytest.raises(sm.InputError, match=match):
            inputs.check_source(inputs.source(fn, 64, name="one"), (784,), {})
    with pytest.raises(sm.InputError, match=r"draws examples of shape \(100,\), but the model takes inputs of shape"):
        inputs.check_source(inputs.uniform(10, shape=(100,)), (784,), {})
    # A user's fn whose example j depends on its batch is not a fixed set (the natural first attempt)
    for fn in (lambda key, idx: jax.random.uniform(key, (idx.shape[0], 784)),  # ignores idx
               lambda key, idx: inputs.per_example(jax.random.fold_in(key, idx.shape[0]), idx,  # on the batch size
                                                   lambda k: jax.random.normal(k, (784,))),
               lambda key, idx: inputs.per_example(jax.random.fold_in(key, idx[0]), idx,  # depends on idx[0]
                                                   lambda k: jax.random.normal(k, (784,)))):
        with pytest.raises(sm.InputError, match="'batchy' is not a fixed set: examples 0 and 1 differ"):
            inputs.check_source(inputs.source(fn, 64, name="batchy"), (784,), {})
        for wrapped in (inputs.mix([(inputs.uniform(64), 0.5), (inputs.source(fn, 64), 0.5)]),
                        inputs.subspace(10, inputs.source(fn, 64)), inputs.cycled(inputs.source(fn, 64), 8)):
            with pytest.raises(sm.InputError, match="not a fixed set"):  # built on one
                inputs.check_source(wrapped, (784,), {})
        with pytest.raises(sm.InputError, match="not a fixed set"):
            x, y = np.zeros((512, 784), np.float32), np.arange(512) % 10
            sm.run(TINY.replace(inputs=inputs.source(fn, 2048)), sm.Task(x, y, x, y, n_classes=10), n_runs=1)


# ----------------------------------------------------------------------------- students and models


def test_output_masks_and_perturbed_starts():
    np.testing.assert_array_equal(output_mask("aux", 10, 3), [0] * 10 + [1] * 3)
    np.testing.assert_array_equal(output_mask("class", 10, 3), [1] * 10 + [0] * 3)
    np.testing.assert_array_equal(output_mask((0, 12), 10, 3), [1] + [0] * 11 + [1])
    p = sm.mlp((8,)).init(jax.random.PRNGKey(0))
    d = jax.tree.map(jnp.ones_like, p)
    q = perturb(p, jax.random.PRNGKey(1), 0.5, orthogonal_to=d)
    delta = jax.flatten_util.ravel_pytree(jax.tree.map(jnp.subtract, q, p))[0]
    free = jax.flatten_util.ravel_pytree(jax.tree.map(jnp.subtract, perturb(p, jax.random.PRNGKey(1), 0.5), p))[0]
    assert abs(float(jnp.sum(delta))) < 1e-2 * float(jnp.linalg.norm(delta))  # ⟂ the all-ones direction
    np.testing.assert_allclose(jnp.linalg.norm(delta), jnp.linalg.norm(free), rtol=1e-4)


def test_each_start_is_what_its_docstring_says():
    # A run's StartContext as the engine builds it, with a teacher θ0 + d for a known displacement d.
    model, seed, run, n_runs = sm.mlp((64,)), 3, 1, 3
    refs = engine.references(model, seed, run, n_runs)
    keys = engine.run_keys(seed, run)
    d = jax.tree.map(lambda a: jnp.full_like(a, 0.01), refs["own"])
    ctx = StartContext(refs, {"teacher": jax.tree.map(jnp.add, refs["own"], d)}, keys, {"s": 0.04}, model)
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731
    own = flat(refs["own"])
    # fresh(stream): model.init(fold_in(keys["fresh"], stream)), neither θ0 nor another stream.
    f0, f1 = flat(sm.fresh()(ctx)), flat(sm.fresh(1)(ctx))
    np.testing.assert_array_equal(f0, flat(model.init(jax.random.fold_in(keys["fresh"], 0))))
    assert not np.array_equal(f0, own) and not np.array_equal(f0, f1)
    np.testing.assert_array_equal(flat(sm.ref("cross")(ctx)), flat(refs["cross"]))
    # perturbed(σ): θ0 + σ·ξ with ξ ~ N(0, I) from keys["init_noise"]; σ a number or a hyperparameter's name.
    for sigma, want in ((0.01, 0.01), ("s", 0.04)):
        delta = flat(sm.perturbed(sigma)(ctx)) - own
        np.testing.assert_allclose(delta, want * jax.random.normal(keys["init_noise"], own.shape), rtol=1e-4, atol=1e-7)
        assert float(jnp.std(delta)) == pytest.approx(want, rel=0.03)  # σ is the std (not the variance)
    # orthogonal: ξ loses its component along d = θ_teacher − θ0 (the own reference's), same norm.
    iso = flat(sm.perturbed(0.01)(ctx)) - own
    orth = flat(sm.perturbed(0.01, orthogonal=True)(ctx)) - own
    u = flat(d) / jnp.linalg.norm(flat(d))
    assert abs(float(jnp.dot(iso, u))) > 0.5 * 0.01  # the isotropic draw does move along d here...
    assert abs(float(jnp.dot(orth, u))) < 1e-3 * float(jnp.linalg.norm(orth))  # ... the orthogonal one does not
    np.testing.assert_allclose(jnp.linalg.norm(orth), jnp.linalg.norm(iso), rtol=1e-4)


def test_one_theta0_per_run_bit_for_bit(xla_defaults):
    # The paper's premise, exactly: the teacher's start (kept after 0 epochs), a frozen student's own start and
    # the evaluated reference are one float32 θ0 (= model.init(run_keys(..)["init"]) compiled alone), and the
    # cross start of run i is run cross_run(i)'s θ0. A metric that subtracts inside the program may see θ0
    # before its last rounding (XLA's fused multiply-add): within half an ulp, never more (docs/concepts.md).
    toy, net = _toy()
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731
    frozen = optax.sgd(0.0)
    exp = sm.Experiment(model=net, inputs=inputs.uniform(128, shape=(8,)), teacher_epochs=0, student_epochs=1,
                        batch_size=64, hparams={"learning_rate": 1e-2},
                        students=(sm.Student("own", optimizer=frozen), sm.Student("cross", "cross", optimizer=frozen)),
                        metrics={"own": lambda v: flat(v.students["own"]), "cross": lambda v: flat(v.students["cross"]),
                                 "reference": lambda v: flat(v.reference),
                                 "moved": lambda v: flat(jax.tree.map(jnp.subtract, v.students["own"], v.reference))})
    n_runs = 3
    r = sm.run(exp, toy, n_runs=n_runs, keep_teachers=True)
    # (XLA's default options here and in the engine: unoptimised builds differ in the last bits, tests/conftest.py.)
    init_alone = lambda k: jax.jit(net.init).lower(k).compile(compiler_options=xla_defaults)(k)  # noqa: E731
    theta0 = [np.asarray(flat(init_alone(engine.run_keys(0, i)["init"]))) for i in range(n_runs)]
    for i in range(n_runs):
        np.testing.assert_array_equal(flat(jax.tree.map(lambda a: a[i], r.teachers)), theta0[i])
        for name in ("own", "reference"):
            np.testing.assert_array_equal(r.metrics[name][0, i], theta0[i], err_msg=name)
        np.testing.assert_array_equal(r.metrics["cross"][0, i], theta0[engine.cross_run(i, n_runs)])
        assert np.all(np.abs(r.metrics["moved"][0, i]) <= 0.5 * np.spacing(np.abs(theta0[i])))
    assert len({t.tobytes() for t in theta0}) == n_runs  # three different draws
    np.testing.assert_array_equal(r.accuracy("own"), r.accuracy("reference"))
    np.testing.assert_array_equal(r.accuracy("teacher"), r.accuracy("reference"))


def test_adam_is_pytorchs_with_its_epsilon():
    # First Adam step: m̂ = g, v̂ = g², update = −lr·g/(|g| + ε). With g = 1e-8 = ε it is −lr/2 (ε = 1e-7: −lr/11).
    opt = adam(0.1)
    g = {"w": jnp.array([1e-8, 1.0], jnp.float32)}
    upd, _ = opt.update(g, opt.init(g))
    np.testing.assert_allclose(upd["w"], [-0.05, -0.1 / (1 + 1e-8)], rtol=1e-5)


def _closures(described):
    """Every ``{variable: value}`` of plain values in a record's description of a function (setting_json)."""
    if isinstance(described, list):
        return [c for d in described for c in _closures(d)]
    if not isinstance(described, dict):
        return []
    plain = {k: v for k, v in described.items() if not isinstance(v, (dict, list))}
    return [{k: v} for k, v in plain.items()] + [c for v in described.values() for c in _closures(v)]


def test_any_experiment_is_described_as_json_and_equal_settings_alike():
    # A record holds Experiment.describe(): optax transformations, functions, starts and numpy numbers in the
    # student table and a user's own input source, all as JSON, with no memory address to tell equal settings apart.
    def table():
        return (sm.Student("adamw", optimizer=optax.adamw(1e-3, weight_decay=0.1), params={"w": np.float32(0.5)}),
                sm.Student("sigma", sm.perturbed(0.01), outputs=[10, 11], loss=lambda z, y, mask, w: jnp.sum(w)),
                sm.Student("chained", optimizer=optax.chain(optax.clip(1.0), optax.sgd(0.1))))

    src = inputs.source(lambda key, idx: jnp.zeros((idx.shape[0], 784)), 64)
    a, b = (json.loads(json.dumps(TINY.replace(inputs=src, students=table()).describe())) for _ in range(2))
    assert a == b
    adamw, sigma, chained = a["students"]
    assert adamw["params"] == {"w": 0.5} and "0x" not in json.dumps(a)
    # An optax transformation is recorded with the numbers it was made with (its update's closure), so
    # AdamW's weight decay and step size and the chain's clip and SGD step are in the record.
    assert {"weight_decay": 0.1} in _closures(adamw["optimizer"]) and {"step_size": -1e-3} in _closures(adamw["optimizer"])
    assert {"max_delta": 1.0} in _closures(chained["optimizer"]) and {"step_size": -0.1} in _closures(chained["optimizer"])
    other = sm.Student("adamw", optimizer=optax.adamw(1e-3, weight_decay=0.2)).describe()
    assert other["optimizer"] != adamw["optimizer"]
    assert sigma["outputs"] == [10, 11] and sigma["loss"].endswith("table.<lambda>") and sigma["start"].startswith("perturbed(")
    assert a["inputs"]["n"] == 64

    class Net(nn.Module):  # a Flax model is described by its attributes (unless given settings): configurations differ
        width: int = 16

        @nn.compact
        def __call__(self, x):
            return nn.Dense(13)(nn.relu(nn.Dense(self.width)(x)))

    assert [sm.from_flax(Net(w)).describe()["width"] for w in (8, 32)] == [8, 32]
    assert "width" not in sm.from_flax(Net(8), settings={"w": 1}).describe()


@pytest.fixture
def no_compile(monkeypatch):
    """An engine program may be traced (a user's code that fails is found while tracing) but never compiled
    or run: what is refused is refused before compute."""

    def trace_only(program, *args, inspect=None, **kwargs):
        traced = program.trace(*args)  # raises what tracing finds
        if inspect is not None:  # and what the engine checks on the trace
            inspect(traced.jaxpr)
        pytest.fail("an engine program was compiled: the bad value was not refused before compute")

    monkeypatch.setattr(engine, "compile_program", trace_only)


def test_bad_tables_and_models_fail_before_compute(task, no_compile):
    cases = [
        (TINY.replace(students=()), sm.StudentError, "empty"),
        (TINY.replace(students=(sm.Student("s", teacher="t1"),)), sm.StudentError, "'t1'"),
        (TINY.replace(students=(sm.Student("teacher"),)), sm.StudentError, "reserved"),
        (TINY.replace(students=(sm.Student(3),)), sm.StudentError, "name 3 is invalid"),
        (TINY.replace(students=(sm.Student("s", outputs=(14,)),)), sm.StudentError, "out of range"),
        (TINY.replace(students=(sm.Student("s", outputs=(0, 13)),)), sm.StudentError, r"outputs \[13\] are out of range 0..12"),
        (TINY.replace(model=sm.mlp((8,), aux_logits=0)), sm.StudentError, r"\(m\) = 0"),
        (TINY.replace(model=sm.mlp((8,), n_classes=5)), sm.ExperimentError, "n_classes = 5"),
        (TINY.replace(model=sm.Model(lambda k: {"w": jnp.zeros((784, 12))}, lambda p, x: x @ p["w"])),
         sm.ModelError, "12"),
        (TINY.replace(inputs=inputs.uniform(2048, shape=(100,))), sm.InputError, r"\(100,\)"),
        (TINY.replace(inputs=inputs.uniform(100)), sm.ExperimentError, "n = 100"),
    ]
    hp = TINY.hparams
    cases += [  # a perturbed start's σ: a number at construction, a hyperparameter at every swept value
        (TINY.replace(students=(sm.Student("noisy", sm.perturbed()),)), sm.StudentError,
         r"student 'noisy': its start perturbed\(sigma='init_noise'\) cannot be resolved: .*'init_noise' is not defined"),
        (TINY.replace(students=(sm.Student("noisy", sm.layers({"head": sm.perturbed("s")}, default="own")),),
                      hparams={**hp, "s": -0.5}), sm.StudentError, r"'noisy'.*sigma = -0.5 is invalid"),
        (TINY.replace(students=(sm.Student("noisy", sm.perturbed(lambda hp: -hp["learning_rate"])),)), sm.StudentError,
         r"'noisy': its start perturbed\(sigma=a function of the hyperparameters\): sigma = -0.0003 is invalid: "
         r".*finite number >= 0"),
    ]
    for exp, error, match in cases:
        with pytest.raises(error, match=match):
            sm.run(exp, task, n_runs=1)
    for make in (lambda: TINY.replace(model=nn.Dense(13)), lambda: sm.Experiment(model=nn.Dense(13))):
        with pytest.raises(sm.ModelError, match=r"model = Dense is not a subliminal_mlp Model: wrap .*from_flax"):
            make()  # a bare Flax module: refused when the experiment is made, as its inputs are
    for bad in (-0.1, float("nan"), [0.1, 0.2]):
        with pytest.raises(sm.StudentError, match=r"perturbed: sigma = .* (is invalid|is not a number)"):
            sm.perturbed(bad)
    for bad in (1.5, -1, "x", True, 2**32):  # 1.5 was folded in as 1 and recorded as 1.5; -1 an OverflowError
        with pytest.raises(sm.StudentError, match=r"fresh: stream = .* is invalid: it must be an integer in 0\.\.2\*\*32"):
            sm.fresh(bad)
    assert sm.fresh(np.int64(3)) == sm.fresh(3) and type(sm.fresh(np.int64(3)).stream) is int
    for bad in ("auxx", None, 10):  # refused when the student is made, as a misspelt loss or start is
        with pytest.raises(sm.StudentError, match=rf"student 's': outputs = {bad!r} is unknown: use 'aux'"):
            sm.Student("s", outputs=bad)
    with pytest.raises(sm.StudentError, match="'s' imitates an empty set of outputs"):
        sm.Student("s", outputs=())
    with pytest.raises(sm.StudentError, match=r"student 's': loss = 'kld': choose one of \('kl', 'mse'\)\. Or give a func"):
        sm.Student("s", loss="kld")
    with pytest.raises(sm.StudentError, match=r"student 's': temperature = 4.0 has no effect with loss = 'mse'"):
        sm.Student("s", loss="mse", temperature=4.0)  # it would be ignored, silently
    assert sm.Student("s", loss="mse", temperature=1).temperature == 1
    with pytest.raises(sm.ExperimentError, match="'temperature' has 1, 'learning_rate' has 2"):
        sm.run(TINY, task, n_runs=1, sweep={"learning_rate": [1e-3, 1e-4], "temperature": [1.0]})
    with pytest.raises(sm.ExperimentError, match="cannot sweep 'momentum': it is not a hyperparameter"):
        sm.run(TINY, task, n_runs=1, sweep={"momentum": [0.9]})
    with pytest.raises(sm.ModelError, match="not hashable"):
        sm.check_model(sm.from_flax(nn.Sequential([nn.Dense(13)])))
    with pytest.raises(sm.ExperimentError, match="teacher_epochs = -1"):
        TINY.replace(teacher_epochs=-1)
    with pytest.raises(sm.ExperimentError, match="batch_size = 70000"):
        sm.run(TINY.replace(batch_size=70_000, inputs=inputs.uniform(80_000)), task, n_runs=1)
    # Names and values a user's script gets wrong, each refused before compute.
    zero = lambda view: view.teacher  # noqa: E731
    later = [
        (dict(exp=TINY.replace(teachers={"teacher": zero})), "derived teacher name 'teacher' is taken"),
        (dict(exp=TINY.replace(teachers={"teacher": zero}, students=(sm.Student("s", teacher="other"),))),
         "derived teacher name 'teacher' is taken"),  # the name clash, not the student's teacher among two 'teacher's
        (dict(exp=TINY.replace(teachers={"student_aux": zero}, students=(sm.Student("student_aux"),))),
         "'student_aux' is taken \\(by a student\\)"),
        (dict(exp=TINY.replace(students=(sm.Student("s", temperature="temprature"),))), "'temprature' is not a hyper"),
        (dict(sweep={"seed": [-1, 2]}), r"seed = -1 is invalid"),
        (dict(seed=2**32), r"seed = 4294967296 is invalid"),
        (dict(sweep={"seed": [0.7]}), r"seed = 0.7 is invalid"),
        (dict(sweep={"learning_rate": [[1e-3, 2e-3]]}), "is not a number"),
        (dict(sweep={"seed": [0, 1]}, keep_teachers=True), "teachers differ from one swept value"),
        (dict(sweep={"learning_rate": [1e-3, 2e-3]}, teachers={"w": np.zeros((1, 2))}), "teachers differ"),
    ]
    for kw, match in later:
        with pytest.raises(sm.ExperimentError, match=match):
            sm.run(kw.pop("exp", TINY), task, n_runs=1, **kw)
    own_model = sm.Student("cnnish", model=sm.mlp((16, 16)))  # another parameter tree: θ0 of the teacher cannot fit
    with pytest.raises(sm.StudentError, match="start it with fresh"):
        sm.run(TINY.replace(students=(own_model,)), task, n_runs=1)
    # A start composed for a student's own model names the student and what does not fit, before compute: a layer
    # the experiment's θ0 lacks, a layer of other shapes, a start of the user's own that fails.
    deeper, wider = sm.mlp((32, 32)), sm.mlp((16,))
    for student, error, match in (
            (sm.Student("deep", model=deeper, start=sm.layers({"hidden_1": "own"})), sm.StudentError,
             r"student 'deep': layers: 'hidden_1' is to come from ref\(which='own'\), whose parameters have no such "
             r"top-level layer \(they have \['head', 'hidden_0'\]\): 'own' and 'cross' are θ0s of the experiment's"),
            (sm.Student("wide", model=wider, start=sm.layers({"hidden_0": "cross"})), sm.StudentError,
             r"student 'wide': its start gives parameters \{.*\(784, 32\).*\}, but its model's are \{.*\(784, 16\)"),
            (sm.Student("mine", start=lambda ctx: ctx.refs["mine"]), sm.ExperimentError,
             r"student 'mine''s start failed while the program was built: KeyError: 'mine'")):
        with pytest.raises(error, match=match):
            sm.run(TINY.replace(students=(student,)), task, n_runs=1)


def test_records_tell_image_pools_task_arrays_and_experiment_arrays_apart_by_their_content(task):
    from subliminal_mlp.core.results import array_fingerprint

    x = np.asarray(task.train_x[:64])
    other = x[::-1].copy()  # same shape and dtype, other images
    a, b = inputs.images(x, 32).describe(), inputs.images(other, 32).describe()
    assert a["pool"] == array_fingerprint(x) != b["pool"] and a["pool"].startswith("array[64, 784] float32 sha256:")
    y = np.arange(64) % 10
    own = sm.Task(x, y, x, y, 10)
    assert own.data == {"arrays": {k: array_fingerprint(v) for k, v in
                                   {"train_x": x, "train_y": y, "test_x": x, "test_y": y}.items()}}
    assert sm.Task(other, y, x, y, 10).data["arrays"]["train_x"] != own.data["arrays"]["train_x"]
    assert sm.Task(x, y, x, y, 10, {"dataset": "mine"}).data == {"dataset": "mine"}  # a description given is kept
    assert TINY.replace(arrays={"w": other}).describe()["arrays"] == {"w": array_fingerprint(other)}
    # the fingerprint is the bytes' SHA-256 (with dtype and shape), computed independently here
    import hashlib

    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(x.tobytes())
    assert array_fingerprint(x).endswith(h.hexdigest()[:16])


def test_a_swept_hyperparameter_nothing_reads_is_refused_before_compile(task, no_compile):
    """A sweep whose values no output depends on (they would change nothing: a trial's class
    table showed three identical rows) is refused from the program's trace, before it is compiled: a number of
    one's own nothing reads, or a temperature only 'mse' students (never scaled by T) or students with their
    own T would see."""
    wd = TINY.replace(hparams={**TINY.hparams, "wd": 0.0})
    with pytest.raises(sm.ExperimentError, match=r"sweep\['wd'\]: nothing in the experiment reads the "
                                                 r"hyperparameter 'wd'.*optax.adam\(hp\['wd'\]\)"):
        sm.run(wd, task, n_runs=1, sweep={"wd": [0.0, 1.0]})
    for students in [(sm.Student("m", loss="mse"),), (sm.Student("own", temperature=2.0), sm.Student("m", loss="mse"))]:
        with pytest.raises(sm.ExperimentError, match=r"sweep\['temperature'\]: nothing .* an 'mse' student is "
                                                     r"never scaled by T"):
            sm.run(TINY.replace(students=students), task, n_runs=1, sweep={"temperature": [1.0, 4.0]})
    # read: a student's optimiser, a temperature of its own made from it, or only by one of two swept values
    read = [(wd.replace(students=(sm.Student("d", optimizer=lambda hp: optax.adamw(1e-3, weight_decay=hp["wd"])),)),
             {"wd": [0.0, 1.0]}),
            (TINY.replace(students=(sm.Student("f", temperature=lambda hp: 2 * hp["temperature"]),)),
             {"temperature": [1.0, 4.0]}),
            (wd, {"wd": [0.0, 1.0], "learning_rate": [1e-3, 1e-2]}),
            (wd, {"wd": [0.0, 0.0], "learning_rate": [1e-3, 1e-2]})]  # one value repeated: no claim (fused studies)
    for exp, sweep in read[:2] + read[3:]:
        with pytest.raises(pytest.fail.Exception, match="was compiled"):  # passed the check: the fixture stops it
            sm.run(exp, task, n_runs=1, sweep=sweep)
    with pytest.raises(sm.ExperimentError, match=r"sweep\['wd'\]: nothing"):  # the unread one of two is named
        sm.run(read[2][0], task, n_runs=1, sweep=read[2][1])


def test_a_sweep_that_repeats_a_value_is_warned_about_before_compile(task):
    # sweep={"learning_rate": [1e-2, 1e-2]} computed both copies (run_sweep and the command line refuse repeats); a
    # repeated value with distinct seeds beside it is no repeat. devices=[] stops the run after the checks.
    import warnings

    with pytest.warns(sm.SettingWarning, match=r"the sweep repeats learning_rate = 0.01 \(values 0 and 2\): it is "
                                               "computed twice"), pytest.raises(sm.ExperimentError, match="devices"):
        sm.run(TINY, task, sweep={"learning_rate": [1e-2, 3e-3, 1e-2]}, devices=[])
    with warnings.catch_warnings():
        warnings.simplefilter("error", sm.SettingWarning)
        with pytest.raises(sm.ExperimentError, match="devices"):
            sm.run(TINY, task, sweep={"learning_rate": [1e-2, 1e-2], "seed": [0, 1]}, devices=[])


def test_a_setting_that_is_no_hyperparameter_is_refused_with_what_sweeps_it(task, no_compile):
    """Sweeping an Experiment field, a model setting or a Config field says how to sweep it (a trial followed
    the old advice, 'Add it to Experiment.hparams', and got identical rows)."""
    cases = [("student_epochs", r"field of the Experiment.*exp.replace\(student_epochs=v\)"),
             ("batch_size", r"field of the Experiment.*exp.replace\(batch_size=v\)"),
             ("aux_logits", r"setting of the model.*sm.mlp\(aux_logits=v\)"),
             ("hidden_widths", r"setting of the model.*sm.mlp\(hidden_widths=v\)"),
             ("n_noise", r"field of the paper's protocol \(Config\): sm.run_sweep\('n_noise'"),
             ("my_knob", r"add it to Experiment.hparams .* hp\['my_knob'\]"),
             ("input_shape", r"setting of the model: .* exp.replace\(model=...\) for each value")]
    for name, message in cases:
        with pytest.raises(sm.ExperimentError, match=rf"cannot sweep '{name}': it is not a hyperparameter.*{message}"):
            sm.run(TINY, task, n_runs=1, sweep={name: [1, 2]})
    # one the library reads by name, left out of the experiment's hyperparameters: add it (not Config's sweep)
    for name in ("temperature", "init_noise"):
        with pytest.raises(sm.ExperimentError, match=rf"cannot sweep '{name}'.*Add it to the experiment's "
                                                     rf"hyperparameters, exp.replace\(hparams="):
            sm.run(TINY.replace(hparams={"learning_rate": 1e-3}), task, n_runs=1, sweep={name: [1.0, 2.0]})
    # the program's own per-job inputs cannot be hyperparameters (one named 'run' replaced the run indices)
    for name in ("run", "seed"):
        with pytest.raises(sm.ExperimentError, match=rf"hparams\['{name}'\] is reserved"):
            TINY.replace(hparams={**TINY.hparams, name: 1.0})


def test_values_a_user_gets_wrong_are_refused_before_compute_naming_them(task, no_compile):
    """Hyperparameters (fixed or swept), swept input settings, a Task, given teachers and a metric's
    return value, each refused before the run with a message naming the value (a review found each of
    these running to NaN, to a silently different set of inputs, or crashing after the compute)."""
    from subliminal_mlp.core.engine import validate

    hp = TINY.hparams
    with pytest.raises(sm.ExperimentError, match=r"hparams\['input_mix'\] = -1e\+39 is invalid: it is beyond float32"):
        TINY.replace(hparams={**hp, "input_mix": -1e39})  # refused as the experiment is made
    refused = [
        (dict(sweep={"temperature": [1.0, 0.0]}), sm.ExperimentError, "temperature = 0.0 is invalid"),
        (dict(sweep={"learning_rate": [-1e-3]}), sm.ExperimentError, "learning rate must be > 0"),
        (dict(sweep={"learning_rate": [1e39, 1e-2]}), sm.ExperimentError, r"1e\+39 is invalid: it is beyond float32's"),
        (dict(sweep={"temperature": [1e-50]}), sm.ExperimentError, "1e-50 is invalid: it rounds to 0 in float32"),
        (dict(sweep={"temperature": 2.0}), sm.ExperimentError, r"give a list of numbers, e.g. .*\[2.0\]"),
        (dict(sweep={"temperature": np.array(2.0)}), sm.ExperimentError, r"give a list of numbers"),
        (dict(sweep={"temperature": "2.0"}), sm.ExperimentError, r"give a list of numbers, e.g. .*\[0.001\]"),
        (dict(exp=TINY.replace(students=(sm.Student("s", temperature=0.0),))), sm.ExperimentError,
         "student 's': temperature = 0.0 is invalid: it must be a finite number > 0"),
        (dict(exp=TINY.replace(students=(sm.Student("s", temperature="T"),), hparams={**hp, "T": 2.0}),
              sweep={"T": [2.0, -1.0]}), sm.ExperimentError, "T = -1.0"),
        (dict(exp=TINY.replace(inputs=inputs.cycled(inputs.uniform(2048), "d"), hparams={**hp, "d": 16.0}),
              sweep={"d": [16, 4096]}), sm.InputError, r"distinct = 4096 \(from hyperparameter 'd'\).*1..2048"),
        (dict(exp=TINY.replace(inputs=inputs.cycled(inputs.uniform(2048), "d"), hparams={**hp, "d": 2.6})),
         sm.InputError, "distinct = 2.6"),
        (dict(exp=TINY.replace(inputs=inputs.subspace("k", max_k=64), hparams={**hp, "k": 8.0}),
              sweep={"k": [8, 200]}), sm.InputError, "k = 200 .* 1..64"),
        (dict(exp=TINY.replace(inputs=inputs.subspace("k", inputs.uniform(2048)), hparams={**hp, "k": 0.0})),
         sm.InputError, "k = 0.0 .* 1..784"),
        (dict(exp=TINY.replace(inputs=inputs.blurred("s", radius=2), hparams={**hp, "s": 1.0}), sweep={"s": [-1.0]}),
         sm.InputError, "sigma = -1.0"),
        (dict(exp=TINY.replace(inputs=inputs.gaussian(2048, std="s"), hparams={**hp, "s": 1.0}),
              sweep={"s": [0.5, -1.0]}), sm.InputError, r"gaussian: std = -1.0 \(from hyperparameter 's'\)"),
        # a temperature or a mixture weight given by a function, checked at every swept value (NaN students and
        # a "lower the learning rate?" hint before), and the layout of the runs
        (dict(exp=TINY.replace(students=(sm.Student("s", temperature=lambda hp: 0.0 * hp["learning_rate"]),))),
         sm.ExperimentError, "student 's': temperature = a function of the hyperparameters gives 0.0: it must be"),
        (dict(exp=TINY.replace(inputs=inputs.mix([(inputs.uniform(2048), lambda h: h["learning_rate"] * np.inf)]))),
         sm.InputError, r"mix: the weight of component 0 = inf \(from a function of the hyperparameters\)"),
        (dict(run_batch=0), sm.ExperimentError, "run_batch = 0 is invalid: .* integer >= 1, or None"),
        (dict(run_batch=1.5), sm.ExperimentError, "run_batch = 1.5 is invalid"),
        (dict(run_batch="2"), sm.ExperimentError, "run_batch = '2' is invalid"),
        (dict(devices=[]), sm.ExperimentError, r"devices = \[\] is invalid"),
        (dict(devices=["cpu"]), sm.ExperimentError, r"devices = \['cpu'\] is invalid: give jax.Device objects"),
        (dict(teacher_cache=3), sm.ExperimentError, "teacher_cache = 3 is invalid: give a TeacherCache, a directory"),
        # steps are counted in int32 (an OverflowError after the trace, before): MNIST's 60,000 images, one a batch
        (dict(exp=TINY.replace(batch_size=1, teacher_epochs=35_792)), sm.ExperimentError,
         r"teacher_epochs = 35792 is too many: 2,147,520,000 steps \(60,000 examples in batches of 1\)"),
    ]
    with pytest.raises(sm.ExperimentError, match="n_runs = 1073741824 times 2 swept values is too many runs: they are "
                                                 "indexed in int32"):  # (a 7 TiB allocation before)
        validate(TINY, task, n_runs=2**30, sweep={"temperature": [1.0, 2.0]})
    for bad, match in [(lambda: inputs.gaussian(100, std=-1.0), "gaussian: std = -1.0 is invalid"),
                       (lambda: inputs.uniform(100, scale=0), "uniform: scale = 0 is invalid"),
                       (lambda: inputs.bernoulli(100, scale=float("nan")), "bernoulli: scale = nan")]:
        with pytest.raises(sm.InputError, match=match):  # a number: refused when the source is made
            bad()
    for kw, error, match in refused:
        with pytest.raises(error, match=match):
            sm.run(kw.pop("exp", TINY), task, n_runs=1, **kw)
    with pytest.raises(sm.ExperimentError, match="must be finite"):
        TINY.replace(hparams={**hp, "init_noise": float("nan")})
    with pytest.raises(sm.ExperimentError, match=r"'temperature'\] = 0.0 is invalid"):
        TINY.replace(hparams={**hp, "temperature": 0.0})
    # A Task whose labels do not fit it, or whose splits disagree.
    x, y = np.zeros((8, 784), np.float32), np.zeros(8, np.int32)
    for bad, match in [(dict(train_y=np.zeros(7, np.int32)), "one label per example"),
                       (dict(test_y=np.full(8, 5)), "labels from 5 to 5.*0..1"),
                       (dict(train_y=np.full(8, 0.5)), "not integers"),
                       (dict(test_x=np.zeros((8, 28, 28))), "must match")]:
        with pytest.raises(sm.ExperimentError, match=match):
            sm.Task(**{"train_x": x, "train_y": y, "test_x": x, "test_y": y, "n_classes": 2, **bad})
    # Teachers of another model.
    other = jax.tree.map(lambda a: a[None], sm.mlp((16,)).init(jax.random.PRNGKey(0)))
    with pytest.raises(sm.ExperimentError, match=r"teachers= do not fit.*\(784, 16\).*\(784, 32\)"):
        validate(TINY, task, teachers=other)
    # Teachers of another number of runs (indexing would clamp: runs past the end would reuse the last teacher).
    two = jax.tree.map(lambda a: jnp.stack([a, a]), TINY.model.init(jax.random.PRNGKey(0)))
    validate(TINY, task, teachers=two, n_runs=2)
    with pytest.raises(sm.ExperimentError, match=r"teachers have leading axis \[2\], expected n_runs = 3"):
        validate(TINY, task, teachers=two, n_runs=3)
    # A student's own code that fails or returns the wrong shape is named with its student, before the run.
    import optax

    for student, match in [
        (sm.Student("wd", optimizer=lambda hp: optax.adamw(1e-3, weight_decay=hp["wd"])), r"'wd'.*optimizer.*KeyError"),
        (sm.Student("w", example_weights=lambda v: jnp.ones(3)), r"'w'.*example_weights hook returned shape \(3,\)"),
        (sm.Student("t", targets=lambda v: v.logits[:, :10]), r"'t'.*targets hook returned shape \(512, 10\)"),
        # a loss that indexes its weights, which are None without hooks (documented), and a per-example loss
        (sm.Student("l", loss=lambda z, y, m, w: jnp.sum(w[:, None] * m * (z - y) ** 2)), r"'l'.*its loss failed.*TypeError"),
        (sm.Student("v", loss=lambda z, y, m, w: jnp.sum(m * (z - y) ** 2, -1)), r"'v'.*loss returned.*\(512,\).*scalar"),
        (sm.Student("p", penalty=lambda v: jnp.ones(3)), r"'p': its penalty returned an array of shape \(3,\)"),
        (sm.Student("q", penalty=lambda v: v.nope), r"'q': its penalty failed .*AttributeError"),
    ]:
        with pytest.raises(sm.ExperimentError, match=match):
            sm.run(TINY.replace(students=(student,)), task, n_runs=1)
    # An optimiser in a form the engine does not take says which forms it does.
    with pytest.raises(sm.ExperimentError, match=r"'f': its optimizer failed .*TypeError.*\(a student's optimizer: give "
                                                  r"an optax GradientTransformation .* optax.sgd\s+itself is neither\)"):
        sm.run(TINY.replace(students=(sm.Student("f", optimizer=optax.sgd),)), task, n_runs=1)  # the factory, uncalled
    with pytest.raises(sm.StudentError, match=r"student 'r': its optimizer returned float, not an optax Gradient"):
        sm.run(TINY.replace(students=(sm.Student("r", optimizer=lambda hp: 0.1),)), task, n_runs=1)
    with pytest.raises(sm.StudentError, match=r"student 's': optimizer = 'sgd' is not an optimiser: give an optax"):
        sm.Student("s", optimizer="sgd")
    # A metric returns one array: a tuple is refused while tracing, before the run.
    with pytest.raises(sm.ExperimentError, match="metric 'pair' returned tuple"):
        sm.run(TINY.replace(metrics={"pair": lambda v: (v.run, v.run)}), task, n_runs=1, teacher_cache=False)
    # A metric, trace, step metric or derived teacher that fails is named, with the error it raised.
    for kw, match in [
        (dict(metrics={"gone": lambda v: v.students["nope"]}),
         r"metric 'gone' failed while the program was built: KeyError: 'nope' \(the students are \['cross_all'"),
        (dict(trace={"t": lambda v: 1 / 0}), "trace 't' failed .*ZeroDivisionError"),
        (dict(step_metrics={"g": lambda v: v.nope}), "step metric 'g' failed .*AttributeError"),
        (dict(teachers={"ft": lambda v: v.nope}), "derived teacher 'ft' failed .*AttributeError"),
        (dict(teachers={"ft": lambda v: {"w": 1.0}}), r"derived teacher 'ft' returned parameters \{\['w'\]: \(\) "
                                                       r".*but the model's are \{\['head'\]"),
    ]:
        with pytest.raises(sm.ExperimentError, match=match):
            sm.run(TINY.replace(**kw), task, n_runs=1, teacher_cache=False)
    # The wrong kind of value where an Experiment's part, the experiment or the task goes.
    with pytest.raises(sm.ExperimentError, match=r"inputs = 60000 is not an input source: .*sm.inputs.uniform\(60000\)"):
        sm.Experiment(inputs=60000)
    with pytest.raises(sm.ExperimentError, match=r"students is one Student \('student_aux'\), not a table.*\(row,\)"):
        sm.Experiment(students=sm.FIGURE10[0])
    for bad in (3, "student_aux", {"s": sm.FIGURE10[0]}):  # a name's letters, a dict's keys are no table either
        with pytest.raises(sm.ExperimentError, match=f"students = {re.escape(repr(bad))} is not a table of students"):
            sm.Experiment(students=bad)
    data = types.SimpleNamespace(train_images=np.asarray(task.train_x))  # what sm.load_mnist() gives
    with pytest.raises(sm.ExperimentError, match=r"the task is a SimpleNamespace, not a Task: wrap the dataset: "
                                                 r"sm.Task.from_dataset\(data\)"):
        sm.run(TINY, data, n_runs=1)
    with pytest.raises(sm.ExperimentError, match="the task is a ndarray, not a Task: build one"):
        sm.run(TINY, task.train_x, n_runs=1)
    with pytest.raises(sm.ExperimentError, match=r"takes a loaded dataset .*not a str \('/data': load it with "
                                                 r"sm.load_mnist\('/data'\)\)"):  # the data root given
        sm.Task.from_dataset("/data")
    for widths, example in [(256, r"\(256,\)"), (np.int64(64), r"\(64,\)"), (2.5, r"\(256, 256\)")]:
        with pytest.raises(sm.ModelError, match=f"hidden_widths = .* give a sequence of widths, e.g. {example}"):
            sm.mlp(widths)
    with pytest.raises(sm.ExperimentError, match="the experiment is a Config, not an Experiment"):
        sm.run(sm.Config(), task, n_runs=1)
    with pytest.raises(sm.ConfigError, match=r"cfg is a dict, not a Config: .*Config.from_dict"):
        sm.run_experiment({"n_runs": 2}, data)
    with pytest.raises(sm.ConfigError, match="data is a Task, not a loaded dataset"):
        sm.run_experiment(sm.Config(n_runs=1), task)


def test_numpy_and_jax_numbers_are_taken_as_numbers_and_task_images_sized_when_bound(task):
    # Settings given as numpy or JAX scalars, index ranges and arrays act as the Python values they hold.
    assert sm.mlp(np.array([32])).describe() == sm.mlp((32,)).describe()
    exp = TINY.replace(batch_size=np.int64(512), hparams={**TINY.hparams, "learning_rate": jnp.float32(3e-4)})
    assert exp.batch_size == 512 and isinstance(exp.hparams["learning_rate"], float)
    assert sm.Student("s", outputs=range(10, 13)).outputs == sm.Student("s", outputs=jnp.arange(10, 13)).outputs
    assert inputs.subspace(np.int64(30)).describe() == inputs.subspace(30).describe()
    assert inputs.blurred(np.float32(1.0)).describe() == inputs.blurred(1.0).describe()
    # A source's parameters with defaults keep them; a third without default (or named hp) gets the hyperparameters.
    scaled = inputs.source(lambda key, idx, scale=0.5: scale * jnp.ones((idx.shape[0], 784)), 8)
    with_hp = inputs.source(lambda key, idx, hp: hp["s"] * jnp.ones((idx.shape[0], 784)), 8)
    np.testing.assert_array_equal(draw(scaled, [0, 1]), 0.5)
    np.testing.assert_array_equal(draw(with_hp, [0], hp={"s": 2.0}), 2.0)
    # an hp after a defaulted parameter is given by name (it went, by position, into the defaulted one)
    later = inputs.source(lambda key, idx, scale=0.5, hp=None: scale * hp["s"] * jnp.ones((idx.shape[0], 784)), 8)
    np.testing.assert_array_equal(draw(later, [0], hp={"s": 2.0}), 1.0)
    # A temperature given as a function of the hyperparameters is the number it returns.
    from subliminal_mlp.core.engine import _distillation_loss

    z, y = jax.random.normal(jax.random.PRNGKey(0), (2, 4, 13))
    mask = output_mask("aux", 10, 3)
    by_fn, by_number = (_distillation_loss(sm.Student("s", temperature=t), {"temperature": 1.0})(z, y, mask)
                        for t in (lambda hp: 2.0, 2.0))
    assert float(by_fn) == float(by_number) != float(_distillation_loss(sm.Student("s"), {"temperature": 1.0})(z, y, mask))
    # An activation without a __name__ (a partial) is described with its arguments, so two differ in records.
    from functools import partial

    leaky = [sm.mlp((8,), activation=partial(jax.nn.leaky_relu, negative_slope=s)).describe() for s in (0.01, 0.2)]
    assert leaky[0] != leaky[1] and "negative_slope=0.01" in leaky[0]["activation"]
    # ... and so is an activation that closes over its slope; the model stays a valid (hashable) model.
    def slope(a):
        return lambda x: jax.nn.leaky_relu(x, a)

    closed = [sm.mlp((8,), activation=slope(a)) for a in (0.01, 0.2)]
    assert closed[0].describe() != closed[1].describe() and '"a": 0.01' in closed[0].describe()["activation"]
    assert sm.check_model(closed[0]).shape == (2, 13) and hash(closed[0]) != hash(closed[1])
    # The task's images inside a mixture or a cycled set are the task's n_train, known once bound to the task.
    from subliminal_mlp.core.engine import validate

    n_train = task.train_x.shape[0]
    mixed = inputs.mix([(inputs.images("task"), 0.5), (inputs.uniform(1024), 0.5)])
    assert validate(TINY.replace(inputs=mixed), task).n == n_train
    assert validate(TINY.replace(inputs=inputs.mix([(inputs.images("task"), 1.0)], n=1024)), task).n == 1024
    assert validate(TINY.replace(inputs=inputs.cycled(inputs.images("task"), 1024)), task).n == n_train
    with pytest.raises(sm.InputError, match=f"1..{n_train}"):
        validate(TINY.replace(inputs=inputs.cycled(inputs.images("task"), n_train + 1)), task)
    # images("task", n) is the task's first n images; n may be the whole set (not one more), and so for a pool.
    first = validate(TINY.replace(inputs=inputs.images("task", 100), batch_size=50), task)
    assert first.n == 100
    np.testing.assert_array_equal(draw(first, [0, 99]), np.asarray(task.train_x)[[0, 99]])
    assert validate(TINY.replace(inputs=inputs.images("task", n_train)), task).n == n_train
    with pytest.raises(sm.InputError, match=f"n = {n_train + 1} is larger than the pool's {n_train} images"):
        validate(TINY.replace(inputs=inputs.images("task", n_train + 1)), task)
    assert inputs.images(np.zeros((6, 784), np.float32), n=6).n == 6


# ----------------------------------------------------------------------------- real small runs


def test_engine_figure10_equals_run_experiment_and_teachers_can_be_reused(task, data_root):
    cfg = sm.Config(hidden_widths=(32,), n_runs=3, teacher_epochs=1, student_epochs=1, n_noise=2048,
                    batch_size=512, run_batch=1)
    legacy = sm.run_experiment(cfg, sm.load_mnist(data_root)).accuracies
    # run_batch fixed: bit-identity holds for one run_batch (on a GPU the default fits it to memory).
    r = sm.run(TINY, task, n_runs=3, keep_teachers=True, run_batch=1)
    np.testing.assert_array_equal(r.accuracies[0], legacy)
    assert r.models == ("reference", "teacher", "student_aux", "student_all", "cross_aux", "cross_all")
    again = sm.run(TINY, task, n_runs=3, teachers=r.teachers, run_batch=1)
    np.testing.assert_array_equal(again.accuracies, r.accuracies)
    assert r.record()["teachers"] == "trained" and again.record()["teachers"] == "given"
    # A subset of the students: the same numbers for the students kept.
    some = sm.run(TINY.replace(students=sm.FIGURE10[2:]), task, n_runs=3, teachers=r.teachers, run_batch=1)
    np.testing.assert_array_equal(some.accuracies[0, :, 2:], r.accuracies[0, :, 4:])


@pytest.mark.parametrize("field, value", [("temperature", 4.0), ("targets", lambda v: jnp.zeros_like(v.logits))])
def test_students_differing_only_in_temperature_or_targets_each_train_at_their_own(task, field, value):
    # Students that differ in T (or their targets hook) alone must not be stacked into one group trained at one T
    # (with one hook): "b" trained beside "a" ends where "b" trained alone does, and not where an "a" does.
    def param_sum(name):
        return lambda view: sum(jnp.sum(leaf) for leaf in jax.tree.leaves(view.students[name]))

    a = sm.Student("a", temperature=1.0)
    b = a.replace(name="b", **{field: value})
    exp = TINY.replace(student_epochs=1, metrics={"b": param_sum("b")})
    both = sm.run(exp.replace(students=(a, b)), task, n_runs=1, run_batch=1)
    alone = sm.run(exp.replace(students=(b,)), task, n_runs=1, run_batch=1)
    as_a = sm.run(exp.replace(students=(a.replace(name="b"),)), task, n_runs=1, run_batch=1)
    np.testing.assert_allclose(both.metrics["b"], alone.metrics["b"], rtol=1e-6)
    assert not np.allclose(both.metrics["b"], as_a.metrics["b"], rtol=1e-4)


def test_students_are_stacked_together_only_when_every_setting_that_trains_them_is_the_same():
    # Every field of a Student but its name, start and outputs (which a stacked group carries per student) changes
    # how it trains: a student that differs in any one of them is its own group. A field added to Student must be
    # added to group_key or to the per-student ones here.
    import dataclasses

    per_student = {"name", "start", "outputs"}
    changed = {"loss": "mse", "teacher": "other", "temperature": 2.0, "optimizer": optax.sgd(0.1),
               "example_weights": lambda v: jnp.ones(v.idx.shape[0]), "targets": lambda v: v.logits,
               "params": {"c": 1.0}, "penalty": lambda v: 0.0, "model": sm.mlp((8,))}
    assert {f.name for f in dataclasses.fields(sm.Student)} == per_student | set(changed)
    base = sm.Student("s")
    for name, value in changed.items():
        assert base.replace(**{name: value}).group_key() != base.group_key(), name
    for name, value in {"name": "t", "start": "cross", "outputs": "all"}.items():
        assert base.replace(**{name: value}).group_key() == base.group_key(), name


def test_a_sweep_of_any_hparam_is_one_program_and_each_value_is_its_own_run(task, tmp_path):
    def norm(view):  # a per-run metric, computed inside the program
        return optax.tree.norm(view.students["aux_wd"]) / optax.tree.norm(view.reference)

    exp = TINY.replace(hparams={**TINY.hparams, "wd": 0.0}, metrics={"norm": norm},
                       students=(sm.Student("aux_wd", optimizer=lambda hp: optax.adamw(hp["learning_rate"],
                                                                                        weight_decay=hp["wd"])),))
    both = sm.run(exp, task, n_runs=2, sweep={"wd": np.array([0.0, 100.0], np.float32)}, run_batch=1)
    assert both.accuracies.shape == (2, 2, 3) and both.metrics["norm"].shape == (2, 2)
    alone = sm.run(exp, task, n_runs=2, sweep={"wd": [100.0]}, run_batch=1)
    np.testing.assert_array_equal(both.accuracies[1], alone.accuracies[0])
    np.testing.assert_array_equal(both.metrics["norm"][1], alone.metrics["norm"][0])
    # AdamW's decay θ ← θ − lr·wd·θ over 4 steps shrinks the student by about (1 − 3e-4·100)⁴.
    np.testing.assert_allclose(both.metrics["norm"][1] / both.metrics["norm"][0], (1 - 3e-2) ** 4, rtol=0.02)
    np.testing.assert_array_equal(both.accuracies[0, :, :2], both.accuracies[1, :, :2])  # teachers unchanged
    # The table shows every swept value under its label (a value's own table too); one value's rows are those of a
    # run of it alone.
    assert both.table() == f"{both.table(0)}\n\n{both.table(1)}"
    assert both.table(0).startswith("wd = 0\nmodel") and both.table(1).startswith("wd = 100\nmodel")
    assert both.table(1) == f"wd = 100\n{alone.table()}" and "wd =" not in alone.table()
    assert both.table(-1) == both.table(1) and np.array_equal(both.accuracy("teacher", np.int64(1)),
                                                              both.accuracy("teacher", 1))
    for bad in (2, -3, 1.0, True):  # a value the result does not have is named, with the range it has
        with pytest.raises(IndexError, match=f"value = {bad!r} is out of range: .* 2 swept value\\(s\\), numbered 0 to 1"):
            both.table(bad)
    with pytest.raises(IndexError, match="value = 1 is out of range"):
        alone.health(1)
    (tmp_path / "afile").write_text("")
    for out, stem, match in [(tmp_path / "afile", "wd", "is an existing file, not a directory"),
                             (tmp_path, "", "stem = '' is invalid"), (tmp_path, "../wd", "without a directory part")]:
        with pytest.raises(sm.OutputError, match=match):  # refused before anything is written
            both.write(out, stem)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]
    assert json.loads(json.dumps(both.record()))["values"][1]["sweep"] == {"wd": 100.0}  # numpy values as numbers
    rows = (both.write(tmp_path, "wd")["csv"]).read_text().splitlines()  # the swept value in every row
    assert rows[0] == "value_index,wd,model,run,accuracy" and rows[-1].startswith("1,100.0,aux_wd,1,") and len(rows) == 13
    # Drawn from the record it wrote: one bar per swept value, the settings as its caption; the Figure-10 chart
    # refuses it by name (and the reverse).
    from subliminal_mlp.report.plotting import experiment_caption, plot_experiment, plot_fig10

    record = sm.read_results(tmp_path / "wd.json")
    assert plot_experiment(record, tmp_path / "wd.png").stat().st_size > 0
    # every run's accuracy as tidy rows: the swept value, the model, the run, the number the result holds
    tidy = sm.per_run(tmp_path / "wd.json")
    assert tidy == sm.per_run(both.record()) == sm.per_run(both) and len(tidy) == 2 * len(both.models) * 2
    with pytest.raises(TypeError, match="per_run takes a record .* or a Result, not int 3"):
        sm.per_run(3)
    for row in tidy:
        assert set(row) == {"wd", "model", "run", "accuracy"}
        assert row["accuracy"] == float(both.accuracy(row["model"], [0.0, 100.0].index(row["wd"]))[row["run"]])
    # The record in memory is the record read back (JSON types throughout), and is drawn as it is.
    assert json.loads(json.dumps(both.record())) == both.record()
    assert sm.draw(both.record(), tmp_path / "in_memory.png").stat().st_size > 0
    # ... or from its file's path, as sm.draw(record, path) reads at a glance
    assert sm.draw(tmp_path / "wd.json", tmp_path / "from_file.png").read_bytes() == (tmp_path / "wd.png").read_bytes()
    assert sm.draw(str(tmp_path / "wd.json"), tmp_path / "from_str.png").stat().st_size > 0
    with pytest.raises(TypeError, match="draw takes a record .* or its JSON file's path, not a int"):
        sm.draw(3, tmp_path / "x.png")
    with pytest.raises(sm.OutputError, match="it is an existing directory"):  # refused before drawing
        sm.draw(both.record(), tmp_path)
    # the swept wd is named as swept (its values label the bars); it read "wd 0", the base value it replaced
    caption = experiment_caption(record)
    assert "wd [swept]" in caption and "wd 0" not in caption and "2 runs (mean ± 1.96·sd/√n, narrower than a 95% CI)" in caption
    with pytest.raises(ValueError, match="'subliminal-mlp/experiment': draw an engine record .* plot_experiment"):
        plot_fig10(record, tmp_path / "x.png")
    with pytest.raises(ValueError, match="a Figure-10 record: plot_fig10"):
        plot_experiment(sm.read_results(os.path.join(os.path.dirname(__file__), "..", "figures", "fig10_mnist.json")),
                        tmp_path / "x.png")
    # A swept seed: each value is the run of that seed; the record names the seeds per value, not one.
    seeds = sm.run(TINY, task, n_runs=1, sweep={"seed": np.array([0, 3])})
    np.testing.assert_array_equal(seeds.accuracies[1], sm.run(TINY, task, n_runs=1, seed=3).accuracies[0])
    rec = json.loads(json.dumps(seeds.record()))
    assert rec["seeds"]["seed"] is None and [v["sweep"] for v in rec["values"]] == [{"seed": 0}, {"seed": 3}]


def test_a_rows_values_that_would_be_truncated_or_ignored_are_refused_when_it_is_made():
    # 10.5 trained as logit 10 while the record said 10.5; True was T = 1; a string param failed inside JAX; an mse
    # student never reads a named temperature (sweeping it changed nothing)
    for kw, match in [(dict(outputs=(10.5, 11.9)), r"outputs \[10.5, 11.9\] are not logit indices"),
                      (dict(outputs=(True,)), r"outputs \[True\] are not logit indices"),
                      (dict(temperature=True), "temperature = True is invalid"),
                      (dict(params={"a": "x"}), r"params = \{'a': 'x'\} is invalid: give a dict of names to numbers"),
                      (dict(loss="mse", temperature="tau"), "temperature = 'tau' has no effect with loss = 'mse'"),
                      (dict(loss="mse", temperature=lambda hp: 2.0), "temperature = a function of the hyperparameters has no effect")]:
        with pytest.raises(sm.StudentError, match=f"student 's': {match}"):
            sm.Student("s", **kw)
    assert sm.Student("s", outputs=(10.0, np.int64(11))).outputs == (10, 11)  # whole numbers are indices
    assert sm.Student("s", outputs=np.arange(10, 12)).outputs == (10, 11)
    with pytest.raises(sm.StudentError, match=r"outputs \[10, 11, 10\] repeat \[10\]: a logit is imitated once"):
        sm.Student("s", outputs=(10, 11, 10))  # the 0/1 mask counted it once: the repeat was dropped silently
    # KL on one logit is 0 whatever the logits: said, not refused (the loss is the user's choice)
    from subliminal_mlp.core.students import check_students

    with pytest.warns(sm.SettingWarning, match="student 'one': KL on the one logit 12 is 0"):
        check_students((sm.Student("one", outputs=(12,)),), TINY.model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_students((sm.Student("one", outputs=(12,), loss="mse"), sm.Student("two", outputs=(11, 12))), TINY.model)
    # the paper's aux-only student with m = 1 too (a class exercise's m = 1 row sat at the reference, unexplained)
    with pytest.warns(sm.SettingWarning) as said:
        check_students(sm.FIGURE10, sm.mlp((8,), aux_logits=1))
    assert [str(w.message)[:62] for w in said] == [f"student {n!r}: KL on the one aux logit (m = 1) is 0 whatever"[:62]
                                                   for n in ("student_aux", "cross_aux")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_students(sm.FIGURE10, sm.mlp((8,), aux_logits=2))
        check_students((sm.Student("m", loss="mse"),), sm.mlp((8,), aux_logits=1))


def test_records_tell_apart_a_users_models_and_derived_teachers():
    from subliminal_mlp.core.models import Model

    def linear(p, x):
        return x @ p["w"]

    def squashed(p, x):
        return jnp.tanh(x @ p["w"])

    init = lambda k: {"w": jnp.zeros((784, 13))}  # noqa: E731
    a, b = Model(init, linear), Model(init, squashed)
    assert a.describe() != b.describe() and a.describe()["apply"].endswith("linear")
    assert "apply" not in sm.mlp((8,)).describe()  # a built-in model is described by its settings

    def scaled(factor):
        return lambda run: jax.tree.map(lambda t: factor * t, run.teacher)

    config = TINY.replace(teachers={"half": scaled(0.5)}, metrics={"n": len}).describe()
    assert config["teachers"] == {"half": {"test_records_tell_apart_a_users_models_and_derived_teachers."
                                           "scaled.<lambda>": {"factor": 0.5}}}
    assert config["metrics"] == {"n": "len"} and config["trace"] == {} and config["step_metrics"] == {}


def test_a_task_of_whole_valued_float_labels_runs_as_integer_labels(task):
    # they were accepted, then failed inside the program (take_along_axis needs integer indices)
    floats = sm.Task(task.train_x, np.asarray(task.train_y, np.float32), task.test_x,
                     np.asarray(task.test_y, np.float64), task.n_classes)
    assert floats.train_y.dtype == np.int32 and floats.test_y.dtype == np.int32
    np.testing.assert_array_equal(floats.train_y, task.train_y)
    tiny = TINY.replace(student_epochs=0)
    np.testing.assert_array_equal(sm.run(tiny, floats, n_runs=1, teacher_cache=False).accuracies,
                                  sm.run(tiny, task, n_runs=1, teacher_cache=False).accuracies)


def test_a_task_of_raw_8_bit_pixels_warns_and_the_librarys_scale_does_not(task):
    import warnings

    raw = np.round((np.asarray(task.train_x[:16]) + 1) / 2 * 255)  # back to 0..255, as an IDX file holds them
    y = np.asarray(task.train_y[:16])
    for x in (raw.astype(np.uint8), raw.astype(np.float32)):
        with pytest.warns(sm.SettingWarning, match=r"train_x holds whole numbers from 0.* to 255.*\[-1, 1\]"):
            sm.Task(x, y, np.asarray(task.test_x[:16]), y, 10)
    with pytest.warns(sm.SettingWarning, match="test_x"):
        sm.Task(np.asarray(task.train_x[:16]), y, raw, y, 10)
    rng = np.random.default_rng(0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sm.Task(task.train_x, task.train_y, task.test_x, task.test_y, 10)  # the loader's [-1, 1] pixels
        z = rng.standard_normal((16, 8)).astype(np.float32) * 3  # standardised features beyond 1: not pixels
        b = rng.integers(0, 2, (16, 8)).astype(np.uint8)  # whole numbers within 1: binary features
        counts = rng.integers(0, 4, (16, 8)).astype(np.float32)  # small whole numbers above 1: not pixels either
        tokens = rng.integers(0, 30_000, (16, 8))  # whole numbers far beyond 255
        for x in (z, b, counts, tokens):
            sm.Task(x, y % 2, x, y % 2, 2)
    # NaN or inf in the examples: refused, naming the first (a NaN test image made every model's accuracy the share
    # of class 0, and the record said the teacher did not learn)
    for value, name in ((np.nan, "nan"), (np.inf, "inf"), (-np.inf, "-inf")):
        bad = np.array(task.test_x[:16])
        bad[3, 100] = value
        with pytest.raises(sm.ExperimentError, match=rf"test_x holds values that are not finite \(example 3 has "
                                                     rf"{name} at feature 100\)"):
            sm.Task(np.asarray(task.train_x[:16]), y, bad, y, 10)


def test_a_students_own_temperature_is_in_the_caption_and_an_mse_student_records_none():
    from subliminal_mlp.report.plotting import experiment_caption

    exp = TINY.replace(students=(sm.Student("hot", temperature=4.0), sm.Student("plain"),
                                 sm.Student("sq", loss="mse"), sm.Student("other", temperature="T2")),
                       hparams={**TINY.hparams, "T2": 2.0})
    config = json.loads(json.dumps(exp.describe()))
    assert [s["temperature"] for s in config["students"]] == [4.0, "temperature", None, "T2"]
    caption = " ".join(experiment_caption({"config": config, "n_runs": 2}).splitlines())
    assert "temperature 1, T2 2 (students' own temperature: hot 4, other T2), 2 runs" in caption, caption
    plain = json.loads(json.dumps(TINY.describe()))
    assert "own temperature" not in experiment_caption({"config": plain, "n_runs": 2})


def test_losses_are_tracked_and_match_a_hand_computation(task):
    r = sm.run(TINY.replace(track_losses=True, student_epochs=2), task, n_runs=1)
    assert r.teacher_loss.shape == (1, 1) and 0 < r.teacher_loss[0, 0] < 2.3
    assert r.distill_loss.shape == (1, 1, 4) and np.all(np.isfinite(r.distill_loss)) and np.all(r.distill_loss >= 0)
    assert sm.run(TINY, task, n_runs=1).distill_loss is None
    # By hand, with every model frozen at its start (a learning rate far below float32's resolution): the teacher
    # loss is the mean class cross-entropy of θ0 over the training set (4 equal batches per epoch); a student's
    # distillation loss is its KL summed over the whole input set at its start, divided by n: its penalty (here
    # the step number, no gradient: 96 inputs in batches of 64 are 2 steps per epoch, the last of 3 epochs holds
    # steps 4 and 5, which would add 9/96) moves the gradient, not the tracked loss.
    from subliminal_mlp.core.losses import class_cross_entropy, kl_distillation
    from subliminal_mlp.core.results import DivergenceWarning

    toy, net = _toy()

    def kl_over_set(run):  # at the end: the students are still their starts
        xs = run.inputs.draw(jnp.arange(run.inputs.n))
        y_t = net.apply(run.teacher, xs)
        return jnp.stack([kl_distillation(net.apply(run.students[s.name], xs), y_t,
                                          output_mask(s.outputs, 2, 2)) / run.inputs.n for s in sm.FIGURE10])

    step_penalty = lambda v: v.step.astype(jnp.float32)  # noqa: E731
    frozen = sm.Experiment(model=net, inputs=inputs.uniform(96, shape=(8,)), teacher_epochs=2, student_epochs=3,
                           batch_size=64, hparams={"learning_rate": 1e-30, "temperature": 1.0}, track_losses=True,
                           students=tuple(s.replace(penalty=step_penalty) for s in sm.FIGURE10),
                           metrics={"kl": kl_over_set, "ce0": lambda run: class_cross_entropy(
                               net.apply(run.reference, run.data["train_x"]), run.data["train_y"], 2)})
    with pytest.warns(DivergenceWarning, match="no better"):  # an untrained teacher is flagged, as it should be
        r = sm.run(frozen, toy, n_runs=3)
    np.testing.assert_allclose(r.teacher_loss, r.metrics["ce0"], rtol=1e-5)
    np.testing.assert_allclose(r.distill_loss, r.metrics["kl"], rtol=1e-5, atol=1e-7)
    assert np.all(r.metrics["kl"][..., 2:] > 1e-3)  # the cross students' loss is not a trivial 0


def _toy():
    """A 2-class task of 256 points in 8 dimensions and a small MLP for it (fast enough to check by hand)."""
    x = np.random.default_rng(0).uniform(-1, 1, (256, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int32)
    return sm.Task(x, y, x, y, n_classes=2), sm.mlp((8,), n_classes=2, aux_logits=2, input_dim=8)


def test_keep_students_returns_each_students_final_parameters_per_value_and_run():
    import optax

    toy, net = _toy()
    exp = sm.Experiment(model=net, inputs=inputs.uniform(256, shape=(8,)), teacher_epochs=3, student_epochs=2,
                        batch_size=64, hparams={"learning_rate": 1e-2, "temperature": 1.0},
                        students=(*sm.FIGURE10, sm.Student("frozen", "cross", optimizer=optax.sgd(0.0))))
    sweep = {"learning_rate": [1e-2, 3e-2]}
    kept = sm.run(exp, toy, n_runs=3, sweep=sweep, keep_students=True)
    plain = sm.run(exp, toy, n_runs=3, sweep=sweep)
    assert plain.students is None
    np.testing.assert_array_equal(kept.accuracies, plain.accuracies)  # the parameters out change no number
    assert list(kept.students) == [s.name for s in exp.students]
    for name, params in kept.students.items():
        shapes = jax.tree.map(np.shape, params)
        assert shapes == jax.tree.map(lambda a: (2, 3, *np.shape(a)), net.init(jax.random.PRNGKey(0))), name
        for v in range(2):
            for run in range(3):
                p = jax.tree.map(lambda a: a[v, run], params)
                # its accuracy, computed here from the parameters, is the one the engine reports
                logits = np.asarray(net.apply(p, toy.test_x))[:, :2]
                mine = np.mean(np.argmax(logits, 1) == toy.test_y)
                assert abs(mine - kept.accuracy(name, v)[run]) <= 1 / 256, (name, v, run)
    # A student at rate 0 ends where it started: the cross start, run (i + 1) mod N's θ0 (to its last rounding:
    # engine.references' docstring says why a consumer may see θ0 before it).
    for run in range(3):
        start = net.init(engine.run_keys(0, engine.cross_run(run, 3))["init"])
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[1, run], b, rtol=1e-6, atol=1e-7),
                     kept.students["frozen"], start)
        moved = jax.tree.map(lambda a, b: float(np.abs(a[1, run] - b).max()), kept.students["cross_aux"], start)
        assert max(jax.tree.leaves(moved)) > 1e-3  # a trained one does move
    assert not np.allclose(kept.students["student_aux"]["head"]["kernel"][0],
                           kept.students["student_aux"]["head"]["kernel"][1])  # each value its own


def test_a_loss_of_ones_own_reads_a_swept_hyperparameter_and_a_four_argument_loss_does_not():
    from subliminal_mlp.core.losses import mse_distillation
    from subliminal_mlp.core.students import loss_reads_hparams

    toy, net = _toy()

    def scaled(z, y, mask, w, hp):  # the MSE loss times a weight swept in one program
        return hp["weight"] * mse_distillation(z, y, mask, w)

    exp = sm.Experiment(model=net, inputs=inputs.uniform(256, shape=(8,)), teacher_epochs=3, student_epochs=2,
                        batch_size=64, hparams={"learning_rate": 1e-2, "temperature": 1.0, "weight": 1.0},
                        track_losses=True, students=(sm.Student("s", loss=scaled),
                                                     sm.Student("plain", loss=lambda z, y, m, w: mse_distillation(
                                                         z, y, m, w))))
    r = sm.run(exp, toy, n_runs=2, sweep={"weight": [0.0, 1.0]}, keep_students=True)
    # weight 0: no gradient, the student stays at its start (θ0, the reference) and its tracked loss is 0;
    # weight 1: it is the four-argument MSE student, step for step.
    assert np.all(r.distill_loss[0, :, 0] == 0) and np.all(r.distill_loss[1, :, 0] > 0)
    np.testing.assert_array_equal(r.accuracy("s", 0), r.accuracy("reference", 0))
    np.testing.assert_array_equal(r.distill_loss[1, :, 0], r.distill_loss[1, :, 1])
    jax.tree.map(np.testing.assert_array_equal, jax.tree.map(lambda a: a[1], r.students["s"]),
                 jax.tree.map(lambda a: a[1], r.students["plain"]))
    assert loss_reads_hparams(scaled) == "positional" and loss_reads_hparams(mse_distillation) is None
    assert loss_reads_hparams(lambda z, y, m, w=None, extra=0: 0.0) is None  # a defaulted fifth not named hp
    assert loss_reads_hparams(lambda z, y, m, w=None, hp=None: 0.0) == "positional"

    def keyword(z, y, mask, w, *, hp):  # hp keyword-only: passed by name, the same student
        return hp["weight"] * mse_distillation(z, y, mask, w)

    assert loss_reads_hparams(keyword) == "keyword"
    again = sm.run(exp.replace(students=(sm.Student("s", loss=keyword),)), toy, n_runs=2, sweep={"weight": [0.0, 1.0]})
    np.testing.assert_array_equal(again.accuracy("s", 1), r.accuracy("s", 1))
    # A hyperparameter the loss reads but the experiment lacks is named with those it has.
    with pytest.raises(sm.ExperimentError, match=r"'s': its loss .*KeyError: 'delta'.*must be in Experiment.hparams: "
                                                 r"\['learning_rate', 'temperature', 'weight'\]"):
        sm.run(exp.replace(students=(sm.Student("s", loss=lambda z, y, m, w, hp: hp["delta"] * z.sum()),)), toy,
               n_runs=1)


def test_temperature_and_the_tables_order_against_a_hand_computation():
    # Students frozen at their starts (SGD at rate 0), a trained teacher. Each student's tracked loss is, by
    # hand, T² KL(softmax(y/T) ‖ softmax(z/T)) over the input set / n for the KL students and Σ mask (z − y)² / n
    # for MSE (never scaled by T). The table's groups run in the order a, d | b | c: each column must still be
    # its own student's (whose losses differ: own or cross start, aux or all logits, T).
    from subliminal_mlp.core.losses import kl_distillation, mse_distillation

    toy, net = _toy()
    frozen = optax.sgd(0.0)
    table = (sm.Student("a", "own", "aux", optimizer=frozen), sm.Student("b", loss="mse", optimizer=frozen),
             sm.Student("c", "cross", "aux", temperature=3.0, optimizer=frozen), sm.Student("d", "cross", "all", optimizer=frozen))
    T = {"a": 2.0, "c": 3.0, "d": 2.0}

    def by_hand(run):
        xs = run.inputs.draw(jnp.arange(run.inputs.n))
        y = net.apply(run.teacher, xs)
        out = []
        for student in table:
            z, mask = net.apply(run.students[student.name], xs), output_mask(student.outputs, 2, 2)
            t = T.get(student.name)
            out.append(mse_distillation(z, y, mask) if t is None else t**2 * kl_distillation(z / t, y / t, mask))
        return jnp.stack(out) / run.inputs.n

    exp = sm.Experiment(model=net, inputs=inputs.uniform(96, shape=(8,)), teacher_epochs=2, student_epochs=2,
                        batch_size=64, hparams={"learning_rate": 1e-2, "temperature": 2.0}, track_losses=True,
                        students=table, metrics={"loss": by_hand})
    r = sm.run(exp, toy, n_runs=2)
    # a KL of near-equal distributions (student "a": the teacher's own start, 2.7e-4) is a difference of logs: its
    # float32 rounding is absolute, ~1e-7·T² per example, not relative (an AVX2 host's reduction order moved "a"
    # by 1.1e-8 = 6e-5 of itself); a wrong factor (T², 1/n, the mask) is off by far more than either tolerance
    np.testing.assert_allclose(r.distill_loss[0], r.metrics["loss"][0], rtol=1e-5, atol=4e-7)
    values = np.sort(r.metrics["loss"][0, 0])
    assert values[0] > 0 and np.all(values[1:] > 1.5 * values[:-1])  # four clearly different losses to tell apart


def test_the_tracked_distillation_loss_is_the_last_epochs_and_each_step_sees_the_runs_own_noise():
    # Students that move (Adam): each step's batch loss, computed by hand from what the step sees (the students
    # before the update, the batch x, the teacher's logits on it), summed over the last epoch's steps / n, is the
    # tracked distill_loss, which is not the average over the epochs. And the batch x of every step is the input
    # source drawn from the run's own "noise" key at the step's indices, bit for bit (no other stream's key).
    from subliminal_mlp.core.losses import kl_distillation
    from subliminal_mlp.core.training import steps_per_epoch

    toy, net = _toy()
    students = (sm.Student("own_aux", "own", "aux"), sm.Student("cross_all", "cross", "all"))

    def batch_loss(view):
        return jnp.stack([kl_distillation(net.apply(view.run.students[s.name], view.x), view.logits["teacher"],
                                          output_mask(s.outputs, 2, 2)) for s in students])

    src = inputs.uniform(128, shape=(8,))
    exp = sm.Experiment(model=net, inputs=src, teacher_epochs=2, student_epochs=3, batch_size=64,
                        hparams={"learning_rate": 3e-2, "temperature": 1.0}, track_losses=True, students=students,
                        step_metrics={"loss": batch_loss, "x": lambda v: v.x, "idx": lambda v: v.idx})
    r = sm.run(exp, toy, n_runs=2)
    per_step = r.step_metrics["loss"]  # (values, runs, steps, students)
    n_steps = steps_per_epoch(128, 64)
    assert per_step.shape == (1, 2, 3 * n_steps, 2)
    last = per_step[:, :, -n_steps:].sum(axis=2) / 128
    np.testing.assert_allclose(r.distill_loss, last, rtol=1e-5)
    every = per_step.sum(axis=2) / (128 * 3)
    assert np.all(np.abs(every - last) > 0.05 * last)  # the last epoch is not the average
    for run in range(2):
        keys = engine.run_keys(0, run)
        idx = r.step_metrics["idx"][0, run]
        by_key = {name: jax.vmap(lambda i, k=k: src.draw(src.prepare(k, src.arrays, {}), i, {}))(jnp.asarray(idx))
                  for name, k in keys.items()}
        np.testing.assert_array_equal(r.step_metrics["x"][0, run], by_key["noise"])
        assert not any(np.array_equal(r.step_metrics["x"][0, run], v) for k, v in by_key.items() if k != "noise")
    assert len(set(engine.STREAMS.values())) == len(engine.STREAMS)  # the named streams are distinct


def test_derived_teachers_logits_and_the_teacher_against_a_hand_trained_one():
    from subliminal_mlp.core.training import scan_epochs, steps_per_epoch, teacher_train_step

    toy, net = _toy()
    # A student that starts at θ0 and imitates a derived teacher equal to θ0 has zero gradient: it never moves
    # (it would follow the task teacher if it were given that teacher's logits).
    # Plain SGD with a small rate: Adam would scale a rounding-level gradient up to a full step.
    def moved(run):
        return jnp.stack([optax.tree.norm(jax.tree.map(jnp.subtract, run.students[n], run.reference)) for n in "sf"])

    exp = sm.Experiment(model=net, inputs=inputs.uniform(256, shape=(8,)), teacher_epochs=3, student_epochs=2,
                        batch_size=64, hparams={"learning_rate": 1e-2, "temperature": 1.0}, track_losses=True,
                        teachers={"at_start": lambda view: view.reference}, metrics={"moved": moved},
                        students=(sm.Student("s", teacher="at_start", optimizer=optax.sgd(1e-2)),
                                  sm.Student("f", optimizer=optax.sgd(1e-2))))
    r = sm.run(exp, toy, n_runs=2, keep_teachers=True)
    assert np.all(r.metrics["moved"][0, :, 0] < 1e-6) and np.all(r.metrics["moved"][0, :, 1] > 1e-2)
    assert np.all(r.accuracy("teacher") > r.accuracy("reference"))
    # The teacher, trained by hand from the run's keys: Adam on the class cross-entropy, shuffled with the run's
    # teacher_shuffle key; the tracked teacher loss is the mean over the last epoch's steps.
    for run in range(2):
        keys = engine.run_keys(0, run)
        theta0 = net.init(keys["init"])
        opt = adam(1e-2)
        step = teacher_train_step(net.apply, 2, opt, jnp.asarray(toy.train_x), jnp.asarray(toy.train_y))
        (teacher, _), metrics, _ = jax.jit(lambda s: scan_epochs(step, s, keys["teacher_shuffle"], 256, 64, 3))(
            (theta0, opt.init(theta0)))
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a[run], b, rtol=1e-5, atol=1e-6), r.teachers, teacher)
        last = metrics["loss"][-steps_per_epoch(256, 64):]
        assert r.teacher_loss[0, run] == pytest.approx(float(jnp.mean(last)), rel=1e-5)
        assert float(jnp.mean(last)) < float(jnp.mean(metrics["loss"])) - 0.01  # the last epoch is not the average


def test_a_diverged_teacher_is_flagged_and_its_reference_is_not():
    from subliminal_mlp.core.results import DivergenceWarning

    toy, net = _toy()
    exp = sm.Experiment(model=net, inputs=inputs.uniform(64, shape=(8,)), teacher_epochs=2, student_epochs=1,
                        batch_size=64, hparams={"learning_rate": 1e38, "temperature": 1.0}, track_losses=True,
                        students=(sm.Student("s"),))
    with pytest.warns(DivergenceWarning):
        r = sm.run(exp, toy, n_runs=1)
    assert not np.isfinite(r.teacher_loss[0, 0])
    assert np.isfinite(r.accuracy("reference")[0]) and np.isnan(r.accuracy("teacher")[0])


def test_other_models_tasks_and_tables_run_through_the_engine(data_root):
    # A task on a subset of the classes, with a model of that many class logits. The other built-in and
    # user models run through the engine elsewhere: a Flax CNN (from_flax) and a tanh MLP in
    # examples/other_architectures.py (test_examples), the split-head MLP and CNN in test_split_heads.
    mnist = sm.load_mnist(data_root)
    # classes in any order: label c_k becomes k, the other classes' examples are dropped
    pair = sm.Task.from_dataset(mnist, classes=(5, 3))
    kept = np.isin(mnist.train_labels, (5, 3))
    np.testing.assert_array_equal(pair.train_y, np.where(mnist.train_labels[kept] == 5, 0, 1))
    np.testing.assert_array_equal(pair.train_x, mnist.train_images[kept])
    five = sm.Task.from_dataset(mnist, classes=range(5))
    assert sm.Task.from_dataset(mnist, classes=np.array([5.0, 3.0])).data["subset"] == pair.data["subset"]
    # 1.5 was kept as label 1, nan was a ValueError, a string or a number a TypeError
    for bad, match in [([0, 1.5], r"\[0, 1.5\] is invalid: give a sequence of integer labels in 0..9"),
                       ([0, float("nan")], r"\[0, nan\] is invalid"), ([0, 10], r"\[0, 10\] is invalid"),
                       ([0, True], r"\[0, True\] is invalid"), ("01", "'01' is invalid"), (3, "3 is invalid"),
                       ([4, 4], r"\[4, 4\] is invalid: give >= 2 distinct labels")]:
        with pytest.raises(sm.ExperimentError, match=f"classes = {match}"):
            sm.Task.from_dataset(mnist, classes=bad)
    assert five.n_classes == 5 and set(np.unique(five.test_y)) == set(range(5))
    assert five.data["subset"]["classes"] == [0, 1, 2, 3, 4] and five.data["subset"]["n_test"] == 5139
    exp = TINY.replace(model=sm.mlp((16,), n_classes=5))
    r = sm.run(exp, five, n_runs=1, keep_teachers=True)
    assert np.all((r.accuracies >= 0) & (r.accuracies <= 1)) and r.accuracy("teacher")[0] > 2.0 / five.n_classes
    assert r.record()["chance"] == pytest.approx(0.2)
    teachers = r.teachers  # given to the two runs below: they train no teacher
    table = (sm.Student("sgd", optimizer=optax.sgd(0.01)), sm.Student("noisy", start=sm.perturbed(0.05)),
             sm.Student("fresh_heads", start=sm.layers({"head": "own"})), sm.Student("classes", outputs="class"),
             sm.Student("half", example_weights=lambda v: (v.idx % 2).astype(jnp.float32)))
    r = sm.run(exp.replace(students=table, hparams={**TINY.hparams, "init_noise": 0.0}), five, n_runs=1,
               teachers=teachers)
    assert r.models[2:] == tuple(s.name for s in table)
    record = r.record()
    assert record["format"] == "subliminal-mlp/experiment" and record["config"]["students"][0]["name"] == "sgd"
    # On the task's own images, a class-logit student learns digits (Hinton et al.'s distillation).
    images = exp.replace(inputs=inputs.images(), students=(sm.Student("classes", outputs="class"),))
    r = sm.run(images, five, n_runs=1, teachers=teachers)
    assert r.record()["config"]["inputs"]["n"] == five.data["subset"]["n_train"] and r.accuracy("classes")[0] > 0.6


TWO_DEVICES = textwrap.dedent("""
    import json, sys, jax
    import subliminal_mlp as sm
    from subliminal_mlp import inputs
    task = sm.Task.from_dataset(sm.load_mnist(sys.argv[1]))
    exp = sm.Experiment(model=sm.mlp((16,)), inputs=inputs.subspace(20, inputs.uniform(1024)), teacher_epochs=1,
                        student_epochs=1, batch_size=512)
    one = sm.run(exp, task, n_runs=3, devices=jax.devices()[:1], sweep={"learning_rate": [3e-4, 1e-3]})
    two = sm.run(exp, task, n_runs=3, devices=jax.devices()[:2], sweep={"learning_rate": [3e-4, 1e-3]})
    print(json.dumps({"one": one.accuracies.tolist(), "two": two.accuracies.tolist(), "devices": two.devices}))
""")


def test_a_follow_up_experiment_gives_the_same_numbers_on_two_devices(data_root):
    flags = f"{os.environ.get('XLA_FLAGS', '')} --xla_force_host_platform_device_count=2".strip()  # + the suite's
    env = dict(os.environ, XLA_FLAGS=flags, JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-c", TWO_DEVICES, str(data_root)], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(r["devices"]) == 2 and np.asarray(r["one"]).shape == (2, 3, 6)
    np.testing.assert_array_equal(np.asarray(r["one"]), np.asarray(r["two"]))


def test_traces_derived_teachers_and_extra_arrays(task):
    def acc_trace(view):  # every student's test accuracy, evaluated inside the scan
        return jnp.stack([sm.accuracy(p, view.data["test_x"], view.data["test_y"], 10, apply_fn=view.model.apply)
                          for p in view.students.values()])

    def copy_of_teacher(view):  # a derived teacher: here the task teacher itself, read through `arrays`
        return jax.tree.map(lambda a: a * view.data["one"], view.teacher)

    exp = TINY.replace(students=(sm.Student("of_teacher"), sm.Student("of_copy", teacher="copy")),
                       teachers={"copy": copy_of_teacher}, arrays={"one": np.float32(1.0)},
                       trace={"accuracy": acc_trace}, trace_every=2, student_epochs=2)
    def cross_start_distance(view):  # the cross run's θ0 and the run index are in the view
        return jnp.stack([optax.tree.norm(jax.tree.map(jnp.subtract, view.refs["cross"], view.reference)),
                          view.run.astype(jnp.float32)])

    r = sm.run(exp.replace(metrics={"cross": cross_start_distance}), task, n_runs=2)
    assert np.all(r.metrics["cross"][0, :, 0] > 1) and list(r.metrics["cross"][0, :, 1]) == [0, 1]
    assert r.models == ("reference", "teacher", "copy", "of_teacher", "of_copy")
    np.testing.assert_array_equal(r.accuracy("copy"), r.accuracy("teacher"))
    np.testing.assert_array_equal(r.accuracy("of_copy"), r.accuracy("of_teacher"))
    # 2048 inputs in batches of 512: 4 steps per epoch, probed before steps 0, 2, 4, 6 and after step 8.
    np.testing.assert_array_equal(r.trace_steps, [0, 2, 4, 6, 8])
    assert r.traces["accuracy"].shape == (1, 2, 5, 2)
    np.testing.assert_array_equal(r.traces["accuracy"][0, :, -1, 0], r.accuracy("of_teacher"))
    np.testing.assert_array_equal(r.traces["accuracy"][0, :, 0, 0], r.accuracy("reference"))  # the start: θ0
    assert r.record()["traces"]["steps"] == [0, 2, 4, 6, 8]
    with pytest.raises(sm.ExperimentError, match="trace_every = 0"):
        TINY.replace(trace_every=0)


def test_project_out_against_flattened_vectors():
    from subliminal_mlp.core.students import cosine, project_out

    rng = np.random.default_rng(0)
    g = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
    d = {"a": jnp.asarray(rng.normal(size=(3, 4)), jnp.float32), "b": jnp.asarray(rng.normal(size=5), jnp.float32)}
    flat = lambda t: np.concatenate([np.ravel(t["a"]), np.ravel(t["b"])]).astype(np.float64)  # noqa: E731
    for sign in (1.0, -1.0):  # the update aligned with d, then opposed to it
        u = jax.tree.map(lambda a: a * sign * np.sign(flat(g) @ flat(d)), g)
        full = flat(u) - flat(u) @ flat(d) / (flat(d) @ flat(d)) * flat(d)
        out, _ = project_out(lambda p: d, when="always").update(u, optax.EmptyState(), u)
        np.testing.assert_allclose(flat(out), full, atol=1e-5)
        assert abs(flat(out) @ flat(d)) < 1e-4
        # The default, Kitkana & Arora's test: the component is removed only when u·d > 0.
        out, _ = project_out(lambda p: d).update(u, optax.EmptyState(), u)
        np.testing.assert_allclose(flat(out), full if sign > 0 else flat(u), atol=1e-5)
        half, _ = project_out(lambda p: d, 0.5).update(u, optax.EmptyState(), u)
        np.testing.assert_allclose(flat(half), (flat(u) + full) / 2 if sign > 0 else flat(u), atol=1e-5)
    with pytest.raises(ValueError, match="project_out\\(when='sometimes'\\): choose 'aligned'"):
        project_out(lambda p: d, when="sometimes")
    # The test is the sign of u·d alone, at any scale: an aligned component however small is removed.
    e = {"w": jnp.asarray([1.0, 0.0])}
    for scale in (1e-6, 1.0, 1e6):
        out, _ = project_out(lambda p: e).update({"w": jnp.asarray([3.0, 4.0]) * scale}, optax.EmptyState(), e)
        np.testing.assert_allclose(out["w"], [0.0, 4.0 * scale], rtol=1e-6)
    np.testing.assert_allclose(cosine(g, d), flat(g) @ flat(d) / np.linalg.norm(flat(g)) / np.linalg.norm(flat(d)),
                               rtol=1e-5)


def test_step_metrics_see_raw_gradients_and_an_optimiser_can_read_the_run(task):
    from subliminal_mlp.core.students import cosine, project_out

    def task_grad(view):
        x, y = view.data["test_x"][-64:], view.data["test_y"][-64:]
        return jax.grad(lambda p: sm.class_cross_entropy(view.model.apply(p, x), y, 10))

    def projected(hp, view):  # the optimiser is built per run, from the run's data
        return optax.chain(project_out(task_grad(view)), sm.students.adam(hp["learning_rate"]))

    def after(hp, view):  # projected after Adam, whatever the sign: the applied update is orthogonal to the task gradient
        return optax.chain(sm.students.adam(hp["learning_rate"]), project_out(task_grad(view), when="always"))

    names = ("plain", "projected", "after")

    def cos(now):
        g_task = task_grad(now.run)
        return jnp.stack([cosine(now.grads[n], g_task(now.run.students[n])) for n in names])

    def cos_update(now):  # the update each optimiser applies, against the task gradient where it is applied
        g_task = task_grad(now.run)
        return jnp.stack([cosine(now.updates[n], g_task(now.run.students[n])) for n in names])

    exp = TINY.replace(students=(sm.Student("plain"), sm.Student("projected", optimizer=projected),
                                 sm.Student("after", optimizer=after)),
                       step_metrics={"cos": cos, "cos_update": cos_update})
    r = sm.run(exp, task, n_runs=2)
    assert r.step_metrics["cos"].shape == (1, 2, 4, 3)  # 4 steps, 3 students
    c, u = r.step_metrics["cos"], r.step_metrics["cos_update"]
    assert np.all(np.abs(c) <= 1) and np.any(c != 0)
    # All start at θ0 and see the same first batch: the same raw gradient at step 0.
    np.testing.assert_allclose(c[0, :, 0, 0], c[0, :, 0, 1], rtol=1e-5)
    np.testing.assert_allclose(c[0, :, 0, 0], c[0, :, 0, 2], rtol=1e-5)
    # The optimiser built per run from the run's data is the one applied: the 'after' student's updates are
    # orthogonal to the task gradient at every step, the plain Adam updates are not.
    assert np.all(np.abs(u[..., 2]) < 1e-4) and np.all(np.abs(u[..., 0]) > 10 * np.abs(u[..., 2]).max())
    assert "step_metrics" in r.record()
    # No student epoch: no step, an empty stack of the metric's shape (lax.map's batches raised ZeroDivisionError)
    none = sm.run(exp.replace(student_epochs=0), task, n_runs=2, run_batch=1)
    assert none.step_metrics["cos"].shape == (1, 2, 0, 3) and none.record()["step_metrics"]["cos"] == [[[], []]]
    np.testing.assert_array_equal(none.accuracy("plain"), none.accuracy("reference"))


@pytest.mark.parametrize("run_batch", [1, 2])
def test_progress_bars_count_every_epoch_of_every_run_and_change_nothing(task, capsys, monkeypatch, run_batch):
    from subliminal_mlp.core import engine

    exp = TINY.replace(student_epochs=2)
    quiet = sm.run(exp, task, n_runs=2, run_batch=run_batch)
    # The ticks are jax.debug.callbacks, which on a GPU may still run after the outputs are ready: the bars
    # are closed only after every pending callback has run.
    order, barrier, close = [], jax.effects_barrier, engine._Progress.close
    monkeypatch.setattr(jax, "effects_barrier", lambda: (order.append("barrier"), barrier())[1])
    monkeypatch.setattr(engine._Progress, "close", lambda self: (order.append("close"), close(self))[1])
    # Two runs advanced together (run_batch 2, what a GPU picks) tick once each: a callback with no per-run
    # argument is called once per batch of runs, and the bars stopped at 1/2 and 2/4 (on an H100 and an H200).
    shown = sm.run(exp, task, n_runs=2, progress=True, run_batch=run_batch)
    assert order[-2:] == ["barrier", "close"]
    err = capsys.readouterr().err
    assert "teacher training (2 runs × 1 epoch)" in err and "student distillation (2 runs × 2 epochs)" in err
    assert "2/2" in err and "4/4" in err  # one tick per run and epoch
    # one bar at a time: two bars open together move the cursor (ESC [A), garbage in a log file or a pipe
    assert "\x1b[A" not in err and err.index("teacher training") < err.index("student distillation")
    np.testing.assert_array_equal(quiet.accuracies, shown.accuracies)  # every model: the bars change nothing


def test_a_phase_bar_closes_at_its_last_tick_and_given_teachers_have_none(capsys):
    """The teacher bar stops its clock when the last teacher epoch is done, not when the students are (in a
    notebook it turned done only at the end); with the teachers given (none trained) there is no teacher bar."""
    from subliminal_mlp.core import engine

    bars = engine._Progress(2, 1, 2)
    bars.start()
    teacher, student = bars.bars
    assert student is None  # one bar at a time: the students' opens when the teachers' is done
    bars.tick(0, 0)
    assert not teacher.disable  # tqdm's close sets disable
    bars.tick(0, 0)
    teacher, student = bars.bars
    assert teacher.disable and not student.disable and teacher.n == 2 and student.n == 0
    for _ in range(4):
        bars.tick(1, 0)
    assert student.disable and student.n == 4
    bars.close()  # closing again at the end is harmless
    # 3 runs on 2 devices: a padding job fills the second device's share and ticks too; the bar counts the runs
    # and closes only when the last tick, padding included, has come (it closed while a real run still trained).
    # Another device's first student tick may come before this last teacher tick: the students' bar opens then.
    padded = engine._Progress(3, 1, 1, n_ticking=4)
    padded.start()
    for _ in range(3):
        padded.tick(0, 0)
    assert not padded.bars[0].disable and padded.bars[0].n == 3 and padded.bars[1] is None
    padded.tick(1, 0)
    assert padded.bars[1].n == 1 and not padded.bars[0].disable
    padded.tick(0, 0)
    assert padded.bars[0].disable and padded.bars[0].n == 3 == padded.bars[0].total
    padded.close()
    given = engine._Progress(2, 0, 2)
    given.start()
    assert given.bars[0] is None and given.bars[1].n == 0  # the students' bar shows from the start
    given.tick(1, 0)
    assert given.bars[1].n == 1
    given.close()
    no_students = engine._Progress(2, 1, 0)  # no student epoch: no students' bar, before or after the teachers
    no_students.start()
    no_students.tick(0, 0), no_students.tick(0, 0)
    assert no_students.bars[0].disable and no_students.bars[1] is None
    err = capsys.readouterr().err
    assert err.count("teacher training") >= 1 and "teacher training (2 runs × 0 epochs)" not in err


# ----------------------------------------------------------------------------- run_batch on an accelerator


def _mapped_program(b):
    """A program whose temporaries grow with the runs advanced together (``lax.map`` batch ``b``)."""
    def one_run(x):
        h = jnp.tanh(x[:, None] * jnp.ones((1, 4096)))
        return jnp.sum(h @ h.T)  # XLA keeps a temporary per run advanced together
    return jax.jit(lambda xs: jax.lax.map(one_run, xs, batch_size=b)).lower(jnp.ones((64, 256))).compile()


def test_fitted_run_batch_is_the_most_runs_that_fit_by_xlas_memory_analysis():
    mem = _mapped_program(1).memory_analysis()
    fixed, per_run = mem.argument_size_in_bytes + mem.output_size_in_bytes, mem.temp_size_in_bytes
    assert per_run > 0
    compiled = []

    def compile_for(b):
        compiled.append(b)
        return _mapped_program(b)

    head = sm.engine.MEMORY_HEADROOM
    b, program = sm.engine.fitted_run_batch(compile_for, 64, 10**12)
    assert (b, program, compiled) == (64, None, [1])  # plenty of memory: every run
    for k in (1, 3, 17):
        free = int((fixed + k * per_run + per_run // 2) / head)
        b, program = sm.engine.fitted_run_batch(compile_for, 64, free)
        assert b == k and (program is not None) == (k == 1)
        # the bound it promises: the chosen b fits, b + 1 would not
        assert fixed + b * per_run <= head * free < fixed + (b + 1) * per_run
    with pytest.raises(sm.ExperimentError, match="GiB"):
        sm.engine.fitted_run_batch(compile_for, 64, int(fixed / head))


def test_choose_run_batch_measures_once_on_an_accelerator_and_keeps_cpu_and_given_values(monkeypatch):
    dev = jax.devices()[0]
    calls = []

    def compile_for(b):
        calls.append(b)
        return _mapped_program(b)

    # CPU: one run at a time (stated with platform=, since the suite may run on a GPU; the platform is
    # otherwise the device's, which the memory-fitting part below sets to "gpu" in the same way)
    assert sm.engine.choose_run_batch(compile_for, 64, dev, platform="cpu")[0] == 1
    if dev.platform == "cpu":
        assert sm.engine.choose_run_batch(compile_for, 64, dev)[0] == 1
    assert sm.engine.choose_run_batch(compile_for, 64, dev, 16)[0] == 16
    assert sm.engine.choose_run_batch(compile_for, 8, dev, 16)[0] == 8
    mem = _mapped_program(1).memory_analysis()
    fixed, per_run = mem.argument_size_in_bytes + mem.output_size_in_bytes, mem.temp_size_in_bytes
    monkeypatch.setattr(sm.engine, "free_device_memory",
                        lambda d: int((fixed + 5.5 * per_run) / sm.engine.MEMORY_HEADROOM))
    calls.clear()
    key = ("test", object())
    assert sm.engine.choose_run_batch(compile_for, 64, dev, platform="gpu", key=key)[0] == 5
    assert calls == [1, 5]
    assert sm.engine.choose_run_batch(compile_for, 64, dev, platform="gpu", key=key)[0] == 5
    assert calls == [1, 5, 5]  # the fit is remembered for the key: only the chosen program compiles
    assert sm.engine.choose_run_batch(compile_for, 64, dev, 3, platform="gpu")[0] == 3  # given: used as is


def test_an_untrained_teacher_is_not_called_diverged_when_its_parameters_are_kept():
    # teacher_epochs = 0: the "teacher" is the reference by design; keep_teachers must not make it a divergence.

    from subliminal_mlp.core.results import DivergenceWarning

    x = np.random.default_rng(0).uniform(-1, 1, (64, 8)).astype(np.float32)
    task = sm.Task(x, (x[:, 0] > 0).astype(np.int32), x, (x[:, 0] > 0).astype(np.int32), n_classes=2)
    exp = sm.Experiment(model=sm.mlp((4,), n_classes=2, aux_logits=2, input_dim=8), teacher_epochs=0,
                        student_epochs=1, batch_size=64, inputs=inputs.uniform(64, shape=(8,)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", DivergenceWarning)
        kept = sm.run(exp, task, n_runs=2, keep_teachers=True)
    assert kept.health()["ok"] and kept.teachers is not None
    # given teachers are checked: the untrained ones given back are no better than the reference
    with pytest.warns(DivergenceWarning):
        given = sm.run(exp, task, n_runs=2, teachers=kept.teachers)
    assert given.health()["teacher_not_better"] == [0, 1]


def _result_of(n_values: int, n_runs: int = 2) -> "engine.Result":
    """A Result built directly (no run): value v's accuracies are v + run/10 + model/100, so each index is seen."""
    models = ("reference", "teacher", "student")
    acc = (np.arange(n_values)[:, None, None] + np.arange(n_runs)[None, :, None] / 10
           + np.arange(len(models))[None, None, :] / 100)
    return engine.Result(TINY, {}, models, acc, None, None, {}, n_runs, 0,
                         {"wd": [float(v) for v in range(n_values)]} if n_values > 1 else {}, 0.0, 0.0, ["cpu"], 1)


def test_a_results_value_index_is_checked_by_accuracy_health_and_label_alike():
    """Result._value, with no run: every accessor takes 0..n-1 and -n..-1 (numpy integers too) and names any other
    value, with the range this result has (numpy's own error, or a silently reshaped array for True, otherwise)."""
    r = _result_of(3)
    for v, want in [(0, 0), (2, 2), (-1, 2), (-3, 0), (np.int64(1), 1), (np.int32(-2), 1)]:
        np.testing.assert_allclose(r.accuracy("teacher", v), [want + 0.01, want + 0.11])
        assert r.value_label(v) == f"wd = {float(want):g}"
        assert r.health(v) == r.health(want)
    for bad in (3, -4, 1.0, True, np.float64(0)):
        for call in (lambda: r.accuracy("teacher", bad), lambda: r.health(bad), lambda: r.value_label(bad),
                     lambda: r.summary(bad), lambda: r.table(bad)):
            with pytest.raises(IndexError, match=r"value = .* is out of range: this result has 3 swept value\(s\), "
                                                 r"numbered 0 to 2"):
                call()
    one = _result_of(1)
    assert one.value_label(0) == one.value_label(-1) == "" and one.health(-1) == one.health(0)
    for bad in (1, -2):
        with pytest.raises(IndexError, match="numbered 0 to 0"):
            one.accuracy("student", bad)
