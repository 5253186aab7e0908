/* SPDX-License-Identifier: MIT */
/*
 * The event relay: each allowed town's events, entry by entry and in stream
 * order, to the events topic (docs/events.md).
 *
 * A town's events live in two streams that share one id space: tinytown's
 * `tt:{town}:events` (capped by tinytown at about 1,000 entries) and the
 * bridge's outbox `ttb:{town}:outbox`, where every event a bridge script
 * writes is kept, under the id it got in tt:{town}:events, until Kafka has
 * acknowledged it. Each read merges both in id order (relay.lua): bridge
 * events come whole however large the burst, tinytown's own come from its
 * stream while they are there.
 *
 * One thread owns a Redis connection and an idempotent producer. A town is
 * relayed by one bridge at a time: whoever holds its lease in Redis (renewed
 * while alive, taken over once it expires). The holder reads from the
 * town's cursor, produces every entry, and tracks what is in flight in
 * stream order; the cursor only ever moves to an entry that Kafka has
 * acknowledged together with everything before it, and it is written (and
 * the outbox trimmed up to it) by a script that first checks the lease, so a
 * holder that lost the town can do neither. After a crash or a takeover the
 * next holder resumes at the cursor: nothing is skipped, and only what was
 * produced but not yet acknowledged is produced again, under the same ids.
 *
 * tinytown's own entries can be trimmed before the relay reads them, for
 * instance while Kafka is down for long. Every entry read comes with its
 * ordinal in tt:{town}:events (how many entries the stream had received
 * when it was added); consecutive entries whose ordinals are not consecutive
 * had entries between them that left the stream unread and were never in
 * the outbox. Such a gap is logged with its size and counted, and the relay
 * carries on.
 *
 * @locality the public functions run on the caller's thread; everything else,
 * librdkafka callbacks included (they are served by rd_kafka_poll), on the
 * relay's thread.
 */
#include "tinytown_bridge/relay.h"

#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>
#include <unistd.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/error.h"
#include "tinytown_bridge/kafka.h"
#include "tinytown_bridge/log.h"
#include "tinytown_bridge/metrics.h"
#include "tinytown_bridge/store.h"

/* Entries asked for per read; a read is one script call, so this bounds how
 * long Redis is busy with it. */
#define RELAY_READ_COUNT 500
/* Entries of one town produced but not yet acknowledged; beyond this the
 * town is not read until acknowledgements catch up (bounded memory). */
#define RELAY_MAX_IN_FLIGHT 10000
/* How long an idle relay blocks on XREAD: the floor of its wake-ups. */
#define RELAY_IDLE_BLOCK_MS 100
/* How long to wait for acknowledgements when entries are in flight. */
#define RELAY_ACK_WAIT_MS 50
#define RELAY_MIN_LEASE_MS 300
#define RELAY_BACKOFF_MIN_MS 100
/* Room for "<ms>-<seq>" with two 64-bit numbers. */
#define RELAY_ID_BUFSZ 48

/* A stream entry id, "<ms>-<seq>". */
typedef struct relay_id {
    uint64_t ms;
    uint64_t seq;
} relay_id_t;

/* An entry produced and awaiting its delivery report. */
typedef struct relay_pending {
    relay_id_t id;
    int64_t ord; /* ordinal in the stream (entries ever added up to it), -1 unknown */
    bool acked;
} relay_pending_t;

/* What a delivery report refers to; freed by the delivery callback. */
typedef struct relay_msg {
    size_t town;
    uint32_t gen;
    uint64_t seq;
} relay_msg_t;

typedef struct relay_town {
    const char *name;
    char events_key[TTB_KEY_BUFSZ];
    bool held;          /* we hold the lease (as far as we know) */
    bool verify;        /* re-check the lease (after a reconnect) before anything else */
    bool gap_unknown_logged; /* a gap of unknown size was reported for this holding */
    bool has_gap_end;   /* gap_end is set */
    relay_id_t gap_end; /* the entry after the last gap reported: not again after a rewind */
    bool pos_real;      /* pos is an entry that existed (a cursor or an entry read) */
    uint32_t gen;       /* bumped whenever in-flight bookkeeping is dropped */
    relay_id_t pos;     /* last entry produced, or the cursor */
    int64_t pos_ord;
    bool has_cursor;    /* acked is a real position */
    relay_id_t acked;   /* everything up to here is acknowledged */
    int64_t acked_ord;
    bool cursor_dirty;  /* acked moved since the cursor was last written */
    bool has_persisted; /* persisted is what the cursor key held when we last wrote or read it */
    relay_id_t persisted;
    relay_pending_t *ring;
    size_t ring_cap, ring_head, ring_len;
    uint64_t next_seq;  /* sequence number of the next message produced */
    int64_t next_acquire_ms;
    int64_t last_renew_ms;
    ttb_backoff_t backoff; /* after a delivery failure: no reads before it is due */
    bool failing;       /* a delivery failure was logged and not yet recovered */
    int64_t lag;
    rd_kafka_t *txn;    /* exactly_once: the town's transactional producer, while held */
    bool txn_open;
} relay_town_t;

/* One queued step of a pipeline, to route its reply. */
typedef enum relay_op_kind { OP_ACQUIRE, OP_CURSOR, OP_READ } relay_op_kind_t;
typedef struct relay_op {
    relay_op_kind_t kind;
    size_t town;
    int64_t sent_ms;
    bool renew;       /* OP_READ: the lease's TTL is extended */
    size_t count;     /* OP_READ: entries asked for */
    relay_id_t cursor; /* OP_CURSOR: the position written */
} relay_op_t;

struct ttb_relay {
    const ttb_config_t *config;
    rd_kafka_t *rk;
    ttb_store_t *store;
    relay_town_t *towns;
    size_t ntowns;
    relay_op_t *ops;
    const char **wait_argv;            /* XREAD arguments, sized for every town */
    char (*wait_pos)[RELAY_ID_BUFSZ];  /* their positions */
    char instance[160];
    int lease_ms;
    int backoff_max_ms;
    ttb_backoff_t backoff; /* Redis */
    bool redis_down_logged;
    bool kafka_error_logged;
    bool stopping; /* delivery failures during the final purge are expected */
    bool fatal;    /* librdkafka reported a fatal error: the producer must be replaced */
    pthread_t thread;
    bool running;
    atomic_bool stop;
    _Atomic int64_t deadline_ms; /* when stopping: everything done by then */
};


