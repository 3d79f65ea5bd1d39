"""TensorRT backend: everything checkable without TensorRT runs here; the rest is marked.

Three layers of tests:

1. Pure checks: the one-line hints when TensorRT / CUDA are missing, the fp16 ONNX rewrite and
   the device-side optimiser graph, both executed in ONNX Runtime (CPU).
2. The build orchestration and the runner, executed end to end on the CPU through a *fake*
   `tensorrt` module whose "engines" are ONNX Runtime sessions reading and writing raw host
   addresses, and a host-memory `CudaDriver` (both in trt_fakes.py).  This exercises everything the backend itself
   does -- engine keys and caching, precision choices, buffer binding, ping-pong θ, the update
   engine, guards, zero-copy, cleanup -- but not TensorRT's behaviour, which it only mimics as
   documented for 10.3.
3. `@pytest.mark.tensorrt` tests against real TensorRT on a GPU (skipped here, with the reason).
"""

from __future__ import annotations

import gc
import importlib.util
import json
import subprocess
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from s4t_edge.errors import ArtifactError, BackendError
from s4t_edge.runtime import load
from s4t_edge.runtime.artifact import Artifact
from s4t_edge.runtime.backends.tensorrt import (
    BuildConfig,
    TensorRTBackend,
    build_engines,
    import_tensorrt,
)
from s4t_edge.runtime.backends.tensorrt.builder import graph_recipe
from s4t_edge.runtime.backends.tensorrt.device_memory import CudaPythonDriver, get_driver
from s4t_edge.runtime.backends.tensorrt.engine_cache import EngineCache
from s4t_edge.runtime.backends.tensorrt.fp16 import convert_to_fp16
from s4t_edge.runtime.backends.tensorrt.update_graphs import (
    hyper_values,
    make_update_model,
    optimizer_spec,
)
from s4t_edge.runtime.optim import OptimizerConfig
from tests.runtime.trt_fakes import HostDriver, fake_tensorrt
from tests.toy_artifact import build_toy_artifact

# ============================================================================================
# 1. Missing libraries


