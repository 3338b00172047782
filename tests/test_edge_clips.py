"""Evidence clips: recorded at the edge with faces blurred, signed, carried as BULK bundles, verified.

The process test runs two real relay processes over IP (the command post and a helmet-camera unit):
``mesh112 video record`` on the unit records the synthetic scene, signs each segment and sends it;
the command post verifies and keeps it, journals a ``clip`` record and serves the file to an operator
with a token; ``mesh112 video verify`` checks the download offline with the authority's public key.
Forged clips (manifest altered, signed by another node, clip altered) are refused and counted.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import auth
from hypothesis import given, settings
from hypothesis import strategies as st

from analytics_edge.clip_wire import ClipDecodeError, decode_clip_bundle, encode_clip_bundle
from crypto.certificate import Authority
from crypto.errors import DecodeError
from crypto.evidence import ClipManifest, EvidenceError, sign_clip, verify_clip, verify_offline
from crypto.identity import Identity
from field.deployment import create_demo_deployment
from field.harness import free_port_base
from field.processes import operator_token, start_node, stop_all, wait_healthy, write_field

TESTS = Path(__file__).parent
CLIP = b"\x1aE\xdf\xa3" + bytes(range(256)) * 40  # stands in for a WebM file in the unit tests


def _signed(authority: Authority, identity: Identity) -> ClipManifest:
    now = int(time.time())
    certificate = authority.issue(identity.public, frozenset({"responder"}), "helmet", now + 3600, now=now)
    return sign_clip(
        identity, certificate, CLIP, camera=1, start=now, end=now + 10, frames=100, codec="vp8/webm"
    )


def test_a_signed_manifest_verifies_offline_and_survives_the_bundle() -> None:
    authority, identity = Authority.generate(), Identity.generate()
    manifest = _signed(authority, identity)
    verify_clip(manifest, CLIP, identity.public)
    assert verify_offline(manifest, CLIP, authority.public, authority.revocations).name == "helmet"
    decoded, clip = decode_clip_bundle(encode_clip_bundle(manifest, CLIP))
    assert decoded == manifest and clip == CLIP
    assert ClipManifest.decode(manifest.encode()) == manifest


def test_altered_clips_and_manifests_and_other_signers_are_refused() -> None:
    authority, identity, other = Authority.generate(), Identity.generate(), Identity.generate()
    manifest = _signed(authority, identity)
    with pytest.raises(EvidenceError, match="does not match"):
        verify_clip(manifest, CLIP[:-1] + b"\x00", identity.public)
    with pytest.raises(EvidenceError, match="not signed"):
        verify_clip(dataclasses.replace(manifest, end=manifest.end + 60), CLIP, identity.public)
    by_other = dataclasses.replace(_signed(authority, other), node_id=manifest.node_id)
    with pytest.raises(EvidenceError, match="not signed"):
        verify_clip(by_other, CLIP, identity.public)
    with pytest.raises(EvidenceError, match="another node"):
        verify_clip(manifest, CLIP, other.public)
    with pytest.raises(EvidenceError, match="certificate does not hold"):
        verify_offline(manifest, CLIP, Authority.generate().public, None)
    for payload in (b"", b"\xff\xff{}", b"\x00\x02{}" + CLIP, b"\x00\x05hello"):
        with pytest.raises(ClipDecodeError):
            decode_clip_bundle(payload)
    with pytest.raises(DecodeError):
        ClipManifest.decode(json.dumps({**dataclasses.asdict(manifest), "frames": "many"}).encode())


def _clip_records(api: str, token: str) -> list[dict[str, Any]]:
    records = httpx.get(f"{api}/api/v1/records", headers=auth(token), timeout=10).json()
    return [r for r in records if r.get("record_type", r.get("type")) == "clip"]


def test_a_unit_records_signed_clips_that_the_command_post_verifies_and_serves(tmp_path: Path) -> None:
    deployment = create_demo_deployment(tmp_path)
    post_node, unit_node = write_field(
        deployment,
        api_port=free_port_base(2),
        ip_port=free_port_base(2),
        chain=("command-post", "responder-2"),
    )
    post_id = deployment.node("Command Post").node_id.hex()
    unit_node.config.write_text(
        unit_node.config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false")
    )
    (tmp_path / "logs").mkdir()
    processes = [start_node(post_node, tmp_path / "logs")]
    try:
        wait_healthy([post_node])
        command = [sys.executable, "-m", "relay", "video", "record", "--node", str(unit_node.config)]
        command += ["--to", post_id, "--seconds", "4", "--segment", "2", "--wait", "60"]
        result = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, result.stderr[-3000:]
        lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
        clips = [line for line in lines if "clip" in line]
        assert len(clips) == 2 and lines[-1] == {"delivered": 2, "waiting": 0}, result.stdout
        for line in clips:
            local = Path(line["clip"])
            assert local.parent == unit_node.directory / "clips" and line["frames"] == 20
            assert hashlib.sha256(local.read_bytes()).hexdigest() == line["sha256"]

        token = operator_token(deployment, frozenset({"dispatcher"}), "dispatcher op")
        records = _clip_records(post_node.api, token)
        assert len(records) == 2 and all(r["body"]["verified"] for r in records), records
        assert {r["body"]["sha256"] for r in records} == {line["sha256"] for line in clips}
        assert len(list((post_node.directory / "clips").glob("*.webm"))) == 2
        body = next(r["body"] for r in records if r["body"]["sha256"] == clips[0]["sha256"])
        assert body["node"] == deployment.node("Responder 2").node_id.hex() and body["frames"] == 20
        download = httpx.get(post_node.api + body["download"], headers=auth(token), timeout=10)
        assert download.status_code == 200 and download.headers["content-type"] == "video/webm"
        assert download.content == Path(clips[0]["clip"]).read_bytes()
        assert httpx.get(post_node.api + body["download"], timeout=10).status_code == 401
        manifest = httpx.get(post_node.api + body["manifest_url"], headers=auth(token), timeout=10)
        assert manifest.status_code == 200
        missing = body["download"].replace(body["sha256"][:16], "0" * 16)
        assert httpx.get(post_node.api + missing, headers=auth(token), timeout=10).status_code == 404

        (tmp_path / "evidence.webm").write_bytes(download.content)
        (tmp_path / "evidence.json").write_bytes(manifest.content)
        verify = [sys.executable, "-m", "relay", "video", "verify", str(tmp_path / "evidence.webm")]
        verify += [str(tmp_path / "evidence.json"), "--authority", str(deployment.authority_dir)]
        checked = subprocess.run(verify, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 0, checked.stdout + checked.stderr[-2000:]
        assert json.loads(checked.stdout)["verified"] is True
        assert json.loads(checked.stdout)["name"] == "Responder 2"
        altered = bytearray(download.content)
        altered[len(altered) // 2] ^= 0xFF
        (tmp_path / "evidence.webm").write_bytes(bytes(altered))
        checked = subprocess.run(verify, capture_output=True, text=True, timeout=60)
        assert checked.returncode == 1 and json.loads(checked.stdout)["verified"] is False, checked.stdout

        forger = [sys.executable, str(TESTS / "clip_forger.py"), str(unit_node.config), post_id]
        forger.append(str(deployment.node("Responder 1").directory))
        forged = subprocess.run(forger, capture_output=True, text=True, timeout=120)
        assert forged.returncode == 0 and json.loads(forged.stdout) == {"delivered": 3}, forged.stderr[-3000:]
        refused = [r["body"] for r in _clip_records(post_node.api, token) if not r["body"]["verified"]]
        reasons = sorted(body["reason"] for body in refused)
        assert len(refused) == 3, refused
        assert sum("not signed by node" in reason for reason in reasons) == 2, reasons
        assert sum("does not match its manifest" in reason for reason in reasons) == 1, reasons
        counts = httpx.get(f"{post_node.api}/api/v1/apps/clip/counts", headers=auth(token), timeout=10).json()
        assert counts == {"verified": 2, "refused": 3}
        admin = operator_token(deployment, frozenset({"admin"}), "admin op")
        metrics = httpx.get(f"{post_node.api}/metrics", headers=auth(admin), timeout=10).text
        assert 'mesh112_evidence_clips_total{result="refused"} 3.0' in metrics, metrics[-2000:]
        assert len(list((post_node.directory / "clips").glob("*.webm"))) == 2
    finally:
        stop_all(processes)


def test_a_clip_recorded_while_the_post_is_unreachable_is_delivered_when_the_unit_runs_again(
    tmp_path: Path,
) -> None:
    """Store-and-forward: the command post is down while the unit records, so the clip stays in the
    unit's store; the unit's node run later (``mesh112 relay run``) delivers it, and it verifies."""
    deployment = create_demo_deployment(tmp_path)
    post_node, unit_node = write_field(
        deployment,
        api_port=free_port_base(2),
        ip_port=free_port_base(2),
        chain=("command-post", "responder-2"),
    )
    post_id = deployment.node("Command Post").node_id.hex()
    unit_node.config.write_text(
        unit_node.config.read_text().replace("[api]\nenabled = true", "[api]\nenabled = false")
    )
    command = [sys.executable, "-m", "relay", "video", "record", "--node", str(unit_node.config)]
    command += ["--to", post_id, "--seconds", "2", "--wait", "2"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines[-1] == {"delivered": 0, "waiting": 1}, result.stdout
    (tmp_path / "logs").mkdir()
    processes = [start_node(post_node, tmp_path / "logs")]
    try:
        wait_healthy([post_node])
        processes.append(start_node(unit_node, tmp_path / "logs"))
        token = operator_token(deployment, frozenset({"dispatcher"}), "dispatcher op")
        deadline = time.monotonic() + 60
        records: list[dict[str, Any]] = []
        while not records and time.monotonic() < deadline:
            records = _clip_records(post_node.api, token)
            time.sleep(0.5)
        assert len(records) == 1 and records[0]["body"]["verified"], records
        assert records[0]["body"]["sha256"] == lines[0]["sha256"]
    finally:
        stop_all(processes)


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.binary(max_size=600),
        st.builds(lambda body, tail: len(body).to_bytes(2, "big") + body + tail, st.binary(), st.binary()),
        st.builds(
            lambda doc: len(doc).to_bytes(2, "big") + doc,
            st.dictionaries(st.sampled_from(["camera", "node_id", "size", "x"]), st.integers()).map(
                lambda d: json.dumps(d).encode()
            ),
        ),
    )
)
def test_arbitrary_clip_bundles_raise_only_clip_decode_errors(payload: bytes) -> None:
    with contextlib.suppress(ClipDecodeError):
        decode_clip_bundle(payload)


def test_every_field_of_a_manifest_is_typed_and_bounded() -> None:
    manifest = _signed(Authority.generate(), Identity.generate())
    assert len(manifest.encode()) < 900
    fields = dataclasses.asdict(manifest)
    for name, bad in (("camera", -1), ("camera", 70_000), ("frames", True), ("sha256", 5), ("end", "x")):
        with pytest.raises(DecodeError):
            ClipManifest.decode(json.dumps({**fields, name: bad}).encode())
    with pytest.raises(DecodeError):
        ClipManifest.decode(json.dumps({**fields, "extra": 1}).encode())
    with pytest.raises(DecodeError):
        ClipManifest.decode(json.dumps({**fields, "start": float("inf")}).encode())


def test_offline_a_revoked_signer_fails_and_an_expired_one_holds_for_clips_recorded_before() -> None:
    authority, identity = Authority.generate(), Identity.generate()
    issued = int(time.time()) - 7200
    expires = issued + 3600  # an hour ago
    certificate = authority.issue(identity.public, frozenset({"responder"}), "helmet", expires, now=issued)
    times = {"start": issued + 60, "end": issued + 70}
    recorded = sign_clip(identity, certificate, CLIP, camera=0, frames=100, codec="vp8/webm", **times)
    assert verify_offline(recorded, CLIP, authority.public, authority.revocations).name == "helmet"
    revocations = authority.revoke(identity.node_id, "helmet lost")
    with pytest.raises(EvidenceError, match="revoked"):
        verify_offline(recorded, CLIP, authority.public, revocations)
