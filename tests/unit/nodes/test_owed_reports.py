"""The IWF's owed reports: durable, found by imdn.Message-ID, due at their expiry, kept across a restart."""
import asyncio

from iwlab.backends import clock
from iwlab.backends.nodes.iwf.owed_reports import OwedReports
from iwlab.backends.store import Store
from tests.helpers.waiting import until


def test_owed_until_paid_and_kept_across_a_restart(tmp_path):
    async def scenario():
        store = Store(tmp_path / "iwlab.db")
        owed = OwedReports(store.queue("IWF reports owed"), on_expired=lambda report: None)
        owed.owe("m-1", {"submitter": "15550201"}, clock.wall() + 3600)
        owed.stop()
        again = OwedReports(Store(tmp_path / "iwlab.db").queue("IWF reports owed"), on_expired=lambda r: None)
        assert again.restore() == 1
        report = again.take("m-1")
        assert report is not None and report.meta == {"submitter": "15550201"}
        assert again.take("m-1") is None
        again.paid(report)
        assert OwedReports(Store(tmp_path / "iwlab.db").queue("IWF reports owed"), lambda r: None).restore() == 0
        again.stop()
    asyncio.run(scenario())


def test_a_report_with_no_imdn_by_its_expiry_is_due():
    async def scenario():
        expired = []
        owed = OwedReports(Store().queue("IWF reports owed"), on_expired=expired.append)
        owed.owe("m-late", {}, clock.wall() - 1)     # already over
        owed.owe("m-later", {}, clock.wall() + 3600)
        await until(lambda: expired, what="the expiry")
        assert [r.imdn_message_id for r in expired] == ["m-late"]
        assert owed.get("m-late") is None and owed.get("m-later") is not None
        owed.stop()
    asyncio.run(scenario())


def test_at_most_limit_reports_are_owed():
    async def scenario():
        owed = OwedReports(Store().queue("IWF reports owed"), on_expired=lambda r: None, limit=2)
        owed.owe("m-1", {}, clock.wall() + 3600)
        assert not owed.full()
        owed.owe("m-2", {}, clock.wall() + 3600)
        assert owed.full()
        owed.paid(owed.take("m-1"))
        assert not owed.full()
        owed.stop()
    asyncio.run(scenario())
