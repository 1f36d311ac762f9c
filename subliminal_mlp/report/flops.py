"""Model FLOPs of the protocol, counted per layer as the speed benchmark defines them.

For a dense layer of shape (i, o) and one example: ``2·i·o`` forward, ``4·i·o`` backward (the
weight gradient and the input gradient), except ``2·i·o`` backward for the first layer, which
needs no input gradient. Biases, activations, losses, optimiser and evaluation are not counted.
"""

from __future__ import annotations

from ..core.config import Config


def _layers(cfg: Config) -> list[tuple[int, int]]:
    sizes = cfg.layer_sizes
    return list(zip(sizes[:-1], sizes[1:]))


def forward_flops(cfg: Config) -> int:
    """FLOPs of one forward pass on one example."""
    return sum(2 * i * o for i, o in _layers(cfg))


def train_step_flops(cfg: Config) -> int:
    """FLOPs of one training example: forward plus backward."""
    layers = _layers(cfg)
    backward = sum((2 if k == 0 else 4) * i * o for k, (i, o) in enumerate(layers))
    return forward_flops(cfg) + backward


def protocol_flops(cfg: Config, n_train: int = 60_000, n_students: int = 4) -> dict[str, int]:
    """FLOPs of one run and of ``cfg.n_runs`` runs of the Figure-10 protocol.

    Teacher: ``n_train · teacher_epochs`` training examples. Distillation: per noise example
    and epoch, one teacher forward (shared) and ``n_students`` student training examples.
    """
    teacher = n_train * cfg.teacher_epochs * train_step_flops(cfg)
    students = cfg.n_noise * cfg.student_epochs * (forward_flops(cfg) + n_students * train_step_flops(cfg))
    per_run = teacher + students
    return {"teacher": teacher, "students": students, "per_run": per_run, "total": per_run * cfg.n_runs}
