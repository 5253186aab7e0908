/* SPDX-License-Identifier: MIT */
/*
 * The store against a real redis-server: connecting with and without a
 * password, db selection, pipelining and its round-trip count, scripts
 * reloaded after SCRIPT FLUSH, and the connection state after an outage.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "redis-harness.h"
#include "tinytown_bridge/error.h"
#include "tinytown_bridge/store.h"

static void test_pipeline_counts_round_trips(void **state) {
    (void)state;
    ttb_test_redis_t server;
    assert_int_equal(ttb_test_redis_start(&server, NULL), 0);
    ttb_redis_opts_t opts = {.host = "127.0.0.1", .port = server.port};
    ttb_store_t *store = ttb_store_new(&opts);
    char err[256];
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), 0);
    uint64_t base = ttb_store_round_trips(store);

    for (int i = 0; i < 500; i++) assert_int_equal(ttb_store_appendf(store, "INCR counter"), 0);
    assert_int_equal(ttb_store_owed(store), 500); /* the replies still to read */
    for (int i = 0; i < 500; i++) {
        redisReply *r;
        assert_int_equal(ttb_store_reply(store, &r), 0);
        assert_int_equal(r->type, REDIS_REPLY_INTEGER);
        assert_int_equal(r->integer, i + 1);
        freeReplyObject(r);
        assert_int_equal(ttb_store_owed(store), 500 - i - 1);
    }
    assert_int_equal(ttb_store_round_trips(store) - base, 1);

    /* Binary-safe arguments. */
    const char *argv[3] = {"SET", "bin", "a\0b"};
    size_t lens[3] = {3, 3, 3};
    assert_int_equal(ttb_store_append(store, 3, argv, lens), 0);
    assert_int_equal(ttb_store_skip(store, 1), 0);
    redisReply *r;
    assert_int_equal(ttb_store_command(store, &r, "GET bin"), 0);
    assert_int_equal(r->len, 3);
    assert_memory_equal(r->str, "a\0b", 3);
    freeReplyObject(r);

    /* Scripts survive a SCRIPT FLUSH through an explicit reload. */
    assert_int_equal(ttb_store_command(store, &r, "SCRIPT FLUSH"), 0);
    freeReplyObject(r);
    /* town, spec, times, then one change: id, op, agent, "0" and three "" */
    const char *args[11] = {"x", "0 60", "t", "t", "cmd-1", "kill",
                            "00000000-0000-4000-8000-000000000001", "0", "", "", ""};
    assert_int_equal(ttb_store_append_script(store, TTB_SCRIPT_TRANSITION, 0, 11, args, NULL), 0);
    assert_int_equal(ttb_store_reply(store, &r), 0);
    assert_true(ttb_reply_is_noscript(r));
    freeReplyObject(r);
    assert_int_equal(ttb_store_load_scripts(store), 0);
    assert_int_equal(ttb_store_append_script(store, TTB_SCRIPT_TRANSITION, 0, 11, args, NULL), 0);
    assert_int_equal(ttb_store_reply(store, &r), 0);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY); /* one reply per change */
    assert_int_equal(r->elements, 1);
    assert_non_null(strstr(r->element[0]->str, "agent_not_found"));
    freeReplyObject(r);

    /* An outage: the store says so and refuses work until reconnected. */
    assert_int_equal(ttb_test_redis_pause(&server), 0);
    assert_int_equal(ttb_store_appendf(store, "PING"), 0);
    assert_int_equal(ttb_store_command(store, &r, "PING"), TTB_ERR_IO);
    assert_false(ttb_store_connected(store));
    assert_int_equal(ttb_store_owed(store), 0); /* lost with the connection */
    assert_int_equal(ttb_store_appendf(store, "PING"), TTB_ERR_IO);
    assert_true(strlen(ttb_store_errstr(store)) > 0);
    assert_int_equal(ttb_test_redis_resume(&server), 0);
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), 0);
    assert_int_equal(ttb_store_reconnects(store), 1);
    assert_int_equal(ttb_store_command(store, &r, "PING"), 0);
    freeReplyObject(r);

    ttb_store_free(store);
    ttb_test_redis_stop(&server);
}

