#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""kafka.exactly_once on a real Apache Kafka broker (the mock accepts the
transactional calls without their semantics). A read_committed consumer
(confluent-kafka, i.e. librdkafka; not kafka-python, which returns aborted
records and control records alike) must see exactly one result per command
id, one dead letter per bad record and one event per stream entry, none
missing, through SIGKILLs, pending waits, a rebalance, a broker restart and
a fenced zombie; and a stop with the broker gone ends within its bound."""
import contextlib
import json
import re
import signal
import time
import uuid

from confluent_kafka import Consumer, TopicPartition

from bridge_harness import Stack, ok
from harness import run_tests, wait_until

EOS = ["--set", "kafka.exactly_once=true"]


class Committed:
    """Reads a topic from the beginning as read_committed consumers do,
    remembering every record."""

    def __init__(self, stack, topic):
        self.c = Consumer({"bootstrap.servers": stack.kafka.bootstrap,
                           "group.id": "reader-" + uuid.uuid4().hex[:8],
                           "isolation.level": "read_committed",
                           "enable.auto.commit": False, "enable.partition.eof": False,
                           "fetch.wait.max.ms": 50})
        md = self.c.list_topics(topic, timeout=10)
        self.c.assign([TopicPartition(topic, p, 0) for p in md.topics[topic].partitions])
        self.records = []

    def poll(self):
        for m in self.c.consume(10000, 0.2):
            if m.error():
                continue
            self.records.append({"key": m.key(), "value": m.value(),
                                 "headers": {k: v.decode() for k, v in (m.headers() or [])}})
        return self.records

    def close(self):
        self.c.close()


@contextlib.contextmanager
def readers(s):
    """The results, dead-letter and events topics read committed; closed
    before the stack deletes its topics (librdkafka 2.0.2's consumer close
    hangs on a deleted topic, #4187)."""
    rs = [Committed(s, t) for t in (s.results, s.dlq, s.events)]
    try:
        yield rs
    finally:
        for r in rs:
            r.close()


def by_header(records, *names):
    """How often each value (a tuple of values with several names) occurs."""
    counts = {}
    for r in records:
        v = tuple(r["headers"].get(n) for n in names)
        v = v[0] if len(v) == 1 else v
        counts[v] = counts.get(v, 0) + 1
    return counts


def demo_events(events):
    return by_header([r for r in events.poll() if r["headers"].get("tt-town") == "demo"],
                     "tt-event-id")


def result_counts(results):
    counts = {}
    for r in results.records:
        cid = json.loads(r["value"])["id"]
        counts[cid] = counts.get(cid, 0) + 1
    return counts


def wait_results(results, ids, timeout, bridges=()):
    want = set(ids)

    def have():
        results.poll()
        return want <= set(result_counts(results))
    wait_until(have, timeout, interval=0.2,
               what=lambda: "results for %d ids; bridge log:\n%s" % (
                   len(want - set(result_counts(results))),
                   "\n".join(b.tail(15) for b in bridges)))


AGENTS = 8


def eos_bridge(s, name, extra=(), wait_assigned=True):
    return s.bridge(EOS + ["--set", "kafka.transactional_id=%s.%s" % (s.group_id, name),
                           "--set", "events.relay_lease_ms=2000"] + list(extra),
                    wait_assigned=wait_assigned)


def spawn_agents(s, results):
    """Spawns the agents (results read committed: kafka-python's reader, in
    s.call, would return the transactions' control records as results)."""
    ids = [s.send("spawn", {"name": "eos-%d" % i}) for i in range(AGENTS)]
    wait_results(results, ids, 60, s.bridges)
    docs = {}
    for r in results.records:
        doc = json.loads(r["value"])
        docs[doc["id"]] = doc
    agents = [ok(docs[cid])["agent"]["id"] for cid in ids]
    for aid in agents:
        s.r.hset("tt:demo:agent:" + aid, "state", "idle")
    return agents


def produce_commands(s, agents, first, last, bad_every=50):
    """interrupt/resume rounds over the agents (every one emits an event),
    a bad record every `bad_every` commands; returns (ids, bad count)."""
    ids, bad = [], 0
    for n in range(first, last):
        i = n % AGENTS
        op = "interrupt" if (n // AGENTS) % 2 == 0 else "resume"
        cid = "eos-%d" % n
        s.producer.send(s.commands, key=agents[i].encode(), value=json.dumps(
            {"id": cid, "op": op, "args": {"agent": agents[i]}}).encode())
        ids.append(cid)
        if n % bad_every == bad_every - 1:
            s.producer.send(s.commands, value=b"{not json %d" % n)
            bad += 1
    s.producer.flush()
    return ids, bad


def entries_added(s):
    info = s.r.xinfo_stream("tt:demo:events")
    return info["entries-added"]


def check_exactly_once(s, results, dlq, events, ids, bad, bridges, timeout=120):
    """Waits for every result, dead letter and event, then asserts each came once."""
    wait_results(results, ids, timeout, bridges)
    wait_until(lambda: len(dlq.poll()) >= bad, 60, what="%d dead letters" % bad)

    wait_until(lambda: len(demo_events(events)) >= entries_added(s), 60, interval=0.2,
               what=lambda: "events: %d of %d" % (len(demo_events(events)), entries_added(s)))
    for b in bridges:
        assert b.stop() == 0, b.tail()
    results.poll()
    dlq.poll()
    counts = result_counts(results)
    # A record that is not JSON has a result with a null id: one per record.
    null_ids = counts.pop(None, 0)
    assert null_ids == bad, (null_ids, bad)
    twice = {cid: n for cid, n in counts.items() if n != 1}
    assert not twice, "results seen more than once: %s" % sorted(twice.items())[:10]
    assert set(ids) <= set(counts)
    letters = by_header(dlq.records, "tt-source-partition", "tt-source-offset")
    assert len(letters) == bad and all(n == 1 for n in letters.values()), (letters, bad)
    ev = demo_events(events)
    assert all(n == 1 for n in ev.values()), sorted(i for i, n in ev.items() if n > 1)[:10]
    # One per stream entry: the stream has counted every entry ever added.
    assert len(ev) == entries_added(s), (len(ev), entries_added(s))


def test_a_round_trip_commits_once():
    with Stack() as s, readers(s) as (results, dlq, _):
        b = eos_bridge(s, "rt")
        ids = [s.send("list") for _ in range(20)]
        for i in range(3):
            s.producer.send(s.commands, value=b"not json %d" % i)
        s.producer.flush()
        wait_results(results, ids, 60, [b])
        wait_until(lambda: len(dlq.poll()) >= 3, 30, what="three dead letters")
        assert b.stop() == 0
        results.poll()
        counts = result_counts(results)
        assert all(counts[i] == 1 for i in ids), counts
        assert len(dlq.poll()) == 3
        assert re.search(r"msg=transactions committed=[1-9]", b.log_text()), b.tail()


def test_sigkill_repeatedly_loses_and_repeats_nothing():
    with Stack() as s, readers(s) as (results, dlq, events):
        b = eos_bridge(s, "b0")
        agents = spawn_agents(s, results)
        ids, bad = [], 0
        for k in range(5):
            # A chunk of commands, and a SIGKILL once some of it is committed:
            # mid-chunk, with transactions open and results in flight.
            before = len(result_counts(results))
            more, more_bad = produce_commands(s, agents, k * 600, (k + 1) * 600)
            ids += more
            bad += more_bad
            wait_until(lambda: results.poll() and len(result_counts(results)) >= before + 100,
                       60, interval=0.01, what=lambda: "progress before kill %d\n%s" % (
                           k, b.tail()))
            b.signal(signal.SIGKILL)
            b.wait(10)
            b.start()
        check_exactly_once(s, results, dlq, events, ids, bad, [b])



def test_pending_waits_commit_once_across_a_sigkill():
    """A wait is answered long after its record was taken: the records behind
    it commit meanwhile, the wait is listed with the committed offset, and a
    restarted bridge takes up exactly the waits."""
    with Stack() as s, readers(s) as (results, dlq, events):
        b = eos_bridge(s, "w")
        agents = spawn_agents(s, results)
        waits = [s.send("wait", {"agent": a, "timeout_ms": 120000}) for a in agents]
        ids, bad = produce_commands(s, agents, 0, 400)
        wait_results(results, ids, 60, [b])
        assert not set(waits) & set(result_counts(results))
        b.signal(signal.SIGKILL)
        b.wait(10)
        mark = len(b.log_text())
        b.start()
        b.wait_log('msg="pending waits taken over"', 60, after=mark)
        more, more_bad = produce_commands(s, agents, 400, 600)
        kills = [s.send("kill", {"agent": a}) for a in agents]  # the waits end
        check_exactly_once(s, results, dlq, events, ids + more + waits + kills, bad + more_bad,
                           [b])
        docs = {json.loads(r["value"])["id"]: json.loads(r["value"]) for r in results.records}
        assert all(ok(docs[w])["timed_out"] is False for w in waits), [docs[w] for w in waits]


def test_two_bridges_a_rebalance_and_a_broker_restart():
    with Stack() as s, readers(s) as (results, dlq, events):
        a = eos_bridge(s, "a")
        agents = spawn_agents(s, results)
        ids, bad = produce_commands(s, agents, 0, 800)
        b = eos_bridge(s, "b", wait_assigned=False)  # joins mid-stream
        b.assigned(60)
        a.wait_log("partitions revoked", 60)
        more, more_bad = produce_commands(s, agents, 800, 1600)
        ids, bad = ids + more, bad + more_bad
        before = len(result_counts(results))
        wait_until(lambda: results.poll() and len(result_counts(results)) >= before + 100, 60,
                   interval=0.01, what="progress before the broker restart")
        s.kafka.restart()
        more, more_bad = produce_commands(s, agents, 1600, 2400)
        ids, bad = ids + more, bad + more_bad
        check_exactly_once(s, results, dlq, events, ids, bad, [a, b], timeout=180)
        assert "msg=command" in b.log_text(), "the second bridge answered nothing"


def test_a_fenced_zombie_commits_nothing():
    """A bridge stopped (SIGSTOP) past its session timeout loses its
    partitions and its relay lease; resumed, whatever it had open is
    refused by Kafka, and the group's results stay exactly once."""
    with Stack() as s, readers(s) as (results, dlq, events):
        a = eos_bridge(s, "a")
        b = eos_bridge(s, "b", wait_assigned=False)
        b.assigned(60)
        agents = spawn_agents(s, results)
        ids, bad = produce_commands(s, agents, 0, 1500)
        before = len(result_counts(results))
        wait_until(lambda: results.poll() and len(result_counts(results)) >= before + 100, 60,
                   interval=0.01, what="progress before the stop")
        mark_a, mark_b = len(a.log_text()), len(b.log_text())
        a.signal(signal.SIGSTOP)
        try:
            wait_until(lambda: 'msg="partitions assigned" count=4' in b.log_text()[mark_b:], 60,
                       what=lambda: "the other bridge taking every partition\n" + b.tail())
            more, more_bad = produce_commands(s, agents, 1500, 2000)
            ids, bad = ids + more, bad + more_bad
            wait_results(results, ids, 120, [b])
        finally:
            a.signal(signal.SIGCONT)
        wait_until(lambda: re.search(r'msg="(partitions lost|transaction aborted)',
                                     a.log_text()[mark_a:]), 60,
                   what=lambda: "the zombie noticing it was fenced\n" + a.tail())
        check_exactly_once(s, results, dlq, events, ids, bad, [a, b])



def test_sigterm_with_kafka_gone_stops_within_the_bound():
    """With the broker gone, a commit may wait (librdkafka 2.0.2's
    send_offsets_to_transaction, forever): the stop still ends, with status
    0, at the latest 3 s after bridge.shutdown_timeout_ms. (Last: it stops
    the module's broker; a later stack would get a new one.)"""
    with Stack() as s:
        b = eos_bridge(s, "t", ["--set", "bridge.shutdown_timeout_ms=5000"])
        results = Committed(s, s.results)
        try:
            agents = spawn_agents(s, results)
            produce_commands(s, agents, 0, 400)
        finally:
            results.close()
        s.kafka.stop()
        started = time.monotonic()
        assert b.stop(timeout=30) == 0, b.tail()
        took = time.monotonic() - started
        assert took < 5 + 3 + 2, "stopping took %.1f s (bound 5 s)\n%s" % (took, b.tail())


run_tests(globals())
