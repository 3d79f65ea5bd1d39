from __future__ import annotations

import collections

import pytest
import torch
import torch.nn.functional as F
from torch.fx.experimental.proxy_tensor import make_fx

from s4t_edge.errors import ConfigError
from s4t_edge.models import (
    DEFAULT_TASKS,
    S4TModel,
    build_model,
    count_parameters,
    parameter_breakdown,
)
from s4t_edge.models.norm import BatchNorm2d
from s4t_edge.models.ops import matmul_ops

PAPER_BREAKDOWN = {
    "backbone": 23_508_032,
    "heads": 3840 * 12 + 12,
    "ts_comp": 983_296,
    "aux_heads": 64 * 12 + 12,
    "joint_decoder": 4_698_432,
    "adapters": 0,
    "total": 29_236_632,
}


@pytest.fixture(scope="module")
def paper():
    torch.manual_seed(0)
    return build_model("paper", DEFAULT_TASKS).eval()


def test_paper_parameter_count_is_published(paper):
    assert count_parameters(paper, trainable_only=True) == 29_236_632
    assert parameter_breakdown(paper) == PAPER_BREAKDOWN
    assert count_parameters(paper, "joint_decoder.patch_embed") == 4_194_368
    assert tuple(paper.ts_comp.weight.shape) == (256, 3840, 1, 1)
    assert tuple(paper.heads["normals"].weight.shape) == (3, 3840, 1, 1)
    assert tuple(paper.aux_heads["semseg"].weight.shape) == (7, 64, 1, 1)


def test_paper_forward_batch2_256(paper):
    img = torch.randn(2, 3, 256, 256)
    noise = torch.rand(paper.mask_noise_shape(2))
    assert paper.mask_noise_shape(2) == (2, 256) and paper.len_keep == 51
    with torch.no_grad():
        out = paper(img, noise)
        feats = paper.features(img)
        head = paper.heads["normals"]
        fast = head(feats)
        head.reference = True
        slow = head(feats)
        head.reference = False
    for group in ("main", "aux", "joint"):
        for t, c in DEFAULT_TASKS.items():
            assert out[group][t].shape == (2, c, 256, 256)
            assert torch.isfinite(out[group][t]).all()
    # Factorised == published fusion at the published size (3840 channels).
    assert fast.shape == (2, 3, 64, 64)
    # float32 sums over 3840 channels in a different order: compare relative to the scale.
    torch.testing.assert_close(fast, slow, rtol=1e-4, atol=1e-5 * float(slow.abs().max()))


def test_tiny_forward_shapes_and_predict(tiny, tiny_inputs):
    img, noise = tiny_inputs
    with torch.no_grad():
        out = tiny(img, noise)
        pred = tiny.predict(img)
    assert set(out) == {"main", "aux", "joint"}
    for group in out.values():
        assert list(group) == list(DEFAULT_TASKS)
        for t, c in DEFAULT_TASKS.items():
            assert group[t].shape == (2, c, 64, 64)
    for t in DEFAULT_TASKS:
        torch.testing.assert_close(pred[t], out["main"][t])


def test_outputs_follow_the_input_size(tiny):
    img = torch.randn(1, 3, 96, 128)
    with torch.no_grad():
        out = tiny(img, torch.rand(tiny.mask_noise_shape(1)))
    assert out["joint"]["semseg"].shape == (1, 7, 96, 128)
    assert out["main"]["normals"].shape == (1, 3, 96, 128)


def test_predict_skips_ts_comp_and_joint_decoder(tiny, tiny_inputs):
    called = []
    for name in ("ts_comp", "joint_decoder"):
        getattr(tiny, name).register_forward_hook(lambda *a, n=name: called.append(n))
    tiny.predict(tiny_inputs[0])
    assert called == []


def test_factorised_fusion_equals_reference(tiny, tiny_inputs):
    img, noise = tiny_inputs
    with torch.no_grad():
        fast = tiny(img, noise)
        slow = tiny.use_reference_fusion(True)(img, noise)
    for group in fast:
        for t in fast[group]:
            torch.testing.assert_close(fast[group][t], slow[group][t], rtol=1e-5, atol=1e-5)
    # And by hand: resize every scale to stride 4, concatenate, one 1x1 conv.
    feats = tiny.features(img)
    cat = torch.cat([F.interpolate(f, size=feats[0].shape[-2:], mode="bilinear") for f in feats], 1)
    head = tiny.heads["depth"]
    ref = F.conv2d(cat, head.weight, head.bias)
    tiny.use_reference_fusion(False)
    torch.testing.assert_close(head(feats), ref, rtol=1e-5, atol=1e-5)


