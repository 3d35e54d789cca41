"""FerretDB v1.24 (MongoDB wire protocol over SQLite), built from its Go module."""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from gateway.readiness import mongo_health
from infra.process import Component, Health, require_program

FERRETDB_MODULE = "github.com/FerretDB/FerretDB"
FERRETDB_VERSION = "v1.24.2"


class FerretDB(Component):
    name = "mongodb"

    @property
    def url(self) -> str:
        return self.settings.mongo_uri

    @property
    def binary(self) -> Path:
        return self.settings.tools_dir / f"ferretdb-{FERRETDB_VERSION}" / "ferretdb"

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / "ferretdb"

    def prepare(self) -> None:
        if not self.binary.exists():
            build_ferretdb(self.binary)
        (self.data_dir / "sqlite").mkdir(parents=True, exist_ok=True)

    def command(self) -> list[str]:
        s = self.settings
        return [
            str(self.binary),
            "--handler=sqlite",
            f"--sqlite-url=file:{self.data_dir / 'sqlite'}/",
            f"--state-dir={self.data_dir}",
            f"--listen-addr={s.host}:{s.mongo_port}",
            # The debug listener is not needed and would collide between stacks.
            "--debug-addr=-",
            "--telemetry=disable",
            "--log-level=warn",
        ]

    def check(self) -> Health:
        return mongo_health(self.url)


def build_ferretdb(target: Path) -> None:
    """Build the ferretdb binary from the Go module proxy's copy of the release.

    `go install module@version` cannot be used: the module archive leaves out the
    generated build/version/version.txt, and the binary refuses to start without it.
    """
    go = require_program("go", "Go 1.22 or newer, https://go.dev/doc/install or `apt-get install golang`")
    download = subprocess.run(
        [go, "mod", "download", "-json", f"{FERRETDB_MODULE}@{FERRETDB_VERSION}"],
        capture_output=True, text=True,
    )
    if download.returncode != 0:
        raise RuntimeError(f"go mod download of FerretDB failed:\n{download.stdout}{download.stderr}")
    module_dir = Path(json.loads(download.stdout)["Dir"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="ferretdb-src-") as scratch:
        source = Path(scratch) / "src"
        shutil.copytree(module_dir, source)
        for path in [source, *source.rglob("*")]:
            path.chmod(path.stat().st_mode | 0o200)
        (source / "build" / "version" / "version.txt").write_text(FERRETDB_VERSION + "\n")
        build = subprocess.run(
            [go, "build", "-o", str(target), "./cmd/ferretdb"],
            cwd=source, capture_output=True, text=True,
        )
        if build.returncode != 0:
            raise RuntimeError(f"building FerretDB failed:\n{build.stderr[-3000:]}")
