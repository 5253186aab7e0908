/* SPDX-License-Identifier: MIT */
/**
 * @file clock.h
 * @brief The one monotonic clock of the loops, and capped exponential backoff.
 *
 * Every loop that retries (the command loop, the relay, state capture, the
 * send client) measures time with ttb_clock_ms()/ttb_clock_us() and spaces
 * its retries with a ttb_backoff_t, so they all back off alike: from a floor,
 * doubling per failure up to a cap, with a little jitter so that several
 * bridges that lost the same Redis do not come back in lock step. A backoff
 * is reset only by work that succeeded, never by a mere reconnect: a server
 * that accepts connections but refuses every command (a read-only replica,
 * maxmemory reached) must not be hammered.
 *
 * @locality a backoff belongs to one thread; the clock is thread-safe.
 */
#ifndef TINYTOWN_BRIDGE_CLOCK_H
#define TINYTOWN_BRIDGE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

/** @returns monotonic milliseconds (CLOCK_MONOTONIC). */
int64_t ttb_clock_ms(void);
/** @returns monotonic microseconds (CLOCK_MONOTONIC). */
uint64_t ttb_clock_us(void);

typedef struct ttb_backoff {
    int min_ms;          /**< first delay */
    int max_ms;          /**< cap */
    int cur_ms;          /**< the last delay chosen; 0 after a reset */
    int64_t retry_at_ms; /**< ttb_clock_ms() value from which a retry is due */
    uint32_t seed;       /**< jitter state */
} ttb_backoff_t;

/** Sets up @p b with a floor and a cap (a cap below the floor is raised to it). */
void ttb_backoff_init(ttb_backoff_t *b, int min_ms, int max_ms);
/**
 * Records a failure: the next try is due after twice the last delay (the
 * floor after a reset), capped, minus up to a fifth for jitter.
 * @returns the delay in milliseconds.
 */
int ttb_backoff_fail(ttb_backoff_t *b);
/** Records success: the next failure starts from the floor again. */
void ttb_backoff_reset(ttb_backoff_t *b);
/** @returns true when no failure is pending or its delay has passed. */
bool ttb_backoff_due(const ttb_backoff_t *b);
/** @returns milliseconds until a retry is due (0 when due). */
int ttb_backoff_left_ms(const ttb_backoff_t *b);

#endif
