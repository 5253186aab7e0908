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
#include <unistd.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/error.h"
#include "tinytown_bridge/tls.h"


extern const char ttb_lua_spawn[];
extern const size_t ttb_lua_spawn_len;
extern const char ttb_lua_transition[];
extern const size_t ttb_lua_transition_len;
extern const char ttb_lua_bulk[];
extern const size_t ttb_lua_bulk_len;
extern const char ttb_lua_idem[];
extern const size_t ttb_lua_idem_len;
extern const char ttb_lua_rights[];
extern const size_t ttb_lua_rights_len;
extern const char ttb_lua_relay[];
extern const size_t ttb_lua_relay_len;
extern const char ttb_lua_capture[];
extern const size_t ttb_lua_capture_len;

struct ttb_store {
    redisContext *ctx;
    ttb_tls_tunnel_t *tunnel; /* ctx's TLS tunnel (rediss://), NULL on plain TCP */
    ttb_tls_t *tls;           /* rediss://: the TLS client configuration */
    char *tls_server_name;    /* the name the server's certificate must carry */
    char tls_error[256];      /* why tls could not be made: every connect fails with it */
    bool refused;             /* the last failure was a refusal (TLS, AUTH, ACL) */
    bool denied_is_reply;     /* hand NOPERM out as a reply: the command is optional */
    bool use_tls;
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
    size_t owed;    /* replies of queued commands not read yet */
    int64_t deadline_ms; /* ttb_clock_ms() bound on every wait, 0: none */
    uint64_t round_trips;
    uint64_t reconnects;
    unsigned scripts;                  /* TTB_SCRIPT_BIT()s this connection loads */
    char sha[TTB_SCRIPT__COUNT][41];   /* of those, once loaded; else "" */
    char errstr[1024]; /* room for a NOPERM explanation with the ACL rules */
};

static void store_script_culprit(const ttb_store_t *store, const char *msg, char *buf,
                                 size_t size);

static char *dup_or_null(const char *s) { return s ? strdup(s) : NULL; }

ttb_store_t *ttb_store_new(const ttb_redis_opts_t *opts) {
    ttb_store_t *store = calloc(1, sizeof(*store));
    if (!store) return NULL;
    store->host = strdup(opts->host && *opts->host ? opts->host : "127.0.0.1");
    store->port = opts->port > 0 ? opts->port : 6379;
    store->username = dup_or_null(opts->username);
    store->password = dup_or_null(opts->password);
    store->db = opts->db;
    store->scripts = TTB_SCRIPTS_SERVICE;
    store->connect_timeout_ms = opts->connect_timeout_ms > 0 ? opts->connect_timeout_ms : 2000;
    store->command_timeout_ms = opts->command_timeout_ms > 0 ? opts->command_timeout_ms : 5000;
    if (!store->host || (opts->username && !store->username) ||
        (opts->password && !store->password)) {
        ttb_store_free(store);
        return NULL;
    }
    store->use_tls = opts->tls;
    if (opts->tls) {
        ttb_tls_opts_t topts = {.ca_file = opts->tls_ca_file,
                                .ca_dir = opts->tls_ca_dir,
                                .cert_file = opts->tls_cert_file,
                                .key_file = opts->tls_key_file,
                                .verify = !opts->tls_insecure};
        store->tls_server_name = strdup(opts->tls_server_name ? opts->tls_server_name : store->host);
        if (!store->tls_server_name) {
            ttb_store_free(store);
            return NULL;
        }
        /* A file that cannot be used is reported by every connect, where
         * callers already handle errors. */
        store->tls = ttb_tls_new(&topts, store->tls_error, sizeof(store->tls_error));
    }
    return store;
}

void ttb_store_disconnect(ttb_store_t *store) {
    if (store->ctx) redisFree(store->ctx); /* closing hiredis's end ends the tunnel's pump */
    store->ctx = NULL;
    ttb_tls_tunnel_release(store->tunnel);
    store->tunnel = NULL;
    store->connected = false;
    store->unflushed = false;
    store->owed = 0; /* lost with the connection */
}

