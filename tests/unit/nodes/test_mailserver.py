"""The lab's mail server on a real socket, with real clients: stdlib smtplib
(in a worker thread) and aiosmtplib (on the server's loop), plus a raw
socket where a client must misbehave. Each test is one asyncio.run(); waits
are on the clients' own replies, never on sleeps."""
from __future__ import annotations

import asyncio
import contextlib
import smtplib
from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import pytest
from aiosmtpd import __version__ as aiosmtpd_version

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.mail_server import MailServer
from iwlab.backends.protocols.mail import build_mdn, cpm_to_email, parse_incoming
from iwlab.backends.trace import Trace

JOHN, MARY = "john@mail-b.lab", "mary@cpm-a.lab"
NAMES = {JOHN: "John", MARY: "Mary"}


class World:
    def __init__(self, tmp_path: Path, relay=None, max_size: int = 20_000) -> None:
        self.trace, self.nodes = Trace(), NodeDirectory()
        self.relayed: list[tuple[EmailMessage, str, str]] = []
        self.delivered: list[tuple[str, str, EmailMessage]] = []

        async def hand_to_iwf(message: EmailMessage, sender: str, rcpt: str) -> None:
            self.relayed.append((message, sender, rcpt))

        callback = relay or hand_to_iwf
        self.server = MailServer(self.trace, self.nodes, maildir_root=tmp_path / "maildir",
                                 mailbox_domains={"mail-b.lab"},
                                 relay_domains={"cpm-a.lab": callback, "cpm-b.lab": callback},
                                 known_mailboxes={JOHN: "John"}, max_size=max_size, node_name_for=NAMES.get)
        self.server.on_delivered.append(lambda *args: self.delivered.append(args))
        self.port = 0

    def inbox(self, address: str = JOHN) -> list[bytes]:
        box = self.server.maildir(address)
        return [box.get_bytes(key) for key in sorted(box.keys())]

    def summaries(self, session: str | None = None) -> list[str]:
        return [e.summary for e in self.trace.events()
                if session is None or e.correlation.get("smtp_session") == session]


@contextlib.asynccontextmanager
async def running(tmp_path: Path, **kw):
    world = World(tmp_path, **kw)
    world.port = await world.server.start()
    try:
        yield world
    finally:
        await world.server.stop()


def simple(sender: str, to: str, subject: str, body: str = "hello", **headers: str) -> bytes:
    extra = "".join(f"{k.replace('_', '-')}: {v}\r\n" for k, v in headers.items())
    return f"From: {sender}\r\nTo: {to}\r\nSubject: {subject}\r\n{extra}\r\n{body}\r\n".encode()


