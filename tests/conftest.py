import os
import tempfile
import threading
import time

import pytest
from hypothesis import settings
from hypothesis.configuration import set_hypothesis_home_dir

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

# Property-based codec tests (tests/unit/protocols/test_*_properties.py): the same examples on every
# run, so a failure is a defect and not luck; nothing written into the checkout (no .hypothesis/).
# HYPOTHESIS_PROFILE=explore draws fresh random examples (more of them) when hunting for bugs by hand.
settings.register_profile("ci", derandomize=True, database=None, deadline=None, max_examples=50,
                          print_blob=True)
settings.register_profile("explore", derandomize=False, database=None, deadline=None, max_examples=2000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
# Even without a database Hypothesis caches (unicode tables, constants) in ./.hypothesis: keep it out.
set_hypothesis_home_dir(os.path.join(tempfile.gettempdir(), f"iwlab-hypothesis-{os.getuid()}"))


@pytest.fixture(autouse=True)
def _private_settings(tmp_path_factory):
    """Tests change the theme and zoom: never in the user's own settings, nor in the next test's."""
    from PySide6.QtCore import QSettings
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope,
                      str(tmp_path_factory.mktemp("qsettings")))

from iwlab.backends.lab.lab import Lab  # noqa: E402
from iwlab.backends.lab.lab_thread import LabThread  # noqa: E402
from iwlab.backends.topology import load_topology  # noqa: E402


@pytest.fixture
def topology():
    """The bundled default lab on free ports."""
    return load_topology().with_free_ports()


@pytest.fixture
def lab_factory(topology):
    """Start a Lab on its own thread: lab_factory(devices="none", throttle_every=2)."""
    started: list[LabThread] = []

    def start(devices="all", **smsc_settings) -> LabThread:
        for key, value in smsc_settings.items():
            setattr(topology.smsc, key, value)
        runner = LabThread(Lab(topology, devices=devices)).start()
        started.append(runner)
        return runner

    before = set(lab_threads())
    yield start
    for runner in started:
        runner.stop()
    assert no_new_lab_threads(before), "a lab thread outlived the lab"


def lab_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("esme-", "iwlab-lab")) and t.is_alive()]


@pytest.fixture
def lab_threads_left():
    """lab_threads_left(): names of lab threads started during the test that are still alive
    (after giving them up to 10 s to end)."""
    before = set(lab_threads())

    def left() -> list[str]:
        no_new_lab_threads(before)
        return sorted(t.name for t in set(lab_threads()) - before)
    return left


def no_new_lab_threads(before: set[threading.Thread], timeout: float = 10.0) -> bool:
    """True once every lab thread started since `before` has ended (they end on their own after stop)."""
    deadline = time.monotonic() + timeout
    while set(lab_threads()) - before and time.monotonic() < deadline:
        time.sleep(0.02)
    return not set(lab_threads()) - before


@pytest.fixture(autouse=True)
def _restore_application_look(request):
    """The window applies a theme and zoom to the whole application; later tests get it back clean."""
    if "qapp" not in request.fixturenames and "qtbot" not in request.fixturenames:
        yield
        return
    from PySide6.QtWidgets import QApplication
    app = QApplication.instance()
    saved = (app.font(), app.palette(), app.styleSheet(), app.style().name()) if app else None
    yield
    app = QApplication.instance()
    if app and saved:
        font, palette, sheet, style = saved
        app.setStyleSheet(sheet)
        app.setStyle(style)
        app.setPalette(palette)
        app.setFont(font)


@pytest.fixture
def window(qtbot, topology):
    from iwlab.app.main_window import LabWindow
    win = LabWindow(topology, theme_name="light", zoom=1.0)
    qtbot.addWidget(win)
    win.show()
    win.start_lab()
    yield win
    win.close()
