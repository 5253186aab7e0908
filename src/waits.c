/* SPDX-License-Identifier: MIT */
/*
 * Pending waits (see waits.h). Entries live on three intrusive lists: all of
 * them in insertion order (the sweep walks it with a cursor), the chain of
 * their hash bucket (agent id and town), and the due list (touched ones, so
 * a tick never scans everything to find them). Buckets double when the
 * table fills, so lookups stay short at a hundred thousand waits.
 */
#include "tinytown_bridge/waits.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct ttb_wait {
    ttb_wait_t *prev, *next;   /* all entries */
    ttb_wait_t *hprev, *hnext; /* bucket chain */
    ttb_wait_t *dnext;         /* due list (singly linked, lazily cleaned) */
    const char *town;
    char agent_id[TTB_UUID_BUFSZ];
    uint32_t hash;
    int64_t deadline_ms;
    uint64_t gen; /* the ttb_waits_due() call that last collected it */
    bool on_due_list;
    bool removed; /* left on the due list after removal: freed when popped */
    void *item;
};

struct ttb_waits {
    ttb_wait_t *head, *tail;
    ttb_wait_t **buckets;
    size_t nbuckets;
    size_t count;
    ttb_wait_t *due;        /* touched entries, newest first */
    ttb_wait_t *sweep;      /* next entry of the safety sweep (NULL: from the head) */
    int64_t sweep_ms;
    double sweep_credit;    /* entries the sweep owes, fractional */
    uint64_t gen;
};

/* FNV-1a over the town and the agent id. */
static uint32_t waits_hash(const char *town, const char *id, size_t len) {
    uint32_t h = 2166136261u;
    for (const char *p = town; *p; p++) h = (h ^ (uint8_t)*p) * 16777619u;
    h = (h ^ 0xffu) * 16777619u;
    for (size_t i = 0; i < len; i++) h = (h ^ (uint8_t)id[i]) * 16777619u;
    return h;
}

ttb_waits_t *ttb_waits_new(int64_t sweep_ms) {
    ttb_waits_t *w = calloc(1, sizeof(*w));
    if (!w) return NULL;
    w->nbuckets = 64;
    w->buckets = calloc(w->nbuckets, sizeof(*w->buckets));
    if (!w->buckets) {
        free(w);
        return NULL;
    }
    w->sweep_ms = sweep_ms > 0 ? sweep_ms : 10000;
    return w;
}

void ttb_waits_free(ttb_waits_t *w) {
    if (!w) return;
    for (ttb_wait_t *e = w->head, *next; e; e = next) {
        next = e->next;
        if (!e->on_due_list) free(e);
        else e->removed = true;
    }
    for (ttb_wait_t *e = w->due, *next; e; e = next) {
        next = e->dnext;
        free(e);
    }
    free(w->buckets);
    free(w);
}

static void bucket_link(ttb_waits_t *w, ttb_wait_t *e) {
    ttb_wait_t **b = &w->buckets[e->hash & (w->nbuckets - 1)];
    e->hprev = NULL;
    e->hnext = *b;
    if (*b) (*b)->hprev = e;
    *b = e;
}

static void waits_grow(ttb_waits_t *w) {
    size_t n = w->nbuckets * 2;
    ttb_wait_t **b = calloc(n, sizeof(*b));
    if (!b) return; /* longer chains, still correct */
    free(w->buckets);
    w->buckets = b;
    w->nbuckets = n;
    for (ttb_wait_t *e = w->head; e; e = e->next) bucket_link(w, e);
}

ttb_wait_t *ttb_waits_add(ttb_waits_t *w, const char *town, const char *agent_id,
                          int64_t deadline_ms, void *item) {
    ttb_wait_t *e = calloc(1, sizeof(*e));
    if (!e) return NULL;
    e->town = town;
    snprintf(e->agent_id, sizeof(e->agent_id), "%s", agent_id);
    e->hash = waits_hash(town, e->agent_id, strlen(e->agent_id));
    e->deadline_ms = deadline_ms;
    e->item = item;
    e->prev = w->tail;
    if (w->tail) w->tail->next = e;
    else w->head = e;
    w->tail = e;
    bucket_link(w, e);
    if (++w->count > w->nbuckets) waits_grow(w); /* relinks every entry, this one too */
    return e;
}

