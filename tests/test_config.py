from ipaddress import IPv4Address, IPv4Network
from pathlib import Path

import pytest

from pxeforge.cli.serve import build_settings
from pxeforge.config import BootMethod, DhcpMode, Settings, load_toml, parse_pool
from pxeforge.errors import ConfigError


def test_defaults_match_the_seed_dhcpd_conf() -> None:
    s = Settings()
    assert (s.lease_time, s.max_lease_time) == (21600, 43200)
    assert (s.dhcp_port, s.tftp_port, s.http_port, s.proxy_port) == (67, 69, 8080, 4011)
    assert s.dhcp_mode is DhcpMode.FULL and s.netboot_only


def test_parse_pool() -> None:
    assert parse_pool("10.10.3.100-10.10.3.200") == (
        IPv4Address("10.10.3.100"),
        IPv4Address("10.10.3.200"),
    )
    for bad in ("10.0.0.1", "10.0.0.9-10.0.0.1", "a-b"):
        with pytest.raises(ConfigError):
            parse_pool(bad)


def test_toml_then_flags_override(tmp_path: Path) -> None:
    cfg = tmp_path / "pxeforge.toml"
    cfg.write_text(
        'address = "10.10.3.167"\n'
        'pool = "10.10.3.100-10.10.3.200"\n'
        'dhcp-mode = "proxy"\n'
        "http_port = 8081\n"
        'boot_method = "ipxe"\n'
        'initrd = ["a.img", "b.img"]\n'
        "[reservations]\n"
        '"00:50:56:3B:F6:2B" = "10.10.3.110"\n'
    )
    s = build_settings(cfg, {"http_port": 9000, "dhcp_mode": None, "dns": ()})
    assert s.address == IPv4Address("10.10.3.167")
    assert s.dhcp_mode is DhcpMode.PROXY
    assert s.http_port == 9000
    assert s.boot_method is BootMethod.IPXE
    assert s.initrds == (Path("a.img"), Path("b.img"))
    assert s.reservations == {"00:50:56:3b:f6:2b": IPv4Address("10.10.3.110")}
    assert s.http_base == "http://10.10.3.167:9000"


def test_flags_are_typed() -> None:
    s = build_settings(
        None,
        {
            "subnet": "10.1.0.0/16",
            "dns": ("1.1.1.1", "9.9.9.9"),
            "initrds": ("a,b", "c"),
            "reservations": ("52-54-00-00-00-01=10.1.0.5",),
        },
    )
    assert s.subnet == IPv4Network("10.1.0.0/16")
    assert s.dns == (IPv4Address("1.1.1.1"), IPv4Address("9.9.9.9"))
    assert s.initrds == (Path("a"), Path("b"), Path("c"))
    assert s.reservations == {"52:54:00:00:00:01": IPv4Address("10.1.0.5")}


@pytest.mark.parametrize(
    "text, message",
    [
        ("nope = 1\n", "unknown key"),
        ('address = "300.1.1.1"\n', "address"),
        ("address = [\n", "config"),
        ('dhcp_mode = "sometimes"\n', "dhcp_mode"),
        ("timeline_per_key = 0\n", "timeline_per_key"),
        ('timeline_max_keys = "many"\n', "timeline_max_keys"),
        ('timeline = "yes"\n', "timeline"),
    ],
)
def test_bad_config_files_name_the_problem(tmp_path: Path, text: str, message: str) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_toml(cfg)


def test_bad_flags() -> None:
    with pytest.raises(ConfigError, match="--address"):
        build_settings(None, {"address": "nope"})
    with pytest.raises(ConfigError, match="--reserve"):
        build_settings(None, {"reservations": ("52:54:00:00:00:01",)})


def test_timeline_sizes_from_toml(tmp_path: Path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text("timeline = false\ntimeline-per-key = 8\ntimeline_max_keys = 3\n")
    s = Settings(**load_toml(cfg))
    assert (s.timeline, s.timeline_per_key, s.timeline_max_keys) == (False, 8, 3)
    assert Settings().timeline is True
