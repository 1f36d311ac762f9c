"""The sweep machinery: typed values, one program for shape-preserving values, resume, errors."""

import numpy as np
import pytest

import subliminal_mlp.studies.sweep as sweep_mod
from subliminal_mlp.cli import main
from subliminal_mlp.core.config import MODELS, Config, ConfigError
from subliminal_mlp.core.data import load_mnist
from subliminal_mlp.studies.figure10 import run_experiment
from subliminal_mlp.core.results import read_results
from subliminal_mlp.studies.sweep import config_key, parse_values, read_sweep, run_sweep

TINY = Config(hidden_widths=(32,), n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=2048, batch_size=512,
              run_batch=1)


@pytest.fixture(scope="module")
def mnist(data_root):
    return load_mnist(data_root)


def test_values_are_parsed_to_the_fields_types():
    assert parse_values("hidden_widths", ["512,512", "64", "32x16"]) == [(512, 512), (64,), (32, 16)]
    for bad in ("16,", "16,,8", ",8", "", "16x", "16,x"):  # "16, 8" unquoted reaches us as "16," and "8"
        with pytest.raises(ConfigError, match=r"empty width \(',' and 'x' both separate widths\)"):
            parse_values("hidden_widths", [bad])
    assert parse_values("aux_logits", ["3", "10"]) == [3, 10]
    assert parse_values("learning_rate", ["1e-3"]) == [1e-3]
    assert parse_values("loss", ["kl", "mse"]) == ["kl", "mse"]
    with pytest.raises(ConfigError, match="'x' is not valid for aux_logits"):
        parse_values("aux_logits", ["x"])
    for bad in ("run_batch", "widths", "n_classes", "input_dim"):  # no number changes; typo; fixed by the data
        with pytest.raises(ConfigError, match=f"cannot sweep '{bad}'"):
            parse_values(bad, ["1"])


