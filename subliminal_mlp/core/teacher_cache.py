"""Trained teachers cached on disk, keyed by everything a teacher depends on, and verified on every read.

Every experiment of this library trains its teachers first (``engine.run``: θ0 of run ``i`` trained
``teacher_epochs`` epochs with Adam on the task), and most experiments train the same ones: the
published sweeps over the loss, the temperature, the inputs or the initial noise, the trajectory,
alignment, heads, traits and omitted-digit experiments all use the paper's teacher of runs
``0..N-1``. A :class:`TeacherCache` keeps each trained teacher in a file, so that every experiment
after the first with the same teacher settings reads them instead of training them again.

**The key** (:func:`teacher_key`) names everything the teacher's parameters depend on: the model
(its ``describe()``: name, classes, aux logits, input shape, widths, activation), the task's
training arrays (SHA-256 of their bytes, shapes and dtypes: any subset or other data is another
key), the training settings (``teacher_epochs``, ``batch_size``, the learning rate, the optimiser
(Adam β = (0.9, 0.999), ε = 1e-8), whether losses are tracked, which changes XLA's fusion), the
seed, ``run_batch`` (the runs advanced together change float rounding; with more than one, also
the number of runs, swept values and devices), the library's training code (a SHA-256 of
``subliminal_mlp/core/*.py``: its version number does not change with every edit), and what random
numbers and rounding depend on: the versions of jax, jaxlib, flax, optax and this library, the
platform and device kind (on a CPU, the host's vector instruction sets: :func:`host_vector_isa`),
``XLA_FLAGS`` and the per-program compiler options (:func:`~subliminal_mlp.internal.compiler_options`),
x64, the default matmul precision, the PRNG implementation and
``jax_threefry_partitionable``: a cache shared between machines (a home directory on a cluster)
hands a teacher only to a machine that computes it alike. One file per
run: run ``i``'s teacher does not depend on how many runs are made (with one run per batch: it
is checked in the tests), so a 100-run Figure 10 fills the cache for every 10-run experiment.

**Verified**: an entry is ``<root>/<key>/run-<i>.teacher``: a JSON header line (format, key, the
leaves' paths, shapes and dtypes, and the SHA-256 of the payload), then the payload (``.npz``
bytes). It is written to a temporary file beside it, then renamed (a reader never sees a partial
entry). A read checks the header, the checksum, the leaves' paths, shapes and dtypes against the
model's parameters: a truncated, damaged or foreign entry is reported (``log``), deleted and
treated as missing — recomputed and replaced, never used.

**Where**: :func:`default_teacher_dir`: ``$SUBLIMINAL_MLP_TEACHERS``, else ``<cache>/teachers``
with ``<cache>`` the data cache root (:func:`~subliminal_mlp.core.data.default_cache_dir`:
``$SUBLIMINAL_MLP_CACHE``, ``$XDG_CACHE_HOME/subliminal_mlp``, ``~/.cache/subliminal_mlp``).

**Used**: ``engine.run(..., teacher_cache=cache)``, or every ``engine.run`` inside ``with
use_teacher_cache(cache):`` (what ``subliminal-mlp figures`` does): the experiment functions
(``run_experiment``, ``run_sweep``, ``run_heads``, ...) need no argument. Reused teachers give
bit-identical results to training them in the same program (tested). The cache is skipped
(teachers trained as usual) when the teacher is not trained (``teacher_epochs = 0``), when the
seed or the learning rate is swept inside the program (the teachers differ per value), when
losses are tracked, on an accelerator without an explicit ``run_batch`` (the fitted run_batch is
only known after compiling), across several processes (``jax.distributed``), and for a model whose code cannot be identified (a function with
neither source nor bytecode, an object without attributes or a ``repr`` of its own). A model is
identified by its ``describe()`` and by its code (:func:`code_identity` of its ``init`` and
``apply``): for every function they are made of (a Flax module's class and attributes, an
activation, a lambda, a bound method and its object, ...) its qualified name, the SHA-256 of its
source and of its bytecode, and the identity of what it closes over and of its defaults, so two
models that differ only in their functions (``Model(init, apply)`` pairs with the same
description, ``mlp(activation=f)`` with two functions both named ``f``, the methods of two
objects of one class) get different keys, and editing a function makes a new key. What the code
reads from outside itself (a global variable, a helper function it calls) is not in the key.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import hashlib
import io
import json
import os
import platform as _platform
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np

from .results import array_digest

#: The format tag of a cache entry's header (bump to invalidate every entry).
ENTRY_FORMAT = "subliminal-mlp/teacher"
ENTRY_VERSION = 1
#: Environment variable overriding the teacher cache directory.
ENV_TEACHERS = "SUBLIMINAL_MLP_TEACHERS"
#: The teacher's optimiser, as the engine builds it (``students.adam``); part of the key.
TEACHER_OPTIMIZER = "adam(b1=0.9, b2=0.999, eps=1e-8)"

_ACTIVE: contextvars.ContextVar = contextvars.ContextVar("subliminal_mlp_teacher_cache", default=None)


def default_teacher_dir() -> Path:
    """``$SUBLIMINAL_MLP_TEACHERS``, else ``<data cache root>/teachers`` (the data cache's conventions)."""
    env = os.environ.get(ENV_TEACHERS)
    if env:
        return Path(env).expanduser()
    from .data import default_cache_dir

    return default_cache_dir() / "teachers"


def _version(pkg: str) -> Optional[str]:
    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None


_UNKNOWN = object()


def _known(value: Any) -> Any:
    """``value``, or ``_UNKNOWN`` when any part of it (a list's or a dict's values) is unknown."""
    parts = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
    return _UNKNOWN if value is _UNKNOWN or any(p is _UNKNOWN for p in parts) else value


def _code_digest(code: Any) -> str:
    """SHA-256 (16 hex digits) of a code object's bytecode, constants and names, nested code objects included
    (by their own digest: their ``repr`` holds a memory address); independent of the process."""
    import types

    h = hashlib.sha256(code.co_code)
    for c in code.co_consts:
        if isinstance(c, types.CodeType):
            h.update(_code_digest(c).encode())
        elif isinstance(c, frozenset):  # its order follows string hashing, which differs between processes
            h.update(repr(sorted(map(repr, c))).encode())
        else:
            h.update(repr(c).encode())
    h.update(repr(code.co_names).encode())
    return h.hexdigest()[:16]


def _function_identity(fn: Any, deeper: Callable[[Any], Any]) -> Any:
    """A function's identity: its qualified name, the digest of its source and of its bytecode, and the
    identity (``deeper``) of what it closes over and of its default arguments; a bound method's, its
    function's and its object's. ``_UNKNOWN`` when nothing identifies it (a function without a name)."""
    import inspect

    if inspect.ismethod(fn):
        return _known({"method": _function_identity(fn.__func__, deeper), "self": deeper(fn.__self__)})
    name = f"{getattr(fn, '__module__', None) or '?'}.{getattr(fn, '__qualname__', '?')}"
    if name.endswith(".?"):
        return _UNKNOWN
    try:
        inner = fn if isinstance(fn, type) else inspect.unwrap(fn)  # jit- or custom_jvp-wrapped: the function
    except ValueError:
        return _UNKNOWN
    out: dict[str, Any] = {"name": name}
    try:
        out["source"] = hashlib.sha256(inspect.getsource(inner).encode()).hexdigest()[:16]
    except (OSError, TypeError):  # a builtin, or defined where no source is kept (an interactive session)
        pass
    code = getattr(inner, "__code__", None)
    if code is not None:
        out["code"] = _code_digest(code)
        try:
            cells = [c.cell_contents for c in (getattr(inner, "__closure__", None) or ())]
        except ValueError:  # a cell not yet filled
            return _UNKNOWN
        if cells:
            out["closure"] = deeper(cells)
        if getattr(inner, "__defaults__", None):
            out["defaults"] = deeper(list(inner.__defaults__))
        if getattr(inner, "__kwdefaults__", None):
            out["kwdefaults"] = deeper(dict(inner.__kwdefaults__))
    elif "source" not in out and (name.startswith("__main__.") or "<" in name):
        return _UNKNOWN  # neither code nor source: only a name, which may be another function's
    if isinstance(inner, type) and "<locals>" in name:
        # A class a function makes (a factory's Flax module): two of its classes share a name and source, and differ
        # in what their methods close over (the factory's arguments), which is then part of the identity.
        methods = {}
        for k, v in vars(inner).items():
            if inspect.isfunction(v) and v.__closure__:
                try:
                    cells = [c.cell_contents for c in v.__closure__]
                except ValueError:  # a cell not yet filled
                    return _UNKNOWN
                methods[k] = deeper([c for c in cells if c is not inner])  # (super()'s __class__ cell: itself)
        if methods:
            out["closures"] = _known(methods)
    return _known(out)


def code_identity(obj: Any, _depth: int = 0) -> Any:
    """A JSON-ready, process-independent identity of a model's code; ``_UNKNOWN`` when it cannot be told apart.

    Numbers and strings are themselves; lists, tuples and dicts are their parts'; arrays their
    :func:`array_digest`; a function (a lambda, a local function, a bound method too) its name,
    source and bytecode digests and the identity of its closure and defaults
    (:func:`_function_identity`); a ``functools.partial`` its function and arguments; a dataclass
    instance (a Flax module, ``from_flax``'s init and apply) its class's identity and its fields'
    (but a Flax module's ``parent`` and ``name``); any other object its class's identity and its
    attributes', or its ``repr`` when it has its own (a dtype). Globals a function reads are not in it.
    """
    import dataclasses
    import functools
    import types

    if _depth > 32:
        return _UNKNOWN
    deeper = functools.partial(code_identity, _depth=_depth + 1)
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    if isinstance(obj, types.ModuleType):  # a module closed over is named, as the globals a function reads are not
        return {"module": obj.__name__}
    if isinstance(obj, (list, tuple)):
        return _known([deeper(x) for x in obj])
    if isinstance(obj, dict):
        return _known({str(k): deeper(v) for k, v in obj.items()})
    if isinstance(obj, functools.partial):
        return _known({"partial": deeper(obj.func), "args": deeper(obj.args), "keywords": deeper(obj.keywords)})
    if hasattr(obj, "dtype") and hasattr(obj, "shape"):
        return array_digest(obj)
    if isinstance(obj, type):
        return _function_identity(obj, deeper)
    if dataclasses.is_dataclass(obj):
        fields = {f.name: deeper(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                  if f.name not in ("parent", "name") and hasattr(obj, f.name)}
        return _known({"class": deeper(type(obj)), "fields": _known(fields)})
    if hasattr(obj, "__qualname__") and callable(obj):  # a function (also jit-wrapped or custom_jvp), a method
        return _function_identity(obj, deeper)
    if hasattr(obj, "__dict__"):
        return _known({"class": deeper(type(obj)), "state": deeper(vars(obj))})
    if type(obj).__repr__ is not object.__repr__ and " at 0x" not in repr(obj):
        return {"repr": repr(obj)}
    return _UNKNOWN


_CORE_SOURCE: list = []


def core_source_digest() -> str:
    """SHA-256 of the library's training code (every ``subliminal_mlp/core/*.py``), read once per process: a
    change to how teachers are trained (keys, steps, optimiser, losses) makes new keys, though the package's
    version number stays the same."""
    if not _CORE_SOURCE:
        h = hashlib.sha256()
        for py in sorted(Path(__file__).resolve().parent.glob("*.py")):
            h.update(py.name.encode() + b"\0" + py.read_bytes() + b"\0")
        _CORE_SOURCE.append(h.hexdigest())
    return _CORE_SOURCE[0]


_SIMD_PREFIXES = ("sse", "ssse", "avx", "fma", "f16c", "amx", "neon", "asimd", "sve", "sme")


@functools.lru_cache(maxsize=1)
def host_vector_isa() -> str:
    """The host CPU's vector instruction sets, as Linux lists them (``/proc/cpuinfo``'s ``flags`` or
    ``Features``: those starting with sse, avx, fma, amx, asimd, sve, ...), sorted and space-separated; elsewhere
    ``platform.machine()`` and ``platform.processor()``. XLA's CPU code uses whatever the host has (AVX-512 or
    AVX2 sum in other orders), so teachers trained on a CPU are keyed by it.

    >>> isa = host_vector_isa()
    >>> isinstance(isa, str) and isa == host_vector_isa()
    True
    """
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                name, _, value = line.partition(":")
                if name.strip() in ("flags", "Features"):
                    return " ".join(sorted({w for w in value.split() if w.startswith(_SIMD_PREFIXES)}))
    except OSError:
        pass
    return f"{_platform.machine()} {_platform.processor()}".strip()


def teacher_key(exp, task, *, seed: int, run_batch: int, n_runs: int, n_devices: int, platform: str,
                device_kind: str, learning_rate: float, n_values: int = 1) -> Optional[dict[str, Any]]:
    """Everything a trained teacher depends on, as a JSON-ready dict (None when the model cannot be identified:
    its description or its code holds an object :func:`code_identity` cannot name, such as a function with neither
    source nor bytecode; lambdas and local functions are identified by their code and closure).

    ``run_batch`` is the number of runs advanced together (as resolved by the engine); with more
    than one, ``n_runs``, ``n_values`` (the swept values in the program) and ``n_devices`` are part of
    the key too (how runs are grouped changes rounding); with one, run ``i``'s teacher is the same
    whatever the number of runs. The key also holds the library's training code
    (:func:`core_source_digest`), the versions of JAX, Flax and Optax, and the JAX settings that change
    random numbers or rounding.
    """
    import jax

    from ..internal import compiler_options

    model = code_identity(exp.model.describe())  # JSON (setting_json): itself, tuples as lists
    code = code_identity({"init": exp.model.init, "apply": exp.model.apply})
    if model is _UNKNOWN or code is _UNKNOWN:
        return None
    return {
        "format": ENTRY_FORMAT, "format_version": ENTRY_VERSION,
        "model": model, "code": code,
        "train_x": array_digest(task.train_x), "train_y": array_digest(task.train_y),
        "n_classes": int(task.n_classes),
        "teacher_epochs": int(exp.teacher_epochs), "batch_size": int(exp.batch_size),
        "learning_rate": float(learning_rate), "optimizer": TEACHER_OPTIMIZER,
        "track_losses": bool(exp.track_losses),
        "seed": int(seed), "run_batch": int(run_batch),
        "grouping": None if run_batch == 1 else {"n_runs": int(n_runs), "n_values": int(n_values),
                                                 "n_devices": int(n_devices)},
        "jax": _version("jax"), "jaxlib": _version("jaxlib"), "flax": _version("flax"), "optax": _version("optax"),
        "subliminal_mlp": _version("subliminal-mlp"), "core_source": core_source_digest(),
        "platform": platform, "device_kind": device_kind,
        "host_isa": host_vector_isa() if platform == "cpu" else None,
        "xla_flags": os.environ.get("XLA_FLAGS", "").split(), "compiler_options": compiler_options(platform),
        "x64": bool(jax.config.jax_enable_x64),
        "matmul_precision": str(jax.config.jax_default_matmul_precision),
        "prng_impl": str(jax.config.jax_default_prng_impl),
        "threefry_partitionable": bool(jax.config.jax_threefry_partitionable),
    }


def key_digest(key: dict[str, Any]) -> str:
    """The directory name of a key: 20 hex digits of the SHA-256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:20]


class CorruptEntry(ValueError):
    """A cache entry that cannot be used (truncated, damaged, of another key or shape)."""


@dataclass
class TeacherCache:
    """Trained teachers on disk under ``root`` (default :func:`default_teacher_dir`), one file per run.

    ``hits``, ``misses`` and ``corrupt`` count runs read, runs not found and entries rejected
    since the cache object was made; ``log`` receives a line per rejected entry and per store that failed.
    """

    root: Path = field(default_factory=default_teacher_dir)
    log: Callable[[str], None] = print
    hits: int = 0
    misses: int = 0
    corrupt: int = 0
    stored: int = 0

    def __post_init__(self) -> None:
        self.root = Path(self.root).expanduser()

    def path(self, key: dict[str, Any], run: int) -> Path:
        """The file of run ``run``'s teacher under ``key``."""
        return self.root / key_digest(key) / f"run-{int(run):05d}.teacher"

    # ------------------------------------------------------------------ entries

    def put(self, key: dict[str, Any], run: int, params: Any) -> Path:
        """Store one run's teacher (a pytree of arrays) atomically; returns its path."""
        import jax

        leaves_with_paths = jax.tree_util.tree_flatten_with_path(params)[0]
        names = [jax.tree_util.keystr(p) for p, _ in leaves_with_paths]
        arrays = [np.asarray(a) for _, a in leaves_with_paths]
        buf = io.BytesIO()
        np.savez(buf, *arrays)
        payload = buf.getvalue()
        header = {"format": ENTRY_FORMAT, "format_version": ENTRY_VERSION, "key": key_digest(key), "run": int(run),
                  "leaves": [[n, list(a.shape), a.dtype.str] for n, a in zip(names, arrays)],
                  "sha256": hashlib.sha256(payload).hexdigest(), "bytes": len(payload)}
        path = self.path(key, run)
        path.parent.mkdir(parents=True, exist_ok=True)
        described = path.parent / "key.json"
        if not described.exists():
            _atomic_bytes(described, (json.dumps(key, indent=1, sort_keys=True) + "\n").encode())
        _atomic_bytes(path, json.dumps(header).encode() + b"\n" + payload)
        self.stored += 1
        return path

    def read(self, key: dict[str, Any], run: int, like: Any) -> Any:
        """Run ``run``'s teacher under ``key`` with the structure of ``like`` (shapes/dtypes of the params).

        Raises ``FileNotFoundError`` when there is no entry and :class:`CorruptEntry` when there is
        one that cannot be used (see the module docstring).
        """
        import jax

        path = self.path(key, run)
        raw = path.read_bytes()
        head, sep, payload = raw.partition(b"\n")
        try:
            header = json.loads(head.decode("utf-8")) if sep else None
        except (UnicodeDecodeError, json.JSONDecodeError):
            header = None
        if not isinstance(header, dict) or header.get("format") != ENTRY_FORMAT:
            raise CorruptEntry(f"{path}: no valid header")
        if header.get("format_version") != ENTRY_VERSION or header.get("key") != key_digest(key) \
                or header.get("run") != int(run):
            raise CorruptEntry(f"{path}: header of another key, run or format version")
        if len(payload) != header.get("bytes") or hashlib.sha256(payload).hexdigest() != header.get("sha256"):
            raise CorruptEntry(f"{path}: checksum mismatch ({len(payload)} of {header.get('bytes')} bytes)")
        expected_paths, treedef = jax.tree_util.tree_flatten_with_path(like)
        expected = [[jax.tree_util.keystr(p), list(np.shape(a)), np.dtype(a.dtype).str] for p, a in expected_paths]
        if header.get("leaves") != expected:
            raise CorruptEntry(f"{path}: its parameters do not have the model's names, shapes and dtypes")
        try:
            with np.load(io.BytesIO(payload), allow_pickle=False) as z:
                arrays = [z[f"arr_{i}"] for i in range(len(expected))]
        except Exception as e:  # noqa: BLE001 (an archive that matches its checksum but was written wrongly)
            raise CorruptEntry(f"{path}: unreadable payload ({e})") from None
        if any([list(a.shape), a.dtype.str] != e[1:] for a, e in zip(arrays, expected)):
            raise CorruptEntry(f"{path}: payload arrays disagree with the header")
        return jax.tree_util.tree_unflatten(treedef, arrays)

    def load(self, key: dict[str, Any], n_runs: int, like: Any) -> Optional[Any]:
        """The teachers of runs ``0..n_runs-1`` stacked on a leading axis, or None unless every one is usable.

        A corrupt entry is logged and deleted (so that it is recomputed and replaced).
        """
        import jax

        found = []
        for run in range(n_runs):
            try:
                found.append(self.read(key, run, like))
            except FileNotFoundError:
                break
            except (CorruptEntry, OSError) as e:
                self.corrupt += 1
                self.log(f"teacher cache: discarding a damaged entry ({e}); it will be recomputed")
                with contextlib.suppress(OSError):
                    self.path(key, run).unlink()
                break
        if len(found) < n_runs:
            self.misses += n_runs
            return None
        self.hits += n_runs
        return jax.tree.map(lambda *a: np.stack(a), *found)

    def store(self, key: dict[str, Any], teachers: Any) -> None:
        """Store every run of ``teachers`` (leading axis: runs) whose entry is missing or unusable.

        A write that fails (a full disk, a path that is not a directory) is logged and ends the
        store: the cache only saves time, so the experiment's results are kept.
        """
        import jax

        leaves = jax.tree.leaves(teachers)
        n = int(np.shape(leaves[0])[0])
        like = jax.tree.map(lambda a: np.asarray(a)[0], teachers)
        for run in range(n):
            try:
                self.read(key, run, like)
                continue
            except (FileNotFoundError, CorruptEntry, OSError):
                pass
            try:
                self.put(key, run, jax.tree.map(lambda a, r=run: np.asarray(a)[r], teachers))
            except OSError as e:  # the cache only saves time: a failed write loses no result
                self.log(f"teacher cache: cannot store the teachers under {self.root} ({e.strerror or e}); "
                         "they are not cached, the results are unaffected.")
                return

    def stats(self) -> dict[str, int]:
        """``{"hits", "misses", "corrupt", "stored"}`` (runs) since this object was made."""
        return {"hits": self.hits, "misses": self.misses, "corrupt": self.corrupt, "stored": self.stored}


def _atomic_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (:func:`~subliminal_mlp.core.results.atomic_write`)."""
    from .results import atomic_write

    atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


@contextlib.contextmanager
def use_teacher_cache(cache: Optional[TeacherCache]) -> Iterator[Optional[TeacherCache]]:
    """Within the block, every ``engine.run`` without an explicit ``teacher_cache`` uses ``cache`` (None: none)."""
    token = _ACTIVE.set(cache)
    try:
        yield cache
    finally:
        _ACTIVE.reset(token)


def active_teacher_cache() -> Optional[TeacherCache]:
    """The cache set by the innermost :func:`use_teacher_cache` block, or None."""
    return _ACTIVE.get()
