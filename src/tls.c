/* SPDX-License-Identifier: MIT */
/*
 * TLS beneath hiredis (see tls.h): OpenSSL does the TCP connection's
 * handshake here, then a pump thread per connection moves plaintext between
 * a socketpair end that hiredis reads and writes and the TLS session.
 *
 * The pump is one thread with non-blocking descriptors and poll(), because
 * an SSL object may not be read and written from two threads at once. It
 * holds at most one buffer each way, so a slow reader on either side holds
 * the other back (TCP's own flow control) instead of growing memory. It
 * waits in poll() without a timeout: it has nothing to do until one side
 * moves, and either side closing wakes it. Deadlines stay hiredis's: its
 * SO_RCVTIMEO on its end notices a silent server, and redisFree() then ends
 * the tunnel.
 *
 * Writing to a socket the peer has closed raises SIGPIPE, which would kill
 * a process that does not ignore it (`apply`, tests): the pump thread runs
 * with every signal blocked, and the handshake blocks SIGPIPE for its
 * duration and swallows one it caused.
 *
 * Pumps still running when the process exits would race OpenSSL's own exit
 * cleanup; an exit handler registered after OpenSSL's (so it runs first)
 * waits a bounded time for them.
 */
#include "tinytown_bridge/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "tinytown_bridge/clock.h"
#include "tinytown_bridge/error.h"
#include "tinytown_bridge/log.h"

#define PUMP_BUFSZ 16384
#define EXIT_WAIT_MS 2000

struct ttb_tls {
    SSL_CTX *ctx;
    bool verify;
};

struct ttb_tls_tunnel {
    SSL *ssl;
    int sock;  /* TCP, non-blocking */
    int local; /* the pump's end of the socketpair, non-blocking */
    pthread_mutex_t lock;
    int refs;         /* the caller's and the pump's */
    char error[256];  /* why the pump ended, if not because hiredis closed */
    int error_rc;     /* TTB_ERR_DENIED for a TLS error (an alert), else TTB_ERR_IO */
};

/* Pumps alive, for the exit handler. */
static pthread_mutex_t pumps_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t pumps_cond = PTHREAD_COND_INITIALIZER;
static int pumps_alive;
static pthread_once_t init_once = PTHREAD_ONCE_INIT;

static void wait_for_pumps(void) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += EXIT_WAIT_MS / 1000;
    pthread_mutex_lock(&pumps_lock);
    while (pumps_alive > 0)
        if (pthread_cond_timedwait(&pumps_cond, &pumps_lock, &until) == ETIMEDOUT) break;
    pthread_mutex_unlock(&pumps_lock);
}

static void tls_init(void) {
    /* OpenSSL registers its exit cleanup here; ours, registered after it,
     * runs before it. */
    OPENSSL_init_ssl(0, NULL);
    atexit(wait_for_pumps);
}

/* OpenSSL's reason for a failure, in its own words: the first of its queue
 * (the most specific: "no start line" before "PEM lib"), or the system's
 * for a file that cannot be opened. The queue is left empty. */
static void ssl_reason(char *buf, size_t size, const char *fallback) {
    unsigned long e, first = 0;
    int sys = 0;
    while ((e = ERR_get_error()) != 0) {
        if (ERR_SYSTEM_ERROR(e) && !sys) sys = ERR_GET_REASON(e);
        if (!first) first = e;
    }
    const char *reason = first ? ERR_reason_error_string(first) : NULL;
    if (sys) snprintf(buf, size, "%s", strerror(sys));
    else if (reason) snprintf(buf, size, "%s", reason);
    else if (first) ERR_error_string_n(first, buf, size);
    else snprintf(buf, size, "%s", fallback);
}

static ttb_tls_t *tls_fail(ttb_tls_t *tls, char *errstr, size_t errstr_size, const char *what,
                           const char *path) {
    char why[160];
    ssl_reason(why, sizeof(why), "unknown error");
    snprintf(errstr, errstr_size, "%s %s: %s", what, path, why);
    ttb_tls_free(tls);
    return NULL;
}

