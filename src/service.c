/* SPDX-License-Identifier: MIT */
/*
 * The agent service: tinytown's agent operations, applied to a batch of
 * commands with as few Redis round trips as their order allows.
 *
 * A batch is worked through in rounds. A round first makes current what its
 * commands need of each town they touch: the town's directory (directory.h;
 * the agents notified or changed since are read again, or the whole town
 * with SCAN and pipelined HGETALLs when it is new or stale), and for
 * get_result the town's tasks. It then resolves every agent reference and
 * chooses every listing page in C, and sends all the round's scripts and
 * reads as one pipeline; each command (a step) reads back the replies of
 * what it queued, and only those. Reads queued after a script see what it
 * wrote, so a listing after a kill lists what the kill left. Only a prune
 * ends a round, for the commands after it that need the town: it removes
 * agents the round's directory still holds. Spawns do not: the new agent is
 * added to the directory at once, so a later command in the batch can
 * already refer to it by name. How each op is applied is its row of ops.def.
 *
 * Result records are pure functions of stored data: mutations render from
 * the payload their script stored with the idempotency record, reads store
 * their rendered bytes. A repeated command id therefore always gets the same
 * bytes back, however it was first applied.
 */
#include "tinytown_bridge/service.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/agent.h"
#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/directory.h"
#include "tinytown_bridge/log.h"
#include "tinytown_bridge/task.h"

/* How each op is applied, and what its result holds: its row of ops.def. */
typedef enum how {
    HOW_SPAWN,      /* the spawn script */
    HOW_TRANSITION, /* the transition script, on the agent its reference names */
    HOW_BULK,       /* the bulk script, over one page of the town */
    HOW_LISTING,    /* one page of the town read, rendered by the bridge */
    HOW_WAIT,       /* the agent read until it ends or the deadline passes */
    HOW_GET_RESULT  /* the agent and its latest completed task read */
} how_t;

/* Which agents a listing or bulk page takes. */
typedef enum takes {
    TAKES_ALL,
    TAKES_OPEN, /* not stopped, error or cold */
    TAKES_ENDED /* stopped or error (prune; `all` takes every agent) */
} takes_t;

typedef struct op_info {
    how_t how;
    const char *member; /* the result member its agents (or task) come in */
    takes_t takes;
} op_info_t;

static const op_info_t ops[TTB_OP__COUNT] = {
#define TTB_OP_ROW(id, name, mutating, args, how, member, takes) [TTB_OP_##id] = {how, member, takes},
#include "tinytown_bridge/ops.def"
#undef TTB_OP_ROW
};

#define DEFAULT_TTL_S (7 * 24 * 3600)
#define DEFAULT_SCAN_COUNT 1000

/* A completed task with an assignee: what get_result picks among. */
typedef struct done_task {
    char agent[TTB_UUID_BUFSZ];
    char task[TTB_UUID_BUFSZ];
    bool has_completed_at;
    ttb_time_t completed_at;
} done_task_t;

/* What the service keeps of a town between batches: its directory
 * (directory.h), and for get_result each agent's latest completed task,
 * sorted by agent, valid until a task of the town is notified. */
typedef struct town_dir {
    char *town;
    ttb_directory_t *dir;
    done_task_t *results; /* each agent's latest */
    size_t nresults;
    bool results_valid;
    int64_t results_ms; /* when they were read */
} town_dir_t;

struct ttb_service {
    ttb_store_t *store;
    char *redis_url;
    int64_t ttl_s;
    unsigned scan_count;
    int64_t reconcile_ms; /* a directory older than this is read again whole */
    bool live;            /* keyspace notifications of agents reach the directories */
    bool tasks_live;      /* and those of tasks the latest results */
    town_dir_t **dirs; /* each allocated alone: rounds hold pointers to them */
    size_t ndirs;
};

ttb_service_t *ttb_service_new(ttb_store_t *store, const ttb_service_config_t *config) {
    ttb_service_t *svc = calloc(1, sizeof(*svc));
    if (!svc) return NULL;
    svc->store = store;
    svc->redis_url = strdup(config->redis_url_redacted ? config->redis_url_redacted : "");
    svc->ttl_s = config->idempotency_ttl_s > 0 ? config->idempotency_ttl_s : DEFAULT_TTL_S;
    svc->scan_count = config->scan_count ? config->scan_count : DEFAULT_SCAN_COUNT;
    svc->reconcile_ms = config->directory_reconcile_ms;
    if (!svc->redis_url) {
        free(svc);
        return NULL;
    }
    return svc;
}

void ttb_service_free(ttb_service_t *svc) {
    if (!svc) return;
    for (size_t i = 0; i < svc->ndirs; i++) {
        free(svc->dirs[i]->town);
        ttb_dir_free(svc->dirs[i]->dir);
        free(svc->dirs[i]->results);
        free(svc->dirs[i]);
    }
    free(svc->dirs);
    free(svc->redis_url);
    free(svc);
}

/* What is kept of @p town, made empty (invalid) the first time; NULL on NOMEM. */
static town_dir_t *town_of(ttb_service_t *svc, const char *town, size_t len) {
    for (size_t i = 0; i < svc->ndirs; i++)
        if (strlen(svc->dirs[i]->town) == len && memcmp(svc->dirs[i]->town, town, len) == 0)
            return svc->dirs[i];
    town_dir_t **grown = realloc(svc->dirs, (svc->ndirs + 1) * sizeof(*grown));
    if (!grown) return NULL;
    svc->dirs = grown;
    town_dir_t *d = calloc(1, sizeof(*d));
    char *name = strndup(town, len);
    ttb_directory_t *dir = ttb_dir_new();
    if (!d || !name || !dir) {
        free(d);
        free(name);
        ttb_dir_free(dir);
        return NULL;
    }
    d->town = name;
    d->dir = dir;
    svc->dirs[svc->ndirs++] = d;
    return d;
}

/* The directory of @p town; NULL on NOMEM. */
static ttb_directory_t *town_dir(ttb_service_t *svc, const char *town, size_t len) {
    town_dir_t *d = town_of(svc, town, len);
    return d ? d->dir : NULL;
}

void ttb_service_forget_directories(ttb_service_t *svc) {
    for (size_t i = 0; i < svc->ndirs; i++) {
        ttb_dir_clear(svc->dirs[i]->dir);
        svc->dirs[i]->results_valid = false;
    }
}

void ttb_service_set_live(ttb_service_t *svc, bool agents, bool tasks) {
    if (agents == svc->live && tasks == svc->tasks_live) return;
    svc->live = agents;
    svc->tasks_live = tasks;
    ttb_service_forget_directories(svc); /* what changed while nobody listened */
}

void ttb_service_agent_touched(ttb_service_t *svc, const char *town, const char *id,
                               size_t id_len) {
    ttb_directory_t *dir = town_dir(svc, town, strlen(town));
    if (dir) ttb_dir_touch(dir, id, id_len);
}

void ttb_service_task_touched(ttb_service_t *svc, const char *town) {
    town_dir_t *d = town_of(svc, town, strlen(town));
    if (d) d->results_valid = false;
}

void ttb_outcome_clear(ttb_outcome_t *out) {
    if (!out) return;
    free(out->record);
    memset(out, 0, sizeof(*out));
}

/* ------------------------------------------------------------------------ */
/* Reading hashes                                                           */

/* Views a flat HGETALL reply as the string arrays the model's decoders take. */
typedef struct flat {
    const char **strs;
    size_t *lens;
    size_t n;
} flat_t;

static int flat_from_reply(const redisReply *reply, flat_t *f) {
    f->n = reply->type == REDIS_REPLY_ARRAY ? reply->elements : 0;
    f->strs = malloc(sizeof(*f->strs) * (f->n ? f->n : 1));
    f->lens = malloc(sizeof(*f->lens) * (f->n ? f->n : 1));
    if (!f->strs || !f->lens) {
        free(f->strs);
        free(f->lens);
        return TTB_ERR_NOMEM;
    }
    for (size_t i = 0; i < f->n; i++) {
        const redisReply *e = reply->element[i];
        f->strs[i] = e->type == REDIS_REPLY_STRING ? e->str : "";
        f->lens[i] = e->type == REDIS_REPLY_STRING ? e->len : 0;
    }
    return 0;
}

static void flat_free(flat_t *f) {
    free(f->strs);
    free(f->lens);
}

/* Decodes an agent from an HGETALL reply. @returns 0, TTB_ERR_NOTFOUND for an
 * empty or id-less hash (tinytown skips those), or TTB_ERR_NOMEM. */
static int agent_from_reply(const redisReply *reply, ttb_agent_t *agent, ttb_time_t now) {
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) return TTB_ERR_NOTFOUND;
    flat_t f;
    int rc = flat_from_reply(reply, &f);
    if (rc) return rc;
    rc = ttb_agent_from_hash(agent, (const char *const *)f.strs, f.lens, f.n, now);
    flat_free(&f);
    return rc == TTB_ERR_INVALID ? TTB_ERR_NOTFOUND : rc;
}

/* ------------------------------------------------------------------------ */
/* A town as a round sees it                                                 */

typedef struct town_view {
    const char *town;
    bool want_dir;           /* its directory: references, name checks, listings */
    bool want_tasks;         /* each agent's latest completed task, for get_result */
    bool membership_changed; /* a prune ran earlier in this round */
    ttb_directory_t *dir;    /* the town's directory, made current for the round */
    bool dir_fresh;          /* the directory was read whole for this round */
    bool recheck;            /* it could not resolve a reference: read the town again */
    size_t failed_spawns;    /* spawns of the round that turned out not to happen */
    town_dir_t *kept;        /* what is kept of the town: its results, for get_result */
    done_task_t *found;      /* completed tasks found by a SCAN, while it runs */
    size_t nfound, capfound;
} town_view_t;

static void view_clear(town_view_t *v) {
    free(v->found);
    memset(v, 0, sizeof(*v));
}

static int grow(void **items, size_t *cap, size_t need, size_t size) {
    if (need <= *cap) return 0;
    size_t ncap = *cap ? *cap * 2 : 16;
    while (ncap < need) ncap *= 2;
    void *p = realloc(*items, ncap * size);
    if (!p) return TTB_ERR_NOMEM;
    *items = p;
    *cap = ncap;
    return 0;
}

static long long reply_integer(const redisReply *r) {
    if (r->type == REDIS_REPLY_INTEGER) return r->integer;
    return 0;
}

/* Takes the HGETALL reply @p h of @p key, found by SCAN. */
typedef int (*take_fn)(town_view_t *, const redisReply *key, const redisReply *h, ttb_time_t);

/* Reads the HGETALL replies queued for the string keys of a SCAN page,
 * handing each to @p take; after the first failure the rest are only drained. */
