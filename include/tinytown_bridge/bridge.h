/* SPDX-License-Identifier: MIT */
/**
 * @file bridge.h
 * @brief The command loop: commands topic in, results and dead letters out.
 *
 * One consumer in the configured group reads command records in batches; the
 * agent service applies each batch in pipelined round trips; an idempotent
 * producer publishes one result per record (and the record itself to the
 * dead-letter topic when it is unusable). A record's offset is stored only
 * when everything it produced is acknowledged, and offsets advance strictly
 * in order per partition, so a crash at any point loses nothing: at worst
 * records are delivered again and answered from their idempotency records.
 * When Redis is unreachable the loop pauses its partitions, keeps the batch
 * it could not apply, and retries with capped backoff until Redis is back.
 *
 * @locality everything runs on the caller's thread, librdkafka callbacks included.
 */
#ifndef TINYTOWN_BRIDGE_BRIDGE_H
#define TINYTOWN_BRIDGE_BRIDGE_H

#include <signal.h>
#include <stddef.h>

#include "tinytown_bridge/config.h"

typedef struct ttb_bridge ttb_bridge_t;

/** @returns a bridge for @p config (borrowed; must outlive it) or NULL with @p errstr. */
ttb_bridge_t *ttb_bridge_new(const ttb_config_t *config, char *errstr, size_t errstr_size);

/**
 * Runs until *@p stop becomes non-zero, then stops gracefully: no new
 * records, in-flight results flushed, offsets committed, all within the
 * configured shutdown timeout. @returns 0 after a clean stop, or TTB_ERR_*
 * after a fatal error (logged), in which case nothing unacknowledged was committed.
 */
int ttb_bridge_run(ttb_bridge_t *bridge, const volatile sig_atomic_t *stop);

/**
 * Registers @p fn, called with @p arg once when the bridge begins to stop,
 * before its own graceful stop, so companions (relay, state capture) stop in
 * parallel with it and the whole process stays within one shutdown timeout.
 */
void ttb_bridge_on_stop(ttb_bridge_t *bridge, void (*fn)(void *arg), void *arg);

/** Frees. Accepts NULL. */
void ttb_bridge_free(ttb_bridge_t *bridge);

#endif
