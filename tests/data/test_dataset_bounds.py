"""The .npz reader allocates what the work needs, never what a file claims (issue 15)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from s4t_edge.data import dataset as dataset_mod
from s4t_edge.data import load_dataset, save_dataset
from s4t_edge.errors import DataError


def _member(zf: zipfile.ZipFile, name: str, header: dict, payload: bytes) -> None:
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, header)
    zf.writestr(name, buf.getvalue() + payload)


def test_a_header_claiming_a_billion_images_is_refused_before_allocating(tmp_path: Path) -> None:
    p = tmp_path / "forged.npz"
    with zipfile.ZipFile(p, "w") as zf:
        header = {"descr": "|u1", "fortran_order": False, "shape": (10**9, 64, 64, 3)}
        _member(zf, "image.npy", header, b"\0" * 4096)
    with pytest.raises(DataError, match="claims shape .* truncated or forged"):
        load_dataset(p)


def test_limit_inflates_only_the_rows_it_needs(tmp_path: Path, monkeypatch) -> None:
    """A small deflated file that expands to gigabytes: --limit 8 reads 8 images' bytes."""
    p = tmp_path / "bomb.npz"
    n = 2000
    with zipfile.ZipFile(p, "w", zipfile.ZIP_DEFLATED) as zf:
        with zf.open("image.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": "|u1", "fortran_order": False, "shape": (n, 128, 128, 3)}
            )
            row = np.zeros((128, 128, 3), np.uint8).tobytes()
            for _ in range(n):
                f.write(row)
    assert p.stat().st_size < 1e6  # 98 MB of images in a few hundred kB
    read: list[int] = []
    real = dataset_mod._read_member

    def spy(zf, m, rows, where):
        arr = real(zf, m, rows, where)
        read.append(arr.nbytes)
        return arr

    monkeypatch.setattr(dataset_mod, "_read_member", spy)
    ds = load_dataset(p, limit=8)
    assert len(ds) == 8 and read == [8 * 128 * 128 * 3]


def test_a_file_larger_than_memory_is_refused_with_a_hint(
    tmp_path: Path, monkeypatch, tiny_dataset
):
    p = save_dataset(tmp_path / "d.npz", tiny_dataset)  # 3 images of 5x6: 630 bytes each
    monkeypatch.setattr(dataset_mod, "available_memory", lambda: 1500)
    with pytest.raises(DataError, match="needs .* GiB .*--limit"):
        load_dataset(p)
    assert len(load_dataset(p, limit=1)) == 1  # what fits is still readable


def test_limit_reads_the_same_rows_as_slicing(tmp_path: Path, tiny_dataset) -> None:
    p = save_dataset(tmp_path / "d.npz", tiny_dataset, compress=True)
    full, head = load_dataset(p), load_dataset(p, limit=2)
    for key in ("image", "semseg", "depth", "normals", "edge"):
        np.testing.assert_array_equal(getattr(head, key), getattr(full, key)[:2])
    assert head.meta == full.meta
    assert len(load_dataset(p, limit=99)) == len(full)


def test_fortran_order_arrays_still_load(tmp_path: Path, tiny_dataset) -> None:
    p = tmp_path / "f.npz"
    np.savez(p, image=np.asfortranarray(tiny_dataset.image))
    np.testing.assert_array_equal(load_dataset(p, limit=2).image, tiny_dataset.image)


def test_object_arrays_are_refused_without_unpickling(tmp_path: Path) -> None:
    p = tmp_path / "obj.npz"
    np.savez(p, image=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="never unpickles"):
        load_dataset(p)
