"""Kernel modules for the ramdisk: metadata, dependency closure, a depmod-like modules.dep.

Theory of operation
-------------------
Debian's kernel package ships every module but no ``modules.dep`` (depmod runs in its
postinst), and busybox ``modprobe`` needs one. Each module carries what depmod needs in its
``.modinfo`` ELF section: NUL-separated ``key=value`` strings (include/linux/moduleparam.h
``MODULE_INFO``), among them ``name=``, ``depends=`` (comma-separated module names, computed
by modpost from the symbols the module uses), ``alias=`` (device patterns such as
``pci:v00008086d000010D3sv*…``) and ``softdep=`` (``pre: a b post: c``: modules that should be
loaded too though no symbol demands it, e.g. ``crc-t10dif`` wants a ``crct10dif`` provider).

`parse_modinfo` reads that section (of a ``.ko``, or of a ``.ko.xz``/``.ko.zst``/``.ko.gz``
once decompressed); `resolve` takes the wanted module names and returns the closure over
``depends`` (and the ``pre:`` soft dependencies that name a module or an alias of one) in a
load order where every module comes after what it needs — ties broken by name, so the order
is reproducible. `modules_dep` writes the file the way depmod does (kmod's
``tools/depmod.c``): one line per module, ``path: dep dep…`` with all transitive hard
dependencies, listed in *reverse* load order (modprobe loads from the end of the list), paths
relative to ``/lib/modules/<version>/``. `modules_alias` writes ``alias PATTERN NAME`` lines.

Module names use ``_`` where file names may use ``-`` (``crc-t10dif.ko`` is module
``crc_t10dif``), as the kernel and kmod normalise them.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Final

from pxeforge.errors import AssetError
from pxeforge.ramdisk.build_elf import read_section
from pxeforge.ramdisk.compress import Compression, decompress, detect

__all__ = [
    "MODULE_SUFFIXES",
    "ModInfo",
    "module_name",
    "modules_alias",
    "modules_dep",
    "parse_modinfo",
    "plain_module",
    "resolve",
]

#: File suffixes of kernel modules: plain, or compressed by kmod's supported codecs.
MODULE_SUFFIXES: Final = (".ko", ".ko.xz", ".ko.zst", ".ko.gz")
_SOFTDEP: Final = re.compile(r"(pre|post):")


def module_name(path: str) -> str:
    """``kernel/lib/crc-t10dif.ko.xz`` → ``crc_t10dif``."""
    base = posixpath.basename(path)
    for suffix in MODULE_SUFFIXES:
        if base.endswith(suffix):
            base = base[: -len(suffix)]
            break
    return base.replace("-", "_")


@dataclass(frozen=True, slots=True)
class ModInfo:
    """A module's identity and relations, from its ``.modinfo`` section."""

    name: str
    path: str  # relative to /lib/modules/<version>/, always a plain ``.ko``
    depends: tuple[str, ...] = ()
    softdep_pre: tuple[str, ...] = ()  # names or aliases, as written
    aliases: tuple[str, ...] = ()
    vermagic: str = ""


def plain_module(data: bytes, path: str) -> tuple[bytes, str]:
    """A module as an uncompressed ``.ko``: (bytes, path). Compressed modules are decompressed
    so that any insmod can load them (busybox's may lack xz/zstd support)."""
    base = posixpath.basename(path)
    if base.endswith(".ko"):
        return data, path
    kind = detect(data[:8])
    if kind is Compression.NONE or not base.endswith(MODULE_SUFFIXES):
        raise AssetError(f"{path}: not a kernel module (.ko, .ko.xz, .ko.zst or .ko.gz)")
    stem = path[: path.rindex(".ko") + 3]
    return decompress(data, kind), stem


def _split_softdep(value: str) -> tuple[str, ...]:
    """``pre: a b post: c`` → (a, b)."""
    pre: list[str] = []
    mode = ""
    for word in _SOFTDEP.sub(r" \1: ", value).split():
        if word in ("pre:", "post:"):
            mode = word
        elif mode == "pre:":
            pre.append(word)
    return tuple(pre)


