"""Power and boot-device drivers (Ironic's power and management interfaces).

`base` holds the two Protocols, the vocabulary (`PowerState`, `BootDevice`) and the errors;
one module per driver; `registry` maps ``node.driver`` names to driver objects.
"""
