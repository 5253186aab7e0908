/* SPDX-License-Identifier: MIT */
/*
 * The agent service against a real redis-server: every operation and its
 * error paths, checked by what lands in Redis (keys, fields, TTLs, streams,
 * event JSON) and by the result records, plus idempotency, what a listing
 * page costs in a 10,000-agent town, listings amid the batch's own writes,
 * and two clients racing on one agent.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <hiredis/hiredis.h>
#include <pthread.h>
#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "redis-harness.h"
#include "tinytown_bridge/agent.h"
#include "tinytown_bridge/command.h"
#include "tinytown_bridge/service.h"
#include "tinytown_bridge/store.h"

static ttb_test_redis_t server;
static redisContext *rc;  /* an independent client for setting up and checking */
static ttb_store_t *store;
static ttb_service_t *svc;
static int cmd_seq;

static const char *const towns[] = {"demo", "other"};
static ttb_command_policy_t policy = {
    .max_record_bytes = 1 << 20,
    .default_town = "demo",
    .towns = towns,
    .ntowns = 2,
    .default_cli = "claude",
    .max_wait_ms = 60000,
};

static ttb_store_t *new_store(void) {
    ttb_redis_opts_t opts = {.host = "127.0.0.1", .port = server.port};
    ttb_store_t *s = ttb_store_new(&opts);
    char err[256];
    assert_non_null(s);
    assert_int_equal(ttb_store_connect(s, err, sizeof(err)), 0);
    return s;
}

static int setup(void **state) {
    (void)state;
    if (ttb_test_redis_start(&server, NULL)) return -1;
    rc = redisConnect("127.0.0.1", server.port);
    if (!rc || rc->err) return -1;
    store = new_store();
    ttb_service_config_t cfg = {.redis_url_redacted = "redis://:****@127.0.0.1:1"};
    svc = ttb_service_new(store, &cfg);
    return svc ? 0 : -1;
}

static int teardown(void **state) {
    (void)state;
    ttb_service_free(svc);
    ttb_store_free(store);
    redisFree(rc);
    ttb_test_redis_stop(&server);
    return 0;
}

static int flush(void **state) {
    (void)state;
    freeReplyObject(redisCommand(rc, "FLUSHALL"));
    return 0;
}

__attribute__((format(printf, 1, 2))) static redisReply *R(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    return r;
}

__attribute__((format(printf, 1, 2))) static long long Rint(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    assert_int_equal(r->type, REDIS_REPLY_INTEGER);
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}

/* Returns a malloc'd string value, or NULL for nil. */
__attribute__((format(printf, 1, 2))) static char *Rstr(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = redisvCommand(rc, fmt, ap);
    va_end(ap);
    assert_non_null(r);
    char *s = r->type == REDIS_REPLY_STRING ? strndup(r->str, r->len) : NULL;
    freeReplyObject(r);
    return s;
}

/* A command with a fresh id in the default town; fmt gives op and args. */
typedef struct run {
    ttb_command_t cmd;
    ttb_outcome_t out;
    json_t *doc;
} run_t;

static void run_parse(run_t *r, const char *json) {
    char err[256];
    ttb_code_t code = ttb_command_parse(json, strlen(json), &policy, &r->cmd, err, sizeof(err));
    if (code != TTB_CODE_OK) fail_msg("parse %s: %s", json, err);
}

static void run_load(run_t *r) {
    json_error_t jerr;
    r->doc = json_loadb(r->out.record, r->out.record_len, 0, &jerr);
    if (!r->doc) fail_msg("result is not JSON: %s", jerr.text);
}

static run_t *exec_json(const char *json) {
    run_t *r = calloc(1, sizeof(*r));
    run_parse(r, json);
    assert_int_equal(ttb_service_execute(svc, &r->cmd, 1, &r->out), 0);
    if (!r->out.pending) run_load(r);
    return r;
}

__attribute__((format(printf, 2, 3))) static run_t *execf(const char *op, const char *args_fmt,
                                                         ...) {
    char args[2048], json[4096];
    va_list ap;
    va_start(ap, args_fmt);
    vsnprintf(args, sizeof(args), args_fmt, ap);
    va_end(ap);
    snprintf(json, sizeof(json), "{\"id\":\"c-%d\",\"op\":\"%s\",\"args\":{%s}}", ++cmd_seq, op,
             args);
    return exec_json(json);
}

static void run_free(run_t *r) {
    if (!r) return;
    json_decref(r->doc);
    ttb_outcome_clear(&r->out);
    ttb_command_clear(&r->cmd);
    free(r);
}

static const char *err_code(const run_t *r) {
    return json_string_value(json_object_get(json_object_get(r->doc, "error"), "code"));
}

static json_t *res(const run_t *r, const char *member) {
    return json_object_get(json_object_get(r->doc, "result"), member);
}

static const char *agent_field(const run_t *r, const char *field) {
    return json_string_value(json_object_get(res(r, "agent"), field));
}

static void assert_ok(const run_t *r) {
    if (!json_is_true(json_object_get(r->doc, "ok")))
        fail_msg("expected ok, got %.*s", (int)r->out.record_len, r->out.record);
}

static void assert_error(const run_t *r, const char *code) {
    assert_false(json_is_true(json_object_get(r->doc, "ok")));
    assert_string_equal(err_code(r), code);
}

/* Spawns and returns the new agent's id (static buffer per call site use). */
static void spawn(const char *name, char id[TTB_UUID_BUFSZ]) {
    run_t *r = execf("spawn", "\"name\":\"%s\"", name);
    assert_ok(r);
    snprintf(id, TTB_UUID_BUFSZ, "%s", agent_field(r, "id"));
    run_free(r);
}

static void set_state(const char *id, const char *state) {
    freeReplyObject(R("HSET tt:demo:agent:%s state %s", id, state));
}

static char *hget(const char *id, const char *field) {
    return Rstr("HGET tt:demo:agent:%s %s", id, field);
}

static void assert_hget(const char *id, const char *field, const char *want) {
    char *v = hget(id, field);
    if (!want) {
        assert_null(v);
        return;
    }
    assert_non_null(v);
    assert_string_equal(v, want);
    free(v);
}

/* The newest entry of a stream: its event_type field and data JSON. */
static void last_event(const char *stream, char **type, char **data) {
    redisReply *r = R("XREVRANGE %s + - COUNT 1", stream);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    assert_int_equal(r->elements, 1);
    redisReply *fields = r->element[0]->element[1];
    assert_int_equal(fields->elements, 4);
    assert_string_equal(fields->element[0]->str, "event_type");
    assert_string_equal(fields->element[2]->str, "data");
    *type = strdup(fields->element[1]->str);
    *data = strdup(fields->element[3]->str);
    freeReplyObject(r);
}

static void assert_matches(const char *s, const char *pattern) {
    regex_t re;
    assert_int_equal(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB), 0);
    int m = regexec(&re, s, 0, NULL, 0);
    regfree(&re);
    if (m != 0) fail_msg("'%s' does not match /%s/", s, pattern);
}

#define HASH_TIME "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.([0-9]{3}|[0-9]{6}|[0-9]{9}))?\\+00:00$"
#define JSON_TIME "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.([0-9]{3}|[0-9]{6}|[0-9]{9}))?Z"

/* ------------------------------------------------------------------------ */

