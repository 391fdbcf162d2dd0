"""Disk images pxeforge serves itself: ``<data_dir>/images/<name>``, uploaded through the API.

Theory of operation: an image is one regular file under `ImageStore.root` with a name that
is safe everywhere it appears — a URL path segment, a file name, a log line (`check_name`:
letters, digits, ``.``, ``_``, ``-``, not starting with a dot, at most 128 characters). Its
sha256 and sha512, computed while it arrived, are kept beside it in ``.meta/<name>.json`` so
listing never re-reads gigabytes. An upload (`ImageStore.begin`) streams into a hidden
temporary file in the same directory (``.upload-<random>``), hashing as it writes;
`Upload.commit` checks the expected size, ``fsync``\\ s, writes the metadata, then renames
the file into place (`os.replace`: a reader sees the old image or the new one, never half of
one) and ``fsync``\\ s the directory. `Upload.abort` (or a failed commit) removes the
temporary file: nothing half-written is ever listed or served. The boot plane's HTTP server
sends ``/images/<name>`` from `ImageStore.open` (a file descriptor: sendfile, Range).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

from pxeforge.errors import PxeforgeError

__all__ = [
    "IMAGE_NAME",
    "Image",
    "ImageError",
    "ImageNotFound",
    "ImageStore",
    "InvalidImageName",
    "Upload",
    "check_name",
]

IMAGE_NAME: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
"""A safe image name (also the last segment of its URL)."""

_META: Final = ".meta"


class ImageError(PxeforgeError):
    """An image operation failed; ``code`` is the API's status."""

    code: ClassVar[int] = 500


class InvalidImageName(ImageError):
    code: ClassVar[int] = 400


class ImageNotFound(ImageError):
    code: ClassVar[int] = 404

    def __init__(self, name: str) -> None:
        super().__init__(f"Image {name} could not be found.")


class IncompleteUpload(ImageError):
    code: ClassVar[int] = 400


class NoSpace(ImageError):
    code: ClassVar[int] = 507


def check_name(name: str) -> str:
    """``name`` if it is a safe image name, else `InvalidImageName` saying what is allowed."""
    if not IMAGE_NAME.fullmatch(name) or name in (".", ".."):
        raise InvalidImageName(
            f"Invalid image name {name[:200]!r}: 1 to 128 letters, digits, '.', '_' or '-', "
            "starting with a letter or a digit"
        )
    return name


@dataclass(frozen=True, slots=True)
class Image:
    """One stored image."""

    name: str
    size: int
    sha256: str
    sha512: str

    def view(self, http_base: str) -> dict[str, Any]:
        """The API's answer: name, size, both hashes and the URL the agent downloads."""
        return {
            "name": self.name,
            "size": self.size,
            "sha256": self.sha256,
            "sha512": self.sha512,
            "url": f"{http_base.rstrip('/')}/images/{self.name}",
        }


class Upload:
    """One image arriving: `write` chunks, then `commit` (or `abort`)."""

    def __init__(self, store: ImageStore, name: str) -> None:
        self.store = store
        self.name = name
        self.temp = store.root / f".upload-{secrets.token_hex(8)}"
        self._fd = os.open(self.temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        self.size = 0
        self._sha256 = hashlib.sha256()
        self._sha512 = hashlib.sha512()

    def write(self, chunk: bytes) -> None:
        """Append and hash ``chunk`` (blocking: call it off the event loop)."""
        view = memoryview(chunk)
        try:
            while view:
                done = os.write(self._fd, view)
                view = view[done:]
        except OSError as exc:
            self.abort()
            if exc.errno == 28:  # ENOSPC
                raise NoSpace(f"No space left for image {self.name}") from None
            raise ImageError(f"Writing image {self.name} failed: {exc.strerror}") from None
        self._sha256.update(chunk)
        self._sha512.update(chunk)
        self.size += len(chunk)

    def commit(self, expected_size: int | None = None) -> Image:
        """Publish the image atomically (`IncompleteUpload` if fewer bytes than announced)."""
        try:
            if expected_size is not None and expected_size != self.size:
                raise IncompleteUpload(
                    f"Upload of image {self.name} incomplete: {self.size} of {expected_size} "
                    "bytes arrived; nothing was stored"
                )
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = -1
            image = Image(self.name, self.size, self._sha256.hexdigest(), self._sha512.hexdigest())
            self.store._write_meta(image)
            os.replace(self.temp, self.store.root / self.name)
            self.store._sync_dir()
            return image
        except BaseException:
            self.abort()
            raise

    def abort(self) -> None:
        """Forget the upload (idempotent)."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        self.temp.unlink(missing_ok=True)


class ImageStore:
    """The images under ``root`` (normally ``<data_dir>/images``), created on first use."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _ensure(self) -> None:
        (self.root / _META).mkdir(parents=True, exist_ok=True)

    def _meta_path(self, name: str) -> Path:
        return self.root / _META / f"{name}.json"

    def _write_meta(self, image: Image) -> None:
        path = self._meta_path(image.name)
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        temp.write_text(json.dumps({"size": image.size, "sha256": image.sha256,
                                    "sha512": image.sha512}))  # fmt: skip
        os.replace(temp, path)

    def _sync_dir(self) -> None:
        fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def begin(self, name: str) -> Upload:
        """Start uploading ``name`` (replacing an image of that name when committed)."""
        check_name(name)
        self._ensure()
        return Upload(self, name)

    def get(self, name: str) -> Image:
        """The stored image ``name`` (`ImageNotFound`)."""
        check_name(name)
        path = self.root / name
        try:
            meta = json.loads(self._meta_path(name).read_text())
            size = path.stat().st_size
        except (OSError, ValueError):
            raise ImageNotFound(name) from None
        if not path.is_file() or size != meta.get("size"):
            raise ImageNotFound(name)
        return Image(name, size, str(meta["sha256"]), str(meta["sha512"]))

    def list(self) -> list[Image]:
        """Every stored image, by name."""
        if not self.root.is_dir():
            return []
        found = []
        for entry in sorted(os.listdir(self.root)):
            if not IMAGE_NAME.fullmatch(entry):
                continue
            try:
                found.append(self.get(entry))
            except ImageNotFound:
                continue  # an image without metadata is not ours: not listed
        return found

    def delete(self, name: str) -> None:
        """Remove image ``name`` (`ImageNotFound`); downloads in progress finish."""
        self.get(name)
        (self.root / name).unlink(missing_ok=True)
        self._meta_path(name).unlink(missing_ok=True)

    def open(self, name: str) -> int:
        """A read-only descriptor of image ``name`` (no symlinks followed; `ImageNotFound`)."""
        try:
            check_name(name)
        except InvalidImageName:
            raise ImageNotFound(name[:200]) from None
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            raise ImageNotFound(name) from None
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageNotFound(name)
        return fd
