"""Taskonomy in the per-domain layout the published S4T code reads (facts sheet §1.4, §2.3).

::

    ROOT/<domain>/taskonomy/<scene>/point_<p>_view_<v>_domain_<domain>.png
        domains: rgb, depth_zbuffer, normal, edge_occlusion, segment_semantic
    ROOT/splits_taskonomy/train_val_test_<name>.csv   header row; scene, is_train, is_val, is_test

Splits (the SPLIT of ``taskonomy:ROOT:SPLIT``): ``all`` (default: every scene on disk, sorted),
``NAME/PARTITION`` with NAME one of tiny, medium, fullplus, custom (a CSV above) and PARTITION
``train`` (rows with is_train or is_val = '1', as published) or ``test`` (all other rows), or a
bare ``train`` / ``test`` for the published choice (tiny/train, custom/test).  The scenes
woodbine and wiconisco are always dropped, as published; the published code also drops 26 (or,
for fullplus, 13) further scenes whose names the facts sheet does not list -- not reproduced.
Scenes of a CSV that are not on disk are skipped (a partial download is normal) and counted in
``meta["scenes_missing"]``.

Decoding to the dataset contract:

* rgb: as stored.  (The published [-1, 1] scaling is the model's normalisation: mean = std = 0.5.)
* depth_zbuffer (16-bit, 1/512 m, 65535 = missing): metres ``v / 512``, missing -> 0 (invalid).
* normal (8-bit RGB): ``1 - 2 v / 255`` (the published loader inverts the png first), unit
  length, vectors without a direction invalid.
* edge_occlusion (16-bit): ``v / 409.6 >= 0.5``, i.e. v >= 205, -> {0, 1}.  The published loader
  regresses the blurred continuous value (``2 v / 409.6 - 1``, Gaussian sigma 4); the contract's
  edges are binary, so that encoding is not offered.
* segment_semantic (8-bit, 0..17): raw ids, then the protocol's remap (§3).

Defects of the published loader handled here (facts §7):

* modalities were paired by *position* in each folder's sorted listing (§7.16), so one missing
  file shifted every later label; here they are paired by the (point, view) of the file name,
  and an rgb frame without a label file is an error naming the file;
* labels were resized *bilinearly* (§7.6), creating spurious class ids and blending missing
  depth into valid pixels; here they are resized with nearest neighbour;
* depth had no validity mask (§7.8): missing depth read as 1.0 and was trained and scored on.

``published_quirks=True`` reproduces what changes reported numbers: bilinear resizing of every
modality on the raw values, depth as ``ln(1 + v) / ln 65536`` with no mask, raw (unnormalised,
unmasked) normals, and the test partition cut to its first 10 % (§1.4).  The sample order is the
published one either way (CSV scene order, then the sorted file names).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np

from s4t_edge.data.decode import binary_edges, class_lut, normals_from_rgb
from s4t_edge.data.files import read_label8, read_label16, read_rgb
from s4t_edge.data.geometry import Plan, apply, resize_bilinear_rgb, resize_nearest
from s4t_edge.data.protocols import TASKONOMY18_NAMES, Protocol
from s4t_edge.data.source import Reader
from s4t_edge.errors import DataError

#: task kind -> Taskonomy domain folder
DOMAINS = {
    "image": "rgb",
    "depth": "depth_zbuffer",
    "normals": "normal",
    "edge": "edge_occlusion",
    "semseg": "segment_semantic",
}
TASKS = ("depth", "edge", "normals", "semseg")
CSV_NAMES = ("tiny", "medium", "fullplus", "custom")
PUBLISHED_CSV = {"train": "tiny", "test": "custom"}
ALWAYS_DROPPED = ("woodbine", "wiconisco")
DEPTH_UNITS_PER_M = 512.0
DEPTH_MISSING = 65535
EDGE_SCALE = 409.6  # 0.00625 * 2**16, the published normaliser
EDGE_THRESHOLD = 0.5 * EDGE_SCALE

_NAME = re.compile(r"^point_(\d+)_view_(\d+)_domain_([a-z_]+)\.png$")


def _parse_split(split: str) -> tuple[str | None, str | None]:
    """'all' -> (None, None); 'train' -> ('tiny', 'train'); 'medium/test' -> ('medium', 'test')."""
    if split in ("", "all"):
        return None, None
    name, _, part = split.rpartition("/")
    if part not in ("train", "test"):
        raise DataError(
            f"unknown Taskonomy split {split!r}; use all, train, test or NAME/train|test "
            f"with NAME one of {', '.join(CSV_NAMES)}"
        )
    name = name or PUBLISHED_CSV[part]
    if name not in CSV_NAMES:
        raise DataError(
            f"unknown Taskonomy split file {name!r} in {split!r}; choose one of {', '.join(CSV_NAMES)}"
        )
    return name, part


def read_split_csv(path: Path, partition: str) -> list[str]:
    """Scenes of one partition of a Taskonomy split CSV, in file order (published rules)."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise DataError(
            f"{path}: split file not found; put the Taskonomy split CSVs in "
            f"{path.parent} or use the split 'all'"
        ) from None
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path}: cannot read the split CSV ({e}); restore it") from None
    scenes = []
    for n, row in enumerate(rows[1:], start=2):
        if not row or not row[0].strip():
            continue
        if len(row) < 4:
            raise DataError(
                f"{path}: line {n} has {len(row)} columns; expected scene,is_train,is_val,is_test"
            )
        scene = row[0].strip()
        if "/" in scene or "\\" in scene or scene in (".", ".."):
            raise DataError(f"{path}: line {n}: {scene!r} is not a scene name")
        in_train = row[1].strip() == "1" or row[2].strip() == "1"
        if (partition == "train") == in_train:
            scenes.append(scene)
    return scenes


