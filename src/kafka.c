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
 *
 * Security: the first-class kafka.security_protocol, kafka.sasl_* and
 * kafka.ssl_* settings reach every client through ttb_kafka_set_common().
 * librdkafka retries a refused SASL login or TLS handshake for ever, so the
 * error callbacks note those (ttb_kafka_security_note) for the callers to
 * stop or turn not-ready; and a broker refuses an expired client
 * certificate with a bare TLS alert, so its dates are read here first.
 */
#include "tinytown_bridge/kafka.h"

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tinytown_bridge/clock.h"
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

/* "2026-11-29 18:46:29 UTC" */
static void cert_time(const ASN1_TIME *t, char *buf, size_t size) {
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1 || !strftime(buf, size, "%Y-%m-%d %H:%M:%S UTC", &tm))
        snprintf(buf, size, "(unreadable date)");
}

int ttb_kafka_check_certificate(const ttb_config_t *config, char *errstr, size_t errstr_size) {
    const char *path = ttb_config_kafka_effective(config, "ssl.certificate.location",
                                                  config->kafka_ssl_certificate_location);
    FILE *fp = path ? fopen(path, "r") : NULL;
    if (!fp) return 0; /* none, or librdkafka names the unreadable file */
    X509 *cert = PEM_read_X509(fp, NULL, NULL, NULL);
    fclose(fp);
    /* What OpenSSL queued about a file it could not read must not surface
     * later as the reason of an unrelated librdkafka failure. */
    ERR_clear_error();
    if (!cert) return 0;
    char when[64];
    int rc = 0;
    if (X509_cmp_current_time(X509_get0_notAfter(cert)) < 0) {
        cert_time(X509_get0_notAfter(cert), when, sizeof(when));
        snprintf(errstr, errstr_size,
                 "kafka.ssl_certificate_location: the client certificate %s expired on %s", path,
                 when);
        rc = TTB_ERR_INVALID;
    } else if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0) {
        cert_time(X509_get0_notBefore(cert), when, sizeof(when));
        snprintf(errstr, errstr_size,
                 "kafka.ssl_certificate_location: the client certificate %s is not valid before %s",
                 path, when);
        rc = TTB_ERR_INVALID;
    }
    X509_free(cert);
    return rc;
}

int ttb_kafka_set_common(rd_kafka_conf_t *conf, const ttb_config_t *config, char *errstr,
                         size_t errstr_size) {
    const struct {
        const char *key, *value;
    } security[] = {
        {"security.protocol", config->kafka_security_protocol},
        {"sasl.mechanisms", config->kafka_sasl_mechanism},
        {"sasl.username", config->kafka_sasl_username},
        {"sasl.password", config->kafka_sasl_password},
        {"ssl.ca.location", config->kafka_ssl_ca_location},
        {"ssl.certificate.location", config->kafka_ssl_certificate_location},
        {"ssl.key.location", config->kafka_ssl_key_location},
        {"ssl.key.password", config->kafka_ssl_key_password},
    };
    int rc = ttb_kafka_check_certificate(config, errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "bootstrap.servers", config->brokers, errstr, errstr_size);
    for (size_t i = 0; i < sizeof(security) / sizeof(security[0]) && !rc; i++)
        if (security[i].value)
            rc = ttb_kafka_set(conf, security[i].key, security[i].value, errstr, errstr_size);
    if (!rc) rc = set_all(conf, config->kafka_props, config->nkafka_props, errstr, errstr_size);
    return rc;
}

rd_kafka_conf_t *ttb_kafka_conf(const ttb_config_t *config, ttb_kafka_role_t role, char *errstr,
                                size_t errstr_size) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    static const char *const producer_defaults[][2] = {
        {"enable.idempotence", "true"},
        {"acks", "all"},
        {"linger.ms", "2"},
    };
    static const char *const consumer_defaults[][2] = {
        {"enable.auto.commit", "true"},
        {"enable.auto.offset.store", "false"},
        {"auto.offset.reset", "earliest"},
        {"enable.partition.eof", "false"},
        /* librdkafka prefetches up to 64 MiB or 100,000 records per
         * partition by default: a backlog of small commands then costs more
         * memory than a town of 100,000 agents (68 MiB peak RSS there, 60
         * with these). Fewer records starve the fetcher: with 10,000 even
         * an echo of the commands managed only 14,000 a second, with 50,000
         * it manages 80,000, eight times the bridge (bench/run --echo). */
        {"queued.max.messages.kbytes", "8192"},
        {"queued.min.messages", "50000"},
    };
    int rc = ttb_kafka_set(conf, "client.id", "tinytown-bridge", errstr, errstr_size);
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
    if (!rc) rc = ttb_kafka_set_common(conf, config, errstr, errstr_size);
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

