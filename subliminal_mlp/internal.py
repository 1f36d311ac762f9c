"""Everything that leans on JAX internals or XLA flags, in one place, and one switch to turn it off.

The library's long programs are compiled through :func:`compile_program`. It changes how XLA
*builds* a program, never one bit of what it computes (tested against the committed figures):

* the Threefry hash behind the noise images is lowered unrolled (:func:`unrolled_threefry`). On
  CPU, JAX lowers it as a 5-iteration rolled loop (to keep compile times short), which XLA runs as
  ~10 small kernels per call, each streaming the whole state through memory; JAX's own unrolled
  rule (the one it uses on every other platform) gives one fused kernel, the same integer
  arithmetic, the same bits. This reads ``jax._src`` (the CPU lowering table): with a JAX whose
  internals differ it does nothing, which only costs speed;
* on CPU, XLA is asked to prefer 512-bit vectors (``xla_cpu_prefer_vector_width``; its default is
  256). Where the processor has AVX-512 this halves the time of the integer hashing that makes the
  noise; where it has not, XLA uses the widest vectors it has, as before.

Set the environment variable ``SUBLIMINAL_MLP_NO_INTERNALS=1`` to switch both off (plain
``jax.jit`` lowering and XLA's default options): the numbers stay the same, only slower on CPU.
``pyproject.toml`` bounds ``jax`` to the versions on which the bit-identity tests pass.
"""

from __future__ import annotations

import contextlib
import os
from typing import Any

import jax

#: The environment variable that switches the tweaks of this module off (any value but "", "0").
DISABLE_ENV = "SUBLIMINAL_MLP_NO_INTERNALS"
#: XLA options for programs compiled for CPU (see the module docstring).
CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": "512"}


def enabled() -> bool:
    """Whether the tweaks are on (``$SUBLIMINAL_MLP_NO_INTERNALS`` unset, empty or "0")."""
    return os.environ.get(DISABLE_ENV, "") in ("", "0")


def _threefry_rules():
    """(the threefry2x32 primitive, JAX's CPU-specific rule table, JAX's unrolled rule), or None."""
    try:
        from jax._src.interpreters import mlir
        from jax._src.random import threefry2x32 as threefry

        table = mlir._platform_specific_lowerings["cpu"]
        return threefry.threefry2x32_p, table, mlir.LoweringRuleEntry(threefry._threefry2x32_lowering_rule, False)
    except (ImportError, AttributeError, KeyError):  # another JAX layout: keep its default lowering
        return None


@contextlib.contextmanager
def unrolled_threefry():
    """Within the block, programs *lowered* for CPU use JAX's unrolled Threefry lowering.

    Wrap the ``.lower(...)`` call of a jitted program. The hash's integer arithmetic is identical,
    so every random bit is too (tested); only the number of XLA kernels changes. With a JAX whose
    internals differ, or with the tweaks switched off (:func:`enabled`), the block does nothing.
    """
    rules = _threefry_rules() if enabled() else None
    if rules is None:
        yield
        return
    primitive, table, unrolled = rules
    saved = table.get(primitive)
    table[primitive] = unrolled
    try:
        yield
    finally:
        if saved is None:
            table.pop(primitive, None)
        else:
            table[primitive] = saved


def compiler_options(platform: str) -> dict[str, Any] | None:
    """The XLA options :func:`compile_program` passes for ``platform`` (None: XLA's defaults)."""
    return dict(CPU_COMPILER_OPTIONS) if platform == "cpu" and enabled() else None


def compile_program(program, *args, platform: str | None = None):
    """``program.lower(*args).compile()`` for ``platform`` (default: JAX's default backend), faster.

    ``program`` is a ``jax.jit``-ed function. Returns the compiled executable; call it with
    ``args``. The numbers are those of ``program(*args)``.
    """
    with unrolled_threefry():
        lowered = program.lower(*args)
    return lowered.compile(compiler_options=compiler_options(platform or jax.default_backend()))