def test_bad_values_are_rejected_before_any_compute(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(ConfigError, match="aux_logits \\(m\\) = 0"):
        run_sweep("aux_logits", [3, 0], TINY, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="repeated values"):
        run_sweep("aux_logits", [3, 3], TINY, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="no values"):
        run_sweep("aux_logits", [], TINY, out_dir=tmp_path)
    for one in (3, "kl"):  # one value, not a list of them (a string's letters are no values either)
        with pytest.raises(ConfigError, match=f"values = {one!r} is invalid: give a sequence of values"):
            run_sweep("aux_logits" if one == 3 else "loss", one, TINY, out_dir=tmp_path)
    assert main(["sweep", "bogus", "1", "--out", str(tmp_path)]) == 2
    # the kind of the start's noise changes nothing without noise: a sweep of identical experiments
    with pytest.raises(ConfigError, match="init_noise = 0"):
        run_sweep("init_noise_kind", ["isotropic", "orthogonal"], TINY, out_dir=tmp_path)
    assert main(["sweep", "init_noise_kind", "isotropic", "orthogonal", "--out", str(tmp_path)]) == 2
    assert not list(tmp_path.iterdir())


@pytest.mark.filterwarnings("ignore::subliminal_mlp.SettingWarning")  # m = 1: aux students that never move (test_engine)
def test_shape_changing_sweep_matches_single_runs_and_writes_its_files(mnist, tmp_path):
    s = run_sweep("aux_logits", [1, 4], TINY, out_dir=tmp_path, datasets={"mnist": mnist}, progress=False,
                  log=lambda _: None)
    assert s["values"] == [1, 4] and set(s["models"]) == set(MODELS)
    on_disk = read_sweep(tmp_path / "sweep_aux_logits.json")
    assert on_disk["models"] == s["models"]
    assert s["value_files"] == [f"aux_logits/{config_key('aux_logits', TINY)}/aux_logits={v}.json" for v in (1, 4)]
    assert s["health"] == [read_results(tmp_path / f)["health"] for f in s["value_files"]] and s["health"][0]["ok"]
    for v, file in zip((1, 4), s["value_files"]):
        rec = read_results(tmp_path / file)
        direct = run_experiment(TINY.replace(aux_logits=v), mnist).accuracies
        np.testing.assert_array_equal(np.asarray([rec["models"][m]["accuracies"] for m in MODELS]).T, direct)
    rows = (tmp_path / "sweep_aux_logits.csv").read_text().splitlines()
    assert rows[0] == "param,value,model,mean,ci95,n_runs" and len(rows) == 1 + 2 * 6
    assert (tmp_path / "sweep_aux_logits.png").stat().st_size > 10_000


def test_shape_preserving_sweep_runs_as_one_program_with_the_same_numbers(mnist, tmp_path):
    s = run_sweep("learning_rate", [1e-3, 3e-3], TINY, out_dir=tmp_path, datasets={"mnist": mnist},
                  progress=False, log=lambda _: None)
    for j, lr in enumerate([1e-3, 3e-3]):
        rec = read_results(tmp_path / s["value_files"][j])
        assert rec["environment"]["values_in_program"] == 2
        if j == 0:  # the second value, against its own run, shows that each value is its own (one program less)
            continue
        direct = run_experiment(TINY.replace(learning_rate=lr), mnist).accuracies
        got = np.asarray([rec["models"][m]["accuracies"] for m in MODELS]).T
        np.testing.assert_allclose(got, direct, atol=2e-3)  # traced vs constant lr: same maths, float rounding
        assert s["models"]["teacher"]["mean"][j] == pytest.approx(direct[:, 1].mean(), abs=2e-3)
    first, second = (read_results(tmp_path / f)["models"]["student_all"]["accuracies"] for f in s["value_files"])
    assert first != second  # and the first value is not the second's
    seeds = run_sweep("seed", [0, 5], TINY, out_dir=tmp_path, datasets={"mnist": mnist}, progress=False,
                      log=lambda _: None)
    np.testing.assert_array_equal(
        np.asarray(read_results(tmp_path / seeds["value_files"][1])["models"]["teacher"]["accuracies"]),
        run_experiment(TINY.replace(seed=5), mnist).accuracies[:, 1])
    assert seeds["labels"] == ["0", "5"]


@pytest.mark.filterwarnings("ignore::subliminal_mlp.SettingWarning")  # m = 1: aux students that never move (test_engine)
def test_an_interrupted_sweep_resumes_from_the_finished_values(mnist, tmp_path, monkeypatch):
    calls = []
    real = sweep_mod.run_experiment

    def flaky(cfg, *a, **k):
        calls.append(cfg.aux_logits)
        if cfg.aux_logits == 2:
            raise KeyboardInterrupt
        return real(cfg, *a, **k)

    monkeypatch.setattr(sweep_mod, "run_experiment", flaky)
    logged = []
    kw = dict(out_dir=tmp_path, datasets={"mnist": mnist}, progress=False, log=logged.append)
    with pytest.raises(KeyboardInterrupt):
        run_sweep("aux_logits", [1, 2], TINY, **kw)
    mine = tmp_path / "aux_logits" / config_key("aux_logits", TINY)
    assert (mine / "aux_logits=1.json").exists()
    assert not (mine / "aux_logits=2.json").exists()
    assert not [p for p in mine.iterdir() if p.name.startswith(".")]
    calls.clear()
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda cfg, *a, **k: (calls.append(cfg.aux_logits),
                                                                              real(cfg, *a, **k))[1])
    s = run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [2] and s["values"] == [1, 2]
    finished = {p.name: p.read_bytes() for p in mine.iterdir()}
    # A changed base config is not mistaken for a finished value, and does not overwrite the finished ones:
    # its records go to their own directory, the summary of the first sweep moves beside its records.
    calls.clear()
    logged.clear()
    other = run_sweep("aux_logits", [1], TINY.replace(seed=3), **kw)
    assert calls == [1]
    theirs = tmp_path / "aux_logits" / config_key("aux_logits", TINY.replace(seed=3))
    assert theirs != mine and (theirs / "aux_logits=1.json").exists()
    assert {p.name: p.read_bytes() for p in mine.iterdir() if not p.name.startswith("sweep_")} == finished
    assert read_sweep(mine / "sweep_aux_logits.json")["base_config"] == TINY.to_dict()
    assert (mine / "sweep_aux_logits.png").exists() and (mine / "sweep_aux_logits.csv").exists()
    assert read_sweep(tmp_path / "sweep_aux_logits.json")["base_config"] == other["base_config"]
    assert any("other settings: moved" in line and str(mine) in line for line in logged), logged
    # Going back to the first settings resumes from its records (nothing recomputed).
    calls.clear()
    s = run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [] and read_sweep(tmp_path / "sweep_aux_logits.json")["base_config"] == TINY.to_dict()
    # ... unless another version of the library wrote a record: that value is computed again.
    monkeypatch.setattr(sweep_mod, "library_version", lambda: "9.9.9")
    logged.clear()
    run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [1, 2] and any("written by subliminal-mlp" in line and "this is 9.9.9" in line for line in logged)
    monkeypatch.undo()
    calls.clear()
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda cfg, *a, **k: (calls.append(cfg.aux_logits),
                                                                              real(cfg, *a, **k))[1])
    # Records of the layout before the configuration key (<param>/<param>=<value>.json) are resumed from too.
    for name in ("aux_logits=1.json", "aux_logits=2.json"):
        (mine / name).rename(tmp_path / "aux_logits" / name)
    s = run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [] and s["value_files"] == ["aux_logits/aux_logits=1.json", "aux_logits/aux_logits=2.json"]
    # ... also when they (and their summary) were written before the fields added since (init_noise ...): those
    # ran at the fields' defaults. Nothing recomputed, no summary set aside as another configuration's.
    import json

    for path in [*(tmp_path / "aux_logits").glob("aux_logits=*.json"), tmp_path / "sweep_aux_logits.json"]:
        rec = json.loads(path.read_text())
        for config in (rec.get("config"), rec.get("base_config")):
            for field in ("init_noise", "init_noise_kind"):
                (config or {}).pop(field, None)
        path.write_text(json.dumps(rec))
    logged.clear()
    s = run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [] and s["value_files"] == ["aux_logits/aux_logits=1.json", "aux_logits/aux_logits=2.json"]
    assert not any("moved" in line for line in logged), logged
    # ... and from another key's directory (a field added to Config later changes the key of the same settings).
    elsewhere = tmp_path / "aux_logits" / "0123456789"
    elsewhere.mkdir()
    for name in ("aux_logits=1.json", "aux_logits=2.json"):
        (tmp_path / "aux_logits" / name).rename(elsewhere / name)
    s = run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [] and s["value_files"] == [f"aux_logits/0123456789/aux_logits={v}.json" for v in (1, 2)]
    # An unreadable record in yet another key's directory, searched first, is another configuration's: skipped, and
    # the good one found after it (not "its record cannot be used", and nothing recomputed).
    damaged = tmp_path / "aux_logits" / "0000000000"
    damaged.mkdir()
    (damaged / "aux_logits=1.json").write_text("{ not json")
    logged.clear()
    s = run_sweep("aux_logits", [1, 2], TINY, **kw)
    assert calls == [] and s["value_files"][0] == "aux_logits/0123456789/aux_logits=1.json"
    assert not any("recomputing" in line for line in logged), logged


