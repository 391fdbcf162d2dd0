"""``python -m pxeforge.fuzz``: one bounded run against a live TFTP server, JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .fuzzlab import ServeProc


def test_cli_fuzzes_a_tftp_server_and_reports(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "pxelinux.0").write_bytes(bytes(3000))
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 64)
    server = ServeProc(root, kernel).start()
    try:
        argv = [sys.executable, "-m", "pxeforge.fuzz", "tftp", f"127.0.0.1:{server.tftp_port}"]
        argv += ["--count", "3000", "--seconds", "30", "--seed", "5", "--bind", "127.0.0.1:0"]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        assert server.alive()
        stats = server.stats()
    finally:
        server.close()
    assert report["sent"] == 3000 and report["probes"] == 3000 // 64 + 1
    assert report["probe_timeouts"] == 0 and report["send_errors"] == 0
    assert report["to_listener"] + report["right_tid"] + report["wrong_tid"] == 3000
    assert 0 < report["rejected"] < report["to_listener"]
    assert stats["dropped"] >= report["rejected"]
    assert sum(report["kinds"].values()) >= 3000


def test_cli_refuses_a_bad_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pxeforge.fuzz", "dhcp", "no-port"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "HOST:PORT" in done.stderr
