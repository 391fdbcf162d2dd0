"""The ramdisk's own files: ``/init``, the DHCP hook, the lab hook and the agent package.

Theory of operation
-------------------
``/init`` (busybox sh, PID 1; `INIT`) runs these steps and never exits (the kernel panics
when PID 1 does):

1. mounts proc, sysfs, devtmpfs, devpts, /dev/shm and /run, installs busybox's applet links
   and moves its output to ``/dev/console``;
2. loads the modules listed in ``/etc/pxeforge/modules`` with ``modprobe`` (in load order;
   busybox modprobe reads the generated ``modules.dep``), and on UEFI machines efivarfs, which
   it mounts on /sys/firmware/efi/efivars;
3. picks the network interface: the one whose MAC the ``BOOTIF=01-aa-bb-…`` kernel parameter
   names (pxelinux ``ipappend 2``, or an iPXE/GRUB line that sets it), else the first, by name,
   that reports carrier, else the first one at all; then ``udhcpc`` (vendor class
   ``pxeforge-agent``), which keeps the lease renewed in the background; `UDHCPC_SCRIPT`
   configures the address, the default route and ``/etc/resolv.conf`` and writes
   ``/run/pxeforge/network`` (``key=value`` lines: interface, mac, ip, mask, router, dns,
   serverid, siaddr, boot_file) for the agent. No lease: it says so, starts a console shell and
   tries again every 10 s;
4. with ``pxelab.callback=URL`` on the kernel command line (pxeforge's lab sets it), runs
   `LAB_HOOK`, which POSTs ``{mac, ip, cmdline, kernel, python, openssl, agent, modules,
   boot_mode, efivars}`` to the URL with ``http.client`` — proof from *inside the image's
   Python* that the ramdisk booted, loaded its NIC driver, got an address and can import its
   stdlib;
5. runs ``python3 -m pxeforge.agent`` forever: when it exits, init prints the status, starts an
   interactive shell on the console once (``pxeforge.shell=1`` starts it at boot), sleeps 10 s
   and runs it again. The agent reads its own parameters from ``/proc/cmdline``.

The agent is the installed ``pxeforge.agent`` package: `find_agent` locates it with importlib
and takes its ``.py`` files. Until that package exists, a placeholder (`PLACEHOLDER_MAIN`)
stands in: it prints ``pxeforge agent placeholder`` and waits. The image gets a minimal
``pxeforge/__init__.py`` (only ``__version__``), never the server's.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

from pxeforge.errors import AssetError

__all__ = [
    "AGENT_PACKAGE",
    "INIT",
    "LAB_HOOK",
    "LAB_HOOK_PATH",
    "PLACEHOLDER_MAIN",
    "PLACEHOLDER_MESSAGE",
    "SITE_PACKAGES",
    "UDHCPC_SCRIPT",
    "AgentSource",
    "etc_files",
    "find_agent",
    "package_init",
]

AGENT_PACKAGE: Final = "pxeforge.agent"
SITE_PACKAGES: Final = "usr/lib/python3/dist-packages"  # on Debian's sys.path via site.py
LAB_HOOK_PATH: Final = "usr/lib/pxeforge-ramdisk/lab_callback.py"
PLACEHOLDER_MESSAGE: Final = "pxeforge agent placeholder"

INIT: Final = r"""#!/bin/sh
# pxeforge agent ramdisk: /init, PID 1 (busybox sh). It must never exit.
# Steps: filesystems, kernel modules, network (BOOTIF, DHCP), lab hook, the agent (respawned).
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin HOME=/root TERM=vt100 PYTHONUNBUFFERED=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm /run/pxeforge /tmp /var/log
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mkdir -p /run/pxeforge
hostname -F /etc/hostname
exec </dev/console >/dev/console 2>&1

say() { echo "pxeforge-ramdisk: $*"; }
cmdline=$(cat /proc/cmdline)
arg() {  # arg NAME: the value of NAME=value on the kernel command line
  for w in $cmdline; do
    case "$w" in "$1="*) echo "${w#*=}"; return 0 ;; esac
  done
  return 1
}
shell_started=
console_shell() {
  [ -n "$shell_started" ] && return
  shell_started=1
  say "starting a shell on the console"
  setsid cttyhack sh &
}
say "up on kernel $(uname -r)"
[ -n "$(arg pxeforge.shell)" ] && console_shell

