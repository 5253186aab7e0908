/* SPDX-License-Identifier: MIT */
/*
 * The task model: a unit of work in `tt:{town}:task:{id}`, read the way
 * tinytown's `parse_task_from_hash` reads it and written as its serde JSON.
 * No I/O.
 *
 * The bridge only reads tasks (get_result looks for an agent's latest
 * completed one), but reads them as leniently as tinytown: an unknown state
 * is pending (the old spelling `in_flight` is running), created_at and
 * updated_at default to "now" independently, a bad optional time or id is
 * absent, and tags that are not a JSON array of strings are no tags. Strings
 * follow the agent codec's rules (cut at a NUL byte, invalid UTF-8 replaced).
 */
#include "tinytown_bridge/task.h"

#include <stdlib.h>
#include <string.h>

#include "model.h"
#include "tinytown_bridge/error.h"

static const char *const state_names[] = {
    "pending", "assigned", "running", "completed", "failed", "cancelled",
};
#define STATE_COUNT (sizeof state_names / sizeof state_names[0])

const char *ttb_task_state_name(ttb_task_state_t state) {
    return (unsigned)state < STATE_COUNT ? state_names[state] : "pending";
}

int ttb_task_state_parse(const char *s, size_t len, ttb_task_state_t *out) {
    if (s == NULL) return TTB_ERR_INVALID;
    for (size_t i = 0; i < STATE_COUNT; i++) {
        if (strlen(state_names[i]) == len && memcmp(state_names[i], s, len) == 0) {
            *out = (ttb_task_state_t)i;
            return TTB_OK;
        }
    }
    /* serde alias of Running, from before the state was renamed. */
    if (len == 9 && memcmp(s, "in_flight", 9) == 0) {
        *out = TTB_TASK_RUNNING;
        return TTB_OK;
    }
    return TTB_ERR_INVALID;
}

bool ttb_task_state_is_terminal(ttb_task_state_t state) {
    return state == TTB_TASK_COMPLETED || state == TTB_TASK_FAILED || state == TTB_TASK_CANCELLED;
}

void ttb_task_clear(ttb_task_t *task) {
    if (task == NULL) return;
    free(task->description);
    free(task->result);
    for (size_t i = 0; i < task->ntags; i++) free(task->tags[i]);
    free(task->tags);
    memset(task, 0, sizeof *task);
}

/*
 * tinytown reads tags with serde_json as a Vec<String>: the value must be a
 * JSON array whose elements are all strings; anything else means no tags.
 * @returns false only when out of memory.
 */
static bool decode_tags(const char *s, size_t len, ttb_task_t *task) {
    /* JSON_ALLOW_NUL: serde accepts "\u0000" in a string; the tag is then cut
     * there like every other string. */
    json_t *arr = json_loadb(s, len, JSON_ALLOW_NUL, NULL);
    if (arr == NULL || !json_is_array(arr)) {
        json_decref(arr);
        return true;
    }
    size_t count = json_array_size(arr);
    for (size_t i = 0; i < count; i++) {
        if (!json_is_string(json_array_get(arr, i))) {
            json_decref(arr);
            return true;
        }
    }
    if (count > 0) {
        task->tags = calloc(count, sizeof *task->tags);
        if (task->tags == NULL) {
            json_decref(arr);
            return false;
        }
    }
    for (size_t i = 0; i < count; i++) {
        json_t *tag = json_array_get(arr, i);
        task->tags[i] = ttb_model_strdup(json_string_value(tag), json_string_length(tag));
        if (task->tags[i] == NULL) {
            json_decref(arr);
            return false;
        }
        task->ntags = i + 1;
    }
    json_decref(arr);
    return true;
}

