"""`s4t-edge export --task-weighting`: a bad value is a one-line error (exit 2), before any work."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.conftest import run_cli


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--task-weighting", "bogus"], "--task-weighting must be one of published, first-step"),
        (
            ["--task-weighting", "first-step", "--objective", "entropy"],
            "--task-weighting first-step needs --objective s4t",
        ),
    ],
)
def test_bad_task_weighting_is_one_line(tmp_path: Path, capsys, args, needle) -> None:
    run = tmp_path / "run"
    run.mkdir()
    code, _, err = run_cli(capsys, "export", run, "--out", tmp_path / "art", *args)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error:"), err
    assert needle in lines[0]
    assert not (tmp_path / "art").exists()
