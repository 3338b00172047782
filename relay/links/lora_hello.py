"""LoRa hellos: a device enrolled after its LoRa neighbours started introduces itself over the air.

A LoRa link believes a frame only from a radio in its roster (Meshtastic node number -> node id)
whose certificate it holds, because the hop tag's key comes from that certificate. A device
enrolled later is in neither, so its neighbours drop everything it sends. So before the first
frame to a neighbour, and again whenever that neighbour has been silent for :data:`HELLO_EVERY_S`,
a link sends its own certificate as a CERT frame (:mod:`relay.core.frames`) with the usual hop tag.

A neighbour that does not know the sending radio (or its certificate) checks the hello on its own:
the certificate must verify through :meth:`relay.trust.TrustStore.learn` (the deployment
authority's, unexpired, unrevoked) and the hop tag must verify under that certificate's key, so
only the holder of the enrolled private key can introduce itself, and a recorded hello cannot be
played back (the tag's stamp is single-use). Then the radio number is mapped to the node id and the
neighbour is up. The hello rides on the traffic the node sends anyway: no timer, no wake-up.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from crypto.certificate import Certificate
from crypto.errors import CryptoError, DecodeError
from crypto.hop import HOP_OVERHEAD, HopAuth
from relay.core.frames import CERT_CHUNK, CertFrame, FrameType, encode_frame
from relay.ratelimit import RateLimiter

HELLO_EVERY_S = 1800.0  # twice the LoRa beacon interval: one ~2 s frame per silent neighbour per 30 min
HELLOS_PER_S, HELLO_BURST = 1.0, 8.0  # hellos from unknown radios checked (an X25519 and an Ed25519)

Learn = Callable[[Certificate], object]  # TrustStore.learn at the current time; raises CryptoError


class HelloRefusedError(CryptoError):
    """A hello that does not introduce an enrolled node; ``reason`` is the link's refusal counter."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class LoRaHello:
    """One link's hellos: when to send its own, and the check of a stranger's."""

    def __init__(self, hop: HopAuth, certificate: Certificate, learn: Learn) -> None:
        self.hop = hop
        self.certificate = certificate
        self._learn = learn
        data = certificate.encode()
        # One frame or none: a certificate of 64-byte names and many roles must be in the roster.
        self.frame = encode_frame(CertFrame(0, 1, data)) if len(data) <= CERT_CHUNK else None
        self._heard: dict[bytes, float] = {}  # peer -> monotonic time of its last believed frame
        self._said: dict[bytes, float] = {}  # peer -> monotonic time of our last hello to it
        self._checks: RateLimiter[str] = RateLimiter(HELLOS_PER_S, HELLO_BURST)
        self.sent = 0
        self.learned = 0

    def due(self, peer: bytes, now: float | None = None) -> bytes | None:
        """Our hello for ``peer`` if it is due before the next frame to it, else None; call
        :meth:`said` once it is sent."""
        now = time.monotonic() if now is None else now
        if self.frame is None:
            return None
        silent = now - self._heard.get(peer, -HELLO_EVERY_S) >= HELLO_EVERY_S
        if not silent or now - self._said.get(peer, -HELLO_EVERY_S) < HELLO_EVERY_S:
            return None
        return self.frame

    def said(self, peer: bytes, now: float | None = None) -> None:
        self._said[peer] = time.monotonic() if now is None else now
        self.sent += 1

    def heard(self, peer: bytes, now: float | None = None) -> None:
        """A frame of ``peer`` passed its hop tag: it knows us, no hello needed for a while."""
        self._heard[peer] = time.monotonic() if now is None else now

    @staticmethod
    def is_hello(payload: bytes) -> bool:
        """Whether a tagged payload holds a whole certificate in one CERT frame."""
        return len(payload) > HOP_OVERHEAD + 3 and payload[:3] == bytes((FrameType.CERT << 4, 0, 1))

    def check(self, payload: bytes, now: float) -> Certificate:
        """The certificate a stranger's tagged hello proves (``now`` in Mesh112 epoch seconds), learned;
        else :class:`HelloRefusedError`."""
        if not self.is_hello(payload):
            raise HelloRefusedError("bad_hello", "not a hello: one CERT frame of one slice, hop-tagged")
        frame = payload[:-HOP_OVERHEAD]
        if self._checks.take("", time.monotonic()) > 0:
            raise HelloRefusedError("hello_rate", f"more than {HELLOS_PER_S:g} hello/s from unknown radios")
        try:
            certificate = Certificate.decode(frame[3:])
        except DecodeError as exc:
            raise HelloRefusedError("bad_hello", f"hello certificate does not decode: {exc}") from None
        try:
            self.hop.check(certificate.public, payload, now)
        except CryptoError as exc:
            raise HelloRefusedError(
                "bad_hello", f"hello of {certificate.name!r} not signed by it: {exc}"
            ) from None
        try:
            self._learn(certificate)
        except CryptoError as exc:
            raise HelloRefusedError("bad_hello", f"hello of {certificate.name!r} refused: {exc}") from None
        self.learned += 1
        return certificate
