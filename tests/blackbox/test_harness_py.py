#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# Self-test of the Python test helpers (tests/lib/harness.py) and of the
# shell entry points start-redis/stop-redis, so black-box failures can be
# trusted to be about the bridge, not the harness.
import errno
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import redis  # noqa: E402

from harness import RedisServer, free_port, run_tests, wait_until  # noqa: E402

LIB = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib")


def process_gone(pid):
    try:
        os.kill(pid, 0)
    except OSError as e:
        return e.errno == errno.ESRCH
    # A zombie still answers kill(0); treat it as gone.
    try:
        with open("/proc/%d/stat" % pid) as f:
            s = f.read()
        return s[s.rindex(")") + 2] in "ZX"
    except OSError:
        return True


def test_lifecycle():
    with RedisServer() as r:
        assert r.url == "redis://127.0.0.1:%d" % r.port
        assert os.path.isdir(r.dir)
        c = r.client()
        assert c.set(b"k", b"v")
        assert c.get(b"k") == b"v"  # bytes: decode_responses=False

        old_pid, port = r.pid, r.port
        r.pause()
        assert r.pid is None
        assert process_gone(old_pid)
        assert os.path.isdir(r.dir)
        try:
            redis.Redis(host="127.0.0.1", port=port, socket_connect_timeout=1).ping()
            raise AssertionError("paused server still answers")
        except redis.exceptions.ConnectionError:
            pass

        r.resume()
        assert r.port == port and r.pid != old_pid
        c = r.client()
        assert c.ping()
        assert c.get(b"k") is None  # no persistence by default
        pid, d = r.pid, r.dir
    # leaving the with block stopped it
    assert process_gone(pid)
    assert not os.path.exists(d)
    r.stop()  # idempotent


def test_extra_args_persistence():
    with RedisServer(["--appendonly", "yes", "--appendfsync", "always"]) as r:
        r.client().set(b"durable", b"yes")
        r.pause()
        r.resume()
        assert r.client().get(b"durable") == b"yes"
        d = r.dir
    assert not os.path.exists(d)


def test_bad_args_fail_fast():
    try:
        RedisServer(["--no-such-directive", "1"])
    except RuntimeError as e:
        assert "Bad directive" in str(e), str(e)
    else:
        raise AssertionError("bad directive accepted")


def test_free_port_and_wait_until():
    p = free_port()
    assert 0 < p < 65536
    calls = []
    assert wait_until(lambda: calls.append(1) or len(calls) >= 3, 5, what="three calls") is True
    try:
        wait_until(lambda: False, 0.05, what="the impossible")
    except AssertionError as e:
        assert "the impossible" in str(e)
    else:
        raise AssertionError("wait_until did not time out")


def test_shell_entry_points():
    out = subprocess.run([os.path.join(LIB, "start-redis")], check=True,
                         stdout=subprocess.PIPE, timeout=30).stdout.decode()
    port, pid, d = out.split()
    port, pid = int(port), int(pid)
    assert redis.Redis(host="127.0.0.1", port=port).ping()
    # A pid that is not the server in that dir is refused.
    assert subprocess.run([os.path.join(LIB, "stop-redis"), str(os.getpid()), d],
                          timeout=30).returncode != 0
    assert os.path.isdir(d)
    subprocess.run([os.path.join(LIB, "stop-redis"), str(pid), d], check=True, timeout=30)
    wait_until(lambda: process_gone(pid), 5, what="redis-server pid %d to exit" % pid)
    assert not os.path.exists(d)


def test_kafka_cluster_ids_never_look_like_options():
    # kafka-storage's argument parser reads an id starting with "-" as an
    # option and prints its usage; base64url starts one id in 64 that way.
    # Kafka's own Uuid.randomUuid() draws again in that case, and so must we.
    import apache_kafka
    ids = [apache_kafka._cluster_id() for _ in range(5000)]
    assert all(len(i) == 22 and not i.startswith("-") for i in ids), \
        [i for i in ids if i.startswith("-")][:3]
    assert len(set(ids)) == len(ids)


def test_runner_reports_failures():
    # The runner itself: one passing and one failing test → exit 1 and counts.
    code = ("import sys; sys.path.insert(0, %r)\n"
            "from harness import run_tests\n"
            "def test_a(): pass\n"
            "def test_b(): assert False, 'boom'\n"
            "run_tests(globals())\n" % LIB)
    p = subprocess.run([sys.executable, "-c", code], stdout=subprocess.PIPE, timeout=30)
    lines = p.stdout.decode().splitlines()
    assert p.returncode == 1, p.returncode
    assert lines[0] == "ok test_a", lines
    assert lines[1].startswith("FAIL test_b:") and "boom" in p.stdout.decode(), lines
    assert lines[-1] == "1 passed, 1 failed", lines


run_tests(globals())
