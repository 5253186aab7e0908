# SPDX-License-Identifier: MIT
"""Helpers for the black-box tests (run with Debian's /usr/bin/python3).

- RedisServer: a private redis-server on 127.0.0.1, free port, fresh temp
  dir, no persistence unless extra args ask; same behaviour as the C harness
  in redis-harness.c. The server dies with the test process (parent-death
  signal), and an atexit hook stops any server a failing test forgot.
- free_port(), wait_until(): small building blocks; poll, never sleep blindly.
- run_tests(globals()): a tiny runner for files of test_* functions.

Set TTB_KEEP_REDIS=1 to keep server directories (and redis.log) for debugging.
"""

import atexit
import ctypes
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import time
import traceback

START_TIMEOUT = 10.0
STOP_TIMEOUT = 5.0
PORT_ATTEMPTS = 5
_PR_SET_PDEATHSIG = 1

_live_servers = set()


def free_port():
    """A port that was free a moment ago (bind to port 0 and ask)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout, interval=0.01, what="condition"):
    """Poll predicate() until it returns something truthy and return that;
    raise AssertionError naming `what` (a string, or a callable giving one at
    failure time) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            if callable(what):
                what = what()
            raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))
        time.sleep(interval)


def _keep_dirs():
    return os.environ.get("TTB_KEEP_REDIS", "") not in ("", "0")


def _redis_server_path():
    return shutil.which("redis-server") or "/usr/bin/redis-server"


def _tls_context(tls):
    """An ssl context trusting tls["ca_file"], with the client certificate of
    tls["client_cert"]/["client_key"] when given."""
    ctx = ssl.create_default_context(cafile=tls["ca_file"])
    if tls.get("client_cert"):
        ctx.load_cert_chain(tls["client_cert"], tls.get("client_key"))
    return ctx


