"""Hinton's omitted digit: students never see a '3' in distillation; the record is consistent."""

import numpy as np
import pytest

from subliminal_mlp.core.config import Config, ConfigError
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.students import perturbed, ref
from subliminal_mlp.studies.omitted_digit import (MODELS, SUBSETS, distillation_pool, format_omitted_table,
                                                  omitted_digit_experiment, run_omitted_digit, write_omitted)


def test_omitted_digit_record_is_consistent_and_students_learn(data_root, tmp_path, check_envelope):
    data = load_mnist(data_root)
    cfg = Config(hidden_widths=(64,), n_runs=2, teacher_epochs=1, student_epochs=2, batch_size=512)
    rec = run_omitted_digit(cfg, data, digit=3)
    check_envelope(rec, data.checksums)
    labels = np.asarray(data.train_labels)
    assert rec["n_distillation_images"] == int(np.sum(labels != 3)) == 60_000 - 6_131
    assert rec["data"]["subset"]["classes"] == [0, 1, 2, 4, 5, 6, 7, 8, 9]  # every class but the omitted one
    assert rec["data"]["subset"]["n_train"] == 60_000 - 6_131
    # What the students are distilled on is exactly the training images that are not a 3, in their order.
    pool = distillation_pool(data, 3)
    np.testing.assert_array_equal(pool, np.asarray(data.train_images)[labels != 3])
    src = omitted_digit_experiment(cfg, pool).inputs
    drawn = np.asarray(src.draw(src.prepare(None, src.arrays, {}), np.arange(src.n), {}))
    np.testing.assert_array_equal(drawn, pool)
    threes = np.asarray(data.train_images)[labels == 3]
    assert not {r.tobytes() for r in threes} & {r.tobytes() for r in drawn}  # no image of a 3 among them
    test = np.asarray(data.test_labels)
    n3, n_other = int(np.sum(test == 3)), int(np.sum(test != 3))
    for name in MODELS:
        m = rec["models"][name]
        assert list(m) == list(SUBSETS)
        for run in range(2):
            a, a3, ao = (m[s]["accuracies"][run] for s in SUBSETS)
            # The overall accuracy is the count-weighted mix of the two subsets: an independent check.
            assert a == pytest.approx((n3 * a3 + n_other * ao) / (n3 + n_other), abs=1e-5)
    assert min(rec["models"]["teacher"]["all_digits"]["accuracies"]) > 0.85
    for student in ("student_same_init", "student_other_init"):
        assert min(rec["models"][student]["other_digits"]["accuracies"]) > 0.7
    assert "digit 3" in format_omitted_table(rec)
    files = write_omitted(rec, tmp_path)
    assert files["png"].stat().st_size > 10_000 and len(files["csv"].read_text().splitlines()) == 1 + 3 * 3 * 2
    with pytest.raises(ConfigError, match="digit = 10"):
        run_omitted_digit(cfg, data, digit=10)
    with pytest.raises(ConfigError, match="digit = True"):
        run_omitted_digit(cfg, data, digit=True)
    with pytest.raises(ConfigError, match="digit = 3.0 is invalid: give an integer class index"):
        run_omitted_digit(cfg, data, digit=3.0)
    with pytest.raises(ConfigError, match="student_inputs = 'gaussian'"):
        run_omitted_digit(cfg.replace(student_inputs="gaussian"), data)
    # A batch the training set holds but the distillation set (no 3s) does not: refused, naming that set.
    with pytest.raises(ConfigError, match="batch_size = 55000 is larger than the distillation set: the 53869 "
                                          "training images without digit 3"):
        run_omitted_digit(cfg.replace(batch_size=55_000), data)


def test_the_pool_and_the_record_leave_out_the_digit_asked_for():
    # Fake data: the pool keeps every image whose label is not the digit asked for (not a fixed 3), in order.
    import types

    images = np.arange(5 * 784, dtype=np.float32).reshape(5, 784)
    data = types.SimpleNamespace(train_images=images, train_labels=np.array([3, 7, 1, 7, 5]))
    np.testing.assert_array_equal(distillation_pool(data, 7), images[[0, 2, 4]])
    np.testing.assert_array_equal(distillation_pool(data, 3), images[[1, 2, 3, 4]])