static void test_spawn_writes_what_tinytown_writes(void **state) {
    (void)state;
    run_t *r = execf("spawn", "\"name\":\"worker-1\"");
    assert_ok(r);
    const char *id = agent_field(r, "id");
    assert_true(ttb_uuid_is_canonical(id, strlen(id)));
    assert_int_equal(id[14], '4'); /* version 4 */

    redisReply *h = R("HGETALL tt:demo:agent:%s", id);
    assert_int_equal(h->elements, 2 * 12); /* 11 always-present fields + nickname */
    freeReplyObject(h);
    assert_hget(id, "id", id);
    assert_hget(id, "name", "worker-1");
    assert_hget(id, "agent_type", "worker");
    assert_hget(id, "state", "starting");
    assert_hget(id, "cli", "claude");
    assert_hget(id, "tasks_completed", "0");
    assert_hget(id, "rounds_completed", "0");
    assert_hget(id, "spawn_mode", "fresh");
    assert_hget(id, "nickname", ttb_nickname_from_id(id));
    assert_hget(id, "role_id", NULL);
    assert_hget(id, "parent_agent_id", NULL);
    assert_hget(id, "current_task", NULL);
    char *created = hget(id, "created_at");
    assert_matches(created, HASH_TIME);
    assert_hget(id, "last_heartbeat", created);
    assert_hget(id, "last_active_at", created);

    /* Result: Agent JSON in tinytown's member order, times with Z. */
    json_t *agent = res(r, "agent");
    const char *keys[] = {"id", "name", "nickname", "role_id", "parent_agent_id", "spawn_mode",
                          "agent_type", "state", "cli", "current_task", "created_at",
                          "last_heartbeat", "tasks_completed", "rounds_completed",
                          "last_active_at"};
    size_t k = 0;
    const char *key;
    json_t *value;
    json_object_foreach(agent, key, value) {
        assert_true(k < 15);
        assert_string_equal(key, keys[k++]);
    }
    assert_int_equal(k, 15);
    assert_true(json_is_null(json_object_get(agent, "role_id")));
    assert_matches(json_string_value(json_object_get(agent, "created_at")), "^" JSON_TIME "$");

    /* Event: on the town and agent streams, exact JSON. */
    char *type, *data, expect[512];
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_spawned");
    char ts[TTB_TIME_BUFSZ];
    ttb_time_t t;
    assert_int_equal(ttb_time_parse(created, strlen(created), &t), 0);
    ttb_time_format_json(t, ts);
    snprintf(expect, sizeof(expect),
             "{\"event_type\":\"agent_spawned\",\"agent_id\":\"%s\",\"new_state\":\"Starting\","
             "\"message\":\"Agent spawned\",\"timestamp\":\"%s\",\"spawn_mode\":\"fresh\"}",
             id, ts);
    assert_string_equal(data, expect);
    free(type);
    free(data);
    char stream[128];
    snprintf(stream, sizeof(stream), "tt:demo:events:agent:%s", id);
    last_event(stream, &type, &data);
    assert_string_equal(data, expect);
    free(type);
    free(data);
    free(created);
    /* No activity line: tinytown's spawn writes none. */
    assert_int_equal(Rint("EXISTS tt:demo:activity:%s", id), 0);
    run_free(r);
}

static void test_spawn_with_metadata_and_parent(void **state) {
    (void)state;
    char parent[TTB_UUID_BUFSZ];
    spawn("lead", parent);
    run_t *r = execf("spawn",
                     "\"name\":\"helper\",\"cli\":\"codex\",\"role_id\":\"reviewer\","
                     "\"nickname\":\"Ada\",\"parent\":\"lead\",\"spawn_mode\":\"forkedcontext\"");
    assert_ok(r);
    const char *id = agent_field(r, "id");
    assert_hget(id, "cli", "codex");
    assert_hget(id, "role_id", "reviewer");
    assert_hget(id, "nickname", "Ada");
    assert_hget(id, "parent_agent_id", parent);
    assert_hget(id, "spawn_mode", "forkedcontext");
    assert_string_equal(agent_field(r, "parent_agent_id"), parent);

    /* The spawn event also reaches the parent's stream. */
    char stream[128], *type, *data;
    snprintf(stream, sizeof(stream), "tt:demo:events:agent:%s", parent);
    last_event(stream, &type, &data);
    assert_string_equal(type, "agent_spawned");
    assert_non_null(strstr(data, "\"parent_agent_id\":\""));
    assert_non_null(strstr(data, "\"spawn_mode\":\"forkedcontext\"}"));
    free(type);
    free(data);

    run_t *missing = execf("spawn", "\"name\":\"orphan\",\"parent\":\"nobody\"");
    assert_error(missing, "agent_not_found");
    run_free(missing);
    run_free(r);
}

static void test_spawn_name_conflict(void **state) {
    (void)state;
    char a[TTB_UUID_BUFSZ];
    spawn("builder", a);
    run_t *r = execf("spawn", "\"name\":\"BUILDER\"");
    assert_error(r, "name_conflict");
    run_free(r);
    assert_int_equal(Rint("XLEN tt:demo:events"), 1); /* the refused spawn wrote nothing */

    set_state(a, "stopped");
    r = execf("spawn", "\"name\":\"builder\"");
    assert_ok(r); /* a stopped agent's name may be reused */
    run_free(r);
}

static void test_batch_spawn_then_refer_by_name(void **state) {
    (void)state;
    const char *jsons[] = {
        "{\"id\":\"b-1\",\"op\":\"spawn\",\"args\":{\"name\":\"fresh-one\"}}",
        "{\"id\":\"b-2\",\"op\":\"interrupt\",\"args\":{\"agent\":\"fresh-one\"}}",
        "{\"id\":\"b-3\",\"op\":\"spawn\",\"args\":{\"name\":\"fresh-one\"}}",
        "{\"id\":\"b-4\",\"op\":\"list\"}",
    };
    ttb_command_t cmds[4];
    ttb_outcome_t out[4];
    char err[256];
    for (int i = 0; i < 4; i++)
        assert_int_equal(ttb_command_parse(jsons[i], strlen(jsons[i]), &policy, &cmds[i], err,
                                           sizeof(err)),
                         TTB_CODE_OK);
    uint64_t before = ttb_store_round_trips(store);
    assert_int_equal(ttb_service_execute(svc, cmds, 4, out), 0);
    uint64_t trips = ttb_store_round_trips(store) - before;
    assert_non_null(strstr(out[0].record, "\"ok\":true"));
    assert_non_null(strstr(out[1].record, "\"state\":\"paused\""));
    assert_non_null(strstr(out[2].record, "\"code\":\"name_conflict\""));
    assert_non_null(strstr(out[3].record, "\"state\":\"paused\""));
    /* replay check, round 1 (scan+scripts), round 2 (scan, scopes none), stores */
    assert_true(trips <= 8);
    for (int i = 0; i < 4; i++) {
        ttb_outcome_clear(&out[i]);
        ttb_command_clear(&cmds[i]);
    }
}

static void test_kill(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("victim", id);
    run_t *r = execf("kill", "\"agent\":\"victim\"");
    assert_ok(r);
    assert_string_equal(agent_field(r, "state"), "stopped");
    assert_hget(id, "state", "stopped");
    char *flag = Rstr("GET tt:demo:stop:%s", id);
    assert_string_equal(flag, "1");
    free(flag);
    long long ttl = Rint("TTL tt:demo:stop:%s", id);
    assert_true(ttl > 3590 && ttl <= 3600);
    char *line = Rstr("LINDEX tt:demo:activity:%s 0", id);
    assert_string_equal(line, "\xf0\x9f\x9b\x91 Stop requested");
    free(line);
    ttl = Rint("TTL tt:demo:activity:%s", id);
    assert_true(ttl > 3590 && ttl <= 3600);
    char *type, *data;
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_stopped");
    assert_non_null(strstr(data, "\"old_state\":\"Starting\",\"new_state\":\"Stopped\""));
    free(type);
    free(data);
    run_free(r);

    r = execf("kill", "\"agent\":\"00000000-0000-4000-8000-00000000abcd\"");
    assert_error(r, "agent_not_found");
    assert_int_equal(Rint("EXISTS tt:demo:stop:00000000-0000-4000-8000-00000000abcd"), 0);
    run_free(r);
    r = execf("kill", "\"agent\":\"nobody\"");
    assert_error(r, "agent_not_found");
    run_free(r);
}

