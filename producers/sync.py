"""A blocking wrapper of :class:`Publisher` for scripts and notebooks.

    with SyncPublisher("127.0.0.1:9092", source="nightly-import") as publisher:
        publisher.publish("content-upserted", {"id": "a1", "text": "...", "version": 1})

The async publisher runs on an event loop in a background thread owned by this object, so
it also works where an event loop is already running (Jupyter).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from producers.publisher import Delivery, Publisher
from schemas.envelope import Envelope
from schemas.topics import TopicSpec

T = TypeVar("T")
Event = Envelope | Mapping[str, Any]


class SyncPublisher:
    def __init__(self, bootstrap_servers: str, *, timeout_s: float = 60.0, **options: Any) -> None:
        self.timeout_s = timeout_s
        self._publisher = Publisher(bootstrap_servers, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="flywheel-publisher", daemon=True)
        self._thread.start()
        try:
            self._call(self._publisher.start())
        except BaseException:
            self._shutdown_loop()
            raise

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(self.timeout_s)

    def publish(self, topic: str | TopicSpec, event: Event) -> Delivery:
        return self._call(self._publisher.publish(topic, event))

    def publish_many(self, topic: str | TopicSpec, events: Iterable[Event]) -> list[Delivery]:
        return self._call(self._publisher.publish_many(topic, list(events)))

    def delete(self, topic: str | TopicSpec, key: str) -> Delivery:
        return self._call(self._publisher.delete(topic, key))

    def delete_content(self, item_id: str, tenant: str = "default") -> Delivery:
        return self._call(self._publisher.delete_content(item_id, tenant))

    def close(self) -> None:
        if self._loop.is_closed():
            return
        try:
            self._call(self._publisher.stop())
        finally:
            self._shutdown_loop()

    def _shutdown_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def __enter__(self) -> SyncPublisher:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
