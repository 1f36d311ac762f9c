"""Statistics, atomic writes, the JSON format, and the FLOP count against a hand computation."""

import json
from pathlib import Path

import numpy as np
import pytest

from subliminal_mlp.core.config import Config
from subliminal_mlp.report.flops import forward_flops, protocol_flops, train_step_flops
from subliminal_mlp.core.results import atomic_write_text, format_table, mean_ci95, read_results, records_csv


def test_mean_ci95_is_the_papers_formula():
    v = [0.5, 0.7, 0.6, 0.9]
    mean, ci = mean_ci95(v)
    assert mean == pytest.approx(0.675)
    sd = np.sqrt(sum((x - 0.675) ** 2 for x in v) / 3)
    assert ci == pytest.approx(1.96 * sd / 2)
    assert mean_ci95([0.3]) == (0.3, None)
    with pytest.raises(ValueError, match="at least one value"):
        mean_ci95([])


def test_atomic_write_replaces_and_leaves_no_temporary(tmp_path):
    p = tmp_path / "sub" / "a.json"
    atomic_write_text(p, "one")
    atomic_write_text(p, "two")
    assert p.read_text() == "two"
    assert [q.name for q in p.parent.iterdir()] == ["a.json"]


def test_atomic_write_never_exposes_a_partial_file(tmp_path, monkeypatch):
    import os
    import stat
    import tempfile

    from subliminal_mlp.core import results as results_module
    from subliminal_mlp.core.results import atomic_write, write_record

    p = tmp_path / "a.json"
    p.write_text("old")

    def fails(tmp):  # writes part of the file, then fails
        Path(tmp).write_text("partial")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(p, fails)
    assert p.read_text() == "old" and [q.name for q in tmp_path.iterdir()] == ["a.json"]  # no temporary left
    # The temporary file is made beside the target (os.replace is atomic only within one file system).
    made = []
    real_mkstemp = tempfile.mkstemp
    monkeypatch.setattr(tempfile, "mkstemp", lambda **kw: made.append(kw) or real_mkstemp(**kw))
    atomic_write_text(p, "new")
    assert Path(made[0]["dir"]) == tmp_path and p.read_text() == "new"
    # The file gets the usual permissions (0666 less the process's umask, read once at import: reading it sets
    # it for a moment), not mkstemp's 0600; its content is on disk (fsync) before the rename.
    assert results_module._UMASK == results_module._read_umask()
    monkeypatch.setattr(results_module, "_UMASK", 0o027)
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append("replace") or real_replace(a, b))
    atomic_write_text(tmp_path / "b.json", "x")
    monkeypatch.setattr(os, "fsync", real_fsync), monkeypatch.setattr(os, "replace", real_replace)
    assert stat.S_IMODE((tmp_path / "b.json").stat().st_mode) == 0o640 and events == ["fsync", "replace"]
    # write_record replaces the JSON (the file readers trust) after the CSV.
    order = []
    real = results_module.atomic_write_text
    monkeypatch.setattr(results_module, "atomic_write_text", lambda path, text: order.append(Path(path).name)
                        or real(path, text))
    write_record({"format": "subliminal-mlp/x"}, tmp_path, "rec", csv=(["a"], [[1]]))
    assert order == ["rec.csv", "rec.json"]


def test_environment_records_x64_mode():
    import jax

    from subliminal_mlp.core.results import environment

    assert environment()["x64"] is False
    with jax.enable_x64(True):
        assert environment()["x64"] is True


def test_csv_table_and_format_check(tmp_path):
    rec = {"format": "subliminal-mlp/fig10", "models": {"teacher": {"mean": 0.9, "ci95": 0.01, "accuracies": [0.89, 0.91]},
                                                      "student_aux": {"mean": 0.5, "ci95": None, "accuracies": [0.5]}}}
    assert records_csv(rec).splitlines() == ["model,run,accuracy", "teacher,0,0.890000", "teacher,1,0.910000",
                                             "student_aux,0,0.500000"]
    table = format_table(rec)
    assert "teacher" in table and "0.9000" in table and "—" in table.splitlines()[-1]  # one run: no CI (format_ci)
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a subliminal-mlp/fig10 record"):
        read_results(tmp_path / "x.json", format="subliminal-mlp/fig10")
    with pytest.raises(ValueError, match="format 'other', which this library does not read"):
        read_results(tmp_path / "x.json")


