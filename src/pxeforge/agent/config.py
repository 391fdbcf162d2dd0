"""The agent's settings, read from the kernel command line.

Theory of operation: the boot loader config written by pxeforge passes everything the agent
needs as ``key=value`` kernel parameters (ironic-python-agent's names), so the ramdisk image
itself is the same for every node:

* ``ipa-api-url=URL`` — where the pxeforge API is (IPA allows a comma-separated list; the first
  is used);
* ``BOOTIF=01-aa-bb-cc-dd-ee-ff`` — the NIC the machine booted from (pxelinux ``ipappend 2``
  or the iPXE/GRUB line), an ARP hardware type ``01`` followed by the MAC;
* ``ipa-insecure=1`` — do not verify the API's TLS certificate;
* ``ipa-inspection-callback-url=URL`` — post the inventory there before looking up;
* anything else is kept in `AgentConfig.extras` (operator extras, e.g. ``ipa-debug=1``).

The kernel splits its command line on spaces outside double quotes (Documentation/admin-guide/
kernel-parameters.rst); a value may be quoted as a whole (``key="a b"``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

__all__ = ["AgentConfig", "ConfigError", "normalize_mac", "parse_cmdline", "split_cmdline"]

_MAC: Final = re.compile(r"^[0-9a-f]{2}(?::[0-9a-f]{2}){5}$")
_TRUE: Final = frozenset({"1", "true", "yes", "on", ""})


class ConfigError(ValueError):
    """The kernel command line lacks something the agent needs (the operator's fault)."""


def normalize_mac(text: str) -> str:
    """``AA-BB-CC-DD-EE-FF`` / ``aa:bb:…`` → ``aa:bb:cc:dd:ee:ff``; ValueError otherwise."""
    mac = text.strip().lower().replace("-", ":")
    if not _MAC.match(mac):
        raise ValueError(f"not a MAC address: {text!r}")
    return mac


def split_cmdline(text: str) -> list[str]:
    """Split a kernel command line as the kernel does: on blanks outside double quotes."""
    words: list[str] = []
    current: list[str] = []
    quoted = False
    started = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
            started = True
        elif ch.isspace() and not quoted:
            if started:
                words.append("".join(current))
            current, started = [], False
        else:
            current.append(ch)
            started = True
    if started:
        words.append("".join(current))
    return words


@dataclass(frozen=True, slots=True)
class AgentConfig:
    """What the agent was told on its kernel command line."""

    api_url: str
    bootif: str | None = None  # normalized MAC of the boot NIC
    insecure: bool = False
    inspection_callback_url: str | None = None
    extras: dict[str, str] = field(default_factory=dict)


def parse_cmdline(text: str) -> AgentConfig:
    """`AgentConfig` from a ``/proc/cmdline`` text; `ConfigError` without ``ipa-api-url``."""
    params: dict[str, str] = {}
    for word in split_cmdline(text):
        key, _, value = word.partition("=")
        params[key] = value
    raw_url = params.pop("ipa-api-url", "")
    api_url = raw_url.split(",")[0].strip().rstrip("/")
    if not api_url:
        raise ConfigError(
            "the kernel command line has no ipa-api-url=URL: the boot config that started this "
            "ramdisk must name the pxeforge API"
        )
    if not api_url.startswith(("http://", "https://")):
        raise ConfigError(f"ipa-api-url={raw_url!r} is not an http(s) URL")
    bootif: str | None = None
    raw_bootif = params.pop("BOOTIF", None)
    if raw_bootif:
        value = raw_bootif.strip()
        # "01-aa-bb-…": ARP hardware type 1 (Ethernet), then the MAC
        if len(value) == 20 and value[:3] in ("01-", "01:"):
            value = value[3:]
        try:
            bootif = normalize_mac(value)
        except ValueError:
            raise ConfigError(f"BOOTIF={raw_bootif!r} does not name a MAC address") from None
    insecure = params.pop("ipa-insecure", None)
    callback = params.pop("ipa-inspection-callback-url", None) or None
    return AgentConfig(
        api_url=api_url,
        bootif=bootif,
        insecure=insecure is not None and insecure.lower() in _TRUE,
        inspection_callback_url=callback,
        extras=params,
    )
