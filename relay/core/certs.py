"""Certificates on demand: a node takes bundles of an origin it has never met by asking the neighbour
that hands them over for that origin's certificate (sans I/O: frames and ``now`` in, frames out).

A node enrolled after the field started (an app enrolled by QR) is known to the nodes it met, and
an IP handshake teaches its first hop its certificate; the nodes further away hold no certificate
for it and would drop its bundles. So when a DATA frame names an origin this node holds no
certificate for, the frame is parked here (not given to the core, so no custody ACK goes back and
the sender keeps its copy) and a CERT_REQUEST naming the origin, by node id or by the short id of
a compact header, goes back to the neighbour that sent it. That neighbour stored the bundle, so it
checked the origin and holds the certificate: it answers with CERT slices (rate-limited per
neighbour). The certificate is believed only through :meth:`relay.trust.TrustStore.learn`: signed
by the deployment authority, unexpired, not revoked, its short id nobody else's. Then the parked
frames are handed back to the engine, which handles them as if they had just arrived: stored, and
only then acknowledged.

Pull, not push: a node asks only for what it needs, once per origin and neighbour, so no
certificate crosses LoRa that nobody wanted. Everything is bounded: parked frames per neighbour, in
all and in bytes, for at most :data:`PARK_S`; requests per neighbour and answers per neighbour. A
frame that does not fit is refused with a log line and counted (``unknown_origins_refused``); its
sender keeps it and sends it again later. A certificate that does not verify is counted
(``bad_certificates``) and the frames waiting for it are dropped. None of this touches the store.
"""

from __future__ import annotations

import hashlib
import logging
from collections import Counter, OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from crypto.certificate import Certificate
from crypto.errors import CryptoError
from crypto.identity import display_id
from relay.bundle import FULL_PREFIXES
from relay.core.frames import (
    CERT_CHUNK,
    CertFrame,
    CertRequestFrame,
    FrameType,
    data_origin,
    decode_frame,
    encode_frame,
)
from relay.ratelimit import RateLimiter
from relay.trust import TrustStore

log = logging.getLogger(__name__)
_DATA_FULL_VALUE = int(FrameType.DATA_FULL)  # compared per frame: an enum member read costs more

PARK_S = 300.0  # a LoRa answer may wait for the duty cycle; the sender resends after this anyway
MAX_PARKED_PER_PEER = 32
MAX_PARKED = 256
MAX_PARKED_BYTES = 4 << 20
REQUEST_RETRY_S = 15.0  # a request or answer lost on the air: asked again, no sooner than this
RESENT_RETRY_S = 2.0  # sooner when the sender resends the parked bundle (its timeout adapts to the link)
MAX_REQUESTS = 6  # for one origin from one neighbour while its frames wait (airtime on LoRa)
REQUESTS_PER_S, REQUEST_BURST = 1.0, 16.0  # requests to one neighbour
ANSWERS_PER_S, ANSWER_BURST = 0.2, 8.0  # certificates sent to one neighbour
MAX_ASKED = 1024
MAX_PARTIAL = 64  # certificates being reassembled, one per (link, neighbour)
MAX_OUT_PER_LINK = 64
# the two types frame_received looks for in every frame, as ints (an enum member read is a slow
# metaclass lookup on Python 3.11)
_CERT_REQUEST_VALUE, _CERT_VALUE = int(FrameType.CERT_REQUEST), int(FrameType.CERT)

Count = Callable[[str], int]  # the engine's security counter: adds one to a field, returns the count
Neighbours = Callable[[str], tuple[bytes, ...]]  # the peers up on a link now


@dataclass(frozen=True, slots=True)
class Parked:
    """A frame that waited for its origin's certificate, to be handled again."""

    link: str
    peer: bytes
    frame: bytes


@dataclass(slots=True)
class _Waiting:
    parked: Parked
    origin: bytes  # node id (full frame) or short id (compact frame)
    until: float


