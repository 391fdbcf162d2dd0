"""Write a whole-disk image from its URL to a disk: checked, hashed, written, verified.

Theory of operation (docs/agent-protocol.md, "Image write"):

1. `parse_image_info` checks Ironic's ``image_info`` before anything starts (missing URLs,
   hash algorithm other than sha256/sha512, a hash that is not hex of the right length,
   partition images → `InvalidCommandParamsError`, refused with 400).
2. `write_image` checks the format is permitted (``raw``, ``qcow2``: else
   `InvalidImageFormat`) and learns the device's size from a **read-only** open (``O_EXCL``
   on a block device, so a mounted disk is refused now); the device is opened for writing
   only once something is to be written. The URLs are tried in order: the first that
   answers 200 is used; none → `ImageDownloadError` naming each URL and why it failed.
3. **raw**: refused before writing when the announced length (``Content-Length``, else
   ``image_size``) exceeds the device. The first bytes are looked at: a qcow2 image declared
   ``raw`` is refused (`InvalidImageFormat`) before it is written. Then one of two modes:

   * **checked first** — the length is known and fits the scratch budget (`scratch_budget`:
     half of ``MemAvailable``, no more than the scratch directory has free; the scratch
     directory is ``/tmp``, RAM in the ramdisk): the image is downloaded to a scratch file
     while hashing and the checksum compared *before the device is opened for writing*. Any
     failure up to there leaves the disk as it was and says so (``the disk was not
     touched``); then the scratch copy is written to the device (phase ``write``).
   * **streamed** — the length is unknown or too big for the budget: chunks (`CHUNK`) are
     hashed and written straight to the device, refused as soon as the stream would
     overflow it. Any failure once writing began (checksum mismatch, overflow, the stream
     breaking off, ending short of or running past its announced length) zeroes the written
     region again before the command fails — a half-written image must not boot — and the
     error says so (``the disk's first N bytes were overwritten and zeroed again``).

   A mismatch is `ImageChecksumError` naming the expected and the actual hash.
4. **qcow2**: always downloaded to a scratch file while hashing (the reader needs random
   access); the checksum is checked *before the disk is touched*; then the header is checked
   (`qcow2.parse_header`: unsupported features → `InvalidImageFormat`), the virtual size
   compared with the device, and `qcow2.convert` writes it.
5. **Verify**: `blockio.drop_cache` (fsync, ``POSIX_FADV_DONTNEED``), then the written bytes
   are read back and hashed with the image's algorithm; a difference is `ImageWriteError`.

Progress goes to ``progress(phase, done, total)``: ``download`` (to scratch), ``write`` (to
the device: from scratch, or straight from the network when streamed), ``convert``,
``verify``; ``total`` None when unknown.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import stat
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, BinaryIO, Final

from pxeforge.agent import blockio, qcow2
from pxeforge.agent.errors import (
    AgentError,
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
    "SCRATCH_SHARE",
    "ImageInfo",
    "ProgressFn",
    "measure_scratch",
    "parse_image_info",
    "parse_meminfo",
    "scratch_budget",
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


SCRATCH_SHARE: Final = 2
"""A checked-first image may take at most 1/SCRATCH_SHARE of ``MemAvailable``."""
NOT_TOUCHED: Final = "the disk was not touched"


def parse_meminfo(text: str) -> int | None:
    """``MemAvailable`` from ``/proc/meminfo``'s text, in bytes; None when it is absent."""
    for line in text.splitlines():
        name, _, rest = line.partition(":")
        if name.strip() != "MemAvailable":
            continue
        fields = rest.split()
        if not fields or not fields[0].isdigit():
            return None
        unit = fields[1].lower() if len(fields) > 1 else ""
        return int(fields[0]) * (1024 if unit == "kb" else 1)
    return None


