"""A node revoked while the deployment runs: FLASH alarm latency before and after (field/revocation.py).

Four real relay processes on loopback IP (command post, two relays, the lost responder). The figures
are medians of nine alarms from relay-2 to the command post's journal, before the revocation and
after it, while the revoked node sends FLASH and redials; plus how long the revocation took to
cut it off. Same row shape as ``bench/adversary.py``.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from field.harness import running_field
from field.processes import operator_token
from field.revocation import CHAIN, LOST_SENDS, revoke_lost_node


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp, running_field(Path(tmp), CHAIN) as field:
        admin = operator_token(field.deployment, frozenset({"admin"}), "bench admin")
        result = revoke_lost_node(field, admin)
    ratio = result.latency_after_s / result.latency_before_s
    return {
        "ip_revoked_node": {
            "latency_without_s": round(result.latency_before_s, 3),
            "latency_with_s": round(result.latency_after_s, 3),
            "ratio": round(ratio, 2),
            "alarms_without_s": [round(x, 3) for x in result.before_s],
            "alarms_with_s": [round(x, 3) for x in result.after_s],
            "delivered": result.lost_delivered == 0,
            "attacker": {"flash_sent_after_revocation": LOST_SENDS},
            "seen_by_operators": {
                "relay-2.handshakes_refused": result.handshakes_refused,
                "post.journal_rows_from_revoked": result.lost_delivered,
            },
            "revoke_command_s": round(result.revoke_s, 2),
            "list_at_far_relay_after_s": round(result.propagated_s, 3),
            "session_cut_after_s": round(result.cut_s, 3),
            "link": "ip",
            "unit": "s",
        }
    }