ttb_tls_t *ttb_tls_new(const ttb_tls_opts_t *opts, char *errstr, size_t errstr_size) {
    pthread_once(&init_once, tls_init);
    ttb_tls_t *tls = calloc(1, sizeof(*tls));
    if (!tls || !(tls->ctx = SSL_CTX_new(TLS_client_method()))) {
        snprintf(errstr, errstr_size, "out of memory");
        free(tls);
        return NULL;
    }
    tls->verify = opts->verify;
    SSL_CTX_set_min_proto_version(tls->ctx, TLS1_2_VERSION);
    /* The pump retries a write with what is left of its buffer. */
    SSL_CTX_set_mode(tls->ctx, SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    if (opts->ca_file || opts->ca_dir) {
        if (SSL_CTX_load_verify_locations(tls->ctx, opts->ca_file, opts->ca_dir) != 1)
            return tls_fail(tls, errstr, errstr_size, "cannot load CA",
                            opts->ca_file ? opts->ca_file : opts->ca_dir);
    } else if (SSL_CTX_set_default_verify_paths(tls->ctx) != 1) {
        return tls_fail(tls, errstr, errstr_size, "cannot load the system's CAs", "");
    }
    if (opts->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(tls->ctx, opts->cert_file) != 1)
            return tls_fail(tls, errstr, errstr_size, "cannot load certificate", opts->cert_file);
        const char *key = opts->key_file ? opts->key_file : opts->cert_file;
        if (SSL_CTX_use_PrivateKey_file(tls->ctx, key, SSL_FILETYPE_PEM) != 1)
            return tls_fail(tls, errstr, errstr_size, "cannot load key", key);
        if (SSL_CTX_check_private_key(tls->ctx) != 1)
            return tls_fail(tls, errstr, errstr_size, "key does not match certificate",
                            opts->cert_file);
    }
    SSL_CTX_set_verify(tls->ctx, opts->verify ? SSL_VERIFY_PEER : SSL_VERIFY_NONE, NULL);
    return tls;
}

void ttb_tls_free(ttb_tls_t *tls) {
    if (!tls) return;
    SSL_CTX_free(tls->ctx); /* reference-counted: live sessions keep theirs */
    free(tls);
}

/* ---- TCP ---- */

static int set_nonblocking(int fd, bool on) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0) return -1;
    return fcntl(fd, F_SETFL, on ? flags | O_NONBLOCK : flags & ~O_NONBLOCK);
}

/* Keepalive as hiredis sets it on its own TCP connections: a subscriber
 * that only listens learns of a dead peer this way. */
static void tcp_options(int fd) {
    int on = 1, idle = 15, intvl = 5, cnt = 3;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &on, sizeof(on));
    setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &on, sizeof(on));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl));
    setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
}

static int ms_left(int64_t deadline) {
    int64_t left = deadline - ttb_clock_ms();
    return left > 0 ? (int)left : 0;
}

/* Waits for @p events on @p fd until @p deadline. @returns >0, 0 on timeout. */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd p = {.fd = fd, .events = events};
        int n = poll(&p, 1, ms_left(deadline));
        if (n >= 0 || errno != EINTR) return n < 0 ? 0 : n;
    }
}

static int connect_one(const struct addrinfo *ai, int64_t deadline, int *err) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
    if (fd < 0) {
        *err = errno;
        return -1;
    }
    if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) return fd;
    if (errno != EINPROGRESS) {
        *err = errno;
        close(fd);
        return -1;
    }
    socklen_t len = sizeof(*err);
    if (wait_fd(fd, POLLOUT, deadline) <= 0) *err = ETIMEDOUT;
    else if (getsockopt(fd, SOL_SOCKET, SO_ERROR, err, &len) != 0) *err = errno;
    if (*err == 0) return fd;
    close(fd);
    return -1;
}

