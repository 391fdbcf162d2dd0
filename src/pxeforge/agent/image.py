"""Write a whole-disk image from its URL to a disk: checked, streamed, hashed, verified.

Theory of operation (docs/agent-protocol.md, "Image write"):

1. `parse_image_info` checks Ironic's ``image_info`` before anything starts (missing URLs,
   hash algorithm other than sha256/sha512, a hash that is not hex of the right length,
   partition images → `InvalidCommandParamsError`, refused with 400).
2. `write_image` checks the format is permitted (``raw``, ``qcow2``: else
   `InvalidImageFormat`), opens the target (`blockio.open_target`) and learns its size, then
   tries the URLs in order: the first that answers 200 is used; none → `ImageDownloadError`
   naming each URL and why it failed.
3. **raw**: refused before writing when the announced length (``Content-Length``, else
   ``image_size``) exceeds the device, and — when neither is known — as soon as the stream
   would overflow it. The first bytes are looked at: a qcow2 image declared ``raw`` is refused
   (`InvalidImageFormat`) before it is written. Chunks (`CHUNK`) are hashed and written
   straight to the device. Any failure once writing began (checksum mismatch, overflow, the
   stream breaking off or ending short of its ``Content-Length``) zeroes the written region
   again before the command fails: the old disk is gone either way, and a half-written image
   must not boot. A mismatch is `ImageChecksumError` naming the expected and the actual hash.
4. **qcow2**: downloaded to a scratch file (``scratch_dir``: ``/tmp``, which is RAM in the
   ramdisk) while hashing; the checksum is checked *before the disk is touched*; then the
   header is checked (`qcow2.parse_header`: unsupported features → `InvalidImageFormat`), the
   virtual size compared with the device, and `qcow2.convert` writes it.
5. **Verify**: `blockio.drop_cache` (fsync, ``POSIX_FADV_DONTNEED``), then the written bytes
   are read back and hashed with the image's algorithm; a difference is `ImageWriteError`.

Progress goes to ``progress(phase, done, total)`` (phases ``download``, ``write``,
``convert``, ``verify``; ``total`` None when unknown).
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from pxeforge.agent import blockio, qcow2
from pxeforge.agent.errors import (
    ImageChecksumError,
    ImageDownloadError,
    ImageWriteError,
    InvalidCommandParamsError,
    InvalidImageFormat,
)

__all__ = [
    "CHUNK",
    "HASH_ALGOS",
    "PERMITTED_FORMATS",
    "ImageInfo",
    "ProgressFn",
    "parse_image_info",
    "write_image",
]

log = logging.getLogger("pxeforge.agent")

PERMITTED_FORMATS: Final = ("raw", "qcow2")
HASH_ALGOS: Final = {"sha256": 64, "sha512": 128}  # name → hex digest length
CHUNK: Final = 4 * 1024 * 1024
DOWNLOAD_TIMEOUT: Final = 60.0
"""Seconds a connection attempt or a single read may stall before the download fails."""
_HEX: Final = re.compile(r"^[0-9a-fA-F]+$")

ProgressFn = Callable[[str, int, int | None], None]


@dataclass(frozen=True, slots=True)
class ImageInfo:
    id: str
    urls: tuple[str, ...]
    disk_format: str
    os_hash_algo: str
    os_hash_value: str  # lower-case hex
    image_size: int | None = None


def parse_image_info(raw: Any) -> ImageInfo:
    """Ironic's ``image_info`` → `ImageInfo`; `InvalidCommandParamsError` when unusable."""

    def bad(text: str) -> InvalidCommandParamsError:
        return InvalidCommandParamsError(f"image_info: {text}")

    if not isinstance(raw, dict):
        raise bad("must be an object")
    urls = raw.get("urls")
    if isinstance(urls, str):
        urls = [urls]
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise bad("'urls' must be a non-empty list of URLs")
    for url in urls:
        if not url.lower().startswith(("http://", "https://")):
            raise bad(f"{url!r} is not an http(s) URL")
    algo = raw.get("os_hash_algo")
    value = raw.get("os_hash_value")
    if algo not in HASH_ALGOS:
        raise bad(
            f"os_hash_algo {algo!r} is not supported (use one of "
            f"{', '.join(HASH_ALGOS)}); it is mandatory"
        )
    assert isinstance(algo, str)
    if not isinstance(value, str) or not _HEX.match(value) or len(value) != HASH_ALGOS[algo]:
        raise bad(f"os_hash_value {value!r} is not a {algo} hex digest")
    image_type = raw.get("image_type", "whole-disk")
    if image_type not in (None, "whole-disk"):
        raise bad(f"image_type {image_type!r}: only whole-disk images can be written")
    disk_format = raw.get("disk_format") or "raw"
    if not isinstance(disk_format, str):
        raise bad("'disk_format' must be a string")
    size = raw.get("image_size")
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
        raise bad(f"image_size {size!r} is not a byte count")
    return ImageInfo(
        id=str(raw.get("id") or ""),
        urls=tuple(urls),
        disk_format=disk_format,
        os_hash_algo=algo,
        os_hash_value=value.lower(),
        image_size=size,
    )


