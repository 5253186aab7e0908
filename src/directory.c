/* SPDX-License-Identifier: MIT */
/*
 * A town's agents in memory: an array of small entries (removal moves the
 * last one into the hole), and two chained hash tables of array indexes: by
 * id, and by name folded to ASCII lower case (a spawn's name check ignores
 * case; an exact-name lookup walks the same chain and compares exactly).
 * Chains link entries by index, so the array may move without relinking.
 * Listing order (created_at, then id) is a third index, an array of entry
 * indexes kept sorted: a new agent is almost always the newest, so it is
 * appended; anything else (a removal moves an entry, an older agent read
 * late) marks it unsorted, and the next listing sorts it again.
 *
 * An entry is the id, state, created_at, a few flags and one allocation
 * holding the decoded name, nickname and role_id, then the stored bytes of
 * the three when they differ (rare: a NUL or invalid UTF-8 in a field), then
 * the tail of the agent's key when it is not the id (rarer: written by
 * hand). At 100,000 agents that is about 12 MiB, where whole agents took
 * four times as much.
 */
#include "tinytown_bridge/directory.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* More dirty agents than this, or than the town has, and one SCAN of the
 * whole town is cheaper than reading them one by one. */
#define DIRTY_MAX 16384
#define END UINT32_MAX /* the end of a chain */

enum {
    HAS_NICKNAME = 1, /* the agent has a nickname (else the decoded one is NULL) */
    HAS_ROLE = 2,     /* the agent has a role_id */
    HAS_RAW = 4,      /* the stored bytes follow the decoded strings */
    DIRTY = 8,        /* in the dirty list already */
    HAS_KEY = 16,     /* its key is not tt:{town}:agent:<id>: the key's tail follows */
};

typedef struct entry {
    char id[TTB_UUID_BUFSZ];
    uint8_t flags;
    uint8_t state; /* ttb_agent_state_t */
    ttb_time_t created_at;
    uint32_t next_id, next_name; /* the next entry of this one's chains */
    char *strs; /* name, nickname, role_id [, their stored bytes] [, key tail] */
} entry_t;

struct ttb_directory {
    entry_t *entries;
    size_t n, cap;
    uint32_t *by_id, *by_name; /* chain heads */
    size_t nbuckets;           /* a power of two, or 0 */
    uint32_t *order;           /* entry indexes in listing order, when sorted */
    size_t norder, caporder;
    bool sorted;               /* order holds every entry, in order */
    bool valid;
    int64_t filled_ms;
    char (*dirty)[TTB_UUID_BUFSZ];
    size_t ndirty, capdirty;
    const char **dirty_view;
};

/* FNV-1a: short keys, no adversary to fear (a collision costs a compare). */
static uint64_t hash_str(const char *s, bool fold) {
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (fold && c >= 'A' && c <= 'Z') c = (unsigned char)(c - 'A' + 'a');
        h = (h ^ c) * 1099511628211ull;
    }
    return h;
}

static bool eq_fold(const char *a, const char *b) {
    for (;; a++, b++) {
        unsigned char x = (unsigned char)*a, y = (unsigned char)*b;
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x - 'A' + 'a');
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y - 'A' + 'a');
        if (x != y) return false;
        if (!x) return true;
    }
}

/* String @p k of the entry's block: 0 name, 1 nickname, 2 role_id, 3..5
 * their stored bytes (only with HAS_RAW). */
static const char *str_at(const entry_t *e, int k) {
    const char *s = e->strs;
    for (; k > 0; k--) s += strlen(s) + 1;
    return s;
}

static const char *entry_name(const entry_t *e) { return e->strs; }

static uint32_t *chain_head(const ttb_directory_t *dir, bool names, const char *key) {
    uint32_t *table = names ? dir->by_name : dir->by_id;
    return &table[hash_str(key, names) & (dir->nbuckets - 1)];
}

static uint32_t *next_of(entry_t *e, bool names) { return names ? &e->next_name : &e->next_id; }

static const char *key_of(const entry_t *e, bool names) { return names ? entry_name(e) : e->id; }

static void link_at(ttb_directory_t *dir, size_t i, bool names) {
    entry_t *e = &dir->entries[i];
    uint32_t *head = chain_head(dir, names, key_of(e, names));
    *next_of(e, names) = *head;
    *head = (uint32_t)i;
}

static void unlink_at(ttb_directory_t *dir, size_t i, bool names) {
    entry_t *e = &dir->entries[i];
    uint32_t *p = chain_head(dir, names, key_of(e, names));
    while (*p != END && *p != i) p = next_of(&dir->entries[*p], names);
    if (*p != END) *p = *next_of(e, names);
}

