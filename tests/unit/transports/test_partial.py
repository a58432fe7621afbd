"""The deadline for a message begun and not finished, on a lab loop whose time the test moves."""
from __future__ import annotations


from iwlab.backends.clock import LabClock, LabLoop
from iwlab.backends.transports.partial import PartialDeadline
from tests.helpers.jumpable import Jumpable


def run_on_a_jumpable_loop(scenario) -> None:
    source = Jumpable()
    loop = LabLoop(LabClock(source))
    try:
        loop.run_until_complete(scenario(loop, source))
    finally:
        loop.close()


def test_a_message_left_incomplete_runs_out_the_deadline_once():
    due: list[float] = []

    async def scenario(loop, source):
        deadline = PartialDeadline(due.append, lambda: 30.0)
        deadline.update(True, completed=False)       # a message begun
        source.ahead += 29
        await loop.when_idle()
        deadline.update(True, completed=False)       # more of it, still not whole
        assert due == []
        source.ahead += 2
        await loop.when_idle()
        assert due == [30.0]
    run_on_a_jumpable_loop(scenario)


def test_whole_messages_streaming_in_never_run_it_out_nor_does_a_finished_one():
    due: list[float] = []

    async def scenario(loop, source):
        deadline = PartialDeadline(due.append, lambda: 30.0)
        for _ in range(10):                          # 100 s of chunks, each ending inside the next message
            deadline.update(True, completed=False)
            source.ahead += 10
            await loop.when_idle()
            deadline.update(True, completed=True)
        assert due == []
        deadline.update(False, completed=True)       # all whole: nothing to watch
        source.ahead += 60
        await loop.when_idle()
        assert due == []
        deadline.cancel()
    run_on_a_jumpable_loop(scenario)