def test_a_diverged_sweep_value_is_flagged_and_fail_stops_before_the_summary(mnist, tmp_path, monkeypatch):
    from subliminal_mlp.report.plotting import plt
    from subliminal_mlp.core.results import DivergenceError, DivergenceWarning

    kw = dict(out_dir=tmp_path, datasets={"mnist": mnist}, progress=False, log=lambda _: None)
    with pytest.warns(DivergenceWarning, match="learning_rate = 1e\\+37"):
        s = run_sweep("learning_rate", [1e37], TINY, **kw)
    assert not s["health"][0]["ok"] and np.isnan(s["models"]["teacher"]["mean"][0])
    rec = read_results(tmp_path / s["value_files"][0])
    assert rec["health"] == s["health"][0] and [0, "teacher"] in rec["health"]["nonfinite"]
    texts = []
    monkeypatch.setattr(plt.Figure, "text", lambda self, *a, **k: texts.append(a[2]))
    sweep_mod.write_sweep(s, tmp_path / "again")
    assert any("WARNING: diverged runs at learning_rate = 1e+37" in t for t in texts)
    # Resumed from its record, a diverged value fails the sweep under on_divergence="fail": no summary.
    (tmp_path / "sweep_learning_rate.json").unlink()
    monkeypatch.setattr(sweep_mod, "run_traced_sweep", lambda *a, **k: pytest.fail("recomputed"))
    with pytest.raises(DivergenceError, match="learning_rate = 1e\\+37"):
        run_sweep("learning_rate", [1e37], TINY, on_divergence="fail", **kw)
    assert not (tmp_path / "sweep_learning_rate.json").exists()


