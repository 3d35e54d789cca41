"""Each real component of the local stack is up and usable."""

from __future__ import annotations

import asyncio
import uuid

import mlflow
import numpy as np
import psycopg
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from pgvector.psycopg import register_vector
from pymongo import MongoClient

from core.config import Settings
from core.kafka_auth import kafka_client_options
from infra.process import Component
from schemas.topics import TOPICS

pytestmark = pytest.mark.integration


async def test_kafka_topics_follow_the_registry(kafka: Component, test_settings: Settings) -> None:
    admin = AIOKafkaAdminClient(**kafka_client_options(), bootstrap_servers=test_settings.bootstrap_servers)
    await admin.start()
    try:
        topics = set(await admin.list_topics())
        for spec in TOPICS.values():
            assert spec.name in topics and spec.dlq in topics
        described = await admin.describe_topics(list(TOPICS))
        partitions = {d["topic"]: len(d["partitions"]) for d in described}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, "content-upserted")]
        )
    finally:
        await admin.close()
    for spec in TOPICS.values():
        assert partitions[spec.name] == spec.partitions
    entries = {entry[0]: entry[1] for entry in configs[0].resources[0][4]}
    assert entries["cleanup.policy"] == "compact"


async def test_kafka_produce_consume_with_group_and_committed_offsets(
    kafka: Component, test_settings: Settings
) -> None:
    topic, group = "clicks", f"test-{uuid.uuid4().hex[:8]}"
    session = uuid.uuid4().hex
    producer = AIOKafkaProducer(**kafka_client_options(),
                                bootstrap_servers=test_settings.bootstrap_servers, acks="all")
    await producer.start()
    try:
        sent = [await producer.send_and_wait(topic, f"m{i}".encode(), key=session.encode()) for i in range(5)]
    finally:
        await producer.stop()
    partition = sent[0].partition
    assert {record.partition for record in sent} == {partition}  # one key, one partition, order kept

    consumer = AIOKafkaConsumer(
        **kafka_client_options(), bootstrap_servers=test_settings.bootstrap_servers, group_id=group,
        enable_auto_commit=False, auto_offset_reset="earliest",
    )
    tp = TopicPartition(topic, partition)
    consumer.assign([tp])
    await consumer.start()
    try:
        consumer.seek(tp, sent[0].offset)
        received: list[bytes] = []
        while len(received) < 5:
            batch = await asyncio.wait_for(consumer.getmany(tp, timeout_ms=1000), 30)
            received += [record.value for record in batch.get(tp, []) if record.key == session.encode()]
        await consumer.commit({tp: sent[-1].offset + 1})
        committed = await consumer.committed(tp)
    finally:
        await consumer.stop()
    assert received == [f"m{i}".encode() for i in range(5)]
    assert committed == sent[-1].offset + 1


def test_pgvector_hnsw_query(postgres: Component, test_settings: Settings) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(200, 8)).astype(np.float32)
    with psycopg.connect(test_settings.postgres_dsn, autocommit=True) as conn:
        register_vector(conn)
        conn.execute("DROP TABLE IF EXISTS hnsw_probe")
        conn.execute("CREATE TABLE hnsw_probe (id int PRIMARY KEY, embedding vector(8))")
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO hnsw_probe VALUES (%s, %s)", [(i, v) for i, v in enumerate(vectors)]
            )
        conn.execute("CREATE INDEX ON hnsw_probe USING hnsw (embedding vector_cosine_ops)")
        conn.execute("SET enable_seqscan = off")
        plan = "\n".join(
            row[0] for row in conn.execute(
                "EXPLAIN SELECT id FROM hnsw_probe ORDER BY embedding <=> %s LIMIT 5", (vectors[7],)
            )
        )
        nearest = conn.execute(
            "SELECT id FROM hnsw_probe ORDER BY embedding <=> %s LIMIT 5", (vectors[7],)
        ).fetchall()
    assert "hnsw_probe_embedding_idx" in plan
    assert nearest[0][0] == 7


def test_mongodb_insert_and_find(mongodb: Component, test_settings: Settings) -> None:
    with MongoClient(test_settings.mongo_uri) as client:
        collection = client[test_settings.mongo_db]["probe"]
        marker = uuid.uuid4().hex
        collection.insert_one({"_id": marker, "query": "q", "clicks": [1, 2]})
        found = collection.find_one({"_id": marker})
    assert found == {"_id": marker, "query": "q", "clicks": [1, 2]}


def test_mlflow_run_logged_and_read_back(mlflow_server: Component, test_settings: Settings) -> None:
    client = mlflow.MlflowClient(tracking_uri=test_settings.mlflow_uri)
    experiment = client.create_experiment(f"probe-{uuid.uuid4().hex[:8]}")
    run = client.create_run(experiment)
    client.log_param(run.info.run_id, "epochs", "2")
    client.log_metric(run.info.run_id, "ndcg_at_10", 0.42)
    client.set_terminated(run.info.run_id)
    read = client.get_run(run.info.run_id)
    assert read.data.params == {"epochs": "2"}
    assert read.data.metrics == {"ndcg_at_10": 0.42}
    assert read.info.status == "FINISHED"
