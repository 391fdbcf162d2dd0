"""The Booter seam: all boot policy behind one method.

``boot_spec(machine)`` answers "what should this machine boot?"; ``None`` means "not ours,
ignore it" (the DHCP server then stays silent for that client). It is called several times per
boot (DHCP, then each config request), so implementations must be cheap and stateless.
Later issues add an inventory-backed booter; servers only ever see this Protocol.
"""

from __future__ import annotations

from typing import Protocol

from pxeforge.boot.files import BootFile
from pxeforge.boot.machine import BootSpec, Machine

__all__ = ["Booter"]


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
