/* SPDX-License-Identifier: MIT */
/*
 * The command loop. Each pass: poll up to a batch of records, parse them,
 * apply the valid ones through the agent service in one call, produce every
 * result that is ready, serve delivery reports, re-check pending waits, and
 * store the offsets that became safe.
 *
 * Offsets: every record joins its partition's FIFO when polled and is "done"
 * when all it produced (a result, perhaps a dead letter) is acknowledged by
 * the broker. The stored offset of a partition is the first record not done,
 * so a slow `wait` holds its partition's committed offset back (not its
 * processing) and a crash redelivers at most what was not acknowledged.
 * librdkafka's auto-commit ships stored offsets; revocation and shutdown
 * commit synchronously.
 */
#include "tinytown_bridge/bridge.h"

#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/kafka.h"
#include "tinytown_bridge/log.h"
#include "tinytown_bridge/metrics.h"
#include "tinytown_bridge/peers.h"
#include "tinytown_bridge/service.h"
#include "tinytown_bridge/waits.h"

typedef struct record {
    struct record *next; /* partition FIFO */
    int32_t partition;
    int64_t offset;
    uint64_t received_us;
    ttb_command_t cmd;
    ttb_code_t parse_code;
    char parse_error[256];
    ttb_outcome_t out;
    char *key, *value; /* the original record, for the dead-letter topic */
    size_t key_len, value_len;
    bool has_key;
    int deliveries;    /* produced, not yet acknowledged */
    bool produced;     /* everything it needs was produced */
    bool done;         /* ... and acknowledged */
    bool orphaned;     /* its partition was revoked: free when acknowledged */
    ttb_wait_t *wait;  /* a pending `wait`: its entry in the waits index */
    unsigned failed;   /* FAIL_* pieces Kafka refused, to produce again */
    rd_kafka_resp_err_t last_err;
    bool in_retry;     /* on the bridge's retry list */
    bool ready;        /* exactly_once: answered, its result not yet produced */
    bool committed;    /* exactly_once: its result's transaction committed */
} record_t;

enum { FAIL_RESULT = 1, FAIL_DLQ = 2 };

typedef struct partition {
    bool active;
    record_t *head, *tail;
    int64_t next_offset; /* offset after the last record taken, -1 none yet */
    /* exactly_once: the group's committed offset (-1 none) and the pending
     * waits below it, listed in its metadata, not yet taken again. */
    int64_t committed;
    int64_t *unseen;
    size_t nunseen;
} partition_t;

/* A record whose result or dead letter the broker refused for its size
 * (exactly_once: the transaction is aborted and the record taken again). */
typedef struct refused {
    int32_t partition;
    int64_t offset;
    unsigned pieces;
} refused_t;

struct ttb_bridge {
    const ttb_config_t *config;
    ttb_command_policy_t policy;
    rd_kafka_t *consumer;
    rd_kafka_t *producer;
    ttb_store_t *store;
    ttb_service_t *service;

    partition_t *parts;
    size_t nparts;

    record_t **stalled; /* parsed commands waiting for Redis */
    size_t nstalled, capstalled;
    record_t **retry;        /* records with a delivery to make again */
    size_t nretry, capretry;
    ttb_backoff_t kafka_backoff;
    bool delivery_failing;
    bool restarting_producer;
    size_t max_result_bytes; /* what the results topic and the producer accept */
    char instance[128];      /* this bridge, among its group's members */
    char *settings;          /* its answer-changing settings (peers.h) */
    uint64_t next_peers_us;
    bool peers_checked;      /* the group was compared at least once */
    bool peers_disagree;
    bool legacy_adopted;     /* first-version idempotency records moved over */
    ttb_waits_t *waits;      /* pending `wait`s, by agent */
    redisContext *watch;     /* keyspace notifications of agent and task keys */
    char **watch_patterns;   /* __keyspace@<db>__:tt:<town>:agent:* of each town, then task:* */
    bool tasks_warned;       /* said once that task notifications are refused */
    uint64_t next_watch_check_us; /* when to check that notifications are still on */
    bool watch_warned;
    uint64_t next_watch_try_us;
    uint64_t last_wait_check_us;

    int64_t in_flight;
    bool paused;         /* partitions paused (backpressure, Redis down, stopping) */
    bool redis_down;
    uint64_t redis_down_since_us;
    ttb_backoff_t redis_backoff;
    char probe_error[1024];
    bool redis_refused;      /* the outage is a refusal (NOPERM): a probe does not end it */
    uint64_t next_wait_check_us;
    uint64_t next_health_us;
    uint64_t next_lag_us;
    uint64_t next_summary_us;
    uint64_t summary_commands, summary_errors;
    bool consumer_closed;
    uint64_t stop_deadline_us; /* while stopping: everything done by then */
    void (*on_stop)(void *);
    void *on_stop_arg;
    int fatal;
    char fatal_msg[2048];
    ttb_kafka_security_t security; /* the latest SASL or TLS failure of our clients */
    bool running;                  /* past the start-up checks */
    bool security_logged;          /* the standing security failure was said */
    uint64_t next_security_check_us;

    /* kafka.exactly_once (see the section "Exactly once" below) */
    bool eos;
    char txn_id[256];
    bool txn_open;
    bool txn_failed;      /* a record of the open transaction was refused */
    bool rewind_pending;  /* positions must be read from Kafka again */
    bool txn_ready;       /* the producer's init_transactions is done */
    int txn_timeout_ms;   /* bound of one commit (or init) */
    bool leaving;         /* partitions are going: a failure needs no rewind */
    uint64_t txn_started_us;
    refused_t *refused;
    size_t nrefused, caprefused;
    uint64_t txn_commits, txn_aborts;
};

static uint64_t now_us(void) { return ttb_clock_us(); }

static int64_t wall_ms(void) { return ttb_time_to_ms(ttb_time_now()); }

/* Milliseconds until @p deadline_us (monotonic), 0 once passed. */
static int ms_left(uint64_t deadline_us) {
    uint64_t now = now_us();
    return deadline_us > now ? (int)((deadline_us - now) / 1000u) : 0;
}

static void record_free(record_t *r) {
    if (!r) return;
    ttb_command_clear(&r->cmd);
    ttb_outcome_clear(&r->out);
    free(r->key);
    free(r->value);
    free(r);
}

static int push_ptr(record_t ***items, size_t *n, size_t *cap, record_t *r) {
    if (*n == *cap) {
        size_t ncap = *cap ? *cap * 2 : 64;
        record_t **p = realloc(*items, ncap * sizeof(*p));
        if (!p) return TTB_ERR_NOMEM;
        *items = p;
        *cap = ncap;
    }
    (*items)[(*n)++] = r;
    return 0;
}

static partition_t *partition_get(ttb_bridge_t *b, int32_t p) {
    if (p < 0) return NULL;
    if ((size_t)p >= b->nparts) {
        size_t n = (size_t)p + 1;
        partition_t *np = realloc(b->parts, n * sizeof(*np));
        if (!np) return NULL;
        for (size_t i = b->nparts; i < n; i++) {
            memset(&np[i], 0, sizeof(np[i]));
            np[i].next_offset = -1;
            np[i].committed = -1;
        }
        b->parts = np;
        b->nparts = n;
    }
    return &b->parts[p];
}

static void fail_fatal(ttb_bridge_t *b, const char *msg, const char *detail) {
    if (b->fatal) return;
    b->fatal = TTB_ERR_IO;
    snprintf(b->fatal_msg, sizeof(b->fatal_msg), "%s: %s", msg, detail);
    ttb_log_error(msg, "error", detail);
}

/* ------------------------------------------------------------------------ */
/* Producing                                                                */

static void record_delivered(ttb_bridge_t *b, record_t *r);
static void eos_note_refused(ttb_bridge_t *b, const record_t *r, unsigned piece);
static void eos_settle(ttb_bridge_t *b, record_t *r);
static void eos_rewind(ttb_bridge_t *b);

/* Kafka refused the record for what it is: retrying it cannot help. */
static bool err_is_size(rd_kafka_resp_err_t err) {
    return err == RD_KAFKA_RESP_ERR_MSG_SIZE_TOO_LARGE ||
           err == RD_KAFKA_RESP_ERR_RECORD_LIST_TOO_LARGE ||
           err == RD_KAFKA_RESP_ERR_INVALID_MSG_SIZE || err == RD_KAFKA_RESP_ERR_INVALID_RECORD;
}

/* One delivery of @p r failed: it is retried (or, refused for its size,
 * answered too_large) by retry_deliveries(), never the end of the bridge. */
static void delivery_failed(ttb_bridge_t *b, record_t *r, unsigned piece,
                            rd_kafka_resp_err_t err) {
    if (b->eos) {
        /* The open transaction cannot commit now: it is aborted and what it
         * held is taken again from Kafka (eos_commit). */
        if (!b->txn_failed)
            ttb_log_warn("kafka refused a record; the transaction will be aborted", "error",
                         rd_kafka_err2str(err));
        b->txn_failed = true;
        if (err_is_size(err)) eos_note_refused(b, r, piece);
        return;
    }
    r->failed |= piece;
    r->last_err = err;
    if (!err_is_size(err)) {
        if (!b->delivery_failing)
            ttb_log_warn("kafka refused a record; retrying", "topic",
                         piece == FAIL_RESULT ? b->config->results_topic : b->config->dlq_topic,
                         "error", rd_kafka_err2str(err));
        b->delivery_failing = true;
        ttb_metrics.kafka_delivery_failing = true;
        ttb_backoff_fail(&b->kafka_backoff);
    }
    if (!r->in_retry && !push_ptr(&b->retry, &b->nretry, &b->capretry, r)) r->in_retry = true;
    if (!r->in_retry) fail_fatal(b, "out of memory", "a delivery to retry");
}

