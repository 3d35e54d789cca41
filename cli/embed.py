"""`flywheel embed`: vectors from the gateway's OpenAI-compatible `POST /v1/embeddings`."""

from __future__ import annotations

import json
import sys
from typing import Annotated, Any

import httpx
import typer
from rich.table import Table

from cli.common import fail, out
from core.config import get_settings


def _texts(texts: list[str] | None) -> list[str]:
    """The arguments, or one text per non-empty line of stdin when there are none (or `-`)."""
    if texts and texts != ["-"]:
        return texts
    return [line.rstrip("\n") for line in sys.stdin if line.strip()]


def embed(
    texts: Annotated[
        list[str] | None, typer.Argument(help="Texts to embed (none or `-`: one per line of stdin).")
    ] = None,
    model: Annotated[
        str, typer.Option("--model", help="`active`, `latest`, `base` or a version number.")
    ] = "active",
    api_key: Annotated[
        str | None, typer.Option("--api-key", envvar="FLYWHEEL_API_KEY",
                                 help="A key with the search scope (default: the local admin key).")
    ] = None,
    url: Annotated[str | None, typer.Option("--url", help="The gateway (default: from settings).")] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the gateway's response (OpenAI's embeddings format).")
    ] = False,
    timeout_s: Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait.")] = 60,
) -> None:
    """Embed texts through the gateway with the tenant's model (Triton's query lane)."""
    settings = get_settings()
    inputs = _texts(texts)
    if not inputs:
        raise fail("nothing to embed: pass texts as arguments or one per line on stdin")
    key = api_key or (settings.api_key_file.read_text().strip() if settings.api_key_file.exists() else "")
    if not key:
        raise fail(f"no API key: pass --api-key or create one with `flywheel up` ({settings.api_key_file})")
    base = (url or settings.gateway_url).rstrip("/")
    try:
        response = httpx.post(f"{base}/v1/embeddings", json={"input": inputs, "model": model},
                              headers={"Authorization": f"Bearer {key}"}, timeout=timeout_s)
    except httpx.HTTPError as error:
        raise fail(f"cannot reach the gateway at {base}: {error}", 1) from error
    body: dict[str, Any] = response.json() if response.content else {}
    if response.status_code != 200:
        raise fail(f"HTTP {response.status_code}: {body.get('detail', response.text[:300])}", 1)
    if as_json:
        print(json.dumps(body))
        return
    table = Table("#", "text", "dim", "first values",
                  title=f"model version {body['model']}, {body['usage']['prompt_tokens']} tokens")
    for item in body["data"]:
        vector = item["embedding"]
        preview = ", ".join(f"{v:.4f}" for v in vector[:4])
        table.add_row(str(item["index"]), inputs[item["index"]][:60], str(len(vector)), f"[{preview}, ...]")
    out.print(table)
