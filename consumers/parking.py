"""Dead letters: the original record, byte for byte, on `<topic>.dlq` with why it failed."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any, TypeVar

from faststream.kafka import KafkaBroker

from core.metrics import DEAD_LETTERS
from schemas.codec import EventValidationError, decode_record
from schemas.envelope import Envelope

E = TypeVar("E", bound=Envelope)

STACK_LIMIT = 2000


def dlq_topic(topic: str) -> str:
    return f"{topic}.dlq"


@dataclass(frozen=True)
class DeadLetter:
    record: Any  # an aiokafka ConsumerRecord
    reason: str
    error: BaseException | None = None
    attempts: int = 1

    def headers(self) -> dict[str, str]:
        original = {
            key: value.decode("utf-8", "replace")
            for key, value in (self.record.headers or ())
            if not key.startswith("dlq-")
        }
        stack = ""
        if self.error is not None:
            stack = "".join(traceback.format_exception(self.error))[-STACK_LIMIT:]
        return {
            **original,
            "dlq-error": self.reason[:4000],
            "dlq-error-type": type(self.error).__name__ if self.error else "Rejected",
            "dlq-stack": stack,
            "dlq-original-topic": self.record.topic,
            "dlq-original-partition": str(self.record.partition),
            "dlq-original-offset": str(self.record.offset),
            "dlq-attempts": str(self.attempts),
        }


async def send_dead_letters(broker: KafkaBroker, letters: list[DeadLetter]) -> None:
    """Publish and wait for the broker's acknowledgement of each, before offsets move on."""
    for letter in letters:
        record = letter.record
        DEAD_LETTERS.labels(record.topic).inc()
        await broker.publish(
            record.value if record.value is not None else b"",
            topic=dlq_topic(record.topic),
            key=record.key,
            headers=letter.headers(),
        )


async def decode_or_park(broker: KafkaBroker, record: Any, expected: type[E]) -> E | None:
    """The record's event; None once an invalid record (or a tombstone) is in the DLQ."""
    try:
        event = decode_record(record)
    except (EventValidationError, ValueError) as error:
        await send_dead_letters(broker, [DeadLetter(record, str(error), error)])
        return None
    if not isinstance(event, expected):
        await send_dead_letters(broker, [DeadLetter(record, f"{record.topic} does not accept tombstones")])
        return None
    return event
