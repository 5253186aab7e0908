/* SPDX-License-Identifier: MIT */
/*
 * Unit tests of the RFC 3339 module: the text tinytown (chrono) writes, byte
 * for byte, and the forms chrono's parse_from_rfc3339 accepts and rejects.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/rfc3339.h"

/* 2026-11-24T06:51:00Z */
#define T_2026 INT64_C(1795503060)

static ttb_time_t tm(int64_t sec, int32_t nsec) {
    ttb_time_t t = {sec, nsec};
    return t;
}

static void assert_hash(ttb_time_t t, const char *expected) {
    char buf[TTB_TIME_BUFSZ];
    size_t len = ttb_time_format_hash(t, buf);
    assert_string_equal(buf, expected);
    assert_int_equal(len, strlen(expected));
}

static void assert_json(ttb_time_t t, const char *expected) {
    char buf[TTB_TIME_BUFSZ];
    size_t len = ttb_time_format_json(t, buf);
    assert_string_equal(buf, expected);
    assert_int_equal(len, strlen(expected));
}

static int parse(const char *s, ttb_time_t *out) {
    return ttb_time_parse(s, strlen(s), out);
}

static void assert_parses(const char *s, int64_t sec, int32_t nsec) {
    ttb_time_t t = {-7, -7};
    if (parse(s, &t) != TTB_OK) fail_msg("'%s' did not parse", s);
    if (t.sec != sec || t.nsec != nsec)
        fail_msg("'%s' parsed as %lld.%09d, expected %lld.%09d", s, (long long)t.sec, t.nsec,
                 (long long)sec, nsec);
}

static void assert_rejects(const char *s) {
    ttb_time_t t = {-7, -7};
    if (parse(s, &t) != TTB_ERR_INVALID) fail_msg("'%s' was accepted", s);
    /* A failed parse leaves the output alone. */
    assert_int_equal(t.sec, -7);
    assert_int_equal(t.nsec, -7);
}

static void test_format_fraction_digits(void **state) {
    (void)state;
    assert_hash(tm(T_2026, 0), "2026-11-24T06:51:00+00:00");
    assert_hash(tm(T_2026, 123000000), "2026-11-24T06:51:00.123+00:00");
    assert_hash(tm(T_2026, 100000000), "2026-11-24T06:51:00.100+00:00");
    assert_hash(tm(T_2026, 10000000), "2026-11-24T06:51:00.010+00:00");
    assert_hash(tm(T_2026, 1000000), "2026-11-24T06:51:00.001+00:00");
    assert_hash(tm(T_2026, 123456000), "2026-11-24T06:51:00.123456+00:00");
    assert_hash(tm(T_2026, 1000), "2026-11-24T06:51:00.000001+00:00");
    assert_hash(tm(T_2026, 123456789), "2026-11-24T06:51:00.123456789+00:00");
    assert_hash(tm(T_2026, 1), "2026-11-24T06:51:00.000000001+00:00");
    assert_hash(tm(T_2026, 999999999), "2026-11-24T06:51:00.999999999+00:00");
    assert_hash(tm(T_2026, 100), "2026-11-24T06:51:00.000000100+00:00");
}

static void test_format_json_suffix(void **state) {
    (void)state;
    assert_json(tm(T_2026, 0), "2026-11-24T06:51:00Z");
    assert_json(tm(T_2026, 123000000), "2026-11-24T06:51:00.123Z");
    assert_json(tm(T_2026, 123456000), "2026-11-24T06:51:00.123456Z");
    assert_json(tm(T_2026, 123456789), "2026-11-24T06:51:00.123456789Z");
}

