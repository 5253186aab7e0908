/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for what the bridge reads back from Redis: agent and task
 * hashes as HGETALL returns them, the RFC 3339 timestamps and UUIDs inside
 * them, and the agent references resolved against a directory of agents.
 * Whatever tinytown, a second bridge or a stray HSET left in Redis comes
 * through these decoders, so they must take any bytes.
 *
 * Input format (kept simple so that seeds are readable and libFuzzer's
 * mutations stay meaningful): the first byte is a separator; the rest is
 * split on it into elements. An element "--" ends one hash and starts the
 * next (at most MAX_HASHES); "(nil)" stands for a NULL string in the reply
 * array. Each hash is decoded as an agent and as a task; the agents decoded
 * form the directory; every element is also parsed as a timestamp, a UUID
 * and a reference. Each element lives in its own allocation of exactly its
 * length (not NUL-terminated), so that reading past a value is an ASan error.
 *
 * Besides the sanitizers' findings, the target aborts when a decoder breaks
 * a promise the rest of the bridge relies on: decoded records hold canonical
 * ids and valid UTF-8; encoding a decoded agent as tinytown's hash and
 * decoding it again gives the same agent; JSON encodings succeed, keep
 * tinytown's field order and survive a dump and reload; a timestamp written
 * back parses to the same instant; resolution finds every agent by id, name,
 * label and short id and explains every failure in a bounded UTF-8 message.
 */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/agent.h"
#include "tinytown_bridge/task.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define MAX_ELEMS 256
#define MAX_HASHES 8

/* "Now" as the decoders see it; fixed so that a run is reproducible. */
static const ttb_time_t NOW = {INT64_C(1795503060), 123000000};

/* The input split into elements. */
typedef struct input {
    size_t n;
    char *elem[MAX_ELEMS];  /**< exactly len[i] bytes, or NULL for "(nil)" */
    size_t len[MAX_ELEMS];
    char *cstr[MAX_ELEMS];  /**< the same bytes NUL-terminated ("" for NULL) */
    size_t nhashes;
    size_t start[MAX_HASHES], end[MAX_HASHES]; /**< element ranges of each hash */
} input_t;

#define CHECK(cond)                                                                             \
    do {                                                                                        \
        if (!(cond)) abort();                                                                   \
    } while (0)

/* ------------------------------------------------------------------------ */
/* Helpers                                                                   */
/* ------------------------------------------------------------------------ */

/* Strict UTF-8 (no overlongs, surrogates or code points past U+10FFFF). */
static bool is_utf8(const char *str, size_t len) {
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t need;
        unsigned char lo = 0x80, hi = 0xbf;
        if (c < 0x80) {
            i++;
            continue;
        } else if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            need = 2;
            if (c == 0xe0) lo = 0xa0;
            if (c == 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            need = 3;
            if (c == 0xf0) lo = 0x90;
            if (c == 0xf4) hi = 0x8f;
        } else {
            return false;
        }
        if (len - i <= need) return false;
        if (s[i + 1] < lo || s[i + 1] > hi) return false;
        for (size_t k = 2; k <= need; k++) {
            if (s[i + k] < 0x80 || s[i + k] > 0xbf) return false;
        }
        i += need + 1;
    }
    return true;
}

static bool is_cstr_utf8(const char *s) {
    return s != NULL && is_utf8(s, strlen(s));
}

static bool str_eq(const char *a, const char *b) {
    if (a == NULL || b == NULL) return a == b;
    return strcmp(a, b) == 0;
}

/* An optional id: "" (absent) or canonical. */
static bool is_opt_id(const char *id) {
    return id[0] == '\0' || ttb_uuid_is_canonical(id, strlen(id));
}

static bool time_eq(ttb_time_t a, ttb_time_t b) {
    return a.sec == b.sec && a.nsec == b.nsec;
}

/*
 * Does @p t, written back as tinytown writes it, read as itself? It does,
 * except for instants whose UTC year left 0..9999 through an offset
 * (0000-01-01T00:00:00+01:00): chrono writes those with a signed year that
 * RFC 3339 (and chrono's parser) refuses, so tinytown loses them the same way.
 */
