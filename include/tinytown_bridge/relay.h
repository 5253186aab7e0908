/* SPDX-License-Identifier: MIT */
/**
 * @file relay.h
 * @brief Event relay: each allowed town's events to the events topic, in
 *        stream order, resumable, once per town, none of the bridge's lost.
 *
 * Runs in its own thread with its own Redis connection and Kafka producer.
 * Per town it holds a lease in Redis (so that among several bridges exactly
 * one relays a town), reads from a persisted cursor the merge of
 * `tt:{town}:events` (tinytown's stream, capped by tinytown) and
 * `ttb:{town}:outbox` (every event a bridge wrote, kept under the same id
 * until Kafka acknowledged it), produces each entry (value = the entry's
 * `data`, byte for byte; key = agent id or town; headers tt-town,
 * tt-event-id, tt-event-type, plus CloudEvents headers when configured),
 * advances the cursor only past entries Kafka acknowledged and trims the
 * outbox up to it. tinytown's own entries trimmed before they were read are
 * logged and counted as a gap (docs/events.md).
 */
#ifndef TINYTOWN_BRIDGE_RELAY_H
#define TINYTOWN_BRIDGE_RELAY_H

#include <stddef.h>

#include "tinytown_bridge/config.h"

typedef struct ttb_relay ttb_relay_t;

/** @returns a relay for @p config (borrowed; must outlive it), or NULL with @p errstr. */
ttb_relay_t *ttb_relay_new(const ttb_config_t *config, char *errstr, size_t errstr_size);
/** Starts its thread. @returns 0 or TTB_ERR_*. */
int ttb_relay_start(ttb_relay_t *relay);
/**
 * Asks it to stop and returns at once. It then waits for what is in flight,
 * saves its cursors and gives its leases back, all within the config's
 * shutdown timeout counted from this call.
 * @locality any thread.
 */
void ttb_relay_request_stop(ttb_relay_t *relay);
/** Asks it to stop (if not asked yet) and waits for its thread to end. */
void ttb_relay_stop(ttb_relay_t *relay);
/** Frees (stops first if running). Accepts NULL. */
void ttb_relay_free(ttb_relay_t *relay);

#endif
