#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Black-box tests of ttb-broker, the mock-cluster Kafka broker.

Each test starts its own broker and talks to it only from outside: kcat
(librdkafka) and kafka-python (an independent client) on the data path, a raw
FindCoordinator request where no client shows the answer, /proc for the
listening sockets, and signals and exit codes for the process. Run with
TTB_BUILD_DIR set and PYTHONPATH=tests/lib.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time

from harness import run_tests, wait_until
from kafka_harness import (KafkaBroker, broker_path, consume_all, consumer_config,
                           find_coordinator, produce)

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

KCAT = shutil.which("kcat") or "/usr/bin/kcat"
KCAT_TIMEOUT = 20


def kcat(*args, stdin=None):
    """Runs kcat with short fetch waits; returns stdout, raises on failure."""
    proc = subprocess.run([KCAT, "-X", "fetch.wait.max.ms=10"] + list(args), input=stdin,
                          capture_output=True, timeout=KCAT_TIMEOUT)
    assert proc.returncode == 0, "kcat %s failed (%d): %s" % (
        " ".join(args), proc.returncode, proc.stderr.decode(errors="replace"))
    return proc.stdout


def kcat_metadata(bootstrap, topic):
    """The topic's entry from `kcat -L -J`."""
    meta = json.loads(kcat("-L", "-b", bootstrap, "-t", topic, "-J"))
    (entry,) = [t for t in meta["topics"] if t["topic"] == topic]
    return entry


def listening_sockets(port):
    """(local_ip_hex, family) of every LISTEN socket on `port` from /proc."""
    found = []
    for path, family in (("/proc/net/tcp", "ipv4"), ("/proc/net/tcp6", "ipv6")):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fields = line.split()
                    ip_hex, port_hex = fields[1].split(":")
                    if int(port_hex, 16) == port and fields[3] == "0A":
                        found.append((ip_hex, family))
        except FileNotFoundError:
            pass
    return found


def test_bootstrap_is_loopback_only():
    with KafkaBroker(brokers=3) as broker:
        addresses = broker.addresses
        assert len(addresses) == 3, broker.bootstrap
        assert len({port for _, port in addresses}) == 3, broker.bootstrap
        for host, port in addresses:
            assert host == "127.0.0.1", broker.bootstrap
            # The only listener on the port is 127.0.0.1 (0100007F little-endian).
            assert listening_sockets(port) == [("0100007F", "ipv4")], listening_sockets(port)
            socket.create_connection((host, port), timeout=5).close()
        assert 'msg="broker ready"' in broker.log_text()


def test_topic_created_with_its_partitions():
    with KafkaBroker(topics=["t:3", "single:1"]) as broker:
        consumer = KafkaConsumer(**consumer_config(broker.bootstrap))
        try:
            # An unknown topic would be auto-created with 4, so 3 is ours.
            assert consumer.partitions_for_topic("t") == {0, 1, 2}
            assert consumer.partitions_for_topic("single") == {0}
        finally:
            consumer.close()
        assert len(kcat_metadata(broker.bootstrap, "t")["partitions"]) == 3


def test_kcat_produce_kafka_python_consume():
    with KafkaBroker(topics=["k2p:1"]) as broker:
        kcat("-P", "-b", broker.bootstrap, "-t", "k2p", "-k", "the-key", "-H", "h=v",
             stdin=b"the value\n")
        records = consume_all(broker.bootstrap, "k2p", until=1)
        assert len(records) == 1, records
        record = records[0]
        assert record.key == b"the-key", record
        assert record.value == b"the value", record
        assert list(record.headers) == [("h", b"v")], record.headers


def test_kafka_python_produce_kcat_consume():
    with KafkaBroker(topics=["p2k:1"]) as broker:
        meta = produce(broker.bootstrap, "p2k", "v1", key="k1", headers={"x": "y"})
        assert meta.offset == 0, meta
        out = kcat("-C", "-b", broker.bootstrap, "-t", "p2k", "-o", "beginning", "-c", "1",
                   "-e", "-f", "%k %s %h\n")
        assert out == b"k1 v1 x=y\n", out


