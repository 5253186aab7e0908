/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the command parser, the code that reads whatever any
 * producer writes to the commands topic. Each input goes the way a record
 * goes in the bridge: parsed under a realistic policy (a default town, two
 * allowed towns, one op turned off, a size limit the fuzzer can exceed),
 * answered with an encoded result, and freed. Besides the sanitizers'
 * findings, the target aborts when the parser breaks a promise the rest of
 * the bridge relies on: a one-line printable message with every error,
 * well-formed fields on success, and a result that is valid JSON.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tinytown_bridge/command.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool is_token(const char *s, size_t max, bool allow_colon) {
    size_t n = strlen(s);
    if (n == 0 || n > max) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        bool ok = (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                  c == '.' || c == '_' || c == '-' || (allow_colon && c == ':');
        if (!ok) return false;
    }
    return true;
}

/* What a successful parse promises the agent service. */
static void check_ok(const ttb_command_t *cmd, const ttb_command_policy_t *policy) {
    if (cmd->id == NULL || !is_token(cmd->id, TTB_CMD_ID_MAX, true)) abort();
    if (cmd->town == NULL || !is_token(cmd->town, TTB_CMD_TOWN_MAX, false)) abort();
    if (cmd->op_name == NULL || strcmp(cmd->op_name, ttb_op_name(cmd->op)) != 0) abort();
    if (policy->op_denied[cmd->op]) abort();
    if (ttb_op_takes_agent(cmd->op) != (cmd->agent != NULL)) abort();
    if (cmd->agent != NULL && (strlen(cmd->agent) == 0 || strlen(cmd->agent) > TTB_CMD_REF_MAX)) abort();
    if (cmd->op == TTB_OP_SPAWN) {
        if (cmd->name == NULL || strlen(cmd->name) > TTB_CMD_NAME_MAX) abort();
        if (ttb_agent_name_is_reserved(cmd->name)) abort();
        if (cmd->cli == NULL || !is_token(cmd->cli, TTB_CMD_SHORT_MAX, false)) abort();
        if (cmd->role_id != NULL && !is_token(cmd->role_id, TTB_CMD_SHORT_MAX, false)) abort();
    } else if (cmd->name != NULL || cmd->cli != NULL || cmd->nickname != NULL) {
        abort();
    }
    if (cmd->op == TTB_OP_WAIT && (cmd->timeout_ms < 0 || cmd->timeout_ms > policy->max_wait_ms)) abort();
}

/* An error message travels in headers and logs: one printable ASCII line. */
static void check_message(const char *errstr) {
    if (errstr[0] == '\0') abort();
    for (const char *p = errstr; *p; p++) {
        if (*p < 0x20 || *p > 0x7e) abort();
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static const char *const towns[] = {"demo", "other"};
    ttb_command_policy_t policy = {
        .max_record_bytes = 3000,
        .default_town = "demo",
        .towns = towns,
        .ntowns = 2,
        .default_cli = "claude",
        .max_wait_ms = 60000,
    };
    policy.op_denied[TTB_OP_STOP_ALL] = true;

    ttb_command_t cmd;
    char errstr[512];
    ttb_code_t code = ttb_command_parse((const char *)data, size, &policy, &cmd, errstr, sizeof errstr);
    json_t *answer = NULL;
    if (code == TTB_CODE_OK) {
        check_ok(&cmd, &policy);
        answer = json_pack("{s:s?,s:s?,s:s?}", "agent", cmd.agent, "name", cmd.name, "nickname",
                           cmd.nickname);
    } else {
        check_message(errstr);
        if (cmd.id != NULL && !is_token(cmd.id, TTB_CMD_ID_MAX, true)) abort();
    }

    ttb_result_t result = {
        .id = cmd.id,
        .town = cmd.town,
        .op = cmd.op_name,
        .code = code,
        .message = errstr,
        .result = answer,
        .applied_at = {1795503060, 123000000},
    };
    size_t len = 0;
    char *out = ttb_result_encode(&result, &len);
    if (out == NULL || len != strlen(out)) abort();
    json_error_t jerr;
    json_t *back = json_loadb(out, len, JSON_REJECT_DUPLICATES, &jerr);
    if (back == NULL || !json_is_object(back)) abort();
    if (json_is_true(json_object_get(back, "ok")) != (code == TTB_CODE_OK)) abort();

    json_decref(back);
    free(out);
    json_decref(answer);
    ttb_command_clear(&cmd);
    return 0;
}
