"""Image writes from a real HTTP server on 127.0.0.1 to a regular file and to loop devices:
raw and qcow2 (qemu-img the oracle), wrong checksums, dead URLs, small disks, refused
formats, broken downloads, progress."""

from __future__ import annotations

import hashlib
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
from pxeforge.agent.image import parse_image_info, write_image

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
    path.write_bytes(fill * size)
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


def test_wrong_checksum_zeroes_what_was_written(
    image_server: ImageServer, loop_device: Callable[..., str], tmp_path: Path
) -> None:
    data = _payload(3 * MIB)
    url = image_server.add("disk.raw", data)
    wrong = "0" * 64
    for target in (_device_file(tmp_path / "disk", 4 * MIB), loop_device(4 * MIB, fill=b"\xaa")):
        with pytest.raises(ImageChecksumError) as info:
            _write(_info(url, data, os_hash_value=wrong), target)
        text = str(info.value)
        assert wrong in text and hashlib.sha256(data).hexdigest() in text and url in text
        assert info.value.serialize()["type"] == "ImageChecksumError"
        assert read(target, 0, len(data)) == bytes(len(data))  # zeroed again
        assert read(target, len(data)) == b"\xaa" * MIB


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
    with pytest.raises(ImageWriteError, match="overflowed after 4194304 bytes"):
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
    target = _device_file(tmp_path / "disk", 4 * MIB)
    with pytest.raises(ImageDownloadError, match="ended after|broke off"):
        _write(_info(image_server.url("disk.raw", "short"), data), target)
    assert read(target) == bytes(MIB) + b"\xaa" * 3 * MIB  # the half that came is zeroed
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
