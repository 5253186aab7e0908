/* SPDX-License-Identifier: MIT */
/*
 * `tinytown-bridge send`: the command line's way into the commands topic.
 * It builds one command record from arguments, validates it with the very
 * parser the bridge uses (so a typo fails here, with exit 2, instead of
 * becoming a dead letter), produces it with an idempotent producer, and
 * waits for the broker's acknowledgement before it calls the send done.
 *
 * With --wait-result it also reads the answer. The result consumer is set up
 * before the command is produced, at offsets taken from the partitions' ends
 * at that moment, so the result cannot slip past it however fast the bridge
 * answers. It joins no group and commits nothing: it must never disturb the
 * offsets of anyone who consumes results for real.
 */
#include "tinytown_bridge/send.h"

#include <errno.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/command.h"
#include "tinytown_bridge/kafka.h"
#include "tinytown_bridge/uuid.h"

#define SEND_EXIT_OK 0
#define SEND_EXIT_ERROR_RESULT 1
#define SEND_EXIT_USAGE 2
#define SEND_EXIT_FAILED 3

#define SEND_DEFAULT_TIMEOUT_MS 30000
/* Upper bound of one blocking librdkafka call, so that a fatal error or the
 * deadline is noticed soon even while a broker does not answer. */
#define SEND_STEP_MS 1000
#define SEND_POLL_MS 100

typedef struct send_opts {
    const char *op;
    const char *town;
    const char *id;
    bool wait_result;
    int64_t timeout_ms;
    json_t *args; /* owned; NULL when no key=value was given */
} send_opts_t;

/* State shared with librdkafka's callbacks (opaque of both handles). They
 * run inside rd_kafka_poll/rd_kafka_consumer_poll on this thread. */
typedef struct send_state {
    bool delivered;
    rd_kafka_resp_err_t delivery_err;
    bool fatal;
    char last_error[512]; /* the latest client error, to explain a timeout */
} send_state_t;

static int remaining_ms(int64_t deadline, int cap) {
    int64_t left = deadline - ttb_clock_ms();
    if (left <= 0) return 0;
    return left < cap ? (int)left : cap;
}

static void send_usage(void) {
    fprintf(stderr,
            "usage: tinytown-bridge send OP [key=value ...] [--town T] [--id ID]\n"
            "                            [--wait-result] [--timeout MS]\n");
}

static bool all_digits(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (*s < '0' || *s > '9') return false;
    return true;
}

/* Arguments are typed the way a shell user means them: true/false are
 * booleans, plain digits an integer (timeout_ms), anything else a string. A
 * number too large for an integer stays a string, and the parser names it. */
static json_t *arg_value(const char *s) {
    if (strcmp(s, "true") == 0) return json_true();
    if (strcmp(s, "false") == 0) return json_false();
    if (all_digits(s)) {
        errno = 0;
        long long v = strtoll(s, NULL, 10);
        if (errno == 0) return json_integer((json_int_t)v);
    }
    return json_string(s);
}

/* Matches "--name VALUE" and "--name=VALUE". @returns 1 matched, 0 not this
 * option, -1 value missing. */
