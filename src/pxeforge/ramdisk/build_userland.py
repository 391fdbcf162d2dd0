"""The ramdisk's userland: busybox, a Python interpreter with a trimmed stdlib, qemu-img, and
exactly the shared libraries they load.

Theory of operation
-------------------
Input: the files of a handful of Debian packages (`ROOT_PACKAGES`, `QEMU_PACKAGES` and the
library packages apt says they depend on, see `pxeforge.ramdisk.build_debs`), as one *pool*
of paths. Output: a `Tree` in Debian's own layout (``/lib/x86_64-linux-gnu``, ``/usr/lib/…``),
so the stock dynamic loader finds everything in its built-in multiarch directories and no
``ld.so.cache`` is needed.

1. Programs: ``/bin/busybox`` (static), ``/usr/bin/python3.11`` (+ ``python3`` link) and
   ``/usr/bin/qemu-img`` when asked for.
2. The stdlib: ``/usr/lib/python3.11`` without what a provisioning agent never imports
   (`STDLIB_EXCLUDE`: tests, IDLE, tkinter, lib2to3, ensurepip, distutils, pydoc topics…) and
   without the extension modules of `EXTENSION_EXCLUDE` (curses, readline, sqlite, dbm, NIS,
   CJK codecs, test modules).
3. Libraries: from the programs and the kept extension modules, follow ELF ``PT_INTERP`` and
   ``DT_NEEDED`` (`pxeforge.ramdisk.build_elf`) through the pool — sonames are looked up in
   the ``DT_RUNPATH`` and the multiarch directories, symlink chains are kept as they are — until
   closed. `DLOPEN_EXTRAS` adds what glibc loads by name at run time (``libgcc_s.so.1`` for
   thread cancellation). An extension module whose libraries the pool lacks is dropped and
   reported; a program whose libraries are missing is an error.
4. Bytecode: the stdlib is compiled by *the image's own interpreter*, run on the build host
   through the image's dynamic loader (``ld-linux-x86-64.so.2 --library-path … python3.11``)
   with ``PYTHONHASHSEED=0``, into sourceless ``.pyc`` files beside the modules (the ``.py``
   files are dropped: smaller, and nothing compiles at boot under a slow emulator). Hash-based
   pycs (PEP 552) carry no timestamps, so the bytes depend only on the sources and the
   interpreter. When the image's interpreter cannot run here (another architecture), the
   host's runs instead if its bytecode magic number is the image's, else the sources stay.
   The same staged interpreter then imports a list of modules (`SMOKE_IMPORTS`) as a check.

Every choice made (dropped extensions, libraries, qemu-img's share of the bytes) goes into the
returned `UserlandInfo`, and from there into the build manifest.
"""

from __future__ import annotations

import importlib.util
import json
import os
import posixpath
import re
import subprocess
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Final

from pxeforge.errors import AssetError
from pxeforge.ramdisk.build_elf import EM_X86_64, ElfInfo, read_elf
from pxeforge.ramdisk.build_tree import Tree

__all__ = [
    "DLOPEN_EXTRAS",
    "EXTENSION_EXCLUDE",
    "LIBRARY_DIRS",
    "PYTHON",
    "QEMU_PACKAGES",
    "ROOT_PACKAGES",
    "SKIP_LIBRARIES",
    "SMOKE_IMPORTS",
    "STDLIB_EXCLUDE",
    "PoolFile",
    "StagedPython",
    "UserlandInfo",
    "build_userland",
    "compile_python",
    "elf_closure",
    "python_loader",
    "staged_python",
    "stdlib_path_kept",
]

