"""What `pip install .` puts into site-packages: one package, iwlab, with its data."""
from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = {"app": "iwlab.app", "backends": "iwlab.backends", "widgets": "iwlab.widgets", "resources": "iwlab.resources"}


def test_every_package_folder_is_listed_in_pyproject():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = set()
    for folder, package in FOLDERS.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            found.add(".".join([package, *init.parent.relative_to(ROOT / folder).parts]))
    assert found == listed


def test_the_wheel_holds_only_the_iwlab_namespace_and_its_resources(tmp_path):
    source = tmp_path / "source"       # a copy: building writes build/ and *.egg-info beside the sources
    for name in (*FOLDERS, "pyproject.toml", "README.md"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")} if copy is shutil.copytree
                                              else {}))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", str(source), "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path)], check=True, capture_output=True)
    [wheel] = tmp_path.glob("iwlab-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert {name.split("/")[0] for name in names} == {"iwlab", wheel.name.split("-")[0] + "-" + wheel.name.split("-")[1]
                                                      + ".dist-info"}
    assert "iwlab/resources/topology.toml" in names
    assert "iwlab/resources/scenarios/5.8.5-sending.toml" in names
    assert "iwlab/backends/protocols/sip.py" in names
