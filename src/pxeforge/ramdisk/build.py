"""``pxeforge ramdisk build``: the deploy kernel and initramfs, with the agent inside.

Theory of operation
-------------------
Everything comes from Debian packages the build downloads itself (``apt-get download`` into
``CACHE/debs``, nothing installed) and from the installed ``pxeforge.agent`` package:

    apt lists ──▶ package set ──▶ CACHE/debs/*.deb
        kernel .deb  ──(build_kernel)──▶ vmlinuz + modules part
        userland .debs ──(build_userland)──▶ busybox, Python, libraries, qemu-img part
        pxeforge.agent + /init ──(build_init)──▶ agent part
    parts ──(newc, sorted, mtime 0)──▶ compressed one by one ──▶ concatenated initramfs

The initramfs is three archives back to back, each compressed on its own — the kernel's
``unpack_to_rootfs`` (init/initramfs.c) unpacks one after the other into the same rootfs:

    0  modules   /lib/modules/<release>/…, modules.dep, /etc/pxeforge/modules
    1  userland  /bin/busybox, /usr/bin/python3.11, /usr/lib/python3.11, libraries, qemu-img
    2  agent     /init, /etc, /dev/console, the pxeforge.agent package, /etc/pxeforge/ramdisk.json

so the two big parts are compressed once per package set and cached
(``CACHE/ramdisk/blobs``), and a warm build only packs and compresses the small agent part
and concatenates. ``pxeforge ramdisk inject`` edits the last archive: the agent's.

Caching: each part lives in ``CACHE/ramdisk/<part>-<key>/`` where the key hashes everything
the part is made of (the .debs' SHA-256, the module list, the build format `FORMAT`, the
options), written to a temporary directory and renamed into place, so a crashed or concurrent
build never leaves half a part. The userland part keeps its staged tree: the agent's
bytecode is compiled by the image's own interpreter run from there.

Reproducibility: archives are sorted, owned by 0:0, mtime 0, inodes numbered in order;
bytecode is hash-based and compiled with ``PYTHONHASHSEED=0``; compressors are deterministic
(zstd single-threaded; gzip with mtime 0; xz). The manifest lists versions and hashes, never
times or host paths. Identical inputs give identical files.

Targets (issue 4): at most `SIZE_BUDGET` for kernel + initramfs, 3 minutes cold, seconds
warm. `BuildResult` carries the measured sizes and times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from pxeforge import __version__
from pxeforge.assets.deb import DebPackage
from pxeforge.assets.fetch import Progress, ProgressEvent, download_apt
from pxeforge.errors import AssetError, ConfigError
from pxeforge.fsutil import write_atomic
from pxeforge.ramdisk.build_debs import apt_depends, apt_sections, iter_members, library_packages
from pxeforge.ramdisk.build_init import (
    INIT,
    LAB_HOOK,
    LAB_HOOK_PATH,
    SITE_PACKAGES,
    UDHCPC_SCRIPT,
    AgentSource,
    etc_files,
    find_agent,
    package_init,
)
from pxeforge.ramdisk.build_kernel import MODULES, kernel_part, resolve_kernel_package
from pxeforge.ramdisk.build_tree import Tree
from pxeforge.ramdisk.build_userland import (
    EXTENSION_EXCLUDE,
    PYTHON,
    QEMU_PACKAGES,
    ROOT_PACKAGES,
    SKIP_LIBRARIES,
    STDLIB_EXCLUDE,
    PoolFile,
    build_userland,
    compile_python,
    keep_pool_path,
    staged_python,
)
from pxeforge.ramdisk.compress import Compression, compress

__all__ = [
    "COMPRESSIONS",
    "DEFAULT_LEVELS",
    "DOWNLOAD_PREFIX",
    "FORMAT",
    "INITRAMFS_NAME",
    "KERNEL_NAME",
    "MANIFEST_NAME",
    "SIZE_BUDGET",
    "SUPPORTED_ARCHES",
    "BuildConfig",
    "BuildResult",
    "build_ramdisk",
]

FORMAT: Final = 2  # bump when the image layout changes: part of every cache key
KERNEL_NAME: Final = "pxeforge-agent.kernel"
INITRAMFS_NAME: Final = "pxeforge-agent.initramfs"
MANIFEST_NAME: Final = "pxeforge-agent.manifest.json"
SIZE_BUDGET: Final = 60 << 20  # kernel + initramfs, issue 4
SUPPORTED_ARCHES: Final = ("amd64",)
COMPRESSIONS: Final = (Compression.ZSTD, Compression.XZ, Compression.GZIP)
DEFAULT_LEVELS: Final[Mapping[Compression, int]] = {
    Compression.ZSTD: 10,  # 19 saves ~12 % for 12x the time (measured on the userland part)
    Compression.XZ: 6,
    Compression.GZIP: 9,
}
_PARTS: Final = ("modules", "userland", "agent")
#: Progress events of package downloads have tasks "download <package>".
DOWNLOAD_PREFIX: Final = "download "


def _quiet(_: ProgressEvent) -> None:
    pass


@dataclass(frozen=True, slots=True)
class BuildConfig:
    """What to build and where; every build default lives here."""

    out: Path
    cache: Path
    arch: str = "amd64"
    compression: Compression = Compression.ZSTD
    level: int | None = None  # default: DEFAULT_LEVELS[compression]
    qemu_img: bool = True
    modules: tuple[str, ...] = MODULES
    kernel_package: str | None = None  # default: the package behind linux-image-amd64
    rebuild: bool = False  # rebuild the cached parts (downloads are reused)
    agent: AgentSource | None = None  # default: find_agent()

    def __post_init__(self) -> None:
        if self.arch not in SUPPORTED_ARCHES:
            raise ConfigError(
                f"--arch {self.arch}: only {', '.join(SUPPORTED_ARCHES)} is supported"
            )
        if self.compression not in COMPRESSIONS:
            raise ConfigError(
                f"--compress {self.compression.value}: choose "
                + ", ".join(c.value for c in COMPRESSIONS)
            )

    @property
    def effective_level(self) -> int:
        return self.level if self.level is not None else DEFAULT_LEVELS[self.compression]


@dataclass(frozen=True, slots=True)
class BuildResult:
    kernel: Path
    initramfs: Path
    manifest: Path
    kernel_size: int
    initramfs_size: int
    uncompressed_size: int
    seconds: float
    steps: Mapping[str, float]  # step → seconds
    cached: tuple[str, ...]  # parts taken from the cache
    agent: str  # "package" or "placeholder"
    data: Mapping[str, Any] = field(repr=False)  # the manifest

    @property
    def total_size(self) -> int:
        return self.kernel_size + self.initramfs_size

    @property
    def within_budget(self) -> bool:
        return self.total_size <= SIZE_BUDGET


@dataclass(frozen=True, slots=True)
class _Deb:
    name: str
    version: str
    arch: str
    path: Path
    sha256: str


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _mib(n: int) -> str:
    return f"{n / (1 << 20):.1f} MiB"


def _key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:20]


class _Part:
    """A cached part directory: filled in a temporary sibling, renamed into place."""

    def __init__(self, root: Path, name: str, key: str) -> None:
        self.path = root / f"{name}-{key}"
        self.name = name

    def ready(self, *files: str) -> bool:
        return all((self.path / f).exists() for f in ("info.json", *files))

    def build(self, fill: Callable[[Path], None]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", dir=self.path.parent))
        try:
            fill(tmp)
            old = None
            if self.path.exists():  # --rebuild: move the old one away first
                old = self.path.with_name(f".{self.path.name}.old-{os.getpid()}")
                os.rename(self.path, old)
            try:
                os.rename(tmp, self.path)
            except OSError:
                if not self.ready():  # a concurrent build won the race: use its part
                    raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)

    def info(self) -> dict[str, Any]:
        data = json.loads((self.path / "info.json").read_text())
        assert isinstance(data, dict)
        return data


class _Steps:
    """Progress reporting and step timing."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.times: dict[str, float] = {}
        self._t0 = 0.0

    def start(self, task: str, message: str) -> None:
        self._t0 = time.monotonic()
        self.progress(ProgressEvent("start", task, message=message))

    def done(self, task: str, message: str = "", cached: bool = False) -> None:
        self.times[task] = round(time.monotonic() - self._t0, 2)
        self.progress(ProgressEvent("cached" if cached else "done", task, 1, 1, message))


