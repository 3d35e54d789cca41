"""Which versions Triton keeps loaded: the plan over the versions tenants need."""

from pathlib import Path

from core.residency import plan_residency


def test_versions_no_tenant_needs_are_parked_and_needed_ones_restored() -> None:
    plan = plan_residency(in_repository=[1, 2, 3, 5], parked=[4, 6], needed=["2", "4"], protected=[5])
    assert plan.park == {3}  # 1 is the base, 2 served, 5 just deployed
    assert plan.restore == {4}  # reindexed again by a tenant
    assert plan.changes


def test_nothing_to_do_when_the_repository_holds_what_is_needed() -> None:
    plan = plan_residency(in_repository=[1, 2], parked=[3], needed=["1", "2"])
    assert not plan.park and not plan.restore and not plan.changes


async def test_reconcile_parks_unneeded_versions_and_restores_needed_ones_then_loads_once() -> None:
    from datetime import datetime

    from consumers.deployer.residency import reconcile
    from tests.unit.rollout_fakes import FakeModelServer, FakeServingEmbedder

    embedder = FakeServingEmbedder()
    server = FakeModelServer(embedder)
    for version in (2, 3, 4):
        server.place_version(version, Path(f"/v{version}"))
    await server.load()
    needed = {"1", "2"}

    async def tenants_need() -> set[str]:
        return needed

    async def deployed_since(since: datetime) -> set[int]:
        return {4}  # just deployed, its reindex not started yet

    plan = await reconcile(server, tenants_need, deployed_since)
    assert plan.park == {3} and server.repository_versions() == [1, 2, 4] and server.parked_versions() == [3]
    assert embedder.served == {"1", "2", "4"} and server.loads == 2
    assert not (await reconcile(server, tenants_need, deployed_since)).changes and server.loads == 2
    needed.add("3")  # a tenant reindexes 3 again
    plan = await reconcile(server, tenants_need, deployed_since)
    assert plan.restore == {3} and embedder.served == {"1", "2", "3", "4"}


async def test_reconcile_loads_the_versions_a_restarted_server_does_not_serve() -> None:
    """Compose and helm start Triton with the base version only: the next round loads the rest."""
    from datetime import datetime

    from consumers.deployer.residency import reconcile
    from tests.unit.rollout_fakes import FakeModelServer, FakeServingEmbedder

    embedder = FakeServingEmbedder()
    server = FakeModelServer(embedder)
    server.place_version(2, Path("/v2"))
    embedder.served = {"1"}  # a server that just started

    async def tenants_need() -> set[str]:
        return {"1", "2"}

    async def nothing_in_progress(since: datetime) -> set[int]:
        return set()

    plan = await reconcile(server, tenants_need, nothing_in_progress)
    assert not plan.changes and embedder.served == {"1", "2"} and server.loads == 1
