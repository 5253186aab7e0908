/* SPDX-License-Identifier: MIT */
/*
 * RFC 3339 instants, read and written exactly as tinytown (chrono 0.4) does.
 *
 * Every timestamp in a tinytown hash is chrono's `to_rfc3339()` of a UTC
 * instant: `YYYY-MM-DDTHH:MM:SS[.f]+00:00`, where the fraction is the shortest
 * of 0, 3, 6 or 9 digits that is exact. JSON documents (serde) write the same
 * text with `Z` instead of `+00:00`. Reading follows chrono's
 * `parse_from_rfc3339`, which is stricter than ISO 8601 in some ways (four
 * digit year, seconds and an offset are required, an offset needs its colon)
 * and looser in others (`t`/space separator, `z`, any number of fraction
 * digits, U+2212 MINUS SIGN before an offset, a leap second in any minute).
 *
 * Calendar arithmetic is done here on the proleptic Gregorian calendar
 * (days from 1970-01-01, Howard Hinnant's algorithms) rather than with libc's
 * timezone functions: they depend on TZ, on locale state and on the range of
 * time_t, and none of that may change what we write into Redis.
 */
#include "tinytown_bridge/rfc3339.h"

#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "tinytown_bridge/error.h"

#define NSEC_PER_SEC 1000000000
#define SEC_PER_DAY 86400

