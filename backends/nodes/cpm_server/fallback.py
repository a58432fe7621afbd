"""Revoke and fall back to SMS (GSMA RCC.07 network fallback): a chat message to one of our users
that their client does not confirm delivered in time is taken back and sent by SMS instead.

A pager-mode MESSAGE that asked for a delivery notification and that a registered CPM client
accepted (2xx; a refusal is the sender's to hear, never sent by SMS) is watched for
`fallback_seconds` ([operators.iwf] of the recipient's operator). Its IMDN "delivered" (or
"displayed") passing through this server on its way back ends the watch. When the time is up
the server sends the client an RCC.07 revoke (protocols/revoke.py). Its revoke response decides,
whenever it comes (REMEMBER_REVOKE: a slow client's "success" means it dropped the message):
"success" -> the message goes to the interworking function as SMS (P-Iwlab-Route sms, the
reason on the ladder), so exactly one copy reaches the user; "failed" (the client had it
already), a refused or unsendable revoke, or no answer at all -> no SMS: a second copy is worse
than a late one. Every revoke response from one of our users is answered here, never passed on.

A message that came from the IWF (it was an SMS already, e.g. this fallback SMS delivered back
into CPM to a user whose number the IWF serves) is never watched: no loop. At most `limit`
messages are watched at once; past that a message is not watched, and its ladder row says so.

Each watched message is in the durable store from the moment its client accepted it until it is
confirmed, answered, or given up; a restarted server picks the watch up where it was (a revoke
sent still waits for its answer; a message on its way to the IWF is sent again: the IWF knows its
imdn.Message-ID).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Callable

from iwlab.backends import clock
from iwlab.backends.nodes.cpm_server.links import PeerLink
from iwlab.backends.nodes.cpm_server.proxy import Proxy
from iwlab.backends.nodes.cpm_server.registrar import Registrar
from iwlab.backends.protocols import revoke, sip
from iwlab.backends.protocols.cpim import CpimError, media_type, parse_cpim, parse_imdn_xml
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.routing import SMS, Route
from iwlab.backends.store import DurableQueue
from iwlab.backends.topology import User
from iwlab.backends.transports.sip import SipConnection, respond

log = logging.getLogger(__name__)
WAITING, REVOKING, TO_SMS = "waiting", "revoking", "to-sms"   # a watched message's state, as stored
CONFIRMED = ("delivered", "displayed")
REMEMBER_REVOKE = 3600.0   # how long a revoke sent waits for its answer (a message's usual validity)
MAX_WATCHED = 10_000       # watches at once (each a durable row and a timer)


@dataclass
class _Watched:
    item: int                   # its id in the durable store
    user: User
    request: SipRequest         # as it came (its CPIM body is what goes by SMS)
    message_id: str
    state: str = WAITING
    deadline: float = 0.0       # wall clock: when the current wait runs out
    timer: asyncio.TimerHandle | None = field(default=None, repr=False)


class Fallback:
    """`seconds` 0 switches it off; `to_iwf` is the link to the operator's IWF (None: no IWF, no fallback)."""

    def __init__(self, *, seconds: float, durable: DurableQueue, proxy: Proxy, registrar: Registrar,
                 to_iwf: Callable[[], PeerLink] | None, users: Callable[[str], User | None],
                 user_by_uri: Callable[[str], User | None]) -> None:
        """users: a user by id (what the store names them by)."""
        self.seconds = seconds
        self._durable = durable
        self._proxy = proxy
        self._registrar = registrar
        self._to_iwf = to_iwf
        self._users = users
        self._user_by_uri = user_by_uri
        self._watched: dict[str, _Watched] = {}     # imdn.Message-ID -> the message
        self.limit = MAX_WATCHED

    def holding(self) -> int:
        return len(self._watched)

    # -- the watch ------------------------------------------------------------------
    def watcher(self, user: User, req: SipRequest) -> tuple[Callable[[int], None] | None, str]:
        """A MESSAGE about to go to `user`'s CPM client: the final-status callback that watches it
        once the client accepts it (None: not to be watched), and why not, for the ladder, when
        only the cap stops it."""
        if not self._wanted(user, req):
            return None, ""
        if len(self._watched) >= self.limit:
            return None, f"; not watched for SMS fallback: {self.limit} messages are watched already (the cap)"
        return (lambda status: self.watch(user, req) if 200 <= status < 300 else None), ""

    def watch(self, user: User, req: SipRequest) -> None:
        """A MESSAGE `user`'s CPM client accepted: watched when it asked for a delivery
        notification and `user` has a number to fall back to."""
        if not self._wanted(user, req) or len(self._watched) >= self.limit:
            return
        cpim = parse_cpim(req.body)
        if cpim.message_id in self._watched:
            return
        deadline = clock.wall() + self.seconds
        item = self._durable.put(user.id, req.to_bytes(), {"state": WAITING, "deadline": deadline})
        self._arm(_Watched(item, user, req, cpim.message_id, deadline=deadline))

    def _wanted(self, user: User, req: SipRequest) -> bool:
        if self.seconds <= 0 or self._to_iwf is None or not user.msisdn \
                or media_type(req.headers.get("Content-Type")) != "message/cpim":
            return False
        try:
            cpim = parse_cpim(req.body)
        except CpimError:
            return False
        return not cpim.is_imdn and not revoke.is_revoke(cpim.content_type) \
            and "positive-delivery" in cpim.disposition

    def take(self, conn: SipConnection, req: SipRequest) -> bool:
        """A MESSAGE from one of our users, before it is routed: its IMDN ends a watch (and goes on);
        its revoke response is ours (answered here: True), whichever revoke it answers."""
        if media_type(req.headers.get("Content-Type")) != "message/cpim":
            return False
        try:
            cpim = parse_cpim(req.body)
        except CpimError:
            return False
        if cpim.is_imdn:
            try:
                imdn = parse_imdn_xml(cpim.body)
            except CpimError:
                return False
            watched = self._watched.get(imdn.message_id)
            if watched and imdn.status in CONFIRMED and self._from(req, watched.user):
                self._done(watched)
            return False
        if not revoke.is_revoke(cpim.content_type):
            return False
        try:
            answer = revoke.parse_revoke(cpim.body)
        except revoke.RevokeError:
            return False
        if not isinstance(answer, revoke.RevokeResponse) or not self._registrar.users_on(conn):
            return False   # a revoke request, or from a peer: it goes where it is addressed
        # From one of our users' clients: the answer to a revoke of ours, wherever it is addressed.
        watched = self._watched.get(answer.message_id)
        if watched is None or watched.state != REVOKING or not self._from(req, watched.user):
            respond(conn, req, 200, "OK", note=f"revoke response: {answer.result}, but no revoke of ours waits "
                                               "for it (answered already, given up, or never sent): not passed on")
            return True
        name = watched.user.name
        if answer.revoked:
            self._set_state(watched, TO_SMS, self.seconds)
            respond(conn, req, 200, "OK", note=f"revoke response: success, {name}'s client took the message back")
            self._send_by_sms(watched)
        else:
            self._done(watched)
            respond(conn, req, 200, "OK", note=f"revoke response: failed, {name}'s client had the message "
                                               "already: not sent by SMS (one copy only)")
        return True

    def restore(self) -> None:
        """After a restart: every watch where it was (a revoke sent still waits for its answer)."""
        for item in self._durable.items():
            user = self._users(item.key)
            try:
                request = sip.parse_message(item.payload)
                cpim = parse_cpim(request.body) if isinstance(request, SipRequest) else None
            except (sip.SipParseError, CpimError):
                cpim = None
            if user is None or cpim is None or not isinstance(request, SipRequest):
                self._durable.remove(item.id)
                continue
            state = item.meta.get("state", WAITING)
            watched = _Watched(item.id, user, request, cpim.message_id, state=state if state in (
                WAITING, REVOKING, TO_SMS) else WAITING, deadline=float(item.meta.get("deadline", 0.0)))
            if watched.state == TO_SMS:
                self._watched[watched.message_id] = watched
                self._send_by_sms(watched)
            else:
                self._arm(watched)

    def stop(self) -> None:
        for watched in self._watched.values():
            if watched.timer:
                watched.timer.cancel()

    # -- inside ----------------------------------------------------------------------
    def _arm(self, watched: _Watched) -> None:
        self._watched[watched.message_id] = watched
        delay = max(0.0, watched.deadline - clock.wall())
        watched.timer = asyncio.get_running_loop().call_later(delay, self._due, watched)

    def _due(self, watched: _Watched) -> None:
        if self._watched.get(watched.message_id) is not watched:
            return
        if watched.state == REVOKING:
            self._give_up(watched, f"{watched.user.name}'s client did not answer the revoke within "
                                   f"{REMEMBER_REVOKE:g} s: not sent by SMS (it may have the message)")
            return
        binding = self._registrar.binding(watched.user)
        if binding is None:
            self._give_up(watched, f"{watched.user.name} is not registered now: the message cannot be revoked, "
                                   "not sent by SMS (it may have reached the client)")
            return
        cpim = parse_cpim(watched.request.body)
        envelope = revoke.revoke_message(revoke.RevokeRequest(watched.message_id), sender=cpim.sender,
                                         recipient=cpim.recipient)
        original = watched.request.headers
        headers = sip.Headers()
        headers.add("Max-Forwards", "70")   # the proxy puts its Via on top
        headers.add("From", sip.name_addr(sip.uri_of(original.get("From")), tag=sip.new_tag()))
        headers.add("To", sip.name_addr(sip.uri_of(original.get("To"))))
        headers.add("Call-ID", sip.new_call_id("revoke"))
        headers.add("CSeq", "1 MESSAGE")
        for name in ("Conversation-ID", "P-Preferred-Service"):
            if original.get(name):
                headers.add(name, original.get(name) or "")
        headers.add("Content-Type", "message/cpim")
        req = SipRequest("MESSAGE", binding.target, headers)
        req.body = envelope.to_bytes()
        # Its answer counts whenever it comes: a client that says "success" has dropped the message.
        self._set_state(watched, REVOKING, REMEMBER_REVOKE)
        watched.timer = asyncio.get_running_loop().call_later(REMEMBER_REVOKE, self._due, watched)
        note = (f"{watched.user.name} has not confirmed delivery within {self.seconds:g} s: "
                "RCC.07 revoke, to send it by SMS instead")
        sent = self._proxy.send_own(req, binding.flow, request_uri=binding.target, note=note,
                                    on_final=lambda status: self._revoke_answered(watched, status))
        if not sent:
            self._revoke_answered(watched, 503)

    def _revoke_answered(self, watched: _Watched, status: int) -> None:
        """The revoke's own SIP answer. A timeout (408) may hide a client that got it: its revoke
        response still counts; any other refusal means the client never took the revoke."""
        if status >= 300 and status != 408 and self._watched.get(watched.message_id) is watched \
                and watched.state == REVOKING:
            self._give_up(watched, f"the revoke was answered {status}: not sent by SMS "
                                   f"(it may have reached {watched.user.name}'s client)")

    def _send_by_sms(self, watched: _Watched) -> None:
        assert self._to_iwf is not None
        fwd = SipRequest("MESSAGE", watched.request.uri, watched.request.headers.copy(), watched.request.body)
        fwd.headers.remove("Via")   # a transaction of ours, not the original sender's
        route = Route(SMS, f"not delivered within {self.seconds:g} s: revoked, sent by SMS")
        fwd.headers.set(Route.HEADER, route.to_header())
        self._proxy.send_own(fwd, self._to_iwf(), request_uri=fwd.uri, note=route.reason,
                             on_final=lambda status: self._handed_on(watched, status))

    def _handed_on(self, watched: _Watched, status: int) -> None:
        if status >= 300:   # the IWF's answer on the ladder says why
            log.warning("the IWF answered %s: revoked message %s not sent by SMS", status, watched.message_id)
        self._done(watched)

    def _give_up(self, watched: _Watched, why: str) -> None:
        """No SMS: the answer (or its absence) that decided it is on the ladder; the log says why."""
        log.info("message %s: %s", watched.message_id, why)
        self._done(watched)

    def _done(self, watched: _Watched) -> None:
        if watched.timer:
            watched.timer.cancel()
        if self._watched.get(watched.message_id) is watched:
            del self._watched[watched.message_id]
            self._durable.remove(watched.item)

    def _set_state(self, watched: _Watched, state: str, wait: float) -> None:
        watched.state, watched.deadline = state, clock.wall() + wait
        self._durable.update_meta(watched.item, {"state": state, "deadline": watched.deadline})

    def _from(self, req: SipRequest, user: User) -> bool:
        return self._user_by_uri(sip.uri_of(req.headers.get("From"))) is user

