"""A Kafka Connect worker (distributed mode) with Debezium's PostgreSQL and MySQL connectors.

The worker is the Connect runtime of the same Apache Kafka release the broker runs, resolved
from Maven Central like the broker; each Debezium connector is resolved into a folder of its
own under the worker's `plugin.path`, so its dependencies stay isolated. The worker keeps its
connector configs, source offsets and statuses in topics on our broker, so a restarted worker
resumes every capture where it stopped.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import httpx

from core.config import REPO_ROOT
from core.kafka_auth import java_client_properties, uses_sasl
from infra.kafka_security import service_principal
from infra.process import Component, Health, require_program

INFRA_DIR = Path(__file__).resolve().parent
DEBEZIUM_CONNECTORS = ("debezium-connector-postgres", "debezium-connector-mysql")
# Kafka's own jars are the worker's: a plugin's copies would only shadow them.
_PROVIDED_BY_THE_WORKER = "connect-api,kafka-clients,slf4j-api"


class KafkaConnect(Component):
    name = "connect"

    @property
    def url(self) -> str:
        return self.settings.connect_url

    @property
    def libs_dir(self) -> Path:
        return self.settings.tools_dir / f"connect-{self.settings.kafka_version}" / "libs"

    @property
    def plugins_dir(self) -> Path:
        return self.settings.tools_dir / f"debezium-{self.settings.debezium_version}"

    @property
    def config_file(self) -> Path:
        return self.settings.state_dir / "connect" / "connect-distributed.properties"

    def prepare(self) -> None:
        require_program("java", "a JDK 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`")
        self._resolve("connect-pom.xml", self.libs_dir, f"-Dkafka.version={self.settings.kafka_version}",
                      done=f"connect-runtime-{self.settings.kafka_version}.jar")
        for connector in DEBEZIUM_CONNECTORS:
            self._resolve(
                "debezium-pom.xml", self.plugins_dir / connector, f"-Dconnector={connector}",
                f"-Ddebezium.version={self.settings.debezium_version}",
                f"-DexcludeArtifactIds={_PROVIDED_BY_THE_WORKER}",
                done=f"{connector}-{self.settings.debezium_version}.jar",
            )
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:  # it holds the worker's Kafka password
            out.write(self._worker_properties())

    def _resolve(self, pom: str, into: Path, *options: str, done: str) -> None:
        if (into / done).exists():
            return
        mvn = require_program("mvn", "Apache Maven, e.g. `apt-get install maven`")
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(INFRA_DIR / "maven" / pom), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={into}", *options],
            capture_output=True, text=True,
        )
        if result.returncode != 0 or not (into / done).exists():
            raise RuntimeError(f"could not resolve {done} from Maven Central:\n"
                               + (result.stdout + result.stderr)[-2000:])

    def _worker_properties(self) -> str:
        s = self.settings
        return "\n".join([
            f"bootstrap.servers={s.bootstrap_servers}",
            f"group.id={s.connect_group}",
            f"listeners=http://{s.host}:{s.connect_port}",
            f"plugin.path={self.plugins_dir}",
            "key.converter=org.apache.kafka.connect.json.JsonConverter",
            "value.converter=org.apache.kafka.connect.json.JsonConverter",
            "key.converter.schemas.enable=false",
            "value.converter.schemas.enable=false",
            f"config.storage.topic={s.connect_group}-configs",
            f"offset.storage.topic={s.connect_group}-offsets",
            f"status.storage.topic={s.connect_group}-status",
            "config.storage.replication.factor=1",
            "offset.storage.replication.factor=1",
            "status.storage.replication.factor=1",
            "offset.flush.interval.ms=1000",
            # Connectors name the partitions and replication of the topics they write.
            "topic.creation.enable=true",
            # The worker's principal, for its own clients and its connectors' producers, consumers
            # and admin clients (the MySQL schema history refers to it through the env provider).
            *(f"{k}={v}" for k, v in self._security().items()),
            "config.providers=env",
            "config.providers.env.class=org.apache.kafka.common.config.provider.EnvVarConfigProvider",
            "",
        ])

    def _security(self) -> dict[str, str]:
        s = self.settings
        if not uses_sasl(s):
            return {}
        connect = s.model_copy(update=service_principal(s, "connect"))
        return {k: v for prefix in ("", "producer.", "consumer.", "admin.")
                for k, v in java_client_properties(connect, prefix).items()}

    def environment(self) -> dict[str, str]:
        # What a connector's own Kafka clients take as ${env:FLYWHEEL_CONNECT_SASL_JAAS_CONFIG}.
        jaas = self._security().get("sasl.jaas.config")
        return {"FLYWHEEL_CONNECT_SASL_JAAS_CONFIG": jaas} if jaas else {}

    def command(self) -> list[str]:
        java = require_program("java", "a JDK 17 or newer")
        return [
            java, "-Xms128m", "-Xmx512m", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={INFRA_DIR / 'connect-log4j2.properties'}",
            "-cp", f"{self.libs_dir}/*", "org.apache.kafka.connect.cli.ConnectDistributed",
            str(self.config_file),
        ]

    def cwd(self) -> Path:
        return REPO_ROOT

    def check(self) -> Health:
        try:
            root = httpx.get(f"{self.url}/", timeout=2)
            plugins = httpx.get(f"{self.url}/connector-plugins", timeout=5)
        except httpx.HTTPError as error:
            return Health(False, f"cannot connect: {error}")
        if root.status_code != 200 or plugins.status_code != 200:
            return Health(False, f"REST API answered {root.status_code}/{plugins.status_code}")
        classes = {plugin.get("class", "") for plugin in plugins.json()}
        missing = [c for c in ("PostgresConnector", "MySqlConnector")
                   if not any(name.endswith(c) for name in classes)]
        if missing:
            return Health(False, f"worker up, but no {', '.join(missing)} plugin")
        return Health(True, f"Kafka Connect {root.json().get('version', '?')}, Debezium PostgreSQL and MySQL")
