"""The paper's experiments and their follow-ups, each an experiment value run by the engine.

``figure10`` (the paper's Figure 10 from a :class:`~subliminal_mlp.core.config.Config`), ``sweep``
(one-program sweeps of its settings), ``traits``, ``heads``, ``alignment``, ``trajectory``,
``omitted_digit``, ``teacher_task`` (what the teacher's task must be: classes, epochs, generations) and
``demo``. Each builds its record; figures are drawn from records.
"""
