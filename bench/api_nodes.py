#!/usr/bin/env python3
"""REST API benchmark: 10,000 nodes enrolled; ``GET /v1/nodes`` (default page) and
``GET /v1/nodes/{id}`` latency; ``POST /v1/nodes`` latency; provision transitions per second —
on SQLite and on PostgreSQL (issue 3; target p99 < 100 ms for both GETs).

    python bench/api_nodes.py                      # both databases, prints a markdown section
    python bench/api_nodes.py --db sqlite --append bench/RESULTS.md

What runs: the real ``pxeforge serve`` (``--dhcp off --api-auth noauth --db URL``) from this
checkout, on 127.0.0.1 high ports; a throwaway PostgreSQL cluster (Debian's binaries, initdb in
a temp dir, default durability: fsync on) when PostgreSQL is measured; temp dirs under /var/tmp
(a real disk: SQLite commits are fsynced, ``synchronous=FULL``). The 10,000 nodes are inserted
in one bulk transaction before the server starts (setup, not measured); the measured requests
go over one keep-alive HTTP connection, one at a time, so each figure is one request's latency.
Transitions: N ``fake-hardware`` nodes are created through the API, then ``manage`` and
``provide`` are asked for all of them from 8 client threads; the time until every node is
``available`` gives transitions per second (4 per node: enroll → verifying → manageable →
cleaning → available). Every loop is bounded in count and time; processes are stopped by PID.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import pwd
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid as uuidlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

VERSION = "1.87"


def free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]


@contextmanager
def tmpdir(tag: str) -> Iterator[Path]:
    base = os.environ.get("PXFB_TMP", "/var/tmp")
    path = Path(tempfile.mkdtemp(prefix=f"pxfb-api-{tag}-", dir=base))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@contextmanager
def postgres(root: Path) -> Iterator[str]:
    """A throwaway PostgreSQL cluster (default durability); yields its SQLAlchemy URL."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise SystemExit("PostgreSQL binaries not found (apt-get install postgresql)")
    bindir = found[-1].parent
    data, sock = root / "pg", root / "pgsock"
    sock.mkdir()
    as_pg: list[str] = []
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        for path in (root, sock):
            os.chown(path, pw.pw_uid, pw.pw_gid)
        as_pg = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    subprocess.run(
        [*as_pg, str(bindir / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust",
         "-E", "UTF8", "--no-locale"],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    pg_ctl = str(bindir / "pg_ctl")
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c max_connections=60"
    subprocess.run(
        [*as_pg, pg_ctl, "-D", str(data), "-l", str(root / "pg.log"), "-w", "-t", "60",
         "-o", options, "start"],
        check=True, capture_output=True, timeout=120,
    )  # fmt: skip
    try:
        import psycopg

        with psycopg.connect(
            host="127.0.0.1", port=port, user="postgres", dbname="postgres", autocommit=True
        ) as conn:
            conn.execute(b"CREATE DATABASE pxeforge_bench")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/pxeforge_bench"
    finally:
        subprocess.run(
            [*as_pg, pg_ctl, "-D", str(data), "-m", "fast", "-w", "stop"],
            capture_output=True, timeout=60,
        )  # fmt: skip


def enroll(url: str, count: int) -> float:
    """Insert ``count`` nodes (with one port each) in one transaction; returns seconds."""
    from sqlalchemy import insert

    from pxeforge.inventory.db import write_engine
    from pxeforge.inventory.models import Node, Port
    from pxeforge.inventory.store import Store

    store = Store.connect(url)
    started = time.monotonic()
    now = datetime.now(UTC)
    nodes = []
    for i in range(count):
        nodes.append(
            {
                "uuid": str(uuidlib.uuid4()),
                "name": f"node-{i:05d}",
                "driver": "fake-hardware",
                "driver_info": {"fake_id": f"m{i}"},
                "properties": {"cpus": 8, "memory_mb": 16384, "local_gb": 100},
                "instance_info": {},
                "driver_internal_info": {},
                "extra": {},
                "provision_state": "available" if i % 3 else "manageable",
                "power_state": "power off",
                "maintenance": False,
                "created_at": now,
                "conductor_group": "",
                "protected": False,
                "retired": False,
                "disable_power_off": False,
            }
        )
    with write_engine(store.engine).begin() as conn:
        conn.execute(insert(Node), nodes)
        ids = {row.uuid: row.id for row in conn.execute(Node.__table__.select())}
        ports = [
            {
                "uuid": str(uuidlib.uuid4()),
                "address": "52:54:" + ":".join(f"{i >> s & 255:02x}" for s in (24, 16, 8, 0)),
                "node_id": ids[n["uuid"]],
                "pxe_enabled": True,
                "local_link_connection": {},
                "extra": {},
                "created_at": now,
            }
            for i, n in enumerate(nodes)
        ]  # fmt: skip
        conn.execute(insert(Port), ports)
    elapsed = time.monotonic() - started
    store.close()
    return elapsed


class Server:
    """``pxeforge serve`` from this checkout with the API on a free port."""

    def __init__(self, root: Path, db_url: str) -> None:
        (root / "boot").mkdir()
        (root / "vmlinuz").write_bytes(b"\x00" * 4096)
        self.port = free_port()
        self.log = (root / "serve.log").open("w+")
        env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pxeforge", "-q", "serve",
             "--dhcp", "off", "--address", "127.0.0.1",
             "--tftp-port", str(free_port(socket.SOCK_DGRAM)), "--http-port", str(free_port()),
             "--api-port", str(self.port), "--api-auth", "noauth", "--db", db_url,
             "--root", str(root / "boot"), "--data-dir", str(root / "data"),
             "--kernel", str(root / "vmlinuz")],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        deadline = time.monotonic() + 120
        while True:
            self.log.flush()
            if "pxeforge serving" in (root / "serve.log").read_text():
                break
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise SystemExit("serve did not start:\n" + (root / "serve.log").read_text())
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


class Client:
    """One keep-alive connection; `call` returns (status, body, seconds)."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)

    def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any, float]:
        headers = {"X-OpenStack-Ironic-API-Version": VERSION}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        started = time.perf_counter()
        self.conn.request(method, path, body=data, headers=headers)
        reply = self.conn.getresponse()
        raw = reply.read()
        elapsed = time.perf_counter() - started
        return reply.status, (json.loads(raw) if raw else None), elapsed

    def close(self) -> None:
        self.conn.close()


def latencies(client: Client, paths: Sequence[str]) -> list[float]:
    out = []
    for path in paths:
        status, _body, seconds = client.call("GET", path)
        if status != 200:
            raise SystemExit(f"GET {path}: HTTP {status}")
        out.append(seconds)
    return out


def transitions(port: int, count: int) -> dict[str, float]:
    """Create ``count`` nodes, manage + provide them from 8 threads; transitions per second."""
    client = Client(port)
    posts = []
    uuids = []
    for i in range(count):
        status, body, seconds = client.call(
            "POST",
            "/v1/nodes",
            {
                "driver": "fake-hardware",
                "driver_info": {"fake_id": f"t{i}"},
                "resource_class": "bench-flow",
            },
        )
        if status != 201:
            raise SystemExit(f"POST /v1/nodes: HTTP {status} {body}")
        posts.append(seconds)
        uuids.append(body["uuid"])
    client.close()

    def ask(uuid: str, target: str) -> float:
        c = Client(port)
        try:
            for _attempt in range(100):  # 503 (all workers busy) or 409: retry, bounded
                status, body, seconds = c.call(
                    "PUT", f"/v1/nodes/{uuid}/states/provision", {"target": target}
                )
                if status == 202:
                    return seconds
                if status not in (409, 503):
                    raise SystemExit(f"{target} {uuid}: HTTP {status} {body}")
                time.sleep(0.05)
            raise SystemExit(f"{target} {uuid}: still refused after 100 tries")
        finally:
            c.close()

    def settle(state: str, deadline: float) -> None:
        c = Client(port)
        try:
            while time.monotonic() < deadline:
                _status, body, _s = c.call(
                    "GET",
                    "/v1/nodes?fields=uuid&resource_class=bench-flow&provision_state="
                    + state.replace(" ", "%20"),
                )
                mine = {n["uuid"] for n in body["nodes"]} & set(uuids)
                if len(mine) == count:
                    return
                time.sleep(0.05)
            raise SystemExit(f"nodes did not all reach {state}")
        finally:
            c.close()

    started = time.monotonic()
    puts: list[float] = []
    with ThreadPoolExecutor(8) as pool:
        puts += pool.map(lambda u: ask(u, "manage"), uuids)
    settle("manageable", time.monotonic() + 600)
    with ThreadPoolExecutor(8) as pool:
        puts += pool.map(lambda u: ask(u, "provide"), uuids)
    settle("available", time.monotonic() + 600)
    elapsed = time.monotonic() - started
    return {
        "transitions_per_s": 4 * count / elapsed,
        "seconds": elapsed,
        "post_p50_ms": percentile(posts, 50) * 1000,
        "post_p99_ms": percentile(posts, 99) * 1000,
        "put_p50_ms": percentile(puts, 50) * 1000,
        "put_p99_ms": percentile(puts, 99) * 1000,
    }


def measure(db: str, nodes: int, requests: int, flows: int) -> dict[str, Any]:
    with tmpdir(db) as root:
        with postgres(root) if db == "postgresql" else _sqlite(root) as url:
            from pxeforge.inventory.db import upgrade

            upgrade(url)
            enroll_s = enroll(url, nodes)
            server = Server(root, url)
            try:
                client = Client(server.port)
                _status, page, _s = client.call("GET", "/v1/nodes")
                page_size = len(page["nodes"])
                uuids = [n["uuid"] for n in page["nodes"]]
                while "next" in page and len(uuids) < nodes:
                    _status, page, _s = client.call("GET", "/v1/" + page["next"].split("/v1/")[1])
                    uuids += [n["uuid"] for n in page["nodes"]]
                rng = random.Random(42)
                latencies(client, ["/v1/nodes"] * 5)  # warm-up
                lists = latencies(client, ["/v1/nodes"] * requests)
                ones = latencies(client, [f"/v1/nodes/{rng.choice(uuids)}" for _ in range(
                    requests * 5)])  # fmt: skip
                details = latencies(client, ["/v1/nodes/detail?limit=100"] * requests)
                client.close()
                flow = transitions(server.port, flows)
            finally:
                server.stop()
    return {
        "db": db,
        "nodes": nodes,
        "enroll_s": enroll_s,
        "page_size": page_size,
        "list": lists,
        "one": ones,
        "detail": details,
        **flow,
        "flows": flows,
    }


@contextmanager
def _sqlite(root: Path) -> Iterator[str]:
    yield f"sqlite:///{root / 'pxeforge.db'}"


def ms(values: Sequence[float], q: float) -> str:
    return f"{percentile(values, q) * 1000:.1f}"


def report(results: Sequence[dict[str, Any]], load: str) -> str:
    lines = [
        "### REST API: 10,000 nodes (`bench/api_nodes.py`)",
        "",
        "`pxeforge serve --api-auth noauth --db URL` from this checkout; one keep-alive",
        "connection, one request at a time; latencies in ms. Target: p99 < 100 ms for both",
        "GETs on both databases.",
        "",
        "| database | GET /v1/nodes (page of {p}) p50 / p99 | GET /v1/nodes/{{id}} p50 / p99 "
        "| GET …/detail?limit=100 p50 / p99 | POST /v1/nodes p50 / p99 | provision PUT p50 / "
        "p99 | transitions/s | p99 < 100 ms? |".format(p=results[0]["page_size"]),
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = percentile(r["list"], 99) < 0.1 and percentile(r["one"], 99) < 0.1
        lines.append(
            f"| {r['db']} | {ms(r['list'], 50)} / {ms(r['list'], 99)} "
            f"| {ms(r['one'], 50)} / {ms(r['one'], 99)} "
            f"| {ms(r['detail'], 50)} / {ms(r['detail'], 99)} "
            f"| {r['post_p50_ms']:.1f} / {r['post_p99_ms']:.1f} "
            f"| {r['put_p50_ms']:.1f} / {r['put_p99_ms']:.1f} "
            f"| {r['transitions_per_s']:.0f} | {'yes' if met else 'NO'} |"
        )
    lines += [""]
    for r in results:
        lines.append(
            f"- {r['db']}: {r['nodes']} nodes (+1 port each) bulk-inserted in "
            f"{r['enroll_s']:.1f} s; {len(r['list'])} list, {len(r['one'])} single and "
            f"{len(r['detail'])} detail requests; transitions: {r['flows']} nodes × "
            f"(manage + provide) from 8 threads in {r['seconds']:.1f} s."
        )
    lines += ["", f"Load average (1, 5, 15 min) when it started: {load}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite,postgresql", help="sqlite, postgresql or both")
    parser.add_argument("--nodes", type=int, default=10_000)
    parser.add_argument("--requests", type=int, default=200, help="list/detail requests")
    parser.add_argument("--flows", type=int, default=200, help="nodes taken through transitions")
    parser.add_argument("--append", type=Path, help="append the section to this file")
    args = parser.parse_args()
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    results = [
        measure(db.strip(), args.nodes, args.requests, args.flows)
        for db in args.db.split(",")
        if db.strip()
    ]
    section = report(results, load)
    print(section)
    if args.append is not None:
        # our own section, between markers that bench/run_all.py keeps across its reruns;
        # a rerun of this script replaces it instead of appending a second copy
        begin, end = "<!-- section:api_nodes:begin -->", "<!-- section:api_nodes:end -->"
        text = args.append.read_text() if args.append.exists() else ""
        a, b = text.find(begin), text.find(end)
        if a >= 0 and b > a:
            text = text[:a].rstrip() + "\n" + text[b + len(end) :].lstrip("\n")
        args.append.write_text(f"{text.rstrip()}\n\n{begin}\n{section.strip()}\n{end}\n")


if __name__ == "__main__":
    main()
