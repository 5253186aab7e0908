/* SPDX-License-Identifier: MIT */
/*
 * The pending-waits index: a touch reaches exactly the waits on that agent of
 * that town, however many there are (the table grows under them), deadlines
 * and the sweep hand out each wait once per call, and removal is safe while
 * a wait is still marked due.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tinytown_bridge/waits.h"

#define N 1000

static void agent_id(char buf[TTB_UUID_BUFSZ], int i) {
    snprintf(buf, TTB_UUID_BUFSZ, "00000000-0000-4000-8000-%012d", i);
}

static void test_touch_reaches_only_that_agent(void **state) {
    (void)state;
    ttb_waits_t *w = ttb_waits_new(1000);
    static int items[N];
    ttb_wait_t *entries[N];
    char id[TTB_UUID_BUFSZ];
    for (int i = 0; i < N; i++) {
        agent_id(id, i % 100); /* ten waits per agent */
        entries[i] = ttb_waits_add(w, (i / 100) % 2 ? "demo" : "other", id, INT64_MAX, &items[i]);
        assert_non_null(entries[i]);
    }
    assert_int_equal(ttb_waits_count(w), N);
    void *due[N];
    assert_false(ttb_waits_any_touched(w));
    assert_int_equal(ttb_waits_due(w, 0, 0, due, N), 0);

    agent_id(id, 7);
    ttb_waits_touch(w, "demo", id, strlen(id));
    ttb_waits_touch(w, "demo", id, strlen(id)); /* twice: still once each */
    assert_true(ttb_waits_any_touched(w));
    size_t n = ttb_waits_due(w, 0, 0, due, N);
    assert_int_equal(n, 10 / 2); /* agent 7 waits in both towns; demo's only */
    for (size_t k = 0; k < n; k++) {
        int i = (int)((int *)due[k] - items);
        assert_int_equal(i % 100, 7);
        assert_int_equal((i / 100) % 2, 1);
    }
    assert_false(ttb_waits_any_touched(w));
    /* A prefix of an id is not the id. */
    ttb_waits_touch(w, "demo", id, strlen(id) - 1);
    assert_int_equal(ttb_waits_due(w, 0, 0, due, N), 0);

    /* Removed while touched: neither handed out nor leaked. */
    ttb_waits_touch(w, "demo", id, strlen(id));
    for (int i = 7; i < N; i += 100) {
        if ((i / 100) % 2) ttb_waits_remove(w, entries[i]);
    }
    assert_int_equal(ttb_waits_due(w, 0, 0, due, N), 0);
    assert_int_equal(ttb_waits_count(w), N - 5);
    ttb_waits_free(w);
}

static void test_deadlines_and_sweep(void **state) {
    (void)state;
    ttb_waits_t *w = ttb_waits_new(1000);
    static int items[N];
    char id[TTB_UUID_BUFSZ];
    for (int i = 0; i < N; i++) {
        agent_id(id, i);
        assert_non_null(ttb_waits_add(w, "demo", id, i < 10 ? 100 : INT64_MAX, &items[i]));
    }
    void *due[N];
    assert_int_equal(ttb_waits_due(w, 99, 0, due, N), 0);
    assert_int_equal(ttb_waits_due(w, 100, 0, due, N), 10);
    /* A tenth of the sweep period: a tenth of the waits (each once), and
     * the expired ones again, not twice. */
    size_t n = ttb_waits_due(w, 100, 100, due, N);
    assert_true(n >= 100 && n <= 110);
    for (size_t a = 0; a < n; a++)
        for (size_t b = a + 1; b < n; b++) assert_ptr_not_equal(due[a], due[b]);
    /* A whole period covers everyone. */
    int seen[N] = {0};
    for (int tick = 0; tick < 10; tick++) {
        n = ttb_waits_due(w, 0, 100, due, N);
        for (size_t k = 0; k < n; k++) seen[(int *)due[k] - items]++;
    }
    for (int i = 0; i < N; i++) assert_true(seen[i] >= 1);
    /* Room for fewer than are due: the rest stay due. */
    ttb_waits_touch_all(w);
    assert_int_equal(ttb_waits_due(w, 0, 0, due, 300), 300);
    assert_true(ttb_waits_any_touched(w));
    assert_int_equal(ttb_waits_due(w, 0, 0, due, N), N - 300);
    ttb_waits_free(w);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_touch_reaches_only_that_agent),
        cmocka_unit_test(test_deadlines_and_sweep),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
