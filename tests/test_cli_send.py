"""``mesh112 send`` and ``mesh112 status`` as an operator types them, against two real relay processes.

A node is addressed by the name on its certificate (``field-relay-1`` for "Field Relay 1"); the
status reads as one line for a person, and as the API's JSON with ``--json``. A name the node does
not know is a usage error (exit 2) naming the near ones; a refusal by the API is a failure (exit 1).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from conftest import Field

from relay.cli.relay import describe_status

MESH112 = shutil.which("mesh112", path=str(Path(sys.executable).parent)) or "mesh112"


def mesh112(field: Field, role: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MESH112_API": field.post.api, "MESH112_TOKEN": field.tokens[role]}
    return subprocess.run([MESH112, *args], capture_output=True, text=True, timeout=60, env=env)


def test_send_by_name_and_read_the_status_as_a_person_would(field: Field) -> None:
    sent = mesh112(field, "dispatcher", "send", "field-relay-1", "water on sector 4", "--priority", "FLASH")
    assert sent.returncode == 0, sent.stderr
    bundle_id = sent.stdout.split()[0]
    assert re.fullmatch(r"[0-9a-f]{44}", bundle_id), sent.stdout
    line = ""
    for _ in range(100):
        status = mesh112(field, "dispatcher", "status", bundle_id)
        assert status.returncode == 0, status.stderr
        line = status.stdout.strip()
        if line.startswith("delivered"):
            break
        time.sleep(0.2)
    assert re.fullmatch(r"delivered via Field Relay 1, 1 hop, \d+ s ago", line), line
    as_json = mesh112(field, "dispatcher", "status", "--json", bundle_id)
    answer = json.loads(as_json.stdout)
    assert answer["state"] == "delivered" and answer["peer"] == field.relay_id
    assert answer["path"] == ["Field Relay 1"] and answer["hops"] == 1


def test_unknown_names_and_refusals_get_the_right_exit_code(field: Field) -> None:
    unknown = mesh112(field, "dispatcher", "send", "field-relay-7", "hello")
    assert unknown.returncode == 2, unknown.stderr
    assert unknown.stderr.startswith("mesh112: no node known here is named 'field-relay-7'; did you mean ")
    assert "field-relay-1" in unknown.stderr and "Traceback" not in unknown.stderr
    role = mesh112(field, "dispatcher", "send", "relay", "hello")
    assert role.returncode == 2 and "role:relay for every node with that role" in role.stderr
    refused = mesh112(field, "observer", "send", "field-relay-1", "hello")
    assert refused.returncode == 1 and "403" in refused.stderr and "may not send_message" in refused.stderr


def test_status_lines_for_each_state() -> None:
    now = 1_000_000.0
    assert describe_status({"state": "queued", "at": now - 3}, now) == "queued, 3 s ago"
    forwarded = {"state": "forwarded", "peer": "ab12cd34" * 4, "link": "lora0", "at": now - 300}
    assert describe_status(forwarded, now) == "forwarded to ab12cd34 over lora0, 5 min ago"
    partial = {"state": "delivered", "path": ["Responder 1"], "hops": 3, "at": now - 7200}
    expected = "delivered via [2 hops not recorded] → Responder 1, 3 hops, 2 h ago"
    assert describe_status(partial, now) == expected
    evicted = {"state": "evicted", "reason": "storage full: BULK made room for FLASH", "at": now - 1}
    assert describe_status(evicted, now) == "evicted: storage full: BULK made room for FLASH, 1 s ago"
    assert describe_status({"state": "unknown"}, now) == "unknown"
