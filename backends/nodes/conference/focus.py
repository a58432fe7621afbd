"""The conference focus of one operator (ladder column Focus-<operator>): group chats (RFC 4353,
RFC 4579 for the focus's side, RFC 5366 for the list of invitees).

Its CPM server hands it what is addressed to `sip:conference-factory@<domain>` and to the groups
it made (conference/uris.py). A factory INVITE with `Require: recipient-list-invite` and a body of
an SDP offer beside a resource list (protocols/recipient_list.py) makes a group: the focus answers
200 with its MSRP path (the inviter connects) and invites every listed person itself, through its
CPM server, as `From: <the group>`, `Contact: ...;isfocus`, `Referred-By: <the inviter>`, with its
own SDP offer (the focus connects) beside the group's roster. Their servers route each invitation
like any other: a legacy member's IWF answers for him (nodes/iwf/groups.py).

Messages go from member to members through group.py; a member's BYE is a leave, the inviter's
ends the group (the focus BYEs the rest). Refusals are the protocols' own: 420 for an option tag
in Require the focus does not know (RFC 3261 8.2.2.3), 400/403/413/415 for the body (RFC 5366,
RFC 3261 20.11), 488 for an SDP it cannot answer.
"""
from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Callable

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.conference import uris
from iwlab.backends.nodes.conference.group import Group, Member, MemberState
from iwlab.backends.protocols import recipient_list, sdp, sip
from iwlab.backends.protocols.cpim import CPM_SESSION_SERVICE
from iwlab.backends.protocols.recipient_list import RecipientListError
from iwlab.backends.protocols.resource_lists import usable_uri
from iwlab.backends.protocols.sip import SipParseError, SipRequest, SipResponse, make_response
from iwlab.backends.topology import Operator, Topology
from iwlab.backends.trace import Trace
from iwlab.backends.transports.msrp import MsrpListener, MsrpSession, connect, local_session
from iwlab.backends.transports.sip import (
    SipConnection,
    SipConnectionClosed,
    answer_unparseable,
    open_connection,
    respond,
)
from iwlab.backends.transports.sip_listeners import SipListeners

log = logging.getLogger(__name__)
Address = tuple[str, int]
SUPPORTED = (recipient_list.OPTION_TAG,)
INVITE_TIMEOUT = 200.0     # RFC 3261 Timer C: a person (or an IWF's policy) answers
FORGET_AFTER = 64.0        # seconds an ended group still answers (64*T1, as SIP keeps a transaction)
CONNECT_WITHIN = 32.0      # seconds the inviter has to open her MSRP connection (else the group ends)
MAX_GROUPS = 1000          # groups one focus holds at once: a flood of factory INVITEs stays bounded


