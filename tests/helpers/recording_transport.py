"""A transport that records what a protocol writes: node logic tested without sockets.

In the spirit of h11's ConnectionPair: the real protocol object (a SipConnection, an
MsrpConnection ...) runs unchanged; only the socket is replaced. Feed it bytes with
`protocol.data_received(...)`, read what it wrote with `RecordingTransport.sent()`.
"""
from __future__ import annotations

import asyncio
from typing import Any

from iwlab.backends.protocols.sip import SipParseError, SipRequest, SipResponse, SipStreamParser


class RecordingTransport(asyncio.Transport):
    def __init__(self, protocol: asyncio.Protocol, *, peer: tuple[str, int] = ("192.0.2.10", 40000),
                 local: tuple[str, int] = ("127.0.0.1", 5060)) -> None:
        super().__init__()
        self.protocol = protocol
        self.peer, self.local = peer, local
        self.written: list[bytes] = []
        self._closing = False
        protocol.connection_made(self)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self._closing, "written after close"
        self.written.append(bytes(data))

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        if not self._closing:
            self._closing = True
            asyncio.get_running_loop().call_soon(self.protocol.connection_lost, None)

    def abort(self) -> None:
        self.close()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": self.peer, "sockname": self.local}.get(name, default)

    def sent_sip(self) -> list[SipRequest | SipResponse]:
        """Everything written so far, parsed back into SIP messages."""
        parser = SipStreamParser()
        messages = [m for m in parser.feed(b"".join(self.written))]
        assert not any(isinstance(m, SipParseError) for m in messages), messages
        return messages  # type: ignore[return-value]
