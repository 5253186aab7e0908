/* SPDX-License-Identifier: MIT */
/*
 * ttb-broker: the Kafka broker for local runs and black-box tests, built on
 * librdkafka's mock cluster.
 *
 * A mock cluster lives inside a librdkafka handle (here an idle producer that
 * never connects anywhere) and runs its own thread. Each mock broker listens
 * on 127.0.0.1 at a port the kernel picks, and speaks enough of the Kafka
 * protocol for producers, consumer groups with stored offset commits and
 * metadata, which is what tinytown-bridge and its tests need. The mock has no
 * CreateTopics API, so topics are created here, before anything is printed:
 * once the single `bootstrap=host:port,...` line appears on stdout, every
 * requested topic exists and clients may connect. The program then runs until
 * SIGTERM or SIGINT and tears down the mock cluster before its owning handle
 * (the other order leaves the mock thread using a freed handle).
 *
 * With --control it also reads fault-injection commands on stdin (broker
 * outages, latency, request errors, leader and coordinator moves, late topic
 * creation) and answers each with one line, `ok` or `error <reason>`, so a
 * test in any language can drive failures in a broker running in another
 * process. End of input only stops the reading: a test harness that closes
 * its pipe must not take the broker down with it; only a signal does.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "tinytown_bridge/log.h"
#include <librdkafka/rdkafka_mock.h>

#define BROKER_PROG "ttb-broker"

/* Exit codes: 2 for bad usage, so scripts can tell a typo from a failure. */
#define BROKER_EXIT_OK 0
#define BROKER_EXIT_FAIL 1
#define BROKER_EXIT_USAGE 2

/* Limits that keep a typo from allocating gigabytes; far above any test. */
#define BROKER_MAX_BROKERS 64
#define BROKER_MAX_PARTITIONS 10000
#define BROKER_MAX_ERROR_COUNT 10000
#define BROKER_MAX_RTT_MS (60 * 60 * 1000)
#define BROKER_TOPIC_NAME_MAX 249 /* Kafka's own limit */

/* How long the main loop sleeps between checks of the stop flag. */
#define BROKER_POLL_MS 100

/* A control line longer than this is refused whole, not split. */
#define BROKER_LINE_MAX 4096

/* librdkafka log levels are syslog levels; named here to avoid syslog.h. */
#define BROKER_SYSLOG_ERR 3
#define BROKER_SYSLOG_WARNING 4
#define BROKER_SYSLOG_DEBUG 7

/* ------------------------------------------------------------------------ */
/* Logging: the house format (`<time> level=... msg=... k=v`), kept local    */
/* because this tool links only librdkafka, not the bridge library.          */
/* ------------------------------------------------------------------------ */

/*
 * librdkafka's own messages. The owning handle is an idle producer whose
 * notices ("no bootstrap.servers configured") would only mislead, so below
 * warning they are passed on only with --debug.
 *
 * @locality any librdkafka thread
 */
static void broker_on_rdkafka_log(const rd_kafka_t *rk, int level, const char *fac,
                                  const char *buf) {
    (void)rk;
    ttb_log_level_t ours = level <= BROKER_SYSLOG_ERR       ? TTB_LOG_ERROR
                           : level == BROKER_SYSLOG_WARNING ? TTB_LOG_WARN
                           : level >= BROKER_SYSLOG_DEBUG   ? TTB_LOG_DEBUG
                                                            : TTB_LOG_INFO;
    if (level > BROKER_SYSLOG_WARNING && !ttb_log_enabled(TTB_LOG_DEBUG)) return;
    ttb_log(ours, buf, "source", "librdkafka", "facility", fac, (const char *)0);
}

/* ------------------------------------------------------------------------ */
/* Small parsers                                                             */
/* ------------------------------------------------------------------------ */

/* Parses a whole decimal integer in [min, max]; no sign games, no spaces. */
static bool broker_parse_long(const char *s, long min, long max, long *out) {
    if (!s || !*s || isspace((unsigned char)*s)) return false;
    char *end = NULL;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno != 0 || !end || *end != '\0' || v < min || v > max) return false;
    *out = v;
    return true;
}

/* Kafka's rule: 1..249 of [A-Za-z0-9._-], and not "." or "..". */
static bool broker_topic_name_valid(const char *name) {
    size_t len = strlen(name);
    if (len == 0 || len > BROKER_TOPIC_NAME_MAX) return false;
    if (strcmp(name, ".") == 0 || strcmp(name, "..") == 0) return false;
    for (const char *p = name; *p; p++) {
        if (!isalnum((unsigned char)*p) && *p != '.' && *p != '_' && *p != '-') return false;
    }
    return true;
}

/*
 * Checks a topic's partition and replication counts against the cluster.
 * @returns true, or false with a reason in errstr.
 */
