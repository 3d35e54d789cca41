"""The whole local stack in start order: real components first, then our services."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from consumers.service import SERVICES
from core.config import Settings
from infra.ferretdb import FerretDB
from infra.kafka import Kafka
from infra.kafka_connect import KafkaConnect
from infra.mlflow_server import MLflowServer
from infra.postgres import Postgres
from infra.process import Component
from infra.services import consumer_service, gateway_service
from infra.supervisor import SupervisorComponent, restarts


def dependency_components(settings: Settings) -> list[Component]:
    from infra.triton import Triton

    return [Kafka(settings), Postgres(settings), FerretDB(settings), MLflowServer(settings), Triton(settings),
            KafkaConnect(settings)]


def service_components(settings: Settings) -> list[Component]:
    consumers: list[Component] = [
        consumer_service(settings, name, index) for index, name in enumerate(SERVICES)
    ]
    return [*consumers, gateway_service(settings)]


def all_components(settings: Settings) -> list[Component]:
    """Start order; the supervisor comes last (and so is stopped first)."""
    return [*dependency_components(settings), *service_components(settings), SupervisorComponent(settings)]


def select(components: Iterable[Component], names: Iterable[str] | None) -> list[Component]:
    components = list(components)
    if not names:
        return components
    wanted = set(names)
    unknown = wanted - {c.name for c in components}
    if unknown:
        known = ", ".join(c.name for c in components)
        raise ValueError(f"unknown component(s) {', '.join(sorted(unknown))}; known: {known}")
    return [c for c in components if c.name in wanted]


def up(
    settings: Settings,
    names: Iterable[str] | None = None,
    on_started: Callable[[Component], None] | None = None,
) -> list[Component]:
    components = all_components(settings)
    chosen = select(components, names)
    # Services started by name are supervised too.
    services = {c.name for c in service_components(settings)}
    if any(c.name in services for c in chosen) and not any(c.name == "supervisor" for c in chosen):
        chosen.append(components[-1])
    started = []
    for component in chosen:
        component.start()
        started.append(component)
        if on_started is not None:
            on_started(component)
    return started


def down(settings: Settings, names: Iterable[str] | None = None) -> None:
    for component in reversed(select(all_components(settings), names)):
        component.stop()


def status(settings: Settings) -> list[dict[str, object]]:
    """Each component's status; a service's row adds its restarts by the supervisor."""
    services = {c.name for c in service_components(settings)}
    counts = restarts(settings)
    return [
        {**row, "restarts": counts.get(str(row["name"]), 0) if row["name"] in services else None}
        for row in (component.status() for component in all_components(settings))
    ]
