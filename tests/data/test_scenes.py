"""The procedural scene generator: determinism, chunk independence and physically consistent labels."""

from __future__ import annotations

import numpy as np
import pytest

from s4t_edge.data import CLASS_NAMES, NUM_CLASSES, TASK_KEYS, scenes, synth
from s4t_edge.data.scenes import render_scenes, sample_scenes

KEYS = ("image", *TASK_KEYS)


def _equal(a, b) -> bool:
    return all(np.array_equal(getattr(a, k), getattr(b, k)) for k in KEYS)


def test_same_seed_same_bytes_other_seed_differs():
    a, b = synth("source", 4, 24, seed=11), synth("source", 4, 24, seed=11)
    assert _equal(a, b) and a.meta == b.meta
    c = synth("source", 4, 24, seed=12)
    assert not np.array_equal(a.image, c.image) and not np.array_equal(a.depth, c.depth)


@pytest.mark.parametrize("size", [24, 37])  # 37: rows not a multiple of any SIMD width
def test_image_depends_only_on_seed_and_index(size):
    whole = synth("source", 7, size, seed=3, chunk_size=7)
    assert _equal(whole, synth("source", 7, size, seed=3, chunk_size=2))
    assert _equal(whole[:4], synth("source", 4, size, seed=3, chunk_size=3))


def test_labels_are_consistent(source_small):
    ds = source_small
    assert ds.semseg.max() < NUM_CLASSES and len(CLASS_NAMES) == NUM_CLASSES == 7
    assert np.all(ds.depth > 0) and np.all(ds.depth < 20)  # a closed room: every pixel valid
    norm = np.linalg.norm(ds.normals, axis=-1)
    assert np.allclose(norm, 1, atol=1e-5)
    assert set(np.unique(ds.edge)) == {0, 1}
    # Every class occurs somewhere in two dozen scenes.
    assert set(np.unique(ds.semseg)) == set(range(NUM_CLASSES))


def test_normals_face_the_camera(source_small):
    ds = source_small
    h, w = ds.size
    tan_half = sample_scenes(7, np.arange(len(ds)), "source")["tan_half"]
    grid = (np.arange(w) + 0.5) * 2 / w - 1
    x = grid[None, None, :] * tan_half[:, None, None]
    y = grid[None, :, None] * tan_half[:, None, None]
    ray_dot_n = x * ds.normals[..., 0] + y * ds.normals[..., 1] + ds.normals[..., 2]
    assert np.all(ray_dot_n < 1e-4)


def test_depth_is_planar_z_and_agrees_with_normals(source_small):
    # Back-project floor pixels with depth = camera z: they must lie on one plane whose normal is
    # the labelled floor normal, i.e. n . X is the same for every floor pixel of an image.
    ds = source_small
    h, w = ds.size
    tan_half = sample_scenes(7, np.arange(len(ds)), "source")["tan_half"]
    grid = (np.arange(w) + 0.5) * 2 / w - 1
    checked = 0
    for i in range(len(ds)):
        floor = ds.semseg[i] == 0
        if floor.sum() < 20:
            continue
        z = ds.depth[i]
        pts = np.stack([grid[None, :] * tan_half[i] * z, grid[:, None] * tan_half[i] * z, z], -1)[
            floor
        ]
        n = ds.normals[i][floor]
        assert np.allclose(n, n[0], atol=1e-4)  # a plane has one normal
        offset = np.sum(pts * n[0], axis=-1)
        assert np.ptp(offset) < 1e-3 * np.abs(offset).max()
        checked += 1
    assert checked >= 10


def test_edges_mark_every_class_boundary_once(source_small):
    ds = source_small
    s, e = ds.semseg, ds.edge.astype(bool)
    for a, b in (
        ((slice(None), slice(None), slice(None, -1)), (slice(None), slice(None), slice(1, None))),
        ((slice(None), slice(None, -1)), (slice(None), slice(1, None))),
    ):
        change = s[a] != s[b]
        assert np.all(e[a][change] | e[b][change])  # at least one side of each boundary is marked
    # Edges are thin: full 2x2 blocks of edge only occur at thin parts (table legs) and corners.
    blocks = e[:, :-1, :-1] & e[:, 1:, :-1] & e[:, :-1, 1:] & e[:, 1:, 1:]
    assert blocks.sum() < 0.1 * e.sum()
    assert 0.02 < e.mean() < 0.2


def test_edges_lie_on_the_nearer_side(source_small):
    ds = source_small
    s, d, e = ds.semseg, ds.depth, ds.edge.astype(bool)
    change = s[:, :, :-1] != s[:, :, 1:]
    left_nearer = d[:, :, :-1] < d[:, :, 1:] - 0.05
    assert np.all(e[:, :, :-1][change & left_nearer])


def _all_pairs_camera(bc, br, cam, rot, tan_half, hw):
    k, b, pix = np.meshgrid(
        np.arange(br.shape[1]), np.arange(br.shape[0]), np.arange(hw[0] * hw[1]), indexing="ij"
    )
    keep = br[b, k] > 0
    return b[keep], k[keep], pix[keep]


def _all_pairs_shadow(bc, br, light, lvec, ldist, lit):
    k, b, pix = np.meshgrid(
        np.arange(br.shape[1]), np.arange(br.shape[0]), np.arange(ldist.shape[1]), indexing="ij"
    )
    keep = (br[b, k] > 0) & lit[b, pix]
    return b[keep], k[keep], pix[keep]


@pytest.mark.parametrize("size", [32, (20, 36), (36, 20)])
def test_broad_phase_changes_nothing(monkeypatch, size):
    # The bounding-sphere culling must be conservative: exhaustive ray/object tests give the
    # same bytes.
    idx = np.arange(12)
    fast = render_scenes(5, idx, size)
    monkeypatch.setattr(scenes, "camera_pairs", _all_pairs_camera)
    monkeypatch.setattr(scenes, "shadow_pairs", _all_pairs_shadow)
    slow = render_scenes(5, idx, size)
    for k in fast:
        assert np.array_equal(fast[k], slow[k]), k


def test_non_square_images():
    ds = synth("blur", 3, (20, 36), seed=2)
    assert ds.image.shape == (3, 20, 36, 3) and ds.normals.shape == (3, 20, 36, 3)
    assert ds.meta["size"] == [20, 36]
    # Same camera and field of view across the width: the middle rows of a wide image match the
    # rows of a square one of the same width.
    square = synth("source", 3, 36, seed=2)
    wide = synth("source", 3, (20, 36), seed=2)
    assert np.array_equal(wide.semseg, square.semseg[:, 8:28])
