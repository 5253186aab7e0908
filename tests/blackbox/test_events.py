#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Events out: every entry of the town stream reaches the events topic, in
order, byte for byte, across restarts and with two bridges; and state changes
made by others (this file plays a tinytown agent loop with python3-redis) are
captured as agent_state_changed events."""
import json
import signal
import time
import uuid

from kafka import KafkaConsumer, TopicPartition

from bridge_harness import EventReader, Stack
from harness import run_tests, wait_until

T0 = "2026-11-24T06:51:00+00:00"


class Events(EventReader):
    """Reads the events topic from the beginning, remembering every record."""

    def ids(self):
        return [r["id"] for r in self.poll()]

    def wait_for(self, pred, timeout=30, what="events"):
        return wait_until(lambda: pred(self.poll()), timeout, interval=0.02, what=what)

    def close(self):
        self.c.close()


def entry_id_key(eid):
    ms, seq = eid.split("-")
    return int(ms), int(seq)


def tinytown_agent(r, state="idle", name=None):
    aid = str(uuid.uuid4())
    r.hset("tt:demo:agent:" + aid, mapping={
        "id": aid, "name": name or "loop-" + aid[:4], "agent_type": "worker", "state": state,
        "cli": "claude", "created_at": T0, "last_heartbeat": T0, "tasks_completed": "0",
        "rounds_completed": "0", "last_active_at": T0, "spawn_mode": "fresh"})
    return aid


def tinytown_event(r, data):
    """An event as tinytown's EventStream.emit writes it (serde's compact JSON)."""
    doc = json.loads(data)
    eid = r.xadd("tt:demo:events", {"event_type": doc["event_type"], "data": data},
                 maxlen=1000, approximate=True)
    return eid.decode()


def check_stream_matches_topic(s, ev):
    """Every stream entry is on the topic exactly as written; per partition in order."""
    entries = s.r.xrange("tt:demo:events")
    by_id = {}
    for r in ev.records:
        by_id.setdefault(r["id"], []).append(r)
    for eid, fields in entries:
        eid = eid.decode()
        assert eid in by_id, "stream entry %s never reached Kafka" % eid
        rec = by_id[eid][0]
        assert rec["value"] == fields[b"data"], (rec["value"], fields[b"data"])
        data = json.loads(fields[b"data"])
        assert rec["headers"]["tt-town"] == "demo"
        assert rec["headers"]["tt-event-type"] == fields[b"event_type"].decode()
        assert rec["key"] == (data.get("agent_id") or "demo").encode()
    for p in {r["partition"] for r in ev.records}:
        seq = [entry_id_key(r["id"]) for r in ev.records if r["partition"] == p]
        firsts = []
        for x in seq:  # a redelivered tail may repeat; the first sightings are ordered
            if x not in firsts:
                firsts.append(x)
        assert firsts == sorted(firsts), "partition %d out of order" % p
    return by_id


def test_foreign_events_and_state_changes_reach_kafka_in_order():
    with Stack() as s:
        s.bridge()
        ev = Events(s)
        aid = tinytown_agent(s.r, "idle")
        ev.wait_for(lambda recs: any(json.loads(r["value"])["event_type"] == "agent_spawned"
                                     and json.loads(r["value"]).get("agent_id") == aid
                                     for r in recs), what="capture noticing a new agent")
        # tinytown's own event, with its own bytes (here: unusual spacing is impossible for
        # serde, but unicode and escapes are not), must be forwarded untouched.
        data = ('{"event_type":"task_assigned","agent_id":"%s","task_id":"t-1","message":'
                '"Assigned \\"docs\\" \u00e9t\u00e9","timestamp":"2026-11-24T06:51:00.5Z"}' % aid)
        own = tinytown_event(s.r, data)
        # An agent loop flips states without events; each flip is captured once.
        flips = ["working", "idle", "working", "error"]
        for state in flips:
            s.r.hset("tt:demo:agent:" + aid, "state", state)
            want = state.capitalize()
            ev.wait_for(lambda recs: any(json.loads(r["value"]).get("new_state") == want and
                                         json.loads(r["value"])["event_type"] == "agent_state_changed"
                                         and r["id"] > own for r in recs[-5:]),
                        what="captured change to %s" % want)
        # And the bridge's own commands' events.
        wid = s.call("spawn", {"name": "via-bridge"})["result"]["agent"]["id"]
        s.call("interrupt", {"agent": wid})
        ev.wait_for(lambda recs: len({r["id"] for r in recs}) >= s.r.xlen("tt:demo:events"),
                    what="every stream entry on the topic")
        by_id = check_stream_matches_topic(s, ev)
        assert by_id[own][0]["value"] == data.encode()
        changes = [json.loads(r["value"]) for r in ev.records
                   if json.loads(r["value"]).get("agent_id") == aid
                   and json.loads(r["value"])["event_type"] == "agent_state_changed"]
        assert [(c["old_state"], c["new_state"]) for c in changes] == [
            ("Idle", "Working"), ("Working", "Idle"), ("Idle", "Working"), ("Working", "Error")]
        # The bridge's own interrupt is reported once, by the bridge, not again by capture.
        mine = [json.loads(r["value"]) for r in ev.records
                if json.loads(r["value"]).get("agent_id") == wid]
        assert [m["event_type"] for m in mine] == ["agent_spawned", "agent_interrupted"], mine
        # Deleted by another tool: reported as removed.
        s.r.delete("tt:demo:agent:" + aid)
        ev.wait_for(lambda recs: any(json.loads(r["value"]).get("new_state") == "Removed"
                                     for r in recs), what="removal captured")
        ev.close()


def test_relay_restart_skips_nothing():
    with Stack() as s:
        b = s.bridge()
        ev = Events(s)
        aid = tinytown_agent(s.r, "idle")
        for i in range(300):
            tinytown_event(s.r, '{"event_type":"mission_event","agent_id":"%s","message":"m%d",'
                                '"timestamp":"2026-11-24T06:51:00Z"}' % (aid, i))
        ev.wait_for(lambda recs: len(recs) >= 50, what="some events relayed")
        b.kill()  # no goodbye: whatever was not acknowledged may come again
        for i in range(300, 600):
            tinytown_event(s.r, '{"event_type":"mission_event","agent_id":"%s","message":"m%d",'
                                '"timestamp":"2026-11-24T06:51:00Z"}' % (aid, i))
        s.bridge()
        n = s.r.xlen("tt:demo:events")
        ev.wait_for(lambda recs: len({r["id"] for r in recs}) >= n, 60, what="all events after restart")
        by_id = check_stream_matches_topic(s, ev)
        dups = sum(len(v) - 1 for v in by_id.values())
        assert dups < 300, "only the unacknowledged tail may repeat (%d repeats)" % dups
        ev.close()


def test_capture_catches_changes_missed_while_disconnected():
    with Stack() as s:
        b = s.bridge(extra=["--set", "events.reconcile_interval_ms=500"])
        ev = Events(s)
        aid = tinytown_agent(s.r, "idle")
        ev.wait_for(lambda recs: any(json.loads(r["value"]).get("agent_id") == aid for r in recs),
                    what="new agent captured")
        # Cut the bridge's subscriber connection and change state at once: the
        # notification is lost; the reconcile after the reconnect must catch it.
        s.r.client_kill_filter(_type="pubsub")
        s.r.hset("tt:demo:agent:" + aid, "state", "working")
        ev.wait_for(lambda recs: any(json.loads(r["value"]).get("new_state") == "Working" and
                                     json.loads(r["value"]).get("agent_id") == aid for r in recs),
                    what="change made while disconnected")
        changes = [r for r in ev.poll() if json.loads(r["value"]).get("new_state") == "Working"]
        assert len(changes) == 1
        assert b.stop() == 0
        ev.close()


def test_two_bridges_forward_each_event_once():
    with Stack() as s:
        s.bridge()
        s.bridge()
        ev = Events(s)
        aid = tinytown_agent(s.r, "idle")
        for i in range(200):
            tinytown_event(s.r, '{"event_type":"mission_event","agent_id":"%s","message":"m%d",'
                                '"timestamp":"2026-11-24T06:51:00Z"}' % (aid, i))
        for state in ("working", "idle"):
            s.r.hset("tt:demo:agent:" + aid, "state", state)
            ev.wait_for(lambda recs: any(json.loads(r["value"]).get("new_state") == state.capitalize()
                                         for r in recs), what="captured " + state)
        n = s.r.xlen("tt:demo:events")
        ev.wait_for(lambda recs: len({r["id"] for r in recs}) >= n, what="all events")
        time.sleep(1)  # would-be duplicates from a second relay have time to show up
        ev.poll()
        ids = [r["id"] for r in ev.records]
        assert len(ids) == len(set(ids)) == n, (len(ids), len(set(ids)), n)
        check_stream_matches_topic(s, ev)
        ev.close()


def test_cloudevents_headers():
    with Stack() as s:
        s.bridge(extra=["--set", "events.cloudevents=true"])
        ev = Events(s)
        s.call("spawn", {"name": "ce"})
        recs = ev.wait_for(lambda recs: recs, what="an event")
        h = recs[0]["headers"]
        assert h["ce_specversion"] == "1.0" and h["content-type"] == "application/json"
        assert h["ce_type"] == "io.tinytown.agent_spawned"
        assert h["ce_id"] == "demo/" + h["tt-event-id"] and h["ce_source"].endswith("/demo")
        assert h["ce_time"] == json.loads(recs[0]["value"])["timestamp"]
        ev.close()


run_tests(globals())
