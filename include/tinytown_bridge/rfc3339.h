/* SPDX-License-Identifier: MIT */
/**
 * @file rfc3339.h
 * @brief Instants in time, read in any RFC 3339 form, written as tinytown writes them.
 *
 * tinytown (chrono) writes UTC instants with the shortest exact fraction of
 * 0, 3, 6 or 9 digits: `2026-11-24T06:51:00.123456789+00:00` in Redis hashes
 * and `...Z` in JSON. Readers accept any valid RFC 3339 timestamp as chrono's
 * `parse_from_rfc3339` does (offsets up to ±23:59, also with U+2212 as the
 * minus sign; `t`/`T` or space separator; `z`/`Z`; one or more fraction digits,
 * those past the ninth ignored) and normalise to UTC.
 */
#ifndef TINYTOWN_BRIDGE_RFC3339_H
#define TINYTOWN_BRIDGE_RFC3339_H

#include <stddef.h>
#include <stdint.h>

/** An instant: seconds since the Unix epoch (UTC) and nanoseconds 0..999999999. */
typedef struct ttb_time {
    int64_t sec;
    int32_t nsec;
} ttb_time_t;

/** Big enough for any formatted instant of a year up to six digits, with its NUL. */
#define TTB_TIME_BUFSZ 40

/**
 * Parses an RFC 3339 timestamp of exactly @p len bytes (years 0000-9999).
 * Rejects out-of-range fields (month 13, day 31 in April, hour 24, ...).
 * A leap second (:60, in any minute, as chrono allows) is accepted; since
 * nsec cannot exceed 999999999 here it is folded into :59.999999999.
 * @returns 0, or TTB_ERR_INVALID.
 */
int ttb_time_parse(const char *s, size_t len, ttb_time_t *out);

/** Writes @p t in tinytown's hash form (`+00:00`). @returns the length written. */
size_t ttb_time_format_hash(ttb_time_t t, char buf[TTB_TIME_BUFSZ]);

/** Writes @p t in tinytown's JSON form (`Z`). @returns the length written. */
size_t ttb_time_format_json(ttb_time_t t, char buf[TTB_TIME_BUFSZ]);

/** @returns the current wall-clock time (CLOCK_REALTIME). */
ttb_time_t ttb_time_now(void);

/** @returns a < b: -1, equal: 0, a > b: 1. */
int ttb_time_cmp(ttb_time_t a, ttb_time_t b);

/** @returns @p t as milliseconds since the epoch (truncating). */
int64_t ttb_time_to_ms(ttb_time_t t);

/** @returns the instant @p ms milliseconds after the epoch. */
ttb_time_t ttb_time_from_ms(int64_t ms);

#endif