def scratch_budget(mem_available: int | None, scratch_free: int | None) -> int:
    """Bytes a raw image may take in RAM-backed scratch space before it is written.

    ``mem_available``: the kernel's ``MemAvailable`` in bytes (None: unknown → 0, stream).
    ``scratch_free``: bytes free in the scratch directory's filesystem (None: the filesystem
    sets no limit, as ramfs reports). Half the available memory — the rest stays for the
    agent, the page cache of the write and the read-back — and no more than is free.
    """
    if mem_available is None or mem_available <= 0:
        return 0
    budget = mem_available // SCRATCH_SHARE
    if scratch_free is not None:
        budget = min(budget, max(scratch_free, 0))
    return budget


def measure_scratch(
    scratch_dir: str | None, meminfo: str = "/proc/meminfo"
) -> tuple[int | None, int | None]:
    """(``MemAvailable``, free bytes of ``scratch_dir``): `scratch_budget`'s inputs, measured."""
    try:
        with open(meminfo, encoding="ascii", errors="replace") as f:
            available = parse_meminfo(f.read())
    except OSError:
        available = None
    try:
        st = os.statvfs(scratch_dir or tempfile.gettempdir())
    except OSError:
        return available, 0
    free = None if st.f_blocks == 0 else st.f_bavail * st.f_frsize
    return available, free


def _noted(exc: AgentError, note: str) -> AgentError:
    """``exc`` again (same type) with ``note`` appended to its details."""
    return type(exc)(f"{exc.details}; {note}" if exc.details else note)


def _checksum_error(info: ImageInfo, url: str, actual: str) -> ImageChecksumError:
    return ImageChecksumError(
        f"image {info.id or '(no id)'} from {url} failed to verify: expected "
        f"{info.os_hash_algo} {info.os_hash_value}, got {actual}"
    )


def _zero_again(fd: int, device: str, length: int) -> str:
    """After a failure: the first ``length`` bytes of the device read as zeros again.

    Returns the sentence the error gets.
    """
    if length <= 0:
        return NOT_TOUCHED
    log.warning("zeroing the first %d bytes of %s again", length, device)
    try:
        blockio.zero_range(fd, 0, length)
        os.fsync(fd)
    except OSError as exc:  # the original error matters more; say this one too
        log.error("zeroing %s failed: %s", device, exc)
        return f"the disk's first {length} bytes were overwritten; zeroing them again failed: {exc}"
    return f"the disk's first {length} bytes were overwritten and zeroed again"


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


