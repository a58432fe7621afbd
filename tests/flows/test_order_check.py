"""The order check reads the trace: positions per sender, inversions and duplicates flagged."""
from __future__ import annotations

import asyncio

import pytest

from iwlab.backends.lab.evidence import check_order
from tests.helpers.waiting import wait_until


def send_all(lab, texts):
    mary = lab.lab.device("mary")
    peter = lab.lab.user("peter")

    async def burst():
        await asyncio.gather(*(mary.send_message(peter, text) for text in texts))
    lab.run(burst(), timeout=30)


def order_at_peter(lab, count: int, timeout: float = 20.0):
    def order():
        return check_order(lab.lab.user("mary"), lab.lab.user("peter"), lab.lab.trace.events(), lab.lab.topology)
    wait_until(lambda: len(order().arrivals) >= count, timeout, f"{count} arrivals at Peter")
    return order()


@pytest.mark.parametrize("ordering", [True, False], ids=["iwf-keeps-order", "ordering-off-demo"])
def test_positions_and_inversions_under_throttling(lab_factory, ordering):
    lab = lab_factory(throttle_every=2)
    lab.call(setattr, lab.lab.iwf.sms.outbox, "ordering_enabled", ordering)
    texts = ["one", "two", "three"]
    send_all(lab, texts)
    order = order_at_peter(lab, 3)
    assert sorted(a.text for a in order.arrivals) == sorted(texts)     # nothing lost, nothing doubled
    assert not any(a.duplicate for a in order.arrivals)
    if ordering:
        assert order.in_order and [a.badge for a in order.arrivals] == ["1 of 3", "2 of 3", "3 of 3"]
    else:   # "two" is throttled and retried a second later, after "three"
        assert not order.in_order
        assert [a.text for a in order.arrivals] == ["one", "three", "two"]
        assert order.arrivals[-1].badge == "2 of 3 · out of order"
