"""`flywheel bench ingest|search|gateway|embeddings|quality`: measure the running stack beside
an in-process baseline. The measuring lives in the `bench` package; this only parses and prints.
Every subcommand takes `--json`, `--no-progress` and `--timeout`."""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from bench.beir import read_dataset
from bench.corpus import SYNTHETIC_SEED
from bench.embeddings import EmbeddingsConfig, run_embeddings
from bench.embeddings import requests_of_a_run as embeddings_requests
from bench.fill import FillConfig, run_compare_index, run_fill
from bench.gateway import GatewayConfig, run_gateway
from bench.gateway import requests_of_a_run as gateway_requests
from bench.gpu import GpuConfig, NoCuda, run_gpu
from bench.ingest import IngestConfig, IngestTimeout, run_ingest
from bench.progress import make_progress
from bench.quality import QualityConfig, QualityError, Source, run_quality
from bench.runtime import StackUnavailable
from bench.search import SearchConfig, run_search
from bench.sources import SourcesConfig, SourcesTimeout, run_sources
from bench.under_ingest import UnderIngestConfig, run_under_ingest
from cli.common import fail, out
from core.api_keys import SCOPES, create_key
from core.config import Settings, get_settings
from core.search import NoActiveModel
from schemas.training import Recipe

app = typer.Typer(help="Benchmarks of the running stack (see docs/benchmarks.md).", no_args_is_help=True)

AsJson = Annotated[bool, typer.Option("--json", help="Print one JSON object.")]
ShowProgress = Annotated[bool, typer.Option("--progress/--no-progress", help="Progress bars on stderr.")]
RequestTimeout = Annotated[float, typer.Option("--timeout", min=1, help="Seconds to wait for one request.")]
ApiKey = Annotated[
    str | None,
    typer.Option("--api-key", help="Default: a key `bench-<command>` of --tenant created in the local key "
                 "store, with a rate limit that fits the run (a remote gateway needs --api-key)."),
]
Threads = Annotated[
    int | None,
    typer.Option("--threads", min=1, help="torch threads of the in-process baseline (default: torch's)."),
]
Corpus = Annotated[
    Path | None,
    typer.Option("--corpus", exists=True, help="A BEIR directory or corpus file (default: synthetic texts)."),
]


def _machine_line(machine: dict[str, Any]) -> str:
    gpu = machine.get("gpu") or "no GPU"
    return f"{machine['cpu']}, {machine['cores']} cores, {machine['memory_gib']} GiB, {gpu}"


def bench_key(settings: Settings, api_key: str | None, command: str, tenant: str, scopes: list[str],
              requests: int) -> str:
    """The given key, or one created for this benchmark whose burst covers every request of the
    run, so the gateway's rate limit never refuses the benchmark's own load."""
    if api_key:
        return api_key
    return create_key(settings.api_key_store, f"bench-{command}", tenant, scopes,
                      rate_per_s=float(max(1000, requests)), burst=requests)


def _run(coroutine: Any) -> Any:
    try:
        return asyncio.run(coroutine)
    except StackUnavailable as error:
        raise fail(str(error), 1) from error
    except NoCuda as error:
        raise fail(str(error), 3) from error
    except (IngestTimeout, SourcesTimeout, QualityError, NoActiveModel, ValueError,
            FileNotFoundError) as error:
        raise fail(str(error), 1) from error