void ttb_store_free(ttb_store_t *store) {
    if (!store) return;
    ttb_store_disconnect(store);
    free(store->host);
    free(store->username);
    free(store->tls_server_name);
    ttb_tls_free(store->tls);
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

/* Marks the connection dead after an I/O error and keeps the reason: under
 * TLS, hiredis only sees the stream end, and the tunnel knows why. */
static int store_fail(ttb_store_t *store, const char *what) {
    const char *why = store->ctx && store->ctx->err ? store->ctx->errstr : "connection closed";
    char tls_why[256];
    int tls_rc = store->tunnel ? ttb_tls_tunnel_error(store->tunnel, tls_why, sizeof(tls_why)) : 0;
    if (tls_rc) why = tls_why;
    store->refused = tls_rc == TTB_ERR_DENIED;
    snprintf(store->errstr, sizeof(store->errstr), "%s: %s", what, why);
    ttb_store_disconnect(store);
    return TTB_ERR_IO;
}

bool ttb_store_connected(const ttb_store_t *store) { return store->connected; }

const char *ttb_store_errstr(const ttb_store_t *store) { return store->errstr; }

uint64_t ttb_store_round_trips(const ttb_store_t *store) { return store->round_trips; }

uint64_t ttb_store_reconnects(const ttb_store_t *store) { return store->reconnects; }

bool ttb_store_refused(const ttb_store_t *store) { return store->refused; }

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
    if (store->owed) store->owed--;
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
    if (!store->denied_is_reply && ttb_reply_is_denied(r)) {
        /* The user lacks a right (an ACL changed under us): no command
         * can be answered correctly until an operator grants it, so it is
         * an outage too, with the explanation as its reason. */
        char culprit[64];
        store_script_culprit(store, ((redisReply *)r)->str, culprit, sizeof(culprit));
        ttb_reply_explain_denied(r, culprit[0] ? culprit : "a command", store->errstr,
                                 sizeof(store->errstr));
        freeReplyObject(r);
        ttb_store_disconnect(store);
        store->refused = true;
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
    store->owed++;
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
    store->owed++;
    return 0;
}

size_t ttb_store_owed(const ttb_store_t *store) { return store->owed; }

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
    store->owed++;
    return ttb_store_reply(store, reply);
}

static const char *script_source(ttb_script_t script, size_t *len) {
    switch (script) {
    case TTB_SCRIPT_SPAWN: *len = ttb_lua_spawn_len; return ttb_lua_spawn;
    case TTB_SCRIPT_TRANSITION: *len = ttb_lua_transition_len; return ttb_lua_transition;
    case TTB_SCRIPT_BULK: *len = ttb_lua_bulk_len; return ttb_lua_bulk;
    case TTB_SCRIPT_IDEM: *len = ttb_lua_idem_len; return ttb_lua_idem;
    case TTB_SCRIPT_RELAY: *len = ttb_lua_relay_len; return ttb_lua_relay;
    case TTB_SCRIPT_CAPTURE: *len = ttb_lua_capture_len; return ttb_lua_capture;
    default: *len = 0; return NULL;
    }
}

/* SCRIPT LOAD of one script, its sha into @p sha. */
static int store_script_load(ttb_store_t *store, const char *src, size_t len, char sha[41]) {
    redisReply *reply;
    int rc = ttb_store_command(store, &reply, "SCRIPT LOAD %b", src, len);
    if (rc) return rc;
    if (reply->type != REDIS_REPLY_STRING || reply->len != 40) {
        rc = ttb_reply_is_denied(reply) ? TTB_ERR_DENIED : TTB_ERR_PROTO;
        ttb_reply_explain_denied(reply, "SCRIPT LOAD", store->errstr, sizeof(store->errstr));
        freeReplyObject(reply);
        return rc;
    }
    memcpy(sha, reply->str, 40);
    sha[40] = '\0';
    freeReplyObject(reply);
    return 0;
}

void ttb_store_use_scripts(ttb_store_t *store, unsigned scripts) { store->scripts = scripts; }

int ttb_store_load_scripts(ttb_store_t *store) {
    for (int i = 0; i < TTB_SCRIPT__COUNT; i++) {
        if (!(store->scripts & TTB_SCRIPT_BIT(i))) continue;
        size_t len;
        const char *src = script_source((ttb_script_t)i, &len);
        int rc = store_script_load(store, src, len, store->sha[i]);
        if (rc) return rc;
    }
    return 0;
}

/* The source of the script with @p sha (40 hex digits), or NULL. */
static const char *store_script_by_sha(const ttb_store_t *store, const char *sha, size_t *len) {
    for (int i = 0; i < TTB_SCRIPT__COUNT; i++)
        if (store->sha[i][0] && strncmp(store->sha[i], sha, 40) == 0)
            return script_source((ttb_script_t)i, len);
    return NULL;
}

