/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the agent model: states, nicknames, the hash codec against
 * hashes exactly as tinytown writes them, the JSON form, display labels,
 * trimming, reserved names and reference resolution.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/agent.h"

#define ID "67e55044-10b1-426f-9247-bb680e5fe0c8"
#define TASK "0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"
#define SUP TTB_UUID_SUPERVISOR
#define T_2026 INT64_C(1795503060) /* 2026-11-24T06:51:00Z */

static const ttb_time_t NOW = {INT64_C(1800000000), 42};

/* Decodes NUL-terminated field/value strings. */
static int decode(ttb_agent_t *agent, const char *const *kv, size_t n) {
    size_t *lens = calloc(n + 1, sizeof *lens);
    assert_non_null(lens);
    for (size_t i = 0; i < n; i++) lens[i] = strlen(kv[i]);
    int rc = ttb_agent_from_hash(agent, kv, lens, n, NOW);
    free(lens);
    return rc;
}

#define DECODE(agent, ...)                                                                      \
    do {                                                                                        \
        const char *const kv_[] = {__VA_ARGS__};                                                \
        assert_int_equal(decode((agent), kv_, sizeof kv_ / sizeof kv_[0]), TTB_OK);             \
    } while (0)

/* The hash tinytown's set_agent_state writes for a fully populated agent. */
static const char *const FULL[] = {
    "id", ID,
    "name", "backend",
    "agent_type", "worker",
    "state", "working",
    "cli", "claude",
    "created_at", "2026-11-24T06:51:00.123456789+00:00",
    "last_heartbeat", "2026-11-24T06:52:00.500+00:00",
    "tasks_completed", "3",
    "rounds_completed", "7",
    "last_active_at", "2026-11-24T06:53:00+00:00",
    "spawn_mode", "forkedcontext",
    "current_task", TASK,
    "nickname", "Lonnie",
    "role_id", "reviewer",
    "parent_agent_id", SUP,
};
#define FULL_N (sizeof FULL / sizeof FULL[0])

/* The same agent as a minimal tinytown agent: optionals deleted. */
static const char *const MINIMAL[] = {
    "id", ID,
    "name", "backend",
    "agent_type", "supervisor",
    "state", "idle",
    "cli", "codex",
    "created_at", "2026-11-24T06:51:00+00:00",
    "last_heartbeat", "2026-11-24T06:51:00+00:00",
    "tasks_completed", "0",
    "rounds_completed", "0",
    "last_active_at", "2026-11-24T06:51:00+00:00",
    "spawn_mode", "fresh",
};
#define MINIMAL_N (sizeof MINIMAL / sizeof MINIMAL[0])

static char *dump(json_t *j) {
    assert_non_null(j);
    char *s = json_dumps(j, JSON_COMPACT | JSON_PRESERVE_ORDER);
    assert_non_null(s);
    json_decref(j);
    return s;
}

static void assert_json(json_t *j, const char *expected) {
    char *s = dump(j);
    assert_string_equal(s, expected);
    free(s);
}

/* A hand-built agent for label and resolution tests. */
static ttb_agent_t mk(const char *id, const char *name, const char *nickname,
                      const char *role_id) {
    ttb_agent_t a;
    memset(&a, 0, sizeof a);
    strcpy(a.id, id);
    a.name = strdup(name);
    a.nickname = nickname ? strdup(nickname) : NULL;
    a.role_id = role_id ? strdup(role_id) : NULL;
    a.cli = strdup("claude");
    return a;
}

/* ---------------------------------------------------------------------- */

static void test_states(void **state) {
    (void)state;
    static const char *const names[] = {"cold",     "starting", "idle",    "working",
                                        "paused",   "draining", "stopped", "error"};
    static const char *const titles[] = {"Cold",     "Starting", "Idle",    "Working",
                                         "Paused",   "Draining", "Stopped", "Error"};
    for (int i = 0; i < TTB_STATE__COUNT; i++) {
        ttb_agent_state_t s = (ttb_agent_state_t)i;
        assert_string_equal(ttb_agent_state_name(s), names[i]);
        assert_string_equal(ttb_agent_state_title(s), titles[i]);
        ttb_agent_state_t back = TTB_STATE__COUNT;
        assert_int_equal(ttb_agent_state_parse(names[i], strlen(names[i]), &back), TTB_OK);
        assert_int_equal(back, s);
        assert_int_equal(ttb_agent_state_parse(titles[i], strlen(titles[i]), &back),
                         TTB_ERR_INVALID);
    }
    ttb_agent_state_t back;
    assert_int_equal(ttb_agent_state_parse("idle ", 5, &back), TTB_ERR_INVALID);
    assert_int_equal(ttb_agent_state_parse("idl", 3, &back), TTB_ERR_INVALID);
    assert_int_equal(ttb_agent_state_parse("idlex", 4, &back), TTB_OK); /* length-bounded */
    assert_int_equal(back, TTB_STATE_IDLE);
    assert_int_equal(ttb_agent_state_parse("", 0, &back), TTB_ERR_INVALID);

    /* Classes. */
    assert_true(ttb_agent_state_is_terminal(TTB_STATE_STOPPED));
    assert_true(ttb_agent_state_is_terminal(TTB_STATE_ERROR));
    assert_true(ttb_agent_state_is_terminal(TTB_STATE_COLD));
    assert_false(ttb_agent_state_is_terminal(TTB_STATE_STARTING));
    assert_false(ttb_agent_state_is_terminal(TTB_STATE_IDLE));
    assert_false(ttb_agent_state_is_terminal(TTB_STATE_WORKING));
    assert_false(ttb_agent_state_is_terminal(TTB_STATE_PAUSED));
    assert_false(ttb_agent_state_is_terminal(TTB_STATE_DRAINING));
    for (int i = 0; i < TTB_STATE__COUNT; i++) {
        ttb_agent_state_t s = (ttb_agent_state_t)i;
        assert_int_equal(ttb_agent_state_accepts_work(s), s == TTB_STATE_IDLE);
        assert_int_equal(ttb_agent_state_is_active(s),
                         !ttb_agent_state_is_terminal(s)); /* the two partition the states */
    }
}

