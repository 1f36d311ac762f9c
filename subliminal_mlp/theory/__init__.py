"""The single-step theory (protocol.md §2): Lemma 1 / Theorem 1 on any model, in float64.

The kernels compute in the precision of what they are given: inside :func:`float64`, with parameters
and data cast by :func:`to_float64` (float32 parameters there are warned about: the kernel would compute
in float32; a float32 ``x`` beside float64 parameters is promoted); ``run_theorem_check`` does both.

:mod:`~subliminal_mlp.theory.kernels` holds the jit-compiled kernels (teacher and student updates,
the first-order coefficient A, the ε sweep) and is re-exported here, so ``sm.theory.sweep`` is
:func:`subliminal_mlp.theory.kernels.sweep`; :mod:`~subliminal_mlp.theory.theorem` is the theorem
check's protocol, verdict, tables and figure, whose check and verdict are re-exported too
(``sm.theory.run_theorem_check(model=..., teacher_loss=...)``, ``summarize``, ``theorem_holds``,
``format_tables``); :mod:`~subliminal_mlp.theory.similarity` is CKA.
"""

from . import kernels as _kernels
from .kernels import *  # noqa: F401,F403  (the kernels' __all__)
from .theorem import format_tables, run_theorem_check, summarize, theorem_holds  # noqa: F401

__all__ = [*_kernels.__all__, "run_theorem_check", "summarize", "theorem_holds", "format_tables"]