def _hide(monkeypatch: pytest.MonkeyPatch, *names: str) -> None:
    for name in names:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import name` raise ImportError


def test_missing_tensorrt_is_a_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "tensorrt")
    with pytest.raises(BackendError) as e:
        import_tensorrt()
    msg = str(e.value)
    assert "\n" not in msg
    assert "s4t-edge[tensorrt]" in msg and "python3-libnvinfer" in msg


def test_load_with_missing_tensorrt_says_how_to_install(
    monkeypatch: pytest.MonkeyPatch, toy_artifact: Path
) -> None:
    _hide(monkeypatch, "tensorrt")
    with pytest.raises(BackendError) as e:
        load(toy_artifact, backend="tensorrt")
    assert "s4t-edge[tensorrt]" in str(e.value) and "\n" not in str(e.value)


def test_unknown_backend_option_is_refused(
    monkeypatch: pytest.MonkeyPatch, toy_artifact: Path
) -> None:
    with pytest.raises(BackendError, match="does not accept option"):
        load(toy_artifact, backend="tensorrt", fp61=True)


def test_availability_is_reported_without_importing(monkeypatch: pytest.MonkeyPatch) -> None:
    from s4t_edge.runtime.backends.tensorrt import tensorrt_available

    loaded_before = "tensorrt" in sys.modules
    reason = tensorrt_available()
    if importlib.util.find_spec("tensorrt") is None:
        assert "s4t-edge[tensorrt]" in reason
    assert ("tensorrt" in sys.modules) == loaded_before, "availability must not import TensorRT"
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    assert tensorrt_available() == "ok"


def test_importing_the_backend_loads_no_gpu_library() -> None:
    code = (
        "import sys, s4t_edge.cli.build, s4t_edge.runtime.backends.tensorrt\n"
        "from s4t_edge.runtime.backends.tensorrt import (builder, buffers, compat, "
        "device_memory, engine_cache, fp16, runner, update_graphs)\n"
        "bad = [m for m in ('tensorrt', 'cuda', 'pycuda', 'torch', 'onnx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_missing_cuda_bindings_is_a_one_line_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    _hide(monkeypatch, "cuda", "cuda.bindings", "cuda.cudart", "pycuda", "pycuda.driver")
    with pytest.raises(BackendError) as e:
        get_driver()
    assert "\n" not in str(e.value) and "cuda-python" in str(e.value)
    with pytest.raises(BackendError, match="pycuda"):
        get_driver(prefer="pycuda")
    with pytest.raises(BackendError, match="unknown CUDA binding"):
        get_driver(prefer="opencl")


class _FakeCudart:
    """Just enough of `cuda.bindings.runtime` to drive the error paths."""

    class cudaError_t:  # noqa: N801 - mirrors the binding's name
        cudaSuccess = 0
        cudaErrorNoDevice = 100
        cudaErrorMemoryAllocation = 2

    def __init__(self, count_result: tuple[int, int]) -> None:
        self.count_result = count_result

    def cudaGetDeviceCount(self) -> tuple[int, int]:  # noqa: N802
        return self.count_result

    def cudaSetDevice(self, device: int) -> tuple[int]:  # noqa: N802
        return (0,)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        return (self.cudaError_t.cudaErrorMemoryAllocation, 0)

    def cudaGetErrorString(self, err: int) -> tuple[int, bytes]:  # noqa: N802
        return (0, {100: b"no CUDA-capable device is detected", 2: b"out of memory"}[err])


def test_cuda_python_errors_become_one_line_backend_errors() -> None:
    with pytest.raises(BackendError) as e:
        CudaPythonDriver(0, cudart=_FakeCudart((100, 0)))
    assert "cudaGetDeviceCount" in str(e.value)
    assert "no CUDA-capable device is detected" in str(e.value)
    with pytest.raises(BackendError, match="device 1 not found"):
        CudaPythonDriver(1, cudart=_FakeCudart((0, 1)))
    drv = CudaPythonDriver(0, cudart=_FakeCudart((0, 1)))
    with pytest.raises(BackendError, match="cudaMalloc failed: out of memory"):
        drv.malloc(1024)


# ============================================================================================
# 1b. Pure ONNX rewrites, checked in ONNX Runtime


def _run(model: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    names = [o.name for o in sess.get_outputs()]
    return dict(zip(names, sess.run(names, feeds)))


def _backbone_like_model(big_weight: bool = False) -> Any:
    """Conv-BN-ReLU, a Resize with fp32 scales, a Constant, a Cast and two fp32 outputs."""
    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT
    w = (rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32)
    if big_weight:
        w[0, 0, 0, 0] = 1e6  # beyond fp16 range: must be clipped, not become inf
    inits = [
        numpy_helper.from_array(w, "conv.w"),
        numpy_helper.from_array((rng.standard_normal(8) * 0.1).astype(np.float32), "conv.b"),
        numpy_helper.from_array((1 + 0.1 * rng.standard_normal(8)).astype(np.float32), "bn.s"),
        numpy_helper.from_array((0.1 * rng.standard_normal(8)).astype(np.float32), "bn.b"),
        numpy_helper.from_array((0.1 * rng.standard_normal(8)).astype(np.float32), "bn.m"),
        numpy_helper.from_array((0.5 + rng.random(8)).astype(np.float32), "bn.v"),
        numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
        numpy_helper.from_array(np.array([2], np.int64), "two"),
    ]
    nodes = [
        helper.make_node("Conv", ["image", "conv.w", "conv.b"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "bn.s", "bn.b", "bn.m", "bn.v"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["cut/a"]),
        helper.make_node("Resize", ["cut/a", "", "scales"], ["up"], mode="linear"),
        helper.make_node("Constant", [], ["k"], value=numpy_helper.from_array(np.float32(0.25))),
        helper.make_node("Cast", ["two"], ["two_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["up", "k"], ["upk"]),
        helper.make_node("Add", ["upk", "two_f"], ["cut/b"]),
    ]
    graph = helper.make_graph(
        nodes,
        "bb",
        [helper.make_tensor_value_info("image", f, [2, 3, 8, 8])],
        [
            helper.make_tensor_value_info("cut/a", f, [2, 8, 8, 8]),
            helper.make_tensor_value_info("cut/b", f, [2, 8, 16, 16]),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    return model


def test_fp16_rewrite_matches_fp32_within_half_precision() -> None:
    model = _backbone_like_model()
    half, stats = convert_to_fp16(model)
    onnx.checker.check_model(half)
    # Graph I/O keep their names and stay fp32: the engine's bindings equal the manifest's.
    io = [(v.name, v.type.tensor_type.elem_type) for v in [*half.graph.input, *half.graph.output]]
    assert io == [
        ("image", TensorProto.FLOAT),
        ("cut/a", TensorProto.FLOAT),
        ("cut/b", TensorProto.FLOAT),
    ]
    dtypes = {i.name: i.data_type for i in half.graph.initializer}
    assert dtypes["conv.w"] == TensorProto.FLOAT16
    assert dtypes["bn.v"] == TensorProto.FLOAT16
    assert dtypes["scales"] == TensorProto.FLOAT  # Resize scales are fp32 by the ONNX spec
    assert dtypes["two"] == TensorProto.INT64
    assert stats["initializers"] == 6 and stats["clipped"] == 0 and stats["casts"] >= 3
    casts = [n for n in half.graph.node if n.op_type == "Cast"]
    assert any(a.i == TensorProto.FLOAT16 for n in casts for a in n.attribute if a.name == "to")
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    ref = _run(model, {"image": x})
    got = _run(half, {"image": x})
    for name in ("cut/a", "cut/b"):
        assert got[name].dtype == np.float32
        scale = float(np.abs(ref[name]).max())
        err = float(np.abs(got[name] - ref[name]).max())
        assert err <= 2e-3 * scale + 1e-3, (name, err, scale)
        assert err > 0, "the rewrite must actually compute in fp16"


def test_fp16_rewrite_passes_the_tensorrt_rules() -> None:
    from s4t_edge.export.trt_rules import check_tensorrt

    half, _ = convert_to_fp16(_backbone_like_model())
    errors = [f for f in check_tensorrt(half) if f.severity == "error"]
    assert not errors, errors


def test_fp16_rewrite_clips_out_of_range_weights_and_keeps_fp32_ops() -> None:
    model = _backbone_like_model(big_weight=True)
    half, stats = convert_to_fp16(model, keep_fp32_ops={"Resize", "Mul"})
    assert stats["clipped"] == 1
    w = numpy_helper.to_array(next(i for i in half.graph.initializer if i.name == "conv.w"))
    assert np.isfinite(w).all() and w.max() == np.float16(65504)
    x = np.random.default_rng(2).standard_normal((2, 3, 8, 8)).astype(np.float32)
    out = _run(half, {"image": x})  # runs (a 65504 weight may still overflow activations)
    assert set(out) == {"cut/a", "cut/b"}
    # Kept ops read and write fp32 tensors; everything else computes in fp16.
    inferred = onnx.shape_inference.infer_shapes(half, strict_mode=True)
    types_ = {
        v.name: v.type.tensor_type.elem_type
        for v in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]
    }
    types_.update({i.name: i.data_type for i in half.graph.initializer})
    for node in half.graph.node:
        floats = [types_[n] for n in [*node.input, *node.output] if n and types_[n] != 7]
        if node.op_type in ("Resize", "Mul"):
            assert set(floats) == {TensorProto.FLOAT}, node
        elif node.op_type in ("Conv", "BatchNormalization", "Relu", "Add"):
            assert set(floats) == {TensorProto.FLOAT16}, node


def test_fp16_rewrite_refuses_control_flow() -> None:
    then = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y1"])],
        "then",
        [],
        [helper.make_tensor_value_info("y1", TensorProto.FLOAT, [1])],
    )
    graph = helper.make_graph(
        [helper.make_node("If", ["c"], ["y"], then_branch=then, else_branch=then)],
        "g",
        [
            helper.make_tensor_value_info("c", TensorProto.BOOL, []),
            helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
        ],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    with pytest.raises(BackendError, match="control flow"):
        convert_to_fp16(helper.make_model(graph))


_THETA = {
    "a.weight": np.array([[0.5, -1.0], [2.0, 0.25]], np.float32),
    "b.bias": np.array([0.1, -0.2, 0.3], np.float32),
    "frozen": np.array([1.0, 2.0], np.float32),  # no gradient: must come back unchanged
}


class _Specs:
    def __init__(self, theta: dict[str, np.ndarray]) -> None:
        from s4t_edge.runtime.artifact import TensorSpec

        self.items = [TensorSpec(k, tuple(v.shape), "float32") for k, v in theta.items()]


def _update_trajectory(opt: dict[str, Any], steps: int = 4) -> None:
    """Run the update graph `steps` times and the numpy optimiser beside it."""
    spec = optimizer_spec(opt)
    grads_named = [f"grad/{k}" for k in ("a.weight", "b.bias")]
    model = make_update_model(_Specs(_THETA).items, grads_named, spec["name"], spec["nesterov"])
    from s4t_edge.export.trt_rules import check_tensorrt

    assert not [f for f in check_tensorrt(model) if f.severity == "error"]
    slots = {"sgd": ("momentum_buffer",), "adam": ("exp_avg", "exp_avg_sq")}[spec["name"]]
    rng = np.random.default_rng(3)
    theta_dev = {k: v.copy() for k, v in _THETA.items()}
    state_dev = {f"state/{s}/{k}": np.zeros_like(v) for s in slots for k, v in _THETA.items()}
    numpy_opt = OptimizerConfig.from_dict(opt).build()
    theta_np = {k: v.copy() for k, v in _THETA.items() if k != "frozen"}
    for t in range(1, steps + 1):
        grads = {k: rng.standard_normal(v.shape).astype(np.float32) for k, v in theta_np.items()}
        feeds = {**theta_dev, **state_dev, "hyper": hyper_values(spec, t)}
        feeds.update({f"grad/{k}": g for k, g in grads.items()})
        out = _run(model, feeds)
        theta_dev = {k: out[f"new/{k}"] for k in _THETA}
        state_dev = {k: out[f"new_{k}"] for k in state_dev}
        expected_sq = sum(float((g.astype(np.float64) ** 2).sum()) for g in grads.values())
        assert out["grad_sq"].shape == () and np.isclose(out["grad_sq"], expected_sq, rtol=1e-5)
        numpy_opt.step(theta_np, grads)
        for k in theta_np:
            np.testing.assert_allclose(theta_dev[k], theta_np[k], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(theta_dev["frozen"], _THETA["frozen"])


@pytest.mark.parametrize(
    "opt",
    [
        {"name": "sgd", "lr": 0.1},
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 0.01},
        {"name": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True},
        {"name": "sgd", "lr": 0.1, "momentum": 0.8, "dampening": 0.3},
        {"name": "adam", "lr": 0.01},
        {"name": "adam", "lr": 0.01, "betas": [0.8, 0.99], "weight_decay": 0.1, "eps": 1e-6},
    ],
)
def test_update_graph_follows_the_numpy_optimisers(opt: dict[str, Any]) -> None:
    _update_trajectory(opt)


def test_optimizer_spec_accepts_config_objects_and_rejects_unknown() -> None:
    spec = optimizer_spec(OptimizerConfig(name="adam", lr=0.5))
    assert spec["name"] == "adam" and spec["lr"] == 0.5 and spec["betas"] == (0.9, 0.999)
    from s4t_edge.errors import ConfigError

    with pytest.raises(ConfigError):
        optimizer_spec({"name": "rmsprop"})


# ============================================================================================
# 2. Fake TensorRT + host-memory CUDA (trt_fakes.py): the backend's own logic, end to end on the CPU


@pytest.fixture
def fake_trt(monkeypatch: pytest.MonkeyPatch) -> Iterator[types.ModuleType]:
    trt = fake_tensorrt()
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    yield trt


@pytest.fixture
def driver() -> HostDriver:
    return HostDriver()


def _engine_names(art: Path) -> dict[str, dict[str, Any]]:
    return {e["key"]["graph"]: e for e in EngineCache.for_artifact(art).entries()}


def test_build_then_cached_then_forced(
    fake_trt: Any, driver: HostDriver, toy_artifact: Path
) -> None:
    lines: list[str] = []
    report = build_engines(
        toy_artifact, BuildConfig(workspace_mib=64), driver=driver, log=lines.append
    )
    assert [e["graph"] for e in report.engines] == ["backbone", "step", "predict", "update-sgd"]
    assert all(e["built"] for e in report.engines) and len(fake_trt.builds) == 4
    assert report.device["name"] == "FakeGPU" and report.tensorrt == "10.3.0.30"
    assert any("backbone" in line and "built" in line for line in lines)
    # Workspace in bytes; TF32 cleared everywhere (fp32 requested); no FP16 flag anywhere; every
    # graph strongly typed, since 10.3 offers it (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)).
    for _model, net_flags, flags, workspace in fake_trt.builds:
        assert workspace == 64 << 20 and "TF32" not in flags and "FP16" not in flags
        assert net_flags == 1 << 1
    timing = Path(report.timing_cache)
    assert timing.parent == toy_artifact / "engines" and timing.read_bytes().startswith(b".")
    again = build_engines(toy_artifact, BuildConfig(), driver=driver)
    assert not any(e["built"] for e in again.engines) and len(fake_trt.builds) == 4
    forced = build_engines(toy_artifact, BuildConfig(force=True), driver=driver)
    assert all(e["built"] for e in forced.engines) and len(fake_trt.builds) == 8


def test_fp16_rebuilds_only_the_backbone_and_never_touches_step(
    fake_trt: Any, driver: HostDriver, toy_artifact: Path
) -> None:
    build_engines(toy_artifact, BuildConfig(), driver=driver)
    fake_trt.builds.clear()
    report = build_engines(toy_artifact, BuildConfig(fp16=True), driver=driver)
    built = {e["graph"]: e for e in report.engines if e["built"]}
    assert list(built) == ["backbone"] and built["backbone"]["precision"] == "fp16-strongly-typed"
    (model, net_flags, flags, _ws) = fake_trt.builds[0]
    assert net_flags == 1 << 1 and not {"FP16", "OBEY"} & flags
    plan = Path(built["backbone"]["file"]).read_bytes()
    header = json.loads(plan[len(b"FAKEPLAN") :].split(b"\n", 1)[0])
    assert header["outputs"] == {"cut/feat": "float32"}  # the cut stays fp32 at the boundary
    assert header["layer_types"] == {}  # precision is in the graph, not in layer constraints
    assert {i.name: i.data_type for i in model.graph.initializer}["half"] == TensorProto.FLOAT16
    # fp32 engines of the other graphs remain valid and are kept next to the fp16 backbone.
    graphs = [
        e["key"]["graph"] + ":" + e["key"]["precision"]
        for e in EngineCache.for_artifact(toy_artifact).entries()
    ]
    assert sorted(graphs) == sorted(
        [
            "backbone:fp32",
            "backbone:fp16-strongly-typed",
            "step:fp32",
            "predict:fp32",
            "update-sgd:fp32",
        ]
    )
    assert EngineCache.for_artifact(toy_artifact).default_build()["fp16"] is True
    assert not list((toy_artifact / "engines").glob(".build-*")), "scratch dirs are removed"


def test_weak_typing_only_where_the_builder_has_no_strong_typing(
    monkeypatch: pytest.MonkeyPatch, driver: HostDriver, toy_artifact: Path
) -> None:
    """A TensorRT without STRONGLY_TYPED: the FP16 flag, precision constraints, fp32 cut pinned."""
    trt = fake_tensorrt("10.3.0.30", has_strong_typing=False)
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = build_engines(toy_artifact, BuildConfig(fp16=True), driver=driver)
    backbone = next(e for e in report.engines if e["graph"] == "backbone")
    assert backbone["precision"] == "fp16"
    assert report.typing == "weak"
    (_model, net_flags, flags, _ws) = trt.builds[0]
    assert {"FP16", "OBEY"} <= flags and net_flags == 0
    header = json.loads(Path(backbone["file"]).read_bytes()[len(b"FAKEPLAN") :].split(b"\n", 1)[0])
    assert header["outputs"] == {"cut/feat": "float32"} and header["layer_types"] == {
        "0": "float32"
    }
    for _model, net_flags, flags, _ws in trt.builds[1:]:  # fp32 graphs: no precision flags
        assert net_flags == 0 and "FP16" not in flags


@pytest.mark.parametrize(
    ("version", "strong_flag", "fp16_flag", "expected", "net_flags"),
    [
        ("10.3.0.30", True, True, "fp16-strongly-typed", 2),  # JetPack 6.1/6.2
        ("10.13.3.9", True, True, "fp16-strongly-typed", 2),  # JetPack 7.1
        ("11.0.0", True, False, "fp16-strongly-typed", 2),  # flag accepted, ignored
        ("11.2.0", False, False, "fp16-strongly-typed", 0),  # always strongly typed
        ("10.3.0.30", False, True, "fp16", 0),  # no strong typing: the weak path
    ],
)
def test_one_build_path_per_tensorrt_family(
    version: str, strong_flag: bool, fp16_flag: bool, expected: str, net_flags: int
) -> None:
    from s4t_edge.runtime.backends.tensorrt.compat import network_flags

    trt = fake_tensorrt(version, has_fp16_flag=fp16_flag, has_strong_typing=strong_flag)
    cfg = BuildConfig(fp16=True)
    backbone = graph_recipe("backbone", cfg, trt)
    assert backbone.precision == expected and backbone.fp16_flag == (expected == "fp16")
    for g in ("step", "predict", "update-sgd"):
        recipe = graph_recipe(g, cfg, trt)
        assert recipe.precision == "fp32" and not recipe.fp16_flag and not recipe.tf32
        assert recipe.strongly_typed == (expected != "fp16")
        assert network_flags(trt, recipe.strongly_typed) == net_flags
    assert graph_recipe("predict", BuildConfig(tf32=True), trt).precision == "tf32"
    assert graph_recipe("step", BuildConfig(tf32=True), trt).precision == "fp32"


def test_fp16_without_strong_typing_or_the_flag_is_refused() -> None:
    from s4t_edge.errors import ConfigError

    trt = fake_tensorrt("10.3.0.30", has_fp16_flag=False, has_strong_typing=False)
    with pytest.raises(ConfigError, match="neither strongly typed networks nor the FP16"):
        graph_recipe("backbone", BuildConfig(fp16=True), trt)
    assert graph_recipe("backbone", BuildConfig(), trt).precision == "fp32"


def test_tensorrt_11_builds_and_runs_without_removed_apis(
    monkeypatch: pytest.MonkeyPatch, driver: HostDriver, toy_artifact: Path
) -> None:
    """11.x has no BuilderFlag.FP16/OBEY_PRECISION_CONSTRAINTS, no device_memory_size and no
    layer output types on (always strongly typed) networks: the fake lacks or refuses them."""
    trt = fake_tensorrt("11.0.0", has_strong_typing=False)
    assert not hasattr(trt.BuilderFlag, "FP16")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    report = build_engines(toy_artifact, BuildConfig(fp16=True), driver=driver)
    assert [e["precision"] for e in report.engines] == ["fp16-strongly-typed"] + ["fp32"] * 3
    assert report.typing == "strong"
    assert all(net == 0 and "FP16" not in flags for _m, net, flags, _w in trt.builds)
    trt_s = load(toy_artifact, backend="tensorrt", driver=driver)
    ort_s = load(toy_artifact, backend="onnxruntime", providers=["CPUExecutionProvider"])
    try:
        image, noises = _batch()
        cut_t, cut_o = trt_s.backbone(image), ort_s.backbone(image)
        for name, ref in cut_o.to_numpy().items():
            got = np.asarray(cut_t.tensors[name])
            assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max(), name
        assert trt_s.backend.memory_info()["activations"] > 0
    finally:
        trt_s.close()


def test_trt_or_gpu_change_rebuilds_everything(
    monkeypatch: pytest.MonkeyPatch, driver: HostDriver, toy_artifact: Path
) -> None:
    trt = fake_tensorrt("10.3.0.30")
    monkeypatch.setitem(sys.modules, "tensorrt", trt)
    build_engines(toy_artifact, BuildConfig(), driver=driver)
    newer = fake_tensorrt("10.4.0.26")
    monkeypatch.setitem(sys.modules, "tensorrt", newer)
    report = build_engines(toy_artifact, BuildConfig(), driver=driver)
    assert all(e["built"] and "trt_version" in e["reason"] for e in report.engines)
    report = build_engines(toy_artifact, BuildConfig(), driver=HostDriver(gpu="Thor", cc="10.1"))
    assert all(e["built"] and "gpu_name" in e["reason"] for e in report.engines)
    # The artifact now holds engines for both GPUs; each is used only on its own.
    assert len(EngineCache.for_artifact(toy_artifact).entries()) == 12


def test_changed_graph_is_rebuilt(fake_trt: Any, driver: HostDriver, tmp_path: Path) -> None:
    art = build_toy_artifact(tmp_path / "a", optimizer={"name": "adam", "lr": 0.01})
    build_engines(art, BuildConfig(), driver=driver)
    art2 = build_toy_artifact(tmp_path / "a", tokens=6)  # re-export in place: noise shape changes
    report = build_engines(art2, BuildConfig(), driver=driver)
    built = {e["graph"]: e["reason"] for e in report.engines if e["built"]}
    assert built["step"] == "stale engine (the graph changed)"
    assert "backbone" not in built and "predict" not in built  # those graphs did not change
    assert "update-sgd" in built  # the optimiser changed (adam -> sgd)


# ------------------------------------------------------------------------------ runner


@pytest.fixture
def sessions(fake_trt: Any, driver: HostDriver, toy_artifact: Path) -> Iterator[tuple[Any, Any]]:
    trt_sess = load(toy_artifact, backend="tensorrt", driver=driver)
    ort_sess = load(toy_artifact, backend="onnxruntime")
    yield trt_sess, ort_sess
    trt_sess.close()


def _batch(seed: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    image = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    noises = [rng.random((2, 4), dtype=np.float32) for _ in range(40)]
    return image, noises


def test_three_graphs_match_onnxruntime(sessions: tuple[Any, Any]) -> None:
    trt_s, ort_s = sessions
    image, noises = _batch()
    theta = trt_s.source_theta()
    cut_t, cut_o = trt_s.backbone(image), ort_s.backbone(image)
    np.testing.assert_allclose(
        cut_t.to_numpy()["cut/feat"], cut_o.to_numpy()["cut/feat"], rtol=1e-6
    )
    r_t, r_o = trt_s.step(cut_t, theta, noises[0]), ort_s.step(cut_o, theta, noises[0])
    assert r_t.loss == pytest.approx(r_o.loss, rel=1e-6)
    assert r_t.task_losses == pytest.approx(r_o.task_losses, rel=1e-6)
    assert set(r_t.grads) == set(theta)
    for k in theta:
        np.testing.assert_allclose(r_t.grads[k], r_o.grads[k], rtol=1e-5, atol=1e-8)
    p_t, p_o = trt_s.predict(cut_t, theta), ort_s.predict(cut_o, theta)
    assert set(p_t) == {"semseg", "depth"}
    for k in p_o:
        np.testing.assert_allclose(p_t[k], p_o[k], rtol=1e-6, atol=1e-7)
    # A Cut from another backend (numpy arrays) is accepted and gives the same numbers.
    r_x = trt_s.step(cut_o, theta, noises[0])
    assert r_x.loss == pytest.approx(r_o.loss, rel=1e-6)
    info = trt_s.describe()
    assert info["backend"] == "tensorrt" and info["precision_step"] == "fp32"
    assert int(info["device_buffers_bytes"]) > 0


def _numpy_trajectory(
    ort_s: Any,
    cut: Any,
    theta: dict[str, np.ndarray],
    noises: list[np.ndarray],
    opt: dict[str, Any],
) -> tuple[dict[str, np.ndarray], list[float], Any]:
    optim = OptimizerConfig.from_dict(opt).build()
    theta = {k: v.copy() for k, v in theta.items()}
    losses = []
    for noise in noises:
        res = ort_s.step(cut, theta, noise)
        losses.append(res.loss)
        optim.step(theta, res.grads)
    return theta, losses, optim


@pytest.mark.parametrize(
    "opt",
    [
        {"name": "sgd", "lr": 0.5},
        {"name": "sgd", "lr": 0.2, "momentum": 0.9, "nesterov": True, "weight_decay": 0.01},
        {"name": "adam", "lr": 0.01, "weight_decay": 0.001},
    ],
)
def test_run_steps_follows_the_onnxruntime_trajectory(
    sessions: tuple[Any, Any], opt: dict[str, Any]
) -> None:
    trt_s, ort_s = sessions
    image, noises = _batch(1)
    theta0 = trt_s.source_theta()
    cut_t, cut_o = trt_s.backbone(image), ort_s.backbone(image)
    expected, exp_losses, optim = _numpy_trajectory(ort_s, cut_o, theta0, noises, opt)
    res = trt_s.backend.run_steps(cut_t, theta0, noises, opt)
    assert res.actions == ["accept"] * 40 and res.rejected == 0
    assert len(res.step_ms) == 40 and all(t >= 0 for t in res.step_ms)
    np.testing.assert_allclose(res.losses, exp_losses, rtol=1e-4)
    for k in expected:
        np.testing.assert_allclose(res.theta[k], expected[k], rtol=1e-4, atol=1e-6)
        assert not np.allclose(res.theta[k], theta0[k]), "θ must have moved"
    # The state comes back in Optimizer.state_dict() format and continues the trajectory.
    assert res.state["steps"] == 40
    ref_state = optim.state_dict()
    assert set(res.state["state"]) == set(ref_state["state"])
    for name, slots in ref_state["state"].items():
        for slot, value in slots.items():
            np.testing.assert_allclose(res.state["state"][name][slot], value, rtol=1e-4, atol=1e-7)
    more = trt_s.backend.run_steps(cut_t, res.theta, noises[:3], opt, res.state)
    expected2 = {k: v.copy() for k, v in expected.items()}
    for noise in noises[:3]:
        optim.step(expected2, ort_s.step(cut_o, expected2, noise).grads)
    for k in expected2:
        np.testing.assert_allclose(more.theta[k], expected2[k], rtol=1e-4, atol=1e-6)


def test_run_steps_and_host_steps_agree(sessions: tuple[Any, Any]) -> None:
    """The fast path and the plain `step` interface of the same backend follow one trajectory."""
    trt_s, _ = sessions
    image, noises = _batch(2)
    theta0 = trt_s.source_theta()
    cut = trt_s.backbone(image)
    expected, _, _ = _numpy_trajectory(trt_s, cut, theta0, noises[:10], {"name": "sgd", "lr": 0.5})
    res = trt_s.backend.run_steps(cut, theta0, noises[:10])  # manifest optimiser: sgd lr 0.5
    for k in expected:
        np.testing.assert_allclose(res.theta[k], expected[k], rtol=1e-5, atol=1e-7)


def test_run_steps_guards(sessions: tuple[Any, Any]) -> None:
    trt_s, _ = sessions
    image, noises = _batch(3)
    theta0 = trt_s.source_theta()
    cut = trt_s.backbone(image)
    noises = noises[:6]
    noises[2] = noises[2].copy()
    noises[2][0, 0] = np.nan  # poisons the loss of step 2
    seen = []

    def guard(report: Any) -> str | None:
        seen.append(report)
        return "accept"  # even an explicit accept of a non-finite step is overridden

    res = trt_s.backend.run_steps(cut, theta0, noises, guard=guard)
    assert res.actions == ["accept", "accept", "reject", "accept", "accept", "accept"]
    assert not seen[2].finite and seen[1].finite and np.isnan(res.losses[2])
    # Rejecting step 2 means the result equals 5 clean steps.
    clean = [n for i, n in enumerate(noises) if i != 2]
    ref = trt_s.backend.run_steps(cut, theta0, clean)
    for k in ref.theta:
        np.testing.assert_allclose(res.theta[k], ref.theta[k], rtol=1e-6)
    assert res.state["steps"] == 5

    # "reset" restores the source θ (and zeroes the optimiser state); "stop" ends early.
    source = {k: v + 1.0 for k, v in theta0.items()}
    res = trt_s.backend.run_steps(
        cut, theta0, noises[:2], {"name": "adam", "lr": 0.1}, source_theta=source,
        guard=lambda r: "reset" if r.index == 1 else None,
    )  # fmt: skip
    assert res.actions == ["accept", "reset"] and res.state["steps"] == 0
    for k in source:
        np.testing.assert_array_equal(res.theta[k], source[k])
    res = trt_s.backend.run_steps(cut, theta0, noises[3:], guard=lambda r: "stop")
    assert res.actions == ["stop"] and res.state["steps"] == 0
    for k in theta0:
        np.testing.assert_array_equal(res.theta[k], theta0[k])
    with pytest.raises(Exception, match="guard returned"):
        trt_s.backend.run_steps(cut, theta0, noises[3:], guard=lambda r: "maybe")
    empty = trt_s.backend.run_steps(cut, theta0, [])
    assert empty.losses == [] and empty.state["steps"] == 0


def test_zero_copy_on_integrated_gpus(fake_trt: Any, toy_artifact: Path) -> None:
    integrated = HostDriver(integrated=True)
    discrete = HostDriver(integrated=False)
    image, noises = _batch(4)
    results = []
    for drv in (integrated, discrete):
        with load(toy_artifact, backend="tensorrt", driver=drv) as s:
            assert s.backend.zero_copy is drv.integrated
            cut = s.backbone(image)
            drv.copies = 0
            s.predict(cut, s.source_theta())
            results.append((drv.copies, s.backend.run_steps(cut, s.source_theta(), noises[:5])))
    (zc_copies, zc_res), (dc_copies, dc_res) = results
    # Discrete: θ up + predictions down; integrated: only θ up (predictions are mapped memory).
    assert dc_copies == 2 and zc_copies == 1
    for k in zc_res.theta:
        np.testing.assert_array_equal(zc_res.theta[k], dc_res.theta[k])


def test_close_frees_every_buffer(fake_trt: Any, driver: HostDriver, toy_artifact: Path) -> None:
    s = load(toy_artifact, backend="tensorrt", driver=driver)
    image, noises = _batch(5)
    cut = s.backbone(image)
    s.backend.run_steps(cut, s.source_theta(), noises[:3], {"name": "adam", "lr": 0.1})
    cut2 = s.backbone(image)
    assert driver.live
    s.close()
    s.close()  # idempotent
    del cut
    gc.collect()
    assert not driver.live, f"{len(driver.live)} allocations leaked"
    with pytest.raises(BackendError, match="closed"):
        s.backend.step(cut2, s.source_theta(), noises[0])


def test_cut_arenas_are_recycled(fake_trt: Any, driver: HostDriver, toy_artifact: Path) -> None:
    with load(toy_artifact, backend="tensorrt", driver=driver) as s:
        image, _ = _batch(6)
        s.backbone(image)
        gc.collect()
        baseline = len(driver.live)
        for _ in range(5):
            s.backbone(image)  # the previous Cut is dropped each time
            gc.collect()
        assert len(driver.live) <= baseline + 1
        # A tensor kept after its Cut is dropped keeps its batch: its arena is not recycled.
        first = s.backbone(image).tensors["cut/feat"]
        kept = np.asarray(first).copy()
        gc.collect()
        s.backbone(image + 1.0)
        np.testing.assert_array_equal(np.asarray(first), kept)


def test_bad_inputs_are_one_line_errors(sessions: tuple[Any, Any]) -> None:
    trt_s, _ = sessions
    be = trt_s.backend
    image, noises = _batch(7)
    with pytest.raises(BackendError, match="static"):
        be.backbone(image[:1])
    cut = be.backbone(image)
    theta = trt_s.source_theta()
    with pytest.raises(BackendError, match="missing"):
        be.step(cut, {"head.weight": theta["head.weight"]}, noises[0])
    with pytest.raises(BackendError, match="mask noise"):
        be.step(cut, theta, noises[0][:, :2])
    with pytest.raises(BackendError, match="cut tensor"):
        be.step(type(cut)(tensors={}, batch=2), theta, noises[0])


def test_build_never_requires_prebuilt_engines(
    fake_trt: Any, driver: HostDriver, toy_artifact: Path
) -> None:
    with pytest.raises(ArtifactError, match="s4t-edge build"):
        TensorRTBackend(Artifact.load(toy_artifact), build="never", driver=driver)
    build_engines(toy_artifact, BuildConfig(), driver=driver)
    fake_trt.builds.clear()
    with TensorRTBackend(Artifact.load(toy_artifact), build="never", driver=driver):
        pass
    assert not fake_trt.builds


def test_runner_reuses_build_defaults(
    fake_trt: Any, driver: HostDriver, toy_artifact: Path
) -> None:
    build_engines(toy_artifact, BuildConfig(fp16=True), driver=driver)
    fake_trt.builds.clear()
    with load(toy_artifact, backend="tensorrt", driver=driver) as s:
        assert s.backend.build_config.fp16 is True
        assert s.describe()["precision_backbone"] == "fp16-strongly-typed"
    assert not fake_trt.builds, "the engines built by `s4t-edge build` are reused as they are"


def test_engine_not_matching_the_manifest_is_refused(
    fake_trt: Any, driver: HostDriver, toy_artifact: Path
) -> None:
    build_engines(toy_artifact, BuildConfig(), driver=driver)
    cache = EngineCache.for_artifact(toy_artifact)
    entries = _engine_names(toy_artifact)
    step_file = cache.root / entries["step"]["file"]
    predict_plan = (cache.root / entries["predict"]["file"]).read_bytes()
    step_file.write_bytes(predict_plan)  # a wrong engine under the right name ...
    index = json.loads(cache.index_path.read_text())
    for entry in index["engines"].values():
        if entry["key"]["graph"] == "step":
            import hashlib

            entry["sha256"] = hashlib.sha256(predict_plan).hexdigest()  # ... and a "valid" index
    cache.index_path.write_text(json.dumps(index))
    with pytest.raises(ArtifactError, match="does not match the manifest.*--force"):
        load(toy_artifact, backend="tensorrt", driver=driver, build="never")


def test_undeserializable_engine_is_reported(
    fake_trt: Any, driver: HostDriver, toy_artifact: Path
) -> None:
    build_engines(toy_artifact, BuildConfig(), driver=driver)
    cache = EngineCache.for_artifact(toy_artifact)
    entry = _engine_names(toy_artifact)["backbone"]
    (cache.root / entry["file"]).write_bytes(b"garbage")
    # The sha256 no longer matches: auto mode rebuilds instead of loading garbage.
    fake_trt.builds.clear()
    with load(toy_artifact, backend="tensorrt", driver=driver):
        pass
    assert len(fake_trt.builds) == 1


@pytest.mark.slow
def test_fake_engines_on_a_real_export(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole path on a real exported S4T model (tiny, untrained), with the fake TensorRT.

    Checks what the toy artifact cannot: the fp16 rewrite of a real backbone (static TensorRT
    rules, accuracy), buffer plans and update graphs for a real θ, and the device-side
    trajectory against ONNX Runtime + numpy.  ~1 minute on two CPU cores (the export).
    """
    from s4t_edge.export.exporter import ExportConfig, export_model
    from s4t_edge.export.trt_rules import check_tensorrt
    from s4t_edge.models import build_model
    from s4t_edge.train.config import S4TConfig

    art = export_model(
        build_model("tiny"), S4TConfig(), tmp_path / "art", ExportConfig(batch=2, validate=False)
    ).out_dir
    a = Artifact.load(art)
    half, _ = convert_to_fp16(onnx.load(str(a.graph_path("backbone"))))
    assert not [f for f in check_tensorrt(half) if f.severity == "error"]
    monkeypatch.setitem(sys.modules, "tensorrt", fake_tensorrt("10.12.0"))
    drv = HostDriver()
    build_engines(art, BuildConfig(fp16=True), driver=drv)
    trt_s = load(art, backend="tensorrt", driver=drv)
    ort_s = load(art, backend="onnxruntime", providers=["CPUExecutionProvider"])
    try:
        assert trt_s.describe()["precision_backbone"] == "fp16-strongly-typed"
        rng = np.random.default_rng(0)
        image = rng.standard_normal(a.input.shape).astype(np.float32)
        noises = [ort_s.mask_noise(rng) for _ in range(10)]
        theta = ort_s.source_theta()
        cut_t, cut_o = trt_s.backbone(image), ort_s.backbone(image)
        for name, ref in cut_o.to_numpy().items():
            got = np.asarray(cut_t.tensors[name])
            assert np.abs(got - ref).max() <= 1e-2 * np.abs(ref).max(), name
        opt = {"name": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 1e-6}
        expected, losses, _ = _numpy_trajectory(ort_s, cut_o, theta, noises, opt)
        res = trt_s.backend.run_steps(cut_o, theta, noises, opt)
        np.testing.assert_allclose(res.losses, losses, rtol=1e-5)
        for k, ref in expected.items():
            np.testing.assert_allclose(res.theta[k], ref, rtol=1e-5, atol=1e-7)
    finally:
        trt_s.close()


# ============================================================================================
# 3. Real TensorRT on a GPU (skipped where either is missing)


def _real_trt_reason() -> str | None:
    if importlib.util.find_spec("tensorrt") is None:
        return (
            "TensorRT is not installed (pip install 's4t-edge[tensorrt]' on x86-64, JetPack's "
            "python3-libnvinfer on Jetson)"
        )
    try:
        get_driver().device_info()
    except BackendError as e:
        return f"no usable CUDA GPU: {e}"
    return None


_REASON = _real_trt_reason()


def real_trt(test: Any) -> Any:
    """Mark a test as needing TensorRT and a GPU; skip it (saying why) where either is absent."""
    test = pytest.mark.tensorrt(pytest.mark.gpu(test))
    return pytest.mark.skipif(_REASON is not None, reason=_REASON or "")(test)


@pytest.fixture(scope="module")
def exported_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny S4T model, trained for a few steps on synthetic data, exported for batch 2."""
    return _train_and_export(tmp_path_factory.mktemp("trt_real"))


def _train_and_export(root: Path) -> Path:
    from s4t_edge.data import synth
    from s4t_edge.export.exporter import ExportConfig, export_run
    from s4t_edge.models.config import make_config
    from s4t_edge.train.config import S4TConfig, TrainConfig
    from s4t_edge.train.loop import train

    model_cfg = make_config("tiny")
    ds = synth("source", 32, size=model_cfg.input_size[0], seed=0)
    train(
        TrainConfig(steps=20, batch_size=8, val_every=0, checkpoint_every=0, warmup_steps=2),
        model_cfg,
        S4TConfig(),
        ds,
        None,
        root / "run",
        progress=False,
        device="cpu",
    )
    export_run(root / "run", root / "art", ExportConfig(batch=2))
    return root / "art"


@real_trt
@pytest.mark.parametrize("fp16", [False, True])
def test_real_engines_match_onnxruntime(exported_artifact: Path, fp16: bool) -> None:
    """Forward and gradients of TensorRT engines against ONNX Runtime (CPU) on a real export."""
    build_engines(exported_artifact, BuildConfig(fp16=fp16))
    trt_s = load(exported_artifact, backend="tensorrt", fp16=fp16, build="never")
    ort_s = load(exported_artifact, backend="onnxruntime", providers=["CPUExecutionProvider"])
    try:
        rng = np.random.default_rng(0)
        image = rng.standard_normal(ort_s.artifact.input.shape).astype(np.float32)
        noise = ort_s.mask_noise(rng)
        theta = ort_s.source_theta()
        cut_t, cut_o = trt_s.backbone(image), ort_s.backbone(image)
        # Forward: fp32 engines (TF32 off) within 1e-4 of each tensor's scale; the fp16 backbone
        # within 2e-2 (half precision through a few layers).
        tol = 2e-2 if fp16 else 1e-4
        for name, ref in cut_o.to_numpy().items():
            got = np.asarray(cut_t.tensors[name])
            assert np.abs(got - ref).max() <= tol * (np.abs(ref).max() + 1e-6), name
        # Step and predict on the *same* cut (ONNX Runtime's): only those engines are compared.
        # Gradients within 1e-3 of their scale (fp32 with different reduction orders).
        r_t, r_o = trt_s.step(cut_o, theta, noise), ort_s.step(cut_o, theta, noise)
        assert r_t.loss == pytest.approx(r_o.loss, rel=1e-3)
        for k, g in r_o.grads.items():
            assert np.abs(r_t.grads[k] - g).max() <= 1e-3 * (np.abs(g).max() + 1e-8), k
        p_t, p_o = trt_s.predict(cut_o, theta), ort_s.predict(cut_o, theta)
        for k, ref in p_o.items():
            assert np.abs(p_t[k] - ref).max() <= 1e-3 * (np.abs(ref).max() + 1e-6), k
    finally:
        trt_s.close()


@real_trt
def test_real_40_step_trajectory_matches_onnxruntime(exported_artifact: Path) -> None:
    """40 device-side steps (run_steps) against 40 host steps through ONNX Runtime + numpy."""
    trt_s = load(exported_artifact, backend="tensorrt")
    ort_s = load(exported_artifact, backend="onnxruntime", providers=["CPUExecutionProvider"])
    try:
        rng = np.random.default_rng(1)
        image = rng.standard_normal(ort_s.artifact.input.shape).astype(np.float32)
        noises = [ort_s.mask_noise(rng) for _ in range(40)]
        opt = dict(ort_s.artifact.s4t["optimizer"])
        theta0 = ort_s.source_theta()
        cut_o = ort_s.backbone(image)
        expected, exp_losses, _ = _numpy_trajectory(ort_s, cut_o, theta0, noises, opt)
        res = trt_s.backend.run_steps(trt_s.backbone(image), theta0, noises, opt)
        assert res.rejected == 0
        np.testing.assert_allclose(res.losses, exp_losses, rtol=1e-3)
        for k, ref in expected.items():
            rel = np.abs(res.theta[k] - ref).max() / (np.abs(ref).max() + 1e-12)
            assert rel <= 1e-4, (k, rel)
        # The plain step interface of the TensorRT backend follows the same trajectory.
        host, _, _ = _numpy_trajectory(trt_s, trt_s.backbone(image), theta0, noises, opt)
        for k, ref in expected.items():
            rel = np.abs(host[k] - ref).max() / (np.abs(ref).max() + 1e-12)
            assert rel <= 1e-4, (k, rel)
    finally:
        trt_s.close()


def test_adapter_uses_the_device_fast_path_and_matches_the_host_loop(
    sessions: tuple[Any, Any],
) -> None:
    """`Adapter` drives TensorRT through `run_steps` and lands on the same θ as the ORT host loop."""
    from s4t_edge.runtime import Adapter

    trt_s, ort_s = sessions
    calls: list[int] = []
    original = trt_s.backend.run_steps

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(len(args[2]))
        return original(*args, **kwargs)

    trt_s.backend.run_steps = counting
    image, _ = _batch(4)
    frames = image  # preprocessed float batch is accepted by the Adapter as well
    a_trt = Adapter(trt_s, steps=12, seed=5, optimizer={"name": "sgd", "lr": 0.5})
    a_ort = Adapter(ort_s, steps=12, seed=5, optimizer={"name": "sgd", "lr": 0.5})
    r_trt, r_ort = a_trt.adapt(frames), a_ort.adapt(frames)
    assert calls == [12]
    np.testing.assert_allclose(r_trt.loss_trace, r_ort.loss_trace, rtol=1e-4)
    for k in a_ort.theta:
        np.testing.assert_allclose(a_trt.theta[k], a_ort.theta[k], rtol=1e-4, atol=1e-6)
        assert not np.allclose(a_ort.theta[k], ort_s.source_theta()[k])