static void test_format_calendar(void **state) {
    (void)state;
    assert_hash(tm(0, 0), "1970-01-01T00:00:00+00:00");
    assert_hash(tm(-1, 0), "1969-12-31T23:59:59+00:00");
    assert_hash(tm(-1, 500000000), "1969-12-31T23:59:59.500+00:00");
    assert_hash(tm(INT64_C(1709208000), 0), "2024-02-29T12:00:00+00:00");
    assert_hash(tm(INT64_C(1709208000) + 86400, 0), "2024-03-01T12:00:00+00:00");
    assert_hash(tm(INT64_C(951782400), 0), "2000-02-29T00:00:00+00:00");
    assert_hash(tm(INT64_C(-62167219200), 0), "0000-01-01T00:00:00+00:00");
    assert_hash(tm(INT64_C(253402300799), 999999999), "9999-12-31T23:59:59.999999999+00:00");
    /* chrono writes years outside 0000-9999 with a sign ({:+05}). */
    assert_hash(tm(INT64_C(-62167219200) - 3600, 0), "-0001-12-31T23:00:00+00:00");
    assert_json(tm(INT64_C(253402300800), 0), "+10000-01-01T00:00:00Z");
    /* A caller's out-of-range nsec is carried into the seconds. */
    assert_hash(tm(0, 1500000000), "1970-01-01T00:00:01.500+00:00");
    assert_hash(tm(0, -1), "1969-12-31T23:59:59.999999999+00:00");
}

static void test_parse_tinytown_forms(void **state) {
    (void)state;
    assert_parses("2026-11-24T06:51:00+00:00", T_2026, 0);
    assert_parses("2026-11-24T06:51:00.123+00:00", T_2026, 123000000);
    assert_parses("2026-11-24T06:51:00.123456+00:00", T_2026, 123456000);
    assert_parses("2026-11-24T06:51:00.123456789+00:00", T_2026, 123456789);
    assert_parses("2026-11-24T06:51:00.123456789Z", T_2026, 123456789);
    assert_parses("1970-01-01T00:00:00Z", 0, 0);
    assert_parses("1969-12-31T23:59:59.5Z", -1, 500000000);
}

static void test_parse_other_rfc3339_forms(void **state) {
    (void)state;
    assert_parses("2026-11-24t06:51:00z", T_2026, 0);
    assert_parses("2026-11-24 06:51:00Z", T_2026, 0);
    assert_parses("2026-11-24T06:51:00.5Z", T_2026, 500000000);
    assert_parses("2026-11-24T06:51:00.05Z", T_2026, 50000000);
    assert_parses("2026-11-24T06:51:00.0000000001Z", T_2026, 0);
    /* Digits past the ninth are dropped, not rounded. */
    assert_parses("2026-11-24T06:51:00.123456789999Z", T_2026, 123456789);
    assert_parses("2026-11-24T06:51:00.000000000000000000000000000001Z", T_2026, 0);
    /* Offsets are normalised to UTC. */
    assert_parses("2026-11-24T12:21:00+05:30", T_2026, 0);
    assert_parses("2026-11-24T12:21:00.25+05:30", T_2026, 250000000);
    assert_parses("2026-11-24T06:51:00-00:00", T_2026, 0);
    assert_parses("2026-11-23T22:51:00-08:00", T_2026, 0);
    assert_parses("2026-11-25T06:50:00+23:59", T_2026, 0);
    assert_parses("2026-11-23T06:52:00-23:59", T_2026, 0);
    assert_parses("2026-11-24T01:21:00-05:30", T_2026, 0);
    /* U+2212 MINUS SIGN, as chrono allows. */
    assert_parses("2026-11-24T01:21:00\xe2\x88\x92"
                  "05:30",
                  T_2026, 0);
    /* Leap days. */
    assert_parses("2024-02-29T12:00:00Z", INT64_C(1709208000), 0);
    assert_parses("2000-02-29T00:00:00Z", INT64_C(951782400), 0);
    assert_parses("0000-02-29T00:00:00Z", INT64_C(-62167219200) + 59 * 86400, 0);
    /* Year range ends, and an offset that leaves it. */
    assert_parses("0000-01-01T00:00:00Z", INT64_C(-62167219200), 0);
    assert_parses("9999-12-31T23:59:59.999999999Z", INT64_C(253402300799), 999999999);
    assert_parses("0000-01-01T00:00:00+01:00", INT64_C(-62167219200) - 3600, 0);
    assert_parses("9999-12-31T23:59:59-01:00", INT64_C(253402300799) + 3600, 0);
}

