# SPDX-License-Identifier: MIT
"""A real Apache Kafka broker for the tests: 3.9.1, KRaft mode, from Maven jars.

The mock broker (ttb-broker, librdkafka's mock cluster) is fast and injects
faults, but it is not Kafka: no real group protocol, no transactions, no log.
ApacheKafka runs the real thing:

- classpath(): the broker's runtime classpath. tests/kafka/pom.xml names the
  two artifacts (kafka_2.13 and an slf4j binding); Maven resolves them
  (`dependency:build-classpath`), downloading into ~/.m2 on the first run
  only. The resolved classpath is cached under ~/.cache/tinytown-bridge (or
  $TTB_CACHE_DIR), keyed by the pom's hash, so later runs start no Maven at
  all. A lock file keeps two test processes from resolving at once.
- ApacheKafka: one combined broker+controller on two free loopback ports in a
  fresh directory under $TMPDIR, storage formatted with a cluster id made
  here, started with a small heap, and ready when an admin client sees the
  broker in its metadata. It gets SIGTERM if the thread that started it dies
  (parent-death signal, as the other harnesses); stop() sends SIGTERM and
  SIGKILL after a bound, to its own pid only.
- create_topics(): with confluent-kafka's AdminClient (Debian's
  python3-confluent-kafka), then waits until every partition has a leader:
  unlike the mock, a real broker has no topic until someone creates it
  (auto-creation is off here, as it is in most production clusters).

- listeners / scram: extra listeners beside PLAINTEXT (e.g. SASL_SSL, an
  SSL listener requiring client certificates), each on a free port of its
  own (`address(name)`), and SCRAM users written at format time
  (StorageTool --add-scram). The harness's own clients keep PLAINTEXT, as
  do the controller and inter-broker listeners; TLS and SASL settings come
  through `properties`.

Set TTB_KEEP_KAFKA=1 to keep the broker's directory (server.log, the data).
The shell entry tests/lib/start-kafka wraps this for scripts and C tests.
"""

import atexit
import base64
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid

from harness import free_port, pdeathsig_preexec

KAFKA_VERSION = "3.9.1"
START_TIMEOUT = 90.0     # a cold JVM on two busy cores
FORMAT_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0
MAVEN_TIMEOUT = 900.0    # the first run downloads about 60 MB
TOPIC_TIMEOUT = 30.0
PORT_ATTEMPTS = 5
DEFAULT_HEAP = "384m"

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
POM = os.path.join(SOURCE_DIR, "tests", "kafka", "pom.xml")

_live_brokers = set()


class ApacheKafkaError(RuntimeError):
    """The broker could not be prepared, started, or asked for something."""


