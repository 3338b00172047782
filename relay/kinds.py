"""Payload kinds: a registry so applications add their records without ``relay`` knowing them.

``relay.bundle.Kind`` lists the relay's own kinds (below 32). ``ng112`` and ``analytics_edge``
register theirs (32-255) with a name and an optional validator that raises ``ValueError`` for a
malformed plaintext, so a bad record is refused when it is sent rather than when it arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from relay.bundle import Kind

Validator = Callable[[bytes], None]


class KindError(ValueError):
    """An unknown or conflicting payload kind, or a payload its validator refused."""


@dataclass(frozen=True, slots=True)
class KindInfo:
    number: int
    name: str
    validator: Validator | None = None


class KindRegistry:
    def __init__(self) -> None:
        self._kinds: dict[int, KindInfo] = {}
        for kind in Kind:
            if kind is not Kind.FIRST_APPLICATION_KIND:
                self._kinds[int(kind)] = KindInfo(int(kind), kind.name.lower())

    def register(self, number: int, name: str, validator: Validator | None = None) -> KindInfo:
        if not Kind.FIRST_APPLICATION_KIND <= number <= 0xFF:
            raise KindError(f"application kinds are {int(Kind.FIRST_APPLICATION_KIND)}-255, got {number}")
        existing = self._kinds.get(number)
        if existing is not None and existing.name != name:
            raise KindError(f"kind {number} is already registered as {existing.name!r}")
        info = self._kinds[number] = KindInfo(number, name, validator)
        return info

    def get(self, number: int) -> KindInfo | None:
        return self._kinds.get(number)

    def name(self, number: int) -> str:
        info = self._kinds.get(number)
        return info.name if info is not None else f"kind-{number}"

    def validate(self, number: int, payload: bytes) -> None:
        info = self._kinds.get(number)
        if info is None:
            raise KindError(f"payload kind {number} is not registered on this node")
        if info.validator is not None:
            try:
                info.validator(payload)
            except ValueError as exc:
                raise KindError(f"{info.name} payload refused: {exc}") from None
