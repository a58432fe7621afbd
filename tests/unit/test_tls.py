"""The lab CA: a real TLS handshake on loopback with Python's ssl client trusting ca.pem."""
from __future__ import annotations

import asyncio
import ssl

from iwlab.backends.tls import LabCA


def test_a_client_that_trusts_the_written_ca_file_completes_the_handshake(tmp_path):
    ca = LabCA(["cpm-a.lab", "127.0.0.1"], tmp_path)
    assert ca.ca_file.read_text().startswith("-----BEGIN CERTIFICATE-----")

    async def handshake() -> bytes:
        async def echo(reader, writer):
            writer.write(await reader.readline())
            await writer.drain()
            writer.close()
        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ca.server_context())
        port = server.sockets[0].getsockname()[1]
        client = ssl.create_default_context(cafile=str(ca.ca_file))      # what a real client is told
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client, server_hostname="cpm-a.lab")
        writer.write(b"OPTIONS\n")
        line = await reader.readline()
        writer.close()
        server.close()
        await server.wait_closed()
        return line
    assert asyncio.run(handshake()) == b"OPTIONS\n"
