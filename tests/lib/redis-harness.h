/* SPDX-License-Identifier: MIT */
/*
 * Test harness: a private, throw-away redis-server for integration tests.
 *
 * Each server listens on 127.0.0.1 at a free port, runs in a fresh temporary
 * directory, has persistence off unless extra arguments turn it on, and dies
 * with the test process (parent-death signal + atexit cleanup), so a crashed
 * or timed-out test does not leave servers behind.
 *
 * Set TTB_KEEP_REDIS=1 in the environment to keep the directories (and the
 * redis.log in them) after stop, for debugging.
 *
 * The parent-death signal is tied to the thread that calls start/resume:
 * call them from a thread that outlives the server (normally the main one).
 */
#ifndef TTB_REDIS_HARNESS_H
#define TTB_REDIS_HARNESS_H

typedef struct ttb_test_redis {
    int pid;        /* redis-server pid, 0 when not running */
    int port;       /* TCP port on 127.0.0.1 */
    char dir[256];  /* temporary working directory (holds redis.log) */
    char url[64];   /* "redis://127.0.0.1:PORT" */
} ttb_test_redis_t;

/* Start a server. extra_args: NULL-terminated list of additional
 * redis-server arguments (e.g. {"--appendonly", "yes", NULL}) or NULL.
 * Returns 0 once the server answers PING, -1 (with a message on stderr). */
int ttb_test_redis_start(ttb_test_redis_t *r, const char *const *extra_args);

/* SIGTERM the server, wait for it (SIGKILL after 5 s), remove its directory
 * unless TTB_KEEP_REDIS is set. Safe to call on a paused or stopped server. */
int ttb_test_redis_stop(ttb_test_redis_t *r);

/* Stop the server process but keep the directory and port (outage tests). */
int ttb_test_redis_pause(ttb_test_redis_t *r);

/* Start again on the same port and directory with the same extra args. */
int ttb_test_redis_resume(ttb_test_redis_t *r);

#endif
