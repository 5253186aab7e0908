#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Self-test of the real-Kafka harness (tests/lib/apache_kafka.py) and its
shell entry points start-kafka/stop-kafka, so a failure of a *-apache test
can be trusted to be about the bridge. One broker for the module's Python
checks, one more through the shell entry points."""
import os
import subprocess
import time

from harness import run_tests, wait_until
import apache_kafka
from kafka_harness import consume_all, produce

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")


def gone(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] in "ZX"


def test_classpath_is_cached_and_complete():
    started = time.monotonic()
    cp = apache_kafka.classpath()
    assert time.monotonic() - started < 5, "the cached classpath should need no Maven"
    names = [os.path.basename(j) for j in cp.split(os.pathsep)]
    assert "kafka_2.13-3.9.1.jar" in names and "kafka-clients-3.9.1.jar" in names, names
    assert any(n.startswith("slf4j-reload4j-") for n in names), names


def test_broker_lifecycle_topics_and_clients():
    with apache_kafka.ApacheKafka(topics=["hk.a:3"]) as k:
        host, port = k.bootstrap.split(":")
        assert host == "127.0.0.1" and k.port != k.controller_port
        assert os.path.isdir(k.dir) and k.dir.startswith(os.environ.get("TMPDIR") or "/tmp")
        k.create_topics(["hk.b:1"])
        try:
            k.create_topics(["hk.b:1"])
            raise AssertionError("an existing topic was created again")
        except apache_kafka.ApacheKafkaError as e:
            assert "hk.b" in str(e)
        # Another client than the admin one: kafka-python round trip.
        produce(k.bootstrap, "hk.a", b"v1", key=b"k1")
        recs = consume_all(k.bootstrap, "hk.a", until=1, timeout=20)
        assert recs[0].value == b"v1" and recs[0].key == b"k1"
        # No auto-creation: a topic nobody created stays absent.
        from confluent_kafka.admin import AdminClient
        md = AdminClient({"bootstrap.servers": k.bootstrap}).list_topics(timeout=10)
        assert "hk.nobody" not in md.topics and {"hk.a", "hk.b"} <= set(md.topics)
        pid, d = k.pid, k.dir
    wait_until(lambda: gone(pid), 5, what="the broker to exit")
    assert not os.path.exists(d)


def test_shell_entry_points():
    out = subprocess.run([os.path.join(LIB, "start-kafka"), "--topic", "sh.t:2"], check=True,
                         stdout=subprocess.PIPE, timeout=180).stdout.decode()
    bootstrap, pid, d = out.split()
    pid = int(pid)
    try:
        recs_before = consume_all(bootstrap, "sh.t")
        assert recs_before == []
        produce(bootstrap, "sh.t", b"x")
        # A pid that is not the broker in that dir is refused, and left alone.
        assert subprocess.run([os.path.join(LIB, "stop-kafka"), str(os.getpid()), d],
                              timeout=30).returncode != 0
        assert os.path.isdir(d) and not gone(pid)
    finally:
        subprocess.run([os.path.join(LIB, "stop-kafka"), str(pid), d], check=True, timeout=60)
    wait_until(lambda: gone(pid), 5, what="the broker pid %d to exit" % pid)
    assert not os.path.exists(d)


run_tests(globals())
