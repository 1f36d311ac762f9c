"""JAX's persistent compilation cache and the command line (docs/gpu.md, "Compile once").

The suite itself runs with the cache on (``tests/conftest.py``: a fresh directory per test process,
every program stored). These tests check what the docs tell a user: an experiment's program is stored
when it runs without progress bars; with them, only by a JAX that stores programs with host callbacks
(0.11 on, ``cli._cache_stores_callback_programs``); and the command says so when the cache is on and the
bars would keep the program out of it.
"""

from __future__ import annotations

from pathlib import Path

import jax
import pytest

from subliminal_mlp.cli import _cache_stores_callback_programs, main
from subliminal_mlp.core.results import read_results

NOTE = "JAX does not store programs with progress bars"


def _experiment_programs() -> set[str]:
    """The cache's entries of the engine's per-device program (``engine.run``'s ``per_device``)."""
    return {p.name for p in Path(jax.config.jax_compilation_cache_dir).iterdir() if p.name.startswith("jit_per_device")}


@pytest.mark.parametrize("progress", [False, True])
def test_the_experiment_program_is_stored_without_progress_bars_only(data_root, tmp_path, monkeypatch, capsys,
                                                                      progress):
    # A width no other test uses: the program is new to this process's cache. A given run_batch: one program (on
    # an accelerator, fitting run_batch to the memory compiles, and stores, the one-run program as well).
    width = "23" if progress else "29"
    argv = ["reproduce", "--seeds", "2", "--epochs", "1", "--n-noise", "1024", "--batch-size", "512", "--run-batch",
            "1", "--hidden", width, "--data-dir", str(data_root), "--out", str(tmp_path)]
    monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", jax.config.jax_compilation_cache_dir)
    before = _experiment_programs()
    assert main(argv + ([] if progress else ["--no-progress"])) == 0
    new = _experiment_programs() - before
    err = capsys.readouterr().err
    if progress and not _cache_stores_callback_programs():
        assert not new and NOTE in err  # compiled, not stored; the user is told why
        return
    assert len(new) == 1 and NOTE not in err  # with bars: jax 0.11 on, and nothing to tell
    # A second process would read it back: here, the same program is found, none is added, the same numbers; with
    # bars, JAX gives the program read back this run's callbacks, and they count every run's epoch.
    assert main(argv[:-1] + [str(tmp_path / "again")] + ([] if progress else ["--no-progress"])) == 0
    assert _experiment_programs() - before == new
    assert ("2/2" in capsys.readouterr().err) == progress
    again, first = (read_results(d / "fig10.json")["models"] for d in (tmp_path / "again", tmp_path))
    assert again == first


@pytest.mark.parametrize("cache, flags, noted", [(True, [], True), (True, ["--no-progress"], False),
                                                  (False, [], False)])
def test_the_note_is_given_where_the_cache_is_on_and_bars_are_shown(monkeypatch, capsys, cache, flags, noted):
    from subliminal_mlp.cli import _compile_cache_note, build_parser

    if cache:
        monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere")
    else:
        monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
    for argv in (["reproduce", *flags], ["sweep", "learning_rate", "1e-3", *flags]):
        _compile_cache_note(build_parser().parse_args(argv))
        assert (NOTE in capsys.readouterr().err) == (noted and not _cache_stores_callback_programs())
    # A command without progress bars, and the figures command: its experiments run without bars (its own bar,
    # over the figures, is the host's), so their programs are stored with or without --no-progress
    for argv in (["theorem"], ["figures", *flags], ["figures", "--redraw"], ["figures", "--list"]):
        _compile_cache_note(build_parser().parse_args(argv))
        assert NOTE not in capsys.readouterr().err
