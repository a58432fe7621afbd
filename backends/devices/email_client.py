"""A simulated email client (John's): Inbox and Sent, compose, reply, read receipts.

It sends through the lab's mail server over real SMTP (aiosmtplib) and reads
its Maildir, as a local mail client would. Opening a message that asks for a
read receipt (Disposition-Notification-To) answers it with an RFC 8098 MDN.
"""
from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from email import policy
from email.message import EmailMessage
from email.utils import formatdate
from typing import Callable

import aiosmtplib

from iwlab.backends.devices import history
from iwlab.backends.devices.events import (
    DeviceEvent,
    DeviceListener,
    MailReceived,
    MailSent,
    ReadReceiptFailed,
    ReadReceiptSent,
)
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import mail
from iwlab.backends.topology import Topology, User

Address = tuple[str, int]


@dataclass
class MailItem:
    folder: str                       # "inbox" or "sent"
    message: EmailMessage
    parsed: mail.IncomingEmail
    time: float = field(default_factory=time.time)
    read: bool = False
    receipt_sent: bool = False
    status: str = ""                  # sent: "sent" / "failed: ..."

    @property
    def subject(self) -> str:
        return self.parsed.subject

    @property
    def correspondent(self) -> str:
        if self.folder == "inbox":
            return self.parsed.sender_name or self.parsed.sender
        return ", ".join(self.parsed.recipients)

    def headers_text(self) -> str:
        return "\n".join(f"{name}: {value}" for name, value in self.message.items())


class EmailClient:
    def __init__(self, user: User, topology: Topology, nodes: NodeDirectory, *,
                 smtp_address: Callable[[], Address | None], send_read_receipts: bool = True) -> None:
        assert user.email, f"{user.name} has no email address"
        self.user = user
        self.topology = topology
        self.nodes = nodes
        self.name = user.name
        self.address = user.email
        self._smtp_address = smtp_address
        self.send_read_receipts = send_read_receipts
        self.inbox: list[MailItem] = []   # the newest history.KEPT
        self.sent: list[MailItem] = []
        self.listeners: list[DeviceListener] = []

    async def start(self) -> None:
        pass

    async def stop(self) -> None:
        pass

    def contacts(self) -> list[tuple[str, str]]:
        """(name, address) of the people John can write to: email, or a CPM user's address."""
        found = []
        for contact in (self.topology.user(c) for c in self.user.contacts):
            if contact.email:
                found.append((contact.name, contact.email))
            elif contact.sip and contact.sip.startswith("sip:"):
                found.append((contact.name, contact.sip[4:]))   # mary@cpm-a.lab: the IWF takes it
        return found

    # -- receiving (the mail server tells us; we read what it stored) ----------------
    def delivered(self, address: str, message_id: str, message: EmailMessage) -> None:
        if address.lower() != self.address.lower():
            return
        item = MailItem("inbox", message, mail.parse_incoming(message))
        history.keep(self.inbox, item)
        self.emit(MailReceived(item))

    async def open(self, item: MailItem) -> None:
        """Read a message; answer its read-receipt request once, if the user allows."""
        item.read = True
        if (self.send_read_receipts and item.folder == "inbox" and not item.receipt_sent
                and item.parsed.disposition_notification_to):
            mdn = mail.build_mdn(original=item.parsed, reader_address=self.address, reader_name=self.name)
            try:
                await self._submit(mdn, [item.parsed.disposition_notification_to])
            except (aiosmtplib.SMTPException, OSError) as exc:   # not sent: opening it again retries
                self.emit(ReadReceiptFailed(item, str(exc)))
                return
            item.receipt_sent = True
            self.emit(ReadReceiptSent(item))

    # -- sending ----------------------------------------------------------------------
    async def send(self, to: str, subject: str, text: str, *, reply_to: MailItem | None = None,
                   read_receipt: bool = False) -> MailItem:
        """read_receipt: ask for an MDN (Disposition-Notification-To, RFC 8098) when it is read."""
        message = EmailMessage(policy=policy.default)
        message["From"] = f"{self.name} <{self.address}>"
        message["To"] = to
        if read_receipt:
            message["Disposition-Notification-To"] = f"{self.name} <{self.address}>"
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=True)
        message["Message-ID"] = f"<{uuid.uuid4().hex}@{self.address.split('@', 1)[1]}>"
        if reply_to is not None:
            parent = reply_to.parsed.message_id
            message["In-Reply-To"] = parent
            message["References"] = " ".join(mail.trim_references([*reply_to.parsed.references, parent]))
            if reply_to.parsed.conversation_id:   # keep the CPM conversation, as a CPM-aware client would
                message["Conversation-ID"] = reply_to.parsed.conversation_id
        message.set_content(text)
        item = MailItem("sent", message, mail.parse_incoming(message))
        history.keep(self.sent, item)
        try:
            await self._submit(message, [to])
            item.status = "sent"
        except (aiosmtplib.SMTPException, OSError) as exc:
            item.status = f"failed: {exc}"
        self.emit(MailSent(item))
        return item

    async def _submit(self, message: EmailMessage, recipients: list[str]) -> None:
        address = self._smtp_address()
        if address is None:
            raise OSError("the mail server is not running")
        client = aiosmtplib.SMTP(hostname=address[0], port=address[1], timeout=30, start_tls=False)
        await client.connect()
        with self.nodes.claimed(client.get_transport_info("sockname")[:2], self.name,
                                client.get_transport_info("peername")[:2]):
            try:
                await client.send_message(message, sender=self.address, recipients=recipients)
            finally:
                try:
                    await client.quit()
                except aiosmtplib.SMTPException:
                    client.close()

    def emit(self, event: DeviceEvent) -> None:
        """Tell every listener what happened."""
        for listener in list(self.listeners):
            listener(event)


def reply_subject(subject: str) -> str:
    return subject if subject.lower().startswith("re:") else f"Re: {subject}"
