/* SPDX-License-Identifier: MIT */
/**
 * @file agent.h
 * @brief The agent model: states and their classes, records, nicknames,
 *        display labels, reference resolution, and the hash and JSON codecs.
 *
 * Pure code, no I/O. The hash codec follows tinytown's reader exactly
 * (`spec/tinytown-redis.md`): lenient on input (unknown state → starting,
 * unparsable time → the caller's "now", ...), exact on output.
 */
#ifndef TINYTOWN_BRIDGE_AGENT_H
#define TINYTOWN_BRIDGE_AGENT_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/error.h"
#include "tinytown_bridge/rfc3339.h"
#include "tinytown_bridge/uuid.h"

typedef enum ttb_agent_state {
    TTB_STATE_COLD = 0,
    TTB_STATE_STARTING,
    TTB_STATE_IDLE,
    TTB_STATE_WORKING,
    TTB_STATE_PAUSED,
    TTB_STATE_DRAINING,
    TTB_STATE_STOPPED,
    TTB_STATE_ERROR,
    TTB_STATE__COUNT
} ttb_agent_state_t;

/** @returns the stored/JSON name: "cold", "starting", ... */
const char *ttb_agent_state_name(ttb_agent_state_t state);
/** @returns the human-facing name used in events and messages: "Cold", "Starting", ... */
const char *ttb_agent_state_title(ttb_agent_state_t state);
/** Exact, case-sensitive match of a stored name (@p len bytes). @returns 0 or TTB_ERR_INVALID. */
int ttb_agent_state_parse(const char *s, size_t len, ttb_agent_state_t *out);
/** stopped, error, cold */
bool ttb_agent_state_is_terminal(ttb_agent_state_t state);
/** idle */
bool ttb_agent_state_accepts_work(ttb_agent_state_t state);
/** starting, idle, working, paused, draining */
bool ttb_agent_state_is_active(ttb_agent_state_t state);

typedef enum ttb_agent_type { TTB_AGENT_WORKER = 0, TTB_AGENT_SUPERVISOR } ttb_agent_type_t;
/** @returns "worker" or "supervisor". */
const char *ttb_agent_type_name(ttb_agent_type_t type);

typedef enum ttb_spawn_mode {
    TTB_SPAWN_FRESH = 0,
    TTB_SPAWN_FORKED_CONTEXT,
    TTB_SPAWN_RESUMED
} ttb_spawn_mode_t;
/** @returns "fresh", "forkedcontext" or "resumed". */
const char *ttb_spawn_mode_name(ttb_spawn_mode_t mode);
/** Exact match of a stored name. @returns 0 or TTB_ERR_INVALID. */
int ttb_spawn_mode_parse(const char *s, size_t len, ttb_spawn_mode_t *out);

/**
 * One agent. Strings are owned by the record (free with ttb_agent_clear());
 * optional strings are NULL when absent, optional ids are "" when absent.
 */
typedef struct ttb_agent {
    char id[TTB_UUID_BUFSZ];
    char *name;     /**< never NULL after a successful decode ("" if missing) */
    char *nickname; /**< optional */
    char *role_id;  /**< optional */
    char parent_agent_id[TTB_UUID_BUFSZ]; /**< optional: "" when absent */
    ttb_spawn_mode_t spawn_mode;
    ttb_agent_type_t agent_type;
    ttb_agent_state_t state;
    char *cli; /**< never NULL after a successful decode */
    char current_task[TTB_UUID_BUFSZ]; /**< optional: "" when absent */
    ttb_time_t created_at;
    ttb_time_t last_heartbeat;
    uint64_t tasks_completed;
    uint64_t rounds_completed;
    ttb_time_t last_active_at;
} ttb_agent_t;

/** Frees the strings of @p agent and zeroes it. Accepts NULL. */
void ttb_agent_clear(ttb_agent_t *agent);

/**
 * Decodes an agent hash given as HGETALL returns it: @p n strings alternating
 * field name and value, each with its length. Follows tinytown's reader:
 * missing/unparsable timestamps become @p now (last_active_at falls back to
 * created_at), unknown state → starting, unknown agent_type → worker, unknown
 * spawn_mode → fresh, missing/unparsable counters → 0 (a leading '+' is
 * accepted, as Rust's u64 parser does), unparsable optional ids → absent,
 * unknown fields ignored, a field given twice takes its last value. Enum
 * values are read as the contents of a JSON string, as tinytown's serde does
 * (`\u0069dle` is idle). Two things Rust strings can hold and C strings
 * cannot: a value is cut at its first NUL byte, and invalid UTF-8 is replaced
 * by U+FFFD. @p agent is overwritten, not freed first.
 * @returns 0; TTB_ERR_INVALID when there is no parsable `id` (tinytown skips
 *          such a hash); TTB_ERR_NOMEM.
 * @remark On error @p agent holds nothing to free.
 */
