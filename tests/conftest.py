"""Shared pytest fixtures for the subliminal_mlp test suite."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from importlib.metadata import version
from pathlib import Path

# The suite checks the math in float32. On CPU every float32 matmul is computed in float32 anyway
# (this changes no bit there: the committed figures' regression tests pass with it); on NVIDIA GPUs
# JAX's default precision feeds matmuls TensorFloat-32 inputs (relative error ~3e-4 measured on an
# H100), which the tight comparisons with numpy and hand-worked values are not meant to measure.
os.environ.setdefault("JAX_DEFAULT_MATMUL_PRECISION", "float32")
# A relative $SUBLIMINAL_MLP_DATA (the README's `SUBLIMINAL_MLP_DATA=../shared/data`) is relative to where pytest
# was started: made absolute here, so that the processes the tests start elsewhere (the tutorial's kernel runs in
# a temporary directory) find the data too.
if os.environ.get("SUBLIMINAL_MLP_DATA"):
    os.environ["SUBLIMINAL_MLP_DATA"] = str(Path(os.environ["SUBLIMINAL_MLP_DATA"]).expanduser().resolve())

# The suite is compile-bound: its programs are tiny, so XLA:CPU spends far longer compiling them than running
# them. Two XLA options make that compile cheaper, set in the environment so that the processes the tests start
# compile the same way:
# * `--xla_backend_optimization_level=0`: LLVM does not optimise the kernels XLA generates (no vectorising, no
#   unrolling); most of a program's compile time is that optimisation. A 6-student program of tests/test_training.py
#   on one core: compiled in 1.6 s against 7.1 s, and compiled + run in 3.3 s against 8.7 s (its 20-epoch variant
#   3.8 s against 8.3 s); the whole suite on 2 cores took 7:34 against 10:16. The numbers differ from an
#   optimised program's in the last bits (likely where multiply-adds are contracted), and not uniformly: two
#   programs that compute the same bits when optimised may differ by an ulp unoptimised (a run with and without
#   a probe; θ0 in the engine and alone). The tests that compare such programs bit for bit take the
#   `xla_defaults` fixture, like the regeneration tests below, and so does the demo's real run; the examples'
#   subprocesses (an example's convolutions) compile optimised with the older emitters below
#   (`optimised_xla_flags`): for these long runs unoptimised kernels cost more than they save.
# * XLA's older loop emitters (`--xla_cpu_use_fusion_emitters=false`) compile with less CPU and compute the same
#   bits (the same program: 1.6 s against 4.2 s with O0); they run the paper's protocol ~7 % slower
#   (benchmarks/bench_xla_options.py), so the library keeps XLA's default.
# The tests that regenerate a committed record compile with XLA's defaults (the `xla_defaults` fixture): they check
# what a user runs, bit for bit. SUBLIMINAL_MLP_TEST_XLA_DEFAULTS=1 runs the whole suite with XLA's defaults. Both
# are set for CPU-only installs (the optimisation level is every backend's: a GPU's kernels would be built
# unoptimised too). The emitters flag is XLA's of the jaxlib that pyproject.toml allows (< 0.11); the XLA of
# jaxlib 0.11.2 no longer knows it and aborts every process whose XLA_FLAGS name it ("Unknown flag in XLA_FLAGS",
# seen on the lent H100s, whose image has jax 0.11.2): with a newer jaxlib the suite keeps XLA's emitters.
EMITTERS = "xla_cpu_use_fusion_emitters"
OPT_LEVEL = "xla_backend_optimization_level"
#: XLA's defaults of the options the suite may change (what the `xla_defaults` fixture puts back).
XLA_DEFAULTS = {EMITTERS: True, OPT_LEVEL: 3}
_JAXLIB = tuple(int(p) for p in version("jaxlib").split(".")[:2] if p.isdigit())
_EMITTERS_KNOWN = _JAXLIB < (0, 11)  # see above


def _cpu_only() -> bool:
    """No accelerator plugin for JAX is installed (or JAX is told to use the CPU only)."""
    from importlib.metadata import distributions

    if os.environ.get("JAX_PLATFORMS", "").strip().lower() == "cpu":
        return True
    plugins = ("jax-cuda", "jax_cuda", "jax-rocm", "jax_rocm", "libtpu", "jax-metal", "jax_metal")
    return not any((d.metadata["Name"] or "").lower().startswith(plugins) for d in distributions())


if os.environ.get("SUBLIMINAL_MLP_TEST_XLA_DEFAULTS", "") in ("", "0") and _cpu_only():
    _flags = os.environ.get("XLA_FLAGS", "")  # (the xdist workers inherit what is added here: they add nothing)
    _flags += f" --{EMITTERS}=false" if EMITTERS not in _flags and _EMITTERS_KNOWN else ""
    _flags += f" --{OPT_LEVEL}=0" if OPT_LEVEL not in _flags else ""
    os.environ["XLA_FLAGS"] = _flags.strip()

import jax  # noqa: E402  (after the environment is set, for the subprocesses the tests start too)
import pytest  # noqa: E402

jax.config.update("jax_default_matmul_precision", os.environ["JAX_DEFAULT_MATMUL_PRECISION"])

# Many tests compile the same small programs again (each engine.run builds its program anew): JAX's
# persistent compilation cache, one fresh directory per test process (xdist worker), compiles each
# once. It changes no number (the same executable). Set in this process only, not in the
# environment, so that the subprocesses some tests start never share a directory being written.
_CACHE = tempfile.mkdtemp(prefix=f"subliminal-mlp-jax-cache-{os.environ.get('PYTEST_XDIST_WORKER', 'main')}-")
atexit.register(shutil.rmtree, _CACHE, True)
jax.config.update("jax_compilation_cache_dir", _CACHE)
# Every program, however fast it compiles (JAX's default caches only those that took over 1 s).
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)


@contextlib.contextmanager
def _xla_defaults():
    from subliminal_mlp import internal

    defaults = {k: v for k, v in XLA_DEFAULTS.items() if k != EMITTERS or _EMITTERS_KNOWN}
    saved = internal.CPU_COMPILER_OPTIONS
    internal.CPU_COMPILER_OPTIONS = {**saved, **defaults}
    try:
        assert not internal.enabled() or all(internal.compiler_options("cpu")[k] == v for k, v in defaults.items())
        yield defaults
    finally:
        internal.CPU_COMPILER_OPTIONS = saved


@pytest.fixture
def xla_defaults():
    """Within the test, the programs the library compiles (``internal.compile_program``) use XLA's defaults
    of the options the suite changed (the emitters, the optimisation level), whatever the suite's
    ``XLA_FLAGS`` say: the tests of the committed records check what a user runs, and so do the tests that
    compare two programs bit for bit where the unoptimised builds differ. A per-program compile option
    overrides ``XLA_FLAGS``. The value is those options, for a test's own ``.compile(compiler_options=...)``."""
    with _xla_defaults() as options:
        yield options


