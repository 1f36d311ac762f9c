"""Tests for subliminal_mlp.core.data: IDX parsing, verification, lookup order, downloads."""

from __future__ import annotations

import dataclasses
import functools
import gzip
import http.server
import shutil
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from subliminal_mlp.core import data
from subliminal_mlp.core.data import DATASETS, DataError, load_dataset, load_mnist, parse_idx

MNIST_FILES = DATASETS["mnist"].file_names


# ------------------------------------------------------------------ helpers


def idx_bytes(array: np.ndarray, *, dtype_code: int = 0x08, magic: bytes = b"\x00\x00") -> bytes:
    """Hand-built IDX encoding of a uint8 array."""
    header = magic + bytes([dtype_code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def copy_mnist(src_root: Path, dest: Path) -> Path:
    """Copy the four MNIST files into ``dest`` (writable copies); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in MNIST_FILES:
        shutil.copyfile(src_root / "mnist" / name, dest / name)
    return dest


def corrupt_content(path: Path, offset: int = 100) -> None:
    """Flip one byte of the *decompressed* content and re-gzip in place."""
    content = bytearray(gzip.decompress(path.read_bytes()))
    content[offset] ^= 0x01
    path.write_bytes(gzip.compress(bytes(content), compresslevel=1))


def leftovers(directory: Path) -> list[str]:
    """Temporary files left behind in ``directory``."""
    return sorted(p.name for p in directory.iterdir() if p.name not in MNIST_FILES)


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No data-root env var, and no proxy for local test servers."""
    monkeypatch.delenv(data.ENV_DATA, raising=False)
    monkeypatch.delenv(data.ENV_CACHE, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        pass


@pytest.fixture
def http_mirror() -> Iterator[Callable[[Path], str]]:
    """Factory: serve a directory over HTTP on 127.0.0.1; returns its base URL."""
    servers: list[tuple[http.server.ThreadingHTTPServer, threading.Thread]] = []

    def start(directory: Path) -> str:
        handler = functools.partial(_QuietHandler, directory=str(directory))
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        servers.append((server, thread))
        return f"http://127.0.0.1:{server.server_address[1]}/"

    try:
        yield start
    finally:
        for server, thread in servers:
            server.shutdown()
            server.server_close()
            thread.join(timeout=10)


# ---------------------------------------------------------------------- IDX


def test_parse_idx_images_and_labels() -> None:
    images = np.arange(18, dtype=np.uint8).reshape(2, 3, 3)
    parsed = parse_idx(idx_bytes(images))
    assert parsed.dtype == np.uint8
    assert parsed.shape == (2, 3, 3)
    np.testing.assert_array_equal(parsed, images)

    labels = np.array([3, 1, 4, 1, 5], dtype=np.uint8)
    parsed = parse_idx(idx_bytes(labels))
    assert parsed.shape == (5,)
    np.testing.assert_array_equal(parsed, labels)


def test_parse_idx_rejects_bad_magic() -> None:
    with pytest.raises(DataError, match="magic"):
        parse_idx(idx_bytes(np.zeros((2, 2), np.uint8), magic=b"\x1f\x8b"))


def test_parse_idx_rejects_wrong_dtype_code() -> None:
    with pytest.raises(DataError, match="0x0d"):
        parse_idx(idx_bytes(np.zeros((2, 2), np.uint8), dtype_code=0x0D))


def test_parse_idx_rejects_truncated_payload() -> None:
    raw = idx_bytes(np.zeros((2, 3, 3), np.uint8))
    with pytest.raises(DataError, match="truncated"):
        parse_idx(raw[:-1], source="some/file")
    with pytest.raises(DataError, match="trailing"):
        parse_idx(raw + b"\x00")
    with pytest.raises(DataError, match="header"):
        parse_idx(raw[:6])
    with pytest.raises(DataError, match="some/file"):
        parse_idx(raw[:-1], source="some/file")


# ----------------------------------------------------------------- real data


def test_mnist_loads(data_root: Path) -> None:
    ds = load_mnist(data_root)
    assert ds.name == "mnist"
    assert ds.n_classes == ds.num_classes == 10
    assert Path(ds.source_dir) == (data_root / "mnist").resolve()
    assert ds.train_images.shape == (60_000, 784) and ds.train_images.dtype == np.float32
    assert ds.test_images.shape == (10_000, 784) and ds.test_images.dtype == np.float32
    assert ds.train_labels.shape == (60_000,) and ds.train_labels.dtype == np.int32
    assert ds.test_labels.shape == (10_000,) and ds.test_labels.dtype == np.int32
    for images in (ds.train_images, ds.test_images):
        assert images.min() == -1.0 and images.max() == 1.0
    for labels, n in ((ds.train_labels, 60_000), (ds.test_labels, 10_000)):
        counts = np.bincount(labels, minlength=10)
        assert counts.shape == (10,) and counts.sum() == n
        assert (counts > 0).all()
    # Well-known MNIST facts: first training label is 5; most frequent class is 1.
    assert ds.train_labels[0] == 5
    assert np.bincount(ds.train_labels).argmax() == 1
    assert ds.checksums == {f.name: f.sha256 for f in DATASETS["mnist"].files}
    # Decoded by hand from the IDX files (big-endian header, then row-major uint8 pixels): every pixel, in order.
    import gzip
    import struct

    for split, images, labels in (("train", ds.train_images, ds.train_labels), ("t10k", ds.test_images, ds.test_labels)):
        raw = gzip.decompress((data_root / "mnist" / f"{split}-images-idx3-ubyte.gz").read_bytes())
        magic, n, rows, cols = struct.unpack(">4I", raw[:16])
        assert (magic, rows, cols) == (2051, 28, 28) and n == images.shape[0]
        pixels = np.frombuffer(raw, np.uint8, offset=16).reshape(n, rows * cols).astype(np.float64)
        np.testing.assert_allclose(images, pixels / 255 * 2 - 1, rtol=0, atol=1e-7)  # float32 arithmetic
        raw = gzip.decompress((data_root / "mnist" / f"{split}-labels-idx1-ubyte.gz").read_bytes())
        assert struct.unpack(">2I", raw[:8]) == (2049, n)
        np.testing.assert_array_equal(labels, np.frombuffer(raw, np.uint8, offset=8))


def test_arrays_are_read_only_and_cached(data_root: Path) -> None:
    ds = load_mnist(data_root)
    with pytest.raises(ValueError, match="read-only"):
        ds.train_images[0, 0] = 0.0
    with pytest.raises(ValueError, match="read-only"):
        ds.train_labels[0] = 0
    again = load_dataset("mnist", data_root / "mnist")  # directory holding the files directly
    assert again.train_images is ds.train_images
    again.checksums.clear()  # the checksums dict is the caller's own
    assert load_mnist(data_root).checksums == ds.checksums


def test_fashion_mnist_loads(data_root: Path) -> None:
    ds = data.load_fashion_mnist(data_root)
    assert ds.name == "fashion-mnist"
    assert Path(ds.source_dir) == (data_root / "fashion-mnist").resolve()
    assert ds.train_images.shape == (60_000, 784) and ds.test_images.shape == (10_000, 784)
    assert ds.train_images.min() == -1.0 and ds.train_images.max() == 1.0
    assert (np.bincount(ds.train_labels, minlength=10) == 6000).all()  # balanced classes
    assert ds.checksums == {f.name: f.sha256 for f in DATASETS["fashion-mnist"].files}
    assert not np.array_equal(ds.train_images[:10], load_mnist(data_root).train_images[:10])
    # where the Debian package puts the files (protocol.md §3), looked in when nothing else is given
    (system,) = DATASETS["fashion-mnist"].system_dirs
    assert f"under {system}/" in (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()


def test_unknown_dataset_name() -> None:
    with pytest.raises(DataError, match="fashion-mnist"):
        load_dataset("cifar10")


# --------------------------------------------------------------- corruption


def test_flipped_byte_fails_checksum(data_root: Path, tmp_path: Path) -> None:
    copy_mnist(data_root, tmp_path / "mnist")
    corrupt_content(tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz")
    with pytest.raises(DataError) as info:
        load_mnist(tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg
    assert "sha256" in msg
    assert DATASETS["mnist"].files[3].sha256 in msg  # what was expected
    assert "What to do" in msg


def test_a_file_changed_after_loading_is_verified_again(data_root: Path, tmp_path: Path) -> None:
    # The in-process cache is keyed by the files' size and modification time: a file replaced in place
    # (a damaged copy here) is read and verified again, not served from the earlier load.
    copy_mnist(data_root, tmp_path / "mnist")
    assert load_mnist(tmp_path).train_labels[0] == 5
    path = tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz"
    before = path.stat().st_mtime_ns
    corrupt_content(path)
    os.utime(path, ns=(before + 10**9, before + 10**9))
    with pytest.raises(DataError, match="sha256"):
        load_mnist(tmp_path)


def test_wrong_size_is_reported(data_root: Path, tmp_path: Path) -> None:
    copy_mnist(data_root, tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    content = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(content + b"\x00"))
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz.*60,008 bytes.*found more than 60,008 bytes"):
        load_mnist(tmp_path)
    path.write_bytes(gzip.compress(content[:-8]))
    with pytest.raises(DataError, match=r"expected 60,008 bytes .*found 60,000 bytes"):
        load_mnist(tmp_path)
    # A file that inflates far beyond the expected size is not inflated to its end (500 MB of zeros took 1.2 GB of
    # memory; a larger one would have been killed without a word): one byte beyond the size is read.
    import tracemalloc

    from subliminal_mlp.core.data import _decompress_and_check

    bomb = gzip.compress(bytes(50_000_000), compresslevel=1)
    spec = next(f for f in DATASETS["mnist"].files if f.name == path.name)
    tracemalloc.start()
    try:
        with pytest.raises(DataError, match="found more than 60,008 bytes"):
            _decompress_and_check(bomb, spec, str(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000, peak  # (the 50 MB it inflates to, before)


def test_truncated_gzip(data_root: Path, tmp_path: Path) -> None:
    copy_mnist(data_root, tmp_path / "mnist")
    path = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte\.gz.*gzip"):
        load_mnist(tmp_path)


def test_missing_file_in_explicit_dir(data_root: Path, tmp_path: Path, no_env: None) -> None:
    copy_mnist(data_root, tmp_path / "mnist")
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").unlink()
    with pytest.raises(DataError) as info:
        # Even with a mirror available, an explicit dir never falls through to a download.
        load_mnist(tmp_path, mirrors=["http://127.0.0.1:9/"], cache_dir=tmp_path / "cache")
    msg = str(info.value)
    assert "t10k-images-idx3-ubyte.gz" in msg
    assert str(tmp_path) in msg
    assert not (tmp_path / "cache").exists()


def test_an_uncompressed_file_is_named_and_gzipping_it_as_told_loads(data_root: Path, tmp_path: Path,
                                                                     no_env: None) -> None:
    copy_mnist(data_root, tmp_path / "mnist")
    gz = tmp_path / "mnist" / "train-labels-idx1-ubyte.gz"
    plain = gz.with_suffix("")
    plain.write_bytes(gzip.decompress(gz.read_bytes()))  # what `gunzip` leaves
    gz.unlink()
    with pytest.raises(DataError, match=r"train-labels-idx1-ubyte is there uncompressed.*gzip -k") as info:
        load_mnist(tmp_path)
    assert "missing from" in str(info.value)
    gz.write_bytes(gzip.compress(plain.read_bytes(), mtime=1))  # another gzip header than the canonical file's
    assert load_mnist(tmp_path).train_labels.shape == (60000,)
    with pytest.raises(DataError) as info:  # a file merely missing gets no such note
        (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
        load_mnist(tmp_path)
    assert "there uncompressed" not in str(info.value)


def test_nonexistent_explicit_dir(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        load_mnist(tmp_path / "nope")


# ------------------------------------------------------------ lookup order


def test_argument_beats_env(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.ENV_DATA, str(tmp_path))  # holds nothing: would fail if used
    ds = load_mnist(data_root)
    assert Path(ds.source_dir) == (data_root / "mnist").resolve()


def test_env_used_without_argument(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(data.ENV_DATA, str(data_root))
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    ds = load_mnist(download=False)
    assert Path(ds.source_dir) == (data_root / "mnist").resolve()


def test_env_without_files_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(data.ENV_DATA, str(tmp_path))
    with pytest.raises(DataError, match=f"What to do: .*correct or unset \\${data.ENV_DATA}") as err:
        load_mnist(cache_dir=tmp_path / "cache", mirrors=["http://127.0.0.1:9/"])
    assert not (tmp_path / "cache").exists()
    assert " or or " not in str(err.value)
    (tmp_path / "mnist").mkdir()  # a root that exists, without the files: the same advice, said once
    with pytest.raises(DataError, match="copy the missing files there, correct or unset") as err:
        load_mnist(cache_dir=tmp_path / "cache", mirrors=["http://127.0.0.1:9/"])
    assert " or or " not in str(err.value)


def test_an_empty_data_dir_is_no_data_dir(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # As for an empty $SUBLIMINAL_MLP_DATA: "" is not the current directory.
    monkeypatch.setenv(data.ENV_DATA, str(data_root))
    monkeypatch.chdir(data_root / "mnist")  # the four files are here: "" read as "." would find them
    assert Path(load_mnist("", download=False).source_dir) == (data_root / "mnist").resolve()
    monkeypatch.setenv(data.ENV_DATA, str(data_root / "nowhere"))
    with pytest.raises(DataError, match="nowhere"):
        load_mnist("", download=False)
    monkeypatch.setenv(data.ENV_DATA, " ")  # a blank one is shown as such (it was "data root   (from ...)")
    with pytest.raises(DataError, match=r"^data root ' ' \(from \$SUBLIMINAL_MLP_DATA\) does not exist"):
        load_mnist(download=False)


def test_another_datasets_files_are_named_as_such(data_root: Path, tmp_path: Path, no_env: None) -> None:
    # MNIST and Fashion-MNIST share file names and sizes; a folder holding one directly is not the other,
    # and its intact files are not reported as corrupt.
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", data_root / "mnist", download=False)
    msg = str(info.value)
    assert "is mnist's train-images-idx3-ubyte.gz" in msg and "holds another dataset" in msg
    assert "fashion-mnist/train-images-idx3-ubyte.gz" in msg and "checksum mismatch" not in msg
    assert "replace" not in msg
    # In <root>/fashion-mnist/ the file is in the right place and wrong: replace it (from the cache: delete it).
    copy_mnist(data_root, tmp_path / "cache" / "fashion-mnist")
    with pytest.raises(DataError) as info:
        load_dataset("fashion-mnist", cache_dir=tmp_path / "cache", download=False)
    msg = str(info.value)
    assert "is mnist's train-images-idx3-ubyte.gz" in msg and "What to do: delete" in msg and "holds another dataset" not in msg


def test_cache_used_without_argument_or_env(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    copy_mnist(data_root, tmp_path / "cache" / "mnist")
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "cache"))
    ds = load_mnist(download=False)
    assert Path(ds.source_dir) == (tmp_path / "cache" / "mnist").resolve()
    assert ds.train_labels[0] == 5


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv(data.ENV_CACHE, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert data.default_cache_dir() == tmp_path / "xdg" / "subliminal_mlp"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert data.default_cache_dir() == tmp_path / "home" / ".cache" / "subliminal_mlp"
    monkeypatch.setenv(data.ENV_CACHE, str(tmp_path / "c"))
    assert data.default_cache_dir() == tmp_path / "c"


def test_nothing_found_without_download(tmp_path: Path, no_env: None) -> None:
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=tmp_path, download=False)
    msg = str(info.value)
    assert str(tmp_path / "mnist") in msg and data.ENV_DATA in msg and "data_dir" in msg


def fashion_system_dir(data_root: Path, system_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``system_dir`` holding (links to) the Fashion-MNIST files, made the dataset's system directory."""
    system_dir.mkdir()
    for name in DATASETS["fashion-mnist"].file_names:
        (system_dir / name).symlink_to(data_root / "fashion-mnist" / name)
    spec = dataclasses.replace(DATASETS["fashion-mnist"], system_dirs=(str(system_dir),))
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    return system_dir


def test_fashion_mnist_system_dir(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    system_dir = fashion_system_dir(data_root, tmp_path / "usr-share-datasets-fashion-mnist", monkeypatch)
    ds = data.load_fashion_mnist(cache_dir=tmp_path / "cache", download=False)
    assert Path(ds.source_dir) == system_dir.resolve()


def test_env_beats_the_system_dir_and_the_nested_layout_beats_the_flat_one(
    data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    # The documented order: argument, environment variable, system directory, cache.
    fashion_system_dir(data_root, tmp_path / "system", monkeypatch)
    monkeypatch.setenv(data.ENV_DATA, str(data_root))
    ds = data.load_fashion_mnist(cache_dir=tmp_path / "cache", download=False)
    assert Path(ds.source_dir) == (data_root / "fashion-mnist").resolve()
    # Under a data root holding the files both in <root>/mnist and directly in <root>: <root>/mnist.
    root = tmp_path / "both"
    copy_mnist(data_root, root / "mnist")
    copy_mnist(data_root, root)
    assert Path(load_mnist(root).source_dir) == (root / "mnist").resolve()


def test_fashion_mnist_has_no_mirror(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_env: None
) -> None:
    spec = dataclasses.replace(DATASETS["fashion-mnist"], system_dirs=())
    monkeypatch.setitem(DATASETS, "fashion-mnist", spec)
    with pytest.raises(DataError) as info:
        data.load_fashion_mnist(cache_dir=tmp_path)
    msg = str(info.value)
    assert "dataset-fashion-mnist" in msg and "data_dir" in msg


# ----------------------------------------------------------------- download


def test_download_from_local_mirror(
    data_root: Path,
    tmp_path: Path,
    no_env: None,
    http_mirror: Callable[[Path], str],
) -> None:
    url = http_mirror(copy_mnist(data_root, tmp_path / "served"))
    cache = tmp_path / "cache"
    ds = load_dataset("mnist", None, cache_dir=cache, mirrors=url)  # one mirror, as a string
    assert Path(ds.source_dir) == (cache / "mnist").resolve()
    assert sorted(p.name for p in (cache / "mnist").iterdir()) == sorted(MNIST_FILES)
    assert ds.train_labels[0] == 5 and ds.test_images.shape == (10_000, 784)
    # Now cached on disk: loads without any mirror.
    assert load_mnist(cache_dir=cache, download=False).train_images is ds.train_images


def test_download_falls_back_to_next_mirror(
    data_root: Path, tmp_path: Path, no_env: None, http_mirror: Callable[[Path], str], capsys
) -> None:
    good = http_mirror(copy_mnist(data_root, tmp_path / "served"))
    empty = tmp_path / "empty"
    empty.mkdir()
    cache = tmp_path / "cache"
    # Only the two small files are missing from the cache; the first mirror 404s.
    copy_mnist(data_root, cache / "mnist")
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (cache / "mnist" / name).unlink()
    capsys.readouterr()
    ds = load_mnist(cache_dir=cache, mirrors=[http_mirror(empty), good])
    assert ds.test_labels.shape == (10_000,)
    # each file downloaded is said on stderr before its mirrors are tried (a silent wait otherwise)
    assert capsys.readouterr().err.splitlines() == [
        f"subliminal-mlp: downloading mnist/{name} into {cache / 'mnist'} (from 2 mirrors, up to 30 s each)"
        for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz")]
    assert leftovers(cache / "mnist") == []


def test_download_with_corrupt_file(
    data_root: Path, tmp_path: Path, no_env: None, http_mirror: Callable[[Path], str]
) -> None:
    served = copy_mnist(data_root, tmp_path / "served")
    corrupt_content(served / "t10k-labels-idx1-ubyte.gz")
    url = http_mirror(served)
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=cache, mirrors=[url])
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte.gz" in msg and "sha256" in msg and url in msg
    assert not (cache / "mnist" / "t10k-labels-idx1-ubyte.gz").exists()
    assert leftovers(cache / "mnist") == []


def test_a_cache_that_refuses_files_is_not_a_network_failure(
    tmp_path: Path, no_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    def refuse(*a: object, **k: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(data.tempfile, "TemporaryFile", refuse)  # a read-only folder (the tests run as root)
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=tmp_path / "cache", mirrors=["http://127.0.0.1:9/"])
    msg = str(info.value)
    assert "cannot create the cache directory" in msg and "Permission denied" in msg
    assert "network" not in msg and data.ENV_CACHE in msg


def test_download_without_network(tmp_path: Path, no_env: None) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    cache = tmp_path / "cache"
    with pytest.raises(DataError) as info:
        load_mnist(cache_dir=cache, mirrors=[url])
    msg = str(info.value)
    assert url in msg
    assert "data_dir" in msg and data.ENV_DATA in msg and str(cache / "mnist") in msg
    assert leftovers(cache / "mnist") == []
