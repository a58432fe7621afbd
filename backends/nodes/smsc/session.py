"""One SMPP connection, seen from the SMSC: a handler per command.

End-to-end receipts (an IWF's account, EsmeAccount.end_to_end_receipts): when the SMSC hands a
message to an IWF, only the IWF knows when it reaches the CPM recipient's phone (her IMDN
"delivered"), as TS 23.204 6.10 leaves the status report to the IP-SM-GW. A receipt sent when
the IWF took the message would say DELIVRD for a phone that is switched off. SMPP v3.4 has no
field in which an ESME could ask for this per message, so it is the account's configuration
(the topology), the most honest of the choices: both ends know it before the first PDU. The
deliver_sm to such an account names the report it owes (message.deliver_fields), and the
account's report is a submit_sm of message type "ESME delivery acknowledgement" (esm_class
0x08, SMPP v3.4 5.2.12) to the submitter, with the de-facto receipt text (`id:... stat:...`):
a submit_sm may carry neither receipted_message_id nor message_state. The SMSC turns it into
the delivery receipt the submitter asked for (deliver_sm, esm_class 0x04, both TLVs), only for
an id it owes (owed.py): an id it never handed to that account is refused (ESME_RINVMSGID), a
receipt addressed to anyone but the submitter too (ESME_RINVDSTADR), a repeat is answered ok
with no second receipt. The SMSC still sends its own receipt for a failure before the account
took the message (it expired, or was refused, in the SMSC), and EXPIRED when the account does
not report within its window (EsmeAccount.report_seconds).

The wire is SmppServerConnection's (framing, every PDU recorded in the trace
once, nacks for what cannot be parsed): the SMSC accepts every SMPP
connection, so it is the recording end. A peer that vanishes while bound
gets one extra trace event with empty `raw` (a note, not a PDU).
"""
from __future__ import annotations

import asyncio
import math
import random
import time
from typing import TYPE_CHECKING, Any, Callable

from smpplib import consts as C

from iwlab.backends import clock
from iwlab.backends.nodes.smsc.delivery import OK, PERMANENT, Delivery
from iwlab.backends.nodes.smsc.message import Message, deliver_fields, relayed_receipt_fields
from iwlab.backends.protocols import reports
from iwlab.backends.protocols import smpp as codec
from iwlab.backends.protocols.smpp import MessageState
from iwlab.backends.transports.smpp_server import PROTOCOL, SmppServerConnection

if TYPE_CHECKING:
    from iwlab.backends.nodes.smsc.smsc import Smsc

RECEIVING = ("receiver", "transceiver")
SENDING = ("transmitter", "transceiver")


