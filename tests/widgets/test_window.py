"""The lab window, offscreen, over real sockets: type, send, watch the hops."""
import contextlib
import socket

import pytest
from PySide6.QtCore import Qt

from iwlab.app.main_window import LabWindow, ladder_nodes
from iwlab.backends.lab.control import run_command


def ladder_events(win):
    model = win.ladder.model
    return [model.event_at(row) for row in range(model.rowCount())]


def test_columns_follow_the_topology(topology):
    assert ladder_nodes(topology) == ["Mary", "CPM-A", "Focus-A", "IWF-A", "CPM-B", "IWF", "SMSC", "Mail", "Content",
                                      "Peter", "John"]


def test_mary_sends_to_peter_from_the_window(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    # The address book lists people only: no "SMS" or "CPM" choice (CPM-IOP-003).
    names = [phone.recipient.itemText(i) for i in range(phone.recipient.count())]
    assert names == ["Peter", "John"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "Hi Peter")
    qtbot.mouseClick(phone.send_button, Qt.MouseButton.LeftButton)
    qtbot.keyClicks(phone.text, "Are you there?")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)

    qtbot.waitUntil(lambda: handset.inbox_texts() == ["Hi Peter", "Are you there?"], timeout=10000)
    assert handset.inbox.item(0).text().split("\n")[0].endswith("+15550101")   # shown as the number

    # Mary's bubbles, with their tick moving past "sending".
    qtbot.waitUntil(lambda: [m.text for m in phone.conversation_messages()] == ["Hi Peter", "Are you there?"],
                    timeout=10000)
    qtbot.waitUntil(lambda: all(m.status in ("sent", "delivered") for m in phone.conversation_messages()),
                    timeout=10000)

    # Every hop on the ladder, in order of causality for the first message.
    def hops():
        return [(e.src, e.dst, e.summary.split()[0]) for e in ladder_events(window)]
    wanted = [("Mary", "CPM-A", "MESSAGE"), ("CPM-A", "CPM-B", "MESSAGE"), ("CPM-B", "IWF", "MESSAGE"),
              ("IWF", "SMSC", "submit_sm"), ("SMSC", "Peter", "deliver_sm")]
    qtbot.waitUntil(lambda: all(hop in hops() for hop in wanted), timeout=10000)
    seen = hops()
    assert [seen.index(hop) for hop in wanted] == sorted(seen.index(hop) for hop in wanted)
    qtbot.waitUntil(lambda: ("CPM-A", "Mary", "202") in hops(), timeout=10000)      # the answer comes back


def test_selecting_a_row_shows_its_decoded_fields(qtbot, window):
    phone = window.phones["mary"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "inspect me")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: any(e.summary.startswith("submit_sm ") for e in ladder_events(window)), timeout=10000)
    target = next(e for e in ladder_events(window) if e.summary.startswith("submit_sm "))
    with qtbot.waitSignal(window.ladder.eventSelected) as selected:
        assert window.ladder.select_seq(target.seq)
    assert selected.args[0] is target
    tree_text = window.inspector_text()
    assert "destination_addr" in tree_text and "15550201" in tree_text
    assert window.inspector.hex.toPlainText().startswith("0000")


def test_device_toggles_change_the_route(qtbot, window):
    phone = window.phones["mary"]
    assert phone.registered_box.isChecked()
    phone.registered_box.setChecked(False)          # a real REGISTER with Expires 0
    qtbot.waitUntil(lambda: not window.runner.lab.device("mary").registered, timeout=10000)
    qtbot.waitUntil(lambda: any(e.summary.startswith("REGISTER") and "Expires: 0" in e.raw.decode()
                                for e in ladder_events(window)), timeout=10000)
    qtbot.waitUntil(lambda: phone.status_pill.text() == "○ offline", timeout=10000)   # the event crosses threads


