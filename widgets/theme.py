"""Light and dark themes (Fusion palette + one QSS template) and the
presentation zoom (the application font size, which everything follows).
"""
from __future__ import annotations

from importlib import resources

from PySide6.QtCore import Qt
from PySide6.QtGui import QColor, QFont, QGuiApplication, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")
BASE_POINT_SIZE = 10.5
ZOOM_STEPS = (0.8, 0.9, 1.0, 1.15, 1.3, 1.5, 1.75, 2.0)
FLAG_COLOR = "#e5534b"    # a message out of order or twice: a red that reads on light and dark alike

COLOURS = {
    "light": dict(WINDOW="#f3f4f6", PHONE_BG="#ffffff", BEZEL="#1f2328", TEXT="#1f2328", MUTED="#59636e",
                  SCREEN_BG="#ffffff", BORDER="#d0d7de", ACCENT="#1f6feb", ACCENT_HOVER="#1a5fcc",
                  PILL_ON_BG="#dafbe1", PILL_ON_FG="#116329", PILL_OFF_BG="#ffebe9", PILL_OFF_FG="#a40e26",
                  BASE="#ffffff", ALT="#f6f8fa", HIGHLIGHT="#1f6feb"),
    "dark": dict(WINDOW="#0d1117", PHONE_BG="#161b22", BEZEL="#8b949e", TEXT="#e6edf3", MUTED="#9198a1",
                 SCREEN_BG="#0d1117", BORDER="#3d444d", ACCENT="#2f81f7", ACCENT_HOVER="#4c94f8",
                 PILL_ON_BG="#12361f", PILL_ON_FG="#56d364", PILL_OFF_BG="#3c1618", PILL_OFF_FG="#ff7b72",
                 BASE="#0d1117", ALT="#161b22", HIGHLIGHT="#2f81f7"),
}


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = getattr(hints, "colorScheme", None)
    return bool(scheme and scheme() == Qt.ColorScheme.Dark)


def resolve(theme: str) -> str:
    if theme == "system":
        return "dark" if system_prefers_dark() else "light"
    return theme


def palette_for(name: str) -> QPalette:
    c = COLOURS[name]
    palette = QPalette()
    role = QPalette.ColorRole
    palette.setColor(role.Window, QColor(c["WINDOW"]))
    palette.setColor(role.WindowText, QColor(c["TEXT"]))
    palette.setColor(role.Base, QColor(c["BASE"]))
    palette.setColor(role.AlternateBase, QColor(c["ALT"]))
    palette.setColor(role.Text, QColor(c["TEXT"]))
    palette.setColor(role.Button, QColor(c["ALT"]))
    palette.setColor(role.ButtonText, QColor(c["TEXT"]))
    palette.setColor(role.ToolTipBase, QColor(c["PHONE_BG"]))
    palette.setColor(role.ToolTipText, QColor(c["TEXT"]))
    palette.setColor(role.PlaceholderText, QColor(c["MUTED"]))
    palette.setColor(role.Highlight, QColor(c["HIGHLIGHT"]))
    palette.setColor(role.HighlightedText, QColor("#ffffff"))
    palette.setColor(role.Mid, QColor(c["BORDER"]))
    palette.setColor(role.Link, QColor(c["ACCENT"]))
    for group_role in (role.Text, role.WindowText, role.ButtonText):
        palette.setColor(QPalette.ColorGroup.Disabled, group_role, QColor(c["MUTED"]))
    return palette


def stylesheet(name: str, zoom: float) -> str:
    template = resources.files("iwlab.resources").joinpath("theme.qss").read_text(encoding="utf-8")
    values = dict(COLOURS[name], TITLE_PT=f"{BASE_POINT_SIZE * zoom * 1.45:.1f}",
                  PANE_PT=f"{BASE_POINT_SIZE * zoom * 1.2:.1f}")
    for key, value in values.items():
        template = template.replace(f"@{key}@", value)
    return template


def apply(app: QApplication, theme: str, zoom: float) -> str:
    """Apply a theme and zoom to the whole application; returns the resolved theme."""
    name = resolve(theme)
    app.setStyle("Fusion")
    app.setPalette(palette_for(name))
    font = QFont(app.font())
    font.setPointSizeF(BASE_POINT_SIZE * zoom)
    app.setFont(font)
    app.setStyleSheet(stylesheet(name, zoom))
    return name


def next_zoom(current: float, step: int) -> float:
    levels = list(ZOOM_STEPS)
    nearest = min(range(len(levels)), key=lambda i: abs(levels[i] - current))
    return levels[max(0, min(len(levels) - 1, nearest + step))]
