"""Every exception pxeforge raises on purpose.

    PxeforgeError                 base: anything we raise deliberately
    ├── ConfigError               bad settings, flags or config file (exit code 2)
    ├── StartupError              a listener could not start (port in use, no such interface…)
    ├── ProtocolError             malformed bytes from the wire; servers log and drop
    │   ├── DhcpError             a DHCP/BOOTP datagram that cannot be decoded
    │   └── TftpError             a TFTP datagram that cannot be decoded; carries a TFTP error code
    ├── BootFileError             a requested boot file is refused
    │   ├── FileNotFound          no such file (TFTP ERROR 1, HTTP 404)
    │   └── AccessViolation       outside the root, or a forbidden name (TFTP ERROR 2, HTTP 403)
    ├── LeaseError                the DHCP pool cannot satisfy a request
    └── AssetError                a package or archive cannot be read or fetched

Any other exception escaping pxeforge code is a bug.
"""

from __future__ import annotations

__all__ = [
    "AccessViolation",
    "AssetError",
    "BootFileError",
    "ConfigError",
    "DhcpError",
    "FileNotFound",
    "LeaseError",
    "ProtocolError",
    "PxeforgeError",
    "StartupError",
    "TftpError",
]


class PxeforgeError(Exception):
    """Base of every deliberate pxeforge error."""


class ConfigError(PxeforgeError):
    """Settings that cannot work; the message says which and why."""


class StartupError(PxeforgeError):
    """A service could not start: the message names the service and the fix."""


class ProtocolError(PxeforgeError):
    """Bytes from the network that do not decode. The remote side is at fault."""


class DhcpError(ProtocolError):
    """A malformed DHCP/BOOTP datagram."""


class TftpError(ProtocolError):
    """A malformed TFTP datagram; ``code`` is the TFTP error code to answer with."""

    def __init__(self, message: str, code: int = 4) -> None:
        super().__init__(message)
        self.code = code


class BootFileError(PxeforgeError):
    """A boot file request that is refused."""


class FileNotFound(BootFileError):
    """No such boot file (TFTP ERROR 1, HTTP 404)."""


class AccessViolation(BootFileError):
    """A path outside the boot root or otherwise forbidden (TFTP ERROR 2, HTTP 403)."""


class LeaseError(PxeforgeError):
    """The DHCP pool cannot give an address."""


class AssetError(PxeforgeError):
    """A boot asset (package, archive, loader) cannot be fetched or read."""
