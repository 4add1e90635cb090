"""Sphinx configuration for mlmlearn (build: sphinx-build docs docs/_build)."""

import mlmlearn

project = "mlmlearn"
release = mlmlearn.__version__
extensions = ["sphinx.ext.autodoc", "sphinx.ext.autosummary", "sphinx.ext.mathjax", "numpydoc"]
autosummary_generate = True
numpydoc_show_class_members = False
exclude_patterns = ["_build"]
html_theme = "alabaster"
