"""Predicting transfer from one step: the single-step metrics against the engine's own first step and
hand-written gradients, Spearman's ρ against its closed form, and the study end to end on MNIST."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import subliminal_mlp as sm
from subliminal_mlp import Config, inputs
from subliminal_mlp.core.config import ConfigError
from subliminal_mlp.core.engine import run_keys
from subliminal_mlp.core.results import data_record, read_results
from subliminal_mlp.core.students import FIGURE10
from subliminal_mlp.studies import input_families as F
from subliminal_mlp.studies import one_step as O
from subliminal_mlp.theory import float64, to_float64, tree_cosine


@pytest.fixture(scope="module")
def mnist(data_root):
    return sm.load_mnist(data_root)


def _neg(tree):
    return jax.tree.map(jnp.negative, tree)


def test_metrics_are_the_engines_own_first_step(mnist):
    # The engine's first distillation step, seen by a step metric: its batch indices and each aux student's raw
    # gradient (of Figure 10's KL loss), against the one-step metrics computed from the run's view alone.
    B = 256
    aux = tuple(s for s in FIGURE10 if s.name in ("student_aux", "cross_aux"))

    wd, lr = 5.0, 3e-4
    students = aux + (sm.Student("adamw", "own", "aux", optimizer=optax.adamw(lr, weight_decay=wd)),
                      sm.Student("sgd", "own", "aux", optimizer=optax.sgd(0.1)))

    def first_cos(v):
        d = jax.tree.map(jnp.subtract, v.run.teacher, v.run.reference)
        cos = []
        for name in ("student_aux", "cross_aux"):
            g = v.grads[name]
            adam = jax.tree.map(lambda a: -a / (jnp.abs(a) + 1e-8), g)  # Adam's first (bias-corrected) update
            cos.append(jnp.stack([tree_cosine(adam, d), tree_cosine(_neg(g), d)]))
        # AdamW's first update by hand: −η (g/(|g| + ε) + wd·θ), θ the student's parameters before the step.
        adamw = jax.tree.map(lambda a, p: -lr * (a / (jnp.abs(a) + 1e-8) + wd * p), v.grads["adamw"],
                             v.run.students["adamw"])
        cos.append(jnp.stack([tree_cosine(adamw, d), tree_cosine(_neg(v.grads["sgd"]), d)]))
        return jnp.stack(cos)

    exp = sm.Experiment(model=sm.mlp((32,)), inputs=inputs.uniform(1024), students=students, teacher_epochs=1,
                        student_epochs=1, batch_size=B, metrics=O.one_step_metrics(B),
                        step_metrics={"cos": first_cos, "idx": lambda v: v.idx,
                                      O.FIRST_UPDATE: O.update_cosines([s.name for s in students])})
    r = sm.run(exp, sm.Task.from_dataset(mnist), n_runs=2, seed=3)
    for run in range(2):
        want = O.first_batch(run_keys(3, run)["student_shuffle"], 1024, B)
        np.testing.assert_array_equal(r.step_metrics["idx"][0, run, 0], want)
    got, engine_first = r.metrics["one_step_cos"][0], r.step_metrics["cos"][0, :, 0]
    np.testing.assert_allclose(got, engine_first[:, :2], atol=2e-4)  # (runs, [own, cross], [update, grad])
    # The optimisers' own updates, read in the engine (StepView.updates): Adam as computed from θ0 alone, AdamW
    # by hand, and SGD's update is its gradient step (cosine = the gradient's).
    read = r.step_metrics[O.FIRST_UPDATE][0, :, 0]  # (runs, students, [update, grad])
    np.testing.assert_allclose(read[:, :2], got, atol=2e-4)
    np.testing.assert_allclose(read[:, 2, 0], engine_first[:, 2, 0], rtol=1e-5)
    np.testing.assert_allclose(read[:, 3, 0], read[:, 3, 1], rtol=1e-5)
    np.testing.assert_allclose(read[:, 3, 1], engine_first[:, 2, 1], rtol=1e-5)
    assert np.all(np.abs(read[:, 2, 0] - read[:, 0, 0]) > 1e-3)  # weight decay turns the first update
    assert np.all(got[:, 0, :] > 0.02) and np.all(np.abs(got[:, 1, :]) < 0.02)  # shared start aligned, cross not
    assert np.all(r.metrics["one_step_A"][0] > 0)  # Lemma 1: A >= 0
    with pytest.raises(ConfigError, match="batch_size"):
        O.one_step_metrics(0)


def test_the_coefficient_is_the_derivative_of_the_alignment_and_the_cosines_are_by_hand():
    # On a tiny tanh network in float64: A against a central difference of ΔθS(ε)·ΔθT, ΔθS(ε) the gradient of a
    # hand-written aux cross-entropy at θ0 imitating θ0 + εΔθT; the cosines against jax.grad of that loss.
    net = sm.mlp((6,), n_classes=3, aux_logits=2, input_dim=5, activation="tanh")
    with float64():
        theta0 = to_float64(net.init(jax.random.PRNGKey(0)))
        cross = to_float64(net.init(jax.random.PRNGKey(1)))
        trained = jax.tree.map(lambda a: a + 0.3 * jax.random.normal(jax.random.PRNGKey(2), a.shape, a.dtype), theta0)
        pool = jax.random.uniform(jax.random.PRNGKey(3), (40, 5), jnp.float64, -1, 1)
        train_x = jax.random.normal(jax.random.PRNGKey(4), (30, 5), jnp.float64)
        train_y = jnp.arange(30) % 3
        keys = {"student_shuffle": jax.random.PRNGKey(5), "teacher_shuffle": jax.random.PRNGKey(6)}
        view = sm.engine.RunModels(theta0, trained, {}, {"train_x": train_x, "train_y": train_y}, {}, keys, net,
                                   {}, {"own": theta0, "cross": cross}, 0,
                                   sm.engine.InputSet(40, lambda idx: pool[idx]))
        m = O.one_step_metrics(16, teacher_batch_size=8)
        cos = np.asarray(jax.jit(lambda: m["one_step_cos"](view))())
        A = float(jax.jit(lambda: m["one_step_A"](view))())

        x = pool[O.first_batch(keys["student_shuffle"], 40, 16)]

        def ce_aux(theta, teacher):  # −Σ_aux softmax(teacher) log softmax(student), mean over x
            z, y = net.apply(theta, x)[:, 3:], net.apply(teacher, x)[:, 3:]
            return -jnp.mean(jnp.sum(jax.nn.softmax(y) * jax.nn.log_softmax(z), axis=1))

        t_idx = O.first_batch(keys["teacher_shuffle"], 30, 8)

        def class_ce(theta):
            return -jnp.mean(jax.nn.log_softmax(net.apply(theta, train_x[t_idx])[:, :3])[jnp.arange(8), train_y[t_idx]])

        @jax.jit  # the hand computations, compiled once (op by op, float64 would compile each operation)
        def by_hand():
            d = jax.tree.map(jnp.subtract, trained, theta0)
            rows = []
            for start in (theta0, cross):
                g = jax.grad(ce_aux)(start, trained)
                update, _ = optax.adam(1.0).update(g, optax.adam(1.0).init(start), start)
                rows.append(jnp.stack([tree_cosine(update, d), tree_cosine(_neg(g), d)]))
            d_t = _neg(jax.grad(class_ce)(theta0))

            def alignment(eps):  # ΔθS(ε)·ΔθT
                teacher = jax.tree.map(lambda a, b: a + eps * b, theta0, d_t)
                step = _neg(jax.grad(ce_aux)(theta0, teacher))
                return sum(jnp.vdot(a, b) for a, b in zip(jax.tree.leaves(step), jax.tree.leaves(d_t)))

            h = 1e-4
            return jnp.stack(rows), (alignment(h) - alignment(-h)) / (2 * h)

        want_cos, want_A = by_hand()
        np.testing.assert_allclose(cos, np.asarray(want_cos), rtol=1e-9)
        assert A == pytest.approx(float(want_A), rel=1e-5)
        assert A > 0


def test_first_batch_is_the_first_full_batch_or_everything():
    key = jax.random.PRNGKey(0)
    perm = np.asarray(jax.random.permutation(jax.random.fold_in(key, 0), 10))
    np.testing.assert_array_equal(O.first_batch(key, 10, 4), perm[:4])
    np.testing.assert_array_equal(O.first_batch(key, 10, 16), perm)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.integers(-1000, 1000), min_size=3, max_size=30, unique=True), st.randoms(use_true_random=False))
def test_spearman_without_ties_is_the_closed_form_and_rank_invariant(x, rnd):
    y = list(x)
    rnd.shuffle(y)
    n, rank = len(x), lambda v: np.argsort(np.argsort(v))
    d = rank(x) - rank(y)
    assert O.spearman(x, y) == pytest.approx(1 - 6 * np.sum(d * d) / (n * (n * n - 1)), abs=1e-12)
    assert O.spearman(np.exp(np.asarray(x) / 500), y) == pytest.approx(O.spearman(x, y), abs=1e-12)  # monotone map
    assert O.spearman(x, x) == pytest.approx(1.0) and O.spearman(x, [-v for v in x]) == pytest.approx(-1.0)


def test_spearman_with_ties_and_where_it_is_undefined():
    # x ranks 1, 2, 3, 4; y = [1, 2, 2, 3] ranks 1, 2.5, 2.5, 4: Pearson of the ranks by hand.
    rx, ry = np.array([1, 2, 3, 4.0]), np.array([1, 2.5, 2.5, 4])
    want = np.sum((rx - rx.mean()) * (ry - ry.mean())) / np.sqrt(np.sum((rx - rx.mean()) ** 2) * np.sum((ry - ry.mean()) ** 2))
    assert O.spearman([10, 20, 30, 40], [1, 2, 2, 3]) == pytest.approx(want)
    assert O.spearman([1, 2], [2, 1]) is None and O.spearman([1, 2, 3], [5, 5, 5]) is None
    with pytest.raises(ValueError, match="1-d"):
        O.spearman([1, 2, 3], [1, 2])
    # A diverged run (NaN or inf in either sequence) has no rank: its pair is left out, not ranked as the largest.
    nan, inf = float("nan"), float("inf")
    assert O.spearman([10, nan, 20, 30, 40], [1, 0, 2, 2, 3]) == pytest.approx(want)
    assert O.spearman([10, 20, 30, 40, 50], [1, 2, 2, 3, inf]) == pytest.approx(want)
    assert O.spearman([nan, nan, 1, 2], [1, 2, 3, 4]) is None  # two pairs left


#: The key of the paper's setting in the tests' tiny protocol (32 hidden units, 1 + 1 epochs, 1,024 images of 512).
TINY_PAPER = "paper@batch_size=512,hidden_widths=[32],n_noise=1024,student_epochs=1,teacher_epochs=1"


def test_the_study_end_to_end_on_an_input_families_record(mnist, tmp_path):
    cfg = Config(n_runs=2, hidden_widths=(32,), n_noise=1024, batch_size=512, teacher_epochs=1, student_epochs=1)
    families = F.run_input_families(cfg, mnist, F.InputFamilySettings(families=("distribution", "subspace"),
                                                                       distributions=("uniform",), subspace_k=(10, 784)),
                                    fuse=True)
    rec = O.run_one_step(mnist, input_families=families)
    assert [p["name"] for p in rec["programs"]] == ["one_step:input_families:fused"]  # one program, as the record
    uniform, k10, k784 = rec["settings"]
    assert (uniform["label"], k10["label"], k784["label"]) == ("uniform", "10", "784") and uniform["key"] == TINY_PAPER
    for e, s in zip(rec["settings"][1:], families["families"]["subspace"]["settings"]):
        assert e["gain"] == s["gain"] and len(e["A"]["values"]) == 2
    # Full-rank noise aligns the first step with the teacher's displacement far more than 10 dimensions do.
    assert k784["cos_update"]["own"]["mean"] > 2 * k10["cos_update"]["own"]["mean"] > 0
    assert abs(k784["cos_update"]["cross"]["mean"]) < 0.02 < k784["cos_update"]["own"]["mean"]
    assert rec["correlations"]["n_settings"] == 3 and rec["correlations"]["families"] == {}  # families of < 3
    assert "Spearman" in O.format_one_step_table(rec)
    paths = O.write_one_step(rec, tmp_path)
    back = read_results(paths["json"], format=O.FORMAT)
    assert back["settings"][2]["cos_grad"]["own"]["values"] == k784["cos_grad"]["own"]["values"]
    assert paths["png"].stat().st_size > 10_000 and len(paths["csv"].read_text().splitlines()) == 1 + 3 * 2
    with pytest.raises(ConfigError, match="subliminal-mlp/input-families record"):
        O.run_one_step(mnist, input_families={"format": "subliminal-mlp/fig10"})
    with pytest.raises(ConfigError, match="at least one"):
        O.run_one_step(mnist)
    # A record whose settings are not its settings' (one left out, or relabelled) is refused before any compute.
    import copy
    for change in (lambda f: f["settings"].pop(), lambda f: f["settings"][0].update(label="9")):
        bad = copy.deepcopy(families)
        change(bad["families"]["subspace"])
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(O.engine, "run", lambda *a, **k: pytest.fail("computed"))
            with pytest.raises(ConfigError, match="the record was made with other settings"):
                O._input_families_settings(bad, mnist, False, lambda s: None)
    # A teacher-task record of the same protocol (its parts' gains by hand): a program per setting; the paper's
    # setting (K = 10 at the config's teacher epochs; U[-1, 1] in the input families) counts once.
    point = lambda v, gains: {"value": v, "gain_over_cross": {"values": gains}}  # noqa: E731
    task = {"format": "subliminal-mlp/teacher-task", "config": cfg.to_dict(), "n_runs": 2, "seeds": {"seed": 0},
            "baseline": {"n_classes": 10, "teacher_epochs": 1, "student_epochs": 1},
            "parts": {"teacher_epochs": {"points": []}, "classes": {"points": [point(2, [0.05, 0.15])]}}}
    (k2,) = O.run_one_step(mnist, teacher_task=task)["settings"]
    assert (k2["family"], k2["label"], k2["key"]) == ("classes", "K = 2", "K=2/teacher_epochs=1@" + TINY_PAPER[6:])
    assert k2["gain"]["mean"] == pytest.approx(0.1) and k2["A"]["mean"] > 0
    assert k2["cos_update"]["own"]["mean"] > 0.02 > abs(k2["cos_update"]["cross"]["mean"])
    assert O.correlations(rec["settings"] + [k2])["n_settings"] == 4
    # The paper's setting of the teacher task is the input families' uniform one: one key, counted once.
    assert O.correlations(rec["settings"] + [{**uniform, "family": "classes"}])["n_settings"] == 3
    with pytest.raises(ConfigError, match=r"different runs and seeds \(input_families: 2 runs from seed 0; "
                                          r"teacher_task: 2 runs from seed 1\)"):  # which record is which
        O.run_one_step(mnist, input_families=families, teacher_task={**task, "seeds": {"seed": 1}})


def _gains(n):
    return {"gains": list(np.linspace(0.1, 0.2, n))}


def test_the_other_sources_rerun_each_students_own_first_update(mnist, tmp_path):
    # Hand-made records (their gains are only carried through) of tiny protocols: every source reruns its settings'
    # first step in the engine and reads the student's own first update (update_cosines).
    from subliminal_mlp.studies import mitigations as M
    from subliminal_mlp.studies import split_heads as S
    from subliminal_mlp.studies import teacher_task as T

    tiny = dict(n_runs=2, n_noise=1024, batch_size=512, teacher_epochs=1, student_epochs=1)
    ms = M.MitigationSettings(hidden=(32,), liminal_weights=(10.0,), liminal_epochs=(1,), weight_decays=(),
                              sgd_learning_rates=(1e-3,), projection=False, **tiny)
    families = {f: {"hparams": {k: [float(x) for x in v] for k, v in sw.items()},
                    "labels": [f"{f} {i}" for i in range(len(next(iter(sw.values()))))],
                    "gain": [_gains(2) for _ in next(iter(sw.values()))]} for f, sw in ms.sweeps().items()}
    head = {"n_runs": 2, "seeds": {"seed": 0}}
    mit = {"format": M.FORMAT, "config": ms.to_dict(), "families": families, **head}
    hs = S.SplitHeadSettings(hidden=(32, 32), **tiny)
    acc = {"accuracies": [0.5, 0.6]}
    heads = {"format": S.FORMAT, "config": hs.to_dict(), **head,
             **{part: {"models": {n: acc for n in (*names, "cross")}} for part, names, _ in O.SPLIT_STUDENTS[:1]}}
    cfg = Config(hidden_widths=(32,), **tiny)
    gen = {"values": [0.1, 0.2]}
    task = {"format": T.FORMAT, "config": cfg.to_dict(), **head,
            "baseline": {"n_classes": 10, "teacher_epochs": 1, "student_epochs": 1},
            "parts": {"teacher_epochs": {"points": []}, "classes": {"points": []},
                      "generations": {"points": [{"gain_over_cross": gen, "models": {"student_aux": gen}}] * 2}}}
    values = [{"config": cfg.replace(temperature=t).to_dict(), **head,
               "models": {"student_aux": acc, "cross_aux": {"accuracies": [0.1, 0.1]}}} for t in (1.0, 4.0)]
    sweeps = {"temperature": {"summary": {"format": "subliminal-mlp/sweep", "param": "temperature",
                                          "labels": ["1", "4"], "created": "t1"}, "values": values}}
    rec = O.run_one_step(mnist, mitigations=mit, split_heads=heads, teacher_task=task, sweeps=sweeps)
    by = {(e["family"], e["label"]): e for e in rec["settings"]}
    cu = lambda f, label, start="own": np.asarray(by[f, label]["cos_update"][start]["values"])  # noqa: E731
    cg = lambda f, label: np.asarray(by[f, label]["cos_grad"]["own"]["values"])  # noqa: E731
    # Liminal training's penalty is a divergence from the start: zero gradient there (to rounding), so the first
    # gradient is the plain one.
    np.testing.assert_allclose(cg("liminal", "liminal 1"), cg("liminal", "liminal 0"), rtol=1e-4)
    assert by["liminal", "liminal 1"]["A"] is None
    # The paper's setting in this tiny protocol, shown by three records, is one key; the split-head teacher's
    # (another width) is not: keys are qualified by the protocol, so equal keys are the same computation.
    paper32 = {by[k]["key"] for k in (("liminal", "liminal 0"), ("generations", "generation 1"),
                                       ("sweep: temperature", "1"))}
    split_shared = TINY_PAPER.replace("paper", "split_head:shared").replace("[32]", "[32, 32]")
    assert paper32 == {TINY_PAPER} and by["split-head MLP", "θ0 (all layers)"]["key"] == split_shared
    assert rec["correlations"]["n_settings"] == len({e["key"] for e in rec["settings"]}) == len(rec["settings"]) - 2
    np.testing.assert_allclose(cu("sgd", "sgd 0"), cg("sgd", "sgd 0"), rtol=1e-5)  # SGD's update is its gradient
    for f, label in (("liminal", "liminal 0"), ("split-head MLP", "θ0 (all layers)"), ("generations", "generation 1"),
                     ("generations", "generation 2"), ("sweep: temperature", "4")):
        assert np.all(cu(f, label) > 0.02) and np.all(np.abs(cu(f, label, "cross")) < 0.02), (f, label)
    # Fresh hidden layers under the teacher's initial heads: the trunk's update is unrelated to the teacher's.
    assert np.all(cu("split-head MLP", "nothing (fresh)") < cu("split-head MLP", "θ0 (all layers)") / 2)
    assert by["split-head MLP", "θ0 (all layers)"]["A"]["mean"] > 0 and by["split-head MLP", "aux head"]["A"] is None
    assert by["sweep: temperature", "4"]["A"] is None and by["sweep: temperature", "1"]["A"]["mean"] > 0
    assert [p["settings"] for p in rec["programs"] if p["source"] == "sweeps"] == [2]  # one traced program
    assert by["generations", "generation 2"]["key"] == TINY_PAPER.replace("paper", "generation=2")
    assert rec["correlations"]["n_settings_A"] == sum(e["A"] is not None for e in rec["settings"]) == 2
    assert "—" in O.format_one_step_table(rec)
    # Each sweep's record is named with its own time (they were made at different times).
    assert rec["sources"]["sweeps"] == {"format": "subliminal-mlp/sweep", "created": "t1", "records": {"temperature": "t1"}}
    assert "records" not in rec["sources"]["mitigations"]
    # The record's config is a full Config whichever source came first: a study's settings (hidden, no input_dim)
    # are mapped onto it, and the figure is drawn from it (it raised KeyError 'input_dim' for mitigations first).
    assert rec["config"] == cfg.to_dict()
    for study in (ms, hs):
        config = O._protocol_config(study.to_dict(), "fashion-mnist")
        assert config == Config(hidden_widths=study.hidden, dataset="fashion-mnist", **tiny).to_dict()
        assert O.plot_one_step({**rec, "config": config}, tmp_path / "one_step.png").stat().st_size > 10_000


def test_a_records_protocol_qualifies_its_keys_whenever_it_is_not_the_papers():
    """Two records that differ in any protocol setting (the loss, the classes, ...) never share a key."""
    paper = Config().to_dict()
    assert O._protocol_changes(paper) == {}
    assert O._protocol_changes({**paper, "init_noise_kind": "orthogonal"}) == {}  # no noise: its kind is moot
    for field, value in (("loss", "mse"), ("temperature", 2.0), ("n_classes", 5), ("student_inputs", "gaussian"),
                         ("init_noise", 0.1), ("hidden_widths", [64])):
        changes = O._protocol_changes({**paper, field: value})
        assert changes == {field: value}
        assert O._qualified("baseline", changes) == f"baseline@{field}={value}"
    assert O._protocol_changes({"hidden": [256, 256], "aux_logits": 3}) == {}  # a study's ProtocolSettings
    # One configuration reached by two sweeps is one key, whichever field each sweeps (the loss sweep's mse and
    # the MSE depth sweep's 256,256 are the paper's network with loss = mse).
    mse = Config(n_runs=10, loss="mse")
    assert O._sweep_key(mse, "loss") == O._sweep_key(mse, "hidden_widths") == "paper@loss=mse"
    assert O._sweep_key(Config(n_runs=10), "aux_logits") == "paper"


def test_an_entry_files_each_cosine_under_its_start_and_quantity_and_the_csv_keeps_them_apart():
    # cos[run, start, column] = 4·run + 2·start + column: every value says where it came from.
    cos = np.arange(8.0).reshape(2, 2, 2)
    e = O._entry("fam", "setting", "key", [0.25, 0.5], cos, [7.0, 9.0])
    assert e["cos_update"]["own"]["values"] == [0, 4] and e["cos_update"]["cross"]["values"] == [2, 6]
    assert e["cos_grad"]["own"]["values"] == [1, 5] and e["cos_grad"]["cross"]["values"] == [3, 7]
    assert e["gain"]["mean"] == pytest.approx(0.375) and e["A"]["values"] == [7, 9]
    assert O._entry("fam", "setting", "key", [0.25, 0.5], cos)["A"] is None
    head, rows = O._csv_rows({"settings": [e]})
    assert head == ["family", "setting", "run", "gain", "cos_update_own", "cos_grad_own", "cos_update_cross",
                    "cos_grad_cross", "A"]
    assert rows == [["fam", "setting", 0, "0.25", "0", "1", "2", "3", "7"],
                    ["fam", "setting", 1, "0.5", "4", "5", "6", "7", "9"]]


def test_correlations_by_hand_on_hand_made_settings():
    # Settings s = 1..4 (keys a..d), gains s ∓ 0.3 per run. Shared start: cos_update s ∓ 0.1 (ρ = +1 with the
    # gain), cos_grad its negative (ρ = −1); the cross start the other way round. A = s ∓ 0.1 for a, b, c: a's
    # first entry has none, its later entry (another record) has it. The later entries of a and b (other records
    # showing those settings) have other cosines and gains: each setting counts once, as its first entry.
    def entry(key, family, s, A=True, shift=0.0):
        cu = np.array([s - 0.1, s + 0.1])
        cos = np.stack([np.stack([cu + shift, -cu - shift], axis=1), np.stack([-cu, cu], axis=1)], axis=1)
        return O._entry(family, key, key, [s - 0.3 + shift, s + 0.3], cos, cu if A else None)  # cos: (runs, start, col)

    first = [entry("a", "x", 1, A=False), entry("b", "x", 2), entry("c", "x", 3), entry("d", "y", 4, A=False)]
    later = [entry("a", "y", 1, shift=-20.0), entry("b", "z", 2, shift=20.0)]  # out of order, if they counted
    c = O.correlations(first + later)
    assert c["n_settings"] == 4 and c["n_settings_A"] == 3  # a (A from its later entry), b, c
    assert c["settings"] == {"cos_update": pytest.approx(1.0), "cos_grad": pytest.approx(-1.0), "A": pytest.approx(1.0)}
    # Over every (setting, run) pair, run by run: the same order (the runs of a setting are not interleaved).
    assert c["runs"] == {"cos_update": pytest.approx(1.0), "cos_grad": pytest.approx(-1.0), "A": pytest.approx(1.0)}
    # Within a family of at least 3 entries (x: a, b, c, each as shown there; a's entry has no A: 2 settings).
    assert set(c["families"]) == {"x"}
    assert c["families"]["x"] == {"cos_update": pytest.approx(1.0), "cos_grad": pytest.approx(-1.0), "A": None,
                                  "n_settings": 3}
    # The cross start's cosines are the control, not what is correlated: reversing them changes nothing.
    swapped = [{**e, "cos_update": {"own": e["cos_update"]["own"], "cross": e["cos_grad"]["cross"]}} for e in first]
    assert O.correlations(swapped)["settings"]["cos_update"] == pytest.approx(1.0)


def test_each_source_pairs_its_records_gains_with_the_right_students_cosines(monkeypatch):
    # The engine replaced by a fake whose cosines say where they came from: cos[value, run, student, column] =
    # 1000·value + 100·student + 10·column + run, A = value + run/10. Every entry must carry its own setting's gain
    # (student − its control, from the record), its student's and the control's cosines and, where kept, its A.
    from types import SimpleNamespace

    from subliminal_mlp.core import engine
    from subliminal_mlp.studies import mitigations as M
    from subliminal_mlp.studies import split_heads as S
    from subliminal_mlp.studies import teacher_task as T

    calls = []

    def fake_result(n_values, n_runs):
        A = np.arange(n_values)[:, None] + np.arange(n_runs)[None, :] / 10
        acc = lambda name: np.full(n_runs, 0.5)  # noqa: E731
        return SimpleNamespace(compile_s=0.0, run_s=0.0, teachers="teachers", devices=[], accuracy=acc,
                               metrics={"one_step_A": A, "one_step_cos": np.zeros((n_values, n_runs, 2, 2))},
                               students={"student_aux": {"w": np.zeros((n_values, n_runs, 1))}})

    def first_step(exp, task, names, *, n_runs, seed, sweep=None, **kw):
        n_values = len(next(iter(sweep.values()))) if sweep else 1
        calls.append((exp.name, tuple(names), sweep))
        v, r, s, c = np.meshgrid(np.arange(n_values), np.arange(n_runs), np.arange(len(names)), np.arange(2),
                                 indexing="ij")
        return fake_result(n_values, n_runs), (1000 * v + 100 * s + 10 * c + r).astype(float)

    monkeypatch.setattr(O, "first_step", first_step)
    monkeypatch.setattr(engine, "run", lambda exp, task, *, n_runs, **kw: fake_result(1, n_runs))
    monkeypatch.setattr(engine.Task, "from_dataset", classmethod(lambda cls, data, **kw: "task"))
    monkeypatch.setattr(T, "task_for", lambda data, k: "task")

    def check(e, gains, value, student, control, A=None):
        np.testing.assert_allclose(e["gain"]["values"], gains, atol=1e-12)
        for start, s in (("own", student), ("cross", control)):
            for q, c in (("cos_update", 0), ("cos_grad", 1)):
                assert e[q][start]["values"] == [1000 * value + 100 * s + 10 * c + r for r in (0, 1)], (e["label"], q)
        assert (e["A"] is None) if A is None else e["A"]["values"] == pytest.approx([A, A + 0.1])

    tiny = dict(n_runs=2, n_noise=1024, batch_size=512, teacher_epochs=1, student_epochs=1)
    head = {"n_runs": 2, "seeds": {"seed": 0}}
    # Mitigations: three liminal settings, one SGD setting; setting v's gains are v + [0.1, 0.2].
    ms = M.MitigationSettings(hidden=(32,), liminal_weights=(10.0, 20.0), liminal_epochs=(1,), weight_decays=(),
                              sgd_learning_rates=(1e-3,), projection=False, **tiny)
    families = {f: {"hparams": {k: [float(x) for x in v] for k, v in sw.items()},
                    "labels": [f"{f} {i}" for i in range(len(next(iter(sw.values()))))],
                    "gain": [{"gains": [i + 0.1, i + 0.2]} for i in range(len(next(iter(sw.values()))))]}
                for f, sw in ms.sweeps().items()}
    entries, _, _ = O._mitigations_settings({"config": ms.to_dict(), "families": families, **head}, None, False,
                                            lambda s: None)
    assert [e["label"] for e in entries] == ["liminal 0", "liminal 1", "liminal 2", "sgd 0"]
    for e, v in zip(entries, (0, 1, 2, 0)):
        check(e, [v + 0.1, v + 0.2], v, 0, 1)  # students (student_aux, cross_aux)
    assert entries[0]["key"] == O.PAPER and entries[1]["key"] == "liminal:liminal 1"
    # Split heads: each student against the record's cross (the last student of the program).
    hs = S.SplitHeadSettings(hidden=(32, 32), **tiny)
    part, names, family = O.SPLIT_STUDENTS[0]
    acc = {n: [0.1 * i + 0.3, 0.1 * i + 0.35] for i, n in enumerate(names)}
    rec = {"config": hs.to_dict(), **head, part: {"models": {**{n: {"accuracies": a} for n, a in acc.items()},
                                                             "cross": {"accuracies": [0.1, 0.05]}}}}
    entries, _, _ = O._split_heads_settings(rec, None, False, lambda s: None)
    assert calls[-1][1] == (*names, "cross") and len(entries) == len(names)
    for i, (e, n) in enumerate(zip(entries, names)):
        check(e, np.asarray(acc[n]) - [0.1, 0.05], 0, i, len(names), 0.0 if n == "shared" else None)
    # Published sweeps: temperature 1 and 4 in one traced program; A only at temperature 1.
    cfg = Config(hidden_widths=(32,), **tiny)
    values = [{"config": cfg.replace(temperature=t).to_dict(), **head,
               "models": {"student_aux": {"accuracies": [0.6 + i, 0.7]}, "cross_aux": {"accuracies": [0.1, 0.3]}}}
              for i, t in enumerate((1.0, 4.0))]
    sweeps = {"temperature": {"summary": {"param": "temperature", "labels": ["1", "4"]}, "values": values}}
    entries, _, _ = O._sweeps_settings(sweeps, None, False, lambda s: None)
    check(entries[0], [0.5, 0.4], 0, 0, 1, 0.0)
    check(entries[1], [1.5, 0.4], 1, 0, 1)
    # Teacher task, generations: each generation's gain over its control from the record, its own first step.
    gen = lambda g: {"gain_over_cross": {"values": [g, -g]}, "models": {"student_aux": {"values": [0.5, 0.5]}}}  # noqa
    task = {"config": cfg.to_dict(), **head, "baseline": {"n_classes": 10, "teacher_epochs": 1, "student_epochs": 1},
            "parts": {"teacher_epochs": {"points": [{"value": v, **gen(0.5)} for v in (1, 2)]},
                      "classes": {"points": [{"value": 2, **gen(0.5)}]},
                      "generations": {"points": [gen(0.25), gen(0.125)]}}}
    entries, programs, _ = O._teacher_task_settings(task, None, False, lambda s: None)
    assert [c[2] for c in calls[-2:]] == [None, {T.GENERATION: [2.0]}]
    check(entries[3], [0.25, -0.25], 0, 0, 1), check(entries[4], [0.125, -0.125], 0, 0, 1)
    # Only the config's own setting is the paper's: every other one has its own key.
    assert [e["key"] for e in entries] == [O.PAPER, "K=10/teacher_epochs=2", "K=2/teacher_epochs=1", O.PAPER,
                                           "generation=2"]
    assert programs[-1]["max_abs_accuracy_difference_from_record"] == 0.0


def test_a_record_made_on_other_data_is_refused_before_any_compute(monkeypatch, fake_dataset):
    # The source's rerun replaced by a fake (what it returns is carried into the record); the data by a stand-in
    # of the user's own: a record made on other data (the files, or other arrays) is refused before the rerun.
    from types import SimpleNamespace

    reran = []

    def settings(rec, data, progress, log):
        reran.append(rec["created"])
        e = O._entry("subspace", "784", O.PAPER, [0.1, 0.2], np.zeros((2, 2, 2)), [1.0, 2.0])
        return [e], [{"name": "p", "compile_s": 1.0, "run_s": 2.0}], SimpleNamespace(devices=["cpu"])

    monkeypatch.setitem(O.SOURCES, "input_families", ("subliminal-mlp/input-families", settings))
    data = fake_dataset(checksums={"train-images": "aa"}, source_dir="/data")
    cfg = Config(hidden_widths=(32,)).to_dict()
    rec = {"format": "subliminal-mlp/input-families", "config": cfg, "n_runs": 2, "seeds": {"seed": 0},
           "data": {"sha256": {"train-images": "ab"}}, "created": "then"}
    for other in ({"sha256": {"train-images": "aa"}}, data_record(fake_dataset(checksums={"train-images": "aa"},
                                                                                 n_test=999))):
        with pytest.raises(ConfigError, match="data differ"):
            O.run_one_step(data, input_families={**rec, "data": other})
    assert reran == []
    out = O.run_one_step(data, input_families={**rec, "data": data_record(data)})
    assert reran == ["then"] and out["sources"] == {"input_families": {"format": rec["format"], "created": "then"}}
    (e,) = out["settings"]
    assert e["key"] == "paper@hidden_widths=[32]" and e["source"] == "input_families"  # not the paper's protocol
    assert out["data"] == data_record(data) and out["timing"]["compile_s"] == 1.0


def test_first_step_returns_the_named_students_step_zero_in_their_order(mnist):
    # The update cosines first_step reads in the engine at step 0 (Adam's first update, the raw gradient) are those
    # one_step_metrics computes from the run's θ0 alone, for the students in the order named (the control first
    # here); the run is cut to one epoch of those students.
    exp = sm.Experiment(model=sm.mlp((8,)), inputs=inputs.uniform(1024), teacher_epochs=1, student_epochs=3,
                        batch_size=256, metrics=O.one_step_metrics(256))
    res, cos = O.first_step(exp, sm.Task.from_dataset(mnist), ("cross_aux", "student_aux"), n_runs=2, seed=1)
    assert cos.shape == (1, 2, 2, 2) and res.experiment.student_epochs == 1
    assert [s.name for s in res.experiment.students] == ["cross_aux", "student_aux"]
    want = np.asarray(res.metrics["one_step_cos"][0])  # (runs, [own, cross], [update, grad])
    np.testing.assert_allclose(cos[0], want[:, ::-1], atol=2e-4)
    with pytest.raises(ConfigError, match="no student \\['nobody'\\]"):
        O.first_step(exp, sm.Task.from_dataset(mnist), ("student_aux", "nobody"), n_runs=2, seed=1)


def test_a_sweep_of_fashion_images_loads_them_from_the_data_dir_given(mnist, data_root, tmp_path, monkeypatch):
    # The published student_inputs sweep has a value whose students see Fashion-MNIST images. run_one_step(...,
    # data_dir=) finds them there, not only through $SUBLIMINAL_MLP_DATA or the cache (the figures pipeline's
    # --data-dir was ignored for them: 'fashion-mnist files not found'), checksums them in the record and hands
    # the program their training images (of which it draws the first n_noise). The rerun is replaced by a fake that keeps the experiment.
    from types import SimpleNamespace

    from subliminal_mlp.core.data import load_dataset

    for var, value in (("SUBLIMINAL_MLP_DATA", str(tmp_path / "nothing")), ("SUBLIMINAL_MLP_CACHE", str(tmp_path))):
        monkeypatch.setenv(var, value)
    seen = []

    def first_step(exp, task, names, *, n_runs, **kw):
        seen.append(exp)
        res = SimpleNamespace(compile_s=0.0, run_s=0.0, devices=["cpu"],
                              metrics={"one_step_A": np.zeros((1, n_runs))})
        return res, np.zeros((1, n_runs, len(names), 2))

    monkeypatch.setattr(O, "first_step", first_step)
    cfg = Config(hidden_widths=(32,), n_runs=2, n_noise=1024, batch_size=512, teacher_epochs=1, student_epochs=1)
    acc = {"student_aux": {"accuracies": [0.3, 0.4]}, "cross_aux": {"accuracies": [0.1, 0.1]}}
    values = [{"config": cfg.replace(student_inputs=kind).to_dict(), "n_runs": 2, "seeds": {"seed": 0},
               "models": acc} for kind in ("uniform", "task", "fashion-mnist")]
    sweeps = {"student_inputs": {"summary": {"format": "subliminal-mlp/sweep", "param": "student_inputs",
                                             "labels": ["uniform", "task", "fashion-mnist"], "created": "t",
                                             "config": cfg.to_dict()},
                                 "values": values}}
    with pytest.raises(sm.DataError, match="nothing .*from \\$SUBLIMINAL_MLP_DATA.* containing fashion-mnist/"):
        O.run_one_step(mnist, sweeps=sweeps)
    rec = O.run_one_step(mnist, sweeps=sweeps, data_dir=data_root)
    fashion = load_dataset("fashion-mnist", data_root)
    assert rec["data"]["inputs"]["dataset"] == "fashion-mnist"
    assert rec["data"]["inputs"]["sha256"] == fashion.checksums
    src = seen[-1].inputs  # the fashion value (the last): images(pool, n_noise), the pool's first 1,024 images
    assert src.n == 1024
    np.testing.assert_array_equal(np.asarray(src.arrays["pool"]), fashion.train_images)
    by_label = {e.name.rsplit(":", 1)[1]: e for e in seen}
    assert not isinstance(by_label["uniform"].inputs.arrays.get("pool"), np.ndarray)  # the uniform value: noise, no pool
    # The task value's students see the task's own images, not the Fashion-MNIST pool loaded for the other value.
    assert by_label["task"].inputs.arrays["pool"] == inputs.TASK_IMAGES