static bool broker_topic_counts_valid(long partitions, long replication, int broker_cnt,
                                      char *errstr, size_t errstr_size) {
    if (partitions < 1 || partitions > BROKER_MAX_PARTITIONS) {
        snprintf(errstr, errstr_size, "partitions must be 1..%d", BROKER_MAX_PARTITIONS);
        return false;
    }
    if (replication < 1 || replication > broker_cnt) {
        snprintf(errstr, errstr_size, "replication must be 1..%d (the broker count)",
                 broker_cnt);
        return false;
    }
    return true;
}

/* Protocol API keys by name; librdkafka keeps its table private. */
static const struct {
    const char *name;
    int16_t key;
} broker_apikeys[] = {
    {"Produce", 0},         {"Fetch", 1},
    {"ListOffsets", 2},     {"Metadata", 3},
    {"OffsetCommit", 8},    {"OffsetFetch", 9},
    {"FindCoordinator", 10}, {"JoinGroup", 11},
    {"Heartbeat", 12},      {"LeaveGroup", 13},
    {"SyncGroup", 14},      {"DescribeGroups", 15},
    {"ListGroups", 16},     {"ApiVersions", 18},
    {"InitProducerId", 22}, {"AddPartitionsToTxn", 24},
    {"AddOffsetsToTxn", 25}, {"EndTxn", 26},
    {"TxnOffsetCommit", 28},
};

/* Accepts a number (0..32767) or a name from broker_apikeys, any case. */
static bool broker_parse_apikey(const char *s, int16_t *out) {
    long v;
    if (broker_parse_long(s, 0, INT16_MAX, &v)) {
        *out = (int16_t)v;
        return true;
    }
    for (size_t i = 0; i < sizeof(broker_apikeys) / sizeof(broker_apikeys[0]); i++) {
        if (strcasecmp(s, broker_apikeys[i].name) == 0) {
            *out = broker_apikeys[i].key;
            return true;
        }
    }
    return false;
}

/*
 * Accepts an error code as a number or as librdkafka names it
 * ("REQUEST_TIMED_OUT", "_TRANSPORT", optionally with the RD_KAFKA_RESP_ERR_
 * prefix). Only codes librdkafka knows are accepted, so a typo fails loudly
 * instead of injecting an error no client can interpret.
 */
static bool broker_parse_errcode(const char *s, rd_kafka_resp_err_t *out) {
    const struct rd_kafka_err_desc *descs = NULL;
    size_t cnt = 0;
    long v = 0;
    bool numeric = broker_parse_long(s, INT16_MIN, INT16_MAX, &v);
    const char *name = s;
    if (strncasecmp(name, "RD_KAFKA_RESP_ERR_", 18) == 0) name += 18;

    rd_kafka_get_err_descs(&descs, &cnt);
    for (size_t i = 0; i < cnt; i++) {
        if (!descs[i].name) continue; /* holes in the table */
        if (numeric ? (long)descs[i].code == v : strcasecmp(descs[i].name, name) == 0) {
            *out = descs[i].code;
            return true;
        }
    }
    return false;
}

/* ------------------------------------------------------------------------ */
/* Command line                                                              */
/* ------------------------------------------------------------------------ */

typedef struct broker_topic {
    char name[BROKER_TOPIC_NAME_MAX + 1];
    long partitions;  /* checked to fit an int before use */
    long replication; /* checked against the broker count, known only at the end */
} broker_topic_t;

typedef struct broker_opts {
    int broker_cnt;
    broker_topic_t *topics; /* owned; up to argc entries */
    size_t topic_cnt;
    const char *bootstrap_file; /* points into argv */
    const char *debug;          /* librdkafka debug contexts, points into argv */
    bool control;
} broker_opts_t;