static void test_restart(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("phoenix", id);
    freeReplyObject(R("HSET tt:demo:agent:%s state stopped rounds_completed 7 last_heartbeat "
                      "2020-01-01T00:00:00+00:00",
                      id));
    freeReplyObject(R("SET tt:demo:stop:%s 1 EX 3600", id));
    run_t *r = execf("restart", "\"agent\":\"%s\"", id);
    assert_ok(r);
    assert_hget(id, "state", "idle");
    assert_hget(id, "rounds_completed", "0");
    char *hb = hget(id, "last_heartbeat");
    assert_string_not_equal(hb, "2020-01-01T00:00:00+00:00");
    assert_matches(hb, HASH_TIME);
    free(hb);
    assert_int_equal(Rint("EXISTS tt:demo:stop:%s", id), 0);
    char *type, *data;
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_state_changed");
    assert_non_null(strstr(data, "\"old_state\":\"Stopped\",\"new_state\":\"Idle\""));
    free(type);
    free(data);
    run_free(r);
}

static void test_interrupt_and_resume(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("pauser", id);
    set_state(id, "working");
    run_t *r = execf("interrupt", "\"agent\":\"pauser\"");
    assert_ok(r);
    assert_hget(id, "state", "paused");
    char *line = Rstr("LINDEX tt:demo:activity:%s 0", id);
    assert_string_equal(line, "\xe2\x8f\xb8\xef\xb8\x8f Interrupted (paused)");
    free(line);
    char *type, *data;
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_interrupted");
    assert_non_null(strstr(data, "\"old_state\":\"Working\",\"new_state\":\"Paused\","
                                 "\"message\":\"Agent interrupted (paused)\""));
    free(type);
    free(data);
    run_free(r);

    freeReplyObject(R("SET tt:demo:stop:%s 1", id));
    r = execf("resume", "\"agent\":\"pauser\"");
    assert_ok(r);
    assert_hget(id, "state", "idle");
    assert_int_equal(Rint("EXISTS tt:demo:stop:%s", id), 0);
    line = Rstr("LINDEX tt:demo:activity:%s 0", id);
    assert_string_equal(line, "\xe2\x96\xb6\xef\xb8\x8f Resumed");
    free(line);
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_resumed");
    assert_non_null(strstr(data, "\"old_state\":\"Paused\",\"new_state\":\"Idle\""));
    free(type);
    free(data);
    run_free(r);

    long long events = Rint("XLEN tt:demo:events");
    r = execf("resume", "\"agent\":\"pauser\"");
    assert_error(r, "invalid_state");
    assert_string_equal(json_string_value(json_object_get(json_object_get(r->doc, "error"),
                                                          "message")),
                        "agent pauser is Idle, not Paused");
    run_free(r);
    set_state(id, "error");
    r = execf("interrupt", "\"agent\":\"pauser\"");
    assert_error(r, "invalid_state");
    run_free(r);
    assert_hget(id, "state", "error");
    assert_int_equal(Rint("XLEN tt:demo:events"), events); /* refusals emit nothing */
}

static void test_close(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("closer", id);
    set_state(id, "idle");
    run_t *r = execf("close", "\"agent\":\"closer\"");
    assert_ok(r);
    assert_hget(id, "state", "draining");
    assert_int_equal(Rint("EXISTS tt:demo:stop:%s", id), 1);
    char *line = Rstr("LINDEX tt:demo:activity:%s 0", id);
    assert_string_equal(line, "\xf0\x9f\x94\xbb Closing (draining then stop)");
    free(line);
    char *type, *data;
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_stopped");
    assert_non_null(strstr(data, "\"old_state\":\"Idle\",\"new_state\":\"Draining\","
                                 "\"message\":\"Agent closing (draining then stop)\""));
    free(type);
    free(data);
    run_free(r);
    set_state(id, "stopped");
    r = execf("close", "\"agent\":\"closer\"");
    assert_error(r, "invalid_state");
    run_free(r);
}

static void test_list_status_and_scope(void **state) {
    (void)state;
    char a[TTB_UUID_BUFSZ], b[TTB_UUID_BUFSZ];
    spawn("alpha", a);
    spawn("beta", b);
    set_state(b, "stopped");
    const char *task = "11111111-2222-4333-8444-555555555555";
    freeReplyObject(R("HSET tt:demo:task:%s id %s description %s state running created_at "
                      "2026-01-01T00:00:00+00:00 updated_at 2026-01-01T00:00:00+00:00 tags []",
                      task, task, "Fix the build"));
    freeReplyObject(R("HSET tt:demo:agent:%s current_task %s", a, task));
    freeReplyObject(R("RPUSH tt:demo:inbox:%s m1 m2", a));
    freeReplyObject(R("RPUSH tt:demo:urgent:%s u1", a));

    run_t *r = execf("list", "%s", "");
    assert_ok(r);
    json_t *agents = res(r, "agents");
    assert_int_equal(json_array_size(agents), 2);
    json_t *first = json_array_get(agents, 0); /* oldest first */
    assert_string_equal(json_string_value(json_object_get(first, "name")), "alpha");
    assert_int_equal(json_integer_value(json_object_get(first, "inbox_len")), 2);
    assert_int_equal(json_integer_value(json_object_get(first, "urgent_len")), 1);
    assert_string_equal(json_string_value(json_object_get(first, "current_scope")), "Fix the build");
    assert_true(json_is_null(json_object_get(json_array_get(agents, 1), "current_scope")));
    run_free(r);

    r = execf("list_open", "%s", "");
    assert_int_equal(json_array_size(res(r, "agents")), 1);
    run_free(r);

    r = execf("status", "%s", "");
    assert_ok(r);
    assert_string_equal(json_string_value(res(r, "town")), "demo");
    assert_string_equal(json_string_value(res(r, "redis_url")), "redis://:****@127.0.0.1:1");
    assert_int_equal(json_integer_value(res(r, "agent_count")), 2);
    run_free(r);

    r = exec_json("{\"id\":\"other-1\",\"town\":\"other\",\"op\":\"list\"}");
    assert_int_equal(json_array_size(res(r, "agents")), 0); /* towns do not mix */
    run_free(r);
}

static void test_stop_all_and_prune(void **state) {
    (void)state;
    char a[TTB_UUID_BUFSZ], b[TTB_UUID_BUFSZ], c[TTB_UUID_BUFSZ];
    spawn("one", a);
    spawn("two", b);
    spawn("three", c);
    set_state(c, "error");
    run_t *r = execf("stop_all", "%s", "");
    assert_ok(r);
    assert_int_equal(json_array_size(res(r, "stopped")), 2);
    run_free(r);
    assert_hget(a, "state", "stopped");
    assert_hget(b, "state", "stopped");
    assert_hget(c, "state", "error");

    set_state(a, "idle");
    freeReplyObject(R("RPUSH tt:demo:inbox:%s m", b));
    r = execf("prune", "%s", "");
    assert_ok(r);
    assert_int_equal(json_array_size(res(r, "removed")), 2);
    run_free(r);
    assert_int_equal(Rint("EXISTS tt:demo:agent:%s tt:demo:inbox:%s tt:demo:stop:%s "
                          "tt:demo:activity:%s",
                          b, b, b, b),
                     0);
    assert_int_equal(Rint("EXISTS tt:demo:agent:%s", a), 1);
    char *type, *data;
    last_event("tt:demo:events", &type, &data);
    assert_string_equal(type, "agent_state_changed");
    assert_non_null(strstr(data, "\"new_state\":\"Removed\""));
    free(type);
    free(data);

    r = execf("prune", "\"all\":true");
    assert_int_equal(json_array_size(res(r, "removed")), 1);
    run_free(r);
    assert_int_equal(Rint("EXISTS tt:demo:agent:%s", a), 0);
}

