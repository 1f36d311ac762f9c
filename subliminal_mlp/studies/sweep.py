"""Sweeps: the Figure-10 protocol for each value of any ``Config`` field.

``run_sweep("aux_logits", [1, 3, 10])`` runs the whole protocol (``n_runs`` runs of the six
models) per value and writes, under ``out_dir``:

* ``<param>/<key>/<param>=<value>.json`` (+ ``.csv``): the Figure-10 record of each value, written
  atomically as soon as that value is finished — an interrupted sweep resumes from them. ``<key>``
  (:func:`config_key`) names the base configuration (every setting but ``param``), so that a sweep
  with other settings into the same ``out_dir`` keeps its records apart and never overwrites
  finished ones. A record is resumed from wherever under ``<param>/`` it is (this key's directory,
  the layout before keys, ``<param>/<param>=<value>.json``, or another key's directory) when its
  config, with the fields added since it was written at their defaults, is this value's, and its
  data are this sweep's (:func:`~subliminal_mlp.core.results.same_data`: the files' checksums, or
  the fingerprints of arrays given in ``datasets``);
* ``sweep_<param>.json`` / ``.csv`` / ``.png``: every model's mean accuracy and 95 % CI against the
  value (format ``subliminal-mlp/sweep``, the envelope of :mod:`.results` around the payload of
  :func:`sweep_record`), and the line plot with CI bands and the chance line. A summary of another
  base configuration found there is moved beside its own records (``<param>/<its key>/``) first,
  and the log says so.

Output destinations are checked before any compute (:func:`.results.check_output`); diverged runs
are reported (each value record's ``health``) or, with ``on_divergence="fail"``, fail the sweep
before its summary is written.

Values of a field that keeps every array shape (:data:`~subliminal_mlp.studies.figure10.TRACED_FIELDS`: the
learning rate, the seed, the KL temperature, the image weight of mixed inputs, the σ of the start's
noise) run together in one compiled program, entering as traced arrays; values that
change shapes or code (widths, m, depth, epochs, the loss, ...) compile once each, with a progress
bar over the sweep.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from ..core.config import MODELS, Config, ConfigError, is_sequence, normalised
from ..core.distributed import broadcast_from_main, is_main_process, main_print
from .figure10 import TRACED_FIELDS, input_dataset, input_pool, run_experiment, run_traced_sweep
from ..core.results import (FORMAT as FIG10_FORMAT, DivergenceError, DivergenceWarning, RecordError,
                           check_on_divergence, check_output, data_record, envelope, experiment_record, format_ci,
                           format_health, library_version, mean_ci95, read_results, same_data, write_record,
                           write_results, written_by)

FORMAT = "subliminal-mlp/sweep"
FORMAT_VERSION = 1
#: Fields that a sweep may vary. Not ``run_batch`` (it changes no number), nor ``n_classes`` and ``input_dim``
#: (fixed by the data: both datasets have 10 classes of 784 pixels, and any other value is refused).
SWEEPABLE = tuple(f.name for f in dataclasses.fields(Config) if f.name not in ("run_batch", "n_classes", "input_dim"))


def parse_values(param: str, texts: Sequence[str]) -> list:
    """Command-line strings to typed values of ``param`` (``hidden_widths``: ``"512,512"`` or ``"512x512"``; an
    empty width, as in ``"512,"``, is refused).

    Each value takes the type of its ``Config`` field:

    >>> from subliminal_mlp.studies.sweep import parse_values
    >>> parse_values("hidden_widths", ["512,512", "64x64x64"]), parse_values("learning_rate", ["1e-3", "3"])
    ([(512, 512), (64, 64, 64)], [0.001, 3.0])
    >>> parse_values("aux_logits", ["3.5"])
    Traceback (most recent call last):
    subliminal_mlp.core.config.ConfigError: value '3.5' is not valid for aux_logits (int).
    """
    check_param(param)
    kind = {f.name: f.type for f in dataclasses.fields(Config)}[param]
    out = []
    for t in texts:
        try:
            if param == "hidden_widths":
                widths = str(t).replace("x", ",").split(",")
                if not all(w.strip() for w in widths):
                    raise ConfigError(f"value {t!r} of hidden_widths has an empty width (',' and 'x' both separate "
                                      "widths): write one value's widths joined by commas, without spaces (e.g. "
                                      "16,8); a space separates two values.")
                out.append(tuple(int(w) for w in widths))
            elif "float" in str(kind):
                out.append(float(t))
            elif "int" in str(kind):
                out.append(int(t))
            else:
                out.append(str(t))
        except ConfigError:
            raise
        except ValueError:
            raise ConfigError(f"value {t!r} is not valid for {param} ({kind}).") from None
    return out


def check_param(param: str) -> None:
    """Raise :class:`ConfigError` unless ``param`` can be swept."""
    if param not in SWEEPABLE:
        raise ConfigError(f"cannot sweep {param!r}: choose one of {', '.join(SWEEPABLE)}.")


def value_label(value: Any) -> str:
    """A value as it appears in file names and on the plot: ``(512, 512)`` -> ``512,512``, ``1e-05`` -> ``1e-05``.

    A float is written with ``%g`` (6 significant digits) where that reads back as the same float, else
    in full (``repr``: ``0.1000001``), so two different values never share a record's file name.

    >>> from subliminal_mlp.studies.sweep import value_label
    >>> value_label((512, 512)), value_label(3e-4), value_label(0.1000001), value_label(1 / 3), value_label("kl")
    ('512,512', '0.0003', '0.1000001', '0.3333333333333333', 'kl')
    >>> all(float(value_label(x)) == x for x in (0.1, 1 / 3, 3e-4, 1e-12, 2.5e10))  # each label reads back exactly
    True
    """
    if isinstance(value, (tuple, list)):
        return ",".join(value_label(v) for v in value)
    if isinstance(value, float):
        short = f"{value:g}"
        return short if float(short) == value else repr(value)
    return str(value)


def config_key(param: str, base: Config | dict) -> str:
    """The name of the directory of a sweep's per-value records: 10 hex digits of a SHA-256.

    Hashes every setting of ``base`` (a ``Config`` or its ``to_dict()``) except the swept
    ``param``, so that sweeps over the same field with the same other settings share (and resume
    from) one directory, and any other setting (seed, runs, learning rate, ...) gets its own.
    """
    d = base.to_dict() if hasattr(base, "to_dict") else dict(base)
    d = {k: v for k, v in d.items() if k != param}
    return hashlib.sha256(json.dumps(d, sort_keys=True, default=str).encode()).hexdigest()[:10]


def _json_value(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def run_sweep(param: str, values: Sequence, base: Config = Config(), *, data_dir=None,
              out_dir: str | os.PathLike = "results/sweep", resume: bool = True, progress: bool = True,
              log: Callable[[str], None] = main_print, datasets: dict | None = None,
              on_divergence: str = "warn") -> dict[str, Any]:
    """Run the Figure-10 protocol of ``base`` for each value of ``param``; write and return the summary.

    Every value is validated (as a full ``Config``), and the output destinations checked, before
    any compute. With ``resume``, a value whose record already exists under
    ``out_dir/<param>/<config_key>/`` with the same config and data is read, not rerun; a record that
    cannot be read (truncated, damaged, of another format: a ``RecordError``) is recomputed, and
    ``log`` says so. Diverged runs are reported after the table (a ``DivergenceWarning`` naming
    the values, runs and models); with ``on_divergence="fail"`` a ``DivergenceError`` is raised
    and no summary is written (the values finished before stay, as their records).
    ``datasets`` may map dataset names to loaded ``Dataset`` objects (else they are loaded from
    ``data_dir`` / the usual lookup). With several processes (:mod:`.distributed`) every process
    runs the sweep; which values are done is process 0's finding, and only it writes and logs.

    Two seeds of a protocol without training (0 epochs: every model is its start, so the numbers can be checked
    exactly), in one program, in seconds; then the same sweep again, resumed from its records:

    >>> import tempfile, numpy as np
    >>> import subliminal_mlp as sm
    >>> base = sm.Config(hidden_widths=(16,), teacher_epochs=0, student_epochs=0, n_noise=128, batch_size=128,
    ...                  n_runs=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     s = sm.run_sweep("seed", [0, 1], base, out_dir=out, progress=False, log=lambda line: None)
    ...     rows = sm.per_run(s["files"]["json"])  # every run, read from the value records beside the summary
    ...     again = sm.run_sweep("seed", [0, 1], base, out_dir=out, progress=False, log=print)
    resuming: 2 of 2 values already done (0, 1)
    ...
    >>> s["labels"], s["n_runs"], sorted(s["files"]), again["models"] == s["models"]
    (['0', '1'], [2, 2], ['csv', 'json', 'png'], True)
    >>> acc = {(r["seed"], r["model"], r["run"]): r["accuracy"] for r in rows}
    >>> acc[1, "teacher", 0] == acc[1, "reference", 0], acc[1, "cross_aux", 0] == acc[1, "reference", 1]
    (True, True)
    >>> ref = [acc[1, "reference", 0], acc[1, "reference", 1]]
    >>> m, ci = s["models"]["reference"]["mean"][1], s["models"]["reference"]["ci95"][1]
    >>> bool(np.isclose(m, np.mean(ref))), bool(np.isclose(ci, 1.96 * np.std(ref, ddof=1) / np.sqrt(2)))
    (True, True)
    """
    check_param(param)
    t0 = time.perf_counter()
    if not is_sequence(values):
        raise ConfigError(f"values = {values!r} is invalid: give a sequence of values of {param}, e.g. [{values!r}].")
    values = list(values)
    if not values:
        raise ConfigError(f"no values given for {param}: give at least one.")
    configs = [base.replace(**{param: v}) for v in values]  # validates every value first
    values = [getattr(c, param) for c in configs]  # as the configs hold them: numpy numbers become Python's
    labels = [value_label(v) for v in values]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"repeated values in the sweep over {param}: {labels}.")
    if param == "init_noise_kind" and base.init_noise == 0:
        raise ConfigError("sweeping init_noise_kind with init_noise = 0 runs the same experiment for every value: "
                          "set init_noise (--init-noise) to a σ > 0.")
    check_on_divergence(on_divergence)
    out = Path(out_dir)
    stems = [f"{param}={label}" for label in labels]
    summary_stem = f"sweep_{param}"
    check_output(out, files=[f"{summary_stem}.{ext}" for ext in ("json", "csv", "png")])
    key = config_key(param, base)
    value_dir = out / param / key
    check_output(value_dir, files=[f"{stem}.{ext}" for stem in stems for ext in ("json", "csv")])
    value_files = [f"{param}/{key}/{stem}.json" for stem in stems]
    records: dict[int, dict] = {}
    datasets = dict(datasets or {})
    if resume:
        said: dict[str, dict] = {}

        def data_of(name: str) -> dict:  # what a record made now would say of its data: given arrays, or the files
            if name not in said:
                from ..core.data import DATASETS

                said[name] = (data_record(datasets[name]) if name in datasets else
                              {"dataset": name, "sha256": DATASETS[name].checksums} if name in DATASETS else {})
            return said[name]

        for i, (c, stem) in enumerate(zip(configs, stems)):
            # This configuration's directory, then the layout before config keys (read, never written), then
            # other keys' directories (a Config field added since changes the key of the same settings).
            others = sorted(p for p in (out / param).glob(f"*/{stem}.json") if p.parent != value_dir)
            for path in (value_dir / f"{stem}.json", out / param / f"{stem}.json", *others):
                if not path.exists():
                    continue
                try:
                    record = read_results(path, format=FIG10_FORMAT)
                except RecordError as e:
                    if path.parent.parent == out / param and path.parent != value_dir:
                        continue  # another configuration's record, unreadable: not this value's
                    log(f"recomputing {param} = {labels[i]}: its record cannot be used ({e})")
                    break
                if _normalised(record["config"]) == c.to_dict():
                    if written_by(record) != library_version():  # another version may compute it otherwise
                        log(f"recomputing {param} = {labels[i]}: its record {path} was written by subliminal-mlp "
                            f"{written_by(record)}, this is {library_version()}")
                        break
                    now = {**data_of(c.dataset), **({"inputs": data_of("fashion-mnist")}
                                                    if c.student_inputs == "fashion-mnist" else {})}
                    if not same_data(record.get("data"), now):  # e.g. a dataset given with other labels
                        log(f"recomputing {param} = {labels[i]}: its record {path} was made on other data than "
                            "this sweep's (its data's checksums or arrays' fingerprints differ)")
                        break
                    records[i] = record
                    value_files[i] = path.relative_to(out).as_posix()
                    break
    # With several processes, process 0's files decide (the others may not see them): all run the same programs.
    records, value_files = broadcast_from_main((records, value_files))
    todo = [i for i in range(len(values)) if i not in records]
    if records:
        log(f"resuming: {len(records)} of {len(values)} values already done ({', '.join(labels[i] for i in records)})")

    def dataset(name: str):  # each dataset loaded and verified once, the task's and the students' images alike
        if name not in datasets:
            from ..core.data import load_dataset

            datasets[name] = load_dataset(name, data_dir)
            log(f"data: {name} from {datasets[name].source_dir} (sha256 verified)")
        return datasets[name]

    def data_for(c: Config):
        return dataset(c.dataset)

    pools, sources = {}, {}
    for i in todo:  # every value against its data (and its image pool), before any value is computed
        d = data_for(configs[i])
        # a dataset given under another's name would be recorded under it
        configs[i].check_dataset(d, int(d.train_labels.max()) + 1)
        sources[i] = input_dataset(configs[i], load=dataset)
        pools[i] = input_pool(configs[i], d, source=sources[i])
        if configs[i].student_inputs == "fashion-mnist" and configs[i].n_noise > len(pools[i]):
            raise ConfigError(f"n_noise = {configs[i].n_noise} is larger than the {len(pools[i])} Fashion-MNIST "
                              f"images of {param} = {labels[i]}: lower n_noise.")

    def finish(i: int, result) -> None:
        record = experiment_record(result, data_for(configs[i]), inputs=sources.get(i))
        write_results(record, value_dir, stems[i])
        records[i] = record

    with warnings.catch_warnings():  # reported once, per value, after the table
        warnings.simplefilter("ignore", DivergenceWarning)
        if todo and param in TRACED_FIELDS:
            log(f"sweeping {param} over {len(todo)} value(s) in one program")
            data = data_for(base)
            results = run_traced_sweep(base, data, param, [values[i] for i in todo], progress=progress, log=log,
                                       pool=pools[todo[0]], on_divergence=on_divergence)
            for i, result in zip(todo, results):
                finish(i, result)
        elif todo:
            from tqdm.auto import tqdm

            for i in tqdm(todo, desc=f"sweep {param}", unit="value",  # bars are process 0's (docs/distributed.md)
                          disable=not (progress and is_main_process())):
                finish(i, run_experiment(configs[i], data_for(configs[i]), log=log, pool=pools[i],
                                         on_divergence=on_divergence))
    ordered = [records[i] for i in range(len(values))]
    report = "\n".join(filter(None, (format_health(r.get("health"), r["n_runs"], f"{param} = {label}")
                                     for r, label in zip(ordered, labels))))
    if report and on_divergence == "fail":  # diverged values read back from earlier records
        raise DivergenceError(report, None, [r.get("health") for r in ordered])
    summary = sweep_record(param, values, base, ordered, value_files, timing={"total_s": time.perf_counter() - t0})
    if is_main_process():  # it moves files: process 0's business
        _set_aside_other_summary(out, summary_stem, summary, log)
    files = write_sweep(summary, out)
    log(format_sweep_table(summary))
    for path in files.values():
        log(f"wrote {path}")
    if todo:
        log(f"per-value records: {value_dir}")
    if report:
        warnings.warn(report, DivergenceWarning, stacklevel=2)
    return {**summary, "files": {k: str(v) for k, v in files.items()}}


def _normalised(config: dict[str, Any]) -> dict[str, Any]:
    """:func:`~subliminal_mlp.core.config.normalised`, or the config as it is when it is not a valid Config."""
    try:
        return normalised(config)
    except (ConfigError, TypeError):
        return dict(config)


def _set_aside_other_summary(out: Path, stem: str, summary: dict[str, Any], log: Callable[[str], None]) -> None:
    """Before ``summary`` replaces ``out/<stem>.*``: move a summary of another base configuration beside its records.

    It goes to ``out/<param>/<its config_key>/`` (where its per-value records are), and ``log``
    says so; a summary of the same base configuration over other values is replaced, and ``log``
    says that too (its values' records stay in the configuration's directory).
    """
    path = out / f"{stem}.json"
    if not path.exists():
        return
    try:
        old = read_results(path, format=FORMAT)
    except RecordError as e:
        log(f"replacing {path}, which cannot be read ({e})")
        return
    param = summary["param"]
    def without_param(c):  # the swept field's base value is never run: it does not make another configuration
        return {k: v for k, v in _normalised(c or {}).items() if k != param}

    if without_param(old.get("base_config")) == without_param(summary["base_config"]):
        if old.get("labels") != summary["labels"]:
            here = out / param / config_key(param, summary["base_config"])
            log(f"replacing {path} (values {', '.join(map(str, old.get('labels', [])))}) with values "
                f"{', '.join(summary['labels'])}; the records of every value stay in {here}")
        return
    keep = out / param / config_key(param, old.get("base_config") or {})
    keep.mkdir(parents=True, exist_ok=True)
    moved = []
    for ext in ("json", "csv", "png"):
        src = out / f"{stem}.{ext}"
        if src.exists():
            os.replace(src, keep / src.name)
            moved.append(src.name)
    log(f"{path} summarised a sweep with other settings: moved {', '.join(moved)} to {keep} (beside its records)")


def sweep_record(param: str, values: Sequence, base: Config, records: Sequence[dict], files: Sequence[str], *,
                 timing: dict[str, Any] | None = None) -> dict[str, Any]:
    """The summary of a sweep: per model, the mean and 95 % CI at each value.

    Returns the envelope (:func:`.results.envelope`, format ``subliminal-mlp/sweep``) with
    ``config`` the base config, ``n_runs`` a list (the runs of each value) and ``seeds`` the base
    seed, around this payload::

        "param": "aux_logits", "values": [...], "labels": [...], "base_config": {...},
        "models": {name: {"mean": [one per value], "ci95": [...]}}, "chance": 0.1,
        "value_files": ["aux_logits/<config_key>/aux_logits=1.json", ...], "health": [per value]

    ``data`` is the value records' data when they all agree, else ``{"dataset": base dataset,
    "per_value": [each value record's data]}``; ``timing`` (seconds of this call) as given.
    ``health`` lists each value record's ``health`` (None for a record written before it existed).
    """
    models = {}
    for name in MODELS:
        stats = [mean_ci95(r["models"][name]["accuracies"]) for r in records]
        models[name] = {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats]}
    n_runs = [r["n_runs"] for r in records]
    datas = [r.get("data") or data_record(name=r["config"].get("dataset")) for r in records]
    if datas and all(d == datas[0] for d in datas):
        data = dict(datas[0])
    else:
        data = data_record(name=base.dataset, per_value=datas)
    return envelope(FORMAT, base, n_runs=n_runs, seed=base.seed, runs=list(range(max(n_runs, default=0))),
                    data=data, timing=timing, format_version=FORMAT_VERSION,
                    param=param, values=[_json_value(v) for v in values], labels=[value_label(v) for v in values],
                    base_config=base.to_dict(), models=models, chance=1.0 / base.n_classes, value_files=list(files),
                    health=[r.get("health") for r in records])


def _sweep_rows(summary: dict[str, Any]) -> tuple[list[str], list[list]]:
    """The summary's CSV: one row per (value, model), ``param,value,model,mean,ci95,n_runs``."""
    rows = []
    for j, label in enumerate(summary["labels"]):
        for name, m in summary["models"].items():
            ci = "" if m["ci95"][j] is None else f"{m['ci95'][j]:.6f}"
            rows.append([summary["param"], label, name, f"{m['mean'][j]:.6f}", ci, summary["n_runs"][j]])
    return ["param", "value", "model", "mean", "ci95", "n_runs"], rows


def format_sweep_table(summary: dict[str, Any]) -> str:
    """Mean test accuracy ± its 95 % CI half-width (:func:`~.results.mean_ci95`) per value (rows) and model
    (columns), and the runs per value; ``—`` where one run has no CI."""
    names = list(summary["models"])
    width = [max(15, len(n)) for n in names]
    head = f"{summary['param']:>14} " + " ".join(f"{n:>{w}}" for n, w in zip(names, width)) + "   runs"
    rows = [head, "-" * len(head)]
    for j, label in enumerate(summary["labels"]):
        cells = (f"{summary['models'][n]['mean'][j]:.4f} ± {format_ci(summary['models'][n]['ci95'][j])}"
                 for n in names)
        rows.append(f"{label:>14} " + " ".join(f"{c:>{w}}" for c, w in zip(cells, width))
                    + f"   {summary['n_runs'][j]}")
    return "\n".join(rows)


def write_sweep(summary: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Path]:
    """Write ``sweep_<param>.{json,csv,png}`` atomically under ``out_dir``."""
    from ..report.plotting import plot_sweep

    stem = f"sweep_{summary['param']}"
    return write_record(summary, out_dir, stem, csv=_sweep_rows(summary), figure=plot_sweep)


def read_sweep(path: str | os.PathLike) -> dict[str, Any]:
    """Read a sweep summary JSON (``results.read_results`` with ``format="subliminal-mlp/sweep"``).

    Raises ``results.RecordError`` (a ``ValueError``) naming the file when it cannot be used.
    """
    return read_results(path, format=FORMAT)


def numeric_axis(values: Sequence) -> np.ndarray | None:
    """The values as floats when they are all numbers, else None (a categorical axis)."""
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return np.asarray(values, dtype=float)
    return None


#: The published sweeps this library regenerates (protocol.md §1): name -> (field, values as on the
#: command line, base-config changes, what the literature reports).
PUBLISHED_SWEEPS: dict[str, tuple[str, list[str], dict, str]] = {
    "aux_logits": ("aux_logits", "1 2 3 5 10 20 50 100".split(), {},
                   "Jiang et al.: more auxiliary logits (up to 10x the class logits) raise the student's accuracy strongly"),
    "width": ("hidden_widths", "32,32 64,64 128,128 256,256 512,512 1024,1024 2048,2048".split(), {},
              "Jiang et al.: more width lowers the student's accuracy"),
    "depth": ("hidden_widths", "256 256,256 256,256,256 256,256,256,256".split(), {},
              "Jiang et al.: depth shows no clear trend"),
    "depth_mse": ("hidden_widths", "256 256,256 256,256,256 256,256,256,256".split(), {"loss": "mse"},
                  "Jiang et al. (MSE on raw logits): depth shows no clear trend"),
    "loss": ("loss", ["kl", "mse"], {},
             "Jiang et al. (MSE on raw logits): student (aux only) 27.1 % ± 3.3, cross-model 9.3 % ± 1.8 (20 runs)"),
    "temperature": ("temperature", ["1", "2", "4", "8"], {}, "KL with a softened softmax (Hinton et al.)"),
    "inputs": ("student_inputs", ["uniform", "gaussian", "task", "fashion-mnist"], {},
               "what the students are distilled on"),
    "input_mix": ("input_mix", ["0", "0.25", "0.5", "0.75", "1"], {"student_inputs": "mix"},
                  "inputs alpha * MNIST image + (1 - alpha) * uniform noise"),
    "init_noise": ("init_noise", "0 0.005 0.01 0.02 0.05 0.1 0.2 0.5 1".split(), {},
                   "Jiang et al. (MSE): 27.7 % ± 3.1 at sigma = 0 falling to about 10.5 % ± 2.9 for sigma >= 0.2"),
    "init_noise_orthogonal": ("init_noise", "0 0.005 0.01 0.02 0.05 0.1 0.2 0.5 1".split(),
                              {"init_noise_kind": "orthogonal"},
                              "Jiang et al.: noise orthogonal to the gradient degrades the same way"),
}


def published_sweep_main(name: str, out_root: str | os.PathLike, argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Command line of ``experiments/sweep_<name>.py``: regenerate ``<out_root>/<name>/``."""
    import argparse

    field, values, changes, finding = PUBLISHED_SWEEPS[name]
    ap = argparse.ArgumentParser(description=f"The Figure-10 protocol against {field} = {' '.join(values)} "
                                             f"(paper settings otherwise). Published: {finding}.")
    ap.add_argument("--seeds", "--runs", dest="seeds", type=int, default=10, help="runs per value (default 10)")
    ap.add_argument("--values", nargs="+", default=values, help="override the values")
    ap.add_argument("--data-dir", default=None, help="data root holding mnist/ (and fashion-mnist/)")
    ap.add_argument("--out", default=str(Path(out_root) / name),
                    help=f"output directory (default {Path(out_root) / name})")
    ap.add_argument("--on-divergence", choices=("warn", "fail"), default="warn",
                    help="diverged runs: warn and mark them (default), or fail without writing the summary")
    a = ap.parse_args(argv)
    base = Config(n_runs=a.seeds, **changes)
    return run_sweep(field, parse_values(field, a.values), base, data_dir=a.data_dir, out_dir=a.out,
                     on_divergence=a.on_divergence)
