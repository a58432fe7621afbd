"""Who sends it (RFC 3325 style): the sender of a request from a device is who registered on the
connection it came on. The server asserts it (P-Asserted-Identity; any a client sent is removed)
and refuses with 403 a From naming another user, or a lab user's From on a connection nobody
registered on. In-lab nodes (the other CPM servers, the IWFs: named by their claim in the
NodeDirectory) are the trust domain: they assert for their own users, and what they send stands.
"""
from __future__ import annotations

from typing import Iterable

from iwlab.backends.directory import NodeDirectory
from iwlab.backends.nodes.cpm_server.registrar import Registrar
from iwlab.backends.protocols import sip
from iwlab.backends.protocols.sip import SipRequest
from iwlab.backends.topology import Topology
from iwlab.backends.transports.sip import SipConnection


def lab_nodes(topology: Topology) -> set[str]:
    """The node names of the trust domain: every CPM server and every IWF."""
    return {op.node_name for op in topology.operators} | set(topology.iwf_names())


class SenderIdentity:
    def __init__(self, topology: Topology, nodes: NodeDirectory, registrar: Registrar,
                 trusted_nodes: Iterable[str]) -> None:
        self._topology = topology
        self._nodes = nodes
        self._registrar = registrar
        self.trusted_nodes = set(trusted_nodes)

    def is_trusted(self, conn: SipConnection) -> bool:
        """An in-lab node: it claimed the address it connects from (NodeDirectory), which no
        outside client can do."""
        return self._nodes.lookup(conn.peer_address, conn.local_address) in self.trusted_nodes

    def refusal(self, conn: SipConnection, req: SipRequest) -> str | None:
        """Why the sender may not send this (the 403's reason), or None; asserts who sends it."""
        if self.is_trusted(conn):
            return None      # asserted by its own CPM server; its P-Asserted-Identity stands
        req.headers.remove("P-Asserted-Identity")      # RFC 3325 9.1: never trusted from outside
        from_uri = sip.uri_of(req.headers.get("From"))
        claimed = self._topology.user_by_uri(from_uri)
        registered = self._registrar.users_on(conn)
        if registered:
            if claimed not in registered:
                names = ", ".join(f"{u.name} <{u.cpm_uri}>" for u in registered)
                return f"From <{from_uri[:40]}> is not who registered on this connection ({names})"
            assert claimed is not None
            req.headers.add("P-Asserted-Identity", sip.name_addr(claimed.cpm_uri or from_uri, claimed.name))
            return None
        if claimed is not None:
            # Any lab user: a server asserts to its peers what its own connections say.
            return f"{claimed.name} is not registered on this connection: REGISTER first"
        return None      # an outside identity, sent as what it is: nobody asserts it
