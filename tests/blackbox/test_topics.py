#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A topic the bridge needs is missing on a real Apache Kafka broker (which,
unlike the mock, has no topic nobody created; auto-creation is off as in
most clusters). Whatever the bridge does about it — stop at start with an
error naming the topic, or create it when configured to — it must never
stall silently: within a bound it either exits non-zero naming the topic, or
logs a warning or error naming it. With kafka.create_topics=true it creates
them and works."""
from bridge_harness import Stack
from harness import run_tests, wait_until
from kafka_harness import consume_all

NOTICE_S = 20  # librdkafka's first metadata refresh comes well within this


def _missing(s, which):
    """Starts a bridge whose `which` topic does not exist, gives it a command
    (a bad one too, for the dead-letter topic) and returns (exit status or
    None, the log lines naming the topic at warn or error level)."""
    name = "absent-%s.%s" % (which, s.group_id)
    b = s.bridge(extra=["--set", "kafka.%s_topic=%s" % (which, name)], wait_assigned=False)
    if which != "commands":
        s.send("spawn", {"name": "needs-" + which})  # a result and an event
        s.send(raw=b"not json", key=b"k")  # a dead letter

    def noticed():
        code = b.proc.poll()
        lines = [l for l in b.log_text().splitlines()
                 if name in l and ("level=warn" in l or "level=error" in l)]
        return (code is not None and code != 0) or lines, code, lines

    try:
        wait_until(lambda: noticed()[0], NOTICE_S,
                   what=lambda: "the bridge naming the missing %s topic %s (exit status %s)\n"
                                "--- log tail ---\n%s" % (which, name, b.proc.poll(), b.tail()))
    finally:
        b.kill()
    _, code, lines = noticed()
    return code, lines


def test_a_missing_commands_topic_is_named():
    with Stack(kafka="apache") as s:
        _missing(s, "commands")


def test_a_missing_results_topic_is_named():
    with Stack(kafka="apache") as s:
        _missing(s, "results")


def test_a_missing_events_topic_is_named():
    with Stack(kafka="apache") as s:
        _missing(s, "events")


def test_a_missing_dead_letter_topic_is_named():
    with Stack(kafka="apache") as s:
        _missing(s, "dlq")


def test_missing_topics_are_created_when_configured():
    """kafka.create_topics=true: all four topics absent, the bridge creates
    them (kafka.topic_partitions each) and a round trip works through them."""
    with Stack(kafka="apache") as s:
        for attr in ("commands", "results", "events", "dlq"):
            setattr(s, attr, "auto-" + getattr(s, attr))
        s.bridge(extra=["--set", "kafka.create_topics=true",
                        "--set", "kafka.topic_partitions=3"], wait_assigned=True)
        from confluent_kafka.admin import AdminClient
        md = AdminClient({"bootstrap.servers": s.kafka.bootstrap}).list_topics(timeout=10)
        for name in (s.commands, s.results, s.events, s.dlq):
            assert name in md.topics and len(md.topics[name].partitions) == 3, (name, md.topics)
        doc = s.call("spawn", {"name": "made-topics"})
        assert doc["ok"] is True, doc
        s.send(raw=b"not json", key=b"k")
        assert len(s.dead_letters(1)) == 1
        events = consume_all(s.kafka.bootstrap, s.events, until=1, timeout=30)
        assert b"agent_spawned" in events[0].value


run_tests(globals())