static int read_page(ttb_store_t *store, town_view_t *v, const redisReply *keys, ttb_time_t now,
                     take_fn take) {
    int first_err = 0;
    for (size_t k = 0; k < keys->elements; k++) {
        if (keys->element[k]->type != REDIS_REPLY_STRING) continue;
        redisReply *h;
        int rc = ttb_store_reply(store, &h);
        if (rc) return rc;
        if (!first_err) first_err = take(v, keys->element[k], h, now);
        freeReplyObject(h);
    }
    return first_err;
}

/* Walks a key pattern with SCAN, handing the HGETALL of each key to @p take.
 * Each page's reads are queued behind the next SCAN, so a town of N keys
 * costs about N / COUNT round trips. */
static int scan_pages(ttb_service_t *svc, town_view_t *v, const char *pattern, take_fn take,
                      ttb_time_t now) {
    char cursor[TTB_CURSOR_BUFSZ] = "0";
    redisReply *queued = NULL; /* the SCAN page whose reads are queued ahead of the next SCAN */
    const redisReply *keys = NULL;
    for (;;) {
        int rc = ttb_store_appendf(svc->store, "SCAN %s MATCH %s COUNT %u", cursor, pattern,
                                   svc->scan_count);
        if (!rc && queued && (rc = read_page(svc->store, v, keys, now, take)) && rc != TTB_ERR_IO)
            ttb_store_skip(svc->store, 1); /* the SCAN's reply: keep the pipeline in step */
        if (queued) freeReplyObject(queued);
        queued = NULL;
        if (rc) return rc;
        redisReply *scan;
        if ((rc = ttb_store_reply(svc->store, &scan))) return rc;
        if (ttb_reply_scan_page(scan, cursor, &keys)) {
            freeReplyObject(scan);
            return TTB_ERR_PROTO;
        }
        for (size_t i = 0; i < keys->elements && !rc; i++) {
            const redisReply *k = keys->element[i];
            if (k->type == REDIS_REPLY_STRING)
                rc = ttb_store_appendf(svc->store, "HGETALL %b", k->str, k->len);
        }
        if (rc) {
            freeReplyObject(scan);
            return rc;
        }
        queued = scan;
        if (strcmp(cursor, "0") == 0) break;
    }
    int rc = read_page(svc->store, v, keys, now, take);
    freeReplyObject(queued);
    return rc;
}

/* By agent, then get_result's order, latest first (tinytown's max_by_key
 * over completed_at: a task without one ranks lowest; the id breaks ties). */
static int cmp_done_task(const void *x, const void *y) {
    const done_task_t *a = x, *b = y;
    int c = strcmp(a->agent, b->agent);
    if (!c) c = (int)b->has_completed_at - (int)a->has_completed_at;
    if (!c && a->has_completed_at) c = ttb_time_cmp(b->completed_at, a->completed_at);
    return c ? c : strcmp(b->task, a->task);
}

/* Decodes a task from an HGETALL reply. @returns 0, TTB_ERR_NOTFOUND for an
 * empty hash or one tinytown could not read, or TTB_ERR_NOMEM. */
static int task_from_reply(const redisReply *reply, ttb_task_t *task, ttb_time_t now) {
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements == 0) return TTB_ERR_NOTFOUND;
    flat_t f;
    int rc = flat_from_reply(reply, &f);
    if (rc) return rc;
    rc = ttb_task_from_hash(task, (const char *const *)f.strs, f.lens, f.n, now);
    flat_free(&f);
    return rc == TTB_ERR_NOMEM || !rc ? rc : TTB_ERR_NOTFOUND;
}

/* Keeps only what get_result can pick: completed tasks with an assignee. */
static int take_task(town_view_t *v, const redisReply *key, const redisReply *h, ttb_time_t now) {
    (void)key;
    ttb_task_t task;
    int rc = task_from_reply(h, &task, now);
    if (rc) return rc == TTB_ERR_NOMEM ? rc : 0;
    if (task.state == TTB_TASK_COMPLETED && task.assigned_to[0]) {
        rc = grow((void **)&v->found, &v->capfound, v->nfound + 1, sizeof(*v->found));
        if (!rc) {
            done_task_t *d = &v->found[v->nfound++];
            memcpy(d->agent, task.assigned_to, TTB_UUID_BUFSZ);
            memcpy(d->task, task.id, TTB_UUID_BUFSZ);
            d->has_completed_at = task.has_completed_at;
            d->completed_at = task.completed_at;
        }
    }
    ttb_task_clear(&task);
    return rc;
}

/* Reads the town's tasks with SCAN and keeps each agent's latest completed
 * one; unless notifications keep them current, and they are. */
static int results_sync(ttb_service_t *svc, town_view_t *v, ttb_time_t now) {
    town_dir_t *d = town_of(svc, v->town, strlen(v->town));
    if (!d) return TTB_ERR_NOMEM;
    v->kept = d;
    int64_t now_ms = ttb_clock_ms();
    if (svc->tasks_live && d->results_valid &&
        (svc->reconcile_ms <= 0 || now_ms - d->results_ms < svc->reconcile_ms))
        return 0;
    d->results_valid = false;
    char pattern[TTB_KEY_BUFSZ];
    ttb_key_task_pattern(pattern, v->town);
    v->nfound = 0;
    int rc = scan_pages(svc, v, pattern, take_task, now);
    if (rc) return rc;
    if (v->nfound > 1) qsort(v->found, v->nfound, sizeof(*v->found), cmp_done_task);
    size_t n = 0; /* each agent's first, its latest, kept in place */
    for (size_t i = 0; i < v->nfound; i++)
        if (!n || strcmp(v->found[n - 1].agent, v->found[i].agent) != 0) v->found[n++] = v->found[i];
    free(d->results);
    d->results = v->found; /* the town keeps them; the view reads them from there */
    d->nresults = n;
    v->found = NULL;
    v->nfound = v->capfound = 0;
    d->results_valid = true;
    d->results_ms = now_ms;
    return 0;
}

static int cmp_result_agent(const void *key, const void *elem) {
    return strcmp(key, ((const done_task_t *)elem)->agent);
}

/* The latest completed task of agent @p id, or NULL when it has none. */
static const char *result_of(const town_dir_t *d, const char *id) {
    if (!d->nresults) return NULL;
    const done_task_t *r = bsearch(id, d->results, d->nresults, sizeof(*d->results),
                                   cmp_result_agent);
    return r ? r->task : NULL;
}

/* ---- the directory ------------------------------------------------------ */

/* A field of an HGETALL reply, as stored ("" when absent). */
static const char *raw_field(const redisReply *h, const char *name) {
    for (size_t i = 0; i + 1 < h->elements; i += 2) {
        const redisReply *f = h->element[i], *v = h->element[i + 1];
        if (f->type == REDIS_REPLY_STRING && strcmp(f->str, name) == 0 &&
            v->type == REDIS_REPLY_STRING)
            return v->str;
    }
    return "";
}

static ttb_dir_seen_t seen_of(const redisReply *h) {
    ttb_dir_seen_t seen = {raw_field(h, "name"), raw_field(h, "nickname"),
                           raw_field(h, "role_id"), NULL};
    return seen;
}

/* The fields the directory keeps, in the order dir_refresh asks for them. */
static const char *const DIR_FIELDS[] = {"id", "name", "nickname", "role_id", "state",
                                         "created_at"};
#define NDIR_FIELDS (sizeof(DIR_FIELDS) / sizeof(DIR_FIELDS[0]))

/* An HMGET of DIR_FIELDS as the HGETALL reply of those fields (absent ones
 * left out), so one decoder reads both. */
static redisReply *hmget_as_hash(const redisReply *m, redisReply *out, redisReply *elems[],
                                 redisReply names[]) {
    memset(out, 0, sizeof(*out));
    out->type = REDIS_REPLY_ARRAY;
    out->element = elems;
    for (size_t k = 0; m->type == REDIS_REPLY_ARRAY && k < m->elements && k < NDIR_FIELDS; k++) {
        if (m->element[k]->type != REDIS_REPLY_STRING) continue;
        memset(&names[k], 0, sizeof(names[k]));
        names[k].type = REDIS_REPLY_STRING;
        names[k].str = (char *)(uintptr_t)DIR_FIELDS[k];
        names[k].len = strlen(DIR_FIELDS[k]);
        elems[out->elements++] = &names[k];
        elems[out->elements++] = m->element[k];
    }
    return out;
}

/* Puts the agent of an HGETALL reply for @p id (NULL: whatever id it has,
 * read from the key whose id part is @p key_tail) into the directory, or
 * removes @p id when there is no agent there. */
static int dir_take(ttb_directory_t *dir, const redisReply *h, const char *id,
                    const char *key_tail, ttb_time_t now) {
    ttb_agent_t agent;
    int rc = agent_from_reply(h, &agent, now);
    size_t idx;
    if (rc == TTB_ERR_NOTFOUND && id && ttb_dir_index(dir, id, &idx) &&
        ttb_dir_seen(dir, idx).key) {
        ttb_dir_clear(dir); /* read by id, it was never there: only a SCAN finds its key */
        return 0;
    }
    if (rc == TTB_ERR_NOTFOUND) {
        if (id) ttb_dir_remove(dir, id);
        return 0;
    }
    if (rc) return rc;
    if (id && strcmp(agent.id, id) != 0) {
        /* The hash names another agent: only a SCAN sees it as listings do. */
        ttb_agent_clear(&agent);
        ttb_dir_clear(dir);
        return 0;
    }
    ttb_dir_seen_t seen = seen_of(h);
    seen.key = key_tail;
    return ttb_dir_put(dir, &agent, &seen);
}

static int take_dir_agent(town_view_t *v, const redisReply *key, const redisReply *h,
                          ttb_time_t now) {
    char pattern[TTB_KEY_BUFSZ];
    size_t prefix = ttb_key_agent_pattern(pattern, v->town) - 1; /* up to the "*" */
    return dir_take(v->dir, h, NULL, key->len > prefix ? key->str + prefix : "", now);
}

/* Reads again, in one round trip, the identity of the agents notified since
 * the last use (what the directory keeps, not the whole hash). */
static int dir_refresh(ttb_service_t *svc, ttb_directory_t *dir, const char *town, ttb_time_t now) {
    const char *const *ids;
    size_t n = ttb_dir_dirty(dir, &ids);
    for (size_t i = 0; i < n; i++) {
        char akey[TTB_KEY_BUFSZ];
        ttb_key_agent(akey, town, ids[i]);
        int rc = ttb_store_appendf(svc->store, "HMGET %s %s %s %s %s %s %s", akey, DIR_FIELDS[0],
                                   DIR_FIELDS[1], DIR_FIELDS[2], DIR_FIELDS[3], DIR_FIELDS[4],
                                   DIR_FIELDS[5]);
        if (rc) return rc;
    }
    int first_err = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *m, as_hash, *elems[2 * NDIR_FIELDS], names[NDIR_FIELDS];
        int rc = ttb_store_reply(svc->store, &m);
        if (rc) return rc;
        if (!first_err && ttb_dir_valid(dir))
            first_err = dir_take(dir, hmget_as_hash(m, &as_hash, elems, names), ids[i], NULL, now);
        freeReplyObject(m);
    }
    if (!first_err) ttb_dir_clear_dirty(dir);
    return first_err;
}

