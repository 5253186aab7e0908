/* SPDX-License-Identifier: MIT */
/*
 * The in-memory town directory: whatever is put, replaced and removed, its
 * answers are those of ttb_agent_resolve over the same agents (the fast
 * paths by exact name and by id must not change a single answer), lookups
 * survive the array moving under the tables, and dirty marks come back once
 * each, until too many make the directory invalid.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <cmocka.h>

#include "tinytown_bridge/directory.h"

#define N 600

static void agent_id(char buf[TTB_UUID_BUFSZ], int i) {
    snprintf(buf, TTB_UUID_BUFSZ, "%08x-0000-4000-8000-%012d", (unsigned)i * 2654435761u, i);
}

/* Names that collide on purpose: exact duplicates, case variants, names
 * that are another agent's nickname or short id. */
static void make_agent(ttb_agent_t *a, int i, int generation) {
    memset(a, 0, sizeof(*a));
    agent_id(a->id, i);
    char buf[64];
    switch (i % 5) {
    case 0: snprintf(buf, sizeof(buf), "worker-%d", i); break;
    case 1: snprintf(buf, sizeof(buf), "dup-%d", i % 7); break;
    case 2: snprintf(buf, sizeof(buf), "Dup-%d", i % 7); break;
    case 3: snprintf(buf, sizeof(buf), "nick-%d", (i + 1) % 50); break;
    default: snprintf(buf, sizeof(buf), "g%d-%d", generation, i); break;
    }
    a->name = strdup(buf);
    snprintf(buf, sizeof(buf), "nick-%d", i % 50);
    a->nickname = i % 3 ? strdup(buf) : NULL;
    a->role_id = i % 4 == 0 ? strdup("reviewer") : NULL;
    a->cli = strdup("claude");
    assert_non_null(a->name);
}

/* The directory's agents as an array, in its order. */
static ttb_agent_t *flat(const ttb_directory_t *d) {
    size_t n = ttb_dir_count(d);
    ttb_agent_t *f = malloc(sizeof(*f) * (n ? n : 1));
    assert_non_null(f);
    for (size_t i = 0; i < n; i++) f[i] = ttb_dir_agent(d, i);
    return f;
}

static void assert_same_answers(const ttb_directory_t *d, const char *ref) {
    ttb_agent_t *f = flat(d);
    char want_err[512], got_err[512];
    size_t want_idx = SIZE_MAX, got_idx = SIZE_MAX;
    ttb_code_t want = ttb_agent_resolve(f, ttb_dir_count(d), ref, &want_idx, want_err,
                                        sizeof(want_err));
    ttb_code_t got = ttb_dir_resolve(d, ref, &got_idx, got_err, sizeof(got_err));
    assert_int_equal(got, want);
    if (want == TTB_CODE_OK) assert_string_equal(f[got_idx].id, f[want_idx].id);
    else assert_string_equal(got_err, want_err);
    free(f);
}

static void check_refs(const ttb_directory_t *d) {
    char ref[64];
    for (int i = 0; i < N; i += 7) {
        snprintf(ref, sizeof(ref), "worker-%d", i);
        assert_same_answers(d, ref);
        snprintf(ref, sizeof(ref), "  dup-%d ", i % 7);
        assert_same_answers(d, ref);
        snprintf(ref, sizeof(ref), "nick-%d", i % 50);
        assert_same_answers(d, ref);
        snprintf(ref, sizeof(ref), "g1-%d", i);
        assert_same_answers(d, ref);
        agent_id(ref, i);
        assert_same_answers(d, ref);
        ref[4] = '\0';
        assert_same_answers(d, ref); /* a short id */
    }
    assert_same_answers(d, "nobody");
    assert_same_answers(d, "");
}

/* A spawn's name check: the ids of the agents whose name equals @p name in
 * any ASCII case, as a walk with strcasecmp finds them. */
static void assert_name_holders(const ttb_directory_t *d, const char *name) {
    const char *ids[8];
    size_t got = ttb_dir_name_holders(d, name, ids, 8), want = 0;
    for (size_t i = 0; i < ttb_dir_count(d); i++) {
        ttb_agent_t a = ttb_dir_agent(d, i);
        if (strcasecmp(a.name, name) != 0) continue;
        want++;
        bool listed = false;
        for (size_t k = 0; k < got && k < 8; k++) listed |= strcmp(ids[k], a.id) == 0;
        if (want <= 8 && got <= 8) assert_true(listed);
    }
    if (got != want) fail_msg("%zu agents named \"%s\" in any case, the directory says %zu", want, name, got);
}

static void check_name_holders(const ttb_directory_t *d) {
    char name[64];
    for (int i = 0; i < N; i += 11) {
        snprintf(name, sizeof(name), "DUP-%d", i % 7); /* dup-n and Dup-n */
        assert_name_holders(d, name);
        snprintf(name, sizeof(name), "Worker-%d", i);
        assert_name_holders(d, name);
        snprintf(name, sizeof(name), "g0-%d", i);
        assert_name_holders(d, name);
    }
    assert_name_holders(d, "nobody");
}

