/* SPDX-License-Identifier: MIT */
/*
 * Command records: every op parsed into the right fields, every error code
 * the parser can answer reached through the rule that produces it, field
 * lengths at and just over their limits, the fields kept for error results,
 * and the exact bytes of encoded results (they are the protocol).
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tinytown_bridge/command.h"

static const char *const towns[] = {"demo", "other"};
static ttb_command_policy_t policy;
static ttb_command_t cmd;
static char err[512];

/* Every test starts from the same policy and frees what its parse left. */
static int setup(void **state) {
    (void)state;
    memset(&policy, 0, sizeof policy);
    policy.max_record_bytes = 4096;
    policy.default_town = "demo";
    policy.towns = towns;
    policy.ntowns = 2;
    policy.default_cli = "claude";
    policy.max_wait_ms = 60000;
    memset(&cmd, 0, sizeof cmd);
    err[0] = '\0';
    return 0;
}

static int teardown(void **state) {
    (void)state;
    ttb_command_clear(&cmd);
    return 0;
}

static ttb_code_t parse_n(const char *buf, size_t len) {
    ttb_command_clear(&cmd);
    return ttb_command_parse(buf, len, &policy, &cmd, err, sizeof err);
}

static ttb_code_t parse(const char *json) { return parse_n(json, strlen(json)); }

/* Parses a record and checks its code; on a mismatch the message says why. */
#define expect_code(json, want)                                                                  \
    do {                                                                                         \
        ttb_code_t got_ = parse(json);                                                           \
        if (got_ != (want))                                                                      \
            fail_msg("%s: got %s (%s), want %s", (json), ttb_code_name(got_), err,               \
                     ttb_code_name(want));                                                       \
    } while (0)

/* An error is one line that names the field it is about. */
#define expect_error(json, want, field)                                                          \
    do {                                                                                         \
        expect_code(json, want);                                                                 \
        if (strstr(err, (field)) == NULL) fail_msg("%s: message \"%s\" lacks %s", (json), err, (field)); \
        assert_null(strchr(err, '\n'));                                                          \
    } while (0)

/* A string of @p n copies of @p c, in one of a few static slots. */
static const char *rep(char c, size_t n) {
    static char slots[4][4096];
    static int next;
    char *s = slots[next++ % 4];
    assert_true(n < sizeof slots[0]);
    memset(s, c, n);
    s[n] = '\0';
    return s;
}

static char rec[4096];
#define RECORD(...) (snprintf(rec, sizeof rec, __VA_ARGS__), rec)

/* ---- ops and their fields ------------------------------------------------ */

static void test_op_table(void **state) {
    (void)state;
    static const char *const names[TTB_OP__COUNT] = {
        "spawn",     "list",   "list_open", "status", "kill", "stop_all",  "restart",
        "prune",     "interrupt", "resume", "close",  "wait", "get_result",
    };
    for (int i = 0; i < (int)TTB_OP__COUNT; i++) {
        ttb_op_t op = TTB_OP__COUNT;
        assert_string_equal(ttb_op_name((ttb_op_t)i), names[i]);
        assert_int_equal(ttb_op_parse(names[i], &op), TTB_OK);
        assert_int_equal(op, i);
    }
    ttb_op_t op;
    assert_int_equal(ttb_op_parse("Spawn", &op), TTB_ERR_INVALID);
    assert_int_equal(ttb_op_parse("spawn ", &op), TTB_ERR_INVALID);
    assert_int_equal(ttb_op_parse("", &op), TTB_ERR_INVALID);
    assert_string_equal(ttb_op_name(TTB_OP__COUNT), "unknown");

    const ttb_op_t mutating[] = {TTB_OP_SPAWN,   TTB_OP_KILL,      TTB_OP_STOP_ALL,
                                 TTB_OP_RESTART, TTB_OP_PRUNE,     TTB_OP_INTERRUPT,
                                 TTB_OP_RESUME,  TTB_OP_CLOSE};
    const ttb_op_t with_agent[] = {TTB_OP_KILL,   TTB_OP_RESTART, TTB_OP_INTERRUPT,
                                   TTB_OP_RESUME, TTB_OP_CLOSE,   TTB_OP_WAIT,
                                   TTB_OP_GET_RESULT};
    for (int i = 0; i < (int)TTB_OP__COUNT; i++) {
        bool m = false, a = false;
        for (size_t j = 0; j < sizeof mutating / sizeof mutating[0]; j++) m |= (int)mutating[j] == i;
        for (size_t j = 0; j < sizeof with_agent / sizeof with_agent[0]; j++)
            a |= (int)with_agent[j] == i;
        assert_int_equal(ttb_op_is_mutating((ttb_op_t)i), m);
        assert_int_equal(ttb_op_takes_agent((ttb_op_t)i), a);
    }
}

static void test_spawn_all_args(void **state) {
    (void)state;
    expect_code("{\"id\":\"c-1\",\"town\":\"other\",\"op\":\"spawn\",\"args\":{\"name\":\"worker 1\","
                "\"cli\":\"codex\",\"role_id\":\"reviewer\",\"nickname\":\"Bob\",\"parent\":\"boss\","
                "\"spawn_mode\":\"forkedcontext\"}}",
                TTB_CODE_OK);
    assert_string_equal(cmd.id, "c-1");
    assert_string_equal(cmd.town, "other");
    assert_string_equal(cmd.op_name, "spawn");
    assert_int_equal(cmd.op, TTB_OP_SPAWN);
    assert_string_equal(cmd.name, "worker 1");
    assert_string_equal(cmd.cli, "codex");
    assert_string_equal(cmd.role_id, "reviewer");
    assert_string_equal(cmd.nickname, "Bob");
    assert_string_equal(cmd.parent, "boss");
    assert_true(cmd.has_spawn_mode);
    assert_int_equal(cmd.spawn_mode, TTB_SPAWN_FORKED_CONTEXT);
    assert_null(cmd.agent);
    assert_string_equal(err, "");
}

