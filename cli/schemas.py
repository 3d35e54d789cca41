"""`flywheel schemas export`: JSON Schema per topic and the AsyncAPI document."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cli.common import err, out
from core.config import REPO_ROOT
from schemas.export import stale_docs, write_docs

app = typer.Typer(help="Event contracts: export JSON Schema and AsyncAPI.", no_args_is_help=True)


@app.command("export")
def export(
    out_dir: Annotated[Path, typer.Option("--out", help="Docs directory.")] = REPO_ROOT / "docs",
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 if the files are stale.")
    ] = False,
) -> None:
    """Write docs/schemas/<topic>.json and docs/asyncapi.json (deterministic output)."""
    if check:
        stale = stale_docs(out_dir)
        for path in stale:
            err.print(f"stale: {path}", highlight=False)
        if stale:
            err.print("run `flywheel schemas export` and commit the result")
            raise typer.Exit(1)
        out.print("schema docs are up to date")
        return
    written = write_docs(out_dir)
    for path in written:
        out.print(f"wrote {path}", highlight=False)
    if not written:
        out.print("schema docs are up to date")
