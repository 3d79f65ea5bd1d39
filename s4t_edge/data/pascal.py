"""PASCAL-Context in the MTI-Net "PASCAL_MT" layout the published S4T code reads (facts §1.3, §2.2).

::

    ROOT/JPEGImages/<id>.jpg
    ROOT/semseg/VOC12/<id>.png            (else ROOT/semseg/pascal-context/<id>.png)
                                          8-bit, 0 = background, 1..20 = VOC classes, 255 = void
    ROOT/pascal-context/trainval/<id>.mat variable LabelMap: the 459-class PASCAL-Context labels
    ROOT/normals_distill/<id>.png         RGB, n = 2 v / 255 - 1 (distilled from an NYUD model)
    ROOT/ImageSets/Context/<split>.txt    one id per line
    ROOT/db_info/nyu_classes.json,        name -> id tables of the S4T/MTI-Net code (data/db_info/),
    ROOT/db_info/context_classes.json     needed for the normals' valid classes

Decoding to the dataset contract:

* semseg: as stored (no shift), 21 classes 0..20, 255 ignore; then the protocol's remap (§3.2:
  6 classes, background and void ignored).
* edge: the Laplacian of LabelMap, non-zero pixels thinned to 1-pixel lines (`s4t_edge.data.edges`,
  identical to the published OpenCV + scikit-image computation).
* normals: ``2 v / 255 - 1``, set to 0 (invalid) on every pixel whose LabelMap class is not one
  of the NYU-like Context classes (the names of nyu_classes.json found in context_classes.json,
  'unknown' excluded, plus tvmonitor: 170 ids with the published tables); then unit length.

Defects of the published loader handled here: it requires saliency and human-parts files for
every id although S4T uses neither (facts §7.19) -- here only the files read are required; and it
resizes mismatched labels silently -- here that is an error naming the file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.data.decode import class_lut, normals_from_rgb
from s4t_edge.data.edges import pascal_edges
from s4t_edge.data.files import read_label8, read_mat_array, read_rgb, read_split_list
from s4t_edge.data.protocols import VOC21_NAMES, Protocol
from s4t_edge.data.source import Reader
from s4t_edge.errors import DataError

TASKS = ("semseg", "normals", "edge")
TVMONITOR_ID = 427  # added to the valid normal classes by the published loader


def valid_normal_classes(db_info: Path) -> np.ndarray:
    """Sorted Context ids whose normals the published loader keeps (facts §2.2)."""
    tables = {}
    for name in ("nyu_classes.json", "context_classes.json"):
        p = db_info / name
        try:
            tables[name] = json.loads(p.read_text())
        except FileNotFoundError:
            raise DataError(
                f"{p}: not found; PASCAL-Context normals need the valid-class tables: copy "
                "nyu_classes.json and context_classes.json from the S4T (or MTI-Net) code's "
                f"data/db_info/ into {db_info}"
            ) from None
        except (OSError, json.JSONDecodeError) as e:
            raise DataError(f"{p}: not a readable JSON table ({e}); restore it") from None
        if not isinstance(tables[name], dict):
            raise DataError(f"{p}: expected a JSON object name -> id")
    nyu, context = tables["nyu_classes.json"], tables["context_classes.json"]
    ids = {int(context[n]) for n in nyu if n in context and n != "unknown"}
    ids.add(TVMONITOR_ID)
    return np.array(sorted(ids), dtype=np.int64)


class PascalReader(Reader):
    """Samples of one PASCAL-Context split (ImageSets/Context/<split>.txt)."""

    kind = "pascal"

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
            "PASCAL-Context",
            "JPEGImages/, semseg/, pascal-context/, ImageSets/",
            protocol,
            tasks,
            TASKS,
            published_quirks,
        )
        names = sorted(s for s in split.split(",") if s)
        ids: list[str] = []
        for name in names:
            ids += read_split_list(
                self.root / "ImageSets" / "Context" / f"{name}.txt",
                f"PASCAL-Context splits are ImageSets/Context/train.txt and val.txt under {self.root}",
            )
        self.ids = ids
        self.semseg_paths: list[Path] = []
        listing = f"ImageSets/Context/{split}.txt"
        for i in ids:
            img = self.root / "JPEGImages" / f"{i}.jpg"
            if not img.is_file():
                raise DataError(
                    f"{img}: image of split id {i!r} is missing; restore it or remove {i!r} from {listing}"
                )
            if "semseg" in self.tasks:
                voc = self.root / "semseg" / "VOC12" / f"{i}.png"
                ctx = self.root / "semseg" / "pascal-context" / f"{i}.png"
                if voc.is_file():
                    self.semseg_paths.append(voc)
                elif ctx.is_file():
                    self.semseg_paths.append(ctx)
                else:
                    raise DataError(
                        f"{voc}: semseg label of split id {i!r} is missing (nor in "
                        f"semseg/pascal-context/); restore it or remove {i!r} from {listing}"
                    )
            if "edge" in self.tasks or "normals" in self.tasks:
                mat = self.label_map_path(i)
                if not mat.is_file():
                    raise DataError(
                        f"{mat}: label map of split id {i!r} is missing (edges and normals are "
                        f"derived from it); restore it or remove {i!r} from {listing}"
                    )
            if "normals" in self.tasks:
                nrm = self.root / "normals_distill" / f"{i}.png"
                if not nrm.is_file():
                    raise DataError(
                        f"{nrm}: normals label of split id {i!r} is missing; restore it or "
                        f"remove {i!r} from {listing}"
                    )
        self.valid_ids = None
        if "normals" in self.tasks:
            here = self.root / "db_info"
            up = self.root.parent / "db_info"
            self.valid_ids = valid_normal_classes(here if here.is_dir() or not up.is_dir() else up)
        self.lut = class_lut(21, 0, side.class_ids if side is not None else None)
        names_out = list(protocol.classes) if protocol is not None else list(VOC21_NAMES)
        self.meta: dict[str, Any] = {
            "dataset": "pascal",
            "root": str(self.root),
            "split": split,
            "protocol": protocol.name if protocol is not None else None,
            "class_names": names_out,
            "num_classes": len(names_out),
            "published_quirks": self.quirks,
        }
        if self.valid_ids is not None:
            self.meta["normals_valid_classes"] = int(len(self.valid_ids))

    def label_map_path(self, i: str) -> Path:
        return self.root / "pascal-context" / "trainval" / f"{i}.mat"

    def path_of(self, i: int) -> str:
        return str(self.root / "JPEGImages" / f"{self.ids[i]}.jpg")

    def load_native(self, i: int) -> dict[str, np.ndarray]:
        sid = self.ids[i]
        image = read_rgb(self.path_of(i))
        h, w = image.shape[:2]
        out = {"image": image}

        def same_size(arr: np.ndarray, p: Path, what: str) -> np.ndarray:
            if arr.shape[:2] != (h, w):
                raise DataError(
                    f"{p}: {what} is {arr.shape[0]}x{arr.shape[1]} but its image is {h}x{w}; "
                    "re-extract the file (labels must have the image's size)"
                )
            return arr

        label_map = None
        if "edge" in self.tasks or "normals" in self.tasks:
            mp = self.label_map_path(sid)
            label_map = same_size(read_mat_array(mp, "LabelMap"), mp, "LabelMap")
        for t in self.tasks:
            if t == "semseg":
                p = self.semseg_paths[i]
                out[t] = self.lut[same_size(read_label8(p, "semseg"), p, "semseg")]
            elif t == "edge":
                out[t] = pascal_edges(label_map)
            else:
                p = self.root / "normals_distill" / f"{sid}.png"
                rgb = same_size(read_rgb(p), p, "normals")
                keep = np.isin(label_map, self.valid_ids)
                raw = rgb.astype(np.float32) * np.float32(2.0 / 255.0) - np.float32(1.0)
                if self.quirks:
                    out[t] = np.where(keep[..., None], raw, np.float32(0.0)).astype(np.float32)
                else:
                    n = normals_from_rgb(rgb, negate=False, quirks=False)
                    out[t] = np.where(keep[..., None], n, np.float32(0.0)).astype(np.float32)
        return out
