"""Where the window tells people things: a passing line in the status bar, the lab's endpoints
beside it, and error boxes. Every part of the window reports through this one object, so none of
them needs the window itself."""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QLabel, QMainWindow, QMessageBox


class Notices:
    def __init__(self, window: QMainWindow) -> None:
        self._window = window
        # Plain text: a lab watched elsewhere names its own endpoints, and no text from a socket is markup.
        self.holdings_label = QLabel("")
        self.holdings_label.setTextFormat(Qt.TextFormat.PlainText)
        self.holdings_label.setToolTip("What the nodes hold for later (durable): the lab delivers it when it can")
        window.statusBar().addPermanentWidget(self.holdings_label)
        self.endpoints_label = QLabel("Lab stopped")
        self.endpoints_label.setTextFormat(Qt.TextFormat.PlainText)
        window.statusBar().addPermanentWidget(self.endpoints_label)

    def status(self, text: str, timeout_ms: int) -> None:
        self._window.statusBar().showMessage(text, timeout_ms)

    def failed(self, text: str) -> None:
        """An action that went wrong: said in the status bar, never swallowed."""
        self.status(f"Failed: {text}", 8000)

    def set_lab_line(self, text: str) -> None:
        """The permanent line: the running lab's endpoints, or what the ladder shows instead."""
        self.endpoints_label.setText(text)

    def set_holdings(self, text: str) -> None:
        self.holdings_label.setText(f"Held for later: {text}   " if text else "")

    def error(self, title: str, text: str) -> None:
        box = QMessageBox(QMessageBox.Icon.Critical, title, text, parent=self._window)
        box.setTextFormat(Qt.TextFormat.PlainText)
        box.open()   # non-modal: never exec() under qasync
