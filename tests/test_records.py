"""One record: the envelope every experiment writes, the one CSV writer, and reading records back."""

import dataclasses
import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pytest

import subliminal_mlp
from subliminal_mlp.core import results
from subliminal_mlp.core.config import MODELS, Config
from subliminal_mlp.studies.figure10 import ExperimentResult
from subliminal_mlp.core.results import (FORMATS, RecordError, csv_text, data_record, envelope, experiment_record,
                                    read_results, register_format, write_record, write_results)

FIGURES = Path(__file__).resolve().parents[1] / "figures"
COMMITTED = sorted(p for p in FIGURES.glob("**/*.json") if not p.name.startswith("."))  # not the pipeline's state
FAKE_DATA = SimpleNamespace(name="mnist", source_dir="/data/mnist", checksums={"a.gz": "00", "b.gz": "11"},
                            train_images=np.zeros((4, 784), np.float32), train_labels=np.arange(4, dtype=np.int32),
                            test_images=np.ones((2, 784), np.float32), test_labels=np.arange(2, dtype=np.int32))
"""A dataset stand-in of the user's own (no loader behind it): records name its arrays by their fingerprints."""


def _fingerprint(a) -> str:  # an array's fingerprint, computed here by hand (array_fingerprint's format)
    a = np.ascontiguousarray(a)
    digest = hashlib.sha256(f"{a.dtype.str}{a.shape}".encode() + a.tobytes()).hexdigest()
    return f"array{list(a.shape)} {a.dtype} sha256:{digest[:16]}"


def fake_result(n_runs=3, **kw):
    cfg = Config(n_runs=n_runs, seed=7)
    acc = np.arange(n_runs * 6, dtype=np.float32).reshape(n_runs, 6) / 100
    return ExperimentResult(config=cfg, accuracies=acc, compile_s=1.5, run_s=2.0, devices=["cpu:0"], run_batch=2,
                            **kw)


def test_envelope_key_order_and_contents():
    rec = envelope("subliminal-mlp/x", Config(n_runs=2, seed=3), n_runs=2, seed=3, data={"dataset": "mnist"},
                   devices=["gpu:0"], timing={"run_s": 1.0}, environment_extra={"run_batch": 4},
                   zeta=1, alpha=[2])
    assert list(rec) == ["format", "format_version", "config", "n_runs", "seeds", "zeta", "alpha", "data",
                         "environment", "timing", "created"]
    assert rec["format"] == "subliminal-mlp/x" and rec["format_version"] == 1
    assert rec["config"] == Config(n_runs=2, seed=3).to_dict()
    assert rec["seeds"] == {"seed": 3, "runs": [0, 1]} and rec["zeta"] == 1 and rec["alpha"] == [2]
    assert rec["environment"]["devices"] == ["gpu:0"] and rec["environment"]["run_batch"] == 4
    assert list(rec["environment"])[:6] == ["subliminal_mlp", "jax", "jaxlib", "flax", "optax", "numpy"]
    assert list(rec["timing"]) == ["run_s", "peak_rss_mb"] and rec["timing"]["peak_rss_mb"] > 0
    created = dt.datetime.fromisoformat(rec["created"])
    assert created.utcoffset() == dt.timedelta(0)
    # A dict config is kept as given; explicit runs; the timing given is not changed.
    t = {"total_s": 1.0, "peak_rss_mb": 5.0}
    rec = envelope("subliminal-mlp/x", {"a": 1}, n_runs=[2, 3], seed=0, runs=[0, 1, 2], data={}, timing=t,
                   format_version=2)
    assert rec["config"] == {"a": 1} and rec["n_runs"] == [2, 3] and rec["seeds"]["runs"] == [0, 1, 2]
    assert rec["timing"] == {"total_s": 1.0, "peak_rss_mb": 5.0} and rec["format_version"] == 2
    assert "devices" not in rec["environment"]
    with pytest.raises(TypeError, match="envelope keys"):
        envelope("subliminal-mlp/x", {}, n_runs=1, seed=0, data={}, created="now")
    with pytest.raises(ValueError, match="subliminal-mlp/<kind>"):
        envelope("other", {}, n_runs=1, seed=0, data={})



@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="Linux's /proc: ru_maxrss elsewhere")
def test_peak_memory_is_the_processs_own_not_its_parents():
    # getrusage's ru_maxrss starts a child at its parent's peak (and keeps it across exec): a benchmark's fresh
    # child reported its parent's 1302 MiB. A child of this process, after it held 600 MiB more, reports its own.
    import subprocess
    import sys

    from subliminal_mlp.core.results import peak_rss_mb

    held = bytearray(600 * 1024 * 1024)
    held[::4096] = b"x" * len(held[::4096])  # resident, page by page
    parent = peak_rss_mb()
    code = "from subliminal_mlp.core.results import peak_rss_mb; print(peak_rss_mb())"
    child = float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)
    del held
    assert parent > 600 and 0 < child < parent - 500, (parent, child)