static void test_types_and_spawn_modes(void **state) {
    (void)state;
    assert_string_equal(ttb_agent_type_name(TTB_AGENT_WORKER), "worker");
    assert_string_equal(ttb_agent_type_name(TTB_AGENT_SUPERVISOR), "supervisor");
    assert_string_equal(ttb_spawn_mode_name(TTB_SPAWN_FRESH), "fresh");
    assert_string_equal(ttb_spawn_mode_name(TTB_SPAWN_FORKED_CONTEXT), "forkedcontext");
    assert_string_equal(ttb_spawn_mode_name(TTB_SPAWN_RESUMED), "resumed");
    ttb_spawn_mode_t m = TTB_SPAWN_FRESH;
    assert_int_equal(ttb_spawn_mode_parse("resumed", 7, &m), TTB_OK);
    assert_int_equal(m, TTB_SPAWN_RESUMED);
    assert_int_equal(ttb_spawn_mode_parse("forkedcontext", 13, &m), TTB_OK);
    assert_int_equal(m, TTB_SPAWN_FORKED_CONTEXT);
    assert_int_equal(ttb_spawn_mode_parse("forked_context", 14, &m), TTB_ERR_INVALID);
    assert_int_equal(ttb_spawn_mode_parse("ForkedContext", 13, &m), TTB_ERR_INVALID);
    assert_int_equal(ttb_spawn_mode_parse("Fresh", 5, &m), TTB_ERR_INVALID);
}

static void test_nickname_from_id(void **state) {
    (void)state;
    assert_string_equal(ttb_nickname_from_id("00000000-0000-0000-0000-000000000000"), "Robert");
    assert_string_equal(ttb_nickname_from_id("0001ffff-0000-4000-8000-000000000000"), "John");
    assert_string_equal(ttb_nickname_from_id("00c70000-0000-4000-8000-000000000000"), "Forrest");
    assert_string_equal(ttb_nickname_from_id("00c80000-0000-4000-8000-000000000000"), "Mary");
    assert_string_equal(ttb_nickname_from_id("00c90000-0000-4000-8000-000000000000"), "Dorothy");
    assert_string_equal(ttb_nickname_from_id("018f0000-0000-4000-8000-000000000000"),
                        "Jeannette");
    /* 0x0190 = 400 wraps to 0. */
    assert_string_equal(ttb_nickname_from_id("01900000-0000-4000-8000-000000000000"), "Robert");
    /* 65535 % 400 = 335 -> girls[135]. */
    assert_string_equal(ttb_nickname_from_id("ffffffff-ffff-4fff-bfff-ffffffffffff"), "Carrie");
    assert_string_equal(ttb_nickname_from_id("FFFF0000-0000-4000-8000-000000000000"), "Carrie");
    assert_string_equal(ttb_nickname_from_id("abcd0000-0000-4000-8000-000000000000"), "Janice");
    assert_string_equal(ttb_nickname_from_id(ID), "Lonnie");
    assert_string_equal(ttb_nickname_from_id("12340000000040008000000000000000"), "Joyce");
    assert_null(ttb_nickname_from_id("not-a-uuid"));
    assert_null(ttb_nickname_from_id(""));
    assert_null(ttb_nickname_from_id(NULL));
}

static void test_decode_full(void **state) {
    (void)state;
    ttb_agent_t a;
    assert_int_equal(decode(&a, FULL, FULL_N), TTB_OK);
    assert_string_equal(a.id, ID);
    assert_string_equal(a.name, "backend");
    assert_int_equal(a.agent_type, TTB_AGENT_WORKER);
    assert_int_equal(a.state, TTB_STATE_WORKING);
    assert_string_equal(a.cli, "claude");
    assert_int_equal(a.created_at.sec, T_2026);
    assert_int_equal(a.created_at.nsec, 123456789);
    assert_int_equal(a.last_heartbeat.sec, T_2026 + 60);
    assert_int_equal(a.last_heartbeat.nsec, 500000000);
    assert_int_equal(a.tasks_completed, 3);
    assert_int_equal(a.rounds_completed, 7);
    assert_int_equal(a.last_active_at.sec, T_2026 + 120);
    assert_int_equal(a.last_active_at.nsec, 0);
    assert_int_equal(a.spawn_mode, TTB_SPAWN_FORKED_CONTEXT);
    assert_string_equal(a.current_task, TASK);
    assert_string_equal(a.nickname, "Lonnie");
    assert_string_equal(a.role_id, "reviewer");
    assert_string_equal(a.parent_agent_id, SUP);
    ttb_agent_clear(&a);
    assert_null(a.name);
    assert_string_equal(a.id, "");
}

static void test_decode_minimal(void **state) {
    (void)state;
    ttb_agent_t a;
    assert_int_equal(decode(&a, MINIMAL, MINIMAL_N), TTB_OK);
    assert_int_equal(a.agent_type, TTB_AGENT_SUPERVISOR);
    assert_int_equal(a.state, TTB_STATE_IDLE);
    assert_int_equal(a.spawn_mode, TTB_SPAWN_FRESH);
    assert_string_equal(a.cli, "codex");
    assert_null(a.nickname);
    assert_null(a.role_id);
    assert_string_equal(a.current_task, "");
    assert_string_equal(a.parent_agent_id, "");
    assert_int_equal(a.tasks_completed, 0);
    ttb_agent_clear(&a);
}

static void test_decode_only_id(void **state) {
    (void)state;
    ttb_agent_t a;
    DECODE(&a, "id", ID);
    assert_string_equal(a.name, "");
    assert_string_equal(a.cli, "");
    assert_int_equal(a.agent_type, TTB_AGENT_WORKER);
    assert_int_equal(a.state, TTB_STATE_STARTING);
    assert_int_equal(a.spawn_mode, TTB_SPAWN_FRESH);
    assert_int_equal(a.created_at.sec, NOW.sec);
    assert_int_equal(a.created_at.nsec, NOW.nsec);
    assert_int_equal(a.last_heartbeat.sec, NOW.sec);
    assert_int_equal(a.last_active_at.sec, NOW.sec);
    assert_int_equal(a.last_active_at.nsec, NOW.nsec);
    assert_int_equal(a.tasks_completed, 0);
    assert_int_equal(a.rounds_completed, 0);
    assert_null(a.nickname);
    ttb_agent_clear(&a);
}

