"""Group keys for incident groups and roles: sealing, distribution, rotation on revocation.

A group key is 32 random bytes with a name and an epoch. The authority or an incident commander
(the *issuer*) creates it and wraps it for each member with a signed standard seal, so a member
knows who handed it the key; whether that issuer may run the group is the caller's policy (check
its certificate's roles). When a member is revoked or removed, the issuer rotates: a fresh key with
the next epoch goes to the remaining members only, so the removed member cannot open anything
sealed after the rotation.

Group seal format: ``epoch(u16) salt(8) ChaCha20-Poly1305(plaintext)`` — overhead 26 bytes. The
nonce comes from the bundle id and the random salt as in the compact pairwise mode; ids include the
origin, so members sharing the key never share an id, and the salt covers an origin that lost its
store and repeats an id. A group seal proves membership, not which member sent it: inside the group
the origin in the header is trusted as asserted (sign over IP where that matters).

Epochs: a member opens only the newest epoch it holds of a group, and the one before it for
``grace_s`` seconds after the newer key arrived (bundles sealed just before a rotation are still in
flight); anything older raises :class:`StaleEpochError`. So a member removed at a rotation can
no longer inject into the group with the key it kept once the grace has passed.

Group key message (``"MG"`` version 1): ``name(len8 + UTF-8) epoch(u16) key(32)``.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from crypto import wire
from crypto.certificate import RevocationList
from crypto.errors import DecodeError, SealError, StaleEpochError
from crypto.identity import Identity, PublicIdentity
from crypto.seal import MAX_PLAINTEXT, NONCE_SALT_LEN, TAG_LEN, SealContext, derive_nonce

GROUP_KEY_LEN = 32
GROUP_OVERHEAD = 2 + NONCE_SALT_LEN + TAG_LEN
EPOCH_GRACE_S = 3600.0  # the previous epoch still opens this long after the newer key arrived
MAX_GROUP_NAME = 64
MAX_EPOCH = 0xFFFF
_MAGIC, _VERSION = b"MG", 1
_MAX_MESSAGE = 3 + 1 + MAX_GROUP_NAME + 2 + GROUP_KEY_LEN
_SEAL_TAG = b"mesh112/group/v1"
_WRAP_AAD = b"mesh112/group-key/v1"


def check_group_name(name: str) -> str:
    if not name or len(name.encode()) > MAX_GROUP_NAME or not name.isprintable():
        raise SealError(f"group name {name!r} must be 1-{MAX_GROUP_NAME} bytes of printable text")
    return name


@dataclass(frozen=True, slots=True)
class GroupKey:
    group: str
    epoch: int
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        check_group_name(self.group)
        if not 0 <= self.epoch <= MAX_EPOCH:
            raise SealError(f"group key epoch must be 0-{MAX_EPOCH}")
        if len(self.key) != GROUP_KEY_LEN:
            raise SealError(f"a group key is {GROUP_KEY_LEN} bytes")

    @classmethod
    def generate(cls, group: str, epoch: int = 0) -> GroupKey:
        return cls(group, epoch, os.urandom(GROUP_KEY_LEN))

    def encode(self) -> bytes:
        name = wire.short_text(self.group, "group name", MAX_GROUP_NAME)
        return _MAGIC + wire.u8(_VERSION) + name + wire.u16(self.epoch) + self.key

    @classmethod
    def decode(cls, data: bytes) -> GroupKey:
        r = wire.Reader(data, "group key message", _MAX_MESSAGE)
        if r.take(2, "magic") != _MAGIC or r.u8("version") != _VERSION:
            raise DecodeError("not a version 1 Mesh112 group key message")
        group, epoch, key = r.short_text("group name", MAX_GROUP_NAME), r.u16("epoch"), r.take(32, "key")
        r.finish()
        try:
            return cls(group, epoch, key)
        except SealError as exc:
            raise DecodeError(f"group key message is invalid: {exc}") from None


def _group_aad(group: str, epoch: int, aad: bytes) -> bytes:
    return _SEAL_TAG + wire.short_text(group, "group name", MAX_GROUP_NAME) + wire.u16(epoch) + aad


def seal_group(key: GroupKey, nonce_input: bytes, aad: bytes, plaintext: bytes) -> bytes:
    if len(plaintext) > MAX_PLAINTEXT:
        raise SealError(f"plaintext is larger than {MAX_PLAINTEXT} bytes")
    salt = os.urandom(NONCE_SALT_LEN)
    cipher = ChaCha20Poly1305(key.key)
    return (
        wire.u16(key.epoch)
        + salt
        + cipher.encrypt(derive_nonce(nonce_input, salt), plaintext, _group_aad(key.group, key.epoch, aad))
    )


class GroupKeyring:
    """The group keys a member holds and when each arrived, which decides the epochs that open."""

    def __init__(self, keys: Iterable[GroupKey] = (), *, now: float = 0.0, grace_s: float = EPOCH_GRACE_S):
        self.grace_s = grace_s
        self._keys: dict[tuple[str, int], GroupKey] = {}
        self._arrived: dict[tuple[str, int], float] = {}
        for key in keys:
            self.add(key, now)

    def add(self, key: GroupKey, now: float) -> None:
        """Hold ``key``; ``now`` (any clock the caller also passes to :meth:`usable`) starts the grace
        of the epoch before it."""
        self._keys[(key.group, key.epoch)] = key
        self._arrived.setdefault((key.group, key.epoch), now)

    def get(self, group: str, epoch: int) -> GroupKey | None:
        return self._keys.get((group, epoch))

    def latest(self, group: str) -> GroupKey | None:
        epochs = [epoch for name, epoch in self._keys if name == group]
        return self._keys[(group, max(epochs))] if epochs else None

    def usable(self, group: str, epoch: int, now: float) -> GroupKey:
        """The key of ``epoch`` if that epoch may still open bundles at ``now``."""
        key, latest = self.get(group, epoch), self.latest(group)
        if key is None or latest is None:
            raise SealError(f"no key for group {group!r} epoch {epoch} (not a member, or removed before it)")
        if epoch == latest.epoch:
            return key
        newer = self._arrived.get((group, epoch + 1))
        if epoch == latest.epoch - 1 and newer is not None and now < newer + self.grace_s:
            return key
        raise StaleEpochError(
            f"group {group!r} epoch {epoch} was replaced by epoch {latest.epoch}; sealed by a removed "
            "member, or held back longer than the rotation grace"
        )


def open_group(
    keyring: GroupKeyring, group: str, nonce_input: bytes, aad: bytes, sealed: bytes, now: float
) -> bytes:
    """Open a group seal at ``now`` (the clock the keyring's keys were added with)."""
    if not GROUP_OVERHEAD <= len(sealed) <= MAX_PLAINTEXT + GROUP_OVERHEAD:
        raise SealError(f"group sealed payload has an impossible length ({len(sealed)} bytes)")
    epoch = int.from_bytes(sealed[:2], "big")
    key = keyring.usable(group, epoch, now)
    salt, body = sealed[2 : 2 + NONCE_SALT_LEN], sealed[2 + NONCE_SALT_LEN :]
    try:
        return ChaCha20Poly1305(key.key).decrypt(
            derive_nonce(nonce_input, salt), body, _group_aad(group, epoch, aad)
        )
    except InvalidTag:
        raise SealError(f"group seal for {group!r} epoch {epoch} does not open: tampered") from None


def wrap_group_key(issuer: Identity | SealContext, member: PublicIdentity, key: GroupKey) -> bytes:
    """The key sealed (standard mode, signed) from the issuer to one member."""
    context = issuer if isinstance(issuer, SealContext) else SealContext(issuer)
    return context.seal_standard(member, _WRAP_AAD, key.encode(), sign=True)


def unwrap_group_key(member: Identity | SealContext, issuer: PublicIdentity, wrapped: bytes) -> GroupKey:
    context = member if isinstance(member, SealContext) else SealContext(member)
    return GroupKey.decode(context.open_standard(issuer, _WRAP_AAD, wrapped))


@dataclass(slots=True)
class _Group:
    key: GroupKey
    members: dict[bytes, PublicIdentity]


class GroupKeyManager:
    """The issuer's side: which groups exist, who is in them, and the current key of each."""

    def __init__(self, issuer: Identity) -> None:
        self._context = SealContext(issuer)
        self._groups: dict[str, _Group] = {}

    def create(self, group: str, members: Iterable[PublicIdentity]) -> dict[bytes, bytes]:
        """Make epoch 0 of ``group``; returns the wrapped key per member node id."""
        if group in self._groups:
            raise SealError(f"group {group!r} already exists")
        self._groups[group] = _Group(GroupKey.generate(group), {m.node_id: m for m in members})
        return self._wrap_all(group)

    def current(self, group: str) -> GroupKey:
        return self._group(group).key

    def members(self, group: str) -> Mapping[bytes, PublicIdentity]:
        return dict(self._group(group).members)

    def add_member(self, group: str, member: PublicIdentity) -> bytes:
        state = self._group(group)
        state.members[member.node_id] = member
        return wrap_group_key(self._context, member, state.key)

    def remove_member(self, group: str, node_id: bytes) -> dict[bytes, bytes]:
        """Drop a member and rotate: returns the new key wrapped for each remaining member."""
        state = self._group(group)
        if state.members.pop(node_id, None) is None:
            return {}
        self._rotate(state)
        return self._wrap_all(group)

    @staticmethod
    def _rotate(state: _Group) -> None:
        if state.key.epoch >= MAX_EPOCH:
            raise SealError(f"group {state.key.group!r} has used all {MAX_EPOCH} epochs; create a new group")
        state.key = GroupKey.generate(state.key.group, state.key.epoch + 1)

    def apply_revocations(self, revocations: RevocationList) -> dict[str, dict[bytes, bytes]]:
        """Remove every revoked member from every group; returns the rotations to distribute."""
        rotations: dict[str, dict[bytes, bytes]] = {}
        for group, state in self._groups.items():
            revoked = [node_id for node_id in state.members if revocations.is_revoked(node_id)]
            if revoked:
                for node_id in revoked:
                    del state.members[node_id]
                self._rotate(state)
                rotations[group] = self._wrap_all(group)
        return rotations

    def _group(self, group: str) -> _Group:
        state = self._groups.get(group)
        if state is None:
            raise SealError(f"no group {group!r}")
        return state

    def _wrap_all(self, group: str) -> dict[bytes, bytes]:
        state = self._group(group)
        return {node_id: wrap_group_key(self._context, m, state.key) for node_id, m in state.members.items()}
