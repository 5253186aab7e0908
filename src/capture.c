/* SPDX-License-Identifier: MIT */
/*
 * State capture: agent state changes made by anyone but the bridge, turned
 * into `agent_state_changed` events in the town stream and the bridge's
 * outbox (and from there, by the relay, into Kafka: however many changes are
 * captured at once, none is lost to tinytown's MAXLEN; docs/events.md).
 *
 * tinytown's agent loops move an agent between idle and working by writing
 * the hash, without an event. The bridge keeps, per town, the last state it
 * knows of each agent (`ttb:{town}:observed`; its own scripts update it with
 * every change they make), and one Lua script per agent compares that record
 * with the hash, writes the event and updates the record atomically. Running
 * the script again, from a second bridge or because a notification and a
 * reconcile coincide, finds nothing new, so no transition is reported twice.
 *
 * Two triggers run the script. Keyspace notifications (a dedicated
 * subscriber connection, `__keyspace@<db>__:tt:{town}:agent:*`) make capture
 * prompt; they are fire-and-forget, so a periodic reconciling scan of every
 * town (and one after every connect) makes it complete: a state that lasted
 * a reconcile interval is always seen. Changes that come and go between two
 * looks are not; nothing short of tinytown emitting events could see them.
 *
 * The first time a town is seen (no observed record, no baseline marker) its
 * agents are recorded without events, so starting the bridge on an existing
 * town does not announce every agent as new.
 *
 * @locality the public functions run on the caller's thread, the rest on the
 * capture thread.
 */
#include "tinytown_bridge/capture.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/error.h"
#include "tinytown_bridge/log.h"
#include "tinytown_bridge/metrics.h"
#include "tinytown_bridge/rfc3339.h"
#include "tinytown_bridge/store.h"

/* How often the stop flag is looked at while waiting for notifications. */
#define CAPTURE_TICK_MS 100
#define CAPTURE_BACKOFF_MIN_MS 100
#define CAPTURE_DEFAULT_SCAN_COUNT 1000
/* Notifications gathered before their checks are sent as one pipeline. */
#define CAPTURE_BATCH 1000

/* Return codes of capture.lua. */
enum { CAPTURE_NONE = 0, CAPTURE_SPAWNED, CAPTURE_CHANGED, CAPTURE_REMOVED, CAPTURE_RECORDED };

typedef struct capture_town {
    const char *name;
    char channel_prefix[TTB_KEY_BUFSZ + 32]; /* "__keyspace@<db>__:tt:<town>:agent:" */
    size_t channel_prefix_len;
    char pattern[TTB_KEY_BUFSZ + 34];        /* the prefix and "*" */
    char key_pattern[TTB_KEY_BUFSZ];         /* "tt:<town>:agent:*" for SCAN */
    size_t key_prefix_len;                   /* up to the "*" */
    char observed_key[TTB_KEY_BUFSZ];
    char marker_key[TTB_KEY_BUFSZ];          /* "ttb:<town>:observed:baseline" */
} capture_town_t;

/* An agent to check, gathered from notifications. */
typedef struct capture_item {
    size_t town;
    char *id;
} capture_item_t;

struct ttb_capture {
    const ttb_config_t *config;
    ttb_store_t *store;
    redisContext *sub;
    capture_town_t *towns;
    size_t ntowns;
    capture_item_t *items;
    size_t nitems, items_cap;
    unsigned scan_count;
    int reconcile_ms;
    ttb_backoff_t backoff;
    int64_t next_reconcile_ms;
    bool redis_down_logged;
    bool notify_warned;
    pthread_t thread;
    bool running;
    atomic_bool stop;
};

static void capture_sleep(ttb_capture_t *cap, int ms) {
    int64_t until = ttb_clock_ms() + ms;
    while (!atomic_load(&cap->stop)) {
        int64_t left = until - ttb_clock_ms();
        if (left <= 0) break;
        if (left > CAPTURE_TICK_MS) left = CAPTURE_TICK_MS;
        struct timespec ts = {.tv_sec = 0, .tv_nsec = (long)left * 1000000L};
        nanosleep(&ts, NULL);
    }
}

static void capture_disconnect(ttb_capture_t *cap) {
    if (cap->store) ttb_store_disconnect(cap->store);
    if (cap->sub) redisFree(cap->sub);
    cap->sub = NULL;
}

