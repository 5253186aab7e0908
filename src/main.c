/* SPDX-License-Identifier: MIT */
/*
 * tinytown-bridge: wiring only. Reads the configuration, then runs one of
 *   run    (default) the worker: command loop, event relay, state capture, HTTP;
 *   send   builds, produces and optionally awaits one command;
 *   apply  applies command JSON lines from stdin straight through Redis,
 *          without Kafka (scripting, tests, recovery), printing each result.
 * Only this file exits the process.
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <librdkafka/rdkafka.h>

#include "tinytown_bridge/bridge.h"
#include "tinytown_bridge/capture.h"
#include "tinytown_bridge/config.h"
#include "tinytown_bridge/http.h"
#include "tinytown_bridge/kafka.h"
#include "tinytown_bridge/log.h"
#include "tinytown_bridge/metrics.h"
#include "tinytown_bridge/relay.h"
#include "tinytown_bridge/send.h"
#include "tinytown_bridge/service.h"
#include "ttb_version.h"

static volatile sig_atomic_t stop_requested;

static void on_signal(int sig) {
    (void)sig;
    stop_requested = 1;
}

static void usage(FILE *fp) {
    fprintf(fp,
            "Usage: tinytown-bridge [OPTIONS] [run]\n"
            "       tinytown-bridge [OPTIONS] send OP [key=value ...] [--town T] [--id ID]\n"
            "                                      [--wait-result] [--timeout MS]\n"
            "       tinytown-bridge [OPTIONS] apply < commands.jsonl\n"
            "\n"
            "A Kafka front for tinytown: applies commands from a topic to a town in Redis\n"
            "and publishes results and events.\n"
            "\n"
            "Options:\n"
            "  -c, --config FILE     configuration file (libconfig; see conf/tinytown-bridge.conf)\n"
            "  -s, --set NAME=VALUE  override a setting, e.g. --set bridge.batch_size=100\n"
            "  -X PROP=VALUE         librdkafka property for every Kafka client\n"
            "  -l, --log-level LVL   debug, info, warn or error\n"
            "      --check-config    validate the configuration, print it (secrets redacted), exit\n"
            "      --help-config     list every setting with its environment variable\n"
            "  -V, --version         print the version\n"
            "  -h, --help            this text\n"
            "\n"
            "Every setting can also come from the environment (TT_BRIDGE_...).\n");
}

/* Global options may stand anywhere on the line (before or after the
 * subcommand); everything else is handed to the subcommand in order. */
typedef struct args {
    const char *config;
    const char **sets;
    size_t nsets;
    const char **xsets;
    size_t nxsets;
    const char *log_level;
    bool check, help_config, version, help;
    char **rest;
    int nrest;
} args_t;

static int take_value(int argc, char **argv, int *i, const char *name, const char **value) {
    const char *a = argv[*i];
    size_t n = strlen(name);
    if (strncmp(a, name, n) == 0 && a[n] == '=') {
        *value = a + n + 1;
        return 1;
    }
    if (strcmp(a, name) != 0) return 0;
    if (*i + 1 >= argc) {
        fprintf(stderr, "tinytown-bridge: %s needs a value\n", name);
        return -1;
    }
    *value = argv[++*i];
    return 1;
}

static int parse_args(int argc, char **argv, args_t *a) {
    a->sets = calloc((size_t)argc, sizeof(*a->sets));
    a->xsets = calloc((size_t)argc, sizeof(*a->xsets));
    a->rest = calloc((size_t)argc + 1, sizeof(*a->rest));
    if (!a->sets || !a->xsets || !a->rest) return -1;
    for (int i = 1; i < argc; i++) {
        const char *v;
        int r;
        if ((r = take_value(argc, argv, &i, "--config", &v)) ||
            (r = take_value(argc, argv, &i, "-c", &v))) {
            if (r < 0) return -1;
            a->config = v;
        } else if ((r = take_value(argc, argv, &i, "--set", &v)) ||
                   (r = take_value(argc, argv, &i, "-s", &v))) {
            if (r < 0) return -1;
            a->sets[a->nsets++] = v;
        } else if ((r = take_value(argc, argv, &i, "-X", &v))) {
            if (r < 0) return -1;
            a->xsets[a->nxsets++] = v;
        } else if ((r = take_value(argc, argv, &i, "--log-level", &v)) ||
                   (r = take_value(argc, argv, &i, "-l", &v))) {
            if (r < 0) return -1;
            a->log_level = v;
        } else if (strcmp(argv[i], "--check-config") == 0) {
            a->check = true;
        } else if (strcmp(argv[i], "--help-config") == 0) {
            a->help_config = true;
        } else if (strcmp(argv[i], "--version") == 0 || strcmp(argv[i], "-V") == 0) {
            a->version = true;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            a->help = true;
        } else {
            a->rest[a->nrest++] = argv[i];
        }
    }
    return 0;
}

