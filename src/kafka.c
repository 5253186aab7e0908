/* SPDX-License-Identifier: MIT */
/*
 * librdkafka configuration shared by every Kafka client the bridge creates.
 *
 * Producers are idempotent with acks=all: a result is acknowledged only once
 * every in-sync replica has it, and retries never reorder or duplicate within
 * a partition. Consumers never let librdkafka decide what is processed: the
 * bridge stores an offset only after the record's result is acknowledged,
 * and librdkafka's auto-commit merely ships the stored offsets.
 * No compression by default: not every consumer library has every codec
 * (kafka-python without lz4, for one); operators may turn it on.
 */
#include "tinytown_bridge/kafka.h"

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "tinytown_bridge/error.h"

int ttb_kafka_set(rd_kafka_conf_t *conf, const char *key, const char *value, char *errstr,
                  size_t errstr_size) {
    char why[256];
    if (rd_kafka_conf_set(conf, key, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        snprintf(errstr, errstr_size, "%s: %s", key, why);
        return TTB_ERR_INVALID;
    }
    return 0;
}

static int set_all(rd_kafka_conf_t *conf, const ttb_kv_t *kv, size_t n, char *errstr,
                   size_t errstr_size) {
    for (size_t i = 0; i < n; i++)
        if (ttb_kafka_set(conf, kv[i].key, kv[i].value, errstr, errstr_size))
            return TTB_ERR_INVALID;
    return 0;
}

rd_kafka_conf_t *ttb_kafka_conf(const ttb_config_t *config, ttb_kafka_role_t role, char *errstr,
                                size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static const char *const producer_defaults[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "2"},
        /* listings of big towns make big results; brokers still cap them */
        {"message.max.bytes", "10000000"},
    };
    static const char *const consumer_defaults[][2] = {
        {"enable.auto.commit", "true"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "false"},
    };
    int rc = ttb_kafka_set(conf, "bootstrap.servers", config->brokers, errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "client.id", "tinytown-bridge", errstr, errstr_size);
    if (role == TTB_KAFKA_PRODUCER) {
        for (size_t i = 0; i < sizeof(producer_defaults) / sizeof(producer_defaults[0]) && !rc; i++)
            rc = ttb_kafka_set(conf, producer_defaults[i][0], producer_defaults[i][1], errstr,
                               errstr_size);
    } else {
        if (!rc) rc = ttb_kafka_set(conf, "group.id", config->group_id, errstr, errstr_size);
        for (size_t i = 0; i < sizeof(consumer_defaults) / sizeof(consumer_defaults[0]) && !rc; i++)
            rc = ttb_kafka_set(conf, consumer_defaults[i][0], consumer_defaults[i][1], errstr,
                               errstr_size);
    }
    if (!rc) rc = set_all(conf, config->kafka_props, config->nkafka_props, errstr, errstr_size);
    if (!rc && role == TTB_KAFKA_PRODUCER)
        rc = set_all(conf, config->producer_props, config->nproducer_props, errstr, errstr_size);
    if (!rc && role == TTB_KAFKA_CONSUMER)
        rc = set_all(conf, config->consumer_props, config->nconsumer_props, errstr, errstr_size);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    return conf;
}

int ttb_kafka_header(rd_kafka_headers_t *hdrs, const char *name, const char *value) {
    if (!value) value = "";
    return rd_kafka_header_add(hdrs, name, -1, value, (ssize_t)strlen(value)) ==
                   RD_KAFKA_RESP_ERR_NO_ERROR
               ? 0
               : TTB_ERR_NOMEM;
}

rd_kafka_resp_err_t ttb_kafka_produce(rd_kafka_t *rk, const char *topic, const void *key,
                                      size_t key_len, const void *value, size_t value_len,
                                      rd_kafka_headers_t *hdrs, void *opaque) {
    /* rd_kafka_produceva rather than the rd_kafka_producev macros, whose type
     * checks are GNU statement expressions that clang -Wpedantic rejects.
     * librdkafka copies key and value (F_COPY) and never writes through them. */
    rd_kafka_vu_t vus[6];
    size_t n = 0;
    memset(vus, 0, sizeof(vus));
    vus[n].vtype = RD_KAFKA_VTYPE_TOPIC;
    vus[n++].u.cstr = topic;
    if (key) {
        vus[n].vtype = RD_KAFKA_VTYPE_KEY;
        vus[n].u.mem.ptr = (void *)(uintptr_t)key;
        vus[n++].u.mem.size = key_len;
    }
    vus[n].vtype = RD_KAFKA_VTYPE_VALUE;
    vus[n].u.mem.ptr = (void *)(uintptr_t)value;
    vus[n++].u.mem.size = value_len;
    vus[n].vtype = RD_KAFKA_VTYPE_MSGFLAGS;
    vus[n++].u.i = RD_KAFKA_MSG_F_COPY;
    vus[n].vtype = RD_KAFKA_VTYPE_OPAQUE;
    vus[n++].u.ptr = opaque;
    if (hdrs) {
        vus[n].vtype = RD_KAFKA_VTYPE_HEADERS;
        vus[n++].u.headers = hdrs;
    }
    rd_kafka_error_t *error = rd_kafka_produceva(rk, vus, n);
    if (!error) return RD_KAFKA_RESP_ERR_NO_ERROR;
    rd_kafka_resp_err_t err = rd_kafka_error_code(error);
    rd_kafka_error_destroy(error);
    if (hdrs && err != RD_KAFKA_RESP_ERR__QUEUE_FULL) rd_kafka_headers_destroy(hdrs);
    return err;
}
