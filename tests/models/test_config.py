from __future__ import annotations

import json
import subprocess
import sys

import pytest

from s4t_edge.errors import ConfigError, S4TError
from s4t_edge.models import (
    DEFAULT_TASKS,
    TASK_KINDS,
    ModelConfig,
    build_model,
    list_backbones,
    list_presets,
    make_config,
)


def test_registries_list_tiny_models_like_real_ones():
    assert {"tiny", "paper", "resnet18"} <= set(list_presets())
    assert {"tiny", "resnet18", "resnet34", "resnet50"} <= set(list_backbones())
    assert TASK_KINDS == ("semseg", "depth", "normals", "edge")
    assert DEFAULT_TASKS == {"semseg": 7, "depth": 1, "normals": 3, "edge": 1}


def test_paper_preset_is_the_published_architecture():
    cfg = make_config("paper")
    assert (cfg.backbone, cfg.input_size, cfg.ts_channels, cfg.patch_size) == (
        "resnet50",
        (256, 256),
        64,
        16,
    )
    assert (cfg.enc_depth, cfg.enc_dim, cfg.enc_heads) == (4, 64, 4)
    assert (cfg.dec_depth, cfg.dec_dim, cfg.dec_heads) == (2, 64, 4)
    assert cfg.mask_ratio == 0.8 and cfg.ln_eps == 1e-6
    assert cfg.num_tokens == 256 and cfg.len_keep == 51


def test_tiny_preset():
    cfg = make_config("tiny")
    assert cfg.input_size == (64, 64) and cfg.num_tokens == 64 and cfg.len_keep == 12


@pytest.mark.parametrize(
    "call",
    [
        lambda: make_config("huge"),
        lambda: make_config("tiny", {"segmentation": 7}),
        lambda: make_config("tiny", {"normals": 2}),
        lambda: make_config("tiny", {"depth": 3}),
        lambda: make_config("tiny", {"semseg": 0}),
        lambda: make_config("tiny", {"semseg": 2.5}),
        lambda: make_config("tiny", {}),
        lambda: make_config("tiny", backbone_depth=3),
        lambda: make_config("tiny", input_size=(60, 64)),
        lambda: make_config("tiny", mask_ratio=1.0),
        lambda: make_config("tiny", enc_heads=3),
        lambda: make_config("tiny", patch_size=7),
        lambda: make_config("tiny", adapters=("layer5",)),
        lambda: build_model("tiny", backbone="vgg16"),
    ],
)
def test_bad_configs_raise_config_error(call):
    with pytest.raises(ConfigError):
        call()


def test_error_messages_say_what_to_do():
    with pytest.raises(S4TError, match="choose one of .*paper.*tiny"):
        make_config("huge")
    with pytest.raises(ConfigError, match="semseg, depth, normals, edge"):
        make_config("tiny", {"segmentation": 7})
    with pytest.raises(ConfigError, match="normals=3"):
        make_config("tiny", {"normals": 2})
    with pytest.raises(ConfigError, match="resnet50"):
        build_model("tiny", backbone="vgg16")


def test_round_trip_through_sorted_json_keeps_task_order():
    tasks = {"normals": 3, "semseg": 5, "edge": 1}
    cfg = make_config("tiny", tasks, adapters=["layer4", "layer2"], input_size=[96, 128])
    assert cfg.task_names == ("normals", "semseg", "edge")
    assert cfg.adapters == ("layer2", "layer4")  # normalised to stage order
    text = json.dumps(cfg.to_dict(), sort_keys=True)
    back = ModelConfig.from_dict(json.loads(text))
    assert back == cfg
    assert back.task_names == ("normals", "semseg", "edge")


def test_from_dict_rejects_unknown_keys():
    d = make_config("tiny").to_dict()
    d["maskratio"] = 0.5
    with pytest.raises(ConfigError, match="maskratio"):
        ModelConfig.from_dict(d)


def test_config_is_frozen():
    cfg = make_config("tiny")
    with pytest.raises(AttributeError):
        cfg.mask_ratio = 0.5  # type: ignore[misc]
    assert cfg.replace(mask_ratio=0.5).mask_ratio == 0.5


def test_configs_import_without_torch():
    code = (
        "import sys, s4t_edge.models as m; c = m.make_config('paper'); "
        "m.ModelConfig.from_dict(c.to_dict()); assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
