"""Chat sessions on the simulated CPM phone: SIP INVITE/ACK/BYE/CANCEL with SDP, messages over MSRP.

The same Start-session action works toward CPM and non-CPM users (CPM-IOP: the user never picks a
technology): the INVITE goes to the person's identity and the network decides (a CPM device, or the
IWF that adapts it to SMS). The phone offers MSRP (setup:active: it connects when answered) and,
for incoming sessions, answers with its own MSRP listener (the offerer connects to it; it records).

Events through the device's listeners (backends/devices/events.py): SessionChanged on every state
change and SessionMessageAdded for each message in a session.
"""
from __future__ import annotations

import asyncio
import itertools
import time
import uuid
from dataclasses import dataclass, field

from iwlab.backends.devices import history
from iwlab.backends.devices.events import SessionChanged, SessionMessageAdded
from iwlab.backends.devices.session_state import IllegalTransition, SessionState
from iwlab.backends.protocols import recipient_list, sdp, sip
from iwlab.backends.protocols.cpim import CPM_SESSION_SERVICE, CpimMessage
from iwlab.backends.protocols.multipart import is_multipart_mixed
from iwlab.backends.protocols.resource_lists import Entry
from iwlab.backends.protocols.sip import (
    SipParseError,
    SipRequest,
    SipResponse,
    make_response,
)
from iwlab.backends.topology import User
from iwlab.backends.trace import Trace
from iwlab.backends.transports.msrp import (
    MsrpListener,
    MsrpSession,
    connect,
    local_session,
)
from iwlab.backends.transports.sip import SipConnection, SipConnectionClosed


@dataclass
class SessionMessage:
    direction: str      # "out" / "in"
    text: str
    time: float = field(default_factory=time.time)


@dataclass(eq=False)
class ChatSession:
    call_id: str
    direction: str                   # "out": we invited; "in": we were invited
    peer_uri: str
    peer_name: str
    reason: str = ""                 # why it is in its state ("180 Ringing", "you declined" ...)
    conversation_id: str = ""
    contribution_id: str = ""
    transport: str = "MSRP"
    messages: list[SessionMessage] = field(default_factory=list)
    # dialog
    local_tag: str = field(default_factory=sip.new_tag)
    remote_tag: str = ""
    remote_target: str = ""
    route_set: list[str] = field(default_factory=list)
    cseq: itertools.count = field(default_factory=lambda: itertools.count(1))
    invite: SipRequest | None = None
    invite_conn: SipConnection | None = None
    offer: sdp.MsrpSdp | None = None
    msrp: MsrpSession | None = None
    peer_accepts: list[str] = field(default_factory=list)   # the peer's a=accept-types
    members: list[User] = field(default_factory=list)       # a group chat: who was asked in (the peer is its focus)
    _state: SessionState = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._state = SessionState.INVITING if self.direction == "out" else SessionState.INCOMING

    @property
    def state(self) -> SessionState:
        return self._state

    def move_to(self, state: SessionState, reason: str = "") -> None:
        """The one way a session changes state: refuses what the transition table does not allow."""
        if not self._state.may_become(state):
            raise IllegalTransition(self._state, state)
        self._state, self.reason = state, reason

    @property
    def is_open(self) -> bool:
        return self._state.is_open

    def describe(self) -> str:
        line = (f"Group chat with {', '.join(m.name for m in self.members)}" if self.members
                else f"Session with {self.peer_name}") + f": {self.state.value}"
        if self.state is SessionState.ESTABLISHED:
            line += f" — {self.transport}"
        elif self.reason:
            line += f" ({self.reason})"
        return line


