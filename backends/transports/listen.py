"""Listening on every lab address with one port number (IPv4 and IPv6 alike)."""
from __future__ import annotations

import asyncio
from typing import Callable


async def listen_on(factory: Callable[[], asyncio.BaseProtocol], hosts: str | list[str],
                    port: int) -> list[asyncio.Server]:
    """A TCP server on each address, all on `port` (0: the number the first address got)."""
    loop = asyncio.get_running_loop()
    servers: list[asyncio.Server] = []
    try:
        for host in [hosts] if isinstance(hosts, str) else hosts:
            server = await loop.create_server(factory, host, port)
            servers.append(server)
            port = server.sockets[0].getsockname()[1]
    except BaseException:
        for server in servers:
            server.close()
        raise
    return servers
