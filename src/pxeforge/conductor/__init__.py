"""conductor: what happens after an API verb — events, driver work, periodic tasks.

manager.py        Conductor: verbs → lifecycle.process_event → driver work in worker threads,
                  power and boot device, validation, heartbeat and wait timeouts
step.py           Step: how one piece of work ended (event, last_error, fields, notes)
agent_deploy.py   image deploy and cleaning through the agent ramdisk: verb checks, the
                  heartbeat table (AgentFlows), clean step planning
agent_client.py   the synchronous HTTP client of the agent's /v1/commands API
inspection.py     the agent's inventory → node properties and ports
"""

from pxeforge.conductor.manager import Conductor

__all__ = ["Conductor"]
