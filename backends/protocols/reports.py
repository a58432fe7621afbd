"""One mapping of delivery and read reports between CPM, SMS and email (CPM-IOP-xxx-7).

The IWF converts reports both ways, and every converted report says on the ladder which row of
this table it followed (note()); the README shows the same table (markdown()). Sans-I/O: data
and words only.

- IMDN (RFC 5438) is CPM's report, read by (kind, status): delivery `delivered` / `failed`,
  display `displayed`. `forbidden` (the recipient's policy refuses the notification) and `error`
  (it could not be processed) say nothing of what became of the message: no report is made of
  them. Any other pair (a processing notification, an unknown status) is ignored.
- An SMS status report (SMPP v3.4 deliver_sm, esm_class 0x04) says `message_state` and the
  de-facto `stat:` word: DELIVRD, UNDELIV, EXPIRED ...
- Email has the DSN (RFC 3464, multipart/report; report-type=delivery-status) for delivery and
  the MDN (RFC 8098, report-type=disposition-notification) for reading.
"""
from __future__ import annotations

from dataclasses import dataclass

from iwlab.backends.protocols.smpp import MessageState


@dataclass(frozen=True)
class ReportRow:
    imdn: str          # the IMDN status, or what stands in for one
    sms: str           # the SMS status report
    email: str         # the email report
    when: str          # what makes the IWF send it


ROWS = (
    ReportRow("delivered", "DELIVRD (message_state 2)", "CPM -> email: the mail stored in the Maildir; email -> CPM: "
              "none (a DSN on success needs NOTIFY=SUCCESS, which the lab's SMTP does not offer)",
              "the CPM recipient's phone took the message / the SMS reached the handset / the mail is in the Maildir"),
    ReportRow("displayed", "none: SMS cannot report reading (a display request is not answered)",
              "MDN disposition: displayed (RFC 8098), if the mail asked with Disposition-Notification-To",
              "the CPM recipient read it / the mail reader answered the MDN request"),
    ReportRow("failed", "UNDELIV (message_state 5); an SMSC's EXPIRED, DELETED, REJECTD -> "
              "IMDN failed", "DSN Action: failed (RFC 3464)",
              "the CPM side refused it or the recipient's phone reported failure / the SMSC gave up / a bounce"),
    ReportRow("forbidden, error (either kind)", "none: the report is no longer owed (the SMSC's EXPIRED "
              "follows at the end of its wait)", "none: a display forbidden ends the MDN request, "
              "a delivery one leaves it waiting",
              "the recipient's policy refused the notification, or it could not be processed (RFC 5438)"),
    ReportRow("none came in time", "EXPIRED (message_state 3): the IWF's; the SMSC's own if the IWF never reports",
              "none (an MDN is asked for, never promised: RFC 8098)",
              "the IWF's message validity ran out (as long as the CPM side keeps trying) with no IMDN"),
)

# A display notification says it was delivered too (RFC 5438 5.1): SMS can say only that.
_SMS_STATE = {("delivery", "delivered"): MessageState.DELIVERED, ("delivery", "failed"): MessageState.UNDELIVERABLE,
              ("display", "displayed"): MessageState.DELIVERED}
NO_REPORT = frozenset({"forbidden", "error"})   # statuses that end a report request without a report
# The IMDN status a legacy report follows, by its word on the wire (stat: or the MDN disposition).
IMDN_FOR = {"DELIVRD": "delivered", "UNDELIV": "failed", "DISPLAYED": "displayed"}


def sms_state_for_imdn(kind: str, status: str) -> MessageState | None:
    """The SMS status report an IMDN (kind, status) becomes; None: none (see NO_REPORT), or an
    IMDN that says nothing the handset asked about (a processing notification, an unknown status)."""
    return _SMS_STATE.get((kind, status))


def imdn_for_sms_state(state: MessageState) -> str:
    """The IMDN side of the row an SMS status report's state belongs to."""
    if state == MessageState.DELIVERED:
        return "delivered"
    return "none came in time" if state == MessageState.EXPIRED else "failed"


def note(imdn: str, legacy: str) -> str:
    """The inspector's line for a converted report: which row of the table it followed."""
    return f"report mapping: IMDN {imdn} <-> {legacy} (README, Reports both ways)"


def markdown() -> str:
    """The table as the README shows it."""
    lines = ["| IMDN (CPM) | SMS status report (SMPP deliver_sm, esm_class 0x04) | email | sent when |",
             "|---|---|---|---|"]
    lines += [f"| {row.imdn} | {row.sms} | {row.email} | {row.when} |" for row in ROWS]
    return "\n".join(lines)
