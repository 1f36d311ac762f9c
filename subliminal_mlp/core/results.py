"""Statistics, and the one record format of every experiment (JSON, CSV), written atomically.

Every experiment of this library writes one JSON **envelope** (built by :func:`envelope`), in this
key order::

    {
      "format": "subliminal-mlp/<kind>", "format_version": 1,
      "config": {...every Config field...},
      "n_runs": 100, "seeds": {"seed": 0, "runs": [0, ..., 99]},
      ...the payload: the experiment's own keys...,
      "data": {"dataset": "mnist", "source_dir": "...", "sha256": {file: sha256 of uncompressed},
               "subset": {...any filter applied to it...}},
               (for arrays not as the loader decoded them from the files, e.g. relabelled:
                "arrays": {field: fingerprint}, "derived_from": {"source_dir", "sha256"}, in place of
                "source_dir" and "sha256": :func:`data_record`)
      "environment": {"subliminal_mlp": .., "jax": .., "jaxlib": .., "flax": .., "optax": ..,
                      "numpy": .., "python": .., "platform": .., "matmul_precision": .., "x64": ..,
                      "command": "the process's command line",
                      "source": {"commit": "git commit of the library's checkout", "dirty": false},
                      "devices": [..], ...},
      "timing": {"compile_s": .., "run_s": .., "total_s": .., "peak_rss_mb": ..},
      "created": "ISO-8601 UTC time"
    }

``source`` is there only when the library runs from a git checkout that tracks it (an editable
install or ``PYTHONPATH``): the commit the code was at, and ``dirty: true`` when the library's files
differed from it; the version string alone cannot tell two commits apart. ``command`` is the command
line as given, paths included. ``peak_rss_mb`` is the process's peak
resident memory when the record was written: in a command that makes several records (``figures``
of several figures), the largest of theirs so far, not this record's own. Records written before
``command`` and ``source`` were added have neither.

and, where it has one, a CSV through one writer (:func:`csv_text`, :func:`write_record`).
:func:`read_results` reads any of them back and turns a missing, truncated or foreign file into a
:class:`RecordError` that names the file; :data:`FORMATS` lists the formats it knows.

The Figure-10 record (``format: "subliminal-mlp/fig10"``, ``format_version: 1``) is stable; users'
scripts read it. Its payload is::

      "models": {"reference": {"mean": .., "ci95": .., "accuracies": [one per run]}, "teacher": ..,
                 "student_aux": .., "student_all": .., "cross_aux": .., "cross_all": ..},
      "chance": 0.1,

      "health": {"ok": true, "nonfinite": [], "teacher_not_better": [], "teacher_margin": 0.05},

its ``data`` has no ``subset``, its ``environment`` adds ``run_batch`` (and ``values_in_program``
when a sweep ran several values in one program), and its CSV is ``model,run,accuracy``. ``health``
(:func:`health`) says which runs diverged: a model whose parameters ended non-finite has accuracy
``NaN`` (JSON ``NaN``, which ``read_results`` reads back), never the accuracy of NaN parameters;
records written before it was added have no ``health``.

``ci95`` is the paper's approximate 95 % interval half-width ``1.96 · std / √n`` with the sample
standard deviation (ddof = 1); it is ``null`` for a single run.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import hashlib
import io
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import types
import tempfile
from functools import lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .config import MODELS, ConfigError, is_integer, plain_scalar  # noqa: F401 (plain_scalar: used here and re-exported)

FORMAT = "subliminal-mlp/fig10"
FORMAT_VERSION = 1
#: Every record format this library reads: name -> the newest ``format_version`` it understands.
#: Extend it with :func:`register_format`.
FORMATS: dict[str, int] = {
    FORMAT: FORMAT_VERSION,
    "subliminal-mlp/sweep": 1,
    "subliminal-mlp/theorem": 2,  # version 2: the common envelope (subliminal_mlp.theory.theorem.FORMAT_VERSION)
    "subliminal-mlp/alignment": 1,
    "subliminal-mlp/heads": 1,
    "subliminal-mlp/omitted-digit": 1,
    "subliminal-mlp/traits": 1,
    "subliminal-mlp/trajectory": 1,
    "subliminal-mlp/demo": 1,
    "subliminal-mlp/mitigations": 1,
    "subliminal-mlp/split-heads": 1,
    "subliminal-mlp/teacher-task": 1,
    "subliminal-mlp/input-families": 1,
    "subliminal-mlp/one-step": 1,
}
#: Keys a record of these formats must have for this library to use it (it reads them back).
REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    FORMAT: ("config", "n_runs", "models"),
    "subliminal-mlp/sweep": ("param", "values", "labels", "n_runs", "models"),
}
#: The envelope's own keys, which a payload may not use.
ENVELOPE_KEYS = ("format", "format_version", "config", "n_runs", "seeds", "data", "environment", "timing",
                 "created")


def setting_json(value: Any, _seen: frozenset = frozenset()) -> Any:
    """A setting (of a model, an input source, a student) as JSON for a record, one rule for all.

    Numbers, strings and None as they are; numpy and JAX scalars as Python numbers; tuples, lists and
    mappings item by item (sets sorted); an object with a ``describe()`` (a model, an input source) by it; a
    function by its qualified name, or, when it closes over values, by ``{qualified name: {variable:
    value}}`` so that the numbers it was made with are in the record (an optax transformation is
    described by its ``update`` function: ``optax.sgd(0.1)`` and ``optax.adamw(3e-4, ...)`` record
    their factories and step sizes, not one shared ``repr``; a list or tuple of more than 64 items
    in a closure by its length); anything else (a
    ``functools.partial``, a start) by its ``repr`` without memory addresses, so that equal settings
    give equal records. Small arrays become lists, larger ones their shape and dtype.

        >>> import numpy as np, optax
        >>> setting_json((np.float32(0.5), [np.int64(3)], {"f": len}))
        [0.5, [3], {'f': 'len'}]
        >>> def threshold(t):
        ...     return lambda x: x > t
        >>> setting_json(threshold(0.25))
        {'threshold.<lambda>': {'t': 0.25}}
        >>> sgd = setting_json(optax.sgd(0.1))  # {'chain.update_fn': {'update_fns': [... {'scale.update_fn': ...
        >>> "{'step_size': -0.1}" in str(sgd), sgd == setting_json(optax.sgd(0.2))
        (True, False)
    """
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, types.ModuleType):  # a module a function closes over (jnp has .shape and .dtype too)
        return f"module {value.__name__}"
    if id(value) in _seen or len(_seen) > 16:  # a function reachable from its own closure; a deep nest
        return _callable_name(value)
    deeper = _seen | {id(value)}
    if type(value) in (tuple, list):
        return [setting_json(v, deeper) for v in value]
    if isinstance(value, dict):
        return {str(k): setting_json(v, deeper) for k, v in value.items()}
    if isinstance(value, (set, frozenset)):  # in an order that does not depend on the process's hash seed
        return sorted((setting_json(v, deeper) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    if hasattr(value, "shape") and hasattr(value, "dtype"):  # numpy and JAX scalars and arrays
        if np.ndim(value) == 0:
            return plain_scalar(value)
        a = np.asarray(value)
        return a.tolist() if a.size <= 64 else f"array{list(a.shape)} {a.dtype}"
    describe = getattr(value, "describe", None)
    if callable(describe):
        return describe()
    if isinstance(value, tuple) and callable(getattr(value, "init", None)) and callable(getattr(value, "update", None)):
        return setting_json(value.update, deeper)  # an optax GradientTransformation: its update closes over its numbers
    closure = _closure_values(value)
    if closure:
        return {_callable_name(value): {k: f"{type(v).__name__} of {len(v)} items"
                                        if isinstance(v, (list, tuple)) and len(v) > 64 else setting_json(v, deeper)
                                        for k, v in closure.items()}}
    return _callable_name(value)


_DIGESTS: dict = {}


def immutable(a: Any) -> bool:
    """Whether array ``a`` can never change: a JAX array, or a numpy array whose memory is an immutable
    ``bytes`` object (as the loader's arrays are: :func:`~subliminal_mlp.core.data.load_dataset`). A read-only
    numpy array that owns its memory can be made writeable again, and a read-only view changes with the array
    it views: neither is.

    >>> import numpy as np
    >>> a = np.zeros(3)
    >>> a.flags.writeable = False
    >>> immutable(a), immutable(np.frombuffer(bytes(24))[1:])
    (False, True)
    """
    import jax

    if isinstance(a, jax.Array):
        return True
    base = a
    while isinstance(base, np.ndarray):
        if base.flags.writeable:
            return False
        base = base.base
    return isinstance(base, bytes)


def array_digest(a: Any) -> str:
    """SHA-256 of an array's bytes, shape and dtype (memoised per array object while it lives, for arrays
    that cannot change: :func:`immutable`)."""
    memo = _DIGESTS.get(id(a))
    if memo is not None and memo[0] is a:
        return memo[1]
    x = np.ascontiguousarray(np.asarray(a))
    h = hashlib.sha256(f"{x.dtype.str}{x.shape}".encode())
    h.update(memoryview(x).cast("B"))
    digest = h.hexdigest()
    if immutable(a):  # an array that may change in place is hashed again each time
        if len(_DIGESTS) > 8:
            _DIGESTS.clear()
        _DIGESTS[id(a)] = (a, digest)
    return digest


def array_fingerprint(array: Any) -> str:
    """An array as a record names it: shape, dtype and the first 16 hex digits of its :func:`array_digest`, so
    that two records of different image pools or task arrays of one shape differ.

    >>> import numpy as np
    >>> array_fingerprint(np.zeros((2, 3), np.float32))
    'array[2, 3] float32 sha256:3f4eb10c903e8c98'
    """
    return f"array{list(np.shape(array))} {np.asarray(array).dtype} sha256:{array_digest(array)[:16]}"


class ArrayFingerprint:
    """:func:`array_fingerprint` of an array, computed when a record first describes it (``describe()``, as
    :func:`setting_json` reads it), then kept: a large pool is hashed once, and only if a record is made."""

    def __init__(self, array: Any) -> None:
        self._array, self._text = array, None

    def describe(self) -> str:
        if self._text is None:
            self._text, self._array = array_fingerprint(self._array), None
        return self._text

    def __repr__(self) -> str:
        return f"ArrayFingerprint({self.describe()})"


def _callable_name(value: Any) -> str:
    """A function's qualified name without ``<locals>.`` (``scale_by_adam.update_fn``); anything
    else's ``repr`` without memory addresses."""
    name = getattr(value, "__qualname__", None)
    if not isinstance(name, str):
        name = getattr(value, "__name__", None)
    return name.replace("<locals>.", "") if isinstance(name, str) else re.sub(r" at 0x[0-9a-fA-F]+", "", repr(value))


