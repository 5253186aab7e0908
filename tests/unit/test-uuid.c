/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the UUID module: v4 generation (version and variant bits,
 * uniqueness) and the input forms Rust's Uuid::parse_str accepts.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/uuid.h"

#define CANON "67e55044-10b1-426f-9247-bb680e5fe0c8"

static void assert_parses_to(const char *s, const char *expected) {
    char out[TTB_UUID_BUFSZ];
    memset(out, 'x', sizeof out);
    if (ttb_uuid_parse(s, strlen(s), out) != TTB_OK) fail_msg("'%s' did not parse", s);
    assert_string_equal(out, expected);
}

static void assert_rejects(const char *s) {
    char out[TTB_UUID_BUFSZ];
    unsigned char b[16];
    if (ttb_uuid_parse(s, strlen(s), out) != TTB_ERR_INVALID) fail_msg("'%s' was accepted", s);
    assert_int_equal(ttb_uuid_bytes(s, strlen(s), b), TTB_ERR_INVALID);
}

static void test_v4_bits(void **state) {
    (void)state;
    for (int i = 0; i < 1000; i++) {
        char id[TTB_UUID_BUFSZ];
        assert_int_equal(ttb_uuid_v4(id), TTB_OK);
        assert_int_equal(strlen(id), TTB_UUID_LEN);
        assert_true(ttb_uuid_is_canonical(id, strlen(id)));
        assert_int_equal(id[14], '4'); /* version nibble */
        assert_true(strchr("89ab", id[19]) != NULL); /* variant 10xx */
        unsigned char b[16];
        assert_int_equal(ttb_uuid_bytes(id, strlen(id), b), TTB_OK);
        assert_int_equal(b[6] >> 4, 4);
        assert_int_equal(b[8] >> 6, 2);
    }
}

static int cmp_ids(const void *a, const void *b) {
    return strcmp((const char *)a, (const char *)b);
}

static void test_v4_unique_and_random(void **state) {
    (void)state;
    enum { N = 5000 };
    char(*ids)[TTB_UUID_BUFSZ] = calloc(N, sizeof *ids);
    assert_non_null(ids);
    /* Count set bits over the 122 random bits: far from 50% means no randomness. */
    unsigned long ones = 0;
    for (int i = 0; i < N; i++) {
        assert_int_equal(ttb_uuid_v4(ids[i]), TTB_OK);
        unsigned char b[16];
        assert_int_equal(ttb_uuid_bytes(ids[i], TTB_UUID_LEN, b), TTB_OK);
        b[6] &= 0x0f;
        b[8] &= 0x3f;
        for (int k = 0; k < 16; k++)
            for (unsigned v = b[k]; v != 0; v >>= 1) ones += v & 1u;
    }
    qsort(ids, N, sizeof *ids, cmp_ids);
    for (int i = 1; i < N; i++) assert_string_not_equal(ids[i - 1], ids[i]);
    double ratio = (double)ones / (122.0 * N);
    assert_true(ratio > 0.49 && ratio < 0.51);
    free(ids);
}

static void test_parse_forms(void **state) {
    (void)state;
    assert_parses_to(CANON, CANON);
    assert_parses_to("67E55044-10B1-426F-9247-BB680E5FE0C8", CANON);
    assert_parses_to("67e55044-10B1-426f-9247-Bb680e5FE0c8", CANON);
    assert_parses_to("67e5504410b1426f9247bb680e5fe0c8", CANON);
    assert_parses_to("67E5504410B1426F9247BB680E5FE0C8", CANON);
    assert_parses_to("{" CANON "}", CANON);
    assert_parses_to("{67E55044-10B1-426F-9247-BB680E5FE0C8}", CANON);
    assert_parses_to("urn:uuid:" CANON, CANON);
    assert_parses_to("urn:uuid:67E55044-10B1-426F-9247-BB680E5FE0C8", CANON);
    assert_parses_to("00000000-0000-0000-0000-000000000000", "00000000-0000-0000-0000-000000000000");
    assert_parses_to(TTB_UUID_SUPERVISOR, TTB_UUID_SUPERVISOR);
    assert_parses_to("ffffffffffffffffffffffffffffffff", "ffffffff-ffff-ffff-ffff-ffffffffffff");
}

