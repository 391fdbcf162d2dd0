"""The lab's test guest: Debian's kernel and a busybox initramfs that phones home.

Theory of operation
-------------------
A lab boot counts only when a Linux kernel pxeforge handed out actually ran and saw the
command line pxeforge set. The guest proves it: its ``/init`` (`init_script`) mounts proc, sys
and dev, loads the virtio network driver stack (Debian builds virtio_net as a module and its
package ships no ``modules.dep``, so the modules are insmod-ed one by one in dependency order,
docs/lab.md), gets an address with busybox ``udhcpc`` (vendor class ``pxelab-guest``), POSTs
``{"mac", "cmdline", "ip"}`` as JSON to the URL in ``pxelab.callback=`` on its command line
(default: the DHCP server's HTTP port 8080, path ``/_pxeforge/callback``), prints a marker on
the serial console and powers off. busybox 1.35 ``wget -T`` segfaults, so ``timeout`` bounds
the POST instead.

The kernel and modules come from Debian's ``linux-image-<abi>-amd64`` (the package the
``linux-image-amd64`` metapackage points at), fetched with ``apt-get download`` into the cache
and read without installing anything. busybox is the host's static binary. The result is
cached under a key of every input (package file name, busybox hash, scripts, modules), so a
second build is a directory lookup.
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from pxeforge.assets.deb import DebPackage
from pxeforge.errors import AssetError
from pxeforge.ramdisk import cpio

# shared with `pxeforge ramdisk build`, which boots the same kernel
from pxeforge.ramdisk.build_kernel import (
    DEFAULT_KERNEL_METAPACKAGE,
    kernel_deb,
    resolve_kernel_package,
)

__all__ = [
    "BUSYBOX",
    "CALLBACK_FAILED_MARKER",
    "CALLBACK_OK_MARKER",
    "DEFAULT_KERNEL_METAPACKAGE",
    "GUEST_MARKER",
    "Guest",
    "MODULES",
    "VENDOR_CLASS",
    "build_guest",
    "build_initramfs",
    "default_cache_dir",
    "init_script",
    "kernel_deb",
    "resolve_kernel_package",
]

#: Load order of the virtio network stack (each after what it needs).
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
)
VENDOR_CLASS = "pxelab-guest"
GUEST_MARKER = "PXELAB-GUEST-UP"  # printed by /init as soon as it runs
CALLBACK_OK_MARKER = "PXELAB-CALLBACK-OK"
CALLBACK_FAILED_MARKER = "PXELAB-CALLBACK-FAILED"
BUSYBOX = Path("/bin/busybox")
_FORMAT = 2  # bump when the initramfs layout changes: part of the cache key

_UDHCPC_SCRIPT = """\
#!/bin/sh
# udhcpc event hook: configure eth and remember the lease for /init.
case "$1" in
  deconfig) ip addr flush dev "$interface"; ip link set "$interface" up ;;
  bound|renew)
    ip addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route add default via "${router%% *}" dev "$interface"
    { echo "ip=$ip"; echo "serverid=$serverid"; echo "siaddr=$siaddr"; } > /tmp/lease ;;
esac
exit 0
"""


def init_script(modules: Iterable[str] = MODULES, vendor_class: str = VENDOR_CLASS) -> str:
    """The guest's ``/init`` (busybox sh)."""
    mods = " ".join(modules)
    return f"""\
#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec </dev/console >/dev/console 2>&1
echo "{GUEST_MARKER} kernel $(uname -r)"
for m in {mods}; do
  insmod /lib/modules/$m.ko || echo "pxelab: insmod $m failed"
done
dev=
for i in $(seq 1 50); do
  for d in /sys/class/net/*; do
    [ "${{d##*/}}" = lo ] || {{ dev=${{d##*/}}; break; }}
  done
  [ -n "$dev" ] && break
  sleep 0.2
done
fail() {{
  echo "{CALLBACK_FAILED_MARKER} $*"
  poweroff -f
}}
[ -n "$dev" ] || fail "no network interface (modules: $(cat /proc/modules | cut -d' ' -f1))"
ip link set lo up
ip link set "$dev" up
mac=$(cat /sys/class/net/$dev/address)
echo "pxelab: $dev $mac, DHCP as {vendor_class}"
udhcpc -i "$dev" -V {vendor_class} -s /etc/udhcpc.sh -f -q -n -t 10 -T 2 || fail "no DHCP lease"
. /tmp/lease
cmdline=$(cat /proc/cmdline)
url=
for word in $cmdline; do
  case "$word" in pxelab.callback=*) url=${{word#pxelab.callback=}} ;; esac
done
[ -n "$url" ] || url="http://$serverid:8080/_pxeforge/callback"
esc=$(printf '%s' "$cmdline" | sed -e 's/\\\\/\\\\\\\\/g' -e 's/"/\\\\"/g')
body="{{\\"mac\\": \\"$mac\\", \\"cmdline\\": \\"$esc\\", \\"ip\\": \\"$ip\\"}}"
echo "pxelab: got $ip from $serverid, POST $url"
for try in 1 2 3; do
  if timeout 15 wget -q -O /tmp/callback.out --header "Content-Type: application/json" \\
      --post-data "$body" "$url"; then
    echo "{CALLBACK_OK_MARKER} mac=$mac ip=$ip"
    sync
    poweroff -f
  fi
  sleep 1
done
fail "POST $url did not succeed"
"""


