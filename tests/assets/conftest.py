"""Fixtures: real Debian packages (apt-get download) and real RPMs (rpmbuild)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from pxeforge.assets.fetch import DEBIAN_PACKAGES, download_apt

_APT_ENV = {**os.environ, "DEBIAN_FRONTEND": "noninteractive", "LC_ALL": "C"}


def _apt_knows(packages: tuple[str, ...]) -> bool:
    proc = subprocess.run(
        ["apt-cache", "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        env=_APT_ENV,
        check=False,
    )
    return all(f"Package: {p}\n" in proc.stdout for p in packages)


@pytest.fixture(scope="session")
def apt_ready() -> None:
    """apt-get usable and its lists knowing the loader packages (``apt-get update`` once)."""
    if shutil.which("apt-get") is None or shutil.which("apt-cache") is None:
        pytest.skip("apt-get is not available on this machine")
    if not _apt_knows(DEBIAN_PACKAGES):
        subprocess.run(
            ["apt-get", "update", "-q"], capture_output=True, env=_APT_ENV, timeout=300, check=False
        )
    if not _apt_knows(DEBIAN_PACKAGES):
        pytest.skip("apt's package lists do not know the loader packages (apt-get update failed)")


@pytest.fixture(scope="session")
def debian_debs(apt_ready: None, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The five real loader packages, downloaded once per session: package name → .deb."""
    cache = tmp_path_factory.mktemp("debs")
    return {s.package: s.path for s in download_apt(DEBIAN_PACKAGES, cache)}


def _ensure_rpmbuild() -> str:
    if (
        shutil.which("rpmbuild") is None
        and shutil.which("apt-get") is not None
        and os.geteuid() == 0
    ):
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "rpm"],
            capture_output=True,
            env=_APT_ENV,
            timeout=600,
            check=False,
        )
    path = shutil.which("rpmbuild")
    if path is None or shutil.which("rpm2cpio") is None:
        pytest.skip("rpmbuild/rpm2cpio missing and 'apt-get install -y rpm' did not provide them")
    return path


def fake_pe(tag: bytes) -> bytes:
    """The smallest thing our PE check accepts: MZ, e_lfanew=0x40, PE\\0\\0, machine x86-64."""
    head = bytearray(0x40)
    head[0:2] = b"MZ"
    head[0x3C:0x40] = (0x40).to_bytes(4, "little")
    return bytes(head) + b"PE\x00\x00" + (0x8664).to_bytes(2, "little") + b"\x00" * 18 + tag


def fake_nbp(tag: bytes) -> bytes:
    """A BIOS NBP start: far jump to 0000:7C05."""
    return b"\xea\x05\x7c\x00\x00" + tag


SPEC = """\
Name: {name}
Version: {version}
Release: {release}
Summary: fake {name} for pxeforge tests
License: MIT
BuildArch: x86_64
%define _binary_payload {payload}
%define debug_package %{{nil}}
%define __os_install_post %{{nil}}
%description
Fake boot loaders laid out like CentOS packages.
%install
{install}
%files
{files}
"""


@pytest.fixture(scope="session")
def build_rpm(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """build_rpm(name, payload, files={path: bytes}, symlinks={path: target},
    hardlinks={path: existing}, version=..., release=...) → the built .rpm."""
    rpmbuild = _ensure_rpmbuild()
    top = tmp_path_factory.mktemp("rpmbuild")

    def build(
        name: str,
        payload: str,
        files: dict[str, bytes],
        symlinks: dict[str, str] | None = None,
        hardlinks: dict[str, str] | None = None,
        version: str = "15.8",
        release: str = "3.el7",
    ) -> Path:
        work = Path(tempfile.mkdtemp(prefix=f"{name}-{payload}-", dir=top))
        src = work / "src"
        src.mkdir()
        install: list[str] = []
        listed: list[str] = []
        for i, (path, data) in enumerate(files.items()):
            (src / str(i)).write_bytes(data)
            install.append(f"mkdir -p %{{buildroot}}{os.path.dirname(path)}")
            install.append(f"install -m 0644 {src / str(i)} %{{buildroot}}{path}")
            listed.append(path)
        for path, target in (symlinks or {}).items():
            install.append(f"ln -s {target} %{{buildroot}}{path}")
            listed.append(path)
        for path, existing in (hardlinks or {}).items():
            install.append(f"ln %{{buildroot}}{existing} %{{buildroot}}{path}")
            listed.append(path)
        spec = work / f"{name}.spec"
        spec.write_text(
            SPEC.format(
                name=name,
                version=version,
                release=release,
                payload=payload,
                install="\n".join(install),
                files="\n".join(listed),
            )
        )
        out = work / "out"
        proc = subprocess.run(
            [rpmbuild, "--define", f"_topdir {out}", "--nodeps", "--quiet", "-bb", str(spec)],
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, textwrap.shorten(proc.stderr, 2000)
        (rpm,) = (out / "RPMS" / "x86_64").glob("*.rpm")
        return rpm

    return build
