"""The gate (one PDU per release, order kept) and the lab clock (timers stand still while it is paused)."""
from __future__ import annotations

import asyncio
import threading

from iwlab.backends import clock
from iwlab.backends.clock import LabClock, LabLoop, monotonic, wall
from iwlab.backends.gate import Gate, Hop
from tests.helpers.jumpable import Jumpable
from tests.helpers.waiting import wait_until


def hop(name: str) -> Hop:
    return Hop("A", "B", "SIP", name)


def test_an_open_gate_runs_the_work_at_once():
    gate, done = Gate(), []
    gate.admit(lambda: done.append(1), lambda: hop("x"))
    gate.follow(lambda: done.append(2))
    assert done == [1, 2] and gate.held == []


def test_stepping_holds_every_pdu_and_release_lets_exactly_one_go_in_order():
    gate, done = Gate(), []
    gate.hold()
    for name in ("first", "second", "third"):
        gate.admit(lambda name=name: done.append(name), lambda name=name: hop(name))
    gate.follow(lambda: done.append("close"))     # no PDU: goes right after what was before it
    assert done == [] and [h.kind for h in gate.held] == ["first", "second", "third"]
    assert gate.release().kind == "first" and done == ["first"]
    assert gate.release().kind == "second" and done == ["first", "second"]
    assert gate.release().kind == "third" and done == ["first", "second", "third", "close"]
    assert gate.release() is None


def test_work_released_from_the_gate_that_admits_more_queues_it_behind():
    gate, done = Gate(), []
    gate.hold()
    gate.admit(lambda: gate.admit(lambda: done.append("answer"), lambda: hop("answer")), lambda: hop("request"))
    gate.release()
    assert done == [] and [h.kind for h in gate.held] == ["answer"]
    gate.open()                                     # stepping ends: everything goes, in order
    assert done == ["answer"] and not gate.stepping
    gate.admit(lambda: done.append("later"), lambda: hop("later"))
    assert done == ["answer", "later"]


def test_a_failing_pdu_does_not_jam_the_gate():
    gate, done = Gate(), []
    gate.hold()
    gate.admit(lambda: 1 / 0, lambda: hop("broken"))
    gate.admit(lambda: done.append("next"), lambda: hop("next"))
    gate.release()
    gate.release()
    assert done == ["next"]


def test_a_coroutine_end_waits_for_its_passage():
    async def scenario():
        gate, done = Gate(), []
        gate.hold()

        async def end():
            await gate.passage(lambda: hop("reply"))
            done.append("reply")
        task = asyncio.ensure_future(end())
        await gate.wait_held()
        assert done == []
        gate.release()
        await task
        assert done == ["reply"]
    asyncio.run(scenario())


def test_the_clock_leaves_out_the_time_it_stood_still():
    source = Jumpable()
    clock = LabClock(source)
    start_wall = clock.wall()
    clock.pause()
    start = clock.monotonic()
    source.ahead += 100
    assert clock.paused and clock.monotonic() == start
    clock.resume()
    assert not clock.paused and clock.monotonic() - start < 1 and clock.stood_still() >= 100
    assert abs(clock.wall() - start_wall) < 1
    clock.pause()
    clock.pause()                                 # counted: both must be resumed
    clock.resume()
    assert clock.paused
    clock.run_freely()
    assert not clock.paused


def test_a_timer_on_a_lab_loop_does_not_run_out_while_the_clock_is_paused():
    source = Jumpable()
    loop = LabLoop(LabClock(source))
    fired: list[float] = []

    async def scenario():
        assert abs(monotonic() - loop.time()) < 1 and abs(wall() - loop.clock.wall()) < 1
        loop.call_later(10, lambda: fired.append(loop.time()))
        loop.clock.pause()
        source.ahead += 60                       # a minute passes while the world waits
        await loop.when_idle()                   # the loop did all it could: the timer is not due
        assert fired == []
        loop.clock.resume()
        await loop.when_idle()
        assert fired == []                       # the lab's time went on where it stood
        source.ahead += 10
        await loop.when_idle()                   # idle only after the now-due timer ran
        assert len(fired) == 1
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 20))
    finally:
        loop.close()


def test_when_idle_waits_for_the_bytes_on_a_socket_to_be_handled():
    loop = LabLoop()
    got: list[bytes] = []

    class Echo(asyncio.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            got.append(data)
            self.transport.write(data)

    class Client(asyncio.Protocol):
        def data_received(self, data):
            got.append(b"back " + data)

    async def scenario():
        server = await loop.create_server(Echo, "127.0.0.1", 0)
        transport, _ = await loop.create_connection(Client, "127.0.0.1", server.sockets[0].getsockname()[1])
        await loop.when_idle()
        transport.write(b"ping")
        await loop.when_idle()                   # the world did all it could: the echo came back
        assert got == [b"ping", b"back ping"]
        transport.close()
        server.close()
        await server.wait_closed()
    try:
        loop.run_until_complete(asyncio.wait_for(scenario(), 20))
    finally:
        loop.close()


def running_loop() -> tuple[LabLoop, threading.Thread]:
    loop = LabLoop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    return loop, thread


def stop(loop: LabLoop, thread: threading.Thread) -> None:
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def test_a_loop_asked_to_give_way_runs_nothing_until_it_is_let_go():
    loop, thread = running_loop()
    ran: list[str] = []
    try:
        with loop.give_way():
            with loop.give_way():               # held further up the same thread: no deadlock
                loop.call_soon_threadsafe(ran.append, "woken")
                wait_until(lambda: loop.giving_way, what="the loop waiting at its next turn")
                loop.call_soon_threadsafe(ran.append, "meanwhile")
                assert loop.giving_way and "meanwhile" not in ran   # it cannot run: it waits on the lock
        wait_until(lambda: "meanwhile" in ran, what="the loop going on once let go")
        assert not loop.giving_way
    finally:
        stop(loop, thread)


def test_a_loop_goes_on_if_it_is_not_let_go_in_time(monkeypatch):
    monkeypatch.setattr(clock, "GIVE_WAY_MAX", 0.01)
    loop, thread = running_loop()
    ran: list[int] = []
    try:
        with loop.give_way():                   # never let go while the loop has work
            for n in range(3):
                loop.call_soon_threadsafe(ran.append, n)
            wait_until(lambda: ran == [0, 1, 2], what="the work done all the same")
    finally:
        stop(loop, thread)