def test_task_channels_are_laid_out_by_name():
    m = build_model("tiny", {"normals": 3, "semseg": 4}).eval()
    img, noise = torch.randn(1, 3, 64, 64), torch.rand(m.mask_noise_shape(1))
    with torch.no_grad():
        out = m(img, noise)
        full = m.joint_decoder(m.task_features(m.features(img)), noise)
    assert full.shape == (1, 7, 64, 64)
    torch.testing.assert_close(out["joint"]["normals"], full[:, :3])
    torch.testing.assert_close(out["joint"]["semseg"], full[:, 3:])
    assert m.ts_comp.out_channels == 2 * m.config.ts_channels


def test_masking_keeps_len_keep_smallest_noise_tokens(tiny, tiny_inputs):
    img, noise = tiny_inputs
    seen = {}
    jd = tiny.joint_decoder
    jd.blocks[0].register_forward_hook(lambda mod, args, out: seen.setdefault("x", args[0]))
    with torch.no_grad():
        tiny(img, noise)
        ts = tiny.task_features(tiny.features(img))
        ts = F.interpolate(ts, size=(jd.image_size, jd.image_size), mode="bilinear")
        tokens = jd.patch_embed(ts).flatten(2).transpose(1, 2)
    tokens = tokens + jd.pos_embed
    kept = seen["x"]
    assert kept.shape == (2, tiny.len_keep, tiny.config.enc_dim)
    ids = torch.argsort(noise, dim=1)[:, : tiny.len_keep]
    expected = torch.stack([tokens[n, ids[n]] for n in range(2)])
    torch.testing.assert_close(kept, expected, rtol=1e-5, atol=1e-5)
    mask = tiny.token_mask(noise)
    assert mask.shape == noise.shape
    assert (mask.sum(1) == tiny.num_tokens - tiny.len_keep).all()
    assert (mask.gather(1, ids) == 0).all()


def test_noise_drives_only_the_joint_output(tiny, tiny_inputs):
    img, noise = tiny_inputs
    with torch.no_grad():
        a = tiny(img, noise)
        b = tiny(img, noise.clone())
        c = tiny(img, torch.rand(noise.shape))
        d = tiny(img, noise**3 * 0.5)  # same ranking -> same kept tokens -> same output
    for t in DEFAULT_TASKS:
        assert torch.equal(a["joint"][t], b["joint"][t])
        torch.testing.assert_close(a["joint"][t], d["joint"][t])
        assert not torch.allclose(a["joint"][t], c["joint"][t])
        assert torch.equal(a["main"][t], c["main"][t])
        assert torch.equal(a["aux"][t], c["aux"][t])


def test_wrong_noise_shape_is_a_config_error(tiny, tiny_inputs):
    with pytest.raises(ConfigError, match="mask_noise_shape"):
        tiny(tiny_inputs[0], torch.rand(2, 10))


def test_state_dict_round_trip_via_config(tiny, tiny_inputs):
    sd = tiny.state_dict()
    assert not any("pos_embed" in k for k in sd)  # fixed sin-cos buffers are rebuilt, not stored
    clone = S4TModel.from_config(tiny.config).eval()
    clone.load_state_dict(sd, strict=True)
    with torch.no_grad():
        a, b = tiny(*tiny_inputs), clone(*tiny_inputs)
    torch.testing.assert_close(a["joint"]["depth"], b["joint"]["depth"], rtol=0, atol=0)


def test_adapters_start_as_identity(tiny, tiny_inputs):
    with torch.no_grad():
        before = tiny(*tiny_inputs)
    n_before = count_parameters(tiny)
    tiny.add_adapters(["layer4", "layer2"], reduction=8)
    assert tiny.config.adapters == ("layer2", "layer4")
    names = [n for n, _ in tiny.named_parameters() if n.startswith("adapters.")]
    assert "adapters.layer4.up.weight" in names and "adapters.layer2.down.bias" in names
    added = parameter_breakdown(tiny)["adapters"]
    assert added > 0 and count_parameters(tiny) == n_before + added
    with torch.no_grad():
        after = tiny(*tiny_inputs)
    for group in before:
        for t in before[group]:
            torch.testing.assert_close(after[group][t], before[group][t], rtol=0, atol=0)
    # The adapter sits on the forward path: moving it changes the predictions.
    with torch.no_grad():
        tiny.adapters["layer4"].up.weight.normal_()
        moved = tiny.predict(tiny_inputs[0])
    assert not torch.allclose(moved["depth"], before["main"]["depth"])
    # A model rebuilt from the updated config has the same parameters.
    rebuilt = S4TModel.from_config(tiny.config)
    rebuilt.load_state_dict(tiny.state_dict(), strict=True)


def test_adapters_via_override_and_errors():
    m = build_model("tiny", adapters=("layer3",))
    assert list(m.adapters) == ["layer3"]
    with pytest.raises(ConfigError, match="layer1, layer2"):
        m.add_adapters(["layer9"])
    with pytest.raises(ConfigError, match="reduction"):
        m.add_adapters(["layer4"], reduction=2)


def _bn_layers(model):
    return [m for m in model.modules() if isinstance(m, BatchNorm2d)]


