/* SPDX-License-Identifier: MIT */
/**
 * @file store.h
 * @brief The Redis side: connection, keys, embedded scripts and pipelines.
 *
 * A store is one hiredis connection used strictly as a pipeline: callers
 * append any number of commands, then read the replies in order. Every
 * flush-and-wait counts as one round trip, which tests and metrics read.
 * A connection error marks the store disconnected and every later call fails
 * with TTB_ERR_IO until ttb_store_connect() succeeds again; nothing is
 * retried here, because only the caller knows whether a retry is safe.
 *
 * @locality one thread at a time.
 */
#ifndef TINYTOWN_BRIDGE_STORE_H
#define TINYTOWN_BRIDGE_STORE_H

#include <hiredis/hiredis.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** How to reach Redis. Strings are copied by ttb_store_new(). */
typedef struct ttb_redis_opts {
    const char *host;         /**< default "127.0.0.1" */
    int port;                 /**< default 6379 */
    const char *username;     /**< ACL user, or NULL */
    const char *password;     /**< or NULL; never logged */
    int db;                   /**< SELECT index, default 0 */
    int connect_timeout_ms;   /**< default 2000 */
    int command_timeout_ms;   /**< default 5000 */
    bool tls;                 /**< rediss://: every connection over TLS (tls.h) */
    const char *tls_ca_file;  /**< trusted CAs (PEM), or NULL */
    const char *tls_ca_dir;   /**< hashed CA directory, or NULL; neither: the system's CAs */
    const char *tls_cert_file; /**< client certificate, or NULL */
    const char *tls_key_file; /**< its private key, or NULL */
    const char *tls_server_name; /**< name the certificate must carry; NULL: host */
    bool tls_insecure;        /**< do not check the server's certificate (only encrypt) */
} ttb_redis_opts_t;

/** The embedded Lua scripts, every one the bridge runs: one registry. Each
 * connection loads those its owner uses (ttb_store_use_scripts). */
typedef enum ttb_script {
    TTB_SCRIPT_SPAWN = 0,
    TTB_SCRIPT_TRANSITION,
    TTB_SCRIPT_BULK,
    TTB_SCRIPT_IDEM,
    TTB_SCRIPT_RELAY,   /**< the event relay's lease, cursor and reads */
    TTB_SCRIPT_CAPTURE, /**< state capture's checks */
    TTB_SCRIPT__COUNT
} ttb_script_t;

#define TTB_SCRIPT_BIT(s) (1u << (s))
/** What the service runs: what a new store loads unless told otherwise. */
#define TTB_SCRIPTS_SERVICE                                                             \
    (TTB_SCRIPT_BIT(TTB_SCRIPT_SPAWN) | TTB_SCRIPT_BIT(TTB_SCRIPT_TRANSITION) |          \
     TTB_SCRIPT_BIT(TTB_SCRIPT_BULK) | TTB_SCRIPT_BIT(TTB_SCRIPT_IDEM))

typedef struct ttb_store ttb_store_t;

/** @returns a new, unconnected store (NULL on NOMEM). Caller frees with ttb_store_free(). */
ttb_store_t *ttb_store_new(const ttb_redis_opts_t *opts);
/** Closes and frees. Accepts NULL. */
void ttb_store_free(ttb_store_t *store);

/**
 * Connects (closing any previous connection), authenticates, selects the db
 * and loads the scripts. @returns 0, TTB_ERR_IO (message in @p errstr),
 * TTB_ERR_DENIED when the server refuses who we are or what we may do (TLS
 * verification either way, a wrong password, NOAUTH, NOPERM), TTB_ERR_INVALID
 * when the TLS files cannot be used, or TTB_ERR_PROTO for other refusals
 * (e.g. an old Redis).
 */
