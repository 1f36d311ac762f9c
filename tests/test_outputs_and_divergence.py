"""Failing before compute on an output destination that cannot be written, and diverged runs reported, never
passed off as results (issue 11)."""

import importlib
import inspect
import os
import runpy
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import subliminal_mlp
from subliminal_mlp import engine, inputs
from subliminal_mlp.cli import main
from subliminal_mlp.core.config import MODELS, ConfigError
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.core.models import mlp
from subliminal_mlp.report.plotting import health_warning
from subliminal_mlp.core.results import (DivergenceWarning, OutputError, check_output, health,
                                    read_results)

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted(p.name for p in (ROOT / "experiments").glob("*.py"))
TINY_CLI = ["--seeds", "2", "--epochs", "1", "--n-noise", "1024", "--batch-size", "512", "--hidden", "16",
            "--run-batch", "1", "--no-progress"]
#: Adam moves each parameter by about the learning rate per step: 1e37 overflows float32 within an epoch.
HUGE_LR = "1e37"


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_mnist(data_root)


@pytest.fixture
def no_compute(monkeypatch):
    """Loading data or running any program fails the test: the check must come first."""
    def computed(*a, **k):
        pytest.fail("compute (or data loading) started before the output destination was checked")

    monkeypatch.setattr(engine, "run", computed)
    monkeypatch.setattr(importlib.import_module("subliminal_mlp.theory.theorem"), "run_theorem_check", computed)
    for module in (subliminal_mlp, importlib.import_module("subliminal_mlp.core.data")):
        for name in ("load_mnist", "load_fashion_mnist", "load_dataset"):
            monkeypatch.setattr(module, name, computed)
    monkeypatch.setattr(importlib.import_module("subliminal_mlp.cli.reproduce"), "load_dataset", computed)


# ----------------------------------------------------------------------------- output destinations


def test_check_output_finds_every_bad_destination_and_creates_nothing(tmp_path, monkeypatch):
    afile = tmp_path / "afile"
    afile.write_text("x")
    adir = tmp_path / "adir"
    adir.mkdir()
    assert check_output(tmp_path / "new" / "deeper", files=["a.json"]) == tmp_path / "new" / "deeper"
    assert check_output(adir / "out.json", kind="file") == adir / "out.json"
    assert not (tmp_path / "new").exists()  # only looked
    bad = [(dict(path=afile), "existing file, not a directory"),
           (dict(path=afile / "sub"), f"{afile} is a file"),
           (dict(path=tmp_path, files=["adir"]), "existing directory"),
           (dict(path=adir, kind="file"), "existing directory"),
           (dict(path=afile / "out.json", kind="file"), f"its directory {afile} is an existing file")]
    for kw, message in bad:
        with pytest.raises(OutputError, match=message) as e:
            check_output(**kw)
        assert isinstance(e.value, ConfigError) and str(kw["path"]) in str(e.value)
    # An empty path is no directory (Path("") is the working directory: the results landed there unasked), and a
    # file path ending in a separator names a directory (a file of the directory's name was written).
    for path, kind in (("", "dir"), (" ", "dir"), ("", "file")):
        with pytest.raises(OutputError, match=f"the output {'directory' if kind == 'dir' else 'file'} is an empty "
                                              "path"):
            check_output(path, kind=kind)
    with pytest.raises(OutputError, match=f"cannot write the file {tmp_path}/th/: a path that ends with a separator "
                                          f"names a directory. Give a file name \\(e.g. {tmp_path}/th.json\\)"):
        check_output(f"{tmp_path}/th/", kind="file")
    assert not (tmp_path / "th").exists()
    os.symlink(tmp_path / "nowhere", tmp_path / "dangling")
    with pytest.raises(OutputError, match="dangling"):
        check_output(tmp_path / "dangling")
    monkeypatch.setattr(os, "access", lambda *a: False)  # as a non-root user without write permission
    with pytest.raises(OutputError, match="not a writable directory"):
        check_output(adir)
    with pytest.raises(OutputError, match=f"{tmp_path} is not writable"):
        check_output(tmp_path / "new")


def test_names_that_would_write_elsewhere_or_cannot_be_written_are_refused(tmp_path):
    for files, message in [(["../x.json"], "without a directory part"), (iter(["a/b.json"]), "without a directory"),
                           (["b" * 300 + ".json"], "longer than the file system takes")]:
        with pytest.raises(OutputError, match=message):
            check_output(tmp_path, files=files)
    # The length that counts is the temporary file's, written beside the output (".<stem>.XXXXXXXX<suffix>", 10
    # bytes longer): a name that fits alone but not with it is refused; the longest that fits is written.
    import os

    from subliminal_mlp.core.results import atomic_write_text

    limit = os.pathconf(tmp_path, "PC_NAME_MAX")
    with pytest.raises(OutputError, match="longer than the file system takes"):
        check_output(tmp_path, files=["a" * (limit - 5 - 5) + ".json"])  # limit - 5 bytes
    longest = "a" * (limit - 10 - 5) + ".json"
    assert check_output(tmp_path, files=[longest]) == tmp_path
    atomic_write_text(tmp_path / longest, "{}")
    (tmp_path / longest).unlink()
    if Path("/proc/self").is_dir():  # os.access may say yes (as root) where nothing can be created
        with pytest.raises(OutputError, match="/proc/nope"):
            check_output("/proc/nope")
    assert list(tmp_path.iterdir()) == []  # the probe file is gone
    from subliminal_mlp.core.results import check_stem

    for stem in ("", ".", "..", None, 3):  # no name at all, or one that names a directory
        with pytest.raises(OutputError, match="stem = .* is invalid: give a file name stem"):
            check_stem(stem)
    assert check_stem("fig10") == "fig10"


