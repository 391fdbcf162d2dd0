"""``/v1/images``: upload, list and delete the disk images pxeforge serves (a pxeforge extension).

Theory of operation: the routes are thin over `pxeforge.images.ImageStore` (``<data_dir>/
images``; the data directory is the conductor's `Settings.data_dir`). Authentication is the
API's (these paths are not public). ``PUT /v1/images/{name}`` streams the request body to disk
— chunk by chunk, each written and hashed on the API's thread pool, never held in memory and
not bound by the API's JSON body limit — and answers 201 ``{name, size, sha256, sha512, url}``
once the image is in place (atomically: a failed or short upload leaves nothing). ``url`` is
where the boot plane's HTTP server serves it (``<http_base>/images/<name>``), ready for a
node's ``instance_info.image_source``, with the sha256 for ``image_os_hash_value``.
``GET /v1/images`` lists ``{"images": [...]}``, ``GET /v1/images/{name}`` shows one,
``DELETE /v1/images/{name}`` answers 204.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from pxeforge.api.app import API_CONTEXT, ApiContext
from pxeforge.api.errors import BadRequest
from pxeforge.images import ImageStore

__all__ = ["CHUNK", "ROUTES", "images_of"]

ROUTES = web.RouteTableDef()

CHUNK: Final = 1024 * 1024
"""Bytes handed to the writer thread at a time."""


def images_of(ctx: ApiContext) -> ImageStore:
    """The image store of the API's conductor settings."""
    return ImageStore(ctx.conductor.settings.data_dir / "images")


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(body=json.dumps(data).encode(), status=status,
                        content_type="application/json")  # fmt: skip


@ROUTES.put("/v1/images/{name}")
async def upload(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    settings = ctx.conductor.settings
    store = images_of(ctx)
    expected = request.content_length
    upload = await ctx.run(store.begin, request.match_info["name"])
    try:
        buffer = bytearray()
        async for chunk in request.content.iter_chunked(CHUNK):
            buffer += chunk
            if len(buffer) >= CHUNK:
                await ctx.run(upload.write, bytes(buffer))
                buffer.clear()
        if buffer:
            await ctx.run(upload.write, bytes(buffer))
        image = await ctx.run(upload.commit, expected)
    except ConnectionError:
        await ctx.run(upload.abort)
        raise BadRequest("The upload was interrupted; nothing was stored") from None
    except BaseException:
        await ctx.run(upload.abort)
        raise
    return _json(image.view(settings.http_base), 201)


@ROUTES.get("/v1/images")
async def list_images(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    base = ctx.conductor.settings.http_base
    images = await ctx.run(images_of(ctx).list)
    return _json({"images": [image.view(base) for image in images]})


@ROUTES.get("/v1/images/{name}")
async def show_image(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    image = await ctx.run(images_of(ctx).get, request.match_info["name"])
    return _json(image.view(ctx.conductor.settings.http_base))


@ROUTES.delete("/v1/images/{name}")
async def delete_image(request: web.Request) -> web.Response:
    ctx = request.app[API_CONTEXT]
    await ctx.run(images_of(ctx).delete, request.match_info["name"])
    return web.Response(status=204)
