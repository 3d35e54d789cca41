"""Judgment datasets: JSON Lines and BEIR parsed line by line, rejects as `flywheel publish`'s."""

from __future__ import annotations

import json

import pytest

from core.datasets import DatasetError, DatasetRejected, check_name, parse, parse_beir, parse_jsonl

GOOD = [{"query": "how is tea made", "item_id": "tea-1", "grade": 2},
        {"query": "how is tea made", "item_id": "tea-2"},
        {"query": "espresso", "item_id": "coffee-1", "grade": 0, "query_id": "q2"}]


def jsonl(rows: list[object]) -> str:
    return "\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n"


def test_valid_lines_are_kept_and_each_bad_line_is_a_reject_naming_the_field() -> None:
    parsed = parse_jsonl(jsonl([GOOD[0], '{"query": "x"', GOOD[1], {"query": " ", "item_id": "a"},
                                {"query": "q", "item_id": "a", "grade": -1, "extra": 1}, "", GOOD[2]]))
    assert [j.item_id for j in parsed.judgments] == ["tea-1", "tea-2", "coffee-1"]
    assert parsed.judgments[1].grade == 1.0 and parsed.judgments[2].query_id == "q2"
    assert [r.line for r in parsed.rejects] == [2, 4, 5]
    assert parsed.rejects[0].reason.startswith("not JSON")
    whitespace = parsed.rejects[1].as_dict()
    assert whitespace["errors"] == [
        {"loc": "query", "msg": "Value error, must not be empty or only whitespace"}]
    assert whitespace["raw"] == '{"query": " ", "item_id": "a"}'
    fields = {e["loc"] for e in parsed.rejects[2].errors}
    assert fields == {"grade", "extra"} and "2 errors" in parsed.rejects[2].reason
    assert list(json.loads(parsed.rejects[2].to_json())) == ["line", "reason", "errors", "raw"]
    assert parsed.stats == {"judgments": 3, "queries": 2, "items": 3, "relevant": 2, "rejected": 3}


def test_beir_qrels_take_the_query_text_by_id() -> None:
    queries = jsonl([{"_id": "1", "text": "how is tea made"}, {"_id": "2", "text": "espresso"}, "{bad"])
    qrels = "query-id\tcorpus-id\tscore\n1\ttea-1\t1\n2\tcoffee-1\t2\n3\tx\t1\n1\ttea-2\n1\ttea-3\tmany\n"
    parsed = parse_beir(qrels, queries)
    assert [(j.query, j.item_id, j.grade, j.query_id) for j in parsed.judgments] == [
        ("how is tea made", "tea-1", 1.0, "1"), ("espresso", "coffee-1", 2.0, "2")]
    rejects = [r.as_dict() for r in parsed.rejects]
    assert [(r["file"], r["line"]) for r in rejects] == [
        ("queries", 3), ("qrels", 4), ("qrels", 5), ("qrels", 6)]
    assert "not in the queries file" in rejects[1]["reason"] and "3 columns" in rejects[2]["reason"]
    assert rejects[3]["errors"] == [{"loc": "score", "msg": "not a number: 'many'"}]


def test_an_upload_without_a_valid_line_or_its_files_is_refused() -> None:
    with pytest.raises(DatasetRejected) as refused:
        parse("jsonl", judgments='{"query": "q"}\n')
    assert len(refused.value.parsed.rejects) == 1
    with pytest.raises(DatasetError, match="judgments"):
        parse("jsonl")
    with pytest.raises(DatasetError, match="qrels, queries"):
        parse("beir", qrels="1\ta\t1\n")
    assert parse("jsonl", judgments=jsonl(GOOD)).stats["judgments"] == 3


@pytest.mark.parametrize("name", ["", "-x", "a b", "x" * 129, "ü", "abc\n", "a\x00"])
def test_dataset_names_are_checked(name: str) -> None:
    with pytest.raises(DatasetError, match="name"):
        check_name(name)
