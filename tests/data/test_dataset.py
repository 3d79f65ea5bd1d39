"""The `.npz` dataset file: round trips, the in-memory API, and one-line errors naming the bad key."""

from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

from s4t_edge.data import TASK_KEYS, Dataset, load_dataset, save_dataset
from s4t_edge.errors import DataError, OutputPathError


def _assert_same(a: Dataset, b: Dataset) -> None:
    assert np.array_equal(a.image, b.image)
    for k in TASK_KEYS:
        x, y = getattr(a, k), getattr(b, k)
        assert (x is None) == (y is None), k
        if x is not None:
            assert x.dtype == y.dtype and np.array_equal(x, y), k
    assert a.meta == b.meta


@pytest.mark.parametrize("compress", [False, True])
def test_round_trip(tmp_path, tiny_dataset, compress):
    path = save_dataset(tmp_path / "d.npz", tiny_dataset, compress=compress)
    _assert_same(load_dataset(path), tiny_dataset)
    # Written atomically: no temp files left next to it.
    assert sorted(os.listdir(tmp_path)) == ["d.npz"]


def test_same_data_same_file_bytes(tmp_path, tiny_dataset):
    a = save_dataset(tmp_path / "a.npz", tiny_dataset, compress=True)
    b = save_dataset(tmp_path / "b.npz", tiny_dataset[0:3], compress=True)
    assert a.read_bytes() == b.read_bytes()
    with zipfile.ZipFile(a) as zf:
        assert {i.date_time for i in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}


def test_round_trip_without_labels(tmp_path, tiny_dataset):
    ds = Dataset(image=tiny_dataset.image)
    back = load_dataset(save_dataset(tmp_path / "img.npz", ds))
    assert back.tasks_present() == [] and back.meta == {}
    assert back.labels_for_metrics() == {k: None for k in TASK_KEYS}


def test_file_loads_without_pickle(tmp_path, tiny_dataset):
    path = save_dataset(tmp_path / "d.npz", tiny_dataset)
    with np.load(path, allow_pickle=False) as npz:  # raises if anything needed pickle
        assert set(npz.files) == {"image", "semseg", "depth", "normals", "edge", "meta"}
        assert npz["meta"].dtype.kind == "U"


def test_slicing_batches_and_tasks(tiny_dataset):
    ds = tiny_dataset
    assert len(ds) == 3 and ds.size == (5, 6)
    assert ds.tasks_present() == ["semseg", "depth", "normals", "edge"]
    sub = ds[1:3]
    assert isinstance(sub, Dataset) and len(sub) == 2
    assert np.array_equal(sub.depth, ds.depth[1:3]) and sub.meta == ds.meta
    one = ds[-1]
    assert len(one) == 1 and np.array_equal(one.edge[0], ds.edge[2])
    picked = ds[np.array([2, 0])]
    assert np.array_equal(picked.semseg, ds.semseg[[2, 0]])
    assert [len(b) for b in ds.batches(2)] == [2, 1]
    assert [len(b) for b in ds.batches(2, drop_last=True)] == [2]
    with pytest.raises(IndexError):
        ds[3]
    labels = ds.labels_for_metrics()
    assert set(labels) == set(TASK_KEYS) and labels["normals"] is ds.normals


def _write(path, **arrays):
    np.savez(path, **arrays)
    return path


def _arrays(ds: Dataset) -> dict:
    return {"image": ds.image, **{k: getattr(ds, k) for k in ds.tasks_present()}}


