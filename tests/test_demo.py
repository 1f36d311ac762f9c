"""The teaching demo: one command, one figure, the effect visible."""

import numpy as np

from subliminal_mlp.cli import main


def test_demo_command_writes_the_figure_and_shows_the_effect(data_root, tmp_path, capsys, monkeypatch):
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
