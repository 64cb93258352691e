"""The commands the documentation shows (README.md and every page of docs/), read from its
text: shell blocks (continuation lines joined, ``&&`` chains split, comments dropped) and inline
``python ...`` spans, in document order, page by page. ``tests/test_readme_commands.py`` runs
them; ``tests/test_outputs.py`` reads their output folders."""
from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"
FENCED = re.compile(r"^```(\w*)\n(.*?)^```[ \t]*$", re.S | re.M)
SHELLS = ("bash", "sh", "")
INLINE = re.compile(r"`((?:python3?|time python) [^`\n]+)`")
# the commands that run a package (its __main__.py holds main())
PACKAGE_COMMANDS = ("runtime", "runtime.batch")
# a token that stands for something the user supplies: MODEL, CKPT, OUT.png, SIMCMF.encoder.onnx, $DATA/x, <yy.mm>
PLACEHOLDER = re.compile(r"^(?:[A-Z][A-Z0-9_]*(?:\.[\w.()|]+)?|.*\$\w+.*|.*<[^>]+>.*)$")


@dataclass
class Command:
    text: str  # one command line as the page shows it (continuations joined)
    line: int  # where it is in the page (1-based)
    page: str = "README.md"  # the page, relative to the checkout

    @property
    def where(self) -> str:
        return f"{self.page} line {self.line}"

    def words(self) -> list[str]:
        try:
            return shlex.split(self.text)
        except ValueError:
            return self.text.split()

    @property
    def synopsis(self) -> bool:
        """A usage line ([optional] parts, placeholders, a|b choices) rather than a runnable command."""
        return any(c in self.text for c in "[|") or "..." in self.text or any(
            PLACEHOLDER.match(w) for w in self.words()[1:])

    def tool(self) -> str | None:
        """The project module a ``python`` command runs (``export.onnx``, ``benchmarks.latency``, ``demo``), or None."""
        words = [w for w in self.words() if w != "time"]
        while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):  # PYTHONPATH=. python3 -m ...
            words = words[1:]
        if not words or words[0] not in ("python", "python3") or len(words) < 2:
            return None
        if words[1] == "-m" and len(words) > 2:
            return words[2] + ".__main__" if words[2] in PACKAGE_COMMANDS else words[2]
        if words[1].endswith(".py"):
            return words[1][:-3].replace("/", ".")
        return None


def _strip_comment(line: str) -> str:
    return "" if line.startswith("#") else re.sub(r"\s+#\s.*$", "", line).rstrip()


def pages() -> list[Path]:
    """The README, then every page of docs/ by name."""
    return [README, *sorted(DOCS.glob("*.md"))]


def page_name(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def page_commands(path: Path) -> list[Command]:
    return readme_commands(path.read_text(), page_name(path))


def readme_commands(text: str | None = None, page: str = "README.md") -> list[Command]:
    """Every command of a page's shell blocks and inline ``python ...`` spans (with at least
    one argument), in the order a reader meets them; by default the README's."""
    text = README.read_text() if text is None else text
    found = []
    for block in FENCED.finditer(text):
        if block.group(1) not in SHELLS:
            continue
        start = text.count("\n", 0, block.start(2)) + 1
        joined: list[tuple[str, int]] = []
        for i, raw in enumerate(block.group(2).splitlines()):
            line = _strip_comment(raw.strip())
            if not line:
                continue
            continued = joined and (joined[-1][0].endswith("\\") or line.startswith(("[", "--")))
            if continued:
                joined[-1] = (joined[-1][0].rstrip("\\").rstrip() + " " + line, joined[-1][1])
            else:
                joined.append((line, start + i))
        for line, at in joined:
            for part in line.rstrip("\\").split(" && "):
                found.append(Command(" ".join(part.split()), at, page))
    for span in INLINE.finditer(text):
        command = Command(" ".join(span.group(1).split()), text.count("\n", 0, span.start()) + 1, page)
        if len(command.words()) > (3 if " -m " in command.text else 2):  # the tool and an argument
            found.append(command)
    return sorted(found, key=lambda c: c.line)
