"""``mesh112 authority invite``: a signed one-time enrolment invitation as a QR code, answered once.

The authority prints the invitation (:mod:`crypto.invite`) on the terminal and, with ``--png``, as an
image; then it listens on ``--listen`` for the one device that scans it. That device sends its public
keys with the token; the authority checks the token (unused, unexpired) and the device's proof, issues
its certificate, seals its group keys to it and answers. The device dials ``--peer`` afterwards and
is a member of the mesh. The command stops after one enrolment or when the invitation expires.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

from crypto.certificate import Authority, Certificate
from crypto.errors import CryptoError
from crypto.identity import display_id
from crypto.invite import TOKEN_LEN, EnrolAnswer, EnrolRequest, Invitation, InvitationError
from crypto.keyfile import write_atomic
from crypto.keystore import load_certificate
from relay.daemon import ROSTER_DIR
from relay.enrolment import GROUPS_DIR, JOINED_FILE, distribute_group_keys, parse_roles
from relay.errors import Mesh112Error, UsageError

DEFAULT_LISTEN = "127.0.0.1:8119"
MAX_REQUEST = 4096


def register_invite(actions: Any, load_authority: Any) -> None:
    invite = actions.add_parser(
        "invite",
        help="print a signed one-time invitation (QR) and enrol the device that scans it",
        description="Prints a one-time enrolment invitation as a QR code (and --png), then waits on "
        "--listen for the device that scans it, issues its certificate and group keys, and exits.",
    )
    invite.add_argument(
        "--authority", type=Path, required=True, metavar="DIR", help="the authority directory"
    )
    invite.add_argument("--name", required=True, help="the device's display name, e.g. 'Responder 7'")
    invite.add_argument("--roles", default="responder", help="comma-separated roles (default responder)")
    invite.add_argument("--groups", default="", help="incident groups it joins, e.g. incident-1")
    invite.add_argument("--days", type=int, default=365, help="certificate validity in days (default 365)")
    where = invite.add_mutually_exclusive_group(required=True)
    where.add_argument("--post", help="the command post's node id (32 hex digits)")
    where.add_argument("--post-dir", type=Path, help="the command post's node directory (its id is read)")
    invite.add_argument(
        "--peer", required=True, help="the IP link the device dials, e.g. tcp://10.0.0.1:7112"
    )
    invite.add_argument(
        "--listen", default=DEFAULT_LISTEN, help=f"where to answer (default {DEFAULT_LISTEN})"
    )
    invite.add_argument("--url", help="the enrolment URL the invitation names (default http://LISTEN/enrol)")
    invite.add_argument("--minutes", type=float, default=30.0, help="how long the invitation is good (30)")
    invite.add_argument("--png", type=Path, help="also write the QR code to this PNG file")
    invite.set_defaults(func=lambda args: _cmd_invite(args, load_authority(args.authority)))


def _post_id(args: argparse.Namespace) -> bytes:
    if args.post_dir is not None:
        certificate = load_certificate(args.post_dir)
        if certificate is None:
            raise Mesh112Error(f"{args.post_dir} holds no certificate; enrol the command post first")
        return certificate.node_id
    try:
        post = bytes.fromhex(args.post)
    except ValueError:
        post = b""
    if len(post) != 16:
        raise UsageError(f"--post must be the command post's node id (32 hex digits), got {args.post!r}")
    return post


def _cmd_invite(args: argparse.Namespace, authority: Authority) -> int:
    try:
        import qrcode
    except ImportError:
        raise Mesh112Error(
            "printing a QR code needs the qrcode package: pip install 'mesh112[mobile]'"
        ) from None
    roles = parse_roles(args.roles)
    groups = tuple(g for g in (part.strip() for part in args.groups.split(",")) if g)
    host, _, port = args.listen.rpartition(":")
    if not port.isdigit():
        raise UsageError(f"--listen must be HOST:PORT, got {args.listen!r}")
    invitation = Invitation.signed(
        authority.identity,
        token=os.urandom(TOKEN_LEN),
        expires=int(time.time() + args.minutes * 60),
        post_id=_post_id(args),
        name=args.name,
        roles=roles,
        enrol_url=args.url or f"http://{args.listen}/enrol",
        peer=args.peer,
    )
    text = invitation.text()
    code = qrcode.QRCode(border=2, error_correction=qrcode.constants.ERROR_CORRECT_M)
    code.add_data(text)
    code.print_ascii(invert=True)
    if args.png is not None:
        code.make_image().save(args.png)
    print(f"invitation for {args.name!r} ({','.join(roles)}): {len(invitation.encode())} bytes, {text}")
    until = time.strftime("%H:%M", time.localtime(invitation.expires))
    print(f"waiting for the device on {args.listen} until {until}\n", flush=True)
    enrolment = _Enrolment(authority, args.authority, invitation, groups, args.days)
    server = HTTPServer((host or "127.0.0.1", int(port)), enrolment.handler())
    expiry = threading.Timer(max(0.0, invitation.expires - time.time()), server.shutdown)
    expiry.daemon = True
    expiry.start()
    enrolment.server = server
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        expiry.cancel()
        server.server_close()
    if enrolment.certificate is None:
        raise Mesh112Error("the invitation expired unused")
    cert = enrolment.certificate
    if args.post_dir is not None:  # the command post names and trusts it from its roster
        roster = args.post_dir / ROSTER_DIR
        roster.mkdir(exist_ok=True)
        write_atomic(roster / f"{cert.node_id.hex()}.cert", cert.encode(), 0o644)
        print(f"certificate added to the command post's roster {roster} (read when the post starts)")
    held = ",".join(sorted(cert.roles))
    print(f"enrolled {cert.name!r} {display_id(cert.node_id, full=True)} roles {held}", flush=True)
    return 0


class _Enrolment:
    """The one enrolment an invitation allows."""

    def __init__(
        self,
        authority: Authority,
        authority_dir: Path,
        invitation: Invitation,
        groups: tuple[str, ...],
        days: int,
    ) -> None:
        self.authority, self.authority_dir, self.invitation = authority, authority_dir, invitation
        self.groups, self.days = groups, days
        self.certificate: Certificate | None = None
        self.server: HTTPServer | None = None
        self._lock = threading.Lock()

    def answer(self, body: bytes) -> EnrolAnswer:
        request = EnrolRequest.decode(body)
        with self._lock:
            if request.token != self.invitation.token:
                raise InvitationError("the token is not this invitation's")
            if self.certificate is not None:
                raise InvitationError("this invitation has been used; ask for a new one")
            if time.time() > self.invitation.expires:
                raise InvitationError("the invitation has expired; ask for a new one")
            now = int(time.time())
            authority = self.authority
            certificate = authority.issue(
                request.public,
                frozenset(self.invitation.roles),
                self.invitation.name,
                now + self.days * 86_400,
                now=now,
            )
            authority.save(self.authority_dir)
            with tempfile.TemporaryDirectory() as staging:
                distribute_group_keys(authority, self.authority_dir, Path(staging), certificate, self.groups)
                keys = {
                    path.name: path.read_bytes()
                    for path in (Path(staging) / GROUPS_DIR).iterdir()
                    if path.name != JOINED_FILE
                }
            self.certificate = certificate
        return EnrolAnswer(
            certificate.encode(),
            authority.public.encode(),
            authority.revocations.encode(),
            keys,
            self.groups,
            tuple(c.encode() for c in authority.roster if c.node_id != certificate.node_id),
        )

    def handler(self) -> type[BaseHTTPRequestHandler]:
        enrolment = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                if self.path != "/enrol" or not 0 < length <= MAX_REQUEST:
                    self._reply(
                        404 if self.path != "/enrol" else 400, b"POST /enrol with an enrolment request"
                    )
                    return
                try:
                    answer = enrolment.answer(self.rfile.read(length))
                except (InvitationError, CryptoError) as exc:
                    self._reply(403, str(exc).encode())
                    return
                self._reply(200, answer.encode(), "application/json")
                if enrolment.server is not None:
                    threading.Thread(target=enrolment.server.shutdown, daemon=True).start()

            def _reply(self, status: int, body: bytes, kind: str = "text/plain; charset=utf-8") -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                print(f"enrolment request from {self.address_string()}: {format % args}", flush=True)

        return Handler