static void dr_msg_cb(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    ttb_bridge_t *b = opaque;
    record_t *r = m->_private;
    if (!r) return;
    r->deliveries--;
    if (r->orphaned) {
        if (r->deliveries == 0) record_free(r);
        return;
    }
    if (m->err == RD_KAFKA_RESP_ERR__PURGE_QUEUE || m->err == RD_KAFKA_RESP_ERR__PURGE_INFLIGHT ||
        m->err == RD_KAFKA_RESP_ERR__FATAL || b->restarting_producer)
        return; /* dropped on the way out, or by a producer we replace: produced again then */
    if (m->err) {
        bool result = strcmp(rd_kafka_topic_name(m->rkt), b->config->results_topic) == 0;
        delivery_failed(b, r, result ? FAIL_RESULT : FAIL_DLQ, m->err);
        return;
    }
    if (b->eos) {
        eos_settle(b, r);
        return;
    }
    if (b->delivery_failing) {
        ttb_log_info("kafka accepts records again");
        b->delivery_failing = false;
        ttb_metrics.kafka_delivery_failing = false;
        ttb_backoff_reset(&b->kafka_backoff);
    }
    if (r->deliveries == 0 && r->produced && !r->in_retry) record_delivered(b, r);
}

/* Produces with the queue-full retry every producer needs; takes @p hdrs. */
static rd_kafka_resp_err_t produce(ttb_bridge_t *b, const char *topic, const void *key,
                                   size_t key_len, const void *value, size_t value_len,
                                   rd_kafka_headers_t *hdrs, record_t *r) {
    for (int attempt = 0;; attempt++) {
        rd_kafka_resp_err_t err =
            ttb_kafka_produce(b->producer, topic, key, key_len, value, value_len, hdrs, r);
        if (err != RD_KAFKA_RESP_ERR__QUEUE_FULL) {
            if (!err) r->deliveries++;
            return err;
        }
        if (attempt >= 50) { /* five seconds of a full queue: retried later */
            rd_kafka_headers_destroy(hdrs);
            return err;
        }
        rd_kafka_poll(b->producer, 100);
    }
}

static const char *record_op(const record_t *r) {
    if (r->parse_code == TTB_CODE_OK) return ttb_op_name(r->cmd.op);
    return r->cmd.op_name;
}

/* Replaces the result of @p r with a too_large error that says why. */
static int record_too_large(record_t *r, const char *why) {
    char msg[384];
    bool applied = r->parse_code == TTB_CODE_OK && ttb_op_is_mutating(r->cmd.op) &&
                   r->out.code == TTB_CODE_OK;
    snprintf(msg, sizeof(msg),
             "the result has %zu bytes, %s%s; for listings, ask for pages (args.limit, "
             "args.after)",
             r->out.record_len, why, applied ? " (the change itself was applied)" : "");
    ttb_result_t res = {.id = r->cmd.id, .town = r->cmd.town, .op = record_op(r),
                        .code = TTB_CODE_TOO_LARGE, .message = msg,
                        .applied_at = ttb_time_now()};
    size_t len;
    char *record = ttb_result_encode(&res, &len);
    if (!record) return TTB_ERR_NOMEM;
    ttb_log_warn("result too large for Kafka", "id", r->cmd.id, "why", msg);
    free(r->out.record);
    r->out.code = TTB_CODE_TOO_LARGE;
    r->out.record = record;
    r->out.record_len = len;
    return 0;
}

static int produce_result(ttb_bridge_t *b, record_t *r) {
    if (r->out.code != TTB_CODE_TOO_LARGE && r->out.record_len > b->max_result_bytes) {
        char why[128];
        snprintf(why, sizeof(why), "more than the %zu Kafka accepts on %s", b->max_result_bytes,
                 b->config->results_topic);
        if (record_too_large(r, why)) return TTB_ERR_NOMEM;
    }
    rd_kafka_headers_t *h = rd_kafka_headers_new(4);
    const char *op = record_op(r);
    if (r->cmd.id) ttb_kafka_header(h, "tt-command-id", r->cmd.id);
    if (op) ttb_kafka_header(h, "tt-op", op);
    if (r->cmd.town) ttb_kafka_header(h, "tt-town", r->cmd.town);
    ttb_kafka_header(h, "tt-status", r->out.code == TTB_CODE_OK ? "ok" : "error");
    rd_kafka_resp_err_t err =
        produce(b, b->config->results_topic, r->cmd.id, r->cmd.id ? strlen(r->cmd.id) : 0,
                r->out.record, r->out.record_len, h, r);
    if (err_is_size(err) && r->out.code != TTB_CODE_TOO_LARGE) {
        if (record_too_large(r, "more than the producer may send (message.max.bytes)"))
            return TTB_ERR_NOMEM;
        return produce_result(b, r);
    }
    if (err) delivery_failed(b, r, FAIL_RESULT, err);
    return 0;
}

static int produce_dead_letter(ttb_bridge_t *b, record_t *r) {
    char partition[16], offset[24];
    snprintf(partition, sizeof(partition), "%" PRId32, r->partition);
    snprintf(offset, sizeof(offset), "%" PRId64, r->offset);
    rd_kafka_headers_t *h = rd_kafka_headers_new(5);
    ttb_kafka_header(h, "tt-error-code", ttb_code_name(r->parse_code));
    ttb_kafka_header(h, "tt-error-message", r->parse_error);
    ttb_kafka_header(h, "tt-source-topic", b->config->commands_topic);
    ttb_kafka_header(h, "tt-source-partition", partition);
    ttb_kafka_header(h, "tt-source-offset", offset);
    rd_kafka_resp_err_t err = produce(b, b->config->dlq_topic, r->has_key ? r->key : NULL,
                                      r->key_len, r->value, r->value_len, h, r);
    if (err) delivery_failed(b, r, FAIL_DLQ, err);
    else ttb_metrics.dead_letters++;
    return 0;
}

/* A SASL or TLS failure of one of our clients. At start ttb_bridge_run
 * stops on it with one line; once running it turns /readyz not-ready until
 * check_security() sees the brokers accept us again. The relay only raises
 * the flag; the line is said here, once per failure. */
static void security_failed(ttb_bridge_t *b) {
    if (!b->running) return;
    ttb_metrics.kafka_security_failing = true;
    if (b->security_logged) return;
    b->security_logged = true;
    ttb_log_error("kafka refuses the connection; not ready until it accepts it", "cause",
                  ttb_kafka_security_cause(&b->security), "error", b->security.reason);
}

static void producer_error_cb(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    (void)rk;
    ttb_bridge_t *b = opaque;
    if (ttb_kafka_security_note(&b->security, err, reason)) security_failed(b);
    else if (err != RD_KAFKA_RESP_ERR__FATAL) /* fatal: producer_restart() says it */
        ttb_log_warn("kafka producer error", "error", rd_kafka_err2str((rd_kafka_resp_err_t)err),
                     "reason", reason);
}

/* While a security failure stands: every 5 s a metadata request of at most
 * a second (a new connection's handshake and login take a few hundred ms);
 * its answer means the brokers accept us again. */
static void check_security(ttb_bridge_t *b) {
    if (!ttb_metrics.kafka_security_failing || now_us() < b->next_security_check_us) return;
    b->next_security_check_us = now_us() + 5000000u;
    ttb_kafka_security_t seen = b->security;
    b->security.err = 0;
    if (ttb_kafka_await_broker(b->producer, &b->security, 1000) == 0) {
        ttb_metrics.kafka_security_failing = false;
        b->security_logged = false;
        ttb_log_info("kafka accepts the connection again");
    } else if (!b->security.err) {
        b->security = seen;
    }
}

static rd_kafka_t *producer_new(ttb_bridge_t *b, char *errstr, size_t errstr_size) {
    if (b->eos)
        return ttb_kafka_txn_producer_new(b->config, "kafka producer", b->txn_id, 0, dr_msg_cb,
                                          producer_error_cb, b, errstr,
                                          errstr_size); /* eos_init() */
    return ttb_kafka_producer_new(b->config, "kafka producer", dr_msg_cb, producer_error_cb, b,
                                  errstr, errstr_size);
}

/* The idempotent producer failed fatally (librdkafka 2.0.2 does so after a
 * sequence desynchronisation, #4438): what it held is purged, a new one
 * takes over, and every record not yet acknowledged is produced again (a
 * result may then reach Kafka twice, with the same bytes). */
