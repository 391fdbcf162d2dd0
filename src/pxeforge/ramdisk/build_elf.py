"""A small ELF reader: what a binary needs to run, and named sections of kernel modules.

Theory of operation
-------------------
The ramdisk build takes executables and shared libraries out of Debian packages and must ship
exactly the libraries they load. Instead of guessing from package dependencies, it reads each
file's dynamic section (System V ABI, "Dynamic Section" and "Program Header"; ELF spec 1.2
§2):

    ELF header  ─▶ program headers ─▶ PT_INTERP   the dynamic loader's path
                                  └─▶ PT_DYNAMIC  (tag, value) pairs up to DT_NULL:
                                        DT_NEEDED   a library's soname (string table offset)
                                        DT_SONAME   this library's own name
                                        DT_RUNPATH / DT_RPATH   extra search directories
                                        DT_STRTAB   where the strings are (a virtual address,
                                                    mapped to a file offset through PT_LOAD)

Kernel modules are relocatable objects (ET_REL) without program headers; their metadata is in
the ``.modinfo`` *section*, found by name through the section header string table
(``e_shstrndx``, with the extended numbering of gABI "Sections" when it is ``SHN_XINDEX``).

32- and 64-bit, little- and big-endian files are read; everything is bounds-checked and a
malformed file raises `AssetError` naming it. Pure functions over bytes, no I/O.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass
from typing import Final

from pxeforge.errors import AssetError

__all__ = [
    "EM_X86_64",
    "DynTag",
    "ElfInfo",
    "ElfType",
    "ProgramType",
    "is_elf",
    "read_elf",
    "read_section",
]

ELF_MAGIC: Final = b"\x7fELF"
EM_X86_64: Final = 62
_CLASS32: Final = 1
_CLASS64: Final = 2
_DATA_LE: Final = 1
_DATA_BE: Final = 2
_SHN_XINDEX: Final = 0xFFFF


class ElfType(enum.IntEnum):
    NONE = 0
    REL = 1  # relocatable object: a kernel module
    EXEC = 2  # executable (not position independent)
    DYN = 3  # shared object or PIE executable
    CORE = 4


class ProgramType(enum.IntEnum):
    LOAD = 1
    DYNAMIC = 2
    INTERP = 3


class DynTag(enum.IntEnum):
    NULL = 0
    NEEDED = 1
    STRTAB = 5
    SONAME = 14
    RPATH = 15
    RUNPATH = 29


@dataclass(frozen=True, slots=True)
class ElfInfo:
    """What the dynamic loader reads from a file before it runs."""

    bits: int  # 32 or 64
    little_endian: bool
    type: int  # ElfType value (unknown values kept as numbers)
    machine: int  # e_machine: EM_X86_64 = 62
    interp: str | None  # PT_INTERP: the dynamic loader, for executables
    needed: tuple[str, ...]  # DT_NEEDED, in file order
    soname: str | None
    runpath: tuple[str, ...]  # DT_RUNPATH, else DT_RPATH, split on ':'

    @property
    def is_dynamic(self) -> bool:
        """Whether the loader has work to do (a static binary has neither)."""
        return self.interp is not None or bool(self.needed)


@dataclass(frozen=True, slots=True)
class _Layout:
    """Struct formats of one ELF class and byte order."""

    bits: int
    endian: str  # "<" or ">"

    @property
    def header(self) -> str:  # from e_type (offset 16) to e_shstrndx
        addr = "Q" if self.bits == 64 else "I"
        return f"{self.endian}HHI{addr}{addr}{addr}IHHHHHH"

    @property
    def phdr(self) -> str:
        if self.bits == 64:  # type flags offset vaddr paddr filesz memsz align
            return f"{self.endian}IIQQQQQQ"
        return f"{self.endian}IIIIIIII"  # type offset vaddr paddr filesz memsz flags align

    @property
    def shdr(self) -> str:  # name type flags addr offset size link info addralign entsize
        if self.bits == 64:
            return f"{self.endian}IIQQQQIIQQ"
        return f"{self.endian}IIIIIIIIII"

    @property
    def dyn(self) -> str:
        return f"{self.endian}qQ" if self.bits == 64 else f"{self.endian}iI"


def is_elf(data: bytes) -> bool:
    return data[:4] == ELF_MAGIC


def _unpack(fmt: str, data: bytes, offset: int, what: str, source: str) -> tuple[int, ...]:
    size = struct.calcsize(fmt)
    if offset < 0 or offset + size > len(data):
        raise AssetError(f"{source}: ELF {what} at offset {offset} is past the end of the file")
    return struct.unpack_from(fmt, data, offset)


def _layout(data: bytes, source: str) -> _Layout:
    if not is_elf(data):
        raise AssetError(f"{source}: not an ELF file (no \\x7fELF magic)")
    if len(data) < 16:
        raise AssetError(f"{source}: ELF identification is truncated")
    cls, order = data[4], data[5]
    if cls not in (_CLASS32, _CLASS64) or order not in (_DATA_LE, _DATA_BE):
        raise AssetError(f"{source}: unknown ELF class {cls} or byte order {order}")
    return _Layout(64 if cls == _CLASS64 else 32, "<" if order == _DATA_LE else ">")


@dataclass(frozen=True, slots=True)
class _Header:
    type: int
    machine: int
    phoff: int
    shoff: int
    phentsize: int
    phnum: int
    shentsize: int
    shnum: int
    shstrndx: int


def _header(data: bytes, lay: _Layout, source: str) -> _Header:
    (
        e_type,
        machine,
        _version,
        _entry,
        phoff,
        shoff,
        _flags,
        _ehsize,
        phentsize,
        phnum,
        shentsize,
        shnum,
        shstrndx,
    ) = _unpack(lay.header, data, 16, "header", source)
    return _Header(e_type, machine, phoff, shoff, phentsize, phnum, shentsize, shnum, shstrndx)


def _cstring(data: bytes, offset: int, what: str, source: str) -> str:
    if not 0 <= offset < len(data):
        raise AssetError(f"{source}: ELF {what} string at {offset} is past the end of the file")
    end = data.find(b"\x00", offset)
    if end < 0:
        raise AssetError(f"{source}: ELF {what} string at {offset} is not terminated")
    return data[offset:end].decode("utf-8", "surrogateescape")


def _segments(data: bytes, lay: _Layout, h: _Header, source: str) -> list[tuple[int, ...]]:
    """(type, offset, vaddr, filesz) of every program header."""
    out: list[tuple[int, ...]] = []
    for i in range(h.phnum):
        f = _unpack(lay.phdr, data, h.phoff + i * h.phentsize, "program header", source)
        if lay.bits == 64:
            p_type, _flags, offset, vaddr, _paddr, filesz = f[:6]
        else:
            p_type, offset, vaddr, _paddr, filesz = f[:5]
        out.append((p_type, offset, vaddr, filesz))
    return out


def _vaddr_to_offset(segments: list[tuple[int, ...]], vaddr: int, source: str) -> int:
    for p_type, offset, seg_vaddr, filesz in segments:
        if p_type == ProgramType.LOAD and seg_vaddr <= vaddr < seg_vaddr + filesz:
            return offset + (vaddr - seg_vaddr)
    raise AssetError(f"{source}: ELF address {vaddr:#x} is in no loadable segment")


def read_elf(data: bytes, *, source: str = "file") -> ElfInfo:
    """The loader-relevant facts of an ELF file (`AssetError` if it is not one)."""
    lay = _layout(data, source)
    h = _header(data, lay, source)
    segments = _segments(data, lay, h, source)
    interp: str | None = None
    dynamic: tuple[int, int] | None = None
    for p_type, offset, _vaddr, filesz in segments:
        if p_type == ProgramType.INTERP:
            interp = _cstring(data, offset, "PT_INTERP", source)
        elif p_type == ProgramType.DYNAMIC:
            dynamic = (offset, filesz)
    needed_at: list[int] = []
    soname_at: int | None = None
    rpath_at: int | None = None
    runpath_at: int | None = None
    strtab: int | None = None
    if dynamic is not None:
        offset, size = dynamic
        step = struct.calcsize(lay.dyn)
        for pos in range(offset, offset + size - step + 1, step):
            tag, value = _unpack(lay.dyn, data, pos, "dynamic entry", source)
            if tag == DynTag.NULL:
                break
            if tag == DynTag.NEEDED:
                needed_at.append(value)
            elif tag == DynTag.SONAME:
                soname_at = value
            elif tag == DynTag.RPATH:
                rpath_at = value
            elif tag == DynTag.RUNPATH:
                runpath_at = value
            elif tag == DynTag.STRTAB:
                strtab = value
    needed: tuple[str, ...] = ()
    soname: str | None = None
    runpath: tuple[str, ...] = ()
    if needed_at or soname_at is not None or rpath_at is not None or runpath_at is not None:
        if strtab is None:
            raise AssetError(f"{source}: ELF dynamic section without DT_STRTAB")
        base = _vaddr_to_offset(segments, strtab, source)
        needed = tuple(_cstring(data, base + at, "DT_NEEDED", source) for at in needed_at)
        if soname_at is not None:
            soname = _cstring(data, base + soname_at, "DT_SONAME", source)
        path_at = runpath_at if runpath_at is not None else rpath_at
        if path_at is not None:
            runpath = tuple(p for p in _cstring(data, base + path_at, "RUNPATH", source).split(":"))
    return ElfInfo(
        bits=lay.bits,
        little_endian=lay.endian == "<",
        type=h.type,
        machine=h.machine,
        interp=interp,
        needed=needed,
        soname=soname,
        runpath=tuple(p for p in runpath if p),
    )


def read_section(data: bytes, name: str, *, source: str = "file") -> bytes | None:
    """The bytes of the section called ``name`` (e.g. ``.modinfo``), or None without one."""
    lay = _layout(data, source)
    h = _header(data, lay, source)
    if h.shoff == 0:
        return None

    def shdr(i: int) -> tuple[int, int, int, int, int]:
        f = _unpack(lay.shdr, data, h.shoff + i * h.shentsize, "section header", source)
        return f[0], f[1], f[4], f[5], f[6]  # name, type, offset, size, link

    first = shdr(0)
    count = h.shnum or first[3]  # extended numbering: the real count is section 0's size
    if count > len(data) // max(h.shentsize, 1):
        raise AssetError(f"{source}: ELF claims {count} sections; the file is too small")
    sections = [first] + [shdr(i) for i in range(1, count)]
    strndx = h.shstrndx
    if strndx == _SHN_XINDEX:
        strndx = sections[0][4]
    if not 0 <= strndx < len(sections):
        raise AssetError(f"{source}: ELF section name table index {strndx} is out of range")
    names_at = sections[strndx][2]
    for sh_name, sh_type, offset, size, _link in sections:
        if sh_type == 0:  # SHT_NULL
            continue
        if _cstring(data, names_at + sh_name, "section name", source) == name:
            if sh_type == 8:  # SHT_NOBITS: occupies no file space
                return b""
            if offset + size > len(data):
                raise AssetError(f"{source}: ELF section {name} runs past the end of the file")
            return data[offset : offset + size]
    return None