static void test_parse_offset_arithmetic(void **state) {
    (void)state;
    ttb_time_t a, b;
    assert_int_equal(parse("2026-11-25T06:50:00+23:59", &a), TTB_OK);
    assert_int_equal(parse("2026-11-24T06:51:00Z", &b), TTB_OK);
    assert_int_equal(a.sec, b.sec);
    assert_int_equal(parse("2026-11-23T06:52:00-23:59", &a), TTB_OK);
    assert_int_equal(a.sec, b.sec);
    assert_int_equal(parse("2026-11-24T12:21:00-05:30", &a), TTB_OK);
    assert_int_equal(a.sec, b.sec + 11 * 3600);
    char buf[TTB_TIME_BUFSZ];
    assert_int_equal(parse("2026-11-24T12:21:00.123+05:30", &a), TTB_OK);
    ttb_time_format_hash(a, buf);
    assert_string_equal(buf, "2026-11-24T06:51:00.123+00:00");
    assert_int_equal(parse("2026-01-01T01:00:00+02:00", &a), TTB_OK);
    ttb_time_format_json(a, buf);
    assert_string_equal(buf, "2025-12-31T23:00:00Z");
}

static void test_parse_leap_second(void **state) {
    (void)state;
    /* :60 becomes the last representable instant of :59. */
    assert_parses("2016-12-31T23:59:60Z", INT64_C(1483228799), 999999999);
    assert_parses("2016-12-31T23:59:60.5Z", INT64_C(1483228799), 999999999);
    assert_parses("2017-01-01T05:29:60+05:30", INT64_C(1483228799), 999999999);
    /* chrono accepts it in any minute. */
    assert_parses("2026-11-24T06:50:60Z", T_2026 - 1, 999999999);
    ttb_time_t t;
    assert_int_equal(parse("2016-12-31T23:59:60Z", &t), TTB_OK);
    assert_hash(t, "2016-12-31T23:59:59.999999999+00:00");
}