static void producer_restart(ttb_bridge_t *b) {
    char why[512] = "";
    rd_kafka_fatal_error(b->producer, why, sizeof(why));
    ttb_log_error("kafka producer failed fatally; starting a new one", "error", why);
    rd_kafka_t *old = b->producer;
    b->restarting_producer = true; /* purged reports are not failures to retry */
    rd_kafka_purge(old, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
    rd_kafka_poll(old, 0);
    rd_kafka_destroy(old);
    b->restarting_producer = false;
    b->txn_open = false;
    b->txn_ready = false;
    char err[512];
    if (!(b->producer = producer_new(b, err, sizeof(err)))) {
        fail_fatal(b, "cannot create a new kafka producer", err);
        return;
    }
    if (b->eos) {
        /* What it held is taken again from Kafka, once the new producer's
         * init_transactions has settled the old one's transaction. */
        eos_rewind(b);
        return;
    }
    for (size_t p = 0; p < b->nparts; p++)
        for (record_t *r = b->parts[p].head; r; r = r->next) {
            if (r->done || !r->produced || r->in_retry) continue;
            r->deliveries = 0;
            r->last_err = RD_KAFKA_RESP_ERR__FATAL;
            r->failed = FAIL_RESULT;
            if (r->parse_code != TTB_CODE_OK && ttb_code_is_dead_letter(r->parse_code))
                r->failed |= FAIL_DLQ;
            if (push_ptr(&b->retry, &b->nretry, &b->capretry, r))
                fail_fatal(b, "out of memory", "records to produce again");
            else r->in_retry = true;
        }
    ttb_backoff_reset(&b->kafka_backoff);
}

/* Produces again what Kafka refused: a result refused for its size becomes
 * a too_large answer; a dead letter refused for its size is given up (the
 * command still has its error result; the loss is logged and counted);
 * anything else is retried with backoff, for as long as it takes. */
static void retry_deliveries(ttb_bridge_t *b) {
    if (b->nretry == 0) return;
    bool due = ttb_backoff_due(&b->kafka_backoff);
    /* Work on the list as it is now: what fails again is queued afresh. */
    record_t **list = b->retry;
    size_t n = b->nretry;
    b->retry = NULL;
    b->nretry = b->capretry = 0;
    for (size_t i = 0; i < n; i++) {
        record_t *r = list[i];
        r->in_retry = false;
        /* A too_large answer refused for its size is odd (a few hundred
         * bytes): retried with backoff like any other refusal, not re-made. */
        bool size = err_is_size(r->last_err) &&
                    !((r->failed & FAIL_RESULT) && r->out.code == TTB_CODE_TOO_LARGE);
        if (!size && !due) {
            if (push_ptr(&b->retry, &b->nretry, &b->capretry, r))
                fail_fatal(b, "out of memory", "a delivery to retry");
            r->in_retry = true;
            continue;
        }
        unsigned failed = r->failed;
        r->failed = 0;
        if ((failed & FAIL_RESULT) && size && record_too_large(r, "more than the broker accepts"))
            fail_fatal(b, "out of memory", "a too_large result");
        if (failed & FAIL_RESULT) produce_result(b, r);
        if ((failed & FAIL_DLQ) && size) {
            ttb_log_warn("dead letter refused by kafka for its size; not retried", "id",
                         r->cmd.id ? r->cmd.id : "", "error", rd_kafka_err2str(r->last_err));
            ttb_metrics.dead_letters_dropped++;
        } else if (failed & FAIL_DLQ) {
            produce_dead_letter(b, r);
        }
        if (!r->in_retry && r->deliveries == 0 && r->produced) record_delivered(b, r);
    }
    free(list);
}

/* Everything a finished record must produce. */
static void record_finish(ttb_bridge_t *b, record_t *r) {
    if (r->out.replayed) ttb_metrics.replayed++;
    if (ttb_log_enabled(TTB_LOG_DEBUG)) {
        char part[16], off[24];
        snprintf(part, sizeof(part), "%" PRId32, r->partition);
        snprintf(off, sizeof(off), "%" PRId64, r->offset);
        ttb_log_debug("command", "id", r->cmd.id, "town", r->cmd.town, "op", record_op(r),
                      "status", ttb_code_name(r->out.code), "replayed",
                      r->out.replayed ? "true" : "false", "partition", part, "offset", off);
    }
    if (b->eos) {
        r->ready = true; /* produced in partition order by eos_advance() */
        return;
    }
    if (produce_result(b, r)) {
        fail_fatal(b, "out of memory", "a result");
        return;
    }
    if (r->parse_code != TTB_CODE_OK && ttb_code_is_dead_letter(r->parse_code))
        produce_dead_letter(b, r);
    r->produced = true;
    if (r->deliveries == 0 && !r->in_retry) record_delivered(b, r);
}

static void record_delivered(ttb_bridge_t *b, record_t *r) {
    r->done = true;
    b->in_flight--;
    ttb_metrics.in_flight = b->in_flight;
    int op = r->parse_code == TTB_CODE_OK ? (int)r->cmd.op : -1;
    ttb_metrics_command(op, r->out.code, now_us() - r->received_us);
    b->summary_commands++;
    if (r->out.code != TTB_CODE_OK) b->summary_errors++;
}

/* ------------------------------------------------------------------------ */
/* Offsets                                                                   */

/* Stores, per partition, the offset after the longest prefix of done records. */
static void store_offsets(ttb_bridge_t *b) {
    rd_kafka_topic_partition_list_t *list = NULL;
    for (size_t p = 0; p < b->nparts; p++) {
        partition_t *pt = &b->parts[p];
        int64_t next = -1;
        while (pt->head && pt->head->done) {
            record_t *r = pt->head;
            next = r->offset + 1;
            pt->head = r->next;
            if (!pt->head) pt->tail = NULL;
            record_free(r);
        }
        if (next < 0 || !pt->active || b->eos) continue; /* eos: offsets go in transactions */
        if (!list) list = rd_kafka_topic_partition_list_new(8);
        rd_kafka_topic_partition_list_add(list, b->config->commands_topic, (int32_t)p)->offset =
            next;
    }
    if (!list) return;
    rd_kafka_resp_err_t err = rd_kafka_offsets_store(b->consumer, list);
    if (err) ttb_log_warn("storing offsets failed", "error", rd_kafka_err2str(err));
    rd_kafka_topic_partition_list_destroy(list);
}

/* Removes the records of partition @p p from the stalled and wait lists. */
static void drop_from(record_t **items, size_t *n, int32_t p) {
    size_t w = 0;
    for (size_t i = 0; i < *n; i++)
        if (items[i]->partition != p) items[w++] = items[i];
    *n = w;
}

/* Forgets every record of partition @p p (those with deliveries under way
 * are freed by their last report). */
static void partition_drop(ttb_bridge_t *b, partition_t *pt, int32_t p) {
    drop_from(b->stalled, &b->nstalled, p);
    drop_from(b->retry, &b->nretry, p);
    for (ttb_wait_t *e = ttb_waits_next(b->waits, NULL), *next; e; e = next) {
        next = ttb_waits_next(b->waits, e);
        record_t *r = ttb_wait_item(e);
        if (r->partition != p) continue;
        ttb_waits_remove(b->waits, e);
        r->wait = NULL;
    }
    ttb_metrics.pending_waits = (int64_t)ttb_waits_count(b->waits);
    record_t *r = pt->head;
    while (r) {
        record_t *next = r->next;
        if (!r->done) b->in_flight--;
        if (r->deliveries > 0) r->orphaned = true;
        else record_free(r);
        r = next;
    }
    pt->head = pt->tail = NULL;
    pt->next_offset = -1;
    free(pt->unseen);
    pt->unseen = NULL;
    pt->nunseen = 0;
    ttb_metrics.in_flight = b->in_flight;
}

/* A partition goes: results already produced are flushed and committed; the
 * rest is left to its next owner, who gets those records again. */
static void partition_release(ttb_bridge_t *b, int32_t p) {
    partition_t *pt = partition_get(b, p);
    if (!pt) return;
    partition_drop(b, pt, p);
    pt->active = false;
    pt->committed = -1; /* a later owner starts where the group says */
    ttb_metrics.in_flight = b->in_flight;
    if ((size_t)p < TTB_METRICS_MAX_PARTITIONS) ttb_metrics.consumer_lag[p] = -1;
}

/* ------------------------------------------------------------------------ */
/* Exactly once (kafka.exactly_once)                                         */
/*
 * Results and dead letters are produced in a Kafka transaction together
 * with the consumed offsets (KIP-447: sent with the consumer's group
 * metadata, so a bridge that lost its partitions is fenced by the group's
 * generation), committed every EOS_COMMIT_INTERVAL_MS. Nothing of a
 * transaction that fails is trusted: it is aborted and every partition is
 * taken again from its committed position (the idempotency records answer
 * with the same bytes), so what read_committed readers see is exactly what
 * the committed offsets cover.
 *
 * Results are produced in each partition's record order, and a committed
 * offset covers only records whose results are in the same or an earlier
 * transaction. A pending `wait` would hold its partition's offset back and
 * make every later record's result appear again after a crash, so the
 * offset moves past it and the wait is listed in the offset's metadata
 * ("ttb1" and, per wait, the committed offset minus its own). Whoever takes
 * the partition starts at the oldest listed wait and skips what lies below
 * the committed offset and is not listed. At most EOS_MAX_WAITS waits per
 * partition are listed (the broker keeps 4 KiB of metadata); results behind
 * more wait for one to finish.
 */

enum { EOS_COMMIT_INTERVAL_MS = 100, EOS_MAX_WAITS = 200, EOS_TIMEOUT_MS = 10000 };

static void eos_note_refused(ttb_bridge_t *b, const record_t *r, unsigned piece) {
    for (size_t i = 0; i < b->nrefused; i++)
        if (b->refused[i].partition == r->partition && b->refused[i].offset == r->offset) {
            b->refused[i].pieces |= piece;
            return;
        }
    if (b->nrefused == b->caprefused) {
        size_t cap = b->caprefused ? b->caprefused * 2 : 8;
        refused_t *n = realloc(b->refused, cap * sizeof(*n));
        if (!n) return; /* produced again as it is; refused again */
        b->refused = n;
        b->caprefused = cap;
    }
    b->refused[b->nrefused++] = (refused_t){r->partition, r->offset, piece};
}

/* Takes the pieces of @p r the broker refused for their size (if any). */
static unsigned eos_take_refused(ttb_bridge_t *b, const record_t *r) {
    for (size_t i = 0; i < b->nrefused; i++)
        if (b->refused[i].partition == r->partition && b->refused[i].offset == r->offset) {
            unsigned pieces = b->refused[i].pieces;
            b->refused[i] = b->refused[--b->nrefused];
            return pieces;
        }
    return 0;
}

/* Done once its transaction committed and its deliveries were reported. */
static void eos_settle(ttb_bridge_t *b, record_t *r) {
    if (r->committed && r->deliveries == 0 && !r->done) record_delivered(b, r);
}

/* Parses "ttb1 d1 d2 ..." (committed offset minus each pending wait's). */
static int eos_parse_pending(partition_t *pt, const char *md, size_t len) {
    free(pt->unseen);
    pt->unseen = NULL;
    pt->nunseen = 0;
    if (len < 4 || memcmp(md, "ttb1", 4) != 0 || pt->committed < 0) return 0;
    size_t cap = 0;
    for (size_t i = 4; i < len; i++) cap += md[i] == ' ';
    if (cap == 0) return 0;
    if (!(pt->unseen = calloc(cap, sizeof(*pt->unseen)))) return TTB_ERR_NOMEM;
    size_t i = 4;
    while (i < len && pt->nunseen < cap) {
        while (i < len && md[i] == ' ') i++;
        int64_t d = 0;
        size_t start = i;
        while (i < len && md[i] >= '0' && md[i] <= '9' && d < INT64_MAX / 10)
            d = d * 10 + (md[i++] - '0');
        if (i == start || d <= 0 || d > pt->committed) break; /* not ours: ignored */
        pt->unseen[pt->nunseen++] = pt->committed - d;
    }
    return 0;
}

/* Whether @p offset is a listed pending wait not taken yet; forgets it, and
 * those listed below it (records come in order: retention deleted them). */
static bool eos_take_unseen(partition_t *pt, int64_t offset) {
    bool listed = false;
    for (size_t i = 0; i < pt->nunseen;) {
        if (pt->unseen[i] > offset) {
            i++;
            continue;
        }
        listed |= pt->unseen[i] == offset;
        pt->unseen[i] = pt->unseen[--pt->nunseen];
    }
    return listed;
}

/* Where partition @p pt starts: its oldest pending wait, or its committed
 * offset (BEGINNING when the group has none: auto.offset.reset's default). */
static int64_t eos_start(const partition_t *pt) {
    int64_t start = pt->committed >= 0 ? pt->committed : RD_KAFKA_OFFSET_BEGINNING;
    for (size_t i = 0; i < pt->nunseen; i++)
        if (pt->unseen[i] < start || start < 0) start = pt->unseen[i];
    return start;
}

/* Reads the committed offsets (and pending waits) of @p list from the group,
 * read_committed (so a transaction still open on them is waited for), and
 * sets each element's offset to where it starts; @p attempts tries (a
 * crashed owner's open transaction lasts transaction.timeout.ms). */
static int eos_positions(ttb_bridge_t *b, rd_kafka_topic_partition_list_t *list, int attempts) {
    rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR_NO_ERROR;
    for (int attempt = 0; attempt < attempts; attempt++) {
        for (int i = 0; i < list->cnt; i++) list->elems[i].offset = RD_KAFKA_OFFSET_INVALID;
        err = rd_kafka_committed(b->consumer, list, b->txn_timeout_ms);
        for (int i = 0; i < list->cnt && !err; i++) err = list->elems[i].err;
        if (!err) break;
        ttb_log_warn("cannot read the committed offsets yet; retrying", "error",
                     rd_kafka_err2str(err));
    }
    if (err) return TTB_ERR_IO;
    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        partition_t *pt = partition_get(b, tp->partition);
        if (!pt) return TTB_ERR_NOMEM;
        pt->committed = tp->offset >= 0 ? tp->offset : -1;
        if (eos_parse_pending(pt, tp->metadata, tp->metadata ? tp->metadata_size : 0))
            return TTB_ERR_NOMEM;
        tp->offset = eos_start(pt);
        if (pt->nunseen) {
            char part[16], n[24];
            snprintf(part, sizeof(part), "%" PRId32, tp->partition);
            snprintf(n, sizeof(n), "%zu", pt->nunseen);
            ttb_log_info("pending waits taken over", "partition", part, "waits", n);
        }
    }
    return 0;
}

