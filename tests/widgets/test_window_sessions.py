"""A chat session from Mary's phone in the window, Peter answering on his simulated handset."""
import pytest
from PySide6.QtCore import Qt

from iwlab.app.main_window import LabWindow


@pytest.fixture
def window(qtbot, topology):
    topology.operator("B").iwf.session_timeout_seconds = 30
    win = LabWindow(topology, theme_name="light", zoom=1.0)
    qtbot.addWidget(win)
    win.show()
    win.start_lab()
    yield win
    win.close()


def peter_replies(qtbot, handset, text: str) -> None:
    handset.inbox.setCurrentRow(handset.inbox.count() - 1)
    qtbot.mouseClick(handset.reply_button, Qt.MouseButton.LeftButton)   # back to the number it came from
    qtbot.keyClicks(handset.text, text)
    qtbot.mouseClick(handset.send_button, Qt.MouseButton.LeftButton)


def test_mary_chats_with_peter_in_a_session_from_the_window(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    phone.choose_recipient("peter")
    # The same action for every contact: no technology to choose.
    assert phone.session_button.text() == "Start chat session"
    qtbot.mouseClick(phone.session_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: handset.inbox.count() == 1, timeout=10000)
    assert "invites you to a chat session" in handset.inbox_texts()[0]
    qtbot.waitUntil(lambda: phone.session_line.text() == "Session with Peter: ringing (180 Ringing)", timeout=10000)

    peter_replies(qtbot, handset, "YES")
    qtbot.waitUntil(lambda: phone.session_line.text() == "Session with Peter: established — MSRP", timeout=10000)
    assert phone.end_button.isEnabled() and not phone.session_button.isEnabled()

    qtbot.keyClicks(phone.text, "In the session now")
    qtbot.mouseClick(phone.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "In the session now" in handset.inbox_texts(), timeout=10000)
    assert any(e.protocol == "MSRP" and "In the session now" in e.summary
               for e in window.runner.lab.trace.events()), "it went over MSRP, not as a pager MESSAGE"

    peter_replies(qtbot, handset, "Got it")
    qtbot.waitUntil(lambda: any(m.text == "Got it" and m.direction == "in"
                                for m in phone.conversation_messages()), timeout=10000)

    qtbot.mouseClick(phone.end_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: phone.session_line.text().startswith("Session with Peter: ended"), timeout=10000)
    qtbot.waitUntil(lambda: "Mary ended the chat." in handset.inbox_texts(), timeout=10000)
    assert phone.session_button.isEnabled()


def test_an_incoming_session_request_shows_a_banner_mary_accepts(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    index = handset.recipient.findData("+15550101")
    handset.recipient.setCurrentIndex(index)
    qtbot.keyClicks(handset.text, "CHAT")
    qtbot.mouseClick(handset.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: phone.session_banner.isVisible(), timeout=10000)
    assert "Peter invites you" in phone.session_banner_label.text()
    qtbot.mouseClick(phone.accept_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: phone.session_line.text() == "Session with Peter: established — MSRP", timeout=10000)
    assert not phone.session_banner.isVisible()
    qtbot.waitUntil(lambda: any("Mary accepted" in t for t in handset.inbox_texts()), timeout=10000)
