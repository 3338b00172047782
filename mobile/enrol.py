"""Enrolment by QR: scan the authority's invitation from an image, make this device's identity, ask
the authority for a certificate with the one-time token, and write a ready node directory.

The invitation (:mod:`crypto.invite`) names the command post and the IP link to dial, so the result
is complete: identity (private key never leaves), certificate, trust anchor (checked against the
authority id in the QR), revocations, group keys sealed to this device, the roster, ``node.toml``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import httpx

from crypto.certificate import Certificate, RevocationList
from crypto.identity import Identity, PublicIdentity
from crypto.invite import EnrolAnswer, EnrolRequest, Invitation, InvitationError
from crypto.keyfile import write_atomic
from crypto.keystore import has_identity, load_identity, save_certificate, save_identity, save_revocations
from relay.daemon import ROSTER_DIR
from relay.enrolment import GROUPS_DIR, JOINED_FILE

if TYPE_CHECKING:
    from PIL import Image

ENROL_TIMEOUT_S = 15.0
# The IP link's keepalive on a phone: the relay it dials follows this slower pace (relay/links/ip_session.py),
# so an idle phone exchanges one PING/PONG a minute; a dead path is noticed after 3 minutes.
PHONE_KEEPALIVE_S = 60


class ScanError(InvitationError):
    """No invitation QR code could be read from the image."""


def scan_image(path: Path) -> Invitation:
    """The invitation in the QR code of the image at ``path`` (zbar through pyzbar)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            gray = image.convert("L")
    except (OSError, UnidentifiedImageError) as exc:
        raise ScanError(f"cannot read the image {path}: {exc}") from None
    invitation = _invitation_in(gray, str(path))
    if invitation is None:
        raise ScanError(f"no QR code found in {path}")
    return invitation


def scan_frame(rgba: bytes, width: int, height: int) -> Invitation | None:
    """The invitation in one camera frame, or None while no QR code is in view.

    ``rgba`` is a Kivy texture's pixels (``Camera.texture.pixels``): RGBA, bottom row first, which
    is flipped back so zbar sees the code the right way round. A QR code that is not an invitation
    raises :class:`ScanError`, so the screen can say so instead of scanning on in silence."""
    from PIL import Image

    if len(rgba) != width * height * 4:
        raise ScanError(f"a {width}x{height} RGBA frame has {width * height * 4} bytes, not {len(rgba)}")
    frame = Image.frombuffer("RGBA", (width, height), rgba, "raw", "RGBA", 0, 1)
    gray = frame.convert("L").transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return _invitation_in(gray, "the camera's view")


def _invitation_in(gray: Image.Image, where: str) -> Invitation | None:
    """The invitation among the QR codes zbar finds in a grayscale image (None: no code at all)."""
    from pyzbar.pyzbar import decode

    texts = [code.data.decode("ascii", errors="replace") for code in decode(gray)]
    if not texts:
        return None
    for text in texts:
        if text.startswith("M112:"):
            return Invitation.from_text(text)
    raise ScanError(f"the QR code in {where} is not a Mesh112 invitation")


def node_toml(invitation: Invitation) -> str:
    roles = ", ".join(f'"{role}"' for role in invitation.roles)
    name = invitation.name.replace("\\", "\\\\").replace('"', '\\"')
    return (
        "# Written by the Mesh112 app from an enrolment invitation.\n"
        f'[node]\nname = "{name}"\nroles = [{roles}]\ncommand_post = "{invitation.post_id.hex()}"\n\n'
        f'[[links]]\ntype = "ip"\nname = "ip0"\npeers = ["{invitation.peer}"]\n'
        f"keepalive_interval = {PHONE_KEEPALIVE_S}  # battery: a ping a minute, not every second\n"
    )


def enrol(node_dir: Path, invitation: Invitation, now: float | None = None) -> Certificate:
    """Enrol this device with ``invitation``; on success ``node_dir`` runs as a node."""
    now = time.time() if now is None else now
    if now > invitation.expires:
        raise InvitationError("the invitation has expired; ask for a new one")
    node_dir.mkdir(parents=True, exist_ok=True)
    if has_identity(node_dir):
        identity = load_identity(node_dir)
    else:
        identity = Identity.generate()
        save_identity(node_dir, identity)
    request = EnrolRequest.make(identity, invitation.token)
    try:
        response = httpx.post(invitation.enrol_url, content=request.encode(), timeout=ENROL_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise InvitationError(f"cannot reach the authority at {invitation.enrol_url}: {exc}") from None
    if response.status_code != 200:
        raise InvitationError(f"the authority refused ({response.status_code}): {response.text}")
    answer = EnrolAnswer.decode(response.content)
    authority = PublicIdentity.decode(answer.authority)
    invitation.verify(authority, int(now))  # the anchor is the one whose id the QR code carries
    revocations = RevocationList.decode(answer.revocations)
    revocations.verify(authority)
    certificate = Certificate.decode(answer.certificate)
    if certificate.node_id != identity.node_id:
        raise InvitationError("the authority answered with a certificate for another device")
    certificate.verify(authority, int(now), revocations)
    save_certificate(node_dir, certificate, authority)
    save_revocations(node_dir, revocations)
    groups = node_dir / GROUPS_DIR
    groups.mkdir(mode=0o700, exist_ok=True)
    for name, sealed in answer.group_keys.items():
        if "/" in name or name.startswith("."):
            raise InvitationError(f"the answer names a group key file {name!r} outside the node directory")
        write_atomic(groups / name, sealed, 0o600)
    write_atomic(groups / JOINED_FILE, "".join(f"{g}\n" for g in answer.joined).encode(), 0o644)
    roster = node_dir / ROSTER_DIR
    roster.mkdir(exist_ok=True)
    for data in answer.roster:
        other = Certificate.decode(data)
        write_atomic(roster / f"{other.node_id.hex()}.cert", data, 0o644)
    write_atomic(node_dir / "node.toml", node_toml(invitation).encode(), 0o644)
    return certificate