/* Forgets everything not committed and takes every assigned partition
 * again from its committed position, read once the producer is ready (its
 * init_transactions settles whatever its predecessor left open). Tried
 * again each pass until Kafka answers (consumption stays paused meanwhile). */
static void eos_rewind(ttb_bridge_t *b) {
    if (b->leaving) return; /* they go anyway; their next owner starts from Kafka */
    b->rewind_pending = true;
    b->txn_failed = false;
    for (size_t p = 0; p < b->nparts; p++)
        if (b->parts[p].active) partition_drop(b, &b->parts[p], (int32_t)p);
    rd_kafka_topic_partition_list_t *list = NULL;
    if (!b->txn_ready || rd_kafka_assignment(b->consumer, &list) || !list) return;
    int rc = list->cnt ? eos_positions(b, list, 1) : 0;
    if (!rc && list->cnt) {
        rd_kafka_error_t *error = rd_kafka_seek_partitions(b->consumer, list, b->txn_timeout_ms);
        if (error) {
            ttb_log_warn("cannot go back to the committed offsets yet", "error",
                         rd_kafka_error_string(error));
            rd_kafka_error_destroy(error);
            rc = TTB_ERR_IO;
        }
        for (int i = 0; i < list->cnt && !rc; i++)
            if (list->elems[i].err) rc = TTB_ERR_IO;
    }
    rd_kafka_topic_partition_list_destroy(list);
    if (!rc) b->rewind_pending = false;
}

/* Readies the producer for transactions (resumable: a call that timed out
 * is simply made again on the next pass). @returns whether it is ready. */
static bool eos_init(ttb_bridge_t *b, int timeout_ms) {
    if (b->txn_ready) return true;
    rd_kafka_error_t *error = rd_kafka_init_transactions(b->producer, timeout_ms);
    if (!error) {
        b->txn_ready = true;
        return true;
    }
    bool fatal = rd_kafka_error_is_fatal(error);
    ttb_log_warn("kafka producer not ready for transactions yet", "error",
                 rd_kafka_error_string(error));
    rd_kafka_error_destroy(error);
    ttb_backoff_fail(&b->kafka_backoff);
    if (fatal) producer_restart(b);
    return false;
}

static bool eos_begin(ttb_bridge_t *b) {
    if (b->txn_open) return true;
    rd_kafka_error_t *error = rd_kafka_begin_transaction(b->producer);
    if (error) {
        ttb_log_warn("cannot begin a transaction", "error", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        b->txn_failed = true;
        return false;
    }
    b->txn_open = true;
    b->txn_started_us = now_us();
    return true;
}

/* Produces what a ready record must: its result and, for a bad record, its
 * dead letter (unless the broker refused either for its size before). */
static void eos_produce_record(ttb_bridge_t *b, record_t *r) {
    unsigned refused = eos_take_refused(b, r);
    if ((refused & FAIL_RESULT) && r->out.code != TTB_CODE_TOO_LARGE &&
        record_too_large(r, "more than the broker accepts"))
        fail_fatal(b, "out of memory", "a too_large result");
    if (produce_result(b, r)) fail_fatal(b, "out of memory", "a result");
    if (r->parse_code != TTB_CODE_OK && ttb_code_is_dead_letter(r->parse_code)) {
        if (refused & FAIL_DLQ) {
            ttb_log_warn("dead letter refused by kafka for its size; not retried", "id",
                         r->cmd.id ? r->cmd.id : "");
            ttb_metrics.dead_letters_dropped++;
        } else {
            produce_dead_letter(b, r);
        }
    }
    r->ready = false;
    r->produced = true;
}

/* Produces the ready results of each partition in record order, up to the
 * first record still being applied (or past EOS_MAX_WAITS pending waits). */
static void eos_advance(ttb_bridge_t *b) {
    if (!b->txn_ready || b->rewind_pending || b->txn_failed ||
        !ttb_backoff_due(&b->kafka_backoff))
        return;
    for (size_t p = 0; p < b->nparts && !b->txn_failed; p++) {
        size_t waits = b->parts[p].nunseen;
        for (record_t *r = b->parts[p].head; r && !b->txn_failed; r = r->next) {
            if (r->produced) continue;
            if (r->wait) {
                if (++waits > EOS_MAX_WAITS) break;
                continue;
            }
            if (!r->ready || !eos_begin(b)) break;
            eos_produce_record(b, r);
        }
    }
}

/* The offset to commit for @p pt (-1: none) and its metadata. */
static int64_t eos_offset(const partition_t *pt, char *md, size_t md_size) {
    int64_t last = -1;
    size_t pending = pt->nunseen;
    for (const record_t *r = pt->head; r; r = r->next) {
        /* Below the committed offset only listed records come back. */
        if (!r->produced && !r->wait && r->offset >= pt->committed) break;
        if (!r->produced && ++pending > EOS_MAX_WAITS) break;
        last = r->offset;
    }
    int64_t commit = last + 1 > pt->committed ? last + 1 : pt->committed;
    if (commit <= 0) return -1; /* nothing answered, nothing listed */
    size_t used = (size_t)snprintf(md, md_size, "ttb1");
    for (size_t i = 0; i < pt->nunseen && used < md_size; i++)
        used += (size_t)snprintf(md + used, md_size - used, " %" PRId64, commit - pt->unseen[i]);
    for (const record_t *r = pt->head; r && r->offset < commit && used < md_size; r = r->next)
        if (!r->produced)
            used += (size_t)snprintf(md + used, md_size - used, " %" PRId64, commit - r->offset);
    return commit;
}

static void eos_failed(ttb_bridge_t *b, const char *why, bool fatal) {
    b->txn_aborts++;
    ttb_log_warn("transaction aborted; taking the records again from kafka", "reason", why);
    ttb_backoff_fail(&b->kafka_backoff);
    if (b->leaving) return; /* the partitions go: their next owner starts from Kafka */
    if (fatal) producer_restart(b); /* rewinds too */
    else eos_rewind(b);
}

/* Commits the open transaction with the offsets it covers (or aborts it
 * when a record of it was refused), within about @p timeout_ms. */
static void eos_commit(ttb_bridge_t *b, int timeout_ms) {
    if (!b->txn_open) return;
    b->txn_open = false;
    char why[512] = "";
    bool fatal = false;
    if (b->txn_failed) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(b->producer, timeout_ms);
        fatal = error != NULL;
        if (error) rd_kafka_error_destroy(error);
        eos_failed(b, "kafka refused a record", fatal);
        return;
    }
    rd_kafka_topic_partition_list_t *offsets = rd_kafka_topic_partition_list_new(8);
    int64_t *commits = calloc(b->nparts ? b->nparts : 1, sizeof(*commits));
    if (!commits) {
        rd_kafka_topic_partition_list_destroy(offsets);
        fail_fatal(b, "out of memory", "a transaction");
        return;
    }
    for (size_t p = 0; p < b->nparts; p++) {
        char md[4096];
        commits[p] = b->parts[p].active ? eos_offset(&b->parts[p], md, sizeof(md)) : -1;
        if (commits[p] < 0) continue;
        rd_kafka_topic_partition_t *tp =
            rd_kafka_topic_partition_list_add(offsets, b->config->commands_topic, (int32_t)p);
        tp->offset = commits[p];
        tp->metadata = strdup(md);
        tp->metadata_size = tp->metadata ? strlen(md) : 0;
    }
    rd_kafka_consumer_group_metadata_t *cgmd = rd_kafka_consumer_group_metadata(b->consumer);
    int rc = ttb_kafka_txn_commit(b->producer, offsets, cgmd, timeout_ms, &fatal, why,
                                  sizeof(why));
    rd_kafka_consumer_group_metadata_destroy(cgmd);
    rd_kafka_topic_partition_list_destroy(offsets);
    if (rc) {
        free(commits);
        eos_failed(b, why, fatal);
        return;
    }
    b->txn_commits++;
    ttb_backoff_reset(&b->kafka_backoff);
    for (size_t p = 0; p < b->nparts; p++) {
        if (commits[p] >= 0) b->parts[p].committed = commits[p];
        for (record_t *r = b->parts[p].head; r; r = r->next)
            if (r->produced) r->committed = true;
    }
    free(commits);
    rd_kafka_poll(b->producer, 0); /* the reports of what the commit flushed */
    for (size_t p = 0; p < b->nparts; p++)
        for (record_t *r = b->parts[p].head; r; r = r->next) eos_settle(b, r);
}

