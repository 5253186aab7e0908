# SPDX-License-Identifier: MIT
"""Kafka for the black-box tests: the built ttb-broker plus small client helpers.

ttb-broker runs librdkafka's mock cluster on 127.0.0.1 at random ports and
prints one `bootstrap=...` line when every requested topic exists. KafkaBroker
starts it, reads that line (bounded), and, in --control mode, sends
fault-injection commands on its stdin and waits for each `ok`/`error` answer.
The broker gets SIGTERM if the test process dies (parent-death signal), since
closing its stdin deliberately does not stop it.

produce() and consume_all() use kafka-python (Debian's python3-kafka 2.0.2),
a client independent of librdkafka, with fetch_max_wait_ms=10: the mock does
not answer a fetch early when data arrives, so at the default of 500 ms every
read would take half a second.

Set TTB_KEEP_KAFKA=1 to keep the broker's stderr log files for debugging.
"""

import atexit
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

from harness import pdeathsig_preexec

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
INJECT_TIMEOUT = 10.0
FETCH_MAX_WAIT_MS = 10
# Group timings the mock can live with (see docs: a rejoin waits session - 1 s).
SESSION_TIMEOUT_MS = 6000
HEARTBEAT_INTERVAL_MS = 1000

_live_brokers = set()


class KafkaBrokerError(RuntimeError):
    """The broker failed to start, or a control command was refused."""


def broker_path(path=None):
    """The ttb-broker to run: `path`, else $TTB_BUILD_DIR/tools/ttb-broker."""
    if path:
        return path
    build = os.environ.get("TTB_BUILD_DIR")
    if not build:
        raise KafkaBrokerError("set TTB_BUILD_DIR (or pass path=) to find ttb-broker")
    return os.path.join(build, "tools", "ttb-broker")