static bool time_survives(ttb_time_t t) {
    char buf[TTB_TIME_BUFSZ];
    size_t len = ttb_time_format_hash(t, buf);
    CHECK(len > 0 && len < TTB_TIME_BUFSZ && len == strlen(buf));
    ttb_time_t back;
    if (ttb_time_parse(buf, len, &back) == TTB_OK) {
        CHECK(time_eq(back, t));
        return true;
    }
    CHECK(buf[0] == '+' || buf[0] == '-');
    return false;
}

/* A decoded instant: normalised, and written the same way in both forms. */
static void check_time(ttb_time_t t) {
    CHECK(t.nsec >= 0 && t.nsec < 1000000000);
    char hash[TTB_TIME_BUFSZ], json[TTB_TIME_BUFSZ];
    size_t hlen = ttb_time_format_hash(t, hash);
    size_t jlen = ttb_time_format_json(t, json);
    CHECK(hlen == strlen(hash) && jlen == strlen(json));
    CHECK(hlen == jlen + 5 && memcmp(hash, json, jlen - 1) == 0);
    CHECK(json[jlen - 1] == 'Z' && strcmp(hash + hlen - 6, "+00:00") == 0);
    if (time_survives(t)) {
        ttb_time_t back;
        CHECK(ttb_time_parse(json, jlen, &back) == TTB_OK && time_eq(back, t));
    }
    CHECK(ttb_time_cmp(t, t) == 0);
}

/* A JSON string member @p key of @p obj holding an instant equal to @p t. */
static void check_json_time(const json_t *obj, const char *key, ttb_time_t t) {
    const json_t *v = json_object_get(obj, key);
    CHECK(json_is_string(v));
    ttb_time_t back;
    if (ttb_time_parse(json_string_value(v), json_string_length(v), &back) == TTB_OK)
        CHECK(time_eq(back, t));
    else
        CHECK(!time_survives(t));
}

/*
 * A JSON object the bridge publishes: its keys exactly @p keys in that
 * order, and a compact dump of it reloads (duplicate keys refused) equal.
 */
static void check_json_object(const json_t *obj, const char *const *keys, size_t nkeys) {
    CHECK(json_is_object(obj) && json_object_size(obj) == nkeys);
    size_t i = 0;
    for (void *it = json_object_iter((json_t *)(uintptr_t)obj); it != NULL;
         it = json_object_iter_next((json_t *)(uintptr_t)obj, it)) {
        CHECK(i < nkeys && strcmp(json_object_iter_key(it), keys[i]) == 0);
        i++;
    }
    CHECK(i == nkeys);
    char *text = json_dumps(obj, JSON_COMPACT);
    CHECK(text != NULL && is_utf8(text, strlen(text)));
    json_error_t jerr;
    json_t *back = json_loads(text, JSON_REJECT_DUPLICATES, &jerr);
    CHECK(back != NULL && json_equal(back, obj));
    json_decref(back);
    free(text);
}

/* ------------------------------------------------------------------------ */
/* Agents                                                                    */
/* ------------------------------------------------------------------------ */

static void check_agent(const ttb_agent_t *a) {
    CHECK(ttb_uuid_is_canonical(a->id, strlen(a->id)));
    CHECK(is_cstr_utf8(a->name) && is_cstr_utf8(a->cli));
    CHECK(a->nickname == NULL || is_cstr_utf8(a->nickname));
    CHECK(a->role_id == NULL || is_cstr_utf8(a->role_id));
    CHECK(is_opt_id(a->parent_agent_id) && is_opt_id(a->current_task));
    CHECK((unsigned)a->state < TTB_STATE__COUNT);
    CHECK(a->agent_type == TTB_AGENT_WORKER || a->agent_type == TTB_AGENT_SUPERVISOR);
    CHECK(a->spawn_mode == TTB_SPAWN_FRESH || a->spawn_mode == TTB_SPAWN_FORKED_CONTEXT ||
          a->spawn_mode == TTB_SPAWN_RESUMED);
    check_time(a->created_at);
    check_time(a->last_heartbeat);
    check_time(a->last_active_at);

    /* Names and classes of the state agree with each other. */
    ttb_agent_state_t back;
    const char *name = ttb_agent_state_name(a->state);
    CHECK(ttb_agent_state_parse(name, strlen(name), &back) == TTB_OK && back == a->state);
    CHECK(!(ttb_agent_state_is_terminal(a->state) && ttb_agent_state_is_active(a->state)));
    CHECK(ttb_agent_state_title(a->state)[0] != '\0');

    char label[64];
    size_t full = ttb_agent_display_label(a, label, sizeof label);
    size_t want = strlen(ttb_agent_display_name(a)) + strlen(" [") + 1;
    CHECK(full >= want && strlen(label) == (full < sizeof label ? full : sizeof label - 1));
    char short_id[5];
    ttb_agent_short_id(a, short_id);
    CHECK(strlen(short_id) == 4 && memcmp(short_id, a->id, 4) == 0);
    CHECK(ttb_nickname_from_id(a->id) != NULL);
}

