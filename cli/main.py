"""The `flywheel` command line."""

from __future__ import annotations

import typer

from cli import (
    bench,
    dlq,
    embed,
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

app = typer.Typer(
    name="flywheel",
    help="Embedding Flywheel: run the stack, publish and replay events, search, train and roll out.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)
app.command("up")(stack.up)
app.command("down")(stack.down)
app.command("status")(stack.status)
app.command("publish")(publish.publish)
app.command("load")(publish.load)
app.command("replay")(replay.replay)
app.command("search")(search.search)
app.command("embed")(embed.embed)
app.add_typer(schemas.app, name="schemas")
app.add_typer(dlq.app, name="dlq")
app.add_typer(rollout.models_app, name="models")
app.command("reindex")(rollout.reindex)
app.add_typer(bench.app, name="bench")
app.command("train")(train.train)
app.add_typer(tasks.app, name="tasks")
app.add_typer(keys.app, name="keys")
app.add_typer(sources.app, name="sources")
rollout.models_app.command("registry")(model_versions.registry)
rollout.models_app.command("ab-split")(ab_split)
rollout.models_app.command("improve")(improve_now)
rollout.models_app.command("improver-revert")(improver_revert)

if __name__ == "__main__":
    app()
