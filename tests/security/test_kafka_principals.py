"""Kafka enforces who writes what, on the real broker (SASL/SCRAM, StandardAuthorizer ACLs).

The `external` principal (other systems) may produce content and clicks and nothing else;
credentials made by `flywheel kafka-credentials add` get the same rights; each service's
principal only its own topics; a client without credentials is not let in at all."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError, TopicAuthorizationFailedError
from typer.testing import CliRunner

from cli.main import app
from core.config import Settings
from core.kafka_auth import local_credentials
from infra.process import Component
from schemas.model_published import ModelPublished
from tests.integration.kafka_helpers import end_offsets, kcat_credentials, kcat_environment, read_from

pytestmark = pytest.mark.integration
runner = CliRunner()


def as_principal(settings: Settings, name: str, password: str | None = None) -> dict[str, str]:
    return {"bootstrap_servers": settings.bootstrap_servers, "security_protocol": "SASL_PLAINTEXT",
            "sasl_mechanism": "SCRAM-SHA-512", "sasl_plain_username": name,
            "sasl_plain_password": password or local_credentials(settings)[name]}


async def send(options: dict[str, str], topic: str, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(**options, request_timeout_ms=10_000)
    await producer.start()
    try:
        await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


def forged_model() -> bytes:
    return ModelPublished(model_version="999", registry_version=998, artifact_uri="file:///tmp/evil",
                          run_id="forged").model_dump_json().encode()


def content(item: str) -> bytes:
    return json.dumps({"id": item, "text": "from another system", "version": 1}).encode()


async def test_the_external_principal_produces_content_and_clicks_and_nothing_else(
    kafka: Component, test_settings: Settings
) -> None:
    external = as_principal(test_settings, "external")
    before = await end_offsets(test_settings.bootstrap_servers, "model-published")
    for topic in ("model-published", "training-requested", "reindex-requested", "content-upserted.dlq"):
        with pytest.raises(TopicAuthorizationFailedError):
            await send(external, topic, forged_model(), b"999")
    assert await end_offsets(test_settings.bootstrap_servers, "model-published") == before

    item = f"ext-{uuid.uuid4().hex[:8]}"
    start = await end_offsets(test_settings.bootstrap_servers, "content-upserted")
    await send(external, "content-upserted", content(item), item.encode())
    records = await read_from(test_settings.bootstrap_servers, "content-upserted", start)
    assert [r.value for r in records if r.key == item.encode()] == [content(item)]

    # It writes; it reads nothing (no topic, no group).
    reader = AIOKafkaConsumer("content-upserted", **external, group_id="indexer", enable_auto_commit=False)
    try:
        with pytest.raises(KafkaError, match="Authorization"):
            await reader.start()
            await asyncio.wait_for(reader.getmany(timeout_ms=5000), 20)
    finally:
        await reader.stop()


def test_kcat_as_the_external_principal_is_refused_on_model_published(
    kafka: Component, test_settings: Settings
) -> None:
    kcat = shutil.which("kcat")
    assert kcat is not None, "kcat is missing: `make test` installs it (make system-deps)"
    refused = subprocess.run(
        [kcat, "-P", "-b", test_settings.bootstrap_servers,
         *kcat_credentials(test_settings, "external"), "-t", "model-published", "-k", "999"],
        input=forged_model(), timeout=60, capture_output=True, env=kcat_environment(test_settings),
    )
    assert refused.returncode != 0 and b"Topic authorization failed" in refused.stderr, refused.stderr


async def test_a_service_principal_writes_only_its_own_topics(
    kafka: Component, test_settings: Settings
) -> None:
    # The indexer reads content and parks letters; it cannot publish a model or ask for training.
    indexer = as_principal(test_settings, "indexer")
    for topic in ("model-published", "training-requested", "clicks"):
        with pytest.raises(TopicAuthorizationFailedError):
            await send(indexer, topic, forged_model(), b"999")
    # The trainer publishes models (that is its job), nothing else.
    trainer = as_principal(test_settings, "trainer")
    with pytest.raises(TopicAuthorizationFailedError):
        await send(trainer, "content-upserted", content("x"), b"x")


async def test_wrong_or_missing_credentials_are_not_let_in(kafka: Component, test_settings: Settings) -> None:
    wrong = as_principal(test_settings, "external", password="not-the-password")
    with pytest.raises(KafkaError):
        await asyncio.wait_for(send(wrong, "content-upserted", content("x"), b"x"), 60)
    anonymous = AIOKafkaProducer(bootstrap_servers=test_settings.bootstrap_servers, request_timeout_ms=5000)
    with pytest.raises((KafkaError, TimeoutError)):
        await asyncio.wait_for(anonymous.start(), 20)
    await anonymous.stop()


async def test_credentials_added_for_a_producing_system_may_produce_content_and_clicks_only(
    kafka: Component, test_settings: Settings
) -> None:
    name = f"crm-{uuid.uuid4().hex[:6]}"
    bootstrap = ["--bootstrap", test_settings.bootstrap_servers]
    added = await asyncio.to_thread(
        runner.invoke, app, ["kafka-credentials", "add", name, *bootstrap, "--json"])
    assert added.exit_code == 0, added.output
    created = json.loads(added.stdout)
    assert created["username"] == name and created["may_produce"] == ["content-upserted", "clicks"]
    system = as_principal(test_settings, name, created["password"])

    await send(system, "clicks", json.dumps({"type": "click", "session_id": "s1", "query_id": "q1",
                                             "item_id": "d1"}).encode(), b"s1")
    with pytest.raises(TopicAuthorizationFailedError):
        await send(system, "model-published", forged_model(), b"999")

    shown = await asyncio.to_thread(
        runner.invoke, app, ["kafka-credentials", "show", name, *bootstrap, "--json"])
    assert shown.exit_code == 0, shown.output
    assert set(json.loads(shown.stdout)["acls"]) == {
        "ALLOW WRITE TOPIC content-upserted", "ALLOW DESCRIBE TOPIC content-upserted",
        "ALLOW WRITE TOPIC clicks", "ALLOW DESCRIBE TOPIC clicks"}
    # The platform's own principals cannot be taken over by that command.
    taken = await asyncio.to_thread(runner.invoke, app, ["kafka-credentials", "add", "trainer", *bootstrap])
    assert taken.exit_code == 2 and "trainer" in taken.output
