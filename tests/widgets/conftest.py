import asyncio
import gc

import pytest


@pytest.fixture
def qasync_loop(qapp):
    """The test's QApplication driven by a qasync loop, as `iwlab` runs it; closed afterwards."""
    import qasync
    from PySide6.QtCore import QTimer
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
    for task in pending:
        task.cancel()
    if pending:
        loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()
    asyncio.set_event_loop(None)
    QTimer.singleShot(0, qapp.quit)      # clear the quit flag qasync left set (FIELD-NOTES)
    qapp.exec()
    _collect_here()


@pytest.fixture(autouse=True)
def _qt_garbage_collected_on_the_gui_thread(request):
    """After each test, what it left of Qt goes here, on the GUI thread. Left to the cycle
    collector, it goes wherever the collector next runs: often a lab thread, where deleting a
    QObject (qasync's timers, a closed window) corrupts the GUI thread's timer list (a segfault in
    QTimerInfoList::activateTimers, seen under pytest)."""
    yield
    if "qapp" in request.fixturenames or "qtbot" in request.fixturenames:
        _collect_here()


def _collect_here() -> None:
    from PySide6.QtCore import QCoreApplication, QEvent
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)   # windows closed by qtbot
    gc.collect()
