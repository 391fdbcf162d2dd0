"""`BootFiles`: the one `FileSource` the TFTP and HTTP servers read through.

Theory of operation
-------------------
A request names a file; `BootFiles.open` answers it from, in order:

1. **Virtual configs**, rendered from ``booter.boot_spec(machine)`` on every request (never
   written to disk, so a changed answer is seen on the next boot):

   * pxelinux (``<any dir>/pxelinux.cfg/<name>``; pxelinux searches the ``pxelinux.cfg``
     beside ``pxelinux.0``). It asks, in this order (syslinux ``doc/pxelinux.txt``, and the
     seed capture): ``<uuid>``, ``01-<mac-with-dashes>``, its IP as 8 upper-case hex digits,
     then that name shortened one digit at a time down to 1 digit, then ``default``.
   * GRUB (``grub.cfg`` under any directory: Debian's grubnetx64 reads ``/grub/grub.cfg``, other
     builds ``grub.cfg`` at the top or under ``efi/``), plus the per-MAC names GRUB builds look
     for: ``grub.cfg-01-<mac>`` (Red Hat, Ironic, upstream 2.04+), ``grub.cfg-<mac>``,
     ``grub.cfg-<uuid>`` and ``grub.cfg-<hex IP>``.
   * ``boot.ipxe`` (any directory): the chain script, for setups where another DHCP server
     points iPXE at a TFTP file; our HTTP server answers ``/boot.ipxe`` itself.

   ``default``, ``grub.cfg`` and ``boot.ipxe`` are always answered. The per-machine names
   (uuid, ``01-<mac>``, hex IP, ``grub.cfg-…``) are answered only when ``booter.per_machine``:
   a booter that gives every machine the same spec lets the client walk the whole chain to
   ``default`` — every miss is a fast `FileNotFound` (TFTP ERROR 1) from string checks alone.
   Of the hex-IP names only the full 8-digit one names a machine; shorter ones name subnets
   and are left to real files.

   **A real file wins.** If the root holds a file of the requested name (say
   ``pxelinux.cfg/default``), it is served instead of the rendered one: operators override a
   config by dropping a file in, as with any TFTP server.

   **Which machine.** The name identifies it (``01-<mac>``, uuid, IP), completed from the
   `ClientRegistry` (filled by the DHCP server). ``default`` and ``grub.cfg`` use the registry
   entry for the client's IP address; when the registry does not know the address (another
   DHCP server gave it, or the entry was evicted) the booter is asked about
   ``Machine(mac="", ip=client)``: an empty MAC means "unknown machine", which a static booter
   answers and a per-machine booter declines. A per-machine name that contradicts what the
   registry knows about the requesting address (another machine's MAC or uuid) is refused, so
   a client cannot read another machine's command line by guessing its MAC.

2. **Booter files**: ``booter.open_file(ref)`` (kernels and initrds kept outside the root).
3. **Real files** under the root (`RootFiles`: ``..`` and symlinks out of the root refused).

A booter answering None, or a spec the renderer refuses (`pxeforge.boot.render` injection
guard), is `FileNotFound`; the second is also logged as an error, since it is the booter's
fault.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from dataclasses import replace
from ipaddress import IPv4Address
from pathlib import Path

from pxeforge.boot.booter import Booter
from pxeforge.boot.clients import ClientRegistry
from pxeforge.boot.files import BootFile, MemoryFile, RootFiles, safe_relpath
from pxeforge.boot.machine import BootSpec, Machine, normalize_mac
from pxeforge.boot.render import render_grub, render_ipxe_chain, render_pxelinux
from pxeforge.errors import FileNotFound

__all__ = ["BootFiles"]

log = logging.getLogger("pxeforge.boot.resolve")

PXELINUX_DIR = "pxelinux.cfg"
GRUB_CFG = "grub.cfg"
IPXE_CHAIN = "boot.ipxe"

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MAC_DASHES = re.compile(r"(?:[0-9a-f]{2}-){5}[0-9a-f]{2}")
_MAC_ANY = re.compile(r"(?:[0-9a-f]{2}[-:]){5}[0-9a-f]{2}|[0-9a-f]{12}")
_HEX_IP = re.compile(r"[0-9A-F]{1,8}")

Renderer = Callable[[BootSpec], str]


class BootFiles:
    """Virtual configs, then booter files, then real files under ``root``."""

    def __init__(
        self, booter: Booter, root: Path, registry: ClientRegistry, *, http_base: str
    ) -> None:
        self.booter = booter
        self.root = root
        self.registry = registry
        self.http_base = http_base
        self._root_files = RootFiles(root)
        self._root_dir = os.fspath(root)

    def open(self, path: str, client: IPv4Address | None) -> BootFile:
        rel = safe_relpath(path)
        if not rel:
            raise FileNotFound("no file name")
        virtual = self._virtual(rel, client)
        if virtual is not None:
            try:
                return self._open_real(rel)  # a real file of that name wins
            except FileNotFound:
                return MemoryFile(rel, virtual().encode())
        own = self.booter.open_file(rel)
        if own is not None:
            return own
        return self._open_real(rel)

    def _open_real(self, rel: str) -> BootFile:
        """`RootFiles.open`, after one stat so that the common miss costs one syscall."""
        try:
            os.stat(os.path.join(self._root_dir, rel))
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFound(f"{rel}: not found") from None
        except OSError:
            pass  # let RootFiles give the precise answer
        return self._root_files.open(rel)

    # ------------------------------------------------------------------ name → thunk

    def _virtual(self, rel: str, client: IPv4Address | None) -> Callable[[], str] | None:
        """A renderer for a virtual config name, or None when ``rel`` is not one we answer.

        Returning a thunk keeps the real-file check in one place and renders only when no
        real file overrides; the thunk raises `FileNotFound` when the booter declines.
        """
        parent, _, name = rel.rpartition("/")
        if parent == PXELINUX_DIR or parent.endswith("/" + PXELINUX_DIR):
            return self._pxelinux(rel, name, client)
        if name == GRUB_CFG:
            return self._thunk(rel, self._default_machine(client), render_grub)
        if name.startswith(GRUB_CFG + "-"):
            return self._grub_per_machine(rel, name[len(GRUB_CFG) + 1 :], client)
        if name == IPXE_CHAIN:
            return lambda: render_ipxe_chain(self.http_base)
        return None

    def _pxelinux(
        self, rel: str, name: str, client: IPv4Address | None
    ) -> Callable[[], str] | None:
        if name == "default":
            return self._thunk(rel, self._default_machine(client), render_pxelinux)
        if not self.booter.per_machine:
            return None
        lower = name.lower()
        if _UUID.fullmatch(lower):
            machine = self._by_uuid(lower, client)
        elif lower.startswith("01-") and _MAC_DASHES.fullmatch(lower[3:]):
            machine = self._by_mac(normalize_mac(lower[3:]), client)
        elif _HEX_IP.fullmatch(name):
            machine = self._by_hex_ip(name, client)
        else:
            return None
        return self._thunk(rel, machine, render_pxelinux) if machine is not None else None

    def _grub_per_machine(
        self, rel: str, suffix: str, client: IPv4Address | None
    ) -> Callable[[], str] | None:
        if not self.booter.per_machine:
            return None
        lower = suffix.lower()
        if lower.startswith("01-") and _MAC_DASHES.fullmatch(lower[3:]):
            machine = self._by_mac(normalize_mac(lower[3:]), client)
        elif _UUID.fullmatch(lower):
            machine = self._by_uuid(lower, client)
        elif _MAC_ANY.fullmatch(lower):
            machine = self._by_mac(normalize_mac(lower), client)
        elif _HEX_IP.fullmatch(suffix):
            machine = self._by_hex_ip(suffix, client)
        else:
            return None
        return self._thunk(rel, machine, render_grub) if machine is not None else None

    def _thunk(self, rel: str, machine: Machine, render: Renderer) -> Callable[[], str]:
        def rendered() -> str:
            spec = self.booter.boot_spec(machine)
            if spec is None:
                raise FileNotFound(f"{rel}: no boot configuration for {machine.mac or 'this'}")
            try:
                text = render(spec)
            except ValueError as exc:
                log.error("%s for %s: booter's boot spec refused: %s", rel, machine.mac, exc)
                raise FileNotFound(f"{rel}: boot configuration refused") from None
            log.info("%s rendered for %s (%s)", rel, machine.mac or "unknown MAC", machine.ip)
            return text

        return rendered

    # ------------------------------------------------------------------ which machine

    def _default_machine(self, client: IPv4Address | None) -> Machine:
        return self.registry.by_ip(client) or Machine(mac="", ip=client)

    def _by_mac(self, mac: str, client: IPv4Address | None) -> Machine | None:
        claimed = self.registry.by_ip(client)
        if claimed is not None and claimed.mac != mac:
            log.warning("%s (%s) asked for the config of %s: refused", client, claimed.mac, mac)
            return None
        return self.registry.by_mac(mac) or Machine(mac=mac, ip=client)

    def _by_uuid(self, uuid: str, client: IPv4Address | None) -> Machine | None:
        claimed = self.registry.by_ip(client)
        if claimed is not None:
            if claimed.uuid is not None and claimed.uuid != uuid:
                log.warning("%s asked for the config of uuid %s: refused", client, uuid)
                return None
            return replace(claimed, uuid=uuid)
        return self.registry.by_uuid(uuid) or Machine(mac="", uuid=uuid, ip=client)

    def _by_hex_ip(self, name: str, client: IPv4Address | None) -> Machine | None:
        if len(name) != 8:
            return None  # a subnet prefix, not a machine
        ip = IPv4Address(int(name, 16))
        if client is not None and ip != client:
            return None
        return self.registry.by_ip(ip) or Machine(mac="", ip=ip)
