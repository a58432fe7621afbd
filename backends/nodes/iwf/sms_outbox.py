"""The SMS leg's ordered outboxes: CPM messages leave for the SMSC in the order they came in.

Ordering (seed 5.8.5 step 6): messages from one sender to one recipient are submitted one part
at a time, each part only after the previous one was accepted; a throttled or lost part is
resent before anything behind it, so neither throttling nor retries reorder a conversation.
Delivery is at least once: a part whose submit_sm_resp was lost with the connection is resent,
and the SMSC may then hold it twice.

Durability: every message is in the lab's store (backends/store.py) before the IWF answers
202 for it, with how far it got (parts accepted, their SMSC ids, the concatenation reference);
it leaves the store when the SMSC has all of it (or, when a receipt was asked for, when the
receipt is in). After a crash the outbox picks up where each conversation was: at most the
part in flight is sent twice.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable

import smpplib.consts as c

from iwlab.backends.protocols import smpp, smstext
from iwlab.backends.protocols.smpp import text as _text
from iwlab.backends.store import DurableQueue, StoredItem
from iwlab.backends.transports.smpp_esme import status_name

log = logging.getLogger(__name__)
RETRY_STATUSES = {c.SMPP_ESME_RTHROTTLED, c.SMPP_ESME_RMSGQFUL}
TON_INTERNATIONAL = 1
NPI_E164 = 1


@dataclass
class OutboundSms:
    """One CPM message (or a text the IWF writes itself) on its way to a handset."""
    source: str            # sender's MSISDN digits
    dest: str              # recipient's MSISDN digits
    text: str
    imdn_message_id: str
    sender_uri: str
    recipient_uri: str
    disposition: tuple[str, ...]             # imdn.Disposition-Notification asked for
    datetime: str                            # the CPIM DateTime, echoed in the IMDN
    conversation_id: str = ""                # the IMDN travels in the same conversation
    smsc_ids: list[str] = field(default_factory=list)
    parts: int = 0
    delivered_parts: set[int] = field(default_factory=set)
    failed: bool = False
    ref: int | None = None                   # the concatenation reference, kept across a restart
    store_id: int | None = None              # its item in the durable store
    restored: bool = False                   # picked up again after a restart
    # A status report the IWF owes (owed_reports.py): the SMSC message id it reports on. It goes
    # as one submit_sm, esm_class 0x08, its text the receipt text (smsc/session.py says why).
    reports_on: str = ""

    @property
    def wants_receipt(self) -> bool:
        return any(d in self.disposition for d in ("positive-delivery", "negative-delivery"))

    @property
    def key(self) -> str:
        return f"{self.source}>{self.dest}"

    def meta(self) -> dict[str, Any]:
        """What the store keeps beside the text."""
        return {"source": self.source, "dest": self.dest, "imdn_message_id": self.imdn_message_id,
                "sender_uri": self.sender_uri, "recipient_uri": self.recipient_uri,
                "disposition": list(self.disposition), "datetime": self.datetime,
                "conversation_id": self.conversation_id, "smsc_ids": self.smsc_ids, "parts": self.parts,
                "delivered_parts": sorted(self.delivered_parts), "ref": self.ref, "reports_on": self.reports_on}

    @classmethod
    def from_store(cls, item: StoredItem) -> "OutboundSms":
        m = item.meta
        return cls(source=m["source"], dest=m["dest"], text=item.payload.decode("utf-8"),
                   imdn_message_id=m["imdn_message_id"], sender_uri=m["sender_uri"],
                   recipient_uri=m["recipient_uri"], disposition=tuple(m["disposition"]), datetime=m["datetime"],
                   conversation_id=m["conversation_id"], smsc_ids=list(m["smsc_ids"]), parts=m["parts"],
                   delivered_parts=set(m["delivered_parts"]), ref=m["ref"], store_id=item.id, restored=True,
                   reports_on=m.get("reports_on", ""))


class PermanentFailure(Exception):
    """The SMSC (or the encoder) will never take this message: it fails, the queue goes on."""


class _Conversation:
    """The ordered outbox of one (sender, recipient) pair and its worker."""

    def __init__(self) -> None:
        self.queue: deque[OutboundSms] = deque()
        self.worker: asyncio.Task | None = None


class SmsOutbox:
    def __init__(self, *, submit: Callable[..., Awaitable[Any]],
                 on_accepted: Callable[[OutboundSms, str], None],
                 on_failed: Callable[[OutboundSms, str], None], store: DurableQueue) -> None:
        """submit: one submit_sm (Esme.submit); on_accepted(sms, smsc message id): a part that
        wants a receipt was taken; on_failed(sms, why): the message will not be sent;
        store: where messages wait until the SMSC has them."""
        self._store = store
        self._submit = submit
        self._on_accepted = on_accepted
        self._on_failed = on_failed
        self._conversations: dict[tuple[str, str], _Conversation] = {}
        self._refs = itertools.cycle(range(1, 256))
        self.submitted = 0          # submit_sm accepted by the SMSC (parts)
        self.retries = 0            # resends after throttling or a lost answer
        self.ordering_enabled = True   # a demo/test switch: False lets conversations race (breaks 5.8.5 step 6)
        # With ordering off, a throttled part waits this long, as a windowed gateway's requeue would,
        # while the parts behind it go on: long enough that the overtaking is sure to show.
        self.unordered_retry_delay = 1.0

    def stop(self) -> None:
        for conversation in self._conversations.values():
            if conversation.worker:
                conversation.worker.cancel()

    def pending(self) -> int:
        return sum(len(conv.queue) for conv in self._conversations.values())

    def queued(self) -> list[OutboundSms]:
        """What waits (or is being submitted), conversation by conversation, oldest first."""
        return [sms for conv in self._conversations.values() for sms in conv.queue]

    def enqueue(self, sms: OutboundSms) -> None:
        """Keep the message (durably, before the caller acknowledges it) and queue it."""
        if sms.store_id is None:
            sms.store_id = self._store.put(sms.key, sms.text.encode("utf-8"), sms.meta(),
                                           message_id=sms.imdn_message_id and f"{sms.sender_uri}|{sms.imdn_message_id}")
        self._queue(sms)

    def restore(self) -> list[OutboundSms]:
        """After a restart: every message the store holds goes back in its conversation, in order.
        Returns those that were wholly submitted and wait for their receipt (the leg re-learns them)."""
        waiting_receipt = []
        for item in self._store.items():
            sms = OutboundSms.from_store(item)
            if sms.parts and len(sms.smsc_ids) == sms.parts:
                waiting_receipt.append(sms)
            else:
                self._queue(sms)
        return waiting_receipt

    def seen(self, sender_uri: str, imdn_message_id: str) -> bool:
        """Was this CPM message accepted before (a resend after a lost 202, or after a restart)?"""
        return bool(imdn_message_id) and self._store.seen(f"{sender_uri}|{imdn_message_id}")

    def done(self, sms: OutboundSms) -> None:
        """Nothing more is owed for it (submitted; its receipt in, if one was asked for)."""
        if sms.store_id is not None:
            self._store.remove(sms.store_id)
            sms.store_id = None

    def _queue(self, sms: OutboundSms) -> None:
        key = (sms.source, sms.dest) if self.ordering_enabled else (sms.source, f"{sms.dest}#{id(sms)}")
        conversation = self._conversations.get(key)
        if conversation is None:
            conversation = self._conversations[key] = _Conversation()
        conversation.queue.append(sms)
        if conversation.worker is None or conversation.worker.done():
            conversation.worker = asyncio.create_task(self._drain(key, conversation),
                                                      name=f"IWF outbox {sms.source}->{sms.dest}")

    async def _drain(self, key: tuple[str, str], conversation: _Conversation) -> None:
        while conversation.queue:
            sms = conversation.queue[0]
            try:
                await self._submit_message(sms)
            except PermanentFailure as exc:
                self.done(sms)
                self._on_failed(sms, f"the SMSC refused it: {exc}")
            except Exception as exc:   # noqa: BLE001 - a bug must not strand the conversation
                log.exception("IWF outbox %s -> %s", sms.source, sms.dest)
                self.done(sms)
                self._on_failed(sms, f"internal error: {exc}")
            else:
                if not sms.wants_receipt:
                    self.done(sms)
            conversation.queue.popleft()
        if not self.ordering_enabled:
            self._conversations.pop(key, None)

    async def _submit_message(self, sms: OutboundSms) -> None:
        if sms.reports_on:
            sms.parts = 1
            await self._submit_part(dict(
                source_addr_ton=TON_INTERNATIONAL, source_addr_npi=NPI_E164, source_addr=sms.source,
                dest_addr_ton=TON_INTERNATIONAL, dest_addr_npi=NPI_E164, destination_addr=sms.dest,
                esm_class=smpp.ACK_ESM_CLASS, data_coding=0, short_message=sms.text.encode("ascii", "replace")))
            self.submitted += 1
            return
        if sms.ref is None:
            sms.ref = next(self._refs)
        try:
            parts = smstext.encode(sms.text, ref=sms.ref)
        except ValueError as exc:
            raise PermanentFailure(str(exc)) from exc
        sms.parts = len(parts)
        for part in parts[len(sms.smsc_ids):]:    # after a restart: from the first part not yet taken
            params = dict(
                source_addr_ton=TON_INTERNATIONAL, source_addr_npi=NPI_E164, source_addr=sms.source,
                dest_addr_ton=TON_INTERNATIONAL, dest_addr_npi=NPI_E164, destination_addr=sms.dest,
                esm_class=0x40 if part.esm_class_udhi else 0x00,
                data_coding=part.data_coding, short_message=part.short_message(),
                registered_delivery=1 if sms.wants_receipt else 0,
            )
            resp = await self._submit_part(params)
            self.submitted += 1
            message_id = _text(getattr(resp, "message_id", b""))
            sms.smsc_ids.append(message_id)
            if sms.store_id is not None:
                self._store.update_meta(sms.store_id, sms.meta())   # how far it got, for a restart
            if sms.wants_receipt:
                self._on_accepted(sms, message_id)

    async def _submit_part(self, params: dict[str, Any]) -> Any:
        """One part, resent until the SMSC takes it: nothing behind it goes first."""
        delay = 0.005
        while True:
            try:
                resp = await self._submit(**params)
            except ConnectionError:
                # Sent but unanswered, or not sent: resend this same part before anything else.
                self.retries += 1
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if resp.status == c.SMPP_ESME_ROK:
                return resp
            if resp.status in RETRY_STATUSES:
                self.retries += 1
                # (With ordering off, a naive gateway waits longer and lets later messages pass.)
                await asyncio.sleep(delay if self.ordering_enabled else self.unordered_retry_delay)
                delay = min(delay * 2, 1.0)
                continue
            raise PermanentFailure(f"SMSC refused part: {status_name(resp.status)}")
