"""The kinds of restriction the TensorRT ONNX parser's operator matrix states, as checkable data.

Each restriction is a small frozen object: a stable `key` (so a later TensorRT version can lift
it by name), the matrix's wording in `text`, and a `check(node, ctx)` that returns why a node
breaks it, or None.  `ctx` is the checker's view of the graph after ONNX shape inference (see
`s4t_edge.export.trt_rules.GraphView`): build-time constants, dtypes, shapes, attributes.

Restrictions that need the TensorRT builder to decide (e.g. "Loop scan output length cannot be
dynamic") are not modelled here; the README lists them under "only a real build verifies".
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


class View(Protocol):
    """What a restriction may ask about the graph (implemented by trt_rules.GraphView)."""

    def attr(self, node: Any, name: str, default: Any = None) -> Any: ...
    def is_const(self, name: str) -> bool: ...
    def const_value(self, name: str) -> Any: ...
    def shape(self, name: str) -> list[int | None] | None: ...
    def dtype(self, name: str) -> str | None: ...


def _input(node: Any, index: int) -> str:
    return node.input[index] if index < len(node.input) else ""


@dataclass(frozen=True)
class Restriction:
    """Base: `key` identifies the restriction within its operator; `text` is the matrix wording."""

    key: str
    text: str

    severity = "error"

    def check(self, node: Any, ctx: View) -> str | None:  # pragma: no cover - abstract
        raise NotImplementedError


@dataclass(frozen=True)
class ConstInput(Restriction):
    """Input `index` (when given) must be an initializer or a Constant's output."""

    index: int = 1
    name: str = "axes"

    def check(self, node: Any, ctx: View) -> str | None:
        value = _input(node, self.index)
        if value and not ctx.is_const(value):
            return (
                f"`{self.name}` (input {self.index}, {value!r}) is computed in the graph; "
                "TensorRT needs it as an initializer"
            )
        return None


@dataclass(frozen=True)
class AttrIn(Restriction):
    """A string or int attribute must take one of `allowed` (its ONNX default when absent)."""

    attr: str = ""
    allowed: tuple[Any, ...] = ()
    default: Any = None

    def check(self, node: Any, ctx: View) -> str | None:
        value = ctx.attr(node, self.attr, self.default)
        if isinstance(value, bytes):
            value = value.decode()
        if value not in self.allowed:
            choices = ", ".join(str(a) for a in self.allowed)
            return f"{self.attr}={value!r} is not supported (TensorRT accepts {choices})"
        return None


@dataclass(frozen=True)
class AllOnes(Restriction):
    """An int-list attribute must be absent, empty or all ones (e.g. pooling dilations)."""

    attr: str = "dilations"

    def check(self, node: Any, ctx: View) -> str | None:
        value = ctx.attr(node, self.attr, None)
        if value and any(int(v) != 1 for v in value):
            return f"{self.attr}={list(value)} must be empty or all ones"
        return None


@dataclass(frozen=True)
class InputRank(Restriction):
    """Input `index` must have one of the ranks in `ranks` (known after shape inference)."""

    index: int = 0
    ranks: tuple[int, ...] = (4, 5)

    def check(self, node: Any, ctx: View) -> str | None:
        shape = ctx.shape(_input(node, self.index))
        if shape is not None and len(shape) not in self.ranks:
            ok = " or ".join(str(r) for r in self.ranks)
            return f"input {self.index} has rank {len(shape)}; TensorRT needs rank {ok}"
        return None


@dataclass(frozen=True)
class ConstBelow(Restriction):
    """A scalar input must be a build-time constant below `limit` (TopK's K).

    A K computed at run time cannot be checked here: reported as a warning, since TensorRT
    itself checks it only when the engine runs.
    """

    index: int = 1
    name: str = "K"
    limit: int = 3840

    def check(self, node: Any, ctx: View) -> str | None:
        value = _input(node, self.index)
        if not value:
            return None
        k = ctx.const_value(value)
        if k is None:
            return None  # reported by the companion warning restriction
        k = int(k.reshape(-1)[0])
        if k >= self.limit:
            return f"{self.name}={k} must be less than {self.limit}"
        return None


@dataclass(frozen=True)
class ConstKnown(Restriction):
    """Warning: an input the matrix bounds is computed at run time, so only a build can tell."""

    index: int = 1
    name: str = "K"

    severity = "warning"

    def check(self, node: Any, ctx: View) -> str | None:
        value = _input(node, self.index)
        if value and ctx.const_value(value) is None:
            return f"`{self.name}` is computed at run time; {self.text} is checked only by TensorRT"
        return None


@dataclass(frozen=True)
class ZeroInput(Restriction):
    """An optional input (a zero point) must be all zeros when given."""

    index: int = 2
    name: str = "zero_point"

    def check(self, node: Any, ctx: View) -> str | None:
        value = _input(node, self.index)
        if not value:
            return None
        arr = ctx.const_value(value)
        if arr is None:
            return f"`{self.name}` is computed in the graph; TensorRT needs a constant zero"
        if arr.size and bool((arr != 0).any()):
            return f"`{self.name}` must be zero"
        return None


@dataclass(frozen=True)
class NoAttrs(Restriction):
    """None of the listed attributes may be set."""

    attrs: tuple[str, ...] = ()

    def check(self, node: Any, ctx: View) -> str | None:
        present = [a.name for a in node.attribute if a.name in self.attrs]
        if present:
            return f"attribute {present[0]!r} is not supported"
        return None


@dataclass(frozen=True)
class AttrNotSet(Restriction):
    """Warning: an attribute TensorRT ignores (e.g. Random*'s seed) is set."""

    attr: str = "seed"

    severity = "warning"

    def check(self, node: Any, ctx: View) -> str | None:
        if any(a.name == self.attr for a in node.attribute):
            return f"`{self.attr}` is ignored by TensorRT"
        return None


