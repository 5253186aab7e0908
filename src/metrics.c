/* SPDX-License-Identifier: MIT */
/*
 * Metrics: the process's counters and gauges, and their Prometheus text
 * exposition (format 0.0.4). The hot path only ever does a relaxed atomic
 * add or store on a field of the global ttb_metrics; everything costly —
 * walking the tables, turning microseconds into seconds, making histogram
 * buckets cumulative, escaping labels — happens here, on the HTTP thread, when
 * someone scrapes /metrics. Relaxed ordering is enough because each number is
 * meaningful on its own: a scrape may see a counter one step ahead of its
 * neighbour, never a torn or invented value.
 *
 * ttb_metrics lives in zero-initialised static storage, and zero is a valid
 * starting value for every field except consumer_lag, where -1 means "no
 * partition here". main therefore calls ttb_metrics_reset() once at start-up
 * (tests call it before each case); without it every slot would expose a lag
 * of 0 for a partition the process never had.
 */
#include "tinytown_bridge/metrics.h"

#include <inttypes.h>

#include "ttb_version.h"

ttb_metrics_t ttb_metrics;

/* Bucket bounds of the command latency histogram, kept in microseconds for
 * the hot path (an integer compare) and as text for the exposition, so the
 * `le` labels are exactly the documented values, not float renderings. */
static const struct {
    uint64_t us;
    const char *le;
} latency_bounds[TTB_LATENCY_BUCKETS] = {
    {1000, "0.001"},    {2500, "0.0025"},   {5000, "0.005"},   {10000, "0.01"},
    {25000, "0.025"},   {50000, "0.05"},    {100000, "0.1"},   {250000, "0.25"},
    {500000, "0.5"},    {1000000, "1"},     {2500000, "2.5"},  {5000000, "5"},
};

_Static_assert(sizeof(latency_bounds) / sizeof(latency_bounds[0]) == TTB_LATENCY_BUCKETS,
               "one bound per latency bucket");

#define LOAD(field) atomic_load_explicit(&(field), memory_order_relaxed)
#define STORE(field, v) atomic_store_explicit(&(field), (v), memory_order_relaxed)
#define ADD(field, v) atomic_fetch_add_explicit(&(field), (v), memory_order_relaxed)

void ttb_metrics_reset(void) {
    /* Field by field: the fields are atomics, which memset may not touch. */
    for (int op = 0; op < (int)TTB_OP__COUNT; op++)
        for (int code = 0; code < (int)TTB_CODE__COUNT; code++)
            STORE(ttb_metrics.commands[op][code], 0);
    STORE(ttb_metrics.invalid_records, 0);
    for (int code = 0; code < (int)TTB_CODE__COUNT; code++)
        STORE(ttb_metrics.commands_unparsed[code], 0);
    for (int i = 0; i <= TTB_LATENCY_BUCKETS; i++) STORE(ttb_metrics.latency_bucket[i], 0);
    STORE(ttb_metrics.latency_count, 0);
    STORE(ttb_metrics.latency_sum_us, 0);
    STORE(ttb_metrics.batches, 0);
    STORE(ttb_metrics.batch_records, 0);
    STORE(ttb_metrics.dead_letters, 0);
    STORE(ttb_metrics.dead_letters_dropped, 0);
    STORE(ttb_metrics.kafka_delivery_failing, false);
    STORE(ttb_metrics.kafka_security_failing, false);
    STORE(ttb_metrics.peers_disagree, false);
    STORE(ttb_metrics.replayed, 0);
    STORE(ttb_metrics.redis_reconnects, 0);
    STORE(ttb_metrics.redis_outage_us, 0);
    STORE(ttb_metrics.redis_up, false);
    STORE(ttb_metrics.assigned, false);
    STORE(ttb_metrics.in_flight, 0);
    STORE(ttb_metrics.pending_waits, 0);
    STORE(ttb_metrics.producer_queue, 0);
    for (int p = 0; p < TTB_METRICS_MAX_PARTITIONS; p++) STORE(ttb_metrics.consumer_lag[p], -1);
    STORE(ttb_metrics.events_relayed, 0);
    STORE(ttb_metrics.relay_gaps, 0);
    STORE(ttb_metrics.relay_lag, 0);
    STORE(ttb_metrics.states_captured, 0);
}