/* Makes the town's directory current and the view's: the notified agents
 * read again, or the whole town when the directory is new, stale by age, or
 * not kept (no notifications: then every round reads the town). */
static int dir_sync(ttb_service_t *svc, town_view_t *v, ttb_time_t now) {
    ttb_directory_t *dir = town_dir(svc, v->town, strlen(v->town));
    if (!dir) return TTB_ERR_NOMEM;
    int64_t now_ms = ttb_clock_ms();
    if (!svc->live || (svc->reconcile_ms > 0 && ttb_dir_age_ms(dir, now_ms) >= svc->reconcile_ms))
        ttb_dir_clear(dir);
    int rc = ttb_dir_valid(dir) ? dir_refresh(svc, dir, v->town, now) : 0;
    if (!rc && !ttb_dir_valid(dir)) {
        char pattern[TTB_KEY_BUFSZ];
        ttb_key_agent_pattern(pattern, v->town);
        ttb_dir_clear(dir);
        v->dir = dir;
        rc = scan_pages(svc, v, pattern, take_dir_agent, now);
        if (!rc) ttb_dir_set_valid(dir, now_ms);
        v->dir_fresh = true;
    }
    if (rc) ttb_dir_clear(dir);
    v->dir = rc ? NULL : dir;
    return rc;
}