bool ttb_kafka_security_note(ttb_kafka_security_t *sec, int err, const char *reason) {
    /* A broker that refuses our client certificate does so after the
     * handshake (TLS 1.3): librdkafka 2.0.2 then reports the peer's alert as
     * a receive failure, __TRANSPORT, which is never a passing outage. */
    if (err == RD_KAFKA_RESP_ERR__TRANSPORT && reason && strstr(reason, "SSL alert number"))
        err = RD_KAFKA_RESP_ERR__SSL;
    if (err != RD_KAFKA_RESP_ERR__AUTHENTICATION && err != RD_KAFKA_RESP_ERR__SSL) return false;
    sec->err = err;
    snprintf(sec->reason, sizeof(sec->reason), "%s", reason ? reason : "");
    return true;
}

const char *ttb_kafka_security_cause(const ttb_kafka_security_t *sec) {
    return sec->err == RD_KAFKA_RESP_ERR__AUTHENTICATION ? "SASL authentication failed"
                                                         : "TLS handshake failed";
}

int ttb_kafka_await_broker(rd_kafka_t *rk, const ttb_kafka_security_t *sec, int timeout_ms) {
    /* Short requests: rd_kafka_metadata serves no callbacks while it waits. */
    enum { STEP_MS = 500 };
    int64_t deadline = ttb_clock_ms() + timeout_ms;
    for (int64_t left = timeout_ms; left > 0; left = deadline - ttb_clock_ms()) {
        int step = left < STEP_MS ? (int)left : STEP_MS;
        int64_t started = ttb_clock_ms();
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, NULL, &md, step);
        if (md) rd_kafka_metadata_destroy(md);
        if (!err) return 0;
        /* A refusal can come back at once: the rest of the step paces it. */
        int64_t spent = ttb_clock_ms() - started;
        rd_kafka_poll(rk, spent < step ? (int)(step - spent) : 0);
        if (sec->err) return TTB_ERR_INVALID;
    }
    return TTB_ERR_IO;
}

/* The topic's max.message.bytes, asked with DescribeConfigs. @returns 0 or
 * -1 (the broker did not say: an old or mock broker, no ACL to describe). */