def _mib(n: int) -> str:
    return f"{n / 1024 / 1024:.1f} MiB"


def _open(info: ImageInfo, timeout: float) -> tuple[str, Any]:
    """The first URL that answers 200, and its response."""
    reasons = []
    for url in info.urls:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)
        except urllib.error.HTTPError as exc:
            exc.close()
            reasons.append(f"{url}: HTTP {exc.code} {exc.reason}")
            continue
        except (OSError, ValueError) as exc:
            reasons.append(f"{url}: {getattr(exc, 'reason', exc)}")
            continue
        if response.status != 200:
            response.close()
            reasons.append(f"{url}: HTTP {response.status}")
            continue
        return url, response
    raise ImageDownloadError(
        f"image {info.id or '(no id)'}: no URL answered: " + "; ".join(reasons)
    )


def _length(response: Any) -> int | None:
    text = response.headers.get("Content-Length")
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def _read(response: Any, buf: memoryview, url: str) -> int:
    try:
        n: int = response.readinto(buf)
        return n
    except (OSError, ValueError) as exc:  # resets, timeouts, http.client.IncompleteRead
        raise ImageDownloadError(f"{url}: the download broke off: {exc}") from None


def _expected_length(info: ImageInfo, url: str, length: int | None) -> int | None:
    if length is not None and info.image_size is not None and length != info.image_size:
        raise ImageDownloadError(
            f"{url} announces {length} bytes but image_info says image_size {info.image_size}"
        )
    return length if length is not None else info.image_size


def _checksum_error(info: ImageInfo, url: str, actual: str) -> ImageChecksumError:
    return ImageChecksumError(
        f"image {info.id or '(no id)'} from {url} failed to verify: expected "
        f"{info.os_hash_algo} {info.os_hash_value}, got {actual}"
    )


def _zero_again(fd: int, device: str, length: int) -> None:
    """After a failure: the first ``length`` bytes of the device read as zeros again."""
    log.warning("zeroing the first %d bytes of %s again", length, device)
    try:
        blockio.zero_range(fd, 0, length)
        os.fsync(fd)
    except OSError as exc:  # the original error matters more; say this one too
        log.error("zeroing %s failed: %s", device, exc)


class _Throttle:
    """Calls ``progress`` at most every 0.5 s (and always for the last value)."""

    def __init__(self, progress: ProgressFn | None) -> None:
        self.progress = progress
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int | None, final: bool = False) -> None:
        now = time.monotonic()
        if self.progress is not None and (final or now - self.last >= 0.5):
            self.last = now
            self.progress(phase, done, total)


def _stream_raw(
    info: ImageInfo, fd: int, device: str, device_size: int, progress: _Throttle, timeout: float
) -> dict[str, Any]:
    url, response = _open(info, timeout)
    written = 0
    try:
        with response:
            expected = _expected_length(info, url, _length(response))
            if expected is not None and expected > device_size:
                raise ImageWriteError(
                    f"the image ({expected} bytes) is larger than {device} "
                    f"({device_size} bytes); nothing was written"
                )
            h = hashlib.new(info.os_hash_algo)
            buf = bytearray(CHUNK)
            first = True
            while True:
                view = memoryview(buf)
                n = _read(response, view, url)
                if n == 0:
                    break
                chunk = view[:n]
                if first:
                    first = False
                    if qcow2.is_qcow2(bytes(chunk[:4])):
                        raise InvalidImageFormat(
                            f"image {info.id or '(no id)'} from {url} is "
                            "qcow2 but disk_format says raw"
                        )
                if written + n > device_size:
                    raise ImageWriteError(
                        f"the image from {url} does not fit on {device} "
                        f"({device_size} bytes): it overflowed after "
                        f"{written} bytes"
                    )
                blockio.write_all(fd, chunk, written)
                h.update(chunk)
                written += n
                progress("write", written, expected)
            progress("write", written, expected, final=True)
            if expected is not None and written != expected:
                raise ImageDownloadError(
                    f"{url}: the download ended after {written} of {expected} bytes"
                )
            actual = h.hexdigest()
            if actual != info.os_hash_value:
                raise _checksum_error(info, url, actual)
    except BaseException:
        if written:
            _zero_again(fd, device, written)
        raise
    return {"bytes_written": written, "image_size": written, "hash": actual, "url": url}


