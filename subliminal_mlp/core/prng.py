"""Random numbers of the hot loops, bit for bit those of ``jax.random``, computed faster on CPU.

The epoch shuffles dominate the non-matmul time of the protocol on a CPU, and can be computed
faster *without changing a single bit* of what they return.

:func:`permutation`: ``jax.random.permutation(key, n)`` applies
``r = ⌈3 ln n / ln(2³² − 1)⌉`` rounds (2 for n = 60,000) of a *stable* sort of the current order
by fresh 32-bit random keys (``key, sub = split(key)``; ``bits(sub, (n,), uint32)``). XLA:CPU
sorts a key/value pair through a compiled comparator, ~5x slower than it sorts one array of
``uint32``. Here each stable argsort is an LSD radix sort made of single-array sorts: with
``b = ⌈log2 n⌉`` index bits, every pass sorts the words ``digit << b | position`` for a
``32 − b``-bit digit of the keys, least significant digit first. The position in the low bits
makes each pass stable, and stable passes from the lowest to the highest digit give exactly
the stable order by the whole key, so the result equals ``jax.random.permutation``'s (tested).
This is plain public JAX; the tweaks that lean on JAX internals (the unrolled Threefry lowering)
are in :mod:`subliminal_mlp.internal`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

#: Above this size :func:`permutation` falls back to ``jax.random.permutation`` (the radix passes
#: need the position in ``⌈log2 n⌉`` bits beside a digit of at least 8 bits).
MAX_RADIX_N = 1 << 24


def shuffle_rounds(n: int) -> int:
    """Sort rounds of ``jax.random.permutation`` for ``n`` items: ``⌈3 ln n / ln(2³² − 1)⌉``."""
    return int(np.ceil(3 * np.log(max(1, n)) / np.log(np.iinfo(np.uint32).max)))


def stable_argsort_u32(keys: jax.Array) -> jax.Array:
    """``jnp.argsort(keys, stable=True)`` for a 1-D ``uint32`` array, by LSD radix passes.

    Each pass sorts one array of ``uint32`` words ``digit << b | position`` (``b = ⌈log2 n⌉``) and
    reads the positions back from the low bits; see the module docstring.
    """
    n = keys.shape[0]
    if not 1 < n <= MAX_RADIX_N:
        raise ValueError(f"stable_argsort_u32 sorts 2 to {MAX_RADIX_N} keys, got {n}.")
    index_bits = math.ceil(math.log2(n))
    digit_bits = 32 - index_bits
    low = jnp.uint32((1 << index_bits) - 1)
    digit_mask = jnp.uint32((1 << digit_bits) - 1)
    positions = jnp.arange(n, dtype=jnp.uint32)
    order = jnp.arange(n, dtype=jnp.int32)
    for shift in range(0, 32, digit_bits):
        digit = (keys[order] >> jnp.uint32(shift)) & digit_mask
        moved = lax.sort((digit << jnp.uint32(index_bits)) | positions) & low
        order = order[moved.astype(jnp.int32)]
    return order


def permutation(key: jax.Array, n: int) -> jax.Array:
    """A random permutation of ``range(n)``: exactly ``jax.random.permutation(key, n)``, faster on CPU.

    Same rounds, same keys, same stable order (see the module docstring); sizes outside
    ``2 .. MAX_RADIX_N`` are passed to ``jax.random.permutation`` itself.
    """
    if not 1 < n <= MAX_RADIX_N:
        return jax.random.permutation(key, n)
    x = jnp.arange(n, dtype=jnp.int32)
    for _ in range(shuffle_rounds(n)):
        key, sub = jax.random.split(key)
        x = x[stable_argsort_u32(jax.random.bits(sub, (n,), jnp.uint32))]
    return x
