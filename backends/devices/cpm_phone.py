"""A simulated CPM phone: a SIP user agent over TCP to its home CPM server.

It registers (with the CPM feature tag when its device is CPM-capable),
sends pager-mode MESSAGEs with CPIM bodies to people from its address book,
receives MESSAGEs, answers delivery-notification requests, and follows the
IMDNs that come back to update each sent message's tick.

A phone is also an SMS handset (attach_sms_side: an ESME bound as its number). What comes by
SMS joins the conversation with that person, marked as SMS (ChatMessage.via); while it roams
where CPM is not supported, what the user sends goes by SMS too, to the number the person's
last SMS came from (an IWF's pool number names the thread), so a reply lands in the sender's
thread. The user still picks a person, never a technology.
"""
from __future__ import annotations

import asyncio
import itertools
import logging
import re
import ssl
import time
import uuid
from dataclasses import dataclass, field
from typing import Callable

from iwlab.backends.devices import history
from iwlab.backends.devices.cpm_sessions import CpmSessions
from iwlab.backends.devices.events import (
    ConditionsChanged,
    DeviceEvent,
    DeviceListener,
    MessageAdded,
    MessageStatusChanged,
    RegistrationChanged,
    SmsReceived,
)
from iwlab.backends.devices.sms_handset import SmsHandset
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.cpim import (
    ACCEPTED_TYPES,
    CPM_MSG_ICSI,
    CPM_MSG_SERVICE,
    MMTEL_ICSI,
    CpimError,
    CpimMessage,
    Imdn,
    UnsupportedContent,
    imdn_message,
    message_content,
    parse_imdn_xml,
    uri_of,
)
from iwlab.backends.protocols import revoke
from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
)
from iwlab.backends.topology import Topology, User
from iwlab.backends.trace import Trace
from iwlab.backends.transports.sip import (
    SipConnection,
    SipConnectionClosed,
    open_connection,
)
from iwlab.backends.transports.sip_udp import open_udp_flow

log = logging.getLogger(__name__)
Address = tuple[str, int]
STATUS_ORDER = ("sending", "sent", "delivered", "displayed")


@dataclass
class ChatMessage:
    direction: str                 # "out" or "in"
    peer_uri: str
    peer_name: str
    text: str
    imdn_message_id: str
    conversation_id: str
    contribution_id: str
    in_reply_to: str = ""          # InReplyTo-Contribution-ID
    cpim_datetime: str = ""        # the sender's CPIM DateTime, echoed in our IMDN (RFC 5438 7.2.1.1)
    time: float = field(default_factory=time.time)
    status: str = "sending"        # sending / sent / delivered / displayed / failed / received
    status_detail: str = ""
    via: str = "CPM"               # "SMS": it went by the phone's SMS side
    disposition: tuple[str, ...] = ()   # in: the notifications its sender asked for
    read: bool = False             # in: the user has seen it (a display notification went, if asked)


