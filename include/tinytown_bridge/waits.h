/* SPDX-License-Identifier: MIT */
/**
 * @file waits.h
 * @brief Pending `wait`s, indexed by the agent they wait on.
 *
 * A wait is answered when its agent becomes terminal (or disappears) or its
 * deadline passes. Asking Redis about every pending wait on every tick costs
 * in proportion to their number even when nothing happens, so the bridge
 * asks only about the waits that may have finished:
 *  - those whose agent changed (a keyspace notification, or the bridge's own
 *    change: ttb_waits_touch() marks every wait on that agent);
 *  - those whose deadline has passed;
 *  - a slow safety sweep over all of them, a slice per tick, for changes no
 *    notification told us about (notifications are fire-and-forget).
 * ttb_waits_due() hands out exactly those, so the work per tick follows what
 * happened, not how many waits there are.
 *
 * @locality one thread.
 */
#ifndef TINYTOWN_BRIDGE_WAITS_H
#define TINYTOWN_BRIDGE_WAITS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/uuid.h"

typedef struct ttb_waits ttb_waits_t;
typedef struct ttb_wait ttb_wait_t;

/** @returns an empty index (NULL on NOMEM). @p sweep_ms: how long one full safety sweep takes. */
ttb_waits_t *ttb_waits_new(int64_t sweep_ms);
/** Frees the index and its entries (not the items). Accepts NULL. */
void ttb_waits_free(ttb_waits_t *w);

/**
 * Adds a wait on agent @p agent_id of @p town (borrowed: it must outlive the
 * entry) for @p item, answered by @p deadline_ms (epoch ms).
 * @returns the entry (give it to ttb_waits_remove()), or NULL on NOMEM.
 */
ttb_wait_t *ttb_waits_add(ttb_waits_t *w, const char *town, const char *agent_id,
                          int64_t deadline_ms, void *item);
/** Removes an entry (its item is the caller's). Accepts NULL. */
void ttb_waits_remove(ttb_waits_t *w, ttb_wait_t *entry);
/** Marks every wait on agent @p agent_id (@p len bytes) of @p town as due. */
void ttb_waits_touch(ttb_waits_t *w, const char *town, const char *agent_id, size_t len);
/** Marks every wait as due (after a reconnect: notifications may have been missed). */
void ttb_waits_touch_all(ttb_waits_t *w);

/**
 * Collects up to @p max items that are due at @p now_ms (touched, past their
 * deadline, or in this tick's sweep slice, @p tick_ms since the last call)
 * into @p items, and clears their touched mark. An item not collected for
 * lack of room stays due. @returns how many were collected.
 */
size_t ttb_waits_due(ttb_waits_t *w, int64_t now_ms, int64_t tick_ms, void **items, size_t max);

/** @returns true when some wait was touched since it was last collected. */
bool ttb_waits_any_touched(const ttb_waits_t *w);
/** Sets how long one full safety sweep takes (e.g. shorter while notifications are unavailable). */
void ttb_waits_set_sweep(ttb_waits_t *w, int64_t sweep_ms);

/** @returns the number of pending waits. */
size_t ttb_waits_count(const ttb_waits_t *w);
/** @returns each entry in turn: start with NULL, ends with NULL (remove at will after reading next). */
ttb_wait_t *ttb_waits_next(const ttb_waits_t *w, const ttb_wait_t *after);
/** @returns the item of @p entry. */
void *ttb_wait_item(const ttb_wait_t *entry);

#endif
