"""A short message the SMSC holds, and the deliver_sm parameters it becomes:
those of an accepted submit_sm, or of the delivery receipt for one."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from smpplib import command as sm_command

from iwlab.backends import clock
from iwlab.backends.protocols import smpp as codec
from iwlab.backends.protocols.smpp import MessageState

# TLVs a deliver_sm carries over from the submit_sm. smpplib's str-typed TLVs
# (sub-addresses) are binary in reality and do not round-trip, so they stay out.
_SUBMIT, _DELIVER = sm_command.SubmitSM.params, sm_command.DeliverSM.params
COPY_TLVS = tuple(k for k in sm_command.SubmitSM.params_order
                  if k in codec.TLV_NAMES and k in _DELIVER and _SUBMIT[k].type is _DELIVER[k].type
                  and _SUBMIT[k].type in (int, sm_command.ostr))


@dataclass(eq=False, slots=True)
class Message:
    id: str
    owner: str                # system_id whose receiver binds get it
    owner_name: str           # its node name, for notes and events
    fields: dict[str, Any]    # deliver_sm parameters, ready for codec.make
    deadline: float           # loop time
    submitted: float          # wall time, for the receipt
    origin: str | None        # submitter's system_id (receipts go there); None for a receipt
    want_receipt: int         # registered_delivery & 3
    text_start: str           # first 20 characters, for the receipt text
    stored: bool = False      # nobody could take it when it arrived
    attempts: int = 0
    last_error: str = ""      # why the previous attempt failed, for the retry's note
    store_id: int | None = None   # its item in the lab's durable store
    restored: bool = False    # picked up again after a restart
    # Its owner (an IWF with end-to-end receipts) reports the delivery itself: no receipt of ours
    # when it takes the message; our EXPIRED if it never does (owed.py).
    receipt_by_owner: bool = False
    note: str = ""            # why it goes out, for its first deliver_sm (a relayed report says which)

    def to_store(self, now_loop: float) -> tuple[bytes, dict[str, Any]]:
        """(payload, meta) for the durable store: octet fields as hex, the deadline as wall time."""
        fields = {k: (v.hex() if isinstance(v, (bytes, bytearray)) else v) for k, v in self.fields.items()}
        octets = [k for k, v in self.fields.items() if isinstance(v, (bytes, bytearray))]
        return b"", {"id": self.id, "owner": self.owner, "owner_name": self.owner_name, "fields": fields,
                     "octets": octets, "expires": clock.wall() + (self.deadline - now_loop),
                     "submitted": self.submitted, "origin": self.origin, "want_receipt": self.want_receipt,
                     "text_start": self.text_start, "stored": self.stored,
                     "receipt_by_owner": self.receipt_by_owner, "note": self.note}

    @classmethod
    def from_store(cls, meta: dict[str, Any], store_id: int, now_loop: float) -> "Message":
        fields = {k: (bytes.fromhex(v) if k in meta["octets"] else v) for k, v in meta["fields"].items()}
        return cls(meta["id"], meta["owner"], meta["owner_name"], fields, now_loop + (meta["expires"] - clock.wall()),
                   meta["submitted"], meta["origin"], meta["want_receipt"], meta["text_start"], stored=True,
                   store_id=store_id, restored=True, receipt_by_owner=meta.get("receipt_by_owner", False),
                   note=meta.get("note", ""))


def deliver_fields(submit_sm: Any, dest: str, owed: tuple[str, int] | None = None) -> dict[str, Any]:
    """The deliver_sm parameters for an accepted submit_sm (dest: its destination digits).

    owed: (message id, registered_delivery) when the recipient is an account with end-to-end
    receipts and the submitter asked for one: the deliver_sm tells it which report it owes.
    SMPP v3.4 has no field for that in a plain deliver_sm, so the lab's SMSC uses, for such
    accounts only (both ends agree by configuration, as they agree on the receipts themselves),
    receipted_message_id for the id the submitter's submit_sm_resp gave and registered_delivery
    for what he asked (1: success and failure, 2: failure only). No expiry: the account reports
    for as long as it keeps trying (EsmeAccount.report_seconds), and validity_period stays NULL
    as SMPP v3.4 4.6.1 wants in a deliver_sm."""
    pdu = submit_sm
    fields = {
        "service_type": codec.text(pdu.service_type),
        "source_addr_ton": pdu.source_addr_ton or 0, "source_addr_npi": pdu.source_addr_npi or 0,
        "source_addr": codec.text(pdu.source_addr),
        "dest_addr_ton": pdu.dest_addr_ton or 0, "dest_addr_npi": pdu.dest_addr_npi or 0,
        "destination_addr": dest,
        # Keep UDHI / reply path; the message-type bits are the SMSC's to set (receipts).
        "esm_class": (pdu.esm_class or 0) & 0xC0,
        "protocol_id": pdu.protocol_id or 0, "priority_flag": pdu.priority_flag or 0,
        "data_coding": pdu.data_coding or 0,
        "short_message": pdu.short_message or None,
    }
    for key in COPY_TLVS:
        value = getattr(pdu, key, None)
        if value is not None:
            fields[key] = value
    if owed is not None:
        message_id, registered_delivery = owed
        fields.update(receipted_message_id=message_id, registered_delivery=registered_delivery)
    return fields


def relayed_receipt_fields(submit_sm: Any, dest: str, message_id: str, state: MessageState) -> dict[str, Any]:
    """The delivery receipt (deliver_sm, esm_class 0x04) an end-to-end account's report becomes:
    its text as the account wrote it, the id and state in their TLVs."""
    pdu = submit_sm
    return {
        "source_addr_ton": pdu.source_addr_ton or 0, "source_addr_npi": pdu.source_addr_npi or 0,
        "source_addr": codec.text(pdu.source_addr),
        "dest_addr_ton": pdu.dest_addr_ton or 0, "dest_addr_npi": pdu.dest_addr_npi or 0,
        "destination_addr": dest,
        "esm_class": codec.RECEIPT_ESM_CLASS, "data_coding": 0, "short_message": pdu.short_message,
        "receipted_message_id": message_id, "message_state": state,
    }


def receipt_fields(msg: Message, state: MessageState, error: int, now: float) -> dict[str, Any]:
    """The deliver_sm parameters of the receipt for msg, back from its recipient to its sender."""
    f = msg.fields
    text = codec.receipt_text(msg.id, state.stat, msg.submitted, now, msg.text_start,
                              err=error & 0xFFF, delivered=state == MessageState.DELIVERED)
    return {
        "source_addr_ton": f["dest_addr_ton"], "source_addr_npi": f["dest_addr_npi"],
        "source_addr": f["destination_addr"],
        "dest_addr_ton": f["source_addr_ton"], "dest_addr_npi": f["source_addr_npi"],
        "destination_addr": f["source_addr"],
        "esm_class": codec.RECEIPT_ESM_CLASS, "data_coding": 0,
        "short_message": text.encode("ascii", "replace"),
        "receipted_message_id": msg.id, "message_state": state,
    }
