"""The teaching demo: one command, one figure, the effect visible."""

import dataclasses

import numpy as np

from subliminal_mlp.cli import main


def test_demo_command_writes_the_figure_and_shows_the_effect(data_root, tmp_path, capsys, monkeypatch, xla_defaults):
    # (Optimised kernels, as a user's: this real run is long enough that unoptimised ones took 44 s instead of 28 s.)
    import subliminal_mlp.studies.demo as demo_mod

    captured = {}
    run = demo_mod.run_demo
    monkeypatch.setattr(demo_mod, "run_demo", lambda *a, **k: captured.setdefault("r", run(*a, **k)))
    out = tmp_path / "demo.png"
    assert main(["demo", "--data-dir", str(data_root), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert str(out) in text and "subliminal learning" in text
    assert out.stat().st_size > 20_000
    r = captured["r"]
    assert r.trace.shape == (len(r.steps), 2) and np.all(np.diff(r.steps) > 0)
    assert np.allclose(r.teacher_aux.sum(axis=1), 1) and r.noise.min() >= -1 and r.noise.max() < 1
    # Both students start at the reference's chance level ...
    assert abs(r.trace[0, 0] - r.final["reference"]) < 0.05 and r.trace[0, 0] < 0.2
    # ... the same-init student rises far above chance, the other stays near it.
    assert r.final["teacher"] > 0.9
    assert r.final["student"] > 0.3 and r.trace[-1, 0] > 0.3
    # the curves end at the final accuracies (traced on the whole test set: on its first 2,000 images the
    # student's curve ended 5 points below the number written beside its end)
    np.testing.assert_allclose(r.trace[-1], [r.final["student"], r.final["cross"]], atol=1e-6)
    assert abs(r.final["cross"] - 0.1) < 0.05
    # The figure is drawn from its record: the record beside it holds everything it shows, and redrawing from
    # the JSON alone gives the same image.
    from subliminal_mlp import read_results

    record = read_results(out.with_suffix(".json"), format=demo_mod.FORMAT)
    np.testing.assert_allclose(record["shown"]["teacher_aux"], r.teacher_aux, atol=1e-6)
    np.testing.assert_allclose(record["shown"]["noise"], r.noise, atol=1e-6)
    assert record["trace"]["student"] == r.trace[:, 0].tolist() and record["probe_every"] == r.probe_every
    again = demo_mod.plot_demo(record, tmp_path / "again.png")
    assert again.read_bytes() == out.read_bytes()


def test_a_tiny_demo_against_its_own_teacher_noise_and_final_accuracies(data_root, monkeypatch):
    # A tiny protocol (8 distillation steps, probed at 0, 3, 4, 7 and after the last), the probe on the whole test
    # set: the students start at the reference's accuracy and end at their final ones; the shown noise is the
    # run's first N_SHOWN inputs and the teacher's aux softmax on them is computed by hand from its parameters.
    import jax
    import jax.numpy as jnp
    import pytest

    import subliminal_mlp.studies.demo as demo_mod
    from subliminal_mlp import Config, inputs, load_mnist
    from subliminal_mlp.core.config import ConfigError
    from subliminal_mlp.core.engine import run_keys
    from subliminal_mlp.core.models import config_model

    data = load_mnist(data_root)
    cfg = Config(hidden_widths=(16,), n_runs=1, teacher_epochs=1, student_epochs=2, n_noise=1024, batch_size=256)
    captured, real = {}, demo_mod.engine.run
    monkeypatch.setattr(demo_mod.engine, "run",
                        lambda *a, **k: captured.setdefault("res", real(*a, **{**k, "keep_teachers": True})))
    n_test = data.test_images.shape[0]
    r = demo_mod.run_demo(data, cfg, seed=5, probe_every=3, n_probe=n_test)
    assert r.config.seed == 5 and r.n_probe == n_test and r.probe_every == 3
    np.testing.assert_array_equal(r.steps, [0, 3, 4, 7, 8])
    assert r.trace[0, 0] == pytest.approx(r.final["reference"], abs=1e-6)  # student_aux starts at θ0
    np.testing.assert_allclose(r.trace[-1], [r.final["student"], r.final["cross"]], atol=1e-6)
    src = inputs.uniform(1024, shape=(784,))
    noise = src.draw(src.prepare(run_keys(5, 0)["noise"], src.arrays, {}), jnp.arange(demo_mod.N_SHOWN), {})
    np.testing.assert_array_equal(r.noise, np.asarray(noise))
    teacher = jax.tree.map(lambda a: a[0], captured["res"].teachers)
    logits = config_model(cfg).apply(teacher, noise)[:, cfg.n_classes:]
    np.testing.assert_allclose(r.teacher_aux, np.asarray(jax.nn.softmax(logits, axis=-1)), atol=1e-5)
    assert r.student_aux.shape == (2, demo_mod.N_SHOWN, cfg.aux_logits)
    record = demo_mod.demo_record(r, data)  # what the figure is drawn from: both students' traces, apart
    assert record["trace"] == {"student": r.trace[:, 0].tolist(), "cross": r.trace[:, 1].tolist()}
    assert record["steps"] == [0, 3, 4, 7, 8] and record["final"] == r.final and record["config"]["seed"] == 5
    assert "subset" not in record["data"]  # the whole test set: no subset
    assert demo_mod.demo_record(dataclasses.replace(r, n_probe=100), data)["data"]["subset"] == {
        "probe_test_images": [0, 100]}
    assert demo_mod.run_demo.__kwdefaults__["n_probe"] is None  # by default the trace reads the whole test set
    assert record["health"] == captured["res"].health(0) and record["health"]["ok"]
    # What the terminal says follows the numbers: the effect only where the run shows it, a diverged run as such
    # (and its figure is marked in red, as every study's).
    from subliminal_mlp.report.plotting import record_health_warning

    shown = dataclasses.replace(r, final={**r.final, "student": 0.6, "cross": 0.1})
    assert "that is subliminal learning" in demo_mod.describe(shown, "x.png")
    fashion = dataclasses.replace(shown, config=shown.config.replace(dataset="fashion-mnist"))  # the data it learned
    assert "learned MNIST (" in demo_mod.describe(shown, "x.png")
    assert "learned Fashion-MNIST (" in (text := demo_mod.describe(fashion, "x.png")) and " MNIST " not in text
    assert "no clothing items, no label" in text and "digit" not in text  # it says what the data show
    assert "no digits, no label" in (text := demo_mod.describe(shown, "x.png")) and "the digit skill" in text
    flat = dataclasses.replace(r, final={**r.final, "student": 0.13, "cross": 0.12})
    assert "no transfer showed" in demo_mod.describe(flat, "x.png")
    sick = dataclasses.replace(r, health={"ok": False, "nonfinite": [[0, "student_aux"]], "teacher_not_better": [],
                                          "teacher_margin": 0.05})
    text = demo_mod.describe(sick, "x.png")
    assert "did not train" in text and "['student_aux']" in text and "subliminal learning" not in text
    assert record_health_warning(demo_mod.demo_record(sick, data))
    # The caption names the loss and the data the run used; the panel's claim is made only where the run shows it.
    import subliminal_mlp.report.plotting as plotting

    drawn = {}
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **k: drawn.setdefault("texts", [
        t.get_text() for t in fig.findobj(lambda a: hasattr(a, "get_text"))]))
    mse = demo_mod.demo_record(dataclasses.replace(flat, config=r.config.replace(loss="mse", dataset="fashion-mnist")))
    demo_mod.plot_demo(mse, "unused.png")
    texts = " ".join(drawn["texts"])
    assert "squared error on the aux logits" in texts and "on Fashion-MNIST" in texts and "KL" not in texts
    assert "Fashion-MNIST test accuracy" in texts and "digit" not in texts
    assert "no clothing items, no labels" in texts and "on clothing items they never saw" in texts
    # The config's loss is the students'; variants the demo does not draw, and a probe larger than the test set,
    # are refused before any compute.
    assert [s.loss for s in demo_mod.demo_experiment(cfg.replace(loss="mse")).students] == ["mse", "mse"]
    monkeypatch.setattr(demo_mod.engine, "run", lambda *a, **k: pytest.fail("computed"))
    for bad, kw in ((cfg.replace(init_noise=0.1), {}), (cfg.replace(student_inputs="gaussian"), {}),
                    (cfg, {"n_probe": n_test + 1})):
        with pytest.raises(ConfigError):
            demo_mod.run_demo(data, bad, **kw)


def test_the_demo_checks_both_destinations_before_loading_the_data(tmp_path, monkeypatch):
    import pytest

    import subliminal_mlp.core.data as data_mod
    import subliminal_mlp.studies.demo as demo_mod
    from subliminal_mlp.core.config import ConfigError

    monkeypatch.setattr(data_mod, "load_mnist", lambda *a, **k: pytest.fail("loaded"))
    for blocked in ("demo.png", "demo.json"):  # a directory where the figure, or its record, is to be written
        out = tmp_path / blocked.split(".")[1]
        (out / blocked).mkdir(parents=True)
        with pytest.raises(ConfigError):
            demo_mod.demo(out=out / "demo.png", log=lambda s: None)
