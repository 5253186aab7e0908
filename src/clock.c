/* SPDX-License-Identifier: MIT */
/*
 * The loops' clock and their backoff (see clock.h). Jitter is a small
 * xorshift per backoff, seeded from the clock and the backoff's address:
 * it only has to keep processes apart, not be unpredictable.
 */
#include "tinytown_bridge/clock.h"

#include <time.h>

int64_t ttb_clock_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t ttb_clock_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

void ttb_backoff_init(ttb_backoff_t *b, int min_ms, int max_ms) {
    b->min_ms = min_ms > 0 ? min_ms : 1;
    b->max_ms = max_ms >= b->min_ms ? max_ms : b->min_ms;
    b->cur_ms = 0;
    b->retry_at_ms = 0;
    b->seed = (uint32_t)ttb_clock_us() ^ (uint32_t)(uintptr_t)b;
    if (!b->seed) b->seed = 0x9e3779b9u;
}

static uint32_t backoff_rand(ttb_backoff_t *b) {
    uint32_t x = b->seed;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return b->seed = x;
}

int ttb_backoff_fail(ttb_backoff_t *b) {
    if (b->cur_ms == 0) b->cur_ms = b->min_ms;
    else b->cur_ms = b->cur_ms > b->max_ms / 2 ? b->max_ms : b->cur_ms * 2;
    int delay = b->cur_ms - (int)(backoff_rand(b) % (uint32_t)(b->cur_ms / 5 + 1));
    b->retry_at_ms = ttb_clock_ms() + delay;
    return delay;
}

void ttb_backoff_reset(ttb_backoff_t *b) {
    b->cur_ms = 0;
    b->retry_at_ms = 0;
}

bool ttb_backoff_due(const ttb_backoff_t *b) { return ttb_clock_ms() >= b->retry_at_ms; }

int ttb_backoff_left_ms(const ttb_backoff_t *b) {
    int64_t left = b->retry_at_ms - ttb_clock_ms();
    return left > 0 ? (int)left : 0;
}