static int topic_max_bytes(rd_kafka_t *rk, const char *topic, int timeout_ms, size_t *out) {
    rd_kafka_ConfigResource_t *res = rd_kafka_ConfigResource_new(RD_KAFKA_RESOURCE_TOPIC, topic);
    rd_kafka_AdminOptions_t *opts =
        rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_DESCRIBECONFIGS);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    char why[256];
    int rc = -1;
    if (!res || !opts || !q ||
        rd_kafka_AdminOptions_set_request_timeout(opts, timeout_ms, why, sizeof(why)))
        goto out;
    rd_kafka_DescribeConfigs(rk, &res, 1, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 1000);
    const rd_kafka_DescribeConfigs_result_t *result =
        ev ? rd_kafka_event_DescribeConfigs_result(ev) : NULL;
    size_t nres = 0, nconf = 0;
    const rd_kafka_ConfigResource_t **found =
        result && !rd_kafka_event_error(ev)
            ? rd_kafka_DescribeConfigs_result_resources(result, &nres)
            : NULL;
    const rd_kafka_ConfigEntry_t **entries =
        nres == 1 && !rd_kafka_ConfigResource_error(found[0])
            ? rd_kafka_ConfigResource_configs(found[0], &nconf)
            : NULL;
    for (size_t i = 0; i < nconf; i++) {
        const char *v = rd_kafka_ConfigEntry_value(entries[i]);
        if (strcmp(rd_kafka_ConfigEntry_name(entries[i]), "max.message.bytes") == 0 && v &&
            atoll(v) > 0) {
            *out = (size_t)atoll(v);
            rc = 0;
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
out:
    if (q) rd_kafka_queue_destroy(q);
    if (opts) rd_kafka_AdminOptions_destroy(opts);
    if (res) rd_kafka_ConfigResource_destroy(res);
    return rc;
}

size_t ttb_kafka_max_record_bytes(rd_kafka_t *producer, const char *topic, int timeout_ms,
                                  bool *from_topic) {
    /* The producer refuses anything above its own message.max.bytes. */
    char buf[32];
    size_t len = sizeof(buf);
    size_t limit = 1000000;
    if (rd_kafka_conf_get(rd_kafka_conf(producer), "message.max.bytes", buf, &len) ==
        RD_KAFKA_CONF_OK && atoll(buf) > 0)
        limit = (size_t)atoll(buf);
    size_t topic_limit;
    *from_topic = topic_max_bytes(producer, topic, timeout_ms, &topic_limit) == 0;
    if (*from_topic && topic_limit < limit) limit = topic_limit;
    /* Room for the record's key, headers and batch framing. */
    return limit > 4096 ? limit - 1024 : limit / 2;
}

/* Creates @p n topics; @returns 0 or TTB_ERR_IO with the reason in errstr. */
static int create_topics(rd_kafka_t *rk, const char *const *names, size_t n, int partitions,
                         int timeout_ms, char *errstr, size_t errstr_size) {
    rd_kafka_NewTopic_t **topics = calloc(n ? n : 1, sizeof(*topics));
    rd_kafka_AdminOptions_t *opts = rd_kafka_AdminOptions_new(rk, RD_KAFKA_ADMIN_OP_CREATETOPICS);
    rd_kafka_queue_t *q = rd_kafka_queue_new(rk);
    char why[256];
    int rc = TTB_ERR_IO;
    snprintf(errstr, errstr_size, "cannot create topics: out of memory");
    if (!topics || !opts || !q) goto out;
    rd_kafka_AdminOptions_set_operation_timeout(opts, timeout_ms, why, sizeof(why));
    for (size_t i = 0; i < n; i++)
        if (!(topics[i] = rd_kafka_NewTopic_new(names[i], partitions, -1, why, sizeof(why)))) {
            snprintf(errstr, errstr_size, "cannot create topic %s: %s", names[i], why);
            goto out;
        }
    rd_kafka_CreateTopics(rk, topics, n, opts, q);
    rd_kafka_event_t *ev = rd_kafka_queue_poll(q, timeout_ms + 2000);
    const rd_kafka_CreateTopics_result_t *res = ev ? rd_kafka_event_CreateTopics_result(ev) : NULL;
    size_t cnt = 0;
    const rd_kafka_topic_result_t **results = res ? rd_kafka_CreateTopics_result_topics(res, &cnt)
                                                  : NULL;
    rc = ev && !rd_kafka_event_error(ev) ? 0 : TTB_ERR_IO;
    if (rc) snprintf(errstr, errstr_size, "cannot create topics: %s",
                     ev ? rd_kafka_event_error_string(ev) : "no answer in time");
    for (size_t i = 0; i < cnt && !rc; i++) {
        rd_kafka_resp_err_t err = rd_kafka_topic_result_error(results[i]);
        if (err && err != RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS) {
            snprintf(errstr, errstr_size, "cannot create topic %s: %s",
                     rd_kafka_topic_result_name(results[i]),
                     rd_kafka_topic_result_error_string(results[i]));
            rc = TTB_ERR_IO;
        }
    }
    if (ev) rd_kafka_event_destroy(ev);
out:
    for (size_t i = 0; topics && i < n; i++)
        if (topics[i]) rd_kafka_NewTopic_destroy(topics[i]);
    free(topics);
    if (q) rd_kafka_queue_destroy(q);
    if (opts) rd_kafka_AdminOptions_destroy(opts);
    return rc;
}

int ttb_kafka_ensure_topics(rd_kafka_t *rk, const char *const *topics, size_t n, bool create,
                            int partitions, int timeout_ms, char *errstr, size_t errstr_size) {
    const struct rd_kafka_metadata *md = NULL;
    rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 1, NULL, &md, timeout_ms);
    if (err) {
        snprintf(errstr, errstr_size, "cannot list the broker's topics: %s", rd_kafka_err2str(err));
        return TTB_ERR_IO;
    }
    const char **missing = calloc(n ? n : 1, sizeof(*missing));
    size_t nmissing = 0, used = 0;
    if (!missing) {
        rd_kafka_metadata_destroy(md);
        return TTB_ERR_NOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        bool found = false;
        for (int t = 0; t < md->topic_cnt && !found; t++)
            found = strcmp(md->topics[t].topic, topics[i]) == 0 && !md->topics[t].err;
        bool dup = false; /* the same topic named twice is one topic */
        for (size_t k = 0; k < nmissing; k++) dup |= strcmp(missing[k], topics[i]) == 0;
        if (!found && !dup) missing[nmissing++] = topics[i];
    }
    rd_kafka_metadata_destroy(md);
    int rc = 0;
    if (nmissing && create) {
        rc = create_topics(rk, missing, nmissing, partitions, timeout_ms, errstr, errstr_size);
    } else if (nmissing) {
        used = (size_t)snprintf(errstr, errstr_size, "missing topic%s:", nmissing > 1 ? "s" : "");
        for (size_t k = 0; k < nmissing && used < errstr_size; k++)
            used += (size_t)snprintf(errstr + used, errstr_size - used, " %s", missing[k]);
        if (used < errstr_size)
            snprintf(errstr + used, errstr_size - used,
                     " (create them, or set kafka.create_topics=true)");
        rc = TTB_ERR_NOTFOUND;
    }
    free(missing);
    return rc;
}

