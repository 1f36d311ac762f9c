"""subliminal-mlp: subliminal learning in MLP classifiers, exact and fast, in JAX.

Teacher and student MLPs share an initialisation; the teacher learns MNIST; the student imitates
only the teacher's auxiliary logits on noise images, and still learns to classify digits
(Cloud et al. 2025, §6.2). An experiment is a value run by one engine::

    import subliminal_mlp as sm
    task = sm.Task.from_dataset(sm.load_mnist())
    exp = sm.Experiment(inputs=sm.inputs.subspace(30))          # Figure 10 on 30-dim noise
    result = sm.run(exp, task, n_runs=10)
    print(result.table())

The layers: :mod:`~subliminal_mlp.models` (``(init, apply)`` pairs), :mod:`~subliminal_mlp.inputs`
(distillation input sources), :mod:`~subliminal_mlp.students` (the student table),
:mod:`~subliminal_mlp.engine` (experiments and the one program that runs them),
:mod:`~subliminal_mlp.results` (records), :mod:`~subliminal_mlp.theory` (the theorem's kernels).
"""

__version__ = "0.1.0"

from . import engine, inputs, models, students, theory
from .config import MODELS, Config, ConfigError
from .data import DataError, Dataset, load_dataset, load_fashion_mnist, load_mnist
from .engine import Experiment, ExperimentError, Result, RunModels, Task, run
from .experiment import ExperimentResult, run_experiment
from .inputs import InputError, InputSource
from .losses import class_cross_entropy, kl_distillation, mse_distillation
from .model import MLP, accuracy, apply, aux_logits, class_logits, features, init_params, logit_mask
from .models import Model, ModelError, check_model, from_flax, mlp, split_head_mlp
from .reproduce import reproduce
from .results import RecordError, mean_ci95, read_results
from .students import FIGURE10, Student, StudentError, fresh, layers, perturbed, ref
from .training import noise_images

__all__ = [
    "engine", "inputs", "models", "students", "theory",
    "MODELS", "Config", "ConfigError", "DataError", "Dataset", "load_dataset", "load_fashion_mnist",
    "load_mnist", "Experiment", "ExperimentError", "Result", "RunModels", "Task", "run", "ExperimentResult",
    "run_experiment", "InputError", "InputSource", "class_cross_entropy", "kl_distillation", "mse_distillation",
    "MLP", "accuracy", "apply", "aux_logits", "class_logits", "features", "init_params", "logit_mask",
    "Model", "ModelError", "check_model", "from_flax", "mlp", "split_head_mlp", "reproduce", "RecordError",
    "mean_ci95", "read_results", "FIGURE10", "Student", "StudentError", "fresh", "layers", "perturbed", "ref",
    "noise_images",
]
