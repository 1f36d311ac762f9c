"""The paper's protocol as a study's settings: the fields every study of the MNIST MLP shares.

A study's settings dataclass extends :class:`ProtocolSettings` with its own fields; the defaults
are the paper's (protocol.md §1: 784-256-256-10+3, Adam 3e-4, batch 1024, 5 + 5 epochs, 60,000
uniform-noise inputs), and invalid values raise :class:`~subliminal_mlp.core.config.ConfigError`
naming the value, before any compute.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Optional

import numpy as np

from ..core.config import (ConfigError, check_positive_int, check_positive_number, check_seed, check_widths,
                           is_sequence, plain_fields)


@dataclass(frozen=True)
class ProtocolSettings:
    """Runs, seed, epochs, batch, noise inputs, hidden widths, m and Adam's learning rate.

    Every default is the paper's except ``n_runs``: 10 runs per study (the paper's Figure 10 has
    100; :class:`~subliminal_mlp.core.config.Config`, which runs it, defaults to 100).
    """

    n_runs: int = 10
    seed: int = 0
    teacher_epochs: int = 5
    student_epochs: int = 5
    batch_size: int = 1024
    n_noise: int = 60_000
    hidden: tuple[int, ...] = (256, 256)
    aux_logits: int = 3
    learning_rate: float = 3e-4
    run_batch: Optional[int] = None

    #: Fields that must be integers >= 1 (a subclass adds its own).
    POSITIVE_INTS: ClassVar[tuple[str, ...]] = ("n_runs", "teacher_epochs", "student_epochs", "batch_size",
                                                "n_noise", "aux_logits")
    #: Fields given as sequences, stored as tuples (a subclass adds its own).
    TUPLES: ClassVar[tuple[str, ...]] = ("hidden",)

    def __post_init__(self) -> None:
        import dataclasses

        for name in self.TUPLES:
            value = getattr(self, name)
            if not is_sequence(value):
                raise ConfigError(f"{name} = {value!r} is invalid: give a sequence, e.g. {name} = ({value!r},).")
            object.__setattr__(self, name, tuple(value))
        for f in dataclasses.fields(self):  # a switch is True or False ('no' would count as on)
            if f.type in ("bool", bool):
                if not isinstance(getattr(self, f.name), (bool, np.bool_)):
                    raise ConfigError(f"{f.name} = {getattr(self, f.name)!r} is invalid: give True or False.")
                object.__setattr__(self, f.name, bool(getattr(self, f.name)))
        plain_fields(self)  # numpy numbers (a subclass's fields too) as Python numbers
        for name in self.POSITIVE_INTS:
            check_positive_int(name, getattr(self, name))
        if self.batch_size > self.n_noise:
            raise ConfigError(f"batch_size = {self.batch_size} is larger than n_noise = {self.n_noise}: lower it.")
        check_widths("hidden", self.hidden)
        check_positive_number("learning_rate", self.learning_rate)
        check_seed(self.seed)
        if self.run_batch is not None:
            check_positive_int("run_batch", self.run_batch)

    @classmethod
    def from_dict(cls, d: dict):
        """The settings of a record's ``config`` (:meth:`to_dict`; lists back to tuples); unknown keys are an error."""
        import dataclasses

        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ConfigError(f"{cls.__name__} has no setting {unknown}: the record was made by another version.")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})

    def to_dict(self) -> dict:
        """JSON-ready settings (tuples as lists), the ``config`` of the study's record."""
        from dataclasses import asdict

        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
