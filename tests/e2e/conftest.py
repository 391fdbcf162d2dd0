"""End-to-end fixtures: the driver tests' real BMC simulator (`ipmi_sim`), reused as is.

tests/drivers/conftest.py is loaded by path (conftest modules are not importable by name
across test directories) and its fixture re-exported here.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

_path = Path(__file__).resolve().parent.parent / "drivers" / "conftest.py"
_spec = importlib.util.spec_from_file_location("pxeforge_tests_drivers_fixtures", _path)
assert _spec is not None and _spec.loader is not None
drivers = sys.modules.get(_spec.name) or importlib.util.module_from_spec(_spec)
if _spec.name not in sys.modules:
    sys.modules[_spec.name] = drivers  # dataclasses look their module up there
    _spec.loader.exec_module(drivers)

ipmi_sim = drivers.ipmi_sim
