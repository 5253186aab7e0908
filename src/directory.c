/* SPDX-License-Identifier: MIT */
/*
 * A town's agents in memory: an array of agents (removal moves the last one
 * into the hole), and two chained hash tables of array indexes, by id and by
 * exact name. The array is what ttb_agent_resolve walks when a reference is
 * not exactly one agent's name; the tables make the common cases O(1).
 */
#include "tinytown_bridge/directory.h"

#include <stdlib.h>
#include <string.h>

/* More dirty agents than this, or than the town has, and one SCAN of the
 * whole town is cheaper than reading them one by one. */
#define DIRTY_MAX 16384

typedef struct node {
    struct node *next;
    size_t index;
} node_t;

typedef struct table {
    node_t **buckets;
    size_t nbuckets; /* a power of two, or 0 */
} table_t;

typedef struct entry {
    ttb_agent_t agent;
    /* The stored bytes, when they differ from the decoded fields; else NULL. */
    char *raw_name, *raw_nickname, *raw_role_id;
    node_t by_id, by_name; /* this entry's nodes in the two tables */
    bool dirty;            /* in the dirty list already */
} entry_t;

struct ttb_directory {
    entry_t *entries;
    size_t n, cap;
    table_t ids, names;
    bool valid;
    int64_t filled_ms;
    char (*dirty)[TTB_UUID_BUFSZ];
    size_t ndirty, capdirty;
    const char **dirty_view;
};

/* FNV-1a: short keys, no adversary to fear (a collision costs a compare). */
static uint64_t hash_str(const char *s) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) h = (h ^ (unsigned char)*s) * 1099511628211ull;
    return h;
}

static const char *entry_name(const entry_t *e) { return e->agent.name ? e->agent.name : ""; }

static node_t **bucket(table_t *t, const char *key) {
    return &t->buckets[hash_str(key) & (t->nbuckets - 1)];
}

static const char *key_of(const ttb_directory_t *dir, const table_t *t, size_t index) {
    const entry_t *e = &dir->entries[index];
    return t == &dir->ids ? e->agent.id : entry_name(e);
}

static void table_unlink(ttb_directory_t *dir, table_t *t, node_t *node) {
    node_t **p = bucket(t, key_of(dir, t, node->index));
    while (*p && *p != node) p = &(*p)->next;
    if (*p) *p = node->next;
}

static void table_link(ttb_directory_t *dir, table_t *t, node_t *node) {
    node_t **p = bucket(t, key_of(dir, t, node->index));
    node->next = *p;
    *p = node;
}

/* Rebuilds both tables for at least @p need entries (the nodes live in the
 * entries, which may just have moved). */
static int rehash(ttb_directory_t *dir, size_t need) {
    size_t nb = dir->ids.nbuckets ? dir->ids.nbuckets : 64;
    while (nb < need) nb *= 2;
    node_t **a = calloc(nb, sizeof(*a)), **b = calloc(nb, sizeof(*b));
    if (!a || !b) {
        free(a);
        free(b);
        return TTB_ERR_NOMEM;
    }
    free(dir->ids.buckets);
    free(dir->names.buckets);
    dir->ids = (table_t){a, nb};
    dir->names = (table_t){b, nb};
    for (size_t i = 0; i < dir->n; i++) {
        dir->entries[i].by_id.index = dir->entries[i].by_name.index = i;
        table_link(dir, &dir->ids, &dir->entries[i].by_id);
        table_link(dir, &dir->names, &dir->entries[i].by_name);
    }
    return 0;
}

static entry_t *find(const ttb_directory_t *dir, const char *id) {
    if (!dir->ids.nbuckets) return NULL;
    for (node_t *p = dir->ids.buckets[hash_str(id) & (dir->ids.nbuckets - 1)]; p; p = p->next)
        if (strcmp(dir->entries[p->index].agent.id, id) == 0) return &dir->entries[p->index];
    return NULL;
}

ttb_directory_t *ttb_dir_new(void) { return calloc(1, sizeof(ttb_directory_t)); }

static void entry_clear(entry_t *e) {
    ttb_agent_clear(&e->agent);
    free(e->raw_name);
    free(e->raw_nickname);
    free(e->raw_role_id);
}

void ttb_dir_clear(ttb_directory_t *dir) {
    for (size_t i = 0; i < dir->n; i++) entry_clear(&dir->entries[i]);
    dir->n = 0;
    if (dir->ids.nbuckets) {
        memset(dir->ids.buckets, 0, dir->ids.nbuckets * sizeof(node_t *));
        memset(dir->names.buckets, 0, dir->names.nbuckets * sizeof(node_t *));
    }
    dir->valid = false;
    dir->ndirty = 0;
}