static void args_free(args_t *a) {
    free(a->sets);
    free(a->xsets);
    free(a->rest);
}

/* apply: command JSON per line on stdin, one result record per line on
 * stdout, in input order. Pending waits are awaited here. Error results are
 * answers, not failures: the exit status is non-zero only when Redis fails. */
static int run_apply(const ttb_config_t *cfg) {
    ttb_store_t *store = ttb_store_new(&cfg->redis);
    char err[1024];
    if (!store || ttb_store_connect(store, err, sizeof(err))) {
        fprintf(stderr, "tinytown-bridge: redis: %s\n", store ? err : "out of memory");
        ttb_store_free(store);
        return 1;
    }
    ttb_service_config_t scfg = {.redis_url_redacted = cfg->redis_url_redacted,
                                 .idempotency_ttl_s = cfg->idempotency_ttl_s,
                                 .scan_count = cfg->scan_count};
    ttb_service_t *svc = ttb_service_new(store, &scfg);
    if (svc && ttb_service_adopt_legacy_records(svc, cfg->towns, cfg->ntowns) < 0) {
        fprintf(stderr, "tinytown-bridge: redis: %s\n", ttb_store_errstr(store));
        ttb_service_free(svc);
        ttb_store_free(store);
        return 1;
    }
    ttb_command_policy_t policy;
    ttb_config_policy(cfg, &policy);
    int status = 0;
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    while (svc && (len = getline(&line, &cap, stdin)) >= 0) {
        while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r')) line[--len] = '\0';
        if (len == 0) continue;
        ttb_command_t cmd;
        ttb_outcome_t out = {0};
        char perr[256];
        ttb_code_t code = ttb_command_parse(line, (size_t)len, &policy, &cmd, perr, sizeof(perr));
        if (code != TTB_CODE_OK) {
            ttb_result_t res = {.id = cmd.id, .town = cmd.town, .op = cmd.op_name, .code = code,
                                .message = perr, .applied_at = ttb_time_now()};
            out.record = ttb_result_encode(&res, &out.record_len);
            out.code = code;
        } else if (ttb_service_execute(svc, &cmd, 1, &out)) {
            fprintf(stderr, "tinytown-bridge: redis: %s\n", ttb_store_errstr(store));
            ttb_command_clear(&cmd);
            status = 1;
            break;
        }
        while (out.pending) {
            struct timespec ts = {0, (long)cfg->wait_check_interval_ms * 1000000L};
            nanosleep(&ts, NULL); /* a CLI waiting on an agent: nothing else to serve */
            const ttb_command_t *cp = &cmd;
            ttb_outcome_t *op = &out;
            if (ttb_service_check_waits(svc, &cp, &op, 1, ttb_time_to_ms(ttb_time_now()))) {
                status = 1;
                break;
            }
        }
        if (out.record) printf("%.*s\n", (int)out.record_len, out.record);
        fflush(stdout);
        ttb_outcome_clear(&out);
        ttb_command_clear(&cmd);
    }
    free(line);
    ttb_service_free(svc);
    ttb_store_free(store);
    return status;
}

typedef struct companions {
    ttb_relay_t *relay;
    ttb_capture_t *capture;
} companions_t;

/* The bridge is stopping: so do the relay and capture, at the same time. */
static void stop_companions(void *arg) {
    companions_t *c = arg;
    ttb_relay_request_stop(c->relay);
    ttb_capture_request_stop(c->capture);
}

/* librdkafka 2.0.2's rd_kafka_send_offsets_to_transaction() can wait
 * forever while the transaction coordinator is unreachable, whatever its
 * timeout, so with kafka.exactly_once a stop is bounded from outside: once
 * the signal came, the process exits at the latest 3 s after
 * bridge.shutdown_timeout_ms. Exiting is safe there: nothing uncommitted is
 * visible to read_committed readers, and the next owner takes it again. */
static long watchdog_bound_ms;

static void *stop_watchdog(void *arg) {
    (void)arg;
    struct timespec tick = {0, 100 * 1000 * 1000};
    while (!stop_requested) nanosleep(&tick, NULL);
    for (long waited_ms = 0; waited_ms < watchdog_bound_ms; waited_ms += 100)
        nanosleep(&tick, NULL);
    ttb_log_error("a kafka call did not return within the shutdown bound; exiting without it");
    _exit(0);
}

