/* SPDX-License-Identifier: MIT */
/*
 * Metrics and the operations endpoint. The exposition is checked as a
 * scraper reads it: exact sample lines for counters by op and outcome, a
 * histogram whose buckets are cumulative and agree with _count, HELP and
 * TYPE declared before every sample, escaped label values, and gauges
 * (consumer lag only for partitions that have one). The HTTP endpoint is
 * driven over a plain TCP socket on a free port, so what is asserted is the
 * bytes a probe or Prometheus would get: status codes, content types,
 * readiness as it follows ttb_metrics, and errors for bad listen addresses.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "tinytown_bridge/http.h"
#include "tinytown_bridge/metrics.h"

static int setup(void **state) {
    (void)state;
    ttb_metrics_reset();
    return 0;
}

/* The whole exposition as one string (caller frees). */
static char *render(void) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    ttb_metrics_write(fp);
    assert_int_equal(fclose(fp), 0);
    return buf;
}

/* Asserts that @p line (without its newline) is a whole line of @p text. */
static void expect_line(const char *text, const char *line) {
    size_t n = strlen(line);
    for (const char *p = text; (p = strstr(p, line)) != NULL; p++) {
        if ((p == text || p[-1] == '\n') && p[n] == '\n') return;
    }
    fail_msg("line not found: %s\n--- exposition ---\n%s", line, text);
}

static void expect_no_prefix(const char *text, const char *prefix) {
    size_t n = strlen(prefix);
    for (const char *p = text; *p;) {
        if (strncmp(p, prefix, n) == 0) fail_msg("unexpected line starting %s", prefix);
        const char *nl = strchr(p, '\n');
        if (!nl) break;
        p = nl + 1;
    }
}

static void counters_by_op_and_outcome(void **state) {
    (void)state;
    ttb_metrics_command(TTB_OP_SPAWN, TTB_CODE_OK, 500);
    ttb_metrics_command(TTB_OP_SPAWN, TTB_CODE_OK, 700);
    ttb_metrics_command(TTB_OP_KILL, TTB_CODE_AGENT_NOT_FOUND, 900);
    ttb_metrics_command(-1, TTB_CODE_INVALID_JSON, 100);
    ttb_metrics_command(TTB_OP__COUNT, TTB_CODE_TOO_LARGE, 100); /* out of range: unparsed */
    char *text = render();
    expect_line(text, "tinytown_bridge_commands_total{op=\"spawn\",outcome=\"ok\"} 2");
    expect_line(text, "tinytown_bridge_commands_total{op=\"kill\",outcome=\"agent_not_found\"} 1");
    expect_line(text, "tinytown_bridge_commands_total{op=\"none\",outcome=\"invalid_json\"} 1");
    expect_line(text, "tinytown_bridge_commands_total{op=\"none\",outcome=\"too_large\"} 1");
    /* every op's ok series exists from the start; errors only once counted */
    expect_line(text, "tinytown_bridge_commands_total{op=\"get_result\",outcome=\"ok\"} 0");
    expect_line(text, "tinytown_bridge_commands_total{op=\"kill\",outcome=\"ok\"} 0");
    expect_no_prefix(text, "tinytown_bridge_commands_total{op=\"kill\",outcome=\"internal\"}");
    expect_no_prefix(text, "tinytown_bridge_commands_total{op=\"none\",outcome=\"ok\"}");
    assert_int_equal(atomic_load(&ttb_metrics.invalid_records), 2);
    free(text);

    ttb_metrics_reset();
    text = render();
    expect_line(text, "tinytown_bridge_commands_total{op=\"spawn\",outcome=\"ok\"} 0");
    expect_no_prefix(text, "tinytown_bridge_commands_total{op=\"none\"");
    free(text);
}

static void histogram_is_cumulative(void **state) {
    (void)state;
    ttb_metrics_command(TTB_OP_LIST, TTB_CODE_OK, 500);     /* <= 1 ms */
    ttb_metrics_command(TTB_OP_LIST, TTB_CODE_OK, 1000);    /* le is inclusive */
    ttb_metrics_command(TTB_OP_LIST, TTB_CODE_OK, 1001);    /* 2.5 ms */
    ttb_metrics_command(TTB_OP_LIST, TTB_CODE_OK, 300000);  /* 0.5 s */
    ttb_metrics_command(TTB_OP_LIST, TTB_CODE_OK, 7000000); /* past 5 s: +Inf only */
    char *text = render();
    const char *h = "tinytown_bridge_command_duration_seconds";
    char line[128];
    static const struct {
        const char *le;
        int count;
    } want[] = {{"0.001", 2}, {"0.0025", 3}, {"0.005", 3}, {"0.01", 3}, {"0.025", 3},
                {"0.05", 3},  {"0.1", 3},    {"0.25", 3},  {"0.5", 4},  {"1", 4},
                {"2.5", 4},   {"5", 4},      {"+Inf", 5}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        snprintf(line, sizeof(line), "%s_bucket{le=\"%s\"} %d", h, want[i].le, want[i].count);
        expect_line(text, line);
    }
    snprintf(line, sizeof(line), "%s_count 5", h);
    expect_line(text, line);
    snprintf(line, sizeof(line), "%s_sum 7.302501", h); /* exact, no float rounding */
    expect_line(text, line);
    expect_line(text, "# TYPE tinytown_bridge_command_duration_seconds histogram");
    free(text);
}

