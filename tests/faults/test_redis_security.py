#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Redis over TLS and as an ACL user, against redis-server's own TLS port.

A test CA made here with the openssl CLI signs the server's certificate
(subjectAltName=IP:127.0.0.1) and the client's. The servers are TLS-only
(plain port 0), so whatever works went through TLS: the command connection,
the relay, state capture and the keyspace subscription that answers waits.
Refusals (an unknown CA, a name that does not match, a client certificate
the server requires but does not get, a wrong password) stop the bridge at
start with one error line naming the cause. The ACL tests run the bridge as
a user with exactly the rights of README's `ACL SETUSER` line, and with one
right missing: a NOPERM is explained in the log and ends when the right is
granted. Kafka is the mock broker: fast, and not what is tested here."""
import json
import os
import re
import signal
import subprocess
import urllib.error
import urllib.request

from bridge_harness import EventReader, Stack, bridge_path, ok
from ca_harness import TestCA
from harness import free_port, run_tests, wait_until

SOURCE = os.environ.get("TTB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
PASSWORD = "s3cret-ACL-pw"

_ca = None


def ca():
    """One CA (and server and client certificates) for the whole file."""
    global _ca
    if _ca is None:
        _ca = TestCA()
        _ca.server = _ca.issue("redis", san="IP:127.0.0.1,DNS:localhost")
        _ca.client = _ca.issue("bridge", san="DNS:tinytown-bridge")
    return _ca


def server_tls(auth_clients="no"):
    c = ca()
    return {"cert_file": c.server[0], "key_file": c.server[1], "ca_file": c.ca_file,
            "auth_clients": auth_clients, "client_cert": c.client[0], "client_key": c.client[1]}


def trust(ca_file=None):
    return ["--set", "redis.tls_ca_file=" + (ca_file or ca().ca_file)]


def readme_acl_rules():
    """The rules of README's ACL SETUSER line (after `on >password`), which
    is written for the town demo in database 0."""
    with open(os.path.join(SOURCE, "README.md")) as f:
        m = re.search(r"^ACL SETUSER tinytown-bridge on >\S+ (.+)$", f.read(), re.M)
    assert m, "README has no ACL SETUSER tinytown-bridge line"
    rules = m.group(1).split()
    assert "&__keyspace@0__:tt:demo:agent:*" in rules, rules
    return rules


def explained_rules():
    """The rules as the bridge's NOPERM explanation gives them (for any
    town and database)."""
    general = {"&__keyspace@0__:tt:demo:agent:*": "&__keyspace@<db>__:tt:<town>:agent:*",
               "&__keyspace@0__:tt:demo:task:*":
                   "&__keyspace@<db>__:tt:<town>:task:* (both for each town)"}
    return " ".join(general.get(r, r) for r in readme_acl_rules())


# The README's line is for the town demo only.
ONE_TOWN = ["--set", "bridge.towns=demo"]


def error_lines(log):
    return [line for line in log.splitlines() if "level=error" in line]


def start_refused(s, extra, timeout=30):
    """Starts a bridge that must stop by itself, with status 1 and one error
    line saying Redis refused it: that line. The password is in no line."""
    b = s.bridge(extra=extra, wait_assigned=False)
    rc = b.wait(timeout)
    log = b.log_text()
    errors = error_lines(log)
    assert rc == 1 and len(errors) == 1, log
    assert "cannot start: redis refused the bridge" in errors[0], errors
    assert PASSWORD not in log
    return errors[0]


def acl_url(s, password=PASSWORD):
    return "redis://tinytown-bridge:%s@127.0.0.1:%d" % (password, s.redis.port)


def http_status(port, path):
    try:
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def events_of(ev, event_type):
    return [r["doc"] for r in ev.poll() if r["doc"].get("event_type") == event_type]


def exercise(s, b):
    """Commands, relay, capture and a wait answered by a keyspace
    notification: what every Redis connection of the bridge carries."""
    ev = EventReader(s)
    spawned = ok(s.call("spawn", {"name": "alpha"}))["agent"]
    assert ok(s.call("list"))["agents"][0]["name"] == "alpha"
    # The relay: the bridge's own event reaches Kafka.
    wait_until(lambda: any(e.get("agent_id") == spawned["id"]
                           for e in events_of(ev, "agent_spawned")), 30, what="relayed spawn")
    # State capture: a change by another writer becomes an event.
    key = "tt:demo:agent:" + spawned["id"]
    s.r.hset(key, "state", "working")
    wait_until(lambda: any(e.get("agent_id") == spawned["id"] and e.get("new_state") == "Working"
                           for e in events_of(ev, "agent_state_changed")), 30,
               what="captured state change")
    # A wait, answered by the notification: the periodic re-reads are an hour
    # apart here, so only the subscription can end it in time.
    cid = s.send("wait", {"agent": "alpha", "timeout_ms": 600000})
    b.wait_log("pending_waits=1", 20)
    s.r.hset(key, "state", "stopped")
    res = ok(s.result(cid, timeout=20)["doc"])
    assert res["timed_out"] is False and res["agent"]["state"] == "stopped", res
    assert "keyspace notifications unavailable" not in b.log_text()


SLOW_SWEEPS = ["--set", "bridge.wait_check_interval_ms=60000",
               "--set", "bridge.wait_sweep_interval_ms=3600000"]


def test_tls_carries_commands_relay_capture_and_notifications():
    with Stack(redis_tls=server_tls()) as s:
        assert s.redis.url.startswith("rediss://")
        b = s.bridge(extra=trust() + SLOW_SWEEPS)
        exercise(s, b)
        assert "level=error" not in b.log_text() and "level=warn" not in b.log_text()
        assert_stops(b)


def test_tls_timeouts_and_reconnects_work_as_on_tcp():
    """A TLS server that stops answering is noticed by the command timeout
    (on hiredis's end of the tunnel), and a restarted one is reconnected to."""
    with Stack(redis_tls=server_tls()) as s:
        b = s.bridge(extra=trust() + ["--set", "redis.command_timeout_ms=500",
                                      "--set", "bridge.redis_backoff_max_ms=500"])
        ok(s.call("spawn", {"name": "epsilon"}))
        os.kill(s.redis.pid, signal.SIGSTOP)
        try:
            mark = len(b.log_text())
            b.wait_log("redis unavailable: pausing consumption", 20, after=mark)
            assert "Resource temporarily unavailable" in b.log_text()[mark:], b.tail()
        finally:
            os.kill(s.redis.pid, signal.SIGCONT)
        b.wait_log("redis available again: resuming", 20, after=mark)
        mark = len(b.log_text())
        s.redis.pause()
        b.wait_log("redis unavailable: pausing consumption", 20, after=mark)
        s.redis.resume()
        b.wait_log("redis available again: resuming", 30, after=mark)
        # A restart without persistence: a town as empty as the new server.
        assert ok(s.call("spawn", {"name": "zeta"}))["agent"]["name"] == "zeta"
        assert_stops(b)


def test_tls_refused_later_is_an_outage_until_fixed():
    """The server comes back with a certificate of a CA the bridge does not
    trust: an outage (not ready, consumption paused, retried), said once as
    an error naming the cause; with its own certificate back, it resumes."""
    rotated = TestCA(name="rotated CA")
    try:
        tls = server_tls()
        with Stack(redis_tls=tls) as s:
            http = free_port()
            b = s.bridge(extra=trust() + ["--set", "http.listen=127.0.0.1:%d" % http,
                                          "--set", "bridge.redis_backoff_max_ms=300"])
            wait_until(lambda: http_status(http, "/readyz") == 200, 20, what="/readyz 200")
            mark = len(b.log_text())
            s.redis.pause()
            cert, key = rotated.issue("redis-rotated")
            s.redis.tls = dict(tls, cert_file=cert, key_file=key, ca_file=rotated.ca_file)
            s.redis.resume()
            b.wait_log("redis refused the bridge: pausing consumption", 30, after=mark)
            wait_until(lambda: http_status(http, "/readyz") == 503, 20, what="/readyz 503")
            # Retried meanwhile, not said again.
            b.wait_log("msg=summary", 10, after=len(b.log_text()))
            b.wait_log("msg=summary", 10, after=len(b.log_text()))
            errors = error_lines(b.log_text()[mark:])
            assert len(errors) == 1, errors
            assert "certificate verify failed: unable to get local issuer certificate" in \
                errors[0] or "certificate verify failed: self-signed certificate in certificate " \
                "chain" in errors[0], errors
            assert b.proc.poll() is None

            s.redis.pause()
            s.redis.tls = tls
            s.redis.resume()
            b.wait_log("redis available again: resuming", 30, after=mark)
            wait_until(lambda: http_status(http, "/readyz") == 200, 20, what="/readyz 200 again")
            assert ok(s.call("spawn", {"name": "eta"}))["agent"]["name"] == "eta"
            assert len(error_lines(b.log_text()[mark:])) == 1
            assert_stops(b)
    finally:
        rotated.remove()


def test_tls_ca_directory_dns_names_and_server_name_override():
    """A hashed CA directory instead of a file; a DNS name checked against
    the certificate (and sent as SNI); and tls_server_name naming what the
    certificate carries when the URL's host is another name for it."""
    c = ca()
    cadir = os.path.join(c.dir, "cas")
    os.makedirs(cadir, exist_ok=True)
    with open(c.ca_file, "rb") as src, open(os.path.join(cadir, "ca.pem"), "wb") as dst:
        dst.write(src.read())
    subprocess.run(["openssl", "rehash", cadir], check=True, capture_output=True)
    with Stack(redis_tls=server_tls()) as s:
        by_name = ["--set", "redis.url=rediss://localhost:%d" % s.redis.port,
                   "--set", "redis.tls_ca_dir=" + cadir]
        overridden = ["--set", "redis.url=rediss://127.0.0.1:%d" % s.redis.port,
                      "--set", "redis.tls_server_name=localhost"] + trust()
        for name, extra in (("beta", by_name), ("gamma", overridden)):
            b = s.bridge(extra=extra)
            assert ok(s.call("spawn", {"name": name}))["agent"]["name"] == name
            assert_stops(b)


def test_tls_unknown_ca_stops_at_start():
    other = TestCA(name="someone else's CA")
    try:
        with Stack(redis_tls=server_tls()) as s:
            line = start_refused(s, trust(other.ca_file))
            # OpenSSL's words: the server sends its CA along, which we do not trust.
            assert "certificate verify failed: self-signed certificate in certificate chain" in \
                line, line
    finally:
        other.remove()


def test_tls_wrong_server_name_stops_at_start():
    with Stack(redis_tls=server_tls()) as s:
        line = start_refused(s, trust() + ["--set", "redis.tls_server_name=redis.example"])
        assert "certificate verify failed: hostname mismatch" in line, line


def test_tls_verify_off_encrypts_and_warns():
    other = TestCA(name="unrelated CA")
    try:
        with Stack(redis_tls=server_tls()) as s:
            b = s.bridge(extra=trust(other.ca_file) + ["--set", "redis.tls_verify=false"])
            assert ok(s.call("spawn", {"name": "gamma"}))["agent"]["name"] == "gamma"
            assert "redis.tls_verify=false" in b.log_text()
            assert "level=warn" in b.log_text().split("redis.tls_verify=false")[0].splitlines()[-1]
            assert_stops(b)
    finally:
        other.remove()


def test_tls_client_certificate_required():
    with Stack(redis_tls=server_tls(auth_clients="yes")) as s:
        line = start_refused(s, trust())
        assert "tlsv13 alert certificate required" in line, line

        c = ca()
        b = s.bridge(extra=trust() + SLOW_SWEEPS + ["--set", "redis.tls_cert_file=" + c.client[0],
                                                    "--set", "redis.tls_key_file=" + c.client[1]])
        exercise(s, b)
        assert_stops(b)


def test_tls_files_that_cannot_be_used_stop_at_start():
    c = ca()
    other_key = c.issue("stranger", san="DNS:stranger")[1]
    with Stack(redis_tls=server_tls()) as s:
        cases = [(["--set", "redis.tls_ca_file=/nonexistent/ca.pem"],
                  "cannot load CA /nonexistent/ca.pem: No such file or directory"),
                 (trust() + ["--set", "redis.tls_cert_file=" + c.client[0],
                             "--set", "redis.tls_key_file=" + other_key],
                  "cannot load key %s: key values mismatch" % other_key),
                 (trust() + ["--set", "redis.tls_cert_file=" + c.ca_key],
                  "cannot load certificate %s: no start line" % c.ca_key)]
        for extra, want in cases:
            b = s.bridge(extra=extra, wait_assigned=False)
            assert b.wait(30) == 1, b.log_text()
            errors = error_lines(b.log_text())
            assert len(errors) == 1 and "cannot start: redis TLS settings" in errors[0], errors
            assert want in errors[0], errors


def assert_stops(b):
    """A graceful stop: exit status 0, or the status and the log's end."""
    rc = b.stop()
    assert rc == 0, "exit status %r\n--- log tail ---\n%s" % (rc, b.tail())


def acl_user(s, rules):
    s.r.execute_command("ACL", "SETUSER", "tinytown-bridge", "reset", "on", ">" + PASSWORD,
                        *rules)


def test_acl_user_with_exactly_the_documented_rights():
    """README's ACL line is enough for everything, and nothing the bridge
    does is refused (ACL LOG stays empty). The password comes from a secrets
    file and appears nowhere: not in the log, not in --check-config."""
    with Stack(redis_tls=server_tls(),
               redis_args=["--notify-keyspace-events", "Kghx"]) as s:
        acl_user(s, readme_acl_rules())
        pwfile = os.path.join(ca().dir, "redis-password")
        with open(pwfile, "w") as f:
            f.write(PASSWORD + "\n")
        extra = trust() + SLOW_SWEEPS + ONE_TOWN + ["--set", "redis.username=tinytown-bridge",
                                         "--set", "redis.password_file=" + pwfile]
        b = s.bridge(extra=extra)
        exercise(s, b)
        # Every other operation too: answers, never an internal error.
        for op, args in [("status", None), ("list_open", None), ("get_result", {"agent": "alpha"}),
                         ("restart", {"agent": "alpha"}), ("interrupt", {"agent": "alpha"}),
                         ("resume", {"agent": "alpha"}), ("close", {"agent": "alpha"}),
                         ("kill", {"agent": "alpha"}), ("stop_all", None),
                         ("prune", {"all": True})]:
            doc = s.call(op, args)
            assert doc["ok"] or doc["error"]["code"] != "internal", doc
        assert s.r.execute_command("ACL", "LOG") == []
        clients = s.r.execute_command("CLIENT", "LIST").decode()
        assert "user=tinytown-bridge" in clients
        assert_stops(b)
        assert PASSWORD not in b.log_text()
        check = subprocess.run([bridge_path(), "--check-config"] + b.argv()[1:],
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert "tinytown-bridge" in check.stdout and PASSWORD not in check.stdout + check.stderr


def test_acl_without_the_task_channel_still_answers_get_result():
    """An ACL written before the bridge subscribed to task keys (the README's
    line without its task channel): the bridge says so once, as a warning,
    and get_result still answers from the town's tasks, read each time."""
    with Stack(redis_args=["--notify-keyspace-events", "Kghx"]) as s:
        acl_user(s, [r for r in readme_acl_rules() if r != "&__keyspace@0__:tt:demo:task:*"])
        b = s.bridge(extra=SLOW_SWEEPS + ONE_TOWN + [
            "--set", "redis.url=" + acl_url(s)])
        b.wait_log("notifications of task keys refused")
        agent = ok(s.call("spawn", {"name": "doer"}))["agent"]["id"]
        assert ok(s.call("get_result", {"agent": "doer"}))["task"] is None
        task = "cccccccc-0000-4000-8000-000000000001"
        s.r.hset("tt:demo:task:" + task, mapping={
            "id": task, "description": "d", "state": "completed", "assigned_to": agent,
            "created_at": "2026-01-01T00:00:00+00:00", "updated_at": "2026-01-01T00:00:00+00:00",
            "completed_at": "2026-01-02T00:00:00+00:00", "result": "r", "tags": "[]"})
        assert ok(s.call("get_result", {"agent": "doer"}))["task"]["id"] == task
        log = b.log_text()
        assert log.count("notifications of task keys refused") == 1, log
        assert "level=error" not in log, log
        assert_stops(b)


def test_acl_right_removed_later_is_explained_and_retried_until_granted():
    """A right taken away while the bridge runs (here EVALSHA, which every
    command needs): the refusal is logged once, as an error naming the
    command and the ACL to grant; the bridge is not ready, keeps the command,
    and applies it, once, when the right is back."""
    with Stack(redis_args=["--notify-keyspace-events", "Kghx"]) as s:
        acl_user(s, readme_acl_rules())
        http = free_port()
        b = s.bridge(extra=["--set", "redis.url=" + acl_url(s),
                            "--set", "http.listen=127.0.0.1:%d" % http,
                            "--set", "events.relay=false", "--set", "events.capture=false"]
                   + ONE_TOWN)
        wait_until(lambda: http_status(http, "/readyz") == 200, 20, what="/readyz 200")
        s.r.execute_command("ACL", "SETUSER", "tinytown-bridge", "-evalsha")
        cid = s.send("spawn", {"name": "delta"})
        b.wait_log("redis refused the bridge", 20)
        line = [l for l in error_lines(b.log_text()) if "redis refused the bridge" in l]
        assert len(line) == 1, b.tail()
        assert "NOPERM" in line[0] and "'evalsha'" in line[0], line
        assert "ACL SETUSER <user> " + explained_rules() in line[0], line
        wait_until(lambda: http_status(http, "/readyz") == 503, 20, what="/readyz 503")
        assert b.proc.poll() is None
        assert s.r.keys("tt:demo:agent:*") == []

        s.r.execute_command("ACL", "SETUSER", "tinytown-bridge", "+evalsha")
        doc = s.result(cid, timeout=30)["doc"]
        assert ok(doc)["agent"]["name"] == "delta"
        wait_until(lambda: http_status(http, "/readyz") == 200, 20, what="/readyz 200 again")
        b.wait_log("redis available again: resuming", 20)
        assert len([l for l in error_lines(b.log_text()) if "redis refused" in l]) == 1, b.tail()
        assert len(s.seen[cid]) == 1
        assert PASSWORD not in b.log_text()
        assert_stops(b)


def test_acl_script_right_missing_is_named_before_any_command():
    """Redis does not undo a script that a refused call stops half-way, so a
    right the scripts need (XADD here) is asked for at connect: the bridge
    names it and stops at start, having written nothing of tinytown's."""
    with Stack() as s:
        acl_user(s, [r for r in readme_acl_rules() if r != "+xadd"])
        line = start_refused(s, ["--set", "redis.url=" + acl_url(s)] + ONE_TOWN)
        assert 'error="XADD tt:demo:rights (checked at connect) refused' in line, line
        assert "ACL SETUSER <user> " + explained_rules() in line, line
        assert s.r.keys("tt:*") == []  # tinytown's keys untouched


def test_acl_refusals_at_start():
    """A wrong password, and a user that may not even load the scripts:
    each stops the bridge at start with one line saying why."""
    with Stack() as s:
        acl_user(s, [r for r in readme_acl_rules() if r != "+script|load"])
        line = start_refused(s, ["--set", "redis.url=" + acl_url(s)] + ONE_TOWN)
        assert "SCRIPT LOAD refused: NOPERM" in line, line
        assert "ACL SETUSER <user> " + explained_rules() in line, line

        line = start_refused(s, ["--set", "redis.url=" + acl_url(s, "not-it")])
        assert "AUTH refused: WRONGPASS" in line and "not-it" not in line, line


def test_rediss_against_a_plain_port_says_so():
    """rediss:// against a plain Redis: Redis waits for a line that never
    comes, so the handshake runs out of time; the log says which, and the
    bridge keeps trying (a plain port may be a TLS port restarting)."""
    with Stack() as s:
        url = "rediss://127.0.0.1:%d" % s.redis.port
        b = s.bridge(extra=["--set", "redis.url=" + url, "--set", "redis.connect_timeout_ms=300"]
                     + trust(), wait_assigned=False)
        b.wait_log('error="TLS handshake with 127.0.0.1:%d: timed out"' % s.redis.port, 30)
        assert b.proc.poll() is None
        assert_stops(b)


if __name__ == "__main__":
    try:
        run_tests(globals())
    finally:
        if _ca is not None:
            _ca.remove()
