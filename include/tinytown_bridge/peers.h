/* SPDX-License-Identifier: MIT */
/**
 * @file peers.h
 * @brief Bridges of one consumer group must answer alike: a check in Redis.
 *
 * Any bridge of a group may get any command, so settings that change an
 * answer (the allowed towns, the default town, denied operations, the
 * largest record, the longest wait, the default CLI) must be the same on
 * all of them, or the same command is answered differently depending on
 * where its partition happens to live. Each bridge writes those settings as
 * one canonical line into `ttb:bridges:{group}` (field: its instance id,
 * value: "<epoch ms> <line>") every few seconds and compares it with the
 * lines of the other live members (seen in the last 30 s).
 *
 * The retention of idempotency records is deliberately not part of it: it
 * only says how long a record is kept, and lookups do not depend on it.
 *
 * @locality one thread.
 */
#ifndef TINYTOWN_BRIDGE_PEERS_H
#define TINYTOWN_BRIDGE_PEERS_H

#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/config.h"
#include "tinytown_bridge/store.h"

/** How long a member's line counts as live after it was written. */
#define TTB_PEERS_LIVE_MS 30000

/** @returns the canonical line of @p config's answer-changing settings (caller frees), or NULL. */
char *ttb_peers_settings(const ttb_config_t *config);

/**
 * Writes this bridge's line and compares it with the other live members'.
 * @returns 0 when they all agree, 1 when one does not (then @p what says
 * which member and both lines), or TTB_ERR_* when Redis failed.
 */
int ttb_peers_check(ttb_store_t *store, const char *group, const char *instance,
                    const char *settings, int64_t now_ms, char *what, size_t what_size);

/** Removes this bridge's line (on a clean stop). Errors are ignored. */
void ttb_peers_leave(ttb_store_t *store, const char *group, const char *instance);

#endif
