"""Trait transmission: filters, sampled targets, weighted losses, and a real small run."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.flatten_util import ravel_pytree

import subliminal_mlp as sm
from subliminal_mlp.core.config import Config, ConfigError
from subliminal_mlp.core.data import load_fashion_mnist, load_mnist
from subliminal_mlp.core.engine import HookView, RunModels, run_keys
from subliminal_mlp.core.losses import class_cross_entropy, kl_distillation, mse_distillation, one_hot_logits
from subliminal_mlp.core.model import apply, init_params
from subliminal_mlp.core.models import config_model
from subliminal_mlp.studies.traits import (TraitSettings, format_traits_table, kept, run_traits, students, trait_rate,
                                   trait_students, traits_experiment, write_traits)


def test_one_hot_logits_train_on_the_label_exactly():
    labels = jnp.array([2, 0, 1])
    y = one_hot_logits(labels, 3)
    np.testing.assert_array_equal(jax.nn.softmax(y), np.eye(3)[[2, 0, 1]])
    z = jax.random.normal(jax.random.PRNGKey(0), (3, 3))
    ce = -jnp.sum(jax.nn.log_softmax(z)[jnp.arange(3), labels])  # KL(one-hot ‖ q) = CE
    mask = jnp.ones(3)
    assert float(kl_distillation(z, y, mask)) == pytest.approx(float(ce), rel=1e-6)
    g = jax.grad(kl_distillation)(z, y, mask)
    np.testing.assert_allclose(g, jax.nn.softmax(z) - np.eye(3)[[2, 0, 1]], atol=1e-6)


@pytest.mark.parametrize("loss", [kl_distillation, mse_distillation])
def test_example_weights_drop_examples(loss):
    z, y = jax.random.normal(jax.random.PRNGKey(1), (2, 6, 5))
    mask = jnp.array([0.0, 1.0, 1.0, 0.5, 1.0])
    w = jnp.array([1.0, 0.0, 1.0, 1.0, 0.0, 1.0])
    keep = np.flatnonzero(np.asarray(w))
    assert float(loss(z, y, mask, w)) == pytest.approx(float(loss(z[keep], y[keep], mask)), rel=1e-5)
    assert float(loss(z, y, mask, jnp.ones(6))) == pytest.approx(float(loss(z, y, mask)), rel=1e-5)


def test_filter_against_hand_values():
    # trait class 1; softmax probabilities of class 1 are 0.6, ~0.33 (argmax 1, tied), 0.1.
    logits = jnp.log(jnp.array([[0.2, 0.6, 0.2], [0.32, 0.34, 0.34], [0.8, 0.1, 0.1]]))
    tau = jnp.array([jnp.inf, 0.5, 0.3, jnp.inf])
    by_argmax = jnp.array([False, False, False, True])
    got = np.asarray(kept(logits, 1, tau, by_argmax))
    np.testing.assert_array_equal(got, [[1, 1, 1], [0, 1, 1], [0, 0, 1], [0, 0, 1]])
    # p(c*) = τ exactly is dropped (kept only when p < τ); just below, kept. Probabilities of class 0: 0.5 and 0.499.
    at = jnp.log(jnp.array([[0.5, 0.25, 0.25], [0.499, 0.25, 0.251]], jnp.float32))
    np.testing.assert_array_equal(kept(at, 0, jnp.float32(0.5), False), [0, 1])


def test_instilling_the_trait_descends_task_loss_plus_lambda_times_trait_loss(monkeypatch):
    # One full batch, one epoch, the optimiser replaced by SGD at rate 1: the step is θ − ∇(L_task + λ·L_trait),
    # with L_trait the class cross-entropy towards c* on the trait images (λ = 3, c* = 1; the task has 4 images
    # for 8 trait images, taken modulo 4).
    import optax

    from subliminal_mlp.studies import traits as traits_module

    monkeypatch.setattr(traits_module, "adam", lambda lr: optax.sgd(1.0))
    net = config_model(Config(hidden_widths=(4,), aux_logits=1, input_dim=6, n_classes=3))
    theta = net.init(jax.random.PRNGKey(0))
    k = jax.random.split(jax.random.PRNGKey(1), 2)
    task_x, trait_x = jax.random.normal(k[0], (4, 6)), jax.random.normal(k[1], (8, 6))
    task_y = jnp.array([0, 2, 1, 2])
    cfg = Config(hidden_widths=(4,), aux_logits=1, input_dim=6, n_classes=3, batch_size=8)
    settings = TraitSettings(trait_class=1, trait_epochs=1, trait_weight=3.0)
    got = traits_module.instil_trait(theta, task_x, task_y, trait_x, jax.random.PRNGKey(2), cfg, settings,
                                     apply_fn=net.apply)

    def objective(p):  # one batch holds every trait image; its task images are those indices mod 4, in any order
        task = class_cross_entropy(net.apply(p, jnp.tile(task_x, (2, 1))), jnp.tile(task_y, 2), 3)
        return task + 3.0 * class_cross_entropy(net.apply(p, trait_x), jnp.ones(8, jnp.int32), 3)

    want = jax.tree.map(lambda a, g: a - g, theta, jax.grad(objective)(theta))
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6), got, want)


def test_the_noise_trait_rate_uses_the_runs_held_out_noise(monkeypatch):
    # The trait rate on noise is measured on noise the students never saw: drawn from the run's held_out_noise
    # key, not its (distillation) noise key.
    from subliminal_mlp.studies import traits as traits_module

    seen = []

    def recording(key, idx, input_dim=784):
        seen.append(np.asarray(key))
        return jnp.zeros((idx.shape[0], input_dim))

    monkeypatch.setattr(traits_module, "noise_images", recording)
    cfg = Config(hidden_widths=(4,))
    settings = TraitSettings(n_held_out_noise=16)
    fashion = types.SimpleNamespace(train_images=np.zeros((2, 784), np.float32), test_images=np.zeros((2, 784)))
    exp = traits_module.traits_experiment(cfg, settings, fashion)
    net = config_model(cfg)
    theta = net.init(jax.random.PRNGKey(0))
    keys = {"held_out_noise": jax.random.PRNGKey(7), "noise": jax.random.PRNGKey(8)}
    view = types.SimpleNamespace(reference=theta, teacher=theta, teachers={"trait_teacher": theta}, keys=keys,
                                 students={r["name"]: theta for r in students(settings)}, model=net)
    assert exp.metrics["trait_rate_noise"](view).shape[0] == 3 + len(students(settings))
    assert seen  # every draw of noise the metric made used the held-out key
    for key in seen:
        np.testing.assert_array_equal(key, np.asarray(keys["held_out_noise"]))


def test_kept_fraction_counts_every_full_batch_of_the_distillation_inputs():
    # 1124 inputs in batches of 256: the four full batches (1024 inputs) are counted, the partial one is not
    # (the metric's docstring). A fake trait teacher on input i: p(c* = 0) = 0.04 and not the argmax for
    # i < 512; p = 0.3 but the argmax for 512 <= i < 768; p = 0.6 from 768 on (the partial batch included).
    # So the argmax filter keeps 512 / 1024 and τ = 0.5 keeps 768 / 1024 (the first batch alone: 1 and 1).
    from subliminal_mlp.core.engine import InputSet
    from subliminal_mlp.studies import traits as traits_module

    cfg = Config(hidden_widths=(4,), batch_size=256)
    settings = TraitSettings(filters=("argmax", 0.5), trait_class=0)
    fashion = types.SimpleNamespace(train_images=np.zeros((2, 784), np.float32), test_images=np.zeros((2, 784)))
    exp = traits_module.traits_experiment(cfg, settings, fashion)
    a3, a6 = np.log(0.3 * 9 / 0.7), np.log(0.6 * 9 / 0.4)  # p(0) = e^a / (e^a + 9) over the 10 class logits

    def apply_fn(params, x):  # x[:, 0] is the input's index; logit 0 is a, the other 12 are 0
        i = x[:, 0]
        logit0 = jnp.where(i < 512, -1.0, jnp.where(i < 768, a3, a6))
        return jnp.zeros((x.shape[0], 13)).at[:, 0].set(logit0)

    inputs_ = InputSet(1124, lambda idx: jnp.tile(idx[:, None].astype(jnp.float32), (1, 784)))
    view = types.SimpleNamespace(teachers={"trait_teacher": None}, model=types.SimpleNamespace(apply=apply_fn),
                                 inputs=inputs_)
    np.testing.assert_allclose(exp.metrics["kept_fraction"](view), [512 / 1024, 768 / 1024], rtol=1e-6)


def test_trait_rate_reads_the_class_logits_only():
    # Class logits argmax 1; an aux logit (index 10) is larger still but is not a class.
    row = jnp.array([0.0, 5.0, 0, 0, 0, 0, 0, 0, 0, 0, 9.0, 0, 0])
    other = row.at[1].set(0.0).at[2].set(5.0)
    images = jnp.zeros((4, 784))
    fixed = lambda rows: lambda p, x: jnp.tile(rows, (x.shape[0] // rows.shape[0], 1))  # noqa: E731
    assert float(trait_rate(None, images, 1, 10, apply_fn=fixed(row[None]))) == 1.0
    assert float(trait_rate(None, images, 1, 10, apply_fn=fixed(jnp.stack([row, other])))) == 0.5


def test_settings_are_validated():
    for bad in (dict(trait_epochs=0), dict(trait_class=-1), dict(trait_weight=0.0), dict(filters=(1.5,)),
                dict(filters=("max",)), dict(filters=()), dict(filters=(0.5, 0.5)), dict(n_held_out_noise=0)):
        with pytest.raises(ConfigError, match=f"^{next(iter(bad))} = .* is invalid"):  # names the field and value
            TraitSettings(**bad)
    for bad, what in ((dict(filters=0.5), "non-empty sequence"), (dict(filters=()), "non-empty sequence"),
                      (dict(trait_class=1.0), "integer class index")):  # what is wrong, said (0.5 was a TypeError)
        with pytest.raises(ConfigError, match=what):
            TraitSettings(**bad)
    with pytest.raises(ConfigError, match=r"\['0.3'\] name two filters alike"):  # one student name for both
        TraitSettings(filters=(0.3, 0.3000001))
    with pytest.raises(ConfigError, match="trait_class = 12"):
        TraitSettings(trait_class=12).check(Config())
    with pytest.raises(ConfigError, match="loss = 'mse'"):  # rejected before any compute
        run_traits(Config(loss="mse"), None, None)
    # The trait lives on Fashion-MNIST's images: a Fashion-MNIST task would ask T1 for the trait and the true class
    # of one image (it was taken before, and its trait rates measured on the task's own test set).
    with pytest.raises(ConfigError, match="dataset = 'fashion-mnist': the trait is instilled and measured on"):
        run_traits(Config(dataset="fashion-mnist"), None, None)
    for bad in (dict(trait_weight=float("inf")), dict(trait_weight=float("nan"))):
        with pytest.raises(ConfigError, match="trait_weight"):
            TraitSettings(**bad)
    assert TraitSettings(trait_class=np.int64(2), filters=(np.float32(0.5),)).trait_class == 2  # numpy values
    # Fashion-MNIST distillation inputs are the Fashion-MNIST passed in, not a second load from the default root
    fashion = types.SimpleNamespace(train_images=np.zeros((600, 784), np.float32),
                                    test_images=np.zeros((100, 784), np.float32))
    exp = traits_experiment(Config(student_inputs="fashion-mnist", n_noise=600, batch_size=100), TraitSettings(),
                            fashion)
    assert exp.inputs.n == 600 and exp.inputs.arrays["pool"] is fashion.train_images
    names = [s["name"] for s in students(TraitSettings(filters=("argmax", 0.25)))]
    assert names == ["student", "cross", "control", "student_filtered_argmax", "control_filtered_argmax",
                     "student_filtered_0.25", "control_filtered_0.25", "student_sampled", "control_sampled"]
    # Only the cross-model control starts from another run's initialisation; the table the engine runs says so.
    settings = TraitSettings(filters=("argmax", 0.25))
    assert {r["name"]: r["start"] for r in students(settings)} == {n: "cross" if n == "cross" else "own"
                                                                    for n in names}
    from subliminal_mlp.core.students import ref

    table = trait_students(settings, Config(hidden_widths=(4,)))
    assert {s.name: s.start for s in table} == {n: ref("cross" if n == "cross" else "own") for n in names}


def stacked_hooks(settings, cfg, t1, t0):
    """``hook(t1_logits, x, idx) -> (targets (S, B, n_outputs), weights (S, B))``: the table's hooks as the
    engine runs them (one group, vmapped over the rows' params), in a run whose task teacher is ``t0``."""
    table = trait_students(settings, cfg)
    assert [s.name for s in table] == [r["name"] for r in students(settings)]
    assert len({s.group_key() for s in table}) == 1  # one stacked group
    run = RunModels(t0, t0, {}, {}, {}, run_keys(0, 0), config_model(cfg), {"teacher": t0, "trait_teacher": t1})
    params = {k: jnp.asarray([s.params[k] for s in table], jnp.float32) for k in table[0].params}

    def hook(y1, x, idx):
        return jax.vmap(lambda p: (table[0].targets(HookView(run, y1, x, idx, p)),
                                   table[0].example_weights(HookView(run, y1, x, idx, p))))(params)

    return hook


def test_targets_hook_picks_teachers_filters_and_fixed_samples():
    cfg = Config(hidden_widths=(8,), aux_logits=4)
    t1, t0 = init_params(jax.random.PRNGKey(0), cfg), init_params(jax.random.PRNGKey(1), cfg)
    settings = TraitSettings(trait_class=3, filters=("argmax", 0.12))
    rows = students(settings)
    hook = stacked_hooks(settings, cfg, t1, t0)
    x = jax.random.uniform(jax.random.PRNGKey(2), (64, cfg.input_dim), minval=-1, maxval=1)
    idx = jnp.arange(100, 164)
    y1 = apply(t1, x)
    t, w = hook(y1, x, idx)
    assert t.shape == (len(rows), 64, cfg.n_outputs) and w.shape == (len(rows), 64)
    by = {r["name"]: i for i, r in enumerate(rows)}
    np.testing.assert_array_equal(t[by["student"]], y1)
    np.testing.assert_allclose(t[by["control"]], apply(t0, x), rtol=1e-6)
    p3 = np.asarray(jax.nn.softmax(y1[:, :10]))[:, 3]
    np.testing.assert_array_equal(w[by["student_filtered_0.12"]], p3 < 0.12)
    np.testing.assert_array_equal(w[by["control_filtered_0.12"]], p3 < 0.12)  # same inputs as its student
    np.testing.assert_array_equal(w[by["student_filtered_argmax"]], np.argmax(y1[:, :10], -1) != 3)
    np.testing.assert_array_equal(w[by["student"]], 1.0)
    q = jax.nn.softmax(t[by["student_sampled"], :, 10:])
    assert np.all(np.sort(q, axis=-1)[:, -1] == 1.0)  # one-hot over the aux logits
    # The same image gets the same sample whatever batch it is in (a fixed sampled dataset).
    t_again, _ = hook(y1[::-1], x[::-1], idx[::-1])
    np.testing.assert_array_equal(t_again[by["student_sampled"]][::-1], t[by["student_sampled"]])
    # Samples follow the teacher's aux softmax: over many images, frequencies match the mean probability.
    xs = jax.random.uniform(jax.random.PRNGKey(3), (4000, cfg.input_dim), minval=-1, maxval=1)
    ys = apply(t1, xs)
    ts, _ = hook(ys, xs, jnp.arange(4000))
    freq = np.asarray(jax.nn.softmax(ts[by["student_sampled"], :, 10:])).mean(0)
    np.testing.assert_allclose(freq, np.asarray(jax.nn.softmax(ys[:, 10:])).mean(0), atol=0.03)



# Its teacher takes 4 steps on 1,024 images: not meant to learn, and the engine rightly says so.
@pytest.mark.filterwarnings("ignore::subliminal_mlp.core.results.DivergenceWarning")
def test_targets_hook_returning_the_teacher_equals_plain_distillation(data_root):
    # Through the engine: a targets hook giving the teacher's own logits and weights of 1 trains
    # what plain distillation trains; weights of 0 (every example filtered out) leave the start.
    data = load_mnist(data_root)
    task = sm.Task(data.train_images[:1024], data.train_labels[:1024], data.test_images[:500],
                   data.test_labels[:500], 10)
    flat = lambda v: jnp.stack([ravel_pytree(v.students[n])[0] for n in ("plain", "hooked", "dropped")]  # noqa: E731
                               + [ravel_pytree(v.refs["cross"])[0]])
    table = (sm.Student("plain", "cross", "all"),
             sm.Student("hooked", "cross", "all", targets=lambda v: v.logits,
                        example_weights=lambda v: jnp.ones(v.idx.shape[0])),
             sm.Student("dropped", "cross", "all", example_weights=lambda v: jnp.zeros(v.idx.shape[0])))
    exp = sm.Experiment(model=sm.mlp((16,)), inputs=sm.inputs.uniform(1024), students=table, teacher_epochs=1,
                        student_epochs=1, batch_size=256, metrics={"params": flat})
    plain, hooked, dropped, start = sm.run(exp, task, n_runs=1).metrics["params"][0, 0]
    np.testing.assert_allclose(hooked, plain, rtol=1e-4, atol=1e-6)
    assert not np.allclose(plain, start)
    np.testing.assert_array_equal(dropped, start)  # nothing kept: no move


def test_run_traits_small_real_run(data_root, tmp_path, check_envelope):
    data, fashion = load_mnist(data_root), load_fashion_mnist(data_root)
    cfg = Config(n_runs=2, hidden_widths=(64,), n_noise=4096, batch_size=512, teacher_epochs=1, student_epochs=2)
    settings = TraitSettings(filters=("argmax", 0.5, 0.2), n_held_out_noise=2000)
    rec = run_traits(cfg, data, fashion, settings, progress=True)
    check_envelope(rec, data.checksums)
    names = ["reference", "trait_free_teacher", "trait_teacher"] + [s["name"] for s in students(settings)]
    assert list(rec["models"]) == names
    for m in rec["models"].values():
        for metric in ("trait_rate_fashion", "trait_rate_noise", "mnist_accuracy"):
            assert len(m[metric]["values"]) == 2 and all(0 <= v <= 1 for v in m[metric]["values"])
    models = rec["models"]
    # The fine-tuned teacher has the trait and keeps its task.
    assert models["trait_teacher"]["trait_rate_fashion"]["mean"] > 0.9
    assert models["trait_free_teacher"]["trait_rate_fashion"]["mean"] < 0.5
    assert models["trait_teacher"]["mnist_accuracy"]["mean"] > models["trait_free_teacher"]["mnist_accuracy"]["mean"] - 0.05
    # A stricter threshold keeps fewer inputs.
    k = {f: v["mean"] for f, v in rec["kept_fraction"].items()}
    assert 0 <= k["0.2"] <= k["0.5"] <= 1
    # The trait rate on Fashion agrees with a direct computation for the reference (run 0's θ0).
    from subliminal_mlp.core.engine import run_keys
    ref = init_params(run_keys(cfg.seed, 0)["init"], cfg)
    assert models["reference"]["trait_rate_fashion"]["values"][0] == pytest.approx(
        float(trait_rate(ref, fashion.test_images, 0, 10)), abs=1e-6)
    d = rec["paired"]["student_filtered_argmax"]["trait_rate_fashion"]
    want = np.subtract(models["student_filtered_argmax"]["trait_rate_fashion"]["values"],
                       models["control_filtered_argmax"]["trait_rate_fashion"]["values"]).mean()
    assert d["mean"] == pytest.approx(want) and set(rec["paired"]) == {
        "student", "student_sampled", "student_filtered_argmax", "student_filtered_0.5", "student_filtered_0.2"}
    assert "student_sampled" in format_traits_table(rec)
    paths = write_traits(rec, tmp_path)
    assert all(p.stat().st_size > 0 for p in paths.values())


def test_paired_gains_are_per_run_differences_with_their_own_control():
    from subliminal_mlp.studies.traits import METRICS, paired_gains

    rng = np.random.default_rng(0)
    names = ("student", "control", "student_sampled", "control_sampled", "student_filtered_0.3",
             "control_filtered_0.3")
    models = {n: {m: {"values": rng.uniform(0, 1, 5).tolist()} for m in METRICS} for n in names}
    gains = paired_gains(models)
    assert set(gains) == {"student", "student_sampled", "student_filtered_0.3"}
    for s, g in gains.items():
        c = s.replace("student", "control", 1)
        for m in METRICS:
            d = np.subtract(models[s][m]["values"], models[c][m]["values"])
            assert g[m]["control"] == c and g[m]["mean"] == pytest.approx(d.mean(), abs=1e-12)
            assert g[m]["ci95"] == pytest.approx(1.96 * d.std(ddof=1) / np.sqrt(5), abs=1e-12)
