"""End-to-end export of the tiny model: graphs, manifest, validation, determinism, failures."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from s4t_edge.cli.main import main as cli_main
from s4t_edge.export import ExportConfig, export_run
from s4t_edge.export.trt_rules import check_tensorrt
from s4t_edge.export.validate import run_checks


def _manifest(art: Path) -> dict:
    return json.loads((art / "manifest.json").read_text())


def test_artifact_contract(tiny_artifact):
    m = _manifest(tiny_artifact)
    for f in ("backbone.onnx", "step.onnx", "predict.onnx", "theta.safetensors", "manifest.json"):
        assert (tiny_artifact / f).is_file()
    theta = [t["name"] for t in m["theta"]["tensors"]]
    assert theta and all(n.startswith(("backbone.layer4.", "joint_decoder.")) for n in theta)
    step = m["graphs"]["step"]
    ins = [i["name"] for i in step["inputs"]]
    outs = [o["name"] for o in step["outputs"]]
    assert ins[-1] == "mask_noise" and set(theta) <= set(ins)
    assert outs[0] == "loss" and {f"loss/{t['name']}" for t in m["tasks"]} <= set(outs)
    assert [o for o in outs if o.startswith("grad/")] == [f"grad/{n}" for n in theta]
    assert all(o["dtype"] == "float32" for o in step["outputs"])
    # the default statistics are a per-batch input α (--bn-stats mix), with their shift as output
    assert [i["name"] for i in m["graphs"]["backbone"]["inputs"]] == ["image", "bn_mix"]
    assert m["policy"]["score"] == "shift" and m["policy"]["candidates"] == [0.0, 1.0]
    assert "stat/bn_shift" in [o["name"] for o in m["graphs"]["backbone"]["outputs"]]
    assert m["input"]["shape"] == [2, 3, 64, 64]
    pred_outs = [o["name"] for o in m["graphs"]["predict"]["outputs"]]
    assert pred_outs == [f"pred/{t['name']}" for t in m["tasks"]]
    assert m["parity"]["grad_rel_max"] < 1e-4
    # The backbone holds the frozen stages: its convolutions, none of θ.
    bb = onnx.load(str(tiny_artifact / "backbone.onnx"))
    assert sum(n.op_type == "Conv" for n in bb.graph.node) >= 4
    assert not set(theta) & {i.name for i in bb.graph.input}
    # No joint decoder, no masking in predict.
    pred = onnx.load(str(tiny_artifact / "predict.onnx"))
    assert "TopK" not in {n.op_type for n in pred.graph.node}
    assert "mask_noise" not in {i.name for i in pred.graph.input}


def test_graphs_pass_tensorrt_rules_and_opset(tiny_artifact):
    for g in ("backbone", "step", "predict"):
        model = onnx.load(str(tiny_artifact / f"{g}.onnx"))
        assert [f for f in check_tensorrt(model) if f.severity == "error"] == []
        assert all(i.version <= 20 for i in model.opset_import if i.domain in ("", "ai.onnx"))


def test_check_passes_without_torch(tiny_artifact):
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch' or name.startswith('torch.'):\n"
        "            raise ImportError('torch is forbidden here')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from s4t_edge.cli.main import main\n"
        f"main(['check', {str(tiny_artifact)!r}])\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "all checks passed" in out.stdout


def _copy(art: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(art, dst)
    return dst


def _check_cli(art: Path, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exc:
        cli_main(["check", str(art)])
    return exc.value.code, capsys.readouterr().err


def test_check_detects_tampered_graph(tiny_artifact, tmp_path, capsys):
    art = _copy(tiny_artifact, tmp_path)
    data = bytearray((art / "step.onnx").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (art / "step.onnx").write_bytes(bytes(data))
    code, err = _check_cli(art, capsys)
    assert code == 1
    assert "step.onnx" in err and len(err.strip().splitlines()) == 1


def test_check_detects_truncated_and_missing_files(tiny_artifact, tmp_path, capsys):
    art = _copy(tiny_artifact, tmp_path)
    theta = art / "theta.safetensors"
    theta.write_bytes(theta.read_bytes()[:50])
    code, err = _check_cli(art, capsys)
    assert code == 1 and "theta.safetensors" in err
    (art / "predict.onnx").unlink()
    code, err = _check_cli(art, capsys)
    assert code == 1 and "predict.onnx" in err


def test_check_detects_a_graph_that_disagrees_with_pytorch(tiny_artifact, tmp_path):
    """A consistent hash does not save a wrong graph: parity is re-run against stored references."""
    from s4t_edge.utils import sha256_file, write_json

    art = _copy(tiny_artifact, tmp_path)
    model = onnx.load(str(art / "predict.onnx"))
    # Scale one prediction by 1% right before the output: a plausible silent corruption.
    out = model.graph.output[0].name
    for node in model.graph.node:
        node.output[:] = [o + "_raw" if o == out else o for o in node.output]
        node.input[:] = [i + "_raw" if i == out else i for i in node.input]
    model.graph.initializer.append(onnx.numpy_helper.from_array(np.array(1.01, np.float32), "k101"))
    model.graph.node.append(onnx.helper.make_node("Mul", [out + "_raw", "k101"], [out]))
    onnx.save(model, str(art / "predict.onnx"))
    m = _manifest(art)
    m["files"]["predict.onnx"] = sha256_file(art / "predict.onnx")
    write_json(art / "manifest.json", m)
    report = run_checks(art)
    assert not report.ok and "predict.onnx" in report.first_failure()


def test_gradient_check_stays_at_1e4_where_fp32_is_well_conditioned(tiny_artifact, tmp_path):
    """The fp32 floor (8 x what one ulp of the cut moves a gradient) only loosens gradients that
    fp32 cannot determine; on the tiny model it is far below 1e-4, so a gradient off by 0.1%
    still fails."""
    from safetensors.numpy import load_file, save_file

    from s4t_edge.utils import sha256_file, write_json

    m = _manifest(tiny_artifact)
    assert m["parity"]["grad_ulp_sensitivity_max"] < 1e-5
    art = _copy(tiny_artifact, tmp_path)
    ref = load_file(str(art / "parity.safetensors"))
    name = next(k for k in ref if k.startswith("grad/"))
    ref[name] = ref[name] * np.float32(1.001)
    save_file(ref, str(art / "parity.safetensors"))
    m = _manifest(art)
    m["files"]["parity.safetensors"] = sha256_file(art / "parity.safetensors")
    write_json(art / "manifest.json", m)
    report = run_checks(art)
    assert not report.ok and name in report.first_failure()


def test_reexport_is_deterministic(tiny_run, tiny_artifact, tmp_path):
    again = export_run(tiny_run, tmp_path / "again", ExportConfig(batch=2))
    m1, m2 = _manifest(tiny_artifact), again.manifest
    for f in ("backbone.onnx", "step.onnx", "predict.onnx", "theta.safetensors"):
        assert m1["files"][f] == m2["files"][f], f


def test_existing_output_is_kept_unless_overwrite(tiny_run, tiny_artifact, capsys):
    before = (tiny_artifact / "manifest.json").read_bytes()
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", str(tiny_run), "--out", str(tiny_artifact), "--batch", "2"])
    assert exc.value.code == 2
    assert "--overwrite" in capsys.readouterr().err
    assert (tiny_artifact / "manifest.json").read_bytes() == before


def test_bad_scope_is_a_one_line_error(tiny_run, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", str(tiny_run), "--out", str(tmp_path / "x"), "--scope", "norm@nowhere"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nowhere" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_missing_run_dir_is_a_one_line_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        cli_main(["export", str(tmp_path / "no-run"), "--out", str(tmp_path / "x")])
    assert exc.value.code == 2
    assert len(capsys.readouterr().err.strip().splitlines()) == 1


def test_finite_differences_agree_with_step_gradients(tiny_run, tmp_path):
    """Directional derivative of `loss` along a random direction of θ vs <grad, direction>.

    θ in the joint decoder only: then the stop-gradient target (the main predictions) does not
    move with θ, and ∂loss/∂θ is the true derivative of the `loss` output.
    """
    import onnxruntime as ort
    from safetensors.numpy import load_file

    from s4t_edge.data import preprocess

    tiny_artifact = tmp_path / "decoder"
    export_run(tiny_run, tiny_artifact, ExportConfig(batch=2, scope="norm@joint_decoder"))
    m = _manifest(tiny_artifact)
    ref = load_file(str(tiny_artifact / "parity.safetensors"))
    x = preprocess(ref["image_u8"], m["input"]["mean"], m["input"]["std"]).astype(np.float32)
    bb = ort.InferenceSession(str(tiny_artifact / "backbone.onnx"))
    feeds = {"image": x, "bn_mix": np.ones(1, np.float32)}
    cut = dict(zip([o.name for o in bb.get_outputs()], bb.run(None, feeds)))
    step = ort.InferenceSession(str(tiny_artifact / "step.onnx"))
    theta = {t["name"]: ref[f"theta/{t['name']}"].astype(np.float64) for t in m["theta"]["tensors"]}
    rng = np.random.default_rng(0)
    direction = {k: rng.standard_normal(v.shape) for k, v in theta.items()}
    norm = np.sqrt(sum((d**2).sum() for d in direction.values()))
    direction = {k: d / norm for k, d in direction.items()}

    def run(th):
        feeds = {}
        for i in step.get_inputs():
            if i.name == "mask_noise":
                feeds[i.name] = ref["mask_noise"]
            elif i.name in cut:
                feeds[i.name] = cut[i.name]
            else:
                feeds[i.name] = th[i.name].astype(np.float32)
        return dict(zip([o.name for o in step.get_outputs()], step.run(None, feeds)))

    base = run(theta)
    analytic = sum(float((base[f"grad/{k}"] * direction[k]).sum()) for k in theta)
    eps = 1e-2
    plus = run({k: v + eps * direction[k] for k, v in theta.items()})["loss"]
    minus = run({k: v - eps * direction[k] for k, v in theta.items()})["loss"]
    numeric = float(plus - minus) / (2 * eps)
    assert abs(analytic) > 1e-6
    assert abs(numeric - analytic) <= 2e-2 * abs(analytic) + 1e-6


def test_export_records_the_chosen_runtime_optimiser(tiny_run, tmp_path):
    res = export_run(
        tiny_run,
        tmp_path / "a",
        ExportConfig(batch=2, optimizer="adam", lr=1e-3, steps=7, validate=False),
    )
    s4t = res.manifest["s4t"]
    assert (
        s4t["optimizer"]["name"] == "adam" and s4t["optimizer"]["lr"] == 1e-3 and s4t["steps"] == 7
    )
    from s4t_edge.runtime import Adapter, load

    adapter = Adapter(load(tmp_path / "a"))
    assert adapter.config.steps == 7
    assert adapter.optimizer.config.name == "adam" and adapter.optimizer.config.lr == 1e-3


@pytest.mark.parametrize("kwargs", [{"lr": -1.0}, {"steps": 0}, {"optimizer": "rmsprop"}])
def test_bad_runtime_defaults_are_config_errors(kwargs):
    from s4t_edge.errors import ConfigError

    with pytest.raises(ConfigError):
        ExportConfig(**kwargs)
