"""What the teacher's task must be: settings, the decay fit, fresh noise per generation, and all four
parts end to end on MNIST (a tiny configuration: the whole file runs in well under half a minute)."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from subliminal_mlp.core import inputs
from subliminal_mlp.core.config import Config, ConfigError
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.results import mean_ci95, read_results
from subliminal_mlp.studies.teacher_task import (GENERATION, MODELS, PARTS, TeacherTaskSettings, fit_decay,
                                                 format_teacher_task_table, fresh_noise, run_teacher_task,
                                                 write_teacher_task)


def test_settings_defaults_and_invalid_values_are_rejected():
    d = TeacherTaskSettings()
    assert d.classes == tuple(range(2, 11)) and d.teacher_epochs == (1, 2, 5, 10, 20)
    assert d.student_epochs == (1, 2, 5, 10, 20, 40) and d.generations == 5
    assert TeacherTaskSettings(classes=[5, 2]).classes == (2, 5)  # kept sorted
    bad = [dict(classes=(1, 2)), dict(classes=(11,)), dict(classes=()), dict(classes=(2, 2)), dict(classes=(2.5,)),
           dict(classes=3), dict(teacher_epochs=(0, 1)), dict(student_epochs=(-1,)), dict(student_epochs=(True,)),
           dict(generations=0), dict(generations=1.5), dict(generations=True)]
    for kw in bad:
        with pytest.raises(ConfigError, match=f"^{next(iter(kw))} = .* is invalid"):  # names the field and value
            TeacherTaskSettings(**kw)
    with pytest.raises(ConfigError, match="classes = \\[1, 2\\].*2..10"):
        TeacherTaskSettings(classes=(1, 2))
    # Settings that do not fit the protocol are refused before any compute (no data is touched).
    for cfg in (Config(student_inputs="task"), Config(teacher_epochs=0), Config(student_epochs=0)):
        with pytest.raises(ConfigError):
            run_teacher_task(cfg, None)


def test_a_batch_larger_than_a_k_class_task_is_refused_before_any_compute(data_root, monkeypatch):
    import subliminal_mlp.studies.teacher_task as tt

    monkeypatch.setattr(tt.engine, "run", lambda *a, **k: pytest.fail("computed"))
    data = load_mnist(data_root)
    n_2 = int(np.sum(np.asarray(data.train_labels) < 2))  # 12,665 images of 0s and 1s
    cfg = Config(hidden_widths=(16,), n_runs=1, teacher_epochs=1, student_epochs=1, n_noise=13_000, batch_size=13_000)
    with pytest.raises(ConfigError, match=f"batch_size = 13000 is larger than the {n_2} training examples of the K = 2"):
        run_teacher_task(cfg, data, TeacherTaskSettings(classes=(2, 10), teacher_epochs=(1,), student_epochs=(1,),
                                                        generations=1))


def test_fit_decay_agrees_with_numpy_polyfit():
    rng = np.random.default_rng(0)
    g = np.arange(1, 6)
    chance = 0.1
    a, r = rng.uniform(0.2, 0.5, 8), rng.uniform(0.3, 0.9, 8)
    exact = chance + a[:, None] * r[:, None] ** g
    fit = fit_decay(exact, chance)
    np.testing.assert_allclose(fit["per_run"]["r"], r, rtol=1e-10)  # an exact decay is recovered exactly
    np.testing.assert_allclose(fit["per_run"]["a"], a, rtol=1e-10)
    noisy = exact * np.exp(rng.normal(0, 0.05, exact.shape))
    noisy[3, 4] = chance - 0.01  # below chance: the logarithm cannot take it, the run fits its other 4 points
    noisy[5, 1:] = 0.05  # only one point above chance: no fit for this run
    fit = fit_decay(noisy, chance)
    for i, row in enumerate(noisy):
        ok = row > chance
        if ok.sum() < 2:
            assert np.isnan(fit["per_run"]["r"][i]) and fit["per_run"]["n_points"][i] == 1
            continue
        slope, intercept = np.polyfit(g[ok], np.log(row[ok] - chance), 1)
        assert fit["per_run"]["r"][i] == pytest.approx(np.exp(slope), rel=1e-9)
        assert fit["per_run"]["a"][i] == pytest.approx(np.exp(intercept), rel=1e-9)
        assert fit["per_run"]["n_points"][i] == ok.sum()
    fitted = np.delete(np.asarray(fit["per_run"]["r"]), 5)
    m, ci = mean_ci95(fitted)
    assert fit["r"] == {"mean": pytest.approx(m), "ci95": pytest.approx(ci), "n_runs": 7}
    slope, intercept = np.polyfit(g, np.log(noisy.mean(axis=0) - chance), 1)
    assert fit["on_means"]["r"] == pytest.approx(np.exp(slope)) and fit["on_means"]["a"] == pytest.approx(
        np.exp(intercept))
    assert fit["half_life"] == pytest.approx(np.log(2) / -slope)
    assert fit_decay(exact[:, :1], chance) is None  # one generation: nothing to fit
    with pytest.raises(ValueError):
        fit_decay(exact[0], chance)


def test_fresh_noise_draws_a_new_set_per_generation_by_index():
    base = inputs.uniform(100, shape=(6,))  # small examples: quick to draw
    src = fresh_noise(base)
    key = jax.random.PRNGKey(3)
    idx = jnp.array([0, 7, 42])

    def draw(g, at=idx):  # g as an array, as the engine passes a swept (traced) hyperparameter
        hp = {GENERATION: jnp.float32(g)}
        return np.asarray(src.draw(src.prepare(key, {}, hp), at, hp))

    first, second, again, third = draw(1), draw(2), draw(2), draw(3)
    np.testing.assert_array_equal(first, base.draw(base.prepare(key, {}, {}), idx, {}))  # generation 1: the paper's
    assert not np.allclose(first, second) and not np.allclose(second, third) and not np.allclose(first, third)
    np.testing.assert_array_equal(second, again)  # fixed per (key, generation)
    np.testing.assert_array_equal(second[1], draw(2, idx[1:2])[0])  # example j depends on (key, generation, j) only
    assert np.all(np.abs(second) <= 1) and src.describe()["base"]["name"] == "uniform"


@pytest.mark.slow
def test_all_four_parts_on_mnist(data_root, tmp_path):
    data = load_mnist(data_root)
    # The baseline's 3 student epochs exceed part (c)'s values: its program distils 3, read at 1, 2 and 3.
    cfg = Config(hidden_widths=(16,), n_runs=2, teacher_epochs=1, student_epochs=3, n_noise=1024, batch_size=512)
    # Part (b) keeps only the shared value here: its other values run exactly the code of part (a)'s (a
    # setting of the config, one program each), and every program costs seconds to compile.
    settings = TeacherTaskSettings(classes=(2, 10), teacher_epochs=(1,), student_epochs=(1, 2), generations=2)
    lines = []
    record = run_teacher_task(cfg, data, settings, log=lines.append)
    files = write_teacher_task(record, tmp_path)
    same = lambda a, b: json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)  # noqa: E731 (NaN == NaN)
    assert same(read_results(files["json"], format="subliminal-mlp/teacher-task"), record)
    assert files["png"].stat().st_size > 20_000
    csv = files["csv"].read_text().splitlines()
    assert csv[0] == "part,value,model,run,accuracy" and len(csv) == 1 + 7 * len(MODELS) * 2
    # Four programs: the baseline (shared by every part), K = 2, 2 student epochs, generation 2.
    assert sum(line.endswith("runs ...") for line in lines) == 4

    parts = record["parts"]
    assert list(parts) == list(PARTS) and record["settings"] == settings.to_dict()
    assert set(record["timing"]["parts"]) == {"baseline", *PARTS} and record["health"]["ok"]
    base = parts["classes"]["points"][1]
    assert base["shared"] and base["value"] == 10
    for part, value in (("teacher_epochs", 1), ("generations", 1)):
        shared = [p for p in parts[part]["points"] if p["shared"]]
        assert [p["value"] for p in shared] == [value] and shared[0]["models"] == base["models"]

    # (a) K = 2: digits 0 and 1 only, chance 1/2; the teacher is near perfect, far above chance.
    k2 = parts["classes"]["points"][0]
    labels = np.asarray(data.train_labels), np.asarray(data.test_labels)
    assert k2["data"] == {"classes": [0, 1], "n_train": int(np.sum(labels[0] < 2)), "n_test": int(np.sum(labels[1] < 2))}
    assert k2["chance"] == 0.5 and base["chance"] == 0.1
    assert k2["models"]["teacher"]["mean"] > 0.95 and base["models"]["teacher"]["mean"] > 0.4
    for pt in (k2, base):
        stu, cross = (np.asarray(pt["models"][m]["values"]) for m in ("student_aux", "cross_aux"))
        np.testing.assert_allclose(pt["gain_over_cross"]["values"], stu - cross, atol=1e-12)
        np.testing.assert_allclose(pt["normalised"]["student_aux"]["values"],
                                   (stu - pt["chance"]) / (1 - pt["chance"]), atol=1e-12)
    # (c) the student epochs reuse the baseline's teachers: the very same teacher accuracies. One program
    # distils 3 epochs; its trace after 3 epochs is the baseline's 3-epoch student, its last entry the final one.
    se = parts["student_epochs"]["points"]
    assert not any(p["shared"] for p in se) and [p["timing"] for p in se] == [{"traced_in": 3}] * 2
    np.testing.assert_array_equal(se[1]["models"]["teacher"]["values"], base["models"]["teacher"]["values"])
    np.testing.assert_array_equal(se[1]["models"]["reference"]["values"], base["models"]["reference"]["values"])
    check = parts["student_epochs"]["check"]
    assert check["vs_baseline"] <= 1e-4 and check["last_vs_final"] <= 1e-6
    # (d) generation 2's teacher is generation 1's shared-init student (its parameters, carried out of the
    # program and back in): the same test accuracy, run by run.
    gens = parts["generations"]
    np.testing.assert_allclose(gens["points"][1]["models"]["teacher"]["values"],
                               gens["points"][0]["models"]["student_aux"]["values"], atol=1e-4)
    assert gens["teacher"] == base["models"]["teacher"]
    acc = np.stack([np.asarray(p["models"]["student_aux"]["values"]) for p in gens["points"]], axis=1)
    assert same(gens["fit"], fit_decay(acc, 0.1))
    assert "generations" in format_teacher_task_table(record)


def test_fit_decay_by_hand_at_chance_and_without_a_decay():
    chance = 0.1
    # Run 1 sits exactly at chance in generation 2 (log 0: left out): it fits g = 1 and 3 only, 0.4 and 0.1 above
    # chance: r = (0.1/0.4)^(1/2) = 0.5, a = 0.4/r = 0.8.
    acc = np.array([[0.6, 0.3, 0.225], [0.5, chance, 0.2]])
    fit = fit_decay(acc, chance)
    assert fit["per_run"]["n_points"] == [3, 2]
    assert fit["per_run"]["r"][1] == pytest.approx(0.5) and fit["per_run"]["a"][1] == pytest.approx(0.8)
    log_r = np.log(fit["per_run"]["r"])
    m, ci = mean_ci95(log_r)
    assert fit["log_r"] == {"mean": pytest.approx(m), "ci95": pytest.approx(ci), "n_runs": 2}
    assert fit["half_life"] == pytest.approx(np.log(2) / -np.log(fit["on_means"]["r"]))
    # Accuracy that grows (r > 1) or stays (r = 1) above chance has no half-life.
    assert fit_decay(np.array([[0.2, 0.3, 0.5]]), chance)["half_life"] is None
    flat = fit_decay(np.array([[0.4, 0.4, 0.4]]), chance)
    assert flat["on_means"]["r"] == pytest.approx(1.0) and flat["half_life"] is None


def test_a_settings_statistics_by_hand_from_a_fake_result():
    from subliminal_mlp.studies.teacher_task import _point, csv_rows

    class Fake:  # what _point reads of an engine.Result: one value, 2 runs, the models' test accuracies
        models, finite, compile_s, run_s = list(MODELS), None, 1.0, 2.0
        accuracies = np.array([[[0.25, 0.9, 0.7, 0.3], [0.2, 0.95, 0.55, 0.25]]])  # (values, runs, MODELS)

        def accuracy(self, model):
            return self.accuracies[0, :, MODELS.index(model)]

    pt = _point(Fake(), 4, 0.25, 3.0)  # K = 4: chance 1/4
    close = lambda s, want: np.testing.assert_allclose(s["values"], want, atol=1e-12)  # noqa: E731
    close(pt["models"]["teacher"], [0.9, 0.95])
    close(pt["gain_over_cross"], [0.4, 0.3])
    close(pt["above_chance"]["student_aux"], [0.45, 0.3]), close(pt["above_chance"]["cross_aux"], [0.05, 0.0])
    close(pt["normalised"]["student_aux"], [0.6, 0.4]), close(pt["normalised"]["cross_aux"], [0.05 / 0.75, 0.0])
    assert pt["gain_over_cross"]["mean"] == pytest.approx(0.35) and pt["chance"] == 0.25 and pt["value"] == 4
    assert pt["health"]["ok"] and pt["timing"] == {"compile_s": 1.0, "run_s": 2.0, "wall_s": 3.0}
    head, rows = csv_rows({"parts": {"classes": {"points": [pt]}}})  # one row per model and run, runs from 0
    assert head == ["part", "value", "model", "run", "accuracy"] and len(rows) == 8
    assert rows[1] == ["classes", 4, "reference", 1, "0.200000"] and rows[6] == ["classes", 4, "cross_aux", 0, "0.300000"]
    # A traced epoch's students replace the final ones (the reference and teacher are the result's).
    traced = _point(Fake(), 2, 0.25, 3.0, students=np.array([[0.5, 0.4], [0.6, 0.2]]))
    close(traced["models"]["student_aux"], [0.5, 0.6]), close(traced["models"]["cross_aux"], [0.4, 0.2])
    close(traced["gain_over_cross"], [0.1, 0.4]), close(traced["models"]["teacher"], [0.9, 0.95])
    # A teacher no better than its reference (or chance) + margin is flagged, unless it is not required to be.
    Fake.accuracies = Fake.accuracies.copy()
    Fake.accuracies[0, 1, 1] = 0.26
    assert _point(Fake(), 4, 0.25, 3.0)["health"]["teacher_not_better"] == [1]
    assert _point(Fake(), 4, 0.25, 3.0, check_teacher=False)["health"]["ok"]


def test_each_generation_is_taught_by_the_previous_one_on_its_own_fresh_noise(data_root, monkeypatch):
    # Three generations: generation g's teacher is generation g−1's shared-init student (the same test accuracy,
    # run by run, for g = 2 and 3), and each runs with its own index g, so its own fresh noise set (fresh_noise).
    import subliminal_mlp.studies.teacher_task as tt

    real, calls = tt.engine.run, []
    monkeypatch.setattr(tt.engine, "run", lambda exp, task, **kw: calls.append((exp.name, kw.get("sweep")))
                        or real(exp, task, **kw))
    cfg = Config(hidden_widths=(16,), n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=1024, batch_size=128,
                 learning_rate=3e-3)  # students that move
    settings = TeacherTaskSettings(classes=(10,), teacher_epochs=(1,), student_epochs=(1,), generations=3)
    gens = run_teacher_task(cfg, load_mnist(data_root), settings)["parts"]["generations"]
    assert [sweep for name, sweep in calls if name.startswith("teacher_task_generations")] == [
        {GENERATION: [2.0]}, {GENERATION: [3.0]}]
    pts = gens["points"]
    student = [np.asarray(p["models"]["student_aux"]["values"]) for p in pts]
    # The students move (else the chain below holds trivially): each generation's accuracies differ from the last's
    # in some run (not in every run: two models can score the same 0.0893 on 10,000 images, as here at 16 wide).
    assert np.any(student[0] != student[1]) and np.any(student[1] != student[2])
    for g in (1, 2):
        np.testing.assert_allclose(pts[g]["models"]["teacher"]["values"], pts[g - 1]["models"]["student_aux"]["values"],
                                   atol=1e-4)
    assert gens["values"] == [1, 2, 3] and gens["fit"]["generations"] == [1.0, 2.0, 3.0]


def test_every_panel_shows_chance_and_only_a_baseline_it_ran_even_with_one_value_per_part(tmp_path, monkeypatch):
    # The committed record cut to one value per part: a one-point dotted line drew nothing, and a baseline
    # outside the values run stretched the axis. Drawn from the record alone (no compute).
    from pathlib import Path

    import subliminal_mlp.report.plotting as plotting
    from subliminal_mlp.studies.teacher_task import plot_teacher_task

    record = json.loads((Path(__file__).parents[1] / "figures" / "teacher_task.json").read_text())
    keep = {"classes": 2, "teacher_epochs": 1, "student_epochs": 5, "generations": 1}  # (c): its baseline, 5
    for part, value in keep.items():
        record["parts"][part]["points"] = [p for p in record["parts"][part]["points"] if p["value"] == value]
    figs = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **kw: (figs.append(fig), Path(path))[1])
    plot_teacher_task(record, tmp_path / "t.png")
    axes = figs[0].axes
    for ax, part in zip(axes, keep):
        chance = [line for line in ax.get_lines() if line.get_label() == "chance (1/K)"]
        want = 0.5 if part == "classes" else 0.1
        assert len(chance) == 1 and set(np.asarray(chance[0].get_ydata(), float)) == {want}, part
        assert len(set(chance[0].get_xdata())) == 2, part  # a segment, not one point (which draws nothing)
        lo, hi = ax.get_xlim()
        assert lo < keep[part] < hi, part
    grey = [[line for line in ax.get_lines() if line.get_color() == "#bbbbbb"] for ax in axes[:3]]
    # K = 10 and 5 teacher epochs were not run in (a) and (b): no baseline line there; (c) ran its 5.
    assert [len(g) for g in grey] == [0, 0, 1] and list(grey[2][0].get_xdata()) == [5, 5]
    plotting.plt.close(figs[0])