class ConferenceFocus:
    def __init__(self, operator: Operator, topology: Topology, trace: Trace, nodes: NodeDirectory, *,
                 host: str, cpm_address: Callable[[], Address | None]) -> None:
        """cpm_address: the operator's CPM server, where the focus's own invitations go."""
        self.operator = operator
        self.topology = topology
        self.name = operator.focus_name
        self.domain = operator.cpm_domain
        self.host = host
        self._trace = trace
        self._nodes = nodes
        self._cpm_address = cpm_address
        self._connections: set[SipConnection] = set()
        self.sip = SipListeners(name=self.name, new_connection=self._new_connection, on_message=self._on_sip,
                                trace=trace, nodes=nodes, on_close=self._connections.discard)
        self.msrp = MsrpListener(host=host, local_name=self.name, trace=trace, nodes=nodes)
        self.groups: dict[str, Group] = {}             # group URI -> group
        self._members: dict[str, tuple[Group, Member]] = {}   # Call-ID -> (group, member)
        self._link: SipConnection | None = None
        self._opening = asyncio.Lock()
        self._tasks: set[asyncio.Task] = set()

    @property
    def port(self) -> int:
        return self.sip.port

    def address(self) -> Address | None:
        return (self.host, self.sip.port) if self.sip.port else None

    async def start(self, hosts: list[str] | None = None) -> None:
        await self.sip.start(hosts or [self.host], 0)
        await self.msrp.start()

    async def stop(self) -> None:
        self.sip.close()
        for task in list(self._tasks):
            task.cancel()
        for group in self.groups.values():
            for member in group.members:
                if member.msrp is not None:
                    member.msrp.close()     # our outgoing MSRP connections too, not only the listener's
        await self.msrp.stop()
        if self._link is not None:
            self._link.close()
        for conn in list(self._connections):
            conn.close()
        await self.sip.stop()

    def _new_connection(self) -> SipConnection:
        conn = SipConnection(self._on_sip, local_name=self.name, trace=self._trace, nodes=self._nodes,
                             on_close=self._connections.discard)
        self._connections.add(conn)
        return conn

    def _spawn(self, coro) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- SIP in ---------------------------------------------------------------------------
    def _on_sip(self, conn: SipConnection, message: SipRequest | SipResponse | SipParseError) -> None:
        if isinstance(message, SipParseError):
            answer_unparseable(conn, message)
        elif isinstance(message, SipRequest):
            self._request(conn, message)
        # responses: those to our own requests reach their futures (SipConnection.request)

    def _request(self, conn: SipConnection, req: SipRequest) -> None:
        call_id = req.headers.get("Call-ID") or ""
        known = self._members.get(call_id)
        if req.method == "ACK":
            return
        if req.method == "INVITE" and not sip.to_tag(req):
            if uris.is_factory(req.uri):
                self._create(conn, req)
            else:
                respond(conn, req, 403, "Joining a group by its URI is not offered; ask a member to add you")
        elif req.method == "BYE":
            if known is None:
                respond(conn, req, 481, "Call/Transaction Does Not Exist")
                return
            group, member = known
            respond(conn, req, 200, "OK", note=f"{member.name} leaves {group.name}")
            self._leave(group, member)
        elif req.method == "CANCEL":
            respond(conn, req, 200, "OK")      # the focus answers at once: nothing rings to cancel
        elif req.method == "INVITE":
            respond(conn, req, 488, "Re-INVITE not supported by the focus")
        elif req.method == "OPTIONS":
            respond(conn, req, 200, "OK")
        else:
            respond(conn, req, 501, f"{req.method} not implemented by the focus")

    # -- a group is made --------------------------------------------------------------------
    def _create(self, conn: SipConnection, req: SipRequest) -> None:
        problem = sip.validate_request(req, supported=SUPPORTED)
        if not problem and len(self.groups) >= MAX_GROUPS:
            problem = (486, f"The focus holds {MAX_GROUPS} groups already")
        if problem:
            extra = [("Unsupported", ", ".join(sip.unsupported_options(req, SUPPORTED)))] if problem[0] == 420 else []
            respond(conn, req, *problem, extra_headers=extra)
            return
        try:
            body = recipient_list.parse_body(req.headers.get("Content-Type"), req.body)
            offer = sdp.parse_sdp(body.sdp)
        except RecipientListError as exc:
            extra = [("Accept", f"multipart/mixed, application/sdp, {recipient_list.RESOURCE_LISTS}")] if exc.status == 415 else []
            respond(conn, req, exc.status, f"Recipient list: {exc.reason}"[:100], extra_headers=extra)
            return
        except sdp.SdpError as exc:
            respond(conn, req, exc.status, f"Unusable SDP offer: {exc.reason}"[:100])
            return
        owner_uri = sip.uri_of(req.headers.get("P-Asserted-Identity")) or sip.uri_of(req.headers.get("From"))
        if not usable_uri(owner_uri):     # it goes into every member's roster and every notice
            respond(conn, req, 400, "From is not a sip:, sips: or tel: URI a group can name")
            return
        owner_user = self.topology.user_by_uri(owner_uri)
        owner_name = owner_user.name if owner_user else owner_uri
        group = Group(uri=uris.new_group_uri(self.domain), name=f"{owner_name}'s group",
                      conversation_id=req.headers.get("Conversation-ID") or uuid.uuid4().hex)
        owner = Member(uri=owner_uri, name=owner_name, call_id=req.headers.get("Call-ID") or "", is_owner=True,
                       remote_tag=sip.from_tag(req), remote_target=sip.uri_of(req.headers.get("Contact")) or owner_uri,
                       invite=req, invite_conn=conn)
        owner.msrp = self.msrp.new_session(call_id=owner.call_id, on_message=self._relay(group, owner))
        owner.msrp.remote_path = list(offer.path)
        owner.msrp.conversation_id = group.conversation_id
        try:
            answer = sdp.answer(offer, host=self.host, port=self.msrp.port, path=owner.msrp.local_uri)
        except sdp.SdpError as exc:
            owner.msrp.close()
            respond(conn, req, exc.status, exc.reason[:100])
            return
        group.members.append(owner)
        # Never the inviter herself, nor a focus (a group inviting a factory would make groups without end).
        invitees = [e for e in body.recipients if self._identity(e.uri) != self._identity(owner_uri)
                    and not any(uris.is_focus_uri(e.uri, op.cpm_domain) for op in self.topology.operators)]
        for entry in invitees:
            user = self.topology.user_by_uri(entry.uri)
            group.members.append(Member(uri=entry.uri, name=entry.display_name or (user.name if user else entry.uri),
                                        call_id=sip.new_call_id(self.domain)))
        self.groups[group.uri] = group
        self._members[owner.call_id] = (group, owner)
        owner.state = MemberState.JOINED
        response = make_response(req, 200, "OK", to_tag=owner.local_tag, body=answer.to_bytes(),
                                 content_type="application/sdp")
        for route in req.headers.get_all("Record-Route"):
            response.headers.add("Record-Route", route)
        response.headers.add("Contact", f"<{group.uri};transport=tcp>;isfocus")
        response.headers.add("Conversation-ID", group.conversation_id)
        names = ", ".join(m.name for m in group.members[1:]) or "nobody"
        try:
            conn.send(response, note=f"{group.name} ({group.uri}) is made; the focus invites {names}")
        except SipConnectionClosed:
            return
        for member in group.members[1:]:
            self._members[member.call_id] = (group, member)
            self._spawn(self._invite(group, member, owner))
        asyncio.get_running_loop().call_later(CONNECT_WITHIN, self._connected_or_end, group, owner)

    def _connected_or_end(self, group: Group, owner: Member) -> None:
        """An inviter who never opens her MSRP connection leaves a group nobody can write to: it ends."""
        if not group.ended and owner.msrp is not None and not owner.msrp.bound.done():
            owner.state = MemberState.LEFT
            owner.msrp.close()
            self._end(group, f"{owner.name} did not connect; the group chat has ended.")

    def _identity(self, uri: str) -> str:
        """The person a URI names (tel: and sip: of the same user are one), for leaving out the inviter."""
        user = self.topology.user_by_uri(uri)
        return user.id if user else uri.lower()

    # -- the focus invites ---------------------------------------------------------------------
    async def _invite(self, group: Group, member: Member, owner: Member) -> None:
        session = local_session(self.host, self.msrp.port, call_id=member.call_id,
                                on_message=self._relay(group, member))
        session.conversation_id = group.conversation_id
        member.msrp = session
        offer = sdp.offer(host=self.host, port=self.msrp.port, session_id_path=session.session_id)
        offer.path = [session.local_uri]
        content_type, body = recipient_list.build_body(offer.to_bytes(), group.roster())
        req = sip.make_request("INVITE", member.uri, via=(self.host, self.port),
                               from_=sip.name_addr(group.uri, group.name, tag=member.local_tag),
                               to=sip.name_addr(member.uri, member.name), call_id=member.call_id,
                               cseq=next(member.cseq))
        req.headers.add("Contact", f"<{group.uri};transport=tcp>;isfocus")
        req.headers.add("Referred-By", sip.name_addr(owner.uri, owner.name))
        req.headers.add("P-Preferred-Service", CPM_SESSION_SERVICE)
        req.headers.add("Conversation-ID", group.conversation_id)
        req.headers.add("Contribution-ID", uuid.uuid4().hex)
        req.headers.add("Content-Type", content_type)
        req.body = body
        try:
            link = await self._cpm_link()
            response = await asyncio.wait_for(link.request(req, note=f"{group.name}: the focus invites {member.name}"),
                                              INVITE_TIMEOUT)
        except (OSError, SipConnectionClosed, asyncio.TimeoutError) as exc:
            self._not_joined(group, member, f"could not be invited ({exc or 'no answer'})")
            return
        if response.status >= 300:
            try:
                link.send(sip.make_non2xx_ack(req, response))     # RFC 3261 17.1.1.3
            except SipConnectionClosed:
                pass
            self._not_joined(group, member, f"could not join ({response.status} {response.reason})")
            return
        member.learn_dialog(response)
        try:
            link.send(self._in_dialog(group, member, "ACK", cseq=1))
            answer = sdp.parse_sdp(response.body)
            session.remote_path = list(answer.path)
            host, port = answer.connect_address()
            await connect(session, host, port, local_name=self.name, nodes=self._nodes)
        except (sdp.SdpError, OSError, SipConnectionClosed) as exc:
            self._not_joined(group, member, f"could not join: no MSRP ({exc})")
            self._spawn(self._bye(group, member, note=f"no MSRP connection to {member.name}"))
            return
        if group.ended:
            self._spawn(self._bye(group, member, note=f"{group.name} ended before {member.name} joined"))
            return
        member.state = MemberState.JOINED
        group.notice(f"{member.name} joined the group.", skip=member)

    def _not_joined(self, group: Group, member: Member, why: str) -> None:
        member.state = MemberState.DECLINED
        if member.msrp is not None:
            member.msrp.close()
        group.notice(f"{member.name} {why}.")

    async def _cpm_link(self) -> SipConnection:
        async with self._opening:     # the invitations of a group go at once: one link, not one each
            if self._link is None or not self._link.is_open:
                address = self._cpm_address()
                if address is None:
                    raise OSError("the CPM server is not running")
                self._link = await open_connection(address[0], address[1], self._on_sip, local_name=self.name,
                                                   nodes=self._nodes, annotate=self._trace.annotate)
            return self._link

    def _in_dialog(self, group: Group, member: Member, method: str, cseq: int | None = None) -> SipRequest:
        """A request in the dialog the focus made with `member` (it is the UAC: From is the group)."""
        return sip.make_request(method, member.remote_target or member.uri, via=(self.host, self.port),
                                routes=member.route_set, from_=f"<{group.uri}>;tag={member.local_tag}",
                                to=f"<{member.uri}>;tag={member.remote_tag}", call_id=member.call_id,
                                cseq=cseq if cseq is not None else next(member.cseq))

    async def _bye(self, group: Group, member: Member, note: str) -> None:
        """End the dialog with an invited member (the owner's ends only by her BYE: her leaving ends the group)."""
        try:
            link = await self._cpm_link()
            await asyncio.wait_for(link.request(self._in_dialog(group, member, "BYE"), note=note), 32)
        except (OSError, SipConnectionClosed, asyncio.TimeoutError) as exc:
            log.info("%s: BYE to %s failed: %s", self.name, member.name, exc)
        if member.msrp is not None:
            member.msrp.close()

    # -- messages and leaves ---------------------------------------------------------------------
    def _relay(self, group: Group, member: Member):
        def arrived(_session: MsrpSession, text: str, content_type: str, message_id: str) -> None:
            if text.strip():
                group.relay(member, text)
        return arrived

    def _leave(self, group: Group, member: Member) -> None:
        was_joined = member.joined
        member.state = MemberState.LEFT
        if member.msrp is not None:
            member.msrp.close()
        if group.ended:
            return
        if member.is_owner:
            self._end(group, f"{member.name} left; the group chat has ended.")
        elif was_joined:
            group.notice(f"{member.name} left the group.")

    def _end(self, group: Group, text: str) -> None:
        group.notice(text)
        group.ended = True
        for member in group.joined():
            member.state = MemberState.LEFT
            if not member.is_owner:
                self._spawn(self._bye(group, member, note=f"{group.name} has ended"))
        # Late requests (a BYE crossing ours) are still answered a while, then the group is forgotten.
        asyncio.get_running_loop().call_later(FORGET_AFTER, self._forget, group)

    def _forget(self, group: Group) -> None:
        self.groups.pop(group.uri, None)
        for member in group.members:
            if self._members.get(member.call_id, (None,))[0] is group:
                del self._members[member.call_id]
