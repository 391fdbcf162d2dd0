"""The ramdisk's kernel: Debian's ``vmlinuz`` and the few modules the agent needs.

Theory of operation
-------------------
``linux-image-amd64`` is a metapackage; `resolve_kernel_package` asks apt for the real
package behind it (``linux-image-6.1.0-NN-amd64``). `kernel_part` reads that package in one
streaming pass (`pxeforge.ramdisk.build_debs.iter_members`): the kernel image, the module list,
``modules.builtin``, and the contents of the modules under `_LIKELY_DIRS` (where drivers and
their helpers live — reading all ~4000 modules would hold ~400 MB). The closure of `MODULES`
over ``depends=`` and ``softdep=pre:`` (`pxeforge.ramdisk.build_kmod.resolve`) usually lies
inside those directories; when it does not, a second pass fetches the rest.

The part's tree holds ``/lib/modules/<version>/kernel/…/*.ko`` (decompressed when the
package compresses them), a generated ``modules.dep`` and ``modules.alias`` (busybox modprobe
reads both), the package's ``modules.builtin`` (so ``modprobe`` of a built-in driver succeeds)
and ``/etc/pxeforge/modules``: the module names in load order, which ``/init`` modprobes one by
one. `ON_DEMAND_MODULES` are shipped but left to /init's judgement (efivarfs: UEFI only).

Debian's kernel has virtio, SCSI, ATA and NVMe as modules but AF_PACKET (udhcpc's raw
socket), devtmpfs and DMI (``/sys/class/dmi/id``) built in.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from pxeforge.assets.deb import PackageFile
from pxeforge.assets.fetch import download_apt
from pxeforge.errors import AssetError
from pxeforge.ramdisk.build_debs import iter_members
from pxeforge.ramdisk.build_kmod import (
    MODULE_SUFFIXES,
    ModInfo,
    module_name,
    modules_alias,
    modules_dep,
    parse_modinfo,
    plain_module,
    resolve,
)
from pxeforge.ramdisk.build_tree import Tree

__all__ = [
    "DEFAULT_KERNEL_METAPACKAGE",
    "MODULES",
    "MODULES_LIST",
    "ON_DEMAND_MODULES",
    "KernelInfo",
    "kernel_deb",
    "kernel_part",
    "resolve_kernel_package",
]

DEFAULT_KERNEL_METAPACKAGE: Final = "linux-image-amd64"
#: What the agent needs to see NICs and disks on QEMU and common servers; their dependencies
#: (virtio_ring, virtio_pci_*_dev, failover, libata, scsi_mod, nvme_core, ptp…) come along.
MODULES: Final = (
    "virtio_pci",  # the PCI transport of every virtio device
    "virtio_net",
    "e1000",  # QEMU's default NIC on pc machines
    "e1000e",  # QEMU's default on q35; Intel client NICs
    "igb",  # Intel server NICs
    "virtio_blk",
    "virtio_scsi",
    "sd_mod",  # SCSI disks: virtio-scsi, SATA through libata
    "ahci",  # SATA (q35's disk controller)
    "ata_piix",  # IDE/SATA on QEMU's pc (i440FX) machine
    "nvme",
)
#: In the image (and modules.dep) but loaded by /init only where they apply.
ON_DEMAND_MODULES: Final = ("efivarfs",)  # UEFI variables: only on UEFI machines
#: Where /init reads the names of the modules to load, in order.
MODULES_LIST: Final = "etc/pxeforge/modules"
_LIKELY_DIRS: Final = re.compile(
    r"kernel/(drivers/(virtio|block|scsi|ata|nvme|ptp|pps|i2c|dca)/|drivers/net/(?!wireless/)"
    r"|lib/|crypto/|net/core/|block/|fs/efivarfs/)"
)


@dataclass
class KernelInfo:
    package: str = ""  # linux-image-6.1.0-56-amd64
    version: str = ""  # its Debian version
    release: str = ""  # uname -r: 6.1.0-56-amd64
    modules: list[str] = field(default_factory=list)  # load order
    on_demand: list[str] = field(default_factory=list)  # shipped, not loaded at boot
    built_in: list[str] = field(default_factory=list)  # wanted, but built into the kernel
    passes: int = 1  # reads of the package

    def as_dict(self) -> dict[str, object]:
        return {
            "package": self.package,
            "version": self.version,
            "release": self.release,
            "modules": self.modules,
            "on_demand": self.on_demand,
            "built_in": self.built_in,
        }


def _apt(argv: list[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AssetError(f"{what}: {exc}") from None
    if proc.returncode != 0:
        raise AssetError(f"{what}: {proc.stderr.strip()[-300:]}")
    return proc.stdout


def resolve_kernel_package(metapackage: str = DEFAULT_KERNEL_METAPACKAGE) -> str:
    """The real kernel package ``metapackage`` depends on (``linux-image-6.1.0-56-amd64``)."""
    out = _apt(["apt-cache", "depends", metapackage], "resolving the kernel package")
    for line in out.splitlines():
        match = re.match(r"\s*Depends:\s*(linux-image-\S+)", line)
        if match:
            return match.group(1)
    raise AssetError(
        f"apt-cache knows no kernel package behind {metapackage} (run `apt-get update`?)"
    )


def kernel_deb(package: str, debs: Path) -> Path:
    """The .deb of ``package`` in ``debs``: apt's candidate (downloaded when not cached), or
    without apt lists the newest cached one."""
    try:
        return download_apt([package], debs)[0].path
    except AssetError:
        cached = sorted(debs.glob(f"{package}_*.deb"))
        if not cached:
            raise
        return cached[-1]


def _module_rel(path: str) -> str | None:
    """``lib/modules/<release>/kernel/x.ko`` → ``kernel/x.ko`` (None for other paths)."""
    parts = path.split("/")
    if len(parts) > 3 and parts[:2] == ["lib", "modules"] and path.endswith(MODULE_SUFFIXES):
        return "/".join(parts[3:])
    return None


def _path_in(paths: set[str]) -> Callable[[PackageFile], bool]:
    return lambda pf: pf.path in paths


def _unread(wanted: Iterable[str], infos: dict[str, ModInfo], paths: dict[str, str]) -> set[str]:
    """Package paths of modules the closure of ``wanted`` reaches but that were not read."""
    need: set[str] = set()
    seen: set[str] = set()
    todo = [w.replace("-", "_") for w in wanted]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        if name in infos:
            todo.extend(infos[name].depends)
            todo.extend(s.replace("-", "_") for s in infos[name].softdep_pre)
        elif name in paths:
            need.add(paths[name])
    return need


def kernel_part(
    deb: Path, wanted: Iterable[str] = MODULES, on_demand: Iterable[str] = ON_DEMAND_MODULES
) -> tuple[bytes, Tree, KernelInfo]:
    """(vmlinuz, the modules tree, what was chosen) from the kernel package ``deb``: the
    ``wanted`` modules are loaded at boot, the ``on_demand`` ones only shipped."""
    wanted = list(wanted)
    extra = [m for m in on_demand if m not in wanted]
    info = KernelInfo()
    vmlinuz: bytes | None = None
    builtin_text = ""
    paths: dict[str, str] = {}  # module name → package path
    blobs: dict[str, bytes] = {}  # package path → contents (kept modules)

    def keep(path: str) -> bool:
        rel = _module_rel(path)
        if rel is not None:
            return _LIKELY_DIRS.match(rel) is not None
        return path.startswith("boot/vmlinuz-") or path.endswith("/modules.builtin")

    for m in iter_members(deb, lambda pf: keep(pf.path)):
        path = m.file.path
        if m.file.kind not in ("file", "hardlink"):
            continue
        if path.startswith("boot/vmlinuz-"):
            if vmlinuz is not None:
                raise AssetError(f"{deb.name}: more than one boot/vmlinuz-*")
            vmlinuz = m.data
            info.release = path.removeprefix("boot/vmlinuz-")
        elif path.endswith("/modules.builtin"):
            builtin_text = m.data.decode("utf-8", "replace")
        elif _module_rel(path) is not None:
            paths[module_name(path)] = path
            if m.data:
                blobs[path] = m.data
    if vmlinuz is None or not info.release:
        raise AssetError(f"{deb.name} has no boot/vmlinuz-*: not a kernel package")
    builtin = [module_name(line.strip()) for line in builtin_text.splitlines() if line.strip()]

    infos: dict[str, ModInfo] = {}
    while True:
        for path, data in sorted(blobs.items()):
            if module_name(path) in infos:
                continue
            plain, plain_path = plain_module(data, path)
            rel = _module_rel(plain_path)
            assert rel is not None
            mod = parse_modinfo(plain, rel)
            infos[mod.name] = mod
            blobs[path] = plain
        need = _unread([*wanted, *extra], infos, paths)
        if not need:
            break
        # a module or a dependency outside the likely directories: one more pass for those
        info.passes += 1
        for m in iter_members(deb, _path_in(need)):
            if m.data:
                blobs[m.file.path] = m.data
        if not need & blobs.keys():
            raise AssetError(f"{deb.name}: could not read {sorted(need)[0]}")
    boot, info.built_in = resolve(wanted, infos, builtin)
    chosen, _ = resolve([*wanted, *extra], infos, builtin)

    tree = Tree()
    base = f"lib/modules/{info.release}"
    for mod in chosen:
        tree.add_file(f"{base}/{mod.path}", blobs[paths[mod.name]], 0o644)
    tree.add_file(f"{base}/modules.dep", modules_dep(chosen, builtin).encode())
    tree.add_file(f"{base}/modules.alias", modules_alias(chosen).encode())
    tree.add_file(f"{base}/modules.builtin", builtin_text.encode())
    tree.add_file(f"{base}/modules.order", "".join(f"{m.path}\n" for m in chosen).encode())
    tree.add_file(MODULES_LIST, "".join(f"{m.name}\n" for m in boot).encode())
    info.modules = [m.name for m in boot]
    info.on_demand = sorted({m.name for m in chosen} - set(info.modules))
    return vmlinuz, tree, info
