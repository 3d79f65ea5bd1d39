"""`s4t_edge.measure.bench` and `.memory`: statistics, ratios from measured samples, the JSON
document, memory readers.  No timing targets here (those live in benchmarks/)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from s4t_edge.errors import ConfigError
from s4t_edge.measure import bench
from s4t_edge.measure.bench import (
    PUBLISHED_FORWARD,
    REFERENCE,
    BenchConfig,
    Contender,
    compute_ratios,
    format_table,
    measure,
    paired_ratio,
    percentile,
    run_bench,
    summarize,
)
from s4t_edge.measure.memory import (
    PowerSamples,
    parse_proc_status,
    parse_tegrastats,
    total_power_rail,
)

# --------------------------------------------------------------------------- statistics


def test_percentile_interpolates_linearly_between_order_statistics() -> None:
    xs = [10.0, 1.0, 4.0, 2.0, 3.0]  # sorted: 1 2 3 4 10
    assert percentile(xs, 50) == 3.0
    assert percentile(xs, 0) == 1.0 and percentile(xs, 100) == 10.0
    # p90: position (5-1)*0.9 = 3.6 -> 4 + 0.6 * (10 - 4)
    assert percentile(xs, 90) == pytest.approx(7.6)
    assert percentile([5.0], 90) == 5.0
    rng = np.random.default_rng(0)
    ys = rng.exponential(size=37).tolist()
    for q in (10, 25, 50, 90, 99):
        assert percentile(ys, q) == pytest.approx(float(np.percentile(ys, q)))
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summarize_reports_median_p90_and_samples() -> None:
    s = summarize([4.0, 1.0, 3.0, 2.0])
    assert s["n"] == 4
    assert s["median_ms"] == 2.5
    assert s["p90_ms"] == pytest.approx(3.7)
    assert s["min_ms"] == 1.0 and s["max_ms"] == 4.0 and s["mean_ms"] == 2.5
    assert s["samples_ms"] == [4.0, 1.0, 3.0, 2.0]  # round order kept: paired ratios need it
    assert summarize([]) == {"n": 0}


def test_paired_ratio_is_the_median_of_per_round_ratios() -> None:
    # a slow second round hits both contenders: paired ratio stays 4, ratio of medians would not
    ref, ours = [40.0, 400.0, 44.0], [10.0, 100.0, 10.0]
    assert paired_ratio(ref, ours) == pytest.approx(4.0)
    assert paired_ratio([], []) is None


def _results(ref_ep, ours_ep, ref_step=100.0, step=20.0, update=5.0, inference=8.0, fwd=40.0):
    def st(v):
        return summarize([v])

    return {
        "onnxruntime": {
            "kind": "graphs",
            "stages": {"step": st(step), "update": st(update), "inference": st(inference)},
            "episode": summarize(ours_ep),
        },
        REFERENCE: {
            "kind": "protocol",
            "stages": {"step": st(ref_step), "predict": st(16.0)},
            "episode": summarize(ref_ep),
        },
        PUBLISHED_FORWARD: {
            "kind": "forward",
            "stages": {"forward": st(fwd), "predict_published_fusion": st(12.0)},
        },
    }


def test_ratios_are_computed_from_the_measured_medians() -> None:
    r = compute_ratios(_results([1000.0, 1200.0, 1100.0], [200.0, 250.0, 220.0]), steps=40)
    ort = r["onnxruntime"]
    assert ort["episode"] == pytest.approx(1100.0 / 220.0)
    assert ort["episode_paired"] == pytest.approx(np.median([5.0, 4.8, 5.0]))
    assert ort["step"] == pytest.approx(100.0 / (20.0 + 5.0))  # the update is part of a step
    assert ort["predict_vs_published_forward"] == pytest.approx(40.0 / 8.0)
    assert ort["predict_vs_published_predict"] == pytest.approx(12.0 / 8.0)
    assert ort["predict_vs_reference_predict"] == pytest.approx(16.0 / 8.0)
    assert set(r) == {"onnxruntime"}  # only θ backends get ratios


def test_ratios_without_reference_are_absent_not_invented() -> None:
    res = _results([1.0], [1.0])
    del res[REFERENCE], res[PUBLISHED_FORWARD]
    assert compute_ratios(res, steps=40) == {}


# --------------------------------------------------------------------------- measure() with a fake clock


class FakeClock:
    """perf_counter that only moves when a fake contender 'works'."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now

    def strftime(self, fmt: str) -> str:
        return "2025-01-01T00:00:00"

    def sleep(self, seconds: float) -> None:  # pauses between contenders cost no fake time
        return None