def test_the_environment_names_the_command_and_the_checkout_it_ran_from(monkeypatch, tmp_path):
    import shlex
    import subprocess

    from subliminal_mlp.core.results import command_line, environment, source_revision

    env = environment()
    assert env["command"] == command_line()
    root = Path(results.__file__).resolve().parents[2]
    if (root / ".git").exists():  # a checkout (this repository, CI's clone): its commit, asked of git here
        head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
        assert env["source"]["commit"] == head and isinstance(env["source"]["dirty"], bool)
    else:
        assert "source" not in env
    # Copies of the package: installed (no repository), untracked inside another repository, or tracked in a
    # subfolder of one; GIT_DIR pointing elsewhere is ignored.
    def git(where, *args):
        subprocess.run(["git", "-C", str(where), *args], check=True, capture_output=True,
                       env={**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t"})
        return subprocess.run(["git", "-C", str(where), "rev-parse", "HEAD"], capture_output=True,
                              text=True).stdout.strip()

    def revision_of(package_dir):
        (package_dir / "core").mkdir(parents=True, exist_ok=True)
        (package_dir / "__init__.py").touch()
        monkeypatch.setattr(results, "__file__", str(package_dir / "core" / "results.py"))
        source_revision.cache_clear()
        return source_revision()

    try:
        assert revision_of(tmp_path / "site" / "subliminal_mlp") is None
        other = tmp_path / "other"
        other.mkdir()
        git(other, "init", "-q")
        (other / "x").write_text("x")
        git(other, "add", "x")
        head = git(other, "commit", "-qm", "x")
        assert revision_of(other / "subliminal_mlp") is None  # untracked there: not that repository's code
        git(other, "add", "subliminal_mlp")
        head = git(other, "commit", "-qm", "package")
        assert revision_of(other / "subliminal_mlp") == {"commit": head, "dirty": False}  # tracked in a subfolder
        (other / "x").write_text("changed")  # another file of the repository: not the library's
        assert revision_of(other / "subliminal_mlp")["dirty"] is False
        (other / "subliminal_mlp" / "__init__.py").write_text("# changed")
        assert revision_of(other / "subliminal_mlp")["dirty"] is True
        monkeypatch.setenv("GIT_DIR", str(root / ".git"))
        assert revision_of(other / "subliminal_mlp")["commit"] == head
    finally:
        monkeypatch.undo()
        source_revision.cache_clear()
    # The command line as a user would type it again.
    assert command_line(["/x/.venv/bin/subliminal-mlp", "figures", "demo"]) == "subliminal-mlp figures demo"
    assert command_line(["experiments/fig10_mnist.py", "--seeds", "4"]) == "python experiments/fig10_mnist.py --seeds 4"
    package = Path(subliminal_mlp.__file__).parent
    assert command_line([str(package / "__main__.py"), "reproduce"]) == "python -m subliminal_mlp reproduce"
    assert command_line([str(package / "cli" / "__main__.py"), "-h"]) == "python -m subliminal_mlp.cli -h"
    assert shlex.split(command_line(["s.py", "--out", "a b"])) == ["python", "s.py", "--out", "a b"]
    assert command_line([]) == ""


def test_data_record(data_root):
    from subliminal_mlp.core.data import DATASETS, load_dataset

    assert data_record(name="mnist") == {"dataset": "mnist"}
    ds = load_dataset("mnist", data_root)
    rec = data_record(ds, subset={"classes": [0, 1], "n_train": 10}, note="x")
    assert list(rec) == ["dataset", "source_dir", "sha256", "subset", "note"]
    canonical = {fs.name: fs.sha256 for fs in DATASETS["mnist"].files}
    assert rec["dataset"] == "mnist" and rec["source_dir"] == ds.source_dir and rec["sha256"] == canonical
    assert rec["sha256"] is not ds.checksums and rec["subset"] == {"classes": [0, 1], "n_train": 10}
    assert data_record(ds, name="fashion-mnist")["dataset"] == "fashion-mnist"
    assert data_record(dataclasses.replace(ds, source_dir="/elsewhere")) == {**data_record(ds), "source_dir": "/elsewhere"}
    # Arrays that are not the files' content as the loader decoded it are named by their fingerprints, with the
    # files the dataset says it came from beside them: relabelled, copied (writeable), or of one's own.
    relabelled = dataclasses.replace(ds, test_labels=(ds.test_labels + 1) % 10)
    copied = dataclasses.replace(ds, train_images=np.array(ds.train_images))
    for other in (relabelled, copied, dataclasses.replace(ds, name="fashion-mnist")):
        rec = data_record(other, subset={"n": 1})
        assert list(rec) == ["dataset", "arrays", "derived_from", "subset"]
        assert rec["arrays"] == {f: _fingerprint(getattr(other, f)) for f in
                                 ("train_images", "train_labels", "test_images", "test_labels")}
        assert rec["derived_from"] == {"source_dir": ds.source_dir, "sha256": canonical}
    assert data_record(relabelled)["arrays"]["test_labels"] != data_record(copied)["arrays"]["test_labels"]
    assert data_record(relabelled)["arrays"]["train_images"] == data_record(copied)["arrays"]["train_images"]
    own = data_record(FAKE_DATA, name="fashion-mnist")
    assert own["dataset"] == "fashion-mnist" and own["derived_from"]["sha256"] == FAKE_DATA.checksums
    assert own["derived_from"]["sha256"] is not FAKE_DATA.checksums
    assert own["arrays"]["test_images"] == _fingerprint(np.ones((2, 784), np.float32))
    bare = SimpleNamespace(**{**vars(FAKE_DATA), "checksums": {}})
    assert list(data_record(bare)) == ["dataset", "arrays"]


def test_same_data_compares_what_records_say_they_read(data_root):
    from subliminal_mlp.core.data import load_dataset

    ds = load_dataset("mnist", data_root)
    files, own = data_record(ds), data_record(FAKE_DATA)
    moved = data_record(dataclasses.replace(ds, source_dir="/elsewhere"))
    assert results.same_data(files, moved) and results.same_data(own, data_record(FAKE_DATA))
    assert not results.same_data(files, own) and not results.same_data(own, files)
    assert not results.same_data(files, data_record(dataclasses.replace(ds, test_labels=ds.test_labels[::-1])))
    # Recorded checksums of other files differ; an entry naming neither (a bare name) agrees with any.
    assert not results.same_data(files, {**files, "sha256": {**files["sha256"], "train-images-idx3-ubyte.gz": "0"}})
    assert results.same_data({"dataset": "mnist"}, own) and results.same_data(files, None)
    # The students' images, when both name theirs.
    assert results.same_data({**files, "inputs": files}, {**files, "inputs": moved})
    assert not results.same_data({**files, "inputs": files}, {**files, "inputs": own})
    assert results.same_data({**files, "inputs": files}, files)


def test_experiment_record_is_the_documented_fig10_format():
    r = fake_result(values_in_program=2)
    rec = experiment_record(r, FAKE_DATA)
    assert list(rec) == ["format", "format_version", "config", "n_runs", "seeds", "models", "chance", "health",
                         "data", "environment", "timing", "created"]
    assert rec["format"] == "subliminal-mlp/fig10" and rec["format_version"] == 1
    # Health: the fake teacher (column 1) is 0.01 above its reference, not better; no finiteness given.
    assert rec["health"] == {"ok": False, "nonfinite": [], "teacher_not_better": [0, 1, 2], "teacher_margin": 0.05}
    # A teacher trained for 0 epochs is its reference by design: not flagged.
    untrained = dataclasses.replace(r, config=r.config.replace(teacher_epochs=0))
    assert experiment_record(untrained, FAKE_DATA)["health"]["ok"] is True
    assert rec["config"] == r.config.to_dict() and rec["n_runs"] == 3
    assert rec["seeds"] == {"seed": 7, "runs": [0, 1, 2]}
    assert list(rec["models"]) == list(MODELS)
    for j, name in enumerate(MODELS):
        m = rec["models"][name]
        assert list(m) == ["mean", "ci95", "accuracies"]
        assert m["accuracies"] == pytest.approx(r.accuracies[:, j].tolist())
        assert (m["mean"], m["ci95"]) == results.mean_ci95(r.accuracies[:, j])
    assert rec["chance"] == 0.1
    assert rec["data"] == data_record(FAKE_DATA) == {
        "dataset": "mnist", "arrays": {f: _fingerprint(getattr(FAKE_DATA, f)) for f in
                                       ("train_images", "train_labels", "test_images", "test_labels")},
        "derived_from": {"source_dir": "/data/mnist", "sha256": FAKE_DATA.checksums}}
    env = rec["environment"]
    assert env["devices"] == ["cpu:0"] and env["run_batch"] == 2 and env["values_in_program"] == 2
    assert list(rec["timing"]) == ["compile_s", "run_s", "total_s", "peak_rss_mb"]
    assert rec["timing"]["total_s"] == 3.5
    plain = experiment_record(fake_result())
    assert plain["data"] == {"dataset": "mnist"} and "values_in_program" not in plain["environment"]
    # The committed Figure-10 record has the same keys, in the same order, at every level of the envelope,
    # and the figures pipeline's own entry (how it was made) at the end.
    committed = json.loads((FIGURES / "fig10_mnist.json").read_text())
    assert list(committed) == [*rec, "pipeline"]
    for key in ("config", "seeds", "timing", "health"):
        assert list(committed[key]) == list(rec[key]), key
    assert list(committed["data"]) == ["dataset", "source_dir", "sha256"]  # made from the files, as loaded
    later = {"command", "source"}  # added after the committed record was made (records before them lack them)
    assert [k for k in committed["environment"] if k not in later] == [k for k in env if k not in
                                                                      later | {"values_in_program"}]
    assert "command" in env  # the command line; source only from a git checkout
    assert env["matmul_precision"] == str(jax.config.jax_default_matmul_precision or "default")
    assert list(committed["models"]) == list(rec["models"])


def test_write_record_and_read_results_round_trip(tmp_path):
    rec = envelope("subliminal-mlp/alignment", Config(n_runs=1), n_runs=1, seed=0, data=data_record(FAKE_DATA),
                   payload_value=[1.5, None])
    files = write_record(rec, tmp_path / "out", "rec", csv=(["a", "b"], [[1, "x,y"], [2, None]]))
    assert set(files) == {"json", "csv"}
    assert files["json"].read_text().endswith("}\n") and '\n  "format"' in files["json"].read_text()
    assert read_results(files["json"]) == rec == read_results(files["json"], format="subliminal-mlp/alignment")
    assert files["csv"].read_text() == 'a,b\n1,"x,y"\n2,\n'
    assert csv_text(["h"], []) == "h\n"
    assert set(write_record(rec, tmp_path, "only")) == {"json"}
    assert not [p for p in tmp_path.rglob(".*")]  # no temporary file left behind
    # A CSV that cannot be made (or a record that cannot be JSON) leaves both files of the pair as they were.
    before = {k: v.read_text() for k, v in files.items()}
    for bad in (dict(record={**rec, "y": 1}, csv=(["a"], 5)), dict(record={**rec, "x": object()}, csv=(["a"], [[1]]))):
        with pytest.raises(TypeError):
            write_record(bad["record"], tmp_path / "out", "rec", csv=bad["csv"])
        assert {k: v.read_text() for k, v in files.items()} == before
    # With its figure: the three replace the previous ones together, so a figure that fails (or is interrupted) as
    # it is drawn leaves all three as they were, no temporary file; drawn, all three are new.
    def draw(record, path, fail=False):
        results.atomic_write_text(path, f"png of {record['y']}")
        if fail:
            raise KeyboardInterrupt
        return path

    files = write_record({**rec, "y": 1}, tmp_path / "fig", "rec", csv=(["a"], [[1]]), figure=draw)
    assert list(files) == ["json", "csv", "png"] and files["png"].read_text() == "png of 1"
    before = {k: v.read_text() for k, v in files.items()}
    with pytest.raises(KeyboardInterrupt):
        write_record({**rec, "y": 2}, tmp_path / "fig", "rec", csv=(["a"], [[2]]),
                     figure=lambda r, p: draw(r, p, fail=True))
    assert {k: v.read_text() for k, v in files.items()} == before and not list((tmp_path / "fig").glob(".*"))
    write_record({**rec, "y": 2}, tmp_path / "fig", "rec", csv=(["a"], [[2]]), figure=draw)
    assert files["png"].read_text() == "png of 2" and read_results(files["json"])["y"] == 2
    # write_results is write_record with the Figure-10 CSV.
    fig10 = experiment_record(fake_result())
    paths = write_results(fig10, tmp_path, "fig10")
    assert paths["csv"].read_text() == results.records_csv(fig10)
    assert paths["csv"].read_text().splitlines()[:2] == ["model,run,accuracy", "reference,0,0.000000"]
    assert read_results(paths["json"], format="subliminal-mlp/fig10") == fig10
    # The CSV written beside a record, given in its place, is named as such, with the record to read.
    raises(paths["csv"], "is a CSV table, not a record: read the JSON record beside it", str(paths["json"]))
    lone = tmp_path / "lone.csv"
    lone.write_text(paths["csv"].read_text())
    raises(lone, "is a CSV table, not a record: read the JSON record that was written with it.")


def test_per_run_is_every_runs_accuracy_of_a_figure_10_record_and_a_sweep_summary_by_its_value_records(tmp_path):
    """sm.per_run against the records' own keys: Figure 10's accuracies, and a committed sweep summary's value
    records, which it reads from beside the summary (engine records: test_engine's sweep test)."""
    fig10 = read_results(FIGURES / "fig10_mnist.json")
    rows = subliminal_mlp.per_run(FIGURES / "fig10_mnist.json")
    assert rows == subliminal_mlp.per_run(fig10) and len(rows) == 6 * fig10["n_runs"]
    assert [r["accuracy"] for r in rows if r["model"] == "student_aux"] == fig10["models"]["student_aux"]["accuracies"]
    assert rows[0] == {"model": "reference", "run": 0, "accuracy": fig10["models"]["reference"]["accuracies"][0]}
    summary_path = FIGURES / "sweeps" / "aux_logits" / "sweep_aux_logits.json"
    summary = read_results(summary_path)
    rows = subliminal_mlp.per_run(summary_path)
    assert len(rows) == sum(summary["n_runs"]) * len(summary["models"])
    for j, (value, rel) in enumerate(zip(summary["values"], summary["value_files"])):
        mine = [r for r in rows if r["aux_logits"] == value]
        for name, m in read_results(summary_path.parent / rel)["models"].items():
            accs = [r["accuracy"] for r in mine if r["model"] == name]
            assert accs == m["accuracies"]
            assert np.mean(accs) == pytest.approx(summary["models"][name]["mean"][j], abs=1e-12)  # the summary's
    # a summary moved beside its records (another sweep's written into its directory): its value_files are
    # relative to the sweep's directory, two levels up, and read from there
    moved = tmp_path / "out" / "aux_logits" / "somekey"
    files = []
    for rel in summary["value_files"]:
        target = moved / Path(rel).name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes((summary_path.parent / rel).read_bytes())
        files.append(target.relative_to(tmp_path / "out").as_posix())
    (moved / summary_path.name).write_text(json.dumps({**summary, "value_files": files}))
    assert subliminal_mlp.per_run(moved / summary_path.name) == rows
    raises_for = [(summary, "give per_run the summary's path"),
                  (read_results(FIGURES / "demo.json"), "a 'subliminal-mlp/demo' record keeps its numbers")]
    for record, message in raises_for:
        with pytest.raises(RecordError, match=message):
            subliminal_mlp.per_run(record)


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: str(p.relative_to(FIGURES)))
def test_every_committed_record_is_read(path):
    raw = json.loads(path.read_text(encoding="utf-8"))
    # Read as its own format, it comes back unchanged; asked for as another format, it is refused by name.
    assert read_results(path, format=raw["format"]) == raw
    other = next(f for f in FORMATS if f != raw["format"])
    raises(path, f"is not a {other} record", f"its format is {raw['format']!r}", format=other)


def test_the_committed_records_are_all_there():
    assert len(COMMITTED) > 60
    formats = {json.loads(p.read_text())["format"] for p in COMMITTED}
    assert formats <= set(FORMATS) and "subliminal-mlp/fig10" in formats and "subliminal-mlp/sweep" in formats


def raises(path, *fragments, **kw):
    with pytest.raises(RecordError) as info:
        read_results(path, **kw)
    msg = str(info.value)
    assert str(path) in msg, msg
    for f in fragments:
        assert f in msg, (f, msg)
    return msg


def test_damaged_and_foreign_records_are_clear_errors(tmp_path):
    good = json.dumps(experiment_record(fake_result()), indent=2)
    p = tmp_path / "fig10.json"
    raises(p, "no such record file")
    p.write_text(good[: len(good) // 2])
    raises(p, "not valid JSON", "truncated", "line ", "column ")
    p.write_text("")
    raises(p, "truncated")
    p.write_text('{"format": "subliminal-mlp/fig10",, }')
    raises(p, "damaged", "column 35")
    p.write_bytes(b"\xff\xfe{}")
    raises(p, "damaged", "UTF-8")
    p.write_text("[1, 2]")
    raises(p, "JSON list", "expected a JSON object")
    p.write_text("{}")
    raises(p, 'no "format"', "subliminal-mlp/fig10", "subliminal-mlp/sweep")
    for damaged_format in (["subliminal-mlp/fig10"], {"name": 1}, 3):
        p.write_text(json.dumps({"format": damaged_format, "format_version": 1}))
        raises(p, 'damaged "format" field')
    p.write_text(json.dumps({"format": "other", "format_version": 1}))
    msg = raises(p, "'other'", "does not read", "expected one of")
    assert all(f in msg for f in FORMATS)
    future = json.loads(good)
    future["format_version"] = 2
    p.write_text(json.dumps(future))
    raises(p, "format_version 2", "newer", "up to 1", "upgrade")
    future["format_version"] = "1"
    p.write_text(json.dumps(future))
    raises(p, "format_version '1'", "expected an integer")
    for bad_version in (0, None):  # versions start at 1; a record without one is not this library's
        future["format_version"] = bad_version
        p.write_text(json.dumps(future))
        raises(p, f"format_version {bad_version!r}", "expected an integer from 1")
    p.write_text(good)
    raises(p, "not a subliminal-mlp/sweep record", "'subliminal-mlp/fig10'", format="subliminal-mlp/sweep")
    damaged = json.loads(good)
    del damaged["models"]
    p.write_text(json.dumps(damaged))
    raises(p, "lacks 'models'")
    # Every key the readers of a format use (tables, figures, read_results' users): each one missing is named.
    sweep = json.loads(good) | {"format": "subliminal-mlp/sweep", "param": "lr", "values": [1], "labels": ["1"]}
    needs = {"subliminal-mlp/fig10": ("config", "n_runs", "models"),
             "subliminal-mlp/sweep": ("param", "values", "labels", "n_runs", "models")}
    for fmt, rec in (("subliminal-mlp/fig10", json.loads(good)), ("subliminal-mlp/sweep", sweep)):
        p.write_text(json.dumps(rec))
        assert read_results(p, format=fmt)["format"] == fmt  # whole, it is read
        for key in needs[fmt]:
            p.write_text(json.dumps({k: v for k, v in rec.items() if k != key}))
            raises(p, f"lacks '{key}'")
    assert issubclass(RecordError, ValueError)


def test_register_format(tmp_path, monkeypatch):
    monkeypatch.setattr(results, "FORMATS", dict(FORMATS))
    p = tmp_path / "r.json"
    p.write_text(json.dumps({"format": "subliminal-mlp/new", "format_version": 2}))
    raises(p, "does not read")
    register_format("subliminal-mlp/new")
    raises(p, "newer")
    register_format("subliminal-mlp/new", 2)
    register_format("subliminal-mlp/new", 1)  # keeps the newer version
    assert read_results(p)["format_version"] == 2 and results.FORMATS["subliminal-mlp/new"] == 2
    for bad in (("new", 1), ("subliminal-mlp/new", 0), ("subliminal-mlp/new", True)):
        with pytest.raises(ValueError):
            register_format(*bad)


@pytest.mark.filterwarnings("ignore::subliminal_mlp.SettingWarning")  # m = 1: aux students that never move (test_engine)
def test_a_damaged_value_record_of_a_sweep_is_recomputed(data_root, tmp_path, monkeypatch):
    import subliminal_mlp.studies.sweep as sweep_mod
    from subliminal_mlp.core.data import load_mnist

    cfg = Config(hidden_widths=(16,), n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=1024, batch_size=512)
    kw = dict(out_dir=tmp_path, datasets={"mnist": load_mnist(data_root)}, progress=False)
    first = sweep_mod.run_sweep("aux_logits", [1, 2], cfg, log=lambda _: None, **kw)
    records = tmp_path / "aux_logits" / sweep_mod.config_key("aux_logits", cfg)
    damaged, intact = records / "aux_logits=2.json", records / "aux_logits=1.json"
    before, intact_text = read_results(damaged), intact.read_text()
    text = damaged.read_text()
    damaged.write_text(text[: len(text) // 3])

    calls, lines = [], []
    real = sweep_mod.run_experiment
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda c, *a, **k: (calls.append(c.aux_logits),
                                                                         real(c, *a, **k))[1])
    again = sweep_mod.run_sweep("aux_logits", [1, 2], cfg, log=lines.append, **kw)
    assert calls == [2]
    said = [line for line in lines if "recomputing" in line]
    assert len(said) == 1 and "aux_logits = 2" in said[0] and str(damaged) in said[0] and "truncated" in said[0]
    rec = read_results(damaged, format="subliminal-mlp/fig10")
    assert rec["models"] == before["models"] and rec["config"] == before["config"]
    assert again["models"] == first["models"]
    assert intact.read_text() == intact_text  # the intact value was read, not rerun
    # The summary is an envelope too, read back with its format.
    summary = sweep_mod.read_sweep(tmp_path / "sweep_aux_logits.json")
    assert list(summary)[:5] == ["format", "format_version", "config", "n_runs", "seeds"]
    assert list(summary)[-4:] == ["data", "environment", "timing", "created"]
    assert summary["base_config"] == summary["config"] == cfg.to_dict() and summary["n_runs"] == [2, 2]
    assert len(summary["data"]["sha256"]) == 4 and summary["timing"]["total_s"] > 0
    # A file of another format in a value's place is recomputed as well, never used.
    damaged.write_text(json.dumps(summary))
    lines.clear()
    calls.clear()
    sweep_mod.run_sweep("aux_logits", [1, 2], cfg, log=lines.append, **kw)
    assert calls == [2] and any("recomputing" in line and "subliminal-mlp/sweep" in line for line in lines)
    with pytest.raises(RecordError, match="not a subliminal-mlp/sweep record"):
        sweep_mod.read_sweep(intact)


TINY = Config(hidden_widths=(16,), n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=1024, batch_size=512)


def _trajectory(data, fashion, tmp_path):
    from subliminal_mlp.studies.trajectory import student_trajectories, write_trajectories

    return write_trajectories(student_trajectories(TINY, data, probe_every=1, n_probe=500), tmp_path, "traj")


def _demo(data, fashion, tmp_path):
    from subliminal_mlp.studies.demo import demo_record, run_demo

    return write_record(demo_record(run_demo(data, TINY.replace(n_runs=1)), data), tmp_path, "demo")


@pytest.mark.parametrize("fmt, make", [("trajectory", _trajectory), ("demo", _demo)])
def test_every_experiment_writes_the_envelope(fmt, make, data_root, tmp_path, check_envelope):
    # Two here; the other studies' own end-to-end tests check theirs (check_envelope, tests/conftest.py).
    from subliminal_mlp.core.data import load_fashion_mnist, load_mnist

    data, fashion = load_mnist(data_root), load_fashion_mnist(data_root)
    files = make(data, fashion, tmp_path)
    rec = read_results(files["json"], format=f"subliminal-mlp/{fmt}")
    check_envelope(rec, data.checksums, health=fmt != "demo")
    assert rec["config"]["hidden_widths"] == [16] and rec["data"]["dataset"] == "mnist"
    if "csv" in files:
        header = files["csv"].read_text().splitlines()[0]
        assert "run" in header.split(",")


def test_a_figure_drawn_from_an_unhealthy_record_is_marked(tmp_path):
    import matplotlib.pyplot as plt

    from subliminal_mlp.report.plotting import save_figure

    bad = {"n_runs": 3, "health": {"ok": False, "nonfinite": [[1, "teacher"]], "teacher_not_better": [1],
                                   "teacher_margin": 0.05}}
    marks = []
    for record in (bad, {**bad, "health": {**bad["health"], "ok": True, "nonfinite": [], "teacher_not_better": []}},
                   None):
        fig = plt.figure()
        save_figure(fig, tmp_path / "f.png", record=record)
        marks.append([t.get_text() for t in fig.texts if "WARNING" in t.get_text()])
    assert len(marks[0]) == 1 and "1 of 3 runs" in marks[0][0] and marks[1:] == [[], []]
    # A record with a health per part (split heads' two models, the mitigations' families per value) is
    # marked for each unhealthy part, and only for those.
    healthy = {**bad["health"], "ok": True, "nonfinite": [], "teacher_not_better": []}
    parts = {"n_runs": 3, "split_head": {"health": bad["health"]}, "single_head": {"health": healthy},
             "families": {"sgd": {"health": [healthy, bad["health"]]}}}
    fig = plt.figure()
    save_figure(fig, tmp_path / "g.png", record=parts)
    (mark,) = [t.get_text() for t in fig.texts if "WARNING" in t.get_text()]
    assert "split_head: non-finite parameters in 1 of 3 runs" in mark and "families.sgd[1]: teacher no better" in mark
    assert "single_head" not in mark and "sgd[0]" not in mark
    # The mark covers nothing drawn: it sits above every axes and title (the saved image grows to hold it).
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("a title")
    save_figure(fig, tmp_path / "h.png", record=bad)
    (text,) = [t for t in fig.texts if "WARNING" in t.get_text()]
    to_fig = fig.transFigure.inverted()
    mark_bottom = to_fig.transform(text.get_window_extent().corners()).min(0)[1]
    assert mark_bottom > to_fig.transform(ax.get_tightbbox().corners()).max(0)[1]


def test_every_committed_format_is_known_without_importing_the_module_that_writes_it():
    # read_results must not depend on import order: a fresh interpreter that imports only results.
    import subprocess
    import sys

    code = ("import json, pathlib; from subliminal_mlp.core import results; "
            "[results.read_results(p) for p in pathlib.Path('figures').glob('[!.]*.json')]; "
            "from subliminal_mlp.theory import theorem; assert results.FORMATS[theorem.FORMAT] == theorem.FORMAT_VERSION")
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_a_function_setting_is_recorded_with_the_values_it_closes_over():
    """Two example-weight functions made with different thresholds are different settings in a record;
    a function without a closure is its name; a function in its own closure, or nested deeper than a
    record needs, still gives a finite record."""
    def above(t):
        return lambda x: x > t

    here = above.__qualname__[:-len("above")].replace("<locals>.", "")  # "test_...closes_over."
    assert results.setting_json(above(0.25)) == {here + "above.<lambda>": {"t": 0.25}}
    assert results.setting_json(above(0.25)) != results.setting_json(above(0.5))
    assert results.setting_json(len) == "len" and results.setting_json(np.mean) == "mean"

    def recursive(n):
        return 0 if n == 0 else recursive(n - 1)

    assert results.setting_json(recursive) == {here + "recursive": {"recursive": here + "recursive"}}
    f = lambda: 0  # noqa: E731
    for _ in range(40):
        f = (lambda g: lambda: g())(f)
    assert len(json.dumps(results.setting_json(f))) < 10_000
    long = list(range(100_000))  # a long list a function closes over is its length, not 100,000 numbers
    assert results.setting_json(lambda x: x in long) == {here + "<lambda>": {"long": "list of 100000 items"}}
    big = np.zeros((100, 100), np.float32)
    assert results.setting_json(lambda: big) == {here + "<lambda>": {"big": "array[100, 100] float32"}}
    # A module closed over is named (jax.numpy has .shape and .dtype, and was taken for an array, kept as the module
    # itself: sm.mlp(activation=...) of such a function failed with "module is not JSON serializable").
    import jax.numpy as jnp
    import subliminal_mlp as sm

    act = lambda x: jnp.tanh(x)  # noqa: E731
    assert results.setting_json(act) == {here + "<lambda>": {"jnp": "module jax.numpy"}}
    assert json.loads(json.dumps(sm.mlp((4,), activation=act).describe())) == sm.mlp((4,), activation=act).describe()
    # The limits are 64 items: 64 are written out, 65 are summarised; a tuple like a list.
    assert results.setting_json(np.zeros(64)) == [0.0] * 64 and results.setting_json(np.zeros(65)) == "array[65] float64"
    pair, many = tuple(range(64)), tuple(range(65))
    assert results.setting_json(lambda: pair) == {here + "<lambda>": {"pair": list(range(64))}}
    assert results.setting_json(lambda: many) == {here + "<lambda>": {"many": "tuple of 65 items"}}
    # A set in a closure is recorded in one order whatever the process's hash seed.
    assert results.setting_json(lambda: {"b", "a", "c"}) == here + "<lambda>"  # a literal is no closure
    digits = frozenset({"seven", "one", "three"})
    assert results.setting_json(lambda x: x in digits) == {here + "<lambda>": {"digits": ["one", "seven", "three"]}}


def test_a_caption_names_every_setting_that_is_not_the_papers():
    """The isotropic and orthogonal init-noise sweeps, or mixed inputs, are told apart by their captions."""
    from subliminal_mlp.report.plotting import settings_caption

    paper = Config().to_dict()
    assert settings_caption(paper, 3).endswith("60000 noise images, 3 runs (mean ± 1.96·sd/√n, narrower than a 95% CI)")
    ortho = settings_caption(Config(init_noise_kind="orthogonal").to_dict(), 3, skip=("init_noise",))
    assert "init_noise_kind orthogonal" in ortho and ortho != settings_caption(paper, 3, skip=("init_noise",))
    mixed = Config(student_inputs="mix", input_mix=0.25, temperature=2.0, init_noise=0.01).to_dict()
    assert all(s in settings_caption(mixed, 3) for s in ("student_inputs mix", "input_mix 0.25", "temperature 2",
                                                           "init_noise 0.01"))
    assert "input_mix" not in settings_caption({**paper, "input_mix": 0.25}, 3)  # moot without mixed inputs
    assert "temperature" not in settings_caption(Config(temperature=2.0).to_dict(), 3, skip=("temperature",))
    # a swept field of the first line is named in place of a value (it showed the base's, e.g. "10+3" or "5+0")
    assert settings_caption(paper, 3, skip=("aux_logits",)).startswith("mnist, MLP 784→256→256→10+[aux_logits], ")
    assert "MLP 784→[hidden_widths]→10+3" in settings_caption(paper, 3, skip=("hidden_widths",))
    assert "5+[student_epochs] epochs" in settings_caption(paper, 3, skip=("student_epochs",))
    assert "Adam lr [learning_rate], " in settings_caption(paper, 3, skip=("learning_rate",))
    # what the students saw is named: not "noise images" for the task's own images (nor for a swept kind)
    task = settings_caption(Config(student_inputs="task").to_dict(), 3)
    assert "60000 training images, student_inputs task" in task and "noise" not in task
    assert "60000 distillation inputs, " in settings_caption(paper, 3, skip=("student_inputs",))


def test_figure_10s_title_names_the_students_inputs(tmp_path, monkeypatch):
    import json
    from pathlib import Path

    import subliminal_mlp.report.plotting as plotting

    record = json.loads((Path(__file__).parents[1] / "figures" / "fig10_mnist.json").read_text())
    titles = []
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **kw: titles.append(fig.axes[0].get_title()))
    for inputs in ("uniform", "task", "fashion-mnist"):
        plotting.plot_fig10({**record, "config": {**record["config"], "student_inputs": inputs}}, tmp_path / "f.png")
    assert [t.rsplit(" over ", 1)[1] for t in titles] == ["noise images", "training images", "Fashion-MNIST images"]
    plotting.plt.close("all")


def test_students_distilled_on_another_dataset_record_its_checksums(data_root, tmp_path, monkeypatch):
    """A Figure-10 record (reproduce, and every value of a sweep) whose students saw Fashion-MNIST names it
    beside the task's data, with its checksums; the pool they were given is Fashion-MNIST's training set."""
    import subliminal_mlp.cli.reproduce as R
    import subliminal_mlp.studies.sweep as S

    seen = []

    def fake_run(cfg, data, *, pool=None, **kw):
        seen.append(pool)
        return ExperimentResult(config=cfg, accuracies=np.tile(np.float32([0.1, 0.9, 0.5, 0.9, 0.1, 0.7]), (cfg.n_runs, 1)), compile_s=0.0,
                                run_s=0.0, devices=["cpu:0"], run_batch=1)

    monkeypatch.setattr(R, "run_experiment", fake_run)
    monkeypatch.setattr(S, "run_experiment", fake_run)
    cfg = Config(n_runs=2, student_inputs="fashion-mnist")
    rec = R.reproduce(cfg, data_dir=data_root, out_dir=tmp_path / "r", progress=False, log=lambda s: None)
    import subliminal_mlp.core.data as D

    real_load, loads = D.load_dataset, []
    monkeypatch.setattr(D, "load_dataset", lambda name, *a, **k: (loads.append(name), real_load(name, *a, **k))[1])
    summary = S.run_sweep("aux_logits", [3, 5], cfg, data_dir=data_root, out_dir=tmp_path / "s", progress=False,
                          log=lambda s: None)
    assert sorted(loads) == ["fashion-mnist", "mnist"]  # each dataset loaded and verified once for the two values
    value = read_results(tmp_path / "s" / summary["value_files"][1])
    for data in (rec["data"], value["data"]):
        assert data["dataset"] == "mnist" and data["inputs"]["dataset"] == "fashion-mnist"
        assert set(data["inputs"]["sha256"]) == {f for f in data["inputs"]["sha256"] if "ubyte" in f} != set()
        assert data["inputs"]["sha256"] != data["sha256"]
    from subliminal_mlp.core.data import load_dataset

    fashion = load_dataset("fashion-mnist", data_root).train_images  # the students' pool, not the task's digits
    assert len(seen) == 3 and all(np.array_equal(p, fashion) for p in seen)
    assert "inputs" not in R.reproduce(cfg.replace(student_inputs="uniform"), data_dir=data_root,
                                       out_dir=tmp_path / "u", progress=False, log=lambda s: None)["data"]


def test_an_engine_figures_numbers_do_not_overlap_and_its_caption_skips_a_models_functions(monkeypatch):
    """Three swept values side by side: each bar's number is readable (no two overlap); a model of the user's own
    (described by its init and apply in the JSON) is not captioned 'init init, apply apply'."""
    from subliminal_mlp.report import plotting

    names = ["reference", "teacher", "student_aux", "student_all", "cross_aux", "cross_all"]
    values = [{"sweep": {"std": s}, "models": {n: {"mean": 0.094 + 0.8 * (i % 2), "ci95": 0.01}
                                               for i, n in enumerate(names)}} for s in (0.1, 0.3, 1.0)]
    config = {"name": "own", "model": {"name": "mine", "input_shape": [784], "n_classes": 10, "aux_logits": 3,
                                       "init": "init", "apply": "apply"},
              "inputs": {"name": "gaussian", "n": 2048}, "hparams": {"std": 0.3}, "teacher_epochs": 1,
              "student_epochs": 1, "batch_size": 512}
    shown = {}
    monkeypatch.setattr(plotting, "save_figure", lambda fig, path, **k: shown.setdefault("fig", fig))
    plotting.plot_experiment({"models": names, "values": values, "config": config, "n_runs": 2}, "unused.png")
    fig = shown["fig"]
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    numbers = [t.get_window_extent(renderer) for t in fig.axes[0].texts]
    assert len(numbers) == 3 * len(names)
    overlaps = [(i, j) for i in range(len(numbers)) for j in range(i) if numbers[i].overlaps(numbers[j])]
    assert not overlaps, overlaps
    caption = " ".join(plotting.experiment_caption({"config": config, "n_runs": 2}).split())
    assert "model mine (784 → 10+3)" in caption and "init init" not in caption and "apply" not in caption
    plotting.plt.close(fig)
    # One value: its bars keep the models' colours, so its label is the title, not a legend entry of one colour.
    shown.clear()
    plotting.plot_experiment({"models": names, "values": values[:1], "config": config, "n_runs": 2, "chance": 0.1},
                             "unused.png")
    ax = shown["fig"].axes[0]
    assert ax.get_title() == "std = 0.1" and [t.get_text() for t in ax.get_legend().get_texts()] == ["chance = 0.100"]
    plotting.plt.close(shown["fig"])


def test_the_figures_draw_each_models_own_numbers(tmp_path, monkeypatch):
    """What the plotting functions hand to matplotlib (not pixels): every bar, band and line is its label's."""
    from subliminal_mlp.report import plotting
    from subliminal_mlp.report.plotting import plt

    drawn = []
    for name in ("bar", "axhline", "plot", "fill_between"):
        original = getattr(plt.Axes, name)
        monkeypatch.setattr(plt.Axes, name, lambda self, *a, _n=name, _o=original, **k: (drawn.append((_n, a, k)),
                                                                                          _o(self, *a, **k))[1])
    # Figure 10: one bar per model at its mean ± CI, chance at the reference's mean.
    models = {n: {"mean": m, "ci95": c} for n, m, c in (("reference", 0.11, 0.01), ("teacher", 0.95, 0.02),
                                                        ("student_aux", 0.6, 0.05), ("cross_aux", 0.2, None))}
    plotting.plot_fig10({"models": models, "config": Config(teacher_epochs=4, student_epochs=2).to_dict(),
                         "n_runs": 3}, tmp_path / "fig10.png")
    (_, (x, means), kw), = [d for d in drawn if d[0] == "bar"]
    assert list(means) == [0.11, 0.95, 0.6, 0.2] and list(kw["yerr"]) == [0.01, 0.02, 0.05, 0.0]
    assert [a[0] for n, a, _ in drawn if n == "axhline"] == [0.11]
    # An engine record: value j's bars are value j's numbers.
    drawn.clear()
    config = {"name": "toy", "model": {"name": "mlp", "input_shape": [8], "n_classes": 2, "aux_logits": 2},
              "inputs": {"name": "uniform", "n": 128}, "hparams": {"temperature": 1.0}, "teacher_epochs": 1,
              "student_epochs": 1, "batch_size": 64}
    values = [{"sweep": {"temperature": t}, "models": {"teacher": {"mean": 0.9 - t / 10, "ci95": t / 100},
                                                       "student_aux": {"mean": 0.5 + t / 10, "ci95": None}}}
              for t in (1.0, 4.0)]
    plotting.plot_experiment({"models": ["teacher", "student_aux"], "values": values, "config": config,
                              "n_runs": 2, "chance": 0.5}, tmp_path / "toy.png")
    bars = [(a[1], k["yerr"], k["label"]) for n, a, k in drawn if n == "bar"]
    assert [(list(m), list(e), label) for m, e, label in bars] == [
        ([0.8, 0.6], [0.01, 0.0], "temperature = 1"), ([0.5, 0.9], [0.04, 0.0], "temperature = 4")]
    # A sweep: each model's mean line and its mean ± CI band.
    drawn.clear()
    summary = {"param": "temperature", "values": [1.0, 4.0], "labels": ["1", "4"], "chance": 0.1, "n_runs": [3, 3],
               "base_config": Config().to_dict(), "health": [None, None],
               "models": {"teacher": {"mean": [0.9, 0.8], "ci95": [0.01, None]},
                          "student_aux": {"mean": [0.3, 0.5], "ci95": [0.02, 0.04]}}}
    plotting.plot_sweep(summary, tmp_path / "sweep.png")
    lines = [(list(a[0]), list(a[1]), k["label"]) for n, a, k in drawn if n == "plot"]
    assert lines == [([1.0, 4.0], [0.9, 0.8], "teacher"), ([1.0, 4.0], [0.3, 0.5], "student (aux only)")]
    bands = [(list(a[1]), list(a[2])) for n, a, k in drawn if n == "fill_between"]
    assert np.allclose(bands, [([0.89, 0.8], [0.91, 0.8]), ([0.28, 0.46], [0.32, 0.54])])
    assert [a[0] for n, a, _ in drawn if n == "axhline"] == [0.1]
    # The studies' figures, from their committed records: the omitted digit's bar group j is subset j's numbers;
    # the mitigations' top row is each family's gain over its control, the middle row its distillation loss.
    from subliminal_mlp.studies import mitigations, omitted_digit

    committed = Path(__file__).resolve().parents[1] / "figures"
    rec = read_results(committed / "omitted_digit.json")
    drawn.clear()
    omitted_digit.plot_omitted(rec, tmp_path / "omitted.png")
    heights = [list(a[1]) for n, a, _ in drawn if n == "bar"]
    assert heights == [[rec["models"][m][s]["mean"] for m in omitted_digit.MODELS] for s in omitted_digit.SUBSETS]
    assert len({tuple(h) for h in heights}) == 3  # three different groups: the test can tell them apart
    rec = read_results(committed / "mitigations.json")
    drawn.clear()
    mitigations.plot_mitigations(rec, tmp_path / "mitigations.png")
    heights = [list(a[1]) for n, a, _ in drawn if n == "bar"]
    fams = [f for f in mitigations.FAMILIES if f in rec["families"]]
    want = [[g["mean"] for g in rec["families"][f][row]] for f in fams for row in ("gain", "distill_loss")]
    assert sorted(map(tuple, heights)) == sorted(map(tuple, want)) and len(heights) == 2 * len(fams)
    assert not any(h == [g["mean"] for g in rec["families"][f]["student"]] for h in heights for f in fams
                   if "student" in rec["families"][f])  # the gain, not the student's own accuracy


def test_a_sweep_axis_spreads_values_spanning_decades_and_says_what_was_swept(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from subliminal_mlp.report import plotting

    calls = []
    for name in ("set_xscale", "set_xlabel"):
        original = getattr(plt.Axes, name)
        monkeypatch.setattr(plt.Axes, name, lambda self, *a, _n=name, _o=original, **k: (calls.append((_n, a, k)),
                                                                                          _o(self, *a, **k))[1])

    def axis(param, values, base=None):
        calls.clear()
        summary = {"param": param, "values": values, "labels": [str(v) for v in values], "chance": 0.1,
                   "n_runs": [2] * len(values), "base_config": (base or Config()).to_dict(),
                   "health": [None] * len(values),
                   "models": {"student_aux": {"mean": [0.5] * len(values), "ci95": [0.01] * len(values)}}}
        plotting.plot_sweep(summary, tmp_path / "s.png")
        scale = [(a[0], k) for n, a, k in calls if n == "set_xscale"]
        return scale, [a[0] for n, a, _ in calls if n == "set_xlabel"][0]

    # 0 among values spanning 200x (the init_noise sweeps): linear up to the smallest positive value, log beyond.
    scale, label = axis("init_noise", [0.0, 0.005, 0.01, 0.1, 1.0])
    assert scale == [("symlog", {"linthresh": 0.005, "linscale": 0.5})]
    assert label == "σ of the noise added to the shared-init students' start (init_noise)"
    _, label = axis("init_noise", [0.0, 0.01], Config(init_noise_kind="orthogonal"))
    assert label.endswith("orthogonal to the teacher's update (init_noise)")
    assert axis("aux_logits", [1, 10, 100])[0] == [("log", {})]
    assert axis("temperature", [1.0, 2.0, 4.0]) == ([], "softmax temperature T (temperature)")  # within 20x: linear
    assert axis("input_mix", [0.0, 0.5, 1.0])[0] == []  # 0 and values within 20x of each other: linear
    assert axis("input_mix", list(np.linspace(0, 1, 21)))[0] == []  # evenly spaced, though 0.05..1 spans 20x
    assert axis("aux_logits", [5, 10, 15, 20, 100])[0] == [("log", {})]  # 5 to 100, unevenly
    assert axis("my_knob", ["a", "b"]) == ([], "my_knob")  # a name it does not know: as it is


def test_a_caption_gives_the_epochs_and_a_warning_counts_runs_not_models():
    from subliminal_mlp.report.plotting import health_warning, settings_caption

    caption = settings_caption(Config(teacher_epochs=4, student_epochs=2, batch_size=512, n_noise=2048).to_dict(), 3)
    assert "batch 512, 4+2 epochs, 2048 noise images" in caption
    # Runs 0 and 2 diverged (run 0 in two models): two runs of five, not three.
    warning = health_warning({"ok": False, "nonfinite": [[0, "teacher"], [0, "student_aux"], [2, "teacher"]],
                              "teacher_not_better": [0, 2]}, 5)
    assert "in 2 of 5 runs (student_aux, teacher)" in warning and "reference in 2 of 5 runs" in warning


def test_write_record_checks_every_file_it_would_write_before_writing_any(tmp_path):
    """write_record's destination check (check_output) covers the CSV too, and the stem: a directory where
    ``<stem>.csv`` would go, or a stem that is no plain file name, is an OutputError and nothing is written."""
    from subliminal_mlp.core.results import OutputError, write_record

    table = (("x",), [(1,)])
    (tmp_path / "r.csv").mkdir()
    with pytest.raises(OutputError, match=r"r\.csv: it is an existing directory"):
        write_record({"a": 1}, tmp_path, "r", csv=table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.csv"]  # no r.json
    assert write_record({"a": 1}, tmp_path, "r") == {"json": tmp_path / "r.json"}  # no CSV asked: not its business
    (tmp_path / "d.json").mkdir()  # the JSON's place taken: refused before the CSV is written
    with pytest.raises(OutputError, match=r"d\.json: it is an existing directory"):
        write_record({"a": 1}, tmp_path, "d", csv=table)
    (tmp_path / "d.json").rmdir()
    (tmp_path / "afile").write_text("")
    for out, stem, match in [(tmp_path, None, "stem = None is invalid"), (tmp_path, 3, "stem = 3 is invalid"),
                             (tmp_path, "", "stem = '' is invalid"), (tmp_path, "a/b", "without a directory part"),
                             (tmp_path / "afile", "s", "is an existing file, not a directory")]:
        with pytest.raises(OutputError, match=match):
            write_record({"a": 1}, out, stem, csv=table)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile", "r.csv", "r.json"]
    assert not (tmp_path / "a").exists()


def test_the_warning_sits_just_above_what_is_drawn_and_a_callers_own_mark_is_used(tmp_path):
    """save_figure's mark: 0.03 (figure height) above the top of every visible artist (titles included), not above
    an invisible one nor above the figure's own background; ``warning=`` is used even for a healthy record."""
    import matplotlib.pyplot as plt

    from subliminal_mlp.report.plotting import save_figure

    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    ax.set_title("a title")
    hidden = fig.add_axes((0.1, 1.5, 0.3, 0.3))  # far above, but not drawn: no room is made for it
    hidden.set_visible(False)
    top = fig.transFigure.inverted().transform(ax.get_tightbbox().corners()).max(0)[1]
    assert top < 0.99  # the figure's background (0 .. 1) is not what the mark must clear
    save_figure(fig, tmp_path / "w.png", record={"health": {"ok": True}}, warning="WARNING: my own mark")
    (text,) = [t for t in fig.texts if "WARNING" in t.get_text()]
    assert text.get_text() == "WARNING: my own mark"
    assert text.get_position() == pytest.approx((0.5, top + 0.03))
    assert (text.get_ha(), text.get_va()) == ("center", "bottom")


def test_draw_uses_each_formats_own_function_and_fig10_and_sweep_figures_mark_diverged_runs(tmp_path, monkeypatch):
    """sm.draw (DRAWERS) on an engine record is plot_experiment's figure, on a sweep summary plot_sweep's, on a
    Figure-10 record plot_fig10's; the Figure-10 and sweep figures carry the mark of their diverged runs."""
    import subliminal_mlp as sm
    from subliminal_mlp.report import plotting

    marks = []
    original = plotting.save_figure

    def spy(fig, path, *a, **k):
        out = original(fig, path, *a, **k)
        marks.append(next((t.get_text() for t in fig.texts if "WARNING" in t.get_text()), ""))
        return out

    monkeypatch.setattr(plotting, "save_figure", spy)
    bad = {"ok": False, "nonfinite": [[1, "student_aux"]], "teacher_not_better": [], "teacher_margin": 0.05}
    models = {n: {"mean": m, "ci95": 0.01} for n, m in (("reference", 0.1), ("teacher", 0.9), ("student_aux", 0.5))}
    fig10 = {"format": "subliminal-mlp/fig10", "models": models, "config": Config().to_dict(), "n_runs": 3,
             "health": bad}
    config = {"name": "toy", "model": {"name": "mlp", "input_shape": [8], "n_classes": 2, "aux_logits": 2},
              "inputs": {"name": "uniform", "n": 128}, "hparams": {"temperature": 1.0}, "teacher_epochs": 1,
              "student_epochs": 1, "batch_size": 64}
    experiment = {"format": "subliminal-mlp/experiment", "models": ["teacher", "student_aux"], "config": config,
                  "n_runs": 2, "chance": 0.5,
                  "values": [{"sweep": {}, "models": {"teacher": {"mean": 0.9, "ci95": 0.01},
                                                      "student_aux": {"mean": 0.6, "ci95": None}}}]}
    sweep = {"format": "subliminal-mlp/sweep", "param": "temperature", "values": [1.0, 4.0], "labels": ["1", "4"],
             "chance": 0.1, "n_runs": [3, 3], "base_config": Config().to_dict(), "health": [None, bad],
             "models": {"teacher": {"mean": [0.9, 0.8], "ci95": [0.01, 0.01]},
                        "student_aux": {"mean": [0.3, 0.5], "ci95": [0.02, 0.04]}}}
    for record, own in ((fig10, plotting.plot_fig10), (experiment, plotting.plot_experiment),
                        (sweep, plotting.plot_sweep)):
        drawn = sm.draw(record, tmp_path / "drawn.png")
        assert drawn == tmp_path / "drawn.png"
        own(record, tmp_path / "own.png")
        assert drawn.read_bytes() == (tmp_path / "own.png").read_bytes(), record["format"]
    assert marks[0].startswith("WARNING: diverged runs\nnon-finite parameters in 1 of 3 runs (student_aux)")
    assert marks[2] == "" and marks[4] == 'WARNING: diverged runs at temperature = 4\nsee "health" in the JSON records'
