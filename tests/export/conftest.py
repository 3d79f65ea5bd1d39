"""Shared fixtures: a tiny S4T model, a run directory holding it, and one exported artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


def make_tiny_model(seed: int = 0):
    from s4t_edge.models import DEFAULT_TASKS, build_model

    torch.manual_seed(seed)
    model = build_model("tiny", DEFAULT_TASKS)
    # Non-trivial running stats and affine values, as after training.
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 1.5)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    return model.eval()


def write_run(model, path: Path) -> Path:
    from s4t_edge.train.config import S4TConfig
    from s4t_edge.train.rundir import model_state, save_tensors, write_config

    path.mkdir(parents=True, exist_ok=True)
    save_tensors(path / "model.safetensors", model_state(model))
    write_config(path, {"model": model.config.to_dict(), "s4t": S4TConfig().to_dict()})
    return path


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory) -> Path:
    return write_run(make_tiny_model(), tmp_path_factory.mktemp("run") / "tiny")


@pytest.fixture(scope="session")
def tiny_artifact(tiny_run, tmp_path_factory) -> Path:
    """The tiny model exported with the default scope at batch 2."""
    from s4t_edge.export import ExportConfig, export_run

    out = tmp_path_factory.mktemp("art") / "default"
    export_run(tiny_run, out, ExportConfig(batch=2))
    return out