static int tcp_connect(const char *host, int port, int64_t deadline, char *errstr,
                       size_t errstr_size) {
    char service[16];
    snprintf(service, sizeof(service), "%d", port);
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, service, &hints, &res);
    if (gai != 0) {
        snprintf(errstr, errstr_size, "connect to %s:%d: %s", host, port, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    for (const struct addrinfo *ai = res; ai && fd < 0; ai = ai->ai_next)
        fd = connect_one(ai, deadline, &err);
    freeaddrinfo(res);
    if (fd < 0)
        snprintf(errstr, errstr_size, "connect to %s:%d: %s", host, port,
                 err == ETIMEDOUT ? "Connection timed out" : strerror(err));
    else tcp_options(fd);
    return fd;
}

/* ---- the handshake ---- */

typedef struct sigpipe_guard {
    sigset_t old;
    bool was_pending;
} sigpipe_guard_t;

static void sigpipe_block(sigpipe_guard_t *g) {
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    g->was_pending = sigismember(&pending, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &set, &g->old);
}

static void sigpipe_restore(sigpipe_guard_t *g) {
    sigset_t set, pending;
    sigemptyset(&set);
    sigaddset(&set, SIGPIPE);
    sigpending(&pending);
    if (!g->was_pending && sigismember(&pending, SIGPIPE)) {
        struct timespec zero = {0, 0};
        sigtimedwait(&set, NULL, &zero); /* ours: the handshake wrote to a closed socket */
    }
    pthread_sigmask(SIG_SETMASK, &g->old, NULL);
}

static bool is_ip_address(const char *name) {
    unsigned char buf[sizeof(struct in6_addr)];
    return inet_pton(AF_INET, name, buf) == 1 || inet_pton(AF_INET6, name, buf) == 1;
}

/* The server's name as SNI, and, when verifying, as the certificate must
 * carry it. */
static int set_peer_name(SSL *ssl, const char *name, bool verify, char *errstr,
                         size_t errstr_size) {
    X509_VERIFY_PARAM *param = SSL_get0_param(ssl);
    int ok = 1;
    if (is_ip_address(name)) {
        if (verify) ok = X509_VERIFY_PARAM_set1_ip_asc(param, name); /* no SNI (RFC 6066) */
    } else {
        /* OpenSSL's SNI macro takes a mutable string; it copies it. */
        char sni[256];
        snprintf(sni, sizeof(sni), "%s", name);
        X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
        ok = strlen(name) < sizeof(sni) && SSL_set_tlsext_host_name(ssl, sni) == 1 &&
             (!verify || X509_VERIFY_PARAM_set1_host(param, name, 0) == 1);
    }
    if (!ok) snprintf(errstr, errstr_size, "cannot use TLS server name %s", name);
    return ok ? 0 : TTB_ERR_INVALID;
}

/* A connection that ended without TLS's goodbye (a server stopped or
 * restarted): OpenSSL 3 calls it an SSL error, but it is no refusal. */
static bool ssl_error_is_eof(void) {
    return ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING;
}

/* Why a handshake failed, and whether retrying may help. */
static int handshake_error(SSL *ssl, int ret, const char *where, char *errstr, size_t errstr_size) {
    int e = SSL_get_error(ssl, ret);
    unsigned long last = ERR_peek_last_error();
    char why[200];
    int rc = TTB_ERR_DENIED;
    if (e == SSL_ERROR_SSL && ERR_GET_REASON(last) == SSL_R_CERTIFICATE_VERIFY_FAILED) {
        snprintf(why, sizeof(why), "certificate verify failed: %s",
                 X509_verify_cert_error_string(SSL_get_verify_result(ssl)));
        ERR_clear_error();
    } else if (e == SSL_ERROR_SSL && !ssl_error_is_eof()) {
        ssl_reason(why, sizeof(why), "handshake failed");
    } else if (e == SSL_ERROR_SSL) {
        ssl_reason(why, sizeof(why), "connection closed during the handshake");
        rc = TTB_ERR_IO;
    } else {
        /* The connection broke or timed out: the server may be restarting. */
        snprintf(why, sizeof(why), "%s", errno && e == SSL_ERROR_SYSCALL
                                             ? strerror(errno)
                                             : "connection closed during the handshake");
        ERR_clear_error();
        rc = TTB_ERR_IO;
    }
    snprintf(errstr, errstr_size, "TLS handshake with %s: %s", where, why);
    return rc;
}

static int handshake(SSL *ssl, int fd, int64_t deadline, const char *where, char *errstr,
                     size_t errstr_size) {
    sigpipe_guard_t guard;
    sigpipe_block(&guard);
    int rc = 0;
    for (;;) {
        ERR_clear_error();
        errno = 0;
        int ret = SSL_connect(ssl);
        if (ret == 1) break;
        int e = SSL_get_error(ssl, ret);
        short want = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
        if (!want) {
            rc = handshake_error(ssl, ret, where, errstr, errstr_size);
            break;
        }
        if (wait_fd(fd, want, deadline) <= 0) {
            snprintf(errstr, errstr_size, "TLS handshake with %s: timed out", where);
            rc = TTB_ERR_IO;
            break;
        }
    }
    sigpipe_restore(&guard);
    return rc;
}

/* ---- the pump ---- */

static void tunnel_set_error(ttb_tls_tunnel_t *t, const char *why, int rc) {
    pthread_mutex_lock(&t->lock);
    if (!t->error[0]) {
        snprintf(t->error, sizeof(t->error), "%s", why);
        t->error_rc = rc;
    }
    pthread_mutex_unlock(&t->lock);
}

static void tunnel_unref(ttb_tls_tunnel_t *t) {
    pthread_mutex_lock(&t->lock);
    bool last = --t->refs == 0;
    pthread_mutex_unlock(&t->lock);
    if (!last) return;
    pthread_mutex_destroy(&t->lock);
    free(t);
}

/* One direction's buffer: bytes [off, len) still to be written. */
typedef struct pump_buf {
    unsigned char data[PUMP_BUFSZ];
    size_t off, len;
} pump_buf_t;

static bool buf_empty(const pump_buf_t *b) { return b->off == b->len; }

static void buf_consumed(pump_buf_t *b, size_t n) {
    b->off += n;
    if (b->off == b->len) b->off = b->len = 0;
}

typedef struct pump {
    ttb_tls_tunnel_t *t;
    pump_buf_t up;          /* hiredis → server */
    pump_buf_t down;        /* server → hiredis */
    short write_wants;      /* what SSL_write waits for on the socket, 0: nothing */
    short read_wants;       /* what SSL_read waits for on the socket */
    bool local_eof;         /* hiredis closed its end */
    bool remote_eof;        /* the server ended the session */
    bool sock_hup;          /* the socket reported hang-up or error: stop polling it */
    bool failed;            /* a TLS error: end now */
} pump_t;

/* Ends the pump on error @p e (SSL_get_error's) of @p op, keeping why. */
static void pump_ssl_failed(pump_t *p, int e, const char *op) {
    char why[200], line[240];
    /* An alert from the server (a refused client certificate arrives after
     * a TLS 1.3 handshake) refuses us; anything else is a broken connection. */
    bool alert = e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) >= SSL_AD_REASON_OFFSET;
    if (e == SSL_ERROR_SSL) ssl_reason(why, sizeof(why), "TLS error");
    else snprintf(why, sizeof(why), "%s", errno ? strerror(errno) : "connection closed");
    ERR_clear_error();
    snprintf(line, sizeof(line), "TLS %s: %s", op, why);
    tunnel_set_error(p->t, line, alert ? TTB_ERR_DENIED : TTB_ERR_IO);
    p->failed = true;
}

