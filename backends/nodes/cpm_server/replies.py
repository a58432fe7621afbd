"""The one way a CPM server's parts answer a request themselves (rather than relay an answer)."""
from __future__ import annotations

from typing import Iterable

from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest, make_response
from iwlab.backends.transports.sip import SipConnection, SipConnectionClosed


def respond(conn: SipConnection, req: SipRequest, status: int, reason: str, note: str = "",
            extra_headers: Iterable[tuple[str, str]] = ()) -> None:
    """Answer `req` on `conn`; nothing answers an ACK, and a requester that went away is told nothing."""
    if req.method == "ACK":
        return
    response = make_response(req, status, reason, to_tag=sip.new_tag())
    for name, value in extra_headers:
        response.headers.add(name, value)
    try:
        conn.send(response, note=note)
    except SipConnectionClosed:
        pass