@pytest.mark.parametrize(
    "key, bad, words",
    [
        ("image", lambda a: a.astype(np.float32), ["'image'", "float32", "uint8"]),
        ("image", lambda a: a[..., 0], ["'image'", "shape"]),
        ("semseg", lambda a: a.astype(np.int64), ["'semseg'", "int64"]),
        ("depth", lambda a: a.astype(np.float64), ["'depth'", "float64", "float32"]),
        ("normals", lambda a: a[..., :2], ["'normals'", "shape"]),
        ("edge", lambda a: a[:, None], ["'edge'", "shape"]),
        ("semseg", lambda a: a[:2], ["'semseg'", "(N, H, W)"]),
        ("depth", lambda a: a[:, :, :-1], ["'depth'", "'image'"]),
        ("edge", lambda a: a * 3, ["'edge'", "0 or 1"]),
        ("depth", lambda a: np.where(a > 2, np.nan, a).astype(np.float32), ["'depth'", "NaN"]),
        ("depth", lambda a: -a, ["'depth'", "negative"]),
    ],
)
def test_validation_names_the_key(tmp_path, tiny_dataset, key, bad, words):
    arrays = _arrays(tiny_dataset)
    arrays[key] = bad(arrays[key])
    path = _write(tmp_path / "bad.npz", **arrays)
    with pytest.raises(DataError) as err:
        load_dataset(path)
    msg = str(err.value)
    assert "\n" not in msg
    for w in words:
        assert w in msg, (w, msg)


def test_missing_image(tmp_path, tiny_dataset):
    path = _write(tmp_path / "x.npz", semseg=tiny_dataset.semseg)
    with pytest.raises(DataError, match="no 'image' key.*found: semseg"):
        load_dataset(path)


def test_object_array_is_refused_not_unpickled(tmp_path, tiny_dataset):
    path = tmp_path / "obj.npz"
    np.savez(path, image=tiny_dataset.image, semseg=np.array([{"evil": 1}], dtype=object))
    with pytest.raises(DataError, match="'semseg' is an object array"):
        load_dataset(path)


def test_bad_files(tmp_path, tiny_dataset):
    with pytest.raises(DataError, match="not found.*data synth"):
        load_dataset(tmp_path / "nope.npz")
    with pytest.raises(DataError, match="is a directory"):
        load_dataset(tmp_path)
    (tmp_path / "text.npz").write_text("hello")
    with pytest.raises(DataError, match="not an .npz archive"):
        load_dataset(tmp_path / "text.npz")
    np.save(tmp_path / "single.npy", tiny_dataset.image)
    with pytest.raises(DataError, match="single .npy array"):
        load_dataset(tmp_path / "single.npy")
    good = save_dataset(tmp_path / "good.npz", tiny_dataset)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError) as err:
        load_dataset(truncated)
    assert "\n" not in str(err.value)


def test_corrupt_member_names_the_key(tmp_path, tiny_dataset):
    path = tmp_path / "corrupt.npz"
    with zipfile.ZipFile(path, "w") as zf:
        for k, v in _arrays(tiny_dataset).items():
            if k == "depth":
                zf.writestr("depth.npy", b"\x93NUMPY garbage")  # a broken member
                continue
            with zf.open(f"{k}.npy", "w") as f:
                np.lib.format.write_array(f, v)
    with pytest.raises(DataError, match="'depth'"):
        load_dataset(path)


def test_meta_must_be_json_object(tmp_path, tiny_dataset):
    path = _write(tmp_path / "m.npz", image=tiny_dataset.image, meta=np.array("{not json"))
    with pytest.raises(DataError, match="'meta' is not valid JSON"):
        load_dataset(path)
    path = _write(tmp_path / "m2.npz", image=tiny_dataset.image, meta=np.array("[1, 2]"))
    with pytest.raises(DataError, match="'meta' must be a JSON object"):
        load_dataset(path)


def test_unknown_keys_warn_and_are_ignored(tmp_path, tiny_dataset):
    path = _write(tmp_path / "u.npz", image=tiny_dataset.image, extra=np.zeros(3))
    with pytest.warns(UserWarning, match="extra"):
        ds = load_dataset(path)
    assert ds.tasks_present() == []


def test_in_memory_validation(tiny_dataset):
    with pytest.raises(DataError, match="'edge'"):
        Dataset(image=tiny_dataset.image, edge=tiny_dataset.edge.astype(bool))
    with pytest.raises(DataError, match="'image'"):
        Dataset(image=tiny_dataset.image.tolist())


def test_save_to_unwritable_paths(tmp_path, tiny_dataset):
    with pytest.raises(OutputPathError, match="is a directory"):
        save_dataset(tmp_path, tiny_dataset)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(OutputPathError):
        save_dataset(blocker / "sub" / "d.npz", tiny_dataset)
