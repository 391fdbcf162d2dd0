"""GNU cpio is the oracle of the cpio tests: install Debian's package when it is missing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest


@pytest.fixture(scope="session")
def gnu_cpio() -> str:
    """Path of GNU cpio (``apt-get install -y cpio`` as root when missing), else skip."""
    if shutil.which("cpio") is None and shutil.which("apt-get") and os.geteuid() == 0:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "cpio"],
            capture_output=True,
            env=env,
            timeout=600,
            check=False,
        )
    path = shutil.which("cpio")
    if path is None:
        pytest.skip("GNU cpio is missing and 'apt-get install -y cpio' did not provide it")
    return path