class FakeContender(Contender):
    def __init__(self, clock: FakeClock, name: str, kind: str, costs: dict[str, float]) -> None:
        self.clock, self.name, self.kind, self.costs = clock, name, kind, costs
        self.has_episode = "episode" in costs
        self.calls: list[str] = []

    def _work(self, what: str) -> None:
        self.calls.append(what)
        self.clock.now += self.costs[what] / 1e3

    def stages(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in self.costs:
            if s != "episode":
                out[s] = lambda s=s: self._work(s)
        return out

    def episode(self) -> None:
        self._work("episode")


def test_measure_times_interleaved_and_derives_ratios(monkeypatch) -> None:
    clock = FakeClock()
    monkeypatch.setattr(bench, "time", clock)
    ours = FakeContender(
        clock,
        "onnxruntime",
        "graphs",
        {"backbone": 2, "step": 10, "update": 1, "predict": 1, "inference": 3, "episode": 450},
    )
    ref = FakeContender(clock, REFERENCE, "protocol", {"step": 55, "predict": 9, "episode": 2250})
    fwd = FakeContender(
        clock, PUBLISHED_FORWARD, "forward", {"forward": 12, "predict_published_fusion": 6}
    )
    cfg = BenchConfig(steps=40, repeat=3, stage_repeat=4, warmup=1, memory="off")
    doc = measure([ours, ref, fwd], cfg)

    assert doc["schema"] == "s4t-edge-bench" and doc["schema_version"] == 1
    res = doc["results"]
    assert res["onnxruntime"]["stages"]["step"]["n"] == 4  # warm-up round dropped
    assert res["onnxruntime"]["stages"]["step"]["median_ms"] == pytest.approx(10)
    assert res["onnxruntime"]["episode"]["n"] == 3 and res["onnxruntime"]["episode"]["steps"] == 40
    assert "episode" not in res[PUBLISHED_FORWARD]
    r = doc["ratios"]["onnxruntime"]
    assert r["episode"] == pytest.approx(2250 / 450)
    assert r["episode_paired"] == pytest.approx(5.0)
    assert r["step"] == pytest.approx(55 / 11)
    assert r["predict_vs_published_forward"] == pytest.approx(12 / 3)
    # interleaved: episodes alternate between contenders instead of running in blocks
    eps = [c for c in ours.calls if c == "episode"]
    assert len(eps) == 4 and ref.calls.count("episode") == 4
    assert "threads" in doc and "env" in doc and doc["config"]["steps"] == 40
    json.dumps(doc)  # JSON-serialisable as is
    table = format_table(doc)
    assert "onnxruntime" in table and "5.00×" in table


def test_bench_config_rejects_bad_values_with_a_hint() -> None:
    with pytest.raises(ConfigError, match="--reference"):
        BenchConfig(backends=("reference",))
    with pytest.raises(ConfigError, match="memory"):
        BenchConfig(memory="psutil")
    with pytest.raises(ConfigError, match="nothing to measure"):
        BenchConfig(backends=())
    with pytest.raises(ConfigError):
        BenchConfig(steps=-1)
    cfg = BenchConfig(backends=("onnxruntime", "torch"), threads=1)
    assert BenchConfig.from_dict(cfg.to_dict()) == cfg
    assert BenchConfig(source="run").with_reference


# --------------------------------------------------------------------------- real artifact (toy, no torch)


def test_run_bench_on_the_toy_artifact(toy_artifact: Path, tmp_path: Path) -> None:
    cfg = BenchConfig(steps=3, repeat=2, stage_repeat=2, warmup=1, threads=1, memory="inprocess")
    doc = run_bench(toy_artifact, cfg)
    res = doc["results"]["onnxruntime"]
    assert set(res["stages"]) == {"backbone", "step", "update", "predict", "inference"}
    for st in res["stages"].values():
        assert st["n"] == 2 and 0 < st["median_ms"] <= st["p90_ms"] <= st["max_ms"]
    assert res["episode"]["n"] == 2 and res["episode"]["median_ms"] > 0
    assert res["throughput"]["adapted_images_per_s"] == pytest.approx(
        2 / (res["episode"]["median_ms"] / 1e3)
    )
    assert res["memory"]["rss_peak_bytes"] >= res["memory"]["rss_before_bytes"] > 0
    assert res["describe"]["intra_op_threads"] == 1
    assert doc["artifact"]["batch"] == 2 and doc["artifact"]["theta_numel"] > 0
    assert doc["ratios"] == {}  # no reference asked for
    out = tmp_path / "b.json"
    bench.write_json(out, doc)
    back = json.loads(out.read_text())
    assert back["results"]["onnxruntime"]["episode"]["steps"] == 3


def test_isolated_memory_probe_runs_in_a_child_without_torch(toy_artifact: Path) -> None:
    cfg = BenchConfig(steps=2, threads=1, memory="isolated")
    mem = bench.isolated_memory(toy_artifact, "onnxruntime", cfg)
    assert "error" not in mem, mem
    assert mem["torch_imported"] is False
    assert mem["rss_loaded_bytes"] >= mem["rss_start_bytes"] > 0


# --------------------------------------------------------------------------- memory readers

PROC_STATUS = """Name:\tpython
VmPeak:\t 1000 kB
VmHWM:\t  2048 kB
VmRSS:\t  1024 kB
RssAnon:\t 512 kB
Threads:\t4
"""


def test_proc_status_parser_converts_kb_to_bytes() -> None:
    d = parse_proc_status(PROC_STATUS)
    assert d["VmHWM"] == 2048 * 1024 and d["VmRSS"] == 1024 * 1024 and d["RssAnon"] == 512 * 1024
    assert "Threads" not in d and "Name" not in d


def test_measure_memory_sees_a_large_allocation() -> None:
    """In a fresh process: in the test process a freed heap can hand back already-resident pages."""
    import json
    import subprocess
    import sys

    code = (
        "import json, numpy as np\n"
        "from s4t_edge.measure.memory import measure_memory\n"
        "with measure_memory() as m:\n"
        "    block = np.ones(64 * 1024 * 1024 // 8)  # 64 MiB touched\n"
        "    block.sum()\n"
        "print(json.dumps({'method': m.rss_method, 'delta': m.rss_delta}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    m = json.loads(out.stdout.strip().splitlines()[-1])
    if m["method"] == "none":
        pytest.skip("no /proc here")
    assert m["delta"] is not None and m["delta"] >= 48 * 1024 * 1024


ORIN = (
    "11-27-2024 08:00:00 RAM 2448/7620MB (lfb 2x4MB) SWAP 0/3810MB (cached 0MB) "
    "CPU [1%@729,3%@729,0%@729,0%@729,off,off] EMC_FREQ 0%@2133 GR3D_FREQ 12%@[305] "
    "NVENC off APE 200 cpu@48.5C soc2@47.6C gpu@47.8C tj@48.5C "
    "VDD_IN 4526mW/4526mW VDD_CPU_GPU_CV 496mW/496mW VDD_SOC 1428mW/1428mW"
)
NANO = (
    "RAM 1507/3964MB (lfb 4x4MB) SWAP 0/1982MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
    "CPU [5%@102,2%@102,0%@102,0%@102] EMC_FREQ 3%@204 GR3D_FREQ 0%@76 APE 25 PLL@22C "
    "CPU@25C GPU@23.5C POM_5V_IN 1126/1126 POM_5V_GPU 0/0 POM_5V_CPU 125/125"
)


def test_tegrastats_parser_orin_and_nano_formats() -> None:
    o = parse_tegrastats(ORIN)
    assert o["ram_used_mb"] == 2448 and o["ram_total_mb"] == 7620
    assert o["gpu_util"] == 12 and o["cpu_util"] == pytest.approx(1.0)
    assert o["power_mw"] == {"VDD_IN": 4526, "VDD_CPU_GPU_CV": 496, "VDD_SOC": 1428}
    assert o["temp_c"]["gpu"] == 47.8
    n = parse_tegrastats(NANO)
    assert n["ram_used_mb"] == 1507
    assert n["power_mw"] == {"POM_5V_IN": 1126, "POM_5V_GPU": 0, "POM_5V_CPU": 125}
    assert "IRAM" not in n["power_mw"] and "SWAP" not in n["power_mw"]
    assert total_power_rail(n["power_mw"]) == "POM_5V_IN"
    assert parse_tegrastats("garbage") == {}


def test_power_summary_integrates_energy_over_the_region() -> None:
    samples = [parse_tegrastats(ORIN), parse_tegrastats(ORIN.replace("4526mW/", "5526mW/"))]
    ps = PowerSamples("tegrastats", 100, samples=samples, seconds=2.0)
    s = ps.summary()
    assert s["ram_peak_mb"] == 2448 and s["total_rail"] == "VDD_IN"
    assert s["power_mw_mean"]["VDD_IN"] == pytest.approx(5026.0)
    assert s["power_mw_peak"]["VDD_IN"] == 5526
    assert s["energy_j"] == pytest.approx(5.026 * 2.0)
    assert math.isclose(s["gpu_util_mean"], 12.0)


def _fake_tegrastats(tmp_path: Path) -> Path:
    exe = tmp_path / "tegrastats"
    exe.write_text(f"#!/bin/sh\nwhile true; do echo '{ORIN}'; sleep 0.02; done\n")
    exe.chmod(0o755)
    return exe


def test_tegrastats_sampler_reads_a_running_tegrastats(tmp_path: Path) -> None:
    import time

    from s4t_edge.measure.memory import TegraStatsSampler

    with TegraStatsSampler(interval_ms=20, exe=str(_fake_tegrastats(tmp_path))) as s:
        time.sleep(0.3)
    summary = s.result.summary()
    assert summary["n_samples"] >= 2, summary
    assert summary["ram_peak_mb"] == 2448 and summary["total_rail"] == "VDD_IN"
    assert summary["energy_j"] == pytest.approx(4.526 * summary["seconds"], rel=1e-6)


def test_measure_attaches_jetson_power_when_a_jetson_is_detected(monkeypatch, tmp_path) -> None:
    from s4t_edge.measure.memory import TegraStatsSampler

    exe = str(_fake_tegrastats(tmp_path))
    monkeypatch.setattr(bench, "jetson_sampler", lambda ms: TegraStatsSampler(20, exe=exe))

    class Sleepy(Contender):
        name, kind = "onnxruntime", "graphs"

        def stages(self) -> dict[str, Any]:
            return {"step": lambda: None}

        def episode(self) -> None:
            import time

            time.sleep(0.05)

    doc = measure([Sleepy()], BenchConfig(steps=1, repeat=2, stage_repeat=1, memory="off"))
    jet = doc["results"]["onnxruntime"]["jetson"]
    assert jet["source"] == "tegrastats" and jet["n_samples"] >= 1
    assert jet["energy_per_episode_j"] == pytest.approx(jet["energy_j"] / 2)
