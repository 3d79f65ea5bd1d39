"""Small dataset trees in the real layouts and file types, with the raw values each file holds.

Every builder writes the files the published loaders read (8- and 16-bit PNG, JPEG, .npy, MATLAB
.mat) and returns the raw arrays it wrote, so that tests compute the expected labels from the
facts sheet's formulas independently of the readers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def png(path: Path, arr: np.ndarray, mode: str | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if arr.dtype == np.uint16:
        Image.fromarray(arr).save(path)  # 16-bit greyscale PNG
    else:
        Image.fromarray(arr, mode).save(path)


def _normals_rgb(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    n = rng.normal(size=(h, w, 3))
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    v = np.round((n + 1) * 127.5).astype(np.uint8)
    v[0, 0] = (128, 128, 128)  # no direction: must decode as invalid
    v[0, 1] = (127, 128, 128)
    return v


def make_nyud(
    root: Path, ids: list[str], size=(6, 8), seed=0, splits=None
) -> dict[str, dict[str, np.ndarray]]:
    """ROOT/{images,segmentation,depth,normals,edge}/<id>, gt_sets/<split>.txt (default: val)."""
    rng = np.random.default_rng(seed)
    h, w = size
    raw = {}
    sem_values = np.array([0, 1, 4, 5, 6, 7, 24, 33, 34, 40, 41, 200], dtype=np.uint8)
    for k, i in enumerate(ids):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sem = sem_values[(np.arange(h * w).reshape(h, w) + k) % len(sem_values)]
        depth = rng.uniform(0.5, 9.0, (h, w)).astype(np.float32)
        depth[0, 0] = 0.0
        depth[0, 2] = np.nan
        depth[1, 0] = -1.0
        normals = _normals_rgb(rng, h, w)
        edge = np.where(rng.random((h, w)) < 0.3, 255, 0).astype(np.uint8)
        png(root / "images" / f"{i}.png", image, "RGB")
        png(root / "segmentation" / f"{i}.png", sem, "L")
        (root / "depth").mkdir(parents=True, exist_ok=True)
        np.save(root / "depth" / f"{i}.npy", depth)
        png(root / "normals" / f"{i}.png", normals, "RGB")
        png(root / "edge" / f"{i}.png", edge, "L")
        raw[i] = {"image": image, "semseg": sem, "depth": depth, "normals": normals, "edge": edge}
    (root / "gt_sets").mkdir(parents=True, exist_ok=True)
    for name, members in (splits or {"val": ids}).items():
        (root / "gt_sets" / f"{name}.txt").write_text("\n".join(members) + "\n")
    return raw


CONTEXT_TABLE = {
    "wall": 440,
    "floor": 158,
    "chair": 72,
    "unknown": 431,
    "sky": 360,
    "tvmonitor": 427,
}
NYU_TABLE = {"wall": 21, "floor": 11, "chair": 5, "unknown": 20, "desk": 36}
# valid normal classes per the published rule: names in both tables except 'unknown', + tvmonitor
VALID_CONTEXT_IDS = {440, 158, 72, 427}


def make_pascal(
    root: Path, ids: list[str], size=(7, 9), seed=0, voc_for=None
) -> dict[str, dict[str, np.ndarray]]:
    """The PASCAL_MT layout; semseg under VOC12 for `voc_for` ids, else under pascal-context."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    h, w = size
    raw = {}
    voc_for = set(ids if voc_for is None else voc_for)
    sem_values = np.array([0, 5, 9, 11, 15, 16, 18, 20, 255, 3], dtype=np.uint8)
    ctx_values = np.array([440, 158, 72, 431, 360, 427, 1], dtype=np.uint16)
    for k, i in enumerate(ids):
        image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        sem = sem_values[(np.arange(h * w).reshape(h, w) * 3 + k) % len(sem_values)]
        # blocky label map: regions of 3x3 pixels, so the Laplacian edges are not everywhere
        blocks = rng.integers(0, len(ctx_values), (h // 3 + 1, w // 3 + 1))
        label_map = ctx_values[np.repeat(np.repeat(blocks, 3, 0), 3, 1)[:h, :w]]
        normals = _normals_rgb(rng, h, w)
        (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image, "RGB").save(root / "JPEGImages" / f"{i}.jpg", quality=95)
        sub = "VOC12" if i in voc_for else "pascal-context"
        pal = Image.fromarray(sem, "P")
        pal.putpalette([c for j in range(256) for c in (j, 255 - j, (7 * j) % 256)])
        (root / "semseg" / sub).mkdir(parents=True, exist_ok=True)
        pal.save(root / "semseg" / sub / f"{i}.png")
        (root / "pascal-context" / "trainval").mkdir(parents=True, exist_ok=True)
        savemat(root / "pascal-context" / "trainval" / f"{i}.mat", {"LabelMap": label_map})
        png(root / "normals_distill" / f"{i}.png", normals, "RGB")
        jpeg = np.asarray(Image.open(root / "JPEGImages" / f"{i}.jpg").convert("RGB"))
        raw[i] = {"image": jpeg, "semseg": sem, "label_map": label_map, "normals": normals}
    (root / "ImageSets" / "Context").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Context" / "val.txt").write_text("\n".join(ids) + "\n")
    (root / "db_info").mkdir(parents=True, exist_ok=True)
    (root / "db_info" / "context_classes.json").write_text(json.dumps(CONTEXT_TABLE))
    (root / "db_info" / "nyu_classes.json").write_text(json.dumps(NYU_TABLE))
    return raw


TASKONOMY_DOMAINS = {
    "image": "rgb",
    "depth": "depth_zbuffer",
    "normals": "normal",
    "edge": "edge_occlusion",
    "semseg": "segment_semantic",
}


def taskonomy_file(root: Path, kind: str, scene: str, point: int, view: int) -> Path:
    d = TASKONOMY_DOMAINS[kind]
    return root / d / "taskonomy" / scene / f"point_{point}_view_{view}_domain_{d}.png"


def make_taskonomy(
    root: Path, scenes: dict[str, list[tuple[int, int]]], size=(8, 8), seed=0
) -> dict[tuple[str, int, int], dict[str, np.ndarray]]:
    """ROOT/<domain>/taskonomy/<scene>/point_P_view_V_domain_<domain>.png for every frame."""
    rng = np.random.default_rng(seed)
    h, w = size
    raw = {}
    sem_values = np.array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 17, 18], dtype=np.uint8)
    for scene, frames in scenes.items():
        for k, (p, v) in enumerate(frames):
            image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            depth = rng.integers(0, 30000, (h, w)).astype(np.uint16)
            depth[0, :2] = 65535
            normals = _normals_rgb(rng, h, w)
            edge = rng.choice(np.array([0, 100, 204, 205, 4000], np.uint16), (h, w))
            sem = sem_values[(np.arange(h * w).reshape(h, w) + 5 * k + p) % len(sem_values)]
            for kind, arr, mode in (
                ("image", image, "RGB"),
                ("depth", depth, None),
                ("normals", normals, "RGB"),
                ("edge", edge, None),
                ("semseg", sem, "L"),
            ):
                png(taskonomy_file(root, kind, scene, p, v), arr, mode)
            raw[(scene, p, v)] = {
                "image": image, "depth": depth, "normals": normals, "edge": edge, "semseg": sem
            }  # fmt: skip
    return raw


def write_split_csv(root: Path, name: str, rows: list[tuple[str, str, str, str]]) -> None:
    d = root / "splits_taskonomy"
    d.mkdir(parents=True, exist_ok=True)
    lines = ["id,train,val,test"] + [",".join(r) for r in rows]
    (d / f"train_val_test_{name}.csv").write_text("\n".join(lines) + "\n")
