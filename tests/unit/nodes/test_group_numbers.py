"""A group chat's SMS number: a pool number the thread map holds for it (ThreadMap.reserve), and the
conference URIs a CPM server hands to its focus."""
from iwlab.backends.nodes.conference.uris import from_focus, is_focus_uri, new_group_uri
from iwlab.backends.nodes.iwf.threads import ThreadMap
from iwlab.backends.protocols import sip

POOL = ["+15550290", "+15550291"]
MARY = "sip:mary@cpm-a.lab"


def outbound(threads: ThreadMap, conversation: str) -> str:
    return threads.outbound_sms(cpm_uri=MARY, cpm_number="+15550101", peer="+15550201",
                                conversation_id=conversation, contribution_id="m")


def test_a_reserved_number_goes_to_no_conversation_until_released():
    threads = ThreadMap("pool", pool=POOL)
    threads.reserve("+15550201", "15550290")
    assert threads.is_reserved("15550201", "+15550290") and not threads.is_reserved("15550202", "15550290")
    assert outbound(threads, "c1") == "15550291"
    assert outbound(threads, "c2") == "15550291"     # every free number taken: reuse, but never the group's
    threads.release("15550201", "15550290")
    assert outbound(threads, "c3") == "15550290"


def test_a_reserved_number_is_per_peer():
    threads = ThreadMap("pool", pool=POOL)
    threads.reserve("15550201", "15550290")
    assert threads.outbound_sms(cpm_uri=MARY, cpm_number="+15550101", peer="+15550202",
                                conversation_id="c1", contribution_id="m") == "15550290"


def test_focus_uris():
    assert is_focus_uri("sip:conference-factory@cpm-a.lab", "cpm-a.lab")
    assert is_focus_uri(new_group_uri("cpm-a.lab"), "CPM-A.lab")
    assert not is_focus_uri("sip:conference-factory@cpm-b.lab", "cpm-a.lab")
    assert not is_focus_uri("sip:mary@cpm-a.lab", "cpm-a.lab")
    assert not is_focus_uri("tel:+15550101", "cpm-a.lab") and not is_focus_uri("sip:@@", "cpm-a.lab")


def test_an_invitation_from_a_focus_says_isfocus_in_its_contact():
    def invite(contact: str) -> sip.SipRequest:
        headers = sip.Headers([("Contact", contact)] if contact else [])
        return sip.SipRequest("INVITE", "tel:+15550201", headers)
    assert from_focus(invite("<sip:group-1@cpm-a.lab;transport=tcp>;isfocus"))
    assert from_focus(invite("<sip:group-1@cpm-a.lab>;expires=60;ISFOCUS"))
    assert not from_focus(invite("<sip:isfocus@cpm-a.lab;isfocus>"))      # a URI parameter is not the header's
    assert not from_focus(invite("<sip:mary@127.0.0.1:5070;transport=tcp>"))
    assert not from_focus(invite(""))


def test_step_mode_tells_what_the_focus_hops_do():
    from iwlab.backends.gate import Hop
    from iwlab.backends.lab.hop_stories import HopStories
    from iwlab.backends.topology import load_topology
    stories = HopStories(load_topology())
    assert stories.role("Focus-A") == "focus" and stories.role("Focus-B") == "focus"
    assert "conference factory" in stories.story(Hop("CPM-A", "Focus-A", "SIP", "INVITE")).why
    assert "isfocus" in stories.story(Hop("Focus-A", "CPM-A", "SIP", "200 INVITE")).why
    assert "author" in stories.story(Hop("Focus-A", "IWF", "MSRP", "SEND")).why
    assert "author" not in stories.story(Hop("Mary", "IWF", "MSRP", "SEND")).why
