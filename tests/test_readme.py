"""Every code block of README.md and docs/*.rst works as written.

Python blocks run, those of one file in sequence in one namespace as a reader would run
them, in a scratch directory. Bash blocks are checked command by command against what
the project provides (install targets and extras, the CLI's arguments, scripts that
exist); the ``mpiexec`` command of each document runs for real in ``test_mpi.py``.
"""

import configparser
import io
import re
import shlex
import time
from contextlib import redirect_stdout

import pytest
from _docblocks import DOCUMENTS, ROOT, blocks

import mlmlearn.__main__ as cli

PYTHON_DOCUMENTS = [p for p in DOCUMENTS if any(b.language == "python" for b in blocks(p))]
BASH_DOCUMENTS = [p for p in DOCUMENTS if any(b.language == "bash" for b in blocks(p))]
PYTHONS = {"python", "python3", ".venv/bin/python"}
PIPS = {"pip", ".venv/bin/pip"}


def test_the_documents_have_blocks_and_every_block_is_run_or_checked():
    assert ROOT / "README.md" in PYTHON_DOCUMENTS and ROOT / "README.md" in BASH_DOCUMENTS
    for path in DOCUMENTS:
        for block in blocks(path):
            assert block.language in {"python", "bash"}, (
                f"{block.where()}: a {block.language!r} block is neither run nor checked"
            )


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("path", PYTHON_DOCUMENTS, ids=lambda p: p.name)
def test_python_blocks_run_as_written(path, tmp_path, monkeypatch):
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__main__"}
    timings = []
    for block in blocks(path):
        if block.language != "python":
            continue
        printed = io.StringIO()
        start = time.perf_counter()
        with redirect_stdout(printed):
            exec(compile(block.code, block.where(), "exec"), namespace)
        timings.append((block.where(), round(time.perf_counter() - start, 1)))
        if "print(" in block.code:
            assert printed.getvalue().strip(), f"{block.where()} printed nothing"
    print(timings)  # shown with -rA: each example should take seconds


def _extras():
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    return set(config["options.extras_require"])


def _commands(code):
    """Each simple command of a bash block as a word list (comments dropped, && split)."""
    lexer = shlex.shlex(code, posix=True, punctuation_chars=True)
    lexer.whitespace = " \t"  # newlines end commands
    lexer.commenters = "#"
    command = []
    for token in lexer:
        if token in {"&&", ";", "\n", "||"}:
            if command:
                yield command
            command = []
        else:
            command.append(token)
    if command:
        yield command


def _check_command(words, scripts, where):
    program, args = words[0], words[1:]
    if program in PYTHONS and args[:2] == ["-m", "pip"]:
        program, args = "pip", args[2:]
    if program == "python3" and args == ["-m", "venv", ".venv"]:
        return
    if program in PIPS:
        assert args[:1] == ["install"] and len(args) == 2, f"{where}: {words}"
        target = re.fullmatch(r"\.(?:\[([\w,]+)\])?", args[1])
        assert target, f"{where}: mlmlearn installs from its source tree ('.'), not {args[1]!r}"
        unknown = set((target.group(1) or "").split(",")) - _extras() - {""}
        assert not unknown, f"{where}: no extras {sorted(unknown)} in setup.cfg"
        return
    if program in {"mpiexec", ".venv/bin/mpiexec", "srun"}:
        if args[:1] == ["-n"]:
            assert args[1].isdigit(), f"{where}: {words}"
            args = args[2:]
        return _check_command(args, scripts, where)
    if program in PYTHONS:
        if args[:2] == ["-m", "mlmlearn"]:
            try:
                cli._parser().parse_args(args[2:])
            except SystemExit:
                pytest.fail(f"{where}: 'mlmlearn {' '.join(args[2:])}' is not a valid command")
            return
        if args[:2] == ["-m", "pytest"]:
            return
        if args and args[0].endswith(".py"):
            assert args[0] in scripts or (ROOT / args[0]).is_file(), (
                f"{where}: {args[0]} is neither a script of the document nor in the repository"
            )
            return
    if program == "export" and all(re.fullmatch(r"[A-Z_]+=\S+", a) for a in args):
        return
    pytest.fail(f"{where}: {' '.join(words)!r} is not a command the project documents")


@pytest.mark.parametrize("path", BASH_DOCUMENTS, ids=lambda p: p.name)
def test_bash_blocks_are_the_documented_commands(path):
    scripts = {b.name for b in blocks(path) if b.language == "python" and b.name}
    n = 0
    for block in blocks(path):
        if block.language == "bash":
            for words in _commands(block.code):
                _check_command(words, scripts, block.where())
                n += 1
    assert n


def test_the_command_checker_refuses_what_is_not_documented():
    for bad in [
        'pip install "mlmlearn[atoms]"',
        "pip install mlmlearn",
        'pip install ".[atom]"',
        "python -m mlmlearn demos",
        "python benchmarks/no_such_bench.py",
        "mpiexec -n 2 python other.py",
        "make html",
    ]:
        with pytest.raises((AssertionError, pytest.fail.Exception)):
            for words in _commands(bad):
                _check_command(words, {"search.py"}, "example")


#: an install from a package index: mlmlearn is installed from its source tree
PYPI_INSTALL = re.compile(r"pip install [\"']?mlmlearn\b|mlmlearn\[\w")


def test_install_lines_install_from_the_source_tree():
    texts = [*DOCUMENTS, *(ROOT / "mlmlearn").rglob("*.py"), *(ROOT / "notebooks").glob("*.ipynb")]
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in texts
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if PYPI_INSTALL.search(line)
    ]
    assert not found, "\n".join(found)
