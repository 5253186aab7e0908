/* SPDX-License-Identifier: MIT */
/*
 * Configuration: the built-in defaults, the shipped example file (it must
 * load and say exactly the defaults, with every setting present), each
 * layer winning over the one before, the exact one-line error of every kind
 * of mistake and where it names the mistake, Redis URLs and their
 * redaction, the password's three sources, librdkafka properties from
 * every source, the command policy, and a dump that never shows a secret.
 * The environment is always passed explicitly, so the tests do not depend
 * on the caller's.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <libconfig.h>

#include "tinytown_bridge/config.h"
#include "tinytown_bridge/log.h"

static ttb_config_t *cfg;
static char err[512];
static char tmp_paths[32][64];
static size_t ntmp;

#define LIST(...) ((const char *const[]){__VA_ARGS__, NULL})
#define NONE ((const char *const *)NULL)

static size_t count(const char *const *v) {
    size_t n = 0;
    while (v != NULL && v[n] != NULL) n++;
    return n;
}

/* Loads from a file, an environment, --set and -X items (NULL-ended lists). */
static int load(const char *path, const char *const *env, const char *const *sets,
                const char *const *xsets) {
    char *envv[32];
    size_t n = count(env);
    assert_true(n < 32);
    for (size_t i = 0; i < n; i++) assert_non_null(envv[i] = strdup(env[i]));
    envv[n] = NULL;
    ttb_config_source_t src = {.path = path,
                               .environ = envv,
                               .sets = sets,
                               .nsets = count(sets),
                               .kafka_sets = xsets,
                               .nkafka_sets = count(xsets)};
    ttb_config_free(cfg);
    cfg = NULL;
    err[0] = '\0';
    int rc = ttb_config_load(&src, &cfg, err, sizeof(err));
    for (size_t i = 0; i < n; i++) free(envv[i]);
    if (rc == 0)
        assert_non_null(cfg);
    else
        assert_null(cfg);
    return rc;
}

static void load_ok(const char *path, const char *const *env, const char *const *sets,
                    const char *const *xsets) {
    if (load(path, env, sets, xsets) != 0) fail_msg("load failed: %s", err);
}

/* Writes a temporary config file; removed by teardown. */
static const char *conf(const char *text) {
    assert_true(ntmp < 32);
    char *path = tmp_paths[ntmp++];
    snprintf(path, 64, "/tmp/ttb-test-config-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    size_t len = strlen(text);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    close(fd);
    return path;
}

/* The exact message of a failed load; a message is always one line. */
#define expect_error(rc, ...)                                                                      \
    do {                                                                                           \
        char want_[512];                                                                           \
        snprintf(want_, sizeof(want_), __VA_ARGS__);                                               \
        assert_int_equal((rc), TTB_ERR_INVALID);                                                   \
        assert_string_equal(err, want_);                                                           \
        assert_null(strchr(err, '\n'));                                                            \
    } while (0)

static const char *kv_get(const ttb_kv_t *kv, size_t n, const char *key) {
    for (size_t i = 0; i < n; i++) {
        if (strcmp(kv[i].key, key) == 0) return kv[i].value;
    }
    return NULL;
}

/* Everything a function writes to a FILE, as a string (caller frees). */
static char *capture(void (*fn)(const ttb_config_t *, FILE *), const ttb_config_t *c) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    fn(c, fp);
    fclose(fp);
    return buf;
}

static void help_adapter(const ttb_config_t *c, FILE *fp) {
    (void)c;
    ttb_config_help(fp);
}

static int setup(void **state) {
    (void)state;
    cfg = NULL;
    ntmp = 0;
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ttb_config_free(cfg);
    cfg = NULL;
    for (size_t i = 0; i < ntmp; i++) unlink(tmp_paths[i]);
    return 0;
}

/* The source tree, for the shipped files: a define from meson, else the
 * environment, else this file's own path. */
static const char *source_dir(void) {
    static char dir[4096];
#ifdef TTB_SOURCE_DIR
    snprintf(dir, sizeof(dir), "%s", TTB_SOURCE_DIR);
#else
    const char *env = getenv("TTB_SOURCE_DIR");
    if (env != NULL) {
        snprintf(dir, sizeof(dir), "%s", env);
    } else {
        snprintf(dir, sizeof(dir), "%s", __FILE__);
        char *cut = strstr(dir, "/tests/unit/test-config.c");
        if (cut == NULL) fail_msg("cannot find the source tree; define TTB_SOURCE_DIR");
        *cut = '\0';
    }
#endif
    return dir;
}

static const char *source_file(const char *rel) {
    static char path[4200];
    snprintf(path, sizeof(path), "%s/%s", source_dir(), rel);
    if (access(path, R_OK) != 0) fail_msg("%s: not readable", path);
    return path;
}

/* ---- defaults and the shipped files ---- */

static void test_defaults(void **state) {
    (void)state;
    load_ok(NULL, NONE, NONE, NONE);
    assert_string_equal(cfg->redis_url, "redis://127.0.0.1:6379");
    assert_string_equal(cfg->redis_url_redacted, "redis://127.0.0.1:6379");
    assert_string_equal(cfg->redis.host, "127.0.0.1");
    assert_int_equal(cfg->redis.port, 6379);
    assert_null(cfg->redis.username);
    assert_null(cfg->redis.password);
    assert_int_equal(cfg->redis.db, 0);
    assert_int_equal(cfg->redis.connect_timeout_ms, 2000);
    assert_int_equal(cfg->redis.command_timeout_ms, 5000);
    assert_string_equal(cfg->brokers, "127.0.0.1:9092");
    assert_string_equal(cfg->group_id, "tinytown-bridge");
    assert_string_equal(cfg->commands_topic, "tinytown.commands");
    assert_string_equal(cfg->results_topic, "tinytown.results");
    assert_string_equal(cfg->events_topic, "tinytown.events");
    assert_string_equal(cfg->dlq_topic, "tinytown.commands.dlq");
    assert_int_equal(cfg->nkafka_props, 0);
    assert_int_equal(cfg->nconsumer_props, 0);
    assert_int_equal(cfg->nproducer_props, 0);
    assert_int_equal(cfg->ntowns, 1);
    assert_string_equal(cfg->towns[0], "demo");
    assert_string_equal(cfg->default_town, "demo"); /* the only town */
    assert_string_equal(cfg->default_cli, "claude");
    assert_int_equal(cfg->max_record_bytes, 65536);
    assert_int_equal(cfg->max_wait_ms, 3600000);
    for (int op = 0; op < (int)TTB_OP__COUNT; op++) assert_false(cfg->op_denied[op]);
    assert_int_equal(cfg->batch_size, 500);
    assert_int_equal(cfg->batch_timeout_ms, 0);
    assert_int_equal(cfg->max_in_flight, 10000);
    assert_int_equal(cfg->idempotency_ttl_s, 604800);
    assert_int_equal(cfg->scan_count, 1000);
    assert_int_equal(cfg->wait_check_interval_ms, 500);
    assert_int_equal(cfg->shutdown_timeout_ms, 10000);
    assert_int_equal(cfg->redis_backoff_max_ms, 5000);
    assert_true(cfg->relay_enabled);
    assert_int_equal(cfg->relay_lease_ms, 10000);
    assert_true(cfg->capture_enabled);
    assert_int_equal(cfg->reconcile_interval_ms, 5000);
    assert_false(cfg->cloudevents);
    assert_string_equal(cfg->cloudevents_source, "tinytown-bridge");
    assert_null(cfg->http_listen);
    assert_int_equal(cfg->log_level, TTB_LOG_INFO);
    assert_int_equal(cfg->summary_interval_s, 30);
}

