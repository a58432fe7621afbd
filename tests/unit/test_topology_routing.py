"""The topology as data, and the routing decision as a table."""
import itertools

import pytest

from iwlab.backends.routing import CPM, EMAIL, NONE, SMS, STORE, decide_route
from iwlab.backends.topology import TopologyError, User, load_topology, parse_topology


def test_default_lab_matches_the_design():
    topo = load_topology()
    mary, peter, john = topo.user("mary"), topo.user("peter"), topo.user("john")
    assert (mary.operator, mary.sip, mary.tel, mary.device) == ("A", "sip:mary@cpm-a.lab", "+15550101", "cpm")
    assert (peter.operator, peter.tel, peter.device) == ("B", "+15550201", "sms")
    assert (john.operator, john.tel, john.email, john.device) == ("B", "+15550202", "john@mail-b.lab", "email")
    assert topo.iwf_operator().id == "B"
    assert mary.contacts == ["peter", "john"]


@pytest.mark.parametrize("uri, who", [
    ("sip:mary@cpm-a.lab", "mary"), ("<sip:MARY@CPM-A.LAB>", "mary"), ("tel:+15550101", "mary"),
    ("sip:+15550201@cpm-b.lab;user=phone", "peter"), ("tel:+15550202", "john"),
    ("mailto:john@mail-b.lab", "john"), ("sip:nobody@cpm-a.lab", None), ("tel:+15550299", None),
])
def test_users_by_uri(uri, who):
    user = load_topology().user_by_uri(uri)
    assert (user.id if user else None) == who


@pytest.mark.parametrize("uri, operator", [
    ("tel:+15550201", "B"), ("tel:+15550209", "B"), ("tel:+15550109", "A"), ("sip:x@cpm-a.lab", "A"),
    ("sip:x@elsewhere.example", None), ("tel:+4420000000", None),
])
def test_number_and_domain_ownership_is_data(uri, operator):
    op = load_topology().home_operator_of_uri(uri)
    assert (op.id if op else None) == operator


@pytest.mark.parametrize("data, message", [
    ({}, "no \\[\\[operators\\]\\]"),
    ({"operators": [{"id": "A", "cpm_domain": "a", "sip_port": 1}],
      "users": [{"id": "u", "name": "U", "operator": "Z", "device": "cpm"}]}, "unknown operator"),
    ({"operators": [{"id": "A", "cpm_domain": "a", "sip_port": 1}],
      "users": [{"id": "u", "name": "U", "operator": "A", "device": "fax"}]}, "device must be"),
    ({"operators": [{"id": "A", "cpm_domain": "a", "sip_port": 1}],
      "users": [{"id": "u", "name": "U", "operator": "A", "device": "sms", "tel": "5550"}]}, "international"),
    ({"operators": [{"id": "A", "cpm_domain": "a"}]}, "needs 'sip_port'"),
])
def test_bad_topologies_say_what_is_wrong(data, message):
    with pytest.raises(TopologyError, match=message):
        parse_topology(data)


def test_unreadable_file_is_a_topology_error(tmp_path):
    bad = tmp_path / "t.toml"
    bad.write_text("[[operators]\n")
    with pytest.raises(TopologyError, match="t.toml"):
        load_topology(bad)


def user(device="sms", tel="+15550201", email=None, roaming=False):
    return User(id="u", name="Peter", operator="B", device=device, tel=tel, email=email,
                roaming_without_cpm=roaming)


# (device, tel, email, registered, capable, roaming, iwf) -> (technology, reason fragment)
ROUTES = [
    (("sms", True, False, True, True, False, True), (CPM, "registered to CPM -> CPM")),
    (("sms", True, False, False, True, False, True), (SMS, "not registered to CPM -> SMS")),
    (("sms", True, False, True, False, False, True), (SMS, "not CPM-capable -> SMS")),
    (("sms", True, False, True, True, True, True), (SMS, "roaming in a network without CPM -> SMS")),
    (("email", True, True, False, False, False, True), (EMAIL, "-> email")),
    (("email", False, True, True, True, True, True), (EMAIL, "roaming")),
    (("sms", False, True, False, False, False, True), (EMAIL, "-> email")),
    (("cpm", True, False, False, True, False, True), (STORE, "stored until Peter registers")),
    (("cpm", True, False, False, True, True, True), (SMS, "roaming")),
    (("cpm", True, False, False, False, False, True), (SMS, "not registered")),
    (("sms", True, False, False, False, False, False), (NONE, "no interworking function")),
    (("sms", False, False, False, False, False, True), (NONE, "no SMS or email identity")),
]


@pytest.mark.parametrize("inputs, expected", ROUTES)
def test_route_table(inputs, expected):
    device, has_tel, has_email, registered, capable, roaming, iwf = inputs
    u = user(device, "+15550201" if has_tel else None, "p@mail-b.lab" if has_email else None, roaming)
    route = decide_route(u, registered=registered, cpm_capable=capable, iwf_available=iwf)
    assert route.technology == expected[0]
    assert expected[1] in route.reason


def test_every_combination_yields_a_reason():
    for device, registered, capable, roaming, iwf in itertools.product(
            ("cpm", "sms", "email"), (True, False), (True, False), (True, False), (True, False)):
        route = decide_route(user(device, email="p@x", roaming=roaming), registered=registered,
                             cpm_capable=capable, iwf_available=iwf)
        assert route.reason.startswith("Peter")
