"""NG112 building alarms: SIP MESSAGE ingress (RFC 8876) with CAP 1.2 and PIDF-LO, compact alarm
records for the mesh, and acknowledgements back to the building."""
