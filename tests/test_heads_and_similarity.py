"""Linear CKA against the HSIC formula, its invariances, and the head-compatibility experiment."""

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from subliminal_mlp.core.config import Config
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.studies.figure10 import run_experiment
from subliminal_mlp import engine
from subliminal_mlp.studies.heads import (SHARING, _correlations, _rank, compose,
                                  format_heads_table, heads_experiment, heads_students, run_heads, student_names,
                                  write_heads)
from subliminal_mlp.core.model import init_params
from subliminal_mlp.core.models import mlp
from subliminal_mlp.core.students import StartContext
from subliminal_mlp.theory.similarity import feature_cosine, linear_cka, penultimate_similarity


def hsic_cka(x, y):
    """CKA through centred Gram matrices, in float64: tr(KHLH) / sqrt(tr(KHKH) tr(LHLH))."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = h @ x @ x.T @ h, h @ y @ y.T @ h
    return np.trace(k @ l_) / np.sqrt(np.trace(k @ k) * np.trace(l_ @ l_))


# Each new shape compiles linear_cka's ops again: 12 examples keep it to a few seconds.
@settings(max_examples=12, deadline=None)
@given(n=st.integers(4, 40), p=st.integers(1, 12), q=st.integers(1, 12), seed=st.integers(0, 2**16))
def test_linear_cka_matches_the_hsic_formula(n, p, q, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, p)).astype(np.float32)
    y = (np.tanh(x[:, :1] * 2) + 0.5 * rng.standard_normal((n, q))).astype(np.float32)  # partly dependent on x
    got = float(linear_cka(x, y))
    assert got == pytest.approx(hsic_cka(x, y), rel=1e-4, abs=1e-6)
    assert 0 <= got <= 1 + 1e-6
    assert got == pytest.approx(float(linear_cka(y, x)), rel=1e-5)


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**16), scale=st.floats(0.01, 100), shift=st.floats(-10, 10))
def test_linear_cka_invariances(seed, scale, shift):
    k1, k2, k3 = jax.random.split(jax.random.PRNGKey(seed), 3)
    x = jax.random.normal(k1, (50, 6))
    q, _ = jnp.linalg.qr(jax.random.normal(k2, (6, 6)))
    assert float(linear_cka(x, scale * x @ q + shift)) == pytest.approx(1.0, abs=1e-4)
    y = jax.random.normal(k3, (50, 4))
    assert float(linear_cka(x, y)) == pytest.approx(float(linear_cka(x @ q * scale, y)), rel=1e-3, abs=1e-5)


def test_cka_of_constant_features_is_zero_and_cosine_by_hand():
    x = jax.random.normal(jax.random.PRNGKey(0), (10, 3))
    assert float(linear_cka(x, jnp.ones((10, 2)))) == 0.0
    # ... but constant columns of which one is infinite are not finite features: NaN (it was 0)
    assert np.isnan(float(linear_cka(x, jnp.ones((10, 2)).at[:, 1].set(jnp.inf))))
    assert np.isnan(float(linear_cka(jnp.full((10, 3), -jnp.inf), x)))
    a = jnp.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    b = jnp.array([[0.0, 2.0], [3.0, 3.0], [1.0, 1.0]])
    assert float(feature_cosine(a, b)) == pytest.approx((0.0 + 1.0 + 0.0) / 3)
    # Signed: opposite rows have cosine −1.
    assert float(feature_cosine(x, -x)) == pytest.approx(-1.0)
    assert float(feature_cosine(jnp.array([[1.0, 0.0]]), jnp.array([[-1.0, 0.0]]))) == -1.0


def test_spearman_with_ties_and_monotone_maps():
    x = np.array([0.1, 0.5, 0.5, 0.9, 2.0])
    c = _correlations(x, np.exp(3 * x))  # strictly increasing map: Spearman 1, Pearson below 1
    assert c["spearman"] == pytest.approx(1.0) and c["pearson"] < 1.0
    np.testing.assert_array_equal(_rank(x), [0, 1.5, 1.5, 3, 4])


def test_compose_takes_hidden_layers_and_head_from_different_models():
    cfg = Config(hidden_widths=(8, 8))
    a, b = init_params(jax.random.PRNGKey(0), cfg), init_params(jax.random.PRNGKey(1), cfg)
    c = compose(a, b)
    assert set(c) == set(a)
    for layer in ("hidden_0", "hidden_1"):
        np.testing.assert_array_equal(c[layer]["kernel"], a[layer]["kernel"])
    np.testing.assert_array_equal(c["head"]["kernel"], b["head"]["kernel"])
    assert [n for n, _, _ in SHARING][0] == "shared_all" and student_names((0.1,))[-1] == "perturbed_0.1_aux"


def test_the_student_table_starts_where_the_sharing_says(data_root):
    # Each layers(...) start is compose() of the two references, and inside the engine's program the
    # reference similarity measures θ0 and the cross start θ0' of the run, whatever seed the experiment is run
    # with: with 0 distillation epochs the students are their starts, and with 0 teacher epochs the teacher is θ0.
    model = mlp((8, 8))
    n_runs, seed = 3, 5
    for run in range(n_runs):
        refs = engine.references(model, seed, run, n_runs)
        ctx = StartContext(refs, {"teacher": refs["own"]}, engine.run_keys(seed, run), {}, model)
        src = {"own": refs["own"], "other": refs["cross"]}
        starts = {s.name: s.start(ctx) for s in heads_students((0.1,))}
        for name, hidden, head in SHARING:
            for which in ("aux", "all"):
                jax.tree.map(np.testing.assert_array_equal, starts[f"{name}_{which}"], compose(src[hidden], src[head]))
    assert [s.outputs for s in heads_students((0.1,))] == ["aux"] * 4 + ["all"] * 4 + ["aux"]

    cfg = Config(n_runs=n_runs, seed=seed, hidden_widths=(8, 8), n_noise=1024, batch_size=512, teacher_epochs=0,
                 student_epochs=0)
    exp = heads_experiment(cfg, (0.1,), 100)
    task = engine.Task.from_dataset(load_mnist(data_root))
    # Another seed than the config's (and two runs fewer): θ0' is that run's cross start (it was looked up by the
    # config's seed and run count, and silently fell back to run 0's of another seed).
    other_seed, n = seed + 1, n_runs - 1
    result = engine.run(exp.replace(metrics={**exp.metrics, "start": lambda v: jax.flatten_util.ravel_pytree(
        v.students["shared_none_aux"])[0]}), task, n_runs=n, seed=other_seed)
    x = task.test_x[:100]
    for run in range(n):
        refs = engine.references(model, other_seed, run, n)
        # The shared_none students start at θ0' (up to float rounding: XLA fuses the draw differently) ...
        np.testing.assert_allclose(result.metrics["start"][0][run], jax.flatten_util.ravel_pytree(refs["cross"])[0],
                                   rtol=1e-6, atol=1e-7)
        # ... and θ0 and θ0' against the teacher (θ0) are measured by hand.
        for j, which in enumerate(("own", "cross")):
            want = penultimate_similarity(refs["own"], refs[which], x, model.features)
            np.testing.assert_allclose(result.metrics["reference_similarity"][0][run][:, j],
                                       [want["cka"], want["cosine"]], rtol=1e-5)
    np.testing.assert_allclose(result.metrics["similarity"][0][:, 0, :2], 1.0, rtol=1e-5)  # shared_all: at θ0


def test_run_heads_small_real_run(data_root, tmp_path, check_envelope):
    data = load_mnist(data_root)
    cfg = Config(n_runs=3, hidden_widths=(64,), n_noise=4096, batch_size=512, teacher_epochs=1, student_epochs=2)
    rec = run_heads(cfg, data, sigmas=(0.05, 1.0), n_similarity=500)
    check_envelope(rec, data.checksums)
    assert list(rec["students"]) == student_names((0.05, 1.0))
    s = rec["students"]
    for v in s.values():
        assert len(v["accuracy"]["values"]) == 3 and all(0 <= c <= 1 + 1e-5 for c in v["cka"]["values"])
    # The fully shared and the cross-model aux students are Figure 10's student_aux and cross_aux.
    fig10 = run_experiment(cfg, data)
    for ours, theirs in (("shared_all_aux", "student_aux"), ("shared_none_aux", "cross_aux"),
                         ("shared_all_all", "student_all")):
        np.testing.assert_allclose(s[ours]["accuracy"]["values"], fig10.model_accuracies(theirs), atol=0.02)
    # Sharing everything beats sharing nothing, in accuracy and in CKA with the teacher (all logits).
    assert s["shared_all_all"]["accuracy"]["mean"] > s["shared_none_all"]["accuracy"]["mean"] + 0.05
    assert s["shared_all_all"]["cka"]["mean"] > s["shared_none_all"]["cka"]["mean"]
    assert rec["correlation"]["cka"]["n_points"] == 3 * len(rec["students"])
    n_aux = sum(n.endswith("_aux") for n in rec["students"])
    assert rec["correlation_within"]["aux"]["cka"]["n_points"] == 3 * n_aux
    assert rec["correlation_within"]["all"]["cosine"]["n_points"] == 3 * len(SHARING)
    assert "Spearman" in format_heads_table(rec)
    with pytest.raises(ValueError, match="sigmas"):
        run_heads(cfg, data, sigmas=(0.0,))
    assert all(p.stat().st_size > 0 for p in write_heads(rec, tmp_path).values())


@pytest.mark.parametrize("kw, match", [(dict(n_similarity=100.0), "n_similarity = 100.0"),
                                       (dict(n_similarity=1), "n_similarity = 1"),
                                       (dict(n_similarity=2), "every linear CKA is 1"),
                                       (dict(sigmas=(0.0,)), "finite number > 0"),
                                       (dict(sigmas=(float("inf"),)), "finite number > 0"),
                                       (dict(sigmas=(0.01, 0.0100000001)), "repeat a value"),
                                       (dict(sigmas=0.1), r"sigmas = 0.1 is invalid: give a sequence of numbers"),
                                       (dict(sigmas="abc"), r"sigmas = 'abc' is invalid: give a sequence of numbers"),
                                       # bytes' items are ints and a bool is no σ: neither taken as numbers
                                       (dict(sigmas=b"\x01"), r"sigmas = b'\\x01' is invalid: give a sequence"),
                                       (dict(sigmas=(True, 0.1)), r"sigmas = \(True, 0.1\) is invalid: give a")])
def test_run_heads_refuses_bad_settings_before_any_compute(kw, match, monkeypatch, fake_dataset):
    from subliminal_mlp.core.config import ConfigError
    from subliminal_mlp.studies import heads as heads_mod

    monkeypatch.setattr(heads_mod.engine, "run", lambda *a, **k: pytest.fail("computed"))
    data = fake_dataset()
    with pytest.raises(ConfigError, match=match):
        heads_mod.run_heads(Config(hidden_widths=(8,), n_runs=1, n_noise=1024, batch_size=256), data,
                            **{"n_similarity": 500, **kw})


def test_run_heads_takes_numpys_numbers_as_sigmas(monkeypatch, fake_dataset):
    """σs from numpy (an array, or numpy scalars in a tuple) are numbers: taken, as Python floats."""
    from subliminal_mlp.studies import heads as heads_mod

    class Built(Exception):
        pass

    def built(cfg, sigmas, n_similarity, pool=None):
        raise Built(sigmas)

    monkeypatch.setattr(heads_mod.engine, "run", lambda *a, **k: pytest.fail("computed"))
    monkeypatch.setattr(heads_mod, "heads_experiment", built)
    cfg = Config(hidden_widths=(8,), n_runs=1, n_noise=1024, batch_size=256)
    for sigmas in (np.array([0.05, 0.1]), (np.float32(0.05), np.float64(0.1)), (np.int64(1), 0.1)):
        with pytest.raises(Built) as e:
            heads_mod.run_heads(cfg, fake_dataset(), sigmas=sigmas, n_similarity=500)
        assert e.value.args[0] == tuple(float(s) for s in sigmas)
        assert all(type(s) is float for s in e.value.args[0])


def test_the_sigma_students_take_init_noise_kind():
    # An orthogonal init_noise_kind makes the σ students' noise ⟂ the teacher's update (it was ignored, while the
    # record said "orthogonal"); the sharings are the same either way.
    from subliminal_mlp.core.students import perturbed
    from subliminal_mlp.studies import heads as heads_mod

    cfg = Config(hidden_widths=(8,), n_noise=1024, batch_size=256)
    iso = heads_mod.heads_experiment(cfg, (0.1, 0.2), 50).students
    perp = heads_mod.heads_experiment(cfg.replace(init_noise_kind="orthogonal"), (0.1, 0.2), 50).students
    assert [s.start for s in iso[-2:]] == [perturbed(0.1), perturbed(0.2)]
    assert [s.start for s in perp[-2:]] == [perturbed(0.1, orthogonal=True), perturbed(0.2, orthogonal=True)]
    assert iso[:-2] == perp[:-2] and [s.name for s in iso] == [s.name for s in perp]


def test_penultimate_similarity_of_a_model_with_itself_and_with_its_last_layer_rotated():
    from subliminal_mlp.core.models import mlp
    from subliminal_mlp.theory.similarity import penultimate_similarity

    net = mlp((16, 8))
    a = net.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (64, 784), minval=-1.0, maxval=1.0)
    same = penultimate_similarity(a, a, x, features_fn=net.features)
    assert float(same["cka"]) == pytest.approx(1.0, abs=1e-5) and float(same["cosine"]) == pytest.approx(1.0, abs=1e-5)
    # Only the output layer differs: the penultimate activations (before it) are the same.
    b = {**a, "head": jax.tree.map(lambda w: -2.0 * w, a["head"])}
    assert float(penultimate_similarity(a, b, x, features_fn=net.features)["cka"]) == pytest.approx(1.0, abs=1e-5)
    # Another initialisation: not the same features (linear CKA of independent random features is well below 1).
    c = net.init(jax.random.PRNGKey(2))
    other = penultimate_similarity(a, c, x, features_fn=net.features)
    assert float(other["cka"]) < 0.9
    # Its cosine is that of the two models' features (row by row), not of a model with itself.
    fa, fc = net.features(a, x), net.features(c, x)
    assert float(other["cosine"]) == pytest.approx(float(feature_cosine(fa, fc)), rel=1e-6)
    assert float(other["cosine"]) < 0.95
    assert float(other["cka"]) == pytest.approx(float(linear_cka(fa, fc)), rel=1e-6)


def _fake_heads_result(names, n_runs, seed=0):
    """An engine result for :func:`run_heads`: distinct accuracies, similarities and reference similarities."""
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    acc = {n: rng.uniform(0, 1, n_runs) for n in ("reference", "teacher", *names)}
    sim = rng.uniform(0, 1, (n_runs, 2, len(names)))
    ref = rng.uniform(0, 1, (n_runs, 2, 2))
    health = {"ok": True, "nonfinite": [], "teacher_not_better": [], "teacher_margin": 0.05}
    return SimpleNamespace(accuracy=lambda n: acc[n], metrics={"similarity": [sim], "reference_similarity": [ref]},
                           devices=["cpu"], compile_s=0.5, run_s=0.25, health=lambda v: health), acc, sim, ref


def _spearman(x, y):  # no ties: Pearson of the ranks, the ranks by double argsort
    return np.corrcoef(np.argsort(np.argsort(x)), np.argsort(np.argsort(y)))[0, 1]


def test_run_heads_files_every_number_under_its_student_and_measure(tmp_path, monkeypatch, fake_dataset):
    # engine.run faked: the record's assembly (which column is which student, CKA or cosine, own or other,
    # the correlations pooled and within groups) is checked against the arrays it was given.
    from types import SimpleNamespace

    from subliminal_mlp.studies import heads as heads_mod

    sigmas, n_runs = (0.05, 1.0), 3
    names = student_names(sigmas)
    fake, acc, sim, ref = _fake_heads_result(names, n_runs)
    monkeypatch.setattr(heads_mod.engine, "run", lambda *a, **k: fake)
    monkeypatch.setattr(heads_mod.engine, "Task", SimpleNamespace(from_dataset=lambda d: None))
    data = fake_dataset()
    cfg = Config(hidden_widths=(8,), n_runs=n_runs, n_noise=1024, batch_size=256)
    rec = run_heads(cfg, data, sigmas=sigmas, n_similarity=500)
    assert list(rec["students"]) == names
    for j, n in enumerate(names):
        s = rec["students"][n]
        np.testing.assert_allclose(s["accuracy"]["values"], acc[n])
        np.testing.assert_allclose(s["cka"]["values"], sim[:, 0, j])
        np.testing.assert_allclose(s["cosine"]["values"], sim[:, 1, j])
        assert s["cosine"]["mean"] == pytest.approx(sim[:, 1, j].mean())
        assert s["cosine"]["ci95"] == pytest.approx(1.96 * sim[:, 1, j].std(ddof=1) / np.sqrt(n_runs))
    for j, which in enumerate(("own", "other")):
        np.testing.assert_allclose(rec["references"][which]["cka"]["values"], ref[:, 0, j])
        np.testing.assert_allclose(rec["references"][which]["cosine"]["values"], ref[:, 1, j])
    np.testing.assert_allclose(rec["teacher"]["accuracy"]["values"], acc["teacher"])
    np.testing.assert_allclose(rec["reference"]["accuracy"]["values"], acc["reference"])
    a = np.stack([acc[n] for n in names], axis=1)
    for k, kind in enumerate(("cka", "cosine")):
        for group, cols in (("all students", range(len(names))), ("aux", [0, 1, 2, 3, 8, 9]), ("all", [4, 5, 6, 7])):
            c = rec["correlation"][kind] if group == "all students" else rec["correlation_within"][group][kind]
            x, y = sim[:, k][:, list(cols)].ravel(), a[:, list(cols)].ravel()
            assert c["n_points"] == x.size
            assert c["pearson"] == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
            assert c["spearman"] == pytest.approx(_spearman(x, y), abs=1e-12)
    assert rec["data"]["subset"] == {"similarity_test_images": [0, 500]}
    # The CSV: one row per (student, run): accuracy, CKA, cosine.
    files = write_heads(rec, tmp_path)
    rows = [r.split(",") for r in files["csv"].read_text().splitlines()]
    assert rows[0] == ["student", "run", "accuracy", "cka", "cosine"] and len(rows) == 1 + n_runs * len(names)
    j = names.index("shared_head_all")
    row = rows[1 + n_runs * j + 2]
    assert row[:2] == ["shared_head_all", "2"]
    np.testing.assert_allclose([float(v) for v in row[2:]], [a[2, j], sim[2, 0, j], sim[2, 1, j]], atol=1e-6)


def test_rank_of_an_unsorted_vector():
    np.testing.assert_array_equal(_rank(np.array([3.0, 1.0, 2.0, 1.0, 7.0])), [3, 0.5, 2, 0.5, 4])
    c = _correlations(np.array([0.9, 0.1, 0.5, 0.3]), np.array([1.0, 4.0, 2.0, 3.0]))  # exactly reversed order
    assert c["spearman"] == pytest.approx(-1.0) and c["n_points"] == 4


def test_the_sharing_table_is_the_documented_one():
    # The module's table: which layers each student takes from θ0 ("own") and from θ0' ("other").
    assert SHARING == (("shared_all", "own", "own"), ("shared_hidden", "own", "other"),
                       ("shared_head", "other", "own"), ("shared_none", "other", "other"))
    from subliminal_mlp.core.students import layers, ref

    starts = {s.name: s.start for s in heads_students(())}
    assert starts["shared_all_aux"] == ref("own") and starts["shared_none_all"] == ref("cross")
    assert starts["shared_hidden_aux"] == layers({"head": "cross"}, default="own")
    assert starts["shared_head_all"] == layers({"head": "own"}, default="cross")
    # The config's loss applies to every student.
    assert {s.loss for s in heads_experiment(Config(loss="mse")).students} == {"mse"}


def test_similarity_metrics_measure_each_student_on_the_first_n_similarity_test_images():
    from types import SimpleNamespace

    from subliminal_mlp.studies.heads import similarity_metrics
    from subliminal_mlp.theory.similarity import penultimate_similarity

    net = mlp((16, 8))
    teacher, a, b = (net.init(jax.random.PRNGKey(k)) for k in range(3))
    x = jax.random.uniform(jax.random.PRNGKey(9), (40, 784), minval=-1.0, maxval=1.0)
    x = x.at[10:].multiply(jnp.linspace(0.0, 3.0, 30)[:, None])  # images past the first 10 change every measure
    view = SimpleNamespace(teacher=teacher, students={"a": a, "b": b}, data={"test_x": x}, model=net)
    got = np.asarray(similarity_metrics(["b", "a"], 10)["similarity"](view))
    assert got.shape == (2, 2)
    for j, p in enumerate((b, a)):
        want = penultimate_similarity(teacher, p, x[:10], net.features)
        assert got[0, j] == pytest.approx(float(want["cka"]), rel=1e-5)
        assert got[1, j] == pytest.approx(float(want["cosine"]), rel=1e-5)
    full = penultimate_similarity(teacher, a, x, net.features)
    assert abs(float(full["cka"]) - got[0, 1]) > 1e-3
