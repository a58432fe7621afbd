"""The CPM server's logic without sockets: real SipConnections on recording transports.

Each connection is one the server's listener would have accepted
(`CpmServer.new_connection`); the test feeds it bytes and reads back what the
server wrote on it. The server is never started, so nothing binds a port.
"""
from __future__ import annotations

import asyncio
import functools
import time

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.cpm_server.proxy import TRANSACTION_TIMEOUT
from iwlab.backends.nodes.cpm_server.server import CpmServer
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, SipResponse
from iwlab.backends.topology import load_topology
from iwlab.backends.trace import Trace
from tests.helpers.recording_transport import RecordingTransport

PORT = 5060
MARY = "sip:mary@cpm-a.lab"
MARY_CONTACT = ('<sip:mary@192.0.2.10:40000;transport=tcp>'
                ';+g.3gpp.icsi-ref="urn%3Aurn-7%3A3gpp-service.ims.icsi.oma.cpm.msg"')
PETER_FROM = "<sip:+15550201@cpm-b.lab>;tag=p1"


def in_loop(test):
    """Run an async test on its own event loop (SipConnection needs a running loop)."""
    @functools.wraps(test)
    def run():
        asyncio.run(test())
    return run


class Peer:
    """One connection to the server, as the listener would have accepted it; `node`: the in-lab
    node it plays (it claims its address, as open_connection does), None for an outside client."""

    def __init__(self, server: CpmServer, address: tuple[str, int], node: str | None = None) -> None:
        if node:
            server.nodes.claim(address, node)
        self.conn = server.new_connection()
        self.transport = RecordingTransport(self.conn, peer=address, local=(server.host, PORT))
        self.address = address
        self._read = 0

    def send(self, message: SipRequest | SipResponse) -> None:
        self.conn.data_received(message.to_bytes())

    def received(self) -> list[SipRequest | SipResponse]:
        """What the server wrote on this connection since the last call."""
        messages = self.transport.sent_sip()
        new, self._read = messages[self._read:], len(messages)
        return new


def cpm_a(topology=None) -> CpmServer:
    topology = topology or load_topology()
    operator = topology.operator("A")
    server = CpmServer(operator, topology, Trace(), NodeDirectory(), host="127.0.0.1",
                       server_address=lambda operator_id: None)
    server.port = PORT   # as start() would set it: our Via and Record-Route name it
    return server


def register(peer: Peer, *, contact: str = MARY_CONTACT, expires: int = 600, aor: str = MARY,
             authorization: str | None = None, cseq: int = 1) -> SipRequest:
    req = sip.make_request("REGISTER", "sip:cpm-a.lab", via=peer.address, from_=f"<{aor}>;tag=r1",
                           to=f"<{aor}>", call_id="reg-1@test", cseq=cseq)
    req.headers.add("Contact", contact)
    req.headers.add("Expires", str(expires))
    if authorization:
        req.headers.add("Authorization", authorization)
    peer.send(req)
    return req


def message(peer: Peer, text: str, *, to: str = MARY, max_forwards: int | None = 69, call_id: str = "",
            from_: str = PETER_FROM, extra: tuple[tuple[str, str], ...] = ()) -> SipRequest:
    req = sip.make_request("MESSAGE", to, via=peer.address, from_=from_, to=f"<{to}>",
                           call_id=call_id or sip.new_call_id("test"), cseq=1)
    if max_forwards is not None:
        req.headers.set("Max-Forwards", str(max_forwards))
    for name, value in extra:
        req.headers.add(name, value)
    req.headers.add("Content-Type", "text/plain")
    req.body = text.encode()
    peer.send(req)
    return req


def only(messages: list) -> SipRequest | SipResponse:
    assert len(messages) == 1, messages
    return messages[0]


# -- registrar ------------------------------------------------------------------------------

@in_loop
async def test_register_binds_the_user_to_its_flow_and_answers_200_with_contact_and_expires():
    server = cpm_a()
    heard = []
    server.registration_listeners.append(lambda user, registered: heard.append((user.id, registered)))
    mary = Peer(server, ("192.0.2.10", 40000))
    register(mary, expires=600)
    ok = only(mary.received())
    assert isinstance(ok, SipResponse) and ok.status == 200
    assert sip.uri_of(ok.headers.get("Contact")) == "sip:mary@192.0.2.10:40000;transport=tcp"
    assert ok.headers.get("Contact").endswith(";expires=600")
    assert ok.headers.get("Expires") == "600"
    user = server.topology.user("mary")
    assert server.is_registered(user)
    assert server.bindings["mary"].connection is mary.conn and server.bindings["mary"].cpm_capable
    assert server.route_for(user).technology == "cpm"
    assert heard == [("mary", True)]

    register(mary, expires=0)   # unregister
    assert only(mary.received()).status == 200
    assert not server.is_registered(user) and heard == [("mary", True), ("mary", False)]


