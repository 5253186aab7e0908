/* SPDX-License-Identifier: MIT */
/*
 * Command records: the bridge's input from Kafka, parsed and validated in
 * full before anything touches Redis, and the result records it answers
 * with. The input is hostile by assumption (any producer may write to the
 * commands topic), so validation is strict where it protects the town: the
 * town name is used verbatim inside Redis keys, an agent's name and nickname
 * end up in tinytown's terminals and logs, and a typo in an argument must not
 * silently become a default. Error messages describe the record without ever
 * echoing more than a short, escaped piece of it, because they travel on in
 * result records, Kafka headers and log lines. No I/O happens here.
 */
#include "tinytown_bridge/command.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Arguments an op may take; each op's row (ops.def) holds the set it accepts. */
enum {
    ARG_NAME = 1u << 0,
    ARG_CLI = 1u << 1,
    ARG_ROLE_ID = 1u << 2,
    ARG_NICKNAME = 1u << 3,
    ARG_PARENT = 1u << 4,
    ARG_SPAWN_MODE = 1u << 5,
    ARG_AGENT = 1u << 6,
    ARG_TIMEOUT_MS = 1u << 7,
    ARG_ALL = 1u << 8,
    ARG_LIMIT = 1u << 9,
    ARG_AFTER = 1u << 10,
    ARG_PAGE = ARG_LIMIT | ARG_AFTER,
};

static const struct {
    const char *name;
    unsigned bit;
} arg_rows[] = {
    {"name", ARG_NAME},         {"cli", ARG_CLI},
    {"role_id", ARG_ROLE_ID},   {"nickname", ARG_NICKNAME},
    {"parent", ARG_PARENT},     {"spawn_mode", ARG_SPAWN_MODE},
    {"agent", ARG_AGENT},       {"timeout_ms", ARG_TIMEOUT_MS},
    {"all", ARG_ALL},           {"limit", ARG_LIMIT},
    {"after", ARG_AFTER},
};

typedef struct op_row {
    const char *name;
    bool mutating;
    unsigned args;
} op_row_t;

static const op_row_t op_rows[TTB_OP__COUNT] = {
#define TTB_OP_ROW(id, name, mutating, args, how, member, takes) [TTB_OP_##id] = {name, mutating, args},
#include "tinytown_bridge/ops.def"
#undef TTB_OP_ROW
};

static bool op_is_valid(ttb_op_t op) {
    int o = (int)op;
    return o >= 0 && o < (int)TTB_OP__COUNT;
}

const char *ttb_op_name(ttb_op_t op) {
    /* Never NULL, so that a stray value cannot crash a log line. */
    return op_is_valid(op) ? op_rows[op].name : "unknown";
}

int ttb_op_parse(const char *s, ttb_op_t *out) {
    if (s == NULL) return TTB_ERR_INVALID;
    for (int i = 0; i < (int)TTB_OP__COUNT; i++) {
        if (strcmp(s, op_rows[i].name) == 0) {
            if (out != NULL) *out = (ttb_op_t)i;
            return TTB_OK;
        }
    }
    return TTB_ERR_INVALID;
}

bool ttb_op_is_mutating(ttb_op_t op) { return op_is_valid(op) && op_rows[op].mutating; }

bool ttb_op_takes_agent(ttb_op_t op) { return op_is_valid(op) && (op_rows[op].args & ARG_AGENT); }

/* ---- echoing hostile input ------------------------------------------------ */

/* At most this many bytes of a record's text appear in a message. */
#define ECHO_MAX 64
/* Room for ECHO_MAX bytes escaped (4 each), the quotes, "..." and the NUL. */
#define QUOTE_BUFSZ (ECHO_MAX * 4 + 6)

/*
 * Copies at most @p max_in bytes of @p s into @p out as printable ASCII:
 * every other byte becomes \xNN, and '"' and '\' are escaped so the result
 * can sit between quotes. Escaping all non-ASCII bytes, rather than only the
 * invalid ones, keeps the output valid UTF-8 however the input was cut.
 * @p out needs 4 * min(len, max_in) + 1 bytes. @returns true when truncated.
 */