static void test_wait(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("waiter", id);
    run_t *r = execf("wait", "\"agent\":\"waiter\",\"timeout_ms\":0");
    assert_ok(r);
    assert_true(json_is_true(res(r, "timed_out")));
    run_free(r);

    r = execf("wait", "\"agent\":\"waiter\",\"timeout_ms\":60000");
    assert_true(r->out.pending);
    assert_string_equal(r->out.agent_id, id);
    int64_t deadline = r->out.deadline_ms;

    /* A redelivered wait (a restarted bridge) keeps the first deadline. */
    ttb_command_t again;
    ttb_outcome_t out2;
    char json[256], err[128];
    snprintf(json, sizeof(json),
             "{\"id\":\"%s\",\"op\":\"wait\",\"args\":{\"agent\":\"waiter\",\"timeout_ms\":60000}}",
             r->cmd.id);
    assert_int_equal(ttb_command_parse(json, strlen(json), &policy, &again, err, sizeof(err)), 0);
    assert_int_equal(ttb_service_execute(svc, &again, 1, &out2), 0);
    assert_true(out2.pending);
    assert_true(out2.deadline_ms == deadline);
    assert_int_equal(Rint("HEXISTS ttb:demo:waits %s", r->cmd.id), 1);

    const ttb_command_t *cmds[1] = {&r->cmd};
    ttb_outcome_t *outs[1] = {&r->out};
    assert_int_equal(ttb_service_check_waits(svc, cmds, outs, 1, deadline - 1000), 0);
    assert_true(r->out.pending);
    set_state(id, "stopped");
    assert_int_equal(ttb_service_check_waits(svc, cmds, outs, 1, deadline - 1000), 0);
    assert_false(r->out.pending);
    run_load(r);
    assert_false(json_is_true(res(r, "timed_out")));
    assert_string_equal(agent_field(r, "state"), "stopped");

    assert_int_equal(Rint("HEXISTS ttb:demo:waits %s", r->cmd.id), 0); /* answered: gone */

    /* Once finished, the redelivered wait answers with the same bytes. */
    ttb_outcome_clear(&out2);
    assert_int_equal(ttb_service_execute(svc, &again, 1, &out2), 0);
    assert_true(out2.replayed);
    assert_int_equal(out2.record_len, r->out.record_len);
    assert_memory_equal(out2.record, r->out.record, out2.record_len);
    ttb_outcome_clear(&out2);
    ttb_command_clear(&again);
    run_free(r);

    /* Timeout reached on a re-check. */
    set_state(id, "idle");
    r = execf("wait", "\"agent\":\"%s\",\"timeout_ms\":5000", id);
    assert_true(r->out.pending);
    cmds[0] = &r->cmd;
    outs[0] = &r->out;
    assert_int_equal(ttb_service_check_waits(svc, cmds, outs, 1, r->out.deadline_ms), 0);
    assert_false(r->out.pending);
    run_load(r);
    assert_true(json_is_true(res(r, "timed_out")));
    run_free(r);

    r = execf("wait", "\"agent\":\"ghost\"");
    assert_error(r, "agent_not_found");
    run_free(r);
}

static void write_task(const char *id, const char *agent, const char *state, const char *completed) {
    freeReplyObject(R("HSET tt:demo:task:%s id %s description %s state %s created_at "
                      "2026-01-01T00:00:00+00:00 updated_at 2026-01-01T00:00:00+00:00 tags "
                      "[\"x\"] assigned_to %s",
                      id, id, "task", state, agent));
    if (completed)
        freeReplyObject(R("HSET tt:demo:task:%s completed_at %s result done-%s", id, completed, id));
}

static void test_get_result(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ], other[TTB_UUID_BUFSZ];
    spawn("doer", id);
    spawn("other", other);
    run_t *r = execf("get_result", "\"agent\":\"doer\"");
    assert_ok(r);
    assert_true(json_is_null(res(r, "task")));
    run_free(r);

    write_task("aaaaaaaa-0000-4000-8000-000000000001", id, "completed", "2026-02-01T00:00:00+00:00");
    write_task("aaaaaaaa-0000-4000-8000-000000000002", id, "completed", "2026-03-01T05:00:00+05:00");
    write_task("aaaaaaaa-0000-4000-8000-000000000003", id, "failed", "2026-04-01T00:00:00+00:00");
    write_task("aaaaaaaa-0000-4000-8000-000000000004", other, "completed",
               "2026-05-01T00:00:00+00:00");
    r = execf("get_result", "\"agent\":\"%s\"", id);
    assert_ok(r);
    json_t *task = res(r, "task");
    assert_string_equal(json_string_value(json_object_get(task, "id")),
                        "aaaaaaaa-0000-4000-8000-000000000002");
    assert_string_equal(json_string_value(json_object_get(task, "completed_at")),
                        "2026-03-01T00:00:00Z");
    assert_string_equal(json_string_value(json_object_get(task, "result")),
                        "done-aaaaaaaa-0000-4000-8000-000000000002");
    run_free(r);

    r = execf("get_result", "\"agent\":\"00000000-0000-4000-8000-0000000000ff\"");
    assert_error(r, "agent_not_found");
    run_free(r);
}

static void test_references(void **state) {
    (void)state;
    run_t *s1 = execf("spawn", "\"name\":\"twin\",\"nickname\":\"Ann\",\"role_id\":\"reviewer\"");
    run_t *s2 = execf("spawn", "\"name\":\"twin2\",\"nickname\":\"Ann\"");
    char id[TTB_UUID_BUFSZ];
    snprintf(id, sizeof(id), "%s", agent_field(s1, "id"));

    run_t *r = execf("interrupt", "\"agent\":\"ann\"");
    assert_error(r, "ambiguous_agent");
    const char *msg = json_string_value(json_object_get(json_object_get(r->doc, "error"), "message"));
    assert_non_null(strstr(msg, "Ann [reviewer] ("));
    assert_non_null(strstr(msg, "Ann [twin2] ("));
    run_free(r);

    r = execf("interrupt", "\"agent\":\"ann [REVIEWER]\"");
    assert_ok(r);
    assert_string_equal(agent_field(r, "id"), id);
    run_free(r);

    char upper[64];
    snprintf(upper, sizeof(upper), "  %s ", id);
    for (char *p = upper; *p; p++)
        if (*p >= 'a' && *p <= 'f') *p = (char)(*p - 32);
    r = execf("resume", "\"agent\":\"%s\"", upper);
    assert_ok(r);
    run_free(r);

    char shortid[5];
    memcpy(shortid, id, 4);
    shortid[4] = '\0';
    /* The short id resolves unless another agent shares it (then: ambiguous). */
    r = execf("interrupt", "\"agent\":\"%s\"", shortid);
    if (strncmp(agent_field(s2, "id"), id, 4) == 0) assert_error(r, "ambiguous_agent");
    else assert_string_equal(agent_field(r, "id"), id);
    run_free(r);
    run_free(s1);
    run_free(s2);
}