/* ---- stream ids ---------------------------------------------------------- */

static bool relay_id_parse(const char *s, size_t len, relay_id_t *out) {
    relay_id_t id = {0, 0};
    size_t i = 0;
    if (len == 0 || s[0] < '0' || s[0] > '9') return false;
    while (i < len && s[i] >= '0' && s[i] <= '9') id.ms = id.ms * 10 + (uint64_t)(s[i++] - '0');
    if (i < len) {
        if (s[i++] != '-' || i == len) return false;
        while (i < len && s[i] >= '0' && s[i] <= '9')
            id.seq = id.seq * 10 + (uint64_t)(s[i++] - '0');
        if (i != len) return false;
    }
    *out = id;
    return true;
}

static int relay_id_cmp(relay_id_t a, relay_id_t b) {
    if (a.ms != b.ms) return a.ms < b.ms ? -1 : 1;
    if (a.seq != b.seq) return a.seq < b.seq ? -1 : 1;
    return 0;
}

static const char *relay_id_str(relay_id_t id, char buf[RELAY_ID_BUFSZ]) {
    snprintf(buf, RELAY_ID_BUFSZ, "%" PRIu64 "-%" PRIu64, id.ms, id.seq);
    return buf;
}

/* ---- per-town bookkeeping ------------------------------------------------ */

/* Forgets everything in flight; their late delivery reports are ignored
 * (the generation no longer matches) and the town resumes at its cursor. */
static void relay_town_rewind(relay_town_t *t) {
    t->gen++;
    t->ring_len = 0;
    t->ring_head = 0;
    t->pos = t->acked;
    t->pos_ord = t->acked_ord;
    t->pos_real = t->has_cursor;
}

static void relay_town_txn_free(relay_town_t *t);

static void relay_town_drop(ttb_relay_t *relay, relay_town_t *t, const char *why) {
    if (t->held) ttb_log_warn("relay stopped for town", "town", t->name, "reason", why);
    relay_town_txn_free(t);
    relay_town_rewind(t);
    t->held = false;
    t->verify = false;
    t->cursor_dirty = false;
    t->lag = 0;
    t->next_acquire_ms = ttb_clock_ms() + relay->lease_ms / 3;
}

static int relay_ring_push(relay_town_t *t, relay_id_t id, int64_t ord) {
    if (t->ring_len == t->ring_cap) {
        size_t cap = t->ring_cap ? t->ring_cap * 2 : 64;
        relay_pending_t *ring = malloc(cap * sizeof(*ring));
        if (!ring) return TTB_ERR_NOMEM;
        for (size_t i = 0; i < t->ring_len; i++)
            ring[i] = t->ring[(t->ring_head + i) % t->ring_cap];
        free(t->ring);
        t->ring = ring;
        t->ring_cap = cap;
        t->ring_head = 0;
    }
    relay_pending_t *p = &t->ring[(t->ring_head + t->ring_len) % t->ring_cap];
    p->id = id;
    p->ord = ord;
    p->acked = false;
    t->ring_len++;
    t->next_seq++;
    return 0;
}

static size_t relay_in_flight(const ttb_relay_t *relay) {
    size_t n = 0;
    for (size_t i = 0; i < relay->ntowns; i++) n += relay->towns[i].ring_len;
    return n;
}

static void relay_publish_lag(const ttb_relay_t *relay) {
    int64_t lag = 0;
    for (size_t i = 0; i < relay->ntowns; i++)
        if (relay->towns[i].held) lag += relay->towns[i].lag;
    atomic_store_explicit(&ttb_metrics.relay_lag, lag, memory_order_relaxed);
}

/* ---- librdkafka callbacks (served by rd_kafka_poll on the relay thread) --- */

static void relay_dr_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    ttb_relay_t *relay = opaque;
    relay_msg_t *msg = m->_private;
    if (!msg) return;
    relay_town_t *t = msg->town < relay->ntowns ? &relay->towns[msg->town] : NULL;
    if (!t || msg->gen != t->gen || !t->held) {
        free(msg);
        return;
    }
    uint64_t first_seq = t->next_seq - t->ring_len;
    if (msg->seq < first_seq || msg->seq - first_seq >= t->ring_len) {
        free(msg);
        return;
    }
    size_t idx = (size_t)(msg->seq - first_seq);
    free(msg);

    if (m->err) {
        if (relay->stopping) return;
        /* Order matters more than progress: everything from the failed entry
         * on is produced again, after a pause, from the last acknowledged one. */
        if (!t->failing)
            ttb_log_warn("relay delivery failed; will retry from the cursor", "town", t->name,
                         "error", rd_kafka_err2str(m->err));
        t->failing = true;
        ttb_backoff_fail(&t->backoff); /* Kafka refused: no reads of this town for a while */
        relay_town_rewind(t);
        return;
    }

    if (t->failing) {
        ttb_log_info("relay delivery recovered", "town", t->name);
        t->failing = false;
    }
    ttb_backoff_reset(&t->backoff);
    relay->kafka_error_logged = false;
    t->ring[(t->ring_head + idx) % t->ring_cap].acked = true;
    while (t->ring_len > 0 && t->ring[t->ring_head].acked) {
        relay_pending_t *p = &t->ring[t->ring_head];
        t->acked = p->id;
        t->acked_ord = p->ord;
        t->has_cursor = true;
        t->cursor_dirty = true;
        t->ring_head = (t->ring_head + 1) % t->ring_cap;
        t->ring_len--;
        atomic_fetch_add_explicit(&ttb_metrics.events_relayed, 1, memory_order_relaxed);
        if (t->lag > 0) t->lag--;
    }
}

static void relay_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    ttb_relay_t *relay = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        /* A town's transactional producer fails its commit instead. */
        if (rk == relay->rk) relay->fatal = true;
        return;
    }
    /* A refused login or handshake is not an outage: not ready until the
     * bridge's own check sees it mended (the bridge says so too, once). */
    ttb_kafka_security_t sec;
    if (ttb_kafka_security_note(&sec, err, reason)) ttb_metrics.kafka_security_failing = true;
    /* Brokers coming and going are retried by librdkafka; one line per outage. */
    if (!relay->kafka_error_logged)
        ttb_log_warn("relay producer error", "error", rd_kafka_err2str((rd_kafka_resp_err_t)err),
                     "reason", reason);
    relay->kafka_error_logged = true;
}

