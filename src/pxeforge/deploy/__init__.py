"""Installer-based deploys: per-node kickstart / preseed / autoinstall files (`kickstart`)."""
