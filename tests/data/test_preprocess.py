"""`preprocess`: the one normalisation shared by training and the runtime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from s4t_edge.data import preprocess
from s4t_edge.errors import DataError

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_values_layout_and_dtype():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 256, (2, 4, 5, 3), dtype=np.uint8)
    x = preprocess(img, MEAN, STD)
    assert x.shape == (2, 3, 4, 5) and x.dtype == np.float32 and x.flags.c_contiguous
    ref = (img.astype(np.float64) / 255 - np.array(MEAN)) / np.array(STD)
    assert np.allclose(x, ref.transpose(0, 3, 1, 2), atol=1e-5)
    # Channel order is kept: channel 1 of the output is the green plane.
    assert np.allclose(x[1, 1], (img[1, :, :, 1] / 255 - MEAN[1]) / STD[1], atol=1e-5)


@pytest.mark.parametrize(
    "images, mean, std, match",
    [
        (np.zeros((1, 4, 4, 3), np.float32), MEAN, STD, "uint8"),
        (np.zeros((4, 4, 3), np.uint8), MEAN, STD, r"\(N, H, W, 3\)"),
        (np.zeros((1, 4, 4, 3), np.uint8), (0.5, 0.5), STD, "3 means"),
        (np.zeros((1, 4, 4, 3), np.uint8), MEAN, (0.2, 0.0, 0.2), "positive"),
    ],
)
def test_bad_input(images, mean, std, match):
    with pytest.raises(DataError, match=match):
        preprocess(images, mean, std)


def test_data_package_never_imports_torch():
    # The device runtime imports s4t_edge.data where torch is absent.
    code = (
        "import sys, s4t_edge.data, s4t_edge.data.preview; "
        "s4t_edge.data.synth('fog', 1, 16, 0); "
        "bad = [m for m in ('torch', 'matplotlib', 'onnx') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