def test_closing_leaves_no_thread_task_or_port(qtbot, topology, lab_threads_left):
    win = LabWindow(topology, theme_name="dark")
    qtbot.addWidget(win)
    win.show()
    win.start_lab()
    assert win.ladder.table.give_way == win.runner.loop.give_way   # its lab pauses while the rows paint
    endpoints = win.runner.lab.endpoints()
    addresses = [*endpoints["sip"].values(), endpoints["smpp"], endpoints["iwf_sip"]]
    workdir = win.runner.lab.workdir
    assert workdir.exists()
    win.close()
    assert win.runner is None and win.ladder.table.give_way is contextlib.nullcontext
    assert not workdir.exists()        # the lab's temporary folder went with it
    assert lab_threads_left() == []
    for address in addresses:
        host, port = address.rsplit(":", 1)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection((host, int(port)), timeout=2).close()


def test_zoom_and_theme(qtbot, window):
    from PySide6.QtWidgets import QApplication
    before = QApplication.font().pointSizeF()
    window.zoom_in_action.trigger()
    assert QApplication.font().pointSizeF() > before
    window.zoom_reset_action.trigger()
    assert QApplication.font().pointSizeF() == pytest.approx(before)
    window.theme_box.setCurrentText("Dark")
    assert QApplication.palette().window().color().lightness() < 80


def test_peters_reply_shows_in_marys_thread_and_her_tick_turns_delivered(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "Dinner at eight?")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: handset.inbox.count() == 1, timeout=10000)
    # The SMSC's receipt became an IMDN: the tick says delivered.
    qtbot.waitUntil(lambda: [m.status for m in phone.conversation_messages()][:1] == ["delivered"], timeout=10000)

    handset.inbox.setCurrentRow(0)
    qtbot.mouseClick(handset.reply_button, Qt.MouseButton.LeftButton)
    assert handset.recipient.currentData() == "+15550101"     # to the number it came from
    qtbot.keyClicks(handset.text, "Yes, see you there")
    qtbot.keyClick(handset.text, Qt.Key.Key_Return)

    qtbot.waitUntil(lambda: len(phone.conversation_messages()) == 2, timeout=10000)
    question, answer = phone.conversation_messages()
    assert answer.direction == "in" and answer.text == "Yes, see you there"
    assert answer.conversation_id == question.conversation_id      # same thread
    assert answer.in_reply_to == question.contribution_id          # attached to what it answers
    assert phone.conversation_list.count() == 1
    assert phone.model.answered(answer) is question
    phone.threaded_box.setChecked(False)                           # flat view: no attachment shown
    assert phone.model.answered(answer) is None
    # Peter's handset asked for a status report: Mary's phone's IMDN made it, and his sent row says so.
    qtbot.waitUntil(lambda: handset.sent.count() == 1 and "[✓ delivered]" in handset.sent.item(0).text(),
                    timeout=10000)


def test_thread_policy_switches_at_run_time(qtbot, window):
    window.thread_policy_actions["pool"].trigger()
    assert window.runner.lab.iwf.threads.policy == "pool"
    phone, handset = window.phones["mary"], window.phones["peter"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "from the pool")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: handset.inbox.count() == 1, timeout=10000)
    assert handset.inbox.item(0).text().split("\n")[0].endswith("+15550290")


def test_show_only_one_conversation(qtbot, window):
    phone = window.phones["mary"]
    for contact, text in (("peter", "to Peter"), ("john", "to John")):
        phone.choose_recipient(contact)
        qtbot.keyClicks(phone.text, text)
        qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: sum(e.summary.startswith("MESSAGE") and e.src == "Mary"
                                for e in ladder_events(window)) == 2, timeout=10000)
    first = next(e for e in ladder_events(window) if e.summary.startswith("MESSAGE") and "to Peter" in e.summary)
    # The 202 comes back later than the request, and the ladder fills in batches: wait for it.
    qtbot.waitUntil(lambda: any(e.is_response and e.summary.startswith("202")
                                and e.correlation.get("call_id") == first.correlation.get("call_id")
                                for e in ladder_events(window)), timeout=10000)
    window.ladder.set_conversation_filter(first.correlation["conversation_id"])
    shown = [window.ladder.proxy.event_at(r) for r in range(window.ladder.proxy.rowCount())]
    assert shown and all("to John" not in e.summary for e in shown)
    assert any(e.is_response and e.summary.startswith("202") for e in shown), "responses stay with their request"
    assert window.all_conversations_action.isEnabled()
    window.all_conversations_action.trigger()
    assert window.ladder.proxy.rowCount() == window.ladder.model.rowCount()


