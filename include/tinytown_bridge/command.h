/* SPDX-License-Identifier: MIT */
/**
 * @file command.h
 * @brief Command records: parse and validate (no I/O), and encode result records.
 *
 * The wire contract is `spec/protocol.md`. A command is validated completely
 * here, before anything touches Redis, so that every bad record gets a precise
 * error code and the agent service only sees well-formed input.
 */
#ifndef TINYTOWN_BRIDGE_COMMAND_H
#define TINYTOWN_BRIDGE_COMMAND_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/agent.h"
#include "tinytown_bridge/error.h"
#include "tinytown_bridge/rfc3339.h"

/** The ops, in the order of ops.def (which says everything else about each). */
typedef enum ttb_op {
#define TTB_OP_ROW(id, name, mutating, args, how, member, takes) TTB_OP_##id,
#include "tinytown_bridge/ops.def"
#undef TTB_OP_ROW
    TTB_OP__COUNT
} ttb_op_t;

/** @returns the wire name ("spawn", "list_open", ...). */
const char *ttb_op_name(ttb_op_t op);
/** Exact match of a wire name. @returns 0 or TTB_ERR_INVALID. */
int ttb_op_parse(const char *s, ttb_op_t *out);
/** @returns true for ops that change Redis (spawn, kill, stop_all, restart, prune, interrupt, resume, close). */
bool ttb_op_is_mutating(ttb_op_t op);
/** @returns true for ops whose `agent` argument is required. */
bool ttb_op_takes_agent(ttb_op_t op);

/** Limits on fields, in bytes. */
#define TTB_CMD_ID_MAX 128
#define TTB_CMD_TOWN_MAX 64
#define TTB_CMD_NAME_MAX 128
#define TTB_CMD_REF_MAX 256
/** Largest `limit` of a listing page. */
#define TTB_CMD_LIMIT_MAX 100000
#define TTB_CMD_SHORT_MAX 64 /**< cli, role_id, nickname */

/** What the bridge accepts; owned by the caller, read-only during parsing. */
typedef struct ttb_command_policy {
    size_t max_record_bytes;            /**< larger records are too_large */
    const char *default_town;           /**< used when `town` is omitted; NULL: town required */
    const char *const *towns;           /**< allowed towns; ntowns 0 = any valid town */
    size_t ntowns;
    const char *default_cli;            /**< spawn's cli when omitted */
    int64_t max_wait_ms;                /**< wait's timeout_ms is capped to this; also its default */
    bool op_denied[TTB_OP__COUNT];      /**< ops the operator turned off: forbidden */
} ttb_command_policy_t;

/**
 * A parsed command. All strings are owned (ttb_command_clear() frees them).
 * After a failed parse, id/town/op_name hold whatever was usable, for the
 * error result (NULL → JSON null).
 */
typedef struct ttb_command {
    char *id;      /**< validated id, or NULL when the record has none usable */
    char *town;    /**< validated town (default applied) */
    char *op_name; /**< the `op` string as given, if it was a string */
    ttb_op_t op;
    /* arguments; NULL/false when not given */
    char *agent;    /**< agent reference (kill, restart, interrupt, resume, close, wait, get_result) */
    char *name;     /**< spawn */
    char *cli;      /**< spawn: default applied */
    char *role_id;  /**< spawn */
    char *nickname; /**< spawn */
    char *parent;   /**< spawn: agent reference */
    bool has_spawn_mode;
    ttb_spawn_mode_t spawn_mode;
    bool all;           /**< prune */
    size_t limit;       /**< listings (list, list_open, status, stop_all, prune): at most this
                             many agents; 0 = all of them */
    bool has_after;     /**< listings: start after the agent the cursor names */
    ttb_time_t after_created; /**< the cursor: created_at ... */
    char after_id[TTB_UUID_BUFSZ]; /**< ... and id of the last agent of the previous page */
    int64_t timeout_ms; /**< wait: capped, default max_wait_ms */
} ttb_command_t;

/**
 * Parses and validates one command record value of @p len bytes.
 *
 * Checks, in order: size (too_large), JSON syntax and UTF-8 (invalid_json),
 * top-level object and a valid `id` (invalid_command), `town` (invalid_command
 * if malformed, unknown_town if not allowed), `op` (invalid_command if not a
 * string, unknown_op if unknown, forbidden if denied), then `args`
 * (invalid_command: unknown keys, wrong types, lengths, control characters,
 * missing required ones; reserved_name for spawn's reserved names).
 * Unknown top-level keys are ignored.
 *
 * @param cmd zeroed by the call; filled as far as parsing got, even on error.
 * @returns TTB_CODE_OK, or the error code with a one-line message in @p errstr.
 */
ttb_code_t ttb_command_parse(const char *buf, size_t len, const ttb_command_policy_t *policy,
                             ttb_command_t *cmd, char *errstr, size_t errstr_size);

/** Frees the strings of @p cmd and zeroes it. Accepts NULL. */
void ttb_command_clear(ttb_command_t *cmd);

/** Everything a result record says. Strings are borrowed. */
typedef struct ttb_result {
    const char *id;      /**< NULL → null */
    const char *town;    /**< NULL → null */
    const char *op;      /**< NULL → null */
    ttb_code_t code;     /**< TTB_CODE_OK → "ok": true and "result" */
    const char *message; /**< error message (ignored when ok) */
    json_t *result;      /**< the `result` member when ok (borrowed) */
    ttb_time_t applied_at;
} ttb_result_t;

/**
 * Encodes a result record, compact, in the protocol's member order:
 * {"id","town","op","ok","result"} or {"id","town","op","ok","error":{"code","message"}},
 * then "applied_at" (JSON time form, `Z`).
 * @returns a malloc'd NUL-terminated string (caller frees) and its length in
 * *len, or NULL on NOMEM.
 */
char *ttb_result_encode(const ttb_result_t *result, size_t *len);

#endif
