/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the task model: states, the hash reader against hashes as
 * tinytown's set_task writes them (and damaged ones), and the Task JSON.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/task.h"

#define ID "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define AGENT "67e55044-10b1-426f-9247-bb680e5fe0c8"
#define PARENT "11111111-2222-4333-8444-555555555555"
#define T_2026 INT64_C(1795503060) /* 2026-11-24T06:51:00Z */

static const ttb_time_t NOW = {INT64_C(1800000000), 42};

static int decode(ttb_task_t *task, const char *const *kv, size_t n) {
    size_t lens[64];
    assert_true(n <= 64);
    for (size_t i = 0; i < n; i++) lens[i] = strlen(kv[i]);
    return ttb_task_from_hash(task, kv, lens, n, NOW);
}

#define DECODE(task, ...)                                                                       \
    do {                                                                                        \
        const char *const kv_[] = {__VA_ARGS__};                                                \
        assert_int_equal(decode((task), kv_, sizeof kv_ / sizeof kv_[0]), TTB_OK);              \
    } while (0)

/* A completed task as tinytown's set_task writes it. */
static const char *const FULL[] = {
    "id", ID,
    "description", "Fix the login bug",
    "state", "completed",
    "created_at", "2026-11-24T06:51:00+00:00",
    "updated_at", "2026-11-24T06:55:00.250+00:00",
    "tags", "[\"backend\",\"urgent\"]",
    "assigned_to", AGENT,
    "started_at", "2026-11-24T06:52:00.123456+00:00",
    "completed_at", "2026-11-24T06:55:00.250+00:00",
    "result", "Done: PR #42",
    "parent_id", PARENT,
};
#define FULL_N (sizeof FULL / sizeof FULL[0])

/* A new pending task: optionals deleted, no tags. */
static const char *const PENDING[] = {
    "id", ID,
    "description", "Write docs",
    "state", "pending",
    "created_at", "2026-11-24T06:51:00+00:00",
    "updated_at", "2026-11-24T06:51:00+00:00",
    "tags", "[]",
};
#define PENDING_N (sizeof PENDING / sizeof PENDING[0])

static void assert_json(json_t *j, const char *expected) {
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(s);
    assert_string_equal(s, expected);
    free(s);
    json_decref(j);
}

static void test_states(void **state) {
    (void)state;
    static const char *const names[] = {"pending",   "assigned", "running",
                                        "completed", "failed",   "cancelled"};
    for (int i = 0; i < 6; i++) {
        ttb_task_state_t s = (ttb_task_state_t)i;
        assert_string_equal(ttb_task_state_name(s), names[i]);
        ttb_task_state_t back = TTB_TASK_PENDING;
        assert_int_equal(ttb_task_state_parse(names[i], strlen(names[i]), &back), TTB_OK);
        assert_int_equal(back, s);
        assert_int_equal(ttb_task_state_is_terminal(s), i >= 3);
    }
    ttb_task_state_t back = TTB_TASK_PENDING;
    assert_int_equal(ttb_task_state_parse("in_flight", 9, &back), TTB_OK);
    assert_int_equal(back, TTB_TASK_RUNNING);
    assert_int_equal(ttb_task_state_parse("Running", 7, &back), TTB_ERR_INVALID);
    assert_int_equal(ttb_task_state_parse("in-flight", 9, &back), TTB_ERR_INVALID);
    assert_int_equal(ttb_task_state_parse("inflight", 8, &back), TTB_ERR_INVALID);
    assert_int_equal(ttb_task_state_parse("", 0, &back), TTB_ERR_INVALID);
}

static void test_decode_full(void **state) {
    (void)state;
    ttb_task_t t;
    assert_int_equal(decode(&t, FULL, FULL_N), TTB_OK);
    assert_string_equal(t.id, ID);
    assert_string_equal(t.description, "Fix the login bug");
    assert_int_equal(t.state, TTB_TASK_COMPLETED);
    assert_string_equal(t.assigned_to, AGENT);
    assert_int_equal(t.created_at.sec, T_2026);
    assert_int_equal(t.updated_at.sec, T_2026 + 240);
    assert_int_equal(t.updated_at.nsec, 250000000);
    assert_true(t.has_started_at);
    assert_int_equal(t.started_at.sec, T_2026 + 60);
    assert_int_equal(t.started_at.nsec, 123456000);
    assert_true(t.has_completed_at);
    assert_int_equal(t.completed_at.sec, T_2026 + 240);
    assert_string_equal(t.result, "Done: PR #42");
    assert_string_equal(t.parent_id, PARENT);
    assert_int_equal(t.ntags, 2);
    assert_string_equal(t.tags[0], "backend");
    assert_string_equal(t.tags[1], "urgent");
    ttb_task_clear(&t);
    assert_null(t.description);
    assert_null(t.tags);
    assert_int_equal(t.ntags, 0);
    ttb_task_clear(&t); /* twice is fine */
    ttb_task_clear(NULL);
}

