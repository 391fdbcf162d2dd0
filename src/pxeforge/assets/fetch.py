"""Fill the boot root with real boot loaders, taken from Debian (or user-supplied) packages.

Theory of operation
-------------------
`LOADERS` is the one table of what a boot root needs and where packages keep it: each
`Loader` names the file in the root (``bootx64.efi``…), the package paths that can provide it
(Debian's first, then RPM layouts such as the seed's ``boot/efi/EFI/centos/shim.efi``), the
Debian package that ships it, and a check of the first bytes so a wrong file is never
installed. The flow is

    packages  ──(download: apt-get download | mirror)──▶  cache/debs/*.deb
    cache / --from files  ──(DebPackage / RpmPackage)──▶  match LOADERS  ──▶  bytes
    bytes  ──(temp file + fsync + rename)──▶  ROOT/NAME,  then ROOT/MANIFEST.json

Downloads never install anything on the host: installing shim-signed or
grub-efi-amd64-signed runs grub-install. With apt, the candidate's version, size and SHA-256
come from ``apt-cache show`` (local, no network); a cached .deb that matches is used as is,
otherwise ``apt-get download`` fetches it. Without apt (or with an explicit mirror), the
mirror's ``dists/SUITE/main/binary-ARCH/Packages.xz`` index is read (and cached) and the .deb
is fetched over HTTP and checked against the index's SHA256. A warm run does no network.

Every function takes its paths and parameters; nothing happens at import time. Progress is
reported through an optional callback (`Progress`), so the CLI can draw it with rich.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import lzma
import os
import re
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final, Literal, Protocol

from pxeforge.errors import AssetError, ConfigError
from pxeforge.fsutil import write_atomic

from .deb import DebPackage, PackageFile, is_deb, parse_control
from .rpm import RpmPackage, is_rpm

__all__ = [
    "DEBIAN_PACKAGES",
    "DEFAULT_SUITE",
    "LOADERS",
    "MANIFEST",
    "SUPPORTED_ARCHES",
    "FetchResult",
    "IndexEntry",
    "InstalledFile",
    "Loader",
    "Match",
    "Package",
    "PackageSource",
    "Progress",
    "ProgressEvent",
    "check_loader",
    "compare_versions",
    "download_apt",
    "download_mirror",
    "fetch_assets",
    "install_files",
    "match_loaders",
    "open_package",
    "read_manifest",
]

MANIFEST: Final = "MANIFEST.json"
DEFAULT_SUITE: Final = "bookworm"  # the Debian release whose loaders the lab notes measured
SUPPORTED_ARCHES: Final = ("amd64",)
_MIRROR_TIMEOUT: Final = 60.0
_CHUNK: Final = 256 << 10


# --------------------------------------------------------------------------- the table

Check = Literal["bios-nbp", "elf32", "pe-x64"]


@dataclass(frozen=True, slots=True)
class Loader:
    """One file of the boot root and where packages keep it."""

    name: str  # file name in the root
    paths: tuple[str, ...]  # package paths (fnmatch patterns), best first
    package: str  # the Debian package that ships it
    check: Check
    firmware: Literal["bios", "uefi"]
    required: bool = True


_C32 = "usr/lib/syslinux/modules/bios/{}"
_C32_RPM = "usr/share/syslinux/{}"


def _c32(name: str, required: bool = False) -> Loader:
    return Loader(
        name,
        (_C32.format(name), _C32_RPM.format(name)),
        "syslinux-common",
        "elf32",
        "bios",
        required,
    )


LOADERS: Final[tuple[Loader, ...]] = (
    Loader(
        "pxelinux.0",
        ("usr/lib/PXELINUX/pxelinux.0", "usr/share/syslinux/pxelinux.0"),
        "pxelinux",
        "bios-nbp",
        "bios",
    ),
    Loader(
        "lpxelinux.0",  # pxelinux with HTTP/FTP (render.py uses it for http:// refs)
        ("usr/lib/PXELINUX/lpxelinux.0", "usr/share/syslinux/lpxelinux.0"),
        "pxelinux",
        "bios-nbp",
        "bios",
        required=False,
    ),
    _c32("ldlinux.c32", required=True),  # pxelinux.0 loads it first, from beside itself
    _c32("libcom32.c32"),
    _c32("libutil.c32"),
    _c32("menu.c32"),
    _c32("vesamenu.c32"),
    _c32("chain.c32"),
    Loader(
        "bootx64.efi",  # shim, signed by Microsoft; loads grubx64.efi from the same directory
        (
            "usr/lib/shim/shimx64.efi.signed",
            "boot/efi/EFI/*/shimx64.efi",
            "boot/efi/EFI/*/shim.efi",
        ),
        "shim-signed",
        "pe-x64",
        "uefi",
    ),
    Loader(
        "grubx64.efi",  # GRUB's network image, prefix /grub (lab.md)
        (
            "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
            "boot/efi/EFI/*/grubx64.efi",
        ),
        "grub-efi-amd64-signed",
        "pe-x64",
        "uefi",
    ),
    Loader(
        "undionly.kpxe",
        ("usr/lib/ipxe/undionly.kpxe", "usr/share/ipxe/undionly.kpxe"),
        "ipxe",
        "bios-nbp",
        "bios",
    ),
    Loader(
        "snponly.efi",
        (
            "usr/lib/ipxe/snponly.efi",
            "usr/share/ipxe/ipxe-snponly-x86_64.efi",
            "usr/share/ipxe/snponly.efi",
        ),
        "ipxe",
        "pe-x64",
        "uefi",
    ),
)

DEBIAN_PACKAGES: Final[tuple[str, ...]] = tuple(dict.fromkeys(ld.package for ld in LOADERS))


def check_loader(loader: Loader, data: bytes) -> None:
    """Refuse bytes that are not the kind of program the loader must be.

    bios-nbp: a PXE network bootstrap program is loaded at 0000:7C00 and entered at its
    first byte (PXE spec 2.1 §4.4.5); pxelinux.0 and undionly.kpxe start with a far jump
    (EA) into themselves, i.e. to a linear address just above 0x7C00.
    elf32: a COM32R module of syslinux 6 is a 32-bit ELF object.
    pe-x64: an EFI application is a PE32+ image: "MZ", then at e_lfanew "PE\\0\\0" and the
    machine type 0x8664 (UEFI spec §2.1.1; PE/COFF "Machine Types").
    """
    what = f"{loader.name}: "
    if loader.check == "bios-nbp":
        if len(data) < 5 or data[0] != 0xEA:
            raise AssetError(what + "not a PXE boot program (no far jump at its start)")
        off = int.from_bytes(data[1:3], "little")
        seg = int.from_bytes(data[3:5], "little")
        if not 0x7C00 <= seg * 16 + off < 0x7C00 + len(data):
            raise AssetError(what + f"far jump to {seg:04x}:{off:04x} is outside the program")
    elif loader.check == "elf32":
        if data[:5] != b"\x7fELF\x01":
            raise AssetError(what + "not a 32-bit ELF COM32 module")
    else:
        if data[:2] != b"MZ" or len(data) < 0x40:
            raise AssetError(what + "not a PE/EFI image (no MZ header)")
        pe = int.from_bytes(data[0x3C:0x40], "little")
        if data[pe : pe + 4] != b"PE\x00\x00":
            raise AssetError(what + "not a PE/EFI image (no PE signature)")
        machine = int.from_bytes(data[pe + 4 : pe + 6], "little")
        if machine != 0x8664:
            raise AssetError(what + f"PE machine {machine:#06x} is not x86-64")


# --------------------------------------------------------------------------- packages


class Package(Protocol):
    """What `DebPackage` and `RpmPackage` have in common."""

    @property
    def path(self) -> Path: ...
    @property
    def name(self) -> str: ...
    @property
    def version(self) -> str: ...
    @property
    def arch(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def kind(self) -> str: ...
    def files(self) -> dict[str, PackageFile]: ...
    def read(self, paths: Iterable[str]) -> dict[str, bytes]: ...


def open_package(path: Path) -> Package:
    """A .deb or .rpm, told apart by magic."""
    path = Path(path)
    if not path.is_file():
        raise AssetError(f"{path}: no such package file")
    if is_deb(path):
        return DebPackage.open(path)
    if is_rpm(path):
        return RpmPackage.open(path)
    raise AssetError(f"{path} is neither a .deb nor an .rpm")


@dataclass(frozen=True, slots=True)
class PackageSource:
    """A package file and how we got it."""

    path: Path
    origin: Literal["cache", "apt", "mirror", "file"]
    package: str = ""  # the Debian package it was fetched as ('' for --from files)


@dataclass(frozen=True, slots=True)
class Match:
    loader: Loader
    package: Package
    member: str
    origin: str


def match_loaders(
    packages: Sequence[tuple[Package, str]], loaders: Iterable[Loader] = LOADERS
) -> dict[str, Match]:
    """For each loader, the first package path that fits: patterns in the table's order,
    packages in the given order. (package, origin) pairs in; loader name → `Match` out."""
    listings = [(pkg, origin, sorted(pkg.files().items())) for pkg, origin in packages]
    found: dict[str, Match] = {}
    for loader in loaders:
        for pattern in loader.paths:
            hit = next(
                (
                    Match(loader, pkg, name, origin)
                    for pkg, origin, files in listings
                    for name, pf in files
                    if pf.kind != "dir" and fnmatchcase(name, pattern)
                ),
                None,
            )
            if hit is not None:
                found[loader.name] = hit
                break
    return found


# --------------------------------------------------------------------------- progress

ProgressKind = Literal["start", "advance", "done", "cached", "info"]


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    kind: ProgressKind
    task: str  # what is being worked on: a package name, a file name
    done: int = 0  # bytes so far (advance)
    total: int | None = None  # bytes expected, when known
    message: str = ""


Progress = Callable[[ProgressEvent], None]


def _quiet(_: ProgressEvent) -> None:
    pass


# --------------------------------------------------------------------------- versions


def _order(c: str) -> int:
    if c == "~":
        return -1
    if c.isalpha():
        return ord(c)
    return ord(c) + 256


def _cmp_part(a: str, b: str) -> int:
    """dpkg's verrevcmp: alternating non-digit and digit runs (Debian Policy §5.6.12)."""
    i = j = 0
    while i < len(a) or j < len(b):
        first_diff = 0
        while (i < len(a) and not a[i].isdigit()) or (j < len(b) and not b[j].isdigit()):
            ac = _order(a[i]) if i < len(a) and not a[i].isdigit() else 0
            bc = _order(b[j]) if j < len(b) and not b[j].isdigit() else 0
            if ac != bc:
                return -1 if ac < bc else 1
            i += 1
            j += 1
        while i < len(a) and a[i] == "0":
            i += 1
        while j < len(b) and b[j] == "0":
            j += 1
        while i < len(a) and a[i].isdigit() and j < len(b) and b[j].isdigit():
            if not first_diff:
                first_diff = ord(a[i]) - ord(b[j])
            i += 1
            j += 1
        if i < len(a) and a[i].isdigit():
            return 1
        if j < len(b) and b[j].isdigit():
            return -1
        if first_diff:
            return -1 if first_diff < 0 else 1
    return 0


