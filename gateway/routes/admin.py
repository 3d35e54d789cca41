"""Operations: the stack's health, topic offsets and consumer lag, item counts per tenant,
and the dead-letter topics (list, inspect, redrive).

What spans tenants needs the `operator` scope: component status (URLs, PIDs) and topic lag.
Item counts and dead letters answer a tenant admin (`admin` scope) with its own tenant's only
(a letter's tenant: kafka_ops.dead_letter_queue.Letter.tenant), an operator with every tenant's.
They back the web console (gateway/console) and answer JSON, errors as problem+json.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable
from typing import Annotated, Any, TypeVar

from aiokafka import TopicPartition
from aiokafka.errors import KafkaError
from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from core.adapters.kafka_admin import KafkaAdminError, connect_kafka
from gateway.deps import Admin, Operator, SettingsDep, StoreDep
from gateway.problems import Problem
from gateway.readiness import stack_status
from kafka_ops import dead_letter_queue as dlq
from schemas.envelope import INT64_MAX
from schemas.topics import TOPICS

router = APIRouter(prefix="/v1/admin", tags=["admin"])

# The consumer groups of the platform's services (consumers/*/app.py).
CONSUMER_GROUPS = ("indexer", "sessions", "trainer", "deployer", "reindexer", "improver")
KAFKA_TIMEOUT_S = 20.0
T = TypeVar("T")


async def _kafka(call: Awaitable[T]) -> T:
    """Await a Kafka call; an unreachable broker or unknown topic answers 503 / 404."""
    try:
        return await asyncio.wait_for(call, timeout=KAFKA_TIMEOUT_S)
    except KafkaAdminError as error:
        status = 404 if "does not exist" in str(error) else 503
        raise Problem(status, str(error)) from error
    except (KafkaError, TimeoutError, OSError) as error:
        raise Problem(503, f"Kafka is unavailable: {error!r}", headers={"Retry-After": "5"}) from error


# --- health -------------------------------------------------------------------------------
# `scheme://user:password@host`: the password never leaves the gateway.
_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<secret>[^@/\s]*)@")


def redact(value: Any) -> Any:
    """`value` with the password of every URL in it replaced by `***`."""
    if isinstance(value, str):
        return _CREDENTIALS.sub(r"\g<scheme>\g<user>:***@", value)
    if isinstance(value, dict):
        return {k: redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [redact(v) for v in value]
    return value


@router.get("/status")
async def components_status(who: Operator, settings: SettingsDep) -> list[dict[str, Any]]:
    """Every component of the stack, probed at its configured address: name, url, pid (unknown
    here: null), healthy, detail (passwords in URLs shown as `***`). Operator scope."""
    return [redact(component) for component in await asyncio.to_thread(stack_status, settings)]


# --- topics and lag -------------------------------------------------------------------------
class GroupOffsets(BaseModel):
    group: str
    committed: int = Field(description="Sum over partitions of the committed offsets.")
    lag: int = Field(description="Records not yet consumed (end minus committed, per partition).")
    partitions: dict[int, int] = Field(default_factory=dict, description="Committed offset per partition.")


class TopicOffsets(BaseModel):
    topic: str
    partitions: int
    end_offset: int = Field(description="Sum over partitions of the end offsets: records ever written.")
    end_offsets: dict[int, int] = Field(default_factory=dict)
    groups: list[GroupOffsets] = Field(default_factory=list)


async def _topic_offsets(bootstrap: str) -> list[TopicOffsets]:
    async with connect_kafka(bootstrap) as kafka:
        ends: dict[str, dict[int, int]] = {}
        for name in TOPICS:
            ends[name] = await kafka.end_offsets(name, await kafka.partitions(name))
        committed: dict[str, dict[TopicPartition, int]] = {}
        for group in CONSUMER_GROUPS:
            offsets = await kafka.admin.list_consumer_group_offsets(group)
            committed[group] = {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}
    result = []
    for name, end in ends.items():
        topic = TopicOffsets(topic=name, partitions=len(end), end_offset=sum(end.values()), end_offsets=end)
        for group, offsets in committed.items():
            mine = {tp.partition: offset for tp, offset in offsets.items() if tp.topic == name}
            if not mine:
                continue
            lag = sum(max(0, end_offset - mine.get(p, 0)) for p, end_offset in end.items())
            topic.groups.append(GroupOffsets(group=group, committed=sum(mine.values()), lag=lag,
                                             partitions=mine))
        result.append(topic)
    return result


@router.get("/topics", response_model=list[TopicOffsets])
async def topics(who: Operator, settings: SettingsDep) -> list[TopicOffsets]:
    """Per registry topic: end offsets and, per consumer group that reads it, committed offsets and lag.
    Two polls of `end_offset` give the events per second. Operator scope (every tenant's traffic)."""
    return await _kafka(_topic_offsets(settings.bootstrap_servers))


# --- tenants ------------------------------------------------------------------------------
class TenantCount(BaseModel):
    tenant: str
    items: int


@router.get("/tenants", response_model=list[TenantCount])
async def tenants(who: Admin, store: StoreDep) -> list[TenantCount]:
    """Indexed items per tenant: an operator sees every tenant, a tenant admin its own."""
    async with store.pool.connection() as conn:
        if who.operator:
            cursor = await conn.execute("SELECT tenant, count(*) FROM items GROUP BY tenant ORDER BY tenant")
        else:
            cursor = await conn.execute("SELECT %s::text, count(*) FROM items WHERE tenant = %s",
                                        (who.tenant, who.tenant))
        rows = await cursor.fetchall()
    return [TenantCount(tenant=row[0], items=row[1]) for row in rows]


# --- dead letters ---------------------------------------------------------------------------
class LetterBrief(BaseModel):
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    error: str
    original: str


class DlqTopic(BaseModel):
    topic: str
    total: int
    pending: int = Field(description="Letters not yet redriven.")
    letters: list[LetterBrief] = Field(default_factory=list)


class Letter(BaseModel):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    error: str
    original: str
    headers: dict[str, str]
    value: str | None


class RedriveRequest(BaseModel):
    limit: int | None = Field(default=None, ge=1, le=INT64_MAX, description="At most this many letters.")
    dry_run: bool = False


class Redriven(BaseModel):
    topic: str
    redriven: int
    dry_run: bool


def _dlq_topic(topic: str) -> str:
    try:
        return dlq.dlq_topics(topic)[0]
    except ValueError as error:
        raise Problem(404, str(error)) from error


def _brief(letter: dlq.Letter) -> LetterBrief:
    return LetterBrief(partition=letter.partition, offset=letter.offset, timestamp_ms=letter.timestamp_ms,
                       key=letter.key, error=letter.error, original=letter.original)


def _visible(who: Admin, letter: dlq.Letter) -> bool:
    return who.operator or letter.tenant == who.tenant


@router.get("/dlq", response_model=list[DlqTopic])
async def dead_letters(
    who: Admin, settings: SettingsDep,
    letters: int = Query(default=20, ge=0, le=200, description="Letters listed per topic."),
) -> list[DlqTopic]:
    """Every dead-letter topic: how many letters, how many not redriven, and the first few;
    a tenant admin's own letters only (of the first 10,000 per topic), an operator's all."""
    bootstrap = settings.bootstrap_servers
    if not who.operator:
        result = []
        for name in dlq.dlq_topics():
            mine, pending = await _kafka(dlq.tenant_letters(bootstrap, name, who.tenant))
            result.append(DlqTopic(topic=name, total=len(mine), pending=len(pending),
                                   letters=[_brief(x) for x in mine[:letters]]))
        return result
    summaries = await _kafka(dlq.summarize(bootstrap, dlq.dlq_topics()))
    result = []
    for summary in summaries:
        found = await _kafka(dlq.read_letters(bootstrap, summary.topic, letters)) \
            if summary.total and letters else []
        result.append(DlqTopic(topic=summary.topic, total=summary.total, pending=summary.pending,
                               letters=[_brief(x) for x in found]))
    return result


@router.get("/dlq/{topic}/{partition}/{offset}", response_model=Letter)
async def dead_letter(
    topic: str, who: Admin, settings: SettingsDep,
    partition: Annotated[int, Path(ge=0, le=2**31 - 1, description="A partition of the topic.")],
    offset: Annotated[int, Path(ge=0, le=INT64_MAX, description="The letter's offset.")],
) -> Letter:
    """One letter: its key, headers (the error and where it came from) and value."""
    name = _dlq_topic(topic)
    found = await _kafka(dlq.read_letters(settings.bootstrap_servers, name, 1, partition, offset))
    if not found or found[0].offset != offset or not _visible(who, found[0]):
        raise Problem(404, f"no letter at {name}/{partition}@{offset}")
    letter = found[0]
    return Letter(**letter.as_dict(), error=letter.error, original=letter.original)


@router.post("/dlq/{topic}/redrive", response_model=Redriven)
async def redrive(
    topic: str, who: Admin, settings: SettingsDep, body: RedriveRequest | None = None
) -> Redriven:
    """Republish the letters not yet redriven to their original topics: a tenant admin's own
    letters only, an operator's all."""
    body = body or RedriveRequest()
    name = _dlq_topic(topic)
    try:
        sent = await asyncio.wait_for(dlq.redrive(
            settings.bootstrap_servers, name, dry_run=body.dry_run, limit=body.limit,
            tenant=None if who.operator else who.tenant), timeout=120)
    except KafkaAdminError as error:
        raise Problem(503, str(error)) from error
    except (KafkaError, TimeoutError, OSError) as error:
        raise Problem(503, f"redrive of {name} did not finish: {error!r}",
                      headers={"Retry-After": "5"}) from error
    return Redriven(topic=name, redriven=sent, dry_run=body.dry_run)
