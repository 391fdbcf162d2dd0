"""The qcow2 reader against qemu-img, the oracle: every image qemu-img makes converts to the
same bytes as ``qemu-img convert -O raw``, into a file (sparse) and onto a loop device (old
bytes beyond the image kept); hostile images fail with a clear error and small allocations."""

from __future__ import annotations

import os
import random
import struct
import subprocess
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest

from pxeforge.agent.qcow2 import Qcow2Error, Qcow2Image, convert, parse_header

from .conftest import MIB, read


def _run(*argv: str) -> None:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def _raw_source(path: Path, size: int, seed: int = 1) -> None:
    """A disk with random data here and there, zero-filled data, and holes."""
    rng = random.Random(seed)
    with open(path, "wb") as f:
        f.truncate(size)
        for offset in (0, 70_000, size // 3, size // 2 + 12_345, size - 5000):
            f.seek(offset)
            f.write(rng.randbytes(min(5000 + offset % 40_000, size - offset)))
        f.seek(size // 4)
        f.write(bytes(200_000))  # written zeros: data clusters that are all zero
        f.seek(size // 5)
        f.write(b"compressible " * 20_000)


def _oracle(qemu_img: str, image: Path, out: Path) -> bytes:
    _run(qemu_img, "convert", "-O", "raw", str(image), str(out))
    return out.read_bytes()


def _convert_to_file(image: Path, out: Path) -> int:
    """Convert into ``out``, which held other bytes: a file standing in for a small disk
    keeps its size (at least the virtual size), and only zeros beyond the image."""
    out.write_bytes(b"old content that must not survive")
    with open(image, "rb") as f:
        img = Qcow2Image(f)
        fd = os.open(out, os.O_RDWR)
        try:
            return convert(img, fd)
        finally:
            os.close(fd)


RECIPES: dict[str, list[str]] = {
    "v3": ["-O", "qcow2"],
    "v3-compressed": ["-O", "qcow2", "-c"],
    "v2-compat-0.10": ["-O", "qcow2", "-o", "compat=0.10"],
    "v2-compressed": ["-O", "qcow2", "-c", "-o", "compat=0.10"],
    "cluster-512": ["-O", "qcow2", "-o", "cluster_size=512"],  # many L2 tables
    "cluster-512-compressed": ["-O", "qcow2", "-c", "-o", "cluster_size=512"],
    "cluster-2M": ["-O", "qcow2", "-o", "cluster_size=2M"],
    "cluster-4k-compressed": ["-O", "qcow2", "-c", "-o", "cluster_size=4096"],
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_convert_matches_qemu_img(recipe: str, qemu_img: str, tmp_path: Path) -> None:
    size = 3 * MIB + 4096 + 512  # not a whole number of clusters
    raw = tmp_path / "source.raw"
    _raw_source(raw, size)
    image = tmp_path / "image.qcow2"
    _run(qemu_img, "convert", "-f", "raw", *RECIPES[recipe], str(raw), str(image))
    expected = _oracle(qemu_img, image, tmp_path / "oracle.raw")
    assert expected == raw.read_bytes()
    out = tmp_path / "mine.raw"
    assert _convert_to_file(image, out) == size
    assert out.read_bytes() == expected
    # sparse: only clusters with a non-zero byte were written; holes and zeros were skipped
    with open(image, "rb") as f:
        unit = max(Qcow2Image(f).header.cluster_size, os.statvfs(out).f_bsize)
    nonzero = sum(1 for i in range(0, size, unit) if expected[i : i + unit].count(0) != unit)
    assert os.stat(out).st_blocks * 512 <= nonzero * unit + 64 * 1024  # + extent tree blocks
    assert nonzero * unit < size or recipe == "cluster-2M"


def test_zero_clusters_and_preallocated_metadata(qemu_img: str, tmp_path: Path) -> None:
    """v3 zero-flag clusters (qemu-io write -z over data) and preallocation=metadata."""
    image = tmp_path / "z.qcow2"
    _run(qemu_img, "create", "-f", "qcow2", "-o", "preallocation=metadata", str(image), "4M")
    _run("qemu-io", "-f", "qcow2", "-c", "write -P 0x5a 0 1M", "-c", "write -z 256k 128k",
         "-c", "write -P 0x33 3M 64k", str(image))  # fmt: skip
    expected = _oracle(qemu_img, image, tmp_path / "oracle.raw")
    assert expected[: 256 * 1024] == b"\x5a" * 256 * 1024
    assert expected[256 * 1024 : 384 * 1024] == bytes(128 * 1024)
    out = tmp_path / "mine.raw"
    _convert_to_file(image, out)
    assert out.read_bytes() == expected
    with open(image, "rb") as f:
        kinds = {e.kind for e in Qcow2Image(f).extents()}
    assert kinds == {"data", "zero"}


def test_empty_and_tiny_images(qemu_img: str, tmp_path: Path) -> None:
    for size in ("0", "1000", "64k"):
        image = tmp_path / f"e{size}.qcow2"
        _run(qemu_img, "create", "-f", "qcow2", str(image), size)
        out = tmp_path / f"e{size}.raw"
        _convert_to_file(image, out)
        expected = _oracle(qemu_img, image, tmp_path / f"o{size}.raw")
        got = out.read_bytes()
        assert len(got) == max(len(expected), len(b"old content that must not survive"))
        assert got[: len(expected)] == expected and got[len(expected) :].count(0) == len(
            got[len(expected) :]
        )


def test_convert_to_a_block_device(
    qemu_img: str, tmp_path: Path, loop_device: Callable[..., str]
) -> None:
    """On a device the old bytes are zeroed where the image has none; beyond it they stay."""
    size = 3 * MIB
    raw = tmp_path / "source.raw"
    _raw_source(raw, size, seed=7)
    for name, args in (("plain", ["-O", "qcow2"]), ("compressed", ["-O", "qcow2", "-c"])):
        image = tmp_path / f"{name}.qcow2"
        _run(qemu_img, "convert", "-f", "raw", *args, str(raw), str(image))
        dev = loop_device(4 * MIB, fill=b"\xee")
        fd = os.open(dev, os.O_RDWR)
        try:
            with open(image, "rb") as f:
                assert convert(Qcow2Image(f), fd) == size
            os.fsync(fd)
        finally:
            os.close(fd)
        assert read(dev, 0, size) == raw.read_bytes()
        assert read(dev, size) == b"\xee" * MIB


def test_hash_covers_every_byte(qemu_img: str, tmp_path: Path) -> None:
    import hashlib

    raw = tmp_path / "source.raw"
    _raw_source(raw, 2 * MIB)
    image = tmp_path / "image.qcow2"
    _run(qemu_img, "convert", "-f", "raw", "-O", "qcow2", "-c", str(raw), str(image))
    h = hashlib.sha256()
    seen: list[int] = []
    out = tmp_path / "out.raw"
    out.touch()
    fd = os.open(out, os.O_RDWR)
    try:
        with open(image, "rb") as f:
            convert(Qcow2Image(f), fd, hasher=h, progress=lambda done, total: seen.append(done))
    finally:
        os.close(fd)
    assert h.hexdigest() == hashlib.sha256(raw.read_bytes()).hexdigest()
    assert seen == sorted(seen) and seen[-1] == 2 * MIB


# ---- refused images -------------------------------------------------------------------------


def _error(path: Path) -> str:
    with pytest.raises(Qcow2Error) as info, open(path, "rb") as f:
        img = Qcow2Image(f)
        out = path.with_suffix(".out")
        out.touch()
        fd = os.open(out, os.O_RDWR)
        try:
            convert(img, fd)
        finally:
            os.close(fd)
    return str(info.value)


def test_refused_features(qemu_img: str, tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    _run(qemu_img, "create", "-f", "qcow2", str(base), "1M")
    over = tmp_path / "over.qcow2"
    _run(qemu_img, "create", "-f", "qcow2", "-b", str(base), "-F", "qcow2", str(over))
    assert "backing file" in _error(over) and "base.qcow2" in _error(over)

    enc = tmp_path / "enc.qcow2"
    _run(qemu_img, "create", "-f", "qcow2", "--object", "secret,id=s0,data=pw",
         "-o", "encrypt.format=luks,encrypt.key-secret=s0,encrypt.iter-time=10",
         str(enc), "1M")  # fmt: skip
    assert "encrypted (LUKS)" in _error(enc)

    ext = tmp_path / "ext.qcow2"
    _run(qemu_img, "create", "-f", "qcow2", "-o", f"data_file={tmp_path / 'ext.data'}",
         str(ext), "1M")  # fmt: skip
    assert "external data file" in _error(ext)

    sub = tmp_path / "sub.qcow2"
    _run(qemu_img, "create", "-f", "qcow2", "-o", "extended_l2=on", str(sub), "1M")
    assert "extended L2" in _error(sub)

    zstd = tmp_path / "zstd.qcow2"
    done = subprocess.run([qemu_img, "create", "-f", "qcow2", "-o", "compression_type=zstd",
                           str(zstd), "1M"], capture_output=True, timeout=60)  # fmt: skip
    if done.returncode == 0:  # qemu built with zstd (Debian's is)
        assert "zstd" in _error(zstd)


def _patched(tmp_path: Path, qemu_img: str, name: str, patch: Callable[[bytearray], None]) -> Path:
    raw = tmp_path / "p.raw"
    _raw_source(raw, 2 * MIB, seed=3)
    image = tmp_path / f"{name}.qcow2"
    _run(qemu_img, "convert", "-f", "raw", "-O", "qcow2", str(raw), str(image))
    data = bytearray(image.read_bytes())
    patch(data)
    image.write_bytes(bytes(data))
    return image


def _l1_offset(data: bytearray) -> int:
    return int(struct.unpack_from(">Q", data, 40)[0])


def _first_l2(data: bytearray) -> int:
    return int(struct.unpack_from(">Q", data, _l1_offset(data))[0] & 0x00FFFFFFFFFFFE00)


HOSTILE: dict[str, tuple[Callable[[bytearray], None], str]] = {
    "not-qcow2": (lambda d: d.__setitem__(slice(0, 4), b"QFI\x00"), "not a qcow2 image"),
    "version-4": (lambda d: struct.pack_into(">I", d, 4, 4), "version 4"),
    "cluster-bits-30": (lambda d: struct.pack_into(">I", d, 20, 30), "cluster_bits 30"),
    "unknown-incompatible": (lambda d: struct.pack_into(">Q", d, 72, 1 << 40), "0x10000000000"),
    "corrupt": (lambda d: struct.pack_into(">Q", d, 72, 2), "marked corrupt"),
    "l1-past-eof": (lambda d: struct.pack_into(">Q", d, 40, 1 << 40), "past the end"),
    "l1-unaligned": (lambda d: struct.pack_into(">Q", d, 40, 4096 + 8), "not cluster-aligned"),
    "l1-too-big": (lambda d: struct.pack_into(">I", d, 36, 1 << 31), "larger than"),
    "absurd-size": (lambda d: struct.pack_into(">Q", d, 24, 1 << 62), "cannot map"),
    "l2-past-eof": (
        lambda d: struct.pack_into(">Q", d, _l1_offset(d), (1 << 63) | (1 << 45)),
        "is not a cluster in the file",
    ),
    "data-past-eof": (
        lambda d: struct.pack_into(">Q", d, _first_l2(d), (1 << 63) | (1 << 44)),
        "past the end of the file",
    ),
    "data-unaligned": (
        lambda d: struct.pack_into(">Q", d, _first_l2(d), (1 << 63) | 0x10200),
        "not cluster-aligned",
    ),
    "compressed-garbage": (
        # a compressed descriptor pointing at the header: not a deflate stream
        lambda d: struct.pack_into(">Q", d, _first_l2(d), (1 << 62) | 8),
        "compressed cluster",
    ),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_images_fail_clearly_and_small(case: str, qemu_img: str, tmp_path: Path) -> None:
    patch, text = HOSTILE[case]
    image = _patched(tmp_path, qemu_img, case, patch)
    tracemalloc.start()
    try:
        message = _error(image)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert text in message, message
    assert peak < 16 * MIB


def test_parse_header_is_pure_and_checks_length() -> None:
    with pytest.raises(Qcow2Error, match="not a qcow2 image"):
        parse_header(b"QFI\xfb", 100)
    header = bytearray(112)
    struct.pack_into(">4sIQIIQIIQ", header, 0, b"QFI\xfb", 3, 0, 0, 16, 1 << 30, 0, 2, 65536)
    struct.pack_into(">QQQII", header, 72, 0, 0, 0, 4, 112)
    h = parse_header(bytes(header), 1 << 20)
    assert (h.version, h.cluster_size, h.size, h.l1_needed) == (3, 65536, 1 << 30, 2)
    with pytest.raises(Qcow2Error, match="truncated"):
        parse_header(bytes(header[:80]), 1 << 20)
