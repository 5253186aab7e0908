/* SPDX-License-Identifier: MIT */
/*
 * ttb-echo: the benchmark's stand-in for the bridge when the question is how
 * fast Kafka and the load generator alone can go (bench/run --echo).
 *
 * It does the Kafka half of the bridge's work and nothing else: consumes
 * command records in a consumer group (the bridge's consumer settings as
 * bench/run gives them), parses each as JSON, and produces one "ok" result
 * per command, keyed by the command id with the tt-status header, on an
 * idempotent acks=all producer with the bridge's linger. No Redis, no
 * validation, no idempotency: the ceiling the bridge can approach, never a
 * bridge. A spawn's result carries a made-up agent id, since ttb-loadgen
 * reads those.
 *
 *   ttb-echo --brokers HOST:PORT [--group ID] [--fetch-wait-ms N]
 *
 * Runs until SIGINT or SIGTERM, then flushes and exits 0 (1 on failure).
 */
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_PROG "ttb-echo"
#define COMMANDS_TOPIC "tinytown.commands"
#define RESULTS_TOPIC "tinytown.results"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static int set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char err[256];
    if (rd_kafka_conf_set(conf, name, value, err, sizeof(err)) == RD_KAFKA_CONF_OK) return 0;
    fprintf(stderr, ECHO_PROG ": %s=%s: %s\n", name, value, err);
    return -1;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    (void)opaque;
    if (m->err) fprintf(stderr, ECHO_PROG ": result not delivered: %s\n", rd_kafka_err2str(m->err));
}

static rd_kafka_resp_err_t produce_result(rd_kafka_t *producer, const char *id,
                                          const char *payload) {
    return rd_kafka_producev(producer, RD_KAFKA_V_TOPIC(RESULTS_TOPIC),
                             RD_KAFKA_V_KEY(id, strlen(id)),
                             RD_KAFKA_V_VALUE((void *)(uintptr_t)payload, strlen(payload)),
                             RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY),
                             RD_KAFKA_V_HEADER("tt-status", "ok", 2), RD_KAFKA_V_END);
}

/* One result for one command record; 0, or -1 when it cannot be queued. */
static int answer(rd_kafka_t *producer, const rd_kafka_message_t *m, uint64_t *spawned) {
    json_error_t jerr;
    json_t *cmd = json_loadb(m->payload, m->len, 0, &jerr);
    const char *id = json_string_value(json_object_get(cmd, "id"));
    const char *op = json_string_value(json_object_get(cmd, "op"));
    if (!id || !op) {
        json_decref(cmd);
        return 0; /* not a command: a bridge would dead-letter it */
    }
    char agent[40];
    snprintf(agent, sizeof(agent), "00000000-0000-4000-8000-%012" PRIu64,
             (*spawned)++ % 1000000000000u);
    json_t *res = json_pack("{s:s, s:b, s:s, s:{s:{s:s}}}", "id", id, "ok", 1, "op", op, "result",
                            "agent", "id", agent);
    char *payload = res ? json_dumps(res, JSON_COMPACT) : NULL;
    rd_kafka_resp_err_t err = payload ? produce_result(producer, id, payload) : RD_KAFKA_RESP_ERR__FAIL;
    while (err == RD_KAFKA_RESP_ERR__QUEUE_FULL && !stop_requested) {
        rd_kafka_poll(producer, 10);
        err = produce_result(producer, id, payload);
    }
    if (err) fprintf(stderr, ECHO_PROG ": produce: %s\n", rd_kafka_err2str(err));
    free(payload);
    json_decref(res);
    json_decref(cmd);
    return err ? -1 : 0;
}

int main(int argc, char **argv) {
    const char *brokers = NULL, *group = "ttb-echo", *fetch_wait = "500";
    for (int i = 1; i < argc; i++) {
        if (i + 1 < argc && strcmp(argv[i], "--brokers") == 0) brokers = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--group") == 0) group = argv[++i];
        else if (i + 1 < argc && strcmp(argv[i], "--fetch-wait-ms") == 0) fetch_wait = argv[++i];
        else {
            fprintf(stderr, "usage: " ECHO_PROG " --brokers HOST:PORT [--group ID] [--fetch-wait-ms N]\n");
            return 2;
        }
    }
    if (!brokers) {
        fprintf(stderr, ECHO_PROG ": --brokers is required\n");
        return 2;
    }
    signal(SIGINT, on_signal);
    signal(SIGTERM, on_signal);

    char err[512];
    rd_kafka_conf_t *pconf = rd_kafka_conf_new(), *cconf = rd_kafka_conf_new();
    if (set(pconf, "bootstrap.servers", brokers) || set(pconf, "enable.idempotence", "true") ||
        set(pconf, "acks", "all") || set(pconf, "linger.ms", "2") ||
        set(cconf, "bootstrap.servers", brokers) || set(cconf, "group.id", group) ||
        set(cconf, "auto.offset.reset", "earliest") || set(cconf, "fetch.wait.max.ms", fetch_wait) ||
        set(cconf, "queued.max.messages.kbytes", "8192") ||
        set(cconf, "queued.min.messages", "50000"))
        return 1;
    rd_kafka_conf_set_dr_msg_cb(pconf, on_delivery);
    rd_kafka_t *producer = rd_kafka_new(RD_KAFKA_PRODUCER, pconf, err, sizeof(err));
    if (!producer) {
        fprintf(stderr, ECHO_PROG ": producer: %s\n", err);
        return 1;
    }
    rd_kafka_t *consumer = rd_kafka_new(RD_KAFKA_CONSUMER, cconf, err, sizeof(err));
    if (!consumer) {
        fprintf(stderr, ECHO_PROG ": consumer: %s\n", err);
        rd_kafka_destroy(producer);
        return 1;
    }
    rd_kafka_poll_set_consumer(consumer);
    rd_kafka_topic_partition_list_t *topics = rd_kafka_topic_partition_list_new(1);
    rd_kafka_topic_partition_list_add(topics, COMMANDS_TOPIC, RD_KAFKA_PARTITION_UA);
    rd_kafka_resp_err_t serr = rd_kafka_subscribe(consumer, topics);
    rd_kafka_topic_partition_list_destroy(topics);
    int rc = 0;
    if (serr) {
        fprintf(stderr, ECHO_PROG ": subscribe: %s\n", rd_kafka_err2str(serr));
        rc = 1;
    }
    uint64_t spawned = 0;
    while (!rc && !stop_requested) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(consumer, 100);
        if (m && !m->err && answer(producer, m, &spawned)) rc = 1;
        if (m) rd_kafka_message_destroy(m);
        rd_kafka_poll(producer, 0);
    }
    rd_kafka_consumer_close(consumer);
    rd_kafka_destroy(consumer);
    if (rd_kafka_flush(producer, 10000) != RD_KAFKA_RESP_ERR_NO_ERROR) {
        fprintf(stderr, ECHO_PROG ": %d results not delivered at exit\n", rd_kafka_outq_len(producer));
        rc = 1;
    }
    rd_kafka_destroy(producer);
    return rc;
}
