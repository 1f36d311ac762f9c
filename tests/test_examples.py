"""The gallery (examples/): every example runs end to end on a tiny configuration, writes a record
that :func:`subliminal_mlp.read_results` reads (shared and cross-model students, per-run
accuracies), and uses only the public API (checked on the source with ``ast``)."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pytest

import subliminal_mlp as sm

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = ROOT / "examples"
EXAMPLES = ("subspace_noise", "blurred_noise", "distinct_images", "five_class_teacher", "other_architectures")
#: The tiny configuration every example takes, plus what each needs besides to stay small.
TINY = ["--runs", "2", "--epochs", "1", "--n-noise", "1024", "--hidden", "16"]
EXTRA = {"distinct_images": ["--distinct", "256"], "other_architectures": ["--channels", "4"]}
#: Each example's records (stems of ``<out>/<stem>.json``).
STEMS = {"subspace_noise": ["subspace_noise_k30"], "blurred_noise": ["blurred_noise_sigma1"],
         "distinct_images": ["distinct_images_256"], "five_class_teacher": ["teacher_digits_0-4"],
         "other_architectures": ["other_architectures_tanh_mlp", "other_architectures_cnn"]}
STUDENTS = ("student_aux", "student_all", "cross_aux", "cross_all")
PUBLIC_SUBMODULES = ("engine", "inputs", "models", "students", "theory")


# ----------------------------------------------------------------------------- the public-API check


def _public_in(module: types.ModuleType, name: str) -> bool:
    """``name`` is public in ``module``: in its ``__all__`` if it has one; else not ``_x``, not a module, not
    a function or class another package defines (``inputs.jax``, ``engine.dataclass`` are internals)."""
    if name.startswith("_") or not hasattr(module, name):
        return False
    if hasattr(module, "__all__"):
        return name in module.__all__
    obj = getattr(module, name)
    return not isinstance(obj, types.ModuleType) and str(getattr(obj, "__module__", "subliminal_mlp")).startswith(
        "subliminal_mlp")


def _check_name(module_path: str, name: str) -> str | None:
    """Why ``module_path.name`` is not public (None when it is). ``module_path`` is ``subliminal_mlp[.sub]``."""
    parts = module_path.split(".")
    if parts[0] != "subliminal_mlp":
        return None
    if len(parts) == 1:
        if name.startswith("_") or name not in sm.__all__:
            return f"subliminal_mlp.{name} is not in subliminal_mlp.__all__"
        return None
    if len(parts) > 2 or parts[1] not in PUBLIC_SUBMODULES:
        return f"{module_path} is not a public submodule (public: {', '.join(PUBLIC_SUBMODULES)})"
    if not _public_in(getattr(sm, parts[1]), name):
        return f"{module_path}.{name} is not a public name of {module_path}"
    return None


def private_uses(source: str) -> list[str]:
    """Every use of a private name or module internal of ``subliminal_mlp`` in ``source`` (empty: none).

    Imports (``import subliminal_mlp[.sub] [as x]``, ``from subliminal_mlp[.sub] import X``) and
    attribute chains on the imported names (``sm.X``, ``sm.sub.Y``) may use only the names of
    ``subliminal_mlp.__all__`` and, one level down, the public names of the public submodules; no
    name starting with ``_`` anywhere, and no ``getattr`` on the library's modules.
    """
    tree = ast.parse(source)
    problems: list[str] = []
    aliases: dict[str, str] = {}  # local name -> module path it stands for
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] != "subliminal_mlp":
                    continue
                parts = alias.name.split(".")
                if len(parts) > 1 and (len(parts) > 2 or parts[1] not in PUBLIC_SUBMODULES):
                    problems.append(f"line {node.lineno}: import {alias.name}: not a public submodule")
                aliases[alias.asname or parts[0]] = alias.name if alias.asname else "subliminal_mlp"
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] != "subliminal_mlp":
                continue
            for alias in node.names:
                why = _check_name(module, alias.name)
                if why:
                    problems.append(f"line {node.lineno}: from {module} import {alias.name}: {why}")
                elif module == "subliminal_mlp" and alias.name in PUBLIC_SUBMODULES:
                    aliases[alias.asname or alias.name] = f"subliminal_mlp.{alias.name}"
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute):
            chain, base = [], node
            while isinstance(base, ast.Attribute):
                chain.append(base.attr)
                base = base.value
            if not (isinstance(base, ast.Name) and base.id in aliases):
                continue
            chain.reverse()
            path = aliases[base.id]
            for attr in chain:  # walk sm.sub.X: each step must be public; stop at a non-module object
                if path.count(".") > 1:
                    break
                why = _check_name(path, attr)
                if why:
                    problems.append(f"line {node.lineno}: {base.id}.{'.'.join(chain)}: {why}")
                    break
                if path == "subliminal_mlp" and attr in PUBLIC_SUBMODULES:
                    path = f"subliminal_mlp.{attr}"
                else:
                    break
        elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "vars")
              and node.args and isinstance(node.args[0], ast.Name) and node.args[0].id in aliases):
            problems.append(f"line {node.lineno}: {node.func.id}({node.args[0].id}, ...) reaches around the public API")
    return sorted(set(problems), key=lambda p: int(p.split(":")[0].split()[1]))


def test_the_checker_catches_private_names_and_internals():
    bad = """
