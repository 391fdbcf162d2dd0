"""The API and conductor settings: defaults (Ironic's) and their TOML spelling."""

from __future__ import annotations

from pathlib import Path

import pytest

from pxeforge.config import ApiAuth, Settings, load_toml
from pxeforge.errors import ConfigError


def test_defaults_are_ironics() -> None:
    s = Settings()
    assert (s.api_port, s.api_auth, s.db_url) == (6385, ApiAuth.HTTP_BASIC, None)
    assert s.deploy_callback_timeout == s.inspect_wait_timeout == s.clean_callback_timeout == 1800
    assert (s.heartbeat_interval, s.heartbeat_timeout) == (10, 60)


def test_toml(tmp_path: Path) -> None:
    path = tmp_path / "pxeforge.toml"
    path.write_text(
        'api-port = 16385\napi_auth = "noauth"\ndb_url = "postgresql+psycopg://u@h/db"\n'
        "deploy_callback_timeout = 600\ninspect-wait-timeout = 0\n"
    )
    values = load_toml(path)
    assert values == {
        "api_port": 16385,
        "api_auth": ApiAuth.NOAUTH,
        "db_url": "postgresql+psycopg://u@h/db",
        "deploy_callback_timeout": 600.0,
        "inspect_wait_timeout": 0.0,
    }
    assert Settings(**values).api_auth is ApiAuth.NOAUTH
    for bad in (
        'api_auth = "kerberos"',
        'api_port = "x"',
        "db_url = 5",
        'heartbeat_interval = "s"',
    ):
        path.write_text(bad + "\n")
        with pytest.raises(ConfigError):
            load_toml(path)
