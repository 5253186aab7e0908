/* SPDX-License-Identifier: MIT */
/*
 * Error codes: the wire names are part of the public protocol, so every name
 * is pinned here literally, and the dead-letter set is checked code by code
 * against spec/protocol.md.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "tinytown_bridge/error.h"

static const struct {
    ttb_code_t code;
    const char *name;
    bool dead_letter;
} expected[] = {
    {TTB_CODE_OK, "ok", false},
    {TTB_CODE_INVALID_JSON, "invalid_json", true},
    {TTB_CODE_INVALID_COMMAND, "invalid_command", true},
    {TTB_CODE_UNKNOWN_OP, "unknown_op", true},
    {TTB_CODE_TOO_LARGE, "too_large", true},
    {TTB_CODE_UNKNOWN_TOWN, "unknown_town", true},
    {TTB_CODE_FORBIDDEN, "forbidden", true},
    {TTB_CODE_RESERVED_NAME, "reserved_name", false},
    {TTB_CODE_NAME_CONFLICT, "name_conflict", false},
    {TTB_CODE_AGENT_NOT_FOUND, "agent_not_found", false},
    {TTB_CODE_AMBIGUOUS_AGENT, "ambiguous_agent", false},
    {TTB_CODE_INVALID_STATE, "invalid_state", false},
    {TTB_CODE_INTERNAL, "internal", false},
};
#define NEXPECTED (sizeof expected / sizeof expected[0])

static void test_every_code_is_listed(void **state) {
    (void)state;
    /* A new code must be added to this table (and to the protocol). */
    assert_int_equal(NEXPECTED, TTB_CODE__COUNT);
}

static void test_wire_names(void **state) {
    (void)state;
    for (size_t i = 0; i < NEXPECTED; i++) {
        assert_string_equal(ttb_code_name(expected[i].code), expected[i].name);
    }
}

static void test_names_round_trip(void **state) {
    (void)state;
    for (int c = 0; c < (int)TTB_CODE__COUNT; c++) {
        ttb_code_t back = TTB_CODE__COUNT;
        assert_int_equal(ttb_code_from_name(ttb_code_name((ttb_code_t)c), &back), TTB_OK);
        assert_int_equal(back, c);
    }
}

static void test_from_name_rejects(void **state) {
    (void)state;
    ttb_code_t out = TTB_CODE_INTERNAL;
    assert_int_equal(ttb_code_from_name("Invalid_Json", &out), TTB_ERR_INVALID);
    assert_int_equal(ttb_code_from_name("invalid_json ", &out), TTB_ERR_INVALID);
    assert_int_equal(ttb_code_from_name("", &out), TTB_ERR_INVALID);
    assert_int_equal(ttb_code_from_name("unknown", &out), TTB_ERR_INVALID);
    assert_int_equal(ttb_code_from_name(NULL, &out), TTB_ERR_INVALID);
    assert_int_equal(out, TTB_CODE_INTERNAL); /* untouched on failure */
}

static void test_dead_letter_set(void **state) {
    (void)state;
    for (size_t i = 0; i < NEXPECTED; i++) {
        if (ttb_code_is_dead_letter(expected[i].code) != expected[i].dead_letter) {
            fail_msg("dead-letter flag of %s is wrong", expected[i].name);
        }
    }
}

static void test_out_of_range(void **state) {
    (void)state;
    assert_string_equal(ttb_code_name(TTB_CODE__COUNT), "unknown");
    assert_string_equal(ttb_code_name((ttb_code_t)-1), "unknown");
    assert_false(ttb_code_is_dead_letter(TTB_CODE__COUNT));
    assert_false(ttb_code_is_dead_letter((ttb_code_t)-1));
}

static void test_err_str(void **state) {
    (void)state;
    assert_string_equal(ttb_err_str(TTB_OK), "success");
    assert_string_equal(ttb_err_str(TTB_ERR_NOMEM), "out of memory");
    assert_string_equal(ttb_err_str(TTB_ERR_IO), "Redis unreachable or connection lost");
    assert_string_equal(ttb_err_str(TTB_ERR_PROTO), "unexpected reply from Redis");
    assert_string_equal(ttb_err_str(TTB_ERR_INVALID), "invalid argument or input");
    assert_string_equal(ttb_err_str(TTB_ERR_NOTFOUND), "not found");
    assert_string_equal(ttb_err_str(TTB_ERR_DENIED),
                        "refused by Redis (credentials, certificate or ACL)");
    assert_string_equal(ttb_err_str(-99), "unknown error");
    assert_string_equal(ttb_err_str(1), "unknown error");
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_code_is_listed), cmocka_unit_test(test_wire_names),
        cmocka_unit_test(test_names_round_trip),     cmocka_unit_test(test_from_name_rejects),
        cmocka_unit_test(test_dead_letter_set),      cmocka_unit_test(test_out_of_range),
        cmocka_unit_test(test_err_str),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