static rd_kafka_t *relay_producer_new(ttb_relay_t *relay, char *errstr, size_t errstr_size) {
    return ttb_kafka_producer_new(relay->config, "relay producer", relay_dr_cb, relay_error_cb,
                                  relay, errstr, errstr_size);
}

/* Gives up what is queued, serving the delivery reports so that every
 * message's bookkeeping is freed, then destroys the producer. */
static void relay_producer_free(ttb_relay_t *relay) {
    if (!relay->rk) return;
    bool was = relay->stopping;
    relay->stopping = true;
    rd_kafka_purge(relay->rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_flush(relay->rk, 1000);
    rd_kafka_destroy(relay->rk);
    relay->rk = NULL;
    relay->stopping = was;
}

/* ---- Redis --------------------------------------------------------------- */

/* After NOSCRIPT: the script again (a connect loads it too). */
static int relay_load_script(ttb_relay_t *relay) {
    int rc = ttb_store_load_scripts(relay->store);
    if (rc && rc != TTB_ERR_IO)
        ttb_log_error("relay script refused by redis", "error", ttb_store_errstr(relay->store));
    return rc;
}

/* Queues the relay script with @p argc arguments (op, town, instance, ...). */
static int relay_append_script(ttb_relay_t *relay, int argc, const char **argv) {
    return ttb_store_append_script(relay->store, TTB_SCRIPT_RELAY, 0, argc, argv, NULL);
}

static void relay_redis_lost(ttb_relay_t *relay) {
    if (!relay->redis_down_logged)
        ttb_log_warn("relay lost redis; retrying", "error", ttb_store_errstr(relay->store));
    relay->redis_down_logged = true;
    /* The lease may have changed hands meanwhile: ask before reading again. */
    for (size_t i = 0; i < relay->ntowns; i++)
        if (relay->towns[i].held) relay->towns[i].verify = true;
}

/* Waits up to @p ms, serving delivery reports, returning early on stop. */
static void relay_sleep(ttb_relay_t *relay, int ms) {
    int64_t until = ttb_clock_ms() + ms;
    while (!atomic_load(&relay->stop)) {
        int64_t left = until - ttb_clock_ms();
        if (left <= 0) break;
        rd_kafka_poll(relay->rk, left > 100 ? 100 : (int)left);
    }
}

static bool relay_connect(ttb_relay_t *relay) {
    char err[1024];
    /* A connect loads the script too. */
    if (ttb_store_connect(relay->store, err, sizeof(err)) == 0)
        return true; /* the backoff is reset by a pass that works, not by a connect */
    if (!relay->redis_down_logged)
        ttb_log_warn("relay cannot reach redis; retrying", "error",
                     err[0] ? err : ttb_store_errstr(relay->store));
    relay->redis_down_logged = true;
    ttb_store_disconnect(relay->store);
    ttb_backoff_fail(&relay->backoff);
    return false;
}

/* ---- producing ----------------------------------------------------------- */

static const redisReply *relay_field(const redisReply *fields, const char *name) {
    if (!fields || fields->type != REDIS_REPLY_ARRAY) return NULL;
    for (size_t i = 0; i + 1 < fields->elements; i += 2) {
        const redisReply *f = fields->element[i];
        if (f->type == REDIS_REPLY_STRING && strcmp(f->str, name) == 0 &&
            fields->element[i + 1]->type == REDIS_REPLY_STRING)
            return fields->element[i + 1];
    }
    return NULL;
}

/* A string member of a JSON object, or NULL. */
static const char *relay_json_str(json_t *doc, const char *name) {
    json_t *v = doc ? json_object_get(doc, name) : NULL;
    return json_is_string(v) ? json_string_value(v) : NULL;
}

/* Produces one entry. @returns 0, or the produce error (nothing queued). */
static rd_kafka_resp_err_t relay_produce(ttb_relay_t *relay, size_t ti, const char *id_str,
                                         const redisReply *fields) {
    relay_town_t *t = &relay->towns[ti];
    const ttb_config_t *cfg = relay->config;
    const redisReply *data = relay_field(fields, "data");
    const redisReply *type_field = relay_field(fields, "event_type");
    json_t *doc = data ? json_loadb(data->str, data->len, 0, NULL) : NULL;
    if (doc && !json_is_object(doc)) {
        json_decref(doc);
        doc = NULL;
    }
    const char *agent_id = relay_json_str(doc, "agent_id");
    const char *key = agent_id && *agent_id ? agent_id : t->name;
    const char *event_type = type_field ? type_field->str : relay_json_str(doc, "event_type");
    if (!event_type) event_type = "";

    rd_kafka_headers_t *hdrs = rd_kafka_headers_new(cfg->cloudevents ? 9 : 3);
    int hrc = ttb_kafka_header(hdrs, "tt-town", t->name);
    hrc |= ttb_kafka_header(hdrs, "tt-event-id", id_str);
    hrc |= ttb_kafka_header(hdrs, "tt-event-type", event_type);
    if (cfg->cloudevents) {
        char buf[TTB_KEY_BUFSZ + RELAY_ID_BUFSZ];
        const char *source = cfg->cloudevents_source ? cfg->cloudevents_source : "tinytown-bridge";
        hrc |= ttb_kafka_header(hdrs, "ce_specversion", "1.0");
        snprintf(buf, sizeof(buf), "%s/%s", t->name, id_str);
        hrc |= ttb_kafka_header(hdrs, "ce_id", buf);
        snprintf(buf, sizeof(buf), "io.tinytown.%s", event_type);
        hrc |= ttb_kafka_header(hdrs, "ce_type", buf);
        snprintf(buf, sizeof(buf), "%s/%s", source, t->name);
        hrc |= ttb_kafka_header(hdrs, "ce_source", buf);
        const char *time = relay_json_str(doc, "timestamp");
        if (time) hrc |= ttb_kafka_header(hdrs, "ce_time", time);
        hrc |= ttb_kafka_header(hdrs, "content-type", "application/json");
    }
    /* Transactional: acknowledged by the commit, not message by message. */
    relay_msg_t *msg = t->txn ? NULL : malloc(sizeof(*msg));
    if (hrc || (!msg && !t->txn)) {
        json_decref(doc);
        rd_kafka_headers_destroy(hdrs);
        free(msg);
        return RD_KAFKA_RESP_ERR__QUEUE_FULL; /* out of memory: back off like a full queue */
    }
    if (msg) {
        msg->town = ti;
        msg->gen = t->gen;
        msg->seq = t->next_seq;
    }
    rd_kafka_resp_err_t err =
        ttb_kafka_produce(t->txn ? t->txn : relay->rk, cfg->events_topic, key, strlen(key),
                          data ? data->str : NULL, data ? data->len : 0, hdrs, msg);
    json_decref(doc); /* the key was copied */
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_headers_destroy(hdrs);
    if (err) free(msg);
    return err;
}

/* Reports entries that left tinytown's stream before anyone relayed them:
 * the ordinals of consecutive entries the relay sees should be consecutive
 * (the outbox keeps every entry a bridge wrote, so a jump is tinytown's own
 * entries, trimmed away). @p first is the id of the entry after the gap. */
static void relay_check_gap(relay_town_t *t, relay_id_t id, int64_t ord, const char *first) {
    if (!t->pos_real) return; /* where the relay first starts, history is not a gap */
    if (t->pos_ord < 0) return; /* unknown position: the read reported it */
    /* Produced again after a failed delivery: reported already. */
    if (t->has_gap_end && relay_id_cmp(id, t->gap_end) <= 0) return;
    /* Ordinals come from Redis (and a cursor anyone could edit): compare
     * without overflowing, whatever they are. */
    if (ord < 1) return;
    int64_t lost;
    if (ord - 1 > t->pos_ord) lost = ord - 1 - t->pos_ord;
    else if (ord <= t->pos_ord) lost = ord - 1; /* the stream was recreated, counting anew */
    else return;
    if (lost <= 0) return;
    t->gap_end = id;
    t->has_gap_end = true;
    char after[RELAY_ID_BUFSZ], missing[24];
    snprintf(missing, sizeof(missing), "%" PRId64, lost);
    ttb_log_warn("relay gap: entries were trimmed before they were relayed", "town", t->name,
                 "expected_after", relay_id_str(t->pos, after), "first_available", first,
                 "missing", missing);
    atomic_fetch_add_explicit(&ttb_metrics.relay_gaps, 1, memory_order_relaxed);
}

/* ---- exactly once (kafka.exactly_once) ------------------------------------ */
/*
 * A held town gets its own transactional producer, transactional.id
 * "tinytown-bridge.<group>.relay.<town>": whoever takes the town over fences
 * the previous holder in Kafka itself (init_transactions) and aborts what it
 * left open. Each read's events are produced in one transaction together
 * with the town's position (the last entry's id and ordinal, as the
 * metadata of an offset committed for the group "<group>.relay.<town>" on
 * the events topic's partition 0), so the position read_committed readers
 * can see is exactly the last event they can see. A new holder starts from
 * that position, read back after fencing, not from the Redis cursor, which
 * is still written after each commit so the outbox can be trimmed. Any
 * failure drops the town; it is taken up again from Kafka's position.
 */

static void relay_town_txn_free(relay_town_t *t) {
    if (!t->txn) return;
    /* Whatever is open is aborted by the next holder's init_transactions
     * (or when transaction.timeout.ms passes). */
    rd_kafka_purge(t->txn, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(t->txn, 0);
    rd_kafka_destroy(t->txn);
    t->txn = NULL;
    t->txn_open = false;
}

/* @p ms, at most half the stop's bound (a call under way when the stop
 * comes delays it by that), or what is left of the bound once stopping. */
static int relay_kafka_timeout(const ttb_relay_t *relay, int ms) {
    int half = relay->config->shutdown_timeout_ms / 2;
    if (half < 1000) half = 1000;
    if (ms > half) ms = half;
    if (!atomic_load(&relay->stop)) return ms;
    int64_t left = atomic_load(&relay->deadline_ms) - ttb_clock_ms();
    return left < 1 ? 1 : left < ms ? (int)left : ms;
}

static void relay_town_group(const ttb_relay_t *relay, const relay_town_t *t, char *buf,
                             size_t size) {
    snprintf(buf, size, "%s.relay.%s", relay->config->group_id, t->name);
}

/* Reads the town's position from its group's committed offset (read
 * committed: an open transaction on it is waited for). @returns 0 (with
 * *found false when there is none yet) or TTB_ERR_IO. */
static int relay_town_read_position(ttb_relay_t *relay, relay_town_t *t, bool *found,
                                    char *errstr, size_t errstr_size) {
    *found = false;
    char group[TTB_KEY_BUFSZ + 64];
    relay_town_group(relay, t, group, sizeof(group));
    rd_kafka_conf_t *conf = ttb_kafka_conf(relay->config, TTB_KAFKA_CONSUMER, errstr, errstr_size);
    if (!conf) return TTB_ERR_IO;
    if (ttb_kafka_set(conf, "group.id", group, errstr, errstr_size) ||
        ttb_kafka_set(conf, "isolation.level", "read_committed", errstr, errstr_size) ||
        ttb_kafka_set(conf, "enable.auto.commit", "false", errstr, errstr_size)) {
        rd_kafka_conf_destroy(conf);
        return TTB_ERR_IO;
    }
    char why[256];
    rd_kafka_t *c = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!c) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "position reader: %s", why);
        return TTB_ERR_IO;
    }
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_add(list, relay->config->events_topic, 0);
    rd_kafka_resp_err_t err = rd_kafka_committed(c, list, relay_kafka_timeout(relay, 30000));
    if (!err) err = tp->err;
    int rc = 0;
    if (err) {
        snprintf(errstr, errstr_size, "reading the position: %s", rd_kafka_err2str(err));
        rc = TTB_ERR_IO;
    } else if (tp->offset >= 0 && tp->metadata && tp->metadata_size > 0) {
        /* "<id> <ordinal>", the ordinal "-" when unknown */
        char md[2 * RELAY_ID_BUFSZ];
        size_t len = tp->metadata_size < sizeof(md) - 1 ? tp->metadata_size : sizeof(md) - 1;
        memcpy(md, tp->metadata, len);
        md[len] = '\0';
        char *space = strchr(md, ' ');
        relay_id_t id;
        if (space && relay_id_parse(md, (size_t)(space - md), &id)) {
            char *end;
            long long ord = strtoll(space + 1, &end, 10);
            t->acked = id;
            t->acked_ord = end != space + 1 && *end == '\0' && ord >= 0 ? ord : -1;
            t->has_cursor = true;
            *found = true;
        }
    }
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_destroy_flags(c, RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE);
    return rc;
}

