"""The order badges on a handset's inbox: the order watch hands the badges of the newest
arrivals, with the number each came from; each goes on its own row, the latest of a repeated
text on its latest row, never on another sender's message with the same text."""
from __future__ import annotations

from iwlab.backends.devices.events import SmsReceived
from iwlab.backends.devices.sms_handset import Sms, SmsHandset
from iwlab.backends.directory import NodeDirectory
from iwlab.backends.topology import load_topology
from iwlab.widgets.sms_handset import SmsHandsetWidget


def handset_widget(qtbot) -> tuple[SmsHandset, SmsHandsetWidget]:
    topology = load_topology()
    handset = SmsHandset(topology.user("peter"), topology, NodeDirectory(), smsc_address=lambda: ("127.0.0.1", 9),
                         password="iwlab")   # never started: the widget only shows what it hears
    widget = SmsHandsetWidget(handset, run_in_lab=lambda coro: coro.close())
    qtbot.addWidget(widget)
    return handset, widget


MARY, JOHN = "+15550101", "+15550102"


def arrive(handset: SmsHandset, *texts: str, number: str = MARY) -> None:
    for text in texts:
        for listener in list(handset.listeners):
            listener(SmsReceived(Sms("in", number, text)))


def test_the_newest_arrivals_badges_go_on_the_newest_rows_of_their_texts(qtbot) -> None:
    handset, widget = handset_widget(qtbot)
    arrive(handset, "hi", "hi", "hi", "see you", "hi")     # the first three before the watch's window
    widget.show_order([("15550101", "see you", "1 of 2", False), ("15550101", "hi", "2 of 2 · out of order", True)])
    assert widget.order_badges() == ["", "", "", "1 of 2", "2 of 2 · out of order"]
    assert widget.inbox.item(4).text().endswith("⚠")


def test_badges_shown_again_change_only_the_row_whose_badge_changed(qtbot) -> None:
    handset, widget = handset_widget(qtbot)
    arrive(handset, "one", "two")
    widget.show_order([(MARY, "one", "1 of 2", False), (MARY, "two", "2 of 2", False)])
    changed: list[int] = []
    widget.inbox.model().dataChanged.connect(lambda top, bottom, roles=(): changed.append(top.row()))
    widget.show_order([(MARY, "one", "1 of 2", False), (MARY, "two", "2 of 2", False)])
    assert changed == []
    widget.show_order([(MARY, "one", "1 of 2", False), (MARY, "two", "2 of 2 · duplicate", True)])
    assert widget.order_badges() == ["1 of 2", "2 of 2 · duplicate"] and set(changed) == {1}


def test_another_senders_newer_message_with_the_same_text_keeps_no_badge(qtbot) -> None:
    handset, widget = handset_widget(qtbot)
    arrive(handset, "hi", "yo")
    arrive(handset, "hi", number=JOHN)        # John sent one: a single message is not numbered
    widget.show_order([("15550101", "hi", "1 of 2", False), ("15550101", "yo", "2 of 2", False)])
    assert widget.order_badges() == ["1 of 2", "2 of 2", ""]