static void test_idempotent_replay(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("idem", id);
    const char *json = "{\"id\":\"once\",\"op\":\"interrupt\",\"args\":{\"agent\":\"idem\"}}";
    run_t *first = exec_json(json);
    assert_ok(first);
    long long events = Rint("XLEN tt:demo:events");
    long long activity = Rint("LLEN tt:demo:activity:%s", id);
    set_state(id, "idle"); /* even if the world moved on, the answer stays */
    run_t *second = exec_json(json);
    assert_true(second->out.replayed);
    assert_int_equal(second->out.record_len, first->out.record_len);
    assert_memory_equal(second->out.record, first->out.record, first->out.record_len);
    assert_int_equal(Rint("XLEN tt:demo:events"), events);
    assert_int_equal(Rint("LLEN tt:demo:activity:%s", id), activity);
    assert_hget(id, "state", "idle");
    /* Kept for the retention (7 days), in the town's record hash, not in
     * a key of its own: SCANs of the town stay fast. */
    char *stored = Rstr("HGET ttb:demo:cmds once");
    assert_non_null(stored);
    free(stored);
    char *expiry = Rstr("ZSCORE ttb:demo:cmds:expiry once");
    assert_non_null(expiry);
    long long left = atoll(expiry) - (long long)time(NULL);
    free(expiry);
    assert_true(left >= 7 * 24 * 3600 - 10 && left <= 7 * 24 * 3600);
    assert_int_equal(Rint("EXISTS ttb:demo:cmd:once"), 0);
    run_free(first);
    run_free(second);

    /* Errors and reads are remembered as well. */
    const char *bad = "{\"id\":\"err-once\",\"op\":\"resume\",\"args\":{\"agent\":\"idem\"}}";
    first = exec_json(bad);
    set_state(id, "paused");
    second = exec_json(bad);
    assert_memory_equal(second->out.record, first->out.record, first->out.record_len);
    assert_string_equal(err_code(second), "invalid_state");
    run_free(first);
    run_free(second);
    const char *list = "{\"id\":\"list-once\",\"op\":\"list\"}";
    first = exec_json(list);
    set_state(id, "working");
    second = exec_json(list);
    assert_true(second->out.replayed);
    assert_memory_equal(second->out.record, first->out.record, first->out.record_len);
    run_free(first);
    run_free(second);
    /* The same id in another town is another command. */
    run_t *other = exec_json("{\"id\":\"once\",\"town\":\"other\",\"op\":\"list\"}");
    assert_false(other->out.replayed);
    assert_ok(other);
    run_free(other);
}

static void test_event_streams_are_trimmed(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("busy", id);
    set_state(id, "idle");
    enum { N = 1600 };
    ttb_command_t *cmds = calloc(N, sizeof(*cmds));
    ttb_outcome_t *out = calloc(N, sizeof(*out));
    char err[128], json[256];
    for (int i = 0; i < N; i++) {
        snprintf(json, sizeof(json), "{\"id\":\"t-%d\",\"op\":\"%s\",\"args\":{\"agent\":\"%s\"}}", i,
                 i % 2 ? "resume" : "interrupt", id);
        assert_int_equal(ttb_command_parse(json, strlen(json), &policy, &cmds[i], err, sizeof(err)),
                         0);
    }
    assert_int_equal(ttb_service_execute(svc, cmds, N, out), 0);
    for (int i = 0; i < N; i++) {
        assert_non_null(strstr(out[i].record, "\"ok\":true"));
        ttb_outcome_clear(&out[i]);
        ttb_command_clear(&cmds[i]);
    }
    free(cmds);
    free(out);
    long long town_len = Rint("XLEN tt:demo:events");
    long long agent_len = Rint("XLEN tt:demo:events:agent:%s", id);
    /* MAXLEN ~ keeps at least n and trims whole nodes: well below what was added. */
    assert_true(town_len >= 1000 && town_len < 1200);
    assert_true(agent_len >= 100 && agent_len < 300);
    assert_int_equal(Rint("LLEN tt:demo:activity:%s", id), 10);
}

/* Calls of one command since the last CONFIG RESETSTAT, as Redis counts them. */
static long long calls_of(const char *command) {
    char *stats = Rstr("INFO commandstats"), want[64];
    snprintf(want, sizeof(want), "cmdstat_%s:calls=", command);
    const char *at = strstr(stats, want);
    long long n = at ? strtoll(at + strlen(want), NULL, 10) : 0;
    free(stats);
    return n;
}

/* The service as the bridge runs it: told of every change to an agent (by
 * keyspace notifications there; by the test here, for what it writes). */
static int live(void **state) {
    flush(state);
    ttb_service_set_live(svc, true, true);
    return 0;
}

static int not_live(void **state) {
    (void)state;
    ttb_service_set_live(svc, false, false);
    return 0;
}

static void test_listing_reads_only_its_page(void **state) {
    (void)state;
    enum { N = 10000 };
    static char ids[N][TTB_UUID_BUFSZ];
    int open = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ttb_uuid_v4(ids[i]), 0);
        redisAppendCommand(rc,
                           "HSET tt:demo:agent:%s id %s name w-%d agent_type worker state %s cli "
                           "claude created_at 2026-11-24T06:%02d:%02d.%03d+00:00 spawn_mode fresh",
                           ids[i], ids[i], i, i % 3 ? "idle" : "stopped", i / 6000,
                           i / 100 % 60, i % 100);
        redisAppendCommand(rc, "RPUSH tt:demo:inbox:%s hello", ids[i]);
        open += i % 3 != 0;
    }
    for (int i = 0; i < 2 * N; i++) {
        redisReply *r;
        assert_int_equal(redisGetReply(rc, (void **)&r), REDIS_OK);
        freeReplyObject(r);
    }
    /* The first use reads the whole town, in few round trips, without KEYS. */
    uint64_t before = ttb_store_round_trips(store);
    run_t *r = execf("list", "\"limit\":1");
    uint64_t trips = ttb_store_round_trips(store) - before;
    assert_ok(r);
    run_free(r);
    print_message("first use of a %d-agent town: %llu round trips\n", N, (unsigned long long)trips);
    assert_true(trips <= 40); /* 20,000 keys at COUNT 1000: ~20 SCAN pages */
    assert_int_equal(calls_of("keys"), 0);

    /* Then a page costs what is on it: one HGETALL and two LLENs an agent. */
    freeReplyObject(R("CONFIG RESETSTAT"));
    before = ttb_store_round_trips(store);
    r = execf("list_open", "\"limit\":50");
    trips = ttb_store_round_trips(store) - before;
    assert_ok(r);
    assert_int_equal(json_array_size(res(r, "agents")), 50);
    assert_string_equal(json_string_value(json_object_get(json_array_get(res(r, "agents"), 0),
                                                          "name")),
                        "w-1");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(res(r, "agents"), 0),
                                                        "inbox_len")),
                     1);
    assert_true(json_is_true(res(r, "more")));
    run_free(r);
    assert_int_equal(calls_of("hgetall"), 50);
    assert_int_equal(calls_of("llen"), 100);
    assert_int_equal(calls_of("scan"), 0);
    assert_true(trips <= 3); /* replay check, the page, storing its record */

    /* Paging through reads each open agent once, oldest first. */
    freeReplyObject(R("CONFIG RESETSTAT"));
    char after[128] = "";
    int seen = 0, expect = 1;
    for (int page = 0; page < 100; page++) {
        char args[256];
        snprintf(args, sizeof(args), "\"limit\":1000%s%s%s", after[0] ? ",\"after\":\"" : "",
                 after, after[0] ? "\"" : "");
        r = execf("list_open", "%s", args);
        assert_ok(r);
        json_t *agents = res(r, "agents");
        for (size_t k = 0; k < json_array_size(agents); k++, seen++, expect++) {
            if (expect % 3 == 0) expect++;
            char name[32];
            snprintf(name, sizeof(name), "w-%d", expect);
            assert_string_equal(json_string_value(json_object_get(json_array_get(agents, k), "name")),
                                name);
        }
        bool more = json_is_true(res(r, "more"));
        if (more) snprintf(after, sizeof(after), "%s", json_string_value(res(r, "next")));
        run_free(r);
        if (!more) break;
    }
    assert_int_equal(seen, open);
    assert_int_equal(calls_of("hgetall"), open);

    /* Another tool restarts a stopped agent; its notification reaches the
     * service, and the next listing has it. */
    freeReplyObject(R("HSET tt:demo:agent:%s state idle", ids[0]));
    ttb_service_agent_touched(svc, "demo", ids[0], strlen(ids[0]));
    r = execf("list_open", "\"limit\":1");
    assert_string_equal(json_string_value(json_object_get(json_array_get(res(r, "agents"), 0),
                                                          "name")),
                        "w-0");
    run_free(r);

    r = execf("status", "\"limit\":2");
    assert_int_equal(json_integer_value(res(r, "agent_count")), N);
    assert_int_equal(json_array_size(res(r, "agents")), 2);
    run_free(r);
}