import subliminal_mlp as sm
import subliminal_mlp.internal
from subliminal_mlp import _version, reproduce
from subliminal_mlp.engine import _program, run
from subliminal_mlp.results import summary
from subliminal_mlp.theory import sweep, _network
from subliminal_mlp import theory as th
sm._secret
sm.results.summary
sm.engine._program
sm.inputs.jax
sm.engine.dataclass
sm.Experiment.replace
th._jit
getattr(sm, "_program")
"""
    problems = "\n".join(private_uses(bad))
    for expected in ("import subliminal_mlp.internal", "_version", "_program", "subliminal_mlp.results",
                     "_network", "sm._secret", "sm.results.summary", "sm.engine._program", "sm.inputs.jax",
                     "sm.engine.dataclass", "th._jit", "getattr(sm"):
        assert expected in problems, (expected, problems)
    for fine in ("import reproduce", "import run", "import sweep", "sm.Experiment.replace"):
        assert fine not in problems, (fine, problems)
    good = ("import subliminal_mlp as sm\nfrom subliminal_mlp import inputs, Task\nfrom subliminal_mlp.theory import sweep\n"
            "sm.run(sm.Experiment(inputs=inputs.subspace(3)), Task)\nsm.theory.ce_aux\nsm.students.FIGURE10\n")
    assert private_uses(good) == []


# ----------------------------------------------------------------------------- the gallery itself


def test_the_gallery_has_every_example_each_short_with_its_question():
    found = sorted(p.stem for p in EXAMPLES_DIR.glob("*.py"))
    assert found == sorted(EXAMPLES)
    readme = (EXAMPLES_DIR / "README.md").read_text(encoding="utf-8")
    for name in EXAMPLES:
        source = (EXAMPLES_DIR / f"{name}.py").read_text(encoding="utf-8")
        assert len(source.splitlines()) < 40, f"{name}.py has {len(source.splitlines())} lines (the limit: under 40)"
        doc = ast.get_docstring(ast.parse(source))
        assert doc and doc.splitlines()[0].endswith("?"), f"{name}.py's docstring must open with its question"
        assert f"examples/{name}.py" in readme, f"examples/README.md does not show {name}.py"


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_uses_only_the_public_api(name):
    problems = private_uses((EXAMPLES_DIR / f"{name}.py").read_text(encoding="utf-8"))
    assert not problems, f"examples/{name}.py uses private names or module internals:\n" + "\n".join(problems)


@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_checks_where_its_records_go_before_any_compute(name, tmp_path, monkeypatch):
    # --out an existing file: sm.OutputError at once (it trained, printed its table, then raised), before the data
    # are even looked for (the --data-dir given does not exist)
    import runpy

    (tmp_path / "afile").write_text("")
    monkeypatch.setattr(sys, "argv", [name, "--out", str(tmp_path / "afile"), "--data-dir", str(tmp_path / "none")])
    with pytest.raises(sm.OutputError, match="afile: it is an existing file"):
        runpy.run_path(str(EXAMPLES_DIR / f"{name}.py"), run_name="__main__")


@pytest.mark.slow
@pytest.mark.parametrize("name", EXAMPLES)
def test_an_example_runs_the_protocol_and_writes_its_record(name, data_root, tmp_path, optimised_xla_flags):
    # The data through --data-dir: a copy of its own (the loader resolves links), so that the record shows it was used.
    shutil.copytree(data_root / "mnist", tmp_path / "data" / "mnist")
    cmd = [sys.executable, str(EXAMPLES_DIR / f"{name}.py"), *TINY, *EXTRA.get(name, []), "--out", str(tmp_path),
           "--data-dir", str(tmp_path / "data")]
    # Optimised kernels: unoptimised, other_architectures' convolutions took 110 s instead of 28 s.
    env = {**{k: v for k, v in os.environ.items() if k != "SUBLIMINAL_MLP_DATA"}, "XLA_FLAGS": optimised_xla_flags}
    t0 = time.perf_counter()
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - t0
    assert out.returncode == 0, f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr[-4000:]}"
    print(f"{name}: {seconds:.1f} s")
    assert "student_aux" in out.stdout and "cross_aux" in out.stdout and "95% CI" in out.stdout
    for stem in STEMS[name]:
        path = tmp_path / f"{stem}.json"
        assert path.is_file() and (tmp_path / f"{stem}.csv").is_file(), sorted(p.name for p in tmp_path.iterdir())
        assert str(path) in out.stdout
        record = sm.read_results(path)
        assert record["format"] == "subliminal-mlp/experiment" and record["n_runs"] == 2
        assert record["data"]["source_dir"] == str(tmp_path / "data" / "mnist")
        models = record["values"][0]["models"]
        for student in STUDENTS:
            values = models[student]["values"]
            assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values), (student, values)
            assert models[student]["ci95"] is not None
        assert models["teacher"]["mean"] > record["chance"] + 0.1, "the tiny teacher should still learn"
        if name == "five_class_teacher":
            assert record["chance"] == pytest.approx(0.2) and record["data"]["subset"]["classes"] == [0, 1, 2, 3, 4]
            assert record["config"]["model"]["n_classes"] == 5
        if name == "other_architectures":
            theorem = np.asarray(record["metrics"]["theorem"])  # (values, runs, [A shared, D0 other, A' other])
            assert theorem.shape == (1, 2, 3) and np.all(np.isfinite(theorem))
            assert np.all(theorem[..., 0] > 0), "Lemma 1: A = E_x vᵀMv > 0 with the shared initialisation"
