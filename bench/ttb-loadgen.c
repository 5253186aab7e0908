/* SPDX-License-Identifier: MIT */
/*
 * ttb-loadgen: the load generator of tinytown-bridge's benchmark.
 *
 * It drives a running bridge from outside, the way any Kafka client would,
 * and measures what comes back. Setup (not timed) spawns a pool of agents
 * and learns their ids from the results. The timed phase then produces a
 * fixed mix of commands that mostly succeed (each agent alternates between
 * interrupt and resume; kill is always followed by restart), keyed by agent
 * name so one agent's commands stay in order, and reads the results topic
 * until every command has its answer.
 *
 * Latency is read from the records themselves: the command carries the
 * CreateTime this program gave it when producing it, the result the
 * CreateTime the bridge's producer gave it, both on this machine's clock. So
 * the figure is "produced by us" to "produced by the bridge", unaffected by
 * how quickly this program gets around to reading results. Everything runs
 * on one thread (produce a slice, serve reports, read results, repeat), so
 * there is no shared state to lock; per command only the send time, the op
 * and, later, the latency are kept.
 *
 * The consumer joins no group: it is assigned every partition of the
 * results topic at offsets asked from the broker before the first command
 * is sent, so no result can slip in between. It links librdkafka and jansson
 * only, not the bridge's library: the benchmark must judge the bridge by its
 * protocol, not by its code.
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <jansson.h>
#include <librdkafka/rdkafka.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#define LG_PROG "ttb-loadgen"

#define LG_EXIT_OK 0
#define LG_EXIT_INCOMPLETE 1 /* some command got no result, or a client failed */
#define LG_EXIT_USAGE 2

#define LG_DEFAULT_COMMANDS 100000
#define LG_DEFAULT_AGENTS 500
#define LG_DEFAULT_TIMEOUT_S 300
#define LG_MAX_COMMANDS 10000000
#define LG_MAX_AGENTS 1000000

#define LG_COMMANDS_TOPIC "tinytown.commands"
#define LG_RESULTS_TOPIC "tinytown.results"

/* One blocking librdkafka call (metadata, offsets) is cut into steps this
 * long, so a signal or the deadline is noticed while a broker is silent. */
#define LG_STEP_MS 1000
/* Records produced per pass before results are read again: small enough
 * that results do not pile up in librdkafka while we produce, large enough
 * that the loop costs little per record. */
#define LG_PRODUCE_SLICE 512
/* Results read per pass, at most, before producing goes on. */
#define LG_CONSUME_SLICE 4096
/* How long a pass waits for a result when there is nothing to produce. */
#define LG_IDLE_POLL_MS 100

#define LG_UUID_LEN 36
#define LG_CMD_MAX 512 /* bytes of one command record; ours are ~150 */

static volatile sig_atomic_t lg_stop;

static void lg_on_signal(int sig) {
    (void)sig;
    lg_stop = 1;
}

/* The op mix. Some picks make two commands: kill then restart of a pool
 * agent, and spawn then kill of a new one ("spawn+kill"). New agents are
 * retired at once so the open part of the town stays at the pool's size:
 * otherwise every list_open would grow with the run (to megabytes by its
 * end, more than the mock broker keeps per partition) and the last
 * thousand commands would measure a different town from the first. */
typedef enum {
    LG_OP_INTERRUPT,
    LG_OP_RESUME,
    LG_OP_KILL,
    LG_OP_RESTART,
    LG_OP_WAIT,
    LG_OP_GET_RESULT,
    LG_OP_SPAWN,
    LG_OP_KILL_NEW, /* the kill that retires a just-spawned agent */
    LG_OP_LIST_OPEN,
    LG_OP__COUNT
} lg_op_t;

static const char *const lg_op_names[LG_OP__COUNT] = {
    "interrupt", "resume", "kill", "restart", "wait", "get_result", "spawn", "kill", "list_open",
};

/* Labels of the per-op table, where the two kinds of kill are apart. */
static const char *const lg_op_labels[LG_OP__COUNT] = {
    "interrupt", "resume", "kill", "restart", "wait", "get_result", "spawn", "kill(new)",
    "list_open",
};

/* Picks out of 88: interrupt-or-resume 60, kill+restart 10 (20 commands),
 * wait 10, get_result 5, spawn+kill 2 (4 commands), list_open 1. That makes
 * 100 commands per 88 picks, so the commands come out as 30% interrupt, 30%
 * resume (a little more interrupt: a fresh agent starts with one), 10% kill
 * + 10% restart, 10% wait, 5% get_result, 2% spawn + 2% kill of the new
 * agent, 1% list_open. */
#define LG_PICK_TOTAL 88
#define LG_PICK_TOGGLE 60
#define LG_PICK_KILL 70
#define LG_PICK_WAIT 80
#define LG_PICK_GET_RESULT 85
#define LG_PICK_SPAWN 87

typedef struct lg_opts {
    const char *brokers;
    const char *town;
    long commands;
    long agents;
    double rate; /* commands/s; 0 = as fast as librdkafka takes them */
    long timeout_s;
    uint64_t seed;
    bool by_name; /* only interrupt/resume, naming agents by name */
    long list_limit; /* > 0: only list_open pages of this many agents */
    bool get_result; /* only get_result, naming agents by name */
} lg_opts_t;

typedef struct lg_agent {
    char id[LG_UUID_LEN + 1];
    bool paused; /* what the next toggle does: resume if paused, else interrupt */
} lg_agent_t;

/* Result codes seen, in order of first sight; there are only a dozen. */
#define LG_MAX_CODES 32
typedef struct lg_code_count {
    char name[64]; /* as long as the buffer codes are read into */
    long count;
} lg_code_count_t;