/* On taking a town: fences the previous holder and takes the position it
 * committed. @returns 0, or TTB_ERR_IO (the town is not taken this time). */
static int relay_town_txn_start(ttb_relay_t *relay, relay_town_t *t) {
    char txn_id[TTB_KEY_BUFSZ + 96], err[512];
    snprintf(txn_id, sizeof(txn_id), "tinytown-bridge.%s.relay.%s", relay->config->group_id,
             t->name);
    t->txn = ttb_kafka_txn_producer_new(relay->config, "relay producer", txn_id,
                                        relay_kafka_timeout(relay, 30000),
                                        relay_dr_cb, relay_error_cb, relay, err, sizeof(err));
    bool found = false;
    if (t->txn && relay_town_read_position(relay, t, &found, err, sizeof(err)) == 0) {
        char buf[RELAY_ID_BUFSZ];
        t->cursor_dirty = found; /* the Redis cursor follows Kafka's */
        if (found)
            ttb_log_info("relay position from kafka", "town", t->name, "after",
                         relay_id_str(t->acked, buf));
        return 0;
    }
    ttb_log_warn("relay cannot take the town over in kafka yet; retrying", "town", t->name,
                 "error", err);
    relay_town_txn_free(t);
    return TTB_ERR_IO;
}

/* Commits the open transaction of @p t with its position. On failure the
 * town is dropped (its events are aborted) and taken up again later. */
