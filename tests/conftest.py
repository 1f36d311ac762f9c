"""Shared pytest fixtures for the subliminal_mlp test suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


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
