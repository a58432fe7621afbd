"""The handset's and mail client's folders: every entry two lines, the newest 1,000 kept."""
from __future__ import annotations

from types import SimpleNamespace

from PySide6.QtWidgets import QListWidgetItem

from iwlab.backends.devices import history
from iwlab.widgets.chat_bubbles import ConversationModel
from iwlab.widgets.device_frame import MAX_ENTRIES, add_entry, folders, two_lines


def test_an_entry_is_two_lines_whatever_the_peer_sent() -> None:
    # A hostile ESME's source_addr or a mail subject may carry CR/LF: the folders' uniform
    # item sizes need every entry to stay two lines.
    assert two_lines("09:00  +1555\r\n0201", "one\ntwo\rthree") == "09:00  +1555  0201\none two three"


def test_a_folder_keeps_the_newest_entries_and_shows_the_last(qtbot) -> None:
    inbox, sent, tabs = folders(lambda item: None)
    qtbot.addWidget(tabs)
    assert inbox.uniformItemSizes() and sent.uniformItemSizes()
    for n in range(MAX_ENTRIES + 5):
        add_entry(inbox, QListWidgetItem(two_lines(f"sms {n}", "text")))
    assert inbox.count() == MAX_ENTRIES
    assert inbox.item(0).text().startswith("sms 5\n")
    assert inbox.item(inbox.count() - 1).text().startswith(f"sms {MAX_ENTRIES + 4}\n")


def test_an_open_conversation_shows_the_newest_messages_its_device_keeps(qtbot, monkeypatch) -> None:
    monkeypatch.setattr(history, "KEPT", 3)
    model = ConversationModel()
    sent = [SimpleNamespace(text=f"m{n}", contribution_id=f"c{n}", in_reply_to=f"c{n - 1}") for n in range(5)]
    for message in sent:
        model.append(message)
    assert [m.text for m in model.messages()] == ["m2", "m3", "m4"]
    assert model.answered(sent[3]) is sent[2]
    assert model.answered(sent[2]) is None, "what it answered is no longer held"
    changed = []
    model.dataChanged.connect(lambda first, last: changed.append(first.row()))
    model.append(SimpleNamespace(text="m5", contribution_id="c5", in_reply_to="c4"))
    assert changed == [0], "m3 quoted m2, which went: its row is laid out again"
