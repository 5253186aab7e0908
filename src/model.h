/* SPDX-License-Identifier: MIT */
/*
 * Internal: pieces of tinytown's lenient hash reader and of the JSON writer
 * that the agent and task codecs share (implemented in agent.c). Not part of
 * the public API; only agent.c and task.c include this.
 */
#ifndef TTB_MODEL_H
#define TTB_MODEL_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "tinytown_bridge/rfc3339.h"
#include "tinytown_bridge/uuid.h"

/**
 * Looks up @p field in an HGETALL reply (@p n strings alternating field and
 * value). A field given more than once yields its last value, as a map built
 * from the reply would. Pairs with a NULL string are skipped.
 * @returns true and sets *val and *len when present.
 */
bool ttb_model_hash_get(const char *const *strs, const size_t *lens, size_t n, const char *field,
                        const char **val, size_t *len);

/** Rust's `u64::from_str`: optional '+', then 1+ ASCII digits, no overflow. */
bool ttb_model_parse_u64(const char *s, size_t len, uint64_t *out);

/**
 * tinytown reads its enum fields with `serde_json::from_str("\"" + value + "\"")`,
 * so a value is the contents of a JSON string: `\u0069dle` reads as `idle`.
 * Decodes @p s that way into @p out (NUL-terminated, at most @p size - 1
 * bytes). @returns false when the result is not plain ASCII that fits, which
 * can never match an enum name (a malformed string included).
 */
bool ttb_model_enum_text(const char *s, size_t len, char *out, size_t size);

/**
 * Copies a hash value into a new NUL-terminated string: the bytes before the
 * first NUL, with invalid UTF-8 replaced by U+FFFD as Rust's
 * `String::from_utf8_lossy` does. @returns the copy (caller frees) or NULL
 * when out of memory.
 */
char *ttb_model_strdup(const char *s, size_t len);

/** Decodes a timestamp field; false when absent or not RFC 3339. */
bool ttb_model_hash_time(const char *const *strs, const size_t *lens, size_t n, const char *field,
                         ttb_time_t *out);

/**
 * Decodes an optional id field into @p out (canonical), or leaves "" when it
 * is absent or not a UUID. @returns true when an id was stored.
 */
bool ttb_model_hash_id(const char *const *strs, const size_t *lens, size_t n, const char *field,
                       char out[TTB_UUID_BUFSZ]);

/**
 * Sets @p key of @p obj to @p value, taking ownership of it. A NULL @p value
 * (a failed allocation upstream) or a failed set clears *ok; later calls then
 * only release their value, so a builder checks *ok once at the end.
 */
void ttb_model_json_set(json_t *obj, const char *key, json_t *value, bool *ok);

/** @returns a JSON string of @p s (lossy on invalid UTF-8), JSON null for NULL, or NULL on NOMEM. */
json_t *ttb_model_json_string(const char *s);

/** @returns a JSON string of the id, or JSON null when @p id is "" (an absent optional id). */
json_t *ttb_model_json_id(const char *id);

/** @returns the instant in JSON form (`Z`) as a JSON string. */
json_t *ttb_model_json_time(ttb_time_t t);

#endif