void ttb_dir_free(ttb_directory_t *dir) {
    if (!dir) return;
    ttb_dir_clear(dir);
    free(dir->entries);
    free(dir->ids.buckets);
    free(dir->names.buckets);
    free(dir->dirty);
    free(dir->dirty_view);
    free(dir);
}

bool ttb_dir_valid(const ttb_directory_t *dir) { return dir->valid; }

void ttb_dir_set_valid(ttb_directory_t *dir, int64_t now_ms) {
    dir->valid = true;
    dir->filled_ms = now_ms;
}

int64_t ttb_dir_age_ms(const ttb_directory_t *dir, int64_t now_ms) {
    return now_ms - dir->filled_ms;
}

/* A copy of @p raw when it differs from @p decoded, else NULL (in *out). */
static int keep_raw(const char *raw, const char *decoded, char **out) {
    *out = NULL;
    if (!raw || strcmp(raw, decoded ? decoded : "") == 0) return 0;
    *out = strdup(raw);
    return *out ? 0 : TTB_ERR_NOMEM;
}

int ttb_dir_put(ttb_directory_t *dir, ttb_agent_t *agent, const ttb_dir_seen_t *seen) {
    entry_t fresh = {.agent = *agent};
    memset(agent, 0, sizeof(*agent));
    int rc = 0;
    if (seen) {
        rc = keep_raw(seen->name, fresh.agent.name, &fresh.raw_name);
        if (!rc) rc = keep_raw(seen->nickname, fresh.agent.nickname, &fresh.raw_nickname);
        if (!rc) rc = keep_raw(seen->role_id, fresh.agent.role_id, &fresh.raw_role_id);
    }
    if (!rc && dir->n == dir->cap) {
        size_t cap = dir->cap ? dir->cap * 2 : 64;
        entry_t *grown = realloc(dir->entries, cap * sizeof(*grown));
        if (!grown) {
            rc = TTB_ERR_NOMEM;
        } else {
            dir->entries = grown;
            dir->cap = cap;
            /* The nodes moved with the entries: relink everything. */
            rc = rehash(dir, cap);
        }
    }
    if (rc) {
        entry_clear(&fresh);
        return rc;
    }
    ttb_dir_remove(dir, fresh.agent.id);
    size_t i = dir->n++;
    dir->entries[i] = fresh;
    dir->entries[i].by_id.index = dir->entries[i].by_name.index = i;
    table_link(dir, &dir->ids, &dir->entries[i].by_id);
    table_link(dir, &dir->names, &dir->entries[i].by_name);
    return 0;
}

void ttb_dir_remove(ttb_directory_t *dir, const char *id) {
    entry_t *e = find(dir, id);
    if (!e) return;
    table_unlink(dir, &dir->ids, &e->by_id);
    table_unlink(dir, &dir->names, &e->by_name);
    entry_clear(e);
    size_t i = (size_t)(e - dir->entries), last = --dir->n;
    if (i == last) return;
    entry_t *moved = &dir->entries[last];
    table_unlink(dir, &dir->ids, &moved->by_id);
    table_unlink(dir, &dir->names, &moved->by_name);
    *e = *moved;
    e->by_id.index = e->by_name.index = i;
    table_link(dir, &dir->ids, &e->by_id);
    table_link(dir, &dir->names, &e->by_name);
}

size_t ttb_dir_count(const ttb_directory_t *dir) { return dir->n; }

const ttb_agent_t *ttb_dir_agent(const ttb_directory_t *dir, size_t index) {
    return &dir->entries[index].agent;
}

ttb_dir_seen_t ttb_dir_seen(const ttb_directory_t *dir, size_t index) {
    const entry_t *e = &dir->entries[index];
    ttb_dir_seen_t s = {
        e->raw_name ? e->raw_name : entry_name(e),
        e->raw_nickname ? e->raw_nickname : e->agent.nickname ? e->agent.nickname : "",
        e->raw_role_id ? e->raw_role_id : e->agent.role_id ? e->agent.role_id : "",
    };
    return s;
}