/* Floor division: the calendar needs days that round toward the past. */
static int64_t floor_div(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* The remainder that goes with floor_div(), in [0, b) for b > 0. Computed
 * with %, not as a - q * b, which overflows near the ends of int64. */
static int64_t floor_mod(int64_t a, int64_t b) {
    int64_t r = a % b;
    if (r != 0 && ((r < 0) != (b < 0))) r += b;
    return r;
}

/* Days from 1970-01-01 to y-m-d (proleptic Gregorian; any year). */
static int64_t days_from_civil(int64_t y, unsigned m, unsigned d) {
    y -= m <= 2;
    const int64_t era = floor_div(y, 400);
    const int64_t yoe = y - era * 400;                                 /* [0, 399] */
    const int64_t doy = (153 * (m > 2 ? m - 3 : m + 9) + 2) / 5 + d - 1; /* [0, 365] */
    const int64_t doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;           /* [0, 146096] */
    return era * 146097 + doe - 719468;
}

/* The inverse of days_from_civil(). */
static void civil_from_days(int64_t z, int64_t *y, unsigned *m, unsigned *d) {
    z += 719468;
    const int64_t era = floor_div(z, 146097);
    const int64_t doe = z - era * 146097;                                   /* [0, 146096] */
    const int64_t yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* [0, 399] */
    const int64_t doy = doe - (365 * yoe + yoe / 4 - yoe / 100);            /* [0, 365] */
    const int64_t mp = (5 * doy + 2) / 153;                                 /* [0, 11] */
    *d = (unsigned)(doy - (153 * mp + 2) / 5 + 1);
    *m = (unsigned)(mp < 10 ? mp + 3 : mp - 9);
    *y = yoe + era * 400 + (*m <= 2);
}

static bool is_leap_year(unsigned y) {
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned days_in_month(unsigned y, unsigned m) {
    static const unsigned char days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && is_leap_year(y) ? 29 : days[m - 1];
}

static bool is_digit(char c) {
    return c >= '0' && c <= '9';
}

/* Two ASCII digits at s[0..1]; -1 if either is not a digit. */
static int two_digits(const char *s) {
    if (!is_digit(s[0]) || !is_digit(s[1])) return -1;
    return (s[0] - '0') * 10 + (s[1] - '0');
}

/* Keeps nsec in 0..999999999 whatever a caller put into a ttb_time_t. */
static ttb_time_t normalise(ttb_time_t t) {
    if (t.nsec < 0 || t.nsec >= NSEC_PER_SEC) {
        int64_t carry = floor_div(t.nsec, NSEC_PER_SEC);
        t.nsec = (int32_t)floor_mod(t.nsec, NSEC_PER_SEC);
        /* At the ends of the range, saturate instead of overflowing. */
        if (carry > 0 && t.sec > INT64_MAX - carry) {
            t.sec = INT64_MAX;
            t.nsec = NSEC_PER_SEC - 1;
        } else if (carry < 0 && t.sec < INT64_MIN - carry) {
            t.sec = INT64_MIN;
            t.nsec = 0;
        } else {
            t.sec += carry;
        }
    }
    return t;
}

int ttb_time_parse(const char *s, size_t len, ttb_time_t *out) {
    /* The fixed part, "YYYY-MM-DDTHH:MM:SS", is always 19 bytes. */
    if (s == NULL || out == NULL || len < 19) return TTB_ERR_INVALID;
    if (s[4] != '-' || s[7] != '-' || s[13] != ':' || s[16] != ':') return TTB_ERR_INVALID;
    if (s[10] != 'T' && s[10] != 't' && s[10] != ' ') return TTB_ERR_INVALID;

    int yh = two_digits(s), yl = two_digits(s + 2);
    int month = two_digits(s + 5), day = two_digits(s + 8);
    int hour = two_digits(s + 11), minute = two_digits(s + 14), second = two_digits(s + 17);
    if (yh < 0 || yl < 0 || month < 0 || day < 0 || hour < 0 || minute < 0 || second < 0)
        return TTB_ERR_INVALID;
    unsigned year = (unsigned)(yh * 100 + yl);
    if (month < 1 || month > 12) return TTB_ERR_INVALID;
    if (day < 1 || (unsigned)day > days_in_month(year, (unsigned)month)) return TTB_ERR_INVALID;
    if (hour > 23 || minute > 59 || second > 60) return TTB_ERR_INVALID;

    size_t pos = 19;
    int32_t nsec = 0;
    if (pos < len && s[pos] == '.') {
        pos++;
        size_t digits = 0;
        /* The first nine digits count; chrono skips any further ones. */
        while (pos < len && is_digit(s[pos])) {
            if (digits < 9) nsec = nsec * 10 + (s[pos] - '0');
            digits++;
            pos++;
        }
        if (digits == 0) return TTB_ERR_INVALID;
        for (size_t i = digits; i < 9; i++) nsec *= 10;
    }

    /* Offset: Z/z, or a sign, two digits, a colon and two digits. */
    if (pos >= len) return TTB_ERR_INVALID;
    int64_t offset = 0;
    if (s[pos] == 'Z' || s[pos] == 'z') {
        pos++;
    } else {
        int sign;
        if (s[pos] == '+') {
            sign = 1;
            pos++;
        } else if (s[pos] == '-') {
            sign = -1;
            pos++;
        } else if (len - pos >= 3 && memcmp(s + pos, "\xe2\x88\x92", 3) == 0) {
            /* U+2212 MINUS SIGN, which chrono accepts as well. */
            sign = -1;
            pos += 3;
        } else {
            return TTB_ERR_INVALID;
        }
        if (len - pos < 5 || s[pos + 2] != ':') return TTB_ERR_INVALID;
        int oh = two_digits(s + pos), om = two_digits(s + pos + 3);
        /* RFC 3339 (and chrono) allow at most 23:59 either way. */
        if (oh < 0 || om < 0 || oh > 23 || om > 59) return TTB_ERR_INVALID;
        offset = sign * (int64_t)(oh * 3600 + om * 60);
        pos += 5;
    }
    if (pos != len) return TTB_ERR_INVALID;

    if (second == 60) {
        /* chrono keeps a leap second as a nanosecond count past 1e9 in :59;
         * ttb_time_t cannot hold that, so it becomes the last instant of :59,
         * which still sorts after everything else in that minute. */
        second = 59;
        nsec = NSEC_PER_SEC - 1;
    }

    int64_t days = days_from_civil(year, (unsigned)month, (unsigned)day);
    out->sec = days * SEC_PER_DAY + hour * 3600 + minute * 60 + second - offset;
    out->nsec = nsec;
    return TTB_OK;
}

/* chrono's `write_rfc3339` with SecondsFormat::AutoSi; suffix "+00:00" or "Z". */
static size_t format_utc(ttb_time_t t, char buf[TTB_TIME_BUFSZ], const char *suffix) {
    t = normalise(t);
    int64_t days = floor_div(t.sec, SEC_PER_DAY);
    int64_t secs = floor_mod(t.sec, SEC_PER_DAY);
    int64_t year;
    unsigned month, day;
    civil_from_days(days, &year, &month, &day);

    char ybuf[24];
    if (year >= 0 && year <= 9999) {
        snprintf(ybuf, sizeof ybuf, "%04" PRId64, year);
    } else {
        /* chrono writes years outside 0..9999 with an explicit sign ({:+05}). */
        snprintf(ybuf, sizeof ybuf, "%+05" PRId64, year);
    }

    char frac[16] = ""; /* ".123456789" needs 11; the rest quiets -Wformat-truncation */
    int32_t ns = t.nsec;
    if (ns == 0) {
        /* no fraction */
    } else if (ns % 1000000 == 0) {
        snprintf(frac, sizeof frac, ".%03" PRId32, ns / 1000000);
    } else if (ns % 1000 == 0) {
        snprintf(frac, sizeof frac, ".%06" PRId32, ns / 1000);
    } else {
        snprintf(frac, sizeof frac, ".%09" PRId32, ns);
    }

    int n = snprintf(buf, TTB_TIME_BUFSZ, "%s-%02u-%02uT%02u:%02u:%02u%s%s", ybuf, month, day,
                     (unsigned)(secs / 3600), (unsigned)(secs / 60 % 60), (unsigned)(secs % 60),
                     frac, suffix);
    if (n < 0) {
        buf[0] = '\0';
        return 0;
    }
    return (size_t)n < TTB_TIME_BUFSZ ? (size_t)n : TTB_TIME_BUFSZ - 1;
}

size_t ttb_time_format_hash(ttb_time_t t, char buf[TTB_TIME_BUFSZ]) {
    return format_utc(t, buf, "+00:00");
}

size_t ttb_time_format_json(ttb_time_t t, char buf[TTB_TIME_BUFSZ]) {
    return format_utc(t, buf, "Z");
}

ttb_time_t ttb_time_now(void) {
    struct timespec ts;
    ttb_time_t t = {0, 0};
    if (clock_gettime(CLOCK_REALTIME, &ts) == 0) {
        t.sec = (int64_t)ts.tv_sec;
        t.nsec = (int32_t)ts.tv_nsec;
    }
    return t;
}

int ttb_time_cmp(ttb_time_t a, ttb_time_t b) {
    a = normalise(a);
    b = normalise(b);
    if (a.sec != b.sec) return a.sec < b.sec ? -1 : 1;
    if (a.nsec != b.nsec) return a.nsec < b.nsec ? -1 : 1;
    return 0;
}

int64_t ttb_time_to_ms(ttb_time_t t) {
    t = normalise(t);
    /* Saturate rather than overflow for instants no calendar can name. */
    if (t.sec > INT64_MAX / 1000 - 1) return INT64_MAX;
    if (t.sec < INT64_MIN / 1000 + 1) return INT64_MIN;
    return t.sec * 1000 + t.nsec / 1000000;
}

ttb_time_t ttb_time_from_ms(int64_t ms) {
    ttb_time_t t = {floor_div(ms, 1000), (int32_t)(floor_mod(ms, 1000) * 1000000)};
    return t;
}
