/* SPDX-License-Identifier: MIT */
/*
 * Logging. Each call builds its whole line in a stack buffer and writes it
 * with a single write(2), so lines from different threads never interleave.
 * Values are quoted only when they need to be, keeping lines grep-friendly.
 */
#include "tinytown_bridge/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/rfc3339.h"

static ttb_log_level_t log_level = TTB_LOG_INFO;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

void ttb_log_set_level(ttb_log_level_t level) { log_level = level; }

bool ttb_log_enabled(ttb_log_level_t level) { return level >= log_level; }

int ttb_log_level_parse(const char *s, ttb_log_level_t *out) {
    for (size_t i = 0; i < sizeof(level_names) / sizeof(level_names[0]); i++) {
        if (strcmp(s, level_names[i]) == 0) {
            *out = (ttb_log_level_t)i;
            return 0;
        }
    }
    return TTB_ERR_INVALID;
}

typedef struct line {
    char buf[4096];
    size_t len;
} line_t;

static void line_putc(line_t *l, char c) {
    if (l->len < sizeof(l->buf) - 1) l->buf[l->len++] = c;
}

static void line_puts(line_t *l, const char *s) {
    while (*s) line_putc(l, *s++);
}

static bool needs_quotes(const char *v) {
    if (*v == '\0') return true;
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        if (*p <= ' ' || *p == '"' || *p == '=' || *p == '\\' || *p == 0x7f) return true;
    }
    return false;
}

static void line_put_value(line_t *l, const char *v) {
    if (!needs_quotes(v)) {
        line_puts(l, v);
        return;
    }
    line_putc(l, '"');
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        char esc[8];
        switch (*p) {
        case '"': line_puts(l, "\\\""); break;
        case '\\': line_puts(l, "\\\\"); break;
        case '\n': line_puts(l, "\\n"); break;
        case '\r': line_puts(l, "\\r"); break;
        case '\t': line_puts(l, "\\t"); break;
        default:
            if (*p < 0x20 || *p == 0x7f) {
                snprintf(esc, sizeof(esc), "\\x%02x", *p);
                line_puts(l, esc);
            } else {
                line_putc(l, (char)*p);
            }
        }
    }
    line_putc(l, '"');
}

void ttb_log(ttb_log_level_t level, const char *msg, ...) {
    if (!ttb_log_enabled(level)) return;
    line_t l = {.len = 0};
    char ts[TTB_TIME_BUFSZ];
    ttb_time_t now = ttb_time_now();
    now.nsec -= now.nsec % 1000000; /* milliseconds are enough in logs */
    ttb_time_format_json(now, ts);
    line_puts(&l, ts);
    line_puts(&l, " level=");
    line_puts(&l, level_names[level]);
    line_puts(&l, " msg=");
    line_put_value(&l, msg);

    va_list ap;
    va_start(ap, msg);
    for (;;) {
        const char *key = va_arg(ap, const char *);
        if (!key) break;
        const char *value = va_arg(ap, const char *);
        line_putc(&l, ' ');
        line_puts(&l, key);
        line_putc(&l, '=');
        line_put_value(&l, value ? value : "-");
    }
    va_end(ap);
    if (l.len == sizeof(l.buf) - 1) memcpy(l.buf + l.len - 4, " ...", 4);
    l.buf[l.len++] = '\n';
    ssize_t rc = write(STDERR_FILENO, l.buf, l.len);
    (void)rc; /* nowhere left to report a failed log write */
}
