#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""A topic the bridge needs is missing on a real Apache Kafka broker (which,
unlike the mock, has no topic nobody created; auto-creation is off as in
most clusters). Whatever the bridge does about it — stop at start with an
error naming the topic, or create it when configured to — it must never
stall silently: within a bound it either exits non-zero naming the topic, or
logs a warning or error naming it. And the topic is not the only thing it
affects: with the topic there, the same stack works."""
from bridge_harness import Stack
from harness import run_tests, wait_until

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


run_tests(globals())
