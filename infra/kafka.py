"""Apache Kafka 4.x in KRaft single-node mode, from the official jars on Maven Central."""

from __future__ import annotations

import asyncio
import base64
import os
import socket
import subprocess
import uuid
from pathlib import Path

from core.config import REPO_ROOT
from core.kafka_auth import kafka_client_options, uses_sasl
from gateway.readiness import kafka_health
from infra import kafka_acls
from infra.kafka_security import CONTROLLER, apply, ensure_credentials, principals_and_acls
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
        formatted = (self.data_dir / "meta.properties").exists()
        if formatted and uses_sasl(self.settings) and not self.settings.kafka_credentials_file.exists():
            raise RuntimeError(
                f"{self.data_dir} was formatted without SASL users: remove it (its events are lost) "
                "or run with FLYWHEEL_KAFKA_SECURITY_PROTOCOL=PLAINTEXT"
            )
        fd = os.open(self.config_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:  # it holds the broker's and the controller's passwords
            out.write(self._server_properties())
        if not formatted:
            cluster_id = "-"
            while cluster_id.startswith("-"):  # as Kafka's Uuid.randomUuid: "-..." reads as an option
                cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
            # The broker and the operator exist from the start; the services' users come later.
            scram = [] if not uses_sasl(self.settings) else [
                arg for name in kafka_acls.SUPER_USERS for arg in (
                    "--add-scram", f"SCRAM-SHA-512=[name={name},password={self._passwords[name]}]")
            ]
            subprocess.run(
                [java, "-cp", f"{self.libs_dir}/*", "kafka.tools.StorageTool", "format",
                 "--standalone", "-t", cluster_id, "-c", str(self.config_file), *scram],
                check=True, capture_output=True, text=True,
            )

    @property
    def _passwords(self) -> dict[str, str]:
        return ensure_credentials(self.settings)

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

    def _security_properties(self) -> list[str]:
        """Clients (and the broker to itself) authenticate with SCRAM-SHA-512 on the client
        listener, the broker to its controller with PLAIN on the loopback controller listener;
        StandardAuthorizer then refuses what no ACL allows (infra/kafka_acls.py)."""
        s, pw = self.settings, self._passwords
        listener = s.kafka_security_protocol
        scram = ("org.apache.kafka.common.security.scram.ScramLoginModule required "
                 f'username="{kafka_acls.BROKER}" password="{pw[kafka_acls.BROKER]}";')
        plain = ("org.apache.kafka.common.security.plain.PlainLoginModule required "
                 f'username="{CONTROLLER}" password="{pw[CONTROLLER]}" user_{CONTROLLER}="{pw[CONTROLLER]}";')
        return [
            f"listeners={listener}://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            f"advertised.listeners={listener}://{s.host}:{s.kafka_port}",
            f"listener.security.protocol.map=CONTROLLER:SASL_PLAINTEXT,{listener}:{listener}",
            f"inter.broker.listener.name={listener}",
            "sasl.enabled.mechanisms=SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol=SCRAM-SHA-512",
            f"listener.name.{listener.lower()}.scram-sha-512.sasl.jaas.config={scram}",
            "sasl.mechanism.controller.protocol=PLAIN",
            "listener.name.controller.sasl.enabled.mechanisms=PLAIN",
            f"listener.name.controller.plain.sasl.jaas.config={plain}",
            "authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            "allow.everyone.if.no.acl.found=false",
            "super.users=" + ";".join(f"User:{name}" for name in (*kafka_acls.SUPER_USERS, CONTROLLER)),
        ]

    def _server_properties(self) -> str:
        s = self.settings
        plaintext = [
            f"listeners=PLAINTEXT://{s.host}:{s.kafka_port},CONTROLLER://{s.host}:{s.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://{s.host}:{s.kafka_port}",
            "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        ]
        return "\n".join([
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={s.host}:{s.kafka_controller_port}",
            *(self._security_properties() if uses_sasl(s) else plaintext),
            "controller.listener.names=CONTROLLER",
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
        return kafka_health(self.settings.bootstrap_servers, kafka_client_options(self.settings))

    def after_start(self) -> None:
        if uses_sasl(self.settings):
            apply(self.settings, self.libs_dir, principals_and_acls(self.settings))
        options = kafka_client_options(self.settings)
        asyncio.run(ensure_topics(self.settings.bootstrap_servers, options=options))
