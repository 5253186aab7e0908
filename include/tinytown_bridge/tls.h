/* SPDX-License-Identifier: MIT */
/**
 * @file tls.h
 * @brief TLS to Redis beneath hiredis 0.14, which has none of its own.
 *
 * hiredis 0.14 (Debian 12) reads and writes a plain file descriptor and has
 * no hooks for other I/O, but it can adopt a connected descriptor
 * (redisConnectFd). So a TLS connection is made here, with OpenSSL: a TCP
 * connection, the handshake (CA file or directory, optional client
 * certificate, the server's name checked by default), then a socketpair
 * whose one end goes to hiredis while a thread of the tunnel pumps bytes
 * between the other end and the TLS session. hiredis sees a plain stream:
 * its timeouts (SO_RCVTIMEO on its end), pipelining and error handling work
 * as on TCP. Closing hiredis's end (redisFree) ends the tunnel: its thread
 * sends the TLS close, closes the TCP socket and frees what it holds; a TLS
 * error or the server closing ends it from the other side, and hiredis then
 * reads end-of-file.
 *
 * @locality ttb_tls_new/ttb_tls_connect: any thread; a tunnel's pump runs
 * in a thread of its own.
 */
#ifndef TINYTOWN_BRIDGE_TLS_H
#define TINYTOWN_BRIDGE_TLS_H

#include <stdbool.h>
#include <stddef.h>

/** What a TLS client trusts and shows. Strings are read by ttb_tls_new() only. */
typedef struct ttb_tls_opts {
    const char *ca_file;   /**< PEM bundle of trusted CAs, or NULL */
    const char *ca_dir;    /**< OpenSSL hashed CA directory, or NULL; neither: the system's CAs */
    const char *cert_file; /**< client certificate (chain), PEM, or NULL */
    const char *key_file;  /**< its unencrypted private key, PEM; with cert_file */
    bool verify;           /**< check the server's chain and name (false: only encrypt) */
} ttb_tls_opts_t;

/** A client configuration (an SSL_CTX) shared by the connections made with it. */
typedef struct ttb_tls ttb_tls_t;

/** One TLS connection: its pump thread and the reason it ended. */
typedef struct ttb_tls_tunnel ttb_tls_tunnel_t;

/**
 * Loads the CAs, certificate and key of @p opts.
 * @returns a configuration (caller frees with ttb_tls_free()), or NULL with
 * the reason (a file that cannot be read, a key that does not match the
 * certificate) in @p errstr.
 */
ttb_tls_t *ttb_tls_new(const ttb_tls_opts_t *opts, char *errstr, size_t errstr_size);
/** Frees @p tls. Accepts NULL. Tunnels made with it keep what they need. */
void ttb_tls_free(ttb_tls_t *tls);

/**
 * Connects to @p host:@p port, does the handshake within @p timeout_ms
 * (checking the certificate against @p server_name: a DNS name, or an IP
 * address compared with the certificate's IP entries), and starts the
 * tunnel's pump.
 *
 * @param fd out: hiredis's end (blocking; hand it to redisConnectFd(),
 *        which takes ownership).
 * @param tunnel out: the tunnel (caller releases with
 *        ttb_tls_tunnel_release(); NULL to release at once).
 * @returns 0; TTB_ERR_IO when the server cannot be reached or the
 * connection fails on the way (worth retrying); TTB_ERR_DENIED when the
 * handshake is refused: an unknown CA, a name that does not match, a
 * certificate refused by the server (retrying does not help until a setting
 * changes). The reason is in @p errstr, with OpenSSL's own words.
 */
int ttb_tls_connect(ttb_tls_t *tls, const char *host, int port, const char *server_name,
                    int timeout_ms, int *fd, ttb_tls_tunnel_t **tunnel, char *errstr,
                    size_t errstr_size);

/**
 * Copies why the tunnel ended, when it was a TLS error or the server closing
 * ("" while it runs or when hiredis closed it), into @p buf.
 * @returns 0 when there is no reason, TTB_ERR_DENIED for a TLS error (e.g.
 * the server's alert refusing our certificate), TTB_ERR_IO for a closed or
 * broken connection.
 */
int ttb_tls_tunnel_error(ttb_tls_tunnel_t *tunnel, char *buf, size_t size);

/**
 * Gives up the caller's hold on @p tunnel; the pump ends when hiredis's end
 * is closed (redisFree), and the last of the two frees it. Accepts NULL.
 */
void ttb_tls_tunnel_release(ttb_tls_tunnel_t *tunnel);

#endif
