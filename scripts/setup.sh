#!/usr/bin/env bash
# Set up pxeforge on a Debian machine: Debian packages (when root) and a virtualenv in .venv.
#   scripts/setup.sh          what `pxeforge serve` and `pxeforge lab` need
#   scripts/setup.sh --test   also what the test suite needs (real clients, linters)
# Safe to run again: it installs only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
[ "${1:-}" = "--test" ] && want_test=1

# Runtime: the lab boots real firmware under QEMU in a network namespace.
debs=(python3 python3-venv python3-pip ca-certificates iproute2 qemu-system-x86 ipxe-qemu ovmf
      pxelinux syslinux-common busybox-static cpio tcpdump)
# Tests: real TFTP/DHCP/HTTP clients and the rpm tools that build fixtures.
test_debs=(curl atftp tftp-hpa udhcpc isc-dhcp-client rpm postgresql openipmi ipmitool zstd xz-utils bzip2 lz4
           qemu-utils  # qemu-img: the oracle of the agent's qcow2 tests
           chromium  # the dashboard's browser tests (driven over the DevTools protocol)
           dosfstools mtools syslinux syslinux-efi)  # the lab's bootable disk image (lab/image.py)
[ $want_test = 1 ] && debs+=("${test_debs[@]}")

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for p in "${debs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
else
  echo "setup: not root (or no apt-get): skipping Debian packages (${debs[*]})" >&2
fi

py=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
extras=""
[ $want_test = 1 ] && extras="[test]"
pins=(-c constraints.txt)
[ -n "${PXEFORGE_UNPINNED:-}" ] && pins=()
.venv/bin/python -m pip install -q --disable-pip-version-check "${pins[@]}" -e ".${extras}"
echo "setup: ready (.venv/bin/pxeforge)"
