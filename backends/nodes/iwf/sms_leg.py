"""The IWF's SMS leg: an ESME bound to the SMSC.

CPM -> SMS (5.8.5): a CPM message the IWF admitted becomes an OutboundSms in its conversation's
ordered outbox (sms_outbox.py), sent from the number the thread map picks; SMSC receipts become
IMDNs (a multipart message is delivered when every part is).
SMS -> CPM (5.9.5): deliver_sm parts are reassembled (in any order; what never completes is
shown, marked incomplete), threaded by the thread map, and sent on as CPIM MESSAGEs through the
CPM leg; an SMS the CPM side refuses comes back to its sender as a bounce SMS (from the number he
wrote to, so it sits in the same conversation on his handset).
Status reports for SMS -> CPM (TS 23.204 6.10): a handset that asked for one gets it when the CPM
recipient's IMDN says delivered or failed (EXPIRED when none comes before its validity ends),
never when the IWF took the SMS; the IWF owes it durably (owed_reports.py) and sends it through
the SMSC, which turns it into the receipt the handset asked for (nodes/smsc/session.py).
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any, Callable

import smpplib.consts as c

from iwlab.backends import clock
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf import content
from iwlab.backends.nodes.iwf.cpm_leg import Answer, CpmLeg, Origin
from iwlab.backends.nodes.iwf.owed_reports import OwedReport, OwedReports
from iwlab.backends.nodes.iwf.sms_outbox import OutboundSms, SmsOutbox
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import reports, sip, smpp, smstext
from iwlab.backends.protocols.cpim import (
    CPM_MSG_SERVICE,
    CpimError,
    CpimMessage,
    Imdn,
    imdn_message,
    parse_cpim,
    uri_of,
)
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.protocols.smpp import MessageState, parse_receipt_text
from iwlab.backends.protocols.smpp import text as _text
from iwlab.backends.routing import SMS
from iwlab.backends.store import Store
from iwlab.backends.topology import IwfAccount, Topology, User
from iwlab.backends.transports.smpp_esme import Esme

log = logging.getLogger(__name__)
Address = tuple[str, int]


class ReceiptBook:
    """Which submitted part an SMSC receipt reports on, by the SMSC's message id.

    Real SMSCs write the id back in hex or decimal, with or without leading zeros
    (smpp.receipt_keys); a receipt may also overtake the submit_sm_resp that names the id.
    """

    def __init__(self, early_limit: int = 1000) -> None:
        self._by_id: dict[str, tuple[OutboundSms, int]] = {}   # normalised id -> (message, part)
        self._early: dict[str, Any] = {}   # normalised id, as the receipt wrote it -> the receipt, oldest first
        self._early_limit = early_limit    # receipts held

    def expect(self, message_id: str, sms: OutboundSms, part: int) -> Any | None:
        """Remember a submitted part; returns a receipt for it that came before, if one did: the
        one with its id as written, else the one held receipt with its id in another form (ids "10"
        and "16" are one id in hex and decimal: two such receipts held name neither)."""
        exact = smpp.normalised_message_id(message_id)
        self._by_id[exact] = (sms, part)
        if exact in self._early:
            return self._early.pop(exact)
        held = [form for form in smpp.receipt_keys(message_id) if form in self._early]
        return self._early.pop(held[0]) if len(held) == 1 else None

    def find(self, receipt_id: str) -> tuple[OutboundSms, int] | None:
        """The exact id first; another base only when it names exactly one message."""
        exact = smpp.normalised_message_id(receipt_id)
        if exact in self._by_id:
            return self._by_id[exact]
        matches = {id(self._by_id[k][0]): self._by_id[k] for k in smpp.receipt_keys(receipt_id)
                   if k in self._by_id}
        return next(iter(matches.values())) if len(matches) == 1 else None

    def hold(self, receipt_id: str, pdu: Any) -> None:
        """A receipt for nothing known yet (its submit_sm_resp is on its way, or it was never ours)."""
        self._early[smpp.normalised_message_id(receipt_id)] = pdu
        while len(self._early) > self._early_limit:
            self._early.pop(next(iter(self._early)))

    def forget(self, sms: OutboundSms) -> None:
        for message_id in sms.smsc_ids:
            self._by_id.pop(smpp.normalised_message_id(message_id), None)


class SmsLeg:
    """The SMS side of the IWF, both ways: its ESME, the ordered outbox, receipts to IMDNs, and
    SMS to CPM with reassembly, threads and bounces. Its size is the two directions of one
    mapping; outbox, threads and the codec are in their own modules."""

    def __init__(self, *, account: IwfAccount, topology: Topology, threads: ThreadMap, cpm: CpmLeg,
                 nodes: NodeDirectory, name: str, smsc_address: Callable[[], Address],
                 session_claims: Callable[[smstext.IncomingSms], bool], store: Store,
                 reassembly_timeout: float = 30.0, make_esme: Callable[..., Esme] = Esme,
                 put_content: content.Put | None = None) -> None:
        """session_claims(sms): True when an incoming SMS belongs to a chat session (the session
        leg takes it); store: the lab's durable store (what was acknowledged waits there);
        make_esme: Esme's signature, so a test can bind to no SMSC at all; put_content: the
        content server's put (a payload SMS cannot carry goes there, and its link by SMS)."""
        self._put_content = put_content
        self._account = account
        self._topology = topology
        self._threads = threads
        self._cpm = cpm
        self._nodes = nodes
        self._name = name
        self._smsc_address = smsc_address
        self._session_claims = session_claims
        self._make_esme = make_esme
        # Parts that never all arrive are shown, marked incomplete, after this long.
        self.reassembler = smstext.Reassembler(timeout=reassembly_timeout, clock=clock.monotonic)
        self.receipts = ReceiptBook()
        self.outbox = SmsOutbox(submit=self._submit, on_accepted=self._accepted, on_failed=self._fail,
                                store=store.queue(f"{name} sms out"))
        # Parts of a concatenated SMS acknowledged to the SMSC while the others are still missing.
        self._parts = store.queue(f"{name} sms parts")
        self._part_items: dict[tuple[str, str, int | None], list[int]] = {}
        # Status reports owed to handsets for SMS handed into CPM, and those of parts still waiting.
        self.owed = OwedReports(store.queue(f"{name} reports owed"), on_expired=self._report_expired)
        self._part_reports: dict[tuple[str, str, int | None], list[tuple[str, int]]] = {}
        self.failed: list[tuple[OutboundSms, str]] = []
        self.esme: Esme | None = None
        self._expiry: asyncio.Task | None = None

    async def start(self) -> None:
        self._restore()
        smsc_host, smsc_port = self._smsc_address()
        self.esme = self._make_esme(smsc_host, smsc_port, self._account.system_id, self._account.password,
                                    node_name=self._name, nodes=self._nodes, on_deliver=self._sms_received,
                                    on_state=self._esme_state, accept=self._accept_deliver)
        await self.esme.start()
        self._expiry = asyncio.create_task(self._expire_parts(), name="IWF reassembly timer")

    def _restore(self) -> None:
        """What the store held when the lab last stopped (or died): owed again, in order."""
        for sms in self.outbox.restore():
            for part, message_id in enumerate(sms.smsc_ids):
                if part not in sms.delivered_parts:
                    self.receipts.expect(message_id, sms, part)
        self.owed.restore()
        for item in self._parts.items():
            self._feed_part(item.meta, item.id)

    def stop_sending(self) -> None:
        """Stop the timers and outbox workers (the ESME's own stop is awaited by stop())."""
        if self._expiry:
            self._expiry.cancel()
        self.outbox.stop()
        self.owed.stop()

    async def stop(self) -> None:
        self.stop_sending()
        if self.esme:
            await self.esme.stop()

    def _esme_state(self, state: str, detail: str) -> None:
        log.info("IWF ESME %s: %s", state, detail)

    async def _submit(self, **params: Any) -> Any:
        assert self.esme is not None
        return await self.esme.submit(**params)

    # -- CPM -> SMS ----------------------------------------------------------------------
    def take_message(self, req: SipRequest, cpim: CpimMessage, recipient: User) -> Answer:
        """A CPM message the IWF admitted for SMS: queued in its conversation, or why not."""
        if not recipient.msisdn:
            return Answer(404, f"{recipient.name} has no SMS number")
        sender_uri = uri_of(cpim.sender) or sip.parse_name_addr(req.headers.get("From") or "").uri
        sender = self._topology.user_by_uri(sender_uri)
        if sender is None or not sender.msisdn:
            return Answer(403, "Sender has no number to show on SMS")
        adapted = content.for_sms(cpim, sender.name, self._put_content)
        parts, _ = smstext.sms_count(adapted.text)
        if parts > smstext.MAX_PARTS:
            return Answer(413, f"Too long for SMS: {parts} parts, at most {smstext.MAX_PARTS}")
        if self.outbox.seen(sender.cpm_uri or sender_uri, cpim.message_id):
            return Answer(202, "Accepted", f"imdn.Message-ID {cpim.message_id} was accepted before: "
                                           "a resend, not sent again")
        conversation_id = req.headers.get("Conversation-ID") or ""
        source = self._threads.outbound_sms(
            cpm_uri=sender.cpm_uri or sender_uri, cpm_number=sender.msisdn, peer=recipient.msisdn,
            conversation_id=conversation_id, contribution_id=req.headers.get("Contribution-ID") or "")
        sms = OutboundSms(source=source, dest=recipient.msisdn, text=adapted.text,
                          imdn_message_id=cpim.message_id, sender_uri=sender.cpm_uri or sender_uri,
                          recipient_uri=req.uri, disposition=cpim.disposition, datetime=cpim.datetime,
                          conversation_id=conversation_id)
        note = f"queued for SMS to {recipient.name} (+{recipient.msisdn})"
        if adapted.note:
            note += f"; {adapted.note}"
        if source != sender.msisdn:
            note += f", sent from pool number +{source} so a reply names this thread"
        if "display" in cpim.disposition:
            note += "; a display notification was asked for, but SMS cannot report reading: it will not be sent"
        self.outbox.enqueue(sms)
        return Answer(202, "Accepted", note)

    def send_text(self, *, source: str, dest: str, text: str, sender_uri: str = "") -> None:
        """An SMS the IWF writes itself (an adapted invitation, a session text), in conversation order."""
        self.outbox.enqueue(OutboundSms(source=source.lstrip("+"), dest=dest.lstrip("+"), text=text,
                                        imdn_message_id="", sender_uri=sender_uri,
                                        recipient_uri=f"tel:+{dest.lstrip('+')}", disposition=(), datetime=""))

    def _fail(self, sms: OutboundSms, why: str) -> None:
        self.failed.append((sms, why))
        log.warning("SMS +%s -> +%s failed: %s", sms.source, sms.dest, why)
        if sms.imdn_message_id and sms.wants_receipt:
            self._send_imdn(sms, "failed", why)

    def _accepted(self, sms: OutboundSms, message_id: str) -> None:
        # The receipt can overtake the submit_sm_resp on its way to the outbox.
        early = self.receipts.expect(message_id, sms, len(sms.smsc_ids) - 1)
        if early is not None:
            self._receipt(early)

    def _receipt(self, pdu: Any) -> None:
        receipt_id = _text(getattr(pdu, "receipted_message_id", None) or b"")
        fields = parse_receipt_text(_text(pdu.short_message)) or {}
        receipt_id = receipt_id or fields.get("id", "")
        found = self.receipts.find(receipt_id)
        if found is None:
            self.receipts.hold(receipt_id, pdu)   # kept a while: its submit_sm_resp may be on its way
            return
        sms, part = found
        outcome = smpp.receipt_outcome(getattr(pdu, "message_state", None), fields.get("stat"))
        if outcome is None:
            return   # ENROUTE, ACCEPTD, UNKNOWN: not final, wait for the next one
        stat = fields.get("stat") or str(getattr(pdu, "message_state", ""))
        if outcome == "delivered":
            sms.delivered_parts.add(part)
            # A multipart message is delivered when every part is.
            if len(sms.delivered_parts) == sms.parts:
                self.receipts.forget(sms)
                self.outbox.done(sms)
                if "positive-delivery" in sms.disposition:
                    self._send_imdn(sms, "delivered", f"SMSC receipt: all {sms.parts} part(s) delivered")
        elif not sms.failed:
            sms.failed = True
            self.receipts.forget(sms)
            self.outbox.done(sms)
            self._send_imdn(sms, "failed", f"SMSC receipt: stat:{stat}")

    def _send_imdn(self, sms: OutboundSms, status: str, why: str) -> None:
        recipient = self._topology.user_by_number(sms.dest)
        peer_uri = recipient.cpm_uri if recipient and recipient.cpm_uri else f"tel:+{sms.dest}"
        envelope = imdn_message(Imdn(sms.imdn_message_id, "delivery", status, sms.datetime, peer_uri),
                                sender=f"<{peer_uri}>", recipient=f"<{sms.sender_uri}>")
        req = self._cpm.new_request("MESSAGE", sms.sender_uri, from_uri=peer_uri)
        if sms.conversation_id:
            req.headers.add("Conversation-ID", sms.conversation_id)
        req.headers.add("Content-Type", "message/cpim")
        req.body = envelope.to_bytes()
        self._cpm.send(req, f"IMDN {status} for imdn.Message-ID {sms.imdn_message_id}: {why}")

    # -- SMS -> CPM (use case 5.9.5) -------------------------------------------------------------
    def _accept_deliver(self, pdu: Any) -> int:
        """Before the deliver_sm_resp: refuse an SMS nobody here can take, rather than lose it."""
        if smpp.is_receipt(pdu.esm_class):
            return c.SMPP_ESME_ROK
        if smpp.address_problem(_text(pdu.source_addr), pdu.source_addr_ton):   # it would become a SIP From
            return c.SMPP_ESME_RINVSRCADR
        dest = _text(pdu.destination_addr).lstrip("+")
        user = self._topology.user_by_number(dest)
        if (user and user.cpm_uri) or self._threads.is_pool_number(dest):
            return c.SMPP_ESME_ROK
        return c.SMPP_ESME_RINVDSTADR

    def _sms_received(self, pdu: Any) -> None:
        """A deliver_sm from the SMSC: a delivery receipt, or an SMS for a CPM user."""
        if pdu.command != "deliver_sm":
            return
        if smpp.is_receipt(pdu.esm_class):
            self._receipt(pdu)
            return
        fields = smpp.message_fields(pdu)
        self._feed_part(fields, None)

    def _feed_part(self, fields: dict[str, Any], item_id: int | None) -> None:
        """One part (or a whole SMS). A part that must wait for the others is kept in the store
        first: its deliver_sm_resp tells the SMSC the IWF has it. A whole SMS is handed on at
        once, into the CPM leg's durable outbox, before the deliver_sm_resp leaves."""
        concat = smstext.concatenation(esm_class=fields["esm_class"],
                                       short_message=bytes.fromhex(fields["short_message"]), tlvs=fields["tlvs"])
        key = (fields["source"], fields["dest"], concat.ref if concat else None)
        if concat is not None:
            if item_id is None:
                item_id = self._parts.put(f"{fields['source']}>{fields['dest']}", b"", fields)
            self._part_items.setdefault(key, []).append(item_id)
        if fields.get("smsc_id") and fields.get("registered_delivery"):   # the SMSC says a report is ours to send
            self._part_reports.setdefault(key, []).append(
                (fields["smsc_id"], fields["registered_delivery"]))
        for sms in smpp.reassemble_fields(self.reassembler, fields):
            self._handed_on(sms)

    def _handed_on(self, sms: smstext.IncomingSms) -> None:
        self._incoming(sms, self._part_reports.pop((sms.source, sms.dest, sms.ref), []))
        for kept in self._part_items.pop((sms.source, sms.dest, sms.ref), []):
            self._parts.remove(kept)

    async def _expire_parts(self) -> None:
        while True:
            await asyncio.sleep(1.0)
            for sms in self.reassembler.expire():   # shown incomplete, never dropped
                self._handed_on(sms)

    def _incoming(self, sms: smstext.IncomingSms, owed: list[tuple[str, int]]) -> None:
        """owed: (SMSC message id, registered_delivery) of each part whose status report is the
        IWF's to send."""
        if self._session_claims(sms):   # an answer to an invitation, or a message inside a session
            self._report_now(sms, owed, MessageState.DELIVERED, "taken into the chat session")
            return
        source, dest = sms.source.lstrip("+"), sms.dest.lstrip("+")
        recipient = self._topology.user_by_number(dest)
        thread = None
        if self._threads.is_pool_number(dest):
            thread = self._threads.inbound_sms(peer=source, dest_number=dest, cpm_uri=None)
            owner = self._threads.pool_owner(source, dest)
            recipient = self._topology.user_by_uri(owner.cpm_uri) if owner else None
        elif recipient is not None:
            thread = self._threads.inbound_sms(peer=source, dest_number=dest, cpm_uri=recipient.cpm_uri)
        if recipient is None or not recipient.cpm_uri:
            log.warning("SMS from +%s to +%s: no CPM user behind that number", source, dest)
            self._report_now(sms, owed, MessageState.UNDELIVERABLE, "no CPM user behind that number")
            return
        sender = self._topology.user_by_number(source)
        contribution_id = uuid.uuid4().hex
        conversation_id = thread.conversation_id if thread else uuid.uuid4().hex
        text = sms.text if sms.complete else f"{sms.text}\n[incomplete: {sms.parts} of {sms.total} parts arrived]"
        cap_note = ""
        if owed and self.owed.full():
            cap_note = (f"; +{source} asked for a status report, but the IWF owes {self.owed.limit} already: "
                        "none for this SMS (the SMSC's EXPIRED follows when its wait ends)")
            owed = []
        cpim = CpimMessage(sender=sip.name_addr(f"tel:+{source}", sender.name if sender else None),
                           recipient=f"<{recipient.cpm_uri}>", body=text.encode("utf-8"),
                           disposition=("positive-delivery", "negative-delivery") if owed else ("positive-delivery",))
        req = self._cpm.new_request("MESSAGE", recipient.cpm_uri, from_uri=f"tel:+{source}",
                                    from_name=sender.name if sender else None)
        req.headers.add("P-Preferred-Service", CPM_MSG_SERVICE)
        req.headers.add("Conversation-ID", conversation_id)
        req.headers.add("Contribution-ID", contribution_id)
        if thread:
            req.headers.add("InReplyTo-Contribution-ID", thread.contribution_id)
            self._threads.note_reply(source, thread)
        req.headers.add("Content-Type", "message/cpim")
        req.body = cpim.to_bytes()
        parts = f" ({sms.parts}/{sms.total} parts)" if sms.total > 1 else ""
        if thread:
            note = f"SMS{parts} from +{source} answers {recipient.name}'s thread ({self._threads.policy} policy)"
        else:
            note = f"SMS{parts} from +{source} starts a new conversation with {recipient.name}"
        if owed:
            self._owe(cpim.message_id, sms, owed, recipient.cpm_uri)
            note += f"; +{source}'s status report waits for {recipient.name}'s IMDN"
        note += cap_note
        self._cpm.send(req, note, origin=Origin(SMS, sender=source, recipient=dest))

    # -- status reports owed to handsets (SMS -> CPM) ------------------------------------------
    def _owe(self, imdn_message_id: str, sms: smstext.IncomingSms, owed: list[tuple[str, int]],
             reporter_uri: str) -> None:
        """Before the deliver_sm_resp: the reports for this SMS are the IWF's debt, due (EXPIRED)
        when the IWF's message validity ends: as long as the CPM side keeps trying, so no
        EXPIRED goes to a handset for a message Mary may still get (the sender's own validity
        was the SMSC's to keep, and it kept it: the IWF took the SMS in time)."""
        self.owed.owe(imdn_message_id, {**_report_meta(sms, owed), "reporter_uri": reporter_uri},
                      clock.wall() + self._account.message_validity_seconds)

    def _report_now(self, sms: smstext.IncomingSms, owed: list[tuple[str, int]], state: MessageState,
                    why: str) -> None:
        """A report decided at once (no CPM message to wait for)."""
        if owed:
            self._send_report(_report_meta(sms, owed), state, why)

    def imdn_arrived(self, imdn: Imdn, reporter: User | None) -> str | None:
        """An IMDN from a CPM user for a message from an SMS user: the status report it stands for
        goes to his handset, if one is owed and the IMDN comes from the message's recipient.
        Returns the note for the ladder (None: none owed)."""
        report = self.owed.get(imdn.message_id)
        if report is None:
            return None
        if reporter is None or reporter is not self._topology.user_by_uri(report.meta["reporter_uri"]):
            return (f"IMDN {imdn.status} for imdn.Message-ID {imdn.message_id} not from its recipient: "
                    "the status report still waits")
        state = reports.sms_state_for_imdn(imdn.kind, imdn.status)
        if state is None and imdn.status in reports.NO_REPORT:
            self.owed.take(imdn.message_id)
            self.owed.paid(report)
            return (f"IMDN {imdn.kind} {imdn.status} for imdn.Message-ID {imdn.message_id}: the notification was "
                    f"refused or could not be made (RFC 5438), which says nothing of the SMS's fate: no status "
                    f"report to +{report.meta['submitter']} (the SMSC's own EXPIRED follows when its wait ends)")
        if state is None:
            return (f"IMDN {imdn.kind} {imdn.status} for imdn.Message-ID {imdn.message_id}: not a delivery "
                    "outcome, ignored; the status report still waits")
        self.owed.take(imdn.message_id)
        legacy = f"SMS status report stat:{state.stat} (message_state {int(state)})"
        self._send_report(report.meta, state, f"IMDN {imdn.status}")
        self.owed.paid(report)
        return f"{reports.note(imdn.status, legacy)} to +{report.meta['submitter']}"

    def _report_expired(self, report: OwedReport) -> None:
        self._send_report(report.meta, MessageState.EXPIRED, "no IMDN before the validity ran out")
        self.owed.paid(report)

    def _failed_into_cpm(self, req: SipRequest, response: SipResponse) -> None:
        """The CPM side refused (or never took) an SMS: its owed report says so."""
        try:
            report = self.owed.take(parse_cpim(req.body).message_id)
        except CpimError:
            return
        if report is not None:
            state = MessageState.EXPIRED if response.status == 408 else MessageState.UNDELIVERABLE
            self._send_report(report.meta, state, f"CPM answered {response.status} {response.reason}")
            self.owed.paid(report)

    def _send_report(self, meta: dict[str, Any], state: MessageState, why: str) -> None:
        """One report per part (as an SMSC sends a receipt per part), in the outbox from the
        recipient's number to the handset: what was asked for only (registered_delivery 2:
        failures only). The SMSC turns each into the handset's delivery receipt."""
        now = clock.wall()
        for smsc_id, rd in meta["parts"]:
            if rd == 2 and state == MessageState.DELIVERED:
                continue
            text = smpp.receipt_text(smsc_id, state.stat, meta["submitted"], now, meta["text_start"],
                                     delivered=state == MessageState.DELIVERED)
            self.outbox.enqueue(OutboundSms(source=meta["recipient"], dest=meta["submitter"], text=text,
                                            imdn_message_id="", sender_uri="", recipient_uri=f"tel:+{meta['submitter']}",
                                            disposition=(), datetime="", reports_on=smsc_id))
        log.info("status report %s for +%s (%s)", state.stat, meta["submitter"], why)

    def bounce(self, origin: Origin, req: SipRequest, response: SipResponse) -> None:
        """An SMS the CPM side would not take: its sender hears why, by SMS, from the number he
        wrote to (the recipient's, or the pool number of the thread)."""
        self._failed_into_cpm(req, response)
        recipient = self._topology.user_by_uri(req.uri)
        who = recipient.name if recipient else req.uri
        if origin.sender and origin.recipient:
            self.send_text(source=origin.recipient, dest=origin.sender,
                           text=f"Your message to {who} was not delivered ({response.status} {response.reason}).")


def _report_meta(sms: smstext.IncomingSms, owed: list[tuple[str, int]]) -> dict[str, Any]:
    """What a status report for this SMS needs: who gets it, from which number, per part the
    SMSC's id and what was asked (registered_delivery), and the receipt text's details."""
    return {"submitter": sms.source.lstrip("+"), "recipient": sms.dest.lstrip("+"),
            "parts": [[smsc_id, rd] for smsc_id, rd in owed], "submitted": clock.wall(),
            "text_start": sms.text[:20]}
