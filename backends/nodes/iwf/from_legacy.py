"""5.9.6, legacy -> CPM: an SMS or email user asks a CPM user for a chat session.

A text to a CPM user that starts with the request keyword becomes an INVITE (From the legacy
user's tel: URI, or his address; with an SDP offer: the IWF connects for MSRP) through the IWF's
CPM server, on the sessions' own link. The answer is adapted back as a text; no answer in time
-> CANCEL and a text saying so; the end keyword before the answer withdraws the request.
"""
from __future__ import annotations

import asyncio
import uuid

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.iwf.cpm_leg import CpmLeg
from iwlab.backends.nodes.iwf.session import Direction, IwfSession, SessionRules, SessionState, reply_subject
from iwlab.backends.nodes.iwf.session_table import SessionTable
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import mail, sdp, sip
from iwlab.backends.protocols.cpim import CPM_SESSION_ICSI, CPM_SESSION_SERVICE
from iwlab.backends.topology import Topology, User
from iwlab.backends.transports.msrp import MsrpListener, connect, local_session
from iwlab.backends.transports.sip import SipConnectionClosed


class FromLegacy:
    def __init__(self, *, table: SessionTable, link: CpmLeg, listener: MsrpListener, rules: SessionRules,
                 topology: Topology, threads: ThreadMap, host: str, name: str, nodes: NodeDirectory) -> None:
        """link: the sessions' own connection into CPM (the INVITE, its ACK, a CANCEL go by it)."""
        self._table = table
        self._link = link
        self._listener = listener
        self._rules = rules
        self._topology = topology
        self._threads = threads
        self._host = host
        self._name = name
        self._nodes = nodes

    def set_rules(self, rules: SessionRules) -> None:
        """New session words or patience (a scenario's setting); sessions already ringing keep their timer."""
        self._rules = rules

    async def request_by_sms(self, source: str, dest: str, invitee: User) -> None:
        requester = self._topology.user_by_number(source)
        name = requester.name if requester else f"+{source}"
        session = IwfSession(call_id=self._link.new_call_id(), direction=Direction.FROM_LEGACY, cpm_user=invitee,
                             cpm_uri=invitee.cpm_uri or "", legacy_number=source, legacy_name=name, sms_source=dest,
                             local_uri=f"tel:+{source}", remote_target=invitee.cpm_uri or "")
        self._table.add(session)
        await self._listener.start()
        thread = self._threads.inbound_sms(peer=source, dest_number=dest, cpm_uri=invitee.cpm_uri)
        await self._invite_cpm_user(session, invitee, thread.conversation_id if thread else "",
                                    note=f"{name} asked for a chat by SMS ({self._rules.request_word}): "
                                         f"a CPM session invitation to {invitee.name}")

    async def request_by_email(self, incoming: mail.IncomingEmail, invitee: User) -> None:
        """From an email user: his identity as EmailLeg.relay shows it (tel: when the lab knows him)."""
        requester = self._topology.user_by_email(incoming.sender)
        name = requester.name if requester else (incoming.sender_name or incoming.sender)
        # EmailLeg.hand_on checked that the address makes a sip: URI before handing it here.
        uri = f"tel:{requester.tel}" if requester and requester.tel else sip.sip_uri_for_address(incoming.sender)
        call_id = self._link.new_call_id()
        thread = self._threads.find_by_ids(mail.thread_key_candidates(incoming))
        session = IwfSession(call_id=call_id, direction=Direction.FROM_LEGACY, cpm_user=invitee,
                             cpm_uri=invitee.cpm_uri or "", legacy_number="", legacy_name=name, sms_source="",
                             legacy_email=incoming.sender, local_uri=uri, remote_target=invitee.cpm_uri or "",
                             email_thread=incoming.message_id,      # our answers thread under his request
                             email_subject=reply_subject(incoming.subject, f"Chat with {invitee.name}"))
        self._table.add(session)
        await self._listener.start()
        await self._invite_cpm_user(session, invitee, thread.conversation_id if thread else "",
                                    note=f"{name} asked for a chat by email ({self._rules.request_word}): "
                                         f"a CPM session invitation to {invitee.name}")

    def withdraw(self, session: IwfSession) -> None:
        """The requester sent the end keyword before the CPM user answered (our INVITE is out)."""
        assert session.invite is not None
        self._table.cancel(session.invite)
        self._table.finish(session, SessionState.CANCELLED)
        self._table.tell(session, f"You withdrew your chat request to {session.cpm_name}.")

    async def _invite_cpm_user(self, session: IwfSession, invitee: User, conversation_id: str, note: str) -> None:
        table, rules = self._table, self._rules
        msrp_session = local_session(self._host, self._listener.port, call_id=session.call_id,
                                     on_message=table.msrp_to_legacy(session))
        session.msrp = msrp_session
        offer = sdp.offer(host=self._host, port=self._listener.port, session_id_path=msrp_session.session_id)
        offer.path = [msrp_session.local_uri]
        cseq = next(session.cseq)
        req = table.dialog_request(session, "INVITE", cseq)
        req.headers.set("From", sip.name_addr(session.local_uri, session.legacy_name, tag=session.local_tag))
        req.headers.set("To", f"<{invitee.cpm_uri}>")
        req.headers.add("Contact", self._link.contact())
        req.headers.add("P-Preferred-Service", CPM_SESSION_SERVICE)
        req.headers.add("Accept-Contact", f'*;+g.3gpp.icsi-ref="{CPM_SESSION_ICSI}"')
        msrp_session.conversation_id = session.conversation_id = conversation_id or uuid.uuid4().hex
        req.headers.add("Conversation-ID", msrp_session.conversation_id)
        req.headers.add("Contribution-ID", uuid.uuid4().hex)
        req.headers.add("Content-Type", "application/sdp")
        req.body = offer.to_bytes()
        session.invite = req
        try:
            link = await self._link.connection()
            pending = link.request(req, note=note)
            response = await asyncio.wait_for(asyncio.shield(pending), rules.timeout)
        except asyncio.TimeoutError:
            if session.ringing:
                table.cancel(req)
                table.finish(session, SessionState.EXPIRED)
                table.tell(session, f"{invitee.name} did not answer your chat request.")
            return
        except (OSError, SipConnectionClosed) as exc:
            if session.ringing:     # not withdrawn meanwhile
                table.finish(session, SessionState.FAILED)
                table.tell(session, f"{invitee.name} could not be reached for a chat ({exc}).")
            return
        if response.status >= 300 and sip.cseq_method(response) == "INVITE":
            self._link.send_if_connected(sip.make_non2xx_ack(req, response))   # RFC 3261 17.1.1.3
        if not session.ringing:     # withdrawn meanwhile (END): a late 200 gets ACK and BYE
            if response.status < 300 and sip.cseq_method(response) == "INVITE":
                session.learn_dialog(response, invitee.cpm_uri or "")
                link.send(table.dialog_request(session, "ACK", cseq))
                await table.send_in_dialog(session, "BYE", note="the request was withdrawn")
            return
        if response.status >= 300:
            table.finish(session, SessionState.DECLINED if response.status in (486, 603) else SessionState.FAILED)
            text = f"{invitee.name} declined your chat request." if response.status == 603 else \
                f"{invitee.name} could not chat now ({response.status} {response.reason})."
            table.tell(session, text)
            return
        session.learn_dialog(response, invitee.cpm_uri or "")
        try:
            link.send(table.dialog_request(session, "ACK", cseq))
        except SipConnectionClosed:
            pass
        try:
            answer = sdp.parse_sdp(response.body)
            msrp_session.remote_path = list(answer.path)
            host, port = answer.connect_address()
            await connect(msrp_session, host, port, local_name=self._name, nodes=self._nodes)
        except (sdp.SdpError, OSError) as exc:
            if session.ringing:
                table.finish(session, SessionState.FAILED)
            await table.send_in_dialog(session, "BYE", note=f"no MSRP connection: {exc}")
            table.tell(session, f"The chat with {invitee.name} could not start.")
            return
        if not session.ringing:     # ended while MSRP connected (END, or a BYE): nothing to start
            return
        session.move(SessionState.ESTABLISHED)
        table.tell(session, f"{invitee.name} accepted: you are now chatting; reply {rules.end_word} to stop.")