/* Every sample belongs to a family whose HELP and TYPE came first. */
static void help_and_type_for_every_family(void **state) {
    (void)state;
    atomic_store(&ttb_metrics.consumer_lag[2], 4);
    ttb_metrics_command(-1, TTB_CODE_INVALID_JSON, 1);
    char *text = render();
    static const struct {
        const char *name, *type;
    } families[] = {
        {"tinytown_bridge_commands_total", "counter"},
        {"tinytown_bridge_command_duration_seconds", "histogram"},
        {"tinytown_bridge_batches_total", "counter"},
        {"tinytown_bridge_batch_records_total", "counter"},
        {"tinytown_bridge_dead_letters_total", "counter"},
        {"tinytown_bridge_dead_letters_dropped_total", "counter"},
        {"tinytown_bridge_replayed_results_total", "counter"},
        {"tinytown_bridge_redis_reconnects_total", "counter"},
        {"tinytown_bridge_redis_outage_seconds_total", "counter"},
        {"tinytown_bridge_redis_up", "gauge"},
        {"tinytown_bridge_consumer_assigned", "gauge"},
        {"tinytown_bridge_peers_disagree", "gauge"},
        {"tinytown_bridge_kafka_delivery_failing", "gauge"},
        {"tinytown_bridge_kafka_security_failing", "gauge"},
        {"tinytown_bridge_in_flight_commands", "gauge"},
        {"tinytown_bridge_pending_waits", "gauge"},
        {"tinytown_bridge_producer_queue_messages", "gauge"},
        {"tinytown_bridge_consumer_lag_messages", "gauge"},
        {"tinytown_bridge_events_relayed_total", "counter"},
        {"tinytown_bridge_relay_gaps_total", "counter"},
        {"tinytown_bridge_relay_lag_entries", "gauge"},
        {"tinytown_bridge_states_captured_total", "counter"},
        {"tinytown_bridge_build_info", "gauge"},
    };
    size_t nfam = sizeof(families) / sizeof(families[0]);
    char line[256];
    for (size_t i = 0; i < nfam; i++) {
        snprintf(line, sizeof(line), "# TYPE %s %s", families[i].name, families[i].type);
        expect_line(text, line);
        snprintf(line, sizeof(line), "# HELP %s ", families[i].name);
        assert_non_null(strstr(text, line));
    }
    /* Walk the lines: a sample's family must be the one most recently typed,
     * and no family may be typed twice. */
    char current[128] = "", seen[4096] = " ";
    size_t nsamples = 0, ntypes = 0;
    for (char *p = text; *p;) {
        char *nl = strchr(p, '\n');
        assert_non_null(nl); /* the format ends every line with \n */
        *nl = '\0';
        if (strncmp(p, "# TYPE ", 7) == 0) {
            char name[128];
            assert_int_equal(sscanf(p + 7, "%127s", name), 1);
            snprintf(line, sizeof(line), " %s ", name);
            if (strstr(seen, line)) fail_msg("family %s typed twice", name);
            strncat(seen, line + 1, sizeof(seen) - strlen(seen) - 1);
            snprintf(current, sizeof(current), "%s", name);
            ntypes++;
        } else if (p[0] != '#') {
            size_t n = strlen(current);
            if (n == 0 || strncmp(p, current, n) != 0) fail_msg("sample outside its family: %s", p);
            const char *rest = p + n;
            if (strncmp(rest, "_bucket", 7) == 0) rest += 7;
            else if (strncmp(rest, "_sum", 4) == 0) rest += 4;
            else if (strncmp(rest, "_count", 6) == 0) rest += 6;
            if (*rest != ' ' && *rest != '{') fail_msg("sample outside its family: %s", p);
            nsamples++;
        }
        p = nl + 1;
    }
    assert_int_equal(ntypes, nfam);
    assert_true(nsamples > nfam);
    free(text);
}

