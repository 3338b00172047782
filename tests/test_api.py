"""The relay API against a real command post process: every endpoint, every role, hostile bodies.

A command post and one field relay run as ``mesh112 relay run`` processes on loopback; the tests talk
to the command post's API over real HTTP and WebSocket, with tokens issued by the real authority.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import websockets
from conftest import Field, auth

from relay.api.permissions import MATRIX, Action


def _endpoints(field: Field) -> list[tuple[Action, str, str, dict[str, object] | None]]:
    some_id = "00" * 22
    return [
        (
            Action.SEND_MESSAGE,
            "POST",
            "/api/v1/messages",
            {"to": f"node:{field.relay_id}", "text": "role test"},
        ),
        (
            Action.REPORT_POSITION,
            "POST",
            "/api/v1/positions",
            {"lat": 48.1, "lon": 11.5, "to": f"node:{field.relay_id}"},
        ),
        (Action.READ_MESSAGES, "GET", "/api/v1/messages", None),
        (Action.READ_STATUS, "GET", f"/api/v1/bundles/{some_id}", None),
        (Action.READ_STATUS, "GET", "/api/v1/whoami", None),
        (Action.READ_UNITS, "GET", "/api/v1/units", None),
        (Action.READ_LINKS, "GET", "/api/v1/links", None),
        (Action.READ_OWN_RECORDS, "GET", "/api/v1/records", None),  # a building: only its own
        (Action.ACK_RECORD, "POST", "/api/v1/records/nope/ack", {"action": "on our way"}),
        (Action.METRICS, "GET", "/metrics", None),
    ]


def test_healthz_is_open_and_everything_else_needs_a_token(field: Field) -> None:
    base = field.post.api
    assert httpx.get(f"{base}/healthz").json()["status"] == "ok"
    for _, method, path, body in _endpoints(field):
        response = httpx.request(method, base + path, json=body)
        assert response.status_code == 401, path
        assert "token" in response.json()["detail"]
        bad = httpx.request(method, base + path, json=body, headers=auth("m112.garbage.token"))
        assert bad.status_code == 401, path


def test_permission_matrix_endpoint_by_endpoint(field: Field) -> None:
    base = field.post.api
    table = []
    for role, token in field.tokens.items():
        for action, method, path, body in _endpoints(field):
            response = httpx.request(method, base + path, json=body, headers=auth(token))
            expected = role in MATRIX[action]
            table.append((role, method, path, response.status_code))
            if expected:
                assert response.status_code not in (401, 403), (role, path, response.text)
                assert response.status_code < 500, (role, path, response.text)
            else:
                assert response.status_code == 403, (role, path, response.text)
                assert role in response.json()["detail"] or "may not" in response.json()["detail"]
    print("\nrole        method path                                   status")
    for row in table:
        print(f"{row[0]:<11} {row[1]:<6} {row[2]:<40} {row[3]}")


def test_message_goes_out_and_status_becomes_delivered(field: Field) -> None:
    base = field.post.api
    token = field.tokens["dispatcher"]
    sent = httpx.post(
        f"{base}/api/v1/messages",
        json={"to": f"node:{field.relay_id}", "text": "evacuate sector 4", "priority": "FLASH"},
        headers=auth(token),
    )
    assert sent.status_code == 202, sent.text
    bundle_id = sent.json()["bundle_id"]
    state = ""
    for _ in range(100):
        state = httpx.get(f"{base}/api/v1/bundles/{bundle_id}", headers=auth(token)).json()["state"]
        if state == "delivered":
            break
        time.sleep(0.1)
    assert state == "delivered"
    links = httpx.get(f"{base}/api/v1/links", headers=auth(token)).json()
    assert [link["peer"] for link in links] == [field.relay_id]


def test_messages_from_the_field_reach_the_journal_and_the_stream(field: Field) -> None:
    async def scenario() -> dict[str, object]:
        url = field.post.api.replace("http", "ws") + f"/api/v1/stream?token={field.tokens['observer']}"
        async with websockets.connect(url) as stream:
            async with httpx.AsyncClient() as client:
                response = await client.post(
                    f"{field.relay.api}/api/v1/messages",
                    json={"to": f"node:{field.post_id}", "text": "water needed at shelter 3"},
                    headers=auth(field.field_token),
                )
                assert response.status_code == 202, response.text
            while True:
                event = json.loads(await asyncio.wait_for(stream.recv(), 10))
                if event["type"] == "message":
                    return event

    event = asyncio.run(scenario())
    assert event["text"] == "water needed at shelter 3"
    listed = httpx.get(f"{field.post.api}/api/v1/messages", headers=auth(field.tokens["observer"])).json()
    assert any(m["text"] == "water needed at shelter 3" for m in listed)
    units = httpx.get(f"{field.post.api}/api/v1/units", headers=auth(field.tokens["observer"])).json()
    assert any(u["node_id"] == field.relay_id for u in units)


def test_a_position_from_the_field_reaches_units_and_the_stream(field: Field) -> None:
    fixed = time.time() - 5

    async def scenario() -> dict[str, object]:
        url = field.post.api.replace("http", "ws") + f"/api/v1/stream?token={field.tokens['observer']}"
        async with websockets.connect(url) as stream:
            async with httpx.AsyncClient() as client:
                response = await client.post(  # no "to": the relay's node.toml names the command post
                    f"{field.relay.api}/api/v1/positions",
                    json={"lat": -33.8567844, "lon": 151.2152967, "accuracy_m": 7.5, "fixed": fixed},
                    headers=auth(field.field_token),
                )
                assert response.status_code == 202, response.text
            for _ in range(200):
                event = json.loads(await asyncio.wait_for(stream.recv(), 10))
                if event["type"] == "position":
                    return event
            raise AssertionError("no position event among 200 stream events")

    event = asyncio.run(scenario())
    assert (event["origin"], event["lat"], event["lon"]) == (field.relay_id, -33.8567844, 151.2152967)
    assert (event["accuracy_m"], event["fixed"]) == (8, int(fixed))
    units = httpx.get(f"{field.post.api}/api/v1/units", headers=auth(field.tokens["observer"])).json()
    [relay] = [u for u in units if u["node_id"] == field.relay_id]
    assert (relay["lat"], relay["lon"], relay["fixed"], relay["accuracy_m"]) == (
        -33.8567844,
        151.2152967,
        int(fixed),
        8,
    )
    assert relay["last_heard"] >= fixed


def test_hostile_positions_are_refused_and_nothing_is_sent(field: Field) -> None:
    headers = auth(field.tokens["dispatcher"])
    to = f"node:{field.relay_id}"
    for body in (
        {"lat": 90.5, "lon": 0, "to": to},
        {"lat": 0, "lon": -181, "to": to},
        {"lat": 0, "to": to},
        {"lat": 0, "lon": 0, "accuracy_m": -1, "to": to},
        {"lat": 0, "lon": 0, "accuracy_m": 1e9, "to": to},
        {"lat": 0, "lon": 0, "altitude_m": 99_999, "to": to},
        {"lat": 0, "lon": 0, "fixed": time.time() + 3600, "to": to},
        {"lat": 0, "lon": 0, "fixed": 1000.0, "to": to},
        {"lat": 0, "lon": 0, "to": "planet:mars"},
        {"lat": "north", "lon": 0, "to": to},
    ):
        response = httpx.post(f"{field.post.api}/api/v1/positions", json=body, headers=headers)
        assert response.status_code == 422, (body, response.text)
    for raw in (b'{"lat": NaN, "lon": 0, "to": "all"}', b'{"lat": Infinity, "lon": 0, "to": "all"}'):
        response = httpx.post(f"{field.post.api}/api/v1/positions", content=raw, headers=headers)
        assert response.status_code == 422, (raw, response.text)
    nowhere = httpx.post(f"{field.post.api}/api/v1/positions", json={"lat": 1, "lon": 2}, headers=headers)
    assert nowhere.status_code == 422  # the command post's own node.toml names no command post
    assert "command_post" in nowhere.json()["detail"]


def test_stream_refuses_missing_or_unprivileged_tokens(field: Field) -> None:
    async def close_code(token: str | None) -> int | None:
        url = field.post.api.replace("http", "ws") + "/api/v1/stream" + (f"?token={token}" if token else "")
        async with websockets.connect(url) as stream:
            with pytest.raises(websockets.ConnectionClosed):
                await asyncio.wait_for(stream.recv(), 5)
            return stream.close_code

    assert asyncio.run(close_code(None)) == 4401
    assert asyncio.run(close_code(field.tokens["camera"])) == 4403


def test_hostile_bodies_are_refused_and_nothing_is_sent(field: Field) -> None:
    base = field.post.api
    headers = auth(field.tokens["dispatcher"])
    before = httpx.get(f"{base}/metrics", headers=auth(field.tokens["admin"])).text
    huge = httpx.post(f"{base}/api/v1/messages", content=b"{" + b" " * 70_000 + b"}", headers=headers)
    assert huge.status_code == 413
    for body in (
        {"to": "node:zz", "text": "x"},
        {"to": "planet:mars", "text": "x"},
        {"to": "all", "text": ""},
        {"to": "all", "text": "x" * 5000},
        {"to": "all", "text": "x", "priority": "URGENT"},
        {"to": "all", "text": "x", "lifetime_s": -1},
    ):
        assert httpx.post(f"{base}/api/v1/messages", json=body, headers=headers).status_code == 422, body
    not_json = httpx.post(f"{base}/api/v1/messages", content=b"\xff\xfe", headers=headers)
    assert not_json.status_code == 422
    assert httpx.get(f"{base}/api/v1/bundles/not-an-id", headers=headers).status_code == 404
    after = httpx.get(f"{base}/metrics", headers=auth(field.tokens["admin"])).text
    sent = [line for line in after.splitlines() if line.startswith("mesh112_api_messages_sent_total")]
    sent_before = [line for line in before.splitlines() if line.startswith("mesh112_api_messages_sent_total")]
    assert sent == sent_before


def test_a_destination_this_node_cannot_seal_for_is_a_clear_422_and_the_connection_lives_on(
    field: Field,
) -> None:
    with httpx.Client(base_url=field.post.api, headers=auth(field.tokens["dispatcher"])) as client:
        stranger = client.post("/api/v1/messages", json={"to": "node:" + "ab" * 16, "text": "x"})
        assert stranger.status_code == 422
        assert "abababab has no certificate known to this node" in stranger.json()["detail"]
        no_key = client.post("/api/v1/messages", json={"to": "role:plumbers", "text": "x"})
        assert no_key.status_code == 422
        assert "no key for group 'plumbers'" in no_key.json()["detail"]
        assert client.get("/api/v1/units").status_code == 200  # same keep-alive connection


def test_rate_limit_answers_429_with_retry_after(field: Field) -> None:
    headers = auth(field.tokens["observer"])

    async def burst() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=50)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            url = f"{field.post.api}/api/v1/units"
            return list(await asyncio.gather(*(client.get(url, headers=headers) for _ in range(200))))

    responses = asyncio.run(burst())
    codes = {response.status_code for response in responses}
    assert codes == {200, 429}
    limited = next(r for r in responses if r.status_code == 429)
    assert int(limited.headers["Retry-After"]) >= 0
    assert "rate limit" in limited.json()["detail"]


def test_schemathesis_finds_no_server_error(field: Field, tmp_path: Path) -> None:
    command = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        f"{field.post.api}/openapi.json",
        "--checks",
        "not_a_server_error",
        "--max-examples",
        "25",
        "--header",
        f"Authorization: Bearer {field.tokens['admin']}",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
