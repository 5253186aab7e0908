/* SPDX-License-Identifier: MIT */
/*
 * Error codes. The protocol's codes are part of the public contract
 * (spec/protocol.md): their wire names must never change, and the set that
 * also sends a record to the dead-letter topic is fixed there. Both live in
 * one table indexed by ttb_code_t so that adding a code means adding one row.
 * The library's own TTB_ERR_* return codes only need a human description.
 */
#include "tinytown_bridge/error.h"

#include <stddef.h>
#include <string.h>

typedef struct code_row {
    const char *name;
    /* Dead letters are the records the bridge could not even start to apply:
     * the producer sent something malformed or not allowed, so an operator
     * has to look at the original bytes. Errors about the town's state are
     * ordinary answers. */
    bool dead_letter;
} code_row_t;

static const code_row_t code_rows[TTB_CODE__COUNT] = {
    [TTB_CODE_OK] = {"ok", false},
    [TTB_CODE_INVALID_JSON] = {"invalid_json", true},
    [TTB_CODE_INVALID_COMMAND] = {"invalid_command", true},
    [TTB_CODE_UNKNOWN_OP] = {"unknown_op", true},
    [TTB_CODE_TOO_LARGE] = {"too_large", true},
    [TTB_CODE_UNKNOWN_TOWN] = {"unknown_town", true},
    [TTB_CODE_FORBIDDEN] = {"forbidden", true},
    [TTB_CODE_RESERVED_NAME] = {"reserved_name", false},
    [TTB_CODE_NAME_CONFLICT] = {"name_conflict", false},
    [TTB_CODE_AGENT_NOT_FOUND] = {"agent_not_found", false},
    [TTB_CODE_AMBIGUOUS_AGENT] = {"ambiguous_agent", false},
    [TTB_CODE_INVALID_STATE] = {"invalid_state", false},
    [TTB_CODE_INTERNAL] = {"internal", false},
};

static bool code_is_valid(ttb_code_t code) {
    /* The enum may be signed or unsigned depending on the compiler: compare
     * as an int so both ends are checked without a tautology warning. */
    int c = (int)code;
    return c >= 0 && c < (int)TTB_CODE__COUNT;
}

const char *ttb_code_name(ttb_code_t code) {
    /* Never NULL: callers put the name straight into headers and logs, and a
     * value that is not a code must not crash them. "unknown" is not a wire
     * name, so it cannot be mistaken for one when read back. */
    if (!code_is_valid(code)) return "unknown";
    return code_rows[code].name;
}

int ttb_code_from_name(const char *name, ttb_code_t *out) {
    if (name == NULL) return TTB_ERR_INVALID;
    for (int i = 0; i < (int)TTB_CODE__COUNT; i++) {
        if (strcmp(name, code_rows[i].name) == 0) {
            if (out != NULL) *out = (ttb_code_t)i;
            return TTB_OK;
        }
    }
    return TTB_ERR_INVALID;
}

bool ttb_code_is_dead_letter(ttb_code_t code) {
    return code_is_valid(code) && code_rows[code].dead_letter;
}

const char *ttb_err_str(int err) {
    switch (err) {
    case TTB_OK: return "success";
    case TTB_ERR_NOMEM: return "out of memory";
    case TTB_ERR_IO: return "Redis unreachable or connection lost";
    case TTB_ERR_PROTO: return "unexpected reply from Redis";
    case TTB_ERR_INVALID: return "invalid argument or input";
    case TTB_ERR_NOTFOUND: return "not found";
    case TTB_ERR_DENIED: return "refused by Redis (credentials, certificate or ACL)";
    default: return "unknown error";
    }
}