def test_every_published_sweep_has_its_script_and_valid_settings():
    from pathlib import Path

    experiments = Path(__file__).resolve().parents[1] / "experiments"
    for name, (field, values, changes, finding) in sweep_mod.PUBLISHED_SWEEPS.items():
        script = experiments / f"sweep_{name}.py"
        assert script.is_file() and f'published_sweep_main("{name}"' in script.read_text(), name
        base = Config(**changes)
        for v in parse_values(field, values):
            base.replace(**{field: v})  # raises ConfigError if a published value is invalid
        assert finding


def _fake_value_record(accs, n_runs, health=None, data=None):
    """A Figure-10 value record with the given per-model accuracies (``accs``: model -> list)."""
    return {"models": {m: {"accuracies": list(accs[m])} for m in MODELS}, "n_runs": n_runs,
            "config": TINY.to_dict(), "data": data or {"dataset": "mnist"}, "health": health}


def test_the_summary_is_each_values_mean_and_ci_by_hand(tmp_path):
    # Distinct numbers per value and model, and runs of unequal length: any mixed-up index shows.
    rng = np.random.default_rng(0)
    accs = [{m: rng.uniform(0, 1, n).round(4).tolist() for m in MODELS} for n in (3, 4)]
    records = [_fake_value_record(a, len(a["teacher"]), health={"ok": k == 0}) for k, a in enumerate(accs)]
    s = sweep_mod.sweep_record("aux_logits", [1, 4], TINY, records, ["a.json", "b.json"])
    assert s["n_runs"] == [3, 4] and s["chance"] == pytest.approx(0.1) and s["labels"] == ["1", "4"]
    assert s["health"] == [{"ok": True}, {"ok": False}] and s["data"] == {"dataset": "mnist"}
    for m in MODELS:
        for j, a in enumerate(accs):
            v = np.asarray(a[m])
            assert s["models"][m]["mean"][j] == pytest.approx(v.mean(), abs=1e-12)
            assert s["models"][m]["ci95"][j] == pytest.approx(1.96 * v.std(ddof=1) / np.sqrt(v.size), abs=1e-12)
    # The CSV and the table carry the same numbers, row (value, model).
    sweep_mod.write_sweep(s, tmp_path)
    rows = [r.split(",") for r in (tmp_path / "sweep_aux_logits.csv").read_text().splitlines()[1:]]
    assert len(rows) == 2 * len(MODELS)
    for (param, label, model, mean, ci, n), (j, m) in zip(rows, [(j, m) for j in range(2) for m in MODELS]):
        v = np.asarray(accs[j][m])
        assert (param, label, model, int(n)) == ("aux_logits", ["1", "4"][j], m, v.size)
        assert float(mean) == pytest.approx(v.mean(), abs=1e-6)
        assert float(ci) == pytest.approx(1.96 * v.std(ddof=1) / np.sqrt(v.size), abs=1e-6)
    table = sweep_mod.format_sweep_table(s).splitlines()
    assert table[0].split() == ["aux_logits", *MODELS, "runs"]
    cells = [[f"{np.mean(accs[1][m]):.4f}", "±", f"{1.96 * np.std(accs[1][m], ddof=1) / np.sqrt(4):.4f}"]
             for m in MODELS]
    assert table[3].split() == ["4", *sum(cells, []), "4"]
    # Value records of different data keep each one's data.
    other = [_fake_value_record(accs[0], 3, data={"dataset": "mnist", "inputs": {"dataset": "fashion-mnist"}}),
             records[1]]
    d = sweep_mod.sweep_record("aux_logits", [1, 4], TINY, other, ["a.json", "b.json"])["data"]
    assert d["dataset"] == "mnist" and d["per_value"] == [other[0]["data"], records[1]["data"]]


