"""ruff (configured in pyproject.toml) finds nothing in the sources, tests, benchmarks and docs."""

import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("ruff")
ROOT = Path(__file__).resolve().parents[1]
PATHS = ["mlmlearn", "tests", "benchmarks", "docs", "notebooks"]


def test_ruff_finds_nothing():
    result = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "--output-format", "concise",
         *PATHS],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "benchmarks").glob("*.py")))
def test_benchmark_scripts_compile(script):
    # ruff does not report every compile-time error (a name used before its `global`)
    path = ROOT / "benchmarks" / script
    compile(path.read_text(), str(path), "exec")
