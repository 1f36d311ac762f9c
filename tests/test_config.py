"""Config defaults are the paper's; invalid values are rejected before any compute."""

import numpy as np
import pytest

from subliminal_mlp.core.config import Config, ConfigError


def test_defaults_are_the_papers_settings():
    c = Config()
    assert c.layer_sizes == (784, 256, 256, 13)
    assert (c.aux_logits, c.learning_rate, c.batch_size) == (3, 3e-4, 1024)
    assert (c.teacher_epochs, c.student_epochs, c.n_noise, c.loss) == (5, 5, 60_000, "kl")
    assert c.n_runs == 100
    # The rest of Figure 10's protocol: 10 classes of 784 pixels, uniform noise, T = 1, no initialisation noise.
    assert (c.n_classes, c.input_dim, c.student_inputs, c.temperature, c.init_noise) == (10, 784, "uniform", 1.0, 0.0)
    assert (c.seed, c.dataset, c.run_batch) == (0, "mnist", None)  # seed 0 made the committed figure


@pytest.mark.parametrize(
    "changes, needle",
    [
        ({"teacher_epochs": -1}, "teacher_epochs = -1"),
        ({"student_epochs": -3}, "student_epochs = -3"),
        ({"aux_logits": 0}, "aux_logits (m) = 0"),
        ({"batch_size": 0}, "batch_size = 0"),
        ({"batch_size": 70_000}, "larger than n_noise"),
        ({"loss": "l1"}, "loss = 'l1'"),
        ({"hidden_widths": ()}, "hidden_widths"),
        ({"hidden_widths": (256, 0)}, "hidden_widths[1] = 0"),
        ({"learning_rate": 0.0}, "learning_rate = 0.0"),
        ({"n_runs": 0}, "n_runs = 0"),
        ({"seed": -1}, "seed = -1"),
        ({"dataset": "cifar"}, "dataset = 'cifar'"),
        ({"run_batch": 0}, "run_batch = 0"),
        ({"teacher_epochs": 2.5}, "teacher_epochs = 2.5"),
        ({"temperature": 0.0}, "temperature = 0.0"),
        ({"loss": "mse", "temperature": 2.0}, "no meaning for loss = 'mse'"),
        ({"student_inputs": "cifar"}, "student_inputs = 'cifar'"),
        ({"input_mix": 1.5}, "input_mix = 1.5"),
        ({"n_classes": 1}, "n_classes = 1"),
        ({"n_classes": 2.0}, "n_classes = 2.0 is invalid: it must be an integer >= 2"),
        ({"init_noise_kind": "gaussian"}, "init_noise_kind = 'gaussian'"),
        ({"input_dim": 0}, "input_dim = 0"),
        ({"n_noise": 2.5, "batch_size": 2}, "n_noise = 2.5"),
        ({"n_noise": 1000, "batch_size": 1001}, "batch_size = 1001 is larger than n_noise = 1000"),
        ({"n_noise": 2**31}, "n_noise = 2147483648 is too large: example indices are int32"),
        # steps and runs are counted in int32 in the program (an OverflowError, or a 7 TiB allocation, after the data
        # were loaded and the program traced, before): 59 steps an epoch of the paper's noise
        ({"student_epochs": 36_398_028}, "student_epochs = 36398028 is too many: 2,147,483,652 steps (60,000 examples"),
        ({"teacher_epochs": 2**31}, "teacher_epochs = 2147483648 is too many: 2,147,483,648 steps (each epoch is"),
        ({"n_runs": 2**31}, "n_runs = 2147483648 is too many: runs are indexed in int32 (at most 2,147,483,647)"),
        # the programs are float32: a learning rate of 1e39 was inf in them (every run diverged), 1e-50 was 0
        ({"learning_rate": 1e39}, "learning_rate = 1e+39 is invalid: it is beyond float32's range"),
        ({"learning_rate": 1e-50}, "learning_rate = 1e-50 is invalid: it rounds to 0 in float32"),
        ({"temperature": 1e-50}, "temperature = 1e-50 is invalid: it rounds to 0 in float32"),
    ],
)
def test_invalid_values_raise_a_clear_error(changes, needle):
    with pytest.raises(ConfigError) as e:
        Config(**changes)
    assert needle in str(e.value)


def test_the_most_steps_and_runs_the_program_counts_are_taken():
    Config(student_epochs=36_398_027, teacher_epochs=2**31 - 1, n_runs=2**31 - 1)  # 2,147,483,593 student steps


