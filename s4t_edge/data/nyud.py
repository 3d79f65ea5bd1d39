"""NYUD-v2 in the MTI-Net / ATRC layout the published S4T code reads (facts sheet §1.2, §2.1).

::

    ROOT/images/<id>.png        RGB
    ROOT/segmentation/<id>.png  8-bit, 0 = unlabeled, 1..40 = NYU-40 classes
    ROOT/depth/<id>.npy         float depth (metres), 0 = missing
    ROOT/normals/<id>.png       RGB, n = 2 v / 255 - 1
    ROOT/edge/<id>.png          8-bit, 0 / 255
    ROOT/gt_sets/<split>.txt    one id per line (train: 795, val: 654 in the usual release)

Decoding to the dataset contract:

* semseg: stored value minus 1, so 0 (unlabeled) becomes ignore (255) and the classes are
  0..39; then the protocol's remap (facts §3.1), every other class ignored.  Values above 40
  are ignored (the published loader would keep them as ids 40+).
* depth: as stored; 0, NaN, inf and negative values are invalid (0).
* normals: ``2 v / 255 - 1``, scaled to unit length; vectors without a direction are invalid.
  The published loader keeps them unnormalised and never masks them (`published_quirks`).
* edge: ``v >= 128`` (the published ``v / 255`` on 0/255 files gives the same {0, 1}).

Defects of the published loader handled here: it asserts that *all five* files exist for every
id even when a task is off (facts §7.19) -- here only the files of the tasks read are required,
all of them checked when the split is opened; and a label whose size differs from the image's
is resized silently (bicubic for normals) -- here it is an error naming the file, since it
means a broken download.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.data.decode import class_lut, clean_depth, normals_from_rgb
from s4t_edge.data.files import read_label8, read_npy, read_rgb, read_split_list
from s4t_edge.data.protocols import NYUD40_NAMES, Protocol
from s4t_edge.data.source import Reader
from s4t_edge.errors import DataError

# task -> (folder, suffix)
_FILES = {
    "image": ("images", ".png"),
    "semseg": ("segmentation", ".png"),
    "depth": ("depth", ".npy"),
    "normals": ("normals", ".png"),
    "edge": ("edge", ".png"),
}
TASKS = ("semseg", "depth", "normals", "edge")


class NyudReader(Reader):
    """Samples of one NYUD-v2 split (a name in gt_sets/, or several joined by ',')."""

    kind = "nyud"

    def __init__(
        self,
        root: str | Path,
        split: str = "val",
        protocol: Protocol | None = None,
        tasks: tuple[str, ...] | None = None,
        published_quirks: bool = False,
    ) -> None:
        super().__init__()
        side = self._open(
            root,
            "NYUD-v2",
            "images/, segmentation/, depth/, normals/, edge/, gt_sets/",
            protocol,
            tasks,
            TASKS,
            published_quirks,
        )
        # several splits are sorted and concatenated, as the published constructor does
        names = sorted(s for s in split.split(",") if s)
        ids: list[str] = []
        for name in names:
            ids += read_split_list(
                self.root / "gt_sets" / f"{name}.txt",
                f"NYUD-v2 splits are gt_sets/train.txt and gt_sets/val.txt under {self.root}",
            )
        self.ids = ids
        for key in ("image", *self.tasks):
            folder, suffix = _FILES[key]
            for i in ids:
                p = self.root / folder / f"{i}{suffix}"
                if not p.is_file():
                    what = "image" if key == "image" else f"{key} label"
                    raise DataError(
                        f"{p}: {what} of split id {i!r} is missing; restore the file or remove "
                        f"{i!r} from gt_sets/{names[0] if len(names) == 1 else split}.txt"
                    )
        remap = side.class_ids if side is not None else None
        self.lut = class_lut(40, 1, remap)
        names_out = list(protocol.classes) if protocol is not None else list(NYUD40_NAMES)
        self.meta: dict[str, Any] = {
            "dataset": "nyud",
            "root": str(self.root),
            "split": split,
            "protocol": protocol.name if protocol is not None else None,
            "class_names": names_out,
            "num_classes": len(names_out),
            "published_quirks": self.quirks,
        }

    def path(self, key: str, i: int) -> Path:
        folder, suffix = _FILES[key]
        return self.root / folder / f"{self.ids[i]}{suffix}"

    def path_of(self, i: int) -> str:
        return str(self.path("image", i))

    def load_native(self, i: int) -> dict[str, np.ndarray]:
        image = read_rgb(self.path("image", i))
        h, w = image.shape[:2]
        out = {"image": image}
        for t in self.tasks:
            p = self.path(t, i)
            if t == "semseg":
                arr = self.lut[read_label8(p, "segmentation")]
            elif t == "depth":
                arr = clean_depth(read_npy(p, "depth"))
            elif t == "normals":
                arr = normals_from_rgb(read_rgb(p), negate=False, quirks=self.quirks)
            else:
                arr = (read_label8(p, "edge") >= 128).astype(np.uint8)
            if arr.shape[:2] != (h, w):
                raise DataError(
                    f"{p}: {t} is {arr.shape[0]}x{arr.shape[1]} but its image is {h}x{w}; "
                    "re-extract the file (labels must have the image's size)"
                )
            out[t] = arr
        return out
