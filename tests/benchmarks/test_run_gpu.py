"""benchmarks/run_gpu.py runs once on a lent GPU, so what can be checked without one is checked
here: every contender runs on a non-CPU device (meta), and the CPU memory probe isolates one
contender per process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def run_gpu():
    sys.path.insert(0, str(BENCH))
    try:
        import run_gpu

        yield run_gpu
    finally:
        sys.path.remove(str(BENCH))


TINY = ["--preset", "tiny", "--batch", "2", "--scopes", "norm@backbone.layer4+norm@joint_decoder"]


def test_every_contender_runs_off_the_cpu(run_gpu):
    # meta stands in for CUDA: a tensor the trace left on the CPU fails the step there
    assert run_gpu.main([*TINY, "--device", "meta", "--check", "--steps", "2"]) == 0


def test_cpu_memory_probe_measures_each_contender_alone(run_gpu):
    argv = [*TINY, "--device", "cpu", "--threads", "1", "--no-fp16", "--no-host-theta"]
    ref = run_gpu.cpu_memory_in_child("reference", argv)
    part = run_gpu.cpu_memory_in_child("partition[norm@backbone.layer4+norm@joint_decoder]", argv)
    for m in (ref, part):
        assert "error" not in m, m
        assert m["peak_bytes"] >= m["resident_bytes"] >= 0
    # the published protocol keeps every activation for a full backward; the step graph does not
    assert part["peak_bytes"] < ref["peak_bytes"]
    assert "error" in run_gpu.cpu_memory_in_child("no-such-contender", argv)
