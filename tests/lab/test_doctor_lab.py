"""`pxeforge doctor` names what is broken in real firmware boots through a real `pxeforge serve`.

Each test builds a deliberately broken lab (QEMU under TCG in a private network namespace,
`pxeforge.lab.run.Lab`), starts the VM and runs the real CLI — ``pxeforge doctor`` inside the
namespace, against the server's API, with the credentials it wrote — until the doctor names the
problem (bounded: a broken boot fails fast), then tears everything down:

1. **missing loader**: the boot root lacks ``pxelinux.0`` (a copy of the lab's root without
   it); the BIOS iPXE ROM asks for it over TFTP and gets ERROR 1.
2. **another DHCP server, handing a BIOS loader to a UEFI client**: dnsmasq in a second
   namespace, on a veth into the lab's bridge (10.213.0.2), answers every PXE client with
   ``pxelinux.0`` and pxeforge as next-server — the classic "option 67 = pxelinux.0 for
   everyone". pxeforge serves from the inventory, where the machine is not enrolled, so only
   dnsmasq answers; OVMF (arch 7) takes its offer and fetches the BIOS loader from pxeforge.

3. **the control**: the same lab unbroken; the guest calls back and the doctor finds nothing —
   and the same boot is checked as the live timeline (``pxeforge node timeline MAC``), the
   Prometheus ``/metrics`` and the dashboard's unknown-machines page saw it.

Only one VM runs at a time; each test takes ~35–55 s under TCG (~2.5 min for the three).
"""

from __future__ import annotations

import base64
import http.client
import json
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from pxeforge.api.auth import read_credentials
from pxeforge.cli.doctor import EXIT_ERRORS
from pxeforge.config import BootMethod
from pxeforge.lab import guest as guest_mod
from pxeforge.lab import netns, procs
from pxeforge.lab.qemu import VmFirmware
from pxeforge.lab.run import Lab, LabConfig

pytestmark = pytest.mark.lab

DIAGNOSIS_TIMEOUT = 90.0  # seconds from the VM's start until the doctor must have named it
ROGUE_IP = "10.213.0.2"


class _RootWithout(Lab):
    """A lab whose ``pxeforge serve`` boots from a copy of the boot root lacking ``missing``."""

    def __init__(self, config: LabConfig, missing: str) -> None:
        super().__init__(config, report=print)
        self.missing = missing

    def server_argv(self) -> list[str]:
        argv = super().server_argv()
        assert self.root is not None
        broken = self.workdir / "root-broken"
        if not broken.exists():
            shutil.copytree(self.root, broken)
            (broken / self.missing).unlink()
        argv[argv.index("--root") + 1] = str(broken)
        return argv


def doctor(lab: Lab, *args: str) -> subprocess.CompletedProcess[str]:
    """The real ``pxeforge doctor`` inside the lab's namespace, against its server's API."""
    argv = netns.ns_exec(
        lab.name,
        [sys.executable, "-m", "pxeforge.cli.main", "doctor", *args]
        + ["--url", f"http://{lab.server_ip}:{lab.config.api_port}"]
        + ["--data-dir", str(lab.workdir / "data")],
    )
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)


def diagnose_until(lab: Lab, mac: str, wanted: set[str]) -> dict[str, Any]:
    """Ask the doctor about ``mac`` every 2 s until its findings include ``wanted``."""
    deadline = time.monotonic() + DIAGNOSIS_TIMEOUT
    answer: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = doctor(lab, mac, "--json")
        assert run.returncode in (0, EXIT_ERRORS), run.stderr
        answer = json.loads(run.stdout)
        if wanted <= {f["code"] for f in answer["findings"]}:
            return answer
        time.sleep(2.0)
    raise AssertionError(
        f"the doctor did not name {sorted(wanted)} within {DIAGNOSIS_TIMEOUT:.0f} s: "
        f"{json.dumps(answer, indent=1)}\n--- server log:\n{procs.tail(lab.server_log, 30)}"
    )


def wait_for_api(lab: Lab, timeout: float = 30.0) -> None:
    """The lab waits for DHCP, TFTP and HTTP; the API binds last: wait for it too."""

    def connects() -> bool:
        try:
            socket.create_connection((lab.server_ip, lab.config.api_port), timeout=1).close()
        except OSError:
            return False
        return True

    deadline = time.monotonic() + timeout
    while not netns.netns_call(lab.name, connects):
        assert time.monotonic() < deadline, procs.tail(lab.server_log, 30)
        time.sleep(0.2)


@contextmanager
def running(lab: Lab) -> Iterator[Lab]:
    try:
        with lab:
            wait_for_api(lab)
            yield lab
    finally:
        leaked = netns.exists(lab.name)
        lab.close()
        assert not leaked, f"the lab left its namespace {lab.name} behind"


