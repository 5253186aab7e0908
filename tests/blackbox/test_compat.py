#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Compatibility with tinytown, both ways, checked by an independent reader.

Agents and tasks are written here exactly as tinytown's Rust code writes them
(HDEL of absent optionals, then HSET; `+00:00` timestamps with 0/3/6/9
fraction digits; every state), and the bridge must read them right. Then the
bridge writes (through `tinytown-bridge apply`, the service without Kafka),
and this file reads everything back following tinytown's own parsing rules:
the agent hash fields, the TownEvent JSON of every stream entry (member
order, types, capitalised states), activity lines, stop flags and TTLs.
"""
import json
import os
import re
import subprocess
import uuid
from datetime import datetime

from harness import RedisServer, run_tests

BIN = os.path.join(os.environ["TTB_BUILD_DIR"], "tinytown-bridge")

STATES = ["cold", "starting", "idle", "working", "paused", "draining", "stopped", "error"]
TITLES = {s: s.capitalize() for s in STATES}
EVENT_TYPES = {
    "agent_state_changed", "agent_spawned", "agent_stopped", "task_assigned", "task_completed",
    "task_failed", "mission_state_changed", "mission_work_promoted", "mission_work_assigned",
    "mission_work_completed", "mission_work_blocked", "mission_help_needed",
    "mission_watch_triggered", "mission_event", "task_delegated", "agent_interrupted",
    "agent_resumed", "agent_completed", "agent_failed", "reviewer_handoff", "reviewer_approval",
    "conductor_escalation"}
EVENT_ORDER = ["event_type", "agent_id", "task_id", "mission_id", "old_state", "new_state",
               "message", "timestamp", "parent_agent_id", "child_agent_id", "scope", "spawn_mode"]
REQUIRED = ["id", "name", "agent_type", "state", "cli", "created_at", "last_heartbeat",
            "tasks_completed", "rounds_completed", "last_active_at", "spawn_mode"]
OPTIONAL = ["current_task", "nickname", "role_id", "parent_agent_id"]
HASH_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.(\d{3}|\d{6}|\d{9}))?\+00:00$")
JSON_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.(\d{3}|\d{6}|\d{9}))?Z$")
UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


def rfc3339(s):
    """chrono's parse_from_rfc3339, for the forms these tests write."""
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def tinytown_save_agent(r, town, agent):
    """tinytown's set_agent_state: one pipeline, HDEL absent optionals, HSET the rest."""
    key = "tt:%s:agent:%s" % (town, agent["id"])
    fields = {k: agent[k] for k in REQUIRED}
    absent = [k for k in OPTIONAL if agent.get(k) is None]
    fields.update({k: agent[k] for k in OPTIONAL if agent.get(k) is not None})
    p = r.pipeline(transaction=False)
    if absent:
        p.hdel(key, *absent)
    p.hset(key, mapping=fields)
    p.execute()


def tinytown_read_agent(r, key):
    """tinytown's parse_agent_from_hash, strict enough to catch any deviation."""
    h = {k.decode(): v.decode() for k, v in r.hgetall(key).items()}
    assert UUID.match(h["id"]), h
    for k in REQUIRED:
        assert k in h, (k, h)
    extra = set(h) - set(REQUIRED) - set(OPTIONAL)
    assert not extra, "fields tinytown does not know: %s" % extra
    for k in OPTIONAL:
        assert h.get(k, None) != "", "optional %s written empty instead of deleted" % k
    assert h["state"] in STATES and h["agent_type"] in ("worker", "supervisor")
    assert h["spawn_mode"] in ("fresh", "forkedcontext", "resumed")
    for k in ("created_at", "last_heartbeat", "last_active_at"):
        assert HASH_TIME.match(h[k]), (k, h[k])
        rfc3339(h[k])
    int(h["tasks_completed"]), int(h["rounds_completed"])
    for k in ("current_task", "parent_agent_id"):
        if k in h:
            assert UUID.match(h[k]), (k, h[k])
    return h


