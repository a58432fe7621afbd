"""What the IWF serves: a request its CPM server decided to interwork, for a person of the lab.

The decision travels in P-Iwlab-Route (made upstream, once, never here); without it the IWF
refuses (403), and a recipient the lab does not know is 404. Pager messages, session
invitations and group invitations are admitted alike.
"""
from __future__ import annotations

from typing import Callable

from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.routing import Route
from iwlab.backends.topology import Topology, User
from iwlab.backends.transports.sip import SipConnection

Respond = Callable[[SipConnection, SipRequest, int, str], None]


def admitted(conn: SipConnection, req: SipRequest, topology: Topology,
             respond: Respond) -> tuple[Route, User] | None:
    """The route and the recipient; None when refused (the refusal is answered)."""
    route = Route.from_header(req.headers.get(Route.HEADER))
    if route is None or not route.technology.interworked:
        respond(conn, req, 403, f"No interworking decision ({Route.HEADER}): "
                                "the IWF serves what its CPM server hands on")
        return None
    recipient = topology.user_by_uri(req.uri)
    if recipient is None:
        respond(conn, req, 404, "User Not Found")
        return None
    return route, recipient