@pytest.fixture(scope="session")
def xla_defaults_context():
    """``with xla_defaults_context(): ...``: the ``xla_defaults`` fixture's options for a block (e.g. in a module
    fixture whose results a test compares with its own under ``xla_defaults``)."""
    return _xla_defaults


@pytest.fixture(scope="session")
def optimised_xla_flags() -> str:
    """The suite's ``XLA_FLAGS`` without its optimisation level, for a subprocess that runs long enough for
    unoptimised kernels to cost more than they save (e.g. an example's convolutions)."""
    return " ".join(f for f in os.environ.get("XLA_FLAGS", "").split() if f != f"--{OPT_LEVEL}=0")


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Data root holding ``mnist/`` and ``fashion-mnist/`` (the canonical IDX .gz files).

    Taken from ``$SUBLIMINAL_MLP_DATA`` when set (CI sets it to ``../shared/data``),
    otherwise ``<checkout>/../shared/data``. Nothing is skipped when the data is
    missing: tests that need it fail loudly instead.
    """
    env = os.environ.get("SUBLIMINAL_MLP_DATA")
    if env:
        root = Path(env).expanduser().resolve()
    else:
        root = Path(__file__).resolve().parents[2] / "shared" / "data"
    assert root.is_dir(), (
        f"data root {root} does not exist: set SUBLIMINAL_MLP_DATA to a directory "
        "containing mnist/ and fashion-mnist/ with the canonical IDX .gz files"
    )
    return root


def _check_envelope(rec: dict, checksums=None, health: bool = True) -> None:
    """The common record envelope (subliminal_mlp.core.results.envelope): its keys in order, the seeds,
    the data's checksums, environment and timing, and (``health``) which runs diverged."""
    keys = list(rec)
    assert keys[:5] == ["format", "format_version", "config", "n_runs", "seeds"], keys
    assert keys[-4:] == ["data", "environment", "timing", "created"], keys
    assert len(rec["seeds"]["runs"]) == rec["n_runs"]
    assert rec["data"]["sha256"] and (checksums is None or rec["data"]["sha256"] == checksums)
    assert rec["environment"]["devices"] and rec["timing"]["total_s"] > 0 and rec["timing"]["peak_rss_mb"] > 0
    if health:  # every engine experiment says which runs diverged
        assert set(rec["health"]) == {"ok", "nonfinite", "teacher_not_better", "teacher_margin"}
        assert rec["health"]["ok"] == (not rec["health"]["nonfinite"] and not rec["health"]["teacher_not_better"])


@pytest.fixture
def check_envelope():
    """``check_envelope(record, checksums=None, health=True)``: assert the common record envelope."""
    return _check_envelope


def _fake_dataset(n_train: int = 3000, n_test: int = 1000, *, name: str = "mnist",
                  checksums: dict | None = None, source_dir: str = "/nowhere"):
    """A stand-in for a loaded dataset (no file): zero images of MNIST's shape, labels 0..9 in turn, and the
    provenance a record copies (name, source directory, checksums). Enough for the checks that come before any
    compute, and for studies whose engine a test replaces by a fake."""
    from types import SimpleNamespace

    import numpy as np

    return SimpleNamespace(name=name, source_dir=source_dir, checksums={"f": "0"} if checksums is None else checksums,
                           train_images=np.zeros((n_train, 784), np.float32), train_labels=np.arange(n_train) % 10,
                           test_images=np.zeros((n_test, 784), np.float32), test_labels=np.arange(n_test) % 10,
                           n_classes=10)


@pytest.fixture
def fake_dataset():
    """``fake_dataset(n_train=3000, n_test=1000, *, name="mnist", checksums=None, source_dir="/nowhere")``:
    a dataset stand-in with no file behind it."""
    return _fake_dataset
