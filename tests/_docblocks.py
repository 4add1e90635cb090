"""Code blocks of README.md and docs/*.rst, as a reader sees them (shared by the doc tests)."""

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.rst"))]

_FENCE = re.compile(r"^```(\w*)[ \t]*\n(.*?)^```[ \t]*$", re.MULTILINE | re.DOTALL)
_DIRECTIVE = re.compile(r"^(\s*)\.\. (code-block|code|sourcecode)::\s*(\w*)\s*$")
_OTHER_DIRECTIVE = re.compile(r"^\s*\.\. [\w:-]+::")


@dataclass
class Block:
    """One code block: its language, its text and where it starts (1-based line)."""

    path: Path
    language: str
    code: str
    line: int

    @property
    def name(self):
        """``search.py`` for a block whose first line is the comment ``# search.py``."""
        first = self.code.lstrip().splitlines()[0] if self.code.strip() else ""
        match = re.fullmatch(r"#\s*([\w.-]+\.py)\b.*", first)
        return match.group(1) if match else None

    def where(self):
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def markdown_blocks(path):
    text = path.read_text()
    return [
        Block(path, m.group(1) or "text", m.group(2), text[: m.start()].count("\n") + 2)
        for m in _FENCE.finditer(text)
    ]


def _indented_body(lines, start):
    """The indented block after line ``start`` (options and one blank line skipped)."""
    i = start + 1
    while i < len(lines) and re.match(r"^\s+:\w[\w-]*:", lines[i]):  # directive options
        i += 1
    while i < len(lines) and not lines[i].strip():
        i += 1
    first = i
    indent = None
    while i < len(lines):
        line = lines[i]
        if line.strip():
            width = len(line) - len(line.lstrip())
            if indent is None:
                indent = width
            if width < indent or width <= len(lines[start]) - len(lines[start].lstrip()):
                break
        i += 1
    return first, textwrap.dedent("\n".join(lines[first:i])).strip("\n") + "\n"


def rst_blocks(path):
    """``.. code-block:: lang`` blocks and ``::`` literal blocks (Sphinx reads those as python)."""
    lines = path.read_text().splitlines()
    blocks = []
    for k, line in enumerate(lines):
        directive = _DIRECTIVE.match(line)
        if directive:
            first, code = _indented_body(lines, k)
            blocks.append(Block(path, directive.group(3) or "python", code, first + 1))
        elif line.rstrip().endswith("::") and not _OTHER_DIRECTIVE.match(line):
            first, code = _indented_body(lines, k)
            if code.strip():
                blocks.append(Block(path, "python", code, first + 1))
    return blocks


def blocks(path):
    return markdown_blocks(path) if path.suffix == ".md" else rst_blocks(path)


def script(path, name):
    """The python block of ``path`` headed ``# name``."""
    found = [b for b in blocks(path) if b.language == "python" and b.name == name]
    assert len(found) == 1, f"{path.name} has {len(found)} python blocks headed '# {name}'"
    return found[0]
