"""Image writes from a real HTTP server on 127.0.0.1 to a regular file and to loop devices:
raw (checked first in scratch space, or streamed: over the budget, or of unknown size) and
qcow2 (qemu-img the oracle), wrong checksums, dead URLs, small disks, refused formats, broken
downloads, progress, the scratch budget."""

from __future__ import annotations

import hashlib
import os
import random
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from pxeforge.agent.errors import (
    ImageChecksumError,
    ImageDownloadError,
    ImageWriteError,
    InvalidCommandParamsError,
    InvalidImageFormat,
)
from pxeforge.agent.image import (
    measure_scratch,
    parse_image_info,
    parse_meminfo,
    scratch_budget,
    write_image,
)

from .conftest import MIB, ImageServer, read


def _payload(size: int, seed: int = 5) -> bytes:
    rng = random.Random(seed)
    return rng.randbytes(size // 2) + bytes(size // 4) + rng.randbytes(size - size // 2 - size // 4)


def _info(urls: list[str] | str, data: bytes, fmt: str = "raw", **extra: Any) -> dict[str, Any]:
    return {
        "id": "img-1",
        "urls": [urls] if isinstance(urls, str) else urls,
        "disk_format": fmt,
        "os_hash_algo": "sha256",
        "os_hash_value": hashlib.sha256(data).hexdigest(),
        "image_type": "whole-disk",
        "stream_raw_images": True,
        **extra,
    }


def _device_file(path: Path, size: int, fill: bytes = b"\xaa") -> str:
    """A regular file of ``size`` bytes standing in for a disk: ``fill`` repeated."""
    path.write_bytes((fill * (size // len(fill) + 1))[:size])
    return str(path)


def _write(info: dict[str, Any], target: str, **kw: Any) -> dict[str, Any]:
    return write_image(parse_image_info(info), target, **kw)


def _dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: connections are refused


def test_raw_to_a_file_with_progress(image_server: ImageServer, tmp_path: Path) -> None:
    data = _payload(3 * MIB + 1000)
    url = image_server.add("disk.raw", data)
    target = _device_file(tmp_path / "disk", 8 * MIB)
    seen: list[tuple[str, int, int | None]] = []
    result = _write(_info(url, data), target, progress=lambda *a: seen.append(a))
    assert result == {"root_device": target, "bytes_written": len(data),
                      "image_size": len(data), "os_hash_algo": "sha256",
                      "os_hash_value": hashlib.sha256(data).hexdigest()}  # fmt: skip
    assert read(target, 0, len(data)) == data
    assert read(target, len(data)) == b"\xaa" * (8 * MIB - len(data))  # the rest untouched
    assert seen[-1] == ("verify", len(data), len(data))
    assert ("write", len(data), len(data)) in seen


def test_raw_sha512_to_a_loop_device(
    image_server: ImageServer, loop_device: Callable[..., str]
) -> None:
    data = _payload(5 * MIB, seed=9)
    url = image_server.add("disk.raw", data)
    dev = loop_device(8 * MIB, fill=b"\x5c")
    info = _info(url, data, os_hash_algo="sha512",
                 os_hash_value=hashlib.sha512(data).hexdigest(), image_size=len(data))  # fmt: skip
    result = _write(info, dev)
    assert result["os_hash_algo"] == "sha512" and result["bytes_written"] == len(data)
    assert read(dev, 0, len(data)) == data and read(dev, len(data)) == b"\x5c" * 3 * MIB


def test_qcow2_to_file_and_loop_device(
    image_server: ImageServer, qemu_img: str, tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    raw = tmp_path / "src.raw"
    raw.write_bytes(_payload(2 * MIB) + bytes(2 * MIB) + b"end" * 1000)
    image = tmp_path / "img.qcow2"
    subprocess.run([qemu_img, "convert", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(image)],
                   check=True, timeout=120)  # fmt: skip
    oracle = tmp_path / "oracle.raw"
    subprocess.run([qemu_img, "convert", "-O", "raw", str(image), str(oracle)], check=True,
                   timeout=120)  # fmt: skip
    expected = oracle.read_bytes()
    qcow = image.read_bytes()
    url = image_server.add("img.qcow2", qcow)
    for target in (_device_file(tmp_path / "disk", 6 * MIB), loop_device(6 * MIB, fill=b"\x77")):
        result = _write(_info(url, qcow, "qcow2"), target, scratch_dir=str(tmp_path))
        assert result["bytes_written"] == len(expected)
        assert result["image_size"] == len(qcow)
        assert result["os_hash_value"] == hashlib.sha256(qcow).hexdigest()
        assert read(target, 0, len(expected)) == expected
    assert list(tmp_path.glob("pxeforge-image-*")) == []  # the scratch copy is gone


def _pattern(seed: int = 3) -> bytes:
    """4099 random bytes (a prime length: no chunk of the disk looks like another)."""
    return random.Random(seed).randbytes(4099)


class _Seen(list[tuple[str, int, int | None]]):
    """A progress callback that keeps what it was told."""

    def __call__(self, phase: str, done: int, total: int | None) -> None:
        self.append((phase, done, total))


def _phases(seen: list[tuple[str, int, int | None]]) -> list[str]:
    """The phases in the order they were reported, each once."""
    return [phase for i, (phase, _, _) in enumerate(seen) if i == 0 or seen[i - 1][0] != phase]


def test_small_image_with_a_wrong_checksum_leaves_the_disk_as_it_was(
    image_server: ImageServer, loop_device: Callable[..., str], tmp_path: Path
) -> None:
    data = _payload(3 * MIB)
    url = image_server.add("disk.raw", data)
    wrong = "0" * 64
    pattern = _pattern()
    ro = loop_device(4 * MIB, fill=pattern, read_only=True)  # any write fails
    targets = [_device_file(tmp_path / "disk", 4 * MIB, fill=pattern),
               loop_device(4 * MIB, fill=pattern), ro]  # fmt: skip
    for target in targets:
        before = read(target)
        seen = _Seen()
        with pytest.raises(ImageChecksumError) as info:
            _write(_info(url, data, os_hash_value=wrong), target, scratch_dir=str(tmp_path),
                   progress=seen)  # fmt: skip
        text = str(info.value)
        assert wrong in text and hashlib.sha256(data).hexdigest() in text and url in text
        assert text.endswith("; the disk was not touched"), text
        assert info.value.serialize()["type"] == "ImageChecksumError"
        assert read(target) == before  # byte for byte
        assert _phases(seen) == ["download"] and seen[-1] == ("download", len(data), len(data))
    assert list(tmp_path.glob("pxeforge-image-*")) == []  # the scratch copy is gone
    # the read-only loop device refuses every write (EPERM): the wrong checksum above met
    # no write at all; a write — the right checksum, or the same image streamed — hits it
    with pytest.raises(ImageWriteError, match=f"writing {ro} failed: .*not permitted"):
        _write(_info(url, data), ro, scratch_dir=str(tmp_path))
    with pytest.raises(ImageWriteError, match=f"writing {ro} failed: .*not permitted"):
        _write(_info(url, data, os_hash_value=wrong), ro, budget=0)


def test_small_image_is_checked_first_then_written(
    image_server: ImageServer, loop_device: Callable[..., str], tmp_path: Path
) -> None:
    data = _payload(5 * MIB + 7, seed=21)
    url = image_server.add("disk.raw", data)
    pattern = _pattern(4)
    for target in (_device_file(tmp_path / "disk", 8 * MIB, fill=pattern),
                   loop_device(8 * MIB, fill=pattern)):  # fmt: skip
        before = read(target)
        seen = _Seen()
        result = _write(_info(url, data), target, scratch_dir=str(tmp_path), budget=len(data),
                        progress=seen)  # fmt: skip
        assert result["bytes_written"] == len(data)
        assert read(target, 0, len(data)) == data
        assert read(target, len(data)) == before[len(data) :]
        assert _phases(seen) == ["download", "write", "verify"]
        assert seen[-1] == ("verify", len(data), len(data))
    assert list(tmp_path.glob("pxeforge-image-*")) == []


def test_image_over_the_budget_is_streamed(
    image_server: ImageServer, loop_device: Callable[..., str], tmp_path: Path
) -> None:
    data = _payload(3 * MIB)
    url = image_server.add("disk.raw", data)
    wrong = "0" * 64
    pattern = _pattern(5)
    for target in (_device_file(tmp_path / "disk", 4 * MIB, fill=pattern),
                   loop_device(4 * MIB, fill=pattern)):  # fmt: skip
        before = read(target)
        seen = _Seen()
        with pytest.raises(ImageChecksumError) as info:
            _write(_info(url, data, os_hash_value=wrong), target, budget=len(data) - 1,
                   progress=seen)  # fmt: skip
        text = str(info.value)
        assert wrong in text and hashlib.sha256(data).hexdigest() in text
        assert text.endswith(
            f"; the disk's first {len(data)} bytes were overwritten and zeroed again"
        ), text
        assert read(target, 0, len(data)) == bytes(len(data))  # zeroed again
        assert read(target, len(data)) == before[len(data) :]
        assert _phases(seen) == ["write"] and seen[-1] == ("write", len(data), len(data))
        # the right checksum: written straight to the disk, verified
        seen.clear()
        result = _write(_info(url, data), target, budget=MIB, scratch_dir=str(tmp_path),
                        progress=seen)  # fmt: skip
        assert result["bytes_written"] == len(data) and read(target, 0, len(data)) == data
        assert _phases(seen) == ["write", "verify"]
        assert list(tmp_path.glob("pxeforge-image-*")) == []  # no scratch copy was made


def test_image_of_unknown_size_is_streamed(
    image_server: ImageServer, loop_device: Callable[..., str], tmp_path: Path
) -> None:
    data = _payload(3 * MIB + 5)
    image_server.add("disk.raw", data)
    chunked = image_server.url("disk.raw", "chunked")
    wrong = "1" * 64
    big = 1 << 40  # any budget: without a length the image cannot be checked first
    target = loop_device(4 * MIB, fill=_pattern(6))
    before = read(target)
    seen = _Seen()
    with pytest.raises(ImageChecksumError, match=f"first {len(data)} bytes were overwritten "
                       "and zeroed again$"):  # fmt: skip
        _write(_info(chunked, data, os_hash_value=wrong), target, budget=big,
               progress=seen)  # fmt: skip
    assert read(target, 0, len(data)) == bytes(len(data))
    assert read(target, len(data)) == before[len(data) :]
    assert _phases(seen) == ["write"] and seen[-1] == ("write", len(data), None)
    seen.clear()
    result = _write(_info(chunked, data), target, budget=big,
                    progress=seen)  # fmt: skip
    assert result["bytes_written"] == len(data) and read(target, 0, len(data)) == data
    assert _phases(seen) == ["write", "verify"]
    # image_info's image_size makes the size known: checked first, the disk untouched
    before = read(target)
    with pytest.raises(ImageChecksumError, match="not touched$"):
        _write(_info(chunked, data, os_hash_value=wrong, image_size=len(data)), target,
               budget=big, scratch_dir=str(tmp_path))  # fmt: skip
    assert read(target) == before
    # a chunked body longer than image_size: refused, the scratch space never overfills
    with pytest.raises(ImageDownloadError, match="runs past the 1048576 bytes announced"):
        _write(_info(chunked, data, image_size=MIB), target, budget=big,
               scratch_dir=str(tmp_path))  # fmt: skip
    assert read(target) == before


@pytest.mark.parametrize(
    ("available", "free", "budget"),
    [
        (1024 * MIB, 10 * 1024 * MIB, 512 * MIB),  # half the memory
        (1024 * MIB, 100 * MIB, 100 * MIB),  # no more than the scratch space has free
        (1024 * MIB, None, 512 * MIB),  # ramfs: no limit of its own
        (1001, None, 500),  # rounded down
        (1024 * MIB, 0, 0),  # a full scratch space
        (1024 * MIB, -5, 0),
        (0, 100 * MIB, 0),
        (None, 100 * MIB, 0),  # memory unknown: stream
        (None, None, 0),
    ],
)
def test_scratch_budget(available: int | None, free: int | None, budget: int) -> None:
    assert scratch_budget(available, free) == budget


@pytest.mark.parametrize(
    ("text", "available"),
    [
        ("MemTotal:  786432 kB\nMemFree:  500000 kB\nMemAvailable:  600000 kB\n", 600000 * 1024),
        ("MemAvailable: 12\n", 12),
        ("MemTotal:  786432 kB\nMemFree:  500000 kB\n", None),  # kernels before 3.14
        ("MemAvailable:  lots kB\n", None),
        ("", None),
    ],
)
def test_parse_meminfo(text: str, available: int | None) -> None:
    assert parse_meminfo(text) == available


def test_the_budget_is_measured_on_a_real_tmpfs(image_server: ImageServer, tmp_path: Path) -> None:
    """Without ``budget``: /proc/meminfo and the scratch directory's free space decide."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(scratch)],
                   check=True, timeout=60)  # fmt: skip
    try:
        available, free = measure_scratch(str(scratch))
        assert free == 8 * MIB
        assert available is not None and available > 16 * MIB  # this machine's memory
        with open("/proc/meminfo") as f:
            assert abs(available - (parse_meminfo(f.read()) or 0)) < 512 * MIB
        assert measure_scratch(str(scratch), meminfo=str(tmp_path / "none")) == (None, 8 * MIB)
        for size, phases in ((6 * MIB, ["download", "write", "verify"]),
                             (12 * MIB, ["write", "verify"])):  # fmt: skip
            data = _payload(size, seed=size)
            url = image_server.add("disk.raw", data)
            target = _device_file(tmp_path / "disk", 16 * MIB)
            seen = _Seen()
            _write(_info(url, data), target, scratch_dir=str(scratch),
                   progress=seen)  # fmt: skip
            assert _phases(seen) == phases, size
            assert read(target, 0, size) == data
    finally:
        subprocess.run(["umount", str(scratch)], check=True, timeout=60)


def test_qcow2_wrong_checksum_never_touches_the_disk(
    image_server: ImageServer, qemu_img: str, tmp_path: Path
) -> None:
    image = tmp_path / "img.qcow2"
    subprocess.run([qemu_img, "create", "-f", "qcow2", str(image), "1M"], check=True, timeout=60)
    url = image_server.add("img.qcow2", image.read_bytes())
    target = _device_file(tmp_path / "disk", 2 * MIB)
    with pytest.raises(ImageChecksumError, match="expected sha256 " + "1" * 64):
        _write(_info(url, b"", "qcow2", os_hash_value="1" * 64), target)
    assert read(target) == b"\xaa" * 2 * MIB


def test_unreachable_urls(image_server: ImageServer, tmp_path: Path) -> None:
    data = b"x" * 4096
    target = _device_file(tmp_path / "disk", MIB)
    dead = f"http://127.0.0.1:{_dead_port()}/disk.raw"
    missing = image_server.url("nope.raw")
    with pytest.raises(ImageDownloadError) as info:
        _write(_info([dead, missing], data), target)
    text = str(info.value)
    assert f"{dead}: [Errno 111] Connection refused" in text
    assert f"{missing}: HTTP 404" in text
    assert read(target) == b"\xaa" * MIB
    # the first URL that answers is used
    good = image_server.add("disk.raw", data)
    assert _write(_info([dead, missing, good], data), target)["bytes_written"] == 4096


def test_disk_too_small(image_server: ImageServer, qemu_img: str, tmp_path: Path) -> None:
    data = _payload(9 * MIB)
    image_server.add("disk.raw", data)
    target = _device_file(tmp_path / "disk", 6 * MIB)
    # known length (Content-Length): refused before a byte is written
    with pytest.raises(ImageWriteError, match="larger than .* nothing was written"):
        _write(_info(image_server.url("disk.raw"), data), target)
    assert read(target) == b"\xaa" * 6 * MIB
    # unknown length: refused when the next chunk would overflow (the first 4 MiB chunk
    # fitted), and what was written is zeroed again
    with pytest.raises(ImageWriteError, match="overflowed after 4194304 bytes.*zeroed again$"):
        _write(_info(image_server.url("disk.raw", "nolength"), data), target)
    assert read(target) == bytes(4 * MIB) + b"\xaa" * 2 * MIB
    # qcow2 whose virtual disk is larger than the device
    image = tmp_path / "big.qcow2"
    subprocess.run([qemu_img, "create", "-f", "qcow2", str(image), "3M"], check=True, timeout=60)
    qcow = image.read_bytes()
    url = image_server.add("big.qcow2", qcow)
    target = _device_file(tmp_path / "disk2", 2 * MIB)
    with pytest.raises(ImageWriteError, match="virtual disk .* is larger"):
        _write(_info(url, qcow, "qcow2"), target, scratch_dir=str(tmp_path))
    assert read(target) == b"\xaa" * 2 * MIB


def test_formats_not_permitted_or_not_matching(
    image_server: ImageServer, qemu_img: str, tmp_path: Path
) -> None:
    target = _device_file(tmp_path / "disk", 2 * MIB)
    data = _payload(MIB)
    url = image_server.add("disk.raw", data)
    for fmt in ("vmdk", "iso", "vhd"):
        with pytest.raises(InvalidImageFormat, match=f"disk_format '{fmt}' .* not permitted"):
            _write(_info(url, data, fmt), target)
    # qcow2 content declared raw: refused before it is written
    image = tmp_path / "img.qcow2"
    subprocess.run([qemu_img, "create", "-f", "qcow2", str(image), "1M"], check=True, timeout=60)
    qcow = image.read_bytes()
    qurl = image_server.add("img.qcow2", qcow)
    with pytest.raises(InvalidImageFormat, match="is qcow2 but disk_format says raw"):
        _write(_info(qurl, qcow, "raw"), target)
    # raw content declared qcow2
    with pytest.raises(InvalidImageFormat, match="not a qcow2 image"):
        _write(_info(url, data, "qcow2"), target, scratch_dir=str(tmp_path))
    # qcow2 with a backing file
    over = tmp_path / "over.qcow2"
    subprocess.run([qemu_img, "create", "-f", "qcow2", "-b", str(image), "-F", "qcow2",
                    str(over)], check=True, timeout=60)  # fmt: skip
    ourl = image_server.add("over.qcow2", over.read_bytes())
    with pytest.raises(InvalidImageFormat, match="backing file"):
        _write(_info(ourl, over.read_bytes(), "qcow2"), target, scratch_dir=str(tmp_path))
    assert read(target) == b"\xaa" * 2 * MIB


def test_download_that_breaks_off(image_server: ImageServer, tmp_path: Path) -> None:
    data = _payload(2 * MIB)
    image_server.add("disk.raw", data)
    short = image_server.url("disk.raw", "short")
    target = _device_file(tmp_path / "disk", 4 * MIB)
    # checked first: the disk is untouched
    with pytest.raises(ImageDownloadError, match="(ended after|broke off).*not touched$"):
        _write(_info(short, data), target, scratch_dir=str(tmp_path))
    assert read(target) == b"\xaa" * 4 * MIB
    # streamed: the half that came is zeroed again
    with pytest.raises(ImageDownloadError, match="(ended after|broke off).* zeroed again$"):
        _write(_info(short, data), target, budget=0)
    assert read(target) == bytes(MIB) + b"\xaa" * 3 * MIB
    # image_size disagreeing with Content-Length
    with pytest.raises(ImageDownloadError, match="image_size 5"):
        _write(_info(image_server.url("disk.raw"), data, image_size=5), target)


def test_missing_target(image_server: ImageServer, tmp_path: Path) -> None:
    data = b"y" * 512
    url = image_server.add("d.raw", data)
    with pytest.raises(ImageWriteError, match="cannot open"):
        _write(_info(url, data), str(tmp_path / "no-such-disk"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"urls": []}, "non-empty list"),
        ({"urls": ["ftp://x/y"]}, "not an http"),
        ({"os_hash_algo": "md5"}, "os_hash_algo 'md5' is not supported"),
        ({"os_hash_algo": None}, "mandatory"),
        ({"os_hash_value": "xyz"}, "not a sha256 hex digest"),
        ({"os_hash_value": "ab" * 64}, "not a sha256 hex digest"),
        ({"image_type": "partition"}, "only whole-disk"),
        ({"image_size": -1}, "not a byte count"),
    ],
)
def test_bad_image_info(change: dict[str, Any], message: str) -> None:
    info = {**_info("http://127.0.0.1/x", b""), **change}
    with pytest.raises(InvalidCommandParamsError, match=message):
        parse_image_info(info)
