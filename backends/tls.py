"""The lab's own certificate authority, for SIP over TLS (and MSRP over TLS).

Made when the lab starts (trustme, a well-kept library for exactly this): one CA and one
server certificate naming every lab domain and listening address. The CA certificate
is written into the lab's folder (`ca.pem`, listed as "ca" in the endpoints) so that a
real client - a softphone, SIPp, `openssl s_client` - can be told to trust it.
"""
from __future__ import annotations

import ssl
from pathlib import Path

import trustme


class LabCA:
    def __init__(self, names: list[str], folder: Path) -> None:
        self._ca = trustme.CA(organization_name="iwlab", organization_unit_name="lab CA")
        self._server = self._ca.issue_cert(*dict.fromkeys(names))
        self.ca_file = folder / "ca.pem"
        folder.mkdir(parents=True, exist_ok=True)
        self._ca.cert_pem.write_to_path(str(self.ca_file))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._server.configure_cert(context)
        return context

    def client_context(self) -> ssl.SSLContext:
        """For the lab's own clients: trusts the lab CA, checks the names."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._ca.configure_trust(context)
        return context
