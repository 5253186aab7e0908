/* SPDX-License-Identifier: MIT */
/*
 * State capture against a real redis-server. An independent hiredis client
 * plays tinytown's agent loops and tools (HSET of `state`, new agent hashes,
 * DEL); the test then reads the town stream the way tinytown does and
 * checks each transition appears exactly once, in tinytown's TownEvent
 * format, also in the agent's stream. Also: the bridge's own changes are not
 * reported again, a first sight of a town is recorded silently, changes made
 * while Redis was away are reported after the reconnect, two captures report
 * each transition once, and a Redis that refuses CONFIG falls back to the
 * periodic scan with one warning.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <glob.h>
#include <hiredis/hiredis.h>
#include <jansson.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "redis-harness.h"
#include "tinytown_bridge/capture.h"
#include "tinytown_bridge/config.h"
#include "tinytown_bridge/metrics.h"

#define WAIT_MS 15000
#define TOWN "cap"

static const char *const ids[] = {
    "1b4e28ba-2fa1-41d2-883f-0016d3cca427", "6ec0bd7f-11c0-43da-975e-2a8ad9ebae0b",
    "9a3f2c1e-5b7d-4e8f-a1b2-c3d4e5f60718", "0f1e2d3c-4b5a-4968-8776-655443322110",
    "2c7e9f10-3a4b-4c5d-8e6f-708192a3b4c5", "3d8fa021-4b5c-4d6e-9f70-8192a3b4c5d6",
    "4e9fb132-5c6d-4e7f-a081-92a3b4c5d6e7", "5fa0c243-6d7e-4f80-b192-a3b4c5d6e7f8",
};

typedef struct fixture {
    ttb_test_redis_t server;
    redisContext *rc;
    ttb_config_t *cfg;
    char *towns[1];
} fixture_t;

static char town_name[] = TOWN;

static int64_t now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pause_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static int start_server(fixture_t *f, const char *const *extra) {
    if (ttb_test_redis_start(&f->server, extra)) return -1;
    f->rc = redisConnect("127.0.0.1", f->server.port);
    if (!f->rc || f->rc->err) return -1;
    f->cfg->redis.port = f->server.port;
    return 0;
}

static int setup_common(void **state, const char *const *extra) {
    fixture_t *f = calloc(1, sizeof(*f));
    ttb_config_t *cfg = calloc(1, sizeof(*cfg));
    if (!f || !cfg) return -1;
    f->cfg = cfg;
    cfg->redis.host = "127.0.0.1";
    f->towns[0] = town_name;
    cfg->towns = f->towns;
    cfg->ntowns = 1;
    cfg->capture_enabled = true;
    cfg->reconcile_interval_ms = 300;
    cfg->redis_backoff_max_ms = 400;
    cfg->scan_count = 3; /* several SCAN pages even for a few agents */
    cfg->shutdown_timeout_ms = 2000;
    ttb_metrics_reset();
    *state = f;
    return start_server(f, extra);
}

static int setup(void **state) { return setup_common(state, NULL); }

static int setup_aof(void **state) {
    const char *const aof[] = {"--appendonly", "yes", NULL};
    return setup_common(state, aof);
}

static int setup_no_config(void **state) {
    /* CONFIG renamed away, as managed Redis services do; some flags preset. */
    const char *const args[] = {"--notify-keyspace-events", "", "--rename-command", "CONFIG", "",
                                NULL};
    return setup_common(state, args);
}

static int setup_preset_flags(void **state) {
    const char *const args[] = {"--notify-keyspace-events", "Ex", NULL};
    return setup_common(state, args);
}

static int teardown(void **state) {
    fixture_t *f = *state;
    redisFree(f->rc);
    ttb_test_redis_stop(&f->server);
    free(f->cfg);
    free(f);
    return 0;
}

