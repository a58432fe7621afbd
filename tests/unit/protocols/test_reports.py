"""The one report mapping (IMDN <-> SMS status report <-> DSN/MDN) and where it is shown."""
from pathlib import Path

from iwlab.backends.protocols import reports, smpp
from iwlab.backends.protocols.smpp import MessageState

README = Path(__file__).resolve().parents[3] / "README.md"


def test_imdns_map_to_sms_states_by_kind_and_status():
    assert reports.sms_state_for_imdn("delivery", "delivered") == MessageState.DELIVERED
    assert reports.sms_state_for_imdn("delivery", "failed") == MessageState.UNDELIVERABLE
    assert reports.sms_state_for_imdn("display", "displayed") == MessageState.DELIVERED   # read: delivered too
    # Refused by policy or not processed says nothing of the message's fate (RFC 5438): no report.
    for kind in ("delivery", "display"):
        assert reports.sms_state_for_imdn(kind, "forbidden") is None
        assert reports.sms_state_for_imdn(kind, "error") is None
    assert {"forbidden", "error"} == reports.NO_REPORT
    assert reports.sms_state_for_imdn("processing", "stored") is None     # not an outcome: ignored
    assert reports.sms_state_for_imdn("delivery", "displayed") is None    # a status of another kind


def test_the_readme_shows_the_table_the_code_follows():
    assert reports.markdown() in README.read_text(encoding="utf-8")


def test_the_note_names_both_sides():
    assert reports.note("delivered", "SMS status report stat:DELIVRD") == (
        "report mapping: IMDN delivered <-> SMS status report stat:DELIVRD (README, Reports both ways)")


def test_stat_words_and_absolute_times():
    assert smpp.state_of_stat("DELIVRD") == MessageState.DELIVERED
    assert smpp.state_of_stat(" undeliv ") == MessageState.UNDELIVERABLE
    assert smpp.state_of_stat("FINE") is None
    stamp = smpp.absolute_time(1_800_000_000.0)
    assert stamp == "270115080000000+"
    assert abs(smpp.validity_seconds(stamp, now=1_800_000_000.0)) < 0.01


def test_sms_states_name_their_row():
    assert reports.imdn_for_sms_state(MessageState.DELIVERED) == "delivered"
    assert reports.imdn_for_sms_state(MessageState.UNDELIVERABLE) == "failed"
    assert reports.imdn_for_sms_state(MessageState.EXPIRED) == "none came in time"
