/* SPDX-License-Identifier: MIT */
/*
 * Test harness: starts, pauses, resumes and stops private redis-server
 * processes for integration tests (see redis-harness.h).
 *
 * Servers are remembered in a small registry so that resume can reuse the
 * extra arguments and so that an atexit handler can stop whatever a failing
 * test forgot. The child also gets PR_SET_PDEATHSIG so it dies with us even
 * when we crash or are SIGKILLed by meson's timeout (which also kills our
 * process group). Not thread-safe: call from the test's main thread.
 */
#include "redis-harness.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SERVERS 32
#define START_TIMEOUT_MS 10000
#define STOP_TIMEOUT_MS 5000
#define POLL_MS 10
#define PORT_ATTEMPTS 5

struct entry {
    int in_use;
    pid_t pid;
    int port;
    char dir[256];
    char **extra; /* owned, NULL-terminated copy of the caller's extra args */
};

static struct entry registry[MAX_SERVERS];
static int atexit_registered;

static long long now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(long ms)
{
    struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
    while (nanosleep(&ts, &ts) == -1 && errno == EINTR) {
    }
}

static int keep_dirs(void)
{
    const char *k = getenv("TTB_KEEP_REDIS");
    return k && *k && strcmp(k, "0") != 0;
}

/* Ask the kernel for a free port. Another process can grab it before redis
 * binds it; start() notices the bind failure and retries with a new port. */
static int pick_free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = 0;
    socklen_t len = sizeof a;
    int port = -1;
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

/* One PING round trip; 0 when the server answered +PONG, or -NOAUTH when it
 * requires a password (it is up all the same). A server still loading its
 * data answers -LOADING, which counts as not ready. */
static int ping_once(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    struct timeval tv = { 1, 0 };
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    struct sockaddr_in a;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((unsigned short)port);
    int ok = -1;
    if (connect(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        send(fd, "PING\r\n", 6, MSG_NOSIGNAL) == 6) {
        char buf[64];
        size_t got = 0;
        while (got < sizeof buf - 1) {
            ssize_t n = recv(fd, buf + got, sizeof buf - 1 - got, 0);
            if (n <= 0)
                break;
            got += (size_t)n;
            buf[got] = '\0';
            if (strstr(buf, "\r\n"))
                break;
        }
        buf[got] = '\0';
        if (strncmp(buf, "+PONG", 5) == 0 || strncmp(buf, "-NOAUTH", 7) == 0)
            ok = 0;
    }
    close(fd);
    return ok;
}

static void log_path(const char *dir, char *out, size_t n)
{
    snprintf(out, n, "%s/redis.log", dir);
}

/* Print the end of redis.log so a failed start explains itself. */
static void print_log_tail(const char *dir)
{
    char path[320];
    log_path(dir, path, sizeof path);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        fprintf(stderr, "redis-harness: (no log at %s)\n", path);
        return;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && st.st_size > 2048)
        lseek(fd, st.st_size - 2048, SEEK_SET);
    char buf[2049];
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n < 0)
        n = 0;
    buf[n] = '\0';
    fprintf(stderr, "redis-harness: --- tail of %s ---\n%s\nredis-harness: --- end of log ---\n",
            path, buf);
}