static void cmd(fixture_t *f, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(f->rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    if (r->type == REDIS_REPLY_ERROR) fail_msg("redis: %s", r->str);
    freeReplyObject(r);
}

/* An agent hash as tinytown's save writes it. */
static void tt_save_agent(fixture_t *f, const char *id, const char *name, const char *state) {
    cmd(f,
        "HSET tt:" TOWN ":agent:%s id %s name %s agent_type worker state %s cli claude "
        "created_at 2026-11-24T06:51:00+00:00 last_heartbeat 2026-11-24T06:51:00+00:00 "
        "tasks_completed 0 rounds_completed 0 last_active_at 2026-11-24T06:51:00+00:00 "
        "spawn_mode fresh",
        id, id, name, state);
}

/* What an agent loop does: only the state (and heartbeat) field. */
static void tt_set_state(fixture_t *f, const char *id, const char *state) {
    cmd(f, "HSET tt:" TOWN ":agent:%s state %s last_heartbeat 2026-11-24T06:52:00+00:00", id,
        state);
}

/* Events of one type for one agent in a stream, as parsed documents. */
typedef struct found {
    json_t *ev[64];
    char *raw[64];
    size_t n;
} found_t;

static void found_free(found_t *x) {
    for (size_t i = 0; i < x->n; i++) {
        json_decref(x->ev[i]);
        free(x->raw[i]);
    }
    x->n = 0;
}

static void find_events(fixture_t *f, const char *stream, const char *type, const char *agent,
                        found_t *out) {
    found_free(out);
    redisReply *r = redisCommand(f->rc, "XRANGE %s - +", stream);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    for (size_t i = 0; i < r->elements; i++) {
        redisReply *fields = r->element[i]->element[1];
        const char *etype = NULL, *data = NULL;
        for (size_t k = 0; k + 1 < fields->elements; k += 2) {
            if (strcmp(fields->element[k]->str, "event_type") == 0) etype = fields->element[k + 1]->str;
            if (strcmp(fields->element[k]->str, "data") == 0) data = fields->element[k + 1]->str;
        }
        assert_non_null(etype);
        assert_non_null(data);
        json_t *doc = json_loads(data, 0, NULL);
        assert_non_null(doc);
        assert_string_equal(json_string_value(json_object_get(doc, "event_type")), etype);
        const char *a = json_string_value(json_object_get(doc, "agent_id"));
        if (strcmp(etype, type) == 0 && a && strcmp(a, agent) == 0 && out->n < 64) {
            out->ev[out->n] = doc;
            out->raw[out->n++] = strdup(data);
        } else {
            json_decref(doc);
        }
    }
    freeReplyObject(r);
}

static const char *str(json_t *doc, const char *name) {
    return json_string_value(json_object_get(doc, name));
}

/* Waits until the town stream holds @p n events of @p type for @p agent. */
static void wait_events(fixture_t *f, const char *type, const char *agent, size_t n, found_t *out) {
    int64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        find_events(f, "tt:" TOWN ":events", type, agent, out);
        if (out->n >= n) return;
        if (now_ms() > deadline)
            fail_msg("%zu %s events for %s, wanted %zu", out->n, type, agent, n);
        pause_ms(10);
    }
}

static bool key_exists(fixture_t *f, const char *key) {
    redisReply *r = redisCommand(f->rc, "EXISTS %s", key);
    bool yes = r && r->type == REDIS_REPLY_INTEGER && r->integer == 1;
    freeReplyObject(r);
    return yes;
}

/* The town was looked at once: its baseline marker holds a timestamp. */
static void wait_baselined(fixture_t *f) {
    int64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        redisReply *r = redisCommand(f->rc, "GET ttb:" TOWN ":observed:baseline");
        bool done = r && r->type == REDIS_REPLY_STRING && strcmp(r->str, "pending") != 0;
        freeReplyObject(r);
        if (done) return;
        if (now_ms() > deadline) fail_msg("town never baselined");
        pause_ms(10);
    }
}

/* An observed record without an agent behind it is only found by the
 * reconcile's walk of the record (no keyspace notification names it). Its
 * Removed event therefore proves a pass has run since it was written. */
static void wait_reconcile_pass(fixture_t *f) {
    static int ghosts;
    char id[40];
    snprintf(id, sizeof(id), "eeeeeeee-0000-4000-8000-%012d", ++ghosts);
    cmd(f, "HSET ttb:" TOWN ":observed %s idle", id);
    found_t x = {0};
    wait_events(f, "agent_state_changed", id, 1, &x);
    assert_string_equal(str(x.ev[0], "new_state"), "Removed");
    found_free(&x);
}

/* A change whose event, once seen, proves that capture has handled every
 * notification before it (they are handled in order); then two reconcile
 * passes, the second of which started after everything the test did (the
 * first may have been under way already). Absence checks after this are
 * meaningful: both triggers had their chance to report twice. */
