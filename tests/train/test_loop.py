from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from s4t_edge.errors import ArtifactError, ConfigError, OutputPathError
from s4t_edge.train.config import S4TConfig, TrainConfig
from s4t_edge.train.evaluate import predict_batches
from s4t_edge.train.loop import DistInfo, _Arrays, _StepBatches, hflip, train
from s4t_edge.train.rundir import load_run, optimizer_from_files, optimizer_to_files

FAST = TrainConfig(steps=3, batch_size=4, warmup_steps=1, val_every=2, checkpoint_every=2)


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_train_writes_a_loadable_run(tmp_path, small_source, tiny_config):
    info = {"train": "train.npz"}  # a bare path is accepted as well as a dict
    run = train(
        FAST,
        tiny_config,
        S4TConfig(),
        small_source,
        None,
        tmp_path / "run",
        progress=False,
        data_info=info,
    )
    d = tmp_path / "run"
    assert (d / "model.safetensors").read_bytes()[8:9] == b"{"  # safetensors header, not a pickle
    cfg = json.loads((d / "config.json").read_text())
    assert {"model", "s4t", "train", "data", "metrics"} <= set(cfg)
    assert cfg["status"] == "finished" and cfg["step"] == 3
    assert cfg["train"]["steps"] == 3 and cfg["s4t"]["lambda"] == 0.01
    assert set(cfg["metrics"]) == {"semseg", "depth", "normals", "edge"}
    assert cfg["data"]["val"]["held_out_of_train"] == 1  # 5 % of 24, rounded
    assert cfg["data"]["train"] == {"path": "train.npz", "images": 23}
    assert [h["step"] for h in cfg["history"]] == [2, 3]
    loaded = load_run(d)
    assert loaded.model_config == tiny_config and loaded.s4t_config == S4TConfig()
    assert loaded.train_config == FAST and not loaded.model.training
    img = small_source.image[:3]
    (_, a), (_, b) = next(predict_batches(run.model, img)), next(predict_batches(loaded.model, img))
    for t in a:
        np.testing.assert_array_equal(a[t], b[t])


