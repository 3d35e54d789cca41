"""Triton keeps loaded only the versions some tenant needs: against the real Triton and its
model repository, a version no tenant needs is parked and unloaded, and loaded again once a
tenant needs it; the base version serves throughout."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from consumers.deployer.residency import PROTECT_S, reconcile
from core.adapters.triton_repository import model_versions
from core.base_model import default_base_model_dir
from core.bootstrap import build_model_control
from core.config import Settings
from infra.process import Component

pytestmark = [pytest.mark.integration]


async def test_a_version_no_tenant_needs_is_unloaded_and_reloaded_on_demand(
    triton: Component, test_settings: Settings,
) -> None:
    control = build_model_control(test_settings)
    repo, name = test_settings.triton_repository, test_settings.triton_model_name
    version = max(model_versions(repo, name) + control.parked_versions()) + 300
    needed = {"1"}

    async def tenants_need() -> set[str]:
        return needed | {v for v in map(str, model_versions(repo, name)) if v != str(version)}

    async def nothing_in_progress(since: datetime) -> set[int]:
        return set()

    try:
        await asyncio.to_thread(control.place_version, version, default_base_model_dir())
        await control.load()
        assert await control.is_ready(str(version))

        # Just placed: never moved while Triton may still be loading it.
        assert not (await reconcile(control, tenants_need, nothing_in_progress)).changes
        later = datetime.now(UTC) + timedelta(seconds=2 * PROTECT_S)
        plan = await reconcile(control, tenants_need, nothing_in_progress, now=later)
        assert plan.park == {version} and not plan.restore
        assert not await control.is_ready(str(version))  # unloaded
        assert version in control.parked_versions() and version not in model_versions(repo, name)
        assert await control.is_ready("1")  # the base serves throughout

        needed.add(str(version))  # a tenant reindexes it again
        plan = await reconcile(control, tenants_need, nothing_in_progress, now=later)
        assert plan.restore == {version} and await control.is_ready(str(version))
        assert not (await reconcile(control, tenants_need, nothing_in_progress, now=later)).changes
    finally:
        await asyncio.to_thread(control.restore_version, version)
        await asyncio.to_thread(control.remove_version, version)
        await control.load()
        await control.close()
