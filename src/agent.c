/* SPDX-License-Identifier: MIT */
/*
 * The agent model: what an agent is in tinytown and how it looks in Redis and
 * in JSON. No I/O.
 *
 * An agent lives in the hash `tt:{town}:agent:{id}`. tinytown's reader of that
 * hash (`parse_agent_from_hash` in its channel.rs) is lenient and the bridge
 * must read every hash exactly as it does, or the two would disagree about
 * the same agent: unknown enum values fall back to a default, a bad timestamp
 * becomes "now", a bad optional id is simply absent, and only a missing or
 * unparsable `id` makes the hash unreadable. Writing is exact: the field set,
 * the field order and every value's text are what tinytown's save produces.
 *
 * Two deliberate differences, because C strings cannot hold what Rust's can:
 * a value is cut at its first NUL byte, and invalid UTF-8 (which tinytown's
 * Redis client would refuse, failing the whole read) is replaced by U+FFFD.
 *
 * People name agents loosely — by name, nickname, display label or the first
 * four characters of the id — so references are resolved here too, with
 * tinytown's rules (`resolve_agent_ref`), including its "ambiguous" answer.
 *
 * This file also holds the hash-reading and JSON helpers shared with task.c
 * (declared in model.h).
 */
#include "tinytown_bridge/agent.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "nicknames.h"

/* ------------------------------------------------------------------------ */
/* Shared helpers (model.h)                                                  */
/* ------------------------------------------------------------------------ */

bool ttb_model_hash_get(const char *const *strs, const size_t *lens, size_t n, const char *field,
                        const char **val, size_t *len) {
    if (strs == NULL || lens == NULL) return false;
    size_t flen = strlen(field);
    bool found = false;
    /* Walk every pair so that the last occurrence of a field wins. */
    for (size_t i = 0; i + 1 < n; i += 2) {
        if (strs[i] == NULL || strs[i + 1] == NULL) continue;
        if (lens[i] == flen && memcmp(strs[i], field, flen) == 0) {
            *val = strs[i + 1];
            *len = lens[i + 1];
            found = true;
        }
    }
    return found;
}

bool ttb_model_parse_u64(const char *s, size_t len, uint64_t *out) {
    size_t i = 0;
    if (len > 0 && s[0] == '+') i = 1;
    if (i == len) return false; /* "" and "+" are not numbers */
    uint64_t v = 0;
    for (; i < len; i++) {
        if (s[i] < '0' || s[i] > '9') return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10) return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

bool ttb_model_enum_text(const char *s, size_t len, char *out, size_t size) {
    if (size == 0) return false;
    size_t o = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        unsigned cp;
        if (c == '\\') {
            /* Only \uXXXX can yield a letter or '_'; every other escape yields
             * a character no enum name contains. */
            if (len - i < 6 || s[i + 1] != 'u') return false;
            cp = 0;
            for (size_t k = 2; k < 6; k++) {
                int h = hex_digit(s[i + k]);
                if (h < 0) return false;
                cp = cp << 4 | (unsigned)h;
            }
            i += 5;
        } else {
            cp = c;
        }
        /* A raw quote ends the JSON string early, a control character is not
         * allowed in one, and non-ASCII cannot match: none reads as an enum. */
        if (cp == '"' || cp < 0x20 || cp >= 0x80) return false;
        if (o + 1 >= size) return false;
        out[o++] = (char)cp;
    }
    out[o] = '\0';
    return true;
}

/*
 * Length of the longest prefix of s[0..len) that is a valid UTF-8 sequence
 * start, per Unicode's "maximal subpart" rule: returns the length of the
 * complete character at s (1..4) and sets *valid, or the number of bytes to
 * replace by one U+FFFD (at least 1) and clears *valid.
 */
