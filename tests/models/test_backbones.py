from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from s4t_edge.errors import ArtifactError, ConfigError
from s4t_edge.models import build_model, count_parameters, create_backbone, load_backbone_weights

# Computed from torchvision's architecture definitions (fc excluded); state-dict tensors include
# BatchNorm's running_mean, running_var and num_batches_tracked.
EXPECTED = {
    "resnet18": (11_176_512, 120),
    "resnet34": (21_284_672, 216),
    "resnet50": (23_508_032, 318),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_resnet_parameter_and_state_dict_counts(name):
    bb = create_backbone(name)
    params, tensors = EXPECTED[name]
    assert count_parameters(bb) == params
    assert len(bb.state_dict()) == tensors


def test_resnet50_uses_torchvision_names_and_v1_5_stride():
    bb = create_backbone("resnet50")
    sd = bb.state_dict()
    for key in [
        "conv1.weight",
        "bn1.weight",
        "bn1.bias",
        "bn1.running_mean",
        "bn1.running_var",
        "bn1.num_batches_tracked",
        "layer1.0.conv1.weight",
        "layer1.0.conv3.weight",
        "layer1.0.bn3.running_var",
        "layer1.0.downsample.0.weight",
        "layer1.0.downsample.1.weight",
        "layer2.0.downsample.1.running_mean",
        "layer3.5.conv2.weight",
        "layer4.2.bn3.bias",
    ]:
        assert key in sd, key
    assert not any(k.startswith("fc.") for k in sd)
    assert sd["conv1.weight"].shape == (64, 3, 7, 7)
    assert sd["layer1.0.downsample.0.weight"].shape == (256, 64, 1, 1)
    assert sd["layer4.2.conv3.weight"].shape == (2048, 512, 1, 1)
    # v1.5: the stride of a downsampling bottleneck is on the 3x3 conv.
    assert bb.layer2[0].conv1.stride == (1, 1) and bb.layer2[0].conv2.stride == (2, 2)
    assert "layer1.1.downsample.0.weight" not in sd


def test_resnet18_names():
    sd = create_backbone("resnet18").state_dict()
    assert "layer1.0.downsample.0.weight" not in sd  # 64 -> 64, stride 1: no projection
    assert sd["layer2.0.downsample.0.weight"].shape == (128, 64, 1, 1)
    assert sd["layer4.1.conv2.weight"].shape == (512, 512, 3, 3)


@pytest.mark.parametrize("name", ["tiny", "resnet18"])
def test_features_have_strides_4_to_32(name):
    bb = create_backbone(name).eval()
    with torch.no_grad():
        feats = bb(torch.randn(1, 3, 64, 96))
    assert [f.shape[1] for f in feats] == list(bb.stage_channels)
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]


def _torchvision_style_state_dict(name):
    sd = {
        k: torch.randn_like(v.float()).to(v.dtype)
        for k, v in create_backbone(name).state_dict().items()
    }
    sd = {k: (v.abs() + 0.1 if k.endswith("running_var") else v) for k, v in sd.items()}
    sd["fc.weight"] = torch.randn(1000, create_backbone(name).stage_channels[-1])
    sd["fc.bias"] = torch.randn(1000)
    return sd


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_load_backbone_weights_round_trip(tmp_path, suffix):
    sd = _torchvision_style_state_dict("resnet18")
    path = tmp_path / f"resnet18{suffix}"
    if suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in sd.items()}, str(path))
    else:
        torch.save(sd, path)
    model = build_model("tiny", backbone="resnet18", input_size=(64, 64))
    report = load_backbone_weights(model, path)
    assert report["ignored"] == ["fc.bias", "fc.weight"]
    got = model.backbone.state_dict()
    for k, v in got.items():
        assert torch.equal(v, sd[k]), k


def test_load_accepts_nested_and_old_checkpoints(tmp_path):
    sd = _torchvision_style_state_dict("tiny")
    # Older torchvision checkpoints have no num_batches_tracked; training scripts nest weights.
    sd = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    torch.save({"state_dict": sd, "epoch": torch.tensor(3)}, tmp_path / "ckpt.pt")
    bb = create_backbone("tiny")
    load_backbone_weights(bb, tmp_path / "ckpt.pt")
    assert torch.equal(bb.conv1.weight, sd["conv1.weight"])


def test_load_rejects_wrong_architecture(tmp_path):
    save_file(
        {k: v.contiguous() for k, v in _torchvision_style_state_dict("resnet18").items()},
        str(tmp_path / "r18.safetensors"),
    )
    with pytest.raises(ConfigError, match="80 missing .e.g. layer1.2"):
        load_backbone_weights(create_backbone("resnet34"), tmp_path / "r18.safetensors")
    with pytest.raises(ConfigError, match="mismatched"):
        load_backbone_weights(create_backbone("tiny"), tmp_path / "r18.safetensors")


def test_load_reports_missing_or_unreadable_files(tmp_path):
    with pytest.raises(ArtifactError, match="not found"):
        load_backbone_weights(create_backbone("tiny"), tmp_path / "nope.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ArtifactError, match="cannot read"):
        load_backbone_weights(create_backbone("tiny"), tmp_path / "junk.pth")