def test_the_config_key_ignores_only_the_swept_field():
    assert config_key("aux_logits", TINY) == config_key("aux_logits", TINY.replace(aux_logits=7))
    assert config_key("aux_logits", TINY) == config_key("aux_logits", TINY.to_dict())
    assert config_key("aux_logits", TINY) != config_key("aux_logits", TINY.replace(seed=1))
    assert config_key("seed", TINY) != config_key("seed", TINY.replace(aux_logits=7))
    assert parse_values("hidden_widths", ["512x512"]) == [(512, 512)]


def _fake_traced_sweep(monkeypatch) -> list:
    """Replace the sweep's one-program run by accuracies that name the value they were computed for (no plot: the
    numbers are what is checked); returns the list of the values each call was asked for."""
    from subliminal_mlp.studies.figure10 import ExperimentResult

    asked = []

    def fake(cfg, data, field, values, **k):
        asked.append(list(values))
        return [ExperimentResult(config=cfg.replace(**{field: v}),
                                 accuracies=np.tile(v * 100 + 0.1 * np.arange(6), (cfg.n_runs, 1)), compile_s=0.0,
                                 run_s=0.0, devices=["cpu"], run_batch=1, values_in_program=len(values),
                                 finite=np.ones((cfg.n_runs, 6), bool)) for v in values]

    monkeypatch.setattr(sweep_mod, "run_traced_sweep", fake)
    monkeypatch.setattr(sweep_mod, "write_sweep", lambda s, out: {})
    return asked


def test_a_sweep_resumes_only_records_made_on_the_same_data(tmp_path, monkeypatch, mnist, data_root, fake_dataset):
    """A value's record is resumed when its data are this sweep's: the files (loaded, or given as loaded) by their
    checksums, arrays of one's own (a relabelled MNIST) by their fingerprints; the students' images too."""
    import dataclasses

    asked = _fake_traced_sweep(monkeypatch)
    logged = []
    values = [1e-3, 2e-3]

    def sweep(base=TINY, **datasets):
        logged.clear()
        s = run_sweep("learning_rate", values, base, out_dir=tmp_path, data_dir=data_root, datasets=datasets,
                      progress=False, log=logged.append)
        return [read_results(tmp_path / f)["data"] for f in s["value_files"]]

    files = sweep(mnist=mnist)
    assert asked == [values] and all("sha256" in d and "arrays" not in d for d in files)
    assert sweep() == files and asked == [values]  # loaded from data_dir: the same files (resumed, nothing loaded)
    assert logged[0] == "resuming: 2 of 2 values already done (0.001, 0.002)"
    relabelled = dataclasses.replace(mnist, test_labels=(mnist.test_labels + 1) % 10)
    own = sweep(mnist=relabelled)
    assert asked == [values] * 2 and all(d["arrays"] and d["derived_from"]["sha256"] == mnist.checksums for d in own)
    assert logged[0].startswith("recomputing learning_rate = 0.001: its record ") and "other data" in logged[0]
    # Equal arrays in other objects: the same fingerprints, resumed; the files again: recomputed.
    assert sweep(mnist=dataclasses.replace(mnist, test_labels=np.array(relabelled.test_labels))) == own
    assert asked == [values] * 2
    assert sweep(mnist=mnist) == files and asked == [values] * 3
    # The students' images (Fashion-MNIST's): another pool's records are not this sweep's.
    base = TINY.replace(student_inputs="fashion-mnist")
    pool = fake_dataset(4096, name="fashion-mnist")
    first = sweep(base, mnist=mnist, **{"fashion-mnist": pool})
    assert asked == [values] * 4 and first[0]["inputs"]["arrays"]["train_images"].startswith("array[4096, 784]")
    assert sweep(base, mnist=mnist, **{"fashion-mnist": fake_dataset(4096, name="fashion-mnist")}) == first
    assert asked == [values] * 4
    other = sweep(base, mnist=mnist, **{"fashion-mnist": fake_dataset(4095, name="fashion-mnist")})
    assert asked == [values] * 5 and other[0]["inputs"] != first[0]["inputs"] and other[0]["sha256"]