static void relay_town_commit(ttb_relay_t *relay, relay_town_t *t) {
    if (!t->txn_open) return;
    t->txn_open = false;
    char md[2 * RELAY_ID_BUFSZ], id[RELAY_ID_BUFSZ], why[512] = "";
    if (t->pos_ord >= 0) snprintf(md, sizeof(md), "%s %" PRId64, relay_id_str(t->pos, id), t->pos_ord);
    else snprintf(md, sizeof(md), "%s -", relay_id_str(t->pos, id));
    char group[TTB_KEY_BUFSZ + 64];
    relay_town_group(relay, t, group, sizeof(group));
    rd_kafka_topic_partition_list_t *list = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_t *tp =
        rd_kafka_topic_partition_list_add(list, relay->config->events_topic, 0);
    tp->offset = t->pos_ord >= 0 ? t->pos_ord : 0;
    tp->metadata = strdup(md);
    tp->metadata_size = tp->metadata ? strlen(md) : 0;
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata_new(group);
    bool fatal = false;
    int rc = ttb_kafka_txn_commit(t->txn, list, cgmd, relay_kafka_timeout(relay, 10000), &fatal,
                                  why, sizeof(why));
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(list);
    rd_kafka_poll(t->txn, 0); /* the flushed messages' reports */
    if (rc) {
        relay_town_drop(relay, t, why);
        return;
    }
    size_t n = t->ring_len;
    t->ring_len = 0;
    t->ring_head = 0;
    t->acked = t->pos;
    t->acked_ord = t->pos_ord;
    t->has_cursor = true;
    t->cursor_dirty = true;
    atomic_fetch_add_explicit(&ttb_metrics.events_relayed, n, memory_order_relaxed);
    t->lag = t->lag > (int64_t)n ? t->lag - (int64_t)n : 0;
}

/* Handles a read's reply: the merged entries of tinytown's stream and the
 * outbox, each checked for a gap before it and produced in order.
 * @returns the number of entries produced; *more when the read was full and
 * all of it was produced (more is waiting). */
static size_t relay_read_entries(ttb_relay_t *relay, size_t ti, const redisReply *r, bool *more) {
    relay_town_t *t = &relay->towns[ti];
    *more = false;
    if (r->elements < 5 || r->element[1]->type != REDIS_REPLY_INTEGER ||
        r->element[2]->type != REDIS_REPLY_INTEGER || r->element[4]->type != REDIS_REPLY_ARRAY) {
        ttb_log_warn("relay read: unexpected reply", "town", t->name);
        return 0;
    }
    int64_t added = r->element[1]->integer;
    const redisReply *first_r = r->element[3];
    const redisReply *entries = r->element[4];

    /* A cursor without its ordinal (written by hand, or by a bridge from
     * before ordinals) cannot tell trimmed entries from relayed ones. */
    relay_id_t first;
    if (t->pos_real && t->pos_ord < 0 && first_r->type == REDIS_REPLY_STRING &&
        relay_id_parse(first_r->str, first_r->len, &first) && relay_id_cmp(first, t->pos) > 0 &&
        !t->gap_unknown_logged) {
        char after[RELAY_ID_BUFSZ];
        ttb_log_warn("relay gap: entries were trimmed before they were relayed", "town", t->name,
                     "expected_after", relay_id_str(t->pos, after), "first_available",
                     first_r->str, "missing", "unknown");
        atomic_fetch_add_explicit(&ttb_metrics.relay_gaps, 1, memory_order_relaxed);
        t->gap_unknown_logged = true;
    }

    size_t produced = 0;
    for (size_t i = 0; i < entries->elements; i++) {
        const redisReply *e = entries->element[i];
        relay_id_t id;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 4 ||
            e->element[0]->type != REDIS_REPLY_STRING ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            !relay_id_parse(e->element[0]->str, e->element[0]->len, &id)) {
            ttb_log_warn("relay read: unexpected entry", "town", t->name);
            return produced;
        }
        if (relay_id_cmp(id, t->pos) <= 0 && t->pos_real) continue;
        if (t->ring_len >= RELAY_MAX_IN_FLIGHT) return produced;
        int64_t ord = e->element[1]->integer;
        if (t->txn && !t->txn_open) {
            rd_kafka_error_t *error = rd_kafka_begin_transaction(t->txn);
            if (error) {
                ttb_log_warn("relay cannot begin a transaction", "town", t->name, "error",
                             rd_kafka_error_string(error));
                rd_kafka_error_destroy(error);
                relay_town_drop(relay, t, "no transaction");
                return produced;
            }
            t->txn_open = true;
        }
        rd_kafka_resp_err_t err = relay_produce(relay, ti, e->element[0]->str, e->element[3]);
        if (err) {
            /* Not queued: this entry is read again next time, after a pause. */
            if (!relay->kafka_error_logged)
                ttb_log_warn("relay cannot queue events", "town", t->name, "error",
                             rd_kafka_err2str(err));
            relay->kafka_error_logged = true;
            ttb_backoff_fail(&t->backoff); /* Kafka refused: no reads of this town for a while */
            return produced;
        }
        relay_check_gap(t, id, ord, e->element[0]->str);
        if (relay_ring_push(t, id, ord)) {
            /* The message is out; without its slot its report is ignored, so
             * drop the in-flight state and resume from the cursor instead. */
            relay_town_rewind(t);
            ttb_backoff_fail(&t->backoff);
            return produced;
        }
        t->pos = id;
        t->pos_ord = ord;
        t->pos_real = true;
        produced++;
    }
    *more = r->element[2]->integer != 0;
    t->lag = (t->pos_ord >= 0 && added >= t->pos_ord ? added - t->pos_ord : 0) +
             (int64_t)t->ring_len;
    return produced;
}