/* Redis says a script's call was refused ("... script: <sha>, on
 * @user_script:<line>.") but not which command: the line of our own source
 * does. Writes e.g. "XADD in a script" into @p buf, or "" when unknown. */
static void store_script_culprit(const ttb_store_t *store, const char *msg, char *buf,
                                 size_t size) {
    buf[0] = '\0';
    const char *at = strstr(msg, "script: ");
    const char *line_at = strstr(msg, "@user_script:");
    if (!at || !line_at || strlen(at + 8) < 40) return;
    size_t len;
    const char *src = store_script_by_sha(store, at + 8, &len);
    long line = strtol(line_at + 13, NULL, 10);
    if (!src || line < 1) return;
    const char *p = src, *end = src + len;
    for (long n = 1; n < line && p < end; n++) {
        p = memchr(p, '\n', (size_t)(end - p));
        p = p ? p + 1 : end;
    }
    const char *eol = memchr(p, '\n', (size_t)(end - p));
    if (!eol) eol = end;
    for (const char *c = p; c + 12 < eol; c++) {
        size_t skip = strncmp(c, "redis.call('", 12) == 0    ? 12
                      : strncmp(c, "redis.pcall('", 13) == 0 ? 13
                                                              : 0;
        if (!skip) continue;
        const char *name = c + skip, *q = memchr(name, '\'', (size_t)(eol - name));
        if (q) snprintf(buf, size, "%.*s in a script", (int)(q - name), name);
        return;
    }
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
        ttb_reply_explain_denied(reply, what, store->errstr, sizeof(store->errstr));
        snprintf(errstr, errstr_size, "%s", store->errstr);
        rc = ttb_reply_is_denied(reply) ? TTB_ERR_DENIED : TTB_ERR_PROTO;
    }
    freeReplyObject(reply);
    if (rc) ttb_store_disconnect(store);
    return rc;
}

/* Opens a connection to the server: TCP through hiredis, or (rediss://) a
 * TLS tunnel whose plaintext end hiredis adopts. Either way hiredis then
 * bounds every read and write by the command timeout. */
static int store_open(const ttb_store_t *store, int timeout_ms, redisContext **out,
                      ttb_tls_tunnel_t **tunnel, char *errstr, size_t errstr_size) {
    redisContext *c;
    *out = NULL;
    *tunnel = NULL;
    if (store->use_tls) {
        if (!store->tls) {
            snprintf(errstr, errstr_size, "TLS: %.200s", store->tls_error);
            return TTB_ERR_INVALID;
        }
        int fd;
        int rc = ttb_tls_connect(store->tls, store->host, store->port, store->tls_server_name,
                                 timeout_ms, &fd, tunnel, errstr, errstr_size);
        if (rc) return rc;
        if (!(c = redisConnectFd(fd))) close(fd);
    } else {
        c = redisConnectWithTimeout(store->host, store->port, ms_to_tv(timeout_ms));
        if (c && !c->err) redisEnableKeepAlive(c); /* the tunnel sets its own TCP socket's */
    }
    if (!c || c->err) {
        snprintf(errstr, errstr_size, "connect to %s:%d: %s", store->host, store->port,
                 c ? c->errstr : "out of memory");
        if (c) redisFree(c);
        ttb_tls_tunnel_release(*tunnel);
        *tunnel = NULL;
        return TTB_ERR_IO;
    }
    redisSetTimeout(c, ms_to_tv(store->command_timeout_ms));
    *out = c;
    return 0;
}

/* AUTH as the configured user: argv for it, the count, 0 when none. */
static int auth_argv(const ttb_store_t *store, const char *argv[3]) {
    if (!store->password) return 0;
    argv[0] = "AUTH";
    argv[1] = store->username ? store->username : store->password;
    argv[2] = store->password;
    return store->username ? 3 : 2;
}

