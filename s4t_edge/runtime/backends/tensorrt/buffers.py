"""Buffer plans: where every tensor of every graph lives, derived from the manifest alone.

The TensorRT backend binds raw addresses, so it needs to know up front, for each graph input and
output, which allocation holds it, at which offset, with which shape, dtype and byte size.  That
layout is pure arithmetic over the manifest, so it lives here (numpy only, no CUDA) where it can
be tested without a GPU.  Tensors that move together share one *arena* (one allocation): θ is
uploaded, reset and swapped as a whole, all gradients land in one block, all loss scalars come
back to the host in one small copy.  Offsets are aligned to 256 bytes, the alignment CUDA's
allocator guarantees and TensorRT expects of I/O addresses.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from s4t_edge.errors import ArtifactError

ALIGNMENT = 256

# Names of the extra tensors the device-side optimiser graph reads and writes.
HYPER_NAME = "hyper"  # float32[HYPER_SIZE]: learning rate, momentum/betas, weight decay, ...
HYPER_SIZE = 8
GRAD_SQ_NAME = "grad_sq"  # float32 scalar: Σ‖∂L/∂θ‖², non-finite iff some gradient is
NEW_PREFIX = "new/"  # updated θ tensor: new/<θ name>
STATE_PREFIX = "state/"  # optimiser slot: state/<slot>/<θ name>
NEW_STATE_PREFIX = "new_state/"

OPTIMIZER_SLOTS: dict[str, tuple[str, ...]] = {
    "sgd": ("momentum_buffer",),
    "adam": ("exp_avg", "exp_avg_sq"),
}


def aligned(n: int, alignment: int = ALIGNMENT) -> int:
    """`n` rounded up to a multiple of `alignment` (a power of two)."""
    if alignment <= 0 or alignment & (alignment - 1):
        raise ValueError(f"alignment must be a positive power of two, got {alignment}")
    return (int(n) + alignment - 1) & ~(alignment - 1)


def nbytes_of(shape: Sequence[int], dtype: str | np.dtype) -> int:
    """Byte size of a dense tensor; a 0-d shape holds one element."""
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


@dataclass(frozen=True)
class BufferSlot:
    """One tensor inside an arena."""

    name: str  # graph I/O name
    shape: tuple[int, ...]
    dtype: str  # numpy dtype name
    offset: int  # bytes from the arena's base, a multiple of the alignment
    nbytes: int  # dense size (the padding to the next slot is not included)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "shape": list(self.shape),
            "dtype": self.dtype,
            "offset": self.offset,
            "nbytes": self.nbytes,
        }


@dataclass(frozen=True)
class ArenaPlan:
    """The layout of one allocation: slots in order, each aligned."""

    name: str
    slots: tuple[BufferSlot, ...]
    nbytes: int  # total, padded to the alignment
    alignment: int = ALIGNMENT

    @classmethod
    def from_specs(cls, name: str, specs: Iterable[Any], alignment: int = ALIGNMENT) -> ArenaPlan:
        """Lay out `specs` (objects with name, shape, dtype) back to back, each slot aligned."""
        slots: list[BufferSlot] = []
        offset = 0
        seen: set[str] = set()
        for spec in specs:
            if spec.name in seen:
                raise ArtifactError(
                    f"tensor {spec.name!r} appears twice in the {name} buffers; "
                    "the manifest is inconsistent: re-export the artifact"
                )
            seen.add(spec.name)
            shape = tuple(int(d) for d in spec.shape)
            if any(d < 0 for d in shape):
                raise ArtifactError(
                    f"tensor {spec.name!r} has a dynamic shape {list(shape)}; the TensorRT backend "
                    "needs the static shapes recorded at export: re-export the artifact"
                )
            dtype = np.dtype(spec.dtype).name
            size = nbytes_of(shape, dtype)
            slots.append(BufferSlot(spec.name, shape, dtype, offset, size))
            offset = aligned(offset + size, alignment)
        return cls(
            name=name, slots=tuple(slots), nbytes=aligned(offset, alignment), alignment=alignment
        )

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.slots)

    def __contains__(self, name: object) -> bool:
        return any(s.name == name for s in self.slots)

    def slot(self, name: str) -> BufferSlot:
        for s in self.slots:
            if s.name == name:
                return s
        raise KeyError(name)

    def views(self, base: np.ndarray) -> dict[str, np.ndarray]:
        """Numpy views of each slot over a host byte buffer laid out like this arena.

        The same layout on the host and on the device makes a whole arena one copy.
        """
        if base.dtype != np.uint8 or base.ndim != 1 or base.size < self.nbytes:
            raise ValueError(
                f"{self.name}: need a flat uint8 buffer of at least {self.nbytes} bytes"
            )
        return {
            s.name: base[s.offset : s.offset + s.nbytes].view(s.dtype).reshape(s.shape)
            for s in self.slots
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "nbytes": self.nbytes,
            "alignment": self.alignment,
            "slots": [s.to_dict() for s in self.slots],
        }


@dataclass(frozen=True)
class _Spec:
    name: str
    shape: tuple[int, ...]
    dtype: str


@dataclass(frozen=True)
class BufferPlan:
    """Every arena the TensorRT backend allocates, and how many copies of each.

    θ has three copies (two ping-pong buffers the optimiser graph alternates between, and the
    reset copy the runaway guard restores), optimiser state two (ping-pong).  A rejected step
    simply does not swap, so restoring θ costs nothing.
    """

    arenas: tuple[ArenaPlan, ...]
    copies: tuple[tuple[str, int], ...]  # (arena name, number of allocations)
    optimizer: str | None

    def arena(self, name: str) -> ArenaPlan:
        for a in self.arenas:
            if a.name == name:
                return a
        raise KeyError(name)

    def n_copies(self, name: str) -> int:
        return dict(self.copies).get(name, 1)

    @property
    def total_bytes(self) -> int:
        """Device bytes for all arenas (TensorRT's own activation memory comes on top)."""
        return sum(a.nbytes * self.n_copies(a.name) for a in self.arenas)

    def locate(self, name: str) -> tuple[str, BufferSlot]:
        """The arena and slot holding graph I/O tensor `name` (θ maps to the θ arena)."""
        for a in self.arenas:
            for s in a.slots:
                if s.name == name:
                    return a.name, s
        raise KeyError(name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "optimizer": self.optimizer,
            "total_bytes": self.total_bytes,
            "copies": dict(self.copies),
            "arenas": [a.to_dict() for a in self.arenas],
        }


def state_specs(theta_specs: Sequence[Any], optimizer: str) -> list[_Spec]:
    """Optimiser slots per θ tensor, named state/<slot>/<θ name>, fp32 like θ's gradients."""
    if optimizer not in OPTIMIZER_SLOTS:
        raise ArtifactError(
            f"no device-side update for optimizer {optimizer!r}; use one of "
            f"{', '.join(sorted(OPTIMIZER_SLOTS))}"
        )
    return [
        _Spec(f"{STATE_PREFIX}{slot}/{t.name}", tuple(t.shape), "float32")
        for slot in OPTIMIZER_SLOTS[optimizer]
        for t in theta_specs
    ]


def _task_weights(artifact: Any) -> list[Any]:
    spec = getattr(artifact, "task_weights", None)
    return [] if spec is None else [spec]


def plan_buffers(
    artifact: Any, optimizer: str | None = "sgd", alignment: int = ALIGNMENT
) -> BufferPlan:
    """Derive the buffer plan from an artifact (anything with the `Artifact` attributes).

    Args:
        artifact: provides `input`, `mask_noise`, `cut`, `theta_specs` and `graphs` (GraphSpec
            with `inputs`/`outputs`) as described in docs/contracts.md.
        optimizer: "sgd", "adam" or None (no device-side update: state arenas are omitted).
        alignment: byte alignment of every slot.

    Raises:
        ArtifactError: a graph reads or writes a tensor the plan cannot place.
    """
    graphs = artifact.graphs
    for needed in ("backbone", "step", "predict"):
        if needed not in graphs:
            raise ArtifactError(
                f"the manifest lists no {needed!r} graph; "
                "re-export the artifact with `s4t-edge export`"
            )
    theta = list(artifact.theta_specs)
    step_out = list(graphs["step"].outputs)
    losses = [o for o in step_out if o.name == "loss" or o.name.startswith("loss/")]
    grads = [o for o in step_out if o.name.startswith("grad/")]
    if not any(o.name == "loss" for o in losses):
        raise ArtifactError("the step graph has no 'loss' output; re-export the artifact")
    loss_specs: list[Any] = list(losses)
    if optimizer is not None:
        loss_specs.append(_Spec(GRAD_SQ_NAME, (), "float32"))
    arenas = [
        ArenaPlan.from_specs("image", [artifact.input, *artifact.controls], alignment),
        # the task weights ([T], first-step artifacts) change per batch like the noise
        ArenaPlan.from_specs("noise", [artifact.mask_noise, *_task_weights(artifact)], alignment),
        # the backbone engine also writes its statistics (stat/...) next to the cut
        ArenaPlan.from_specs("cut", [*artifact.cut, *getattr(artifact, "stats", ())], alignment),
        ArenaPlan.from_specs("theta", theta, alignment),
        ArenaPlan.from_specs("grads", grads, alignment),
        ArenaPlan.from_specs("losses", loss_specs, alignment),
        ArenaPlan.from_specs("predictions", graphs["predict"].outputs, alignment),
    ]
    copies = [("theta", 3)]
    if optimizer is not None:
        arenas.append(ArenaPlan.from_specs("state", state_specs(theta, optimizer), alignment))
        arenas.append(
            ArenaPlan.from_specs("hyper", [_Spec(HYPER_NAME, (HYPER_SIZE,), "float32")], alignment)
        )
        copies.append(("state", 2))
    plan = BufferPlan(arenas=tuple(arenas), copies=tuple(copies), optimizer=optimizer)
    theta_names = {t.name for t in theta}
    for grad in grads:
        if grad.name[len("grad/") :] not in theta_names:
            raise ArtifactError(
                f"step output {grad.name!r} has no θ tensor of that name; re-export the artifact"
            )
    for gname in ("backbone", "step", "predict"):
        g = graphs[gname]
        for spec in list(g.inputs) + list(g.outputs):
            try:
                _, slot = plan.locate(spec.name)
            except KeyError:
                raise ArtifactError(
                    f"{gname} graph tensor {spec.name!r} is not an image, mask noise, cut, θ, "
                    "loss, gradient or prediction tensor of the manifest; re-export the artifact"
                ) from None
            if slot.shape != tuple(spec.shape) or slot.dtype != np.dtype(spec.dtype).name:
                raise ArtifactError(
                    f"{gname} graph tensor {spec.name!r} is {list(spec.shape)} {spec.dtype} but the "
                    f"manifest elsewhere says {list(slot.shape)} {slot.dtype}; re-export the artifact"
                )
    return plan


def check_engine_io(
    graph: str,
    expected_inputs: Sequence[Any],
    expected_outputs: Sequence[Any],
    engine_io: Mapping[str, tuple[str, tuple[int, ...], str]],
) -> None:
    """Verify a deserialized engine's I/O against the manifest before any address is bound.

    A mismatch means the engine was built from other graphs (a stale cache entry that slipped
    through, a hand-copied file): binding it would read or write out of bounds, so refuse.

    Args:
        graph: graph name, for the message.
        expected_inputs / expected_outputs: manifest TensorSpecs.
        engine_io: name -> (mode "input"|"output", shape, numpy dtype name) from the engine.

    Raises:
        ArtifactError: naming the first differences and how to rebuild.
    """
    problems: list[str] = []
    expected: dict[str, tuple[str, tuple[int, ...], str]] = {}
    for mode, specs in (("input", expected_inputs), ("output", expected_outputs)):
        for s in specs:
            expected[s.name] = (mode, tuple(int(d) for d in s.shape), np.dtype(s.dtype).name)
    for name, (mode, shape, dtype) in expected.items():
        got = engine_io.get(name)
        if got is None:
            problems.append(f"missing {mode} {name!r}")
            continue
        g_mode, g_shape, g_dtype = got
        if g_mode != mode:
            problems.append(f"{name!r} is an {g_mode}, expected an {mode}")
        # A 0-d manifest tensor may come back as shape () or (1,) depending on the exporter.
        if tuple(g_shape) != shape and not (
            int(np.prod(g_shape, dtype=np.int64)) == int(np.prod(shape, dtype=np.int64)) == 1
        ):
            problems.append(f"{name!r} has shape {list(g_shape)}, expected {list(shape)}")
        if np.dtype(g_dtype).name != dtype:
            problems.append(f"{name!r} is {np.dtype(g_dtype).name}, expected {dtype}")
    for name in engine_io:
        if name not in expected:
            problems.append(f"unexpected tensor {name!r}")
    if problems:
        shown = "; ".join(problems[:4]) + (
            f" (+{len(problems) - 4} more)" if len(problems) > 4 else ""
        )
        raise ArtifactError(
            f"the {graph} engine does not match the manifest: {shown}; rebuild it with "
            "`s4t-edge build ART --force`"
        )