/* Runs @p n commands as one batch; their records go to @p docs. */
static void exec_batch(const char *const *jsons, size_t n, json_t **docs) {
    ttb_command_t cmds[16];
    ttb_outcome_t out[16];
    char err[256];
    assert_true(n <= 16);
    for (size_t i = 0; i < n; i++)
        if (ttb_command_parse(jsons[i], strlen(jsons[i]), &policy, &cmds[i], err, sizeof(err)))
            fail_msg("parse %s: %s", jsons[i], err);
    assert_int_equal(ttb_service_execute(svc, cmds, n, out), 0);
    for (size_t i = 0; i < n; i++) {
        docs[i] = json_loadb(out[i].record, out[i].record_len, 0, NULL);
        assert_non_null(docs[i]);
        ttb_outcome_clear(&out[i]);
        ttb_command_clear(&cmds[i]);
    }
}

/* The names of a listing's agents (or of a mutation's member), joined by ",". */
static const char *names_in(json_t *doc, const char *member, char *buf, size_t size) {
    json_t *agents = json_object_get(json_object_get(doc, "result"), member);
    size_t used = 0;
    buf[0] = '\0';
    for (size_t k = 0; k < json_array_size(agents); k++)
        used += (size_t)snprintf(buf + used, size - used, "%s%s", k ? "," : "",
                                 json_string_value(json_object_get(json_array_get(agents, k),
                                                                   "name")));
    return buf;
}

/* A round's consecutive changes of one town go to Redis as one script call;
 * each still gets its own outcome, and one that finds its agent changed
 * (STALE) is done over without disturbing the others. */
static void test_changes_of_a_round_share_one_call(void **state) {
    (void)state;
    char a[TTB_UUID_BUFSZ], b[TTB_UUID_BUFSZ], c[TTB_UUID_BUFSZ];
    spawn("a", a);
    spawn("b", b);
    spawn("c", c);
    /* Renamed by another tool; the directory has not heard of it. */
    freeReplyObject(R("HSET tt:demo:agent:%s name b2", b));
    freeReplyObject(R("CONFIG RESETSTAT"));
    const char *batch[] = {
        "{\"id\":\"g-1\",\"op\":\"interrupt\",\"args\":{\"agent\":\"a\"}}",
        "{\"id\":\"g-2\",\"op\":\"interrupt\",\"args\":{\"agent\":\"b\"}}",
        "{\"id\":\"g-3\",\"op\":\"interrupt\",\"args\":{\"agent\":\"nobody\"}}",
        "{\"id\":\"g-4\",\"op\":\"interrupt\",\"args\":{\"agent\":\"c\"}}",
        "{\"id\":\"g-5\",\"op\":\"list_open\"}",
        "{\"id\":\"g-6\",\"op\":\"resume\",\"args\":{\"agent\":\"a\"}}",
    };
    enum { NB = sizeof(batch) / sizeof(batch[0]) };
    json_t *docs[NB];
    exec_batch(batch, NB, docs);
    assert_string_equal(json_string_value(json_object_get(
                            json_object_get(json_object_get(docs[0], "result"), "agent"), "state")),
                        "paused");
    /* b's name went stale: read again, "b" names nobody now. */
    assert_string_equal(json_string_value(json_object_get(json_object_get(docs[1], "error"),
                                                          "code")),
                        "agent_not_found");
    assert_string_equal(json_string_value(json_object_get(json_object_get(docs[2], "error"),
                                                          "code")),
                        "agent_not_found");
    assert_true(json_is_true(json_object_get(docs[3], "ok")));
    char buf[64];
    assert_string_equal(names_in(docs[4], "agents", buf, sizeof(buf)), "a,b2,c");
    assert_true(json_is_true(json_object_get(docs[5], "ok")));
    assert_hget(a, "state", "idle");
    assert_hget(b, "state", "starting");
    assert_hget(c, "state", "paused");
    /* Calls: the replay check; a, b and c in one; a's resume after the
     * listing in another; b again after the re-read; the records. One call
     * per change would make seven. */
    long long calls = calls_of("evalsha");
    print_message("a batch of %d with 5 changes: %lld script calls\n", NB, calls);
    assert_true(calls <= 5);
    for (size_t i = 0; i < NB; i++) json_decref(docs[i]);
}

/* get_result of the agent "doer" answers task @p want. */
static void assert_doer_result(const char *want) {
    run_t *r = execf("get_result", "\"agent\":\"doer\"");
    assert_ok(r);
    assert_string_equal(json_string_value(json_object_get(res(r, "task"), "id")), want);
    run_free(r);
}

/* get_result keeps each agent's latest completed task between batches, so
 * it reads the agent and that task, not the town's tasks; a notified task
 * has them read again, and a task that changed unnoticed is caught when it
 * is read. */
static void test_get_result_reads_the_town_once(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("doer", id);
    write_task("bbbbbbbb-0000-4000-8000-000000000001", id, "completed", "2026-02-01T00:00:00+00:00");
    write_task("bbbbbbbb-0000-4000-8000-000000000002", id, "completed", "2026-03-01T00:00:00+00:00");
    assert_doer_result("bbbbbbbb-0000-4000-8000-000000000002");

    freeReplyObject(R("CONFIG RESETSTAT"));
    assert_doer_result("bbbbbbbb-0000-4000-8000-000000000002");
    assert_int_equal(calls_of("scan"), 0);
    assert_int_equal(calls_of("hgetall"), 2); /* the agent and its task */

    /* A newer result, notified: the town's tasks are read again. */
    write_task("bbbbbbbb-0000-4000-8000-000000000003", id, "completed", "2026-04-01T00:00:00+00:00");
    ttb_service_task_touched(svc, "demo");
    assert_doer_result("bbbbbbbb-0000-4000-8000-000000000003");

    /* That task reopened by a tool whose notification is not in yet: the
     * read shows it, the tasks are read again, the answer is the one before. */
    freeReplyObject(R("HSET tt:demo:task:bbbbbbbb-0000-4000-8000-000000000003 state running"));
    assert_doer_result("bbbbbbbb-0000-4000-8000-000000000002");
    /* And deleted, unnoticed too. */
    freeReplyObject(R("DEL tt:demo:task:bbbbbbbb-0000-4000-8000-000000000002"));
    assert_doer_result("bbbbbbbb-0000-4000-8000-000000000001");
}

/* Listings in a batch see exactly what the commands before them did, though
 * they choose their page in the directory, which learns of those changes
 * only later; and they do not split the batch into rounds. */
