"""Sphinx configuration for mlmlearn (build: sphinx-build docs docs/_build)."""

import mlmlearn

project = "mlmlearn"
release = mlmlearn.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.mathjax", "numpydoc"]
autosummary_generate = True
numpydoc_show_class_members = False
exclude_patterns = ["_build"]
html_theme = "alabaster"

# Docstrings name fitted attributes and shapes with scikit-learn's trailing underscore
# (``n_references_``), which reStructuredText reads as a link target. Escape it in shape
# descriptions and in attribute-name lines before numpydoc renders them.
import re  # noqa: E402

_SHAPE = re.compile(r"shape \(([^)]*)\)")
_NAMES = re.compile(r"^(\s*)(\w+_(?:, \w+_)*,?)\s*$")
_TRAILING = re.compile(r"(\w)_(?=[,)\s]|$)")


def _escape_trailing_underscores(app, what, name, obj, options, lines):
    for i, line in enumerate(lines):
        line = _SHAPE.sub(lambda m: "shape (" + _TRAILING.sub(r"\1\\_", m.group(1)) + ")", line)
        names = _NAMES.match(line)
        if names:
            line = names.group(1) + _TRAILING.sub(r"\1\\_", names.group(2))
        lines[i] = line


def setup(app):
    app.connect("autodoc-process-docstring", _escape_trailing_underscores, priority=100)