def test_under_several_processes_only_process_0_checks_the_file_system(tmp_path, monkeypatch):
    """Only process 0 writes (atomic_write does nothing elsewhere), so only it checks the destination: another
    process's host may not see it; every process refuses a file name that would write elsewhere."""
    from subliminal_mlp.core import results

    (tmp_path / "afile").write_text("x")
    monkeypatch.setattr(results, "_is_main_process", lambda: False)
    assert check_output(tmp_path / "afile" / "sub", files=["a.json"]) == tmp_path / "afile" / "sub"
    assert results.atomic_write(tmp_path / "afile" / "b.json", lambda tmp: pytest.fail("written")) == (
        tmp_path / "afile" / "b.json")
    with pytest.raises(OutputError, match="without a directory part"):
        check_output(tmp_path / "afile" / "sub", files=["../a.json"])
    monkeypatch.setattr(results, "_is_main_process", lambda: True)
    with pytest.raises(OutputError, match="is a file"):
        check_output(tmp_path / "afile" / "sub", files=["a.json"])


def test_command_line_mistakes_fail_before_compute_with_one_line(tmp_path, capsys, no_compute, monkeypatch):
    """Each a review found failing late, with a traceback, or silently doing something else."""
    (tmp_path / "afile").write_text("keep me")
    cases = [
        (["sweep", "aux_logits", "1", "-m", "5", "--out", str(tmp_path)], "--aux-logits 5 is not used"),
        # --epochs sets both phases: half of it would be replaced by the swept value
        (["sweep", "teacher_epochs", "1", "2", "--epochs", "3", "--out", str(tmp_path)],
         "--epochs 3 sets both phases, but the sweep sets teacher_epochs .* give --student-epochs"),
        # every swept value's Config is checked (the flags' default batch_size does not, it is swept)
        (["sweep", "batch_size", "64", "512", "--n-noise", "256", "--out", str(tmp_path)],
         r"batch_size = 512 is larger than n_noise = 256: .*exists\. \(from batch_size: a value of the sweep, "
         r"--n-noise\)$"),  # the swept field named as such, not by a flag
        # the flags named are those given: neither the default batch size nor the swept n_noise
        (["sweep", "n_noise", "100", "200", "--out", str(tmp_path)], r"batch_size = 1024 .*exists\.$"),
        (["reproduce", "--n-noise", "100", "--out", str(tmp_path)], r"batch_size = 1024 .*\(from --n-noise\)$"),
        # the kind of a start's noise without noise: nothing to shape (a sweep that adds some takes it)
        (["reproduce", "--init-noise-kind", "orthogonal", "--out", str(tmp_path)],
         r"--init-noise-kind orthogonal has no effect with init_noise = 0 .*give --init-noise"),
        (["sweep", "aux_logits", "1", "3", "--init-noise-kind", "orthogonal", "--out", str(tmp_path)],
         r"--init-noise-kind orthogonal has no effect"),
        (["figures", "fig10_mnist", "--quick", "--out", str(tmp_path / "q"), "--teacher-cache",
          str(tmp_path / "afile")], "afile: it is an existing file"),
        (["figures", "one_step", "--quick", "--out", str(tmp_path / "q"), "--no-teacher-cache"],
         "figure one_step reads .*input_families.json, which does not exist"),
        (["reproduce", "--stem", "../x", "--out", str(tmp_path)], "without a directory part"),
        (["reproduce", "--stem", "", "--out", str(tmp_path)], "stem = '' is invalid"),  # it failed after the run
        (["figures", "--list", "--from", str(tmp_path / "nowhere")], "--from .*nowhere: no such directory"),
        (["figures", "--list", "--force"], "--list only lists .*it takes no --force"),  # --force was ignored
        (["figures", "--no-teacher-cache", "--teacher-cache", str(tmp_path)], "not both"),
        # settings are checked before a distributed runtime starts (it would wait for the other process)
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "reproduce",
          "--seeds", "0", "--out", str(tmp_path)], r"n_runs = 0 .*\(from --seeds\)$"),
        (["reproduce", "--epochs", "-1", "--out", str(tmp_path)], r"teacher_epochs = -1 .*\(from --epochs\)$"),
        (["reproduce", "--hidden", "64", "0", "--out", str(tmp_path)], r"hidden_widths\[1\] = 0 .*\(from --hidden\)$"),
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "reproduce",
          "--stem", "", "--out", str(tmp_path)], "stem = '' is invalid"),
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "theorem",
          "--eps-min", "0"], "--eps-min = 0.0 is invalid"),
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "theorem",
          "--json", str(tmp_path / "afile" / "x.json")], "afile"),
        (["--coordinator-address", "127.0.0.1:1", "--num-processes", "2", "--process-id", "1", "figures",
          "one_step", "--quick", "--out", str(tmp_path / "q"), "--no-teacher-cache"],
         "figure one_step reads .*input_families.json, which does not exist"),
    ]
    for argv, message in cases:
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("subliminal-mlp: error: ") and "Traceback" not in err
        assert __import__("re").search(message, err), err
    assert not (tmp_path / "q").exists()
    # A sweep's values that all fit the other flags run, though the swept field's default would not.
    seen = {}
    monkeypatch.setattr(importlib.import_module("subliminal_mlp.studies.sweep"), "run_sweep",
                        lambda param, values, base, **kw: seen.update(values=values, base=base))
    assert main(["sweep", "batch_size", "64", "128", "--n-noise", "256", "--out", str(tmp_path / "s")]) == 0
    assert seen["values"] == [64, 128] and (seen["base"].batch_size, seen["base"].n_noise) == (64, 256)
    (tmp_path / "bad.json").write_text('{"format": "subliminal-mlp/mitig')
    for argv, message in [(["one_step.py", "--mitigations", str(tmp_path / "nope.json")], "nope.json: no such record"),
                          (["one_step.py", "--mitigations", str(tmp_path / "bad.json")], "truncated"),
                          (["theorem_single_step.py", "--seeds", "0"], "--seeds = 0 is invalid")]:
        monkeypatch.setattr(sys, "argv", [*argv, "--out", str(tmp_path / "o")])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / "experiments" / argv[0]), run_name="__main__")
        assert e.value.code == 2 and message in capsys.readouterr().err


