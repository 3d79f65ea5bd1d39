"""`s4t-edge train` / `s4t-edge eval` through the real entry point (errors included)."""

from __future__ import annotations

import json

import pytest

from s4t_edge.cli.main import main


@pytest.fixture(scope="module", autouse=True)
def _one_torch_thread():
    """Tiny batches gain nothing from intra-op threads; on a loaded machine they only spin."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    from s4t_edge.data import save_dataset, synth

    d = tmp_path_factory.mktemp("data")
    save_dataset(d / "train.npz", synth("source", 12, 64, 0))
    save_dataset(d / "test.npz", synth("source", 4, 64, 1))
    return d


@pytest.fixture(scope="module")
def run_dir(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "tiny"
    _ok(
        [
            "train",
            "--train",
            str(npz / "train.npz"),
            "--steps",
            "2",
            "--batch-size",
            "2",
            "--out",
            str(out),
            "--quiet",
        ]
    )
    return out


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _ok(argv: list[str]) -> None:
    try:
        main(argv)
    except SystemExit as e:
        assert not e.code, f"{argv} exited {e.code}"


def _one_line_error(code: int, err: str, match: str) -> None:
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert match in lines[0], lines[0]


def test_train_then_eval_writes_the_schema(run_dir, npz, tmp_path, capsys):
    assert (run_dir / "model.safetensors").is_file()
    out = tmp_path / "m.json"
    code, stdout, _ = _run(
        ["eval", str(run_dir), "--data", str(npz / "test.npz"), "--json", str(out)], capsys
    )
    assert code == 0
    metrics = json.loads(out.read_text())["metrics"]
    assert set(metrics) == {"semseg", "depth", "normals", "edge"}
    assert set(metrics["edge"]) == {"f1", "l1"} and "rmse" in metrics["depth"]
    assert 0 <= metrics["semseg"]["miou"] <= 100
    assert "miou" in stdout and "mean_angle" in stdout


def test_eval_published_metrics_say_so(run_dir, npz, tmp_path, capsys):
    out = tmp_path / "p.json"
    argv = ["eval", str(run_dir), "--data", str(npz / "test.npz"), "--json", str(out)]
    code, stdout, _ = _run([*argv, "--metrics", "published"], capsys)
    assert code == 0 and "published metrics" in stdout
    res = json.loads(out.read_text())
    assert res["metric_set"] == "published"
    assert {t: set(v) for t, v in res["metrics"].items()} == {
        "semseg": {"miou"}, "depth": {"rmse"}, "normals": {"mean_angle"}, "edge": {"l1"},
    }  # fmt: skip
    code, _, _ = _run(argv, capsys)
    ours = json.loads(out.read_text())
    assert ours["metric_set"] == "ours"
    # same predictions: mIoU and normals agree; the scale-and-shift fit can only lower RMSE
    assert res["metrics"]["semseg"] == ours["metrics"]["semseg"]
    assert res["metrics"]["normals"]["mean_angle"] == ours["metrics"]["normals"]["mean_angle"]
    assert res["metrics"]["depth"]["rmse"] <= ours["metrics"]["depth"]["rmse"] + 1e-9


def test_eval_shift_table_markdown(run_dir, tmp_path, capsys):
    md = tmp_path / "shifts.md"
    code, stdout, _ = _run(
        ["eval", str(run_dir), "--n", "2", "--domains", "fog,night", "--markdown", str(md)], capsys
    )
    assert code == 0
    rows = [line for line in md.read_text().splitlines() if line.startswith("| ")]
    assert [r.split("|")[1].strip() for r in rows[1:]] == ["source", "fog", "night"]
    assert rows[1].rstrip(" |").endswith("+0.00")  # Δm of source against itself
    assert "Δm" in stdout


def test_resume_continues_to_more_steps(run_dir, capsys):
    code, _, err = _run(
        ["train", "--resume", "--out", str(run_dir), "--steps", "3", "--quiet"], capsys
    )
    assert code == 0, err
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["step"] == 3 and cfg["train"]["steps"] == 3


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (
            ["train", "--preset", "huge", "--train", "{npz}/train.npz", "--out", "{tmp}/r"],
            "unknown preset 'huge'",
        ),
        (
            ["train", "--tasks", "semseg,sky", "--train", "{npz}/train.npz", "--out", "{tmp}/r"],
            "unknown task 'sky'",
        ),
        (["train", "--train", "{tmp}/missing.npz", "--out", "{tmp}/r"], "missing.npz"),
        (["train", "--train", "{tmp}/bad.npz", "--out", "{tmp}/r"], "bad.npz"),
        (["train", "--train", "{npz}/train.npz", "--out", "{tmp}/afile/r"], "afile"),
        (["train", "--train", "{npz}/train.npz", "--steps", "0", "--out", "{tmp}/r"], "steps"),
        (
            ["train", "--threads", "0", "--train", "{npz}/train.npz", "--out", "{tmp}/r"],
            "--threads",
        ),
        (["train", "--resume", "--out", "{tmp}/none"], "does not exist"),
        (["eval", "{tmp}/none", "--data", "{npz}/test.npz"], "does not exist"),
        (["eval", "{tmp}", "--data", "{npz}/test.npz"], "not a run directory"),
        (["eval", "{tmp}"], "nothing to evaluate"),
    ],
)
def test_user_mistakes_are_one_line_errors(argv, match, npz, tmp_path, capsys):
    (tmp_path / "bad.npz").write_bytes(b"not a zip file")
    (tmp_path / "afile").write_text("x")
    argv = [a.format(npz=npz, tmp=tmp_path) for a in argv]
    code, _, err = _run(argv, capsys)
    _one_line_error(code, err, match)
    assert not (tmp_path / "r" / "config.json").exists()


def test_out_path_is_checked_before_the_data_is_read(npz, tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    argv = [
        "train",
        "--train",
        str(tmp_path / "missing.npz"),
        "--out",
        str(tmp_path / "afile" / "r"),
    ]
    code, _, err = _run(argv, capsys)
    _one_line_error(code, err, "afile")


def test_existing_run_is_not_overwritten(run_dir, npz, capsys):
    argv = ["train", "--train", str(npz / "train.npz"), "--out", str(run_dir)]
    code, _, err = _run(argv, capsys)
    _one_line_error(code, err, "--resume")
