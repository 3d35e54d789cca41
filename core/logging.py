"""JSON logs carrying the current trace and span ids, one object a line.

FLYWHEEL_LOG_FORMAT=text switches to plain lines for a terminal.
"""

from __future__ import annotations

import logging
import os

from opentelemetry import trace
from pythonjsonlogger.json import JsonFormatter


class TraceContextFilter(logging.Filter):
    """Adds trace_id and span_id of the active span (empty outside a trace)."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else ""
        record.span_id = format(context.span_id, "016x") if context.is_valid else ""
        return True


def configure_logging(service: str, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    if os.environ.get("FLYWHEEL_LOG_FORMAT", "json") == "text":
        handler.setFormatter(logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s [%(trace_id)s] %(message)s"))
    else:
        handler.setFormatter(JsonFormatter(
            "%(asctime)s %(levelname)s %(name)s %(message)s %(trace_id)s %(span_id)s",
            rename_fields={"asctime": "time", "levelname": "level", "name": "logger"},
            static_fields={"service": service},
        ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
