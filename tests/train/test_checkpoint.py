"""Checkpoints are atomic as a set; a crash while saving one never loses the run (issue 15)."""

from __future__ import annotations

import json

import pytest
import torch

from s4t_edge.errors import OutputPathError
from s4t_edge.train import checkpoint as ck
from s4t_edge.train.config import S4TConfig, TrainConfig
from s4t_edge.train.loop import train
from s4t_edge.train.rundir import CHECKPOINT_DIR

CFG = TrainConfig(steps=4, batch_size=3, warmup_steps=1, val_every=0, checkpoint_every=2)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_crash_between_checkpoint_files_resumes_from_the_previous_set(
    tmp_path, small_source, tiny_config, monkeypatch
):
    ref = train(CFG, tiny_config, S4TConfig(), small_source, None, tmp_path / "ref", progress=False)

    # Kill the save of step 4 right after its model file, before the optimizer file.
    real = ck.save_tensors
    calls = {"n": 0}

    def dying(path, tensors, meta=None):
        calls["n"] += 1
        if calls["n"] == 3:  # step 2: model, optimizer; step 4: model -> then "killed"
            real(path, tensors, meta)
            raise KeyboardInterrupt("SIGKILL stand-in")
        return real(path, tensors, meta)

    monkeypatch.setattr(ck, "save_tensors", dying)
    out = tmp_path / "run"
    with pytest.raises(KeyboardInterrupt):
        train(CFG, tiny_config, S4TConfig(), small_source, None, out, progress=False)
    monkeypatch.setattr(ck, "save_tensors", real)
    sets = [d.name for d in ck.candidate_sets(out)]
    assert sets == ["step-00000002"]  # the torn step-4 set never became a set
    resumed = train(
        CFG, tiny_config, S4TConfig(), small_source, None, out, resume=True, progress=False
    )
    a, b = _weights(ref.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same run as without the crash
    assert [d.name for d in ck.candidate_sets(out)] == ["step-00000004"]


def test_a_lost_pointer_falls_back_to_the_newest_complete_set(tmp_path, small_source, tiny_config):
    cfg = CFG.replace(steps=2)
    out = tmp_path / "run"
    train(cfg, tiny_config, S4TConfig(), small_source, None, out, progress=False, stop_at=2)
    (out / CHECKPOINT_DIR / ck.LATEST).write_text("{torn")
    resumed = train(
        CFG, tiny_config, S4TConfig(), small_source, None, out, resume=True, progress=False
    )
    assert json.loads((out / "config.json").read_text())["step"] == 4
    assert resumed.config["status"] == "finished"


def test_the_layout_of_earlier_versions_still_resumes(tmp_path, small_source, tiny_config):
    out = tmp_path / "run"
    train(CFG, tiny_config, S4TConfig(), small_source, None, out, progress=False, stop_at=2)
    d = out / CHECKPOINT_DIR
    (set_dir,) = [p for p in d.iterdir() if p.is_dir()]
    for f in set_dir.iterdir():
        f.rename(d / f.name)  # model/optimizer/state.json directly in checkpoint/
    set_dir.rmdir()
    (d / ck.LATEST).unlink()
    train(CFG, tiny_config, S4TConfig(), small_source, None, out, resume=True, progress=False)
    assert sorted(p.name for p in d.iterdir()) == ["latest.json", "step-00000004"]


def test_overwrite_never_deletes_a_config_json_that_is_not_a_run(
    tmp_path, small_source, tiny_config
):
    out = tmp_path / "project"
    out.mkdir()
    (out / "config.json").write_text('{"my": "settings"}')
    with pytest.raises(OutputPathError, match="did not write"):
        train(CFG, tiny_config, S4TConfig(), small_source, None, out, overwrite=True)
    assert (out / "config.json").read_text() == '{"my": "settings"}'