def _split_version(v: str) -> tuple[int, str, str]:
    epoch, sep, rest = v.partition(":")
    if not sep:
        epoch, rest = "0", v
    upstream, sep, revision = rest.rpartition("-")
    if not sep:
        upstream, revision = rest, ""
    try:
        return int(epoch), upstream, revision
    except ValueError:
        raise AssetError(f"bad Debian version {v!r}") from None


def compare_versions(a: str, b: str) -> int:
    """Compare two Debian versions like ``dpkg --compare-versions``: -1, 0 or 1."""
    ea, ua, ra = _split_version(a)
    eb, ub, rb = _split_version(b)
    if ea != eb:
        return -1 if ea < eb else 1
    return _cmp_part(ua, ub) or _cmp_part(ra, rb)


# --------------------------------------------------------------------------- downloads


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """A package as an index (apt-cache or a mirror's Packages file) describes it."""

    package: str
    version: str
    arch: str
    filename: str  # pool path
    size: int
    sha256: str

    @property
    def deb_name(self) -> str:
        """The file name apt-get download gives it (epoch colon as %3a)."""
        return f"{self.package}_{self.version.replace(':', '%3a')}_{self.arch}.deb"

    @classmethod
    def from_fields(cls, f: Mapping[str, str]) -> IndexEntry:
        try:
            return cls(
                f["Package"],
                f["Version"],
                f.get("Architecture", ""),
                f.get("Filename", ""),
                int(f.get("Size", "0")),
                f.get("SHA256", "").lower(),
            )
        except (KeyError, ValueError) as exc:
            raise AssetError(f"package index stanza without a usable {exc}") from None


