"""NYUD-v2, PASCAL-Context and Taskonomy readers: decodings, remaps, masks, pairing, bad trees.

Expected labels are computed here from the facts sheet's formulas (shared/datasets.md §2-§3) on
the raw values the tree builders wrote, never with the readers' own helpers.
"""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from PIL import Image

from s4t_edge.data import open_data
from s4t_edge.errors import ConfigError, DataError
from tests.data.trees import (
    VALID_CONTEXT_IDS,
    make_nyud,
    make_pascal,
    make_taskonomy,
    png,
    taskonomy_file,
    write_split_csv,
)


def _remap(values: np.ndarray, table: dict[int, int]) -> np.ndarray:
    out = np.full(values.shape, 255, np.uint8)
    for src, dst in table.items():
        out[values == src] = dst
    return out


def _unit_or_zero(n: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    return np.where(norm >= 0.5, n / np.maximum(norm, 1e-12), 0.0)


# --------------------------------------------------------------------------------------- NYUD
@pytest.fixture()
def nyud(tmp_path):
    root = tmp_path / "NYUDv2"
    return root, make_nyud(root, ["0001", "0002", "0003"])


def test_nyud_decodes_every_modality_as_published(nyud):
    root, raw = nyud
    src = open_data(f"nyud:{root}:val")
    assert src.size == (6, 8) and src.num_classes == 40
    ds = src.take([0, 1, 2])
    for j, i in enumerate(["0001", "0002", "0003"]):
        r = raw[i]
        np.testing.assert_array_equal(ds.image[j], r["image"])
        v = r["semseg"].astype(np.int64)
        want = np.where((v >= 1) & (v <= 40), v - 1, 255)  # minus 1, 0 -> 255
        np.testing.assert_array_equal(ds.semseg[j], want)
        d = r["depth"]
        np.testing.assert_array_equal(
            ds.depth[j], np.where(np.isfinite(d) & (d >= 0), d, 0).astype(np.float32)
        )
        n = r["normals"].astype(np.float64) * 2 / 255 - 1
        np.testing.assert_allclose(ds.normals[j], _unit_or_zero(n), atol=1e-6)
        assert not ds.normals[j][0, 0].any() and not ds.normals[j][0, 1].any()  # grey: invalid
        np.testing.assert_array_equal(ds.edge[j], (r["edge"] == 255).astype(np.uint8))


def test_nyud_protocol_remaps_to_the_seven_shared_classes(nyud):
    root, raw = nyud
    ds = open_data(f"nyud:{root}:val", "nyud-taskonomy", size=(6, 8)).take([1])
    # png value -> new index (facts §3.1: png values 24, 7, 33, 6, 4, 34, 5)
    table = {24: 0, 7: 1, 33: 2, 6: 3, 4: 4, 34: 5, 5: 6}
    np.testing.assert_array_equal(ds.semseg[0], _remap(raw["0002"]["semseg"], table))
    assert ds.meta["class_names"][0] == "refrigerator" and len(ds.meta["class_names"]) == 7


def test_nyud_published_quirks_keep_raw_unmasked_normals(nyud):
    root, raw = nyud
    ds = open_data(f"nyud:{root}:val", published_quirks=True).take([0])
    want = raw["0001"]["normals"].astype(np.float32) * np.float32(2 / 255) - 1
    np.testing.assert_allclose(ds.normals[0], want, atol=1e-6)
    assert ds.normals[0][0, 0].any()  # the grey pixel is not masked, as published


def test_nyud_pad_is_centred_and_filled_with_ignore(nyud):
    root, raw = nyud
    src = open_data(f"nyud:{root}:val", size=(9, 11), fit="pad")
    ds = src.take([0])
    r = raw["0001"]
    # 6x8 -> 9x11: top = 3 // 2 = 1, left = 3 // 2 = 1
    np.testing.assert_array_equal(ds.image[0, 1:7, 1:9], r["image"])
    assert (ds.image[0, 0] == (124, 116, 104)).all()  # ImageNet mean colour: normalises to ~0
    assert (ds.semseg[0, 7:] == 255).all() and (ds.semseg[0, :, 0] == 255).all()
    assert (ds.depth[0, 0] == 0).all() and not ds.normals[0, :, 9:].any()
    assert (ds.edge[0, 0] == 0).all()


def test_nyud_larger_than_the_size_keeps_native_unless_exact(tmp_path):
    root = tmp_path / "n"
    raw = make_nyud(root, ["a"], size=(12, 16))
    # published test geometry: pad to (448, 576) only where smaller; here nothing is smaller
    assert open_data(f"nyud:{root}:val", size=(8, 8), exact=False).size == (12, 16)
    # a static model input: letterbox, labels by nearest neighbour (never interpolated)
    ds = open_data(f"nyud:{root}:val", size=(6, 8)).take([0])
    v = raw["a"]["semseg"].astype(np.int64)[1::2, 1::2]
    np.testing.assert_array_equal(ds.semseg[0], np.where((v >= 1) & (v <= 40), v - 1, 255))
    np.testing.assert_array_equal(ds.depth[0], np.nan_to_num(raw["a"]["depth"][1::2, 1::2]).clip(0))


def test_nyud_reads_only_the_tasks_asked_for(nyud):
    root, _ = nyud
    (root / "edge" / "0002.png").unlink()
    with pytest.raises(DataError, match="0002.png"):
        open_data(f"nyud:{root}:val")
    src = open_data(f"nyud:{root}:val", tasks=("semseg", "depth"))
    assert src.tasks_present() == ["semseg", "depth"]


@pytest.mark.parametrize(
    "breakage, match",
    [
        ("missing_depth", "depth/0002.npy: depth label of split id '0002' is missing"),
        ("id_without_image", "images/9999.png: image of split id '9999' is missing"),
        ("sixteen_bit", "a 16-bit PNG"),
        ("mismatched", "is 3x8 but its image is 6x8"),
        ("no_split", "gt_sets/val.txt: split list not found"),
    ],
)
def test_nyud_bad_trees_name_the_file(nyud, breakage, match):
    root, _ = nyud
    if breakage == "missing_depth":
        (root / "depth" / "0002.npy").unlink()
    elif breakage == "id_without_image":
        with open(root / "gt_sets" / "val.txt", "a") as f:
            f.write("9999\n")
    elif breakage == "sixteen_bit":
        png(root / "segmentation" / "0001.png", np.full((6, 8), 7, np.uint16))
    elif breakage == "mismatched":
        np.save(root / "depth" / "0003.npy", np.ones((3, 8), np.float32))
    else:
        (root / "gt_sets" / "val.txt").unlink()
    with pytest.raises(DataError, match=match):
        open_data(f"nyud:{root}:val").take([0, 1, 2])


# ------------------------------------------------------------------------------------- PASCAL
@pytest.fixture()
def pascal(tmp_path):
    root = tmp_path / "PASCALContext"
    return root, make_pascal(root, ["2008_000001", "2008_000002"], voc_for=["2008_000001"])


def test_pascal_semseg_as_stored_with_voc12_first(pascal):
    root, raw = pascal
    (root / "semseg" / "pascal-context").mkdir(exist_ok=True)
    # a conflicting pascal-context copy of the first id: VOC12 must win
    shutil.copy(root / "semseg" / "VOC12" / "2008_000001.png", root / "semseg" / "pascal-context")
    Image.fromarray(np.zeros((7, 9), np.uint8), "L").save(
        root / "semseg" / "pascal-context" / "2008_000001.png"
    )
    ds = open_data(f"pascal:{root}:val").take([0, 1])
    for j, i in enumerate(["2008_000001", "2008_000002"]):
        v = raw[i]["semseg"]
        np.testing.assert_array_equal(ds.semseg[j], np.where(v <= 20, v, 255))
    assert ds.meta["num_classes"] == 21


def test_pascal_protocol_remaps_to_six_classes(pascal):
    root, raw = pascal
    ds = open_data(f"pascal:{root}:val", "pascal-taskonomy", size=(7, 9)).take([1])
    table = {11: 0, 20: 1, 5: 2, 18: 3, 16: 4, 9: 5}  # facts §3.2 (class 2 is bottle)
    np.testing.assert_array_equal(ds.semseg[0], _remap(raw["2008_000002"]["semseg"], table))
    assert ds.meta["class_names"][2] == "bottle"


def test_pascal_normals_are_masked_outside_the_nyu_like_classes(pascal):
    root, raw = pascal
    src = open_data(f"pascal:{root}:val")
    assert src.meta["normals_valid_classes"] == len(VALID_CONTEXT_IDS)
    ds = src.take([0])
    r = raw["2008_000001"]
    keep = np.isin(r["label_map"], list(VALID_CONTEXT_IDS))
    n = _unit_or_zero(r["normals"].astype(np.float64) * 2 / 255 - 1)
    np.testing.assert_allclose(ds.normals[0], np.where(keep[..., None], n, 0), atol=1e-6)
    assert keep.any() and (~keep).any()


def test_pascal_edges_are_the_thinned_laplacian_of_the_label_map(tmp_path):
    root = tmp_path / "p"
    make_pascal(root, ["a"], size=(6, 8))
    from scipy.io import savemat

    lab = np.full((6, 8), 440, np.uint16)
    lab[:, 4:] = 158  # one vertical boundary: the Laplacian marks columns 3 and 4
    savemat(root / "pascal-context" / "trainval" / "a.mat", {"LabelMap": lab})
    edge = open_data(f"pascal:{root}:val").take([0]).edge[0]
    # scikit-image 0.26 `thin` of that two-column band (computed once with it): column 3,
    # without the top row
    want = np.zeros((6, 8), np.uint8)
    want[1:, 3] = 1
    np.testing.assert_array_equal(edge, want)


def test_pascal_edges_match_opencv_and_scikit_image_where_installed():
    cv2 = pytest.importorskip("cv2")
    skm = pytest.importorskip("skimage.morphology")
    from s4t_edge.data.edges import pascal_edges

    rng = np.random.default_rng(1)
    for _ in range(20):
        lab = rng.integers(0, 4, (5, 7)).repeat(3, 0).repeat(3, 1).astype(np.float64)
        want = skm.thin(np.abs(cv2.Laplacian(lab, cv2.CV_64F)) > 0)
        np.testing.assert_array_equal(pascal_edges(lab), want.astype(np.uint8))


@pytest.mark.parametrize(
    "breakage, match",
    [
        ("db_info", "nyu_classes.json: not found"),
        ("mat", "2008_000002.mat: label map of split id"),
        ("semseg", "semseg label of split id '2008_000002' is missing"),
        ("image", "JPEGImages/2008_000002.jpg: image of split id"),
    ],
)
def test_pascal_bad_trees_name_the_file(pascal, breakage, match):
    root, _ = pascal
    if breakage == "db_info":
        shutil.rmtree(root / "db_info")
    elif breakage == "mat":
        (root / "pascal-context" / "trainval" / "2008_000002.mat").unlink()
    elif breakage == "semseg":
        (root / "semseg" / "pascal-context" / "2008_000002.png").unlink()
    else:
        (root / "JPEGImages" / "2008_000002.jpg").unlink()
    with pytest.raises(DataError, match=match):
        open_data(f"pascal:{root}:val")


# ---------------------------------------------------------------------------------- Taskonomy
FRAMES = {"alpha": [(0, 0), (0, 1), (3, 2)], "beta": [(1, 0)]}


@pytest.fixture()
def tsk(tmp_path):
    root = tmp_path / "taskonomy"
    return root, make_taskonomy(root, FRAMES)


def test_taskonomy_decodes_every_domain(tsk):
    root, raw = tsk
    src = open_data(f"taskonomy:{root}")
    assert src.sample_ids() == [
        "alpha/point_0_view_0",
        "alpha/point_0_view_1",
        "alpha/point_3_view_2",
        "beta/point_1_view_0",
    ]
    ds = src.take([2])
    r = raw[("alpha", 3, 2)]
    np.testing.assert_array_equal(ds.image[0], r["image"])
    want_depth = np.where(r["depth"] == 65535, 0, r["depth"] / 512.0)  # 1/512 m, missing -> 0
    np.testing.assert_allclose(ds.depth[0], want_depth, rtol=1e-6)
    assert (ds.depth[0][0, :2] == 0).all()
    n = 1 - 2 * r["normals"].astype(np.float64) / 255  # the published inversion
    np.testing.assert_allclose(ds.normals[0], _unit_or_zero(n), atol=1e-6)
    np.testing.assert_array_equal(ds.edge[0], (r["edge"] >= 205).astype(np.uint8))
    v = r["semseg"]
    np.testing.assert_array_equal(ds.semseg[0], np.where(v <= 17, v, 255))


def test_taskonomy_protocols_remap_their_classes(tsk):
    root, raw = tsk
    v = raw[("beta", 1, 0)]["semseg"]
    nyu = open_data(f"taskonomy:{root}", "nyud-taskonomy", size=(8, 8)).take([3]).semseg[0]
    np.testing.assert_array_equal(nyu, _remap(v, {14: 0, 7: 1, 8: 2, 4: 3, 6: 4, 13: 5, 3: 6}))
    voc = open_data(f"taskonomy:{root}", "pascal-taskonomy", size=(8, 8)).take([3])
    np.testing.assert_array_equal(voc.semseg[0], _remap(v, {7: 0, 9: 1, 2: 2, 4: 3, 5: 4, 3: 5}))
    assert voc.tasks_present() == ["semseg", "normals", "edge"]


def test_taskonomy_pairs_by_point_and_view_not_by_position(tsk):
    root, raw = tsk
    # a depth file with no rgb frame that sorts first: pairing by sorted position would shift
    # every depth map of the scene by one frame
    extra = (
        root / "depth_zbuffer" / "taskonomy" / "alpha" / "point_00_view_0_domain_depth_zbuffer.png"
    )
    png(extra, np.full((8, 8), 7, np.uint16))
    ds = open_data(f"taskonomy:{root}").take([0, 1, 2])
    for j, key in enumerate([("alpha", 0, 0), ("alpha", 0, 1), ("alpha", 3, 2)]):
        d = raw[key]["depth"]
        np.testing.assert_allclose(ds.depth[j], np.where(d == 65535, 0, d / 512.0), rtol=1e-6)


def test_taskonomy_resizes_labels_nearest_unless_published_quirks(tsk):
    root, raw = tsk
    r = raw[("alpha", 0, 1)]
    near = open_data(f"taskonomy:{root}", size=(4, 4)).take([1])
    v = r["semseg"][1::2, 1::2]
    np.testing.assert_array_equal(near.semseg[0], np.where(v <= 17, v, 255))
    np.testing.assert_array_equal(near.edge[0], (r["edge"][1::2, 1::2] >= 205).astype(np.uint8))
    quirk = open_data(f"taskonomy:{root}", size=(4, 4), published_quirks=True).take([1])
    bil = np.asarray(Image.fromarray(r["semseg"], "L").resize((4, 4), Image.Resampling.BILINEAR))
    np.testing.assert_array_equal(quirk.semseg[0], np.where(bil <= 17, bil, 255))
    dq = np.asarray(
        Image.fromarray(r["depth"].astype(np.int32), "I").resize((4, 4), Image.Resampling.BILINEAR)
    )
    np.testing.assert_allclose(quirk.depth[0], np.log1p(dq) / np.log(65536.0), rtol=1e-6)


def test_taskonomy_published_depth_has_no_mask(tsk):
    root, raw = tsk
    ds = open_data(f"taskonomy:{root}", published_quirks=True).take([0])
    d = raw[("alpha", 0, 0)]["depth"].astype(np.float64)
    np.testing.assert_allclose(ds.depth[0], np.log1p(d) / np.log(65536.0), rtol=1e-6)
    assert (ds.depth[0][0, :2] == 1.0).all()  # missing depth reads as exactly 1.0


def test_taskonomy_split_csv_partitions_and_exclusions(tsk):
    root, _ = tsk
    rows = [
        ("beta", "0", "1", "0"),  # val -> published "train" partition
        ("alpha", "0", "0", "1"),
        ("woodbine", "1", "0", "0"),  # always dropped
        ("gamma", "1", "0", "0"),  # not on disk: skipped, counted
    ]
    write_split_csv(root, "tiny", rows)
    train = open_data(f"taskonomy:{root}:train")  # bare 'train' = tiny/train, as published
    assert train.sample_ids() == ["beta/point_1_view_0"] and train.meta["scenes_missing"] == 1
    test = open_data(f"taskonomy:{root}:tiny/test")
    assert len(test) == 3
    with pytest.raises(DataError, match="fewer than 10 frames"):
        open_data(f"taskonomy:{root}:tiny/test", published_quirks=True)
    with pytest.raises(DataError, match="train_val_test_custom.csv: split file not found"):
        open_data(f"taskonomy:{root}:test")


@pytest.mark.parametrize(
    "breakage, match",
    [
        ("missing_label", "point_3_view_2_domain_normal.png: normals label of"),
        ("missing_folder", "edge_occlusion folder of scene 'beta' is missing"),
        ("eight_bit_depth", "where a 16-bit single-channel depth_zbuffer PNG is expected"),
        ("sixteen_bit_semseg", "a 16-bit PNG"),
        ("mismatched", "is 4x8 but its rgb frame is 8x8"),
        ("stray_file", "notes.txt: not a Taskonomy rgb file name"),
    ],
)
def test_taskonomy_bad_trees_name_the_file(tsk, breakage, match):
    root, _ = tsk
    if breakage == "missing_label":
        taskonomy_file(root, "normals", "alpha", 3, 2).unlink()
    elif breakage == "missing_folder":
        shutil.rmtree(root / "edge_occlusion" / "taskonomy" / "beta")
    elif breakage == "eight_bit_depth":
        png(taskonomy_file(root, "depth", "alpha", 0, 0), np.zeros((8, 8), np.uint8), "L")
    elif breakage == "sixteen_bit_semseg":
        png(taskonomy_file(root, "semseg", "alpha", 0, 0), np.zeros((8, 8), np.uint16))
    elif breakage == "mismatched":
        png(taskonomy_file(root, "edge", "alpha", 0, 0), np.zeros((4, 8), np.uint16))
    else:
        (root / "rgb" / "taskonomy" / "alpha" / "notes.txt").write_text("x")
    with pytest.raises(DataError, match=match):
        open_data(f"taskonomy:{root}").take([0])


def test_unknown_protocol_and_dataset_outside_the_protocol(tsk):
    root, _ = tsk
    with pytest.raises(ConfigError, match="unknown protocol 'nyud-pascal'"):
        open_data(f"taskonomy:{root}", "nyud-pascal")
    with pytest.raises(ConfigError, match="reads nyud .source. and taskonomy .target., not pascal"):
        open_data(f"pascal:{root}", "nyud-taskonomy")
