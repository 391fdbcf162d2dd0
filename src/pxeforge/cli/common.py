"""What every subcommand shares: how a pxeforge error becomes a click error."""

from __future__ import annotations

import click

from pxeforge.errors import ConfigError, PxeforgeError

__all__ = ["CliError", "SettingsError", "cli_error"]


class CliError(click.ClickException):
    """Shown as ``Error: …``; exit code 1."""

    exit_code = 1


class SettingsError(CliError):
    """Bad settings or arguments discovered after parsing; exit code 2."""

    exit_code = 2


def cli_error(exc: PxeforgeError | str, *, settings: bool = False) -> CliError:
    """The click error for a pxeforge error (a `ConfigError` exits 2, like a usage error)."""
    if isinstance(exc, ConfigError) or settings:
        return SettingsError(str(exc))
    return CliError(str(exc))
