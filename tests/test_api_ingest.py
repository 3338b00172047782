"""The applications' fast door (relay/api/routes_ingest.py) on the real two-node field: the batch
endpoint and the local ingest socket send every message once, answer per message, and refuse
those who may not send."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import httpx
import pytest
import websockets
from conftest import Field, auth

from relay.api.routes_ingest import MAX_IN_FLIGHT


def _journal_texts(field: Field, marker: str, want: int) -> list[str]:
    """Texts carrying ``marker`` in the command post's journal, once ``want`` arrived (or 30 s)."""
    deadline = time.monotonic() + 30
    found: list[str] = []
    while time.monotonic() < deadline:
        listed = httpx.get(
            f"{field.post.api}/api/v1/messages",
            params={"limit": 1000, "origin": field.relay_id},
            headers=auth(field.tokens["observer"]),
        ).json()
        found = [m["text"] for m in listed if marker in m["text"]]
        if len(found) >= want:
            break
        time.sleep(0.2)
    return found


def test_a_batch_is_sent_once_per_message_with_a_result_for_each(field: Field) -> None:
    marker = uuid.uuid4().hex[:8]
    messages = [{"to": f"node:{field.post_id}", "text": f"{marker} batch {n}"} for n in range(200)]
    messages[17] = {"to": "node:" + "ab" * 16, "text": f"{marker} nobody"}  # no such node in the roster
    started = time.perf_counter()
    response = httpx.post(
        f"{field.relay.api}/api/v1/messages/batch",
        json={"messages": messages},
        headers=auth(field.field_token),
        timeout=30,
    )
    elapsed = time.perf_counter() - started
    assert response.status_code == 202, response.text
    body = response.json()
    results = body["results"]
    assert len(results) == 200 and body["accepted"] == 199
    assert "error" in results[17] and "bundle_id" not in results[17]
    assert "no certificate" in results[17]["error"]
    openapi = httpx.get(f"{field.relay.api}/openapi.json").json()
    answer = openapi["paths"]["/api/v1/messages/batch"]["post"]["responses"]["202"]
    assert answer["content"]["application/json"]["schema"]["$ref"].endswith("/BatchAnswer")
    ids = [r["bundle_id"] for n, r in enumerate(results) if n != 17]
    assert len(set(ids)) == 199
    print(f"\nbatch of 200 durable in {elapsed * 1000:.0f} ms ({200 / elapsed:.0f} messages/s)")
    texts = _journal_texts(field, marker, 199)
    assert sorted(texts) == sorted(m["text"] for n, m in enumerate(messages) if n != 17)  # each once


def test_a_batch_needs_the_send_permission_and_has_a_size_limit(field: Field) -> None:
    url = f"{field.relay.api}/api/v1/messages/batch"
    one = {"messages": [{"to": f"node:{field.post_id}", "text": "x"}]}
    assert httpx.post(url, json=one).status_code == 401
    assert httpx.post(url, json=one, headers=auth(field.tokens["observer"])).status_code == 403
    empty = httpx.post(url, json={"messages": []}, headers=auth(field.field_token))
    assert empty.status_code == 422
    too_many = {"messages": [{"to": "all", "text": "x"}] * 501}
    assert httpx.post(url, json=too_many, headers=auth(field.field_token)).status_code == 422


def test_the_ingest_socket_takes_pipelined_batches_and_answers_each_by_ref(field: Field) -> None:
    marker = uuid.uuid4().hex[:8]
    frames, per_frame = 6, 100
    url = field.relay.api.replace("http", "ws") + f"/api/v1/ingest?token={field.field_token}"

    async def scenario() -> tuple[dict[object, list[dict[str, str]]], float]:
        answers: dict[object, list[dict[str, str]]] = {}
        async with websockets.connect(url) as socket:
            await socket.send("not json")
            refused = json.loads(await asyncio.wait_for(socket.recv(), 10))
            assert "not a batch" in refused["error"]
            started = time.perf_counter()
            for f in range(frames):  # all sent before any answer is read
                batch = [
                    {"to": f"node:{field.post_id}", "text": f"{marker} socket {f}/{n}"}
                    for n in range(per_frame)
                ]
                if f == 2:  # one message no name resolves: answered on its own, the frame's others go
                    batch[5] = {"to": "nobody-here", "text": f"{marker} lost"}
                await socket.send(json.dumps({"ref": f, "messages": batch}))
            while len(answers) < frames:
                answer = json.loads(await asyncio.wait_for(socket.recv(), 30))
                answers[answer["ref"]] = answer["results"]
            return answers, time.perf_counter() - started

    answers, elapsed = asyncio.run(scenario())
    assert sorted(answers) == list(range(frames))  # type: ignore[type-var]
    assert "no node known here is named 'nobody-here'" in answers[2][5]["error"]
    ids = [r["bundle_id"] for results in answers.values() for r in results if "bundle_id" in r]
    assert len(ids) == len(set(ids)) == frames * per_frame - 1
    print(f"\ningest socket: {len(ids)} durable in {elapsed * 1000:.0f} ms ({len(ids) / elapsed:.0f} msg/s)")
    assert len(_journal_texts(field, marker, len(ids))) == len(ids)


@pytest.mark.parametrize(("role", "code"), [(None, 4401), ("garbage", 4401), ("observer", 4403)])
def test_the_ingest_socket_refuses_without_a_sending_token(field: Field, role: str | None, code: int) -> None:
    token = (
        {None: "", "garbage": "m112.garbage.token"}.get(role) if role != "observer" else field.tokens[role]
    )
    url = field.relay.api.replace("http", "ws") + "/api/v1/ingest" + (f"?token={token}" if token else "")

    async def scenario() -> int | None:
        async with websockets.connect(url) as socket:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(socket.recv(), 10)
            return socket.close_code

    assert asyncio.run(scenario()) == code


