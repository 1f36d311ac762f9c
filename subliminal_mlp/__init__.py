"""subliminal-mlp: subliminal learning in MLP classifiers, exact and fast, in JAX.

Teacher and student MLPs share an initialisation; the teacher learns MNIST; the student imitates
only the teacher's auxiliary logits on noise images, and still learns to classify digits
(Cloud et al. 2025, §6.2). The public API::

    from subliminal_mlp import Config, load_mnist, init_params, train_teacher, distill_student
    from subliminal_mlp import run_experiment, reproduce
"""

__version__ = "0.1.0"

from .config import MODELS, Config, ConfigError
from .data import DataError, Dataset, load_dataset, load_fashion_mnist, load_mnist
from .experiment import ExperimentResult, run_experiment
from .losses import class_cross_entropy, kl_distillation, mse_distillation
from .model import MLP, accuracy, apply, aux_logits, class_logits, features, init_params, logit_mask
from . import theory
from .reproduce import reproduce
from .results import mean_ci95, read_results
from .training import distill_student, distill_students, noise_images, train_teacher

__all__ = [
    "MODELS", "Config", "ConfigError", "DataError", "Dataset", "load_dataset", "load_fashion_mnist",
    "load_mnist", "ExperimentResult", "run_experiment", "class_cross_entropy", "kl_distillation",
    "mse_distillation", "MLP", "accuracy", "apply", "aux_logits", "class_logits", "features",
    "init_params", "logit_mask", "reproduce", "theory", "mean_ci95", "read_results", "distill_student",
    "distill_students", "noise_images", "train_teacher",
]
