"""The `pxeforge` command: a click group whose subcommands load on first use.

Subcommands live one per module (`cli/serve.py`, `cli/assets.py`, `cli/lab.py`…) and are named
here as ``"module:attribute"`` strings, so `pxeforge --help` stays fast and a broken optional
piece cannot stop `pxeforge serve` from starting.
"""

from __future__ import annotations

import importlib
import logging
import sys

import click

from pxeforge import __version__
from pxeforge.errors import ConfigError, PxeforgeError

__all__ = ["main"]

SUBCOMMANDS: dict[str, str] = {
    "serve": "pxeforge.cli.serve:serve",
    "assets": "pxeforge.cli.assets:assets",
    "lab": "pxeforge.cli.lab:lab",
    "ramdisk": "pxeforge.cli.ramdisk:ramdisk",
    "trace": "pxeforge.cli.trace:trace",
    "node": "pxeforge.cli.node:node",
    "image": "pxeforge.cli.image:image",
    "doctor": "pxeforge.cli.doctor:doctor",
    "rule": "pxeforge.cli.rule:rule",
}


class LazyGroup(click.Group):
    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *SUBCOMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = SUBCOMMANDS.get(cmd_name)
        if target is None:
            return super().get_command(ctx, cmd_name)
        module_name, _, attr = target.partition(":")
        command = getattr(importlib.import_module(module_name), attr)
        assert isinstance(command, click.Command)
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pxeforge")
@click.option("-v", "--verbose", count=True, help="More logging (-v info, -vv debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
def cli(verbose: int, quiet: bool) -> None:
    """pxeforge: PXE DHCP, TFTP and HTTP boot and bare-metal provisioning in one process."""
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def main() -> None:
    try:
        # without standalone mode click *returns* the status of ctx.exit(n) / Exit(n)
        status = cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except ConfigError as exc:
        click.echo(f"pxeforge: configuration error: {exc}", err=True)
        sys.exit(2)
    except PxeforgeError as exc:
        click.echo(f"pxeforge: {exc}", err=True)
        sys.exit(1)
    if isinstance(status, int) and not isinstance(status, bool) and status != 0:
        sys.exit(status)


if __name__ == "__main__":
    main()
