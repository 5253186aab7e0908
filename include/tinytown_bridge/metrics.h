/* SPDX-License-Identifier: MIT */
/**
 * @file metrics.h
 * @brief Process-wide counters, gauges and a latency histogram, exposed in
 *        Prometheus text format.
 *
 * Updated from any thread with relaxed atomics (cheap on the hot path), read
 * by the HTTP thread when /metrics is scraped. Names follow Prometheus
 * conventions: `tinytown_bridge_…`, `_total` for counters, `_seconds` for time.
 */
#ifndef TINYTOWN_BRIDGE_METRICS_H
#define TINYTOWN_BRIDGE_METRICS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "tinytown_bridge/command.h"
#include "tinytown_bridge/error.h"

/** Upper bounds (seconds) of the command latency histogram buckets; +Inf is implied. */
#define TTB_LATENCY_BUCKETS 12

/** Partitions tracked for consumer lag. */
#define TTB_METRICS_MAX_PARTITIONS 256

typedef struct ttb_metrics {
    /* commands[op][code]: results produced, by op and outcome (code OK = "ok") */
    atomic_uint_fast64_t commands[TTB_OP__COUNT][TTB_CODE__COUNT];
    atomic_uint_fast64_t invalid_records;   /**< records that never parsed into an op (per code in commands_unparsed) */
    atomic_uint_fast64_t commands_unparsed[TTB_CODE__COUNT];
    atomic_uint_fast64_t latency_bucket[TTB_LATENCY_BUCKETS + 1]; /**< per bucket (last: over the top bound); made cumulative at exposition time */
    atomic_uint_fast64_t latency_count;
    atomic_uint_fast64_t latency_sum_us;
    atomic_uint_fast64_t batches;
    atomic_uint_fast64_t batch_records;     /**< sum of batch sizes */
    atomic_uint_fast64_t dead_letters;
    atomic_uint_fast64_t dead_letters_dropped; /**< dead letters Kafka refused for their size */
    atomic_uint_fast64_t replayed;          /**< results answered from idempotency records */
    atomic_uint_fast64_t redis_reconnects;
    atomic_uint_fast64_t redis_outage_us;   /**< total time without Redis */
    atomic_bool redis_up;
    atomic_bool assigned;                   /**< the consumer has its partition assignment */
    atomic_bool kafka_delivery_failing;     /**< results are being refused and retried */
    atomic_bool kafka_security_failing;     /**< a broker refused our SASL login or TLS handshake */
    atomic_bool peers_disagree;             /**< a bridge of the group has other settings */
    atomic_int_fast64_t in_flight;          /**< commands whose results are not yet acknowledged */
    atomic_int_fast64_t pending_waits;
    atomic_int_fast64_t producer_queue;     /**< messages in the producer's queue */
    atomic_int_fast64_t consumer_lag[TTB_METRICS_MAX_PARTITIONS]; /**< -1 = unknown */
    atomic_uint_fast64_t events_relayed;
    atomic_uint_fast64_t relay_gaps;        /**< times entries were trimmed before the relay read them */
    atomic_int_fast64_t relay_lag;          /**< entries in streams not yet relayed */
    atomic_uint_fast64_t states_captured;   /**< agent_state_changed events written by capture */
} ttb_metrics_t;

/** The process's metrics (zero-initialised static storage). */
extern ttb_metrics_t ttb_metrics;

/**
 * Resets everything (start-up and tests). main calls it once before any
 * thread starts: it also marks every consumer_lag slot unknown (-1), which
 * zero-initialised storage cannot express.
 */
void ttb_metrics_reset(void);

/** Records one command result: op (or -1 if none parsed), code, latency in microseconds. */
void ttb_metrics_command(int op, ttb_code_t code, uint64_t latency_us);

/** Writes the Prometheus text exposition (with HELP and TYPE lines) to @p fp. */
void ttb_metrics_write(FILE *fp);

/**
 * Writes @p value escaped as a Prometheus label value (backslash, double
 * quote and newline escaped; NULL writes nothing), without the quotes.
 */
void ttb_metrics_write_label(FILE *fp, const char *value);

#endif