PYTHON: Final = "python3.11"
STDLIB: Final = f"usr/lib/{PYTHON}"
ROOT_PACKAGES: Final = (
    "busybox-static",
    f"{PYTHON}-minimal",
    f"lib{PYTHON}-minimal",
    f"lib{PYTHON}-stdlib",
)
QEMU_PACKAGES: Final = ("qemu-utils",)
#: Libraries only the left-out extension modules need: never downloaded.
SKIP_LIBRARIES: Final = (
    "libcrypt1",  # _crypt (deprecated crypt module)
    "libdb5.3",  # _dbm
    "libncursesw6",  # _curses
    "libnsl2",  # nis
    "libreadline8",  # readline
    "libsqlite3-0",  # _sqlite3
    "libtinfo6",  # _curses, readline
    "libtirpc3",  # nis
)
#: Relative to the stdlib directory; a pattern matches a path or any of its parents.
STDLIB_EXCLUDE: Final = (
    "__phello__",
    "config-3.*",  # libpython.a and the build's Makefile
    "crypt.py",
    "curses",
    "distutils",
    "ensurepip",
    "idlelib",
    "lib2to3",
    "pydoc_data",
    "sqlite3",
    "tkinter",
    "turtle.py",
    "turtledemo",
    "unittest",
    "venv",
    "test",
    "*/test",
    "*/tests",
    "*/idle_test",
    "LICENSE.txt",
)
EXTENSION_EXCLUDE: Final = (
    "_codecs_cn.*",
    "_codecs_hk.*",
    "_codecs_iso2022.*",
    "_codecs_jp.*",
    "_codecs_kr.*",
    "_codecs_tw.*",
    "_crypt.*",
    "_ctypes_test.*",
    "_curses*",
    "_dbm.*",
    "_sqlite3.*",
    "_test*",
    "_xx*",
    "nis.*",
    "ossaudiodev.*",
    "readline.*",
    "xxlimited*",
)
#: Loaded with dlopen() by name, so no DT_NEEDED names them.
DLOPEN_EXTRAS: Final = ("libgcc_s.so.1",)
LIBRARY_DIRS: Final = (
    "lib/x86_64-linux-gnu",
    "usr/lib/x86_64-linux-gnu",
    "lib",
    "usr/lib",
)
#: What the agent relies on: imported by the staged interpreter after compiling.
SMOKE_IMPORTS: Final = (
    "asyncio",
    "base64",
    "bz2",
    "ctypes",
    "email.message",
    "fcntl",
    "hashlib",
    "http.client",
    "http.server",
    "json",
    "logging",
    "lzma",
    "mmap",
    "platform",
    "select",
    "shutil",
    "site",
    "socket",
    "ssl",
    "struct",
    "subprocess",
    "threading",
    "urllib.parse",
    "urllib.request",
    "uuid",
    "xml.etree.ElementTree",
    "zlib",
)
_DROP_PREFIXES: Final = (
    "usr/share/doc/",
    "usr/share/man/",
    "usr/share/info/",
    "usr/share/locale/",
    "usr/share/lintian/",
    "usr/share/bug/",
)
_MAGIC_RE: Final = re.compile(r"MAGIC_NUMBER\s*=\s*\((\d+)\)\.to_bytes\(2,\s*'little'\)")
_COMPILE_TIMEOUT: Final = 600.0

_COMPILE_SCRIPT: Final = """\
import json, py_compile, sys
jobs = json.load(sys.stdin)
failed = []
for src, cfile, dfile, mode in jobs:
    try:
        py_compile.compile(src, cfile=cfile, dfile=dfile, doraise=True,
                           invalidation_mode=py_compile.PycInvalidationMode[mode])
    except py_compile.PyCompileError as exc:
        failed.append([dfile, str(exc.msg).strip().splitlines()[-1][:300]])
json.dump(failed, sys.stdout)
"""


@dataclass(frozen=True, slots=True)
class PoolFile:
    """A path of one of the packages: a file (with data), a symlink or a directory."""

    package: str
    kind: str  # "file", "symlink", "dir", "hardlink"
    mode: int
    data: bytes = b""
    link: str = ""


@dataclass
class UserlandInfo:
    """What went in, what was left out, and why."""

    python_version: str = ""
    pyc: str = ""  # "image-python", "host-python" or "none: <why>"
    extensions: list[str] = field(default_factory=list)
    dropped_extensions: dict[str, str] = field(default_factory=dict)  # name → missing soname
    libraries: list[str] = field(default_factory=list)  # image paths of the libraries
    qemu_img: bool = False
    qemu_img_bytes: int = 0  # qemu-img and the libraries only it needs
    stdlib_files: int = 0
    loader: str = ""  # the image path of the dynamic loader python3.11 names
    magic: int = 0  # the image's bytecode magic number
    entries: int = 0
    compile_failures: list[list[str]] = field(default_factory=list)
    bytes: int = 0

    def as_dict(self) -> dict[str, object]:
        return {
            "python_version": self.python_version,
            "pyc": self.pyc,
            "extensions": self.extensions,
            "dropped_extensions": self.dropped_extensions,
            "libraries": self.libraries,
            "qemu_img": self.qemu_img,
            "qemu_img_bytes": self.qemu_img_bytes,
            "stdlib_files": self.stdlib_files,
            "loader": self.loader,
            "magic": self.magic,
            "entries": self.entries,
            "compile_failures": self.compile_failures,
            "bytes": self.bytes,
        }