/* The names of all settings, read back from the help text (a name is a line
 * of its own that does not start with a space or '#'). */
static size_t help_names(char names[][64], size_t max, char envs[][64]) {
    char *help = capture(help_adapter, NULL);
    size_t n = 0;
    char *save = NULL;
    for (char *line = strtok_r(help, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        if (line[0] != ' ' && line[0] != '#') {
            assert_true(n < max);
            snprintf(names[n++], 64, "%s", line);
        } else if (strncmp(line, "    env:     ", 13) == 0) {
            snprintf(envs[n - 1], 64, "%s", line + 13);
        }
    }
    free(help);
    return n;
}

static void test_example_file(void **state) {
    (void)state;
    const char *path = source_file("conf/tinytown-bridge.conf");
    load_ok(path, NONE, NONE, NONE);
    char *from_file = capture(ttb_config_dump, cfg);
    load_ok(NULL, NONE, NONE, NONE);
    char *from_defaults = capture(ttb_config_dump, cfg);
    /* It documents the defaults: loading it changes nothing. */
    assert_string_equal(from_file, from_defaults);
    free(from_file);
    free(from_defaults);

    /* And every setting is in it. */
    char names[64][64], envs[64][64];
    size_t n = help_names(names, 64, envs);
    assert_true(n >= 37);
    config_t lc;
    config_init(&lc);
    assert_int_equal(config_read_file(&lc, path), CONFIG_TRUE);
    for (size_t i = 0; i < n; i++) {
        if (config_lookup(&lc, names[i]) == NULL) fail_msg("%s is missing from %s", names[i], path);
    }
    config_destroy(&lc);
}

static void test_docs_list_every_setting(void **state) {
    (void)state;
    FILE *fp = fopen(source_file("docs/configuration.md"), "r");
    assert_non_null(fp);
    char *doc = NULL;
    size_t cap = 0;
    ssize_t len = getdelim(&doc, &cap, '\0', fp);
    fclose(fp);
    assert_true(len > 0);
    char names[64][64], envs[64][64];
    size_t n = help_names(names, 64, envs);
    for (size_t i = 0; i < n; i++) {
        char cell[80];
        snprintf(cell, sizeof(cell), "`%s`", names[i]);
        if (strstr(doc, cell) == NULL) fail_msg("docs/configuration.md lacks %s", cell);
        snprintf(cell, sizeof(cell), "`%s`", envs[i]);
        if (strstr(doc, cell) == NULL) fail_msg("docs/configuration.md lacks %s", cell);
    }
    free(doc);
}

static void test_help(void **state) {
    (void)state;
    char *help = capture(help_adapter, NULL);
    assert_non_null(strstr(help, "\nbridge.batch_size\n    type:    integer, 1..10000\n"
                                 "    default: 500\n    env:     TT_BRIDGE_BRIDGE_BATCH_SIZE\n"));
    assert_non_null(strstr(help, "\nbridge.towns\n    type:    list of strings\n"
                                 "    default: ( \"demo\" )\n    env:     TT_BRIDGE_TOWNS\n"));
    assert_non_null(strstr(help, "\nhttp.listen\n    type:    string, optional\n"
                                 "    default: (unset)\n    env:     TT_BRIDGE_HTTP_LISTEN\n"));
    assert_non_null(strstr(help, "TT_BRIDGE_RDKAFKA_"));
    free(help);
}

/* ---- layers ---- */

static void test_precedence(void **state) {
    (void)state;
    const char *path = conf("bridge = { batch_size = 100; towns = ( \"a\", \"b\" ); };\n"
                            "log = { level = \"warn\"; };\n");
    load_ok(path, NONE, NONE, NONE);
    assert_int_equal(cfg->batch_size, 100);
    assert_int_equal(cfg->ntowns, 2);
    assert_null(cfg->default_town); /* two towns: commands name theirs */
    assert_int_equal(cfg->log_level, TTB_LOG_WARN);

    const char *const *env = LIST("TT_BRIDGE_BRIDGE_BATCH_SIZE=200", "TT_BRIDGE_TOWNS= c , d,e",
                                  "TT_BRIDGE_LOG_LEVEL=error");
    load_ok(path, env, NONE, NONE);
    assert_int_equal(cfg->batch_size, 200);
    assert_int_equal(cfg->ntowns, 3); /* replaced as a whole, items trimmed */
    assert_string_equal(cfg->towns[0], "c");
    assert_string_equal(cfg->towns[1], "d");
    assert_string_equal(cfg->towns[2], "e");
    assert_int_equal(cfg->log_level, TTB_LOG_ERROR);

    load_ok(path, env, LIST("bridge.batch_size=300", "bridge.towns=z", "log.level=debug"), NONE);
    assert_int_equal(cfg->batch_size, 300);
    assert_int_equal(cfg->ntowns, 1);
    assert_string_equal(cfg->towns[0], "z");
    assert_string_equal(cfg->default_town, "z");
    assert_int_equal(cfg->log_level, TTB_LOG_DEBUG);

    /* Later --set items win over earlier ones. */
    load_ok(NULL, NONE, LIST("bridge.batch_size=7", "bridge.batch_size=8"), NONE);
    assert_int_equal(cfg->batch_size, 8);
}

static void test_empty_env_is_unset(void **state) {
    (void)state;
    const char *path = conf("http = { listen = \"127.0.0.1:9464\"; };\n");
    load_ok(path, LIST("TT_BRIDGE_HTTP_LISTEN=", "TT_BRIDGE_BRIDGE_BATCH_SIZE="), NONE, NONE);
    assert_string_equal(cfg->http_listen, "127.0.0.1:9464");
    assert_int_equal(cfg->batch_size, 500);
    /* --set with an empty value does unset an optional setting. */
    load_ok(path, NONE, LIST("http.listen="), NONE);
    assert_null(cfg->http_listen);
}

static void test_types_from_text(void **state) {
    (void)state;
    static const char *const yes[] = {"true", "1", "yes", "on", "TRUE", "On"};
    static const char *const no[] = {"false", "0", "no", "off", "False", "OFF"};
    char set[64];
    for (size_t i = 0; i < 6; i++) {
        snprintf(set, sizeof(set), "events.cloudevents=%s", yes[i]);
        load_ok(NULL, NONE, LIST(set), NONE);
        assert_true(cfg->cloudevents);
        snprintf(set, sizeof(set), "events.relay=%s", no[i]);
        load_ok(NULL, NONE, LIST(set), NONE);
        assert_false(cfg->relay_enabled);
    }
    load_ok(NULL,
            LIST("TT_BRIDGE_EVENTS_CAPTURE=off", "TT_BRIDGE_BRIDGE_MAX_WAIT_MS=604800000",
                 "TT_BRIDGE_HTTP_LISTEN=[::1]:0", "TT_BRIDGE_KAFKA_RESULTS_TOPIC=r.1"),
            NONE, NONE);
    assert_false(cfg->capture_enabled);
    assert_int_equal(cfg->max_wait_ms, 604800000);
    assert_string_equal(cfg->http_listen, "[::1]:0");
    assert_string_equal(cfg->results_topic, "r.1");
    load_ok(NULL, NONE, LIST("http.listen=:9464"), NONE);
    assert_string_equal(cfg->http_listen, ":9464");
}

static void test_range_edges(void **state) {
    (void)state;
    load_ok(NULL, NONE,
            LIST("bridge.max_record_bytes=256", "bridge.batch_timeout_ms=1000",
                 "bridge.idempotency_ttl_s=7776000", "log.summary_interval_s=0"),
            NONE);
    assert_int_equal(cfg->max_record_bytes, 256);
    assert_int_equal(cfg->batch_timeout_ms, 1000); /* the largest */
    assert_int_equal(cfg->idempotency_ttl_s, 7776000);
    assert_int_equal(cfg->summary_interval_s, 0);
    load_ok(NULL, NONE, LIST("bridge.max_record_bytes=16777216"), NONE);
    assert_int_equal(cfg->max_record_bytes, 16777216);
    expect_error(load(NULL, NONE, LIST("bridge.max_record_bytes=16777217"), NONE),
                 "--set bridge.max_record_bytes: 16777217 is out of range 256..16777216");
    expect_error(load(NULL, NONE, LIST("bridge.max_wait_ms=-1"), NONE),
                 "--set bridge.max_wait_ms: -1 is out of range 0..604800000");
    expect_error(load(NULL, NONE, LIST("bridge.scan_count=99999999999999999999"), NONE),
                 "--set bridge.scan_count: 99999999999999999999 is out of range 10..100000");
    /* 64-bit integers in the file (L suffix) are integers too. */
    load_ok(conf("bridge = { max_wait_ms = 1000L; };\n"), NONE, NONE, NONE);
    assert_int_equal(cfg->max_wait_ms, 1000);
}

/* ---- errors ---- */

static void test_file_errors(void **state) {
    (void)state;
    const char *p;
    p = conf("bridge = { batch_size = 0; };\n");
    expect_error(load(p, NONE, NONE, NONE), "%s:1: bridge.batch_size: 0 is out of range 1..10000",
                 p);

    p = conf("# a comment\nbridge = {\n  towns = ( \"demo\" );\n  nope = 1;\n};\n");
    expect_error(load(p, NONE, NONE, NONE), "%s:4: bridge.nope: unknown setting", p);

    p = conf("redis = { url = \"redis://h\"; };\n\nrdkafka = { x = 1; };\n");
    expect_error(
        load(p, NONE, NONE, NONE),
        "%s:3: rdkafka: unknown section (expected redis, kafka, bridge, events, http or log)", p);

    p = conf("batch_size = 5;\n");
    expect_error(
        load(p, NONE, NONE, NONE),
        "%s:1: batch_size: unknown section (expected redis, kafka, bridge, events, http or log)",
        p);

    p = conf("bridge = ( 1 );\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: bridge: expected a group (bridge = { ... };), not a list", p);

    p = conf("bridge = {\n  batch_size = \"5\";\n};\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:2: bridge.batch_size: expected an integer, not a string", p);

    p = conf("bridge = { batch_size = 5.0; };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: bridge.batch_size: expected an integer, not a float", p);

    p = conf("events = { relay = \"yes\"; };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: events.relay: expected a boolean (true or false), not a string", p);

    p = conf("kafka = { brokers = 9092; };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: kafka.brokers: expected a string, not an integer", p);

    p = conf("bridge = { towns = \"demo\"; };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: bridge.towns: expected a list of strings ( \"a\", \"b\" ), not a string",
                 p);

    p = conf("bridge = { towns = ( \"demo\", 5 ); };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: bridge.towns: item 2: expected a string, not an integer", p);

    p = conf("bridge = { towns = ( \"de mo\" ); };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: bridge.towns: \"de mo\" must be 1-64 bytes of A-Z a-z 0-9 . _ -", p);

    p = conf("kafka = {\n  commands_topic = \"\";\n};\n");
    expect_error(load(p, NONE, NONE, NONE), "%s:2: kafka.commands_topic: must not be empty", p);

    p = conf("kafka = { properties = ( \"sasl.password\" ); };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: kafka.properties: item 1: expected \"name=value\"", p);

    p = conf("log = { level = \"verbose\"; };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: log.level: unknown level \"verbose\" (expected debug, info, warn or error)",
                 p);

    p = conf("http = { listen = \"localhost\"; };\n");
    expect_error(load(p, NONE, NONE, NONE), "%s:1: http.listen: \"localhost\": expected host:port",
                 p);

    p = conf("http = { listen = \"localhost:65536\"; };\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:1: http.listen: \"localhost:65536\": bad port (expected 0..65535)", p);
}

static void test_parse_errors(void **state) {
    (void)state;
    const char *p = conf("bridge = {\n  batch_size = ;\n};\n");
    assert_int_equal(load(p, NONE, NONE, NONE), TTB_ERR_INVALID);
    char want[128];
    snprintf(want, sizeof(want), "%s:2: ", p);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("got \"%s\", want prefix \"%s\"", err, want);
    assert_null(strchr(err, '\n'));

    p = conf("bridge = { batch_size = 1; batch_size = 2; };\n");
    assert_int_equal(load(p, NONE, NONE, NONE), TTB_ERR_INVALID);
    snprintf(want, sizeof(want), "%s:1: ", p);
    if (strncmp(err, want, strlen(want)) != 0)
        fail_msg("got \"%s\", want prefix \"%s\"", err, want);

    expect_error(load("/nonexistent/tinytown-bridge.conf", NONE, NONE, NONE),
                 "/nonexistent/tinytown-bridge.conf: cannot open: No such file or directory");
}

static void test_env_and_flag_errors(void **state) {
    (void)state;
    expect_error(load(NULL, LIST("TT_BRIDGE_BRIDGE_BATCH_SIZE=abc"), NONE, NONE),
                 "TT_BRIDGE_BRIDGE_BATCH_SIZE: not an integer: \"abc\"");
    expect_error(load(NULL, LIST("TT_BRIDGE_BRIDGE_BATCH_SIZE= 5"), NONE, NONE),
                 "TT_BRIDGE_BRIDGE_BATCH_SIZE: not an integer: \" 5\"");
    expect_error(load(NULL, LIST("TT_BRIDGE_BRIDGE_BATCH_SIZE=0"), NONE, NONE),
                 "TT_BRIDGE_BRIDGE_BATCH_SIZE: 0 is out of range 1..10000");
    expect_error(load(NULL, LIST("TT_BRIDGE_EVENTS_RELAY=maybe"), NONE, NONE),
                 "TT_BRIDGE_EVENTS_RELAY: not a boolean: \"maybe\" (expected true/false, yes/no, "
                 "on/off or 1/0)");
    expect_error(load(NULL, LIST("TT_BRIDGE_DENIED_OPS=spawn,explode"), NONE, NONE),
                 "TT_BRIDGE_DENIED_OPS: unknown op \"explode\"");
    expect_error(load(NULL, LIST("TT_BRIDGE_TOWNS=a,b\tc"), NONE, NONE),
                 "TT_BRIDGE_TOWNS: \"b\\x09c\" must be 1-64 bytes of A-Z a-z 0-9 . _ -");
    expect_error(load(NULL, NONE, LIST("bridge.nope=1"), NONE),
                 "--set bridge.nope: unknown setting");
    expect_error(load(NULL, NONE, LIST("bridge.batch_size"), NONE),
                 "--set bridge.batch_size: expected section.name=value");
    expect_error(load(NULL, NONE, LIST("bridge.batch_size=0"), NONE),
                 "--set bridge.batch_size: 0 is out of range 1..10000");
    expect_error(load(NULL, NONE, LIST("kafka.commands_topic=a b"), NONE),
                 "--set kafka.commands_topic: \"a b\" is not a Kafka topic name (1-249 bytes of "
                 "A-Z a-z 0-9 . _ -)");
    expect_error(load(NULL, NONE, NONE, LIST("sasl.password")),
                 "-X sasl.password: expected property=value");
    expect_error(load(NULL, NONE, NONE, LIST("=x")), "-X: expected property=value");
    /* A value typed without its '=' is not echoed: it may be a secret. */
    expect_error(load(NULL, NONE, NONE, LIST("sasl.password:hunter2")),
                 "-X sasl.password: expected property=value");
    expect_error(load(NULL, NONE, LIST("redis.password:hunter2"), NONE),
                 "--set redis.password: expected section.name=value");
    /* A later layer's error is reported even if an earlier one was fine. */
    const char *p = conf("bridge = { batch_size = 5; };\n");
    expect_error(load(p, LIST("TT_BRIDGE_BRIDGE_BATCH_SIZE=x"), NONE, NONE),
                 "TT_BRIDGE_BRIDGE_BATCH_SIZE: not an integer: \"x\"");
}

static void test_validation_errors(void **state) {
    (void)state;
    expect_error(load(NULL, NONE, LIST("bridge.towns="), NONE),
                 "--set bridge.towns: at least one town is required");
    expect_error(load(NULL, NONE, LIST("bridge.towns=a,b,a"), NONE),
                 "--set bridge.towns: town \"a\" is listed twice");
    expect_error(load(NULL, LIST("TT_BRIDGE_DEFAULT_TOWN=other"), NONE, NONE),
                 "TT_BRIDGE_DEFAULT_TOWN: \"other\" is not one of bridge.towns");
    const char *p = conf("kafka = {\n  commands_topic = \"tinytown.results\";\n};\n");
    expect_error(
        load(p, NONE, NONE, NONE),
        "%s:2: kafka.commands_topic: kafka.commands_topic and kafka.results_topic must differ "
        "(both \"tinytown.results\")",
        p);
    expect_error(load(NULL, NONE, LIST("kafka.dlq_topic=tinytown.commands"), NONE),
                 "--set kafka.dlq_topic: kafka.commands_topic and kafka.dlq_topic must differ "
                 "(both \"tinytown.commands\")");
    expect_error(
        load(NULL, NONE, LIST("kafka.events_topic=tinytown.commands"), NONE),
        "--set kafka.events_topic: kafka.commands_topic and kafka.events_topic must differ "
        "(both \"tinytown.commands\")");
    expect_error(load(NULL, NONE, LIST("kafka.brokers="), NONE),
                 "--set kafka.brokers: must not be empty");

    /* Explicit default town among several; unset with several. */
    load_ok(NULL, NONE, LIST("bridge.towns=a,b", "bridge.default_town=b"), NONE);
    assert_string_equal(cfg->default_town, "b");
    load_ok(NULL, NONE, LIST("bridge.towns=a,b"), NONE);
    assert_null(cfg->default_town);
}

/* ---- Redis ---- */

static void test_redis_urls(void **state) {
    (void)state;
    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=redis://redis.internal"), NONE, NONE);
    assert_string_equal(cfg->redis.host, "redis.internal");
    assert_int_equal(cfg->redis.port, 6379);
    assert_int_equal(cfg->redis.db, 0);

    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=redis://10.0.0.5:6380"), NONE, NONE);
    assert_string_equal(cfg->redis.host, "10.0.0.5");
    assert_int_equal(cfg->redis.port, 6380);
    assert_null(cfg->redis.password);

    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=redis://:s3cret@h:7000/2"), NONE, NONE);
    assert_string_equal(cfg->redis.host, "h");
    assert_int_equal(cfg->redis.port, 7000);
    assert_null(cfg->redis.username);
    assert_string_equal(cfg->redis.password, "s3cret");
    assert_int_equal(cfg->redis.db, 2);
    assert_string_equal(cfg->redis_url, "redis://:s3cret@h:7000/2");
    assert_string_equal(cfg->redis_url_redacted, "redis://:****@h:7000/2");

    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=redis://bridge:p%40ss%3Aw@h/3"), NONE, NONE);
    assert_string_equal(cfg->redis.username, "bridge");
    assert_string_equal(cfg->redis.password, "p@ss:w");
    assert_string_equal(cfg->redis.host, "h");
    assert_int_equal(cfg->redis.port, 6379);
    assert_int_equal(cfg->redis.db, 3);
    assert_string_equal(cfg->redis_url_redacted, "redis://bridge:****@h/3");

    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=REDIS://user@[::1]:6390/"), NONE, NONE);
    assert_string_equal(cfg->redis.username, "user");
    assert_null(cfg->redis.password);
    assert_string_equal(cfg->redis.host, "::1");
    assert_int_equal(cfg->redis.port, 6390);
    assert_int_equal(cfg->redis.db, 0);
    assert_string_equal(cfg->redis_url_redacted, "REDIS://user@[::1]:6390/");
}

static void test_redis_url_errors(void **state) {
    (void)state;
    static const struct {
        const char *url, *msg;
    } bad[] = {
        {"unix:///run/redis.sock", "unsupported scheme \"unix\" (expected redis:// or rediss://)"},
        {"127.0.0.1:6379", "expected redis://[user[:password]@]host[:port][/db]"},
        {"redis://:pw@h:0", "bad port (expected 1..65535)"},
        {"redis://:pw@h:65536", "bad port (expected 1..65535)"},
        {"redis://h:63x9", "bad port (expected 1..65535)"},
        {"redis://h:", "bad port (expected 1..65535)"},
        {"redis://h/x", "bad db (expected /0, /1, ...)"},
        {"redis://h/-1", "bad db (expected /0, /1, ...)"},
        {"redis://h/99999999999", "bad db (expected /0, /1, ...)"},
        {"redis://h/1/2", "bad db (expected /0, /1, ...)"},
        {"redis://:pw@", "missing host"},
        {"redis://:p%zzw@h", "bad percent-encoding in the user info"},
        {"redis://h?db=1", "query parameters and fragments are not supported"},
        {"redis://a:b:c", "bad port (expected 1..65535)"},
        {"redis://[::1", "bad IPv6 host (expected [address])"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char set[128];
        snprintf(set, sizeof(set), "redis.url=%s", bad[i].url);
        int rc = load(NULL, NONE, LIST(set), NONE);
        char want[256];
        snprintf(want, sizeof(want), "--set redis.url: %s", bad[i].msg);
        if (rc != TTB_ERR_INVALID || strcmp(err, want) != 0)
            fail_msg("%s: got %d \"%s\", want \"%s\"", bad[i].url, rc, err, want);
        /* The password is never echoed. */
        assert_null(strstr(err, "pw"));
    }
    const char *p = conf("redis = {\n\n  url = \"redis://h\";\n  tls_ca_file = \"/ca.pem\";\n};\n");
    expect_error(load(p, NONE, NONE, NONE),
                 "%s:4: redis.tls_ca_file: a TLS setting needs a rediss:// redis.url (it is "
                 "redis://)", p);
}

/* rediss:// and the tls_* settings reach the store's options; the URL's user
 * gives way to redis.username. */
static void test_redis_tls(void **state) {
    (void)state;
    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=rediss://app:pw@cache.example:6380/2"), NONE, NONE);
    assert_true(cfg->redis.tls);
    assert_false(cfg->redis.tls_insecure);
    assert_string_equal(cfg->redis.host, "cache.example");
    assert_int_equal(cfg->redis.port, 6380);
    assert_int_equal(cfg->redis.db, 2);
    assert_string_equal(cfg->redis.username, "app");
    assert_string_equal(cfg->redis_url_redacted, "rediss://app:****@cache.example:6380/2");
    assert_null(cfg->redis.tls_ca_file);
    assert_null(cfg->redis.tls_server_name);

    load_ok(NULL,
            LIST("TT_BRIDGE_REDIS_URL=rediss://app:pw@10.0.0.5",
                 "TT_BRIDGE_REDIS_TLS_CA_FILE=/etc/ca.pem", "TT_BRIDGE_REDIS_USERNAME=bridge"),
            LIST("redis.tls_ca_dir=/etc/cas", "redis.tls_cert_file=/c.pem",
                 "redis.tls_key_file=/k.pem", "redis.tls_server_name=redis.internal",
                 "redis.tls_verify=false"),
            NONE);
    assert_string_equal(cfg->redis.tls_ca_file, "/etc/ca.pem");
    assert_string_equal(cfg->redis.tls_ca_dir, "/etc/cas");
    assert_string_equal(cfg->redis.tls_cert_file, "/c.pem");
    assert_string_equal(cfg->redis.tls_key_file, "/k.pem");
    assert_string_equal(cfg->redis.tls_server_name, "redis.internal");
    assert_true(cfg->redis.tls_insecure);
    assert_string_equal(cfg->redis.username, "bridge");

    load_ok(NULL, LIST("TT_BRIDGE_REDIS_URL=redis://h"), NONE, NONE);
    assert_false(cfg->redis.tls);
    expect_error(load(NULL, NONE, LIST("redis.tls_verify=false"), NONE),
                 "--set redis.tls_verify: a TLS setting needs a rediss:// redis.url (it is "
                 "redis://)");
    expect_error(load(NULL, NONE, LIST("redis.url=rediss://h", "redis.tls_key_file=/k.pem"),
                      NONE),
                 "--set redis.tls_key_file: needs redis.tls_cert_file");
}

static void test_redact(void **state) {
    (void)state;
    static const struct {
        const char *in, *out;
    } cases[] = {
        {"redis://u:pw@h:1/0", "redis://u:****@h:1/0"},
        {"redis://:pw@h:6379", "redis://:****@h:6379"},
        {"redis://u@h:1", "redis://u@h:1"},
        {"redis://h:1/2", "redis://h:1/2"},
        {"redis://h", "redis://h"},
        {"redis://:p@ss@h", "redis://:****@h"},
        {"redis://:pw@h/0?x=a@b", "redis://:****@h/0?x=a@b"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char *r = ttb_redis_url_redact(cases[i].in);
        assert_non_null(r);
        assert_string_equal(r, cases[i].out);
        free(r);
    }
}

static void test_password_sources(void **state) {
    (void)state;
    const char *url = "TT_BRIDGE_REDIS_URL=redis://:from-url@h";
    load_ok(NULL, LIST(url), NONE, NONE);
    assert_string_equal(cfg->redis.password, "from-url");

    load_ok(NULL, LIST(url, "TT_BRIDGE_REDIS_PASSWORD=from-env"), NONE, NONE);
    assert_string_equal(cfg->redis.password, "from-env");
    assert_string_equal(cfg->redis_url_redacted, "redis://:****@h");

    /* The file wins, whatever layer named it; one newline is stripped. */
    const char *pwfile = conf("from-file\n");
    char file_env[128];
    snprintf(file_env, sizeof(file_env), "TT_BRIDGE_REDIS_PASSWORD_FILE=%s", pwfile);
    load_ok(NULL, LIST(url, "TT_BRIDGE_REDIS_PASSWORD=from-env", file_env), NONE, NONE);
    assert_string_equal(cfg->redis.password, "from-file");
    char set[128];
    snprintf(set, sizeof(set), "redis.password_file=%s", pwfile);
    load_ok(NULL, NONE, LIST("redis.password=from-set", set), NONE);
    assert_string_equal(cfg->redis.password, "from-file");

    pwfile = conf("two\n\n");
    snprintf(file_env, sizeof(file_env), "TT_BRIDGE_REDIS_PASSWORD_FILE=%s", pwfile);
    load_ok(NULL, LIST(file_env), NONE, NONE);
    assert_string_equal(cfg->redis.password, "two\n");
    pwfile = conf("crlf\r\n");
    snprintf(file_env, sizeof(file_env), "TT_BRIDGE_REDIS_PASSWORD_FILE=%s", pwfile);
    load_ok(NULL, LIST(file_env), NONE, NONE);
    assert_string_equal(cfg->redis.password, "crlf");
    pwfile = conf("bare");
    snprintf(file_env, sizeof(file_env), "TT_BRIDGE_REDIS_PASSWORD_FILE=%s", pwfile);
    load_ok(NULL, LIST(file_env), NONE, NONE);
    assert_string_equal(cfg->redis.password, "bare");

    pwfile = conf("\n");
    snprintf(file_env, sizeof(file_env), "TT_BRIDGE_REDIS_PASSWORD_FILE=%s", pwfile);
    expect_error(load(NULL, LIST(file_env), NONE, NONE),
                 "TT_BRIDGE_REDIS_PASSWORD_FILE: \"%s\" is empty", pwfile);
    expect_error(load(NULL, LIST("TT_BRIDGE_REDIS_PASSWORD_FILE=/nonexistent/pw"), NONE, NONE),
                 "TT_BRIDGE_REDIS_PASSWORD_FILE: cannot read \"/nonexistent/pw\": No such file or "
                 "directory");
    const char *p = conf("redis = { password_file = \"/nonexistent/pw\"; };\n");
    expect_error(
        load(p, NONE, NONE, NONE),
        "%s:1: redis.password_file: cannot read \"/nonexistent/pw\": No such file or directory", p);
}

/* ---- Kafka properties ---- */

static void test_kafka_properties(void **state) {
    (void)state;
    const char *p =
        conf("kafka = {\n"
             "  properties = ( \"security.protocol=SASL_SSL\", \"sasl.mechanisms=PLAIN\",\n"
             "                 \"client.id=from-file\", \"linger.ms=5\" );\n"
             "  consumer_properties = ( \"fetch.wait.max.ms=10\" );\n"
             "  producer_properties = ( \"acks=all\", \"compression.type=lz4\" );\n"
             "};\n");
    load_ok(p,
            LIST("TT_BRIDGE_KAFKA_PROPERTIES=client.id=from-env, sasl.username=bridge",
                 "TT_BRIDGE_RDKAFKA_SASL_PASSWORD=pa=ss,word",
                 "TT_BRIDGE_RDKAFKA_LINGER_MS=", "TT_BRIDGE_KAFKA_PRODUCER_PROPERTIES=acks=1"),
            LIST("kafka.properties=socket.timeout.ms=1000"),
            LIST("client.id=from-x", "debug=broker,topic"));
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "security.protocol"),
                        "SASL_SSL");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "sasl.mechanisms"), "PLAIN");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "sasl.username"), "bridge");
    /* One variable per property keeps '=' and ',' in the value. */
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "sasl.password"), "pa=ss,word");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "linger.ms"), "5");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "socket.timeout.ms"), "1000");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "client.id"), "from-x");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "debug"), "broker,topic");
    assert_int_equal(cfg->nkafka_props, 8); /* each key once */
    assert_int_equal(cfg->nconsumer_props, 1);
    assert_string_equal(kv_get(cfg->consumer_props, cfg->nconsumer_props, "fetch.wait.max.ms"),
                        "10");
    assert_int_equal(cfg->nproducer_props, 2);
    assert_string_equal(kv_get(cfg->producer_props, cfg->nproducer_props, "acks"), "1");
    assert_string_equal(kv_get(cfg->producer_props, cfg->nproducer_props, "compression.type"),
                        "lz4");

    load_ok(
        NULL,
        LIST("TT_BRIDGE_RDKAFKA_SSL_KEY_PASSWORD=k", "TT_BRIDGE_RDKAFKA_ENABLE_IDEMPOTENCE=true"),
        NONE, NONE);
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "ssl.key.password"), "k");
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "enable.idempotence"), "true");

    /* -X pairs come last: they win over every other source. */
    load_ok(NULL, LIST("TT_BRIDGE_RDKAFKA_CLIENT_ID=env"), LIST("kafka.properties=client.id=set"),
            LIST("client.id=x1", "client.id=x2"));
    assert_int_equal(cfg->nkafka_props, 1);
    assert_string_equal(kv_get(cfg->kafka_props, cfg->nkafka_props, "client.id"), "x2");

    expect_error(load(NULL, LIST("TT_BRIDGE_RDKAFKA_=x"), NONE, NONE),
                 "TT_BRIDGE_RDKAFKA_: missing the property name");
    expect_error(load(NULL, LIST("TT_BRIDGE_KAFKA_PROPERTIES=a=1,sasl.password"), NONE, NONE),
                 "TT_BRIDGE_KAFKA_PROPERTIES: item 2: expected \"name=value\"");
}