static bool escape_bytes(char *out, const char *s, size_t len, size_t max_in) {
    static const char hex[] = "0123456789abcdef";
    size_t n = len < max_in ? len : max_in;
    char *o = out;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *o++ = '\\';
            *o++ = (char)c;
        } else if (c >= 0x20 && c < 0x7f) {
            *o++ = (char)c;
        } else {
            *o++ = '\\';
            *o++ = 'x';
            *o++ = hex[c >> 4];
            *o++ = hex[c & 0xf];
        }
    }
    *o = '\0';
    return n < len;
}

/* @returns @p out holding "<escaped text>", followed by ... when cut short. */
static const char *quote(char out[QUOTE_BUFSZ], const char *s, size_t len) {
    out[0] = '"';
    bool cut = escape_bytes(out + 1, s, len, ECHO_MAX);
    strcat(out, cut ? "\"..." : "\"");
    return out;
}

static const char *json_type_name(const json_t *v) {
    switch (json_typeof(v)) {
    case JSON_OBJECT: return "an object";
    case JSON_ARRAY: return "an array";
    case JSON_STRING: return "a string";
    case JSON_INTEGER: return "an integer";
    case JSON_REAL: return "a number";
    case JSON_TRUE:
    case JSON_FALSE: return "a boolean";
    case JSON_NULL: return "null";
    }
    return "a value";
}

/* ---- parsing state -------------------------------------------------------- */

typedef struct parse_ctx {
    const ttb_command_policy_t *policy;
    ttb_command_t *cmd;
    char *errstr;
    size_t errstr_size;
    ttb_code_t code; /* the first error found; later ones are not reported */
} parse_ctx_t;

/*
 * Records an error unless one is already recorded. Checks run in the order
 * the protocol defines, and some keep going after a failure (a bad id must
 * not hide the town and op the error result should carry), so "first wins"
 * is what keeps the reported code the one the order prescribes.
 */
__attribute__((format(printf, 3, 4))) static void ctx_fail(parse_ctx_t *ctx, ttb_code_t code,
                                                           const char *fmt, ...) {
    if (ctx->code != TTB_CODE_OK) return;
    ctx->code = code;
    if (ctx->errstr == NULL || ctx->errstr_size == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->errstr, ctx->errstr_size, fmt, ap);
    va_end(ap);
}

/* A failed strdup is the bridge's problem, not the record's: internal. */
static bool ctx_strdup(parse_ctx_t *ctx, char **dst, const char *s) {
    *dst = strdup(s);
    if (*dst != NULL) return true;
    ctx_fail(ctx, TTB_CODE_INTERNAL, "out of memory");
    return false;
}

/* ---- field rules ---------------------------------------------------------- */

static bool is_ascii_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* Ids may hold ':' (producers like "svc:42"); towns, clis and roles may not,
 * since towns become part of `tt:{town}:...` keys and the others are names. */
static bool is_token_char(unsigned char c, bool allow_colon) {
    return is_ascii_alnum(c) || c == '.' || c == '_' || c == '-' || (allow_colon && c == ':');
}

/*
 * C0 controls, DEL, and the C1 controls U+0080-U+009F (UTF-8 C2 80-C2 9F):
 * all can move a terminal's cursor or hide text when a name is printed.
 * The input is known-valid UTF-8 (jansson checked it), so a C2 lead byte is
 * always followed by a continuation byte.
 */
static bool has_control(const char *s, size_t len) {
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20 || c == 0x7f) return true;
        if (c == 0xc2 && i + 1 < len) {
            unsigned char d = (unsigned char)s[i + 1];
            if (d >= 0x80 && d <= 0x9f) return true;
        }
    }
    return false;
}

static bool check_length(parse_ctx_t *ctx, const char *field, size_t len, size_t max) {
    if (len == 0) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "%s must not be empty", field);
        return false;
    }
    if (len > max) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "%s is %zu bytes, longer than the limit of %zu",
                 field, len, max);
        return false;
    }
    return true;
}

/* A token: a bounded run of [A-Za-z0-9._-] (plus ':' for ids). */
static bool check_token(parse_ctx_t *ctx, const char *field, const char *s, size_t len,
                        size_t max, bool allow_colon) {
    if (!check_length(ctx, field, len, max)) return false;
    for (size_t i = 0; i < len; i++) {
        if (!is_token_char((unsigned char)s[i], allow_colon)) {
            char q[QUOTE_BUFSZ];
            ctx_fail(ctx, TTB_CODE_INVALID_COMMAND,
                     "%s %s has a character outside [A-Za-z0-9._%s-]", field, quote(q, s, len),
                     allow_colon ? ":" : "");
            return false;
        }
    }
    return true;
}

