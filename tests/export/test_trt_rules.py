"""The TensorRT operator-matrix checker: one small hand-made graph per rule, per version.

Each case builds the smallest graph that breaks one rule and asserts that the checker reports
exactly that rule (and nothing else of severity error that the case did not mean), plus the
version whose table lifts it.  A coverage test makes sure every rule of every table has a case.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import onnx
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

from s4t_edge.errors import ConfigError
from s4t_edge.export.trt_matrix import VERSIONS, normalize_version, table
from s4t_edge.export.trt_rules import check_tensorrt

F, I64, B = TP.FLOAT, TP.INT64, TP.BOOL


def vi(name: str, dtype: int, shape: list[int | str] | None) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, dtype, shape)


def const(name: str, value, dtype=None) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(value, dtype=dtype), name)


def model(nodes, inputs, outputs, inits=(), opset: int = 18, functions=()) -> onnx.ModelProto:
    graph = helper.make_graph(list(nodes), "g", list(inputs), list(outputs), list(inits))
    m = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", opset)]
        + [helper.make_opsetid(f.domain, 1) for f in functions],
        functions=list(functions),
    )
    m.ir_version = 10
    return m


def node(op: str, ins: list[str], outs: list[str], name: str = "n", **attrs) -> onnx.NodeProto:
    return helper.make_node(op, ins, outs, name=name, **attrs)


def unary(op: str, x_shape=(1, 2, 4, 4), y_shape=None, dtype=F, opset=18, extra=(), **attrs):
    """X -> op(X, *extra inputs) -> Y; `extra` are (name, value or ValueInfo) pairs."""
    inputs, inits, names = [vi("X", dtype, list(x_shape))], [], ["X"]
    for name, value in extra:
        names.append(name)
        if name == "":
            continue
        if isinstance(value, onnx.ValueInfoProto):
            inputs.append(value)
        else:
            inits.append(value)
    return model(
        [node(op, names, ["Y"], **attrs)], inputs, [vi("Y", dtype, y_shape)], inits, opset=opset
    )


# ============================================================================================
# Graphs, one per rule


def _acceptance() -> onnx.ModelProto:
    """The issue's acceptance graph: four defects, four findings."""
    nodes = [
        node("LayerNormalization", ["X", "s", "b"], ["Y", "Mean", "Inv"], name="ln", axis=-1),
        node("Cast", ["D"], ["Df"], name="cast", to=F),
        node("Pad", ["X", "pads", "", "axes"], ["P"], name="pad"),
        node("Equal", ["B1", "B2"], ["E"], name="eq"),
    ]
    inputs = [vi("X", F, [2, 4]), vi("D", TP.DOUBLE, [2]), vi("axes", I64, [1])]
    inputs += [vi("B1", B, [3]), vi("B2", B, [3])]
    outputs = [vi(n, F, None) for n in ("Y", "Mean", "Inv", "Df", "P")] + [vi("E", B, None)]
    inits = [const("s", np.ones(4, np.float32)), const("b", np.zeros(4, np.float32))]
    inits.append(const("pads", [1, 1], np.int64))
    return model(nodes, inputs, outputs, inits)


def _lstm(**attrs) -> onnx.ModelProto:
    nodes = [node("LSTM", ["X", "W", "R"], ["Y"], hidden_size=2, **attrs)]
    d = 2 if attrs.get("direction") == "bidirectional" else 1
    inits = [
        const("W", np.zeros((d, 8, 3), np.float32)),
        const("R", np.zeros((d, 8, 2), np.float32)),
    ]
    return model(nodes, [vi("X", F, [4, 1, 3])], [vi("Y", F, None)], inits)


def _gru_rnn(op: str) -> onnx.ModelProto:
    gates = {"GRU": 3, "RNN": 1}[op]
    acts = {"GRU": ["Sigmoid", "Tanh", "Relu", "Tanh"], "RNN": ["Tanh", "Relu"]}[op]
    inits = [
        const("W", np.zeros((2, gates * 2, 3), np.float32)),
        const("R", np.zeros((2, gates * 2, 2), np.float32)),
    ]
    n = node(op, ["X", "W", "R"], ["Y"], hidden_size=2, direction="bidirectional", activations=acts)
    return model([n], [vi("X", F, [4, 1, 3])], [vi("Y", F, None)], inits)


