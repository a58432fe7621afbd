"""The conditions panel and the visible order check, in the window over real sockets."""
from PySide6.QtCore import Qt

from iwlab.backends.lab.checks import Check, evaluate

TEXTS = [f"row {i} of 5" for i in range(1, 6)]


def send_five(qtbot, phone):
    phone.choose_recipient("peter")
    for text in TEXTS:
        qtbot.keyClicks(phone.text, text)
        qtbot.keyClick(phone.text, Qt.Key.Key_Return)


def in_place(handset) -> bool:
    """Each message badged with its place in the row, none flagged. The badge says "3 of 5", or
    "1 of 1" for one that arrived before Mary had sent the next: the place is what must hold."""
    return [b.split(" of ")[0] for b in handset.order_badges()] == ["1", "2", "3", "4", "5"] and \
        all("⚠" not in handset.inbox.item(i).text() for i in range(handset.inbox.count()))


def wait_for_conditions(qtbot, window, *parts):
    qtbot.waitUntil(lambda: all(p in window.conditions.summary.text() for p in parts), timeout=10000)


def test_throttle_and_delay_from_the_panel_keep_five_in_order(qtbot, window):
    panel, handset = window.conditions, window.phones["peter"]
    panel.throttle.setValue(2)
    panel.delay.setValue(30)
    panel.jitter.setValue(40)
    wait_for_conditions(qtbot, window, "ESME_RTHROTTLED, 1 in 2", "30 ms late (+ up to 40 ms jitter)")
    send_five(qtbot, window.phones["mary"])
    qtbot.waitUntil(lambda: handset.inbox_texts() == TEXTS, timeout=20000)
    # The order check, green: each in its place, nothing flagged.
    qtbot.waitUntil(lambda: in_place(handset), timeout=10000)
    notes = [e.note for e in window.runner.lab.trace.events()]
    assert any("throttled (condition: 1 submit_sm in 2)" in n for n in notes)
    assert any("(condition: delay 30 ms + up to 40 ms jitter)" in n for n in notes)


def test_ordering_off_is_a_demonstration_that_flags_the_inversion_and_fails_the_verdict(qtbot, window):
    panel, handset = window.conditions, window.phones["peter"]
    panel.throttle.setValue(2)            # the throttled ones are retried out of turn ...
    panel.jitter.setValue(50)
    panel.ordering.setChecked(False)      # ... once the IWF no longer keeps the conversation in order
    assert panel.ordering_warning.isVisibleTo(panel)
    wait_for_conditions(qtbot, window, "DEMO: IWF ordering off", "1 in 2")
    window.runner.call(setattr, window.runner.lab.iwf.sms.outbox, "unordered_retry_delay", 0.5)
    send_five(qtbot, window.phones["mary"])
    qtbot.waitUntil(lambda: sorted(handset.inbox_texts()) == sorted(TEXTS), timeout=20000)
    assert handset.inbox_texts() != TEXTS
    qtbot.waitUntil(lambda: any(b.endswith("out of order") for b in handset.order_badges()), timeout=10000)
    flagged = [handset.inbox.item(i).text() for i in range(5) if "⚠" in handset.inbox.item(i).text()]
    assert flagged
    lab = window.runner.lab
    verdict = window.runner.call(evaluate, Check("delivered", ["CPM-IOP-xxx-5"], {"to": "peter", "texts": TEXTS}),
                                 lab.trace.events(), lab)
    assert not verdict.passed and "in this order" in verdict.detail and verdict.evidence
    panel.ordering.setChecked(True)
    wait_for_conditions(qtbot, window, "1 in 2")
    qtbot.waitUntil(lambda: "DEMO" not in panel.summary.text(), timeout=10000)


def test_link_cuts_binds_refused_slow_mail_and_a_silent_phone_from_the_panel(qtbot, window):
    panel, handset = window.conditions, window.phones["peter"]
    panel.drop_every.setValue(1)          # not a useful value (nothing would be taken): it becomes 2
    assert panel.drop_every.value() == 2
    panel.mail_delay.setValue(20)
    panel.answering["mary"].setChecked(False)
    wait_for_conditions(qtbot, window, "SMSC cuts a link at 1 request in 2", "mail server answers 20 ms late",
                        "the CPM phone of mary answers nothing")
    assert not window.runner.lab.devices["mary"].answering
    panel.answering["mary"].setChecked(True)
    send_five(qtbot, window.phones["mary"])
    qtbot.waitUntil(lambda: handset.inbox_texts() == TEXTS, timeout=20000)
    qtbot.waitUntil(lambda: in_place(handset), timeout=10000)
    notes = [e.note for e in window.runner.lab.trace.events()]
    assert any("cuts this link at 1 request in 2" in n for n in notes)
    panel.refuse_seconds.setValue(1)
    qtbot.mouseClick(panel.refuse_button, Qt.MouseButton.LeftButton)
    wait_for_conditions(qtbot, window, "refuses binds (ESME_RBINDFAIL)")
    qtbot.mouseClick(panel.full_button, Qt.MouseButton.LeftButton)
    wait_for_conditions(qtbot, window, "mail server busy (452 4.3.1)")
    qtbot.mouseClick(panel.not_busy_button, Qt.MouseButton.LeftButton)
    panel.drop_every.setValue(0)
    panel.mail_delay.setValue(0)
    qtbot.waitUntil(lambda: "cuts a link" not in panel.summary.text() and "mail" not in panel.summary.text(),
                    timeout=10000)
