"""Buffer plans derived from the manifest: names, shapes, dtypes, alignment, total bytes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.errors import ArtifactError
from s4t_edge.runtime.artifact import Artifact, TensorSpec
from s4t_edge.runtime.backends.tensorrt.buffers import (
    ALIGNMENT,
    GRAD_SQ_NAME,
    ArenaPlan,
    aligned,
    check_engine_io,
    nbytes_of,
    plan_buffers,
)


def T(name: str, shape: tuple[int, ...], dtype: str = "float32") -> TensorSpec:
    return TensorSpec(name, shape, dtype)


def test_aligned() -> None:
    assert [aligned(n) for n in (0, 1, 255, 256, 257, 1000)] == [0, 256, 256, 256, 512, 1024]
    assert aligned(5, 4) == 8
    with pytest.raises(ValueError):
        aligned(10, 3)


def test_nbytes_of_scalar_and_dtypes() -> None:
    assert nbytes_of((), "float32") == 4
    assert nbytes_of((2, 3), "float16") == 12
    assert nbytes_of((8, 256, 64, 64), "float32") == 8 * 256 * 64 * 64 * 4


def test_arena_layout_offsets_are_aligned_and_dense() -> None:
    specs = [T("loss", ()), T("loss/semseg", ()), T("grad/w", (3, 5)), T("half", (7,), "float16")]
    plan = ArenaPlan.from_specs("a", specs)
    offsets = [s.offset for s in plan.slots]
    assert offsets == [0, 256, 512, 768]
    assert [s.nbytes for s in plan.slots] == [4, 4, 60, 14]
    assert plan.nbytes == 1024
    assert all(s.offset % ALIGNMENT == 0 for s in plan.slots)
    assert plan.slot("grad/w").dtype == "float32" and plan.slot("half").dtype == "float16"
    # 64-byte alignment packs tighter but keeps every slot aligned.
    tight = ArenaPlan.from_specs("a", specs, alignment=64)
    assert [s.offset for s in tight.slots] == [0, 64, 128, 192]


def test_arena_views_share_memory_with_the_flat_buffer() -> None:
    plan = ArenaPlan.from_specs("theta", [T("w", (2, 3)), T("b", (3,))])
    flat = np.zeros(plan.nbytes, dtype=np.uint8)
    views = plan.views(flat)
    views["w"][...] = np.arange(6, dtype=np.float32).reshape(2, 3)
    views["b"][...] = 7
    assert np.frombuffer(flat[: 6 * 4].tobytes(), np.float32).tolist() == [0, 1, 2, 3, 4, 5]
    b_off = plan.slot("b").offset
    assert np.frombuffer(flat[b_off : b_off + 12].tobytes(), np.float32).tolist() == [7, 7, 7]
    with pytest.raises(ValueError):
        plan.views(np.zeros(plan.nbytes - 1, dtype=np.uint8))


def test_duplicate_and_dynamic_tensors_are_refused() -> None:
    with pytest.raises(ArtifactError, match="twice"):
        ArenaPlan.from_specs("x", [T("a", (1,)), T("a", (1,))])
    with pytest.raises(ArtifactError, match="dynamic"):
        ArenaPlan.from_specs("x", [T("a", (-1, 3))])


def test_plan_from_toy_artifact(toy_artifact_master: Path) -> None:
    art = Artifact.load(toy_artifact_master)
    plan = plan_buffers(art, optimizer="adam")
    names = [a.name for a in plan.arenas]
    assert names == [
        "image",
        "noise",
        "cut",
        "theta",
        "grads",
        "losses",
        "predictions",
        "state",
        "hyper",
    ]
    assert plan.arena("image").slots[0].shape == (2, 3, 8, 8)
    assert plan.arena("theta").names == ("head.weight", "norm.bias")
    assert plan.arena("grads").names == ("grad/head.weight", "grad/norm.bias")
    assert plan.arena("losses").names == ("loss", "loss/semseg", "loss/depth", GRAD_SQ_NAME)
    assert plan.arena("predictions").names == ("pred/semseg", "pred/depth")
    assert plan.arena("predictions").slot("pred/semseg").shape == (2, 3, 8, 8)
    assert plan.arena("state").names == (
        "state/exp_avg/head.weight",
        "state/exp_avg/norm.bias",
        "state/exp_avg_sq/head.weight",
        "state/exp_avg_sq/norm.bias",
    )
    assert plan.n_copies("theta") == 3 and plan.n_copies("state") == 2
    # Total = Σ arena bytes × copies; every arena rounded to the alignment.
    expected = 0
    for a in plan.arenas:
        assert a.nbytes % ALIGNMENT == 0
        expected += a.nbytes * plan.n_copies(a.name)
    assert plan.total_bytes == expected
    # image 2·3·8·8·4 = 1536 B; cut the same; θ (4·3 + 3)·4 B -> two aligned slots.
    assert plan.arena("image").nbytes == 1536
    assert plan.arena("theta").nbytes == 512
    assert plan.locate("cut/feat")[0] == "cut"
    assert plan.locate("norm.bias")[0] == "theta"
    d = plan.to_dict()
    assert d["total_bytes"] == plan.total_bytes and d["optimizer"] == "adam"


def test_sgd_plan_has_one_state_slot_and_none_without_optimizer(toy_artifact_master: Path) -> None:
    art = Artifact.load(toy_artifact_master)
    sgd = plan_buffers(art, optimizer="sgd")
    assert sgd.arena("state").names == (
        "state/momentum_buffer/head.weight",
        "state/momentum_buffer/norm.bias",
    )
    bare = plan_buffers(art, optimizer=None)
    assert "state" not in [a.name for a in bare.arenas]
    assert GRAD_SQ_NAME not in bare.arena("losses")
    assert bare.total_bytes < sgd.total_bytes
    with pytest.raises(ArtifactError, match="optimizer"):
        plan_buffers(art, optimizer="lbfgs")


def _with_graph(art: Artifact, name: str, **changes: object) -> Artifact:
    graphs = dict(art.graphs)
    graphs[name] = dataclasses.replace(graphs[name], **changes)
    return dataclasses.replace(art, graphs=graphs)


def test_inconsistent_manifest_is_refused(toy_artifact_master: Path) -> None:
    art = Artifact.load(toy_artifact_master)
    step = art.graphs["step"]
    # A graph reads a tensor the manifest does not declare anywhere.
    bad = _with_graph(art, "predict", inputs=(*art.graphs["predict"].inputs, T("cut/other", (1,))))
    with pytest.raises(ArtifactError, match="cut/other"):
        plan_buffers(bad)
    # A gradient for a θ tensor that does not exist.
    bad = _with_graph(art, "step", outputs=(*step.outputs, T("grad/ghost", (3,))))
    with pytest.raises(ArtifactError, match="grad/ghost"):
        plan_buffers(bad)
    # A graph disagreeing with the manifest about a cut tensor's shape.
    wrong = tuple(T(s.name, (1, 1), s.dtype) if s.name == "cut/feat" else s for s in step.inputs)
    with pytest.raises(ArtifactError, match="cut/feat"):
        plan_buffers(_with_graph(art, "step", inputs=wrong))
    # No loss output.
    no_loss = tuple(s for s in step.outputs if s.name != "loss")
    with pytest.raises(ArtifactError, match="loss"):
        plan_buffers(_with_graph(art, "step", outputs=no_loss))


def test_check_engine_io() -> None:
    ins = [T("image", (2, 3, 8, 8))]
    outs = [T("cut/feat", (2, 3, 8, 8)), T("loss", ())]
    good = {
        "image": ("input", (2, 3, 8, 8), "float32"),
        "cut/feat": ("output", (2, 3, 8, 8), "float32"),
        "loss": ("output", (1,), "float32"),  # a scalar may come back as (1,)
    }
    check_engine_io("backbone", ins, outs, good)
    cases = {
        "missing input 'image'": {k: v for k, v in good.items() if k != "image"},
        "has shape [1, 3, 8, 8]": {**good, "image": ("input", (1, 3, 8, 8), "float32")},
        "is float16": {**good, "cut/feat": ("output", (2, 3, 8, 8), "float16")},
        "unexpected tensor 'extra'": {**good, "extra": ("output", (1,), "float32")},
        "is an output": {**good, "image": ("output", (2, 3, 8, 8), "float32")},
    }
    for message, io in cases.items():
        with pytest.raises(ArtifactError, match="--force") as e:
            check_engine_io("backbone", ins, outs, io)
        assert message in str(e.value), (message, str(e.value))
