/* SPDX-License-Identifier: MIT */
/**
 * @file uuid.h
 * @brief UUIDs as tinytown stores them: canonical lowercase `8-4-4-4-12` text.
 */
#ifndef TINYTOWN_BRIDGE_UUID_H
#define TINYTOWN_BRIDGE_UUID_H

#include <stdbool.h>
#include <stddef.h>

/** Length of the canonical text form, without NUL. */
#define TTB_UUID_LEN 36
/** Size of a buffer holding the canonical form and its NUL. */
#define TTB_UUID_BUFSZ 37

/** The supervisor/conductor's fixed id. */
#define TTB_UUID_SUPERVISOR "00000000-0000-0000-0000-000000000001"

/**
 * Writes a new random (version 4, RFC 4122 variant) UUID in canonical form.
 * Randomness comes from getrandom(2).
 * @returns 0, or TTB_ERR_IO when the OS has no randomness to give.
 */
int ttb_uuid_v4(char out[TTB_UUID_BUFSZ]);

/**
 * Parses the forms Rust's `Uuid::parse_str` accepts — hyphenated (any case),
 * 32 hex digits, `{hyphenated}` and `urn:uuid:hyphenated` — of exactly @p len
 * bytes, and writes the canonical lowercase form. Like the crate, the braces
 * and the `urn:uuid:` prefix are matched exactly (lowercase prefix only) and
 * no whitespace is skipped.
 * @returns 0, or TTB_ERR_INVALID.
 */
int ttb_uuid_parse(const char *s, size_t len, char out[TTB_UUID_BUFSZ]);

/** @returns true when @p s (of @p len bytes) is already canonical: 36 chars, lowercase hex, hyphens at 8,13,18,23. */
bool ttb_uuid_is_canonical(const char *s, size_t len);

/** Writes the 16 bytes of a canonical (or any parsable) UUID. @returns 0 or TTB_ERR_INVALID. */
int ttb_uuid_bytes(const char *s, size_t len, unsigned char out[16]);

#endif