/* AUTH, SELECT and the scripts on a fresh connection. */
static int store_setup(ttb_store_t *store, char *errstr, size_t errstr_size) {
    int rc;
    const char *argv[3];
    int argc = auth_argv(store, argv);
    if (argc && (rc = setup_command(store, errstr, errstr_size, "AUTH", argc, argv)))
        return store->refused ? TTB_ERR_DENIED : rc;
    if (store->db != 0) {
        char db[16];
        snprintf(db, sizeof(db), "%d", store->db);
        const char *sargv[2] = {"SELECT", db};
        if ((rc = setup_command(store, errstr, errstr_size, "SELECT", 2, sargv)))
            return store->refused ? TTB_ERR_DENIED : rc;
    }
    rc = ttb_store_load_scripts(store);
    if (rc) {
        snprintf(errstr, errstr_size, "%s", store->errstr);
        if (store->refused) rc = TTB_ERR_DENIED;
        ttb_store_disconnect(store);
    }
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
    store->refused = false;
    int rc = store_open(store, connect_ms, &store->ctx, &store->tunnel, store->errstr,
                        sizeof(store->errstr));
    if (rc) {
        snprintf(errstr, errstr_size, "%s", store->errstr);
    } else {
        store->connected = true;
        store->denied_is_reply = true; /* each setup step says what was refused */
        rc = store_setup(store, errstr, errstr_size);
        store->denied_is_reply = false;
    }
    if (rc) {
        store->refused = rc == TTB_ERR_DENIED;
        return rc;
    }
    if (store->ever_connected) store->reconnects++;
    store->ever_connected = true;
    store->errstr[0] = '\0';
    return 0;
}

