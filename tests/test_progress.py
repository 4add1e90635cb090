"""Progress reports: silent by default, a bar on standard error when ``verbose``.

tqdm is a core dependency, so every ``verbose`` switch draws a bar in every install.
"""

import configparser
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning

from mlmlearn import HuberMLM
from mlmlearn._optional import EXTRAS
from mlmlearn._progress import StageLog, progress, progress_bar
from mlmlearn.robust import huber_regression


def _problem(n=120, k=12, seed=0):
    """A Huber problem with k target columns on one design, heavy-tailed noise."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    Y = X @ rng.normal(size=(4, k)) + 0.3 * rng.standard_t(2, size=(n, k))
    return X, Y


def test_tqdm_is_a_core_dependency():
    """A core install has tqdm: it is in install_requires, not behind an extra."""
    assert "tqdm" not in EXTRAS
    setup = Path(__file__).resolve().parents[1] / "setup.cfg"
    if not setup.is_file():
        pytest.skip("not run from a source tree")
    config = configparser.ConfigParser()
    config.read(setup)
    core = config["options"]["install_requires"].split()
    assert any(r.startswith("tqdm>=") for r in core), core
    for extra, requirements in config["options.extras_require"].items():
        assert "tqdm" not in requirements, f"the {extra!r} extra repeats a core dependency"


def test_progress_is_silent_unless_verbose(capsys):
    items = [1, 2, 3]
    assert progress(items, verbose=0) is items
    assert list(progress(items, verbose=1, desc="counting")) == items
    err = capsys.readouterr().err
    assert "counting" in err and "3/3" in err


def test_a_disabled_bar_writes_nothing(capsys):
    with progress_bar(5, verbose=0, desc="quiet") as bar:
        bar.update(5)
        bar.set_postfix_str("x")
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    with progress_bar(5, verbose=1, desc="loud", unit="col") as bar:
        bar.update(2)
        bar.update(3)
    assert re.search(r"loud: 100%.*5/5", capsys.readouterr().err)


def test_stage_log_draws_bars_whenever_it_reports():
    assert StageLog().bars
    assert not StageLog(None).bars


def test_huber_regression_is_silent_by_default(capsys):
    X, Y = _problem()
    huber_regression(X, Y)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""


def test_huber_regression_counts_converged_columns_when_verbose(capsys):
    X, Y = _problem(k=12)
    quiet = huber_regression(X, Y)
    capsys.readouterr()
    loud = huber_regression(X, Y, verbose=1)
    err = capsys.readouterr().err
    # the bar runs over the columns and ends with all of them converged, at the
    # Newton iteration the solver reports
    assert re.search(r"Huber regression: 100%.*12/12", err), err
    assert f"Newton iteration {loud[3]}/100" in err
    for a, b in zip(quiet, loud, strict=True):  # reporting does not change the numbers
        np.testing.assert_array_equal(a, b)


def test_columns_that_do_not_converge_are_not_counted(capsys):
    X, Y = _problem(k=6)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        huber_regression(X, Y, max_iter=1, tol=0.0, verbose=1)
    err = capsys.readouterr().err
    assert "Newton iteration 1/1" in err
    assert re.search(r"Huber regression:\s+0%.*0/6", err), err


def test_huber_mlm_verbose_reports_the_solver(capsys):
    rng = np.random.default_rng(1)
    X = rng.uniform(-3, 3, size=(150, 2))
    y = np.sin(X[:, 0]) + X[:, 1]
    HuberMLM(references=30).fit(X, y)
    captured = capsys.readouterr()
    assert captured.err == "" and captured.out == ""
    model = HuberMLM(references=30, verbose=1).fit(X, y)
    err = capsys.readouterr().err
    assert "RS-maximin" in err
    assert re.search(r"Huber regression: 100%.*30/30", err), err
    assert f"Newton iteration {model.n_iter_}/{model.max_iter}" in err
