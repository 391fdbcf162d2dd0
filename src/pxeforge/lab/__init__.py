"""The virtual lab: real firmware network-booting under QEMU against `pxeforge serve`.

One module per concern: `netns` (a private namespace, bridge and taps), `capture` (tcpdump
on the bridge, and boot milestones read from the pcap), `qemu` (BIOS/UEFI VMs, KVM probe,
QMP), `guest` (Debian's kernel + a busybox initramfs that calls back), `procs` (child
processes stopped by PID), and `run` (`Lab`/`run_lab`: set up, boot, judge, tear down).
`pxeforge lab` (cli/lab.py) and tests/lab drive it. docs/lab.md in the shared notes records
the measurements behind every choice.
"""
