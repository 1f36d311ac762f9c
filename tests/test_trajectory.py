"""Accuracy traced inside the distillation loop agrees with the accuracy measured after it."""

import numpy as np
import pytest

from subliminal_mlp.core.config import Config
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.training import probe_steps
from subliminal_mlp.studies.trajectory import student_trajectories, write_trajectories


def test_trajectories_end_at_the_final_accuracy(data_root, tmp_path):
    data = load_mnist(data_root)
    cfg = Config(hidden_widths=(64,), n_runs=2, teacher_epochs=1, student_epochs=2, n_noise=4096, batch_size=512)
    rec = student_trajectories(cfg, data, probe_every=3, n_probe=10_000)
    assert rec["steps"] == probe_steps(4096, 512, 2, 3).tolist()
    for name in ("student_aux", "cross_aux"):
        per_run = np.asarray(rec["curves"][name]["per_run"])
        assert per_run.shape == (2, len(rec["steps"]))
        # The last probe runs after the last step on the whole test set: it is the final accuracy.
        np.testing.assert_allclose(per_run[:, -1], rec["final"][name]["accuracies"], atol=1e-6)
        # The first probe runs before any step: both students are still their initialisations.
        assert np.all(np.abs(per_run[:, 0] - 0.1) < 0.06)
    np.testing.assert_allclose(rec["curves"]["student_aux"]["mean"][0], np.mean(rec["final"]["reference"]["accuracies"]),
                               atol=1e-6)
    files = write_trajectories(rec, tmp_path, "traj")
    assert files["png"].stat().st_size > 10_000 and files["json"].exists()
    with pytest.raises(ValueError, match="probe_every"):
        student_trajectories(cfg, data, probe_every=0)