static void test_spawn_defaults(void **state) {
    (void)state;
    expect_code("{\"id\":\"c-2\",\"op\":\"spawn\",\"args\":{\"name\":\"w\"}}", TTB_CODE_OK);
    assert_string_equal(cmd.town, "demo");
    assert_string_equal(cmd.cli, "claude");
    assert_null(cmd.role_id);
    assert_null(cmd.nickname);
    assert_null(cmd.parent);
    assert_false(cmd.has_spawn_mode);

    /* null is "not given" for optional arguments and for town */
    expect_code("{\"id\":\"c-2\",\"town\":null,\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"cli\":null,"
                "\"nickname\":null,\"spawn_mode\":null}}",
                TTB_CODE_OK);
    assert_string_equal(cmd.town, "demo");
    assert_string_equal(cmd.cli, "claude");
    assert_null(cmd.nickname);
    assert_false(cmd.has_spawn_mode);

    policy.default_cli = NULL;
    expect_code("{\"id\":\"c-2\",\"op\":\"spawn\",\"args\":{\"name\":\"w\"}}", TTB_CODE_OK);
    assert_null(cmd.cli);
}

static void test_spawn_modes(void **state) {
    (void)state;
    const struct {
        const char *name;
        ttb_spawn_mode_t mode;
    } modes[] = {{"fresh", TTB_SPAWN_FRESH},
                 {"forkedcontext", TTB_SPAWN_FORKED_CONTEXT},
                 {"resumed", TTB_SPAWN_RESUMED}};
    for (size_t i = 0; i < 3; i++) {
        expect_code(RECORD("{\"id\":\"m\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"spawn_mode\":\"%s\"}}",
                           modes[i].name),
                    TTB_CODE_OK);
        assert_true(cmd.has_spawn_mode);
        assert_int_equal(cmd.spawn_mode, modes[i].mode);
    }
    expect_error("{\"id\":\"m\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"spawn_mode\":\"Fresh\"}}",
                 TTB_CODE_INVALID_COMMAND, "args.spawn_mode");
    expect_error("{\"id\":\"m\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"spawn_mode\":\"forked_context\"}}",
                 TTB_CODE_INVALID_COMMAND, "args.spawn_mode");
    expect_error("{\"id\":\"m\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"spawn_mode\":1}}",
                 TTB_CODE_INVALID_COMMAND, "args.spawn_mode must be a string");
}

static void test_agent_ops(void **state) {
    (void)state;
    const struct {
        const char *name;
        ttb_op_t op;
    } ops[] = {{"kill", TTB_OP_KILL},         {"restart", TTB_OP_RESTART},
               {"interrupt", TTB_OP_INTERRUPT}, {"resume", TTB_OP_RESUME},
               {"close", TTB_OP_CLOSE},       {"get_result", TTB_OP_GET_RESULT},
               {"wait", TTB_OP_WAIT}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        expect_code(RECORD("{\"id\":\"a:%zu\",\"town\":\"demo\",\"op\":\"%s\",\"args\":{\"agent\":\"Bob [reviewer]\"}}",
                           i, ops[i].name),
                    TTB_CODE_OK);
        assert_int_equal(cmd.op, ops[i].op);
        assert_string_equal(cmd.op_name, ops[i].name);
        assert_string_equal(cmd.agent, "Bob [reviewer]");
        assert_null(cmd.name);
        assert_null(cmd.cli);

        expect_error(RECORD("{\"id\":\"a\",\"op\":\"%s\"}", ops[i].name), TTB_CODE_INVALID_COMMAND,
                     "args.agent is required");
        expect_error(RECORD("{\"id\":\"a\",\"op\":\"%s\",\"args\":{\"agent\":null}}", ops[i].name),
                     TTB_CODE_INVALID_COMMAND, "args.agent is required");
        expect_error(RECORD("{\"id\":\"a\",\"op\":\"%s\",\"args\":{\"agent\":7}}", ops[i].name),
                     TTB_CODE_INVALID_COMMAND, "args.agent must be a string");
        expect_error(RECORD("{\"id\":\"a\",\"op\":\"%s\",\"args\":{\"agent\":\"w\",\"name\":\"x\"}}",
                            ops[i].name),
                     TTB_CODE_INVALID_COMMAND, "\"name\"");
    }
}

static void test_wait_timeout(void **state) {
    (void)state;
    expect_code("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\"}}", TTB_CODE_OK);
    assert_int_equal(cmd.timeout_ms, 60000);
    expect_code("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\",\"timeout_ms\":1500}}", TTB_CODE_OK);
    assert_int_equal(cmd.timeout_ms, 1500);
    expect_code("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\",\"timeout_ms\":0}}", TTB_CODE_OK);
    assert_int_equal(cmd.timeout_ms, 0);
    expect_code("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\",\"timeout_ms\":60000}}", TTB_CODE_OK);
    assert_int_equal(cmd.timeout_ms, 60000);
    /* over the limit is capped, not refused */
    expect_code("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\",\"timeout_ms\":60001}}", TTB_CODE_OK);
    assert_int_equal(cmd.timeout_ms, 60000);
    expect_code("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\",\"timeout_ms\":9223372036854775807}}",
                TTB_CODE_OK);
    assert_int_equal(cmd.timeout_ms, 60000);

    const char *bad[] = {"-1", "1.5", "1000.0", "1e3", "\"1000\"", "true", "[]", "{}"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_error(RECORD("{\"id\":\"w\",\"op\":\"wait\",\"args\":{\"agent\":\"x\",\"timeout_ms\":%s}}", bad[i]),
                     TTB_CODE_INVALID_COMMAND, "args.timeout_ms");
    }
}