typedef struct lg {
    lg_opts_t o;
    rd_kafka_t *producer;
    rd_kafka_t *consumer;
    char prefix[24]; /* command ids are "<prefix>-<n>" (timed) or "<prefix>-s<n>" (setup) */
    size_t prefix_len;
    uint64_t rng;

    lg_agent_t *agents;
    long agents_known; /* setup results seen */

    /* timed phase, indexed by command number */
    int64_t *sent_ms;    /* the command record's CreateTime */
    int32_t *latency_ms; /* result CreateTime - sent_ms; -1 until answered */
    int32_t *visible_ms; /* when this program read the result - sent_ms */
    uint8_t *ops;
    long produced, answered, duplicates, foreign, spawned;
    lg_op_t follow_op;    /* second command of a pair just drawn, or LG_OP__COUNT */
    long follow_agent;    /* its pool agent (restart) or new agent number (kill) */
    bool held;            /* a drawn command librdkafka's full queue refused */
    char held_value[LG_CMD_MAX], held_key[80];
    int held_len;
    lg_op_t held_op;
    lg_code_count_t codes[LG_MAX_CODES];
    size_t ncodes;
    uint64_t first_send_us, last_send_us, last_result_us;

    long delivery_failures;
    bool failed; /* a fatal client error or a broken protocol: stop */
    char last_error[512];
} lg_t;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                             */

