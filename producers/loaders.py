"""Read a corpus as content-upserted items: BEIR (corpus.jsonl with _id, title, text),
generic JSON Lines, or CSV, with a field/column mapping."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from pathlib import Path
from typing import Any

from producers.bulk import Item, SourceError, read_json_lines


class CorpusFormat(StrEnum):
    AUTO = "auto"
    BEIR = "beir"
    JSONL = "jsonl"
    CSV = "csv"


@dataclass(frozen=True)
class FieldMap:
    id: str | None = None  # None: "_id" for BEIR, "id" otherwise
    title: str = "title"
    text: str = "text"

    def id_field(self, fmt: CorpusFormat) -> str:
        return self.id or ("_id" if fmt is CorpusFormat.BEIR else "id")


def resolve(path: Path, fmt: CorpusFormat) -> tuple[Path, CorpusFormat]:
    """The file to read and its format; a directory means a BEIR dataset (its corpus.jsonl)."""
    if path.is_dir():
        corpus = path / "corpus.jsonl"
        if not corpus.exists():
            raise FileNotFoundError(f"{path} is a directory without corpus.jsonl (BEIR layout)")
        return corpus, CorpusFormat.BEIR if fmt is CorpusFormat.AUTO else fmt
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if fmt is not CorpusFormat.AUTO:
        return path, fmt
    if path.suffix.lower() in (".csv", ".tsv"):
        return path, CorpusFormat.CSV
    with path.open(encoding="utf-8") as handle:
        first = next((line for line in handle if line.strip()), "")
    try:
        is_beir = "_id" in json.loads(first)
    except (json.JSONDecodeError, TypeError):
        is_beir = False
    return path, CorpusFormat.BEIR if is_beir else CorpusFormat.JSONL


def to_event(
    doc: Any, fmt: CorpusFormat, fields: FieldMap, *, tenant: str, version: int
) -> dict[str, Any] | SourceError:
    if not isinstance(doc, dict):
        return SourceError("expected a JSON object")
    id_field = fields.id_field(fmt)
    missing = [name for name in (id_field, fields.text) if doc.get(name) in (None, "")]
    if missing:
        return SourceError("missing or empty " + ", ".join(f"'{name}'" for name in missing))
    taken = {id_field, fields.title, fields.text}
    if fmt is CorpusFormat.BEIR:
        metadata = doc.get("metadata") if isinstance(doc.get("metadata"), dict) else {}
    else:
        metadata = {k: v for k, v in doc.items() if k not in taken and v not in (None, "")}
    return {
        "id": str(doc[id_field]),
        "title": str(doc.get(fields.title) or ""),
        "text": str(doc[fields.text]),
        "metadata": metadata,
        "version": version,
        "tenant": tenant,
    }


def _rows(path: Path, fmt: CorpusFormat, delimiter: str | None) -> Iterator[Item]:
    if fmt is CorpusFormat.CSV:
        with path.open(newline="", encoding="utf-8") as handle:
            sep = delimiter or ("\t" if path.suffix.lower() == ".tsv" else ",")
            reader = csv.DictReader(handle, delimiter=sep)
            for row in reader:
                yield Item(reader.line_num, json.dumps(row, ensure_ascii=False), row)
    else:
        with path.open(encoding="utf-8") as handle:
            yield from read_json_lines(handle)


def read_corpus(
    path: Path,
    fmt: CorpusFormat = CorpusFormat.AUTO,
    fields: FieldMap | None = None,
    *,
    tenant: str = "default",
    version: int = 1,
    limit: int | None = None,
    delimiter: str | None = None,
) -> Iterator[Item]:
    """content-upserted items of a corpus, with their source line numbers."""
    fields = fields or FieldMap()
    file, fmt = resolve(path, fmt)
    items = _rows(file, fmt, delimiter)
    for item in islice(items, limit):
        data = item.data
        if not isinstance(data, SourceError):
            data = to_event(data, fmt, fields, tenant=tenant, version=version)
        yield Item(item.line, item.raw, data)


def count_rows(path: Path, fmt: CorpusFormat = CorpusFormat.AUTO) -> int:
    """Upper bound of items (non-blank lines), for a progress bar."""
    file, fmt = resolve(path, fmt)
    with file.open(encoding="utf-8") as handle:
        lines = sum(1 for line in handle if line.strip())
    return lines - 1 if fmt is CorpusFormat.CSV else lines