def _stanzas(text: str) -> list[dict[str, str]]:
    return [parse_control(chunk) for chunk in re.split(r"\n\s*\n", text) if chunk.strip()]


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def _cached(cache: Path, entry: IndexEntry) -> Path | None:
    path = cache / entry.deb_name
    if path.is_file() and (not entry.size or path.stat().st_size == entry.size):
        if not entry.sha256 or _sha256_file(path) == entry.sha256:
            return path
    return None


def _apt_show(packages: Sequence[str], apt_cache: str) -> dict[str, IndexEntry]:
    """apt's candidate for each package (one ``apt-cache show`` run: it is slow to start)."""
    proc = subprocess.run(
        [apt_cache, "show", "--no-all-versions", *packages],
        capture_output=True,
        text=True,
        env={**os.environ, "LC_ALL": "C"},
        check=False,
    )
    found: dict[str, IndexEntry] = {}
    for fields in _stanzas(proc.stdout):
        if "Package" in fields and "Version" in fields:
            found.setdefault(fields["Package"], IndexEntry.from_fields(fields))
    lacking = [p for p in packages if p not in found]
    if lacking:
        why = proc.stderr.strip().splitlines()[-1:] or ["no candidate"]
        raise AssetError(
            f"apt knows no package {', '.join(lacking)} ({why[0]}); "
            "run 'apt-get update', or pass --mirror"
        )
    return found


