"""The command line: plain-text help, and a demo that reports progress as it goes."""

import io
import re
import subprocess
import sys
from contextlib import redirect_stdout

import numpy as np
import pytest

import mlmlearn.__main__ as cli

# reStructuredText a terminal would show raw: roles, literals, link targets, directives
RST = re.compile(r"``|:(?:class|func|meth|mod|attr|ref|math):|`_|^\s*\.\. \w", re.MULTILINE)


def _help(argv):
    buffer = io.StringIO()
    with redirect_stdout(buffer), pytest.raises(SystemExit) as stop:
        cli.main(argv)
    assert stop.value.code == 0
    return buffer.getvalue()


@pytest.mark.parametrize("argv", [["--help"], ["demo", "--help"]])
def test_help_is_plain_text(argv):
    text = _help(argv)
    assert "usage: mlmlearn" in text
    assert not RST.search(text), RST.search(text)
    assert "`" not in text


def test_help_from_the_installed_command():
    result = subprocess.run(
        [sys.executable, "-m", "mlmlearn", "--help"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "demo" in result.stdout and not RST.search(result.stdout)


def test_data_generator_help_is_plain_text(monkeypatch):
    """``python -m mlmlearn.datasets.generate --help``: the docstring's content, no markup."""
    import os

    from mlmlearn.datasets import generate

    monkeypatch.setenv("COLUMNS", "100")  # one wrap width in-process and in the subprocess

    buffer = io.StringIO()
    with redirect_stdout(buffer), pytest.raises(SystemExit) as stop:
        generate.main(["--help"])
    assert stop.value.code == 0
    text = buffer.getvalue()
    assert "usage: python -m mlmlearn.datasets.generate" in text
    assert not RST.search(text), RST.search(text)
    assert "`" not in text and "::" not in text
    for name in ("alkanes", "rings", "au25", "--workdir", "--output", "--start", "--verbose"):
        assert name in text
    assert 'pip install ".[atoms,xtb]"' in text and "OMP_NUM_THREADS=1" in text
    # the module docstring (kept for the API docs) does carry markup: help must not show it
    assert RST.search(generate.__doc__) or "::" in generate.__doc__
    result = subprocess.run(
        [sys.executable, "-m", "mlmlearn.datasets.generate", "--help"],
        capture_output=True, text=True, timeout=60, env=dict(os.environ),
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == text


def _small_models(random_state):
    from sklearn.linear_model import Ridge
    from sklearn.model_selection import GridSearchCV, KFold
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from mlmlearn import EMLM

    inner = KFold(3, shuffle=True, random_state=random_state)
    return {
        "EMLM": GridSearchCV(make_pipeline(StandardScaler(), EMLM()),
                             {"emlm__references": [10, 20]}, cv=inner),
        "Ridge": GridSearchCV(make_pipeline(StandardScaler(), Ridge()),
                              {"ridge__alpha": [0.1, 1.0]}, cv=inner),
    }


def test_demo_reports_each_stage_with_its_time_and_keeps_results_apart(monkeypatch):
    monkeypatch.setattr(cli, "_models", _small_models)
    monkeypatch.setattr(cli, "directions_demo", lambda out, log: log("directions") or 0)
    out, log = io.StringIO(), io.StringIO()
    assert cli.demo(out=out, log=log) == 0
    lines = re.findall(r"^\[\s*(\d+\.\d) s\] (.*)$", log.getvalue().replace("\r", "\n"), re.M)
    messages = [m for _, m in lines]
    assert messages[0].startswith("EMLM: 5 outer folds, each a 3-fold grid search over 2")
    assert re.fullmatch(r"EMLM: done, \d+\.\d s", messages[1])
    assert messages[2].startswith("Ridge: 5 outer folds")
    assert messages[-1] == "directions"
    times = [float(t) for t, _ in lines]
    assert times == sorted(times)
    pytest.importorskip("tqdm")
    assert "EMLM:   0%" in log.getvalue() and "0/5" in log.getvalue()  # a bar over the folds
    table = out.getvalue()
    assert "[" not in table and "5/5" not in table  # results only on `out`
    assert re.search(r"^EMLM\s+0\.\d{3} ± 0\.\d{3}", table, re.M)


def test_demo_scores_are_scikit_learns_cross_validate(monkeypatch):
    from sklearn.datasets import load_diabetes
    from sklearn.model_selection import KFold, cross_validate

    monkeypatch.setattr(cli, "_models", _small_models)
    monkeypatch.setattr(cli, "directions_demo", lambda out, log: 0)
    out = io.StringIO()
    cli.demo(out=out, log=None)
    X, y = load_diabetes(return_X_y=True)
    outer = KFold(5, shuffle=True, random_state=0)
    for name, model in _small_models(0).items():
        r2 = cross_validate(model, X, y, cv=outer, scoring="r2")["test_score"]
        row = next(line for line in out.getvalue().splitlines() if line.startswith(name))
        assert f"{r2.mean():.3f} ± {r2.std():.3f}" in row, (row, r2)


def test_quiet_demo_writes_no_progress(monkeypatch, capsys):
    monkeypatch.setattr(cli, "_models", _small_models)
    monkeypatch.setattr(cli, "directions_demo", lambda out, log: log("directions") or 0)
    assert cli.main(["demo", "--quiet"]) == 0
    captured = capsys.readouterr()
    assert captured.err == "" and "Ridge" in captured.out
    assert cli.main(["demo"]) == 0
    err = capsys.readouterr().err
    assert "Ridge: 5 outer folds" in err and "directions" in err


def test_stage_log_silent_without_a_stream():
    from mlmlearn._progress import StageLog

    log = StageLog(None)
    log("nothing")
    assert not log.bars
    assert list(log.loop(range(3), desc="x")) == [0, 1, 2]
    assert np.isfinite(log.elapsed())


def test_demo_fits_the_small_diabetes_problems_on_one_blas_thread(monkeypatch):
    """Threads cost more than they save on a few hundred rows (40x on 2 busy cores)."""
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.model_selection import GridSearchCV
    from threadpoolctl import threadpool_info

    seen = []

    class Probe(RegressorMixin, BaseEstimator):
        def __init__(self, alpha=1.0):
            self.alpha = alpha

        def fit(self, X, y):
            seen.extend(p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas")
            self.mean_ = float(np.mean(y))
            return self

        def predict(self, X):
            return np.full(len(X), self.mean_)

    monkeypatch.setattr(cli, "_models", lambda rs: {"probe": GridSearchCV(Probe(), {"alpha": [1]})})
    monkeypatch.setattr(cli, "directions_demo", lambda out, log: 0)
    cli.demo(out=io.StringIO(), log=None)
    assert seen and set(seen) == {1}