def test_frames_sent_before_the_client_leaves_are_all_sent_and_the_door_stays_open(field: Field) -> None:
    """A client that closes without reading its answers: every frame it sent before its close was
    taken, so each message arrives once; the next client is served as usual."""
    marker = uuid.uuid4().hex[:8]
    url = field.relay.api.replace("http", "ws") + f"/api/v1/ingest?token={field.field_token}"
    frames = MAX_IN_FLIGHT + 8  # the last frames are read after answers found the client gone
    texts = [f"{marker} gone {f}/{n}" for f in range(frames) for n in range(5)]

    async def scenario() -> dict[str, object]:
        async with websockets.connect(url) as socket:
            for f in range(frames):
                batch = [{"to": f"node:{field.post_id}", "text": t} for t in texts[f * 5 : (f + 1) * 5]]
                await socket.send(json.dumps({"ref": f, "messages": batch}))
        async with websockets.connect(url) as socket:
            await socket.send(json.dumps({"ref": "next", "messages": [{"to": "all", "text": f"{marker} x"}]}))
            return dict(json.loads(await asyncio.wait_for(socket.recv(), 10)))

    answer = asyncio.run(scenario())
    assert answer["ref"] == "next" and "bundle_id" in answer["results"][0]  # type: ignore[index]
    assert sorted(_journal_texts(field, f"{marker} gone", len(texts))) == sorted(texts)


def _unix_session(field: Field, token: str, lines: list[dict[str, object]]) -> list[dict[str, object]]:
    """Open the relay's ingest Unix socket, send the token line then ``lines``; the answers (the
    token's first), until as many as lines sent or the socket closes."""
    import socket

    from relay.api.ingest_unix import SOCKET_FILE

    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(field.relay.directory / SOCKET_FILE))
        reader = sock.makefile("rb")
        sock.sendall(json.dumps({"token": token}).encode() + b"\n")
        answers = [json.loads(reader.readline() or b"null")]
        if answers[0] is None or "error" in answers[0]:
            return answers
        for line in lines:  # pipelined: every line goes before any answer is read
            sock.sendall(json.dumps(line).encode() + b"\n")
        while len(answers) <= len(lines):
            answers.append(json.loads(reader.readline()))
        return answers


def test_the_ingest_unix_socket_takes_batches_for_the_node_s_own_user_only(field: Field) -> None:
    import stat

    from relay.api.ingest_unix import SOCKET_FILE

    path = field.relay.directory / SOCKET_FILE
    assert stat.S_ISSOCK(path.stat().st_mode) and stat.S_IMODE(path.stat().st_mode) == 0o600
    marker = uuid.uuid4().hex[:8]
    frames = [
        {
            "ref": f,
            "messages": [
                {"to": f"node:{field.post_id}", "text": f"{marker} unix {f}/{n}"} for n in range(50)
            ],
        }
        for f in range(4)
    ]
    frames[1]["messages"][3] = {"to": "nobody-here", "text": f"{marker} lost"}  # type: ignore[index]
    answers = _unix_session(field, field.field_token, [*frames, {"messages": []}])
    assert answers[0] == {"ready": True}
    [refused] = [a for a in answers[1:] if "ref" not in a]  # answered as soon as it was read
    assert "not a batch" in str(refused["error"])
    by_ref = {a["ref"]: a["results"] for a in answers[1:] if "ref" in a}
    assert sorted(by_ref) == [0, 1, 2, 3]  # type: ignore[type-var]
    assert "no node known here is named 'nobody-here'" in by_ref[1][3]["error"]  # type: ignore[index]
    sent = [r["bundle_id"] for results in by_ref.values() for r in results if "bundle_id" in r]  # type: ignore[attr-defined]
    assert len(sent) == len(set(sent)) == 199
    assert len(_journal_texts(field, f"{marker} unix", 199)) == 199


@pytest.mark.parametrize("role", ["garbage", "observer"])
def test_the_ingest_unix_socket_refuses_a_token_that_may_not_send(field: Field, role: str) -> None:
    token = "m112.garbage.token" if role == "garbage" else field.tokens[role]
    [answer] = _unix_session(field, token, [{"messages": [{"to": "all", "text": "x"}]}])
    assert "error" in answer and ("may not send" in str(answer["error"])) == (role == "observer")


def test_the_ingest_unix_socket_answers_an_over_long_line_and_sends_nothing_of_it(field: Field) -> None:
    import socket

    from relay.api.ingest_unix import MAX_LINE, SOCKET_FILE

    marker = uuid.uuid4().hex[:8]
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(30)
        sock.connect(str(field.relay.directory / SOCKET_FILE))
        reader = sock.makefile("rb")
        sock.sendall(json.dumps({"token": field.field_token}).encode() + b"\n")
        assert json.loads(reader.readline()) == {"ready": True}
        batch = {"ref": 1, "messages": [{"to": f"node:{field.post_id}", "text": f"{marker} long"}]}
        line = json.dumps(batch).encode()
        sock.sendall(line[:-1] + b" " * (MAX_LINE + 1 - len(line)) + b"}\n")
        answer = json.loads(reader.readline())
        assert answer == {"error": f"a line is longer than {MAX_LINE} bytes"}
        assert reader.readline() == b""  # the door closed: the rest of the stream has no line boundary
    after = {"ref": 2, "messages": [{"to": f"node:{field.post_id}", "text": f"{marker} after"}]}
    assert "bundle_id" in str(_unix_session(field, field.field_token, [after])[1])  # the door still serves
    assert _journal_texts(field, marker, 1) == [f"{marker} after"]  # and nothing of the long line was sent
