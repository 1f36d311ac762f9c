"""Mitigations (issue 12, item 2): the student's penalty term and step counter in the engine, students
of other models, liminal training against a hand-computed KL, and the mitigations study end to end on
real MNIST (tiny settings)."""

from __future__ import annotations

import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import subliminal_mlp as sm
from subliminal_mlp.core.config import ConfigError
from subliminal_mlp.core.engine import PenaltyView
from subliminal_mlp.core.results import read_results
from subliminal_mlp.core.students import liminal
from subliminal_mlp.studies.mitigations import (MitigationSettings, format_mitigations_table, run_mitigations,
                                                write_mitigations)
from subliminal_mlp.theory import tree_norm

TINY = dict(teacher_epochs=1, student_epochs=2, batch_size=256)


@pytest.fixture(scope="module")
def data():
    return sm.load_mnist()


@pytest.fixture(scope="module")
def task(data):
    return sm.Task.from_dataset(data)


def _moved(name):
    """Metric: ‖θ_student − θ0‖ (how far the student went from the shared start)."""
    return lambda v: tree_norm(jax.tree.map(jnp.subtract, v.students[name], v.reference))


def test_liminal_penalty_is_the_weighted_kl_to_the_start_during_the_first_steps():
    model = sm.mlp((8,))
    theta, start = model.init(jax.random.PRNGKey(1)), model.init(jax.random.PRNGKey(2))
    x = jax.random.uniform(jax.random.PRNGKey(3), (5, 784), minval=-1, maxval=1)
    run = types.SimpleNamespace(hp={"liminal_weight": 2.5, "liminal_steps": 4.0})
    pen = liminal()

    def view(step):
        return PenaltyView(theta, start, x, None, jnp.int32(step), model, run, {})

    # Independently: p = softmax(f_start(x)), q = softmax(f_theta(x)) over all 13 logits, Σ_b Σ_i p (log p − log q).
    z0 = np.asarray(model.apply(start, x), np.float64)
    z = np.asarray(model.apply(theta, x), np.float64)
    logp = z0 - np.log(np.exp(z0).sum(-1, keepdims=True))
    logq = z - np.log(np.exp(z).sum(-1, keepdims=True))
    kl = float(np.sum(np.exp(logp) * (logp - logq)))
    assert kl > 0
    np.testing.assert_allclose(float(pen(view(0))), 2.5 * kl, rtol=1e-5)
    np.testing.assert_allclose(float(pen(view(3))), 2.5 * kl, rtol=1e-5)
    assert float(pen(view(4))) == 0.0  # the critical period is over
    # Its gradient in θ is the KL's (finite differences along a random direction, float64-free check).
    d = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(4), a.shape) * 1e-3, theta)
    g = jax.grad(lambda p: pen(view(0)._replace(theta=p)))(theta)
    eps = 1.0
    plus = pen(view(0)._replace(theta=jax.tree.map(lambda a, b: a + eps * b, theta, d)))
    minus = pen(view(0)._replace(theta=jax.tree.map(lambda a, b: a - eps * b, theta, d)))
    directional = sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(d)))
    np.testing.assert_allclose(float((plus - minus) / (2 * eps)), float(directional), rtol=2e-2)


def test_a_penalty_of_weight_zero_changes_nothing_and_a_strong_one_holds_the_student_near_its_start(task):
    exp = sm.Experiment(model=sm.mlp((32,)), inputs=sm.inputs.uniform(2048), **TINY,
                        hparams={**sm.Experiment().hparams, "liminal_weight": 0.0, "liminal_steps": 1e9},
                        students=(sm.Student("plain", "own", "aux"),
                                  sm.Student("liminal", "own", "aux", penalty=liminal())),
                        metrics={"moved_plain": _moved("plain"), "moved_liminal": _moved("liminal")})
    r = sm.run(exp, task, n_runs=2, sweep={"liminal_weight": [0.0, 1000.0]})
    np.testing.assert_array_equal(r.accuracy("plain", 0), r.accuracy("liminal", 0))
    np.testing.assert_array_equal(r.metrics["moved_plain"][0], r.metrics["moved_liminal"][0])
    # λ = 1000 over every step: the student stays much closer to θ0 than the unpenalised one.
    assert np.all(r.metrics["moved_liminal"][1] < 0.5 * r.metrics["moved_plain"][1]), r.metrics


