"""Resuming by cursor against a real command post: ``/api/v1/changes?after=`` pages through every
change in order, and ``/api/v1/stream?after=`` replays what a client missed, then goes live without
sending anything twice."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import websockets
from conftest import Field, auth


def _send(field: Field, text: str) -> None:
    response = httpx.post(
        f"{field.relay.api}/api/v1/messages",
        json={"to": f"node:{field.post_id}", "text": text},
        headers=auth(field.field_token),
    )
    assert response.status_code == 202, response.text


def _journaled(field: Field, texts: set[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        listed = httpx.get(f"{field.post.api}/api/v1/messages", headers=auth(field.tokens["observer"])).json()
        if texts <= {m["text"] for m in listed}:
            return
        time.sleep(0.2)
    raise AssertionError(f"{texts} not in the command post's journal after {timeout:.0f} s")


def test_changes_and_the_stream_resume_from_a_cursor(field: Field) -> None:
    observer = auth(field.tokens["observer"])
    cursor = httpx.get(f"{field.post.api}/api/v1/console", headers=observer).json()["cursor"]
    missed = {f"while away {i}" for i in range(6)}
    for text in sorted(missed):
        _send(field, text)
    _journaled(field, missed)

    seen: list[dict[str, object]] = []
    after = cursor
    while True:  # two at a time: every change once, in journal order
        page = httpx.get(
            f"{field.post.api}/api/v1/changes", params={"after": after, "limit": 2}, headers=observer
        )
        body = page.json()
        if not body["changes"]:
            break
        seen += body["changes"]
        after = body["cursor"]
    seqs = [int(str(change["seq"])) for change in seen]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert missed <= {str(c["text"]) for c in seen if c["type"] == "message"}
    assert all("item" in change for change in seen)  # the whole item, not an id to fetch

    async def resume() -> list[dict[str, object]]:
        url = field.post.api.replace("http", "ws") + f"/api/v1/stream?token={field.tokens['observer']}"
        events: list[dict[str, object]] = []
        async with websockets.connect(f"{url}&after={cursor}") as stream:
            while not missed <= {str(e.get("text")) for e in events}:
                events.append(json.loads(await asyncio.wait_for(stream.recv(), 10)))
            await asyncio.to_thread(_send, field, "live again")
            while "live again" not in {str(e.get("text")) for e in events}:
                events.append(json.loads(await asyncio.wait_for(stream.recv(), 15)))
        return events

    events = asyncio.run(resume())
    journal_events = [e for e in events if "seq" in e]
    seqs = [int(str(e["seq"])) for e in journal_events]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "a change came twice or out of order"
    assert sum(e.get("text") == "live again" for e in events) == 1
