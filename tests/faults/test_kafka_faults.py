#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Fault matrix, Kafka side: the built bridge against the embedded broker
(librdkafka's mock cluster) with faults injected through its control
channel, while commands flow.

Invariants, every time: the process stays up; every command id gets a
result, always the same bytes; each change is applied once (one event per
transition); a record Kafka refuses is that record's problem.
"""
import json
import signal

from kafka import KafkaProducer

from bridge_harness import Stack, ok
from harness import run_tests, wait_until



def interrupted_events(s):
    return [f for _, f in s.r.xrange("tt:demo:events") if f[b"event_type"] == b"agent_interrupted"]


def retrying_producer(s):
    """Injected produce errors hit every client of the broker, the test's
    own producer too: give it retries, as any real producer has."""
    s.producer.close()
    s.producer = KafkaProducer(bootstrap_servers=s.kafka.bootstrap, acks="all", linger_ms=0,
                               retries=50, retry_backoff_ms=100)


class Flow:
    """A bridge, a few agents, and interrupt/resume pairs sent in rounds."""

    def __init__(self, s, agents=4, extra=()):
        self.s = s
        retrying_producer(s)
        self.b = s.bridge(extra=list(extra))
        self.names = ["k%d" % i for i in range(agents)]
        for n in self.names:
            ok(s.call("spawn", {"name": n}))
        self.ids = []

    def send_round(self):
        for n in self.names:
            self.ids.append(("interrupt", self.s.send("interrupt", {"agent": n})))
            self.ids.append(("resume", self.s.send("resume", {"agent": n})))

    def check(self, timeout=90):
        s = self.s
        s.results_for([cid for _, cid in self.ids], timeout=timeout)
        for op, cid in self.ids:
            docs = {json.dumps(r["doc"], sort_keys=True) for r in s.seen[cid]}
            assert len(docs) == 1, "different results for %s: %r" % (cid, docs)
            ok(s.seen[cid][0]["doc"])
        rounds = sum(1 for op, _ in self.ids if op == "interrupt")
        assert len(interrupted_events(s)) == rounds, "each interrupt applied once"
        assert self.b.proc.poll() is None, "bridge exited:\n" + self.b.tail()
        assert self.b.stop() == 0


def test_broker_down_and_up():
    with Stack() as s:
        f = Flow(s, extra=["--set", "kafka.producer_properties=socket.connection.setup.timeout.ms="
                                    "3000,reconnect.backoff.max.ms=1000"])
        f.send_round()
        s.kafka.inject("broker-down 1")
        mark = len(f.b.log_text())
        # The bridge notices (its producer and consumer lose the broker).
        f.b.wait_log("level=", 20, after=mark)
        s.kafka.inject("broker-up 1")
        f.send_round()
        f.check()


def test_leader_and_coordinator_moves():
    with Stack(brokers=3) as s:
        f = Flow(s)
        f.send_round()
        for p in range(4):
            s.kafka.inject("leader tinytown.commands %d %d" % (p, 2 + p % 2))
            s.kafka.inject("leader tinytown.results %d %d" % (p, 3 - p % 2))
        f.send_round()
        s.kafka.inject("coordinator group tinytown-bridge 3")
        f.send_round()
        f.check()


def test_retriable_produce_errors_and_a_slow_broker():
    with Stack() as s:
        f = Flow(s)
        s.kafka.inject("request-errors Produce 5 NOT_ENOUGH_REPLICAS")
        f.send_round()
        s.kafka.inject("rtt 1 300")
        f.send_round()
        s.kafka.inject("rtt 1 0")
        f.send_round()
        f.check()


def answers_under_produce_errors(s, b, injection):
    """Three commands held back (Redis down) until `injection` is armed, so
    that the bridge's results, not the test's commands, meet it; returns
    their ids once all are answered."""
    ok(s.call("spawn", {"name": "x"}))
    s.redis.pause()
    ids = [s.send("list") for _ in range(3)]
    b.wait_log("redis unavailable", 20)
    s.kafka.inject(injection)
    s.redis.resume()
    s.results_for(ids, timeout=60)
    return ids


def test_records_kafka_refuses_become_too_large_answers():
    """The broker refuses the result records (MSG_SIZE_TOO_LARGE): each
    command is answered too_large instead, the bridge goes on."""
    with Stack() as s:
        b = s.bridge()
        ids = answers_under_produce_errors(s, b, "request-errors Produce 3 MSG_SIZE_TOO_LARGE")
        codes = [s.seen[i][0]["doc"].get("error", {}).get("code", "ok") for i in ids]
        assert set(codes) <= {"too_large", "ok"} and "too_large" in codes, codes
        for i in ids:
            doc = s.seen[i][0]["doc"]
            if not doc["ok"]:
                assert "args.limit" in doc["error"]["message"], doc
        # Later commands are answered as usual.
        assert ok(s.call("list"))["agents"] == []  # Redis restarted empty
        assert b.proc.poll() is None
        assert b.stop() == 0


def test_big_listings_page_and_the_unpaged_one_says_too_large():
    with Stack() as s:
        b = s.bridge(extra=["--set", "kafka.producer_properties=message.max.bytes=30000"])
        b.wait_log("largest result record", 20)
        names = ["agent-%03d" % i for i in range(120)]
        for n in names:
            s.send("spawn", {"name": n}, key=n.encode())
        wait_until(lambda: len(list(s.r.scan_iter("tt:demo:agent:*"))) == len(names), 60,
                   what="120 agents")
        doc = s.call("list")
        assert doc["ok"] is False and doc["error"]["code"] == "too_large", doc
        assert "args.limit" in doc["error"]["message"]
        seen, after, pages = [], None, 0
        while True:
            args = {"limit": 50}
            if after:
                args["after"] = after
            page = ok(s.call("list", args))
            pages += 1
            seen += [a["name"] for a in page["agents"]]
            if not page["more"]:
                break
            after = page["next"]
        assert pages == 3 and sorted(seen) == names and len(set(seen)) == len(seen)
        st = ok(s.call("status", {"limit": 5}))
        assert st["agent_count"] == 120 and len(st["agents"]) == 5 and st["more"] is True
        # Bulk operations page too: stop_all 50 at a time.
        total = 0
        while True:
            res = ok(s.call("stop_all", {"limit": 50}))
            total += len(res["stopped"])
            if not res["more"]:
                break
        assert total == 120
        assert ok(s.call("list_open", {"limit": 10}))["agents"] == []
        removed = ok(s.call("prune", {"limit": 40}))
        assert len(removed["removed"]) == 40 and removed["more"] is True
        # A page whose answer is too big is still applied, and says so.
        doc = s.call("prune")  # the 80 left: about 32 kB of answer
        assert doc["error"]["code"] == "too_large", doc
        assert "the change itself was applied" in doc["error"]["message"]
        removed = ok(s.call("prune", {"limit": 40}))
        assert removed["removed"] == [] and removed["more"] is False
        bad = s.call("list", {"limit": 0})
        assert bad["error"]["code"] == "invalid_command", bad
        bad = s.call("list", {"after": "nonsense"})
        assert bad["error"]["code"] == "invalid_command", bad
        assert b.stop() == 0


def test_sigkill_while_kafka_refuses_then_restart():
    with Stack() as s:
        f = Flow(s)
        s.kafka.inject("request-errors Produce 50 NOT_ENOUGH_REPLICAS")
        f.send_round()
        f.b.signal(signal.SIGKILL)
        f.b.wait(20)
        s.kafka.inject("clear-errors Produce")
        f.b = s.bridge()
        f.send_round()
        f.check()


def test_a_missing_topic_stops_the_start_with_its_name():
    with Stack() as s:
        b = s.bridge(extra=["--set", "kafka.dlq_topic=nowhere.dlq"], wait_assigned=False)
        assert b.wait(30) != 0
        log = b.log_text()
        assert "missing topic: nowhere.dlq" in log and "kafka.create_topics" in log, log


def test_a_fatal_producer_error_starts_a_new_producer():
    """librdkafka 2.0.2's idempotent producer fails fatally on a sequence
    desynchronisation (here: an out-of-order answer). The bridge replaces it
    and produces again what was not acknowledged; it does not exit."""
    with Stack() as s:
        b = s.bridge()
        answers_under_produce_errors(s, b, "request-errors Produce 1 OUT_OF_ORDER_SEQUENCE_NUMBER")
        assert "starting a new one" in b.log_text()
        assert b.proc.poll() is None
        assert ok(s.call("list"))["agents"] == []
        assert b.stop() == 0


if __name__ == "__main__":
    run_tests(globals())