static void test_parse_rejects(void **state) {
    (void)state;
    assert_rejects("");
    assert_rejects("garbage");
    assert_rejects("2026-11-24");
    assert_rejects("2026-11-24T06:51");
    assert_rejects("2026-11-24T06:51Z");
    assert_rejects("2026-11-24T06:51:00");          /* no offset */
    assert_rejects("2026-11-24T06:51:00.123");      /* no offset */
    assert_rejects("2026-11-24T06:51:00.Z");        /* empty fraction */
    assert_rejects("2026-11-24T06:51:00.");         /* empty fraction */
    assert_rejects("2026-11-24T06:51:00,5Z");       /* comma fraction */
    assert_rejects("2026-11-24X06:51:00Z");         /* separator */
    assert_rejects("2026-11-24\t06:51:00Z");        /* separator */
    assert_rejects("2026-11-24T06:51:00ZZ");        /* trailing */
    assert_rejects("2026-11-24T06:51:00Z ");        /* trailing space */
    assert_rejects(" 2026-11-24T06:51:00Z");        /* leading space */
    assert_rejects("2026-11-24T06:51:00+00:00 ");   /* trailing space */
    assert_rejects("2026-11-24T06:51:00+0000");     /* offset without colon */
    assert_rejects("2026-11-24T06:51:00+00");       /* offset without minutes */
    assert_rejects("2026-11-24T06:51:00+00:0");     /* short minutes */
    assert_rejects("2026-11-24T06:51:00+0:00");     /* short hours */
    assert_rejects("2026-11-24T06:51:00+24:00");    /* offset out of range */
    assert_rejects("2026-11-24T06:51:00+99:00");    /* offset out of range */
    assert_rejects("2026-11-24T06:51:00+05:60");    /* offset minutes */
    assert_rejects("2026-11-24T06:51:00+05:30:00"); /* offset seconds */
    assert_rejects("2026-11-24T06:51:00UTC");
    assert_rejects("2026-11-24T06:51:00\xe2\x88\x93"
                   "05:30"); /* not U+2212 */
    assert_rejects("2026-11-24T06:51:00\xe2\x88");
    assert_rejects("2026-13-01T00:00:00Z");
    assert_rejects("2026-00-10T00:00:00Z");
    assert_rejects("2026-01-00T00:00:00Z");
    assert_rejects("2026-01-32T00:00:00Z");
    assert_rejects("2026-04-31T00:00:00Z");
    assert_rejects("2026-02-29T00:00:00Z"); /* not a leap year */
    assert_rejects("1900-02-29T00:00:00Z"); /* not a leap year (century) */
    assert_rejects("2024-02-30T00:00:00Z");
    assert_rejects("2026-11-24T24:00:00Z");
    assert_rejects("2026-11-24T06:60:00Z");
    assert_rejects("2026-11-24T06:51:61Z");
    assert_rejects("2026-11-24T06:51:99Z");
    assert_rejects("26-11-24T06:51:00Z");
    assert_rejects("20261-11-24T06:51:00Z");
    assert_rejects("+2026-11-24T06:51:00Z");
    assert_rejects("-0001-11-24T06:51:00Z");
    assert_rejects("2026-1-24T06:51:00Z");
    assert_rejects("2026/11/24T06:51:00Z");
    assert_rejects("2026-11-24T06-51-00Z");
    assert_rejects("2026-11-24T6:51:00Z");
    assert_rejects("\xef\xbc\x92"
                   "026-11-24T06:51:00Z"); /* FULLWIDTH DIGIT TWO */
    assert_rejects("2026-11-24T06:51:00.1a3Z");
}

static void test_parse_is_length_bounded(void **state) {
    (void)state;
    const char *s = "2026-11-24T06:51:00Zjunk";
    ttb_time_t t;
    assert_int_equal(ttb_time_parse(s, 20, &t), TTB_OK);
    assert_int_equal(t.sec, T_2026);
    assert_int_equal(ttb_time_parse(s, 21, &t), TTB_ERR_INVALID);
    assert_int_equal(ttb_time_parse(s, 19, &t), TTB_ERR_INVALID);
    /* An embedded NUL is a byte like any other, not an end. */
    const char nul[] = "2026-11-24T06:51:00Z\0";
    assert_int_equal(ttb_time_parse(nul, sizeof nul - 1, &t), TTB_ERR_INVALID);
    const char nul2[] = "2026-11-24T06:51:00.12\0003Z";
    assert_int_equal(ttb_time_parse(nul2, sizeof nul2 - 1, &t), TTB_ERR_INVALID);
    assert_int_equal(ttb_time_parse(NULL, 0, &t), TTB_ERR_INVALID);
}

static void test_round_trip(void **state) {
    (void)state;
    /* A spread of instants across the whole 0000-9999 range. */
    const int64_t lo = INT64_C(-62167219200), hi = INT64_C(253402300799);
    const int32_t fracs[] = {0, 1, 999, 1000, 123456, 1000000, 5000000, 999000000, 123456789,
                             999999999};
    uint64_t x = 0x9e3779b97f4a7c15u;
    for (int i = 0; i < 20000; i++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        ttb_time_t t = {lo + (int64_t)(x % (uint64_t)(hi - lo + 1)), fracs[i % 10]};
        char buf[TTB_TIME_BUFSZ];
        ttb_time_t back;
        size_t len = ttb_time_format_hash(t, buf);
        assert_int_equal(ttb_time_parse(buf, len, &back), TTB_OK);
        assert_int_equal(back.sec, t.sec);
        assert_int_equal(back.nsec, t.nsec);
        len = ttb_time_format_json(t, buf);
        assert_int_equal(ttb_time_parse(buf, len, &back), TTB_OK);
        assert_int_equal(ttb_time_cmp(back, t), 0);
    }
}

