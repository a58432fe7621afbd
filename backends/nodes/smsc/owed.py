"""Receipts the SMSC owes for messages an end-to-end account took (session.py): which account
must report on each id, to which submitter, and by when.

Durable, from the moment the account takes the message (before it leaves the SMSC's store): a
restarted SMSC still knows what it owes. A report is relayed only for an id found here, from
that account, to that message's submitter, and once; an entry that runs out unreported becomes
the SMSC's own EXPIRED receipt (Delivery). Ids already reported on (or expired) are remembered
a while, in memory, so that a report resent after a lost submit_sm_resp is answered ok quietly.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from smpplib import consts as C

from iwlab.backends.nodes.smsc.message import Message
from iwlab.backends.store import DurableQueue

CLOSED_KEPT = 10_000    # ids reported on, remembered for repeats


@dataclass
class OwedReceipt:
    msg: Message          # the message as it was handed over: its receipt is made from it
    expires: float        # wall time: the account's report window ends
    store_id: int


class OwedReceipts:
    def __init__(self, store: DurableQueue) -> None:
        self._store = store
        self._owed: dict[str, OwedReceipt] = {}
        self._closed: OrderedDict[str, str] = OrderedDict()   # id -> the answer its report got

    def owe(self, msg: Message, expires: float, now_loop: float) -> None:
        payload, meta = msg.to_store(now_loop)
        store_id = self._store.put(msg.owner, payload, {**meta, "report_expires": expires}, message_id=msg.id)
        self._owed[msg.id] = OwedReceipt(msg, expires, store_id)

    def restore(self, now_loop: float) -> list[str]:
        """After a restart: the ids still owed."""
        for item in self._store.items():
            msg = Message.from_store(item.meta, item.id, now_loop)
            self._owed[msg.id] = OwedReceipt(msg, float(item.meta["report_expires"]), item.id)
        return list(self._owed)

    def refusal(self, message_id: str, reporter: str, dest: str) -> tuple[int, str] | None:
        """Why a report from `reporter` to `dest` on this id may not become a receipt, as (SMPP
        error, note); None when it may (or when it is a repeat: answered() says so)."""
        if message_id in self._closed:
            return None
        entry = self._owed.get(message_id)
        if entry is None:
            return C.SMPP_ESME_RINVMSGID, f"no receipt is owed for id {message_id[:20]}: not a message this SMSC handed over"
        if entry.msg.owner != reporter:
            return C.SMPP_ESME_RINVMSGID, f"id {message_id} was handed to another account, not this one"
        submitter = str(entry.msg.fields.get("source_addr") or "").lstrip("+")
        if dest != submitter:
            return C.SMPP_ESME_RINVDSTADR, f"the receipt for id {message_id} goes to its submitter {submitter}, not {dest}"
        return None

    def answered(self, message_id: str) -> str | None:
        """The submit_sm_resp id a report on this id got before (a repeat), if it was reported."""
        return self._closed.get(message_id)

    def close(self, message_id: str, answer_id: str) -> OwedReceipt | None:
        """Reported (or expired): no longer owed; a repeat is answered with answer_id."""
        entry = self._owed.pop(message_id, None)
        if entry is not None:
            self._store.remove(entry.store_id)
        self._closed[message_id] = answer_id
        while len(self._closed) > CLOSED_KEPT:
            self._closed.popitem(last=False)
        return entry

    def due(self, now_wall: float) -> list[OwedReceipt]:
        return [entry for entry in self._owed.values() if entry.expires <= now_wall]

    def count(self) -> int:
        return len(self._owed)