static int run_worker(const ttb_config_t *cfg) {
    char err[512];
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_signal;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    ttb_http_t *http = NULL;
    if (cfg->http_listen && *cfg->http_listen) {
        http = ttb_http_start(cfg->http_listen, err, sizeof(err));
        if (!http) {
            ttb_log_error("cannot start the http endpoint", "listen", cfg->http_listen, "error", err);
            return 1;
        }
        char port[16];
        snprintf(port, sizeof(port), "%d", ttb_http_port(http));
        ttb_log_info("http endpoint listening", "listen", cfg->http_listen, "port", port);
    }
    ttb_bridge_t *bridge = ttb_bridge_new(cfg, err, sizeof(err));
    if (!bridge) {
        ttb_log_error("cannot start the bridge", "error", err);
        ttb_http_stop(http);
        return 1;
    }
    ttb_relay_t *relay = NULL;
    ttb_capture_t *capture = NULL;
    if (cfg->relay_enabled) {
        relay = ttb_relay_new(cfg, err, sizeof(err));
        if (!relay || ttb_relay_start(relay)) {
            ttb_log_error("cannot start the event relay", "error", relay ? "thread" : err);
            ttb_relay_free(relay);
            ttb_bridge_free(bridge);
            ttb_http_stop(http);
            return 1;
        }
    }
    if (cfg->capture_enabled) {
        capture = ttb_capture_new(cfg, err, sizeof(err));
        if (!capture || ttb_capture_start(capture)) {
            ttb_log_error("cannot start state capture", "error", capture ? "thread" : err);
            ttb_capture_free(capture);
            ttb_relay_free(relay);
            ttb_bridge_free(bridge);
            ttb_http_stop(http);
            return 1;
        }
    }
    companions_t companions = {relay, capture};
    ttb_bridge_on_stop(bridge, stop_companions, &companions);
    pthread_t watchdog;
    watchdog_bound_ms = (long)cfg->shutdown_timeout_ms + 3000;
    if (cfg->exactly_once && pthread_create(&watchdog, NULL, stop_watchdog, NULL) == 0)
        pthread_detach(watchdog);
    int rc = ttb_bridge_run(bridge, &stop_requested);
    ttb_capture_free(capture);
    ttb_relay_free(relay);
    ttb_bridge_free(bridge);
    ttb_http_stop(http);
    return rc ? 1 : 0;
}

/* --check-config also builds what every Kafka client would get: librdkafka
 * checks each property, and the client certificate's dates are read. */
static int check_kafka(const ttb_config_t *cfg) {
    const ttb_kafka_role_t roles[] = {TTB_KAFKA_PRODUCER, TTB_KAFKA_CONSUMER};
    char err[512];
    for (size_t i = 0; i < sizeof(roles) / sizeof(roles[0]); i++) {
        rd_kafka_conf_t *conf = ttb_kafka_conf(cfg, roles[i], err, sizeof(err));
        if (!conf) {
            fprintf(stderr, "tinytown-bridge: %s\n", err);
            return TTB_ERR_INVALID;
        }
        rd_kafka_conf_destroy(conf);
    }
    return 0;
}

int main(int argc, char **argv) {
    args_t a;
    memset(&a, 0, sizeof(a));
    if (parse_args(argc, argv, &a)) {
        args_free(&a);
        return 2;
    }
    if (a.help || a.version || a.help_config) {
        if (a.help) usage(stdout);
        if (a.version) printf("tinytown-bridge %s (librdkafka %s)\n", TTB_VERSION, rd_kafka_version_str());
        if (a.help_config) ttb_config_help(stdout);
        args_free(&a);
        return 0;
    }
    const char *cmd = a.nrest > 0 ? a.rest[0] : "run";
    if (strcmp(cmd, "run") != 0 && strcmp(cmd, "send") != 0 && strcmp(cmd, "apply") != 0) {
        fprintf(stderr, "tinytown-bridge: unknown command '%s' (try --help)\n", cmd);
        args_free(&a);
        return 2;
    }

    ttb_config_source_t src = {.path = a.config,
                               .sets = a.sets,
                               .nsets = a.nsets,
                               .kafka_sets = a.xsets,
                               .nkafka_sets = a.nxsets};
    ttb_config_t *cfg = NULL;
    char err[512];
    if (ttb_config_load(&src, &cfg, err, sizeof(err))) {
        fprintf(stderr, "tinytown-bridge: %s\n", err);
        args_free(&a);
        return 2;
    }
    ttb_log_set_level((ttb_log_level_t)cfg->log_level);
    if (a.log_level) {
        ttb_log_level_t lvl;
        if (ttb_log_level_parse(a.log_level, &lvl)) {
            fprintf(stderr, "tinytown-bridge: --log-level: expected debug, info, warn or error\n");
            ttb_config_free(cfg);
            args_free(&a);
            return 2;
        }
        ttb_log_set_level(lvl);
    }
    if (a.check) {
        if (check_kafka(cfg)) {
            ttb_config_free(cfg);
            args_free(&a);
            return 2;
        }
        ttb_config_dump(cfg, stdout);
        printf("# configuration OK\n");
        ttb_config_free(cfg);
        args_free(&a);
        return 0;
    }
    ttb_metrics_reset();
    int rc;
    if (strcmp(cmd, "send") == 0) rc = ttb_send_main(cfg, a.nrest - 1, a.rest + 1);
    else if (strcmp(cmd, "apply") == 0) rc = run_apply(cfg);
    else rc = run_worker(cfg);
    ttb_config_free(cfg);
    args_free(&a);
    return rc;
}