/* A read's entries, committed with the town's position when exactly once. */
static size_t relay_handle_read(ttb_relay_t *relay, size_t ti, const redisReply *r, bool *more) {
    size_t produced = relay_read_entries(relay, ti, r, more);
    relay_town_t *t = &relay->towns[ti];
    if (t->txn_open) relay_town_commit(relay, t);
    if (!t->held) *more = false;
    return produced;
}

/* Takes over a town from its persisted cursor (or from the start of the stream). */
static void relay_town_adopt(ttb_relay_t *relay, relay_town_t *t, const redisReply *cursor,
                             const redisReply *ordinal) {
    t->held = true;
    t->verify = false;
    t->failing = false;
    t->gap_unknown_logged = false;
    t->has_gap_end = false;
    ttb_backoff_reset(&t->backoff);
    t->cursor_dirty = false;
    relay_id_t id = {0, 0};
    t->has_cursor =
        cursor->type == REDIS_REPLY_STRING && relay_id_parse(cursor->str, cursor->len, &id);
    t->acked = id;
    t->acked_ord = -1;
    t->persisted = id;
    t->has_persisted = t->has_cursor;
    if (t->has_cursor && ordinal->type == REDIS_REPLY_STRING) {
        char *end;
        long long v = strtoll(ordinal->str, &end, 10);
        /* Beyond 2^53 entries is no stream's history, only an edited key. */
        if (end != ordinal->str && *end == '\0' && v >= 0 && v < (1LL << 53)) t->acked_ord = v;
    }
    if (relay->config->exactly_once && relay_town_txn_start(relay, t)) {
        t->held = false; /* asked again after a while; the lease is still ours */
        t->next_acquire_ms = ttb_clock_ms() + relay->lease_ms / 3;
        return;
    }
    relay_town_rewind(t); /* from the cursor, with its ordinal re-learnt on the first read */
    char buf[RELAY_ID_BUFSZ];
    ttb_log_info("relaying town", "town", t->name, "from",
                 t->has_cursor ? relay_id_str(t->acked, buf) : "start", "instance",
                 relay->instance);
}

/* Whether the cursor key still holds what this relay last wrote or read. */
static bool relay_cursor_unmoved(const relay_town_t *t, const redisReply *cursor) {
    relay_id_t id;
    if (cursor->type != REDIS_REPLY_STRING) return !t->has_persisted;
    return t->has_persisted && relay_id_parse(cursor->str, cursor->len, &id) &&
           relay_id_cmp(id, t->persisted) == 0;
}

static void relay_handle_reply(ttb_relay_t *relay, const relay_op_t *op, const redisReply *r,
                               size_t *produced, bool *more, bool *noscript) {
    relay_town_t *t = &relay->towns[op->town];
    if (ttb_reply_is_noscript(r)) {
        *noscript = true;
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
        r->element[0]->type != REDIS_REPLY_INTEGER) {
        ttb_log_warn("relay: unexpected redis reply", "town", t->name, "error",
                     r->type == REDIS_REPLY_ERROR ? r->str : "not an array");
        return;
    }
    long long status = r->element[0]->integer;
    switch (op->kind) {
    case OP_ACQUIRE:
        if (status == 0) {
            if (t->held) relay_town_drop(relay, t, "lease held by another instance");
            t->next_acquire_ms = op->sent_ms + relay->lease_ms / 3;
        } else if (t->held && (status == 2 || (r->elements >= 3 &&
                                                 relay_cursor_unmoved(t, r->element[1])))) {
            /* Still ours, or lapsed (a long outage) with nobody having moved
             * the cursor since: what we know in memory is still right. */
            t->verify = false;
            t->last_renew_ms = op->sent_ms;
        } else if (r->elements >= 3) {
            if (t->held) relay_town_drop(relay, t, "lease expired meanwhile");
            relay_town_adopt(relay, t, r->element[1], r->element[2]);
            t->last_renew_ms = op->sent_ms;
        }
        break;
    case OP_CURSOR:
        if (status == 0) {
            relay_town_drop(relay, t, "lease lost");
        } else {
            t->persisted = op->cursor;
            t->has_persisted = true;
            if (relay_id_cmp(t->acked, op->cursor) == 0) t->cursor_dirty = false;
        }
        break;
    case OP_READ:
        if (!t->held || t->verify) break; /* dropped by an earlier reply of this pipeline */
        if (status == 0) {
            relay_town_drop(relay, t, "lease lost");
            break;
        }
        if (op->renew) t->last_renew_ms = op->sent_ms;
        *produced += relay_handle_read(relay, op->town, r, more);
        break;
    }
}

/* One pass: lease steps, cursor writes and reads for every town in one
 * pipeline. @returns entries produced, or -1 when Redis was lost. */
