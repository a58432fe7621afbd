"""The transaction-stateful proxy of a CPM server (RFC 3261 16).

It forwards a request with its own top Via and Max-Forwards less one, keeps a
client transaction per forwarded request (keyed by that Via's branch) until
the final answer or its timer (F/B, or C for an INVITE), relays each answer to
whoever sent the request with our Via taken off, and keeps a session's path
(Record-Route) so ACK, BYE and CANCEL follow the INVITE. The server decides
where a request goes; the proxy only carries it there.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from iwlab.backends import clock
from iwlab.backends.nodes.cpm_server.links import PeerLink
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.routing import Route
from iwlab.backends.transports.sip import SipConnection, SipConnectionClosed, respond

TRANSACTION_TIMEOUT = 32.0              # RFC 3261 Timer F / B
INVITE_TIMEOUT = 200.0                  # RFC 3261 Timer C (> 3 min): waits for a person

NextHop = SipConnection | PeerLink
Address = tuple[str, int]


@dataclass
class _Transaction:
    request: SipRequest                   # as received: its answer goes back as an answer to it
    deadline: float
    origin: SipConnection | None = None   # None: a request this server sends on its own behalf
    on_final: Callable[[int], None] | None = None   # told the final status (as well as relaying it)
    forwarded: SipRequest | None = None   # as sent on: an INVITE's non-2xx is ACKed from it
    target: "NextHop | None" = None       # where it went


@dataclass
class _Dialog:
    """A session's path through this server, for the requests inside it."""
    caller_tag: str                        # From tag of the INVITE: tells which side sends
    caller: SipConnection                  # towards the inviter
    callee: NextHop                        # towards the invitee
    invite: SipRequest                     # as forwarded: a CANCEL reuses its branch
    answered: bool = False


