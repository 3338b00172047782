"""Who may hold a connection open on the IP listener before proving who they are.

A stranger needs no key to connect, so what it can hold is bounded: at most ``per_source`` connections
still in their handshake per source address (more are closed at once), each for the handshake
timeout (the link closes it then), and none while the process is short of file descriptors (so the
API beside the link can still accept). When ``total`` are pending, the oldest pending one is closed
to let the new one try: an enrolled peer's handshake takes one round trip, a stranger's never ends,
so strangers from many addresses cannot keep enrolled peers out either.

Sans I/O, but called from pynng's own threads (pipe callbacks) as well as the event loop: a lock
guards the counts.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

H = TypeVar("H")  # the connection handle (a pynng pipe)


@dataclass(frozen=True, slots=True)
class Verdict(Generic[H]):
    refused: str | None = None  # why the new connection must be closed at once
    evict: H | None = None  # an older pending connection to close to make room


@dataclass
class Admission(Generic[H]):
    per_source: int = 8
    total: int = 64
    min_free_fds: int = 64
    free_fds: Callable[[], int] = lambda: 1 << 30
    refused: Counter[str] = field(default_factory=Counter)  # why, for operators
    _pending: dict[int, tuple[str, H]] = field(default_factory=dict)  # id -> (source, handle), oldest first
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, handle_id: int, source: str, handle: H) -> Verdict[H]:
        """Count the new connection as pending, or say why it must be closed; maybe name an older one
        to close in its favour."""
        with self._lock:
            same = sum(1 for s, _ in self._pending.values() if s == source)
            if same >= self.per_source:
                self.refused["per_source"] += 1
                return Verdict(f"{source} holds {same} unauthenticated connections already")
            if self.free_fds() < self.min_free_fds:
                self.refused["file_descriptors"] += 1
                return Verdict("too few file descriptors left")
            evict = None
            if len(self._pending) >= self.total:
                oldest = next(iter(self._pending))
                evict = self._pending.pop(oldest)[1]
                self.refused["total"] += 1
            self._pending[handle_id] = (source, handle)
            return Verdict(None, evict)

    def settled(self, pipe_id: int) -> None:
        """The handshake ended (authenticated, refused or timed out) or the connection went."""
        with self._lock:
            self._pending.pop(pipe_id, None)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)
