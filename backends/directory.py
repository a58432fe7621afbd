"""Who is at the other end of a socket, as a ladder node name.

In-lab clients (CPM-A connecting to CPM-B, the IWF binding to the SMSC, a
simulated handset) claim their local address right after connecting and
before sending anything, so the accepting server can name them. A peer that
claimed nothing is a real outside client: the server names it from what it
says (a REGISTER's address of record, an SMPP system_id) or by its address.
"""
from __future__ import annotations

import threading

Address = tuple[str, int]


class NodeDirectory:
    def __init__(self) -> None:
        self._names: dict[Address, str] = {}
        self._lock = threading.Lock()

    def claim(self, local_address: Address, name: str) -> None:
        with self._lock:
            self._names[(local_address[0], local_address[1])] = name

    def release(self, local_address: Address) -> None:
        with self._lock:
            self._names.pop((local_address[0], local_address[1]), None)

    def lookup(self, peer_address: Address) -> str | None:
        with self._lock:
            return self._names.get((peer_address[0], peer_address[1]))


def outside_name(peer_address: Address) -> str:
    return f"{peer_address[0]}:{peer_address[1]}"