static void test_prune(void **state) {
    (void)state;
    expect_code("{\"id\":\"p\",\"op\":\"prune\"}", TTB_CODE_OK);
    assert_int_equal(cmd.op, TTB_OP_PRUNE);
    assert_false(cmd.all);
    expect_code("{\"id\":\"p\",\"op\":\"prune\",\"args\":{\"all\":true}}", TTB_CODE_OK);
    assert_true(cmd.all);
    expect_code("{\"id\":\"p\",\"op\":\"prune\",\"args\":{\"all\":false}}", TTB_CODE_OK);
    assert_false(cmd.all);
    expect_error("{\"id\":\"p\",\"op\":\"prune\",\"args\":{\"all\":\"yes\"}}", TTB_CODE_INVALID_COMMAND,
                 "args.all");
    expect_error("{\"id\":\"p\",\"op\":\"prune\",\"args\":{\"all\":1}}", TTB_CODE_INVALID_COMMAND, "args.all");
    expect_error("{\"id\":\"p\",\"op\":\"prune\",\"args\":{\"agent\":\"x\"}}", TTB_CODE_INVALID_COMMAND,
                 "\"agent\"");
}

static void test_ops_without_args(void **state) {
    (void)state;
    const struct {
        const char *name;
        ttb_op_t op;
    } ops[] = {{"list", TTB_OP_LIST},
               {"list_open", TTB_OP_LIST_OPEN},
               {"status", TTB_OP_STATUS},
               {"stop_all", TTB_OP_STOP_ALL}};
    for (size_t i = 0; i < sizeof ops / sizeof ops[0]; i++) {
        expect_code(RECORD("{\"id\":\"n\",\"op\":\"%s\"}", ops[i].name), TTB_CODE_OK);
        assert_int_equal(cmd.op, ops[i].op);
        assert_string_equal(cmd.town, "demo");
        assert_null(cmd.agent);
        expect_code(RECORD("{\"id\":\"n\",\"op\":\"%s\",\"args\":{}}", ops[i].name), TTB_CODE_OK);
        expect_code(RECORD("{\"id\":\"n\",\"op\":\"%s\",\"args\":null}", ops[i].name), TTB_CODE_OK);
        expect_error(RECORD("{\"id\":\"n\",\"op\":\"%s\",\"args\":{\"all\":true}}", ops[i].name),
                     TTB_CODE_INVALID_COMMAND, "\"all\"");
        expect_error(RECORD("{\"id\":\"n\",\"op\":\"%s\",\"args\":{\"agent\":\"x\"}}", ops[i].name),
                     TTB_CODE_INVALID_COMMAND, "\"agent\"");
        expect_error(RECORD("{\"id\":\"n\",\"op\":\"%s\",\"args\":[]}", ops[i].name),
                     TTB_CODE_INVALID_COMMAND, "args must be an object");
    }
}

static void test_unknown_top_level_keys_ignored(void **state) {
    (void)state;
    expect_code("{\"trace\":{\"span\":[1,2]},\"id\":\"t\",\"op\":\"list\",\"x\":null,\"ID\":5}", TTB_CODE_OK);
    assert_string_equal(cmd.id, "t");
}

/* ---- too_large and invalid_json ----------------------------------------- */

static void test_too_large(void **state) {
    (void)state;
    policy.max_record_bytes = 100;
    /* pad an otherwise valid record with spaces to exactly the limit */
    char buf[128];
    const char *base = "{\"id\":\"big\",\"op\":\"list\"}";
    memset(buf, ' ', sizeof buf);
    memcpy(buf, base, strlen(base));
    assert_int_equal(parse_n(buf, 100), TTB_CODE_OK);
    assert_string_equal(cmd.id, "big");

    assert_int_equal(parse_n(buf, 101), TTB_CODE_TOO_LARGE);
    assert_string_equal(err, "record is 101 bytes, larger than the limit of 100");
    /* not parsed: nothing is filled in */
    assert_null(cmd.id);
    assert_null(cmd.town);
    assert_null(cmd.op_name);

    /* the size check comes before syntax */
    assert_int_equal(parse_n(rep('x', 101), 101), TTB_CODE_TOO_LARGE);
}

static void test_invalid_json(void **state) {
    (void)state;
    const char *bad[] = {
        "",
        "{",
        "{\"id\":\"x\",}",
        "{\"id\":\"x\"} trailing",
        "{\"id\":\"x\"}{}",
        "42",          /* a bare scalar is not a document to jansson without DECODE_ANY */
        "\"a string\"",
        "null",
        "{'id':'x'}",
        "{\"id\":\"x\",\"op\":\"list\",\"op\":\"kill\"}", /* duplicate keys */
        "{\"id\":\"x\",\"args\":{\"agent\":\"a\",\"agent\":\"b\"},\"op\":\"kill\"}",
        "{\"id\":\"\xff\",\"op\":\"list\"}",           /* invalid UTF-8 */
        "{\"id\":\"x\",\"op\":\"list\",\"n\":\"\xc0\xaf\"}", /* overlong */
        "{\"id\":\"x\",\"op\":\"list\",\"n\":\"\xed\xa0\x80\"}", /* a surrogate */
        "{\"id\":\"x\",\"op\":\"list\",\"n\":\"a\\u0000b\"}", /* NUL is refused */
        "{\"id\":\"x\",\"op\":\"list\",\"n\":\"tab\tinside\"}",
        "{\"id\":\"x\",\"op\":\"list\",\"n\":123456789012345678901234567890}", /* overflows */
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        expect_code(bad[i], TTB_CODE_INVALID_JSON);
        assert_non_null(strstr(err, "invalid JSON at line 1"));
        assert_null(cmd.id);
        assert_null(cmd.op_name);
    }
    /* a raw NUL inside the record */
    static const char nul[] = "{\"id\":\"a\0b\",\"op\":\"list\"}";
    assert_int_equal(parse_n(nul, sizeof nul - 1), TTB_CODE_INVALID_JSON);

    /* position and jansson's reason are reported, hostile bytes escaped */
    expect_code("{\"id\":\"x\",\"op\":\"list\",\"op\":\"kill\"}", TTB_CODE_INVALID_JSON);
    assert_non_null(strstr(err, "duplicate object key"));
    expect_code("[1,\n2,\n\x01]", TTB_CODE_INVALID_JSON);
    assert_non_null(strstr(err, "line 3"));
    for (const char *p = err; *p; p++) assert_true(*p >= 0x20 && *p < 0x7f);
}

