"""The fenced code examples of docs/*.md, as the docs test runs them.

Every ```bash, ```sh and ```python block is run as written, unless the line right before
its fence is a marker:

    <!-- doc-test: parse -->          each `flywheel` command line is parsed by the CLI (its
                                      command, options and values must exist and be valid) but
                                      not run: it stops the stack, or runs for minutes to hours
    <!-- doc-test: skip: <reason> --> not run at all; the reason says why (and what tests it)
    <!-- doc-test: expect: <text> --> run, and its output must hold <text> (what shows that the
                                      example did what it says, not only that it exited 0)

Other languages (json, text) are examples of output or payloads, not run.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUNNABLE = {"bash": "bash", "sh": "bash", "shell": "bash", "python": "python"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)
MARKER = re.compile(r"<!--\s*doc-test:\s*(parse|skip|expect)\s*(?::\s*(.*?))?\s*-->\s*$")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str  # "bash" or "python"
    code: str
    mode: str  # "run", "parse" or "skip"
    reason: str = ""  # why a block is parsed or skipped
    expect: str = ""  # what a run's output holds

    @property
    def name(self) -> str:
        return f"{self.path.name}:{self.line}"


def blocks(docs: Path = DOCS) -> list[Block]:
    found: list[Block] = []
    for path in sorted(docs.glob("*.md")):
        text = path.read_text()
        for match in FENCE.finditer(text):
            language = RUNNABLE.get(match.group(1).lower())
            if language is None:
                continue
            before = text[:match.start()].rstrip("\n").rsplit("\n", 1)[-1]
            marker = MARKER.search(before)
            mode, note = (marker.group(1), marker.group(2) or "") if marker else ("run", "")
            line = text.count("\n", 0, match.start()) + 1
            if mode == "expect":
                found.append(Block(path, line, language, match.group(2), "run", expect=note))
            else:
                found.append(Block(path, line, language, match.group(2), mode, note))
    return found


def command_lines(code: str) -> list[list[str]]:
    """The `flywheel` commands of a shell block, as argument lists (continuations joined,
    comments dropped)."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        if line.split()[:1] not in (["flywheel"], [".venv/bin/flywheel"]):
            continue  # another program's line (its quotes may span lines)
        commands.append(shlex.split(line, comments=True)[1:])
    return commands


def parse_command(args: list[str]) -> None:
    """Parse `flywheel ARGS` down to its leaf command without running it: click raises on an
    unknown command or option, or a value out of range (typer's own click's errors)."""
    from cli.main import app

    command: Any = typer.main.get_command(app)
    name = "flywheel"
    parent: Any = None
    rest = list(args)
    while True:
        ctx = command.make_context(name, rest, parent=parent, resilient_parsing=False)
        if not hasattr(command, "get_command"):  # a leaf command
            return
        remaining = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not remaining:
            return
        name, *rest = remaining
        sub = command.get_command(ctx, name)
        if sub is None:
            raise ValueError(f"no command {name!r} under {ctx.command_path}")
        command, parent = sub, ctx