@app.command("ingest")
def ingest(
    n: Annotated[int, typer.Option("--n", min=1, help="Documents for the throughput run.")] = 2000,
    fresh_n: Annotated[
        int, typer.Option("--fresh-n", min=0, help="Documents for the freshness run (0: skip).")
    ] = 200,
    per_second: Annotated[
        float | None,
        typer.Option(
            "--rate", min=0.1,
            help="Freshness run: documents published per second (default: half the measured "
            "throughput, at most 50).",
        ),
    ] = None,
    corpus: Corpus = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="A fresh tenant (default: bench-<time>).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", min=1, help="Baseline encode batch (default: Triton's max).")
    ] = None,
    baseline: Annotated[bool, typer.Option("--baseline/--no-baseline", help="Measure the baseline.")] = True,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for searchable.")
    ] = 600,
    threads: Threads = None,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """Documents/s from publish to searchable vs in-process encode; freshness p50/p99."""
    config = IngestConfig(
        n, fresh_n, per_second, corpus, tenant, batch_size, timeout_s, baseline=baseline, threads=threads
    )
    report = _run(run_ingest(get_settings(), config, make_progress(progress))).to_dict()
    if as_json:
        print(json.dumps(report, indent=2))
        return
    pipeline, base, fresh = report["pipeline"], report["baseline"], report["freshness"]
    table = Table("measure", "value", title=f"bench ingest: {report['documents']} documents "
                  f"({report['chunks']} chunks) from {report['corpus']}, tenant {report['tenant']}")
    table.add_row("pipeline (publish -> searchable)", f"{pipeline['docs_per_s']:.1f} docs/s "
                  f"({pipeline['seconds']:.1f} s)")
    if base:
        table.add_row(f"baseline (in-process encode, {base['device']}, batch {base['batch_size']})",
                      f"{base['docs_per_s']:.1f} docs/s ({base['seconds']:.1f} s)")
        table.add_row("ratio pipeline / baseline", f"{report['ratio_pipeline_to_baseline']:.2f}")
    if fresh:
        if fresh.get("warning"):
            table.add_row("[yellow]freshness warning[/]", fresh["warning"])
        table.add_row(f"freshness at {fresh['achieved_rate_per_s']:.1f}/s: p50", f"{fresh['p50_ms']:.0f} ms")
        table.add_row(f"freshness at {fresh['achieved_rate_per_s']:.1f}/s: p99", f"{fresh['p99_ms']:.0f} ms")
    table.caption = _machine_line(report["machine"])
    out.print(table)