int ttb_agent_from_hash(ttb_agent_t *agent, const char *const *strs, const size_t *lens, size_t n,
                        ttb_time_t now);

/** Maximum number of fields tinytown writes for an agent. */
#define TTB_AGENT_HASH_MAX 15

/**
 * An agent encoded as tinytown saves it: the fields to HSET (in tinytown's
 * order: id, name, agent_type, state, cli, created_at, last_heartbeat,
 * tasks_completed, rounds_completed, last_active_at, spawn_mode, then the
 * present optionals current_task, nickname, role_id, parent_agent_id) and the
 * absent optional fields to HDEL (same relative order).
 * Values point into the agent or into @c buf: valid while both live.
 */
typedef struct ttb_agent_hash {
    size_t nset;
    const char *field[TTB_AGENT_HASH_MAX];
    const char *value[TTB_AGENT_HASH_MAX];
    size_t value_len[TTB_AGENT_HASH_MAX];
    size_t ndel;
    const char *del[4];
    char buf[3 * TTB_TIME_BUFSZ + 2 * 21];
} ttb_agent_hash_t;

/** Encodes @p agent as tinytown's save does. */
void ttb_agent_to_hash(const ttb_agent_t *agent, ttb_agent_hash_t *out);

/**
 * @returns the Agent JSON object (new reference; NULL on NOMEM) with
 * tinytown's field order: id, name, nickname, role_id, parent_agent_id,
 * spawn_mode, agent_type, state, cli, current_task, created_at,
 * last_heartbeat, tasks_completed, rounds_completed, last_active_at.
 * Absent optionals are null; times in JSON form (`Z`).
 */
json_t *ttb_agent_to_json(const ttb_agent_t *agent);

/**
 * @returns the AgentInfo JSON object: the Agent object followed by
 * inbox_len, urgent_len and current_scope (null when @p current_scope is NULL).
 */
json_t *ttb_agent_info_to_json(const ttb_agent_t *agent, long long inbox_len, long long urgent_len,
                               const char *current_scope);

/** @returns the nickname tinytown derives from a canonical id (static string), or NULL if @p id is not a UUID. */
const char *ttb_nickname_from_id(const char *id);

/** @returns nickname if set, else name (borrowed). */
const char *ttb_agent_display_name(const ttb_agent_t *agent);

/** @returns role_id if set, else "default" (borrowed). */
const char *ttb_agent_effective_role(const ttb_agent_t *agent);

/**
 * Writes the display label "{display name} [{role}]", or "{display name} [{name}]"
 * when the role is "default", into @p buf (truncated to @p size, always NUL-terminated).
 * @returns the full length the label has (as snprintf does).
 */
size_t ttb_agent_display_label(const ttb_agent_t *agent, char *buf, size_t size);

/** The short id: the first 4 characters of the id (buffer of 5). */
void ttb_agent_short_id(const ttb_agent_t *agent, char out[5]);

/**
 * Trims the NUL-terminated @p s like Rust's str::trim (Unicode White_Space,
 * UTF-8 encoded, at both ends).
 * @returns a pointer into @p s and sets *len (output only) to the trimmed length.
 */
const char *ttb_str_trim(const char *s, size_t *len);

/**
 * @returns true when @p name is reserved: trimmed and lower-cased it equals
 * "supervisor" or "conductor".
 */
bool ttb_agent_name_is_reserved(const char *name);

/**
 * If the trimmed reference @p ref is a UUID in any form Rust accepts, or
 * `supervisor` / `conductor` in any ASCII case (tinytown's aliases of the
 * supervisor, TTB_UUID_SUPERVISOR), writes the canonical id to @p out and
 * @returns true (resolution then is by id only: that agent or none).
 */
bool ttb_agent_ref_as_uuid(const char *ref, char out[TTB_UUID_BUFSZ]);

/**
 * Resolves a user's agent reference among @p n agents by tinytown's rules:
 * trimmed; empty → not found; a UUID → the agent with that id; a name that
 * exactly one agent has, byte for byte → that agent (tinytown 0.10.0's `tt`
 * resolves by exact name, so `Bob` and `bob` stay two agents); otherwise
 * every agent whose name, display name or display label equals it ignoring
 * ASCII case, or whose short id equals it, matches.
 * @returns TTB_CODE_OK with *index set; TTB_CODE_AGENT_NOT_FOUND
 * ("agent '{ref}' not found"); or TTB_CODE_AMBIGUOUS_AGENT ("agent reference
 * '{ref}' is ambiguous: " then "{label} ({short id})" of every match, in array
 * order, separated by ", "), {ref} being the trimmed reference.
 * @p errstr gets a message on every non-OK code, truncated to @p errstr_size
 * without splitting a UTF-8 character.
 */
ttb_code_t ttb_agent_resolve(const ttb_agent_t *agents, size_t n, const char *ref, size_t *index,
                             char *errstr, size_t errstr_size);

#endif
