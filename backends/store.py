"""The lab's durable store: what a node has acknowledged and not yet handed on.

A node writes an item here *before* the acknowledgement leaves (SIP 2xx, SMTP 250,
submit_sm_resp / deliver_sm_resp ok) and removes it once the next hop has taken it, so
a crash, a SIGKILL or a restart loses nothing that was acknowledged. On start a node
reads back what it still owes, in the order it was stored.

One SQLite database per lab (stdlib sqlite3) in write-ahead-log mode with
synchronous=NORMAL: every commit is in the WAL before put() returns, which survives
the process dying at any point (what the lab must survive); only a power cut could
lose the last commits. Without a state folder the database lives in memory: the same
code paths, nothing on disk (`iwlab play`, tests).

The store is used from the lab's loop thread (it may be built on another, before the lab
starts); calls are short and synchronous.
"""
from __future__ import annotations

import contextlib
import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    id INTEGER PRIMARY KEY AUTOINCREMENT,   -- the order things were accepted in
    owner TEXT NOT NULL,                    -- the node's queue ("IWF sms", "SMSC" ...)
    key TEXT NOT NULL,                      -- within it: a conversation, a recipient
    payload BLOB NOT NULL,                  -- the PDU or message as the node will send it
    meta TEXT NOT NULL,                     -- JSON: what the node needs besides the bytes
    message_id TEXT NOT NULL,               -- the protocol's id, when it has one ('' if not)
    stored_at REAL NOT NULL                 -- wall clock, for ages shown in the window
);
CREATE INDEX IF NOT EXISTS items_by_queue ON items (owner, key, id);
CREATE TABLE IF NOT EXISTS seen (           -- ids already accepted: a resend is recognised
    owner TEXT NOT NULL, message_id TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (owner, message_id)
);
"""
SEEN_KEPT = 100_000   # ids remembered per owner for duplicate detection


@dataclass(frozen=True)
class StoredItem:
    id: int
    key: str
    payload: bytes
    meta: dict[str, Any]
    message_id: str
    stored_at: float


class Store:
    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        # Built where the Lab is built, used on the lab's loop thread: one thread at a time.
        self._db = sqlite3.connect(str(path) if path else ":memory:", isolation_level=None,
                                   check_same_thread=False)
        if path:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(SCHEMA)

    @property
    def durable(self) -> bool:
        return self.path is not None

    def queue(self, owner: str) -> "DurableQueue":
        return DurableQueue(self._db, owner)

    def holdings(self) -> dict[str, tuple[int, float | None]]:
        """Per owner: (items held, when the oldest was stored) - what the window shows."""
        rows = self._db.execute("SELECT owner, COUNT(*), MIN(stored_at) FROM items GROUP BY owner").fetchall()
        return {owner: (count, oldest) for owner, count, oldest in rows}

    def clear(self) -> None:
        """Forget everything (`--fresh`, the window's "Reset lab state")."""
        self._db.execute("DELETE FROM items")
        self._db.execute("DELETE FROM seen")

    def close(self) -> None:
        self._db.close()


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction around several statements. The connection is in autocommit mode
    (isolation_level=None), where `with db:` opens none: each statement would commit alone."""
    db.execute("BEGIN")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


class DurableQueue:
    """One node's FIFO queues, by key, kept in the store."""

    def __init__(self, db: sqlite3.Connection, owner: str) -> None:
        self._db, self.owner = db, owner

    def put(self, key: str, payload: bytes, meta: dict[str, Any] | None = None, *, message_id: str = "") -> int:
        """Keep an item; once this returns it survives a crash. Returns its id."""
        now = time.time()
        with _transaction(self._db):   # the item and its id, or neither (and one commit, not two)
            cursor = self._db.execute(
                "INSERT INTO items (owner, key, payload, meta, message_id, stored_at) VALUES (?, ?, ?, ?, ?, ?)",
                (self.owner, key, payload, json.dumps(meta or {}), message_id, now))
            if message_id:
                self._db.execute("INSERT OR REPLACE INTO seen (owner, message_id, at) VALUES (?, ?, ?)",
                                 (self.owner, message_id, now))
        assert cursor.lastrowid is not None
        return cursor.lastrowid

    def remove(self, item_id: int) -> None:
        """The next hop has it: forget it."""
        self._db.execute("DELETE FROM items WHERE id = ? AND owner = ?", (item_id, self.owner))

    def update_meta(self, item_id: int, meta: dict[str, Any]) -> None:
        self._db.execute("UPDATE items SET meta = ? WHERE id = ? AND owner = ?",
                         (json.dumps(meta), item_id, self.owner))

    def seen(self, message_id: str) -> bool:
        """Was an item with this id accepted before (a resend after a lost acknowledgement)?"""
        return self._db.execute("SELECT 1 FROM seen WHERE owner = ? AND message_id = ?",
                                (self.owner, message_id)).fetchone() is not None

    def items(self, key: str | None = None) -> list[StoredItem]:
        """What is held, oldest first (for one key, or all)."""
        query = "SELECT id, key, payload, meta, message_id, stored_at FROM items WHERE owner = ?"
        args: tuple[Any, ...] = (self.owner,)
        if key is not None:
            query += " AND key = ?"
            args += (key,)
        rows = self._db.execute(query + " ORDER BY id", args).fetchall()
        return [StoredItem(i, k, bytes(p), json.loads(m), mid, at) for i, k, p, m, mid, at in rows]

    def count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM items WHERE owner = ?", (self.owner,)).fetchone()[0]

    def forget_old_ids(self, keep: int = SEEN_KEPT) -> None:
        """Bound the duplicate memory: the newest `keep` ids stay."""
        self._db.execute(
            "DELETE FROM seen WHERE owner = ? AND message_id NOT IN "
            "(SELECT message_id FROM seen WHERE owner = ? ORDER BY rowid DESC LIMIT ?)", (self.owner, self.owner, keep))
