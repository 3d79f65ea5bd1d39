"""Data sources: spec grammar, streaming batches, worker processes, the bounded cache, import."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from s4t_edge.data import Dataset, StreamSource, load_dataset, open_data, parse_spec
from s4t_edge.data.importer import write_npz
from s4t_edge.data.predictions import PredictionWriter
from s4t_edge.data.source import sample_ids
from s4t_edge.errors import ConfigError, DataError
from tests.data.trees import make_nyud, make_taskonomy


def test_spec_grammar(tmp_path):
    s = parse_spec("nyud:/data/NYUDv2:val")
    assert (s.kind, str(s.root), s.split) == ("nyud", "/data/NYUDv2", "val")
    s = parse_spec("taskonomy:/data/t:tiny/test")
    assert (s.kind, str(s.root), s.split) == ("taskonomy", "/data/t", "tiny/test")
    assert parse_spec("pascal:rel/dir").split is None
    assert parse_spec("f.npz").kind == "npz"
    odd = tmp_path / "a:b"
    odd.mkdir()
    s = parse_spec(f"images:{odd}")
    assert s.root == odd and s.split is None  # an existing folder may contain ':'
    with pytest.raises(ConfigError, match="is a folder; name its layout"):
        parse_spec(str(tmp_path))
    with pytest.raises(ConfigError, match="unknown data kind 'nyu'"):
        parse_spec("nyu:/data")
    with pytest.raises(ConfigError, match="takes no split"):
        parse_spec("images:/nonexistent:val")


@pytest.fixture()
def nyud_src(tmp_path):
    root = tmp_path / "n"
    ids = [f"{i:04d}" for i in range(7)]
    make_nyud(root, ids)
    return root, ids


def test_stream_batches_equal_random_access_and_carry_ids(nyud_src):
    root, ids = nyud_src
    src = open_data(f"nyud:{root}:val", size=(8, 8))
    assert isinstance(src, StreamSource) and len(src) == 7
    parts = list(src.batches(3))
    assert [len(p) for p in parts] == [3, 3, 1]
    assert parts[2].meta["ids"] == ["0006"]
    whole = src.take(range(7))
    for key in ("image", "semseg", "depth", "normals", "edge"):
        np.testing.assert_array_equal(
            np.concatenate([getattr(p, key) for p in parts]), getattr(whole, key)
        )
    head = src.head(2)
    assert len(head) == 2 and head.sample_ids() == ids[:2]
    sub = src.subset([5, 1])
    np.testing.assert_array_equal(sub.take([0]).image, whole.image[5:6])
    assert [len(p) for p in src.batches(3, drop_last=True)] == [3, 3]


def test_worker_processes_decode_the_same_batches(nyud_src):
    root, _ = nyud_src
    serial = list(open_data(f"nyud:{root}:val", size=(8, 8), workers=0).batches(2))
    parallel = list(open_data(f"nyud:{root}:val", size=(8, 8), workers=2).batches(2))
    assert len(serial) == len(parallel) == 4
    for a, b in zip(serial, parallel):
        assert a.meta["ids"] == b.meta["ids"]
        np.testing.assert_array_equal(a.normals, b.normals)
        np.testing.assert_array_equal(a.semseg, b.semseg)


def test_worker_errors_are_one_line_data_errors(nyud_src):
    root, _ = nyud_src
    src = open_data(f"nyud:{root}:val", size=(8, 8), workers=2)
    np.save(root / "depth" / "0005.npy", np.ones((2, 2), np.float32))
    with pytest.raises(DataError, match="0005.npy: depth is 2x2 but its image is 6x8"):
        list(src.batches(2))


def test_cache_is_bounded_and_sequential_passes_bypass_it(nyud_src):
    root, _ = nyud_src
    one = 8 * 8 * (3 + 1 + 4 + 12 + 1)  # bytes of one decoded 8x8 sample, every label
    src = open_data(f"nyud:{root}:val", size=(8, 8), cache_mb=2.5 * one / 2**20)
    src.take(range(7))
    assert src._cache.bytes == 2 * one and list(src._cache.items) == [5, 6]  # LRU: the last two
    src.take([5])
    src.take([0])
    assert list(src._cache.items) == [5, 0]
    fresh = open_data(f"nyud:{root}:val", size=(8, 8))
    list(fresh.batches(3))
    assert not fresh._cache.items


def test_stream_without_exact_size_requires_one_native_size(tmp_path):
    root = tmp_path / "t"
    make_taskonomy(root, {"a": [(0, 0)]}, size=(8, 8))
    make_taskonomy(root, {"b": [(0, 0)]}, size=(6, 6), seed=1)
    src = open_data(f"taskonomy:{root}")  # native size
    with pytest.raises(DataError, match="give a size"):
        src.take([0, 1])
    assert open_data(f"taskonomy:{root}", size=(4, 4)).take([0, 1]).size == (4, 4)


def test_dataset_has_the_source_interface(source_small):
    ds: Dataset = source_small
    np.testing.assert_array_equal(ds.take([3, 1]).image, ds.image[[3, 1]])
    assert len(ds.head(5)) == 5 and ds.num_classes == 7
    part = ds.take([0])
    part.image[...] = 0  # take copies
    assert ds.image[0].any()


def test_import_round_trips_through_the_npz_contract(nyud_src, tmp_path):
    root, ids = nyud_src
    src = open_data(f"nyud:{root}:val", "nyud-taskonomy", size=(8, 8))
    out = write_npz(tmp_path / "n.npz", src, batch_size=3)
    ds = load_dataset(out)
    whole = src.take(range(len(src)))
    for key in ("image", "semseg", "depth", "normals", "edge"):
        np.testing.assert_array_equal(getattr(ds, key), getattr(whole, key))
    assert ds.meta["ids"] == ids and ds.meta["protocol"] == "nyud-taskonomy"
    assert sample_ids(ds[4:6], 4) == ids[4:6]
    again = write_npz(tmp_path / "m.npz", src, batch_size=5)
    assert again.read_bytes() == out.read_bytes()  # same subset, same bytes
    with pytest.raises(ConfigError, match="imported under protocol 'nyud-taskonomy'"):
        open_data(out, "pascal-taskonomy")


def test_images_folder_is_unlabeled_and_fitted(tmp_path):
    d = tmp_path / "frames"
    d.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3), dtype=np.uint8)).save(d / "b.png")
    Image.fromarray(rng.integers(0, 256, (20, 20), dtype=np.uint8), "L").save(d / "a.jpg")
    (d / "readme.txt").write_text("not an image")
    src = open_data(f"images:{d}", size=(8, 8))
    assert src.sample_ids() == ["a", "b"] and src.tasks_present() == []
    batch = next(src.batches(2))
    assert batch.image.shape == (2, 8, 8, 3) and batch.semseg is None
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="holds no image files"):
        open_data(f"images:{tmp_path / 'empty'}")


def test_prediction_files_hold_the_decodable_encodings(tmp_path):
    rng = np.random.default_rng(0)
    preds = {
        "semseg": rng.normal(size=(2, 5, 4, 6)).astype(np.float32),
        "depth": rng.normal(size=(2, 1, 4, 6)).astype(np.float32),
        "normals": rng.normal(size=(2, 3, 4, 6)).astype(np.float32),
        "edge": rng.normal(size=(2, 1, 4, 6)).astype(np.float32),
    }
    w = PredictionWriter(tmp_path / "p", {k: k for k in preds})
    w.write(["scene/a", "b"], preds)
    assert w.count == 2
    sem = np.asarray(Image.open(tmp_path / "p" / "semseg" / "scene" / "a.png"))
    np.testing.assert_array_equal(sem, preds["semseg"][0].argmax(0))
    dep = np.load(tmp_path / "p" / "depth" / "b.npy")
    np.testing.assert_array_equal(dep, np.maximum(preds["depth"][1, 0], 0))
    nrm = np.asarray(Image.open(tmp_path / "p" / "normals" / "b.png")).astype(np.float64)
    n = preds["normals"][1].transpose(1, 2, 0)
    n = n / np.linalg.norm(n, axis=-1, keepdims=True)
    np.testing.assert_allclose(nrm / 127.5 - 1, n, atol=1 / 127.5)
    edge = np.asarray(Image.open(tmp_path / "p" / "edge" / "scene" / "a.png"))
    np.testing.assert_allclose(edge / 255, 1 / (1 + np.exp(-preds["edge"][0, 0])), atol=1 / 255)
    with pytest.raises(DataError, match="not a relative file name"):
        w.write(["../x"], {"depth": preds["depth"][:1]})