def test_flops_by_hand_for_the_papers_mlp():
    cfg = Config()
    layers = [(784, 256), (256, 256), (256, 13)]
    fwd = sum(2 * i * o for i, o in layers)
    bwd = 2 * 784 * 256 + 4 * 256 * 256 + 4 * 256 * 13
    assert forward_flops(cfg) == fwd == 539_136
    assert train_step_flops(cfg) == fwd + bwd
    f = protocol_flops(cfg)
    assert f["teacher"] == 60_000 * 5 * (fwd + bwd)
    assert f["students"] == 60_000 * 5 * (fwd + 4 * (fwd + bwd))
    assert f["total"] == 100 * (f["teacher"] + f["students"])


def test_summary_of_per_run_values():
    from subliminal_mlp.core.results import summary

    s = summary(np.array([0.5, 0.7, 0.6], np.float32))
    assert s["mean"] == pytest.approx(0.6) and s["ci95"] == pytest.approx(1.96 * 0.1 / np.sqrt(3))
    assert s["values"] == pytest.approx([0.5, 0.7, 0.6]) and all(type(v) is float for v in s["values"])


def test_mean_ci95_columns_is_mean_ci95_per_column():
    from subliminal_mlp.core.results import mean_ci95_columns

    a = np.array([[0.1, 0.5], [0.3, 0.5], [0.2, 0.8]])
    got = mean_ci95_columns(a)
    assert got["mean"] == pytest.approx([0.2, 0.6])
    assert got["ci95"] == pytest.approx([mean_ci95(a[:, 0])[1], mean_ci95(a[:, 1])[1]])


def test_flops_by_hand_for_a_protocol_whose_every_count_differs():
    # Unequal epochs, noise set, training set, runs and students (the paper's 60,000 noise images and 5 + 5 epochs
    # would hide a swap of n_noise with n_train or of the teacher's epochs with the students'): 10 → 6 → 4 → 3 + 2.
    cfg = Config(input_dim=10, hidden_widths=(6, 4), n_classes=3, aux_logits=2, teacher_epochs=2, student_epochs=7,
                 n_noise=300, batch_size=100, n_runs=3)
    fwd = 2 * (10 * 6 + 6 * 4 + 4 * 5)  # 208
    step = fwd + 2 * 10 * 6 + 4 * (6 * 4 + 4 * 5)  # 208 + 120 + 176: no input gradient at the first layer
    assert (forward_flops(cfg), train_step_flops(cfg)) == (208, 504)
    f = protocol_flops(cfg, n_train=1000, n_students=2)
    assert f["teacher"] == 1000 * 2 * step
    assert f["students"] == 300 * 7 * (fwd + 2 * step)
    assert f["per_run"] == f["teacher"] + f["students"] and f["total"] == 3 * f["per_run"]


def test_few_runs_are_said_to_have_a_narrow_interval_with_students_t_quantiles():
    # 1.96·sd/√n is the paper's normal approximation; below 10 runs the tables and captions say how much wider a
    # t interval is, with t(0.975, n − 1) checked against scipy's.
    from scipy import stats

    from subliminal_mlp.core.results import T975, few_runs_note, format_table
    from subliminal_mlp.report.plotting import runs_caption

    assert sorted(T975) == list(range(2, 10))
    for n, t in T975.items():
        assert t == pytest.approx(stats.t.ppf(0.975, n - 1), abs=1e-3)
    assert stats.t.ppf(0.975, 9) / 1.96 < 1.16  # from 10 runs: no note
    assert few_runs_note(3) == ("note: with 3 runs, ± 1.96·sd/√n (the paper's approximate 95 % CI) is narrow: a t "
                                "interval is 2.2× as wide (4.303·sd/√n).")
    record = {"models": {"teacher": {"mean": 0.9, "ci95": 0.01, "accuracies": [0.89, 0.9, 0.91]}}}
    assert format_table(record).splitlines()[-1] == few_runs_note(3)
    record["models"]["teacher"]["accuracies"] *= 4  # 12 runs
    assert "note" not in format_table(record)
    assert runs_caption(3) == "3 runs (mean ± 1.96·sd/√n, narrower than a 95% CI)" and runs_caption(10).endswith("(mean ± 95% CI)")
    # a sweep whose values differ in runs: judged by the fewest
    assert runs_caption([3, 12]).endswith("narrower than a 95% CI)") and runs_caption([10, 12]).endswith("± 95% CI)")