/* A write that failed on a broken connection: the server may have said why
 * before it closed (under TLS 1.3 a refused client certificate is an alert
 * after the handshake, and our first request races it), so read that first. */
static void pump_write_failed(pump_t *p, int e) {
    int write_errno = errno;
    if (e != SSL_ERROR_SSL) {
        unsigned char said[512];
        ERR_clear_error();
        int n = SSL_read(p->t->ssl, said, sizeof(said));
        if (n <= 0 && SSL_get_error(p->t->ssl, n) == SSL_ERROR_SSL &&
            ERR_GET_REASON(ERR_peek_error()) >= SSL_AD_REASON_OFFSET) {
            pump_ssl_failed(p, SSL_ERROR_SSL, "read");
            return;
        }
        ERR_clear_error();
    }
    errno = write_errno;
    pump_ssl_failed(p, e, "write");
}

/* @returns true when something moved. */
static bool pump_up(pump_t *p) {
    bool moved = false;
    if (p->up.len == 0 && !p->local_eof) {
        ssize_t n = recv(p->t->local, p->up.data, sizeof(p->up.data), 0);
        if (n > 0) {
            p->up.len = (size_t)n;
            moved = true;
        } else if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) {
            p->local_eof = true;
        }
    }
    if (!buf_empty(&p->up)) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_write(p->t->ssl, p->up.data + p->up.off, (int)(p->up.len - p->up.off));
        if (n > 0) {
            buf_consumed(&p->up, (size_t)n);
            p->write_wants = 0;
            return true;
        }
        int e = SSL_get_error(p->t->ssl, n);
        if (e == SSL_ERROR_WANT_READ) p->write_wants = POLLIN;
        else if (e == SSL_ERROR_WANT_WRITE) p->write_wants = POLLOUT;
        else pump_write_failed(p, e);
    }
    return moved;
}

