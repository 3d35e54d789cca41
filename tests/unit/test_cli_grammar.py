"""One CLI grammar: every group has `list` and `show`, every command that prints a result takes
`--json`, the benchmarks share their common options, option names and limits are the API's, and
every help page fits 80 columns without cutting anything. Walks the command tree; runs nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from typer._click import Context
from typer.main import get_command
from typer.testing import CliRunner

from cli.main import app
from core.config import Settings

ROOT = get_command(app)
# Commands that print no result of their own: they start or stop processes and log as they go.
NO_RESULT = {("up",), ("down",)}
BENCH_SHARED = {"--json", "--timeout", "--progress", "--no-progress"}
runner = CliRunner()


def is_group(command: Any) -> bool:
    return hasattr(command, "list_commands")


def subcommands(group: Any) -> list[str]:
    return list(group.list_commands(Context(group)))


def walk(command: Any = ROOT, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    """Every command of `flywheel`, with its path of names (typer's own click types)."""
    yield path, command
    if is_group(command):
        for name in subcommands(command):
            sub = command.get_command(Context(command), name)
            assert sub is not None
            yield from walk(sub, (*path, name))


def options(command: Any) -> set[str]:
    return {flag for param in command.params for flag in (*param.opts, *param.secondary_opts)
            if flag.startswith("-")}


COMMANDS = list(walk())
GROUPS = [(path, c) for path, c in COMMANDS if is_group(c) and path]
LEAVES = [(path, c) for path, c in COMMANDS if not is_group(c)]


@pytest.mark.parametrize(("path", "group"), GROUPS, ids=[" ".join(p) for p, _ in GROUPS])
def test_every_group_has_list_and_show(path: tuple[str, ...], group: Any) -> None:
    assert {"list", "show"} <= set(subcommands(group)), path


@pytest.mark.parametrize(("path", "command"), LEAVES, ids=[" ".join(p) for p, _ in LEAVES])
def test_every_command_that_prints_a_result_takes_json(path: tuple[str, ...], command: Any) -> None:
    if path not in NO_RESULT:
        assert "--json" in options(command), path


def test_benchmarks_share_the_common_options() -> None:
    for path, command in LEAVES:
        if path[:1] == ("bench",) and path[1] not in ("list", "show"):
            assert options(command) >= BENCH_SHARED, path


def help_of(path: tuple[str, ...]) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERM": "dumb"}, color=False)
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) or "-" for p, _ in COMMANDS])
def test_help_fits_80_columns_and_cuts_nothing(path: tuple[str, ...]) -> None:
    for line in help_of(path).splitlines():
        assert len(line) <= 80, f"{' '.join(path)}: {line!r}"
        # Rich cuts with an ellipsis; click cuts a command's summary with "...".
        cut = "…" in line or (line.rstrip().endswith("...") and not line.startswith("Usage:"))
        assert not cut, f"{' '.join(path)} cut: {line!r}"


def param(path: tuple[str, ...], flag: str) -> Any:
    command = dict(COMMANDS)[path]
    return next(p for p in command.params if flag in p.opts)


def test_search_speaks_the_apis_names_and_limits() -> None:
    assert "--mode <vector|hybrid>" in help_of(("search",))
    assert runner.invoke(app, ["search", "cats", "--mode", "fuzzy"]).exit_code == 2
    k = param(("search",), "-k")
    assert "--k" in k.opts and k.max == Settings().gateway_max_k
    over = runner.invoke(app, ["search", "cats", "-k", str(Settings().gateway_max_k + 1)])
    assert over.exit_code == 2 and "-k" in over.output
    blank = runner.invoke(app, ["search", "   "])
    assert blank.exit_code == 2 and "whitespace" in blank.output


def test_tasks_list_limit_is_the_apis() -> None:
    from gateway.main import create_app

    document = create_app(Settings(api_keys_json="[]")).openapi()
    api = next(p for p in document["paths"]["/v1/tasks"]["get"]["parameters"] if p["name"] == "limit")
    limit = param(("tasks", "list"), "--limit")
    assert limit.max == api["schema"]["maximum"]


def iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_replay_refuses_a_window_that_ends_before_it_starts() -> None:
    now = datetime.now(UTC)
    window = ["--from", iso(now - timedelta(hours=1)), "--to", iso(now - timedelta(hours=2))]
    result = runner.invoke(app, ["replay", "-t", "clicks", "-g", "sessions", "--dry-run", *window])
    assert result.exit_code == 2 and "--to" in result.output and "must be after --from" in result.output
    future = runner.invoke(app, ["replay", "-t", "clicks", "-g", "sessions", "--from",
                                 iso(now + timedelta(days=1)), "--dry-run"])
    assert future.exit_code == 2 and "in the future" in future.output