/* Free text shown to people: bounded, not blank, no control characters. */
static bool check_text(parse_ctx_t *ctx, const char *field, const char *s, size_t len,
                       size_t max) {
    if (!check_length(ctx, field, len, max)) return false;
    size_t trimmed_len = 0;
    (void)ttb_str_trim(s, &trimmed_len);
    if (trimmed_len == 0) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "%s must not be blank", field);
        return false;
    }
    if (has_control(s, len)) {
        char q[QUOTE_BUFSZ];
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "%s %s contains a control character", field,
                 quote(q, s, len));
        return false;
    }
    return true;
}

/* ---- top-level members ---------------------------------------------------- */

static void parse_id(parse_ctx_t *ctx, json_t *root) {
    json_t *v = json_object_get(root, "id");
    if (v == NULL || json_is_null(v)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "id is required");
        return;
    }
    if (!json_is_string(v)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "id must be a string, not %s", json_type_name(v));
        return;
    }
    const char *s = json_string_value(v);
    if (!check_token(ctx, "id", s, json_string_length(v), TTB_CMD_ID_MAX, true)) return;
    (void)ctx_strdup(ctx, &ctx->cmd->id, s);
}

static bool town_is_allowed(const ttb_command_policy_t *policy, const char *town) {
    if (policy->ntowns == 0) return true;
    for (size_t i = 0; i < policy->ntowns; i++) {
        if (policy->towns[i] != NULL && strcmp(policy->towns[i], town) == 0) return true;
    }
    return false;
}

static void parse_town(parse_ctx_t *ctx, json_t *root) {
    json_t *v = json_object_get(root, "town");
    const char *town;
    if (v == NULL || json_is_null(v)) {
        town = ctx->policy->default_town;
        if (town == NULL) {
            ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "town is required");
            return;
        }
    } else if (!json_is_string(v)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "town must be a string, not %s",
                 json_type_name(v));
        return;
    } else {
        town = json_string_value(v);
    }
    /* The default town is checked too: it is spliced into Redis keys just
     * the same, and a misconfigured one must not slip through. */
    if (!check_token(ctx, "town", town, strlen(town), TTB_CMD_TOWN_MAX, false)) return;
    /* A well-formed but foreign town is still echoed in the error result: it
     * tells the producer which of its records went to the wrong bridge. */
    if (!ctx_strdup(ctx, &ctx->cmd->town, town)) return;
    if (!town_is_allowed(ctx->policy, town)) {
        char q[QUOTE_BUFSZ];
        ctx_fail(ctx, TTB_CODE_UNKNOWN_TOWN, "town %s is not served by this bridge",
                 quote(q, town, strlen(town)));
    }
}

/* Keeps the op's text for the error result; judging it waits until the id
 * and town have had their say, as the protocol orders the checks. */
static json_t *take_op(parse_ctx_t *ctx, json_t *root) {
    json_t *v = json_object_get(root, "op");
    if (v != NULL && json_is_string(v))
        (void)ctx_strdup(ctx, &ctx->cmd->op_name, json_string_value(v));
    return v;
}

static void judge_op(parse_ctx_t *ctx, json_t *v) {
    if (v == NULL || json_is_null(v)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "op is required");
        return;
    }
    if (!json_is_string(v)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "op must be a string, not %s", json_type_name(v));
        return;
    }
    const char *s = json_string_value(v);
    ttb_op_t op;
    if (ttb_op_parse(s, &op) != TTB_OK) {
        char q[QUOTE_BUFSZ];
        ctx_fail(ctx, TTB_CODE_UNKNOWN_OP, "unknown op %s", quote(q, s, json_string_length(v)));
        return;
    }
    ctx->cmd->op = op;
    if (ctx->policy->op_denied[op]) {
        ctx_fail(ctx, TTB_CODE_FORBIDDEN, "op %s is disabled on this bridge", op_rows[op].name);
    }
}

/* ---- args ----------------------------------------------------------------- */

/*
 * @returns args.<key>, or NULL when it is absent or null. Null counts as "not
 * given", as serde's Option reads it in tinytown, so producers that
 * serialise unset optionals as null are not punished for it.
 */
