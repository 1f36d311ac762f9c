"""Everything that leans on JAX internals or XLA flags, in one place, and one switch to turn it off.

The library's long programs are compiled through :func:`compile_program`. It changes how XLA
*builds* a program, never one bit of what it computes (tested against the committed figures):

* the Threefry hash behind the noise images is lowered unrolled where it hashes many numbers
  (:func:`unrolled_threefry`). On CPU, JAX lowers it as a 5-iteration rolled loop (to keep compile
  times short), which XLA runs as ~10 small kernels per call, each streaming the whole state
  through memory; JAX's own unrolled rule (the one it uses on every other platform) gives one
  fused kernel, the same integer arithmetic, the same bits. Every hash of an array of numbers
  (a batch of noise, an epoch's shuffle, a layer's initial values) is unrolled; a hash of one
  number (deriving one key: ~70 of them in an engine program, none in its training loops) keeps
  JAX's rolled loop, which XLA compiles much faster (:data:`UNROLL_MIN_SIZE`). Measured by
  ``benchmarks/bench_threefry_lowering.py`` against unrolling every hash: an engine program
  without training steps compiles in 1.1 s instead of 3.7 s, the paper's in 4.0 s instead of
  4.7 s, and runs as fast, with the same bits. This reads ``jax._src`` (the CPU
  lowering table): with a JAX whose internals differ it does nothing, which only costs speed;
* on CPU, XLA is asked to prefer 512-bit vectors (``xla_cpu_prefer_vector_width``; its default is
  256). Where the processor has AVX-512 this halves the time of the integer hashing that makes the
  noise; where it has not, XLA uses the widest vectors it has, as before.

One check reads JAX's internals too: a swept hyperparameter that no output depends on (every value would
compute the same numbers) is found by JAX's dead-code elimination of the traced program
(:func:`unused_inputs`, ``jax._src.interpreters.partial_eval``); with a JAX whose internals differ the check
is skipped.

Set the environment variable ``SUBLIMINAL_MLP_NO_INTERNALS=1`` to switch all three off (plain
``jax.jit`` lowering, XLA's default options, no check): the numbers stay the same, only slower on CPU.
``pyproject.toml`` bounds ``jax`` to the versions on which the bit-identity tests pass.
"""

from __future__ import annotations

import contextlib
import math
import os
from typing import Any

import jax

#: The environment variable that switches the tweaks of this module off (any value but "", "0").
DISABLE_ENV = "SUBLIMINAL_MLP_NO_INTERNALS"
#: XLA options for programs compiled for CPU (see the module docstring).
CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": "512"}
#: Threefry hashes of at least this many numbers are lowered unrolled on CPU (smaller: JAX's rolled loop). A
#: rolled hash of a few hundred numbers is no faster to compile with XLA's older CPU emitters: LLVM unrolls its loop.
UNROLL_MIN_SIZE = 2


def enabled() -> bool:
    """Whether the tweaks are on (``$SUBLIMINAL_MLP_NO_INTERNALS`` unset, empty or "0")."""
    return os.environ.get(DISABLE_ENV, "") in ("", "0")


def _threefry_rules():
    """(the threefry2x32 primitive, JAX's CPU-specific rule table, the rule of :func:`unrolled_threefry`), or None.

    The rule lowers a hash of at least :data:`UNROLL_MIN_SIZE` numbers with JAX's unrolled rule,
    a smaller one with JAX's CPU rule (the rolled loop). None where JAX's layout differs.
    """
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        table = mlir._platform_specific_lowerings["cpu"]
        rolled, unrolled = table[threefry.threefry2x32_p].rule, threefry._threefry2x32_lowering_rule
    except (ImportError, AttributeError, KeyError):  # another JAX layout: keep its default lowering
        return None

    def by_size(ctx, *args, **params):
        size = math.prod(ctx.avals_out[0].shape)
        return (unrolled if size >= UNROLL_MIN_SIZE else rolled)(ctx, *args, **params)

    return threefry.threefry2x32_p, table, mlir.LoweringRuleEntry(by_size, False)


@contextlib.contextmanager
def unrolled_threefry():
    """Within the block, programs *lowered* for CPU use JAX's unrolled Threefry lowering for large hashes.

    Wrap the ``.lower(...)`` call of a jitted program. A hash of at least :data:`UNROLL_MIN_SIZE`
    numbers is lowered unrolled (one fused kernel), a smaller one keeps JAX's rolled CPU loop
    (fast to compile). The hash's integer arithmetic is identical either way, so every random bit
    is too (tested); only the kernels change. With a JAX whose internals differ, or with the
    tweaks switched off (:func:`enabled`), the block does nothing.
    """
    rules = _threefry_rules() if enabled() else None
    if rules is None:
        yield
        return
    primitive, table, by_size = rules
    saved = table[primitive]
    table[primitive] = by_size
    try:
        yield
    finally:
        table[primitive] = saved


def compiler_options(platform: str) -> dict[str, Any] | None:
    """The XLA options :func:`compile_program` passes for ``platform`` (None: XLA's defaults)."""
    return dict(CPU_COMPILER_OPTIONS) if platform == "cpu" and enabled() else None


def compile_program(program, *args, platform: str | None = None, inspect=None):
    """``program.lower(*args).compile()`` for ``platform`` (default: JAX's default backend), faster.

    ``program`` is a ``jax.jit``-ed function. Returns the compiled executable; call it with
    ``args``. The numbers are those of ``program(*args)``. ``inspect``, if given, is called with the
    program's traced ``ClosedJaxpr`` (the trace the compile uses: nothing is traced twice).
    """
    with unrolled_threefry():
        traced = program.trace(*args)
        if inspect is not None:
            inspect(traced.jaxpr)
        lowered = traced.lower()
    return lowered.compile(compiler_options=compiler_options(platform or jax.default_backend()))


def unused_inputs(closed_jaxpr) -> list[bool] | None:
    """For each input of a traced program (its flattened arguments, in order), whether no output depends on it:
    JAX's own dead-code elimination (``partial_eval.dce_jaxpr``) of the whole program, through its loops and
    ``shard_map``. A primitive JAX has no such rule for keeps all its inputs, so an input said unused is
    unused; None where JAX's internals differ or the module is switched off (nothing is claimed then).

    >>> import jax, jax.numpy as jnp
    >>> unused_inputs(jax.make_jaxpr(lambda a, b, c: jax.lax.scan(lambda k, x: (k + a * x, None), 0.0, c)[0])(
    ...     1.0, 2.0, jnp.ones(3)))
    [False, True, False]
    """
    if not enabled():
        return None
    try:
        from jax._src.interpreters import partial_eval as pe

        jaxpr = closed_jaxpr.jaxpr
        _, used = pe.dce_jaxpr(jaxpr, [True] * len(jaxpr.outvars))
        if len(used) != len(jaxpr.invars):
            return None
        return [not u for u in used]
    except Exception:  # noqa: BLE001 - another JAX's internals: claim nothing
        return None
