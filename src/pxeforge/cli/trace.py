"""`pxeforge trace CAPTURE`: explain the network boots in a packet capture."""

from __future__ import annotations

import json
import sys

import click
from rich.console import Console
from rich.text import Text

from pxeforge.boot.machine import normalize_mac
from pxeforge.trace import Trace, trace_bytes, trace_capture
from pxeforge.trace.findings import DEFAULT_SILENT_AFTER
from pxeforge.trace.report import render_lines, render_text, to_json

__all__ = ["trace"]


def _macs(values: tuple[str, ...]) -> list[str]:
    out: list[str] = []
    for value in values:
        try:
            out.append(normalize_mac(value))
        except ValueError:
            raise click.BadParameter(
                f"{value!r} is not a MAC address", param_hint="--mac"
            ) from None
    return out


@click.command()
@click.argument("capture", type=click.Path(dir_okay=False, allow_dash=True))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (schema pxeforge.trace/1).")
@click.option(
    "--mac",
    "macs",
    multiple=True,
    metavar="MAC",
    help="Only this client (repeat for several). Capture-wide findings are always shown.",
)
@click.option(
    "--silent-after",
    type=click.FloatRange(min=0),
    default=DEFAULT_SILENT_AFTER,
    show_default=True,
    metavar="SECONDS",
    help="A client quiet this long before the end of the capture, mid-boot, is reported.",
)
@click.option(
    "--color/--no-color",
    default=None,
    help="Colour the text report (default: when standard output is a terminal).",
)
def trace(
    capture: str, as_json: bool, macs: tuple[str, ...], silent_after: float, color: bool | None
) -> None:
    """Explain the network boots in a pcap/pcapng CAPTURE ("-" reads standard input).

    For each client MAC: a timeline of its DHCP messages (every option decoded, PXE and iPXE
    ones explained), the server that answered with which address and boot file, ProxyDHCP,
    TFTP requests with their options, OACK and outcome, the pxelinux/GRUB config searches,
    HTTP requests and the agent's lookup, heartbeat and callback. Then findings with the
    frames that show them: a second DHCP server, offers never requested, a loader for the
    wrong architecture, missing files, refused TFTP options, retransmit storms, iPXE
    chainload loops, clients that went silent.

    Capture on the boot network's bridge or interface, without a port filter (TFTP data uses
    ephemeral ports): tcpdump -i br0 -s 0 --immediate-mode -U -w boot.pcap
    """
    wanted = _macs(macs)
    result: Trace
    if capture == "-":
        result = trace_bytes(sys.stdin.buffer.read(), "<stdin>", silent_after=silent_after)
    else:
        result = trace_capture(capture, silent_after=silent_after)
    known = {c.mac for c in result.clients}
    unknown = [m for m in wanted if m not in known]
    if unknown:
        listing = ", ".join(sorted(known)) or "none"
        raise click.ClickException(
            f"{', '.join(unknown)} not in {result.name} (its clients: {listing})"
        )
    selected = wanted or None
    if as_json:
        click.echo(json.dumps(to_json(result, selected), indent=2))
        return
    if color is None:
        color = sys.stdout.isatty()
    if not color:
        click.echo(render_text(result, selected), nl=False)
        return
    console = Console(force_terminal=True, highlight=False, soft_wrap=True)
    for text, style in render_lines(result, selected):
        console.print(Text(text, style=style or ""))