def test_the_config_variants_reach_the_omitted_digit_students():
    """cfg's loss, start noise and n_noise (a cap on the distillation images) are what the students use."""
    pool = np.zeros((500, 784), np.float32)
    exp = omitted_digit_experiment(Config(), pool)
    assert exp.inputs.n == 500 and [(s.loss, s.start) for s in exp.students] == [("kl", ref("own")), ("kl", ref("cross"))]
    exp = omitted_digit_experiment(Config(loss="mse", n_noise=300, batch_size=100, init_noise=0.5), pool)
    assert exp.inputs.n == 300 and exp.hparams["init_noise"] == 0.5
    assert [s.loss for s in exp.students] == ["mse", "mse"]
    assert isinstance(exp.students[0].start, perturbed) and exp.students[1].start == ref("cross")


@pytest.mark.slow
def test_the_committed_omitted_digit_record_is_regenerated_by_the_current_code(data_root, xla_defaults):
    # Run 0 against figures/omitted_digit.json (10 runs): its numbers do not depend on the number of
    # runs (its other-init student starts from run 1's θ0 whatever the number: engine.cross_run). In
    # the environment that made the record (same jax/jaxlib, an AVX-512 CPU) they must be equal bit
    # for bit; elsewhere, close.
    import json
    from pathlib import Path

    import jax
    import jaxlib

    record = json.loads((Path(__file__).resolve().parents[1] / "figures" / "omitted_digit.json").read_text())
    got = run_omitted_digit(Config(n_runs=1), load_mnist(data_root), record["digit"])
    env = record["environment"]
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    same_env = (env["jax"] == jax.__version__ and env["jaxlib"] == jaxlib.__version__
                and jax.default_backend() == "cpu" and "avx512f" in cpuinfo)
    assert got["n_distillation_images"] == record["n_distillation_images"]
    for name in MODELS:
        runs = [0]
        for subset in SUBSETS:
            want = [record["models"][name][subset]["accuracies"][r] for r in runs]
            have = [got["models"][name][subset]["accuracies"][r] for r in runs]
            if same_env:
                assert have == want, (name, subset)
            else:
                np.testing.assert_allclose(have, want, atol=0.03, err_msg=f"{name} {subset}")


def test_the_subset_metric_reads_each_model_and_the_digit_it_is_given():
    # Linear models on one-hot "images" of their label: the teacher always says 7, the same-init student reads the
    # label, the other-init student always says 0. With digit 7 and labels (7, 7, 1, 0), by hand:
    import types

    import jax
    import jax.numpy as jnp

    import subliminal_mlp as sm

    model = sm.Model(lambda key: {"w": jnp.zeros((784, 13)), "b": jnp.zeros(13)}, lambda p, x: x @ p["w"] + p["b"])
    says = lambda c: {"w": jnp.zeros((784, 13)), "b": 5.0 * jax.nn.one_hot(c, 13)}  # noqa: E731
    reads = {"w": jnp.eye(784, 13), "b": jnp.zeros(13)}
    test_y = jnp.array([7, 7, 1, 0])
    view = types.SimpleNamespace(data={"test_x": jax.nn.one_hot(test_y, 784), "test_y": test_y}, model=model,
                                 teacher=says(7), students={"student_same_init": reads, "student_other_init": says(0)})
    metric = omitted_digit_experiment(Config(), np.zeros((8, 784), np.float32), digit=7).metrics["subset_accuracy"]
    assert list(MODELS) == ["teacher", "student_same_init", "student_other_init"]
    assert list(SUBSETS) == ["all_digits", "omitted_digit", "other_digits"]
    np.testing.assert_allclose(metric(view), [[0.5, 1.0, 0.0], [1.0, 1.0, 1.0], [0.25, 0.0, 0.5]])
