"""The accepting end of an SMPP connection: the thin asyncio adapter around
the codec in protocols/smpp (smpp_esme.py is the other end).

It cuts the byte stream into PDUs, records every PDU on the connection (both
directions) in the trace, exactly once, before writing it, and answers what
cannot be parsed: a known request with a bad body gets its own response with
the codec's status (submit_sm_resp ESME_RINVMSGLEN, SMPP v3.4 5.1.3), an
unknown command a generic_nack, and an impossible command_length (the stream
cannot be re-synchronised) a nack and close. Answers to one chunk of bytes leave in one write. What a PDU
means is the subclass's (`dispatch`). Every PDU passes the trace's gate first
(in step mode it waits there for the trainer: backends.gate).
"""
from __future__ import annotations

import asyncio
from typing import Any, cast

from smpplib import consts as C

from iwlab.backends.directory import NodeDirectory, outside_name
from iwlab.backends.gate import Hop
from iwlab.backends.protocols import smpp as codec
from iwlab.backends.trace import Trace
from iwlab.backends.transports import partial
from iwlab.backends.transports.partial import PartialDeadline

PROTOCOL = "SMPP"


class SmppServerConnection(asyncio.Protocol):
    transport: asyncio.Transport   # from connection_made on

    def __init__(self, trace: Trace, nodes: NodeDirectory, local_name: str) -> None:
        self.trace, self.nodes, self.local_name = trace, nodes, local_name
        self.framer = codec.Framer()
        self.peer: tuple[str, int] = ("?", 0)
        self.local: tuple[str, int] = ("?", 0)
        self.name = ""                        # the peer's node name, for the trace
        self.claimed = False                  # the peer claimed its address (in-lab client)
        self.out: list[bytes] | None = None   # writes held back while a chunk is handled
        self.seq = 0
        self.closing = False                  # this end chose to close
        self.cut = False                      # ... by cutting the link: answers already sent are still read
        self._partial = PartialDeadline(self._partial_due, lambda: partial.PARTIAL_MESSAGE_SECONDS)

    # -- transport ---------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)   # a TCP server's: a stream transport
        self.peer = tuple(transport.get_extra_info("peername")[:2])
        self.local = tuple(transport.get_extra_info("sockname")[:2])
        self.name = outside_name(self.peer)

    def claim(self) -> None:
        """Name the peer by its claim. In-lab clients claim their address right
        after connecting, maybe after we accepted: look again until the first PDU."""
        name = self.nodes.lookup(self.peer, self.local)
        if name:
            self.name, self.claimed = name, True

    def data_received(self, data: bytes) -> None:
        if not self.claimed:
            self.claim()
        # Answers to one chunk (a pipelining ESME sends many PDUs at once) leave
        # in one write: one syscall instead of one per PDU.
        self.out = []
        try:
            frames = self.framer.feed(data)
            for raw in frames:
                if self.closing and not self.cut:
                    break
                self._arrived(raw)
            self._partial.update(self.framer.buffered > 0 and not self.closing, completed=bool(frames))
            error = self.framer.error
            if error and not self.closing:
                self.trace.gate.admit(lambda: self._bad_length(error),
                                      lambda: Hop(self.name, self.local_name, PROTOCOL, "bad command_length"))
        finally:
            self.flush()

    def _partial_due(self, seconds: float) -> None:
        """A PDU begun that long ago is still not whole (a slow-loris peer, or a command_length
        larger than what it sends), bound or not: the connection is closed, and the ladder says why."""
        if self.closing:
            return
        self.trace.record(self.name, self.local_name, PROTOCOL, "incomplete PDU: closed", raw=b"",
                          fields={"event": "partial_pdu_timeout", "buffered": self.framer.buffered},
                          note=f"a PDU begun {seconds:g} s ago is still not complete "
                               f"({self.framer.buffered} bytes of it); the connection is closed",
                          addresses=(self.peer, self.local), transport="tcp")
        self.close()

    def stop_watching(self) -> None:
        """The connection is gone: no deadline stays scheduled for it."""
        self._partial.cancel()

    def flush(self) -> None:
        out, self.out = self.out, None
        if out:
            self.transport.write(b"".join(out))

    def _arrived(self, raw: bytes) -> None:
        def go() -> None:
            if not self.closing or self.cut:     # held while this end closed: never handled
                self.handle(raw)
        self.trace.gate.admit(go, lambda: hop_of_raw(raw, self.name, self.local_name))

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.trace.gate.follow(self._close_now)   # after the writes waiting at the gate

    def _close_now(self) -> None:
        self.flush()
        self.on_close()
        self.transport.close()

    def on_close(self) -> None:
        """This end closes the connection: its last writes are out, the socket not yet closed."""

    # -- trace + write ---------------------------------------------------------------------
    def record_in(self, pdu: Any, raw: bytes, correlation: dict[str, str] | None = None, note: str = "") -> None:
        summary, fields = codec.describe(pdu)
        self.trace.record(self.name, self.local_name, PROTOCOL, summary, raw=raw, fields=fields,
                          is_response=pdu.is_response(), correlation=correlation, note=note,
                          addresses=(self.peer, self.local), transport="tcp")

    def send(self, pdu: Any, correlation: dict[str, str] | None = None, note: str = "") -> None:
        raw = codec.encode(pdu)
        self.trace.gate.admit(lambda: self._put(pdu, raw, correlation, note),
                              lambda: hop_of_pdu(pdu, self.local_name, self.name))

    def _put(self, pdu: Any, raw: bytes, correlation: dict[str, str] | None, note: str) -> None:
        if self.transport.is_closing():    # closed while it waited at the gate: it never went
            return
        summary, fields = codec.describe(pdu)
        # Record before writing: once the peer has the PDU, the trace has it too.
        self.trace.record(self.local_name, self.name, PROTOCOL, summary, raw=raw, fields=fields,
                          is_response=pdu.is_response(), correlation=correlation, note=note,
                          addresses=(self.local, self.peer), transport="tcp")
        if self.out is None:
            self.transport.write(raw)
        else:
            self.out.append(raw)

    def respond(self, request: Any, status: int = C.SMPP_ESME_ROK, correlation: dict[str, str] | None = None,
                note: str = "", **fields: Any) -> None:
        self.send(codec.make(request.command + "_resp", request.sequence, status, **fields), correlation, note)

    def nack(self, sequence: int, status: int, note: str = "") -> None:
        self.send(codec.make("generic_nack", sequence, status), {"smpp_seq": str(sequence)}, note)

    def next_seq(self) -> int:
        self.seq = self.seq % 0x7FFFFFFF + 1
        return self.seq

    # -- incoming PDUs -----------------------------------------------------------------------
    def handle(self, raw: bytes) -> None:
        try:
            pdu = codec.parse(raw)
        except codec.ParseError as err:
            self._unreadable(raw, err)
            return
        self.dispatch(pdu, raw)

    def dispatch(self, pdu: Any, raw: bytes) -> None:
        """One parsed PDU from the peer (not yet in the trace)."""
        raise NotImplementedError

    def garbled_response(self, sequence: int) -> None:
        """A response to our request with this sequence came, but cannot be parsed
        (already in the trace; a generic_nack follows)."""

    def _unreadable(self, raw: bytes, err: codec.ParseError) -> None:
        summary, fields = codec.describe_raw(raw)
        self.trace.record(self.name, self.local_name, PROTOCOL, summary, raw=raw, fields=fields,
                          is_response=bool(err.command_id & codec.RESPONSE_BIT),
                          correlation={"smpp_seq": str(err.sequence)}, note=err.reason,
                          addresses=(self.peer, self.local), transport="tcp")
        if err.command_id & codec.RESPONSE_BIT:
            self.garbled_response(err.sequence)
        if err.command_id == codec.GENERIC_NACK:   # never nack a nack
            return
        own = codec.error_response(err.command_id, err.sequence, err.status)
        if own is not None:
            self.send(own, {"smpp_seq": str(err.sequence)}, err.reason)
        else:
            self.nack(err.sequence, err.status, err.reason)

    def _bad_length(self, err: codec.BadLength) -> None:
        summary, fields = codec.describe_raw(err.data)
        fields["command_length"] = err.length
        why = (f"command_length {err.length} is impossible ({codec.MIN_LENGTH}..{codec.MAX_LENGTH}); "
               "closing: the byte stream cannot be re-synchronised")
        self.trace.record(self.name, self.local_name, PROTOCOL, summary, raw=err.data, fields=fields,
                          correlation={"smpp_seq": str(err.sequence)}, note=why,
                          addresses=(self.peer, self.local), transport="tcp")
        self.nack(err.sequence, C.SMPP_ESME_RINVCMDLEN, why)
        self.close()


def hop_of_pdu(pdu: Any, src: str, dst: str) -> Hop:
    """An SMPP PDU at the gate: its kind is the command ("deliver_sm receipt" for a delivery receipt)."""
    summary, _ = codec.describe(pdu)
    kind = pdu.command
    message_type = (getattr(pdu, "esm_class", 0) or 0) & codec.MESSAGE_TYPE_MASK
    if kind == "deliver_sm" and message_type == codec.RECEIPT_ESM_CLASS:
        kind += " receipt"
    elif kind == "submit_sm" and message_type == codec.ACK_ESM_CLASS:   # an IWF's end-to-end report
        kind += " report"
    return Hop(src, dst, PROTOCOL, kind, summary)


def hop_of_raw(raw: bytes, src: str, dst: str) -> Hop:
    try:
        return hop_of_pdu(codec.parse(raw), src, dst)
    except codec.ParseError:
        summary, _ = codec.describe_raw(raw)
        return Hop(src, dst, PROTOCOL, "unreadable", summary)
