"""Compiling the library's programs: the same numbers as a plain ``jax.jit``, in less time on CPU.

Every long-running program of the library (the Figure-10 experiment, the per-run experiments of
:func:`experiment.map_runs`) is compiled through :func:`compile_program`, which changes how XLA
builds the program but not one bit of what it computes (tested against the committed figures):

* the Threefry hash behind the noise images is lowered unrolled (:func:`prng.unrolled_threefry`);
* on CPU, XLA is asked to prefer 512-bit vectors (``xla_cpu_prefer_vector_width``; its default is
  256). Where the processor has AVX-512 this halves the time of the integer hashing that makes
  the noise; where it has not, XLA uses the widest vectors it has, as before.
"""

from __future__ import annotations

from typing import Any

import jax

from .prng import unrolled_threefry

#: XLA options for programs compiled for CPU (see the module docstring).
CPU_COMPILER_OPTIONS = {"xla_cpu_prefer_vector_width": "512"}


def compiler_options(platform: str) -> dict[str, Any] | None:
    """The XLA options :func:`compile_program` passes for ``platform`` (None: XLA's defaults)."""
    return dict(CPU_COMPILER_OPTIONS) if platform == "cpu" else None


def compile_program(program, *args, platform: str | None = None):
    """``program.lower(*args).compile()`` for ``platform`` (default: JAX's default backend), faster.

    ``program`` is a ``jax.jit``-ed function. Returns the compiled executable; call it with
    ``args``. The numbers are those of ``program(*args)``.
    """
    with unrolled_threefry():
        lowered = program.lower(*args)
    return lowered.compile(compiler_options=compiler_options(platform or jax.default_backend()))
