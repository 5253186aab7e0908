#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fault matrix, Redis side: the built bridge against a real redis-server that
refuses, stalls, forgets or holds malformed data, one fault at a time and
with commands in flight.

Every case checks the same invariants a user relies on:
- the process stays up (it exits only on SIGTERM/SIGINT);
- while Redis refuses writes, no command gets an error result: the bridge
  pauses and reports not ready, and applies them once Redis accepts writes;
- every command id gets a result, and each change is applied exactly once
  (one event and one activity line per transition).
"""
import json
import os
import socket
import subprocess
import threading
import time
import urllib.request

import redis

from bridge_harness import Stack, bridge_path, ok
from harness import free_port, run_tests, wait_until

UNAVAILABLE = "redis unavailable: pausing consumption"



def readyz(port):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d/readyz" % port, timeout=2) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return None


def events_of(s, agent_id, kind):
    return [f for _, f in s.r.xrange("tt:demo:events")
            if f[b"event_type"] == kind.encode() and json.loads(f[b"data"]).get("agent_id") == agent_id]


class Fault:
    """A bridge with agents to work on, a fault injected while commands are in
    flight, then cleared; the invariants checked at the end."""

    def __init__(self, s, agents=3):
        self.s = s
        self.port = free_port()
        self.b = s.bridge(extra=["--set", "http.listen=127.0.0.1:%d" % self.port,
                                 "--set", "redis.command_timeout_ms=1000"])
        self.agents = [ok(s.call("spawn", {"name": "w%d" % i}))["agent"]["id"]
                       for i in range(agents)]

    def during(self, inject, clear, expect_pause=True):
        s, b = self.s, self.b
        mark = len(b.log_text())
        inject()
        ids = {}
        for i, a in enumerate(self.agents):
            ids[s.send("interrupt", {"agent": "w%d" % i})] = ("interrupt", a)
        ids[s.send("spawn", {"name": "late"})] = ("spawn", None)
        ids[s.send("list")] = ("list", None)
        if expect_pause:
            b.wait_log(UNAVAILABLE, 30, after=mark)
            wait_until(lambda: readyz(self.port) == 503, 20, what="/readyz 503 during the fault")
            s.poll_results()
            early = [s.seen[c][0]["doc"] for c in ids if c in s.seen]
            assert all(d["ok"] for d in early), "error results during the fault: %r" % early
        assert b.proc.poll() is None, "bridge exited during the fault:\n" + b.tail()
        clear()
        s.results_for(list(ids), timeout=60)
        wait_until(lambda: readyz(self.port) == 200, 20, what="/readyz 200 after the fault")
        for cid, (op, agent) in ids.items():
            docs = {json.dumps(r["doc"], sort_keys=True) for r in s.seen[cid]}
            assert len(docs) == 1, "different results for one id: %r" % docs
            doc = s.seen[cid][0]["doc"]
            ok(doc)
            if op == "interrupt":
                assert doc["result"]["agent"]["state"] == "paused"
                assert len(events_of(s, agent, "agent_interrupted")) == 1, "applied once"
                assert s.r.llen("tt:demo:activity:" + agent) == 1
        assert b.proc.poll() is None, "bridge exited after the fault:\n" + b.tail()
        assert "double free" not in b.log_text()
        assert b.stop() == 0


def test_readonly_replica_after_failover():
    with Stack() as s:
        f = Fault(s)
        f.during(lambda: s.r.replicaof("127.0.0.1", free_port()),
                 lambda: s.r.replicaof("no", "one"))


def test_masterdown_on_a_replica_that_serves_no_stale_data():
    with Stack() as s:
        f = Fault(s)

        def inject():
            s.r.config_set("replica-serve-stale-data", "no")
            s.r.replicaof("127.0.0.1", free_port())
        f.during(inject, lambda: s.r.replicaof("no", "one"))


def test_oom_under_maxmemory_noeviction():
    with Stack() as s:
        f = Fault(s)

        def inject():
            s.r.config_set("maxmemory-policy", "noeviction")
            s.r.config_set("maxmemory", "1")
        f.during(inject, lambda: s.r.config_set("maxmemory", "0"))


def test_noreplicas_with_min_replicas_to_write():
    with Stack() as s:
        f = Fault(s)
        f.during(lambda: s.r.config_set("min-replicas-to-write", "1"),
                 lambda: s.r.config_set("min-replicas-to-write", "0"))


def test_busy_while_another_client_runs_a_long_script():
    with Stack() as s:
        f = Fault(s)
        s.r.config_set("busy-reply-threshold", "50")
        busy = {}

        def inject():
            def spin():
                c = s.redis.client(socket_timeout=60)
                try:
                    c.eval("local i = 0 while true do i = i + 1 end", 0)
                except redis.exceptions.ResponseError as e:
                    busy["killed"] = str(e)
            busy["t"] = threading.Thread(target=spin, daemon=True)
            busy["t"].start()
            wait_until(lambda: _redis_says(s, "PING").startswith(b"-BUSY"), 10,
                       what="redis answering BUSY")

        def clear():
            assert _redis_says(s, "SCRIPT", "KILL").startswith(b"+OK")
            busy["t"].join(10)
        f.during(inject, clear)


def test_loading_while_redis_restarts_from_a_big_dump():
    """DEBUG RELOAD makes Redis load its dump again; with loading slowed by
    `key-load-delay` every client gets LOADING meanwhile."""
    with Stack(redis_args=["--enable-debug-command", "local", "--save", "",
                           "--appendonly", "no"]) as s:
        f = Fault(s)
        s.r.config_set("key-load-delay", "100")  # microseconds per key
        # Answer clients (with LOADING) every KiB loaded, not every 2 MiB.
        s.r.config_set("loading-process-events-interval-bytes", "1024")
        pipe = s.r.pipeline(transaction=False)
        for i in range(20000):
            pipe.set("filler:%d" % i, "x")
        pipe.execute()
        reload = {}

        def inject():
            def run():
                c = s.redis.client(socket_timeout=60)
                reload["reply"] = c.execute_command("DEBUG", "RELOAD")
            reload["t"] = threading.Thread(target=run, daemon=True)
            reload["t"].start()
            wait_until(lambda: _redis_says(s, "PING").startswith(b"-LOADING"), 10,
                       what="redis answering LOADING")

        def clear():
            s.r.config_set("key-load-delay", "0")
            reload["t"].join(30)
        # The load is over within seconds by itself; what matters is that
        # nothing failed meanwhile. The pause may be too short to observe.
        f.during(inject, clear, expect_pause=False)


def _redis_says(s, *argv):
    """One raw command on a fresh connection (redis-py would retry BUSY and
    LOADING); returns the first reply line."""
    with socket.create_connection(("127.0.0.1", s.redis.port), timeout=5) as c:
        c.sendall(("*%d\r\n" % len(argv) + "".join(
            "$%d\r\n%s\r\n" % (len(a), a) for a in argv)).encode())
        buf = b""
        while b"\r\n" not in buf:
            chunk = c.recv(256)
            if not chunk:
                break
            buf += chunk
        return buf


# ---- malformed data: one command's problem, never the bridge's ----------

def apply_lines(redis_url, lines):
    """`tinytown-bridge apply`: commands straight through Redis, no Kafka."""
    p = subprocess.run([bridge_path(), "--set", "redis.url=" + redis_url,
                        "--set", "bridge.towns=demo", "--set", "bridge.default_town=demo",
                        "apply"], input="\n".join(json.dumps(l) for l in lines) + "\n",
                       capture_output=True, text=True, timeout=60)
    return p, [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def test_agent_hash_without_id_is_that_commands_error():
    with Stack() as s:
        b = s.bridge()
        good = ok(s.call("spawn", {"name": "good"}))["agent"]["id"]
        ghost = "5f1e0000-0000-4000-8000-00000000beef"
        # What a stray heartbeat HSET after a DEL leaves behind.
        s.r.hset("tt:demo:agent:" + ghost, mapping={"last_heartbeat": "2026-11-24T06:00:00+00:00",
                                                     "state": "working"})
        doc = s.call("interrupt", {"agent": ghost})
        assert doc["ok"] is False and doc["error"]["code"] == "agent_not_found", doc
        assert "id" in doc["error"]["message"]
        assert s.r.hget("tt:demo:agent:" + ghost, "state") == b"working", "nothing changed"
        assert s.r.llen("tt:demo:activity:" + ghost) == 0
        # Later commands of the partition are still answered.
        assert ok(s.call("interrupt", {"agent": "good"}))["agent"]["state"] == "paused"
        assert ok(s.call("list"))["agents"][0]["id"] == good
        assert b.proc.poll() is None
        assert b.stop() == 0


def test_wrong_field_types_and_unparsable_values_stay_with_their_command():
    with Stack() as s:
        b = s.bridge()
        odd = "5f1e0000-0000-4000-8000-00000000000d"
        s.r.hset("tt:demo:agent:" + odd, mapping={
            "id": odd, "name": "odd", "state": "sideways", "agent_type": "???",
            "created_at": "yesterday", "tasks_completed": "many", "spawn_mode": "\xff"})
        s.r.set("tt:demo:agent:5f1e0000-0000-4000-8000-00000000000e", "not a hash")
        listing = ok(s.call("list"))["agents"]
        assert [a["id"] for a in listing] == [odd]
        assert listing[0]["state"] == "starting"  # tinytown's fallback for unknown states
        assert ok(s.call("interrupt", {"agent": "odd"}))["agent"]["state"] == "paused"
        doc = s.call("kill", {"agent": "5f1e0000-0000-4000-8000-00000000000e"})
        assert doc["ok"] is False and doc["error"]["code"] in ("agent_not_found", "internal"), doc
        assert s.r.get("tt:demo:agent:5f1e0000-0000-4000-8000-00000000000e") == b"not a hash"
        assert b.proc.poll() is None
        assert b.stop() == 0


def dump_all(r):
    return {k: r.dump(k) for k in r.scan_iter("*")}


def test_no_script_leaves_a_partial_write():
    """Each script meets a key of the wrong type among those it would write
    last; it must refuse before its first write, so Redis is unchanged apart
    from the command's own idempotency record."""
    with Stack() as s:
        url = s.redis.url
        _, res = apply_lines(url, [{"id": "p-0", "op": "spawn", "args": {"name": "a"}},
                                   {"id": "p-1", "op": "spawn", "args": {"name": "b"}},
                                   {"id": "p-2", "op": "kill", "args": {"agent": "b"}}])
        assert all(r["ok"] for r in res), res
        a = res[0]["result"]["agent"]["id"]
        cases = [
            ("tt:demo:events", {"id": "c-spawn", "op": "spawn", "args": {"name": "c"}}),
            ("tt:demo:events", {"id": "c-int", "op": "interrupt", "args": {"agent": "a"}}),
            ("tt:demo:activity:" + a, {"id": "c-close", "op": "close", "args": {"agent": "a"}}),
            ("tt:demo:events:agent:" + a, {"id": "c-kill", "op": "kill", "args": {"agent": "a"}}),
            ("tt:demo:events", {"id": "c-restart", "op": "restart", "args": {"agent": "a"}}),
            ("ttb:demo:observed", {"id": "c-stopall", "op": "stop_all"}),
            ("tt:demo:events", {"id": "c-prune", "op": "prune"}),
            ("ttb:demo:names", {"id": "c-spawn2", "op": "spawn", "args": {"name": "d"}}),
        ]
        for key, cmd in cases:
            saved = s.r.dump(key)
            s.r.delete(key)
            s.r.set(key, "wrong type")
            before = dump_all(s.r)
            p, res = apply_lines(url, [cmd])
            assert p.returncode == 0, p.stderr
            assert len(res) == 1 and res[0]["ok"] is False, (cmd, res)
            assert res[0]["error"]["code"] == "internal", res
            assert key in res[0]["error"]["message"], res
            after = dump_all(s.r)
            changed = sorted(k.decode() for k in set(before) | set(after)
                             if before.get(k) != after.get(k))
            assert all(k.startswith("ttb:demo:cmds") for k in changed), (cmd, changed)
            # A redelivery answers from the record: same bytes, still nothing applied.
            _, again = apply_lines(url, [cmd])
            assert again == res, (again, res)
            s.r.delete(key)
            if saved is not None:
                s.r.restore(key, 0, saved)


