"""The SMSC simulator: a real SMPP v3.4 server on asyncio.

Handsets and the IWF are ESMEs that bind here; a handset binds with its MSISDN
digits as system_id (so any real SMPP client can be Peter's handset). Every
accepted submit_sm gets a fresh hex message id, is routed (account routes
first, then handsets) into the destination owner's mailbox, and is delivered
as deliver_sm to one of the owner's receiver/transceiver binds: one message
in flight per owner, in submission order, kept until a deliver_sm_resp with
ESME_ROK (store-and-forward; errors and dead sessions mean "retry later").
Delivery receipts travel back to the submitter the same way.

- smsc.py: `Smsc` (lifecycle, accounts and binds, routes, events), `EsmeAccount`
- delivery.py: `Delivery` (mailboxes, retries, expiry, receipts, query_sm states)
- session.py: `SmppSession` (one connection: framing, trace, a handler per command)
- message.py: `Message` (a held SMS) and the deliver_sm fields it becomes
- events.py: `Events` (the lab's listeners)
"""
from iwlab.backends.nodes.smsc.smsc import EsmeAccount, Smsc

__all__ = ["EsmeAccount", "Smsc"]