static int opt_value(int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) != 0) return 0;
    if (a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (a[n] != '\0') return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "tinytown-bridge: send: %s needs a value\n", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

static int parse_opts(int argc, char **argv, send_opts_t *o) {
    o->timeout_ms = SEND_DEFAULT_TIMEOUT_MS;
    bool options_done = false;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = NULL;
        int r = 0;
        if (!options_done && strcmp(a, "--") == 0) {
            options_done = true;
            continue;
        }
        if (!options_done && strncmp(a, "--", 2) == 0) {
            if ((r = opt_value(argc, argv, &i, "--town", &v)) > 0) {
                o->town = v;
            } else if (r == 0 && (r = opt_value(argc, argv, &i, "--id", &v)) > 0) {
                o->id = v;
            } else if (r == 0 && (r = opt_value(argc, argv, &i, "--timeout", &v)) > 0) {
                if (!all_digits(v) || strlen(v) > 9 || atol(v) <= 0) {
                    fprintf(stderr, "tinytown-bridge: send: --timeout: expected milliseconds "
                                    "from 1 to 999999999\n");
                    return -1;
                }
                o->timeout_ms = atol(v);
            } else if (r == 0 && strcmp(a, "--wait-result") == 0) {
                o->wait_result = true;
            } else if (r == 0) {
                fprintf(stderr, "tinytown-bridge: send: unknown option '%s'\n", a);
                return -1;
            }
            if (r < 0) return -1;
            continue;
        }
        if (!o->op) {
            o->op = a;
            continue;
        }
        const char *eq = strchr(a, '=');
        if (!eq || eq == a) {
            fprintf(stderr, "tinytown-bridge: send: '%s': expected key=value\n", a);
            return -1;
        }
        if (!o->args && !(o->args = json_object())) return -1;
        char key[64];
        size_t klen = (size_t)(eq - a);
        if (klen >= sizeof(key)) {
            fprintf(stderr, "tinytown-bridge: send: '%.*s': argument name too long\n",
                    (int)sizeof(key), a);
            return -1;
        }
        memcpy(key, a, klen);
        key[klen] = '\0';
        if (json_object_get(o->args, key)) {
            fprintf(stderr, "tinytown-bridge: send: argument '%s' given twice\n", key);
            return -1;
        }
        if (json_object_set_new(o->args, key, arg_value(eq + 1))) return -1;
    }
    if (!o->op) {
        fprintf(stderr, "tinytown-bridge: send: missing OP\n");
        return -1;
    }
    return 0;
}

/* The record, members in protocol order. @returns a malloc'd string or NULL. */
static char *build_command(const send_opts_t *o, const char *id) {
    json_t *root = json_object();
    if (!root) return NULL;
    int bad = json_object_set_new(root, "id", json_string(id));
    /* No town: the bridge applies its own default, which is the point of one. */
    if (o->town) bad |= json_object_set_new(root, "town", json_string(o->town));
    bad |= json_object_set_new(root, "op", json_string(o->op));
    if (o->args) bad |= json_object_set(root, "args", o->args);
    char *s = bad ? NULL : json_dumps(root, JSON_COMPACT);
    json_decref(root);
    return s;
}

static void on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *rkm, void *opaque) {
    (void)rk;
    send_state_t *st = opaque;
    st->delivered = true;
    st->delivery_err = rkm->err;
}

static void on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    send_state_t *st = opaque;
    if (st->fatal) return; /* the cause is said; "all brokers down" follows it */
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        snprintf(st->last_error, sizeof(st->last_error), "fatal: %s", why);
        st->fatal = true;
        return;
    }
    /* A refused login or handshake is retried by librdkafka for ever; here
     * it ends the send at once, named. */
    ttb_kafka_security_t sec;
    if (ttb_kafka_security_note(&sec, err, reason)) {
        snprintf(st->last_error, sizeof(st->last_error), "kafka refuses the connection: %s: %s",
                 ttb_kafka_security_cause(&sec), reason);
        st->fatal = true;
        return;
    }
    snprintf(st->last_error, sizeof(st->last_error), "%s", reason);
}

static rd_kafka_t *producer_new(const ttb_config_t *config, send_state_t *st, char *errstr,
                                size_t errstr_size) {
    rd_kafka_conf_t *conf = ttb_kafka_conf(config, TTB_KAFKA_PRODUCER, errstr, errstr_size);
    if (!conf) return NULL;
    rd_kafka_conf_set_opaque(conf, st);
    rd_kafka_conf_set_dr_msg_cb(conf, on_delivery);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, errstr_size);
    if (!rk) rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only on success */
    return rk;
}