ttb_code_t ttb_dir_resolve(const ttb_directory_t *dir, const char *ref, size_t *index,
                           char *errstr, size_t errstr_size) {
    size_t len;
    const char *t = ttb_str_trim(ref, &len);
    char id[TTB_UUID_BUFSZ];
    bool by_id = len > 0 && ttb_uuid_parse(t, len, id) == TTB_OK;
    if (len > 0 && dir->names.nbuckets && len < 4096 && !by_id) {
        /* One agent with exactly this name wins (as in ttb_agent_resolve). */
        char key[4096];
        memcpy(key, t, len);
        key[len] = '\0';
        size_t found = 0, first = 0;
        const node_t *p = dir->names.buckets[hash_str(key) & (dir->names.nbuckets - 1)];
        for (; p && found < 2; p = p->next) {
            if (strcmp(entry_name(&dir->entries[p->index]), key) != 0) continue;
            if (found++ == 0) first = p->index;
        }
        if (found == 1) {
            if (index) *index = first;
            if (errstr && errstr_size) errstr[0] = '\0';
            return TTB_CODE_OK;
        }
    }
    if (by_id) {
        const entry_t *e = find(dir, id);
        if (e) {
            if (index) *index = (size_t)(e - dir->entries);
            if (errstr && errstr_size) errstr[0] = '\0';
            return TTB_CODE_OK;
        }
    }
    /* The rare paths walk every agent, in a contiguous copy. */
    ttb_agent_t *flat = malloc(sizeof(*flat) * (dir->n ? dir->n : 1));
    if (!flat) {
        if (errstr && errstr_size) snprintf(errstr, errstr_size, "out of memory");
        return TTB_CODE_INTERNAL;
    }
    for (size_t i = 0; i < dir->n; i++) flat[i] = dir->entries[i].agent;
    ttb_code_t code = ttb_agent_resolve(flat, dir->n, ref, index, errstr, errstr_size);
    free(flat);
    return code;
}

static int dirty_cmp(const void *a, const void *b) { return strcmp(a, b); }

int ttb_dir_touch(ttb_directory_t *dir, const char *id, size_t len) {
    if (!dir->valid) return 0; /* the next SCAN reads everything anyway */
    char uuid[TTB_UUID_BUFSZ];
    /* A key that is not tt:{town}:agent:<uuid> may still hold a hash with
     * an id: only a SCAN sees it the way a listing does. */
    if (len != TTB_UUID_BUFSZ - 1 || ttb_uuid_parse(id, len, uuid) != TTB_OK ||
        memcmp(uuid, id, len) != 0 || dir->ndirty >= DIRTY_MAX || dir->ndirty > dir->n + 64) {
        ttb_dir_clear(dir);
        return 0;
    }
    entry_t *e = find(dir, uuid);
    if (e && e->dirty) return 0; /* a busy agent is notified many times */
    if (e) e->dirty = true;
    if (dir->ndirty == dir->capdirty) {
        size_t cap = dir->capdirty ? dir->capdirty * 2 : 32;
        void *grown = realloc(dir->dirty, cap * sizeof(*dir->dirty));
        if (!grown) {
            ttb_dir_clear(dir);
            return TTB_ERR_NOMEM;
        }
        dir->dirty = grown;
        dir->capdirty = cap;
    }
    memcpy(dir->dirty[dir->ndirty++], uuid, TTB_UUID_BUFSZ);
    return 0;
}

size_t ttb_dir_dirty(ttb_directory_t *d, const char *const **ids) {
    if (d->ndirty == 0) {
        *ids = NULL;
        return 0;
    }
    /* Each id once (new agents may have been notified more than once). */
    qsort(d->dirty, d->ndirty, sizeof(*d->dirty), dirty_cmp);
    size_t w = 1;
    for (size_t r = 1; r < d->ndirty; r++)
        if (strcmp(d->dirty[r], d->dirty[w - 1]) != 0) memcpy(d->dirty[w++], d->dirty[r], TTB_UUID_BUFSZ);
    d->ndirty = w;
    const char **view = realloc(d->dirty_view, w * sizeof(*view));
    if (!view) {
        *ids = NULL;
        ttb_dir_clear(d);
        return 0;
    }
    d->dirty_view = view;
    for (size_t i = 0; i < w; i++) view[i] = d->dirty[i];
    *ids = view;
    return w;
}

void ttb_dir_clear_dirty(ttb_directory_t *dir) {
    for (size_t i = 0; i < dir->ndirty; i++) {
        entry_t *e = find(dir, dir->dirty[i]);
        if (e) e->dirty = false;
    }
    dir->ndirty = 0;
}
