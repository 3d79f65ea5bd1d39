"""Fixtures for runtime tests: a torch-free toy artifact (s4t_edge.runtime.testing)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.runtime.testing import build_toy_artifact


@pytest.fixture(scope="session")
def toy_artifact_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_toy_artifact(tmp_path_factory.mktemp("toy") / "art")


@pytest.fixture
def toy_artifact(toy_artifact_master: Path, tmp_path: Path) -> Path:
    """A private copy, so tests may corrupt it."""
    dst = tmp_path / "art"
    shutil.copytree(toy_artifact_master, dst)
    return dst


@pytest.fixture
def frames() -> np.ndarray:
    """A batch of uint8 frames matching the toy artifact (2 × 8 × 8 × 3)."""
    return np.random.default_rng(0).integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
