"""The paper's experiments and their follow-ups, each an experiment value run by the engine.

``figure10`` (the paper's Figure 10 from a :class:`~subliminal_mlp.core.config.Config`), ``sweep``
(one-program sweeps of its settings), ``traits``, ``heads``, ``alignment``, ``trajectory``,
``omitted_digit``, ``teacher_task`` (what the teacher's task must be: classes, epochs, generations),
``split_heads`` (heads, not initialisation?), ``mitigations``, ``input_families`` (what the inputs must be),
``one_step`` (predicting transfer from one step), with ``protocol`` (their shared settings) and ``demo``.
Each builds its record; figures are drawn from records (``sm.draw``).
"""