def read_events(r, stream):
    out = []
    for entry_id, fields in r.xrange(stream):
        assert set(fields) == {b"event_type", b"data"}, fields
        data = fields[b"data"].decode()
        doc = json.loads(data, object_pairs_hook=list)
        keys = [k for k, _ in doc]
        assert keys == [k for k in EVENT_ORDER if k in keys], keys
        ev = dict(doc)
        assert ev["event_type"] == fields[b"event_type"].decode()
        assert ev["event_type"] in EVENT_TYPES
        assert JSON_TIME.match(ev["timestamp"]) and isinstance(ev["message"], str)
        for k in ("old_state", "new_state"):
            if k in ev:
                assert ev[k] in TITLES.values() or ev[k] == "Removed", ev
        out.append(ev)
    return out


def apply(server, *commands):
    """Runs commands through the service (no Kafka) and returns the result documents."""
    lines = "".join(json.dumps(c) + "\n" for c in commands)
    proc = subprocess.run(
        [BIN, "apply", "--set", "redis.url=" + server.url, "--set", "bridge.towns=demo",
         "--set", "bridge.wait_check_interval_ms=20"],
        input=lines.encode(), capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr.decode()
    return [json.loads(line) for line in proc.stdout.decode().splitlines()]


def one(server, op, **args):
    doc = apply(server, {"id": "c-" + uuid.uuid4().hex, "op": op, "args": args})[0]
    return doc


def test_reads_what_tinytown_writes():
    with RedisServer() as server:
        r = server.client()
        fractions = ["2026-11-24T06:51:00+00:00", "2026-11-24T06:51:00.123+00:00",
                     "2026-11-24T06:51:00.123456+00:00", "2026-11-24T06:51:00.123456789+00:00"]
        written = {}
        for i, state in enumerate(STATES):
            aid = str(uuid.uuid4())
            agent = {"id": aid, "name": "tt-%s" % state, "agent_type": "worker", "state": state,
                     "cli": "claude", "created_at": fractions[i % 4],
                     "last_heartbeat": fractions[(i + 1) % 4], "tasks_completed": str(i),
                     "rounds_completed": str(2 * i), "last_active_at": fractions[(i + 2) % 4],
                     "spawn_mode": ["fresh", "forkedcontext", "resumed"][i % 3],
                     "nickname": "Nick%d" % i if i % 2 else None,
                     "role_id": "reviewer" if i % 3 == 0 else None,
                     "parent_agent_id": None, "current_task": None}
            tinytown_save_agent(r, "demo", agent)
            written[aid] = agent
        task = str(uuid.uuid4())
        first = next(iter(written))
        r.hset("tt:demo:task:" + task, mapping={
            "id": task, "description": "write the docs", "state": "in_flight",
            "created_at": fractions[0], "updated_at": fractions[1], "tags": '["docs"]',
            "assigned_to": first})
        agent = dict(written[first], current_task=task)
        tinytown_save_agent(r, "demo", agent)

        listing = one(server, "list")["result"]["agents"]
        assert len(listing) == len(STATES)
        for a in listing:
            w = written[a["id"]]
            assert a["state"] == w["state"] and a["name"] == w["name"]
            assert a["tasks_completed"] == int(w["tasks_completed"])
            assert a["rounds_completed"] == int(w["rounds_completed"])
            assert a["spawn_mode"] == w["spawn_mode"] and a["nickname"] == w["nickname"]
            assert a["role_id"] == w["role_id"]
            for k in ("created_at", "last_heartbeat", "last_active_at"):
                assert JSON_TIME.match(a[k]) and rfc3339(a[k]) == rfc3339(w[k]), (k, a[k], w[k])
        scoped = [a for a in listing if a["id"] == first][0]
        assert scoped["current_task"] == task and scoped["current_scope"] == "write the docs"
        open_names = {a["name"] for a in one(server, "list_open")["result"]["agents"]}
        assert open_names == {"tt-%s" % s for s in STATES if s not in ("cold", "stopped", "error")}


def test_what_the_bridge_writes_reads_as_tinytown_reads_it():
    with RedisServer() as server:
        r = server.client()
        parent = one(server, "spawn", name="parent", role_id="lead")["result"]["agent"]
        child = one(server, "spawn", name="child \"quoted\" \\ name", nickname="Kid",
                    parent="parent", spawn_mode="forkedcontext")["result"]["agent"]
        for cmd in (("interrupt", child["id"]), ("resume", child["id"]),
                    ("close", child["id"]), ("kill", parent["id"]), ("restart", parent["id"])):
            assert one(server, cmd[0], agent=cmd[1])["ok"] is True

        for key in r.scan_iter(match="tt:demo:agent:*"):
            tinytown_read_agent(r, key)
        h = tinytown_read_agent(r, "tt:demo:agent:" + child["id"])
        assert h["parent_agent_id"] == parent["id"] and h["nickname"] == "Kid"
        assert h["name"] == 'child "quoted" \\ name' and h["state"] == "draining"
        assert "role_id" not in h
        assert tinytown_read_agent(r, "tt:demo:agent:" + parent["id"])["state"] == "idle"

        town = read_events(r, "tt:demo:events")
        kinds = [(e["event_type"], e.get("old_state"), e.get("new_state")) for e in town]
        assert kinds == [
            ("agent_spawned", None, "Starting"), ("agent_spawned", None, "Starting"),
            ("agent_interrupted", "Starting", "Paused"), ("agent_resumed", "Paused", "Idle"),
            ("agent_stopped", "Idle", "Draining"), ("agent_stopped", "Starting", "Stopped"),
            ("agent_state_changed", "Stopped", "Idle")], kinds
        assert town[1]["parent_agent_id"] == parent["id"]
        assert town[1]["spawn_mode"] == "forkedcontext"
        # Per-agent streams get the agent's events; the parent's also its child's spawn.
        child_events = read_events(r, "tt:demo:events:agent:" + child["id"])
        assert [e["event_type"] for e in child_events] == [
            "agent_spawned", "agent_interrupted", "agent_resumed", "agent_stopped"]
        parent_events = read_events(r, "tt:demo:events:agent:" + parent["id"])
        assert [e["event_type"] for e in parent_events] == [
            "agent_spawned", "agent_spawned", "agent_stopped", "agent_state_changed"]

        activity = [x.decode() for x in r.lrange("tt:demo:activity:" + child["id"], 0, -1)]
        assert activity == ["\U0001F53B Closing (draining then stop)", "\u25B6\uFE0F Resumed",
                            "\u23F8\uFE0F Interrupted (paused)"]
        assert 3590 < r.ttl("tt:demo:activity:" + child["id"]) <= 3600
        assert r.get("tt:demo:stop:" + child["id"]) == b"1"
        assert 3590 < r.ttl("tt:demo:stop:" + child["id"]) <= 3600
        assert r.exists("tt:demo:stop:" + parent["id"]) == 0  # restart cleared it

        removed = one(server, "prune", all=True)["result"]["removed"]
        assert len(removed) == 2
        # tinytown's delete_agent: the hash, inbox, urgent, activity and stop flag go;
        # the agent's event stream stays (and records the removal).
        left = {k.decode() for k in r.scan_iter(match="tt:demo:*:" + child["id"])}
        assert left == {"tt:demo:events:agent:" + child["id"]}, left
        last = read_events(r, "tt:demo:events")[-2:]
        assert {e["new_state"] for e in last} == {"Removed"}


def test_apply_reports_bad_input_without_touching_redis():
    with RedisServer() as server:
        r = server.client()
        docs = apply(server,
                     {"id": "a", "op": "spawn", "args": {"name": "x" * 200}},
                     {"id": "b", "op": "spawn", "args": {"name": "bad\u0007name"}},
                     {"id": "c", "op": "kill", "args": {"agent": "not-a-uuid-and-unknown"}},
                     {"id": "d", "op": "spawn", "args": {"name": "conductor"}})
        assert [d["error"]["code"] for d in docs] == [
            "invalid_command", "invalid_command", "agent_not_found", "reserved_name"]
        assert not list(r.scan_iter(match="tt:*"))


run_tests(globals())