void ttb_metrics_command(int op, ttb_code_t code, uint64_t latency_us) {
    /* An out-of-range code would index past the tables; count it as what it
     * is, a bug surfacing as an internal error, rather than corrupt memory. */
    if ((int)code < 0 || (int)code >= (int)TTB_CODE__COUNT) code = TTB_CODE_INTERNAL;
    if (op >= 0 && op < (int)TTB_OP__COUNT) {
        ADD(ttb_metrics.commands[op][code], 1);
    } else {
        ADD(ttb_metrics.commands_unparsed[code], 1);
        ADD(ttb_metrics.invalid_records, 1);
    }
    /* Stored per bucket (one add, not one per bound); made cumulative when written. */
    int b = 0;
    while (b < TTB_LATENCY_BUCKETS && latency_us > latency_bounds[b].us) b++;
    ADD(ttb_metrics.latency_bucket[b], 1);
    ADD(ttb_metrics.latency_sum_us, latency_us);
    ADD(ttb_metrics.latency_count, 1);
}

void ttb_metrics_write_label(FILE *fp, const char *value) {
    /* The three escapes the text format defines for label values. */
    for (const char *s = value ? value : ""; *s; s++) {
        switch (*s) {
        case '\\': fputs("\\\\", fp); break;
        case '"': fputs("\\\"", fp); break;
        case '\n': fputs("\\n", fp); break;
        default: fputc(*s, fp); break;
        }
    }
}

