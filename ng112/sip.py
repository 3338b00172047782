"""SIP message parsing and serialisation (RFC 3261), sans I/O.

Lenient on input because alarm panels and even the RFC 8876 examples get SIP wrong: bare LF line
ends, folded headers, compact header names (``l:``, ``c:``...), padded or missing Content-Length on
datagrams, bracketless ``Call-Info``. Strict on size: a message over :data:`MAX_MESSAGE` bytes, more
than :data:`MAX_HEADERS` headers or a header line over :data:`MAX_HEADER_LINE` is refused with
:class:`SipParseError` before anything else is done with it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field

from ng112.errors import SipHeaderError, SipParseError

MAX_MESSAGE = 128 * 1024
MAX_HEADERS = 100
MAX_HEADER_LINE = 8 * 1024
MAX_STREAM_BUFFER = MAX_MESSAGE + MAX_HEADER_LINE

COMPACT_FORMS = {
    "i": "call-id",
    "m": "contact",
    "e": "content-encoding",
    "l": "content-length",
    "c": "content-type",
    "f": "from",
    "s": "subject",
    "k": "supported",
    "t": "to",
    "v": "via",
}

_UNSAFE = re.compile(r"[\r\n\0]")
_TOKEN = re.compile(r"^[A-Za-z0-9.!%*_+`'~-]+$")
_REQUEST_LINE = re.compile(r"^([A-Za-z]+) +(\S+) +SIP/2\.0$")
_STATUS_LINE = re.compile(r"^SIP/2\.0 +(\d{3})(?: +(.*))?$")

# Canonical spelling used when we serialise headers we know.
_CANONICAL = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "alertmsg-error": "AlertMsg-Error",
    "content-id": "Content-ID",
}


def canonical_name(name: str) -> str:
    lower = name.lower()
    return _CANONICAL.get(lower, "-".join(part.capitalize() for part in lower.split("-")))


@dataclass(frozen=True, slots=True)
class Headers:
    """Ordered SIP headers; names are stored lower-case with compact forms expanded."""

    items: tuple[tuple[str, str], ...] = ()

    def get(self, name: str) -> str | None:
        lower = name.lower()
        for key, value in self.items:
            if key == lower:
                return value
        return None

    def get_all(self, name: str) -> list[str]:
        lower = name.lower()
        return [value for key, value in self.items if key == lower]

    def values(self, name: str) -> list[str]:
        """Every comma-separated value of every header ``name`` (commas inside <> or quotes kept)."""
        return [v for raw in self.get_all(name) for v in split_comma_values(raw)]

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)


@dataclass(frozen=True, slots=True)
class SipRequest:
    method: str
    uri: str
    headers: Headers
    body: bytes = b""
    warnings: tuple[str, ...] = ()

    def to_bytes(self) -> bytes:
        return _serialise(f"{self.method} {self.uri} SIP/2.0", self.headers, self.body)


@dataclass(frozen=True, slots=True)
class SipResponse:
    status: int
    reason: str
    headers: Headers
    body: bytes = b""
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_bytes(self) -> bytes:
        return _serialise(f"SIP/2.0 {self.status} {self.reason}", self.headers, self.body)


SipMessage = SipRequest | SipResponse


def _serialise(start_line: str, headers: Headers, body: bytes) -> bytes:
    lines = [start_line]
    lines += [f"{canonical_name(k)}: {v}" for k, v in headers if k != "content-length"]
    for line in lines:
        if _UNSAFE.search(line):
            raise SipHeaderError(f"refusing to write a SIP line holding CR, LF or NUL: {line[:80]!r}")
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def split_comma_values(value: str) -> list[str]:
    """Split a header value on commas that are outside <...> and quoted strings."""
    out: list[str] = []
    depth = 0
    quoted = False
    start = 0
    for i, ch in enumerate(value):
        if ch == '"' and (i == 0 or value[i - 1] != "\\"):
            quoted = not quoted
        elif not quoted and ch == "<":
            depth += 1
        elif not quoted and ch == ">":
            depth = max(0, depth - 1)
        elif ch == "," and depth == 0 and not quoted:
            out.append(value[start:i].strip())
            start = i + 1
    out.append(value[start:].strip())
    return [v for v in out if v]


def parse_uri_and_params(value: str) -> tuple[str, dict[str, str]]:
    """``<uri>;a=b;c`` (or bracketless ``uri;a=b``, as in RFC 8876 Fig. 3) -> (uri, params)."""
    value = value.strip()
    rest: str
    if "<" in value and ">" in value.split("<", 1)[1]:
        before, after = value.split("<", 1)
        uri, rest = after.split(">", 1)
        del before  # display name, not needed
    else:
        uri, _, rest = value.partition(";")
        rest = ";" + rest if rest else ""
    params: dict[str, str] = {}
    for item in rest.split(";"):
        item = item.strip()
        if not item:
            continue
        key, _, val = item.partition("=")
        params[key.strip().lower()] = val.strip().strip('"')
    return uri.strip(), params


_HEAD_END = re.compile(rb"\r?\n\r?\n")


def _split_head(data: bytes) -> tuple[bytes, bytes, bool]:
    """Split at the first empty line (CRLF CRLF or bare LF LF). Returns (head, body, found)."""
    match = _HEAD_END.search(data)
    if match is None:
        return data, b"", False
    return data[: match.start()], data[match.end() :], True


def _parse_head(head: bytes) -> tuple[str, Headers, list[str]]:
    warnings: list[str] = []
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        text = head.decode("latin-1")
        warnings.append("SIP headers are not UTF-8; read as Latin-1")
    if "\r\n" not in text and "\n" in text:
        warnings.append("bare LF line ends")
    lines = text.replace("\r\n", "\n").split("\n")
    start_line = lines[0].strip()
    items: list[list[str]] = []
    for line in lines[1:]:
        if len(line) > MAX_HEADER_LINE:
            raise SipParseError(f"header line longer than {MAX_HEADER_LINE} bytes")
        if not line.strip():
            continue
        if line[0] in " \t":
            if not items:
                raise SipParseError("continuation line before the first header")
            items[-1][1] += " " + line.strip()
            continue
        name, sep, value = line.partition(":")
        name = name.strip()
        if not sep or not _TOKEN.match(name):
            raise SipParseError(f"malformed header line: {line[:60]!r}")
        lower = name.lower()
        items.append([COMPACT_FORMS.get(lower, lower), value.strip()])
        if len(items) > MAX_HEADERS:
            raise SipParseError(f"more than {MAX_HEADERS} headers")
    return start_line, Headers(tuple((k, v) for k, v in items)), warnings


def _content_length(headers: Headers) -> int | None:
    raw = headers.get("content-length")
    if raw is None:
        return None
    raw = raw.strip()
    if not (raw.isascii() and raw.isdigit()) or len(raw) > 9:
        return -1
    return int(raw)


def parse_message(data: bytes, *, datagram: bool = True) -> SipMessage:
    """Parse one complete SIP message.

    On a datagram (UDP, a file) a missing or unreadable Content-Length means "the rest", with a
    warning; a stream framer (:class:`StreamFramer`) has already cut the message to its length.
    """
    if len(data) > MAX_MESSAGE:
        raise SipParseError(f"message of {len(data)} bytes exceeds the {MAX_MESSAGE}-byte limit")
    data = data.lstrip(b"\r\n")
    if not data:
        raise SipParseError("empty message")
    head, body, found = _split_head(data)
    if not found and b"\n" not in head:
        raise SipParseError("no header section")
    start_line, headers, warnings = _parse_head(head)
    length = _content_length(headers)
    if length is None:
        if not datagram:
            raise SipParseError("Content-Length is required on a stream transport")
        if body:
            warnings.append("no Content-Length; body taken to end of datagram")
    elif length < 0:
        warnings.append("unreadable Content-Length; body taken to end of datagram")
    elif length > len(body):
        raise SipParseError(f"body is {len(body)} bytes but Content-Length says {length}")
    else:
        if length < len(body) and body[length:].strip():
            warnings.append(f"{len(body) - length} bytes after Content-Length ignored")
        body = body[:length]
    request = _REQUEST_LINE.match(start_line)
    if request:
        method, uri = request.group(1).upper(), request.group(2)
        return SipRequest(method, uri, headers, body, tuple(warnings))
    status = _STATUS_LINE.match(start_line)
    if status:
        return SipResponse(int(status.group(1)), status.group(2) or "", headers, body, tuple(warnings))
    raise SipParseError(f"not a SIP request or status line: {start_line[:80]!r}")


class StreamFramer:
    """Cuts a TCP/TLS byte stream into SIP messages by Content-Length (sans I/O).

    ``feed`` returns the complete messages so far; keep-alive CRLFs between messages are skipped.
    Each byte is examined a bounded number of times however the stream is cut (a header dribbled
    byte by byte costs linear time, not a rescan per byte); ``examined`` counts them. A stream that
    would buffer more than :data:`MAX_STREAM_BUFFER` bytes raises SipParseError and must be closed.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._start = 0  # where the current message begins in the buffer
        self._scanned = 0  # the head's end is not before this offset
        self._end: int | None = None  # where the current message ends, once its head is parsed
        self.examined = 0

    @property
    def pending(self) -> int:
        """Bytes of a message begun but not complete (0 between messages)."""
        return len(self._buffer) - self._start

    def feed(self, data: bytes) -> list[bytes]:
        self._buffer += data
        messages: list[bytes] = []
        while (message := self._next()) is not None:
            messages.append(message)
        if self._start:
            del self._buffer[: self._start]
            self._scanned -= self._start
            if self._end is not None:
                self._end -= self._start
            self._start = 0
        if self.pending > MAX_STREAM_BUFFER:
            raise SipParseError("header section or message too large on stream")
        return messages

    def _next(self) -> bytes | None:
        buffer = self._buffer
        if self._end is None:
            while self._start < len(buffer) and buffer[self._start] in b"\r\n":
                self._start += 1
            self._scanned = max(self._scanned, self._start)
            match = _HEAD_END.search(buffer, self._scanned)
            self.examined += (match.end() if match else len(buffer)) - self._scanned
            if match is None:
                self._scanned = max(self._start, len(buffer) - 3)  # a match may straddle the next feed
                return None
            _, headers, _ = _parse_head(bytes(buffer[self._start : match.start()]))
            length = _content_length(headers)
            if length is None or length < 0:
                raise SipParseError("Content-Length is required on a stream transport")
            if length > MAX_MESSAGE:
                raise SipParseError(f"Content-Length {length} exceeds the {MAX_MESSAGE}-byte limit")
            self._end = match.end() + length
        if len(buffer) < self._end:
            return None
        message = bytes(buffer[self._start : self._end])
        self._start = self._scanned = self._end
        self._end = None
        return message


def build_response(
    request: SipRequest, status: int, reason: str, extra: tuple[tuple[str, str], ...] = (), to_tag: str = ""
) -> SipResponse:
    """A response that copies Via, From, To (adding our tag), Call-ID and CSeq from the request."""
    items: list[tuple[str, str]] = [("via", v) for v in request.headers.get_all("via")]
    for name in ("from", "to", "call-id", "cseq"):
        value = request.headers.get(name)
        if value is None:
            continue
        if name == "to" and to_tag and ";tag=" not in value.replace(" ", ""):
            value = f"{value};tag={to_tag}"
        items.append((name, value))
    items += [(k.lower(), v) for k, v in extra]
    return SipResponse(status, reason, Headers(tuple(items)))