static void test_decode_every_enum_value(void **state) {
    (void)state;
    for (int i = 0; i < TTB_STATE__COUNT; i++) {
        ttb_agent_t a;
        DECODE(&a, "id", ID, "state", ttb_agent_state_name((ttb_agent_state_t)i));
        assert_int_equal(a.state, i);
        ttb_agent_clear(&a);
    }
    static const char *const modes[] = {"fresh", "forkedcontext", "resumed"};
    for (int i = 0; i < 3; i++) {
        ttb_agent_t a;
        DECODE(&a, "id", ID, "spawn_mode", modes[i]);
        assert_int_equal(a.spawn_mode, i);
        ttb_agent_clear(&a);
    }
    ttb_agent_t a;
    DECODE(&a, "id", ID, "agent_type", "supervisor");
    assert_int_equal(a.agent_type, TTB_AGENT_SUPERVISOR);
    ttb_agent_clear(&a);
    DECODE(&a, "id", ID, "agent_type", "worker");
    assert_int_equal(a.agent_type, TTB_AGENT_WORKER);
    ttb_agent_clear(&a);
}

static void test_decode_unknown_enum_values(void **state) {
    (void)state;
    static const char *const bad[] = {"Idle", "IDLE", "idle ", " idle", "", "idle\n",
                                      "\"idle\"", "idle\\n", "id\\u006", "unknown", "in_flight"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ttb_agent_t a;
        DECODE(&a, "id", ID, "state", bad[i], "agent_type", bad[i], "spawn_mode", bad[i]);
        assert_int_equal(a.state, TTB_STATE_STARTING);
        assert_int_equal(a.agent_type, TTB_AGENT_WORKER);
        assert_int_equal(a.spawn_mode, TTB_SPAWN_FRESH);
        ttb_agent_clear(&a);
    }
    ttb_agent_t a;
    DECODE(&a, "id", ID, "agent_type", "Supervisor", "spawn_mode", "forked_context", "state",
           "stopped ");
    assert_int_equal(a.agent_type, TTB_AGENT_WORKER);
    assert_int_equal(a.spawn_mode, TTB_SPAWN_FRESH);
    assert_int_equal(a.state, TTB_STATE_STARTING);
    ttb_agent_clear(&a);
}

static void test_decode_enum_json_escapes(void **state) {
    (void)state;
    /* tinytown reads enums as the inside of a JSON string, so escapes count. */
    ttb_agent_t a;
    DECODE(&a, "id", ID, "state", "\\u0069dle", "agent_type", "supervis\\u006Fr", "spawn_mode",
           "\\u0072\\u0065sumed");
    assert_int_equal(a.state, TTB_STATE_IDLE);
    assert_int_equal(a.agent_type, TTB_AGENT_SUPERVISOR);
    assert_int_equal(a.spawn_mode, TTB_SPAWN_RESUMED);
    ttb_agent_clear(&a);
}

static void test_decode_counters(void **state) {
    (void)state;
    static const struct {
        const char *text;
        uint64_t value;
    } cases[] = {
        {"0", 0},
        {"42", 42},
        {"007", 7},
        {"+5", 5},
        {"18446744073709551615", UINT64_MAX},
        {"18446744073709551616", 0}, /* overflow */
        {"99999999999999999999", 0},
        {"", 0},
        {"+", 0},
        {"-0", 0},
        {"-1", 0},
        {" 5", 0},
        {"5 ", 0},
        {"++5", 0},
        {"0x10", 0},
        {"1e3", 0},
        {"1.0", 0},
        {"\xd9\xa1", 0}, /* ARABIC-INDIC DIGIT ONE */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ttb_agent_t a;
        DECODE(&a, "id", ID, "tasks_completed", cases[i].text, "rounds_completed",
               cases[i].text);
        if (a.tasks_completed != cases[i].value || a.rounds_completed != cases[i].value)
            fail_msg("counter '%s' decoded as %llu", cases[i].text,
                     (unsigned long long)a.tasks_completed);
        ttb_agent_clear(&a);
    }
}

static void test_decode_timestamps(void **state) {
    (void)state;
    ttb_agent_t a;
    /* Garbage becomes now; last_active_at missing falls back to created_at. */
    DECODE(&a, "id", ID, "created_at", "2026-11-24T06:51:00.5+00:00", "last_heartbeat",
           "yesterday");
    assert_int_equal(a.created_at.sec, T_2026);
    assert_int_equal(a.created_at.nsec, 500000000);
    assert_int_equal(a.last_heartbeat.sec, NOW.sec);
    assert_int_equal(a.last_heartbeat.nsec, NOW.nsec);
    assert_int_equal(a.last_active_at.sec, T_2026);
    assert_int_equal(a.last_active_at.nsec, 500000000);
    ttb_agent_clear(&a);

    /* Unparsable last_active_at also falls back to created_at. */
    DECODE(&a, "id", ID, "created_at", "2026-11-24T06:51:00Z", "last_active_at",
           "2026-11-24T06:51:00");
    assert_int_equal(a.last_active_at.sec, T_2026);
    ttb_agent_clear(&a);

    /* Both garbage: created_at is now, and so is last_active_at. */
    DECODE(&a, "id", ID, "created_at", "", "last_active_at", "2026-02-30T00:00:00Z");
    assert_int_equal(a.created_at.sec, NOW.sec);
    assert_int_equal(a.last_active_at.sec, NOW.sec);
    assert_int_equal(a.last_active_at.nsec, NOW.nsec);
    ttb_agent_clear(&a);

    /* Any RFC 3339 form, normalised to UTC. */
    DECODE(&a, "id", ID, "created_at", "2026-11-24 12:21:00+05:30", "last_heartbeat",
           "2026-11-23t22:51:00.25-08:00", "last_active_at", "2026-11-24T06:51:00z");
    assert_int_equal(a.created_at.sec, T_2026);
    assert_int_equal(a.last_heartbeat.sec, T_2026);
    assert_int_equal(a.last_heartbeat.nsec, 250000000);
    assert_int_equal(a.last_active_at.sec, T_2026);
    ttb_agent_clear(&a);
}