int ttb_store_append_script(ttb_store_t *store, ttb_script_t script, int nkeys, int argc,
                            const char **argv, const size_t *argvlen) {
    if ((unsigned)script >= TTB_SCRIPT__COUNT || !(store->scripts & TTB_SCRIPT_BIT(script)))
        return TTB_ERR_INVALID;
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

static int store_require_notifications(ttb_store_t *store, const char *flags, bool *added,
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

int ttb_store_require_notifications(ttb_store_t *store, const char *flags, bool *added,
                                    char *errstr, size_t errstr_size) {
    /* CONFIG is a right the least ACL leaves out: its refusal is an answer. */
    store->denied_is_reply = true;
    int rc = store_require_notifications(store, flags, added, errstr, errstr_size);
    store->denied_is_reply = false;
    return rc;
}

redisContext *ttb_store_subscribe(const ttb_store_t *store, const char *const *patterns, size_t n,
                                  size_t required, bool *refused_optional, char *errstr,
                                  size_t errstr_size) {
    if (refused_optional) *refused_optional = false;
    redisContext *c;
    ttb_tls_tunnel_t *tunnel;
    char why[256];
    if (store_open(store, store->connect_timeout_ms, &c, &tunnel, why, sizeof(why))) {
        snprintf(errstr, errstr_size, "subscriber: %s", why);
        return NULL;
    }
    const char *argv[3];
    int argc = auth_argv(store, argv);
    if (argc) redisAppendCommandArgv(c, argc, argv, NULL);
    for (size_t i = 0; i < n; i++) redisAppendCommand(c, "PSUBSCRIBE %s", patterns[i]);
    size_t expect = n + (argc ? 1 : 0);
    for (size_t i = 0; i < expect; i++) {
        void *reply = NULL;
        if (redisGetReply(c, &reply) != REDIS_OK || !reply) {
            const char *what = c->err ? c->errstr : "no reply";
            if (tunnel && ttb_tls_tunnel_error(tunnel, why, sizeof(why))) what = why;
            snprintf(errstr, errstr_size, "subscriber: %s", what);
            redisFree(c);
            ttb_tls_tunnel_release(tunnel);
            return NULL;
        }
        redisReply *r = reply;
        bool ok = r->type != REDIS_REPLY_ERROR;
        /* Never echo a command here: the first may hold the password. */
        if (!ok)
            snprintf(errstr, errstr_size, "subscriber: %s",
                     ttb_reply_explain_denied(r, i == 0 && argc ? "AUTH" : "PSUBSCRIBE", why,
                                              sizeof(why)));
        freeReplyObject(r);
        if (!ok && i >= required + (argc ? 1 : 0) && refused_optional) {
            *refused_optional = true; /* the explanation stays in errstr */
            continue;
        }
        if (!ok) {
            redisFree(c);
            ttb_tls_tunnel_release(tunnel);
            return NULL;
        }
    }
    /* From here the pump alone holds the tunnel; redisFree() ends it. */
    ttb_tls_tunnel_release(tunnel);
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

/* The rights the bridge needs, for messages; README "Security" explains it.
 * Kept equal to the README's line by the security tests, which run with it. */
const char ttb_store_acl_rules[] =
    "resetkeys ~tt:* ~ttb:* resetchannels &__keyspace@<db>__:tt:<town>:agent:* "
    "&__keyspace@<db>__:tt:<town>:task:* (both for each town) "
    "-@all +auth +select "
    "+script|load +eval +evalsha +scan +hscan +get +set +exists +del +type +ttl +expire +pexpire "
    "+hget +hmget +hgetall +hset +hsetnx +hdel +llen +lpush +ltrim +zadd +zrem +zrangebyscore "
    "+xadd +xrange +xread +xtrim +xinfo|stream +psubscribe +config|get";

bool ttb_reply_is_denied(const redisReply *reply) {
    static const char *const codes[] = {"NOPERM", "NOAUTH", "WRONGPASS"};
    if (!reply || reply->type != REDIS_REPLY_ERROR || !reply->str) return false;
    for (size_t i = 0; i < sizeof(codes) / sizeof(codes[0]); i++)
        if (strncmp(reply->str, codes[i], strlen(codes[i])) == 0) return true;
    /* Redis 7.0.13 and later answer a long argument from a client that has
     * not authenticated with this, not NOAUTH, and close the connection. */
    if (strstr(reply->str, "Protocol error: unauthenticated")) return true;
    /* A script stops on the first refused call, in Redis 7.0's words. */
    return strstr(reply->str, "NOPERM") != NULL ||
           strstr(reply->str, "The user executing the script can't") != NULL;
}

/* "<what> refused: <msg>" and, for a missing right, the rights to grant. */
static void explain(char *buf, size_t size, const char *what, const char *msg, bool acl) {
    if (acl)
        snprintf(buf, size,
                 "%s refused: %.200s (the Redis user lacks a right the bridge needs; grant it "
                 "the ACL of README \"Security\": ACL SETUSER <user> %s)",
                 what, msg, ttb_store_acl_rules);
    else snprintf(buf, size, "%s refused: %.200s", what, msg);
}

char *ttb_reply_explain_denied(const redisReply *reply, const char *what, char *buf, size_t size) {
    const char *msg = reply && reply->type == REDIS_REPLY_ERROR && reply->str ? reply->str
                                                                               : "unexpected reply";
    explain(buf, size, what, msg,
            ttb_reply_is_denied(reply) && strncmp(msg, "WRONGPASS", 9) != 0 &&
                strncmp(msg, "NOAUTH", 6) != 0);
    return buf;
}

int ttb_store_check_rights(ttb_store_t *store, const char *const *towns, size_t ntowns) {
    const char **argv = malloc(sizeof(*argv) * (ntowns + 3));
    size_t *lens = malloc(sizeof(*lens) * (ntowns + 3));
    int rc = argv && lens ? 0 : TTB_ERR_NOMEM;
    if (!rc) {
        argv[0] = "EVAL";
        lens[0] = 4;
        argv[1] = ttb_lua_rights;
        lens[1] = ttb_lua_rights_len;
        argv[2] = "0";
        lens[2] = 1;
        for (size_t i = 0; i < ntowns; i++) {
            argv[i + 3] = towns[i];
            lens[i + 3] = strlen(towns[i]);
        }
        rc = ttb_store_append(store, (int)ntowns + 3, argv, lens);
    }
    free(argv);
    free(lens);
    redisReply *r;
    if (rc || (rc = ttb_store_reply(store, &r))) return rc; /* a NOPERM on EVAL: refused */
    /* Anything but a name (an error of an older Redis) says nothing: go on. */
    if (r->type == REDIS_REPLY_STRING && r->len > 0) {
        char what[160];
        snprintf(what, sizeof(what), "%.*s (checked at connect)", (int)r->len, r->str);
        explain(store->errstr, sizeof(store->errstr), what, "the ACL does not allow it", true);
        store->refused = true;
        rc = TTB_ERR_DENIED;
    }
    freeReplyObject(r);
    return rc;
}

bool ttb_reply_is_noscript(const redisReply *reply) {
    return reply && reply->type == REDIS_REPLY_ERROR && strncmp(reply->str, "NOSCRIPT", 8) == 0;
}

/* Key builders. Towns and ids are validated before they get here, so the
 * buffer is always large enough; snprintf still bounds it. */
#define KEY(buf, ...) ((size_t)snprintf((buf), TTB_KEY_BUFSZ, __VA_ARGS__))

#define TTB_KEY_TOWN(name, format) \
    size_t ttb_key_##name(char *buf, const char *town) { return KEY(buf, format, town); }
#define TTB_KEY_ID(name, format)                                         \
    size_t ttb_key_##name(char *buf, const char *town, const char *id) { \
        return KEY(buf, format, town, id);                               \
    }
#include "tinytown_bridge/keys.def"
#undef TTB_KEY_TOWN
#undef TTB_KEY_ID