/* ---- invalid_command: shape ------------------------------------------------ */

static void test_not_an_object(void **state) {
    (void)state;
    expect_error("[]", TTB_CODE_INVALID_COMMAND, "command must be a JSON object, not an array");
    expect_error("[{\"id\":\"x\",\"op\":\"list\"}]", TTB_CODE_INVALID_COMMAND, "JSON object");
    assert_null(cmd.id);
}

static void test_id_rules(void **state) {
    (void)state;
    expect_error("{\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id is required");
    expect_error("{\"id\":null,\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id is required");
    expect_error("{\"id\":42,\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id must be a string");
    expect_error("{\"id\":\"\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id must not be empty");
    expect_error("{\"id\":\"a b\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id");
    expect_error("{\"id\":\"a/b\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id");
    expect_error("{\"id\":\"caf\\u00e9\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "id");
    expect_code("{\"id\":\"Az09._:-\",\"op\":\"list\"}", TTB_CODE_OK);
    assert_string_equal(cmd.id, "Az09._:-");

    expect_code(RECORD("{\"id\":\"%s\",\"op\":\"list\"}", rep('i', TTB_CMD_ID_MAX)), TTB_CODE_OK);
    assert_int_equal(strlen(cmd.id), TTB_CMD_ID_MAX);
    expect_error(RECORD("{\"id\":\"%s\",\"op\":\"list\"}", rep('i', TTB_CMD_ID_MAX + 1)),
                 TTB_CODE_INVALID_COMMAND, "id is 129 bytes, longer than the limit of 128");
    assert_null(cmd.id);
}

static void test_bad_id_keeps_town_and_op(void **state) {
    (void)state;
    expect_code("{\"id\":\"bad id\",\"town\":\"other\",\"op\":\"kill\",\"args\":{\"agent\":\"x\"}}",
                TTB_CODE_INVALID_COMMAND);
    assert_null(cmd.id);
    assert_string_equal(cmd.town, "other");
    assert_string_equal(cmd.op_name, "kill");
    assert_null(cmd.agent); /* args are not looked at */

    /* the default town is filled in too */
    expect_code("{\"op\":\"status\"}", TTB_CODE_INVALID_COMMAND);
    assert_null(cmd.id);
    assert_string_equal(cmd.town, "demo");
    assert_string_equal(cmd.op_name, "status");

    /* an unknown op is still echoed, but the id's error is the one reported */
    expect_error("{\"id\":7,\"op\":\"dance\"}", TTB_CODE_INVALID_COMMAND, "id must be a string");
    assert_string_equal(cmd.op_name, "dance");

    /* a bad town or a non-string op is not kept */
    expect_code("{\"id\":\"\",\"town\":\"a:b\",\"op\":[\"kill\"]}", TTB_CODE_INVALID_COMMAND);
    assert_null(cmd.id);
    assert_null(cmd.town);
    assert_null(cmd.op_name);
}

static void test_town_rules(void **state) {
    (void)state;
    expect_error("{\"id\":\"t\",\"town\":5,\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND,
                 "town must be a string");
    expect_error("{\"id\":\"t\",\"town\":\"\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND,
                 "town must not be empty");
    const char *bad[] = {"de:mo", "{demo}", "de mo", "demo\\n", "d\\u0000", "dem\\u00f6", "a/b", "*"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ttb_code_t want = strstr(bad[i], "u0000") ? TTB_CODE_INVALID_JSON : TTB_CODE_INVALID_COMMAND;
        expect_code(RECORD("{\"id\":\"t\",\"town\":\"%s\",\"op\":\"list\"}", bad[i]), want);
        assert_null(cmd.town);
    }

    /* any valid town when no list is configured */
    policy.ntowns = 0;
    policy.towns = NULL;
    expect_code(RECORD("{\"id\":\"t\",\"town\":\"%s\",\"op\":\"list\"}", rep('T', TTB_CMD_TOWN_MAX)),
                TTB_CODE_OK);
    assert_string_equal(cmd.town, rep('T', TTB_CMD_TOWN_MAX));
    expect_error(RECORD("{\"id\":\"t\",\"town\":\"%s\",\"op\":\"list\"}", rep('T', TTB_CMD_TOWN_MAX + 1)),
                 TTB_CODE_INVALID_COMMAND, "town is 65 bytes");
    expect_code("{\"id\":\"t\",\"town\":\"Az09._-\",\"op\":\"list\"}", TTB_CODE_OK);

    /* no default and none given */
    policy.default_town = NULL;
    expect_error("{\"id\":\"t\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND, "town is required");
    expect_error("{\"id\":\"t\",\"town\":null,\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND,
                 "town is required");
    assert_null(cmd.town);
    assert_string_equal(cmd.id, "t");
}

static void test_unknown_town(void **state) {
    (void)state;
    expect_error("{\"id\":\"u\",\"town\":\"elsewhere\",\"op\":\"list\"}", TTB_CODE_UNKNOWN_TOWN,
                 "\"elsewhere\"");
    assert_string_equal(cmd.id, "u");
    assert_string_equal(cmd.town, "elsewhere"); /* echoed in the error result */
    assert_string_equal(cmd.op_name, "list");
    /* exact match only */
    expect_code("{\"id\":\"u\",\"town\":\"Demo\",\"op\":\"list\"}", TTB_CODE_UNKNOWN_TOWN);
    expect_code("{\"id\":\"u\",\"town\":\"dem\",\"op\":\"list\"}", TTB_CODE_UNKNOWN_TOWN);
    expect_code("{\"id\":\"u\",\"town\":\"demo\",\"op\":\"list\"}", TTB_CODE_OK);
    expect_code("{\"id\":\"u\",\"town\":\"other\",\"op\":\"list\"}", TTB_CODE_OK);
    /* a default outside the list is refused too */
    policy.default_town = "nowhere";
    expect_code("{\"id\":\"u\",\"op\":\"list\"}", TTB_CODE_UNKNOWN_TOWN);
}

static void test_op_rules(void **state) {
    (void)state;
    expect_error("{\"id\":\"o\"}", TTB_CODE_INVALID_COMMAND, "op is required");
    expect_error("{\"id\":\"o\",\"op\":null}", TTB_CODE_INVALID_COMMAND, "op is required");
    expect_error("{\"id\":\"o\",\"op\":3}", TTB_CODE_INVALID_COMMAND, "op must be a string");
    expect_error("{\"id\":\"o\",\"op\":{\"name\":\"kill\"}}", TTB_CODE_INVALID_COMMAND, "op must be a string");
    assert_null(cmd.op_name);

    expect_error("{\"id\":\"o\",\"op\":\"dance\"}", TTB_CODE_UNKNOWN_OP, "unknown op \"dance\"");
    assert_string_equal(cmd.op_name, "dance");
    assert_string_equal(cmd.id, "o");
    assert_string_equal(cmd.town, "demo");
    expect_code("{\"id\":\"o\",\"op\":\"KILL\"}", TTB_CODE_UNKNOWN_OP);
    expect_code("{\"id\":\"o\",\"op\":\"\"}", TTB_CODE_UNKNOWN_OP);
    /* an unknown op is judged before its args */
    expect_code("{\"id\":\"o\",\"op\":\"dance\",\"args\":5}", TTB_CODE_UNKNOWN_OP);
}

static void test_forbidden(void **state) {
    (void)state;
    policy.op_denied[TTB_OP_STOP_ALL] = true;
    policy.op_denied[TTB_OP_SPAWN] = true;
    expect_error("{\"id\":\"f\",\"op\":\"stop_all\"}", TTB_CODE_FORBIDDEN, "stop_all");
    assert_string_equal(cmd.op_name, "stop_all");
    assert_int_equal(cmd.op, TTB_OP_STOP_ALL);
    /* denial comes before args are looked at */
    expect_code("{\"id\":\"f\",\"op\":\"spawn\",\"args\":{\"nonsense\":1}}", TTB_CODE_FORBIDDEN);
    expect_code("{\"id\":\"f\",\"op\":\"list\"}", TTB_CODE_OK);
}

static void test_check_order(void **state) {
    (void)state;
    /* id before town, town before op, op before args */
    expect_code("{\"id\":\"bad id\",\"town\":\"elsewhere\",\"op\":\"dance\"}", TTB_CODE_INVALID_COMMAND);
    expect_code("{\"id\":\"ok\",\"town\":\"elsewhere\",\"op\":\"dance\"}", TTB_CODE_UNKNOWN_TOWN);
    expect_code("{\"id\":\"ok\",\"town\":\"a b\",\"op\":\"dance\"}", TTB_CODE_INVALID_COMMAND);
    expect_code("{\"id\":\"ok\",\"op\":\"dance\",\"args\":{\"x\":1}}", TTB_CODE_UNKNOWN_OP);
    policy.op_denied[TTB_OP_KILL] = true;
    expect_code("{\"id\":\"ok\",\"town\":\"elsewhere\",\"op\":\"kill\"}", TTB_CODE_UNKNOWN_TOWN);
}

/* ---- invalid_command: args ------------------------------------------------- */

static void test_args_shape(void **state) {
    (void)state;
    expect_error("{\"id\":\"a\",\"op\":\"kill\",\"args\":\"worker\"}", TTB_CODE_INVALID_COMMAND,
                 "args must be an object, not a string");
    expect_error("{\"id\":\"a\",\"op\":\"kill\",\"args\":[\"worker\"]}", TTB_CODE_INVALID_COMMAND,
                 "args must be an object");
    expect_error("{\"id\":\"a\",\"op\":\"kill\",\"args\":{\"agnet\":\"w\"}}", TTB_CODE_INVALID_COMMAND,
                 "args: unknown key \"agnet\" for op kill");
    expect_error("{\"id\":\"a\",\"op\":\"wait\",\"args\":{\"agent\":\"w\",\"timeout\":5}}",
                 TTB_CODE_INVALID_COMMAND, "\"timeout\"");
    /* an unknown key is an error even with a null value */
    expect_error("{\"id\":\"a\",\"op\":\"kill\",\"args\":{\"agent\":\"w\",\"force\":null}}",
                 TTB_CODE_INVALID_COMMAND, "\"force\"");
    /* a hostile key is escaped and cut short */
    expect_code(RECORD("{\"id\":\"a\",\"op\":\"kill\",\"args\":{\"\\u001b[2J%s\":1}}", rep('k', 500)),
                TTB_CODE_INVALID_COMMAND);
    assert_non_null(strstr(err, "\\x1b[2J"));
    assert_true(strlen(err) < 200);
    for (const char *p = err; *p; p++) assert_true(*p >= 0x20 && *p < 0x7f);
}

static void test_spawn_name_rules(void **state) {
    (void)state;
    expect_error("{\"id\":\"s\",\"op\":\"spawn\"}", TTB_CODE_INVALID_COMMAND, "args.name is required");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{}}", TTB_CODE_INVALID_COMMAND,
                 "args.name is required");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"cli\":\"claude\"}}", TTB_CODE_INVALID_COMMAND,
                 "args.name is required");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":[]}}", TTB_CODE_INVALID_COMMAND,
                 "args.name must be a string");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"\"}}", TTB_CODE_INVALID_COMMAND,
                 "args.name must not be empty");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"   \"}}", TTB_CODE_INVALID_COMMAND,
                 "args.name must not be blank");
    /* Unicode White_Space counts as blank (U+3000, U+00A0) */
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"\\u3000\\u00a0\"}}",
                 TTB_CODE_INVALID_COMMAND, "args.name must not be blank");
    const char *ctl[] = {"a\\nb", "a\\tb", "\\u0001", "a\\u007fb", "a\\u0085b", "\\u009f", "a\\u001bb"};
    for (size_t i = 0; i < sizeof ctl / sizeof ctl[0]; i++) {
        expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"%s\"}}", ctl[i]),
                     TTB_CODE_INVALID_COMMAND, "args.name");
        assert_non_null(strstr(err, "control character"));
        assert_null(cmd.name);
    }
    /* U+00A0..U+00FF share the C2/C3 lead bytes but are not controls */
    expect_code("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"caf\\u00e9 \\u00a0x \\u00bf\"}}",
                TTB_CODE_OK);
    assert_string_equal(cmd.name, "caf\xc3\xa9 \xc2\xa0x \xc2\xbf");

    expect_code(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"%s\"}}", rep('n', TTB_CMD_NAME_MAX)),
                TTB_CODE_OK);
    assert_int_equal(strlen(cmd.name), TTB_CMD_NAME_MAX);
    expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"%s\"}}",
                        rep('n', TTB_CMD_NAME_MAX + 1)),
                 TTB_CODE_INVALID_COMMAND, "args.name is 129 bytes");
    /* the limit is in bytes: 43 three-byte characters are 129 bytes */
    char name[43 * 6 + 1] = "";
    for (int i = 0; i < 43; i++) strcat(name, "\\u20ac");
    expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"%s\"}}", name),
                 TTB_CODE_INVALID_COMMAND, "args.name is 129 bytes");
}

