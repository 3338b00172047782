"""The demo building's panel end: where the building's acknowledgements go, printed as they come.

The gateway sends each acknowledgement (the automatic receipt, then the operator's) as a SIP MESSAGE
with a CAP 1.2 ``Ack`` to the panel contact in the enrolment table (``sip:…@127.0.0.1:5099`` over
UDP in the demo). :class:`DemoPanel` listens there, answers 200 and prints the CAP ``<note>``.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable

from lxml import etree

from ng112.errors import SipParseError
from ng112.sip import SipRequest, build_response, parse_message

CAP_NS = {"cap": "urn:oasis:names:tc:emergency:cap:1.2"}


class DemoPanel:
    """A UDP SIP endpoint on ``port`` that answers 200 and reports each acknowledgement's note."""

    def __init__(self, port: int, report: Callable[[str], None] = print) -> None:
        self.port, self.report = port, report
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", port))
        self._thread = threading.Thread(target=self._run, name="demo-panel", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._sock.close()
        self._thread.join(2.0)

    def _run(self) -> None:
        while True:
            try:
                data, addr = self._sock.recvfrom(65535)
            except OSError:
                return  # closed by stop()
            try:
                message = parse_message(data, datagram=True)
            except SipParseError:
                continue
            if not isinstance(message, SipRequest) or message.method != "MESSAGE":
                continue
            try:
                alert = etree.fromstring(
                    message.body, etree.XMLParser(resolve_entities=False, no_network=True)
                )
                note = alert.findtext("cap:note", default="", namespaces=CAP_NS)
            except etree.XMLSyntaxError:
                note = "(not a CAP Ack)"
            self.report(f"building panel :{self.port} <- acknowledgement: {note}")
            self._sock.sendto(build_response(message, 200, "OK", (), "demo-panel").to_bytes(), addr)