def _if_same_names() -> onnx.ModelProto:
    then_g = helper.make_graph(
        [node("Identity", ["X"], ["out"], name="t")], "then", [], [vi("out", F, [2])]
    )
    else_g = helper.make_graph(
        [node("Neg", ["X"], ["out"], name="e")], "else", [], [vi("out", F, [2])]
    )
    n = node("If", ["C"], ["Y"], then_branch=then_g, else_branch=else_g)
    return model([n], [vi("C", B, []), vi("X", F, [2])], [vi("Y", F, [2])])


def _resize(**attrs) -> onnx.ModelProto:
    extra = [("", None), ("", None), ("sizes", const("sizes", [1, 2, 8, 8], np.int64))]
    if "axes" in attrs:
        extra = [("", None), ("scales", const("scales", [2.0, 2.0], np.float32))]
    return unary("Resize", extra=extra, **attrs)


def _topk(k: int | None, sorted_: int = 1) -> onnx.ModelProto:
    k_in = vi("K", I64, [1]) if k is None else const("K", [k], np.int64)
    nodes = [node("TopK", ["X", "K"], ["V", "Idx"], sorted=sorted_)]
    inputs = [vi("X", F, [1, 5000])] + ([k_in] if k is None else [])
    inits = [] if k is None else [k_in]
    return model(nodes, inputs, [vi("V", F, None), vi("Idx", I64, None)], inits)


def _dyn_input(op: str, index: int, dtype=I64, shape=(1,), **attrs) -> onnx.ModelProto:
    """`op` whose input `index` is a graph input (not a build-time constant)."""
    extra = [
        (f"in{i}", vi(f"in{i}", dtype, list(shape))) if i == index else ("", None)
        for i in range(1, index + 1)
    ]
    return unary(op, extra=extra, **attrs)


def _custom_domain() -> onnx.ModelProto:
    m = unary("Relu")
    m.graph.node[0].domain = "com.microsoft"
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    return m


def _cast_chain(to: int) -> onnx.ModelProto:
    nodes = [
        node("Cast", ["X"], ["T"], name="c1", to=to),
        node("Cast", ["T"], ["Y"], name="c2", to=F),
    ]
    return model(nodes, [vi("X", F, [4])], [vi("Y", F, [4])])


def _reduce(op: str) -> onnx.ModelProto:
    return unary(op, extra=[("axes", vi("axes", I64, [1]))], keepdims=1)


def _random(op: str) -> onnx.ModelProto:
    if op.endswith("Like"):
        return unary(op, seed=1.0)
    n = node(op, [], ["Y"], shape=[2, 2], seed=1.0)
    return model([n], [], [vi("Y", F, [2, 2])])


def _qdq(op: str) -> onnx.ModelProto:
    if op == "QuantizeLinear":
        n = node(op, ["X", "s", "z"], ["Y"])
        inits = [const("s", np.float32(0.1)), const("z", np.int8(3))]
        return model([n], [vi("X", F, [4])], [vi("Y", TP.INT8, [4])], inits)
    n = node(op, ["X", "s", "z"], ["Y"])
    inits = [const("s", np.float32(0.1)), const("z", np.int8(3))]
    return model([n], [vi("X", TP.INT8, [4])], [vi("Y", F, [4])], inits)


def _stft(case: str) -> onnx.ModelProto:
    step = vi("step", I64, []) if case == "frame_step" else const("step", np.int64(2))
    window = vi("win", F, [4]) if case == "window" else const("win", np.ones(4, np.float32))
    last = 2 if case == "real" else 1
    ins = [vi("X", F, [1, 16, last])] + [
        v for v in (step, window) if isinstance(v, onnx.ValueInfoProto)
    ]
    inits = [v for v in (step, window) if not isinstance(v, onnx.ValueInfoProto)]
    n = node("STFT", ["X", "step", "win"], ["Y"], onesided=1)
    return model([n], ins, [vi("Y", F, None)], inits, opset=17)


