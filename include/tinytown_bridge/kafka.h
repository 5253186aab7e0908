/* SPDX-License-Identifier: MIT */
/**
 * @file kafka.h
 * @brief Small helpers over librdkafka shared by the bridge, the relay and `send`.
 */
#ifndef TINYTOWN_BRIDGE_KAFKA_H
#define TINYTOWN_BRIDGE_KAFKA_H

#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stddef.h>

#include "tinytown_bridge/config.h"

typedef enum ttb_kafka_role { TTB_KAFKA_PRODUCER, TTB_KAFKA_CONSUMER } ttb_kafka_role_t;

/**
 * Builds a librdkafka configuration: bootstrap servers, the role's defaults
 * (see kafka.c), then the user's properties (common, then per role) so the
 * user always has the last word. Every property is checked.
 * @returns a new conf (caller owns it until rd_kafka_new takes it) or NULL
 * with `property: problem` in @p errstr.
 */
rd_kafka_conf_t *ttb_kafka_conf(const ttb_config_t *config, ttb_kafka_role_t role, char *errstr,
                                size_t errstr_size);

/**
 * Sets what every client shares: bootstrap.servers, the security settings
 * (kafka.security_protocol, kafka.sasl_*, kafka.ssl_*) and kafka.properties,
 * in that order. The one place a client learns how to reach the brokers,
 * for the clients ttb_kafka_conf() builds and for `send`'s own consumer.
 * @returns 0 or TTB_ERR_INVALID with `property: problem` in @p errstr (never
 * a secret's value: librdkafka checks none of them at this point).
 */
int ttb_kafka_set_common(rd_kafka_conf_t *conf, const ttb_config_t *config, char *errstr,
                         size_t errstr_size);

/**
 * Checks the dates of the client certificate (kafka.ssl_certificate_location
 * or the raw ssl.certificate.location): a broker refuses an expired one with
 * a bare TLS alert, so the bridge names the cause itself, before connecting.
 * An unreadable file passes (librdkafka names it when the client is made).
 * @returns 0 or TTB_ERR_INVALID with the certificate's path and date in @p errstr.
 */
int ttb_kafka_check_certificate(const ttb_config_t *config, char *errstr, size_t errstr_size);

/**
 * A client's connection security as its error callback saw it. librdkafka
 * reports a refused SASL login as RD_KAFKA_RESP_ERR__AUTHENTICATION and a
 * failed TLS handshake (unknown CA, expired or refused certificate) as
 * RD_KAFKA_RESP_ERR__SSL, and then retries for ever: these are mistakes of
 * configuration or credentials that no retry mends, so the bridge stops on
 * them at start and turns not-ready on them later.
 */
typedef struct ttb_kafka_security {
    int err;          /**< the latest security failure (rd_kafka_resp_err_t); 0 = none */
    char reason[512]; /**< librdkafka's reason for it (names brokers, never secrets) */
} ttb_kafka_security_t;

/**
 * Call from an error callback: records @p err with @p reason when it is a
 * security failure. @returns true if it was.
 * @locality the thread that serves the client's callbacks.
 */
bool ttb_kafka_security_note(ttb_kafka_security_t *sec, int err, const char *reason);

/** The cause in a few words: "SASL authentication failed" or "TLS handshake failed". */
const char *ttb_kafka_security_cause(const ttb_kafka_security_t *sec);

/**
 * Waits until a broker answers a metadata request, at most @p timeout_ms,
 * serving @p rk's callbacks (rd_kafka_poll) between short requests so that
 * a security failure noted in @p sec ends the wait at once.
 * @returns 0 (a broker answered), TTB_ERR_INVALID (a security failure, in
 * @p sec) or TTB_ERR_IO (no answer in time: the brokers may just be down).
 */
int ttb_kafka_await_broker(rd_kafka_t *rk, const ttb_kafka_security_t *sec, int timeout_ms);

/** Sets one property, writing "key: reason" into @p errstr on failure. @returns 0 or TTB_ERR_INVALID. */
int ttb_kafka_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                  size_t errstr_size);