class CpmDevice:
    """A simulated CPM phone: registration over UDP/TCP/TLS, CPIM messages with IMDNs, OPTIONS
    reachability, and its SMS side when the phone is also a handset. Sessions are cpm_sessions's;
    its size is one user agent's message handling, kept together so its model stays consistent."""

    def __init__(self, user: User, topology: Topology, nodes: NodeDirectory, *,
                 server_address: Callable[[str], Address | None], register_expires: int = 600,
                 sessions_trace: Trace | None = None, sessions_host: str | None = None,
                 tls_context: Callable[[], ssl.SSLContext | None] = lambda: None) -> None:
        """server_address(transport): the home CPM server's udp/tcp/tls listener, once it runs;
        sessions_host: given, the phone also does chat sessions (its MSRP listener binds there and
        records into sessions_trace); tls_context: what the phone trusts for SIP over TLS."""
        self._tls_context = tls_context
        self.user = user
        self.topology = topology
        self.nodes = nodes
        self.name = user.name
        self.uri = user.cpm_uri or ""
        self.domain = topology.operator(user.operator).cpm_domain
        self._server_address = server_address
        self.register_expires = register_expires
        self.connection: SipConnection | None = None
        self.registered = False
        self.messages: list[ChatMessage] = []   # the newest history.KEPT
        self._by_imdn_id: dict[str, ChatMessage] = {}
        self._conversation_with: dict[str, str] = {}   # peer uri -> Conversation-ID
        self._cseq = itertools.count(1)
        self._register_call_id = sip.new_call_id(self.domain)
        self.listeners: list[DeviceListener] = []
        self.sessions = CpmSessions(self, trace=sessions_trace, host=sessions_host) if sessions_host else None
        self._connecting = asyncio.Lock()
        self._refresh: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self.accepting = True     # False: the user declines messages (the phone answers 603)
        self.answering = True     # False (a condition): the phone reads requests and answers none, as a hung app
        self.confirming = True    # False: it takes messages (200) but never says delivered (RCC.07 fallback)
        self._confirmed: set[str] = set()   # imdn.Message-IDs we said "delivered" for: too late to revoke
        self.sms_side: SmsHandset | None = None
        self._peer_of_number: Callable[[str], User | None] = topology.user_by_number
        self._sms_number_of: dict[str, str] = {}   # peer uri -> the number their last SMS came from

    # -- the phone's SMS side ------------------------------------------------------
    def attach_sms_side(self, handset: SmsHandset, peer_of_number: Callable[[str], User | None] | None = None) -> None:
        """The same phone as an SMS handset; peer_of_number: who a number is (an IWF's pool
        number stands for the person whose message came from it)."""
        self.sms_side = handset
        if peer_of_number is not None:
            self._peer_of_number = peer_of_number
        handset.listeners.append(self._sms_event)

    def _sms_event(self, event: DeviceEvent) -> None:
        if not isinstance(event, SmsReceived):
            return
        sms = event.sms
        peer = self._peer_of_number(sms.number)
        peer_uri = (peer.cpm_uri if peer else None) or f"tel:{sms.number}"
        self._sms_number_of[peer_uri] = sms.number
        text = sms.text if sms.complete else f"{sms.text} [incomplete]"
        self._track(ChatMessage("in", peer_uri, peer.name if peer else sms.number, text, f"sms-{uuid.uuid4().hex}",
                                self.conversation_with(peer_uri), "", status="received",
                                status_detail=f"SMS from {sms.number}", via="SMS"))

    async def _send_sms(self, peer: User | None, peer_uri: str, text: str) -> ChatMessage:
        assert self.sms_side is not None
        number = self._sms_number_of.get(peer_uri) or (f"+{peer.msisdn}" if peer and peer.msisdn else "")
        msg = ChatMessage("out", peer_uri, peer.name if peer else peer_uri, text, f"sms-{uuid.uuid4().hex}",
                          self.conversation_with(peer_uri), "", via="SMS")
        self._track(msg)
        if not number:
            self._set_status(msg, "failed", "no number to send an SMS to")
            return msg
        sent = await self.sms_side.send_sms(number, text)
        if sent.status == "sent":
            self._set_status(msg, "sent", f"SMS to {number}")
        else:
            self._set_status(msg, "failed", f"SMS to {number}: {sent.status}")
        return msg

    # -- connection and registration ---------------------------------------------
    async def start(self) -> None:
        if self.user.cpm_registered:
            await self.register()

    async def stop(self) -> None:
        for task in [self._refresh, *self._tasks]:
            if task:
                task.cancel()
        if self.sessions is not None:
            await self.sessions.stop()
        if self.connection:
            self.connection.close()
            await self.connection.closed
            self.connection = None
        self.registered = False

    async def connect(self) -> SipConnection:
        """The flow to the home CPM server, opened if need be; the phone's sessions share it."""
        async with self._connecting:   # two sends at once must share one flow, in order
            if self.connection is None or not self.connection.is_open:
                transport = self.user.sip_transport
                address = self._server_address(transport)
                if address is None:
                    raise OSError(f"{self.domain}'s CPM server is not running ({transport})")
                host, port = address
                if transport == "udp":
                    self.connection = await open_udp_flow(host, port, self._on_sip, local_name=self.name,
                                                          nodes=self.nodes, on_close=self._closed)
                else:
                    context = self._tls_context() if transport == "tls" else None
                    if transport == "tls" and context is None:
                        raise OSError("the lab has no TLS (its topology turns it off)")
                    self.connection = await open_connection(host, port, self._on_sip, local_name=self.name,
                                                            nodes=self.nodes, on_close=self._closed, tls=context,
                                                            server_hostname=self.domain)
            return self.connection

    def _closed(self, conn: SipConnection) -> None:
        if conn is self.connection and self.registered:
            self.registered = False
            self.emit(RegistrationChanged(False))

    async def register(self, expires: int | None = None) -> SipResponse:
        conn = await self.connect()
        expires = self.register_expires if expires is None else expires
        host, port = conn.local_address
        contact = f"<sip:{self.user.id}@{sip.hostport(host, port)};transport={conn.transport_name}>"
        # A device that is not CPM-capable still says what it is (an IMS voice phone): no tag at
        # all is how a plain softphone registers, which the topology's policy may count as CPM.
        contact += f';+g.3gpp.icsi-ref="{CPM_MSG_ICSI if self.user.cpm_capable else MMTEL_ICSI}"'
        req = self.new_request("REGISTER", f"sip:{self.domain}", to=self.address_of_record,
                                call_id=self._register_call_id)
        req.headers.add("Contact", contact)
        req.headers.add("Expires", str(expires))
        response = await conn.request(req)
        now_registered = response.status == 200 and expires > 0
        if now_registered != self.registered:
            self.registered = now_registered
            self.emit(RegistrationChanged(now_registered))
        if self._refresh:
            self._refresh.cancel()
            self._refresh = None
        if now_registered:   # re-REGISTER before the registrar forgets us
            granted = _granted_expires(response, expires)
            self._refresh = asyncio.create_task(self._refresh_after(granted * 0.8), name=f"{self.name} re-REGISTER")
        return response

    async def _refresh_after(self, delay: float) -> None:
        await asyncio.sleep(delay)
        self._refresh = None
        try:
            await self.register()
        except (OSError, SipConnectionClosed):
            log.warning("%s could not refresh its registration", self.name)

    @property
    def address_of_record(self) -> str:
        """What REGISTER names: a SIP URI (RFC 3261 10.2), also for a user known by number."""
        if self.uri.startswith("tel:"):
            return f"sip:{self.uri[4:]}@{self.domain};user=phone"
        return self.uri

    async def deregister(self) -> SipResponse:
        return await self.register(expires=0)

    async def set_state(self, *, registered: bool | None = None, cpm_capable: bool | None = None,
                        roaming_without_cpm: bool | None = None, sip_transport: str | None = None,
                        accepting: bool | None = None, answering: bool | None = None,
                        confirming: bool | None = None) -> None:
        """Change the device's conditions as a trainer would (ARCHITECTURE §2); a new transport
        means a new flow to the server, and registering again over it; accepting=False: the user
        declines incoming messages (a blocked or full phone answers 603); answering=False: it answers
        nothing at all (the server's transaction timer answers the sender 408); confirming=False: it
        sends no delivery notification (an app killed after the 200: its server will revoke and fall back)."""
        if accepting is not None:
            self.accepting = accepting
        if answering is not None:
            self.answering = answering
        if confirming is not None:
            self.confirming = confirming
        was_registered = self.registered
        if sip_transport is not None and sip_transport != self.user.sip_transport:
            self.user.sip_transport = sip_transport
            if self.connection is not None:
                self.connection.close()
                await self.connection.closed
                self.connection = None
        if cpm_capable is not None:
            self.user.cpm_capable = cpm_capable
        if roaming_without_cpm is not None:
            self.user.roaming_without_cpm = roaming_without_cpm
        want = was_registered if registered is None else registered
        if self.user.roaming_without_cpm:
            want = False   # a network without CPM offers no CPM registration
        self.user.cpm_registered = want
        if want:
            await self.register()   # again, so the Contact's feature tags say what the device is now
        elif self.registered:
            await self.deregister()
        self.emit(ConditionsChanged(self.user))

    # -- sending ------------------------------------------------------------------
    async def reachability(self, peer: User) -> str:
        """How a message to `peer` would travel, as the network says before one is sent (an
        OPTIONS to the peer, answered by their home server): "CPM", or "not CPM" (then the
        network picks their legacy service). Shown beside the contact; never a choice to make."""
        conn = await self.connect()
        uri = peer.cpm_uri or ""
        request = self.new_request("OPTIONS", uri, to=uri)
        request.headers.add("Accept", "message/cpim, text/plain")
        response = await conn.request(request)
        if response.status != 200:
            return f"unknown ({response.status} {response.reason})"
        return "CPM" if "oma.cpm" in (response.headers.get("Contact") or "") else "not CPM"

    def contacts(self) -> list[User]:
        return [self.topology.user(contact) for contact in self.user.contacts]

    async def send_message(self, to: User | str, text: str, *, in_reply_to: ChatMessage | None = None,
                           content_type: str | None = None, body: bytes | None = None) -> ChatMessage:
        """Send to a person (or a URI). The device never picks a technology (CPM-IOP-003).
        content_type/body: a payload other than text (a picture ...); `text` is what the phone shows."""
        peer_uri = to.cpm_uri if isinstance(to, User) else to
        peer = to if isinstance(to, User) else self.topology.user_by_uri(to)
        assert peer_uri, "the recipient has no identity"
        if self.sms_side is not None and self.user.roaming_without_cpm:
            return await self._send_sms(peer, peer_uri, text)    # no CPM where she is: her phone texts
        conversation_id = in_reply_to.conversation_id if in_reply_to else self.conversation_with(peer_uri)
        cpim = CpimMessage(sender=f'"{self.name}" <{self.uri}>', recipient=f"<{peer_uri}>",
                           body=text.encode("utf-8") if body is None else body)
        if content_type:
            cpim.content_type = content_type
        msg = ChatMessage("out", peer_uri, peer.name if peer else peer_uri, text, cpim.message_id,
                          conversation_id, uuid.uuid4().hex,
                          in_reply_to=in_reply_to.contribution_id if in_reply_to else "")
        self._track(msg)
        try:
            conn = await self.connect()
        except OSError as exc:
            self._set_status(msg, "failed", f"not sent: {exc}")
            return msg
        req = self.new_request("MESSAGE", peer_uri, to=peer_uri)
        req.headers.add("P-Preferred-Service", CPM_MSG_SERVICE)
        req.headers.add("Conversation-ID", msg.conversation_id)
        req.headers.add("Contribution-ID", msg.contribution_id)
        if msg.in_reply_to:
            req.headers.add("InReplyTo-Contribution-ID", msg.in_reply_to)
        req.headers.add("Content-Type", "message/cpim")
        req.body = cpim.to_bytes()
        try:
            response = await conn.request(req)
        except SipConnectionClosed as exc:
            self._set_status(msg, "failed", f"not sent: {exc}")
            return msg
        if 200 <= response.status < 300:
            self._set_status(msg, "sent", f"{response.status} {response.reason}")
        else:
            self._set_status(msg, "failed", f"{response.status} {response.reason}")
        return msg

    def conversation_with(self, peer_uri: str) -> str:
        """The Conversation-ID of this phone's conversation with a peer (a new one the first time):
        messages and sessions with the same person stay in one conversation."""
        return self._conversation_with.setdefault(peer_uri, uuid.uuid4().hex)

    def new_request(self, method: str, uri: str, *, to: str, call_id: str | None = None) -> SipRequest:
        """A request from this phone (its From, a fresh tag, its CSeq), for messages and sessions alike."""
        via = self.connection.local_address if self.connection else ("127.0.0.1", 0)
        return sip.make_request(method, uri, via=via, from_=f'"{self.name}" <{self.uri}>;tag={sip.new_tag()}',
                                to=f"<{to}>", call_id=call_id or sip.new_call_id(self.domain),
                                cseq=next(self._cseq))

    # -- receiving ----------------------------------------------------------------
    def _on_sip(self, conn: SipConnection, message: SipRequest | SipResponse | SipParseError) -> None:
        if not isinstance(message, SipRequest) or not self.answering:
            return
        if message.method in ("INVITE", "ACK", "BYE", "CANCEL") and self.sessions is not None:
            self.sessions.on_request(conn, message)     # sessions: backends/cpm_sessions.py
            return
        if message.method != "MESSAGE":
            if message.method != "ACK":
                conn.send(make_response(message, 501, to_tag=sip.new_tag()))
            return
        try:
            cpim = message_content(message.headers.get("Content-Type"), message.body,
                                   sender=message.headers.get("From") or "", recipient=message.headers.get("To") or "")
        except UnsupportedContent as exc:
            refusal = make_response(message, 415, "Unsupported Media Type", to_tag=sip.new_tag())
            refusal.headers.add("Accept", ", ".join(ACCEPTED_TYPES))
            conn.send(refusal, note=str(exc))
            return
        except CpimError as exc:
            conn.send(make_response(message, 400, f"Bad CPIM: {exc}"[:80], to_tag=sip.new_tag()))
            return
        if not self.accepting and not cpim.is_imdn:
            conn.send(make_response(message, 603, "Decline", to_tag=sip.new_tag()))
            return
        conn.send(make_response(message, 200, to_tag=sip.new_tag()))
        if cpim.is_imdn:
            self._imdn_received(cpim)
            return
        if revoke.is_revoke(cpim.content_type):
            self._revoke_received(cpim)
            return
        sender_uri = uri_of(cpim.sender)
        sender = self.topology.user_by_uri(sender_uri)
        msg = ChatMessage("in", sender_uri, sender.name if sender else sender_uri, cpim.text, cpim.message_id,
                          message.headers.get("Conversation-ID") or uuid.uuid4().hex,
                          message.headers.get("Contribution-ID") or "",
                          in_reply_to=message.headers.get("InReplyTo-Contribution-ID") or "",
                          status="received", cpim_datetime=cpim.datetime, disposition=cpim.disposition)
        self._conversation_with.setdefault(sender_uri, msg.conversation_id)
        self._track(msg)
        if "positive-delivery" in cpim.disposition and self.confirming:
            self._confirmed.add(msg.imdn_message_id)
            self._spawn(self._send_imdn(msg, "delivered"))

    def _spawn(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _revoke_received(self, cpim: CpimMessage) -> None:
        """RCC.07: the server takes a message back; it is given back unless we said delivered already.
        One we do not hold (refused, or never here) cannot be given back: "failed"."""
        try:
            request = revoke.parse_revoke(cpim.body)
        except revoke.RevokeError:
            return
        if not isinstance(request, revoke.RevokeRequest):
            return
        msg = self._by_imdn_id.get(request.message_id)
        given_back = msg is not None and msg.direction == "in" and request.message_id not in self._confirmed
        if given_back and msg is not None:
            msg.status, msg.status_detail = "revoked", "taken back by the server: it comes by SMS"
            self.emit(MessageStatusChanged(msg))
        answer = revoke.RevokeResponse(request.message_id, "success" if given_back else "failed")
        self._spawn(self._send_revoke_response(answer, uri_of(cpim.sender)))

    async def _send_revoke_response(self, answer: revoke.RevokeResponse, to: str) -> None:
        envelope = revoke.revoke_message(answer, sender=f"<{self.uri}>", recipient=f"<{to}>")
        try:
            conn = await self.connect()
            req = self.new_request("MESSAGE", to, to=to)
            req.headers.add("Content-Type", "message/cpim")
            req.body = envelope.to_bytes()
            await conn.request(req)
        except (OSError, SipConnectionClosed):
            pass

    async def read(self, msg: ChatMessage) -> None:
        """The user has seen an incoming message: a display notification goes, if one was asked for."""
        if msg.direction != "in" or msg.read:
            return
        msg.read = True
        if "display" in msg.disposition:
            await self._send_imdn(msg, "displayed")

    def _imdn_received(self, cpim: CpimMessage) -> None:
        try:
            imdn = parse_imdn_xml(cpim.body)
        except CpimError:
            return
        msg = self._by_imdn_id.get(imdn.message_id)
        if msg is None:
            return
        status = imdn.status if imdn.status in ("delivered", "displayed") else "failed"
        self._set_status(msg, status, f"IMDN {imdn.kind}: {imdn.status}")

    async def _send_imdn(self, msg: ChatMessage, status: str) -> None:
        kind = "display" if status == "displayed" else "delivery"
        envelope = imdn_message(Imdn(msg.imdn_message_id, kind, status, msg.cpim_datetime or msg_time(msg),
                                     self.uri),
                                sender=f"<{self.uri}>", recipient=f"<{msg.peer_uri}>")
        try:
            conn = await self.connect()
            req = self.new_request("MESSAGE", msg.peer_uri, to=msg.peer_uri)
            req.headers.add("Conversation-ID", msg.conversation_id)
            req.headers.add("Content-Type", "message/cpim")
            req.body = envelope.to_bytes()
            await conn.request(req)
        except (OSError, SipConnectionClosed):
            pass

    # -- the model ----------------------------------------------------------------
    def _track(self, msg: ChatMessage) -> None:
        forgotten = history.keep(self.messages, msg)
        if forgotten is not None:   # a notification for it now finds nothing to tick
            if self._by_imdn_id.get(forgotten.imdn_message_id) is forgotten:   # (not a newer copy of it)
                del self._by_imdn_id[forgotten.imdn_message_id]
                self._confirmed.discard(forgotten.imdn_message_id)
        self._by_imdn_id[msg.imdn_message_id] = msg
        self.emit(MessageAdded(msg))

    def _set_status(self, msg: ChatMessage, status: str, detail: str) -> None:
        # Notifications may overtake the MESSAGE's own 202: never move a tick backwards.
        # "failed" is final, and so is a confirmed delivery.
        if msg.status == "failed" or (status == "failed" and msg.status in ("delivered", "displayed")):
            return
        if status in STATUS_ORDER and msg.status in STATUS_ORDER and \
                STATUS_ORDER.index(status) <= STATUS_ORDER.index(msg.status):
            return
        msg.status, msg.status_detail = status, detail
        self.emit(MessageStatusChanged(msg))

    def emit(self, event: DeviceEvent) -> None:
        """Tell every listener what happened (the phone's sessions report through here too)."""
        for listener in list(self.listeners):
            try:
                listener(event)
            except Exception:   # noqa: BLE001 - a broken window must not break the phone's SIP flow
                log.exception("%s: listener failed on %s", self.name, type(event).__name__)


def _granted_expires(response: SipResponse, asked: int) -> int:
    """What the registrar granted: the Contact's expires, else Expires, else what we asked."""
    for contact in response.headers.get_all("Contact"):
        match = re.search(r";\s*expires\s*=\s*(\d+)", contact, re.IGNORECASE)
        if match:
            return max(int(match.group(1)), 1)
    value = response.headers.get("Expires")
    return max(int(value), 1) if value and value.strip().isdigit() else asked


def msg_time(msg: ChatMessage) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(msg.time))