static void sync_with_sentinel(fixture_t *f, const char *to) {
    static const char *const sentinel = "ffffffff-0000-4000-8000-000000000000";
    found_t x = {0};
    find_events(f, "tt:" TOWN ":events", "agent_state_changed", sentinel, &x);
    size_t have = x.n;
    if (!key_exists(f, "tt:" TOWN ":agent:ffffffff-0000-4000-8000-000000000000")) {
        tt_save_agent(f, sentinel, "sentinel", to);
        wait_events(f, "agent_spawned", sentinel, 1, &x);
    } else {
        tt_set_state(f, sentinel, to);
        wait_events(f, "agent_state_changed", sentinel, have + 1, &x);
    }
    wait_reconcile_pass(f);
    wait_reconcile_pass(f);
    found_free(&x);
}

static ttb_capture_t *capture_start(fixture_t *f) {
    char err[256];
    ttb_capture_t *cap = ttb_capture_new(f->cfg, err, sizeof(err));
    if (!cap) fail_msg("capture: %s", err);
    assert_int_equal(ttb_capture_start(cap), 0);
    return cap;
}

static void check_format(const char *raw) {
    /* tinytown's member order, and the Z timestamp with 0/3/6/9 digits. */
    regex_t re;
    assert_int_equal(
        regcomp(&re,
                "^\\{\"event_type\":\"agent_state_changed\",\"agent_id\":\"[0-9a-f-]{36}\","
                "\"old_state\":\"[A-Z][a-z]+\",\"new_state\":\"[A-Z][a-z]+\","
                "\"message\":\"Agent state changed\","
                "\"timestamp\":\"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}"
                "(\\.([0-9]{3}|[0-9]{6}|[0-9]{9}))?Z\"\\}$",
                REG_EXTENDED | REG_NOSUB),
        0);
    if (regexec(&re, raw, 0, NULL, 0) != 0) fail_msg("not a TownEvent as tinytown writes it: %s", raw);
    regfree(&re);
}

/* Agent loops flip states; each flip becomes one event, in both streams. */
static void test_external_changes_reported_once(void **state) {
    fixture_t *f = *state;
    tt_save_agent(f, ids[0], "alice", "idle"); /* exists before: baseline, no event */
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f);

    const char *seq[] = {"working", "idle", "working", "paused", "idle"};
    const char *title[] = {"Idle", "Working", "Idle", "Working", "Paused", "Idle"};
    found_t x = {0};
    for (size_t i = 0; i < 5; i++) {
        tt_set_state(f, ids[0], seq[i]);
        wait_events(f, "agent_state_changed", ids[0], i + 1, &x);
    }
    sync_with_sentinel(f, "idle");
    find_events(f, "tt:" TOWN ":events", "agent_state_changed", ids[0], &x);
    assert_int_equal(x.n, 5); /* exactly once each */
    for (size_t i = 0; i < 5; i++) {
        check_format(x.raw[i]);
        assert_string_equal(str(x.ev[i], "old_state"), title[i]);
        assert_string_equal(str(x.ev[i], "new_state"), title[i + 1]);
    }
    /* the agent's own stream has them too */
    found_t y = {0};
    find_events(f, "tt:" TOWN ":events:agent:1b4e28ba-2fa1-41d2-883f-0016d3cca427",
                "agent_state_changed", ids[0], &y);
    assert_int_equal(y.n, 5);
    for (size_t i = 0; i < 5; i++) assert_string_equal(y.raw[i], x.raw[i]);
    /* No spawn event for the agent that was there before capture started. */
    find_events(f, "tt:" TOWN ":events", "agent_spawned", ids[0], &y);
    assert_int_equal(y.n, 0);

    /* An unknown state reads as "starting", as tinytown reads it. */
    tt_set_state(f, ids[0], "napping");
    wait_events(f, "agent_state_changed", ids[0], 6, &x);
    assert_string_equal(str(x.ev[5], "old_state"), "Idle");
    assert_string_equal(str(x.ev[5], "new_state"), "Starting");
    tt_set_state(f, ids[0], "starting"); /* same state to tinytown: nothing */
    sync_with_sentinel(f, "working");
    find_events(f, "tt:" TOWN ":events", "agent_state_changed", ids[0], &x);
    assert_int_equal(x.n, 6);
    assert_true(atomic_load(&ttb_metrics.states_captured) >= 6);

    ttb_capture_free(cap);
    found_free(&x);
    found_free(&y);
}

