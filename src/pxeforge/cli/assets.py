"""``pxeforge assets``: put real boot loaders into the boot root.

``pxeforge assets fetch --root DIR`` downloads Debian's pxelinux, syslinux-common,
shim-signed, grub-efi-amd64-signed and ipxe packages (``apt-get download``, or ``--mirror``),
or reads the .deb/.rpm files given with ``--from``, and installs pxelinux.0, ldlinux.c32 (and
a few .c32 modules), bootx64.efi (shim), grubx64.efi, undionly.kpxe and snponly.efi, plus
MANIFEST.json. The work is `pxeforge.assets.fetch.fetch_assets`; this module only parses
options and draws progress and the result with rich.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
)
from rich.table import Table

from pxeforge.assets.fetch import (
    DEFAULT_SUITE,
    SUPPORTED_ARCHES,
    FetchResult,
    ProgressEvent,
    fetch_assets,
)
from pxeforge.cli.common import cli_error
from pxeforge.config import Settings
from pxeforge.errors import PxeforgeError

__all__ = ["assets"]


def _settings(ctx: click.Context) -> Settings:
    """The main CLI's Settings when it passed one down, else the defaults."""
    found = ctx.find_object(Settings)
    return found if isinstance(found, Settings) else Settings()


class _Reporter:
    """Turns `ProgressEvent`s into rich progress bars (one per download) on a terminal, or
    into one line per download on ``log`` (stderr) otherwise."""

    def __init__(self, progress: Progress, log: Console) -> None:
        self._progress = progress
        self._log = log
        self._tasks: dict[str, TaskID] = {}

    def __call__(self, ev: ProgressEvent) -> None:
        p = self._progress
        if ev.kind == "info":
            return
        if p.disable:
            if ev.kind in ("start", "cached"):
                what = "downloading" if ev.kind == "start" else "cached"
                self._log.print(f"{what}: {ev.message or ev.task}", markup=False, highlight=False)
            return
        task = self._tasks.get(ev.task)
        if task is None:
            label = f"{ev.task} (cached)" if ev.kind == "cached" else ev.task
            task = p.add_task(label, total=ev.total)
            self._tasks[ev.task] = task
        if ev.kind in ("advance", "start"):
            p.update(task, completed=ev.done, total=ev.total)
        elif ev.kind in ("done", "cached"):
            total = ev.total if ev.total is not None else max(ev.done, 1)
            p.update(task, completed=total, total=total)


def _show(console: Console, result: FetchResult) -> None:
    if console.is_terminal:
        table = Table(title=f"boot loaders in {result.root}")
        for col in ("file", "size", "sha256", "from"):
            table.add_column(
                col, no_wrap=col != "from", justify="right" if col == "size" else "left"
            )
        for f in result.installed:
            table.add_row(f.name, f"{f.size:,}", f.sha256, f"{f.package} {f.version}")
        console.print(table)
    else:
        for f in result.installed:
            console.print(
                f"{result.root / f.name}  {f.size}  sha256:{f.sha256}  {f.package} {f.version}",
                markup=False,
                highlight=False,
                soft_wrap=True,
            )
    if result.missing:
        console.print(f"not provided: {', '.join(result.missing)}", markup=False)
    console.print(f"manifest: {result.manifest}", markup=False, highlight=False, soft_wrap=True)


@click.group()
def assets() -> None:
    """Boot loader files for the boot root (pxelinux, shim, GRUB, iPXE)."""


@assets.command()
@click.option(
    "--root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Boot root to fill (default: the configured root).",
)
@click.option(
    "--cache",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Where downloaded packages are kept (default: DATA_DIR/cache).",
)
@click.option(
    "--from",
    "from_files",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A .deb or .rpm to take loaders from instead of downloading (repeatable).",
)
@click.option(
    "--mirror",
    default=None,
    metavar="URL",
    help="Debian mirror to download from (used anyway when apt-get is missing).",
)
@click.option("--suite", default=DEFAULT_SUITE, show_default=True, help="Debian suite (--mirror).")
@click.option("--arch", type=click.Choice(SUPPORTED_ARCHES), default="amd64", show_default=True)
@click.option("--refresh", is_flag=True, help="Fetch the mirror's package index again.")
@click.pass_context
def fetch(
    ctx: click.Context,
    root: Path | None,
    cache: Path | None,
    from_files: tuple[Path, ...],
    mirror: str | None,
    suite: str,
    arch: str,
    refresh: bool,
) -> None:
    """Install pxelinux.0, ldlinux.c32, bootx64.efi (shim), grubx64.efi, undionly.kpxe and
    snponly.efi into the boot root, with a MANIFEST.json of where each came from.

    Packages are downloaded (never installed) with apt-get download, or from --mirror, and
    cached; a second run reuses the cache without network. With --from, only the given
    .deb/.rpm files are used.
    """
    settings = _settings(ctx)
    root = root if root is not None else settings.root
    cache = cache if cache is not None else settings.data_dir / "cache"
    console = Console()
    log = Console(stderr=True)
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
    )
    try:
        with Progress(*columns, console=log, disable=not log.is_terminal) as bar:
            result = fetch_assets(
                root,
                cache,
                files=from_files,
                mirror=mirror,
                suite=suite,
                arch=arch,
                refresh=refresh,
                progress=_Reporter(bar, log),
            )
    except PxeforgeError as exc:
        raise cli_error(exc) from None
    _show(console, result)


if __name__ == "__main__":
    assets()