static void test_reserved_names(void **state) {
    (void)state;
    const char *reserved[] = {"supervisor", " Supervisor ", "CONDUCTOR", "Conductor", "\\tsupervisor\\u3000"};
    for (size_t i = 0; i < sizeof reserved / sizeof reserved[0]; i++) {
        /* the tab is a control character, which is the earlier rule */
        ttb_code_t want = strstr(reserved[i], "\\t") ? TTB_CODE_INVALID_COMMAND : TTB_CODE_RESERVED_NAME;
        expect_code(RECORD("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"%s\"}}", reserved[i]), want);
        if (want == TTB_CODE_RESERVED_NAME) {
            assert_non_null(strstr(err, "args.name"));
            assert_non_null(strstr(err, "reserved"));
            assert_string_equal(cmd.id, "r");
            assert_string_equal(cmd.op_name, "spawn");
        }
    }
    expect_code("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\" Supervisor \"}}", TTB_CODE_RESERVED_NAME);
    assert_string_equal(err, "args.name \" Supervisor \" is reserved");
    expect_code("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"supervisor2\"}}", TTB_CODE_OK);
    expect_code("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"the conductor\"}}", TTB_CODE_OK);
    /* a malformed record is malformed first, even with a reserved name */
    expect_code("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"conductor\",\"cli\":\"a b\"}}",
                TTB_CODE_INVALID_COMMAND);
    /* and reserved names are only a spawn matter */
    expect_code("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\"supervisor\"}}", TTB_CODE_OK);
}

