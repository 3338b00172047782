"""The enrolment invitation (crypto.invite): within 300 bytes, signed, one-time, refused when forged,
expired or cut; the request proves the device holds its key; and a QR image round trip (qrcode
renders, zbar reads)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import qrcode

from crypto.certificate import Authority
from crypto.identity import Identity
from crypto.invite import MAX_INVITATION, EnrolRequest, Invitation, InvitationError
from mobile.enrol import ScanError, node_toml, scan_image


def _invitation(authority: Authority, **changes: object) -> Invitation:
    fields: dict[str, object] = {
        "token": os.urandom(16),
        "expires": int(time.time()) + 600,
        "post_id": bytes(range(16)),
        "name": "Hasič Novák 7",
        "roles": ("responder",),
        "enrol_url": "http://192.168.100.200:8119/enrol",
        "peer": "tcp://192.168.100.200:7112",
    }
    return Invitation.signed(authority.identity, **(fields | changes))


def test_invitation_round_trip_and_size() -> None:
    authority = Authority.generate()
    invitation = _invitation(authority)
    assert len(invitation.encode()) <= MAX_INVITATION
    assert Invitation.from_text(invitation.text()) == invitation
    invitation.verify(authority.public, int(time.time()))


def test_forged_expired_damaged_invitations_are_refused() -> None:
    authority, stranger = Authority.generate(), Authority.generate()
    invitation = _invitation(authority)
    with pytest.raises(InvitationError, match="another deployment authority"):
        invitation.verify(stranger.public, int(time.time()))
    forged = Invitation.signed(
        stranger.identity,
        **{
            k: getattr(invitation, k)
            for k in ("token", "expires", "post_id", "name", "roles", "enrol_url", "peer")
        },
    )
    forged = Invitation(
        **{
            **{k: getattr(forged, k) for k in Invitation.__dataclass_fields__},
            "authority_id": authority.identity.node_id,
        }
    )
    with pytest.raises(InvitationError, match="forged or damaged"):
        forged.verify(authority.public, int(time.time()))
    with pytest.raises(InvitationError, match="expired"):
        _invitation(authority, expires=int(time.time()) - 1).verify(authority.public, int(time.time()))
    wire = bytearray(invitation.encode())
    wire[40] ^= 1
    with pytest.raises(InvitationError):
        Invitation.decode(bytes(wire)).verify(authority.public, int(time.time()))
    with pytest.raises(InvitationError):
        Invitation.decode(invitation.encode()[:-3])
    with pytest.raises(InvitationError):
        Invitation.from_text("https://example.org/")
    with pytest.raises(InvitationError, match="more than 300"):
        _invitation(authority, enrol_url="http://" + "x" * 200)


def test_request_proves_the_key() -> None:
    device = Identity.generate()
    token = os.urandom(16)
    request = EnrolRequest.make(device, token)
    assert EnrolRequest.decode(request.encode()) == request
    other = EnrolRequest.make(Identity.generate(), token)
    swapped = request.encode()[:16] + other.encode()[16:80] + request.encode()[80:]
    with pytest.raises(InvitationError, match="not signed by the keys"):
        EnrolRequest.decode(swapped)


def test_qr_image_round_trip(tmp_path: Path) -> None:
    invitation = _invitation(Authority.generate())
    image = tmp_path / "invitation.png"
    qrcode.make(invitation.text()).save(image)
    assert scan_image(image) == invitation
    other = tmp_path / "other.png"
    qrcode.make("https://example.org/").save(other)
    with pytest.raises(ScanError, match="not a Mesh112 invitation"):
        scan_image(other)
    assert 'command_post = "000102030405060708090a0b0c0d0e0f"' in node_toml(invitation)


def test_camera_frame_with_an_invitation_qr_is_decoded() -> None:
    """The camera path (mobile/ui/camera_scan.py) hands scan_frame a Kivy texture's pixels: RGBA,
    bottom row first. A real rendered QR code, placed off-centre in a 640x480 frame laid out that
    way, decodes to the same invitation; no camera was tested here (this machine has none)."""
    from PIL import Image

    from mobile.enrol import scan_frame

    invitation = _invitation(Authority.generate())
    code = qrcode.make(invitation.text(), box_size=4, border=2).get_image().convert("RGBA")
    scene = Image.new("RGBA", (640, 480), (120, 110, 100, 255))  # a grey room around the paper
    scene.paste(code, (200, 60))
    texture_order = scene.transpose(Image.Transpose.FLIP_TOP_BOTTOM).tobytes()
    assert scan_frame(texture_order, 640, 480) == invitation
    empty = Image.new("RGBA", (640, 480), (120, 110, 100, 255)).tobytes()
    assert scan_frame(empty, 640, 480) is None  # nothing in view yet: scanning goes on
    other = Image.new("RGBA", (640, 480), (255, 255, 255, 255))
    other.paste(qrcode.make("https://example.org/", box_size=4).get_image().convert("RGBA"), (10, 10))
    with pytest.raises(ScanError, match="not a Mesh112 invitation"):
        scan_frame(other.transpose(Image.Transpose.FLIP_TOP_BOTTOM).tobytes(), 640, 480)
    with pytest.raises(ScanError, match="640x480 RGBA frame"):
        scan_frame(texture_order[:-4], 640, 480)
