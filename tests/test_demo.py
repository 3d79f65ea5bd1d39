"""The demo pipeline end to end at toy sizes, and its caching of finished stages."""

from __future__ import annotations

import json

from s4t_edge.demo import DemoConfig, run_demo


def test_demo_runs_end_to_end_and_reuses_finished_stages(tmp_path):
    cfg = DemoConfig(
        workdir=str(tmp_path / "demo"),
        n_train=48,
        train_steps=4,
        n_eval=8,
        steps=2,
        shifts=("fog", "texture"),
        report=True,
    )
    said: list[str] = []
    res = run_demo(cfg, say=said.append)
    domains = [r["domain"] for r in res.rows]
    assert domains == ["source", "fog", "texture"]
    lines = res.table.splitlines()
    assert len(lines) == 2 + len(domains) and lines[2].startswith("| source |")
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    assert summary["rows"][1]["optimizer"]["lr"] == cfg.lr  # the artifact carries the demo's lr
    assert (tmp_path / "demo" / "adapt" / "fog" / "report.md").is_file()
    assert any(m.startswith("train:") and "steps" in m for m in said)

    said.clear()
    run_demo(cfg, say=said.append)
    assert not any(m.startswith("data:") for m in said)
    assert any("using the trained model" in m for m in said)
    assert any("using the artifact" in m for m in said)
