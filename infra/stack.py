"""The whole local stack: real components first, then our services, started overlapping."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from consumers.service import SERVICES
from core.config import Settings
from infra.ferretdb import FerretDB
from infra.kafka import Kafka
from infra.kafka_connect import KafkaConnect
from infra.mlflow_server import MLflowServer
from infra.postgres import Postgres
from infra.process import Component, start_overlapped
from infra.prometheus import Prometheus
from infra.services import AsgiService, consumer_service, gateway_service
from infra.supervisor import SupervisorComponent, restarts
from schemas.topics import (
    CLICKS,
    CONTENT_UPSERTED,
    MODEL_PUBLISHED,
    REINDEX_REQUESTED,
    TRAINING_REQUESTED,
    TopicSpec,
)


def dependency_components(settings: Settings) -> list[Component]:
    from infra.triton import Triton

    return [Kafka(settings), Postgres(settings), FerretDB(settings), MLflowServer(settings), Triton(settings),
            KafkaConnect(settings), Prometheus(settings)]


def scale_file(settings: Settings) -> Path:
    return settings.run_dir / "scale.json"


def read_scale(settings: Settings) -> dict[str, int]:
    """Processes per consumer service as `flywheel up --scale` last set them (1 if not named)."""
    try:
        data = json.loads(scale_file(settings).read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): int(v) for k, v in data.items() if k in SERVICES and isinstance(v, int) and v >= 1}


def parse_scale(specs: Iterable[str]) -> dict[str, int]:
    """`["indexer=3", "sessions=2"]` -> {"indexer": 3, "sessions": 2}; ValueError says what is wrong."""
    scale: dict[str, int] = {}
    for spec in specs:
        name, sep, count = spec.partition("=")
        if not sep or not count.strip().isdigit():
            raise ValueError(f"--scale takes SERVICE=N, got {spec!r}")
        if name not in SERVICES:
            raise ValueError(f"--scale {spec}: {name!r} is not a consumer service ({', '.join(SERVICES)})")
        if int(count) < 1:
            raise ValueError(f"--scale {spec}: at least one (to stop it: `flywheel down {name}`)")
        scale[name] = int(count)
    return scale


# The topic whose partitions a service's consumer group divides among its processes (the
# sources service reads Debezium's change topics, whose partitions Kafka Connect decides).
SERVICE_TOPICS: dict[str, TopicSpec] = {
    "indexer": CONTENT_UPSERTED, "sessions": CLICKS, "improver": CLICKS, "trainer": TRAINING_REQUESTED,
    "deployer": MODEL_PUBLISHED, "reindexer": REINDEX_REQUESTED,
}


def scale_warnings(scale: Mapping[str, int]) -> list[str]:
    """A process beyond the topic's partitions gets none and idles: say so."""
    warnings = []
    for name, count in scale.items():
        topic = SERVICE_TOPICS.get(name)
        if topic is not None and count > topic.partitions:
            warnings.append(
                f"{name}={count}: {topic.name} has {topic.partitions} partition(s), so "
                f"{count - topic.partitions} process(es) will get none and stay idle"
            )
    return warnings


_REPLICA_PID = re.compile(r"^(?P<service>[a-z]+)-(?P<replica>[0-9]+)\.pid$")


def _running_replicas(settings: Settings) -> dict[str, int]:
    """The highest replica number with a PID file, per service (so `down` misses none)."""
    found: dict[str, int] = {}
    if settings.run_dir.is_dir():
        for path in settings.run_dir.iterdir():
            match = _REPLICA_PID.match(path.name)
            if match and match["service"] in SERVICES:
                found[match["service"]] = max(found.get(match["service"], 1), int(match["replica"]))
    return found


def service_components(settings: Settings, scale: Mapping[str, int] | None = None) -> list[Component]:
    """Every process of our services: each consumer service as many times as it is scaled to
    (run/scale.json, written by `flywheel up --scale`), plus any replica still holding a PID
    file, then the gateway."""
    wanted = read_scale(settings) if scale is None else dict(scale)
    leftovers = _running_replicas(settings)
    consumers: list[Component] = [
        consumer_service(settings, name, index, replica=replica)
        for index, name in enumerate(SERVICES)
        for replica in range(1, max(wanted.get(name, 1), leftovers.get(name, 1)) + 1)
    ]
    return [*consumers, gateway_service(settings)]


