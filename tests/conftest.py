"""Project-wide test settings: GPU and TensorRT tests skip themselves where the hardware or library is absent."""

from __future__ import annotations

import importlib.util
import os

import pytest


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