def test_deduplication_survives_a_retention_change():
    """Bridges configured with different retentions (or one reconfigured)
    still recognise each other's command ids."""
    with Stack() as s:
        url = s.redis.url
        cmd = {"id": "same-1", "op": "spawn", "args": {"name": "once"}}
        outs = []
        for ttl in ("604800", "60", "2592000"):
            p = subprocess.run([bridge_path(), "--set", "redis.url=" + url,
                                "--set", "bridge.towns=demo", "--set", "bridge.default_town=demo",
                                "--set", "bridge.idempotency_ttl_s=" + ttl, "apply"],
                               input=json.dumps(cmd) + "\n", capture_output=True, text=True,
                               timeout=60)
            assert p.returncode == 0, p.stderr
            outs.append(p.stdout)
        assert outs[0] == outs[1] == outs[2], outs
        agents = [k for k in s.r.scan_iter("tt:demo:agent:*")]
        assert len(agents) == 1, agents
        spawned = [f for _, f in s.r.xrange("tt:demo:events") if f[b"event_type"] == b"agent_spawned"]
        assert len(spawned) == 1
        # The record lives as long as its writer said; expired ones are
        # removed by later writes.
        s.r.zadd("ttb:demo:cmds:expiry", {"same-1": 1})
        _, res = apply_lines(url, [{"id": "later", "op": "list"}])
        assert res[0]["ok"]
        assert s.r.hget("ttb:demo:cmds", "same-1") is None
        assert s.r.zscore("ttb:demo:cmds:expiry", "same-1") is None
        assert s.r.hget("ttb:demo:cmds", "later") is not None


