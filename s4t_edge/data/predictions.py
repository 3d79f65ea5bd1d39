"""Write per-image predictions to a folder (`eval`/`adapt --predictions DIR`, and for unlabeled data).

Layout, one file per image and task, named by the sample id (the dataset's id, e.g.
``<scene>/point_3_view_1`` for Taskonomy or the image's file name for ``images:DIR``; the running
index ``000042`` for `.npz` data)::

    DIR/semseg/<id>.png    8-bit class ids (argmax), the dataset's class order (meta class_names)
    DIR/depth/<id>.npy     float32 (H, W), the model's depth output clamped at 0
    DIR/normals/<id>.png   RGB unit normals encoded as the NYUD files: v = round((n + 1) * 127.5)
    DIR/edge/<id>.png      8-bit edge probability, round(255 * sigmoid(logit))

The encodings are those the readers decode, so a prediction folder can be inspected with the
same tools as the labels.  Each file is written to a temporary name and renamed, so a crash never
leaves a torn file; existing files of the same name are replaced.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from s4t_edge.errors import DataError, OutputPathError
from s4t_edge.utils import atomic_write, ensure_writable_dir


def _safe_relative(sample_id: str) -> Path:
    p = Path(sample_id)
    if p.is_absolute() or any(part in ("..", "") for part in p.parts) or not p.parts:
        raise DataError(f"sample id {sample_id!r} is not a relative file name; cannot write it")
    return p


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


class PredictionWriter:
    """Writes raw model outputs batch by batch; `count` says how many images were written."""

    def __init__(self, root: str | os.PathLike[str], kinds: Mapping[str, str]) -> None:
        self.root = ensure_writable_dir(root)
        self.kinds = dict(kinds)
        self.count = 0

    def _put(self, rel: Path, write) -> None:  # noqa: ANN001 - write(file object)
        path = self.root / rel
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise OutputPathError(
                f"cannot write {path}: {e.strerror or e}; check free space and permissions"
            ) from None
        with atomic_write(path, "wb") as f:  # the output guard; one line on a full disk
            write(f)

    def write(self, ids: list[str], predictions: Mapping[str, np.ndarray]) -> None:
        """Write the images `ids` of one batch from raw outputs `{task: (N, C, H, W)}`."""
        from PIL import Image

        for task, raw in predictions.items():
            kind = self.kinds.get(task, task)
            raw = np.asarray(raw, dtype=np.float32)
            for j, sid in enumerate(ids):
                rel = Path(task) / _safe_relative(sid)
                x = raw[j]
                if kind == "semseg":
                    img = Image.fromarray(x.argmax(0).astype(np.uint8), "L")
                    self._put(rel.with_name(rel.name + ".png"), lambda f, im=img: im.save(f, "PNG"))
                elif kind == "depth":
                    d = np.maximum(x[0], 0.0).astype(np.float32)
                    self._put(
                        rel.with_name(rel.name + ".npy"),
                        lambda f, a=d: np.save(f, a, allow_pickle=False),
                    )
                elif kind == "normals":
                    n = x.transpose(1, 2, 0)
                    n = n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
                    v = np.clip(np.round((n + 1.0) * 127.5), 0, 255).astype(np.uint8)
                    img = Image.fromarray(v, "RGB")
                    self._put(rel.with_name(rel.name + ".png"), lambda f, im=img: im.save(f, "PNG"))
                elif kind == "edge":
                    p = np.round(255.0 * _sigmoid(x[0])).astype(np.uint8)
                    img = Image.fromarray(p, "L")
                    self._put(rel.with_name(rel.name + ".png"), lambda f, im=img: im.save(f, "PNG"))
        self.count += len(ids)
