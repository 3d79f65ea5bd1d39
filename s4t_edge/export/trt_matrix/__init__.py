"""TensorRT's ONNX-parser operator matrix per TensorRT version, as data the checker reads.

`table("10.3")` is the 10.1 GA matrix (`table_10_1`) with every parser change up to 10.3 from the
changelog (`changelog`) applied; likewise for each 10.x up to the newest matrix available, 10.15.
JetPack 6.1/6.2 ship TensorRT 10.3 (the default target), JetPack 7.1 (Jetson Thor) 10.13.  No
matrix for 11.x is known to this version of s4t-edge: asking for one is a clear error.

Every table is at least as permissive as the one before it (a later release only lifts
restrictions, adds operators, types and opsets), so a graph that passes 10.3 passes them all.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from s4t_edge.errors import ConfigError
from s4t_edge.export.trt_matrix import changelog, table_10_1
from s4t_edge.export.trt_matrix.restrictions import Restriction

BASE_VERSION = "10.1"
VERSIONS: tuple[str, ...] = tuple(f"10.{m}" for m in range(3, 16))
DEFAULT_VERSION = "10.3"
JETPACK = {"10.3": "JetPack 6.1/6.2", "10.13": "JetPack 7.1"}


def version_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")[:2]
    return int(major), int(minor)


def normalize_version(text: str) -> str:
    """ "10.13", "10.13.3.9" or "10.13.0" -> "10.13"; anything without a table is a ConfigError."""
    parts = str(text).strip().split(".")
    try:
        major, minor = int(parts[0]), int(parts[1])
    except (ValueError, IndexError):
        raise ConfigError(
            f"--trt {text!r} is not a TensorRT version; use one of {', '.join(VERSIONS)}"
        ) from None
    version = f"{major}.{minor}"
    if version not in VERSIONS:
        newest = VERSIONS[-1]
        hint = (
            f"no operator matrix for TensorRT {major}.x is known to s4t-edge; check against "
            f"--trt {newest} and let a TensorRT build on the device decide"
            if major > 10
            else f"s4t-edge has tables for TensorRT {VERSIONS[0]} to {newest}"
        )
        raise ConfigError(f"--trt {text}: {hint}")
    return version


@dataclass(frozen=True)
class OpSpec:
    """One operator row: the types it accepts, how many outputs it makes, its restrictions."""

    name: str
    types: frozenset[str]
    typed_inputs: tuple[int, ...] | None  # inputs the types apply to; None: all of them
    outputs: int | None  # most outputs the importer produces; None: any number
    restrictions: tuple[Restriction, ...]


@dataclass(frozen=True)
class Matrix:
    """The parser's rules for one TensorRT version."""

    version: str
    opset: tuple[int, int]
    dtypes: frozenset[str]
    ops: Mapping[str, OpSpec]
    unsupported: frozenset[str]  # operators the matrix lists as N
    sources: tuple[str, ...] = field(default=())  # the changelog entries applied

    def spec(self, op: str) -> OpSpec | None:
        return self.ops.get(op)

    @property
    def uint8_qdq_constants(self) -> bool:
        """10.10: "UINT8 constants are now properly imported for QuantizeLinear & DequantizeLinear"."""
        return version_tuple(self.version) >= (10, 10)


def _types(text: str) -> frozenset[str]:
    return frozenset(text.split())


@functools.cache
def table(version: str = DEFAULT_VERSION) -> Matrix:
    """The rules of TensorRT `version` (any spelling `normalize_version` accepts)."""
    version = normalize_version(version)
    target = version_tuple(version)
    base = table_10_1
    ops: dict[str, OpSpec] = {}
    for name, types in base.SUPPORTED.items():
        ops[name] = OpSpec(
            name=name,
            types=_types(types),
            typed_inputs=base.TYPED_INPUTS.get(name, (0,)),
            outputs=base.OUTPUTS.get(name, 1),
            restrictions=tuple(base.RESTRICTIONS.get(name, ())),
        )
    unsupported = set(base.UNSUPPORTED)
    dtypes = set(base.DTYPES)
    opset = base.OPSET
    sources = [f"onnx-tensorrt docs/operators.md @ {BASE_VERSION}-GA"]
    for change in changelog.CHANGES:
        if version_tuple(change.version) > target:
            continue
        sources.append(f"{change.version}: {change.note}")
        for op, key in change.lift:
            spec = ops[op]
            kept = tuple(r for r in spec.restrictions if r.key != key)
            ops[op] = OpSpec(op, spec.types, spec.typed_inputs, spec.outputs, kept)
        for op, (types, restrictions, outputs) in change.add_ops.items():
            ops[op] = OpSpec(op, _types(types), (0,), outputs, tuple(restrictions))
            unsupported.discard(op)
        for op, types in change.add_types.items():
            spec = ops[op]
            ops[op] = OpSpec(
                op, spec.types | _types(types), spec.typed_inputs, spec.outputs, spec.restrictions
            )
        dtypes.update(change.add_dtypes)
        if change.max_opset is not None:
            opset = (opset[0], change.max_opset)
    return Matrix(
        version=version,
        opset=opset,
        dtypes=frozenset(dtypes),
        ops=MappingProxyType(ops),
        unsupported=frozenset(unsupported),
        sources=tuple(sources),
    )


def later_versions(version: str) -> tuple[str, ...]:
    """The known versions after `version`, oldest first (where a finding may be lifted)."""
    v = version_tuple(normalize_version(version))
    return tuple(x for x in VERSIONS if version_tuple(x) > v)


__all__ = [
    "DEFAULT_VERSION",
    "JETPACK",
    "Matrix",
    "OpSpec",
    "VERSIONS",
    "later_versions",
    "normalize_version",
    "table",
]
