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
    given: dict[bytes, int] = field(default_factory=dict)  # copies handed to a peer (spray-and-wait)
    routed_at: dict[bytes, float] | None = None  # FLASH only: peer -> when last queued for it
    full_size: int = 0  # DATA frame sizes, computed when first asked (0: not yet)
    compact_size: int = 0

    def size(self, compact: bool) -> int:
        """The DATA frame's size with the compact or the full encoding."""
        if compact:
            if not self.compact_size:
                self.compact_size = 1 + len(encode_compact(self.bundle))
            return self.compact_size
        if not self.full_size:
            self.full_size = 1 + len(encode_full(self.bundle))
        return self.full_size