static rd_kafka_t *consumer_new(const ttb_config_t *config, send_state_t *st, char *errstr,
                                size_t errstr_size) {
    char uuid[TTB_UUID_BUFSZ], group[64];
    if (ttb_uuid_v4(uuid)) {
        snprintf(errstr, errstr_size, "no randomness for a group id");
        return NULL;
    }
    /* librdkafka only lets a consumer with a group.id assign partitions. A
     * fresh one that never joins (assign, not subscribe) and never commits
     * (forced below, after the user's properties) touches no real group. */
    snprintf(group, sizeof(group), "tinytown-bridge-send-%s", uuid);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* The mock broker holds every fetch for fetch.wait.max.ms even when data
     * is there; a real broker answers early anyway. The user may override. */
    int rc = ttb_kafka_set(conf, "client.id", "tinytown-bridge-send", errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "fetch.wait.max.ms", "10", errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "enable.partition.eof", "false", errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set_common(conf, config, errstr, errstr_size);
    for (size_t i = 0; i < config->nconsumer_props && !rc; i++)
        rc = ttb_kafka_set(conf, config->consumer_props[i].key, config->consumer_props[i].value,
                           errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "group.id", group, errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "enable.auto.commit", "false", errstr, errstr_size);
    if (!rc) rc = ttb_kafka_set(conf, "enable.auto.offset.store", "false", errstr, errstr_size);
    if (rc) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, st);
    rd_kafka_conf_set_error_cb(conf, on_error);
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, errstr, errstr_size);
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    /* Error events arrive through rd_kafka_consumer_poll from here on. */
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* @returns the partition count of @p topic (> 0), or 0 at the deadline. A
 * topic just auto-created may briefly have no leader: asked again. */
static int topic_partitions(rd_kafka_t *rk, const char *topic, int64_t deadline, send_state_t *st) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(rk, topic, NULL);
    if (!rkt) {
        snprintf(st->last_error, sizeof(st->last_error), "%s: %s", topic,
                 rd_kafka_err2str(rd_kafka_last_error()));
        return 0;
    }
    int count = 0;
    while (count == 0 && !st->fatal) {
        int step = remaining_ms(deadline, SEND_STEP_MS);
        if (step == 0) break;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(rk, 0, rkt, &md, step);
        if (err) {
            snprintf(st->last_error, sizeof(st->last_error), "metadata: %s", rd_kafka_err2str(err));
        } else if (md->topic_cnt < 1 || md->topics[0].err) {
            snprintf(st->last_error, sizeof(st->last_error), "topic %s: %s", topic,
                     rd_kafka_err2str(md->topic_cnt < 1 ? RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART
                                                        : md->topics[0].err));
        } else {
            count = md->topics[0].partition_cnt;
        }
        if (md) rd_kafka_metadata_destroy(md);
        if (count == 0) {
            /* Serves error events, and paces the retry. */
            rd_kafka_message_t *rkm =
                rd_kafka_consumer_poll(rk, remaining_ms(deadline, SEND_POLL_MS));
            if (rkm) rd_kafka_message_destroy(rkm);
        }
    }
    rd_kafka_topic_destroy(rkt);
    return count;
}

/* Assigns every partition of the results topic at its current end.
 *
 * The ends are asked for explicitly (ListOffsets) instead of assigning at
 * RD_KAFKA_OFFSET_END and waiting for librdkafka to resolve it: 2.0.2's
 * rd_kafka_position() reports the last consumed offset + 1 and stays invalid
 * until a record arrives, so "resolved" cannot be observed on a quiet topic.
 * With explicit offsets, anything produced after this returns — the result
 * included — is at or past the assigned offset. */
