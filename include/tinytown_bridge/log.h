/* SPDX-License-Identifier: MIT */
/**
 * @file log.h
 * @brief Levelled key=value log lines on stderr.
 *
 * One line per event worth a line: `2026-11-24T06:51:00.123Z level=info msg="..." k=v ...`.
 * The level is checked before anything is formatted, so debug lines cost a
 * compare when debug is off. Values with spaces, quotes or control characters
 * are quoted and escaped; secrets must never be passed here.
 */
#ifndef TINYTOWN_BRIDGE_LOG_H
#define TINYTOWN_BRIDGE_LOG_H

#include <stdbool.h>

typedef enum ttb_log_level {
    TTB_LOG_DEBUG = 0,
    TTB_LOG_INFO,
    TTB_LOG_WARN,
    TTB_LOG_ERROR
} ttb_log_level_t;

/** Sets the lowest level written (default info). Not thread-safe: call at start-up. */
void ttb_log_set_level(ttb_log_level_t level);
/** Parses "debug", "info", "warn" or "error". @returns 0 or TTB_ERR_INVALID. */
int ttb_log_level_parse(const char *s, ttb_log_level_t *out);
/** @returns true when lines of @p level are written. */
bool ttb_log_enabled(ttb_log_level_t level);

/**
 * Writes one line: @p msg, then key=value pairs given as alternating
 * `const char *` keys and values, ended by a NULL key. A NULL value is written
 * as `-`. Thread-safe (one write(2) per line).
 */
void ttb_log(ttb_log_level_t level, const char *msg, ...);

#define ttb_log_debug(...) \
    do { if (ttb_log_enabled(TTB_LOG_DEBUG)) ttb_log(TTB_LOG_DEBUG, __VA_ARGS__, (const char *)0); } while (0)
#define ttb_log_info(...) ttb_log(TTB_LOG_INFO, __VA_ARGS__, (const char *)0)
#define ttb_log_warn(...) ttb_log(TTB_LOG_WARN, __VA_ARGS__, (const char *)0)
#define ttb_log_error(...) ttb_log(TTB_LOG_ERROR, __VA_ARGS__, (const char *)0)

#endif
