"""Fixtures shared by the unit tests."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def find_data_dir() -> Path | None:
    """The folder holding the real datasets, or None when there is none.

    Order: $TFVAE_DATA_DIR, the project's data/ (CI seeds it), ../shared/data.
    """
    candidates = [os.environ.get("TFVAE_DATA_DIR"), ROOT / "data", ROOT.parent / "shared" / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "mnist" / "t10k-images-idx3-ubyte.gz").exists():
            return Path(candidate)
    return None


@pytest.fixture
def data_dir() -> Path:
    found = find_data_dir()
    if found is None:
        pytest.skip("no real datasets here (set TFVAE_DATA_DIR or seed data/ from ../shared/data)")
    return found


@pytest.fixture
def binary_batch() -> np.ndarray:
    rng = np.random.default_rng(0)
    return (rng.random((32, 4, 4, 1)) < 0.3).astype(np.float32)
