"""The helpers of the GPU runs (``benchmarks/gpu.sh``), which need no GPU: the list of tests without a GPU
outcome (``benchmarks/gpu_tests_todo.py``) and the plugin that prints each failure as it comes
(``benchmarks/failures_now.py``)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_test_counts_as_done_only_when_a_log_names_it_passed_or_skipped(tmp_path):
    todo = _load("gpu_tests_todo")
    ids = ["tests/a.py::test_one", "tests/a.py::test_two", "tests/a.py::test_p[x y]", "tests/b.py::test_three",
           "tests/b.py::test_four", "tests/b.py::test_one"]
    xdist = tmp_path / "xdist.log"  # pytest -v with xdist: the outcome before the id
    xdist.write_text("[gw3] [ 12%] PASSED tests/a.py::test_one \n"
                     "tests/a.py::test_two \n"  # started, never reported
                     "[gw1] [ 20%] FAILED tests/b.py::test_three \n"
                     "[gw2] [ 30%] PASSED tests/a.py::test_p[x y] \n")
    plain = tmp_path / "plain.log"  # pytest -v without xdist: the id, then the outcome
    plain.write_text("tests/b.py::test_four SKIPPED (no mkdocs)\n")
    quiet = tmp_path / "quiet.log"  # pytest -q names no test
    quiet.write_text("..F.s\n4 passed, 1 failed\n")
    done = todo.reported([xdist, plain, quiet], ids)
    # test_one of b.py is not taken for a.py's; an id with a space is looked up whole
    assert done == {"tests/a.py::test_one", "tests/a.py::test_p[x y]", "tests/b.py::test_four"}


def test_failures_are_printed_as_they_come_with_and_without_xdist(tmp_path):
    (tmp_path / "test_planted.py").write_text(textwrap.dedent("""
        def test_ok():
            pass

        def test_bad():
            assert 1 == 2, "planted failure"
    """))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for workers in ("0", "2"):
        out = subprocess.run([sys.executable, "-m", "pytest", "-v", "-n", workers, "-p", "no:cacheprovider",
                              "-p", "benchmarks.failures_now", "-c", os.devnull, "--rootdir", str(tmp_path),
                              str(tmp_path / "test_planted.py")],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120).stdout
        start = "=== FAILED (call) test_planted.py::test_bad ==="
        assert out.count(start) == 1, (workers, out)
        printed = out[out.index(start):out.index("=== end test_planted.py::test_bad ===")]
        assert "planted failure" in printed
        assert out.index(start) < out.index("short test summary info")  # before pytest's own summary
        assert "=== FAILED" not in out.replace(start, "")  # the passing test prints nothing


def test_a_collection_that_fails_is_reported_with_its_output_or_why_there_is_none(monkeypatch):
    import pytest

    todo = _load("gpu_tests_todo")
    monkeypatch.setenv("XLA_FLAGS", "--an_unknown_flag=1")
    for out, err, said in (("", "ImportError: no module named x\n", "ImportError: no module named x"),
                           ("", "", "no output: a process that aborts at its start")):
        monkeypatch.setattr(todo.subprocess, "run",
                            lambda *a, **k: subprocess.CompletedProcess(a, 1, stdout=out, stderr=err))
        with pytest.raises(SystemExit) as e:
            todo.collected()
        assert "pytest --collect-only failed (exit 1; XLA_FLAGS='--an_unknown_flag=1')" in str(e.value)
        assert said in str(e.value)
