/* SPDX-License-Identifier: MIT */
/**
 * @file http.h
 * @brief The operations endpoint: /healthz, /readyz and /metrics.
 */
#ifndef TINYTOWN_BRIDGE_HTTP_H
#define TINYTOWN_BRIDGE_HTTP_H

#include <stddef.h>

typedef struct ttb_http ttb_http_t;

/**
 * Starts serving on @p listen ("host:port"; host defaults to 127.0.0.1, port 0
 * picks a free one) in a thread of its own. Readiness is read from ttb_metrics
 * (redis_up and assigned). @returns NULL with @p errstr on failure.
 */
ttb_http_t *ttb_http_start(const char *listen, char *errstr, size_t errstr_size);
/** @returns the port actually bound. */
int ttb_http_port(const ttb_http_t *http);
/** Stops and frees. Accepts NULL. */
void ttb_http_stop(ttb_http_t *http);

#endif