static void test_answers_match_agent_resolve(void **state) {
    (void)state;
    ttb_directory_t *d = ttb_dir_new();
    assert_non_null(d);
    ttb_agent_t a;
    for (int i = 0; i < N; i++) {
        make_agent(&a, i, 0);
        assert_int_equal(ttb_dir_put(d, &a, NULL), 0);
    }
    assert_int_equal(ttb_dir_count(d), N);
    check_refs(d);
    check_name_holders(d);

    /* Replace a third (renamed: the old names must no longer resolve),
     * remove another third (the last entries move into the holes). */
    char id[TTB_UUID_BUFSZ];
    for (int i = 0; i < N; i += 3) {
        make_agent(&a, i, 1);
        assert_int_equal(ttb_dir_put(d, &a, NULL), 0);
    }
    for (int i = 1; i < N; i += 3) {
        agent_id(id, i);
        ttb_dir_remove(d, id);
    }
    ttb_dir_remove(d, "not-an-agent");
    assert_int_equal(ttb_dir_count(d), N - N / 3);
    check_refs(d);
    check_name_holders(d);
    ttb_dir_free(d);
}

static void test_seen_keeps_stored_bytes(void **state) {
    (void)state;
    ttb_directory_t *d = ttb_dir_new();
    ttb_agent_t a;
    make_agent(&a, 5, 0);
    /* Stored with a byte the decoder cut away: the script must compare the
     * stored bytes, not the decoded ones. */
    ttb_dir_seen_t raw = {"worker-5\xff", "", "r", "by-hand"};
    assert_int_equal(ttb_dir_put(d, &a, &raw), 0);
    ttb_dir_seen_t seen = ttb_dir_seen(d, 0);
    assert_string_equal(seen.name, "worker-5\xff");
    assert_string_equal(seen.nickname, "");
    assert_string_equal(seen.role_id, "r");
    assert_string_equal(seen.key, "by-hand"); /* a listing reads it from there */
    assert_string_equal(ttb_dir_agent(d, 0).name, "worker-5"); /* the decoded agent as given */

    make_agent(&a, 6, 0);
    assert_int_equal(ttb_dir_put(d, &a, NULL), 0);
    seen = ttb_dir_seen(d, 1);
    assert_string_equal(seen.name, "dup-6");
    assert_string_equal(seen.nickname, "");
    assert_string_equal(seen.role_id, "");
    assert_null(seen.key);
    ttb_dir_free(d);
}

static void test_dirty_marks(void **state) {
    (void)state;
    ttb_directory_t *d = ttb_dir_new();
    ttb_agent_t a;
    char id[TTB_UUID_BUFSZ];
    for (int i = 0; i < 100; i++) {
        make_agent(&a, i, 0);
        assert_int_equal(ttb_dir_put(d, &a, NULL), 0);
    }
    ttb_dir_set_valid(d, 1000);
    assert_int_equal(ttb_dir_age_ms(d, 1500), 500);

    /* Known agents notified many times, and one the directory has not seen. */
    for (int k = 0; k < 5; k++)
        for (int i = 0; i < 10; i++) {
            agent_id(id, i);
            assert_int_equal(ttb_dir_touch(d, id, strlen(id)), 0);
        }
    agent_id(id, 4242);
    ttb_dir_touch(d, id, strlen(id));
    ttb_dir_touch(d, id, strlen(id));
    const char *const *ids;
    assert_int_equal(ttb_dir_dirty(d, &ids), 11);
    for (size_t i = 1; i < 11; i++) assert_true(strcmp(ids[i - 1], ids[i]) < 0);
    ttb_dir_clear_dirty(d);
    assert_int_equal(ttb_dir_dirty(d, &ids), 0);
    assert_true(ttb_dir_valid(d));

    /* A key that is not an agent id: only a SCAN can tell what it holds. */
    assert_int_equal(ttb_dir_touch(d, "not-a-uuid", 10), 0);
    assert_false(ttb_dir_valid(d));
    assert_int_equal(ttb_dir_count(d), 0);

    /* More marks than the town has agents: one SCAN is cheaper. */
    for (int i = 0; i < 100; i++) {
        make_agent(&a, i, 0);
        assert_int_equal(ttb_dir_put(d, &a, NULL), 0);
    }
    ttb_dir_set_valid(d, 0);
    for (int i = 1000; i < 1200 && ttb_dir_valid(d); i++) {
        agent_id(id, i);
        ttb_dir_touch(d, id, strlen(id));
    }
    assert_false(ttb_dir_valid(d));

    /* An invalid directory needs no marks: its next use reads everything. */
    agent_id(id, 1);
    ttb_dir_touch(d, id, strlen(id));
    assert_int_equal(ttb_dir_dirty(d, &ids), 0);
    ttb_dir_free(d);
}