static void test_parse_rejects(void **state) {
    (void)state;
    assert_rejects("");
    assert_rejects("!");
    assert_rejects("67e55044-10b1-426f-9247-bb680e5fe0c");   /* 35 */
    assert_rejects("67e55044-10b1-426f-9247-bb680e5fe0c88"); /* 37 */
    assert_rejects("67e55044-10b1-426f-9247-bb680e5fe0cg");  /* not hex */
    assert_rejects("67e5504410b1-426f-9247-bb680e5fe0c8-");  /* hyphens misplaced */
    assert_rejects("67e55044+10b1+426f+9247+bb680e5fe0c8");
    assert_rejects("67e5504-410b1-426f-9247-bb680e5fe0c8");
    assert_rejects("67e5504410b1426f9247bb680e5fe0c");   /* 31 */
    assert_rejects("67e5504410b1426f9247bb680e5fe0c88"); /* 33 */
    assert_rejects("67e5504410b1426%9247bb680e5fe0c8");
    assert_rejects("{67e5504410b1426f9247bb680e5fe0c8}"); /* braces need hyphens */
    assert_rejects("{" CANON);
    assert_rejects(CANON "}");
    assert_rejects("[" CANON "]");
    assert_rejects("(" CANON ")");
    /* The uuid crate matches the URN prefix byte for byte. */
    assert_rejects("URN:UUID:" CANON);
    assert_rejects("urn:UUID:" CANON);
    assert_rejects("uuid:" CANON);
    assert_rejects("urn:uuid:67e5504410b1426f9247bb680e5fe0c8");
    assert_rejects("urn:uuid:{" CANON "}");
    /* No trimming: whitespace makes it not a UUID. */
    assert_rejects(" " CANON);
    assert_rejects(CANON " ");
    assert_rejects(CANON "\n");
    assert_rejects("0x67e5504410b1426f9247bb680e5fe0");
    assert_rejects("+7e55044-10b1-426f-9247-bb680e5fe0c8");
}

static void test_parse_is_length_bounded(void **state) {
    (void)state;
    const char *s = CANON "trailing";
    char out[TTB_UUID_BUFSZ];
    assert_int_equal(ttb_uuid_parse(s, TTB_UUID_LEN, out), TTB_OK);
    assert_string_equal(out, CANON);
    assert_int_equal(ttb_uuid_parse(s, TTB_UUID_LEN + 1, out), TTB_ERR_INVALID);
    assert_int_equal(ttb_uuid_parse(s, TTB_UUID_LEN - 1, out), TTB_ERR_INVALID);
    const char nul[] = "67e55044-10b1-426f-9247-bb680e5f\0c8";
    assert_int_equal(ttb_uuid_parse(nul, sizeof nul - 1, out), TTB_ERR_INVALID);
    assert_int_equal(ttb_uuid_parse(NULL, 0, out), TTB_ERR_INVALID);
}

static void test_bytes(void **state) {
    (void)state;
    unsigned char b[16];
    static const unsigned char expected[16] = {0x67, 0xe5, 0x50, 0x44, 0x10, 0xb1, 0x42, 0x6f,
                                               0x92, 0x47, 0xbb, 0x68, 0x0e, 0x5f, 0xe0, 0xc8};
    assert_int_equal(ttb_uuid_bytes(CANON, TTB_UUID_LEN, b), TTB_OK);
    assert_memory_equal(b, expected, 16);
    assert_int_equal(ttb_uuid_bytes("{67E55044-10B1-426F-9247-BB680E5FE0C8}", 38, b), TTB_OK);
    assert_memory_equal(b, expected, 16);
    assert_int_equal(ttb_uuid_bytes(TTB_UUID_SUPERVISOR, TTB_UUID_LEN, b), TTB_OK);
    for (int i = 0; i < 15; i++) assert_int_equal(b[i], 0);
    assert_int_equal(b[15], 1);
}

static void test_is_canonical(void **state) {
    (void)state;
    assert_true(ttb_uuid_is_canonical(CANON, TTB_UUID_LEN));
    assert_true(ttb_uuid_is_canonical(TTB_UUID_SUPERVISOR, TTB_UUID_LEN));
    assert_false(ttb_uuid_is_canonical("67E55044-10b1-426f-9247-bb680e5fe0c8", TTB_UUID_LEN));
    assert_false(ttb_uuid_is_canonical("67e5504410b1426f9247bb680e5fe0c8", 32));
    assert_false(ttb_uuid_is_canonical("{" CANON "}", 38));
    assert_false(ttb_uuid_is_canonical(CANON, TTB_UUID_LEN - 1));
    assert_false(ttb_uuid_is_canonical("67e55044-10b1-426f-9247-bb680e5fe0cg", TTB_UUID_LEN));
    assert_false(ttb_uuid_is_canonical("67e55044010b1-426f-9247-bb680e5fe0c8", TTB_UUID_LEN));
    assert_false(ttb_uuid_is_canonical(NULL, 0));
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_v4_bits),
        cmocka_unit_test(test_v4_unique_and_random),
        cmocka_unit_test(test_parse_forms),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_is_length_bounded),
        cmocka_unit_test(test_bytes),
        cmocka_unit_test(test_is_canonical),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