static void test_decode_ids(void **state) {
    (void)state;
    ttb_agent_t a;
    /* Rust's Uuid::parse_str forms, stored canonical. */
    DECODE(&a, "id", "67E55044-10B1-426F-9247-BB680E5FE0C8", "current_task",
           "{0A1B2C3D-4E5F-4A6B-8C7D-9E0F1A2B3C4D}", "parent_agent_id",
           "urn:uuid:00000000-0000-0000-0000-000000000001");
    assert_string_equal(a.id, ID);
    assert_string_equal(a.current_task, TASK);
    assert_string_equal(a.parent_agent_id, SUP);
    ttb_agent_clear(&a);

    DECODE(&a, "id", "67e5504410b1426f9247bb680e5fe0c8", "current_task", "", "parent_agent_id",
           "nope");
    assert_string_equal(a.id, ID);
    assert_string_equal(a.current_task, "");
    assert_string_equal(a.parent_agent_id, "");
    ttb_agent_clear(&a);

    DECODE(&a, "id", ID, "current_task", " " TASK, "parent_agent_id", SUP " ");
    assert_string_equal(a.current_task, "");
    assert_string_equal(a.parent_agent_id, "");
    ttb_agent_clear(&a);
}

static void test_decode_rejects_without_id(void **state) {
    (void)state;
    static const char *const no_id[] = {"name", "backend", "state", "idle"};
    static const char *const bad_id[] = {"id", "backend", "name", "backend"};
    static const char *const empty_id[] = {"id", "", "name", "backend"};
    static const char *const spaced_id[] = {"id", (" " ID), "name", "backend"};
    static const char *const urn_upper[] = {"id", "URN:UUID:" ID};
    const char *const *cases[] = {no_id, bad_id, empty_id, spaced_id, urn_upper};
    const size_t ns[] = {4, 4, 4, 4, 2};
    for (size_t i = 0; i < 5; i++) {
        ttb_agent_t a;
        memset(&a, 0x5a, sizeof a);
        assert_int_equal(decode(&a, cases[i], ns[i]), TTB_ERR_INVALID);
        /* Nothing to free, and clearing is harmless. */
        assert_null(a.name);
        assert_null(a.cli);
        ttb_agent_clear(&a);
    }
    ttb_agent_t a;
    assert_int_equal(ttb_agent_from_hash(&a, NULL, NULL, 0, NOW), TTB_ERR_INVALID);
}

static void test_decode_duplicates_last_wins(void **state) {
    (void)state;
    ttb_agent_t a;
    DECODE(&a, "id", "garbage", "name", "first", "state", "idle", "id", ID, "name", "second",
           "state", "bogus");
    assert_string_equal(a.id, ID);
    assert_string_equal(a.name, "second");
    assert_int_equal(a.state, TTB_STATE_STARTING);
    ttb_agent_clear(&a);

    static const char *const kv[] = {"id", ID, "id", "garbage"};
    assert_int_equal(decode(&a, kv, 4), TTB_ERR_INVALID);
}

static void test_decode_unknown_fields_and_odd_count(void **state) {
    (void)state;
    ttb_agent_t a;
    DECODE(&a, "id", ID, "mission_id", "x", "Name", "upper", "name ", "spaced", "name", "ok",
           "dangling");
    assert_string_equal(a.name, "ok");
    ttb_agent_clear(&a);
}

static void test_decode_binary_values(void **state) {
    (void)state;
    /* A NUL cuts a string; a field name with a NUL is another field. */
    const char *kv[] = {"id", ID, "name", "back\0end", "nickname", "\0", "name\0x", "other",
                        "cli", "\xff\xfeok\xe2\x82", "role_id", "caf\xc3\xa9"};
    size_t lens[] = {2, 36, 4, 8, 8, 1, 6, 5, 3, 6, 7, 5};
    ttb_agent_t a;
    assert_int_equal(ttb_agent_from_hash(&a, kv, lens, 12, NOW), TTB_OK);
    assert_string_equal(a.name, "back");
    assert_non_null(a.nickname);
    assert_string_equal(a.nickname, "");
    /* Invalid UTF-8 becomes U+FFFD, one per maximal invalid subpart. */
    assert_string_equal(a.cli, "\xef\xbf\xbd\xef\xbf\xbd" "ok\xef\xbf\xbd");
    assert_string_equal(a.role_id, "caf\xc3\xa9");
    ttb_agent_clear(&a);
}

static void test_decode_empty_optional_strings_are_present(void **state) {
    (void)state;
    /* tinytown keeps Some("") for an empty nickname or role_id. */
    ttb_agent_t a;
    DECODE(&a, "id", ID, "name", "w", "nickname", "", "role_id", "");
    assert_non_null(a.nickname);
    assert_non_null(a.role_id);
    assert_string_equal(ttb_agent_display_name(&a), "");
    char label[64];
    ttb_agent_display_label(&a, label, sizeof label);
    assert_string_equal(label, " []");
    ttb_agent_clear(&a);
}

static void test_encode_full(void **state) {
    (void)state;
    ttb_agent_t a;
    assert_int_equal(decode(&a, FULL, FULL_N), TTB_OK);
    ttb_agent_hash_t h;
    ttb_agent_to_hash(&a, &h);
    static const char *const expected[] = {
        "id", ID,
        "name", "backend",
        "agent_type", "worker",
        "state", "working",
        "cli", "claude",
        "created_at", "2026-11-24T06:51:00.123456789+00:00",
        "last_heartbeat", "2026-11-24T06:52:00.500+00:00",
        "tasks_completed", "3",
        "rounds_completed", "7",
        "last_active_at", "2026-11-24T06:53:00+00:00",
        "spawn_mode", "forkedcontext",
        "current_task", TASK,
        "nickname", "Lonnie",
        "role_id", "reviewer",
        "parent_agent_id", SUP,
    };
    assert_int_equal(h.nset, 15);
    assert_int_equal(h.ndel, 0);
    for (size_t i = 0; i < h.nset; i++) {
        assert_string_equal(h.field[i], expected[2 * i]);
        assert_int_equal(h.value_len[i], strlen(expected[2 * i + 1]));
        assert_memory_equal(h.value[i], expected[2 * i + 1], h.value_len[i]);
    }
    ttb_agent_clear(&a);
}

