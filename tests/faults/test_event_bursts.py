#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fault matrix, event bursts: no event the bridge writes is lost, however
many it writes at once, while tinytown's own streams keep tinytown's MAXLEN.

tinytown caps `tt:{town}:events` at about 1,000 entries, so a burst larger
than that (a prune of thousands of agents, state capture announcing thousands
of changes, a relay that is down or changing hands) used to reach Kafka only
in part. The bridge now keeps every event it writes in its own outbox until
Kafka has acknowledged it (docs/events.md). Checked here, from outside, with
kafka-python and python3-redis:
- a prune of 3,000 agents: 3,000 `Removed` events, distinct `tt-event-id`s,
  in stream order, no gap reported;
- 3,000 state changes made by a foreign writer at once: 3,000 captured events;
- tinytown's own events trimmed before they were relayed: one gap report per
  trimmed stretch, with the right count, and everything not trimmed relayed,
  bridge events written meanwhile included;
- the relaying bridge SIGKILLed mid-burst: a second bridge takes over the
  lease and nothing is lost (repeats carry the same id and bytes).
- an outbox key of the wrong type refuses every change before its first write.
"""
import json
import re
import subprocess
import time
import uuid

from kafka import KafkaConsumer, TopicPartition

from bridge_harness import EventReader, Stack, bridge_path
from harness import RedisServer, mock_kafka_only, run_tests, wait_until

T0 = "2026-11-24T06:51:00+00:00"
BURST = 3000
LEASE = ["--set", "events.relay_lease_ms=1000"]


class Events(EventReader):
    """Reads the events topic from the beginning, remembering every record;
    fetches up to 4 MiB a partition (bursts of thousands)."""

    def __init__(self, stack):
        super().__init__(stack, fetch_bytes=4 << 20)

    def drain(self, timeout=30):
        """Reads up to the end of every partition as it is now."""
        ends = self.c.end_offsets(list(self.c.assignment()))
        wait_until(lambda: self.poll() is not None and all(
            self.c.position(tp) >= end for tp, end in ends.items()), timeout, interval=0.02,
            what="the events topic read to its end")
        return self.records

    def distinct(self, pred=lambda r: True):
        return {r["id"] for r in self.poll() if pred(r)}

    def wait_count(self, pred, n, timeout, what):
        wait_until(lambda: len(self.distinct(pred)) >= n, timeout, interval=0.05,
                   what=lambda: "%s: %d of %d" % (what, len(self.distinct(pred)), n))

    def close(self):
        self.c.close()


def id_key(eid):
    ms, seq = eid.split("-")
    return int(ms), int(seq)


def tinytown_agents(r, n, state, town="demo"):
    """n agents written the way tinytown saves them (one pipeline)."""
    ids = [str(uuid.uuid4()) for _ in range(n)]
    pipe = r.pipeline(transaction=False)
    for i, aid in enumerate(ids):
        pipe.hset("tt:%s:agent:%s" % (town, aid), mapping={
            "id": aid, "name": "bulk-%d" % i, "agent_type": "worker", "state": state,
            "cli": "claude", "created_at": T0, "last_heartbeat": T0, "tasks_completed": "0",
            "rounds_completed": "0", "last_active_at": T0, "spawn_mode": "fresh"})
    pipe.execute()
    return ids


def tinytown_events(r, n, tag, town="demo"):
    """n events as tinytown's EventStream.emit writes them; returns their ids."""
    pipe = r.pipeline(transaction=False)
    for i in range(n):
        data = ('{"event_type":"mission_event","mission_id":"m-1","message":"%s %d",'
                '"timestamp":"2026-11-24T06:51:00Z"}' % (tag, i))
        pipe.xadd("tt:%s:events" % town, {"event_type": "mission_event", "data": data},
                  maxlen=1000, approximate=True)
    return [eid.decode() for eid in pipe.execute()]


def wait_baseline(s, town="demo"):
    """State capture has recorded the town's agents (silently, first sight)."""
    def done():
        v = s.r.get("ttb:%s:observed:baseline" % town)
        return v is not None and v != b"pending"
    wait_until(done, 60, interval=0.05, what="state capture's first look at the town")


def is_removed(r):
    return r["doc"].get("new_state") == "Removed"


def relay_gaps(log):
    """The `missing=` counts of every gap line in a bridge log."""
    return [m for m in re.findall(r"relay gap[^\n]*missing=(\S+)", log)]


def check_stream_entries_are_tinytowns(s, town="demo"):
    """tt:{town}:events keeps tinytown's shape and cap: two fields per entry,
    about 1,000 entries (MAXLEN ~ 1000)."""
    entries = s.r.xrange("tt:%s:events" % town)
    assert len(entries) <= 1100, "tinytown's MAXLEN was not kept: %d entries" % len(entries)
    for _, fields in entries:
        assert sorted(fields) == [b"data", b"event_type"], fields
    return entries


