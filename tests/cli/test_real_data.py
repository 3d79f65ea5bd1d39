"""Datasets on disk through the CLI: data import/info, eval/adapt/train on streamed data, errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from s4t_edge.data import load_dataset
from tests.cli.conftest import run_cli
from tests.data.trees import make_nyud, make_taskonomy


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _one_line_error(code: int, err: str, *parts: str) -> None:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for p in parts:
        assert p in lines[0], lines[0]


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("trees")
    make_nyud(root / "nyud", [f"{i:04d}" for i in range(5)])
    make_taskonomy(root / "tsk", {"s1": [(0, 0), (0, 1), (1, 0)], "s2": [(4, 4)]})
    return {"nyud": root / "nyud", "tsk": root / "tsk"}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A tiny run (64x64, the default 7-class tasks) trained for 2 steps on synthetic data."""
    from s4t_edge.cli.main import main
    from s4t_edge.data import save_dataset, synth

    d = tmp_path_factory.mktemp("run")
    save_dataset(d / "train.npz", synth("source", 8, 64, 0))
    argv = ["train", "--train", d / "train.npz", "--steps", "2", "--batch-size", "2"]
    try:
        main([str(a) for a in [*argv, "--out", d / "run", "--quiet"]])
    except SystemExit as e:
        assert not e.code
    return d / "run"


def test_import_gives_the_protocol_labels_and_refuses_to_overwrite(trees, tmp_path, capsys):
    out = tmp_path / "nyud_val.npz"
    code, stdout, err = run_cli(
        capsys, "data", "import", "nyud", trees["nyud"], "--split", "val",
        "--protocol", "nyud-taskonomy", "--out", out,
    )  # fmt: skip
    assert code == 0, err
    ds = load_dataset(out)
    # the protocol's NYUD size is 448x576 with published pad geometry: 6x8 centred at (221, 284)
    assert ds.size == (448, 576) and "wrote 5 nyud images 448x576" in stdout
    raw = np.asarray(Image.open(trees["nyud"] / "segmentation" / "0003.png")).astype(np.int64)
    table = {24: 0, 7: 1, 33: 2, 6: 3, 4: 4, 34: 5, 5: 6}
    want = np.full(raw.shape, 255, np.uint8)
    for v, k in table.items():
        want[raw == v] = k
    np.testing.assert_array_equal(ds.semseg[3, 221:227, 284:292], want)
    assert (ds.semseg[3, :221] == 255).all() and ds.meta["ids"][3] == "0003"
    before = out.read_bytes()
    code, _, err = run_cli(
        capsys, "data", "import", "nyud", trees["nyud"], "--split", "val", "--out", out
    )
    _one_line_error(code, err, "exists; pass --overwrite")
    assert out.read_bytes() == before
    code, _, err = run_cli(
        capsys, "data", "import", "nyud", trees["nyud"], "--out", trees["nyud"] / "x.npz"
    )
    _one_line_error(code, err, "inside the dataset folder")