class CpmSessions:
    """A CPM phone's sessions (5.8.6 / 5.9.6): INVITE with an MSRP offer, answers, CANCEL, BYE, and
    the MSRP chat itself, as one user agent's dialog state (states and transitions in session_state)."""

    def __init__(self, device, *, trace: Trace | None, host: str = "127.0.0.1") -> None:
        self.device = device
        self.host = host
        self.listener = MsrpListener(host=host, local_name=device.name, trace=trace, nodes=device.nodes)
        self.sessions: dict[str, ChatSession] = {}

    async def stop(self) -> None:
        for session in self.sessions.values():
            if session.msrp is not None:
                session.msrp.close()
        await self.listener.stop()

    # -- helpers ------------------------------------------------------------------------
    def _remember(self, session: ChatSession) -> None:
        """Keep a new session; of those that are over, the newest history.KEPT stay (each holds its
        dialog and its closed MSRP connection: kept all, a phone in a long run held every one)."""
        self.sessions[session.call_id] = session
        over = [call_id for call_id, kept in self.sessions.items() if not kept.is_open]
        for call_id in over[:max(len(over) - history.KEPT, 0)]:
            del self.sessions[call_id]

    def _announce(self, session: ChatSession) -> None:
        self.device.emit(SessionChanged(session, session.state))

    def _set_state(self, session: ChatSession, state: SessionState, reason: str = "") -> None:
        session.move_to(state, reason)
        if not state.is_open and session.msrp is not None:
            session.msrp.close()
        self._announce(session)

    def _contact(self, conn: SipConnection) -> str:
        host, port = conn.local_address
        return f"<sip:{self.device.user.id}@{sip.hostport(host, port)};transport={conn.transport_name}>"

    def _peer(self, to: User | str) -> tuple[str, str]:
        uri = to.cpm_uri if isinstance(to, User) else to
        user = to if isinstance(to, User) else self.device.topology.user_by_uri(to)
        return uri or "", user.name if user else (uri or "?")

    def _on_msrp(self, session: ChatSession):
        def deliver(msrp: MsrpSession, text: str, content_type: str, message_id: str) -> None:
            if session.members and msrp.sender:    # a group: the focus names each message's author
                text = f"{self._author(msrp.sender)}: {text}"
            history.keep(session.messages, SessionMessage("in", text))
            self.device.emit(SessionMessageAdded(session, "in", text))
        return deliver

    def _author(self, sender: str) -> str:
        user = self.device.topology.user_by_uri(sip.uri_of(sender))
        if user is not None:
            return user.name
        try:
            return (sip.parse_name_addr(sender).display or sip.uri_of(sender)).strip('"')
        except SipParseError:
            return sip.uri_of(sender)

    # -- outgoing -------------------------------------------------------------------------
    async def start_group(self, members: list[User]) -> ChatSession:
        """A group chat (RFC 5366): the INVITE goes to the operator's conference factory with the list of
        people; the focus invites them, whatever reaches each (CPM, or an IWF for SMS and email)."""
        return await self.start_session(recipient_list.factory_uri(self.device.domain), members=members)

    async def start_session(self, peer: User | str, *, members: list[User] | None = None) -> ChatSession:
        """Invite a person to a chat session; returns once the invitation is answered (or fails)."""
        peer_uri, peer_name = self._peer(peer)
        if members:
            peer_name = "Group: " + ", ".join(m.name for m in members)     # its conversation's name
        call_id = sip.new_call_id(self.device.domain)
        session = ChatSession(call_id, "out", peer_uri, peer_name,
                              conversation_id=self.device.conversation_with(peer_uri) if not members
                              else uuid.uuid4().hex, contribution_id=uuid.uuid4().hex, members=list(members or []))
        self._remember(session)
        self._announce(session)
        try:
            conn = await self.device.connect()
            await self.listener.start()
        except OSError as exc:
            self._set_state(session, SessionState.FAILED, f"not sent: {exc}")
            return session
        msrp_session = local_session(self.host, self.listener.port, call_id=call_id,
                                     on_message=self._on_msrp(session))
        msrp_session.conversation_id = session.conversation_id
        session.msrp = msrp_session
        offer = sdp.offer(host=self.host, port=self.listener.port, session_id_path=msrp_session.session_id)
        offer.path = [msrp_session.local_uri]
        req = self.device.new_request("INVITE", peer_uri, to=peer_uri, call_id=call_id)
        session.local_tag = sip.from_tag(req)
        req.headers.add("Contact", self._contact(conn))
        req.headers.add("P-Preferred-Service", CPM_SESSION_SERVICE)
        req.headers.add("Conversation-ID", session.conversation_id)
        req.headers.add("Contribution-ID", session.contribution_id)
        if members:
            req.headers.add("Require", recipient_list.OPTION_TAG)
            content_type, req.body = recipient_list.build_body(
                offer.to_bytes(), [Entry(m.cpm_uri, m.name) for m in members if m.cpm_uri])
            req.headers.add("Content-Type", content_type)
        else:
            req.headers.add("Content-Type", "application/sdp")
            req.body = offer.to_bytes()
        session.invite, session.invite_conn = req, conn

        def provisional(response: SipResponse) -> None:
            if response.status == 180 and session.state is SessionState.INVITING:
                self._set_state(session, SessionState.RINGING, "180 Ringing")
        try:
            response = await conn.request(req, on_provisional=provisional)
        except SipConnectionClosed as exc:
            if session.is_open:   # not withdrawn meanwhile
                self._set_state(session, SessionState.FAILED, str(exc))
            return session
        if response.status >= 300 and sip.cseq_method(response) == "INVITE":
            try:   # RFC 3261 17.1.1.3: our INVITE transaction ACKs its 3xx-6xx itself
                conn.send(sip.make_non2xx_ack(req, response))
            except SipConnectionClosed:
                pass
        if sip.cseq_method(response) == "CANCEL" or session.state is SessionState.CANCELLED:
            if response.status == 200 and sip.cseq_method(response) == "INVITE":   # answered as we cancelled
                self._dialog_from_response(session, response)
                self._send_ack(session, conn)
                await self._bye(session)
            if session.state is not SessionState.CANCELLED:
                self._set_state(session, SessionState.CANCELLED, "cancelled")
            return session
        if response.status >= 300:
            state = SessionState.DECLINED if response.status in (603, 486, 600) else SessionState.FAILED
            self._set_state(session, state, f"{response.status} {response.reason}")
            return session
        self._dialog_from_response(session, response)
        self._send_ack(session, conn)
        try:
            answer = sdp.parse_sdp(response.body)
            session.peer_accepts = list(answer.accept_types)
            msrp_session.remote_path = list(answer.path)
            host, port = answer.connect_address()
            await connect(msrp_session, host, port, local_name=self.device.name, nodes=self.device.nodes)
        except (sdp.SdpError, OSError) as exc:
            if session.is_open:
                self._set_state(session, SessionState.FAILED, f"no MSRP connection: {exc}")
            await self._bye(session)
            return session
        if not session.is_open:   # withdrawn while MSRP connected: the dialog is up, hang it up
            await self._bye(session)
            return session
        self._set_state(session, SessionState.ESTABLISHED, f"{response.status} {response.reason}")
        return session

    def _dialog_from_response(self, session: ChatSession, response: SipResponse) -> None:
        session.remote_tag = sip.to_tag(response)
        session.remote_target = sip.uri_of(response.headers.get("Contact")) or session.peer_uri
        session.route_set = list(reversed(response.headers.get_all("Record-Route")))

    def _send_ack(self, session: ChatSession, conn: SipConnection) -> None:
        cseq = sip.parse_cseq(session.invite.headers.get("CSeq") or "1 INVITE")[0] if session.invite else 1
        try:
            conn.send(self._in_dialog_request(session, "ACK", cseq))
        except SipConnectionClosed:
            pass

    def _in_dialog_request(self, session: ChatSession, method: str, cseq: int | None = None) -> SipRequest:
        conn = self.device.connection
        if cseq is None:
            cseq = 100 + next(session.cseq)    # above the INVITE's CSeq
        return sip.make_request(
            method, session.remote_target or session.peer_uri,
            via=conn.local_address if conn else ("127.0.0.1", 0), routes=session.route_set,
            from_=f'"{self.device.name}" <{self.device.uri}>;tag={session.local_tag}',
            to=f"<{session.peer_uri}>;tag={session.remote_tag}", call_id=session.call_id, cseq=cseq)

    def cancel(self, session: ChatSession) -> None:
        """Withdraw an invitation not answered yet (CANCEL on the INVITE's branch)."""
        if session.direction != "out" or session.state not in (SessionState.INVITING, SessionState.RINGING) \
                or session.invite is None:
            return
        invite = session.invite
        cancel = sip.make_cancel(invite)
        self._set_state(session, SessionState.CANCELLED, "you withdrew the invitation")
        if session.invite_conn is not None:
            try:
                session.invite_conn.send(cancel)
            except SipConnectionClosed:
                pass

    async def end(self, session: ChatSession) -> None:
        """Hang up an established session (BYE)."""
        if session.state in (SessionState.INVITING, SessionState.RINGING):
            self.cancel(session)
            return
        if session.state is SessionState.INCOMING:
            self.decline(session)
            return
        if session.state is not SessionState.ESTABLISHED:
            return
        self._set_state(session, SessionState.ENDED, "you ended the session")
        await self._bye(session)

    async def _bye(self, session: ChatSession) -> None:
        try:
            conn = await self.device.connect()
            await asyncio.wait_for(conn.request(self._in_dialog_request(session, "BYE")), 32)
        except (OSError, SipConnectionClosed, asyncio.TimeoutError):
            pass

    def send(self, session: ChatSession, text: str) -> None:
        """A message inside an established session, over MSRP."""
        if session.state is not SessionState.ESTABLISHED or session.msrp is None:
            raise RuntimeError(f"the session with {session.peer_name} is not established")
        if any(t.split(";")[0].strip().lower() == "message/cpim" for t in session.peer_accepts):
            # CPM wraps session messages in CPIM (no IMDN asked for inside the session here)
            cpim = CpimMessage(sender=f'"{self.device.name}" <{self.device.uri}>', recipient=f"<{session.peer_uri}>",
                               body=text.encode("utf-8"), disposition=())
            session.msrp.send_bytes(cpim.to_bytes(), "message/cpim")
        else:
            session.msrp.send_text(text)
        history.keep(session.messages, SessionMessage("out", text))
        self.device.emit(SessionMessageAdded(session, "out", text))

    # -- incoming -------------------------------------------------------------------------
    def on_request(self, conn: SipConnection, req: SipRequest) -> None:
        call_id = req.headers.get("Call-ID") or ""
        session = self.sessions.get(call_id)
        if req.method == "INVITE":
            if session is not None:
                conn.send(make_response(req, 488, "Re-INVITE not supported", to_tag=session.local_tag))
                return
            self._incoming(conn, req)
        elif req.method == "ACK":
            return
        elif req.method == "CANCEL":
            conn.send(make_response(req, 200, to_tag=sip.new_tag()))
            if session and session.state is SessionState.INCOMING and session.invite is not None:
                conn.send(make_response(session.invite, 487, "Request Terminated", to_tag=session.local_tag))
                self._set_state(session, SessionState.CANCELLED, f"{session.peer_name} withdrew the invitation")
        elif req.method == "BYE":
            if session is None or session.state is not SessionState.ESTABLISHED:
                conn.send(make_response(req, 481, to_tag=sip.new_tag()))
                return
            conn.send(make_response(req, 200, to_tag=session.local_tag))
            self._set_state(session, SessionState.ENDED, f"{session.peer_name} ended the session")

    def _incoming(self, conn: SipConnection, req: SipRequest) -> None:
        peer_uri = sip.uri_of(req.headers.get("From"))
        peer = self.device.topology.user_by_uri(peer_uri)
        roster: list[User] = []
        try:
            body = req.body
            if is_multipart_mixed(req.headers.get("Content-Type")):   # a focus's: the SDP beside the group's roster
                listed = recipient_list.parse_body(req.headers.get("Content-Type"), req.body)
                body, roster = listed.sdp, self._members_of(listed.recipients)
            offer = sdp.parse_sdp(body)
        except recipient_list.RecipientListError as exc:
            conn.send(make_response(req, exc.status, f"Recipient list: {exc.reason}"[:80], to_tag=sip.new_tag()))
            return
        except sdp.SdpError as exc:
            conn.send(make_response(req, exc.status, f"Unusable SDP: {exc.reason}"[:80], to_tag=sip.new_tag()))
            return
        try:
            display = sip.parse_name_addr(req.headers.get("From") or "").display
        except (SipParseError, AttributeError):
            display = None
        session = ChatSession(req.headers.get("Call-ID") or "", "in", peer_uri,
                              peer.name if peer else (display or peer_uri).strip('"'),
                              conversation_id=req.headers.get("Conversation-ID") or "",
                              contribution_id=req.headers.get("Contribution-ID") or "",
                              remote_tag=sip.from_tag(req),
                              remote_target=sip.uri_of(req.headers.get("Contact")) or peer_uri,
                              route_set=req.headers.get_all("Record-Route"), invite=req, invite_conn=conn,
                              offer=offer, members=roster)
        self._remember(session)
        response = make_response(req, 180, "Ringing", to_tag=session.local_tag)
        self._dialog_headers(response, req, conn)
        conn.send(response)
        self._announce(session)

    def _members_of(self, entries: list[Entry]) -> list[User]:
        """The others in a group we are invited to (the roster names us too); people the lab does not know are left out."""
        users = [self.device.topology.user_by_uri(entry.uri) for entry in entries]
        return [user for user in users if user is not None and user.id != self.device.user.id]

    def _dialog_headers(self, response: SipResponse, req: SipRequest, conn: SipConnection) -> None:
        for route in req.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", route)
        response.headers.add("Contact", self._contact(conn))

    async def accept(self, session: ChatSession) -> None:
        if session.state is not SessionState.INCOMING or session.invite is None or session.offer is None:
            return
        await self.listener.start()
        if session.state is not SessionState.INCOMING:   # withdrawn while the listener started
            return
        msrp_session = self.listener.new_session(call_id=session.call_id, on_message=self._on_msrp(session))
        msrp_session.remote_path = list(session.offer.path)
        msrp_session.conversation_id = session.conversation_id
        try:
            answer = sdp.answer(session.offer, host=self.host, port=self.listener.port, path=msrp_session.local_uri)
        except sdp.SdpError as exc:
            msrp_session.close()
            self._respond_invite(session, exc.status, exc.reason[:80])
            self._set_state(session, SessionState.FAILED, exc.reason)
            return
        session.msrp = msrp_session
        session.peer_accepts = list(session.offer.accept_types)
        assert session.invite is not None and session.invite_conn is not None   # an incoming session has both
        response = make_response(session.invite, 200, "OK", to_tag=session.local_tag, body=answer.to_bytes(),
                                 content_type="application/sdp")
        self._dialog_headers(response, session.invite, session.invite_conn)
        try:
            session.invite_conn.send(response)
        except SipConnectionClosed as exc:
            self._set_state(session, SessionState.FAILED, str(exc))
            return
        self._set_state(session, SessionState.ESTABLISHED, "you accepted")

    def decline(self, session: ChatSession) -> None:
        if session.state is not SessionState.INCOMING or session.invite is None:
            return
        self._respond_invite(session, 603, "Decline")
        self._set_state(session, SessionState.DECLINED, "you declined")

    def _respond_invite(self, session: ChatSession, status: int, reason: str) -> None:
        if session.invite is None or session.invite_conn is None:
            return
        try:
            session.invite_conn.send(make_response(session.invite, status, reason, to_tag=session.local_tag))
        except SipConnectionClosed:
            pass
