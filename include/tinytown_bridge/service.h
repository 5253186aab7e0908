/* SPDX-License-Identifier: MIT */
/**
 * @file service.h
 * @brief tinytown's agent service over Redis, applied to batches of commands.
 *
 * ttb_service_execute() takes parsed commands and turns each into exactly one
 * outcome: the bytes of its result record. It works in as few round trips as
 * the commands allow:
 *  1. one pipelined GET of every command's idempotency record (a command id
 *     already applied in its town gets its first result again, byte for byte);
 *  2. the rest run in "rounds": each round reads what its commands need (a
 *     town's directory for references, a full listing for list/status/
 *     stop_all/prune, the task table for get_result) with SCAN and pipelined
 *     batches, then sends every mutation as one EVALSHA, all pipelined.
 *     A command that must see an earlier command's writes in the same town
 *     starts a new round, so the outcome is the one serial application gives.
 * Each mutation is one Lua script: idempotency check, state check, writes,
 * activity line, events and the stored outcome commit together or not at all.
 *
 * `wait` never blocks: an agent that is not yet terminal gives a pending
 * outcome with a deadline; the caller re-checks pending waits with
 * ttb_service_check_waits() when events arrive or on a timer. The deadline is
 * stored in Redis on first sight, so a redelivered wait keeps its original one.
 *
 * @locality one thread at a time.
 */
#ifndef TINYTOWN_BRIDGE_SERVICE_H
#define TINYTOWN_BRIDGE_SERVICE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/command.h"
#include "tinytown_bridge/store.h"

typedef struct ttb_service_config {
    const char *redis_url_redacted; /**< shown by `status`; copied */
    int64_t idempotency_ttl_s;      /**< how long command ids are remembered (default 7 days) */
    unsigned scan_count;            /**< SCAN COUNT hint (default 1000) */
    int64_t directory_reconcile_ms; /**< re-read a town's directory whole this often (0: never) */
} ttb_service_config_t;

typedef struct ttb_service ttb_service_t;

/** The outcome of one command. */
typedef struct ttb_outcome {
    ttb_code_t code;        /**< TTB_CODE_OK or the error code */
    char *record;           /**< result record bytes (malloc'd; NULL while pending) */
    size_t record_len;
    bool replayed;          /**< from an earlier application (idempotency record) */
    bool pending;           /**< wait not finished: see deadline_ms / agent_id */
    int64_t deadline_ms;    /**< pending wait: epoch ms when it times out */
    char agent_id[TTB_UUID_BUFSZ]; /**< pending wait: the agent waited on */
} ttb_outcome_t;

/** @returns a new service using @p store (borrowed; must outlive it), NULL on NOMEM. */
ttb_service_t *ttb_service_new(ttb_store_t *store, const ttb_service_config_t *config);
/** Frees. Accepts NULL. */
void ttb_service_free(ttb_service_t *svc);

/**
 * Says whether keyspace notifications of agent keys (@p agents) and of task
 * keys (@p tasks) reach the service (see ttb_service_agent_touched,
 * ttb_service_task_touched). Only then are the towns' directories (and
 * latest results) kept between batches; otherwise each round that resolves
 * references reads its town again (each with a get_result, its tasks).
 * Every change of state makes them be read again.
 */
void ttb_service_set_live(ttb_service_t *svc, bool agents, bool tasks);

/** Makes every town's directory (and latest results) be read whole again
 * before its next use (notifications may have been lost). */
void ttb_service_forget_directories(ttb_service_t *svc);

/** A notification for `tt:{town}:agent:<id>`: that agent is read again before
 * its town's directory is next used. */
void ttb_service_agent_touched(ttb_service_t *svc, const char *town, const char *id,
                               size_t id_len);

/** A notification for `tt:{town}:task:<id>`: the town's tasks are read again
 * before the next get_result in it. While none comes (and notifications are
 * live), get_result reads only the agent and its latest completed task. */
void ttb_service_task_touched(ttb_service_t *svc, const char *town);

/**
 * Applies @p n commands (all parsed OK) in order and fills @p out[i] for each.
 * @returns 0 when every outcome is filled; TTB_ERR_IO when Redis failed on the
 * way — then no outcome is valid (those filled are cleared) and the caller
 * retries the whole batch once Redis is back: mutations already applied
 * answer from their idempotency records, so nothing is applied twice.
 * TTB_ERR_NOMEM likewise.
 */
int ttb_service_execute(ttb_service_t *svc, const ttb_command_t *cmds, size_t n,
                        ttb_outcome_t *out);

/**
 * Re-checks pending waits: for each i with out[i]->pending, finishes it when
 * the agent is terminal, gone, or @p now_ms passed its deadline (then
 * `pending` is false and `record` is set), in one pipelined round trip. @p cmds[i] is the wait command.
 * @returns 0 or TTB_ERR_IO / TTB_ERR_NOMEM (outcomes untouched then).
 */
int ttb_service_check_waits(ttb_service_t *svc, const ttb_command_t *const *cmds,
                            ttb_outcome_t *const *out, size_t n, int64_t now_ms);

/**
 * Moves idempotency records written by the bridge's first version (hashes
 * `ttb:{town}:cmds:{bucket}`) into each of @p n towns' record hash, so that
 * commands applied before an upgrade are still recognised after it.
 * @returns the number of records moved, or TTB_ERR_IO / TTB_ERR_PROTO.
 */
long ttb_service_adopt_legacy_records(ttb_service_t *svc, char *const *towns, size_t n);

/** Frees the record of @p out and zeroes it. Accepts NULL. */
void ttb_outcome_clear(ttb_outcome_t *out);

#endif
