#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fault matrix, stopping: SIGTERM in each state Redis and Kafka can be in.

What an operator relies on: exit status 0 within `bridge.shutdown_timeout_ms`
whatever state the neighbours are in, a clean goodbye to the consumer group
when Kafka is up (the next member gets the partitions at once), and nothing
applied twice or lost when the records come back to the next bridge.
"""
import os
import signal
import time

from bridge_harness import Stack, ok
from harness import run_tests, wait_until

BOUND_S = 5.0
# Process start-up and exit around the bound: reading the log, freeing.
SLACK_S = 1.5



def term_and_time(b):
    start = time.monotonic()
    b.signal(signal.SIGTERM)
    rc = b.wait(BOUND_S + 20)
    return rc, time.monotonic() - start


def start(s):
    b = s.bridge(extra=["--set", "bridge.shutdown_timeout_ms=%d" % int(BOUND_S * 1000),
                        "--set", "redis.command_timeout_ms=3000"])
    ok(s.call("spawn", {"name": "w"}))
    return b


def test_healthy_stack_leaves_the_group_cleanly_and_quickly():
    with Stack() as s:
        b = start(s)
        rc, took = term_and_time(b)
        assert rc == 0, b.tail()
        assert took < BOUND_S + SLACK_S, "took %.1fs" % took
        log = b.log_text()
        assert "without saying goodbye" not in log, b.tail()
        # The group saw the goodbye: a new member is assigned at once, not
        # after the old member's session timeout.
        b2 = s.bridge(wait_assigned=False)
        b2.assigned(timeout=5)
        assert ok(s.call("list"))["agents"][0]["name"] == "w"
        assert b2.stop() == 0


def test_redis_hung_with_commands_taken():
    with Stack() as s:
        b = start(s)
        os.kill(s.redis.pid, signal.SIGSTOP)  # connections hang instead of failing
        try:
            ids = [s.send("interrupt", {"agent": "w"}) for _ in range(3)]
            b.wait_log("redis unavailable", 30)
            rc, took = term_and_time(b)
        finally:
            os.kill(s.redis.pid, signal.SIGCONT)
        assert rc == 0, b.tail()
        assert took < BOUND_S + SLACK_S, "took %.1fs\n%s" % (took, b.tail())
        # Nothing was lost: the next bridge answers them, each applied once.
        b2 = s.bridge()
        s.results_for(ids, timeout=60)
        for i in ids:
            assert ok(s.seen[i][0]["doc"])["agent"]["state"] == "paused"
        interrupted = [e for _, e in s.r.xrange("tt:demo:events")
                       if e[b"event_type"] == b"agent_interrupted"]
        assert len(interrupted) == len(ids), "each applied once"
        assert b2.stop() == 0


def test_redis_down_with_commands_taken():
    with Stack() as s:
        b = start(s)
        s.redis.stop()
        ids = [s.send("list") for _ in range(3)]
        b.wait_log("redis unavailable", 30)
        rc, took = term_and_time(b)
        assert rc == 0, b.tail()
        assert took < BOUND_S + SLACK_S, "took %.1fs\n%s" % (took, b.tail())
        assert not any(i in s.seen for i in ids)


if __name__ == "__main__":
    run_tests(globals())
