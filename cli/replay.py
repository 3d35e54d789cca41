"""`flywheel replay`: move a group back in time, or copy a time slice into another topic."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Annotated

import typer
from rich.table import Table
from tqdm import tqdm

from cli.common import Bootstrap, JsonOutput, MaxRate, Progress, bootstrap_or_default, err, fail, out
from core.adapters.kafka_admin import KafkaAdminError
from core.config import get_settings
from kafka_ops.replay import CopyOutcome, CopyRequest, copy_slice, group_members, reset_group
from kafka_ops.replay_plan import CopyState, PartitionReset
from kafka_ops.timespec import BadTime, from_ms, parse_time

TIME_HELP = "ISO 8601 (no zone = UTC), 'now', or relative: -30m, -2h, -1d."


def _time(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        return parse_time(text)
    except BadTime as error:
        raise fail(f"{option}: {error}") from None


def replay(
    topic: Annotated[str, typer.Option("--topic", "-t", help="The topic to replay.")],
    since: Annotated[str, typer.Option("--from", help=f"Start of the slice. {TIME_HELP}")],
    until: Annotated[
        str | None, typer.Option("--to", help=f"End of the slice (exclusive). {TIME_HELP}")
    ] = None,
    group: Annotated[
        str | None, typer.Option("--group", "-g", help="Move this consumer group's offsets.")
    ] = None,
    into: Annotated[str | None, typer.Option("--into", help="Copy the slice into this topic.")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="With --group: show the plan, change nothing.")
    ] = False,
    name: Annotated[
        str | None, typer.Option("--name", help="With --into: name of the resumable copy (default: T--T2).")
    ] = None,
    restart: Annotated[bool, typer.Option("--restart", help="With --into: discard saved progress.")] = False,
    keep_timestamps: Annotated[
        bool, typer.Option("--keep-timestamps", help="With --into: keep the records' original timestamps.")
    ] = False,
    max_rate: MaxRate = None,
    bootstrap: Bootstrap = None,
    progress: Progress = True,
    as_json: JsonOutput = False,
) -> None:
    """Replay a topic from a point in time.

    With --group: move the group's committed offsets to the first event at or after --from
    on every partition (a partition with nothing after --from moves to its end). The group's
    consumers must be stopped. With --into: copy [--from, --to) into another topic, keeping
    keys, headers and per-partition order; rerun the same command to resume after a crash.
    """
    if (group is None) == (into is None):
        raise fail("give exactly one of --group (move offsets) or --into (copy a slice)")
    start = _time(since, "--from")
    assert start is not None
    end = _time(until, "--to")
    if end is not None and end <= start:
        raise fail(f"--to ({end:%Y-%m-%dT%H:%M:%SZ}) must be after --from ({start:%Y-%m-%dT%H:%M:%SZ}): "
                   "the slice is [--from, --to)")
    if start > parse_time("now"):
        raise fail(f"--from ({start:%Y-%m-%dT%H:%M:%SZ}) is in the future: nothing to replay")
    servers = bootstrap_or_default(bootstrap)
    if group is not None:
        _reset(servers, topic, group, start, end, dry_run, as_json)
    else:
        assert into is not None
        if dry_run:
            raise fail("--dry-run applies to --group only")
        _copy(
            servers, topic, into, start, end or parse_time("now"), name, restart, keep_timestamps,
            max_rate, progress, as_json,
        )


def _reset(
    servers: str, topic: str, group: str, start: datetime, end: datetime | None, dry_run: bool,
    as_json: bool,
) -> None:
    try:
        members = asyncio.run(group_members(servers, group)) if dry_run else []
        plan = asyncio.run(reset_group(servers, topic, group, start, end, dry_run=dry_run))
    except KafkaAdminError as error:
        raise fail(str(error), 1) from error
    warnings = []
    if members:
        warnings.append(f"group {group!r} has {len(members)} live member(s) ({', '.join(sorted(members))}): "
                        "stop its consumers before running this without --dry-run, or it is refused")
    if plan and all(row.current is None for row in plan):
        warnings.append(f"group {group!r} has never committed an offset on {topic}: check the name "
                        "(the platform's groups: indexer, sessions, trainer, deployer, reindexer, improver)")
    for warning in warnings:
        err.print(f"[yellow]warning:[/] {warning}", highlight=False)
    again = sum(max(row.again, 0) for row in plan)
    if as_json:
        print(json.dumps({"topic": topic, "group": group, "dry_run": dry_run, "again": again,
                          "live_members": sorted(members), "warnings": warnings,
                          "partitions": [{**asdict(row), "again": row.again} for row in plan]}, indent=2))
        return
    out.print(_reset_table(topic, group, plan, dry_run))
    verb = "would consume" if dry_run else "will consume"
    out.print(f"group {group} {verb} {again} event(s) again.", highlight=False)
    if dry_run:
        out.print("dry run: no offsets changed.")


def _reset_table(topic: str, group: str, plan: list[PartitionReset], dry_run: bool) -> Table:
    title = f"{'plan for ' if dry_run else ''}{group} on {topic}"
    table = Table(title=title)
    for column in ("partition", "current", "new", "end", "again"):
        table.add_column(column, justify="right")
    windowed = any(row.window_end is not None for row in plan)
    if windowed:
        table.add_column("in window", justify="right")
    for row in plan:
        cells = [str(row.partition), "-" if row.current is None else str(row.current),
                 str(row.new), str(row.end), str(row.again)]
        if windowed:
            cells.append(str(row.in_window))
        table.add_row(*cells)
    return table


def _copy(
    servers: str, topic: str, into: str, start: datetime, end: datetime, name: str | None,
    restart: bool, keep_timestamps: bool, max_rate: float | None, progress: bool, as_json: bool,
) -> None:
    job = name or f"{topic}--{into}"
    if not re.fullmatch(r"[A-Za-z0-9._-]+", job):
        raise fail(f"--name {job!r}: use letters, digits, '.', '_' and '-' only")
    state_path = get_settings().state_dir / "replay" / f"{job}.json"
    request = CopyRequest(topic, into, start, end, keep_timestamps=keep_timestamps, max_rate=max_rate)
    bar = tqdm(unit="ev", desc=f"{topic} -> {into}", disable=not progress, file=sys.stderr)

    def started(state: CopyState, outcome: CopyOutcome) -> None:
        window = f"[{from_ms(state.from_ms):%Y-%m-%dT%H:%M:%SZ}, {from_ms(state.to_ms):%Y-%m-%dT%H:%M:%SZ})"
        err.print(f"{outcome.value}: copy {job} of {topic} {window} into {into} (state: {state_path})",
                  highlight=False)
        bar.reset(total=state.total)
        bar.update(sum(state.next[p] - r.start for p, r in state.ranges.items()))

    try:
        with bar:
            state, outcome = asyncio.run(copy_slice(
                servers, state_path, request, restart=restart, on_start=started, on_progress=bar.update,
            ))
    except KafkaAdminError as error:
        raise fail(str(error), 1) from error
    if as_json:
        print(json.dumps({"name": job, "topic": topic, "into": into, "outcome": outcome.value,
                          "copied": state.copied, "skipped": state.skipped, "state": str(state_path)},
                         indent=2))
        return
    if outcome is CopyOutcome.ALREADY_COMPLETE:
        out.print(f"copy {job} was already complete; pass --restart (or another --name) to copy again.")
        return
    out.print(f"copied {state.copied} event(s) into {into}"
              + (f", skipped {state.skipped} outside the time window" if state.skipped else "") + ".",
              highlight=False)
