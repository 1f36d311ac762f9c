"""The paper's Figure 10 end to end: load data, run the experiment, write JSON, CSV and PNG."""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable

from ..core.config import Config
from ..core.data import load_dataset
from ..core.distributed import main_print
from ..studies.figure10 import format_acceptance, input_dataset, input_pool, run_experiment
from ..report.plotting import plot_fig10
from ..core.results import (DivergenceWarning, check_on_divergence, check_stem_outputs, experiment_record,
                            format_health, format_table, write_results)


def reproduce(cfg: Config = Config(), *, data_dir: str | os.PathLike | None = None,
              out_dir: str | os.PathLike = "results", stem: str = "fig10", progress: bool = True,
              log: Callable[[str], None] = main_print, on_divergence: str = "warn") -> dict[str, Any]:
    """Run the Figure-10 protocol for ``cfg`` and write ``<stem>.{json,csv,png}`` under ``out_dir``.

    The configuration, the output directory (:func:`.results.check_output`) and the data files are
    checked before any compute. Diverged runs (non-finite parameters, a teacher no better than its
    reference: the record's ``health``) are reported and marked on the figure; with
    ``on_divergence="fail"`` a ``DivergenceError`` is raised instead and nothing is written.
    With the paper's settings the table is followed by the acceptance check
    (:func:`~subliminal_mlp.studies.figure10.format_acceptance`).
    Returns the results record (the JSON's content) with the written paths under the key ``"files"``.
    With several processes (:mod:`.distributed`) every process runs it and gets the record; only
    process 0 writes and logs (the default ``log`` prints in process 0 only).

    A small protocol (as :func:`~subliminal_mlp.studies.figure10.run_experiment`'s example: seconds) into a
    temporary directory; the files read back, and a CI recomputed with numpy:

    >>> import os, tempfile, numpy as np
    >>> import subliminal_mlp as sm
    >>> cfg = sm.Config(hidden_widths=(16,), teacher_epochs=1, student_epochs=1, n_noise=256, batch_size=256,
    ...                 learning_rate=1e-3, n_runs=2)
    >>> with tempfile.TemporaryDirectory() as out:
    ...     record = sm.reproduce(cfg, out_dir=out, progress=False, log=lambda line: None)
    ...     back = sm.read_results(record["files"]["json"], format="subliminal-mlp/fig10")
    ...     with open(record["files"]["csv"]) as f:
    ...         csv_lines = f.read().splitlines()
    ...     files = sorted(os.listdir(out))
    >>> files, csv_lines[0], len(csv_lines) - 1, back["models"] == record["models"]  # 6 models x 2 runs
    (['fig10.csv', 'fig10.json', 'fig10.png'], 'model,run,accuracy', 12, True)
    >>> aux = record["models"]["student_aux"]
    >>> bool(np.isclose(aux["ci95"], 1.96 * np.std(aux["accuracies"], ddof=1) / np.sqrt(2)))
    True
    """
    check_on_divergence(on_divergence)
    check_stem_outputs(out_dir, stem, ("json", "csv", "png"))
    data = load_dataset(cfg.dataset, data_dir)
    cfg.check_dataset(data)
    log(f"data: {cfg.dataset} from {data.source_dir} (sha256 verified)")
    with warnings.catch_warnings():  # reported below, after the table
        warnings.simplefilter("ignore", DivergenceWarning)
        source = input_dataset(cfg, data_dir)
        if source is not None:
            log(f"inputs: {source.name} from {source.source_dir} (sha256 verified)")
        result = run_experiment(cfg, data, progress=progress, log=log, pool=input_pool(cfg, data, source=source),
                                on_divergence=on_divergence)
    record = experiment_record(result, data, inputs=source)
    # The three files replace a previous run's together (the record last): an interruption while they are made (the
    # figure takes seconds to draw) leaves the previous run's files as they were, never a mixed set.
    files = write_results(record, out_dir, stem, figure=plot_fig10)
    log(format_table(record))
    checks = format_acceptance(record)
    if checks:
        log(checks)
    log(f"compile {result.compile_s:.1f} s, run {result.run_s:.1f} s on {', '.join(result.devices)}")
    for kind, path in files.items():
        log(f"wrote {path}")
    if not record["health"]["ok"]:
        warnings.warn(format_health(record["health"], cfg.n_runs), DivergenceWarning, stacklevel=2)
    return {**record, "files": {k: str(v) for k, v in files.items()}}
