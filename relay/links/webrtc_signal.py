"""Sans-I/O signalling codec for the WebRTC link: an offer or answer in what the peers cannot derive.

A serverless SDP offer from aiortc is about 6 KiB, far over one LoRa frame. Everything in it but
the ICE credentials, the DTLS fingerprint and the candidates is fixed by this link (one data channel,
SCTP port 5000, BUNDLE, the setup role of each side), so a :class:`Signal` carries only those, plus
who sent it and a signature, in about 150 bytes::

    version<<4|type (1) | flags (1) | sender (16) | session (4) | created (4)
    | ufrag_len (1) | ufrag | pwd_len (1) | pwd | sha-256 fingerprint (32)
    | count (1) | count x (family|type (1) | address (4 or 16) | port (2)) | Ed25519 signature (64)

The signature is the sender's enrolled identity over a domain tag, the recipient's node id and
everything before it except the candidates. That is what binds the DTLS fingerprint (which aiortc
checks against the certificate the peer shows in the handshake) to an enrolled node: a data channel
can only come up with the node that signed. Candidates are routing hints and stay unsigned, so a
relay on the path (a TURN server, the tests' UDP shaper, a port forward) may rewrite them; whoever
rewrites them can at worst stop the connection, which anyone on the path can do anyway.

:func:`to_sdp` rebuilds a full description aiortc accepts; :func:`from_sdp` takes the local one
apart. Decoding is strict and bounded (:data:`MAX_SIGNAL`); each refusal raises
:class:`SignalError` naming the problem.
"""

from __future__ import annotations

import ipaddress
import re
import struct
from dataclasses import dataclass, replace
from enum import IntEnum

from crypto.errors import CryptoError
from crypto.identity import Identity, PublicIdentity
from relay.links.base import LinkError

VERSION = 1
DOMAIN_TAG = b"mesh112/webrtc/signal/v1"
NODE_ID_LEN = 16
FINGERPRINT_LEN = 32  # sha-256
SIGNATURE_LEN = 64
MAX_CANDIDATES = 8
MAX_SIGNAL = 512  # bytes; a larger input is refused before it is parsed
SCTP_PORT = 5000
MAX_MESSAGE_SIZE = 262144
_ICE_CHARS = re.compile(r"[A-Za-z0-9+/]+")
_UFRAG_LEN = (4, 32)
_PWD_LEN = (22, 64)
_HEAD = struct.Struct(">BB16sII")  # version|type, flags, sender, session, created
_PORT = struct.Struct(">H")
_SSRCS = struct.Struct(">II")
_FAMILY_V6 = 0x80
_PRIORITY = {"host": 126, "srflx": 100, "prflx": 110, "relay": 0}  # RFC 8445 type preferences


class SignalError(LinkError):
    """A signal that cannot be decoded, verified or turned into a session description."""


class SignalType(IntEnum):
    OFFER = 1
    ANSWER = 2


class CandidateType(IntEnum):
    HOST = 0
    SRFLX = 1
    PRFLX = 2
    RELAY = 3


class Flags(IntEnum):
    SOS = 0x01  # an SOS video request: carried as FLASH when it travels as a bundle
    VIDEO = 0x02  # the offerer sends VP8 video (section mid 0) beside the data channel (mid 1)


_KNOWN_FLAGS = Flags.SOS | Flags.VIDEO
VIDEO_PT, RTX_PT = 97, 98  # aiortc's VP8 and its retransmission payload types


@dataclass(frozen=True, slots=True)
class Candidate:
    """One UDP ICE candidate (component 1; BUNDLE and rtcp-mux leave no other)."""

    address: str  # IPv4 or IPv6 literal
    port: int
    type: CandidateType = CandidateType.HOST


