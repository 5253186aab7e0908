/* SPDX-License-Identifier: MIT */
/**
 * @file capture.h
 * @brief State capture: agent state changes made by anyone but the bridge,
 *        written into the town stream as `agent_state_changed` events.
 *
 * Keyspace notifications on `tt:{town}:agent:*` give promptness; a periodic
 * reconciling scan (and one after every reconnect) gives completeness. The
 * last observed state of each agent lives in the bridge's own hash
 * `ttb:{town}:observed` (the bridge's scripts update it too), and each
 * detected change is recorded with one atomic script that compares, emits
 * and updates, so a transition is never reported twice, even by two bridges.
 */
#ifndef TINYTOWN_BRIDGE_CAPTURE_H
#define TINYTOWN_BRIDGE_CAPTURE_H

#include <stddef.h>

#include "tinytown_bridge/config.h"

typedef struct ttb_capture ttb_capture_t;

/** @returns a capture for @p config (borrowed), or NULL with @p errstr. */
ttb_capture_t *ttb_capture_new(const ttb_config_t *config, char *errstr, size_t errstr_size);
/** Starts its thread. @returns 0 or TTB_ERR_*. */
int ttb_capture_start(ttb_capture_t *capture);
/** Asks it to stop and returns at once. @locality any thread. */
void ttb_capture_request_stop(ttb_capture_t *capture);
/** Asks it to stop (if not asked yet) and joins its thread. */
void ttb_capture_stop(ttb_capture_t *capture);
/** Frees (stops first if running). Accepts NULL. */
void ttb_capture_free(ttb_capture_t *capture);

#endif
