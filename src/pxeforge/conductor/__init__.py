"""conductor: what happens after an API verb — events, driver work, periodic tasks.

manager.py    Conductor: verbs → lifecycle.process_event → driver work in worker threads,
              power and boot device, validation, heartbeat and wait timeouts
"""

from pxeforge.conductor.manager import Conductor

__all__ = ["Conductor"]
