"""Loading and verifying MNIST and Fashion-MNIST (protocol.md §3).

The loader reads the four canonical IDX files of a dataset (gzip-compressed),
verifies them, and returns them as a :class:`Dataset` of float32 images scaled
into ``[-1, 1]`` and int32 labels.

Lookup order
------------
The directory holding the four files (``train-images-idx3-ubyte.gz``,
``train-labels-idx1-ubyte.gz``, ``t10k-images-idx3-ubyte.gz``,
``t10k-labels-idx1-ubyte.gz``) is searched for in this order:

1. the explicit ``data_dir`` argument (CLI ``--data-dir``): a *data root*, the
   files being in ``<data_dir>/<name>/``; a directory that directly holds the
   four files is accepted too;
2. the environment variable ``SUBLIMINAL_MLP_DATA`` (same data-root semantics);
3. for Fashion-MNIST only: ``/usr/share/datasets/fashion-mnist`` (installed by
   the Debian package ``dataset-fashion-mnist``);
4. the user cache ``<cache>/<name>/``, where ``<cache>`` is the ``cache_dir``
   argument, else ``$SUBLIMINAL_MLP_CACHE``, else
   ``$XDG_CACHE_HOME/subliminal_mlp``, else ``~/.cache/subliminal_mlp``;
5. a download from the dataset's mirrors into that cache (only when
   ``download=True``; no mirror is known for Fashion-MNIST).

A directory counts as found when all four files exist in it. A directory given
explicitly (argument or environment variable) that lacks them is an error: the
loader never silently falls through to another place or to a download.

Verification
------------
Every file found is verified, and a wrong or corrupt file is always an error,
never a reason to look elsewhere: it is decompressed with gzip (a truncated or
corrupt gzip stream is an error), the size and SHA-256 of the *uncompressed*
content are compared with :data:`DATASETS` (gzip headers differ between mirrors,
the contents do not), and the IDX content is parsed and its shape checked
(images ``(N, 28, 28)``, labels ``(N,)`` with values in ``0..9``). A download is
written to a temporary file next to its destination, verified the same way,
and only then moved into place; a failed or wrong download leaves nothing
behind.

Every failure raises :class:`DataError`, whose message names the file, what
was expected and what was found, and what to do about it.

Decoded datasets are cached in-process (keyed on the resolved directory and
the files' sizes and modification times), so repeated loads are cheap. The
returned arrays are shared between callers and therefore read-only.
"""

from __future__ import annotations

import dataclasses
import functools
import gzip
import hashlib
import http.client
import io
import math
import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
import weakref
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = [
    "DATASETS",
    "DOWNLOAD_TIMEOUT_S",
    "ENV_CACHE",
    "ENV_DATA",
    "DataError",
    "Dataset",
    "DatasetSpec",
    "FileSpec",
    "clear_cache",
    "default_cache_dir",
    "from_files",
    "load_dataset",
    "load_fashion_mnist",
    "load_mnist",
    "parse_idx",
]

ENV_DATA = "SUBLIMINAL_MLP_DATA"
"""Environment variable naming a data root (files in ``<root>/<dataset>/``)."""

ENV_CACHE = "SUBLIMINAL_MLP_CACHE"
"""Environment variable overriding the user cache directory."""

DOWNLOAD_TIMEOUT_S = 30.0
"""Socket timeout, in seconds, of each download attempt."""

NUM_CLASSES = 10
IMAGE_SIDE = 28

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"

_IDX_UBYTE = 0x08


class DataError(RuntimeError):
    """A dataset file is missing, corrupt, or could not be downloaded.

    The message names the file, what was expected versus what was found, and
    what to do about it.
    """