static bool pump_down(pump_t *p) {
    bool moved = false;
    if (p->down.len == 0 && !p->remote_eof) {
        ERR_clear_error();
        errno = 0;
        int n = SSL_read(p->t->ssl, p->down.data, sizeof(p->down.data));
        if (n > 0) {
            p->down.len = (size_t)n;
            p->read_wants = 0;
            moved = true;
        } else {
            int e = SSL_get_error(p->t->ssl, n);
            if (e == SSL_ERROR_WANT_READ) p->read_wants = POLLIN;
            else if (e == SSL_ERROR_WANT_WRITE) p->read_wants = POLLOUT;
            else if (e == SSL_ERROR_ZERO_RETURN ||
                     (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)) {
                tunnel_set_error(p->t, "the server closed the TLS connection", TTB_ERR_IO);
                p->remote_eof = true;
            } else {
                pump_ssl_failed(p, e, "read");
            }
        }
    }
    if (!buf_empty(&p->down)) {
        ssize_t n = send(p->t->local, p->down.data + p->down.off, p->down.len - p->down.off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            buf_consumed(&p->down, (size_t)n);
            moved = true;
        } else if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) {
            p->local_eof = true; /* hiredis is gone: nobody to deliver to */
        }
    }
    return moved;
}

/* Done on a TLS error, when hiredis closed (what it left unsent or unread
 * matters to nobody, and a server that stopped reading must not hold the
 * thread), or when the server ended and hiredis has what it sent. */
static bool pump_done(const pump_t *p) {
    return p->failed || p->local_eof || (p->remote_eof && buf_empty(&p->down));
}

/* Blocks until one side can move. */
static void pump_wait(pump_t *p) {
    struct pollfd fds[2] = {{.fd = p->t->local}, {.fd = p->sock_hup ? -1 : p->t->sock}};
    if (p->up.len == 0 && !p->local_eof) fds[0].events |= POLLIN;
    if (!buf_empty(&p->down)) fds[0].events |= POLLOUT;
    if (!buf_empty(&p->up)) fds[1].events |= p->write_wants ? p->write_wants : POLLOUT;
    if (p->down.len == 0 && !p->remote_eof) fds[1].events |= p->read_wants ? p->read_wants : POLLIN;
    if (poll(fds, 2, -1) < 0) return; /* EINTR: look again */
    /* Hang-ups are reported whatever was asked: act on them here, or poll
     * would return at once forever. */
    if (fds[0].revents & (POLLHUP | POLLERR)) p->local_eof = true;
    if (fds[1].revents & (POLLHUP | POLLERR)) p->sock_hup = true;
}

static void *pump_main(void *arg) {
    pump_t *p = calloc(1, sizeof(*p));
    ttb_tls_tunnel_t *t = arg;
    if (p) {
        p->t = t;
        while (!pump_done(p)) {
            bool moved = pump_up(p);
            moved = pump_down(p) || moved;
            /* Bytes OpenSSL already decrypted need no poll to be read. */
            bool ready = p->down.len == 0 && SSL_pending(t->ssl) > 0;
            if (!moved && !ready && !pump_done(p)) pump_wait(p);
        }
        if (p->local_eof && !p->failed) SSL_shutdown(t->ssl); /* best effort: never waits */
        free(p);
    } else {
        tunnel_set_error(t, "out of memory", TTB_ERR_IO);
    }
    SSL_free(t->ssl);
    t->ssl = NULL;
    close(t->sock);
    close(t->local); /* hiredis reads end-of-file from here on */
    tunnel_unref(t);
    /* Free this thread's OpenSSL state (its error queue) now: a thread-exit
     * destructor could run after the process's exit has begun. */
    OPENSSL_thread_stop();
    pthread_mutex_lock(&pumps_lock);
    pumps_alive--;
    pthread_cond_broadcast(&pumps_cond);
    pthread_mutex_unlock(&pumps_lock);
    return NULL;
}