/* ---- denied ops and the command policy ---- */

static void test_denied_ops(void **state) {
    (void)state;
    const char *p = conf("bridge = { denied_ops = ( \"spawn\", \"stop_all\" ); };\n");
    load_ok(p, NONE, NONE, NONE);
    for (int op = 0; op < (int)TTB_OP__COUNT; op++)
        assert_int_equal(cfg->op_denied[op], op == TTB_OP_SPAWN || op == TTB_OP_STOP_ALL);
    /* A later layer replaces the list. */
    load_ok(p, LIST("TT_BRIDGE_DENIED_OPS=kill, prune"), NONE, NONE);
    for (int op = 0; op < (int)TTB_OP__COUNT; op++)
        assert_int_equal(cfg->op_denied[op], op == TTB_OP_KILL || op == TTB_OP_PRUNE);
    load_ok(p, NONE, LIST("bridge.denied_ops="), NONE);
    for (int op = 0; op < (int)TTB_OP__COUNT; op++) assert_false(cfg->op_denied[op]);
    p = conf("bridge = {\n  denied_ops = ( \"spawn\", \"Spawn\" );\n};\n");
    expect_error(load(p, NONE, NONE, NONE), "%s:2: bridge.denied_ops: unknown op \"Spawn\"", p);
}

static void test_policy(void **state) {
    (void)state;
    load_ok(NULL, NONE,
            LIST("bridge.towns=a,b", "bridge.default_town=b", "bridge.default_cli=codex",
                 "bridge.max_record_bytes=1024", "bridge.max_wait_ms=5000",
                 "bridge.denied_ops=wait"),
            NONE);
    ttb_command_policy_t policy;
    memset(&policy, 0xff, sizeof(policy));
    ttb_config_policy(cfg, &policy);
    assert_int_equal(policy.max_record_bytes, 1024);
    assert_ptr_equal(policy.default_town, cfg->default_town);
    assert_string_equal(policy.default_town, "b");
    assert_int_equal(policy.ntowns, 2);
    assert_string_equal(policy.towns[0], "a");
    assert_string_equal(policy.towns[1], "b");
    assert_string_equal(policy.default_cli, "codex");
    assert_int_equal(policy.max_wait_ms, 5000);
    for (int op = 0; op < (int)TTB_OP__COUNT; op++)
        assert_int_equal(policy.op_denied[op], op == TTB_OP_WAIT);

    /* The policy works with the parser as configured. */
    const char *rec = "{\"id\":\"c-1\",\"op\":\"list\"}";
    ttb_command_t cmd;
    assert_int_equal(ttb_command_parse(rec, strlen(rec), &policy, &cmd, err, sizeof(err)),
                     TTB_CODE_OK);
    assert_string_equal(cmd.town, "b");
    ttb_command_clear(&cmd);
    rec = "{\"id\":\"c-2\",\"town\":\"c\",\"op\":\"list\"}";
    assert_int_equal(ttb_command_parse(rec, strlen(rec), &policy, &cmd, err, sizeof(err)),
                     TTB_CODE_UNKNOWN_TOWN);
    ttb_command_clear(&cmd);
}

