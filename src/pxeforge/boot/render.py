"""Boot configuration text for pxelinux, GRUB and iPXE, rendered from one `BootSpec`.

Theory of operation
-------------------
A `Booter` answers with a `BootSpec` (kernel, initrds, command line); the client's loader wants
that in its own language. These functions are pure: spec in, text out, no I/O. The file
resolver (`pxeforge.boot.resolve`) calls them when pxelinux or GRUB ask for a config file over
TFTP; the HTTP server calls `render_ipxe` for ``/ipxe?mac=…``.

File references. A ref is either an absolute URL (``http://…``, handed to the client as is) or
a path relative to the boot root (``vmlinuz``, ``_pxeforge/initrd-0``):

* pxelinux resolves relative names against its own directory (the directory of
  ``pxelinux.0``), so relative refs are written with a leading ``/``: that works whether the
  loader sits at the top of the root or in ``bios/``. The seed capture shows the result:
  ``kernel vmlinuz`` from ``/pxelinux.0`` became ``RRQ "/vmlinuz"``. Plain ``pxelinux.0`` only
  speaks TFTP; ``http://`` refs need ``lpxelinux.0`` (same package), which speaks HTTP too.
* GRUB (Debian's ``grubnetx64.efi``) sets its root to the TFTP server and asks for
  ``/grub/grub.cfg`` and then kernel and initrd with a leading ``/`` (lab.md), so relative refs
  become ``/ref``; URLs become GRUB's ``(http,host)/path`` device syntax (``(http,host,port)``
  when a port is given — the form upstream and Debian GRUB accept; some vendor builds differ).
  ``linux``/``initrd`` are used, not ``linuxefi``/``initrdefi``: GRUB 2.06 dropped those.
* iPXE fetches everything over HTTP: relative refs become ``{http_base}/{ref}``. UEFI iPXE boots
  the kernel through its EFI stub, which finds the initrd only when the kernel line names it
  (``initrd=<image name>``; lab.md pitfall), so the kernel line always carries one ``initrd=``
  per initrd — harmless under BIOS.

Injection guard. Command lines and refs come from operators and, later, a database. Ironic's
CVE-2026-46447 was exactly this: ``kernel_append_params`` injected extra lines into boot
scripts. Every string that reaches a config line is checked (`check_cmdline`, `check_ref`) and
the renderer raises `ValueError` rather than emit something the loader would read differently:

* only printable ASCII (0x20–0x7E): no newline, CR, tab, NUL, DEL, no Unicode line separators;
* never ``$``, ``\\``, ``'`` or backquote: GRUB and iPXE expand ``$…``/``${…}``, GRUB unescapes
  ``\\``, and GRUB's own quoting (used below) cannot carry ``'``;
* no word that iPXE reads as a command separator or a comment: ``||``, ``&&``, ``;`` and words
  starting with ``#`` (iPXE has no quoting; see ipxe ``src/core/exec.c``);
* double quotes balanced (kernel quoting, ``name="a b"``);
* refs: additionally no space, no ``"`` and no ``,`` (pxelinux separates initrds with commas).

GRUB reads its config like a shell (``;``, ``|``, ``&``, ``<``, ``>``, ``{``, ``}`` and ``#``
separate words or start comments), so every word that is not plainly safe is single-quoted;
double-quoted parts of a kernel argument stay double-quoted, which GRUB strips just as the
kernel would (``foo="a b"`` reaches the kernel as ``"foo=a b"``: the same parameter).
"""

from __future__ import annotations

import string
from collections.abc import Iterable
from urllib.parse import quote, unquote, urlsplit

from pxeforge.boot.machine import BootSpec, Firmware

__all__ = [
    "check_cmdline",
    "check_ref",
    "render_grub",
    "render_ipxe",
    "render_ipxe_chain",
    "render_pxelinux",
]

