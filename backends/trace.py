"""The trace: every PDU that crosses a lab socket, recorded once.

The ladder, the inspector, verdicts and exports all read this; none of them
re-derive what went over the wire. A connection is recorded by exactly one
lab end (the accepting server), so nothing appears twice.
"""
from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

Listener = Callable[["TraceEvent"], None]


@dataclass(frozen=True, slots=True)
class TraceEvent:
    seq: int                 # 1, 2, 3 ... in recording order
    time: float              # wall clock, time.time()
    src: str                 # node names: "Mary", "CPM-A", "IWF", "SMSC", "Peter" ...
    dst: str
    protocol: str            # "SIP", "SMPP", "SMTP", "MSRP"
    summary: str             # one line, e.g. "MESSAGE (CPIM) tel:+15550201"
    is_response: bool
    fields: dict[str, Any]   # decoded fields, nested dicts/lists for the inspector tree
    raw: bytes               # exactly the bytes on the wire
    # Correlation ids (conversation_id, contribution_id, imdn_message_id,
    # call_id, smpp_message_id ...) used for colouring, filters and verdicts.
    correlation: dict[str, str] = field(default_factory=dict)
    note: str = ""           # why this hop happened (routing reason), if any

    def ladder_line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        arrow = "..>" if self.is_response else "-->"   # dashed for responses, as on the ladder
        line = f"{self.seq:5d} {stamp} {self.src:>7} {arrow} {self.dst:<7} {self.protocol:<4} {self.summary}"
        if self.note:
            line += f"   [{self.note}]"
        return line


class Trace:
    """Thread-safe append-only event log with listeners.

    Listeners run on the recording thread; GUI adapters must hop to their
    own thread (and batch) themselves.
    """

    def __init__(self, max_events: int | None = 500_000) -> None:
        # Bounded: a lab left running keeps the newest events, not all of them.
        self._events: deque[TraceEvent] = deque(maxlen=max_events)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.max_events = max_events
        self._notes: dict[str, str] = {}   # correlation id -> note for the next request recorded with it

    def record(
        self,
        src: str,
        dst: str,
        protocol: str,
        summary: str,
        *,
        raw: bytes,
        fields: dict[str, Any] | None = None,
        is_response: bool = False,
        correlation: dict[str, str] | None = None,
        note: str = "",
    ) -> TraceEvent:
        with self._lock:
            if not note and not is_response and correlation and self._notes:
                note = next((self._notes.pop(v) for v in correlation.values() if v in self._notes), "")
            event = TraceEvent(
                seq=next(self._seq), time=time.time(), src=src, dst=dst,
                protocol=protocol, summary=summary, is_response=is_response,
                fields=fields or {}, raw=bytes(raw),
                correlation={k: v for k, v in (correlation or {}).items() if v},
                note=note,
            )
            self._events.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)
        return event

    def annotate(self, correlation_id: str, note: str) -> None:
        """Explain a request that another node will record (e.g. its Call-ID).

        The sending end of a connection does not record (the accepting end
        does), but it is the one that knows why it sent: the note waits here
        for the recording of the next request carrying that id.
        """
        if correlation_id and note:
            with self._lock:
                self._notes[correlation_id] = note
                if len(self._notes) > 10_000:   # ids that never showed up
                    self._notes.pop(next(iter(self._notes)))

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)
        return unsubscribe

    def listener_count(self) -> int:
        """How many listeners are subscribed: a view that went away must have let go of the trace."""
        with self._lock:
            return len(self._listeners)

    def events(self) -> list[TraceEvent]:
        with self._lock:
            return list(self._events)

    def clear(self) -> None:
        with self._lock:
            self._events.clear()

    def __len__(self) -> int:
        return len(self._events)