def _packages(config: BuildConfig, steps: _Steps) -> tuple[str, list[str]]:
    """(the kernel package, the userland packages)."""
    steps.start("packages", "choosing packages (apt-cache)")
    kernel = config.kernel_package
    if kernel is None:
        try:
            kernel = resolve_kernel_package()
        except AssetError:
            cached = sorted((config.cache / "debs").glob("linux-image-*-amd64_*.deb"))
            if not cached:
                raise
            kernel = cached[-1].name.split("_", 1)[0]
    roots = [*ROOT_PACKAGES, *(QEMU_PACKAGES if config.qemu_img else ())]
    graph = apt_depends(roots)
    userland = library_packages(roots, graph, apt_sections(graph), SKIP_LIBRARIES)
    steps.done("packages", f"{kernel} and {len(userland)} userland packages")
    return kernel, userland


def _open_debs(paths: Sequence[Path]) -> list[_Deb]:
    out = []
    for path in paths:
        deb = DebPackage.open(path)
        out.append(_Deb(deb.name, deb.version, deb.arch, path, _sha256(path)))
    return out


def _kernel(config: BuildConfig, deb: _Deb, steps: _Steps) -> tuple[_Part, bool]:
    modules = sorted(config.modules)
    part = _Part(config.cache / "ramdisk", "modules", _key(FORMAT, deb.sha256, modules))
    if part.ready("vmlinuz", "part.cpio") and not config.rebuild:
        steps.start("modules", "")
        steps.done("modules", f"{deb.name} {deb.version}", cached=True)
        return part, True
    steps.start("modules", f"kernel and modules from {deb.path.name}")

    def fill(tmp: Path) -> None:
        vmlinuz, tree, info = kernel_part(deb.path, modules)
        info.package, info.version = deb.name, deb.version
        (tmp / "vmlinuz").write_bytes(vmlinuz)
        (tmp / "part.cpio").write_bytes(tree.archive())
        doc = {**info.as_dict(), "entries": len(tree)}
        (tmp / "info.json").write_text(json.dumps(doc, indent=1, sort_keys=True))

    part.build(fill)
    steps.done("modules", f"{len(part.info()['modules'])} modules")
    return part, False