def test_resume_replays_the_uninterrupted_run(tmp_path, small_source, tiny_config):
    cfg = TrainConfig(steps=4, batch_size=3, warmup_steps=1, val_every=0, checkpoint_every=0)
    full = train(cfg, tiny_config, S4TConfig(), small_source, None, tmp_path / "a", progress=False)
    part = train(
        cfg, tiny_config, S4TConfig(), small_source, None, tmp_path / "b", progress=False, stop_at=2
    )
    assert json.loads((tmp_path / "b" / "config.json").read_text())["status"] == "stopped"
    with pytest.raises(ArtifactError, match="--resume"):
        load_run(tmp_path / "b")  # unfinished: no final weights yet
    assert any(not torch.equal(v, _weights(full.model)[k]) for k, v in _weights(part.model).items())
    resumed = train(
        cfg,
        tiny_config,
        S4TConfig(),
        small_source,
        None,
        tmp_path / "b",
        resume=True,
        progress=False,
    )
    a, b = _weights(full.model), _weights(resumed.model)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_out_dir_rules(tmp_path, small_source, tiny_config):
    one = TrainConfig(steps=1, batch_size=2, val_fraction=0.0)
    train(one, tiny_config, S4TConfig(), small_source, None, tmp_path, progress=False)
    with pytest.raises(OutputPathError, match="already holds a run"):
        train(one, tiny_config, S4TConfig(), small_source, None, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="already reached step 1"):
        train(
            one, tiny_config, S4TConfig(), small_source, None, tmp_path, resume=True, progress=False
        )
    with pytest.raises(ConfigError, match="stored model"):
        train(
            one.replace(steps=2),
            tiny_config,
            S4TConfig(lambda_=1.0),
            small_source,
            None,
            tmp_path,
            resume=True,
        )
    with pytest.raises(ArtifactError, match="no checkpoint"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text((tmp_path / "config.json").read_text())
        train(
            one,
            tiny_config,
            S4TConfig(),
            small_source,
            None,
            tmp_path / "empty",
            resume=True,
            progress=False,
        )


def test_dataset_that_does_not_fit_the_model_is_refused(tmp_path, small_source, tiny_config):
    small = small_source[:4]
    wrong_size = type(small)(image=np.zeros((4, 32, 32, 3), np.uint8))
    with pytest.raises(ConfigError, match="--size 64"):
        train(FAST, tiny_config, S4TConfig(), wrong_size, None, tmp_path / "x", progress=False)
    few_classes = tiny_config.replace(tasks=(("semseg", 3), ("depth", 1)))
    with pytest.raises(ConfigError, match="semseg class"):
        train(FAST, few_classes, S4TConfig(), small, None, tmp_path / "y", progress=False)


def test_hflip_mirrors_labels_and_negates_normals_x(small_source):
    img = small_source.image[:2].copy()
    labels = {k: v[:2].copy() for k, v in _Arrays.of(small_source).labels.items()}
    ref = {k: v.copy() for k, v in labels.items()}
    hflip(img, labels, np.array([True, False]))
    np.testing.assert_array_equal(img[0], small_source.image[0][:, ::-1])
    np.testing.assert_array_equal(img[1], small_source.image[1])
    np.testing.assert_array_equal(labels["semseg"][0], ref["semseg"][0][:, ::-1])
    np.testing.assert_array_equal(labels["normals"][0, ..., 0], -ref["normals"][0][:, ::-1, 0])
    np.testing.assert_array_equal(labels["normals"][0, ..., 1:], ref["normals"][0][:, ::-1, 1:])
    np.testing.assert_array_equal(labels["normals"][1], ref["normals"][1])


def test_ranks_split_each_global_batch(small_source, tiny_config):
    data = _Arrays.of(small_source)
    cfg = TrainConfig(steps=10, batch_size=4)
    one = _StepBatches(data, cfg.replace(batch_size=8), tiny_config, {}, 4, DistInfo(1, 0, 0), 0)
    r0 = _StepBatches(data, cfg, tiny_config, {}, 4, DistInfo(2, 0, 0), 0)
    r1 = _StepBatches(data, cfg, tiny_config, {}, 4, DistInfo(2, 1, 1), 0)
    for step in range(5):  # 5 global batches of 8 from 24 images: crosses epoch boundaries
        a, b = r0.rows(step), r1.rows(step)
        np.testing.assert_array_equal(np.concatenate([a, b]), one.rows(step))
    epoch0 = np.concatenate([one.rows(s) for s in range(3)])
    assert sorted(epoch0.tolist()) == list(range(24))  # every image once per epoch


def test_optimizer_state_round_trips_without_pickle():
    p = torch.nn.Parameter(torch.randn(3))
    opt = torch.optim.Adam([p], lr=0.1)
    p.sum().backward()
    opt.step()
    tensors, info = optimizer_to_files(opt)
    json.dumps(info)  # plain JSON
    p2 = torch.nn.Parameter(p.detach().clone())
    opt2 = torch.optim.Adam([p2], lr=0.5)
    optimizer_from_files(opt2, tensors, json.loads(json.dumps(info)))
    assert opt2.param_groups[0]["lr"] == 0.1
    torch.testing.assert_close(opt2.state[p2]["exp_avg"], opt.state[p]["exp_avg"])


def test_load_run_errors_are_one_line(tmp_path, small_source, tiny_config):
    with pytest.raises(ArtifactError, match="does not exist"):
        load_run(tmp_path / "nope")
    with pytest.raises(ArtifactError, match="not a run directory"):
        load_run(tmp_path)
    train(
        TrainConfig(steps=1, batch_size=2, val_fraction=0.0),
        tiny_config,
        S4TConfig(),
        small_source,
        None,
        tmp_path,
        progress=False,
    )
    w = tmp_path / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="corrupt") as e:
        load_run(tmp_path)
    assert "\n" not in str(e.value)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        load_run(tmp_path)