def test_group_commit_resumes_after_committed_offset():
    with KafkaBroker(topics=["grp:1"]) as broker:
        boot = broker.bootstrap
        for value in ("r0", "r1"):
            produce(boot, "grp", value)
        # The mock delays a group's first join by 3 s and a rejoin after all
        # members left by session.timeout.ms - 1 s (6000 here): hence 30 s.
        first = KafkaConsumer("grp", **consumer_config(boot, group_id="g1"))
        try:
            got = []
            deadline = time.monotonic() + 30
            while len(got) < 2 and time.monotonic() < deadline:
                for batch in first.poll(timeout_ms=200).values():
                    got.extend(batch)
            assert [r.value for r in got] == [b"r0", b"r1"], got
            first.commit()
        finally:
            first.close(autocommit=False)

        produce(boot, "grp", "r2")
        records = consume_all(boot, "grp", until=1, timeout=30, group_id="g1")
        assert records[0].value == b"r2" and records[0].offset == 2, records

        check = KafkaConsumer(**consumer_config(boot, group_id="g1"))
        try:
            assert check.committed(TopicPartition("grp", 0)) == 2
        finally:
            check.close(autocommit=False)
        # Another group has no commit and starts from the beginning.
        other = consume_all(boot, "grp", until=1, timeout=30, group_id="g2")
        assert other[0].value == b"r0", other


def test_broker_down_fails_produce_and_up_restores_it():
    with KafkaBroker(topics=["out:1"]) as broker:
        (address,) = broker.addresses
        producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=0, retries=0,
                                 request_timeout_ms=2000, max_block_ms=3000,
                                 reconnect_backoff_ms=50, reconnect_backoff_max_ms=500)
        try:
            producer.send("out", b"before").get(timeout=10)

            broker.inject("broker-down 1")
            try:
                socket.create_connection(address, timeout=2).close()
                raise AssertionError("connection accepted while the broker is down")
            except ConnectionRefusedError:
                pass
            started = time.monotonic()
            try:
                producer.send("out", b"during").get(timeout=8)
                raise AssertionError("produce succeeded while the broker is down")
            except KafkaError:
                pass
            assert time.monotonic() - started < 8

            broker.inject("broker-up 1")
            meta = producer.send("out", b"after").get(timeout=15)
            assert meta.topic == "out"
        finally:
            producer.close(timeout=5)
        values = [r.value for r in consume_all(broker.bootstrap, "out")]
        assert values[0] == b"before" and values[-1] == b"after", values


def test_request_errors_fail_the_next_requests_only():
    with KafkaBroker(topics=["re:1"]) as broker:
        broker.inject("request-errors Produce 2 TOPIC_AUTHORIZATION_FAILED")
        for _ in range(2):
            try:
                produce(broker.bootstrap, "re", "refused", retries=0)
                raise AssertionError("produce succeeded despite an injected error")
            except KafkaError as e:
                assert getattr(e, "errno", None) == 29, repr(e)
        produce(broker.bootstrap, "re", "accepted", retries=0)
        broker.inject("request-errors 0 1 29")  # numeric forms
        broker.inject("clear-errors Produce")
        produce(broker.bootstrap, "re", "accepted again", retries=0)
        values = [r.value for r in consume_all(broker.bootstrap, "re")]
        assert values == [b"accepted", b"accepted again"], values


def test_leader_move_shows_in_metadata():
    with KafkaBroker(topics=["lead:1"], brokers=2) as broker:
        for leader in (2, 1, 2):
            broker.inject("leader lead 0 %d" % leader)
            partition = kcat_metadata(broker.bootstrap, "lead")["partitions"][0]
            assert partition["leader"] == leader, partition
        produce(broker.bootstrap, "lead", "to broker 2")
        assert consume_all(broker.bootstrap, "lead")[0].value == b"to broker 2"