/* Each pass: a transaction open long enough (or one that failed) ends. */
static void eos_tick(ttb_bridge_t *b) {
    if (b->txn_failed && !b->txn_open) eos_failed(b, "a transaction could not begin", true);
    if (!b->txn_ready && (!ttb_backoff_due(&b->kafka_backoff) || !eos_init(b, 1000))) return;
    if (b->rewind_pending) eos_rewind(b);
    eos_advance(b);
    if (b->txn_open &&
        (b->txn_failed || now_us() - b->txn_started_us >= EOS_COMMIT_INTERVAL_MS * 1000u))
        eos_commit(b, b->txn_timeout_ms);
}

static void commit_sync(ttb_bridge_t *b) {
    /* While stopping, nothing may wait on a coordinator that may be gone:
     * the commit is sent, and leaving the group is bounded on its own. */
    rd_kafka_resp_err_t err = rd_kafka_commit(b->consumer, NULL, b->stop_deadline_us ? 1 : 0);
    if (err && err != RD_KAFKA_RESP_ERR__NO_OFFSET)
        ttb_log_warn("offset commit failed", "error", rd_kafka_err2str(err));
}

static void set_paused(ttb_bridge_t *b, bool paused);

static void rebalance_cb(rd_kafka_t *rk, rd_kafka_resp_err_t err,
                         rd_kafka_topic_partition_list_t *parts, void *opaque) {
    ttb_bridge_t *b = opaque;
    bool cooperative = strcmp(rd_kafka_rebalance_protocol(rk), "COOPERATIVE") == 0;
    char count[16];
    snprintf(count, sizeof(count), "%d", parts->cnt);
    if (err == RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS) {
        for (int i = 0; i < parts->cnt; i++) {
            partition_t *pt = partition_get(b, parts->elems[i].partition);
            if (pt) pt->active = true;
        }
        /* Explicit start offsets: the committed ones, or the oldest pending
         * wait their metadata lists. */
        /* (Our producer first, so what a predecessor with our
         * transactional.id left open is settled, not waited for.) */
        if (b->eos && !b->txn_ready) eos_init(b, b->txn_timeout_ms);
        if (b->eos && eos_positions(b, parts, 6))
            fail_fatal(b, "cannot read the committed offsets of the assigned partitions",
                       "kafka did not answer within a minute");
        if (cooperative) rd_kafka_incremental_assign(rk, parts);
        else rd_kafka_assign(rk, parts);
        if (b->paused) rd_kafka_pause_partitions(rk, parts);
        ttb_metrics.assigned = true;
        ttb_log_info("partitions assigned", "count", count, "topic", b->config->commands_topic);
        return;
    }
    if (err == RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS) {
        /* Let what was produced land, so its offsets can be committed now
         * rather than redelivered to the next owner (while stopping, only
         * for what is left of the bound). */
        if (b->eos && rd_kafka_assignment_lost(rk)) {
            /* Another bridge owns them now: nothing of ours may commit. */
            if (b->txn_open) {
                rd_kafka_error_t *error =
                    rd_kafka_abort_transaction(b->producer, b->txn_timeout_ms);
                if (error) rd_kafka_error_destroy(error);
                b->txn_open = false;
                b->txn_aborts++;
            }
            b->txn_failed = false;
            ttb_log_warn("partitions lost; their open transaction is aborted");
        } else if (b->eos) {
            b->leaving = true;
            eos_advance(b);
            eos_commit(b, b->stop_deadline_us ? ms_left(b->stop_deadline_us) : b->txn_timeout_ms);
            b->leaving = false;
        } else {
            rd_kafka_flush(b->producer, b->stop_deadline_us ? ms_left(b->stop_deadline_us)
                                                            : b->config->shutdown_timeout_ms);
            store_offsets(b);
            commit_sync(b);
        }
        for (int i = 0; i < parts->cnt; i++) partition_release(b, parts->elems[i].partition);
        ttb_log_info("partitions revoked", "count", count);
    }
    if (cooperative) {
        rd_kafka_incremental_unassign(rk, parts);
    } else {
        rd_kafka_assign(rk, NULL);
    }
    rd_kafka_topic_partition_list_t *left = NULL;
    bool any = rd_kafka_assignment(rk, &left) == RD_KAFKA_RESP_ERR_NO_ERROR && left->cnt > 0;
    if (left) rd_kafka_topic_partition_list_destroy(left);
    ttb_metrics.assigned = any;
}

static void set_paused(ttb_bridge_t *b, bool paused) {
    if (b->paused == paused) return;
    rd_kafka_topic_partition_list_t *list = NULL;
    if (rd_kafka_assignment(b->consumer, &list) == RD_KAFKA_RESP_ERR_NO_ERROR && list) {
        if (paused) rd_kafka_pause_partitions(b->consumer, list);
        else rd_kafka_resume_partitions(b->consumer, list);
    }
    if (list) rd_kafka_topic_partition_list_destroy(list);
    b->paused = paused;
}

/* ------------------------------------------------------------------------ */
/* Applying                                                                  */

static void watch_close(ttb_bridge_t *b);
static void watch_pump(ttb_bridge_t *b);

static void redis_went_down(ttb_bridge_t *b) {
    bool refused = ttb_store_refused(b->store);
    const char *why = b->probe_error[0] ? b->probe_error : ttb_store_errstr(b->store);
    /* A refusal needs an operator: said once per outage, as an error, with
     * the fix, even when the outage began as something else. */
    if (refused && !b->redis_refused)
        ttb_log_error("redis refused the bridge: pausing consumption", "error", why);
    else if (!b->redis_down && !refused)
        ttb_log_warn("redis unavailable: pausing consumption", "error", why);
    if (!b->redis_down) {
        b->redis_down = true;
        b->redis_down_since_us = now_us();
        ttb_metrics.redis_up = false;
    }
    if (refused) b->redis_refused = true;
    b->probe_error[0] = '\0';
    ttb_store_disconnect(b->store); /* a refusal leaves it connected; start afresh */
    watch_close(b); /* Redis may come back another (restarted, failed over) */
    ttb_backoff_fail(&b->redis_backoff);
}

static void redis_came_back(ttb_bridge_t *b) {
    b->redis_refused = false;
    ttb_backoff_reset(&b->redis_backoff);
    if (!b->redis_down) return;
    ttb_waits_touch_all(b->waits); /* notifications were lost meanwhile */
    uint64_t down = now_us() - b->redis_down_since_us;
    ttb_metrics.redis_outage_us += down;
    ttb_metrics.redis_reconnects++;
    b->redis_down = false;
    ttb_metrics.redis_up = true;
    char secs[32];
    snprintf(secs, sizeof(secs), "%.3f", (double)down / 1e6);
    ttb_log_info("redis available again: resuming", "outage_s", secs);
}

/* Once per process, before the first command: records the bridge's first
 * version kept in per-bucket hashes join the town's record hash, so an
 * upgrade never applies a redelivered command again. */
static void adopt_legacy_records(ttb_bridge_t *b) {
    long moved = ttb_service_adopt_legacy_records(b->service, b->config->towns,
                                                  b->config->ntowns);
    if (moved < 0) return; /* tried again after the next reconnect */
    b->legacy_adopted = true;
    if (moved > 0) {
        char n[24];
        snprintf(n, sizeof(n), "%ld", moved);
        ttb_log_info("idempotency records of an earlier version adopted", "records", n);
    }
}

/* Compares this bridge's answer-changing settings with its group's (see
 * peers.h). A disagreement found at start stops it; later ones are logged. */
static void check_peers(ttb_bridge_t *b) {
    b->next_peers_us = now_us() + 5000000u;
    char what[1024];
    int rc = ttb_peers_check(b->store, b->config->group_id, b->instance, b->settings, wall_ms(),
                             what, sizeof(what));
    if (rc == TTB_ERR_PROTO && !b->peers_checked) /* e.g. NOPERM on ttb:bridges:* */
        ttb_log_warn("cannot compare settings with the group's other bridges", "error", what);
    if (rc < 0) return; /* Redis trouble: the next tick or outage handling sees it */
    bool first = !b->peers_checked;
    b->peers_checked = true;
    ttb_metrics.peers_disagree = rc == 1;
    if (rc == 1 && first && !b->config->allow_mismatched_peers) {
        ttb_peers_leave(b->store, b->config->group_id, b->instance);
        fail_fatal(b,
                   "bridges of this consumer group would answer commands differently; refusing "
                   "to start (bridge.allow_mismatched_peers=true starts anyway)",
                   what);
        return;
    }
    if (rc == 1 && !b->peers_disagree)
        ttb_log_error("bridges of this consumer group answer commands differently", "error", what);
    if (rc == 0 && b->peers_disagree) ttb_log_info("the bridges of this consumer group agree again");
    b->peers_disagree = rc == 1;
}

/* Asks Redis whether it would run a script that may write, without writing:
 * a script with no flags is refused up front when writes are not allowed
 * (READONLY, OOM, NOREPLICAS) and answered BUSY or LOADING when nothing is.
 * A PING would pass in all of those. */
