/* SPDX-License-Identifier: MIT */
/*
 * The Redis store: one hiredis connection driven as a pipeline, the key
 * layout shared with tinytown, and the embedded Lua scripts.
 *
 * Everything the bridge sends goes through ttb_store_append*() and comes back
 * through ttb_store_reply(), so the round-trip counter here is the ground truth
 * for "how many times did we wait on Redis". Scripts are loaded with SCRIPT
 * LOAD on every connect; callers that see NOSCRIPT (a SCRIPT FLUSH, a failover
 * to a replica that never saw them) call ttb_store_load_scripts() and resend.
 */
#include "tinytown_bridge/store.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/error.h"

extern const char ttb_lua_spawn[];
extern const size_t ttb_lua_spawn_len;
extern const char ttb_lua_transition[];
extern const size_t ttb_lua_transition_len;
extern const char ttb_lua_bulk[];
extern const size_t ttb_lua_bulk_len;
extern const char ttb_lua_idem[];
extern const size_t ttb_lua_idem_len;

struct ttb_store {
    redisContext *ctx;
    char *host;
    int port;
    char *username;
    char *password;
    int db;
    int connect_timeout_ms;
    int command_timeout_ms;
    bool connected;
    bool ever_connected;
    bool unflushed; /* commands appended since the last wait for a reply */
    int64_t deadline_ms; /* ttb_clock_ms() bound on every wait, 0: none */
    uint64_t round_trips;
    uint64_t reconnects;
    char sha[TTB_SCRIPT__COUNT][41];
    char errstr[256];
};

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

ttb_store_t *ttb_store_new(const ttb_redis_opts_t *opts) {
    ttb_store_t *store = calloc(1, sizeof(*store));
    if (!store) return NULL;
    store->host = strdup(opts->host && *opts->host ? opts->host : "127.0.0.1");
    store->port = opts->port > 0 ? opts->port : 6379;
    store->username = dup_or_null(opts->username);
    store->password = dup_or_null(opts->password);
    store->db = opts->db;
    store->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 2000;
    store->command_timeout_ms = opts->command_timeout_ms > 0 ? opts->command_timeout_ms : 5000;
    if (!store->host || (opts->username && !store->username) ||
        (opts->password && !store->password)) {
        ttb_store_free(store);
        return NULL;
    }
    return store;
}

void ttb_store_disconnect(ttb_store_t *store) {
    if (store->ctx) redisFree(store->ctx);
    store->ctx = NULL;
    store->connected = false;
    store->unflushed = false;
}

void ttb_store_free(ttb_store_t *store) {
    if (!store) return;
    ttb_store_disconnect(store);
    free(store->host);
    free(store->username);
    if (store->password) {
        /* Do not leave the secret in freed heap memory. */
        memset(store->password, 0, strlen(store->password));
        free(store->password);
    }
    free(store);
}

static struct timeval ms_to_tv(int ms) {
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    return tv;
}

/* The time a wait may take: @p configured, or less when a deadline is near. */
static int store_time_left(const ttb_store_t *store, int configured) {
    if (!store->deadline_ms) return configured;
    int64_t left = store->deadline_ms - ttb_clock_ms();
    if (left <= 0) return 0;
    return left < configured ? (int)left : configured;
}

void ttb_store_set_deadline(ttb_store_t *store, int64_t deadline_ms) {
    store->deadline_ms = deadline_ms;
    if (!deadline_ms && store->ctx) redisSetTimeout(store->ctx, ms_to_tv(store->command_timeout_ms));
}

/* Marks the connection dead after an I/O error and keeps the reason. */
static int store_fail(ttb_store_t *store, const char *what) {
    const char *why = store->ctx && store->ctx->err ? store->ctx->errstr : "connection closed";
    snprintf(store->errstr, sizeof(store->errstr), "%s: %s", what, why);
    ttb_store_disconnect(store);
    return TTB_ERR_IO;
}

bool ttb_store_connected(const ttb_store_t *store) { return store->connected; }

const char *ttb_store_errstr(const ttb_store_t *store) { return store->errstr; }

uint64_t ttb_store_round_trips(const ttb_store_t *store) { return store->round_trips; }

uint64_t ttb_store_reconnects(const ttb_store_t *store) { return store->reconnects; }