static int assign_at_end(rd_kafka_t *rk, const char *topic, int64_t deadline, send_state_t *st) {
    int count = topic_partitions(rk, topic, deadline, st);
    if (count <= 0) return -1;
    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(count);
    int rc = 0;
    for (int32_t p = 0; p < count && rc == 0; p++) {
        int64_t low = 0, high = -1;
        for (;;) {
            int step = remaining_ms(deadline, SEND_STEP_MS);
            if (step == 0 || st->fatal) {
                rc = -1;
                break;
            }
            rd_kafka_resp_err_t err = rd_kafka_query_watermark_offsets(rk, topic, p, &low, &high, step);
            if (!err) break;
            snprintf(st->last_error, sizeof(st->last_error), "%s [%d] end offset: %s", topic,
                     (int)p, rd_kafka_err2str(err));
            rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, remaining_ms(deadline, SEND_POLL_MS));
            if (rkm) rd_kafka_message_destroy(rkm);
        }
        if (rc == 0) rd_kafka_topic_partition_list_add(parts, topic, p)->offset = high;
    }
    if (rc == 0) {
        rd_kafka_resp_err_t err = rd_kafka_assign(rk, parts);
        if (err) {
            snprintf(st->last_error, sizeof(st->last_error), "assign %s: %s", topic,
                     rd_kafka_err2str(err));
            rc = -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

/* Produces the command and serves delivery reports until it is acknowledged.
 * @returns 0 when the broker has it. */
static int produce_command(rd_kafka_t *rk, const char *topic, char *key, char *value,
                           int64_t deadline, send_state_t *st) {
    rd_kafka_resp_err_t err =
        ttb_kafka_produce(rk, topic, key, strlen(key), value, strlen(value), NULL, NULL);
    if (err) {
        fprintf(stderr, "tinytown-bridge: send: cannot produce to %s: %s\n", topic,
                rd_kafka_err2str(err));
        return -1;
    }
    while (!st->delivered && !st->fatal) {
        int step = remaining_ms(deadline, SEND_POLL_MS);
        if (step == 0) break;
        rd_kafka_poll(rk, step);
    }
    if (!st->delivered) {
        /* Nothing may be left to a retry after we report failure; what was
         * in flight is dropped and its (purge) report served here. */
        rd_kafka_purge(rk, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(rk, 0);
        if (st->fatal) {
            fprintf(stderr, "tinytown-bridge: send: %s\n", st->last_error);
            return -1;
        }
        fprintf(stderr,
                "tinytown-bridge: send: delivery to %s not confirmed before the deadline%s%s\n",
                topic, st->last_error[0] ? "; last Kafka error: " : "", st->last_error);
        return -1;
    }
    if (st->delivery_err) {
        fprintf(stderr, "tinytown-bridge: send: delivery to %s failed: %s\n", topic,
                rd_kafka_err2str(st->delivery_err));
        return -1;
    }
    return 0;
}

/* Reads results until the one keyed by @p id; prints it. @returns the exit code. */
static int await_result(rd_kafka_t *rk, const ttb_config_t *config, const char *id,
                        int64_t timeout_ms, int64_t deadline, send_state_t *st) {
    size_t id_len = strlen(id);
    while (!st->fatal) {
        int step = remaining_ms(deadline, SEND_POLL_MS);
        if (step == 0) break;
        rd_kafka_message_t *rkm = rd_kafka_consumer_poll(rk, step);
        if (!rkm) continue;
        if (rkm->err) {
            if (rkm->err != RD_KAFKA_RESP_ERR__PARTITION_EOF)
                snprintf(st->last_error, sizeof(st->last_error), "%s",
                         rd_kafka_message_errstr(rkm));
            rd_kafka_message_destroy(rkm);
            continue;
        }
        if (rkm->key_len != id_len || memcmp(rkm->key, id, id_len) != 0) {
            rd_kafka_message_destroy(rkm);
            continue;
        }
        json_t *res = json_loadb(rkm->payload, rkm->len, 0, NULL);
        bool ok = res && json_is_true(json_object_get(res, "ok"));
        json_decref(res);
        fwrite(rkm->payload, 1, rkm->len, stdout);
        fputc('\n', stdout);
        fflush(stdout);
        rd_kafka_message_destroy(rkm);
        return ok ? SEND_EXIT_OK : SEND_EXIT_ERROR_RESULT;
    }
    fprintf(stderr,
            "tinytown-bridge: send: no result for command %s on %s within %lld ms "
            "(is a bridge running for this town?)%s%s\n",
            id, config->results_topic, (long long)timeout_ms,
            st->last_error[0] ? "; last Kafka error: " : "", st->last_error);
    return SEND_EXIT_FAILED;
}

int ttb_send_main(const ttb_config_t *config, int argc, char **argv) {
    send_opts_t o;
    memset(&o, 0, sizeof(o));
    send_state_t st;
    memset(&st, 0, sizeof(st));
    rd_kafka_t *consumer = NULL, *producer = NULL;
    char *value = NULL;
    ttb_command_t cmd;
    memset(&cmd, 0, sizeof(cmd));
    char errstr[512];
    int rc;

    if (parse_opts(argc, argv, &o)) {
        send_usage();
        rc = SEND_EXIT_USAGE;
        goto out;
    }
    int64_t deadline = ttb_clock_ms() + o.timeout_ms;

    char fresh[4 + TTB_UUID_BUFSZ];
    const char *id = o.id;
    if (!id) {
        char uuid[TTB_UUID_BUFSZ];
        if (ttb_uuid_v4(uuid)) {
            fprintf(stderr, "tinytown-bridge: send: no randomness for a command id\n");
            rc = SEND_EXIT_FAILED;
            goto out;
        }
        snprintf(fresh, sizeof(fresh), "cli-%s", uuid);
        id = fresh;
    }
    if (!(value = build_command(&o, id))) {
        fprintf(stderr, "tinytown-bridge: send: out of memory\n");
        rc = SEND_EXIT_FAILED;
        goto out;
    }

    ttb_command_policy_t policy;
    ttb_config_policy(config, &policy);
    ttb_code_t code = ttb_command_parse(value, strlen(value), &policy, &cmd, errstr, sizeof(errstr));
    if (code != TTB_CODE_OK) {
        fprintf(stderr, "tinytown-bridge: send: %s: %s\n", ttb_code_name(code), errstr);
        rc = SEND_EXIT_USAGE;
        goto out;
    }
    /* Keyed so that one agent's commands share a partition and keep their
     * order: by the agent referred to (spawn's name is how the next command
     * will refer to it), else by town, else by op. */
    char *key = cmd.agent ? cmd.agent : cmd.name ? cmd.name : cmd.town ? cmd.town : cmd.op_name;

    if (o.wait_result && cmd.op == TTB_OP_WAIT && cmd.timeout_ms >= o.timeout_ms)
        /* The bridge answers a wait when the agent finishes or timeout_ms
         * passes; a shorter --timeout gives up first, which surprises. */
        fprintf(stderr,
                "tinytown-bridge: send: note: the wait may last %lld ms but --timeout is %lld ms\n",
                (long long)cmd.timeout_ms, (long long)o.timeout_ms);
    if (o.wait_result) {
        if (!(consumer = consumer_new(config, &st, errstr, sizeof(errstr)))) {
            fprintf(stderr, "tinytown-bridge: send: kafka consumer: %s\n", errstr);
            rc = SEND_EXIT_USAGE;
            goto out;
        }
        if (assign_at_end(consumer, config->results_topic, deadline, &st)) {
            if (st.fatal)
                fprintf(stderr, "tinytown-bridge: send: %s\n", st.last_error);
            else
                fprintf(stderr,
                        "tinytown-bridge: send: cannot start reading %s within %lld ms%s%s\n",
                        config->results_topic, (long long)o.timeout_ms,
                        st.last_error[0] ? ": " : "", st.last_error);
            rc = SEND_EXIT_FAILED;
            goto out;
        }
    }
    if (!(producer = producer_new(config, &st, errstr, sizeof(errstr)))) {
        fprintf(stderr, "tinytown-bridge: send: kafka producer: %s\n", errstr);
        rc = SEND_EXIT_USAGE;
        goto out;
    }
    if (produce_command(producer, config->commands_topic, key, value, deadline, &st)) {
        rc = SEND_EXIT_FAILED;
        goto out;
    }
    if (!o.wait_result) {
        printf("%s\n", value);
        fflush(stdout);
        rc = SEND_EXIT_OK;
        goto out;
    }
    rc = await_result(consumer, config, id, o.timeout_ms, deadline, &st);

out:
    if (producer) rd_kafka_destroy(producer);
    if (consumer) {
        rd_kafka_consumer_close(consumer);
        rd_kafka_destroy(consumer);
    }
    ttb_command_clear(&cmd);
    free(value);
    json_decref(o.args);
    return rc;
}