/*
 * Encodes @p a as tinytown's save does, decodes the encoding again and
 * compares: the bridge must read back exactly what it writes.
 */
static void check_agent_hash_roundtrip(const ttb_agent_t *a) {
    ttb_agent_hash_t h;
    ttb_agent_to_hash(a, &h);
    CHECK(h.nset + h.ndel == TTB_AGENT_HASH_MAX && h.nset >= 11 && h.nset <= TTB_AGENT_HASH_MAX);

    const char *strs[2 * TTB_AGENT_HASH_MAX];
    size_t lens[2 * TTB_AGENT_HASH_MAX];
    for (size_t i = 0; i < h.nset; i++) {
        CHECK(h.field[i] != NULL && h.value[i] != NULL);
        CHECK(h.value_len[i] == strlen(h.value[i]));
        /* tinytown never writes an optional empty; it deletes it. */
        for (size_t k = 0; k < h.ndel; k++) CHECK(strcmp(h.field[i], h.del[k]) != 0);
        strs[2 * i] = h.field[i];
        lens[2 * i] = strlen(h.field[i]);
        strs[2 * i + 1] = h.value[i];
        lens[2 * i + 1] = h.value_len[i];
    }
    CHECK(strcmp(h.field[0], "id") == 0 && strcmp(h.value[0], a->id) == 0);

    ttb_agent_t b;
    CHECK(ttb_agent_from_hash(&b, strs, lens, 2 * h.nset, NOW) == TTB_OK);
    CHECK(strcmp(a->id, b.id) == 0);
    CHECK(str_eq(a->name, b.name) && str_eq(a->cli, b.cli));
    CHECK(str_eq(a->nickname, b.nickname) && str_eq(a->role_id, b.role_id));
    CHECK(strcmp(a->parent_agent_id, b.parent_agent_id) == 0);
    CHECK(strcmp(a->current_task, b.current_task) == 0);
    CHECK(a->state == b.state && a->agent_type == b.agent_type && a->spawn_mode == b.spawn_mode);
    CHECK(a->tasks_completed == b.tasks_completed && a->rounds_completed == b.rounds_completed);

    /* Instants tinytown cannot write readably come back as the reader's
     * fallbacks, exactly as they would through tinytown. */
    ttb_time_t created = time_survives(a->created_at) ? a->created_at : NOW;
    ttb_time_t heartbeat = time_survives(a->last_heartbeat) ? a->last_heartbeat : NOW;
    ttb_time_t active = time_survives(a->last_active_at) ? a->last_active_at : created;
    CHECK(time_eq(b.created_at, created));
    CHECK(time_eq(b.last_heartbeat, heartbeat));
    CHECK(time_eq(b.last_active_at, active));
    ttb_agent_clear(&b);
}

static const char *const AGENT_KEYS[] = {
    "id",      "name",         "nickname",   "role_id",        "parent_agent_id",
    "spawn_mode", "agent_type", "state",    "cli",            "current_task",
    "created_at", "last_heartbeat", "tasks_completed", "rounds_completed", "last_active_at",
    "inbox_len", "urgent_len", "current_scope",
};

