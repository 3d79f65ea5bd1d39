"""`s4t-edge check --trt`: the exported graphs pass the TensorRT tables, and a graph that does
not is reported node by node (not just its first violation)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import onnx
import pytest

from s4t_edge.cli.main import main as cli_main
from s4t_edge.export.trt_matrix import VERSIONS
from s4t_edge.export.trt_rules import check_tensorrt
from s4t_edge.export.validate import run_checks


def _run(capsys, *args: str) -> tuple[int, str, str]:
    try:
        cli_main(list(args))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def _with_three_output_layer_norms(art: Path, dst: Path, count: int) -> Path:
    """A copy of `art` whose step graph declares Mean/InvStdDev on `count` LayerNormalizations."""
    from s4t_edge.utils import sha256_file, write_json

    shutil.copytree(art, dst)
    step = onnx.load(str(dst / "step.onnx"))
    lns = [n for n in step.graph.node if n.op_type == "LayerNormalization"][:count]
    assert len(lns) == count
    for i, n in enumerate(lns):
        n.output.extend([f"extra_mean_{i}", f"extra_inv_{i}"])
    onnx.save(step, str(dst / "step.onnx"))
    manifest = json.loads((dst / "manifest.json").read_text())
    manifest["files"]["step.onnx"] = sha256_file(dst / "step.onnx")
    write_json(dst / "manifest.json", manifest)
    return dst


def test_exported_graphs_pass_every_table(tiny_artifact: Path) -> None:
    """The default scope goes through the joint decoder: its step holds LayerNorms, each with
    the single output TensorRT's importer makes."""
    step = onnx.load(str(tiny_artifact / "step.onnx"))
    lns = [n for n in step.graph.node if n.op_type == "LayerNormalization"]
    assert lns and all(len([o for o in n.output if o]) == 1 for n in lns)
    for g in ("backbone", "step", "predict"):
        model = onnx.load(str(tiny_artifact / f"{g}.onnx"))
        for version in ("10.3", "10.13", VERSIONS[-1]):
            assert check_tensorrt(model, version) == [], (g, version)


def test_check_reports_every_violation_with_node_rule_and_lift(
    tiny_artifact: Path, tmp_path: Path, capsys
) -> None:
    art = _with_three_output_layer_norms(tiny_artifact, tmp_path / "bad", 3)
    code, out, err = _run(capsys, "check", str(art), "--no-parity")
    assert code == 1
    lines = [line for line in out.splitlines() if "LayerNormalization:outputs" in line]
    assert len(lines) == 3, out
    assert all(
        line.startswith("step.onnx: error: LayerNormalization node ")
        and "TensorRT 10.3" in line
        and "not lifted up to TensorRT 10.15" in line
        for line in lines
    )
    assert len(err.strip().splitlines()) == 1
    assert "TensorRT 10.3 would reject 3 node(s)" in err
    report = run_checks(art, parity=False, trt="10.13")
    assert not report.ok and report.trt_version == "10.13"
    assert sum("LayerNormalization:outputs" in f for f in report.trt_findings) == 3


def test_check_against_another_version(tiny_artifact: Path, capsys) -> None:
    code, out, _err = _run(capsys, "check", str(tiny_artifact), "--no-parity", "--trt", "10.13")
    assert code == 0
    assert "TensorRT 10.13 operator matrix" in out


@pytest.mark.parametrize("bad", ["11.0", "10.1", "jetpack6"])
def test_unknown_trt_version_is_one_line(tiny_artifact: Path, capsys, bad: str) -> None:
    code, out, err = _run(capsys, "check", str(tiny_artifact), "--trt", bad)
    assert code == 2 and out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: --trt")


_SCOPES = [
    ("norm", ()),
    ("norm@backbone.layer4", ()),
    ("norm@backbone.layer4+norm@joint_decoder", ()),
    ("norm@joint_decoder", ()),
    ("adapters", ("layer3", "layer4")),
    ("all", ()),
]


def _export_and_check(preset: str, scope: str, adapters: tuple[str, ...], out: Path) -> None:
    import torch

    from s4t_edge.export.exporter import ExportConfig, export_model
    from s4t_edge.models import DEFAULT_TASKS, build_model
    from s4t_edge.train.config import S4TConfig

    torch.manual_seed(0)
    cfg = ExportConfig(batch=1, scope=scope, add_adapters=adapters, validate=False)
    art = export_model(build_model(preset, DEFAULT_TASKS), S4TConfig(), out, cfg).out_dir
    for g in ("backbone", "step", "predict"):
        findings = check_tensorrt(onnx.load(str(art / f"{g}.onnx")), "10.3")
        assert [str(f) for f in findings if f.severity == "error"] == [], (preset, scope, g)


# The default scope is checked above on the session's artifact (no extra export); each other
# scope costs a trace and an ONNX export (~30-60 s on two cores), hence slow.  `all` puts every
# backward (convolution, pooling, BatchNorm, LayerNorm, resize) in the step.
@pytest.mark.slow
@pytest.mark.parametrize("preset", ["tiny", "resnet18", "paper"])
@pytest.mark.parametrize(("scope", "adapters"), _SCOPES, ids=[s for s, _ in _SCOPES])
def test_every_builtin_scope_passes_the_10_3_table(
    tmp_path: Path, preset: str, scope: str, adapters: tuple[str, ...]
) -> None:
    _export_and_check(preset, scope, adapters, tmp_path / "art")
