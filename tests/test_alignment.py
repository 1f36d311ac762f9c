"""Gradient alignment during distillation: cosine and projection against a direct computation, and a real run."""

import jax
import jax.numpy as jnp
import optax
import pytest
from jax.flatten_util import ravel_pytree

from subliminal_mlp.studies.alignment import STUDENTS, format_alignment_table, run_alignment, write_alignment
from subliminal_mlp.core.config import Config
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.model import init_params
from subliminal_mlp.core.students import cosine, project_out


def test_cosine_and_projection_of_each_student_against_flattened_vectors():
    # What the experiment does per student and step: the step metric's cosine of the raw gradient
    # with the task gradient at the student's parameters, and project_out(task gradient, weight).
    cfg = Config(hidden_widths=(8,), aux_logits=2)
    task_grad = lambda p: jax.tree.map(lambda a: jnp.sin(a) + 0.3, p)  # noqa: E731  any function of params
    for s, weight in enumerate([0.0, 1.0, 0.5]):
        params = init_params(jax.random.PRNGKey(s), cfg)
        grads = jax.tree.map(lambda a: jax.random.normal(jax.random.PRNGKey(7), a.shape), params)
        cos = cosine(grads, task_grad(params))
        g, t = ravel_pytree(grads)[0], ravel_pytree(task_grad(params))[0]
        want = float(g @ t / (jnp.linalg.norm(g) * jnp.linalg.norm(t)))
        assert float(cos) == pytest.approx(want, rel=1e-4, abs=1e-6)
        for sign in (1.0, -1.0):  # the gradient aligned with the task gradient, then opposed to it
            u = jax.tree.map(lambda a: a * sign * jnp.sign(g @ t), grads)
            new, _ = project_out(task_grad, weight).update(u, optax.EmptyState(), params)
            remaining = float(ravel_pytree(new)[0] @ t) / float(ravel_pytree(u)[0] @ t)
            # Kitkana & Arora's test: the component is removed (its fraction weight) only when they align.
            assert remaining == pytest.approx(1.0 - weight if sign > 0 else 1.0, abs=1e-4)


def test_run_alignment_records_every_step(data_root, tmp_path, check_envelope, monkeypatch):
    import subliminal_mlp.studies.alignment as A

    data = load_mnist(data_root)
    cfg = Config(hidden_widths=(32,), n_runs=2, teacher_epochs=1, student_epochs=2, n_noise=2048, batch_size=512)
    rules, real = [], A.project_out
    monkeypatch.setattr(A, "project_out", lambda d, *, when: rules.append(when) or real(d, when=when))
    rec = run_alignment(cfg, data, held_out=128, probe_every=2, projection="always", progress=True)
    check_envelope(rec, data.checksums)
    assert rec["projection"] == "always" and set(rules) == {"always"}  # the rule asked for is the one used
    with pytest.raises(ValueError, match="projection = 'sometimes' is invalid"):
        run_alignment(cfg, data, projection="sometimes")
    n_steps = 2 * 4
    for name, _, _ in STUDENTS:
        assert len(rec["cosine"][name]["mean"]) == n_steps
        assert all(-1 <= c <= 1 for c in rec["cosine"][name]["mean"])
        assert len(rec["accuracy_trace"][name]["mean"]) == len(rec["probe_steps"])
    # Same start, same data: with and without projection the first step's raw cosine is identical.
    assert rec["cosine"]["student_aux"]["mean"][0] == pytest.approx(rec["cosine"]["student_aux_projected"]["mean"][0],
                                                                    abs=1e-6)
    assert "student_aux_projected" in format_alignment_table(rec)
    # The reference's final accuracy is that of the run's θ0 on the whole test set; the trained teacher's is higher.
    import subliminal_mlp as sm
    from subliminal_mlp.core.engine import run_keys

    net = sm.mlp((32,))
    for r in range(2):
        theta0 = net.init(run_keys(cfg.seed, r)["init"])
        want = sm.accuracy(theta0, data.test_images, data.test_labels, 10, apply_fn=net.apply)
        assert rec["final"]["reference"]["accuracies"][r] == pytest.approx(float(want), abs=1e-6)
    assert rec["final"]["teacher"]["mean"] > rec["final"]["reference"]["mean"] + 0.3
    files = write_alignment(rec, tmp_path)
    assert files["png"].stat().st_size > 10_000
    with pytest.raises(ValueError, match="held_out"):
        run_alignment(cfg, data, held_out=9000)
    with pytest.raises(ValueError, match="student_epochs = 0: .* give student_epochs >= 1"):
        run_alignment(cfg.replace(student_epochs=0), data)


def test_the_cosine_metric_is_each_students_gradient_against_its_own_task_gradient_on_the_last_images():
    # A stub step view on a small model: cos(grads[n], ∇ L_class(θ_n) on the last 5 test images), per student,
    # computed here with ravel_pytree and jax.grad on those rows.
    import types

    import subliminal_mlp as sm
    from subliminal_mlp.core.losses import class_cross_entropy
    from subliminal_mlp.studies.alignment import alignment_experiment

    net = sm.mlp((4,), input_dim=6)
    names = [n for n, _, _ in STUDENTS]
    keys = jax.random.split(jax.random.PRNGKey(0), 2 * len(names) + 2)
    x = jax.random.normal(keys[0], (20, 6))
    y = jnp.arange(20) % 10
    students = {n: net.init(k) for n, k in zip(names, keys[2:])}
    grads = {n: net.init(k) for n, k in zip(names, keys[2 + len(names):])}
    run = types.SimpleNamespace(data={"test_x": x, "test_y": y}, model=net, students=students,
                                teacher=net.init(keys[1]))
    cos = alignment_experiment(Config(), held_out=5).step_metrics["cos"](types.SimpleNamespace(run=run, grads=grads))
    for k, n in enumerate(names):
        g_task = jax.grad(lambda p: class_cross_entropy(net.apply(p, x[-5:]), y[-5:], 10))(students[n])
        a, b = ravel_pytree(grads[n])[0], ravel_pytree(g_task)[0]
        assert float(cos[k]) == pytest.approx(float(a @ b / (jnp.linalg.norm(a) * jnp.linalg.norm(b))), rel=1e-4)


def test_the_plot_names_the_recorded_rule_and_a_record_without_one_removed_it_on_every_step(monkeypatch):
    # The committed record, drawn with its legend read back instead of saved: 'aligned' names the protocol's test;
    # a record made before the rule was recorded (no "projection") projected every step.
    from pathlib import Path

    from subliminal_mlp.core.results import read_results
    from subliminal_mlp.report import plotting
    from subliminal_mlp.studies.alignment import plot_alignment

    labels = []
    monkeypatch.setattr(plotting, "save_figure",
                        lambda fig, path, record=None: labels.append(fig.axes[1].get_legend_handles_labels()[1]))
    rec = read_results(Path(__file__).resolve().parents[1] / "figures" / "alignment.json")
    old = {k: v for k, v in rec.items() if k != "projection"}
    for r in ({**rec, "projection": "aligned"}, {**rec, "projection": "always"}, old):
        plot_alignment(r, "unused.png")
    aligned, always, before = ({n for n in ls if "removed" in n} for ls in labels)
    assert aligned == {"student aux (aligned task component removed)", "cross aux (aligned task component removed)"}
    assert always == before == {"student aux (task component removed)", "cross aux (task component removed)"}