/* Creates a producer from @p conf (taken, also on failure) with its callbacks. */
static rd_kafka_t *producer_from_conf(rd_kafka_conf_t *conf, const char *what,
                                      void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *,
                                                    void *),
                                      void (*error_cb)(rd_kafka_t *, int, const char *, void *),
                                      void *opaque, char *errstr, size_t errstr_size) {
    rd_kafka_conf_set_opaque(conf, opaque);
    rd_kafka_conf_set_dr_msg_cb(conf, dr_cb);
    if (error_cb) rd_kafka_conf_set_error_cb(conf, error_cb);
    char why[256];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        snprintf(errstr, errstr_size, "%s: %s", what, why);
    }
    return rk; /* conf now owned by rk */
}

rd_kafka_t *ttb_kafka_producer_new(const ttb_config_t *config, const char *what,
                                   void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *, void *),
                                   void (*error_cb)(rd_kafka_t *, int, const char *, void *),
                                   void *opaque, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = ttb_kafka_conf(config, TTB_KAFKA_PRODUCER, errstr, errstr_size);
    if (!conf) return NULL;
    return producer_from_conf(conf, what, dr_cb, error_cb, opaque, errstr, errstr_size);
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

/* Whether the operator set @p key for the producers (kafka.properties or
 * kafka.producer_properties): their value wins over ours. */
static bool producer_prop_given(const ttb_config_t *config, const char *key) {
    for (size_t i = 0; i < config->nkafka_props; i++)
        if (strcmp(config->kafka_props[i].key, key) == 0) return true;
    for (size_t i = 0; i < config->nproducer_props; i++)
        if (strcmp(config->producer_props[i].key, key) == 0) return true;
    return false;
}