static size_t utf8_step(const unsigned char *s, size_t len, bool *valid) {
    unsigned char c = s[0];
    size_t need;
    unsigned char lo = 0x80, hi = 0xbf; /* allowed range of the second byte */
    if (c < 0x80) {
        *valid = true;
        return 1;
    } else if (c >= 0xc2 && c <= 0xdf) {
        need = 2;
    } else if (c >= 0xe0 && c <= 0xef) {
        need = 3;
        if (c == 0xe0) lo = 0xa0;
        if (c == 0xed) hi = 0x9f; /* no surrogates */
    } else if (c >= 0xf0 && c <= 0xf4) {
        need = 4;
        if (c == 0xf0) lo = 0x90;
        if (c == 0xf4) hi = 0x8f; /* nothing past U+10FFFF */
    } else {
        *valid = false;
        return 1;
    }
    for (size_t k = 1; k < need; k++) {
        unsigned char b = k < len ? s[k] : 0;
        bool ok = k < len && (k == 1 ? (b >= lo && b <= hi) : (b >= 0x80 && b <= 0xbf));
        if (!ok) {
            *valid = false;
            return k;
        }
    }
    *valid = true;
    return need;
}

char *ttb_model_strdup(const char *s, size_t len) {
    if (s == NULL) len = 0;
    const char *nul = len > 0 ? memchr(s, '\0', len) : NULL;
    if (nul != NULL) len = (size_t)(nul - s);

    bool all_valid = true;
    for (size_t i = 0; i < len;) {
        bool valid;
        i += utf8_step((const unsigned char *)s + i, len - i, &valid);
        if (!valid) {
            all_valid = false;
            break;
        }
    }
    if (all_valid) {
        char *copy = malloc(len + 1);
        if (copy == NULL) return NULL;
        if (len > 0) memcpy(copy, s, len);
        copy[len] = '\0';
        return copy;
    }

    /* Each invalid byte becomes at most the three bytes of U+FFFD. */
    char *copy = malloc(3 * len + 1);
    if (copy == NULL) return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        bool valid;
        size_t step = utf8_step((const unsigned char *)s + i, len - i, &valid);
        if (valid) {
            memcpy(copy + o, s + i, step);
            o += step;
        } else {
            memcpy(copy + o, "\xef\xbf\xbd", 3);
            o += 3;
        }
        i += step;
    }
    copy[o] = '\0';
    return copy;
}

bool ttb_model_hash_time(const char *const *strs, const size_t *lens, size_t n, const char *field,
                         ttb_time_t *out) {
    const char *v;
    size_t vlen;
    return ttb_model_hash_get(strs, lens, n, field, &v, &vlen) &&
           ttb_time_parse(v, vlen, out) == TTB_OK;
}

bool ttb_model_hash_id(const char *const *strs, const size_t *lens, size_t n, const char *field,
                       char out[TTB_UUID_BUFSZ]) {
    const char *v;
    size_t vlen;
    out[0] = '\0';
    if (!ttb_model_hash_get(strs, lens, n, field, &v, &vlen)) return false;
    if (ttb_uuid_parse(v, vlen, out) != TTB_OK) {
        out[0] = '\0';
        return false;
    }
    return true;
}

void ttb_model_json_set(json_t *obj, const char *key, json_t *value, bool *ok) {
    if (!*ok || value == NULL) {
        json_decref(value);
        *ok = false;
        return;
    }
    /* json_object_set_new() releases value itself when it fails. */
    if (json_object_set_new(obj, key, value) != 0) *ok = false;
}

json_t *ttb_model_json_string(const char *s) {
    if (s == NULL) return json_null();
    json_t *j = json_string(s);
    if (j != NULL) return j;
    /* jansson refuses invalid UTF-8; write what a lossy reader would see. */
    char *clean = ttb_model_strdup(s, strlen(s));
    if (clean == NULL) return NULL;
    j = json_string(clean);
    free(clean);
    return j;
}

json_t *ttb_model_json_id(const char *id) {
    if (id == NULL || id[0] == '\0') return json_null();
    return json_string(id);
}

json_t *ttb_model_json_time(ttb_time_t t) {
    char buf[TTB_TIME_BUFSZ];
    size_t len = ttb_time_format_json(t, buf);
    return json_stringn(buf, len);
}

