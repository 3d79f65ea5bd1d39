"""S4T model zoo: backbones, fused heads, ts_comp, aux heads, the joint masked decoder, adapters.

    from s4t_edge.models import build_model, DEFAULT_TASKS
    model = build_model("tiny", DEFAULT_TASKS)
    out = model(image, torch.rand(model.mask_noise_shape(image.shape[0])))
    out["main"]["depth"], out["aux"]["semseg"], out["joint"]["normals"]

Configs, presets and task names are importable without torch (`ModelConfig`, `make_config`,
`list_presets`, `TASK_KINDS`, `DEFAULT_TASKS`); everything that builds modules imports torch on
first use.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from s4t_edge.models.config import (
    ADAPTER_STAGES,
    DEFAULT_TASKS,
    FIXED_TASK_CHANNELS,
    TASK_KINDS,
    ModelConfig,
    list_presets,
    make_config,
    normalize_tasks,
    register_preset,
    task_kind,
)

if TYPE_CHECKING:
    from s4t_edge.models.backbones import (
        create_backbone,
        list_backbones,
        load_backbone_weights,
        register_backbone,
    )
    from s4t_edge.models.norm import BN_MODES
    from s4t_edge.models.params import count_parameters, parameter_breakdown
    from s4t_edge.models.s4t import S4TModel

# Lazily imported name -> module (these need torch).
_LAZY = {
    "S4TModel": "s4t_edge.models.s4t",
    "create_backbone": "s4t_edge.models.backbones",
    "list_backbones": "s4t_edge.models.backbones",
    "load_backbone_weights": "s4t_edge.models.backbones",
    "register_backbone": "s4t_edge.models.backbones",
    "BN_MODES": "s4t_edge.models.norm",
    "count_parameters": "s4t_edge.models.params",
    "parameter_breakdown": "s4t_edge.models.params",
}

__all__ = [
    "ADAPTER_STAGES",
    "BN_MODES",
    "DEFAULT_TASKS",
    "FIXED_TASK_CHANNELS",
    "TASK_KINDS",
    "ModelConfig",
    "S4TModel",
    "build_model",
    "count_parameters",
    "create_backbone",
    "list_backbones",
    "list_presets",
    "load_backbone_weights",
    "make_config",
    "normalize_tasks",
    "parameter_breakdown",
    "register_backbone",
    "register_preset",
    "task_kind",
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 's4t_edge.models' has no attribute {name!r}")
    value = getattr(importlib.import_module(mod), name)
    globals()[name] = value
    return value


def build_model(
    preset: str,
    tasks: Mapping[str, int] | Sequence[Sequence[Any]] | None = None,
    **overrides: Any,
) -> S4TModel:
    """Build a freshly initialised S4T model from a preset.

    Args:
        preset: a name from `list_presets()` (`tiny`, `resnet18`, `paper`).
        tasks: task name -> output channels, in channel-layout order; `DEFAULT_TASKS` when None.
            Names must be task kinds (semseg, depth, normals, edge).
        **overrides: ModelConfig fields to change, e.g. ``input_size=(128, 128)``,
            ``adapters=("layer4",)``.

    Raises:
        ConfigError: unknown preset, task, backbone or option, or inconsistent values.
    """
    from s4t_edge.models.s4t import S4TModel

    return S4TModel.from_config(make_config(preset, tasks, **overrides))