def check_ordered_and_identical(ev):
    """Per partition the first sighting of each id is in stream order, and a
    repeated id (redelivery) carries the same bytes."""
    by_id = {}
    for r in ev.records:
        first = by_id.setdefault(r["id"], r)
        assert first["value"] == r["value"] and first["key"] == r["key"], \
            "id %s delivered with different bytes" % r["id"]
    for p in {r["partition"] for r in ev.records}:
        firsts, seen = [], set()
        for r in ev.records:
            if r["partition"] == p and r["id"] not in seen:
                seen.add(r["id"])
                firsts.append(id_key(r["id"]))
        assert firsts == sorted(firsts), "partition %d out of stream order" % p
    return by_id


def wait_all_acknowledged(s, town="demo"):
    """The relay's cursor is at the newest entry (Kafka acknowledged all of
    it, so nothing more is coming) and the outbox was trimmed up to it."""
    def done():
        last = s.r.xrevrange("tt:%s:events" % town, count=1)
        return (last and s.r.get("ttb:%s:relay:cursor" % town) == last[0][0]
                and s.r.xlen("ttb:%s:outbox" % town) == 0)
    wait_until(done, 30, interval=0.05,
               what=lambda: "everything acknowledged (cursor %r, %d left in the outbox)"
               % (s.r.get("ttb:%s:relay:cursor" % town), s.r.xlen("ttb:%s:outbox" % town)))


def test_prune_of_3000_agents_loses_no_removed_event():
    with Stack() as s:
        agents = tinytown_agents(s.r, BURST, "stopped")
        b = s.bridge()
        wait_baseline(s)
        ev = Events(s)
        t0 = time.monotonic()
        # One command, one script, 3,000 events. Its result lists 3,000
        # agents, more than a default broker takes in one record: the bridge
        # may answer too_large (the change applied) instead of the list.
        doc = s.call("prune", {"all": True}, timeout=120)
        applied = time.monotonic() - t0
        assert doc["ok"] or (doc["error"]["code"] == "too_large"
                             and "applied" in doc["error"]["message"]), doc
        assert not any(s.r.exists("tt:demo:agent:" + a) for a in agents), "not all removed"
        ev.wait_count(is_removed, BURST, 60, "Removed events on the topic")
        relayed = time.monotonic() - t0
        wait_all_acknowledged(s)
        ev.drain()  # would-be extras (repeats, strays) are on the topic by now
        gone = [r for r in ev.records if is_removed(r)]
        assert len(gone) == BURST, "%d Removed records for %d agents" % (len(gone), BURST)
        assert sorted(r["doc"]["agent_id"] for r in gone) == sorted(agents)
        assert len({r["id"] for r in gone}) == BURST, "tt-event-ids are not distinct"
        for r in gone:
            assert r["headers"]["tt-town"] == "demo"
            assert r["headers"]["tt-event-type"] == "agent_state_changed"
            assert r["key"] == r["doc"]["agent_id"].encode()
        by_id = check_ordered_and_identical(ev)
        # What tinytown's own readers see is unchanged: the newest ~1,000
        # entries, the same bytes Kafka got, under the same ids.
        for eid, fields in check_stream_entries_are_tinytowns(s):
            assert by_id[eid.decode()]["value"] == fields[b"data"]
        assert not relay_gaps(b.log_text()), "gap reported:\n" + b.tail()
        print("prune of %d: applied in %.1fs, all events on Kafka after %.1fs"
              % (BURST, applied, relayed), flush=True)
        assert b.stop() == 0
        ev.close()


def flip_all(r, agents, state):
    """An agent loop's kind of write (the hash's state, no event), for every
    agent at once."""
    pipe = r.pipeline(transaction=False)
    for aid in agents:
        pipe.hset("tt:demo:agent:" + aid, "state", state)
    pipe.execute()


