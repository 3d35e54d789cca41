"""TIME arguments: ISO 8601 (``2024-05-01``, ``2024-05-01T12:00:00+02:00``; no zone means UTC),
``now``, or relative to now: ``-30s``, ``-30m``, ``-2h``, ``-1d``, ``-1w``."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

_RELATIVE = re.compile(r"^-\s*(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


class BadTime(ValueError):
    pass


def parse_time(text: str, now: datetime | None = None) -> datetime:
    """A TIME argument -> an aware UTC datetime."""
    now = now or datetime.now(UTC)
    value = text.strip()
    if value.lower() == "now":
        return now
    match = _RELATIVE.match(value.lower())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: float(match.group(1))})
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise BadTime(
            f"cannot read time {text!r}: use ISO 8601 (2024-05-01T12:00:00Z), 'now', "
            "or a relative time such as -30m, -2h, -1d"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)