class _Target:
    """The device: its size from a read-only open, opened for writing only when asked."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.fd: int | None = None
        try:
            flags = os.O_RDONLY | os.O_CLOEXEC
            if stat.S_ISBLK(os.stat(path).st_mode):
                flags |= os.O_EXCL  # busy (mounted, held) → refused now, before downloading
            fd = os.open(path, flags)
            try:
                self.size = blockio.size_of(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ImageWriteError(f"cannot open {path}: {exc.strerror or exc}") from None

    def open(self) -> int:
        if self.fd is None:
            try:
                self.fd = blockio.open_target(self.path)
            except OSError as exc:
                raise ImageWriteError(
                    f"cannot open {self.path} for writing: {exc.strerror or exc}; {NOT_TOUCHED}"
                ) from None
        return self.fd

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


Sink = Callable[[memoryview, int], None]
"""``sink(chunk, offset)``: where `_pump` puts each chunk."""


def _pump(
    url: str,
    response: Any,
    expected: int | None,
    algo: str,
    sink: Sink,
    phase: str,
    progress: _Throttle,
    check_first: Callable[[bytes], None] | None = None,
) -> tuple[int, str]:
    """Read the response to its end into ``sink`` while hashing: (size, hex digest)."""
    h = hashlib.new(algo)
    buf = bytearray(CHUNK)
    size = 0
    while True:
        view = memoryview(buf)
        n = _read(response, view, url)
        if n == 0:
            break
        chunk = view[:n]
        if size == 0 and check_first is not None:
            check_first(bytes(chunk[:4]))
        if expected is not None and size + n > expected:
            raise ImageDownloadError(
                f"{url}: the download runs past the {expected} bytes announced"
            )
        sink(chunk, size)
        h.update(chunk)
        size += n
        progress(phase, size, expected)
    progress(phase, size, expected, final=True)
    if expected is not None and size != expected:
        raise ImageDownloadError(f"{url}: the download ended after {size} of {expected} bytes")
    return size, h.hexdigest()


def _scratch_sink(url: str, scratch: BinaryIO) -> Sink:
    def sink(chunk: memoryview, offset: int) -> None:
        try:
            scratch.write(chunk)
        except OSError as exc:
            raise ImageDownloadError(
                f"{url}: no room for the image in the scratch space after {offset} bytes: {exc}"
            ) from None

    return sink


def _download(
    info: ImageInfo,
    url: str,
    response: Any,
    expected: int | None,
    scratch: BinaryIO,
    progress: _Throttle,
    check_first: Callable[[bytes], None] | None = None,
) -> tuple[int, str]:
    """Download into ``scratch`` and check the checksum: (size, hex digest).

    Nothing here touches the disk: every error says so.
    """
    try:
        size, actual = _pump(url, response, expected, info.os_hash_algo,
                             _scratch_sink(url, scratch), "download", progress,
                             check_first)  # fmt: skip
        scratch.flush()
        if actual != info.os_hash_value:
            raise _checksum_error(info, url, actual)
    except AgentError as exc:
        raise _noted(exc, NOT_TOUCHED) from None
    return size, actual


def _refuse_qcow2(info: ImageInfo, url: str) -> Callable[[bytes], None]:
    def check(first: bytes) -> None:
        if qcow2.is_qcow2(first):
            raise InvalidImageFormat(
                f"image {info.id or '(no id)'} from {url} is qcow2 but disk_format says raw"
            )

    return check


def _raw_checked_first(
    info: ImageInfo,
    url: str,
    response: Any,
    expected: int,
    target: _Target,
    progress: _Throttle,
    scratch_dir: str | None,
) -> dict[str, Any]:
    with tempfile.TemporaryFile(dir=scratch_dir, prefix="pxeforge-image-") as scratch:
        size, actual = _download(info, url, response, expected, scratch, progress,
                                 _refuse_qcow2(info, url))  # fmt: skip
        fd = target.open()
        scratch.seek(0)
        buf = bytearray(CHUNK)
        written = 0
        try:
            while written < size:
                view = memoryview(buf)[: min(CHUNK, size - written)]
                n = scratch.readinto(view)
                if not n:
                    raise OSError(f"the scratch copy ended after {written} of {size} bytes")
                blockio.write_all(fd, view[:n], written)
                written += n
                progress("write", written, size)
        except OSError as exc:
            note = _zero_again(fd, target.path, written)
            raise ImageWriteError(f"writing {target.path} failed: {exc}; {note}") from None
        except BaseException:
            _zero_again(fd, target.path, written)
            raise
        progress("write", written, size, final=True)
    return {"bytes_written": size, "image_size": size, "hash": actual, "url": url,
            "written_hash": actual}  # fmt: skip


def _raw_streamed(
    info: ImageInfo,
    url: str,
    response: Any,
    expected: int | None,
    target: _Target,
    progress: _Throttle,
) -> dict[str, Any]:
    fd = target.open()
    written = 0

    def sink(chunk: memoryview, offset: int) -> None:
        nonlocal written
        if offset + len(chunk) > target.size:
            raise ImageWriteError(
                f"the image from {url} does not fit on {target.path} "
                f"({target.size} bytes): it overflowed after {offset} bytes"
            )
        blockio.write_all(fd, chunk, offset)
        written = offset + len(chunk)

    try:
        size, actual = _pump(url, response, expected, info.os_hash_algo, sink, "write",
                             progress, _refuse_qcow2(info, url))  # fmt: skip
        if actual != info.os_hash_value:
            raise _checksum_error(info, url, actual)
    except AgentError as exc:
        raise _noted(exc, _zero_again(fd, target.path, written)) from None
    except OSError as exc:
        note = _zero_again(fd, target.path, written)
        raise ImageWriteError(f"writing {target.path} failed: {exc}; {note}") from None
    except BaseException:
        _zero_again(fd, target.path, written)
        raise
    return {"bytes_written": size, "image_size": size, "hash": actual, "url": url,
            "written_hash": actual}  # fmt: skip


def _write_raw(
    info: ImageInfo,
    target: _Target,
    progress: _Throttle,
    timeout: float,
    scratch_dir: str | None,
    budget: int | None,
) -> dict[str, Any]:
    url, response = _open(info, timeout)
    with response:
        expected = _expected_length(info, url, _length(response))
        if expected is not None and expected > target.size:
            raise ImageWriteError(
                f"the image ({expected} bytes) is larger than {target.path} "
                f"({target.size} bytes); nothing was written"
            )
        if expected is not None:
            if budget is None:
                budget = scratch_budget(*measure_scratch(scratch_dir))
            if expected <= budget:
                log.info("image %s: %d bytes, checked in scratch space (budget %d) before "
                         "writing", info.id, expected, budget)  # fmt: skip
                return _raw_checked_first(info, url, response, expected, target, progress,
                                          scratch_dir)  # fmt: skip
        log.info("image %s: %s, streamed straight to %s", info.id,
                 "size unknown" if expected is None else f"{expected} bytes > budget {budget}",
                 target.path)  # fmt: skip
        return _raw_streamed(info, url, response, expected, target, progress)


def _write_qcow2(
    info: ImageInfo,
    target: _Target,
    progress: _Throttle,
    timeout: float,
    scratch_dir: str | None,
) -> dict[str, Any]:
    url, response = _open(info, timeout)
    with (
        response,
        tempfile.TemporaryFile(dir=scratch_dir, prefix="pxeforge-image-") as scratch,
    ):
        expected = _expected_length(info, url, _length(response))
        size, actual = _download(info, url, response, expected, scratch, progress)
        try:
            image = qcow2.Qcow2Image(scratch)
        except qcow2.Qcow2Error as exc:
            raise InvalidImageFormat(
                f"image {info.id or '(no id)'} from {url}: {exc}; {NOT_TOUCHED}"
            ) from None
        virtual = image.header.size
        if virtual > target.size:
            raise ImageWriteError(
                f"the image's virtual disk ({virtual} bytes) is larger than "
                f"{target.path} ({target.size} bytes); nothing was written"
            )
        fd = target.open()
        h = hashlib.new(info.os_hash_algo)
        try:
            qcow2.convert(
                image, fd, hasher=h, progress=lambda done, total: progress("convert", done, total)
            )
        except BaseException as exc:
            note = _zero_again(fd, target.path, virtual)
            if isinstance(exc, qcow2.Qcow2Error):
                raise InvalidImageFormat(f"image {info.id or '(no id)'}: {exc}; {note}") from None
            if isinstance(exc, OSError):
                raise ImageWriteError(f"writing {target.path} failed: {exc}; {note}") from None
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
    budget: int | None = None,
) -> dict[str, Any]:
    """Write the image to ``device``; prepare_image's result (see the module docstring).

    ``budget``: bytes a raw image may take in scratch space to be checked before it is
    written; None measures it (`scratch_budget` over ``/proc/meminfo`` and ``statvfs``).
    """
    if info.disk_format not in PERMITTED_FORMATS:
        raise InvalidImageFormat(
            f"disk_format {info.disk_format!r} of image "
            f"{info.id or '(no id)'} is not permitted (permitted: "
            f"{', '.join(PERMITTED_FORMATS)})"
        )
    throttle = _Throttle(progress)
    target = _Target(device)
    try:
        if info.disk_format == "raw":
            done = _write_raw(info, target, throttle, timeout, scratch_dir, budget)
        else:
            done = _write_qcow2(info, target, throttle, timeout, scratch_dir)
        fd = target.open()
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
        if back != done["written_hash"]:
            raise ImageWriteError(
                f"{device} does not read back what was written: "
                f"{info.os_hash_algo} {back}, written {done['written_hash']}"
            )
    except OSError as exc:
        raise ImageWriteError(f"{device}: {exc}") from None
    finally:
        target.close()
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
