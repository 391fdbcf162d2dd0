"""`pxeforge.images`: safe names, atomic uploads with both hashes, listing, deleting, opening."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from pxeforge.images import (
    ImageNotFound,
    ImageStore,
    IncompleteUpload,
    InvalidImageName,
    check_name,
)


@pytest.mark.parametrize("name", ["disk.raw", "a", "Debian-12_amd64.qcow2", "x" * 128])
def test_safe_names(name: str) -> None:
    assert check_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        ".hidden",
        "-rf",
        "_x",
        "a/b",
        "../etc/passwd",
        "a b",
        "é",
        "x" * 129,
        "a\x00b",
        "a%2fb",
    ],  # fmt: skip
)
def test_unsafe_names(name: str) -> None:
    with pytest.raises(InvalidImageName) as info:
        check_name(name)
    assert info.value.code == 400


def test_upload_is_atomic_and_hashed(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    assert store.list() == []
    data = os.urandom(300_000)
    upload = store.begin("disk.raw")
    for i in range(0, len(data), 65536):
        upload.write(data[i : i + 65536])
        assert not (store.root / "disk.raw").exists()  # nothing visible before commit
    image = upload.commit(len(data))
    assert (image.size, image.sha256, image.sha512) == (
        len(data), hashlib.sha256(data).hexdigest(), hashlib.sha512(data).hexdigest()
    )  # fmt: skip
    assert (store.root / "disk.raw").read_bytes() == data
    assert store.get("disk.raw") == image and store.list() == [image]
    assert [p.name for p in store.root.iterdir() if p.name.startswith(".upload")] == []
    view = image.view("http://10.0.0.1:8080/")
    assert view["url"] == "http://10.0.0.1:8080/images/disk.raw"
    # a new upload of the same name replaces it only when committed
    again = store.begin("disk.raw")
    again.write(b"new")
    assert store.get("disk.raw").size == len(data)
    assert again.commit().sha256 == hashlib.sha256(b"new").hexdigest()
    assert (store.root / "disk.raw").read_bytes() == b"new"


def test_short_or_aborted_upload_leaves_nothing(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    upload = store.begin("disk.raw")
    upload.write(b"x" * 100)
    with pytest.raises(IncompleteUpload) as info:
        upload.commit(1000)
    assert "100 of 1000 bytes" in str(info.value) and info.value.code == 400
    other = store.begin("other.raw")
    other.write(b"y")
    other.abort()
    other.abort()  # idempotent
    assert store.list() == [] and sorted(p.name for p in store.root.iterdir()) == [".meta"]
    with pytest.raises(ImageNotFound):
        store.get("disk.raw")


def test_delete_and_open(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    upload = store.begin("a.raw")
    upload.write(b"abc")
    upload.commit()
    fd = store.open("a.raw")
    try:
        store.delete("a.raw")  # a download in progress keeps its descriptor
        assert os.read(fd, 10) == b"abc"
    finally:
        os.close(fd)
    assert store.list() == []
    with pytest.raises(ImageNotFound):
        store.delete("a.raw")
    for name in ("a.raw", "../x", ".meta", "", "a/b"):
        with pytest.raises(ImageNotFound):
            os.close(store.open(name))


def test_open_refuses_symlinks_and_non_files(tmp_path: Path) -> None:
    store = ImageStore(tmp_path / "images")
    store.root.mkdir(parents=True)
    secret = tmp_path / "secret"
    secret.write_text("s")
    (store.root / "link.raw").symlink_to(secret)
    (store.root / "dir.raw").mkdir()
    for name in ("link.raw", "dir.raw"):
        with pytest.raises(ImageNotFound):
            os.close(store.open(name))
    # files without pxeforge's metadata are not listed
    (store.root / "stray.raw").write_bytes(b"z")
    assert store.list() == []
