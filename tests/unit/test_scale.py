"""`flywheel up --scale`: how many processes each consumer service runs, their names and ports,
what `up`/`down`/`status` select, and the supervisor following a new scale."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.service import SERVICES
from core.config import Settings
from infra import stack
from infra.services import AsgiService
from infra.supervisor import Supervisor


def settings_in(tmp_path: Path) -> Settings:
    settings = Settings(state_dir=tmp_path)
    settings.run_dir.mkdir(parents=True)
    return settings


def test_parse_scale() -> None:
    assert stack.parse_scale(["indexer=3", "sessions=2"]) == {"indexer": 3, "sessions": 2}
    assert stack.parse_scale([]) == {}
    for bad in ("indexer", "indexer=x", "indexer=0", "gateway=2", "nope=2", "indexer=-1"):
        with pytest.raises(ValueError):
            stack.parse_scale([bad])


def test_replicas_have_their_own_names_and_ports(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    components = stack.service_components(settings, {"indexer": 3, "sessions": 2})
    names = [c.name for c in components]
    assert names[:4] == ["indexer", "indexer-2", "indexer-3", "sessions"]
    assert names.count("sessions-2") == 1 and names[-1] == "gateway"
    assert len(names) == len(SERVICES) + 3 + 1
    ports = [c.port for c in components if isinstance(c, AsgiService)]
    assert len(set(ports)) == len(ports)
    # The first process of each service keeps its port; replicas run the same app.
    by_name = {c.name: c for c in components if isinstance(c, AsgiService)}
    assert by_name["indexer"].port == settings.services_base_port
    assert by_name["sessions"].port == settings.services_base_port + 1
    assert by_name["indexer-3"].app_path == by_name["indexer"].app_path == "consumers.indexer.app:app"
    assert by_name["indexer-2"].service == "indexer"
    assert by_name["indexer-2"].pid_file.name == "indexer-2.pid"
    assert by_name["indexer-2"].log_file.name == "indexer-2.log"


def test_scale_is_kept_until_down_and_select_takes_a_service_with_its_replicas(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    stack.rescale(settings, {"indexer": 3})
    assert stack.read_scale(settings) == {"indexer": 3}
    names = [c.name for c in stack.all_components(settings)]
    assert {"indexer", "indexer-2", "indexer-3"} <= set(names)
    assert [c.name for c in stack.select(stack.all_components(settings), ["indexer"])] == [
        "indexer", "indexer-2", "indexer-3"]
    assert [c.name for c in stack.select(stack.all_components(settings), ["indexer-2"])] == ["indexer-2"]
    stack.rescale(settings, {"sessions": 2})
    assert stack.read_scale(settings) == {"indexer": 3, "sessions": 2}
    stack.rescale(settings, {"indexer": 1, "sessions": 1})
    assert stack.read_scale(settings) == {}
    assert not stack.scale_file(settings).exists()


def test_a_replica_holding_a_pid_file_is_still_listed(tmp_path: Path) -> None:
    """Scaled down (or the scale file lost): `down` and `status` still see the process."""
    settings = settings_in(tmp_path)
    (settings.run_dir / "sessions-4.pid").write_text("{}")
    names = [c.name for c in stack.service_components(settings)]
    assert {"sessions-2", "sessions-3", "sessions-4"} <= set(names)


def test_more_processes_than_partitions_is_warned(tmp_path: Path) -> None:
    assert stack.scale_warnings({"indexer": 6, "sessions": 2}) == []
    [warning] = stack.scale_warnings({"trainer": 2})
    assert "training-requested has 1 partition" in warning


def test_the_supervisor_follows_a_new_scale(tmp_path: Path) -> None:
    settings = settings_in(tmp_path)
    supervisor = Supervisor(settings, stack.service_components(settings),
                            refresh=lambda: stack.service_components(settings))
    assert "indexer-2" not in supervisor.watches
    stack.rescale(settings, {"indexer": 2})
    supervisor.round(0.0)
    assert supervisor.watches["indexer-2"].state == "stopped"  # no PID file yet: not started
    stack.rescale(settings, {"indexer": 1})
    supervisor.round(1.0)
    assert "indexer-2" not in supervisor.watches


def test_flywheel_up_refuses_a_bad_scale_before_starting_anything() -> None:
    from typer.testing import CliRunner

    from cli.main import app

    result = CliRunner().invoke(app, ["up", "--scale", "gateway=2"])
    assert result.exit_code == 2
    assert "'gateway' is not a consumer service" in result.output