static void check_agent_json(const ttb_agent_t *a, const char *scope) {
    json_t *j = ttb_agent_to_json(a);
    CHECK(j != NULL);
    check_json_object(j, AGENT_KEYS, 15);
    CHECK(strcmp(json_string_value(json_object_get(j, "id")), a->id) == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "name")), a->name) == 0);
    CHECK(strcmp(json_string_value(json_object_get(j, "state")),
                 ttb_agent_state_name(a->state)) == 0);
    CHECK(json_is_null(json_object_get(j, "nickname")) == (a->nickname == NULL));
    CHECK(json_is_null(json_object_get(j, "current_task")) == (a->current_task[0] == '\0'));
    check_json_time(j, "created_at", a->created_at);
    check_json_time(j, "last_heartbeat", a->last_heartbeat);
    check_json_time(j, "last_active_at", a->last_active_at);
    json_int_t tasks = json_integer_value(json_object_get(j, "tasks_completed"));
    CHECK(tasks >= 0 && (a->tasks_completed > (uint64_t)INT64_MAX || (uint64_t)tasks == a->tasks_completed));
    json_decref(j);

    /* current_scope is a task description: any decoded string. */
    j = ttb_agent_info_to_json(a, 3, 0, scope);
    CHECK(j != NULL);
    check_json_object(j, AGENT_KEYS, 18);
    CHECK(json_is_null(json_object_get(j, "current_scope")) == (scope == NULL));
    json_decref(j);
}

/* ------------------------------------------------------------------------ */
/* Tasks                                                                     */
/* ------------------------------------------------------------------------ */

static const char *const TASK_KEYS[] = {
    "id",         "description", "state",  "assigned_to", "created_at", "updated_at",
    "started_at", "completed_at", "result", "parent_id",   "tags",
};

static void check_task(const ttb_task_t *t) {
    CHECK(ttb_uuid_is_canonical(t->id, strlen(t->id)));
    CHECK(is_cstr_utf8(t->description));
    CHECK(t->result == NULL || is_cstr_utf8(t->result));
    CHECK(is_opt_id(t->assigned_to) && is_opt_id(t->parent_id));
    CHECK(t->state >= TTB_TASK_PENDING && t->state <= TTB_TASK_CANCELLED);
    const char *name = ttb_task_state_name(t->state);
    ttb_task_state_t back;
    CHECK(ttb_task_state_parse(name, strlen(name), &back) == TTB_OK && back == t->state);
    check_time(t->created_at);
    check_time(t->updated_at);
    if (t->has_started_at) check_time(t->started_at);
    if (t->has_completed_at) check_time(t->completed_at);
    CHECK((t->ntags == 0) == (t->tags == NULL));
    for (size_t i = 0; i < t->ntags; i++) CHECK(is_cstr_utf8(t->tags[i]));

    json_t *j = ttb_task_to_json(t);
    CHECK(j != NULL);
    check_json_object(j, TASK_KEYS, 11);
    CHECK(strcmp(json_string_value(json_object_get(j, "description")), t->description) == 0);
    CHECK(json_is_null(json_object_get(j, "started_at")) == !t->has_started_at);
    CHECK(json_is_null(json_object_get(j, "result")) == (t->result == NULL));
    check_json_time(j, "updated_at", t->updated_at);
    if (t->has_completed_at) check_json_time(j, "completed_at", t->completed_at);
    const json_t *tags = json_object_get(j, "tags");
    CHECK(json_is_array(tags) && json_array_size(tags) == t->ntags);
    for (size_t i = 0; i < t->ntags; i++)
        CHECK(strcmp(json_string_value(json_array_get(tags, i)), t->tags[i]) == 0);
    json_decref(j);
}

/* ------------------------------------------------------------------------ */
/* References                                                                */
/* ------------------------------------------------------------------------ */

/*
 * Resolves @p ref three times: with a roomy message buffer, with a small one
 * and with none. The answer must not depend on the buffer; a small buffer
 * holds a prefix of the full message; a message is never empty and, when the
 * reference is UTF-8, never splits a character.
 * @returns the code, and *index on TTB_CODE_OK.
 */
