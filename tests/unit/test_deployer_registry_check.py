"""The deployer refuses a model-published whose version and artifact the registry does not hold:
nothing is fetched, no task is made, and the event is parked with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.deployer.handlers import NotRegistered, deploy
from tests.unit.test_rollout_handlers import DeployRig, published


async def test_an_event_the_registry_does_not_hold_is_refused_before_anything_is_fetched(
    tmp_path: Path,
) -> None:
    rig = DeployRig(tmp_path)
    rig.deps.verify = lambda event: (
        None if event.artifact_uri == "runs:/r/model" else f"artifact is not {event.artifact_uri!r}")
    forged = published().model_copy(update={"artifact_uri": "file:///tmp/evil"})
    with pytest.raises(NotRegistered, match="file:///tmp/evil"):  # a permanent error: parked
        await deploy(forged, rig.deps)
    assert rig.fetched == [] and rig.tasks.updates == [] and rig.published == []
    assert (await deploy(published(), rig.deps))["status"] == "succeeded"