def test_debug_sleep_beyond_the_command_timeout():
    with Stack(redis_args=["--enable-debug-command", "local"]) as s:
        f = Fault(s)
        sleeper = {}

        def inject():
            def run():
                c = s.redis.client(socket_timeout=30)
                sleeper["reply"] = c.execute_command("DEBUG", "SLEEP", "3")
            sleeper["t"] = threading.Thread(target=run, daemon=True)
            sleeper["t"].start()
        # The commands reach a server that answers nothing for 3 s, longer
        # than the bridge's 1 s command timeout: an outage, then recovery.
        f.during(inject, lambda: sleeper["t"].join(30))


def test_client_kill_and_script_flush_mid_stream():
    with Stack() as s:
        f = Fault(s)

        def inject():
            s.r.script_flush()
            s.r.client_kill_filter(_type="normal", skipme=True)
        f.during(inject, lambda: None, expect_pause=False)


def test_flushall_and_a_restart_without_persistence():
    """The town is gone: commands about its agents say so, new ones work, the
    bridge's own keys are rebuilt, nothing crashes."""
    with Stack() as s:
        b = s.bridge(extra=["--set", "redis.command_timeout_ms=1000"])
        ok(s.call("spawn", {"name": "before"}))
        s.r.flushall()
        doc = s.call("interrupt", {"agent": "before"})
        assert doc["ok"] is False and doc["error"]["code"] == "agent_not_found", doc
        ok(s.call("spawn", {"name": "after"}))
        s.redis.pause()  # no persistence: it comes back empty
        cid = s.send("list")
        b.wait_log(UNAVAILABLE, 20)
        s.redis.resume()
        assert ok(s.result(cid, timeout=30)["doc"])["agents"] == []
        assert ok(s.call("spawn", {"name": "after"}))["agent"]["name"] == "after"
        assert b.proc.poll() is None
        assert b.stop() == 0


