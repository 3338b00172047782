"""MIME ``Content-Type`` parameters and ``multipart/mixed`` bodies (RFC 2046, RFC 2392 Content-ID).

Lenient about the shapes seen in the wild: boundary lines with extra dashes or surrounding spaces,
bare LF, a missing blank line between part headers and part body (RFC 8876 Fig. 4), a missing close
delimiter, duplicate Content-IDs. Bounded: at most :data:`MAX_PARTS` parts and :data:`MAX_BODY`
bytes, otherwise :class:`MultipartError`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ng112.errors import MultipartError

MAX_BODY = 128 * 1024
MAX_PARTS = 16
MAX_PART_HEADERS = 20

_HEADER_LINE = re.compile(r"^([A-Za-z0-9-]{1,64})[ \t]*:(.*)$")


@dataclass(frozen=True, slots=True)
class ContentType:
    mime: str  # lower-case type/subtype
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None


def parse_content_type(value: str) -> ContentType:
    mime, *rest = value.split(";")
    params: list[tuple[str, str]] = []
    for item in rest:
        key, sep, val = item.partition("=")
        if sep:
            params.append((key.strip().lower(), val.strip().strip('"')))
    return ContentType(mime.strip().lower(), tuple(params))


def bare_content_id(value: str) -> str:
    """``<id@host>`` or ``cid:id@host`` -> ``id@host`` (RFC 2392 matching ignores the wrapping)."""
    value = value.strip().strip("<>").strip()
    if value.lower().startswith("cid:"):
        value = value[4:]
    return value.strip("<>").strip()


@dataclass(frozen=True, slots=True)
class BodyPart:
    content_type: ContentType
    content_id: str | None  # bare id, see bare_content_id
    headers: tuple[tuple[str, str], ...]
    body: bytes


def _is_delimiter(line: bytes, boundary: bytes) -> tuple[bool, bool]:
    """(is a boundary line, is the close delimiter). Extra leading dashes and spaces tolerated."""
    stripped = line.strip()
    if not stripped.startswith(b"--"):
        return False, False
    core = stripped.lstrip(b"-")
    if core == boundary:
        return True, False
    if core == boundary + b"--" or (core.rstrip(b"-") == boundary and stripped.endswith(b"--")):
        return True, True
    return False, False


def _parse_part(raw: bytes, warnings: list[str]) -> BodyPart:
    lines = raw.split(b"\n")
    headers: list[tuple[str, str]] = []
    index = 0
    while index < len(lines):
        text = lines[index].rstrip(b"\r").decode("latin-1")
        if not text.strip():
            index += 1
            break
        match = _HEADER_LINE.match(text)
        if match is None:
            if not headers:
                warnings.append("body part without headers")
            else:
                warnings.append("no blank line between part headers and part body")
            break
        if len(headers) >= MAX_PART_HEADERS:
            raise MultipartError(f"body part with more than {MAX_PART_HEADERS} headers")
        headers.append((match.group(1).lower(), match.group(2).strip()))
        index += 1
    body = b"\n".join(lines[index:])
    content_type = parse_content_type(dict(headers).get("content-type", "text/plain"))
    cid = dict(headers).get("content-id")
    return BodyPart(content_type, bare_content_id(cid) if cid else None, tuple(headers), body)


def parse_multipart(body: bytes, boundary: str) -> tuple[list[BodyPart], list[str]]:
    """Split a multipart body into parts; returns (parts, warnings)."""
    if len(body) > MAX_BODY:
        raise MultipartError(f"multipart body of {len(body)} bytes exceeds the {MAX_BODY}-byte limit")
    mark = boundary.strip().lstrip("-").encode("utf-8", "replace")
    if not mark or len(mark) > 200:
        raise MultipartError("multipart boundary missing or longer than 200 characters")
    warnings: list[str] = []
    parts: list[BodyPart] = []
    current: list[bytes] | None = None
    closed = False
    for line in body.split(b"\n"):
        is_delim, is_close = _is_delimiter(line, mark)
        if is_delim:
            if line.strip() != b"--" + mark + (b"--" if is_close else b""):
                warnings.append("non-standard boundary line (extra dashes or spaces)")
            if current is not None:
                parts.append(_finish(current, warnings))
                if len(parts) > MAX_PARTS:
                    raise MultipartError(f"more than {MAX_PARTS} body parts")
            if is_close:
                closed = True
                current = None
                break
            current = []
        elif current is not None:
            current.append(line)
    if current is not None and any(x.strip() for x in current):
        parts.append(_finish(current, warnings))
    if not parts:
        raise MultipartError(f"no body part delimited by boundary {boundary!r}")
    if not closed:
        warnings.append("multipart body has no close delimiter")
    if len(parts) > MAX_PARTS:
        raise MultipartError(f"more than {MAX_PARTS} body parts")
    ids = [p.content_id for p in parts if p.content_id]
    if len(ids) != len(set(ids)):
        warnings.append("duplicate Content-ID in multipart body")
    return parts, sorted(set(warnings), key=warnings.index)


def _finish(lines: list[bytes], warnings: list[str]) -> BodyPart:
    raw = b"\n".join(lines)
    # The CRLF before a delimiter belongs to the delimiter (RFC 2046 §5.1.1).
    if raw.endswith(b"\r"):
        raw = raw[:-1]
    return _parse_part(raw, warnings)
