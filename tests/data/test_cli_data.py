"""`s4t-edge data synth | info | preview`, run through the real entry point."""

from __future__ import annotations

import json

import numpy as np
import pytest

from s4t_edge.cli.main import main
from s4t_edge.data import load_dataset, synth


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    try:
        main(list(argv))
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_synth_then_info(tmp_path, capsys):
    out = tmp_path / "fog.npz"
    code, stdout, _ = _run(
        capsys,
        "data",
        "synth",
        "--domain",
        "fog",
        "--n",
        "5",
        "--size",
        "24",
        "--seed",
        "4",
        "--out",
        str(out),
    )
    assert code == 0
    line = stdout.strip()
    assert "\n" not in line and "5 fog images 24x24" in line and " s " in line
    ds = load_dataset(out)
    assert len(ds) == 5 and ds.meta["domain"] == "fog" and ds.meta["seed"] == 4
    assert np.array_equal(ds.image, synth("fog", 5, 24, 4).image)

    code, stdout, _ = _run(capsys, "data", "info", str(out))
    assert code == 0
    assert "5 images 24x24" in stdout and "semseg, depth, normals, edge" in stdout
    assert "0:floor" in stdout and '"domain": "fog"' in stdout

    code, stdout, _ = _run(capsys, "data", "info", str(out), "--json")
    info = json.loads(stdout)
    assert info["n"] == 5 and abs(sum(info["semseg_percent"].values()) - 100) < 0.1


def test_preview_writes_png(tmp_path, capsys):
    data = tmp_path / "d.npz"
    _run(capsys, "data", "synth", "--n", "2", "--size", "16", "--out", str(data))
    png = tmp_path / "p.png"
    code, _, _ = _run(capsys, "data", "preview", str(data), "--out", str(png), "--scale", "2")
    assert code == 0 and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize(
    "argv, words",
    [
        (
            ["data", "synth", "--domain", "rain", "--out", "{tmp}/x.npz"],
            ["unknown domain 'rain'", "fog"],
        ),
        (["data", "synth", "--n", "0", "--out", "{tmp}/x.npz"], ["n must be"]),
        (["data", "synth", "--n", "2", "--out", "{tmp}"], ["is a directory"]),
        (["data", "synth", "--n", "2", "--out", "{tmp}/file/x.npz"], ["{tmp}/file"]),
        (["data", "info", "{tmp}/missing.npz"], ["not found"]),
        (["data", "info", "{tmp}/file"], ["not an .npz archive"]),
    ],
)
def test_bad_input_gives_one_line_error(tmp_path, capsys, argv, words):
    (tmp_path / "file").write_text("not a dataset")
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    code, stdout, stderr = _run(capsys, *argv)
    assert code != 0
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert "Traceback" not in stderr
    for w in words:
        assert w.replace("{tmp}", str(tmp_path)) in lines[0], (w, lines[0])
    assert not (tmp_path / "x.npz").exists()