@app.command("search")
def search(
    queries: Annotated[int, typer.Option("--queries", min=1, help="Measured queries.")] = 200,
    queries_file: Annotated[
        Path | None,
        typer.Option("--queries-file", exists=True, help="BEIR queries.jsonl (default: derived from items)."),
    ] = None,
    tenant: Annotated[
        str | None, typer.Option("--tenant", help="Search this tenant (default: bench-search-<corpus>-<n>).")
    ] = None,
    corpus: Corpus = None,
    n: Annotated[
        int, typer.Option("--n", min=1, help="Documents to ingest when the tenant is empty.")
    ] = 2000,
    k: Annotated[int, typer.Option("-k", "--k", min=1, max=100, help="Results per query (recall@k).")] = 10,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Unmeasured queries first.")] = 20,
    hybrid: Annotated[bool, typer.Option("--hybrid/--no-hybrid", help="Also time mode=hybrid.")] = True,
    threads: Threads = None,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for --n documents to be searchable.")
    ] = 600,
    qrels: Annotated[
        Path | None,
        typer.Option("--qrels", exists=True, help="BEIR qrels of --queries-file: judged queries, nDCG@k."),
    ] = None,
    under_ingest: Annotated[
        bool, typer.Option("--under-ingest", help="Instead: p99 idle, then while another tenant's bulk "
                           "load is indexed beside it, and their ratio (see docs/benchmarks.md).")
    ] = False,
    load_n: Annotated[
        int, typer.Option("--load-n", min=1, help="With --under-ingest: documents of the bulk load.")
    ] = 3000,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """p50/p99 of the search function vs the bare path; recall@k of HNSW vs an exact scan; whether
    the top k depend on k."""
    if under_ingest:
        loaded = UnderIngestConfig(tenant, corpus, n, load_n, queries, k, warmup, timeout_s)
        _print_under_ingest(_run(run_under_ingest(get_settings(), loaded, make_progress(progress))), as_json)
        return
    config = SearchConfig(
        tenant, corpus, n, queries, queries_file, k, warmup, hybrid, timeout_s=timeout_s, threads=threads,
        qrels=qrels,
    )
    report = _run(run_search(get_settings(), config, make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("path", "p50 ms", "p99 ms", "mean ms", title=f"bench search: {report['queries']} queries "
                  f"over {report['items']} items of {report['tenant']}, k={report['k']}")
    rows = [("search function (Triton + HNSW SQL)", report["search_function"]),
            (f"bare (in-process encode on {report['baseline_device']} + same SQL)", report["bare"]),
            ("search function, hybrid", report["hybrid"]),
            ("exact scan (SQL only)", report["exact_scan"])]
    for name, row in rows:
        if row:
            table.add_row(name, f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['mean_ms']:.1f}")
    out.print(table)
    recall = report[f"recall_at_{report['k']}"]
    out.print(f"recall@{report['k']} of HNSW vs exact scan: {recall:.3f} "
              f"(min {report['min_recall']:.2f}); {_machine_line(report['machine'])}")
    stable, k = report["k_independence"], report["k"]
    shares = ", ".join(f"{mode} {share:.3f}" for mode, share in stable.items() if mode != "large_k")
    out.print(f"queries whose top {k} at k={k} are their top {k} at k={stable['large_k']}: {shares}")
    if report[f"ndcg_at_{report['k']}"]:
        out.print(f"nDCG@{report['k']}: " + ", ".join(
            f"{mode} {value:.4f}" for mode, value in report[f"ndcg_at_{report['k']}"].items()))


def _print_under_ingest(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        print(json.dumps(report, indent=2))
        return
    load = report["load"]
    table = Table("phase", "p50 ms", "p99 ms", "max ms", "embed p50 / p99 ms", "SQL p50 / p99 ms", title=(
        f"bench search --under-ingest: {report['queries']} queries over {report['items']} items of "
        f"{report['tenant']}; load: {load['documents']} documents of {load['tenant']}"))
    for name, key in (("idle", "idle"), ("under ingest", "under_ingest")):
        row = report[key]
        parts = [f"{row[f'{part}_p50_ms']:.1f} / {row[f'{part}_p99_ms']:.1f}"
                 if f"{part}_p50_ms" in row else "-" for part in ("embed", "sql")]
        table.add_row(name, f"{row['p50_ms']:.1f}", f"{row['p99_ms']:.1f}", f"{row['max_ms']:.1f}", *parts)
    table.caption = _machine_line(report["machine"])
    out.print(table)
    out.print(f"p99 under ingest / idle: {report['ratio_p99_under_ingest_to_idle']} (target at most "
              f"{report['target_ratio_p99']}); indexer lag {load['indexer_lag_at_start']} at the start of "
              f"the loaded phase, {load['indexer_lag_at_end']} at its end ({load['loaded_phase_s']:.1f} s, "
              f"{load['docs_per_s_during_phase']:.1f} docs/s indexed meanwhile)", highlight=False)


@app.command("fill")
def fill(
    tenant: Annotated[str, typer.Option("--tenant", help="The one tenant to fill.")],
    n: Annotated[int, typer.Option("--n", min=1, max=10_000_000, help="Items to import.")] = 100_000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the synthetic texts.")] = SYNTHETIC_SEED,
    corpus: Annotated[
        Path | None,
        typer.Option("--corpus", exists=True, help="A BEIR directory or corpus file, repeated to --n "
                     "(default: short synthetic texts from --seed)."),
    ] = None,
    replace_items: Annotated[
        bool, typer.Option("--replace", help="Delete the tenant's items first (refused without it).")
    ] = False,
    index: Annotated[
        str, typer.Option("--index", help="HNSW: insert (into the indexed table), rebuild (drop, copy, "
                          "build once; only when the version's table holds no other tenant), auto."),
    ] = "auto",
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for Triton on each slice of texts.")
    ] = 600,
    compare_index: Annotated[
        bool, typer.Option("--compare-index", help="Import nothing: time HNSW insert-into-indexed against "
                           "copy-then-build on temporary copies of the tenant's vectors.")
    ] = False,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """Import N items (vectors by Triton's bulk lane, one pass) into one tenant with COPY."""
    if index not in ("auto", "insert", "rebuild"):
        raise fail(f"--index must be auto, insert or rebuild, not {index!r}", 2)
    if compare_index:
        compared = _run(run_compare_index(get_settings(), tenant))
        if as_json:
            print(json.dumps(compared, indent=2))
        else:
            out.print(f"HNSW over {compared['rows']} vectors of {tenant}: insert into the indexed table "
                      f"{compared['insert_into_indexed_s']:.1f} s, copy then build "
                      f"{compared['copy_then_build_s']:.1f} s", highlight=False)
        return
    config = FillConfig(tenant, n, seed, corpus, replace_items, index, timeout_s)  # type: ignore[arg-type]
    report = _run(run_fill(get_settings(), config, make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("measure", "value", title=f"bench fill: {report['items']} items of {report['tenant']} "
                  f"(model version {report['model_version']}, index {report['index_strategy']})")
    for name, seconds in report["seconds"].items():
        table.add_row(name, f"{seconds:.1f}")
    table.add_row("embed texts/s", f"{report['texts_per_s_embed']:.1f}")
    table.add_row("import + index rows/s", f"{report['rows_per_s_import_and_index']:.1f}")
    table.caption = _machine_line(report["machine"])
    out.print(table)
    out.print(f"measure it: flywheel bench search --tenant {report['tenant']} --no-hybrid", highlight=False)


@app.command("gpu")
def gpu(
    texts: Annotated[int, typer.Option("--texts", min=1, help="Texts encoded per measurement.")] = 4096,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Texts per encode batch.")] = 128,
    train_steps: Annotated[int, typer.Option("--train-steps", min=2, help="Training steps timed.")] = 50,
    train_batch: Annotated[int, typer.Option("--train-batch", min=2, help="Triples per training step.")] = 32,
    triton: Annotated[
        bool, typer.Option("--triton/--no-triton", help="Also measure the running stack's Triton.")
    ] = True,
    version: Annotated[
        str | None, typer.Option("--version", help="Model version Triton serves (default: the base).")
    ] = None,
    timeout_s: RequestTimeout = 120,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """On a CUDA GPU: texts/s through Triton vs in-process torch (fp32, fp16); training steps/s."""
    config = GpuConfig(texts, batch, train_steps, train_batch, triton, version, timeout_s)
    report = _run(run_gpu(get_settings(), config, make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("measure", "value", title=f"bench gpu: {report['gpu']}, {report['texts']} texts, "
                  f"batch {report['batch']}, model version {report['model_version']}")
    local, served, training = report["in_process"], report["triton"], report["training"]
    table.add_row("in-process torch fp32", f"{local['fp32_texts_per_s']:.1f} texts/s")
    table.add_row("in-process torch fp16", f"{local['fp16_texts_per_s']:.1f} texts/s")
    if served:
        table.add_row(f"Triton bulk lane ({served['instance_kind'] or 'kind chosen by Triton'})",
                      f"{served['texts_per_s']:.1f} texts/s")
    else:
        table.add_row("Triton", f"skipped: {report.get('triton_skipped', '--no-triton')}")
    table.add_row(f"training ({training['device']}, batch {training['batch_size']})",
                  f"{training['steps_per_s']:.2f} steps/s")
    table.caption = f"{report['seconds']:.0f} s in all"
    out.print(table)


@app.command("gateway")
def gateway(
    requests: Annotated[int, typer.Option("--requests", min=1, help="Requests per endpoint.")] = 300,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight.")] = 32,
    api_key: ApiKey = None,
    tenant: Annotated[str, typer.Option("--tenant", help="The key's tenant.")] = "default",
    timeout_s: RequestTimeout = 60,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """Requests/s and p50/p99 of /v1/search and /v1/content, beside in-process search."""
    settings = get_settings()
    config = GatewayConfig(requests, concurrency, tenant=tenant, timeout_s=timeout_s)
    key = bench_key(settings, api_key, "gateway", tenant, ["publish", "search"], gateway_requests(config))
    report = _run(run_gateway(settings, replace(config, api_key=key), make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("path", "requests/s", "p50 ms", "p99 ms", "errors",
                  title=f"gateway at concurrency {concurrency}; {_machine_line(report['machine'])}")
    for name in ("search", "content", "search_in_process"):
        row = report[name]
        latency = row["latency_ms"] or {}
        table.add_row(name, f"{row['requests_per_s']:.1f}", f"{latency.get('p50', 0):.1f}",
                      f"{latency.get('p99', 0):.1f}", _errors(row))
    out.print(table)
    if "search_rps_ratio" in report:
        out.print(f"/v1/search requests/s over in-process search: {report['search_rps_ratio']:.2f}")


def _errors(row: dict[str, Any]) -> str:
    """`0`, or the count with what went wrong: `12 (429: 10, ReadTimeout: 2)`."""
    if not row["errors"]:
        return "0"
    return f"{row['errors']} ({', '.join(f'{k}: {v}' for k, v in row['errors_by_status'].items())})"


@app.command("embeddings")
def embeddings(
    texts: Annotated[int, typer.Option("--texts", min=1, help="Texts (documents of the corpus).")] = 512,
    batch: Annotated[int, typer.Option("--batch", min=1, help="Texts per request and per encode call.")] = 16,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight.")] = 4,
    model: Annotated[str, typer.Option("--model", help="`active`, `latest`, `base`, a version.")] = "active",
    corpus: Corpus = None,
    api_key: ApiKey = None,
    tenant: Annotated[str, typer.Option("--tenant", help="The key's tenant.")] = "default",
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Unmeasured requests first.")] = 4,
    threads: Threads = None,
    timeout_s: RequestTimeout = 60,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """Texts/s and p50/p99 of POST /v1/embeddings, beside in-process encode of the same texts."""
    settings = get_settings()
    config = EmbeddingsConfig(texts, batch, concurrency, model, corpus=corpus, warmup=warmup,
                              timeout_s=timeout_s, threads=threads)
    key = bench_key(settings, api_key, "embeddings", tenant, ["search"], embeddings_requests(config))
    report = _run(run_embeddings(settings, replace(config, api_key=key), make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    table = Table("path", "texts/s", "p50 ms", "p99 ms", "errors", title=(
        f"bench embeddings: {report['texts']} texts of {report['corpus']} in batches of {report['batch']}, "
        f"model version {report['model_version'] or '?'}, concurrency {report['concurrency']}"))
    for name, label in (("api", "POST /v1/embeddings"),
                        ("in_process", f"in-process encode ({report['baseline_device']})")):
        row = report[name]
        if row:
            latency = row["latency_ms"] or {}
            table.add_row(label, f"{row['texts_per_s']:.1f}", f"{latency.get('p50', 0):.1f}",
                          f"{latency.get('p99', 0):.1f}", _errors(row))
    table.caption = _machine_line(report["machine"])
    out.print(table)
    if "ratio_texts_per_s" in report:
        out.print(f"API over in-process: texts/s {report['ratio_texts_per_s']:.2f}, "
                  f"p99 {report['ratio_p99']:.2f}; min cosine {report['min_cosine_api_to_in_process']:.5f}")
    if report["api"]["errors"]:
        raise typer.Exit(1)


@app.command("quality")
def quality(
    dataset: Annotated[
        Path, typer.Option("--dataset", exists=True, file_okay=False,
                           help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/{train,test}.tsv."),
    ],
    api_key: Annotated[
        str | None, typer.Option("--api-key", help="An admin key of the tenant to fill (default: a key "
                                 "`bench-quality` for --tenant is created in the local key store).")
    ] = None,
    tenant: Annotated[
        str | None,
        typer.Option("--tenant", help="The tenant of the created key (default: quality-<dataset>)."),
    ] = None,
    max_docs: Annotated[
        int | None, typer.Option("--max-docs", min=1, help="Cut the corpus (every judged document kept).")
    ] = None,
    train_queries: Annotated[
        int | None, typer.Option("--train-queries", min=1, help="Use the first N train queries.")
    ] = None,
    test_queries: Annotated[
        int | None, typer.Option("--test-queries", min=1, help="Use the first N test queries.")
    ] = None,
    shown_k: Annotated[
        int, typer.Option("--shown-k", min=1, max=100, help="Results shown per training search.")
    ] = 10,
    recipe: Annotated[Recipe | None, typer.Option(
        "--recipe", help="How the run trains; default: the trainer's FLYWHEEL_TRAINING_RECIPE.")] = None,
    epochs: Annotated[int | None, typer.Option(
        "--epochs", min=1, max=100, help="Training epochs; default: the recipe's.")] = None,
    source: Annotated[
        Source, typer.Option("--source", help="What the run learns from: click sessions simulated from "
                             "the train judgements, the train judgements uploaded as a dataset, or both."),
    ] = "sessions",
    gate_margin: Annotated[
        float, typer.Option("--gate-margin", min=0.0, max=1.0, help="nDCG@10 the candidate must gain.")
    ] = 0.0,
    concurrency: Annotated[int, typer.Option("--concurrency", min=1, help="Requests in flight.")] = 4,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for each step."),
    ] = 7200,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """nDCG@10 and Recall@100 before and after one turn of the flywheel, through the gateway."""
    settings = get_settings()
    try:
        data = read_dataset(dataset, max_docs, train_queries, test_queries)
    except (ValueError, FileNotFoundError) as error:
        raise fail(str(error), 2) from error
    tenant = tenant or f"quality-{data.name}"
    if api_key is None:
        api_key = create_key(settings.api_key_store, "bench-quality", tenant, list(SCOPES),
                             rate_per_s=1000, burst=1000)
    config = QualityConfig(shown_k, epochs, gate_margin, concurrency, timeout_s, source=source, recipe=recipe)
    report = _run(run_quality(settings.gateway_url, api_key, tenant, data, config, make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
    else:
        _print_quality(report)
    if report["fine_tuned"] is None:
        raise typer.Exit(3)


def _sources_line(report: dict[str, Any]) -> str:
    data, parts = report["dataset"], []
    if report["sessions"]:
        parts.append(f"{report['sessions'].get('sessions_with_clicks', 0)} click sessions from "
                     f"{data['train_queries']} train queries")
    if report.get("judgments"):
        train, held = report["judgments"]["train"], report["judgments"]["eval"]
        parts.append(f"{train['judgments']} uploaded judgments "
                     f"({held['queries']} queries held out for the gate)")
    return " and ".join(parts)


def _print_quality(report: dict[str, Any]) -> None:
    data = report["dataset"]
    table = Table("model", "version", "mode", "nDCG@10 (k=10)", "Recall@100 (k=100)", title=(
        f"bench quality: {data['name']}, {data['documents']} documents, {data['test_queries']} test queries, "
        f"trained on {_sources_line(report)}"))
    for name in ("base", "fine_tuned"):
        row = report[name]
        for mode, scores in (row or {}).get("modes", {}).items():
            table.add_row(name.replace("_", "-"), row["model_version"], mode, f"{scores['ndcg@10']:.4f}",
                          f"{scores['recall@100']:.4f}")
    out.print(table)
    training = report["training"]
    if report["fine_tuned"] is None:
        out.print(f"[yellow]no rollout[/]: training {training['status']}: {training.get('error')}")
    else:
        for mode, change in report["change_by_mode"].items():
            out.print(f"change ({mode}): nDCG@10 {change['ndcg@10']:+.4f}, "
                      f"Recall@100 {change['recall@100']:+.4f}")
    timings = ", ".join(f"{k} {v:.0f} s" for k, v in report["timings_s"].items())
    out.print(f"timings: {timings}; {_machine_line(report['machine'])}")


@app.command("sources")
def sources(
    rows: Annotated[int, typer.Option("--rows", min=1, help="Rows of the bulk insert.")] = 5000,
    updates: Annotated[int, typer.Option("--updates", min=1, help="Single-row updates timed.")] = 100,
    per_second: Annotated[float, typer.Option("--rate", min=0.1, help="Updates per second.")] = 5.0,
    timeout_s: Annotated[
        float, typer.Option("--timeout", min=1, help="Seconds to wait for the rows to be searchable.")
    ] = 900,
    as_json: AsJson = False,
    progress: ShowProgress = True,
) -> None:
    """Rows/s from a bulk INSERT to searchable through capture, against publishing the same rows
    directly; p50/p99 from one UPDATE to the changed item being searchable."""
    config = SourcesConfig(rows, updates, per_second, timeout_s)
    report = _run(run_sources(get_settings(), config, make_progress(progress)))
    if as_json:
        print(json.dumps(report, indent=2))
        return
    capture, direct, fresh = report["capture"], report["direct_publish"], report["update_to_searchable_ms"]
    table = Table("measure", "value", title=f"bench sources: {report['rows']} rows")
    table.add_row("capture (INSERT -> searchable)",
                  f"{capture['rows_per_s']:.1f} rows/s ({capture['seconds']:.1f} s)")
    table.add_row("direct publish (SDK -> searchable)",
                  f"{direct['docs_per_s']:.1f} docs/s ({direct['seconds']:.1f} s)")
    table.add_row("ratio capture / direct", f"{report['ratio_capture_to_direct']:.2f}")
    table.add_row(f"UPDATE -> searchable at {report['update_rate_per_s']}/s: p50", f"{fresh['p50']:.0f} ms")
    table.add_row(f"UPDATE -> searchable at {report['update_rate_per_s']}/s: p99", f"{fresh['p99']:.0f} ms")
    table.caption = _machine_line(report["machine"])
    out.print(table)


# --- list and show: the benchmarks, and the results recorded in docs/results -------------------
RESULTS_DIR = Path(__file__).resolve().parent.parent / "docs" / "results"


def _benchmarks() -> dict[str, str]:
    """Each measuring subcommand and the first line of its help."""
    return {info.name or "": (info.callback.__doc__ or "").strip().splitlines()[0]
            for info in app.registered_commands
            if info.callback is not None and info.name not in ("list", "show")}


@app.command("list")
def list_benchmarks(as_json: AsJson = False) -> None:
    """The benchmarks, and how many results of each are recorded in docs/results."""
    rows = [{"name": name, "measures": about, "recorded": len(_recorded(name))}
            for name, about in _benchmarks().items()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    table = Table("benchmark", "measures", "recorded")
    for row in rows:
        table.add_row(str(row["name"]), str(row["measures"]), str(row["recorded"]))
    out.print(table)


def _recorded(name: str) -> list[Path]:
    return sorted(RESULTS_DIR.glob(f"bench-{name}-*.json")) if RESULTS_DIR.is_dir() else []


@app.command("show")
def show_benchmark(
    name: Annotated[str, typer.Argument(help="A benchmark (see `flywheel bench list`).")],
    as_json: AsJson = False,
) -> None:
    """What a benchmark measures and its latest result recorded in docs/results, if any."""
    about = _benchmarks().get(name)
    if about is None:
        raise fail(f"no benchmark {name!r}; benchmarks: {', '.join(_benchmarks())}")
    recorded = _recorded(name)
    latest = json.loads(recorded[-1].read_text()) if recorded else None
    if as_json:
        print(json.dumps({"name": name, "measures": about, "recorded": [str(p) for p in recorded],
                          "latest": latest}, indent=2))
        return
    out.print(f"{name}: {about}", highlight=False)
    if latest is None:
        out.print(f"no result recorded in {RESULTS_DIR}; run `flywheel bench {name} --json`", highlight=False)
        return
    out.print(f"latest recorded: {recorded[-1]}", highlight=False)
    print(json.dumps(latest, indent=2))
