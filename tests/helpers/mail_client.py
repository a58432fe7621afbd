"""Shared by the flow tests (moved from test_email_interworking.py)."""
import mailbox
import re
import smtplib
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

from iwlab.backends.protocols import mail
from tests.helpers.waiting import wait_until

JOHN_TEL = "tel:+15550202"


def smtp(lab) -> smtplib.SMTP:
    host, port = lab.lab.endpoints()["smtp"].rsplit(":", 1)
    return smtplib.SMTP(host, int(port), timeout=10)


def john_writes(lab, text: str, *, subject="Hello", in_reply_to: str | None = None, to="mary@cpm-a.lab"):
    message = EmailMessage(policy=policy.default)
    message["From"] = "John <john@mail-b.lab>"
    message["To"] = to
    message["Subject"] = subject
    message["Message-ID"] = f"<john-{time.monotonic_ns()}@mail-b.lab>"
    if in_reply_to:
        message["In-Reply-To"] = in_reply_to
        message["References"] = in_reply_to
    message.set_content(text)
    with smtp(lab) as client:
        client.send_message(message)
    return message


def johns_maildir(lab) -> mailbox.Maildir:
    return mailbox.Maildir(Path(lab.lab.endpoints()["maildir"]) / "john@mail-b.lab", create=False)


def wait_for_mail(lab, count: int = 1, timeout: float = 10.0) -> list:
    def messages() -> list:
        try:
            return list(johns_maildir(lab))
        except mailbox.NoSuchMailboxError:
            return []
    wait_until(lambda: len(messages()) >= count, timeout, f"{count} message(s) in John's Maildir")
    return messages()


class JohnsInbox:
    """John's Maildir, read in delivery order: each call returns the next email he has not read."""

    def __init__(self, lab) -> None:
        self.lab = lab
        self.read: set[str] = set()

    def _unread(self) -> list[str]:
        try:
            return sorted((k for k in johns_maildir(self.lab).keys() if k not in self.read), key=_delivery_order)
        except mailbox.NoSuchMailboxError:
            return []

    def next(self, timeout: float = 10.0):
        wait_until(self._unread, timeout, "a new email for John")
        key = self._unread()[0]
        self.read.add(key)
        return johns_maildir(self.lab)[key]


def _delivery_order(key: str):
    # Maildir.add names files "<seconds>.M<microseconds>P<pid>Q<n>.<host>": the delivery time.
    match = re.match(r"(\d+)\.M(\d+)", key)
    return (int(match.group(1)), int(match.group(2)), key) if match else (0, 0, key)


def text_of(message) -> str:
    return mail.parse_incoming(message.as_bytes()).text
