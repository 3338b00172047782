"""Video that arrives over the WebRTC link, at the command post: recorded, and relayed to viewers.

One uplink from the field serves every viewer: :class:`VideoHub` keeps each unit's incoming track
behind an aiortc ``MediaRelay``, so a dashboard tile, the recorder and a test probe each subscribe
without asking the unit for another stream. Each stream is recorded to ``<directory>/<node id>-<UTC
time>.webm`` (VP8 at the first frame's size; the sender's resolution ladder is scaled back to it).

A lost packet that retransmission does not recover stalls aiortc's video jitter buffer until 512
later packets have arrived, then it asks for a keyframe: at 64 kbit/s that is half a minute of frozen
picture. The hub bounds it to :data:`VIDEO_JITTER_PACKETS` (process-wide: aiortc builds the buffer
inside its receiver), enough for a 640x480 keyframe and about two seconds at 64 kbit/s.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import av
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCSessionDescription,
    rtcrtpreceiver,
)
from aiortc.contrib.media import MediaRecorder, MediaRelay
from aiortc.jitterbuffer import JitterBuffer
from aiortc.mediastreams import MediaStreamError

from crypto.identity import display_id
from relay.links.webrtc import WebRtcLink

log = logging.getLogger(__name__)

VIDEO_JITTER_PACKETS = 32


class _BoundedJitterBuffer(JitterBuffer):
    def __init__(self, capacity: int, prefetch: int = 0, is_video: bool = False) -> None:
        super().__init__(min(capacity, VIDEO_JITTER_PACKETS) if is_video else capacity, prefetch, is_video)


class _FixedSize(MediaStreamTrack):
    """The frames of ``track`` at the size of its first frame (a recorder's encoder cannot change size)."""

    kind = "video"

    def __init__(self, track: MediaStreamTrack) -> None:
        super().__init__()
        self._track = track
        self._size: tuple[int, int] | None = None

    async def recv(self) -> av.VideoFrame:
        frame = await self._track.recv()
        assert isinstance(frame, av.VideoFrame)
        if self._size is None:
            self._size = (frame.width, frame.height)
        if (frame.width, frame.height) == self._size:
            return frame
        scaled = frame.reformat(width=self._size[0], height=self._size[1])
        scaled.pts, scaled.time_base = frame.pts, frame.time_base
        return scaled


class VideoHub:
    def __init__(self, directory: Path | None) -> None:
        rtcrtpreceiver.JitterBuffer = _BoundedJitterBuffer  # type: ignore[attr-defined]
        self.directory = directory
        self.streams: dict[bytes, MediaStreamTrack] = {}  # the current track of each unit
        self.recordings: dict[bytes, Path] = {}
        self._relay = MediaRelay()
        self._recorders: dict[bytes, MediaRecorder] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._viewers: set[RTCPeerConnection] = set()

    def attach(self, link: WebRtcLink) -> None:
        link.video_sink = self

    def incoming(self, peer: bytes, track: MediaStreamTrack) -> None:
        """A unit's video arrived (a new one replaces its previous stream, e.g. after an ICE restart)."""
        log.info("video from %s", display_id(peer))
        self.streams[peer] = track
        if self.directory is not None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            path = self.directory / f"{peer.hex()}-{stamp}.webm"
            recorder = MediaRecorder(str(path))
            recorder.addTrack(_FixedSize(self._relay.subscribe(track)))
            self._replace_recorder(peer, recorder)
            self.recordings[peer] = path
            self._spawn(recorder.start())

    def subscribe(self, peer: bytes) -> MediaStreamTrack:
        """A viewer's own copy of ``peer``'s live video; raises KeyError if none is arriving."""
        track = self.streams[peer]
        if track.readyState == "ended":
            raise KeyError(peer)
        return self._relay.subscribe(track)

    def live(self) -> list[bytes]:
        """The units whose video is arriving now (what a console can offer to show)."""
        return [peer for peer, track in self.streams.items() if track.readyState != "ended"]

    def viewers(self) -> int:
        """Viewers (browsers) connected now; they share each unit's one uplink."""
        return len(self._viewers)

    async def view(self, peer: bytes, offer_sdp: str) -> str:
        """Answer a viewer's (a browser's) offer with ``peer``'s live video; the answer's SDP. No STUN:
        the viewer reaches the command post directly. Candidates that are not IPv4 literals (mDNS
        ``.local`` names, IPv6) are dropped from the offer: aioice would only wait on them."""
        track = self.subscribe(peer)
        lines = offer_sdp.replace("\r\n", "\n").split("\n")
        kept = [line for line in lines if not line.startswith("a=candidate:") or _ipv4_candidate(line)]
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        self._viewers.add(pc)

        @pc.on("connectionstatechange")
        async def _state() -> None:
            if pc.connectionState in ("failed", "closed"):
                self._viewers.discard(pc)
                await pc.close()

        pc.addTrack(track)
        await pc.setRemoteDescription(RTCSessionDescription("\r\n".join(kept), "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return str(pc.localDescription.sdp)

    async def close(self) -> None:
        viewers, self._viewers = list(self._viewers), set()
        await asyncio.gather(*(pc.close() for pc in viewers), return_exceptions=True)
        for recorder in self._recorders.values():
            with contextlib.suppress(MediaStreamError, ValueError, av.FFmpegError):
                await recorder.stop()
        self._recorders.clear()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _replace_recorder(self, peer: bytes, recorder: MediaRecorder) -> None:
        old = self._recorders.pop(peer, None)
        if old is not None:
            self._spawn(old.stop())
        self._recorders[peer] = recorder

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)


def _ipv4_candidate(line: str) -> bool:
    fields = line.split()
    return len(fields) > 4 and fields[4].count(".") == 3 and not fields[4].endswith(".local")
