"""Statistics and the results files of an experiment (JSON, CSV), written atomically.

The JSON format (``format: "subliminal-mlp/fig10"``, ``format_version: 1``) is stable; users'
scripts read it::

    {
      "format": "subliminal-mlp/fig10", "format_version": 1,
      "config": {...every Config field...},
      "n_runs": 100, "seeds": {"seed": 0, "runs": [0, ..., 99]},
      "models": {"reference": {"mean": .., "ci95": .., "accuracies": [one per run]}, "teacher": ..,
                 "student_aux": .., "student_all": .., "cross_aux": .., "cross_all": ..},
      "chance": 0.1,
      "data": {"dataset": "mnist", "source_dir": "...", "sha256": {file: sha256 of uncompressed}},
      "environment": {"subliminal_mlp": .., "jax": .., "jaxlib": .., "flax": .., "optax": ..,
                      "numpy": .., "python": .., "platform": .., "devices": [..], "run_batch": ..},
      "timing": {"compile_s": .., "run_s": .., "total_s": .., "peak_rss_mb": ..},
      "created": "ISO-8601 UTC time"
    }

``ci95`` is the paper's approximate 95 % interval half-width ``1.96 · std / √n`` with the sample
standard deviation (ddof = 1); it is ``null`` for a single run.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import os
import platform
import sys
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .config import MODELS

FORMAT = "subliminal-mlp/fig10"
FORMAT_VERSION = 1


def mean_ci95(values) -> tuple[float, float | None]:
    """``(mean, 1.96 · std / √n)`` with the sample std (ddof = 1); the half-width is None for n = 1."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if v.size == 1:
        return float(v[0]), None
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(v.size))


def summary(values) -> dict[str, Any]:
    """``{"mean", "ci95", "values": [...]}`` of per-run values (see :func:`mean_ci95`)."""
    m, ci = mean_ci95(values)
    return {"mean": m, "ci95": ci, "values": [float(v) for v in values]}


def mean_ci95_columns(values) -> dict[str, list]:
    """``{"mean": [...], "ci95": [...]}``: :func:`mean_ci95` of every column of a (runs, T) array."""
    stats = [mean_ci95(column) for column in np.asarray(values).T]
    return {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats]}


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, then ``os.replace``.

    Readers never see a partial file; on failure the temporary file is removed and ``path`` is
    left as it was. The file gets the usual permissions (0666 less the umask).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`)."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux ``ru_maxrss`` is in KiB)."""
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def environment(devices: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Package versions, Python, OS and devices, for the record."""
    env: dict[str, Any] = {}
    for pkg in ("subliminal-mlp", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            env[pkg.replace("-", "_")] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg.replace("-", "_")] = None
    env["python"] = sys.version.split()[0]
    env["platform"] = platform.platform()
    if devices is not None:
        env["devices"] = list(devices)
    env.update(extra)
    return env


def experiment_record(result, dataset=None) -> dict[str, Any]:
    """The JSON-ready record of an ``experiment.ExperimentResult`` (format in the module docstring)."""
    cfg = result.config
    models = {}
    for name in MODELS:
        acc = result.model_accuracies(name)
        mean, ci = mean_ci95(acc)
        models[name] = {"mean": mean, "ci95": ci, "accuracies": [float(a) for a in acc]}
    data = {"dataset": cfg.dataset}
    if dataset is not None:
        data["source_dir"] = str(dataset.source_dir)
        data["sha256"] = dict(dataset.checksums)
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": cfg.to_dict(),
        "n_runs": cfg.n_runs,
        "seeds": {"seed": cfg.seed, "runs": list(range(cfg.n_runs))},
        "models": models,
        "chance": 1.0 / cfg.n_classes,
        "data": data,
        "environment": environment(result.devices, run_batch=result.run_batch,
                                   **({"values_in_program": result.values_in_program}
                                      if result.values_in_program > 1 else {})),
        "timing": {"compile_s": result.compile_s, "run_s": result.run_s,
                   "total_s": result.compile_s + result.run_s, "peak_rss_mb": peak_rss_mb()},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }


def records_csv(record: dict[str, Any]) -> str:
    """One row per (model, run): ``model,run,accuracy``."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["model", "run", "accuracy"])
    for name, m in record["models"].items():
        for run, acc in enumerate(m["accuracies"]):
            w.writerow([name, run, f"{acc:.6f}"])
    return buf.getvalue()


def format_table(record: dict[str, Any]) -> str:
    """A plain-text table: model, mean test accuracy, 95 % CI half-width, runs."""
    lines = [f"{'model':<13} {'accuracy':>9} {'± 95% CI':>9}   runs",
             "-" * 40]
    for name, m in record["models"].items():
        ci = "-" if m["ci95"] is None else f"{m['ci95']:.4f}"
        lines.append(f"{name:<13} {m['mean']:>9.4f} {ci:>9}   {len(m['accuracies'])}")
    return "\n".join(lines)


def write_results(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "fig10") -> dict[str, Path]:
    """Write ``<stem>.json`` and ``<stem>.csv`` atomically under ``out_dir``; return their paths."""
    out = Path(out_dir)
    return {"json": atomic_write_text(out / f"{stem}.json", json.dumps(record, indent=2) + "\n"),
            "csv": atomic_write_text(out / f"{stem}.csv", records_csv(record))}


def read_results(path: str | os.PathLike) -> dict[str, Any]:
    """Read a results JSON, checking its format tag."""
    record = json.loads(Path(path).read_text(encoding="utf-8"))
    if record.get("format") != FORMAT:
        raise ValueError(f"{path} is not a {FORMAT} results file (format = {record.get('format')!r})")
    return record
