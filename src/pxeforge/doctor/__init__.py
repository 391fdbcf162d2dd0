"""The doctor: from a machine's live timeline and its node, what is wrong and what to do.

Theory of operation
-------------------
`pxeforge trace` reads a capture; the doctor reads what the running server recorded
(`pxeforge.timeline`): per MAC, the DHCP decisions, TFTP and HTTP transfers, the agent's
calls, power actions and state transitions — plus the node record (state, ``last_error``,
maintenance, the agent's last heartbeat). `diagnose(node, events, now, macs=…, context=…)` runs
every rule of `RULES` — plain functions over a `Subject`, no I/O — and returns `Finding`s:
a stable ``code``, a severity (`trace.findings.Severity`), one line saying what is wrong, what
to do, and the `Evidence` (timeline ``seq`` and time of each event that shows it).

========================  ========  ===========================================================
code                      severity  rule
========================  ========  ===========================================================
other-dhcp-server         error     a REQUEST names (option 54) a server that is not us: the
                                    client took another DHCP server's OFFER (warning when it
                                    got our ACK since). pxeforge never sees the other server's
                                    OFFER (it goes to port 68); the REQUEST is broadcast, so it
                                    sees the client's choice
offer-without-request     error     our OFFERs repeat and no REQUEST (to anyone) follows: the
                                    OFFER does not reach the client
no-address / dhcp-nak /   error /   the pool is exhausted; pxeforge NAKed the REQUEST; the
address-declined          warning   client declined an address in use
loader-mismatch           error     a loader offered to or fetched by a client whose option 93
                                    it does not fit (`trace.explain.loader_fits`): "arch 7
                                    client got a BIOS loader" — and which DHCP server told it
boot-file-not-found       error     TFTP ERROR 1 / HTTP 404 for the boot file (the loader DHCP
                                    gave, or a file named like a loader)
file-not-found            warning   another miss that is no known probe (`probe_miss`) and was
                                    not fetched under that name later
tftp-refused, http-error  warning   other refusals
transfer-failed           error     a TFTP transfer failed (warning if a later try worked)
transfer-aborted          warning   the client aborted mid-file (not a size probe)
retransmit-storm          warning   ≥ 10 DATA blocks sent again and ≥ 10 % of the blocks
                                    (`trace.findings` thresholds); error if it failed
unknown-machine           warning   a MAC that network-boots and no port names, while boots
                                    follow the inventory
node-failed               error     the node is in a failure state: ``last_error`` and the
                                    recovery verb; after a wait timeout, how far the boot got
last-error, maintenance   warning   a stale ``last_error`` in a stable state; maintenance
stuck-waiting             error     in a wait state ≥ `WAIT_PATIENCE` and the boot stopped
                                    somewhere: no DHCP, ignored, loader not fetched, ramdisk
                                    not fetched, "ramdisk fetched, agent never looked up",
                                    lookup not found, no heartbeat/inventory
heartbeats-stopped        error     the agent heartbeated in this wait and has been silent
                                    longer than the heartbeat timeout (300 s)
power-error               error     a power action failed and has not worked since
agent-refused,            warning,  refused agent calls (a stale token), failed agent commands
agent-command-failed      error
========================  ========  ===========================================================

The API (`pxeforge.api.doctor`) gathers the node, its ports and the timeline events of its MACs
and UUID, and builds the `Context` from `Settings` (our address, DHCP mode, wait timeouts);
``pxeforge doctor`` prints what it answers.
"""

from pxeforge.doctor.model import Context, Evidence, Finding, Severity, Subject
from pxeforge.doctor.rules import RULES, WAIT_PATIENCE, Rule, diagnose

__all__ = [
    "RULES",
    "WAIT_PATIENCE",
    "Context",
    "Evidence",
    "Finding",
    "Rule",
    "Severity",
    "Subject",
    "diagnose",
]