static void capture_redis_lost(ttb_capture_t *cap, const char *why) {
    if (!cap->redis_down_logged)
        ttb_log_warn("state capture lost redis; retrying", "error", why);
    cap->redis_down_logged = true;
    capture_disconnect(cap);
}

/* ---- the script ---------------------------------------------------------- */

/* After NOSCRIPT: the script again (a connect loads it too). */
static int capture_load_script(ttb_capture_t *cap) {
    int rc = ttb_store_load_scripts(cap->store);
    if (rc && rc != TTB_ERR_IO)
        ttb_log_error("capture script refused by redis", "error", ttb_store_errstr(cap->store));
    return rc;
}

/* The script's leading arguments: mode, town, time; then the ids. */
#define CAPTURE_LEAD 3

/* A batch of agents for one script call: ids borrowed until appended. */
typedef struct capture_batch {
    const char **argv;
    size_t *lens;
    size_t n, cap; /* ids, after the leading arguments */
} capture_batch_t;

static int capture_batch_add(capture_batch_t *b, const char *id, size_t len) {
    if (b->n == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 256;
        const char **argv = realloc(b->argv, (cap + CAPTURE_LEAD) * sizeof(*argv));
        if (!argv) return TTB_ERR_NOMEM;
        b->argv = argv;
        size_t *lens = realloc(b->lens, (cap + CAPTURE_LEAD) * sizeof(*lens));
        if (!lens) return TTB_ERR_NOMEM;
        b->lens = lens;
        b->cap = cap;
    }
    b->argv[CAPTURE_LEAD + b->n] = id;
    b->lens[CAPTURE_LEAD + b->n] = len;
    b->n++;
    return 0;
}

static void capture_batch_free(capture_batch_t *b) {
    free(b->argv);
    free(b->lens);
}

/* Queues one script call for the batch's agents (nothing when empty).
 * @returns 0 with *queued set, or TTB_ERR_IO. */
static int capture_append_batch(ttb_capture_t *cap, const char *mode, const capture_town_t *t,
                                capture_batch_t *b, const char *ts, size_t *queued) {
    if (b->n == 0) return 0;
    const char *lead[CAPTURE_LEAD] = {mode, t->name, ts};
    for (int i = 0; i < CAPTURE_LEAD; i++) {
        b->argv[i] = lead[i];
        b->lens[i] = strlen(lead[i]);
    }
    int rc = ttb_store_append_script(cap->store, TTB_SCRIPT_CAPTURE, 0, (int)(b->n + CAPTURE_LEAD),
                                     b->argv, b->lens);
    b->n = 0;
    if (rc) return rc;
    (*queued)++;
    return 0;
}

/* Reads one script reply. @returns 0 or TTB_ERR_IO; sets *noscript after
 * NOSCRIPT (the caller reloads the script and runs the pass again). */