static ttb_code_t resolve(const ttb_agent_t *agents, size_t n, const char *ref, size_t *index) {
    static char full[16384];
    char small[48];
    size_t i_full = SIZE_MAX, i_small = SIZE_MAX, i_none = SIZE_MAX;
    size_t small_size = 1 + strlen(ref) % sizeof small;
    ttb_code_t c_full = ttb_agent_resolve(agents, n, ref, &i_full, full, sizeof full);
    ttb_code_t c_small = ttb_agent_resolve(agents, n, ref, &i_small, small, small_size);
    ttb_code_t c_none = ttb_agent_resolve(agents, n, ref, &i_none, NULL, 0);
    CHECK(c_full == c_small && c_full == c_none);
    CHECK(i_full == i_small && i_full == i_none);

    size_t tlen;
    const char *trimmed = ttb_str_trim(ref, &tlen);
    CHECK(trimmed >= ref && trimmed + tlen <= ref + strlen(ref));
    bool utf8 = is_cstr_utf8(ref);
    switch (c_full) {
    case TTB_CODE_OK:
        CHECK(i_full < n);
        *index = i_full;
        break;
    case TTB_CODE_AGENT_NOT_FOUND:
        CHECK(strncmp(full, "agent '", 7) == 0);
        if (7 + tlen + 11 < sizeof full) {
            CHECK(strlen(full) == 7 + tlen + strlen("' not found"));
            CHECK(memcmp(full + 7, trimmed, tlen) == 0);
        }
        break;
    case TTB_CODE_AMBIGUOUS_AGENT:
        CHECK(n >= 2 && strncmp(full, "agent reference '", 17) == 0);
        break;
    default:
        abort();
    }
    if (c_full != TTB_CODE_OK) {
        size_t flen = strlen(full), slen = strlen(small);
        CHECK(flen > 0 && flen < sizeof full);
        CHECK(slen < small_size && memcmp(small, full, slen) == 0);
        /* Only a character that did not fit may be dropped beyond the cut. */
        CHECK(slen == flen || slen + 4 > small_size - 1);
        if (utf8) CHECK(is_utf8(full, flen) && is_utf8(small, slen));
    }
    return c_full;
}

/* Every agent can be named by its id, and by its name, label and short id
 * when those are what a user could type (nothing to trim, not a UUID). */
static void check_directory(const ttb_agent_t *agents, size_t n) {
    for (size_t i = 0; i < n; i++) {
        const ttb_agent_t *a = &agents[i];
        size_t index = SIZE_MAX;
        CHECK(resolve(agents, n, a->id, &index) == TTB_CODE_OK);
        CHECK(strcmp(agents[index].id, a->id) == 0);
        for (size_t k = 0; k < index; k++) CHECK(strcmp(agents[k].id, a->id) != 0);

        char label[2048];
        size_t full = ttb_agent_display_label(a, label, sizeof label);
        char short_id[5];
        ttb_agent_short_id(a, short_id);
        const char *names[] = {a->name, ttb_agent_display_name(a), full < sizeof label ? label : "",
                               short_id};
        for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
            size_t tlen;
            const char *t = ttb_str_trim(names[k], &tlen);
            char id[TTB_UUID_BUFSZ];
            if (tlen == 0 || t != names[k] || tlen != strlen(names[k])) continue;
            if (ttb_agent_ref_as_uuid(names[k], id)) continue;
            CHECK(resolve(agents, n, names[k], &index) != TTB_CODE_AGENT_NOT_FOUND);
        }
    }
}

/* ------------------------------------------------------------------------ */
/* Single values                                                             */
/* ------------------------------------------------------------------------ */

/* One value from a hash: as a timestamp, a UUID, a reference and raw time. */
static void check_value(const char *s, size_t len, const char *cstr) {
    ttb_time_t t;
    if (ttb_time_parse(s, len, &t) == TTB_OK) check_time(t);

    char id[TTB_UUID_BUFSZ];
    if (ttb_uuid_parse(s, len, id) == TTB_OK) {
        CHECK(ttb_uuid_is_canonical(id, strlen(id)));
        unsigned char b[16];
        CHECK(ttb_uuid_bytes(id, strlen(id), b) == TTB_OK);
        CHECK(ttb_nickname_from_id(id) != NULL);
    } else {
        CHECK(!ttb_uuid_is_canonical(s, len));
    }
    if (ttb_agent_ref_as_uuid(cstr, id)) CHECK(ttb_uuid_is_canonical(id, strlen(id)));
    (void)ttb_agent_name_is_reserved(cstr);

    /* Any bit pattern in a ttb_time_t: formatting stays in its buffer. */
    if (len >= 12) {
        ttb_time_t raw;
        memcpy(&raw.sec, s, sizeof raw.sec);
        memcpy(&raw.nsec, s + 8, sizeof raw.nsec);
        char buf[TTB_TIME_BUFSZ];
        CHECK(ttb_time_format_hash(raw, buf) < TTB_TIME_BUFSZ);
        CHECK(ttb_time_format_json(raw, buf) < TTB_TIME_BUFSZ);
        CHECK(ttb_time_cmp(raw, raw) == 0);
        int64_t ms;
        memcpy(&ms, s, sizeof ms);
        ttb_time_t from = ttb_time_from_ms(ms);
        CHECK(from.nsec >= 0 && from.nsec < 1000000000 && from.nsec % 1000000 == 0);
        /* Exact away from the ends of int64, where to_ms saturates. */
        if (ms > INT64_MIN / 2 && ms < INT64_MAX / 2) CHECK(ttb_time_to_ms(from) == ms);
    }
}