def test_coordinator_move_answers_find_coordinator():
    with KafkaBroker(brokers=2) as broker:
        one, two = broker.addresses
        for key_type in ("group", "transaction"):
            for target, address in ((2, two), (1, one), (2, two)):
                broker.inject("coordinator %s key-%s %d" % (key_type, key_type, target))
                err, node, host, port = find_coordinator(one, "key-" + key_type, key_type)
                assert (err, node, (host, port)) == (0, target, address), (err, node, host, port)
        # Unknown brokers are refused: the mock would abort on them.
        answer = broker.inject("coordinator group g 9", check=False)
        assert answer.startswith("error unknown broker 9"), answer
        assert broker.inject("ping") == "ok"


def test_rtt_delays_responses():
    with KafkaBroker() as broker:
        (address,) = broker.addresses

        def round_trip():
            started = time.monotonic()
            find_coordinator(address, "g")
            return time.monotonic() - started

        assert round_trip() < 0.25
        broker.inject("rtt 1 400")
        assert round_trip() >= 0.35
        broker.inject("rtt -1 0")
        assert round_trip() < 0.25


def test_topic_create_command():
    with KafkaBroker() as broker:
        broker.inject("topic-create late 5 1")
        consumer = KafkaConsumer(**consumer_config(broker.bootstrap))
        try:
            assert consumer.partitions_for_topic("late") == {0, 1, 2, 3, 4}
        finally:
            consumer.close()
        answer = broker.inject("topic-create late 5 1", check=False)
        assert answer.startswith("error TOPIC_ALREADY_EXISTS"), answer
        answer = broker.inject("topic-create late2 1 2", check=False)
        assert answer.startswith("error replication must be 1..1"), answer


def test_control_errors_and_end_of_input():
    with KafkaBroker(topics=["eof:1"]) as broker:
        for line, expected in (("nope", "error unknown command nope"),
                               ("broker-down", "error usage: broker-down ID"),
                               ("broker-down 7", "error unknown broker 7"),
                               ("rtt 1 x", "error bad MS x"),
                               ("request-errors Produce 1 NOT_A_CODE",
                                "error unknown ERRCODE NOT_A_CODE"),
                               ("leader eof 5 1", "error UNKNOWN_TOPIC_OR_PART")):
            answer = broker.inject(line, check=False)
            assert answer.startswith(expected), (line, answer)
        # Closing stdin stops the command reading, not the broker.
        broker.close_control()
        wait_until(lambda: "control input closed" in broker.log_text(), 5,
                   what="the broker to notice end of input")
        assert broker.proc.poll() is None, "broker exited at end of input"
        produce(broker.bootstrap, "eof", "still serving")
        assert consume_all(broker.bootstrap, "eof")[0].value == b"still serving"
        assert broker.stop() == 0


def test_signals_stop_cleanly():
    for signum in (signal.SIGTERM, signal.SIGINT):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "bootstrap")
            broker = KafkaBroker(topics=["s:2"], extra_args=["--bootstrap-file", path])
            try:
                with open(path) as f:
                    assert f.read() == broker.bootstrap + "\n"
                produce(broker.bootstrap, "s", "x")  # with a client having connected
                started = time.monotonic()
                broker.signal(signum)
                status = broker.wait(5)
                assert status == 0, (signum, status, broker.log_text())
                assert time.monotonic() - started < 5
                assert "msg=stopped" in broker.log_text()
                assert not os.path.exists(path), "bootstrap file left behind"
            finally:
                broker.stop()


def test_usage_errors_and_help():
    exe = broker_path()
    for args, needle in ((["--brokers", "0"], "--brokers 0"),
                         (["--topic", "bad"], "--topic bad"),
                         (["--topic", "t:2:3"], "replication must be 1..1"),
                         (["--topic", "a b:1"], "topic names may hold only"),
                         (["--frobnicate"], "unknown option --frobnicate"),
                         (["stray"], "unexpected argument stray")):
        proc = subprocess.run([exe] + args, capture_output=True, timeout=10)
        err = proc.stderr.decode()
        assert proc.returncode == 2, (args, proc.returncode, err)
        assert proc.stdout == b"", (args, proc.stdout)
        assert err.count("\n") == 1 and needle in err, (args, err)
    proc = subprocess.run([exe, "--help"], capture_output=True, timeout=10)
    assert proc.returncode == 0 and b"--control" in proc.stdout, proc


if __name__ == "__main__":
    run_tests(globals())