static void label_escaping(void **state) {
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    assert_non_null(fp);
    ttb_metrics_write_label(fp, "a\"b\\c\nd e");
    fputc('|', fp);
    ttb_metrics_write_label(fp, NULL);
    fputc('|', fp);
    ttb_metrics_write_label(fp, "plain");
    fclose(fp);
    assert_string_equal(buf, "a\\\"b\\\\c\\nd e||plain");
    free(buf);

    char *text = render();
    assert_non_null(strstr(text, "\ntinytown_bridge_build_info{version=\""));
    assert_non_null(strstr(text, "\"} 1\n"));
    free(text);
}

static void gauges(void **state) {
    (void)state;
    char *text = render();
    expect_line(text, "tinytown_bridge_redis_up 0");
    expect_line(text, "tinytown_bridge_consumer_assigned 0");
    expect_no_prefix(text, "tinytown_bridge_consumer_lag_messages{"); /* reset: none known */
    free(text);

    atomic_store(&ttb_metrics.redis_up, true);
    atomic_store(&ttb_metrics.assigned, true);
    atomic_store(&ttb_metrics.in_flight, 7);
    atomic_store(&ttb_metrics.pending_waits, 2);
    atomic_store(&ttb_metrics.producer_queue, 11);
    atomic_store(&ttb_metrics.relay_lag, 3);
    atomic_store(&ttb_metrics.consumer_lag[0], 5);
    atomic_store(&ttb_metrics.consumer_lag[3], 0);
    atomic_store(&ttb_metrics.consumer_lag[TTB_METRICS_MAX_PARTITIONS - 1], 9);
    atomic_store(&ttb_metrics.redis_outage_us, 2500001);
    atomic_store(&ttb_metrics.batches, 4);
    atomic_store(&ttb_metrics.batch_records, 40);
    atomic_store(&ttb_metrics.events_relayed, 12);
    text = render();
    expect_line(text, "tinytown_bridge_redis_up 1");
    expect_line(text, "tinytown_bridge_consumer_assigned 1");
    expect_line(text, "tinytown_bridge_in_flight_commands 7");
    expect_line(text, "tinytown_bridge_pending_waits 2");
    expect_line(text, "tinytown_bridge_producer_queue_messages 11");
    expect_line(text, "tinytown_bridge_relay_lag_entries 3");
    expect_line(text, "tinytown_bridge_consumer_lag_messages{partition=\"0\"} 5");
    expect_line(text, "tinytown_bridge_consumer_lag_messages{partition=\"3\"} 0");
    expect_line(text, "tinytown_bridge_consumer_lag_messages{partition=\"255\"} 9");
    expect_no_prefix(text, "tinytown_bridge_consumer_lag_messages{partition=\"1\"}");
    expect_line(text, "tinytown_bridge_redis_outage_seconds_total 2.500001");
    expect_line(text, "tinytown_bridge_batches_total 4");
    expect_line(text, "tinytown_bridge_batch_records_total 40");
    expect_line(text, "tinytown_bridge_events_relayed_total 12");
    free(text);
}

/* ---- the HTTP endpoint, over a plain socket ---- */

typedef struct reply {
    int status;
    char headers[1024];
    char body[65536];
} reply_t;

static reply_t reply;

