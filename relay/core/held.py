"""What the relay keeps in memory for each bundle it holds: who has it, where it was sent, copies."""

from __future__ import annotations

from dataclasses import dataclass, field

from relay.bundle import Bundle, encode_compact, encode_full


@dataclass(slots=True)  # one per held bundle: 100k of them must fit a small device
class Held:
    bundle: Bundle
    local: bool
    copies: int
    holders: set[bytes] = field(default_factory=set)  # neighbours known to have it
    routed: dict[bytes, tuple[str, bool]] = field(default_factory=dict)  # peer -> (link, directed)
    routed_at: dict[bytes, float] = field(default_factory=dict)  # FLASH: peer -> when last queued for it
    given: dict[bytes, int] = field(default_factory=dict)  # copies handed to a peer (spray-and-wait)
    sizes: dict[bool, int] = field(default_factory=dict)  # DATA frame size by "compact"

    def size(self, compact: bool) -> int:
        if compact not in self.sizes:
            encoded = encode_compact(self.bundle) if compact else encode_full(self.bundle)
            self.sizes[compact] = 1 + len(encoded)
        return self.sizes[compact]