DEFAULT_LABEL = "pxeforge"
LOCAL_LABEL = "local"
#: What a BIOS iPXE does to boot the first local disk (Ironic does the same); UEFI uses ``exit``.
IPXE_BIOS_SANBOOT = "sanboot --no-describe --drive 0x80"
#: How an iPXE script hands the machine back to its firmware: a failure status, so that UEFI
#: tries its next boot option (see `render_ipxe`).
IPXE_LOCAL_EXIT = "exit 1"
#: The removable-media loader every UEFI firmware looks for (UEFI spec §3.5.1.1).
EFI_FALLBACK_LOADER = "/EFI/BOOT/BOOTX64.EFI"
#: Seconds the iPXE chain script waits before asking again when nobody answered for any NIC.
IPXE_RETRY_SECONDS = 10

_PRINTABLE = frozenset(chr(c) for c in range(0x20, 0x7F))
_NEVER = frozenset("$\\'`")
_IPXE_SEPARATORS = frozenset({"||", "&&", ";"})
_REF_FORBIDDEN = frozenset(' ",')
_GRUB_PLAIN = frozenset(string.ascii_letters + string.digits + "-_.,:/=+@%~^")
_LABEL_CHARS = frozenset(string.ascii_letters + string.digits + "-_.")


# --------------------------------------------------------------------------- guards


def _check_text(what: str, value: str) -> None:
    for c in value:
        if c not in _PRINTABLE:
            raise ValueError(
                f"{what}: character {c!r} refused: only printable ASCII may reach a boot "
                f"config line (a line break would inject configuration)"
            )
        if c in _NEVER:
            raise ValueError(f"{what}: {c!r} refused: GRUB or iPXE would expand or unescape it")
    for word in value.split():
        if word in _IPXE_SEPARATORS or word.startswith("#"):
            raise ValueError(
                f"{what}: word {word!r} refused: iPXE reads it as a command separator or comment"
            )


def check_cmdline(cmdline: str, what: str = "kernel command line") -> None:
    """Raise `ValueError` unless ``cmdline`` is safe in pxelinux, GRUB and iPXE alike."""
    _check_text(what, cmdline)
    if cmdline.count('"') % 2:
        raise ValueError(f"{what}: unbalanced double quote")


def check_ref(ref: str, what: str = "file reference") -> None:
    """Raise `ValueError` unless ``ref`` (a root-relative path or a URL) is safe everywhere."""
    if not ref:
        raise ValueError(f"{what}: empty")
    _check_text(what, ref)
    for c in ref:
        if c in _REF_FORBIDDEN:
            raise ValueError(f"{what}: {c!r} refused in a file reference")


def _check_label(what: str, value: str) -> str:
    if not value or any(c not in _LABEL_CHARS for c in value):
        raise ValueError(f"{what}: {value!r} must be letters, digits, '-', '_' or '.'")
    return value


def _check_spec(spec: BootSpec) -> None:
    check_cmdline(spec.cmdline)
    if spec.message:
        _check_text("message", spec.message)
    if "ks" in spec.extra:
        check_ref(spec.extra["ks"], "ks URL")
    if not spec.localboot:
        check_ref(spec.kernel, "kernel")
        for ref in spec.initrds:
            check_ref(ref, "initrd")


def _is_url(ref: str) -> bool:
    return "://" in ref


def _kernel_args(spec: BootSpec) -> str:
    """The command line the kernel gets, ``ks=`` first (as the seed's config has it)."""
    parts = []
    if "ks" in spec.extra:
        parts.append(f"ks={spec.extra['ks']}")
    if spec.cmdline.strip():
        parts.append(spec.cmdline.strip())
    return " ".join(parts)


# --------------------------------------------------------------------------- pxelinux


def _tftp_ref(ref: str, file_base: str) -> str:
    if _is_url(ref):
        return ref
    parts = [p for p in (file_base.strip("/"), ref.lstrip("/")) if p]
    return "/" + "/".join(parts)


