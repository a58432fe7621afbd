"""John's email client in the window, over the lab's real SMTP and SIP."""
from PySide6.QtCore import Qt


def test_mary_and_john_by_email_from_the_window(qtbot, window):  # noqa: F811
    phone, client = window.phones["mary"], window.phones["john"]
    phone.choose_recipient("john")
    qtbot.keyClicks(phone.text, "Lunch on Friday?")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: client.inbox_subjects() == ["Lunch on Friday?"], timeout=10000)
    qtbot.waitUntil(lambda: [m.status for m in phone.conversation_messages()][:1] == ["delivered"], timeout=10000)

    client.tabs.setCurrentWidget(client.inbox)
    client.inbox.setCurrentRow(0)                      # John opens it: his client sends the MDN
    assert "Lunch on Friday?" in client.reader.toPlainText()
    qtbot.waitUntil(lambda: [m.status for m in phone.conversation_messages()][:1] == ["displayed"], timeout=10000)
    client.headers_box.setChecked(True)
    assert "Conversation-ID:" in client.reader.toPlainText()

    qtbot.mouseClick(client.reply_button, Qt.MouseButton.LeftButton)
    assert client.subject.text() == "Re: Lunch on Friday?"
    qtbot.keyClicks(client.body, "Friday works")
    qtbot.mouseClick(client.send_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: len(phone.conversation_messages()) == 2, timeout=10000)
    question, answer = phone.conversation_messages()
    assert answer.text.strip() == "Friday works"          # his client's quote of Mary was trimmed
    assert answer.in_reply_to == question.contribution_id
    assert phone.model.answered(answer) is question
    # The ladder model is filled in batches: wait for it to catch up with the trace.
    def ladder_rows():
        return [window.ladder.model.event_at(r) for r in range(window.ladder.model.rowCount())]
    qtbot.waitUntil(lambda: any(e.src == "IWF" and e.dst == "Mail" for e in ladder_rows())
                    and any(e.src == "John" for e in ladder_rows()), timeout=10000)