def test_a_sweep_checks_every_values_image_pool_before_compute(tmp_path, data_root, monkeypatch):
    from subliminal_mlp.core.data import DataError
    from subliminal_mlp.studies.sweep import run_sweep

    only_mnist = tmp_path / "data"
    only_mnist.mkdir()
    (only_mnist / "mnist").symlink_to(Path(data_root) / "mnist")
    monkeypatch.setattr(engine, "run", lambda *a, **k: pytest.fail("a value was computed before every pool was checked"))
    with pytest.raises(DataError, match="fashion-mnist"):
        run_sweep("student_inputs", ["uniform", "fashion-mnist"], subliminal_mlp.Config(n_runs=1),
                  data_dir=only_mnist, out_dir=tmp_path / "out")


def test_an_interrupted_reproduce_leaves_the_previous_runs_files_as_they_were(data_root, tmp_path, monkeypatch):
    # Its figure, CSV and record replace the previous run's together: interrupted while they are made (here, as
    # the record is written, after the figure was drawn), the previous three stay, and no temporary file.
    old = {ext: f"previous run's {ext}" for ext in ("json", "csv", "png")}
    for ext, text in old.items():
        (tmp_path / f"fig10.{ext}").write_text(text)
    argv = ["reproduce", "--seeds", "1", "--epochs", "1", "--n-noise", "512", "--batch-size", "512", "--hidden", "8",
            "--data-dir", str(data_root), "--out", str(tmp_path), "--no-progress"]
    from subliminal_mlp.core import results as results_module

    write = results_module.atomic_write_text

    def interrupted(path, text):  # the record written, then Ctrl-C
        written = write(path, text)
        if str(path).endswith(".json"):
            raise KeyboardInterrupt
        return written

    monkeypatch.setattr(results_module, "atomic_write_text", interrupted)
    assert main(argv) == 130  # (the command's status for Ctrl-C)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == {f"fig10.{e}": t.encode() for e, t in old.items()}
    monkeypatch.setattr(results_module, "atomic_write_text", write)
    assert main(argv) == 0
    assert read_results(tmp_path / "fig10.json")["n_runs"] == 1 and (tmp_path / "fig10.png").stat().st_size > 10_000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig10.csv", "fig10.json", "fig10.png"]


def test_a_teacher_cache_that_cannot_be_written_loses_no_result(tmp_path):
    from subliminal_mlp.core.teacher_cache import TeacherCache

    (tmp_path / "afile").write_text("x")
    said = []
    cache = TeacherCache(tmp_path / "afile", log=said.append)
    cache.store({"k": 1}, {"w": np.zeros((2, 3), np.float32)})
    assert cache.stats()["stored"] == 0 and "cannot store the teachers" in said[-1]


