"""subliminal-mlp: subliminal learning in MLP classifiers, exact and fast, in JAX.

Teacher and student MLPs share an initialisation; the teacher learns MNIST; the student imitates
only the teacher's auxiliary logits on noise images, and still learns to classify digits
(Cloud et al. 2025, §6.2). An experiment is a value run by one engine::

    import subliminal_mlp as sm
    task = sm.Task.from_dataset(sm.load_mnist())
    exp = sm.Experiment(inputs=sm.inputs.subspace(30))          # Figure 10 on 30-dim noise
    result = sm.run(exp, task, n_runs=10)
    print(result.table())

The package's layers, each a subpackage:

- :mod:`subliminal_mlp.core`: the engine and its parts: models (``(init, apply)`` pairs), distillation
  input sources, the student table, losses, training steps, the engine that runs an experiment as one
  program, records, data, the teacher cache, multi-host helpers.
- :mod:`subliminal_mlp.theory`: the single-step kernels of the gradient-alignment theorem (float64),
  the theorem check and its verdict, representation similarity.
- :mod:`subliminal_mlp.studies`: the paper's experiments and their follow-ups, each an experiment value
  on the engine (Figure 10 and its sweeps, traits, heads, alignment, trajectories, the omitted digit, the
  teacher's task, split heads, mitigations, input families, the single-step predictors).
- :mod:`subliminal_mlp.report`: figures drawn from records, model FLOP counts.
- :mod:`subliminal_mlp.cli`: the ``subliminal-mlp`` command (``reproduce``, ``figures``, ``theorem``, ...).
- :mod:`subliminal_mlp.internal`: the only module that leans on JAX internals (CPU lowering tweaks, the check
  that a swept value is read).

The public API is this module's names; ``engine``, ``inputs``, ``models``, ``students`` and ``theory``
are also reachable as ``sm.engine`` etc.
"""

__version__ = "0.1.0"

from . import theory
from .cli.reproduce import reproduce
from .core import engine, inputs, models, students
from .core.config import MODELS, Config, ConfigError, SettingWarning
from .core.data import DataError, Dataset, load_dataset, load_fashion_mnist, load_mnist
from .core.engine import Experiment, ExperimentError, Result, RunModels, Task, run
from .core.inputs import InputError, InputSource
from .core.losses import class_cross_entropy, kl_distillation, mse_distillation
from .core.model import MLP, accuracy, apply, aux_logits, class_logits, features, init_params, logit_mask
from .core.models import Model, ModelError, check_model, from_flax, mlp, split_head_cnn, split_head_mlp
from .core.results import (DivergenceError, DivergenceWarning, OutputError, RecordError, check_output, format_ci,
                           mean_ci95, per_run, read_results)
from .core.students import FIGURE10, Student, StudentError, fresh, layers, perturbed, ref
from .core.training import noise_images
from .report.plotting import draw
from .studies.figure10 import ExperimentResult, run_experiment
from .studies.sweep import run_sweep

__all__ = [
    "engine", "inputs", "models", "students", "theory",
    "MODELS", "Config", "ConfigError", "SettingWarning", "DataError", "Dataset", "load_dataset", "load_fashion_mnist",
    "load_mnist", "Experiment", "ExperimentError", "Result", "RunModels", "Task", "run", "ExperimentResult",
    "run_experiment", "run_sweep", "InputError", "InputSource", "class_cross_entropy", "kl_distillation",
    "mse_distillation",
    "MLP", "accuracy", "apply", "aux_logits", "class_logits", "features", "init_params", "logit_mask",
    "Model", "ModelError", "check_model", "from_flax", "mlp", "split_head_cnn", "split_head_mlp", "reproduce",
    "DivergenceError", "DivergenceWarning", "OutputError", "RecordError", "check_output",
    "format_ci", "mean_ci95", "per_run", "read_results", "FIGURE10", "Student", "StudentError", "fresh", "layers", "perturbed", "ref",
    "noise_images", "draw",
]
