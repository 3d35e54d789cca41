"""Dead letters: the original record, byte for byte, on `<topic>.dlq` with why it failed."""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from typing import Any

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