/* ------------------------------------------------------------------------ */
/* States, types, spawn modes                                                */
/* ------------------------------------------------------------------------ */

static const char *const state_names[TTB_STATE__COUNT] = {
    "cold", "starting", "idle", "working", "paused", "draining", "stopped", "error",
};

static const char *const state_titles[TTB_STATE__COUNT] = {
    "Cold", "Starting", "Idle", "Working", "Paused", "Draining", "Stopped", "Error",
};

static const char *const type_names[] = {"worker", "supervisor"};
#define TYPE_COUNT (sizeof type_names / sizeof type_names[0])

static const char *const spawn_names[] = {"fresh", "forkedcontext", "resumed"};
#define SPAWN_COUNT (sizeof spawn_names / sizeof spawn_names[0])

/* Exact match of @p s against @p names; the index or -1. */
static int name_index(const char *const *names, size_t count, const char *s, size_t len) {
    if (s == NULL) return -1;
    for (size_t i = 0; i < count; i++) {
        if (strlen(names[i]) == len && memcmp(names[i], s, len) == 0) return (int)i;
    }
    return -1;
}

const char *ttb_agent_state_name(ttb_agent_state_t state) {
    return (unsigned)state < TTB_STATE__COUNT ? state_names[state] : "starting";
}

const char *ttb_agent_state_title(ttb_agent_state_t state) {
    return (unsigned)state < TTB_STATE__COUNT ? state_titles[state] : "Starting";
}

int ttb_agent_state_parse(const char *s, size_t len, ttb_agent_state_t *out) {
    int i = name_index(state_names, TTB_STATE__COUNT, s, len);
    if (i < 0) return TTB_ERR_INVALID;
    *out = (ttb_agent_state_t)i;
    return TTB_OK;
}

bool ttb_agent_state_is_terminal(ttb_agent_state_t state) {
    return state == TTB_STATE_STOPPED || state == TTB_STATE_ERROR || state == TTB_STATE_COLD;
}

bool ttb_agent_state_accepts_work(ttb_agent_state_t state) {
    return state == TTB_STATE_IDLE;
}

bool ttb_agent_state_is_active(ttb_agent_state_t state) {
    switch (state) {
    case TTB_STATE_STARTING:
    case TTB_STATE_IDLE:
    case TTB_STATE_WORKING:
    case TTB_STATE_PAUSED:
    case TTB_STATE_DRAINING:
        return true;
    default:
        return false;
    }
}

const char *ttb_agent_type_name(ttb_agent_type_t type) {
    return (unsigned)type < TYPE_COUNT ? type_names[type] : "worker";
}

const char *ttb_spawn_mode_name(ttb_spawn_mode_t mode) {
    return (unsigned)mode < SPAWN_COUNT ? spawn_names[mode] : "fresh";
}

int ttb_spawn_mode_parse(const char *s, size_t len, ttb_spawn_mode_t *out) {
    int i = name_index(spawn_names, SPAWN_COUNT, s, len);
    if (i < 0) return TTB_ERR_INVALID;
    *out = (ttb_spawn_mode_t)i;
    return TTB_OK;
}

/* ------------------------------------------------------------------------ */
/* Record and hash codec                                                     */
/* ------------------------------------------------------------------------ */

void ttb_agent_clear(ttb_agent_t *agent) {
    if (agent == NULL) return;
    free(agent->name);
    free(agent->nickname);
    free(agent->role_id);
    free(agent->cli);
    memset(agent, 0, sizeof *agent);
}

/*
 * An enum field as tinytown reads it: the value decoded as a JSON string and
 * matched exactly against the names; the index, or -1 (missing or unknown),
 * in which case the caller uses the type's default.
 */
static int hash_enum(const char *const *strs, const size_t *lens, size_t n, const char *field,
                     const char *const *names, size_t count) {
    const char *v;
    size_t vlen;
    char text[16];
    if (!ttb_model_hash_get(strs, lens, n, field, &v, &vlen)) return -1;
    if (!ttb_model_enum_text(v, vlen, text, sizeof text)) return -1;
    return name_index(names, count, text, strlen(text));
}