@dataclass(frozen=True, slots=True)
class Signal:
    type: SignalType
    sender: bytes  # the signer's node id
    session: int  # chosen by the offerer, repeated in the answer; a new one for each ICE restart
    created: int  # mesh epoch seconds (relay.bundle.to_epoch)
    ufrag: str
    pwd: str
    fingerprint: bytes  # sha-256 of the sender's DTLS certificate
    candidates: tuple[Candidate, ...]
    flags: int = 0
    signature: bytes = b""
    video_ssrcs: tuple[int, int] = (0, 0)  # with VIDEO: the sender's media and retransmission SSRCs

    @property
    def sos(self) -> bool:
        return bool(self.flags & Flags.SOS)

    @property
    def video(self) -> bool:
        return bool(self.flags & Flags.VIDEO)

    def signed_part(self, recipient: bytes) -> bytes:
        """What the signature covers: everything but the candidates and the signature."""
        return DOMAIN_TAG + recipient + _encode_head(self)

    def sign(self, identity: Identity, recipient: bytes) -> Signal:
        if identity.node_id != self.sender:
            raise SignalError("a signal must be signed by the node it names as sender")
        return replace(self, signature=identity.sign(self.signed_part(recipient)))

    def verify(self, sender_public: PublicIdentity, recipient: bytes) -> None:
        """Raises SignalError unless the sender's enrolled key signed this signal for ``recipient``."""
        if sender_public.node_id != self.sender:
            raise SignalError("the key given is not the sender's")
        try:
            sender_public.verify(self.signature, self.signed_part(recipient))
        except CryptoError:
            raise SignalError(
                f"signal from node {self.sender.hex()[:8]} has a bad signature (not for this node, "
                "altered on the way, or not from the node it names)"
            ) from None


def encode(signal: Signal) -> bytes:
    if len(signal.signature) != SIGNATURE_LEN:
        raise SignalError("sign a signal before encoding it")
    if len(signal.candidates) > MAX_CANDIDATES:
        raise SignalError(f"at most {MAX_CANDIDATES} candidates fit a signal, got {len(signal.candidates)}")
    parts = [_encode_head(signal), bytes([len(signal.candidates)])]
    for candidate in signal.candidates:
        address = ipaddress.ip_address(candidate.address)
        family = _FAMILY_V6 if address.version == 6 else 0
        parts += [bytes([family | candidate.type]), address.packed, _PORT.pack(candidate.port)]
    parts.append(signal.signature)
    return b"".join(parts)


def decode(data: bytes) -> Signal:
    """The signal in ``data`` (not yet verified: call :meth:`Signal.verify`)."""
    if len(data) > MAX_SIGNAL:
        raise SignalError(f"signal of {len(data)} bytes is over the {MAX_SIGNAL}-byte limit")
    reader = _Reader(data)
    version_type, flags, sender, session, created = _HEAD.unpack(reader.take(_HEAD.size))
    if version_type >> 4 != VERSION:
        raise SignalError(f"signal version {version_type >> 4} is not {VERSION}; update this node")
    try:
        kind = SignalType(version_type & 0x0F)
    except ValueError:
        raise SignalError(f"unknown signal type {version_type & 0x0F}") from None
    if flags & ~_KNOWN_FLAGS:
        raise SignalError(f"unknown signal flags {flags:#04x}")
    ufrag = _ice_text(reader.take(reader.byte()), "ufrag", _UFRAG_LEN)
    pwd = _ice_text(reader.take(reader.byte()), "pwd", _PWD_LEN)
    fingerprint = reader.take(FINGERPRINT_LEN)
    ssrcs = _SSRCS.unpack(reader.take(_SSRCS.size)) if flags & Flags.VIDEO else (0, 0)
    count = reader.byte()
    if count > MAX_CANDIDATES:
        raise SignalError(f"signal lists {count} candidates; at most {MAX_CANDIDATES} are allowed")
    candidates = []
    for _ in range(count):
        family_type = reader.byte()
        if family_type & ~(_FAMILY_V6 | 0x03):
            raise SignalError(f"unknown candidate family/type byte {family_type:#04x}")
        packed = reader.take(16 if family_type & _FAMILY_V6 else 4)
        (port,) = _PORT.unpack(reader.take(2))
        if port == 0:
            raise SignalError("a candidate has port 0")
        address = str(ipaddress.ip_address(packed))
        candidates.append(Candidate(address, port, CandidateType(family_type & 0x03)))
    signature = reader.take(SIGNATURE_LEN)
    if reader.left():
        raise SignalError(f"{reader.left()} unexpected bytes after the signal")
    return Signal(
        kind, sender, session, created, ufrag, pwd, fingerprint, tuple(candidates), flags, signature, ssrcs
    )