static void test_spawn_short_fields(void **state) {
    (void)state;
    const char *tokens[] = {"cli", "role_id"};
    for (size_t i = 0; i < 2; i++) {
        const char *k = tokens[i];
        expect_code(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"%s\":\"%s\"}}", k,
                           rep('c', TTB_CMD_SHORT_MAX)),
                    TTB_CODE_OK);
        expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"%s\":\"%s\"}}", k,
                            rep('c', TTB_CMD_SHORT_MAX + 1)),
                     TTB_CODE_INVALID_COMMAND, "is 65 bytes");
        const char *bad[] = {"", "a b", "a:b", "a/b", "caf\\u00e9", "x\\n"};
        for (size_t j = 0; j < sizeof bad / sizeof bad[0]; j++) {
            char field[32];
            snprintf(field, sizeof field, "args.%s", k);
            expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"%s\":\"%s\"}}", k,
                                bad[j]),
                         TTB_CODE_INVALID_COMMAND, field);
        }
        expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"%s\":true}}", k),
                     TTB_CODE_INVALID_COMMAND, "must be a string");
    }
    expect_code("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"cli\":\"Az09._-\",\"role_id\":\"r.1\"}}",
                TTB_CODE_OK);
    assert_string_equal(cmd.cli, "Az09._-");
    assert_string_equal(cmd.role_id, "r.1");

    /* nickname: free text, short */
    expect_code(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"nickname\":\"%s\"}}",
                       rep('k', TTB_CMD_SHORT_MAX)),
                TTB_CODE_OK);
    assert_int_equal(strlen(cmd.nickname), TTB_CMD_SHORT_MAX);
    expect_error(RECORD("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"nickname\":\"%s\"}}",
                        rep('k', TTB_CMD_SHORT_MAX + 1)),
                 TTB_CODE_INVALID_COMMAND, "args.nickname is 65 bytes");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"nickname\":\" \"}}",
                 TTB_CODE_INVALID_COMMAND, "args.nickname must not be blank");
    expect_error("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"nickname\":\"\\u0085\"}}",
                 TTB_CODE_INVALID_COMMAND, "args.nickname");
    expect_code("{\"id\":\"s\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"nickname\":\"Zo\\u00eb the 2nd\"}}",
                TTB_CODE_OK);
    assert_string_equal(cmd.nickname, "Zo\xc3\xab the 2nd");
}