static json_t *arg_get(json_t *args, const char *key) {
    json_t *v = args != NULL ? json_object_get(args, key) : NULL;
    return v != NULL && !json_is_null(v) ? v : NULL;
}

/* @returns the string value of args.<key>, NULL when absent (not an error
 * unless @p required) or not a string (an error). */
static const char *arg_string(parse_ctx_t *ctx, json_t *args, const char *key, bool required,
                              size_t *len) {
    json_t *v = arg_get(args, key);
    if (v == NULL) {
        if (required) ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "args.%s is required", key);
        return NULL;
    }
    if (!json_is_string(v)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "args.%s must be a string, not %s", key,
                 json_type_name(v));
        return NULL;
    }
    *len = json_string_length(v);
    return json_string_value(v);
}

typedef enum arg_kind { KIND_TOKEN, KIND_TEXT } arg_kind_t;

/* Validates a string argument and stores a copy in *out. */
static void arg_take(parse_ctx_t *ctx, json_t *args, const char *key, arg_kind_t kind,
                     size_t max, bool required, char **out) {
    size_t len = 0;
    const char *s = arg_string(ctx, args, key, required, &len);
    if (s == NULL) return;
    char field[32];
    snprintf(field, sizeof field, "args.%s", key);
    bool ok = kind == KIND_TOKEN ? check_token(ctx, field, s, len, max, false)
                                 : check_text(ctx, field, s, len, max);
    if (ok) (void)ctx_strdup(ctx, out, s);
}

/* Unknown keys are errors: a misspelt "timeout_ms" must not quietly become
 * the default wait. */
static bool check_arg_keys(parse_ctx_t *ctx, json_t *args, ttb_op_t op) {
    const char *key;
    json_t *v;
    json_object_foreach(args, key, v) {
        (void)v;
        unsigned bit = 0;
        for (size_t i = 0; i < sizeof arg_rows / sizeof arg_rows[0]; i++) {
            if (strcmp(key, arg_rows[i].name) == 0) {
                bit = arg_rows[i].bit;
                break;
            }
        }
        if ((bit & op_rows[op].args) == 0) {
            char q[QUOTE_BUFSZ];
            ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "args: unknown key %s for op %s",
                     quote(q, key, strlen(key)), op_rows[op].name);
            return false;
        }
    }
    return true;
}

static void parse_spawn_args(parse_ctx_t *ctx, json_t *args) {
    ttb_command_t *cmd = ctx->cmd;
    arg_take(ctx, args, "name", KIND_TEXT, TTB_CMD_NAME_MAX, true, &cmd->name);
    arg_take(ctx, args, "cli", KIND_TOKEN, TTB_CMD_SHORT_MAX, false, &cmd->cli);
    arg_take(ctx, args, "role_id", KIND_TOKEN, TTB_CMD_SHORT_MAX, false, &cmd->role_id);
    arg_take(ctx, args, "nickname", KIND_TEXT, TTB_CMD_SHORT_MAX, false, &cmd->nickname);
    arg_take(ctx, args, "parent", KIND_TEXT, TTB_CMD_REF_MAX, false, &cmd->parent);

    size_t len = 0;
    const char *mode = arg_string(ctx, args, "spawn_mode", false, &len);
    if (mode != NULL) {
        if (ttb_spawn_mode_parse(mode, len, &cmd->spawn_mode) == TTB_OK) {
            cmd->has_spawn_mode = true;
        } else {
            char q[QUOTE_BUFSZ];
            ctx_fail(ctx, TTB_CODE_INVALID_COMMAND,
                     "args.spawn_mode %s is not one of \"fresh\", \"forkedcontext\", \"resumed\"",
                     quote(q, mode, len));
        }
    }

    if (ctx->code != TTB_CODE_OK) return;
    if (cmd->cli == NULL && ctx->policy->default_cli != NULL) {
        if (!ctx_strdup(ctx, &cmd->cli, ctx->policy->default_cli)) return;
    }
    /* Reserved names are judged last: a record that is also malformed is
     * malformed first (invalid_command goes to the dead-letter topic,
     * reserved_name does not). */
    if (ttb_agent_name_is_reserved(cmd->name)) {
        char q[QUOTE_BUFSZ];
        ctx_fail(ctx, TTB_CODE_RESERVED_NAME, "args.name %s is reserved",
                 quote(q, cmd->name, strlen(cmd->name)));
    }
}

