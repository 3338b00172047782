"""Errors of the NG112 ingress. Each names what is wrong so an operator (or the panel's installer,
reading the SIP response) can act on it; the request layer maps them to RFC 8876/6442 responses."""

from __future__ import annotations

from relay.errors import Mesh112Error


class Ng112Error(Mesh112Error):
    """Base of every NG112 error."""


class SipParseError(Ng112Error):
    """Bytes that are not a usable SIP message (start line, headers, Content-Length, size)."""


class SipHeaderError(Ng112Error):
    """A header value or start line we were about to write holds CR, LF or NUL: written out it would
    inject headers (a hostile CAP ``<sender>`` copied into an Ack's To, say), so nothing is sent."""


class MultipartError(Ng112Error):
    """A multipart body that cannot be split into parts (no boundary, too many or too large parts)."""


class XmlError(Ng112Error):
    """An XML document that is not well-formed, not decodable or too large."""


class XmlHostileError(XmlError):
    """An XML document with a DTD or entity declarations: refused before anything is resolved."""


class CapError(Ng112Error):
    """A CAP document that is not a usable CAP alert; ``alert_msg_error`` is the RFC 8876 code."""

    def __init__(self, message: str, alert_msg_error: int = 100) -> None:
        super().__init__(message)
        self.alert_msg_error = alert_msg_error


class CapSchemaError(CapError):
    """A CAP 1.2 document we built fails the OASIS XSD: a bug on our side, never sent out."""


class PidfError(Ng112Error):
    """A PIDF-LO document with no usable location (no shape or civic address we can read)."""


class RecordError(Ng112Error):
    """A compact alarm record that cannot be encoded or decoded (size, field range, version)."""


class EnrolmentError(Ng112Error):
    """A building enrolment table that is malformed or inconsistent (duplicate key ids, bad fields)."""