static void test_decode_pending(void **state) {
    (void)state;
    ttb_task_t t;
    assert_int_equal(decode(&t, PENDING, PENDING_N), TTB_OK);
    assert_int_equal(t.state, TTB_TASK_PENDING);
    assert_string_equal(t.assigned_to, "");
    assert_string_equal(t.parent_id, "");
    assert_false(t.has_started_at);
    assert_false(t.has_completed_at);
    assert_null(t.result);
    assert_int_equal(t.ntags, 0);
    ttb_task_clear(&t);
}

static void test_decode_states(void **state) {
    (void)state;
    static const struct {
        const char *text;
        ttb_task_state_t state;
    } cases[] = {
        {"pending", TTB_TASK_PENDING},     {"assigned", TTB_TASK_ASSIGNED},
        {"running", TTB_TASK_RUNNING},     {"in_flight", TTB_TASK_RUNNING},
        {"completed", TTB_TASK_COMPLETED}, {"failed", TTB_TASK_FAILED},
        {"cancelled", TTB_TASK_CANCELLED}, {"Running", TTB_TASK_PENDING},
        {"canceled", TTB_TASK_PENDING},    {"done", TTB_TASK_PENDING},
        {"", TTB_TASK_PENDING},            {" failed", TTB_TASK_PENDING},
        {"\\u0072unning", TTB_TASK_RUNNING}, /* read as a JSON string, as tinytown does */
        {"in\\u005fflight", TTB_TASK_RUNNING},
        {"\"failed\"", TTB_TASK_PENDING},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ttb_task_t t;
        DECODE(&t, "id", ID, "state", cases[i].text);
        if (t.state != cases[i].state)
            fail_msg("state '%s' read as %s", cases[i].text, ttb_task_state_name(t.state));
        ttb_task_clear(&t);
    }
}

static void test_decode_lenient_fields(void **state) {
    (void)state;
    ttb_task_t t;
    /* Only an id: everything else defaults; both times are now, independently. */
    DECODE(&t, "id", ID);
    assert_string_equal(t.description, "");
    assert_int_equal(t.state, TTB_TASK_PENDING);
    assert_int_equal(t.created_at.sec, NOW.sec);
    assert_int_equal(t.created_at.nsec, NOW.nsec);
    assert_int_equal(t.updated_at.sec, NOW.sec);
    assert_false(t.has_started_at);
    assert_int_equal(t.ntags, 0);
    ttb_task_clear(&t);

    /* updated_at does not fall back to created_at. */
    DECODE(&t, "id", ID, "created_at", "2026-11-24T06:51:00Z", "updated_at", "soon");
    assert_int_equal(t.created_at.sec, T_2026);
    assert_int_equal(t.updated_at.sec, NOW.sec);
    ttb_task_clear(&t);

    /* Unparsable optional times and ids are absent; ids are canonicalised. */
    DECODE(&t, "id", "0A1B2C3D4E5F4A6B8C7D9E0F1A2B3C4D", "started_at", "2026-11-24",
           "completed_at", "", "assigned_to", "backend", "parent_id",
           "{11111111-2222-4333-8444-555555555555}");
    assert_string_equal(t.id, ID);
    assert_false(t.has_started_at);
    assert_false(t.has_completed_at);
    assert_string_equal(t.assigned_to, "");
    assert_string_equal(t.parent_id, PARENT);
    ttb_task_clear(&t);

    DECODE(&t, "id", ID, "assigned_to", "67E55044-10B1-426F-9247-BB680E5FE0C8", "started_at",
           "2026-11-24T12:21:00+05:30");
    assert_string_equal(t.assigned_to, AGENT);
    assert_true(t.has_started_at);
    assert_int_equal(t.started_at.sec, T_2026);
    ttb_task_clear(&t);

    /* An empty result is still a result; a NUL cuts it. */
    DECODE(&t, "id", ID, "result", "");
    assert_non_null(t.result);
    assert_string_equal(t.result, "");
    ttb_task_clear(&t);
    const char *kv[] = {"id", ID, "result", "ok\0hidden", "description", "d\xc3"};
    size_t lens[] = {2, 36, 6, 9, 11, 2};
    assert_int_equal(ttb_task_from_hash(&t, kv, lens, 6, NOW), TTB_OK);
    assert_string_equal(t.result, "ok");
    assert_string_equal(t.description, "d\xef\xbf\xbd");
    ttb_task_clear(&t);

    /* Last of a repeated field wins. */
    DECODE(&t, "id", ID, "state", "failed", "state", "completed", "description", "a",
           "description", "b");
    assert_int_equal(t.state, TTB_TASK_COMPLETED);
    assert_string_equal(t.description, "b");
    ttb_task_clear(&t);
}