kver=$(uname -r)
if [ -d "/lib/modules/$kver" ]; then
  for m in $(cat /etc/pxeforge/modules); do
    modprobe "$m" || say "modprobe $m failed"
  done
  if [ -d /sys/firmware/efi/efivars ]; then
    modprobe efivarfs && mount -t efivarfs efivarfs /sys/firmware/efi/efivars
  fi
else
  say "this image has no modules for kernel $kver: drivers may be missing"
fi
ip link set lo up

bootif=$(arg BOOTIF) && bootif=$(echo "${bootif#01-}" | tr 'ABCDEF-' 'abcdef:')
pick_iface() {  # the BOOTIF NIC, else the first with carrier, else the first: on stdout
  n=0
  while [ $n -lt 100 ]; do
    if [ -n "$bootif" ] && [ $n -lt 50 ]; then
      for d in /sys/class/net/*; do
        [ "$(cat "$d/address" 2>/dev/null)" = "$bootif" ] && { echo "${d##*/}"; return 0; }
      done
    else
      for d in /sys/class/net/*; do
        [ -e "$d/device" ] || continue
        ip link set "${d##*/}" up 2>/dev/null
        [ "$(cat "$d/carrier" 2>/dev/null)" = 1 ] && { echo "${d##*/}"; return 0; }
      done
    fi
    n=$((n + 1))
    sleep 0.2
  done
  for d in /sys/class/net/*; do
    [ -e "$d/device" ] && { echo "${d##*/}"; return 0; }
  done
  return 1
}
net_up() {
  if ! iface=$(pick_iface); then
    say "no network interface; modules loaded: $(cut -d' ' -f1 /proc/modules | tr '\n' ' ')"
    return 1
  fi
  mac=$(cat "/sys/class/net/$iface/address")
  if [ -n "$bootif" ] && [ "$mac" != "$bootif" ]; then
    say "no interface has the BOOTIF address $bootif; using $iface"
  fi
  ip link set "$iface" up
  say "DHCP on $iface ($mac)"
  udhcpc -i "$iface" -s /etc/pxeforge/udhcpc.sh -V pxeforge-agent -p "/run/udhcpc.$iface.pid" \
    -t 10 -T 2 -n || { say "no DHCP lease on $iface"; return 1; }
  . /run/pxeforge/network
  say "$iface has $ip (server $serverid)"
}
until net_up; do
  console_shell
  say "network is not up; trying again in 10 s"
  sleep 10
done

if [ -n "$(arg pxelab.callback)" ]; then
  python3 /usr/lib/pxeforge-ramdisk/lab_callback.py || say "lab callback failed"
fi

attempt=0
while :; do
  attempt=$((attempt + 1))
  say "starting the agent (attempt $attempt): python3 -m pxeforge.agent"
  python3 -m pxeforge.agent
  say "the agent exited with status $?; starting it again in 10 s"
  console_shell
  sleep 10