static void parse_wait_timeout(parse_ctx_t *ctx, json_t *args) {
    int64_t max = ctx->policy->max_wait_ms;
    json_t *v = arg_get(args, "timeout_ms");
    if (v == NULL) {
        ctx->cmd->timeout_ms = max;
        return;
    }
    /* jansson keeps 5.0 and 5e3 as reals: only a plain integer is a count
     * of milliseconds. */
    if (!json_is_integer(v) || json_integer_value(v) < 0) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "args.timeout_ms must be a non-negative integer");
        return;
    }
    int64_t t = (int64_t)json_integer_value(v);
    ctx->cmd->timeout_ms = t > max ? max : t;
}

/* limit: 1..TTB_CMD_LIMIT_MAX agents; after: a listing's `next`, which is
 * "<created_at>/<id>" of the last agent it returned. */
static void parse_page(parse_ctx_t *ctx, json_t *args) {
    json_t *v = arg_get(args, "limit");
    if (v != NULL) {
        if (!json_is_integer(v) || json_integer_value(v) < 1 ||
            json_integer_value(v) > TTB_CMD_LIMIT_MAX) {
            ctx_fail(ctx, TTB_CODE_INVALID_COMMAND,
                     "args.limit must be an integer from 1 to %d", TTB_CMD_LIMIT_MAX);
            return;
        }
        ctx->cmd->limit = (size_t)json_integer_value(v);
    }
    size_t len = 0;
    const char *s = arg_string(ctx, args, "after", false, &len);
    if (s == NULL) return;
    const char *slash = len > TTB_UUID_BUFSZ ? s + len - TTB_UUID_BUFSZ : NULL;
    if (!slash || *slash != '/' || !ttb_uuid_is_canonical(slash + 1, TTB_UUID_BUFSZ - 1) ||
        ttb_time_parse(s, (size_t)(slash - s), &ctx->cmd->after_created)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND,
                 "args.after must be the `next` of an earlier page (\"<created_at>/<id>\")");
        return;
    }
    memcpy(ctx->cmd->after_id, slash + 1, TTB_UUID_BUFSZ - 1);
    ctx->cmd->after_id[TTB_UUID_BUFSZ - 1] = '\0';
    ctx->cmd->has_after = true;
}

static void parse_args(parse_ctx_t *ctx, json_t *root) {
    ttb_op_t op = ctx->cmd->op;
    json_t *args = json_object_get(root, "args");
    if (args != NULL && json_is_null(args)) args = NULL;
    if (args != NULL && !json_is_object(args)) {
        ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "args must be an object, not %s",
                 json_type_name(args));
        return;
    }
    if (args != NULL && !check_arg_keys(ctx, args, op)) return;

    unsigned takes = op_rows[op].args;
    if (op == TTB_OP_SPAWN) {
        parse_spawn_args(ctx, args);
        return;
    }
    if (takes & ARG_AGENT)
        arg_take(ctx, args, "agent", KIND_TEXT, TTB_CMD_REF_MAX, true, &ctx->cmd->agent);
    if (takes & ARG_TIMEOUT_MS) parse_wait_timeout(ctx, args);
    if (takes & ARG_ALL) {
        json_t *v = arg_get(args, "all");
        if (v != NULL && !json_is_boolean(v)) {
            ctx_fail(ctx, TTB_CODE_INVALID_COMMAND, "args.all must be true or false, not %s",
                     json_type_name(v));
            return;
        }
        ctx->cmd->all = v != NULL && json_is_true(v);
    }
    if (takes & ARG_PAGE) parse_page(ctx, args);
}

/* ---- the record ----------------------------------------------------------- */