static bool redis_accepts_writes(ttb_bridge_t *b) {
    redisReply *r;
    if (ttb_store_command(b->store, &r, "EVAL %s 0", "#!lua\nreturn 1")) return false;
    bool ok = r->type == REDIS_REPLY_INTEGER;
    if (!ok) /* e.g. NOPERM: the bridge cannot work with this user, and says so */
        snprintf(b->probe_error, sizeof(b->probe_error), "redis refused a script: %.200s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    freeReplyObject(r);
    return ok;
}

/* Connects and checks that the user has the rights the scripts need, before
 * any command runs. @returns 0 or TTB_ERR_* (reason in @p err). */
static int redis_connect(ttb_bridge_t *b, char *err, size_t err_size) {
    int rc = ttb_store_connect(b->store, err, err_size);
    if (!rc && (rc = ttb_store_check_rights(b->store, (const char *const *)b->config->towns,
                                            b->config->ntowns)))
        snprintf(err, err_size, "%s", ttb_store_errstr(b->store));
    if (rc && ttb_store_refused(b->store)) rc = TTB_ERR_DENIED;
    if (rc) ttb_store_disconnect(b->store);
    return rc;
}

/* Keeps Redis's state known even when no command flows: reconnects with
 * backoff while it is down, and probes it once a second while it is idle, so
 * readiness and the outage log follow reality. @returns true when usable. */
static bool redis_tick(ttb_bridge_t *b) {
    uint64_t now = now_us();
    bool fresh = false;
    if (!ttb_store_connected(b->store)) {
        char err[1024];
        if (!ttb_backoff_due(&b->redis_backoff)) return false;
        if (redis_connect(b, err, sizeof(err))) {
            redis_went_down(b);
            return false;
        }
        fresh = true;
    }
    if (fresh || b->redis_down || now >= b->next_health_us) {
        b->next_health_us = now + 1000000u;
        if (!redis_accepts_writes(b)) {
            redis_went_down(b);
            return false;
        }
        /* After a NOPERM only the refused work succeeding (apply_stalled)
         * ends the outage; without it, retried at the backoff's pace and
         * logged once, not every time a probe passes. */
        if (!b->redis_refused || b->nstalled == 0) redis_came_back(b);
        if (!b->legacy_adopted) adopt_legacy_records(b);
    }
    if (now >= b->next_peers_us) check_peers(b);
    return !b->fatal;
}

/* Runs the stalled commands through the service. On success their results
 * are produced (or they join the waits); on an outage they stay stalled. */
static void apply_stalled(ttb_bridge_t *b) {
    if (b->nstalled == 0 || !redis_tick(b)) return;
    size_t n = b->nstalled;
    ttb_command_t *cmds = malloc(n * sizeof(*cmds));
    ttb_outcome_t *outs = calloc(n, sizeof(*outs));
    if (!cmds || !outs) {
        free(cmds);
        free(outs);
        fail_fatal(b, "out of memory", "applying a batch");
        return;
    }
    for (size_t i = 0; i < n; i++) cmds[i] = b->stalled[i]->cmd; /* shallow: strings stay owned */
    watch_pump(b); /* the directories learn what others wrote up to now */
    int rc = ttb_service_execute(b->service, cmds, n, outs);
    free(cmds);
    if (rc == TTB_ERR_IO || rc == TTB_ERR_PROTO) {
        free(outs);
        redis_went_down(b);
        return;
    }
    if (rc) {
        free(outs);
        fail_fatal(b, "applying a batch failed", ttb_err_str(rc));
        return;
    }
    redis_came_back(b);
    ttb_metrics.batches++;
    ttb_metrics.batch_records += n;
    for (size_t i = 0; i < n; i++) {
        record_t *r = b->stalled[i];
        r->out = outs[i];
        if (r->out.pending) {
            r->wait = ttb_waits_add(b->waits, r->cmd.town, r->out.agent_id, r->out.deadline_ms, r);
            if (!r->wait) fail_fatal(b, "out of memory", "pending waits");
        } else {
            record_finish(b, r);
        }
    }
    free(outs);
    b->nstalled = 0;
    ttb_metrics.pending_waits = (int64_t)ttb_waits_count(b->waits);
}

/* ---- pending waits ------------------------------------------------------ */

static void watch_close(ttb_bridge_t *b) {
    if (b->watch) redisFree(b->watch);
    b->watch = NULL;
    ttb_waits_set_sweep(b->waits, b->config->wait_check_interval_ms);
    if (b->service) ttb_service_set_live(b->service, false, false);
}

/* Subscribes to the agent keys' notifications, so that a wait is re-read
 * when its agent changes and the towns' directories follow what others
 * write, and to the task keys', so that get_result's kept results do. Without
 * the first (CONFIG refused, say) every wait is re-read each
 * wait_check_interval_ms and each round that resolves names reads its town;
 * without the second (an ACL without the channel) each round with a
 * get_result reads its town's tasks. */
static void watch_open(ttb_bridge_t *b) {
    if (b->watch || b->redis_down || now_us() < b->next_watch_try_us) return;
    b->next_watch_try_us = now_us() + 5000000u;
    char err[1024] = "";
    bool tasks_refused = false;
    if (!ttb_store_require_notifications(b->store, "Kgh", NULL, err, sizeof(err)))
        b->watch = ttb_store_subscribe(b->store, (const char *const *)b->watch_patterns,
                                       2 * b->config->ntowns, b->config->ntowns, &tasks_refused,
                                       err, sizeof(err));
    if (!b->watch) {
        if (!b->watch_warned)
            ttb_log_warn("keyspace notifications unavailable; pending waits are re-read every "
                         "bridge.wait_check_interval_ms and towns are read whole to resolve "
                         "names", "error", err);
        b->watch_warned = true;
        return;
    }
    if (b->watch_warned) ttb_log_info("keyspace notifications available again");
    b->watch_warned = false;
    if (tasks_refused && !b->tasks_warned)
        ttb_log_warn("notifications of task keys refused; get_result reads its town's tasks "
                     "every batch (grant the channel as README, Security, shows)", "error", err);
    b->tasks_warned = tasks_refused;
    ttb_waits_set_sweep(b->waits, b->config->wait_sweep_interval_ms);
    ttb_waits_touch_all(b->waits); /* whatever changed before we listened */
    ttb_service_set_live(b->service, true, !tasks_refused);
}

/* A pmessage for `__keyspace@<db>__:tt:<town>:agent:<id>` touches that
 * agent's waits and directory entry; one for `…:task:<id>`, the town's
 * latest results. */
static void watch_note(ttb_bridge_t *b, const redisReply *r) {
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 4 ||
        r->element[1]->type != REDIS_REPLY_STRING || r->element[2]->type != REDIS_REPLY_STRING)
        return;
    const redisReply *pat = r->element[1], *chan = r->element[2];
    size_t ntowns = b->config->ntowns;
    for (size_t p = 0; p < 2 * ntowns; p++) {
        size_t plen = strlen(b->watch_patterns[p]);
        if (pat->len != plen || memcmp(pat->str, b->watch_patterns[p], plen) != 0) continue;
        const char *town = b->config->towns[p % ntowns];
        if (p >= ntowns) {
            ttb_service_task_touched(b->service, town);
        } else if (chan->len >= plen) { /* the pattern's '*' stands for the id */
            const char *id = chan->str + plen - 1;
            size_t len = chan->len - (plen - 1);
            ttb_waits_touch(b->waits, town, id, len);
            ttb_service_agent_touched(b->service, town, id, len);
        }
        return;
    }
}

static void watch_drain(ttb_bridge_t *b) {
    if (!b->watch) return;
    struct pollfd pfd = {.fd = b->watch->fd, .events = POLLIN};
    while (b->watch && poll(&pfd, 1, 0) > 0) {
        if (!(pfd.revents & POLLIN) || redisBufferRead(b->watch) != REDIS_OK) {
            watch_close(b); /* reopened later; the sweep covers the gap */
            return;
        }
        void *reply = NULL;
        while (redisGetReplyFromReader(b->watch, &reply) == REDIS_OK && reply) {
            watch_note(b, reply);
            freeReplyObject(reply);
            reply = NULL;
        }
    }
}

/* Re-reads the waits that may be over: touched by a notification, past
 * their deadline, or in the safety sweep's slice (see waits.h). */
/* Whoever turned keyspace notifications off (CONFIG SET by hand, a config
 * reload) silently cut the bridge off from others' writes: turn them on
 * again, and read everything that may have changed meanwhile. Checked once
 * per bridge.wait_sweep_interval_ms, the safety net's period. */
static void watch_verify(ttb_bridge_t *b) {
    if (!b->watch || now_us() < b->next_watch_check_us) return;
    b->next_watch_check_us = now_us() + (uint64_t)b->config->wait_sweep_interval_ms * 1000u;
    bool added = false;
    char err[256] = "";
    int rc = ttb_store_require_notifications(b->store, "Kgh", &added, err, sizeof(err));
    if (rc == TTB_ERR_PROTO) {
        watch_close(b); /* refused now: the fallbacks take over until it is allowed again */
    } else if (!rc && added) {
        ttb_log_warn("keyspace notifications had been turned off; turned them on again and "
                     "reading the towns again");
        ttb_service_forget_directories(b->service);
        ttb_waits_touch_all(b->waits);
    }
}

/* Keeps the notifications flowing and takes what they brought. */
static void watch_pump(ttb_bridge_t *b) {
    watch_open(b);
    watch_drain(b);
    watch_verify(b);
}

static void check_waits(ttb_bridge_t *b) {
    watch_pump(b);
    if (ttb_waits_count(b->waits) == 0 || b->redis_down) return;
    uint64_t now = now_us();
    bool tick = now >= b->next_wait_check_us;
    if (!tick && !ttb_waits_any_touched(b->waits)) return;
    int64_t tick_ms = 0;
    if (tick) {
        tick_ms = b->last_wait_check_us ? (int64_t)(now - b->last_wait_check_us) / 1000 : 0;
        b->last_wait_check_us = now;
        b->next_wait_check_us = now + (uint64_t)b->config->wait_check_interval_ms * 1000u;
    }
    enum { MAX_CHECK = 2000 }; /* one pipelined round trip's worth */
    void *items[MAX_CHECK];
    const ttb_command_t *cmds[MAX_CHECK];
    ttb_outcome_t *outs[MAX_CHECK];
    size_t n = ttb_waits_due(b->waits, wall_ms(), tick_ms, items, MAX_CHECK);
    for (size_t i = 0; i < n; i++) {
        record_t *r = items[i];
        cmds[i] = &r->cmd;
        outs[i] = &r->out;
    }
    int rc = n ? ttb_service_check_waits(b->service, cmds, outs, n, wall_ms()) : 0;
    if (rc == TTB_ERR_IO || rc == TTB_ERR_PROTO) {
        redis_went_down(b); /* all are touched again when it is back */
        return;
    }
    for (size_t i = 0; i < n; i++) {
        record_t *r = items[i];
        if (r->out.pending) continue;
        ttb_waits_remove(b->waits, r->wait);
        r->wait = NULL;
        record_finish(b, r);
    }
    ttb_metrics.pending_waits = (int64_t)ttb_waits_count(b->waits);
}

/* Takes one polled record: parsed commands join the stalled list; unusable
 * ones are answered (and dead-lettered) at once, without Redis. */