def test_bn_batch_mode_equals_training_batch_norm_without_updating_stats(tiny):
    for bn in _bn_layers(tiny):  # non-trivial running stats and affine parameters
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.data.normal_()
        bn.bias.data.normal_()
    bn = tiny.backbone.layer2[0].bn1
    x = torch.randn(4, bn.num_features, 5, 7)
    stats = {k: v.clone() for k, v in tiny.state_dict().items() if "running" in k or "tracked" in k}
    tiny.set_bn_mode("batch").train()  # explicit mode wins over train()
    assert tiny.bn_mode == "batch"
    ref = F.batch_norm(x, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    torch.testing.assert_close(bn(x), ref, rtol=1e-5, atol=1e-5)
    tiny(torch.randn(2, 3, 64, 64), torch.rand(tiny.mask_noise_shape(2)))
    for k, v in tiny.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k
    # "running" uses the running statistics even in train mode.
    tiny.set_bn_mode("running")
    ref = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)
    torch.testing.assert_close(bn(x), ref, rtol=1e-5, atol=1e-5)
    # None: plain PyTorch again, train() updates the running statistics.
    tiny.set_bn_mode(None)
    before = bn.running_mean.clone()
    bn(x)
    assert not torch.equal(bn.running_mean, before)
    with pytest.raises(ConfigError, match="running, batch"):
        tiny.set_bn_mode("train")


def test_bn_layers_keep_torchvision_names(tiny):
    bn_keys = [k for k in tiny.state_dict() if k.startswith("backbone.bn1.")]
    assert sorted(bn_keys) == [
        "backbone.bn1.bias",
        "backbone.bn1.num_batches_tracked",
        "backbone.bn1.running_mean",
        "backbone.bn1.running_var",
        "backbone.bn1.weight",
    ]


def test_make_fx_traces_the_joint_output(tiny, tiny_inputs):
    img, noise = tiny_inputs
    tiny.set_bn_mode("batch")
    gm = make_fx(lambda i, n: tiny(i, n)["joint"]["depth"])(img, noise)
    with torch.no_grad():
        torch.testing.assert_close(gm(img, noise), tiny(img, noise)["joint"]["depth"])
        other = torch.rand(noise.shape)
        torch.testing.assert_close(gm(img, other), tiny(img, other)["joint"]["depth"])


def test_traced_gradient_uses_no_untranslatable_backward_ops(tiny, tiny_inputs):
    """Under `matmul_ops` the traced test-time gradient has no resize/max-pool backward ops
    (the exporter then only has to decompose convolution_backward) and matches autograd."""
    from torch._decomp import core_aten_decompositions

    img, noise = tiny_inputs
    tiny.set_bn_mode("batch")
    params = {k: v.detach() for k, v in tiny.named_parameters()}
    buffers = dict(tiny.named_buffers())

    def loss(p, i, n):
        out = torch.func.functional_call(tiny, {**p, **buffers}, (i, n))
        return sum((out["joint"][t] - out["main"][t].detach()).abs().mean() for t in out["main"])

    fn = torch.func.grad_and_value(loss)
    with matmul_ops():
        gm = make_fx(fn, decomposition_table=core_aten_decompositions())(params, img, noise)
    ops = collections.Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_function")
    assert not [op for op in ops if "upsample" in op or "max_pool" in op or "copy_" == op[-5:]]
    grads, value = gm(params, img, noise)
    ref_grads, ref_value = fn(params, img, noise)
    torch.testing.assert_close(value, ref_value)
    for k in ref_grads:
        torch.testing.assert_close(grads[k], ref_grads[k], rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("preset", ["tiny", "paper"])
def test_fused_patch_embedding_equals_resize_then_patch_embed(preset):
    """The joint decoder never forms the resized map; the result is the published one."""
    from s4t_edge.models import DEFAULT_TASKS, build_model

    model = build_model(preset, DEFAULT_TASKS).eval()
    jd = model.joint_decoder
    h = model.config.input_size[0] // 4
    x = torch.randn(2, jd.patch_embed.in_channels, h, h)
    with torch.no_grad():
        fused = jd.embed_patches(x)
        model.use_reference_fusion(True)
        assert jd.fused_embed_disabled
        ref = jd.embed_patches(x)
        model.use_reference_fusion(False)
    assert fused.shape == ref.shape
    assert float((fused - ref).abs().max() / ref.abs().max()) < 1e-5
    # Gradients w.r.t. the patch-embedding weights agree too (scope "all" adapts them).
    w = jd.patch_embed.weight
    g_fused = torch.autograd.grad(jd.embed_patches(x).square().sum(), w)[0]
    jd.fused_embed_disabled = True
    g_ref = torch.autograd.grad(jd.embed_patches(x).square().sum(), w)[0]
    jd.fused_embed_disabled = False
    assert float((g_fused - g_ref).abs().max() / g_ref.abs().max()) < 1e-4
