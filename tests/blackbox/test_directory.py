#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""References by name resolve in the bridge's in-memory directory of each
town (no read of the whole town per command). What other tools write between
two commands — an agent created, renamed, deleted and recreated under the
same name, given a nickname — reaches it through keyspace notifications; and
when notifications are lost, the scripts' check that the agent still is what
the directory saw keeps a stale entry from ever acting on the wrong agent.

Listings choose their page in the same directory and read only the agents
on it, so what other tools write must reach them too.

The other tool here is redis-py writing agent hashes the way tinytown's
save does (one HSET of every field)."""
import uuid
from datetime import datetime, timezone

from bridge_harness import Stack, err, ok
from harness import run_tests


def tinytown_agent(r, name, nickname=None, town="demo"):
    """Creates an agent as tinytown's spawn saves it; returns its id."""
    aid = str(uuid.uuid4())
    # To the microsecond, so that agents made one after another list in that order.
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f000+00:00")
    fields = {"id": aid, "name": name, "agent_type": "worker", "state": "idle",
              "cli": "claude", "created_at": now, "last_heartbeat": now,
              "tasks_completed": "0", "rounds_completed": "0", "last_active_at": now,
              "spawn_mode": "fresh"}
    if nickname:
        fields["nickname"] = nickname
    r.hset("tt:%s:agent:%s" % (town, aid), mapping=fields)
    return aid


def state(r, aid):
    return (r.hget("tt:demo:agent:%s" % aid, "state") or b"").decode()


def test_writes_of_other_tools_reach_the_directory():
    with Stack() as s:
        s.bridge()
        ok(s.call("spawn", {"name": "first"}))  # the directory is read once here
        ok(s.call("interrupt", {"agent": "first"}))

        # Created by another tool after the directory was read.
        a = tinytown_agent(s.r, "made-by-tt")
        assert ok(s.call("interrupt", {"agent": "made-by-tt"}))["agent"]["id"] == a

        # Renamed: the old name is gone, the new one names the same agent.
        s.r.hset("tt:demo:agent:%s" % a, "name", "renamed")
        err(s.call("resume", {"agent": "made-by-tt"}), "agent_not_found")
        assert ok(s.call("resume", {"agent": "renamed"}))["agent"]["id"] == a

        # Deleted and created again under the same name: the new agent.
        s.r.delete("tt:demo:agent:%s" % a)
        b = tinytown_agent(s.r, "renamed")
        assert ok(s.call("interrupt", {"agent": "renamed"}))["agent"]["id"] == b
        assert not s.r.exists("tt:demo:agent:%s" % a)

        # A nickname given by another tool names the agent at once.
        s.r.hset("tt:demo:agent:%s" % b, "nickname", "Nicky")
        assert ok(s.call("resume", {"agent": "nicky"}))["agent"]["id"] == b

        # A second agent of the same name makes the name ambiguous.
        tinytown_agent(s.r, "renamed")
        err(s.call("interrupt", {"agent": "renamed"}), "ambiguous_agent")
        assert state(s.r, b) == "idle"

        # Spawning a name another tool holds (any case) is a conflict.
        tinytown_agent(s.r, "Taken")
        err(s.call("spawn", {"name": "taken"}), "name_conflict")


def names(result, member="agents"):
    return [a["name"] for a in result[member]]


def test_listings_follow_other_tools():
    with Stack() as s:
        s.bridge()
        ok(s.call("spawn", {"name": "one"}))  # the directory is read once here
        two = tinytown_agent(s.r, "two")
        three = tinytown_agent(s.r, "three")
        assert names(ok(s.call("list", {}))) == ["one", "two", "three"]

        # Stopped by another tool: no longer open; started again: open again.
        s.r.hset("tt:demo:agent:%s" % two, "state", "stopped")
        assert names(ok(s.call("list_open", {}))) == ["one", "three"]
        s.r.hset("tt:demo:agent:%s" % two, "state", "idle")
        assert names(ok(s.call("list_open", {}))) == ["one", "two", "three"]

        # Pages, oldest first, with agents deleted and created in between.
        page = ok(s.call("list_open", {"limit": 2}))
        assert names(page) == ["one", "two"] and page["more"]
        s.r.delete("tt:demo:agent:%s" % three)
        four = tinytown_agent(s.r, "four")
        page = ok(s.call("list_open", {"limit": 2, "after": page["next"]}))
        assert names(page) == ["four"] and not page["more"]
        assert page["agents"][0]["id"] == four

        # stop_all stops what is open now, whoever started it.
        assert sorted(names(ok(s.call("stop_all", {})), "stopped")) == ["four", "one", "two"]
        assert names(ok(s.call("list_open", {}))) == []
        status = ok(s.call("status", {}))
        assert status["agent_count"] == 3