static uint64_t hash_u64(const char *const *strs, const size_t *lens, size_t n,
                         const char *field) {
    const char *v;
    size_t vlen;
    uint64_t out = 0;
    if (!ttb_model_hash_get(strs, lens, n, field, &v, &vlen)) return 0;
    if (!ttb_model_parse_u64(v, vlen, &out)) return 0;
    return out;
}

/*
 * A string field into *dst: a copy of the value when present; when absent,
 * a copy of @p dflt, or NULL if @p dflt is NULL (an absent optional).
 * @returns false only when out of memory.
 */
static bool hash_string(const char *const *strs, const size_t *lens, size_t n, const char *field,
                        const char *dflt, char **dst) {
    const char *v;
    size_t vlen;
    *dst = NULL;
    if (ttb_model_hash_get(strs, lens, n, field, &v, &vlen)) {
        *dst = ttb_model_strdup(v, vlen);
    } else if (dflt != NULL) {
        *dst = ttb_model_strdup(dflt, strlen(dflt));
    } else {
        return true;
    }
    return *dst != NULL;
}

int ttb_agent_from_hash(ttb_agent_t *agent, const char *const *strs, const size_t *lens, size_t n,
                        ttb_time_t now) {
    if (agent == NULL) return TTB_ERR_INVALID;
    memset(agent, 0, sizeof *agent);

    ttb_agent_t a;
    memset(&a, 0, sizeof a);
    const char *v;
    size_t vlen;
    if (!ttb_model_hash_get(strs, lens, n, "id", &v, &vlen) ||
        ttb_uuid_parse(v, vlen, a.id) != TTB_OK)
        return TTB_ERR_INVALID;

    if (!hash_string(strs, lens, n, "name", "", &a.name) ||
        !hash_string(strs, lens, n, "cli", "", &a.cli) ||
        !hash_string(strs, lens, n, "nickname", NULL, &a.nickname) ||
        !hash_string(strs, lens, n, "role_id", NULL, &a.role_id)) {
        ttb_agent_clear(&a);
        return TTB_ERR_NOMEM;
    }

    int i = hash_enum(strs, lens, n, "agent_type", type_names, TYPE_COUNT);
    a.agent_type = i < 0 ? TTB_AGENT_WORKER : (ttb_agent_type_t)i;
    i = hash_enum(strs, lens, n, "state", state_names, TTB_STATE__COUNT);
    a.state = i < 0 ? TTB_STATE_STARTING : (ttb_agent_state_t)i;
    i = hash_enum(strs, lens, n, "spawn_mode", spawn_names, SPAWN_COUNT);
    a.spawn_mode = i < 0 ? TTB_SPAWN_FRESH : (ttb_spawn_mode_t)i;

    ttb_model_hash_id(strs, lens, n, "current_task", a.current_task);
    ttb_model_hash_id(strs, lens, n, "parent_agent_id", a.parent_agent_id);

    if (!ttb_model_hash_time(strs, lens, n, "created_at", &a.created_at)) a.created_at = now;
    if (!ttb_model_hash_time(strs, lens, n, "last_heartbeat", &a.last_heartbeat))
        a.last_heartbeat = now;
    /* Hashes written before last_active_at existed fall back to created_at. */
    if (!ttb_model_hash_time(strs, lens, n, "last_active_at", &a.last_active_at))
        a.last_active_at = a.created_at;

    a.tasks_completed = hash_u64(strs, lens, n, "tasks_completed");
    a.rounds_completed = hash_u64(strs, lens, n, "rounds_completed");

    *agent = a;
    return TTB_OK;
}

static void hash_set(ttb_agent_hash_t *out, const char *field, const char *value, size_t len) {
    out->field[out->nset] = field;
    out->value[out->nset] = value;
    out->value_len[out->nset] = len;
    out->nset++;
}