def test_numpy_values_are_taken_as_the_configs_hold_them(tmp_path, monkeypatch, fake_dataset):
    # np.array([1, 2]) gave int64 values: the summary (JSON) failed after every value was computed.
    import json

    asked = _fake_traced_sweep(monkeypatch)
    s = run_sweep("seed", np.array([1, 2]), TINY, out_dir=tmp_path, datasets={"mnist": fake_dataset(4096)},
                  progress=False, log=lambda _: None)
    assert asked == [[1, 2]] and all(type(v) is int for v in asked[0])
    assert s["values"] == [1, 2] and all(type(v) is int for v in s["values"]) and s["labels"] == ["1", "2"]
    assert json.loads(json.dumps(s["values"])) == [1, 2]


def test_a_resumed_traced_sweep_computes_only_the_missing_values_with_their_own_numbers(tmp_path, monkeypatch, fake_dataset):
    asked = _fake_traced_sweep(monkeypatch)
    kw = dict(out_dir=tmp_path, datasets={"mnist": fake_dataset(4096)}, progress=False, log=lambda _: None)
    run_sweep("learning_rate", [1e-3], TINY, **kw)
    s = run_sweep("learning_rate", [1e-3, 2e-3, 5e-3], TINY, **kw)
    assert asked == [[1e-3], [2e-3, 5e-3]]
    assert s["models"]["teacher"]["mean"] == pytest.approx([0.2, 0.3, 0.6])
    for f, v in zip(s["value_files"], (1e-3, 2e-3, 5e-3)):
        rec = read_results(tmp_path / f)
        assert rec["config"]["learning_rate"] == v
        assert rec["models"]["student_aux"]["accuracies"] == pytest.approx([v * 100 + 0.2] * 2)


def test_the_published_sweep_scripts_run_their_settings(tmp_path, monkeypatch):
    got = {}
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda field, values, base, **k: got.update(
        field=field, values=values, base=base, **k))
    sweep_mod.published_sweep_main("depth_mse", tmp_path, ["--seeds", "3"])
    assert got["field"] == "hidden_widths" and got["values"] == [(256,), (256, 256), (256, 256, 256), (256,) * 4]
    assert got["base"] == Config(n_runs=3, loss="mse") and got["out_dir"] == str(tmp_path / "depth_mse")
    sweep_mod.published_sweep_main("init_noise_orthogonal", tmp_path, [])
    assert got["base"] == Config(n_runs=10, init_noise_kind="orthogonal")
    # protocol.md §1: Jiang et al.'s σ ∈ {0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0}, beside σ = 0
    assert got["values"] == [0.0, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]
    assert sweep_mod.PUBLISHED_SWEEPS["init_noise"][1] == sweep_mod.PUBLISHED_SWEEPS["init_noise_orthogonal"][1]


def test_too_few_fashion_images_for_any_value_are_refused_before_any_compute(tmp_path, monkeypatch, fake_dataset):
    # The first value fits MNIST's training images but not the 2,048 Fashion-MNIST images of the students.
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda *a, **k: pytest.fail("computed"))
    datasets = {"mnist": fake_dataset(4096), "fashion-mnist": fake_dataset(2048, name="fashion-mnist")}
    base = TINY.replace(student_inputs="fashion-mnist", n_noise=2048)
    with pytest.raises(ConfigError, match="n_noise = 3000 is larger than the 2048 Fashion-MNIST images"):
        run_sweep("n_noise", [2048, 3000], base, out_dir=tmp_path, datasets=datasets, progress=False,
                  log=lambda _: None)
    assert not list(tmp_path.iterdir())