def _attention(case: str) -> onnx.ModelProto:
    q_shape = [1, 2, 4, 8] if case != "q-rank" else [2, 4, 8]
    ins = [vi("Q", F, q_shape), vi("K", F, [1, 2, 4, 8]), vi("V", F, [1, 2, 4, 8])]
    names = ["Q", "K", "V"]
    attrs = {}
    if case == "k-rank":
        ins[1] = vi("K", F, [2, 4, 8])
    if case == "v-rank":
        ins[2] = vi("V", F, [2, 4, 8])
    if case == "inputs":
        names += ["", "pk", "pv"]
        ins += [vi("pk", F, [1, 2, 3, 8]), vi("pv", F, [1, 2, 3, 8])]
    if case == "attrs":
        attrs["softcap"] = 1.0
    outs = ["Y"] + (["pk_out", "pv_out"] if case == "outputs" else [])
    if case == "outputs":
        names += ["", "pk", "pv"]
        ins += [vi("pk", F, [1, 2, 3, 8]), vi("pv", F, [1, 2, 3, 8])]
    n = node("Attention", names, outs, **attrs)
    return model([n], ins, [vi(o, F, None) for o in outs], opset=23)


def _rotary() -> onnx.ModelProto:
    ins = [
        vi("X", F, [1, 2, 4, 8]),
        vi("cos", F, [4, 4]),
        vi("sin", F, [4, 4]),
        vi("pos", TP.INT32, [1, 4]),
    ]
    n = node("RotaryEmbedding", ["X", "cos", "sin", "pos"], ["Y"])
    return model([n], ins, [vi("Y", F, None)], opset=23)


def _tensor_scatter(case: str) -> onnx.ModelProto:
    past = [1, 2, 8, 4] if case != "past-rank" else [2, 8, 4]
    upd = [1, 2, 1, 4] if case != "update-rank" else [2, 1, 4]
    attrs = {"axis": 1} if case == "axis" else {}
    n = node("TensorScatter", ["P", "U"], ["Y"], **attrs)
    return model([n], [vi("P", F, past), vi("U", F, upd)], [vi("Y", F, None)], opset=24)


@dataclass(frozen=True)
class Case:
    rule: str
    build: Callable[[], onnx.ModelProto]
    version: str = "10.3"
    lifted_in: str | None = None
    severity: str = "error"
    also: tuple[str, ...] = ()  # other rules the graph cannot help breaking


_REDUCE_OPS = [
    f"Reduce{k}" for k in "L1 L2 LogSum LogSumExp Max Mean Min Prod Sum SumSquare".split()
]
_RANDOM_OPS = ["RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"]