static void test_references(void **state) {
    (void)state;
    /* agent (kill) and parent (spawn) follow the same rules */
    expect_code(RECORD("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\"%s\"}}", rep('a', TTB_CMD_REF_MAX)),
                TTB_CODE_OK);
    assert_int_equal(strlen(cmd.agent), TTB_CMD_REF_MAX);
    expect_error(RECORD("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\"%s\"}}", rep('a', TTB_CMD_REF_MAX + 1)),
                 TTB_CODE_INVALID_COMMAND, "args.agent is 257 bytes");
    expect_code(RECORD("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"parent\":\"%s\"}}",
                       rep('p', TTB_CMD_REF_MAX)),
                TTB_CODE_OK);
    expect_error(RECORD("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"parent\":\"%s\"}}",
                        rep('p', TTB_CMD_REF_MAX + 1)),
                 TTB_CODE_INVALID_COMMAND, "args.parent is 257 bytes");
    expect_error("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\"\"}}", TTB_CODE_INVALID_COMMAND,
                 "args.agent must not be empty");
    expect_error("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\"  \"}}", TTB_CODE_INVALID_COMMAND,
                 "args.agent must not be blank");
    expect_error("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\"w\\r\"}}", TTB_CODE_INVALID_COMMAND,
                 "args.agent");
    expect_error("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"parent\":\"\\t\"}}",
                 TTB_CODE_INVALID_COMMAND, "args.parent");
    expect_error("{\"id\":\"r\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"parent\":{}}}",
                 TTB_CODE_INVALID_COMMAND, "args.parent must be a string");
    /* references are kept as given: resolution trims them later */
    expect_code("{\"id\":\"r\",\"op\":\"kill\",\"args\":{\"agent\":\" Bob [reviewer] \"}}", TTB_CODE_OK);
    assert_string_equal(cmd.agent, " Bob [reviewer] ");
}

static void test_hostile_echo_is_bounded(void **state) {
    (void)state;
    expect_code(RECORD("{\"id\":\"%s\\u0007\\u009b\",\"op\":\"list\"}", rep('x', 100)), TTB_CODE_INVALID_COMMAND);
    assert_true(strlen(err) < 200);
    for (const char *p = err; *p; p++) assert_true(*p >= 0x20 && *p < 0x7f);
    expect_code(RECORD("{\"id\":\"q\",\"op\":\"%s\\u001b]0;pwned\\u0007\"}", rep('o', 3000)), TTB_CODE_UNKNOWN_OP);
    assert_true(strlen(err) < 200);
    assert_non_null(strstr(err, "\"..."));
    /* op_name is kept whole: it is the record's own text for the result */
    assert_int_equal(strlen(cmd.op_name), 3000 + 10);
    expect_code("{\"id\":\"q\",\"op\":\"spawn\",\"args\":{\"name\":\"a\\u001b[31mb\"}}", TTB_CODE_INVALID_COMMAND);
    assert_string_equal(err, "args.name \"a\\x1b[31mb\" contains a control character");
    expect_code("{\"id\":\"q\",\"town\":\"x\\\"y\",\"op\":\"list\"}", TTB_CODE_INVALID_COMMAND);
    assert_string_equal(err, "town \"x\\\"y\" has a character outside [A-Za-z0-9._-]");
}

static void test_clear(void **state) {
    (void)state;
    ttb_command_clear(NULL);
    expect_code("{\"id\":\"c\",\"op\":\"spawn\",\"args\":{\"name\":\"w\",\"nickname\":\"n\",\"role_id\":\"r\","
                "\"parent\":\"p\",\"spawn_mode\":\"resumed\"}}",
                TTB_CODE_OK);
    ttb_command_clear(&cmd);
    ttb_command_t zero;
    memset(&zero, 0, sizeof zero);
    assert_memory_equal(&cmd, &zero, sizeof cmd);
    ttb_command_clear(&cmd);

    /* the parse zeroes its output first, whatever was there */
    memset(&cmd, 0xa5, sizeof cmd);
    assert_int_equal(ttb_command_parse("{", 1, &policy, &cmd, err, sizeof err), TTB_CODE_INVALID_JSON);
    assert_null(cmd.id);
    assert_null(cmd.name);
    /* a NULL or empty error buffer is allowed */
    ttb_command_clear(&cmd);
    assert_int_equal(ttb_command_parse("[]", 2, &policy, &cmd, NULL, 0), TTB_CODE_INVALID_COMMAND);
    ttb_command_clear(&cmd);
    char tiny[8] = "xxxxxxx";
    assert_int_equal(ttb_command_parse("[]", 2, &policy, &cmd, tiny, sizeof tiny), TTB_CODE_INVALID_COMMAND);
    assert_string_equal(tiny, "command");
}

/* ---- results ----------------------------------------------------------------- */

/* 2026-11-24T06:51:00.123Z */
static const ttb_time_t applied = {1795503060, 123000000};

static void expect_encoded(const ttb_result_t *r, const char *want) {
    size_t len = 0;
    char *got = ttb_result_encode(r, &len);
    assert_non_null(got);
    assert_string_equal(got, want);
    assert_int_equal(len, strlen(want));
    free(got);
}

