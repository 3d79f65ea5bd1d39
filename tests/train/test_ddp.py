"""Two-process DistributedDataParallel training on the CPU (gloo), as torchrun would launch it."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import textwrap

import pytest

WORKER = textwrap.dedent(
    """
    import hashlib, json, sys
    import torch
    torch.set_num_threads(1)
    from s4t_edge.data import synth
    from s4t_edge.models import DEFAULT_TASKS, make_config
    from s4t_edge.train.config import S4TConfig, TrainConfig
    from s4t_edge.train.loop import dist_info, train

    out, report = sys.argv[1], sys.argv[2]
    ds = synth("source", 16, 64, 0)
    cfg = TrainConfig(steps=3, batch_size=2, warmup_steps=1, val_every=0, val_fraction=0.0)
    run = train(cfg, make_config("tiny", DEFAULT_TASKS), S4TConfig(), ds, None, out, progress=False)
    h = hashlib.sha256()
    for k, v in sorted(run.model.state_dict().items()):
        h.update(k.encode()); h.update(v.float().numpy().tobytes())
    json.dump({"rank": dist_info().rank, "sha": h.hexdigest()}, open(report, "w"))
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(tmp_path, world: int) -> list[dict]:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    port = str(_free_port())
    procs = []
    for rank in range(world):
        env = dict(
            os.environ,
            WORLD_SIZE=str(world),
            RANK=str(rank),
            LOCAL_RANK=str(rank),
            MASTER_ADDR="127.0.0.1",
            MASTER_PORT=port,
            OMP_NUM_THREADS="1",
        )
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    str(script),
                    str(tmp_path / "run"),
                    str(tmp_path / f"rank{rank}.json"),
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
        )
    outs = [p.communicate(timeout=300)[0] for p in procs]
    for p, o in zip(procs, outs):
        assert p.returncode == 0, o[-3000:]
    return [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(world)]


def test_two_process_ddp_keeps_ranks_identical_and_only_rank0_writes(tmp_path):
    reports = _launch(tmp_path, 2)
    assert [r["rank"] for r in reports] == [0, 1]
    assert reports[0]["sha"] == reports[1]["sha"]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["status"] == "finished"
    assert (tmp_path / "run" / "model.safetensors").is_file()
    # no stray files from rank 1 (atomic writes leave no temp files either)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint",
        "config.json",
        "model.safetensors",
    ]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun not on PATH")
def test_torchrun_cli(tmp_path):
    """The documented command: torchrun --nproc_per_node 2 -m s4t_edge.cli.main train ..."""
    from s4t_edge.data import save_dataset, synth

    save_dataset(tmp_path / "train.npz", synth("source", 16, 64, 0))
    port = str(_free_port())
    res = subprocess.run(
        [
            "torchrun",
            "--nproc_per_node",
            "2",
            "--master_port",
            port,
            "-m",
            "s4t_edge.cli.main",
            "train",
            "--train",
            str(tmp_path / "train.npz"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(tmp_path / "run"),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode == 0, res.stderr[-3000:]
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["step"] == 2
