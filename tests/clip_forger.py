"""A unit process that sends three forged evidence clips to the command post, for
``tests/test_edge_clips.py``: a manifest altered after signing, a manifest naming this unit but signed
by another enrolled node, and a clip altered after its manifest was signed. Each travels as the real
unit would send it (a BULK bundle of kind CLIP over its IP link); it prints one JSON line and exits
once all three are delivered.

    python tests/clip_forger.py UNIT_NODE_TOML POST_ID_HEX OTHER_NODE_DIR
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from pathlib import Path
from typing import Any

from analytics_edge.clip_wire import encode_clip_bundle
from analytics_edge.clips import CODEC, record_clip
from analytics_edge.kinds import CLIP, register_kinds
from analytics_edge.synthetic import render, walking_past
from crypto.evidence import sign_clip
from crypto.keystore import load_certificate, load_identity
from relay import daemon
from relay.bundle import Destination, Priority
from relay.config import load_config
from relay.core.status import State


async def main(config_path: Path, post: bytes, other_dir: Path) -> None:
    config = load_config(config_path)
    stop = asyncio.Event()
    delivered: list[int] = []

    async def forge(node: Any) -> None:
        try:
            register_kinds(node.kinds)
            scene = walking_past()
            path = config.node.data_dir / "forged" / "clip.webm"
            start = time.time()
            recording = await asyncio.to_thread(
                record_clip, lambda t: render(scene, t), path, seconds=1.0, offset_s=0.0, start=start
            )
            clip = recording.path.read_bytes()
            fields: dict[str, Any] = {
                "camera": 0,
                "start": start,
                "end": recording.end,
                "frames": recording.frames,
                "codec": CODEC,
            }
            own = sign_clip(node.engine.identity, node.engine.certificate, clip, **fields)
            other_identity, other_certificate = load_identity(other_dir), load_certificate(other_dir)
            assert other_certificate is not None
            by_other = sign_clip(other_identity, other_certificate, clip, **fields)
            forgeries = [
                (dataclasses.replace(own, camera=7), clip),  # manifest altered after signing
                (dataclasses.replace(by_other, node_id=own.node_id, certificate=own.certificate), clip),
                (own, clip[:-1] + bytes([clip[-1] ^ 1])),  # clip altered after signing
            ]
            sent = [
                await node.send(
                    Destination.to_node(post),
                    encode_clip_bundle(manifest, data),
                    kind=CLIP,
                    priority=Priority.BULK,
                    lifetime=3600,
                )
                for manifest, data in forgeries
            ]
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and any(node.status(b).state != State.DELIVERED for b in sent):
                await asyncio.sleep(0.2)
            delivered.append(sum(node.status(b).state == State.DELIVERED for b in sent))
        finally:
            stop.set()

    await daemon.run(config, stop, apps=[forge])
    print(json.dumps({"delivered": delivered[0] if delivered else 0}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), bytes.fromhex(sys.argv[2]), Path(sys.argv[3])))