@dataclass(frozen=True)
class StaticShape(Restriction):
    """Input `index` must have static dimensions (known at build time)."""

    index: int = 0

    def check(self, node: Any, ctx: View) -> str | None:
        shape = ctx.shape(_input(node, self.index))
        if shape is None or any(d is None for d in shape):
            return f"input {self.index} must have static dimensions"
        return None


@dataclass(frozen=True)
class StaticAxisDim(Restriction):
    """The input dimension along attribute `attr` must be static (Hardmax)."""

    attr: str = "axis"
    default: int = -1

    def check(self, node: Any, ctx: View) -> str | None:
        shape = ctx.shape(_input(node, 0))
        if shape is None:
            return "the input shape is unknown; TensorRT needs the `axis` dimension at build time"
        axis = int(ctx.attr(node, self.attr, self.default))
        if shape and shape[axis % len(shape)] is None:
            return f"dimension {axis} of the input is dynamic; TensorRT needs it at build time"
        return None


@dataclass(frozen=True)
class ConstFalse(Restriction):
    """An optional boolean input must be a constant False (Dropout's training_mode)."""

    index: int = 2
    name: str = "training_mode"

    def check(self, node: Any, ctx: View) -> str | None:
        value = _input(node, self.index)
        if not value:
            return None
        arr = ctx.const_value(value)
        if arr is None:
            return f"`{self.name}` must be an initializer"
        if bool(arr.reshape(-1)[0]):
            return f"`{self.name}` is True; TensorRT supports inference mode only"
        return None


@dataclass(frozen=True)
class IotaAxes(Restriction):
    """Resize: with `scales` given, the `axes` attribute must be 0..rank-1 in order."""

    def check(self, node: Any, ctx: View) -> str | None:
        if not _input(node, 2):
            return None
        axes = ctx.attr(node, "axes", None)
        if axes is None:
            return None
        shape = ctx.shape(_input(node, 0))
        rank = len(shape) if shape is not None else len(axes)
        if list(axes) != list(range(rank)):
            return f"axes={list(axes)} must be 0..{rank - 1} when `scales` is given"
        return None


@dataclass(frozen=True)
class SameActivations(Restriction):
    """Bidirectional RNN/GRU/LSTM: forward and reverse activations must be the same."""

    def check(self, node: Any, ctx: View) -> str | None:
        direction = ctx.attr(node, "direction", b"forward")
        direction = direction.decode() if isinstance(direction, bytes) else direction
        acts = ctx.attr(node, "activations", None)
        if direction != "bidirectional" or not acts:
            return None
        acts = [a.decode() if isinstance(a, bytes) else a for a in acts]
        half = len(acts) // 2
        if acts[:half] != acts[half:]:
            return f"forward activations {acts[:half]} differ from reverse {acts[half:]}"
        return None


@dataclass(frozen=True)
class SymmetricPads(Restriction):
    """DeformConv: `pads` at the beginning and end of each spatial axis must be equal."""

    def check(self, node: Any, ctx: View) -> str | None:
        pads = ctx.attr(node, "pads", None)
        if not pads:
            return None
        half = len(pads) // 2
        if list(pads[:half]) != list(pads[half:]):
            return f"pads={list(pads)} must be the same at the beginning and end of each axis"
        return None


@dataclass(frozen=True)
class IfBranches(Restriction):
    """If: the two branches' outputs must have the same rank and different names."""

    def check(self, node: Any, ctx: View) -> str | None:
        then_g = ctx.attr(node, "then_branch", None)
        else_g = ctx.attr(node, "else_branch", None)
        if then_g is None or else_g is None:
            return None
        for a, b in zip(then_g.output, else_g.output):
            if a.name == b.name:
                return f"both branches name their output {a.name!r}"
            ra = len(a.type.tensor_type.shape.dim) if a.type.tensor_type.HasField("shape") else None
            rb = len(b.type.tensor_type.shape.dim) if b.type.tensor_type.HasField("shape") else None
            if ra is not None and rb is not None and ra != rb:
                return f"branch outputs {a.name!r} and {b.name!r} differ in rank ({ra} vs {rb})"
        return None


@dataclass(frozen=True)
class InputDtype(Restriction):
    """Input `index` (when given) must have one of `dtypes` (e.g. RotaryEmbedding position_ids)."""

    index: int = 0
    dtypes: tuple[str, ...] = ()
    name: str = ""

    def check(self, node: Any, ctx: View) -> str | None:
        value = _input(node, self.index)
        dt = ctx.dtype(value) if value else None
        if dt is not None and dt not in self.dtypes:
            return f"`{self.name or value}` is {dt}; TensorRT needs {', '.join(self.dtypes)}"
        return None


@dataclass(frozen=True)
class AbsentInputs(Restriction):
    """Optional inputs TensorRT does not support must be left empty."""

    indices: tuple[int, ...] = ()
    names: tuple[str, ...] = ()

    def check(self, node: Any, ctx: View) -> str | None:
        for i, name in zip(self.indices, self.names):
            if _input(node, i):
                return f"input `{name}` is not supported"
        return None


@dataclass(frozen=True)
class LastDimOne(Restriction):
    """STFT: the signal must be real-valued (its last dimension is 1)."""

    def check(self, node: Any, ctx: View) -> str | None:
        shape = ctx.shape(_input(node, 0))
        if shape is not None and shape and shape[-1] not in (1, None):
            return "the signal must be real-valued (last dimension 1)"
        return None


def keys(restrictions: Sequence[Restriction]) -> tuple[str, ...]:
    return tuple(r.key for r in restrictions)
