"""Work requests taken in fair turns between tenants (the trainer's and the reindexer's).

A request on Kafka (`training-requested`, `reindex-requested`) is only *accepted*: written to
the durable work queue (core.adapters.work_queue) with the request itself, then its offset is
committed. So Kafka's arrival order decides nothing; a worker beside the consumer takes the
queued requests in fair turns (core.scheduling.turn_order: the tenant served longest ago
first, each tenant's own requests in order), one at a time, and runs the service's handler.
A tenant that queued many requests gets one run, then each other tenant with a request waiting
gets one: another tenant's request waits for at most the run in hand, never for a queue.

At-least-once throughout: a request is dequeued only after its handler returned (the handlers
are idempotent per task); a worker that dies loses its lease (renewed while it runs) when it
expires, and the request runs again. A transient error (a dependency down) leaves it queued,
due again after the error policy's backoff; past the policy's attempts, or on any other error
escaping the handler, `on_failed` ends its task with the reason. With `stall_timeout_s`, a run
reporting no progress (the service's heartbeat) that long is cancelled and `on_stall` records
why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Generic, Protocol, TypeVar

from consumers.error_policy import ErrorPolicy
from consumers.service import ConsumerService, Heartbeat, Stalled, watched
from core.adapters.work_queue import Claim
from schemas.envelope import Envelope
from schemas.topics import TopicSpec

E = TypeVar("E", bound=Envelope)
R = TypeVar("R")

log = logging.getLogger("flywheel.scheduler")


class WorkQueue(Protocol):
    async def enqueue(self, kind: str, task_id: str, tenant: str, event: dict[str, Any]) -> None: ...

    async def claim_next(self, kind: str, owner: str, lease_s: float) -> Claim | None: ...

    async def renew(self, claim: Claim, lease_s: float) -> bool: ...

    async def done(self, claim: Claim) -> None: ...

    async def retry_later(self, claim: Claim, delay_s: float, attempts: int) -> None: ...


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class FairScheduler(Generic[E]):
    def __init__(
        self, kind: str, event_type: type[E], queue: WorkQueue, run: Callable[[E], Awaitable[None]],
        policy: ErrorPolicy, *, task_id_of: Callable[[E], str],
        on_failed: Callable[[E, str], Awaitable[None]],
        heartbeat: Heartbeat | None = None, stall_timeout_s: float | None = None,
        on_stall: Callable[[E, str], Awaitable[None]] | None = None,
        lease_s: float = 30.0, poll_s: float = 2.0,
    ) -> None:
        self.kind, self.event_type, self.queue, self._run = kind, event_type, queue, run
        self.policy, self.task_id_of, self.on_failed = policy, task_id_of, on_failed
        self.heartbeat = heartbeat or Heartbeat()
        self.stall_timeout_s, self.on_stall = stall_timeout_s, on_stall
        self.lease_s, self.poll_s = lease_s, poll_s
        self.owner = worker_id()
        self._wake = asyncio.Event()

    async def accept(self, event: E) -> None:
        """Queue `event`'s work durably (then its offset may be committed) and wake the worker."""
        request = event.model_dump(mode="json")
        await self.queue.enqueue(self.kind, self.task_id_of(event), event.tenant, request)
        self._wake.set()

    async def run_forever(self) -> None:
        while True:
            try:
                ran = await self.run_next()
            except Exception:  # the queue's store is down: try again after a pause
                log.exception("%s scheduler: could not take the next request", self.kind)
                ran = False
            if not ran:
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=self.poll_s)

    async def run_next(self) -> bool:
        """Run the next request in turn, if one is due; whether one was."""
        claim = await self.queue.claim_next(self.kind, self.owner, self.lease_s)
        if claim is None:
            return False
        event = self.event_type.model_validate(claim.event)
        log.info("%s %s of tenant %s: started (its turn)", self.kind, claim.task_id, claim.tenant)
        renewing = asyncio.create_task(self._renew(claim))
        try:
            await self._watched(self._run(event))
        except Stalled as stall:
            log.error("%s %s: %s", self.kind, claim.task_id, stall)
            if self.on_stall is not None:
                await self.on_stall(event, str(stall))
            await self.queue.done(claim)
            return True
        except Exception as error:
            attempt = claim.attempts + 1
            if not self.policy.gives_up(error, attempt):
                delay = self.policy.backoff(attempt)
                log.warning("%s %s: attempt %d of %d failed (%r); retried in %.1fs", self.kind, claim.task_id,
                            attempt, self.policy.max_attempts, error, delay)
                await self.queue.retry_later(claim, delay, attempt)
                return True
            transient = self.policy.is_transient(error)
            reason = f"{type(error).__name__}: {error}"
            reason = f"gave up after {attempt} attempts: {reason}" if transient else reason
            log.error("%s %s failed: %s", self.kind, claim.task_id, reason)
            await self.on_failed(event, reason)
            await self.queue.done(claim)
            return True
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing
        await self.queue.done(claim)
        return True

    async def _renew(self, claim: Claim) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            try:
                await self.queue.renew(claim, self.lease_s)
            except Exception:  # the store is down: the next renewal tries again
                log.warning("%s %s: could not renew the lease", self.kind, claim.task_id, exc_info=True)

    async def _watched(self, work: Awaitable[None]) -> None:
        await watched(work, self.heartbeat, self.stall_timeout_s)


def consume_fairly(
    service: ConsumerService[R], topic: TopicSpec, event_type: type[E],
    run: Callable[[E, R], Awaitable[None]], *, kind: str, group_id: str,
    queue_of: Callable[[R], WorkQueue], task_id_of: Callable[[E], str],
    on_failed: Callable[[E, R, str], Awaitable[None]],
    stall_timeout_s: float | None = None, on_stall: Callable[[E, R, str], Awaitable[None]] | None = None,
    **options: Any,
) -> Callable[[], FairScheduler[E]]:
    """Wire `service`: its consumer of `topic` accepts requests into the work queue, and a worker
    beside it runs them in fair turns (`run` with the service's resources). Returns the service's
    scheduler (once its resources are open)."""
    schedulers: list[FairScheduler[E]] = []

    def scheduler() -> FairScheduler[E]:
        if not schedulers:
            resources = service.resources

            async def run_it(event: E) -> None:
                await run(event, resources)

            async def failed(event: E, reason: str) -> None:
                await on_failed(event, resources, reason)

            async def stalled(event: E, reason: str) -> None:
                if on_stall is not None:
                    await on_stall(event, resources, reason)

            schedulers.append(FairScheduler(
                kind, event_type, queue_of(resources), run_it, service.policy, task_id_of=task_id_of,
                on_failed=failed, heartbeat=service.heartbeat, stall_timeout_s=stall_timeout_s,
                on_stall=stalled))
        return schedulers[0]

    async def accept(event: E, resources: R) -> None:
        await scheduler().accept(event)

    async def work() -> None:
        await scheduler().run_forever()

    service.consume(topic, event_type, accept, group_id=group_id, **options)
    service.in_background(work)
    return scheduler