def render_pxelinux(spec: BootSpec, *, file_base: str = "") -> str:
    """A pxelinux.cfg file (the seed's ``default`` shape) that boots ``spec`` at once.

    Relative refs become ``/{file_base}/{ref}`` TFTP paths; URLs are passed through (they need
    ``lpxelinux.0``). ``spec.extra``: ``ks`` (adds ``ks=URL`` first on the command line),
    ``label`` (the label name, default ``pxeforge``), ``menu_label``.
    """
    _check_spec(spec)
    if file_base:
        check_ref(file_base, "file_base")
    lines = []
    if spec.message:
        lines.append(f"say {spec.message}")
    if spec.localboot:
        lines += [f"default {LOCAL_LABEL}", "prompt 0", f"label {LOCAL_LABEL}", "    localboot 0"]
        return "\n".join(lines) + "\n"
    label = _check_label("label", spec.extra.get("label", DEFAULT_LABEL))
    lines += [f"default {label}", "prompt 0", f"label {label}"]
    if "menu_label" in spec.extra:
        menu_label = spec.extra["menu_label"]
        _check_text("menu_label", menu_label)
        lines.append(f"    menu label {menu_label}")
    lines.append(f"    kernel {_tftp_ref(spec.kernel, file_base)}")
    append = []
    if spec.initrds:
        append.append("initrd=" + ",".join(_tftp_ref(r, file_base) for r in spec.initrds))
    if args := _kernel_args(spec):
        append.append(args)
    if append:
        lines.append("    append " + " ".join(append))
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- GRUB


def _kernel_words(cmdline: str) -> Iterable[str]:
    """Split like the kernel does: on spaces, except inside double quotes."""
    word: list[str] = []
    quoted = False
    for c in cmdline:
        if c == '"':
            quoted = not quoted
        elif c == " " and not quoted:
            if word:
                yield "".join(word)
                word = []
            continue
        word.append(c)
    if word:
        yield "".join(word)


def _grub_quote(word: str) -> str:
    """One word as GRUB's lexer must see it (the input passed the guards: no ``'$\\```)."""
    if all(c in _GRUB_PLAIN for c in word):
        return word
    out = []
    for i, segment in enumerate(word.split('"')):
        if i % 2:  # inside kernel double quotes: GRUB keeps all but $ \ " literal there too
            out.append(f'"{segment}"')
        elif segment:
            plain = all(c in _GRUB_PLAIN for c in segment)
            out.append(segment if plain else f"'{segment}'")
    return "".join(out)


def _grub_ref(ref: str) -> str:
    if not _is_url(ref):
        return _grub_quote("/" + ref.lstrip("/"))
    url = urlsplit(ref)
    if url.scheme != "http" or not url.hostname:
        raise ValueError(f"GRUB can fetch only tftp paths and http:// URLs, not {ref!r}")
    device = f"http,{url.hostname}" + (f",{url.port}" if url.port else "")
    path = url.path or "/"
    if url.query:
        path += "?" + url.query
    return _grub_quote(f"({device}){path}")


def render_grub(spec: BootSpec) -> str:
    """A grub.cfg (GRUB 2, UEFI) that boots ``spec`` at once.

    ``spec.extra``: ``ks``, ``label`` (menu entry title), ``timeout`` (seconds, default 0).
    Local boot chains the first disk's removable-media loader and otherwise exits to the
    firmware, which then tries its next boot option. The search sets ``root``, not just a
    variable: GRUB's ``chainloader`` gives the loaded image the *root* device as its device
    (``grub_device_open(0)``), whatever device the path names — with root still the network,
    a loader that reads its own partition (syslinux.efi, the lab's image) finds nothing.
    """
    _check_spec(spec)
    timeout = spec.extra.get("timeout", "0")
    if not timeout.isdigit():
        raise ValueError(f"timeout: {timeout!r} is not a number of seconds")
    lines = ["set default=0", f"set timeout={int(timeout)}"]
    if spec.localboot:
        lines += [
            f"menuentry '{LOCAL_LABEL}' {{",
            f"    if search --no-floppy --file --set=root {EFI_FALLBACK_LOADER}; then",
            f"        chainloader {EFI_FALLBACK_LOADER}",
            "        boot",
            "    fi",
            "    exit",
            "}",
        ]
        return "\n".join(lines) + "\n"
    label = _check_label("label", spec.extra.get("label", DEFAULT_LABEL))
    lines.append(f"menuentry '{label}' {{")
    if spec.message:
        lines.append(f"    echo '{spec.message}'")
    args = " ".join(_grub_quote(w) for w in _kernel_words(_kernel_args(spec)))
    lines.append(f"    linux {_grub_ref(spec.kernel)}" + (f" {args}" if args else ""))
    if spec.initrds:
        lines.append("    initrd " + " ".join(_grub_ref(r) for r in spec.initrds))
    lines.append("}")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- iPXE