static void test_every_day_of_some_years(void **state) {
    (void)state;
    /* Format then parse each day's noon across leap and common years,
     * checking that consecutive days are 86400 s apart. */
    ttb_time_t prev;
    assert_int_equal(parse("1899-12-31T12:00:00Z", &prev), TTB_OK);
    for (int64_t day = 1; day < 366 * 205; day++) {
        ttb_time_t t = {prev.sec + 86400, 0};
        char buf[TTB_TIME_BUFSZ];
        ttb_time_t back;
        size_t len = ttb_time_format_json(t, buf);
        assert_int_equal(ttb_time_parse(buf, len, &back), TTB_OK);
        assert_int_equal(back.sec, t.sec);
        assert_memory_equal(buf + 10, "T12:00:00Z", 10);
        prev = t;
    }
}

static void test_cmp_and_ms(void **state) {
    (void)state;
    assert_int_equal(ttb_time_cmp(tm(1, 0), tm(1, 0)), 0);
    assert_int_equal(ttb_time_cmp(tm(1, 0), tm(1, 1)), -1);
    assert_int_equal(ttb_time_cmp(tm(2, 0), tm(1, 999999999)), 1);
    assert_int_equal(ttb_time_cmp(tm(-1, 0), tm(0, 0)), -1);

    assert_int_equal(ttb_time_to_ms(tm(0, 0)), 0);
    assert_int_equal(ttb_time_to_ms(tm(1, 999999999)), 1999);
    assert_int_equal(ttb_time_to_ms(tm(T_2026, 123456789)), T_2026 * 1000 + 123);
    assert_int_equal(ttb_time_to_ms(tm(-1, 999000000)), -1);

    ttb_time_t t = ttb_time_from_ms(T_2026 * 1000 + 123);
    assert_int_equal(t.sec, T_2026);
    assert_int_equal(t.nsec, 123000000);
    t = ttb_time_from_ms(-1);
    assert_int_equal(t.sec, -1);
    assert_int_equal(t.nsec, 999000000);
    t = ttb_time_from_ms(-1000);
    assert_int_equal(t.sec, -1);
    assert_int_equal(t.nsec, 0);
    for (int64_t ms = -5000; ms <= 5000; ms += 7)
        assert_int_equal(ttb_time_to_ms(ttb_time_from_ms(ms)), ms);
}

static void test_now(void **state) {
    (void)state;
    ttb_time_t a = ttb_time_now();
    ttb_time_t b = ttb_time_now();
    assert_true(a.sec > INT64_C(1700000000)); /* after 2023 */
    assert_true(a.nsec >= 0 && a.nsec < 1000000000);
    assert_true(ttb_time_cmp(a, b) <= 0);
    char buf[TTB_TIME_BUFSZ];
    ttb_time_t back;
    size_t len = ttb_time_format_hash(a, buf);
    assert_int_equal(ttb_time_parse(buf, len, &back), TTB_OK);
    assert_int_equal(ttb_time_cmp(a, back), 0);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_fraction_digits),
        cmocka_unit_test(test_format_json_suffix),
        cmocka_unit_test(test_format_calendar),
        cmocka_unit_test(test_parse_tinytown_forms),
        cmocka_unit_test(test_parse_other_rfc3339_forms),
        cmocka_unit_test(test_parse_offset_arithmetic),
        cmocka_unit_test(test_parse_leap_second),
        cmocka_unit_test(test_parse_rejects),
        cmocka_unit_test(test_parse_is_length_bounded),
        cmocka_unit_test(test_round_trip),
        cmocka_unit_test(test_every_day_of_some_years),
        cmocka_unit_test(test_cmp_and_ms),
        cmocka_unit_test(test_now),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
