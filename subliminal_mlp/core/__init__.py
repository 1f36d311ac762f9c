"""The engine and its parts: everything an experiment is made of and the one program that runs it.

``models`` (``(init, apply)`` pairs; the paper's MLP, the split-head MLP, any Flax module),
``model`` (the paper's MLP on parameter pytrees), ``inputs`` (distillation input sources),
``students`` (the student table), ``losses``, ``training`` (the teacher's step, epochs by
``lax.scan``), ``prng`` (bit-exact fast shuffles), ``engine`` (:class:`~subliminal_mlp.core.engine.Experiment`
and :func:`~subliminal_mlp.core.engine.run`), ``results`` (the one record envelope, CSV, health),
``config`` (the paper's settings), ``data`` (MNIST and Fashion-MNIST, verified), ``teacher_cache``,
``distributed`` (``jax.distributed`` helpers).
"""