static void test_encode_minimal(void **state) {
    (void)state;
    ttb_agent_t a;
    assert_int_equal(decode(&a, MINIMAL, MINIMAL_N), TTB_OK);
    a.tasks_completed = UINT64_MAX;
    a.rounds_completed = 1234567890123ULL;
    a.created_at.nsec = 5000000;
    ttb_agent_hash_t h;
    ttb_agent_to_hash(&a, &h);
    static const char *const fields[] = {"id",  "name", "agent_type", "state", "cli",
                                         "created_at", "last_heartbeat", "tasks_completed",
                                         "rounds_completed", "last_active_at", "spawn_mode"};
    assert_int_equal(h.nset, 11);
    for (size_t i = 0; i < 11; i++) assert_string_equal(h.field[i], fields[i]);
    assert_memory_equal(h.value[2], "supervisor", 10);
    assert_memory_equal(h.value[3], "idle", 4);
    assert_int_equal(h.value_len[5], strlen("2026-11-24T06:51:00.005+00:00"));
    assert_memory_equal(h.value[5], "2026-11-24T06:51:00.005+00:00", h.value_len[5]);
    assert_int_equal(h.value_len[7], 20);
    assert_memory_equal(h.value[7], "18446744073709551615", 20);
    assert_memory_equal(h.value[8], "1234567890123", h.value_len[8]);
    assert_memory_equal(h.value[10], "fresh", h.value_len[10]);
    assert_int_equal(h.ndel, 4);
    assert_string_equal(h.del[0], "current_task");
    assert_string_equal(h.del[1], "nickname");
    assert_string_equal(h.del[2], "role_id");
    assert_string_equal(h.del[3], "parent_agent_id");
    ttb_agent_clear(&a);
}

static void test_encode_some_optionals(void **state) {
    (void)state;
    ttb_agent_t a;
    DECODE(&a, "id", ID, "nickname", "Fred", "parent_agent_id", SUP);
    ttb_agent_hash_t h;
    ttb_agent_to_hash(&a, &h);
    assert_int_equal(h.nset, 13);
    assert_string_equal(h.field[11], "nickname");
    assert_string_equal(h.field[12], "parent_agent_id");
    assert_int_equal(h.ndel, 2);
    assert_string_equal(h.del[0], "current_task");
    assert_string_equal(h.del[1], "role_id");
    ttb_agent_clear(&a);
}

/* Encode, then decode what was written: the same agent comes back. */
static void round_trip(const ttb_agent_t *a) {
    ttb_agent_hash_t h;
    ttb_agent_to_hash(a, &h);
    const char *kv[2 * TTB_AGENT_HASH_MAX];
    size_t lens[2 * TTB_AGENT_HASH_MAX];
    for (size_t i = 0; i < h.nset; i++) {
        kv[2 * i] = h.field[i];
        lens[2 * i] = strlen(h.field[i]);
        kv[2 * i + 1] = h.value[i];
        lens[2 * i + 1] = h.value_len[i];
    }
    ttb_agent_t b;
    ttb_time_t other_now = {1, 1};
    assert_int_equal(ttb_agent_from_hash(&b, kv, lens, 2 * h.nset, other_now), TTB_OK);
    assert_string_equal(b.id, a->id);
    assert_string_equal(b.name, a->name);
    if (a->nickname) assert_string_equal(b.nickname, a->nickname);
    else assert_null(b.nickname);
    if (a->role_id) assert_string_equal(b.role_id, a->role_id);
    else assert_null(b.role_id);
    assert_string_equal(b.parent_agent_id, a->parent_agent_id);
    assert_string_equal(b.current_task, a->current_task);
    assert_string_equal(b.cli, a->cli);
    assert_int_equal(b.spawn_mode, a->spawn_mode);
    assert_int_equal(b.agent_type, a->agent_type);
    assert_int_equal(b.state, a->state);
    assert_int_equal(ttb_time_cmp(b.created_at, a->created_at), 0);
    assert_int_equal(ttb_time_cmp(b.last_heartbeat, a->last_heartbeat), 0);
    assert_int_equal(ttb_time_cmp(b.last_active_at, a->last_active_at), 0);
    assert_int_equal(b.tasks_completed, a->tasks_completed);
    assert_int_equal(b.rounds_completed, a->rounds_completed);
    ttb_agent_clear(&b);
}

static void test_round_trip(void **state) {
    (void)state;
    ttb_agent_t a;
    assert_int_equal(decode(&a, FULL, FULL_N), TTB_OK);
    round_trip(&a);
    for (int s = 0; s < TTB_STATE__COUNT; s++) {
        a.state = (ttb_agent_state_t)s;
        a.spawn_mode = (ttb_spawn_mode_t)(s % 3);
        a.agent_type = (ttb_agent_type_t)(s % 2);
        a.tasks_completed = (uint64_t)s * 1000003u;
        a.created_at.nsec = s * 1000;
        round_trip(&a);
    }
    ttb_agent_clear(&a);
    assert_int_equal(decode(&a, MINIMAL, MINIMAL_N), TTB_OK);
    round_trip(&a);
    ttb_agent_clear(&a);

    /* A brand new agent as spawn makes it. */
    ttb_agent_t n;
    memset(&n, 0, sizeof n);
    assert_int_equal(ttb_uuid_v4(n.id), TTB_OK);
    n.name = strdup("worker-1");
    n.nickname = strdup(ttb_nickname_from_id(n.id));
    n.cli = strdup("claude");
    n.state = TTB_STATE_STARTING;
    n.created_at = n.last_heartbeat = n.last_active_at = ttb_time_now();
    round_trip(&n);
    ttb_agent_clear(&n);
}