def to_sdp(signal: Signal) -> str:
    """The full session description aiortc expects for ``signal`` (an offer or an answer): one data
    channel section, after a VP8 video section (sent by the offerer) when the signal has VIDEO."""
    first = signal.candidates[0] if signal.candidates else Candidate("0.0.0.0", 9)
    connection = f"c=IN {'IP6' if ':' in first.address else 'IP4'} {first.address}"
    lines = [
        "v=0",
        f"o=- {signal.session} {signal.session} IN IP4 0.0.0.0",
        "s=-",
        "t=0 0",
        f"a=group:BUNDLE {'0 1' if signal.video else '0'}",
        "a=msid-semantic:WMS *",
    ]
    if signal.video:
        lines += [
            f"m=video {first.port} UDP/TLS/RTP/SAVPF {VIDEO_PT} {RTX_PT}",
            connection,
            f"a={'sendonly' if signal.type is SignalType.OFFER else 'recvonly'}",
            "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
            "a=extmap:3 http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time",
            "a=mid:0",
            "a=rtcp:9 IN IP4 0.0.0.0",
            "a=rtcp-mux",
            f"a=rtpmap:{VIDEO_PT} VP8/90000",
            f"a=rtcp-fb:{VIDEO_PT} nack",
            f"a=rtcp-fb:{VIDEO_PT} nack pli",
            f"a=rtcp-fb:{VIDEO_PT} goog-remb",
            f"a=rtpmap:{RTX_PT} rtx/90000",
            f"a=fmtp:{RTX_PT} apt={VIDEO_PT}",
            # without the pair, the receiver cannot map retransmissions and a lost packet stalls video
            f"a=ssrc-group:FID {signal.video_ssrcs[0]} {signal.video_ssrcs[1]}",
            f"a=ssrc:{signal.video_ssrcs[0]} cname:mesh112",
            f"a=ssrc:{signal.video_ssrcs[1]} cname:mesh112",
            *_transport_lines(signal),
        ]
    lines += [
        f"m=application {first.port} UDP/DTLS/SCTP webrtc-datachannel",
        connection,
        f"a=mid:{1 if signal.video else 0}",
        f"a=sctp-port:{SCTP_PORT}",
        f"a=max-message-size:{MAX_MESSAGE_SIZE}",
        *_transport_lines(signal),
    ]
    return "\r\n".join(lines) + "\r\n"


def _transport_lines(signal: Signal) -> list[str]:
    """Candidates, ICE credentials, fingerprint and DTLS role: the same in every bundled section."""
    lines = []
    for index, candidate in enumerate(signal.candidates):
        kind = candidate.type.name.lower()
        priority = (_PRIORITY[kind] << 24) | (65535 << 8) | 255
        related = " raddr 0.0.0.0 rport 0" if candidate.type is not CandidateType.HOST else ""
        lines.append(
            f"a=candidate:{index} 1 udp {priority} {candidate.address} {candidate.port} typ {kind}{related}"
        )
    fingerprint = ":".join(f"{b:02X}" for b in signal.fingerprint)
    return [
        *lines,
        "a=end-of-candidates",
        f"a=ice-ufrag:{signal.ufrag}",
        f"a=ice-pwd:{signal.pwd}",
        f"a=fingerprint:sha-256 {fingerprint}",
        f"a=setup:{'actpass' if signal.type is SignalType.OFFER else 'active'}",
    ]