def test_info_describes_streams_and_files(trees, tmp_path, capsys):
    code, out, err = run_cli(capsys, "data", "info", f"taskonomy:{trees['tsk']}", "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["kind"] == "stream" and info["n"] == 4 and info["size"] == [8, 8]
    assert info["tasks"] == ["semseg", "depth", "normals", "edge"]
    code, out, _ = run_cli(capsys, "data", "info", f"nyud:{trees['nyud']}:val")
    assert "5 images 6x8 (streamed from disk)" in out and "semseg classes" in out


@pytest.mark.parametrize(
    "argv, parts",
    [
        (["data", "import", "nyud", "{nyud}", "--protocol", "nyu-task", "--out", "{o}"],
         ["unknown protocol 'nyu-task'"]),
        (["data", "info", "pascal:{nyud}"], ["ImageSets/Context/val.txt: split list not found"]),
        (["data", "import", "taskonomy", "{tsk}", "--split", "medium/val", "--out", "{o}"],
         ["unknown Taskonomy split"]),
        (["data", "info", "{nyud}"], ["is a folder; name its layout"]),
    ],
)  # fmt: skip
def test_bad_specs_and_trees_exit_2_in_one_line(argv, parts, trees, tmp_path, capsys):
    args = [a.format(nyud=trees["nyud"], tsk=trees["tsk"], o=tmp_path / "o.npz") for a in argv]
    code, _, err = run_cli(capsys, *args)
    _one_line_error(code, err, *parts)
    assert not (tmp_path / "o.npz").exists()


def test_missing_modality_file_is_named_by_the_cli(trees, tmp_path, capsys):
    import shutil

    root = tmp_path / "broken"
    shutil.copytree(trees["nyud"], root)
    (root / "normals" / "0004.png").unlink()
    code, _, err = run_cli(capsys, "data", "import", "nyud", root, "--out", tmp_path / "b.npz")
    _one_line_error(code, err, str(root / "normals" / "0004.png"), "restore the file")


def test_eval_streams_a_split_and_matches_the_imported_file(run_dir, trees, tmp_path, capsys):
    spec = f"nyud:{trees['nyud']}:val"
    code, _, err = run_cli(capsys, "eval", run_dir, "--data", spec)
    _one_line_error(code, err, "semseg classes 0-39", "model has 7")  # 40 NYUD classes
    a, b = tmp_path / "a.json", tmp_path / "b.json"
    code, _, err = run_cli(
        capsys, "eval", run_dir, "--data", spec, "--protocol", "nyud-taskonomy",
        "--batch-size", "2", "--json", a,
    )  # fmt: skip
    assert code == 0, err
    npz = tmp_path / "n.npz"
    code, _, err = run_cli(
        capsys, "data", "import", "nyud", trees["nyud"], "--split", "val",
        "--protocol", "nyud-taskonomy", "--size", "64", "64", "--out", npz,
    )  # fmt: skip
    assert code == 0, err
    code, _, err = run_cli(capsys, "eval", run_dir, "--data", npz, "--batch-size", "2", "--json", b)
    assert code == 0, err
    ma, mb = json.loads(a.read_text()), json.loads(b.read_text())
    assert ma["protocol"] == "nyud-taskonomy"
    assert ma["metrics"] == mb["metrics"] and set(ma["metrics"]) == {
        "semseg", "depth", "normals", "edge",
    }  # fmt: skip


def test_eval_on_unlabeled_images_writes_predictions(run_dir, tmp_path, capsys):
    d = tmp_path / "frames"
    d.mkdir()
    rng = np.random.default_rng(0)
    for name in ("f1", "f2", "f3"):
        Image.fromarray(rng.integers(0, 256, (30, 40, 3), dtype=np.uint8)).save(d / f"{name}.jpg")
    code, _, err = run_cli(capsys, "eval", run_dir, "--data", f"images:{d}")
    _one_line_error(code, err, "--predictions DIR")
    code, out, err = run_cli(
        capsys, "eval", run_dir, "--data", f"images:{d}", "--predictions", tmp_path / "p",
        "--json", tmp_path / "m.json",
    )  # fmt: skip
    assert code == 0, err
    assert "metrics skipped" in out and "predictions of 3 images" in out
    sem = np.asarray(Image.open(tmp_path / "p" / "semseg" / "f2.png"))
    assert sem.shape == (64, 64) and sem.max() < 7
    assert np.load(tmp_path / "p" / "depth" / "f3.npy").shape == (64, 64)
    assert json.loads((tmp_path / "m.json").read_text())["metrics"] == {}


def test_adapt_streams_taskonomy_under_a_protocol(trees, tmp_path, capsys):
    from tests.toy_artifact import build_toy_artifact

    tasks = (("semseg", 7), ("depth", 1), ("normals", 3), ("edge", 1))
    art = build_toy_artifact(tmp_path / "art", tasks=tasks, steps=2)
    out = tmp_path / "a.json"
    code, stdout, err = run_cli(
        capsys, "adapt", art, "--data", f"taskonomy:{trees['tsk']}", "--protocol",
        "nyud-taskonomy", "--steps", "2", "--lr", "0.01", "--json", out,
        "--predictions", tmp_path / "p",
    )  # fmt: skip
    assert code == 0, err
    res = json.loads(out.read_text())
    assert res["n_images"] == 4 and res["protocol"] == "nyud-taskonomy"
    assert set(res["before"]["metrics"]) == {"semseg", "depth", "normals", "edge"}
    assert (tmp_path / "p" / "edge" / "s2" / "point_4_view_4.png").is_file()


def test_train_under_a_protocol_records_it(trees, tmp_path, capsys):
    from s4t_edge.export.manifest import source_protocol

    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "train", "--preset", "tiny", "--protocol", "taskonomy-nyud",
        "--train", f"taskonomy:{trees['tsk']}", "--steps", "1", "--batch-size", "2",
        "--val-every", "0", "--out", out, "--quiet",
    )  # fmt: skip
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["protocol"]["name"] == "taskonomy-nyud"
    assert cfg["model"]["input_size"] == [256, 256] and cfg["model"]["mean"] == [0.5, 0.5, 0.5]
    assert [t[0] for t in cfg["model"]["tasks"]] == ["depth", "edge", "normals", "semseg"]
    assert cfg["s4t"]["normals_loss"] == "cosine" and cfg["train"]["lr"] == 2e-5
    assert cfg["data"]["train"]["spec"].startswith("taskonomy:")
    assert source_protocol(str(out))["name"] == "taskonomy-nyud"  # what export puts in the manifest
    code, _, err = run_cli(
        capsys, "train", "--protocol", "nyud-taskonomy", "--tasks", "semseg=5,depth",
        "--train", f"nyud:{trees['nyud']}:val", "--out", tmp_path / "r2",
    )  # fmt: skip
    _one_line_error(code, err, "--tasks contradicts --protocol nyud-taskonomy")
