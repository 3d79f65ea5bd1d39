"""The partition is computed from the traced graph: check what lands on each side of the cut."""

from __future__ import annotations

import copy

import pytest
import torch
from torch.func import functional_call

from s4t_edge.export.partition import build_partition
from s4t_edge.train import losses
from s4t_edge.train.config import S4TConfig
from tests.export.conftest import make_tiny_model


def _convs(gm) -> int:
    return sum(
        1 for n in gm.graph.nodes if n.op == "call_function" and "convolution" in str(n.target)
    )


def _inputs(batch=2, seed=0):
    model = make_tiny_model()
    g = torch.Generator().manual_seed(seed)
    h, w = model.config.input_size
    return (
        model,
        torch.randn(batch, 3, h, w, generator=g),
        torch.rand(*model.mask_noise_shape(batch), generator=g),
    )


def _autograd(model, part, x, noise, theta):
    params = {k: v.detach() for k, v in model.named_parameters()}
    params.update(dict(model.named_buffers()))
    th = {k: v.clone().requires_grad_(True) for k, v in theta.items()}
    out = functional_call(model, {**params, **th}, (x, noise))
    loss, _ = losses.test_time_loss(out["main"], out["joint"], S4TConfig())
    grads = torch.autograd.grad(loss, [th[n] for n in part.theta_names], allow_unused=True)
    grads = [torch.zeros_like(th[n]) if g is None else g for n, g in zip(part.theta_names, grads)]
    return loss, dict(zip(part.theta_names, grads)), out["main"]


def test_last_stage_scope_caches_stages_one_to_three():
    model, x, noise = _inputs()
    part = build_partition(model, "norm@backbone.layer4", 2, "batch")
    h, w = model.config.input_size
    # Nothing at stride 8 or 16 crosses the cut: stages 1-3 (and the normalised layer4 inputs,
    # whose batch statistics do not depend on θ) run once, in the backbone graph.
    strides = {h // s[2] for s in part.cut_shapes.values()}
    assert strides <= {4, 32}, strides
    assert 32 in strides
    n_l123 = sum(
        1
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
        and n.startswith(
            ("backbone.conv1", "backbone.layer1", "backbone.layer2", "backbone.layer3")
        )
    )
    assert n_l123 > 0
    assert _convs(part.backbone_gm) >= n_l123
    # ... and the step graph recomputes none of them.
    step_fwd = [
        n for n in part.step_gm.graph.nodes if "convolution" in str(n.target) and not n.args[6]
    ]
    n_rest = sum(
        1
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Conv2d)
        and not n.startswith(
            ("backbone.conv1", "backbone.layer1", "backbone.layer2", "backbone.layer3")
        )
    )
    assert len(step_fwd) <= n_rest


def test_decoder_only_scope_leaves_predictions_frozen():
    model, x, noise = _inputs()
    part = build_partition(model, "norm@joint_decoder", 2, "batch")
    # θ cannot reach the main heads: predict needs no θ, and its outputs are cut tensors.
    assert part.predict_theta == []
    cut = part.backbone(x)
    preds = part.predict(cut, part.source_theta())
    ref = model.predict(x)
    for t in preds:
        torch.testing.assert_close(preds[t], ref[t], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("scope", ["norm@backbone.layer4+norm@joint_decoder", "norm", "all"])
def test_partitioned_step_equals_autograd_on_the_model(scope):
    model, x, noise = _inputs()
    part = build_partition(model, scope, 2, "batch")
    g = torch.Generator().manual_seed(3)
    theta = {
        k: v + 0.05 * torch.randn(v.shape, generator=g) for k, v in part.source_theta().items()
    }
    loss, _, grads = part.step(part.backbone(x), theta, noise)
    ref_loss, ref_grads, ref_main = _autograd(model, part, x, noise, theta)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=1e-5)
    for n in part.theta_names:
        scale = ref_grads[n].abs().max().clamp_min(1e-12)
        assert ((grads[n] - ref_grads[n]).abs().max() / scale) < 1e-4, n
    preds = part.predict(part.backbone(x), theta)
    for t, v in preds.items():
        torch.testing.assert_close(v, ref_main[t], atol=1e-5, rtol=1e-5)


def test_noise_changes_the_loss_but_not_the_cut():
    model, x, noise = _inputs()
    part = build_partition(model, "norm@backbone.layer4+norm@joint_decoder", 2, "batch")
    cut = part.backbone(x)
    theta = part.source_theta()
    l1, _, _ = part.step(cut, theta, noise)
    l2, _, _ = part.step(cut, theta, torch.rand_like(noise))
    assert not torch.allclose(l1, l2)
    assert "mask_noise" not in part.cut_names


def test_running_bn_stats_differ_from_batch_stats():
    model, x, noise = _inputs()
    a = build_partition(model, "norm@backbone.layer4", 2, "running")
    ref = model.predict(x)  # model is now in running-stats mode
    pa = a.predict(a.backbone(x), a.source_theta())
    torch.testing.assert_close(pa["depth"], ref["depth"], atol=1e-5, rtol=1e-5)
    b = build_partition(model, "norm@backbone.layer4", 2, "batch")
    pb = b.predict(b.backbone(x), b.source_theta())
    assert not torch.allclose(pa["depth"], pb["depth"], atol=1e-3)


def test_partition_moves_every_tensor_the_trace_baked_onto_the_cpu():
    # The meta device stands in for CUDA: any tensor left on the CPU fails the step there.
    model, x, noise = _inputs()
    part = build_partition(model, "norm@backbone.layer4+norm@joint_decoder", 2, "batch")
    baked = [
        n
        for n in part.step_gm.graph.nodes
        if n.op == "call_function" and n.kwargs.get("device") == torch.device("cpu")
    ]
    assert baked, "the step graph no longer bakes a device in; this test checks nothing"
    # gm.to() alone is not enough: a baked _to_copy(device=cpu) pulls meta data back to the CPU
    naive = {k: v.to("meta") for k, v in part.source.items()}
    gm = copy.deepcopy(part.step_gm).to("meta")
    cut = {k: v.to("meta") for k, v in part.backbone(x).items()}
    args = [cut[n] for n in part.step_cut] + [naive[n] for n in part.theta_names]
    with pytest.raises(RuntimeError, match="device|meta tensor"):
        gm(*args, noise.to("meta"))

    meta = part.to("meta")
    assert part.step_gm.graph is not meta.step_gm.graph  # the original still runs on the CPU
    cut = meta.backbone(x.to("meta"))
    loss, parts, grads = meta.step(cut, meta.source_theta(), noise.to("meta"))
    preds = meta.predict(cut, meta.source_theta())
    outs = [loss, *parts.values(), *grads.values(), *preds.values()]
    assert all(t.device.type == "meta" for t in outs)
    assert {k: tuple(v.shape) for k, v in grads.items()} == {
        k: tuple(v.shape) for k, v in part.source.items()
    }
    # and the CPU original is untouched
    cpu_loss = part.step(part.backbone(x), part.source_theta(), noise)[0]
    assert torch.isfinite(cpu_loss)