static void test_json(void **state) {
    (void)state;
    ttb_agent_t a;
    assert_int_equal(decode(&a, FULL, FULL_N), TTB_OK);
    assert_json(ttb_agent_to_json(&a),
                "{\"id\":\"" ID "\",\"name\":\"backend\",\"nickname\":\"Lonnie\","
                "\"role_id\":\"reviewer\",\"parent_agent_id\":\"" SUP "\","
                "\"spawn_mode\":\"forkedcontext\",\"agent_type\":\"worker\","
                "\"state\":\"working\",\"cli\":\"claude\",\"current_task\":\"" TASK "\","
                "\"created_at\":\"2026-11-24T06:51:00.123456789Z\","
                "\"last_heartbeat\":\"2026-11-24T06:52:00.500Z\",\"tasks_completed\":3,"
                "\"rounds_completed\":7,\"last_active_at\":\"2026-11-24T06:53:00Z\"}");
    assert_json(ttb_agent_info_to_json(&a, 2, 0, "Fix the login bug"),
                "{\"id\":\"" ID "\",\"name\":\"backend\",\"nickname\":\"Lonnie\","
                "\"role_id\":\"reviewer\",\"parent_agent_id\":\"" SUP "\","
                "\"spawn_mode\":\"forkedcontext\",\"agent_type\":\"worker\","
                "\"state\":\"working\",\"cli\":\"claude\",\"current_task\":\"" TASK "\","
                "\"created_at\":\"2026-11-24T06:51:00.123456789Z\","
                "\"last_heartbeat\":\"2026-11-24T06:52:00.500Z\",\"tasks_completed\":3,"
                "\"rounds_completed\":7,\"last_active_at\":\"2026-11-24T06:53:00Z\","
                "\"inbox_len\":2,\"urgent_len\":0,\"current_scope\":\"Fix the login bug\"}");
    ttb_agent_clear(&a);

    assert_int_equal(decode(&a, MINIMAL, MINIMAL_N), TTB_OK);
    assert_json(ttb_agent_to_json(&a),
                "{\"id\":\"" ID "\",\"name\":\"backend\",\"nickname\":null,\"role_id\":null,"
                "\"parent_agent_id\":null,\"spawn_mode\":\"fresh\","
                "\"agent_type\":\"supervisor\",\"state\":\"idle\",\"cli\":\"codex\","
                "\"current_task\":null,\"created_at\":\"2026-11-24T06:51:00Z\","
                "\"last_heartbeat\":\"2026-11-24T06:51:00Z\",\"tasks_completed\":0,"
                "\"rounds_completed\":0,\"last_active_at\":\"2026-11-24T06:51:00Z\"}");
    char *s = dump(ttb_agent_info_to_json(&a, 0, 5, NULL));
    const char *tail = "\"inbox_len\":0,\"urgent_len\":5,\"current_scope\":null}";
    assert_string_equal(s + strlen(s) - strlen(tail), tail);
    free(s);
    ttb_agent_clear(&a);
}

static void test_json_escaping_and_bad_utf8(void **state) {
    (void)state;
    ttb_agent_t a = mk(ID, "say \"hi\"\\\n", "Zo\xc3\xab", NULL);
    a.tasks_completed = UINT64_MAX; /* beyond jansson's integers: clamped */
    free(a.cli);
    a.cli = strdup("bad\xff");
    char *s = dump(ttb_agent_to_json(&a));
    assert_non_null(strstr(s, "\"name\":\"say \\\"hi\\\"\\\\\\n\""));
    assert_non_null(strstr(s, "\"nickname\":\"Zo\xc3\xab\""));
    assert_non_null(strstr(s, "\"cli\":\"bad\xef\xbf\xbd\""));
    assert_non_null(strstr(s, "\"tasks_completed\":9223372036854775807,"));
    free(s);
    ttb_agent_clear(&a);
    assert_null(ttb_agent_to_json(NULL));
}

static void test_display(void **state) {
    (void)state;
    char buf[128];
    ttb_agent_t a = mk(ID, "backend", "Fred", "reviewer");
    assert_string_equal(ttb_agent_display_name(&a), "Fred");
    assert_string_equal(ttb_agent_effective_role(&a), "reviewer");
    assert_int_equal(ttb_agent_display_label(&a, buf, sizeof buf), 15);
    assert_string_equal(buf, "Fred [reviewer]");
    ttb_agent_clear(&a);

    a = mk(ID, "backend", NULL, "reviewer");
    assert_string_equal(ttb_agent_display_name(&a), "backend");
    ttb_agent_display_label(&a, buf, sizeof buf);
    assert_string_equal(buf, "backend [reviewer]");
    ttb_agent_clear(&a);

    a = mk(ID, "backend", "Fred", NULL);
    assert_string_equal(ttb_agent_effective_role(&a), "default");
    ttb_agent_display_label(&a, buf, sizeof buf);
    assert_string_equal(buf, "Fred [backend]");
    ttb_agent_clear(&a);

    a = mk(ID, "backend", "Fred", "default"); /* explicit default: same rule */
    ttb_agent_display_label(&a, buf, sizeof buf);
    assert_string_equal(buf, "Fred [backend]");
    ttb_agent_clear(&a);

    a = mk(ID, "backend", NULL, NULL);
    ttb_agent_display_label(&a, buf, sizeof buf);
    assert_string_equal(buf, "backend [backend]");
    /* Truncated like snprintf, returning the full length. */
    assert_int_equal(ttb_agent_display_label(&a, buf, 8), 17);
    assert_string_equal(buf, "backend");
    assert_int_equal(ttb_agent_display_label(&a, NULL, 0), 17);

    char sid[5];
    ttb_agent_short_id(&a, sid);
    assert_string_equal(sid, "67e5");
    ttb_agent_clear(&a);
}

static void test_trim(void **state) {
    (void)state;
    size_t len;
    const char *s = "  \t\n\v\f\r hello world \r\n";
    const char *t = ttb_str_trim(s, &len);
    assert_int_equal(len, 11);
    assert_memory_equal(t, "hello world", 11);

    /* Every Unicode White_Space character, at both ends. */
    static const char *const spaces[] = {
        "\x09", "\x0a", "\x0b", "\x0c", "\x0d", "\x20", "\xc2\x85", "\xc2\xa0", "\xe1\x9a\x80",
        "\xe2\x80\x80", "\xe2\x80\x81", "\xe2\x80\x82", "\xe2\x80\x83", "\xe2\x80\x84",
        "\xe2\x80\x85", "\xe2\x80\x86", "\xe2\x80\x87", "\xe2\x80\x88", "\xe2\x80\x89",
        "\xe2\x80\x8a", "\xe2\x80\xa8", "\xe2\x80\xa9", "\xe2\x80\xaf", "\xe2\x81\x9f",
        "\xe3\x80\x80",
    };
    for (size_t i = 0; i < sizeof spaces / sizeof spaces[0]; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%s%sx y%s%s", spaces[i], spaces[i], spaces[i], spaces[i]);
        t = ttb_str_trim(buf, &len);
        if (len != 3 || memcmp(t, "x y", 3) != 0) fail_msg("space #%zu not trimmed", i);
    }
    /* Not White_Space: ZERO WIDTH SPACE, BOM, U+200B..., NUL-free others. */
    static const char *const kept[] = {"\xe2\x80\x8b", "\xef\xbb\xbf", "\xe2\x81\xa0",
                                       "\xe1\xa0\x8e", "\xc2\xa1", "\xe2\x80\x8c"};
    for (size_t i = 0; i < sizeof kept / sizeof kept[0]; i++) {
        char buf[32];
        snprintf(buf, sizeof buf, "%sx%s", kept[i], kept[i]);
        t = ttb_str_trim(buf, &len);
        assert_ptr_equal(t, buf);
        assert_int_equal(len, strlen(buf));
    }
    t = ttb_str_trim("", &len);
    assert_int_equal(len, 0);
    t = ttb_str_trim(" \xe3\x80\x80 \t", &len);
    assert_int_equal(len, 0);
    /* A lone continuation byte or a truncated sequence is not a space. */
    t = ttb_str_trim("\x80x\xe2\x80", &len);
    assert_int_equal(len, 4);
}