/* Starts the pump with every signal blocked: they belong to the main thread. */
static int pump_start(ttb_tls_tunnel_t *t) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_attr_t attr;
    if (pthread_attr_init(&attr) != 0) return TTB_ERR_NOMEM;
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    pthread_mutex_lock(&pumps_lock);
    pthread_t tid;
    int rc = pthread_create(&tid, &attr, pump_main, t);
    if (rc == 0) pumps_alive++;
    pthread_mutex_unlock(&pumps_lock);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    pthread_attr_destroy(&attr);
    return rc == 0 ? 0 : TTB_ERR_NOMEM;
}

/* ---- connecting ---- */

static int tunnel_open(ttb_tls_tunnel_t *t, int *fd, char *errstr, size_t errstr_size) {
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, pair) != 0) {
        snprintf(errstr, errstr_size, "socketpair: %s", strerror(errno));
        return TTB_ERR_IO;
    }
    if (set_nonblocking(pair[1], true) != 0 || set_nonblocking(t->sock, true) != 0) {
        snprintf(errstr, errstr_size, "fcntl: %s", strerror(errno));
        close(pair[0]);
        close(pair[1]);
        return TTB_ERR_IO;
    }
    t->local = pair[1];
    t->refs = 2;
    if (pump_start(t) != 0) {
        snprintf(errstr, errstr_size, "cannot start the TLS thread");
        close(pair[0]);
        close(pair[1]);
        return TTB_ERR_NOMEM;
    }
    *fd = pair[0];
    return 0;
}

int ttb_tls_connect(ttb_tls_t *tls, const char *host, int port, const char *server_name,
                    int timeout_ms, int *fd, ttb_tls_tunnel_t **tunnel, char *errstr,
                    size_t errstr_size) {
    *fd = -1;
    if (tunnel) *tunnel = NULL;
    int64_t deadline = ttb_clock_ms() + timeout_ms;
    ttb_tls_tunnel_t *t = calloc(1, sizeof(*t));
    if (!t || pthread_mutex_init(&t->lock, NULL) != 0) {
        free(t);
        snprintf(errstr, errstr_size, "out of memory");
        return TTB_ERR_NOMEM;
    }
    char where[300];
    snprintf(where, sizeof(where), "%s:%d", host, port);
    int rc = TTB_ERR_IO;
    t->sock = tcp_connect(host, port, deadline, errstr, errstr_size);
    if (t->sock >= 0) {
        rc = TTB_ERR_NOMEM;
        if ((t->ssl = SSL_new(tls->ctx)) && SSL_set_fd(t->ssl, t->sock) == 1) rc = 0;
        if (rc) snprintf(errstr, errstr_size, "out of memory");
        if (!rc) rc = set_peer_name(t->ssl, server_name, tls->verify, errstr, errstr_size);
        if (!rc) rc = handshake(t->ssl, t->sock, deadline, where, errstr, errstr_size);
        if (!rc) rc = tunnel_open(t, fd, errstr, errstr_size);
    }
    if (rc) {
        if (t->sock >= 0) close(t->sock);
        SSL_free(t->ssl);
        pthread_mutex_destroy(&t->lock);
        free(t);
        return rc;
    }
    if (tunnel) *tunnel = t;
    else tunnel_unref(t);
    return 0;
}

int ttb_tls_tunnel_error(ttb_tls_tunnel_t *t, char *buf, size_t size) {
    pthread_mutex_lock(&t->lock);
    snprintf(buf, size, "%s", t->error);
    int rc = t->error[0] ? t->error_rc : 0;
    pthread_mutex_unlock(&t->lock);
    return rc;
}

void ttb_tls_tunnel_release(ttb_tls_tunnel_t *t) {
    if (t) tunnel_unref(t);
}
