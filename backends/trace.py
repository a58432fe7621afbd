"""The trace: every PDU that crosses a lab socket, recorded once.

The ladder, the inspector, verdicts and exports all read this; none of them
re-derive what went over the wire. A connection is recorded by exactly one
lab end (the accepting server), so nothing appears twice.
"""
from __future__ import annotations

import dataclasses
import itertools
import marshal
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Collection

from iwlab.backends.gate import Gate
from iwlab.backends.packed_log import Packed, PackedLog

Listener = Callable[["TraceEvent"], None]
MAX_RAW = 1_100_000          # bytes kept of one PDU: a whole 1 MB mail or SIP body; beyond, the start
MAX_BYTES = 128 * 1024 * 1024   # the whole trace; the oldest events go first (Trace.dropped counts them)
EVENT_OVERHEAD = 600         # the event object, its fields and correlation, approximately


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
    # Where it really went: (host, port) of each end and "tcp" / "udp" / "tls", for pcap exports.
    src_address: tuple[str, int] | None = None
    dst_address: tuple[str, int] | None = None
    transport: str = ""
    measured: int = field(default=0, compare=False, repr=False)   # footprint, worked out once when recorded

    @property
    def footprint(self) -> int:
        """Roughly what the event costs in memory: what bounds the trace (and the ladder) in bytes.
        The decoded fields count too: a body is often in them once more (SIP body, CPIM, payload)."""
        return self.measured or measure(self)

    def ladder_line(self) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(self.time)) + f".{int(self.time * 1000) % 1000:03d}"
        arrow = "..>" if self.is_response else "-->"   # dashed for responses, as on the ladder
        line = f"{self.seq:5d} {stamp} {self.src:>7} {arrow} {self.dst:<7} {self.protocol:<4} {self.summary}"
        if self.note:
            line += f"   [{self.note}]"
        return line


def measure(event: TraceEvent) -> int:
    """About the bytes an event holds. Its decoded fields come from its raw bytes and hold about
    as much again (a body sits in both), so they count as that much: walking every header of
    every PDU cost a tenth of the lab's time under load. Only where the fields are not decoded
    from the whole of raw (raw cut short, or none) are they walked."""
    raw = len(event.raw)
    decoded = raw if raw and "raw_truncated" not in event.fields else _size_of(event.fields)
    return raw + decoded + len(event.summary) + len(event.note) + EVENT_OVERHEAD