/**
 * Queues one message (key and value copied). Takes ownership of @p hdrs
 * (may be NULL), except on RD_KAFKA_RESP_ERR__QUEUE_FULL, when the caller
 * keeps them to try again after polling. @p opaque reaches the delivery
 * report as the message's _private.
 * @returns RD_KAFKA_RESP_ERR_NO_ERROR or why nothing was queued (e.g. __QUEUE_FULL).
 */
rd_kafka_resp_err_t ttb_kafka_produce(rd_kafka_t *rk, const char *topic, const void *key,
                                      size_t key_len, const void *value, size_t value_len,
                                      rd_kafka_headers_t *hdrs, void *opaque);

/**
 * Creates a producer configured by ttb_kafka_conf() whose delivery reports go
 * to @p dr_cb (and client errors to @p error_cb, if not NULL), with @p opaque.
 * @returns it, or NULL with @p errstr ("@p what: reason").
 */
rd_kafka_t *ttb_kafka_producer_new(const ttb_config_t *config, const char *what,
                                   void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                                   void (*error_cb)(rd_kafka_t *, int, const char *, void *),
                                   void *opaque, char *errstr, size_t errstr_size);

/**
 * Like ttb_kafka_producer_new(), but transactional (kafka.exactly_once):
 * with @p transactional_id (copied), transaction.timeout.ms 10 s unless the
 * operator set it, and rd_kafka_init_transactions() done (waiting at most
 * @p timeout_ms), which fences every earlier producer with that id; with
 * @p timeout_ms 0 that is left to the caller (it may take several calls).
 * @returns it, or NULL with @p errstr.
 * @locality the thread that will use it
 */
rd_kafka_t *ttb_kafka_txn_producer_new(const ttb_config_t *config, const char *what,
                                       const char *transactional_id, int timeout_ms,
                                       void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *,
                                                     void *),
                                       void (*error_cb)(rd_kafka_t *, int, const char *, void *),
                                       void *opaque, char *errstr, size_t errstr_size);

/**
 * Commits the open transaction of @p rk, with @p offsets (may be NULL or
 * empty; not taken) sent for the group of @p cgmd first, all within about
 * @p timeout_ms (an abort after a failure included). Whatever fails is
 * aborted here (librdkafka 2.0.2 cannot resume a send_offsets that timed
 * out), so on TTB_ERR_IO nothing of the transaction is visible to
 * read_committed readers, unless *@p fatal is set: then the producer is
 * fenced or failed, or the commit's outcome is unknown, and the caller must
 * replace it (its successor's init_transactions settles the transaction)
 * and look at the committed offsets again.
 * @returns 0 when committed, or TTB_ERR_IO with the reason in @p errstr.
 */
int ttb_kafka_txn_commit(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *offsets,
                         const rd_kafka_consumer_group_metadata_t *cgmd, int timeout_ms,
                         bool *fatal, char *errstr, size_t errstr_size);

/** Adds a string header (copied). @returns 0 or TTB_ERR_NOMEM. */
int ttb_kafka_header(rd_kafka_headers_t *hdrs, const char *name, const char *value);

/**
 * How many bytes a record value may have on @p topic: the smaller of the
 * producer's message.max.bytes and the topic's max.message.bytes (asked of
 * the broker, waiting at most @p timeout_ms), less room for key, headers
 * and framing. *@p from_topic says whether the broker answered.
 */
size_t ttb_kafka_max_record_bytes(rd_kafka_t *producer, const char *topic, int timeout_ms,
                                  bool *from_topic);

/**
 * Makes sure each of @p n topics exists: asks the broker for its topics
 * (waiting at most @p timeout_ms) and, when @p create is set, creates the
 * missing ones with @p partitions partitions.
 * @returns 0 when all exist (or were created); TTB_ERR_NOTFOUND with the
 * missing topics named in @p errstr; TTB_ERR_IO when the broker did not
 * answer in time (the caller decides: it may simply be down for now).
 */
int ttb_kafka_ensure_topics(rd_kafka_t *rk, const char *const *topics, size_t n, bool create,
                            int partitions, int timeout_ms, char *errstr, size_t errstr_size);

#endif
