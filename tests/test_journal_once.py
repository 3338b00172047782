"""The promise the command post feed makes when it takes deliveries before the store's commit
(``Node.inbox_batches(idempotent=True)``, docs/relay-core.md): a message is kept once per bundle id,
however often it comes, across restarts of the journal."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from relay.bundle import EPOCH_UNIX
from relay.journal import Journal, MessageEntry

T0 = EPOCH_UNIX + 50_000_000


async def test_a_message_delivered_again_after_a_restart_is_kept_once_and_not_announced_again(
    tmp_path: Path,
) -> None:
    message = MessageEntry("ab" * 22, "aa" * 16, "node:bb", 3, "PRIORITY", T0, T0 + 1, "early")
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    _, [stored] = await journal.record_burst([], [message])
    await journal.close()
    journal = await Journal.open(tmp_path / "journal.sqlite3")
    try:  # the same bundle again: its first commit failed, or the node died before it
        _, again = await journal.record_burst([], [replace(message, received=T0 + 9, text="other")])
        assert again == []  # no second live event
        assert await journal.messages() == [stored]  # the first arrival's stamp and text stand
    finally:
        await journal.close()