def test_hooks_see_the_step_counted_over_epochs(task):
    # SGD with every example weighted 0 from step k on stops moving at step k: trained 2 epochs with
    # k = one epoch, the student equals a student trained 1 epoch (the counter crosses the epoch).
    spe = -(-2048 // 256)
    first_epoch = lambda v: jnp.where(v.step < spe, 1.0, 0.0) * jnp.ones(v.x.shape[0])  # noqa: E731
    base = dict(model=sm.mlp((32,)), inputs=sm.inputs.uniform(2048), teacher_epochs=1, batch_size=256,
                metrics={"moved": _moved("s")})
    sgd = optax.sgd(1e-3)
    r2 = sm.run(sm.Experiment(**base, student_epochs=2, students=(sm.Student("s", optimizer=sgd,
                                                                              example_weights=first_epoch),)),
                task, n_runs=1, keep_teachers=True)
    r1 = sm.run(sm.Experiment(**base, student_epochs=1, students=(sm.Student("s", optimizer=sgd),)),
                task, n_runs=1, teachers=r2.teachers)
    assert r1.metrics["moved"][0, 0] > 0
    np.testing.assert_allclose(r2.metrics["moved"], r1.metrics["moved"], rtol=1e-6)
    np.testing.assert_allclose(r2.accuracy("s"), r1.accuracy("s"), atol=2e-4)  # at most one test image


def test_a_student_of_another_model_takes_the_teachers_head_and_is_evaluated_with_its_own_apply(task):
    deeper = sm.mlp((16, 32))  # its head is (32, 13), like the teacher's
    exp = sm.Experiment(model=sm.mlp((32,)), inputs=sm.inputs.uniform(2048), teacher_epochs=1, student_epochs=0,
                        batch_size=256,
                        students=(sm.Student("deeper", sm.layers({"head": "own"}), model=deeper),
                                  sm.Student("same", "own")),
                        metrics={"head_diff": lambda v: jnp.max(jnp.abs(v.students["deeper"]["head"]["kernel"]
                                                                        - v.reference["head"]["kernel"])),
                                 "n_layers": lambda v: jnp.float32(len(v.students["deeper"]))})
    r = sm.run(exp, task, n_runs=2)
    assert np.all(r.metrics["head_diff"] == 0) and np.all(r.metrics["n_layers"] == 3)
    np.testing.assert_array_equal(r.accuracy("same"), r.accuracy("reference"))  # no steps: θ0 itself
    assert np.all((r.accuracy("deeper") > 0) & (r.accuracy("deeper") < 0.5))
    with pytest.raises(sm.StudentError, match="classes"):
        sm.run(exp.replace(students=(sm.Student("bad", sm.fresh(), model=sm.mlp((8,), n_classes=5)),)), task)


def test_the_mitigations_study_end_to_end_on_mnist(data, tmp_path):
    s = MitigationSettings(n_runs=2, n_noise=2048, hidden=(32,), **TINY, liminal_weights=(10.0,),
                           liminal_epochs=(1,), weight_decays=(0.0,), sgd_learning_rates=(), projection=False,
                           probe_every=4, n_probe=500)
    record = run_mitigations(s, data)
    assert record["data"]["dataset"] == "mnist"  # data's own name (any 784-pixel dataset is recorded as itself)
    fams = record["families"]
    assert list(fams) == ["liminal", "weight_decay"]  # (SGD is another optimiser row, like weight decay)
    assert fams["liminal"]["labels"] == ["none (Adam)", "λ = 10, 1 epoch"]
    # AdamW with wd = 0 is Adam: the same numbers as the unmitigated baseline, from another program.
    assert fams["weight_decay"]["student"][0]["accuracies"] == fams["liminal"]["student"][0]["accuracies"]
    gains = fams["liminal"]["gain"][0]["gains"]
    np.testing.assert_allclose(gains, np.subtract(fams["liminal"]["student"][0]["accuracies"],
                                                  fams["liminal"]["cross"][0]["accuracies"]))
    assert len(fams["weight_decay"]["trace"][0]["mean"]) == len(record["probe_steps"])
    assert all(np.isfinite(f["distill_loss"][k]["mean"]) for f in fams.values() for k in range(len(f["labels"])))
    files = write_mitigations(record, tmp_path)
    assert read_results(files["json"])["families"]["weight_decay"]["hparams"] == {"weight_decay": [0.0]}
    assert files["png"].stat().st_size > 10_000 and files["csv"].read_text().count("\n") == 1 + 2 * 3
    assert "λ = 10, 1 epoch" in format_mitigations_table(record)


@pytest.mark.parametrize("bad, match", [(dict(liminal_weights=(0.0,)), "liminal_weights"),
                                        (dict(liminal_epochs=(9,)), "liminal_epochs"),
                                        (dict(liminal_epochs=()), "no liminal_epochs: give the epochs"),
                                        (dict(weight_decays=(-1.0,)), "weight_decays"),
                                        (dict(n_noise=100), "batch_size"),
                                        (dict(liminal_weights=(), weight_decays=(), sgd_learning_rates=(),
                                              projection=False), "empty"),
                                        (dict(liminal_weights=(10.0, 10.0)), "repeats"),
                                        (dict(liminal_weights=(float("inf"),)), "finite"),
                                        (dict(weight_decays=("a",)), "finite"),
                                        (dict(learning_rate=float("inf")), "learning_rate"),
                                        (dict(seed=-1), "seed"), (dict(run_batch=0), "run_batch"),
                                        (dict(projection="yes"), "projection = 'yes' is invalid: give True or False"),
                                        (dict(weight_decays=0.1), "weight_decays = 0.1 is invalid: give a sequence")])
def test_invalid_settings_are_refused_before_compute(bad, match):
    with pytest.raises(ConfigError, match=match):
        MitigationSettings(**bad)


def test_the_families_hyperparameters_reach_their_optimisers_and_penalty():
    from subliminal_mlp.studies.mitigations import _adamw, _sgd

    # The liminal penalty is on for e epochs = e × steps_per_epoch steps (2048 / 256 = 8 steps per epoch).
    s = MitigationSettings(n_noise=2048, batch_size=256, student_epochs=2, liminal_weights=(10.0,),
                           liminal_epochs=(1, 2))
    assert s.sweeps()["liminal"] == {"liminal_weight": [0.0, 10.0, 10.0], "liminal_steps": [0.0, 8.0, 16.0]}
    # AdamW's decoupled decay: with a zero gradient one step is −lr·wd·θ; SGD takes its own rate, not Adam's.
    params, zero = {"w": jnp.array([1.0])}, {"w": jnp.array([0.0])}
    tx = _adamw({"learning_rate": 0.1, "weight_decay": 2.0})
    np.testing.assert_allclose(tx.update(zero, tx.init(params), params)[0]["w"], [-0.2], rtol=1e-6)
    tx = _sgd({"learning_rate": 3e-4, "sgd_learning_rate": 0.5})
    np.testing.assert_allclose(tx.update({"w": jnp.array([2.0])}, tx.init(params), params)[0]["w"], [-1.0])


def test_a_familys_record_reads_each_models_own_numbers():
    # A fake result: two runs; students in the order (cross_aux, student_aux) so that a swapped index shows.
    from subliminal_mlp.studies.mitigations import _family_record

    acc = {"student_aux": np.array([0.6, 0.8]), "cross_aux": np.array([0.1, 0.2])}
    # The study's probe lists (student_aux, cross_aux): traces are (runs, probes, 2).
    traces = np.stack([np.full((2, 3), 0.3), np.full((2, 3), 0.7)], axis=-1)
    result = types.SimpleNamespace(
        n_values=1, models=("reference", "teacher", "cross_aux", "student_aux"), compile_s=1.0, run_s=2.0,
        experiment=types.SimpleNamespace(inputs=types.SimpleNamespace(n=2048), batch_size=256),
        accuracy=lambda name, v: acc[name], distill_loss=np.array([[[5.0, 1.0], [7.0, 3.0]]]),
        traces={"accuracy": traces[None]}, health=lambda v: {"ok": True})
    rec = _family_record("weight_decay", {"weight_decay": [3.0]}, result, 4.0)
    gain = rec["gain"][0]
    assert gain["gains"] == pytest.approx([0.5, 0.6]) and gain["mean"] == pytest.approx(0.55)
    assert gain["ci95"] == pytest.approx(1.96 * np.std([0.5, 0.6], ddof=1) / np.sqrt(2))
    assert rec["distill_loss"][0]["losses"] == [1.0, 3.0] and rec["cross_distill_loss"][0]["mean"] == 6.0
    assert rec["trace"][0]["mean"] == pytest.approx([0.3] * 3)  # the student's curve, not the control's
    assert rec["labels"] == ["wd = 3"]


def test_settings_that_are_valid_are_taken():
    # without liminal strengths its epochs are not used, so they need not fit student_epochs
    assert MitigationSettings(student_epochs=1, liminal_weights=()).liminal_epochs == (1, 5)
    s = MitigationSettings(liminal_epochs=(np.int64(1),), weight_decays=np.array([3.0, 10.0]))
    assert s.liminal_epochs == (1,) and s.weight_decays == (3.0, 10.0) and type(s.liminal_epochs[0]) is int


def test_probe_and_held_out_images_must_fit_the_test_set(monkeypatch):
    from types import SimpleNamespace

    import subliminal_mlp.studies.mitigations as mit

    monkeypatch.setattr(mit.engine, "run", lambda *a, **k: pytest.fail("computed"))
    data = SimpleNamespace(train_images=np.zeros((3000, 784), np.float32), test_images=np.zeros((1000, 784), np.float32))
    with pytest.raises(ConfigError, match="n_probe = 900 and held_out = 256 need more than the 1000 test images"):
        run_mitigations(MitigationSettings(n_probe=900), data)
    # Without the projection there are no held-out images: only the probe must fit, and the message says so.
    with pytest.raises(ConfigError, match=r"^n_probe = 1001 is more than the 1000 test images: lower it\.$"):
        run_mitigations(MitigationSettings(n_probe=1001, projection=False), data)


@pytest.mark.parametrize("when", ["aligned", "always"])
def test_the_projection_family_projects_each_students_gradient_before_adam(task, when, monkeypatch):
    # The family's optimiser is chain(project_out(∇L_task), adam): at the first step Adam's update is
    # −η·p/(|p| + ε) with p = g − w·(max(g·d, 0)/‖d‖²)·d (projection_when "aligned", the default: Kitkana & Arora's
    # test; "always": g·d in place of max(g·d, 0)), g the raw distillation gradient and d the class-loss
    # gradient on the last held_out test images at the student's own parameters (the cross student's d is
    # at its own start, not at θ0), w the swept projection_weight (0.5 here, so that the weight shows).
    from subliminal_mlp.core.losses import class_cross_entropy
    from subliminal_mlp.studies.mitigations import mitigation_experiment

    import subliminal_mlp.studies.mitigations as mit

    s = MitigationSettings(n_runs=1, n_noise=512, hidden=(16,), teacher_epochs=1, student_epochs=1,
                           batch_size=256, held_out=64, n_probe=100, liminal_weights=(), weight_decays=(),
                           sgd_learning_rates=(), **({} if when == "aligned" else {"projection_when": when}))
    rules, real = [], mit.project_out
    monkeypatch.setattr(mit, "project_out", lambda d, w, *, when: rules.append(when) or real(d, w, when=when))
    flat = lambda t: jax.flatten_util.ravel_pytree(t)[0]  # noqa: E731

    def error(v):
        x, y = v.run.data["test_x"][-s.held_out:], v.run.data["test_y"][-s.held_out:]
        out = []
        for name in ("student_aux", "cross_aux"):
            p0 = v.run.students[name]
            d = flat(jax.grad(lambda p: class_cross_entropy(v.run.model.apply(p, x), y, 10))(p0))
            g = flat(v.grads[name])
            gd = jnp.maximum(jnp.dot(g, d), 0.0) if when == "aligned" else jnp.dot(g, d)
            p = g - 0.5 * gd / jnp.dot(d, d) * d
            want = -s.learning_rate * p / (jnp.abs(p) + 1e-8)
            out.append(jnp.max(jnp.abs(flat(v.updates[name]) - want)) / s.learning_rate)
        return jnp.stack(out)

    def alignment(v):  # g·d of each student: where it is > 0 the "aligned" rule projects, else it leaves g
        return jnp.stack([jnp.dot(flat(v.grads[n]), flat(jax.grad(lambda p: class_cross_entropy(
            v.run.model.apply(p, v.run.data["test_x"][-s.held_out:]), v.run.data["test_y"][-s.held_out:], 10))(
            v.run.students[n]))) for n in ("student_aux", "cross_aux")])

    exp = mitigation_experiment("projection", s)
    exp = exp.replace(trace={}, step_metrics={"error": error, "gd": alignment},
                      hparams={**exp.hparams, "projection_weight": 0.5})
    r = sm.run(exp, task, n_runs=1)
    first = np.asarray(r.step_metrics["error"])[0, 0, 0]  # (values, runs, steps, students): step 0
    assert np.all(first < 1e-3), first
    # the rule was exercised: the shared-init student's step-0 gradient is aligned with the task's (g·d > 0), so
    # "aligned" projected it as "always" does (a projection that did nothing would still match p = g elsewhere)
    assert np.asarray(r.step_metrics["gd"])[0, 0, 0, 0] > 0
    assert set(rules) == {when}  # the settings' rule is the one the optimiser was built with
    with pytest.raises(ConfigError, match="projection_when = 'never' is invalid"):
        MitigationSettings(projection_when="never")


def test_without_the_projection_the_held_out_images_need_no_room(monkeypatch, fake_dataset):
    """With ``projection=False`` no held-out images are drawn: 900 probe images fit 1000 test images whatever
    ``held_out`` says (with the projection, 900 + 256 do not), so the study goes on to its compute."""
    import subliminal_mlp.studies.mitigations as mit

    class Computed(Exception):
        pass

    def computed(*a, **k):
        raise Computed

    monkeypatch.setattr(mit.engine, "run", computed)
    data = fake_dataset(3000, 1000)
    with pytest.raises(Computed):
        run_mitigations(MitigationSettings(n_probe=900, held_out=256, projection=False), data)
    with pytest.raises(Computed):
        run_mitigations(MitigationSettings(n_probe=1000, held_out=256, projection=np.bool_(False)), data)
    with pytest.raises(ConfigError, match="n_probe = 900 and held_out = 256 need more"):
        run_mitigations(MitigationSettings(n_probe=900, held_out=256, projection=np.bool_(True)), data)
