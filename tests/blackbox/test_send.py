#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Black-box tests of `tinytown-bridge send`, against ttb-broker.

No bridge runs here: kafka-python (a client independent of librdkafka) reads
what `send` produced, and a small responder thread plays the bridge's part
on the results topic, answering each command the moment it sees it, so a
result that arrives before `send` could have started reading would be
caught. Asserted: the record produced (value = the printed JSON, key =
agent, name, town or op), argument typing, exit codes 0/1/2/3, stdout and
stderr, and the --timeout bound.
"""

import json
import os
import subprocess
import threading
import time

from harness import run_tests
from kafka_harness import KafkaBroker, consume_all, consumer_config

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

BUILD_DIR = os.environ.get("TTB_BUILD_DIR", "")
BRIDGE = os.path.join(BUILD_DIR, "tinytown-bridge")
TOPICS = ["tinytown.commands:6", "tinytown.results:6", "tinytown.events:3",
          "tinytown.commands.dlq:1"]

broker = None


def send(*args, bootstrap=None, timeout=30):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_BRIDGE_")}
    env.update({"TT_BRIDGE_KAFKA_BROKERS": bootstrap or broker.bootstrap,
                "TT_BRIDGE_TOWNS": "demo,other", "TT_BRIDGE_DEFAULT_TOWN": "demo"})
    return subprocess.run([BRIDGE, "send"] + list(args), env=env, capture_output=True,
                          text=True, timeout=timeout)


class Responder:
    """Answers every command on the commands topic with a result keyed by
    its id (ok unless the op is kill), after a decoy result for another id."""

    def __init__(self, bootstrap):
        self.bootstrap = bootstrap
        self.stop_flag = threading.Event()
        self.answered = 0
        self.ready = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()
        assert self.ready.wait(20), "responder did not start"

    def run(self):
        consumer = KafkaConsumer(**consumer_config(self.bootstrap, group_id=None))
        producer = KafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=0, acks=1)
        try:
            tps = [TopicPartition("tinytown.commands", p)
                   for p in sorted(consumer.partitions_for_topic("tinytown.commands") or [])]
            consumer.assign(tps)
            consumer.seek_to_end(*tps)
            for tp in tps:
                consumer.position(tp)  # resolve now: later commands are all seen
            self.ready.set()
            while not self.stop_flag.is_set():
                for recs in consumer.poll(timeout_ms=50).values():
                    for rec in recs:
                        cmd = json.loads(rec.value)
                        ok = cmd["op"] != "kill"
                        result = {"id": cmd["id"], "town": cmd.get("town", "demo"),
                                  "op": cmd["op"], "ok": ok}
                        if ok:
                            result["result"] = {"echo": cmd.get("args", {})}
                        else:
                            result["error"] = {"code": "agent_not_found", "message": "nope"}
                        decoy = dict(result, id="decoy-" + cmd["id"])
                        producer.send("tinytown.results", key=decoy["id"].encode(),
                                      value=json.dumps(decoy).encode())
                        producer.send("tinytown.results", key=cmd["id"].encode(),
                                      value=json.dumps(result, separators=(",", ":")).encode())
                        producer.flush()
                        self.answered += 1
        finally:
            consumer.close(autocommit=False)
            producer.close()

    def stop(self):
        self.stop_flag.set()
        self.thread.join(20)


def test_send_prints_and_produces_the_command():
    before = len(consume_all(broker.bootstrap, "tinytown.commands"))
    cases = [
        (["kill", "agent=w1"], "w1", {"op": "kill", "args": {"agent": "w1"}}),
        (["spawn", "name=n1", "cli=codex"], "n1",
         {"op": "spawn", "args": {"name": "n1", "cli": "codex"}}),
        (["list", "--town", "other"], "other", {"op": "list", "town": "other"}),
        (["status"], "demo", {"op": "status"}),  # default town keys it, JSON omits it
        (["prune", "all=true"], "demo", {"op": "prune", "args": {"all": True}}),
        (["wait", "agent=w1", "timeout_ms=250", "--id", "my-id.1"], "w1",
         {"op": "wait", "id": "my-id.1", "args": {"agent": "w1", "timeout_ms": 250}}),
    ]
    printed = []
    for argv, key, want in cases:
        r = send(*argv)
        assert r.returncode == 0, (argv, r.returncode, r.stderr)
        lines = r.stdout.splitlines()
        assert len(lines) == 1, r.stdout
        cmd = json.loads(lines[0])
        for k, v in want.items():
            assert cmd.get(k) == v, (argv, k, cmd)
        if "town" not in want:
            assert "town" not in cmd, cmd
        if "id" not in want:
            assert cmd["id"].startswith("cli-") and len(cmd["id"]) == 40, cmd["id"]
        assert list(cmd)[:1] == ["id"], cmd
        printed.append((lines[0], key))
    recs = consume_all(broker.bootstrap, "tinytown.commands")[before:]
    got = sorted((r.value.decode(), r.key.decode()) for r in recs)
    assert got == sorted(printed), got


def test_usage_errors_exit_2_and_produce_nothing():
    before = len(consume_all(broker.bootstrap, "tinytown.commands"))
    cases = [
        ([], "missing OP"),
        (["lsit"], "unknown_op"),
        (["kill"], "invalid_command"),
        (["spawn", "name=a", "colour=red"], "invalid_command"),
        (["kill", "agent=a", "agent=b"], "given twice"),
        (["kill", "w1"], "expected key=value"),
        (["list", "--town", "elsewhere"], "unknown_town"),
        (["list", "--id", "bad id"], "invalid_command"),
        (["list", "--timeout", "0"], "--timeout"),
        (["list", "--timeout"], "needs a value"),
        (["list", "--wait"], "unknown option"),
        (["prune", "all=yes"], "invalid_command"),
    ]
    for argv, message in cases:
        r = send(*argv)
        assert r.returncode == 2, (argv, r.returncode, r.stderr)
        assert message in r.stderr, (argv, r.stderr)
        assert r.stdout == "", (argv, r.stdout)
    assert len(consume_all(broker.bootstrap, "tinytown.commands")) == before


def test_wait_result_prints_the_result():
    responder = Responder(broker.bootstrap)
    try:
        r = send("list", "--wait-result", "--id", "w-ok-1")
        assert r.returncode == 0, (r.returncode, r.stderr)
        assert r.stdout == ('{"id":"w-ok-1","town":"demo","op":"list","ok":true,'
                            '"result":{"echo":{}}}\n'), r.stdout

        r = send("kill", "agent=w1", "--wait-result")
        assert r.returncode == 1, (r.returncode, r.stderr)
        res = json.loads(r.stdout)
        assert res["ok"] is False and res["error"]["code"] == "agent_not_found", res
        assert res["id"].startswith("cli-")

        # several in a row, each answered at once: none is missed
        for i in range(5):
            r = send("status", "--wait-result", "--id", "w-many-%d" % i, "--timeout", "10000")
            assert r.returncode == 0, (i, r.returncode, r.stderr)
            assert json.loads(r.stdout)["id"] == "w-many-%d" % i
    finally:
        responder.stop()


def test_wait_result_times_out_with_exit_3():
    start = time.monotonic()
    r = send("list", "--wait-result", "--timeout", "1500", "--id", "nobody-answers")
    took = time.monotonic() - start
    assert r.returncode == 3, (r.returncode, r.stderr)
    assert "no result for command nobody-answers" in r.stderr, r.stderr
    assert "1500 ms" in r.stderr, r.stderr
    assert r.stdout == ""
    assert 1.4 < took < 10, took
    # the command itself was sent
    recs = consume_all(broker.bootstrap, "tinytown.commands")
    assert any(json.loads(x.value)["id"] == "nobody-answers" for x in recs)


def test_unreachable_kafka_exits_3_within_the_timeout():
    import socket
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = "127.0.0.1:%d" % s.getsockname()[1]
    for extra in ([], ["--wait-result"]):
        start = time.monotonic()
        r = send("list", "--timeout", "1500", *extra, bootstrap=dead)
        took = time.monotonic() - start
        assert r.returncode == 3, (extra, r.returncode, r.stderr)
        assert "tinytown-bridge: send:" in r.stderr and "Connection refused" in r.stderr, r.stderr
        assert r.stdout == ""
        assert took < 10, took


def main():
    global broker
    assert os.access(BRIDGE, os.X_OK), "set TTB_BUILD_DIR to a build holding tinytown-bridge"
    with KafkaBroker(TOPICS, control=False) as b:
        broker = b
        run_tests(globals())


if __name__ == "__main__":
    main()
