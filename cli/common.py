"""Helpers shared by the event commands (publish, load, replay)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from core.config import get_settings

err = Console(stderr=True)
out = Console()

Bootstrap = Annotated[
    str | None,
    typer.Option("--bootstrap", "-b", help="Kafka bootstrap servers (default: from FLYWHEEL_* settings)."),
]
MaxRate = Annotated[
    float | None, typer.Option("--max-rate", min=0.0, help="At most this many events per second.")
]
Progress = Annotated[bool, typer.Option("--progress/--no-progress", help="Show a progress bar.")]
# Every command that prints a result takes --json (tests/unit/test_cli_grammar.py checks it).
JsonOutput = Annotated[bool, typer.Option("--json", help="Print the result as JSON.")]


def bootstrap_or_default(bootstrap: str | None) -> str:
    return bootstrap or get_settings().bootstrap_servers


def fail(message: str, code: int = 2) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False)
    return typer.Exit(code)
