"""Datasets streamed from disk, behind the interface the in-memory `Dataset` also has.

Training, `s4t_edge.train.evaluate`, `s4t_edge.measure.evaluate.adapt_dataset` and the bench
consume a *data source*: anything with

* ``len(src)``, ``src.size`` (H, W), ``src.tasks_present()``, ``src.meta`` (dict),
  ``src.num_classes`` (semseg classes, or None when unknown),
* ``src.batches(n, drop_last=False)`` -> consecutive in-memory `Dataset` batches,
* ``src.take(rows)`` -> the `Dataset` of those rows (random access, for training),
* ``src.subset(rows)`` / ``src.head(n)`` -> a source of the same kind over some rows.

`Dataset` (a whole `.npz` in memory) is one.  `StreamSource` is the other: it holds only file
names; a batch is decoded when it is asked for, so peak memory is one batch (times the prefetch
depth with worker processes), whatever the split's length.  Worker processes (``workers > 0``)
decode the next batches while the current one is used; a bounded LRU cache keeps recently
*taken* samples (training epochs revisit them), while sequential passes (`batches`) bypass it so
that a long evaluation cannot fill it.
"""

from __future__ import annotations

import os
from collections import OrderedDict, deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.data.dataset import TASK_KEYS, Dataset
from s4t_edge.data.geometry import Plan, apply, plan
from s4t_edge.errors import DataError

#: Default bound of a stream's sample cache (MiB); `S4T_DATA_CACHE_MB` overrides it.
DEFAULT_CACHE_MB = 64
#: Batches decoded ahead per worker pool.
DEFAULT_PREFETCH = 2


def check_root(root: Path, layout: str, must: str) -> None:
    """The dataset folder must exist and be a folder (one line naming it otherwise)."""
    if not root.exists():
        raise DataError(f"{root}: dataset folder not found; give the folder that holds {must}")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder; give the {layout} dataset folder")


class Reader:
    """One dataset layout: the sample ids of a split and how to decode sample i.

    Subclasses set `kind`, `root`, `ids`, `tasks` and `meta`, and implement `load_native` (the
    decoded arrays at the native size, keyed "image" and task kinds) and `path_of(i)` (the image
    file, for messages).  `load` applies the geometry; readers whose published decoding must
    follow the resize (Taskonomy's quirks) override it.
    """

    kind = "?"
    tasks: tuple[str, ...] = ()

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.meta: dict[str, Any] = {}
        self.size: tuple[int, int] | None = None  # target (H, W), None = native
        self.fit = "pad"
        self.exact = False
        self.pad_rgb: tuple[int, int, int] = (124, 116, 104)

    def _open(
        self,
        root: str | Path,
        layout: str,
        must: str,
        protocol: Any,
        tasks: tuple[str, ...] | None,
        available: tuple[str, ...],
        published_quirks: bool,
    ) -> Any:
        """What every dataset reader does first: the root folder, the quirks flag and the tasks
        to read (given, else the protocol side's, else all the layout has), checked.  Returns
        the protocol's side for this dataset (None without a protocol)."""
        self.root = Path(root)
        check_root(self.root, layout, must)
        self.quirks = bool(published_quirks)
        side = protocol.side(self.kind) if protocol is not None else None
        self.tasks = tuple(tasks) if tasks is not None else (side.tasks if side else available)
        bad = [t for t in self.tasks if t not in available]
        if bad:
            raise DataError(
                f"{layout} has no {bad[0]!r} labels; its tasks are {', '.join(available)}"
            )
        return side

    def configure(
        self,
        size: tuple[int, int] | None,
        fit: str,
        exact: bool,
        pad_rgb: tuple[int, int, int],
    ) -> None:
        self.size, self.fit, self.exact, self.pad_rgb = size, fit, exact, pad_rgb

    def path_of(self, i: int) -> str:
        raise NotImplementedError

    def load_native(self, i: int) -> dict[str, np.ndarray]:
        raise NotImplementedError

    def plan_for(self, native: tuple[int, int]) -> Plan:
        return plan(native, self.size, self.fit, self.exact)

    def load(self, i: int) -> dict[str, np.ndarray]:
        sample = self.load_native(i)
        native = sample["image"].shape[:2]
        return apply(sample, self.plan_for(native), self.pad_rgb)

    def native_size(self, i: int) -> tuple[int, int]:
        from s4t_edge.data.files import image_size

        return image_size(self.path_of(i))

    def __len__(self) -> int:
        return len(self.ids)