/* What the bridge's scripts change (state and observed record together) is
 * not reported again. */
static void test_own_changes_not_reported(void **state) {
    fixture_t *f = *state;
    tt_save_agent(f, ids[1], "bob", "idle");
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f);
    /* The bridge's scripts write both in one atomic step. */
    cmd(f, "MULTI");
    cmd(f, "HSET tt:" TOWN ":agent:%s state paused", ids[1]);
    cmd(f, "HSET ttb:" TOWN ":observed %s paused", ids[1]);
    cmd(f, "EXEC");
    sync_with_sentinel(f, "idle");
    found_t x = {0};
    find_events(f, "tt:" TOWN ":events", "agent_state_changed", ids[1], &x);
    assert_int_equal(x.n, 0);
    /* and the next foreign change is reported from the bridge's state */
    tt_set_state(f, ids[1], "working");
    wait_events(f, "agent_state_changed", ids[1], 1, &x);
    assert_string_equal(str(x.ev[0], "old_state"), "Paused");
    assert_string_equal(str(x.ev[0], "new_state"), "Working");
    ttb_capture_free(cap);
    found_free(&x);
}

/* Agents created and deleted by other tools. */
static void test_spawned_and_removed(void **state) {
    fixture_t *f = *state;
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f); /* an empty town: baselined once, by its marker */
    tt_save_agent(f, ids[2], "carol", "starting");
    found_t x = {0};
    wait_events(f, "agent_spawned", ids[2], 1, &x);
    char want[512];
    /* exactly the TownEvent fields a spawn carries, in tinytown's order */
    const char *ts = str(x.ev[0], "timestamp");
    snprintf(want, sizeof(want),
             "{\"event_type\":\"agent_spawned\",\"agent_id\":\"%s\",\"new_state\":\"Starting\","
             "\"message\":\"Agent spawned\",\"timestamp\":\"%s\",\"spawn_mode\":\"fresh\"}",
             ids[2], ts);
    assert_string_equal(x.raw[0], want);

    tt_set_state(f, ids[2], "working");
    wait_events(f, "agent_state_changed", ids[2], 1, &x);
    /* tinytown deletes an agent's keys */
    cmd(f, "DEL tt:" TOWN ":agent:%s tt:" TOWN ":inbox:%s", ids[2], ids[2]);
    wait_events(f, "agent_state_changed", ids[2], 2, &x);
    assert_string_equal(str(x.ev[1], "old_state"), "Working");
    assert_string_equal(str(x.ev[1], "new_state"), "Removed");
    sync_with_sentinel(f, "idle");
    find_events(f, "tt:" TOWN ":events", "agent_state_changed", ids[2], &x);
    assert_int_equal(x.n, 2);
    find_events(f, "tt:" TOWN ":events", "agent_spawned", ids[2], &x);
    assert_int_equal(x.n, 1);
    redisReply *r = redisCommand(f->rc, "HEXISTS ttb:" TOWN ":observed %s", ids[2]);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    ttb_capture_free(cap);
    found_free(&x);
}

/* Writes a command into the stopped server's append-only file, so that it
 * is part of the data when the server comes back: a change made while
 * capture had no connection, without racing its reconnect. */
static void aof_append(fixture_t *f, int argc, const char **argv) {
    char pattern[512];
    snprintf(pattern, sizeof(pattern), "%s/appendonlydir/*.incr.aof", f->server.dir);
    glob_t g;
    assert_int_equal(glob(pattern, 0, NULL, &g), 0);
    assert_true(g.gl_pathc >= 1);
    FILE *fp = fopen(g.gl_pathv[g.gl_pathc - 1], "a");
    assert_non_null(fp);
    fprintf(fp, "*%d\r\n", argc);
    for (int i = 0; i < argc; i++) fprintf(fp, "$%zu\r\n%s\r\n", strlen(argv[i]), argv[i]);
    fclose(fp);
    globfree(&g);
}

/* Changes made while capture has no Redis connection are reported after
 * it reconnects (reconcile, with notifications re-enabled on the new server). */
