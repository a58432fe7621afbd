"""Fixtures shared by the flow tests."""
from __future__ import annotations

import pytest

from tests.helpers.raw_sip import RawSipClient
from tests.helpers.raw_smpp import SmppHandset
from tests.helpers.sessions import RawMsrpClient
from tests.helpers.sip_client import MARY


@pytest.fixture
def session_lab(lab_factory, topology):
    """session_lab(timeout, devices): a lab with a raw SIP Mary (registered), an smpplib Peter and
    a raw MSRP endpoint for Mary's media; all closed at the end."""
    clients: list = []

    def start(timeout: float = 60.0, devices: str = "none"):
        topology.operator("B").iwf.session_timeout_seconds = timeout
        lab = lab_factory(devices=devices)
        endpoints = lab.lab.endpoints()
        mary = RawSipClient(endpoints["sip"]["cpm-a.lab"])
        assert mary.register(MARY, "cpm-a.lab").status == 200
        peter = SmppHandset(endpoints["smpp"], "15550201")
        media = RawMsrpClient()
        clients.extend([mary, peter, media])
        return lab, mary, peter, media
    yield start
    for client in clients:
        client.close()
