"""The layer rules of backends/ (README, Layout), asserted on the import statements of every module.

Lowest first: shared modules (trace, topology, directory, routing, recent ...), protocols (sans-I/O codecs),
transports (thin asyncio adapters), nodes and devices, the lab. A module may import its own
layer and the layers below it; devices do not reach into nodes; nothing in backends/ imports Qt.
"""
from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BACKENDS = ROOT / "backends"
SHARED = {"trace", "topology", "directory", "routing", "store", "tls", "gate", "clock", "recent", "packed_log"}
ALLOWED = {   # layer -> the iwlab.backends layers it may import
    "shared": {"shared"},
    "protocols": {"protocols"},
    "transports": {"shared", "protocols", "transports"},
    "nodes": {"shared", "protocols", "transports", "nodes"},
    "devices": {"shared", "protocols", "transports", "devices"},
    "lab": {"shared", "protocols", "transports", "nodes", "devices", "lab"},
}
QT = ("PySide6", "qasync", "shiboken6")


def layer_of(dotted: str) -> str:
    """'iwlab.backends.protocols.sip' -> 'protocols'; a shared module -> 'shared'."""
    part = dotted.split(".")[2]
    return "shared" if part in SHARED else part


def imported_modules(path: Path) -> list[str]:
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.append(node.module)
        elif isinstance(node, ast.ImportFrom) and node.level:
            raise AssertionError(f"{path}: relative import; write iwlab.backends.… so the layer shows")
    return names


def modules() -> list[Path]:
    return sorted(p for p in BACKENDS.rglob("*.py") if p.name != "__init__.py")


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(BACKENDS)))
def test_a_module_imports_only_its_layer_and_those_below(path):
    dotted = "iwlab.backends." + ".".join(path.relative_to(BACKENDS).with_suffix("").parts)
    mine = layer_of(dotted)
    for name in imported_modules(path):
        assert not name.startswith(QT), f"{dotted} imports {name}: backends/ must run without Qt"
        assert not name.startswith(("iwlab.app", "iwlab.widgets")), f"{dotted} imports {name}"
        if name.startswith("iwlab.backends."):
            assert layer_of(name) in ALLOWED[mine], f"{dotted} ({mine}) imports {name} ({layer_of(name)})"


def test_every_layer_has_modules():
    assert {layer_of("iwlab.backends." + ".".join(p.relative_to(BACKENDS).with_suffix("").parts))
            for p in modules()} == set(ALLOWED)


def test_nothing_imports_the_folders_by_their_bare_names():
    """Installed, they are iwlab.app, iwlab.backends ...: a bare `import backends` works only in a checkout."""
    for folder in ("app", "widgets", "backends", "resources", "bench", "tests"):
        for path in (ROOT / folder).rglob("*.py"):
            for name in imported_modules(path) if folder != "backends" else []:
                assert name.split(".")[0] not in ("app", "widgets", "backends", "resources"), f"{path}: {name}"