static void test_reserved_names(void **state) {
    (void)state;
    assert_true(ttb_agent_name_is_reserved("supervisor"));
    assert_true(ttb_agent_name_is_reserved("conductor"));
    assert_true(ttb_agent_name_is_reserved("Supervisor"));
    assert_true(ttb_agent_name_is_reserved("CONDUCTOR"));
    assert_true(ttb_agent_name_is_reserved("  SuperVisor\t\n"));
    assert_true(ttb_agent_name_is_reserved("\xe3\x80\x80" "conductor" "\xc2\xa0"));
    assert_false(ttb_agent_name_is_reserved("supervisor-2"));
    assert_false(ttb_agent_name_is_reserved("super visor"));
    assert_false(ttb_agent_name_is_reserved("conductors"));
    assert_false(ttb_agent_name_is_reserved("\xe2\x80\x8b" "conductor")); /* ZWSP kept */
    assert_false(ttb_agent_name_is_reserved("backend"));
    assert_false(ttb_agent_name_is_reserved(""));
}

static void test_ref_as_uuid(void **state) {
    (void)state;
    char out[TTB_UUID_BUFSZ];
    assert_true(ttb_agent_ref_as_uuid(ID, out));
    assert_string_equal(out, ID);
    assert_true(ttb_agent_ref_as_uuid("  67E55044-10B1-426F-9247-BB680E5FE0C8\n", out));
    assert_string_equal(out, ID);
    assert_true(ttb_agent_ref_as_uuid("\t{" ID "} ", out));
    assert_string_equal(out, ID);
    assert_true(ttb_agent_ref_as_uuid("67e5504410b1426f9247bb680e5fe0c8", out));
    assert_string_equal(out, ID);
    assert_false(ttb_agent_ref_as_uuid("67e5", out));
    assert_false(ttb_agent_ref_as_uuid("backend", out));
    assert_false(ttb_agent_ref_as_uuid("URN:UUID:" ID, out));
    assert_false(ttb_agent_ref_as_uuid("", out));
    /* tinytown's aliases of the supervisor. */
    assert_true(ttb_agent_ref_as_uuid(" SUPERVISOR ", out));
    assert_string_equal(out, TTB_UUID_SUPERVISOR);
    assert_true(ttb_agent_ref_as_uuid("Conductor", out));
    assert_string_equal(out, TTB_UUID_SUPERVISOR);
    assert_false(ttb_agent_ref_as_uuid("supervisors", out));
}

/* The town used by the resolution tests. */
#define A_ID "abcd1111-0000-4000-8000-000000000001"
#define B_ID "ef012222-0000-4000-8000-000000000002"
#define C_ID "abcd3333-0000-4000-8000-000000000003"
#define D_ID "12344444-0000-4000-8000-000000000004"

typedef struct town {
    ttb_agent_t agents[4];
} town_t;

static int town_setup(void **state) {
    town_t *t = calloc(1, sizeof *t);
    if (t == NULL) return -1;
    t->agents[0] = mk(A_ID, "backend", "Fred", "reviewer");
    t->agents[1] = mk(B_ID, "frontend", "Mary", NULL);
    t->agents[2] = mk(C_ID, "fred", NULL, "default");
    /* Named like another agent's id: ids are matched by id only. */
    t->agents[3] = mk(D_ID, "ef012222-0000-4000-8000-000000000009", "Zo\xc3\xab", "researcher");
    *state = t;
    return 0;
}

static int town_teardown(void **state) {
    town_t *t = *state;
    for (size_t i = 0; i < 4; i++) ttb_agent_clear(&t->agents[i]);
    free(t);
    return 0;
}

static void assert_resolves(town_t *t, const char *ref, size_t expected) {
    size_t index = 99;
    char err[256] = "untouched";
    ttb_code_t code = ttb_agent_resolve(t->agents, 4, ref, &index, err, sizeof err);
    if (code != TTB_CODE_OK) fail_msg("'%s' did not resolve: %s", ref, err);
    assert_int_equal(index, expected);
}

static void assert_not_found(town_t *t, const char *ref, const char *message) {
    size_t index = 99;
    char err[256];
    assert_int_equal(ttb_agent_resolve(t->agents, 4, ref, &index, err, sizeof err),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, message);
    assert_int_equal(index, 99);
}

static void test_resolve_matches(void **state) {
    town_t *t = *state;
    assert_resolves(t, "backend", 0);
    assert_resolves(t, "BACKEND", 0);
    assert_resolves(t, "  backend\n", 0);
    assert_resolves(t, "Fred [reviewer]", 0);
    assert_resolves(t, "fred [REVIEWER]", 0);
    assert_resolves(t, "frontend", 1);
    assert_resolves(t, "mary", 1);
    assert_resolves(t, "Mary [frontend]", 1);
    assert_resolves(t, "\xe3\x80\x80MARY [FRONTEND]\xc2\xa0", 1);
    assert_resolves(t, "ef01", 1);
    assert_resolves(t, "EF01", 1);
    assert_resolves(t, "fred [fred]", 2);
    assert_resolves(t, "1234", 3);
    assert_resolves(t, "Zo\xc3\xab", 3);
    assert_resolves(t, "zo\xc3\xab [Researcher]", 3);
    /* A full UUID, in any form and case, with whitespace: by id only. */
    assert_resolves(t, A_ID, 0);
    assert_resolves(t, " \tEF012222-0000-4000-8000-000000000002 \n", 1);
    assert_resolves(t, "{abcd3333-0000-4000-8000-000000000003}", 2);
    assert_resolves(t, "abcd3333000040008000000000000003", 2);
}

