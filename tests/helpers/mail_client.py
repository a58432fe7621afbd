"""Shared by the flow tests (moved from test_email_interworking.py)."""
import mailbox
import smtplib
import time
from email import policy
from email.message import EmailMessage
from pathlib import Path

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