static long relay_pass(ttb_relay_t *relay, bool *full_batch) {
    int64_t now = ttb_clock_ms();
    size_t nops = 0;
    char lease_ms[24];
    snprintf(lease_ms, sizeof(lease_ms), "%d", relay->lease_ms);
    *full_batch = false;

    for (size_t i = 0; i < relay->ntowns; i++) {
        relay_town_t *t = &relay->towns[i];
        relay_op_t *op = &relay->ops[nops];
        op->town = i;
        op->sent_ms = now;
        op->renew = false;
        if (!t->held || t->verify) {
            if (!t->verify && now < t->next_acquire_ms) continue;
            const char *argv[] = {"acquire", t->name, relay->instance, lease_ms};
            if (relay_append_script(relay, 4, argv)) return -1;
            op->kind = OP_ACQUIRE;
            nops++;
            continue;
        }
        if (t->cursor_dirty) {
            char id[RELAY_ID_BUFSZ], ord[24] = "";
            if (t->acked_ord >= 0) snprintf(ord, sizeof(ord), "%" PRId64, t->acked_ord);
            const char *argv[] = {"cursor", t->name, relay->instance, relay_id_str(t->acked, id),
                                  ord};
            if (relay_append_script(relay, 5, argv)) return -1;
            op->kind = OP_CURSOR;
            op->cursor = t->acked;
            op = &relay->ops[++nops];
            op->town = i;
            op->sent_ms = now;
        }
        /* Reads double as the lease check; with count 0 (backing off or at
         * capacity) they still keep the lease alive. */
        size_t room = RELAY_MAX_IN_FLIGHT - t->ring_len;
        size_t count = !ttb_backoff_due(&t->backoff) ? 0 : room < RELAY_READ_COUNT ? room : RELAY_READ_COUNT;
        char pos[RELAY_ID_BUFSZ], pos_ord[24] = "", count_s[16];
        snprintf(count_s, sizeof(count_s), "%zu", count);
        if (t->pos_ord >= 0) snprintf(pos_ord, sizeof(pos_ord), "%" PRId64, t->pos_ord);
        op->renew = now - t->last_renew_ms >= relay->lease_ms / 3;
        const char *argv[] = {"read",  t->name,   relay->instance,       lease_ms,
                              op->renew ? "1" : "0", relay_id_str(t->pos, pos), pos_ord,
                              count_s};
        if (relay_append_script(relay, 8, argv)) return -1;
        op->kind = OP_READ;
        op->count = count;
        nops++;
    }

    size_t produced = 0;
    bool noscript = false;
    for (size_t k = 0; k < nops; k++) {
        redisReply *r;
        if (ttb_store_reply(relay->store, &r)) return -1;
        bool more = false;
        relay_handle_reply(relay, &relay->ops[k], r, &produced, &more, &noscript);
        /* A full batch means more is waiting: read again without blocking. */
        if (more) *full_batch = true;
        freeReplyObject(r);
    }
    if (noscript && relay_load_script(relay)) return -1;
    relay_publish_lag(relay);
    return (long)produced;
}

/* Idle: block on the held streams until something is added (or a short
 * timeout, so leases, cursors and the stop flag are looked after). */
static int relay_wait(ttb_relay_t *relay) {
    const char **argv = relay->wait_argv;
    int64_t now = ttb_clock_ms();
    int64_t wake = now + RELAY_IDLE_BLOCK_MS;
    int argc = 0, n = 0;
    argv[argc++] = "XREAD";
    argv[argc++] = "BLOCK";
    argv[argc++] = "0"; /* replaced below */
    argv[argc++] = "COUNT";
    argv[argc++] = "1";
    argv[argc++] = "STREAMS";
    for (size_t i = 0; i < relay->ntowns; i++) {
        relay_town_t *t = &relay->towns[i];
        if (!t->held || t->verify) continue;
        if (!ttb_backoff_due(&t->backoff)) {
            if (t->backoff.retry_at_ms < wake) wake = t->backoff.retry_at_ms;
            continue;
        }
        if (t->ring_len >= RELAY_MAX_IN_FLIGHT) continue;
        argv[6 + n++] = t->events_key;
    }
    for (size_t i = 0; i < relay->ntowns; i++) {
        const relay_town_t *t = &relay->towns[i];
        if (!t->held && t->next_acquire_ms < wake) wake = t->next_acquire_ms;
    }
    int64_t block = wake - now;
    if (block < 1) return 0;
    if (n == 0 || relay_in_flight(relay) > 0) {
        /* Acknowledgements, not Redis, are what we wait for. */
        rd_kafka_poll(relay->rk, (int)(block < RELAY_ACK_WAIT_MS ? block : RELAY_ACK_WAIT_MS));
        return 0;
    }
    argc += n;
    for (size_t i = 0, k = 0; i < relay->ntowns; i++) {
        relay_town_t *t = &relay->towns[i];
        if (k < (size_t)n && argv[6 + k] == t->events_key)
            argv[argc++] = relay_id_str(t->pos, relay->wait_pos[k++]);
    }
    char block_s[24];
    snprintf(block_s, sizeof(block_s), "%" PRId64, block);
    argv[2] = block_s;
    redisReply *r;
    if (ttb_store_append(relay->store, argc, argv, NULL) || ttb_store_reply(relay->store, &r))
        return -1;
    bool error = r->type == REDIS_REPLY_ERROR;
    freeReplyObject(r);
    if (error) rd_kafka_poll(relay->rk, (int)block); /* e.g. a key of the wrong type */
    return 0;
}

/* Waits for what is in flight (bounded), writes the cursors and gives the
 * leases back so another bridge can take over at once. */
static void relay_shutdown(ttb_relay_t *relay) {
    /* What is left of the bound when we got here, less a little for the
     * cursor and the lease: they matter more than the last acknowledgements. */
    int64_t deadline = atomic_load(&relay->deadline_ms);
    int64_t reserve = (deadline - ttb_clock_ms()) / 5;
    while (relay_in_flight(relay) > 0 && !relay->fatal && ttb_clock_ms() < deadline - reserve)
        rd_kafka_poll(relay->rk, 20);
    ttb_store_set_deadline(relay->store, deadline);
    size_t left = relay_in_flight(relay);

    bool any = false;
    for (size_t i = 0; i < relay->ntowns; i++) any |= relay->towns[i].held;
    if (any && !ttb_store_connected(relay->store)) relay_connect(relay);
    size_t nops = 0;
    if (any && ttb_store_connected(relay->store)) {
        for (size_t i = 0; i < relay->ntowns; i++) {
            relay_town_t *t = &relay->towns[i];
            if (!t->held) continue;
            char id[RELAY_ID_BUFSZ] = "", ord[24] = "";
            if (t->cursor_dirty) {
                relay_id_str(t->acked, id);
                if (t->acked_ord >= 0) snprintf(ord, sizeof(ord), "%" PRId64, t->acked_ord);
            }
            const char *argv[] = {"release", t->name, relay->instance, id, ord};
            if (relay_append_script(relay, 5, argv)) break;
            nops++;
        }
        if (ttb_store_skip(relay->store, nops) == 0) {
            for (size_t i = 0; i < relay->ntowns; i++) relay->towns[i].cursor_dirty = false;
        } else {
            ttb_log_warn("relay could not save its cursors; the next holder repeats a little",
                         "error", ttb_store_errstr(relay->store));
        }
    }
    for (size_t i = 0; i < relay->ntowns; i++) {
        relay->towns[i].held = false;
        relay_town_txn_free(&relay->towns[i]);
    }
    char left_s[24];
    snprintf(left_s, sizeof(left_s), "%zu", left);
    ttb_log_info("relay stopped", "unacknowledged", left_s);
}

