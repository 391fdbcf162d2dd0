"""`pxeforge image …`: the disk images pxeforge serves to the agent ramdisk, through the API.

Theory of operation: like `pxeforge node` (same ``--url``/``--user``/``--password``/
``--data-dir`` and the credentials `pxeforge serve` wrote), one request per command.
``upload`` streams the file as the body of ``PUT /v1/images/<name>`` (http.client sends it
in blocks: never read into memory) and prints the answer — size, sha256, sha512, URL — with
the ``instance_info`` a node needs to deploy it (the disk format read from the file's first
bytes: qcow2 images start with ``QFI\\xfb``, anything else is sent as raw).
"""

from __future__ import annotations

import base64
import http.client
import json
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote, urlsplit

import click

from pxeforge.cli.node import (
    CLI_VERSION,
    ApiClient,
    ApiFailure,
    _fault,
    api_options,
    client_from,
)

__all__ = ["image"]

QCOW2_MAGIC: Final = b"QFI\xfb"
UPLOAD_TIMEOUT: Final = 600.0
"""Seconds without progress after which an upload gives up (the server hashes as it writes)."""

pass_client = click.make_pass_decorator(ApiClient)


@click.group()
@api_options
@click.pass_context
def image(
    ctx: click.Context, url: str, user: str | None, password: str | None, data_dir: Path
) -> None:
    """Upload, list and delete the disk images pxeforge serves for image deploys."""
    ctx.obj = client_from(url, user, password, data_dir)


def disk_format(path: Path) -> str:
    """``qcow2`` when the file starts with the qcow2 magic, else ``raw``."""
    with path.open("rb") as f:
        return "qcow2" if f.read(4) == QCOW2_MAGIC else "raw"


def _upload(client: ApiClient, path: Path, name: str) -> dict[str, Any]:
    parts = urlsplit(client.url)
    cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
    conn = cls(parts.hostname or "127.0.0.1", parts.port, timeout=UPLOAD_TIMEOUT)
    headers = {
        "X-OpenStack-Ironic-API-Version": CLI_VERSION,
        "Content-Type": "application/octet-stream",
        "Content-Length": str(path.stat().st_size),
        "Accept": "application/json",
    }
    if client.user is not None and client.password is not None:
        token = base64.b64encode(f"{client.user}:{client.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    target = f"{parts.path.rstrip('/')}/v1/images/{quote(name, safe='')}"
    try:
        with path.open("rb") as body:
            conn.request("PUT", target, body=body, headers=headers)
            reply = conn.getresponse()
            raw = reply.read()
    except OSError as exc:
        raise ApiFailure(f"cannot upload to the pxeforge API at {client.url}: {exc}") from None
    finally:
        conn.close()
    if reply.status >= 400:
        raise ApiFailure(f"{_fault(raw)} (HTTP {reply.status})")
    answer: dict[str, Any] = json.loads(raw)
    return answer


@image.command("upload")
@click.argument("file", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--name", help="Image name (default: the file's name).")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of text.")
@pass_client
def upload(client: ApiClient, file: Path, name: str | None, as_json: bool) -> None:
    """Upload FILE (raw or qcow2 whole-disk image); prints its URL and checksums."""
    answer = _upload(client, file, name or file.name)
    if as_json:
        click.echo(json.dumps(answer, indent=2, sort_keys=True))
        return
    fmt = disk_format(file)
    click.echo(f"{answer['name']}: {answer['size']} bytes\n  url     {answer['url']}\n"
               f"  sha256  {answer['sha256']}\n  sha512  {answer['sha512']}")  # fmt: skip
    click.echo(
        "deploy it with:\n  pxeforge node set NODE"
        f" --instance-info image_source={answer['url']}"
        " --instance-info image_os_hash_algo=sha256"
        f" --instance-info image_os_hash_value={answer['sha256']}"
        f" --instance-info image_disk_format={fmt}"
    )


@image.command("list")
@click.option("--json", "as_json", is_flag=True, help="JSON instead of a table.")
@pass_client
def list_images(client: ApiClient, as_json: bool) -> None:
    """List the stored images."""
    images = client.get("/v1/images")["images"]
    if as_json:
        click.echo(json.dumps(images, indent=2, sort_keys=True))
        return
    if not images:
        click.echo("no images")
        return
    width = max(len(i["name"]) for i in images)
    for item in images:
        click.echo(f"{item['name']:<{width}}  {item['size']:>14}  sha256:{item['sha256']}  "
                   f"{item['url']}")  # fmt: skip


@image.command("delete")
@click.argument("name")
@pass_client
def delete_image(client: ApiClient, name: str) -> None:
    """Delete image NAME (downloads in progress finish)."""
    client.request("DELETE", f"/v1/images/{quote(name, safe='')}")
    click.echo(f"deleted {name}")