CASES: list[Case] = [
    # graph-level rules
    Case("opset", lambda: unary("Relu", opset=21), lifted_in="10.15"),
    Case("domain", _custom_domain),
    Case("op:unsupported", lambda: unary("Det", x_shape=(2, 2), dtype=F)),
    Case("op:unsupported", lambda: unary("HannWindow", x_shape=()), lifted_in="10.4"),
    Case("dtype:DOUBLE", lambda: _cast_chain(TP.DOUBLE)),
    Case("dtype:UINT8", lambda: _cast_chain(TP.UINT8)),
    Case("dtype:unsupported", lambda: _cast_chain(TP.INT16)),
    # input types and output counts
    Case("Equal:types", lambda: model([node("Equal", ["A", "C"], ["Y"])], [vi("A", B, [2]), vi("C", B, [2])], [vi("Y", B, [2])])),
    Case("Cast:types", lambda: _cast_chain(TP.INT8)),
    Case("Pow:types", lambda: model([node("Pow", ["A", "C"], ["Y"])], [vi("A", TP.INT32, [2]), vi("C", TP.INT32, [2])], [vi("Y", TP.INT32, [2])]), lifted_in="10.12"),
    Case("LayerNormalization:outputs", lambda: model([node("LayerNormalization", ["X", "s"], ["Y", "M", "R"])], [vi("X", F, [2, 4])], [vi(n, F, None) for n in "YMR"], [const("s", np.ones(4, np.float32))])),
    Case("MaxPool:outputs", lambda: model([node("MaxPool", ["X"], ["Y", "Idx"], kernel_shape=[2, 2])], [vi("X", F, [1, 1, 4, 4])], [vi("Y", F, None), vi("Idx", I64, None)])),
    Case("BatchNormalization:outputs", lambda: model([node("BatchNormalization", ["X", "s", "b", "m", "v"], ["Y", "rm", "rv"], training_mode=1)], [vi("X", F, [2, 3, 2, 2])], [vi(n, F, None) for n in ("Y", "rm", "rv")], [const(n, np.ones(3, np.float32)) for n in "sbmv"]), also=("BatchNormalization:training_mode",)),
    # restrictions of the 10.1 table (10.3 with the changes up to it)
    Case("AveragePool:rank", lambda: unary("AveragePool", x_shape=(1, 2, 8), kernel_shape=[2])),
    Case("AveragePool:dilations", lambda: unary("AveragePool", kernel_shape=[2, 2], dilations=[2, 2])),
    Case("MaxPool:rank", lambda: unary("MaxPool", x_shape=(1, 2, 8), kernel_shape=[2])),
    Case("MaxPool:dilations", lambda: unary("MaxPool", kernel_shape=[2, 2], dilations=[2, 1])),
    Case("LpPool:dilations", lambda: unary("LpPool", kernel_shape=[2, 2], dilations=[2, 2])),
    Case("BatchNormalization:training_mode", lambda: model([node("BatchNormalization", ["X", "s", "b", "m", "v"], ["Y"], training_mode=1)], [vi("X", F, [2, 3, 2, 2])], [vi("Y", F, None)], [const(n, np.ones(3, np.float32)) for n in "sbmv"])),
    Case("Constant:attrs", lambda: model([node("Constant", [], ["Y"], value_string="s")], [], [vi("Y", TP.STRING, [])]), also=("dtype:unsupported",)),
    Case("CumSum:axis", lambda: _dyn_input("CumSum", 1, shape=()), lifted_in="10.8"),
    Case("DeformConv:rank", lambda: model([node("DeformConv", ["X", "W", "O"], ["Y"], kernel_shape=[1, 1, 1])], [vi("X", F, [1, 1, 2, 2, 2]), vi("O", F, [1, 3, 2, 2, 2])], [vi("Y", F, None)], [const("W", np.ones((1, 1, 1, 1, 1), np.float32))])),
    Case("DeformConv:pads", lambda: model([node("DeformConv", ["X", "W", "O"], ["Y"], kernel_shape=[1, 1], pads=[0, 0, 1, 1])], [vi("X", F, [1, 1, 2, 2]), vi("O", F, [1, 2, 4, 4])], [vi("Y", F, None)], [const("W", np.ones((1, 1, 1, 1), np.float32))])),
    Case("DequantizeLinear:zero-point", lambda: _qdq("DequantizeLinear")),
    Case("QuantizeLinear:zero-point", lambda: _qdq("QuantizeLinear")),
    Case("Dropout:training", lambda: unary("Dropout", extra=[("ratio", const("ratio", np.float32(0.5))), ("tm", const("tm", np.bool_(True)))])),
    Case("EyeLike:static", lambda: unary("EyeLike", x_shape=("n", 3))),
    Case("GridSample:rank", lambda: model([node("GridSample", ["X", "G"], ["Y"])], [vi("X", F, [1, 1, 2, 2, 2]), vi("G", F, [1, 2, 2, 2, 3])], [vi("Y", F, None)])),
    Case("GRU:activations", lambda: _gru_rnn("GRU")),
    Case("RNN:activations", lambda: _gru_rnn("RNN")),
    Case("LSTM:activations", lambda: _lstm(direction="bidirectional", activations=["Sigmoid", "Tanh", "Tanh", "Sigmoid", "Relu", "Tanh"])),
    Case("LSTM:input_forget", lambda: _lstm(input_forget=1)),
    Case("LSTM:layout", lambda: _lstm(layout=1)),
    Case("Hardmax:axis", lambda: unary("Hardmax", x_shape=(2, "n"), axis=1)),
    Case("If:branches", _if_same_names),
    Case("OneHot:depth", lambda: model([node("OneHot", ["X", "d", "vals"], ["Y"])], [vi("X", I64, [3]), vi("d", I64, [])], [vi("Y", F, None)], [const("vals", np.array([0, 1], np.float32))])),
    Case("Pad:axes", lambda: unary("Pad", extra=[("pads", const("pads", [1, 1], np.int64)), ("", None), ("axes", vi("axes", I64, [1]))]), lifted_in="10.4"),
    *[Case(f"{op}:seed", lambda op=op: _random(op), severity="warning") for op in _RANDOM_OPS],
    *[Case(f"{op}:axes", lambda op=op: _reduce(op)) for op in _REDUCE_OPS],
    Case("Resize:coordinate_transformation_mode", lambda: _resize(mode="linear", coordinate_transformation_mode="tf_crop_and_resize")),
    Case("Resize:mode", lambda: _resize(mode="cubic")),
    Case("Resize:nearest_mode", lambda: _resize(nearest_mode="round_prefer_even")),
    Case("Resize:keep_aspect_ratio_policy", lambda: _resize(keep_aspect_ratio_policy="not_larger")),
    Case("Resize:axes", lambda: _resize(axes=[3, 2])),
    Case("Resize:antialias", lambda: _resize(mode="linear", antialias=1)),
    Case("ScatterND:reduction", lambda: model([node("ScatterND", ["X", "idx", "U"], ["Y"], reduction="add")], [vi("X", F, [4]), vi("U", F, [1])], [vi("Y", F, [4])], [const("idx", [[1]], np.int64)])),
    Case("Squeeze:axes", lambda: _dyn_input("Squeeze", 1, x_shape=(1, 2)), lifted_in="10.7"),
    Case("Unsqueeze:axes", lambda: _dyn_input("Unsqueeze", 1), lifted_in="10.7"),
    Case("TopK:sorted", lambda: _topk(5, sorted_=0)),
    Case("TopK:k-limit", lambda: _topk(3840)),
    Case("TopK:k-known", lambda: _topk(None), severity="warning"),
    # restrictions of operators the changelog added (checked at the version that added them)
    Case("STFT:frame_step", lambda: _stft("frame_step"), version="10.5"),
    Case("STFT:window", lambda: _stft("window"), version="10.5"),
    Case("STFT:real", lambda: _stft("real"), version="10.5"),
    *[Case(f"Attention:{k}", lambda k=k: _attention(k), version="10.15") for k in ("q-rank", "k-rank", "v-rank", "inputs", "attrs")],
    Case("Attention:outputs", lambda: _attention("outputs"), version="10.15", also=("Attention:inputs",)),
    Case("RotaryEmbedding:position-ids", _rotary, version="10.15"),
    *[Case(f"TensorScatter:{k}", lambda k=k: _tensor_scatter(k), version="10.15") for k in ("past-rank", "update-rank", "axis")],
]  # fmt: skip


