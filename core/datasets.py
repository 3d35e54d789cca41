"""Uploaded judgments (a tenant's labelled data, a training source): parsing and validation,
line by line. Nothing here touches a store.

Two formats:

- `jsonl`: one JSON object per line, `{"query": "...", "item_id": "...", "grade": 1}`;
  `grade` is optional (1; a number from 0 to 1000, 0 meaning judged not relevant) and so is
  `query_id` (judgments of one query share it; default: the query's text).
- `beir`: BEIR's qrels (a TSV of `query-id`, `corpus-id`, `score`, with or without its header
  line) and its queries file (JSON Lines of `{"_id", "text"}`), the query text looked up by id.

Every line that does not hold a valid judgment is a reject, reported as `flywheel publish`
reports its rejects: `{"line", "reason", "errors": [{"loc", "msg"}], "raw"}` (with `file`
for the BEIR files); the valid lines are kept.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

DatasetFormat = Literal["jsonl", "beir"]
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")  # whole names: fullmatch
MAX_JUDGMENTS = 1_000_000
MAX_QUERY_CHARS = 1000
MAX_RAW_CHARS = 2000  # of a rejected line, as reported


class Judgment(BaseModel):
    """One relevance judgment: `item_id` is relevant to `query` with `grade` (0: not relevant)."""

    model_config = ConfigDict(extra="forbid")

    query: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    item_id: str = Field(min_length=1, max_length=512)
    grade: float = Field(default=1.0, ge=0, le=1000, allow_inf_nan=False)
    query_id: str | None = Field(default=None, min_length=1, max_length=256)

    @field_validator("query")
    @classmethod
    def _words(cls, query: str) -> str:
        if not query.strip():
            raise ValueError("must not be empty or only whitespace")
        return query


@dataclass(frozen=True)
class DatasetReject:
    line: int
    reason: str
    raw: str
    errors: list[dict[str, str]] = field(default_factory=list)
    file: str | None = None

    def as_dict(self) -> dict[str, Any]:
        record: dict[str, Any] = {"line": self.line, "reason": self.reason}
        if self.file:
            record = {"file": self.file, **record}
        if self.errors:
            record["errors"] = self.errors
        record["raw"] = self.raw[:MAX_RAW_CHARS]
        return record

    def to_json(self) -> str:
        return json.dumps(self.as_dict(), ensure_ascii=False)


@dataclass
class ParsedDataset:
    judgments: list[Judgment] = field(default_factory=list)
    rejects: list[DatasetReject] = field(default_factory=list)

    @property
    def stats(self) -> dict[str, int]:
        return {"judgments": len(self.judgments),
                "queries": len({j.query_id or j.query for j in self.judgments}),
                "items": len({j.item_id for j in self.judgments}),
                "relevant": sum(1 for j in self.judgments if j.grade > 0),
                "rejected": len(self.rejects)}


class DatasetError(ValueError):
    """The upload as a whole is unusable (a bad name, no valid line, too many lines)."""


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise DatasetError(f"name: {name!r} is not a dataset name: 1 to 128 letters, digits, '.', '_' "
                           f"or '-', starting with a letter or digit")
    return name


def _errors(error: ValidationError) -> list[dict[str, str]]:
    return [{"loc": ".".join(str(p) for p in e["loc"]) or "(line)", "msg": e["msg"]} for e in error.errors()]


def _lines(text: str) -> Iterable[tuple[int, str]]:
    for number, line in enumerate(text.splitlines(), start=1):
        if line.strip():
            yield number, line


def parse_jsonl(text: str) -> ParsedDataset:
    """Judgments from JSON Lines, one per line; blank lines are skipped."""
    parsed = ParsedDataset()
    for number, line in _lines(text):
        try:
            data = json.loads(line)
        except ValueError as error:
            parsed.rejects.append(DatasetReject(number, f"not JSON: {error}", line))
            continue
        try:
            parsed.judgments.append(Judgment.model_validate(data))
        except ValidationError as error:
            errors = _errors(error)
            reason = f"invalid judgment ({len(errors)} error{'s' * (len(errors) > 1)}): " + "; ".join(
                f"{e['loc']}: {e['msg']}" for e in errors)
            parsed.rejects.append(DatasetReject(number, reason, line, errors))
        _check_size(parsed)
    return parsed


def parse_beir(qrels: str, queries: str) -> ParsedDataset:
    """Judgments from BEIR's qrels TSV, with each query's text from its queries JSON Lines."""
    parsed = ParsedDataset()
    texts: dict[str, str] = {}
    for number, line in _lines(queries):
        try:
            data = json.loads(line)
            query_id, text = str(data["_id"]), data["text"]
            if not isinstance(text, str):
                raise TypeError("text: must be a string")
        except (ValueError, KeyError, TypeError) as error:
            parsed.rejects.append(DatasetReject(
                number, f"not a BEIR query ({{\"_id\", \"text\"}}): {error!r}", line, file="queries"))
            continue
        texts[query_id] = text
    for number, line in _lines(qrels):
        columns = line.split("\t") if "\t" in line else line.split()
        if number == 1 and columns[:1] == ["query-id"]:
            continue  # the header line
        if len(columns) != 3:
            parsed.rejects.append(DatasetReject(
                number, f"a qrels line has 3 columns (query-id, corpus-id, score), not {len(columns)}",
                line, file="qrels"))
            continue
        query_id, item_id, score = (c.strip() for c in columns)
        if query_id not in texts:
            parsed.rejects.append(DatasetReject(
                number, f"query-id {query_id!r} is not in the queries file", line,
                [{"loc": "query-id", "msg": "not in the queries file"}], file="qrels"))
            continue
        try:
            parsed.judgments.append(Judgment(query=texts[query_id], item_id=item_id, grade=float(score),
                                             query_id=query_id))
        except (ValidationError, ValueError) as error:
            errors = (_errors(error) if isinstance(error, ValidationError)
                      else [{"loc": "score", "msg": f"not a number: {score!r}"}])
            reason = "invalid judgment: " + "; ".join(f"{e['loc']}: {e['msg']}" for e in errors)
            parsed.rejects.append(DatasetReject(number, reason, line, errors, file="qrels"))
        _check_size(parsed)
    return parsed


def _check_size(parsed: ParsedDataset) -> None:
    if len(parsed.judgments) > MAX_JUDGMENTS:
        raise DatasetError(f"more than {MAX_JUDGMENTS:,} judgments: split the dataset")


def parse(format: DatasetFormat, judgments: str | None = None, qrels: str | None = None,
          queries: str | None = None) -> ParsedDataset:
    """Parse an upload; DatasetError when it holds no valid judgment at all."""
    if format == "jsonl":
        if judgments is None:
            raise DatasetError("judgments: the JSON Lines text is required for format jsonl")
        parsed = parse_jsonl(judgments)
    else:
        if qrels is None or queries is None:
            raise DatasetError("qrels, queries: both are required for format beir")
        parsed = parse_beir(qrels, queries)
    if not parsed.judgments:
        raise DatasetRejected(parsed)
    return parsed


class DatasetRejected(DatasetError):
    """No line held a valid judgment; `parsed.rejects` says why for each."""

    def __init__(self, parsed: ParsedDataset) -> None:
        super().__init__(f"no valid judgment: {len(parsed.rejects)} line(s) rejected")
        self.parsed = parsed
