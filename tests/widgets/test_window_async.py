"""The toolbar's Start/Stop run as qasync coroutines (the window stays live while the lab binds)."""
import asyncio


from iwlab.app.main_window import LabWindow


def test_async_start_stop_and_a_close_during_start(qtbot, topology, lab_threads_left, qasync_loop):
    loop = qasync_loop
    window = LabWindow(topology, theme_name="light")
    qtbot.addWidget(window)
    window.show()
    loop.run_until_complete(window.start_lab_async())
    assert window.runner is not None and window.phones
    loop.run_until_complete(window.stop_lab_async())
    assert window.runner is None and not window.phones

    async def close_while_starting():
        starting = asyncio.ensure_future(window.start_lab_async())
        while not window.busy:          # the start is under way on a worker thread
            await asyncio.sleep(0)
        window.close()                  # refused for now, done when the start finishes
        await starting
    loop.run_until_complete(close_while_starting())
    assert window.runner is None and not window.isVisible()
    assert lab_threads_left() == []