def _userland(config: BuildConfig, debs: list[_Deb], steps: _Steps) -> tuple[_Part, bool]:
    key = _key(
        FORMAT,
        sorted(d.sha256 for d in debs),
        config.qemu_img,
        STDLIB_EXCLUDE,
        EXTENSION_EXCLUDE,
    )
    part = _Part(config.cache / "ramdisk", "userland", key)
    if part.ready("part.cpio", f"stage/usr/bin/{PYTHON}") and not config.rebuild:
        steps.start("userland", "")
        steps.done("userland", f"{len(debs)} packages", cached=True)
        return part, True
    steps.start("userland", f"busybox, {PYTHON}, libraries from {len(debs)} packages")

    def fill(tmp: Path) -> None:
        pool: dict[str, PoolFile] = {}
        for deb in sorted(debs, key=lambda d: d.name):
            for m in iter_members(deb.path, lambda pf: keep_pool_path(pf.path)):
                if keep_pool_path(m.file.path):
                    pf = PoolFile(deb.name, m.file.kind, m.file.mode, m.data, m.file.link)
                    if m.file.kind != "dir" or m.file.path not in pool:
                        pool[m.file.path] = pf
        versions = {d.name: d.version for d in debs}
        tree, info = build_userland(pool, versions, tmp / "stage", qemu_img=config.qemu_img)
        (tmp / "part.cpio").write_bytes(tree.archive())
        (tmp / "info.json").write_text(json.dumps(info.as_dict(), indent=1, sort_keys=True))

    part.build(fill)
    info = part.info()
    steps.done("userland", f"{info['stdlib_files']} stdlib modules, pyc by {info['pyc']}")
    return part, False


