/* SPDX-License-Identifier: MIT */
/**
 * @file task.h
 * @brief The task model: states, the record, and its hash and JSON codecs.
 *
 * Pure code, no I/O; lenient on input like tinytown's reader.
 */
#ifndef TINYTOWN_BRIDGE_TASK_H
#define TINYTOWN_BRIDGE_TASK_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "tinytown_bridge/rfc3339.h"
#include "tinytown_bridge/uuid.h"

typedef enum ttb_task_state {
    TTB_TASK_PENDING = 0,
    TTB_TASK_ASSIGNED,
    TTB_TASK_RUNNING,
    TTB_TASK_COMPLETED,
    TTB_TASK_FAILED,
    TTB_TASK_CANCELLED
} ttb_task_state_t;

/** @returns "pending", "assigned", "running", "completed", "failed" or "cancelled". */
const char *ttb_task_state_name(ttb_task_state_t state);
/** Exact match; "in_flight" reads as running. @returns 0 or TTB_ERR_INVALID. */
int ttb_task_state_parse(const char *s, size_t len, ttb_task_state_t *out);
/** completed, failed, cancelled */
bool ttb_task_state_is_terminal(ttb_task_state_t state);

/** One task. Strings are owned (free with ttb_task_clear()); optional ids are "" when absent. */
typedef struct ttb_task {
    char id[TTB_UUID_BUFSZ];
    char *description; /**< never NULL after decode */
    ttb_task_state_t state;
    char assigned_to[TTB_UUID_BUFSZ]; /**< optional */
    ttb_time_t created_at;
    ttb_time_t updated_at;
    bool has_started_at;
    ttb_time_t started_at;
    bool has_completed_at;
    ttb_time_t completed_at;
    char *result;                   /**< optional: NULL when absent */
    char parent_id[TTB_UUID_BUFSZ]; /**< optional */
    char **tags;                    /**< ntags strings */
    size_t ntags;
} ttb_task_t;

/** Frees the strings of @p task and zeroes it. Accepts NULL. */
void ttb_task_clear(ttb_task_t *task);

/**
 * Decodes a task hash (HGETALL form, as ttb_agent_from_hash()): unknown state →
 * pending, missing/unparsable created_at/updated_at → @p now, unparsable
 * optional times/ids → absent, tags not a JSON array of strings → empty.
 * @returns 0; TTB_ERR_INVALID without a parsable id; TTB_ERR_NOMEM.
 */
int ttb_task_from_hash(ttb_task_t *task, const char *const *strs, const size_t *lens, size_t n,
                       ttb_time_t now);

/**
 * @returns the Task JSON (new reference): id, description, state, assigned_to,
 * created_at, updated_at, started_at, completed_at, result, parent_id, tags;
 * absent optionals null, times with `Z`.
 */
json_t *ttb_task_to_json(const ttb_task_t *task);

#endif