def keep_pool_path(path: str) -> bool:
    """Whether a package path is worth holding in memory while the userland is chosen."""
    return not path.startswith(_DROP_PREFIXES)


def stdlib_path_kept(rel: str) -> bool:
    """Whether ``rel`` (relative to the stdlib directory) goes into the image."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        head = "/".join(parts[:i])
        if any(fnmatchcase(head, pat) for pat in STDLIB_EXCLUDE):
            return False
    if len(parts) >= 2 and parts[0] == "lib-dynload":
        return not any(fnmatchcase(parts[-1], pat) for pat in EXTENSION_EXCLUDE)
    return "__pycache__" not in parts


# --------------------------------------------------------------------------- libraries


def _chain(pool: Mapping[str, PoolFile], path: str) -> list[str]:
    """``path`` and every link it leads through, ending with the real file (`AssetError` if
    it dangles, loops or ends elsewhere than at a file)."""
    chain = []
    for _ in range(40):
        pf = pool.get(path)
        if pf is None:
            raise AssetError(f"{path} is not in the downloaded packages")
        chain.append(path)
        if pf.kind == "file":
            return chain
        if pf.kind == "symlink":
            base = "" if pf.link.startswith("/") else posixpath.dirname(path)
            path = posixpath.normpath(posixpath.join("/", base, pf.link)).lstrip("/")
        elif pf.kind == "hardlink":
            path = pf.link
        else:
            raise AssetError(f"{path} is a {pf.kind}, not a file")
    raise AssetError(f"too many links resolving {chain[0]}")


def _copy(pool: Mapping[str, PoolFile], tree: Tree, path: str) -> None:
    """Put a pool path into the tree as it is: a file, a symlink, or a hard link's data."""
    pf = pool[path]
    if pf.kind == "symlink":
        tree.add_symlink(path, pf.link)
    elif pf.kind == "file":
        tree.add_file(path, pf.data, pf.mode)
    elif pf.kind == "hardlink":
        tree.add_file(path, pool[_chain(pool, path)[-1]].data, pf.mode)
    elif pf.kind == "dir":
        tree.add_dir(path, pf.mode)


def _find_soname(pool: Mapping[str, PoolFile], soname: str, runpath: Iterable[str]) -> str | None:
    dirs = [p.lstrip("/") for p in runpath if "$" not in p] + list(LIBRARY_DIRS)
    for d in dirs:
        candidate = f"{d}/{soname}" if d else soname
        if candidate in pool:
            return candidate
    return None


def _elf(pool: Mapping[str, PoolFile], path: str, cache: dict[str, ElfInfo]) -> ElfInfo:
    if path not in cache:
        info = read_elf(pool[path].data, source=path)
        if info.machine != EM_X86_64:
            raise AssetError(f"{path} is not an x86-64 binary (ELF machine {info.machine})")
        cache[path] = info
    return cache[path]


def elf_closure(
    pool: Mapping[str, PoolFile],
    roots: Iterable[str],
    *,
    cache: dict[str, ElfInfo] | None = None,
) -> tuple[set[str], dict[str, str]]:
    """(pool paths needed to run ``roots`` — the roots, the loader, libraries and their
    symlinks —, {root: the first soname the pool lacks}). Roots with a missing library are
    left out of the first set, together with what only they would need."""
    memo = cache if cache is not None else {}
    needed: set[str] = set()
    missing: dict[str, str] = {}
    for root in roots:
        got: set[str] = set()
        todo = [root]
        problem = ""
        while todo and not problem:
            path = todo.pop()
            if path in got:
                continue
            chain = _chain(pool, path)
            got.update(chain)
            real = chain[-1]
            info = _elf(pool, real, memo)
            if info.interp:
                todo.append(info.interp.lstrip("/"))
            for soname in info.needed:
                hit = _find_soname(pool, soname, info.runpath)
                if hit is None:
                    problem = soname
                    break
                todo.append(hit)
        if problem:
            missing[root] = problem
        else:
            needed |= got
    return needed, missing


# --------------------------------------------------------------------------- bytecode