static void broker_usage(FILE *out) {
    fprintf(out,
            "Usage: " BROKER_PROG " [OPTIONS]\n"
            "A Kafka broker for local runs and tests, on librdkafka's mock cluster.\n"
            "Prints one line `bootstrap=HOST:PORT[,...]` on stdout once ready, then runs\n"
            "until SIGTERM or SIGINT. Brokers listen on 127.0.0.1 at random ports\n"
            "(librdkafka %s cannot bind a fixed port).\n"
            "\n"
            "Options:\n"
            "  -b, --brokers N            number of brokers, ids 1..N (default 1, max %d)\n"
            "  -t, --topic NAME:PARTITIONS[:REPLICATION]\n"
            "                             create a topic before printing the bootstrap\n"
            "                             line; repeatable. REPLICATION (default 1) must\n"
            "                             be 1..N, but the mock itself always places\n"
            "                             min(3, N) replicas.\n"
            "  -f, --bootstrap-file PATH  also write the bootstrap string to PATH\n"
            "                             (atomically; removed again on a clean stop)\n"
            "  -c, --control              read fault-injection commands on stdin\n"
            "  -d, --debug CONTEXTS       librdkafka debug contexts (e.g. mock,protocol);\n"
            "                             also logs librdkafka's notices\n"
            "  -h, --help                 show this help\n"
            "\n"
            "Control commands (one per line; each answered by `ok` or `error REASON`):\n"
            "  broker-down ID                      refuse connections (-1: all brokers)\n"
            "  broker-up ID                        accept connections again\n"
            "  rtt ID MS                           delay every response by MS ms\n"
            "  request-errors APIKEY COUNT ERRCODE fail the next COUNT requests of APIKEY\n"
            "                                      (number or name, e.g. Produce) with\n"
            "                                      ERRCODE (number or name, e.g.\n"
            "                                      NOT_LEADER_FOR_PARTITION; _TRANSPORT\n"
            "                                      drops the connection)\n"
            "  clear-errors APIKEY                 forget errors pushed for APIKEY\n"
            "  leader TOPIC PARTITION BROKERID     move a partition leader (-1: none);\n"
            "                                      an unknown TOPIC is auto-created with\n"
            "                                      4 partitions, as by a client\n"
            "  coordinator group|transaction KEY BROKERID\n"
            "                                      pin the coordinator of a group or\n"
            "                                      transactional id to broker 1..N\n"
            "  topic-create NAME PARTITIONS REPL   create a topic now\n"
            "  ping                                answer ok (to synchronise)\n"
            "Blank lines and lines starting with # get no answer. End of input stops\n"
            "reading commands, not the broker.\n"
            "\n"
            "Exit status: 0 after a signal, 1 on failure, 2 on bad usage.\n",
            rd_kafka_version_str(), BROKER_MAX_BROKERS);
}

/* One clear line for a usage error; the caller exits with BROKER_EXIT_USAGE. */
__attribute__((format(printf, 1, 2))) static void broker_usage_error(const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    fprintf(stderr, BROKER_PROG ": %s (see --help)\n", msg);
}

/* Parses NAME:PARTITIONS[:REPLICATION]; counts are checked later, against N. */
static bool broker_topic_parse(const char *spec, broker_topic_t *topic) {
    const char *colon = strchr(spec, ':');
    if (!colon) {
        broker_usage_error("--topic %s: expected NAME:PARTITIONS[:REPLICATION]", spec);
        return false;
    }
    size_t name_len = (size_t)(colon - spec);
    if (name_len == 0 || name_len > BROKER_TOPIC_NAME_MAX) {
        broker_usage_error("--topic %s: topic name must be 1..%d characters", spec,
                           BROKER_TOPIC_NAME_MAX);
        return false;
    }
    memcpy(topic->name, spec, name_len);
    topic->name[name_len] = '\0';
    if (!broker_topic_name_valid(topic->name)) {
        broker_usage_error("--topic %s: topic names may hold only A-Z a-z 0-9 . _ -", spec);
        return false;
    }

    char counts[64];
    if (strlen(colon + 1) >= sizeof(counts)) {
        broker_usage_error("--topic %s: bad PARTITIONS[:REPLICATION]", spec);
        return false;
    }
    strcpy(counts, colon + 1);
    char *repl = strchr(counts, ':');
    if (repl) *repl++ = '\0';
    topic->replication = 1;
    if (!broker_parse_long(counts, LONG_MIN, LONG_MAX, &topic->partitions) ||
        (repl && !broker_parse_long(repl, LONG_MIN, LONG_MAX, &topic->replication))) {
        broker_usage_error("--topic %s: PARTITIONS and REPLICATION must be integers", spec);
        return false;
    }
    return true;
}

/*
 * Fills opts from argv. @returns -1 to continue, or an exit status (0 after
 * --help, BROKER_EXIT_USAGE after a usage error already printed).
 * On -1 the caller frees opts->topics.
 */