/* ---- output ---- */

/* ---- Kafka security ---- */

static void test_kafka_security(void **state) {
    (void)state;
    /* From the file, then the environment, then --set; *_file wins. */
    const char *p = conf("kafka = {\n"
                         "  security_protocol = \"SASL_SSL\";\n"
                         "  sasl_mechanism = \"scram-sha-512\";\n"
                         "  sasl_username = \"bridge\";\n"
                         "  sasl_password = \"in-file\";\n"
                         "  ssl_ca_location = \"/etc/ca.pem\";\n"
                         "};\n");
    load_ok(p, NONE, NONE, NONE);
    assert_string_equal(cfg->kafka_security_protocol, "SASL_SSL");
    assert_string_equal(cfg->kafka_sasl_mechanism, "scram-sha-512");
    assert_string_equal(cfg->kafka_sasl_password, "in-file");
    assert_string_equal(cfg->kafka_ssl_ca_location, "/etc/ca.pem");
    load_ok(p, LIST("TT_BRIDGE_KAFKA_SASL_PASSWORD=in-env"), NONE, NONE);
    assert_string_equal(cfg->kafka_sasl_password, "in-env");
    const char *pwfile = conf("from-secret\n");
    char set[128];
    snprintf(set, sizeof(set), "kafka.sasl_password_file=%s", pwfile);
    load_ok(p, LIST("TT_BRIDGE_KAFKA_SASL_PASSWORD=in-env"), LIST(set), NONE);
    assert_string_equal(cfg->kafka_sasl_password, "from-secret");
    snprintf(set, sizeof(set), "TT_BRIDGE_KAFKA_SSL_KEY_PASSWORD_FILE=%s", pwfile);
    load_ok(NULL, LIST(set, "TT_BRIDGE_KAFKA_SECURITY_PROTOCOL=ssl",
                       "TT_BRIDGE_KAFKA_SSL_CERTIFICATE_LOCATION=/c.pem",
                       "TT_BRIDGE_KAFKA_SSL_KEY_LOCATION=/c.key"),
            LIST("kafka.ssl_key_password=in-set"), NONE);
    assert_string_equal(cfg->kafka_ssl_key_password, "from-secret");
    assert_string_equal(cfg->kafka_ssl_certificate_location, "/c.pem");
    /* Raw properties still count: -X names the protocol. */
    load_ok(NULL, NONE, LIST("kafka.sasl_username=u", "kafka.sasl_password=x",
                             "kafka.sasl_mechanism=PLAIN"),
            LIST("security.protocol=sasl_plaintext"));

    expect_error(load(NULL, NONE, LIST("kafka.security_protocol=tls"), NONE),
                 "--set kafka.security_protocol: \"tls\" is not one of plaintext, ssl, "
                 "sasl_plaintext or sasl_ssl");
    expect_error(load(NULL, LIST("TT_BRIDGE_KAFKA_SASL_MECHANISM=GSSAPI"), NONE, NONE),
                 "TT_BRIDGE_KAFKA_SASL_MECHANISM: \"GSSAPI\" is not one of PLAIN, SCRAM-SHA-256 "
                 "or SCRAM-SHA-512");
    expect_error(load(NULL, NONE, LIST("kafka.sasl_username=u"), NONE),
                 "--set kafka.sasl_username: needs kafka.sasl_password too");
    expect_error(load(NULL, LIST("TT_BRIDGE_KAFKA_SASL_PASSWORD=secret-1"), NONE, NONE),
                 "TT_BRIDGE_KAFKA_SASL_PASSWORD: needs kafka.sasl_username too");
    expect_error(load(NULL, NONE, LIST("kafka.sasl_username=u", "kafka.sasl_password=x"), NONE),
                 "--set kafka.sasl_username: needs kafka.sasl_mechanism (PLAIN, SCRAM-SHA-256 or "
                 "SCRAM-SHA-512)");
    expect_error(load(NULL, NONE, LIST("kafka.sasl_username=u", "kafka.sasl_password=x",
                                       "kafka.sasl_mechanism=PLAIN"), NONE),
                 "--set kafka.sasl_username: needs kafka.security_protocol sasl_ssl or "
                 "sasl_plaintext (it is unset: plaintext)");
    expect_error(load(NULL, NONE, LIST("kafka.ssl_certificate_location=/c.pem",
                                       "kafka.ssl_key_location=/c.key",
                                       "kafka.security_protocol=sasl_plaintext"), NONE),
                 "--set kafka.ssl_certificate_location: needs kafka.security_protocol ssl or "
                 "sasl_ssl (it is \"sasl_plaintext\")");
    expect_error(load(NULL, NONE, LIST("kafka.ssl_key_location=/c.key"), NONE),
                 "--set kafka.ssl_key_location: needs kafka.ssl_certificate_location too");
    expect_error(load(NULL, LIST("TT_BRIDGE_KAFKA_SASL_PASSWORD_FILE=/nonexistent/pw"), NONE,
                      NONE),
                 "TT_BRIDGE_KAFKA_SASL_PASSWORD_FILE: cannot read \"/nonexistent/pw\": No such "
                 "file or directory");
    /* No message above quoted a password. */
    assert_null(strstr(err, "secret-1"));

    /* The effective value librdkafka gets: a raw property wins. */
    load_ok(NULL, NONE, LIST("kafka.ssl_ca_location=/a.pem"), LIST("ssl.ca.location=/b.pem"));
    assert_string_equal(ttb_config_kafka_effective(cfg, "ssl.ca.location",
                                                   cfg->kafka_ssl_ca_location), "/b.pem");
    assert_null(ttb_config_kafka_effective(cfg, "ssl.key.location", cfg->kafka_ssl_key_location));
}