def _agent_tree(
    agent: AgentSource, userland: _Part, image_info: dict[str, Any], steps: _Steps
) -> tuple[Tree, list[list[str]]]:
    steps.start("agent", f"/init and the agent ({agent.kind})")
    tree = Tree()
    for d in ("dev", "proc", "sys", "run", "tmp", "root", "mnt", "var/log"):
        tree.add_dir(d, 0o1777 if d == "tmp" else 0o755)
    tree.add_device("dev/console", "chr", 5, 1)  # the kernel opens it before /init runs
    tree.add_file("init", INIT.encode(), 0o755)
    tree.add_file("etc/pxeforge/udhcpc.sh", UDHCPC_SCRIPT.encode(), 0o755)
    for path, text in etc_files().items():
        tree.add_file(path, text.encode())
    tree.add_file(LAB_HOOK_PATH, LAB_HOOK.encode())
    pkg = f"{SITE_PACKAGES}/pxeforge"
    tree.add_file(f"{pkg}/__init__.py", package_init(__version__).encode())
    for name, data in agent.files:
        tree.add_file(f"{pkg}/{name}", data)
    tree.add_file(
        "etc/pxeforge/ramdisk.json",
        (json.dumps(image_info, indent=1, sort_keys=True) + "\n").encode(),
    )
    failures: list[list[str]] = []
    uinfo = userland.info()
    py = staged_python(userland.path / "stage", uinfo["loader"] or None, uinfo["magic"] or None)
    sources = [p for p in tree if p.endswith(".py") and p.startswith(SITE_PACKAGES)]
    if not isinstance(py, str):
        with tempfile.TemporaryDirectory(prefix=".agent-", dir=userland.path.parent) as tmp:
            tree.write(Path(tmp))
            failures = compile_python(py, Path(tmp), tree, sources, sourceless=False)
    steps.done("agent", f"{len(agent.files)} agent files ({agent.kind})")
    return tree, failures


def _blob(config: BuildConfig, archive: bytes, name: str, steps: _Steps) -> bytes:
    """``archive`` compressed as configured; big parts are cached by content."""
    kind, level = config.compression, config.effective_level
    digest = hashlib.sha256(archive).hexdigest()
    path = config.cache / "ramdisk" / "blobs" / f"{digest}.{kind.value}-{level}"
    if name != "agent" and path.is_file() and not config.rebuild:
        return path.read_bytes()
    steps.start(f"compress {name}", f"{kind.value} -{level}: {name} ({_mib(len(archive))})")
    data = compress(archive, kind, level=level)
    if name != "agent":
        write_atomic(path, data, mode=0o644, make_parents=True)
    steps.done(f"compress {name}", f"{_mib(len(archive))} → {_mib(len(data))}")
    return data