async def raw_dialogue(port: int, *chunks: bytes) -> list[str]:
    """Send each chunk and read one full reply after it (a bare socket: no client fixes our bytes)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = [await _reply(reader)]
    for chunk in chunks:
        writer.write(chunk)
        replies.append(await _reply(reader))
    writer.close()
    await writer.wait_closed()
    return replies


async def _reply(reader: asyncio.StreamReader) -> str:
    lines = []
    while not lines or lines[-1][3:4] == "-":
        lines.append((await asyncio.wait_for(reader.readline(), 10)).decode().rstrip("\r\n"))
    return "\n".join(lines)


# -- delivery ----------------------------------------------------------------------------------
def test_mary_to_john_lands_in_maildir_with_headers_and_fires_on_delivered(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            message = cpm_to_email(sender_name="Mary", sender_address=MARY, recipient_address=JOHN,
                                   text="Lunch tomorrow? 🍜", contribution_id="c-1", conversation_id="conv-1",
                                   in_reply_to_message_id="<r1@mail-b.lab>", references=["<r0@mail-b.lab>"],
                                   domain="cpm-a.lab")
            errors, reply = await aiosmtplib.send(message, hostname="127.0.0.1", port=world.port)
            assert errors == {} and reply.startswith("2.0.0 queued as ")
            [stored] = world.inbox()
            email = parse_incoming(stored)
            assert (email.message_id, email.in_reply_to, email.conversation_id) == \
                ("<c-1@cpm-a.lab>", "<r1@mail-b.lab>", "conv-1")
            assert email.references == ["<r0@mail-b.lab>", "<r1@mail-b.lab>"]
            assert email.text == "Lunch tomorrow? 🍜" and email.disposition_notification_to == MARY
            queue_id = reply.rsplit(" ", 1)[1]
            assert stored.startswith(b"Return-Path: <mary@cpm-a.lab>\nDelivered-To: john@mail-b.lab\nReceived: ")
            assert f"with ESMTP id {queue_id}".encode() in stored and b"\r\n" not in stored
            [(address, message_id, parsed)] = world.delivered
            assert (address, message_id, str(parsed["Conversation-ID"])) == (JOHN, "<c-1@cpm-a.lab>", "conv-1")
            assert world.relayed == []
    asyncio.run(scenario())


def test_mail_for_cpm_users_goes_to_the_relay_callback(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            def john_sends() -> None:
                with smtplib.SMTP("127.0.0.1", world.port) as client:
                    client.sendmail(JOHN, [MARY], simple(JOHN, MARY, "Hi Mary", Message_ID="<j1@mail-b.lab>",
                                                         In_Reply_To="<c-1@cpm-a.lab>"))
                    mdn = build_mdn(original=cpm_to_email(
                        sender_name="Mary", sender_address=MARY, recipient_address=JOHN, text="x",
                        contribution_id="c-1", conversation_id="conv-1", domain="cpm-a.lab"),
                        reader_address=JOHN, reader_name="John")
                    client.send_message(mdn)
            await asyncio.to_thread(john_sends)
            [(message, sender, rcpt), (mdn, _, _)] = world.relayed
            assert (sender, rcpt, str(message["Subject"]), message["Message-ID"]) == \
                (JOHN, MARY, "Hi Mary", "<j1@mail-b.lab>")
            assert parse_incoming(message).in_reply_to == "<c-1@cpm-a.lab>"
            back = parse_incoming(mdn)
            assert (back.is_mdn, back.mdn_original_message_id, back.mdn_disposition) == \
                (True, "<c-1@cpm-a.lab>", "displayed")
            assert world.delivered == [] and world.inbox() == []
    asyncio.run(scenario())


def test_a_message_without_message_id_gets_one(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            await aiosmtplib.send(simple(MARY, JOHN, "no id"), sender=MARY, recipients=[JOHN],
                                  hostname="127.0.0.1", port=world.port)
            [(_, message_id, _)] = world.delivered
            assert message_id.endswith("@mail-b.lab>") and parse_incoming(world.inbox()[0]).message_id == message_id
    asyncio.run(scenario())


# -- refusals ------------------------------------------------------------------------------------
def test_relaying_to_a_foreign_domain_is_refused_and_the_server_keeps_serving(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            def attempts() -> None:
                with smtplib.SMTP("127.0.0.1", world.port) as client:
                    with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
                        client.sendmail(JOHN, ["boss@foreign.example"], simple(JOHN, "boss@foreign.example", "x"))
                    code, text = refused.value.recipients["boss@foreign.example"]
                    assert code == 550 and text.startswith(b"5.7.1 <boss@foreign.example>: Relaying denied")
                    client.sendmail(MARY, [JOHN], simple(MARY, JOHN, "after"))    # same connection
            await asyncio.to_thread(attempts)
            await aiosmtplib.send(simple(MARY, JOHN, "new connection"), sender=MARY, recipients=[JOHN],
                                  hostname="127.0.0.1", port=world.port)
            assert len(world.inbox()) == 2
    asyncio.run(scenario())


def test_unknown_mailbox_is_550_5_1_1(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=world.port) as client:
                await client.mail(MARY)
                with pytest.raises(aiosmtplib.SMTPRecipientRefused) as refused:
                    await client.rcpt("nobody@mail-b.lab")
                assert refused.value.code == 550 and refused.value.message.startswith("5.1.1 <nobody@mail-b.lab>")
                reply = await client.rcpt("JOHN@Mail-B.lab")               # case does not matter
                assert reply.code == 250
    asyncio.run(scenario())


def test_oversized_by_size_parameter_and_by_actual_data_is_552(tmp_path):
    async def scenario():
        async with running(tmp_path, max_size=20_000) as world:
            big = simple(MARY, JOHN, "big", "x" * 70 + ("\r\n" + "y" * 70) * 400)

            def send_big() -> list[tuple[int, bytes]]:
                with smtplib.SMTP("127.0.0.1", world.port) as client:
                    client.ehlo()
                    assert client.esmtp_features["size"] == "20000"
                    by_size = client.mail(MARY, [f"SIZE={len(big)}"])
                    client.rset()
                    client.mail(MARY)                                       # no SIZE: found out in DATA
                    client.rcpt(JOHN)
                    by_data = client.data(big)
                    client.sendmail(MARY, [JOHN], simple(MARY, JOHN, "small"))
                    return [by_size, by_data]
            by_size, by_data = await asyncio.to_thread(send_big)
            assert by_size == (552, b"5.3.4 Message size exceeds fixed maximum message size of 20000 bytes")
            assert by_data == (552, b"5.3.4 Message too big: more than 20000 bytes of data")
            assert [parse_incoming(m).subject for m in world.inbox()] == ["small"]
            [payload] = [e for e in world.trace.events() if e.summary.startswith("DATA (") and "too big" in e.summary]
            assert payload.fields["size"] > 20_000
    asyncio.run(scenario())


@pytest.mark.parametrize("payload, reason", [
    (b"this is not an email at all\r\n", "554 5.6.0 Message refused: no header block"),
    (b"From: mary@cpm-a.lab\r\nnot a header line\r\n\r\nbody\r\n", "554 5.6.0 Message refused: header line 2 does not parse"),
    (b"Subject: anonymous\r\n\r\nbody\r\n", "554 5.6.0 Message refused: no From header"),
])
def test_malformed_message_is_554_with_reason(tmp_path, payload, reason):
    async def scenario():
        async with running(tmp_path) as world:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=world.port) as client:
                with pytest.raises(aiosmtplib.SMTPDataError) as refused:
                    await client.sendmail(MARY, [JOHN], payload)
                assert f"{refused.value.code} {refused.value.message}".startswith(reason)
                await client.sendmail(MARY, [JOHN], simple(MARY, JOHN, "fine"))
            assert [parse_incoming(m).subject for m in world.inbox()] == ["fine"]
            refused_event = next(e for e in world.trace.events() if e.note.startswith("refused: "))
            assert reason.split(": ", 1)[1] in refused_event.fields["problem"]
    asyncio.run(scenario())


@pytest.mark.parametrize("end", [b"\n.\n", b"\n.\r\n", b"\r\n.\n"])
def test_bare_lf_smuggling_does_not_end_data(tmp_path, end):
    smuggled = (b"From: mary@cpm-a.lab\r\nTo: john@mail-b.lab\r\nSubject: outer\r\n\r\nhello" + end +
                b"MAIL FROM:<evil@cpm-a.lab>\r\nRCPT TO:<john@mail-b.lab>\r\nDATA\r\n"
                b"From: evil@cpm-a.lab\r\nSubject: smuggled\r\n\r\nsmuggled\r\n.\r\n")

    async def scenario():
        async with running(tmp_path) as world:
            replies = await raw_dialogue(world.port, b"EHLO raw\r\n", b"MAIL FROM:<mary@cpm-a.lab>\r\n",
                                         b"RCPT TO:<john@mail-b.lab>\r\n", b"DATA\r\n", smuggled,
                                         b"NOOP\r\n", b"QUIT\r\n")
            assert replies[5].startswith("554 5.6.0 Message refused: bare ")    # one DATA, refused whole
            assert replies[6:] == ["250 OK", "221 Bye"]                      # nothing smuggled ran
            assert world.inbox() == [] and world.delivered == []
    asyncio.run(scenario())


def test_failing_relay_callback_is_451_and_nothing_is_delivered(tmp_path):
    def iwf_down(message, sender, rcpt):
        raise ConnectionError("CPM-B not reachable")

    async def scenario():
        async with running(tmp_path, relay=iwf_down) as world:
            async with aiosmtplib.SMTP(hostname="127.0.0.1", port=world.port) as client:
                with pytest.raises(aiosmtplib.SMTPResponseException) as failed:
                    await client.sendmail(JOHN, [JOHN, MARY], simple(JOHN, MARY, "to both"))
            assert failed.value.code == 451
            assert failed.value.message == ("4.3.0 Temporary failure handing mail for <mary@cpm-a.lab> on: "
                                            "ConnectionError: CPM-B not reachable; try again later")
            assert world.inbox() == [] and world.delivered == []     # the client will retry it all
    asyncio.run(scenario())


def test_over_long_line_is_500_with_enhanced_code(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            replies = await raw_dialogue(world.port, b"EHLO raw\r\n", b"MAIL FROM:<mary@cpm-a.lab>\r\n",
                                         b"RCPT TO:<john@mail-b.lab>\r\n", b"DATA\r\n",
                                         b"From: mary@cpm-a.lab\r\n\r\n" + b"z" * 1500 + b"\r\n.\r\n")
            assert replies[-1] == "500 5.5.2 Line longer than 1000 octets (RFC 5321 4.5.3.1.6)"
    asyncio.run(scenario())


def test_braces_in_what_a_reply_echoes_get_proper_5xx_and_the_session_goes_on(tmp_path):
    """Issue 15, finding 4: replies went through str.format, so `FOO{` killed the session and
    `{x}` in an address gave "500 Error: (KeyError) 'x'"."""
    async def scenario():
        async with running(tmp_path) as world:
            replies = await raw_dialogue(
                world.port, b"EHLO raw\r\n", b"FOO{\r\n", b"BAR}{limit}\r\n", b"MAIL FROM:<{a}@evil.test>\r\n",
                b"RCPT TO:<{x}@evil.test>\r\n", b"RCPT TO:<{0}@cpm-a.lab>\r\n", b"RCPT TO:<john@mail-b.lab>\r\n",
                b"DATA\r\n", simple(JOHN, JOHN, "{subject}") + b".\r\n", b"QUIT\r\n")
            assert "250-ENHANCEDSTATUSCODES" in replies[1]
            assert replies[2] == '500 5.5.2 Error: command "FOO{" not recognized'
            assert replies[3] == '500 5.5.2 Error: command "BAR}{LIMIT}" not recognized'
            assert replies[4] == "250 2.1.0 OK"
            assert replies[5].startswith("550 5.7.1 <{x}@evil.test>: Relaying denied")
            assert replies[6] == "250 2.1.5 OK"
            assert replies[7] == "250 2.1.5 OK"
            assert replies[8].startswith("354 ")
            assert replies[9].startswith("250 2.0.0 queued as ")
            assert replies[10].startswith("221 ")
            assert [m.startswith(b"Return-Path: <{a}@evil.test>") for m in world.inbox()] == [True]
            summaries = world.summaries()
            assert '500 5.5.2 Error: command "FOO{" not recognized' in summaries
    asyncio.run(scenario())


def test_aiosmtpd_refusals_get_an_enhanced_code():
    from iwlab.backends.transports.smtp_server import with_enhanced_code
    assert with_enhanced_code("503 Error: need RCPT command", 10) == "503 5.5.1 Error: need RCPT command"
    assert with_enhanced_code("501 Syntax: MAIL FROM: <address>", 10) == "501 5.5.4 Syntax: MAIL FROM: <address>"
    assert with_enhanced_code("502 5.5.1 Too many unrecognized commands, goodbye.", 10).count("5.5.1") == 1
    assert with_enhanced_code("250 OK", 10) == "250 OK"
    assert with_enhanced_code("552 Error: Too much mail data", 10) == \
        "552 5.3.4 Message too big: more than 10 bytes of data"
    assert with_enhanced_code("500 Error: {x}\r\n{y}", 10) == "500 5.5.2 Error: {x}  {y}"


# -- trace ----------------------------------------------------------------------------------------
def test_every_command_and_reply_traced_once_with_node_names(tmp_path):
    async def scenario():
        async with running(tmp_path) as world:
            client = aiosmtplib.SMTP(hostname="127.0.0.1", port=world.port)
            await client.connect()
            world.nodes.claim(client.transport.get_extra_info("sockname"), "IWF")   # as the in-lab IWF does
            message = simple(MARY, JOHN, "Hi John", Message_ID="<c-9@cpm-a.lab>", Conversation_ID="conv-9")
            await client.sendmail(MARY, [JOHN], message)
            await client.quit()

            def outsiders() -> None:
                with smtplib.SMTP("127.0.0.1", world.port) as john:          # named by MAIL FROM
                    john.sendmail(JOHN, [MARY], simple(JOHN, MARY, "from John"))
                with smtplib.SMTP("127.0.0.1", world.port) as stranger:      # nobody we know
                    stranger.noop()
            await asyncio.to_thread(outsiders)
        events = world.trace.events()
        iwf = [e for e in events if e.correlation["smtp_session"] == "smtp-1"]
        assert [e.summary for e in iwf] == [
            f"220 mail-b.lab ESMTP iwlab (aiosmtpd {aiosmtpd_version})", "EHLO " + iwf[1].summary.split(" ", 1)[1],
            "250 mail-b.lab SIZE 20000 8BITMIME SMTPUTF8 ENHANCEDSTATUSCODES HELP", f"MAIL FROM:<{MARY}> size={len(message)}",
            "250 2.1.0 OK", f"RCPT TO:<{JOHN}>", "250 2.1.5 OK", "DATA", "354 End data with <CR><LF>.<CR><LF>",
            f'DATA ({len(message)} B) Subject: "Hi John"', iwf[10].summary, "QUIT", "221 Bye"]
        assert iwf[10].summary.startswith("250 2.0.0 queued as ")
        assert [(e.src, e.dst, e.is_response) for e in iwf[:2]] == [("Mail", "IWF", True), ("IWF", "Mail", False)]
        assert all({e.src, e.dst} == {"IWF", "Mail"} for e in iwf)
        assert iwf[2].raw == (b"250-mail-b.lab\r\n250-SIZE 20000\r\n250-8BITMIME\r\n250-SMTPUTF8\r\n"
                              b"250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n")                             # one multi-line reply, one event
        assert iwf[5].raw == b"RCPT TO:<john@mail-b.lab>\r\n"
        payload = iwf[9]
        assert payload.raw == message + b".\r\n"
        assert payload.fields["headers"]["Subject"] == "Hi John"
        assert payload.fields["envelope"] == {"mail_from": MARY, "rcpt_to": [JOHN]}
        assert payload.correlation["email_message_id"] == "<c-9@cpm-a.lab>"
        assert payload.correlation["conversation_id"] == "conv-9"
        assert iwf[10].correlation["email_message_id"] == "<c-9@cpm-a.lab>"
        assert iwf[10].fields["code"] == 250 and iwf[10].fields["enhanced_status"] == "2.0.0"
        john = [e for e in events if e.correlation["smtp_session"] == "smtp-2"]
        assert john[0].summary.startswith("220 ") and {john[0].dst, john[1].src} == {"John"}
        stranger = [e for e in events if e.correlation["smtp_session"] == "smtp-3"]
        assert stranger and all(e.src.startswith("127.0.0.1:") or e.dst.startswith("127.0.0.1:") for e in stranger)
        raws = [(e.correlation["smtp_session"], e.raw) for e in events if e.summary != "250 OK"]
        assert len(raws) == len(set(raws)), "an event was recorded twice"
    asyncio.run(scenario())


def test_stop_closes_open_connections_and_is_idempotent(tmp_path):
    async def scenario():
        world = World(tmp_path)
        port = await world.server.start()
        assert await world.server.start() == port
        client = aiosmtplib.SMTP(hostname="127.0.0.1", port=port)
        await client.connect()
        await client.ehlo()
        await world.server.stop()
        await world.server.stop()
        with pytest.raises(aiosmtplib.SMTPServerDisconnected):
            await client.noop()
        with pytest.raises(OSError):
            await asyncio.open_connection("127.0.0.1", port)
    asyncio.run(scenario())