static int capture_check_reply(ttb_capture_t *cap, bool *noscript) {
    redisReply *r;
    int rc = ttb_store_reply(cap->store, &r);
    if (rc) return rc;
    if (r->type == REDIS_REPLY_ARRAY) {
        for (size_t i = 0; i < r->elements; i++) {
            long long code = r->element[i]->type == REDIS_REPLY_INTEGER ? r->element[i]->integer : 0;
            if (code == CAPTURE_SPAWNED || code == CAPTURE_CHANGED || code == CAPTURE_REMOVED)
                atomic_fetch_add_explicit(&ttb_metrics.states_captured, 1, memory_order_relaxed);
        }
    } else if (ttb_reply_is_noscript(r)) {
        *noscript = true;
    } else {
        ttb_log_warn("state capture script failed", "error",
                     r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    freeReplyObject(r);
    return 0;
}

static void capture_time(char ts[TTB_TIME_BUFSZ]) { ttb_time_format_json(ttb_time_now(), ts); }

/* ---- reconcile ----------------------------------------------------------- */

static int capture_cmp_str(const void *a, const void *b) {
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

typedef struct capture_ids {
    char **v;
    size_t n, cap;
} capture_ids_t;

static int capture_ids_add(capture_ids_t *ids, const char *s, size_t len) {
    if (ids->n == ids->cap) {
        size_t cap = ids->cap ? ids->cap * 2 : 256;
        char **v = realloc(ids->v, cap * sizeof(*v));
        if (!v) return TTB_ERR_NOMEM;
        ids->v = v;
        ids->cap = cap;
    }
    char *copy = malloc(len + 1);
    if (!copy) return TTB_ERR_NOMEM;
    memcpy(copy, s, len);
    copy[len] = '\0';
    ids->v[ids->n++] = copy;
    return 0;
}

static void capture_ids_free(capture_ids_t *ids) {
    for (size_t i = 0; i < ids->n; i++) free(ids->v[i]);
    free(ids->v);
}

/* Walks the town's agents (SCAN) and then the observed record (HSCAN, for
 * agents that are gone), running the script for each. One round trip per
 * page: the next page's SCAN travels with this page's scripts. */
static int capture_reconcile_town(ttb_capture_t *cap, const capture_town_t *t, bool *noscript) {
    char ts[TTB_TIME_BUFSZ];
    capture_time(ts);
    char count[16];
    snprintf(count, sizeof(count), "%u", cap->scan_count);

    redisReply *r;
    if (ttb_store_appendf(cap->store, "GET %s", t->marker_key) ||
        ttb_store_appendf(cap->store, "EXISTS %s", t->observed_key))
        return TTB_ERR_IO;
    if (ttb_store_reply(cap->store, &r)) return TTB_ERR_IO;
    bool marker = r->type == REDIS_REPLY_STRING;
    bool pending = marker && strcmp(r->str, "pending") == 0;
    freeReplyObject(r);
    if (ttb_store_reply(cap->store, &r)) return TTB_ERR_IO;
    bool observed = r->type == REDIS_REPLY_INTEGER && r->integer > 0;
    freeReplyObject(r);
    /* "pending" means an earlier baseline was interrupted: finish it. */
    bool baseline = (!marker && !observed) || pending;
    if (baseline && !pending) {
        if (ttb_store_command(cap->store, &r, "SET %s pending", t->marker_key)) return TTB_ERR_IO;
        freeReplyObject(r);
        ttb_log_info("state capture: first sight of town, recording its agents", "town", t->name);
    }
    const char *mode = baseline ? "baseline" : "check";

    capture_ids_t seen = {0};
    capture_batch_t batch = {0};
    int rc = 0;
    size_t queued = 0;
    char cursor[TTB_CURSOR_BUFSZ] = "0";
    bool first = true;
    /* Agents in the town. */
    while (rc == 0 && (first || strcmp(cursor, "0") != 0)) {
        first = false;
        if (ttb_store_appendf(cap->store, "SCAN %s MATCH %s COUNT %s", cursor, t->key_pattern,
                              count)) {
            rc = TTB_ERR_IO;
            break;
        }
        for (; queued > 0 && rc == 0; queued--) rc = capture_check_reply(cap, noscript);
        if (rc || (rc = ttb_store_reply(cap->store, &r))) break;
        const redisReply *keys;
        if (ttb_reply_scan_page(r, cursor, &keys)) {
            freeReplyObject(r);
            rc = TTB_ERR_PROTO;
            break;
        }
        for (size_t i = 0; i < keys->elements && rc == 0; i++) {
            const redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= t->key_prefix_len) continue;
            const char *id = k->str + t->key_prefix_len;
            size_t id_len = k->len - t->key_prefix_len;
            rc = capture_ids_add(&seen, id, id_len);
            if (rc == 0) rc = capture_batch_add(&batch, id, id_len);
        }
        if (rc == 0) rc = capture_append_batch(cap, mode, t, &batch, ts, &queued);
        freeReplyObject(r);
    }
    for (; queued > 0 && rc == 0; queued--) rc = capture_check_reply(cap, noscript);
    if (seen.n > 1) qsort(seen.v, seen.n, sizeof(*seen.v), capture_cmp_str);

    /* Agents the bridge knew that the scan did not find: deleted, probably. */
    snprintf(cursor, sizeof(cursor), "0");
    first = true;
    while (rc == 0 && (first || strcmp(cursor, "0") != 0)) {
        first = false;
        if (ttb_store_appendf(cap->store, "HSCAN %s %s COUNT %s", t->observed_key, cursor,
                              count)) {
            rc = TTB_ERR_IO;
            break;
        }
        for (; queued > 0 && rc == 0; queued--) rc = capture_check_reply(cap, noscript);
        if (rc || (rc = ttb_store_reply(cap->store, &r))) break;
        const redisReply *fields;
        if (ttb_reply_scan_page(r, cursor, &fields)) {
            freeReplyObject(r);
            rc = TTB_ERR_PROTO;
            break;
        }
        for (size_t i = 0; i + 1 < fields->elements && rc == 0; i += 2) {
            const redisReply *f = fields->element[i];
            if (f->type != REDIS_REPLY_STRING) continue;
            const char *key = f->str;
            if (seen.n && bsearch(&key, seen.v, seen.n, sizeof(*seen.v), capture_cmp_str)) continue;
            rc = capture_batch_add(&batch, f->str, f->len);
        }
        if (rc == 0) rc = capture_append_batch(cap, mode, t, &batch, ts, &queued);
        freeReplyObject(r);
    }
    for (; queued > 0 && rc == 0; queued--) rc = capture_check_reply(cap, noscript);
    capture_ids_free(&seen);
    capture_batch_free(&batch);
    if (rc || *noscript) return rc;

    /* Seen once and for all: later passes report whatever they find. */
    if (baseline) rc = ttb_store_command(cap->store, &r, "SET %s %s", t->marker_key, ts);
    else rc = ttb_store_command(cap->store, &r, "SET %s %s NX", t->marker_key, ts);
    if (rc == 0) freeReplyObject(r);
    return rc;
}

static int capture_reconcile(ttb_capture_t *cap) {
    for (size_t i = 0; i < cap->ntowns; i++) {
        bool noscript = false;
        int rc = capture_reconcile_town(cap, &cap->towns[i], &noscript);
        if (rc == 0 && noscript) {
            /* Someone flushed the scripts (or Redis restarted): reload, redo. */
            if ((rc = capture_load_script(cap))) return rc;
            noscript = false;
            rc = capture_reconcile_town(cap, &cap->towns[i], &noscript);
        }
        if (rc) return rc;
    }
    cap->next_reconcile_ms = ttb_clock_ms() + cap->reconcile_ms;
    return 0;
}

/* ---- notifications ------------------------------------------------------- */

/* Adds the keyspace flags capture needs (K: keyspace channel, g: del/expire/
 * rename, h: hash writes, x: expiry); without them (a managed Redis that
 * refuses CONFIG) it relies on its periodic scan, and says so once. */
static void capture_enable_notifications(ttb_capture_t *cap) {
    char why[256];
    int rc = ttb_store_require_notifications(cap->store, "Kghx", NULL, why, sizeof(why));
    if (rc == TTB_ERR_PROTO && !cap->notify_warned) {
        ttb_log_warn("keyspace notifications unavailable; state capture relies on its periodic "
                     "scan", "error", why);
        cap->notify_warned = true;
    }
}

/* The subscriber connection: one pattern per town. */
static redisContext *capture_subscribe(ttb_capture_t *cap, char *err, size_t err_size) {
    const char **patterns = malloc(sizeof(*patterns) * (cap->ntowns ? cap->ntowns : 1));
    if (!patterns) {
        snprintf(err, err_size, "out of memory");
        return NULL;
    }
    for (size_t i = 0; i < cap->ntowns; i++) patterns[i] = cap->towns[i].pattern;
    redisContext *c =
        ttb_store_subscribe(cap->store, patterns, cap->ntowns, cap->ntowns, NULL, err, err_size);
    free(patterns);
    return c;
}

static bool capture_connect(ttb_capture_t *cap) {
    char err[1024] = "";
    int rc = ttb_store_connect(cap->store, err, sizeof(err)); /* loads the script too */
    if (rc == 0) {
        capture_enable_notifications(cap);
        if (!ttb_store_connected(cap->store)) rc = TTB_ERR_IO;
    }
    /* Subscribe before scanning: a change made between the two is then
     * either in the scan or in a notification. */
    if (rc == 0 && !(cap->sub = capture_subscribe(cap, err, sizeof(err)))) rc = TTB_ERR_IO;
    if (rc == 0 && (rc = capture_reconcile(cap)) != 0)
        snprintf(err, sizeof(err), "%s", ttb_store_errstr(cap->store));
    if (rc == 0) {
        if (cap->redis_down_logged) ttb_log_info("state capture reconnected to redis");
        cap->redis_down_logged = false;
        ttb_backoff_reset(&cap->backoff); /* connecting includes a reconcile: real work */
        return true;
    }
    if (!cap->redis_down_logged)
        ttb_log_warn("state capture cannot reach redis; retrying", "error",
                     err[0] ? err : ttb_store_errstr(cap->store));
    cap->redis_down_logged = true;
    capture_disconnect(cap);
    ttb_backoff_fail(&cap->backoff);
    return false;
}

static int capture_item_cmp(const void *a, const void *b) {
    const capture_item_t *x = a, *y = b;
    if (x->town != y->town) return x->town < y->town ? -1 : 1;
    return strcmp(x->id, y->id);
}

/* Queues the agent a notification names (once per batch). */
static void capture_note(ttb_capture_t *cap, const redisReply *r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[0]->type != REDIS_REPLY_STRING || strcmp(r->element[0]->str, "pmessage") != 0 ||
        r->element[2]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *ch = r->element[2];
    for (size_t i = 0; i < cap->ntowns; i++) {
        const capture_town_t *t = &cap->towns[i];
        if (ch->len <= t->channel_prefix_len ||
            memcmp(ch->str, t->channel_prefix, t->channel_prefix_len) != 0)
            continue;
        if (cap->nitems == cap->items_cap) {
            size_t n = cap->items_cap ? cap->items_cap * 2 : 64;
            capture_item_t *v = realloc(cap->items, n * sizeof(*v));
            if (!v) return; /* the next reconcile catches it */
            cap->items = v;
            cap->items_cap = n;
        }
        char *id = strdup(ch->str + t->channel_prefix_len);
        if (!id) return;
        cap->items[cap->nitems].town = i;
        cap->items[cap->nitems].id = id;
        cap->nitems++;
        return;
    }
}

static void capture_items_clear(ttb_capture_t *cap) {
    for (size_t i = 0; i < cap->nitems; i++) free(cap->items[i].id);
    cap->nitems = 0;
}

/* Runs the script for every noted agent, duplicates folded: one call per
 * town, all in one pipeline. */
static int capture_flush_items(ttb_capture_t *cap) {
    if (cap->nitems == 0) return 0;
    qsort(cap->items, cap->nitems, sizeof(*cap->items), capture_item_cmp);
    char ts[TTB_TIME_BUFSZ];
    capture_time(ts);
    capture_batch_t batch = {0};
    size_t queued = 0;
    int rc = 0;
    for (size_t i = 0; i < cap->nitems && rc == 0; i++) {
        const capture_item_t *it = &cap->items[i];
        if (i == 0 || capture_item_cmp(it, &cap->items[i - 1]) != 0)
            rc = capture_batch_add(&batch, it->id, strlen(it->id));
        if (rc == 0 && (i + 1 == cap->nitems || cap->items[i + 1].town != it->town))
            rc = capture_append_batch(cap, "check", &cap->towns[it->town], &batch, ts, &queued);
    }
    bool noscript = false;
    for (; queued > 0 && rc == 0; queued--) rc = capture_check_reply(cap, &noscript);
    if (rc == 0 && noscript) {
        /* Reload and let a reconcile cover the batch. */
        rc = capture_load_script(cap);
        if (rc == 0) cap->next_reconcile_ms = 0;
    }
    capture_batch_free(&batch);
    capture_items_clear(cap);
    return rc;
}

/* Handles whatever the subscriber has buffered. @returns 0 or TTB_ERR_IO. */
static int capture_drain(ttb_capture_t *cap) {
    for (;;) {
        void *reply = NULL;
        if (redisGetReplyFromReader(cap->sub, &reply) != REDIS_OK) return TTB_ERR_IO;
        if (!reply) return 0;
        capture_note(cap, reply);
        freeReplyObject(reply);
        if (cap->nitems >= CAPTURE_BATCH) {
            int rc = capture_flush_items(cap);
            if (rc) return rc;
        }
    }
}

static void *capture_main(void *arg) {
    ttb_capture_t *cap = arg;
    while (!atomic_load(&cap->stop)) {
        if (!cap->sub || !ttb_store_connected(cap->store)) {
            if (!capture_connect(cap)) capture_sleep(cap, ttb_backoff_left_ms(&cap->backoff));
            continue;
        }
        int64_t wait = cap->next_reconcile_ms - ttb_clock_ms();
        if (wait > CAPTURE_TICK_MS) wait = CAPTURE_TICK_MS;
        if (wait < 0) wait = 0;
        struct pollfd pfd = {.fd = cap->sub->fd, .events = POLLIN};
        int n = poll(&pfd, 1, (int)wait);
        if (n < 0 && errno != EINTR) {
            capture_redis_lost(cap, strerror(errno));
            continue;
        }
        if (n > 0) {
            if (redisBufferRead(cap->sub) != REDIS_OK) {
                capture_redis_lost(cap, cap->sub->err ? cap->sub->errstr : "subscriber closed");
                capture_items_clear(cap);
                continue;
            }
            /* Everything that arrived together goes out as one pipeline. */
            if (capture_drain(cap) || capture_flush_items(cap)) {
                capture_items_clear(cap);
                capture_redis_lost(cap, ttb_store_errstr(cap->store));
                continue;
            }
        }
        if (ttb_clock_ms() >= cap->next_reconcile_ms && capture_reconcile(cap)) {
            capture_redis_lost(cap, ttb_store_errstr(cap->store));
            continue;
        }
    }
    capture_items_clear(cap);
    capture_disconnect(cap);
    return NULL;
}

/* ---- public -------------------------------------------------------------- */

ttb_capture_t *ttb_capture_new(const ttb_config_t *config, char *errstr, size_t errstr_size) {
    if (!config || config->ntowns == 0) {
        snprintf(errstr, errstr_size, "state capture: at least one town is required");
        return NULL;
    }
    ttb_capture_t *cap = calloc(1, sizeof(*cap));
    if (!cap) goto nomem;
    cap->config = config;
    atomic_init(&cap->stop, false);
    cap->scan_count = config->scan_count ? config->scan_count : CAPTURE_DEFAULT_SCAN_COUNT;
    cap->reconcile_ms = config->reconcile_interval_ms > 0 ? config->reconcile_interval_ms : 5000;
    ttb_backoff_init(&cap->backoff, CAPTURE_BACKOFF_MIN_MS,
                     config->redis_backoff_max_ms > 0 ? config->redis_backoff_max_ms : 5000);
    cap->ntowns = config->ntowns;
    cap->towns = calloc(config->ntowns, sizeof(*cap->towns));
    cap->store = ttb_store_new(&config->redis);
    if (!cap->towns || !cap->store) goto nomem;
    ttb_store_use_scripts(cap->store, TTB_SCRIPT_BIT(TTB_SCRIPT_CAPTURE));
    for (size_t i = 0; i < config->ntowns; i++) {
        capture_town_t *t = &cap->towns[i];
        t->name = config->towns[i];
        t->key_prefix_len = ttb_key_agent_pattern(t->key_pattern, t->name) - 1;
        int n = snprintf(t->channel_prefix, sizeof(t->channel_prefix), "__keyspace@%d__:%.*s",
                         config->redis.db, (int)t->key_prefix_len, t->key_pattern);
        if (n < 0 || (size_t)n >= sizeof(t->channel_prefix)) {
            snprintf(errstr, errstr_size, "state capture: town name too long: %s", t->name);
            ttb_capture_free(cap);
            return NULL;
        }
        t->channel_prefix_len = (size_t)n;
        snprintf(t->pattern, sizeof(t->pattern), "%s*", t->channel_prefix);
        ttb_key_observed(t->observed_key, t->name);
        ttb_key_observed_baseline(t->marker_key, t->name);
    }
    return cap;
nomem:
    snprintf(errstr, errstr_size, "state capture: out of memory");
    ttb_capture_free(cap);
    return NULL;
}

int ttb_capture_start(ttb_capture_t *cap) {
    if (cap->running) return 0;
    atomic_store(&cap->stop, false);
    if (pthread_create(&cap->thread, NULL, capture_main, cap) != 0) return TTB_ERR_NOMEM;
    cap->running = true;
    return 0;
}

void ttb_capture_request_stop(ttb_capture_t *cap) {
    if (cap) atomic_store(&cap->stop, true);
}

void ttb_capture_stop(ttb_capture_t *cap) {
    if (!cap || !cap->running) return;
    atomic_store(&cap->stop, true);
    pthread_join(cap->thread, NULL);
    cap->running = false;
}

void ttb_capture_free(ttb_capture_t *cap) {
    if (!cap) return;
    ttb_capture_stop(cap);
    capture_items_clear(cap);
    free(cap->items);
    capture_disconnect(cap);
    ttb_store_free(cap->store);
    free(cap->towns);
    free(cap);
}
