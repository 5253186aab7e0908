#!/usr/bin/python3
# SPDX-License-Identifier: MIT
# docker-compose.yml and the Dockerfile, checked without a container engine
# (none runs where the tests run). Debian's docker-compose 1.29 validates a
# file against the Compose schema and resolves it with `config` without ever
# contacting a daemon; the tests prove that by pointing DOCKER_HOST at a port
# nobody listens on. On top of the schema they check what the schema cannot:
# every TT_BRIDGE_* variable is one the bridge knows (per the built binary's
# --help-config), the bridge accepts the stack's environment as a whole
# (--check-config), the topics created are the ones the bridge uses, and the
# runtime image installs a package for every shared library the binary needs.
import os
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "lib"))
import yaml  # noqa: E402  (python3-yaml, a dependency of docker-compose)

from harness import run_tests  # noqa: E402

SOURCE_DIR = os.environ.get("TTB_SOURCE_DIR") or os.path.abspath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))
BUILD_DIR = os.environ.get("TTB_BUILD_DIR", "")
COMPOSE_FILE = os.path.join(SOURCE_DIR, "docker-compose.yml")
DOCKERFILE = os.path.join(SOURCE_DIR, "Dockerfile")


def bridge_binary():
    path = os.path.join(BUILD_DIR, "tinytown-bridge")
    assert BUILD_DIR and os.access(path, os.X_OK), \
        "TTB_BUILD_DIR must name a build directory holding tinytown-bridge (got %r)" % BUILD_DIR
    return path


def compose(*args):
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose not found (Debian package docker-compose, see scripts/deps)"
    env = dict(os.environ)
    # Nothing listens here: any attempt to reach an engine would fail.
    env["DOCKER_HOST"] = "tcp://127.0.0.1:9"
    return subprocess.run([exe, "-f", COMPOSE_FILE] + list(args), env=env, cwd=SOURCE_DIR,
                          capture_output=True, text=True, timeout=60)


_resolved = None


def resolved():
    """The compose file as docker-compose resolves it (defaults applied)."""
    global _resolved
    if _resolved is None:
        r = compose("config")
        assert r.returncode == 0, "docker-compose config failed:\n%s" % r.stderr
        _resolved = yaml.safe_load(r.stdout)
    return _resolved


def env_of(service):
    env = resolved()["services"][service].get("environment") or {}
    if isinstance(env, list):  # "KEY=value" form
        env = dict(item.split("=", 1) for item in env)
    return {k: ("" if v is None else str(v)) for k, v in env.items()}


_help = None


def help_config():
    global _help
    if _help is None:
        r = subprocess.run([bridge_binary(), "--help-config"], capture_output=True, text=True,
                           timeout=30)
        assert r.returncode == 0, "--help-config failed: %s" % r.stderr
        _help = r.stdout
    return _help


def known_env_names():
    names = set(re.findall(r"^\s+env:\s+(TT_BRIDGE_[A-Z0-9_]+)\s*$", help_config(), re.M))
    assert len(names) > 10, "--help-config listed too few settings:\n" + help_config()
    return names


def setting_default(name):
    """The quoted default of a setting as --help-config prints it."""
    m = re.search(r"^%s\n(?:\s+.*\n)*?\s+default:\s+\"([^\"]*)\"" % re.escape(name),
                  help_config(), re.M)
    assert m, "no default for %s in --help-config" % name
    return m.group(1)


def test_config_valid_without_engine():
    r = compose("config", "-q")
    assert r.returncode == 0, "docker-compose config -q failed:\n%s" % r.stderr
    # Warnings (an unset variable interpolated to "", a deprecated key) count.
    assert r.stderr.strip() == "", "docker-compose warned:\n%s" % r.stderr


