"""The IWF's email leg: CPM messages out as email, email (and MDNs) in as CPM.

Out: an RFC 5322 message per CPM message (mail.cpm_to_email), sent
with aiosmtplib to the lab's mail server, in order per conversation; its
Message-ID goes into the thread map. The mail server tells us when it is in
the recipient's Maildir (-> IMDN delivered); an MDN from the reader's client
(-> IMDN displayed).
In: mail for a CPM domain reaches relay() from the mail server: threaded by
In-Reply-To / References, else by subject, and sent on as a CPIM MESSAGE
through the CPM leg (unless the session leg claims it: a chat answer or request).
Never a 250 for what will be dropped: an address no CPM user has is refused at
RCPT (recipient_refusal), a message that would not make a valid SIP request
(its sender's address, say) at DATA (RelayRefused), and one the CPM side
refuses later comes back to its envelope sender as a DSN (RFC 3464), threaded
to his mail (bounce): an email sender hears of a failure by email, never by SMS.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from dataclasses import dataclass
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Callable

import aiosmtplib

from iwlab.backends import clock
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf import content
from iwlab.backends.nodes.iwf.cpm_leg import Answer, CpmLeg, Origin
from iwlab.backends.nodes.iwf.owed_reports import OwedReports
from iwlab.backends.nodes.iwf.threads import ThreadMap, ThreadRef
from iwlab.backends.protocols import mail, reports, sip
from iwlab.backends.protocols.cpim import (
    CPM_MSG_SERVICE,
    CpimError,
    CpimMessage,
    Imdn,
    imdn_message,
    parse_cpim,
    uri_of,
)
from iwlab.backends.protocols.mail import RelayRefused
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.recent import Recent
from iwlab.backends.routing import EMAIL
from iwlab.backends.store import DurableQueue, StoredItem
from iwlab.backends.topology import Topology, User

log = logging.getLogger(__name__)
Address = tuple[str, int]
GIVE_UP_AFTER = 60.0   # seconds of temporary failures before Mary is told the email failed
REMEMBERED = 10_000    # mails whose later report (MDN, delivery), reply or retry is still matched


@dataclass
class OutboundEmail:
    message: EmailMessage | None     # None once the mail server has it: a report needs only the rest
    recipient: str                   # envelope recipient
    sender: str                      # envelope sender
    imdn_message_id: str
    sender_uri: str                  # the CPM user, for the IMDNs
    recipient_uri: str
    disposition: tuple[str, ...]
    datetime: str
    conversation_id: str
    store_id: int | None = None      # its item in the lab's durable store, until the mail server has it

    def meta(self) -> dict[str, object]:
        return {"recipient": self.recipient, "sender": self.sender, "imdn_message_id": self.imdn_message_id,
                "sender_uri": self.sender_uri, "recipient_uri": self.recipient_uri,
                "disposition": list(self.disposition), "datetime": self.datetime,
                "conversation_id": self.conversation_id}

    @classmethod
    def from_store(cls, item: StoredItem) -> "OutboundEmail":
        m = item.meta
        message = BytesParser(policy=policy.default).parsebytes(item.payload)
        assert isinstance(message, EmailMessage)
        return cls(message, m["recipient"], m["sender"], m["imdn_message_id"], m["sender_uri"], m["recipient_uri"],
                   tuple(m["disposition"]), m["datetime"], m["conversation_id"], store_id=item.id)


class EmailLeg:
    """The email side of the IWF, both ways: mail for CPM users in (threaded, checked before the
    250, bounced with a DSN when CPM refuses it later), CPM messages out as mail with MDN mapping.
    Its size is the two directions of one protocol mapping; the codecs are in protocols/mail."""

    def __init__(self, *, topology: Topology, threads: ThreadMap, cpm: CpmLeg, nodes: NodeDirectory, name: str,
                 mail_address: Callable[[], Address | None],
                 session_claims: Callable[[mail.IncomingEmail, str], bool], store: DurableQueue,
                 owed_store: DurableQueue, domain: str = "", report_validity: float = 3600.0,
                 annotate: Callable[[str, str], None] = lambda message_id, note: None) -> None:
        """mail_address: the lab's mail server, when it runs; session_claims(incoming, recipient
        address): True when an email belongs to a chat session (the session leg takes it);
        store: where an email waits (from before its 202) until the mail server has it;
        domain: the IWF operator's domain (its DSNs come from mailer-daemon there);
        owed_store: where the MDNs owed to email senders wait for the CPM user's IMDN displayed
        (forgotten after report_validity seconds: an MDN is asked for, never promised);
        annotate(Message-ID, note): the trace's note for a mail the mail server will record."""
        self._annotate = annotate
        self._mdns = OwedReports(owed_store, on_expired=lambda report: self._mdns.paid(report))
        self._report_validity = report_validity
        self._domain = domain
        self._store = store
        self._topology = topology
        self._threads = threads
        self._cpm = cpm
        self._nodes = nodes
        self._name = name
        self._mail_address = mail_address
        self._session_claims = session_claims
        self._outbox: deque[OutboundEmail] = deque()     # one queue: email keeps send order
        self._sender: asyncio.Task | None = None
        self._client: aiosmtplib.SMTP | None = None
        self._claimed: tuple[Address, Address] | None = None   # its connection's ends, as the directory has them
        # What a later report, reply or retry is matched with: the newest REMEMBERED of each.
        self._sent: Recent[str, OutboundEmail] = Recent(REMEMBERED)   # Message-ID -> what it carried
        self._by_subject: Recent[tuple[str, str], ThreadRef] = Recent(REMEMBERED)   # (peer, subject) fallback
        self._seen_incoming: Recent[tuple[str, str], None] = Recent(REMEMBERED)   # (Message-ID, recipient): SMTP retries repeat

    async def stop(self) -> None:
        self._mdns.stop()
        if self._sender:
            self._sender.cancel()
        if self._client is not None and self._client.is_connected:
            try:
                await asyncio.wait_for(self._client.quit(), 2)
            except (aiosmtplib.SMTPException, asyncio.TimeoutError, OSError):
                self._client.close()
        self._let_go_of_claim()

    # -- CPM -> email ---------------------------------------------------------------
    def take_message(self, req: SipRequest, cpim: CpimMessage, recipient: User) -> Answer:
        """A CPM message the IWF admitted for email: queued, or why not."""
        sender = self._topology.user_by_uri(uri_of(cpim.sender))
        if not recipient.email:
            return Answer(480, f"{recipient.name} has no email this lab can reach")
        if sender is None:
            return Answer(403, "Sender unknown to this lab: no address to show on email")
        note = self.send(sender=sender, recipient=recipient, cpim=cpim,
                         conversation_id=req.headers.get("Conversation-ID") or "",
                         contribution_id=req.headers.get("Contribution-ID") or "",
                         in_reply_to=req.headers.get("InReplyTo-Contribution-ID") or "")
        return Answer(202, "Accepted", note)

    def send(self, *, sender: User, recipient: User, cpim: CpimMessage, conversation_id: str,
             contribution_id: str, in_reply_to: str) -> str:
        """Queue a CPM message for email; returns a note for the trace."""
        domain = self._topology.operator(sender.operator).cpm_domain
        sender_address = f"{sender.id}@{domain}"
        assert recipient.email, "the IWF checks that the recipient has an email address"
        parent = self._parent_message_id(conversation_id, in_reply_to)
        references = [parent] if parent else []
        adapted = content.for_email(cpim, sender.name)
        attached = adapted.attachment
        message = mail.cpm_to_email(
            sender_name=sender.name, sender_address=sender_address, recipient_address=recipient.email,
            text=adapted.text, contribution_id=contribution_id or uuid.uuid4().hex, conversation_id=conversation_id,
            in_reply_to_message_id=parent, references=references,
            request_mdn="display" in cpim.disposition, domain=domain,
            attachments=[(attached.data, attached.content_type, attached.filename)] if attached else ())
        message_id = mail.normalise_message_id(message["Message-ID"])
        self._threads.remember_id(message_id, cpm_uri=sender.cpm_uri or "", conversation_id=conversation_id,
                                     contribution_id=contribution_id)
        # A reply from a client that drops In-Reply-To still finds the thread by its subject.
        self._by_subject[(recipient.email.lower(), mail.normalise_subject(message["Subject"]))] = ThreadRef(
            sender.cpm_uri or "", conversation_id, contribution_id, 0.0)
        self._queue(OutboundEmail(message, recipient.email, sender_address, cpim.message_id, sender.cpm_uri or "",
                                  recipient.cpm_uri or "", cpim.disposition, cpim.datetime, conversation_id))
        note = f"queued as email {message_id} to {recipient.name} <{recipient.email}>"
        return note + (f"; {adapted.note}" if adapted.note else "")

    def _queue(self, outbound: OutboundEmail) -> None:
        """Keep it (durably, before the caller acknowledges it) and send it after what waits."""
        if outbound.store_id is None:
            assert outbound.message is not None, "queued before it was handed on"
            outbound.store_id = self._store.put(outbound.recipient, outbound.message.as_bytes(), outbound.meta())
        self._outbox.append(outbound)
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._drain(), name="IWF -> mail server")

    def restore(self) -> int:
        """After a restart: what the store held goes to the mail server, in order."""
        self._mdns.restore()
        items = self._store.items()
        for item in items:
            self._queue(OutboundEmail.from_store(item))
        return len(items)

    def _sent_on(self, outbound: OutboundEmail) -> None:
        self._outbox.popleft()
        outbound.message = None   # its bytes are the mail server's now (a 1 MB mail was held here for good)
        if outbound.store_id is not None:
            self._store.remove(outbound.store_id)
            outbound.store_id = None

    def send_text(self, *, sender: User, recipient_address: str, subject: str, text: str,
                  in_reply_to: str | None = None, conversation_id: str = "") -> str:
        """A text the IWF writes itself (a session's adapted invitation, messages, closing):
        no IMDN to report, same ordered outbox as send(); returns its Message-ID for threading."""
        domain = self._topology.operator(sender.operator).cpm_domain
        message = mail.cpm_to_email(
            sender_name=sender.name, sender_address=f"{sender.id}@{domain}", recipient_address=recipient_address,
            text=text, contribution_id=uuid.uuid4().hex, conversation_id=conversation_id or uuid.uuid4().hex,
            in_reply_to_message_id=in_reply_to, request_mdn=False, domain=domain, subject=subject)
        self._queue(OutboundEmail(message, recipient_address, f"{sender.id}@{domain}", "", "", "", (), "",
                                  conversation_id))
        return mail.normalise_message_id(message["Message-ID"])

    def _parent_message_id(self, conversation_id: str, in_reply_to: str) -> str | None:
        """Mary answering John: the email she answers, so his client threads it."""
        for message_id, ref in self._threads.ids_newest_first():
            if ref.conversation_id == conversation_id and (not in_reply_to or ref.contribution_id == in_reply_to):
                return f"<{message_id}>"
        return None

    async def _drain(self) -> None:
        delay, first_try = 0.1, clock.monotonic()
        while self._outbox:
            outbound = self._outbox[0]
            assert outbound.message is not None, "in the outbox until the mail server has it"
            # Remembered as it goes (the mail server reports it stored before it answers): so
            # what waits in the outbox, however much, is never let go unreported. A mail the IWF
            # wrote itself (a session's texts) has no CPM sender to report to.
            if outbound.imdn_message_id:
                self._sent[mail.normalise_message_id(outbound.message["Message-ID"])] = outbound
            try:
                client = await self._connected()
                await client.send_message(outbound.message, sender=outbound.sender, recipients=[outbound.recipient])
            except (aiosmtplib.SMTPRecipientsRefused, aiosmtplib.SMTPResponseException) as exc:
                # A 4xx (at MAIL FROM, RCPT or DATA alike) is temporary: keep it and try again
                # (RFC 5321 4.2.1, 4.5.4.1); only a 5xx refuses it for good.
                refusals = exc.recipients if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) else [exc]
                why = "; ".join(f"{r.code} {r.message}" for r in refusals)
                if any(r.code >= 500 for r in refusals):
                    self._give_up(outbound, f"the mail server refused it: {why}")
                    delay, first_try = 0.1, clock.monotonic()
                    continue
            except (aiosmtplib.SMTPException, OSError) as exc:
                log.warning("mail server unreachable (%s); retrying", exc)
                if self._client is not None:
                    self._client.close()
                self._client = None
                why = f"mail server unreachable: {exc}"
            else:
                delay, first_try = 0.1, clock.monotonic()
                self._sent_on(outbound)
                continue
            if clock.monotonic() - first_try > GIVE_UP_AFTER:   # temporary for too long: say so
                self._give_up(outbound, f"not accepted within {GIVE_UP_AFTER:.0f} s ({why})")
                delay, first_try = 0.1, clock.monotonic()
                continue
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _give_up(self, outbound: OutboundEmail, why: str) -> None:
        assert outbound.message is not None
        log.warning("email %s not sent: %s", outbound.message["Message-ID"], why)
        self._sent_on(outbound)
        if outbound.imdn_message_id:
            self._imdn(outbound, "failed", why)

    async def _connected(self) -> aiosmtplib.SMTP:
        if self._client is not None and self._client.is_connected:
            return self._client
        address = self._mail_address()
        if address is None:
            raise OSError("the mail server is not running")
        self._let_go_of_claim()   # the last connection's, if it was lost
        client = aiosmtplib.SMTP(hostname=address[0], port=address[1], timeout=30, start_tls=False)
        await client.connect()
        self._claimed = client.get_transport_info("sockname")[:2], client.get_transport_info("peername")[:2]
        self._nodes.claim(self._claimed[0], self._name, self._claimed[1])   # so the mail server names us
        self._client = client
        return client

    def _let_go_of_claim(self) -> None:
        if self._claimed is not None:
            self._nodes.release(*self._claimed)
            self._claimed = None

    def delivered(self, address: str, message_id: str, message: EmailMessage) -> None:
        """The mail server stored one of ours in a Maildir: IMDN delivered."""
        outbound = self._sent.get(mail.normalise_message_id(message_id))
        if outbound and "positive-delivery" in outbound.disposition:
            self._imdn(outbound, "delivered", f"in {address}'s Maildir")

    # -- email -> CPM ---------------------------------------------------------------
    def recipient_refusal(self, address: str) -> str | None:
        """The mail server's RCPT check for a CPM domain: an address no CPM user has is refused
        there and then (not a 250, then a failure at DATA)."""
        if self._cpm_user(address) is None:
            return f"550 5.1.1 <{address}>: no such CPM user here"
        return None

    async def relay(self, message: EmailMessage, envelope_from: str, recipient_address: str) -> None:
        """Mail for a CPM user (the mail server awaits this before answering 250). Raises
        RelayRefused for what cannot be carried into CPM."""
        incoming = mail.parse_incoming(message)
        seen_key = (incoming.message_id, recipient_address.lower())
        if seen_key in self._seen_incoming:
            return   # the client's retry of a mail already handed on
        await self.hand_on(incoming, recipient_address, bounce_to=envelope_from)
        self._seen_incoming[seen_key] = None   # only once it was handed on: a 451 retry is retried for real

    def _sender_uri(self, incoming: mail.IncomingEmail) -> str:
        """The email sender as a CPM identity: his tel: URI when the lab knows him, else his
        address as a sip: URI (escaped: `"x y"@evil.test` is a valid local part, not a SIP user)."""
        sender = self._topology.user_by_email(incoming.sender)
        if sender and sender.tel:
            return f"tel:{sender.tel}"
        try:
            return sip.sip_uri_for_address(incoming.sender)
        except ValueError as exc:
            raise RelayRefused(f"553 5.1.7 The sender's address cannot be carried into CPM: {exc}") from None

    async def hand_on(self, incoming: mail.IncomingEmail, recipient_address: str,
                      bounce_to: str | None = None) -> None:
        """One parsed email for a CPM user: an MDN, a session's, or a message to send on.
        bounce_to: the envelope sender (SMTP MAIL FROM; "" is the null reverse-path: a bounce is
        never bounced); None: the From address."""
        if incoming.is_mdn:
            self._mdn(incoming)
            return
        sender_uri = self._sender_uri(incoming)      # before a session leg takes it: it needs one too
        if self._session_claims(incoming, recipient_address):
            return
        recipient = self._cpm_user(recipient_address)
        if recipient is None:                         # the RCPT check let it through: the topology changed
            raise RelayRefused(f"550 5.1.1 <{recipient_address}>: no such CPM user here")
        peer = incoming.sender.lower()
        subject_key = (peer, mail.normalise_subject(incoming.subject))
        thread = self._threads.find_by_ids(mail.thread_key_candidates(incoming))
        how = "In-Reply-To/References"
        if thread is None and subject_key[1]:
            thread = self._by_subject.get(subject_key)
            how = "subject"
        contribution_id = uuid.uuid4().hex
        conversation_id = thread.conversation_id if thread else (incoming.conversation_id or uuid.uuid4().hex)
        text = incoming.text
        if incoming.was_html_only:
            text += "\n[converted from HTML]"
        for attachment in incoming.attachments:
            text += f"\n[attachment not forwarded: {attachment}]"
        assert recipient.cpm_uri, "_cpm_user found a CPM user"
        envelope_sender = bounce_to if bounce_to is not None else incoming.sender
        mdn_refused = _no_automatic_mdn(incoming.disposition_notification_to, envelope_sender)
        if incoming.disposition_notification_to and mdn_refused is None and self._mdns.full():
            mdn_refused = (f"a read report (MDN) was asked for, but the IWF owes {self._mdns.limit} already: "
                           "none for this mail")
        wants_mdn = bool(incoming.disposition_notification_to) and mdn_refused is None
        cpim = CpimMessage(sender=sip.name_addr(sender_uri, incoming.sender_name or incoming.sender),
                           recipient=f"<{recipient.cpm_uri}>", body=text.encode("utf-8"),
                           disposition=("positive-delivery", "display") if wants_mdn else ("positive-delivery",))
        req = self._cpm.new_request("MESSAGE", recipient.cpm_uri, from_uri=sender_uri,
                                   from_name=incoming.sender_name or None)
        req.headers.add("P-Preferred-Service", CPM_MSG_SERVICE)
        req.headers.add("Conversation-ID", conversation_id)
        req.headers.add("Contribution-ID", contribution_id)
        if thread:
            req.headers.add("InReplyTo-Contribution-ID", thread.contribution_id)
        req.headers.add("Content-Type", "message/cpim")
        req.body = cpim.to_bytes()
        problem = _cannot_carry(req)
        if problem:   # refused at DATA: CPM would answer 400 after our 250, and the mail would be lost
            raise RelayRefused(f"554 5.6.0 Message refused: it cannot be carried into CPM ({problem})")
        ref = ThreadRef(recipient.cpm_uri, conversation_id, contribution_id, 0.0)
        self._threads.remember_id(incoming.message_id, cpm_uri=recipient.cpm_uri,
                                     conversation_id=conversation_id, contribution_id=contribution_id)
        self._by_subject[subject_key] = ref
        note = (f"email from {incoming.sender} answers {recipient.name}'s thread (by {how})" if thread
                else f"email from {incoming.sender} starts a conversation with {recipient.name}")
        if incoming.trimmed_quote:
            note += "; quoted history trimmed"
        if mdn_refused:
            note += f"; {mdn_refused}"
        if wants_mdn:   # before the 250: the MDN is owed from now on
            self._mdns.owe(cpim.message_id, {
                "to": incoming.disposition_notification_to, "original_id": incoming.message_id,
                "subject": incoming.subject, "reader": recipient_address, "reader_name": recipient.name,
                "reporter_uri": recipient.cpm_uri, "sender": bounce_to if bounce_to is not None else incoming.sender},
                clock.wall() + self._report_validity)
            note += f"; a read report (MDN) to {incoming.disposition_notification_to} waits for {recipient.name}'s IMDN displayed"
        self._cpm.send(req, note, origin=Origin(EMAIL, sender=incoming.sender if bounce_to is None else bounce_to,
                                                recipient=recipient_address,
                                                message_id=incoming.message_id, subject=incoming.subject))

    def bounce(self, origin: Origin, req: SipRequest, response: SipResponse) -> None:
        """An email the CPM side would not take: a DSN to its sender, threaded to his mail, from
        the null reverse-path (RFC 5321 4.5.5: nobody answers a bounce with a bounce)."""
        if not origin.sender:
            return
        report = mail.build_dsn(original_message_id=origin.message_id, original_subject=origin.subject,
                                original_sender=origin.sender, original_recipient=origin.recipient,
                                reporting_domain=self._domain or "localhost", status=response.status,
                                reason=response.reason)
        self._queue(OutboundEmail(report, origin.sender, "", "", "", "", (), "", req.headers.get("Conversation-ID") or ""))
        log.info("DSN to %s: %s not delivered (%s %s)", origin.sender, origin.message_id, response.status,
                 response.reason)

    def imdn_arrived(self, imdn: Imdn, reporter: User | None) -> str | None:
        """An IMDN from a CPM user for an email sender's message: "displayed" becomes the MDN he
        asked for (RFC 8098, threaded to his mail), "failed" a DSN; "delivered" only says so on
        the ladder (no NOTIFY=SUCCESS here). Returns the note (None: no report owed)."""
        report = self._mdns.get(imdn.message_id)
        if report is None:
            return None
        meta = report.meta
        if reporter is None or reporter is not self._topology.user_by_uri(meta["reporter_uri"]):
            return f"IMDN {imdn.status} for imdn.Message-ID {imdn.message_id} not from its recipient: the MDN still waits"
        what = (imdn.kind, imdn.status)
        if what == ("delivery", "delivered"):
            return (f"IMDN delivered for {meta['to']}'s mail: no email report for delivery (DSN NOTIFY=SUCCESS "
                    f"is not offered); the MDN waits for displayed")
        if what == ("display", "forbidden"):
            self._mdns.take(imdn.message_id)
            self._mdns.paid(report)
            return (f"IMDN display forbidden for {meta['to']}'s mail: {meta['reader_name']} does not send read "
                    "reports (RFC 5438), so no MDN; nothing is sent for it (RFC 8098: an MDN is never promised)")
        if what not in (("display", "displayed"), ("delivery", "failed")):
            return (f"IMDN {imdn.kind} {imdn.status} for {meta['to']}'s mail: says neither read nor failed, "
                    "ignored; the MDN still waits")
        self._mdns.take(imdn.message_id)
        if imdn.status == "displayed":
            report_mail = mail.mdn_for(original_id=meta["original_id"], subject=meta["subject"], to=meta["to"],
                                       reader_address=meta["reader"], reader_name=meta["reader_name"],
                                       reporting_ua=f"{self._name}; from {meta['reader_name']}'s IMDN displayed",
                                       # Mary displayed it (her action), the IWF sent the MDN for her.
                                       mode="manual-action/MDN-sent-automatically")
            legacy = "MDN disposition displayed (RFC 8098)"
        else:
            report_mail = mail.build_dsn(original_message_id=meta["original_id"], original_subject=meta["subject"],
                                         original_sender=meta["sender"], original_recipient=meta["reader"],
                                         reporting_domain=self._domain or "localhost", status=500,
                                         reason=f"the recipient's phone reported {imdn.status} (IMDN)")
            legacy = "DSN Action: failed (RFC 3464)"
        to = meta["to"] if imdn.status == "displayed" else meta["sender"]
        note = f"{reports.note(imdn.status, legacy)} to {to}"
        if to:
            self._annotate(str(report_mail["Message-ID"]), f"{meta['reader_name']}'s IMDN {imdn.status}; {note}")
            # From the null reverse-path, as a DSN: nothing answers a report with a report (RFC 8098 3).
            self._queue(OutboundEmail(report_mail, to, "", "", "", "", (), "", ""))
        self._mdns.paid(report)
        return note

    def _cpm_user(self, address: str) -> User | None:
        """The CPM user an address of a CPM domain names: by SIP URI (mary@cpm-a.lab, or
        +15550101@cpm-a.lab), or by user id at their operator's domain (what our emails say)."""
        local, _, domain = address.lower().rpartition("@")
        user = self._topology.user_by_uri(f"sip:{local}@{domain}")
        if user is None:
            user = next((u for u in self._topology.users if u.id.lower() == local
                         and self._topology.operator(u.operator).cpm_domain == domain), None)
        return user if user is not None and user.cpm_uri else None

    def _mdn(self, incoming: mail.IncomingEmail) -> None:
        outbound = self._sent.get(mail.normalise_message_id(incoming.mdn_original_message_id or ""))
        if outbound is None:
            log.info("MDN for a message we did not send: %s", incoming.mdn_original_message_id)
            return
        if incoming.mdn_disposition == "displayed" and "display" in outbound.disposition:
            self._imdn(outbound, "displayed", f"MDN from {incoming.sender}: displayed", kind="display")

    def _imdn(self, outbound: OutboundEmail, status: str, why: str, kind: str = "delivery") -> None:
        if not outbound.sender_uri:
            return
        peer_uri = outbound.recipient_uri or f"mailto:{outbound.recipient}"
        envelope = imdn_message(Imdn(outbound.imdn_message_id, kind, status, outbound.datetime, peer_uri),
                                sender=f"<{peer_uri}>", recipient=f"<{outbound.sender_uri}>")
        req = self._cpm.new_request("MESSAGE", outbound.sender_uri, from_uri=peer_uri)
        if outbound.conversation_id:
            req.headers.add("Conversation-ID", outbound.conversation_id)
        req.headers.add("Content-Type", "message/cpim")
        req.body = envelope.to_bytes()
        self._cpm.send(req, f"IMDN {status} for imdn.Message-ID {outbound.imdn_message_id}: {why}")


def _no_automatic_mdn(notify_to: str | None, envelope_sender: str) -> str | None:
    """Why a read report asked for may not be sent automatically, or None. RFC 8098 2.1: not
    when Disposition-Notification-To differs from the Return-Path (the envelope sender): else
    anyone could have the IWF mail a third party."""
    if not notify_to or notify_to.strip().lower() == envelope_sender.strip().lower():
        return None
    return (f"a read report (MDN) was asked for, to {notify_to[:80]}, which is not the envelope sender "
            f"{envelope_sender[:80] or '<> (null reverse-path)'}: no automatic MDN (RFC 8098 2.1), "
            "so no display notification is asked of the CPM recipient")


def _cannot_carry(req: SipRequest) -> str | None:
    """Why a request we built from an email would be refused by the next hop, or None: it is
    parsed back and checked as a CPM server checks what it receives."""
    try:
        parsed = sip.parse_message(req.to_bytes())
    except (sip.SipParseError, ValueError) as exc:
        return getattr(exc, "reason", str(exc))
    assert isinstance(parsed, SipRequest)
    problem = sip.validate_request(parsed)
    if problem:
        return problem[1]
    try:
        parse_cpim(parsed.body)
    except CpimError as exc:
        return f"CPIM: {exc}"
    return None