/* One request on a fresh connection; the whole answer is read to EOF. */
static void request(int port, const char *method, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_true(fd >= 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    struct sockaddr_in sin;
    memset(&sin, 0, sizeof(sin));
    sin.sin_family = AF_INET;
    sin.sin_port = htons((uint16_t)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(connect(fd, (struct sockaddr *)&sin, sizeof(sin)), 0);
    char req[256];
    int n = snprintf(req, sizeof(req),
                     "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                     "Content-Length: 0\r\n\r\n",
                     method, path);
    assert_int_equal(write(fd, req, (size_t)n), n);
    static char raw[sizeof(reply.headers) + sizeof(reply.body)];
    size_t got = 0;
    ssize_t r;
    while (got < sizeof(raw) - 1 && (r = read(fd, raw + got, sizeof(raw) - 1 - got)) > 0)
        got += (size_t)r;
    close(fd);
    raw[got] = '\0';
    memset(&reply, 0, sizeof(reply));
    assert_int_equal(sscanf(raw, "HTTP/1.1 %d", &reply.status), 1);
    char *end = strstr(raw, "\r\n\r\n");
    assert_non_null(end);
    size_t hlen = (size_t)(end - raw);
    assert_true(hlen < sizeof(reply.headers));
    memcpy(reply.headers, raw, hlen);
    snprintf(reply.body, sizeof(reply.body), "%s", end + 4);
}

static ttb_http_t *start(const char *listen) {
    char err[256] = "";
    ttb_http_t *http = ttb_http_start(listen, err, sizeof(err));
    if (!http) fail_msg("ttb_http_start(%s): %s", listen, err);
    assert_true(ttb_http_port(http) > 0);
    return http;
}

static void http_routes(void **state) {
    (void)state;
    ttb_http_t *http = start("127.0.0.1:0");
    int port = ttb_http_port(http);

    request(port, "GET", "/healthz");
    assert_int_equal(reply.status, 200);
    assert_string_equal(reply.body, "ok\n");

    request(port, "GET", "/readyz");
    assert_int_equal(reply.status, 503);
    assert_string_equal(reply.body, "{\"ready\":false,\"missing\":[\"redis\",\"kafka_assignment\"]}\n");
    assert_non_null(strstr(reply.headers, "Content-Type: application/json"));
    atomic_store(&ttb_metrics.redis_up, true);
    request(port, "GET", "/readyz");
    assert_int_equal(reply.status, 503);
    assert_string_equal(reply.body, "{\"ready\":false,\"missing\":[\"kafka_assignment\"]}\n");
    atomic_store(&ttb_metrics.redis_up, false);
    atomic_store(&ttb_metrics.assigned, true);
    request(port, "GET", "/readyz");
    assert_int_equal(reply.status, 503);
    assert_string_equal(reply.body, "{\"ready\":false,\"missing\":[\"redis\"]}\n");
    atomic_store(&ttb_metrics.redis_up, true);
    request(port, "GET", "/readyz");
    assert_int_equal(reply.status, 200);
    assert_string_equal(reply.body, "{\"ready\":true}\n");

    ttb_metrics_command(TTB_OP_STATUS, TTB_CODE_OK, 1);
    request(port, "GET", "/metrics");
    assert_int_equal(reply.status, 200);
    assert_non_null(strstr(reply.headers, "Content-Type: text/plain; version=0.0.4"));
    assert_non_null(strstr(reply.body, "# HELP tinytown_bridge_commands_total "));
    assert_non_null(strstr(reply.body, "\ntinytown_bridge_commands_total{op=\"status\",outcome=\"ok\"} 1\n"));
    assert_non_null(strstr(reply.body, "\ntinytown_bridge_redis_up 1\n"));

    request(port, "HEAD", "/healthz");
    assert_int_equal(reply.status, 200);
    assert_string_equal(reply.body, "");

    request(port, "GET", "/nope");
    assert_int_equal(reply.status, 404);
    request(port, "GET", "/healthz/extra");
    assert_int_equal(reply.status, 404);

    request(port, "POST", "/healthz");
    assert_int_equal(reply.status, 405);
    assert_non_null(strstr(reply.headers, "Allow: GET, HEAD"));
    request(port, "DELETE", "/metrics");
    assert_int_equal(reply.status, 405);

    ttb_http_stop(http);
    ttb_http_stop(NULL);
}

static void http_listen_forms(void **state) {
    (void)state;
    /* ":0" and "0" keep the private default host, 127.0.0.1 */
    ttb_http_t *a = start(":0");
    request(ttb_http_port(a), "GET", "/healthz");
    assert_int_equal(reply.status, 200);
    ttb_http_t *b = start("0");
    request(ttb_http_port(b), "GET", "/healthz");
    assert_int_equal(reply.status, 200);

    /* a taken port is an error that says so, not a silent second server */
    char listen[32], err[256] = "";
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", ttb_http_port(a));
    assert_null(ttb_http_start(listen, err, sizeof(err)));
    assert_non_null(strstr(err, listen));
    ttb_http_stop(b);
    ttb_http_stop(a);

    static const char *const bad[] = {"", "127.0.0.1:", "127.0.0.1:65536", "127.0.0.1:80x",
                                      "::1:80", "[::1]80", "[::1", "host:-1",
                                      "no.such.host.invalid:0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err[0] = '\0';
        ttb_http_t *h = ttb_http_start(bad[i], err, sizeof(err));
        if (h) {
            ttb_http_stop(h);
            fail_msg("listen '%s' accepted", bad[i]);
        }
        if (!err[0]) fail_msg("listen '%s': no message", bad[i]);
    }
}

int main(void) {
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(counters_by_op_and_outcome, setup),
        cmocka_unit_test_setup(histogram_is_cumulative, setup),
        cmocka_unit_test_setup(help_and_type_for_every_family, setup),
        cmocka_unit_test_setup(label_escaping, setup),
        cmocka_unit_test_setup(gauges, setup),
        cmocka_unit_test_setup(http_routes, setup),
        cmocka_unit_test_setup(http_listen_forms, setup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