def _size_of(value: Any, depth: int = 0) -> int:
    """The text and bytes a decoded value holds (what dominates an event's memory)."""
    if isinstance(value, (str, bytes, bytearray)):
        return len(value)
    if depth > 6:
        return 0
    if isinstance(value, dict):
        return sum(len(str(k)) + _size_of(v, depth + 1) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return sum(_size_of(v, depth + 1) for v in value)
    return 8


# Packed: a TraceEvent as the trace (and the ladder) keeps it, see pack()
# Where a packed event has each of TraceEvent's fields, in their order (measured: the footprint),
# an address as its host and its port.
_PACKED_NAMES = [part for f in dataclasses.fields(TraceEvent)
                 for part in ((f"{f.name}_host", f"{f.name}_port") if f.name.endswith("_address") else (f.name,))]
PACKED_AT = {name: i for i, name in enumerate(_PACKED_NAMES)}
PACKED_SEQ, PACKED_FOOTPRINT = PACKED_AT["seq"], PACKED_AT["measured"]
_PACKED_SRC, _PACKED_DST = PACKED_AT["src"], PACKED_AT["dst"]


def pack(event: TraceEvent) -> Packed:
    """The event as a flat tuple of numbers, strings and bytes: its decoded fields and its
    correlation marshalled, each address as host and port.
    CPython's collector stops looking at a tuple at the first collection that finds nothing in
    it to watch. A tuple inside it (a correlation, an address) must be watched until it has been
    looked at itself, and it is looked at after the tuple holding it: each event then went on
    to the next generation watched, straight to the oldest when its first collection was a
    generation-1 one (~11,000 events at a time under load, walked by every full collection).
    Kept as objects, 100,000 events made each full collection stop the lab for ~250 ms."""
    try:
        fields: bytes | dict[str, Any] = marshal.dumps(event.fields)
    except ValueError:   # a value marshal cannot write (no codec of the lab's makes one): kept as it is
        fields = event.fields
    try:
        correlation: bytes | tuple[str, ...] = marshal.dumps(event.correlation)
    except ValueError:
        correlation = tuple(itertools.chain.from_iterable(event.correlation.items()))
    src, dst = event.src_address or (None, None), event.dst_address or (None, None)
    return (event.seq, event.time, event.src, event.dst, event.protocol, event.summary, event.is_response,
            fields, event.raw, correlation, event.note, src[0], src[1], dst[0], dst[1],
            event.transport, event.footprint)


def packed_correlation(kept: Packed) -> dict[str, str]:
    correlation = kept[PACKED_AT["correlation"]]
    if isinstance(correlation, bytes):
        return marshal.loads(correlation)
    return dict(zip(correlation[::2], correlation[1::2]))


def unpack(kept: Packed) -> TraceEvent:
    (seq, at, src, dst, protocol, summary, is_response, fields, raw, _, note,
     src_host, src_port, dst_host, dst_port, transport, footprint) = kept   # as pack() laid it out
    return TraceEvent(seq, at, src, dst, protocol, summary, is_response,
                      marshal.loads(fields) if isinstance(fields, bytes) else fields, raw,
                      packed_correlation(kept), note, _address(src_host, src_port), _address(dst_host, dst_port),
                      transport, footprint)


def _address(host: str | None, port: int | None) -> tuple[str, int] | None:
    return None if host is None or port is None else (host, port)


class Trace:
    """Thread-safe append-only event log with listeners.

    Listeners run on the recording thread; GUI adapters must hop to their
    own thread (and batch) themselves.
    """

    def __init__(self, max_events: int | None = 500_000, *, max_bytes: int = MAX_BYTES, max_raw: int = MAX_RAW) -> None:
        # Bounded by count and by bytes: a lab left running, or fed junk, keeps the newest events.
        self._events = PackedLog()   # a full collection visits a chunk of events, not each (see there)
        self.max_bytes, self.max_raw = max_bytes, max_raw
        self.bytes = 0
        self.dropped = 0          # events let go to stay within the bounds (the ladder says so)
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()
        self._seq = itertools.count(1)
        self.id = secrets.token_hex(8)   # names this run's seq numbers (a viewer that reconnects knows its lab)
        self.max_events = max_events
        self._notes: dict[str, str] = {}   # correlation id -> note for the next request recorded with it
        # Where, in step mode, a PDU waits before it is recorded: the recording ends pass every PDU through it.
        self.gate = Gate()

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
        addresses: tuple[tuple[str, int], tuple[str, int]] | None = None,
        transport: str = "",
    ) -> TraceEvent:
        fields = fields or {}
        if len(raw) > self.max_raw:   # the PDU's start is what a reader needs; say what was cut
            fields = {**fields, "raw_truncated": {"kept": self.max_raw, "size": len(raw)}}
            note = f"{note}; " if note else ""
            note += f"raw bytes truncated: the first {self.max_raw} of {len(raw)} kept"
            raw = raw[:self.max_raw]
        with self._lock:
            if not note and not is_response and correlation and self._notes:
                note = next((self._notes.pop(v) for v in correlation.values() if v in self._notes), "")
            event = TraceEvent(
                seq=next(self._seq), time=time.time(), src=src, dst=dst,
                protocol=protocol, summary=summary, is_response=is_response,
                fields=fields, raw=bytes(raw),
                correlation={k: v for k, v in (correlation or {}).items() if v},
                note=note,
                src_address=tuple(addresses[0][:2]) if addresses else None,   # type: ignore[arg-type]
                dst_address=tuple(addresses[1][:2]) if addresses else None,   # type: ignore[arg-type]
                transport=transport,
            )
            object.__setattr__(event, "measured", measure(event))   # frozen: set once, here
            self._events.append(pack(event))
            self.bytes += event.measured
            while self._events and (self.bytes > self.max_bytes or
                                    (self.max_events is not None and len(self._events) > self.max_events)):
                self.bytes -= self._events.popleft()[PACKED_FOOTPRINT]
                self.dropped += 1
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
        """Every kept event, oldest first: new objects each call (a few microseconds an event)."""
        with self._lock:
            kept = list(self._events)
        return [unpack(k) for k in kept]

    def last_seq(self) -> int:
        """The seq of the newest event (0 when there is none), without copying the trace."""
        with self._lock:
            return self._events[-1][PACKED_SEQ] if self._events else 0

    def events_since(self, seq: int, limit: int | None = None, *,
                     involving: Collection[str] | None = None) -> list[TraceEvent]:
        """The events recorded after the one numbered seq, oldest first (the first `limit` of
        them). The kept events have consecutive numbers (recorded in order, let go only from the
        oldest end), so where they start is arithmetic: no walk in Python, under the lock the
        recording thread waits on. involving: of those, only the ones from or to these nodes (the
        others are not unpacked)."""
        with self._lock:
            if not self._events or self._events[-1][PACKED_SEQ] <= seq:
                return []
            wanted = min(self._events[-1][PACKED_SEQ] - seq, len(self._events))
            taken = wanted if limit is None else min(wanted, limit)
            start = len(self._events) - wanted
            kept = self._events.slice(start, start + taken)
        if involving is not None:
            kept = [k for k in kept if k[_PACKED_SRC] in involving or k[_PACKED_DST] in involving]
        return [unpack(k) for k in kept]

    def clear(self) -> None:
        with self._lock:
            self._events.clear()
            self.bytes = 0

    def __len__(self) -> int:
        return len(self._events)


def hex_dump(data: bytes) -> str:
    """Offset, 16 bytes in two groups of 8, printable ASCII ('.' otherwise),
    like `hexdump -C` and Wireshark's bytes pane."""
    width = max(4, len(f"{max(len(data) - 1, 0):x}"))
    lines = []
    for offset in range(0, len(data), 16):
        chunk = data[offset:offset + 16]
        left = " ".join(f"{b:02x}" for b in chunk[:8])
        right = " ".join(f"{b:02x}" for b in chunk[8:])
        text = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:0{width}x}  {left:<23}  {right:<23}  {text}")
    return "\n".join(lines)
