"""Thousands of malformed HTTP requests at the live server, then a byte-exact curl download.

The server (serve_runner.py: `start_http` over `BootFiles`, as `pxeforge serve` builds it)
runs in its own process on 127.0.0.1. Each request goes over its own raw TCP connection:
hand-written attacks (bad request lines, huge headers, bad percent-encoding, NUL, CRLF
injection, Range garbage, bad bodies), then mutants of good requests. Every answer must be a
well-formed status line; 4xx is fine, 5xx is a server bug. A connection the server closes
without an answer is fine too (aiohttp does that for some unparsable requests).
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import os
import random
import re
import shutil
import socket
import subprocess
import time
from collections import Counter
from pathlib import Path

import pytest

from pxeforge.fuzz import Mutation, Mutator

from .fuzzlab import LogRecord, ServeProc, fds, log_records, rss_kib

pytestmark = [
    pytest.mark.interop,
    pytest.mark.skipif(shutil.which("curl") is None, reason="needs the curl client"),
]

HOST = "127.0.0.1"
MUTANTS = 3000
SEED = 7230
MAC = "52:54:00:12:34:56"
GOOD = [
    b"GET /big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
    b"HEAD /big.bin HTTP/1.1\r\nHost: x\r\nRange: bytes=0-99\r\n\r\n",
    b"GET /pxelinux.cfg/default HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    b"GET /ipxe?mac=52:54:00:12:34:56&arch=x86_64&platform=efi HTTP/1.1\r\nHost: x\r\n\r\n",
    b"GET /boot.ipxe HTTP/1.0\r\n\r\n",
    b"POST /_pxeforge/callback HTTP/1.1\r\nHost: x\r\nContent-Length: 27\r\n\r\n"
    b"mac=52:54:00:12:34:56&a=b\r\n",
]
RANGES = [
    b"bytes=abc", b"bytes=5-1", b"bytes=-0", b"bytes=0-", b"bytes=-", b"bytes", b"=", b"",
    b"bytes=1-2-3", b"bytes=99999999999999999999999999-", b"bytes=-99999999999999999999999",
    b"bytes=0-99999999999999999999999", b"lines=0-1", b"bytes=0-1,2-3", b"bytes= 0-1",
    b"bytes=\x00", b"bytes=0-0," * 2000, b"bytes=307217-", b"bytes=307216-307216",
    b"bytes=18446744073709551615-18446744073709551616", b"bytes=1e3-2e3", b"bytes=0x10-0x20",
    b"bytes=\xff\xfe", b"bytes=-1,-1,-1",
]  # fmt: skip
PATHS = [
    b"/%", b"/%z", b"/%zz", b"/%ff%fe", b"/%c0%af", b"/%00", b"/big.bin%00.txt", b"/\x00",
    b"/a%0d%0aSet-Cookie:%20x=1", b"/a\r\nX-Injected: 1", b"/../../etc/passwd",
    b"/%2e%2e/%2e%2e/etc/passwd", b"/..%2f..%2fetc%2fpasswd", b"//etc/passwd", b"/./big.bin",
    b"/big.bin/", b"/big.bin/..", b"/escape", b"/pxelinux.cfg/%2e%2e%2f%2e%2e%2fsecret",
    b"/pxelinux.cfg/01-52-54-00-12-34-56", b"/pxelinux.cfg/" + b"A" * 5000, b"/" + b"a/" * 3000,
    b"/\xff\xfe", b"/\xc3\x28", b"/%e2%82", b"/big.bin?%zz", b"/big.bin#frag",
    b"/ipxe?mac=", b"/ipxe?mac=zz:zz", b"/ipxe?mac=52:54:00:12:34:56&arch=%ff&platform=efi",
    b"/ipxe?mac=52:54:00:12:34:56&uuid=" + b"a" * 5000, b"/ipxe?" + b"&" * 5000,
    b"/ipxe?mac=52%3a54%3a00%3a12%3a34%3a56%00", b"/boot.ipxe?x=\x00", b"*",
    b"http://evil.example/big.bin", b"big.bin", b"", b"/_pxeforge/callbacks?x=%",
]  # fmt: skip
LINES = [
    b"\r\n\r\n", b"GET\r\n\r\n", b"GET /\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n",
    b"GET / HTTP/1.1 extra\r\n\r\n", b"GET  /big.bin  HTTP/1.1\r\n\r\n", b"get / http/1.1\r\n\r\n",
    b"BREW /big.bin HTTP/1.1\r\n\r\n", b"G\x00T / HTTP/1.1\r\n\r\n", b"A" * 70000 + b"\r\n\r\n",
    b"GET / HTTP/1.1\n\n", b"GET / HTTP/1.1\r\r\r\r", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03",
    b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"CONNECT 127.0.0.1:22 HTTP/1.1\r\n\r\n",
    b"OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n", b"TRACE / HTTP/1.1\r\nHost: x\r\n\r\n",
    b"DELETE /big.bin HTTP/1.1\r\nHost: x\r\n\r\n", b"GET /big.bin HTTP/1.1\r\n",
    b"GET /big.bin HTTP/1." + b"1" * 1000 + b"\r\n\r\n", b"\xff" * 100,
]  # fmt: skip
HEADERS = [
    b"Host: x\r\nX: " + b"a" * 70000, b"Host: x\r\n" + b"X-A: b\r\n" * 5000,
    b"Host: x\r\n\x00: y", b"Host: x\r\nX\x00Y: z", b"Host: x\r\nX: a\x00b",
    b"Host: x\r\n folded: value", b"Host: x\r\nX: a\r\n continued",
    b"Host: x\r\nNo-Colon", b"Host: x\r\n: empty-name", b"Host: x\r\nX :space-before-colon",
    b"Host: x\r\nContent-Length: -1", b"Host: x\r\nContent-Length: 99999999999999999999999",
    b"Host: x\r\nContent-Length: 5\r\nContent-Length: 6", b"Host: x\r\nContent-Length: 1e3",
    b"Host: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3",
    b"Host: x\r\nTransfer-Encoding: gzip, chunked", b"Host: x\r\nTransfer-Encoding: \x00",
    b"Host: x\r\nConnection: upgrade\r\nUpgrade: websocket", b"Host: \xff\xfe",
    b"Host: x\r\nIf-Modified-Since: garbage", b"Host: x\r\nIf-None-Match: \x00\xff",
    b"Host: x\r\nIf-Range: \"zzz\"\r\nRange: bytes=0-1", b"Host: x\r\nAccept-Encoding: \xff",
    b"Host: x\r\nExpect: 100-continue", b"Host: x\r\nExpect: garbage",
]  # fmt: skip
BODIES = [
    b"Content-Length: 5\r\n\r\n\xff\xfe\x00\x01\x02", b"Content-Length: 2\r\n\r\n{}",
    b"Content-Length: 1\r\n\r\n[", b"Content-Length: 14\r\n\r\n{\"mac\": \"zz\"}",
    b"Content-Length: 11\r\n\r\nmac=%zz&a=b", b"Content-Length: 99999999\r\n\r\nshort",
    b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    b"Transfer-Encoding: chunked\r\n\r\nffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    b"Content-Length: 70000\r\n\r\n" + b"a" * 70000,
    b"Content-Length: 35\r\n\r\n{\"mac\": \"52:54:00:12:34:56\", \"x\": [",
]  # fmt: skip
INJECTIONS = [b"%00", b"%", b"%zz", b"%c0%af", b"\r\n", b"\x00", b"../", b"%2e%2e/", b"\xff"]


def handwritten() -> list[bytes]:
    out = list(LINES)
    for path in PATHS:
        for method in (b"GET", b"HEAD"):
            out.append(method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n\r\n")
    for value in RANGES:
        for path in (b"/big.bin", b"/pxelinux.cfg/default"):
            out.append(b"GET " + path + b" HTTP/1.1\r\nHost: x\r\nRange: " + value + b"\r\n\r\n")
    for headers in HEADERS:
        out.append(b"GET /big.bin HTTP/1.1\r\n" + headers + b"\r\n\r\n")
    for body in BODIES:
        out.append(b"POST /_pxeforge/callback HTTP/1.1\r\nHost: x\r\n" + body)
        out.append(b"POST /big.bin HTTP/1.1\r\nHost: x\r\n" + body)
    return out


def mutants(n: int) -> list[bytes]:
    """Mutants of the good requests: the mutator's protocol-blind kinds, plus injections of
    percent-escapes, CR LF and NUL into the request line."""
    generic = [
        Mutation.BIT_FLIP, Mutation.INTERESTING, Mutation.TRUNCATE, Mutation.EXTEND,
        Mutation.SPLICE,
    ]  # fmt: skip
    out = [m.data for m in Mutator(GOOD, "tftp", seed=SEED, kinds=generic).take(n // 2)]
    rng = random.Random(SEED)
    while len(out) < n:
        request = rng.choice(GOOD)
        line_end = request.index(b" HTTP/")
        at = rng.randint(5, line_end)
        out.append(request[:at] + rng.choice(INJECTIONS) + request[at:])
    return out


def exchange(port: int, request: bytes) -> str:
    """Send one request on a fresh connection; the status code, or how the exchange ended.

    A request the server is still waiting to complete (truncated, a body shorter than its
    Content-Length) gets our end of file after half a second: ``eof:<status>`` or
    ``eof:closed`` then. (aiohttp stops at a client's end of file without answering, so the
    end of file cannot simply follow every request.)
    """
    with socket.create_connection((HOST, port), timeout=5) as sock:
        try:
            sock.sendall(request)
            sock.settimeout(0.5)
            try:
                return _status(_read_head(sock))
            except TimeoutError:
                pass
            sock.shutdown(socket.SHUT_WR)
            sock.settimeout(5)
            return "eof:" + _status(_read_head(sock))
        except (ConnectionResetError, BrokenPipeError):
            return "reset"
        except TimeoutError:
            return "timeout"


def _read_head(sock: socket.socket) -> bytes:
    head = b""
    while b"\r\n" not in head and len(head) < 4096:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return head


def _status(head: bytes) -> str:
    if not head:
        return "closed"
    line = head.split(b"\r\n", 1)[0]
    parts = line.split(b" ", 2)
    # aiohttp answers a request line claiming HTTP/0.x with "HTTP/0.x <status>": odd (0.9
    # had no status line) but harmless
    if (
        len(parts) < 2
        or not parts[0].startswith((b"HTTP/1.", b"HTTP/0."))
        or not parts[1].isdigit()
    ):
        return f"garbage:{line[:40]!r}"
    return parts[1].decode()


def noise(record: LogRecord) -> bool:
    """aiohttp's report of a request it answered 400 itself (its parser refused it)."""
    exc = record.exception or ""
    return (
        record.logger == "aiohttp.server"
        and record.text.startswith("Error handling request from 127.0.0.1")
        and exc.startswith("aiohttp.http_exceptions.")
        and ": 400, message:" in exc
    )


