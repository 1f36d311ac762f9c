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