static int broker_opts_parse(int argc, char **argv, broker_opts_t *opts) {
    static const struct option longopts[] = {
        {"brokers", required_argument, NULL, 'b'},
        {"topic", required_argument, NULL, 't'},
        {"bootstrap-file", required_argument, NULL, 'f'},
        {"control", no_argument, NULL, 'c'},
        {"debug", required_argument, NULL, 'd'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    opts->topics = calloc((size_t)argc + 1, sizeof(*opts->topics));
    if (!opts->topics) {
        fprintf(stderr, BROKER_PROG ": out of memory\n");
        return BROKER_EXIT_FAIL;
    }

    int rc = -1;
    long v;
    int c;
    opterr = 0; /* our own one-line messages */
    while (rc == -1 && (c = getopt_long(argc, argv, ":b:t:f:cd:h", longopts, NULL)) != -1) {
        switch (c) {
        case 'b':
            if (!broker_parse_long(optarg, 1, BROKER_MAX_BROKERS, &v)) {
                broker_usage_error("--brokers %s: expected an integer 1..%d", optarg,
                                   BROKER_MAX_BROKERS);
                rc = BROKER_EXIT_USAGE;
            } else {
                opts->broker_cnt = (int)v;
            }
            break;
        case 't': {
            broker_topic_t *topic = &opts->topics[opts->topic_cnt];
            if (!broker_topic_parse(optarg, topic)) {
                rc = BROKER_EXIT_USAGE;
                break;
            }
            for (size_t i = 0; i < opts->topic_cnt; i++) {
                if (strcmp(opts->topics[i].name, topic->name) == 0) {
                    broker_usage_error("--topic %s: topic given twice", topic->name);
                    rc = BROKER_EXIT_USAGE;
                }
            }
            opts->topic_cnt++;
            break;
        }
        case 'f':
            if (!*optarg) {
                broker_usage_error("--bootstrap-file: empty path");
                rc = BROKER_EXIT_USAGE;
            }
            opts->bootstrap_file = optarg;
            break;
        case 'c': opts->control = true; break;
        case 'd': opts->debug = optarg; break;
        case 'h':
            broker_usage(stdout);
            rc = BROKER_EXIT_OK;
            break;
        case ':':
            broker_usage_error("%s: needs a value", argv[optind - 1]);
            rc = BROKER_EXIT_USAGE;
            break;
        default:
            if (optopt)
                broker_usage_error("unknown option -%c", optopt);
            else
                broker_usage_error("unknown option %s", argv[optind - 1]);
            rc = BROKER_EXIT_USAGE;
            break;
        }
    }
    if (rc == -1 && optind < argc) {
        broker_usage_error("unexpected argument %s", argv[optind]);
        rc = BROKER_EXIT_USAGE;
    }
    for (size_t i = 0; rc == -1 && i < opts->topic_cnt; i++) {
        char why[128];
        if (!broker_topic_counts_valid(opts->topics[i].partitions, opts->topics[i].replication,
                                       opts->broker_cnt, why, sizeof(why))) {
            broker_usage_error("--topic %s: %s", opts->topics[i].name, why);
            rc = BROKER_EXIT_USAGE;
        }
    }
    if (rc != -1) {
        free(opts->topics);
        opts->topics = NULL;
    }
    return rc;
}

/* ------------------------------------------------------------------------ */
/* Output                                                                    */
/* ------------------------------------------------------------------------ */

/* Writes all of buf to fd. @returns 0, or -1 with errno set. */
static int broker_write_all(int fd, const char *buf, size_t len) {
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/*
 * Writes one line on stdout with write(2), not stdio, so that nothing sits in
 * a buffer while a harness waits for it.
 */
static int broker_stdout_line(const char *line) {
    char buf[BROKER_LINE_MAX + 64];
    int n = snprintf(buf, sizeof(buf), "%s\n", line);
    if (n < 0 || (size_t)n >= sizeof(buf)) {
        errno = EOVERFLOW;
        return -1;
    }
    return broker_write_all(STDOUT_FILENO, buf, (size_t)n);
}

/*
 * Writes "bootstrap\n" to path by way of a temporary file and rename(2), so
 * a reader polling for the file never sees it half written. No fsync: the
 * ports die with this process, so surviving a crash would be pointless.
 * @returns 0, or -1 with a reason in errstr.
 */
static int broker_bootstrap_file_write(const char *path, const char *bootstrap, char *errstr,
                                       size_t errstr_size) {
    char tmp[PATH_MAX];
    int n = snprintf(tmp, sizeof(tmp), "%s.tmp.%ld", path, (long)getpid());
    if (n < 0 || (size_t)n >= sizeof(tmp)) {
        snprintf(errstr, errstr_size, "path too long");
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) {
        snprintf(errstr, errstr_size, "open %s: %s", tmp, strerror(errno));
        return -1;
    }
    int rc = broker_write_all(fd, bootstrap, strlen(bootstrap));
    if (rc == 0) rc = broker_write_all(fd, "\n", 1);
    int saved = errno;
    if (close(fd) != 0 && rc == 0) {
        rc = -1;
        saved = errno;
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        rc = -1;
        saved = errno;
    }
    if (rc != 0) {
        snprintf(errstr, errstr_size, "write %s: %s", path, strerror(saved));
        unlink(tmp);
    }
    return rc;
}

/*
 * The mock binds INADDR_LOOPBACK in 2.0.2; checked anyway, because an
 * unauthenticated broker must never end up reachable from outside after a
 * library upgrade. @returns true when every host is in 127.0.0.0/8.
 */
static bool broker_bootstrap_is_loopback(const char *bootstrap) {
    char copy[BROKER_LINE_MAX];
    if (strlen(bootstrap) >= sizeof(copy)) return false;
    strcpy(copy, bootstrap);
    char *save = NULL;
    for (char *tok = strtok_r(copy, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        char *colon = strrchr(tok, ':');
        if (!colon) return false;
        *colon = '\0';
        struct in_addr addr;
        if (inet_pton(AF_INET, tok, &addr) != 1) return false;
        if ((ntohl(addr.s_addr) >> 24) != 127) return false;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Control commands                                                          */
/* ------------------------------------------------------------------------ */

typedef struct broker {
    rd_kafka_t *rk;                    /* owns nothing but the mock's book keeping */
    rd_kafka_mock_cluster_t *mcluster; /* destroyed before rk */
    int broker_cnt;
} broker_t;

/* A control handler: 0 on success, or -1 with a reason in errstr. */
typedef int (*broker_cmd_fn)(broker_t *b, char **argv, char *errstr, size_t errstr_size);

/* Puts a mock error into errstr as "NAME: description". @returns -1 or 0. */
static int broker_mock_result(rd_kafka_resp_err_t err, char *errstr, size_t errstr_size) {
    if (!err) return 0;
    snprintf(errstr, errstr_size, "%s: %s", rd_kafka_err2name(err), rd_kafka_err2str(err));
    return -1;
}

/* Parses a broker id: 1..N, or -1 for all when allow_all. */
static bool broker_parse_id(const broker_t *b, const char *s, bool allow_all, int32_t *out,
                            char *errstr, size_t errstr_size) {
    long v;
    if (!broker_parse_long(s, allow_all ? -1 : 1, b->broker_cnt, &v) || v == 0) {
        snprintf(errstr, errstr_size, "unknown broker %s (brokers are 1..%d%s)", s,
                 b->broker_cnt, allow_all ? ", or -1 for all" : "");
        return false;
    }
    *out = (int32_t)v;
    return true;
}

static int broker_cmd_broker_down(broker_t *b, char **argv, char *errstr, size_t errstr_size) {
    int32_t id;
    if (!broker_parse_id(b, argv[1], true, &id, errstr, errstr_size)) return -1;
    return broker_mock_result(rd_kafka_mock_broker_set_down(b->mcluster, id), errstr,
                              errstr_size);
}

static int broker_cmd_broker_up(broker_t *b, char **argv, char *errstr, size_t errstr_size) {
    int32_t id;
    if (!broker_parse_id(b, argv[1], true, &id, errstr, errstr_size)) return -1;
    return broker_mock_result(rd_kafka_mock_broker_set_up(b->mcluster, id), errstr,
                              errstr_size);
}

static int broker_cmd_rtt(broker_t *b, char **argv, char *errstr, size_t errstr_size) {
    int32_t id;
    long ms;
    if (!broker_parse_id(b, argv[1], true, &id, errstr, errstr_size)) return -1;
    if (!broker_parse_long(argv[2], 0, BROKER_MAX_RTT_MS, &ms)) {
        snprintf(errstr, errstr_size, "bad MS %s (0..%d)", argv[2], BROKER_MAX_RTT_MS);
        return -1;
    }
    return broker_mock_result(rd_kafka_mock_broker_set_rtt(b->mcluster, id, (int)ms), errstr,
                              errstr_size);
}

static int broker_cmd_request_errors(broker_t *b, char **argv, char *errstr,
                                     size_t errstr_size) {
    int16_t apikey;
    long cnt;
    rd_kafka_resp_err_t err;
    if (!broker_parse_apikey(argv[1], &apikey)) {
        snprintf(errstr, errstr_size, "bad APIKEY %s (a number or a name like Produce)",
                 argv[1]);
        return -1;
    }
    if (!broker_parse_long(argv[2], 1, BROKER_MAX_ERROR_COUNT, &cnt)) {
        snprintf(errstr, errstr_size, "bad COUNT %s (1..%d)", argv[2], BROKER_MAX_ERROR_COUNT);
        return -1;
    }
    if (!broker_parse_errcode(argv[3], &err)) {
        snprintf(errstr, errstr_size, "unknown ERRCODE %s", argv[3]);
        return -1;
    }
    /* The array form, because the varargs one takes a count known at compile time. */
    rd_kafka_resp_err_t *errs = malloc((size_t)cnt * sizeof(*errs));
    if (!errs) {
        snprintf(errstr, errstr_size, "out of memory");
        return -1;
    }
    for (long i = 0; i < cnt; i++) errs[i] = err;
    rd_kafka_mock_push_request_errors_array(b->mcluster, apikey, (size_t)cnt, errs);
    free(errs);
    return 0;
}

static int broker_cmd_clear_errors(broker_t *b, char **argv, char *errstr,
                                   size_t errstr_size) {
    int16_t apikey;
    if (!broker_parse_apikey(argv[1], &apikey)) {
        snprintf(errstr, errstr_size, "bad APIKEY %s", argv[1]);
        return -1;
    }
    rd_kafka_mock_clear_request_errors(b->mcluster, apikey);
    return 0;
}

static int broker_cmd_leader(broker_t *b, char **argv, char *errstr, size_t errstr_size) {
    long partition;
    int32_t id;
    if (!broker_topic_name_valid(argv[1])) {
        snprintf(errstr, errstr_size, "bad topic name %s", argv[1]);
        return -1;
    }
    if (!broker_parse_long(argv[2], 0, INT32_MAX, &partition)) {
        snprintf(errstr, errstr_size, "bad PARTITION %s", argv[2]);
        return -1;
    }
    if (!broker_parse_id(b, argv[3], true, &id, errstr, errstr_size)) return -1;
    return broker_mock_result(
        rd_kafka_mock_partition_set_leader(b->mcluster, argv[1], (int32_t)partition, id),
        errstr, errstr_size);
}

static int broker_cmd_coordinator(broker_t *b, char **argv, char *errstr, size_t errstr_size) {
    int32_t id;
    if (strcmp(argv[1], "group") != 0 && strcmp(argv[1], "transaction") != 0) {
        snprintf(errstr, errstr_size, "coordinator type must be group or transaction");
        return -1;
    }
    /*
     * Only existing brokers: the header says any id will do, but 2.0.2's
     * FindCoordinator handler asserts that the broker exists and aborts the
     * whole process. To make a coordinator unreachable, take its broker down.
     */
    if (!broker_parse_id(b, argv[3], false, &id, errstr, errstr_size)) return -1;
    return broker_mock_result(rd_kafka_mock_coordinator_set(b->mcluster, argv[1], argv[2], id),
                              errstr, errstr_size);
}

static int broker_cmd_topic_create(broker_t *b, char **argv, char *errstr,
                                   size_t errstr_size) {
    long partitions, replication;
    if (!broker_topic_name_valid(argv[1])) {
        snprintf(errstr, errstr_size, "bad topic name %s", argv[1]);
        return -1;
    }
    if (!broker_parse_long(argv[2], LONG_MIN, LONG_MAX, &partitions) ||
        !broker_parse_long(argv[3], LONG_MIN, LONG_MAX, &replication)) {
        snprintf(errstr, errstr_size, "PARTITIONS and REPL must be integers");
        return -1;
    }
    if (!broker_topic_counts_valid(partitions, replication, b->broker_cnt, errstr,
                                   errstr_size))
        return -1;
    return broker_mock_result(rd_kafka_mock_topic_create(b->mcluster, argv[1], (int)partitions,
                                                         (int)replication),
                              errstr, errstr_size);
}

static int broker_cmd_ping(broker_t *b, char **argv, char *errstr, size_t errstr_size) {
    (void)b;
    (void)argv;
    (void)errstr;
    (void)errstr_size;
    return 0;
}

static const struct {
    const char *name;
    int argc; /* including the name */
    const char *usage;
    broker_cmd_fn fn;
} broker_commands[] = {
    {"broker-down", 2, "broker-down ID", broker_cmd_broker_down},
    {"broker-up", 2, "broker-up ID", broker_cmd_broker_up},
    {"rtt", 3, "rtt ID MS", broker_cmd_rtt},
    {"request-errors", 4, "request-errors APIKEY COUNT ERRCODE", broker_cmd_request_errors},
    {"clear-errors", 2, "clear-errors APIKEY", broker_cmd_clear_errors},
    {"leader", 4, "leader TOPIC PARTITION BROKERID", broker_cmd_leader},
    {"coordinator", 4, "coordinator group|transaction KEY BROKERID", broker_cmd_coordinator},
    {"topic-create", 4, "topic-create NAME PARTITIONS REPL", broker_cmd_topic_create},
    {"ping", 1, "ping", broker_cmd_ping},
};

#define BROKER_CMD_MAX_ARGS 8

/*
 * Runs one control line and puts its answer ("ok" or "error ...") in reply.
 * @returns false for a blank or comment line, which gets no answer.
 */
static bool broker_control_exec(broker_t *b, char *line, char *reply, size_t reply_size) {
    char logged[BROKER_LINE_MAX];
    snprintf(logged, sizeof(logged), "%s", line);

    char *argv[BROKER_CMD_MAX_ARGS + 1];
    int argc = 0;
    char *save = NULL;
    for (char *tok = strtok_r(line, " \t\r", &save); tok; tok = strtok_r(NULL, " \t\r", &save)) {
        if (argc == BROKER_CMD_MAX_ARGS) {
            argc++;
            break;
        }
        argv[argc++] = tok;
    }
    if (argc == 0 || argv[0][0] == '#') return false;

    char errstr[512] = "";
    int rc = -1;
    size_t i;
    for (i = 0; i < sizeof(broker_commands) / sizeof(broker_commands[0]); i++) {
        if (strcmp(argv[0], broker_commands[i].name) == 0) break;
    }
    if (i == sizeof(broker_commands) / sizeof(broker_commands[0])) {
        snprintf(errstr, sizeof(errstr), "unknown command %s", argv[0]);
    } else if (argc != broker_commands[i].argc) {
        snprintf(errstr, sizeof(errstr), "usage: %s", broker_commands[i].usage);
    } else {
        argv[argc] = NULL;
        rc = broker_commands[i].fn(b, argv, errstr, sizeof(errstr));
    }

    if (rc == 0) {
        snprintf(reply, reply_size, "ok");
        ttb_log_info("control command", "command", logged, "result", "ok");
    } else {
        snprintf(reply, reply_size, "error %s", errstr);
        ttb_log_warn("control command failed", "command", logged, "error", errstr);
    }
    return true;
}

/* Bytes read from stdin that do not yet form a whole line. */
typedef struct broker_linebuf {
    char buf[BROKER_LINE_MAX];
    size_t len;
    bool overflow; /* discarding the rest of an overlong line */
} broker_linebuf_t;

/* Answers one complete line. @returns false when stdout is gone. */
static bool broker_control_line(broker_t *b, broker_linebuf_t *lb, char *line) {
    char reply[BROKER_LINE_MAX];
    if (lb->overflow) {
        lb->overflow = false;
        snprintf(reply, sizeof(reply), "error line too long (max %d bytes)",
                 BROKER_LINE_MAX - 1);
        ttb_log_warn("control line too long");
    } else if (!broker_control_exec(b, line, reply, sizeof(reply))) {
        return true;
    }
    if (broker_stdout_line(reply) != 0) {
        ttb_log_warn("cannot answer control command; stopped reading commands", "error",
                        strerror(errno));
        return false;
    }
    return true;
}

/*
 * Reads what stdin has (poll said it is readable, so read(2) does not block;
 * stdin itself is left blocking as it may be shared with a terminal) and runs
 * every complete line. @returns false when reading should stop: end of input,
 * a read error, or stdout gone.
 */
static bool broker_control_read(broker_t *b, broker_linebuf_t *lb) {
    ssize_t n = read(STDIN_FILENO, lb->buf + lb->len, sizeof(lb->buf) - 1 - lb->len);
    if (n < 0) {
        if (errno == EINTR || errno == EAGAIN) return true;
        ttb_log_warn("control input failed; stopped reading commands", "error",
                        strerror(errno));
        return false;
    }
    if (n == 0) {
        /* A last line without its newline is still a command. */
        if (lb->len > 0 || lb->overflow) {
            lb->buf[lb->len] = '\0';
            broker_control_line(b, lb, lb->buf);
        }
        lb->len = 0;
        ttb_log_info("control input closed; running until a signal");
        return false;
    }
    lb->len += (size_t)n;

    size_t start = 0;
    for (size_t i = 0; i < lb->len; i++) {
        if (lb->buf[i] != '\n') continue;
        lb->buf[i] = '\0';
        if (!broker_control_line(b, lb, lb->buf + start)) return false;
        start = i + 1;
    }
    memmove(lb->buf, lb->buf + start, lb->len - start);
    lb->len -= start;
    if (lb->len == sizeof(lb->buf) - 1) {
        /* No newline in a full buffer: drop it and refuse the line at its end. */
        lb->overflow = true;
        lb->len = 0;
    }
    return true;
}

/* ------------------------------------------------------------------------ */
/* Main                                                                      */
/* ------------------------------------------------------------------------ */

static volatile sig_atomic_t broker_stop_signal = 0;

/* Only records the signal; the main loop notices within BROKER_POLL_MS. */
static void broker_on_signal(int sig) { broker_stop_signal = sig; }

/* Joins the topics as NAME:PARTITIONS,... for the ready log line. */
static void broker_topics_describe(const broker_opts_t *opts, char *out, size_t out_size) {
    size_t len = 0;
    out[0] = '\0';
    for (size_t i = 0; i < opts->topic_cnt && len < out_size; i++) {
        int n = snprintf(out + len, out_size - len, "%s%s:%ld", i ? "," : "",
                         opts->topics[i].name, opts->topics[i].partitions);
        if (n < 0) break;
        len += (size_t)n;
    }
    if (opts->topic_cnt == 0) snprintf(out, out_size, "-");
}

/*
 * Creates the owning handle and the mock cluster with SIGTERM and SIGINT
 * blocked, so librdkafka's threads (the mock's own thread does not block
 * signals itself) inherit the mask and a stop signal always lands on the main
 * thread, where it cuts poll(2) short.
 * @returns 0, or -1 after logging why.
 */
static int broker_start(broker_t *b, const broker_opts_t *opts) {
    char errstr[512];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set_log_cb(conf, broker_on_rdkafka_log);
    if (rd_kafka_conf_set(conf, "client.id", BROKER_PROG, errstr, sizeof(errstr)) !=
            RD_KAFKA_CONF_OK ||
        (opts->debug &&
         rd_kafka_conf_set(conf, "debug", opts->debug, errstr, sizeof(errstr)) !=
             RD_KAFKA_CONF_OK)) {
        ttb_log_error("bad librdkafka configuration", "error", errstr);
        rd_kafka_conf_destroy(conf);
        return -1;
    }

    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    pthread_sigmask(SIG_BLOCK, &block, &old);

    b->rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, errstr, sizeof(errstr));
    if (!b->rk) {
        pthread_sigmask(SIG_SETMASK, &old, NULL);
        rd_kafka_conf_destroy(conf); /* not taken on failure */
        ttb_log_error("cannot create librdkafka handle", "error", errstr);
        return -1;
    }
    conf = NULL; /* now owned by b->rk */

    b->mcluster = rd_kafka_mock_cluster_new(b->rk, opts->broker_cnt);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (!b->mcluster) {
        ttb_log_error("cannot create mock cluster (see librdkafka's message above)");
        return -1;
    }
    b->broker_cnt = opts->broker_cnt;

    for (size_t i = 0; i < opts->topic_cnt; i++) {
        const broker_topic_t *topic = &opts->topics[i];
        rd_kafka_resp_err_t err = rd_kafka_mock_topic_create(
            b->mcluster, topic->name, (int)topic->partitions, (int)topic->replication);
        if (err) {
            ttb_log_error("cannot create topic", "topic", topic->name, "error",
                             rd_kafka_err2str(err));
            return -1;
        }
    }
    return 0;
}

/* Mock cluster first: its thread uses the handle until it is joined. */
static void broker_stop(broker_t *b) {
    if (b->mcluster) rd_kafka_mock_cluster_destroy(b->mcluster);
    b->mcluster = NULL;
    if (b->rk) rd_kafka_destroy(b->rk);
    b->rk = NULL;
}

int main(int argc, char **argv) {
    broker_opts_t opts = {.broker_cnt = 1};
    int rc = broker_opts_parse(argc, argv, &opts);
    if (rc != -1) return rc;
    if (opts.debug) ttb_log_set_level(TTB_LOG_DEBUG);

    /* No SA_RESTART: the signal should interrupt poll(2) at once. */
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = broker_on_signal;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    /* A harness that stops reading our stdout must cost an EPIPE, not our life. */
    signal(SIGPIPE, SIG_IGN);

    broker_t b = {.rk = NULL, .mcluster = NULL, .broker_cnt = 0};
    bool wrote_file = false;
    rc = BROKER_EXIT_FAIL;

    if (broker_start(&b, &opts) != 0) goto out;

    const char *bootstrap = rd_kafka_mock_cluster_bootstraps(b.mcluster);
    if (!bootstrap || !broker_bootstrap_is_loopback(bootstrap)) {
        ttb_log_error("mock cluster is not on loopback; refusing to serve", "bootstrap",
                         bootstrap);
        goto out;
    }

    /* The file first, so that it exists by the time the stdout line is seen. */
    if (opts.bootstrap_file) {
        char errstr[2 * PATH_MAX + 128]; /* room for both temporary and final path */
        if (broker_bootstrap_file_write(opts.bootstrap_file, bootstrap, errstr,
                                        sizeof(errstr)) != 0) {
            ttb_log_error("cannot write bootstrap file", "error", errstr);
            goto out;
        }
        wrote_file = true;
    }

    char line[BROKER_LINE_MAX];
    snprintf(line, sizeof(line), "bootstrap=%s", bootstrap);
    if (broker_stdout_line(line) != 0) {
        ttb_log_error("cannot write bootstrap line on stdout", "error", strerror(errno));
        goto out;
    }

    char topics[1024], brokers[16];
    broker_topics_describe(&opts, topics, sizeof(topics));
    snprintf(brokers, sizeof(brokers), "%d", opts.broker_cnt);
    ttb_log_info("broker ready", "bootstrap", bootstrap, "brokers", brokers, "topics", topics,
                    "control", opts.control ? "yes" : "no", "librdkafka",
                    rd_kafka_version_str());

    broker_linebuf_t lb = {.len = 0, .overflow = false};
    struct pollfd pfd = {.fd = opts.control ? STDIN_FILENO : -1, .events = POLLIN};
    while (!broker_stop_signal) {
        /* A negative fd is ignored by poll(2): then it is just an interruptible sleep. */
        int n = poll(&pfd, 1, BROKER_POLL_MS);
        if (n < 0 && errno != EINTR) {
            ttb_log_error("poll failed", "error", strerror(errno));
            goto out;
        }
        if (n > 0 && (pfd.revents & (POLLIN | POLLHUP | POLLERR))) {
            if (!broker_control_read(&b, &lb)) pfd.fd = -1;
        }
        /* Serves the handle's error and log events; it has no messages. */
        rd_kafka_poll(b.rk, 0);
    }

    {
        const char *signame = broker_stop_signal == SIGINT ? "SIGINT" : "SIGTERM";
        ttb_log_info("stopping", "signal", signame);
    }
    rc = BROKER_EXIT_OK;

out:
    broker_stop(&b);
    if (wrote_file && unlink(opts.bootstrap_file) != 0 && errno != ENOENT) {
        ttb_log_warn("cannot remove bootstrap file", "path", opts.bootstrap_file, "error",
                        strerror(errno));
    }
    free(opts.topics);
    if (rc == BROKER_EXIT_OK) ttb_log_info("stopped");
    return rc;
}