@contextmanager
def rogue_dhcp(lab: Lab, boot_file: str) -> Iterator[Path]:
    """dnsmasq in its own namespace, cabled into the lab's bridge, as a second DHCP server
    that tells every client to TFTP ``boot_file`` from the lab's server. Yields its log."""
    ns = netns.unique_name()
    log = lab.workdir / "dnsmasq.log"
    proc: subprocess.Popen[bytes] | None = None
    ip = ["ip", "-n"]
    try:
        for argv in (
            ["ip", "netns", "add", ns],
            netns.ns_exec(ns, ["sysctl", "-q", "-w", "net.ipv6.conf.all.disable_ipv6=1"]),
            [*ip, lab.name, "link", "add", "pxfrogue0", "type", "veth", "peer", "name",
             "pxfrogue1", "netns", ns],
            [*ip, lab.name, "link", "set", "pxfrogue0", "master", lab.net.bridge, "up"],
            [*ip, ns, "link", "set", "lo", "up"],
            [*ip, ns, "addr", "add", f"{ROGUE_IP}/24", "dev", "pxfrogue1"],
            [*ip, ns, "link", "set", "pxfrogue1", "up"],
        ):  # fmt: skip
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        proc = procs.start(
            netns.ns_exec(
                ns,
                [
                    "dnsmasq", "--keep-in-foreground", "--conf-file=/dev/null", "--port=0",
                    "--user=root", "--interface=pxfrogue1", "--bind-interfaces",
                    "--dhcp-range=10.213.0.50,10.213.0.60,255.255.255.0,1h",
                    f"--dhcp-boot={boot_file},,{lab.server_ip}", "--no-ping", "--log-dhcp",
                    f"--dhcp-leasefile={lab.workdir / 'dnsmasq.leases'}",
                    f"--log-facility={log}", "--pid-file=",
                ],
            ),
            lab.workdir / "dnsmasq.out",
            what="dnsmasq",
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while "DHCP, IP range" not in (log.read_text() if log.exists() else ""):
            assert proc.poll() is None, procs.tail(lab.workdir / "dnsmasq.out")
            assert time.monotonic() < deadline, "dnsmasq did not start"
            time.sleep(0.1)
        yield log
    finally:
        if proc is not None:
            procs.stop(proc)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30, check=False)
        assert not netns.exists(ns)


def test_missing_loader(tmp_path: Path) -> None:
    config = LabConfig(
        firmware=VmFirmware.BIOS,
        boot_method=BootMethod.PXELINUX,
        workdir=tmp_path / "lab",
        timeout=DIAGNOSIS_TIMEOUT,
    )
    with running(_RootWithout(config, "pxelinux.0")) as lab:
        (vm,) = lab.start_vms()
        mac = vm.spec.mac
        answer = diagnose_until(lab, mac, {"boot-file-not-found"})
        found = {f["code"]: f for f in answer["findings"]}
        missing = found["boot-file-not-found"]
        assert missing["severity"] == "error"
        assert missing["what"].startswith('boot file "pxelinux.0" not found over TFTP')
        assert "pxeforge assets fetch --root" in missing["do"]
        assert answer["node"] is None and answer["macs"] == [mac]  # static --kernel boots
        assert "unknown-machine" not in found  # … every machine: no enrollment needed
        text = doctor(lab, mac)
        print(text.stdout)
        assert text.returncode == EXIT_ERRORS
        assert 'boot file "pxelinux.0" not found over TFTP' in text.stdout
        assert "seen:" in text.stdout and "tftp refused" in text.stdout


def test_another_dhcp_server_gives_a_uefi_client_a_bios_loader(tmp_path: Path) -> None:
    if shutil.which("dnsmasq") is None:
        pytest.skip("needs dnsmasq (apt-get install dnsmasq-base)")
    guest = guest_mod.build_guest(guest_mod.default_cache_dir(), log=print)
    config = LabConfig(
        firmware=VmFirmware.UEFI,
        boot_method=BootMethod.PXELINUX,
        workdir=tmp_path / "lab",
        timeout=DIAGNOSIS_TIMEOUT,
        inventory=True,  # boots follow the inventory: pxeforge ignores the unknown machine
        kernel=guest.kernel,
        initrd=guest.initrd,
    )
    with running(Lab(config, report=print)) as lab, rogue_dhcp(lab, "pxelinux.0") as dnsmasq:
        (vm,) = lab.start_vms()
        mac = vm.spec.mac
        answer = diagnose_until(lab, mac, {"other-dhcp-server", "loader-mismatch"})
        found = {f["code"]: f for f in answer["findings"]}
        assert list(found)[:2] == ["other-dhcp-server", "loader-mismatch"]  # the cause first
        other = found["other-dhcp-server"]
        assert other["severity"] == "error"
        assert f"the client took the offer of {ROGUE_IP}" in other["what"]
        assert "pxeforge did not answer it (not-for-us)" in other["what"]
        mismatch = found["loader-mismatch"]
        assert mismatch["what"].startswith(
            'arch 7 (x64 UEFI) client got a BIOS loader: "pxelinux.0"'
        )
        assert f"the DHCP answer came from another server, {ROGUE_IP}" in mismatch["what"]
        assert found["unknown-machine"]["severity"] == "warning"
        assert "DHCPACK(pxfrogue1) " in dnsmasq.read_text()  # dnsmasq did answer it
        text = doctor(lab)
        print(text.stdout)
        assert text.returncode == EXIT_ERRORS
        assert text.stdout.startswith("1 machine with problems")
        assert f"machine {mac} (no node has this MAC)" in text.stdout


