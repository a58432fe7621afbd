import asyncio

import pytest


@pytest.fixture
def qasync_loop(qapp):
    """The test's QApplication driven by a qasync loop, as `iwlab` runs it; closed afterwards."""
    import qasync
    from PySide6.QtCore import QTimer
    loop = qasync.QEventLoop(qapp)
    asyncio.set_event_loop(loop)
    yield loop
    loop.close()
    asyncio.set_event_loop(None)
    QTimer.singleShot(0, qapp.quit)      # clear the quit flag qasync left set (FIELD-NOTES)
    qapp.exec()
