"""Item texts for training and evaluation, read from the pgvector `items` table in batches."""

from __future__ import annotations

from collections.abc import Sequence

from core.adapters.pgvector import PgVectorStore
from core.training.dataset import item_text

BATCH = 1000


class PgItemTexts:
    def __init__(self, store: PgVectorStore) -> None:
        self.store = store

    async def texts(self, tenant: str, ids: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        async with self.store.pool.connection() as conn:
            for start in range(0, len(ids), BATCH):
                rows = await (await conn.execute(
                    "SELECT id, title, text FROM items WHERE tenant = %s AND id = ANY(%s)",
                    (tenant, list(ids[start : start + BATCH])),
                )).fetchall()
                found.update({row[0]: item_text(row[1], row[2]) for row in rows})
        return found

    async def sample(self, tenant: str, limit: int) -> dict[str, str]:
        async with self.store.pool.connection() as conn:
            rows = await (await conn.execute(
                "SELECT id, title, text FROM items WHERE tenant = %s ORDER BY md5(id) LIMIT %s",
                (tenant, limit),
            )).fetchall()
        return {row[0]: item_text(row[1], row[2]) for row in rows}