def from_sdp(
    sdp: str,
    type: SignalType,
    sender: bytes,
    session: int,
    created: int,
    *,
    flags: int = 0,
    ipv6: bool = False,
) -> Signal:
    """The unsigned signal of a local description aiortc made (data channel only). IPv6
    candidates are left out unless ``ipv6``; TCP candidates always (the link runs over UDP)."""
    from aiortc.sdp import SessionDescription  # the "video" extra; the codec itself needs no aiortc

    try:
        description = SessionDescription.parse(sdp)
    except (ValueError, IndexError) as exc:
        raise SignalError(f"the local session description does not parse: {exc}") from None
    kinds = [media.kind for media in description.media]
    if kinds != (["video", "application"] if flags & Flags.VIDEO else ["application"]):
        raise SignalError(
            f"the WebRTC link signals a data channel after at most one video section, not {kinds}"
        )
    if flags & Flags.VIDEO:
        codecs = {(c.payloadType, c.mimeType.lower()) for c in description.media[0].rtp.codecs}
        if codecs != {(VIDEO_PT, "video/vp8"), (RTX_PT, "video/rtx")}:
            raise SignalError(
                f"video must be VP8 on payload type {VIDEO_PT} (rtx {RTX_PT}), got {sorted(codecs)}"
            )
    media = description.media[0]  # bundled: the first section carries the shared transport
    ssrcs = (0, 0)
    if flags & Flags.VIDEO:
        fid = next((g.items for g in media.ssrc_group if g.semantic == "FID"), None)
        if fid is None or len(fid) != 2:
            raise SignalError("the video section has no FID pair of SSRCs (media, retransmission)")
        ssrcs = (int(fid[0]), int(fid[1]))
    fingerprints = [f for f in media.dtls.fingerprints if f.algorithm == "sha-256"] if media.dtls else []
    ice = media.ice
    if ice is None or ice.usernameFragment is None or ice.password is None or not fingerprints:
        raise SignalError("the local description has no ICE credentials or no sha-256 fingerprint")
    candidates = []
    for candidate in media.ice_candidates:
        if candidate.protocol.lower() != "udp" or candidate.component != 1:
            continue
        if ":" in candidate.ip and not ipv6:
            continue
        candidates.append(Candidate(candidate.ip, candidate.port, CandidateType[candidate.type.upper()]))
    return Signal(
        type,
        sender,
        session,
        created,
        ice.usernameFragment,
        ice.password,
        bytes.fromhex(fingerprints[0].value.replace(":", "")),
        tuple(candidates[:MAX_CANDIDATES]),
        flags,
        video_ssrcs=ssrcs,
    )


def _encode_head(signal: Signal) -> bytes:
    ufrag, pwd = signal.ufrag.encode("ascii", "replace"), signal.pwd.encode("ascii", "replace")
    _ice_text(ufrag, "ufrag", _UFRAG_LEN)
    _ice_text(pwd, "pwd", _PWD_LEN)
    if len(signal.sender) != NODE_ID_LEN or len(signal.fingerprint) != FINGERPRINT_LEN:
        raise SignalError("a signal needs a 16-byte sender id and a 32-byte sha-256 fingerprint")
    return b"".join(
        [
            _HEAD.pack(
                VERSION << 4 | signal.type, signal.flags, signal.sender, signal.session, signal.created
            ),
            bytes([len(ufrag)]),
            ufrag,
            bytes([len(pwd)]),
            pwd,
            signal.fingerprint,
            _SSRCS.pack(*signal.video_ssrcs) if signal.flags & Flags.VIDEO else b"",
        ]
    )


def _ice_text(raw: bytes, what: str, bounds: tuple[int, int]) -> str:
    text = raw.decode("ascii", errors="replace")
    if not bounds[0] <= len(raw) <= bounds[1] or not _ICE_CHARS.fullmatch(text):
        raise SignalError(f"ICE {what} must be {bounds[0]}-{bounds[1]} ICE characters")
    return text


class _Reader:
    def __init__(self, data: bytes) -> None:
        self._data = data
        self._at = 0

    def take(self, count: int) -> bytes:
        if self._at + count > len(self._data):
            raise SignalError(f"signal cut short at byte {len(self._data)} (needs {self._at + count})")
        chunk = self._data[self._at : self._at + count]
        self._at += count
        return chunk

    def byte(self) -> int:
        return self.take(1)[0]

    def left(self) -> int:
        return len(self._data) - self._at