int ttb_store_reply(ttb_store_t *store, redisReply **reply) {
    *reply = NULL;
    if (!store->connected) return TTB_ERR_IO;
    if (store->unflushed) {
        store->round_trips++;
        store->unflushed = false;
    }
    if (store->deadline_ms) {
        int left = store_time_left(store, store->command_timeout_ms);
        if (left <= 0) {
            snprintf(store->errstr, sizeof(store->errstr), "out of time (stopping)");
            ttb_store_disconnect(store);
            return TTB_ERR_IO;
        }
        redisSetTimeout(store->ctx, ms_to_tv(left));
    }
    void *r = NULL;
    if (redisGetReply(store->ctx, &r) != REDIS_OK || !r) return store_fail(store, "redis read");
    if (ttb_reply_is_transient(r)) {
        /* Redis is there but refuses for now (a replica after a failover,
         * maxmemory, a busy script, loading): an outage like any other. The
         * replies still queued are dropped with the connection; callers
         * retry the whole unit of work, which the idempotency records make
         * safe. */
        snprintf(store->errstr, sizeof(store->errstr), "redis refused: %.200s",
                 ((redisReply *)r)->str);
        freeReplyObject(r);
        ttb_store_disconnect(store);
        return TTB_ERR_IO;
    }
    *reply = r;
    return 0;
}

int ttb_store_append(ttb_store_t *store, int argc, const char **argv, const size_t *argvlen) {
    if (!store->connected) return TTB_ERR_IO;
    if (redisAppendCommandArgv(store->ctx, argc, argv, argvlen) != REDIS_OK)
        return store_fail(store, "redis append");
    store->unflushed = true;
    return 0;
}

int ttb_store_appendf(ttb_store_t *store, const char *fmt, ...) {
    if (!store->connected) return TTB_ERR_IO;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(store->ctx, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) return store_fail(store, "redis append");
    store->unflushed = true;
    return 0;
}

int ttb_store_skip(ttb_store_t *store, size_t n) {
    int first = 0;
    for (size_t i = 0; i < n; i++) {
        redisReply *reply;
        int rc = ttb_store_reply(store, &reply);
        if (rc) return rc;
        if (reply->type == REDIS_REPLY_ERROR && !first) first = TTB_ERR_PROTO;
        freeReplyObject(reply);
    }
    return first;
}

int ttb_store_command(ttb_store_t *store, redisReply **reply, const char *fmt, ...) {
    *reply = NULL;
    if (!store->connected) return TTB_ERR_IO;
    va_list ap;
    va_start(ap, fmt);
    int rc = redisvAppendCommand(store->ctx, fmt, ap);
    va_end(ap);
    if (rc != REDIS_OK) return store_fail(store, "redis append");
    store->unflushed = true;
    return ttb_store_reply(store, reply);
}

static const char *script_source(ttb_script_t script, size_t *len) {
    switch (script) {
    case TTB_SCRIPT_SPAWN: *len = ttb_lua_spawn_len; return ttb_lua_spawn;
    case TTB_SCRIPT_TRANSITION: *len = ttb_lua_transition_len; return ttb_lua_transition;
    case TTB_SCRIPT_BULK: *len = ttb_lua_bulk_len; return ttb_lua_bulk;
    case TTB_SCRIPT_IDEM: *len = ttb_lua_idem_len; return ttb_lua_idem;
    default: *len = 0; return NULL;
    }
}

int ttb_store_load_scripts(ttb_store_t *store) {
    for (int i = 0; i < TTB_SCRIPT__COUNT; i++) {
        size_t len;
        const char *src = script_source((ttb_script_t)i, &len);
        redisReply *reply;
        int rc = ttb_store_command(store, &reply, "SCRIPT LOAD %b", src, len);
        if (rc) return rc;
        if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
            snprintf(store->errstr, sizeof(store->errstr), "SCRIPT LOAD failed: %s",
                     reply->type == REDIS_REPLY_ERROR ? reply->str : "unexpected reply");
            freeReplyObject(reply);
            return TTB_ERR_PROTO;
        }
        memcpy(store->sha[i], reply->str, 40);
        store->sha[i][40] = '\0';
        freeReplyObject(reply);
    }
    return 0;
}

/* Sends one setup command and insists on a non-error reply. */
static int setup_command(ttb_store_t *store, char *errstr, size_t errstr_size, const char *what,
                         int argc, const char **argv) {
    redisReply *reply;
    if (ttb_store_append(store, argc, argv, NULL) || ttb_store_reply(store, &reply)) {
        snprintf(errstr, errstr_size, "%s", store->errstr);
        return TTB_ERR_IO;
    }
    int rc = 0;
    if (reply->type == REDIS_REPLY_ERROR) {
        /* Never echo the command: it may hold the password. */
        snprintf(errstr, errstr_size, "%s refused: %s", what, reply->str);
        snprintf(store->errstr, sizeof(store->errstr), "%s refused: %s", what, reply->str);
        rc = TTB_ERR_PROTO;
    }
    freeReplyObject(reply);
    if (rc) ttb_store_disconnect(store);
    return rc;
}