rd_kafka_t *ttb_kafka_txn_producer_new(const ttb_config_t *config, const char *what,
                                       const char *transactional_id, int timeout_ms,
                                       void (*dr_cb)(rd_kafka_t *, const rd_kafka_message_t *,
                                                     void *),
                                       void (*error_cb)(rd_kafka_t *, int, const char *, void *),
                                       void *opaque, char *errstr, size_t errstr_size) {
    rd_kafka_conf_t *conf = ttb_kafka_conf(config, TTB_KAFKA_PRODUCER, errstr, errstr_size);
    if (!conf) return NULL;
    /* A crashed holder's open transaction blocks read_committed readers until
     * it times out (unless its successor has the same transactional.id):
     * 10 s rather than librdkafka's 60 s; an operator's value wins. */
    int rc = ttb_kafka_set(conf, "transactional.id", transactional_id, errstr, errstr_size);
    if (!rc && !producer_prop_given(config, "transaction.timeout.ms"))
        rc = ttb_kafka_set(conf, "transaction.timeout.ms", "10000", errstr, errstr_size);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_t *rk =
        producer_from_conf(conf, what, dr_cb, error_cb, opaque, errstr, errstr_size);
    if (!rk || timeout_ms <= 0) return rk;
    /* Fences every earlier producer with this transactional.id and aborts
     * what it left open. */
    rd_kafka_error_t *error = rd_kafka_init_transactions(rk, timeout_ms);
    if (error) {
        snprintf(errstr, errstr_size, "%s: init_transactions: %s", what,
                 rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        rd_kafka_destroy(rk);
        return NULL;
    }
    return rk;
}

/* Milliseconds left until @p deadline_ms (ttb_clock_ms), at least 1. */
static int txn_left(int64_t deadline_ms) {
    int64_t left = deadline_ms - ttb_clock_ms();
    return left > 1 ? (int)left : 1;
}

/* Aborts the open transaction by @p deadline_ms. @returns 0, or TTB_ERR_IO
 * when the producer can no longer be trusted (the caller replaces it). */
static int txn_abort(rd_kafka_t *rk, int64_t deadline_ms, char *errstr, size_t errstr_size) {
    for (int attempt = 0; attempt < 3 && (attempt == 0 || ttb_clock_ms() < deadline_ms);
         attempt++) {
        rd_kafka_error_t *error = rd_kafka_abort_transaction(rk, txn_left(deadline_ms));
        if (!error) return 0;
        bool retry = rd_kafka_error_is_retriable(error);
        snprintf(errstr, errstr_size, "abort_transaction: %s", rd_kafka_error_string(error));
        rd_kafka_error_destroy(error);
        if (!retry) break;
    }
    return TTB_ERR_IO;
}

int ttb_kafka_txn_commit(rd_kafka_t *rk, const rd_kafka_topic_partition_list_t *offsets,
                         const rd_kafka_consumer_group_metadata_t *cgmd, int timeout_ms,
                         bool *fatal, char *errstr, size_t errstr_size) {
    *fatal = false;
    int64_t deadline = ttb_clock_ms() + timeout_ms;
    rd_kafka_error_t *error = NULL;
    if (offsets && offsets->cnt > 0) {
        /* One that timed out cannot be resumed in librdkafka 2.0.2: any
         * failure here aborts. */
        error = rd_kafka_send_offsets_to_transaction(rk, offsets, cgmd, txn_left(deadline));
        if (error) {
            snprintf(errstr, errstr_size, "send_offsets_to_transaction: %s",
                     rd_kafka_error_string(error));
            *fatal = rd_kafka_error_is_fatal(error);
            rd_kafka_error_destroy(error);
            char why[256];
            if (!*fatal && txn_abort(rk, deadline, why, sizeof(why))) *fatal = true;
            return TTB_ERR_IO;
        }
    }
    for (int attempt = 0; attempt < 3 && (attempt == 0 || ttb_clock_ms() < deadline); attempt++) {
        error = rd_kafka_commit_transaction(rk, txn_left(deadline));
        if (!error) return 0;
        snprintf(errstr, errstr_size, "commit_transaction: %s", rd_kafka_error_string(error));
        if (!rd_kafka_error_is_retriable(error)) break;
        rd_kafka_error_destroy(error);
        error = NULL;
    }
    if (error && rd_kafka_error_txn_requires_abort(error)) {
        rd_kafka_error_destroy(error);
        char why[256];
        if (txn_abort(rk, deadline, why, sizeof(why))) *fatal = true;
        return TTB_ERR_IO;
    }
    /* Fatal, or still unanswered: whether it committed is unknown. Only a new
     * producer with the same transactional.id (which completes or aborts it)
     * and a fresh look at the committed offsets can tell. */
    if (error) rd_kafka_error_destroy(error);
    *fatal = true;
    return TTB_ERR_IO;
}
