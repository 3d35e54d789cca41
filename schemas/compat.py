"""The schema_version policy shared by every producer and consumer.

Versions are ``MAJOR.MINOR``:

* A minor bump only *adds* optional fields. Old readers ignore fields they do not know;
  new readers fill the defaults of fields an older writer did not send.
* A major bump may rename, remove or retype fields. Consumers accept the current major and
  the previous one (upgrading the old shape where an upgrader is registered) and reject any
  other major with :class:`IncompatibleSchemaVersion`; consumers send those to the DLQ.
* Producers always write the current version of the event type.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

_VERSION = re.compile(r"^(0|[1-9]\d*)\.(0|[1-9]\d*)$")
VERSION_PATTERN = _VERSION.pattern


class IncompatibleSchemaVersion(ValueError):
    """An event's schema_version is malformed or outside the accepted majors."""


@dataclass(frozen=True, order=True)
class SchemaVersion:
    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> SchemaVersion:
        match = _VERSION.match(text) if isinstance(text, str) else None
        if match is None:
            raise IncompatibleSchemaVersion(
                f"schema_version {text!r} is not of the form MAJOR.MINOR, e.g. '1.0'"
            )
        return cls(int(match.group(1)), int(match.group(2)))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


class Compatibility(Enum):
    SAME = "same"
    OLDER_MINOR = "older-minor"  # read as is: missing fields take their defaults
    NEWER_MINOR = "newer-minor"  # read ignoring the fields this reader does not know
    PREVIOUS_MAJOR = "previous-major"  # upgraded where an upgrader exists, else read as is


def accepted_majors(current: SchemaVersion) -> tuple[int, ...]:
    return tuple(m for m in (current.major, current.major - 1) if m >= 1)


def check(version: str, current: str | SchemaVersion) -> Compatibility:
    """How a reader at ``current`` must treat an event written at ``version``."""
    ours = current if isinstance(current, SchemaVersion) else SchemaVersion.parse(current)
    theirs = SchemaVersion.parse(version)
    if theirs.major not in accepted_majors(ours):
        accepted = " or ".join(f"{m}.x" for m in accepted_majors(ours))
        raise IncompatibleSchemaVersion(
            f"schema_version {theirs} is not supported: this reader is at {ours} "
            f"and accepts {accepted}"
        )
    if theirs.major < ours.major:
        return Compatibility.PREVIOUS_MAJOR
    if theirs.minor == ours.minor:
        return Compatibility.SAME
    return Compatibility.OLDER_MINOR if theirs.minor < ours.minor else Compatibility.NEWER_MINOR
