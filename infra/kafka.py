"""Apache Kafka 4.x in KRaft single-node mode, from the official jars on Maven Central."""

from __future__ import annotations

import asyncio
import base64
import socket
import subprocess
import uuid
from pathlib import Path

from core.config import REPO_ROOT
from gateway.readiness import kafka_health
from infra.process import Component, Health, require_program
from kafka_ops.topics import ensure_topics

INFRA_DIR = Path(__file__).resolve().parent


class Kafka(Component):
    name = "kafka"

    @property
    def url(self) -> str:
        return self.settings.bootstrap_servers

    @property
    def libs_dir(self) -> Path:
        return self.settings.tools_dir / f"kafka-{self.settings.kafka_version}" / "libs"

    @property
    def data_dir(self) -> Path:
        return self.settings.state_dir / "kafka" / "data"

    @property
    def config_file(self) -> Path:
        return self.settings.state_dir / "kafka" / "server.properties"

    def prepare(self) -> None:
        java = require_program("java", "a JDK 17 or newer, e.g. `apt-get install openjdk-17-jre-headless`")
        self._install_jars()
        self.config_file.parent.mkdir(parents=True, exist_ok=True)
        self.config_file.write_text(self._server_properties())
        if not (self.data_dir / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            subprocess.run(
                [java, "-cp", f"{self.libs_dir}/*", "kafka.tools.StorageTool", "format",
                 "--standalone", "-t", cluster_id, "-c", str(self.config_file)],
                check=True, capture_output=True, text=True,
            )

    def _install_jars(self) -> None:
        if (self.libs_dir / f"kafka_2.13-{self.settings.kafka_version}.jar").exists():
            return
        mvn = require_program("mvn", "Apache Maven, e.g. `apt-get install maven`")
        result = subprocess.run(
            [mvn, "-q", "-B", "-f", str(INFRA_DIR / "maven" / "pom.xml"),
             "dependency:copy-dependencies", f"-Dkafka.version={self.settings.kafka_version}",
             "-DincludeScope=runtime", f"-DoutputDirectory={self.libs_dir}"],
            capture_output=True, text=True,
        )
        if result.returncode != 0:
            raise RuntimeError(
                "could not resolve the Kafka broker from Maven Central:\n"
                + (result.stdout + result.stderr)[-2000:]
            )

    def _server_properties(self) -> str:
        s = self.settings
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={s.host}:{s.kafka_controller_port}",
            f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            f"log.dirs={self.data_dir}",
            f"num.partitions={s.kafka_partitions}",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=10",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "share.coordinator.state.topic.min.isr=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=false",
            "log.cleaner.min.compaction.lag.ms=0",
            "",
        ])

    def command(self) -> list[str]:
        java = require_program("java", "a JDK 17 or newer")
        return [
            java, "-Xms256m", "-Xmx768m", "-XX:+UseG1GC",
            f"-Dlog4j2.configurationFile={INFRA_DIR / 'kafka-log4j2.properties'}",
            "-cp", f"{self.libs_dir}/*", "kafka.Kafka", str(self.config_file),
        ]

    def cwd(self) -> Path:
        return REPO_ROOT

    def check(self) -> Health:
        try:
            with socket.create_connection((self.settings.host, self.settings.kafka_port), 1):
                pass
        except OSError as error:
            return Health(False, f"broker port closed: {error}")
        return kafka_health(self.settings.bootstrap_servers)

    def after_start(self) -> None:
        asyncio.run(ensure_topics(self.settings.bootstrap_servers))