def test_config_rejects_a_broken_file():
    # Guards the test above: the validation is real, not a no-op.
    with open(COMPOSE_FILE) as f:
        text = f.read()
    broken = os.path.join(os.environ.get("TMPDIR") or "/tmp", "ttb-compose-broken-%d.yml" % os.getpid())
    with open(broken, "w") as f:
        f.write(text.replace("condition: service_healthy", "condition: service_sleepy", 1))
    try:
        exe = shutil.which("docker-compose")
        r = subprocess.run([exe, "-f", broken, "config", "-q"], capture_output=True, text=True,
                           cwd=SOURCE_DIR, env=dict(os.environ, DOCKER_HOST="tcp://127.0.0.1:9"),
                           timeout=60)
    finally:
        os.unlink(broken)
    assert r.returncode != 0 and "service_sleepy" in r.stderr, r.stderr


def test_services_and_dependencies():
    services = resolved()["services"]
    assert set(services) >= {"redis", "kafka", "kafka-init", "bridge"}, sorted(services)
    for name in ("redis", "kafka", "bridge"):
        assert services[name].get("healthcheck", {}).get("test"), "%s has no healthcheck" % name
    bridge = services["bridge"]
    deps = bridge["depends_on"]
    assert deps["redis"]["condition"] == "service_healthy", deps
    assert deps["kafka-init"]["condition"] == "service_completed_successfully", deps
    assert services["kafka-init"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert bridge["build"]["context"] == SOURCE_DIR, bridge["build"]
    # The endpoint is published on the host's loopback only.
    # Compose v1 prints "ip:published:target/tcp", v2 a mapping: accept both.
    ports = [(p.get("host_ip"), str(p.get("published")), str(p.get("target")))
             if isinstance(p, dict) else tuple(p.split("/")[0].split(":"))
             for p in bridge["ports"]]
    assert ports == [("127.0.0.1", "9464", "9464")], ports
    kafka_env = env_of("kafka")
    assert kafka_env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert kafka_env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert kafka_env["KAFKA_TRANSACTION_STATE_LOG_MIN_ISR"] == "1"
    # the bridge reaches Kafka on the listener advertised inside the network
    assert "PLAINTEXT://kafka:9092" in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    assert env_of("bridge")["TT_BRIDGE_KAFKA_BROKERS"] == "kafka:9092"


def test_bridge_variables_are_known():
    known = known_env_names()
    for service in resolved()["services"]:
        for name in env_of(service):
            if name.startswith("TT_BRIDGE_RDKAFKA_"):
                continue  # librdkafka pass-through, any property name
            if name.startswith("TT_BRIDGE_"):
                assert name in known, "%s sets %s, which the bridge does not know; known: %s" % (
                    service, name, ", ".join(sorted(known)))
    assert "TT_BRIDGE_HTTP_LISTEN" in env_of("bridge")


def test_bridge_accepts_the_stack_environment():
    # The environment the container gets, with the config file the image
    # ships, must load and validate as a whole (not only name known settings).
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_BRIDGE_")}
    env.update(env_of("bridge"))
    conf = os.path.join(SOURCE_DIR, "conf", "tinytown-bridge.conf")
    r = subprocess.run([bridge_binary(), "--config", conf, "--check-config"], env=env,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, "--check-config rejected the compose environment:\n%s%s" % (
        r.stdout, r.stderr)
    out = r.stdout
    assert "redis://redis:6379" in out, out
    assert "kafka:9092" in out, out
    assert "0.0.0.0:9464" in out, out


def test_topics_are_the_bridge_defaults():
    init = resolved()["services"]["kafka-init"]
    script = " ".join(init.get("command") or []) if isinstance(init.get("command"), list) \
        else str(init.get("command"))
    created = dict(re.findall(r"(tinytown\.[a-z.]+):(\d+)", script))
    for setting in ("kafka.commands_topic", "kafka.results_topic", "kafka.events_topic",
                    "kafka.dlq_topic"):
        topic = setting_default(setting)
        assert topic in created, "kafka-init does not create %s (%s); it creates %s" % (
            topic, setting, created)
    assert created["tinytown.commands"] == "6" and created["tinytown.results"] == "6"
    assert created["tinytown.events"] == "3" and created["tinytown.commands.dlq"] == "1"
    assert "--if-not-exists" in script


# ---- the `secure` profile ------------------------------------------------------

SECURE = ("redis-tls", "kafka-secure", "bridge-secure")
SECRET_DIR = "/run/secrets/"


def secret_files():
    """Compose secret name -> the file name scripts/secure-secrets makes."""
    return {name: os.path.basename(spec["file"]) for name, spec in resolved()["secrets"].items()}


def kafka_secure_properties():
    with open(os.path.join(SOURCE_DIR, "conf", "compose", "kafka-secure.properties")) as f:
        return dict(line.strip().split("=", 1) for line in f
                    if "=" in line and not line.startswith("#"))


def test_secure_profile_is_optional():
    services = resolved()["services"]
    for name in SECURE:
        assert services[name].get("profiles") == ["secure"], (name, services[name].get("profiles"))
        assert services[name].get("healthcheck", {}).get("test"), "%s has no healthcheck" % name
    for name in ("redis", "kafka", "kafka-init", "bridge"):
        assert not services[name].get("profiles"), "%s must run without a profile" % name
    deps = services["bridge-secure"]["depends_on"]
    assert deps == {"redis-tls": {"condition": "service_healthy"},
                    "kafka-secure": {"condition": "service_healthy"}}, deps
    ports = [p if isinstance(p, str) else "%s:%s:%s" % (p.get("host_ip"), p.get("published"),
                                                         p.get("target"))
             for p in services["bridge-secure"]["ports"]]
    assert ports in (["127.0.0.1:9465:9464"], ["127.0.0.1:9465:9464/tcp"]), ports


def test_secure_profile_encrypts_and_reads_secrets_from_files():
    services = resolved()["services"]
    env = env_of("bridge-secure")
    mounted = {x["source"] if isinstance(x, dict) else x for x in services["bridge-secure"]["secrets"]}
    files = secret_files()
    for name, value in env.items():
        # No secret inline: passwords only as *_FILE variables.
        assert not re.search(r"PASSWORD$|SECRET", name), "%s is given inline" % name
        if value.startswith(SECRET_DIR):
            secret = value[len(SECRET_DIR):]
            assert secret in mounted and secret in files, (name, value, mounted)
    assert env["TT_BRIDGE_KAFKA_SASL_PASSWORD_FILE"].startswith(SECRET_DIR)
    assert env["TT_BRIDGE_REDIS_PASSWORD_FILE"].startswith(SECRET_DIR)
    # Kafka: the bridge dials the broker's SASL_SSL listener with a mechanism it enables.
    props = kafka_secure_properties()
    assert env["TT_BRIDGE_KAFKA_SECURITY_PROTOCOL"] == "sasl_ssl"
    advertised = props["advertised.listeners"].split(",")
    assert "SASL_SSL://" + env["TT_BRIDGE_KAFKA_BROKERS"] in advertised, advertised
    assert "SASL_SSL:SASL_SSL" in props["listener.security.protocol.map"].split(",")
    assert env["TT_BRIDGE_KAFKA_SASL_MECHANISM"] in props["sasl.enabled.mechanisms"].split(",")
    # Every other listener stays inside the broker's container.
    for listener in props["listeners"].split(","):
        assert listener.startswith("SASL_SSL://") or "//localhost:" in listener, listener
    kafka = services["kafka-secure"]
    assert props["ssl.keystore.location"] == SECRET_DIR + "kafka_keystore"
    assert "kafka_keystore" in {x["source"] if isinstance(x, dict) else x for x in kafka["secrets"]}
    script = " ".join(kafka["command"])
    assert "--add-scram" in script and "name=%s" % env["TT_BRIDGE_KAFKA_SASL_USERNAME"] in script
    assert SECRET_DIR + "kafka_sasl_password" in script
    # Redis: TLS only, the bridge on rediss://.
    assert env["TT_BRIDGE_REDIS_URL"] == "rediss://redis-tls:6379"
    cmd = services["redis-tls"]["command"]
    assert cmd[cmd.index("--port") + 1] == "0" and cmd[cmd.index("--tls-port") + 1] == "6379"


def test_secure_secrets_script_makes_what_the_profile_mounts():
    out = tempfile.mkdtemp(prefix="ttb-secrets-", dir=os.environ.get("TMPDIR") or "/tmp")
    try:
        r = subprocess.run([os.path.join(SOURCE_DIR, "scripts", "secure-secrets"), out],
                           capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        for name, filename in secret_files().items():
            assert os.path.isfile(os.path.join(out, filename)), "no %s for secret %s" % (filename, name)
        ca = os.path.join(out, "ca.pem")
        for cert, host in (("kafka.pem", "kafka-secure"), ("redis.pem", "redis-tls")):
            v = subprocess.run(["openssl", "verify", "-CAfile", ca, os.path.join(out, cert)],
                               capture_output=True, text=True, timeout=30)
            assert v.returncode == 0, v.stdout + v.stderr
            san = subprocess.run(["openssl", "x509", "-noout", "-ext", "subjectAltName", "-in",
                                  os.path.join(out, cert)], capture_output=True, text=True)
            assert "DNS:%s" % host in san.stdout, san.stdout
        with open(os.path.join(out, "kafka-keystore.pem")) as f:
            keystore = f.read()
        assert "PRIVATE KEY-----" in keystore and "BEGIN CERTIFICATE" in keystore
        with open(os.path.join(out, "redis-password")) as f:
            redis_pw = f.read().strip()
        with open(os.path.join(out, "redis-secure.conf")) as f:
            assert f.read() == 'requirepass "%s"\n' % redis_pw
        # The bridge accepts the profile's environment with these files in
        # place of /run/secrets, and shows none of them.
        files = secret_files()
        env = {k: v for k, v in os.environ.items() if not k.startswith("TT_BRIDGE_")}
        for name, value in env_of("bridge-secure").items():
            if value.startswith(SECRET_DIR):
                value = os.path.join(out, files[value[len(SECRET_DIR):]])
            env[name] = value
        conf = os.path.join(SOURCE_DIR, "conf", "tinytown-bridge.conf")
        r = subprocess.run([bridge_binary(), "--config", conf, "--check-config"], env=env,
                           capture_output=True, text=True, timeout=30)
        assert r.returncode == 0, r.stdout + r.stderr
        assert 'security_protocol = "sasl_ssl";' in r.stdout, r.stdout
        assert 'sasl_password = "****";' in r.stdout, r.stdout
        with open(os.path.join(out, "kafka-sasl-password")) as f:
            kafka_pw = f.read().strip()
        assert kafka_pw not in r.stdout and redis_pw not in r.stdout
    finally:
        shutil.rmtree(out, ignore_errors=True)


def runtime_stage():
    with open(DOCKERFILE) as f:
        text = f.read().replace("\\\n", " ")
    stages = re.split(r"^FROM\s+", text, flags=re.M)
    assert len(stages) == 3, "expected a build and a runtime stage"
    assert stages[1].startswith("debian:bookworm "), stages[1][:40]
    assert stages[2].startswith("debian:bookworm-slim"), stages[2][:40]
    return stages[2]


def test_runtime_image_has_every_library():
    # For each shared library the built binary needs, the Debian package that
    # ships it here must be installed in the runtime stage (libc6 is in the
    # base image). A library added to meson.build but not to the Dockerfile
    # fails here rather than at `docker run`.
    stage = runtime_stage()
    m = re.search(r"apt-get install [^&]*", stage)
    assert m, "runtime stage installs nothing"
    installed = set(m.group(0).split()) | {"libc6"}
    r = subprocess.run(["readelf", "-d", bridge_binary()], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode == 0, r.stderr
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", r.stdout)
    assert needed, r.stdout
    ldd = subprocess.run(["ldd", bridge_binary()], capture_output=True, text=True, timeout=30)
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd.stdout, re.M))
    for soname in needed:
        if re.match(r"lib(asan|ubsan|lsan|tsan)\.", soname):
            continue  # a sanitizer build; the image is built without them
        path = paths.get(soname)
        assert path, "ldd does not resolve %s" % soname
        owners = set()
        for candidate in (path, os.path.realpath(path), "/usr" + path,
                          os.path.realpath(path).replace("/usr/lib/", "/lib/", 1)):
            q = subprocess.run(["dpkg-query", "-S", candidate], capture_output=True, text=True)
            if q.returncode == 0:
                owners |= {line.split(":")[0] for line in q.stdout.splitlines()}
        assert owners, "no Debian package owns %s (%s)" % (soname, path)
        assert owners & installed, "%s comes from %s, not installed in the runtime stage (%s)" % (
            soname, sorted(owners), sorted(installed))


def test_runtime_image_layout():
    stage = runtime_stage()
    assert re.search(r"^USER\s+(?!root|0\b)\S+", stage, re.M), "runtime stage runs as root"
    assert re.search(r"^EXPOSE\s+9464\s*$", stage, re.M)
    assert re.search(r"^HEALTHCHECK\s.*\/healthz", stage, re.M)
    assert 'ENTRYPOINT ["tinytown-bridge"]' in stage
    assert 'CMD ["--config", "/etc/tinytown-bridge/tinytown-bridge.conf"]' in stage
    m = re.search(r"^COPY\s+(\S+)\s+/etc/tinytown-bridge/tinytown-bridge\.conf", stage, re.M)
    assert m and os.path.isfile(os.path.join(SOURCE_DIR, m.group(1))), "config file not copied"
    # The HEALTHCHECK port is the one the image listens on.
    listen = re.search(r"^ENV\s+TT_BRIDGE_HTTP_LISTEN=(\S+)", stage, re.M)
    assert listen and listen.group(1).endswith(":9464"), "image does not enable the endpoint"
    assert "TT_BRIDGE_HTTP_LISTEN" in known_env_names()


def test_probe_matches_a_live_endpoint():
    # The bash /dev/tcp probe of the HEALTHCHECK, run as written against the
    # real binary's endpoint (on a free port instead of 9464): it must pass
    # while /healthz answers and fail once nothing listens.
    stage = runtime_stage()
    m = re.search(r'^HEALTHCHECK\s.*CMD \["bash", "-c", "(.*)"\]\s*$', stage, re.M)
    assert m, "HEALTHCHECK is not the bash probe"
    probe = m.group(1).replace('\\\\', '\\')
    from harness import free_port, wait_until
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TT_BRIDGE_")}
    # Nothing answers on these, so the bridge keeps retrying and keeps serving
    # /healthz (liveness does not depend on Redis or Kafka).
    env.update({"TT_BRIDGE_HTTP_LISTEN": "127.0.0.1:%d" % port,
                "TT_BRIDGE_REDIS_URL": "redis://127.0.0.1:%d" % free_port(),
                "TT_BRIDGE_KAFKA_BROKERS": "127.0.0.1:%d" % free_port()})
    # The log goes to a file: a pipe nobody reads could fill and stall it.
    log = tempfile.TemporaryFile()
    proc = subprocess.Popen([bridge_binary()], env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=log)
    try:
        local = probe.replace("/9464", "/%d" % port)

        def probe_ok():
            if proc.poll() is not None:
                log.seek(0)
                raise AssertionError("bridge exited: %s" % log.read().decode(errors="replace"))
            return subprocess.run(["bash", "-c", local], capture_output=True,
                                  timeout=10).returncode == 0
        wait_until(probe_ok, 15, interval=0.1, what="the HEALTHCHECK probe to pass")
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
    r = subprocess.run(["bash", "-c", local], capture_output=True, timeout=10)
    assert r.returncode != 0, "probe passed with nothing listening"


if __name__ == "__main__":
    run_tests(globals())
