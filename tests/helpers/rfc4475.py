"""What RFC 4475 (SIP torture test messages) expects for each of its messages.

Shared by the codec tests and by server-level tests that send the files over TCP.

``RFC4475_EXPECTATIONS[file]`` is the outcome for the message as one unit (a UDP
datagram, which is how the RFC presents them), through ``parse_message`` and then
``validate_request``:

* ``("accept", method)``: parses, and ``validate_request`` finds nothing to refuse.
  For the four responses the second item is the status code (an int). "accept"
  says nothing about the application's answer: a UAS may still send 501 (unknown
  method: intmeth, esc02), 415 (invut), 406/488 (sdp01), 483 at a proxy (zeromf) ...
* ``("reject", status)``: ``parse_message`` raises SipParseError with that status,
  or ``validate_request`` returns it. For a *response* "reject" means: drop it
  silently (nothing answers a response).

Over a stream (TCP) a few messages behave differently because framing is by
Content-Length (RFC 3261 18.3); ``stream_expectations(file)`` gives the events in
order, with two more kinds:

* ``("eof", 400)``: the message never completes; nothing happens until the peer
  closes its side (or an idle timer fires), then 400 (RFC 4475 3.1.2.2).
* ``("close", 400)``: framing is lost; answer 400 and close the connection
  (RFC 4475 3.1.2.3 and 3.3.9).
"""
from __future__ import annotations

import os
from pathlib import Path


def _conformance_dir() -> Path:
    """IWLAB_RFC4475_DIR, else ../shared/conformance/rfc4475 beside the checkout, else the workplace's copy."""
    if os.environ.get("IWLAB_RFC4475_DIR"):
        return Path(os.environ["IWLAB_RFC4475_DIR"])
    beside = Path(__file__).resolve().parents[3] / "shared" / "conformance" / "rfc4475"
    return beside if beside.is_dir() else Path("/work/shared/conformance/rfc4475")


RFC4475_DIR = _conformance_dir()

