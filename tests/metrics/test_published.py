"""The published metric set: scale-and-shift fitted depth RMSE and edge L1 per batch of 8,
normals over pixels valid in every channel, mIoU with absent classes as 0."""

from __future__ import annotations

import numpy as np
import pytest

from s4t_edge.errors import ConfigError
from s4t_edge.metrics import MetricAccumulator, compute_metrics, delta_m
from s4t_edge.metrics.published import fit_scale_shift


def _data(n: int = 20, h: int = 4, w: int = 5, seed: int = 0):
    rng = np.random.default_rng(seed)
    depth = rng.uniform(0.5, 4, size=(n, h, w))
    depth[rng.uniform(size=depth.shape) < 0.2] = 0  # invalid
    normals = rng.normal(size=(n, h, w, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    normals[:, 0, 0] = 0
    edge = (rng.uniform(size=(n, h, w)) < 0.3).astype(np.uint8)
    edge[:, -1, -1] = 255
    labels = {
        "semseg": rng.integers(0, 3, size=(n, h, w)).astype(np.uint8),
        "depth": depth.astype(np.float32),
        "normals": normals.astype(np.float32),
        "edge": edge,
    }
    preds = {
        "semseg": rng.normal(size=(n, 5, h, w)),
        "depth": rng.normal(1.0, 1.0, size=(n, 1, h, w)),
        "normals": rng.normal(size=(n, 3, h, w)),
        "edge": rng.normal(size=(n, 1, h, w)),
    }
    return preds, labels


def _reference_fitted(pred, gt, valid, batch):
    """Independent reference: np.linalg.lstsq per consecutive batch, pooled errors."""
    sq = ab = cnt = 0.0
    for s in range(0, len(pred), batch):
        p, g, v = pred[s : s + batch][valid[s : s + batch]], gt[s : s + batch], valid[s : s + batch]
        g = g[v]
        a = np.stack([p, np.ones_like(p)], 1)
        (scale, shift), *_ = np.linalg.lstsq(a, g, rcond=None)
        d = g - (scale * p + shift)
        sq, ab, cnt = sq + (d**2).sum(), ab + np.abs(d).sum(), cnt + d.size
    return np.sqrt(sq / cnt), ab / cnt


def test_depth_rmse_and_edge_l1_match_an_independent_per_batch_fit():
    preds, labels = _data()
    m = compute_metrics(preds, labels, metric_set="published")
    assert set(m) == {"semseg", "depth", "normals", "edge"}
    assert set(m["depth"]) == {"rmse"} and set(m["edge"]) == {"l1"}
    d = labels["depth"].astype(np.float64)
    rmse, _ = _reference_fitted(np.maximum(preds["depth"][:, 0], 0), d, d > 0, 8)
    assert m["depth"]["rmse"] == pytest.approx(rmse, rel=1e-9)
    prob = 1 / (1 + np.exp(-preds["edge"][:, 0]))
    e = labels["edge"]
    _, l1 = _reference_fitted(prob, (e == 1).astype(np.float64), e != 255, 8)
    assert m["edge"]["l1"] == pytest.approx(l1, rel=1e-9)
    # the fit makes an affinely wrong depth exact; our own RMSE does not forgive it
    affine = {"depth": 2.5 * labels["depth"][:, None].astype(np.float64) - 0.3}
    assert compute_metrics(affine, labels, ["depth"], "published")["depth"]["rmse"] < 1e-9
    assert compute_metrics(affine, labels, ["depth"])["depth"]["rmse"] > 0.5


def test_fit_batches_follow_image_order_not_update_chunks():
    preds, labels = _data(n=21)  # 8 + 8 + 5
    whole = compute_metrics(preds, labels, metric_set="published")
    acc = MetricAccumulator(list(preds), metric_set="published")
    for s in range(0, 21, 3):
        acc.update(
            {k: v[s : s + 3] for k, v in preds.items()},
            {k: v[s : s + 3] for k, v in labels.items()},
        )
    first = acc.compute()
    assert acc.compute() == first  # compute() does not consume the pending remainder
    for t in whole:
        for k, v in whole[t].items():
            assert first[t][k] == pytest.approx(v, rel=1e-12)
    # ...but the published metrics do depend on the fit batch (valBatch): one fit per image differs
    per_image = compute_metrics(preds, labels, metric_set="published", fit_batch=1)
    assert per_image["depth"]["rmse"] < whole["depth"]["rmse"]


def test_depth_predictions_are_clamped_at_zero_before_the_fit():
    gt = np.full((8, 2, 2), 2.0)
    gt[:, 0, 0], gt[:, 1, 1] = 1.0, 3.0
    pred = gt[:, None] - 1.5  # negative where gt is 1: clamped to 0 first
    got = compute_metrics({"depth": pred}, {"depth": gt}, metric_set="published")["depth"]["rmse"]
    clamped = np.maximum(pred[:, 0], 0)
    assert got == pytest.approx(_reference_fitted(clamped, gt, gt > 0, 8)[0], rel=1e-9)
    assert got > 0  # without the clamp the fit would be exact


def test_constant_prediction_fits_the_label_mean():
    assert fit_scale_shift(np.full(5, 3.0), np.arange(5.0)) == (0.0, 2.0)
    scale, shift = fit_scale_shift(np.array([0.0, 1, 2]), np.array([1.0, 3, 5]))
    assert (scale, shift) == pytest.approx((2.0, 1.0))


def test_normals_need_every_channel_valid_and_equal_ours_on_our_data():
    preds, labels = _data()
    ours = compute_metrics(preds, labels, ["normals"])["normals"]["mean_angle"]
    pub = compute_metrics(preds, labels, ["normals"], "published")["normals"]["mean_angle"]
    assert pub == pytest.approx(ours, rel=1e-12)
    marked = labels["normals"].copy()
    marked[:, 1, 1, 2] = 255  # one channel carries the published ignore value
    a = compute_metrics(preds, {"normals": marked}, ["normals"], "published")["normals"]
    keep = labels["normals"].copy()
    keep[:, 1, 1] = 0  # the same pixels dropped the s4t-edge way
    b = compute_metrics(preds, {"normals": keep}, ["normals"])["normals"]
    assert a["mean_angle"] == pytest.approx(b["mean_angle"], rel=1e-12)


def test_published_miou_counts_absent_classes_as_zero():
    gt = np.zeros((1, 2, 2), np.uint8)
    pred = np.zeros((1, 4, 2, 2))
    pred[:, 0] = 1  # class 0 everywhere, classes 1-3 neither present nor predicted
    m = compute_metrics({"semseg": pred}, {"semseg": gt}, metric_set="published")
    assert m["semseg"]["miou"] == pytest.approx(25.0)


def test_delta_m_of_the_published_set_scores_edges_by_l1():
    base = {"edge": {"l1": 0.2}, "depth": {"rmse": 1.0}}
    better = {"edge": {"l1": 0.1}, "depth": {"rmse": 1.0}}
    assert delta_m(better, base) == pytest.approx(25.0)  # (+50 + 0) / 2, lower L1 is better
    ours = {"edge": {"f1": 60.0, "l1": 0.1}}
    assert delta_m(ours, {"edge": {"f1": 50.0, "l1": 0.2}}) == pytest.approx(20.0)  # F1 first


def test_unknown_metric_set_is_a_config_error():
    with pytest.raises(ConfigError, match="metric set"):
        MetricAccumulator(["depth"], metric_set="paper")