static void test_decode_requires_id(void **state) {
    (void)state;
    ttb_task_t t;
    static const char *const no_id[] = {"description", "x"};
    static const char *const bad_id[] = {"id", "task-1", "description", "x"};
    memset(&t, 0x5a, sizeof t);
    assert_int_equal(decode(&t, no_id, 2), TTB_ERR_INVALID);
    assert_null(t.description);
    assert_null(t.tags);
    ttb_task_clear(&t);
    assert_int_equal(decode(&t, bad_id, 4), TTB_ERR_INVALID);
    ttb_task_clear(&t);
    assert_int_equal(ttb_task_from_hash(&t, NULL, NULL, 0, NOW), TTB_ERR_INVALID);
}

static void assert_tags(const char *json, size_t n, const char *const *expected) {
    ttb_task_t t;
    DECODE(&t, "id", ID, "tags", json);
    if (t.ntags != n) fail_msg("tags %s: %zu tags, expected %zu", json, t.ntags, n);
    for (size_t i = 0; i < n; i++) assert_string_equal(t.tags[i], expected[i]);
    ttb_task_clear(&t);
}

static void test_decode_tags(void **state) {
    (void)state;
    static const char *const ab[] = {"a", "b"};
    static const char *const x[] = {"x"};
    static const char *const e[] = {"\xc3\xa9 \"q\""};
    static const char *const cut[] = {"a", ""};
    assert_tags("[]", 0, NULL);
    assert_tags("[\"a\",\"b\"]", 2, ab);
    assert_tags(" [ \"x\" ]\n", 1, x);
    assert_tags("[\"\\u00e9 \\\"q\\\"\"]", 1, e);
    assert_tags("[\"a\\u0000b\",\"\"]", 2, cut);
    /* Anything but an array of strings: no tags. */
    assert_tags("", 0, NULL);
    assert_tags("null", 0, NULL);
    assert_tags("\"a\"", 0, NULL);
    assert_tags("{\"a\":1}", 0, NULL);
    assert_tags("[\"a\",1]", 0, NULL);
    assert_tags("[\"a\",null]", 0, NULL);
    assert_tags("[[\"a\"]]", 0, NULL);
    assert_tags("[\"a\"", 0, NULL);
    assert_tags("[\"a\"] x", 0, NULL);
    assert_tags("[\"a\"][\"b\"]", 0, NULL);
    assert_tags("a,b", 0, NULL);
    assert_tags("[\"\\ud800\"]", 0, NULL);
}

static void test_json(void **state) {
    (void)state;
    ttb_task_t t;
    assert_int_equal(decode(&t, FULL, FULL_N), TTB_OK);
    assert_json(ttb_task_to_json(&t),
                "{\"id\":\"" ID "\",\"description\":\"Fix the login bug\","
                "\"state\":\"completed\",\"assigned_to\":\"" AGENT "\","
                "\"created_at\":\"2026-11-24T06:51:00Z\","
                "\"updated_at\":\"2026-11-24T06:55:00.250Z\","
                "\"started_at\":\"2026-11-24T06:52:00.123456Z\","
                "\"completed_at\":\"2026-11-24T06:55:00.250Z\",\"result\":\"Done: PR #42\","
                "\"parent_id\":\"" PARENT "\",\"tags\":[\"backend\",\"urgent\"]}");
    ttb_task_clear(&t);

    assert_int_equal(decode(&t, PENDING, PENDING_N), TTB_OK);
    assert_json(ttb_task_to_json(&t),
                "{\"id\":\"" ID "\",\"description\":\"Write docs\",\"state\":\"pending\","
                "\"assigned_to\":null,\"created_at\":\"2026-11-24T06:51:00Z\","
                "\"updated_at\":\"2026-11-24T06:51:00Z\",\"started_at\":null,"
                "\"completed_at\":null,\"result\":null,\"parent_id\":null,\"tags\":[]}");
    ttb_task_clear(&t);

    DECODE(&t, "id", ID, "state", "in_flight");
    json_t *j = ttb_task_to_json(&t);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "running");
    json_decref(j);
    ttb_task_clear(&t);
    assert_null(ttb_task_to_json(NULL));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_decode_full),
        cmocka_unit_test(test_decode_pending),
        cmocka_unit_test(test_decode_states),
        cmocka_unit_test(test_decode_lenient_fields),
        cmocka_unit_test(test_decode_requires_id),
        cmocka_unit_test(test_decode_tags),
        cmocka_unit_test(test_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