def build_ramdisk(config: BuildConfig, progress: Progress = _quiet) -> BuildResult:
    """Build (or reuse from the cache) the kernel, initramfs and manifest in ``config.out``."""
    t0 = time.monotonic()
    steps = _Steps(progress)
    debs_dir = config.cache / "debs"
    kernel_pkg, userland_pkgs = _packages(config, steps)
    sources = download_apt(
        [kernel_pkg, *userland_pkgs],
        debs_dir,
        progress=lambda ev: progress(dataclasses.replace(ev, task=DOWNLOAD_PREFIX + ev.task)),
    )
    steps.start("verify", "reading package versions")
    debs = _open_debs([s.path for s in sources])
    steps.done("verify", f"{len(debs)} packages")
    kernel_deb, userland_debs = debs[0], debs[1:]

    modules, modules_cached = _kernel(config, kernel_deb, steps)
    userland, userland_cached = _userland(config, userland_debs, steps)
    kinfo, uinfo = modules.info(), userland.info()
    agent = config.agent if config.agent is not None else find_agent()
    packages = [
        {"name": d.name, "version": d.version, "arch": d.arch, "sha256": d.sha256}
        for d in sorted(debs, key=lambda d: d.name)
    ]
    image_info = {
        "format": FORMAT,
        "arch": config.arch,
        "pxeforge": __version__,
        "kernel": kinfo["release"],
        "packages": {p["name"]: p["version"] for p in packages},
        "agent": {"source": agent.kind, "sha256": agent.sha256},
    }
    agent_tree, agent_failures = _agent_tree(agent, userland, image_info, steps)

    archives = {
        "modules": (modules.path / "part.cpio").read_bytes(),
        "userland": (userland.path / "part.cpio").read_bytes(),
        "agent": agent_tree.archive(),
    }
    blobs = {name: _blob(config, archives[name], name, steps) for name in _PARTS}
    initramfs = b"".join(blobs[name] for name in _PARTS)
    vmlinuz = (modules.path / "vmlinuz").read_bytes()

    counts = {"modules": kinfo["entries"], "userland": uinfo["entries"], "agent": len(agent_tree)}
    steps.start("write", f"writing {config.out}")
    segments = []
    offset = 0
    for name in _PARTS:
        segments.append(
            {
                "name": name,
                "offset": offset,
                "size": len(blobs[name]),
                "uncompressed": len(archives[name]),
                "entries": counts[name],
                "sha256": hashlib.sha256(blobs[name]).hexdigest(),
            }
        )
        offset += len(blobs[name])
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "arch": config.arch,
        "pxeforge": __version__,
        "kernel": {
            "file": KERNEL_NAME,
            "size": len(vmlinuz),
            "sha256": hashlib.sha256(vmlinuz).hexdigest(),
            **kinfo,
        },
        "initramfs": {
            "file": INITRAMFS_NAME,
            "size": len(initramfs),
            "sha256": hashlib.sha256(initramfs).hexdigest(),
            "compression": config.compression.value,
            "level": config.effective_level,
            "uncompressed": sum(len(a) for a in archives.values()),
            "segments": segments,
        },
        "userland": uinfo,
        "agent": {
            "source": agent.kind,
            "sha256": agent.sha256,
            "files": [name for name, _ in agent.files],
            "compile_failures": agent_failures,
        },
        "packages": packages,
    }
    out = config.out
    write_atomic(out / KERNEL_NAME, vmlinuz, mode=0o644, make_parents=True)
    write_atomic(out / INITRAMFS_NAME, initramfs, mode=0o644, make_parents=True)
    text = json.dumps(manifest, indent=1, sort_keys=True) + "\n"
    write_atomic(out / MANIFEST_NAME, text.encode(), mode=0o644, make_parents=True)
    steps.done("write", str(out))
    cached = tuple(
        name for name, hit in (("modules", modules_cached), ("userland", userland_cached)) if hit
    )
    return BuildResult(
        kernel=out / KERNEL_NAME,
        initramfs=out / INITRAMFS_NAME,
        manifest=out / MANIFEST_NAME,
        kernel_size=len(vmlinuz),
        initramfs_size=len(initramfs),
        uncompressed_size=manifest["initramfs"]["uncompressed"],
        seconds=round(time.monotonic() - t0, 2),
        steps=dict(steps.times),
        cached=cached,
        agent=agent.kind,
        data=manifest,
    )
