"""The visible order check: each handset's inbox shows, beside a message from a CPM user who sent
several in a row, its place in the sender's order ("3 of 5"), and flags at once one that arrived
out of order or twice (backends/lab/evidence.check_order, read from the trace as the verdicts are).

Twice a second, when the trace has grown, the lab's thread works the badges out from the newest
events and hands them to the window by a signal. It keeps those events itself and asks the
trace only for the new ones: the trace keeps its events packed, and unpacking 5,000 of them
twice a second would take the busy lab's thread ~80 ms a second. Of those it asks only for the
ones to or from a CPM sender or an SMS recipient (about 3 of a text's dozen hops: what the
sender sent, the deliver_sm and its answer); the others are left packed: kept unpacked, they
were most of what the lab thread's cycle collections walked.
"""
from __future__ import annotations

from collections import deque

from PySide6.QtCore import QObject, QTimer, Signal

from iwlab.backends.lab.evidence import check_order, received_by
from iwlab.backends.lab.lab_thread import LabThread
from iwlab.backends.trace import TraceEvent

RECENT_EVENTS = 1500     # the newest events to or from a device the badges are worked out from (~500 texts)
LOOKED_THROUGH = 4 * RECENT_EVENTS   # at most, of the newest events, for those (a long trace when it attaches)


class OrderWatch(QObject):
    # recipient user id, [(number, text, badge, flagged)] in arrival order; number: the deliver_sm's
    # source_addr as the trace decoded it, as the handset shows it (two senders may send the same text)
    badges = Signal(str, object)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._runner: LabThread | None = None
        self._seen_seq = -1
        self._recent: deque[TraceEvent] = deque(maxlen=RECENT_EVENTS)
        self._timer = QTimer(self)
        self._timer.setInterval(500)
        self._timer.timeout.connect(self._check)

    def attach(self, runner: LabThread) -> None:
        self._runner, self._seen_seq = runner, -1
        self._recent = deque(maxlen=RECENT_EVENTS)
        self._timer.start()

    def detach(self) -> None:
        self._runner = None
        self._timer.stop()

    def _check(self) -> None:
        runner = self._runner
        if runner is None:
            return
        lab, recent = runner.lab, self._recent   # this lab's: attach() starts another

        async def work() -> dict[str, list[tuple[str, str, str, bool]]] | None:
            last = lab.trace.last_seq()
            if last == self._seen_seq:
                return None
            topology = lab.topology
            senders = [u for u in topology.users if u.device == "cpm"]
            recipients = [u for u in topology.users if u.device == "sms"]
            start = max(self._seen_seq, last - LOOKED_THROUGH, 0)
            fresh = lab.trace.events_since(start, involving={u.name for u in senders + recipients})
            # Up to `last` exactly: what the filter left out, or came since, is not asked for again.
            recent.extend(e for e in fresh if e.seq <= last)
            if self._runner is runner:   # not a lab let go meanwhile
                self._seen_seq = last
            events = list(recent)
            found: dict[str, list[tuple[str, str, str, bool]]] = {}
            for recipient in recipients:
                arrivals = []
                received = received_by(recipient, events)      # once per recipient, for every sender
                for sender in senders:
                    order = check_order(sender, recipient, events, topology, received)
                    if len(order.sent) > 1:     # a row of messages: worth numbering
                        arrivals += order.arrivals
                arrivals.sort(key=lambda a: a.event.seq)
                found[recipient.id] = [(a.event.fields.get("source_addr", ""), a.text, a.badge,
                                        a.inverted or a.duplicate) for a in arrivals]
            return found
        future = runner.submit(work())
        future.add_done_callback(self._deliver)

    def _deliver(self, future) -> None:
        if future.cancelled() or future.exception() or future.result() is None:
            return
        for recipient_id, badges in future.result().items():
            self.badges.emit(recipient_id, badges)
