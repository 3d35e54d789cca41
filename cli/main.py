"""The `flywheel` command line."""

from __future__ import annotations

import typer
from typer._click import Context, HelpFormatter
from typer.core import TyperGroup

from cli import (
    bench,
    datasets,
    dlq,
    embed,
    kafka,
    keys,
    model_versions,
    publish,
    replay,
    rollout,
    schemas,
    search,
    sources,
    stack,
    tasks,
    train,
)
from cli.experiments import ab_split, improve_now, improver_revert


class WholeSummaries(TyperGroup):
    """A group whose command list shows each command's first sentence whole, wrapped to the
    terminal (click cuts it with "..." to fit one line)."""

    def format_commands(self, ctx: Context, formatter: HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(limit=10_000)))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


app = typer.Typer(
    name="flywheel",
    cls=WholeSummaries,
    help="Embedding Flywheel: run the stack, publish and replay events, search, train and roll out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
    # Click's plain help: wrapped to the terminal, never cut (rich's tables cut option names at
    # 80 columns). Every subcommand inherits it.
    rich_markup_mode=None,
)
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("status")(stack.status)
app.command("publish")(publish.publish)
app.command("load")(publish.load)
app.command("replay")(replay.replay)
app.command("search")(search.search)
app.command("embed")(embed.embed)
app.add_typer(schemas.app, name="schemas", cls=WholeSummaries)
app.add_typer(dlq.app, name="dlq", cls=WholeSummaries)
app.add_typer(rollout.models_app, name="models", cls=WholeSummaries)
app.command("reindex")(rollout.reindex)
app.add_typer(bench.app, name="bench", cls=WholeSummaries)
app.command("train")(train.train)
app.add_typer(tasks.app, name="tasks", cls=WholeSummaries)
app.add_typer(keys.app, name="keys", cls=WholeSummaries)
app.add_typer(kafka.app, name="kafka-credentials", cls=WholeSummaries)
app.add_typer(sources.app, name="sources", cls=WholeSummaries)
app.add_typer(datasets.app, name="datasets", cls=WholeSummaries)
rollout.models_app.command("registry")(model_versions.registry)
rollout.models_app.command("ab-split")(ab_split)
rollout.models_app.command("improve")(improve_now)
rollout.models_app.command("improver-revert")(improver_revert)

if __name__ == "__main__":
    app()
