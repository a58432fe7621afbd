"""The window's side columns: CPM phones on the left, legacy devices (SMS handset, email client)
on the right, one widget per simulated device of the running lab.

Scenarios and the console change people's conditions too, so the handsets' switches are
re-synchronised with the lab twice a second while it runs.
"""
from __future__ import annotations

from functools import partial
from typing import Any, Callable, Coroutine

from PySide6.QtCore import QObject, Qt, QTimer
from PySide6.QtWidgets import QLabel, QScrollArea, QVBoxLayout, QWidget

from iwlab.backends.lab.lab import Lab
from iwlab.backends.topology import Topology
from iwlab.widgets.cpm_phone import CpmPhone
from iwlab.widgets.device_bridge import RunInLab
from iwlab.widgets.email_client import EmailClientWidget
from iwlab.widgets.sms_handset import SmsHandsetWidget

SetConditions = Callable[..., Coroutine[Any, Any, Any]]   # (user_id, **flags) -> coroutine returning their CPM app


class DeviceColumns(QObject):
    def __init__(self, topology: Topology, run_in_lab: RunInLab, set_conditions: SetConditions,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.topology = topology
        self._run_in_lab = run_in_lab
        self._set_conditions = set_conditions
        self.phones: dict[str, CpmPhone | EmailClientWidget | SmsHandsetWidget] = {}   # user id -> their device
        self._scrolls: list[QScrollArea] = []
        self.left_column, self.left = self._device_column("CPM users")
        self.right_column, self.right = self._device_column("Legacy devices")
        self._lab: Lab | None = None
        self._sync_timer = QTimer(self, interval=500, timeout=self._sync_conditions)

    def _device_column(self, title: str) -> tuple[QWidget, QVBoxLayout]:
        """A titled, scrollable column; returns it and the layout devices go into."""
        column = QWidget()
        layout = QVBoxLayout(column)
        layout.setContentsMargins(8, 8, 8, 8)
        heading = QLabel(title)
        heading.setObjectName("paneTitle")
        layout.addWidget(heading)
        scroll = QScrollArea()
        scroll.setWidgetResizable(True)
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        scroll.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        inner = QWidget()
        devices = QVBoxLayout(inner)
        devices.setContentsMargins(0, 0, 0, 0)
        scroll.setWidget(inner)
        layout.addWidget(scroll, 1)
        self._scrolls.append(scroll)
        return column, devices

    def fit_widths(self) -> None:
        """Never clip a phone: each column is as wide as its widest device needs (zoom included)."""
        for scroll in self._scrolls:
            inner = scroll.widget()
            needed = inner.minimumSizeHint().width() + scroll.verticalScrollBar().sizeHint().width()
            column = scroll.parentWidget()
            margins = column.layout().contentsMargins()
            column.setMinimumWidth(max(needed, 300) + margins.left() + margins.right())

    # -- the running lab's devices ---------------------------------------------------------
    def attach(self, lab: Lab) -> None:
        """Show a widget for each of the lab's devices; Mary's phone gets the keyboard."""
        self._lab = lab
        for user in self.topology.users:
            device = lab.devices.get(user.id)
            if device is None:
                continue
            widget: CpmPhone | EmailClientWidget | SmsHandsetWidget
            if user.device == "cpm":
                widget = CpmPhone(device, self._run_in_lab)
                self.left.addWidget(widget, 1)
            elif user.device == "email":
                widget = EmailClientWidget(device, self._run_in_lab)
                self.right.addWidget(widget, 2)
            else:
                widget = SmsHandsetWidget(device, self._run_in_lab,
                                          set_conditions=partial(self._set_conditions, user.id))
                # A handset gets the larger share: its inbox shows a burst's order ("3 of 5").
                self.right.addWidget(widget, 3)
            self.phones[user.id] = widget
        first_phone = next((w for w in self.phones.values() if isinstance(w, CpmPhone)), None)
        if first_phone:
            first_phone.text.setFocus()   # ready to type: the demo starts at Mary's keyboard
        self._sync_timer.start()

    def detach(self) -> None:
        """Drop every device widget: they stop listening to their devices first."""
        self._sync_timer.stop()
        self._lab = None
        for widget in self.phones.values():
            widget.bridge.detach()
            widget.setParent(None)
            widget.deleteLater()
        self.phones.clear()
        for column in (self.left, self.right):
            while column.count():
                item = column.takeAt(0)
                if item.widget():
                    item.widget().deleteLater()

    def _sync_conditions(self) -> None:
        if self._lab is None:
            return
        apps = dict(self._lab.cpm_apps)
        for user_id, widget in self.phones.items():
            if isinstance(widget, SmsHandsetWidget):
                widget.sync_conditions(apps.get(user_id))
