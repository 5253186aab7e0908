# SPDX-License-Identifier: MIT
"""Black-box helpers for the tinytown-bridge binary.

A `Stack` is what a user runs: a private redis-server, a Kafka broker with the
bridge's topics, and one or more `tinytown-bridge` processes configured only
through their command line, as an operator would. Tests talk to it with
independent clients: kafka-python for Kafka and python3-redis for Redis.

Two brokers: `Stack(kafka="mock")` starts a ttb-broker (librdkafka's mock
cluster) per stack, with the default topic names; `Stack(kafka="apache")`
uses one real Apache Kafka broker per test process (apache_kafka.py) and
gives each stack its own topics (`sN-xxxx.tinytown.commands`, ...) and
consumer group, so stacks never see each other's records or offsets. The
default comes from $TTB_KAFKA (mock unless set; meson sets it to apache for
the real-broker runs). Tests use `s.commands`, `s.results`, `s.events` and
`s.dlq` for topic names, and `s.kafka.bootstrap` for the address.
"""
import itertools
import json
import os
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import uuid

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from harness import RedisServer, wait_until
from kafka_harness import KafkaBroker

KAFKA_KINDS = ("mock", "apache")
_stack_numbers = itertools.count(1)

COMMANDS = "tinytown.commands"
RESULTS = "tinytown.results"
EVENTS = "tinytown.events"
DLQ = "tinytown.commands.dlq"


def bridge_path():
    return os.path.join(os.environ["TTB_BUILD_DIR"], "tinytown-bridge")


def kafka_kind():
    """The broker black-box stacks use by default: $TTB_KAFKA, else mock."""
    kind = os.environ.get("TTB_KAFKA") or "mock"
    if kind not in KAFKA_KINDS:
        raise ValueError("TTB_KAFKA=%r: expected one of %s" % (kind, ", ".join(KAFKA_KINDS)))
    return kind


