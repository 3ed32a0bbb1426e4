"""Apache Kafka (KRaft, single node) and MinIO as local processes, each in its own data dir.

Each server runs in its own process group so that stopping it never leaves a JVM or a
minio child behind. Ports are picked free at creation and kept across restarts, so a
restarted broker is the same broker to its clients.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import socket
import ssl
import subprocess
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from common.retry import Backoff, poll
from local.stack import provision
from local.stack.tls import Certificates, generate_certificates

HOST = "127.0.0.1"


class StackError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


def port_open(port: int, timeout: float = 0.5, host: str = HOST) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stop_process_group(pid: int, timeout: float = 30.0) -> None:
    """SIGTERM the group led by `pid`, then SIGKILL it if it outlives `timeout`."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        if poll(lambda: _exited(pid), Backoff(0.1), wait):
            return


def _exited(pid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)  # reap our own child so it stops counting as alive
    return not pid_alive(pid)


def http_get(url: str, timeout: float, verify: ssl.SSLContext | bool = True) -> httpx.Response | None:
    """The answer to a GET, whatever its status; None when nothing answers."""
    try:
        return httpx.get(url, timeout=timeout, verify=verify)
    except httpx.HTTPError:
        return None


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner may read: it may hold a password."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)


class ManagedServer:
    """One server process: start in its own group, wait for readiness, stop cleanly."""

    name = "server"
    start_timeout = 90.0
    host = HOST  # the address it listens on

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{self.name}.log"
        self.pid: int | None = None
        self._process: subprocess.Popen | None = None

    def command(self) -> tuple[list[str], dict[str, str]]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def prepare(self) -> None:
        """One-time set-up before the first start (formatting storage, config files)."""

    def ports(self) -> list[int]:
        return []

    def start(self) -> None:
        if self.running():
            return
        # Readiness probes the port, so a stranger on it would pass for this server.
        busy = [port for port in self.ports() if port_open(port, host=self.host)]
        if busy:
            raise StackError(f"{self.name} cannot start: port {busy[0]} is already in use")
        cmd, env = self.command()
        with open(self.log_path, "ab") as log:
            self._process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **env},
                cwd=self.workdir,
                start_new_session=True,
            )
        self.pid = self._process.pid
        self.wait_ready()

    def wait_ready(self) -> None:
        if poll(self._ready_unless_exited, Backoff(0.25), self.start_timeout):
            return
        self.stop()
        raise StackError(
            f"{self.name} was not ready after {self.start_timeout:.0f}s; "
            f"last lines of {self.log_path}:\n{self.log_tail()}"
        )

    def _ready_unless_exited(self) -> bool:
        if not self.running():
            raise StackError(
                f"{self.name} exited during start-up; last lines of {self.log_path}:\n{self.log_tail()}"
            )
        return self.ready()

    def running(self) -> bool:
        return (
            self.pid is not None
            and pid_alive(self.pid)
            and (self._process is None or self._process.poll() is None)
        )

    def stop(self) -> None:
        if self.pid is not None:
            stop_process_group(self.pid)
            if self._process is not None:
                self._process.wait(timeout=5)
        self.pid = None
        self._process = None

    def kill(self) -> None:
        """SIGKILL the whole group at once, as a crash would (for fault tests)."""
        if self.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, signal.SIGKILL)
            if self._process is not None:
                self._process.wait(timeout=10)
        self.pid = None
        self._process = None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"


