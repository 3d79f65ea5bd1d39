"""Project-wide test settings: GPU and TensorRT tests skip themselves where the hardware or library is absent."""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.toy_artifact import build_toy_artifact


def _has_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _has_tensorrt() -> bool:
    return importlib.util.find_spec("tensorrt") is not None


def pytest_collection_modifyitems(config, items):
    cuda = None
    trt = None
    for item in items:
        if "tensorrt" in item.keywords:
            trt = _has_tensorrt() if trt is None else trt
            cuda = _has_cuda() if cuda is None else cuda
            if not trt:
                item.add_marker(
                    pytest.mark.skip(
                        reason="TensorRT is not installed (pip install 's4t-edge[tensorrt]' or JetPack's python3-libnvinfer)"
                    )
                )
            elif not cuda:
                item.add_marker(pytest.mark.skip(reason="TensorRT tests need a CUDA GPU"))
        elif "gpu" in item.keywords:
            cuda = _has_cuda() if cuda is None else cuda
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="no CUDA GPU on this machine"))


# Keep BLAS/OpenMP from oversubscribing the 2-core CI machine when tests spawn subprocesses.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(scope="session")
def toy_artifact_master(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The torch-free toy artifact (tests/toy_artifact.py), built once per session."""
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
