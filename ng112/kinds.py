"""Bundle payload kinds of the NG112 application (the relay reserves 0-31 for its own)."""

from __future__ import annotations

from relay.bundle import Kind

NG112_ALARM = 32  # compact alarm record (Alert, Update, Cancel), building -> command post
NG112_ACK = 33  # compact Ack record (receipt, operator acknowledgement), command post -> building

assert NG112_ALARM >= Kind.FIRST_APPLICATION_KIND
