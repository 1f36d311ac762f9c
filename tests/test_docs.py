"""The documentation: the site builds with ``mkdocs build --strict``, every results table agrees with
the committed JSON records (``docs/gen_tables.py``), no results table is hand-copied, every module has
an API page, every docstring example runs, and the README keeps the two commands that CI runs."""

from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import subliminal_mlp as sm

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
#: Pages whose tables are benchmark measurements copied from the benchmarks' output (no JSON record
#: of them is committed), so they cannot be generated from records; the page says so in a note.
BENCHMARK_PAGES: set[str] = set()  # every page's tables are generated now


def _gen_tables():
    spec = importlib.util.spec_from_file_location("gen_tables", DOCS / "gen_tables.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen_tables():
    return _gen_tables()


# ----------------------------------------------------------------------------- tables from records


def test_every_table_agrees_with_the_records(gen_tables):
    stale = gen_tables.stale()
    assert not stale, ("these pages disagree with the JSON records in figures/ (run `python docs/gen_tables.py`):\n"
                       + "\n".join(stale))


def test_a_changed_number_is_caught(gen_tables, tmp_path):
    page = tmp_path / "page.md"
    good = gen_tables.render("intro\n<!-- table:fig10_mnist -->\n<!-- /table -->\nend\n")
    assert "0.5343" in good  # the record's aux-only student, over 100 runs
    bad = good.replace("0.5343", "0.5400")
    page.write_text(bad, encoding="utf-8")
    assert gen_tables.stale([page]) == [f"{page}: fig10_mnist"]
    assert gen_tables.render(bad) == good
    page.write_text(good, encoding="utf-8")
    assert gen_tables.stale([page]) == []


def test_unknown_or_unclosed_tables_are_errors(gen_tables):
    with pytest.raises(KeyError, match="unknown table 'nope'"):
        gen_tables.render("<!-- table:nope -->\n<!-- /table -->\n")
    with pytest.raises(ValueError, match="markers"):
        gen_tables.render("<!-- table:fig10_mnist -->\n| a |\n")


def test_every_table_is_used_and_pages_are_covered(gen_tables):
    used = set()
    for path in gen_tables.pages():
        used |= {m["name"] for m in gen_tables.REGION.finditer(path.read_text(encoding="utf-8"))}
    assert used == set(gen_tables.TABLES), f"tables no page shows: {sorted(set(gen_tables.TABLES) - used)}"


def _rows_outside_regions(text: str) -> list[str]:
    rows, inside = [], False
    for line in text.splitlines():
        if line.startswith("<!-- table:"):
            inside = True
        elif line.startswith("<!-- /table -->"):
            inside = False
        elif line.startswith("|") and not inside:
            rows.append(line)
    return rows


def test_no_hand_copied_numbers_in_tables(gen_tables):
    """A table row outside a generated region may not hold a result-like number (0.xx, or ±)."""
    result_like = re.compile(r"(?<![\w.])0\.\d{2,}|±")
    found = []
    for path in gen_tables.pages():
        rel = path.relative_to(ROOT).as_posix()
        if rel in BENCHMARK_PAGES:
            continue
        found += [f"{rel}: {row}" for row in _rows_outside_regions(path.read_text(encoding="utf-8"))
                  if result_like.search(row)]
    assert not found, "hand-copied numbers in tables (generate them from a record instead):\n" + "\n".join(found)


# ----------------------------------------------------------------------------- the site


def test_mkdocs_build_strict(tmp_path):
    pytest.importorskip("mkdocs", reason="mkdocs is not installed: pip install -e '.[docs]' to build the docs")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    proc = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                           "-d", str(tmp_path / "site")], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=300)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    site = tmp_path / "site"
    assert (site / "tutorial" / "index.html").is_file()
    assert (site / "figures" / "fig10_mnist.png").is_file()
    assert (site / "api" / "engine" / "index.html").is_file()
    # mkdocstrings rendered the docstrings (not just the headings)
    assert "one function runs it as one compiled" in (site / "api" / "engine" / "index.html").read_text("utf-8")


