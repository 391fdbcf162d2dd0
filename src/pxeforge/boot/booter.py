"""The Booter seam: all boot policy behind one method.

``boot_spec(machine)`` answers "what should this machine boot?"; ``None`` means "not ours,
ignore it" (the DHCP server then stays silent for that client). It is called several times per
boot (DHCP, then each config request), so implementations must be cheap and stateless.
Later issues add an inventory-backed booter; servers only ever see this Protocol.

`StaticBooter` is pixiecore's ``boot`` command: one kernel, initrds and command line for every
machine. Its files live anywhere on disk (outside the boot root); clients see them under fixed
refs, `KERNEL_REF` and ``_pxeforge/initrd-<n>``, which `open_file` maps back to the real paths.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

from pxeforge.boot.files import BootFile, DiskFile
from pxeforge.boot.machine import BootSpec, Machine
from pxeforge.boot.render import check_cmdline
from pxeforge.errors import ConfigError

__all__ = ["KERNEL_REF", "REF_PREFIX", "Booter", "StaticBooter", "initrd_ref"]

#: Where a booter's own files appear to clients (TFTP path and HTTP URL path).
REF_PREFIX = "_pxeforge/"
KERNEL_REF = REF_PREFIX + "kernel"


def initrd_ref(index: int) -> str:
    """The ref of a `StaticBooter`'s ``index``-th initrd: ``_pxeforge/initrd-<index>``."""
    return f"{REF_PREFIX}initrd-{index}"


class Booter(Protocol):
    #: True when answers differ per machine: then per-machine config names
    #: (pxelinux.cfg/01-<mac>, <uuid>, grub.cfg-01-<mac>) are served; a booter that gives
    #: everybody the same spec serves only ``pxelinux.cfg/default`` / ``grub.cfg``, so the
    #: client walks the whole lookup chain as in the seed capture.
    per_machine: bool

    def boot_spec(self, machine: Machine) -> BootSpec | None: ...

    def open_file(self, ref: str) -> BootFile | None:
        """Open a file the booter itself provides (kernel/initrd outside the root), or None."""
        ...


class StaticBooter:
    """Every machine boots the same kernel, initrds and command line (pixiecore ``boot``).

    The constructor touches no disk; `validate` checks the files and the command line once at
    startup (the CLI calls it for a clear error), and `open_file` opens a file per request, so
    a kernel replaced on disk is picked up by the next boot.
    """

    per_machine: bool = False

    def __init__(self, kernel: Path, initrds: Sequence[Path] = (), cmdline: str = "") -> None:
        self.kernel = Path(kernel)
        self.initrds = tuple(Path(p) for p in initrds)
        self.cmdline = cmdline
        self._files = {KERNEL_REF: self.kernel}
        self._files.update({initrd_ref(i): p for i, p in enumerate(self.initrds)})
        self._spec = BootSpec(
            kernel=KERNEL_REF,
            initrds=tuple(initrd_ref(i) for i in range(len(self.initrds))),
            cmdline=cmdline,
        )

    def validate(self) -> None:
        """Raise `ConfigError` naming the first file or command-line problem."""
        for what, path in (("--kernel", self.kernel), *(("--initrd", p) for p in self.initrds)):
            if not path.is_file():
                raise ConfigError(f"{what} {path}: no such file (or not a regular file)")
            if not os.access(path, os.R_OK):
                raise ConfigError(f"{what} {path}: not readable by this user")
        try:
            check_cmdline(self.cmdline)
        except ValueError as exc:
            raise ConfigError(f"--cmdline: {exc}") from None

    def boot_spec(self, machine: Machine) -> BootSpec | None:
        return self._spec

    def open_file(self, ref: str) -> BootFile | None:
        path = self._files.get(ref)
        return DiskFile.open(ref, path) if path is not None else None