static int gather(ttb_service_t *svc, town_view_t *v) {
    ttb_time_t now = ttb_time_now();
    int rc = v->want_dir ? dir_sync(svc, v, now) : 0;
    if (!rc && v->want_tasks) rc = results_sync(svc, v, now);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Rendering result records                                                  */

static int render(const ttb_command_t *cmd, const char *op, ttb_code_t code, const char *message,
                  json_t *result, ttb_time_t at, ttb_outcome_t *out) {
    ttb_result_t r = {.id = cmd->id,
                      .town = cmd->town,
                      .op = op,
                      .code = code,
                      .message = message,
                      .result = result,
                      .applied_at = at};
    out->code = code;
    out->record = ttb_result_encode(&r, &out->record_len);
    return out->record ? 0 : TTB_ERR_NOMEM;
}

static int render_error(const ttb_command_t *cmd, ttb_code_t code, const char *message,
                        ttb_outcome_t *out) {
    return render(cmd, ttb_op_name(cmd->op), code, message, NULL, ttb_time_now(), out);
}

/* A netstring: "<len>:<bytes>,". */
static int ns_next(const char **p, const char *end, const char **s, size_t *len) {
    size_t n = 0;
    const char *q = *p;
    if (q >= end || *q < '0' || *q > '9') return TTB_ERR_PROTO;
    while (q < end && *q >= '0' && *q <= '9') {
        if (n > (size_t)(end - q)) return TTB_ERR_PROTO;
        n = n * 10 + (size_t)(*q++ - '0');
    }
    if (q >= end || *q++ != ':' || (size_t)(end - q) < n + 1 || q[n] != ',') return TTB_ERR_PROTO;
    *s = q;
    *len = n;
    *p = q + n + 1;
    return 0;
}

static int ns_next_size(const char **p, const char *end, size_t *value) {
    const char *s;
    size_t len;
    int rc = ns_next(p, end, &s, &len);
    if (rc) return rc;
    char buf[24];
    if (len == 0 || len >= sizeof(buf)) return TTB_ERR_PROTO;
    memcpy(buf, s, len);
    buf[len] = '\0';
    char *e;
    unsigned long long v = strtoull(buf, &e, 10);
    if (*e) return TTB_ERR_PROTO;
    *value = (size_t)v;
    return 0;
}

/* Renders a mutation's stored payload (see common.lua) into its result record. */
static int render_payload(const ttb_command_t *cmd, const char *p, size_t plen,
                          ttb_outcome_t *out) {
    const char *end = p + plen, *op, *code, *msg, *at, *ver, *more = NULL, *next = NULL;
    size_t oplen, codelen, msglen, atlen, verlen, nagents, morelen = 0, nextlen = 0;
    if (plen < 1 || *p++ != 'P') return TTB_ERR_PROTO;
    /* Version 2 adds a listing page's "more" and "next" (stop_all, prune). */
    if (ns_next(&p, end, &ver, &verlen) || verlen != 1 || (*ver != '1' && *ver != '2') ||
        ns_next(&p, end, &op, &oplen) || ns_next(&p, end, &code, &codelen) ||
        ns_next(&p, end, &msg, &msglen) || ns_next(&p, end, &at, &atlen) ||
        (*ver == '2' && (ns_next(&p, end, &more, &morelen) || ns_next(&p, end, &next, &nextlen))) ||
        ns_next_size(&p, end, &nagents))
        return TTB_ERR_PROTO;

    char opbuf[32], codebuf[32];
    if (oplen >= sizeof(opbuf) || codelen >= sizeof(codebuf)) return TTB_ERR_PROTO;
    memcpy(opbuf, op, oplen);
    opbuf[oplen] = '\0';
    memcpy(codebuf, code, codelen);
    codebuf[codelen] = '\0';
    ttb_code_t c;
    ttb_time_t applied;
    if (ttb_code_from_name(codebuf, &c) || ttb_time_parse(at, atlen, &applied))
        return TTB_ERR_PROTO;

    int rc = 0;
    if (c != TTB_CODE_OK) {
        char *m = strndup(msg, msglen);
        if (!m) return TTB_ERR_NOMEM;
        rc = render(cmd, opbuf, c, m, NULL, applied, out);
        free(m);
        return rc;
    }

    ttb_op_t opid;
    if (ttb_op_parse(opbuf, &opid)) return TTB_ERR_PROTO;
    const char *member = ops[opid].member;
    bool many = ops[opid].how == HOW_BULK; /* a page of agents, not one */
    json_t *list = json_array();
    if (!list) return TTB_ERR_NOMEM;
    for (size_t i = 0; i < nagents && !rc; i++) {
        size_t nfields;
        if ((rc = ns_next_size(&p, end, &nfields)) || nfields > (size_t)(end - p)) {
            rc = TTB_ERR_PROTO;
            break;
        }
        const char **strs = malloc(sizeof(*strs) * (nfields ? nfields : 1));
        size_t *lens = malloc(sizeof(*lens) * (nfields ? nfields : 1));
        if (!strs || !lens) rc = TTB_ERR_NOMEM;
        for (size_t f = 0; f < nfields && !rc; f++) rc = ns_next(&p, end, &strs[f], &lens[f]);
        ttb_agent_t agent;
        if (!rc) rc = ttb_agent_from_hash(&agent, strs, lens, nfields, applied);
        free(strs);
        free(lens);
        if (!rc) {
            json_t *a = ttb_agent_to_json(&agent);
            ttb_agent_clear(&agent);
            if (!a || json_array_append_new(list, a)) rc = TTB_ERR_NOMEM;
        }
    }
    json_t *result = NULL;
    if (!rc) {
        json_t *value = many ? json_incref(list) : json_incref(json_array_get(list, 0));
        result = json_object();
        if (!result || !value || json_object_set_new(result, member, value)) rc = TTB_ERR_NOMEM;
        if (!rc && more &&
            (json_object_set_new(result, "more", json_boolean(morelen == 1 && *more == '1')) ||
             json_object_set_new(result, "next",
                                 nextlen ? json_stringn(next, nextlen) : json_null())))
            rc = TTB_ERR_NOMEM;
        if (!rc && !many && json_array_size(list) != 1) rc = TTB_ERR_PROTO;
    }
    if (!rc) rc = render(cmd, opbuf, c, NULL, result, applied, out);
    json_decref(result);
    json_decref(list);
    return rc;
}

/* An idempotency record: "P" + payload from a script, or "R" + the record
 * bytes; or "E" + why the town's records cannot be kept (see idem.lua). */
static int outcome_from_stored(const ttb_command_t *cmd, const char *s, size_t len,
                               ttb_outcome_t *out) {
    if (len >= 1 && s[0] == 'E') {
        char msg[256];
        snprintf(msg, sizeof(msg), "cannot keep this command's record: %.*s",
                 (int)(len - 1 < 200 ? len - 1 : 200), s + 1);
        return render_error(cmd, TTB_CODE_INTERNAL, msg, out);
    }
    if (len >= 1 && s[0] == 'R') {
        out->record = malloc(len);
        if (!out->record) return TTB_ERR_NOMEM;
        memcpy(out->record, s + 1, len - 1);
        out->record[len - 1] = '\0';
        out->record_len = len - 1;
        /* The code is in the record; read it back for the caller's headers. */
        json_t *doc = json_loadb(out->record, out->record_len, 0, NULL);
        json_t *ok = json_object_get(doc, "ok");
        const char *code = json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
        out->code = TTB_CODE_OK;
        if (!json_is_true(ok) && (!code || ttb_code_from_name(code, &out->code)))
            out->code = TTB_CODE_INTERNAL;
        json_decref(doc);
        return 0;
    }
    int rc = render_payload(cmd, s, len, out);
    if (rc == 0 || rc == TTB_ERR_NOMEM) return rc;
    /* Data no reader of tinytown's could make sense of (an agent hash that
     * lost its id, say) is this command's problem alone: it gets an error
     * result, the batch goes on. */
    ttb_outcome_clear(out);
    ttb_log_error("stored outcome unreadable", "id", cmd->id, "op", ttb_op_name(cmd->op),
                  "error", ttb_err_str(rc));
    return render_error(cmd, TTB_CODE_INTERNAL,
                        "the outcome stored for this command cannot be read back from Redis", out);
}

/* ------------------------------------------------------------------------ */
/* Rounds                                                                    */

enum {
    NEED_DIR = 1,  /* the town's directory: references, name checks, listings */
    NEED_TASKS = 2 /* completed tasks */
};

/* What the directory said of the agent a reference resolved to; the script
 * (or, for reads, the bridge) checks the agent still has it. */
typedef struct expect {
    bool on;
    char *name, *nickname, *role_id;
} expect_t;

static void expect_clear(expect_t *e) {
    free(e->name);
    free(e->nickname);
    free(e->role_id);
    memset(e, 0, sizeof(*e));
}

static int expect_set(expect_t *e, ttb_dir_seen_t seen) {
    expect_clear(e);
    e->name = strdup(seen.name);
    e->nickname = strdup(seen.nickname);
    e->role_id = strdup(seen.role_id);
    e->on = e->name && e->nickname && e->role_id;
    return e->on ? 0 : TTB_ERR_NOMEM;
}

/* Whether the agent of an HGETALL reply still has what was expected of it. */
static bool expect_holds(const expect_t *e, const redisReply *h) {
    if (!e->on) return true;
    if (h->type != REDIS_REPLY_ARRAY || h->elements == 0) return false;
    ttb_dir_seen_t now = seen_of(h);
    return strcmp(now.name, e->name) == 0 && strcmp(now.nickname, e->nickname) == 0 &&
           strcmp(now.role_id, e->role_id) == 0;
}

typedef struct listing listing_t;

/* One command of a round: what it queued and how to read the replies. */
typedef struct step {
    size_t owed;         /* replies of what it queued, not read yet */
    town_view_t *view;
    listing_t *listing;  /* a listing: its page, then what was read of it */
    char agent_id[TTB_UUID_BUFSZ];
    char task_id[TTB_UUID_BUFSZ]; /* get_result: the task it reads, or "" */
    bool grouped;        /* a transition, applied in the call of its group */
    size_t group_head;   /* that group's head step */
    size_t group_n;      /* the head: changes in its group's call */
    expect_t expect;     /* resolved in the directory: to be checked */
    int64_t deadline_ms; /* wait: ours, if the SET wins */
    bool store_record;   /* a read's record still has to be stored */
} step_t;

/* The next reply of the commands step @p st queued: queue_round counted
 * them, so a step reads its own replies and never another's. */
static int step_reply(ttb_service_t *svc, step_t *st, redisReply **r) {
    *r = NULL;
    if (!st->owed) return TTB_ERR_PROTO; /* more than it queued: a bug, not Redis */
    st->owed--;
    return ttb_store_reply(svc->store, r);
}

static bool ref_is_uuid(const char *ref, char out[TTB_UUID_BUFSZ]) {
    return ref && ttb_agent_ref_as_uuid(ref, out);
}

static int needs_of(const ttb_command_t *cmd) {
    char id[TTB_UUID_BUFSZ];
    int by_name = ref_is_uuid(cmd->agent, id) ? 0 : NEED_DIR;
    switch (ops[cmd->op].how) {
    case HOW_SPAWN:
    case HOW_BULK:
    case HOW_LISTING: return NEED_DIR;
    case HOW_GET_RESULT: return NEED_TASKS | by_name;
    case HOW_TRANSITION:
    case HOW_WAIT: return by_name;
    }
    return 0;
}

typedef struct round {
    town_view_t *views;
    size_t nviews;
} round_t;

static town_view_t *round_view(round_t *r, const char *town) {
    for (size_t i = 0; i < r->nviews; i++)
        if (strcmp(r->views[i].town, town) == 0) return &r->views[i];
    return NULL;
}

/* Resolves cmd->agent (or @p ref) to an id, or writes the error outcome.
 * Resolved in the directory, @p expect (when not NULL) gets what the agent
 * must still be. A reference the directory cannot resolve (no agent, or
 * several) is answered only from a directory read afresh: with @p recheck,
 * the view is marked for that and 2 returned.
 * @returns 1 when resolved, 0 when @p out got an error record, 2 (see
 * above), <0 on failure. */
static int resolve(const ttb_command_t *cmd, const char *ref, town_view_t *v, bool recheck,
                   char id[TTB_UUID_BUFSZ], expect_t *expect, ttb_outcome_t *out) {
    if (expect) expect_clear(expect);
    if (ref_is_uuid(ref, id)) return 1;
    if (!v->dir) return TTB_ERR_INVALID; /* a reference by name always has its directory */
    char err[512];
    size_t idx = 0;
    ttb_code_t code = ttb_dir_resolve(v->dir, ref, &idx, err, sizeof(err));
    if (code != TTB_CODE_OK && recheck && !v->dir_fresh &&
        (code == TTB_CODE_AGENT_NOT_FOUND || code == TTB_CODE_AMBIGUOUS_AGENT)) {
        v->recheck = true;
        return 2;
    }
    if (code != TTB_CODE_OK) {
        int rc = render_error(cmd, code, err, out);
        return rc ? rc : 0;
    }
    memcpy(id, ttb_dir_id(v->dir, idx), TTB_UUID_BUFSZ);
    int rc = expect ? expect_set(expect, ttb_dir_seen(v->dir, idx)) : 0;
    return rc ? rc : 1;
}

typedef struct argv_buf {
    const char **argv;
    size_t *lens;
    size_t n, cap;
} argv_buf_t;

static int argv_push(argv_buf_t *a, const char *s, size_t len) {
    if (a->n == a->cap) {
        size_t ncap = a->cap ? a->cap * 2 : 32;
        const char **na = realloc(a->argv, ncap * sizeof(*na));
        if (!na) return TTB_ERR_NOMEM;
        a->argv = na;
        size_t *nl = realloc(a->lens, ncap * sizeof(*nl));
        if (!nl) return TTB_ERR_NOMEM;
        a->lens = nl;
        a->cap = ncap;
    }
    a->argv[a->n] = s;
    a->lens[a->n++] = len;
    return 0;
}

static int argv_str(argv_buf_t *a, const char *s) { return argv_push(a, s, strlen(s)); }

static void argv_free(argv_buf_t *a) {
    free(a->argv);
    free(a->lens);
    memset(a, 0, sizeof(*a));
}

/* The idempotency spec every script takes: "now expire_at", in seconds (see
 * common.lua). The retention only says when a record written now may go;
 * lookups do not depend on it. */
#define SPEC_BUFSZ 64

static void idem_spec(const ttb_service_t *svc, ttb_time_t now, char spec[SPEC_BUFSZ]) {
    snprintf(spec, SPEC_BUFSZ, "%lld %lld", (long long)now.sec,
             (long long)(now.sec + svc->ttl_s));
}

/* The expectations a script checks before it acts: "1", name, nickname,
 * role_id, or "0" when the agent was named by its id (then followed by
 * three empty strings when @p four: a fixed stride, as transition.lua reads
 * its changes). */
static int push_expect(argv_buf_t *a, const expect_t *e, bool four) {
    bool on = e && e->on;
    int rc = argv_str(a, on ? "1" : "0");
    if (!rc && (on || four)) rc = argv_str(a, on ? e->name : "");
    if (!rc && (on || four)) rc = argv_str(a, on ? e->nickname : "");
    if (!rc && (on || four)) rc = argv_str(a, on ? e->role_id : "");
    return rc;
}

/* Strings every script takes first: town, command id, idempotency spec. */
typedef struct script_head {
    char spec[SPEC_BUFSZ];
    char ts_hash[TTB_TIME_BUFSZ];
    char ts_json[TTB_TIME_BUFSZ];
} script_head_t;

static int push_head(ttb_service_t *svc, const ttb_command_t *cmd, argv_buf_t *a,
                     script_head_t *h, ttb_time_t now) {
    idem_spec(svc, now, h->spec);
    ttb_time_format_hash(now, h->ts_hash);
    ttb_time_format_json(now, h->ts_json);
    int rc = argv_str(a, cmd->town);
    if (!rc) rc = argv_str(a, cmd->id);
    if (!rc) rc = argv_str(a, h->spec);
    return rc;
}

/* The agent a spawn is writing, as the directory will read it back. */
static int spawned_to_dir(ttb_directory_t *dir, const ttb_agent_t *a, const ttb_command_t *cmd) {
    ttb_agent_t copy = *a;
    copy.name = strdup(cmd->name);
    copy.cli = strdup(a->cli);
    copy.nickname = strdup(a->nickname);
    copy.role_id = cmd->role_id ? strdup(cmd->role_id) : NULL;
    if (!copy.name || !copy.cli || !copy.nickname || (cmd->role_id && !copy.role_id)) {
        ttb_agent_clear(&copy);
        return TTB_ERR_NOMEM;
    }
    return ttb_dir_put(dir, &copy, NULL);
}

static int append_spawn(ttb_service_t *svc, const ttb_command_t *cmd, town_view_t *v,
                        const char *parent_id, const expect_t *parent_expect, step_t *st,
                        ttb_time_t now) {
    ttb_agent_t a;
    memset(&a, 0, sizeof(a));
    int rc = ttb_uuid_v4(a.id);
    if (rc) return rc;
    memcpy(st->agent_id, a.id, TTB_UUID_BUFSZ);
    a.name = cmd->name;
    static char default_cli[] = "claude"; /* tinytown's default; the parser normally sets one */
    a.cli = cmd->cli ? cmd->cli : default_cli;
    a.role_id = cmd->role_id;
    a.nickname = cmd->nickname;
    if (!a.nickname) a.nickname = (char *)(uintptr_t)ttb_nickname_from_id(a.id);
    if (parent_id) memcpy(a.parent_agent_id, parent_id, TTB_UUID_BUFSZ);
    a.spawn_mode = cmd->has_spawn_mode ? cmd->spawn_mode : TTB_SPAWN_FRESH;
    a.agent_type = TTB_AGENT_WORKER;
    a.state = TTB_STATE_STARTING;
    a.created_at = a.last_heartbeat = a.last_active_at = now;

    argv_buf_t av = {0};
    script_head_t head;
    ttb_agent_hash_t hash;
    char ncand[24];
    size_t cand = ttb_dir_name_holders(v->dir, cmd->name, NULL, 0);
    const char **cands = malloc(sizeof(*cands) * (cand ? cand : 1));
    if (!cands) return TTB_ERR_NOMEM;
    ttb_dir_name_holders(v->dir, cmd->name, cands, cand);
    snprintf(ncand, sizeof(ncand), "%zu", cand);
    ttb_agent_to_hash(&a, &hash);

    rc = push_head(svc, cmd, &av, &head, now);
    if (!rc) rc = argv_str(&av, head.ts_json);
    if (!rc) rc = argv_str(&av, a.id);
    if (!rc) rc = argv_str(&av, parent_id ? parent_id : "");
    if (!rc) rc = argv_str(&av, cmd->name);
    if (!rc) rc = argv_str(&av, ttb_spawn_mode_name(a.spawn_mode));
    if (!rc) rc = push_expect(&av, parent_expect, false);
    if (!rc) rc = argv_str(&av, ncand);
    for (size_t i = 0; i < cand && !rc; i++) rc = argv_str(&av, cands[i]);
    for (size_t i = 0; i < hash.nset && !rc; i++) {
        rc = argv_str(&av, hash.field[i]);
        if (!rc) rc = argv_push(&av, hash.value[i], hash.value_len[i]);
    }
    if (!rc)
        rc = ttb_store_append_script(svc->store, TTB_SCRIPT_SPAWN, 0, (int)av.n, av.argv, av.lens);
    argv_free(&av);
    free(cands);
    if (rc) return rc;

    /* Later commands may already name the new agent (and if the spawn fails,
     * script_done takes it out of the directory again). */
    return spawned_to_dir(v->dir, &a, cmd);
}

/* Consecutive transitions of one town in a round go to Redis as one call of
 * transition.lua (at most this many): what every change checks of the town
 * is checked once, and the script is entered once. */
#define GROUP_MAX 32

typedef struct group {
    size_t head;      /* the step that reads the call's reply */
    const char *town;
    size_t n;         /* changes in it; 0: none pending */
    argv_buf_t av;
    char spec[SPEC_BUFSZ];
    char ts_hash[TTB_TIME_BUFSZ];
    char ts_json[TTB_TIME_BUFSZ];
} group_t;

/* Adds transition step @p i (its agent resolved) to the pending group,
 * starting one if there is none. */
static int group_add(ttb_service_t *svc, group_t *g, size_t i, const ttb_command_t *cmd,
                     step_t *st, ttb_time_t now) {
    int rc = 0;
    if (!g->n) {
        g->head = i;
        g->town = cmd->town;
        idem_spec(svc, now, g->spec);
        ttb_time_format_hash(now, g->ts_hash);
        ttb_time_format_json(now, g->ts_json);
        g->av.n = 0;
        rc = argv_str(&g->av, cmd->town);
        if (!rc) rc = argv_str(&g->av, g->spec);
        if (!rc) rc = argv_str(&g->av, g->ts_hash);
        if (!rc) rc = argv_str(&g->av, g->ts_json);
    }
    if (!rc) rc = argv_str(&g->av, cmd->id);
    if (!rc) rc = argv_str(&g->av, ttb_op_name(cmd->op));
    if (!rc) rc = argv_str(&g->av, st->agent_id);
    if (!rc) rc = push_expect(&g->av, &st->expect, true);
    if (rc) return rc;
    st->group_head = g->head;
    st->grouped = true;
    g->n++;
    return 0;
}

/* Queues the pending group's call; its reply is its head step's. */
static int group_flush(ttb_service_t *svc, group_t *g, step_t *steps) {
    if (!g->n) return 0;
    size_t owed = ttb_store_owed(svc->store);
    int rc = ttb_store_append_script(svc->store, TTB_SCRIPT_TRANSITION, 0, (int)g->av.n,
                                     g->av.argv, g->av.lens);
    steps[g->head].owed += ttb_store_owed(svc->store) - owed;
    steps[g->head].group_n = g->n;
    g->n = 0;
    return rc;
}

/* ---- listing pages ------------------------------------------------------ */

/* Whether a listing or bulk command takes an agent of the town. */
static bool listing_takes(const ttb_command_t *cmd, const ttb_agent_t *a) {
    switch (ops[cmd->op].takes) {
    case TAKES_OPEN: return !ttb_agent_state_is_terminal(a->state);
    case TAKES_ENDED:
        return cmd->all || a->state == TTB_STATE_STOPPED || a->state == TTB_STATE_ERROR;
    case TAKES_ALL: break;
    }
    return true;
}

/* One page of a listing, chosen in the directory in listing order (oldest
 * first): the agents after the command's cursor that it takes, at most
 * `limit` of them. An agent whose state the directory does not know yet
 * (the bridge just changed it) is on the page whatever its state: whoever
 * reads the page judges it by what it is then. */
typedef struct page {
    char (*ids)[TTB_UUID_BUFSZ];
    char **keys; /* the tail of an agent's key where it is not its id, or NULL */
    size_t n;
    bool more; /* an agent it would take follows the page */
    char next[TTB_TIME_BUFSZ + TTB_UUID_BUFSZ + 1]; /* "<created_at>/<id>" of the last, or "" */
} page_t;

static int page_of(const ttb_command_t *cmd, ttb_directory_t *dir, page_t *pg) {
    memset(pg, 0, sizeof(*pg));
    const uint32_t *order;
    int rc = ttb_dir_in_order(dir, &order);
    if (rc) return rc;
    size_t total = ttb_dir_count(dir);
    size_t pos = cmd->has_after ? ttb_dir_seek(dir, order, cmd->after_created, cmd->after_id) : 0;
    size_t cap = cmd->limit && cmd->limit < total - pos ? cmd->limit : total - pos;
    pg->ids = malloc(sizeof(*pg->ids) * (cap ? cap : 1));
    if (!pg->ids) return TTB_ERR_NOMEM;
    ttb_time_t last = {0, 0};
    for (; pos < total; pos++) {
        ttb_agent_t a = ttb_dir_agent(dir, order[pos]); /* a view: never cleared */
        if (!ttb_dir_unsure(dir, order[pos]) && !listing_takes(cmd, &a)) continue;
        if (pg->n == cap) {
            pg->more = true;
            break;
        }
        const char *key = ttb_dir_seen(dir, order[pos]).key;
        if (key && !pg->keys && !(pg->keys = calloc(cap, sizeof(*pg->keys)))) return TTB_ERR_NOMEM;
        if (key && !(pg->keys[pg->n] = strdup(key))) return TTB_ERR_NOMEM;
        memcpy(pg->ids[pg->n++], a.id, TTB_UUID_BUFSZ);
        last = a.created_at;
    }
    if (pg->n) {
        size_t k = ttb_time_format_json(last, pg->next);
        snprintf(pg->next + k, sizeof(pg->next) - k, "/%s", pg->ids[pg->n - 1]);
    }
    return 0;
}

static void page_clear(page_t *pg) {
    for (size_t k = 0; pg->keys && k < pg->n; k++) free(pg->keys[k]);
    free(pg->keys);
    free(pg->ids);
    memset(pg, 0, sizeof(*pg));
}

/* Adds "more" and "next" to a listing's result. */
static int page_members(json_t *result, const page_t *pg) {
    return json_object_set_new(result, "more", json_boolean(pg->more)) ||
                   json_object_set_new(result, "next",
                                       pg->next[0] ? json_string(pg->next) : json_null())
               ? TTB_ERR_NOMEM
               : 0;
}

static int append_bulk(ttb_service_t *svc, const ttb_command_t *cmd, const town_view_t *v,
                       ttb_time_t now) {
    argv_buf_t av = {0};
    script_head_t head;
    page_t pg;
    int rc = page_of(cmd, v->dir, &pg);
    if (!rc) rc = push_head(svc, cmd, &av, &head, now);
    if (!rc) rc = argv_str(&av, ttb_op_name(cmd->op));
    if (!rc) rc = argv_str(&av, cmd->all ? "1" : "0");
    if (!rc) rc = argv_str(&av, head.ts_json);
    if (!rc) rc = argv_str(&av, pg.more ? "1" : "0");
    if (!rc) rc = argv_str(&av, pg.next);
    for (size_t k = 0; k < pg.n && !rc; k++) {
        rc = argv_str(&av, pg.ids[k]);
        if (!rc && cmd->op == TTB_OP_STOP_ALL) rc = ttb_dir_mark_changing(v->dir, pg.ids[k]);
    }
    if (!rc)
        rc = ttb_store_append_script(svc->store, TTB_SCRIPT_BULK, 0, (int)av.n, av.argv, av.lens);
    argv_free(&av);
    page_clear(&pg);
    return rc;
}

/* list, list_open and status: the page chosen in the directory, then what
 * was read of each of its agents. */
typedef struct row {
    ttb_agent_t agent;
    long long inbox_len, urgent_len;
    char *scope; /* the description of its current task, or NULL */
} row_t;

struct listing {
    page_t page;
    size_t town_count; /* status: agents in the town when the page was chosen */
    row_t *rows;       /* the page's agents that are still there and taken */
    size_t nrows;
};

static void listing_free(listing_t *l) {
    if (!l) return;
    for (size_t i = 0; i < l->nrows; i++) {
        ttb_agent_clear(&l->rows[i].agent);
        free(l->rows[i].scope);
    }
    free(l->rows);
    page_clear(&l->page);
    free(l);
}

/* Queues the reads of a listing's page: the agent, its inbox and urgent
 * lengths. They follow the round's earlier scripts in the pipeline, so they
 * see what those wrote. */
static int queue_listing(ttb_service_t *svc, const ttb_command_t *cmd, town_view_t *v,
                         step_t *st) {
    listing_t *l = calloc(1, sizeof(*l));
    if (!l) return TTB_ERR_NOMEM;
    st->listing = l;
    int rc = page_of(cmd, v->dir, &l->page);
    l->town_count = ttb_dir_count(v->dir);
    if (!rc) {
        l->rows = calloc(l->page.n ? l->page.n : 1, sizeof(*l->rows));
        if (!l->rows) rc = TTB_ERR_NOMEM;
    }
    for (size_t k = 0; k < l->page.n && !rc; k++) {
        char key[TTB_KEY_BUFSZ];
        const char *tail = l->page.keys && l->page.keys[k] ? l->page.keys[k] : l->page.ids[k];
        ttb_key_agent(key, cmd->town, tail);
        rc = ttb_store_appendf(svc->store, "HGETALL %s", key);
        ttb_key_inbox(key, cmd->town, l->page.ids[k]);
        if (!rc) rc = ttb_store_appendf(svc->store, "LLEN %s", key);
        ttb_key_urgent(key, cmd->town, l->page.ids[k]);
        if (!rc) rc = ttb_store_appendf(svc->store, "LLEN %s", key);
    }
    return rc;
}

/* Reads the replies queued by queue_listing. An agent gone since the page
 * was chosen, or no longer one the listing takes, is left out. */
static int collect_listing(ttb_service_t *svc, const ttb_command_t *cmd, step_t *st) {
    listing_t *l = st->listing;
    ttb_time_t now = ttb_time_now();
    int first_err = 0;
    /* Spawns earlier in the round that did not happen are not in the town. */
    l->town_count -= st->view->failed_spawns < l->town_count ? st->view->failed_spawns
                                                             : l->town_count;
    for (size_t k = 0; k < l->page.n; k++) {
        redisReply *r[3] = {NULL, NULL, NULL};
        int rc = 0;
        for (int j = 0; j < 3 && !rc; j++) rc = step_reply(svc, st, &r[j]);
        row_t *row = &l->rows[l->nrows];
        if (!rc && !first_err) {
            int took = agent_from_reply(r[0], &row->agent, now);
            if (took == TTB_ERR_NOMEM) first_err = took;
            if (!took && strcmp(row->agent.id, l->page.ids[k]) == 0 &&
                listing_takes(cmd, &row->agent)) {
                row->inbox_len = reply_integer(r[1]);
                row->urgent_len = reply_integer(r[2]);
                l->nrows++;
            } else if (!took) {
                ttb_agent_clear(&row->agent);
            }
        }
        for (int j = 0; j < 3; j++)
            if (r[j]) freeReplyObject(r[j]);
        if (rc) return rc;
    }
    return first_err;
}

/* current_scope: the description of each listed agent's current task, for
 * every listing of the round in one round trip. */
static int read_scopes(ttb_service_t *svc, const ttb_command_t *cmds, size_t start, size_t end,
                       step_t *steps) {
    size_t asked = 0;
    for (size_t i = start; i < end; i++) {
        listing_t *l = steps[i].listing;
        for (size_t k = 0; l && k < l->nrows; k++) {
            if (!l->rows[k].agent.current_task[0]) continue;
            char tkey[TTB_KEY_BUFSZ];
            ttb_key_task(tkey, cmds[i].town, l->rows[k].agent.current_task);
            int rc = ttb_store_appendf(svc->store, "HGET %s description", tkey);
            if (rc) return rc;
            asked++;
        }
    }
    int first_err = 0;
    for (size_t i = start; i < end && asked; i++) {
        listing_t *l = steps[i].listing;
        for (size_t k = 0; l && k < l->nrows; k++) {
            row_t *row = &l->rows[k];
            if (!row->agent.current_task[0]) continue;
            redisReply *r;
            int rc = ttb_store_reply(svc->store, &r);
            if (rc) return rc;
            if (r->type == REDIS_REPLY_STRING && !first_err) {
                row->scope = strndup(r->str, r->len);
                if (!row->scope) first_err = TTB_ERR_NOMEM;
            }
            freeReplyObject(r);
        }
    }
    return first_err;
}

/* list, list_open and status, rendered from what was read of the page. */
static int render_listing(ttb_service_t *svc, const ttb_command_t *cmd, const listing_t *l,
                          ttb_outcome_t *out) {
    json_t *agents = json_array();
    int rc = agents ? 0 : TTB_ERR_NOMEM;
    for (size_t k = 0; k < l->nrows && !rc; k++) {
        const row_t *row = &l->rows[k];
        json_t *info =
            ttb_agent_info_to_json(&row->agent, row->inbox_len, row->urgent_len, row->scope);
        if (!info || json_array_append_new(agents, info)) rc = TTB_ERR_NOMEM;
    }
    json_t *result = rc ? NULL : json_object();
    if (!rc && !result) rc = TTB_ERR_NOMEM;
    if (!rc && cmd->op == TTB_OP_STATUS) {
        if (json_object_set_new(result, "town", json_string(cmd->town)) ||
            json_object_set_new(result, "redis_url", json_string(svc->redis_url)) ||
            json_object_set_new(result, "agent_count", json_integer((json_int_t)l->town_count)))
            rc = TTB_ERR_NOMEM;
    }
    if (!rc && json_object_set(result, ops[cmd->op].member, agents)) rc = TTB_ERR_NOMEM;
    if (!rc) rc = page_members(result, &l->page);
    if (!rc) rc = render(cmd, ttb_op_name(cmd->op), TTB_CODE_OK, NULL, result, ttb_time_now(), out);
    json_decref(result);
    json_decref(agents);
    return rc;
}

/* The round's listings, once every reply of the round is in: their scopes
 * read, their records rendered (stored with the round's other records). */
static int finish_listings(ttb_service_t *svc, const ttb_command_t *cmds, size_t start,
                           size_t end, ttb_outcome_t *out, step_t *steps) {
    int rc = read_scopes(svc, cmds, start, end, steps);
    for (size_t i = start; i < end && !rc; i++) {
        if (!steps[i].listing) continue;
        rc = render_listing(svc, &cmds[i], steps[i].listing, &out[i]);
        steps[i].store_record = !rc;
    }
    return rc;
}

/* get_result: @p task (NULL: the agent has no completed task). */
static int render_get_result(const ttb_command_t *cmd, const ttb_task_t *task,
                             ttb_outcome_t *out) {
    json_t *value = task ? ttb_task_to_json(task) : json_null();
    json_t *result = json_object();
    int rc = 0;
    if (!result) json_decref(value);
    if (!value || !result || json_object_set_new(result, ops[cmd->op].member, value))
        rc = TTB_ERR_NOMEM;
    if (!rc) rc = render(cmd, ttb_op_name(cmd->op), TTB_CODE_OK, NULL, result, ttb_time_now(), out);
    json_decref(result);
    return rc;
}

/* wait: finished when the agent is terminal or the deadline has passed. */
static int finish_wait(const ttb_command_t *cmd, const redisReply *agent_reply, int64_t deadline_ms,
                       int64_t now_ms, ttb_outcome_t *out) {
    ttb_agent_t agent;
    ttb_time_t now = ttb_time_from_ms(now_ms);
    int rc = agent_from_reply(agent_reply, &agent, now);
    if (rc == TTB_ERR_NOTFOUND) {
        char msg[TTB_CMD_REF_MAX + 64];
        snprintf(msg, sizeof(msg), "agent '%s' not found", cmd->agent);
        return render(cmd, ttb_op_name(cmd->op), TTB_CODE_AGENT_NOT_FOUND, msg, NULL, now, out);
    }
    if (rc) return rc;
    bool terminal = ttb_agent_state_is_terminal(agent.state);
    if (!terminal && now_ms < deadline_ms) {
        out->pending = true;
        out->deadline_ms = deadline_ms;
        memcpy(out->agent_id, agent.id, TTB_UUID_BUFSZ);
        ttb_agent_clear(&agent);
        return 0;
    }
    json_t *result = json_object();
    json_t *a = ttb_agent_to_json(&agent);
    ttb_agent_clear(&agent);
    if (!result || !a || json_object_set_new(result, ops[cmd->op].member, a) ||
        json_object_set_new(result, "timed_out", json_boolean(!terminal))) {
        if (!result) json_decref(a);
        json_decref(result);
        return TTB_ERR_NOMEM;
    }
    out->pending = false;
    rc = render(cmd, ttb_op_name(cmd->op), TTB_CODE_OK, NULL, result, ttb_time_now(), out);
    json_decref(result);
    return rc;
}

/* Runs the idem script over @p av (mode and spec first), reloading the
 * scripts once if they were flushed. *reply is an array, one per command,
 * or NULL whenever an error is returned: the caller frees what it gets. */
static int run_idem(ttb_service_t *svc, argv_buf_t *av, size_t expect, redisReply **reply) {
    for (int attempt = 0;; attempt++) {
        *reply = NULL;
        int rc = ttb_store_append_script(svc->store, TTB_SCRIPT_IDEM, 0, (int)av->n, av->argv,
                                         av->lens);
        if (!rc) rc = ttb_store_reply(svc->store, reply);
        if (rc) {
            *reply = NULL;
            return rc;
        }
        if (ttb_reply_is_noscript(*reply) && attempt == 0) {
            freeReplyObject(*reply);
            *reply = NULL;
            if ((rc = ttb_store_load_scripts(svc->store))) return rc;
            continue;
        }
        if ((*reply)->type != REDIS_REPLY_ARRAY || (*reply)->elements != expect) {
            ttb_log_error("idempotency script failed", "error",
                          (*reply)->type == REDIS_REPLY_ERROR ? (*reply)->str : "unexpected reply");
            freeReplyObject(*reply);
            *reply = NULL; /* the caller frees what it gets, and it gets nothing */
            return TTB_ERR_PROTO;
        }
        return 0;
    }
}

/* Stores read results as idempotency records ("R" + bytes), in one script
 * call. If another bridge stored one first, its record wins and replaces ours.
 * Finished waits also leave the town's waits hash. */
static int store_records(ttb_service_t *svc, const ttb_command_t *const *cmds,
                         ttb_outcome_t *const *outs, size_t n) {
    argv_buf_t av = {0};
    char spec[SPEC_BUFSZ];
    char **values = calloc(n ? n : 1, sizeof(*values));
    size_t count = 0, waits = 0;
    int rc = values ? 0 : TTB_ERR_NOMEM;
    idem_spec(svc, ttb_time_now(), spec);
    if (!rc) rc = argv_str(&av, "put");
    if (!rc) rc = argv_str(&av, spec);
    for (size_t i = 0; i < n && !rc; i++) {
        if (!outs[i] || !outs[i]->record) continue;
        values[i] = malloc(outs[i]->record_len + 1);
        if (!values[i]) {
            rc = TTB_ERR_NOMEM;
            break;
        }
        values[i][0] = 'R';
        memcpy(values[i] + 1, outs[i]->record, outs[i]->record_len);
        rc = argv_str(&av, cmds[i]->town);
        if (!rc) rc = argv_str(&av, cmds[i]->id);
        if (!rc) rc = argv_push(&av, values[i], outs[i]->record_len + 1);
        count++;
    }
    redisReply *r = NULL;
    if (!rc && count) rc = run_idem(svc, &av, count, &r);
    for (size_t i = 0, k = 0; i < n && !rc && r; i++) {
        if (!outs[i] || !outs[i]->record) continue;
        const redisReply *prev = r->element[k++];
        if (prev->type == REDIS_REPLY_STRING) {
            ttb_outcome_t earlier;
            memset(&earlier, 0, sizeof(earlier));
            rc = outcome_from_stored(cmds[i], prev->str, prev->len, &earlier);
            if (!rc) {
                ttb_outcome_clear(outs[i]);
                *outs[i] = earlier;
                outs[i]->replayed = true;
            }
        }
        if (!rc && cmds[i]->op == TTB_OP_WAIT) {
            char key[TTB_KEY_BUFSZ];
            ttb_key_waits(key, cmds[i]->town);
            rc = ttb_store_appendf(svc->store, "HDEL %s %s", key, cmds[i]->id);
            waits++;
        }
    }
    if (r) freeReplyObject(r);
    if (!rc && waits) rc = ttb_store_skip(svc->store, waits);
    for (size_t i = 0; i < n; i++) free(values ? values[i] : NULL);
    free(values);
    argv_free(&av);
    return rc;
}

/* Phase 0: every command whose id is already known in its town is answered
 * from its record, with one script call for the whole batch. */
static int replay_known(ttb_service_t *svc, const ttb_command_t *cmds, size_t n,
                        ttb_outcome_t *out) {
    argv_buf_t av = {0};
    char spec[SPEC_BUFSZ];
    idem_spec(svc, ttb_time_now(), spec);
    int rc = argv_str(&av, "get");
    if (!rc) rc = argv_str(&av, spec);
    for (size_t i = 0; i < n && !rc; i++) {
        rc = argv_str(&av, cmds[i].town);
        if (!rc) rc = argv_str(&av, cmds[i].id);
    }
    redisReply *r = NULL;
    if (!rc) rc = run_idem(svc, &av, n, &r);
    argv_free(&av);
    for (size_t i = 0; i < n && !rc; i++) {
        const redisReply *v = r->element[i];
        if (v->type != REDIS_REPLY_STRING) continue;
        rc = outcome_from_stored(&cmds[i], v->str, v->len, &out[i]);
        if (!rc) out[i].replayed = true;
    }
    if (r) freeReplyObject(r);
    return rc;
}

static bool done(const ttb_outcome_t *o) { return o->record != NULL || o->pending; }

/* Picks the commands of the round that starts at @p start: it ends before the
 * first command that needs a town's directory after a prune of that town
 * (which removes agents the round's directory still has). Listings do not
 * end rounds: their reads follow the round's earlier scripts in the
 * pipeline. @returns the index one past the round's end. */
static size_t plan_round(const ttb_command_t *cmds, size_t start, size_t n,
                         const ttb_outcome_t *out, round_t *r, town_view_t *views) {
    r->views = views;
    r->nviews = 0;
    size_t i;
    for (i = start; i < n; i++) {
        if (done(&out[i])) continue;
        const ttb_command_t *c = &cmds[i];
        int need = needs_of(c);
        town_view_t *v = round_view(r, c->town);
        if (v && (need & NEED_DIR) && v->membership_changed) break;
        if (!v) {
            v = &views[r->nviews++];
            memset(v, 0, sizeof(*v));
            v->town = c->town;
        }
        if (need & NEED_DIR) v->want_dir = true;
        if (need & NEED_TASKS) v->want_tasks = true;
        if (c->op == TTB_OP_PRUNE) v->membership_changed = true;
    }
    return i;
}

/* queue_round's work, with the round's pending group of transitions. */
static int queue_steps(ttb_service_t *svc, const ttb_command_t *cmds, size_t start, size_t end,
                       ttb_outcome_t *out, round_t *r, step_t *steps, uint8_t *stale,
                       bool *need_retry, group_t *g) {
    for (size_t i = start; i < end; i++) {
        step_t *st = &steps[i];
        memset(st, 0, sizeof(*st));
        if (done(&out[i])) continue;
        const ttb_command_t *c = &cmds[i];
        /* Anything else than one more change of the group's town goes after
         * the group: its reads must see the group's writes. */
        if (g->n && (ops[c->op].how != HOW_TRANSITION || strcmp(g->town, c->town) != 0 ||
                     g->n == GROUP_MAX)) {
            int rc = group_flush(svc, g, steps);
            if (rc) return rc;
        }
        town_view_t *v = round_view(r, c->town);
        st->view = v;
        ttb_time_t now = ttb_time_now();
        int rc = 0, ok = 1;
        /* Checked against the agent twice at most: a reference that went
         * stale again right after the directory was read afresh (or an agent
         * whose stored name cannot round-trip) is taken as resolved. */
        expect_t *expect = stale[i] < 2 ? &st->expect : NULL;
        bool recheck = stale[i] == 0;
        size_t owed = ttb_store_owed(svc->store);
        switch (ops[c->op].how) {
        case HOW_SPAWN: {
            char parent[TTB_UUID_BUFSZ] = "";
            if (c->parent) ok = resolve(c, c->parent, v, recheck, parent, expect, &out[i]);
            if (ok == 1)
                rc = append_spawn(svc, c, v, c->parent ? parent : NULL, &st->expect, st, now);
            break;
        }
        case HOW_TRANSITION:
            ok = resolve(c, c->agent, v, recheck, st->agent_id, expect, &out[i]);
            if (ok == 1) {
                rc = group_add(svc, g, i, c, st, now);
                /* Named by id, the round may not have read the directory. */
                ttb_directory_t *dir = v->dir ? v->dir : town_dir(svc, c->town, strlen(c->town));
                if (!rc && dir && ttb_dir_valid(dir)) rc = ttb_dir_mark_changing(dir, st->agent_id);
            }
            break;
        case HOW_BULK: rc = append_bulk(svc, c, v, now); break;
        case HOW_LISTING: rc = queue_listing(svc, c, v, st); break;
        case HOW_WAIT: {
            ok = resolve(c, c->agent, v, recheck, st->agent_id, expect, &out[i]);
            if (ok != 1) break;
            char wkey[TTB_KEY_BUFSZ], akey[TTB_KEY_BUFSZ];
            ttb_key_waits(wkey, c->town);
            ttb_key_agent(akey, c->town, st->agent_id);
            st->deadline_ms = ttb_time_to_ms(now) + c->timeout_ms;
            /* The first sight of a wait fixes its deadline, across restarts;
             * the field goes when the wait is answered. */
            rc = ttb_store_appendf(svc->store, "HSETNX %s %s %lld", wkey, c->id,
                                   (long long)st->deadline_ms);
            if (!rc) rc = ttb_store_appendf(svc->store, "HGET %s %s", wkey, c->id);
            if (!rc) rc = ttb_store_appendf(svc->store, "HGETALL %s", akey);
            break;
        }
        case HOW_GET_RESULT: {
            ok = resolve(c, c->agent, v, recheck, st->agent_id, expect, &out[i]);
            if (ok != 1) break;
            /* Confirm the agent exists now, in the same pipeline, whether the
             * reference was an id or a name found in the directory. */
            char key[TTB_KEY_BUFSZ];
            ttb_key_agent(key, c->town, st->agent_id);
            rc = ttb_store_appendf(svc->store, "HGETALL %s", key);
            const char *task = result_of(v->kept, st->agent_id);
            if (task && !rc) { /* and the task, to render it as it is now */
                memcpy(st->task_id, task, TTB_UUID_BUFSZ);
                ttb_key_task(key, c->town, task);
                rc = ttb_store_appendf(svc->store, "HGETALL %s", key);
            }
            break;
        }
        }
        st->owed = ttb_store_owed(svc->store) - owed;
        if (ok == 2) { /* undone: the next round answers it from a fresh read */
            stale[i]++;
            *need_retry = true;
            continue;
        }
        if (ok < 0) return ok;
        if (rc) return rc;
        /* A reference that did not resolve is an answer too: remembered like any. */
        if (ok == 0) st->store_record = true;
    }
    return 0;
}

/* Queues the commands of one round; fills steps[] and the outcomes known
 * without Redis (resolution errors). */
static int queue_round(ttb_service_t *svc, const ttb_command_t *cmds, size_t start, size_t end,
                       ttb_outcome_t *out, round_t *r, step_t *steps, uint8_t *stale,
                       bool *need_retry) {
    group_t g = {0};
    int rc = queue_steps(svc, cmds, start, end, out, r, steps, stale, need_retry, &g);
    if (!rc) rc = group_flush(svc, &g, steps);
    argv_free(&g.av);
    return rc;
}

/* The agent a reference resolved to was not what the directory said, so
 * the directory missed a change (notifications lost, or not yet arrived):
 * read the town again and leave the command undone, for the next round. */
static void went_stale(step_t *st, uint8_t *stale, bool *need_retry) {
    if (st->view->dir) ttb_dir_clear(st->view->dir);
    (*stale)++;
    *need_retry = true;
}

/* What a script's outcome means for the directory: a spawn that did not
 * happen takes its agent out again; a prune removed agents the directory
 * has not heard of yet. */
static void script_done(ttb_service_t *svc, const ttb_command_t *c, step_t *st,
                        const ttb_outcome_t *o) {
    ttb_directory_t *dir = town_dir(svc, c->town, strlen(c->town));
    if (c->op == TTB_OP_SPAWN && o->code != TTB_CODE_OK) {
        if (dir) ttb_dir_remove(dir, st->agent_id);
        st->view->failed_spawns++;
    }
    if (dir && c->op == TTB_OP_PRUNE) ttb_dir_clear(dir);
}

/* Flags a round's collection raises for the batch loop. */
typedef struct round_flags {
    bool rerun; /* scripts were flushed (NOSCRIPT): reload, run the undone again */
    bool retry; /* a reference went stale: run the undone again after a re-read */
} round_flags_t;

/* What one command's script answered (@p r: a whole reply, or a group's
 * element): its stored outcome, STALE, or a failure. */
static int script_outcome(ttb_service_t *svc, const ttb_command_t *c, step_t *st,
                          const redisReply *r, ttb_outcome_t *out, uint8_t *stale,
                          round_flags_t *f) {
    if (r->type == REDIS_REPLY_STATUS && strcmp(r->str, "STALE") == 0) {
        went_stale(st, stale, &f->retry); /* nothing was written */
        ttb_outcome_t none = {.code = TTB_CODE_INTERNAL};
        script_done(svc, c, st, &none);
        return 0;
    }
    if (r->type == REDIS_REPLY_STRING) {
        int rc = outcome_from_stored(c, r->str, r->len, out);
        if (!rc) script_done(svc, c, st, out);
        return rc;
    }
    ttb_log_error("script failed", "op", ttb_op_name(c->op), "error",
                  r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    return render_error(c, TTB_CODE_INTERNAL, "the script failed in Redis", out);
}

/* spawn, stop_all, prune, and a group of transitions (from its head step):
 * the script's reply. On NOSCRIPT every command of the call is left undone
 * (safe: the script did not run). */
static int collect_script(ttb_service_t *svc, const ttb_command_t *cmds, size_t i, size_t end,
                          ttb_outcome_t *out, step_t *steps, uint8_t *stale, round_flags_t *f) {
    step_t *st = &steps[i];
    redisReply *r;
    int rc = step_reply(svc, st, &r);
    if (rc) return rc;
    if (ttb_reply_is_noscript(r)) {
        f->rerun = true;
    } else if (!st->group_n) {
        rc = script_outcome(svc, &cmds[i], st, r, &out[i], &stale[i], f);
    } else {
        /* One reply per change, in the order of the group's steps. */
        bool whole = r->type == REDIS_REPLY_ARRAY && r->elements == st->group_n;
        size_t k = 0;
        for (size_t j = i; j < end && k < st->group_n; j++) {
            if (!steps[j].grouped || steps[j].group_head != i) continue;
            const redisReply *mine = whole ? r->element[k] : r; /* a failure is everyone's */
            int one = script_outcome(svc, &cmds[j], &steps[j], mine, &out[j], &stale[j], f);
            if (one && !rc) rc = one;
            k++;
        }
    }
    freeReplyObject(r);
    return rc;
}

/* wait: HSETNX of the deadline (its reply unused), the deadline that holds,
 * the agent. */
static int collect_wait(ttb_service_t *svc, const ttb_command_t *c, step_t *st,
                        ttb_outcome_t *out, uint8_t *stale, round_flags_t *f) {
    redisReply *r[3] = {NULL, NULL, NULL};
    int rc = 0;
    for (int j = 0; j < 3 && !rc; j++) rc = step_reply(svc, st, &r[j]);
    if (!rc) {
        int64_t deadline = st->deadline_ms;
        if (r[1]->type == REDIS_REPLY_STRING) deadline = strtoll(r[1]->str, NULL, 10);
        if (!expect_holds(&st->expect, r[2])) {
            went_stale(st, stale, &f->retry);
        } else {
            rc = finish_wait(c, r[2], deadline, ttb_time_to_ms(ttb_time_now()), out);
            st->store_record = !rc && !out->pending;
        }
    }
    for (int j = 0; j < 3; j++)
        if (r[j]) freeReplyObject(r[j]);
    return rc;
}

/* Decodes a get_result's read of its task into @p task, with *holds true
 * when it still is the agent's completed task it was taken for (else
 * nothing is kept). @returns 0 or TTB_ERR_NOMEM. */
static int task_read(const redisReply *h, const step_t *st, ttb_task_t *task, bool *holds) {
    *holds = false;
    int rc = task_from_reply(h, task, ttb_time_now());
    if (rc) return rc == TTB_ERR_NOMEM ? rc : 0;
    *holds = task->state == TTB_TASK_COMPLETED && strcmp(task->id, st->task_id) == 0 &&
             strcmp(task->assigned_to, st->agent_id) == 0;
    if (!*holds) ttb_task_clear(task);
    return 0;
}

/* get_result: the agent, read to confirm it exists, and the task the town's
 * results name for it. A task that is no longer what they said (changed by
 * a tool whose notification is not in yet) has the town's tasks read again
 * and the command done over, at most twice. */
static int collect_get_result(ttb_service_t *svc, const ttb_command_t *c, step_t *st,
                              ttb_outcome_t *out, uint8_t *stale, round_flags_t *f) {
    redisReply *r[2] = {NULL, NULL};
    int rc = step_reply(svc, st, &r[0]);
    if (!rc && st->task_id[0]) rc = step_reply(svc, st, &r[1]);
    ttb_task_t task;
    bool holds = !st->task_id[0];
    if (!rc && r[1]) rc = task_read(r[1], st, &task, &holds);
    if (rc) {
        /* nothing to render */
    } else if (!expect_holds(&st->expect, r[0])) {
        went_stale(st, stale, &f->retry);
    } else if (r[0]->type != REDIS_REPLY_ARRAY || r[0]->elements == 0) {
        char msg[TTB_CMD_REF_MAX + 64];
        snprintf(msg, sizeof(msg), "agent '%s' not found", c->agent);
        rc = render_error(c, TTB_CODE_AGENT_NOT_FOUND, msg, out);
        st->store_record = !rc;
    } else if (!holds && *stale < 2) {
        st->view->kept->results_valid = false;
        (*stale)++;
        f->retry = true;
    } else {
        rc = render_get_result(c, holds && st->task_id[0] ? &task : NULL, out);
        st->store_record = !rc;
    }
    if (holds && st->task_id[0]) ttb_task_clear(&task);
    for (int j = 0; j < 2; j++)
        if (r[j]) freeReplyObject(r[j]);
    return rc;
}

/* Reads the round's replies, each step its own, in the order queued. A
 * lost connection ends it at once (every reply is lost with it); any other
 * failure is returned once the rest of the round is read. */
static int collect_round(ttb_service_t *svc, const ttb_command_t *cmds, size_t start, size_t end,
                         ttb_outcome_t *out, step_t *steps, uint8_t *stale, round_flags_t *f) {
    int first_err = 0;
    for (size_t i = start; i < end; i++) {
        step_t *st = &steps[i];
        const ttb_command_t *c = &cmds[i];
        if (!st->owed) continue;
        int rc = 0;
        switch (ops[c->op].how) {
        case HOW_SPAWN:
        case HOW_TRANSITION:
        case HOW_BULK: rc = collect_script(svc, cmds, i, end, out, steps, stale, f); break;
        case HOW_LISTING: rc = collect_listing(svc, c, st); break;
        case HOW_WAIT: rc = collect_wait(svc, c, st, &out[i], &stale[i], f); break;
        case HOW_GET_RESULT: rc = collect_get_result(svc, c, st, &out[i], &stale[i], f); break;
        }
        if (rc == TTB_ERR_IO) return rc;
        if (rc && !first_err) first_err = rc;
        while (st->owed) { /* what a failed step did not read */
            redisReply *r;
            if ((rc = step_reply(svc, st, &r))) return rc;
            freeReplyObject(r);
        }
    }
    return first_err;
}

static int store_round_records(ttb_service_t *svc, const ttb_command_t *cmds, size_t start,
                               size_t end, ttb_outcome_t *out, const step_t *steps) {
    size_t n = end - start;
    const ttb_command_t **cs = malloc(sizeof(*cs) * (n ? n : 1));
    ttb_outcome_t **os = malloc(sizeof(*os) * (n ? n : 1));
    int rc = (!cs || !os) ? TTB_ERR_NOMEM : 0;
    for (size_t i = 0; i < n && !rc; i++) {
        cs[i] = &cmds[start + i];
        os[i] = steps[start + i].store_record ? &out[start + i] : NULL;
    }
    if (!rc) rc = store_records(svc, cs, os, n);
    free(cs);
    free(os);
    return rc;
}

int ttb_service_execute(ttb_service_t *svc, const ttb_command_t *cmds, size_t n,
                        ttb_outcome_t *out) {
    memset(out, 0, sizeof(*out) * n);
    if (n == 0) return 0;
    if (!ttb_store_connected(svc->store)) return TTB_ERR_IO;
    step_t *steps = calloc(n, sizeof(*steps));
    town_view_t *views = calloc(n, sizeof(*views));
    uint8_t *stale = calloc(n, 1); /* times each command found its agent changed */
    int rc = (!steps || !views || !stale) ? TTB_ERR_NOMEM : replay_known(svc, cmds, n, out);

    size_t start = 0;
    int reruns = 0;
    while (!rc && start < n) {
        round_t r;
        size_t end = plan_round(cmds, start, n, out, &r, views);
        for (size_t v = 0; v < r.nviews && !rc; v++) {
            /* plan_round's bookkeeping was about the commands, not the data */
            r.views[v].membership_changed = false;
            rc = gather(svc, &r.views[v]);
        }
        round_flags_t f = {false, false};
        if (!rc) rc = queue_round(svc, cmds, start, end, out, &r, steps, stale, &f.retry);
        if (!rc) rc = collect_round(svc, cmds, start, end, out, steps, stale, &f);
        if (!rc) rc = finish_listings(svc, cmds, start, end, out, steps);
        if (!rc) rc = store_round_records(svc, cmds, start, end, out, steps);
        for (size_t v = 0; v < r.nviews; v++) {
            if (r.views[v].recheck && r.views[v].dir) ttb_dir_clear(r.views[v].dir);
            view_clear(&r.views[v]);
        }
        for (size_t i = start; i < end; i++) {
            expect_clear(&steps[i].expect);
            listing_free(steps[i].listing);
            steps[i].listing = NULL;
        }
        if (!rc && f.retry && !f.rerun) continue; /* the same commands, after a re-read */
        if (!rc && f.rerun) {
            /* Scripts were flushed: reload them and run the round's undone
             * commands again. Bounded, in case the server keeps flushing. */
            if (++reruns > 3) rc = TTB_ERR_PROTO;
            else rc = ttb_store_load_scripts(svc->store);
            continue;
        }
        start = end;
    }
    free(steps);
    free(views);
    free(stale);
    if (rc) {
        for (size_t i = 0; i < n; i++) ttb_outcome_clear(&out[i]);
        if (rc == TTB_ERR_PROTO) ttb_store_disconnect(svc->store); /* the pipeline may be out of step */
    }
    return rc;
}

/* The bucket hashes of one town, found with SCAN (their names end in the
 * bucket number), each moved by one script call. */
static long adopt_town(ttb_service_t *svc, const char *town) {
    char pattern[TTB_KEY_BUFSZ], cursor[TTB_CURSOR_BUFSZ] = "0", spec[SPEC_BUFSZ];
    ttb_key_cmds_buckets(pattern, town);
    idem_spec(svc, ttb_time_now(), spec);
    size_t prefix = strlen(pattern) - 1;
    long moved = 0;
    do {
        redisReply *scan;
        const redisReply *keys;
        int rc = ttb_store_command(svc->store, &scan, "SCAN %s MATCH %s COUNT %u", cursor, pattern,
                                   svc->scan_count);
        if (rc) return rc;
        if (ttb_reply_scan_page(scan, cursor, &keys)) {
            freeReplyObject(scan);
            return TTB_ERR_PROTO;
        }
        for (size_t i = 0; i < keys->elements && moved >= 0; i++) {
            const redisReply *k = keys->element[i];
            if (k->type != REDIS_REPLY_STRING || k->len <= prefix ||
                strspn(k->str + prefix, "0123456789") != k->len - prefix)
                continue; /* not a bucket (the expiry set, say) */
            const char *argv[] = {"adopt", spec, town, k->str};
            redisReply *r;
            rc = ttb_store_append_script(svc->store, TTB_SCRIPT_IDEM, 0, 4, argv, NULL);
            if (!rc) rc = ttb_store_reply(svc->store, &r);
            if (rc) {
                moved = rc;
                break;
            }
            if (r->type == REDIS_REPLY_INTEGER) moved += r->integer;
            else if (ttb_reply_is_noscript(r) && !ttb_store_load_scripts(svc->store)) i--;
            freeReplyObject(r);
        }
        freeReplyObject(scan);
    } while (moved >= 0 && strcmp(cursor, "0") != 0);
    return moved;
}

long ttb_service_adopt_legacy_records(ttb_service_t *svc, char *const *towns, size_t n) {
    long total = 0;
    for (size_t t = 0; t < n; t++) {
        long moved = adopt_town(svc, towns[t]);
        if (moved < 0) return moved;
        total += moved;
    }
    return total;
}

int ttb_service_check_waits(ttb_service_t *svc, const ttb_command_t *const *cmds,
                            ttb_outcome_t *const *out, size_t n, int64_t now_ms) {
    if (!ttb_store_connected(svc->store)) return TTB_ERR_IO;
    for (size_t i = 0; i < n; i++) {
        if (!out[i]->pending) continue;
        char akey[TTB_KEY_BUFSZ];
        ttb_key_agent(akey, cmds[i]->town, out[i]->agent_id);
        int rc = ttb_store_appendf(svc->store, "HGETALL %s", akey);
        if (rc) return rc;
    }
    /* Work on copies so that a failure leaves the caller's outcomes as they were. */
    ttb_outcome_t *next = calloc(n ? n : 1, sizeof(*next));
    ttb_outcome_t **finished = calloc(n ? n : 1, sizeof(*finished));
    int rc = (!next || !finished) ? TTB_ERR_NOMEM : 0;
    for (size_t i = 0; i < n; i++) {
        if (!out[i]->pending) continue;
        redisReply *r;
        int rr = ttb_store_reply(svc->store, &r);
        if (rr) {
            rc = rr;
            break;
        }
        if (!rc) {
            rc = finish_wait(cmds[i], r, out[i]->deadline_ms, now_ms, &next[i]);
            if (!rc && !next[i].pending) finished[i] = &next[i];
        }
        freeReplyObject(r);
    }
    if (!rc) rc = store_records(svc, cmds, finished, n);
    for (size_t i = 0; i < n; i++) {
        if (!rc && finished[i]) {
            ttb_outcome_clear(out[i]);
            *out[i] = next[i];
        } else {
            ttb_outcome_clear(&next[i]);
        }
    }
    free(next);
    free(finished);
    return rc;
}