class TaskonomyReader(Reader):
    """Frames of the Taskonomy scenes of a split, paired across domains by (point, view)."""

    kind = "taskonomy"

    def __init__(
        self,
        root: str | Path,
        split: str = "all",
        protocol: Protocol | None = None,
        tasks: tuple[str, ...] | None = None,
        published_quirks: bool = False,
    ) -> None:
        super().__init__()
        side = self._open(
            root,
            "Taskonomy",
            "rgb/taskonomy/<scene>/ and the other domain folders",
            protocol,
            tasks,
            TASKS,
            published_quirks,
        )
        rgb_root = self.root / "rgb" / "taskonomy"
        if not rgb_root.is_dir():
            raise DataError(
                f"{rgb_root}: not found; a Taskonomy root holds <domain>/taskonomy/<scene>/ "
                "folders (the omnidata download layout)"
            )
        csv_name, partition = _parse_split(split)
        on_disk = sorted(
            p.name for p in rgb_root.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        if csv_name is None:
            wanted = on_disk
        else:
            wanted = read_split_csv(
                self.root / "splits_taskonomy" / f"train_val_test_{csv_name}.csv", partition
            )
        present = set(on_disk)
        scenes = [s for s in wanted if s not in ALWAYS_DROPPED]
        missing = [s for s in scenes if s not in present]
        scenes = [s for s in scenes if s in present]
        if not scenes:
            raise DataError(
                f"{rgb_root}: none of the {len(wanted)} scenes of split {split!r} is on disk; "
                "download them or choose another split"
            )
        self.paths: list[dict[str, Path]] = []
        ids: list[str] = []
        for scene in scenes:
            frames = self._list(self.root / DOMAINS["image"] / "taskonomy" / scene, "rgb")
            per_domain = {}
            for t in self.tasks:
                folder = self.root / DOMAINS[t] / "taskonomy" / scene
                if not folder.is_dir():
                    raise DataError(
                        f"{folder}: the {DOMAINS[t]} folder of scene {scene!r} is missing; "
                        f"download it or drop the scene (its rgb frames have no {t} labels)"
                    )
                per_domain[t] = self._list(folder, DOMAINS[t])
            for key, rgb_path in frames:
                entry = {"image": rgb_path}
                for t in self.tasks:
                    got = per_domain[t].get(key)
                    if got is None:
                        want = (
                            self.root
                            / DOMAINS[t]
                            / "taskonomy"
                            / scene
                            / f"point_{key[0]}_view_{key[1]}_domain_{DOMAINS[t]}.png"
                        )
                        raise DataError(
                            f"{want}: {t} label of {rgb_path.name} is missing; restore it "
                            f"(labels are paired with rgb frames by point and view)"
                        )
                    entry[t] = got
                self.paths.append(entry)
                ids.append(f"{scene}/point_{key[0]}_view_{key[1]}")
        if self.quirks and partition == "test":
            keep = len(ids) // 10  # the published test set is the first 10 % of the list
            ids, self.paths = ids[:keep], self.paths[:keep]
            if not ids:
                raise DataError(
                    f"the first 10 % of the {split!r} partition is empty (fewer than 10 frames); "
                    "drop --published-quirks or add scenes"
                )
        self.ids = ids
        self.lut = class_lut(18, 0, side.class_ids if side is not None else None)
        names_out = list(protocol.classes) if protocol is not None else list(TASKONOMY18_NAMES)
        self.meta: dict[str, Any] = {
            "dataset": "taskonomy",
            "root": str(self.root),
            "split": split,
            "protocol": protocol.name if protocol is not None else None,
            "class_names": names_out,
            "num_classes": len(names_out),
            "published_quirks": self.quirks,
            "scenes": len(scenes),
            "scenes_missing": len(missing),
        }

    @staticmethod
    def _list(folder: Path, domain: str) -> Any:
        """rgb: [((point, view), path)] in sorted file-name order; labels: {(point, view): path}."""
        entries = []
        for name in sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")):
            m = _NAME.match(name)
            if m is None or m.group(3) != domain:
                raise DataError(
                    f"{folder / name}: not a Taskonomy {domain} file name "
                    f"(point_<p>_view_<v>_domain_{domain}.png); move it out of the folder"
                )
            entries.append(((m.group(1), m.group(2)), folder / name))
        if domain == "rgb":
            return entries
        return dict(entries)

    def path_of(self, i: int) -> str:
        return str(self.paths[i]["image"])

    def _raw(self, i: int) -> dict[str, np.ndarray]:
        p = self.paths[i]
        raw = {"image": read_rgb(p["image"])}
        for t in self.tasks:
            if t in ("depth", "edge"):
                raw[t] = read_label16(p[t], DOMAINS[t])
            elif t == "normals":
                raw[t] = read_rgb(p[t])
            else:
                raw[t] = read_label8(p[t], DOMAINS[t])
        h, w = raw["image"].shape[:2]
        for t in self.tasks:
            if raw[t].shape[:2] != (h, w):
                raise DataError(
                    f"{p[t]}: {DOMAINS[t]} is {raw[t].shape[0]}x{raw[t].shape[1]} but its rgb "
                    f"frame is {h}x{w}; re-extract the file (all domains share the frame size)"
                )
        return raw

    def _decode(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        out = {"image": raw["image"]}
        for t in self.tasks:
            v = raw[t]
            if t == "depth":
                if self.quirks:
                    out[t] = (np.log1p(v.astype(np.float64)) / np.log(65536.0)).astype(np.float32)
                else:
                    d = v.astype(np.float32) / np.float32(DEPTH_UNITS_PER_M)
                    out[t] = np.where(v == DEPTH_MISSING, np.float32(0.0), d).astype(np.float32)
            elif t == "normals":
                out[t] = normals_from_rgb(v, negate=True, quirks=self.quirks)
            elif t == "edge":
                out[t] = binary_edges(v, EDGE_THRESHOLD)
            else:
                out[t] = self.lut[v]
        return out

    def load_native(self, i: int) -> dict[str, np.ndarray]:
        return self._decode(self._raw(i))

    def load(self, i: int) -> dict[str, np.ndarray]:
        raw = self._raw(i)
        native = raw["image"].shape[:2]
        p = self.plan_for(native)
        if p.resize is not None:
            raw = {k: self._resize(k, v, p.resize) for k, v in raw.items()}
        rest = Plan(p.resize or native, None, p.crop, p.pad)
        return apply(self._decode(raw), rest, self.pad_rgb)

    def _resize(self, kind: str, v: np.ndarray, size: tuple[int, int]) -> np.ndarray:
        if kind == "image" or (self.quirks and kind == "normals"):
            return resize_bilinear_rgb(v, size)
        if not self.quirks:
            return resize_nearest(v, size)
        from PIL import Image

        # published: PIL BILINEAR on the raw 8-bit ('L') or 16-bit ('I') label image
        if v.dtype == np.uint8:
            img = Image.fromarray(v, "L")
        else:
            img = Image.fromarray(v.astype(np.int32), "I")
        out = np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR))
        return out.astype(v.dtype)
