"""The durable store: what was put survives the process dying at any point."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from iwlab.backends.store import Store


def test_items_come_back_in_order_per_key_and_go_when_removed(tmp_path):
    store = Store(tmp_path / "lab.db")
    queue = store.queue("IWF sms")
    first = queue.put("15550101>15550201", b"one", {"parts": 1}, message_id="m1")
    queue.put("15550101>15550202", b"other", {})
    queue.put("15550101>15550201", b"two", {})
    assert [i.payload for i in queue.items("15550101>15550201")] == [b"one", b"two"]
    queue.remove(first)
    assert [i.payload for i in queue.items()] == [b"other", b"two"]
    assert queue.seen("m1") and not queue.seen("m2")          # a resend of m1 is recognised, even once sent
    assert store.queue("SMSC").items() == []                    # owners do not see each other's items
    assert store.holdings()["IWF sms"][0] == 2
    store.close()
    reopened = Store(tmp_path / "lab.db").queue("IWF sms")
    assert [(i.payload, i.meta) for i in reopened.items()] == [(b"other", {}), (b"two", {})]


def test_without_a_folder_the_store_is_in_memory():
    store = Store()
    assert not store.durable
    store.queue("x").put("k", b"v")
    assert store.queue("x").count() == 1


def test_clear_forgets_everything(tmp_path):
    store = Store(tmp_path / "lab.db")
    store.queue("x").put("k", b"v", message_id="id")
    store.clear()
    assert store.queue("x").items() == [] and not store.queue("x").seen("id")


def test_what_was_put_survives_sigkill(tmp_path):
    path = tmp_path / "lab.db"
    script = textwrap.dedent(f"""
        import os, signal, sys
        from iwlab.backends.store import Store
        queue = Store({str(path)!r}).queue("IWF sms")
        for i in range(500):
            queue.put("k", str(i).encode())
        print("put", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL and proc.stdout.strip() == "put", proc.stderr
    items = Store(path).queue("IWF sms").items()
    assert [int(i.payload) for i in items] == list(range(500))


def test_forget_old_ids_keeps_the_newest(tmp_path):
    queue = Store(tmp_path / "lab.db").queue("x")
    for i in range(10):
        queue.put("k", b"", message_id=f"id{i}")
    queue.forget_old_ids(keep=3)
    assert [queue.seen(f"id{i}") for i in range(10)] == [False] * 7 + [True] * 3
    assert os.path.exists(tmp_path / "lab.db")


def test_an_item_and_its_id_are_kept_together_or_not_at_all(tmp_path):
    """If remembering the id fails, the item is not kept either: a resend is then taken as new,
    once, rather than kept twice (the store is in autocommit mode: put opens its own transaction)."""
    import sqlite3

    import pytest
    store = Store(tmp_path / "lab.db")
    store._db.execute("CREATE TRIGGER refuse AFTER INSERT ON seen WHEN NEW.message_id = 'bad' "
                      "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    queue = store.queue("SMSC")
    with pytest.raises(sqlite3.IntegrityError, match="refused"):
        queue.put("k", b"payload", message_id="bad")
    assert queue.items() == [] and not queue.seen("bad")
    queue.put("k", b"good", message_id="fine")     # the store goes on working
    assert [i.payload for i in queue.items()] == [b"good"] and queue.seen("fine")
    store.close()