int ttb_store_connect(ttb_store_t *store, char *errstr, size_t errstr_size) {
    ttb_store_disconnect(store);
    int connect_ms = store_time_left(store, store->connect_timeout_ms);
    if (connect_ms <= 0) {
        snprintf(store->errstr, sizeof(store->errstr), "out of time (stopping)");
        snprintf(errstr, errstr_size, "%s", store->errstr);
        return TTB_ERR_IO;
    }
    store->ctx = redisConnectWithTimeout(store->host, store->port, ms_to_tv(connect_ms));
    if (!store->ctx || store->ctx->err) {
        snprintf(store->errstr, sizeof(store->errstr), "connect to %s:%d: %s", store->host,
                 store->port, store->ctx ? store->ctx->errstr : "out of memory");
        snprintf(errstr, errstr_size, "%s", store->errstr);
        if (store->ctx) redisFree(store->ctx);
        store->ctx = NULL;
        return TTB_ERR_IO;
    }
    redisSetTimeout(store->ctx, ms_to_tv(store->command_timeout_ms));
    redisEnableKeepAlive(store->ctx);
    store->connected = true;

    if (store->password) {
        const char *argv[3] = {"AUTH", store->username ? store->username : store->password,
                               store->password};
        int rc = setup_command(store, errstr, errstr_size, "AUTH", store->username ? 3 : 2, argv);
        if (rc) return rc;
    }
    if (store->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", store->db);
        const char *argv[2] = {"SELECT", db};
        int rc = setup_command(store, errstr, errstr_size, "SELECT", 2, argv);
        if (rc) return rc;
    }
    int rc = ttb_store_load_scripts(store);
    if (rc) {
        snprintf(errstr, errstr_size, "%s", store->errstr);
        ttb_store_disconnect(store);
        return rc;
    }
    if (store->ever_connected) store->reconnects++;
    store->ever_connected = true;
    store->errstr[0] = '\0';
    return 0;
}

int ttb_store_append_script(ttb_store_t *store, ttb_script_t script, int nkeys, int argc,
                            const char **argv, const size_t *argvlen) {
    /* EVALSHA sha numkeys keys... args...: three leading words plus argv. */
    const char *stack_argv[64];
    size_t stack_len[64];
    const char **av = stack_argv;
    size_t *al = stack_len;
    if (argc + 3 > 64) {
        av = malloc(sizeof(*av) * (size_t)(argc + 3));
        al = malloc(sizeof(*al) * (size_t)(argc + 3));
        if (!av || !al) {
            free(av);
            free(al);
            return TTB_ERR_NOMEM;
        }
    }
    char nk[16];
    snprintf(nk, sizeof(nk), "%d", nkeys);
    av[0] = "EVALSHA";
    al[0] = 7;
    av[1] = store->sha[script];
    al[1] = 40;
    av[2] = nk;
    al[2] = strlen(nk);
    for (int i = 0; i < argc; i++) {
        av[i + 3] = argv[i];
        al[i + 3] = argvlen ? argvlen[i] : strlen(argv[i]);
    }
    int rc = ttb_store_append(store, argc + 3, av, al);
    if (av != stack_argv) {
        free(av);
        free(al);
    }
    return rc;
}

int ttb_store_db(const ttb_store_t *store) { return store->db; }

int ttb_store_require_notifications(ttb_store_t *store, const char *flags, bool *added,
                                    char *errstr, size_t errstr_size) {
    redisReply *r;
    if (added) *added = false;
    int rc = ttb_store_command(store, &r, "CONFIG GET notify-keyspace-events");
    if (rc) {
        snprintf(errstr, errstr_size, "%s", store->errstr);
        return rc;
    }
    char want[64];
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[1]->len >= 32) {
        snprintf(errstr, errstr_size, "CONFIG GET refused: %s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        freeReplyObject(r);
        return TTB_ERR_PROTO;
    }
    const char *cur = r->element[1]->str;
    size_t n = (size_t)snprintf(want, sizeof(want), "%s", cur);
    bool all = strchr(cur, 'A') != NULL; /* A: every class but K, E, m, n */
    for (const char *c = flags; *c && n + 1 < sizeof(want); c++) {
        bool in_all = all && strchr("g$lshzxetd", *c);
        if (!strchr(cur, *c) && !in_all) want[n++] = *c;
    }
    want[n] = '\0';
    bool same = strcmp(want, cur) == 0;
    freeReplyObject(r);
    if (same) return 0;
    if (added) *added = true;
    if ((rc = ttb_store_command(store, &r, "CONFIG SET notify-keyspace-events %s", want))) {
        snprintf(errstr, errstr_size, "%s", store->errstr);
        return rc;
    }
    rc = 0;
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errstr, errstr_size, "CONFIG SET refused: %s", r->str);
        rc = TTB_ERR_PROTO;
    }
    freeReplyObject(r);
    return rc;
}

