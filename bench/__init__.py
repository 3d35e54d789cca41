"""Benchmarks of the running stack: `flywheel bench ingest` and `flywheel bench search`.

Each figure of the pipeline is measured beside an in-process baseline in the same run, on the
same texts, so the numbers say what the platform costs over the bare model and SQL.
"""
