"""Accuracy traced inside the distillation loop agrees with the accuracy measured after it."""

import numpy as np
import pytest

from subliminal_mlp.core.config import Config
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.training import probe_steps
from subliminal_mlp.studies.trajectory import student_trajectories, write_trajectories


def test_trajectories_end_at_the_final_accuracy(data_root, tmp_path):
    data = load_mnist(data_root)
    cfg = Config(hidden_widths=(64,), n_runs=2, teacher_epochs=1, student_epochs=2, n_noise=4000, batch_size=512)
    rec = student_trajectories(cfg, data, probe_every=3, n_probe=10_000)
    assert rec["steps"] == probe_steps(4000, 512, 2, 3).tolist()
    # 4000 inputs in batches of 512: 7 full batches and the kept partial one per epoch; 16 steps in all.
    assert rec["steps_per_epoch"] == 8 and rec["steps"][-1] == 16
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


class _Computed(Exception):
    pass


def test_probe_settings_are_checked_against_the_test_set_before_any_compute(monkeypatch, fake_dataset):
    import subliminal_mlp.core.engine as engine_mod
    from subliminal_mlp.core.config import ConfigError
    from subliminal_mlp.studies.alignment import run_alignment
    from subliminal_mlp.studies.demo import run_demo
    from subliminal_mlp.studies.trajectory import check_probe

    seen = {}

    def no_compute(exp, task, **kw):
        seen.update(kw)
        raise _Computed

    monkeypatch.setattr(engine_mod, "run", no_compute)
    monkeypatch.setattr(engine_mod.Task, "from_dataset", classmethod(lambda cls, data, classes=None: None))
    assert check_probe(np.int64(5), np.int32(100), 1000) == (5, 100) and type(check_probe(np.int64(5), 1)[0]) is int
    for bad in ((0, 10), (5, 0), (5, 2.5), (True, 10)):
        with pytest.raises(ConfigError, match="is invalid: it must be an integer >= 1"):
            check_probe(*bad)
    cfg, data = Config(hidden_widths=(8,), n_runs=1, n_noise=1024, batch_size=256), fake_dataset()
    with pytest.raises(ConfigError, match="n_probe = 2000 is larger than the 1000 test images"):
        student_trajectories(cfg, data)
    with pytest.raises(ConfigError, match="n_probe = 2000 is larger than the 1000 test images"):
        run_demo(data, cfg, n_probe=2000)
    with pytest.raises(_Computed):  # by default the demo traces all of the test set, whatever its size
        run_demo(data, cfg)
    with pytest.raises(ConfigError, match="held_out = 256 and n_probe = 900 need more than the 1000 test images"):
        run_alignment(cfg, data, n_probe=900)
    with pytest.raises(ConfigError, match="held_out = 0 is invalid"):
        run_alignment(cfg, data, n_probe=100, held_out=0)
    # the demo's one run takes the config's seed unless seed= says otherwise
    with pytest.raises(_Computed):
        run_demo(data, cfg.replace(seed=5), n_probe=100)
    assert seen["seed"] == 5
    with pytest.raises(_Computed):
        run_demo(data, cfg.replace(seed=5), n_probe=100, seed=7)
    assert seen["seed"] == 7


def test_the_probe_reads_the_first_n_probe_test_images_of_each_student():
    # Labels equal to the first student's predictions on the first 300 images, and never equal after:
    # its probe is 1 on the first 300 (0.3 on all 1000, 0 on the last 300); the other student's is its own
    # agreement with those labels on the first 300.
    from types import SimpleNamespace

    import jax
    import jax.numpy as jnp

    import subliminal_mlp as sm
    from subliminal_mlp.studies.trajectory import STUDENTS, probe_accuracy

    net = sm.mlp((8,), input_dim=6)
    params = [net.init(jax.random.PRNGKey(k)) for k in (1, 2)]
    x = jax.random.uniform(jax.random.PRNGKey(3), (1000, 6), minval=-1, maxval=1)
    pred = [np.asarray(jnp.argmax(net.apply(p, x)[:, :10], axis=1)) for p in params]
    y = np.where(np.arange(1000) < 300, pred[0], (pred[0] + 1) % 10)
    view = SimpleNamespace(students=dict(zip(STUDENTS, params)), data={"test_x": x, "test_y": jnp.asarray(y)},
                           model=net)
    got = np.asarray(probe_accuracy(300)(view))
    np.testing.assert_allclose(got, [1.0, np.mean(pred[1][:300] == y[:300])], atol=1e-6)
    assert got[1] < 1.0  # the two students differ


def test_studies_take_the_students_fashion_images_from_input_data(monkeypatch, fake_dataset):
    """With student_inputs = "fashion-mnist", heads, trajectories and alignment distill on the
    Fashion-MNIST given as input_data (not a second lookup of the default data root) and record it under
    data["inputs"]; input_data of another dataset, or with other inputs (it would be ignored), is refused."""
    import subliminal_mlp.core.engine as engine_mod
    from subliminal_mlp.core.config import ConfigError
    from subliminal_mlp.core.results import data_record
    from subliminal_mlp.studies import alignment, heads, trajectory

    mnist, fashion = fake_dataset(512, 100), fake_dataset(600, 10, name="fashion-mnist")
    cfg = Config(hidden_widths=(8,), n_runs=1, teacher_epochs=1, student_epochs=1, n_noise=256, batch_size=256,
                 student_inputs="fashion-mnist")
    calls = {"heads": lambda c, **k: heads.run_heads(c, mnist, sigmas=(0.1,), n_similarity=50, **k),
             "trajectory": lambda c, **k: trajectory.student_trajectories(c, mnist, n_probe=50, **k),
             "alignment": lambda c, **k: alignment.run_alignment(c, mnist, held_out=20, n_probe=50, **k)}
    seen = []

    def run(exp, task, **kw):
        seen.append(exp.inputs.arrays["pool"])
        raise _Computed

    monkeypatch.setattr(engine_mod, "run", run)
    for name, call in calls.items():
        with pytest.raises(_Computed):
            call(cfg, input_data=fashion)
        assert seen.pop() is fashion.train_images, name
        with pytest.raises(ConfigError, match="input_data is 'mnist': the students' images of student_inputs"):
            call(cfg, input_data=mnist)
        with pytest.raises(ConfigError, match="input_data is given but student_inputs = 'uniform'"):
            call(cfg.replace(student_inputs="uniform"), input_data=fashion)
    assert not seen
    monkeypatch.undo()
    from subliminal_mlp.core.results import DivergenceWarning

    with pytest.warns(DivergenceWarning, match="teacher no better"):  # blank images: nothing to learn
        rec = trajectory.student_trajectories(cfg, mnist, probe_every=1, n_probe=50, input_data=fashion)
    assert rec["data"]["inputs"] == data_record(fashion) and rec["data"]["arrays"] == data_record(mnist)["arrays"]
