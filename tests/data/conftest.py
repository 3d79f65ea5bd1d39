"""Small shared datasets for the data tests (rendered once per session: rendering is the slow part)."""

from __future__ import annotations

import numpy as np
import pytest

from s4t_edge.data import Dataset, synth


@pytest.fixture(scope="session")
def source_small() -> Dataset:
    """24 source scenes at 32x32 -- enough to see every class and some of each kind of edge."""
    return synth("source", 24, 32, seed=7)


@pytest.fixture()
def tiny_dataset() -> Dataset:
    """A hand-made 3-image dataset with every label, for file-format tests."""
    rng = np.random.default_rng(0)
    n, h, w = 3, 5, 6
    normals = rng.normal(size=(n, h, w, 3)).astype(np.float32)
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    return Dataset(
        image=rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8),
        semseg=rng.integers(0, 7, (n, h, w), dtype=np.uint8),
        depth=rng.uniform(0.5, 5, (n, h, w)).astype(np.float32),
        normals=normals,
        edge=rng.integers(0, 2, (n, h, w), dtype=np.uint8),
        meta={"domain": "hand", "seed": 0},
    )