def test_runs_is_another_name_for_seeds_in_every_parser(tmp_path, monkeypatch):
    """``--runs N`` is ``--seeds N`` for the main commands, the study scripts (script_parser) and the published
    sweep scripts (published_sweep_main), as the examples call it."""
    from subliminal_mlp.cli import build_parser, script_parser

    for cmd in (["reproduce"], ["sweep", "learning_rate", "1e-3"]):
        assert build_parser().parse_args(cmd + ["--runs", "3"]).seeds == 3
        assert build_parser().parse_args(cmd + ["--seeds", "4"]).seeds == 4
    assert script_parser("doc", tmp_path, seeds=7).parse_args(["--runs", "2"]).seeds == 2
    got = {}
    monkeypatch.setattr(sweep_mod, "run_sweep", lambda field, values, base, **k: got.update(base=base))
    sweep_mod.published_sweep_main("depth_mse", tmp_path, ["--runs", "3"])
    assert got["base"] == Config(n_runs=3, loss="mse")


def test_bytes_are_no_sequence_of_values_and_a_numpy_array_is_one(tmp_path, monkeypatch):
    """``values=b"\\x03"`` would sweep aux_logits over [3] (bytes' items are ints): refused like a string. A numpy
    array of values is a sequence: it gets past the check (to the first value's checks)."""
    monkeypatch.setattr(sweep_mod, "run_experiment", lambda *a, **k: pytest.fail("computed"))
    monkeypatch.setattr(sweep_mod, "run_traced_sweep", lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(ConfigError, match=r"values = b'\\x03' is invalid: give a sequence of values of aux_logits"):
        run_sweep("aux_logits", b"\x03", TINY, out_dir=tmp_path)
    with pytest.raises(ConfigError, match="repeat"):  # past the sequence check: the values' own checks
        run_sweep("aux_logits", np.array([3, 3]), TINY, out_dir=tmp_path)


def test_a_dataset_given_under_another_datasets_name_is_refused_before_any_compute(tmp_path, monkeypatch, fake_dataset):
    # Its records would say "fashion-mnist" beside MNIST's checksums.
    for name in ("run_traced_sweep", "run_experiment"):  # refused before the first value, not by its own run
        monkeypatch.setattr(sweep_mod, name, lambda *a, **k: pytest.fail("computed"))
    with pytest.raises(ConfigError, match="dataset = 'fashion-mnist' but the data given are 'mnist'"):
        run_sweep("aux_logits", [1, 3], TINY.replace(dataset="fashion-mnist"), out_dir=tmp_path, progress=False,
                  datasets={"fashion-mnist": fake_dataset(4096)}, log=lambda _: None)


def test_only_process_0_draws_the_bar_over_the_values(monkeypatch, tmp_path, mnist):
    # Under jax.distributed every process runs the sweep; the bar over its values is process 0's alone, as every
    # other bar is (process 1 drew it too).
    import tqdm.auto

    drawn = []
    real_tqdm = tqdm.auto.tqdm
    monkeypatch.setattr(tqdm.auto, "tqdm", lambda it, **k: (drawn.append(not k["disable"]), real_tqdm(it, **k))[1])

    def stop(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_mod, "run_experiment", stop)  # the bar is made before the first value runs
    for is_main in (True, False):
        monkeypatch.setattr(sweep_mod, "is_main_process", lambda is_main=is_main: is_main)
        with pytest.raises(KeyboardInterrupt):
            run_sweep("aux_logits", [1, 2], TINY, out_dir=tmp_path / str(is_main), datasets={"mnist": mnist},
                      progress=True, log=lambda s: None)
    assert drawn == [True, False]
