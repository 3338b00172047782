"""Hop tags: a short authenticator on every frame one enrolled node sends another over a link that
has no authenticated session of its own (LoRa).

Each direction of each pair of enrolled nodes has its own key, HKDF-SHA256 over the static X25519
agreement of the two identities, salted with a domain tag and bound to (sender, recipient): a tag
made for B cannot be replayed to C, nor reflected back to its sender. A tagged frame is::

    frame | stamp(4) | tag(8)

``stamp`` counts quarter seconds since the caller's epoch; the sender keeps it strictly increasing,
so no two of its frames share one. ``tag`` is keyed BLAKE2b-64 over the stamp and the frame. The
receiver accepts a stamp within ``window_s`` of its own clock and only once (it remembers the stamps
accepted from each peer within the window), so a recorded frame cannot be played back later, nor
twice now. 12 bytes in all: see docs/crypto.md for why 8 bytes of tag suffice on a duty-cycled air.

A frame several nodes are to check (a LoRa broadcast whose forward is also a custody ACK) carries a
stamp and tag for each, the addressee's first, and their count: ``frame | (stamp | tag) * n | n``
(:meth:`HopAuth.tag_many`). Each tag covers the stamp and the frame, as above.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from collections import OrderedDict
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from crypto.errors import CertificateError, CryptoError
from crypto.identity import Identity, PublicIdentity

STAMP_LEN = 4
TAG_LEN = 8
HOP_OVERHEAD = STAMP_LEN + TAG_LEN
TICKS_PER_S = 4  # 2^32 quarter seconds: 34 years from the epoch
DEFAULT_WINDOW_S = 300.0
MAX_STAMPS_PER_PEER = 4096  # far above what a duty-cycled radio can send within the window
MAX_TAGS = 255  # tags on one frame (tag_many): the count is one byte
_SALT = b"mesh112/hop-tag/v1"
_STAMP = struct.Struct(">I")


class HopAuthError(CryptoError):
    """A frame's hop tag does not hold; ``reason`` is one of ``short``, ``tag``, ``stale``, ``replay``."""

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class HopAuth:
    """One node's hop tags: per-direction keys cached per peer, and the stamps seen from each peer."""

    def __init__(self, identity: Identity, window_s: float = DEFAULT_WINDOW_S, max_peers: int = 1024) -> None:
        if window_s <= 0:
            raise ValueError("the hop tag window must be positive")
        self.identity = identity
        self.window_s = window_s
        self._max_peers = max_peers
        self._keys: OrderedDict[tuple[bytes, bool], bytes] = OrderedDict()
        self._last_stamp = -1
        self._seen: dict[bytes, OrderedDict[int, None]] = {}
        self._floor: dict[bytes, int] = {}  # stamps at or below this were forgotten: refused

    def tag(self, peer: PublicIdentity, frame: bytes, now: float) -> bytes:
        """``frame`` with its stamp and tag for ``peer`` (``now``: seconds since the epoch, >= 0)."""
        stamp = max(self._last_stamp + 1, int(now * TICKS_PER_S))
        if stamp > 0xFFFFFFFF:
            raise CryptoError("the hop tag stamp overflowed: the clock is beyond 2^32 quarter seconds")
        self._last_stamp = stamp
        head = _STAMP.pack(stamp)
        return frame + head + self._mac(peer, sending=True, head=head, frame=frame)

    def check(self, peer: PublicIdentity, data: bytes, now: float) -> bytes:
        """The frame inside ``data`` from ``peer``, or :class:`HopAuthError` saying why not."""
        if len(data) <= HOP_OVERHEAD:
            raise HopAuthError("short", f"a tagged frame is more than {HOP_OVERHEAD} bytes, got {len(data)}")
        frame, head, tag = data[:-HOP_OVERHEAD], data[-HOP_OVERHEAD:-TAG_LEN], data[-TAG_LEN:]
        if not hmac.compare_digest(tag, self._mac(peer, sending=False, head=head, frame=frame)):
            raise HopAuthError("tag", "hop tag does not verify: not from this neighbour, or altered")
        stamp = _STAMP.unpack(head)[0]
        skew = stamp / TICKS_PER_S - now
        if abs(skew) > self.window_s:
            raise HopAuthError(
                "stale", f"hop stamp {skew:+.0f} s from this node's clock, outside ±{self.window_s:g} s"
            )
        sender = peer.node_id
        seen = self._seen.setdefault(sender, OrderedDict())
        horizon = int((now - self.window_s) * TICKS_PER_S)
        while seen and next(iter(seen)) < horizon:
            seen.popitem(last=False)
        if stamp in seen or stamp <= self._floor.get(sender, -1):
            raise HopAuthError("replay", f"hop stamp {stamp} from this neighbour was already accepted")
        seen[stamp] = None
        if len(seen) > MAX_STAMPS_PER_PEER:
            forgotten, _ = seen.popitem(last=False)
            self._floor[sender] = max(self._floor.get(sender, -1), forgotten)
        return frame

    def tag_many(
        self, addressee: PublicIdentity, also: Sequence[PublicIdentity], frame: bytes, now: float
    ) -> bytes:
        """``frame`` tagged for ``addressee`` and for each of ``also``, the nodes that are to overhear
        it (a broadcast on the air): ``frame | (stamp | tag) per node, the addressee's first | count``."""
        if len(also) >= MAX_TAGS:
            raise ValueError(f"a frame carries at most {MAX_TAGS} hop tags")
        tags = [self.tag(peer, frame, now)[len(frame) :] for peer in (addressee, *also)]
        return frame + b"".join(tags) + bytes([len(tags)])

    def check_many(self, peer: PublicIdentity, data: bytes, now: float) -> tuple[bytes, bool]:
        """The frame inside ``data`` (from :meth:`tag_many`) from ``peer``, and whether this node is its
        addressee (False: it overhears it), if one of its tags is this node's, with a fresh stamp, as
        :meth:`check` asks of any frame; else :class:`HopAuthError` (``tag``: every tag is another
        node's, or forged)."""
        count = data[-1] if data else 0
        end = len(data) - 1 - count * HOP_OVERHEAD
        if count < 1 or end <= 0:
            raise HopAuthError("short", f"{len(data)} bytes cannot hold a frame and {count} hop tag(s)")
        frame = data[:end]
        for index in range(count):
            start = end + index * HOP_OVERHEAD
            try:
                self.check(peer, frame + data[start : start + HOP_OVERHEAD], now)
            except HopAuthError as exc:
                if exc.reason == "tag":
                    continue  # another node's tag (or forged): try the next
                raise
            return frame, index == 0
        raise HopAuthError("tag", "no hop tag on this frame is this node's: it is for other nodes, or forged")

    def _mac(self, peer: PublicIdentity, *, sending: bool, head: bytes, frame: bytes) -> bytes:
        key = self._key(peer, sending)
        return hashlib.blake2b(head + frame, key=key, digest_size=TAG_LEN).digest()

    def _key(self, peer: PublicIdentity, sending: bool) -> bytes:
        slot = (peer.encode(), sending)
        key = self._keys.get(slot)
        if key is not None:
            self._keys.move_to_end(slot)
            return key
        me, them = self.identity.node_id, peer.node_id
        sender, recipient = (me, them) if sending else (them, me)
        try:
            shared = self.identity.exchange(peer)
        except CertificateError as exc:
            raise HopAuthError("tag", str(exc)) from None
        key = HKDF(hashes.SHA256(), 32, _SALT, sender + recipient).derive(shared)
        self._keys[slot] = key
        if len(self._keys) > self._max_peers:
            self._keys.popitem(last=False)
        return key
