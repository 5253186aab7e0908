#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""What an operator relies on: /healthz, /readyz following Redis, /metrics
read by a real Prometheus parser with counters matching what was sent, the
`send` client, and the command line's own answers (--check-config, bad
config, --version)."""
import json
import os
import subprocess

from prometheus_client.parser import text_string_to_metric_families

from bridge_harness import Stack, bridge_path, http_get as get
from harness import free_port, run_tests, wait_until


def metrics(port):
    status, body = get("http://127.0.0.1:%d/metrics" % port)
    assert status == 200
    samples = {}
    families = {}
    for fam in text_string_to_metric_families(body):
        families[fam.name] = fam.type
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return families, samples


def test_health_readiness_and_metrics():
    with Stack() as s:
        port = free_port()
        b = s.bridge(extra=["--set", "http.listen=127.0.0.1:%d" % port])
        base = "http://127.0.0.1:%d" % port
        assert get(base + "/healthz") == (200, "ok\n")
        wait_until(lambda: get(base + "/readyz")[0] == 200, 20, what="ready")

        for i in range(5):
            s.call("spawn", {"name": "m-%d" % i})
        s.call("kill", {"agent": "nobody"})
        s.send(raw=b"not json")
        s.call("list")

        def counters_match():
            fams, smp = metrics(port)
            spawn_ok = smp.get(("tinytown_bridge_commands_total", (("op", "spawn"), ("outcome", "ok"))))
            kill_nf = smp.get(("tinytown_bridge_commands_total",
                               (("op", "kill"), ("outcome", "agent_not_found"))))
            dead = smp.get(("tinytown_bridge_dead_letters_total", ()))
            count = smp.get(("tinytown_bridge_command_duration_seconds_count", ()))
            return spawn_ok == 5 and kill_nf == 1 and dead == 1 and count == 8
        wait_until(counters_match, 10, what="metrics counting the commands sent")
        fams, smp = metrics(port)
        assert fams["tinytown_bridge_command_duration_seconds"] == "histogram"
        assert smp[("tinytown_bridge_command_duration_seconds_bucket", (("le", "+Inf"),))] == 8
        assert smp[("tinytown_bridge_redis_up", ())] == 1
        def lag_known():
            _, smp = metrics(port)
            lags = {dict(l)["partition"]: v for (n, l), v in smp.items()
                    if n == "tinytown_bridge_consumer_lag_messages"}
            return len(lags) == 4 and set(lags.values()) == {0}
        wait_until(lag_known, 10, what="consumer lag 0 on all four partitions")

        # Readiness follows Redis, both ways.
        s.redis.pause()
        def not_ready():
            status, body = get(base + "/readyz")
            return status == 503 and "redis" in json.loads(body)["missing"]
        wait_until(not_ready, 20, what="/readyz 503 with Redis down")
        assert get(base + "/healthz")[0] == 200  # alive all the same
        s.redis.resume()
        wait_until(lambda: get(base + "/readyz")[0] == 200, 30, what="/readyz 200 again")
        fams, smp = metrics(port)
        assert smp[("tinytown_bridge_redis_reconnects_total", ())] >= 1
        assert smp[("tinytown_bridge_redis_outage_seconds_total", ())] > 0
        assert get(base + "/nope")[0] == 404
        assert b.stop() == 0


def send_cli(s, *args, timeout=60):
    cmd = [bridge_path(), "send", *args,
           "--set", "redis.url=" + s.redis.url, "--set", "kafka.brokers=" + s.kafka.bootstrap,
           "--set", "bridge.towns=demo,other", "--set", "bridge.default_town=demo",
           "--set", "kafka.consumer_properties=fetch.wait.max.ms=10"] + s.kafka_args()
    return subprocess.run(cmd, capture_output=True, timeout=timeout)


def test_send_round_trip():
    with Stack() as s:
        s.bridge()
        p = send_cli(s, "spawn", "name=cli-agent", "role_id=reviewer", "--wait-result")
        assert p.returncode == 0, p.stderr.decode()
        doc = json.loads(p.stdout.decode().strip().splitlines()[-1])
        assert doc["ok"] is True and doc["result"]["agent"]["name"] == "cli-agent"

        p = send_cli(s, "resume", "agent=cli-agent", "--wait-result")
        assert p.returncode == 1, (p.returncode, p.stderr.decode())
        doc = json.loads(p.stdout.decode().strip().splitlines()[-1])
        assert doc["error"]["code"] == "invalid_state"

        p = send_cli(s, "prune", "all=true", "--town", "other", "--id", "cli-prune-1",
                     "--wait-result")
        assert p.returncode == 0, p.stderr.decode()
        doc = json.loads(p.stdout.decode())
        assert doc["id"] == "cli-prune-1" and doc["town"] == "other" and doc["ok"] is True

        p = send_cli(s, "kill", "agnet=typo")  # checked before anything is sent
        assert p.returncode == 2 and b"agnet" in p.stderr


def test_command_line_answers():
    exe = bridge_path()
    out = subprocess.run([exe, "--version"], capture_output=True, timeout=10)
    assert out.returncode == 0 and out.stdout.startswith(b"tinytown-bridge ")
    conf = os.path.join(os.environ["TTB_SOURCE_DIR"], "conf", "tinytown-bridge.conf")
    env = dict(os.environ, TT_BRIDGE_REDIS_URL="redis://user:hunter2@127.0.0.1:6390/2")
    out = subprocess.run([exe, "--config", conf, "--check-config"], capture_output=True,
                         timeout=10, env=env)
    assert out.returncode == 0, out.stderr
    assert b"hunter2" not in out.stdout and b"redis://user:****@127.0.0.1:6390/2" in out.stdout
    out = subprocess.run([exe, "--check-config", "--set", "bridge.batch_size=0"],
                         capture_output=True, timeout=10)
    assert out.returncode == 2 and b"bridge.batch_size" in out.stderr
    assert len(out.stderr.decode().strip().splitlines()) == 1
    out = subprocess.run([exe, "--config", "/nonexistent.conf"], capture_output=True, timeout=10)
    assert out.returncode == 2 and b"/nonexistent.conf" in out.stderr
    out = subprocess.run([exe, "frobnicate"], capture_output=True, timeout=10)
    assert out.returncode == 2
    out = subprocess.run([exe, "--help-config"], capture_output=True, timeout=10)
    assert out.returncode == 0 and b"TT_BRIDGE_REDIS_URL" in out.stdout


run_tests(globals())