def _ping(port, tls=None):
    """True when the server answers +PONG, or -NOAUTH when it requires a
    password (-LOADING means not ready yet). tls: see RedisServer."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1.0) as raw:
            s = _tls_context(tls).wrap_socket(raw, server_hostname="127.0.0.1") if tls else raw
            s.sendall(b"PING\r\n")
            buf = b""
            while b"\r\n" not in buf and len(buf) < 64:
                chunk = s.recv(64)
                if not chunk:
                    break
                buf += chunk
            return buf.startswith(b"+PONG") or buf.startswith(b"-NOAUTH")
    except OSError:
        return False


_libc = ctypes.CDLL(None, use_errno=True)  # loaded here, not in the forked child


def pdeathsig_preexec(parent_pid):
    # Runs in the child between fork and exec: the server gets SIGTERM when
    # the thread that started it dies, however the test dies. The getppid
    # check covers a parent that died before prctl ran.
    def preexec():
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
        if os.getppid() != parent_pid:
            os._exit(127)
    return preexec


class RedisServer:
    """A private redis-server. Use as a context manager or call stop().

    extra_args: additional redis-server arguments, e.g.
    ["--appendonly", "yes"]. die_with_parent=False is for tools that start a
    server and exit (tests/lib/start-redis). The parent-death signal follows
    the starting thread, so start servers from the main thread.

    tls: a TLS-only server (plain port 0; `port` is the TLS port, `url` says
    rediss://) when a dict with cert_file, key_file, ca_file (the server's),
    auth_clients ("no", "optional" or "yes", default "no") and, for the
    harness's own clients (ping, client()), client_cert and client_key."""

    def __init__(self, extra_args=None, die_with_parent=True, start=True, tls=None):
        self.extra_args = list(extra_args or [])
        self.tls = tls
        self.die_with_parent = die_with_parent
        self.port = None
        self.dir = None
        self.proc = None
        if start:
            self.start()

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @property
    def url(self):
        return "%s://127.0.0.1:%d" % ("rediss" if self.tls else "redis", self.port)

    @property
    def log_path(self):
        return os.path.join(self.dir, "redis.log")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    def start(self):
        base = os.environ.get("TMPDIR") or "/tmp"
        self.dir = tempfile.mkdtemp(prefix="ttb-redis-", dir=base)
        _live_servers.add(self)
        try:
            for _ in range(PORT_ATTEMPTS):
                self.port = free_port()
                if self._spawn_and_wait(retry_on_port_clash=True):
                    return self
                sys.stderr.write("harness: port %d was taken, retrying\n" % self.port)
            raise RuntimeError("harness: no free port after %d attempts" % PORT_ATTEMPTS)
        except BaseException:
            self.stop()
            raise

    def _argv(self):
        # Persistence off by default; extra args come last so they win.
        if self.tls:
            port = ["--port", "0", "--tls-port", str(self.port),
                    "--tls-cert-file", self.tls["cert_file"],
                    "--tls-key-file", self.tls["key_file"],
                    "--tls-ca-cert-file", self.tls["ca_file"],
                    "--tls-auth-clients", self.tls.get("auth_clients", "no")]
        else:
            port = ["--port", str(self.port)]
        return [_redis_server_path(),
                "--save", "", "--appendonly", "no", "--dir", self.dir,
                "--daemonize", "no", "--protected-mode", "yes",
                "--bind", "127.0.0.1"] + port + ["--logfile", self.log_path] + self.extra_args

    def _log_tail(self, offset=0, limit=2048):
        try:
            with open(self.log_path, "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(offset, f.tell() - limit))
                return f.read().decode("utf-8", "replace")
        except OSError:
            return "(no log)"

    def _spawn_and_wait(self, retry_on_port_clash):
        """True when up; False when the port was taken (caller may retry)."""
        offset = os.path.getsize(self.log_path) if os.path.exists(self.log_path) else 0
        # stdout/stderr into the log: startup errors land there, and the
        # server must not hold the caller's pipes open (shell $(start-redis)).
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._argv(), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                close_fds=True, cwd=self.dir,
                preexec_fn=pdeathsig_preexec(os.getpid()) if self.die_with_parent else None)
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            code = self.proc.poll()
            if code is not None:
                self.proc = None
                tail = self._log_tail(offset)
                if retry_on_port_clash and "Address already in use" in tail:
                    return False
                raise RuntimeError("harness: redis-server on port %d exited during startup "
                                   "(status %s); log tail:\n%s" % (self.port, code, tail))
            if _ping(self.port, self.tls):
                return True
            if time.monotonic() >= deadline:
                self.proc.kill()
                self.proc.wait()
                self.proc = None
                raise RuntimeError("harness: redis-server on port %d did not answer PING "
                                   "within %.0fs; log tail:\n%s"
                                   % (self.port, START_TIMEOUT, self._log_tail(offset)))
            time.sleep(0.01)

    def _terminate(self):
        # Only the Popen we own is signalled; it is not reaped until wait()
        # returns, so the pid cannot have been recycled.
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                sys.stderr.write("harness: redis-server pid %d ignored SIGTERM, killing\n"
                                 % self.proc.pid)
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def pause(self):
        """Stop the server, keep its port and directory (outage tests)."""
        self._terminate()

    def resume(self):
        """Start again on the same port and directory. A port taken while
        paused is an error: clients expect the server back at the same place."""
        if self.proc is not None:
            return self
        if not self._spawn_and_wait(retry_on_port_clash=False):
            raise RuntimeError("harness: port %d was taken while paused" % self.port)
        return self

    def stop(self):
        """Stop the server and remove its directory. Idempotent."""
        self._terminate()
        if self.dir and os.path.isdir(self.dir):
            if _keep_dirs():
                sys.stderr.write("harness: keeping %s (TTB_KEEP_REDIS)\n" % self.dir)
            else:
                shutil.rmtree(self.dir, ignore_errors=True)
        _live_servers.discard(self)

    def client(self, **kwargs):
        import redis  # python3-redis; imported lazily so start-redis needs no module
        kwargs.setdefault("decode_responses", False)
        if self.tls:
            kwargs.setdefault("ssl", True)
            kwargs.setdefault("ssl_ca_certs", self.tls["ca_file"])
            kwargs.setdefault("ssl_certfile", self.tls.get("client_cert"))
            kwargs.setdefault("ssl_keyfile", self.tls.get("client_key"))
        return redis.Redis(host="127.0.0.1", port=self.port, **kwargs)


@atexit.register
def _stop_forgotten_servers():
    for server in list(_live_servers):
        if server.die_with_parent:
            server.stop()


def _exit_on_sigterm(signum, frame):
    # meson's timeout sends SIGTERM: exit through atexit so servers are
    # stopped and their directories removed before the SIGKILL follows.
    sys.exit(128 + signum)


try:
    if signal.getsignal(signal.SIGTERM) == signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
except ValueError:  # imported outside the main thread: leave signals alone
    pass


def mock_kafka_only(reason):
    """Marks a test that needs the mock broker (fault injection, mock-only
    behaviour): a run against real Kafka ($TTB_KAFKA=apache) leaves it out
    and says so by name, with the reason."""
    def mark(fn):
        fn.mock_kafka_only = reason
        return fn
    return mark


def run_tests(namespace):
    """Run every test_* function of namespace (pass globals()) in definition
    order; print ok/FAIL per test and "N passed, N failed"; exit 1 on any
    failure. Tests may be selected with TTB_TEST_FILTER=substring. With
    TTB_KAFKA=apache, tests marked mock_kafka_only are listed as not run."""
    only = os.environ.get("TTB_TEST_FILTER", "")
    real_kafka = os.environ.get("TTB_KAFKA", "mock") == "apache"
    tests = []
    for name, fn in list(namespace.items()):
        if not (name.startswith("test_") and callable(fn) and only in name):
            continue
        if real_kafka and getattr(fn, "mock_kafka_only", None):
            print("not run on Apache Kafka: %s (%s)" % (name, fn.mock_kafka_only), flush=True)
            continue
        tests.append((name, fn))
    passed = failed = 0
    for name, fn in tests:
        try:
            fn()
        except Exception:  # a KeyboardInterrupt still stops the run
            failed += 1
            print("FAIL %s: %s" % (name, traceback.format_exc().rstrip()), flush=True)
        else:
            passed += 1
            print("ok %s" % name, flush=True)
    print("%d passed, %d failed" % (passed, failed), flush=True)
    sys.exit(1 if failed else 0)
