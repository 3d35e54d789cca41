"""`flywheel datasets` against the real MongoDB: upload (JSON Lines and BEIR) with rejects
written and reported as `flywheel publish` does, list, show, delete."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from core.config import REPO_ROOT, Settings
from infra.process import Component

pytestmark = pytest.mark.integration


def flywheel(settings: Settings, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cli.main", *args], capture_output=True, text=True,
                          cwd=cwd, env={**os.environ, **settings.to_env(), "PYTHONPATH": str(REPO_ROOT),
                                        "COLUMNS": "200"}, timeout=120, check=False)


def test_upload_list_show_delete_with_rejects(
    mongodb: Component, test_settings: Settings, tmp_path: Path
) -> None:
    tenant = f"cli-{uuid.uuid4().hex[:8]}"

    def datasets(*args: str) -> subprocess.CompletedProcess[str]:
        return flywheel(test_settings, tmp_path, "datasets", *args, "--tenant", tenant)
    judgments = tmp_path / "judged.jsonl"
    judgments.write_text("\n".join([
        json.dumps({"query": "how is tea made", "item_id": "tea-1", "grade": 2}),
        json.dumps({"query": "espresso", "item_id": ""}),
        json.dumps({"query": "espresso", "item_id": "coffee-1"}),
    ]) + "\n")
    done = datasets("upload", "judged", str(judgments), "--json")
    assert done.returncode == 1, done.stderr  # a line was rejected
    result = json.loads(done.stdout)
    assert result["stats"]["judgments"] == 2 and result["stats"]["rejected"] == 1
    rejects = (tmp_path / "judged.jsonl.rejects.jsonl").read_text().splitlines()
    [reject] = [json.loads(line) for line in rejects]
    assert reject["line"] == 2 and reject["errors"][0]["loc"] == "item_id"
    assert reject["raw"] == '{"query": "espresso", "item_id": ""}'
    assert "rejects (line number, reason, raw line)" in done.stderr

    qrels, queries = tmp_path / "test.tsv", tmp_path / "queries.jsonl"
    qrels.write_text("query-id\tcorpus-id\tscore\n1\tdoc-1\t1\n1\tdoc-2\t0\n")
    queries.write_text(json.dumps({"_id": "1", "text": "does tea help"}) + "\n")
    beir = datasets("upload", "beir-test", "--qrels", str(qrels), "--queries", str(queries))
    assert beir.returncode == 0, beir.stderr
    assert "stored 2 judgments of 1 queries, rejected 0" in beir.stdout
    again = datasets("upload", "beir-test", "--qrels", str(qrels), "--queries", str(queries))
    assert again.returncode == 1 and "delete it first" in again.stderr

    listed = json.loads(datasets("list", "--json").stdout)
    assert [d["name"] for d in listed] == ["beir-test", "judged"]
    shown = json.loads(datasets("show", "judged", "--json").stdout)
    assert shown["sample"][0]["item_id"] == "tea-1" and shown["rejects"][0]["line"] == 2
    assert datasets("delete", "judged").returncode == 0
    assert datasets("show", "judged").returncode == 1

    nothing = tmp_path / "bad.jsonl"
    nothing.write_text("not json\n")
    refused = datasets("upload", "bad", str(nothing))
    assert refused.returncode == 1 and "no valid judgment" in refused.stderr
    assert (tmp_path / "bad.jsonl.rejects.jsonl").exists()
