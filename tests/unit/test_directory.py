"""Who is at the other end of a socket: a claim is of a connection, by both its ends.

Linux gives one local port to several connections at once when they go to different servers,
so two in-lab clients (CPM-A to CPM-B, a handset to the SMSC) may connect from the same port
(measured on this machine: 201 of 2,000 ports held by a connection to each of two listeners)."""
from __future__ import annotations

from iwlab.backends.directory import NodeDirectory

CPM_B, SMSC = ("127.0.0.1", 5062), ("127.0.0.1", 2775)
SHARED = ("127.0.0.1", 40000)


def test_two_clients_on_one_local_port_are_named_and_let_go_each_by_its_own_connection():
    nodes = NodeDirectory()
    nodes.claim(SHARED, "CPM-A", CPM_B)
    nodes.claim(SHARED, "Peter", SMSC)
    assert nodes.lookup(SHARED, CPM_B) == "CPM-A" and nodes.lookup(SHARED, SMSC) == "Peter"
    nodes.release(SHARED, SMSC)            # Peter's connection closed: CPM-A's is still CPM-A's
    assert nodes.lookup(SHARED, CPM_B) == "CPM-A" and nodes.lookup(SHARED, SMSC) is None


def test_an_outside_client_from_a_lab_clients_port_to_another_server_is_not_named():
    nodes = NodeDirectory()
    nodes.claim(SHARED, "CPM-A", CPM_B)
    assert nodes.lookup(SHARED, ("127.0.0.1", 5060)) is None


def test_a_bound_endpoint_claims_its_port_for_any_peer():
    nodes = NodeDirectory()
    nodes.claim(SHARED, "Mary")           # UDP: the port is the endpoint's own
    assert nodes.lookup(SHARED, CPM_B) == "Mary" and nodes.lookup(SHARED) == "Mary"

