/* SPDX-License-Identifier: MIT */
/**
 * @file directory.h
 * @brief One town's agents, kept in memory between batches.
 *
 * Resolving an agent reference by name needs every agent of the town. Reading
 * them all from Redis for every round made a command cost O(agents); the
 * directory keeps them instead. It is filled by one SCAN, then kept current
 * by the bridge's own writes and by keyspace notifications for everyone
 * else's: a notified agent is marked dirty and re-read, alone, before the
 * directory is next used. It is never trusted blindly: the scripts check that
 * the agent a reference was resolved to still has the name, nickname and role
 * the directory saw (see transition.lua), and the bridge re-reads and resolves
 * again when it does not.
 *
 * Lookups by id, by exact name and by name in any case (a spawn's name
 * check) are hash lookups; only a reference that is not exactly one agent's
 * name (a nickname, a label, a short id, a name held twice, no match) walks
 * the agents, as ttb_agent_resolve does.
 *
 * It keeps only what resolution and listings choose by: each agent's id,
 * name, nickname, role, state and created_at (about 120 bytes an agent), not
 * the whole agent. A listing picks its page here, in listing order, and reads
 * only the agents on it.
 *
 * Not thread-safe; owned by the service, on the bridge's main thread.
 */
#ifndef TINYTOWN_BRIDGE_DIRECTORY_H
#define TINYTOWN_BRIDGE_DIRECTORY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/agent.h"
#include "tinytown_bridge/error.h"

typedef struct ttb_directory ttb_directory_t;

/** What the directory saw of an agent's identity, byte for byte as stored
 * (the decoded agent may differ: cut at a NUL, invalid UTF-8 replaced). */
typedef struct ttb_dir_seen {
    const char *name;     /**< the raw `name` field, "" when absent */
    const char *nickname; /**< the raw `nickname` field, "" when absent */
    const char *role_id;  /**< the raw `role_id` field, "" when absent */
    const char *key;      /**< what follows tt:{town}:agent: in its key, when that is
                               not its id (a hash written by hand); else NULL */
} ttb_dir_seen_t;

ttb_directory_t *ttb_dir_new(void);
void ttb_dir_free(ttb_directory_t *dir);

/** Forgets every agent and every dirty mark; the directory is then invalid
 * (to be filled again by a SCAN) until ttb_dir_set_valid. */
void ttb_dir_clear(ttb_directory_t *dir);
bool ttb_dir_valid(const ttb_directory_t *dir);
/** Marks the directory as filled at @p now_ms (see ttb_dir_age_ms). */
void ttb_dir_set_valid(ttb_directory_t *dir, int64_t now_ms);
/** Milliseconds since the directory was last filled by a SCAN. */
int64_t ttb_dir_age_ms(const ttb_directory_t *dir, int64_t now_ms);

/**
 * Adds @p agent, or replaces the agent with its id. The directory copies the
 * agent's id, name, nickname and role_id, then clears @p agent. @p seen is
 * copied; NULL means the decoded fields are the stored ones.
 * @returns 0 or TTB_ERR_NOMEM (@p agent is cleared either way).
 */
int ttb_dir_put(ttb_directory_t *dir, ttb_agent_t *agent, const ttb_dir_seen_t *seen);
/** Removes the agent with id @p id, if there is one. */
void ttb_dir_remove(ttb_directory_t *dir, const char *id);

size_t ttb_dir_count(const ttb_directory_t *dir);
/** Agent @p index (0 <= index < count; no particular order): its id, name,
 * nickname and role_id, borrowed until the next change, its state and
 * created_at; every other field is zero. */
ttb_agent_t ttb_dir_agent(const ttb_directory_t *dir, size_t index);
/** Whether the directory has agent @p id, and if so its @p index. */
bool ttb_dir_index(const ttb_directory_t *dir, const char *id, size_t *index);
/** The id of agent @p index (0 <= index < count). */
const char *ttb_dir_id(const ttb_directory_t *dir, size_t index);
/**
 * The agents whose name equals @p name ignoring ASCII case (a spawn's name
 * check): up to @p max of their ids into @p ids (borrowed until the next
 * change). @returns how many there are.
 */
size_t ttb_dir_name_holders(const ttb_directory_t *dir, const char *name, const char **ids,
                            size_t max);
/**
 * Marks agent @p id as being changed by the bridge: it is read again before
 * the directory is next used (as a notified agent is, and once even when its
 * notification comes too), and until then its state is unknown. Unlike a
 * notification this never makes the directory invalid, so it is safe while
 * commands are being resolved against it.
 * @returns 0 or TTB_ERR_NOMEM (then the agent is not marked).
 */
int ttb_dir_mark_changing(ttb_directory_t *dir, const char *id);
/** Whether agent @p index's state is unknown: marked by ttb_dir_touch or
 * ttb_dir_mark_changing, and not read again since. */
bool ttb_dir_unsure(const ttb_directory_t *dir, size_t index);

/**
 * The agents in listing order (created_at, then id; oldest first): count
 * indexes into the directory, in @p order, valid until the next change.
 * Sorting happens here, and only when agents came out of order since the
 * last call (new agents are usually the newest, and are simply appended).
 * @returns 0 or TTB_ERR_NOMEM.
 */
int ttb_dir_in_order(ttb_directory_t *dir, const uint32_t **order);
/** The position in @p order (from ttb_dir_in_order) of the first agent after
 * (@p created_at, @p id) in listing order; count when there is none. */
size_t ttb_dir_seek(const ttb_directory_t *dir, const uint32_t *order, ttb_time_t created_at,
                    const char *id);

/** The stored identity of agent @p index (0 <= index < count). */
ttb_dir_seen_t ttb_dir_seen(const ttb_directory_t *dir, size_t index);

/** ttb_agent_resolve over the directory's agents, with the same answers. */
ttb_code_t ttb_dir_resolve(const ttb_directory_t *dir, const char *ref, size_t *index,
                           char *errstr, size_t errstr_size);

/**
 * Marks agent @p id (of @p len bytes, not NUL-terminated) to be re-read
 * before the directory is next used. Many marks at once (a prune of
 * thousands) make the directory invalid instead: one SCAN is cheaper then.
 * @returns 0 or TTB_ERR_NOMEM (then the directory is made invalid).
 */
int ttb_dir_touch(ttb_directory_t *dir, const char *id, size_t len);
/** The ids marked dirty, each once; valid until the next change. */
size_t ttb_dir_dirty(ttb_directory_t *dir, const char *const **ids);
void ttb_dir_clear_dirty(ttb_directory_t *dir);

#endif
