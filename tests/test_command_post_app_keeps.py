"""The command post's store keeps no inbox copy of what its journal keeps (docs/store.md, "Kept by the
application"): a real command post process is killed with SIGKILL after its store committed the
bundles' ids but before its journal committed them. No custody ACK went out, so the sender still
holds every bundle; after the restart the store has forgotten those ids, the resends are accepted,
and each message is in the journal exactly once.

    command-post  <-ip->  responder-1
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

from field.harness import (
    inbox_pending,
    journal_messages,
    preload,
    running_field,
    stored_bundles,
    wait_until,
)
from relay.daemon import JOURNAL_FILE, STORE_FILE
from relay.store_accept import AWAITING_APP

COUNT = 40


def _awaiting(store: Path) -> int:
    """Ids the post's store committed that its application has not acknowledged keeping."""
    db = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM seen WHERE delivered = ?", (AWAITING_APP,)).fetchone()[0])
    except sqlite3.OperationalError:  # not created yet
        return 0
    finally:
        db.close()


def _journal_ready(path: Path) -> int:
    if not path.exists():
        return 0
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
    try:
        return int(db.execute("SELECT count(*) FROM sqlite_master WHERE name = 'messages'").fetchone()[0])
    finally:
        db.close()


def test_kill_9_between_the_store_commit_and_the_journal_commit_the_resend_is_kept_once(
    tmp_path: Path,
) -> None:
    with running_field(tmp_path, ("command-post", "responder-1"), started=("command-post",)) as field:
        post, sender = field.nodes
        journal = post.directory / JOURNAL_FILE
        wait_until(lambda: _journal_ready(journal), 1, 60, "the post's journal")
        texts = [f"kept once {i:04d}" for i in range(COUNT)]
        asyncio.run(preload(sender, bytes.fromhex(field.node_id("command-post")), texts))
        lock = sqlite3.connect(journal, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")  # the journal's commits wait (busy timeout 5 s)
            field.start("responder-1")
            wait_until(
                lambda: _awaiting(post.directory / STORE_FILE), COUNT, 30, "ids committed by the store"
            )
            assert journal_messages(post) == []
            field.kill("command-post")  # SIGKILL by PID: the journal never committed
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        time.sleep(0.5)
        assert stored_bundles(sender) == COUNT, "a custody ACK went out before the journal kept the bundle"
        field.start_healthy("command-post")
        wait_until(lambda: len(journal_messages(post)), COUNT, 60, "messages in the journal")
        wait_until(lambda: -stored_bundles(sender), 0, 60, "custody ACKs at the sender")
        wait_until(lambda: -_awaiting(post.directory / STORE_FILE), 0, 30, "acks recorded by the store")
        messages = journal_messages(post)
        assert sorted(text for _, _, text, _ in messages) == texts
        assert len({bundle_id for bundle_id, _, _, _ in messages}) == COUNT
        assert inbox_pending(post) == 0