def cache_dir():
    base = os.environ.get("TTB_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "tinytown-bridge")
    path = os.path.join(base, "apache-kafka-" + KAFKA_VERSION)
    os.makedirs(path, exist_ok=True)
    return path


def _need(tool):
    path = shutil.which(tool)
    if not path:
        raise ApacheKafkaError("%s not found: run scripts/deps (it installs a JDK and Maven "
                               "from Debian)" % tool)
    return path


def _cached_classpath(path):
    """The cached classpath if every jar on it still exists, else None."""
    try:
        with open(path) as f:
            cp = f.read().strip()
    except OSError:
        return None
    jars = cp.split(os.pathsep) if cp else []
    if not jars or not all(os.path.isfile(j) for j in jars):
        return None
    return cp


def classpath():
    """The broker's runtime classpath (a string for java -cp). Resolves it
    with Maven the first time (downloading the jars), from the cache after."""
    with open(POM, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()[:16]
    d = cache_dir()
    cp_file = os.path.join(d, "classpath-%s.txt" % digest)
    cp = _cached_classpath(cp_file)
    if cp:
        return cp
    mvn = _need("mvn")
    with open(os.path.join(d, "maven.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)   # another test process may be resolving
        cp = _cached_classpath(cp_file)
        if cp:
            return cp
        sys.stderr.write("apache_kafka: resolving Apache Kafka %s with Maven (the first run "
                         "downloads the jars into ~/.m2)\n" % KAFKA_VERSION)
        started = time.monotonic()
        tmp = cp_file + ".tmp"
        try:
            p = subprocess.run([mvn, "-q", "-B", "-Dstyle.color=never", "-f", POM,
                                "dependency:build-classpath", "-Dmdep.outputFile=" + tmp],
                               stdin=subprocess.DEVNULL, capture_output=True,
                               timeout=MAVEN_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise ApacheKafkaError("mvn dependency:build-classpath took over %.0fs"
                                   % MAVEN_TIMEOUT)
        if p.returncode != 0 or _cached_classpath(tmp) is None:
            out = (p.stdout + p.stderr).decode("utf-8", "replace")
            raise ApacheKafkaError("mvn dependency:build-classpath failed (status %d):\n%s"
                                   % (p.returncode, out[-3000:]))
        os.replace(tmp, cp_file)
        sys.stderr.write("apache_kafka: resolved in %.0fs\n" % (time.monotonic() - started))
        return _cached_classpath(cp_file)


def _cluster_id():
    # Kafka's Uuid.toString(): 16 random bytes, base64url without padding.
    # Like Uuid.randomUuid(), draw again when the id starts with "-": the
    # storage tool's argument parser would take it for an option.
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):
            return cid


def _admin(bootstrap, **extra):
    from confluent_kafka.admin import AdminClient  # python3-confluent-kafka
    conf = {"bootstrap.servers": bootstrap, "socket.timeout.ms": 5000,
            "log_level": 3}
    conf.update(extra)
    return AdminClient(conf)


class ApacheKafka:
    """A private Apache Kafka broker (KRaft, one node). Use as a context
    manager or call stop(). Start it from the main thread (the parent-death
    signal follows the starting thread).

    topics: specs "NAME:PARTITIONS" created once the broker is up.
    heap: the JVM's -Xmx. die_with_parent=False is for tools that start a
    broker and exit (tests/lib/start-kafka). properties: extra or overriding
    server.properties lines as a dict. listeners: extra listeners as
    {NAME: security protocol}, e.g. {"SASL_SSL": "SASL_SSL", "MTLS": "SSL"}.
    scram: --add-scram arguments for the storage format, e.g.
    "SCRAM-SHA-512=[name=bridge,password=secret]"."""

    def __init__(self, topics=(), heap=DEFAULT_HEAP, properties=None, die_with_parent=True,
                 start=True, listeners=None, scram=()):
        self.listeners = dict(listeners or {})
        self.scram = list(scram)
        self.ports = {}
        self.topics = list(topics)
        self.heap = heap
        self.properties = dict(properties or {})
        self.die_with_parent = die_with_parent
        self.dir = None
        self.proc = None
        self.port = None
        self.controller_port = None
        self.returncode = None
        if start:
            self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def bootstrap(self):
        return "127.0.0.1:%d" % self.port

    def address(self, listener):
        """host:port of one of the extra listeners."""
        return "127.0.0.1:%d" % self.ports[listener]

    @property
    def log_path(self):
        return os.path.join(self.dir, "server.log")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # ---- start -----------------------------------------------------------

    def _server_properties(self):
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": "1@127.0.0.1:%d" % self.controller_port,
            "listeners": "PLAINTEXT://127.0.0.1:%d,CONTROLLER://127.0.0.1:%d"
                         % (self.port, self.controller_port),
            "advertised.listeners": "PLAINTEXT://127.0.0.1:%d" % self.port,
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": os.path.join(self.dir, "data"),
            "metadata.log.dir": os.path.join(self.dir, "meta"),
            # One node: every internal topic with one replica, and small.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "1",
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "num.partitions": "1",
            # The first group join is answered at once, not after 3 s.
            "group.initial.rebalance.delay.ms": "0",
            # As in most production clusters: topics exist because someone made them.
            "auto.create.topics.enable": "false",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "log.cleaner.enable": "false",
            "log.retention.check.interval.ms": "3600000",
        }
        for name, protocol in self.listeners.items():
            where = "%s://127.0.0.1:%d" % (name, self.ports[name])
            props["listeners"] += "," + where
            props["advertised.listeners"] += "," + where
            props["listener.security.protocol.map"] += ",%s:%s" % (name, protocol)
        props.update(self.properties)
        return "".join("%s=%s\n" % kv for kv in props.items())

    def _write_config(self):
        with open(os.path.join(self.dir, "server.properties"), "w") as f:
            f.write(self._server_properties())
        with open(os.path.join(self.dir, "log4j.properties"), "w") as f:
            f.write("log4j.rootLogger=INFO, file\n"
                    "log4j.appender.file=org.apache.log4j.FileAppender\n"
                    "log4j.appender.file.File=%s\n"
                    "log4j.appender.file.layout=org.apache.log4j.PatternLayout\n"
                    "log4j.appender.file.layout.ConversionPattern=[%%d] %%p %%m (%%c)%%n\n"
                    "log4j.logger.kafka.request.logger=WARN\n"
                    "log4j.logger.state.change.logger=WARN\n"
                    "log4j.logger.org.apache.kafka.clients=WARN\n" % self.log_path)

    def _java(self, cp, main, *args, heap=None):
        return [_need("java"), "-Xmx" + (heap or self.heap), "-Xss1m",
                "-XX:+UseSerialGC", "-XX:-UsePerfData", "-Djava.awt.headless=true",
                "-Djava.io.tmpdir=" + self.dir,
                "-Dlog4j.configuration=file:" + os.path.join(self.dir, "log4j.properties"),
                "-cp", cp, main] + list(args)

    def start(self):
        cp = classpath()
        base = os.environ.get("TMPDIR") or "/tmp"
        self.dir = tempfile.mkdtemp(prefix="ttb-kafka-", dir=base)
        _live_brokers.add(self)
        try:
            for _ in range(PORT_ATTEMPTS):
                self.port = free_port()
                self.controller_port = free_port()
                self.ports = {name: free_port() for name in self.listeners}
                taken = [self.port, self.controller_port] + list(self.ports.values())
                if len(set(taken)) != len(taken):
                    continue
                if self._format_and_run(cp):
                    if self.topics:
                        self.create_topics(self.topics)
                    return self
                sys.stderr.write("apache_kafka: port %d or %d was taken, retrying\n"
                                 % (self.port, self.controller_port))
            raise ApacheKafkaError("no free ports after %d attempts" % PORT_ATTEMPTS)
        except BaseException:
            self.stop()
            raise

    def _format_and_run(self, cp):
        """True when up; False when a port was taken (caller retries)."""
        for sub in ("data", "meta"):
            shutil.rmtree(os.path.join(self.dir, sub), ignore_errors=True)
        self._write_config()
        scram = [arg for user in self.scram for arg in ("--add-scram", user)]
        fmt = subprocess.run(self._java(cp, "kafka.tools.StorageTool", "format",
                                        "-t", _cluster_id(), "-c",
                                        os.path.join(self.dir, "server.properties"),
                                        *scram, heap="256m"),
                             cwd=self.dir, stdin=subprocess.DEVNULL, capture_output=True,
                             timeout=FORMAT_TIMEOUT)
        if fmt.returncode != 0:
            raise ApacheKafkaError("kafka StorageTool format failed (status %d):\n%s"
                                   % (fmt.returncode,
                                      (fmt.stdout + fmt.stderr).decode("utf-8", "replace")[-3000:]))
        return self._run(cp)

    def _run(self, cp):
        """Starts the JVM on the formatted storage; True when it answers,
        False when a port was taken."""
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        with open(os.path.join(self.dir, "stdout.log"), "ab") as out:
            self.proc = subprocess.Popen(
                self._java(cp, "kafka.Kafka", os.path.join(self.dir, "server.properties")),
                cwd=self.dir, stdin=subprocess.DEVNULL, stdout=out, stderr=out, close_fds=True,
                preexec_fn=pdeathsig_preexec(os.getpid()) if self.die_with_parent else None)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                tail = self.log_tail(offset)
                if "Address already in use" in tail or "BindException" in tail:
                    return False
                raise ApacheKafkaError("Kafka exited during startup (status %s); log tail:\n%s"
                                       % (code, tail))
            if self._answers():
                return True
            if time.monotonic() >= deadline:
                raise ApacheKafkaError("Kafka on port %d was not ready within %.0fs; log "
                                       "tail:\n%s" % (self.port, START_TIMEOUT,
                                                      self.log_tail(offset)))
            time.sleep(0.2)

    def restart(self):
        """Stops the broker (SIGTERM, a controlled shutdown) and starts it
        again on the same ports and data, as an operator's rolling restart."""
        self._terminate()
        if not self._run(classpath()):
            raise ApacheKafkaError("port %d or %d was taken during a restart"
                                   % (self.port, self.controller_port))

    def _answers(self):
        """Ready: a metadata request answers and names this broker. A few
        seconds' wait for the connection would hide a dead JVM, so the
        request is short and retried by the caller."""
        try:
            # A plain connect first: librdkafka would log every refusal.
            socket.create_connection(("127.0.0.1", self.port), timeout=1.0).close()
            md = _admin(self.bootstrap).list_topics(timeout=1.0)
        except Exception:  # KafkaException: transport failure, timeout
            return False
        return 1 in md.brokers

    # ---- topics ----------------------------------------------------------

    def create_topics(self, specs, timeout=TOPIC_TIMEOUT):
        """Create topics from "NAME:PARTITIONS" specs and wait until each
        partition has a leader. An existing topic is an error."""
        from confluent_kafka.admin import NewTopic
        new = []
        for spec in specs:
            name, _, parts = spec.partition(":")
            new.append(NewTopic(name, num_partitions=int(parts or 1), replication_factor=1))
        admin = _admin(self.bootstrap)
        futures = admin.create_topics(new, operation_timeout=timeout, request_timeout=timeout)
        for name, fut in futures.items():
            try:
                fut.result(timeout)
            except Exception as e:
                raise ApacheKafkaError("creating topic %s: %s" % (name, e))
        want = {t.topic: t.num_partitions for t in new}

        def led():
            md = admin.list_topics(timeout=2.0)
            for name, n in want.items():
                t = md.topics.get(name)
                if t is None or t.error is not None or len(t.partitions) != n:
                    return False
                if any(p.leader < 0 for p in t.partitions.values()):
                    return False
            return True
        deadline = time.monotonic() + timeout
        while not led():
            if time.monotonic() >= deadline:
                raise ApacheKafkaError("topics %s have no leaders after %.0fs"
                                       % (sorted(want), timeout))
            time.sleep(0.05)

    def delete_topics(self, names, timeout=TOPIC_TIMEOUT):
        admin = _admin(self.bootstrap)
        for name, fut in admin.delete_topics(list(names), operation_timeout=timeout).items():
            fut.result(timeout)

    # ---- logs and stop -----------------------------------------------------

    def log_tail(self, offset=0, limit=4096):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(offset, f.tell() - limit))
                return f.read().decode("utf-8", "replace")
        except (OSError, TypeError):
            return "(no log)"

    def _terminate(self):
        # Only our own Popen is signalled; it is not reaped before wait()
        # returns, so the pid cannot have been recycled.
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                sys.stderr.write("apache_kafka: pid %d ignored SIGTERM for %.0fs, killing\n"
                                 % (self.proc.pid, STOP_TIMEOUT))
                self.proc.kill()
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.proc = None

    def stop(self):
        """Stop the broker and remove its directory. Idempotent; returns the
        exit status (negative: killed by that signal)."""
        self._terminate()
        if self.dir and os.path.isdir(self.dir):
            if os.environ.get("TTB_KEEP_KAFKA", "") not in ("", "0"):
                sys.stderr.write("apache_kafka: keeping %s (TTB_KEEP_KAFKA)\n" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        self.dir = None
        _live_brokers.discard(self)
        return self.returncode


@atexit.register
def _stop_forgotten_brokers():
    for broker in list(_live_brokers):
        if broker.die_with_parent:
            broker.stop()


_shared = None
_shared_options = {}


def shared_broker(**options):
    """One broker for the whole test process (a module), started on first
    use and stopped at exit: tests isolate themselves with their own topic
    names and group ids, not their own JVM. A broker a test stopped is
    replaced by a fresh one, with the same options. `options` (ApacheKafka's:
    listeners, scram, properties) apply to the broker this call starts; a
    module that needs them calls first."""
    global _shared, _shared_options
    if _shared is None or _shared.proc is None or _shared.proc.poll() is not None:
        if _shared is not None:
            _shared.stop()
        _shared_options = options or _shared_options
        _shared = ApacheKafka(**_shared_options)
    return _shared
