"""The command line: plain-text help, train and optimize on files, the ring demo."""

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


@pytest.mark.parametrize(
    "argv", [["--help"], ["demo", "--help"], ["train", "--help"], ["optimize", "--help"]])
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


def _ring_files(tmp_path):
    """Two small extxyz training files (Au4 and Au6 rings) and a start structure (Au5)."""
    from ase.io import write

    from mlmlearn.datasets import load_gold_thiolate_rings

    frames = load_gold_thiolate_rings().frames
    paths = []
    for n in (24, 36):
        path = tmp_path / f"ring{n}.extxyz"
        write(path, [f for f in frames if len(f) == n][::25])
        paths.append(str(path))
    start = tmp_path / "start.xyz"
    write(start, [f for f in frames if len(f) == 30][-1])
    return paths, str(start)


def test_train_and_optimize_from_files(tmp_path, capsys):
    import joblib
    from ase.io import read

    from mlmlearn.forcefield import ForceField

    paths, start = _ring_files(tmp_path)
    model = tmp_path / "ff.joblib"
    status = cli.main(["train", *paths, "-o", str(model), "--references", "20", "--stride", "2",
                       "--quiet"])
    out = capsys.readouterr().out
    assert status == 0 and model.exists()
    ff = joblib.load(model)
    assert isinstance(ff, ForceField) and ff.types_ == ["Au_unit", "C", "H", "S"]
    assert "training-set accuracy" in out and re.search(r"^all\s+\d+", out, re.M)

    trajectory = tmp_path / "opt.extxyz"
    status = cli.main(["optimize", str(model), start, "-o", str(trajectory), "--steps", "3",
                       "--quiet"])
    out = capsys.readouterr().out
    frames = read(trajectory, ":")
    assert status == 1 and "steps: 3 steps" in out  # not converged in 3 steps: status 1
    assert len(frames) == 4
    # the saved model's forces are what the trajectory holds at the start
    assert np.allclose(frames[0].get_forces(), ff.predict(read(start)), atol=1e-6)


def test_ring_demo_reports_accuracy_the_ml_optimization_and_its_gfn2_check(tmp_path):
    pytest.importorskip("tblite")
    from mlmlearn._demo import ring_demo

    out, log = io.StringIO(), io.StringIO()
    summary = ring_demo(4, stride=64, references=20, steps=4, output=tmp_path / "demo",
                        out=out, log=log)
    text = out.getvalue()
    assert "Au4(SCH3)4 held out" in text
    assert len(re.findall(r"^all\s+\d+", text, re.M)) == 2  # the potential's table and paper IV's
    assert "GFN2-xTB BFGS from the same start" in text
    # every checked step of both has a GFN2 energy above the GFN2 minimum (it is a minimum)
    assert summary["steps"][0] == 0 and summary["steps"][-1] == summary["potential_steps"]
    assert summary["steps_iv"][0] == 0 and summary["steps_iv"][-1] == summary["ml_steps"]
    assert min(summary["energies"] + summary["energies_iv"]) > -1e-3
    # the potential's energy falls along its BFGS: the GFN2 check of its last step is lower
    assert summary["energies"][-1] < summary["energies"][0]
    assert (tmp_path / "demo" / "ml-bfgs.extxyz").exists()
    assert (tmp_path / "demo" / "potential-bfgs.extxyz").exists()
    stages = re.findall(r"^\[\s*\d+\.\d s\] (.*)$", log.getvalue().replace("\r", "\n"), re.M)
    assert stages[0].startswith("loading") and stages[-1] == "done"
    assert not re.search(r"^\[\s*\d+\.\d s\]|it/s", text, re.M)  # progress only on the log


def test_stage_log_silent_without_a_stream():
    from mlmlearn._progress import StageLog

    log = StageLog(None)
    log("nothing")
    assert not log.bars
    assert list(log.loop(range(3), desc="x")) == [0, 1, 2]
    assert np.isfinite(log.elapsed())