@dataclass(frozen=True, slots=True)
class StagedPython:
    """How to run the image's interpreter from a staged tree on this host."""

    argv: tuple[str, ...]
    env: Mapping[str, str]
    kind: str  # "image-python" or "host-python"

    def run(self, args: list[str], stdin: str = "") -> subprocess.CompletedProcess[str]:
        try:
            return subprocess.run(
                [*self.argv, *args],
                input=stdin,
                capture_output=True,
                text=True,
                env=dict(self.env),
                timeout=_COMPILE_TIMEOUT,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise AssetError(f"cannot run the staged Python ({self.argv[0]}): {exc}") from None


def _image_magic(tree: Tree) -> int | None:
    node = tree.get(f"{STDLIB}/importlib/_bootstrap_external.py")
    if node is None:
        return None
    match = _MAGIC_RE.search(node.data.decode("utf-8", "replace"))
    return int(match.group(1)) if match else None


def python_loader(tree: Tree) -> str | None:
    """The tree path of the dynamic loader the image's Python names in PT_INTERP."""
    python = tree.get(f"usr/bin/{PYTHON}")
    if python is None:
        return None
    interp = read_elf(python.data, source=PYTHON).interp
    return tree.resolve(interp) if interp else None


def staged_python(stage: Path, loader: str | None, magic: int | None) -> StagedPython | str:
    """The image's Python staged below ``stage``, runnable here through its own dynamic
    ``loader`` (a path in the image); else the host's when its bytecode ``magic`` is the
    image's; else a string saying why neither can compile for the image."""
    env = {"PYTHONHOME": str(stage / "usr"), "PYTHONHASHSEED": "0", "LC_ALL": "C"}
    env["PATH"] = os.environ.get("PATH", "/usr/bin:/bin")
    why = "the image's Python has no dynamic loader in the image"
    if loader is not None:
        libs = ":".join(str(stage / d) for d in LIBRARY_DIRS[:2])
        argv = (str(stage / loader), "--library-path", libs, str(stage / "usr/bin" / PYTHON))
        probe = StagedPython(argv, env, "image-python")
        try:
            proc = probe.run(["-S", "-c", "import sys; print(sys.version)"])
            if proc.returncode == 0:
                return probe
            why = f"the image's Python does not run here: {proc.stderr.strip()[-200:]}"
        except AssetError as exc:
            why = str(exc)
    host_magic = int.from_bytes(importlib.util.MAGIC_NUMBER[:2], "little")
    if magic is not None and magic == host_magic:
        return StagedPython((sys.executable, "-I"), env, "host-python")
    return f"{why}; the host's Python has bytecode magic {host_magic}, the image's {magic}"


def compile_python(
    py: StagedPython, stage: Path, tree: Tree, files: Iterable[str], *, sourceless: bool
) -> list[list[str]]:
    """Compile ``files`` (tree paths of .py files, staged below ``stage``) and put the pycs in
    the tree: sourceless ``x.pyc`` replacing ``x.py``, or ``__pycache__/x.cpython-311.pyc``
    with a checked hash beside it. Returns [[path, error]] for files that do not compile."""
    jobs = []
    targets: dict[str, str] = {}
    tag = "cpython-" + PYTHON.removeprefix("python").replace(".", "")
    for path in sorted(files):
        if sourceless:
            cpath = path[:-3] + ".pyc"
            mode = "UNCHECKED_HASH"
        else:
            d, base = posixpath.split(path)
            cpath = posixpath.join(d, "__pycache__", f"{base[:-3]}.{tag}.pyc")
            mode = "CHECKED_HASH"
        targets[path] = cpath
        jobs.append([str(stage / path), str(stage / cpath), "/" + path, mode])
    if not jobs:
        return []
    flags = ["-s", "-S", "-B"] if py.kind == "image-python" else ["-B"]
    proc = py.run([*flags, "-c", _COMPILE_SCRIPT], stdin=json.dumps(jobs))
    if proc.returncode != 0:
        raise AssetError(f"compiling the stdlib failed: {proc.stderr.strip()[-500:]}")
    failed: list[list[str]] = json.loads(proc.stdout or "[]")
    bad = {f[0].lstrip("/") for f in failed}
    for path, cpath in targets.items():
        if path in bad:
            continue
        node = tree.get(path)
        assert node is not None
        tree.add_file(cpath, (stage / cpath).read_bytes(), 0o644)
        if sourceless:
            tree.remove(path)
            (stage / path).unlink()
    return failed


def smoke_test(py: StagedPython, modules: Iterable[str] = SMOKE_IMPORTS) -> None:
    """Import ``modules`` with the staged interpreter; `AssetError` names what fails."""
    script = (
        "import importlib, sys\n"
        "bad = []\n"
        f"for m in {sorted(modules)!r}:\n"
        "    try: importlib.import_module(m)\n"
        "    except Exception as exc: bad.append(f'{m}: {exc!r}')\n"
        "print('\\n'.join(bad)); sys.exit(1 if bad else 0)\n"
    )
    flags = ["-s", "-B"] if py.kind == "image-python" else ["-B"]
    proc = py.run([*flags, "-c", script])
    if proc.returncode != 0:
        raise AssetError(
            "the image's Python cannot import: " + (proc.stdout or proc.stderr).strip()[-800:]
        )


# --------------------------------------------------------------------------- assembly


def build_userland(
    pool: Mapping[str, PoolFile],
    versions: Mapping[str, str],
    stage: Path,
    *,
    qemu_img: bool,
) -> tuple[Tree, UserlandInfo]:
    """The userland tree from the package pool; ``stage`` is an empty scratch directory that
    ends up holding the tree as staged (the build later runs its Python from there)."""
    info = UserlandInfo(python_version=versions.get(f"{PYTHON}-minimal", ""), qemu_img=qemu_img)
    tree = Tree()
    for d in ("bin", "sbin", "usr/bin", "usr/sbin", "lib", "usr/lib/python3/dist-packages"):
        tree.add_dir(d)
    if "bin/busybox" not in pool:
        raise AssetError("busybox-static has no bin/busybox")
    busybox = pool["bin/busybox"]
    if read_elf(busybox.data, source="bin/busybox").is_dynamic:
        raise AssetError("bin/busybox is dynamically linked; the ramdisk wants busybox-static")
    tree.add_file("bin/busybox", busybox.data, 0o755)
    tree.add_symlink("bin/sh", "busybox")

    python = f"usr/bin/{PYTHON}"
    if python not in pool:
        raise AssetError(f"{PYTHON}-minimal has no {python}")
    tree.add_file(python, pool[python].data, 0o755)
    tree.add_symlink("usr/bin/python3", PYTHON)

    prefix = STDLIB + "/"
    stdlib = sorted(p for p in pool if p.startswith(prefix) and stdlib_path_kept(p[len(prefix) :]))
    extensions = [p for p in stdlib if p.startswith(f"{prefix}lib-dynload/") and p.endswith(".so")]
    programs = [python] + (["usr/bin/qemu-img"] if qemu_img else [])
    for prog in programs[1:]:
        if prog not in pool:
            raise AssetError(f"qemu-utils has no {prog}")
        tree.add_file(prog, pool[prog].data, 0o755)

    memo: dict[str, ElfInfo] = {}
    extras = [p for p in (_find_soname(pool, s, ()) for s in DLOPEN_EXTRAS) if p]
    needed, missing = elf_closure(pool, [*programs, *extensions, *extras], cache=memo)
    for prog in programs:
        if prog in missing:
            raise AssetError(f"{prog} needs {missing[prog]}, which no downloaded package provides")
    info.dropped_extensions = {
        posixpath.basename(p): soname for p, soname in sorted(missing.items())
    }
    if qemu_img:
        without, _ = elf_closure(pool, [python, *extensions, *extras], cache=memo)
        only_qemu = needed - without
        info.qemu_img_bytes = sum(len(pool[p].data) for p in only_qemu if pool[p].kind == "file")

    for path in stdlib:
        if path not in missing:
            _copy(pool, tree, path)
    for path in sorted(needed):
        if not path.startswith(prefix) and path not in programs:
            _copy(pool, tree, path)
    dangling = [p for p in tree if tree.nodes[p].kind == "symlink" and tree.resolve(p) is None]
    for path in dangling:  # e.g. sitecustomize.py -> /etc/python3.11/sitecustomize.py
        tree.remove(path)
    info.extensions = sorted(
        posixpath.basename(p) for p in extensions if p not in missing and p in tree
    )
    info.libraries = sorted(
        p for p in needed if not p.startswith(prefix) and p not in programs and p in tree
    )

    tree.write(stage)
    info.loader = python_loader(tree) or ""
    info.magic = _image_magic(tree) or 0
    py = staged_python(stage, info.loader or None, info.magic or None)
    sources = [p for p in tree if p.startswith(prefix) and p.endswith(".py")]
    info.stdlib_files = len(sources)
    if isinstance(py, str):
        info.pyc = f"none: {py}"
    else:
        info.pyc = py.kind
        info.compile_failures = compile_python(py, stage, tree, sources, sourceless=True)
        if py.kind == "image-python":  # the host's Python would import its own stdlib
            smoke_test(py)
    info.bytes = tree.size()
    info.entries = len(tree)
    return tree, info