@dataclass(slots=True)
class _Partial:
    count: int
    until: float
    chunks: dict[int, bytes] = field(default_factory=dict)


class CertificateExchange:
    """One node's side of certificates on demand: parks, asks, answers, learns, releases."""

    def __init__(self, trust: TrustStore, own: Certificate, count: Count, neighbours: Neighbours) -> None:
        self.trust = trust
        self.own = own
        self._count = count
        self._neighbours = neighbours
        self._parked: OrderedDict[bytes, _Waiting] = OrderedDict()  # oldest first
        self._per_peer: Counter[tuple[str, bytes]] = Counter()
        self._parked_bytes = 0
        # (link, neighbour, origin) -> (last request, requests so far), oldest first
        self._asked: OrderedDict[tuple[str, bytes, bytes], tuple[float, int]] = OrderedDict()
        self._requests: RateLimiter[tuple[str, bytes]] = RateLimiter(REQUESTS_PER_S, REQUEST_BURST)
        self._answers: RateLimiter[tuple[str, bytes]] = RateLimiter(ANSWERS_PER_S, ANSWER_BURST)
        self._partial: OrderedDict[tuple[str, bytes], _Partial] = OrderedDict()
        self._out: dict[str, deque[tuple[bytes, bytes]]] = {}
        self._retry_at = 0.0
        # the first bytes of the last full DATA frame whose origin was known, up to the origin's
        # end: a batch's frames mostly share an origin, whose lookup is then one comparison
        self._known_head = b""
        self.requests_sent = 0
        self.answers_sent = 0
        self.learned = 0
        self.released = 0

    def parked(self) -> int:
        return len(self._parked)

    def frame_received(self, link: str, peer: bytes, frame: bytes, now: float) -> list[Parked] | None:
        """None when ``frame`` is for the core; else it was taken here, and the list holds the parked
        frames a certificate it completed released (handle each as just received). Raises
        FrameDecodeError for a malformed certificate frame."""
        if self._parked or self._asked:  # most frames come with neither: no call
            self._expire(now)
            if self._parked and now >= self._retry_at:
                self._retry(now)
        kind = frame[0] >> 4 if frame else -1
        if kind == _CERT_REQUEST_VALUE:
            request = decode_frame(frame)
            assert isinstance(request, CertRequestFrame)
            self._answer(link, peer, request.node, now)
            return []
        if kind == _CERT_VALUE:
            piece = decode_frame(frame)
            assert isinstance(piece, CertFrame)
            return self._piece(link, peer, piece, now)
        if kind == _DATA_FULL_VALUE and frame[1:21] == self._known_head:
            return None  # as the last full DATA frame of a known origin begins: that origin
        origin = data_origin(frame)
        if origin is None or self._known(origin):
            if kind == _DATA_FULL_VALUE and frame[1:5] in FULL_PREFIXES:  # the origin at 5-21
                self._known_head = frame[1:21]  # certificates are never dropped: known for good
            return None
        if kind == FrameType.FRAGMENT:
            # The core reassembles it and cannot decode it; the sender's poll after the certificate
            # arrived makes the core hand the whole frame over again (relay.core.fragments).
            self._ask(link, peer, origin, now)
            return None
        self._park(link, peer, origin, frame, now)
        return []

    def queued(self, link: str) -> int:
        """Certificate frames waiting for ``link``."""
        queue = self._out.get(link)
        return len(queue) if queue else 0

    def next_frame(self, link: str) -> tuple[bytes, bytes] | None:
        """The next certificate frame for ``link`` as (peer, bytes), or None."""
        queue = self._out.get(link)
        return queue.popleft() if queue else None

    # -- asking ----------------------------------------------------------------------------------

    def _known(self, origin: bytes) -> bool:
        return self.trust.find(origin) is not None or self.own.node_id.startswith(origin)

    def _retry(self, now: float) -> None:
        """Ask again for what parked frames still wait for (a request or its answer may have been
        lost on the air; a LoRa sender backs off before it resends the bundle itself). Runs as
        frames arrive, at most once a second: this module has no timer of its own."""
        self._retry_at = now + 1.0
        for waiting in list(self._parked.values()):
            self._ask(waiting.parked.link, waiting.parked.peer, waiting.origin, now)

    def _park(self, link: str, peer: bytes, origin: bytes, frame: bytes, now: float) -> None:
        key = hashlib.blake2b(link.encode() + b"\0" + peer + frame, digest_size=16).digest()
        resent = key in self._parked  # no custody ACK reached the sender: maybe our request was lost
        if not resent:
            full = (
                self._per_peer[(link, peer)] >= MAX_PARKED_PER_PEER
                or len(self._parked) >= MAX_PARKED
                or self._parked_bytes + len(frame) > MAX_PARKED_BYTES
            )
            if full:
                refused = self._count("unknown_origins_refused")
                if refused & (refused - 1) == 0:  # 1, 2, 4, 8...: visible without flooding the log
                    log.warning(
                        "bundle of unknown origin %s from %s on %s refused (%d so far): %d bundle(s) "
                        "already wait for certificates (%d from this neighbour, at most %d); the "
                        "sender keeps it",
                        origin.hex(),
                        display_id(peer),
                        link,
                        refused,
                        len(self._parked),
                        self._per_peer[(link, peer)],
                        MAX_PARKED_PER_PEER,
                    )
                return
            self._parked[key] = _Waiting(Parked(link, peer, frame), origin, now + PARK_S)
            self._per_peer[(link, peer)] += 1
            self._parked_bytes += len(frame)
        self._ask(link, peer, origin, now, RESENT_RETRY_S if resent else REQUEST_RETRY_S)

    def _ask(self, link: str, peer: bytes, origin: bytes, now: float, gap: float = REQUEST_RETRY_S) -> None:
        """Send a CERT_REQUEST unless one went less than ``gap`` seconds ago or too many went."""
        key = (link, peer, origin)
        last, asked = self._asked.get(key, (None, 0))
        if last is not None and (now - last < gap or asked >= MAX_REQUESTS):
            return
        if self._requests.take((link, peer), now) > 0:
            return  # asked again later
        if last is None:
            log.info(
                "origin %s unknown here: asking %s on %s for its certificate",
                origin.hex(),
                display_id(peer),
                link,
            )
        self._asked.pop(key, None)
        self._asked[key] = (now, asked + 1)
        while len(self._asked) > MAX_ASKED:
            self._asked.popitem(last=False)
        self._send(link, peer, encode_frame(CertRequestFrame(origin)))
        self.requests_sent += 1

    # -- answering -------------------------------------------------------------------------------

    def _answer(self, link: str, peer: bytes, node: bytes, now: float) -> None:
        certificate = self.own if self.own.node_id.startswith(node) else self.trust.find(node)
        if certificate is None:
            log.debug(
                "%s on %s asked for the certificate of %s, not held here", display_id(peer), link, node.hex()
            )
            return
        if certificate is not self.own:
            try:
                self.trust.check(certificate.node_id, now)
            except CryptoError as exc:
                log.info("certificate of %s not given to %s: %s", certificate.name, display_id(peer), exc)
                return
        if self._answers.take((link, peer), now) > 0:
            limited = self._count("certificate_requests_limited")
            if limited & (limited - 1) == 0:
                log.warning(
                    "%s on %s asks for certificates faster than %g/s; not answered (%d so far)",
                    display_id(peer),
                    link,
                    ANSWERS_PER_S,
                    limited,
                )
            return
        data = certificate.encode()
        count = -(-len(data) // CERT_CHUNK)
        for index in range(count):
            chunk = data[index * CERT_CHUNK : (index + 1) * CERT_CHUNK]
            self._send(link, peer, encode_frame(CertFrame(index, count, chunk)))
        self.answers_sent += 1

    def _send(self, link: str, peer: bytes, frame: bytes) -> None:
        queue = self._out.setdefault(link, deque())
        if len(queue) >= MAX_OUT_PER_LINK:
            log.warning(
                "certificate frame for %s on %s not queued: %d already wait",
                display_id(peer),
                link,
                len(queue),
            )
            return
        queue.append((peer, frame))

    # -- learning --------------------------------------------------------------------------------

    def _piece(self, link: str, peer: bytes, piece: CertFrame, now: float) -> list[Parked]:
        key = (link, peer)
        partial = self._partial.pop(key, None)
        if partial is None or partial.count != piece.count or partial.until < now:
            partial = _Partial(piece.count, now + PARK_S)
        partial.chunks[piece.index] = piece.chunk
        if len(partial.chunks) < partial.count:
            self._partial[key] = partial
            while len(self._partial) > MAX_PARTIAL:
                self._partial.popitem(last=False)
            return []
        data = b"".join(partial.chunks[i] for i in range(partial.count))
        try:
            certificate = Certificate.decode(data)
        except CryptoError as exc:
            self._bad(link, peer, f"does not decode: {exc}")
            return []
        node_id = certificate.node_id
        asked = [o for (at, p, o) in self._asked if (at, p) == key and node_id.startswith(o)]
        if not asked:
            log.debug(
                "certificate of %s from %s on %s not asked for: ignored",
                certificate.name,
                display_id(peer),
                link,
            )
            return []
        try:
            self.trust.learn(certificate, now)
        except CryptoError as exc:
            dropped = self._drop(lambda w: (w.parked.link, w.parked.peer) == key and w.origin in asked)
            self._bad(
                link, peer, f"of {certificate.name!r}: {exc}; {dropped} bundle(s) waiting for it dropped"
            )
            return []
        self.learned += 1
        for origin in asked:
            self._asked.pop((link, peer, origin), None)
        released = self._release(node_id)
        log.info(
            "certificate of %s (%s) learned from %s on %s: %d waiting bundle(s) taken",
            certificate.name,
            display_id(node_id),
            display_id(peer),
            link,
            len(released),
        )
        return released

    def _bad(self, link: str, peer: bytes, why: str) -> None:
        count = self._count("bad_certificates")
        log.warning("certificate from %s on %s refused (%d so far): %s", display_id(peer), link, count, why)

    def _release(self, node_id: bytes) -> list[Parked]:
        up: dict[str, tuple[bytes, ...]] = {}
        released: list[Parked] = []
        for key, waiting in list(self._parked.items()):
            if not node_id.startswith(waiting.origin):
                continue
            self._forget(key)
            link = waiting.parked.link
            if link not in up:
                up[link] = self._neighbours(link)
            if waiting.parked.peer in up[link]:  # a neighbour gone since would not get its ACK
                released.append(waiting.parked)
        self.released += len(released)
        return released

    # -- bounds ----------------------------------------------------------------------------------

    def _expire(self, now: float) -> None:
        expired = 0
        while self._parked:
            key, waiting = next(iter(self._parked.items()))
            if waiting.until > now:
                break
            self._forget(key)
            expired = self._count("unknown_origins_expired")
        if expired:
            log.warning(
                "bundle(s) waited %g s for their origin's certificate and were dropped here (%d so far); "
                "their senders keep them",
                PARK_S,
                expired,
            )
        while self._asked and next(iter(self._asked.values()))[0] < now - PARK_S:
            self._asked.popitem(last=False)

    def _drop(self, doomed: Callable[[_Waiting], bool]) -> int:
        keys = [key for key, waiting in self._parked.items() if doomed(waiting)]
        for key in keys:
            self._forget(key)
        return len(keys)

    def _forget(self, key: bytes) -> None:
        waiting = self._parked.pop(key)
        peer_key = (waiting.parked.link, waiting.parked.peer)
        self._per_peer[peer_key] -= 1
        if self._per_peer[peer_key] <= 0:
            del self._per_peer[peer_key]
        self._parked_bytes -= len(waiting.parked.frame)