int ttb_task_from_hash(ttb_task_t *task, const char *const *strs, const size_t *lens, size_t n,
                       ttb_time_t now) {
    if (task == NULL) return TTB_ERR_INVALID;
    memset(task, 0, sizeof *task);

    ttb_task_t t;
    memset(&t, 0, sizeof t);
    const char *v;
    size_t vlen;
    char text[16];
    if (!ttb_model_hash_get(strs, lens, n, "id", &v, &vlen) ||
        ttb_uuid_parse(v, vlen, t.id) != TTB_OK)
        return TTB_ERR_INVALID;

    if (ttb_model_hash_get(strs, lens, n, "description", &v, &vlen))
        t.description = ttb_model_strdup(v, vlen);
    else
        t.description = ttb_model_strdup("", 0);
    if (t.description == NULL) goto nomem;

    if (ttb_model_hash_get(strs, lens, n, "result", &v, &vlen)) {
        t.result = ttb_model_strdup(v, vlen);
        if (t.result == NULL) goto nomem;
    }

    t.state = TTB_TASK_PENDING;
    if (ttb_model_hash_get(strs, lens, n, "state", &v, &vlen) &&
        ttb_model_enum_text(v, vlen, text, sizeof text)) {
        ttb_task_state_t state;
        if (ttb_task_state_parse(text, strlen(text), &state) == TTB_OK) t.state = state;
    }

    ttb_model_hash_id(strs, lens, n, "assigned_to", t.assigned_to);
    ttb_model_hash_id(strs, lens, n, "parent_id", t.parent_id);

    if (!ttb_model_hash_time(strs, lens, n, "created_at", &t.created_at)) t.created_at = now;
    if (!ttb_model_hash_time(strs, lens, n, "updated_at", &t.updated_at)) t.updated_at = now;
    t.has_started_at = ttb_model_hash_time(strs, lens, n, "started_at", &t.started_at);
    t.has_completed_at = ttb_model_hash_time(strs, lens, n, "completed_at", &t.completed_at);

    if (ttb_model_hash_get(strs, lens, n, "tags", &v, &vlen) && !decode_tags(v, vlen, &t))
        goto nomem;

    *task = t;
    return TTB_OK;

nomem:
    ttb_task_clear(&t);
    return TTB_ERR_NOMEM;
}

static json_t *json_opt_time(bool has, ttb_time_t t) {
    return has ? ttb_model_json_time(t) : json_null();
}

json_t *ttb_task_to_json(const ttb_task_t *task) {
    if (task == NULL) return NULL;
    json_t *obj = json_object();
    if (obj == NULL) return NULL;
    bool ok = true;
    ttb_model_json_set(obj, "id", json_string(task->id), &ok);
    ttb_model_json_set(obj, "description",
                       ttb_model_json_string(task->description ? task->description : ""), &ok);
    ttb_model_json_set(obj, "state", json_string(ttb_task_state_name(task->state)), &ok);
    ttb_model_json_set(obj, "assigned_to", ttb_model_json_id(task->assigned_to), &ok);
    ttb_model_json_set(obj, "created_at", ttb_model_json_time(task->created_at), &ok);
    ttb_model_json_set(obj, "updated_at", ttb_model_json_time(task->updated_at), &ok);
    ttb_model_json_set(obj, "started_at", json_opt_time(task->has_started_at, task->started_at),
                       &ok);
    ttb_model_json_set(obj, "completed_at",
                       json_opt_time(task->has_completed_at, task->completed_at), &ok);
    ttb_model_json_set(obj, "result", ttb_model_json_string(task->result), &ok);
    ttb_model_json_set(obj, "parent_id", ttb_model_json_id(task->parent_id), &ok);

    json_t *tags = json_array();
    for (size_t i = 0; tags != NULL && i < task->ntags; i++) {
        json_t *tag = ttb_model_json_string(task->tags[i] ? task->tags[i] : "");
        if (json_array_append_new(tags, tag) != 0) {
            json_decref(tags);
            tags = NULL;
        }
    }
    ttb_model_json_set(obj, "tags", tags, &ok);

    if (!ok) {
        json_decref(obj);
        return NULL;
    }
    return obj;
}