static void test_listings_see_the_batch_before_them(void **state) {
    (void)state;
    char a[TTB_UUID_BUFSZ], b[TTB_UUID_BUFSZ], c[TTB_UUID_BUFSZ];
    spawn("a", a);
    spawn("b", b);
    spawn("c", c);
    set_state(c, "stopped");
    ttb_service_agent_touched(svc, "demo", c, strlen(c));
    const char *batch[] = {
        "{\"id\":\"s-1\",\"op\":\"kill\",\"args\":{\"agent\":\"a\"}}",
        "{\"id\":\"s-2\",\"op\":\"list_open\"}",
        "{\"id\":\"s-3\",\"op\":\"restart\",\"args\":{\"agent\":\"c\"}}",
        "{\"id\":\"s-4\",\"op\":\"list_open\"}",
        "{\"id\":\"s-5\",\"op\":\"spawn\",\"args\":{\"name\":\"B\"}}",
        "{\"id\":\"s-6\",\"op\":\"spawn\",\"args\":{\"name\":\"d\"}}",
        "{\"id\":\"s-7\",\"op\":\"status\"}",
        "{\"id\":\"s-8\",\"op\":\"stop_all\",\"args\":{\"limit\":2}}",
        "{\"id\":\"s-9\",\"op\":\"list_open\"}",
        "{\"id\":\"s-10\",\"op\":\"prune\"}",
        "{\"id\":\"s-11\",\"op\":\"list\"}",
    };
    enum { NB = sizeof(batch) / sizeof(batch[0]) };
    json_t *docs[NB];
    char buf[256];
    uint64_t before = ttb_store_round_trips(store);
    exec_batch(batch, NB, docs);
    uint64_t trips = ttb_store_round_trips(store) - before;
    assert_string_equal(names_in(docs[1], "agents", buf, sizeof(buf)), "b");
    assert_string_equal(names_in(docs[3], "agents", buf, sizeof(buf)), "b,c");
    assert_string_equal(json_string_value(json_object_get(json_object_get(docs[4], "error"),
                                                          "code")),
                        "name_conflict");
    assert_string_equal(names_in(docs[6], "agents", buf, sizeof(buf)), "a,b,c,d");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(docs[6], "result"),
                                                        "agent_count")),
                     4); /* the spawn that failed is not counted */
    /* The page is the first two agents stop_all would take as far as the
     * directory knows (a's kill is not known yet): a, already stopped, is
     * left alone, and "more" says to go on. */
    assert_string_equal(names_in(docs[7], "stopped", buf, sizeof(buf)), "b");
    assert_true(json_is_true(json_object_get(json_object_get(docs[7], "result"), "more")));
    assert_string_equal(names_in(docs[8], "agents", buf, sizeof(buf)), "c,d");
    assert_string_equal(names_in(docs[9], "removed", buf, sizeof(buf)), "a,b");
    assert_string_equal(names_in(docs[10], "agents", buf, sizeof(buf)), "c,d");
    /* Replay check; the round up to the prune (c re-read, the pipeline, the
     * records); the round after it (the town read again, since the prune
     * removed agents: SCAN and its reads, the pipeline, the records). Were
     * listings to end rounds, each of the seven would add three or more. */
    print_message("batch of %d: %llu round trips\n", NB, (unsigned long long)trips);
    assert_true(trips <= 8);
    for (size_t i = 0; i < NB; i++) json_decref(docs[i]);

    /* The next batch, before any notification of those writes: the
     * directory reads the agents the bridge changed again first. */
    const char *next[] = {"{\"id\":\"s-12\",\"op\":\"list_open\"}",
                          "{\"id\":\"s-13\",\"op\":\"stop_all\"}",
                          "{\"id\":\"s-14\",\"op\":\"list_open\"}"};
    exec_batch(next, 3, docs);
    assert_string_equal(names_in(docs[0], "agents", buf, sizeof(buf)), "c,d");
    assert_string_equal(names_in(docs[1], "stopped", buf, sizeof(buf)), "c,d");
    assert_string_equal(names_in(docs[2], "agents", buf, sizeof(buf)), "");
    for (size_t i = 0; i < 3; i++) json_decref(docs[i]);
}

/* Two clients race interrupt/resume on one agent. Each script runs atomically,
 * so the event history must form one unbroken chain of legal transitions. */
typedef struct racer {
    int which;
    char id[TTB_UUID_BUFSZ];
} racer_t;

static void *race(void *arg) {
    racer_t *rc_ = arg;
    ttb_store_t *s = new_store();
    ttb_service_config_t cfg = {.redis_url_redacted = ""};
    ttb_service_t *sv = ttb_service_new(s, &cfg);
    for (int i = 0; i < 300; i++) {
        char json[256], err[128];
        ttb_command_t cmd;
        ttb_outcome_t out;
        snprintf(json, sizeof(json), "{\"id\":\"r%d-%d\",\"op\":\"%s\",\"args\":{\"agent\":\"%s\"}}",
                 rc_->which, i, (i + rc_->which) % 2 ? "resume" : "interrupt", rc_->id);
        if (ttb_command_parse(json, strlen(json), &policy, &cmd, err, sizeof(err))) abort();
        if (ttb_service_execute(sv, &cmd, 1, &out)) abort();
        ttb_outcome_clear(&out);
        ttb_command_clear(&cmd);
    }
    ttb_service_free(sv);
    ttb_store_free(s);
    return NULL;
}

static void test_racing_clients_keep_a_legal_history(void **state) {
    (void)state;
    racer_t a = {.which = 0}, b = {.which = 1};
    spawn("contested", a.id);
    set_state(a.id, "idle");
    memcpy(b.id, a.id, sizeof(b.id));
    pthread_t ta, tb;
    pthread_create(&ta, NULL, race, &a);
    pthread_create(&tb, NULL, race, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);

    char stream[128];
    snprintf(stream, sizeof(stream), "tt:demo:events:agent:%s", a.id);
    redisReply *r = R("XRANGE tt:demo:events - +");
    char expect_old[16] = "";
    size_t transitions = 0;
    for (size_t i = 0; i < r->elements; i++) {
        const char *data = r->element[i]->element[1]->element[3]->str;
        json_t *ev = json_loads(data, 0, NULL);
        const char *type = json_string_value(json_object_get(ev, "event_type"));
        if (strcmp(type, "agent_spawned") != 0 && strcmp(type, "agent_state_changed") != 0) {
            const char *old = json_string_value(json_object_get(ev, "old_state"));
            const char *new = json_string_value(json_object_get(ev, "new_state"));
            if (expect_old[0]) assert_string_equal(old, expect_old);
            if (strcmp(type, "agent_interrupted") == 0) assert_string_equal(new, "Paused");
            else assert_string_equal(old, "Paused");
            snprintf(expect_old, sizeof(expect_old), "%s", new);
            transitions++;
        }
        json_decref(ev);
    }
    freeReplyObject(r);
    assert_true(transitions > 0);
    char *final = hget(a.id, "state");
    assert_string_equal(final, strcmp(expect_old, "Paused") == 0 ? "paused" : "idle");
    free(final);
}

/* Two bridges spawning the same names at the same moment: each name is
 * granted once, however the two interleave. */
static int spawn_oks[2];

static void *spawn_race(void *arg) {
    int which = *(int *)arg;
    ttb_store_t *s = new_store();
    ttb_service_config_t cfg = {.redis_url_redacted = ""};
    ttb_service_t *sv = ttb_service_new(s, &cfg);
    for (int i = 0; i < 100; i++) {
        char json[256], err[128];
        ttb_command_t cmd;
        ttb_outcome_t out;
        snprintf(json, sizeof(json),
                 "{\"id\":\"s%d-%d\",\"op\":\"spawn\",\"args\":{\"name\":\"same-%d\"}}",
                 which, i, i);
        if (ttb_command_parse(json, strlen(json), &policy, &cmd, err, sizeof(err))) abort();
        if (ttb_service_execute(sv, &cmd, 1, &out)) abort();
        if (out.code == TTB_CODE_OK) spawn_oks[which]++;
        else if (out.code != TTB_CODE_NAME_CONFLICT) abort();
        ttb_outcome_clear(&out);
        ttb_command_clear(&cmd);
    }
    ttb_service_free(sv);
    ttb_store_free(s);
    return NULL;
}

static void test_racing_spawns_grant_each_name_once(void **state) {
    (void)state;
    int a = 0, b = 1;
    pthread_t ta, tb;
    pthread_create(&ta, NULL, spawn_race, &a);
    pthread_create(&tb, NULL, spawn_race, &b);
    pthread_join(ta, NULL);
    pthread_join(tb, NULL);
    assert_int_equal(spawn_oks[0] + spawn_oks[1], 100);
    run_t *r = execf("list", "%s", "");
    assert_int_equal(json_array_size(res(r, "agents")), 100);
    run_free(r);
    /* Pruned names are free again. */
    r = execf("prune", "\"all\":true");
    assert_int_equal(json_array_size(res(r, "removed")), 100);
    run_free(r);
    assert_int_equal(Rint("HLEN ttb:demo:names"), 0);
    r = execf("spawn", "\"name\":\"same-1\"");
    assert_ok(r);
    run_free(r);
}