LOG4J2_CONFIG = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
"""


SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class ScramUser:
    """A SASL/SCRAM identity on the secured broker."""

    name: str
    password: str = field(repr=False)

    @classmethod
    def generate(cls, name: str) -> ScramUser:
        return cls(name, secrets.token_urlsafe(32))


class KafkaServer(ManagedServer):
    """Apache Kafka 4.x in KRaft mode: one node that is both broker and controller.

    With `tls`, clients and the broker itself speak SASL_SSL with SCRAM-SHA-512 (users created at
    format time), and the controller listener is TLS with client certificates required, so the
    node has no unauthenticated port. `user` is the clients' identity (generated when omitted).
    """

    name = "kafka"

    def __init__(
        self, workdir: Path, port: int | None = None, controller_port: int | None = None,
        tls: Certificates | None = None, user: ScramUser | None = None, host: str = HOST,
    ) -> None:  # fmt: skip
        super().__init__(workdir)
        self.host = host
        self.port = port or free_port()
        self.controller_port = controller_port or free_port()
        self.properties = workdir / "server.properties"
        self.tls = tls
        # Inter-broker traffic has its own identity, so the clients' password is in no broker file.
        self.broker_user = ScramUser.generate("broker") if tls else None
        self.user = user or (ScramUser.generate("app") if tls else None)

    def ports(self) -> list[int]:
        return [self.port, self.controller_port]

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def listener(self) -> str:
        return "SASL_SSL" if self.tls else "PLAINTEXT"

    def client_properties(self) -> dict[str, str]:
        """librdkafka properties (beyond bootstrap.servers) a client needs to reach this broker."""
        if self.tls is None or self.user is None:
            return {}
        return {
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": self.user.name,
            "sasl.password": self.user.password,
            "ssl.ca.location": str(self.tls.ca_file),
        }

    def _security_properties(self) -> list[str]:
        if self.tls is None or self.broker_user is None:
            return ["listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT"]
        jaas = (
            "org.apache.kafka.common.security.scram.ScramLoginModule required "
            f'username="{self.broker_user.name}" password="{self.broker_user.password}";'
        )
        return [
            "listener.security.protocol.map=CONTROLLER:SSL,SASL_SSL:SASL_SSL",
            f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
            f"sasl.mechanism.inter.broker.protocol={SCRAM_MECHANISM}",
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config={jaas}",
            # Kafka 4 reads PEM directly: one file with the key and chain, the CA as truststore.
            "ssl.keystore.type=PEM",
            f"ssl.keystore.location={self.tls.keystore_file}",
            "ssl.truststore.type=PEM",
            f"ssl.truststore.location={self.tls.ca_file}",
            # Only a holder of a CA-signed certificate (the broker itself) may reach the controller.
            "listener.name.controller.ssl.client.auth=required",
        ]

    def _scram_arguments(self) -> list[str]:
        users = [u for u in (self.broker_user, self.user) if u is not None]
        return [
            arg
            for u in users
            for arg in ("--add-scram", f'{SCRAM_MECHANISM}=[name={u.name},password="{u.password}"]')
        ]

    def prepare(self) -> None:
        data = self.workdir / "data"
        lines = [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.bootstrap.servers={self.host}:{self.controller_port}",
            f"listeners={self.listener}://{self.host}:{self.port},CONTROLLER://{self.host}:{self.controller_port}",
            f"advertised.listeners={self.listener}://{self.host}:{self.port},"
            f"CONTROLLER://{self.host}:{self.controller_port}",
            "controller.listener.names=CONTROLLER",
            f"inter.broker.listener.name={self.listener}",
            *self._security_properties(),
        ]
        write_private(
            self.properties,
            "\n".join(
                [
                    *lines,
                    f"log.dirs={data}",
                    "num.partitions=2",
                    "auto.create.topics.enable=false",
                    # Single node: every internal topic has one replica, and few partitions start faster.
                    "offsets.topic.replication.factor=1",
                    "offsets.topic.num.partitions=4",
                    "transaction.state.log.replication.factor=1",
                    "transaction.state.log.min.isr=1",
                    "share.coordinator.state.topic.replication.factor=1",
                    "share.coordinator.state.topic.min.isr=1",
                    "group.initial.rebalance.delay.ms=0",
                    "",
                ]
            ),
        )
        (self.workdir / "log4j2.properties").write_text(LOG4J2_CONFIG)
        cmd, env = self._java(
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            uuid.uuid4().hex[:22],
            "-c",
            str(self.properties),
            *self._scram_arguments(),
        )
        result = subprocess.run(cmd, env={**os.environ, **env}, capture_output=True, text=True)
        if result.returncode != 0:
            raise StackError(f"kafka storage format failed:\n{result.stdout}{result.stderr}")

    def _java(self, main_class: str, *args: str) -> tuple[list[str], dict[str, str]]:
        libs = provision.kafka_libs()
        # Tuned for one broker on 2 shared cores. Serial GC: G1's young pauses (90-130 ms with its
        # defaults, up to 110 ms with Kafka's MaxGCPauseMillis=20) set the reply p99. A young
        # collection stops the broker for 15-30 ms whatever the young generation's size (the
        # survivors are the same in-flight requests), so a large one makes them rare: every 3 s
        # with 48 MiB at 3,375 requests/s, every ~25 s with 384 MiB (p99 of 8 s steps at that
        # rate: 45-143 ms before, 35-70 ms after). C1 only (TieredStopAtLevel=1): C2 compilation
        # of the broker's hot paths took more CPU over the first minutes than serving requests did.
        cmd = [
            "java", "-Xms1g", "-Xmx1g", "-XX:+UseSerialGC", "-Xmn384m",
            "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.workdir / 'log4j2.properties'}",
            "-cp", f"{libs}/*", main_class, *args,
        ]  # fmt: skip
        return cmd, {}

    def command(self) -> tuple[list[str], dict[str, str]]:
        return self._java("kafka.Kafka", str(self.properties))

    def ready(self) -> bool:
        if not port_open(self.port, host=self.host):
            return False
        # The port opens before the broker has joined the quorum; metadata proves it serves.
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0, **self.client_properties()})
        try:
            return bool(admin.list_topics(timeout=2).brokers)
        except Exception:
            return False


class MinioServer(ManagedServer):
    """MinIO built from source, on loopback, with generated root credentials; HTTPS with `tls`."""

    name = "minio"

    def __init__(
        self, workdir: Path, port: int | None = None, console_port: int | None = None,
        access_key: str | None = None, secret_key: str | None = None, tls: Certificates | None = None,
        host: str = HOST,
    ) -> None:  # fmt: skip
        super().__init__(workdir)
        self.host = host
        self.port = port or free_port()
        self.console_port = console_port or free_port()
        self.access_key = access_key or "recommender-" + secrets.token_hex(4)
        self.secret_key = secret_key or secrets.token_urlsafe(24)
        self.tls = tls

    def ports(self) -> list[int]:
        return [self.port, self.console_port]

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.endpoint}"

    def command(self) -> tuple[list[str], dict[str, str]]:
        cmd = [
            str(provision.minio_binary()), "server", str(self.workdir / "data"),
            "--address", self.endpoint, "--console-address", f"{self.host}:{self.console_port}", "--quiet",
        ]  # fmt: skip
        if self.tls:
            # MinIO serves HTTPS when its certs dir holds public.crt and private.key.
            certs = self.workdir / "certs"
            certs.mkdir(exist_ok=True)
            (certs / "public.crt").write_bytes(self.tls.cert_file.read_bytes())
            write_private(certs / "private.key", self.tls.key_file.read_text())
            cmd += ["--certs-dir", str(certs)]
        env = {
            "MINIO_ROOT_USER": self.access_key,
            "MINIO_ROOT_PASSWORD": self.secret_key,
            "MINIO_BROWSER": "off",
            "MINIO_UPDATE": "off",
        }
        return cmd, env

    def ready(self) -> bool:
        # /minio/health/live and /ready answer 200 before the object layer can serve.
        verify = ssl.create_default_context(cafile=str(self.tls.ca_file)) if self.tls else True
        response = http_get(f"{self.url}/minio/health/cluster", timeout=2, verify=verify)
        return response is not None and response.status_code == 200


@dataclass(frozen=True)
class StackInfo:
    """What a client needs to reach the stack; also the state file of `recommender-local stack`."""

    workdir: str
    kafka_bootstrap: str
    kafka_pid: int
    kafka_controller_port: int
    minio_endpoint: str
    minio_pid: int
    minio_console_port: int
    minio_access_key: str
    minio_secret_key: str = field(repr=False)
    # Set for a secured stack (SASL_SSL Kafka, HTTPS MinIO); None in the plain one and old state files.
    ca_file: str | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: str | None = field(default=None, repr=False)

    @property
    def secure(self) -> bool:
        return self.ca_file is not None

    def env(self) -> dict[str, str]:
        """Environment variables that point every component at this stack (README "Configuration")."""
        env = {
            "KAFKA_BOOTSTRAP_SERVERS": self.kafka_bootstrap,
            "MINIO_ENDPOINT": self.minio_endpoint,
            "MINIO_ACCESS_KEY": self.minio_access_key,
            "MINIO_SECRET_KEY": self.minio_secret_key,
            "MINIO_SECURE": "false",
        }
        if self.ca_file is None or self.kafka_sasl_username is None or self.kafka_sasl_password is None:
            return env
        return env | {
            "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
            "KAFKA_SASL_MECHANISM": SCRAM_MECHANISM,
            "KAFKA_SASL_USERNAME": self.kafka_sasl_username,
            "KAFKA_SASL_PASSWORD": self.kafka_sasl_password,
            "KAFKA_SSL_CA_LOCATION": self.ca_file,
            "MINIO_SECURE": "true",
            "MINIO_CA_FILE": self.ca_file,
        }


class Stack:
    """Kafka and MinIO together, under one work directory.

    `secure=True` generates a CA and a loopback certificate under `<workdir>/tls` and starts Kafka
    with SASL_SSL (SCRAM-SHA-512) and MinIO with HTTPS, both presenting that certificate.
    """

    def __init__(self, workdir: Path, secure: bool = False, host: str = HOST) -> None:
        self.workdir = workdir
        self.tls = generate_certificates(workdir / "tls") if secure else None
        self.kafka = KafkaServer(workdir / "kafka", tls=self.tls, host=host)
        self.minio = MinioServer(workdir / "minio", tls=self.tls, host=host)

    def up(self) -> StackInfo:
        try:
            if not self.kafka.properties.exists():
                self.kafka.prepare()
            self.kafka.start()
            self.minio.start()
        except BaseException:
            self.down()
            raise
        return self.info()

    def down(self) -> None:
        self.minio.stop()
        self.kafka.stop()

    def info(self) -> StackInfo:
        if self.kafka.pid is None or self.minio.pid is None:
            raise StackError("the stack is not running")
        user = self.kafka.user
        return StackInfo(
            workdir=str(self.workdir),
            kafka_bootstrap=self.kafka.bootstrap,
            kafka_pid=self.kafka.pid,
            kafka_controller_port=self.kafka.controller_port,
            minio_endpoint=self.minio.endpoint,
            minio_pid=self.minio.pid,
            minio_console_port=self.minio.console_port,
            minio_access_key=self.minio.access_key,
            minio_secret_key=self.minio.secret_key,
            ca_file=str(self.tls.ca_file) if self.tls else None,
            kafka_sasl_username=user.name if user else None,
            kafka_sasl_password=user.password if user else None,
        )

    def __enter__(self) -> StackInfo:
        return self.up()

    def __exit__(self, *exc: object) -> None:
        self.down()


def write_state(info: StackInfo, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # it holds credentials
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(info), handle, indent=2)


def read_state(path: Path) -> StackInfo | None:
    try:
        return StackInfo(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