class Bridge:
    """One tinytown-bridge process; its stderr goes to a log file."""

    def __init__(self, stack, extra=(), env=None):
        self.stack = stack
        self.extra = list(extra)
        self.env = env
        self.proc = None
        fd, self.log_path = tempfile.mkstemp(prefix="ttb-bridge-", suffix=".log",
                                             dir=os.environ.get("TMPDIR") or "/tmp")
        os.close(fd)
        self.start()

    def argv(self):
        s = self.stack
        args = [bridge_path(),
                "--set", "redis.url=" + s.redis.url,
                "--set", "kafka.brokers=" + s.kafka.bootstrap,
                "--set", "bridge.towns=demo,other",
                "--set", "bridge.default_town=demo",
                "--set", "bridge.wait_check_interval_ms=50",
                "--set", "log.level=debug",
                "--set", "log.summary_interval_s=1",
                # The mock broker answers fetches only after fetch.wait.max.ms.
                "--set", "kafka.consumer_properties=fetch.wait.max.ms=10,session.timeout.ms=6000,"
                         "heartbeat.interval.ms=500",
                "--set", "kafka.producer_properties=socket.connection.setup.timeout.ms=3000,"
                         "reconnect.backoff.max.ms=1000"]
        return args + s.kafka_args() + self.extra

    def start(self):
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv(), stdin=subprocess.DEVNULL,
                                     stdout=log, stderr=log, env=env)
        log.close()
        return self

    def log_text(self):
        with open(self.log_path, "rb") as f:
            return f.read().decode("utf-8", "replace")

    def wait_log(self, needle, timeout=30, after=0):
        wait_until(lambda: needle in self.log_text()[after:], timeout,
                   what=lambda: "bridge log line %r\n--- log tail ---\n%s" % (needle, self.tail()))

    def tail(self, n=40):
        return "\n".join(self.log_text().splitlines()[-n:])

    def assigned(self, timeout=30):
        self.wait_log("partitions assigned", timeout)

    def signal(self, sig):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout):
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout=20):
        """SIGTERM and wait; returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def kill(self):
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class Stack:
    """redis-server + a Kafka broker (+ bridges). Use as a context manager.
    kafka: "mock" or "apache" (default: kafka_kind())."""

    def __init__(self, partitions=4, redis_args=None, kafka=None, brokers=1, redis_tls=None):
        self.kind = kafka or kafka_kind()
        self.redis = RedisServer(extra_args=redis_args, tls=redis_tls)  # tls: see RedisServer
        if self.kind == "apache":
            import apache_kafka  # needs python3-confluent-kafka and a JVM: only here
            prefix = "s%d-%s." % (next(_stack_numbers), uuid.uuid4().hex[:6])
            self.group_id = prefix + "bridge"
            self.kafka = apache_kafka.shared_broker()
        else:
            prefix = ""
            self.group_id = None
            self.kafka = None
        self.commands, self.results = prefix + COMMANDS, prefix + RESULTS
        self.events, self.dlq = prefix + EVENTS, prefix + DLQ
        topics = ["%s:%d" % (self.commands, partitions), "%s:4" % self.results,
                  "%s:2" % self.events, "%s:1" % self.dlq]
        if self.kind == "apache":
            self.kafka.create_topics(topics)
        else:
            self.kafka = KafkaBroker(topics=topics, brokers=brokers)
        self.bridges = []
        # On the real broker, retries (one request in flight, so order holds):
        # it answers NOT_LEADER while a just-created topic's metadata settles.
        # None on the mock, whose injected produce errors are meant for the
        # bridge, not to be used up by the harness's own retries.
        retries = 5 if self.kind == "apache" else 0
        self.producer = KafkaProducer(bootstrap_servers=self.kafka.bootstrap, acks="all",
                                      linger_ms=0, retries=retries, retry_backoff_ms=200,
                                      max_in_flight_requests_per_connection=1)
        self.r = self.redis.client()
        self._results = None
        self.seen = {}  # command id -> [result dicts with key/headers/value]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def bridge(self, extra=(), env=None, wait_assigned=True):
        b = Bridge(self, extra, env)
        self.bridges.append(b)
        if wait_assigned:
            b.assigned()
        return b

    def kafka_args(self):
        """--set arguments naming this stack's topics and group, for the
        bridge and `tinytown-bridge send` (none on the mock: the defaults)."""
        if self.kind != "apache":
            return []
        return ["--set", "kafka.commands_topic=" + self.commands,
                "--set", "kafka.results_topic=" + self.results,
                "--set", "kafka.events_topic=" + self.events,
                "--set", "kafka.dlq_topic=" + self.dlq,
                "--set", "kafka.group_id=" + self.group_id]

    def close(self):
        for b in self.bridges:
            b.kill()
        if self._results:
            self._results.close()
        self.producer.close()
        if self.kind == "apache":
            # The broker is shared by the module: drop this stack's topics only.
            if self.kafka.proc is not None:
                try:
                    self.kafka.delete_topics([self.commands, self.results, self.events,
                                              self.dlq], timeout=10)
                except Exception:  # a stopped broker: the next stack gets a new one
                    pass
        else:
            self.kafka.stop()
        self.redis.stop()

    # ---- commands --------------------------------------------------------

    def send(self, op=None, args=None, cid=None, town=None, raw=None, key=None, headers=None):
        """Produces a command (or raw bytes); returns its id."""
        if raw is None:
            cid = cid or "t-" + uuid.uuid4().hex[:12]
            doc = {"id": cid, "op": op}
            if town:
                doc["town"] = town
            if args is not None:
                doc["args"] = args
            raw = json.dumps(doc).encode()
        if key is None and args and isinstance(args, dict) and "agent" in args:
            key = str(args["agent"]).encode()
        sent = self.producer.send(self.commands, value=raw, key=key, headers=headers or [])
        self.producer.flush()
        sent.get(timeout=30)  # a failed produce is the harness's failure, not a lost command
        return cid

    # ---- results ---------------------------------------------------------

    def _consumer(self, topic):
        c = KafkaConsumer(bootstrap_servers=self.kafka.bootstrap, fetch_max_wait_ms=10,
                          enable_auto_commit=False, consumer_timeout_ms=50)
        parts = [TopicPartition(topic, p) for p in c.partitions_for_topic(topic)]
        c.assign(parts)
        c.seek_to_beginning(*parts)
        return c

    def poll_results(self):
        if self._results is None:
            self._results = self._consumer(self.results)
        for m in self._results:
            rec = {"key": m.key, "value": m.value, "headers": dict(m.headers or []),
                   "doc": json.loads(m.value), "partition": m.partition, "offset": m.offset}
            self.seen.setdefault(rec["doc"]["id"], []).append(rec)

    def result(self, cid, timeout=30):
        """The (first) result record for command id `cid` (None: the null id)."""
        def have():
            self.poll_results()
            return cid in self.seen
        wait_until(have, timeout, interval=0.02,
                   what=lambda: "result for %s\n--- bridge log ---\n%s" % (
                       cid, self.bridges[-1].tail() if self.bridges else ""))
        return self.seen[cid][0]

    def results_for(self, ids, timeout=60):
        missing = set(ids)

        def have():
            self.poll_results()
            missing.difference_update([i for i in list(missing) if i in self.seen])
            return not missing
        wait_until(have, timeout, interval=0.05,
                   what=lambda: "results for %d ids (e.g. %s)" % (len(missing), sorted(missing)[:3]))

    def call(self, op, args=None, town=None, timeout=30):
        """Sends a command and returns its result document."""
        return self.result(self.send(op, args, town=town), timeout)["doc"]

    def dead_letters(self, count, timeout=30):
        c = self._consumer(self.dlq)
        got = []
        deadline = time.time() + timeout
        while len(got) < count and time.time() < deadline:
            for m in c:
                got.append({"key": m.key, "value": m.value, "headers": dict(m.headers or [])})
        c.close()
        return got


def http_get(url):
    """(status, body) of a GET on the bridge's HTTP endpoint; an error
    status is an answer too, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def ok(doc):
    """The `result` of a result document that must be ok."""
    assert doc["ok"] is True, doc
    return doc["result"]


def err(doc, code):
    """The message of a result document that must be an error with `code`."""
    assert doc["ok"] is False and doc["error"]["code"] == code, doc
    return doc["error"]["message"]


class EventReader:
    """Reads a stack's events topic from the beginning, remembering every
    record (key, value, headers as text, tt-event-id, the JSON document)."""

    def __init__(self, stack, fetch_bytes=1 << 20):
        self.c = KafkaConsumer(bootstrap_servers=stack.kafka.bootstrap, fetch_max_wait_ms=10,
                               enable_auto_commit=False, consumer_timeout_ms=50,
                               max_partition_fetch_bytes=fetch_bytes)
        parts = [TopicPartition(stack.events, p) for p in self.c.partitions_for_topic(stack.events)]
        self.c.assign(parts)
        self.c.seek_to_beginning(*parts)
        self.records = []

    def poll(self):
        for m in self.c:
            h = {k: v.decode() for k, v in (m.headers or [])}
            self.records.append({"partition": m.partition, "key": m.key, "value": m.value,
                                 "headers": h, "id": h.get("tt-event-id"),
                                 "doc": json.loads(m.value) if m.value.startswith(b"{") else {}})
        return self.records