def test_batch_larger_than_the_data_is_rejected():
    with pytest.raises(ConfigError, match="larger than the 500 training examples"):
        Config(batch_size=1024).check_data(n_train=500, input_dim=784)
    with pytest.raises(ConfigError, match="input_dim = 784"):
        Config().check_data(n_train=60_000, input_dim=100)
    with pytest.raises(ConfigError, match="n_classes = 5 does not match the data's 10 classes"):
        Config(n_classes=5).check_data(n_train=60_000, input_dim=784, n_classes=10)
    Config().check_data(n_train=60_000, input_dim=784, n_classes=10)
    # the task's images as inputs: the first n_noise of the training set, which must hold them
    with pytest.raises(ConfigError, match="n_noise = 60000 is larger than the 500 training images"):
        Config(student_inputs="task", batch_size=100).check_data(n_train=500, input_dim=784)
    Config(student_inputs="task", n_noise=500, batch_size=100).check_data(n_train=500, input_dim=784)
    # "mix": example j mixes image j of the task's images, so there must be n_noise of them (no silent reuse)
    with pytest.raises(ConfigError, match="n_noise = 501 is larger than the 500 training images .* 'mix'"):
        Config(student_inputs="mix", n_noise=501, batch_size=100).check_data(n_train=500, input_dim=784)
    Config(student_inputs="mix", n_noise=500, batch_size=100).check_data(n_train=500, input_dim=784)
    Config(n_noise=60_000, batch_size=100).check_data(n_train=500, input_dim=784)  # noise: any n_noise
    # The boundaries: a batch as large as the data (one full batch) is fine, one more is not.
    Config(n_noise=1000, batch_size=1000).check_data(n_train=1000, input_dim=784)
    with pytest.raises(ConfigError, match="batch_size = 1001 is larger than the 1000 training examples"):
        Config(batch_size=1001).check_data(n_train=1000, input_dim=784)


def test_dict_round_trip_and_unknown_fields():
    c = Config(hidden_widths=(32, 16), aux_logits=5, loss="mse", n_runs=3)
    with pytest.raises(ConfigError, match=r"unknown config field\(s\) \['n_seeds'\]; known: .*'n_runs'"):
        c.replace(n_seeds=4)  # (a TypeError of dataclasses before)
    assert Config.from_dict(c.to_dict()) == c
    assert c.to_dict()["hidden_widths"] == [32, 16]
    with pytest.raises(ConfigError, match="unknown config field"):
        Config.from_dict({"epochs": 3})
    assert Config(hidden_widths=[8]).hidden_widths == (8,)
    # A record's widths that are not a list are the Config's error, not a TypeError (or "hidden_widths[0] = '2'").
    for bad in (256, "256", None):
        with pytest.raises(ConfigError, match=f"hidden_widths = {bad!r} is invalid"):
            Config.from_dict({"hidden_widths": bad})


def test_numpy_numbers_are_taken_as_python_numbers():
    """A loop over np.arange (or widths from an array) gives the same Config, and its record, as Python numbers."""
    c = Config(aux_logits=np.int64(5), n_runs=np.int32(3), hidden_widths=np.array([32, 16]), learning_rate=np.float64(1e-3))
    assert c == Config(aux_logits=5, n_runs=3, hidden_widths=(32, 16), learning_rate=1e-3)
    assert type(c.aux_logits) is int and type(c.hidden_widths[0]) is int and c.to_dict()["hidden_widths"] == [32, 16]
    assert Config(hidden_widths=range(8, 10)).hidden_widths == (8, 9)
    for bad in (dict(aux_logits=np.float32(2.5)), dict(init_noise=float("inf")), dict(init_noise=True)):
        with pytest.raises(ConfigError, match="is invalid"):
            Config(**bad)


def test_a_studys_protocol_settings_default_to_the_papers_and_refuse_what_no_study_can_run():
    import json

    from subliminal_mlp.studies.protocol import ProtocolSettings

    p, paper = ProtocolSettings(), Config()
    assert (p.seed, p.teacher_epochs, p.student_epochs, p.batch_size, p.n_noise, p.hidden, p.aux_logits,
            p.learning_rate) == (paper.seed, paper.teacher_epochs, paper.student_epochs, paper.batch_size,
                                 paper.n_noise, paper.hidden_widths, paper.aux_logits, paper.learning_rate)
    assert p.n_runs == 10 and p.run_batch is None
    assert ProtocolSettings(batch_size=512, n_noise=512).batch_size == 512  # a batch of every input is one
    with pytest.raises(ConfigError, match="aux_logits"):
        ProtocolSettings(aux_logits=0)
    d = ProtocolSettings(hidden=[32, 16]).to_dict()
    assert d["hidden"] == [32, 16] and json.loads(json.dumps(d)) == d
    assert ProtocolSettings.from_dict(d) == ProtocolSettings(hidden=(32, 16))
    with pytest.raises(ConfigError, match=r"no setting \['epochs'\]"):
        ProtocolSettings.from_dict({**d, "epochs": 3})