static void test_reads_agents_tinytown_wrote(void **state) {
    (void)state;
    const char *id = "0a0b0c0d-1111-4222-8333-444455556666";
    freeReplyObject(R("HSET tt:demo:agent:%s id %s name legacy agent_type supervisor state working "
                      "cli auggie created_at 2026-11-24T06:51:00.123456789+00:00 last_heartbeat "
                      "2026-11-24T08:51:00+02:00 tasks_completed 12 rounds_completed +3 "
                      "spawn_mode resumed nickname Old role_id researcher parent_agent_id "
                      "00000000-0000-0000-0000-000000000001 extra_field kept",
                      id, id));
    freeReplyObject(R("HSET tt:demo:agent:bogus name nameless state idle"));
    freeReplyObject(R("HSET tt:demo:agent:weird id 0a0b0c0d-1111-4222-8333-444455557777 name odd "
                      "state sleeping agent_type alien spawn_mode sideways created_at yesterday"));
    run_t *r = execf("list", "%s", "");
    assert_ok(r);
    json_t *agents = res(r, "agents");
    assert_int_equal(json_array_size(agents), 2); /* the id-less hash is skipped */
    json_t *legacy = NULL, *weird = NULL;
    for (size_t i = 0; i < 2; i++) {
        json_t *a = json_array_get(agents, i);
        if (strcmp(json_string_value(json_object_get(a, "name")), "legacy") == 0) legacy = a;
        else weird = a;
    }
    assert_non_null(legacy);
    assert_non_null(weird);
    assert_string_equal(json_string_value(json_object_get(legacy, "created_at")),
                        "2026-11-24T06:51:00.123456789Z");
    assert_string_equal(json_string_value(json_object_get(legacy, "last_heartbeat")),
                        "2026-11-24T06:51:00Z");
    assert_string_equal(json_string_value(json_object_get(legacy, "last_active_at")),
                        "2026-11-24T06:51:00.123456789Z");
    assert_int_equal(json_integer_value(json_object_get(legacy, "rounds_completed")), 3);
    assert_string_equal(json_string_value(json_object_get(legacy, "agent_type")), "supervisor");
    assert_string_equal(json_string_value(json_object_get(legacy, "spawn_mode")), "resumed");
    assert_string_equal(json_string_value(json_object_get(weird, "state")), "starting");
    assert_string_equal(json_string_value(json_object_get(weird, "agent_type")), "worker");
    assert_string_equal(json_string_value(json_object_get(weird, "spawn_mode")), "fresh");
    run_free(r);

    /* A change by the bridge touches only the fields it changes. */
    r = execf("interrupt", "\"agent\":\"legacy\"");
    assert_ok(r);
    run_free(r);
    assert_hget(id, "extra_field", "kept");
    assert_hget(id, "last_heartbeat", "2026-11-24T08:51:00+02:00");
    assert_hget(id, "state", "paused");
}

static void test_noscript_is_recovered(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("flushed", id);
    freeReplyObject(R("SCRIPT FLUSH"));
    run_t *r = execf("interrupt", "\"agent\":\"flushed\"");
    assert_ok(r);
    assert_hget(id, "state", "paused");
    run_free(r);
}

/* Scripts flushed, and reloading them refused (here by the ACL; in the soak,
 * a CLIENT KILL between the NOSCRIPT and the reload): the batch fails as a
 * whole, without an answer and without freeing the NOSCRIPT reply twice
 * (found by the soak under AddressSanitizer), and works once reloads do. */
static void test_noscript_with_reload_refused_fails_the_batch_cleanly(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("reloaded", id);
    freeReplyObject(R("ACL SETUSER default -script|load"));
    freeReplyObject(R("SCRIPT FLUSH"));
    run_t *r = calloc(1, sizeof(*r));
    assert_non_null(r);
    run_parse(r, "{\"id\":\"after-flush\",\"op\":\"interrupt\",\"args\":{\"agent\":\"reloaded\"}}");
    assert_int_not_equal(ttb_service_execute(svc, &r->cmd, 1, &r->out), 0);
    assert_null(r->out.record);
    assert_hget(id, "state", "starting");
    freeReplyObject(R("ACL SETUSER default +script|load"));
    char err[256];
    if (!ttb_store_connected(store)) assert_int_equal(ttb_store_connect(store, err, sizeof(err)), 0);
    assert_int_equal(ttb_store_load_scripts(store), 0);
    assert_int_equal(ttb_service_execute(svc, &r->cmd, 1, &r->out), 0);
    run_load(r);
    assert_ok(r);
    assert_hget(id, "state", "paused");
    run_free(r);
}

static void test_redis_outage_is_an_io_error_not_an_answer(void **state) {
    (void)state;
    char id[TTB_UUID_BUFSZ];
    spawn("survivor", id);
    uint64_t reconnects = ttb_store_reconnects(store);
    redisFree(rc);
    assert_int_equal(ttb_test_redis_pause(&server), 0);
    run_t *r = calloc(1, sizeof(*r));
    run_parse(r, "{\"id\":\"during-outage\",\"op\":\"list\"}");
    assert_int_equal(ttb_service_execute(svc, &r->cmd, 1, &r->out), TTB_ERR_IO);
    assert_null(r->out.record);
    assert_false(ttb_store_connected(store));
    char err[256];
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), TTB_ERR_IO);
    assert_int_equal(ttb_test_redis_resume(&server), 0);
    rc = redisConnect("127.0.0.1", server.port);
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), 0);
    assert_int_equal(ttb_store_reconnects(store), reconnects + 1);
    assert_int_equal(ttb_service_execute(svc, &r->cmd, 1, &r->out), 0);
    run_load(r);
    assert_ok(r);
    run_free(r);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_spawn_writes_what_tinytown_writes, flush),
        cmocka_unit_test_setup(test_noscript_with_reload_refused_fails_the_batch_cleanly, flush),
        cmocka_unit_test_setup(test_spawn_with_metadata_and_parent, flush),
        cmocka_unit_test_setup(test_spawn_name_conflict, flush),
        cmocka_unit_test_setup(test_batch_spawn_then_refer_by_name, flush),
        cmocka_unit_test_setup(test_kill, flush),
        cmocka_unit_test_setup(test_restart, flush),
        cmocka_unit_test_setup(test_interrupt_and_resume, flush),
        cmocka_unit_test_setup(test_close, flush),
        cmocka_unit_test_setup(test_list_status_and_scope, flush),
        cmocka_unit_test_setup(test_stop_all_and_prune, flush),
        cmocka_unit_test_setup(test_wait, flush),
        cmocka_unit_test_setup(test_get_result, flush),
        cmocka_unit_test_setup(test_references, flush),
        cmocka_unit_test_setup(test_idempotent_replay, flush),
        cmocka_unit_test_setup(test_event_streams_are_trimmed, flush),
        cmocka_unit_test_setup_teardown(test_listing_reads_only_its_page, live, not_live),
        cmocka_unit_test_setup_teardown(test_listings_see_the_batch_before_them, live, not_live),
        cmocka_unit_test_setup_teardown(test_get_result_reads_the_town_once, live, not_live),
        cmocka_unit_test_setup_teardown(test_changes_of_a_round_share_one_call, live, not_live),
        cmocka_unit_test_setup(test_racing_clients_keep_a_legal_history, flush),
        cmocka_unit_test_setup(test_racing_spawns_grant_each_name_once, flush),
        cmocka_unit_test_setup(test_reads_agents_tinytown_wrote, flush),
        cmocka_unit_test_setup(test_noscript_is_recovered, flush),
        cmocka_unit_test_setup(test_redis_outage_is_an_io_error_not_an_answer, flush),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
