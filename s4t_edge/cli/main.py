"""The `s4t-edge` click group.  Commands are registered lazily so `s4t-edge --help` stays fast."""

from __future__ import annotations

import errno
import importlib
import sys

import click

from s4t_edge import __version__
from s4t_edge.errors import S4TError
from s4t_edge.outputs import command_scope

# command name -> module under s4t_edge.cli holding a click command called `command`.
_COMMANDS = {
    "env": "env",
    "data": "data",
    "train": "train",
    "eval": "evaluate",
    "export": "export",
    "check": "check",
    "adapt": "adapt",
    "demo": "demo",
    "bench": "bench",
    "build": "build",
    "sign": "sign",
    "import": "import_checkpoint",
}


class LazyGroup(click.Group):
    """Imports a command's module only when that command runs (torch is slow to import)."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        mod_name = _COMMANDS.get(name)
        if mod_name is None:
            return None
        try:
            mod = importlib.import_module(f"s4t_edge.cli.{mod_name}")
        except ModuleNotFoundError as e:
            if e.name and e.name.startswith("s4t_edge"):
                return None  # command not implemented in this build
            raise
        return mod.command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="s4t-edge")
def cli() -> None:
    """S4T test-time training for multi-task dense prediction on edge GPUs.

    Typical flow: `data synth` -> `train` (or `import` an official S4T checkpoint) -> `export`
    -> `check` -> `adapt` / `bench` (and `build` for TensorRT engines on the device).
    """


# Resource faults that may surface anywhere (a library writing its own file, numpy allocating):
# each ends in one line, like a user mistake, instead of a traceback.
_RESOURCE_ERRNOS = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT, errno.EROFS, errno.EIO}


def main(argv: list[str] | None = None) -> None:
    """Entry point: user mistakes (S4TError) become one line on stderr and a non-zero exit.

    Each invocation gets its own output-guard scope (`s4t_edge.outputs`): inputs a command
    registers are protected until it returns.
    """
    try:
        with command_scope():
            cli.main(args=argv, prog_name="s4t-edge", standalone_mode=False)
    except S4TError as e:
        click.echo(f"error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except OSError as e:
        if e.errno not in _RESOURCE_ERRNOS:
            raise
        where = f" writing {e.filename!r}" if e.filename else ""
        click.echo(f"error: {e.strerror}{where}; free space and run again", err=True)
        sys.exit(2)
    except MemoryError:
        click.echo(
            "error: out of memory; use smaller inputs (--limit, --batch-size) or a larger machine",
            err=True,
        )
        sys.exit(2)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