static void family(FILE *fp, const char *name, const char *type, const char *help) {
    fprintf(fp, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void counter(FILE *fp, const char *name, const char *help, uint64_t v) {
    family(fp, name, "counter", help);
    fprintf(fp, "%s %" PRIu64 "\n", name, v);
}

static void gauge(FILE *fp, const char *name, const char *help, int64_t v) {
    family(fp, name, "gauge", help);
    fprintf(fp, "%s %" PRId64 "\n", name, v);
}

/* Microseconds as seconds, exactly: integer part and six decimals, so a
 * large total never loses precision to a double. */
static void seconds(FILE *fp, uint64_t us) {
    fprintf(fp, "%" PRIu64 ".%06" PRIu64, us / 1000000u, us % 1000000u);
}

static void command_sample(FILE *fp, const char *op, ttb_code_t code, uint64_t v) {
    fputs("tinytown_bridge_commands_total{op=\"", fp);
    ttb_metrics_write_label(fp, op);
    fputs("\",outcome=\"", fp);
    ttb_metrics_write_label(fp, ttb_code_name(code));
    fprintf(fp, "\"} %" PRIu64 "\n", v);
}

static void write_commands(FILE *fp) {
    family(fp, "tinytown_bridge_commands_total", "counter",
           "Command records answered with a result, by op and outcome (\"ok\" or the error "
           "code; op=\"none\" for records that never parsed into an op).");
    /* Each op's "ok" series is always written, so rate() has a series from the
     * first scrape; error series appear once they have happened, which keeps a
     * scrape to the few dozen lines that carry information. */
    for (int op = 0; op < (int)TTB_OP__COUNT; op++) {
        for (int code = 0; code < (int)TTB_CODE__COUNT; code++) {
            uint64_t v = LOAD(ttb_metrics.commands[op][code]);
            if (v || code == TTB_CODE_OK) command_sample(fp, ttb_op_name((ttb_op_t)op), (ttb_code_t)code, v);
        }
    }
    for (int code = 0; code < (int)TTB_CODE__COUNT; code++) {
        uint64_t v = LOAD(ttb_metrics.commands_unparsed[code]);
        if (v) command_sample(fp, "none", (ttb_code_t)code, v);
    }
}

static void write_latency(FILE *fp) {
    static const char name[] = "tinytown_bridge_command_duration_seconds";
    family(fp, name, "histogram",
           "Time from receiving a command record to producing its result.");
    /* _count is the running sum of the buckets read here rather than
     * latency_count: a command recorded during the scrape could otherwise
     * make +Inf and _count disagree, which Prometheus treats as corrupt. */
    uint64_t cumulative = 0;
    for (int b = 0; b < TTB_LATENCY_BUCKETS; b++) {
        cumulative += LOAD(ttb_metrics.latency_bucket[b]);
        fprintf(fp, "%s_bucket{le=\"%s\"} %" PRIu64 "\n", name, latency_bounds[b].le, cumulative);
    }
    cumulative += LOAD(ttb_metrics.latency_bucket[TTB_LATENCY_BUCKETS]);
    fprintf(fp, "%s_bucket{le=\"+Inf\"} %" PRIu64 "\n", name, cumulative);
    fprintf(fp, "%s_sum ", name);
    seconds(fp, LOAD(ttb_metrics.latency_sum_us));
    fprintf(fp, "\n%s_count %" PRIu64 "\n", name, cumulative);
}

static void write_lag(FILE *fp) {
    family(fp, "tinytown_bridge_consumer_lag_messages", "gauge",
           "Records between the consumer's position and the partition's end, per assigned "
           "partition of the commands topic.");
    for (int p = 0; p < TTB_METRICS_MAX_PARTITIONS; p++) {
        int64_t lag = LOAD(ttb_metrics.consumer_lag[p]);
        if (lag >= 0)
            fprintf(fp, "tinytown_bridge_consumer_lag_messages{partition=\"%d\"} %" PRId64 "\n", p,
                    lag);
    }
}

void ttb_metrics_write(FILE *fp) {
    write_commands(fp);
    write_latency(fp);
    counter(fp, "tinytown_bridge_batches_total", "Batches of command records processed.",
            LOAD(ttb_metrics.batches));
    counter(fp, "tinytown_bridge_batch_records_total",
            "Command records processed in batches (divide by batches_total for the mean size).",
            LOAD(ttb_metrics.batch_records));
    counter(fp, "tinytown_bridge_dead_letters_total",
            "Records copied to the dead-letter topic.", LOAD(ttb_metrics.dead_letters));
    counter(fp, "tinytown_bridge_dead_letters_dropped_total",
            "Dead letters Kafka refused for their size (their commands still got results).",
            LOAD(ttb_metrics.dead_letters_dropped));
    counter(fp, "tinytown_bridge_replayed_results_total",
            "Results answered from an idempotency record (the command was applied before).",
            LOAD(ttb_metrics.replayed));
    counter(fp, "tinytown_bridge_redis_reconnects_total",
            "Times the connection to Redis was re-established after a loss.",
            LOAD(ttb_metrics.redis_reconnects));
    family(fp, "tinytown_bridge_redis_outage_seconds_total", "counter",
           "Total time spent without a working Redis connection.");
    fputs("tinytown_bridge_redis_outage_seconds_total ", fp);
    seconds(fp, LOAD(ttb_metrics.redis_outage_us));
    fputc('\n', fp);
    gauge(fp, "tinytown_bridge_redis_up", "1 when Redis answers, else 0.",
          LOAD(ttb_metrics.redis_up) ? 1 : 0);
    gauge(fp, "tinytown_bridge_consumer_assigned",
          "1 when the consumer holds a partition assignment, else 0.",
          LOAD(ttb_metrics.assigned) ? 1 : 0);
    gauge(fp, "tinytown_bridge_peers_disagree",
          "1 while another bridge of the consumer group has other answer-changing settings.",
          LOAD(ttb_metrics.peers_disagree) ? 1 : 0);
    gauge(fp, "tinytown_bridge_kafka_delivery_failing",
          "1 while Kafka refuses results and the bridge retries them, else 0.",
          LOAD(ttb_metrics.kafka_delivery_failing) ? 1 : 0);
    gauge(fp, "tinytown_bridge_kafka_security_failing",
          "1 while a broker refuses the SASL login or the TLS handshake, else 0.",
          LOAD(ttb_metrics.kafka_security_failing) ? 1 : 0);
    gauge(fp, "tinytown_bridge_in_flight_commands",
          "Commands whose results Kafka has not yet acknowledged (including pending waits).",
          LOAD(ttb_metrics.in_flight));
    gauge(fp, "tinytown_bridge_pending_waits", "wait commands still waiting on their agent.",
          LOAD(ttb_metrics.pending_waits));
    gauge(fp, "tinytown_bridge_producer_queue_messages",
          "Messages in the producer's queue, not yet acknowledged by Kafka.",
          LOAD(ttb_metrics.producer_queue));
    write_lag(fp);
    counter(fp, "tinytown_bridge_events_relayed_total",
            "Town stream entries published to the events topic.", LOAD(ttb_metrics.events_relayed));
    counter(fp, "tinytown_bridge_relay_gaps_total",
            "Times stream entries were trimmed before the relay could publish them.",
            LOAD(ttb_metrics.relay_gaps));
    gauge(fp, "tinytown_bridge_relay_lag_entries",
          "Town stream entries not yet published to the events topic.",
          LOAD(ttb_metrics.relay_lag));
    counter(fp, "tinytown_bridge_states_captured_total",
            "agent_state_changed events written for state changes made outside the bridge.",
            LOAD(ttb_metrics.states_captured));
    family(fp, "tinytown_bridge_build_info", "gauge", "Always 1; the labels describe the build.");
    fputs("tinytown_bridge_build_info{version=\"", fp);
    ttb_metrics_write_label(fp, TTB_VERSION);
    fputs("\"} 1\n", fp);
}
