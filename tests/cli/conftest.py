"""Shared helper of the CLI tests."""

from __future__ import annotations

from s4t_edge.cli.main import main


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    """Run `s4t-edge ARGS` in-process: (exit code, stdout, stderr)."""
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as e:
        code = int(e.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err