static void test_changes_during_outage(void **state) {
    fixture_t *f = *state;
    f->cfg->reconcile_interval_ms = 60000; /* only the reconnect's scan can see them */
    tt_save_agent(f, ids[3], "dave", "idle");
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f);
    found_t x = {0};
    tt_set_state(f, ids[3], "working");
    wait_events(f, "agent_state_changed", ids[3], 1, &x);

    redisFree(f->rc);
    assert_int_equal(ttb_test_redis_pause(&f->server), 0);
    /* While it is down: an agent loop's change and a new agent. The
     * restarted server has notifications off until capture turns them on
     * again, so only the scan after the reconnect can see these. */
    const char *flip[] = {"HSET", "tt:" TOWN ":agent:0f1e2d3c-4b5a-4968-8776-655443322110",
                          "state", "idle"};
    aof_append(f, 4, flip);
    const char *spawn[] = {"HSET", "tt:" TOWN ":agent:2c7e9f10-3a4b-4c5d-8e6f-708192a3b4c5",
                           "id", ids[4], "name", "erin", "state", "starting", "spawn_mode",
                           "resumed"};
    aof_append(f, 10, spawn);
    assert_int_equal(ttb_test_redis_resume(&f->server), 0);
    f->rc = redisConnect("127.0.0.1", f->server.port);
    assert_non_null(f->rc);
    wait_events(f, "agent_state_changed", ids[3], 2, &x);
    assert_string_equal(str(x.ev[1], "old_state"), "Working");
    assert_string_equal(str(x.ev[1], "new_state"), "Idle");
    wait_events(f, "agent_spawned", ids[4], 1, &x);
    assert_string_equal(str(x.ev[0], "spawn_mode"), "resumed");

    /* Notifications work again on the restarted server (not the 60 s scan). */
    redisReply *r = redisCommand(f->rc, "CONFIG GET notify-keyspace-events");
    assert_non_null(strchr(r->element[1]->str, 'K'));
    freeReplyObject(r);
    tt_set_state(f, ids[3], "paused");
    wait_events(f, "agent_state_changed", ids[3], 3, &x);
    ttb_capture_free(cap);
    found_free(&x);
}

/* Two captures (two bridges): every transition once. */
static void test_two_captures_report_once(void **state) {
    fixture_t *f = *state;
    for (int i = 0; i < 4; i++) tt_save_agent(f, ids[i], "w", "idle");
    ttb_capture_t *a = capture_start(f);
    ttb_capture_t *b = capture_start(f);
    wait_baselined(f);
    const char *cycle[] = {"working", "idle"};
    found_t x = {0};
    for (int round = 0; round < 6; round++) {
        for (int i = 0; i < 4; i++) tt_set_state(f, ids[i], cycle[round % 2]);
        for (int i = 0; i < 4; i++)
            wait_events(f, "agent_state_changed", ids[i], (size_t)round + 1, &x);
    }
    /* a new agent, seen by both captures */
    tt_save_agent(f, ids[5], "fay", "idle");
    wait_events(f, "agent_spawned", ids[5], 1, &x);
    sync_with_sentinel(f, "idle");
    for (int i = 0; i < 4; i++) {
        find_events(f, "tt:" TOWN ":events", "agent_state_changed", ids[i], &x);
        assert_int_equal(x.n, 6);
        for (size_t k = 0; k < x.n; k++)
            assert_string_equal(str(x.ev[k], "new_state"), k % 2 == 0 ? "Working" : "Idle");
    }
    find_events(f, "tt:" TOWN ":events", "agent_spawned", ids[5], &x);
    assert_int_equal(x.n, 1);
    ttb_capture_free(a);
    ttb_capture_free(b);
    found_free(&x);
}

/* Many agents: a baseline over several SCAN pages, then a burst of flips
 * (one pipeline) each reported once, and a burst of deletions. */
