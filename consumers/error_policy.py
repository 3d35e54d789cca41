"""The one error policy of every consumer service: what is worth retrying, and for how long.

- Transient: a dependency is unavailable (Triton, PostgreSQL, MongoDB, MLflow, Kafka down or
  restarting). The record (or batch) is rewound and retried after a backoff that doubles per
  attempt up to `max_backoff_s`.
- Permanent: anything else (the input cannot be processed as it is). The record is parked on
  its topic's dead-letter topic at once; a batch is bisected first, so only the failing
  records are parked.
- Past `max_attempts`, every error is parked with the attempt count, so no record can hold its
  partition forever (a misclassified permanent error, or an outage longer than the budget;
  `flywheel dlq redrive` brings the records back).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

import psycopg
import psycopg_pool
from aiokafka.errors import KafkaConnectionError, KafkaError
from pymongo.errors import ConnectionFailure, DocumentTooLarge, OperationFailure, PyMongoError, WriteError
from tritonclient.utils import InferenceServerException

from core.adapters.triton_embedder import EmbedderUnavailable
from core.ports import DependencyUnavailable

# Errors that say a dependency is down, never that the input is wrong.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    DependencyUnavailable,  # MLflow's outages among them
    EmbedderUnavailable,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
    ConnectionFailure,
    KafkaConnectionError,
    ConnectionError,
    TimeoutError,
)
# Errors of a store that no retry can fix: the document or the write itself is wrong.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (DocumentTooLarge, WriteError)
# Triton answers these while a version is still loading or the server is busy.
_TRITON_TRANSIENT = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "not found", "not ready")

Position = tuple[str, int, int]  # (topic, partition, offset) of a record, or of a batch's first


def is_dependency_error(error: BaseException) -> bool:
    if isinstance(error, PERMANENT_ERRORS):
        return False
    if isinstance(error, InferenceServerException):
        text = f"{error.status()} {error.message()}"
        return any(marker in text for marker in _TRITON_TRANSIENT)
    if isinstance(error, KafkaError):
        return bool(getattr(error, "retriable", False)) or isinstance(error, KafkaConnectionError)
    if isinstance(error, OperationFailure):  # a server-side refusal, not an outage
        return False
    if isinstance(error, PyMongoError):
        return True  # AutoReconnect, timeouts, server selection: the server is not answering
    return isinstance(error, TRANSIENT_ERRORS)


@dataclass(frozen=True)
class ErrorPolicy:
    max_attempts: int = 10
    backoff_s: float = 1.0
    max_backoff_s: float = 30.0
    # A service's own transient conditions (e.g. a lost optimistic-concurrency race).
    also_transient: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")

    def is_transient(self, error: BaseException) -> bool:
        return isinstance(error, self.also_transient) or is_dependency_error(error)

    def backoff(self, attempt: int) -> float:
        """The pause before retry number `attempt` (1-based)."""
        return float(min(self.backoff_s * 2 ** max(attempt - 1, 0), self.max_backoff_s))

    def gives_up(self, error: BaseException, attempt: int) -> bool:
        """Park instead of retrying: a permanent error, or the attempts are used up."""
        return not self.is_transient(error) or attempt >= self.max_attempts


def parked_reason(error: BaseException, attempt: int, transient: bool) -> str:
    reason = f"{type(error).__name__}: {error}"
    return f"gave up after {attempt} attempts: {reason}" if transient else reason


class Attempts:
    """Failed attempts per record position, in this process (a rebalance starts afresh, which
    only delays parking). Bounded: the oldest positions are forgotten first."""

    def __init__(self, limit: int = 10_000) -> None:
        self._counts: OrderedDict[Position, int] = OrderedDict()
        self._limit = limit

    def failed(self, position: Position) -> int:
        """Count one more failure of the record at `position`; the count so far."""
        count = self._counts.pop(position, 0) + 1
        self._counts[position] = count
        while len(self._counts) > self._limit:
            self._counts.popitem(last=False)
        return count

    def clear(self, position: Position) -> None:
        self._counts.pop(position, None)

    def __len__(self) -> int:
        return len(self._counts)
