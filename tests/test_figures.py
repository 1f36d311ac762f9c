"""``subliminal-mlp figures``: resumes after an interruption, skips what is up to date, ``--force``
redoes, ``--list`` reads the committed records; and the real pipeline on a tiny configuration
(``--quick``), whose later experiments read the first one's teachers from the cache."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import jax
import pytest

import subliminal_mlp as sm
from subliminal_mlp import cli
from subliminal_mlp.cli import figures
from subliminal_mlp.core.config import ConfigError
from subliminal_mlp.cli.figures import Figure, read_state, run_figures
from subliminal_mlp.core.results import envelope, read_results, register_format, sweep_value_paths, write_record

FORMAT = "subliminal-mlp/test-figure"
register_format(FORMAT, 1)


class Calls:
    def __init__(self):
        self.made: list[str] = []
        self.fail: set[str] = set()  # makers that raise (after writing their JSON, before their PNG)


def fake(name: str, calls: Calls) -> Figure:
    """A figure whose settings are ``{"x": ...}`` and whose maker writes a JSON record and a 'PNG'."""

    def make(s, out, ctx):
        calls.made.append(name)
        write_record(envelope(FORMAT, {"x": s["x"]}, n_runs=1, seed=0, data={}), out, name)
        if name in calls.fail:
            raise RuntimeError(f"{name} interrupted")
        (out / f"{name}.png").write_text(f"png of x = {s['x']}")

    return Figure(name, (f"{name}.json", f"{name}.png"), settings=lambda r: {"x": r["config"]["x"]},
                  defaults=lambda: {"x": 0}, make=make, quick=lambda s, q: {"x": -q["n_runs"]},
                  command=lambda s: f"make {name} --x {s['x']}", runs=lambda s: 1, datasets=lambda s: ())


@pytest.fixture
def setup(tmp_path):
    calls = Calls()
    registry = {n: fake(n, calls) for n in ("first", "second", "third")}
    src, out = tmp_path / "committed", tmp_path / "out"
    for n, x in (("first", 1), ("second", 2), ("third", 3)):
        write_record(envelope(FORMAT, {"x": x}, n_runs=1, seed=0, data={}), src, n)

    def run(names=(), **kw):
        return run_figures(names, out=out, source=src, registry=registry, teacher_cache=False, progress=False,
                           log=lambda s: None, **kw)

    return calls, registry, src, out, run


def test_an_interrupted_pipeline_resumes_where_it_stopped(setup):
    calls, _, _, out, run = setup
    calls.fail = {"second"}
    with pytest.raises(RuntimeError, match="second interrupted"):
        run()
    assert calls.made == ["first", "second"]
    state = read_state(out)
    assert state["first"]["status"] == "done" and state["second"]["status"] == "interrupted"
    calls.fail, calls.made = set(), []
    assert run() == {"first": "skipped", "second": "made", "third": "made"}
    assert calls.made == ["second", "third"]
    record = read_results(out / "second.json")
    assert record["config"] == {"x": 2} and record["pipeline"]["quick"] is False
    assert record["pipeline"]["settings_from"].endswith("second.json")
    assert (out / "second.png").read_text() == "png of x = 2"


class Holding:
    """Another process holding the lock of figure ``name`` in ``out`` (as a pipeline making it does), until closed."""

    def __init__(self, out: Path, name: str):
        import subprocess
        import sys

        code = ("import sys, time; from pathlib import Path; from subliminal_mlp.cli import figures\n"
                "with figures._lock(Path(sys.argv[1]), sys.argv[2], wait=False) as got:\n"
                "    print(got, flush=True); time.sleep(120)\n")
        self.proc = subprocess.Popen([sys.executable, "-c", code, str(out), name], stdout=subprocess.PIPE, text=True)
        self.pid = self.proc.pid
        if self.proc.stdout.readline().strip() != "True":  # it holds the lock now, or it is of no use
            self.kill()
            pytest.fail(f"the other process could not take the lock of {name}")

    def kill(self):  # SIGKILL: no finally, no atexit; the kernel releases the lock
        self.proc.kill()
        self.proc.wait()
        self.proc.stdout.close()


def test_a_figure_being_made_by_a_live_process_is_not_called_interrupted(setup):
    import socket

    calls, registry, _, out, run = setup
    run()
    state = read_state(out)
    state["second"] = {"status": "running", "settings": {"x": 2}, "pid": 1, "host": "elsewhere"}
    figures._write_state(out, state)
    other = Holding(out, "second")  # another pipeline, still making "second"
    try:
        being_made = f"being made now (pid {other.pid} on {socket.gethostname()})"
        assert figures.figure_status(registry["second"], out, {"x": 2}, state) == (False, being_made)
        calls.made = []
        with pytest.raises(ConfigError, match=f"figure second is being made now \\(pid {other.pid} .*wait for that"):
            run()
        assert calls.made == []  # first is up to date: skipped; second not made under the other
    finally:
        other.kill()  # killed: its lock goes with it
    assert figures.figure_status(registry["second"], out, {"x": 2}, state) == (False, "interrupted")
    calls.made = []
    run()
    assert calls.made == ["second"]
    # A figure made for the first time is guarded too (its outputs and its state entry do not exist yet).
    fourth = dataclasses.replace(registry["third"], name="fourth", outputs=("fourth.json", "fourth.png"))
    other = Holding(out, "fourth")
    try:
        assert figures.figure_status(fourth, out, {"x": 3}, read_state(out))[1].startswith("being made now (pid")
    finally:
        other.kill()
    assert figures.figure_status(fourth, out, {"x": 3}, read_state(out)) == (False, "missing fourth.json, fourth.png")


def test_a_pipeline_holds_the_figures_lock_while_it_makes_it(setup):
    """Seen from another process while ``make`` runs: the figure is being made, by this pid; after it, not."""
    import os
    import socket
    import subprocess
    import sys

    calls, registry, _, out, run = setup
    seen = []
    code = ("import sys; from pathlib import Path; from subliminal_mlp.cli import figures\n"
            "print(figures._being_made(Path(sys.argv[1]), sys.argv[2], None))\n")

    def look(s, o, ctx):
        seen.append(subprocess.run([sys.executable, "-c", code, str(o), "first"], capture_output=True, text=True,
                                   check=True).stdout.strip())
        write_record(envelope(FORMAT, {"x": s["x"]}, n_runs=1, seed=0, data={}), o, "first")
        (o / "first.png").write_text("png")

    registry["first"] = dataclasses.replace(registry["first"], make=look)
    assert run(["first"]) == {"first": "made"}
    assert seen == [f"pid {os.getpid()} on {socket.gethostname()}"]
    assert figures._being_made(out, "first", None) is None


def test_a_lock_held_elsewhere_is_never_made_under_even_if_its_holder_lets_go_before_it_is_asked(setup, monkeypatch):
    """The lock could not be taken: the figure is not made, whatever a second look finds (here: nothing, as when
    the holder lets go between the two)."""
    calls, registry, _, out, run = setup
    run()
    calls.made = []
    other = Holding(out, "second")
    try:
        monkeypatch.setattr(figures, "_being_made", lambda *a: None)
        with pytest.raises(ConfigError, match="figure second is being made now \\(by another pipeline\\)"):
            run(force=True)
    finally:
        other.kill()
    assert calls.made == ["first"]  # forced, and its lock free; second not made without its lock


def test_a_running_mark_whose_pid_lives_on_in_another_process_is_no_pipeline(setup):
    """The pid in a ``running`` entry may be a process that is no pipeline (the pipeline was killed and the pid
    reused; here: this test's parent): only the figure's lock says a figure is being made."""
    import os
    import socket

    _, registry, _, out, run = setup
    run()
    state = {**read_state(out), "second": {"status": "running", "pid": os.getppid(), "host": socket.gethostname()}}
    figures._write_state(out, state)
    assert figures.figure_status(registry["second"], out, {"x": 2}, state) == (False, "interrupted")
    assert run() == {"first": "skipped", "second": "made", "third": "skipped"}


def test_without_flock_a_running_mark_of_a_live_pid_is_a_figure_being_made(setup, monkeypatch):
    """Where there is no ``flock`` (not POSIX), the pid of the ``running`` entry tells: alive on this host, being
    made now (the advice then says to remove a stale entry); dead, interrupted."""
    import socket
    import subprocess

    calls, registry, _, out, run = setup
    run()
    monkeypatch.setattr(figures, "fcntl", None)
    other = subprocess.Popen(["sleep", "60"])
    try:
        state = {**read_state(out), "second": {"status": "running", "settings": {"x": 2}, "pid": other.pid,
                                               "host": socket.gethostname()}}
        figures._write_state(out, state)
        assert figures.figure_status(registry["second"], out, {"x": 2}, state) == (
            False, f"being made now (pid {other.pid} on {socket.gethostname()})")
        with pytest.raises(ConfigError, match="wait for that pipeline to finish \\(if that pid is no longer a "
                                              "pipeline, remove its entry from"):
            run()
    finally:
        other.kill()
        other.wait()
    assert figures.figure_status(registry["second"], out, {"x": 2}, state) == (False, "interrupted")
    calls.made = []
    run()
    assert calls.made == ["second"]


def test_two_pipelines_updating_one_state_file_lose_no_entry(tmp_path):
    """The state file is read, changed and written under its lock: two processes, each adding its own entries
    one by one as fast as they can, keep every entry of the other (without the lock, most are lost)."""
    import subprocess
    import sys

    code = ("import sys; from pathlib import Path; from subliminal_mlp.cli import figures\n"
            "for i in range(150):\n"
            "    figures._update_state(Path(sys.argv[1]), lambda s: s.update({f'{sys.argv[2]}{i}': {'status': 'done'}}))\n")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path), who]) for who in "ab"]
    assert [p.wait() for p in procs] == [0, 0]
    assert sorted(read_state(tmp_path)) == sorted(f"{w}{i}" for w in "ab" for i in range(150))


def test_a_pipeline_that_fails_in_a_live_process_does_not_block_others(setup):
    # An error (or Ctrl-C) inside a figure marks it interrupted: the process may live on (a notebook).
    calls, registry, _, out, run = setup
    calls.fail = {"second"}
    with pytest.raises(RuntimeError):
        run()
    assert read_state(out)["second"]["status"] == "interrupted" and "pid" not in read_state(out)["second"]
    calls.fail, calls.made = set(), []
    assert run() == {"first": "skipped", "second": "made", "third": "made"}


def test_figures_are_made_in_the_registry_order_and_records_name_the_command(setup):
    # One that reads others comes after them, whatever the order of the names given.
    calls, _, src, out, run = setup
    run(["third", "first"], quick=True)
    assert calls.made == ["first", "third"]
    assert read_results(out / "third.json")["pipeline"]["command"] == (
        f"subliminal-mlp figures third --quick --out {out} --from {src}")


def test_an_interruption_inside_a_figure_is_not_taken_for_done(setup):
    calls, _, _, out, run = setup
    run()
    calls.fail, calls.made = {"second"}, []
    with pytest.raises(RuntimeError):
        run(["second"], force=True)  # its JSON is new, its PNG is the old one
    calls.fail, calls.made = set(), []
    run()
    assert calls.made == ["second"]


def test_up_to_date_figures_are_skipped_force_redoes_and_changes_remake(setup, monkeypatch):
    calls, _, src, out, run = setup
    assert set(run().values()) == {"made"}
    calls.made = []
    assert set(run().values()) == {"skipped"} and calls.made == []
    assert set(run(force=True).values()) == {"made"} and calls.made == ["first", "second", "third"]
    calls.made = []
    write_record(envelope(FORMAT, {"x": 30}, n_runs=1, seed=0, data={}), src, "third")  # other settings
    (out / "first.png").write_text("edited by hand")  # changed since the pipeline wrote it
    run()
    assert calls.made == ["first", "third"] and read_results(out / "third.json")["config"] == {"x": 30}
    calls.made = []
    monkeypatch.setattr(figures, "library_version", lambda: "9.9.9")  # another version of the library
    run(["second"])
    assert calls.made == ["second"]


def test_a_figure_made_from_other_records_is_remade_when_they_change(setup, tmp_path):
    # "third" reads "first.json" and the folder "parts/" (as one_step reads the studies' records and sweeps/).
    calls, registry, src, out, run = setup
    registry["third"] = dataclasses.replace(registry["third"], reads=lambda s: ("first.json", "parts"))
    (out / "parts" / "a").mkdir(parents=True)
    (out / "parts" / "a" / "v.json").write_text("{}")
    run()
    reads = read_results(out / "third.json")["pipeline"]["reads"]
    assert set(reads) == {"first.json", "parts"} and all(len(h) == 64 for h in reads.values())
    assert "reads" not in read_results(out / "first.json")["pipeline"]  # it reads nothing
    calls.made = []
    assert set(run().values()) == {"skipped"}
    (out / "parts" / "a" / "v.json").write_text('{"changed": 1}')  # a record in the folder changes
    assert figures.figure_status(registry["third"], out, {"x": 3}, read_state(out)) == (
        False, "parts changed since it was made")
    run(["third"])
    assert calls.made == ["third"]
    calls.made = []
    run(["first"], force=True)  # first.json is rewritten (its pipeline entry's wall time differs)
    assert run() == {"first": "skipped", "second": "skipped", "third": "made"}
    (out / "parts" / "b.json").write_text("{}")  # a new record in the folder
    assert figures.figure_status(registry["third"], out, {"x": 3}, read_state(out))[1] == "parts changed since it was made"


def test_a_checkout_run_without_installing_it_still_skips_what_is_up_to_date(setup, monkeypatch):
    # From a checkout on PYTHONPATH (not pip-installed) the records' environment holds no version of
    # subliminal-mlp: the pipeline must see the same "no version" and not remake every figure.
    from subliminal_mlp.core import results

    real = results.metadata.version

    def version(pkg):
        if pkg == "subliminal-mlp":
            raise results.metadata.PackageNotFoundError(pkg)
        return real(pkg)

    monkeypatch.setattr(results.metadata, "version", version)
    calls, _, _, out, run = setup
    assert set(run().values()) == {"made"}
    assert read_results(out / "first.json")["environment"]["subliminal_mlp"] is None
    calls.made = []
    assert set(run().values()) == {"skipped"} and calls.made == []


def test_quick_never_writes_where_the_settings_come_from(setup):
    calls, _, src, out, run = setup
    with pytest.raises(ConfigError, match="--quick"):
        run_figures(out=src, source=src, registry=setup[1], quick=True, teacher_cache=False, progress=False)
    run(["first"], quick=True)
    record = read_results(out / "first.json")
    assert record["config"] == {"x": -2} and record["pipeline"]["quick"] is True
    with pytest.raises(ConfigError, match="no figure named nope"):
        run(["nope"])


def test_list_reads_the_committed_records(capsys):
    assert cli.main(["figures", "--list"]) == 0
    text = capsys.readouterr().out
    for name in figures.REGISTRY:
        assert name in text
    assert "python experiments/fig10_mnist.py --seeds 100" in text
    rows = figures.list_figures(write=lambda s: None)
    assert {r["name"]: r["runs"] for r in rows}["sweep_aux_logits"] == 80
    assert all(r["settings_from"] != "defaults" and r["wall_s"] > 0 for r in rows)
    # a sweep's wall time is its values' (its summary was rewritten from their records in a second); values run in
    # one program each record that program's time, counted once
    walls = {r["name"]: r["wall_s"] for r in rows}
    assert walls["sweep_loss"] > 60
    summary = figures.FIGURES_DIR / figures.REGISTRY["sweep_temperature"].record
    parts = [read_results(p) for p in sweep_value_paths(read_results(summary), summary)]
    assert {p["environment"]["values_in_program"] for p in parts} == {len(parts)} == {4}
    assert walls["sweep_temperature"] == pytest.approx(sum(p["timing"]["total_s"] for p in parts) / 4)
    # --list --quick lists the quick figures (what `figures --quick` would make), not the committed ones
    quick = {r["name"]: r for r in figures.list_figures(out=Path("/nonexistent"), quick=True, write=lambda s: None)}
    assert quick["sweep_aux_logits"]["runs"] < 80 and "--seeds 100" not in quick["fig10_mnist"]["command"]
    # its command is the one that makes the quick figure, and no full-size wall time is shown for it
    assert quick["fig10_mnist"]["command"] == "subliminal-mlp figures fig10_mnist --quick --out /nonexistent"
    assert all(r["wall_s"] is None for r in quick.values())
    (same,) = figures.list_figures(["fig10_mnist"], quick=True, write=lambda s: None)  # --out defaults to --from
    assert same["command"] == "subliminal-mlp figures fig10_mnist --quick --out DIR"
    # where the settings come from is still the committed record (not where a quick figure would go)
    assert same["settings_from"] == quick["fig10_mnist"]["settings_from"] == {r["name"]: r for r in rows}[
        "fig10_mnist"]["settings_from"]


@pytest.mark.slow
def test_the_real_pipeline_on_a_tiny_configuration_shares_teachers(tmp_path, data_root, capsys):
    out, cache = tmp_path / "figs", tmp_path / "teachers"
    argv = ["figures", "fig10_mnist", "sweep_loss", "--quick", "--out", str(out), "--data-dir", str(data_root),
            "--teacher-cache", str(cache), "--no-progress"]
    assert cli.main(argv) == 0
    fig10 = read_results(out / "fig10_mnist.json")
    sweep = read_results(out / "sweeps/loss/sweep_loss.json")
    assert fig10["n_runs"] == 2 and fig10["config"]["hidden_widths"] == [32] and fig10["pipeline"]["quick"]
    (listed,) = figures.list_figures(["fig10_mnist"], out=out, quick=True, write=lambda s: None)
    assert listed["status"] == "up to date" and 0 < listed["wall_s"] < 600  # the quick run's own wall time
    (full,) = figures.list_figures(["fig10_mnist"], out=out, write=lambda s: None)  # without --quick: says why
    assert full["status"] == "other settings (--quick)"
    assert sweep["labels"] == ["kl", "mse"] and sweep["pipeline"]["quick"]
    kl = json.loads((out / "sweeps/loss" / sweep["value_files"][0]).read_text())
    if jax.default_backend() == "cpu":
        assert fig10["pipeline"]["teacher_cache"]["stored"] == 2
        assert sweep["pipeline"]["teacher_cache"] == {"hits": 4, "misses": 0, "corrupt": 0, "stored": 0}
        # the teachers read from the cache are those Figure 10 trained: the same teacher accuracies
        assert kl["models"]["teacher"]["accuracies"] == fig10["models"]["teacher"]["accuracies"]
        assert kl["models"]["student_aux"]["accuracies"] == fig10["models"]["student_aux"]["accuracies"]
    else:  # run_batch is fitted to the accelerator's memory, so no teacher is cached (engine._teacher_cache_key):
        # each figure trains its own from the same seeds, with a run_batch of its own (rounding may differ)
        assert fig10["pipeline"]["teacher_cache"]["stored"] == 0 == sweep["pipeline"]["teacher_cache"]["hits"]
    capsys.readouterr()
    assert cli.main(argv) == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 2
    assert (out / ".figures-state.json").is_file() and sorted(read_state(out)) == ["fig10_mnist", "sweep_loss"]
    assert Path(out / "fig10_mnist.png").is_file()


def test_every_figures_data_is_found_before_any_figure_is_made_or_anything_written(tmp_path, data_root):
    # A data root with MNIST alone: Figure 10 on MNIST would run first, then the Fashion-MNIST one fail (after
    # hours, at the paper's settings). The pipeline finds and verifies every figure's data first.
    from subliminal_mlp.core.data import DataError

    root = tmp_path / "data"
    root.mkdir()
    (root / "mnist").symlink_to(data_root / "mnist")
    out = tmp_path / "out"
    with pytest.raises(DataError, match="fashion-mnist"):
        run_figures(["fig10_mnist", "fig10_fashion_mnist"], out=out, quick=True, data_dir=root, teacher_cache=False,
                    progress=False, log=lambda s: None)
    assert not out.exists()  # no state file, no lock, no figure
    # Only the figures that will be made: one up to date needs no data; with force it does.
    calls = Calls()
    src = tmp_path / "src"
    write_record(envelope(FORMAT, {"x": 1}, n_runs=1, seed=0, data={}), src, "fashion")
    kw = dict(out=out, source=src, teacher_cache=False, progress=False, log=lambda s: None, data_dir=root)
    assert run_figures(registry={"fashion": fake("fashion", calls)}, **kw) == {"fashion": "made"}  # needs no data
    reg = {"fashion": dataclasses.replace(fake("fashion", calls), datasets=lambda s: ("fashion-mnist",))}
    assert run_figures(registry=reg, **kw) == {"fashion": "skipped"}
    with pytest.raises(DataError, match="fashion-mnist"):
        run_figures(registry=reg, force=True, **kw)
    assert calls.made == ["fashion"]


def test_the_registry_reads_settings_back_and_shrinks_them_as_documented():
    # Each figure's settings, --quick settings and command, against values written out by hand.
    import numpy as np

    from subliminal_mlp.core.config import Config

    reg = figures.REGISTRY
    fashion = reg["fig10_fashion_mnist"].defaults()["config"]
    assert (fashion["dataset"], fashion["n_runs"]) == ("fashion-mnist", 25)
    # a record's own extra settings are read back (the script's defaults only where the record has none)
    heads = reg["head_compatibility"].settings({"config": Config().to_dict(), "sigmas": [0.3], "n_similarity": 7})
    assert (heads["sigmas"], heads["n_similarity"]) == ([0.3], 7)
    assert reg["alignment"].settings({"config": Config().to_dict()})["held_out"] == 256
    # --quick: at most QUICK's runs, epochs and sizes, its hidden layer; the first two values of a sweep, the first of
    # each mitigation list, every width at most 32
    fig10 = reg["fig10_mnist"]
    assert fig10.quick(fig10.defaults(), figures.QUICK)["config"] == Config(
        n_runs=2, teacher_epochs=1, student_epochs=1, n_noise=2048, batch_size=512, hidden_widths=(32,)).to_dict()
    small = {"n_runs": 1, "teacher_epochs": 9, "hidden_widths": [8]}  # a caller's: at most these, the rest kept
    assert fig10.quick(fig10.defaults(), small)["config"] == Config(n_runs=1, hidden_widths=(8,)).to_dict()
    sweep = reg["sweep_aux_logits"]
    assert sweep.quick(sweep.defaults(), figures.QUICK)["labels"] == sweep.defaults()["labels"][:2]
    mit = reg["mitigations"]
    c = mit.quick({"config": {**mit.defaults()["config"], "hidden": [256, 16]}}, figures.QUICK)["config"]
    assert c["hidden"] == [32, 16] and (c["n_runs"], c["teacher_epochs"], c["student_epochs"]) == (2, 1, 1)
    assert (c["liminal_weights"], c["liminal_epochs"], c["weight_decays"], c["sgd_learning_rates"]) == (
        [10.0], [1], [3.0], [0.0003])
    # the theorem figure: the paper's grid of 64 ε from 1e-6 to 1; quick keeps its ends and middle
    thm = reg["theorem_single_step"]
    grid = np.geomspace(1e-6, 1.0, 64)
    np.testing.assert_allclose(thm.defaults()["eps"], grid, rtol=1e-12)
    np.testing.assert_allclose(thm.quick(thm.defaults(), figures.QUICK)["eps"], grid[[0, 32, 63]], rtol=1e-12)
    task = reg["teacher_task"]
    assert task.command(task.defaults()) == (
        "python experiments/teacher_task.py --seeds 10 --classes 2 3 4 5 6 7 8 9 10 --teacher-epochs 1 2 5 10 20 "
        "--student-epochs 1 2 5 10 20 40 --generations 5")
    assert task.quick(task.defaults(), figures.QUICK)["settings"] == {
        "classes": [2, 3], "teacher_epochs": [1, 2], "student_epochs": [1, 2], "generations": 2}
    one = reg["one_step"]
    assert one.reads(one.defaults()) == ("input_families.json", "mitigations.json", "split_heads.json", "sweeps",
                                         "teacher_task.json")
    # the datasets each loads (checked before any figure is made): Fashion-MNIST where a figure's images are its
    both = ("fashion-mnist", "mnist")
    assert {name: fig.datasets(fig.defaults()) for name, fig in reg.items() if fig.datasets(fig.defaults()) != ("mnist",)} \
        == {"fig10_fashion_mnist": ("fashion-mnist",), "traits": both, "sweep_inputs": both, "one_step": both}
    assert one.datasets({"sources": ["teacher_task"], "n_runs": 1}) == ("mnist",)
    assert one.settings({"sources": {"teacher_task": 1, "input_families": 2}, "n_runs": 3}) == {
        "sources": ["input_families", "teacher_task"], "n_runs": 3}


def test_a_figure_whose_check_failed_is_written_and_the_command_exits_1(setup, monkeypatch, capsys):
    calls, registry, _, out, run = setup
    registry["second"] = dataclasses.replace(
        registry["second"], failed=lambda r: f"x = {r['config']['x']} is not 3" if r["config"]["x"] != 3 else None)
    assert run() == {"first": "made", "second": "failed", "third": "made"}  # the pipeline went on after it
    assert (out / "second.png").exists() and read_state(out)["second"]["status"] == "done"
    assert run() == {"first": "skipped", "second": "skipped", "third": "skipped"}  # written: up to date
    # the command: exit status 1 naming the figure, after every figure (the theorem's verdict, as `theorem`'s)
    monkeypatch.setattr(figures, "run_figures", lambda names, **kw: {"fig10_mnist": "made",
                                                                     "theorem_single_step": "failed"})
    assert cli.main(["figures", "--out", str(out), "--no-progress"]) == 1
    assert "the check of theorem_single_step FAILED" in capsys.readouterr().err
    # the theorem figure's check reads its record's verdict: the committed one holds; a failed row is named
    record = json.loads((figures.FIGURES_DIR / "theorem_single_step.json").read_text())
    thm = figures.REGISTRY["theorem_single_step"]
    assert thm.failed(record) is None
    row = record["summary"]["losses"]["mse_aux"][0]
    row.update(ok=False, checks={**row["checks"], "sign": False})
    record["summary"]["ok"] = False
    assert thm.failed(record).startswith("FAIL") and f"mse_aux seed {row['seed']}: dot/ε is negative" in thm.failed(
        record)


def test_the_theorem_figure_builds_the_recorded_model(monkeypatch):
    from types import SimpleNamespace

    from subliminal_mlp.core import results
    from subliminal_mlp.core.models import mlp
    from subliminal_mlp.theory import theorem

    class Stop(Exception):
        pass

    got = {}
    monkeypatch.setattr(results, "data_record", lambda ds: {})
    monkeypatch.setattr(theorem, "run_theorem_check", lambda **kw: (got.update(kw), (_ for _ in ()).throw(Stop()))[1])
    s = figures._theorem_defaults()
    s["config"].update(hidden_widths=[8, 4], aux_logits=2, activation="tanh", alpha=0.5)
    ctx = figures.Context()
    ctx.dataset = lambda name: SimpleNamespace(train_images="images", train_labels="labels")
    with pytest.raises(Stop):
        figures._make_theorem(s, Path("."), ctx)
    assert got["model"] == mlp((8, 4), aux_logits=2, activation="tanh") and got["alpha"] == 0.5
    assert got["eps"] == s["eps"] and got["seeds"] == [0, 1, 2, 3, 4] and got["images"] == "images"


def test_the_figures_command_hands_its_flags_to_the_pipeline(tmp_path, monkeypatch, capsys):
    got = {}
    monkeypatch.setattr(figures, "run_figures", lambda names, **kw: got.update(names=names, **kw) or {})
    assert cli.main(["figures", "fig10_mnist", "demo", "--out", str(tmp_path), "--force", "--no-teacher-cache",
                     "--no-progress", "--quick", "--data-dir", "D"]) == 0
    assert got == {"names": ["fig10_mnist", "demo"], "out": str(tmp_path), "source": None,
                   "force": True, "quick": True, "data_dir": "D", "teacher_cache": False, "progress": False}
    assert cli.main(["figures", "--out", str(tmp_path), "--teacher-cache", str(tmp_path / "t")]) == 0
    assert (got["force"], got["quick"], got["progress"]) == (False, False, True)
    assert Path(got["teacher_cache"].root) == tmp_path / "t"
    # A --from without a figure's record is refused, naming it, before anything is made (the figure would have been
    # made at its script's defaults: Figure 10's 100 runs); one that has it hands it on; --list lists the defaults.
    src = tmp_path / "records"
    src.mkdir()
    got.clear()
    capsys.readouterr()
    assert cli.main(["figures", "fig10_mnist", "demo", "--from", str(src), "--out", str(tmp_path / "o")]) == 2
    assert not got
    assert (f"--from {src} has no record of fig10_mnist.json, demo.json: with --from the settings are read"
            in capsys.readouterr().err)
    import shutil

    shutil.copy(figures.FIGURES_DIR / "demo.json", src)
    assert cli.main(["figures", "demo", "--from", str(src), "--out", str(tmp_path / "o")]) == 0
    assert got["source"] == str(src)
    assert cli.main(["figures", "--list", "fig10_mnist", "--from", str(src)]) == 0


def test_every_committed_figure_is_what_its_committed_record_draws(tmp_path, capsys):
    """``figures --redraw``: each committed PNG redrawn from the JSON beside it, with no compute, is the committed
    PNG byte for byte (with the matplotlib that drew it, which each PNG names; with another one, nearly the same
    pixels); the pipeline's state takes the new PNG, so the figure stays up to date; a record of no drawable
    format, or no record, is refused before any PNG is drawn."""
    import re
    import shutil

    import numpy as np
    from matplotlib import __version__ as mpl_version
    from PIL import Image

    committed = figures.FIGURES_DIR
    out = tmp_path / "figures"
    shutil.copytree(committed, out)
    pngs = {n: next(o for o in f.outputs if o.endswith(".png")) for n, f in figures.REGISTRY.items()}
    for png in pngs.values():
        (out / png).unlink()
    state = read_state(out)  # a figure the pipeline made (its PNG's hash kept), as the committed state holds
    state["demo"] = {"status": "done", "settings": figures.REGISTRY["demo"].settings(read_results(out / "demo.json")),
                     "version": figures.library_version(), "files": {"demo.png": "a hash of another drawing"}}
    figures._write_state(out, state)
    assert cli.main(["figures", "--redraw", "--out", str(out)]) == 0
    for name, png in pngs.items():
        made, was = (out / png).read_bytes(), (committed / png).read_bytes()
        drawn_by = re.search(r"Matplotlib version ?([\w.]+)", Image.open(committed / png).info.get("Software", ""))
        if drawn_by and drawn_by[1] == mpl_version:
            assert made == was, f"{name}: {png} is not what {figures.REGISTRY[name].record} draws"
        else:
            a, b = (np.asarray(Image.open(p).convert("L"), float) for p in (out / png, committed / png))
            assert a.shape == b.shape and np.abs(a - b).mean() < 8, name
    assert "one_step: redrawn from one_step.json -> one_step.png" in capsys.readouterr().out
    # The redrawn figures are up to date for the pipeline (nothing to make), as the committed ones are.
    state = read_state(out)
    assert state["demo"]["files"]["demo.png"] == figures._sha256(out / "demo.png")
    settings, _ = figures.source_settings(figures.REGISTRY["demo"], out)
    assert figures.figure_status(figures.REGISTRY["demo"], out, settings, state) == (True, "up to date")
    # A figure with no record, or a record no figure is drawn from: refused, nothing drawn.
    (out / "fig10_mnist.json").unlink()
    before = (out / "demo.png").stat().st_mtime_ns
    with pytest.raises(ConfigError, match="figure fig10_mnist: its record cannot be drawn"):
        figures.redraw_figures(["demo", "fig10_mnist"], out=out, log=lambda s: None)
    assert (out / "demo.png").stat().st_mtime_ns == before
    # All of them (no names): a directory of some figures (a --quick one) redraws those whose record is there.
    some = tmp_path / "some"
    some.mkdir()
    for name in ("demo", "one_step"):
        shutil.copy(committed / figures.REGISTRY[name].record, some)
    said = []
    made = figures.redraw_figures(out=some, log=said.append)
    assert made == {"demo": some / "demo.png", "one_step": some / pngs["one_step"]}
    assert f"fig10_mnist: no record in {some}, skipped" in said and len(said) == len(pngs)
    assert (some / "demo.png").read_bytes() == (out / "demo.png").read_bytes()
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ConfigError, match=f"no figure's record is in {empty}: nothing to redraw .*--out {empty}"):
        figures.redraw_figures(out=empty, log=lambda s: None)
    with pytest.raises(sm.RecordError, match="no figure is drawn from a record of format 'subliminal-mlp/x'"):
        sm.draw({"format": "subliminal-mlp/x"}, out / "x.png")
    # sm.draw picks each format's own drawing: the demo record drawn by it is its committed PNG.
    assert sm.draw(sm.read_results(committed / "demo.json"), tmp_path / "d.png").read_bytes() == (out / "demo.png").read_bytes()
    capsys.readouterr()
    for flag in ("--force", "--list"):  # --list with --redraw would redraw and list nothing
        assert cli.main(["figures", "--redraw", flag, "--out", str(out)]) == 2
        assert "--redraw draws from the records as they are: it takes no --force, --quick or --list" in capsys.readouterr().err
    (tmp_path / "afile").write_text("")  # an --out that is a file: said as such, not "make the figure first"
    assert cli.main(["figures", "--redraw", "--out", str(tmp_path / "afile")]) == 2
    assert "afile: it is an existing file, not a directory" in capsys.readouterr().err


def test_the_committed_figures_are_the_checkouts_and_an_installed_package_looks_in_the_working_directory(tmp_path):
    assert figures.FIGURES_DIR == Path(__file__).resolve().parents[1] / "figures"  # this checkout's
    module = tmp_path / "site-packages" / "subliminal_mlp" / "cli" / "figures.py"  # a package installed, no checkout
    module.parent.mkdir(parents=True)
    elsewhere = tmp_path / "work"
    elsewhere.mkdir()
    assert figures._committed_figures(str(module), elsewhere) is None  # nowhere: none (the commands ask for --out)
    (tmp_path / "site-packages" / "figures").mkdir()  # a figures/ beside it is not a checkout's without its pyproject
    assert figures._committed_figures(str(module), elsewhere) is None
    (tmp_path / "site-packages" / "pyproject.toml").write_text('[project]\nname = "subliminal-mlp"\n')
    assert figures._committed_figures(str(module), elsewhere) == tmp_path / "site-packages" / "figures"
    # Installed, run in a directory: a checkout of the project there is the committed figures' place; a project of
    # one's own with a figures/ folder and a pyproject.toml is not (the pipeline would fill it at the paper's scale).
    (tmp_path / "site-packages" / "pyproject.toml").unlink()
    (elsewhere / "figures").mkdir()
    (elsewhere / "pyproject.toml").write_text('[project]\nname = "my-study"\n')
    assert figures._committed_figures(str(module), elsewhere) is None
    (elsewhere / "pyproject.toml").write_text((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    assert figures._committed_figures(str(module), elsewhere) == Path("figures")


def test_outside_a_checkout_the_figures_command_lists_from_defaults_and_asks_where_to_write(monkeypatch, tmp_path,
                                                                                            capsys):
    monkeypatch.setattr(figures, "FIGURES_DIR", None)  # an installed package, run outside a checkout
    monkeypatch.chdir(tmp_path)
    made = []
    monkeypatch.setattr(figures, "run_figures", lambda names, **kw: made.append((names, kw)) or {})
    assert cli.main(["figures", "--list", "demo", "fig10_mnist"]) == 0  # the scripts' defaults, no status
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[:4] for line in listed[1:]] == [["fig10_mnist", "100", "-", "-"], ["demo", "1", "-", "-"]]
    for argv in (["figures"], ["figures", "demo"], ["figures", "--redraw"], ["figures", "--quick", "demo"]):
        assert cli.main(argv) == 2, argv
        assert "there are no committed figures here" in capsys.readouterr().err and not made
    assert not any(tmp_path.iterdir())  # nothing written into the working directory
    with pytest.raises(figures.ConfigError, match="no committed figures here.*give out=DIR"):
        figures.plan_figures(["demo"])
    # given --out: made there, from the defaults
    plan = figures.plan_figures(["demo"], out=tmp_path / "mine")
    assert [(f.name, where) for f, _, where in plan] == [("demo", "defaults")]
    assert cli.main(["figures", "demo", "--out", "mine"]) == 0 and made[0][1]["out"] == "mine"
    assert figures._command("demo", Path("mine"), None, False) == "subliminal-mlp figures demo --out mine"


def test_redraw_draws_what_is_asked_checks_every_place_first_and_waits_for_a_pipeline_making_it(tmp_path, capsys):
    """``redraw_figures``: only the figures named (or those of the registry given) are drawn, and it returns each
    one's PNG; a place that cannot take a PNG is refused before any PNG is drawn; a figure that a live pipeline is
    making now is not redrawn under it (a stale ``running`` mark is no pipeline), and a figure the pipeline has
    not finished keeps its state as it was (only a ``done`` figure's PNG hash is renewed)."""
    import os
    import shutil
    import socket

    out = tmp_path / "figures"
    out.mkdir()
    for f in ("demo.json", "demo.png", "one_step.json", "one_step.png"):
        shutil.copy(figures.FIGURES_DIR / f, out / f)
    (out / "demo.png").unlink()
    quiet = dict(out=out, log=lambda s: None)
    assert figures.redraw_figures(registry={"demo": figures.REGISTRY["demo"]}, **quiet) == {"demo": out / "demo.png"}
    assert (out / "demo.png").is_file()
    # The command line's names: only demo (the other figures have no record here: they would be refused); --from,
    # where the settings of a figure to make come from, plays no part.
    one_step = (out / "one_step.png").stat().st_mtime_ns
    assert cli.main(["figures", "--redraw", "demo", "--out", str(out), "--from", str(tmp_path / "nowhere")]) == 0
    assert "demo: redrawn from demo.json -> demo.png" in capsys.readouterr().out
    assert (out / "one_step.png").stat().st_mtime_ns == one_step
    assert cli.main(["figures", "--redraw", "--quick", "demo", "--out", str(out)]) == 2  # --quick: no such drawing
    assert "--redraw draws from the records as they are: it takes no --force, --quick or --list" in capsys.readouterr().err
    # A PNG's place taken by a directory: refused before demo (which comes first) is drawn.
    demo = (out / "demo.png").stat().st_mtime_ns
    (out / "one_step.png").unlink()
    (out / "one_step.png").mkdir()
    with pytest.raises(ConfigError, match="one_step.png: it is an existing directory"):
        figures.redraw_figures(["demo", "one_step"], **quiet)
    assert (out / "demo.png").stat().st_mtime_ns == demo
    (out / "one_step.png").rmdir()
    # A record no figure is drawn from: refused before any PNG is drawn too.
    write_record(envelope(FORMAT, {"x": 1}, n_runs=1, seed=0, data={}), out, "other")
    (out / "one_step.json").rename(out / "one_step.kept")
    (out / "other.json").rename(out / "one_step.json")
    with pytest.raises(ConfigError, match="one_step.json has format 'subliminal-mlp/test-figure', which no figure"):
        figures.redraw_figures(["demo", "one_step"], **quiet)
    assert (out / "demo.png").stat().st_mtime_ns == demo and not (out / "one_step.png").exists()
    (out / "one_step.kept").replace(out / "one_step.json")
    # A figure a live pipeline is making (it holds the figure's lock) is not redrawn.
    stale = {"status": "running", "pid": os.getppid(), "host": socket.gethostname(), "files": {"demo.png": "old"}}
    figures._write_state(out, {"demo": stale})
    other = Holding(out, "demo")
    try:
        with pytest.raises(ConfigError, match="figures demo are being made now into"):
            figures.redraw_figures(["demo", "one_step"], **quiet)
    finally:
        other.kill()
    assert (out / "demo.png").stat().st_mtime_ns == demo and not (out / "one_step.png").exists()
    # A mark no pipeline holds (a live pid, this test's parent, but no lock): redrawn, the mark kept.
    assert figures.redraw_figures(["demo", "one_step"], **quiet) == {"demo": out / "demo.png",
                                                                      "one_step": out / "one_step.png"}
    assert read_state(out) == {"demo": stale}


def test_a_checkout_without_its_figures_directory_is_no_place_for_the_committed_figures(tmp_path):
    module = tmp_path / "src" / "subliminal_mlp" / "cli" / "figures.py"  # a source tree with pyproject, no figures/
    module.parent.mkdir(parents=True)
    (tmp_path / "src" / "pyproject.toml").write_text('[project]\nname = "subliminal-mlp"\n')
    assert figures._committed_figures(str(module), tmp_path) is None


def test_the_makers_hand_the_data_dir_and_the_projection_rule_to_their_study(monkeypatch, tmp_path):
    # one_step: the pipeline's --data-dir reaches run_one_step (a sweep's Fashion-MNIST images are loaded from it);
    # alignment: the settings' projection rule reaches run_alignment (the protocol's 'aligned' for a new figure); a
    # record made before the rule was recorded removed the component on every step, and is remade so.
    from subliminal_mlp.studies import alignment, one_step

    class Stop(Exception):
        pass

    got = {}

    def recorder(key):
        def run(*a, **kw):
            got[key] = kw
            raise Stop

        return run

    monkeypatch.setattr(one_step, "run_one_step", recorder("one_step"))
    monkeypatch.setattr(alignment, "run_alignment", recorder("alignment"))
    ctx = figures.Context(data_dir="D")
    ctx.dataset = lambda name: f"the {name} data"
    with pytest.raises(Stop):
        figures.REGISTRY["one_step"].make({"sources": [], "n_runs": 1}, tmp_path, ctx)
    assert got["one_step"]["data_dir"] == "D"
    fig = figures.REGISTRY["alignment"]
    new = fig.defaults()
    assert new["projection"] == "aligned" and fig.command(new).endswith("--projection aligned")
    old = {k: v for k, v in new.items() if k != "projection"}  # a record of before the rule was recorded
    for record, rule in ((old, "always"), ({**new, "projection": "always"}, "always"), (new, "aligned")):
        settings = fig.settings(record)
        assert settings["projection"] == rule and fig.command(settings).endswith(f"--projection {rule}")
        with pytest.raises(Stop):
            figures._make_alignment(settings, tmp_path, ctx)
        assert got["alignment"]["projection"] == rule
    # The mitigations' settings read from an older record the same way.
    from subliminal_mlp.studies.mitigations import MitigationSettings

    config = MitigationSettings().to_dict()
    assert MitigationSettings.from_dict(config).projection_when == "aligned"
    del config["projection_when"]
    assert MitigationSettings.from_dict(config).projection_when == "always"