def test_sigkill_while_redis_refuses_then_a_new_bridge():
    """Killed while it held commands Redis refused: the next bridge gets them
    again and applies each once."""
    with Stack() as s:
        f = Fault(s)
        s.r.config_set("min-replicas-to-write", "1")
        ids = [s.send("interrupt", {"agent": "w%d" % i}) for i in range(3)]
        f.b.wait_log(UNAVAILABLE, 20)
        f.b.kill()
        s.r.config_set("min-replicas-to-write", "0")
        b2 = s.bridge()
        s.results_for(ids, timeout=60)
        for i, cid in enumerate(ids):
            assert ok(s.seen[cid][0]["doc"])["agent"]["state"] == "paused"
            assert len(events_of(s, f.agents[i], "agent_interrupted")) == 1
        assert b2.stop() == 0


def test_state_capture_writes_nothing_while_the_event_stream_is_unusable():
    """The capture script checks its keys before writing too: with the town's
    event stream of the wrong type it records nothing (so nothing is lost);
    once the stream is usable again the change is captured."""
    with Stack() as s:
        b = s.bridge(extra=["--set", "events.reconcile_interval_ms=200"])
        aid = ok(s.call("spawn", {"name": "cap"}))["agent"]["id"]
        wait_until(lambda: s.r.hget("ttb:demo:observed", aid) == b"starting", 20,
                   what="capture's record of the new agent")
        s.r.rename("tt:demo:events", "saved-events")
        s.r.set("tt:demo:events", "wrong type")
        s.r.hset("tt:demo:agent:" + aid, "state", "working")  # a foreign change
        b.wait_log("state capture script failed", 20)
        assert s.r.hget("ttb:demo:observed", aid) == b"starting", "nothing recorded"
        assert s.r.get("tt:demo:events") == b"wrong type"
        s.r.delete("tt:demo:events")
        s.r.rename("saved-events", "tt:demo:events")
        wait_until(lambda: s.r.hget("ttb:demo:observed", aid) == b"working", 20,
                   what="the change captured once the stream is back")
        changed = [json.loads(f[b"data"]) for _, f in s.r.xrange("tt:demo:events")
                   if f[b"event_type"] == b"agent_state_changed"]
        assert [(e["old_state"], e["new_state"]) for e in changed] == [("Starting", "Working")]
        assert b.stop() == 0


def test_records_of_the_first_version_are_adopted_on_upgrade():
    """The first version kept idempotency records in per-bucket hashes. A
    command applied by it and delivered again after the upgrade is answered
    from its record, not applied a second time."""
    with Stack() as s:
        url = s.redis.url
        _, res = apply_lines(url, [{"id": "u-0", "op": "spawn", "args": {"name": "old"}}])
        first = res[0]
        # Make it look as the first version left it: the record in a bucket.
        stored = s.r.hget("ttb:demo:cmds", "u-0")
        s.r.delete("ttb:demo:cmds", "ttb:demo:cmds:expiry")
        s.r.hset("ttb:demo:cmds:23620", "u-0", stored)
        s.r.expire("ttb:demo:cmds:23620", 3600)
        _, again = apply_lines(url, [{"id": "u-0", "op": "spawn", "args": {"name": "old"}}])
        assert again == [first], (again, first)
        assert len(list(s.r.scan_iter("tt:demo:agent:*"))) == 1
        assert not s.r.exists("ttb:demo:cmds:23620")
        left = s.r.zscore("ttb:demo:cmds:expiry", "u-0") - time.time()
        assert 3500 < left <= 3600, left


if __name__ == "__main__":
    run_tests(globals())