static void test_dump_redacts(void **state) {
    (void)state;
    const char *p =
        conf("kafka = { properties = ( \"sasl.username=bridge\", \"sasl.password=kpw1\" ); };\n");
    load_ok(p,
            LIST("TT_BRIDGE_REDIS_URL=redis://u:urlpw2@h:6380/1", "TT_BRIDGE_REDIS_PASSWORD=envpw3",
                 "TT_BRIDGE_RDKAFKA_SSL_KEY_PASSWORD=kpw4",
                 "TT_BRIDGE_RDKAFKA_SASL_OAUTHBEARER_CLIENT_SECRET=kpw5",
                 "TT_BRIDGE_KAFKA_SSL_KEY_PASSWORD=kpw6"),
            LIST("http.listen=127.0.0.1:9464", "bridge.denied_ops=stop_all,prune"), NONE);
    char *dump = capture(ttb_config_dump, cfg);
    static const char *const secrets[] = {"kpw1", "urlpw2", "envpw3", "kpw4", "kpw5", "kpw6"};
    for (size_t i = 0; i < 6; i++) {
        if (strstr(dump, secrets[i]) != NULL) fail_msg("the dump shows %s:\n%s", secrets[i], dump);
    }
    assert_non_null(strstr(dump, "  url = \"redis://u:****@h:6380/1\";\n"));
    assert_non_null(strstr(dump, "  password = \"****\";\n"));
    assert_non_null(strstr(dump, "\"sasl.password=****\""));
    assert_non_null(strstr(dump, "\"ssl.key.password=****\""));
    assert_non_null(strstr(dump, "\"sasl.oauthbearer.client.secret=****\""));
    assert_non_null(strstr(dump, "\"sasl.username=bridge\""));
    assert_non_null(strstr(dump, "  ssl_key_password = \"****\";\n"));
    assert_non_null(strstr(dump, "  listen = \"127.0.0.1:9464\";\n"));
    assert_non_null(strstr(dump, "  denied_ops = ( \"stop_all\", \"prune\" );\n"));
    assert_non_null(strstr(dump, "  level = \"info\";\n"));

    /* The dump is the file syntax: it loads back to the same configuration. */
    const char *again = conf(dump);
    char *first = dump;
    load_ok(again, NONE, LIST("redis.url=redis://h:6380/1"), NONE);
    char *second = capture(ttb_config_dump, cfg);
    /* Only the redacted values differ (the password is now literally ****). */
    assert_string_equal(cfg->redis.password, "****");
    assert_int_equal(cfg->redis.port, 6380);
    assert_int_equal(cfg->redis.db, 1);
    assert_non_null(strstr(second, "  denied_ops = ( \"stop_all\", \"prune\" );\n"));
    free(first);
    free(second);
}