class SmppSession(SmppServerConnection):
    """One SMPP connection: asks its Smsc about binds and routes, hands accepted
    messages and the answers to its deliver_sm to the Delivery."""

    def __init__(self, smsc: Smsc, delivery: Delivery, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(smsc.trace, smsc.nodes, smsc.name)
        self.smsc, self.delivery, self.loop = smsc, delivery, loop
        self.mode: str | None = None          # "transmitter" | "receiver" | "transceiver" once bound
        self.system_id = ""
        self.pending: dict[int, Message] = {}    # our deliver_sm sequence -> message
        self.submits = 0
        self.not_throttled = 0                # submits past the throttle (the queue-full condition counts these)
        self.requests_since_cut = 0           # requests since the bind or the last cut (drop-every condition)
        self.detached = False                 # out of the receivers, in-flight messages given back
        self.gone: asyncio.Future[None] = loop.create_future()
        self._late: set[asyncio.TimerHandle] = set()     # answers the delay condition holds back
        self._bind_timer: asyncio.TimerHandle | None = None

    @property
    def receiving(self) -> bool:
        return self.mode in RECEIVING

    # -- connection ----------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        if not self.smsc.accepting:     # accepted while the SMSC stops: no socket outlives it
            self.closing = True
            transport.close()
            return
        self.smsc.session_opened(self)
        self.claim()
        # SMPP v3.4 2.9 session_init_timer: a connection that does not bind in time is closed.
        self._bind_timer = self.loop.call_later(self.smsc.session_init_seconds, self._bind_due)

    def _bind_due(self) -> None:
        if self.mode or self.closing:
            return
        self.trace.record(self.name, self.local_name, PROTOCOL, "no bind in time: closed", raw=b"",
                          fields={"event": "session_init_timeout"},
                          note=f"session_init_timer: not bound within {self.smsc.session_init_seconds:g} s "
                               "(SMPP v3.4 2.9); the connection is closed")
        self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.stop_watching()
        for timer in [*self._late, self._bind_timer]:   # nothing of a gone connection stays scheduled
            if timer is not None:
                timer.cancel()
        self._late.clear()
        self.smsc.session_closed(self)
        kept = len(self.pending)
        if not self.closing and (exc is not None or self.mode):
            why = f"connection lost ({exc})" if exc else "closed without unbind"
            queued = self.delivery.pending(self.system_id) if self.system_id else 0
            self.trace.record(self.name, self.local_name, PROTOCOL, why, raw=b"",
                              fields={"event": "connection_lost", "error": repr(exc) if exc else "",
                                      "system_id": self.system_id, "in_flight": kept, "queued": queued},
                              note=f"peer gone; {queued} queued for it kept ({kept} sent, not acknowledged)")
        self.closing = True
        self._detach()
        if not self.gone.done():
            self.gone.set_result(None)

    def on_close(self) -> None:
        self._detach()

    def abort(self) -> None:
        """The peer did not let go in time."""
        self.transport.abort()

    def _detach(self) -> None:
        """No more deliveries here: what the peer has not acknowledged goes back to its mailbox."""
        if self.detached:
            return
        self.detached = True
        unanswered, self.pending = self.pending, {}
        self.smsc.detached(self, unanswered.values())

    # -- deliveries (a Receiver, for the Delivery) ---------------------------------------------
    def deliver(self, msg: Message) -> int:
        seq = self.next_seq()
        msg.attempts += 1
        self.pending[seq] = msg
        note = ""
        if msg.attempts > 1:
            note = f"attempt {msg.attempts}" + (f" (after {msg.last_error})" if msg.last_error else "")
        elif msg.restored:
            note = f"kept across a restart of the SMSC; delivered now that {self.name} is bound"
        elif msg.stored:
            note = f"stored until {self.name} bound"
        if msg.note and msg.attempts == 1:
            note = f"{note}; {msg.note}" if note else msg.note
        self.send(codec.make("deliver_sm", seq, **msg.fields),
                  {"smpp_message_id": msg.id, "smpp_seq": str(seq)}, note)
        return seq

    def withdraw(self, sequence: int) -> Message | None:
        return self.pending.pop(sequence, None)

    # -- incoming PDUs -----------------------------------------------------------------------
    def dispatch(self, pdu: Any, raw: bytes) -> None:
        if self._cut_by_condition(pdu, raw):
            return
        handler = _HANDLERS.get(pdu.command)
        if handler:
            handler(self, pdu, raw)
        elif pdu.is_response():
            self.record_in(pdu, raw, note="unexpected response, ignored")
        else:
            self.record_in(pdu, raw, note=f"{pdu.command} is not supported by this SMSC")
            self.nack(pdu.sequence, C.SMPP_ESME_RINVCMDID)

    def _cut_by_condition(self, pdu: Any, raw: bytes) -> bool:
        """The drop-every condition: at every Nth request on a bound link the SMSC cuts it before it
        takes the request (no answer, no unbind), as a failing link would. Only requests count and
        are refused; answers that came with it are still read (a deliver_sm_resp thrown away would
        only bring a second delivery), and nothing more is delivered on the link."""
        if self.cut:
            if pdu.is_response():
                return False
            self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)}, "not taken: the SMSC is cutting this link")
            return True
        every = self.smsc.drop_every
        if not every or not self.mode or pdu.is_response():
            return False
        self.requests_since_cut += 1
        if self.requests_since_cut < every:
            return False
        self.requests_since_cut = 0
        self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)},
                       f"condition: the SMSC cuts this link at 1 request in {every}; this {pdu.command} "
                       "is not taken (no answer): the ESME must rebind and send it again")
        self.closing = self.cut = True      # no "peer gone" row after this note, no more deliveries here
        self.trace.gate.follow(self.abort)  # after this chunk's answers (abort's connection_lost comes later)
        return True

    def garbled_response(self, sequence: int) -> None:
        msg = self.pending.pop(sequence, None)
        if msg:   # a garbled answer to our deliver_sm: not an ack, so retry later
            self.delivery.result(msg, C.SMPP_ESME_RSYSERR)

    def _bind(self, pdu: Any, raw: bytes) -> None:
        smsc = self.smsc
        system_id = codec.text(pdu.system_id)
        refusing = smsc.refuse_binds_until - clock.monotonic()
        if self.mode:
            status, note = C.SMPP_ESME_RALYBND, f"already bound as {self.mode}"
        elif refusing > 0:
            status, note = C.SMPP_ESME_RBINDFAIL, f"condition: the SMSC refuses binds for {math.ceil(refusing)} s more"
        else:
            status = smsc.authenticate(system_id, codec.text(pdu.password))
            note = "" if status == OK else f"bind refused: {codec.status_name(status)}"
        if status == OK:
            self.mode, self.system_id = pdu.command[5:], system_id
            if not self.claimed:
                self.name = smsc.name_for(system_id) or self.name
        self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)}, note)
        self.respond(pdu, status, {"smpp_seq": str(pdu.sequence)}, note, system_id=smsc.name,
                     sc_interface_version=C.SMPP_VERSION_34 if status == OK else None)
        if status == OK:
            smsc.bound(self)

    def _unbind(self, pdu: Any, raw: bytes) -> None:
        corr = {"smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr)
        if not self.mode:
            self.respond(pdu, C.SMPP_ESME_RINVBNDSTS, corr, "not bound")
            return
        self.respond(pdu, OK, corr)
        self.close()

    def _enquire_link(self, pdu: Any, raw: bytes) -> None:
        corr = {"smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr)
        self.respond(pdu, OK, corr)

    def _submit(self, pdu: Any, raw: bytes) -> None:
        smsc = self.smsc
        dest = codec.text(pdu.destination_addr).lstrip("+")
        route: tuple[str, str, str] | None = None   # (owner system_id, its node name, why)
        validity: float | None = None
        status, note = OK, ""
        report = _report_in(pdu) if self._reports(pdu) else None
        refused = report and self.delivery.owed.refusal(report[0], self.system_id, dest)
        if self.mode not in SENDING:
            status, note = C.SMPP_ESME_RINVBNDSTS, f"not bound as transmitter ({self.mode or 'unbound'})"
        else:
            self.submits += 1
            every, full = smsc.throttle_every, smsc.queue_full_every
            if every and self.submits % every == 0:
                status, note = C.SMPP_ESME_RTHROTTLED, f"throttled (condition: 1 submit_sm in {every})"
            elif full and self._past_throttle() % full == 0:
                status, note = C.SMPP_ESME_RMSGQFUL, f"queue full (condition: 1 submit_sm in {full})"
            elif problem := codec.address_problem(codec.text(pdu.source_addr), pdu.source_addr_ton):
                status, note = C.SMPP_ESME_RINVSRCADR, f"source_addr: {problem}"
            elif self.system_id in smsc.handset_numbers and codec.text(pdu.source_addr) and \
                    codec.text(pdu.source_addr).lstrip("+") != self.system_id:
                # A handset sends as its own number only (the SMSC knows it from the bind).
                status, note = C.SMPP_ESME_RINVSRCADR, (f"source_addr {codec.text(pdu.source_addr)[:20]!r} is not "
                                                        f"this handset's number {self.system_id}")
            elif problem := codec.address_problem(codec.text(pdu.destination_addr), pdu.dest_addr_ton):
                status, note = C.SMPP_ESME_RINVDSTADR, f"destination_addr: {problem}"
            elif pdu.short_message and pdu.message_payload:
                status, note = C.SMPP_ESME_RINVMSGLEN, "both short_message and message_payload"
            elif pdu.short_message is not None and len(pdu.short_message) != (pdu.sm_length or 0):
                status, note = C.SMPP_ESME_RINVMSGLEN, "sm_length does not match short_message"
            elif self._reports(pdu) and report is None:
                status, note = C.SMPP_ESME_RINVESMCLASS, ("an end-to-end report (esm_class 0x08) needs the "
                                                          "receipt text with a final stat: id:... stat:...")
            elif refused:
                status, note = refused
            else:
                route = smsc.route(dest)
                if route is None:
                    status, note = C.SMPP_ESME_RINVDSTADR, f"no handset or route for {dest or '(empty)'}"
                else:
                    try:
                        validity = codec.validity_seconds(codec.text(pdu.validity_period))
                    except ValueError as exc:
                        status, note = C.SMPP_ESME_RINVEXPIRY, str(exc)
                    else:
                        if validity is not None and validity <= 0:
                            status, note = C.SMPP_ESME_RINVEXPIRY, "validity_period already over"
        if route is None or status != OK:
            self._refuse_submit(pdu, raw, status, note)
            return
        message_id = self.delivery.new_id()
        owner, owner_name, why = route
        stored = not self.delivery.has_receiver(owner)
        note = f"{why}; stored: {owner_name} not bound as receiver" if stored else why
        corr = {"smpp_message_id": message_id, "smpp_seq": str(pdu.sequence)}
        rd = (pdu.registered_delivery or 0) & 0x03
        text_start = ""
        if rd:
            text_start = codec.content(pdu)[1] or ""
        lifetime = validity if validity is not None else self.delivery.validity_seconds
        if report is not None:       # an end-to-end account's report: the receipt it stands for
            reported_id, state = report
            msg = Message(message_id, owner, owner_name, relayed_receipt_fields(pdu, dest, reported_id, state),
                          self.loop.time() + lifetime, time.time(), None, 0, "", stored=stored,
                          note=f"the delivery receipt for id {reported_id} ({state.stat}) as {self.name} "
                               "reported it end to end")
            note = (f"{why}; {self.name} reports id {reported_id} end to end: stat:{state.stat} -> "
                    "a delivery receipt (esm_class 0x04) for its submitter; "
                    + reports.note(reports.imdn_for_sms_state(state), f"SMS status report stat:{state.stat}"))
        else:
            owed = rd and smsc.reports_end_to_end(owner)
            msg = Message(message_id, owner, owner_name,
                          deliver_fields(pdu, dest, (message_id, rd) if owed else None),
                          self.loop.time() + lifetime, time.time(), self.system_id, rd, text_start[:20],
                          stored=stored, receipt_by_owner=bool(owed),
                          note=f"{owner_name} reports the delivery end to end: the receipt waits for its report"
                          if owed else "")
        self.record_in(pdu, raw, corr, note)

        if report is not None and self.delivery.owed.answered(report[0]) is not None:
            note = (f"{self.name} reports id {report[0]} again (its submit_sm_resp was lost?): "
                    "answered ok, no second receipt")

        def answer(delayed: str) -> None:
            if self.closing:     # gone before its answer: never accepted, the ESME submits it again
                return
            earlier = self.delivery.owed.answered(report[0]) if report is not None else None
            if earlier is not None:     # a repeat (or a report after the SMSC's own EXPIRED): quietly ok
                self.respond(pdu, OK, corr, delayed, message_id=earlier or message_id)
                return
            self.delivery.keep(msg)          # durable before the answer says "accepted"
            if report is not None:
                self.delivery.reported(*report, message_id)
            self.respond(pdu, OK, corr, delayed, message_id=message_id)
            self.delivery.accept(msg)
        self._answer(answer)

    def _reports(self, pdu: Any) -> bool:
        """Is this submit_sm an end-to-end account's report on a message it took?"""
        return (pdu.esm_class or 0) & codec.MESSAGE_TYPE_MASK == codec.ACK_ESM_CLASS and \
            self.smsc.reports_end_to_end(self.system_id)

    def _refuse_submit(self, pdu: Any, raw: bytes, status: int, note: str) -> None:
        corr = {"smpp_message_id": "", "smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr, note)
        self._answer(lambda delayed: None if self.closing else self.respond(pdu, status, corr, delayed, message_id=""))

    def _past_throttle(self) -> int:
        """Counts the submits the throttle let through, so both conditions act at once."""
        self.not_throttled += 1
        return self.not_throttled

    def _answer(self, answer: Callable[[str], None]) -> None:
        """Answer a submit_sm now or, under the delay condition, later (with jitter, so answers
        and deliveries may overtake each other, as on a loaded SMSC); the note says so."""
        delay_ms = self.smsc.answer_delay_ms + random.uniform(0, self.smsc.answer_jitter_ms)
        if delay_ms <= 0:
            answer("")
            return
        condition = f"{self.smsc.answer_delay_ms} ms" + (
            f" + up to {self.smsc.answer_jitter_ms} ms jitter" if self.smsc.answer_jitter_ms else "")

        def later() -> None:
            self._late.discard(handle)
            answer(f"answered {delay_ms:.0f} ms late (condition: delay {condition})")
        handle = self.loop.call_later(delay_ms / 1000, later)
        self._late.add(handle)

    def _deliver_resp(self, pdu: Any, raw: bytes) -> None:
        msg = self.pending.pop(pdu.sequence, None)
        if msg is None:
            self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)}, "no deliver_sm waits for this sequence")
            return
        note = "" if pdu.status == OK else (
            "permanent error: dropped" if pdu.status in PERMANENT else "kept for retry")
        self.record_in(pdu, raw, {"smpp_message_id": msg.id, "smpp_seq": str(pdu.sequence)}, note)
        self.delivery.result(msg, pdu.status)

    def _query(self, pdu: Any, raw: bytes) -> None:
        message_id = codec.text(pdu.message_id)
        corr = {"smpp_message_id": message_id, "smpp_seq": str(pdu.sequence)}
        self.record_in(pdu, raw, corr)
        if not self.mode:
            self.respond(pdu, C.SMPP_ESME_RINVBNDSTS, corr, "not bound")
            return
        known = self.delivery.state_of(message_id)
        if known is None:
            self.respond(pdu, C.SMPP_ESME_RQUERYFAIL, corr, "unknown message id")
            return
        state, when = known
        final = "" if state == MessageState.ENROUTE else time.strftime("%y%m%d%H%M%S", time.gmtime(when)) + "000+"
        self.respond(pdu, OK, corr, message_id=message_id, final_date=final, message_state=state, error_code=0)

    def _response(self, pdu: Any, raw: bytes) -> None:
        self.record_in(pdu, raw, {"smpp_seq": str(pdu.sequence)})


def _report_in(pdu: Any) -> tuple[str, MessageState] | None:
    """(message id, state) an end-to-end report's receipt text names, if it names both."""
    fields = codec.parse_receipt_text(codec.content(pdu)[1] or "") or {}
    state = codec.state_of_stat(fields.get("stat", ""))
    if not fields.get("id") or state is None or codec.receipt_outcome(state, None) is None:
        return None     # ENROUTE, ACCEPTD, UNKNOWN: no final state, so no receipt
    return fields["id"], state


_HANDLERS: dict[str, Callable[[SmppSession, Any, bytes], None]] = {
    "bind_transmitter": SmppSession._bind,
    "bind_receiver": SmppSession._bind,
    "bind_transceiver": SmppSession._bind,
    "unbind": SmppSession._unbind,
    "enquire_link": SmppSession._enquire_link,
    "submit_sm": SmppSession._submit,
    "query_sm": SmppSession._query,
    "deliver_sm_resp": SmppSession._deliver_resp,
    "generic_nack": SmppSession._deliver_resp,    # a nack of our deliver_sm: retry later
    "enquire_link_resp": SmppSession._response,
    "unbind_resp": SmppSession._response,
}
