"""Heads without a shared initialisation (issue 12, item 1): the split-head CNN, the students' starts
(what each takes from θ0 and what is fresh), and the study end to end on real MNIST (tiny settings)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import subliminal_mlp as sm
from subliminal_mlp.core.config import ConfigError
from subliminal_mlp.core.results import read_results
from subliminal_mlp.core.students import StartContext
from subliminal_mlp.studies.split_heads import (SplitHeadSettings, format_split_heads_table, run_split_heads,
                                                single_head_students, split_head_experiment, split_head_students,
                                                write_split_heads)

# Unequal widths: the shallower student keeps the last width, so the teacher's heads fit it.
TINY = SplitHeadSettings(n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=1024, batch_size=256,
                         hidden=(16, 8), cnn_channels=(4, 8))


def test_the_split_head_cnn_computes_its_layers_by_hand():
    model = sm.split_head_cnn((2, 3), 5, aux_logits=2)
    p = model.init(jax.random.PRNGKey(0))
    x = jax.random.uniform(jax.random.PRNGKey(1), (3, 784), minval=-1, maxval=1)

    def conv(h, layer):  # 3x3, stride 2, SAME padding (Flax's default), NHWC
        return jax.nn.relu(jax.lax.conv_general_dilated(h, layer["kernel"], (2, 2), "SAME",
                                                        dimension_numbers=("NHWC", "HWIO", "NHWC")) + layer["bias"])

    h = conv(conv(x.reshape(3, 28, 28, 1), p["conv_0"]), p["conv_1"]).reshape(3, -1)
    assert h.shape == (3, 7 * 7 * 3)
    h = jax.nn.relu(h @ p["hidden_0"]["kernel"] + p["hidden_0"]["bias"])
    expected = jnp.concatenate([h @ p["class_head"]["kernel"] + p["class_head"]["bias"],
                                h @ p["aux_head"]["kernel"] + p["aux_head"]["bias"]], -1)
    np.testing.assert_allclose(model.apply(p, x), expected, rtol=1e-5, atol=1e-5)
    assert model.n_outputs == 12 and sm.check_model(model).shape == (2, 12)


def test_each_student_takes_exactly_its_part_of_theta0_and_fresh_parts_are_shared():
    teacher_model = sm.split_head_mlp(TINY.hidden)
    keys = {"fresh": jax.random.PRNGKey(7)}
    theta0 = teacher_model.init(jax.random.PRNGKey(1))
    refs = {"own": theta0, "cross": teacher_model.init(jax.random.PRNGKey(2))}
    starts = {}
    for s in split_head_students(TINY):
        model = teacher_model if s.model is None else s.model
        starts[s.name] = s.start(StartContext(refs, {"teacher": theta0}, keys, {}, model))
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa
    for name, taken in [("heads_both", {"aux_head", "class_head"}), ("head_aux", {"aux_head"}),
                        ("head_class", {"class_head"}), ("heads_neither", set())]:
        for layer, value in starts[name].items():
            assert same(value, theta0[layer]) == (layer in taken), (name, layer)
            if layer not in taken:  # the fresh parts are the same fresh initialisation for every student
                assert same(value, starts["heads_neither"][layer]), (name, layer)
    assert same(starts["shared"], theta0) and same(starts["cross"], refs["cross"])
    for arch, n_layers in [("deeper", 3), ("shallower", 1)]:
        with_heads = starts[f"{arch}_heads_both"]
        assert len([k for k in with_heads if k.startswith("hidden_")]) == n_layers
        assert same(with_heads["aux_head"], theta0["aux_head"]) and same(with_heads["class_head"], theta0["class_head"])
        assert not same(starts[f"{arch}_fresh"]["aux_head"], theta0["aux_head"])
    assert set(starts["cnn_heads_both"]) == {"conv_0", "conv_1", "hidden_0", "class_head", "aux_head"}
    assert same(starts["cnn_heads_both"]["aux_head"], theta0["aux_head"])
    assert [s.name for s in single_head_students(TINY)] == ["shared", "head_only", "hidden_only", "fresh", "cross"]


def test_the_split_heads_study_end_to_end_on_any_784_pixel_dataset_recorded_by_its_name(tmp_path):
    # The single-head program is the same engine path with another table (its starts are tested above);
    # left out here to keep the suite's time. Fashion-MNIST: the record and caption name it (they said MNIST).
    record = run_split_heads(TINY.__class__(**{**TINY.to_dict(), "single_head": False}), sm.load_fashion_mnist())
    assert record["data"]["dataset"] == "fashion-mnist" and record["data"]["source_dir"].endswith("fashion-mnist")
    from subliminal_mlp.report.plotting import dataset_label

    assert dataset_label(record) == "Fashion-MNIST" and dataset_label({"data": {"dataset": "mnist"}}) == "MNIST"
    split = record["split_head"]["models"]
    assert "single_head" not in record
    assert list(split)[:2] == ["reference", "teacher"] and len(split) == 2 + 12
    assert split["teacher"]["mean"] > 0.5  # one epoch learns the classes
    for m in split.values():
        assert len(m["accuracies"]) == 2 and 0 <= m["mean"] <= 1
    np.testing.assert_allclose(split["cross"]["gain_over_cross"]["mean"], 0.0)
    # Each student's gain is its per-run accuracy minus the cross student's in the same run: mean and 1.96·sd/√n
    # (the accuracies are float32s, subtracted as such: equal to float32 rounding).
    cross = np.asarray(split["cross"]["accuracies"])
    for name, m in split.items():
        d = np.asarray(m["accuracies"]) - cross
        assert m["gain_over_cross"]["mean"] == pytest.approx(d.mean(), abs=1e-7)
        assert m["gain_over_cross"]["ci95"] == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(len(d)), abs=1e-7)
    assert any(abs(m["gain_over_cross"]["mean"]) > 0 for m in split.values())
    files = write_split_heads(record, tmp_path)
    assert read_results(files["json"])["config"]["cnn_channels"] == [4, 8]
    assert files["csv"].read_text().count("\n") == 1 + 2 * 14
    assert "cnn_heads_both" in format_split_heads_table(record)


@pytest.mark.parametrize("bad, match", [(dict(hidden=(16,)), "at least two"), (dict(n_runs=0), "n_runs"),
                                        (dict(n_noise=100), "batch_size"), (dict(learning_rate=0.0), "learning_rate"),
                                        (dict(learning_rate=float("nan")), "learning_rate"),
                                        (dict(learning_rate="a"), "learning_rate"), (dict(seed=-1), "seed"),
                                        (dict(seed=2**32), "seed"), (dict(run_batch=0), "run_batch"),
                                        (dict(cnn_channels=()), "cnn_channels"),
                                        (dict(cnn_channels=(0, 8)), "cnn_channels"),
                                        (dict(cnn_channels=(8.5,)), "cnn_channels"),
                                        (dict(single_head="no"), "single_head = 'no' is invalid: give True or False"),
                                        (dict(hidden=16), r"hidden = 16 is invalid: give a sequence, e.g. hidden = \(16,\)"),
                                        (dict(cnn_channels="8"), "cnn_channels = '8' is invalid: give a sequence")])
def test_invalid_settings_are_refused_before_compute(bad, match):
    with pytest.raises(ConfigError, match=match):
        SplitHeadSettings(**bad)


def test_numpy_numbers_are_taken_as_python_numbers():
    s = SplitHeadSettings(n_runs=np.int64(3), hidden=np.array([16, 8]), learning_rate=np.float32(0.5))
    assert s.n_runs == 3 and type(s.n_runs) is int and s.hidden == (16, 8) and type(s.hidden[0]) is int
    assert s.to_dict()["learning_rate"] == 0.5 and type(s.learning_rate) is float


def test_each_single_head_student_takes_exactly_its_layers_of_theta0():
    model = sm.mlp(TINY.hidden, aux_logits=TINY.aux_logits)
    theta0, other = model.init(jax.random.PRNGKey(1)), model.init(jax.random.PRNGKey(2))
    ctx = StartContext({"own": theta0, "cross": other}, {"teacher": theta0}, {"fresh": jax.random.PRNGKey(7)}, {},
                       model)
    starts = {s.name: s.start(ctx) for s in single_head_students(TINY)}
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))  # noqa
    assert set(theta0) == {"hidden_0", "hidden_1", "head"}
    for name, taken in [("head_only", {"head"}), ("hidden_only", {"hidden_0", "hidden_1"}), ("fresh", set())]:
        for layer in theta0:
            assert same(starts[name][layer], theta0[layer]) == (layer in taken), (name, layer)
            if layer not in taken:
                assert same(starts[name][layer], starts["fresh"][layer]), (name, layer)
    assert same(starts["shared"], theta0) and same(starts["cross"], other)


def test_the_experiments_take_the_settings():
    s = SplitHeadSettings(teacher_epochs=2, student_epochs=3, batch_size=128, n_noise=5000, learning_rate=1e-3,
                          hidden=(16, 8))
    for single in (False, True):
        exp = split_head_experiment(s, single)
        assert (exp.teacher_epochs, exp.student_epochs, exp.batch_size) == (2, 3, 128)
        assert exp.inputs.name == "uniform" and exp.inputs.n == 5000
        assert exp.hparams == {"learning_rate": 1e-3, "temperature": 1.0}  # KL at T = 1: the paper's
        assert exp.model.n_outputs == 10 + 3
        assert all(stu.outputs == "aux" and stu.loss == "kl" for stu in exp.students)
    # Every split-head student's start fits its own model (the teacher's initial heads fit every trunk).
    exp = split_head_experiment(TINY)
    theta0, other = exp.model.init(jax.random.PRNGKey(1)), exp.model.init(jax.random.PRNGKey(2))
    shapes = lambda f: jax.tree.map(np.shape, jax.eval_shape(f))  # noqa  (traced, nothing computed)
    for stu in exp.students:
        model = stu.model or exp.model
        ctx = StartContext({"own": theta0, "cross": other}, {"teacher": theta0}, {"fresh": jax.random.PRNGKey(7)}, {},
                           model)
        assert shapes(lambda: stu.start(ctx)) == shapes(lambda: model.init(jax.random.PRNGKey(0))), stu.name


def _fake_split_result(names, n_runs, seed):
    from types import SimpleNamespace

    rng = np.random.default_rng(seed)
    acc = {n: rng.uniform(0, 1, n_runs) for n in names}
    health = {"ok": True, "nonfinite": [], "teacher_not_better": [], "teacher_margin": 0.05}
    return SimpleNamespace(accuracy=lambda n: acc[n], models=tuple(names), compile_s=1.0 + seed,
                           run_s=10.0 * (1 + seed), devices=["cpu"], health=lambda v: health,
                           experiment=SimpleNamespace(students=())), acc


def test_run_split_heads_passes_its_settings_and_records_each_teacher_model(tmp_path, monkeypatch, fake_dataset):
    from types import SimpleNamespace

    from subliminal_mlp.studies import split_heads as mod

    calls, accs = [], []

    def fake_run(exp, task, **k):
        calls.append((exp.name, k))
        names = ["reference", "teacher", *(s.name for s in exp.students)]
        result, acc = _fake_split_result(names, k["n_runs"], len(calls) - 1)
        accs.append(acc)
        return result

    monkeypatch.setattr(mod.engine, "run", fake_run)
    monkeypatch.setattr(mod, "Task", SimpleNamespace(from_dataset=lambda d: None))
    data = fake_dataset(2000)
    s = SplitHeadSettings(n_runs=3, seed=11, run_batch=2, n_noise=1024, batch_size=256, hidden=(16, 8))
    record = run_split_heads(s, data)
    assert [name for name, _ in calls] == ["split_heads/split_head", "split_heads/single_head"]
    assert all(k["seed"] == 11 and k["n_runs"] == 3 and k["run_batch"] == 2 for _, k in calls)
    assert record["timing"]["compile_s"] == pytest.approx(1.0 + 2.0)
    assert record["timing"]["run_s"] == pytest.approx(10.0 + 20.0)
    for key, acc in zip(("split_head", "single_head"), accs):
        models = record[key]["models"]
        for name, m in models.items():
            np.testing.assert_allclose(m["accuracies"], acc[name])
            assert m["gain_over_cross"]["mean"] == pytest.approx((acc[name] - acc["cross"]).mean())
    files = write_split_heads(record, tmp_path)
    rows = files["csv"].read_text().splitlines()
    assert rows[0] == "teacher_model,model,run,accuracy"
    assert rows[1].split(",")[:3] == ["split_head", "reference", "0"]
    assert rows[-1].split(",")[:3] == ["single_head", "cross", "2"]
    assert float(rows[-1].split(",")[3]) == pytest.approx(accs[1]["cross"][2], abs=1e-6)
    # Data of another shape is refused before any compute.
    calls.clear()
    with pytest.raises(ConfigError, match="784"):
        run_split_heads(s, SimpleNamespace(train_images=np.zeros((2000, 100), np.float32)))
    assert not calls


def test_a_switch_takes_numpys_booleans_as_python_ones_and_nothing_else_and_a_sequence_is_no_string_or_bytes():
    """``single_head`` (a switch): True/False or numpy's booleans (stored as Python's, for the record's JSON); 0 and 1
    are numbers, not switches. ``hidden`` and ``cnn_channels`` are sequences: a numpy array or a range is one (stored
    as a tuple of ints), bytes are not (their items would be taken as widths)."""
    for flag in (np.bool_(False), np.False_, False):
        s = SplitHeadSettings(single_head=flag)
        assert s.single_head is False and type(s.single_head) is bool
    assert SplitHeadSettings(single_head=np.bool_(True)).single_head is True
    for number in (0, 1, 1.0, None):
        with pytest.raises(ConfigError, match=f"single_head = {number!r} is invalid: give True or False"):
            SplitHeadSettings(single_head=number)
    s = SplitHeadSettings(hidden=np.array([16, 8]), cnn_channels=range(4, 12, 4))
    assert s.hidden == (16, 8) and s.cnn_channels == (4, 8) and all(type(w) is int for w in s.hidden + s.cnn_channels)
    for name in ("hidden", "cnn_channels"):
        with pytest.raises(ConfigError, match=f"{name} = b'\\\\x10' is invalid: give a sequence"):
            SplitHeadSettings(**{name: b"\x10"})
        with pytest.raises(ConfigError, match=f"{name} = None is invalid: give a sequence"):
            SplitHeadSettings(**{name: None})