static void test_resolve_not_found(void **state) {
    town_t *t = *state;
    assert_not_found(t, "", "agent '' not found");
    assert_not_found(t, " \t\n", "agent '' not found");
    assert_not_found(t, "nobody", "agent 'nobody' not found");
    assert_not_found(t, "  nobody  ", "agent 'nobody' not found");
    assert_not_found(t, "ab", "agent 'ab' not found");
    assert_not_found(t, "abcd1", "agent 'abcd1' not found");
    assert_not_found(t, "Fred [backend]", "agent 'Fred [backend]' not found");
    assert_not_found(t, "Zo\xc3\x8b", "agent 'Zo\xc3\x8b' not found"); /* ASCII case only */
    /* Agent 3's name equals this UUID, but a UUID is matched by id only. */
    assert_not_found(t, "ef012222-0000-4000-8000-000000000009",
                     "agent 'ef012222-0000-4000-8000-000000000009' not found");
    assert_not_found(t, "EF012222-0000-4000-8000-000000000009",
                     "agent 'EF012222-0000-4000-8000-000000000009' not found");
    size_t index;
    char err[64];
    assert_int_equal(ttb_agent_resolve(NULL, 0, "backend", &index, err, sizeof err),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, "agent 'backend' not found");
}

static void test_resolve_ambiguous(void **state) {
    town_t *t = *state;
    size_t index = 99;
    char err[256];
    /* Fred is agent 0's nickname and agent 2's name. */
    assert_int_equal(ttb_agent_resolve(t->agents, 4, " FRED ", &index, err, sizeof err),
                     TTB_CODE_AMBIGUOUS_AGENT);
    assert_string_equal(err, "agent reference 'FRED' is ambiguous: Fred [reviewer] (abcd), "
                             "fred [fred] (abcd)");
    assert_int_equal(index, 99);
    /* The exact name of one agent is that agent, as tinytown 0.10.0's `tt`
     * resolves it (Fred the nickname and fred the name stay apart). */
    assert_int_equal(ttb_agent_resolve(t->agents, 4, " fred ", &index, err, sizeof err),
                     TTB_CODE_OK);
    assert_int_equal(index, 2);
    /* Two ids starting with abcd. */
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "ABCD", &index, err, sizeof err),
                     TTB_CODE_AMBIGUOUS_AGENT);
    assert_string_equal(err, "agent reference 'ABCD' is ambiguous: Fred [reviewer] (abcd), "
                             "fred [fred] (abcd)");
}

static void test_resolve_message_truncation(void **state) {
    town_t *t = *state;
    size_t index;
    char err[300];
    const char *full = "agent reference 'FRED' is ambiguous: Fred [reviewer] (abcd), "
                       "fred [fred] (abcd)";
    for (size_t size = 0; size <= strlen(full) + 1; size++) {
        memset(err, 'x', sizeof err);
        assert_int_equal(ttb_agent_resolve(t->agents, 4, "FRED", &index, err, size),
                         TTB_CODE_AMBIGUOUS_AGENT);
        if (size == 0) {
            assert_int_equal(err[0], 'x'); /* nothing written */
            continue;
        }
        assert_int_equal(strlen(err), size - 1);
        assert_memory_equal(err, full, size - 1);
        assert_int_equal(err[size], 'x'); /* nothing past the buffer */
    }
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "FRED", &index, NULL, 0),
                     TTB_CODE_AMBIGUOUS_AGENT);

    /* A cut never splits a UTF-8 character: "Zoë" with the ë cut in half. */
    const char *zoe = "agent 'Zo\xc3\xab!' not found";
    size_t cut = strlen("agent 'Zo") + 2; /* room for "agent 'Zo" and one byte of ë */
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "Zo\xc3\xab!", &index, err, cut),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, "agent 'Zo");
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "Zo\xc3\xab!", &index, err, cut + 1),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, "agent 'Zo\xc3\xab");
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "Zo\xc3\xab!", &index, err, 100),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, zoe);
    /* Three- and four-byte characters too. */
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "\xe2\x82\xac\xf0\x9f\x98\x80", &index, err,
                                       strlen("agent '") + 3),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, "agent '");
    assert_int_equal(ttb_agent_resolve(t->agents, 4, "\xe2\x82\xac\xf0\x9f\x98\x80", &index, err,
                                       strlen("agent '") + 7),
                     TTB_CODE_AGENT_NOT_FOUND);
    assert_string_equal(err, "agent '\xe2\x82\xac");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_states),
        cmocka_unit_test(test_types_and_spawn_modes),
        cmocka_unit_test(test_nickname_from_id),
        cmocka_unit_test(test_decode_full),
        cmocka_unit_test(test_decode_minimal),
        cmocka_unit_test(test_decode_only_id),
        cmocka_unit_test(test_decode_every_enum_value),
        cmocka_unit_test(test_decode_unknown_enum_values),
        cmocka_unit_test(test_decode_enum_json_escapes),
        cmocka_unit_test(test_decode_counters),
        cmocka_unit_test(test_decode_timestamps),
        cmocka_unit_test(test_decode_ids),
        cmocka_unit_test(test_decode_rejects_without_id),
        cmocka_unit_test(test_decode_duplicates_last_wins),
        cmocka_unit_test(test_decode_unknown_fields_and_odd_count),
        cmocka_unit_test(test_decode_binary_values),
        cmocka_unit_test(test_decode_empty_optional_strings_are_present),
        cmocka_unit_test(test_encode_full),
        cmocka_unit_test(test_encode_minimal),
        cmocka_unit_test(test_encode_some_optionals),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_json),
        cmocka_unit_test(test_json_escaping_and_bad_utf8),
        cmocka_unit_test(test_display),
        cmocka_unit_test(test_trim),
        cmocka_unit_test(test_reserved_names),
        cmocka_unit_test(test_ref_as_uuid),
        cmocka_unit_test_setup_teardown(test_resolve_matches, town_setup, town_teardown),
        cmocka_unit_test_setup_teardown(test_resolve_not_found, town_setup, town_teardown),
        cmocka_unit_test_setup_teardown(test_resolve_ambiguous, town_setup, town_teardown),
        cmocka_unit_test_setup_teardown(test_resolve_message_truncation, town_setup,
                                        town_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