def _closure_values(f: Any) -> dict[str, Any]:
    """The values a plain Python function closes over, by variable name (empty for anything else)."""
    code, cells = getattr(f, "__code__", None), getattr(f, "__closure__", None)
    if code is None or not cells or not isinstance(getattr(f, "__qualname__", None), str):
        return {}
    out = {}
    for name, cell in zip(code.co_freevars, cells):
        try:
            out[name] = cell.cell_contents
        except ValueError:  # a variable not yet bound
            pass
    return out


def mean_ci95(values) -> tuple[float, float | None]:
    """``(mean, 1.96 · std / √n)`` with the sample std (ddof = 1); the half-width is None for n = 1.

    >>> mean, ci = mean_ci95([0.25, 0.5, 0.75])  # std = 0.25, so 1.96 · 0.25 / √3
    >>> mean, round(ci, 4)
    (0.5, 0.2829)
    >>> mean_ci95([0.7])
    (0.7, None)
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("mean_ci95 needs at least one value")
    if v.size == 1:
        return float(v[0]), None
    return float(v.mean()), float(1.96 * v.std(ddof=1) / np.sqrt(v.size))


#: Student's t quantiles t(0.975, n − 1) for n = 2..9 runs: the half-width a 95 % CI of the mean would have
#: per sd/√n, against the 1.96 of :func:`mean_ci95` (the paper's normal approximation, right for many runs).
T975 = {2: 12.706, 3: 4.303, 4: 3.182, 5: 2.776, 6: 2.571, 7: 2.447, 8: 2.365, 9: 2.306}


def few_runs_note(n_runs: int) -> str | None:
    """For 2..9 runs, a line saying that ``1.96 · sd / √n`` understates a 95 % CI of the mean (Student's t
    would multiply sd/√n by ``T975[n]``); None otherwise (one run has no CI; from 10 runs the t interval is
    at most 1.15× as wide, at the paper's 100 runs 1.01×).

    >>> print(few_runs_note(4))
    note: with 4 runs, ± 1.96·sd/√n (the paper's approximate 95 % CI) is narrow: a t interval is 1.6× as wide (3.182·sd/√n).
    >>> few_runs_note(1), few_runs_note(10)
    (None, None)
    """
    if n_runs not in T975:
        return None
    t = T975[n_runs]
    return (f"note: with {n_runs} runs, ± 1.96·sd/√n (the paper's approximate 95 % CI) is narrow: a t interval is "
            f"{t / 1.96:.1f}× as wide ({t}·sd/√n).")


def summary(values) -> dict[str, Any]:
    """``{"mean", "ci95", "values": [...]}`` of per-run values (see :func:`mean_ci95`).

    >>> import numpy as np
    >>> s = summary([0.25, 0.5, 0.75, 1.0])
    >>> s["values"], bool(np.isclose(s["mean"], 0.625))
    ([0.25, 0.5, 0.75, 1.0], True)
    >>> bool(np.isclose(s["ci95"], 1.96 * np.std(s["values"], ddof=1) / np.sqrt(4)))
    True
    """
    m, ci = mean_ci95(values)
    return {"mean": m, "ci95": ci, "values": [float(v) for v in values]}


def mean_ci95_columns(values) -> dict[str, list]:
    """``{"mean": [...], "ci95": [...]}``: :func:`mean_ci95` of every column of a (runs, T) array.

    Three runs of a quantity at two steps, and one run (no CI):

    >>> import numpy as np
    >>> acc = np.array([[0.1, 0.5], [0.3, 0.7], [0.2, 0.9]])
    >>> cols = mean_ci95_columns(acc)
    >>> np.allclose(cols["mean"], acc.mean(0)), np.allclose(cols["ci95"], 1.96 * acc.std(0, ddof=1) / np.sqrt(3))
    (True, True)
    >>> mean_ci95_columns([[0.1, 0.5]])
    {'mean': [0.1, 0.5], 'ci95': [None, None]}
    """
    stats = [mean_ci95(column) for column in np.asarray(values).T]
    return {"mean": [m for m, _ in stats], "ci95": [c for _, c in stats]}


class OutputError(ConfigError):
    """An output destination that cannot be written (found by :func:`check_output`, before any compute)."""


def _first_existing(path: Path) -> Path:
    """``path`` or its nearest ancestor that exists (``.`` for a relative path)."""
    for p in (path, *path.parents):
        if p.exists() or p.is_symlink():
            return p
    return Path(".")


def _check_dir(d: Path, file: Path | None = None) -> None:
    """Raise OutputError unless directory ``d`` exists writable or can be created (for ``file`` in it, if given)."""
    what = f"cannot write {file}: its directory {d}" if file is not None else f"cannot write the results to {d}: it"
    other = "file" if file is not None else "directory"  # what the user should choose instead
    if d.is_symlink() and not d.exists():
        raise OutputError(f"{what} is a dangling symbolic link. Choose another output directory or remove the link.")
    if d.exists():
        if not d.is_dir():
            raise OutputError(f"{what} is an existing file, not a directory. Choose another output "
                              f"{other} or remove the file.")
        if not os.access(d, os.W_OK | os.X_OK):
            raise OutputError(f"{what} is not a writable directory. Choose another output "
                              f"{other} or change its permissions.")
        return
    base = _first_existing(d)
    what = f"cannot write {file}" if file is not None else f"cannot create the output directory {d}"
    if not base.is_dir():
        raise OutputError(f"{what}: {base} is a file, not a directory. Choose another output "
                          f"{other}.")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what}: {base} is not writable. Choose another output "
                          f"{other} or change the permissions of {base}.")


def check_output(path: str | os.PathLike, *, kind: str = "dir", files: Iterable[str] = ()) -> Path:
    """Check, before any compute, that results can be written to ``path``; return it as a ``Path``.

    ``kind="dir"``: ``path`` is an output directory: an existing, writable directory, or one that
    can be created (its nearest existing ancestor is a writable directory); each of ``files``
    (names written inside it) must be a plain file name (no directory part: a ``--stem`` of
    ``../x`` would write elsewhere), short enough for the file system, and not an existing
    directory. ``kind="file"``: ``path`` is an output file, written atomically (a temporary file
    beside it, then a rename): its directory is checked as above and ``path`` must not be a
    directory. Permissions can say yes where writing fails (``/proc``, a read-only mount, as root),
    so an empty temporary file is created in the nearest existing directory and removed again.
    Raises :class:`OutputError` (a ``ConfigError``: the command line's ``subliminal-mlp: error:
    ...``, exit status 2) naming the path and the problem. With several processes
    (:mod:`~subliminal_mlp.core.distributed`) only process 0 writes (:func:`atomic_write`), so only
    process 0 looks at the file system; the others check the file names alone (their host may not
    see, or may not be allowed to write, process 0's directory).

    A directory still to be made passes (and is not made yet); an existing file in its place, or a
    file name with a directory part, does not:

    >>> import os, tempfile
    >>> from subliminal_mlp import check_output
    >>> tmp = tempfile.TemporaryDirectory()
    >>> out = check_output(os.path.join(tmp.name, "results", "fig10"), files=["fig10.json"])
    >>> out.name, out.exists()
    ('fig10', False)
    >>> open(os.path.join(tmp.name, "taken"), "w").close()
    >>> check_output(os.path.join(tmp.name, "taken"))
    Traceback (most recent call last):
    subliminal_mlp.core.results.OutputError: cannot write the results to .../taken: it is an existing file, ...
    >>> tmp.cleanup()
    >>> check_output(".", files=["../fig10.json"])
    Traceback (most recent call last):
    subliminal_mlp.core.results.OutputError: cannot write '../fig10.json' in .: give a file name without a ...
    """
    if kind not in ("dir", "file"):
        raise ValueError(f"kind = {kind!r} is invalid: choose 'dir' or 'file'.")
    raw = str(os.fspath(path))
    what = "directory" if kind == "dir" else "file"
    if not raw.strip():  # Path("") is ".": the results would land in the working directory unasked
        raise OutputError(f"the output {what} is an empty path ({raw!r}): give one (\".\" for the working "
                          "directory).")
    seps = os.sep + (os.altsep or "")
    if kind == "file" and raw.endswith(tuple(seps)):
        raise OutputError(f"cannot write the file {raw}: a path that ends with a separator names a directory. "
                          f"Give a file name (e.g. {raw.rstrip(seps) or 'out'}.json).")
    path = Path(path)
    files = list(files)  # an iterator would be used up by the first check
    d = path if kind == "dir" else path.parent
    names = files + ([path.name] if kind == "file" else [])
    for name in files:
        if not name or Path(name).name != name or name in (".", ".."):
            raise OutputError(f"cannot write {name!r} in {d}: give a file name without a directory part "
                              "(choose the directory with the output option).")
    if not _is_main_process():
        return path
    try:
        _check_dir(d, None if kind == "dir" else path)
        base = _first_existing(d)
        limit = _name_max(base)
        for name in names:
            if len(f".{name}.XXXXXXXX".encode()) > limit:  # the temporary file beside it is a little longer
                raise OutputError(f"cannot write {d / name}: the file name is longer than the file system takes "
                                  f"({limit} bytes with the temporary file's suffix). Choose a shorter name.")
        targets = [d / name for name in files] + ([path] if kind == "file" else [])
        for t in targets:
            if t.is_dir():
                raise OutputError(f"cannot write {t}: it is an existing directory. Choose another output "
                                  f"{'directory' if kind == 'dir' else 'file'} or move the directory away.")
        fd, probe = tempfile.mkstemp(dir=base, prefix=".subliminal-mlp-probe.")
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise OutputError(f"cannot write the results to {path}: {e.strerror or e}. Choose another output "
                          f"{'directory' if kind == 'dir' else 'file'}.") from None
    return path


def _name_max(directory: Path) -> int:
    """The longest file name ``directory``'s file system takes, in bytes (255 where it cannot say)."""
    try:
        return int(os.pathconf(directory, "PC_NAME_MAX"))
    except (AttributeError, OSError, ValueError):
        return 255


#: A trained teacher is "no better than its untrained reference" when its test accuracy does not exceed
#: ``max(reference accuracy, chance) + TEACHER_MARGIN``: a constant predictor reaches the largest class
#: frequency (0.1135 on MNIST), and so does a typical diverged teacher.
TEACHER_MARGIN = 0.05
#: What a command does when runs diverge (:func:`health`): warn (the default) or fail.
ON_DIVERGENCE = ("warn", "fail")


class DivergenceWarning(UserWarning):
    """Some runs diverged (:func:`health`); the results are returned and written, flagged as such."""


class DivergenceError(RuntimeError):
    """Some runs diverged and ``on_divergence="fail"`` was asked: nothing was written.

    ``result`` holds what was computed (or None), ``health`` the :func:`health` entries.
    """

    def __init__(self, message: str, result: Any = None, health: Any = None):
        super().__init__(message)
        self.result = result
        self.health = health


def check_on_divergence(value: Any) -> str:
    """Return ``value`` if it is one of :data:`ON_DIVERGENCE`, else raise ``ConfigError``."""
    if value not in ON_DIVERGENCE:
        raise ConfigError(f"on_divergence = {value!r} is invalid: choose one of {', '.join(ON_DIVERGENCE)}.")
    return value


def health(models: Sequence[str], accuracies, finite=None, *, chance: float, check_teacher: bool = True,
           margin: float = TEACHER_MARGIN) -> dict[str, Any]:
    """Which runs diverged, machine-readable: the ``health`` entry of the records.

    ``accuracies`` is ``(n_runs, n_models)`` (columns in ``models`` order), ``finite`` the same
    shape, True where every parameter of that model ended finite (computed inside the compiled
    program; None: a NaN accuracy is taken as non-finite). Returns::

        {"ok": bool,                                  # nothing below
         "nonfinite": [[run, model], ...],            # non-finite parameters (or loss): accuracy NaN
         "teacher_not_better": [run, ...],            # teacher <= max(reference, chance) + margin
         "teacher_margin": margin}

    The teacher test needs the ``"reference"`` and ``"teacher"`` columns and ``check_teacher``
    (False when the teacher is not trained, e.g. ``teacher_epochs = 0``); a NaN teacher counts as
    not better too.
    """
    models = list(models)
    acc = np.asarray(accuracies, np.float64)
    bad = ~np.isfinite(acc)
    if finite is not None:
        bad |= ~np.asarray(finite, bool)
    nonfinite = [[int(r), models[int(j)]] for r, j in zip(*np.nonzero(bad))]
    not_better: list[int] = []
    if check_teacher and "teacher" in models and "reference" in models:
        teacher = acc[:, models.index("teacher")]
        bound = np.maximum(acc[:, models.index("reference")], chance) + margin
        not_better = [int(r) for r in np.nonzero(~(teacher > bound))[0]]
    return {"ok": not nonfinite and not not_better, "nonfinite": nonfinite, "teacher_not_better": not_better,
            "teacher_margin": margin}


def _runs_text(runs: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    runs = sorted(set(int(r) for r in runs))
    parts, i = [], 0
    while i < len(runs):
        j = i
        while j + 1 < len(runs) and runs[j + 1] == runs[j] + 1:
            j += 1
        parts.append(str(runs[i]) if i == j else f"{runs[i]}-{runs[j]}")
        i = j + 1
    return ", ".join(parts)


def health_title(*healths: dict[str, Any]) -> str:
    """What unhealthy :func:`health` entries found, in a few words: ``"diverged runs"`` where a run has
    non-finite parameters, else ``"runs whose teacher did not learn"`` (no better than its reference)."""
    return "diverged runs" if any(h.get("nonfinite") for h in healths) else "runs whose teacher did not learn"


def format_health(h: dict[str, Any] | None, n_runs: int, label: str = "") -> str:
    """What :func:`health` found, for the terminal ("" when ``h`` is ok or None): which runs, which models."""
    if not h or h.get("ok", True):
        return ""
    lines = [f"{health_title(h)}{' (' + label + ')' if label else ''}:"]
    by_model: dict[str, list[int]] = {}
    for run, model in h["nonfinite"]:
        by_model.setdefault(model, []).append(run)
    for model, runs in by_model.items():
        lines.append(f"  {model}: non-finite parameters in run(s) {_runs_text(runs)} ({len(runs)} of {n_runs}); "
                     "its accuracy there is NaN")
    if h["teacher_not_better"]:
        runs = h["teacher_not_better"]
        lines.append(f"  teacher no better than its untrained reference (accuracy <= max(reference, chance) + "
                     f"{h['teacher_margin']:g}) in run(s) {_runs_text(runs)} ({len(runs)} of {n_runs})")
    if h["nonfinite"]:
        lines.append("  (lower the learning rate? are the inputs finite? the record's \"health\" lists them)")
    else:  # a teacher at its start: it diverged to a constant, or it never learned (too few steps, too small a rate)
        lines.append("  (a teacher that diverged, or one that did not learn: check the learning rate and "
                     "teacher_epochs; the record's \"health\" lists them)")
    return "\n".join(lines)


def distributed_process() -> tuple[int, int] | None:
    """``(this process's index, the number of processes)`` where JAX's distributed runtime is running in this
    process, else None. Never imports JAX nor starts a backend (for code that may run before either)."""
    jax = sys.modules.get("jax")
    if jax is None or not jax.distributed.is_initialized():
        return None
    return jax.process_index(), jax.process_count()


def _is_main_process() -> bool:
    """Process 0 of a distributed run (:func:`.distributed.is_main_process`); True in one process, without
    starting a JAX backend (:func:`distributed_process`)."""
    process = distributed_process()
    return process is None or process[0] == 0


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Create ``path`` atomically: ``write(tmp)`` fills a temporary file beside it, then ``os.replace``.

    Readers never see a partial file; on failure the temporary file is removed and ``path`` is
    left as it was. The file gets the usual permissions (0666 less the umask). With several
    processes (:mod:`~subliminal_mlp.core.distributed`) only process 0 writes: elsewhere this returns
    ``path`` and writes nothing (every file of the library is written through here).

    A write that fails halfway leaves the old file, and no temporary file beside it:

    >>> import os, tempfile
    >>> from pathlib import Path
    >>> def half_then_fail(tmp):
    ...     Path(tmp).write_text("new, half wri")
    ...     raise OSError("disk full")
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = atomic_write(Path(d) / "record.json", lambda tmp: Path(tmp).write_text("old"))
    ...     try:
    ...         atomic_write(path, half_then_fail)
    ...     except OSError as e:
    ...         print(e, path.read_text(), os.listdir(d))
    disk full old ['record.json']
    """
    path = Path(path)
    if not _is_main_process():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=path.suffix)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:  # on disk before the rename: a crash of the machine leaves the old file
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)
        if _staged is not None:  # inside replaced_together: put in place when the block ends
            _staged.append((tmp, path))
            tmp = None
        else:
            os.replace(tmp, path)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.unlink(tmp)
    return path


_staged: list[tuple[str, Path]] | None = None


@contextlib.contextmanager
def replaced_together():
    """The files :func:`atomic_write` writes inside the block (a record, its CSV and its figure) are each made
    in full beside their place, and put in place one after another, in the order written, only when the block
    ends: an interruption while they are made (drawing a figure takes seconds) leaves every old file as it was,
    never a new figure beside an old record. On an error or an interruption in the block none is put in place
    and their temporary files are removed. Nested blocks are one (the outermost puts them in place).

    >>> import os, tempfile
    >>> from pathlib import Path
    >>> with tempfile.TemporaryDirectory() as d:
    ...     old = [atomic_write_text(Path(d) / name, "old") for name in ("fig.json", "fig.png")]
    ...     try:
    ...         with replaced_together():
    ...             _ = atomic_write_text(Path(d) / "fig.png", "new")
    ...             raise KeyboardInterrupt  # before the record is written
    ...     except KeyboardInterrupt:
    ...         print([p.read_text() for p in old], sorted(os.listdir(d)))
    ...     with replaced_together():
    ...         paths = [atomic_write_text(Path(d) / name, "new") for name in ("fig.png", "fig.json")]
    ...         inside = [p.read_text() for p in paths]
    ...     print(inside, [p.read_text() for p in paths])
    ['old', 'old'] ['fig.json', 'fig.png']
    ['old', 'old'] ['new', 'new']
    """
    global _staged
    if _staged is not None:
        yield
        return
    _staged = staged = []
    try:
        yield
    except BaseException:
        _staged = None
        for tmp, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise
    _staged = None
    for i, (tmp, path) in enumerate(staged):
        try:
            os.replace(tmp, path)
        except BaseException:
            for t, _ in staged[i:]:
                with contextlib.suppress(OSError):
                    os.unlink(t)
            raise


def _read_umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


#: The process's umask, read once at import (reading it sets it for a moment, which other threads would see).
_UMASK = _read_umask()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_write`), as UTF-8; missing directories are made.

    >>> import os, tempfile
    >>> with tempfile.TemporaryDirectory() as d:
    ...     path = atomic_write_text(os.path.join(d, "new", "notes.txt"), "σ = 0.01")
    ...     print(path.read_bytes().decode("utf-8"), os.listdir(path.parent))
    σ = 0.01 ['notes.txt']
    """
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB.

    On Linux the kernel's high-water mark of this process's own memory (``VmHWM`` in
    ``/proc/self/status``): ``getrusage``'s ``ru_maxrss`` starts a new process at its parent's peak
    and keeps it across ``exec``, so a child of a large process (a benchmark's, a test's) would
    report the parent's peak. Elsewhere ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except (OSError, ValueError, IndexError):
        pass
    import resource

    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def command_line(argv: Sequence[str] | None = None) -> str:
    """The command this process runs, as a shell line, paths as they were given: ``subliminal-mlp figures
    demo``, ``python experiments/sweep_width.py --seeds 10``, ``python -m subliminal_mlp reproduce``, or a
    notebook kernel's own command line (``argv`` defaults to ``sys.argv``; ``python -m pkg.sub`` is named by
    the module Python ran, else by the packages around the ``__main__.py`` it was given).

    >>> command_line(["/home/me/.venv/bin/subliminal-mlp", "reproduce", "--seeds", "4"])
    'subliminal-mlp reproduce --seeds 4'
    >>> command_line(["experiments/fig10_mnist.py", "--out", "my results"])
    "python experiments/fig10_mnist.py --out 'my results'"
    """
    argv = list(sys.argv if argv is None else argv) or [""]
    head, rest = argv[0], argv[1:]
    path = Path(head)
    if path.name == "__main__.py":
        words = ["python", "-m", _main_module(path, real=argv[0] == (sys.argv[:1] or [None])[0])]
    elif path.suffix == ".py":
        words = ["python", head]
    elif path.stem == "subliminal-mlp":  # the console script (subliminal-mlp.exe on Windows)
        words = ["subliminal-mlp"]
    else:
        words = [head] if head else []
    return shlex.join(words + rest)


def _main_module(path: Path, real: bool) -> str:
    """The module ``python -m`` ran as ``path`` (a ``__main__.py``): this process's ``__main__`` module's own
    name where ``path`` is its file, else the dotted name of the packages (folders with ``__init__.py``) around it."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if real and spec is not None and spec.name:
        return spec.name.removesuffix(".__main__")
    names, folder = [], path.parent
    while folder.name and (folder / "__init__.py").is_file():
        names.insert(0, folder.name)
        folder = folder.parent
    return ".".join(names) or path.parent.name


@lru_cache(maxsize=None)
def source_revision() -> dict[str, Any] | None:
    """``{"commit": sha, "dirty": bool}`` of the git repository that tracks this library's files, else ``None``.

    ``None`` for an installed copy or a copy that its enclosing repository does not track (``git ls-files``
    does not list the package), or where git is missing. ``dirty`` is whether the library's own files
    differ from that commit (``git status --porcelain --untracked-files=no -- <package>``; a changed README
    or a regenerated figure does not count). ``GIT_DIR`` and ``GIT_WORK_TREE`` are ignored: the
    repository is the one around the package. Asked once per process, at the first record it writes.
    """
    package = Path(__file__).resolve().parents[1]
    env = {k: v for k, v in os.environ.items() if k not in ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE")}
    try:
        def git(*args: str) -> str:
            return subprocess.run(["git", "-C", str(package), *args], capture_output=True, text=True, timeout=30,
                                  check=True, env=env).stdout.strip()

        if not git("ls-files", "--", "__init__.py"):  # a copy the repository around it does not track
            return None
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "."))
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": commit, "dirty": dirty} if re.fullmatch(r"[0-9a-f]{40,64}", commit) else None


def environment(devices: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    """Package versions, Python, OS, devices, the float32 matmul precision and x64 mode, the command line
    (:func:`command_line`) and, from a git checkout, its commit (:func:`source_revision`), for the record.

    ``matmul_precision`` is ``jax_default_matmul_precision`` ("default" when unset): on CPU every
    float32 matmul is float32 at any setting; on NVIDIA GPUs "default" means TensorFloat-32 inputs
    (set ``JAX_DEFAULT_MATMUL_PRECISION=float32`` for float32 arithmetic). ``x64`` is the process-wide
    ``jax_enable_x64`` when the record is written: a computation that enables float64 in a scope (the
    theorem check, ``theory.float64()``) says so in its own settings (``precision``).
    """
    env: dict[str, Any] = {}
    for pkg in ("subliminal-mlp", "jax", "jaxlib", "flax", "optax", "numpy"):
        try:
            env[pkg.replace("-", "_")] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env[pkg.replace("-", "_")] = None
    env["python"] = sys.version.split()[0]
    env["platform"] = platform.platform()
    import jax

    env["matmul_precision"] = str(jax.config.jax_default_matmul_precision or "default")
    env["x64"] = bool(jax.config.jax_enable_x64)  # 64-bit mode changes the float32 programs' numbers too
    env["command"] = command_line()
    source = source_revision()
    if source is not None:
        env["source"] = source
    if devices is not None:
        env["devices"] = list(devices)
    env.update(extra)
    return env


def register_format(name: str, version: int = 1) -> None:
    """Make :func:`read_results` accept records of format ``name`` up to ``format_version`` ``version``.

    Raises ``ValueError`` unless ``name`` is ``"subliminal-mlp/<kind>"`` and ``version`` an integer
    >= 1; registering a known format again keeps the newer of the two versions.
    """
    if not (isinstance(name, str) and name.startswith("subliminal-mlp/") and len(name) > len("subliminal-mlp/")):
        raise ValueError(f"format name {name!r} is invalid: it must be 'subliminal-mlp/<kind>'.")
    if not is_integer(version, 1):
        raise ValueError(f"format_version {version!r} of {name} is invalid: it must be an integer >= 1.")
    FORMATS[name] = max(version, FORMATS.get(name, 0))


class RecordError(ValueError):
    """A results file that cannot be used: missing, damaged, of another format or of a newer version.

    The message names the file, what was found and what was expected.
    """


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def data_record(dataset=None, *, name: str | None = None, subset: dict[str, Any] | None = None, inputs=None,
                **extra: Any) -> dict[str, Any]:
    """The ``data`` entry of a record: which data, verified how, and what part of it was used.

    Returns ``{"dataset": name, "source_dir": ..., "sha256": {file: sha256}}`` (the SHA-256 of each
    file's *uncompressed* content, not of the ``.gz``) for a dataset as the loader made it
    (:func:`~subliminal_mlp.core.data.from_files`; ``name`` defaults to ``dataset.name``; with
    ``dataset=None`` only ``{"dataset": name}``). Any other dataset (arrays of one's own, or a loaded
    one's replaced) is named by what was computed on: ``{"dataset": name, "arrays": {field:
    fingerprint}}`` (:func:`array_fingerprint` of each of its four arrays), then ``"derived_from":
    {"source_dir": ..., "sha256": ...}`` with the directory and checksums it carries, if any. Then
    ``"subset"`` when given (any filter applied to the data, e.g.
    ``{"classes": [0, 1, 2, 3, 4], "n_train": 30596, "n_test": 5139}``), then ``"inputs"``: the
    ``data_record`` of ``inputs`` when given (the dataset the students' images came from, when it is
    not the task's: Fashion-MNIST), then ``extra`` as given.

    >>> data_record(name="mnist", subset={"classes": [0, 1]})
    {'dataset': 'mnist', 'subset': {'classes': [0, 1]}}
    >>> import dataclasses
    >>> from subliminal_mlp import load_mnist
    >>> ds = load_mnist()
    >>> rec = data_record(ds)  # a loaded dataset: where its files were, and their checksums
    >>> rec["dataset"], rec["sha256"]["t10k-labels-idx1-ubyte.gz"][:16]
    ('mnist', 'ff7bcfd416de3373')
    >>> other = data_record(dataclasses.replace(ds, test_labels=(ds.test_labels + 1) % 10))
    >>> sorted(other), other["arrays"]["test_labels"]  # labels of one's own: named by their fingerprint
    (['arrays', 'dataset', 'derived_from'], 'array[10000] int32 sha256:7ac20a1f09284578')
    """
    if name is None:
        name = getattr(dataset, "name", None)
    out: dict[str, Any] = {"dataset": name}
    if dataset is not None:
        from .data import ARRAYS, from_files

        files = {"source_dir": str(getattr(dataset, "source_dir", None)),
                 "sha256": dict(getattr(dataset, "checksums", None) or {})}
        if from_files(dataset):
            out.update(files)
        else:
            out["arrays"] = {field: array_fingerprint(getattr(dataset, field)) for field in ARRAYS}
            if files["sha256"]:
                out["derived_from"] = files
    if subset is not None:
        out["subset"] = dict(subset)
    if inputs is not None:
        out["inputs"] = data_record(inputs)
    out.update(extra)
    return out


def same_data(recorded: dict[str, Any] | None, current: dict[str, Any] | None) -> bool:
    """Whether two ``data`` entries (:func:`data_record`) name the same data, as far as both say: the same arrays'
    fingerprints, or (for data as the loader made it) the same files' checksums, and so for the students' images
    under ``"inputs"``. An entry that names neither (``{"dataset": name}``) agrees with any.

    >>> files = {"dataset": "mnist", "source_dir": "/a", "sha256": {"f": "00"}}
    >>> same_data(files, {**files, "source_dir": "/b"}), same_data(files, {"dataset": "mnist", "arrays": {"x": "1"}})
    (True, False)
    >>> same_data({**files, "inputs": {"sha256": {"g": "11"}}}, {**files, "inputs": {"sha256": {"g": "12"}}})
    False
    """
    def identity(d: dict[str, Any]):
        return ("arrays", d["arrays"]) if d.get("arrays") else ("files", d["sha256"]) if d.get("sha256") else None

    recorded, current = recorded or {}, current or {}
    a, b = identity(recorded), identity(current)
    if a is not None and b is not None and a != b:
        return False
    ins = recorded.get("inputs"), current.get("inputs")
    return not all(isinstance(d, dict) for d in ins) or same_data(*ins)


def envelope(format: str, config, *, n_runs, seed, data: dict[str, Any], devices: list[str] | None = None,
             timing: dict[str, Any] | None = None, format_version: int = 1,
             environment_extra: dict[str, Any] | None = None, runs: list | None = None,
             **payload: Any) -> dict[str, Any]:
    """The JSON-ready record every experiment writes (format in the module docstring).

    Returns, in this key order: ``format``, ``format_version``, ``config`` (``config.to_dict()``
    for a ``Config``, else the dict as given), ``n_runs``, ``seeds`` (``{"seed": seed, "runs":
    runs or range(n_runs)}``), the ``payload`` keys in the order given, ``data`` (see
    :func:`data_record`), ``environment`` (:func:`environment` of ``devices`` and
    ``environment_extra``), ``timing`` (the given seconds, plus ``peak_rss_mb`` if missing) and
    ``created`` (ISO-8601 UTC). A payload key that is an envelope key is a ``TypeError``.

    >>> rec = envelope("subliminal-mlp/demo", {"lr": 0.1}, n_runs=2, seed=7, data={"dataset": "mnist"}, models={})
    >>> list(rec)[4:], rec["seeds"]
    (['seeds', 'models', 'data', 'environment', 'timing', 'created'], {'seed': 7, 'runs': [0, 1]})
    >>> envelope("subliminal-mlp/demo", {}, n_runs=1, seed=0, data={}, created="today")
    Traceback (most recent call last):
    TypeError: payload keys ['created'] are envelope keys; pass them as envelope arguments.
    """
    if not isinstance(format, str) or not format.startswith("subliminal-mlp/"):
        raise ValueError(f"format {format!r} is invalid: it must be 'subliminal-mlp/<kind>'.")
    clash = [k for k in payload if k in ENVELOPE_KEYS]
    if clash:
        raise TypeError(f"payload keys {clash} are envelope keys; pass them as envelope arguments.")
    if runs is None:
        runs = list(range(n_runs))
    timing = dict(timing or {})
    timing.setdefault("peak_rss_mb", peak_rss_mb())
    return {
        "format": format,
        "format_version": format_version,
        "config": config.to_dict() if hasattr(config, "to_dict") else config,
        "n_runs": n_runs,
        "seeds": {"seed": seed, "runs": list(runs)},
        **payload,
        "data": data,
        "environment": environment(devices, **(environment_extra or {})),
        "timing": timing,
        "created": _now(),
    }


def run_timing(compile_s: float, run_s: float) -> dict[str, float]:
    """``{"compile_s", "run_s", "total_s"}`` of a compiled program (the ``timing`` of :func:`envelope`)."""
    return {"compile_s": compile_s, "run_s": run_s, "total_s": compile_s + run_s}


def experiment_record(result, dataset=None, inputs=None) -> dict[str, Any]:
    """The JSON-ready Figure-10 record of an ``experiment.ExperimentResult`` (format in the module docstring).

    ``dataset``: the ``data.Dataset`` the result was computed on (its directory and checksums are
    recorded, or its arrays' fingerprints where they are not the files' content: :func:`data_record`);
    without it ``data`` is only ``{"dataset": config.dataset}``. ``inputs``: the dataset the
    students' images came from when it is another (Fashion-MNIST), recorded the same way as
    ``data["inputs"]``.
    """
    cfg = result.config
    models = {}
    for name in MODELS:
        acc = result.model_accuracies(name)
        mean, ci = mean_ci95(acc)
        models[name] = {"mean": mean, "ci95": ci, "accuracies": [float(a) for a in acc]}
    extra: dict[str, Any] = {"run_batch": result.run_batch}
    if result.values_in_program > 1:
        extra["values_in_program"] = result.values_in_program
    data = data_record(dataset, name=cfg.dataset, inputs=inputs)
    return envelope(FORMAT, cfg, n_runs=cfg.n_runs, seed=cfg.seed, data=data,
                    devices=result.devices, timing=run_timing(result.compile_s, result.run_s),
                    format_version=FORMAT_VERSION, environment_extra=extra,
                    models=models, chance=1.0 / cfg.n_classes,
                    health=health(MODELS, result.accuracies, getattr(result, "finite", None),
                                  chance=1.0 / cfg.n_classes, check_teacher=cfg.teacher_epochs > 0))


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """CSV text (``\\n`` line ends, minimal quoting): the ``header`` row, then one line per row.

    Cells are written as given (format floats before, e.g. ``f"{x:.6f}"``); ``None`` is an empty cell.

    A cell with a comma is quoted, and Python's ``csv`` reader reads the table back:

    >>> import csv, io
    >>> text = csv_text(["model", "run", "accuracy"], [["teacher", 0, f"{0.95:.6f}"], ["mine, v2", 1, None]])
    >>> print(text, end="")
    model,run,accuracy
    teacher,0,0.950000
    "mine, v2",1,
    >>> list(csv.reader(io.StringIO(text)))[2]
    ['mine, v2', '1', '']
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def check_stem(stem: Any) -> str:
    """``stem``, the name the outputs share (``<stem>.json``, ...), if it is one: a non-empty string that is not
    ``.`` or ``..`` (its directory part is :func:`check_output`'s to refuse). Else an :class:`OutputError`."""
    if not isinstance(stem, str) or stem in ("", ".", ".."):
        raise OutputError(f"stem = {stem!r} is invalid: give a file name stem, e.g. 'fig10' for fig10.json.")
    return stem


def check_stem_outputs(out_dir: str | os.PathLike, stem: Any, extensions: Sequence[str]) -> Path:
    """:func:`check_stem`, then :func:`check_output` of ``out_dir`` for ``<stem>.<ext>`` of each extension."""
    return check_output(out_dir, files=[f"{check_stem(stem)}.{ext}" for ext in extensions])


def write_record(record: dict[str, Any], out_dir: str | os.PathLike, stem: str,
                 csv: tuple[Sequence[str], Iterable[Sequence[Any]]] | None = None, *,
                 indent: int = 2, figure: Callable[[dict[str, Any], Path], Path] | None = None) -> dict[str, Path]:
    """Write ``<stem>.json`` (and, given ``csv = (header, rows)``, ``<stem>.csv``) atomically under ``out_dir``.

    The JSON is ``json.dumps(record, indent=indent)`` with a trailing newline; the CSV is
    :func:`csv_text`. Both texts are made before either file is written (a value that cannot be
    written leaves both files as they were), and the JSON, the record that readers and the figures
    pipeline trust, is replaced last. ``figure``: ``figure(record, path)`` draws the record's figure to
    ``<stem>.png`` (a study's plot function); the figure, the CSV and the record then replace the
    previous ones together (:func:`replaced_together`: interrupted while the figure is drawn, the
    previous three stay). Every file's place is checked before anything is written. Returns
    ``{"json": path}`` (and ``"csv"``, ``"png"``: paths).
    """
    exts = ["json"] + ([] if csv is None else ["csv"]) + ([] if figure is None else ["png"])
    out = check_stem_outputs(out_dir, stem, exts)
    text = json.dumps(record, indent=indent) + "\n"
    table = None if csv is None else csv_text(*csv)
    with replaced_together():
        png = {} if figure is None else {"png": figure(record, out / f"{stem}.png")}
        files = {} if table is None else {"csv": atomic_write_text(out / f"{stem}.csv", table)}
        return {"json": atomic_write_text(out / f"{stem}.json", text), **files, **png}


def records_csv(record: dict[str, Any]) -> str:
    """The CSV of a Figure-10 record: one row per (model, run), ``model,run,accuracy``."""
    return csv_text(*_fig10_rows(record))


def _fig10_rows(record: dict[str, Any]) -> tuple[list[str], list[list]]:
    rows = [[name, run, f"{acc:.6f}"] for name, m in record["models"].items()
            for run, acc in enumerate(m["accuracies"])]
    return ["model", "run", "accuracy"], rows


def format_ci(ci: float | None, digits: int = 4, *, spec: str | None = None) -> str:
    """A 95 % CI half-width (:func:`mean_ci95`'s) for a table: ``"0.0123"`` (``digits`` decimals, or the format
    ``spec``), or ``"—"`` when there is none (a single run has no CI; printing 0 would claim no uncertainty).

    >>> format_ci(0.01234, 3), format_ci(None), format_ci(3.2e-5, spec=".1e")
    ('0.012', '—', '3.2e-05')
    """
    return "—" if ci is None else format(ci, spec if spec is not None else f".{digits}f")


def format_table(record: dict[str, Any]) -> str:
    """A plain-text table: model, mean test accuracy, 95 % CI half-width, runs.

    Three runs of each model; their sd is 0.01, so the half-width is 1.96 · 0.01 / √3 = 0.0113:

    >>> acc = {"teacher": [0.95, 0.96, 0.97], "cross_aux": [0.10, 0.12, 0.11]}
    >>> record = {"models": {m: dict(zip(("mean", "ci95"), mean_ci95(a)), accuracies=a) for m, a in acc.items()}}
    >>> print(format_table(record))
    model          accuracy  ± 95% CI   runs
    ----------------------------------------
    teacher          0.9600    0.0113   3
    cross_aux        0.1100    0.0113   3
    note: with 3 runs, ± 1.96·sd/√n (the paper's approximate 95 % CI) is narrow: a t interval is 2.2× as wide ...
    """
    lines = [f"{'model':<13} {'accuracy':>9} {'± 95% CI':>9}   runs",
             "-" * 40]
    for name, m in record["models"].items():
        lines.append(f"{name:<13} {m['mean']:>9.4f} {format_ci(m['ci95']):>9}   {len(m['accuracies'])}")
    note = few_runs_note(min(len(m["accuracies"]) for m in record["models"].values()))
    return "\n".join(lines + ([note] if note else []))


def write_results(record: dict[str, Any], out_dir: str | os.PathLike, stem: str = "fig10",
                  figure: Callable[[dict[str, Any], Path], Path] | None = None) -> dict[str, Path]:
    """Write a Figure-10 record's ``<stem>.json`` and ``<stem>.csv`` atomically under ``out_dir`` (and, given
    ``figure``, its ``<stem>.png``, all three replaced together).

    Returns ``{"json": path, "csv": path}`` (and ``"png"``; see :func:`write_record`).
    """
    return write_record(record, out_dir, stem, csv=_fig10_rows(record), figure=figure)


def library_version() -> str | None:
    """The installed subliminal-mlp's version; None when it runs from a checkout that is not installed
    (``PYTHONPATH``), which is what :func:`environment` records then, so that the two compare equal."""
    try:
        return metadata.version("subliminal-mlp")
    except metadata.PackageNotFoundError:
        return None


def written_by(record: dict[str, Any]) -> str | None:
    """The subliminal-mlp version a record says wrote it (its ``environment``), to compare with
    :func:`library_version`: another version may compute the same settings otherwise."""
    return (record.get("environment") or {}).get("subliminal_mlp")


def sweep_value_paths(summary: dict[str, Any], path: str | os.PathLike) -> list[Path]:
    """The value records of the sweep summary read from ``path``, one per value. Its ``value_files`` are
    relative to the sweep's output directory: the summary's own, or, for a summary moved beside its records
    (``<out>/<param>/<config_key>/``, when another sweep was written into its directory), the one two levels up.
    """
    path, rels = Path(path), summary["value_files"]
    roots = [path.parent, *path.parents[2:3]]
    root = next((r for r in roots if all((r / rel).is_file() for rel in rels)), path.parent)
    return [root / rel for rel in rels]


def per_run(record: dict[str, Any] | str | os.PathLike) -> list[dict[str, Any]]:
    """Every run's test accuracy in a record, one row per (setting, model, run), whatever the record's format:
    ``{**setting, "model": name, "run": i, "accuracy": a}`` (a tidy table: ``pandas.DataFrame(rows)``).

    ``record``: a record (dict), the path of one, or an engine ``Result`` (its ``record()``). The setting
    is what distinguishes the record's parts:
    ``{}`` for a Figure-10 record (``models[m]["accuracies"]``); the swept values of an engine record
    (``values[i]["sweep"]``, e.g. ``{"wd": 100.0}``; ``values[i]["models"][m]["values"]``); ``{param: value}``
    for a sweep summary, whose per-run accuracies are in its value records (``value_files``, read from beside
    the summary: give its path). A run whose model ended non-finite has accuracy NaN. Other formats (the
    studies') raise :class:`RecordError` (each keeps its own layout; see its docs page).

    >>> rec = envelope(FORMAT, {}, n_runs=2, seed=0, data={}, models={"teacher": {"accuracies": [0.9, 0.95]}})
    >>> per_run(rec)
    [{'model': 'teacher', 'run': 0, 'accuracy': 0.9}, {'model': 'teacher', 'run': 1, 'accuracy': 0.95}]
    """
    path = None
    if isinstance(record, (str, os.PathLike)):
        path = Path(record)
        record = read_results(path)
    elif not isinstance(record, dict):
        if not callable(getattr(record, "record", None)):
            raise TypeError(f"per_run takes a record (a dict, or the path of one) or a Result, not "
                            f"{type(record).__name__} {record!r:.60}.")
        record = record.record()  # an engine Result, in memory
    fmt = record.get("format")

    def rows(setting: dict, models: dict, key: str) -> list[dict[str, Any]]:
        return [{**setting, "model": name, "run": run, "accuracy": float(a)}
                for name, m in models.items() for run, a in enumerate(m[key])]

    if fmt == FORMAT:
        return rows({}, record["models"], "accuracies")
    if fmt == "subliminal-mlp/experiment":
        return [row for v in record["values"] for row in rows(dict(v.get("sweep") or {}), v["models"], "values")]
    if fmt == "subliminal-mlp/sweep":
        if path is None:
            raise RecordError("a sweep summary keeps its runs in its value records (value_files, beside it): give "
                              "per_run the summary's path, not the record read from it.")
        out = []
        for value, file in zip(record["values"], sweep_value_paths(record, path)):
            out += rows({record["param"]: value}, read_results(file, format=FORMAT)["models"], "accuracies")
        return out
    raise RecordError(f"per_run reads Figure-10, engine and sweep records; a {fmt!r} record keeps its numbers in "
                      "a layout of its own (see the study's docs page).")


def read_results(path: str | os.PathLike, format: str | None = None) -> dict[str, Any]:
    """Read a record this library wrote (any format of :data:`FORMATS`); return it as a dict.

    With ``format`` (e.g. ``"subliminal-mlp/fig10"``) the record must be of that format. Raises
    :class:`RecordError`, naming the file, when it is missing or unreadable, is not valid JSON
    (truncated or damaged: the JSON error and its position are given), is not a JSON object, has
    no known ``format``, has a ``format_version`` newer than this library reads, is of another
    format than ``format``, or lacks a key this library needs from it (:data:`REQUIRED_KEYS`).

    A record written by :func:`envelope` and :func:`write_record`, read back:

    >>> import tempfile
    >>> record = envelope("subliminal-mlp/experiment", {"lr": 3e-4}, n_runs=2, seed=0, data={"dataset": "mnist"},
    ...                   result={"accuracy": [0.5, 0.7]})
    >>> with tempfile.TemporaryDirectory() as out:
    ...     back = read_results(write_record(record, out, "mine")["json"], format="subliminal-mlp/experiment")
    >>> back["seeds"], back["result"], list(back)[:4]
    ({'seed': 0, 'runs': [0, 1]}, {'accuracy': [0.5, 0.7]}, ['format', 'format_version', 'config', 'n_runs'])
    >>> read_results("no/such/file.json")
    Traceback (most recent call last):
    subliminal_mlp.core.results.RecordError: no/such/file.json: no such record file.
    """
    path = Path(path)
    known = ", ".join(FORMATS)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record file.") from None
    except UnicodeDecodeError as e:
        raise RecordError(f"{path} is damaged: not UTF-8 text ({e.reason} at byte {e.start}); "
                          "expected a JSON record.") from None
    except OSError as e:
        raise RecordError(f"{path} cannot be read ({e.strerror or e}).") from None
    if path.suffix.lower() == ".csv" and not text.lstrip().startswith("{"):
        beside = path.with_suffix(".json")
        raise RecordError(f"{path} is a CSV table, not a record: read the JSON record "
                          + (f"beside it, {beside}." if beside.exists() else "that was written with it."))
    try:
        record = json.loads(text)
    except json.JSONDecodeError as e:
        # An error within the last token or so means the text stops early (a cut can fall inside a
        # number or a string, where the decoder stops a few characters before the end).
        ends_early = e.pos >= len(text.rstrip()) - 32 or e.msg.startswith("Unterminated string")
        what = "truncated" if ends_early else "damaged"
        raise RecordError(f"{path} is not valid JSON; the record is {what} ({e.msg}: line {e.lineno} column "
                          f"{e.colno}, character {e.pos} of {len(text)}). Rerun the experiment that wrote it."
                          ) from None
    if not isinstance(record, dict):
        raise RecordError(f"{path} holds a JSON {type(record).__name__}, not a record: expected a JSON object "
                          f"with a \"format\" ({format or 'one of ' + known}).")
    found = record.get("format")
    if found is None:
        raise RecordError(f"{path} has no \"format\" field: expected {format or 'one of ' + known}.")
    if not isinstance(found, str):
        raise RecordError(f"{path} has a damaged \"format\" field ({found!r}): expected {format or 'one of ' + known}.")
    if format is not None and found != format:
        raise RecordError(f"{path} is not a {format} record: its format is {found!r}.")
    if found not in FORMATS:
        raise RecordError(f"{path} has format {found!r}, which this library does not read: expected one of "
                          f"{known}.")
    version = record.get("format_version")
    if not is_integer(version, 1):
        raise RecordError(f"{path} has format_version {version!r}: expected an integer from 1 to {FORMATS[found]} "
                          f"for {found}.")
    if version > FORMATS[found]:
        raise RecordError(f"{path} is a {found} record of format_version {version}, newer than this library "
                          f"reads (up to {FORMATS[found]}, subliminal-mlp {library_version() or '(not installed)'}): upgrade "
                          "subliminal-mlp to read it.")
    missing = [k for k in REQUIRED_KEYS.get(found, ()) if k not in record]
    if missing:
        raise RecordError(f"{path} is a damaged {found} record: it lacks {', '.join(map(repr, missing))}.")
    return record
