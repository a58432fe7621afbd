"""A group chat from Mary's phone in the window: Peter (simulated handset) and John (simulated
email client) are in it; the phone shows the group, its members and who wrote each message."""
from PySide6.QtCore import Qt

from tests.widgets.test_window_sessions import peter_replies


def test_mary_starts_a_group_with_peter_and_john_and_sees_who_writes(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    john = window.runner.lab.device("john")
    assert not phone.group_picker.isVisible()
    qtbot.mouseClick(phone.group_button, Qt.MouseButton.LeftButton)
    assert phone.group_picker.isVisible() and not phone.group_picker.start_button.isEnabled()
    phone.group_picker.boxes["peter"].setChecked(True)
    phone.group_picker.boxes["john"].setChecked(True)
    qtbot.mouseClick(phone.group_picker.start_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: phone.session_line.text() == "Group chat with Peter, John: established — MSRP",
                    timeout=10000)
    assert not phone.group_picker.isVisible() and not phone.group_button.isEnabled()
    qtbot.waitUntil(lambda: any("added you to a group chat with John" in t for t in handset.inbox_texts()),
                    timeout=10000)
    qtbot.waitUntil(lambda: any("added you to a group chat with Peter" in item.parsed.text for item in john.inbox),
                    timeout=10000)

    qtbot.keyClicks(phone.text, "Hello group")
    qtbot.mouseClick(phone.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Mary: Hello group" in handset.inbox_texts(), timeout=10000)
    qtbot.waitUntil(lambda: any(item.parsed.text.strip() == "Mary: Hello group" for item in john.inbox),
                    timeout=10000)

    peter_replies(qtbot, handset, "Peter in the group")      # Reply: to the group's number
    qtbot.waitUntil(lambda: any(m.text == "Peter: Peter in the group" and m.direction == "in"
                                for m in phone.conversation_messages()), timeout=10000)
    assert phone.conversation_list.currentItem().text().startswith("Group: Peter, John")

    qtbot.mouseClick(phone.end_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: phone.session_line.text().startswith("Group chat with Peter, John: ended"), timeout=10000)
    qtbot.waitUntil(lambda: "The group chat has ended." in handset.inbox_texts(), timeout=10000)
    assert phone.group_button.isEnabled()
