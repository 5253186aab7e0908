/* SPDX-License-Identifier: MIT */
/**
 * @file error.h
 * @brief Return codes of library functions and the protocol's error codes.
 *
 * Two different things live here. Library functions return an int: 0 on
 * success or a negative TTB_ERR_* telling the caller how to react (retry a
 * transient Redis failure, give up on a bad argument). Commands, on the other
 * hand, end in a ttb_code_t, the error code the Kafka protocol publishes in a
 * result record (`spec/protocol.md`); those are answers, not failures.
 */
#ifndef TINYTOWN_BRIDGE_ERROR_H
#define TINYTOWN_BRIDGE_ERROR_H

#include <stdbool.h>

/** Library return codes: 0 is success, every failure is negative. */
enum {
    TTB_OK = 0,
    TTB_ERR_NOMEM = -1,   /**< allocation failed */
    TTB_ERR_IO = -2,      /**< Redis unreachable or connection lost: transient, retry */
    TTB_ERR_PROTO = -3,   /**< Redis answered something we did not expect */
    TTB_ERR_INVALID = -4, /**< bad argument or input; not retried */
    TTB_ERR_NOTFOUND = -5, /**< the thing asked for does not exist */
    TTB_ERR_DENIED = -6    /**< Redis or its TLS refused who we are or what we may do (a
                              certificate, a password, an ACL): retrying does not help until a
                              setting changes */
};

/** The protocol's error codes, as published in `error.code` of a result. */
typedef enum ttb_code {
    TTB_CODE_OK = 0,
    TTB_CODE_INVALID_JSON,
    TTB_CODE_INVALID_COMMAND,
    TTB_CODE_UNKNOWN_OP,
    TTB_CODE_TOO_LARGE,
    TTB_CODE_UNKNOWN_TOWN,
    TTB_CODE_FORBIDDEN,
    TTB_CODE_RESERVED_NAME,
    TTB_CODE_NAME_CONFLICT,
    TTB_CODE_AGENT_NOT_FOUND,
    TTB_CODE_AMBIGUOUS_AGENT,
    TTB_CODE_INVALID_STATE,
    TTB_CODE_INTERNAL,
    TTB_CODE__COUNT
} ttb_code_t;

/** @returns the wire name of @p code ("invalid_json", ...); "ok" for TTB_CODE_OK. */
const char *ttb_code_name(ttb_code_t code);

/** Parses a wire name. @returns 0 and sets *out, or TTB_ERR_INVALID. */
int ttb_code_from_name(const char *name, ttb_code_t *out);

/** @returns true for the codes whose records also go to the dead-letter topic. */
bool ttb_code_is_dead_letter(ttb_code_t code);

/** @returns a short English description of a library return code (TTB_ERR_*). */
const char *ttb_err_str(int err);

#endif