def test_settings_of_one_dataset_are_refused_on_another_before_any_compute(fake_dataset, monkeypatch):
    """A record names the data its numbers come from (``data.dataset``, from the settings): Fashion-MNIST settings on
    MNIST arrays (or the reverse) would mislabel them, so every study refuses them first; traits' ``fashion`` must be
    Fashion-MNIST (the trait is instilled on non-digit images)."""
    import subliminal_mlp as sm
    from subliminal_mlp.core import engine
    from subliminal_mlp.studies import alignment, heads, omitted_digit, trajectory, traits

    monkeypatch.setattr(engine, "run", lambda *a, **k: pytest.fail("computed"))
    mnist, fashion = fake_dataset(), fake_dataset(name="fashion-mnist")
    small = dict(hidden_widths=(8,), n_runs=1, n_noise=1024, batch_size=256)
    Config(**small).check_dataset(mnist)
    Config(**small, dataset="fashion-mnist").check_dataset(fashion)
    with pytest.raises(ConfigError, match=r"dataset = 'fashion-mnist' but the data given are 'mnist': load "
                                          r"sm.load_dataset\('fashion-mnist'\) or set dataset = 'mnist'"):
        Config(dataset="fashion-mnist").check_dataset(mnist)
    wrong = Config(**small, dataset="fashion-mnist")
    for study in (lambda: omitted_digit.run_omitted_digit(wrong, mnist),
                  lambda: trajectory.student_trajectories(wrong, mnist, n_probe=100),
                  lambda: heads.run_heads(wrong, mnist, n_similarity=500),
                  lambda: alignment.run_alignment(wrong, mnist, n_probe=100),
                  lambda: sm.run_experiment(wrong, mnist)):
        with pytest.raises(ConfigError, match="but the data given are 'mnist'"):
            study()
    with pytest.raises(ConfigError, match="fashion is 'mnist': the trait is instilled and measured on Fashion-MNIST"):
        traits.run_traits(Config(**small), mnist, mnist, traits.TraitSettings())


def test_every_other_study_refuses_another_datasets_settings_and_check_dataset_checks_the_arrays(fake_dataset,
                                                                                                 monkeypatch):
    """The studies not in the test above (the demo, the input families, the teacher's task, a traced sweep) refuse
    Fashion-MNIST settings on MNIST arrays before any compute; and ``check_dataset`` still checks the settings
    against the arrays themselves (a batch larger than the training set, images of another size)."""
    from subliminal_mlp.core import engine
    from subliminal_mlp.studies import demo, figure10, input_families, teacher_task

    monkeypatch.setattr(engine, "run", lambda *a, **k: pytest.fail("computed"))
    mnist = fake_dataset()
    mnist.n_classes = 10
    wrong = Config(hidden_widths=(8,), n_runs=1, n_noise=1024, batch_size=256, dataset="fashion-mnist")
    for study in (lambda: demo.run_demo(mnist, wrong, n_probe=100),
                  lambda: input_families.run_input_families(wrong.replace(n_noise=60_000), mnist),
                  lambda: teacher_task.run_teacher_task(wrong, mnist),
                  lambda: figure10.run_traced_sweep(wrong, mnist, "learning_rate", [1e-3, 2e-3])):
        with pytest.raises(ConfigError, match="dataset = 'fashion-mnist' but the data given are 'mnist'"):
            study()
    cfg = Config(hidden_widths=(8,), n_runs=1, n_noise=1024, batch_size=1024)
    with pytest.raises(ConfigError, match="batch_size = 1024 is larger than the 500 training examples"):
        cfg.check_dataset(fake_dataset(n_train=500))
    odd = fake_dataset()
    odd.train_images = odd.train_images[:, :10]
    with pytest.raises(ConfigError, match="input_dim = 784 does not match the data's 10 features"):
        cfg.check_dataset(odd)


def test_input_mix_is_a_number_in_0_1_ints_included_booleans_not():
    assert Config(student_inputs="mix", input_mix=1).input_mix == 1 and Config(student_inputs="mix", input_mix=0).input_mix == 0
    for flag in (True, False):
        with pytest.raises(ConfigError, match=f"input_mix = {flag} is invalid: it must be a number"):
            Config(student_inputs="mix", input_mix=flag)
