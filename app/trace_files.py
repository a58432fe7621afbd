"""File → Open/Save trace: the ladder's PDUs as JSON, the format `iwlab play --trace-json` writes;
File → Export trace as pcapng: the same PDUs for Wireshark and tshark (`iwlab play --pcap`)."""
from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QFileDialog, QWidget

from iwlab.app.lab_controller import LabController
from iwlab.app.notices import Notices
from iwlab.backends.lab.pcap import to_pcapng
from iwlab.backends.lab.report import read_trace_json, write_trace_json
from iwlab.widgets.ladder import LadderView


class TraceFiles:
    def __init__(self, parent: QWidget, ladder: LadderView, controller: LabController, notices: Notices) -> None:
        self._parent = parent        # the dialogs' parent
        self._ladder = ladder
        self._controller = controller
        self._notices = notices

    def ask_path(self, mode: str) -> None:
        """Ask for a file to open ("open") or save to ("save"), then do it."""
        dialog = QFileDialog(self._parent, "Open a trace" if mode == "open" else "Save the trace", "",
                             "iwlab trace (*.json)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptOpen if mode == "open"
                             else QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("json")
        dialog.fileSelected.connect(self.open if mode == "open" else self.save)
        dialog.open()   # non-modal: never exec() under qasync

    def ask_export_path(self) -> None:
        """Ask where to write the trace as pcapng, then write it."""
        dialog = QFileDialog(self._parent, "Export the trace as pcapng", "", "pcapng (*.pcapng)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
        dialog.setDefaultSuffix("pcapng")
        dialog.fileSelected.connect(self.export_pcapng)
        dialog.open()   # non-modal: never exec() under qasync

    def export_pcapng(self, path: str) -> None:
        """What the ladder holds (an opened trace file too), as packets on their real addresses and ports."""
        events = self._ladder.model.events()
        try:
            Path(path).write_bytes(to_pcapng(events))
        except OSError as exc:
            self._notices.error("Cannot export the trace", str(exc))
            return
        packets = sum(1 for e in events if e.src_address and e.dst_address and e.raw)
        self._notices.status(f"Exported {packets} of {len(events)} PDUs to {path} (SMTP on a lab port: "
                             "tshark -d tcp.port==PORT,smtp)", 8000)

    def save(self, path: str) -> None:
        events = self._ladder.model.events()
        try:
            write_trace_json(Path(path), events)
        except OSError as exc:
            self._notices.error("Cannot save the trace", str(exc))
            return
        self._notices.status(f"Saved {len(events)} PDUs to {path}", 6000)

    def open(self, path: str) -> None:
        """Show a saved trace: the live lab stops so the ladder shows only the file."""
        try:
            events = read_trace_json(Path(path))
        except (OSError, ValueError, KeyError) as exc:
            self._notices.error("Cannot open the trace", f"{path}: {exc}")
            return
        self._controller.stop()
        self._ladder.clear()
        self._ladder.append_events(events)
        self._notices.set_lab_line(f"Lab stopped: showing {Path(path).name} ({len(events)} PDUs)")