static void test_encode_ok(void **state) {
    (void)state;
    json_t *res = json_pack("{s:{s:s,s:s,s:n}}", "agent", "name", "worker-1", "state", "idle", "nickname");
    assert_non_null(res);
    ttb_result_t r = {.id = "c-42", .town = "demo", .op = "interrupt", .code = TTB_CODE_OK,
                      .message = "ignored", .result = res, .applied_at = applied};
    expect_encoded(&r, "{\"id\":\"c-42\",\"town\":\"demo\",\"op\":\"interrupt\",\"ok\":true,"
                       "\"result\":{\"agent\":{\"name\":\"worker-1\",\"state\":\"idle\",\"nickname\":null}},"
                       "\"applied_at\":\"2026-11-24T06:51:00.123Z\"}");
    /* the result is borrowed: still ours, refcount unchanged */
    assert_int_equal(res->refcount, 1);
    json_decref(res);

    r.result = NULL;
    r.applied_at.nsec = 0;
    expect_encoded(&r, "{\"id\":\"c-42\",\"town\":\"demo\",\"op\":\"interrupt\",\"ok\":true,\"result\":{},"
                       "\"applied_at\":\"2026-11-24T06:51:00Z\"}");

    /* any JSON value may be the result */
    res = json_null();
    r.result = res;
    expect_encoded(&r, "{\"id\":\"c-42\",\"town\":\"demo\",\"op\":\"interrupt\",\"ok\":true,\"result\":null,"
                       "\"applied_at\":\"2026-11-24T06:51:00Z\"}");
}

static void test_encode_error(void **state) {
    (void)state;
    ttb_result_t r = {.id = "c-43", .town = "demo", .op = "resume", .code = TTB_CODE_INVALID_STATE,
                      .message = "agent worker-1 is Idle, not Paused", .applied_at = applied};
    expect_encoded(&r, "{\"id\":\"c-43\",\"town\":\"demo\",\"op\":\"resume\",\"ok\":false,"
                       "\"error\":{\"code\":\"invalid_state\",\"message\":\"agent worker-1 is Idle, not Paused\"},"
                       "\"applied_at\":\"2026-11-24T06:51:00.123Z\"}");

    /* no usable id, town or op: nulls; a message with quotes and controls is JSON-escaped */
    ttb_result_t bad = {.code = TTB_CODE_INVALID_JSON, .message = "near '\"\\\n'",
                        .applied_at = {0, 1}};
    expect_encoded(&bad, "{\"id\":null,\"town\":null,\"op\":null,\"ok\":false,"
                         "\"error\":{\"code\":\"invalid_json\",\"message\":\"near '\\\"\\\\\\n'\"},"
                         "\"applied_at\":\"1970-01-01T00:00:00.000000001Z\"}");

    /* a missing message is an empty one; bytes that are not UTF-8 are escaped, not fatal */
    ttb_result_t odd = {.id = "x", .op = "\xff\xfe", .code = TTB_CODE_INTERNAL, .applied_at = {0, 0}};
    expect_encoded(&odd, "{\"id\":\"x\",\"town\":null,\"op\":\"\\\\xff\\\\xfe\",\"ok\":false,"
                         "\"error\":{\"code\":\"internal\",\"message\":\"\"},"
                         "\"applied_at\":\"1970-01-01T00:00:00Z\"}");

    /* unicode passes through as UTF-8 */
    ttb_result_t uni = {.id = "u", .town = "demo", .op = "spawn", .code = TTB_CODE_NAME_CONFLICT,
                        .message = "name caf\xc3\xa9 is taken", .applied_at = {0, 0}};
    expect_encoded(&uni, "{\"id\":\"u\",\"town\":\"demo\",\"op\":\"spawn\",\"ok\":false,"
                         "\"error\":{\"code\":\"name_conflict\",\"message\":\"name caf\xc3\xa9 is taken\"},"
                         "\"applied_at\":\"1970-01-01T00:00:00Z\"}");
}

static void test_parse_then_encode(void **state) {
    (void)state;
    /* the path the bridge takes for a record with no usable id */
    char msg[512];
    ttb_command_t c;
    const char *rec_ = "{\"id\":\"has space\",\"op\":\"kill\",\"args\":{\"agent\":\"w\"}}";
    ttb_code_t code = ttb_command_parse(rec_, strlen(rec_), &policy, &c, msg, sizeof msg);
    assert_int_equal(code, TTB_CODE_INVALID_COMMAND);
    ttb_result_t r = {.id = c.id, .town = c.town, .op = c.op_name, .code = code, .message = msg,
                      .applied_at = {0, 0}};
    expect_encoded(&r, "{\"id\":null,\"town\":\"demo\",\"op\":\"kill\",\"ok\":false,"
                       "\"error\":{\"code\":\"invalid_command\",\"message\":"
                       "\"id \\\"has space\\\" has a character outside [A-Za-z0-9._:-]\"},"
                       "\"applied_at\":\"1970-01-01T00:00:00Z\"}");
    ttb_command_clear(&c);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void) {
    const struct CMUnitTest tests[] = {
        T(test_op_table),
        T(test_spawn_all_args),
        T(test_spawn_defaults),
        T(test_spawn_modes),
        T(test_agent_ops),
        T(test_wait_timeout),
        T(test_prune),
        T(test_ops_without_args),
        T(test_unknown_top_level_keys_ignored),
        T(test_too_large),
        T(test_invalid_json),
        T(test_not_an_object),
        T(test_id_rules),
        T(test_bad_id_keeps_town_and_op),
        T(test_town_rules),
        T(test_unknown_town),
        T(test_op_rules),
        T(test_forbidden),
        T(test_check_order),
        T(test_args_shape),
        T(test_spawn_name_rules),
        T(test_reserved_names),
        T(test_spawn_short_fields),
        T(test_references),
        T(test_hostile_echo_is_bounded),
        T(test_clear),
        T(test_encode_ok),
        T(test_encode_error),
        T(test_parse_then_encode),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