@dataclass(frozen=True)
class FileSpec:
    """One canonical IDX file: its name and its *uncompressed* size, SHA-256 and shape.

    The size is the IDX header (4 bytes, then 4 per dimension) plus one byte per value:

    >>> from subliminal_mlp.core.data import DATASETS
    >>> fs = DATASETS["mnist"].files[0]
    >>> fs.name, fs.shape, fs.size == 4 + 4 * 3 + 60_000 * 28 * 28
    ('train-images-idx3-ubyte.gz', (60000, 28, 28), True)
    """

    name: str
    size: int
    sha256: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class DatasetSpec:
    """A dataset's four files, download mirrors and system-wide install locations.

    MNIST and Fashion-MNIST have the same file names and sizes, but other contents (checksums):

    >>> from subliminal_mlp.core.data import DATASETS
    >>> mnist, fashion = DATASETS["mnist"], DATASETS["fashion-mnist"]
    >>> fashion.file_names == mnist.file_names, [f.size for f in fashion.files] == [f.size for f in mnist.files]
    (True, True)
    >>> any(f.sha256 == g.sha256 for f in fashion.files for g in mnist.files), fashion.mirrors, fashion.system_dirs
    (False, (), ('/usr/share/datasets/fashion-mnist',))
    """

    name: str
    files: tuple[FileSpec, FileSpec, FileSpec, FileSpec]
    """Train images, train labels, test images, test labels, in that order."""
    mirrors: tuple[str, ...] = ()
    """Base URLs; a file is fetched from ``<mirror>/<file name>``."""
    system_dirs: tuple[str, ...] = ()
    """Directories that directly hold the four files when a system package installed them."""
    no_mirror_hint: str = ""
    """What to tell the user when there is no mirror to download from."""

    @property
    def file_names(self) -> tuple[str, ...]:
        """The four file names, in table order."""
        return tuple(f.name for f in self.files)

    @property
    def checksums(self) -> dict[str, str]:
        """File name -> SHA-256 of its uncompressed content, as a loaded :class:`Dataset` has them."""
        return {f.name: f.sha256 for f in self.files}