def _id(case: Case) -> str:
    return f"{case.rule}@{case.version}" + (
        "" if case.lifted_in is None else f"-lift{case.lifted_in}"
    )


@pytest.mark.parametrize("case", CASES, ids=_id)
def test_rule_is_reported_with_the_version_that_lifts_it(case: Case) -> None:
    findings = check_tensorrt(case.build(), case.version)
    hits = [f for f in findings if f.rule == case.rule]
    assert hits, f"{case.rule} not reported; got {[str(f) for f in findings]}"
    f = hits[0]
    assert f.severity == case.severity and f.version == case.version
    assert f.lifted_in == case.lifted_in, str(f)
    assert f.node and f.message and case.rule in str(f)
    assert {g.rule for g in findings} - {case.rule} == set(case.also), [str(g) for g in findings]
    if case.lifted_in is not None:  # the lifting table really passes the graph on this rule
        assert case.rule not in {g.rule for g in check_tensorrt(case.build(), case.lifted_in)}


def test_every_rule_of_every_table_has_a_breaking_graph() -> None:
    covered = {c.rule for c in CASES}
    for version in VERSIONS:
        m = table(version)
        for op, spec in m.ops.items():
            for r in spec.restrictions:
                assert f"{op}:{r.key}" in covered, f"no test graph breaks {op}:{r.key} ({version})"
            if (
                spec.outputs is not None
                and spec.outputs < 2
                and op
                in {
                    "LayerNormalization",
                    "MaxPool",
                    "BatchNormalization",
                }
            ):
                assert f"{op}:outputs" in covered


def test_acceptance_graph_has_exactly_four_findings() -> None:
    findings = check_tensorrt(_acceptance(), "10.3")
    by_rule = {f.rule: f for f in findings}
    assert sorted(by_rule) == [
        "Equal:types",
        "LayerNormalization:outputs",
        "Pad:axes",
        "dtype:DOUBLE",
    ]
    assert len(findings) == 4 and all(f.severity == "error" for f in findings)
    assert by_rule["Pad:axes"].lifted_in == "10.4" and by_rule["Pad:axes"].node == "pad"
    assert by_rule["LayerNormalization:outputs"].node == "ln"
    assert by_rule["Equal:types"].node == "eq" and "BOOL" in by_rule["Equal:types"].message
    assert "'D'" in by_rule["dtype:DOUBLE"].message
    assert all(by_rule[r].lifted_in is None for r in by_rule if r != "Pad:axes")
    # Each later table only lifts: 10.4 drops the Pad finding, 10.15 still has the other three.
    assert len(check_tensorrt(_acceptance(), "10.4")) == 3
    assert {f.rule for f in check_tensorrt(_acceptance(), "10.15")} == set(by_rule) - {"Pad:axes"}