static void take_record(ttb_bridge_t *b, rd_kafka_message_t *m) {
    partition_t *pt = partition_get(b, m->partition);
    if (b->eos && pt && !eos_take_unseen(pt, m->offset) && m->offset < pt->committed) {
        pt->next_offset = m->offset + 1; /* answered in a committed transaction */
        return;
    }
    record_t *r = calloc(1, sizeof(*r));
    if (!pt || !r) {
        free(r);
        fail_fatal(b, "out of memory", "taking a record");
        return;
    }
    r->partition = m->partition;
    r->offset = m->offset;
    pt->next_offset = m->offset + 1;
    r->received_us = now_us();
    const char *value = m->payload ? m->payload : "";
    r->parse_code = ttb_command_parse(value, m->len, &b->policy, &r->cmd, r->parse_error,
                                      sizeof(r->parse_error));
    if (!pt->tail) pt->head = r;
    else pt->tail->next = r;
    pt->tail = r;
    pt->active = true;
    b->in_flight++;
    ttb_metrics.in_flight = b->in_flight;

    if (r->parse_code == TTB_CODE_OK) {
        if (push_ptr(&b->stalled, &b->nstalled, &b->capstalled, r))
            fail_fatal(b, "out of memory", "taking a record");
        return;
    }
    /* Keep the original bytes for the dead-letter topic. */
    r->has_key = m->key != NULL;
    r->key = malloc(m->key_len + 1);
    r->value = malloc(m->len + 1);
    if (!r->key || !r->value) {
        fail_fatal(b, "out of memory", "taking a record");
        return;
    }
    if (m->key_len) memcpy(r->key, m->key, m->key_len);
    if (m->len) memcpy(r->value, m->payload, m->len);
    r->key_len = m->key_len;
    r->value_len = m->len;
    ttb_result_t res = {.id = r->cmd.id, .town = r->cmd.town, .op = r->cmd.op_name,
                        .code = r->parse_code, .message = r->parse_error,
                        .applied_at = ttb_time_now()};
    r->out.code = r->parse_code;
    r->out.record = ttb_result_encode(&res, &r->out.record_len);
    if (!r->out.record) {
        fail_fatal(b, "out of memory", "encoding a result");
        return;
    }
    ttb_log_debug("invalid command", "code", ttb_code_name(r->parse_code), "error",
                  r->parse_error);
    record_finish(b, r);
}

/* Polls up to batch_size records, waiting at most @p first_timeout_ms for the first. */
static size_t poll_batch(ttb_bridge_t *b, int first_timeout_ms) {
    size_t got = 0;
    uint64_t deadline = 0;
    int timeout = first_timeout_ms;
    while (got < b->config->batch_size) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(b->consumer, timeout);
        if (!m) {
            if (got == 0 || now_us() >= deadline) break;
            timeout = 1;
            continue;
        }
        if (m->err) {
            if (ttb_kafka_security_note(&b->security, m->err, rd_kafka_message_errstr(m)))
                security_failed(b);
            else if (m->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                ttb_log_warn("consumer error", "error", rd_kafka_message_errstr(m));
            rd_kafka_message_destroy(m);
            if (got == 0) break;
            continue;
        }
        take_record(b, m);
        rd_kafka_message_destroy(m);
        if (got++ == 0) deadline = now_us() + (uint64_t)b->config->batch_timeout_ms * 1000u;
        timeout = now_us() < deadline ? 1 : 0;
    }
    return got;
}

/* Consumer lag per partition: the high watermark (as of the last fetch)
 * minus our position. The position is what we took last, or librdkafka's
 * idea of it before the first record; a partition with nothing in it has no
 * lag even before that. */
static void update_lag(ttb_bridge_t *b) {
    rd_kafka_topic_partition_list_t *list = NULL;
    if (rd_kafka_assignment(b->consumer, &list) || !list) return;
    rd_kafka_position(b->consumer, list);
    for (int i = 0; i < list->cnt; i++) {
        rd_kafka_topic_partition_t *tp = &list->elems[i];
        int64_t lo, hi;
        if (tp->partition < 0 || tp->partition >= TTB_METRICS_MAX_PARTITIONS) continue;
        partition_t *pt = partition_get(b, tp->partition);
        int64_t pos = pt && pt->next_offset >= 0 ? pt->next_offset : tp->offset;
        int64_t lag = -1;
        if (!rd_kafka_get_watermark_offsets(b->consumer, tp->topic, tp->partition, &lo, &hi) &&
            hi >= 0) {
            if (pos >= 0) lag = hi > pos ? hi - pos : 0;
            else if (lo == hi) lag = 0;
        }
        ttb_metrics.consumer_lag[tp->partition] = lag;
    }
    rd_kafka_topic_partition_list_destroy(list);
    ttb_metrics.producer_queue = rd_kafka_outq_len(b->producer);
}

static void summary(ttb_bridge_t *b, uint64_t interval_us) {
    if (b->config->summary_interval_s <= 0) return;
    int64_t lag = 0;
    for (size_t p = 0; p < TTB_METRICS_MAX_PARTITIONS; p++)
        if (ttb_metrics.consumer_lag[p] > 0) lag += ttb_metrics.consumer_lag[p];
    char rate[32], errors[32], lagbuf[32], inflight[32], waits[32];
    snprintf(rate, sizeof(rate), "%.1f", (double)b->summary_commands * 1e6 / (double)interval_us);
    snprintf(errors, sizeof(errors), "%" PRIu64, b->summary_errors);
    snprintf(lagbuf, sizeof(lagbuf), "%" PRId64, lag);
    snprintf(inflight, sizeof(inflight), "%" PRId64, b->in_flight);
    snprintf(waits, sizeof(waits), "%zu", ttb_waits_count(b->waits));
    ttb_log_info("summary", "commands_per_s", rate, "errors", errors, "lag", lagbuf, "in_flight",
                 inflight, "pending_waits", waits, "redis", b->redis_down ? "down" : "up");
    b->summary_commands = b->summary_errors = 0;
}

/* ------------------------------------------------------------------------ */

ttb_bridge_t *ttb_bridge_new(const ttb_config_t *config, char *errstr, size_t errstr_size) {
    ttb_bridge_t *b = calloc(1, sizeof(*b));
    if (!b) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    b->config = config;
    ttb_config_policy(config, &b->policy);
    ttb_backoff_init(&b->redis_backoff, 100, config->redis_backoff_max_ms);
    ttb_backoff_init(&b->kafka_backoff, 200, 10000);
    b->settings = ttb_peers_settings(config);
    char host[64] = "";
    gethostname(host, sizeof(host) - 1);
    snprintf(b->instance, sizeof(b->instance), "%s:%d:%08x", host, (int)getpid(),
             (unsigned)(ttb_clock_us() & 0xffffffffu));
    b->waits = ttb_waits_new(config->wait_check_interval_ms);
    b->watch_patterns = calloc(2 * config->ntowns + 1, sizeof(*b->watch_patterns));
    if (!b->waits || !b->watch_patterns) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    for (size_t p = 0; p < 2 * config->ntowns; p++) {
        char key[TTB_KEY_BUFSZ];
        const char *town = config->towns[p % config->ntowns];
        if (p >= config->ntowns) ttb_key_task_pattern(key, town);
        else ttb_key_agent_pattern(key, town);
        if (asprintf(&b->watch_patterns[p], "__keyspace@%d__:%s", config->redis.db, key) < 0) {
            b->watch_patterns[p] = NULL;
            snprintf(errstr, errstr_size, "out of memory");
            goto fail;
        }
    }

    b->eos = config->exactly_once;
    /* A commit in progress when SIGTERM comes delays the stop by at most
     * half its bound. */
    b->txn_timeout_ms = config->shutdown_timeout_ms / 2 < EOS_TIMEOUT_MS
                            ? config->shutdown_timeout_ms / 2 : EOS_TIMEOUT_MS;
    if (b->txn_timeout_ms < 1000) b->txn_timeout_ms = 1000;
    if (config->transactional_id)
        snprintf(b->txn_id, sizeof(b->txn_id), "%s", config->transactional_id);
    else
        snprintf(b->txn_id, sizeof(b->txn_id), "tinytown-bridge.%s.%s", config->group_id,
                 b->instance);
    if (!(b->producer = producer_new(b, errstr, errstr_size))) goto fail;
    char why[512];

    rd_kafka_conf_t *cconf = ttb_kafka_conf(config, TTB_KAFKA_CONSUMER, errstr, errstr_size);
    if (!cconf) goto fail;
    /* Offsets go in transactions only; commands produced in transactions
     * are read once they commit. */
    if (b->eos && (ttb_kafka_set(cconf, "enable.auto.commit", "false", errstr, errstr_size) ||
                   ttb_kafka_set(cconf, "isolation.level", "read_committed", errstr,
                                 errstr_size))) {
        rd_kafka_conf_destroy(cconf);
        goto fail;
    }
    rd_kafka_conf_set_opaque(cconf, b);
    rd_kafka_conf_set_rebalance_cb(cconf, rebalance_cb);
    b->consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, why, sizeof(why));
    if (!b->consumer) {
        rd_kafka_conf_destroy(cconf);
        snprintf(errstr, errstr_size, "kafka consumer: %s", why);
        goto fail;
    }
    cconf = NULL;
    rd_kafka_poll_set_consumer(b->consumer);

    b->store = ttb_store_new(&config->redis);
    ttb_service_config_t scfg = {.redis_url_redacted = config->redis_url_redacted,
                                 .idempotency_ttl_s = config->idempotency_ttl_s,
                                 .scan_count = config->scan_count,
                                 .directory_reconcile_ms = config->directory_reconcile_ms};
    b->service = b->store ? ttb_service_new(b->store, &scfg) : NULL;
    if (!b->service) {
        snprintf(errstr, errstr_size, "out of memory");
        goto fail;
    }
    return b;
fail:
    ttb_bridge_free(b);
    return NULL;
}

