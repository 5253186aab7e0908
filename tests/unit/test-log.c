/* SPDX-License-Identifier: MIT */
/*
 * Log lines as an operator greps them: timestamp, level, msg and key=value
 * pairs on one line, values quoted and escaped only when they must be, and
 * nothing at all below the configured level.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <regex.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/log.h"

/* Runs fn with stderr redirected to a temporary file; returns what it wrote. */
static char *capture(void (*fn)(void)) {
    char path[] = "/tmp/ttb-test-log-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(fd, STDERR_FILENO);
    fn();
    dup2(saved, STDERR_FILENO);
    close(saved);
    off_t size = lseek(fd, 0, SEEK_END);
    char *buf = calloc(1, (size_t)size + 1);
    assert_int_equal(pread(fd, buf, (size_t)size, 0), size);
    close(fd);
    return buf;
}

static void write_info(void) {
    ttb_log_info("bridge running", "topic", "tinytown.commands", "empty", "", "missing", NULL,
                 "odd", "a \"b\"\n\tc=d\\\x01");
}

static void test_line_format(void **state) {
    (void)state;
    ttb_log_set_level(TTB_LOG_INFO);
    char *out = capture(write_info);
    regex_t re;
    assert_int_equal(regcomp(&re, "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z ",
                             REG_EXTENDED | REG_NOSUB),
                     0);
    assert_int_equal(regexec(&re, out, 0, NULL, 0), 0);
    regfree(&re);
    const char *rest = strchr(out, ' ') + 1;
    assert_string_equal(rest, "level=info msg=\"bridge running\" topic=tinytown.commands empty=\"\" "
                              "missing=- odd=\"a \\\"b\\\"\\n\\tc=d\\\\\\x01\"\n");
    free(out);
}

static void write_levels(void) {
    ttb_log_debug("hidden");
    ttb_log_info("hidden too");
    ttb_log_warn("shown", "k", "v");
    ttb_log_error("also shown");
}

static void test_levels(void **state) {
    (void)state;
    ttb_log_set_level(TTB_LOG_WARN);
    assert_false(ttb_log_enabled(TTB_LOG_INFO));
    assert_true(ttb_log_enabled(TTB_LOG_ERROR));
    char *out = capture(write_levels);
    assert_null(strstr(out, "hidden"));
    assert_non_null(strstr(out, "level=warn msg=shown k=v\n"));
    assert_non_null(strstr(out, "level=error msg=\"also shown\"\n"));
    free(out);

    ttb_log_level_t lvl;
    assert_int_equal(ttb_log_level_parse("debug", &lvl), 0);
    assert_int_equal(lvl, TTB_LOG_DEBUG);
    assert_int_equal(ttb_log_level_parse("error", &lvl), 0);
    assert_int_equal(lvl, TTB_LOG_ERROR);
    assert_int_equal(ttb_log_level_parse("verbose", &lvl), TTB_ERR_INVALID);
}

static void write_long(void) {
    static char big[10000];
    memset(big, 'x', sizeof(big) - 1);
    ttb_log_info("long", "value", big);
}

static void test_long_lines_are_cut_not_split(void **state) {
    (void)state;
    ttb_log_set_level(TTB_LOG_INFO);
    char *out = capture(write_long);
    size_t len = strlen(out);
    assert_true(len <= 4096);
    assert_int_equal(out[len - 1], '\n');
    assert_non_null(strstr(out, " ...\n"));
    assert_ptr_equal(strchr(out, '\n'), out + len - 1); /* one line, however long */
    free(out);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_line_format),
        cmocka_unit_test(test_levels),
        cmocka_unit_test(test_long_lines_are_cut_not_split),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