def _host_arch() -> str | None:
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        return None
    proc = subprocess.run([dpkg, "--print-architecture"], capture_output=True, text=True)
    return proc.stdout.strip() or None


def download_apt(
    packages: Iterable[str], cache: Path, *, progress: Progress = _quiet
) -> list[PackageSource]:
    """Each package's apt candidate as a .deb in ``cache``: reused when its SHA-256 matches
    apt's record, else fetched with ``apt-get download`` (nothing is installed)."""
    apt_get, apt_cache = shutil.which("apt-get"), shutil.which("apt-cache")
    if apt_get is None or apt_cache is None:
        raise AssetError("apt-get is not available here: pass --mirror URL")
    cache.mkdir(parents=True, exist_ok=True)
    names = list(packages)
    entries = _apt_show(names, apt_cache)
    found: dict[str, PackageSource] = {}
    for name in names:
        hit = _cached(cache, entries[name])
        if hit is not None:
            progress(
                ProgressEvent("cached", name, entries[name].size, entries[name].size, hit.name)
            )
            found[name] = PackageSource(hit, "cache", name)
    todo = [entries[n] for n in names if n not in found]
    if todo:
        for e in todo:
            progress(ProgressEvent("start", e.package, 0, e.size, f"{e.package} {e.version}"))
        # one apt-get run for all of them: apt is slow to start and downloads in parallel
        with tempfile.TemporaryDirectory(prefix=".partial-", dir=cache) as tmp:
            argv = [apt_get, "download", "-q", *(f"{e.package}={e.version}" for e in todo)]
            if os.geteuid() == 0:
                argv[1:1] = ["-o", "APT::Sandbox::User=root"]  # no "_apt cannot write" warning
            proc = subprocess.run(
                argv,
                cwd=tmp,
                capture_output=True,
                text=True,
                env={**os.environ, "LC_ALL": "C"},
                check=False,
            )
            if proc.returncode != 0:
                tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
                raise AssetError(f"apt-get download failed: {' | '.join(tail)}")
            got = {_sha256_file(p): p for p in Path(tmp).glob("*.deb")}
            for e in todo:
                if e.sha256:
                    path = got.get(e.sha256)
                    if path is None:
                        raise AssetError(
                            f"apt-get download {e.package}: no file matches apt's SHA-256 "
                            f"{e.sha256}"
                        )
                else:  # no hash from apt (unusual): go by apt's file name
                    path = Path(tmp) / e.deb_name
                    if not path.is_file():
                        raise AssetError(f"apt-get download gave no {e.deb_name}")
                final = cache / e.deb_name
                os.replace(path, final)
                progress(ProgressEvent("done", e.package, e.size, e.size, final.name))
                found[e.package] = PackageSource(final, "apt", e.package)
    return [found[n] for n in names]


def _mirror_url(mirror: str, *parts: str) -> str:
    return mirror.rstrip("/") + "/" + "/".join(p.strip("/") for p in parts)