@pytest.mark.parametrize("argv", [
    ["reproduce", "--out", "{afile}"],
    ["reproduce", "--out", "{afile}/sub"],
    ["reproduce", "--out", "{tmp}/adir", "--stem", "adir"],
    ["sweep", "aux_logits", "1", "3", "--out", "{afile}"],
    ["sweep", "learning_rate", "1e-3", "--out", "{tmp}/adir/sub", "--seeds", "2"],
    ["demo", "--out", "{afile}/demo.png"],
    ["demo", "--out", "{tmp}/adir"],
    ["theorem", "--json", "{tmp}/adir"],
    ["theorem", "--json", "{afile}/t.json"],
    ["theorem", "--json", "{tmp}/th/"],
    ["reproduce", "--out", ""],
    ["sweep", "aux_logits", "1", "3", "--out", ""],
    ["figures", "fig10_mnist", "--quick", "--out", ""],
    ["figures", "--redraw", "--out", " "],
    ["figures", "fig10_mnist", "--quick", "--out", "{tmp}/figs", "--teacher-cache", "{afile}"],
])
def test_every_command_checks_its_output_before_any_compute(argv, tmp_path, capsys, no_compute):
    (tmp_path / "afile").write_text("keep me")
    (tmp_path / "adir").mkdir()
    (tmp_path / "adir" / "adir.json").mkdir()  # reproduce --stem adir: its JSON would replace a directory
    if argv[0] == "sweep" and "learning_rate" in argv:
        (tmp_path / "adir" / "sub").mkdir()
        (tmp_path / "adir" / "sub" / "sweep_learning_rate.png").mkdir()
    argv = [a.format(afile=tmp_path / "afile", tmp=tmp_path) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("subliminal-mlp: error: ") and "Traceback" not in err
    assert (tmp_path / "afile").read_text() == "keep me"
    if "--teacher-cache" in argv:  # named as the cache, not as the results' directory
        assert err.startswith("subliminal-mlp: error: the teacher cache (--teacher-cache") and not (tmp_path / "figs").exists()


@pytest.mark.parametrize("script", SCRIPTS)
def test_every_experiment_script_checks_its_output_before_any_compute(script, tmp_path, capsys, monkeypatch,
                                                                      no_compute):
    afile = tmp_path / "afile"
    afile.write_text("keep me")
    monkeypatch.setattr(sys, "argv", [script, "--out", str(afile)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "experiments" / script), run_name="__main__")
    assert e.value.code == 2
    assert capsys.readouterr().err.startswith(f"{script}: error: cannot ")  # its own name, as argparse says it
    assert afile.read_text() == "keep me"


def test_run_study_checks_before_computing_then_prints_the_table_and_what_it_wrote(tmp_path, capsys):
    from subliminal_mlp.cli import run_study, script_parser

    calls = []

    def write(record, out):
        calls.append(("write", record, out))
        return {"json": Path(out) / "s.json"}

    (tmp_path / "s.json").mkdir()  # a directory where the record would go: refused before compute
    with pytest.raises(OutputError, match="existing directory"):
        run_study(tmp_path, ["s.json"], lambda: calls.append("compute"), write)
    assert calls == []
    rec = run_study(tmp_path / "new", ["s.json"], lambda: {"x": 1}, write, lambda r: f"table of {r['x']}")
    assert rec == {"x": 1} and calls == [("write", {"x": 1}, tmp_path / "new")]
    assert capsys.readouterr().out == f"table of 1\nwrote {tmp_path / 'new' / 's.json'}\n"
    a = script_parser("doc", tmp_path, seeds=7).parse_args([])
    assert (a.seeds, a.data_dir, a.out) == (7, None, str(tmp_path))
    assert not hasattr(script_parser("doc", tmp_path, seeds=None).parse_args([]), "seeds")


# ----------------------------------------------------------------------------- diverged runs


def test_health_flags_nonfinite_models_and_teachers_no_better_than_their_reference():
    acc = np.array([[0.10, 0.95, 0.5], [0.10, 0.12, 0.3], [0.12, np.nan, np.nan]])
    finite = np.array([[True, True, True], [True, True, False], [True, False, False]])
    h = health(["reference", "teacher", "student"], acc, finite, chance=0.1)
    assert h == {"ok": False, "nonfinite": [[1, "student"], [2, "teacher"], [2, "student"]],
                 "teacher_not_better": [1, 2], "teacher_margin": 0.05}
    assert health(["reference", "teacher"], acc[:1, :2], chance=0.1)["ok"]
    # the bound is max(reference, chance) + 0.05: a reference below chance does not lower it (0.12 <= 0.15)
    low = health(["reference", "teacher"], np.array([[0.05, 0.12]]), chance=0.1)
    assert low["teacher_not_better"] == [0] and low["ok"] is False
    assert health(["reference", "teacher"], np.array([[0.05, 0.16]]), chance=0.1)["ok"]
    assert health(["reference", "teacher"], acc[1:2, :2], chance=0.1, check_teacher=False)["ok"]
    from subliminal_mlp.core.results import format_health

    assert format_health(h, 3, "lr = 1") == (
        "diverged runs (lr = 1):\n  student: non-finite parameters in run(s) 1-2 (2 of 3); its accuracy there is NaN\n"
        "  teacher: non-finite parameters in run(s) 2 (1 of 3); its accuracy there is NaN\n"
        "  teacher no better than its untrained reference (accuracy <= max(reference, chance) + 0.05) in run(s) 1-2 "
        "(2 of 3)\n  (lower the learning rate? are the inputs finite? the record's \"health\" lists them)")
    # A teacher at its start with every parameter finite may never have learned: the advice says so too.
    still = health(["reference", "teacher"], acc[1:2, :2], chance=0.1)
    assert format_health(still, 1).splitlines()[-1] == (
        "  (a teacher that diverged, or one that did not learn: check the learning rate and teacher_epochs; "
        "the record's \"health\" lists them)")
    # ... and the title does not call it diverged, in the terminal nor on a figure (where any part diverged, it is)
    from subliminal_mlp.report.plotting import health_warning, record_health_warning

    assert format_health(still, 1, "lr = 1e-9").startswith("runs whose teacher did not learn (lr = 1e-9):\n")
    assert health_warning(still, 1).startswith("WARNING: runs whose teacher did not learn\nteacher no better")
    assert record_health_warning({"n_runs": 1, "a": {"health": still}, "b": {"health": still}}).startswith(
        "WARNING: runs whose teacher did not learn\na: teacher no better")
    assert record_health_warning({"n_runs": 3, "a": {"health": still}, "b": {"health": h}}).startswith(
        "WARNING: diverged runs\na: teacher no better")
    assert format_health(health(["reference", "teacher"], acc[:1, :2], chance=0.1), 1) == ""


def test_the_engine_marks_diverged_runs_nan_and_reports_which(mnist):
    exp = engine.Experiment(model=mlp((16,)), inputs=inputs.uniform(1024), teacher_epochs=1, student_epochs=1,
                            batch_size=512)
    with pytest.warns(DivergenceWarning) as caught:
        r = engine.run(exp, engine.Task.from_dataset(mnist), n_runs=2, sweep={"learning_rate": [1e-3, 1e37]},
                       run_batch=1)
    message = str(caught[0].message)
    assert "learning_rate = 1e+37" in message and "learning_rate = 0.001" not in message
    assert "teacher: non-finite parameters in run(s) 0-1" in message
    assert r.finite.shape == r.accuracies.shape == (2, 2, 6)
    assert r.health(0)["ok"] and r.finite[0].all() and np.isfinite(r.accuracies[0]).all()  # healthy: not flagged
    bad = r.health(1)
    assert not bad["ok"] and [0, "teacher"] in bad["nonfinite"] and [1, "student_aux"] in bad["nonfinite"]
    assert np.isnan(r.accuracies[1, :, 1:]).all() and np.isfinite(r.accuracies[1, :, 0]).all()  # reference: fine
    values = r.record()["values"]
    assert values[0]["health"]["ok"] and values[1]["health"] == bad
    # Under "fail" the public sm.DivergenceError carries what was computed (the same numbers).
    with pytest.raises(subliminal_mlp.DivergenceError, match="learning_rate = 1e\\+37") as failed:
        engine.run(exp, engine.Task.from_dataset(mnist), n_runs=2, sweep={"learning_rate": [1e-3, 1e37]},
                   run_batch=1, on_divergence="fail")
    np.testing.assert_array_equal(failed.value.result.accuracies, r.accuracies)
    assert subliminal_mlp.DivergenceWarning is DivergenceWarning and subliminal_mlp.OutputError is OutputError
    with pytest.raises(ConfigError, match="on_divergence = 'ignore'"):
        engine.run(exp, engine.Task.from_dataset(mnist), n_runs=1, on_divergence="ignore")


def test_a_diverged_models_measurements_are_nan_never_numbers_of_nan_parameters(mnist):
    import jax
    import jax.numpy as jnp

    from subliminal_mlp.core.model import accuracy, init_params
    from subliminal_mlp.core.students import cosine
    from subliminal_mlp.studies.trajectory import student_trajectories
    from subliminal_mlp.studies.alignment import _fraction_positive
    from subliminal_mlp.studies.omitted_digit import accuracy_on, run_omitted_digit
    from subliminal_mlp.studies.traits import trait_rate
    from subliminal_mlp.theory.similarity import feature_cosine, linear_cka

    cfg = subliminal_mlp.Config(hidden_widths=(8,))
    good = init_params(jax.random.PRNGKey(0), cfg)
    bad = {**good, "head": {**good["head"], "bias": good["head"]["bias"].at[0].set(jnp.nan)}}
    x, y = jnp.asarray(mnist.test_images[:50]), jnp.asarray(mnist.test_labels[:50])
    # argmax of NaN logits is class 0: a trait rate of 1 (trait class 0) and a "real" subset accuracy, before
    assert float(trait_rate(good, x, 0, 10)) < 1 and np.isnan(trait_rate(bad, x, 0, 10))
    everything = jnp.ones(50, bool)
    assert 0 <= float(accuracy_on(good, x, y, everything, 10)) <= 1 and np.isnan(accuracy_on(bad, x, y, everything, 10))
    assert float(accuracy(good, x, y, 10)) == float(accuracy_on(good, x, y, everything, 10)) and np.isnan(
        accuracy(bad, x, y, 10))  # the accuracy every trace and metric uses
    # similarities: 0 for a zero vector (no direction), NaN for a non-finite one (0 would read "unrelated")
    v, nan_v = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([1.0, jnp.inf])}
    assert float(cosine(v, v)) == pytest.approx(1) and float(cosine(v, {"w": jnp.zeros(2)})) == 0
    assert np.isnan(cosine(v, nan_v))
    f = jax.random.normal(jax.random.PRNGKey(1), (20, 4))
    assert float(linear_cka(f, f)) == pytest.approx(1, abs=1e-5) and np.isnan(linear_cka(f, f.at[3, 1].set(jnp.nan)))
    assert float(feature_cosine(f, f)) == pytest.approx(1, abs=1e-5) and np.isnan(feature_cosine(f, f.at[3].set(jnp.inf)))
    assert _fraction_positive(np.array([0.5, -0.1])) == 0.5 and np.isnan(_fraction_positive(np.array([0.5, np.nan])))
    # a real study whose every run diverged: NaN throughout its record (it said 0.098 / 0.0 / 0.109)
    tiny = subliminal_mlp.Config(n_runs=1, teacher_epochs=1, student_epochs=1, n_noise=1024, batch_size=512,
                                 hidden_widths=(16,), learning_rate=float(HUGE_LR))
    with pytest.warns(DivergenceWarning):
        rec = run_omitted_digit(tiny, mnist)
    accs = [a for subsets in rec["models"].values() for m in subsets.values() for a in m["accuracies"]]
    assert len(accs) == 9 and np.isnan(accs).all()
    # a traced study: the probes read NaN from the step the students diverge (they read 0.084, digit 0's share)
    with pytest.warns(DivergenceWarning):
        traj = student_trajectories(tiny, mnist, probe_every=1, n_probe=500)
    for name in ("student_aux", "cross_aux"):
        curve = np.asarray(traj["curves"][name]["per_run"][0])
        assert np.isfinite(curve[0]) and np.isnan(curve[1:]).all(), (name, curve)