static void hash_set_str(ttb_agent_hash_t *out, const char *field, const char *value) {
    if (value == NULL) value = "";
    hash_set(out, field, value, strlen(value));
}

void ttb_agent_to_hash(const ttb_agent_t *agent, ttb_agent_hash_t *out) {
    memset(out, 0, sizeof *out);
    char *p = out->buf;

    hash_set_str(out, "id", agent->id);
    hash_set_str(out, "name", agent->name);
    hash_set_str(out, "agent_type", ttb_agent_type_name(agent->agent_type));
    hash_set_str(out, "state", ttb_agent_state_name(agent->state));
    hash_set_str(out, "cli", agent->cli);

    const struct {
        const char *field;
        ttb_time_t t;
    } times[] = {{"created_at", agent->created_at}, {"last_heartbeat", agent->last_heartbeat}};
    for (size_t i = 0; i < 2; i++) {
        size_t len = ttb_time_format_hash(times[i].t, p);
        hash_set(out, times[i].field, p, len);
        p += TTB_TIME_BUFSZ;
    }

    int len = snprintf(p, 21, "%llu", (unsigned long long)agent->tasks_completed);
    hash_set(out, "tasks_completed", p, (size_t)len);
    p += 21;
    len = snprintf(p, 21, "%llu", (unsigned long long)agent->rounds_completed);
    hash_set(out, "rounds_completed", p, (size_t)len);
    p += 21;

    size_t tlen = ttb_time_format_hash(agent->last_active_at, p);
    hash_set(out, "last_active_at", p, tlen);

    hash_set_str(out, "spawn_mode", ttb_spawn_mode_name(agent->spawn_mode));

    /* Optionals: present ones are set, absent ones deleted, never written empty. */
    if (agent->current_task[0] != '\0')
        hash_set_str(out, "current_task", agent->current_task);
    else
        out->del[out->ndel++] = "current_task";
    if (agent->nickname != NULL)
        hash_set_str(out, "nickname", agent->nickname);
    else
        out->del[out->ndel++] = "nickname";
    if (agent->role_id != NULL)
        hash_set_str(out, "role_id", agent->role_id);
    else
        out->del[out->ndel++] = "role_id";
    if (agent->parent_agent_id[0] != '\0')
        hash_set_str(out, "parent_agent_id", agent->parent_agent_id);
    else
        out->del[out->ndel++] = "parent_agent_id";
}

/* ------------------------------------------------------------------------ */
/* JSON                                                                      */
/* ------------------------------------------------------------------------ */

/* A u64 counter as a JSON integer; jansson's integers are signed 64-bit, so a
 * counter past INT64_MAX (never reached in practice) is written as INT64_MAX. */
static json_t *json_counter(uint64_t v) {
    return json_integer(v > (uint64_t)INT64_MAX ? (json_int_t)INT64_MAX : (json_int_t)v);
}

/* Appends the Agent fields, in tinytown's (serde's) order, to @p obj. */
static void agent_fields(json_t *obj, const ttb_agent_t *agent, bool *ok) {
    ttb_model_json_set(obj, "id", json_string(agent->id), ok);
    ttb_model_json_set(obj, "name", ttb_model_json_string(agent->name ? agent->name : ""), ok);
    ttb_model_json_set(obj, "nickname", ttb_model_json_string(agent->nickname), ok);
    ttb_model_json_set(obj, "role_id", ttb_model_json_string(agent->role_id), ok);
    ttb_model_json_set(obj, "parent_agent_id", ttb_model_json_id(agent->parent_agent_id), ok);
    ttb_model_json_set(obj, "spawn_mode", json_string(ttb_spawn_mode_name(agent->spawn_mode)),
                       ok);
    ttb_model_json_set(obj, "agent_type", json_string(ttb_agent_type_name(agent->agent_type)),
                       ok);
    ttb_model_json_set(obj, "state", json_string(ttb_agent_state_name(agent->state)), ok);
    ttb_model_json_set(obj, "cli", ttb_model_json_string(agent->cli ? agent->cli : ""), ok);
    ttb_model_json_set(obj, "current_task", ttb_model_json_id(agent->current_task), ok);
    ttb_model_json_set(obj, "created_at", ttb_model_json_time(agent->created_at), ok);
    ttb_model_json_set(obj, "last_heartbeat", ttb_model_json_time(agent->last_heartbeat), ok);
    ttb_model_json_set(obj, "tasks_completed", json_counter(agent->tasks_completed), ok);
    ttb_model_json_set(obj, "rounds_completed", json_counter(agent->rounds_completed), ok);
    ttb_model_json_set(obj, "last_active_at", ttb_model_json_time(agent->last_active_at), ok);
}

