"""Moved: the vector store is the package :mod:`core.adapters.pgvector`. This module only
re-exports it for the modules not yet updated."""

from __future__ import annotations

from core.adapters.pgvector import SCHEMA, PgVectorStore, chunk_table

__all__ = ["SCHEMA", "PgVectorStore", "chunk_table"]