/* Tables of at least @p need buckets, every entry linked again. */
static int rehash(ttb_directory_t *dir, size_t need) {
    size_t nb = dir->nbuckets ? dir->nbuckets : 64;
    while (nb < need) nb *= 2;
    uint32_t *a = malloc(nb * sizeof(*a)), *b = malloc(nb * sizeof(*b));
    if (!a || !b) {
        free(a);
        free(b);
        return TTB_ERR_NOMEM;
    }
    memset(a, 0xff, nb * sizeof(*a));
    memset(b, 0xff, nb * sizeof(*b));
    free(dir->by_id);
    free(dir->by_name);
    dir->by_id = a;
    dir->by_name = b;
    dir->nbuckets = nb;
    for (size_t i = 0; i < dir->n; i++) {
        link_at(dir, i, false);
        link_at(dir, i, true);
    }
    return 0;
}

static entry_t *find(const ttb_directory_t *dir, const char *id) {
    if (!dir->nbuckets) return NULL;
    for (uint32_t i = *chain_head(dir, false, id); i != END; i = dir->entries[i].next_id)
        if (strcmp(dir->entries[i].id, id) == 0) return &dir->entries[i];
    return NULL;
}

ttb_directory_t *ttb_dir_new(void) {
    ttb_directory_t *dir = calloc(1, sizeof(ttb_directory_t));
    if (dir) dir->sorted = true;
    return dir;
}

/* Listing order: oldest first, id breaking ties. */
static int order_cmp(const entry_t *a, const entry_t *b) {
    int c = ttb_time_cmp(a->created_at, b->created_at);
    return c ? c : strcmp(a->id, b->id);
}

/* Keeps the order sorted when entry @p i is new and the newest (the usual
 * spawn); anything else leaves it to be sorted at the next listing. */
static void order_added(ttb_directory_t *dir, size_t i) {
    if (!dir->sorted) return;
    if (dir->norder && order_cmp(&dir->entries[dir->order[dir->norder - 1]], &dir->entries[i]) > 0) {
        dir->sorted = false;
        return;
    }
    if (dir->norder == dir->caporder) {
        size_t cap = dir->caporder ? dir->caporder * 2 : 64;
        uint32_t *grown = realloc(dir->order, cap * sizeof(*grown));
        if (!grown) {
            dir->sorted = false; /* sorted (and allocated) again when asked */
            return;
        }
        dir->order = grown;
        dir->caporder = cap;
    }
    dir->order[dir->norder++] = (uint32_t)i;
}

void ttb_dir_clear(ttb_directory_t *dir) {
    for (size_t i = 0; i < dir->n; i++) free(dir->entries[i].strs);
    dir->n = 0;
    if (dir->nbuckets) {
        memset(dir->by_id, 0xff, dir->nbuckets * sizeof(uint32_t));
        memset(dir->by_name, 0xff, dir->nbuckets * sizeof(uint32_t));
    }
    dir->valid = false;
    dir->ndirty = 0;
    dir->norder = 0;
    dir->sorted = true;
}