@in_loop
async def test_unknown_user_gets_404_to_register_and_to_message():
    server = cpm_a()
    peer = Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    register(peer, aor="sip:nobody@cpm-a.lab")
    assert only(peer.received()).status == 404
    message(peer, "hello?", to="sip:nobody@cpm-a.lab")
    answer = only(peer.received())
    assert (answer.status, answer.reason) == (404, "User Not Found")


@in_loop
async def test_max_forwards_0_gets_483():
    server = cpm_a()
    mary, peer = Peer(server, ("192.0.2.10", 40000)), Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    register(mary)
    mary.received()
    message(peer, "looping", max_forwards=0)
    assert only(peer.received()).status == 483
    assert mary.received() == []   # not forwarded


# -- identity (issue 15, finding 6) ---------------------------------------------------------------

MARY_FROM = "<sip:mary@cpm-a.lab>;tag=m0"


@in_loop
async def test_a_connection_nobody_registered_on_cannot_send_as_a_lab_user():
    server = cpm_a()
    mary = Peer(server, ("192.0.2.10", 40000))
    register(mary)
    mary.received()
    stranger = Peer(server, ("192.0.2.30", 40003))
    for claimed in (MARY_FROM, "<tel:+15550202>;tag=j1", PETER_FROM):   # CPM-A's user, and B's John and Peter
        message(stranger, "it's me", from_=claimed)
        refused = only(stranger.received())
        assert refused.status == 403 and "REGISTER first" in refused.reason
    assert mary.received() == []
    message(stranger, "an outsider, as what he is", from_="<sip:eve@evil.test>;tag=e1")
    delivered = only(mary.received())
    assert "P-Asserted-Identity" not in delivered.headers      # nobody asserts an outside identity


@in_loop
async def test_the_server_asserts_the_registered_sender_and_refuses_another_users_from():
    server = cpm_a()
    mary = Peer(server, ("192.0.2.10", 40000))
    register(mary)
    mary.received()
    message(mary, "note to self", from_=MARY_FROM, extra=(("P-Asserted-Identity", "<sip:john@cpm-b.lab>"),))
    delivered = only(mary.received())
    assert delivered.headers.get_all("P-Asserted-Identity") == ['"Mary" <sip:mary@cpm-a.lab>']   # hers, not John
    message(mary, "as John", from_="<tel:+15550202>;tag=j2")
    refused = only(mary.received())
    assert refused.status == 403 and "is not who registered on this connection (Mary" in refused.reason


@in_loop
async def test_a_trusted_peer_is_not_second_guessed():
    server = cpm_a()
    mary = Peer(server, ("192.0.2.10", 40000))
    register(mary)
    mary.received()
    cpm_b = Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    message(cpm_b, "from Peter", extra=(("P-Asserted-Identity", "<tel:+15550201>"),))
    delivered = only(mary.received())
    assert delivered.headers.get("P-Asserted-Identity") == "<tel:+15550201>"


@in_loop
async def test_a_second_registration_from_another_connection_is_noted_and_takes_the_identity():
    server = cpm_a()
    first, second = Peer(server, ("192.0.2.10", 40000)), Peer(server, ("192.0.2.11", 41000))
    register(first)
    first.received()
    register(second, contact="<sip:mary@192.0.2.11:41000;transport=tcp>")
    assert only(second.received()).status == 200
    [ok] = [e for e in server.trace.events() if e.summary.startswith("200") and e.dst != "192.0.2.10:40000"][-1:]
    assert "binding replaced" in ok.note and "192.0.2.10:40000" in ok.note
    message(first, "still me?", from_=MARY_FROM)
    assert only(first.received()).status == 403            # the old flow no longer is Mary


@in_loop
async def test_digest_authentication_when_the_topology_gives_a_password():
    topology = load_topology()
    topology.user("mary").sip_password = "s3cret"
    server = cpm_a(topology)
    mary = Peer(server, ("192.0.2.10", 40000))
    register(mary)
    challenge = only(mary.received())
    assert challenge.status == 401
    www = challenge.headers.get("WWW-Authenticate")
    assert sip.parse_digest(www)["realm"] == "cpm-a.lab" and not server.is_registered(topology.user("mary"))
    wrong = sip.digest_authorization(www, username="mary", password="guess", method="REGISTER", uri="sip:cpm-a.lab")
    register(mary, authorization=wrong, cseq=2)
    assert only(mary.received()).status == 401
    right = sip.digest_authorization(www, username="mary", password="s3cret", method="REGISTER", uri="sip:cpm-a.lab")
    register(mary, authorization=right, cseq=3)
    assert only(mary.received()).status == 200 and server.is_registered(topology.user("mary"))
    thief = Peer(server, ("192.0.2.11", 41000))
    register(thief, authorization=right, cseq=4)          # the same credentials replayed: the nonce count
    assert only(thief.received()).status == 401            # did not grow
    assert server.bindings["mary"].connection is mary.conn


