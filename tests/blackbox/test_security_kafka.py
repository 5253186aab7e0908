#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""Kafka security against a real Apache Kafka 3.9.1 broker.

One broker for the module, with two listeners beside the harness's own
PLAINTEXT one: SASL_SSL (PLAIN and SCRAM-SHA-512 users) and SSL requiring a
client certificate (mTLS). Its certificate comes from a CA this file makes
with openssl (subjectAltName=IP:127.0.0.1); a second CA signs nothing the
broker trusts. The bridge is pointed at a secure listener only, so every one
of its clients (commands consumer, results and relay producers, metadata and
admin requests) and `send` must use the security settings, each path set up
a different way: the config file (PLAIN), the environment with a secrets
file (SCRAM), --set with an encrypted key and its password file (mTLS), and
raw -X properties (send). The harness's own clients stay on PLAINTEXT.

Then the failures: a wrong password, an unknown CA, a client certificate
the broker refuses and an expired one each end the start with one error line
naming the cause and a non-zero exit; a password changed on the broker while
the bridge runs turns /readyz not-ready. And the secrets: never in the log,
--check-config, /metrics, send's output, or the output of a crash.
"""
import atexit
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import uuid

import apache_kafka
from bridge_harness import EventReader, Stack, bridge_path, http_get as get, ok
from harness import free_port, run_tests, wait_until
from tls_ca import TestCA

TMP = tempfile.mkdtemp(prefix="ttb-ksec-", dir=os.environ.get("TMPDIR") or "/tmp")
atexit.register(shutil.rmtree, TMP, True)

# Distinct, greppable secrets.
PLAIN_PASSWORD = "plainpw-" + uuid.uuid4().hex[:10]
SCRAM_PASSWORD = "scrampw-" + uuid.uuid4().hex[:10]
KEY_PASSWORD = "keypw-" + uuid.uuid4().hex[:10]
WRONG_PASSWORD = "wrongpw-" + uuid.uuid4().hex[:10]
SECRETS = (PLAIN_PASSWORD, SCRAM_PASSWORD, KEY_PASSWORD, WRONG_PASSWORD)

CA = TestCA(os.path.join(TMP, "ca"))
OTHER_CA = TestCA(os.path.join(TMP, "other"), name="other-ca")
BROKER_CERT, BROKER_KEY = CA.issue("broker")
CLIENT_CERT, CLIENT_KEY = CA.issue("bridge", server=False, key_password=KEY_PASSWORD)
EXPIRED_CERT, EXPIRED_KEY = CA.issue("expired", server=False, expired=True)
STRANGER_CERT, STRANGER_KEY = OTHER_CA.issue("stranger", server=False)

START_FAILURE_TIMEOUT = 30  # a refused start must end well before this


def secret_file(name, value):
    path = os.path.join(TMP, name)
    with open(path, "w") as f:
        f.write(value + "\n")  # as `echo` and most secret stores write it
    return path


def broker():
    jaas = "org.apache.kafka.common.security.%s required%s;"
    return apache_kafka.shared_broker(
        listeners={"SASL_SSL": "SASL_SSL", "MTLS": "SSL"},
        scram=["SCRAM-SHA-512=[name=scram-bridge,password=%s]" % SCRAM_PASSWORD],
        properties={
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": CA.keystore(BROKER_CERT, BROKER_KEY),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": CA.ca_pem,
            "listener.name.sasl_ssl.sasl.enabled.mechanisms": "PLAIN,SCRAM-SHA-512",
            "listener.name.sasl_ssl.plain.sasl.jaas.config":
                jaas % ("plain.PlainLoginModule", ' user_plain-bridge="%s"' % PLAIN_PASSWORD),
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config":
                jaas % ("scram.ScramLoginModule", ""),
            "listener.name.mtls.ssl.client.auth": "required",
        })


def sasl_ssl():
    return ["--set", "kafka.brokers=" + broker().address("SASL_SSL")]


def scram_env(password_file):
    return {"TT_BRIDGE_KAFKA_SECURITY_PROTOCOL": "sasl_ssl",
            "TT_BRIDGE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
            "TT_BRIDGE_KAFKA_SASL_USERNAME": "scram-bridge",
            "TT_BRIDGE_KAFKA_SASL_PASSWORD_FILE": password_file,
            "TT_BRIDGE_KAFKA_SSL_CA_LOCATION": CA.ca_pem}


def mtls(cert=CLIENT_CERT, key=CLIENT_KEY, ca=CA.ca_pem):
    args = ["--set", "kafka.brokers=" + broker().address("MTLS"),
            "--set", "kafka.security_protocol=ssl",
            "--set", "kafka.ssl_ca_location=" + ca,
            "--set", "kafka.ssl_certificate_location=" + cert,
            "--set", "kafka.ssl_key_location=" + key]
    if key == CLIENT_KEY:
        args += ["--set", "kafka.ssl_key_password_file=" + secret_file("key-pw", KEY_PASSWORD)]
    return args


def spawn_is_answered_and_relayed(s, name):
    """A command round trip through the bridge's consumer and results
    producer, and its event through the relay producer."""
    agent = ok(s.call("spawn", {"name": name}, timeout=60))["agent"]
    ev = EventReader(s)
    try:
        wait_until(lambda: any(r["doc"].get("event_type") == "agent_spawned" and
                               r["doc"].get("agent_id") == agent["id"] for r in ev.poll()),
                   60, interval=0.05, what="agent_spawned of %s on %s" % (name, s.events))
    finally:
        ev.c.close()


def error_lines(text):
    return [line for line in text.splitlines() if "level=error" in line]


def assert_no_secret(where, text):
    for secret in SECRETS:
        assert secret not in text, "%s shows the secret %s:\n%s" % (where, secret, text[-3000:])


def refused_start(s, extra, env=None):
    """Starts a bridge that must give up: @returns its log once it exited
    non-zero within START_FAILURE_TIMEOUT, holding one error line."""
    b = s.bridge(extra, env=env, wait_assigned=False)
    try:
        code = b.wait(START_FAILURE_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise AssertionError("the bridge kept retrying:\n" + b.tail())
    log = b.log_text()
    assert code != 0, log
    errors = error_lines(log)
    assert len(errors) == 1, "expected one error line:\n" + log
    assert_no_secret("the log of a refused start", log)
    return errors[0]


# ---- the three ways in ------------------------------------------------------

def test_sasl_ssl_plain_from_the_config_file():
    path = os.path.join(TMP, "plain.conf")
    with open(path, "w") as f:
        f.write('kafka = {\n  security_protocol = "sasl_ssl";\n  sasl_mechanism = "PLAIN";\n'
                '  sasl_username = "plain-bridge";\n  sasl_password = "%s";\n'
                '  ssl_ca_location = "%s";\n};\n' % (PLAIN_PASSWORD, CA.ca_pem))
    broker()
    with Stack(kafka="apache") as s:
        b = s.bridge(["--config", path] + sasl_ssl())
        spawn_is_answered_and_relayed(s, "plain-1")
        assert "security.protocol" not in b.log_text()  # no librdkafka complaint
        assert_no_secret("the bridge's log", b.log_text())


def test_sasl_ssl_scram_from_the_environment_and_send_with_raw_properties():
    broker()
    with Stack(kafka="apache") as s:
        b = s.bridge(sasl_ssl(), env=scram_env(secret_file("scram-pw", SCRAM_PASSWORD)))
        spawn_is_answered_and_relayed(s, "scram-1")
        # send: -X raw properties, the password in its own variable.
        env = dict(os.environ, TT_BRIDGE_RDKAFKA_SASL_PASSWORD=SCRAM_PASSWORD)
        p = subprocess.run([bridge_path()] + s.kafka_args() + sasl_ssl() +
                           ["-X", "security.protocol=SASL_SSL",
                            "-X", "sasl.mechanisms=SCRAM-SHA-512",
                            "-X", "sasl.username=scram-bridge",
                            "-X", "ssl.ca.location=" + CA.ca_pem,
                            "send", "list", "--wait-result", "--timeout", "60000"],
                           env=env, capture_output=True, text=True, timeout=90)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout.splitlines()[-1])["ok"] is True, p.stdout
        assert_no_secret("send's output", p.stdout + p.stderr)
        assert_no_secret("the bridge's log", b.log_text())


def test_mtls_from_set_flags_with_an_encrypted_key():
    broker()
    with Stack(kafka="apache") as s:
        b = s.bridge(mtls())
        spawn_is_answered_and_relayed(s, "mtls-1")
        p = subprocess.run([bridge_path()] + s.kafka_args() + mtls() +
                           ["send", "list", "--wait-result", "--timeout", "60000"],
                           capture_output=True, text=True, timeout=90)
        assert p.returncode == 0, p.stderr
        assert_no_secret("send's output", p.stdout + p.stderr)
        assert_no_secret("the bridge's log", b.log_text())


# ---- failures at start -------------------------------------------------------

def test_a_wrong_password_stops_the_start_with_one_line():
    broker()
    with Stack(kafka="apache") as s:
        line = refused_start(s, sasl_ssl(), env=scram_env(secret_file("wrong", WRONG_PASSWORD)))
        assert 'cause="SASL authentication failed"' in line, line
        assert "invalid credentials" in line, line
        # send says it once too, and stops at once instead of at its timeout.
        env = dict(os.environ, **scram_env(secret_file("wrong", WRONG_PASSWORD)))
        p = subprocess.run([bridge_path()] + s.kafka_args() + sasl_ssl() +
                           ["send", "list", "--timeout", "60000"],
                           env=env, capture_output=True, text=True, timeout=30)
        assert p.returncode == 3, p.stderr
        ours = [l for l in p.stderr.splitlines() if l.startswith("tinytown-bridge:")]
        assert len(ours) == 1 and "SASL authentication failed" in ours[0], p.stderr
        assert_no_secret("send's output", p.stdout + p.stderr)


def test_an_unknown_ca_stops_the_start_with_one_line():
    broker()
    with Stack(kafka="apache") as s:
        env = dict(scram_env(secret_file("scram-pw", SCRAM_PASSWORD)),
                   TT_BRIDGE_KAFKA_SSL_CA_LOCATION=OTHER_CA.ca_pem)
        line = refused_start(s, sasl_ssl(), env=env)
        assert 'cause="TLS handshake failed"' in line, line
        assert "certificate verify failed" in line, line


def test_refused_and_expired_client_certificates_stop_the_start():
    broker()
    with Stack(kafka="apache") as s:
        # Signed by a CA the broker does not trust: refused after the handshake.
        line = refused_start(s, mtls(cert=STRANGER_CERT, key=STRANGER_KEY))
        assert 'cause="TLS handshake failed"' in line and "alert" in line, line
        # Expired: named, with its date, before any connection.
        line = refused_start(s, mtls(cert=EXPIRED_CERT, key=EXPIRED_KEY))
        assert "cannot start" in line and EXPIRED_CERT in line and " expired on " in line, line
        # --check-config finds it too.
        check = subprocess.run([bridge_path(), "--check-config"] +
                               mtls(cert=EXPIRED_CERT, key=EXPIRED_KEY),
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 2 and " expired on " in check.stderr, check.stderr


# ---- later -----------------------------------------------------------------

def set_scram_password(k, password):
    """Changes the SCRAM user's password on the broker (Kafka's own tool)."""
    p = subprocess.run(k._java(apache_kafka.classpath(), "kafka.admin.ConfigCommand",
                               "--bootstrap-server", k.bootstrap, "--alter",
                               "--entity-type", "users", "--entity-name", "scram-bridge",
                               "--add-config", "SCRAM-SHA-512=[password=%s]" % password,
                               heap="256m"),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


def test_a_password_changed_later_turns_readyz_not_ready():
    k = broker()
    port = free_port()
    with Stack(kafka="apache") as s:
        # New connections are what meet the new password: the bridge's
        # producers open one per command here.
        b = s.bridge(sasl_ssl() + ["--set", "http.listen=127.0.0.1:%d" % port,
                                   "-X", "connections.max.idle.ms=1000"],
                     env=scram_env(secret_file("scram-pw", SCRAM_PASSWORD)))
        base = "http://127.0.0.1:%d" % port
        wait_until(lambda: get(base + "/readyz")[0] == 200, 30, what="ready")
        try:
            set_scram_password(k, WRONG_PASSWORD)
            s.send("list")
            wait_until(lambda: "kafka_security" in get(base + "/readyz")[1], 60,
                       what=lambda: "/readyz naming kafka_security\n" + b.tail())
            assert get(base + "/readyz")[0] == 503
            assert re.search(r"^tinytown_bridge_kafka_security_failing 1$",
                             get(base + "/metrics")[1], re.M)
            b.wait_log('cause="SASL authentication failed"', 30)
        finally:
            set_scram_password(k, SCRAM_PASSWORD)
        wait_until(lambda: get(base + "/readyz")[0] == 200, 60,
                   what=lambda: "ready again\n" + b.tail())
        # Said once, however many clients met it and however often.
        assert len(error_lines(b.log_text())) == 1, b.tail()
        assert_no_secret("the bridge's log", b.log_text())


# ---- secrets -----------------------------------------------------------------

def test_secrets_stay_out_of_logs_check_config_metrics_and_crashes():
    broker()
    port = free_port()
    with Stack(kafka="apache") as s:
        env = dict(scram_env(secret_file("scram-pw", SCRAM_PASSWORD)),
                   TT_BRIDGE_KAFKA_SASL_PASSWORD=WRONG_PASSWORD,  # the file wins
                   TT_BRIDGE_RDKAFKA_SSL_KEY_PASSWORD=KEY_PASSWORD)
        extra = sasl_ssl() + ["--set", "http.listen=127.0.0.1:%d" % port,
                              "-X", "sasl.oauthbearer.config=" + PLAIN_PASSWORD]
        b = s.bridge(extra, env=env)
        ok(s.call("list", timeout=60))
        status, body = get("http://127.0.0.1:%d/metrics" % port)
        assert status == 200 and "tinytown_bridge_kafka_security_failing 0" in body
        assert_no_secret("/metrics", body)
        check = subprocess.run(b.argv() + ["--check-config"], env=dict(os.environ, **env),
                               capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        assert 'sasl_password = "****";' in check.stdout
        assert '"ssl.key.password=****"' in check.stdout, check.stdout
        assert_no_secret("--check-config", check.stdout + check.stderr)
        # A crash: whatever the process leaves on its way out (a sanitizer
        # build prints its own report of the SEGV and exits its own way).
        b.signal(signal.SIGSEGV)
        assert b.wait(20) != 0
        assert_no_secret("the log of a crashed bridge", b.log_text())


if __name__ == "__main__":
    run_tests(globals())