static void *relay_main(void *arg) {
    ttb_relay_t *relay = arg;
    while (!atomic_load(&relay->stop)) {
        if (relay->fatal) {
            char why[512] = "";
            rd_kafka_fatal_error(relay->rk, why, sizeof(why));
            ttb_log_error("relay producer failed fatally; starting a new one", "error", why);
            relay_producer_free(relay);
            char err[512];
            relay->rk = relay_producer_new(relay, err, sizeof(err));
            relay->fatal = false;
            for (size_t i = 0; i < relay->ntowns; i++) relay_town_rewind(&relay->towns[i]);
            if (!relay->rk) {
                ttb_log_error("relay cannot create a producer; stopping", "error", err);
                break;
            }
        }
        if (!ttb_store_connected(relay->store) && !relay_connect(relay)) {
            relay_sleep(relay, ttb_backoff_left_ms(&relay->backoff));
            continue;
        }
        rd_kafka_poll(relay->rk, 0);
        bool full = false;
        long produced = relay_pass(relay, &full);
        if (produced < 0) {
            relay_redis_lost(relay);
            ttb_store_disconnect(relay->store);
            ttb_backoff_fail(&relay->backoff);
            relay_sleep(relay, ttb_backoff_left_ms(&relay->backoff));
            continue;
        }
        if (relay->redis_down_logged) ttb_log_info("relay: redis available again");
        relay->redis_down_logged = false;
        ttb_backoff_reset(&relay->backoff);
        if (produced > 0 || full) {
            rd_kafka_poll(relay->rk, 0);
            continue;
        }
        if (relay_wait(relay) < 0) relay_redis_lost(relay);
    }
    if (relay->rk) relay_shutdown(relay);
    return NULL;
}

/* ---- public -------------------------------------------------------------- */

ttb_relay_t *ttb_relay_new(const ttb_config_t *config, char *errstr, size_t errstr_size) {
    if (!config || config->ntowns == 0 || !config->events_topic || !config->brokers) {
        snprintf(errstr, errstr_size, "relay: towns, events topic and brokers are required");
        return NULL;
    }
    ttb_relay_t *relay = calloc(1, sizeof(*relay));
    if (!relay) goto nomem;
    relay->config = config;
    atomic_init(&relay->stop, false);
    atomic_init(&relay->deadline_ms, 0);
    relay->lease_ms = config->relay_lease_ms > 0 ? config->relay_lease_ms : 10000;
    if (relay->lease_ms < RELAY_MIN_LEASE_MS) relay->lease_ms = RELAY_MIN_LEASE_MS;
    relay->backoff_max_ms = config->redis_backoff_max_ms > 0 ? config->redis_backoff_max_ms : 5000;
    relay->ntowns = config->ntowns;
    relay->towns = calloc(config->ntowns, sizeof(*relay->towns));
    ttb_backoff_init(&relay->backoff, RELAY_BACKOFF_MIN_MS, relay->backoff_max_ms);
    for (size_t i = 0; relay->towns && i < config->ntowns; i++)
        ttb_backoff_init(&relay->towns[i].backoff, RELAY_BACKOFF_MIN_MS, relay->backoff_max_ms);
    relay->ops = calloc(2 * config->ntowns + 1, sizeof(*relay->ops));
    relay->wait_argv = calloc(6 + 2 * config->ntowns, sizeof(*relay->wait_argv));
    relay->wait_pos = calloc(config->ntowns, sizeof(*relay->wait_pos));
    relay->store = ttb_store_new(&config->redis);
    if (relay->store) ttb_store_use_scripts(relay->store, TTB_SCRIPT_BIT(TTB_SCRIPT_RELAY));
    if (!relay->towns || !relay->ops || !relay->wait_argv || !relay->wait_pos || !relay->store)
        goto nomem;
    for (size_t i = 0; i < config->ntowns; i++) {
        relay_town_t *t = &relay->towns[i];
        t->name = config->towns[i];
        ttb_key_events(t->events_key, t->name);
        t->acked_ord = -1;
        relay_town_rewind(t);
    }

    /* hostname:pid:random, so that a restarted process never mistakes the
     * lease of its previous life for its own. */
    char host[64] = "localhost";
    gethostname(host, sizeof(host) - 1);
    host[sizeof(host) - 1] = '\0';
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
        rnd = (uint32_t)ttb_clock_ms() ^ (uint32_t)getpid();
    snprintf(relay->instance, sizeof(relay->instance), "%s:%ld:%08x", host, (long)getpid(), rnd);

    relay->rk = relay_producer_new(relay, errstr, errstr_size);
    if (!relay->rk) {
        ttb_relay_free(relay);
        return NULL;
    }
    return relay;
nomem:
    snprintf(errstr, errstr_size, "relay: out of memory");
    ttb_relay_free(relay);
    return NULL;
}

int ttb_relay_start(ttb_relay_t *relay) {
    if (relay->running) return 0;
    atomic_store(&relay->stop, false);
    if (pthread_create(&relay->thread, NULL, relay_main, relay) != 0) return TTB_ERR_NOMEM;
    relay->running = true;
    return 0;
}

void ttb_relay_request_stop(ttb_relay_t *relay) {
    if (!relay || atomic_load(&relay->stop)) return;
    int timeout = relay->config->shutdown_timeout_ms > 0 ? relay->config->shutdown_timeout_ms
                                                         : 10000;
    atomic_store(&relay->deadline_ms, ttb_clock_ms() + timeout);
    atomic_store(&relay->stop, true);
}

void ttb_relay_stop(ttb_relay_t *relay) {
    if (!relay || !relay->running) return;
    ttb_relay_request_stop(relay);
    pthread_join(relay->thread, NULL);
    relay->running = false;
}

void ttb_relay_free(ttb_relay_t *relay) {
    if (!relay) return;
    ttb_relay_stop(relay);
    relay_producer_free(relay);
    ttb_store_free(relay->store);
    if (relay->towns)
        for (size_t i = 0; i < relay->ntowns; i++) {
            relay_town_txn_free(&relay->towns[i]);
            free(relay->towns[i].ring);
        }
    free(relay->towns);
    free(relay->ops);
    free(relay->wait_argv);
    free(relay->wait_pos);
    free(relay);
}
