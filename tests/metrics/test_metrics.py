from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from s4t_edge.errors import ConfigError, DataError
from s4t_edge.metrics import (
    MetricAccumulator,
    compute_metrics,
    delta_m,
    format_comparison_table,
    format_metrics_line,
    format_metrics_table,
)


def _onehot(cls: np.ndarray, c: int) -> np.ndarray:
    """Logits whose argmax is `cls` (N,H,W) -> (N,C,H,W)."""
    return np.moveaxis(np.eye(c, dtype=np.float32)[cls], -1, 1)


def test_miou_counts_absent_classes_as_zero_and_ignores_255():
    gt = np.array([[[0, 0, 1, 255]]], dtype=np.uint8)
    pred = _onehot(np.array([[[0, 1, 1, 2]]]), 4)  # class 2 predicted only on an ignored pixel
    m = compute_metrics({"semseg": pred}, {"semseg": gt})
    # class 0: tp1 fn1 -> 1/2; class 1: tp1 fp1 -> 1/2; classes 2, 3 absent -> 0 (still averaged).
    assert m["semseg"]["miou"] == pytest.approx(100 * (0.5 + 0.5) / 4)


def test_semseg_label_outside_model_classes_is_a_data_error():
    with pytest.raises(DataError, match="class 5"):
        compute_metrics(
            {"semseg": _onehot(np.zeros((1, 2, 2), int), 3)}, {"semseg": np.full((1, 2, 2), 5)}
        )


def test_results_do_not_depend_on_batch_size():
    rng = np.random.default_rng(0)
    n, h, w = 6, 5, 7
    preds = {
        "semseg": rng.normal(size=(n, 4, h, w)),
        "depth": rng.uniform(0.5, 3, size=(n, 1, h, w)),
        "normals": rng.normal(size=(n, 3, h, w)),
        "edge": rng.normal(size=(n, 1, h, w)),
    }
    normals = rng.normal(size=(n, h, w, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[0, :2] = 0
    depth = rng.uniform(0, 3, size=(n, h, w))
    depth[depth < 0.8] = 0
    labels = {
        "semseg": rng.integers(0, 4, size=(n, h, w)).astype(np.uint8),
        "depth": depth.astype(np.float32),
        "normals": normals.astype(np.float32),
        "edge": (rng.uniform(size=(n, h, w)) < 0.2).astype(np.uint8),
    }
    whole = compute_metrics(preds, labels)
    acc = MetricAccumulator(["semseg", "depth", "normals", "edge"])
    for s in (slice(0, 1), slice(1, 4), slice(4, 6)):
        acc.update({k: v[s] for k, v in preds.items()}, {k: v[s] for k, v in labels.items()})
    split = acc.compute()
    assert set(whole) == {"semseg", "depth", "normals", "edge"}
    for task in whole:
        for key in whole[task]:
            assert split[task][key] == pytest.approx(whole[task][key], rel=1e-12)


def test_depth_uses_valid_pixels_only():
    gt = np.array([[[1.0, 2.0, 0.0]]], dtype=np.float32)
    pred = np.array([[[[2.0, 2.0, 100.0]]]], dtype=np.float32)
    m = compute_metrics({"depth": pred}, {"depth": gt})["depth"]
    assert m["rmse"] == pytest.approx(np.sqrt(0.5))
    assert m["abs_rel"] == pytest.approx(0.5)


def test_normals_angle_normalises_predictions_and_skips_invalid():
    gt = np.zeros((1, 1, 3, 3), dtype=np.float32)
    gt[0, 0, 0] = [0, 0, 1]
    gt[0, 0, 1] = [1, 0, 0]  # third pixel all-zero: invalid
    pred = np.zeros((1, 3, 1, 3), dtype=np.float32)
    pred[0, :, 0, 0] = [0, 0, 5.0]  # same direction, scaled: 0 deg
    pred[0, :, 0, 1] = [0, 3.0, 0]  # 90 deg
    pred[0, :, 0, 2] = [1, 1, 1]
    m = compute_metrics({"normals": pred}, {"normals": gt})
    assert m["normals"]["mean_angle"] == pytest.approx(45.0)


def test_normals_angle_is_precise_for_tiny_errors():
    eps = 1e-7
    gt = np.array([[[[1.0, 0.0, 0.0]]]])
    pred = np.array([[[[1.0]], [[eps]], [[0.0]]]])
    m = compute_metrics({"normals": pred}, {"normals": gt})["normals"]["mean_angle"]
    assert m == pytest.approx(np.degrees(eps), rel=1e-6)


def test_edge_f1_and_l1():
    label = np.array([[[1, 1, 0, 0, 255]]], dtype=np.uint8)
    logit = np.array([[[[10.0, -10.0, 10.0, -10.0, 10.0]]]])
    m = compute_metrics({"edge": logit}, {"edge": label})["edge"]
    # tp 1, fn 1, fp 1 -> P = R = 0.5; the ignored pixel does not count.
    assert m["f1"] == pytest.approx(50.0)
    assert m["l1"] == pytest.approx(0.5, abs=1e-4)


def test_tasks_without_labels_are_skipped_and_missing_predictions_fail():
    pred = {"depth": np.ones((1, 1, 2, 2))}
    assert compute_metrics(pred, {"depth": np.ones((1, 2, 2)), "semseg": None}) == {
        "depth": {"rmse": 0.0, "abs_rel": 0.0}
    }
    acc = MetricAccumulator(["semseg"])
    with pytest.raises(DataError, match="semseg"):
        acc.update(pred, {"semseg": np.zeros((1, 2, 2), np.uint8)})
    with pytest.raises(ConfigError, match="unknown task"):
        MetricAccumulator(["sky"])


def test_delta_m_signs_and_errors():
    base = {"semseg": {"miou": 50.0}, "depth": {"rmse": 1.0}}
    assert delta_m(base, base) == 0.0
    worse = {"semseg": {"miou": 40.0}, "depth": {"rmse": 1.5}}
    assert delta_m(worse, base) == pytest.approx((-20.0 - 50.0) / 2)
    assert delta_m({"semseg": {"miou": 60.0}}, base) == pytest.approx(20.0)  # T = shared tasks
    with pytest.raises(ConfigError):
        delta_m({"edge": {"f1": 1.0}}, base)
    with pytest.raises(ConfigError, match="undefined"):
        delta_m(base, {"semseg": {"miou": 0.0}})


def test_tables():
    src = {"semseg": {"miou": 60.0}, "edge": {"f1": 40.0, "l1": 0.1}}
    fog = {"semseg": {"miou": 30.0}, "edge": {"f1": 40.0, "l1": 0.2}}
    text = format_metrics_table(src)
    assert "miou" in text and "60.00" in text
    md = format_comparison_table({"source": src, "fog": fog}, baseline="source", markdown=True)
    lines = md.splitlines()
    assert len(lines) == 4 and lines[0].startswith("| ")
    assert lines[3].endswith("| -25.00 |")  # (-50 + 0) / 2
    plain = format_comparison_table({"source": src, "fog": fog}, baseline="source")
    assert "-25.00" in plain and "|" not in plain
    assert format_metrics_line(src) == "mIoU 60.00% | edge F1 40.00% | edge L1 0.1000"


def test_metrics_package_does_not_import_torch():
    code = "import sys, s4t_edge.metrics; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