static void test_password_and_db(void **state) {
    (void)state;
    ttb_test_redis_t server;
    const char *const args[] = {"--requirepass", "s3cret-pw", NULL};
    assert_int_equal(ttb_test_redis_start(&server, args), 0);
    char err[256];

    ttb_redis_opts_t opts = {.host = "127.0.0.1", .port = server.port, .password = "wrong"};
    ttb_store_t *store = ttb_store_new(&opts);
    /* A refusal that retrying does not cure: the bridge stops at start on it. */
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), TTB_ERR_DENIED);
    assert_null(strstr(err, "wrong")); /* the secret is never echoed */
    ttb_store_free(store);

    opts.password = NULL;
    store = ttb_store_new(&opts);
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), TTB_ERR_DENIED); /* NOAUTH */
    ttb_store_free(store);
    /* Redis 7.0.13+ answers an unauthenticated argument over 16 KiB (a
     * script) with a protocol error instead: a refusal all the same. */
    redisContext *raw = redisConnect("127.0.0.1", server.port);
    assert_non_null(raw);
    size_t big_len = 20000;
    char *big = malloc(big_len);
    assert_non_null(big);
    memset(big, '-', big_len);
    redisReply *refused = redisCommand(raw, "SCRIPT LOAD %b", big, big_len);
    free(big);
    assert_non_null(refused);
    assert_int_equal(refused->type, REDIS_REPLY_ERROR);
    assert_true(ttb_reply_is_denied(refused));
    freeReplyObject(refused);
    redisFree(raw);

    opts.password = "s3cret-pw";
    opts.db = 3;
    store = ttb_store_new(&opts);
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), 0);
    redisReply *r;
    assert_int_equal(ttb_store_command(store, &r, "SET where db3"), 0);
    freeReplyObject(r);
    assert_int_equal(ttb_store_command(store, &r, "SELECT 0"), 0);
    freeReplyObject(r);
    assert_int_equal(ttb_store_command(store, &r, "EXISTS where"), 0);
    assert_int_equal(r->integer, 0);
    freeReplyObject(r);
    ttb_store_free(store);
    ttb_test_redis_stop(&server);
}

static void test_unreachable(void **state) {
    (void)state;
    ttb_redis_opts_t opts = {.host = "127.0.0.1", .port = 1, .connect_timeout_ms = 500};
    ttb_store_t *store = ttb_store_new(&opts);
    char err[256];
    assert_int_equal(ttb_store_connect(store, err, sizeof(err)), TTB_ERR_IO);
    assert_non_null(strstr(err, "127.0.0.1:1"));
    ttb_store_free(store);
}

static void test_keys(void **state) {
    (void)state;
    char buf[TTB_KEY_BUFSZ];
    const char *id = "8a3f0000-0000-4000-8000-000000000000";
    ttb_key_agent(buf, "demo", id);
    assert_string_equal(buf, "tt:demo:agent:8a3f0000-0000-4000-8000-000000000000");
    ttb_key_agent_events(buf, "demo", id);
    assert_string_equal(buf, "tt:demo:events:agent:8a3f0000-0000-4000-8000-000000000000");
    ttb_key_stop(buf, "demo", id);
    assert_string_equal(buf, "tt:demo:stop:8a3f0000-0000-4000-8000-000000000000");
    ttb_key_agent_pattern(buf, "demo");
    assert_string_equal(buf, "tt:demo:agent:*");
    ttb_key_waits(buf, "demo");
    assert_string_equal(buf, "ttb:demo:waits");
}

/* Redis's count of cached scripts (INFO memory). */
static long cached_scripts(ttb_store_t *store) {
    redisReply *r;
    assert_int_equal(ttb_store_command(store, &r, "INFO memory"), 0);
    const char *at = strstr(r->str, "number_of_cached_scripts:");
    assert_non_null(at);
    long n = strtol(at + strlen("number_of_cached_scripts:"), NULL, 10);
    freeReplyObject(r);
    return n;
}

/* One registry of every script; each connection loads what its owner uses
 * (the relay's its one, the service its four) and runs nothing else. */
static void test_each_connection_loads_its_scripts(void **state) {
    (void)state;
    ttb_test_redis_t server;
    assert_int_equal(ttb_test_redis_start(&server, NULL), 0);
    ttb_redis_opts_t opts = {.host = "127.0.0.1", .port = server.port};
    char err[256];
    ttb_store_t *relay = ttb_store_new(&opts);
    ttb_store_use_scripts(relay, TTB_SCRIPT_BIT(TTB_SCRIPT_RELAY));
    assert_int_equal(ttb_store_connect(relay, err, sizeof(err)), 0);
    assert_int_equal(cached_scripts(relay), 1);
    const char *args[1] = {"x"};
    assert_int_equal(ttb_store_append_script(relay, TTB_SCRIPT_TRANSITION, 0, 1, args, NULL),
                     TTB_ERR_INVALID);
    /* Its script answers (a lease step on a town nobody holds). */
    const char *acquire[4] = {"cursor", "alpha", "me", "1-1"};
    assert_int_equal(ttb_store_append_script(relay, TTB_SCRIPT_RELAY, 0, 4, acquire, NULL), 0);
    redisReply *r;
    assert_int_equal(ttb_store_reply(relay, &r), 0);
    assert_int_equal(r->type, REDIS_REPLY_ARRAY);
    freeReplyObject(r);

    ttb_store_t *service = ttb_store_new(&opts);
    assert_int_equal(ttb_store_connect(service, err, sizeof(err)), 0);
    assert_int_equal(cached_scripts(service), 5);
    ttb_store_free(service);
    ttb_store_free(relay);
    ttb_test_redis_stop(&server);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pipeline_counts_round_trips),
        cmocka_unit_test(test_password_and_db),
        cmocka_unit_test(test_unreachable),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_each_connection_loads_its_scripts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
