"""Theme and zoom for the whole application (for presenting), remembered between runs."""
from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QApplication

from iwlab.app.notices import Notices
from iwlab.widgets import theme


class Look:
    def __init__(self, notices: Notices, *, theme_name: str | None = None, zoom: float | None = None,
                 on_applied: Callable[[], None] = lambda: None) -> None:
        self.settings = QSettings(QSettings.Format.IniFormat, QSettings.Scope.UserScope, "iwlab", "iwlab")
        self.theme_name = theme_name or str(self.settings.value("theme", "system"))
        self.zoom = float(zoom or str(self.settings.value("zoom", 1.0)))
        self._notices = notices
        self._on_applied = on_applied   # e.g. refit the device columns: fonts changed their widths

    def apply(self) -> None:
        app = QApplication.instance()
        if isinstance(app, QApplication):
            theme.apply(app, self.theme_name, self.zoom)
        self._on_applied()

    def set_theme(self, name: str) -> None:
        self.theme_name = name
        self.settings.setValue("theme", name)
        self.apply()

    def set_zoom(self, zoom: float) -> None:
        self.zoom = zoom
        self.settings.setValue("zoom", zoom)
        self.apply()
        self._notices.status(f"Zoom {int(zoom * 100)} %", 2000)
