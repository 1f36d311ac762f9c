"""The teaching notebook: ``docs/tutorial.py`` (jupytext, percent format) is the source and
``docs/tutorial.ipynb`` its executed copy; the two hold the same cells, the notebook uses only the
public API, and it runs top to bottom (here on a shortened configuration, through nbclient)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "docs" / "tutorial.py"
NOTEBOOK = ROOT / "docs" / "tutorial.ipynb"
#: The shortened configuration the notebook's parameters cell reads (tiny MLP, 1 + 1 epochs).
QUICK = {"SUBLIMINAL_MLP_TUTORIAL_QUICK": "1"}


def _private_uses():
    spec = importlib.util.spec_from_file_location("_examples_check", ROOT / "tests" / "test_examples.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.private_uses


def test_notebook_uses_only_the_public_api():
    problems = _private_uses()(SOURCE.read_text(encoding="utf-8"))
    assert not problems, "docs/tutorial.py uses names outside the public API:\n" + "\n".join(problems)


def test_notebook_is_paired_with_its_source():
    jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed: pip install -e '.[docs]'")
    source = jupytext.read(SOURCE)
    notebook = jupytext.read(NOTEBOOK)
    cells = lambda nb: [(c.cell_type, c.source.strip()) for c in nb.cells]  # noqa: E731
    assert cells(source) == cells(notebook), (
        "docs/tutorial.ipynb is out of date with docs/tutorial.py: run "
        "`jupytext --to ipynb --execute docs/tutorial.py`")
    code = [c for c in notebook.cells if c.cell_type == "code"]
    images = sum("image/png" in o.get("data", {}) for c in code for o in c.outputs)
    assert images >= 3, "docs/tutorial.ipynb is committed executed, with its figures (they render in the docs)"
    assert not any(o.get("output_type") == "error" for c in code for o in c.outputs)
    assert "parameters" in code[0].metadata.get("tags", []), "the first code cell is the parameters cell"


def test_notebook_runs_top_to_bottom(tmp_path, monkeypatch):
    jupytext = pytest.importorskip("jupytext", reason="jupytext is not installed: pip install -e '.[docs]'")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed: pip install -e '.[docs]'")
    pytest.importorskip("ipykernel", reason="ipykernel is not installed: pip install -e '.[docs]'")
    for k, v in QUICK.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel chooses its inline backend
    nb = jupytext.read(SOURCE)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "student_aux" in text and "cross_aux" in text  # the two students' table
    assert "A = " in text  # the theorem's step (the cell asserts A > 0)
    # figures show inline: importing subliminal_mlp does not force a non-interactive backend
    assert sum("image/png" in o.get("data", {}) for o in outputs) >= 3