def test_a_diverged_reproduce_warns_records_and_marks_it_and_fail_writes_nothing(data_root, tmp_path, capsys):
    out = tmp_path / "warn"
    assert main(["reproduce", *TINY_CLI, "--lr", HUGE_LR, "--data-dir", str(data_root), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "subliminal-mlp: warning: diverged runs" in captured.err and "teacher: non-finite" in captured.err
    rec = read_results(out / "fig10.json")
    assert not rec["health"]["ok"] and rec["health"]["teacher_not_better"] == [0, 1]
    assert {m for _, m in rec["health"]["nonfinite"]} == set(MODELS) - {"reference"}
    assert all(np.isnan(a) for a in rec["models"]["teacher"]["accuracies"])  # never an accuracy of NaN parameters
    assert np.isnan(rec["models"]["student_aux"]["mean"]) and "nan" in captured.out
    assert "diverged" in health_warning(rec["health"], rec["n_runs"])  # what the figure shows
    assert (out / "fig10.png").stat().st_size > 10_000
    assert "NaN" in (out / "fig10.json").read_text()

    failed = tmp_path / "fail"
    rc = main(["reproduce", *TINY_CLI, "--lr", HUGE_LR, "--data-dir", str(data_root), "--out", str(failed),
               "--on-divergence", "fail"])
    err = capsys.readouterr().err
    assert rc == 3 and "subliminal-mlp: error: diverged runs" in err
    assert "nothing was written (--on-divergence fail; with --on-divergence warn the record is written" in err
    assert not failed.exists() or not list(failed.iterdir())

    assert health_warning({"ok": True, "nonfinite": [], "teacher_not_better": []}, 2) == ""  # a healthy one: none
    assert health_warning(None, 2) == ""  # a record from before health existed


def test_a_figure_without_a_suffix_is_a_png_the_demo_wants_an_image_name_and_engine_errors_are_one_line(tmp_path,
                                                                                                        capsys):
    import matplotlib.pyplot as plt

    from subliminal_mlp.cli import guarded
    from subliminal_mlp.core.engine import ExperimentError
    from subliminal_mlp.report.plotting import save_figure
    from subliminal_mlp.studies.demo import demo

    fig = plt.figure()
    plt.plot([0, 1])
    assert save_figure(fig, tmp_path / "fig").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for out in ("demo", "demo.txt"):  # refused before the data is loaded
        with pytest.raises(ConfigError, match="image format"):
            demo(data_dir=tmp_path / "nowhere", out=tmp_path / out)

    def fails():
        raise ExperimentError("n_runs = 0 is invalid")

    assert guarded(fails) == 2 and capsys.readouterr().err == "subliminal-mlp: error: n_runs = 0 is invalid\n"


def test_the_distributed_flags_start_the_runtime_before_or_after_the_command_after_the_settings(tmp_path, capsys,
                                                                                               monkeypatch):
    # jax.distributed replaced by a recorder (and the command by a no-op): what the command line starts, and when.
    from subliminal_mlp.core import distributed

    started = []
    monkeypatch.delenv(distributed.ENV, raising=False)
    monkeypatch.setattr(distributed, "initialize", lambda **kw: (started.append(kw), {"process_count": 1})[1])
    monkeypatch.setattr(importlib.import_module("subliminal_mlp.cli.reproduce"), "reproduce", lambda *a, **k: None)
    out = ["--out", str(tmp_path / "r")]
    assert main(["reproduce", *out]) == 0 and started == []  # one process: nothing started
    assert main(["--distributed", "reproduce", *out]) == 0 and started == [{}]
    assert main(["reproduce", "--distributed", *out]) == 0 and started == [{}, {}]
    started.clear()
    layout = ["--coordinator-address", "h:1", "--num-processes", "2", "--process-id", "1"]
    assert main([*layout, "reproduce", *out]) == 0 and main(["reproduce", *layout, *out]) == 0  # a layout asks too
    assert started == [{"coordinator_address": "h:1", "num_processes": 2, "process_id": 1}] * 2
    monkeypatch.setenv(distributed.ENV, "1")
    started.clear()
    assert main(["reproduce", *out]) == 0 and started == [{}]


def test_a_bad_process_layout_is_one_line_and_comes_after_every_setting_check(tmp_path, capsys, monkeypatch):
    from subliminal_mlp.core import distributed

    monkeypatch.delenv(distributed.ENV, raising=False)
    monkeypatch.setattr(importlib.import_module("subliminal_mlp.cli.reproduce"), "reproduce",
                        lambda *a, **k: pytest.fail("ran without the runtime it asked for"))
    monkeypatch.setattr(importlib.import_module("subliminal_mlp.studies.sweep"), "run_sweep",
                        lambda *a, **k: pytest.fail("ran without the runtime it asked for"))
    bad = ["--num-processes", "0"]
    assert main([*bad, "reproduce", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("subliminal-mlp: error: num_processes = 0 is invalid") and "Traceback" not in err
    # what can be checked without JAX is checked first (the runtime would wait for the other processes); the output
    # directory itself only after the start, in process 0 (test_distributed.py)
    cases = [(["reproduce", "--stem", ".."], "stem = '..' is invalid"),
             (["sweep", "batch_size", "64", "512", "--n-noise", "256"], "batch_size = 512 is larger than n_noise"),
             (["sweep", "aux_logits", "3", "03"], "repeated values in the sweep over aux_logits"),
             (["sweep", "hidden_widths", "256", "256"], "(256,256 is one value, 256 256 two)")]
    for argv, message in cases:
        assert main([*bad, *argv, "--out", str(tmp_path)]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "num_processes" not in err, argv


def test_guarded_shows_divergence_warnings_and_gives_each_error_its_status(capsys):
    import warnings

    from subliminal_mlp.cli import guarded
    from subliminal_mlp.core.distributed import DistributedError
    from subliminal_mlp.core.results import DivergenceError

    def warns():
        warnings.warn("diverged runs: 1 of 2", DivergenceWarning)
        warnings.warn("diverged runs: 1 of 2", DivergenceWarning)  # each one, not once
        return {"a": "record"}

    assert guarded(warns) == 0
    assert capsys.readouterr().err == "subliminal-mlp: warning: diverged runs: 1 of 2\n" * 2

    def library_warns():  # the library's SettingWarnings are one line too; other warnings are Python's own
        from subliminal_mlp.core.students import check_students

        check_students(subliminal_mlp.FIGURE10, subliminal_mlp.mlp((8,), aux_logits=1))
        warnings.warn("not ours", UserWarning)

    with pytest.warns(UserWarning, match="not ours"):  # not a SettingWarning: passed on as it is
        assert guarded(library_warns) == 0
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2, err
    assert err[0].startswith("subliminal-mlp: warning: student 'student_aux': KL on the one aux logit (m = 1)")
    assert err[1].startswith("subliminal-mlp: warning: student 'cross_aux': KL on the one aux logit")

    def raises(e):
        raise e

    assert guarded(raises, DistributedError("cannot start")) == 2
    assert capsys.readouterr().err == "subliminal-mlp: error: cannot start\n"
    assert guarded(raises, DivergenceError("diverged runs")) == 3
    assert "nothing was written" in capsys.readouterr().err
    assert guarded(lambda: 1) == 1 and guarded(lambda: True) == 0 and guarded(lambda: None) == 0


def test_a_script_starts_the_distributed_runtime_when_the_environment_asks_then_exits_with_its_status(monkeypatch):
    from subliminal_mlp.cli import run_script
    from subliminal_mlp.core import distributed

    order = []
    monkeypatch.setattr(distributed, "initialize", lambda **kw: order.append("initialize"))
    monkeypatch.setenv(distributed.ENV, "1")
    with pytest.raises(SystemExit) as e:
        run_script(lambda x: order.append(x) or 1, "main")
    assert e.value.code == 1 and order == ["initialize", "main"]
    monkeypatch.setenv(distributed.ENV, "0")
    with pytest.raises(SystemExit) as e:
        run_script(lambda: order.append("again") or {"a": "record"})
    assert e.value.code == 0 and order == ["initialize", "main", "again"]


def test_a_script_names_itself_in_its_errors_and_its_hints_name_only_its_own_flags(monkeypatch, capsys):
    """An ``experiments/`` script's one-line errors start with its file name, as argparse's do (not with
    ``subliminal-mlp``, a command it is not), and its out-of-memory hint names no flag it lacks."""
    from subliminal_mlp.cli import run_script

    def invalid():
        raise ConfigError("n_runs = 0 is invalid")

    def exhausted():
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 8 bytes.")

    monkeypatch.setattr(sys, "argv", ["/somewhere/experiments/fig10_mnist.py", "--seeds", "0"])
    with pytest.raises(SystemExit) as e:
        run_script(invalid)
    assert e.value.code == 2 and capsys.readouterr().err == "fig10_mnist.py: error: n_runs = 0 is invalid\n"
    with pytest.raises(SystemExit) as e:
        run_script(exhausted)
    err = capsys.readouterr().err
    assert e.value.code == 1 and err.startswith("fig10_mnist.py: error: out of memory: RESOURCE_EXHAUSTED")
    assert "(--seeds, where the script takes it)" in err and "--run-batch" not in err and "--n-noise" not in err
    monkeypatch.setattr(sys, "argv", ["-c"])  # python -c: no file to name
    with pytest.raises(SystemExit):
        run_script(invalid)
    assert capsys.readouterr().err.startswith("subliminal-mlp: error: n_runs = 0")


def test_a_runtime_that_cannot_start_names_the_variables_as_well_as_the_flags(monkeypatch):
    """JAX's own complaint (what is missing), then how to give the layout: the environment variables, which every
    command and script reads, and the command's flags."""
    from subliminal_mlp.core import distributed

    def refuses(*a, **k):
        raise ValueError("coordinator_address should be defined.")

    monkeypatch.setattr(jax.distributed, "initialize", refuses)
    monkeypatch.setattr(jax.distributed, "is_initialized", lambda: False)
    for name in (distributed.COORDINATOR_ENV, distributed.NUM_PROCESSES_ENV, distributed.PROCESS_ID_ENV):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(distributed.DistributedError) as e:
        distributed.initialize()
    text = str(e.value)
    assert text.startswith("cannot start the distributed runtime: coordinator_address should be defined. ")
    for name in ("$JAX_COORDINATOR_ADDRESS", "$JAX_NUM_PROCESSES", "$JAX_PROCESS_ID", "--coordinator-address",
                 "--num-processes", "--process-id"):
        assert name in text, name


def test_python_dash_m_runs_the_command_for_the_package_and_its_cli(capsys):
    """``python -m subliminal_mlp`` and ``python -m subliminal_mlp.cli`` are the ``subliminal-mlp`` command: its help,
    and a mistake's one-line error and exit status 2."""
    import subprocess

    for module in ("subliminal_mlp", "subliminal_mlp.cli"):
        ok = subprocess.run([sys.executable, "-m", module, "reproduce", "--help"], capture_output=True, text=True,
                            timeout=120)
        assert ok.returncode == 0 and "usage: subliminal-mlp reproduce" in ok.stdout, ok.stderr
    bad = subprocess.run([sys.executable, "-m", "subliminal_mlp", "reproduce", "--seeds", "0"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and "subliminal-mlp: error: n_runs = 0" in bad.stderr
    import subliminal_mlp

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and subliminal_mlp.__version__ in capsys.readouterr().out


def test_the_experiment_scripts_hand_their_data_dir_and_projection_rule_to_the_study(tmp_path, monkeypatch):
    # The study functions replaced by recorders: what experiments/one_step.py and alignment_multistep.py compute with.
    import subliminal_mlp.cli as cli
    from subliminal_mlp.studies import alignment, one_step

    study = inspect.signature(alignment.run_alignment).parameters  # the script's defaults are the study's
    defaults = {k: study[k].default for k in ("projection", "n_probe", "probe_every", "held_out")}
    got = {}
    monkeypatch.setattr(cli, "run_study", lambda out, files, compute, write, table=None: got.update(compute()))
    monkeypatch.setattr(subliminal_mlp, "load_mnist", lambda data_dir=None: f"mnist from {data_dir}")
    monkeypatch.setattr(one_step, "run_one_step", lambda data, **kw: {"data": data, **kw})
    monkeypatch.setattr(alignment, "run_alignment", lambda cfg, data, **kw: {"data": data, **kw})
    for argv, want in [(["one_step.py"], {"data_dir": "D"}),
                       (["alignment_multistep.py"], defaults),
                       (["alignment_multistep.py", "--projection", "always", "--n-probe", "500", "--probe-every", "3"],
                        {**defaults, "projection": "always", "n_probe": 500, "probe_every": 3})]:
        got.clear()
        monkeypatch.setattr(sys, "argv", [*argv, "--data-dir", "D", "--out", str(tmp_path / "o")])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / "experiments" / argv[0]), run_name="__main__")
        assert e.value.code == 0 and got["data"] == "mnist from D", argv
        assert {k: got[k] for k in want} == want, argv
    # one_step.py reads the committed records beside those given, or (--only) those given alone
    mine = tmp_path / "mine.json"
    mine.write_text((ROOT / "figures" / "mitigations.json").read_text())
    for extra, sources in [([], {"input_families", "teacher_task", "mitigations", "split_heads", "sweeps"}),
                           (["--only"], {"mitigations"})]:
        got.clear()
        monkeypatch.setattr(sys, "argv", ["one_step.py", "--mitigations", str(mine), *extra, "--out", str(tmp_path)])
        with pytest.raises(SystemExit) as e:
            runpy.run_path(str(ROOT / "experiments" / "one_step.py"), run_name="__main__")
        assert e.value.code == 0 and {k for k, v in got.items() if k not in ("data", "data_dir", "progress", "log")
                                      and v is not None} == sources, extra
        assert got["mitigations"]["created"] == read_results(mine)["created"]
    monkeypatch.setattr(sys, "argv", ["one_step.py", "--only", "--out", str(tmp_path)])
    with pytest.raises(SystemExit) as e:
        runpy.run_path(str(ROOT / "experiments" / "one_step.py"), run_name="__main__")
    assert e.value.code == 2


@pytest.mark.parametrize("module, writer, record", [
    ("alignment", "write_alignment", "alignment.json"), ("heads", "write_heads", "head_compatibility.json"),
    ("input_families", "write_input_families", "input_families.json"),
    ("mitigations", "write_mitigations", "mitigations.json"), ("omitted_digit", "write_omitted", "omitted_digit.json"),
    ("one_step", "write_one_step", "one_step.json"), ("split_heads", "write_split_heads", "split_heads.json"),
    ("teacher_task", "write_teacher_task", "teacher_task.json"), ("traits", "write_traits", "traits.json"),
    ("trajectory", "write_trajectories", "student_epochs.json"), ("sweep", "write_sweep", "sweeps/loss/sweep_loss.json")])
def test_every_study_writer_checks_its_figure_before_writing_anything(module, writer, record, tmp_path):
    # A directory where the PNG goes: refused before the JSON and CSV are written (they were, then IsADirectoryError).
    write = getattr(importlib.import_module(f"subliminal_mlp.studies.{module}"), writer)
    rec = read_results(ROOT / "figures" / record)
    stem = Path(record).stem
    (tmp_path / f"{stem}.png").mkdir()
    with pytest.raises(OutputError, match=f"{stem}.png"):
        write(rec, tmp_path) if module == "sweep" else write(rec, tmp_path, stem)
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{stem}.png"]


def test_ctrl_c_is_one_line_and_a_reader_that_leaves_ends_the_command_quietly(capsys):
    import subprocess
    import sys

    from subliminal_mlp.cli import guarded

    def interrupted():
        raise KeyboardInterrupt

    assert guarded(interrupted) == 130
    assert capsys.readouterr().err.startswith("subliminal-mlp: interrupted")
    # `subliminal-mlp figures --list | head -1`: the pipe is closed before the command writes (no traceback)
    proc = subprocess.Popen([sys.executable, "-m", "subliminal_mlp", "figures", "--list"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    proc.stdout.close()
    err = proc.stderr.read()
    assert proc.wait(timeout=120) == 1 and "Traceback" not in err and "BrokenPipe" not in err, err


STOPPED_CHILD = """
import signal, sys, time
import jax, jax.numpy as jnp
from jax import lax
import subliminal_mlp.cli as cli

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner ignores
x = jnp.ones(1024, jnp.float32)
# 2**31 - 1 steps: hours on any device, a loop of a known trip count as the engine's scans are. On a CPU the call
# returns at once and Python waits for the result; on a GPU the call itself returns only near the program's end
# (seen on an H200): the main thread never sees the signal, and the command's stop watch ends the process.
spin = jax.jit(lambda x: lax.fori_loop(0, 2**31 - 1, lambda i, v: v * 0.5 + 1.0, x)).lower(x).compile()

def command():
    print("running", flush=True)
    spin(x).block_until_ready()

cli.main = lambda argv=None: cli.guarded(command)
cli.entry()
"""

STUCK_CHILD = """
import signal, sys, time
import subliminal_mlp.cli as cli

signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, whatever the test runner ignores
cli.STOP_GRACE_S = float(sys.argv[1])

def command():
    # As a call that does not return to Python until it ends (a GPU's program): the main thread is never told of
    # the signal (blocked here, it goes to another thread) and sleeps on.
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    print("running", flush=True)
    time.sleep(600)

cli.main = lambda argv=None: cli.guarded(command)
cli.entry()
"""


def _stop_child(code: str, sig: str, *argv: str, times: int = 1, after: float = 0.5):
    """Start ``python -c code *argv``, wait for its "running", send ``sig`` ``times`` times (``after`` seconds
    later, then 0.2 s apart); its exit status, the seconds it took to leave after the first signal, and its
    stderr."""
    import select
    import signal
    import subprocess
    import time

    proc = subprocess.Popen([sys.executable, "-c", code, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        assert select.select([proc.stdout], [], [], 120)[0], "the child never started its computation"
        assert proc.stdout.readline().strip() == "running"
        time.sleep(after)
        start = time.monotonic()
        for i in range(times):
            if i:
                time.sleep(0.2)
            proc.send_signal(getattr(signal, sig))
        rc = proc.wait(timeout=60)
        return rc, time.monotonic() - start, proc.stderr.read()
    finally:
        proc.kill()


@pytest.mark.parametrize("sig, rc, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
def test_a_stopped_command_leaves_at_once_though_the_device_is_still_computing(sig, rc, word):
    """Ctrl-C (and SIGTERM, which ``timeout`` and batch schedulers send) end the command within seconds, with one
    line and its status, while its compiled program would run for hours: an ordinary exit waits for it."""
    got, took, err = _stop_child(STOPPED_CHILD, sig, after=1.0)
    assert got == rc and took < 30
    assert err.startswith(f"subliminal-mlp: {word} (every file is written atomically") and "Traceback" not in err
    assert err.count(word) == 1, err


@pytest.mark.parametrize("sig, rc, word", [("SIGINT", 130, "interrupted"), ("SIGTERM", 143, "terminated")])
@pytest.mark.parametrize("times", [1, 2])
def test_a_stop_the_main_thread_never_sees_ends_the_process_after_the_grace_period(sig, rc, word, times):
    """Where the main thread is stuck in a call that does not return (a GPU's long program), the stop watch
    prints the same line and ends the process with the same status, STOP_GRACE_S after the signal; a second
    signal ends it at once (here the grace period is an hour: only the second signal can end it)."""
    got, _, err = _stop_child(STUCK_CHILD, sig, "1.0" if times == 1 else "3600", times=times)
    assert got == rc
    assert err.startswith(f"subliminal-mlp: {word} (every file is written atomically") and "Traceback" not in err
    assert err.count(word) == 1, err


def test_an_allocation_that_fails_is_one_line_that_says_what_to_lower(capsys):
    from subliminal_mlp.cli import guarded

    def exhausted():
        raise jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 80281600000000 bytes.")

    assert guarded(exhausted) == 1
    err = capsys.readouterr().err
    assert err.startswith("subliminal-mlp: error: out of memory: RESOURCE_EXHAUSTED: Out of memory allocating")
    assert "lower the number of runs (--seeds)" in err and "--run-batch N" in err

    def other():
        raise jax.errors.JaxRuntimeError("INTERNAL: something else")

    with pytest.raises(jax.errors.JaxRuntimeError, match="something else"):  # not an allocation: not hidden
        guarded(other)