void ttb_dir_free(ttb_directory_t *dir) {
    if (!dir) return;
    ttb_dir_clear(dir);
    free(dir->entries);
    free(dir->by_id);
    free(dir->by_name);
    free(dir->order);
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

/* The entry's string block for @p agent (and @p seen, when its stored bytes
 * differ from the decoded fields, or its key from its id), or NULL. */
static char *make_strs(const ttb_agent_t *agent, const ttb_dir_seen_t *seen, uint8_t *flags) {
    /* The decoded three, then the stored three (only when one differs),
     * then the key's id part (only when it is not the id). */
    const char *part[7] = {agent->name ? agent->name : "", agent->nickname ? agent->nickname : "",
                           agent->role_id ? agent->role_id : ""};
    *flags = (uint8_t)((agent->nickname ? HAS_NICKNAME : 0) | (agent->role_id ? HAS_ROLE : 0));
    if (seen) {
        const char *raw[3] = {seen->name, seen->nickname, seen->role_id};
        for (int k = 0; k < 3; k++) {
            part[3 + k] = raw[k] ? raw[k] : part[k];
            if (strcmp(part[3 + k], part[k]) != 0) *flags |= HAS_RAW;
        }
    }
    int nparts = *flags & HAS_RAW ? 6 : 3;
    if (seen && seen->key && strcmp(seen->key, agent->id) != 0) {
        *flags |= HAS_KEY;
        part[nparts++] = seen->key;
    }
    size_t len[7], total = 0;
    for (int k = 0; k < nparts; k++) total += len[k] = strlen(part[k]) + 1;
    char *block = malloc(total), *w = block;
    if (!block) return NULL;
    for (int k = 0; k < nparts; w += len[k], k++) memcpy(w, part[k], len[k]);
    return block;
}

int ttb_dir_put(ttb_directory_t *dir, ttb_agent_t *agent, const ttb_dir_seen_t *seen) {
    uint8_t flags;
    char *strs = make_strs(agent, seen, &flags);
    char id[TTB_UUID_BUFSZ];
    memcpy(id, agent->id, sizeof(id));
    ttb_time_t created_at = agent->created_at;
    uint8_t state = (uint8_t)agent->state;
    ttb_agent_clear(agent);
    if (!strs) return TTB_ERR_NOMEM;

    entry_t *e = find(dir, id);
    if (e) { /* replaced in place: only its name may move chains */
        size_t i = (size_t)(e - dir->entries);
        unlink_at(dir, i, true);
        free(e->strs);
        e->strs = strs;
        e->flags = (uint8_t)(flags | (e->flags & DIRTY));
        e->state = state;
        if (ttb_time_cmp(e->created_at, created_at) != 0) dir->sorted = false;
        e->created_at = created_at;
        link_at(dir, i, true);
        return 0;
    }
    if (dir->n == dir->cap) {
        size_t cap = dir->cap ? dir->cap * 2 : 64;
        entry_t *grown = cap < END ? realloc(dir->entries, cap * sizeof(*grown)) : NULL;
        if (!grown) {
            free(strs);
            return TTB_ERR_NOMEM;
        }
        dir->entries = grown;
        dir->cap = cap;
    }
    if (dir->n + 1 > dir->nbuckets && rehash(dir, dir->n + 1)) {
        free(strs);
        return TTB_ERR_NOMEM;
    }
    size_t i = dir->n++;
    entry_t *fresh = &dir->entries[i];
    memcpy(fresh->id, id, sizeof(id));
    fresh->flags = flags;
    fresh->strs = strs;
    fresh->state = state;
    fresh->created_at = created_at;
    link_at(dir, i, false);
    link_at(dir, i, true);
    order_added(dir, i);
    return 0;
}

void ttb_dir_remove(ttb_directory_t *dir, const char *id) {
    entry_t *e = find(dir, id);
    if (!e) return;
    size_t i = (size_t)(e - dir->entries), last = dir->n - 1;
    unlink_at(dir, i, false);
    unlink_at(dir, i, true);
    free(e->strs);
    dir->sorted = false; /* indexes moved; sorted again when listed */
    if (i != last) {
        unlink_at(dir, last, false);
        unlink_at(dir, last, true);
        *e = dir->entries[last];
        dir->n--;
        link_at(dir, i, false);
        link_at(dir, i, true);
    } else {
        dir->n--;
    }
}

size_t ttb_dir_count(const ttb_directory_t *dir) { return dir->n; }

bool ttb_dir_index(const ttb_directory_t *dir, const char *id, size_t *index) {
    const entry_t *e = find(dir, id);
    if (e) *index = (size_t)(e - dir->entries);
    return e != NULL;
}

const char *ttb_dir_id(const ttb_directory_t *dir, size_t index) {
    return dir->entries[index].id;
}

ttb_agent_t ttb_dir_agent(const ttb_directory_t *dir, size_t index) {
    const entry_t *e = &dir->entries[index];
    ttb_agent_t a;
    memset(&a, 0, sizeof(a));
    memcpy(a.id, e->id, sizeof(a.id));
    /* Borrowed: the agent is a view, never cleared by its holder. */
    a.name = (char *)(uintptr_t)entry_name(e);
    a.nickname = e->flags & HAS_NICKNAME ? (char *)(uintptr_t)str_at(e, 1) : NULL;
    a.role_id = e->flags & HAS_ROLE ? (char *)(uintptr_t)str_at(e, 2) : NULL;
    a.state = (ttb_agent_state_t)e->state;
    a.created_at = e->created_at;
    return a;
}

bool ttb_dir_unsure(const ttb_directory_t *dir, size_t index) {
    return dir->entries[index].flags & DIRTY;
}

/* What a sort compares, copied out of the entries (qsort takes no context). */
typedef struct order_key {
    ttb_time_t created_at;
    const char *id;
    uint32_t index;
} order_key_t;

static int order_key_cmp(const void *a, const void *b) {
    const order_key_t *x = a, *y = b;
    int c = ttb_time_cmp(x->created_at, y->created_at);
    return c ? c : strcmp(x->id, y->id);
}

int ttb_dir_in_order(ttb_directory_t *dir, const uint32_t **order) {
    if (!dir->sorted) {
        order_key_t *keys = malloc(sizeof(*keys) * (dir->n ? dir->n : 1));
        if (!keys) return TTB_ERR_NOMEM;
        if (dir->caporder < dir->n) {
            uint32_t *grown = realloc(dir->order, dir->n * sizeof(*grown));
            if (!grown) {
                free(keys);
                return TTB_ERR_NOMEM;
            }
            dir->order = grown;
            dir->caporder = dir->n;
        }
        for (size_t i = 0; i < dir->n; i++)
            keys[i] = (order_key_t){dir->entries[i].created_at, dir->entries[i].id, (uint32_t)i};
        qsort(keys, dir->n, sizeof(*keys), order_key_cmp);
        for (size_t i = 0; i < dir->n; i++) dir->order[i] = keys[i].index;
        free(keys);
        dir->norder = dir->n;
        dir->sorted = true;
    }
    *order = dir->order;
    return 0;
}

size_t ttb_dir_seek(const ttb_directory_t *dir, const uint32_t *order, ttb_time_t created_at,
                    const char *id) {
    entry_t key;
    memset(&key, 0, sizeof(key));
    key.created_at = created_at;
    snprintf(key.id, sizeof(key.id), "%s", id);
    size_t lo = 0, hi = dir->n; /* the first entry after the key is in [lo, hi] */
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (order_cmp(&dir->entries[order[mid]], &key) <= 0) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

ttb_dir_seen_t ttb_dir_seen(const ttb_directory_t *dir, size_t index) {
    const entry_t *e = &dir->entries[index];
    int base = e->flags & HAS_RAW ? 3 : 0;
    ttb_dir_seen_t s = {str_at(e, base), str_at(e, base + 1), str_at(e, base + 2),
                        e->flags & HAS_KEY ? str_at(e, base + 3) : NULL};
    return s;
}

size_t ttb_dir_name_holders(const ttb_directory_t *dir, const char *name, const char **ids,
                            size_t max) {
    size_t found = 0;
    if (!dir->nbuckets) return 0;
    for (uint32_t i = *chain_head(dir, true, name); i != END; i = dir->entries[i].next_name) {
        const entry_t *e = &dir->entries[i];
        if (!eq_fold(entry_name(e), name)) continue;
        if (found < max) ids[found] = e->id;
        found++;
    }
    return found;
}

ttb_code_t ttb_dir_resolve(const ttb_directory_t *dir, const char *ref, size_t *index,
                           char *errstr, size_t errstr_size) {
    size_t len;
    const char *t = ttb_str_trim(ref, &len);
    char id[TTB_UUID_BUFSZ];
    bool by_id = len > 0 && ttb_uuid_parse(t, len, id) == TTB_OK;
    if (len > 0 && dir->nbuckets && len < 4096 && !by_id) {
        /* One agent with exactly this name wins (as in ttb_agent_resolve). */
        char key[4096];
        memcpy(key, t, len);
        key[len] = '\0';
        size_t found = 0, first = 0;
        for (uint32_t i = *chain_head(dir, true, key); i != END && found < 2;
             i = dir->entries[i].next_name) {
            if (strcmp(entry_name(&dir->entries[i]), key) != 0) continue;
            if (found++ == 0) first = i;
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
    /* The rare paths walk every agent, as views in a contiguous array. */
    ttb_agent_t *flat = malloc(sizeof(*flat) * (dir->n ? dir->n : 1));
    if (!flat) {
        if (errstr && errstr_size) snprintf(errstr, errstr_size, "out of memory");
        return TTB_CODE_INTERNAL;
    }
    for (size_t i = 0; i < dir->n; i++) flat[i] = ttb_dir_agent(dir, i);
    ttb_code_t code = ttb_agent_resolve(flat, dir->n, ref, index, errstr, errstr_size);
    free(flat);
    return code;
}

static int dirty_cmp(const void *a, const void *b) { return strcmp(a, b); }

/* Puts entry @p e (or, for an agent the directory lacks, @p uuid) on the
 * dirty list, once. */
static int add_dirty(ttb_directory_t *dir, entry_t *e, const char *uuid) {
    if (e && (e->flags & DIRTY)) return 0; /* a busy agent is notified many times */
    if (dir->ndirty == dir->capdirty) {
        size_t cap = dir->capdirty ? dir->capdirty * 2 : 32;
        void *grown = realloc(dir->dirty, cap * sizeof(*dir->dirty));
        if (!grown) return TTB_ERR_NOMEM;
        dir->dirty = grown;
        dir->capdirty = cap;
    }
    if (e) e->flags |= DIRTY;
    memcpy(dir->dirty[dir->ndirty++], uuid, TTB_UUID_BUFSZ);
    return 0;
}

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
    int rc = add_dirty(dir, find(dir, uuid), uuid);
    if (rc) ttb_dir_clear(dir);
    return rc;
}

int ttb_dir_mark_changing(ttb_directory_t *dir, const char *id) {
    entry_t *e = find(dir, id);
    return e ? add_dirty(dir, e, e->id) : 0;
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
        if (e) e->flags &= (uint8_t)~DIRTY;
    }
    dir->ndirty = 0;
}
