"""HTTP Basic authentication against an Apache-style htpasswd file (Ironic's ``http_basic``).

Theory of operation:

* ``--api-auth http_basic`` (the default) reads ``<data_dir>/htpasswd``: one ``user:hash`` per
  line, bcrypt hashes only (``$2y$``/``$2b$``/``$2a$``, what ``htpasswd -B`` writes and what
  Ironic's ``http_basic_auth_user_file`` accepts). The file is re-read when it changes, so users
  can be added without a restart.
* On first start (`ensure_credentials`) the file does not exist: pxeforge creates user
  ``admin`` with a random password, writes the hash there and the password in
  ``<data_dir>/api-credentials`` (mode 0600, for `pxeforge node` on this host), and the caller
  prints it **once**. Delete ``api-credentials`` to keep only the hash.
* A request without valid credentials gets 401 with ``WWW-Authenticate: Basic realm="Baremetal
  API"``. bcrypt is slow on purpose (tens to hundreds of ms); a successful check is remembered
  (keyed by user, stored hash and a SHA-256 of the password) so each client pays it once, and
  checks run off the event loop.
* ``noauth`` skips all of this; `pxeforge serve` uses it only when asked.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import bcrypt

from pxeforge.errors import ConfigError

__all__ = [
    "CREDENTIALS_FILE",
    "DEFAULT_USER",
    "HTPASSWD_FILE",
    "REALM",
    "Credentials",
    "Htpasswd",
    "ensure_credentials",
    "parse_basic",
    "read_credentials",
]

HTPASSWD_FILE: Final = "htpasswd"
CREDENTIALS_FILE: Final = "api-credentials"
DEFAULT_USER: Final = "admin"
REALM: Final = "Baremetal API"
_BCRYPT_PREFIXES: Final = (b"$2y$", b"$2b$", b"$2a$")
_ROUNDS: Final = 10


@dataclass(frozen=True, slots=True)
class Credentials:
    user: str
    password: str


def _write_private(path: Path, text: str) -> None:
    """Create ``path`` with mode 0600 (refusing to overwrite) and write ``text``."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)


def ensure_credentials(data_dir: Path) -> Credentials | None:
    """Create the htpasswd and credentials files if there is no htpasswd yet.

    Returns the new credentials (to print once), or None when the htpasswd already existed.
    """
    htpasswd = data_dir / HTPASSWD_FILE
    if htpasswd.exists():
        return None
    password = secrets.token_urlsafe(18)
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=_ROUNDS)).decode()
    data_dir.mkdir(parents=True, exist_ok=True)
    creds = data_dir / CREDENTIALS_FILE
    creds.unlink(missing_ok=True)  # a stale one would not match the new hash
    _write_private(creds, json.dumps({"user": DEFAULT_USER, "password": password}) + "\n")
    _write_private(htpasswd, f"{DEFAULT_USER}:{hashed}\n")
    return Credentials(DEFAULT_USER, password)


def read_credentials(data_dir: Path) -> Credentials | None:
    """The credentials `ensure_credentials` wrote, if the file is there and readable."""
    try:
        raw = json.loads((data_dir / CREDENTIALS_FILE).read_text())
    except (OSError, ValueError):
        return None
    if isinstance(raw, dict) and isinstance(raw.get("user"), str):
        if isinstance(raw.get("password"), str):
            return Credentials(raw["user"], raw["password"])
    return None


def parse_basic(header: str | None) -> tuple[str, str] | None:
    """``Authorization: Basic base64(user:password)`` → (user, password); None if not that."""
    if not header:
        return None
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    user, sep, password = decoded.partition(":")
    if not sep:
        return None
    return user, password


class Htpasswd:
    """The users of an htpasswd file (reloaded when its mtime or size changes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._users: dict[str, bytes] = {}
        self._stamp: tuple[int, int] | None = None
        self._ok: set[tuple[str, bytes, bytes]] = set()
        self._lock = threading.Lock()
        self._load()

    def _load(self) -> None:
        try:
            st = self.path.stat()
        except OSError as exc:
            raise ConfigError(f"htpasswd file {self.path}: {exc.strerror}") from None
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp == self._stamp:
            return
        users: dict[str, bytes] = {}
        for number, line in enumerate(self.path.read_text().splitlines(), 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            user, sep, hashed = line.partition(":")
            if not sep or not hashed.encode().startswith(_BCRYPT_PREFIXES):
                raise ConfigError(
                    f"htpasswd file {self.path} line {number}: only bcrypt entries "
                    "(user:$2y$…, from `htpasswd -B`) are supported"
                )
            users[user] = hashed.encode()
        self._users, self._stamp = users, stamp
        self._ok.clear()

    def check(self, user: str, password: str) -> bool:
        """True if ``user`` exists and ``password`` matches (blocking: bcrypt, file reads)."""
        with self._lock:
            try:
                self._load()
            except (ConfigError, OSError):
                return False
            hashed = self._users.get(user)
        if hashed is None:
            return False
        key = (user, hashed, hashlib.sha256(password.encode()).digest())
        if key in self._ok:
            return True
        try:
            good = bcrypt.checkpw(password.encode(), hashed)
        except ValueError:  # a malformed hash
            return False
        if good:
            with self._lock:
                self._ok.add(key)
        return good