def _download(
    info: ImageInfo, scratch: BinaryIO, progress: _Throttle, timeout: float
) -> tuple[str, int, str]:
    """Download into ``scratch``: (url, size, hex digest)."""
    url, response = _open(info, timeout)
    with response:
        expected = _expected_length(info, url, _length(response))
        h = hashlib.new(info.os_hash_algo)
        buf = bytearray(CHUNK)
        size = 0
        while True:
            view = memoryview(buf)
            n = _read(response, view, url)
            if n == 0:
                break
            try:
                scratch.write(view[:n])
            except OSError as exc:
                raise ImageDownloadError(
                    f"{url}: no room for the image in the scratch space after {size} bytes: {exc}"
                ) from None
            h.update(view[:n])
            size += n
            progress("download", size, expected)
        progress("download", size, expected, final=True)
    if expected is not None and size != expected:
        raise ImageDownloadError(f"{url}: the download ended after {size} of {expected} bytes")
    scratch.flush()
    return url, size, h.hexdigest()


def _write_qcow2(
    info: ImageInfo,
    fd: int,
    device: str,
    device_size: int,
    progress: _Throttle,
    timeout: float,
    scratch_dir: str | None,
) -> dict[str, Any]:
    with tempfile.TemporaryFile(dir=scratch_dir, prefix="pxeforge-image-") as scratch:
        url, size, actual = _download(info, scratch, progress, timeout)
        if actual != info.os_hash_value:
            raise _checksum_error(info, url, actual)
        try:
            image = qcow2.Qcow2Image(scratch)
        except qcow2.Qcow2Error as exc:
            raise InvalidImageFormat(f"image {info.id or '(no id)'} from {url}: {exc}") from None
        virtual = image.header.size
        if virtual > device_size:
            raise ImageWriteError(
                f"the image's virtual disk ({virtual} bytes) is larger than "
                f"{device} ({device_size} bytes); nothing was written"
            )
        h = hashlib.new(info.os_hash_algo)
        try:
            qcow2.convert(
                image, fd, hasher=h, progress=lambda done, total: progress("convert", done, total)
            )
        except BaseException as exc:
            _zero_again(fd, device, virtual)
            if isinstance(exc, qcow2.Qcow2Error):
                raise InvalidImageFormat(f"image {info.id or '(no id)'}: {exc}") from None
            raise
        progress("convert", virtual, virtual, final=True)
    return {
        "bytes_written": virtual,
        "image_size": size,
        "hash": actual,
        "url": url,
        "written_hash": h.hexdigest(),
    }


def write_image(
    info: ImageInfo,
    device: str,
    *,
    progress: ProgressFn | None = None,
    scratch_dir: str | None = None,
    timeout: float = DOWNLOAD_TIMEOUT,
) -> dict[str, Any]:
    """Write the image to ``device``; prepare_image's result (see the module docstring)."""
    if info.disk_format not in PERMITTED_FORMATS:
        raise InvalidImageFormat(
            f"disk_format {info.disk_format!r} of image "
            f"{info.id or '(no id)'} is not permitted (permitted: "
            f"{', '.join(PERMITTED_FORMATS)})"
        )
    throttle = _Throttle(progress)
    try:
        fd = blockio.open_target(device)
    except OSError as exc:
        raise ImageWriteError(f"cannot open {device}: {exc.strerror or exc}") from None
    try:
        device_size = blockio.size_of(fd)
        if info.disk_format == "raw":
            done = _stream_raw(info, fd, device, device_size, throttle, timeout)
            written_hash = done["hash"]
        else:
            done = _write_qcow2(info, fd, device, device_size, throttle, timeout, scratch_dir)
            written_hash = done["written_hash"]
        length = done["bytes_written"]
        try:
            blockio.drop_cache(fd)
            back = blockio.hash_range(
                fd,
                length,
                info.os_hash_algo,
                progress=lambda n: throttle("verify", n, length),
            )
        except OSError as exc:
            raise ImageWriteError(f"reading {device} back failed: {exc}") from None
        throttle("verify", length, length, final=True)
        if back != written_hash:
            raise ImageWriteError(
                f"{device} does not read back what was written: "
                f"{info.os_hash_algo} {back}, written {written_hash}"
            )
    except OSError as exc:
        raise ImageWriteError(f"{device}: {exc}") from None
    finally:
        os.close(fd)
    log.info(
        "image %s from %s written to %s (%d bytes), verified", info.id, done["url"], device, length
    )
    return {
        "root_device": device,
        "bytes_written": length,
        "image_size": done["image_size"],
        "os_hash_algo": info.os_hash_algo,
        "os_hash_value": done["hash"],
    }