static void test_many_agents(void **state) {
    fixture_t *f = *state;
    enum { N = 3000, FLIP = 800 };
    f->cfg->scan_count = 500;
    char id[40];
    for (int i = 0; i < N; i++) {
        snprintf(id, sizeof(id), "%08x-0000-4000-8000-000000000000", i);
        redisAppendCommand(f->rc, "HSET tt:" TOWN ":agent:%s id %s name w%d state idle", id, id, i);
    }
    for (int i = 0; i < N; i++) {
        void *r;
        assert_int_equal(redisGetReply(f->rc, &r), REDIS_OK);
        freeReplyObject(r);
    }
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f);
    redisReply *r = redisCommand(f->rc, "HLEN ttb:" TOWN ":observed");
    assert_int_equal(r->integer, N);
    freeReplyObject(r);
    r = redisCommand(f->rc, "XLEN tt:" TOWN ":events");
    assert_int_equal(r->integer, 0); /* silent */
    freeReplyObject(r);

    for (int i = 0; i < FLIP; i++) {
        snprintf(id, sizeof(id), "%08x-0000-4000-8000-000000000000", i);
        redisAppendCommand(f->rc, "HSET tt:" TOWN ":agent:%s state working", id);
    }
    for (int i = 0; i < 20; i++) {
        snprintf(id, sizeof(id), "%08x-0000-4000-8000-000000000000", N - 1 - i);
        redisAppendCommand(f->rc, "DEL tt:" TOWN ":agent:%s", id);
    }
    for (int i = 0; i < FLIP + 20; i++) {
        void *reply;
        assert_int_equal(redisGetReply(f->rc, &reply), REDIS_OK);
        freeReplyObject(reply);
    }
    int64_t deadline = now_ms() + WAIT_MS;
    for (;;) {
        r = redisCommand(f->rc, "XLEN tt:" TOWN ":events");
        long long n = r->integer;
        freeReplyObject(r);
        if (n >= FLIP + 20) break;
        if (now_ms() > deadline) fail_msg("%lld of %d events", n, FLIP + 20);
        pause_ms(10);
    }
    sync_with_sentinel(f, "idle");
    /* flips + deletions + the sentinel's spawn + two reconcile witnesses */
    r = redisCommand(f->rc, "XLEN tt:" TOWN ":events");
    assert_int_equal(r->integer, FLIP + 20 + 1 + 2);
    freeReplyObject(r);
    ttb_capture_free(cap);
}

/* CONFIG refused: one warning, and the periodic scan still reports. */
static void test_without_notifications(void **state) {
    fixture_t *f = *state;
    char path[64];
    snprintf(path, sizeof(path), "/tmp/ttb-capture-log-XXXXXX");
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    int saved = dup(2);
    dup2(fd, 2);
    close(fd);

    tt_save_agent(f, ids[6], "gus", "idle");
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f);
    found_t x = {0};
    tt_set_state(f, ids[6], "working");
    wait_events(f, "agent_state_changed", ids[6], 1, &x);
    tt_set_state(f, ids[6], "stopped");
    wait_events(f, "agent_state_changed", ids[6], 2, &x);
    assert_string_equal(str(x.ev[1], "new_state"), "Stopped");
    ttb_capture_free(cap);

    dup2(saved, 2);
    close(saved);
    FILE *fp = fopen(path, "r");
    char log[8192];
    size_t n = fread(log, 1, sizeof(log) - 1, fp);
    log[n] = '\0';
    fclose(fp);
    unlink(path);
    fputs(log, stderr);
    const char *w = strstr(log, "level=warn msg=\"keyspace notifications unavailable");
    assert_non_null(w);
    assert_null(strstr(w + 20, "keyspace notifications unavailable")); /* once */
    found_free(&x);
}

/* Flags already configured are kept; ours are added. */
static void test_notification_flags_added(void **state) {
    fixture_t *f = *state;
    ttb_capture_t *cap = capture_start(f);
    wait_baselined(f);
    redisReply *r = redisCommand(f->rc, "CONFIG GET notify-keyspace-events");
    const char *flags = r->element[1]->str;
    for (const char *c = "ExKgh"; *c; c++)
        if (!strchr(flags, *c)) fail_msg("flag %c missing from \"%s\"", *c, flags);
    freeReplyObject(r);
    ttb_capture_free(cap);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_external_changes_reported_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_own_changes_not_reported, setup, teardown),
        cmocka_unit_test_setup_teardown(test_spawned_and_removed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_changes_during_outage, setup_aof, teardown),
        cmocka_unit_test_setup_teardown(test_two_captures_report_once, setup, teardown),
        cmocka_unit_test_setup_teardown(test_many_agents, setup, teardown),
        cmocka_unit_test_setup_teardown(test_without_notifications, setup_no_config, teardown),
        cmocka_unit_test_setup_teardown(test_notification_flags_added, setup_preset_flags, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