redisContext *ttb_store_subscribe(const ttb_store_t *store, const char *const *patterns, size_t n,
                                  char *errstr, size_t errstr_size) {
    redisContext *c = redisConnectWithTimeout(store->host, store->port,
                                              ms_to_tv(store->connect_timeout_ms));
    if (!c || c->err) {
        snprintf(errstr, errstr_size, "subscriber connect: %s", c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, ms_to_tv(store->command_timeout_ms));
    redisEnableKeepAlive(c);
    if (store->password) {
        const char *argv[3] = {"AUTH", store->username ? store->username : store->password,
                               store->password};
        redisAppendCommandArgv(c, store->username ? 3 : 2, argv, NULL);
    }
    for (size_t i = 0; i < n; i++) redisAppendCommand(c, "PSUBSCRIBE %s", patterns[i]);
    size_t expect = n + (store->password ? 1 : 0);
    for (size_t i = 0; i < expect; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply) {
            snprintf(errstr, errstr_size, "subscriber: %s", c->err ? c->errstr : "no reply");
            redisFree(c);
            return NULL;
        }
        redisReply *r = reply;
        bool ok = r->type != REDIS_REPLY_ERROR;
        /* Never echo a command here: the first may hold the password. */
        if (!ok) snprintf(errstr, errstr_size, "subscriber refused: %.200s", r->str);
        freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return NULL;
        }
    }
    return c;
}

int ttb_reply_scan_page(const redisReply *reply, char cursor[TTB_CURSOR_BUFSZ],
                        const redisReply **items) {
    if (reply->type != REDIS_REPLY_ARRAY || reply->elements != 2 ||
        reply->element[0]->type != REDIS_REPLY_STRING ||
        reply->element[1]->type != REDIS_REPLY_ARRAY || reply->element[0]->len >= TTB_CURSOR_BUFSZ)
        return TTB_ERR_PROTO;
    memcpy(cursor, reply->element[0]->str, reply->element[0]->len);
    cursor[reply->element[0]->len] = '\0';
    *items = reply->element[1];
    return 0;
}

bool ttb_reply_is_transient(const redisReply *reply) {
    /* Error codes Redis uses for "not now": each means the server is alive
     * but will not run writes (or anything) until something changes. */
    static const char *const codes[] = {"READONLY", "OOM",        "NOREPLICAS", "BUSY",
                                        "LOADING",  "MASTERDOWN", "TRYAGAIN",   "CLUSTERDOWN"};
    if (!reply || reply->type != REDIS_REPLY_ERROR || !reply->str) return false;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++) {
        size_t n = strlen(codes[i]);
        if (strncmp(reply->str, codes[i], n) == 0 && (reply->str[n] == ' ' || reply->str[n] == '\0'))
            return true;
    }
    return false;
}

bool ttb_reply_is_noscript(const redisReply *reply) {
    return reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* Key builders. Towns and ids are validated before they get here, so the
 * buffer is always large enough; snprintf still bounds it. */
#define KEY(buf, ...) ((size_t)snprintf((buf), TTB_KEY_BUFSZ, __VA_ARGS__))

size_t ttb_key_agent(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:agent:%s", town, id);
}
size_t ttb_key_inbox(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:inbox:%s", town, id);
}
size_t ttb_key_urgent(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:urgent:%s", town, id);
}
size_t ttb_key_activity(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:activity:%s", town, id);
}
size_t ttb_key_stop(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:stop:%s", town, id);
}
size_t ttb_key_task(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:task:%s", town, id);
}
size_t ttb_key_events(char *buf, const char *town) { return KEY(buf, "tt:%s:events", town); }
size_t ttb_key_agent_events(char *buf, const char *town, const char *id) {
    return KEY(buf, "tt:%s:events:agent:%s", town, id);
}
size_t ttb_key_agent_pattern(char *buf, const char *town) {
    return KEY(buf, "tt:%s:agent:*", town);
}
size_t ttb_key_task_pattern(char *buf, const char *town) {
    return KEY(buf, "tt:%s:task:*", town);
}
size_t ttb_key_waits(char *buf, const char *town) { return KEY(buf, "ttb:%s:waits", town); }
size_t ttb_key_observed(char *buf, const char *town) { return KEY(buf, "ttb:%s:observed", town); }