def _fetch_url(url: str, dest: Path, *, task: str, total: int | None, progress: Progress) -> None:
    """Stream a URL to ``dest`` through a temporary file (http, https or file URLs)."""
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme not in ("http", "https", "file"):
        raise ConfigError(f"mirror URL scheme {scheme!r} is not http, https or file")
    tmp = dest.with_name(f".{dest.name}.part")
    try:
        with urllib.request.urlopen(url, timeout=_MIRROR_TIMEOUT) as resp, tmp.open("wb") as f:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit():
                total = int(length)
            progress(ProgressEvent("start", task, 0, total, url))
            done = 0
            while chunk := resp.read(_CHUNK):
                f.write(chunk)
                done += len(chunk)
                progress(ProgressEvent("advance", task, done, total))
        os.replace(tmp, dest)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise AssetError(f"cannot download {url}: {reason}") from None


def _mirror_index(
    mirror: str, suite: str, arch: str, cache: Path, refresh: bool, progress: Progress
) -> dict[str, IndexEntry]:
    host = re.sub(r"[^A-Za-z0-9._-]+", "_", urllib.parse.urlsplit(mirror).netloc or "local")
    where = cache / "mirror" / host / suite / arch
    where.mkdir(parents=True, exist_ok=True)
    index = where / "Packages.xz"
    if refresh or not index.is_file():
        url = _mirror_url(mirror, "dists", suite, "main", f"binary-{arch}", "Packages.xz")
        _fetch_url(url, index, task="Packages.xz", total=None, progress=progress)
        progress(ProgressEvent("done", "Packages.xz", message=url))
    else:
        progress(ProgressEvent("cached", "Packages.xz", message=str(index)))
    try:
        text = lzma.decompress(index.read_bytes()).decode("utf-8", "replace")
    except lzma.LZMAError as exc:
        index.unlink(missing_ok=True)
        raise AssetError(f"mirror index {index} is corrupt ({exc}); removed, try again") from None
    best: dict[str, IndexEntry] = {}
    for fields in _stanzas(text):
        if "Package" not in fields or "Version" not in fields:
            continue
        e = IndexEntry.from_fields(fields)
        old = best.get(e.package)
        if old is None or compare_versions(e.version, old.version) > 0:
            best[e.package] = e
    return best


def download_mirror(
    packages: Iterable[str],
    cache: Path,
    mirror: str,
    *,
    suite: str = DEFAULT_SUITE,
    arch: str = "amd64",
    refresh: bool = False,
    progress: Progress = _quiet,
) -> list[PackageSource]:
    """Each package's newest version in ``MIRROR/dists/SUITE/main/binary-ARCH/Packages.xz``
    as a .deb in ``cache``, checked against the index's SHA256. The index is cached too
    (``refresh`` fetches it again)."""
    cache.mkdir(parents=True, exist_ok=True)
    index = _mirror_index(mirror, suite, arch, cache, refresh, progress)
    out: list[PackageSource] = []
    for name in packages:
        entry = index.get(name)
        if entry is None or not entry.filename:
            raise AssetError(f"mirror {mirror} ({suite}/main/{arch}) has no package {name!r}")
        hit = _cached(cache, entry)
        if hit is not None:
            progress(ProgressEvent("cached", name, entry.size, entry.size, hit.name))
            out.append(PackageSource(hit, "cache", name))
            continue
        final = cache / entry.deb_name
        url = _mirror_url(mirror, entry.filename)
        _fetch_url(url, final, task=name, total=entry.size, progress=progress)
        digest = _sha256_file(final)
        if entry.sha256 and digest != entry.sha256:
            final.unlink()
            raise AssetError(f"{url}: SHA-256 {digest} does not match the index's {entry.sha256}")
        progress(ProgressEvent("done", name, entry.size, entry.size, final.name))
        out.append(PackageSource(final, "mirror", name))
    return out


# --------------------------------------------------------------------------- install


@dataclass(frozen=True, slots=True)
class InstalledFile:
    """One file put into the root, as MANIFEST.json records it."""

    name: str
    size: int
    sha256: str
    package: str
    version: str
    source: str  # source package (deb) or source rpm
    arch: str
    member: str  # path inside the package
    package_file: str  # the .deb/.rpm it came from (file name)
    origin: str  # cache, apt, mirror or file
    firmware: str


@dataclass(frozen=True, slots=True)
class FetchResult:
    root: Path
    installed: tuple[InstalledFile, ...]
    missing: tuple[str, ...]  # optional loaders no package provided
    sources: tuple[PackageSource, ...] = field(default=())

    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST


def read_manifest(root: Path) -> dict[str, dict[str, object]]:
    """The ``files`` map of ROOT/MANIFEST.json ({} when absent or unreadable)."""
    try:
        doc = json.loads((Path(root) / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    files = doc.get("files") if isinstance(doc, dict) else None
    return dict(files) if isinstance(files, dict) else {}


def install_files(
    root: Path, matches: Mapping[str, Match], *, progress: Progress = _quiet
) -> list[InstalledFile]:
    """Read each matched member, check it, and put it into ``root`` atomically (temp file +
    rename); then merge the records into ROOT/MANIFEST.json (entries for files still present
    and not replaced are kept)."""
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    by_package: dict[int, list[Match]] = {}
    for m in matches.values():
        by_package.setdefault(id(m.package), []).append(m)
    contents: dict[str, bytes] = {}
    for group in by_package.values():
        data = group[0].package.read([m.member for m in group])
        for m in group:
            check_loader(m.loader, data[m.member])
            contents[m.loader.name] = data[m.member]
    installed: list[InstalledFile] = []
    for name, m in sorted(matches.items(), key=lambda kv: _order_of(kv[0])):
        blob = contents[name]
        write_atomic(root / name, blob, mode=0o644)
        rec = InstalledFile(
            name=name,
            size=len(blob),
            sha256=hashlib.sha256(blob).hexdigest(),
            package=m.package.name,
            version=m.package.version,
            source=m.package.source,
            arch=m.package.arch,
            member=m.member,
            package_file=m.package.path.name,
            origin=m.origin,
            firmware=m.loader.firmware,
        )
        installed.append(rec)
        progress(ProgressEvent("info", name, rec.size, rec.size, f"installed {root / name}"))
    files = {
        k: v for k, v in read_manifest(root).items() if k not in matches and (root / k).is_file()
    }
    files.update({r.name: {k: v for k, v in asdict(r).items() if k != "name"} for r in installed})
    doc = {
        "generator": "pxeforge assets fetch",
        "updated": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "files": dict(sorted(files.items())),
    }
    write_atomic(root / MANIFEST, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o644)
    return installed


def _order_of(name: str) -> int:
    for i, ld in enumerate(LOADERS):
        if ld.name == name:
            return i
    return len(LOADERS)


# --------------------------------------------------------------------------- the whole job


def fetch_assets(
    root: Path,
    cache: Path,
    *,
    files: Sequence[Path] = (),
    mirror: str | None = None,
    suite: str = DEFAULT_SUITE,
    arch: str = "amd64",
    refresh: bool = False,
    progress: Progress = _quiet,
) -> FetchResult:
    """Fill ``root`` with the boot loaders of `LOADERS`.

    With ``files`` (.deb/.rpm paths), only those packages are used and nothing is
    downloaded; every loader they provide is installed, and at least one must be. Otherwise
    the Debian packages are downloaded into ``cache/debs`` (``mirror`` when given or when apt
    is missing, else apt-get download) and every required loader must be found.
    """
    if arch not in SUPPORTED_ARCHES:
        raise ConfigError(f"--arch {arch}: only {', '.join(SUPPORTED_ARCHES)} is supported")
    sources: list[PackageSource]
    if files:
        sources = [PackageSource(Path(p), "file") for p in files]
    else:
        debs = cache / "debs"
        if mirror is None and shutil.which("apt-get") is not None:
            host = _host_arch()
            if host is not None and host != arch:
                raise ConfigError(
                    f"--arch {arch} differs from this host's {host}: pass --mirror to fetch it"
                )
            sources = download_apt(DEBIAN_PACKAGES, debs, progress=progress)
        elif mirror is not None:
            sources = download_mirror(
                DEBIAN_PACKAGES,
                debs,
                mirror,
                suite=suite,
                arch=arch,
                refresh=refresh,
                progress=progress,
            )
        else:
            raise ConfigError("apt-get is not available here: pass --mirror URL")
    packages = [(open_package(s.path), s.origin) for s in sources]
    matches = match_loaders(packages)
    wanted = {ld.name for ld in LOADERS}
    if files:
        if not matches:
            names = ", ".join(str(s.path) for s in sources)
            raise AssetError(f"none of {names} contains a boot loader pxeforge knows")
    else:
        lacking = [ld.name for ld in LOADERS if ld.required and ld.name not in matches]
        if lacking:
            raise AssetError(f"the downloaded packages lack {', '.join(lacking)}")
    installed = install_files(root, matches, progress=progress)
    missing = tuple(sorted(wanted - set(matches), key=_order_of))
    return FetchResult(Path(root), tuple(installed), missing, tuple(sources))
