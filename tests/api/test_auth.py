"""http_basic: 401 without or with wrong credentials, bcrypt htpasswd, first-start password."""

from __future__ import annotations

from pathlib import Path

import bcrypt
import pytest

from pxeforge.api.auth import Htpasswd, ensure_credentials, parse_basic, read_credentials
from pxeforge.errors import ConfigError

from .conftest import LiveApi


def test_http_basic(tmp_path: Path) -> None:
    api = LiveApi(f"sqlite:///{tmp_path / 'db.sqlite'}", data_dir=tmp_path / "data").start()
    try:
        for auth in (False, ("admin", "wrong"), ("nobody", api.password or "")):
            reply = api.get("/v1/nodes", auth=auth)
            assert reply.status == 401, auth
            assert reply.headers["WWW-Authenticate"] == 'Basic realm="Baremetal API"'
            assert "Authentication" in reply.fault
        reply = api.get("/v1/nodes", headers={"Authorization": "Basic !!!"}, auth=False)
        assert reply.status == 401
        assert api.get("/v1/nodes").status == 200
        # the version documents are public, as in Ironic
        assert api.get("/", auth=False).status == 200
        assert api.get("/v1", auth=False).status == 200
        # the user name goes into the node's history
        uuid = api.post("/v1/nodes", {"driver": "fake-hardware"}).json["uuid"]
        api.put(f"/v1/nodes/{uuid}/states/provision", {"target": "manage"})
        api.wait_idle()
        history = api.get(f"/v1/nodes/{uuid}/history?detail=true").json["history"]
        assert history[0]["user"] == "admin"
    finally:
        api.close()


def test_credentials_are_created_once(tmp_path: Path) -> None:
    first = ensure_credentials(tmp_path)
    assert first is not None and first.user == "admin" and len(first.password) >= 20
    assert ensure_credentials(tmp_path) is None
    assert read_credentials(tmp_path) == first
    assert (tmp_path / "htpasswd").stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "api-credentials").stat().st_mode & 0o777 == 0o600
    line = (tmp_path / "htpasswd").read_text()
    assert line.startswith("admin:$2b$") and first.password not in line
    assert Htpasswd(tmp_path / "htpasswd").check("admin", first.password)


def test_htpasswd_formats(tmp_path: Path) -> None:
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    path = tmp_path / "htpasswd"
    # Apache's htpasswd -B writes $2y$
    path.write_text(f"# users\nalice:$2y${hashed[4:]}\n")
    users = Htpasswd(path)
    assert users.check("alice", "s3cret") and users.check("alice", "s3cret")
    assert not users.check("alice", "wrong") and not users.check("bob", "s3cret")
    path.write_text(f"alice:{hashed}\nbob:{hashed}\n")  # picked up without a restart
    assert users.check("bob", "s3cret")
    path.write_text("carol:$apr1$abc$def\n")
    with pytest.raises(ConfigError, match="only bcrypt"):
        Htpasswd(path)
    assert parse_basic("Basic YWxpY2U6czNjcmV0") == ("alice", "s3cret")
    assert parse_basic("Bearer x") is None and parse_basic(None) is None
    assert parse_basic("Basic bm9jb2xvbg==") is None  # "nocolon"
