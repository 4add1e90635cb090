"""The documentation: every public name has an API entry, and the site builds with
warnings as errors (docstring examples run as doctests)."""

import importlib
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import mlmlearn

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _public_modules():
    """Every importable module of mlmlearn with no private part in its dotted name."""
    names = ["mlmlearn"]
    for info in pkgutil.walk_packages(mlmlearn.__path__, "mlmlearn."):
        parts = info.name.split(".")
        if any(part.startswith("_") for part in parts[1:]):
            continue
        names.append(info.name)
    return names


def _documented():
    """The objects api.rst lists in its autosummary tables, and their dotted names."""
    names = re.findall(r"^ {3}(mlmlearn(?:\.\w+)+)\s*$", (DOCS / "api.rst").read_text(), re.M)
    objects = {}
    for name in names:
        module, _, attr = name.rpartition(".")
        objects[name] = getattr(importlib.import_module(module), attr)
    return objects


def test_every_public_name_is_in_the_api_reference():
    """Each name in ``__all__`` of a public module is an api.rst entry, under that
    module or another public path to the same object (``mlmlearn.robust.HuberMLM`` is
    documented as ``mlmlearn.HuberMLM``)."""
    documented = _documented()
    ids = {id(obj) for obj in documented.values()}
    missing = []
    for module_name in _public_modules():
        module = importlib.import_module(module_name)
        for name in getattr(module, "__all__", []):
            if name.startswith("__"):
                continue  # __version__
            if f"{module_name}.{name}" not in documented and id(getattr(module, name)) not in ids:
                missing.append(f"{module_name}.{name}")
    assert not missing, f"public names without an entry in docs/api.rst: {missing}"


def test_api_entries_are_public():
    """No entry reaches into a private module (``mlmlearn._huber``)."""
    private = [name for name in _documented() if re.search(r"\._", name)]
    assert not private, private


def test_sphinx_builds_without_warnings(tmp_path):
    pytest.importorskip("sphinx")
    pytest.importorskip("numpydoc")
    # build a copy: autosummary writes its pages into the source directory, and pages
    # left there by an earlier build (of a since renamed object) would warn
    source = tmp_path / "docs"
    shutil.copytree(DOCS, source, ignore=shutil.ignore_patterns("generated", "_build"))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-E",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(source),
            str(tmp_path / "html"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-5000:]
    assert (tmp_path / "html" / "api.html").exists()