DATASETS: dict[str, DatasetSpec] = {
    "mnist": DatasetSpec(
        name="mnist",
        files=(
            FileSpec(
                TRAIN_IMAGES,
                47_040_016,
                "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
                (60_000, IMAGE_SIDE, IMAGE_SIDE),
            ),
            FileSpec(
                TRAIN_LABELS,
                60_008,
                "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
                (60_000,),
            ),
            FileSpec(
                TEST_IMAGES,
                7_840_016,
                "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
                (10_000, IMAGE_SIDE, IMAGE_SIDE),
            ),
            FileSpec(
                TEST_LABELS,
                10_008,
                "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
                (10_000,),
            ),
        ),
        mirrors=(
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        files=(
            FileSpec(
                TRAIN_IMAGES,
                47_040_016,
                "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
                (60_000, IMAGE_SIDE, IMAGE_SIDE),
            ),
            FileSpec(
                TRAIN_LABELS,
                60_008,
                "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
                (60_000,),
            ),
            FileSpec(
                TEST_IMAGES,
                7_840_016,
                "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
                (10_000, IMAGE_SIDE, IMAGE_SIDE),
            ),
            FileSpec(
                TEST_LABELS,
                10_008,
                "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
                (10_000,),
            ),
        ),
        mirrors=(),
        system_dirs=("/usr/share/datasets/fashion-mnist",),
        no_mirror_hint=(
            "No download mirror is known for fashion-mnist: install the Debian package "
            "dataset-fashion-mnist (it puts the files in /usr/share/datasets/fashion-mnist/), "
            "or pass data_dir."
        ),
    ),
}
"""The known datasets, keyed by name (protocol.md §3)."""


@dataclass(frozen=True, eq=False)
class Dataset:
    """A verified dataset. Arrays are read-only (shared by the in-process cache).

    Images are float32 of shape ``(N, 784)`` with pixels ``x`` mapped to
    ``x / 255 * 2 - 1``, i.e. into ``[-1, 1]``; labels are int32 of shape ``(N,)``.

    MNIST's test set, whose class counts are published (980 zeros, 1135 ones, ...):

    >>> import numpy as np
    >>> from subliminal_mlp import load_mnist
    >>> ds = load_mnist()
    >>> ds.test_images.dtype, ds.test_labels.dtype, ds.n_classes, ds.test_images.flags.writeable
    (dtype('float32'), dtype('int32'), 10, False)
    >>> np.bincount(ds.test_labels).tolist()
    [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    """

    name: str
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray
    checksums: dict[str, str]
    """File name -> verified SHA-256 of the uncompressed content."""
    source_dir: str
    """The (resolved) directory the four files were read from."""

    @property
    def n_classes(self) -> int:
        """Number of classes (10), as ``n_classes`` of ``Config``, ``Task`` and ``Model``."""
        return NUM_CLASSES

    @property
    def num_classes(self) -> int:
        """The same as :attr:`n_classes` (its first name, kept for scripts that use it)."""
        return self.n_classes


# --------------------------------------------------------------------------- IDX


def parse_idx(raw: bytes, *, source: str = "<bytes>") -> np.ndarray:
    """Parse uncompressed IDX content into a (read-only) uint8 array.

    The IDX header is two zero bytes, a dtype code (only ``0x08``, unsigned
    byte, is supported), the number of dimensions, then one big-endian uint32
    per dimension; the payload must have exactly the size the dimensions imply.

    Args:
        raw: The uncompressed file content.
        source: How to name the content in error messages (e.g. its path).

    Raises:
        DataError: if the header is malformed or the payload length does not
            match the dimensions.

    A 2 x 3 array written by hand (magic ``00 00``, dtype ``08``, 2 dimensions, then 2 and 3), and
    the same bytes cut short:

    >>> import struct, numpy as np
    >>> from subliminal_mlp.core.data import parse_idx
    >>> pixels = np.arange(6, dtype=np.uint8).reshape(2, 3)
    >>> raw = struct.pack(">BBBBII", 0, 0, 0x08, 2, 2, 3) + pixels.tobytes()
    >>> parse_idx(raw).shape, np.array_equal(parse_idx(raw), pixels)
    ((2, 3), True)
    >>> parse_idx(raw[:-1])
    Traceback (most recent call last):
    subliminal_mlp.core.data.DataError: <bytes>: IDX payload length mismatch: dimensions (2, 3) need 6 bytes ...
    """
    view = memoryview(raw).cast("B")
    n = len(view)
    if n < 4:
        raise DataError(
            f"{source}: not an IDX file: expected a 4-byte header (00 00 <dtype> <ndim>), "
            f"found only {n} bytes. The file is truncated or not IDX data; replace it with "
            "a canonical copy."
        )
    if view[0] != 0 or view[1] != 0:
        raise DataError(
            f"{source}: not an IDX file: expected magic bytes 00 00, found "
            f"{view[0]:02x} {view[1]:02x}. Is it still gzip-compressed, or another format? "
            "Replace it with a canonical copy."
        )
    dtype_code, ndim = view[2], view[3]
    if dtype_code != _IDX_UBYTE:
        raise DataError(
            f"{source}: unsupported IDX dtype code 0x{dtype_code:02x}: expected 0x08 "
            "(unsigned byte, as in MNIST). Replace it with a canonical copy."
        )
    if ndim == 0:
        raise DataError(
            f"{source}: IDX header declares 0 dimensions: expected at least 1. "
            "Replace it with a canonical copy."
        )
    header_len = 4 + 4 * ndim
    if n < header_len:
        raise DataError(
            f"{source}: truncated IDX header: expected {header_len} bytes for {ndim} "
            f"dimensions, found {n}. Replace it with a canonical copy."
        )
    dims = tuple(int.from_bytes(view[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    found = n - header_len
    if found != expected:
        raise DataError(
            f"{source}: IDX payload length mismatch: dimensions {dims} need {expected} "
            f"bytes after the {header_len}-byte header, found {found} "
            f"({'truncated' if found < expected else 'trailing data'}). "
            "Replace it with a canonical copy."
        )
    return np.frombuffer(raw, dtype=np.uint8, offset=header_len).reshape(dims)


# ---------------------------------------------------------------- verification


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _decompress_and_check(compressed: bytes, fs: FileSpec, label: str) -> bytes:
    """Gunzip ``compressed`` and check its size and SHA-256 against ``fs``.

    Raises DataError naming ``label`` (no remedy; callers add one).
    """
    try:  # at most one byte more than expected: a file that inflates to gigabytes is not read to its end
        with gzip.GzipFile(fileobj=io.BytesIO(compressed)) as f:
            content = f.read(fs.size + 1)
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(
            f"{label}: not a valid gzip file (truncated or corrupt: {exc}); "
            f"expected the gzip-compressed IDX file {fs.name}"
        ) from None
    if len(content) != fs.size:
        found = f"more than {fs.size:,}" if len(content) > fs.size else f"{len(content):,}"
        raise DataError(
            f"{label}: wrong uncompressed size: expected {fs.size:,} bytes "
            f"(sha256 {fs.sha256}), found {found} bytes"
        )
    digest = _sha256(content)
    if digest != fs.sha256:
        other = [(name, f.name) for name, spec in DATASETS.items() if fs not in spec.files
                 for f in spec.files if f.sha256 == digest]
        if other:
            raise _OtherDataset(
                f"{label} is {other[0][0]}'s {other[0][1]} (its sha256 {digest}), not the file expected "
                f"here (sha256 {fs.sha256})"
            )
        raise DataError(
            f"{label}: checksum mismatch: expected sha256 {fs.sha256} of the uncompressed "
            f"content, found sha256 {digest}"
        )
    return content


class _OtherDataset(DataError):
    """An intact file of another dataset (MNIST and Fashion-MNIST share their file names and sizes)."""


def _read_verified(path: Path, fs: FileSpec) -> np.ndarray:
    """Read, decompress, checksum, parse and shape-check one file (no remedy in errors)."""
    try:
        compressed = path.read_bytes()
    except OSError as exc:
        raise DataError(f"{path}: cannot be read ({exc})") from None
    content = _decompress_and_check(compressed, fs, str(path))
    array = parse_idx(content, source=str(path))
    if array.shape != fs.shape:
        raise DataError(f"{path}: wrong IDX shape: expected {fs.shape}, found {array.shape}")
    return array


def _supply_hint(dataset: str, cache_target: Path | None = None) -> str:
    """How a user can make the files available."""
    hint = (
        f"pass data_dir (CLI --data-dir) or set {ENV_DATA} to a data root that contains "
        f"{dataset}/<file> for the four files"
    )
    if cache_target is not None:
        hint += f", or copy the four files into {cache_target}"
    return hint


def _remedy(origin: str, dataset: str, path: Path) -> str:
    """What to do about a bad file found at ``path`` (located via ``origin``)."""
    point = (
        f"or point --data-dir / {ENV_DATA} at a data root containing "
        f"{dataset}/{path.name}"
    )
    if origin == "cache":
        return f"What to do: delete {path} and re-run to download it again, {point}."
    if origin == "system":
        return (
            f"What to do: reinstall the Debian package dataset-{dataset} "
            f"(or restore {path}), {point}."
        )
    return f"What to do: replace {path} with an intact copy of the canonical file, {point}."


# -------------------------------------------------------------------- loading

_PIXEL_LUT = (np.arange(256, dtype=np.float32) / np.float32(255.0)) * np.float32(2.0) - np.float32(
    1.0
)
"""uint8 pixel -> x / 255 * 2 - 1 in float32 (0 -> -1 and 255 -> 1 exactly)."""


@dataclass(frozen=True)
class _Source:
    """In-process cache key: a directory plus its files' (size, mtime) stamps.

    ``origin`` only shapes error messages and is not part of the key.
    """

    dataset: str
    directory: str
    stamp: tuple[tuple[int, int], ...]
    origin: str = field(compare=False)


def _stamp(directory: Path, spec: DatasetSpec) -> tuple[tuple[int, int], ...]:
    stamps = []
    for fs in spec.files:
        path = directory / fs.name
        try:
            st = path.stat()
        except OSError as exc:
            raise DataError(f"{path}: cannot be accessed ({exc})") from None
        stamps.append((st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def _readonly(a: np.ndarray) -> np.ndarray:
    """``a``, read-only for good: its memory a ``bytes`` object, which nothing can make writeable again (a read-only
    flag alone can be set back), so that its checksum is computed once (``results.immutable``)."""
    return np.frombuffer(np.ascontiguousarray(a).tobytes(), a.dtype).reshape(a.shape)


ARRAYS = ("train_images", "train_labels", "test_images", "test_labels")
"""The array fields of a :class:`Dataset`."""

_DECODED: dict[int, tuple[weakref.ref, str, str]] = {}
"""``id(array) -> (weak reference, dataset name, field)`` of every array the loader decoded from verified files and
that still lives (an entry goes with its array)."""


def _decoded(a: np.ndarray, name: str, attr: str) -> np.ndarray:
    key = id(a)
    _DECODED[key] = (weakref.ref(a, lambda _: _DECODED.pop(key, None)), name, attr)
    return a


def from_files(dataset: object) -> bool:
    """Whether ``dataset`` holds exactly the content of the verified files it names: its four arrays are those the
    loader decoded from ``dataset.name``'s canonical files (memory nothing can change), each in its own field, and
    its ``checksums`` are those files'. A dataset made otherwise, or by replacing a loaded one's arrays, is not:
    a record then names its arrays by their fingerprints (:func:`~subliminal_mlp.core.results.data_record`).

    >>> import dataclasses
    >>> from subliminal_mlp import load_mnist
    >>> ds = load_mnist()
    >>> relabelled = dataclasses.replace(ds, test_labels=(ds.test_labels + 1) % 10)
    >>> from_files(ds), from_files(relabelled), from_files(dataclasses.replace(ds, source_dir="elsewhere"))
    (True, False, True)
    """
    spec = DATASETS.get(getattr(dataset, "name", None))
    if spec is None or dict(getattr(dataset, "checksums", None) or {}) != spec.checksums:
        return False
    for attr in ARRAYS:
        a = getattr(dataset, attr, None)
        entry = _DECODED.get(id(a))
        if entry is None or entry[0]() is not a or entry[1:] != (spec.name, attr):
            return False
    return True


@functools.lru_cache(maxsize=4)
def _load_source(src: _Source) -> Dataset:
    """Verify and decode the four files of ``src`` (cached; errors are not cached)."""
    spec = DATASETS[src.dataset]
    directory = Path(src.directory)
    raw: list[np.ndarray] = []
    for fs in spec.files:
        path = directory / fs.name
        try:
            array = _read_verified(path, fs)
            if array.ndim == 1 and array.size and int(array.max()) >= NUM_CLASSES:
                raise DataError(
                    f"{path}: labels out of range: expected values in 0..{NUM_CLASSES - 1}, "
                    f"found a maximum of {int(array.max())}"
                )
        except _OtherDataset as exc:
            if directory.name == src.dataset:  # <root>/<dataset>/ holds the other dataset's file
                raise DataError(f"{exc}. {_remedy(src.origin, src.dataset, path)}") from None
            raise DataError(
                f"{exc}: {directory} holds another dataset. A folder that holds the four files directly is "
                f"taken for whichever dataset is asked for. What to do: point --data-dir / {ENV_DATA} at "
                f"a data root that contains {src.dataset}/{path.name} (e.g. {directory.parent}, if it "
                f"holds {src.dataset}/)."
            ) from None
        except DataError as exc:
            raise DataError(f"{exc}. {_remedy(src.origin, src.dataset, path)}") from None
        raw.append(array)

    def images(a: np.ndarray) -> np.ndarray:
        return _readonly(_PIXEL_LUT[a.reshape(a.shape[0], -1)])

    def labels(a: np.ndarray) -> np.ndarray:
        return _readonly(a.astype(np.int32))

    train_x, train_y, test_x, test_y = raw
    arrays = dict(zip(ARRAYS, (images(train_x), labels(train_y), images(test_x), labels(test_y))))
    return Dataset(
        name=src.dataset,
        **{attr: _decoded(a, src.dataset, attr) for attr, a in arrays.items()},
        checksums=spec.checksums,
        source_dir=src.directory,
    )


def clear_cache() -> None:
    """Drop the in-process cache of decoded datasets (files on disk, the user cache included, are left alone).

    A load after it reads, verifies and decodes the files again, into new arrays of the same values:

    >>> import numpy as np
    >>> from subliminal_mlp import load_mnist
    >>> from subliminal_mlp.core.data import clear_cache
    >>> a = load_mnist()
    >>> a.train_images is load_mnist().train_images  # decoded once, then shared
    True
    >>> clear_cache()
    >>> b = load_mnist()
    >>> b.train_images is a.train_images, np.array_equal(b.train_images, a.train_images)
    (False, True)
    """
    _load_source.cache_clear()


# -------------------------------------------------------------------- lookup


def default_cache_dir() -> Path:
    """The user cache root: ``$SUBLIMINAL_MLP_CACHE``, else ``$XDG_CACHE_HOME/subliminal_mlp``,
    else ``~/.cache/subliminal_mlp``. Datasets live in ``<cache>/<name>/``.

    Under each environment in turn (restored afterwards; nothing is created):

    >>> import os
    >>> from pathlib import Path
    >>> from unittest import mock
    >>> from subliminal_mlp.core.data import default_cache_dir
    >>> with mock.patch.dict(os.environ, {"SUBLIMINAL_MLP_CACHE": "/data/cache", "XDG_CACHE_HOME": "/xdg"}):
    ...     first = default_cache_dir()
    ...     del os.environ["SUBLIMINAL_MLP_CACHE"]
    ...     second = default_cache_dir()
    ...     del os.environ["XDG_CACHE_HOME"]
    ...     third = default_cache_dir()
    >>> first.as_posix(), second.as_posix(), third == Path.home() / ".cache" / "subliminal_mlp"
    ('/data/cache', '/xdg/subliminal_mlp', True)
    """
    env = os.environ.get(ENV_CACHE)
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "subliminal_mlp"


def _missing(directory: Path, spec: DatasetSpec) -> list[str]:
    return [f for f in spec.file_names if not (directory / f).is_file()]


def _uncompressed_hint(directory: Path, missing: Sequence[str]) -> str:
    """A note naming the missing ``.gz`` files that lie in ``directory`` uncompressed ("" if none)."""
    plain = [f[: -len(".gz")] for f in missing if f.endswith(".gz") and (directory / f[: -len(".gz")]).is_file()]
    if not plain:
        return ""
    return (f" ({', '.join(plain)} {'is' if len(plain) == 1 else 'are'} there uncompressed: the loader reads the "
            f"gzipped IDX files; gzip {'it' if len(plain) == 1 else 'them'}, e.g. `gzip -k {directory / plain[0]}`, "
            f"and the content is verified as before)")


def _find_in_root(root: Path, spec: DatasetSpec, what: str, *, from_env: bool = False) -> Path:
    """The directory under an explicitly given data root that holds all four files.

    Raises DataError right away if there is none (no fall-through to other places); ``what`` names
    where the root came from, and ``from_env`` (an environment variable) adds "correct or unset it".
    """
    fix_env = f"correct or unset {what}, or " if from_env else ""
    if not root.is_dir():
        shown = str(root) if str(root).strip() == str(root) else repr(str(root))  # a blank one, visibly
        raise DataError(
            f"data root {shown} (from {what}) does not exist or is not a directory: "
            f"expected a data root containing {spec.name}/ with the files "
            f"{', '.join(spec.file_names)}. "
            f"What to do: {fix_env}{_supply_hint(spec.name)}."
        )
    nested = root / spec.name
    for candidate in (nested, root):
        if not _missing(candidate, spec):
            return candidate
    # Report against the layout the user most plausibly meant.
    report = root if len(_missing(root, spec)) < len(_missing(nested, spec)) else nested
    missing = _missing(report, spec)
    raise DataError(
        f"data root {root} (from {what}) does not hold the {spec.name} files: expected all four of "
        f"{', '.join(spec.file_names)} in {nested} (or directly in {root}); "
        f"missing from {report}: {', '.join(missing)}{_uncompressed_hint(report, missing)}. "
        f"What to do: copy the missing files there, {fix_env or 'or '}{_supply_hint(spec.name)}."
    )


def _locate(
    spec: DatasetSpec,
    data_dir: str | os.PathLike[str] | None,
    cache_dir: str | os.PathLike[str] | None,
    download: bool,
    mirrors: Sequence[str] | None,
) -> tuple[Path, str]:
    """Find (or download) the directory holding the four files; returns it and its origin."""
    if data_dir is not None and os.fspath(data_dir) != "":
        return _find_in_root(Path(data_dir).expanduser(), spec, "data_dir / --data-dir"), "argument"
    env = os.environ.get(ENV_DATA)
    if env:
        return _find_in_root(Path(env).expanduser(), spec, f"${ENV_DATA}", from_env=True), "environment"
    for system_dir in spec.system_dirs:
        if not _missing(Path(system_dir), spec):
            return Path(system_dir), "system"
    cache_root = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    target = cache_root / spec.name
    missing = _missing(target, spec)
    if missing:
        if not download:
            searched = [f"${ENV_DATA} (unset)", *spec.system_dirs, str(target)]
            raise DataError(
                f"{spec.name} files not found (download=False): looked in "
                f"{', '.join(searched)}; missing from {target}: {', '.join(missing)}"
                f"{_uncompressed_hint(target, missing)}. "
                f"What to do: {_supply_hint(spec.name, target)}, or allow downloading."
            )
        _download_missing(spec, target, missing, mirrors)
    return target, "cache"


# ------------------------------------------------------------------ download


def _fetch_verified(url: str, fs: FileSpec, target: Path) -> None:
    """Download ``url`` to a temp file in ``target``, verify it, then move it into place.

    The temp file is removed on any failure.
    """
    tmp = tempfile.NamedTemporaryFile(
        dir=target, prefix=f".{fs.name}.", suffix=".part", delete=False
    )
    tmp_path = Path(tmp.name)
    try:
        with tmp:
            with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
                shutil.copyfileobj(response, tmp, 1 << 20)
        _decompress_and_check(tmp_path.read_bytes(), fs, f"{url} (downloaded)")
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, target / fs.name)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def _download_missing(
    spec: DatasetSpec, target: Path, missing: Sequence[str], mirrors: Sequence[str] | None
) -> None:
    """Download each missing file from the first mirror that serves a verified copy."""
    bases = tuple(spec.mirrors if mirrors is None else (mirrors,) if isinstance(mirrors, str) else mirrors)
    if not bases:
        hint = spec.no_mirror_hint or f"No download mirror is known for {spec.name}."
        raise DataError(
            f"{spec.name} files not found (missing from {target}: {', '.join(missing)}). "
            f"{hint} What to do: {_supply_hint(spec.name, target)}."
        )
    try:
        target.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=target):  # an existing folder may still refuse new files
            pass
    except OSError as exc:
        raise DataError(
            f"cannot create the cache directory {target}, or a file in it ({exc}). "
            f"What to do: pass a writable cache_dir or set {ENV_CACHE}, or "
            f"{_supply_hint(spec.name)}."
        ) from None
    by_name = {fs.name: fs for fs in spec.files}
    for name in missing:
        fs = by_name[name]
        # said first: a network that drops packets makes each mirror wait DOWNLOAD_TIMEOUT_S in silence
        print(f"subliminal-mlp: downloading {spec.name}/{name} into {target} (from {len(bases)} mirror"
              f"{'s' if len(bases) > 1 else ''}, up to {DOWNLOAD_TIMEOUT_S:g} s each)", file=sys.stderr, flush=True)
        failures: list[str] = []
        for base in bases:
            url = base.rstrip("/") + "/" + name
            try:
                _fetch_verified(url, fs, target)
                break
            except DataError as exc:
                failures.append(str(exc))
            except (OSError, urllib.error.URLError, http.client.HTTPException, ValueError) as exc:
                failures.append(f"{url}: {exc}")
        else:
            raise DataError(
                f"download of {spec.name}/{name} into {target} failed from every mirror:\n  "
                + "\n  ".join(failures)
                + f"\nNothing was left in {target} for this file. "
                f"What to do: check the network (or the mirror), or supply the files yourself: "
                f"{_supply_hint(spec.name, target)}."
            )


# ------------------------------------------------------------------ public


def load_dataset(
    name: str = "mnist",
    data_dir: str | os.PathLike[str] | None = None,
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    download: bool = True,
    mirrors: Sequence[str] | None = None,
) -> Dataset:
    """Locate, verify and decode a dataset (see the module docstring for the lookup order).

    Args:
        name: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: A data root holding ``<name>/<file>`` (or the four files directly).
            If given, it must hold the files; nothing else is tried. ``""`` is the same as
            ``None``, as for ``$SUBLIMINAL_MLP_DATA``.
        cache_dir: User cache root; defaults to :func:`default_cache_dir`.
        download: Whether to download missing files into the cache.
        mirrors: Base URLs overriding the dataset's mirror list (one URL may be given as a string).

    Returns:
        The verified :class:`Dataset` (read-only arrays, shared across calls).

    Raises:
        DataError: on any missing, corrupt or undownloadable file, or an unknown name.

    The test images, checked against their file read here by hand (gunzip, SHA-256, IDX, ``x / 255 * 2 - 1``):

    >>> import gzip, hashlib, os, numpy as np
    >>> from subliminal_mlp import load_dataset
    >>> from subliminal_mlp.core.data import parse_idx
    >>> ds = load_dataset("mnist")  # found through $SUBLIMINAL_MLP_DATA here
    >>> with open(os.path.join(ds.source_dir, "t10k-images-idx3-ubyte.gz"), "rb") as f:
    ...     raw = gzip.decompress(f.read())
    >>> hashlib.sha256(raw).hexdigest() == ds.checksums["t10k-images-idx3-ubyte.gz"]
    True
    >>> np.allclose(ds.test_images, parse_idx(raw).reshape(10_000, 784) / 255 * 2 - 1, atol=1e-6)
    True
    """
    spec = DATASETS.get(name)
    if spec is None:
        raise DataError(f"unknown dataset {name!r}: expected one of {', '.join(sorted(DATASETS))}")
    directory, origin = _locate(spec, data_dir, cache_dir, download, mirrors)
    resolved = directory.resolve()
    dataset = _load_source(_Source(spec.name, str(resolved), _stamp(resolved, spec), origin))
    return dataclasses.replace(dataset, checksums=dict(dataset.checksums))


def load_mnist(data_dir: str | os.PathLike[str] | None = None, **kw: object) -> Dataset:
    """Load MNIST; keyword arguments as for :func:`load_dataset`.

    >>> ds = load_mnist()  # found through $SUBLIMINAL_MLP_DATA (or the cache, or a download), verified
    >>> ds.train_images.shape, ds.test_labels.shape, float(ds.train_images.min()), float(ds.train_images.max())
    ((60000, 784), (10000,), -1.0, 1.0)
    """
    return load_dataset("mnist", data_dir, **kw)  # type: ignore[arg-type]


def load_fashion_mnist(data_dir: str | os.PathLike[str] | None = None, **kw: object) -> Dataset:
    """Load Fashion-MNIST; keyword arguments as for :func:`load_dataset`.

    Its training set has 6,000 images of each of its 10 classes:

    >>> import numpy as np
    >>> from subliminal_mlp import load_fashion_mnist
    >>> fm = load_fashion_mnist()  # $SUBLIMINAL_MLP_DATA/fashion-mnist/ here, verified against its own checksums
    >>> fm.name, fm.train_images.shape, np.bincount(fm.train_labels).tolist() == [6000] * 10
    ('fashion-mnist', (60000, 784), True)
    """
    return load_dataset("fashion-mnist", data_dir, **kw)  # type: ignore[arg-type]
