#!/usr/bin/env bash
# Install what the benchmarks need on a fresh Debian 12 machine (run as root):
# the peer servers and the clients, py-spy for profiling.
#
# Installing tftpd-hpa or nginx on a systemd machine starts their system services (TFTP on
# port 69, HTTP on port 80). The benchmarks never use those: they start their own copies on
# 127.0.0.1 inside private network namespaces. So this script stops and disables every service
# the packages started, leaving the machine as quiet as before.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "bench/setup.sh: run as root (apt-get, and the benchmarks need namespaces)" >&2
  exit 1
fi

# perfdhcp ships in kea-admin
debs=(tftpd-hpa dnsmasq-base kea-dhcp4-server kea-admin nginx-light wrk atftp curl iproute2
      util-linux)
missing=()
for p in "${debs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "bench/setup.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The packages' own services (tftpd-hpa on 69, nginx on 80, Kea on 67): not wanted.
services=(tftpd-hpa nginx kea-dhcp4-server isc-kea-dhcp4-server)
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
  for s in "${services[@]}"; do
    if systemctl is-enabled --quiet "$s.service" 2>/dev/null \
        || systemctl is-active --quiet "$s.service" 2>/dev/null; then
      systemctl disable --now "$s.service" >/dev/null 2>&1 || true
      echo "bench/setup.sh: stopped and disabled $s.service"
    fi
  done
else
  # No systemd: Debian's init scripts may have started them at install time. Their status
  # and stop actions match processes by name, which would also hit other people's in.tftpd
  # or kea-dhcp4; so stop only the PID each init script recorded, then disable the script.
  for entry in tftpd-hpa:/run/tftpd-hpa.pid:/usr/sbin/in.tftpd nginx:/run/nginx.pid:/usr/sbin/nginx \
               kea-dhcp4-server:/run/kea-dhcp4-server.pid:/usr/sbin/kea-dhcp4 \
               kea-dhcp4-server:/run/kea-dhcp4.kea-dhcp4.pid:/usr/sbin/kea-dhcp4; do
    IFS=: read -r s pidfile exe <<<"$entry"
    pid=$(cat "$pidfile" 2>/dev/null || true)
    if [ -n "$pid" ] && [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$exe" ]; then
      kill "$pid" && echo "bench/setup.sh: stopped $s (pid $pid from $pidfile)"
      update-rc.d "$s" disable >/dev/null 2>&1 || true
    fi
  done
fi

py=${PYTHON:-python3}
if ! command -v py-spy >/dev/null; then
  "$py" -m pip install -q py-spy
fi
for tool in in.tftpd dnsmasq kea-dhcp4 perfdhcp nginx wrk atftp curl taskset ip py-spy; do
  command -v "$tool" >/dev/null || { echo "bench/setup.sh: $tool still missing" >&2; exit 1; }
done
echo "bench/setup.sh: ready (python bench/run_all.py)"
