"""Log lines as operators read them: ISO 8601 UTC times, ``extra=`` fields in JSON, floods folded."""

from __future__ import annotations

import io
import json
import logging
import re
import time
from collections.abc import Iterator
from datetime import datetime

import pytest

from relay.logs import REPEAT_BURST, setup_logging

ISO_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture
def restore_root() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_text_lines_start_with_an_iso_utc_time(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("info", False, stream=out)
    logging.getLogger("mesh112.test").info("node %s running", "Field Relay 1")
    stamp, level, name, *rest = out.getvalue().split(" ")
    assert ISO_MS.match(stamp), stamp
    assert (level, name, " ".join(rest)) == ("INFO", "mesh112.test:", "node Field Relay 1 running\n")


def test_json_lines_carry_iso_time_and_extra_fields(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("info", True, stream=out)
    before = time.time()
    logging.getLogger("mesh112.test").warning(
        "frame refused from %s", "ab12", extra={"link": "lora0", "peer": "ab12cd34", "bytes": 231}
    )
    entry = json.loads(out.getvalue())
    assert ISO_MS.match(entry["time"]), entry
    assert -0.01 <= datetime.fromisoformat(entry["time"]).timestamp() - before < 2
    assert entry["level"] == "warning" and entry["message"] == "frame refused from ab12"
    assert (entry["link"], entry["peer"], entry["bytes"]) == ("lora0", "ab12cd34", 231)


def test_a_flood_of_10000_identical_warnings_gives_a_handful_of_lines_with_the_count(
    restore_root: None,
) -> None:
    out = io.StringIO()
    setup_logging("info", True, stream=out, repeat_window_s=2.0)
    log = logging.getLogger("relay.links.lora")
    started = time.monotonic()
    for index in range(10_000):
        log.warning("frame from unknown sender !%08x refused", index)
    flood_s = time.monotonic() - started
    logging.getLogger("mesh112.other").warning("a different warning still gets through")
    time.sleep(2.1)
    log.warning("frame from unknown sender !%08x refused", 10_000)
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert flood_s < 2.0, "the flood must fit in one window for the count below"
    burst = REPEAT_BURST
    assert len(lines) == burst + 2, lines
    assert [line["message"] for line in lines[:burst]] == [
        f"frame from unknown sender !{index:08x} refused" for index in range(burst)
    ]
    assert lines[burst]["message"] == "a different warning still gets through"
    held = 10_000 - burst
    assert lines[-1]["repeated"] == held
    expected = f"frame from unknown sender !00002710 refused (repeated {held} times"
    assert lines[-1]["message"].startswith(expected)


def test_info_lines_are_never_folded(restore_root: None) -> None:
    out = io.StringIO()
    setup_logging("info", False, stream=out)
    for index in range(50):
        logging.getLogger("mesh112.test").info("alarm %d delivered", index)
    assert len(out.getvalue().splitlines()) == 50
