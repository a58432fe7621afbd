"""Reports the IWF owes a legacy sender about a message it carried into CPM, until the CPM
recipient's IMDN says what became of it (a handset's status report, an email sender's MDN).

Kept in the lab's durable store, by the imdn.Message-ID of the CPM message, from before the
legacy side hears "taken" until the report is on its way (the leg queues the report in its own
durable outbox first, then pays the debt here): a restart loses none. A report that has no IMDN
by its expiry is due anyway (on_expired: an SMS sender hears EXPIRED). At most `limit` are owed
(each is a durable row and a timer for up to the message validity): when full(), the leg owes
no more and says so.
"""
from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Callable

from iwlab.backends import clock
from iwlab.backends.store import DurableQueue

OWED_LIMIT = 10_000


@dataclass
class OwedReport:
    imdn_message_id: str
    meta: dict[str, Any]      # what the leg needs to write the report
    expires: float            # wall clock
    store_id: int


class OwedReports:
    def __init__(self, store: DurableQueue, on_expired: Callable[[OwedReport], None], limit: int = OWED_LIMIT) -> None:
        self._store = store
        self._on_expired = on_expired
        self.limit = limit
        self._owed: dict[str, OwedReport] = {}
        self._timers: dict[str, asyncio.TimerHandle] = {}

    def owe(self, imdn_message_id: str, meta: dict[str, Any], expires: float) -> None:
        store_id = self._store.put(imdn_message_id, b"", {**meta, "expires": expires}, message_id=imdn_message_id)
        self._add(OwedReport(imdn_message_id, meta, expires, store_id))

    def restore(self) -> int:
        """After a restart: every report still owed, with its expiry timer again."""
        for item in self._store.items():
            meta = dict(item.meta)
            self._add(OwedReport(item.key, meta, float(meta.pop("expires", clock.wall())), item.id))
        return len(self._owed)

    def get(self, imdn_message_id: str) -> OwedReport | None:
        """The report owed for this message, if any (still owed)."""
        return self._owed.get(imdn_message_id)

    def take(self, imdn_message_id: str) -> OwedReport | None:
        """The report an IMDN answers, if one is owed (still kept until paid)."""
        report = self._owed.pop(imdn_message_id, None)
        timer = self._timers.pop(imdn_message_id, None)
        if timer:
            timer.cancel()
        return report

    def paid(self, report: OwedReport) -> None:
        """The report is in the leg's outbox: nothing is owed any more."""
        self._store.remove(report.store_id)

    def count(self) -> int:
        return len(self._owed)

    def full(self) -> bool:
        """No more may be owed (the limit): a new request for a report gets none."""
        return len(self._owed) >= self.limit

    def stop(self) -> None:
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()

    def _add(self, report: OwedReport) -> None:
        self._owed[report.imdn_message_id] = report
        loop = asyncio.get_running_loop()
        self._timers[report.imdn_message_id] = loop.call_later(max(report.expires - clock.wall(), 0),
                                                               self._expire, report.imdn_message_id)

    def _expire(self, imdn_message_id: str) -> None:
        report = self.take(imdn_message_id)
        if report is not None:
            self._on_expired(report)