def test_http_server_survives_malformed_requests(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "pxelinux.cfg").mkdir(parents=True)
    data = os.urandom(300 * 1024 + 17)
    (root / "big.bin").write_bytes(data)
    (tmp_path / "secret").write_text("SECRET outside the root\n")
    (root / "escape").symlink_to(tmp_path / "secret")
    kernel = tmp_path / "vmlinuz"
    kernel.write_bytes(b"K" * 4096)
    requests = handwritten() + mutants(MUTANTS)
    server = ServeProc(root, kernel).start()
    try:
        pid, port = server.pid, server.http_port
        fds_before, rss_before = fds(pid), rss_kib(pid)
        started = time.monotonic()
        with concurrent.futures.ThreadPoolExecutor(32) as pool:
            outcomes = list(pool.map(lambda r: exchange(port, r), requests))
        seconds = time.monotonic() - started
        assert server.alive(), "the server died"
        out = tmp_path / "big.out"
        done = subprocess.run(
            ["curl", "-sS", "--max-time", "30", f"http://{HOST}:{port}/big.bin", "-o", str(out)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert hashlib.sha256(out.read_bytes()).digest() == hashlib.sha256(data).digest()
        for _ in range(50):  # the server closes its side of the last connections
            if len(fds(pid)) == len(fds_before):
                break
            time.sleep(0.1)
        fds_after, rss_after = fds(pid), rss_kib(pid)
        server.stop()
    finally:
        server.close()
    log = server.log
    counts = Counter(outcomes)
    print(
        f"\n{len(requests)} malformed requests in {seconds:.1f}s: {dict(counts.most_common())}; "
        f"RSS {rss_before} → {rss_after} KiB; fds {len(fds_before)} → {len(fds_after)}"
    )
    errors = [(o, r[:120]) for o, r in zip(outcomes, requests, strict=True) if "5" == o[-3:-2]]
    assert not errors, f"{len(errors)} server errors, e.g. {errors[:5]}"
    assert not [o for o in counts if o.startswith(("garbage", "timeout"))], counts
    # nothing outside the root was served: traversal, the symlink out, encoded dots
    escapes = [
        (o, r[:80])
        for o, r in zip(outcomes, requests, strict=True)
        if re.search(rb"passwd|escape|secret", r.split(b"\r\n", 1)[0]) and o[-3:-2] == "2"
    ]
    assert not escapes, escapes
    assert sum(n for o, n in counts.items() if o[-3:-2] == "4") > len(requests) // 3
    # no error of ours; aiohttp's own ERROR + traceback for each request it cannot parse is
    # noise (see test_a_bad_request_is_logged_in_one_line) but no fault
    ours = [r for r in log_records(log) if r.level in ("ERROR", "CRITICAL") and not noise(r)]
    assert not ours, "\n".join(r.text for r in ours[:3])
    assert log.count("Traceback") == sum(noise(r) for r in log_records(log))
    # nor a 5xx the client never saw (it had hung up): the access log has them all
    access = [r.text for r in log_records(log) if r.logger == "pxeforge.http.access"]
    assert len(access) > len(requests) // 2
    assert not [line for line in access if re.search(r'" 5\d\d ', line)]
    assert "SECRET" not in log
    assert fds_after == fds_before
    assert rss_after - rss_before < 100 * 1024