/* The directory's listing order against a sort of its agents done here. */
static int cmp_listing(const void *x, const void *y) {
    const ttb_agent_t *a = x, *b = y;
    int c = ttb_time_cmp(a->created_at, b->created_at);
    return c ? c : strcmp(a->id, b->id);
}

static void assert_in_listing_order(ttb_directory_t *d) {
    ttb_agent_t *want = flat(d);
    size_t n = ttb_dir_count(d);
    qsort(want, n, sizeof(*want), cmp_listing);
    const uint32_t *order;
    assert_int_equal(ttb_dir_in_order(d, &order), 0);
    for (size_t i = 0; i < n; i++) assert_string_equal(ttb_dir_id(d, order[i]), want[i].id);
    /* Every cursor, and one between two agents, starts at the next agent. */
    for (size_t i = 0; i < n; i += 7) {
        assert_int_equal(ttb_dir_seek(d, order, want[i].created_at, want[i].id), i + 1);
        ttb_time_t before = want[i].created_at;
        before.nsec = before.nsec ? before.nsec - 1 : 0;
        size_t at = ttb_dir_seek(d, order, before, "");
        assert_true(at <= i);
        assert_true(at == 0 || cmp_listing(&want[at - 1], &want[i]) < 0);
    }
    free(want);
}

static void put_created(ttb_directory_t *d, int i, int generation, int64_t sec) {
    ttb_agent_t a;
    make_agent(&a, i, generation);
    a.created_at = (ttb_time_t){sec, (int32_t)(i % 3) * 1000};
    a.state = i % 4 ? TTB_STATE_IDLE : TTB_STATE_STOPPED;
    assert_int_equal(ttb_dir_put(d, &a, NULL), 0);
}

static void test_listing_order(void **state) {
    (void)state;
    ttb_directory_t *d = ttb_dir_new();
    /* Spawned in order (appended), with ties broken by id... */
    for (int i = 0; i < N; i++) put_created(d, i, 0, 1000 + i / 4);
    assert_in_listing_order(d);
    /* ...then an older agent read late, a re-read that moved created_at,
     * removals that move entries, and more spawns after that. */
    put_created(d, N, 0, 5);
    put_created(d, 17, 1, 99999);
    for (int i = 2; i < N; i += 9) {
        char id[TTB_UUID_BUFSZ];
        agent_id(id, i);
        ttb_dir_remove(d, id);
    }
    assert_in_listing_order(d);
    for (int i = N + 1; i < N + 50; i++) put_created(d, i, 0, 200000 + i);
    assert_in_listing_order(d);
    assert_int_equal(ttb_dir_agent(d, 0).state, TTB_STATE_STOPPED); /* agent 0 */
    ttb_dir_clear(d);
    assert_in_listing_order(d);
    ttb_dir_free(d);
}

static void test_changing_agents_are_read_again(void **state) {
    (void)state;
    ttb_directory_t *d = ttb_dir_new();
    char id[TTB_UUID_BUFSZ];
    const char *const *ids;
    for (int i = 0; i < 10; i++) put_created(d, i, 0, 1000 + i);
    ttb_dir_set_valid(d, 0);
    agent_id(id, 3);
    assert_int_equal(ttb_dir_mark_changing(d, id), 0);
    assert_int_equal(ttb_dir_touch(d, id, strlen(id)), 0); /* its notification: once */
    assert_int_equal(ttb_dir_mark_changing(d, "not-an-agent"), 0);
    for (size_t i = 0; i < ttb_dir_count(d); i++)
        assert_int_equal(ttb_dir_unsure(d, i), strcmp(ttb_dir_id(d, i), id) == 0);
    assert_int_equal(ttb_dir_dirty(d, &ids), 1);
    assert_string_equal(ids[0], id);
    put_created(d, 3, 1, 1003); /* read again: its state is known */
    ttb_dir_clear_dirty(d);
    for (size_t i = 0; i < ttb_dir_count(d); i++) assert_false(ttb_dir_unsure(d, i));

    /* Many more changes than a notification storm may bring: never invalid,
     * every one read again. */
    for (int i = 10; i < 300; i++) put_created(d, i, 0, 2000 + i);
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < 300; i++) {
            agent_id(id, i);
            assert_int_equal(ttb_dir_mark_changing(d, id), 0);
        }
    assert_true(ttb_dir_valid(d));
    assert_int_equal(ttb_dir_dirty(d, &ids), 300);
    ttb_dir_free(d);
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_answers_match_agent_resolve),
        cmocka_unit_test(test_seen_keeps_stored_bytes),
        cmocka_unit_test(test_dirty_marks),
        cmocka_unit_test(test_listing_order),
        cmocka_unit_test(test_changing_agents_are_read_again),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