def test_a_failing_action_is_reported_not_swallowed(qtbot, window):
    async def broken():
        raise ValueError("the SMSC said no")
    with qtbot.waitSignal(window.labError) as reported:
        window.run_in_lab(broken())
    assert "the SMSC said no" in reported.args[0]


def test_save_and_open_a_trace(qtbot, window, tmp_path):
    phone = window.phones["mary"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "keep this")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: any(e.summary.startswith("deliver_sm ") for e in ladder_events(window)), timeout=10000)
    shown = [(e.seq, e.summary, e.raw) for e in ladder_events(window)]
    window.save_trace(str(tmp_path / "trace.json"))
    window.open_trace(str(tmp_path / "trace.json"))
    assert window.runner is None                     # the lab stopped; the ladder shows the file
    assert [(e.seq, e.summary, e.raw) for e in ladder_events(window)] == shown
    window.open_trace(str(tmp_path / "missing.json"))    # a clear error, nothing lost
    assert [(e.seq, e.summary, e.raw) for e in ladder_events(window)] == shown


def test_file_export_writes_the_ladder_as_pcapng(qtbot, window, tmp_path):
    """File → Export trace as pcapng: what the ladder shows, as packets tshark reads (when installed)."""
    import shutil
    import subprocess
    phone = window.phones["mary"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "to wireshark")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: any(e.summary.startswith("deliver_sm ") for e in ladder_events(window)), timeout=10000)
    path = tmp_path / "trace.pcapng"
    window.export_pcapng(str(path))
    data = path.read_bytes()
    assert data[:4] == b"\x0a\x0d\x0d\x0a"                     # a pcapng section header block
    assert b"to wireshark" in data
    tshark = shutil.which("tshark")
    if tshark:
        smsc_port = window.runner.lab.smsc.port            # free ports: tell tshark which one is SMPP
        out = subprocess.run([tshark, "-r", str(path), "-d", f"tcp.port=={smsc_port},smpp", "-T", "fields",
                              "-e", "frame.protocols", "-e", "_ws.malformed"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
        assert "smpp" in out and "malformed" not in out     # SMPP carries its addresses too


def test_a_trainer_flips_peters_conditions_and_the_route_changes(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]

    def send(text):
        phone.choose_recipient("peter")
        qtbot.keyClicks(phone.text, text)
        qtbot.keyClick(phone.text, Qt.Key.Key_Return)

    def reason_for(text):
        for e in ladder_events(window):
            if e.src == "CPM-B" and text in e.summary and e.note:
                return e.note
        return None

    send("by SMS")
    qtbot.waitUntil(lambda: reason_for("by SMS") == "Peter is not registered to CPM -> SMS via SMSC", timeout=10000)

    handset.capable_box.setChecked(True)
    handset.cpm_app_box.setChecked(True)        # Peter installs a CPM app: a real REGISTER at CPM-B
    qtbot.waitUntil(lambda: "peter" in window.runner.lab.cpm_apps and window.runner.lab.cpm_apps["peter"].registered,
                    timeout=10000)
    qtbot.waitUntil(lambda: handset.cpm_app is not None, timeout=10000)
    send("by CPM")
    qtbot.waitUntil(lambda: reason_for("by CPM") == "Peter is registered to CPM -> CPM", timeout=10000)
    qtbot.waitUntil(lambda: any("by CPM" in handset.inbox.item(i).text() and "[CPM]" in handset.inbox.item(i).text()
                                for i in range(handset.inbox.count())), timeout=10000)

    handset.roaming_box.setChecked(True)        # abroad, in a network without CPM
    qtbot.waitUntil(lambda: not window.runner.lab.cpm_apps["peter"].registered, timeout=10000)
    send("while roaming")
    qtbot.waitUntil(lambda: reason_for("while roaming") == "Peter is roaming in a network without CPM -> SMS via SMSC",
                    timeout=10000)


def test_a_lab_that_cannot_start_leaves_no_thread_behind(topology, lab_threads_left):
    import socket as socket_module

    from iwlab.backends.lab.lab import Lab
    from iwlab.backends.lab.lab_thread import LabThread
    blocker = socket_module.socket()
    blocker.bind(("127.0.0.1", 0))
    blocker.listen()
    topology.operator("A").sip_port = blocker.getsockname()[1]   # already taken
    try:
        with pytest.raises(OSError):
            LabThread(Lab(topology)).start()
    finally:
        blocker.close()
    assert lab_threads_left() == []


def test_peters_switches_follow_changes_made_elsewhere(qtbot, window):
    handset = window.phones["peter"]
    window.runner.run(run_command(window.runner.lab, "state peter roaming=yes"))
    qtbot.waitUntil(handset.roaming_box.isChecked, timeout=10000)
    window.runner.run(run_command(window.runner.lab, "state peter roaming=no registered=yes"))
    qtbot.waitUntil(lambda: handset.cpm_app_box.isChecked() and not handset.roaming_box.isChecked(), timeout=10000)
    assert handset.cpm_app is window.runner.lab.cpm_apps["peter"]


def test_the_status_bar_shows_what_the_nodes_hold(qtbot, window):
    """Peter's handset is off: the SMSC holds Mary's message, and the window says so."""
    window.runner.run(window.runner.lab.device("peter").stop())
    phone = window.phones["mary"]
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "while your phone is off")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "SMSC held 1" in window.notices.holdings_label.text(), timeout=10000)