static void test_dump_strings_escaped(void **state) {
    (void)state;
    load_ok(NULL, NONE, LIST("events.cloudevents_source=a \"b\" \\c"), NONE);
    char *dump = capture(ttb_config_dump, cfg);
    assert_non_null(strstr(dump, "  cloudevents_source = \"a \\\"b\\\" \\\\c\";\n"));
    const char *p = conf(dump);
    load_ok(p, NONE, NONE, NONE);
    assert_string_equal(cfg->cloudevents_source, "a \"b\" \\c");
    free(dump);
}

static void test_free_null(void **state) {
    (void)state;
    ttb_config_free(NULL);
    assert_null(ttb_redis_url_redact(NULL));
}

int main(void) {
    /* Unknown TT_BRIDGE_ variables are warned about; keep test output quiet. */
    ttb_log_set_level(TTB_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_defaults, setup, teardown),
        cmocka_unit_test_setup_teardown(test_example_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_docs_list_every_setting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
        cmocka_unit_test_setup_teardown(test_precedence, setup, teardown),
        cmocka_unit_test_setup_teardown(test_empty_env_is_unset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_types_from_text, setup, teardown),
        cmocka_unit_test_setup_teardown(test_range_edges, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_parse_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_env_and_flag_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_validation_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_urls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_url_errors, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_password_sources, setup, teardown),
        cmocka_unit_test_setup_teardown(test_redis_tls, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_properties, setup, teardown),
        cmocka_unit_test_setup_teardown(test_denied_ops, setup, teardown),
        cmocka_unit_test_setup_teardown(test_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kafka_security, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_redacts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_dump_strings_escaped, setup, teardown),
        cmocka_unit_test_setup_teardown(test_free_null, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