def test_lifted_restrictions_are_silent_from_their_version() -> None:
    slice_dyn = unary(
        "Slice",
        extra=[
            ("st", const("st", [0], np.int64)),
            ("en", const("en", [1], np.int64)),
            ("axes", vi("axes", I64, [1])),
        ],
    )
    assert check_tensorrt(slice_dyn, "10.3") == []  # tensor Slice axes: 10.3 GA changelog
    pad = CASES[[c.rule for c in CASES].index("Pad:axes")].build()
    assert [f.rule for f in check_tensorrt(pad, "10.3")] == ["Pad:axes"]
    assert check_tensorrt(pad, "10.4") == []


def test_a_graph_of_supported_ops_has_no_findings() -> None:
    nodes = [
        node("Conv", ["X", "W"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        node("Relu", ["c"], ["r"], name="relu"),
        node("ReduceMean", ["r", "ax"], ["m"], name="mean", keepdims=1),
        node("Unsqueeze", ["m", "ax0"], ["u"], name="unsq"),
        node("Resize", ["r", "", "", "sz"], ["Y"], name="rs", mode="linear"),
    ]
    inits = [
        const("W", np.ones((2, 2, 3, 3), np.float32)),
        const("ax", [2, 3], np.int64),
        const("ax0", [0], np.int64),
        const("sz", [1, 2, 8, 8], np.int64),
    ]
    outs = [vi("Y", F, None), vi("u", F, None)]
    g = model(nodes, [vi("X", F, [1, 2, 4, 4])], outs, inits)
    for version in VERSIONS:
        assert check_tensorrt(g, version) == []


def test_a_constant_node_counts_as_build_time_constant() -> None:
    nodes = [
        node("Constant", [], ["axes"], name="k", value=const("v", [1], np.int64)),
        node("Pad", ["X", "pads", "", "axes"], ["Y"], name="pad"),
    ]
    g = model(nodes, [vi("X", F, [2, 4])], [vi("Y", F, None)], [const("pads", [1, 1], np.int64)])
    assert check_tensorrt(g, "10.3") == []


def test_uint8_at_the_graph_boundary_is_fine_inside_it_is_not() -> None:
    boundary = model(
        [node("Cast", ["X"], ["Y"], to=F)], [vi("X", TP.UINT8, [4])], [vi("Y", F, [4])]
    )
    assert check_tensorrt(boundary) == []
    assert [f.rule for f in check_tensorrt(_cast_chain(TP.UINT8))] == ["dtype:UINT8"]


def test_local_functions_are_checked_through_their_body() -> None:
    body = [node("LayerNormalization", ["x", "s"], ["y", "m", "r"], name="inner")]
    func = helper.make_function(
        "local", "f", ["x", "s"], ["y", "m", "r"], body, [helper.make_opsetid("", 18)]
    )
    call = helper.make_node("f", ["X", "s"], ["Y", "M", "R"], domain="local", name="call")
    g = model(
        [call],
        [vi("X", F, [2, 4])],
        [vi(n, F, None) for n in "YMR"],
        [const("s", np.ones(4, np.float32))],
        functions=[func],
    )
    rules = [(f.node, f.rule) for f in check_tensorrt(g)]
    assert rules == [("call/inner", "LayerNormalization:outputs")]


def test_tables_only_ever_lift() -> None:
    """A graph that passes 10.3 passes every later 10.x: types grow, restrictions shrink."""
    for older, newer in zip(VERSIONS, VERSIONS[1:]):
        a, b = table(older), table(newer)
        assert a.dtypes <= b.dtypes and a.opset[1] <= b.opset[1]
        for op, spec in a.ops.items():
            later = b.spec(op)
            assert later is not None and spec.types <= later.types, (op, newer)
            assert {r.key for r in later.restrictions} <= {r.key for r in spec.restrictions}


def test_versions_parse_and_unknown_ones_say_what_to_do() -> None:
    assert normalize_version("10.13.3.9") == "10.13" and normalize_version(" 10.3 ") == "10.3"
    with pytest.raises(ConfigError, match="no operator matrix for TensorRT 11.x") as e:
        normalize_version("11.0")
    assert "--trt 10.15" in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="10.3 to 10.15"):
        normalize_version("10.1")
    with pytest.raises(ConfigError, match="not a TensorRT version"):
        normalize_version("jetpack")