def test_a_healthy_boot_has_nothing_wrong(tmp_path: Path) -> None:
    """The control: the same lab unbroken boots to the guest's callback, and the doctor — which
    saw pxelinux's config search miss file after file — finds nothing."""
    config = LabConfig(
        firmware=VmFirmware.BIOS,
        boot_method=BootMethod.PXELINUX,
        workdir=tmp_path / "lab",
        timeout=150.0,
    )
    with running(Lab(config, report=print)) as lab:
        result = lab.boot()
        assert result.ok, [vm.reason for vm in result.vms]
        mac = result.vms[0].mac
        one = doctor(lab, mac, "--json")
        answer = json.loads(one.stdout)
        assert one.returncode == 0, one.stdout
        assert answer["findings"] == [], answer["findings"]
        # it saw the whole boot: DHCP twice (firmware, guest), pxelinux.0, ldlinux.c32, the
        # config search's misses (pxelinux.cfg/<uuid>, 01-<mac>, C0A8…), kernel, initrd
        assert answer["events"] > 15
        everything = doctor(lab)
        assert everything.returncode == 0, everything.stdout
        assert everything.stdout.startswith("no machines with problems"), everything.stdout
        observed_by_timeline_metrics_and_dashboard(lab, mac)


def _get(lab: Lab, path: str) -> tuple[int, str]:
    """GET ``path`` from the server's API port inside the namespace, with its credentials."""
    creds = read_credentials(lab.workdir / "data")
    assert creds is not None
    auth = base64.b64encode(f"{creds.user}:{creds.password}".encode()).decode()

    def call() -> tuple[int, str]:
        conn = http.client.HTTPConnection(lab.server_ip, lab.config.api_port, timeout=10)
        try:
            conn.request("GET", path, headers={"Authorization": f"Basic {auth}"})
            resp = conn.getresponse()
            return resp.status, resp.read().decode()
        finally:
            conn.close()

    result: tuple[int, str] = netns.netns_call(lab.name, call)
    return result


def observed_by_timeline_metrics_and_dashboard(lab: Lab, mac: str) -> None:
    """The same real boot, as the live timeline, /metrics and the dashboard saw it."""
    # the timeline, through the real CLI: the firmware's and the guest's DHCP, the loader over
    # TFTP, pxelinux's config search misses, the kernel and initrd
    run = subprocess.run(
        netns.ns_exec(
            lab.name,
            [sys.executable, "-m", "pxeforge.cli.main", "node",
             "--url", f"http://{lab.server_ip}:{lab.config.api_port}",
             "--data-dir", str(lab.workdir / "data"), "timeline", mac, "--json"],
        ),
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    events = [json.loads(line) for line in run.stdout.splitlines() if line.strip()]  # JSON lines
    seen = {(e["source"], e["kind"]) for e in events}
    assert {("dhcp", "discover"), ("dhcp", "offer"), ("dhcp", "ack")} <= seen, seen
    finished = [
        e["data"].get("file") for e in events if (e["source"], e["kind"]) == ("tftp", "finished")
    ]
    assert "pxelinux.0" in finished, finished
    assert any(e["source"] == "tftp" and e["kind"] == "refused" for e in events)  # cfg search
    acks = [e for e in events if (e["source"], e["kind"]) == ("dhcp", "ack")]
    assert any(e["data"].get("loader") == "pxelinux.0" for e in acks), acks
    # /metrics (public): the DHCP answers and TFTP transfers of this boot are counted
    status, text = _get(lab, "/metrics")
    assert status == 200
    values: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values['pxeforge_dhcp_requests_total{type="DISCOVER",outcome="offer"}'] >= 2
    assert values['pxeforge_tftp_transfers_total{outcome="completed"}'] >= 3
    assert values["pxeforge_tftp_sent_bytes_total"] > 1_000_000  # the guest kernel and initrd
    # the dashboard: the MAC (enrolled nowhere) is on the unknown machines page
    status, page = _get(lab, "/dashboard/unknown")
    assert status == 200 and mac in page
