"""Step mode in the window: the world waits at the gate, each Next is one hop and one ladder row."""
from PySide6.QtCore import Qt

from iwlab.backends.gate import Hop
from iwlab.backends.lab.hop_stories import HopStories


def rows(window) -> int:
    return window.ladder.model.rowCount()


def last_row(window):
    model = window.ladder.model
    return model.event_at(model.rowCount() - 1)


def test_stepping_5_8_5_hop_by_hop(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    qtbot.waitUntil(lambda: window.step_mode.toggle_action.isEnabled(), timeout=10000)
    trace = window.runner.lab.trace
    # The ladder is filled in batches: count rows only once it shows all the trace holds.
    qtbot.waitUntil(lambda: rows(window) == trace.last_seq() > 0, timeout=10000)
    before = rows(window)
    window.step_mode.toggle_action.setChecked(True)
    assert window.step_bar.isVisible()
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "Hi Peter")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    # Mary's MESSAGE waits at the gate: not on the ladder, the bar says what will go.
    qtbot.waitUntil(lambda: window.step_bar.hop_label.text().startswith("Next hop:  Mary → CPM-A  SIP"),
                    timeout=10000)
    assert rows(window) == before
    assert "5.8.5 step 1" in window.step_bar.seed_label.text()

    seen = []
    while not any(e.summary.startswith("deliver_sm ") and e.dst == "Peter" for e in seen):
        assert handset.inbox_texts() == [], "Peter's handset showed the text before the deliver_sm hop"
        count, done = rows(window), window.step_mode.hops_done
        qtbot.keyClick(window, Qt.Key.Key_Space)       # Next
        # The step's answer is in (the bar shows what waits next) and the ladder shows the whole trace.
        qtbot.waitUntil(lambda: window.step_mode.hops_done == done + 1 and rows(window) == trace.last_seq(),
                        timeout=10000)
        assert rows(window) == count + 1, "a Next let more (or less) than one hop happen"
        seen.append(last_row(window))
        assert len(seen) < 30, [e.summary for e in seen]
    hops = [(e.src, e.dst, e.summary.split()[0]) for e in seen]
    assert hops[:3] == [("Mary", "CPM-A", "MESSAGE"), ("CPM-A", "CPM-B", "MESSAGE"), ("CPM-B", "IWF", "MESSAGE")]
    assert ("IWF", "SMSC", "submit_sm") in hops
    qtbot.waitUntil(lambda: handset.inbox_texts() == ["Hi Peter"], timeout=10000)   # after deliver_sm, at once

    # Back replays the hops already stepped from the trace: their story again, their row selected.
    count, total = rows(window), len(seen)
    waiting = window.step_bar.hop_label.text()
    with qtbot.waitSignal(window.ladder.eventSelected) as selected:
        qtbot.keyClick(window, Qt.Key.Key_Left)
    assert window.step_bar.hop_label.text().startswith(f"Hop {total} of {total} (replayed):  SMSC → Peter  SMPP")
    assert selected.args[0].seq == seen[-1].seq
    qtbot.keyClick(window, Qt.Key.Key_Left)
    assert window.step_bar.hop_label.text().startswith(f"Hop {total - 1} of {total} (replayed)")
    qtbot.keyClick(window, Qt.Key.Key_Right)
    qtbot.keyClick(window, Qt.Key.Key_Right)       # past the last replayed hop: what waits now
    assert window.step_bar.hop_label.text() == waiting
    assert rows(window) == count, "replaying let nothing happen"

    # Stepping ends: what still waits goes, and the lab runs freely again.
    window.step_mode.toggle_action.setChecked(False)
    qtbot.waitUntil(lambda: all(m.status in ("sent", "delivered") for m in phone.conversation_messages()),
                    timeout=10000)
    assert not window.step_bar.isVisible()


def test_every_hop_of_the_normal_flows_has_a_story(topology):
    stories = HopStories(topology)
    assert stories.story(Hop("Mary", "CPM-A", "SIP", "MESSAGE")).seed == "5.8.5 step 1"
    assert stories.story(Hop("CPM-A", "CPM-B", "SIP", "MESSAGE")).seed == "5.8.5 step 2"
    assert stories.story(Hop("CPM-B", "IWF", "SIP", "MESSAGE")).seed == "5.8.5 step 3"
    assert stories.story(Hop("SMSC", "Peter", "SMPP", "deliver_sm")).seed == "5.8.5 step 4"
    assert stories.story(Hop("Peter", "SMSC", "SMPP", "deliver_sm_resp")).seed == "5.8.5 step 5"
    assert stories.story(Hop("Peter", "SMSC", "SMPP", "submit_sm")).seed == "5.9.5 step 1"
    assert stories.story(Hop("CPM-A", "Mary", "SIP", "MESSAGE")).seed == "5.9.5 step 4"
    assert "responsibility" in stories.story(Hop("IWF", "CPM-B", "SIP", "202 MESSAGE")).why
    assert stories.story(Hop("Mary", "CPM-A", "SIP", "OPTIONS")).why      # anything else: still a sentence


def test_the_trainer_layout_makes_the_use_cases_as_large_as_the_ladder(qtbot, window):
    window.commands.trainer_action.setChecked(True)
    ladder, panel = window.centre.sizes()
    assert window.bottom_tabs.currentWidget() is window.scenarios
    assert abs(ladder - panel) <= max(ladder, panel) * 0.2, (ladder, panel)
    window.commands.trainer_action.setChecked(False)
    ladder, panel = window.centre.sizes()
    assert ladder > panel
