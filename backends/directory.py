"""Who is at the other end of a socket, as a ladder node name.

In-lab clients (CPM-A connecting to CPM-B, the IWF binding to the SMSC, a
simulated handset) claim their connection (its local and remote address) right
after connecting and before sending anything, so the accepting server can name them. A peer that
claimed nothing is a real outside client: the server names it from what it
says (a REGISTER's address of record, an SMPP system_id) or by its address.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

Address = tuple[str, int]


class NodeDirectory:
    """Claims are of a connection, by both its ends: Linux gives one local port to several
    connections at once when they go to different servers (measured: 201 of 2,000 ports held by
    a connection to each of two listeners), so a port alone would name, or let go of, another
    node's connection. A bound endpoint (UDP: its port is its own) claims its port for any peer."""

    def __init__(self) -> None:
        self._names: dict[tuple[Address, Address | None], str] = {}
        self._lock = threading.Lock()

    def claim(self, local_address: Address, name: str, remote_address: Address | None = None) -> None:
        """By the client, right after connecting: its own end, and the server's (None: any)."""
        with self._lock:
            self._names[_key(local_address, remote_address)] = name

    def release(self, local_address: Address, remote_address: Address | None = None) -> None:
        with self._lock:
            self._names.pop(_key(local_address, remote_address), None)

    @contextlib.contextmanager
    def claimed(self, local_address: Address, name: str, remote_address: Address) -> Iterator[None]:
        """A claim for as long as the block runs: a client with a connection per message (else
        one claim per connection would pile up)."""
        self.claim(local_address, name, remote_address)
        try:
            yield
        finally:
            self.release(local_address, remote_address)

    def __len__(self) -> int:
        """How many claims are held: a client lets go of its own when its connection ends."""
        with self._lock:
            return len(self._names)

    def lookup(self, peer_address: Address, local_address: Address | None = None) -> str | None:
        """By the server: who claimed the connection from peer_address to its local_address."""
        with self._lock:
            found = self._names.get(_key(peer_address, local_address)) if local_address is not None else None
            return found or self._names.get(_key(peer_address, None))


def _key(local_address: Address, remote_address: Address | None) -> tuple[Address, Address | None]:
    local = (local_address[0], local_address[1])
    return local, (remote_address[0], remote_address[1]) if remote_address is not None else None


def outside_name(peer_address: Address) -> str:
    return f"{peer_address[0]}:{peer_address[1]}"
