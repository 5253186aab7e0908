#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Interop with tinytown 0.10.0's own tools, both ways, on one redis-server.

The real `tt` and `townhall` (built once by scripts/tinytown into a cache,
outside the repository) and the bridge share a town: agents `tt spawn`
made (each with a live `tt agent-loop`) are listed, resolved and changed by
the bridge; agents the bridge made show in `tt list`, `tt status`, `tt
events` and townhall's REST API as tinytown's own do, and `tt kill` and
`tt restart` work on them; a live agent loop rewriting its hash while the
bridge interrupts and resumes it, with state capture reporting the loop's
own changes; every reference 0.10.0's `tt` accepts resolves to the same
agent in the bridge.

The bridge runs as `tinytown-bridge apply` (the service without Kafka)
where Kafka adds nothing, and on the mock broker stack for state capture.
`tt` runs with HOME in a temp dir and REDIS_URL set. `tt spawn` and `tt
restart` fork detached agent loops: each test finds them by the town
directory on their command line and stops them by pid.

If tt cannot be built, every test fails with scripts/tinytown's message.
"""
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
import uuid

from bridge_harness import Stack, bridge_path, err, ok
from kafka_harness import consume_all
from harness import RedisServer, free_port, pdeathsig_preexec, run_tests, wait_until

SOURCE_DIR = os.environ.get("TTB_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
SUPERVISOR_ID = "00000000-0000-0000-0000-000000000001"
ANSI = re.compile(r"\x1b\[[0-9;]*m")
# `tt list`: "  Lawrence [w1] (9df3) - Starting"
LIST_LINE = re.compile(r"^\s+(?P<label>.+) \((?P<short>[0-9a-f]{4})\) - (?P<state>\w+)$")
LOOP_STEP_S = 5  # an idle agent loop rewrites its hash every 5 s (idle_poll_interval)

_tt_bin = None
_tt_error = None
redis_server = None


def tt_bin():
    """The directory holding tt and townhall; builds them on first use."""
    global _tt_bin, _tt_error
    if _tt_bin is None and _tt_error is None:
        started = time.monotonic()
        p = subprocess.run([os.path.join(SOURCE_DIR, "scripts", "tinytown")],
                           capture_output=True, text=True, timeout=3600)
        if p.returncode != 0:
            _tt_error = ("tinytown 0.10.0's tt could not be built or found "
                         "(scripts/tinytown, status %d):\n%s" % (p.returncode, p.stderr[-3000:]))
        else:
            _tt_bin = p.stdout.strip().splitlines()[-1]
            took = time.monotonic() - started
            if took > 5:
                print("built tinytown 0.10.0 in %.0f s" % took, flush=True)
    if _tt_error:
        raise AssertionError(_tt_error)
    return _tt_bin


def strip(text):
    return ANSI.sub("", text)


def process_alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


class Town:
    """A tinytown town on the module's redis-server: a temp HOME and town
    directory, `tt init`, and the agent loops `tt` forks, stopped by pid."""

    def __init__(self, redis, name="demo"):
        self.redis = redis
        self.name = name
        self.r = redis.client()
        self.r.flushall()
        base = os.environ.get("TMPDIR") or "/tmp"
        self.tmp = tempfile.mkdtemp(prefix="ttb-tinytown-", dir=base)
        self.home = os.path.join(self.tmp, "home")
        self.dir = os.path.join(self.tmp, "town")
        os.makedirs(self.home)
        os.makedirs(self.dir)
        self.bin = tt_bin()
        self.env = {"HOME": self.home, "REDIS_URL": redis.url, "PATH": os.environ["PATH"],
                    "NO_COLOR": "1", "LANG": "C.UTF-8", "TMPDIR": base}
        self.tt("init", "--name", name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def tt(self, *args, check=True, timeout=60):
        """Runs `tt --town DIR ARGS`; returns its output (stdout + log lines
        on stderr), colour codes removed."""
        p = subprocess.run([os.path.join(self.bin, "tt"), "--town", self.dir] + list(args),
                           env=self.env, cwd=self.tmp, stdin=subprocess.DEVNULL,
                           capture_output=True, text=True, timeout=timeout)
        out = strip(p.stdout + p.stderr)
        if check and p.returncode != 0:
            raise AssertionError("tt %s: status %d\n%s" % (" ".join(args), p.returncode, out))
        return out

    def tt_list(self):
        """{short id: (label, State)} from `tt list`."""
        out = self.tt("list")
        rows = {}
        for line in out.splitlines():
            line = line.split(" tt: ", 1)[-1].rstrip()
            m = LIST_LINE.match(line)
            if m:
                rows[m["short"]] = (m["label"], m["state"])
        return rows

    def loops(self):
        """Pids of `tt agent-loop` processes of this town (their command
        line names the town directory, unique to this test)."""
        pids = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                with open("/proc/%s/cmdline" % entry, "rb") as f:
                    argv = f.read().split(b"\0")
            except OSError:
                continue
            # tt passes the town directory canonicalised
            if (b"agent-loop" in argv and process_alive(int(entry))
                    and (self.dir.encode() in argv
                         or os.path.realpath(self.dir).encode() in argv)):
                pids.append(int(entry))
        return pids

    def stop_loops(self, timeout=10):
        for pid in self.loops():
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout
        while self.loops() and time.monotonic() < deadline:
            time.sleep(0.05)
        for pid in self.loops():  # bounded: SIGKILL what ignored SIGTERM
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def close(self):
        self.stop_loops()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- the agent hashes, as Redis holds them ------------------------------

    def agent(self, aid):
        h = self.r.hgetall("tt:%s:agent:%s" % (self.name, aid))
        return {k.decode(): v.decode() for k, v in h.items()}

    def id_of(self, name):
        for key in self.r.scan_iter(match="tt:%s:agent:*" % self.name):
            if self.r.hget(key, "name") == name.encode():
                return key.decode().rsplit(":", 1)[1]
        raise AssertionError("no agent named %r" % name)

    def wait_state(self, aid, state, timeout=20):
        wait_until(lambda: self.agent(aid).get("state") == state, timeout,
                   what=lambda: "agent %s in state %s (is %r)" % (
                       aid, state, self.agent(aid).get("state")))


def apply(redis, *commands, town="demo"):
    """Runs commands through the bridge's service (no Kafka); returns the
    result documents in order."""
    lines = "".join(json.dumps(c) + "\n" for c in commands)
    p = subprocess.run([bridge_path(), "apply", "--set", "redis.url=" + redis.url,
                        "--set", "bridge.towns=" + town,
                        "--set", "bridge.wait_check_interval_ms=50"],
                       input=lines.encode(), capture_output=True, timeout=120)
    assert p.returncode == 0, p.stderr.decode()
    return [json.loads(line) for line in p.stdout.decode().splitlines()]


def call(redis, op, **args):
    return apply(redis, {"id": "tt-" + uuid.uuid4().hex, "op": op, "args": args})[0]



# ---- tests ---------------------------------------------------------------------


def test_bridge_lists_resolves_and_changes_agents_tt_spawned():
    with Town(redis_server) as t:
        t.tt("spawn", "w1", "--cli", "true")
        t.tt("spawn", "w2", "--cli", "true", "--role", "reviewer", "--nickname", "Sam")
        w1, w2 = t.id_of("w1"), t.id_of("w2")
        assert len(t.loops()) == 2, "tt spawn forks one agent loop each"
        t.wait_state(w1, "idle")  # the loop's first round
        t.wait_state(w2, "idle")

        listing = {a["id"]: a for a in ok(call(redis_server, "list"))["agents"]}
        rows = t.tt_list()
        assert set(listing) == {w1, w2}
        for aid, a in listing.items():
            label, state = rows[aid[:4]]
            assert state == a["state"].capitalize(), (rows, a)
            assert a["name"] == t.agent(aid)["name"] and a["cli"] == "true"
        assert rows[w2[:4]][0] == "Sam [reviewer]"
        assert listing[w2]["role_id"] == "reviewer" and listing[w2]["nickname"] == "Sam"

        # Changed by the bridge, as tinytown shows it.
        assert ok(call(redis_server, "interrupt", agent="w1"))["agent"]["state"] == "paused"
        assert t.tt_list()[w1[:4]][1] == "Paused"
        err(call(redis_server, "resume", agent="Sam"), "invalid_state")  # w2 is idle
        assert ok(call(redis_server, "interrupt", agent="Sam"))["agent"]["id"] == w2
        assert ok(call(redis_server, "resume", agent="sam [REVIEWER]"))["agent"]["id"] == w2
        assert ok(call(redis_server, "resume", agent=w1[:4]))["agent"]["state"] == "idle"
        assert t.tt_list()[w1[:4]][1] == "Idle"

        # get_result: a task tt assigned and completed.
        out = t.tt("assign", "w1", "write the docs")
        task_id = re.search(r"Assigned task ([0-9a-f-]{36})", out).group(1)
        t.tt("task", "complete", task_id, "--result", "docs written")
        task = ok(call(redis_server, "get_result", agent="w1"))["task"]
        assert task["id"] == task_id and task["result"] == "docs written", task
        assert task["state"] == "completed"

        # close: the loop sees the stop flag and stops itself; wait reports it.
        assert ok(call(redis_server, "close", agent="w1"))["agent"]["state"] == "draining"
        waited = ok(call(redis_server, "wait", agent="w1", timeout_ms=30000))
        assert waited["timed_out"] is False and waited["agent"]["state"] == "stopped", waited
        assert t.tt_list()[w1[:4]][1] == "Stopped"

        # kill: stopped at once; the loop exits at its next round.
        assert ok(call(redis_server, "kill", agent="w2"))["agent"]["state"] == "stopped"
        assert t.tt_list()[w2[:4]][1] == "Stopped"
        wait_until(lambda: not t.loops(), 30, what="both agent loops to exit by themselves")
        assert t.agent(w2)["state"] == "stopped"


def test_tt_sees_and_changes_agents_the_bridge_spawned():
    with Town(redis_server) as t:
        b1 = ok(call(redis_server, "spawn", name="b1", role_id="reviewer",
                     nickname="Ada"))["agent"]
        b2 = ok(call(redis_server, "spawn", name="b2", parent="b1", cli="true"))["agent"]
        assert b2["parent_agent_id"] == b1["id"]
        rows = t.tt_list()
        assert rows[b1["id"][:4]] == ("Ada [reviewer]", "Starting"), rows
        assert rows[b2["id"][:4]] == ("%s [b2]" % b2["nickname"], "Starting"), rows

        status = t.tt("status")
        assert "Agents: 2" in status, status
        assert "Ada [reviewer] (Starting)" in status, status

        # tt's own operations, by exact name, on the bridge's agents.
        ok(call(redis_server, "interrupt", agent="b1"))
        assert t.tt_list()[b1["id"][:4]][1] == "Paused"
        t.tt("resume", "b1")
        assert ok(call(redis_server, "list"))["agents"][0]["state"] == "idle"
        t.tt("kill", "b1")
        got = {a["id"]: a for a in ok(call(redis_server, "list"))["agents"]}
        assert got[b1["id"]]["state"] == "stopped"
        assert redis_server.client().exists("tt:demo:stop:" + b1["id"]) == 1

        # tt restart (the CLI's: terminal agents only) relaunches a loop.
        out = t.tt("restart", "b1")
        assert "Restarted" in out or "restart" in out.lower(), out
        wait_until(lambda: t.loops(), 10, what="tt restart's agent loop")
        a = {x["id"]: x for x in ok(call(redis_server, "list"))["agents"]}[b1["id"]]
        assert a["state"] in ("idle", "starting") and a["rounds_completed"] == 0, a
        t.stop_loops()

        # The events the bridge wrote, read by tinytown's own reader.
        ok(call(redis_server, "interrupt", agent="b2"))
        events = t.tt("events", "--count", "100")
        lines = [l for l in events.splitlines() if re.match(r"^\d\d:\d\d:\d\d \[", l)]
        n = redis_server.client().xlen("tt:demo:events")
        assert len(lines) == n, (n, events)
        assert any("agent_spawned" in l and b1["id"] in l for l in lines), events
        assert any("Agent interrupted (paused)" in l and b2["id"] in l for l in lines), events
        per_agent = t.tt("events", "--agent", "b2", "--count", "100")
        assert "Agent interrupted (paused)" in per_agent, per_agent


def _get_json(port, path):
    with urllib.request.urlopen("http://127.0.0.1:%d%s" % (port, path), timeout=10) as resp:
        assert resp.status == 200
        return json.loads(resp.read())


def test_townhall_shows_the_bridge_agents_like_its_own():
    with Town(redis_server) as t:
        t.tt("spawn", "native", "--cli", "true")
        mine = ok(call(redis_server, "spawn", name="bridged", role_id="reviewer"))["agent"]
        native = t.id_of("native")
        port = free_port()
        log = open(os.path.join(t.tmp, "townhall.log"), "wb")
        proc = subprocess.Popen([os.path.join(t.bin, "townhall"), "--town", t.dir, "rest",
                                 "--bind", "127.0.0.1", "--port", str(port)],
                                env=t.env, cwd=t.tmp, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=log, preexec_fn=pdeathsig_preexec(os.getpid()))
        log.close()
        try:
            def up():
                assert proc.poll() is None, open(os.path.join(t.tmp, "townhall.log")).read()
                try:
                    return _get_json(port, "/v1/status")
                except OSError:
                    return None
            status = wait_until(up, 30, interval=0.1, what="townhall answering")
            agents = _get_json(port, "/v1/agents")
            bridge_view = {a["id"]: a for a in ok(call(redis_server, "list"))["agents"]}
            assert agents["count"] == 2 and status["agent_count"] == 2, (agents, status)
            assert status["name"] == "demo"
            for listed in (agents["agents"], status["agents"]):
                by_id = {a["id"]: a for a in listed}
                assert set(by_id) == {native, mine["id"]} == set(bridge_view), listed
                for aid, a in by_id.items():
                    b = bridge_view[aid]
                    # townhall writes states capitalised, the protocol lowercase
                    assert a["state"].lower() == b["state"], (a, b)
                    for field in set(a) - {"state"}:
                        assert a[field] == b[field], (field, a, b)
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_live_agent_loop_with_bridge_interrupt_resume_and_capture():
    with Stack(kafka="mock") as s:
        with Town(s.redis) as t:
            s.bridge()
            t.tt("spawn", "looper", "--cli", "true")
            aid = t.id_of("looper")
            loop_log = os.path.join(t.dir, ".tt", "logs", "looper.log")

            def loop_said(text):
                try:
                    with open(loop_log, errors="replace") as f:
                        return text in strip(f.read())
                except OSError:
                    return False

            def events_show(pred, what):
                consume_all(s.kafka.bootstrap, s.events, until=pred, timeout=30)

            # The loop's own first write (Starting -> Idle) is captured.
            events_show(lambda recs: ("Starting", "Idle") in _state_events(recs, aid),
                        "the loop's Starting -> Idle captured")

            # Interrupted by the bridge while the loop runs: the loop sees
            # Paused and leaves the hash alone; tinytown shows Paused.
            assert ok(s.call("interrupt", {"agent": "looper"}))["agent"]["state"] == "paused"
            wait_until(lambda: loop_said("Agent is paused"), 3 * LOOP_STEP_S,
                       what="the agent loop noticing the pause")
            assert t.agent(aid)["state"] == "paused"
            assert t.tt_list()[aid[:4]][1] == "Paused"

            # Resumed by the bridge: the loop rewrites its whole hash again
            # (heartbeat moves) and keeps it Idle; all views agree.
            assert ok(s.call("resume", {"agent": aid}))["agent"]["state"] == "idle"
            beat = t.agent(aid)["last_heartbeat"]
            wait_until(lambda: t.agent(aid)["last_heartbeat"] != beat, 3 * LOOP_STEP_S,
                       what="the loop rewriting its hash after the resume")
            assert t.agent(aid)["state"] == "idle"
            assert t.tt_list()[aid[:4]][1] == "Idle"
            assert ok(s.call("list"))["agents"][0]["state"] == "idle"

            # Closed by the bridge: the loop drains and marks itself Stopped,
            # which capture reports; the bridge's wait sees the same.
            assert ok(s.call("close", {"agent": "looper"}))["agent"]["state"] == "draining"
            waited = ok(s.call("wait", {"agent": "looper", "timeout_ms": 30000}, timeout=40))
            assert waited["timed_out"] is False and waited["agent"]["state"] == "stopped"
            wait_until(lambda: not t.loops(), 3 * LOOP_STEP_S, what="the loop exiting")
            events_show(lambda recs: ("Draining", "Stopped") in _state_events(recs, aid),
                        "the loop's Draining -> Stopped captured")
            changes = _state_events(consume_all(s.kafka.bootstrap, s.events), aid)
            # The bridge's own interrupt/resume/close are its own events, not
            # captured changes; what capture adds is the loop's doing only.
            assert ("Idle", "Paused") not in changes and ("Paused", "Idle") not in changes, changes
            assert t.tt_list()[aid[:4]][1] == "Stopped"


def _state_events(records, aid):
    out = []
    for r in records:
        doc = json.loads(r.value)
        if doc.get("agent_id") == aid and doc["event_type"] == "agent_state_changed":
            out.append((doc["old_state"], doc["new_state"]))
    return out


def _tt_vs_bridge(t, refs):
    """For each reference: `tt interrupt REF` pauses the agent tt resolves
    (0.10.0: the exact name, then the supervisor aliases); the bridge's
    `resume REF` must answer for that same agent. Returns the mismatches as
    (reference, tt's agent, the bridge's answer)."""
    r = t.r
    mismatches = []
    for ref in refs:
        t.tt("interrupt", ref)
        paused = [k.decode().rsplit(":", 1)[1] for k in r.scan_iter(match="tt:demo:agent:*")
                  if r.hget(k, "state") == b"paused"]
        assert len(paused) == 1, (ref, paused)
        doc = call(redis_server, "resume", agent=ref)
        if not doc["ok"] or doc["result"]["agent"]["id"] != paused[0]:
            mismatches.append((ref, paused[0], doc.get("error") or doc["result"]["agent"]["id"]))
            r.hset("tt:demo:agent:" + paused[0], "state", "idle")
    return mismatches


def _idle_agents(t, names):
    for name in names:
        t.tt("spawn", name, "--cli", "true")
    t.stop_loops()  # their rounds would race the states compared
    for name in names:
        t.r.hset("tt:demo:agent:" + t.id_of(name), "state", "idle")


def test_names_and_uuid_forms_tt_accepts_resolve_to_the_same_agent():
    with Town(redis_server) as t:
        _idle_agents(t, ["alice", "Carol", "dave-2", "émile"])
        mismatches = _tt_vs_bridge(t, ["alice", "Carol", "dave-2", "émile"])
        # UUIDs in every form Uuid::parse_str takes, as `tt spawn --parent`.
        alice = t.id_of("alice")
        forms = [alice, alice.upper(), alice.replace("-", ""), "{%s}" % alice,
                 "urn:uuid:" + alice, alice.replace("-", "").upper()]
        for i, form in enumerate(forms):
            t.tt("spawn", "kid-%d" % i, "--cli", "true", "--parent", form)
            tt_parent = t.agent(t.id_of("kid-%d" % i)).get("parent_agent_id")
            doc = call(redis_server, "spawn", name="bkid-%d" % i, parent=form)
            got = doc["result"]["agent"]["parent_agent_id"] if doc["ok"] else doc["error"]
            if tt_parent != alice or got != alice:
                mismatches.append((form, tt_parent, got))
        t.stop_loops()
        assert not mismatches, "references resolved differently: %s" % mismatches


def test_names_differing_only_in_case_resolve_as_tt_resolves_them():
    """tt spawns "Bob" and "bob" side by side (0.10.0 has no name check);
    `tt` resolves each exactly, so the bridge must too."""
    with Town(redis_server) as t:
        _idle_agents(t, ["Bob", "bob"])
        mismatches = _tt_vs_bridge(t, ["Bob", "bob"])
        assert not mismatches, "references resolved differently: %s" % mismatches


def test_supervisor_aliases_resolve_as_tt_resolves_them():
    """`supervisor` and `conductor` (trimmed, any case) name the fixed
    supervisor id when no agent has that exact name."""
    with Town(redis_server) as t:
        now = "2026-11-30T16:00:00+00:00"
        t.r.hset("tt:demo:agent:" + SUPERVISOR_ID, mapping={
            "id": SUPERVISOR_ID, "name": "mayor", "agent_type": "supervisor",
            "state": "idle", "cli": "supervisor", "created_at": now, "last_heartbeat": now,
            "tasks_completed": "0", "rounds_completed": "0", "last_active_at": now,
            "spawn_mode": "fresh"})
        _idle_agents(t, ["helper"])
        mismatches = _tt_vs_bridge(t, ["supervisor", "Conductor", " SUPERVISOR ", "conductor"])
        assert not mismatches, "references resolved differently: %s" % mismatches


def main():
    global redis_server
    assert os.access(bridge_path(), os.X_OK), "set TTB_BUILD_DIR to a build with tinytown-bridge"
    with RedisServer() as server:
        redis_server = server
        run_tests(globals())


if __name__ == "__main__":
    main()