class _Cache:
    """LRU of decoded samples bounded by bytes."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.items: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()
        self.bytes = 0

    def get(self, i: int) -> dict[str, np.ndarray] | None:
        s = self.items.get(i)
        if s is not None:
            self.items.move_to_end(i)
        return s

    def put(self, i: int, sample: dict[str, np.ndarray]) -> None:
        n = sum(a.nbytes for a in sample.values())
        if n > self.max_bytes or i in self.items:
            return
        self.items[i] = sample
        self.bytes += n
        while self.bytes > self.max_bytes:
            _, old = self.items.popitem(last=False)
            self.bytes -= sum(a.nbytes for a in old.values())


# Worker-process state: the reader, sent once per process by the pool initialiser.
_WORKER_READER: Reader | None = None


def _worker_init(reader: Reader) -> None:
    global _WORKER_READER
    _WORKER_READER = reader
    # one decoding process per core: keep numpy's BLAS from spawning threads of its own
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _worker_load(rows: Sequence[int]) -> list[dict[str, np.ndarray]]:
    assert _WORKER_READER is not None
    return [_WORKER_READER.load(int(i)) for i in rows]


class StreamSource:
    """A split read lazily from disk: the `Dataset` interface without holding the data.

    Args:
        reader: the layout's `Reader`, already configured with the geometry.
        rows: which of the reader's samples this source covers (all by default).
        cache_mb: bound of the LRU cache of `take`n samples (0 = no cache).
        workers: decoding processes for `batches` (0 = decode in this process).
        prefetch: batches decoded ahead when `workers > 0`.
    """

    def __init__(
        self,
        reader: Reader,
        rows: np.ndarray | None = None,
        *,
        cache_mb: float | None = None,
        workers: int = 0,
        prefetch: int = DEFAULT_PREFETCH,
        out_size: tuple[int, int] | None = None,
    ) -> None:
        self.reader = reader
        self.rows = np.arange(len(reader)) if rows is None else np.asarray(rows, dtype=np.int64)
        if cache_mb is None:
            cache_mb = float(os.environ.get("S4T_DATA_CACHE_MB", DEFAULT_CACHE_MB))
        self.cache_mb = cache_mb
        self._cache = _Cache(int(cache_mb * 2**20))
        self.workers = int(workers)
        self.prefetch = max(1, int(prefetch))
        self._out_size = out_size

    # ------------------------------------------------------------------ the source interface
    def __len__(self) -> int:
        return len(self.rows)

    @property
    def meta(self) -> dict[str, Any]:
        return dict(self.reader.meta)

    @property
    def num_classes(self) -> int | None:
        return self.reader.meta.get("num_classes")

    @property
    def size(self) -> tuple[int, int]:
        """(H, W) of every sample, from the geometry (and, when not exact, the first header)."""
        if self._out_size is None:
            if self.reader.exact and self.reader.size is not None:
                self._out_size = tuple(self.reader.size)
            elif not len(self):
                raise DataError("the split holds no samples")
            else:
                first = int(self.rows[0])
                self._out_size = self.reader.plan_for(self.reader.native_size(first)).out
        return self._out_size  # type: ignore[return-value]

    def tasks_present(self) -> list[str]:
        return [k for k in TASK_KEYS if k in self.reader.tasks]

    def sample_ids(self, rows: Sequence[int] | None = None) -> list[str]:
        idx = self.rows if rows is None else self.rows[np.asarray(rows, dtype=np.int64)]
        return [self.reader.ids[int(i)] for i in idx]

    def subset(self, rows: Sequence[int] | np.ndarray) -> StreamSource:
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size and (rows.min() < -len(self) or rows.max() >= len(self)):
            raise IndexError(f"rows out of range for a source of {len(self)} samples")
        return StreamSource(
            self.reader,
            self.rows[rows],
            cache_mb=self.cache_mb,
            workers=self.workers,
            prefetch=self.prefetch,
            out_size=self._out_size,
        )

    def head(self, n: int) -> StreamSource:
        return self.subset(np.arange(min(max(n, 0), len(self))))

    def take(self, rows: Sequence[int] | np.ndarray) -> Dataset:
        """The samples at `rows` (positions in this source), decoded, as one `Dataset`."""
        idx = [int(self.rows[int(r)]) for r in np.asarray(rows, dtype=np.int64).reshape(-1)]
        samples = []
        for i in idx:
            s = self._cache.get(i)
            if s is None:
                s = self._load(i)
                self._cache.put(i, s)
            samples.append(s)
        return self._stack(samples, idx)

    def batches(self, batch_size: int, drop_last: bool = False) -> Iterator[Dataset]:
        """Consecutive batches, decoded on demand (by worker processes when `workers > 0`)."""
        if batch_size < 1:
            raise DataError(f"batch size must be at least 1, got {batch_size}")
        stop = len(self) - len(self) % batch_size if drop_last else len(self)
        chunks = [
            [int(i) for i in self.rows[s : min(s + batch_size, stop)]]
            for s in range(0, stop, batch_size)
        ]
        if self.workers <= 0 or len(chunks) <= 1:
            for idx in chunks:
                yield self._stack([self._load(i) for i in idx], idx)
            return
        yield from self._parallel(chunks)

    # ------------------------------------------------------------------ internals
    def _load(self, i: int) -> dict[str, np.ndarray]:
        return self._check(self.reader.load(i), i)

    def _check(self, sample: dict[str, np.ndarray], i: int) -> dict[str, np.ndarray]:
        got = tuple(sample["image"].shape[:2])
        if got != tuple(self.size):
            raise DataError(
                f"{self.reader.path_of(i)}: image is {got[0]}x{got[1]} after the geometry, the "
                f"split's first is {self.size[0]}x{self.size[1]}; give a size "
                "(--size H W, or the model's) so that every image is fitted to it"
            )
        return sample

    def _parallel(self, chunks: list[list[int]]) -> Iterator[Dataset]:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        self.size  # noqa: B018 - fix the output size before the workers start
        ctx = mp.get_context("spawn")  # fork is unsafe once torch / onnxruntime threads exist
        with ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=ctx,
            initializer=_worker_init,
            initargs=(self.reader,),
        ) as pool:
            pending: deque = deque()
            it = iter(chunks)
            for idx in it:
                pending.append((idx, pool.submit(_worker_load, idx)))
                if len(pending) >= self.workers * self.prefetch:
                    break
            while pending:
                idx, fut = pending.popleft()
                try:
                    samples = fut.result()
                except DataError:
                    raise
                except Exception as e:  # noqa: BLE001 - a worker crash becomes one line
                    raise DataError(
                        f"a data worker failed on {self.reader.path_of(idx[0])} ({type(e).__name__}: "
                        f"{e}); retry with S4T_DATA_WORKERS=0 to see the sample at fault"
                    ) from None
                nxt = next(it, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(_worker_load, nxt)))
                yield self._stack([self._check(s, i) for s, i in zip(samples, idx)], idx)

    def _stack(self, samples: list[dict[str, np.ndarray]], idx: list[int]) -> Dataset:
        meta = dict(self.reader.meta)
        meta["ids"] = [self.reader.ids[i] for i in idx]
        if not samples:
            h, w = self.size
            return Dataset(image=np.zeros((0, h, w, 3), np.uint8), meta=meta)
        arrays = {k: np.stack([s[k] for s in samples]) for k in samples[0]}
        return Dataset(**arrays, meta=meta)

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_cache"] = None  # each process keeps its own cache
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._cache = _Cache(int(self.cache_mb * 2**20))

    def __repr__(self) -> str:
        return (
            f"StreamSource({self.reader.kind}:{self.reader.meta.get('root')}"
            f":{self.reader.meta.get('split')}, {len(self)} samples)"
        )


def num_classes(src: Any) -> int | None:
    """Semseg classes a source declares (meta), else the largest label + 1 of an in-memory set."""
    n = getattr(src, "num_classes", None)
    if n is not None:
        return int(n)
    names = (getattr(src, "meta", None) or {}).get("class_names")
    if names:
        return len(names)
    return None


def sample_ids(batch: Dataset, offset: int) -> list[str]:
    """Ids of a batch's samples: the reader's ids, or the running index for `.npz` data."""
    ids = batch.meta.get("ids")
    if isinstance(ids, list):
        if len(ids) == len(batch):  # a streamed batch carries its own ids
            return [str(i) for i in ids]
        if len(ids) >= offset + len(batch):  # an imported .npz carries the whole set's
            return [str(i) for i in ids[offset : offset + len(batch)]]
    return [f"{offset + i:06d}" for i in range(len(batch))]
