"""What each TensorRT 10.x release changed in the ONNX parser's rules, from its changelog.

Source: onnx/onnx-tensorrt ``docs/Changelog.md`` (10.2 GA 2024-07-10 ... 10.15 GA 2026-02-02),
cross-checked against the 10.15 ``docs/operators.md``: every difference between the 10.1 and the
10.15 matrix is one of the entries below.  Where the changelog names no version for a difference
of the tables, the entry says which version was assumed and why (`assumed`).  Entries that change
nothing a static check can see (error handling, plugin APIs, refit) are not listed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from s4t_edge.export.trt_matrix.restrictions import (
    AbsentInputs,
    AttrIn,
    ConstInput,
    InputDtype,
    InputRank,
    LastDimOne,
    NoAttrs,
    Restriction,
)


@dataclass(frozen=True)
class Change:
    """One changelog entry as it affects the checker.

    Attributes:
        version: the release that made the change ("10.4").
        note: the changelog's wording (or the table difference it explains).
        lift: (operator, restriction key) pairs that stop applying.
        add_ops: operators that become supported: name -> (types, restrictions, outputs).
        add_types: operator -> types added to its column.
        add_dtypes: data types added to the parser's list.
        max_opset: a new upper opset bound.
        assumed: why a version was assumed, when the changelog does not name one.
    """

    version: str
    note: str
    lift: tuple[tuple[str, str], ...] = ()
    add_ops: dict[str, tuple[str, tuple[Restriction, ...], int]] = field(default_factory=dict)
    add_types: dict[str, str] = field(default_factory=dict)
    add_dtypes: tuple[str, ...] = ()
    max_opset: int | None = None
    assumed: str = ""


CHANGES: tuple[Change, ...] = (
    Change(
        "10.3",
        "Added support for tensor `axes` inputs for `Slice` nodes",
        lift=(("Slice", "axes"),),
    ),
    Change("10.4", "Added support for tensor `axes` for `Pad` operations", lift=(("Pad", "axes"),)),
    Change(
        "10.4",
        "Added support for `BlackmanWindow`, `HammingWindow`, and `HannWindow` operations",
        add_ops={
            op: ("FP32 FP16", (), 1) for op in ("BlackmanWindow", "HammingWindow", "HannWindow")
        },
    ),
    Change(
        "10.5",
        "Added support for real-valued `STFT` operations",
        add_ops={
            "STFT": (
                "FP32",
                (
                    ConstInput(
                        "frame_step", "`frame_step` must be an initializer", 1, "frame_step"
                    ),
                    ConstInput("window", "`window` must be an initializer", 2, "window"),
                    LastDimOne("real", "Input must be real-valued"),
                ),
                1,
            )
        },
    ),
    Change(
        "10.7",
        "Added dynamic axes support for `Squeeze` and `Unsqueeze` operations (the 10.15 table: "
        "`axes` must be resolvable to a constant, which only a build can decide)",
        lift=(("Squeeze", "axes"), ("Unsqueeze", "axes")),
    ),
    Change(
        "10.8",
        "Added support for dynamic axes and improved performance of `CumSum` operations (the "
        "10.15 table: `axis` must be a build-time constant)",
        lift=(("CumSum", "axis"),),
    ),
    Change(
        "10.8",
        "Added support for `FLOAT4E2M1` types for quantized networks",
        add_dtypes=("FP4",),
        add_types={
            "Constant": "FP8 FP4 INT4",
            "ConstantOfShape": "FP8 FP4 INT4",
            "DequantizeLinear": "FP4",
        },
        assumed="the 10.15 table lists FP8, FP4 and INT4 for Constant/ConstantOfShape; the "
        "changelog names only the FP4 addition (10.8), so all three are taken from 10.8",
    ),
    Change(
        "10.12",
        "Added support for integer-typed base tensors for `Pow` operations",
        add_types={"Pow": "INT32 INT64"},
    ),
    Change(
        "10.14",
        "Added support for the `Attention` operator",
        add_ops={
            "Attention": (
                "FP32 FP16 BF16 INT8 FP8",
                (
                    InputRank("q-rank", "`Q` must be 4D", 0, (4,)),
                    InputRank("k-rank", "`K` must be 4D", 1, (4,)),
                    InputRank("v-rank", "`V` must be 4D", 2, (4,)),
                    AbsentInputs(
                        "inputs",
                        "`past_key`, `past_value` and `nonpad_kv_seqlen` inputs are unsupported",
                        (4, 5, 6),
                        ("past_key", "past_value", "nonpad_kv_seqlen"),
                    ),
                    NoAttrs(
                        "attrs",
                        "`qk_matmul_output_mode` and `softcap` attributes are unsupported",
                        ("qk_matmul_output_mode", "softcap"),
                    ),
                ),
                1,  # present_key, present_value and qk_matmul_output are unsupported
            )
        },
    ),
    Change(
        "10.15",
        "Added support for `RotaryEmbedding`, `RMSNormalization` and `TensorScatter`",
        add_ops={
            "RMSNormalization": ("FP32 FP16 BF16", (), 1),
            "RotaryEmbedding": (
                "FP32 FP16 BF16",
                (
                    InputDtype(
                        "position-ids",
                        "`position_ids` must be INT64",
                        3,
                        ("INT64",),
                        "position_ids",
                    ),
                ),
                1,
            ),
            "TensorScatter": (
                "FP32 FP16 BF16 INT32",
                (
                    InputRank("past-rank", "`past_cache` must be 4D", 0, (4,)),
                    InputRank("update-rank", "`update` must be 4D", 1, (4,)),
                    AttrIn("axis", "`axis` must be -2", "axis", (-2,), -2),
                ),
                1,
            ),
        },
    ),
    Change(
        "10.15",
        "The 10.15 table's header: opset 9 to opset 24",
        max_opset=24,
        assumed="the changelog does not say when the bound moved past 20 (ONNX 1.17 came with "
        "10.6, 1.18 with 10.11); earlier versions keep the last documented bound, 20",
    ),
)
