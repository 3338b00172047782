"""Building enrolment: what the command post knows about a building before any alarm arrives.

A compact alarm record carries only the sender key id; the address, name, floors, contacts,
hazards, reference position and the panel's SIP contact (where acknowledgements go) are looked up
here. The table is one TOML file with ``[[building]]`` entries, validated with errors that name the
entry and field::

    [[building]]
    key_id = "0a1b2c3d"                       # 8 hex digits; omit to derive it from the sender URI
    sender = "sip:fire-panel-17@building.example.org"
    name = "Example Office Tower"
    address = { country = "AT", A1 = "Wien", RD = "Stephansplatz", HNO = "1", PC = "1010" }
    floors = "-2..12"
    contacts = ["Facility desk +43 1 555 0100"]
    hazards = ["Diesel tank in basement"]
    lat = 48.20849
    lon = 16.37208
    panel = "sip:fire-panel-17@127.0.0.1:5099;transport=udp"
    digest_secret = "..."                     # optional: the panel authenticates (SIP digest)
    digest_user = "fire-panel-17"             # optional: default the user part of 'sender'

A building with a ``digest_secret`` must authenticate its MESSAGEs (:mod:`ng112.digest`); keep the
file readable by the gateway's user only (mode 0600), as it holds the secrets.
"""

from __future__ import annotations

import hashlib
import tomllib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ng112.errors import EnrolmentError

MIN_SECRET = 12
_CIVIC_ORDER = ("NAM", "RD", "HNO", "HNS", "LOC", "PC", "A3", "A1", "country")


def derived_key_id(sender_uri: str) -> int:
    """Key id of a sender that is not enrolled: 32-bit hash of its lower-cased URI."""
    return int.from_bytes(hashlib.blake2b(sender_uri.lower().encode(), digest_size=4).digest(), "big")


@dataclass(frozen=True, slots=True)
class Building:
    key_id: int
    sender: str
    name: str
    address: tuple[tuple[str, str], ...] = ()  # RFC 5139 civic fields
    floors: str = ""
    contacts: tuple[str, ...] = ()
    hazards: tuple[str, ...] = ()
    lat: float | None = None
    lon: float | None = None
    panel: str = ""  # SIP URI acknowledgements are sent to
    digest_user: str = ""  # SIP digest username; with digest_secret, the panel must authenticate
    digest_secret: str = field(default="", repr=False)

    @property
    def auth_user(self) -> str:
        """The digest username: ``digest_user``, else the user part of the sender URI."""
        return self.digest_user or self.sender.split(":", 1)[-1].split("@", 1)[0]

    def card(self) -> dict[str, Any]:
        """What the console shows of a building (map marker, alarm detail); never the digest secret."""
        return {
            "key_id": f"{self.key_id:08x}",
            "name": self.name,
            "address": self.address_line() or None,
            "floors": self.floors or None,
            "hazards": list(self.hazards),
            "contacts": list(self.contacts),
            "lat": self.lat,
            "lon": self.lon,
        }

    def address_line(self) -> str:
        fields = dict(self.address)
        street = " ".join(fields[k] for k in ("RD", "HNO", "HNS") if k in fields)
        town = " ".join(fields[k] for k in ("PC", "A3", "A1") if k in fields)
        return ", ".join(
            part for part in (fields.get("NAM", ""), street, town, fields.get("country", "")) if part
        )