def test_capture_of_3000_foreign_changes_at_once_loses_none():
    with Stack() as s:
        agents = tinytown_agents(s.r, BURST, "idle")
        b = s.bridge(extra=LEASE)
        wait_baseline(s)
        ev = Events(s)

        def became(state):
            return lambda r: r["doc"].get("new_state") == state

        # With the relay keeping up.
        t0 = time.monotonic()
        flip_all(s.r, agents, "working")
        ev.wait_count(became("Working"), BURST, 90, "captured Idle -> Working events")
        took = time.monotonic() - t0

        # With the relay away: its lease is held by a bridge that died, and
        # runs out only after the burst was captured.
        mark = len(b.log_text())
        s.r.set("ttb:demo:relay:lease", "crashed-bridge:1:00000000")
        b.wait_log("relay stopped for town", 30, after=mark)
        flip_all(s.r, agents, "idle")
        wait_until(lambda: set(s.r.hvals("ttb:demo:observed")) == {b"idle"}, 60, interval=0.05,
                   what="state capture recording the second burst")
        assert s.r.xlen("tt:demo:events") <= 1100  # tinytown's MAXLEN trimmed the rest
        s.r.delete("ttb:demo:relay:lease")
        ev.wait_count(became("Idle"), BURST, 90, "captured Working -> Idle events")
        wait_all_acknowledged(s)
        ev.drain()
        for old, new in (("Idle", "Working"), ("Working", "Idle")):
            changes = [r for r in ev.records if became(new)(r)]
            assert len(changes) == BURST, "%d records for %d changes" % (len(changes), BURST)
            assert sorted(r["doc"]["agent_id"] for r in changes) == sorted(agents)
            assert all(r["doc"]["old_state"] == old for r in changes)
        check_ordered_and_identical(ev)
        check_stream_entries_are_tinytowns(s)
        assert not relay_gaps(b.log_text()), "gap reported:\n" + b.tail()
        print("capture of %d changes: all on Kafka after %.1fs" % (BURST, took), flush=True)
        assert b.stop() == 0
        ev.close()


def test_trimmed_foreign_events_are_a_counted_gap_and_the_rest_is_relayed():
    with Stack() as s:
        quiet = ["--set", "events.capture=false"]
        stopped = tinytown_agents(s.r, 500, "stopped")
        a = s.bridge(extra=quiet)
        ev = Events(s)
        early = tinytown_events(s.r, 20, "early")
        ev.wait_count(lambda r: True, 20, 30, "tinytown events relayed")
        wait_until(lambda: s.r.get("ttb:demo:relay:cursor") == early[-1].encode(), 30,
                   what="cursor at the last relayed entry")
        assert a.stop() == 0  # the relay is away: nobody reads the stream
        cursor_ord = int(s.r.get("ttb:demo:relay:cursor:ordinal"))

        # Meanwhile: tinytown writes 1,500 events, a bridge without a relay
        # prunes 500 agents, tinytown writes 1,500 more. The stream keeps
        # the last ~1,000: all of the prune's events and most of tinytown's
        # are trimmed before anyone relays them.
        before = tinytown_events(s.r, 1500, "before")
        b = s.bridge(extra=quiet + ["--set", "events.relay=false"])
        doc = s.call("prune", {}, timeout=60)
        assert len(doc["result"]["removed"]) == 500, doc
        assert b.stop() == 0
        after = tinytown_events(s.r, 1500, "after")
        entries = check_stream_entries_are_tinytowns(s)
        kept = {eid.decode() for eid, _ in entries}
        info = s.r.xinfo_stream("tt:demo:events")
        added = info["entries-added"]
        trimmed_since_cursor = added - info["length"] - cursor_ord
        # Only tinytown's own entries can be lost; the bridge's 500 wait in its outbox.
        missing = trimmed_since_cursor - 500
        assert missing > 0 and not kept & set(before)
        lost = [eid for eid in before + after if eid not in kept]
        assert len(lost) == missing, (len(lost), missing)

        c = s.bridge(extra=quiet)
        want = set(early) | {eid for eid in after if eid in kept}
        ev.wait_count(lambda r: r["id"] in want, len(want), 60, "untrimmed tinytown events")
        ev.wait_count(is_removed, 500, 60, "the prune's Removed events")
        c.wait_log("relay gap", 30)
        wait_all_acknowledged(s)
        ev.drain()
        got = {r["id"] for r in ev.records}
        assert not got & set(lost), "a trimmed entry cannot have been relayed"
        assert sorted(r["doc"]["agent_id"] for r in ev.records if is_removed(r)) == sorted(stopped)
        gaps = relay_gaps(c.log_text())
        assert sum(int(g) for g in gaps) == missing, "gap lines %r, expected %d missing" % (gaps, missing)
        assert len(gaps) == 2, "one report per trimmed stretch (before and after the prune): %r" % gaps
        assert len(got) == 20 + 500 + len(kept & set(after)), len(got)
        check_ordered_and_identical(ev)
        assert c.stop() == 0
        ev.close()


def relay_holder(s):
    lease = s.r.get("ttb:demo:relay:lease")
    return lease.decode() if lease else None


