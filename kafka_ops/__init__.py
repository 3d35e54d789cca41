"""Operator tools over Kafka: replay, replay plans, dead-letter inspection and redrive, time specs."""