class Proxy:
    """Client transactions, their timers, response relaying and session paths of one server.

    `address` is where this server listens (known once it has started): it goes
    into our Via and Record-Route.
    """

    def __init__(self, address: Callable[[], Address], *, transaction_timeout: float = TRANSACTION_TIMEOUT) -> None:
        """transaction_timeout: Timer F / B, how long a forwarded non-INVITE waits for its answer."""
        self.transaction_timeout = transaction_timeout
        self._address = address
        self._transactions: dict[str, _Transaction] = {}
        self._dialogs: dict[str, _Dialog] = {}           # Call-ID -> session path

    # -- requests ---------------------------------------------------------------
    def forward(self, origin: SipConnection, req: SipRequest, target: NextHop, note: str,
                route: Route | None = None, request_uri: str | None = None,
                on_final: Callable[[int], None] | None = None) -> None:
        """on_final: told the final status as well (the fallback's watch starts on a client's 2xx)."""
        fwd = self._prepare_forward(req)
        if request_uri:
            fwd.uri = request_uri
        if route:
            fwd.headers.set(Route.HEADER, route.to_header())
        timeout = self.transaction_timeout
        if req.method == "INVITE" and not sip.to_tag(req):
            # Stay on the session's path (RFC 3261 16.6 step 4) and remember it for ACK/BYE/CANCEL.
            host, port = self._address()
            fwd.headers.prepend("Record-Route", f"<sip:{sip.hostport(host, port)};transport=tcp;lr>")
            self._dialogs[req.headers.get("Call-ID") or ""] = _Dialog(
                caller_tag=sip.from_tag(req), caller=origin, callee=target, invite=fwd)
            timeout = INVITE_TIMEOUT   # a person answers an invitation, not a machine
            if route:
                # The IWF records the reason from the decision header; a note would linger on the
                # trace under this Call-ID and end up on the session's ACK.
                note = ""
        if req.method != "ACK":
            self._transactions[sip.top_branch(fwd)] = _Transaction(req, clock.monotonic() + timeout, origin,
                                                                   on_final, forwarded=fwd, target=target)
        if isinstance(target, PeerLink):
            target.send(fwd, note)
            return
        try:
            target.send(fwd, note=note)
        except SipConnectionClosed:
            self.fail(sip.top_branch(fwd), 503, "Next Hop Unreachable")

    def send_own(self, req: SipRequest, conn: NextHop, *, request_uri: str, note: str,
                 on_final: Callable[[int], None]) -> bool:
        """Send `req` in a client transaction of our own (its sender was answered already);
        `on_final` gets the final status, 408 on timeout (503 from a link that cannot open).
        False if it could not leave."""
        fwd = self._prepare_forward(req)
        fwd.uri = request_uri
        branch = sip.top_branch(fwd)
        self._transactions[branch] = _Transaction(req, clock.monotonic() + self.transaction_timeout, on_final=on_final)
        if isinstance(conn, PeerLink):
            conn.send(fwd, note)
            return True
        try:
            conn.send(fwd, note=note)
        except SipConnectionClosed:
            self._transactions.pop(branch, None)
            return False
        return True

    def in_dialog(self, conn: SipConnection, req: SipRequest) -> None:
        """Requests inside a session follow the path its INVITE took, whichever side sends them."""
        call_id = req.headers.get("Call-ID") or ""
        dialog = self._dialogs.get(call_id)
        if dialog is None:
            if req.method != "ACK":
                respond(conn, req, 481, "Call/Transaction Does Not Exist")
            return
        if req.method == "CANCEL":
            respond(conn, req, 200, "OK")
            if not dialog.answered:
                cancel = sip.make_cancel(dialog.invite)
                self._send_towards(dialog.callee, cancel, "")   # same branch as the INVITE it cancels
            return
        from_tag = sip.from_tag(req)
        towards = dialog.callee if from_tag == dialog.caller_tag else dialog.caller
        if req.method == "ACK":
            self._send_towards(towards, self._prepare_forward(req), "")
            return
        self.forward(conn, req, towards, note="")

    # -- responses and timers -----------------------------------------------------
    def relay_response(self, response: SipResponse) -> None:
        branch = sip.top_branch(response)
        transaction = self._transactions.get(branch)
        if transaction is None:
            return  # stray or late response: the trace already shows it
        if sip.cseq_method(response) != transaction.request.method:
            return  # the answer to a CANCEL we sent on the INVITE's branch: we answered that CANCEL ourselves
        if response.status >= 200:
            del self._transactions[branch]
        if response.status >= 300 and transaction.request.method == "INVITE" and transaction.forwarded is not None \
                and transaction.target is not None:
            # RFC 3261 16.7 / 17.1.1.3: the ACK for a 3xx-6xx is ours to send, hop by hop; the
            # caller's own ACK ends at this proxy (its dialog is gone below, so it is absorbed).
            self._send_towards(transaction.target, sip.make_non2xx_ack(transaction.forwarded, response), "")
        self._follow_dialog(transaction.request, response.status)
        if response.status >= 200 and transaction.on_final:
            transaction.on_final(response.status)
        if transaction.origin is None:   # the answer to a request we sent on our own behalf
            return
        relayed = SipResponse(response.status, response.reason, response.headers.copy(), response.body,
                              response.version)
        vias = relayed.headers.get_all("Via")
        relayed.headers.remove("Via")
        for via in vias[1:]:
            relayed.headers.add("Via", via)
        try:
            transaction.origin.send(relayed)
        except SipConnectionClosed:
            pass  # the requester went away; nothing to tell it

    def fail(self, branch: str, status: int, reason: str, note: str = "") -> None:
        """End a client transaction without an answer from the next hop, answering its sender ourselves."""
        transaction = self._transactions.pop(branch, None)
        if transaction:
            self._follow_dialog(transaction.request, status)   # a timed-out INVITE leaves no session behind
        if transaction and transaction.origin is not None:
            respond(transaction.origin, transaction.request, status, reason, note=note)
        if transaction and transaction.on_final:
            transaction.on_final(status)

    def next_hop_unreachable(self, message: SipRequest) -> None:
        self.fail(sip.top_branch(message), 503, "Next Hop Unreachable")

    def expire(self, now: float) -> None:
        """Timers F/B/C: a transaction past its deadline is answered 408."""
        for branch in [b for b, t in self._transactions.items() if t.deadline < now]:
            timer = "C" if self._transactions[branch].request.method == "INVITE" else "F"
            self.fail(branch, 408, "Request Timeout", note=f"Timer {timer}: the next hop did not answer in time")

    def connection_closed(self, conn: SipConnection) -> None:
        for call_id, dialog in list(self._dialogs.items()):
            if conn in (dialog.caller, dialog.callee):   # one side is gone: the session's path is too
                del self._dialogs[call_id]

    # -- inside -------------------------------------------------------------------
    def _prepare_forward(self, req: SipRequest) -> SipRequest:
        fwd = SipRequest(req.method, req.uri, req.headers.copy(), req.body, req.version)
        max_forwards = sip.max_forwards(req)
        fwd.headers.set("Max-Forwards", str((max_forwards if max_forwards is not None else 70) - 1))
        host, port = self._address()
        fwd.headers.prepend("Via", f"SIP/2.0/TCP {sip.hostport(host, port)};branch={sip.new_branch()}")
        return fwd

    def _send_towards(self, target: NextHop, message: SipRequest, note: str) -> None:
        if isinstance(target, PeerLink):
            target.send(message, note)
            return
        try:
            target.send(message, note=note)
        except SipConnectionClosed:
            pass

    def _follow_dialog(self, request: SipRequest, status: int) -> None:
        call_id = request.headers.get("Call-ID") or ""
        dialog = self._dialogs.get(call_id)
        if dialog is None:
            return
        if request.method == "INVITE" and not sip.to_tag(request):
            if status >= 200:
                dialog.answered = True
            if status >= 300:
                del self._dialogs[call_id]        # refused, cancelled or timed out: no session
        elif request.method == "BYE" and status >= 200:
            del self._dialogs[call_id]
