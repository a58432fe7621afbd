"""The toolbar's Start/Stop run as qasync coroutines (the window stays live while the lab binds)."""
import asyncio
import threading

import qasync
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication

from iwlab.app.main_window import LabWindow


def test_async_start_stop_and_a_close_during_start(qtbot, topology):
    app = QApplication.instance()
    loop = qasync.QEventLoop(app)
    try:
        window = LabWindow(topology, theme_name="light")
        qtbot.addWidget(window)
        window.show()
        loop.run_until_complete(window.start_lab_async())
        assert window.runner is not None and window.phones
        loop.run_until_complete(window.stop_lab_async())
        assert window.runner is None and not window.phones

        async def close_while_starting():
            starting = asyncio.ensure_future(window.start_lab_async())
            await asyncio.sleep(0)          # the start is under way on a worker thread
            window.close()                  # refused for now, done when the start finishes
            await starting
        loop.run_until_complete(close_while_starting())
        assert window.runner is None and not window.isVisible()
    finally:
        loop.close()
        asyncio.set_event_loop(None)
        QTimer.singleShot(0, app.quit)      # clear the quit flag qasync left set (FIELD-NOTES)
        app.exec()
    assert not [t for t in threading.enumerate() if t.name.startswith(("iwlab-lab", "esme-")) and t.is_alive()]