# -- proxy ------------------------------------------------------------------------------------

@in_loop
async def test_message_to_a_registered_user_is_forwarded_and_its_202_relayed_without_our_via():
    server = cpm_a()
    mary, peer = Peer(server, ("192.0.2.10", 40000)), Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    register(mary)
    mary.received()
    sent = message(peer, "Hi Mary", max_forwards=69)

    fwd = only(mary.received())
    assert isinstance(fwd, SipRequest) and fwd.method == "MESSAGE"
    assert fwd.uri == "sip:mary@192.0.2.10:40000;transport=tcp"   # the registered Contact
    vias = fwd.headers.get_all("Via")
    assert len(vias) == 2 and vias[1] == sent.headers.get("Via")
    top = sip.parse_via(vias[0])
    assert (top.host, top.port) == ("127.0.0.1", PORT)
    assert sip.top_branch(fwd) not in ("", sip.top_branch(sent))
    assert fwd.headers.get("Max-Forwards") == "68"
    assert fwd.body == b"Hi Mary"
    assert "Record-Route" not in fwd.headers   # pager mode: no session path to keep

    mary.send(sip.make_response(fwd, 202, to_tag="m1"))
    accepted = only(peer.received())
    assert accepted.status == 202
    assert accepted.headers.get_all("Via") == [sent.headers.get("Via")]


@in_loop
async def test_an_unanswered_message_times_out_408():
    server = cpm_a()
    mary, peer = Peer(server, ("192.0.2.10", 40000)), Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    register(mary)
    message(peer, "anyone?")
    server.proxy.expire(time.monotonic() + TRANSACTION_TIMEOUT - 5)
    assert peer.received() == []
    server.proxy.expire(time.monotonic() + TRANSACTION_TIMEOUT + 1)
    assert only(peer.received()).status == 408


@in_loop
async def test_cancel_is_answered_here_and_the_proxy_sends_its_own_cancel_on_the_invites_branch():
    server = cpm_a()
    mary, peer = Peer(server, ("192.0.2.10", 40000)), Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    register(mary)
    mary.received()
    invite = sip.make_request("INVITE", MARY, via=peer.address, from_=PETER_FROM, to=f"<{MARY}>",
                              call_id="call-1@test", cseq=7)
    peer.send(invite)
    fwd = only(mary.received())
    assert fwd.method == "INVITE"
    assert fwd.headers.get("Record-Route") == f"<sip:127.0.0.1:{PORT};transport=tcp;lr>"

    peer.send(sip.make_cancel(invite))
    ok = only(peer.received())
    assert (ok.status, sip.cseq_method(ok)) == (200, "CANCEL")
    cancel = only(mary.received())
    assert cancel.method == "CANCEL" and cancel.uri == fwd.uri
    assert cancel.headers.get_all("Via") == [fwd.headers.get_all("Via")[0]]   # the same branch
    assert cancel.headers.get("CSeq") == "7 CANCEL"
    assert cancel.headers.get("Call-ID") == "call-1@test"

    mary.send(sip.make_response(cancel, 200))   # answers our CANCEL: not relayed
    assert peer.received() == []
    mary.send(sip.make_response(fwd, 487, to_tag="m2"))
    terminated = only(peer.received())
    assert terminated.status == 487 and terminated.headers.get_all("Via") == invite.headers.get_all("Via")


# -- store and forward --------------------------------------------------------------------------

@in_loop
async def test_messages_for_an_offline_cpm_user_are_stored_and_delivered_in_order_on_register():
    server = cpm_a()
    peer = Peer(server, ("192.0.2.20", 40001), node="CPM-B")
    message(peer, "first")
    message(peer, "second")
    answers = peer.received()
    assert [a.status for a in answers] == [202, 202]
    assert all("stored" in a.reason for a in answers)

    mary = Peer(server, ("192.0.2.10", 40000))
    register(mary)
    ok, delivered = mary.received()
    assert ok.status == 200
    assert delivered.method == "MESSAGE" and delivered.body == b"first"   # one in flight
    assert delivered.uri == "sip:mary@192.0.2.10:40000;transport=tcp"

    mary.send(sip.make_response(delivered, 200, to_tag="m3"))
    following = only(mary.received())
    assert following.body == b"second"
    assert peer.received() == []   # the sender had its 202 already: the device's answers stay here

    message(peer, "third")   # arrives while "second" is still out: queued behind it
    assert "queued" in only(peer.received()).reason
    assert mary.received() == []
    mary.send(sip.make_response(following, 200, to_tag="m4"))
    assert only(mary.received()).body == b"third"
