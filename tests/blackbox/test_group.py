#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Two bridges in one consumer group through a rebalance: a second bridge
joins while commands flow, then the first leaves (SIGTERM). Across both
rebalances every command is answered, applied once (identical results),
and each agent's commands stay in order (alternating interrupt/resume is
legal only in order). Runs on the mock and, above all, on real Apache Kafka
(TTB_KAFKA=apache), whose group coordinator is the real one."""
import json
import re

from bridge_harness import Stack
from harness import run_tests, wait_until

AGENTS = 8


def ok(doc):
    assert doc["ok"] is True, doc
    return doc["result"]


def produce_rounds(s, agents, first, last):
    """interrupt on even rounds, resume on odd ones, keyed by agent id; agent
    i's commands all go to partition i % 4, so every partition has work."""
    ids = []
    sent = []
    for round_ in range(first, last):
        op = "interrupt" if round_ % 2 == 0 else "resume"
        for i, aid in enumerate(agents):
            cid = "grp-%d-%d" % (i, round_)
            body = {"id": cid, "op": op, "args": {"agent": aid}}
            sent.append(s.producer.send(s.commands, value=json.dumps(body).encode(),
                                        key=aid.encode(), partition=i % 4))
            ids.append(cid)
    s.producer.flush()
    for future in sent:
        future.get(timeout=30)
    return ids


def partitions_handled(bridge, after=0):
    return {int(p) for p in re.findall(r"msg=command .* partition=(\d+) ",
                                       bridge.log_text()[after:])}


def test_a_bridge_joins_and_the_other_leaves_mid_stream():
    with Stack(partitions=4) as s:
        a = s.bridge()
        agents = [ok(s.call("spawn", {"name": "grp-%d" % i}))["agent"]["id"]
                  for i in range(AGENTS)]
        for aid in agents:
            s.r.hset("tt:demo:agent:" + aid, "state", "idle")
        ids = produce_rounds(s, agents, 0, 10)

        # One joins: the group rebalances while the first bridge has work.
        b = s.bridge(wait_assigned=False)
        b.assigned(timeout=60)
        a.wait_log("partitions revoked", 60)
        ids += produce_rounds(s, agents, 10, 20)
        s.results_for(ids, timeout=120)
        assert partitions_handled(b), "the joining bridge took no partition"

        # One leaves: the other takes every partition over.
        mark = len(b.log_text())
        assert a.stop() == 0
        wait_until(lambda: 'msg="partitions assigned" count=4' in b.log_text()[mark:], 60,
                   what=lambda: "the remaining bridge taking all 4 partitions\n" + b.tail())
        ids += produce_rounds(s, agents, 20, 30)
        s.results_for(ids, timeout=120)
        assert partitions_handled(b, mark) == {0, 1, 2, 3}

        for cid in ids:
            values = {r["value"] for r in s.seen[cid]}
            assert len(values) == 1, (cid, values)
            ok(s.seen[cid][0]["doc"])
        for aid in agents:  # 30 rounds, ending with a resume
            assert s.r.hget("tt:demo:agent:" + aid, "state") == b"idle"
            # one activity line per applied transition, however often delivered
            assert s.r.llen("tt:demo:activity:" + aid) == 10  # LTRIM 0 9 keeps ten
        assert b.stop() == 0


run_tests(globals())
