"""One way to name data everywhere: the ``--data`` / ``--train`` / ``--val`` specs.

Grammar::

    FILE.npz                  a dataset file (DESIGN.md §3.3), read into memory
    nyud:ROOT[:SPLIT]         NYUD-v2, SPLIT a gt_sets/ name (train, val; "a,b" joins several)
    pascal:ROOT[:SPLIT]       PASCAL-Context, SPLIT an ImageSets/Context/ name (train, val)
    taskonomy:ROOT[:SPLIT]    Taskonomy, SPLIT all | train | test | NAME/train | NAME/test
    images:DIR                a folder of unlabeled images

Without SPLIT, NYUD and PASCAL read ``train`` when the data trains a model and ``val``
otherwise; Taskonomy reads every scene on disk (``all``).  ROOT may itself contain ':' when it is
an existing folder.  Everything but ``.npz`` is streamed from disk (`StreamSource`); both kinds
satisfy the data-source interface of `s4t_edge.data.source`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from s4t_edge.data.dataset import Dataset, load_dataset
from s4t_edge.data.geometry import FITS, mean_colour
from s4t_edge.data.protocols import IMAGENET_MEAN, Protocol, get_protocol
from s4t_edge.data.source import StreamSource
from s4t_edge.errors import ConfigError, DataError

KINDS = ("nyud", "pascal", "taskonomy", "images")
DEFAULT_FIT = {"nyud": "pad", "pascal": "pad", "taskonomy": "resize", "images": "resize"}
_GRAMMAR = "FILE.npz, nyud:ROOT[:SPLIT], pascal:ROOT[:SPLIT], taskonomy:ROOT[:SPLIT] or images:DIR"


@dataclass(frozen=True)
class DataSpec:
    """A parsed spec: `kind` is "npz" or one of `KINDS`."""

    kind: str
    root: Path
    split: str | None = None

    def __str__(self) -> str:
        if self.kind == "npz":
            return str(self.root)
        return f"{self.kind}:{self.root}" + (f":{self.split}" if self.split else "")


def parse_spec(spec: str | os.PathLike[str]) -> DataSpec:
    """Split a spec into kind, root and split (no file access beyond is_dir checks)."""
    text = os.fspath(spec)
    if not text:
        raise ConfigError(f"empty data spec; give {_GRAMMAR}")
    kind, sep, rest = text.partition(":")
    if not sep or kind not in KINDS:
        p = Path(text)
        if p.is_dir():
            raise ConfigError(
                f"{text!r} is a folder; name its layout: nyud:{text}, pascal:{text}, "
                f"taskonomy:{text} or images:{text}"
            )
        if sep and not p.exists() and kind.isalpha() and len(kind) > 1:
            raise ConfigError(f"unknown data kind {kind!r} in {text!r}; give {_GRAMMAR}")
        return DataSpec("npz", p)
    if not rest:
        raise ConfigError(f"{text!r} names no folder; give {kind}:ROOT")
    root, split = rest, None
    if ":" in rest and not Path(rest).is_dir():
        root, split = rest.rsplit(":", 1)
        if not split:
            split = None
    if kind == "images" and split is not None:
        raise ConfigError(f"{text!r}: images:DIR takes no split; give the folder only")
    return DataSpec(kind, Path(root), split)


def _reader(spec: DataSpec, protocol: Protocol | None, role: str, quirks: bool, tasks: Any) -> Any:
    if spec.kind == "images":
        from s4t_edge.data.folder import FolderReader

        return FolderReader(spec.root)
    if spec.kind == "taskonomy":
        from s4t_edge.data.taskonomy import TaskonomyReader

        return TaskonomyReader(spec.root, spec.split or "all", protocol, tasks, quirks)
    split = spec.split or ("train" if role == "train" else "val")
    if spec.kind == "nyud":
        from s4t_edge.data.nyud import NyudReader

        return NyudReader(spec.root, split, protocol, tasks, quirks)
    from s4t_edge.data.pascal import PascalReader

    return PascalReader(spec.root, split, protocol, tasks, quirks)


def open_data(
    spec: str | os.PathLike[str] | DataSpec,
    protocol: str | Protocol | None = None,
    *,
    role: str = "eval",
    size: tuple[int, int] | None = None,
    fit: str | None = None,
    exact: bool | None = None,
    limit: int | None = None,
    workers: int | None = None,
    cache_mb: float | None = None,
    published_quirks: bool = False,
    tasks: tuple[str, ...] | None = None,
) -> Dataset | StreamSource:
    """Open any data spec as a data source (a `Dataset` for `.npz`, else a `StreamSource`).

    Args:
        spec: see the module docstring.
        protocol: a preset name (`s4t_edge.data.protocols.PROTOCOLS`) or Protocol: the class
            remap, the tasks read and the default size / fit of the dataset's side.
        role: "train" or "eval" (only picks the default NYUD/PASCAL split).
        size: (H, W) every sample is brought to -- the model's input; None = the protocol's
            size for this dataset, else the native size.
        fit: pad, resize, letterbox or crop (`s4t_edge.data.geometry`); default: the
            protocol's, else pad for NYUD/PASCAL and resize for Taskonomy and images.
        exact: the output must be exactly `size`; default True when `size` is given.
        limit: keep only the first `limit` samples.
        workers: decoding processes of the stream; default $S4T_DATA_WORKERS, else 0.
        cache_mb: bound of the stream's sample cache; default $S4T_DATA_CACHE_MB, else 64.
        published_quirks: reproduce the published loaders' numbers-changing behaviour (see each
            reader's docstring).
        tasks: task kinds to read (default: the protocol side's, else all the layout has).

    Raises:
        ConfigError: a malformed spec, unknown protocol or fit.
        DataError: a missing or broken tree or file (the message names the file).
    """
    ds = spec if isinstance(spec, DataSpec) else parse_spec(spec)
    proto = get_protocol(protocol)
    if fit is not None and fit not in FITS:
        raise ConfigError(f"unknown fit {fit!r}; choose one of {', '.join(FITS)}")
    if limit is not None and limit < 1:
        raise ConfigError(f"limit must be at least 1 sample, got {limit}")
    if ds.kind == "npz":
        data = load_dataset(ds.root, limit=limit)  # inflates only the rows asked for
        stored = data.meta.get("protocol")
        if proto is not None and stored and stored != proto.name:
            raise ConfigError(
                f"{ds.root} was imported under protocol {stored!r}, not {proto.name!r}; "
                f"re-import it with --protocol {proto.name} or drop --protocol"
            )
        return data.head(limit) if limit is not None else data
    side = proto.side(ds.kind) if (proto is not None and ds.kind != "images") else None
    reader = _reader(ds, proto, role, published_quirks, tasks)
    target = size if size is not None else (tuple(side.size) if side is not None else None)
    mode = fit or (side.fit if side is not None else DEFAULT_FIT[ds.kind])
    strict = exact if exact is not None else size is not None
    pad = mean_colour(tuple(side.mean) if side is not None else IMAGENET_MEAN)
    reader.configure(target, mode, strict, pad)
    reader.meta.update({"fit": mode, "size": list(target) if target else None, "spec": str(ds)})
    if workers is None:
        try:
            workers = int(os.environ.get("S4T_DATA_WORKERS", "0"))
        except ValueError:
            raise ConfigError("S4T_DATA_WORKERS must be an integer number of processes") from None
    src = StreamSource(reader, cache_mb=cache_mb, workers=workers)
    if not len(src):
        raise DataError(f"{ds}: the split holds no samples")
    return src.head(limit) if limit is not None else src


def describe(src: Any) -> dict[str, Any]:
    """A JSON-friendly summary of any data source (`s4t-edge data info`)."""
    h, w = src.size
    meta = {k: v for k, v in dict(src.meta).items() if k != "ids"}
    return {
        "kind": "stream" if isinstance(src, StreamSource) else "npz",
        "n": len(src),
        "size": [h, w],
        "tasks": src.tasks_present(),
        "num_classes": getattr(src, "num_classes", None),
        "meta": meta,
    }
