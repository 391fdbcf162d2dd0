"""`pxeforge trace` through the real command: text, JSON, --mac, stdin, colour, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from ipaddress import IPv4Address
from pathlib import Path

from click.testing import CliRunner
from trace_wire import Wire, dora

from pxeforge.cli.main import cli
from pxeforge.trace import trace_capture
from pxeforge.trace.report import render_text

DATA = Path(__file__).resolve().parent.parent / "data"
UEFI = DATA / "uefi-ipxe-boot-control.pcap"
MAC = "52:54:00:77:00:10"


def two_clients(tmp_path: Path) -> Path:
    w = Wire()
    dora(w, 0.0, "52:54:00:00:00:01", IPv4Address("10.0.0.11"), "pxelinux.0", xid=1)
    dora(w, 0.5, "52:54:00:00:00:02", IPv4Address("10.0.0.12"), "pxelinux.0", arch=7, xid=2)
    path = tmp_path / "two.pcap"
    path.write_bytes(w.pcap())
    return path


def test_text_report_is_the_rendered_trace() -> None:
    result = CliRunner().invoke(cli, ["trace", str(UEFI)])
    assert result.exit_code == 0, result.output
    assert result.output == render_text(trace_capture(UEFI))
    assert "\x1b[" not in result.output  # not a terminal: no colour


def test_colour_when_asked() -> None:
    result = CliRunner().invoke(cli, ["trace", "--color", str(UEFI)])
    assert result.exit_code == 0
    assert "\x1b[" in result.output and "client 52:54:00:77:00:10" in result.output


def test_json() -> None:
    result = CliRunner().invoke(cli, ["trace", "--json", str(UEFI)])
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert data["schema"] == "pxeforge.trace/1"
    assert [c["mac"] for c in data["clients"]] == [MAC]


def test_mac_filter(tmp_path: Path) -> None:
    path = two_clients(tmp_path)
    result = CliRunner().invoke(cli, ["trace", "--json", "--mac", "52-54-00-00-00-02", str(path)])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert [c["mac"] for c in data["clients"]] == ["52:54:00:00:00:02"]
    assert {e["client"] for e in data["events"]} == {"52:54:00:00:00:02"}
    assert [f["code"] for f in data["findings"]] == ["loader-mismatch"]  # arch 7 got pxelinux.0
    text = CliRunner().invoke(cli, ["trace", "--mac", "525400000001", str(path)]).output
    assert "client 52:54:00:00:00:01" in text and "52:54:00:00:00:02" not in text.split("\n", 5)[5]
    assert "findings: none" in text


def test_unknown_or_invalid_mac(tmp_path: Path) -> None:
    path = two_clients(tmp_path)
    result = CliRunner().invoke(cli, ["trace", "--mac", "00:11:22:33:44:55", str(path)])
    assert result.exit_code == 1
    assert "00:11:22:33:44:55 not in" in result.output and "52:54:00:00:00:01" in result.output
    result = CliRunner().invoke(cli, ["trace", "--mac", "not-a-mac", str(path)])
    assert result.exit_code == 2 and "not a MAC address" in result.output


def test_stdin(tmp_path: Path) -> None:
    data = two_clients(tmp_path).read_bytes()
    result = CliRunner().invoke(cli, ["trace", "-"], input=data)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("pxeforge trace  <stdin>\n")
    assert "clients: 2" in result.output


def test_silent_after(tmp_path: Path) -> None:
    w = Wire()
    dora(w, 0.0, MAC, IPv4Address("10.0.0.11"), "pxelinux.0")
    w.arp(30.0)
    path = tmp_path / "quiet.pcap"
    path.write_bytes(w.pcap())
    loud = CliRunner().invoke(cli, ["trace", "--json", str(path)]).output
    assert [f["code"] for f in json.loads(loud)["findings"]] == ["client-silent"]
    calm = CliRunner().invoke(cli, ["trace", "--json", "--silent-after", "60", str(path)]).output
    assert json.loads(calm)["findings"] == []


def test_not_a_capture_exits_1_with_a_message(tmp_path: Path) -> None:
    bogus = tmp_path / "notes.txt"
    bogus.write_text("this is not a capture, it is a text file\n")
    proc = subprocess.run(
        [sys.executable, "-m", "pxeforge", "trace", str(bogus)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith(f"pxeforge: {bogus}: not a pcap or pcapng file")
    missing = subprocess.run(
        [sys.executable, "-m", "pxeforge", "trace", str(tmp_path / "none.pcap")],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert missing.returncode == 1 and "cannot read" in missing.stderr


def test_listed_in_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "trace" in result.output
    result = CliRunner().invoke(cli, ["trace", "--help"])
    assert (
        result.exit_code == 0 and "--silent-after" in result.output and "tcpdump" in result.output
    )
