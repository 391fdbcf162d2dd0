from __future__ import annotations

import random

import pytest

from pxeforge.agent.config import ConfigError, parse_cmdline, split_cmdline
from pxeforge.agent.heartbeat import Heartbeater, interval


def test_split_follows_the_kernel_quoting() -> None:
    assert split_cmdline('a=1  b="x y" "c=d e" f\n') == ["a=1", "b=x y", "c=d e", "f"]
    assert split_cmdline("") == []


def test_parse_ironic_parameters_and_extras() -> None:
    cfg = parse_cmdline(
        "BOOT_IMAGE=/vmlinuz ipa-api-url=http://10.0.0.1:6385/,http://10.0.0.2:6385 "
        "BOOTIF=01-52-54-00-AB-CD-EF ipa-insecure=1 ipa-debug=1 quiet"
    )
    assert cfg.api_url == "http://10.0.0.1:6385"
    assert cfg.bootif == "52:54:00:ab:cd:ef"
    assert cfg.insecure is True
    assert cfg.inspection_callback_url is None
    assert cfg.extras == {"BOOT_IMAGE": "/vmlinuz", "ipa-debug": "1", "quiet": ""}


def test_parse_defaults_and_errors() -> None:
    cfg = parse_cmdline("ipa-api-url=https://api ipa-insecure=0 BOOTIF=52:54:00:00:00:01")
    assert cfg.insecure is False and cfg.bootif == "52:54:00:00:00:01"
    with pytest.raises(ConfigError, match="no ipa-api-url"):
        parse_cmdline("BOOTIF=01-52-54-00-00-00-01")
    with pytest.raises(ConfigError, match="not an http"):
        parse_cmdline("ipa-api-url=ftp://x")
    with pytest.raises(ConfigError, match="BOOTIF"):
        parse_cmdline("ipa-api-url=http://x BOOTIF=01-zz")


def test_heartbeat_interval_is_ironics() -> None:
    rng = random.Random(1)
    values = [interval(300, rng) for _ in range(1000)]
    assert min(values) >= 90 and max(values) <= 180
    assert max(values) - min(values) > 60  # really random, not a constant


def test_heartbeater_survives_failures_and_stops_at_its_limit() -> None:
    calls: list[int] = []

    def beat() -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("API away")

    hb = Heartbeater(beat, 0.01, limit=3)
    hb.run()
    assert hb.sent == 3 and hb.failed == 1 and len(calls) == 4