def test_every_module_has_an_api_page():
    nav = (ROOT / "mkdocs.yml").read_text(encoding="utf-8")
    documented = {}  # module -> the API page (in the nav) that renders it with `::: module`
    for page in sorted((DOCS / "api").glob("*.md")):
        for m in re.finditer(r"^::: ([\w.]+)$", page.read_text(encoding="utf-8"), re.M):
            documented[m[1]] = page
    package = ROOT / "subliminal_mlp"
    for py in sorted(package.rglob("*.py")):
        parts = py.relative_to(ROOT).with_suffix("").parts
        if py.stem == "__main__" or (py.stem == "__init__" and py.parent.name != "cli"):
            continue  # package __init__ files re-export; the command's is its code
        module = ".".join(parts[:-1] if py.stem == "__init__" else parts)
        assert module in documented, f"no API page renders {module}: add docs/api/<name>.md with '::: {module}'"
        rel = documented[module].relative_to(DOCS).as_posix()
        assert rel in nav, f"{rel} is not in the nav of mkdocs.yml"
    index = (DOCS / "api" / "index.md").read_text(encoding="utf-8")
    missing = [n for n in sm.__all__ if f"`{n}`" not in index]
    assert not missing, f"public names not listed on docs/api/index.md: {missing}"


def _modules():
    """Every module of the package, by dotted name (the command's __main__ aside)."""
    for py in sorted((ROOT / "subliminal_mlp").rglob("*.py")):
        if py.stem == "__main__":
            continue
        parts = py.relative_to(ROOT).with_suffix("").parts
        yield ".".join(parts[:-1] if py.stem == "__init__" else parts)


def test_every_docstring_example_runs():
    """The ``>>>`` examples in the docstrings are run, and print what they say (the API pages show them)."""
    import doctest
    import importlib

    attempted, failed = 0, []
    for name in _modules():
        result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False,
                                 report=True)
        attempted += result.attempted
        if result.failed:
            failed.append(f"{name}: {result.failed} of {result.attempted}")
    assert not failed, f"docstring examples that fail (their output is printed above): {failed}"
    assert attempted >= 60, f"only {attempted} docstring examples found: were they collected?"


# ----------------------------------------------------------------------------- the README


def test_readme_is_short_and_keeps_the_two_commands():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert len(readme.splitlines()) < 150
    assert "subliminal-mlp reproduce --data-dir ../shared/data" in readme
    assert "SUBLIMINAL_MLP_DATA=../shared/data python -m pytest -q" in readme
    install = re.search(r"pip install -e '(\.\[[\w,]+\])'", readme)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert install and f"pip install --quiet -e '{install.group(1)}'" in ci, \
        "the README's install command and .ci/run must install the same extras"
    for link in re.findall(r"\]\(((?:docs|figures|examples)/[^)#]+)", readme):
        assert (ROOT / link).exists(), f"README links to {link}, which does not exist"


def test_the_protocol_page_is_the_projects_protocol_document():
    """docs/protocol.md, which the docstrings cite as "protocol.md §N", is the project's protocol document."""
    shared = ROOT.parent / "shared" / "docs" / "protocol.md"
    if not shared.is_file():
        pytest.skip("no ../shared/docs/protocol.md beside this checkout to compare with")
    assert (DOCS / "protocol.md").read_text(encoding="utf-8") == shared.read_text(encoding="utf-8"), \
        "docs/protocol.md differs from ../shared/docs/protocol.md: copy it again (cp ../shared/docs/protocol.md docs/)"


def test_figure_links_resolve_in_the_repository_too():
    """The pages link to figures/ by their path in the repository, so that they show on GitHub (the site's hook
    rewrites them to the site's figures/: test_mkdocs_build_strict checks that side)."""
    links = 0
    for page in sorted(DOCS.rglob("*.md")):
        for m in re.finditer(r"\]\(([^)\s#]*figures/[^)\s#]+\.png)\)", page.read_text(encoding="utf-8")):
            links += 1
            assert (page.parent / m[1]).resolve().is_file(), f"{page.relative_to(ROOT)} links to {m[1]}, not a file"
    assert links >= 20
