"""What the inputs must be: the new input sources against independent computations, the settings'
validation, and every family end to end on real MNIST in one compiled program (a tiny configuration)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import subliminal_mlp as sm
from subliminal_mlp import Config, inputs
from subliminal_mlp.core.config import ConfigError
from subliminal_mlp.core.results import read_results
from subliminal_mlp.studies import input_families as F


def draw(src, idx, key=0, hp=None):
    hp = {} if hp is None else hp
    return src.draw(src.prepare(jax.random.PRNGKey(key), src.arrays, hp), jnp.asarray(idx), hp)


@pytest.fixture(scope="module")
def mnist(data_root):
    return sm.load_mnist(data_root)


def fft_modulus(x):
    return np.abs(np.fft.fft2(np.asarray(x, np.float64).reshape(-1, 28, 28)))


# ----------------------------------------------------------------------------- the new input sources


def test_amplitude_spectrum_is_the_mean_fourier_modulus(mnist):
    x = mnist.train_images[:3000]
    np.testing.assert_allclose(inputs.amplitude_spectrum(x), fft_modulus(x).mean(0), rtol=1e-5, atol=1e-4)
    with pytest.raises(sm.InputError, match="28 × 28"):
        inputs.amplitude_spectrum(np.zeros((4, 100)))


def test_surrogate_has_the_target_spectrum_random_phases_and_the_stated_scale(mnist):
    target = fft_modulus(mnist.train_images[:1000]).mean(0)  # symmetric: A(f) = A(−f)
    src = inputs.phase_randomised(10_000, target, std="s")
    sample = jax.jit(lambda key, idx, s: src.draw(src.prepare(key, src.arrays, {"s": s}), idx, {"s": s}))
    key, idx, std = jax.random.PRNGKey(0), jnp.arange(600), np.sqrt(1 / 3)
    x = np.asarray(sample(key, idx, std), np.float64)
    spec = np.fft.fft2(x.reshape(-1, 28, 28))
    a = target.copy()
    a[0, 0] = 0.0  # the mean is dropped
    c = std * 784 / np.sqrt(np.sum(a * a))
    # Every image (not only their mean) has the amplitude spectrum c·A, mean 0 and mean square std².
    np.testing.assert_allclose(np.abs(spec), np.broadcast_to(c * a, spec.shape), atol=1e-4 * c * a.max())
    np.testing.assert_allclose(x.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose((x**2).mean(axis=1), std**2, rtol=1e-5)
    # The phases are uniform and independent: circular moments over the images vanish (≈ 1/√600 = 0.04).
    p1, p2 = np.angle(spec[:, 3, 5]), np.angle(spec[:, 11, 2])
    for moment in (np.exp(1j * p1), np.exp(2j * p1), np.exp(1j * (p1 - p2))):
        assert abs(moment.mean()) < 0.15
    # Example j depends on (key, j) only, not on the batch; another key draws other images; std scales.
    np.testing.assert_allclose(sample(key, jnp.roll(idx, 5), std), np.roll(x, 5, axis=0), atol=1e-6)
    other = np.asarray(sample(jax.random.PRNGKey(1), idx, std))
    assert abs(np.corrcoef(other.ravel(), x.ravel())[0, 1]) < 0.05
    np.testing.assert_allclose(sample(key, idx, 2 * std), 2 * x, rtol=1e-5, atol=1e-6)
    with pytest.raises(sm.InputError, match="shape"):
        inputs.phase_randomised(10, np.ones((27, 27)))
    # std must be a finite number > 0, like uniform's scale and gaussian's std (0 gave zero images, −1 flipped signs):
    # a number at once, a hyperparameter at every swept value
    for bad in (0.0, -1.0, float("inf")):
        with pytest.raises(sm.InputError, match=f"phase_randomised: std = {bad} is invalid"):
            inputs.phase_randomised(10, np.ones((28, 28)), std=bad)
    from subliminal_mlp.core.inputs import check_source_settings

    named = inputs.phase_randomised(10, np.ones((28, 28)), std="s")
    check_source_settings(named, (784,), [{"s": 0.5}])
    with pytest.raises(sm.InputError, match=r"std = -0.5 \(from hyperparameter 's'\)"):
        check_source_settings(named, (784,), [{"s": 0.5}, {"s": -0.5}])
    # An asymmetric spectrum is symmetrised first, Ā(f) = (A(f) + A(−f)) / 2: a real image's |F x| is symmetric.
    lopsided = np.ones((28, 28))
    lopsided[1, 2] = 5.0  # its mirror frequency (−1, −2) is (27, 26), where A = 1: Ā = 3 at both
    bar = lopsided.copy()
    bar[1, 2] = bar[27, 26] = 3.0
    bar[0, 0] = 0.0
    src = inputs.phase_randomised(4, lopsided)
    y = np.asarray(src.draw(src.prepare(key, src.arrays, {}), jnp.arange(4), {}), np.float64)
    c = std * 784 / np.sqrt(np.sum(bar * bar))
    np.testing.assert_allclose(np.abs(np.fft.fft2(y.reshape(-1, 28, 28))), np.broadcast_to(c * bar, (4, 28, 28)),
                               atol=1e-4 * c * 3)


def test_cycled_and_subspace_take_their_setting_as_a_hyperparameter():
    by_name = draw(inputs.cycled(inputs.uniform(200), "d"), np.arange(200), hp={"d": jnp.float32(7)})
    np.testing.assert_array_equal(by_name, draw(inputs.cycled(inputs.uniform(200), 7), np.arange(200)))
    with pytest.raises(sm.InputError, match="distinct = 2.5"):
        inputs.cycled(inputs.uniform(100), 2.5)
    src = inputs.subspace("k", inputs.uniform(1000))
    x10, x30 = (np.asarray(draw(src, np.arange(200), hp={"k": jnp.float32(k)}), np.float64) for k in (10, 30))
    s = np.linalg.svd(x30, compute_uv=False)
    assert np.sum(s > 1e-3 * s[0]) == 30
    u = np.asarray(draw(inputs.uniform(1000), np.arange(200)), np.float64)
    assert abs(np.mean(np.sum(x10**2, 1)) / np.mean(np.sum(u**2, 1)) - 1) < 0.05  # √(d/k) keeps the power
    # Within a run the subspaces are nested: the k = 10 images lie in the k = 30 subspace.
    basis = np.linalg.svd(x30, full_matrices=False)[2][:30]
    np.testing.assert_allclose(x10 @ basis.T @ basis, x10, atol=1e-4)


# ----------------------------------------------------------------------------- settings


def test_settings_are_validated_before_any_compute():
    for bad in (dict(families=("noise",)), dict(families=()), dict(distributions=("laplace",)),
                dict(subspace_k=(0,)), dict(subspace_k=(10, 10)), dict(blur_sigmas=(-1.0,)), dict(scales=(0.0,)),
                dict(distinct=(2.5,)), dict(spectrum="yes"), dict(scales=[])):
        with pytest.raises(ConfigError, match=f"^{next(iter(bad))} = .* (is invalid|repeats a value)"):
            F.InputFamilySettings(**bad)
    with pytest.raises(ConfigError, match="n_noise = 2048"):
        F.run_input_families(Config(n_noise=2048), None, F.InputFamilySettings(distinct=(4096,)))
    with pytest.raises(ConfigError, match="input dimension"):
        F.InputFamilySettings(subspace_k=(1000,)).check(Config())
    with pytest.raises(ConfigError, match="student_inputs"):
        F.InputFamilySettings().check(Config(student_inputs="gaussian"))
    s = F.InputFamilySettings(families=("scale", "distribution"))
    assert s.families == ("distribution", "scale")  # the record's order
    # any sequence of values, as the other studies' settings take them (a range or an array was refused)
    s = F.InputFamilySettings(families=["subspace"], subspace_k=range(10, 12), distinct=np.array([10, 20]),
                              blur_sigmas=np.array([0.0, 1.0]))
    assert (s.subspace_k, s.distinct, s.blur_sigmas) == ((10, 11), (10, 20), (0.0, 1.0))
    assert all(type(v) in (int, float) for v in (*s.subspace_k, *s.distinct, *s.blur_sigmas))
    for bad in (dict(subspace_k="12"), dict(blur_sigmas=2.0), dict(families="subspace")):
        with pytest.raises(ConfigError, match=f"^{next(iter(bad))} = .* is invalid"):
            F.InputFamilySettings(**bad)
    assert F.InputFamilySettings.from_dict(s.to_dict()) == s


# ----------------------------------------------------------------------------- every family, end to end


def test_every_family_end_to_end_in_one_program(mnist, tmp_path):
    # 1 + 1 epochs of a 32-unit MLP: too short for the students to learn digits (the figure's 10 runs of
    # the paper's settings measure that), long enough to run every family's inputs through the engine.
    cfg = Config(n_runs=2, hidden_widths=(32,), n_noise=1024, batch_size=512, teacher_epochs=1, student_epochs=1)
    settings = F.InputFamilySettings(distributions=("uniform", "bernoulli"), subspace_k=(10,), blur_sigmas=(0.0, 1.0),
                                     distinct=(16, 1024), scales=(0.1, 1.0))
    rec = F.run_input_families(cfg, mnist, settings, fuse=True)
    assert [p["name"] for p in rec["programs"]] == ["input_families:fused"]  # every family, one compilation
    fams = rec["families"]
    assert list(fams) == list(F.FAMILIES)
    assert [s["label"] for s in fams["correlated"]["settings"]] == ["σ = 0", "σ = 1", "MNIST spectrum"]
    for f in fams.values():
        assert f["wall_s"] > 0
        for s in f["settings"]:
            g = np.subtract(s["student_aux"]["values"], s["cross_aux"]["values"])
            np.testing.assert_allclose(s["gain"]["values"], g, atol=1e-7)  # paired per run
            assert s["gain"]["mean"] == pytest.approx(g.mean()) and len(g) == 2
            assert all(0 <= v <= 1 for v in s["student_aux"]["values"] + s["cross_aux"]["values"])
    assert sum(f["wall_s"] for f in fams.values()) == pytest.approx(rec["programs"][0]["wall_s"])
    by = {(fam, s["label"]): s for fam, f in fams.items() for s in f["settings"]}
    # U[-1, 1] at σ = 0, d = n, s = 1 is one setting, computed once and shown in four families; the others differ.
    same = [by[k]["cross_aux"]["values"] for k in (("distribution", "uniform"), ("correlated", "σ = 0"),
                                                     ("distinct", "1024"), ("scale", "1"))]
    assert all(v == same[0] for v in same)
    assert len({tuple(s["cross_aux"]["values"]) for s in by.values()}) == len(by) - 3
    assert rec["teacher"]["accuracy"]["mean"] > 0.8 and rec["health"]["ok"]
    paths = F.write_input_families(rec, tmp_path)
    back = read_results(paths["json"], format=F.FORMAT)
    assert back["families"]["subspace"]["settings"][0]["value"] == 10
    assert back["input_settings"] == settings.to_dict() and back["config"] == cfg.to_dict()
    assert np.shape(back["spectrum"]["amplitude"]) == (28, 28)
    n_rows = sum(len(f["settings"]) for f in fams.values()) * cfg.n_runs
    assert len(paths["csv"].read_text().splitlines()) == 1 + n_rows
    assert paths["png"].stat().st_size > 10_000
    assert "MNIST spectrum" in F.format_input_families_table(rec)


# ----------------------------------------------------------------------------- records, against fakes


def test_settings_refuse_what_the_study_cannot_run():
    for bad in (dict(blur_sigmas=(1.0, 1.0)), dict(scales=(1, 1.0)), dict(distributions=("spectrum",)),
                dict(distributions=("subspace",))):
        with pytest.raises(ConfigError, match=f"^{next(iter(bad))} = .* (is invalid|repeats a value)"):
            F.InputFamilySettings(**bad)
    s = F.InputFamilySettings(subspace_k=(784,), distinct=(60_000,))
    s.check(Config())  # k = input_dim and d = n_noise are the largest values taken
    with pytest.raises(ConfigError, match="correlated family"):
        F.InputFamilySettings(families=("correlated",)).check(Config(input_dim=100))
    F.InputFamilySettings(families=("distribution",)).check(Config(input_dim=100))  # no blur: any input_dim
    with pytest.raises(ConfigError, match="init_noise"):
        s.check(Config(init_noise=0.01))


def test_each_row_carries_its_own_hyperparameters_and_programs_split_by_code_path():
    cfg = Config(n_noise=2048)
    s = F.InputFamilySettings(distributions=("gaussian", "bernoulli"), subspace_k=(10, 30), blur_sigmas=(0.0, 1.5),
                              distinct=(16,), scales=(0.5,))
    # (noise_kind, noise_scale, blur_sigma, distinct, subspace_k), by hand from the module docstring.
    want = [("distribution", 1.0, 1.0, 0.0, 2048.0, 784.0), ("distribution", 2.0, 1.0, 0.0, 2048.0, 784.0),
            ("subspace", 4.0, 1.0, 0.0, 2048.0, 10.0), ("subspace", 4.0, 1.0, 0.0, 2048.0, 30.0),
            ("correlated", 0.0, 1.0, 0.0, 2048.0, 784.0), ("correlated", 0.0, 1.0, 1.5, 2048.0, 784.0),
            ("correlated", 3.0, 1.0, 0.0, 2048.0, 784.0),
            ("distinct", 0.0, 1.0, 0.0, 16.0, 784.0), ("scale", 0.0, 0.5, 0.0, 2048.0, 784.0)]
    table = F.rows(cfg, s)
    assert [(r.family, *r.hp) for r in table] == want
    assert [r.value for r in table] == ["gaussian", "bernoulli", 10, 30, 0.0, 1.5, None, 16, 0.5]
    values = list(dict.fromkeys(r.hp for r in table))
    groups = F.program_groups(values, fuse=False)
    assert {k: [v[:3] for v in g] for k, g in groups.items()} == {
        "gaussian": [(1.0, 1.0, 0.0)], "bernoulli": [(2.0, 1.0, 0.0)], "subspace": [(4.0, 1.0, 0.0)] * 2,
        "uniform": [(0.0, 1.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.5, 0.0)], "uniform_blurred": [(0.0, 1.0, 1.5)],
        "spectrum": [(3.0, 1.0, 0.0)]}
    assert F.program_groups(values, fuse=True) == {"fused": values} and F.program_groups([], fuse=True) == {}


def test_the_uniform_kind_is_the_papers_noise_and_each_kind_draws_its_own_source():
    cfg = Config(n_noise=64, batch_size=32)
    # Kinds (0, 2) and (1, 2): a kind's number is not its position among its program's kinds.
    src = F.fused_source(cfg, [(0.0, 1.0, 0.0, 64.0, 784.0), (2.0, 1.0, 0.0, 64.0, 784.0)])
    other = F.fused_source(cfg, [(1.0, 1.0, 0.0, 64.0, 784.0), (2.0, 1.0, 0.0, 64.0, 784.0)])
    key, idx = jax.random.PRNGKey(3), jnp.arange(8)

    def fused(kind, scale=1.0, src=src):
        hp = {"noise_kind": jnp.float32(kind), "noise_scale": jnp.float32(scale)}
        return np.asarray(src.draw(src.prepare(key, src.arrays, hp), idx, hp))

    def alone(s, k):
        return np.asarray(s.draw(s.prepare(k, s.arrays, {}), idx, {}))

    # The uniform kind draws from the run's key itself: bit for bit the paper's U[-1, 1] noise, s·u at scale s.
    paper = alone(inputs.uniform(64, shape=(784,)), key)
    np.testing.assert_array_equal(fused(0), paper)
    np.testing.assert_allclose(fused(0, scale=3.0), 3.0 * paper, rtol=1e-6)
    # Bernoulli (kind 2) and Gaussian (kind 1): each its own source, from fold_in(fold_in(key, KIND_STREAM), kind).
    np.testing.assert_array_equal(fused(2), alone(inputs.bernoulli(64, shape=(784,)),
                                                  jax.random.fold_in(jax.random.fold_in(key, F.KIND_STREAM), 2)))
    assert set(np.unique(fused(2))) == {-1.0, 1.0}
    np.testing.assert_array_equal(fused(2, src=other), fused(2))
    np.testing.assert_array_equal(fused(1, src=other), alone(inputs.gaussian(64, shape=(784,)),
                                                  jax.random.fold_in(jax.random.fold_in(key, F.KIND_STREAM), 1)))


def test_the_record_table_csv_and_figure_show_each_settings_own_numbers(mnist, tmp_path, monkeypatch):
    """A fake engine: each setting's accuracies are a function of its hyperparameters, so a setting that
    reads another's numbers, or a table, CSV or figure that shows another model's, is caught."""
    import types
    import zlib

    from subliminal_mlp.report.plotting import plt

    def code(hp):  # a distinct number in [0.2, 0.7) per hyperparameter tuple
        return 0.2 + zlib.crc32(repr(tuple(round(float(x), 6) for x in hp)).encode()) % 500 / 1000

    def student(hp):
        return np.array([code(hp), code(hp) + 0.1])

    def cross(hp):
        return np.array([code(hp) / 4, code(hp) / 2])

    calls = []

    def fake_run(exp, task, *, n_runs, sweep, teachers, **kw):
        hps = [None] if sweep is None else list(zip(*(sweep[k] for k in F.FUSED_HPARAMS)))
        calls.append((exp.name, hps, teachers))
        fixed = {"teacher": np.array([0.9, 0.8]), "reference": np.array([0.1, 0.12])}
        return types.SimpleNamespace(
            accuracy=lambda name, v=0: fixed[name] if name in fixed else (student if name == "student_aux"
                                                                          else cross)(hps[v]),
            health=lambda v: {"ok": True, "nonfinite": [], "teacher_not_better": [1], "teacher_margin": 0.0},
            teachers=f"teachers of {exp.name}", compile_s=1.0, run_s=2.0, teacher_cache=None, devices=["cpu"],
            run_batch=None)

    monkeypatch.setattr(F.engine, "run", fake_run)
    cfg = Config(n_runs=2, n_noise=2048)
    settings = F.InputFamilySettings(distributions=("uniform", "bernoulli"), subspace_k=(10, 30), spectrum=False,
                                     blur_sigmas=(0.0, 1.0), distinct=(16,), scales=(0.5, 1.0))
    rec = F.run_input_families(cfg, mnist, settings)
    # (noise_kind, noise_scale, blur_sigma, distinct, subspace_k) of each setting, by hand.
    u = (0.0, 1.0, 0.0, 2048.0, 784.0)
    want = {("distribution", "uniform"): u, ("distribution", "bernoulli"): (2.0, 1.0, 0.0, 2048.0, 784.0),
            ("subspace", "10"): (4.0, 1.0, 0.0, 2048.0, 10.0), ("subspace", "30"): (4.0, 1.0, 0.0, 2048.0, 30.0),
            ("correlated", "σ = 0"): u, ("correlated", "σ = 1"): (0.0, 1.0, 1.0, 2048.0, 784.0),
            ("distinct", "16"): (0.0, 1.0, 0.0, 16.0, 784.0), ("scale", "0.5"): (0.0, 0.5, 0.0, 2048.0, 784.0),
            ("scale", "1"): u}
    got = {(fam, s["label"]): s for fam, f in rec["families"].items() for s in f["settings"]}
    assert list(got) == list(want)
    for k, hp in want.items():
        s = got[k]
        assert s["student_aux"]["values"] == pytest.approx(student(hp)), k
        assert s["cross_aux"]["values"] == pytest.approx(cross(hp)), k
        assert s["gain"]["values"] == pytest.approx(student(hp) - cross(hp)), k
        # ... computed by the program the setting names.
        assert f"{k[0]}: {k[1]}" in " / ".join(rec["programs"][s["program"]]["labels"]), k
    # The teachers are trained once, by the first program (one with a single value), and handed to every other.
    assert len(calls[0][1]) == 1 and calls[0][2] is None
    assert all(t == f"teachers of {calls[0][0]}" for _, _, t in calls[1:]) and len(calls) == len(rec["programs"])
    assert rec["teacher"]["accuracy"]["values"] == [0.9, 0.8] and rec["reference"]["accuracy"]["mean"] == 0.11
    assert rec["health"]["teacher_not_better"] == [1] and rec["health"]["ok"] is False  # a teacher no better
    # The table shows each model's own mean, the CSV each run's own numbers.
    lines = F.format_input_families_table(rec).splitlines()
    line = next(x for x in lines if x.split()[:2] == ["subspace", "30"])
    hp = want["subspace", "30"]
    assert [float(x) for x in line.split()[2::3][:3]] == pytest.approx(
        [student(hp).mean(), cross(hp).mean(), (student(hp) - cross(hp)).mean()], abs=1e-3)
    bars = []
    monkeypatch.setattr(plt.Axes, "errorbar",
                        lambda self, x, y, yerr=None, **kw: bars.append((self.get_title(), kw["label"], y, yerr)))
    paths = F.write_input_families(rec, tmp_path)
    rows = [r.split(",") for r in paths["csv"].read_text().splitlines()]
    assert rows[0] == ["family", "setting", "value", "run", "student_aux", "cross_aux", "gain"]
    row = next(r for r in rows if r[:4] == ["subspace", "30", "30", "1"])
    assert [float(x) for x in row[4:]] == pytest.approx([student(hp)[1], cross(hp)[1], student(hp)[1] - cross(hp)[1]],
                                                        abs=1e-6)
    # The figure: one panel per family (drawn before its title is set), each series its label's numbers.
    assert len(bars) == 3 * len(F.FAMILIES)
    sub = [b for b in bars[3:6]]  # the subspace panel
    hps = [want["subspace", "10"], want["subspace", "30"]]
    for (_, label, y, yerr), key in zip(sub, ("student_aux", "cross_aux", "gain")):
        assert label.startswith({"student_aux": "student", "cross_aux": "cross", "gain": "gain"}[key])
        np.testing.assert_allclose(y, [got["subspace", k][key]["mean"] for k in ("10", "30")])
        np.testing.assert_allclose(yerr, [got["subspace", k][key]["ci95"] for k in ("10", "30")])
    np.testing.assert_allclose(sub[0][2], [student(h).mean() for h in hps])
    np.testing.assert_allclose(sub[1][2], [cross(h).mean() for h in hps])


def test_each_familys_wall_time_is_its_share_of_the_programs_teachers_only_program_included(mnist, monkeypatch):
    """A fake engine on a fake clock: each program takes a known time; a family gets its settings' share of
    each program (a value shown by two families split between them), and a teachers-only program, which
    serves every value, is split over all of them, so the families add up to the programs."""
    import types

    clock = {"t": 0.0}
    seconds = {"input_families:teachers": 60.0, "input_families:subspace": 30.0, "input_families:uniform": 12.0}

    def fake_run(exp, task, *, n_runs, sweep, teachers, **kw):
        clock["t"] += seconds[exp.name]
        return types.SimpleNamespace(
            accuracy=lambda name, v=0: np.array([0.5, 0.5]),
            health=lambda v: {"ok": True, "nonfinite": [], "teacher_not_better": [], "teacher_margin": 0.1},
            teachers="teachers", compile_s=0.0, run_s=0.0, teacher_cache=None, devices=["cpu"], run_batch=None)

    monkeypatch.setattr(F.engine, "run", fake_run)
    monkeypatch.setattr(F.time, "perf_counter", lambda: clock["t"])
    # subspace: k = 10, 30 (one program, 2 values); scale: 0.5 and 1 (the uniform program, 2 values; no
    # program has a single value, so the teachers are trained alone first).
    settings = F.InputFamilySettings(families=("subspace", "scale"), subspace_k=(10, 30), scales=(0.5, 1.0))
    rec = F.run_input_families(Config(n_runs=2, n_noise=2048), mnist, settings)
    assert [(p["name"], p["wall_s"]) for p in rec["programs"]] == [(n, s) for n, s in seconds.items()]
    # 4 values in all: the teachers' 60 s is 15 s each. The subspace family's 2 values: 30 s + 2 × 15 s.
    assert rec["families"]["subspace"]["wall_s"] == pytest.approx(30 + 2 * 15)
    assert rec["families"]["scale"]["wall_s"] == pytest.approx(12 + 2 * 15)
    assert rec["timing"]["total_s"] == pytest.approx(sum(seconds.values()))


def test_a_value_two_families_show_splits_its_time_between_them(monkeypatch, fake_dataset):
    """uniform U[-1, 1] is both the distribution family's "uniform" and the scale family's 1: its share of the
    program is split between the two families (not given to each), so the families add up to the programs."""
    import types

    clock = {"t": 0.0}

    def fake_run(exp, task, *, n_runs, sweep, teachers, **kw):
        clock["t"] += 24.0
        return types.SimpleNamespace(
            accuracy=lambda name, v=0: np.array([0.5, 0.5]),
            health=lambda v: {"ok": True, "nonfinite": [], "teacher_not_better": [], "teacher_margin": 0.1},
            teachers="teachers", compile_s=0.0, run_s=0.0, teacher_cache=None, devices=["cpu"], run_batch=None)

    monkeypatch.setattr(F.engine, "run", fake_run)
    monkeypatch.setattr(F.engine, "Task", types.SimpleNamespace(from_dataset=lambda d: None))
    monkeypatch.setattr(F.time, "perf_counter", lambda: clock["t"])
    settings = F.InputFamilySettings(families=("distribution", "scale"), distributions=("uniform", "gaussian"),
                                     scales=(0.5, 1.0))
    rec = F.run_input_families(Config(n_runs=2, n_noise=2048), fake_dataset(), settings)
    assert [(p["name"], p["labels"]) for p in rec["programs"]] == [
        ("input_families:gaussian", ["distribution: gaussian"]),
        ("input_families:uniform", ["distribution: uniform / scale: 1", "scale: 0.5"])]
    # gaussian: 24 s to distribution; the uniform program's 24 s: 12 s per value, the shared one 6 s + 6 s.
    assert rec["families"]["distribution"]["wall_s"] == pytest.approx(24 + 6)
    assert rec["families"]["scale"]["wall_s"] == pytest.approx(6 + 12)
    assert sum(f["wall_s"] for f in rec["families"].values()) == pytest.approx(rec["timing"]["total_s"])