int ttb_store_connect(ttb_store_t *store, char *errstr, size_t errstr_size);
/** @returns true while the last operation found the connection usable. */
bool ttb_store_connected(const ttb_store_t *store);
/**
 * @returns true when the last failure was a refusal that retrying does not
 * cure until a setting changes: TLS refusing either side, a wrong password,
 * or a NOPERM (which ttb_store_reply() turns into an outage, like a
 * transient refusal, with the explanation in the errstr).
 */
bool ttb_store_refused(const ttb_store_t *store);
/** Drops the connection (e.g. after a protocol desync). */
void ttb_store_disconnect(ttb_store_t *store);
/** @returns the last connection error message ("" if none). */
const char *ttb_store_errstr(const ttb_store_t *store);

/** Queues one command (binary-safe argv). @returns 0 or TTB_ERR_IO / TTB_ERR_NOMEM. */
int ttb_store_append(ttb_store_t *store, int argc, const char **argv, const size_t *argvlen);
/** Queues one command from a hiredis format string (%s, %b, %d ...). */
int ttb_store_appendf(ttb_store_t *store, const char *fmt, ...);
/** Queues EVALSHA of @p script with @p nkeys keys followed by args (argv
 * holds keys then args; @p argvlen NULL: NUL-terminated). TTB_ERR_INVALID
 * for a script this connection does not load. */
int ttb_store_append_script(ttb_store_t *store, ttb_script_t script, int nkeys, int argc,
                            const char **argv, const size_t *argvlen);
/**
 * Reads the next reply in order (flushing queued commands first; that is a
 * round trip). The caller frees *reply with freeReplyObject().
 * @returns 0, or TTB_ERR_IO (the store is then disconnected and every queued
 * reply is lost): on a connection error, and on a transient refusal
 * (ttb_reply_is_transient()), which is an outage too.
 */
int ttb_store_reply(ttb_store_t *store, redisReply **reply);
/** How many replies of queued commands are still to be read: a pipeline's
 * users take the difference before and after queueing to know what is
 * theirs (0 after a disconnect: every queued reply is lost with it). */
size_t ttb_store_owed(const ttb_store_t *store);
/** Reads and discards @p n replies, returning the first error (replies that are errors do not count). */
int ttb_store_skip(ttb_store_t *store, size_t n);
/** Runs one command and returns its reply (append + reply). */
int ttb_store_command(ttb_store_t *store, redisReply **reply, const char *fmt, ...);

/**
 * Bounds every later connect and wait for a reply by @p deadline_ms (a
 * ttb_clock_ms() value; 0 lifts the bound): each takes at most what is left,
 * and none starts once it has passed (TTB_ERR_IO). For stopping on time.
 */
void ttb_store_set_deadline(ttb_store_t *store, int64_t deadline_ms);

/** @returns the number of round trips (flushes that waited for replies) so far. */
uint64_t ttb_store_round_trips(const ttb_store_t *store);
/** @returns the number of reconnects after the first successful connect. */
uint64_t ttb_store_reconnects(const ttb_store_t *store);

/**
 * Chooses the scripts (TTB_SCRIPT_BIT()s) this connection loads, at every
 * connect and on ttb_store_load_scripts(); TTB_SCRIPTS_SERVICE until then.
 * Takes effect at the next connect.
 */
void ttb_store_use_scripts(ttb_store_t *store, unsigned scripts);

/** Reloads this connection's scripts (after NOSCRIPT). @returns 0,
 * TTB_ERR_IO, TTB_ERR_DENIED or TTB_ERR_PROTO (reason in the errstr). */
int ttb_store_load_scripts(ttb_store_t *store);

/**
 * Makes sure Redis publishes keyspace notifications with at least @p flags
 * (e.g. "Kgh"), adding what is missing to what is configured; *@p added
 * (when not NULL) says whether anything was missing.
 * @returns 0, TTB_ERR_IO, or TTB_ERR_PROTO when Redis refuses CONFIG (a
 * managed service, an ACL user without it), with the reason in @p errstr.
 */
int ttb_store_require_notifications(ttb_store_t *store, const char *flags, bool *added, char *errstr,
                                    size_t errstr_size);

