"""`flywheel models registry`: MLflow registered versions beside their serving status."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import typer
from rich.table import Table

from cli.common import out
from core.bootstrap import build_model_registry, build_store
from core.config import get_settings
from core.serving import BASE_SERVING_VERSION, registry_version, serving_version
from schemas.envelope import DEFAULT_TENANT


async def _served() -> tuple[str | None, list[dict[str, Any]]]:
    store = await build_store(get_settings())
    try:
        return await store.active_version(DEFAULT_TENANT), await store.list_versions(DEFAULT_TENANT)
    finally:
        await store.close()


def model_versions() -> dict[str, Any]:
    """Every version known to MLflow or pgvector, by serving version."""
    active, indexed = asyncio.run(_served())
    registered = build_model_registry(get_settings()).list_versions()
    rows: dict[str, dict[str, Any]] = {}
    for reg in registered:
        version = serving_version(reg["registry_version"])
        rows[version] = {"version": version, "registry_version": reg["registry_version"],
                         "run_id": reg["run_id"], "training_run": reg["tags"].get("flywheel.run_id"),
                         "metrics": reg["metrics"], "source": reg["source"], "index_status": None}
    for row in indexed:
        version = row["version"]
        entry = rows.setdefault(version, {
            "version": version, "registry_version": registry_version(version) if version.isdigit() else None,
            "run_id": None, "training_run": None, "metrics": {}, "source": None})
        entry["index_status"] = row["status"]
        if version == BASE_SERVING_VERSION:
            entry["source"] = "base model"
    for entry in rows.values():
        entry["active"] = entry["version"] == active
    ordered = sorted(rows.values(), key=lambda r: int(r["version"]) if r["version"].isdigit() else 0)
    return {"active_version": active, "versions": ordered}


def registry(as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Registered model versions (MLflow) with their index status (pgvector) and gate metrics."""
    result = model_versions()
    if as_json:
        print(json.dumps(result, default=str, indent=2))
        return
    table = Table("version", "registry", "index", "active", "nDCG@10 base", "nDCG@10 cand.", "training run",
                  title=f"active version: {result['active_version']}")
    for row in result["versions"]:
        metrics = row["metrics"]
        table.add_row(
            row["version"], str(row["registry_version"] or "-"), row["index_status"] or "-",
            "*" if row["active"] else "", _fmt(metrics.get("base_ndcg_at_10")),
            _fmt(metrics.get("candidate_ndcg_at_10")), row["training_run"] or "")
    out.print(table)


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}"