def parse_modinfo(data: bytes, path: str) -> ModInfo:
    """The ``.modinfo`` of a plain ``.ko`` (see `plain_module`) found at ``path``."""
    raw = read_section(data, ".modinfo", source=path)
    if raw is None:
        raise AssetError(f"{path}: kernel module without a .modinfo section")
    fields: dict[str, list[str]] = {}
    for item in raw.split(b"\x00"):
        key, sep, value = item.decode("utf-8", "replace").partition("=")
        if sep:
            fields.setdefault(key, []).append(value)
    name = (fields.get("name") or [module_name(path)])[0].replace("-", "_")
    depends = tuple(
        d.replace("-", "_") for v in fields.get("depends", []) for d in v.split(",") if d
    )
    soft = tuple(d for v in fields.get("softdep", []) for d in _split_softdep(v))
    return ModInfo(
        name=name,
        path=path,
        depends=depends,
        softdep_pre=soft,
        aliases=tuple(fields.get("alias", [])),
        vermagic=(fields.get("vermagic") or [""])[0],
    )


def _provider(want: str, infos: Mapping[str, ModInfo]) -> str | None:
    """The module called ``want``, or the first (by name) with an alias matching it."""
    name = want.replace("-", "_")
    if name in infos:
        return name
    for mod in sorted(infos):
        if any(fnmatchcase(want, alias) for alias in infos[mod].aliases):
            return mod
    return None


def resolve(
    wanted: Iterable[str], infos: Mapping[str, ModInfo], builtin: Iterable[str] = ()
) -> tuple[list[ModInfo], list[str]]:
    """(modules to ship in load order, wanted names that are built into the kernel).

    A wanted module that is neither a module nor built in raises `AssetError`; so does a
    missing hard dependency. A soft dependency nobody provides is skipped."""
    built_in = {b.replace("-", "_") for b in builtin}
    order: list[str] = []
    placed: set[str] = set()
    skipped: list[str] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in placed:
            return
        if name in chain:
            raise AssetError(f"kernel modules depend on each other in a loop: {' -> '.join(chain)}")
        info = infos[name]
        needs = sorted(set(info.depends))
        for dep in needs:
            if dep in built_in:
                continue
            if dep not in infos:
                raise AssetError(f"kernel module {name} needs {dep}, which the package lacks")
            visit(dep, (*chain, name))
        for soft in info.softdep_pre:
            provider = _provider(soft, infos)
            if provider is not None and provider not in chain and provider != name:
                visit(provider, (*chain, name))
        placed.add(name)
        order.append(name)

    for want in sorted({w.replace("-", "_") for w in wanted}):
        if want in infos:
            visit(want, ())
        elif want in built_in:
            skipped.append(want)
        else:
            raise AssetError(f"the kernel has no module {want!r} (neither a .ko nor built in)")
    return [infos[n] for n in order], skipped


def _closure(name: str, infos: Mapping[str, ModInfo], built_in: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = [d for d in infos[name].depends if d not in built_in]
    while todo:
        dep = todo.pop()
        if dep in seen or dep not in infos:
            continue
        seen.add(dep)
        todo.extend(d for d in infos[dep].depends if d not in built_in)
    return seen


def modules_dep(mods: Sequence[ModInfo], builtin: Iterable[str] = ()) -> str:
    """``modules.dep`` for ``mods`` (given in load order, as `resolve` returns them)."""
    infos = {m.name: m for m in mods}
    rank = {m.name: i for i, m in enumerate(mods)}
    built_in = {b.replace("-", "_") for b in builtin}
    lines = []
    for mod in sorted(mods, key=lambda m: m.path):
        deps = sorted(_closure(mod.name, infos, built_in), key=lambda n: -rank[n])
        lines.append(f"{mod.path}:" + "".join(f" {infos[d].path}" for d in deps))
    return "".join(line + "\n" for line in lines)


def modules_alias(mods: Sequence[ModInfo]) -> str:
    """``modules.alias``: ``alias PATTERN MODULE`` lines, sorted like depmod's output."""
    lines = sorted({f"alias {a} {m.name}" for m in mods for a in m.aliases})
    return "# Aliases extracted from modules themselves.\n" + "".join(f"{x}\n" for x in lines)