/**
 * Opens a second connection to the same server, authenticated like the
 * store's, subscribed to @p n keyspace channel patterns. Read it with
 * redisBufferRead()/redisGetReplyFromReader() when its fd is readable.
 * The first @p required patterns must be granted; a refusal of one of the
 * others (an ACL without that channel) only sets *@p refused_optional (not
 * NULL then), with the explanation in @p errstr.
 * @returns the connection (caller frees with redisFree()) or NULL with @p errstr.
 */
redisContext *ttb_store_subscribe(const ttb_store_t *store, const char *const *patterns, size_t n,
                                  size_t required, bool *refused_optional,
                                  char *errstr, size_t errstr_size);

/** @returns the database index the store uses. */
int ttb_store_db(const ttb_store_t *store);

/** Size of a buffer holding a SCAN cursor. */
#define TTB_CURSOR_BUFSZ 32

/**
 * Checks that @p reply is a SCAN/HSCAN/SSCAN page ([cursor, [items...]]),
 * copies its cursor into @p cursor and points *items at the item array.
 * @returns 0 or TTB_ERR_PROTO.
 */
int ttb_reply_scan_page(const redisReply *reply, char cursor[TTB_CURSOR_BUFSZ],
                        const redisReply **items);

/**
 * @returns true when @p reply is an error by which Redis says "not now"
 * (READONLY, OOM, NOREPLICAS, BUSY, LOADING, MASTERDOWN, TRYAGAIN,
 * CLUSTERDOWN). ttb_store_reply() never hands such a reply out: it treats it
 * as an outage (TTB_ERR_IO, connection dropped, reason in the errstr).
 */
bool ttb_reply_is_transient(const redisReply *reply);

/**
 * @returns true when @p reply is an error by which Redis refuses the
 * connection's user: NOPERM (an ACL lacks a command, key or channel), NOAUTH,
 * WRONGPASS.
 */
bool ttb_reply_is_denied(const redisReply *reply);

/**
 * Writes one line explaining a NOPERM (or other denied) @p reply to @p what
 * (e.g. "SCRIPT LOAD"): Redis's words and where the ACL the bridge needs is
 * documented. @returns @p buf.
 */
char *ttb_reply_explain_denied(const redisReply *reply, const char *what, char *buf, size_t size);

/**
 * Asks Redis (ACL rules, redis.acl_check_cmd, nothing written) whether the
 * user may make every call the scripts make, on keys of each of @p towns.
 * Redis does not roll back a script a refused call stops half-way, so this
 * runs before any command does. @returns 0 (also when Redis cannot tell,
 * before 7.0), TTB_ERR_DENIED naming the missing right in the errstr,
 * TTB_ERR_IO (with ttb_store_refused() when EVAL itself was refused).
 */
int ttb_store_check_rights(ttb_store_t *store, const char *const *towns, size_t ntowns);

/** The ACL rule set the bridge needs (README, Security), for messages. */
extern const char ttb_store_acl_rules[];

/** @returns true when @p reply is a NOSCRIPT error. */
bool ttb_reply_is_noscript(const redisReply *reply);

/** Size of buffers that hold any key the bridge builds. */
#define TTB_KEY_BUFSZ 320

/**
 * The keys, one function each, from keys.def (where the Lua scripts' come
 * from too): tinytown's (`tt:`) and the bridge's own (`ttb:`, a handful per
 * town, never one per command: SCAN walks every key of the database). Each
 * writes into a TTB_KEY_BUFSZ buffer and returns the length; towns and ids
 * are validated before they get here. The SCAN patterns end in `*` (town
 * names hold no glob characters).
 */
#define TTB_KEY_TOWN(name, format) size_t ttb_key_##name(char *buf, const char *town);
#define TTB_KEY_ID(name, format) \
    size_t ttb_key_##name(char *buf, const char *town, const char *id);
#include "tinytown_bridge/keys.def"
#undef TTB_KEY_TOWN
#undef TTB_KEY_ID

#endif