class KafkaBroker:
    """A private ttb-broker. Use as a context manager or call stop().

    topics: specs "NAME:PARTITIONS[:REPLICATION]" created before the broker
    reports ready. brokers: cluster size (ids 1..N). control: start with
    --control so inject() works. extra_args: more ttb-broker arguments.
    Start brokers from the main thread (the parent-death signal follows the
    starting thread)."""

    def __init__(self, topics=(), brokers=1, control=True, path=None, extra_args=None,
                 start=True):
        self.topics = list(topics)
        self.brokers = brokers
        self.control = control
        self.path = broker_path(path)
        self.extra_args = list(extra_args or [])
        self.proc = None
        self.bootstrap = None
        self.returncode = None
        self.log_path = None
        self._out = b""
        if start:
            self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def addresses(self):
        """[(host, port), ...] in broker id order (id 1 first)."""
        result = []
        for entry in self.bootstrap.split(","):
            host, port = entry.rsplit(":", 1)
            result.append((host, int(port)))
        return result

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def argv(self):
        args = [self.path, "--brokers", str(self.brokers)]
        for spec in self.topics:
            args += ["--topic", spec]
        if self.control:
            args.append("--control")
        return args + self.extra_args

    def start(self):
        fd, self.log_path = tempfile.mkstemp(prefix="ttb-broker-", suffix=".log",
                                             dir=os.environ.get("TMPDIR") or "/tmp")
        _live_brokers.add(self)
        try:
            with os.fdopen(fd, "ab") as log:
                # Unbuffered pipes: lines are read with select() and os.read().
                self.proc = subprocess.Popen(
                    self.argv(), stdin=subprocess.PIPE if self.control else subprocess.DEVNULL,
                    stdout=subprocess.PIPE, stderr=log, bufsize=0, close_fds=True,
                    preexec_fn=pdeathsig_preexec(os.getpid()))
            line = self.readline(START_TIMEOUT)
            if line is None or not line.startswith("bootstrap="):
                raise KafkaBrokerError("ttb-broker did not report ready (got %r); log:\n%s"
                                       % (line, self.log_text()))
            self.bootstrap = line[len("bootstrap="):]
            return self
        except BaseException:
            self.stop()
            raise

    def readline(self, timeout):
        """The next stdout line without its newline, or None at EOF or after
        `timeout` seconds."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._out:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 4096)
            if not chunk:
                return None
            self._out += chunk
        line, self._out = self._out.split(b"\n", 1)
        return line.decode("utf-8", "replace")

    def inject(self, line, timeout=INJECT_TIMEOUT, check=True):
        """Send one control command and return its answer line. With check
        (the default) an `error ...` answer raises KafkaBrokerError."""
        if not self.control or self.proc is None or self.proc.stdin is None:
            raise KafkaBrokerError("broker not started with control=True")
        data = (line.rstrip("\n") + "\n").encode()
        while data:
            data = data[os.write(self.proc.stdin.fileno(), data):]
        answer = self.readline(timeout)
        if answer is None:
            raise KafkaBrokerError("no answer to %r within %.0fs; log:\n%s"
                                   % (line, timeout, self.log_text()))
        if check and answer != "ok":
            raise KafkaBrokerError("%r: %s" % (line, answer))
        return answer

    def close_control(self):
        """Close the broker's stdin (it keeps running: only signals stop it)."""
        if self.proc is not None and self.proc.stdin is not None:
            self.proc.stdin.close()
            self.proc.stdin = None

    def signal(self, signum):
        self.proc.send_signal(signum)

    def wait(self, timeout):
        """Exit status, or None if still running after `timeout` seconds."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def log_text(self):
        try:
            with open(self.log_path, "r", errors="replace") as f:
                return f.read()
        except (OSError, TypeError):
            return "(no log)"

    def stop(self):
        """SIGTERM, wait up to STOP_TIMEOUT, then SIGKILL. Returns the exit
        status (negative: killed by that signal). Idempotent."""
        if self.proc is not None:
            # Only our own Popen is signalled; it is not reaped before wait()
            # returns, so the pid cannot have been recycled.
            if self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_TIMEOUT)
                except subprocess.TimeoutExpired:
                    sys.stderr.write("kafka_harness: ttb-broker pid %d ignored SIGTERM, "
                                     "killing\n" % self.proc.pid)
                    self.proc.kill()
                    self.proc.wait()
            self.returncode = self.proc.returncode
            for pipe in (self.proc.stdin, self.proc.stdout):
                if pipe is not None:
                    pipe.close()
            self.proc = None
        if self.log_path and os.environ.get("TTB_KEEP_KAFKA", "") in ("", "0"):
            try:
                os.unlink(self.log_path)
            except OSError:
                pass
        elif self.log_path:
            sys.stderr.write("kafka_harness: keeping %s (TTB_KEEP_KAFKA)\n" % self.log_path)
        self.log_path = None
        _live_brokers.discard(self)
        return self.returncode


@atexit.register
def _stop_forgotten_brokers():
    for broker in list(_live_brokers):
        broker.stop()


def _bytes(value):
    if value is None or isinstance(value, bytes):
        return value
    return str(value).encode("utf-8")


def produce(bootstrap, topic, value, key=None, headers=None, partition=None, timeout=10.0,
            **producer_config):
    """Produce one record with kafka-python and wait for its acknowledgement.
    value and key: bytes or str; headers: dict or [(name, value)]. Returns the
    RecordMetadata; raises on failure or after `timeout` seconds."""
    from kafka import KafkaProducer

    if isinstance(headers, dict):
        headers = list(headers.items())
    headers = [(name, _bytes(v)) for name, v in (headers or [])]
    config = dict(bootstrap_servers=bootstrap, linger_ms=0, acks=1,
                  max_block_ms=int(timeout * 1000))
    config.update(producer_config)
    producer = KafkaProducer(**config)
    try:
        future = producer.send(topic, value=_bytes(value), key=_bytes(key),
                               headers=headers, partition=partition)
        return future.get(timeout=timeout)
    finally:
        producer.close(timeout=timeout)


def consumer_config(bootstrap, **overrides):
    """kafka-python consumer settings fit for the mock: short fetch waits,
    group timeouts it handles, reading from the beginning, no auto commit."""
    config = dict(bootstrap_servers=bootstrap, fetch_max_wait_ms=FETCH_MAX_WAIT_MS,
                  auto_offset_reset="earliest", enable_auto_commit=False,
                  session_timeout_ms=SESSION_TIMEOUT_MS,
                  heartbeat_interval_ms=HEARTBEAT_INTERVAL_MS)
    config.update(overrides)
    return config


def consume_all(bootstrap, topic, until=None, timeout=10.0, group_id=None, **extra):
    """Read records of `topic` with kafka-python and return them in arrival
    order (ConsumerRecord: .key, .value, .headers, .partition, .offset).

    until: None reads everything present when the call started (up to each
    partition's end offset); an int stops after that many records; a callable
    gets the list so far and stops the read when it returns true. Raises
    AssertionError if `until` is not met within `timeout` seconds.

    Without group_id all partitions are assigned directly, which avoids the
    mock's 3 s group join delay; with one, the consumer subscribes in that
    group and commits nothing unless asked."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(**consumer_config(bootstrap, group_id=group_id, **extra))
    records = []
    deadline = time.monotonic() + timeout
    try:
        ends = None
        if group_id is None:
            partitions = None
            while not partitions and time.monotonic() < deadline:
                partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                raise AssertionError("topic %s has no partitions" % topic)
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            if until is None:
                ends = consumer.end_offsets(tps)
        else:
            consumer.subscribe([topic])
            if until is None:
                raise ValueError("consume_all: a group read needs `until`")

        def done():
            if until is None:
                return all(consumer.position(tp) >= end for tp, end in ends.items())
            if isinstance(until, int):
                return len(records) >= until
            return bool(until(records))

        while not done():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("consume_all(%s): condition not met within %.1fs; "
                                     "got %d record(s)" % (topic, timeout, len(records)))
            batch = consumer.poll(timeout_ms=int(min(left, 0.2) * 1000))
            for tp_records in batch.values():
                records.extend(tp_records)
        return records
    finally:
        consumer.close(autocommit=False)


def find_coordinator(address, key, key_type="group", timeout=5.0):
    """Ask one broker, over a raw FindCoordinator v1 request, who coordinates
    `key` ("group" or "transaction"). kafka-python keeps this lookup private,
    and a coordinator move is otherwise invisible to a test.
    Returns (error_code, node_id, host, port)."""
    def kstr(s):
        b = s.encode()
        return struct.pack(">h", len(b)) + b

    body = kstr(key) + struct.pack(">b", {"group": 0, "transaction": 1}[key_type])
    header = struct.pack(">hhi", 10, 1, 1) + kstr("kafka-harness")  # FindCoordinator v1
    request = header + body
    with socket.create_connection(address, timeout=timeout) as sock:
        sock.sendall(struct.pack(">i", len(request)) + request)

        def recv_exact(n):
            buf = b""
            while len(buf) < n:
                chunk = sock.recv(n - len(buf))
                if not chunk:
                    raise ConnectionError("broker closed the connection")
                buf += chunk
            return buf

        (size,) = struct.unpack(">i", recv_exact(4))
        resp = recv_exact(size)
    # correlation id, throttle time, error code, error message, node, host, port
    pos = 8
    (error_code,) = struct.unpack_from(">h", resp, pos)
    pos += 2
    (msg_len,) = struct.unpack_from(">h", resp, pos)
    pos += 2 + max(msg_len, 0)
    (node_id,) = struct.unpack_from(">i", resp, pos)
    pos += 4
    (host_len,) = struct.unpack_from(">h", resp, pos)
    pos += 2
    host = resp[pos:pos + max(host_len, 0)].decode()
    pos += max(host_len, 0)
    (port,) = struct.unpack_from(">i", resp, pos)
    return error_code, node_id, host, port