void ttb_bridge_free(ttb_bridge_t *b) {
    if (!b) return;
    /* The group was left (or given up on) in ttb_bridge_run; destroying must
     * not try again. Whatever the producer still holds was never
     * acknowledged, and the offsets behind it were not committed. */
    if (b->consumer)
        rd_kafka_destroy_flags(b->consumer,
                               b->consumer_closed ? RD_KAFKA_DESTROY_F_NO_CONSUMER_CLOSE : 0);
    if (b->producer) {
        rd_kafka_purge(b->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(b->producer, 0);
        rd_kafka_destroy(b->producer);
    }
    for (size_t p = 0; p < b->nparts; p++) {
        record_t *r = b->parts[p].head;
        while (r) {
            record_t *next = r->next;
            record_free(r);
            r = next;
        }
        free(b->parts[p].unseen);
    }
    free(b->parts);
    free(b->refused);
    free(b->stalled);
    free(b->retry);
    ttb_waits_free(b->waits);
    free(b->settings);
    if (b->watch) redisFree(b->watch);
    for (size_t i = 0; b->watch_patterns && i < 2 * b->config->ntowns; i++)
        free(b->watch_patterns[i]);
    free(b->watch_patterns);
    ttb_service_free(b->service);
    ttb_store_free(b->store);
    free(b);
}

/* Leaves the group, bounded: with the coordinator unreachable a plain
 * rd_kafka_consumer_close() can wait for the whole session timeout. What is
 * not committed by then is delivered again, to this bridge or another. */
static void close_consumer(ttb_bridge_t *b, uint64_t deadline_us) {
    rd_kafka_queue_t *q = rd_kafka_queue_new(b->consumer);
    rd_kafka_error_t *error = rd_kafka_consumer_close_queue(b->consumer, q);
    if (error) {
        ttb_log_warn("consumer close failed", "error", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
    } else {
        /* Served as events: records fetched meanwhile come back as events
         * we drop (their offsets are not stored, so they go to the next
         * owner); queue_poll_callback would abort on them inside
         * librdkafka. */
        while (!rd_kafka_consumer_closed(b->consumer) && now_us() < deadline_us) {
            rd_kafka_event_t *ev = rd_kafka_queue_poll(q, 100);
            if (!ev) continue;
            /* The group's goodbye waits for the revocation to be answered;
             * as an event it does not reach the callback by itself. */
            if (rd_kafka_event_type(ev) == RD_KAFKA_EVENT_REBALANCE)
                rebalance_cb(b->consumer, rd_kafka_event_error(ev),
                             rd_kafka_event_topic_partition_list(ev), b);
            rd_kafka_event_destroy(ev);
        }
    }
    bool closed = rd_kafka_consumer_closed(b->consumer);
    rd_kafka_queue_destroy(q);
    if (!closed) {
        /* librdkafka 2.0.2 spins forever destroying a consumer whose group
         * close is still pending (seen with the broker gone), so the handle
         * is left to the process's exit instead. */
        ttb_log_warn("left the consumer group without saying goodbye",
                     "reason", "kafka did not answer before the shutdown timeout");
        b->consumer = NULL;
    }
    b->consumer_closed = true;
}

/* Starts the companions' stop (relay, capture) alongside ours. */
static void begin_stop(ttb_bridge_t *b) {
    b->stop_deadline_us = now_us() + (uint64_t)b->config->shutdown_timeout_ms * 1000u;
    if (b->on_stop) b->on_stop(b->on_stop_arg);
    b->on_stop = NULL;
}

void ttb_bridge_on_stop(ttb_bridge_t *b, void (*fn)(void *arg), void *arg) {
    b->on_stop = fn;
    b->on_stop_arg = arg;
}

/* Everything within one bound: Redis work first, but it must leave Kafka a
 * third of the time (at most 3 s) to deliver the results and to leave the
 * group, whatever state Redis is in (a hung server answers nothing). */
static void shutdown_gracefully(ttb_bridge_t *b) {
    set_paused(b, true);
    uint64_t deadline = b->stop_deadline_us;
    uint64_t reserve = (uint64_t)b->config->shutdown_timeout_ms * 1000u / 3;
    if (reserve > 3000000u) reserve = 3000000u;
    uint64_t redis_deadline = deadline - reserve;
    ttb_store_set_deadline(b->store, (int64_t)(redis_deadline / 1000u));
    /* Apply what was already taken, if Redis lets us within the bound. */
    while (b->nstalled && !b->fatal && now_us() < redis_deadline) {
        apply_stalled(b);
        if (b->nstalled) rd_kafka_consumer_poll(b->consumer, 100);
    }
    if (b->eos) {
        b->leaving = true;
        eos_advance(b);
        eos_commit(b, ms_left(deadline - reserve / 2));
        char commits[24], aborts[24];
        snprintf(commits, sizeof(commits), "%" PRIu64, b->txn_commits);
        snprintf(aborts, sizeof(aborts), "%" PRIu64, b->txn_aborts);
        ttb_log_info("transactions", "committed", commits, "aborted", aborts);
    }
    rd_kafka_flush(b->producer, ms_left(deadline - reserve / 2));
    /* Leaving the group commits the stored offsets (auto-commit is on), within
     * the same deadline; a synchronous commit here could wait unbounded. */
    store_offsets(b);
    char waits[16], stalled[16], unacked[16];
    snprintf(waits, sizeof(waits), "%zu", ttb_waits_count(b->waits));
    snprintf(stalled, sizeof(stalled), "%zu", b->nstalled);
    snprintf(unacked, sizeof(unacked), "%d", rd_kafka_outq_len(b->producer));
    close_consumer(b, deadline);
    if (ttb_store_connected(b->store)) ttb_peers_leave(b->store, b->config->group_id, b->instance);
    ttb_log_info("stopped", "pending_waits_left", waits, "unapplied_left", stalled,
                 "unacknowledged_left", unacked);
}

int ttb_bridge_run(ttb_bridge_t *b, const volatile sig_atomic_t *stop) {
    const ttb_config_t *c = b->config;
    char err[1024];
    ttb_metrics.redis_up = false;
    int crc = redis_connect(b, err, sizeof(err));
    if (crc == TTB_ERR_DENIED || crc == TTB_ERR_INVALID) {
        /* A certificate, a password, an ACL, a TLS file: waiting does not cure it. */
        ttb_log_error(crc == TTB_ERR_DENIED ? "cannot start: redis refused the bridge"
                                            : "cannot start: redis TLS settings",
                      "error", err);
        return TTB_ERR_INVALID;
    }
    if (crc) {
        ttb_log_warn("redis unreachable at start; will keep trying", "error", err);
        redis_went_down(b);
    } else {
        ttb_metrics.redis_up = true;
    }

    /* A wrong password or certificate is retried by librdkafka for ever:
     * here it ends the start with one line naming the cause. */
    int arc = ttb_kafka_await_broker(b->producer, &b->security, 10000);
    if (arc == TTB_ERR_INVALID) {
        ttb_log_error("cannot start: kafka refuses the connection", "cause",
                      ttb_kafka_security_cause(&b->security), "error", b->security.reason);
        return TTB_ERR_INVALID;
    }
    const char *needed[] = {c->commands_topic, c->results_topic, c->dlq_topic,
                            c->relay_enabled ? c->events_topic : c->results_topic};
    int trc = ttb_kafka_ensure_topics(b->producer, needed, 4, c->create_topics,
                                      c->topic_partitions, arc ? 1000 : 10000, err, sizeof(err));
    if (trc == TTB_ERR_NOTFOUND || (trc && c->create_topics)) {
        ttb_log_error("cannot start: topics", "error", err);
        return TTB_ERR_INVALID;
    }
    if (trc) ttb_log_warn("kafka did not list its topics at start; will keep trying", "error", err);

    bool from_topic = false;
    b->max_result_bytes =
        ttb_kafka_max_record_bytes(b->producer, c->results_topic, 3000, &from_topic);
    char limit[32];
    snprintf(limit, sizeof(limit), "%zu", b->max_result_bytes);
    ttb_log_info("largest result record", "bytes", limit, "topic", c->results_topic, "source",
                 from_topic ? "topic max.message.bytes" : "producer message.max.bytes");

    if (b->eos) eos_init(b, b->txn_timeout_ms); /* else again on each pass */

    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, c->commands_topic, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t kerr = rd_kafka_subscribe(b->consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    if (kerr) {
        ttb_log_error("subscribe failed", "topic", c->commands_topic, "error",
                      rd_kafka_err2str(kerr));
        return TTB_ERR_IO;
    }
    b->running = true;
    ttb_log_info("bridge running", "commands", c->commands_topic, "results", c->results_topic,
                 "group", c->group_id, "redis", c->redis_url_redacted);

    uint64_t summary_every = (uint64_t)(c->summary_interval_s > 0 ? c->summary_interval_s : 30) *
                             1000000u;
    b->next_summary_us = now_us() + summary_every;
    while (!*stop && !b->fatal) {
        /* Hold back while Redis is down, or too much awaits acknowledgement.
         * Pending waits have a bound of their own and never count against
         * the other commands'. */
        size_t nwaits = ttb_waits_count(b->waits);
        int64_t active = b->in_flight - (int64_t)nwaits;
        bool hold = b->redis_down || b->nstalled > 0 || b->rewind_pending ||
                    (b->eos && !b->txn_ready) || active >= (int64_t)c->max_in_flight ||
                    nwaits >= c->max_pending_waits;
        bool release = !b->redis_down && b->nstalled == 0 &&
                       active < (int64_t)(c->max_in_flight - c->max_in_flight / 10) &&
                       nwaits < c->max_pending_waits - c->max_pending_waits / 10;
        if (hold && nwaits >= c->max_pending_waits && !b->paused)
            ttb_log_warn("pending waits at bridge.max_pending_waits: pausing consumption");
        if (hold) set_paused(b, true);
        else if (release) set_paused(b, false);

        int timeout = b->paused ? 50 : 100;
        if (nwaits) timeout = 10;
        poll_batch(b, timeout);
        apply_stalled(b);
        redis_tick(b);
        rd_kafka_poll(b->producer, 0);
        retry_deliveries(b);
        check_waits(b);
        if (b->eos) eos_tick(b);
        store_offsets(b);
        if (now_us() >= b->next_lag_us) {
            update_lag(b);
            b->next_lag_us = now_us() + 1000000u;
        }
        if (now_us() >= b->next_summary_us) {
            summary(b, summary_every);
            b->next_summary_us = now_us() + summary_every;
        }
        if (rd_kafka_fatal_error(b->producer, NULL, 0)) producer_restart(b);
        check_security(b);
    }
    begin_stop(b);
    if (b->fatal) {
        /* Do not commit anything more: what is not acknowledged comes back. */
        ttb_log_error("stopping after a fatal error", "error", b->fatal_msg);
        close_consumer(b, b->stop_deadline_us);
        return b->fatal;
    }
    ttb_log_info("stopping", "reason", "signal");
    shutdown_gracefully(b);
    return 0;
}
