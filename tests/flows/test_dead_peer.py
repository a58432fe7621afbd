"""A dead peer: the SMSC goes away while Mary writes to Peter. Nothing is lost:
the IWF keeps the message, rebinds when the SMSC is back, and delivers it in order."""

from iwlab.backends.devices.cpm_phone import CpmDevice
from tests.helpers.waiting import wait_until


def wait(predicate, timeout=15.0):
    wait_until(predicate, timeout)
    return True


def test_messages_survive_an_smsc_restart(lab_factory):
    lab = lab_factory()                 # every device simulated: Peter's handset rebinds by itself
    mary: CpmDevice = lab.lab.device("mary")
    peter = lab.lab.device("peter")
    smsc = lab.lab.smsc
    port = smsc.port
    lab.run(smsc.stop())
    assert wait(lambda: not lab.lab.iwf.sms.esme.is_bound)
    for text in ("while the SMSC is down", "and another"):
        message = lab.run(mary.send_message(lab.lab.user("peter"), text))
        assert message.status == "sent"          # 202: the IWF has it
    assert lab.call(lab.lab.iwf.sms.outbox.pending) == 2
    lab.run(smsc.start(lab.lab.host, port))
    assert wait(lambda: [s.text for s in peter.inbox] == ["while the SMSC is down", "and another"])
    notes = [e.summary for e in lab.lab.trace.events() if e.protocol == "SMPP" and e.src == "IWF"]
    assert any(s.startswith("bind_transceiver") for s in notes[1:]), "the IWF bound again"


def test_email_survives_a_mail_server_restart(lab_factory):
    lab = lab_factory()
    mary, john = lab.lab.device("mary"), lab.lab.device("john")
    mail = lab.lab.mail
    port = mail.port
    lab.run(mail.stop())
    message = lab.run(mary.send_message(lab.lab.user("john"), "mail me when you can"))
    assert message.status == "sent"
    lab.run(mail.start(lab.lab.host, port))
    assert wait(lambda: [item.parsed.text.strip() for item in john.inbox] == ["mail me when you can"])
