#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Many pending `wait`s: they must not hold back other commands, must be
answered when their agent changes, and must cost (almost) nothing while
nothing happens."""
import json
import uuid

from bridge_harness import COMMANDS, Stack, ok
from harness import run_tests, wait_until

WAITS = 3000



def hgetall_calls(r):
    return r.info("commandstats").get("cmdstat_hgetall", {}).get("calls", 0)


def send_many(s, docs, key):
    for d in docs:
        s.producer.send(COMMANDS, value=json.dumps(d).encode(), key=key)
    s.producer.flush()


def test_many_waits_hold_back_nothing_and_end_on_state_changes():
    with Stack() as s:
        b = s.bridge(extra=["--set", "bridge.max_in_flight=1000",
                            "--set", "bridge.wait_check_interval_ms=100"])
        ok(s.call("spawn", {"name": "slow"}))
        ok(s.call("spawn", {"name": "other"}))
        waits = [{"id": "w-%s" % uuid.uuid4().hex[:10], "op": "wait",
                  "args": {"agent": "slow", "timeout_ms": 3600000}} for _ in range(WAITS)]
        send_many(s, waits, b"slow")
        b.wait_log("pending_waits=%d" % WAITS, 60)

        # Three times max_in_flight are pending, yet other commands flow.
        assert ok(s.call("list", timeout=15))["agents"][0]["name"] == "slow"
        assert ok(s.call("interrupt", {"agent": "other"}, timeout=15))["agent"]["state"] == "paused"

        # While nothing changes, the waits are not polled one by one: the
        # safety sweep reads each at most once per sweep interval (10 s).
        calls = hgetall_calls(s.r)
        mark = len(b.log_text())
        for _ in range(3):  # three summaries, a second apart
            b.wait_log("msg=summary", 10, after=len(b.log_text()))
        idle_reads = hgetall_calls(s.r) - calls
        assert idle_reads < WAITS, "%d agent reads in ~3 idle seconds" % idle_reads
        assert "pending_waits=%d" % WAITS in b.log_text()[mark:]

        # The agent stops (a foreign writer, as tinytown's own kill would):
        # every wait ends at once, from the notification.
        agent_id = ok(s.call("list"))["agents"][0]["id"]
        s.r.hset("tt:demo:agent:" + agent_id, "state", "stopped")
        s.results_for([w["id"] for w in waits], timeout=60)
        for w in waits[:50]:
            res = ok(s.seen[w["id"]][0]["doc"])
            assert res["timed_out"] is False and res["agent"]["state"] == "stopped"
        b.wait_log("pending_waits=0", 20)
        assert b.stop() == 0


def test_waits_end_without_notifications_too():
    """With keyspace notifications refused (a managed Redis), waits still end,
    from the periodic re-read."""
    with Stack(redis_args=["--rename-command", "CONFIG", ""]) as s:
        b = s.bridge(extra=["--set", "bridge.wait_check_interval_ms=100"])
        agent_id = ok(s.call("spawn", {"name": "w"}))["agent"]["id"]
        cid = s.send("wait", {"agent": "w", "timeout_ms": 600000})
        b.wait_log("keyspace notifications unavailable", 20)
        s.r.hset("tt:demo:agent:" + agent_id, "state", "error")
        res = ok(s.result(cid, timeout=20)["doc"])
        assert res["timed_out"] is False and res["agent"]["state"] == "error"
        assert b.stop() == 0


if __name__ == "__main__":
    run_tests(globals())
