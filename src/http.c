/* SPDX-License-Identifier: MIT */
/*
 * The operations endpoint: what an orchestrator asks a running bridge.
 * /healthz answers as long as the process serves at all (liveness: restart
 * me if this stops); /readyz answers 200 only when the bridge can do its job
 * — Redis reachable and the consumer holding its partitions — and otherwise
 * names what is missing, so `curl` tells an operator why; /metrics is the
 * Prometheus exposition. Readiness and metrics are read from the global
 * ttb_metrics, so this module needs no pointer into the bridge and cannot
 * block it: libmicrohttpd serves from a thread of its own, and every request
 * is answered from relaxed atomic loads.
 */
#include "tinytown_bridge/http.h"

#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "tinytown_bridge/log.h"
#include "tinytown_bridge/metrics.h"

/* A scraper or probe that stalls must not pin a connection for long. */
#define TTB_HTTP_CONNECTION_TIMEOUT_S 10u
/* The endpoint serves probes and a scraper, not traffic; a small cap keeps
 * a misbehaving client from eating file descriptors the bridge needs. */
#define TTB_HTTP_CONNECTION_LIMIT 64u

struct ttb_http {
    struct MHD_Daemon *daemon;
    int port;
    /* The latest message libmicrohttpd logged, so a failed start can say why
     * (MHD_start_daemon itself only returns NULL). Written by the log
     * callback; read only after a failed start, when no server thread runs. */
    char last_error[256];
};

#if defined(__GNUC__)
__attribute__((format(printf, 2, 0)))
#endif
static void http_log(void *cls, const char *fmt, va_list ap) {
    ttb_http_t *http = cls;
    char line[256];
    vsnprintf(line, sizeof(line), fmt, ap);
    /* libmicrohttpd ends its messages with a newline; the log line must not. */
    size_t n = strlen(line);
    while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r')) line[--n] = '\0';
    snprintf(http->last_error, sizeof(http->last_error), "%s", line);
    ttb_log_warn("http endpoint", "error", line);
}

/* Queues a response and hands @p body (malloc'd) to libmicrohttpd, which
 * frees it once sent; constant bodies go through strdup so nothing has to
 * cast their const away. */
static enum MHD_Result respond_owned(struct MHD_Connection *conn, unsigned status,
                                     const char *ctype, char *body, size_t len) {
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
    if (!resp) {
        free(body);
        return MHD_NO;
    }
    enum MHD_Result rc = MHD_YES;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, ctype) != MHD_YES) rc = MHD_NO;
    /* RFC 9110 requires Allow on a 405. */
    if (rc == MHD_YES && status == MHD_HTTP_METHOD_NOT_ALLOWED &&
        MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, "GET, HEAD") != MHD_YES)
        rc = MHD_NO;
    if (rc == MHD_YES) rc = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return rc;
}

static enum MHD_Result respond(struct MHD_Connection *conn, unsigned status, const char *ctype,
                               const char *body) {
    char *copy = strdup(body);
    if (!copy) return MHD_NO;
    return respond_owned(conn, status, ctype, copy, strlen(copy));
}

static enum MHD_Result serve_readyz(struct MHD_Connection *conn) {
    const struct {
        bool ok;
        const char *name;
    } needs[] = {
        {atomic_load_explicit(&ttb_metrics.redis_up, memory_order_relaxed), "redis"},
        {atomic_load_explicit(&ttb_metrics.assigned, memory_order_relaxed), "kafka_assignment"},
        {!atomic_load_explicit(&ttb_metrics.kafka_delivery_failing, memory_order_relaxed),
         "kafka_delivery"},
        {!atomic_load_explicit(&ttb_metrics.kafka_security_failing, memory_order_relaxed),
         "kafka_security"},
    };
    char body[192];
    size_t used = (size_t)snprintf(body, sizeof(body), "{\"ready\":false,\"missing\":[");
    bool ready = true;
    for (size_t i = 0; i < sizeof(needs) / sizeof(needs[0]); i++) {
        if (needs[i].ok) continue;
        used += (size_t)snprintf(body + used, sizeof(body) - used, "%s\"%s\"", ready ? "" : ",",
                                 needs[i].name);
        ready = false;
    }
    if (ready) return respond(conn, MHD_HTTP_OK, "application/json", "{\"ready\":true}\n");
    snprintf(body + used, sizeof(body) - used, "]}\n");
    return respond(conn, MHD_HTTP_SERVICE_UNAVAILABLE, "application/json", body);
}

static enum MHD_Result serve_metrics(struct MHD_Connection *conn) {
    char *buf = NULL;
    size_t len = 0;
    FILE *fp = open_memstream(&buf, &len);
    if (!fp) return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n");
    ttb_metrics_write(fp);
    if (fclose(fp) != 0) {
        free(buf);
        return respond(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "text/plain", "out of memory\n");
    }
    return respond_owned(conn, MHD_HTTP_OK, "text/plain; version=0.0.4; charset=utf-8", buf, len);
}

/* Called by libmicrohttpd once a request's headers are in. Every answer is
 * given on that first call: no route takes a body, and answering before any
 * upload is read lets libmicrohttpd discard it and close the connection. */