def tinytown_task(r, agent, completed_at, state="completed", town="demo"):
    """A task as tinytown's agents leave it; returns its id."""
    tid = str(uuid.uuid4())
    r.hset("tt:%s:task:%s" % (town, tid), mapping={
        "id": tid, "description": "work", "state": state, "assigned_to": agent,
        "created_at": completed_at, "updated_at": completed_at, "completed_at": completed_at,
        "result": "done", "tags": "[]"})
    return tid


def test_get_result_follows_other_tools():
    """get_result keeps each agent's latest result between commands; the
    task notifications of other tools' writes keep it current."""
    with Stack() as s:
        s.bridge()
        a = ok(s.call("spawn", {"name": "doer"}))["agent"]["id"]
        assert ok(s.call("get_result", {"agent": "doer"}))["task"] is None
        first = tinytown_task(s.r, a, "2026-01-01T00:00:00+00:00")
        assert ok(s.call("get_result", {"agent": "doer"}))["task"]["id"] == first
        later = tinytown_task(s.r, a, "2026-01-02T00:00:00+00:00")
        tinytown_task(s.r, a, "2026-01-03T00:00:00+00:00", state="running")
        assert ok(s.call("get_result", {"agent": "doer"}))["task"]["id"] == later
        s.r.delete("tt:demo:task:%s" % later)
        assert ok(s.call("get_result", {"agent": "doer"}))["task"]["id"] == first


def test_a_stale_entry_never_acts_on_another_agent():
    with Stack() as s:
        # The check that notifications are still on comes too late to matter,
        # and state capture (which would turn them on again) is off.
        s.bridge(extra=["--set", "bridge.wait_sweep_interval_ms=3600000",
                        "--set", "events.capture=false"])
        alpha = tinytown_agent(s.r, "alpha", nickname="lead")
        delta = tinytown_agent(s.r, "delta")
        ok(s.call("interrupt", {"agent": "alpha"}))
        ok(s.call("interrupt", {"agent": "delta"}))

        # From here on the bridge hears of nothing: what it believes about
        # the town goes out of date.
        s.r.config_set("notify-keyspace-events", "")

        # The nickname moves to another agent: the reference follows it.
        s.r.hdel("tt:demo:agent:%s" % alpha, "nickname")
        s.r.hset("tt:demo:agent:%s" % delta, "nickname", "lead")
        assert ok(s.call("interrupt", {"agent": "lead"}))["agent"]["id"] == delta

        # alpha is renamed and a new agent takes its name.
        ok(s.call("resume", {"agent": "alpha"}))
        s.r.hset("tt:demo:agent:%s" % alpha, "name", "beta")
        gamma = tinytown_agent(s.r, "alpha")
        assert ok(s.call("interrupt", {"agent": "alpha"}))["agent"]["id"] == gamma
        assert state(s.r, alpha) == "idle" and state(s.r, gamma) == "paused"

        # Deleted by another tool: not found, and nothing written for it.
        s.r.delete("tt:demo:agent:%s" % gamma)
        err(s.call("resume", {"agent": "alpha"}), "agent_not_found")
        assert not s.r.exists("tt:demo:agent:%s" % gamma)


def test_notifications_turned_off_are_turned_on_again():
    with Stack() as s:
        b = s.bridge(extra=["--set", "bridge.wait_sweep_interval_ms=200"])
        tinytown_agent(s.r, "early")
        ok(s.call("interrupt", {"agent": "early"}))
        s.r.config_set("notify-keyspace-events", "")
        mid = tinytown_agent(s.r, "mid")
        b.wait_log("keyspace notifications had been turned off", 20)
        assert "K" in s.r.config_get("notify-keyspace-events")["notify-keyspace-events"]
        # What was written while they were off is known all the same.
        assert ok(s.call("interrupt", {"agent": "mid"}))["agent"]["id"] == mid
        late = tinytown_agent(s.r, "late")
        assert ok(s.call("interrupt", {"agent": "late"}))["agent"]["id"] == late


if __name__ == "__main__":
    run_tests(globals())
