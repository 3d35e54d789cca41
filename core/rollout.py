"""Promote or roll back: switch search to a model version whose index is complete.

Shared by the gateway (POST /v1/models/{version}/activate) and `flywheel models activate`,
over one tenant's lineage (its view of the store): another tenant's active version is never
touched.
A version's index is complete once its reindex finished (status active or retired); a
version still being built (status building) is refused, so search never sees a partial
index, and so is a retired version older than the rollback target, which has stopped
receiving new content, and a version whose reindex failed. The switch is one UPDATE of the
active pointer, so a rollback takes effect at once.

The switch is a compare-and-set on the state the checks saw (the active version and the
version's status, see core.domain.Expected): if another activation, rollback, reindex or split
change landed in between, nothing is switched and core.domain.ConcurrentChange says what
changed (the API answers 409); decide again from the current state.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from core.domain import ConcurrentChange, Expected
from core.ports import RolloutStore
from schemas.envelope import DEFAULT_TENANT


def reindex_task_id(model_version: str, tenant: str = DEFAULT_TENANT) -> str:
    """The task of a tenant's reindex of a version: one per version per tenant (the default
    tenant's keeps the plain `reindex-<version>`)."""
    return f"reindex-{model_version}" + ("" if tenant == DEFAULT_TENANT else f"-{tenant}")


def reindex_group(model_version: str, tenant: str = DEFAULT_TENANT) -> str:
    """The consumer group a tenant's reindex of a version replays content with."""
    return f"reindex-v{model_version}" + ("" if tenant == DEFAULT_TENANT else f"-{tenant}")


class ActivationError(RuntimeError):
    """The version cannot be activated; the message says why."""


class UnknownVersion(ActivationError, LookupError):
    """No index exists for the version."""


class IndexIncomplete(ActivationError):
    """The version's index is still being built."""


class IndexFailed(ActivationError):
    """The version's reindex failed (or was abandoned): its index is incomplete."""


class IndexStale(ActivationError):
    """A retired version that no longer receives new content: its index misses items."""


class NotServed(ActivationError):
    """The model server does not serve the version, so queries could not be embedded."""


@dataclass(frozen=True)
class Activation:
    version: str
    previous: str | None

    @property
    def changed(self) -> bool:
        return self.previous != self.version


async def activate_version(
    store: RolloutStore,
    version: str,
    *,
    is_served: Callable[[str], Awaitable[bool]] | None = None,
    expected_active: str | None = None,
) -> Activation:
    """Point search at `version` atomically; returns it with the previously active version.

    `is_served` (e.g. TritonEmbedder.ready) is checked first when given. Raises
    core.domain.ConcurrentChange when the state changed between these checks and the switch, or
    when `expected_active` (the active version the caller saw when it decided) is given and is
    no longer active.
    """
    active = await store.active_version()
    if expected_active is not None and expected_active != active:
        raise ConcurrentChange(
            f"the active version is {active}, not {expected_active} as expected; nothing was changed")
    rows = {row["version"]: row for row in await store.list_versions()}
    row = rows.get(version)
    if row is None:
        known = ", ".join(sorted(rows, key=lambda v: int(v) if v.isdigit() else 0)) or "none"
        raise UnknownVersion(f"model version {version!r} has no index (versions with an index: {known})")
    if row["status"] == "building":
        raise IndexIncomplete(
            f"model version {version} is still being indexed; activate it when its reindex is done"
        )
    if row["status"] == "failed":
        raise IndexFailed(
            f"model version {version} failed to index ({row.get('reason') or 'see its reindex task'}); "
            "request its reindex again, or roll out a new version"
        )
    if row["status"] == "retired" and version not in await store.writable_versions():
        raise IndexStale(
            f"model version {version} stopped receiving new content when another version was "
            "retired after it (only the version retired last is kept current for rollback), so its "
            "index may miss items; activate a current version, or roll out a new one"
        )
    if is_served is not None and not await is_served(version):
        raise NotServed(f"model version {version} is not loaded in the model server; deploy it first")
    previous = await store.activate(version, Expected(active, row["status"]))
    return Activation(version, previous)