done
"""

UDHCPC_SCRIPT: Final = r"""#!/bin/sh
# udhcpc hook: configure the interface and record the lease in /run/pxeforge/network.
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/${mask:-24}" dev "$interface"
    [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
    : > /etc/resolv.conf
    [ -n "$domain" ] && echo "search $domain" >> /etc/resolv.conf
    for s in $dns; do echo "nameserver $s" >> /etc/resolv.conf; done
    mkdir -p /run/pxeforge
    {
      echo "interface=$interface"
      echo "mac=$(cat "/sys/class/net/$interface/address")"
      echo "ip=$ip"
      echo "mask=${mask:-24}"
      echo "router=${router%% *}"
      echo "dns='$dns'"
      echo "serverid=$serverid"
      echo "siaddr=$siaddr"
      echo "boot_file='$boot_file'"
    } > /run/pxeforge/network.new
    mv /run/pxeforge/network.new /run/pxeforge/network
    ;;
esac
exit 0
"""

LAB_HOOK: Final = '''\
"""pxeforge lab hook: report that the ramdisk is up to ``pxelab.callback=URL``.

Runs only when that parameter is on the kernel command line (pxeforge's lab puts it there).
"""

import hashlib
import http.client
import json
import os
import platform
import ssl
import sys
import urllib.parse


def main() -> int:
    with open("/proc/cmdline") as f:
        cmdline = f.read().strip()
    words = [w.split("=", 1) for w in cmdline.split() if "=" in w]
    url = dict(words).get("pxelab.callback", "")
    if not url:
        return 0
    with open("/run/pxeforge/network") as f:
        net = dict(line.split("=", 1) for line in f.read().splitlines() if "=" in line)
    with open("/etc/pxeforge/ramdisk.json") as f:
        build = json.load(f)
    with open("/proc/modules") as f:
        modules = sorted(line.split()[0] for line in f if line.strip())
    efivars = "/sys/firmware/efi/efivars"
    body = {
        "mac": net.get("mac", ""),
        "ip": net.get("ip", ""),
        "cmdline": cmdline,
        "kernel": os.uname().release,
        "python": platform.python_version(),
        "openssl": ssl.OPENSSL_VERSION,
        "sha256_ok": hashlib.sha256(b"abc").hexdigest().startswith("ba7816bf"),
        "agent": build.get("agent", {}).get("source", ""),
        "modules": modules,
        "boot_mode": "uefi" if os.path.isdir("/sys/firmware/efi") else "bios",
        "efivars": len(os.listdir(efivars)) if os.path.isdir(efivars) else 0,
        "source": "pxeforge-ramdisk",
    }
    target = urllib.parse.urlsplit(url)
    for attempt in range(1, 4):
        conn = http.client.HTTPConnection(target.hostname or "", target.port or 80, timeout=15)
        try:
            conn.request("POST", target.path or "/", json.dumps(body).encode(),
                         {"Content-Type": "application/json"})
            status = conn.getresponse().status
            if status < 300:
                print(f"pxeforge-ramdisk: lab callback to {url}: HTTP {status}", flush=True)
                return 0
            print(f"pxeforge-ramdisk: lab callback to {url}: HTTP {status}", flush=True)
        except OSError as exc:
            print(f"pxeforge-ramdisk: lab callback to {url} (try {attempt}): {exc}", flush=True)
        finally:
            conn.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
'''

PLACEHOLDER_MAIN: Final = f'''\
"""Placeholder: pxeforge.agent was not installed where this ramdisk was built."""

import time


def main() -> None:
    print("{PLACEHOLDER_MESSAGE}: the real agent (pxeforge.agent) was not available when "
          "this ramdisk was built", flush=True)
    with open("/proc/cmdline") as f:
        print("kernel command line:", f.read().strip(), flush=True)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
'''


def package_init(version: str) -> str:
    """The image's ``pxeforge/__init__.py``: only the version, none of the server."""
    doc = '"""pxeforge: only the agent is installed in this ramdisk."""\n'
    return f'{doc}\n__version__ = "{version}"\n'


def etc_files(hostname: str = "pxeforge-agent") -> dict[str, str]:
    """Small files glibc, Python and busybox look for."""
    return {
        "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
        "etc/group": "root:x:0:\n",
        "etc/hosts": f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost\n",
        "etc/hostname": f"{hostname}\n",
        "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
        "etc/os-release": (
            'NAME="pxeforge agent ramdisk"\nID=pxeforge-ramdisk\nID_LIKE=debian\n'
            'PRETTY_NAME="pxeforge agent ramdisk"\n'
        ),
        "etc/resolv.conf": "",
    }


@dataclass(frozen=True, slots=True)
class AgentSource:
    """The agent's files, relative to the ``pxeforge`` package directory."""

    kind: Literal["package", "placeholder"]
    origin: str  # where the package was found, or why the placeholder
    files: tuple[tuple[str, bytes], ...]  # ("agent/__main__.py", source), sorted

    @property
    def sha256(self) -> str:
        h = hashlib.sha256()
        for name, data in self.files:
            h.update(name.encode() + b"\x00" + hashlib.sha256(data).digest())
        return h.hexdigest()


def find_agent(package: str = AGENT_PACKAGE) -> AgentSource:
    """The installed agent package's .py files, or the placeholder when it is absent."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        return AgentSource(
            "placeholder",
            f"{package} is not installed",
            (
                ("agent/__init__.py", b'"""Placeholder agent."""\n'),
                ("agent/__main__.py", PLACEHOLDER_MAIN.encode()),
            ),
        )
    root = Path(locations[0])
    files = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        if "__pycache__" in rel.parts or any(p.startswith(".") for p in rel.parts):
            continue
        files.append((f"agent/{rel.as_posix()}", path.read_bytes()))
    if not any(name == "agent/__main__.py" for name, _ in files):
        raise AssetError(f"{root} has no __main__.py: `python3 -m {package}` would not run")
    return AgentSource("package", str(root), tuple(files))
