/* SPDX-License-Identifier: MIT */
/*
 * UUIDs as tinytown handles them (Rust's `uuid` crate 1.x).
 *
 * Agents and tasks are named by random version 4 UUIDs, stored everywhere in
 * the canonical lowercase hyphenated form. Reading is as lenient as
 * `Uuid::parse_str`: the hyphenated form in any case, 32 bare hex digits,
 * `{hyphenated}` and `urn:uuid:hyphenated` — nothing else, and in particular
 * no surrounding whitespace. The crate matches the `urn:uuid:` prefix and the
 * braces byte for byte, so `URN:UUID:...` is not a UUID to tinytown and is not
 * one here either: a reference that tinytown would resolve by name must not
 * resolve by id in the bridge.
 */
#include "tinytown_bridge/uuid.h"

#include <errno.h>
#include <string.h>
#include <sys/random.h>

#include "tinytown_bridge/error.h"

/* Offsets of the four hyphens in the 36-character form. */
static bool is_hyphen_pos(size_t i) {
    return i == 8 || i == 13 || i == 18 || i == 23;
}

static int hex_value(unsigned char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* Decodes @p n hex digit pairs from @p s into @p out; false on a non-hex byte. */
static bool decode_hex(const char *s, size_t n, unsigned char *out) {
    for (size_t i = 0; i < n; i++) {
        int hi = hex_value((unsigned char)s[2 * i]);
        int lo = hex_value((unsigned char)s[2 * i + 1]);
        if (hi < 0 || lo < 0) return false;
        out[i] = (unsigned char)(hi << 4 | lo);
    }
    return true;
}

/* The 36-byte hyphenated form: groups of 8-4-4-4-12 hex digits. */
static bool decode_hyphenated(const char *s, unsigned char out[16]) {
    for (size_t i = 8; i <= 23; i += 5) {
        if (s[i] != '-') return false;
    }
    return decode_hex(s, 4, out) && decode_hex(s + 9, 2, out + 4) &&
           decode_hex(s + 14, 2, out + 6) && decode_hex(s + 19, 2, out + 8) &&
           decode_hex(s + 24, 6, out + 10);
}

static void format_canonical(const unsigned char b[16], char out[TTB_UUID_BUFSZ]) {
    static const char digits[] = "0123456789abcdef";
    size_t j = 0;
    for (size_t i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10) out[j++] = '-';
        out[j++] = digits[b[i] >> 4];
        out[j++] = digits[b[i] & 0x0f];
    }
    out[j] = '\0';
}

int ttb_uuid_bytes(const char *s, size_t len, unsigned char out[16]) {
    if (s == NULL || out == NULL) return TTB_ERR_INVALID;
    unsigned char b[16];
    bool ok;
    switch (len) {
    case 32:
        ok = decode_hex(s, 16, b);
        break;
    case 36:
        ok = decode_hyphenated(s, b);
        break;
    case 38:
        ok = s[0] == '{' && s[37] == '}' && decode_hyphenated(s + 1, b);
        break;
    case 45:
        ok = memcmp(s, "urn:uuid:", 9) == 0 && decode_hyphenated(s + 9, b);
        break;
    default:
        ok = false;
        break;
    }
    if (!ok) return TTB_ERR_INVALID;
    memcpy(out, b, sizeof b);
    return TTB_OK;
}

int ttb_uuid_parse(const char *s, size_t len, char out[TTB_UUID_BUFSZ]) {
    unsigned char b[16];
    int rc = ttb_uuid_bytes(s, len, b);
    if (rc != TTB_OK) return rc;
    format_canonical(b, out);
    return TTB_OK;
}

bool ttb_uuid_is_canonical(const char *s, size_t len) {
    if (s == NULL || len != TTB_UUID_LEN) return false;
    for (size_t i = 0; i < TTB_UUID_LEN; i++) {
        char c = s[i];
        if (is_hyphen_pos(i)) {
            if (c != '-') return false;
        } else if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) {
            return false;
        }
    }
    return true;
}

/* Fills @p buf from getrandom(2), riding out signals and short reads. */
static int fill_random(unsigned char *buf, size_t len) {
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(buf + got, len - got, 0);
        if (n < 0) {
            if (errno == EINTR) continue;
            return TTB_ERR_IO;
        }
        got += (size_t)n;
    }
    return TTB_OK;
}

int ttb_uuid_v4(char out[TTB_UUID_BUFSZ]) {
    unsigned char b[16];
    int rc = fill_random(b, sizeof b);
    if (rc != TTB_OK) return rc;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40); /* version 4 */
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80); /* variant 10xx (RFC 4122) */
    format_canonical(b, out);
    return TTB_OK;
}
