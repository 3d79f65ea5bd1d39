from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from s4t_edge.errors import ConfigError
from s4t_edge.train.config import OptimizerConfig, S4TConfig, TrainConfig
from s4t_edge.train.losses import pretrain_loss, task_loss
from s4t_edge.train.losses import test_time_loss as tt_loss  # not collected as a test

CH = {"semseg": 5, "depth": 1, "normals": 3, "edge": 1}


def _outputs(seed: int, n: int = 2, h: int = 4, w: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {t: torch.randn(n, c, h, w, generator=g, requires_grad=True) for t, c in CH.items()}


def _labels(n: int = 2, h: int = 4, w: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(99)
    normals = F.normalize(torch.randn(n, 3, h, w, generator=g), dim=1)
    normals[0, :, 0, 0] = 0
    depth = torch.rand(n, 1, h, w, generator=g) * 3
    depth[0, 0, 0] = 0
    semseg = torch.randint(0, 5, (n, h, w), generator=g)
    semseg[1, 0] = 255
    edge = (torch.rand(n, 1, h, w, generator=g) < 0.3).float()
    return {"semseg": semseg, "depth": depth, "normals": normals, "edge": edge}


def test_semseg_cross_entropy_ignores_255():
    pred, lab = _outputs(0)["semseg"], _labels()["semseg"]
    ref = F.cross_entropy(pred, lab, ignore_index=255)
    assert task_loss("semseg", pred, lab).item() == pytest.approx(ref.item())
    lab_all_ignored = torch.full_like(lab, 255)
    loss = task_loss("semseg", pred, lab_all_ignored)
    assert loss.item() == 0.0 and loss.requires_grad  # no NaN on an unlabelled batch


def test_depth_l1_skips_invalid_pixels():
    pred = torch.tensor([[[[1.0, 5.0, 100.0]]]])
    lab = torch.tensor([[[2.0, 3.0, 0.0]]])  # (N, H, W) accepted too
    assert task_loss("depth", pred, lab).item() == pytest.approx(1.5)


def test_normals_normalise_along_channels_and_skip_invalid():
    lab = _labels()["normals"]
    pred = lab * torch.rand(1, 1, 4, 3) * 5 + 0.0  # same directions, per-pixel scale
    assert task_loss("normals", pred, lab).item() == pytest.approx(0.0, abs=1e-6)
    # the channel-first and the dataset (N, H, W, 3) label layouts agree
    p = _outputs(1)["normals"]
    assert task_loss("normals", p, lab).item() == pytest.approx(
        task_loss("normals", p, lab.permute(0, 2, 3, 1)).item()
    )
    # manual reference: per-pixel sum over xyz of |p/|p| - g|, mean over valid pixels
    unit = p / p.norm(dim=1, keepdim=True)
    valid = (lab != 0).any(1)
    ref = (unit - lab).abs().sum(1)[valid].mean()
    assert task_loss("normals", p, lab).item() == pytest.approx(ref.item(), rel=1e-6)
    cos = task_loss("normals", p, lab, S4TConfig(normals_loss="cosine"))
    assert cos.item() == pytest.approx((1 - (unit * lab).sum(1))[valid].mean().item(), rel=1e-6)


def test_edge_balanced_bce_matches_published_scale():
    p, lab = _outputs(2)["edge"], _labels()["edge"]
    ref = 0.05 * F.binary_cross_entropy_with_logits(p, lab, pos_weight=torch.tensor(19.0))
    assert task_loss("edge", p, lab).item() == pytest.approx(ref.item(), rel=1e-6)


def test_pretrain_loss_maps_tasks_by_name():
    cfg = S4TConfig()
    main, aux, joint = _outputs(0), _outputs(1), _outputs(2)
    labels = _labels()
    total, parts = pretrain_loss({"main": main, "aux": aux, "joint": joint}, labels, cfg)
    rev = {k: v for k, v in reversed(list(labels.items()))}
    rev_main = {k: v for k, v in reversed(list(main.items()))}
    total2, _ = pretrain_loss({"main": rev_main, "aux": aux, "joint": joint}, rev, cfg)
    assert total.item() == pytest.approx(total2.item(), rel=1e-6)
    expect = sum(
        cfg.loss_weights[t]
        * (task_loss(t, main[t], labels[t]) + 0.01 * task_loss(t, aux[t], labels[t]))
        + 0.01 * cfg.loss_weights[t] * task_loss(t, joint[t], labels[t])
        for t in CH
    )
    assert total.item() == pytest.approx(expect.item(), rel=1e-6)
    assert set(parts) == {f"{b}/{t}" for b in ("main", "aux", "joint") for t in CH}
    # a task without labels is skipped, not an error
    partial, parts = pretrain_loss(
        {"main": main, "aux": aux, "joint": joint}, {"depth": labels["depth"]}, cfg
    )
    assert set(parts) == {"main/depth", "aux/depth", "joint/depth"}
    with pytest.raises(ConfigError, match="no model task"):
        pretrain_loss({"main": main, "aux": aux, "joint": joint}, {}, cfg)


def _official_tt_loss(main, joint, lam, weights, power):
    """The published test-time loss written out independently (float64 numpy, explicit sums):
    per task, Σ over all elements of |joint − main| divided by the pixel count N·H·W."""
    import numpy as np

    total, per_task = 0.0, {}
    for t in main:
        j = joint[t].detach().double().numpy()
        m = main[t].detach().double().numpy()
        n, _, h, w = j.shape
        ell = float(np.sum(np.abs(j - m))) / (n * h * w)
        per_task[t] = ell
        total += lam * weights[t] ** power * ell
    return total, per_task


def test_test_time_loss_equals_the_official_formula():
    main, joint = _outputs(0, n=3, h=5, w=7), _outputs(1, n=3, h=5, w=7)
    cfg = S4TConfig()
    total, per_task = tt_loss(main, joint, cfg)
    ref_total, ref_parts = _official_tt_loss(main, joint, 0.01, cfg.loss_weights, 2.0)
    assert total.item() == pytest.approx(ref_total, rel=1e-6)
    for t in CH:
        assert per_task[t].item() == pytest.approx(ref_parts[t], rel=1e-6)
    # weight power and lambda stay configurable
    once, _ = tt_loss(main, joint, cfg.replace(weight_power=1.0, lambda_=1.0))
    assert once.item() == pytest.approx(
        _official_tt_loss(main, joint, 1.0, cfg.loss_weights, 1.0)[0], rel=1e-6
    )


def test_test_time_loss_per_task_term_is_channel_count_times_element_mean():
    main, joint = _outputs(0), _outputs(1)
    _, per_task = tt_loss(main, joint, S4TConfig())
    for t, c in CH.items():
        element_mean = (joint[t] - main[t]).abs().mean().item()
        assert per_task[t].item() / element_mean == pytest.approx(c, rel=1e-6)


def test_test_time_loss_stops_the_gradient_into_main():
    main, joint = _outputs(0), _outputs(1)
    total, per_task = tt_loss(main, joint, S4TConfig())
    assert set(per_task) == set(CH)
    total.backward()
    assert all(main[t].grad is None for t in CH)  # main is the (stop-gradient) target
    assert all(joint[t].grad is not None for t in CH)
    # d/d joint of λ w² Σ|j − m| / (N·H·W) is λ w² sign(j − m) / (N·H·W)
    n, _, h, w = joint["semseg"].shape
    expect = 0.01 * 1.0 * torch.sign(joint["semseg"] - main["semseg"]) / (n * h * w)
    assert torch.allclose(joint["semseg"].grad, expect.detach())


def test_test_time_loss_traces_with_make_fx():
    from torch.fx.experimental.proxy_tensor import make_fx

    main = {t: v.detach() for t, v in _outputs(0).items()}
    joint = {t: v.detach() for t, v in _outputs(1).items()}

    def fn(m, j):
        return tt_loss(m, j, S4TConfig())[0]

    gm = make_fx(fn)(main, joint)
    assert torch.allclose(gm(main, joint), fn(main, joint))


def test_configs_round_trip_through_json():
    s4t = S4TConfig(lambda_=0.1, optimizer=OptimizerConfig(name="adam", lr=1e-3))
    d = json.loads(json.dumps(s4t.to_dict()))
    assert d["lambda"] == 0.1 and d["optimizer"]["betas"] == [0.9, 0.999]
    assert S4TConfig.from_dict({**d, "mask_ratio": 0.8}) == s4t
    tr = TrainConfig(steps=7)
    assert TrainConfig.from_dict(json.loads(json.dumps(tr.to_dict()))) == tr
    with pytest.raises(ConfigError, match="unknown S4TConfig key 'lamda'"):
        S4TConfig.from_dict({"lamda": 1})
    with pytest.raises(ConfigError, match="optimizer"):
        S4TConfig(optimizer={"name": "lbfgs"})
    with pytest.raises(ConfigError, match="steps"):
        TrainConfig(steps=0)


def test_poly_schedule_with_warmup():
    cfg = TrainConfig(steps=100, lr=1.0, warmup_steps=10, poly_power=0.9)
    assert cfg.lr_at(0) == pytest.approx(0.1)
    assert cfg.lr_at(9) == pytest.approx(1.0)
    assert cfg.lr_at(50) == pytest.approx(0.5**0.9)
    assert cfg.lr_at(99) < cfg.lr_at(50)


def test_config_module_is_torch_free():
    import subprocess
    import sys

    code = "import sys, s4t_edge.train.config; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