def test_roaming_marys_phone_shows_her_sms_in_the_conversation_marked_as_sms(qtbot, window):
    phone, handset = window.phones["mary"], window.phones["peter"]
    phone.roaming_box.setChecked(True)                              # a network without CPM
    qtbot.waitUntil(lambda: not phone.device.registered, timeout=10000)
    handset.recipient.setCurrentIndex(handset.recipient.findData("+15550101"))
    qtbot.keyClicks(handset.text, "Landed?")
    qtbot.keyClick(handset.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: [m.text for m in phone.conversation_messages()] == ["Landed?"], timeout=10000)
    [message] = phone.conversation_messages()
    assert message.via == "SMS" and message.peer_name == "Peter"
    index = phone.model.index(0)
    assert ">by SMS: received" in phone.model.data(index, Qt.ItemDataRole.ToolTipRole)   # plain text in a <p>
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "Yes, just now")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: "Yes, just now" in handset.inbox_texts(), timeout=10000)   # her phone texted
    assert [m.via for m in phone.conversation_messages()] == ["SMS", "SMS"]
    assert phone.conversation_list.count() == 1                     # one conversation with Peter
    phone.roaming_box.setChecked(False)


def test_a_revoked_cpm_message_is_struck_through_on_peters_handset_beside_its_sms(qtbot, window):
    """RCC.07 fallback in the window: Peter's CPM app takes Mary's message but never confirms it;
    CPM-B revokes it and sends it by SMS. His handset shows both, the CPM one struck through, so
    the room sees that one copy reached him."""
    phone, handset, lab = window.phones["mary"], window.phones["peter"], window.runner.lab
    window.runner.run(run_command(lab, "state peter registered=yes capable=yes confirming=no"))
    qtbot.waitUntil(lambda: handset.cpm_app is not None, timeout=10000)
    window.runner.call(setattr, lab.cpm_servers["B"].fallback, "seconds", 0.5)
    phone.choose_recipient("peter")
    qtbot.keyClicks(phone.text, "Are you there?")
    qtbot.keyClick(phone.text, Qt.Key.Key_Return)

    def rows():
        return [handset.inbox.item(i) for i in range(handset.inbox.count()) if "Are you there?" in handset.inbox.item(i).text()]
    qtbot.waitUntil(lambda: len(rows()) == 2 and any("revoked" in r.text() for r in rows()), timeout=20000)
    revoked = [r for r in rows() if "revoked" in r.text()]
    by_sms = [r for r in rows() if "[CPM" not in r.text()]
    assert len(revoked) == 1 and revoked[0].font().strikeOut() and "it comes by SMS" in revoked[0].toolTip()
    assert len(by_sms) == 1 and not by_sms[0].font().strikeOut()