RFC4475_EXPECTATIONS: dict[str, tuple[str, str | int]] = {
    # 3.1.1 Valid messages: a parser must accept every one of these.
    "wsinv.dat": ("accept", "INVITE"),          # 3.1.1.1 LWS, folding, odd case, compact forms, escapes
    "intmeth.dat": ("accept", "!interesting-Method0123456789_*+`.%indeed'~"),  # 3.1.1.2 every token char
    "esc01.dat": ("accept", "INVITE"),          # 3.1.1.3 valid %-escapes in URIs
    "escnull.dat": ("accept", "REGISTER"),      # 3.1.1.4 escaped NULs in URIs
    "esc02.dat": ("accept", "RE%47IST%45R"),    # 3.1.1.5 % that is not an escape: NOT a REGISTER, C%6Fntact not Contact
    "lwsdisp.dat": ("accept", "OPTIONS"),       # 3.1.1.6 no LWS between display name and <
    "longreq.dat": ("accept", "INVITE"),        # 3.1.1.7 long values, 34 Vias in many spellings
    "dblreq.dat": ("accept", "REGISTER"),       # 3.1.1.8 trailing octets in a datagram are discarded
    "semiuri.dat": ("accept", "OPTIONS"),       # 3.1.1.9 ';' inside the user part
    "transports.dat": ("accept", "OPTIONS"),    # 3.1.1.10 SCTP / TLS / UNKNOWN transports in Via
    "mpart01.dat": ("accept", "MESSAGE"),       # 3.1.1.11 multipart body with binary part
    "unreason.dat": ("accept", 200),            # 3.1.1.12 UTF-8 reason phrase (response)
    "noreason.dat": ("accept", 100),            # 3.1.1.13 empty reason phrase (response)
    # 3.1.2 Invalid messages.
    "badinv01.dat": ("reject", 400),            # 3.1.2.1 stray ; and , in Via and Contact
    "clerr.dat": ("reject", 400),               # 3.1.2.2 Content-Length larger than the datagram
    "ncl.dat": ("reject", 400),                 # 3.1.2.3 negative Content-Length
    "scalar02.dat": ("reject", 400),            # 3.1.2.4 CSeq > 2**32-1 (Max-Forwards, Expires also too big)
    "scalarlg.dat": ("reject", 400),            # 3.1.2.5 response with CSeq > 2**32-1: discarded
    "quotbal.dat": ("reject", 400),             # 3.1.2.6 unterminated quoted display name
    "ltgtruri.dat": ("reject", 400),            # 3.1.2.7 Request-URI enclosed in <>
    "lwsruri.dat": ("reject", 400),             # 3.1.2.8 LWS inside the Request-URI
    "lwsstart.dat": ("reject", 400),            # 3.1.2.9 several SP between request-line elements
    "trws.dat": ("reject", 400),                # 3.1.2.10 SP after SIP-Version
    "escruri.dat": ("reject", 400),             # 3.1.2.11 headers in a SIP Request-URI
    "baddate.dat": ("reject", 400),             # 3.1.2.12 Date not in GMT
    "regbadct.dat": ("reject", 400),            # 3.1.2.13 URI with ? in a Contact not enclosed in <>
    "badaspec.dat": ("reject", 400),            # 3.1.2.14 LWS inside <addr-spec>
    "baddn.dat": ("reject", 400),               # 3.1.2.15 unquoted non-token display name ("Bell, Alexander")
    "badvers.dat": ("reject", 505),             # 3.1.2.16 SIP/7.0
    "mismatch01.dat": ("reject", 400),          # 3.1.2.17 CSeq method != request method
    "mismatch02.dat": ("reject", 400),          # 3.1.2.18 unknown method, CSeq mismatch: 501 preferred, 400 acceptable
    "bigcode.dat": ("reject", 400),             # 3.1.2.19 response with a 10-digit status code: discarded
    # 3.2 Transaction layer.
    "badbranch.dat": ("reject", 400),           # 3.2.1 branch is the bare magic cookie (400 or RFC 2543 matching)
    # 3.3 Application layer: well formed, refused by a UAS / registrar.
    "insuf.dat": ("reject", 400),               # 3.3.1 no To, From, Call-ID
    "unkscm.dat": ("reject", 416),              # 3.3.2 unknown Request-URI scheme
    "novelsc.dat": ("reject", 416),             # 3.3.3 registered but atypical scheme (soap.beep)
    "unksm2.dat": ("reject", 400),              # 3.3.4 parses; a registrar refuses a non-SIP AOR in To
    "bext01.dat": ("reject", 420),              # 3.3.5 unknown Require option (answer lists it in Unsupported)
    "invut.dat": ("accept", "INVITE"),          # 3.3.6 unknown body type: a UAS answers 415, a proxy forwards
    "regaut01.dat": ("accept", "REGISTER"),     # 3.3.7 unknown Authorization scheme: ignore or challenge
    "multi01.dat": ("reject", 400),             # 3.3.8 repeated single-value headers
    "mcl01.dat": ("reject", 400),               # 3.3.9 conflicting Content-Length values
    "bcast.dat": ("accept", 200),               # 3.3.10 response; a proxy must not forward it to 255.255.255.255
    "zeromf.dat": ("accept", "OPTIONS"),        # 3.3.11 Max-Forwards 0: a UAS answers, a proxy says 483
    "cparam01.dat": ("accept", "REGISTER"),     # 3.3.12 bare Contact: ;unknownparam is a contact param
    "cparam02.dat": ("accept", "REGISTER"),     # 3.3.13 <Contact>: ;unknownparam is a URI param
    "regescrt.dat": ("accept", "REGISTER"),     # 3.3.14 escaped Route header inside a <Contact> URI
    "sdp01.dat": ("accept", "INVITE"),          # 3.3.15 Accept excludes SDP: the UAS answers 406/488
    # 3.4 Backward compatibility.
    "inv2543.dat": ("accept", "INVITE"),        # 3.4.1 RFC 2543: no branch, no tags, no Max-Forwards, no Content-Length
}

# Where a stream differs from a datagram (see the module docstring).
RFC4475_STREAM_EXPECTATIONS: dict[str, list[tuple[str, str | int]]] = {
    # Two framed requests on TCP; the INVITE's Content-Length (150) is 5 short of its
    # body, leaving "C\r\n\r\n": a header block without Content-Length.
    "dblreq.dat": [("accept", "REGISTER"), ("accept", "INVITE"), ("close", 400)],
    "clerr.dat": [("eof", 400)],      # waits for 9999 octets that never come
    "baddn.dat": [("eof", 400)],      # this copy has no empty line after the headers
    "ncl.dat": [("close", 400)],
    "mcl01.dat": [("close", 400)],
    "inv2543.dat": [("close", 400)],  # no Content-Length: cannot be framed on TCP (RFC 3261 18.3)
}


def stream_expectations(name: str) -> list[tuple[str, str | int]]:
    return RFC4475_STREAM_EXPECTATIONS.get(name, [RFC4475_EXPECTATIONS[name]])
