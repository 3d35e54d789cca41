"""Every shell and Python example in docs/*.md runs as written against the test stack.

The docs reach the stack through the variables they name themselves: `FLYWHEEL_STATE_DIR`
(where `make up` keeps the local admin key, `.flywheel` by default), `FLYWHEEL_GATEWAY_PORT`
and `FLYWHEEL_KAFKA_PORT`; here they are the test stack's. kcat reads the broker's SASL
credentials from `KCAT_CONFIG`, as docs/events.md says. Blocks marked `parse` have their
`flywheel` commands parsed by the CLI instead (tests/e2e/doc_blocks.py); blocks marked
`skip` say why they are not run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import pytest

from core.api_keys import ensure_local_admin_key
from core.config import REPO_ROOT, Settings
from infra.process import Component
from infra.services import gateway_service
from tests.conftest import _run
from tests.e2e.doc_blocks import Block, blocks, command_lines, parse_command
from tests.integration import kafka_helpers

pytestmark = pytest.mark.e2e

BLOCKS = blocks()
# Blocks not run at all: each says why where it stands. Few, and each for a reason the test
# cannot satisfy (a Docker engine, a Kubernetes cluster, the reader's database, a fragment).
MAX_SKIPPED = 4


def ids(found: list[Block]) -> list[str]:
    return [b.name for b in found]


def test_the_docs_have_examples_and_few_are_left_out() -> None:
    skipped = [b for b in BLOCKS if b.mode == "skip"]
    assert len([b for b in BLOCKS if b.mode == "run"]) >= 10
    assert len(skipped) <= MAX_SKIPPED, ids(skipped)
    for block in BLOCKS:
        if block.mode != "run":
            assert len(block.reason) > 20, f"{block.name}: a block that is not run says why"


PARSED = [b for b in BLOCKS if b.mode == "parse"]


@pytest.mark.parametrize("block", PARSED, ids=ids(PARSED))
def test_parsed_examples_are_valid_commands(block: Block) -> None:
    commands = command_lines(block.code)
    for args in commands:
        try:
            parse_command(args)
        except Exception as error:  # typer's click errors: no such command, option or value
            if "does not exist" in str(error):  # a data directory of this machine: grammar is fine
                continue
            raise AssertionError(f"{block.name}: flywheel {' '.join(args)}: {error}") from error


@pytest.fixture(scope="module")
def doc_env(
    test_settings: Settings, kafka: Component, postgres: Component, mongodb: Component,
    triton: Component, indexer_service: Component, sessions_service: Component,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, str]]:
    """The test stack's gateway with the local admin key `make up` writes, and the environment
    the docs' examples read."""
    ensure_local_admin_key(test_settings.api_key_file, test_settings.api_key_store)
    settings = test_settings.model_copy(update={"api_keys_json": ""})
    kcat_config = tmp_path_factory.mktemp("kcat") / "kcat.conf"
    kcat_config.write_text(kcat_properties(os.environ))
    env = {**kcat_environment(settings), **settings.to_env(), "KCAT_CONFIG": str(kcat_config),
           "PATH": f"{REPO_ROOT / '.venv' / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(REPO_ROOT)}
    for _ in _run(gateway_service(settings)):
        yield env


def kcat_properties(env: Mapping[str, str]) -> str:
    """librdkafka's properties for the principal the test process uses, when the broker asks
    for SASL (FLYWHEEL_KAFKA_SECURITY_PROTOCOL and the username and password the clients use)."""
    protocol = env.get("FLYWHEEL_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT")
    if not protocol.startswith("SASL"):
        return ""
    return (f"security.protocol={protocol}\nsasl.mechanisms=SCRAM-SHA-512\n"
            f"sasl.username={env.get('FLYWHEEL_KAFKA_USERNAME', '')}\n"
            f"sasl.password={env.get('FLYWHEEL_KAFKA_PASSWORD', '')}\n")


def kcat_environment(settings: Settings) -> dict[str, str]:
    """The environment kcat runs in (the test helpers' own, e.g. a librdkafka that speaks the
    broker's SCRAM, where they provide one)."""
    provided: Callable[[Settings], dict[str, str]] | None = getattr(kafka_helpers, "kcat_environment", None)
    return provided(settings) if provided else dict(os.environ)


RUN = [b for b in BLOCKS if b.mode == "run"]


@pytest.mark.parametrize("block", RUN, ids=ids(RUN))
def test_examples_run_as_written(block: Block, doc_env: dict[str, str], tmp_path: Path) -> None:
    """Each block in a directory of its own that looks like the clone's (`.venv` there), so the
    files an example writes do not land in the checkout."""
    (tmp_path / ".venv").symlink_to(REPO_ROOT / ".venv")
    if block.language == "python":
        script = tmp_path / "example.py"
        script.write_text(block.code)
        command = [sys.executable, str(script)]
    else:
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    done = subprocess.run(command, cwd=tmp_path, env=doc_env, capture_output=True, text=True,
                          timeout=300, check=False)
    assert done.returncode == 0, (
        f"{block.name} exited {done.returncode}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n"
        f"{done.stderr[-3000:]}")
    assert block.expect in done.stdout, f"{block.name}: no {block.expect!r} in:\n{done.stdout[-3000:]}"
