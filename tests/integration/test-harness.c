/* SPDX-License-Identifier: MIT */
/*
 * Self-test of the redis test harness (tests/lib/redis-harness.c), so that
 * integration-test failures can be trusted to be about the code under test:
 * start → usable server, pause → unreachable, resume → same port, empty
 * (no persistence by default), extra args honoured, stop → process and
 * directory gone.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>
#include <hiredis/hiredis.h>

#include "redis-harness.h"

static redisContext *connect_to(const ttb_test_redis_t *r)
{
    struct timeval tv = { 2, 0 };
    return redisConnectWithTimeout("127.0.0.1", r->port, tv);
}

static void assert_reply_status(redisReply *reply, const char *want)
{
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STATUS);
    assert_string_equal(reply->str, want);
    freeReplyObject(reply);
}

/* kill(pid, 0) fails with ESRCH once the server has been reaped. */
static void assert_process_gone(int pid)
{
    assert_true(pid > 0);
    assert_int_equal(kill(pid, 0), -1);
    assert_int_equal(errno, ESRCH);
}

static void assert_dir_gone(const char *dir)
{
    struct stat st;
    assert_int_equal(stat(dir, &st), -1);
    assert_int_equal(errno, ENOENT);
}

static void test_lifecycle(void **state)
{
    (void)state;
    ttb_test_redis_t r;
    assert_int_equal(ttb_test_redis_start(&r, NULL), 0);
    assert_true(r.pid > 0);
    assert_true(r.port > 0 && r.port < 65536);
    char want_url[64];
    snprintf(want_url, sizeof want_url, "redis://127.0.0.1:%d", r.port);
    assert_string_equal(r.url, want_url);
    struct stat st;
    assert_int_equal(stat(r.dir, &st), 0);
    assert_true(S_ISDIR(st.st_mode));

    redisContext *c = connect_to(&r);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_reply_status(redisCommand(c, "SET %s %s", "k", "v"), "OK");
    redisReply *reply = redisCommand(c, "GET %s", "k");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, "v");
    freeReplyObject(reply);
    redisFree(c);

    /* pause: the process is gone and nothing listens on the port, but the
     * directory stays. */
    int old_pid = r.pid, port = r.port;
    assert_int_equal(ttb_test_redis_pause(&r), 0);
    assert_int_equal(r.pid, 0);
    assert_process_gone(old_pid);
    assert_int_equal(stat(r.dir, &st), 0);
    c = connect_to(&r);
    assert_non_null(c);
    assert_int_not_equal(c->err, 0);
    redisFree(c);

    /* resume: same port, fresh data (persistence is off by default). */
    assert_int_equal(ttb_test_redis_resume(&r), 0);
    assert_true(r.pid > 0);
    assert_int_equal(r.port, port);
    c = connect_to(&r);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_reply_status(redisCommand(c, "PING"), "PONG");
    reply = redisCommand(c, "GET %s", "k");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_NIL);
    freeReplyObject(reply);
    redisFree(c);

    /* stop: process reaped, directory removed; a second stop is harmless. */
    int pid = r.pid;
    char dir[sizeof r.dir];
    memcpy(dir, r.dir, sizeof dir);
    assert_int_equal(ttb_test_redis_stop(&r), 0);
    assert_process_gone(pid);
    assert_dir_gone(dir);
    assert_int_equal(ttb_test_redis_stop(&r), 0);
}

static void test_extra_args_persistence(void **state)
{
    (void)state;
    static const char *const aof[] = { "--appendonly", "yes", "--appendfsync", "always", NULL };
    ttb_test_redis_t r;
    assert_int_equal(ttb_test_redis_start(&r, aof), 0);
    redisContext *c = connect_to(&r);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_reply_status(redisCommand(c, "SET %s %s", "durable", "yes"), "OK");
    redisFree(c);

    assert_int_equal(ttb_test_redis_pause(&r), 0);
    assert_int_equal(ttb_test_redis_resume(&r), 0);
    c = connect_to(&r);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    redisReply *reply = redisCommand(c, "GET %s", "durable");
    assert_non_null(reply);
    assert_int_equal(reply->type, REDIS_REPLY_STRING);
    assert_string_equal(reply->str, "yes");
    freeReplyObject(reply);
    redisFree(c);

    char dir[sizeof r.dir];
    memcpy(dir, r.dir, sizeof dir);
    assert_int_equal(ttb_test_redis_stop(&r), 0);
    assert_dir_gone(dir); /* including appendonlydir/ */
}

static void test_two_servers_are_independent(void **state)
{
    (void)state;
    ttb_test_redis_t a, b;
    assert_int_equal(ttb_test_redis_start(&a, NULL), 0);
    assert_int_equal(ttb_test_redis_start(&b, NULL), 0);
    assert_int_not_equal(a.port, b.port);
    assert_int_not_equal(a.pid, b.pid);
    assert_string_not_equal(a.dir, b.dir);
    assert_int_equal(ttb_test_redis_stop(&a), 0);
    /* b is unaffected by stopping a. */
    redisContext *c = connect_to(&b);
    assert_non_null(c);
    assert_int_equal(c->err, 0);
    assert_reply_status(redisCommand(c, "PING"), "PONG");
    redisFree(c);
    assert_int_equal(ttb_test_redis_stop(&b), 0);
}

static void test_bad_args_fail_cleanly(void **state)
{
    (void)state;
    /* redis rejects the unknown directive at startup: start must fail fast
     * (not wait out its 10 s) and leave nothing behind. */
    static const char *const bad[] = { "--no-such-directive", "1", NULL };
    ttb_test_redis_t r;
    assert_int_equal(ttb_test_redis_start(&r, bad), -1);
    assert_int_equal(r.pid, 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle),
        cmocka_unit_test(test_extra_args_persistence),
        cmocka_unit_test(test_two_servers_are_independent),
        cmocka_unit_test(test_bad_args_fail_cleanly),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