def start_needs(components: Sequence[Component]) -> dict[str, set[str]]:
    """What each component waits for before it is spawned: Kafka Connect a ready broker (its
    topics made), our services every real component, the supervisor everything else. The real
    components need nothing of each other, so they start together."""
    dependencies = {c.name for c in components if not isinstance(c, AsgiService | SupervisorComponent)}
    processes = {c.name for c in components} - {SupervisorComponent.name}
    needs: dict[str, set[str]] = {KafkaConnect.name: {Kafka.name}, SupervisorComponent.name: processes}
    for component in components:
        if isinstance(component, AsgiService):
            needs[component.name] = dependencies
    return needs


def all_components(settings: Settings) -> list[Component]:
    """Start order; the supervisor comes last (and so is stopped first)."""
    return [*dependency_components(settings), *service_components(settings), SupervisorComponent(settings)]


def _service_of(component: Component) -> str:
    return component.service if isinstance(component, AsgiService) else component.name


def select(components: Iterable[Component], names: Iterable[str] | None) -> list[Component]:
    """The components named; a service's name selects all its processes (`indexer`: indexer,
    indexer-2, ...), a replica's name only that one."""
    components = list(components)
    if not names:
        return components
    wanted = set(names)
    unknown = wanted - {c.name for c in components} - {_service_of(c) for c in components}
    if unknown:
        known = ", ".join(c.name for c in components)
        raise ValueError(f"unknown component(s) {', '.join(sorted(unknown))}; known: {known}")
    return [c for c in components if c.name in wanted or _service_of(c) in wanted]


def rescale(settings: Settings, scale: Mapping[str, int]) -> None:
    """Record the processes per service and stop the replicas beyond the new count."""
    merged = {**read_scale(settings), **scale}
    for component in service_components(settings):
        if isinstance(component, AsgiService) and component.name != component.service:
            replica = int(component.name.rsplit("-", 1)[1])
            if replica > merged.get(component.service, 1):
                component.stop()
    merged = {name: count for name, count in merged.items() if count > 1}
    settings.run_dir.mkdir(parents=True, exist_ok=True)
    if merged:
        tmp = scale_file(settings).with_suffix(".json.tmp")
        tmp.write_text(json.dumps(merged, indent=2))
        tmp.replace(scale_file(settings))
    else:
        scale_file(settings).unlink(missing_ok=True)


def up(
    settings: Settings,
    names: Iterable[str] | None = None,
    on_started: Callable[[Component], None] | None = None,
    scale: Mapping[str, int] | None = None,
) -> list[Component]:
    """Start the components named (default: all). `scale` sets how many processes a consumer
    service runs (kept in run/scale.json until `down`); replicas beyond it are stopped."""
    if scale:
        rescale(settings, scale)
        if names:  # `up --scale indexer=3 sessions` starts the indexers too
            names = [*names, *scale]
    components = all_components(settings)
    chosen = select(components, names)
    # Services started by name are supervised too.
    services = {c.name for c in service_components(settings)}
    if any(c.name in services for c in chosen) and not any(c.name == "supervisor" for c in chosen):
        chosen.append(components[-1])
    start_overlapped(chosen, start_needs(components), on_started)
    prometheus = Prometheus(settings)
    if prometheus.pid() is not None:  # it scrapes the processes as they are now (`--scale`)
        prometheus.write_targets()
    return chosen


def down(settings: Settings, names: Iterable[str] | None = None) -> None:
    for component in reversed(select(all_components(settings), names)):
        component.stop()
    if not names:
        # Like `compose down`: the next `up` starts one process per service unless scaled again.
        scale_file(settings).unlink(missing_ok=True)


def status(settings: Settings) -> list[dict[str, object]]:
    """Each component's status; a service's row adds its restarts by the supervisor."""
    services = {c.name for c in service_components(settings)}
    counts = restarts(settings)
    return [
        {**row, "restarts": counts.get(str(row["name"]), 0) if row["name"] in services else None}
        for row in (component.status() for component in all_components(settings))
    ]