@dataclass(frozen=True, slots=True)
class Guest:
    """A built test guest: kernel and gzip-ed newc initramfs, ready to hand to ``serve``."""

    kernel: Path
    initrd: Path
    kernel_version: str  # e.g. "6.1.0-56-amd64"
    package: str  # the .deb it came from


def default_cache_dir() -> Path:
    """``$PXEFORGE_CACHE``, else ``$XDG_CACHE_HOME/pxeforge``, else /var/cache/pxeforge for
    root and ~/.cache/pxeforge for anyone else."""
    if env := os.environ.get("PXEFORGE_CACHE"):
        return Path(env)
    if env := os.environ.get("XDG_CACHE_HOME"):
        return Path(env) / "pxeforge"
    if os.geteuid() == 0:
        return Path("/var/cache/pxeforge")
    return Path.home() / ".cache" / "pxeforge"


def build_initramfs(init: str, busybox: bytes, modules: dict[str, bytes]) -> bytes:
    """A gzip-ed newc cpio: /init, /bin/busybox, /etc/udhcpc.sh, /lib/modules/<m>.ko and a
    /dev/console node (the kernel opens it for init before anything mounts devtmpfs)."""
    entries = [cpio.Entry.directory(d) for d in ("bin", "dev", "etc", "lib", "lib/modules")]
    entries += [cpio.Entry.directory(d) for d in ("proc", "sys", "tmp")]
    entries += [
        cpio.Entry.device("dev/console", stat.S_IFCHR, 5, 1),
        cpio.Entry.file("init", init.encode(), 0o755),
        cpio.Entry.file("bin/busybox", busybox, 0o755),
        cpio.Entry.file("etc/udhcpc.sh", _UDHCPC_SCRIPT.encode(), 0o755),
    ]
    entries += [cpio.Entry.file(f"lib/modules/{m}.ko", data) for m, data in modules.items()]
    entries = [
        dataclasses.replace(e, ino=i + 1, nlink=2 if e.is_dir else 1) for i, e in enumerate(entries)
    ]
    return gzip.compress(cpio.write_archive(entries), compresslevel=6, mtime=0)


def _cache_key(*parts: bytes) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(hashlib.sha256(part).digest())
    return h.hexdigest()[:16]


def build_guest(
    cache_dir: Path | None = None,
    *,
    kernel_package: str | None = None,
    busybox: Path = BUSYBOX,
    log: Callable[[str], None] = lambda _msg: None,
) -> Guest:
    """Build (or find in the cache) the test guest; ``log`` hears about slow steps."""
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    debs = cache / "debs"
    if kernel_package is None:
        try:
            kernel_package = resolve_kernel_package()
        except AssetError:
            cached = sorted(debs.glob("linux-image-*-amd64_*.deb"))
            if not cached:
                raise
            kernel_package = cached[-1].name.split("_", 1)[0]
    try:
        busybox_bytes = busybox.read_bytes()
    except OSError as exc:
        raise AssetError(
            f"no static busybox at {busybox} ({exc.strerror}); apt-get install busybox-static"
        ) from None
    init = init_script()
    deb = kernel_deb(kernel_package, debs)
    key = _cache_key(
        str(_FORMAT).encode(),
        deb.name.encode(),
        busybox_bytes,
        init.encode(),
        _UDHCPC_SCRIPT.encode(),
    )
    out = cache / "guest" / key
    info_path = out / "guest.json"
    if info_path.is_file():
        info = json.loads(info_path.read_text())
        return Guest(out / "vmlinuz", out / "initrd.gz", info["kernel_version"], info["package"])

    log(f"building the test guest from {deb.name} (once; cached in {out})")
    package = DebPackage.open(deb)
    wanted_modules = {f"{m}.ko": m for m in MODULES}
    kernels = [n for n in package.names() if n.startswith("boot/vmlinuz-")]
    if len(kernels) != 1:
        raise AssetError(f"{deb.name}: expected one boot/vmlinuz-*, found {kernels}")
    module_paths = {
        n: wanted_modules[n.rsplit("/", 1)[-1]]
        for n in package.names()
        if n.startswith("lib/modules/") and n.rsplit("/", 1)[-1] in wanted_modules
    }
    members = package.read([kernels[0], *module_paths])
    version = kernels[0].removeprefix("boot/vmlinuz-")
    modules = {module: members[path] for path, module in module_paths.items()}
    missing = [m for m in MODULES if m not in modules]
    if missing:
        raise AssetError(f"{deb.name} lacks the modules {missing} (built in? renamed?)")
    initrd = build_initramfs(init, busybox_bytes, modules)

    (cache / "guest").mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=cache / "guest", prefix=".build-"))
    try:
        (tmp / "vmlinuz").write_bytes(members[kernels[0]])
        (tmp / "initrd.gz").write_bytes(initrd)
        (tmp / "guest.json").write_text(
            json.dumps({"kernel_version": version, "package": deb.name}, indent=1) + "\n"
        )
        try:
            os.rename(tmp, out)  # atomic: a concurrent builder either wins or loses whole
        except OSError:
            if not info_path.is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return Guest(out / "vmlinuz", out / "initrd.gz", version, deb.name)