static uint64_t lg_mono_us(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Wall clock in ms: the unit and clock of Kafka's CreateTime. */
static int64_t lg_wall_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void lg_fail(lg_t *lg, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void lg_fail(lg_t *lg, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(lg->last_error, sizeof(lg->last_error), fmt, ap);
    va_end(ap);
    if (!lg->failed) fprintf(stderr, LG_PROG ": %s\n", lg->last_error);
    lg->failed = true;
}

/* xorshift64*: a fixed seed makes two runs send the same command sequence,
 * so their figures compare. */
static uint32_t lg_rand(lg_t *lg) {
    uint64_t x = lg->rng;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    lg->rng = x;
    return (uint32_t)((x * 0x2545F4914F6CDD1DULL) >> 32);
}

static uint32_t lg_rand_below(lg_t *lg, uint32_t n) {
    return (uint32_t)(((uint64_t)lg_rand(lg) * n) >> 32);
}

/* Milliseconds left before @p deadline_us, at most @p cap. */
static int lg_left_ms(uint64_t deadline_us, int cap) {
    uint64_t now = lg_mono_us();
    if (now >= deadline_us) return 0;
    uint64_t left = (deadline_us - now + 999) / 1000;
    return left < (uint64_t)cap ? (int)left : cap;
}

static int lg_conf_set(rd_kafka_conf_t *conf, const char *name, const char *value) {
    char why[256];
    if (rd_kafka_conf_set(conf, name, value, why, sizeof(why)) != RD_KAFKA_CONF_OK) {
        fprintf(stderr, LG_PROG ": %s=%s: %s\n", name, value, why);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Options                                                                   */

static void lg_usage(FILE *f) {
    fprintf(f,
            "usage: " LG_PROG " --brokers HOST:PORT[,...] [options]\n"
            "\n"
            "Drives a running tinytown-bridge through Kafka and reports throughput,\n"
            "latency and result codes. Exit 0 when every timed command got a result.\n"
            "\n"
            "  -b, --brokers LIST     Kafka bootstrap servers (required)\n"
            "  -n, --commands N       timed commands (default %d)\n"
            "  -a, --agents A         agents spawned before timing (default %d)\n"
            "  -t, --town NAME        the town commands name (default demo)\n"
            "  -r, --rate R           commands/s to offer; 0 = as fast as possible (default 0)\n"
            "  -T, --timeout-s T      give up after T seconds in all (default %d)\n"
            "  -s, --seed S           seed of the command mix (default 1)\n"
            "  -N, --by-name          timed commands are only interrupt and resume, naming\n"
            "                         agents by name (bench-<n>) instead of by id\n"
            "  -L, --list-limit L     timed commands are only list_open, first pages of L\n"
            "                         agents (what a listing costs against the town's size)\n"
            "  -G, --get-result       timed commands are only get_result, naming agents by\n"
            "                         name\n"
            "  -h, --help             show this help\n",
            LG_DEFAULT_COMMANDS, LG_DEFAULT_AGENTS, LG_DEFAULT_TIMEOUT_S);
}

static int lg_parse_long(const char *opt, const char *s, long min, long max, long *out) {
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max) {
        fprintf(stderr, LG_PROG ": --%s %s: expected an integer %ld..%ld\n", opt, s, min, max);
        return -1;
    }
    *out = v;
    return 0;
}

/* The town goes into JSON unescaped, so it is held to the bridge's own
 * alphabet for town names. */
static bool lg_town_ok(const char *t) {
    size_t n = strlen(t);
    if (n == 0 || n > 64) return false;
    for (size_t i = 0; i < n; i++) {
        char c = t[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* @returns 0, LG_EXIT_USAGE after a printed error, or -1 after --help. */
static int lg_parse_opts(int argc, char **argv, lg_opts_t *o) {
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'}, {"commands", required_argument, NULL, 'n'},
        {"agents", required_argument, NULL, 'a'},  {"town", required_argument, NULL, 't'},
        {"rate", required_argument, NULL, 'r'},    {"timeout-s", required_argument, NULL, 'T'},
        {"seed", required_argument, NULL, 's'},    {"help", no_argument, NULL, 'h'},
        {"by-name", no_argument, NULL, 'N'},      {"list-limit", required_argument, NULL, 'L'},
        {"get-result", no_argument, NULL, 'G'},
        {NULL, 0, NULL, 0},
    };
    *o = (lg_opts_t){.town = "demo", .commands = LG_DEFAULT_COMMANDS,
                     .agents = LG_DEFAULT_AGENTS, .timeout_s = LG_DEFAULT_TIMEOUT_S, .seed = 1};
    int c;
    long v;
    while ((c = getopt_long(argc, argv, ":b:n:a:t:r:T:s:hNL:G", longopts, NULL)) != -1) {
        switch (c) {
        case 'N': o->by_name = true; break;
        case 'G': o->get_result = true; break;
        case 'L':
            if (lg_parse_long("list-limit", optarg, 1, 100000, &o->list_limit)) return LG_EXIT_USAGE;
            break;
        case 'b': o->brokers = optarg; break;
        case 'n':
            if (lg_parse_long("commands", optarg, 1, LG_MAX_COMMANDS, &o->commands))
                return LG_EXIT_USAGE;
            break;
        case 'a':
            if (lg_parse_long("agents", optarg, 1, LG_MAX_AGENTS, &o->agents)) return LG_EXIT_USAGE;
            break;
        case 't':
            if (!lg_town_ok(optarg)) {
                fprintf(stderr, LG_PROG ": --town %s: 1-64 bytes of A-Z a-z 0-9 . _ -\n", optarg);
                return LG_EXIT_USAGE;
            }
            o->town = optarg;
            break;
        case 'r': {
            char *end;
            errno = 0;
            o->rate = strtod(optarg, &end);
            if (errno || end == optarg || *end || !(o->rate >= 0) || o->rate > 1e7) {
                fprintf(stderr, LG_PROG ": --rate %s: expected 0..10000000 commands/s\n", optarg);
                return LG_EXIT_USAGE;
            }
            break;
        }
        case 'T':
            if (lg_parse_long("timeout-s", optarg, 1, 86400, &o->timeout_s)) return LG_EXIT_USAGE;
            break;
        case 's':
            if (lg_parse_long("seed", optarg, 1, LONG_MAX, &v)) return LG_EXIT_USAGE;
            o->seed = (uint64_t)v;
            break;
        case 'h': lg_usage(stdout); return -1;
        case ':':
            fprintf(stderr, LG_PROG ": %s needs a value (see --help)\n", argv[optind - 1]);
            return LG_EXIT_USAGE;
        default:
            fprintf(stderr, LG_PROG ": unknown option %s (see --help)\n", argv[optind - 1]);
            return LG_EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf(stderr, LG_PROG ": unexpected argument %s (see --help)\n", argv[optind]);
        return LG_EXIT_USAGE;
    }
    if (!o->brokers || !*o->brokers) {
        fprintf(stderr, LG_PROG ": --brokers is required (see --help)\n");
        return LG_EXIT_USAGE;
    }
    if ((int)o->by_name + (int)(o->list_limit > 0) + (int)o->get_result > 1) {
        fprintf(stderr, LG_PROG ": --by-name, --list-limit and --get-result choose different "
                                "workloads: one at most\n");
        return LG_EXIT_USAGE;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Kafka clients                                                             */

/* Delivery reports only count failures: a command that never reached the
 * broker shows up as a missing result, and this says why. */
static void lg_on_delivery(rd_kafka_t *rk, const rd_kafka_message_t *m, void *opaque) {
    (void)rk;
    lg_t *lg = opaque;
    if (m->err) {
        if (lg->delivery_failures++ == 0)
            fprintf(stderr, LG_PROG ": command delivery failed: %s\n", rd_kafka_err2str(m->err));
    }
}

/* Transient client errors are librdkafka's to retry; only fatal ones end
 * the run, since the idempotent producer cannot go on after them. */
static void lg_on_error(rd_kafka_t *rk, int err, const char *reason, void *opaque) {
    lg_t *lg = opaque;
    if (err == RD_KAFKA_RESP_ERR__FATAL) {
        char why[256];
        rd_kafka_fatal_error(rk, why, sizeof(why));
        lg_fail(lg, "fatal Kafka error: %s", why);
        return;
    }
    fprintf(stderr, LG_PROG ": kafka: %s\n", reason);
}

static rd_kafka_t *lg_producer_new(lg_t *lg) {
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* Idempotent: a retried batch must neither reorder one agent's commands
     * nor duplicate them. linger.ms 5 and large batches let librdkafka pack
     * a fast stream into few requests, as a busy real producer would. The
     * local queue holds a whole unthrottled run. */
    if (lg_conf_set(conf, "bootstrap.servers", lg->o.brokers) ||
        lg_conf_set(conf, "client.id", LG_PROG) ||
        lg_conf_set(conf, "enable.idempotence", "true") ||
        lg_conf_set(conf, "linger.ms", "5") ||
        lg_conf_set(conf, "batch.num.messages", "10000") ||
        lg_conf_set(conf, "queue.buffering.max.messages", "1000000") ||
        lg_conf_set(conf, "message.timeout.ms", "60000")) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, lg);
    rd_kafka_conf_set_dr_msg_cb(conf, lg_on_delivery);
    rd_kafka_conf_set_error_cb(conf, lg_on_error);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf); /* rd_kafka_new takes it only on success */
        fprintf(stderr, LG_PROG ": producer: %s\n", why);
    }
    return rk;
}

static rd_kafka_t *lg_consumer_new(lg_t *lg) {
    /* librdkafka lets only a consumer with a group.id assign partitions; a
     * fresh name that never joins or commits touches no real group. */
    char group[64];
    snprintf(group, sizeof(group), LG_PROG "-%s", lg->prefix);
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    /* fetch.wait.max.ms 5: the mock broker holds every fetch that long even
     * with data waiting; at the default 500 the figures would measure it.
     * auto.offset.reset=error: if the broker dropped results before we read
     * them (the mock keeps ~5 MiB per partition), say so instead of
     * skipping silently to the other end. A partition's fetch may take 10 MB,
 * the bridge's largest result, so a listing never needs several rounds. */
    if (lg_conf_set(conf, "bootstrap.servers", lg->o.brokers) ||
        lg_conf_set(conf, "client.id", LG_PROG) || lg_conf_set(conf, "group.id", group) ||
        lg_conf_set(conf, "enable.auto.commit", "false") ||
        lg_conf_set(conf, "enable.auto.offset.store", "false") ||
        lg_conf_set(conf, "enable.partition.eof", "false") ||
        lg_conf_set(conf, "auto.offset.reset", "error") ||
        lg_conf_set(conf, "fetch.wait.max.ms", "5") ||
        lg_conf_set(conf, "max.partition.fetch.bytes", "10485760")) {
        rd_kafka_conf_destroy(conf);
        return NULL;
    }
    rd_kafka_conf_set_opaque(conf, lg);
    rd_kafka_conf_set_error_cb(conf, lg_on_error);
    char why[512];
    rd_kafka_t *rk = rd_kafka_new(RD_KAFKA_CONSUMER, conf, why, sizeof(why));
    if (!rk) {
        rd_kafka_conf_destroy(conf);
        fprintf(stderr, LG_PROG ": consumer: %s\n", why);
        return NULL;
    }
    rd_kafka_poll_set_consumer(rk);
    return rk;
}

/* Serves the consumer's events for a moment; used to pace retries. */
static void lg_consumer_idle(lg_t *lg, int ms) {
    rd_kafka_message_t *m = rd_kafka_consumer_poll(lg->consumer, ms);
    if (m) rd_kafka_message_destroy(m); /* nothing is assigned yet: only events */
}

/* Assigns every partition of the results topic at its current end. The ends
 * are asked for (ListOffsets) rather than assigning RD_KAFKA_OFFSET_END,
 * which librdkafka resolves only later, after results may already be there.
 * @returns 0, or -1 with lg->failed set. */
static int lg_assign_results(lg_t *lg, uint64_t deadline_us) {
    rd_kafka_topic_t *rkt = rd_kafka_topic_new(lg->consumer, LG_RESULTS_TOPIC, NULL);
    if (!rkt) {
        lg_fail(lg, "%s: %s", LG_RESULTS_TOPIC, rd_kafka_err2str(rd_kafka_last_error()));
        return -1;
    }
    int count = 0;
    while (count == 0 && !lg_stop && !lg->failed) {
        int step = lg_left_ms(deadline_us, LG_STEP_MS);
        if (step == 0) break;
        const struct rd_kafka_metadata *md = NULL;
        rd_kafka_resp_err_t err = rd_kafka_metadata(lg->consumer, 0, rkt, &md, step);
        if (!err && md->topic_cnt == 1 && !md->topics[0].err)
            count = md->topics[0].partition_cnt;
        if (md) rd_kafka_metadata_destroy(md);
        if (count == 0) lg_consumer_idle(lg, lg_left_ms(deadline_us, 100));
    }
    rd_kafka_topic_destroy(rkt);
    if (count == 0) {
        if (!lg->failed) lg_fail(lg, "no metadata for topic %s", LG_RESULTS_TOPIC);
        return -1;
    }

    rd_kafka_topic_partition_list_t *parts = rd_kafka_topic_partition_list_new(count);
    int rc = 0;
    for (int32_t p = 0; p < count && rc == 0; p++) {
        int64_t low = 0, high = -1;
        rd_kafka_resp_err_t err = RD_KAFKA_RESP_ERR__TIMED_OUT;
        while (err && !lg_stop && !lg->failed) {
            int step = lg_left_ms(deadline_us, LG_STEP_MS);
            if (step == 0) break;
            err = rd_kafka_query_watermark_offsets(lg->consumer, LG_RESULTS_TOPIC, p, &low, &high,
                                                   step);
            if (err) lg_consumer_idle(lg, lg_left_ms(deadline_us, 100));
        }
        if (err) {
            if (!lg->failed)
                lg_fail(lg, "end offset of %s [%d]: %s", LG_RESULTS_TOPIC, (int)p,
                        rd_kafka_err2str(err));
            rc = -1;
        } else {
            rd_kafka_topic_partition_list_add(parts, LG_RESULTS_TOPIC, p)->offset = high;
        }
    }
    if (rc == 0) {
        rd_kafka_resp_err_t err = rd_kafka_assign(lg->consumer, parts);
        if (err) {
            lg_fail(lg, "assign %s: %s", LG_RESULTS_TOPIC, rd_kafka_err2str(err));
            rc = -1;
        }
    }
    rd_kafka_topic_partition_list_destroy(parts);
    return rc;
}

/* Produces one command with an explicit CreateTime. @returns 0, 1 when the
 * local queue is full (try again after serving reports), -1 on failure. */
static int lg_produce(lg_t *lg, const char *key, const char *value, int len, int64_t ts_ms) {
    rd_kafka_resp_err_t err = rd_kafka_producev(
        lg->producer, RD_KAFKA_V_TOPIC(LG_COMMANDS_TOPIC),
        RD_KAFKA_V_KEY(key, strlen(key)), RD_KAFKA_V_VALUE((void *)(uintptr_t)value, (size_t)len),
        RD_KAFKA_V_MSGFLAGS(RD_KAFKA_MSG_F_COPY), RD_KAFKA_V_TIMESTAMP(ts_ms), RD_KAFKA_V_END);
    if (err == RD_KAFKA_RESP_ERR__QUEUE_FULL) return 1;
    if (err) {
        lg_fail(lg, "cannot produce to %s: %s", LG_COMMANDS_TOPIC, rd_kafka_err2str(err));
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Results                                                                   */

static void lg_count_code(lg_t *lg, const char *code) {
    for (size_t i = 0; i < lg->ncodes; i++) {
        if (strcmp(lg->codes[i].name, code) == 0) {
            lg->codes[i].count++;
            return;
        }
    }
    if (lg->ncodes == LG_MAX_CODES) code = "(other)";
    size_t i = lg->ncodes < LG_MAX_CODES ? lg->ncodes++ : LG_MAX_CODES - 1;
    snprintf(lg->codes[i].name, sizeof(lg->codes[i].name), "%s", code);
    lg->codes[i].count++;
}

/* The value of header @p name as a string in @p buf ("" when absent). */
static void lg_header(const rd_kafka_message_t *m, const char *name, char *buf, size_t size) {
    rd_kafka_headers_t *hdrs = NULL;
    const void *val = NULL;
    size_t len = 0;
    buf[0] = '\0';
    if (rd_kafka_message_headers(m, &hdrs) || !hdrs) return;
    if (rd_kafka_header_get_last(hdrs, name, &val, &len) || !val) return;
    if (len >= size) len = size - 1;
    memcpy(buf, val, len);
    buf[len] = '\0';
}

/* error.code of an error result, or "(unreadable)". Only error results are
 * parsed: the tt-status header tells ok apart, and parsing every result
 * would take CPU from the bridge on a small machine. */
static void lg_error_code(const rd_kafka_message_t *m, char *buf, size_t size) {
    json_error_t jerr;
    json_t *doc = json_loadb(m->payload, m->len, 0, &jerr);
    const char *code = json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
    snprintf(buf, size, "%s", code ? code : "(unreadable)");
    json_decref(doc);
}

/* A setup (spawn) result: remembers the agent's id. */
static void lg_take_setup(lg_t *lg, long n, const rd_kafka_message_t *m) {
    if (lg->agents[n].id[0]) {
        lg->duplicates++; /* the mock may store a retried batch twice */
        return;
    }
    json_error_t jerr;
    json_t *doc = json_loadb(m->payload, m->len, 0, &jerr);
    if (!doc) {
        lg_fail(lg, "setup result for bench-%ld is not JSON: %s", n, jerr.text);
        return;
    }
    const char *id = json_string_value(
        json_object_get(json_object_get(json_object_get(doc, "result"), "agent"), "id"));
    if (json_is_true(json_object_get(doc, "ok")) && id && strlen(id) == LG_UUID_LEN) {
        memcpy(lg->agents[n].id, id, LG_UUID_LEN + 1);
        lg->agents_known++;
    } else {
        const char *code =
            json_string_value(json_object_get(json_object_get(doc, "error"), "code"));
        const char *msg =
            json_string_value(json_object_get(json_object_get(doc, "error"), "message"));
        lg_fail(lg, "spawning bench-%ld failed: %s: %s (a town left over from another run?)", n,
                code ? code : "?", msg ? msg : "no agent id in the result");
    }
    json_decref(doc);
}

/* A timed result: its latency and code. */
static void lg_take_timed(lg_t *lg, long n, const rd_kafka_message_t *m) {
    if (n >= lg->produced) {
        lg->foreign++; /* an id we have not sent (yet): not ours */
        return;
    }
    if (lg->latency_ms[n] >= 0) {
        lg->duplicates++;
        return;
    }
    rd_kafka_timestamp_type_t tstype;
    int64_t ts = rd_kafka_message_timestamp(m, &tstype);
    if (tstype != RD_KAFKA_TIMESTAMP_CREATE_TIME || ts < 0) {
        lg_fail(lg, "result %.*s has no CreateTime", (int)m->key_len, (const char *)m->key);
        return;
    }
    /* Both stamps come from this machine's wall clock, so a negative value
     * can only be a clock step; it is counted as 0 rather than dropped. */
    int64_t lat = ts - lg->sent_ms[n];
    lg->latency_ms[n] = (int32_t)(lat < 0 ? 0 : lat > INT32_MAX ? INT32_MAX : lat);
    /* A transactional result is readable (read_committed) only once its
     * transaction commits, after its CreateTime: this one shows that. */
    int64_t vis = lg_wall_ms() - lg->sent_ms[n];
    lg->visible_ms[n] = (int32_t)(vis < 0 ? 0 : vis > INT32_MAX ? INT32_MAX : vis);
    lg->answered++;
    lg->last_result_us = lg_mono_us();
    char status[16], code[64];
    lg_header(m, "tt-status", status, sizeof(status));
    if (strcmp(status, "ok") == 0) {
        lg_count_code(lg, "ok");
    } else {
        lg_error_code(m, code, sizeof(code));
        lg_count_code(lg, code);
    }
}

/* Routes one result record by its key, the command id. */
static void lg_take_result(lg_t *lg, const rd_kafka_message_t *m) {
    const char *key = m->key;
    size_t klen = m->key_len;
    if (!key || klen <= lg->prefix_len + 1 || memcmp(key, lg->prefix, lg->prefix_len) != 0 ||
        key[lg->prefix_len] != '-') {
        lg->foreign++;
        return;
    }
    size_t i = lg->prefix_len + 1;
    bool setup = key[i] == 's';
    if (setup) i++;
    long n = 0;
    if (i == klen) {
        lg->foreign++;
        return;
    }
    for (; i < klen; i++) {
        if (key[i] < '0' || key[i] > '9' || n > LG_MAX_COMMANDS) {
            lg->foreign++;
            return;
        }
        n = n * 10 + (key[i] - '0');
    }
    if (setup) {
        if (n < lg->o.agents) lg_take_setup(lg, n, m);
        else lg->foreign++;
    } else {
        lg_take_timed(lg, n, m);
    }
}

/* Reads what results are there, waiting at most @p timeout_ms for the
 * first. */
static void lg_consume(lg_t *lg, int timeout_ms) {
    for (int i = 0; i < LG_CONSUME_SLICE && !lg->failed; i++) {
        rd_kafka_message_t *m = rd_kafka_consumer_poll(lg->consumer, i == 0 ? timeout_ms : 0);
        if (!m) return;
        if (m->err) {
            if (m->err == RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET ||
                m->err == RD_KAFKA_RESP_ERR_OFFSET_OUT_OF_RANGE) {
                lg_fail(lg,
                        "%s [%d]: results were dropped by the broker before they were read "
                        "(%s); the mock broker keeps only ~5 MiB per partition",
                        LG_RESULTS_TOPIC, (int)m->partition, rd_kafka_message_errstr(m));
            } else {
                fprintf(stderr, LG_PROG ": consumer: %s\n", rd_kafka_message_errstr(m));
            }
        } else {
            lg_take_result(lg, m);
        }
        rd_kafka_message_destroy(m);
    }
}

/* ------------------------------------------------------------------------ */
/* Setup                                                                     */

/* Spawns the agent pool and waits for every id. @returns 0 or -1. */
static int lg_setup(lg_t *lg, uint64_t deadline_us) {
    char value[LG_CMD_MAX], key[32];
    uint64_t t0 = lg_mono_us();
    for (long n = 0; n < lg->o.agents && !lg->failed && !lg_stop;) {
        snprintf(key, sizeof(key), "bench-%ld", n);
        int len = snprintf(value, sizeof(value),
                           "{\"id\":\"%s-s%ld\",\"town\":\"%s\",\"op\":\"spawn\","
                           "\"args\":{\"name\":\"%s\",\"role_id\":\"bench\"}}",
                           lg->prefix, n, lg->o.town, key);
        if (len < 0 || len >= (int)sizeof(value)) {
            lg_fail(lg, "command too long");
            break;
        }
        int rc = lg_produce(lg, key, value, len, lg_wall_ms());
        if (rc == 1) rd_kafka_poll(lg->producer, 10);
        else if (rc == 0) n++;
        if (lg_mono_us() >= deadline_us) break;
    }
    while (lg->agents_known < lg->o.agents && !lg->failed && !lg_stop) {
        int left = lg_left_ms(deadline_us, LG_IDLE_POLL_MS);
        if (left == 0) break;
        rd_kafka_poll(lg->producer, 0);
        lg_consume(lg, left);
    }
    if (lg->agents_known < lg->o.agents) {
        if (!lg->failed)
            lg_fail(lg, "setup: %ld of %ld spawn results arrived before %s", lg->agents_known,
                    lg->o.agents, lg_stop ? "the stop signal" : "the timeout");
        return -1;
    }
    fprintf(stderr, LG_PROG ": setup: %ld agents spawned in %.2f s\n", lg->o.agents,
            (double)(lg_mono_us() - t0) / 1e6);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The timed phase                                                           */

/* Writes command @p n into @p value (and its key). @returns its length. */
static int lg_make_command(lg_t *lg, long n, char *value, size_t size, char *key,
                           size_t key_size, lg_op_t *op_out) {
    long a;
    lg_op_t op;
    if (lg->follow_op != LG_OP__COUNT) {
        op = lg->follow_op;
        a = lg->follow_agent;
        lg->follow_op = LG_OP__COUNT;
    } else {
        uint32_t pick = lg_rand_below(lg, LG_PICK_TOTAL);
        a = (long)lg_rand_below(lg, (uint32_t)lg->o.agents);
        bool pair = (pick >= LG_PICK_TOGGLE && pick < LG_PICK_KILL) ||
                    (pick >= LG_PICK_GET_RESULT && pick < LG_PICK_SPAWN);
        /* A pair in the last slot would leave its second half unsent. */
        if (lg->o.list_limit)
            op = LG_OP_LIST_OPEN;
        else if (lg->o.get_result)
            op = LG_OP_GET_RESULT;
        else if (pick < LG_PICK_TOGGLE || (pair && n + 1 == lg->o.commands) || lg->o.by_name)
            op = lg->agents[a].paused ? LG_OP_RESUME : LG_OP_INTERRUPT;
        else if (pick < LG_PICK_KILL) op = LG_OP_KILL;
        else if (pick < LG_PICK_WAIT) op = LG_OP_WAIT;
        else if (pick < LG_PICK_GET_RESULT) op = LG_OP_GET_RESULT;
        else if (pick < LG_PICK_SPAWN) op = LG_OP_SPAWN;
        else op = LG_OP_LIST_OPEN;
    }
    char by_name[32];
    snprintf(by_name, sizeof(by_name), "bench-%ld", a);
    const char *id = lg->o.by_name || lg->o.get_result ? by_name : lg->agents[a].id;
    const char *name = lg_op_names[op];
    int len;
    /* Keys: the agent's name for its commands (one agent, one partition,
     * one order); the town for a list. */
    switch (op) {
    case LG_OP_INTERRUPT:
    case LG_OP_RESUME:
    case LG_OP_KILL:
    case LG_OP_RESTART:
    case LG_OP_GET_RESULT:
        snprintf(key, key_size, "bench-%ld", a);
        len = snprintf(value, size,
                       "{\"id\":\"%s-%ld\",\"town\":\"%s\",\"op\":\"%s\",\"args\":{\"agent\":\"%s\"}}",
                       lg->prefix, n, lg->o.town, name, id);
        if (op == LG_OP_INTERRUPT) {
            lg->agents[a].paused = true;
        } else if (op == LG_OP_RESUME || op == LG_OP_RESTART) {
            lg->agents[a].paused = false; /* restart leaves it Idle */
        } else if (op == LG_OP_KILL) {
            lg->follow_op = LG_OP_RESTART;
            lg->follow_agent = a;
        }
        break;
    case LG_OP_WAIT:
        /* timeout_ms 0: answered at once (timed_out true for a live agent),
         * so the figure is the bridge's, not a wait's length. */
        snprintf(key, key_size, "bench-%ld", a);
        len = snprintf(value, size,
                       "{\"id\":\"%s-%ld\",\"town\":\"%s\",\"op\":\"wait\","
                       "\"args\":{\"agent\":\"%s\",\"timeout_ms\":0}}",
                       lg->prefix, n, lg->o.town, id);
        break;
    case LG_OP_SPAWN:
        /* A name never used before (numbered after the pool), as child of a
         * pool agent, so spawns exercise the parent lookup too. */
        snprintf(key, key_size, "bench-%ld", lg->o.agents + lg->spawned);
        len = snprintf(value, size,
                       "{\"id\":\"%s-%ld\",\"town\":\"%s\",\"op\":\"spawn\",\"args\":"
                       "{\"name\":\"%s\",\"role_id\":\"bench\",\"parent\":\"%s\"}}",
                       lg->prefix, n, lg->o.town, key, id);
        lg->follow_op = LG_OP_KILL_NEW;
        lg->follow_agent = lg->o.agents + lg->spawned++;
        break;
    case LG_OP_KILL_NEW:
        /* By name, its id being unknown until the spawn's result is back;
         * the same key as the spawn keeps the kill behind it. */
        snprintf(key, key_size, "bench-%ld", a);
        len = snprintf(value, size,
                       "{\"id\":\"%s-%ld\",\"town\":\"%s\",\"op\":\"kill\",\"args\":{\"agent\":\"%s\"}}",
                       lg->prefix, n, lg->o.town, key);
        break;
    case LG_OP_LIST_OPEN:
    default:
        snprintf(key, key_size, "%s", lg->o.town);
        if (lg->o.list_limit)
            len = snprintf(value, size,
                           "{\"id\":\"%s-%ld\",\"town\":\"%s\",\"op\":\"list_open\","
                           "\"args\":{\"limit\":%ld}}",
                           lg->prefix, n, lg->o.town, lg->o.list_limit);
        else
            len = snprintf(value, size,
                           "{\"id\":\"%s-%ld\",\"town\":\"%s\",\"op\":\"list_open\"}",
                           lg->prefix, n, lg->o.town);
        break;
    }
    *op_out = op;
    return len;
}

/* Produces what the rate allows now (a slice at most). @returns false when
 * librdkafka's queue was full, so the caller waits only briefly. */
static bool lg_produce_some(lg_t *lg, uint64_t t0_us) {
    long target = lg->o.commands;
    if (lg->o.rate > 0) {
        double due = (double)(lg_mono_us() - t0_us) / 1e6 * lg->o.rate + 1.0;
        if (due < (double)target) target = (long)due;
    }
    for (int i = 0; i < LG_PRODUCE_SLICE && lg->produced < target && !lg->failed; i++) {
        long n = lg->produced;
        /* A command refused for a full queue is kept and offered again as
         * is, so the drawn sequence (and each agent's alternation) holds. */
        if (!lg->held) {
            lg->held_len = lg_make_command(lg, n, lg->held_value, sizeof(lg->held_value),
                                           lg->held_key, sizeof(lg->held_key), &lg->held_op);
            if (lg->held_len < 0 || lg->held_len >= (int)sizeof(lg->held_value)) {
                lg_fail(lg, "command too long");
                return true;
            }
            lg->held = true;
        }
        int64_t ts = lg_wall_ms();
        int rc = lg_produce(lg, lg->held_key, lg->held_value, lg->held_len, ts);
        if (rc) return rc < 0;
        lg->held = false;
        lg->sent_ms[n] = ts;
        lg->ops[n] = (uint8_t)lg->held_op;
        if (n == 0) lg->first_send_us = lg_mono_us();
        lg->produced++;
        if (lg->produced == lg->o.commands) lg->last_send_us = lg_mono_us();
    }
    return true;
}

static int lg_run_timed(lg_t *lg, uint64_t deadline_us) {
    uint64_t t0 = lg_mono_us();
    while (lg->answered < lg->o.commands && !lg->failed && !lg_stop) {
        if (lg_mono_us() >= deadline_us) break;
        bool more = lg->produced < lg->o.commands;
        bool queue_ok = more ? lg_produce_some(lg, t0) : true;
        rd_kafka_poll(lg->producer, 0);
        int wait;
        if (!more) {
            wait = lg_left_ms(deadline_us, LG_IDLE_POLL_MS);
        } else if (!queue_ok) {
            wait = 1; /* librdkafka's queue is full: let it drain */
        } else if (lg->o.rate > 0) {
            /* Sleep (in the consumer) until the next command is due. */
            double next_s = (double)lg->produced / lg->o.rate;
            uint64_t due_us = t0 + (uint64_t)(next_s * 1e6);
            uint64_t now = lg_mono_us();
            /* Rounded up: at high rates the next command is due in under a
             * millisecond, and a zero wait would spin. */
            wait = due_us > now ? (int)((due_us - now + 999) / 1000) : 0;
            if (wait > LG_IDLE_POLL_MS) wait = LG_IDLE_POLL_MS;
        } else {
            wait = 0;
        }
        lg_consume(lg, wait);
    }
    return lg->answered == lg->o.commands ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* Report                                                                    */

static int lg_cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Nearest-rank percentile of sorted @p v. */
static int32_t lg_pct(const int32_t *v, size_t n, double p) {
    if (n == 0) return -1;
    size_t rank = (size_t)(p / 100.0 * (double)n + 0.999999);
    if (rank < 1) rank = 1;
    if (rank > n) rank = n;
    return v[rank - 1];
}

/* Prints the percentiles of @p values over the answered commands, sorting
 * them in @p scratch (room for every command). */
static void lg_print_pcts(const lg_t *lg, const int32_t *values, int32_t *scratch,
                          const char *label, const char *what) {
    size_t k = 0;
    for (long i = 0; i < lg->produced; i++)
        if (lg->latency_ms[i] >= 0) scratch[k++] = values[i];
    qsort(scratch, k, sizeof(*scratch), lg_cmp_i32);
    printf("%s   p50 %d  p90 %d  p99 %d  max %d   (%s)\n", label, lg_pct(scratch, k, 50),
           lg_pct(scratch, k, 90), lg_pct(scratch, k, 99), k ? scratch[k - 1] : -1, what);
}

static void lg_report(lg_t *lg) {
    long n = lg->o.commands;
    double wall_s = lg->last_result_us > lg->first_send_us
                        ? (double)(lg->last_result_us - lg->first_send_us) / 1e6
                        : 0.0;
    double send_s = lg->last_send_us > lg->first_send_us
                        ? (double)(lg->last_send_us - lg->first_send_us) / 1e6
                        : 0.0;
    printf("commands      %ld answered of %ld sent (%ld planned)\n", lg->answered, lg->produced, n);
    if (lg->o.rate > 0) printf("offered       %.0f commands/s\n", lg->o.rate);
    else printf("offered       as fast as possible (all queued in %.2f s)\n", send_s);
    printf("wall time     %.3f s (first command produced -> last result received)\n", wall_s);
    printf("throughput    %.0f commands/s\n", wall_s > 0 ? (double)lg->answered / wall_s : 0.0);

    int32_t *all = malloc(sizeof(*all) * (size_t)(n ? n : 1));
    if (!all) {
        printf("latency       (out of memory)\n");
        return;
    }
    lg_print_pcts(lg, lg->latency_ms, all, "latency ms ", "result CreateTime - command CreateTime");
    lg_print_pcts(lg, lg->visible_ms, all, "visible ms ", "result read here - command CreateTime");

    printf("results      ");
    for (size_t i = 0; i < lg->ncodes; i++)
        printf(" %s %ld", lg->codes[i].name, lg->codes[i].count);
    printf("\n");
    if (lg->duplicates || lg->foreign)
        printf("other         %ld duplicate result records, %ld not ours\n", lg->duplicates,
               lg->foreign);

    printf("by op         %-10s %7s %6s %6s %6s\n", "op", "count", "p50", "p99", "max");
    for (int op = 0; op < LG_OP__COUNT; op++) {
        size_t k = 0;
        long sent = 0;
        for (long i = 0; i < lg->produced; i++) {
            if (lg->ops[i] != op) continue;
            sent++;
            if (lg->latency_ms[i] >= 0) all[k++] = lg->latency_ms[i];
        }
        if (sent == 0) continue;
        qsort(all, k, sizeof(*all), lg_cmp_i32);
        printf("              %-10s %7ld %6d %6d %6d\n", lg_op_labels[op], sent,
               lg_pct(all, k, 50), lg_pct(all, k, 99), k ? all[k - 1] : -1);
    }
    free(all);
    /* This program shares the machine with what it measures; its own CPU
     * time says how much it took from the bridge. */
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) == 0)
        printf("loadgen       CPU %.1f s\n",
               (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                   (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6);
    fflush(stdout);
}

/* ------------------------------------------------------------------------ */

static void lg_close(lg_t *lg) {
    if (lg->consumer) {
        rd_kafka_consumer_close(lg->consumer);
        rd_kafka_destroy(lg->consumer);
    }
    if (lg->producer) {
        /* Bounded: a broker gone at the end must not hold the run. */
        if (rd_kafka_flush(lg->producer, 5000) != RD_KAFKA_RESP_ERR_NO_ERROR)
            rd_kafka_purge(lg->producer, RD_KAFKA_PURGE_F_QUEUE | RD_KAFKA_PURGE_F_INFLIGHT);
        rd_kafka_poll(lg->producer, 0);
        rd_kafka_destroy(lg->producer);
    }
    free(lg->agents);
    free(lg->sent_ms);
    free(lg->latency_ms);
    free(lg->visible_ms);
    free(lg->ops);
}

int main(int argc, char **argv) {
    lg_t lg;
    memset(&lg, 0, sizeof(lg));
    int rc = lg_parse_opts(argc, argv, &lg.o);
    if (rc) return rc < 0 ? LG_EXIT_OK : rc;

    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = lg_on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    uint64_t start_us = lg_mono_us();
    uint64_t deadline_us = start_us + (uint64_t)lg.o.timeout_s * 1000000u;
    /* Ids unique per run: the bridge remembers command ids for days, and a
     * repeated id would be answered from memory, not applied. */
    snprintf(lg.prefix, sizeof(lg.prefix), "lg%08" PRIx32 "%04x",
             (uint32_t)((uint64_t)lg_wall_ms() & 0xffffffffu), (unsigned)(getpid() & 0xffff));
    lg.prefix_len = strlen(lg.prefix);
    lg.rng = lg.o.seed * 0x9E3779B97F4A7C15ULL;
    if (!lg.rng) lg.rng = 1;
    lg.follow_op = LG_OP__COUNT;

    size_t n = (size_t)lg.o.commands;
    lg.agents = calloc((size_t)lg.o.agents, sizeof(*lg.agents));
    lg.sent_ms = calloc(n, sizeof(*lg.sent_ms));
    lg.latency_ms = malloc(n * sizeof(*lg.latency_ms));
    lg.visible_ms = malloc(n * sizeof(*lg.visible_ms));
    lg.ops = calloc(n, sizeof(*lg.ops));
    if (!lg.agents || !lg.sent_ms || !lg.latency_ms || !lg.visible_ms || !lg.ops) {
        fprintf(stderr, LG_PROG ": out of memory\n");
        lg_close(&lg);
        return LG_EXIT_INCOMPLETE;
    }
    for (size_t i = 0; i < n; i++) lg.latency_ms[i] = -1;

    lg.producer = lg_producer_new(&lg);
    lg.consumer = lg.producer ? lg_consumer_new(&lg) : NULL;
    if (!lg.consumer) {
        lg_close(&lg);
        return LG_EXIT_INCOMPLETE;
    }

    rc = lg_assign_results(&lg, deadline_us);
    if (rc == 0) rc = lg_setup(&lg, deadline_us);
    if (rc == 0) {
        fprintf(stderr, LG_PROG ": timed phase: %ld commands%s\n", lg.o.commands,
                lg.o.rate > 0 ? "" : ", as fast as possible");
        rc = lg_run_timed(&lg, deadline_us);
        if (rc && !lg.failed) {
            fprintf(stderr, LG_PROG ": %ld of %ld commands got no result before %s\n",
                    lg.o.commands - lg.answered, lg.o.commands,
                    lg_stop ? "the stop signal" : "the timeout");
        }
        lg_report(&lg);
        if (lg.delivery_failures)
            fprintf(stderr, LG_PROG ": %ld commands were not delivered to Kafka\n",
                    lg.delivery_failures);
    }
    lg_close(&lg);
    return rc == 0 && !lg.failed ? LG_EXIT_OK : LG_EXIT_INCOMPLETE;
}
