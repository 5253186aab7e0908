#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Bridges of one consumer group must answer alike: one whose towns, denied
ops or limits differ from a running member's refuses to start, saying what
differs, unless told to start anyway (then both say so, loudly)."""
from bridge_harness import Stack, ok
from harness import run_tests

DIFFERENT = ["--set", "bridge.towns=demo", "--set", "bridge.denied_ops=stop_all"]



def test_a_bridge_that_would_answer_differently_refuses_to_start():
    with Stack() as s:
        first = s.bridge()
        second = s.bridge(extra=DIFFERENT, wait_assigned=False)
        rc = second.wait(30)
        assert rc != 0, second.tail()
        log = second.log_text()
        assert "refusing to start" in log, log
        assert "towns=demo,other" in log and "towns=demo " in log, log
        assert "denied_ops=stop_all" in log
        # The running bridge is unaffected and answers as before.
        assert ok(s.call("list", town="other"))["agents"] == []
        assert first.proc.poll() is None
        # An identically configured bridge joins without complaint.
        third = s.bridge()
        assert "refusing" not in third.log_text()
        assert first.stop() == 0 and third.stop() == 0


def test_allowed_mismatch_starts_and_both_say_so():
    with Stack() as s:
        first = s.bridge()
        second = s.bridge(extra=DIFFERENT + ["--set", "bridge.allow_mismatched_peers=true"])
        second.wait_log("answer commands differently", 20)
        first.wait_log("answer commands differently", 20)
        assert second.proc.poll() is None
        assert first.stop() == 0 and second.stop() == 0


def test_a_stopped_member_does_not_count():
    with Stack() as s:
        first = s.bridge()
        assert first.stop() == 0  # a clean stop removes its line
        second = s.bridge(extra=DIFFERENT)
        assert ok(s.call("list"))["agents"] == []
        assert "refusing" not in second.log_text()
        assert second.stop() == 0


if __name__ == "__main__":
    run_tests(globals())