def _http_ref(ref: str, http_base: str) -> str:
    if _is_url(ref):
        return ref
    return f"{http_base.rstrip('/')}/{quote(ref.lstrip('/'))}"


def _url_basename(url: str) -> str:
    return unquote(urlsplit(url).path.rsplit("/", 1)[-1])


def _image_names(urls: list[str]) -> list[str]:
    """The name iPXE gives each image (the URL's last path segment), made unique."""
    names: list[str] = []
    for url in urls:
        base = _url_basename(url) or "initrd"
        name, n = base, 1
        while name in names:
            name, n = f"{base}-{n}", n + 1
        names.append(name)
    return names


def render_ipxe(spec: BootSpec, *, http_base: str, firmware: Firmware | None = None) -> str:
    """An iPXE script that boots ``spec``; ``spec.ipxe_script``, when set, is returned as is.

    Local boot: ``exit 1`` (back to the firmware's next boot option); with
    ``firmware=Firmware.BIOS`` it first tries ``sanboot`` of the first hard disk.

    The status matters on UEFI: an NBP that returns EFI_SUCCESS means "booted" to EDK2's boot
    manager (BdsDxe), which then shows its setup menu instead of trying the next boot option
    — measured with OVMF: the disk was never tried. ``exit 1`` makes iPXE return an error, and
    `render_ipxe_chain` runs this script with ``chain --replace`` so the status reaches the
    firmware instead of the chain script.
    """
    if spec.ipxe_script is not None:
        script = spec.ipxe_script
        return script if script.endswith("\n") else script + "\n"
    _check_spec(spec)
    check_ref(http_base, "http_base")
    lines = ["#!ipxe"]
    if spec.message:
        lines.append(f"echo {spec.message}")
    if spec.localboot:
        if firmware is Firmware.BIOS:
            lines.append(f"{IPXE_BIOS_SANBOOT} || {IPXE_LOCAL_EXIT}")
        lines.append(IPXE_LOCAL_EXIT)
        return "\n".join(lines) + "\n"
    urls = [_http_ref(r, http_base) for r in spec.initrds]
    names = _image_names(urls)
    kernel_line = [f"kernel {_http_ref(spec.kernel, http_base)}"]
    kernel_line += [f"initrd={name}" for name in names]
    if args := _kernel_args(spec):
        kernel_line.append(args)
    lines.append(" ".join(kernel_line))
    for url, name in zip(urls, names, strict=True):
        named = name == _url_basename(url)
        lines.append(f"initrd {url}" if named else f"initrd --name {name} {url}")
    lines.append("boot")
    return "\n".join(lines) + "\n"


def render_ipxe_chain(http_base: str) -> str:
    """``boot.ipxe``: ask ``/ipxe`` for a script once per NIC, then wait and start over.

    Each NIC's MAC is tried in turn (a machine may PXE-boot from its second port); a 404 makes
    ``chain`` fail and moves to the next NIC. A script that was fetched *replaces* this one
    (``--replace``: iPXE runs it once this script has ended, at the ``exit`` that follows), so
    its exit status — a local boot's ``exit 1`` — is what iPXE returns to the firmware rather
    than a failed ``chain`` here. When no NIC got an answer the script sleeps
    `IPXE_RETRY_SECONDS` and starts again, so an unknown machine never spins in a tight loop.
    """
    check_ref(http_base, "http_base")
    base = http_base.rstrip("/")
    query = "mac=${net${idx}/mac}&uuid=${uuid}&arch=${buildarch}&platform=${platform}"
    return "\n".join(
        [
            "#!ipxe",
            ":start",
            "set idx:int32 0",
            ":nic",
            "isset ${net${idx}/mac} || goto none",
            f"chain --replace --autofree {base}/ipxe?{query} || goto next",
            "exit",  # ends this script; iPXE then runs the replacement
            ":next",
            "inc idx",
            "goto nic",
            ":none",
            "echo pxeforge: no boot configuration for any network port of this machine",
            f"echo retrying in {IPXE_RETRY_SECONDS} seconds",
            f"sleep {IPXE_RETRY_SECONDS}",
            "goto start",
            "",
        ]
    )