static enum MHD_Result http_handle(void *cls, struct MHD_Connection *conn, const char *url,
                                   const char *method, const char *version,
                                   const char *upload_data, size_t *upload_data_size,
                                   void **req_cls) {
    (void)cls;
    (void)version;
    (void)upload_data;
    (void)upload_data_size;
    (void)req_cls;
    bool known = strcmp(url, "/healthz") == 0 || strcmp(url, "/readyz") == 0 ||
                 strcmp(url, "/metrics") == 0;
    if (!known) return respond(conn, MHD_HTTP_NOT_FOUND, "text/plain", "not found\n");
    /* HEAD is GET without the body, which libmicrohttpd drops by itself. */
    if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
        return respond(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "text/plain", "method not allowed\n");
    if (strcmp(url, "/healthz") == 0) return respond(conn, MHD_HTTP_OK, "text/plain", "ok\n");
    if (strcmp(url, "/readyz") == 0) return serve_readyz(conn);
    return serve_metrics(conn);
}

/* Splits "host:port", "[v6]:port", ":port" or "port" (host 127.0.0.1: the
 * endpoint is private unless an address is asked for). */
static int parse_listen(const char *listen, char *host, size_t host_size, char *port,
                        size_t port_size, char *errstr, size_t errstr_size) {
    const char *p = listen ? listen : "";
    const char *h = "127.0.0.1";
    size_t hlen = strlen(h);
    const char *colon = strrchr(p, ':');
    if (*p == '[') {
        const char *close = strchr(p, ']');
        if (!close || close[1] != ':') {
            snprintf(errstr, errstr_size, "%s: expected [address]:port", p);
            return -1;
        }
        h = p + 1;
        hlen = (size_t)(close - h);
        p = close + 2;
    } else if (colon) {
        if (memchr(p, ':', (size_t)(colon - p))) {
            snprintf(errstr, errstr_size, "%s: an IPv6 address needs brackets, e.g. [::1]:9464",
                     listen);
            return -1;
        }
        if (colon > p) {
            h = p;
            hlen = (size_t)(colon - p);
        }
        p = colon + 1;
    }
    size_t plen = strlen(p);
    long value = 0;
    for (size_t i = 0; i < plen && value <= 65535; i++) {
        if (p[i] < '0' || p[i] > '9') {
            plen = 0;
            break;
        }
        value = value * 10 + (p[i] - '0');
    }
    if (plen == 0 || plen >= port_size || value > 65535 || hlen == 0 || hlen >= host_size) {
        snprintf(errstr, errstr_size, "%s: expected host:port with a port from 0 to 65535",
                 listen ? listen : "");
        return -1;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    memcpy(port, p, plen);
    port[plen] = '\0';
    return 0;
}

ttb_http_t *ttb_http_start(const char *listen, char *errstr, size_t errstr_size) {
    char host[256], port[8];
    if (parse_listen(listen, host, sizeof(host), port, sizeof(port), errstr, errstr_size))
        return NULL;

    struct addrinfo hints, *res = NULL;
    memset(&hints, 0, sizeof(hints));
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
    int gai = getaddrinfo(host, port, &hints, &res);
    if (gai != 0) {
        snprintf(errstr, errstr_size, "%s: %s", host, gai_strerror(gai));
        return NULL;
    }
    struct sockaddr_storage addr;
    memset(&addr, 0, sizeof(addr));
    bool found = false;
    for (struct addrinfo *ai = res; ai && !found; ai = ai->ai_next) {
        if ((ai->ai_family == AF_INET || ai->ai_family == AF_INET6) &&
            ai->ai_addrlen <= sizeof(addr)) {
            memcpy(&addr, ai->ai_addr, ai->ai_addrlen);
            found = true;
        }
    }
    freeaddrinfo(res);
    if (!found) {
        snprintf(errstr, errstr_size, "%s: no IPv4 or IPv6 address", host);
        return NULL;
    }

    ttb_http_t *http = calloc(1, sizeof(*http));
    if (!http) {
        snprintf(errstr, errstr_size, "out of memory");
        return NULL;
    }
    /* MHD_USE_AUTO picks epoll on Linux: select() would fail on the first
     * connection whose descriptor is past FD_SETSIZE, and a busy bridge holds
     * many (Kafka brokers, Redis). */
    unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_ERROR_LOG | MHD_USE_AUTO;
    if (addr.ss_family == AF_INET6) flags |= MHD_USE_IPv6;
    /* The logger goes first so that errors of the later options reach it. */
    http->daemon = MHD_start_daemon(
        flags, (uint16_t)atoi(port), NULL, NULL, http_handle, http, MHD_OPTION_EXTERNAL_LOGGER,
        http_log, http, MHD_OPTION_SOCK_ADDR, (struct sockaddr *)&addr,
        MHD_OPTION_CONNECTION_TIMEOUT, TTB_HTTP_CONNECTION_TIMEOUT_S,
        MHD_OPTION_CONNECTION_LIMIT, TTB_HTTP_CONNECTION_LIMIT, MHD_OPTION_END);
    if (!http->daemon) {
        int saved = errno;
        snprintf(errstr, errstr_size, "cannot listen on %s: %s", listen,
                 http->last_error[0] ? http->last_error : strerror(saved));
        free(http);
        return NULL;
    }
    const union MHD_DaemonInfo *info = MHD_get_daemon_info(http->daemon, MHD_DAEMON_INFO_BIND_PORT);
    http->port = info ? info->port : atoi(port);
    return http;
}

int ttb_http_port(const ttb_http_t *http) { return http ? http->port : 0; }

void ttb_http_stop(ttb_http_t *http) {
    if (!http) return;
    /* Joins the server thread: no handler runs after this returns. */
    MHD_stop_daemon(http->daemon);
    free(http);
}