/* ------------------------------------------------------------------------ */
/* Input                                                                     */
/* ------------------------------------------------------------------------ */

static void input_free(input_t *in) {
    for (size_t i = 0; i < in->n; i++) {
        free(in->elem[i]);
        free(in->cstr[i]);
    }
}

/* Splits the input; false when out of memory. */
static bool input_split(input_t *in, const uint8_t *data, size_t size) {
    memset(in, 0, sizeof *in);
    if (size == 0) return true;
    uint8_t sep = data[0];
    const uint8_t *p = data + 1, *end = data + size;
    in->nhashes = 1;
    while (in->n < MAX_ELEMS) {
        const uint8_t *q = memchr(p, sep, (size_t)(end - p));
        size_t len = (size_t)((q != NULL ? q : end) - p);
        if (len == 2 && memcmp(p, "--", 2) == 0) {
            if (in->nhashes == MAX_HASHES) break;
            in->end[in->nhashes - 1] = in->n;
            in->start[in->nhashes++] = in->n;
        } else {
            size_t i = in->n++;
            bool nil = len == 5 && memcmp(p, "(nil)", 5) == 0;
            /* malloc(0) may return NULL: give empty values one byte that is
             * never read, so that NULL means only "(nil)". */
            in->elem[i] = nil ? NULL : malloc(len > 0 ? len : 1);
            in->len[i] = nil ? 0 : len;
            in->cstr[i] = malloc(len + 1);
            if ((!nil && in->elem[i] == NULL) || in->cstr[i] == NULL) return false;
            if (!nil && len > 0) memcpy(in->elem[i], p, len);
            if (nil) len = 0;
            memcpy(in->cstr[i], p, len);
            in->cstr[i][len] = '\0';
        }
        if (q == NULL) break;
        p = q + 1;
    }
    in->end[in->nhashes - 1] = in->n;
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static input_t in;
    if (!input_split(&in, data, size)) {
        input_free(&in);
        return 0;
    }

    ttb_agent_t agents[MAX_HASHES];
    size_t nagents = 0;
    for (size_t h = 0; h < in.nhashes; h++) {
        const char *const *strs = (const char *const *)&in.elem[in.start[h]];
        const size_t *lens = &in.len[in.start[h]];
        size_t n = in.end[h] - in.start[h];

        ttb_agent_t *a = &agents[nagents];
        int arc = ttb_agent_from_hash(a, strs, lens, n, NOW);
        CHECK(arc == TTB_OK || arc == TTB_ERR_INVALID || arc == TTB_ERR_NOMEM);
        ttb_task_t task;
        int trc = ttb_task_from_hash(&task, strs, lens, n, NOW);
        CHECK(trc == TTB_OK || trc == TTB_ERR_INVALID || trc == TTB_ERR_NOMEM);
        /* Both readers skip exactly the hashes without a parsable id. */
        if (arc != TTB_ERR_NOMEM && trc != TTB_ERR_NOMEM) CHECK((arc == TTB_OK) == (trc == TTB_OK));

        if (trc == TTB_OK) check_task(&task);
        if (arc == TTB_OK) {
            check_agent(a);
            check_agent_hash_roundtrip(a);
            check_agent_json(a, trc == TTB_OK ? task.description : NULL);
            nagents++;
        }
        ttb_task_clear(&task);
    }

    check_directory(agents, nagents);
    for (size_t i = 0; i < in.n; i++) {
        size_t index;
        check_value(in.elem[i], in.len[i], in.cstr[i]);
        (void)resolve(agents, nagents, in.cstr[i], &index);
    }

    for (size_t i = 0; i < nagents; i++) ttb_agent_clear(&agents[i]);
    input_free(&in);
    return 0;
}
