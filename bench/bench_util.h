/*
 * bench/bench_util.h - helpers shared by the benchmark programs (POSIX only).
 *
 * Define BENCH_NAME (e.g. "bench_sync", used as the prefix of error
 * messages) before including this header, after "p2pgraph.h".
 */
#ifndef BENCH_UTIL_H
#define BENCH_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/utsname.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <wchar.h>

#ifndef BENCH_NAME
#error "define BENCH_NAME before including bench_util.h"
#endif

/* Monotonic wall clock in nanoseconds. */
static inline long long now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

/* Monotonic wall clock in milliseconds (the library's ullNow). */
static inline ULONGLONG now_ms(void) { return (ULONGLONG)(now_ns() / 1000000LL); }

/* calloc that never returns NULL (nor takes a zero size); exits on failure. */
static inline void *xcalloc(size_t n, size_t cb)
{
    void *p = calloc(n ? n : 1, cb ? cb : 1);
    if (!p) {
        fprintf(stderr, BENCH_NAME ": out of memory\n");
        exit(2);
    }
    return p;
}

/* Reports a failed library call (graph #i when i >= 0) and exits. */
static inline void die_hr_at(const char *what, int i, HRESULT hr)
{
    if (i >= 0) fprintf(stderr, BENCH_NAME ": %s #%d failed: 0x%08lX\n", what, i, (unsigned long)(uint32_t)hr);
    else fprintf(stderr, BENCH_NAME ": %s failed: 0x%08lX\n", what, (unsigned long)(uint32_t)hr);
    exit(2);
}

/* Reports a failed library call and exits. */
static inline void die_hr(const char *what, HRESULT hr) { die_hr_at(what, -1, hr); }

/* Makes fd non-blocking; -1 on failure. */
static inline int set_nonblock(int fd)
{
    int fl = fcntl(fd, F_GETFL, 0);
    return fl < 0 ? -1 : fcntl(fd, F_SETFL, fl | O_NONBLOCK);
}

/* qsort comparator for long long. */
static inline int cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}

