"""The paper's Figure 10 end to end: load data, run the experiment, write JSON, CSV and PNG."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable

from .config import Config
from .data import load_dataset
from .experiment import input_pool, run_experiment
from .plotting import plot_fig10
from .results import experiment_record, format_table, write_results


def reproduce(cfg: Config = Config(), *, data_dir: str | os.PathLike | None = None,
              out_dir: str | os.PathLike = "results", stem: str = "fig10", progress: bool = True,
              log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run the Figure-10 protocol for ``cfg`` and write ``<stem>.{json,csv,png}`` under ``out_dir``.

    The configuration and the data files are checked before any compute. Returns the results
    record (the JSON's content) with the written paths under the key ``"files"``.
    """
    data = load_dataset(cfg.dataset, data_dir)
    cfg.check_data(data.train_images.shape[0], data.train_images.shape[1])
    log(f"data: {cfg.dataset} from {data.source_dir} (sha256 verified)")
    result = run_experiment(cfg, data, progress=progress, log=log, pool=input_pool(cfg, data, data_dir=data_dir))
    record = experiment_record(result, data)
    files = write_results(record, out_dir, stem)
    files["png"] = plot_fig10(record, Path(out_dir) / f"{stem}.png")
    log(format_table(record))
    log(f"compile {result.compile_s:.1f} s, run {result.run_s:.1f} s on {', '.join(result.devices)}")
    for kind, path in files.items():
        log(f"wrote {path}")
    return {**record, "files": {k: str(v) for k, v in files.items()}}