ttb_code_t ttb_command_parse(const char *buf, size_t len, const ttb_command_policy_t *policy,
                             ttb_command_t *cmd, char *errstr, size_t errstr_size) {
    memset(cmd, 0, sizeof *cmd);
    if (errstr != NULL && errstr_size > 0) errstr[0] = '\0';
    parse_ctx_t ctx = {policy, cmd, errstr, errstr_size, TTB_CODE_OK};

    /* Before parsing: a huge record must cost nothing but this comparison. */
    if (len > policy->max_record_bytes) {
        ctx_fail(&ctx, TTB_CODE_TOO_LARGE, "record is %zu bytes, larger than the limit of %zu",
                 len, policy->max_record_bytes);
        return ctx.code;
    }

    /* No JSON_DECODE_ANY: a command is an object, and a bare scalar is better
     * reported as invalid JSON by jansson than guessed at. No JSON_ALLOW_NUL:
     * every string is then a C string, so strlen and the JSON length agree. */
    json_error_t jerr;
    json_t *root = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
    if (root == NULL) {
        if (json_error_code(&jerr) == json_error_out_of_memory) {
            ctx_fail(&ctx, TTB_CODE_INTERNAL, "out of memory while parsing JSON");
            return ctx.code;
        }
        /* jansson's text may quote up to 20 bytes of the record. */
        char text[sizeof jerr.text * 4 + 1];
        (void)escape_bytes(text, jerr.text, strnlen(jerr.text, sizeof jerr.text), sizeof jerr.text);
        ctx_fail(&ctx, TTB_CODE_INVALID_JSON, "invalid JSON at line %d, column %d (byte %d): %s",
                 jerr.line, jerr.column, jerr.position, text);
        return ctx.code;
    }

    if (!json_is_object(root)) {
        ctx_fail(&ctx, TTB_CODE_INVALID_COMMAND, "command must be a JSON object, not %s",
                 json_type_name(root));
        goto out;
    }

    parse_id(&ctx, root);
    parse_town(&ctx, root);
    json_t *op = take_op(&ctx, root);
    judge_op(&ctx, op);
    if (ctx.code != TTB_CODE_OK) goto out;
    parse_args(&ctx, root);

out:
    json_decref(root);
    return ctx.code;
}

void ttb_command_clear(ttb_command_t *cmd) {
    if (cmd == NULL) return;
    free(cmd->id);
    free(cmd->town);
    free(cmd->op_name);
    free(cmd->agent);
    free(cmd->name);
    free(cmd->cli);
    free(cmd->role_id);
    free(cmd->nickname);
    free(cmd->parent);
    memset(cmd, 0, sizeof *cmd);
}

/* ---- results -------------------------------------------------------------- */

/*
 * A JSON string for @p s, null for NULL. The fields are validated by the
 * parser, but a result must still be producible if a caller hands over
 * bytes that are not UTF-8 (jansson refuses those): they are escaped
 * instead of losing the whole record.
 */
static json_t *string_or_null(const char *s) {
    if (s == NULL) return json_null();
    json_t *j = json_string(s);
    if (j != NULL) return j;
    size_t len = strlen(s);
    char *esc = malloc(len * 4 + 1);
    if (esc == NULL) return NULL;
    (void)escape_bytes(esc, s, len, len);
    j = json_string(esc);
    free(esc);
    return j;
}

char *ttb_result_encode(const ttb_result_t *result, size_t *len) {
    bool ok = result->code == TTB_CODE_OK;
    json_t *o = json_object();
    if (o == NULL) return NULL;

    /* json_object_set_new releases the value even when it fails, so one
     * sum of return values is enough to know if anything was lost. */
    int rc = 0;
    rc |= json_object_set_new(o, "id", string_or_null(result->id));
    rc |= json_object_set_new(o, "town", string_or_null(result->town));
    rc |= json_object_set_new(o, "op", string_or_null(result->op));
    rc |= json_object_set_new(o, "ok", json_boolean(ok));
    if (ok) {
        json_t *r = result->result != NULL ? json_incref(result->result) : json_object();
        rc |= json_object_set_new(o, "result", r);
    } else {
        json_t *err = json_object();
        if (err != NULL) {
            rc |= json_object_set_new(err, "code", json_string(ttb_code_name(result->code)));
            rc |= json_object_set_new(err, "message",
                                      string_or_null(result->message ? result->message : ""));
        }
        rc |= json_object_set_new(o, "error", err);
    }
    char when[TTB_TIME_BUFSZ];
    size_t when_len = ttb_time_format_json(result->applied_at, when);
    rc |= json_object_set_new(o, "applied_at", json_stringn(when, when_len));

    char *out = NULL;
    if (rc == 0) out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
    json_decref(o);
    if (out != NULL && len != NULL) *len = strlen(out);
    return out;
}
