"""Hardened XML parsing for CAP, PIDF-LO and RFC 7852 blocks from untrusted senders.

Refused before parsing: documents over the size cap and any ``<!DOCTYPE`` / ``<!ENTITY`` (XXE,
billion laughs, external DTD fetches). The lxml parser itself is configured to never load a DTD,
resolve an entity, touch the network or build huge trees, and the result is checked once more for a
doctype (a UTF-16 document could hide one from the byte scan). XInclude is never processed.
"""

from __future__ import annotations

import re

from lxml import etree

from ng112.errors import XmlError, XmlHostileError

MAX_XML = 64 * 1024
MAX_DEPTH = 32

_DECLARATION = re.compile(rb"<!\s*(DOCTYPE|ENTITY)", re.IGNORECASE)


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_comments=True,
        remove_pis=True,
        collect_ids=False,
    )


def parse_xml(data: bytes, *, max_bytes: int = MAX_XML) -> etree._Element:
    """Parse untrusted XML bytes into an element tree root, or raise XmlError/XmlHostileError."""
    if len(data) > max_bytes:
        raise XmlError(f"XML document of {len(data)} bytes exceeds the {max_bytes}-byte limit")
    if _DECLARATION.search(data) or _DECLARATION.search(data.replace(b"\x00", b"")):
        raise XmlHostileError("XML with a DTD or entity declaration refused (XXE / entity expansion)")
    data = data.strip()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data:
        raise XmlError("empty XML document")
    try:
        root = etree.fromstring(data, parser=_parser())
    except etree.XMLSyntaxError as exc:
        raise XmlError(f"XML not well-formed: {exc.msg}") from None
    except ValueError as exc:  # e.g. unicode strings with an encoding declaration
        raise XmlError(f"XML not decodable: {exc}") from None
    if root is None:
        raise XmlError("XML document has no root element")
    if root.getroottree().docinfo.doctype:
        raise XmlHostileError("XML with a document type declaration refused")
    _check_depth(root)
    return root


def _check_depth(root: etree._Element) -> None:
    stack: list[tuple[etree._Element, int]] = [(root, 1)]
    while stack:
        element, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise XmlError(f"XML nested deeper than {MAX_DEPTH} levels")
        stack.extend((child, depth + 1) for child in element)


def local_name(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return str(etree.QName(tag).localname)


def namespace(element: etree._Element) -> str:
    tag = element.tag
    if not isinstance(tag, str):
        return ""
    return str(etree.QName(tag).namespace or "")


def text_of(element: etree._Element | None) -> str:
    if element is None:
        return ""
    return "".join(element.itertext()).strip()