@mock_kafka_only("slows the broker's answers (ttb-broker --control)")
def test_relay_takeover_after_sigkill_mid_burst_loses_nothing():
    """The burst: a prune of 1,500 stopped agents, then of the other 1,500.
    The first half reaches Kafka; then the broker answers slowly (1.5 s), so
    the relaying bridge holds the second half unacknowledged when it dies
    (SIGKILL: no cursor saved, no lease given back), right after the second
    prune wrote it. The second bridge takes over once the dead one's lease
    runs out."""
    with Stack() as s:
        half = BURST // 2
        stopped = tinytown_agents(s.r, half, "stopped")
        idle = tinytown_agents(s.r, BURST - half, "idle")
        a = s.bridge(extra=LEASE)
        wait_until(lambda: (relay_holder(s) or "").split(":")[1:2] == [str(a.proc.pid)], 30,
                   what="the first bridge holding the relay lease")
        wait_baseline(s)
        b = s.bridge(extra=LEASE)
        ev = Events(s)
        first = s.send("prune", {})
        ev.wait_count(is_removed, half, 60, "the first half of the burst")
        wait_until(lambda: s.r.get("ttb:demo:relay:cursor:ordinal") == str(half).encode(), 30,
                   what="the relay's cursor after the first half")

        s.kafka.inject("rtt -1 1500")
        second = s.send("prune", {"all": True})
        wait_until(lambda: s.r.xlen("ttb:demo:outbox") >= BURST - half, 60, interval=0.05,
                   what="the second half written")
        assert s.r.xlen("tt:demo:events") <= 1100  # tinytown's MAXLEN trimmed the rest
        a.kill()
        assert s.r.get("ttb:demo:relay:cursor:ordinal") == str(half).encode()
        s.kafka.inject("rtt -1 0")

        s.results_for([first, second], timeout=90)
        removed = [x["id"] for c in (first, second) for x in s.seen[c][0]["doc"]["result"]["removed"]]
        assert sorted(removed) == sorted(stopped + idle)
        wait_until(lambda: (relay_holder(s) or "").split(":")[1:2] == [str(b.proc.pid)], 30,
                   what="the second bridge taking over the relay lease")
        ev.wait_count(is_removed, BURST, 60, "Removed events after the takeover")
        wait_all_acknowledged(s)
        ev.drain()
        gone = [r for r in ev.records if is_removed(r)]
        assert sorted({r["doc"]["agent_id"] for r in gone}) == sorted(stopped + idle)
        assert len({r["id"] for r in gone}) == BURST, "one tt-event-id per event"
        check_ordered_and_identical(ev)
        assert not relay_gaps(b.log_text()), "gap reported:\n" + b.tail()
        print("takeover: %d records for %d events (repeats carry their first id and bytes)"
              % (len(gone), BURST), flush=True)
        assert b.stop() == 0
        ev.close()


def apply_lines(redis_url, lines):
    """`tinytown-bridge apply`: commands straight through Redis, no Kafka."""
    p = subprocess.run([bridge_path(), "--set", "redis.url=" + redis_url,
                        "--set", "bridge.towns=demo", "--set", "bridge.default_town=demo",
                        "apply"], input="\n".join(json.dumps(l) for l in lines) + "\n",
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    return [json.loads(l) for l in p.stdout.splitlines() if l.strip()]


def test_outbox_of_wrong_type_refuses_every_change_before_writing():
    """The outbox is checked with the other keys a script may write: one
    holding something else refuses the command, and Redis is left as it was
    apart from the command's idempotency record."""
    with RedisServer() as rs:
        r = rs.client()
        res = apply_lines(rs.url, [{"id": "s-a", "op": "spawn", "args": {"name": "a"}},
                                   {"id": "s-b", "op": "spawn", "args": {"name": "b"}},
                                   {"id": "k-b", "op": "kill", "args": {"agent": "b"}}])
        assert all(d["ok"] for d in res), res
        r.delete("ttb:demo:outbox")
        r.set("ttb:demo:outbox", "wrong type")
        cmds = [{"id": "c-spawn", "op": "spawn", "args": {"name": "c"}},
                {"id": "c-int", "op": "interrupt", "args": {"agent": "a"}},
                {"id": "c-kill", "op": "kill", "args": {"agent": "a"}},
                {"id": "c-stopall", "op": "stop_all"},
                {"id": "c-prune", "op": "prune"}]
        for cmd in cmds:
            before = {k: r.dump(k) for k in r.scan_iter("*")}
            [doc] = apply_lines(rs.url, [cmd])
            assert doc["ok"] is False and doc["error"]["code"] == "internal", doc
            assert "ttb:demo:outbox" in doc["error"]["message"], doc
            after = {k: r.dump(k) for k in r.scan_iter("*")}
            changed = sorted(k.decode() for k in set(before) | set(after)
                             if before.get(k) != after.get(k))
            assert all(k.startswith("ttb:demo:cmds") for k in changed), (cmd, changed)


run_tests(globals())