static long log_size(const char *dir)
{
    char path[320];
    log_path(dir, path, sizeof path);
    struct stat st;
    return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Only looks at what this attempt wrote (from offset on): the log is shared
 * by retries and by pause/resume cycles. */
static int log_says_port_in_use(const char *dir, long offset)
{
    char path[320];
    log_path(dir, path, sizeof path);
    FILE *f = fopen(path, "re");
    if (!f)
        return 0;
    fseek(f, offset, SEEK_SET);
    char line[1024];
    int hit = 0;
    while (fgets(line, sizeof line, f))
        if (strstr(line, "Address already in use"))
            hit = 1;
    fclose(f);
    return hit;
}

/* Search PATH like execvp would, falling back to Debian's location. Done in
 * the parent so the child only calls async-signal-safe functions. */
static int find_redis_server(char *out, size_t n)
{
    const char *path = getenv("PATH");
    if (path) {
        const char *p = path;
        while (*p) {
            const char *end = strchr(p, ':');
            size_t len = end ? (size_t)(end - p) : strlen(p);
            if (len > 0 && len + 14 < n) {
                snprintf(out, n, "%.*s/redis-server", (int)len, p);
                if (access(out, X_OK) == 0)
                    return 0;
            }
            if (!end)
                break;
            p = end + 1;
        }
    }
    snprintf(out, n, "/usr/bin/redis-server");
    return access(out, X_OK) == 0 ? 0 : -1;
}

static void free_argv(char **argv)
{
    if (!argv)
        return;
    for (char **p = argv; *p; p++)
        free(*p);
    free(argv);
}

static char **build_argv(const char *exe, const struct entry *e)
{
    char portbuf[16], logbuf[320];
    snprintf(portbuf, sizeof portbuf, "%d", e->port);
    log_path(e->dir, logbuf, sizeof logbuf);
    /* Persistence is off by default; extra args come last so they win. */
    const char *fixed[] = {
        exe, "--save", "", "--appendonly", "no", "--dir", e->dir,
        "--daemonize", "no", "--protected-mode", "yes", "--bind", "127.0.0.1",
        "--port", portbuf, "--logfile", logbuf,
    };
    size_t nfixed = sizeof fixed / sizeof fixed[0];
    size_t nextra = 0;
    while (e->extra && e->extra[nextra])
        nextra++;
    char **argv = calloc(nfixed + nextra + 1, sizeof *argv);
    if (!argv)
        return NULL;
    size_t i = 0;
    for (size_t k = 0; k < nfixed; k++, i++)
        if (!(argv[i] = strdup(fixed[k])))
            goto fail;
    for (size_t k = 0; k < nextra; k++, i++)
        if (!(argv[i] = strdup(e->extra[k])))
            goto fail;
    return argv;
fail:
    free_argv(argv);
    return NULL;
}

/* Fork+exec one redis-server for e (port and dir already set). */
static pid_t spawn(const struct entry *e)
{
    char exe[512];
    if (find_redis_server(exe, sizeof exe) != 0) {
        fprintf(stderr, "redis-harness: redis-server not found on PATH or in /usr/bin "
                        "(install redis-server, see scripts/deps)\n");
        return -1;
    }
    char **argv = build_argv(exe, e);
    if (!argv)
        return -1;
    char logbuf[320];
    log_path(e->dir, logbuf, sizeof logbuf);
    /* stdout/stderr go to the log too: config errors are printed there before
     * redis opens its logfile, and an inherited pipe would keep callers that
     * read our output (meson, shell $(...)) waiting. */
    int logfd = open(logbuf, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    int nullfd = open("/dev/null", O_RDONLY | O_CLOEXEC);
    if (logfd < 0 || nullfd < 0) {
        fprintf(stderr, "redis-harness: open %s: %s\n", logbuf, strerror(errno));
        if (logfd >= 0)
            close(logfd);
        if (nullfd >= 0)
            close(nullfd);
        free_argv(argv);
        return -1;
    }
    pid_t parent = getpid();
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        /* Die with the test; the getppid check closes the race where the
         * parent died before prctl. */
        prctl(PR_SET_PDEATHSIG, SIGTERM);
        if (getppid() != parent)
            _exit(127);
        dup2(nullfd, 0);
        dup2(logfd, 1);
        dup2(logfd, 2);
        /* Don't let redis hold the test's sockets or pipes open. */
        close_range(3, ~0U, 0);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        execv(argv[0], argv);
        static const char msg[] = "redis-harness: exec redis-server failed\n";
        if (write(2, msg, sizeof msg - 1) < 0) {
        }
        _exit(127);
    }
    int saved = errno;
    close(logfd);
    close(nullfd);
    free_argv(argv);
    if (pid < 0)
        fprintf(stderr, "redis-harness: fork: %s\n", strerror(saved));
    return pid;
}

/* 0 when the server answers PING; 1 when it exited because the port was
 * taken (caller may retry); -1 on any other failure. The child is reaped
 * (or killed and reaped) on failure. */
static int wait_ready(struct entry *e, pid_t pid, long log_offset)
{
    long long deadline = now_ms() + START_TIMEOUT_MS;
    for (;;) {
        int status;
        pid_t w = waitpid(pid, &status, WNOHANG);
        if (w == pid) {
            if (log_says_port_in_use(e->dir, log_offset))
                return 1;
            fprintf(stderr, "redis-harness: redis-server (pid %d, port %d) exited during startup (%s %d)\n",
                    (int)pid, e->port,
                    WIFEXITED(status) ? "exit status" : "signal",
                    WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            print_log_tail(e->dir);
            return -1;
        }
        if (ping_once(e->port) == 0)
            return 0;
        if (now_ms() >= deadline)
            break;
        sleep_ms(POLL_MS);
    }
    fprintf(stderr, "redis-harness: redis-server (pid %d, port %d) did not answer PING within %d ms\n",
            (int)pid, e->port, START_TIMEOUT_MS);
    print_log_tail(e->dir);
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    return -1;
}

/* SIGTERM, wait up to 5 s, then SIGKILL. Only ever signals a pid we forked
 * and have not reaped, so it cannot hit a recycled pid. */
static void terminate(pid_t pid)
{
    if (pid <= 0)
        return;
    if (kill(pid, SIGTERM) != 0 && errno == ESRCH)
        return;
    long long deadline = now_ms() + STOP_TIMEOUT_MS;
    for (;;) {
        pid_t w = waitpid(pid, NULL, WNOHANG);
        if (w == pid || (w < 0 && errno == ECHILD))
            return;
        if (now_ms() >= deadline)
            break;
        sleep_ms(POLL_MS);
    }
    fprintf(stderr, "redis-harness: redis-server pid %d ignored SIGTERM for %d ms, sending SIGKILL\n",
            (int)pid, STOP_TIMEOUT_MS);
    kill(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

static int rm_cb(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    if (remove(path) != 0 && errno != ENOENT)
        fprintf(stderr, "redis-harness: remove %s: %s\n", path, strerror(errno));
    return 0;
}

static void remove_dir(const char *dir)
{
    if (keep_dirs()) {
        fprintf(stderr, "redis-harness: keeping %s (TTB_KEEP_REDIS)\n", dir);
        return;
    }
    nftw(dir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

static void release(struct entry *e)
{
    free_argv(e->extra);
    memset(e, 0, sizeof *e);
}

static void cleanup_at_exit(void)
{
    for (int i = 0; i < MAX_SERVERS; i++) {
        struct entry *e = &registry[i];
        if (!e->in_use)
            continue;
        terminate(e->pid);
        remove_dir(e->dir);
        release(e);
    }
}

static struct entry *find_entry(const ttb_test_redis_t *r)
{
    for (int i = 0; i < MAX_SERVERS; i++)
        if (registry[i].in_use && strcmp(registry[i].dir, r->dir) == 0)
            return &registry[i];
    return NULL;
}

static void fill_public(ttb_test_redis_t *r, const struct entry *e)
{
    r->pid = (int)e->pid;
    r->port = e->port;
    snprintf(r->dir, sizeof r->dir, "%s", e->dir);
    snprintf(r->url, sizeof r->url, "redis://127.0.0.1:%d", e->port);
}

int ttb_test_redis_start(ttb_test_redis_t *r, const char *const *extra_args)
{
    if (!r)
        return -1;
    memset(r, 0, sizeof *r);
    if (!atexit_registered) {
        atexit(cleanup_at_exit);
        atexit_registered = 1;
    }
    struct entry *e = NULL;
    for (int i = 0; i < MAX_SERVERS && !e; i++)
        if (!registry[i].in_use)
            e = &registry[i];
    if (!e) {
        fprintf(stderr, "redis-harness: more than %d servers at once\n", MAX_SERVERS);
        return -1;
    }

    const char *tmp = getenv("TMPDIR");
    if (!tmp || !*tmp)
        tmp = "/tmp";
    int n = snprintf(e->dir, sizeof e->dir, "%s/ttb-redis-XXXXXX", tmp);
    if (n < 0 || (size_t)n >= sizeof e->dir) {
        fprintf(stderr, "redis-harness: TMPDIR too long: %s\n", tmp);
        memset(e, 0, sizeof *e);
        return -1;
    }
    if (!mkdtemp(e->dir)) {
        fprintf(stderr, "redis-harness: mkdtemp %s: %s\n", e->dir, strerror(errno));
        memset(e, 0, sizeof *e);
        return -1;
    }

    size_t nextra = 0;
    while (extra_args && extra_args[nextra])
        nextra++;
    e->extra = calloc(nextra + 1, sizeof *e->extra);
    if (!e->extra)
        goto fail;
    for (size_t k = 0; k < nextra; k++)
        if (!(e->extra[k] = strdup(extra_args[k])))
            goto fail;
    e->in_use = 1;

    for (int attempt = 1; attempt <= PORT_ATTEMPTS; attempt++) {
        e->port = pick_free_port();
        if (e->port <= 0) {
            fprintf(stderr, "redis-harness: cannot pick a free port: %s\n", strerror(errno));
            goto fail;
        }
        long off = log_size(e->dir);
        pid_t pid = spawn(e);
        if (pid < 0)
            goto fail;
        int rc = wait_ready(e, pid, off);
        if (rc == 0) {
            e->pid = pid;
            fill_public(r, e);
            return 0;
        }
        if (rc < 0)
            goto fail;
        fprintf(stderr, "redis-harness: port %d was taken, retrying (%d/%d)\n",
                e->port, attempt, PORT_ATTEMPTS);
    }
    fprintf(stderr, "redis-harness: no free port after %d attempts\n", PORT_ATTEMPTS);
fail:
    /* Keep the dir (and its log) only when asked; the log tail was printed. */
    remove_dir(e->dir);
    release(e);
    return -1;
}

int ttb_test_redis_pause(ttb_test_redis_t *r)
{
    struct entry *e = r ? find_entry(r) : NULL;
    if (!e) {
        fprintf(stderr, "redis-harness: pause: unknown server\n");
        return -1;
    }
    terminate(e->pid);
    e->pid = 0;
    r->pid = 0;
    return 0;
}

int ttb_test_redis_resume(ttb_test_redis_t *r)
{
    struct entry *e = r ? find_entry(r) : NULL;
    if (!e) {
        fprintf(stderr, "redis-harness: resume: unknown server\n");
        return -1;
    }
    if (e->pid > 0)
        return 0; /* already running */
    /* The port must stay the same (clients reconnect to it), so a port taken
     * while paused is an error, not a retry. */
    long off = log_size(e->dir);
    pid_t pid = spawn(e);
    if (pid < 0)
        return -1;
    int rc = wait_ready(e, pid, off);
    if (rc != 0) {
        if (rc > 0) {
            fprintf(stderr, "redis-harness: resume: port %d was taken while paused\n", e->port);
            print_log_tail(e->dir);
        }
        return -1;
    }
    e->pid = pid;
    fill_public(r, e);
    return 0;
}

int ttb_test_redis_stop(ttb_test_redis_t *r)
{
    struct entry *e = r ? find_entry(r) : NULL;
    if (!e) /* never started, or already stopped: nothing to do */
        return r && r->pid == 0 ? 0 : -1;
    terminate(e->pid);
    remove_dir(e->dir);
    release(e);
    r->pid = 0;
    return 0;
}