class BuildingRegistry:
    """Enrolled buildings by key id and by sender URI."""

    def __init__(self, buildings: Iterable[Building] = ()) -> None:
        self._by_key: dict[int, Building] = {}
        self._by_sender: dict[str, Building] = {}
        self._by_digest_user: dict[str, Building] = {}
        for building in buildings:
            self.add(building)

    def add(self, building: Building) -> None:
        if building.key_id in self._by_key:
            raise EnrolmentError(f"key id {building.key_id:08x} enrolled twice")
        if building.sender.lower() in self._by_sender:
            raise EnrolmentError(f"sender {building.sender} enrolled twice")
        if building.digest_secret and building.auth_user in self._by_digest_user:
            raise EnrolmentError(f"digest user {building.auth_user} enrolled twice")
        self._by_key[building.key_id] = building
        self._by_sender[building.sender.lower()] = building
        if building.digest_secret:
            self._by_digest_user[building.auth_user] = building

    def by_key(self, key_id: int) -> Building | None:
        return self._by_key.get(key_id)

    def by_sender(self, sender_uri: str) -> Building | None:
        return self._by_sender.get(sender_uri.lower())

    def by_digest_user(self, username: str) -> Building | None:
        """The building whose panel authenticates as ``username`` (only buildings with a secret)."""
        return self._by_digest_user.get(username)

    def key_for(self, sender_uri: str) -> int:
        building = self.by_sender(sender_uri)
        return building.key_id if building else derived_key_id(sender_uri)

    def __len__(self) -> int:
        return len(self._by_key)

    def __iter__(self) -> Iterator[Building]:
        return iter(self._by_key.values())

    @classmethod
    def from_toml(cls, text: str) -> BuildingRegistry:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise EnrolmentError(f"building table is not valid TOML: {exc}") from None
        entries = data.get("building", [])
        if not isinstance(entries, list):
            raise EnrolmentError("building table: [[building]] entries expected")
        return cls(_building(i, entry) for i, entry in enumerate(entries, 1))

    @classmethod
    def load(cls, path: Path) -> BuildingRegistry:
        return cls.from_toml(path.read_text(encoding="utf-8"))


def _building(index: int, entry: Any) -> Building:
    where = f"building #{index}"
    if not isinstance(entry, dict):
        raise EnrolmentError(f"{where}: a table expected")
    sender = entry.get("sender")
    if not isinstance(sender, str) or ":" not in sender:
        raise EnrolmentError(f"{where}: 'sender' must be a URI such as sip:panel@host")
    raw_key = entry.get("key_id")
    try:
        key_id = int(raw_key, 16) if isinstance(raw_key, str) else derived_key_id(sender)
    except ValueError:
        raise EnrolmentError(f"{where}: key_id {raw_key!r} is not hexadecimal") from None
    if raw_key is not None and (not isinstance(raw_key, str) or len(raw_key) != 8):
        raise EnrolmentError(f"{where}: key_id must be 8 hex digits")
    address = entry.get("address", {})
    if not isinstance(address, dict) or not all(isinstance(v, str) for v in address.values()):
        raise EnrolmentError(f"{where}: 'address' must map RFC 5139 fields to strings")
    lat, lon = entry.get("lat"), entry.get("lon")
    if (lat is None) != (lon is None) or (
        lat is not None and not (isinstance(lat, int | float) and isinstance(lon, int | float))
    ):
        raise EnrolmentError(f"{where}: give both 'lat' and 'lon' as numbers, or neither")
    for name in ("contacts", "hazards"):
        value = entry.get(name, [])
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise EnrolmentError(f"{where}: '{name}' must be a list of strings")
    secret, user = entry.get("digest_secret", ""), entry.get("digest_user")
    if not isinstance(secret, str) or (secret and len(secret) < MIN_SECRET):
        raise EnrolmentError(f"{where}: 'digest_secret' must be a string of at least {MIN_SECRET} characters")
    if user is not None and (not isinstance(user, str) or not user):
        raise EnrolmentError(f"{where}: 'digest_user' must be a non-empty string")
    ordered = sorted(
        address.items(), key=lambda kv: _CIVIC_ORDER.index(kv[0]) if kv[0] in _CIVIC_ORDER else 99
    )
    return Building(
        key_id=key_id,
        sender=sender,
        name=str(entry.get("name", sender)),
        address=tuple(ordered),
        floors=str(entry.get("floors", "")),
        contacts=tuple(entry.get("contacts", [])),
        hazards=tuple(entry.get("hazards", [])),
        lat=float(lat) if lat is not None else None,
        lon=float(lon) if lon is not None else None,
        panel=str(entry.get("panel", "")),
        digest_user=user or "",
        digest_secret=secret,
    )