json_t *ttb_agent_to_json(const ttb_agent_t *agent) {
    if (agent == NULL) return NULL;
    json_t *obj = json_object();
    if (obj == NULL) return NULL;
    bool ok = true;
    agent_fields(obj, agent, &ok);
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

json_t *ttb_agent_info_to_json(const ttb_agent_t *agent, long long inbox_len, long long urgent_len,
                               const char *current_scope) {
    if (agent == NULL) return NULL;
    json_t *obj = json_object();
    if (obj == NULL) return NULL;
    bool ok = true;
    agent_fields(obj, agent, &ok);
    ttb_model_json_set(obj, "inbox_len", json_integer((json_int_t)inbox_len), &ok);
    ttb_model_json_set(obj, "urgent_len", json_integer((json_int_t)urgent_len), &ok);
    ttb_model_json_set(obj, "current_scope", ttb_model_json_string(current_scope), &ok);
    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}

/* ------------------------------------------------------------------------ */
/* Nickname, display name and label                                          */
/* ------------------------------------------------------------------------ */

const char *ttb_nickname_from_id(const char *id) {
    unsigned char b[16];
    if (id == NULL || ttb_uuid_bytes(id, strlen(id), b) != TTB_OK) return NULL;
    unsigned index = ((unsigned)b[0] * 256 + b[1]) % (2 * TTB_NICKNAMES_PER_LIST);
    return index < TTB_NICKNAMES_PER_LIST ? ttb_nicknames_boys[index]
                                          : ttb_nicknames_girls[index - TTB_NICKNAMES_PER_LIST];
}

static const char *agent_name(const ttb_agent_t *agent) {
    return agent->name != NULL ? agent->name : "";
}

const char *ttb_agent_display_name(const ttb_agent_t *agent) {
    return agent->nickname != NULL ? agent->nickname : agent_name(agent);
}

const char *ttb_agent_effective_role(const ttb_agent_t *agent) {
    return agent->role_id != NULL ? agent->role_id : "default";
}

/* What goes between the brackets of the label: the role, or the canonical
 * name when the role is "default" (set explicitly or not). */
static const char *label_bracket(const ttb_agent_t *agent) {
    const char *role = ttb_agent_effective_role(agent);
    return strcmp(role, "default") == 0 ? agent_name(agent) : role;
}

size_t ttb_agent_display_label(const ttb_agent_t *agent, char *buf, size_t size) {
    const char *display = ttb_agent_display_name(agent);
    const char *bracket = label_bracket(agent);
    size_t full = strlen(display) + 2 + strlen(bracket) + 1;
    if (buf != NULL && size > 0) snprintf(buf, size, "%s [%s]", display, bracket);
    return full;
}

void ttb_agent_short_id(const ttb_agent_t *agent, char out[5]) {
    size_t i = 0;
    for (; i < 4 && agent->id[i] != '\0'; i++) out[i] = agent->id[i];
    out[i] = '\0';
}

/* ------------------------------------------------------------------------ */
/* Trimming, reserved names, references                                      */
/* ------------------------------------------------------------------------ */

/* Byte length of the Unicode White_Space character at the start of s[0..len),
 * or 0 if there is none. */
static size_t space_at(const unsigned char *s, size_t len) {
    if (len >= 1 && ((s[0] >= 0x09 && s[0] <= 0x0d) || s[0] == 0x20)) return 1;
    if (len >= 2 && s[0] == 0xc2 && (s[1] == 0x85 || s[1] == 0xa0)) return 2;
    if (len >= 3) {
        if (s[0] == 0xe1 && s[1] == 0x9a && s[2] == 0x80) return 3; /* U+1680 */
        if (s[0] == 0xe2 && s[1] == 0x80 &&
            (s[2] <= 0x8a || s[2] == 0xa8 || s[2] == 0xa9 || s[2] == 0xaf) && s[2] >= 0x80)
            return 3; /* U+2000..U+200A, U+2028, U+2029, U+202F */
        if (s[0] == 0xe2 && s[1] == 0x81 && s[2] == 0x9f) return 3; /* U+205F */
        if (s[0] == 0xe3 && s[1] == 0x80 && s[2] == 0x80) return 3; /* U+3000 */
    }
    return 0;
}

/* Byte length of the White_Space character that ends s[0..len), or 0. */
static size_t space_before(const unsigned char *s, size_t len) {
    for (size_t k = 1; k <= 3 && k <= len; k++) {
        if (space_at(s + len - k, k) == k) return k;
    }
    return 0;
}

const char *ttb_str_trim(const char *s, size_t *len) {
    if (s == NULL) {
        *len = 0;
        return "";
    }
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    size_t k;
    while ((k = space_at(p, n)) > 0) {
        p += k;
        n -= k;
    }
    while ((k = space_before(p, n)) > 0) n -= k;
    *len = n;
    return (const char *)p;
}

/* Rust's eq_ignore_ascii_case on byte strings. */
static bool eq_ascii_ci(const char *a, size_t alen, const char *b, size_t blen) {
    if (alen != blen) return false;
    for (size_t i = 0; i < alen; i++) {
        unsigned char x = (unsigned char)a[i], y = (unsigned char)b[i];
        if (x >= 'A' && x <= 'Z') x = (unsigned char)(x + 32);
        if (y >= 'A' && y <= 'Z') y = (unsigned char)(y + 32);
        if (x != y) return false;
    }
    return true;
}

bool ttb_agent_name_is_reserved(const char *name) {
    size_t len;
    const char *t = ttb_str_trim(name, &len);
    /* Rust's Unicode to_lowercase() maps no non-ASCII character onto the ASCII
     * letters of these two words, so folding ASCII case is exact here. */
    return eq_ascii_ci(t, len, "supervisor", 10) || eq_ascii_ci(t, len, "conductor", 9);
}

bool ttb_agent_ref_as_uuid(const char *ref, char out[TTB_UUID_BUFSZ]) {
    size_t len;
    const char *t = ttb_str_trim(ref, &len);
    if (eq_ascii_ci(t, len, "supervisor", 10) || eq_ascii_ci(t, len, "conductor", 9)) {
        memcpy(out, TTB_UUID_SUPERVISOR, TTB_UUID_BUFSZ);
        return true;
    }
    return ttb_uuid_parse(t, len, out) == TTB_OK;
}

/* Does the reference equal the agent's display label, ignoring ASCII case?
 * Compared piecewise so that no label has to be built. */
static bool label_matches(const ttb_agent_t *agent, const char *ref, size_t len) {
    const char *display = ttb_agent_display_name(agent);
    const char *bracket = label_bracket(agent);
    size_t dl = strlen(display), bl = strlen(bracket);
    if (len != dl + 2 + bl + 1) return false;
    return eq_ascii_ci(ref, dl, display, dl) && eq_ascii_ci(ref + dl, 2, " [", 2) &&
           eq_ascii_ci(ref + dl + 2, bl, bracket, bl) && ref[len - 1] == ']';
}

static bool agent_matches(const ttb_agent_t *agent, const char *ref, size_t len) {
    const char *name = agent_name(agent);
    const char *display = ttb_agent_display_name(agent);
    char short_id[5];
    ttb_agent_short_id(agent, short_id);
    return eq_ascii_ci(name, strlen(name), ref, len) ||
           eq_ascii_ci(display, strlen(display), ref, len) || label_matches(agent, ref, len) ||
           eq_ascii_ci(short_id, strlen(short_id), ref, len);
}

/* A message being written into a caller's errstr: bounded, always
 * NUL-terminated, and never cut inside a UTF-8 character (it ends up in JSON). */
typedef struct msg {
    char *buf;
    size_t size;
    size_t len;
    bool truncated;
} msg_t;

static void msg_put(msg_t *m, const char *s, size_t n) {
    if (m->buf == NULL || m->size == 0 || m->truncated) return;
    size_t room = m->size - 1 - m->len;
    if (n > room) {
        n = room;
        m->truncated = true;
    }
    memcpy(m->buf + m->len, s, n);
    m->len += n;
    m->buf[m->len] = '\0';
    if (!m->truncated) return;
    /* Drop a character whose bytes did not all fit. */
    size_t start = m->len;
    while (start > 0 && m->len - start < 3 && ((unsigned char)m->buf[start - 1] & 0xc0) == 0x80)
        start--;
    if (start == 0) return;
    unsigned char lead = (unsigned char)m->buf[start - 1];
    size_t want = lead >= 0xf0 ? 4 : lead >= 0xe0 ? 3 : lead >= 0xc0 ? 2 : 1;
    if (start - 1 + want > m->len) {
        m->len = start - 1;
        m->buf[m->len] = '\0';
    }
}

static void msg_puts(msg_t *m, const char *s) {
    msg_put(m, s, strlen(s));
}

ttb_code_t ttb_agent_resolve(const ttb_agent_t *agents, size_t n, const char *ref, size_t *index,
                             char *errstr, size_t errstr_size) {
    msg_t m = {errstr, errstr_size, 0, false};
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';

    size_t len;
    const char *t = ttb_str_trim(ref, &len);
    size_t found = 0, first = 0;

    if (len > 0) {
        char id[TTB_UUID_BUFSZ];
        bool by_id = ttb_uuid_parse(t, len, id) == TTB_OK;
        /* One agent with exactly this name wins over looser matches. */
        for (size_t i = 0; i < n && !by_id; i++) {
            const char *name = agent_name(&agents[i]);
            if (strlen(name) != len || memcmp(name, t, len) != 0) continue;
            if (found++ == 0) first = i;
        }
        if (found == 1) {
            if (index != NULL) *index = first;
            return TTB_CODE_OK;
        }
        found = 0;
        for (size_t i = 0; i < n; i++) {
            bool hit = by_id ? strcmp(agents[i].id, id) == 0 : agent_matches(&agents[i], t, len);
            if (!hit) continue;
            if (found++ == 0) first = i;
            /* An id names one agent: tinytown reads that one hash and stops. */
            if (by_id) break;
        }
    }

    if (found == 1) {
        if (index != NULL) *index = first;
        return TTB_CODE_OK;
    }
    if (found == 0) {
        msg_puts(&m, "agent '");
        msg_put(&m, t, len);
        msg_puts(&m, "' not found");
        return TTB_CODE_AGENT_NOT_FOUND;
    }

    msg_puts(&m, "agent reference '");
    msg_put(&m, t, len);
    msg_puts(&m, "' is ambiguous: ");
    bool sep = false;
    for (size_t i = first; i < n; i++) {
        if (!agent_matches(&agents[i], t, len)) continue;
        char short_id[5];
        ttb_agent_short_id(&agents[i], short_id);
        if (sep) msg_puts(&m, ", ");
        sep = true;
        msg_puts(&m, ttb_agent_display_name(&agents[i]));
        msg_puts(&m, " [");
        msg_puts(&m, label_bracket(&agents[i]));
        msg_puts(&m, "] (");
        msg_puts(&m, short_id);
        msg_puts(&m, ")");
    }
    return TTB_CODE_AMBIGUOUS_AGENT;
}