/* qsort comparator for double. */
static inline int cmp_d(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Sorts n long longs ascending. */
static inline void sort_ll(long long *v, int n) { qsort(v, (size_t)n, sizeof *v, cmp_ll); }

/* Sorts n doubles ascending. */
static inline void sort_d(double *v, int n) { qsort(v, (size_t)n, sizeof *v, cmp_d); }

/* Nearest-rank percentile (pm per mille) of n sorted values, in their unit; 0 if n == 0. */
static inline double pctile(const long long *v, int n, int pm)
{
    long long k = ((long long)n * pm + 999) / 1000;
    if (n == 0) return 0;
    if (k < 1) k = 1;
    return (double)v[k - 1];
}

/* Nearest-rank percentile (p percent) of n sorted ns samples, in ms. */
static inline double pct_ms(const long long *v, int n, int p) { return pctile(v, n, 10 * p) / 1e6; }

/* Raises the soft RLIMIT_NOFILE to the hard one; *rl: the limit now, *before
 * (if non-NULL): the one found.  0 ok, -1 getrlimit or -2 setrlimit failed. */
static inline int raise_nofile(struct rlimit *rl, rlim_t *before)
{
    rlim_t was;
    if (getrlimit(RLIMIT_NOFILE, rl) != 0) return -1;
    was = rl->rlim_cur;
    if (before) *before = was;
    if (rl->rlim_cur >= rl->rlim_max) return 0;
    rl->rlim_cur = rl->rlim_max;
    if (setrlimit(RLIMIT_NOFILE, rl) == 0) return 0;
    rl->rlim_cur = was;
    return -2;
}

/* Creates dir (and build/ for a dir under it) and makes it the library's
 * database directory; prints an error and returns -1 on failure. */
static inline int setup_db_dir(const char *dir)
{
    wchar_t w[1100];
    if (!strncmp(dir, "build/", 6)) mkdir("build", 0755);
    mkdir(dir, 0755);
    swprintf(w, sizeof w / sizeof w[0], L"%s", dir);
    if (FAILED(PeerGraphSetDatabaseDirectory(w))) {
        fprintf(stderr, BENCH_NAME ": database dir\n");
        return -1;
    }
    return 0;
}

/* Prints the "command:" line and the "machine:" line (CPU model, uname). */
static inline void print_command_machine(int argc, char **argv)
{
    struct utsname u;
    char line[512], model[256] = "unknown";
    FILE *f = fopen("/proc/cpuinfo", "r");
    int i;
    printf("command:");
    for (i = 0; i < argc; i++) printf(" %s", argv[i]);
    printf("\n");
    if (f) {
        while (fgets(line, sizeof line, f))
            if (!strncmp(line, "model name", 10)) {
                char *p = strchr(line, ':');
                if (p) {
                    p++;
                    while (*p == ' ') p++;
                    p[strcspn(p, "\n")] = 0;
                    snprintf(model, sizeof model, "%s", p);
                }
                break;
            }
        fclose(f);
    }
    printf("machine: %ld CPUs online, %s", sysconf(_SC_NPROCESSORS_ONLN), model);
    if (uname(&u) == 0) printf(", %s %s %s", u.sysname, u.release, u.machine);
    printf("\n");
}

/* A TCP listener on [::1], ephemeral port (in *sa), SO_REUSEADDR; exits on failure. */
static inline int loopback_listener(struct sockaddr_in6 *sa, int backlog, int nonblock)
{
    socklen_t sl = sizeof *sa;
    int one = 1, fd = socket(AF_INET6, SOCK_STREAM, 0);
    memset(sa, 0, sizeof *sa);
    sa->sin6_family = AF_INET6;
    sa->sin6_addr = in6addr_loopback;
    if (fd < 0 || (nonblock && set_nonblock(fd) < 0) || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 ||
        bind(fd, (struct sockaddr *)sa, sizeof *sa) < 0 || listen(fd, backlog) < 0 ||
        getsockname(fd, (struct sockaddr *)sa, &sl) < 0) {
        perror(BENCH_NAME ": raw listener");
        exit(2);
    }
    return fd;
}

/* The library's time stamp (peer time) for now, as graph h sees it. */
static inline ULONGLONG peer_now(HGRAPH h)
{
    const PEER_NET_SHIM *pl = PeerGraphGetPlatformNetShim();
    FILETIME u, p;
    ULONGLONG utc = pl->pfnUtcNow(pl->pvContext);
    HRESULT hr;
    u.dwLowDateTime = (DWORD)utc;
    u.dwHighDateTime = (DWORD)(utc >> 32);
    if (FAILED(hr = PeerGraphUniversalTimeToPeerTime(h, &u, &p))) die_hr("PeerGraphUniversalTimeToPeerTime", hr);
    return ((ULONGLONG)p.dwHighDateTime << 32) | p.dwLowDateTime;
}

/* PeerGraphGetStatus of h (0 on failure). */
static inline DWORD status_of(HGRAPH h)
{
    DWORD s = 0;
    PeerGraphGetStatus(h, &s);
    return s;
}

/* PeerGraphGetDatabaseInfo of h; exits on failure. */
static inline PEER_DATABASE_INFO db_info(HGRAPH h)
{
    PEER_DATABASE_INFO di;
    HRESULT hr;
    memset(&di, 0, sizeof di);
    di.dwSize = sizeof di;
    if (FAILED(hr = PeerGraphGetDatabaseInfo(h, &di))) die_hr("PeerGraphGetDatabaseInfo", hr);
    return di;
}

/* Fills r: record type, expiration (peer time) and payload of cb bytes at data. */
static inline void init_record(PEER_RECORD *r, const GUID *type, ULONGLONG exp, uint8_t *data, ULONG cb)
{
    memset(r, 0, sizeof *r);
    r->dwSize = sizeof *r;
    r->type = *type;
    r->ftExpiration.dwLowDateTime = (DWORD)exp;
    r->ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    r->data.cbData = cb;
    r->data.pbData = data;
}

/* ------------------------------------------------------------------------- */
/* host loop: PeerGraphGetPollFds + poll() + PeerGraphService                */
/* ------------------------------------------------------------------------- */

typedef struct host_poll {
    PEER_POLL_FD *want, *ready;
    struct pollfd *pf;
    ULONG cap;
    /* what the last step saw */
    int want_write;         /* the library asked for PEER_POLL_WRITE on some socket */
    ULONGLONG deadline;     /* the library's next deadline (PEER_NO_DEADLINE: none) */
    /* sums over steps, for the caller to reset */
    long long getpollfds_ns, poll_ns, service_ns; /* service_ns includes turning revents into PEER_POLL_FDs */
    double service_max_ms;  /* the longest PeerGraphService call */
    long service_slow;      /* PeerGraphService calls over 10 ms */
    int untimed;            /* set by the caller: skip the four clock reads of the sums above
                               (bench/data's round trip: a lean host reads the clock twice a step) */
} host_poll;

/* Makes room for cap sockets (contents are not kept). */
static inline void host_poll_grow(host_poll *hp, ULONG cap)
{
    if (cap <= hp->cap) return;
    free(hp->want); free(hp->ready); free(hp->pf);
    hp->want = (PEER_POLL_FD *)xcalloc(cap, sizeof *hp->want);
    hp->ready = (PEER_POLL_FD *)xcalloc(cap, sizeof *hp->ready);
    hp->pf = (struct pollfd *)xcalloc(cap, sizeof *hp->pf);
    hp->cap = cap;
}

/* Frees the scratch of hp. */
static inline void host_poll_free(host_poll *hp)
{
    free(hp->want); free(hp->ready); free(hp->pf);
    memset(hp, 0, sizeof *hp);
}

/* One host step, waiting at most maxWaitMs; returns the number of ready sockets. */
static inline ULONG host_step(host_poll *hp, int maxWaitMs)
{
    long long ta = hp->untimed ? 0 : now_ns(), tb = 0, tc = 0, td = 0, te = 0;
    ULONG n = 0, nr = 0, i;
    ULONGLONG dl = PEER_NO_DEADLINE, t;
    int timeout, r, ww = 0;
    double d;
    HRESULT hr;
    if (!hp->cap) host_poll_grow(hp, 64);
    for (;;) {
        hr = PeerGraphGetPollFds(hp->want, hp->cap, &n, &dl);
        if (hr != E_NOT_SUFFICIENT_BUFFER) break;
        host_poll_grow(hp, n + 64);
    }
    if (FAILED(hr)) die_hr("PeerGraphGetPollFds", hr);
    if (!hp->untimed) tb = now_ns();
    t = now_ms();
    timeout = dl == PEER_NO_DEADLINE ? maxWaitMs : dl <= t ? 0 : (int)(dl - t < (ULONGLONG)maxWaitMs ? dl - t : (ULONGLONG)maxWaitMs);
    for (i = 0; i < n; i++) {
        hp->pf[i].fd = hp->want[i].s;
        hp->pf[i].events = (short)(((hp->want[i].dwEvents & PEER_POLL_READ) ? POLLIN : 0) |
                                   ((hp->want[i].dwEvents & PEER_POLL_WRITE) ? POLLOUT : 0));
        hp->pf[i].revents = 0;
        if (hp->want[i].dwEvents & PEER_POLL_WRITE) ww = 1;
    }
    r = poll(hp->pf, n, timeout);
    if (r < 0 && errno != EINTR) {
        perror(BENCH_NAME ": poll");
        exit(2);
    }
    if (!hp->untimed) tc = now_ns();
    for (i = 0; i < n && r > 0; i++) {
        short re = hp->pf[i].revents;
        if (!re) continue;
        hp->ready[nr].s = hp->pf[i].fd;
        hp->ready[nr].dwEvents = ((re & (POLLIN | POLLHUP)) ? PEER_POLL_READ : 0) | ((re & POLLOUT) ? PEER_POLL_WRITE : 0) |
                                 ((re & (POLLERR | POLLNVAL)) ? PEER_POLL_ERROR : 0);
        nr++;
    }
    if (!hp->untimed) td = now_ns();
    hr = PeerGraphService(hp->ready, nr, now_ms());
    if (FAILED(hr)) die_hr("PeerGraphService", hr);
    hp->want_write = ww;
    hp->deadline = dl;
    if (hp->untimed) return nr;
    te = now_ns();
    d = (double)(te - td) / 1e6;
    if (d > hp->service_max_ms) hp->service_max_ms = d;
    if (d > 10) hp->service_slow++;
    hp->getpollfds_ns += tb - ta;
    hp->poll_ns += tc - tb;
    hp->service_ns += te - tc;
    return nr;
}

/* Runs the host loop for about ms milliseconds. */
static inline void host_run_ms(host_poll *hp, int ms)
{
    long long end = now_ns() + (long long)ms * 1000000LL;
    while (now_ns() < end) host_step(hp, 5);
}

/* Pipes between a benchmark's processes (bench/data, bench/tls). */

/* Writes all n bytes (gives up on an error). */
static inline void write_all(int fd, const void *pv, size_t n)
{
    const char *p = (const char *)pv;
    while (n > 0) {
        ssize_t k = write(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return;
        p += k;
        n -= (size_t)k;
    }
}

/* Reads exactly n bytes within ms milliseconds; 0 ok, -1 EOF/error/timeout. */
static inline int read_full_ms(int fd, void *pv, size_t n, int ms)
{
    char *p = (char *)pv;
    long long end = now_ns() + (long long)ms * 1000000LL;
    while (n > 0) {
        struct pollfd pf;
        long long left = (end - now_ns()) / 1000000LL;
        ssize_t k;
        if (left <= 0) return -1;
        pf.fd = fd;
        pf.events = POLLIN;
        pf.revents = 0;
        if (poll(&pf, 1, (int)left) <= 0) continue;
        k = read(fd, p, n);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* 1 when the control pipe has a byte or EOF (waiting at most ms). */
static inline int ctl_ready(int fd, int ms)
{
    struct pollfd pf;
    pf.fd = fd;
    pf.events = POLLIN;
    pf.revents = 0;
    return poll(&pf, 1, ms) > 0;
}

/* Closes both ends of a pipe (those not -1 yet) and marks them -1. */
static inline void close_pair(int *fds)
{
    if (fds[0] >= 0) close(fds[0]);
    if (fds[1] >= 0) close(fds[1]);
    fds[0] = fds[1] = -1;
}

/* ------------------------------------------------------------------------- */
/* two processes, a receiver and a sender (bench/data, bench/tls)            */
/* ------------------------------------------------------------------------- */

/* What one end's process is given: its side and its pipes. */
typedef struct bench_end {
    int sender;  /* 0: the receiver (forked first), 1: the sender */
    int port;    /* sender: the port the receiver wrote to portfd; receiver: 0 */
    int portfd;  /* receiver: write its port (an int) here; sender: -1 */
    int out;     /* write the end's result struct here (write_all) */
    int ctl;     /* the parent's control pipe: EOF (ctl_ready) when the end may tear down */
} bench_end;

/* Where an end's result struct keeps its "int ok" and "char err[]". */
typedef struct bench_result_layout {
    size_t size, ok_off, err_off, err_size;
} bench_result_layout;

/* The layout of a result struct type with the members ok (int) and err (char array). */
#define BENCH_RESULT_LAYOUT(type) {sizeof(type), offsetof(type, ok), offsetof(type, err), sizeof(((type *)0)->err)}

/* One measurement between two processes. */
typedef struct bench_pair {
    /* An end's main, run in its own process (alarm(child_limit_s) set), which
     * then _exits with 0: reports a result struct on e->out, then waits for
     * EOF on e->ctl. */
    void (*end)(void *ctx, const bench_end *e);
    /* Optional: called once the sender's result is in (rs), before waiting
     * for the receiver's; ctl: the write end of the receiver's control pipe. */
    void (*sent)(void *ctx, int ctl, const void *rs);
    void *ctx;
    bench_result_layout res;  /* both ends report this struct */
    unsigned child_limit_s;   /* a child that runs longer is ended by SIGALRM */
    int port_ms;              /* how long the receiver may take to give its port */
    int result_ms;            /* how long each end may take to give its result */
    int reap_ms;              /* how long both may take to exit after the control pipes close (then SIGKILL) */
    int check_exit;           /* a child that did not exit with status 0 fails the pair */
} bench_pair;

static inline int bench_result_ok(const bench_result_layout *l, const void *r)
{
    int ok;
    memcpy(&ok, (const char *)r + l->ok_off, sizeof ok);
    return ok;
}

/* Marks result r failed, with why as its err. */
static inline void bench_result_fail(const bench_result_layout *l, void *r, const char *why)
{
    int no = 0;
    snprintf((char *)r + l->err_off, l->err_size, "%s", why);
    memcpy((char *)r + l->ok_off, &no, sizeof no);
}

/* Forks one end of bp (the pipes are already arranged); does not return in the child. */
static inline pid_t bench_pair_fork(const bench_pair *bp, const bench_end *e, const int *close_fds, int nclose)
{
    pid_t pid = fork();
    int i;
    if (pid < 0) {
        perror(BENCH_NAME ": fork");
        exit(2);
    }
    if (pid > 0) return pid;
    for (i = 0; i < nclose; i++)
        if (close_fds[i] >= 0) close(close_fds[i]);
    alarm(bp->child_limit_s);
    bp->end(bp->ctx, e);
    _exit(0);
}

/* Waits up to ms for both children to exit (ps < 0: no sender), then kills
 * and reaps what is left; 0 when both exited in time (and, with check_exit,
 * with status 0), else -1. */
static inline int bench_pair_reap(pid_t pr, pid_t ps, int ms, int check_exit)
{
    long long end = now_ns() + (long long)ms * 1000000LL;
    int stR = 0, stS = 0, doneR = 0, doneS = ps < 0, ok = 1;
    while ((!doneR || !doneS) && now_ns() < end) {
        if (!doneR && waitpid(pr, &stR, WNOHANG) == pr) doneR = 1;
        if (!doneS && waitpid(ps, &stS, WNOHANG) == ps) doneS = 1;
        if (!doneR || !doneS) {
            struct timespec ts = {0, 2000000L};
            nanosleep(&ts, NULL);
        }
    }
    if (!doneR) { kill(pr, SIGKILL); waitpid(pr, &stR, 0); ok = 0; }
    if (!doneS) { kill(ps, SIGKILL); waitpid(ps, &stS, 0); ok = 0; }
    if (check_exit && doneR && (!WIFEXITED(stR) || WEXITSTATUS(stR) != 0)) ok = 0;
    if (check_exit && doneS && ps >= 0 && (!WIFEXITED(stS) || WEXITSTATUS(stS) != 0)) ok = 0;
    return ok ? 0 : -1;
}

/* Runs bp: forks the receiver, passes its port to the sender it forks next,
 * collects the sender's result into rs and then the receiver's into rr
 * (each zeroed first; on a failure its err says why and ok is 0), closes the
 * control pipes so both tear down, and reaps them.  A sender that fails gets
 * the receiver killed (it would wait for data that never comes).  0 when both
 * ends reported ok (and exited in time), else -1. */
static inline int bench_pair_run(const bench_pair *bp, void *rr, void *rs)
{
    int portp[2], resr[2], ress[2], ctlr[2], ctls[2], port = 0, ok = 1;
    pid_t pr, ps = -1;
    bench_end e;

    memset(rr, 0, bp->res.size);
    memset(rs, 0, bp->res.size);
    if (pipe(portp) || pipe(resr) || pipe(ress) || pipe(ctlr) || pipe(ctls)) {
        perror(BENCH_NAME ": pipe");
        exit(2);
    }
    fflush(stdout);
    fflush(stderr);
    {
        const int cl[] = {portp[0], resr[0], ctlr[1], ress[0], ress[1], ctls[0], ctls[1]};
        e.sender = 0;
        e.port = 0;
        e.portfd = portp[1];
        e.out = resr[1];
        e.ctl = ctlr[0];
        pr = bench_pair_fork(bp, &e, cl, (int)(sizeof cl / sizeof cl[0]));
    }
    close(portp[1]); close(resr[1]); close(ctlr[0]);
    if (read_full_ms(portp[0], &port, sizeof port, bp->port_ms) != 0) {
        bench_result_fail(&bp->res, rr, "receiver gave no port");
        ok = 0;
    } else {
        const int cl[] = {portp[0], resr[0], ctlr[1], ress[0], ctls[1]};
        e.sender = 1;
        e.port = port;
        e.portfd = -1;
        e.out = ress[1];
        e.ctl = ctls[0];
        ps = bench_pair_fork(bp, &e, cl, (int)(sizeof cl / sizeof cl[0]));
        close(ress[1]); close(ctls[0]);
        ress[1] = ctls[0] = -1;
        if (read_full_ms(ress[0], rs, bp->res.size, bp->result_ms) != 0) bench_result_fail(&bp->res, rs, "sender died or timed out");
        if (!bench_result_ok(&bp->res, rs)) kill(pr, SIGKILL);
        if (bp->sent) bp->sent(bp->ctx, ctlr[1], rs);
        if (read_full_ms(resr[0], rr, bp->res.size, bp->result_ms) != 0) bench_result_fail(&bp->res, rr, "receiver died or timed out");
        ok = bench_result_ok(&bp->res, rr) && bench_result_ok(&bp->res, rs);
    }
    /* EOF on both control pipes: both ends tear down */
    close(ctlr[1]);
    close_pair(ctls);
    close(portp[0]); close(resr[0]);
    close_pair(ress);
    if (bench_pair_reap(pr, ps, bp->reap_ms, bp->check_exit) != 0) ok = 0;
    return ok ? 0 : -1;
}

/* Test messages of the data benchmarks: a sequence number at each end, and an
 * order-sensitive checksum (bench/data, bench/tls). */
static inline void msg_stamp(uint8_t *b, size_t n, uint64_t seq)
{
    uint64_t x = ~seq;
    memcpy(b, &seq, 8);
    memcpy(b + n - 8, &x, 8);
}

static inline uint64_t msg_seq(const uint8_t *b)
{
    uint64_t s;
    memcpy(&s, b, 8);
    return s;
}

/* Order-sensitive checksum step over the first, middle and last words. */
static inline uint64_t msg_sum(uint64_t acc, const uint8_t *b, size_t n)
{
    uint64_t a, m, z;
    memcpy(&a, b, 8);
    memcpy(&m, b + n / 2, 8);
    memcpy(&z, b + n - 8, 8);
    return (acc ^ (a * 0x9E3779B97F4A7C15ULL + (z ^ (m << 7)) + n)) * 0x100000001B3ULL;
}

#endif /* BENCH_UTIL_H */