void ttb_waits_remove(ttb_waits_t *w, ttb_wait_t *e) {
    if (!e) return;
    if (w->sweep == e) w->sweep = e->next;
    if (e->prev) e->prev->next = e->next;
    else w->head = e->next;
    if (e->next) e->next->prev = e->prev;
    else w->tail = e->prev;
    if (e->hprev) e->hprev->hnext = e->hnext;
    else w->buckets[e->hash & (w->nbuckets - 1)] = e->hnext;
    if (e->hnext) e->hnext->hprev = e->hprev;
    w->count--;
    if (e->on_due_list) e->removed = true; /* freed when the due list drops it */
    else free(e);
}

static void waits_mark(ttb_waits_t *w, ttb_wait_t *e) {
    if (e->on_due_list) return;
    e->on_due_list = true;
    e->dnext = w->due;
    w->due = e;
}

void ttb_waits_touch(ttb_waits_t *w, const char *town, const char *agent_id, size_t len) {
    if (len >= TTB_UUID_BUFSZ) return;
    uint32_t h = waits_hash(town, agent_id, len);
    for (ttb_wait_t *e = w->buckets[h & (w->nbuckets - 1)]; e; e = e->hnext)
        if (e->hash == h && strncmp(e->agent_id, agent_id, len) == 0 && !e->agent_id[len] &&
            strcmp(e->town, town) == 0)
            waits_mark(w, e);
}

void ttb_waits_touch_all(ttb_waits_t *w) {
    for (ttb_wait_t *e = w->head; e; e = e->next) waits_mark(w, e);
}

size_t ttb_waits_due(ttb_waits_t *w, int64_t now_ms, int64_t tick_ms, void **items, size_t max) {
    size_t n = 0;
    uint64_t gen = ++w->gen; /* an entry is collected at most once per call */
    /* Touched entries first: what notifications told us about. Those that
     * do not fit stay on the list. */
    while (w->due && n < max) {
        ttb_wait_t *e = w->due;
        w->due = e->dnext;
        e->on_due_list = false;
        if (e->removed) {
            free(e);
            continue;
        }
        e->gen = gen;
        items[n++] = e->item;
    }
    /* Expired deadlines: a look at each in memory, no Redis. */
    for (ttb_wait_t *e = w->head; e && n < max; e = e->next) {
        if (e->deadline_ms > now_ms || e->gen == gen) continue;
        e->gen = gen;
        items[n++] = e->item;
    }
    /* The safety sweep's slice: every entry once per sweep period. */
    w->sweep_credit += (double)w->count * (double)(tick_ms > 0 ? tick_ms : 0) / (double)w->sweep_ms;
    if (w->sweep_credit > (double)w->count) w->sweep_credit = (double)w->count;
    size_t slice = (size_t)w->sweep_credit;
    w->sweep_credit -= (double)slice;
    for (size_t i = 0; i < slice && n < max && w->head; i++) {
        ttb_wait_t *e = w->sweep ? w->sweep : w->head;
        w->sweep = e->next;
        if (e->gen == gen) continue;
        e->gen = gen;
        items[n++] = e->item;
    }
    return n;
}

size_t ttb_waits_count(const ttb_waits_t *w) { return w->count; }

bool ttb_waits_any_touched(const ttb_waits_t *w) { return w->due != NULL; }

void ttb_waits_set_sweep(ttb_waits_t *w, int64_t sweep_ms) {
    w->sweep_ms = sweep_ms > 0 ? sweep_ms : 10000;
}

ttb_wait_t *ttb_waits_next(const ttb_waits_t *w, const ttb_wait_t *after) {
    return after ? after->next : w->head;
}

void *ttb_wait_item(const ttb_wait_t *e) { return e->item; }
