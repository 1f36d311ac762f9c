"""The fast random numbers and compilation of the hot loops: bit for bit what plain JAX computes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from subliminal_mlp.internal import unrolled_threefry
from subliminal_mlp.core.prng import MAX_RADIX_N, permutation, shuffle_rounds, stable_argsort_u32
from subliminal_mlp.core.training import noise_images


@settings(max_examples=12, deadline=None)  # each n compiles anew; the digit boundaries are tested below
@given(n=st.integers(1, 70_000), seed=st.integers(0, 2**31 - 1))
def test_permutation_is_jax_random_permutation(n, seed):
    key = jax.random.PRNGKey(seed)
    np.testing.assert_array_equal(np.asarray(jax.jit(permutation, static_argnums=1)(key, n)),
                                  np.asarray(jax.random.permutation(key, n)))


@pytest.mark.parametrize("n", [2, 1625, 1626, 60_000, 65_536, 65_537, 300_000])
def test_permutation_matches_at_the_digit_boundaries(n):
    # 2**16 is where the position needs a 17th bit and the radix digits shrink to 15 bits; 1625 -> 1626
    # is where jax.random.permutation goes from one sort round to two.
    key = jax.random.PRNGKey(n)
    np.testing.assert_array_equal(np.asarray(permutation(key, n)), np.asarray(jax.random.permutation(key, n)))


def test_shuffle_rounds_follow_the_documented_formula():
    assert [shuffle_rounds(n) for n in (1, 2, 1000, 60_000, 10**7)] == [0, 1, 1, 2, 3]
    # The round count steps where n³ passes 2³² − 1: from n = 1625 to 1626, since (2³² − 1)^(1/3) ≈ 1625.5.
    assert (2**32 - 1) ** (1 / 3) == pytest.approx(1625.5, abs=0.1)
    assert [shuffle_rounds(n) for n in (1625, 1626)] == [1, 2]


@settings(max_examples=30, deadline=None)
@given(keys=st.lists(st.integers(0, 2**32 - 1) | st.integers(0, 3), min_size=2, max_size=3000))
def test_stable_argsort_equals_numpys_stable_argsort(keys):
    # Small keys (0..3) mixed in make many ties: the order among equal keys must be the original one.
    k = np.asarray(keys, np.uint32)
    np.testing.assert_array_equal(np.asarray(stable_argsort_u32(jnp.asarray(k))), np.argsort(k, kind="stable"))


def test_stable_argsort_rejects_sizes_it_cannot_pack():
    with pytest.raises(ValueError, match="2 to"):
        stable_argsort_u32(jnp.zeros(1, jnp.uint32))
    assert MAX_RADIX_N == 2**24
    # 2²⁴ keys still fit (24 position bits beside an 8-bit digit); one more does not. Traced only.
    assert jax.eval_shape(stable_argsort_u32, jax.ShapeDtypeStruct((2**24,), jnp.uint32)).shape == (2**24,)
    with pytest.raises(ValueError, match="2 to"):
        jax.eval_shape(stable_argsort_u32, jax.ShapeDtypeStruct((2**24 + 1,), jnp.uint32))


CPU_ONLY = pytest.mark.skipif(jax.default_backend() != "cpu",
                              reason="the tweak changes JAX's CPU lowering only (elsewhere JAX already unrolls)")


@CPU_ONLY
def test_unrolled_threefry_gives_the_same_bits_in_one_fused_kernel_for_large_hashes_only():
    from subliminal_mlp.internal import UNROLL_MIN_SIZE as N

    key = jax.random.PRNGKey(7)
    # n random words are one hash of n numbers; the per-example fold_in of 64 noise images hashes 64 numbers
    f = jax.jit(lambda k: (noise_images(k, jnp.arange(64)), jax.random.bits(k, (N,), jnp.uint32),
                           jax.random.normal(jax.random.fold_in(k, 3), (99,))))
    rolled = f.lower(key)
    with unrolled_threefry():
        mixed = jax.jit(lambda k: f(k)).lower(key)
        large = jax.jit(lambda k: jax.random.bits(k, (N,), jnp.uint32)).lower(key)
        small = jax.jit(lambda k: jax.random.bits(k, (N - 1,), jnp.uint32)).lower(key)
    # JAX's CPU rule is a rolled loop (a while in the program); the unrolled one has none. A hash of N numbers is
    # unrolled, one of N - 1 keeps the loop.
    assert "while" not in large.as_text() and "while" in small.as_text()
    assert 0 < mixed.as_text().count("while") < rolled.as_text().count("while")
    for a, b in zip(rolled.compile()(key), mixed.compile()(key)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # The switch is scoped: lowering after the block uses JAX's default again.
    assert "while" in jax.jit(lambda k: jax.random.bits(k, (N,), jnp.uint32)).lower(key).as_text()


def test_compile_program_computes_what_plain_jit_computes():
    # A short distillation (noise, permutations, Adam): bit for bit the same through both paths.
    import optax

    from subliminal_mlp.internal import compile_program, compiler_options
    from subliminal_mlp.core.losses import kl_distillation
    from subliminal_mlp.core.model import stack_params
    from subliminal_mlp.core.models import mlp
    from subliminal_mlp.core.students import adam, output_mask
    from subliminal_mlp.core.training import scan_epochs

    model, opt = mlp((32,)), adam(3e-4)
    teacher, s0, s1 = (model.init(jax.random.PRNGKey(i)) for i in range(3))
    masks = jnp.stack([output_mask("aux", 10, 3), output_mask("all", 10, 3)])
    grads = jax.vmap(jax.grad(lambda p, x, t, m: kl_distillation(model.apply(p, x), t, m)), (0, None, None, 0))

    def distil(stack, teacher):
        def step(state, idx):
            x = noise_images(jax.random.PRNGKey(5), idx)
            updates, o = opt.update(grads(state[0], x, model.apply(teacher, x), masks), state[1], state[0])
            return (optax.apply_updates(state[0], updates), o), ()

        return scan_epochs(step, (stack, opt.init(stack)), jax.random.PRNGKey(6), 3000, 256, 2).state[0]

    f = jax.jit(distil)
    args = (stack_params(s0, s1), teacher)
    plain = f(*args)
    fast = compile_program(f, *args)(*args)
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(fast)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert compiler_options("cpu") == {"xla_cpu_prefer_vector_width": "512"} and compiler_options("gpu") is None


def test_the_tweaks_touch_cpu_programs_only():
    from subliminal_mlp import internal

    assert internal.compiler_options("gpu") is None and internal.compiler_options("tpu") is None
    rules = internal._threefry_rules()
    if rules is not None:  # the block swaps one entry of the CPU table and puts it back
        primitive, table, _ = rules
        before = table.get(primitive)
        with internal.unrolled_threefry():
            assert table.get(primitive) is not before
        assert table.get(primitive) is before


@CPU_ONLY
def test_internals_switched_off_by_the_environment_variable(monkeypatch):
    from subliminal_mlp import internal

    key = jax.random.PRNGKey(3)
    f = jax.jit(lambda k: jax.random.bits(k, (100,), jnp.uint32))
    monkeypatch.setenv(internal.DISABLE_ENV, "1")
    assert not internal.enabled() and internal.compiler_options("cpu") is None
    with internal.unrolled_threefry():
        off = jax.jit(lambda k: f(k)).lower(key)
    assert "while" in off.as_text()  # JAX's own rolled CPU rule: the switch took the tweak away
    np.testing.assert_array_equal(np.asarray(internal.compile_program(f, key)(key)), np.asarray(f(key)))
    monkeypatch.setenv(internal.DISABLE_ENV, "0")
    assert internal.enabled() and internal.compiler_options("cpu") == internal.CPU_COMPILER_OPTIONS
