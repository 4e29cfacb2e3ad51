/*
 * bench/scale.c - N nodes (default 1000) of one graph in one process, one
 * thread, one host loop, over real IPv4 loopback sockets: every node
 * listens on an address of its own (127.<net>.x.y, PeerGraphListenAddress)
 * and its links leave from it, so a set of nodes can be killed at once as a
 * crash would (see bench/scale_harness.h).  Figures for issue 6's scenarios,
 * with the machine's loopback round trip measured in the same run:
 *
 *   S12  idle traffic per node per second and CPU of the idle graph
 *   S9   heap per node, per idle link, per record (glibc mallinfo2)
 *   S8   a joining node's presence reaching every node; a killed node seen
 *        gone by every node (NODE_CHANGED)
 *   S6   kill 50% / 80% at once: time until the survivors form one component
 *        with >= 2 neighbors each, and until a record published 100 ms after
 *        the kill reaches every survivor; fast profile, then compat
 *
 * Usage: bench_scale [-n N] [--quick] [-t TRIALS] [-r RECORDS] [-w IDLE_S]
 *                    [-c CAP_S] [-p JOINS] [-s SEED] [-d DBDIR] [--no-compat]
 *                    [--s8] [--procs P] [--poll | --epoll]
 * (run from the repository root; databases in build/tmp-bench-scale unless
 * -d, deleted at the end).  --quick: N = 100 and short phases (a smoke run).
 * --s8: graph A only, built, settled and then S8 alone (for profiling).
 * --procs P (2..8): S8's joins only, with the N nodes spread over P processes
 * (forks, one library instance and host loop each; see "S8 spread over
 * processes" below): in one process a join's flood wave is one thread's
 * work, so that figure tracks one core's speed; spread, the machine's cores
 * share it as separate hosts would.
 * SCALE_DEBUG=1 in the environment: after each S6, what the survivors left
 * below 2 neighbors see; after each S8 join, the messages sent meanwhile by
 * type, and for a join slower than 55 ms (SCALE_TRACE_MS=k: k ms) the
 * loop's steps meanwhile.  SCALE_PERF_CTL=FIFO: "enable" / "disable" written to a
 * perf control fifo around each S8 join, so that
 * `perf record -D -1 --control fifo:FIFO -- ./build/bench_scale --s8`
 * samples the join waves only (SCALE_PERF_TRIAL=k: join k's only).  With
 * SCALE_PERF_S6=50 (or 80) it samples that fast kill's repair instead
 * (SCALE_PERF_TRIAL=-1 keeps the joins out).  SCALE_S6_OWNER=1 puts the
 * signature owner (the lowest node ID) among S6's victims, -1 spares it
 * (unset: as the draw falls; each S6 line says which).
 *
 * The host loop (the "driver" line of the output says which ran):
 *   --epoll (the default; Linux): an epoll set kept by the library's poll
 *           callback (PeerGraphSetPollCallback); each step asks
 *           PeerGraphGetPollFds(NULL, 0, NULL, ...) for the deadline only, then
 *           epoll_wait (level-triggered) and PeerGraphService.
 *   --poll: each step rebuilds the whole set with PeerGraphGetPollFds and
 *           poll()s it (the only loop off Linux).
 * Both leave the killed nodes' sockets (zombies) out of every wait.  The
 * phases report wall time in PeerGraphService, in the wait (epoll_wait or
 * poll), in GetPollFds, and loop steps per second; for epoll also the
 * epoll_ctl calls the callback made (inside library calls, so inside the
 * Service figure).  SCALE_EPOLL_CHECK=1: the epoll set is compared with a full
 * PeerGraphGetPollFds at every step (slow; mismatches are counted and the
 * first ones printed).
 *
 * Four graphs are built one after another, each in its own address block:
 * fast A (S12, S9, S8, S6 50%), fast B (S6 80%), compat C (S12, S6 50%),
 * compat D (S6 80%).  Building: node 0 creates the graph; the others join 16
 * at a time, each to a random live node, and listen once synchronized; the
 * build ends when every node has 2..7 neighbors, all are one component and
 * every node holds every presence.
 */
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_scale: POSIX only (poll, dup2, setrlimit)\n");
    return 0;
}
#else

#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <sys/time.h>
#include <sys/mman.h>
#ifdef __linux__
#include <sys/epoll.h>
#include <sys/prctl.h>
#endif
#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
#define HAVE_MALLINFO2 1
#endif
#endif

#define BENCH_NAME "bench_scale"
#include "bench_util.h"
#include "scale_harness.h"

#define DB_DIR_N "build/tmp-bench-scale"
#define PING_BYTES 64
#define PING_ROUNDS 2000
#define REC_PAYLOAD 256

static const GUID REC_TYPE = {0x5ca1e000, 0xbe7c, 0x4a11, {0x90, 0x1d, 0xb3, 0x2c, 0x4e, 0x55, 0x01, 0x06}};

/* ------------------------------------------------------------------------- */
/* options                                                                   */
/* ------------------------------------------------------------------------- */

typedef struct opts {
    int n, trials, records, idle_s, cap_s, compat, check_ms, parallel, poll_driver;
    unsigned long long seed;
    const char *dbdir;
    int quick;
    int s8_only; /* --s8: graph A built and settled, then S8 only */
    int procs;   /* --procs P: S8 joins with the nodes spread over P processes */
} opts;

static opts O;

/* ------------------------------------------------------------------------- */
/* the real drivers                                                          */
/* ------------------------------------------------------------------------- */

/*
 * Two host loops over the same library, chosen on the command line:
 *
 *  epoll (the default on Linux): PeerGraphSetPollCallback keeps an epoll set
 *    equal to what the library wants (ep_on_poll: called only when a socket's
 *    wanted events change, and with 0 just before the library closes it).  A
 *    step is PeerGraphGetPollFds(NULL, 0, NULL, ...) for the deadline only
 *    (E_NOT_SUFFICIENT_BUFFER is expected; the deadline is set all the same),
 *    epoll_wait (level-triggered), PeerGraphService.
 *  poll (--poll): PeerGraphGetPollFds of every socket, poll(), Service: the
 *    set is rebuilt and polled whole at every step.
 *
 * Zombies (scale_net_is_zombie: the sockets of killed nodes, /dev/null under
 * their numbers) are never waited on.  The poll driver filters them out of
 * each step's set.  The epoll driver takes them out of the set at the kill
 * (real_kill_socket, before the dup2: the library is not told of the kill and
 * calls the callback again only if its interest in the number changes, or
 * with 0 before it closes it) and ignores whatever the callback says about
 * them afterwards; the library's 0 before it closes a zombie is then a no-op
 * here, and the number, once closed, can come back as a new socket that the
 * callback adds.  SCALE_EPOLL_CHECK=1 in the environment compares the epoll
 * set with a full PeerGraphGetPollFds at every step (slow; for checking only).
 */
enum { DRV_EPOLL, DRV_POLL };

typedef struct real_drv {
    int kind;                  /* DRV_EPOLL or DRV_POLL */
    /* poll(): the set rebuilt at every step (and the epoll check's scratch) */
    PEER_POLL_FD *want, *ready;
    struct pollfd *pf;
    ULONG cap;
#ifdef __linux__
    /* epoll: the set kept by the poll callback */
    int epfd;
    struct epoll_event *evs;
    PEER_POLL_FD *eready;
    int evcap;
#endif
    unsigned char *announced;  /* per fd number: the PEER_POLL_* set the library last announced (zombies too) */
    unsigned char *inset;      /* per fd number: 1 if in the epoll set */
    size_t fdcap;
    long watched;              /* fds in the epoll set */
    int check;                 /* SCALE_EPOLL_CHECK */
    unsigned long long check_steps, check_bad, ctl_errors, zombie_ready;
    /* accounting, reset by the phases */
    long long gpf_ns, wait_ns, svc_ns; /* GetPollFds (poll: with the set built; epoll: deadline only), the wait, Service */
    long long cb_ns;           /* in the poll callback (inside library calls, mostly PeerGraphService) */
    unsigned long long cb_calls, ctl_calls; /* poll callbacks; epoll_ctl calls (the callback's and the kills') */
    long steps;
    double svc_max_ms;
    /* SCALE_DEBUG: the last steps (start, wait, Service, ready sockets) for the slow-join timeline */
    struct step_rec { long long t0_us; int wait_us, svc_us, drain_us, nready; } *trace;
    unsigned long trace_n;
    ULONG last_fds;            /* poll: fds polled at the last step; epoll: fds in the set */
} real_drv;

static real_drv RD;

#define TRACE_STEPS 65536
static void trace_step(real_drv *d, long long ta, long long tc, long long td, ULONG nr)
{
    struct step_rec *x;
    if (!d->trace) return;
    x = &d->trace[d->trace_n++ % TRACE_STEPS];
    x->t0_us = ta / 1000;
    x->wait_us = (int)((tc - ta) / 1000);
    x->svc_us = (int)((td - tc) / 1000);
    x->drain_us = 0;
    x->nready = (int)nr;
}

static const char *drv_name(void) { return RD.kind == DRV_EPOLL ? "epoll" : "poll"; }
static const char *wait_name(void) { return RD.kind == DRV_EPOLL ? "epoll_wait()" : "poll()"; }

static void real_grow(real_drv *d, ULONG cap)
{
    if (cap <= d->cap) return;
    free(d->want); free(d->ready); free(d->pf);
    d->want = (PEER_POLL_FD *)xcalloc(cap, sizeof *d->want);
    d->ready = (PEER_POLL_FD *)xcalloc(cap, sizeof *d->ready);
    d->pf = (struct pollfd *)xcalloc(cap, sizeof *d->pf);
    d->cap = cap;
}

static void real_step(void *ctx, int maxWaitMs)
{
    real_drv *d = (real_drv *)ctx;
    long long ta = now_ns(), tb, tc, td;
    ULONG n = 0, nr = 0, i, k = 0;
    ULONGLONG dl = PEER_NO_DEADLINE, t;
    int timeout, r;
    double ms;
    HRESULT hr;
    if (!d->cap) real_grow(d, 4096);
    for (;;) {
        hr = PeerGraphGetPollFds(d->want, d->cap, &n, &dl);
        if (hr != E_NOT_SUFFICIENT_BUFFER) break;
        real_grow(d, n + 1024);
    }
    if (FAILED(hr)) die_hr("PeerGraphGetPollFds", hr);
    for (i = 0; i < n; i++) {
        if (scale_net_is_zombie(d->want[i].s)) continue;
        d->pf[k].fd = d->want[i].s;
        d->pf[k].events = (short)(((d->want[i].dwEvents & PEER_POLL_READ) ? POLLIN : 0) |
                                  ((d->want[i].dwEvents & PEER_POLL_WRITE) ? POLLOUT : 0));
        d->pf[k].revents = 0;
        k++;
    }
    d->last_fds = k;
    tb = now_ns();
    t = now_ms();
    timeout = dl == PEER_NO_DEADLINE ? maxWaitMs : dl <= t ? 0 : (int)(dl - t < (ULONGLONG)maxWaitMs ? dl - t : (ULONGLONG)maxWaitMs);
    r = poll(d->pf, k, timeout);
    if (r < 0 && errno != EINTR) { perror(BENCH_NAME ": poll"); exit(2); }
    tc = now_ns();
    for (i = 0; i < k && r > 0; i++) {
        short re = d->pf[i].revents;
        if (!re) continue;
        d->ready[nr].s = d->pf[i].fd;
        d->ready[nr].dwEvents = ((re & (POLLIN | POLLHUP)) ? PEER_POLL_READ : 0) | ((re & POLLOUT) ? PEER_POLL_WRITE : 0) |
                                ((re & (POLLERR | POLLNVAL)) ? PEER_POLL_ERROR : 0);
        nr++;
    }
    hr = PeerGraphService(d->ready, nr, now_ms());
    td = now_ns();
    if (FAILED(hr)) die_hr("PeerGraphService", hr);
    ms = (double)(td - tc) / 1e6;
    if (ms > d->svc_max_ms) d->svc_max_ms = ms;
    d->gpf_ns += tb - ta;
    d->wait_ns += tc - tb;
    d->svc_ns += td - tc;
    trace_step(d, ta, tc, td, nr);
    d->steps++;
}

#ifdef __linux__
/* Room in the per-fd tables for fd s. */
static void ep_fit(real_drv *d, PEER_SOCKET s)
{
    size_t nc = d->fdcap ? d->fdcap : 1024;
    if ((size_t)s < d->fdcap) return;
    while (nc <= (size_t)s) nc *= 2;
    d->announced = (unsigned char *)realloc(d->announced, nc);
    d->inset = (unsigned char *)realloc(d->inset, nc);
    if (!d->announced || !d->inset) { fprintf(stderr, BENCH_NAME ": out of memory\n"); exit(2); }
    memset(d->announced + d->fdcap, 0, nc - d->fdcap);
    memset(d->inset + d->fdcap, 0, nc - d->fdcap);
    d->fdcap = nc;
}

static int ep_ctl(real_drv *d, int op, PEER_SOCKET s, DWORD ev)
{
    struct epoll_event e;
    memset(&e, 0, sizeof e);
    /* level-triggered (no EPOLLET); EPOLLERR and EPOLLHUP are always reported */
    e.events = ((ev & PEER_POLL_READ) ? EPOLLIN : 0u) | ((ev & PEER_POLL_WRITE) ? EPOLLOUT : 0u);
    e.data.fd = s;
    d->ctl_calls++;
    return epoll_ctl(d->epfd, op, s, &e);
}

static void ep_error(real_drv *d, const char *what, PEER_SOCKET s, DWORD ev, int err)
{
    if (d->ctl_errors++ < 10)
        fprintf(stderr, BENCH_NAME ": epoll_ctl %s fd %d (events 0x%lx): %s\n", what, (int)s, (unsigned long)ev, strerror(err));
}

/* Takes fd s out of the epoll set (if there). */
static void ep_unwatch(real_drv *d, PEER_SOCKET s)
{
    if (s < 0 || (size_t)s >= d->fdcap || !d->inset[s]) return;
    if (ep_ctl(d, EPOLL_CTL_DEL, s, 0) < 0) ep_error(d, "DEL", s, 0, errno);
    d->inset[s] = 0;
    d->watched--;
}

/* What the library announced for fd s, into the epoll set. */
static void ep_apply(real_drv *d, PEER_SOCKET s, DWORD ev)
{
    if (s < 0) return;
    ep_fit(d, s);
    d->announced[s] = (unsigned char)ev;
    if (!ev || scale_net_is_zombie(s)) { /* not wanted, about to be closed, or a killed node's */
        ep_unwatch(d, s);
        return;
    }
    if (d->inset[s]) {
        if (ep_ctl(d, EPOLL_CTL_MOD, s, ev) == 0) return;
        /* ENOENT: the kernel dropped it, i.e. the number was closed without
         * the callback's 0 and now names another socket */
        ep_error(d, "MOD", s, ev, errno);
        d->inset[s] = 0;
        d->watched--;
    }
    if (ep_ctl(d, EPOLL_CTL_ADD, s, ev) == 0) {
        d->inset[s] = 1;
        d->watched++;
        return;
    }
    {
        int err = errno;
        ep_error(d, "ADD", s, ev, err);
        if (err == EEXIST && ep_ctl(d, EPOLL_CTL_MOD, s, ev) == 0) { d->inset[s] = 1; d->watched++; }
    }
}

/* The poll callback (inside library calls; it must not call the library). */
static void ep_on_poll(PVOID ctx, PEER_SOCKET s, DWORD ev)
{
    real_drv *d = (real_drv *)ctx;
    long long t = now_ns();
    ep_apply(d, s, ev);
    d->cb_calls++;
    d->cb_ns += now_ns() - t;
}

/* SCALE_EPOLL_CHECK: the epoll set against a full PeerGraphGetPollFds. */
static void ep_check(real_drv *d)
{
    ULONG n = 0, i, live = 0;
    ULONGLONG dl;
    HRESULT hr;
    int bad = 0;
    if (!d->cap) real_grow(d, 4096);
    for (;;) {
        hr = PeerGraphGetPollFds(d->want, d->cap, &n, &dl);
        if (hr != E_NOT_SUFFICIENT_BUFFER) break;
        real_grow(d, n + 1024);
    }
    if (FAILED(hr)) die_hr("PeerGraphGetPollFds", hr);
    for (i = 0; i < n; i++) {
        PEER_SOCKET s = d->want[i].s;
        if (scale_net_is_zombie(s)) continue;
        live++;
        if (s < 0 || (size_t)s >= d->fdcap || !d->inset[s] || d->announced[s] != d->want[i].dwEvents) {
            if (d->check_bad + (unsigned long long)bad < 10)
                fprintf(stderr, BENCH_NAME ": epoll check: fd %d wanted 0x%lx, announced 0x%x, %s the set\n", (int)s,
                        (unsigned long)d->want[i].dwEvents, s >= 0 && (size_t)s < d->fdcap ? d->announced[s] : 0,
                        s >= 0 && (size_t)s < d->fdcap && d->inset[s] ? "in" : "not in");
            bad++;
        }
    }
    if ((long)live != d->watched) {
        if (d->check_bad + (unsigned long long)bad < 10)
            fprintf(stderr, BENCH_NAME ": epoll check: %lu sockets wanted (zombies left out), %ld in the epoll set\n",
                    (unsigned long)live, d->watched);
        bad++;
    }
    d->check_steps++;
    d->check_bad += (unsigned long long)bad;
}

static void ep_step(void *ctx, int maxWaitMs)
{
    real_drv *d = (real_drv *)ctx;
    long long ta, tb, tc, td;
    ULONG nr = 0;
    ULONGLONG dl = PEER_NO_DEADLINE, t;
    int timeout, r, i;
    double ms;
    HRESULT hr;
    if (d->check) ep_check(d); /* not timed */
    if (!d->evcap || d->watched > d->evcap) { /* room for every socket in the set to be ready at once */
        d->evcap = (int)d->watched + 1024;
        free(d->evs); free(d->eready);
        d->evs = (struct epoll_event *)xcalloc((size_t)d->evcap, sizeof *d->evs);
        d->eready = (PEER_POLL_FD *)xcalloc((size_t)d->evcap, sizeof *d->eready);
    }
    ta = now_ns();
    /* the deadline only: the sockets are in the epoll set already */
    hr = PeerGraphGetPollFds(NULL, 0, NULL, &dl); /* O(1): no count */
    if (FAILED(hr)) die_hr("PeerGraphGetPollFds", hr);
    tb = now_ns();
    t = now_ms();
    timeout = dl == PEER_NO_DEADLINE ? maxWaitMs : dl <= t ? 0 : (int)(dl - t < (ULONGLONG)maxWaitMs ? dl - t : (ULONGLONG)maxWaitMs);
    r = epoll_wait(d->epfd, d->evs, d->evcap, timeout);
    if (r < 0 && errno != EINTR) { perror(BENCH_NAME ": epoll_wait"); exit(2); }
    tc = now_ns();
    for (i = 0; i < r; i++) {
        uint32_t re = d->evs[i].events;
        PEER_SOCKET s = d->evs[i].data.fd;
        if (scale_net_is_zombie(s)) { d->zombie_ready++; continue; } /* never: a zombie leaves the set at the kill */
        d->eready[nr].s = s;
        d->eready[nr].dwEvents = ((re & (EPOLLIN | EPOLLHUP)) ? PEER_POLL_READ : 0) | ((re & EPOLLOUT) ? PEER_POLL_WRITE : 0) |
                                 ((re & EPOLLERR) ? PEER_POLL_ERROR : 0);
        nr++;
    }
    hr = PeerGraphService(d->eready, nr, now_ms());
    td = now_ns();
    if (FAILED(hr)) die_hr("PeerGraphService", hr);
    ms = (double)(td - tc) / 1e6;
    if (ms > d->svc_max_ms) d->svc_max_ms = ms;
    d->gpf_ns += tb - ta;
    d->wait_ns += tc - tb;
    d->svc_ns += td - tc;
    d->steps++;
    d->last_fds = (ULONG)d->watched;
    trace_step(d, ta, tc, td, nr);
}
#endif /* __linux__ */

static long long real_now_us(void *ctx) { (void)ctx; return now_ns() / 1000; }

static void real_reset_counters(void)
{
    RD.gpf_ns = RD.wait_ns = RD.svc_ns = RD.cb_ns = 0;
    RD.ctl_calls = RD.cb_calls = 0;
    RD.steps = 0;
    RD.svc_max_ms = 0;
}

/* Killing a real socket: /dev/null over its fd.  The kernel closes the socket
 * (peers see FIN, or RST with unread data, exactly as when a process dies)
 * and the number stays taken until the library closes it.  The epoll driver
 * takes it out of its set first: nothing else would (the library does not
 * know of the kill). */
static int g_devnull = -1;
static void real_kill_socket(void *ctx, PEER_SOCKET s)
{
    (void)ctx;
#ifdef __linux__
    if (RD.kind == DRV_EPOLL) ep_unwatch(&RD, s);
#endif
    if (dup2(g_devnull, s) < 0) { perror(BENCH_NAME ": dup2"); exit(2); }
}
static void real_close_zombie(void *ctx, PEER_SOCKET s, int fresh) { (void)ctx; (void)fresh; close(s); }
/* A dead node's connect: a number that never becomes a connection. */
static PEER_SOCKET real_new_zombie(void *ctx)
{
    int fd;
    (void)ctx;
    fd = fcntl(g_devnull, F_DUPFD_CLOEXEC, 0);
    return fd < 0 ? PEER_INVALID_SOCKET : fd;
}

static scale_driver DRV;

/* ------------------------------------------------------------------------- */
/* helpers                                                                   */
/* ------------------------------------------------------------------------- */

static long long heap_in_use(void)
{
#ifdef HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
#else
    return -1;
#endif
}

static double cpu_s(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

/* Raw TCP ping-pong of 64 bytes over [::1], both ends in one poll() loop. */
static void raw_pingpong(long long *rtt, int rounds)
{
    struct sockaddr_in6 sa;
    int lfd, cfd, sfd, one = 1, i;
    uint8_t buf[PING_BYTES], msg[PING_BYTES];
    memset(msg, 'p', sizeof msg);
    lfd = loopback_listener(&sa, 4, 0);
    cfd = socket(AF_INET6, SOCK_STREAM, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof sa) < 0 || (sfd = accept(lfd, NULL, NULL)) < 0) {
        perror(BENCH_NAME ": raw connect");
        exit(2);
    }
    set_nonblock(cfd);
    set_nonblock(sfd);
    (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    (void)setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    for (i = 0; i < rounds; i++) {
        long long t0 = now_ns();
        int atSrv = 0, atCli = 0;
        if (send(cfd, msg, sizeof msg, MSG_NOSIGNAL) != (ssize_t)sizeof msg) { perror("send"); exit(2); }
        while (atCli < PING_BYTES) {
            struct pollfd pf[2];
            pf[0].fd = sfd; pf[0].events = POLLIN; pf[0].revents = 0;
            pf[1].fd = cfd; pf[1].events = POLLIN; pf[1].revents = 0;
            if (poll(pf, 2, 1000) < 0 && errno != EINTR) { perror("poll"); exit(2); }
            if (pf[0].revents & POLLIN) {
                ssize_t k = recv(sfd, buf, sizeof buf - (size_t)atSrv, 0);
                if (k > 0) {
                    atSrv += (int)k;
                    if (atSrv == PING_BYTES) {
                        if (send(sfd, buf, sizeof buf, MSG_NOSIGNAL) != (ssize_t)sizeof buf) { perror("send"); exit(2); }
                        atSrv = 0;
                    }
                }
            }
            if (pf[1].revents & POLLIN) {
                ssize_t k = recv(cfd, buf, sizeof buf - (size_t)atCli, 0);
                if (k > 0) atCli += (int)k;
            }
        }
        rtt[i] = now_ns() - t0;
    }
    close(cfd);
    close(sfd);
    close(lfd);
}

static double g_rtt_ms; /* the ceiling: loopback RTT p50 */

/* "123.4 ms (5678x RTT)" */
static const char *ms_rtt(char *buf, size_t cb, double ms)
{
    snprintf(buf, cb, "%.1f ms (%.0fx RTT)", ms, ms / g_rtt_ms);
    return buf;
}

static const char *met(int ok) { return ok ? "MET" : "MISSED"; }

/* p-th percentile (per mille) of n latencies in us, in ms. */
static double pct_us(long long *v, int n, int pm) { return (double)scale_pctile(v, n, pm) / 1000.0; }

/* ------------------------------------------------------------------------- */
/* building                                                                  */
/* ------------------------------------------------------------------------- */

typedef struct build_res {
    double open_ms, build_ms;   /* opening N graphs (untimed in the figures), joins + settle */
    long long heap0, heap_open; /* before opening, after opening */
    scale_mesh mesh;
    long join_failures;
    int ok;
} build_res;

static void build(scale_graph *g, int net, PEER_MAINTENANCE_PROFILE prof, const wchar_t *gid, int cap, build_res *br)
{
    long long t0, t;
    int i;
    memset(br, 0, sizeof *br);
    scale_init(g, cap, gid, net, prof, &DRV, O.seed + (unsigned)net, &REC_TYPE);
    g->parallel = O.parallel;
    br->heap0 = heap_in_use();
    t0 = now_ns();
    for (i = 0; i < O.n; i++) scale_open(g);
    br->open_ms = (double)(now_ns() - t0) / 1e6;
    br->heap_open = heap_in_use();
    t = scale_build(g, O.n, 50, O.quick ? 120000 : 900000, &br->mesh);
    br->ok = t >= 0;
    br->build_ms = (double)(now_ns() - t0) / 1e6 - br->open_ms;
    br->join_failures = g->join_failures;
    printf("  built %s graph (net 127.%d): %d nodes, opened in %.0f ms, joined and settled in %.1f s: %s; "
           "%d links, degree %d..%d, %d component(s); %ld join attempts retried\n",
           prof == PEER_MAINTENANCE_FAST ? "fast" : "compat", net, O.n, br->open_ms, br->build_ms / 1000,
           br->ok ? "ok" : "TIMED OUT", br->mesh.links, br->mesh.min_deg, br->mesh.max_deg, br->mesh.components,
           br->join_failures);
    printf("    sockets opened with no known owner so far: %llu, of which %llu were given one by the CONNECT sent on them"
           " (library connects made before a node listens leave from no address of its own)\n", SN.unknown_owner,
           SN.adopted);
    fflush(stdout);
    if (!br->ok) {
        scale_mesh_check(g, &br->mesh);
        printf("  (at the timeout: %d live, %d below 2 neighbors, %d components)\n", br->mesh.alive, br->mesh.below_min,
               br->mesh.components);
    }
}

/* ------------------------------------------------------------------------- */
/* S12: idle                                                                 */
/* ------------------------------------------------------------------------- */

static const char *type_name(unsigned t)
{
    static const char *const n[] = {"?", "AUTH_INFO", "CONNECT", "WELCOME", "REFUSE", "DISCONNECT", "SOLICIT_NEW",
                                    "SOLICIT_TIME", "SOLICIT_HASH", "ADVERTISE", "REQUEST", "FLOOD", "SYNC_END",
                                    "PT2PT(Ping)", "ACK"};
    if (t < sizeof n / sizeof n[0]) return n[t];
    if (t == 0x80) return "BATCH";
    if (t == 0x81) return "DEPARTED";
    if (t == 0x82) return "RENEW";
    if (t == 0x83) return "WANT";
    if (t == 0xFF) return "keepalive frame";
    return "other";
}

typedef struct idle_res {
    unsigned long long msgs[256], bytes[256], floods[5];
    double secs, bytes_per_node_s, sends_per_node_s, cpu_pct, svc_pct, wait_pct, gpf_pct, steps_per_s;
    double cpu_us_per_node_s;
    double cb_pct, cb_per_s, ctl_per_s; /* epoll: time in the poll callback (within library calls), its calls, epoll_ctl calls */
    ULONG fds;
    int ran;
} idle_res;

static void s12_idle(scale_graph *g, int secs, idle_res *r)
{
    unsigned long long b0 = SN.bytes_sent, s0 = SN.send_calls;
    double c0, c1;
    long long t0, t1;
    int live = 0, i;
    for (i = 0; i < g->n; i++) live += g->v[i].state == SN_LIVE;
    memset(r, 0, sizeof *r);
    memcpy(r->msgs, SN.msgs, sizeof r->msgs);
    memcpy(r->bytes, SN.msg_bytes, sizeof r->bytes);
    memcpy(r->floods, SN.floods, sizeof r->floods);
    real_reset_counters();
    c0 = cpu_s();
    t0 = now_ns();
    scale_run_ms_ex(g, secs * 1000, 1000); /* woken by the library's deadlines and sockets only */
    t1 = now_ns();
    c1 = cpu_s();
    r->secs = (double)(t1 - t0) / 1e9;
    r->bytes_per_node_s = (double)(SN.bytes_sent - b0) / live / r->secs;
    r->sends_per_node_s = (double)(SN.send_calls - s0) / live / r->secs;
    r->cpu_pct = 100.0 * (c1 - c0) / r->secs;
    r->cpu_us_per_node_s = 1e6 * (c1 - c0) / r->secs / live;
    r->svc_pct = 100.0 * (double)RD.svc_ns / 1e9 / r->secs;
    r->wait_pct = 100.0 * (double)RD.wait_ns / 1e9 / r->secs;
    r->cb_pct = 100.0 * (double)RD.cb_ns / 1e9 / r->secs;
    r->ctl_per_s = (double)RD.ctl_calls / r->secs;
    r->cb_per_s = (double)RD.cb_calls / r->secs;
    r->gpf_pct = 100.0 * (double)RD.gpf_ns / 1e9 / r->secs;
    r->steps_per_s = RD.steps / r->secs;
    r->fds = RD.last_fds;
    for (i = 0; i < 256; i++) {
        r->msgs[i] = SN.msgs[i] - r->msgs[i];
        r->bytes[i] = SN.msg_bytes[i] - r->bytes[i];
    }
    for (i = 0; i < 5; i++) r->floods[i] = SN.floods[i] - r->floods[i];
    r->ran = 1;
}

/* S12's steady state.  A graph at rest still renews each auto-refreshed
 * record 20 s before it expires: every node's presence every
 * ulPresenceLifetime - 20 s (280 s by default; the lifetime cannot be set
 * below 300 s), so N / 280 presence versions cross the graph every second,
 * and the short window after the build sees none.  With -w 300 or more the
 * bench first measures 10 s at rest, then the long window, which holds a
 * renewal of every presence: the renewals' cost is the difference,
 * counted per renewal (the growth of the presence versions node 0 holds)
 * and priced at the rate a lifetime L gives.  (Graph Info and Signature
 * renew once per L - 20 s for the whole graph, contacts every 880 s: in
 * the window, and 1000 times fewer than presences.) */
typedef struct renew_res {
    int ran;
    double renewals;                    /* presence versions the long window brought (node 0's view) */
    double bytes_per_renewal_node, cpu_us_per_renewal;
} renew_res;

/* The sum of the versions of the presence records h holds. */
static double presence_version_sum(HGRAPH h)
{
    static const GUID presType = {0x00000400, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
    HPEERENUM en;
    PEER_RECORD **items;
    ULONG n = 0, k;
    double sum = 0;
    if (FAILED(PeerGraphEnumRecords(h, &presType, NULL, &en))) return 0;
    if (PeerGraphGetItemCount(en, &n) == S_OK && n && PeerGraphGetNextItem(en, &n, (PVOID **)&items) == S_OK) {
        for (k = 0; k < n; k++) sum += items[k]->dwVersion;
        PeerGraphFreeData(items);
    }
    PeerGraphEndEnumeration(en);
    return sum;
}

static void renew_cost(const idle_res *rest, const idle_res *win, double renewals, renew_res *r)
{
    memset(r, 0, sizeof *r);
    r->renewals = renewals;
    if (renewals <= 0) return;
    r->bytes_per_renewal_node = (win->bytes_per_node_s - rest->bytes_per_node_s) * win->secs / renewals;
    r->cpu_us_per_renewal = 1e6 * (win->cpu_pct - rest->cpu_pct) / 100.0 * win->secs / renewals;
    r->ran = 1;
}

/* At rest plus the renewals of a graph whose presences live L seconds. */
static void steady_at(const idle_res *rest, const renew_res *r, int live, ULONG lifetime, double *bps, double *cpu)
{
    double rate = (double)live / (double)(lifetime - 20); /* presence renewals per second, graph-wide */
    *bps = rest->bytes_per_node_s + rate * r->bytes_per_renewal_node;
    *cpu = rest->cpu_pct + 100.0 * rate * r->cpu_us_per_renewal / 1e6;
}

/* A presence change (k PeerGraphSetNodeAttributes, one every 100 ms from
 * nodes spread over the graph: a new version whose content moved, a FLOOD
 * of the whole record everywhere): its bytes and CPU above the idle
 * window's.  Not a renewal (P19): for the cost of changing attributes. */
typedef struct refresh_res {
    int ran, versions, live;
    double secs, bytes_per_version_node, cpu_us_per_version;
} refresh_res;

static void s12_refresh(scale_graph *g, const idle_res *idle, refresh_res *r)
{
    unsigned long long b0 = SN.bytes_sent;
    double c0, c1, extra_bytes, extra_cpu;
    long long t0, t1;
    int i, k, live = 0;
    memset(r, 0, sizeof *r);
    for (i = 0; i < g->n; i++) live += g->v[i].state == SN_LIVE;
    k = live / 20 > 10 ? live / 20 : 10;
    c0 = cpu_s();
    t0 = now_ns();
    for (i = 0; i < k; i++) {
        int j = (int)(((long long)i * 7919) % g->n), n;
        for (n = 0; n < g->n && (g->v[j].state != SN_LIVE || !g->v[j].h); n++) j = (j + 1) % g->n;
        if (FAILED(PeerGraphSetNodeAttributes(g->v[j].h, (i & 1) ? L"x" : L"y"))) continue;
        r->versions++;
        scale_run_ms_ex(g, 100, 100);
    }
    scale_run_ms_ex(g, 1000, 1000); /* the last floods and their ACKs */
    t1 = now_ns();
    c1 = cpu_s();
    r->secs = (double)(t1 - t0) / 1e9;
    r->live = live;
    extra_bytes = (double)(SN.bytes_sent - b0) - idle->bytes_per_node_s * live * r->secs;
    extra_cpu = (c1 - c0) - idle->cpu_pct / 100.0 * r->secs;
    if (r->versions) {
        r->bytes_per_version_node = extra_bytes / r->versions / live;
        r->cpu_us_per_version = 1e6 * extra_cpu / r->versions;
    }
    r->ran = 1;
}

static void print_idle(const char *prof, const idle_res *r)
{
    printf("  %-6s idle %.1f s: %.1f B/s sent per node (%.2f sends/s per node); process CPU %.2f%% of one core "
           "(%.1f us per node per second = %.2fx RTT)\n",
           prof, r->secs, r->bytes_per_node_s, r->sends_per_node_s, r->cpu_pct, r->cpu_us_per_node_s,
           r->cpu_us_per_node_s / 1000.0 / g_rtt_ms);
    if (RD.kind == DRV_EPOLL)
        printf("         wall time in PeerGraphService %.2f%% (in the poll callback %.2f%%: %.0f calls/s, %.0f epoll_ctl/s),"
               " in epoll_wait() %.2f%% (%lu fds in the set), in GetPollFds (deadline only) %.2f%%; %.0f loop steps/s\n",
               r->svc_pct, r->cb_pct, r->cb_per_s, r->ctl_per_s, r->wait_pct, (unsigned long)r->fds, r->gpf_pct,
               r->steps_per_s);
    else
        printf("         wall time in PeerGraphService %.2f%%, in poll() %.2f%% (%lu fds), in GetPollFds %.2f%%;"
               " %.0f loop steps/s\n",
               r->svc_pct, r->wait_pct, (unsigned long)r->fds, r->gpf_pct, r->steps_per_s);
    {
        int t, any = 0;
        printf("         sent by type (per node per second: messages, bytes):");
        for (t = 0; t < 256; t++)
            if (r->msgs[t]) {
                printf("%s %s %.2f, %.1f B", any++ ? ";" : "", type_name((unsigned)t),
                       (double)r->msgs[t] / O.n / r->secs, (double)r->bytes[t] / O.n / r->secs);
            }
        printf("%s\n", any ? "" : " nothing");
        printf("         FLOODs by record type (per node per second): application %.2f, Graph Info %.2f, Signature %.2f,"
               " Contact %.2f, Presence %.2f\n", (double)r->floods[0] / O.n / r->secs, (double)r->floods[1] / O.n / r->secs,
               (double)r->floods[2] / O.n / r->secs, (double)r->floods[3] / O.n / r->secs, (double)r->floods[4] / O.n / r->secs);
    }
}

/* ------------------------------------------------------------------------- */
/* S9: memory                                                                */
/* ------------------------------------------------------------------------- */

typedef struct mem_res {
    int ran;
    long long heap0, heap_open, heap_steady;
    int live, links;
    double per_node, per_graph_empty;
    /* link probe */
    int probe_pairs, probe_links, probe_ok, probe_failed, probe_lost;
    HRESULT probe_hr;
    double per_link_end;
    /* presence records: what remains of the steady heap */
    double per_presence;
    /* records */
    int records, rec_nodes;
    double per_record, rec_secs;
    int rec_complete;
} mem_res;

static void set_maint_timer(scale_graph *g, ULONG ms, PEER_GRAPH_TIMERS *saved)
{
    int i;
    for (i = 0; i < g->n; i++) {
        PEER_GRAPH_TIMERS t;
        HRESULT hr;
        if (!g->v[i].h || g->v[i].state == SN_DEAD) continue;
        memset(&t, 0, sizeof t);
        t.dwSize = sizeof t;
        if (FAILED(hr = PeerGraphGetTimers(g->v[i].h, &t))) die_hr_at("PeerGraphGetTimers", i, hr);
        if (saved && i == 0) *saved = t;
        t.ulMaintenanceMs = ms;
        if (FAILED(hr = PeerGraphSetTimers(g->v[i].h, &t))) die_hr_at("PeerGraphSetTimers", i, hr);
    }
}

/* the link probe's attempts and their outcomes */
typedef struct probe_t { int u; ULONGLONG cid; int state; HRESULT hr; } probe_t;
static probe_t *g_probe;
static int g_nprobe, g_probe_connected, g_probe_failed, g_probe_lost;
static HRESULT g_probe_hr;
static void probe_event(scale_graph *g, int node, const PEER_GRAPH_EVENT_DATA *e)
{
    int k;
    (void)g;
    if (e->eventType != PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION) return;
    for (k = 0; k < g_nprobe; k++) {
        probe_t *p = &g_probe[k];
        if (p->u != node || p->cid != e->connectionChangeData.ullConnectionId) continue;
        if (e->connectionChangeData.status == PEER_CONNECTED) { p->state = 1; g_probe_connected++; }
        else if (e->connectionChangeData.status == PEER_CONNECTION_FAILED) {
            if (e->connectionChangeData.ullNextConnectionId) { p->cid = e->connectionChangeData.ullNextConnectionId; continue; }
            p->state = 2; g_probe_failed++; g_probe_hr = e->connectionChangeData.hrConnectionFailedReason;
        } else if (e->connectionChangeData.status == PEER_DISCONNECTED) { p->state = 3; g_probe_lost++; }
    }
}

static void s9_memory(scale_graph *g, const build_res *br, mem_res *r)
{
    scale_mesh m;
    PEER_GRAPH_TIMERS saved;
    long long h_a, h_b, h_c;
    int i, k, links_a;
    memset(r, 0, sizeof *r);
    r->ran = 1;
    r->heap0 = br->heap0;
    r->heap_open = br->heap_open;
    scale_mesh_check(g, &m);
    r->heap_steady = heap_in_use();
    r->live = m.alive;
    r->links = m.links;
    r->per_node = (double)(r->heap_steady - r->heap0) / m.alive;
    r->per_graph_empty = (double)(r->heap_open - r->heap0) / O.n;

    /* idle links: extra links between nodes with room, no maintenance drops meanwhile */
    set_maint_timer(g, 3600000, &saved);
    scale_run_ms(g, (int)saved.ulMaintenanceMs + 500); /* the round already scheduled runs once more */
    scale_mesh_check(g, &m);
    links_a = m.links;
    h_a = heap_in_use();
    {
        int want = O.n / 5, *used = (int *)xcalloc((size_t)g->n, sizeof(int)), tries;
        g_probe = (probe_t *)xcalloc((size_t)want + 1, sizeof *g_probe);
        g_nprobe = 0;
        g->on_event = probe_event;
        for (tries = 0; r->probe_pairs < want && tries < want * 50; tries++) {
            int u = scale_rand_below(g, g->n), v = scale_rand_below(g, g->n), linked = 0;
            ULONGLONG cid;
            if (u == v || used[u] || used[v] || g->v[u].state != SN_LIVE || g->v[v].state != SN_LIVE) continue;
            if (g->v[u].deg > PEER_MAX_NEIGHBORS - 2 || g->v[v].deg > PEER_MAX_NEIGHBORS - 2) continue;
            for (k = 0; k < g->v[u].deg; k++) linked |= g->adj[(size_t)u * SCALE_MAX_DEG + k] == v;
            if (linked) continue;
            used[u] = used[v] = 1;
            if (SUCCEEDED(PeerGraphConnect(g->v[u].h, g->v[v].peer, &g->v[v].addr, &cid))) {
                g_probe[g_nprobe].u = u;
                g_probe[g_nprobe].cid = cid;
                g_nprobe++;
                r->probe_pairs++;
            }
        }
        free(used);
    }
    scale_run_ms(g, 1500);
    g->on_event = NULL;
    scale_mesh_check(g, &m);
    h_b = heap_in_use();
    r->probe_ok = g_probe_connected;
    r->probe_failed = g_probe_failed;
    r->probe_lost = g_probe_lost;
    r->probe_hr = g_probe_hr;
    free(g_probe);
    g_probe = NULL;
    g_nprobe = 0;
    r->probe_links = m.links - links_a;
    r->per_link_end = r->probe_links > 0 ? (double)(h_b - h_a) / (2.0 * r->probe_links) : 0;
    /* presence: the steady heap less the empty graphs and the link endpoints */
    r->per_presence = (double)(r->heap_steady - r->heap_open - 2.0 * r->links * r->per_link_end) /
                      ((double)r->live * (r->live - 1));

    /* records: R records of REC_PAYLOAD bytes at random nodes, all replicated */
    {
        long long t0 = now_ns(), lim = (O.quick ? 60LL : 300LL) * 1000000000LL;
        int R = O.records, added = 0, done = 0;
        uint8_t data[REC_PAYLOAD];
        for (i = 0; i < g->n; i++) g->v[i].recs = 0;
        while (!done && now_ns() - t0 < lim) {
            int inflight = 0, low = R;
            for (i = 0; i < g->n; i++)
                if (g->v[i].state == SN_LIVE && g->v[i].recs < low) low = g->v[i].recs;
            inflight = added - low;
            while (added < R && inflight < 20) { /* at most 20 records spreading at once */
                int o;
                PEER_RECORD rec;
                GUID id;
                HRESULT hr;
                do o = scale_rand_below(g, g->n); while (g->v[o].state != SN_LIVE);
                for (k = 0; k < REC_PAYLOAD; k++) data[k] = (uint8_t)(added * 7 + k);
                init_record(&rec, &REC_TYPE, peer_now(g->v[o].h) + 3600ULL * 10000000ULL, data, REC_PAYLOAD);
                if (FAILED(hr = PeerGraphAddRecord(g->v[o].h, &rec, &id))) die_hr_at("PeerGraphAddRecord", o, hr);
                added++;
                inflight++;
            }
            scale_pump(g, 5);
            done = low >= R;
        }
        r->rec_secs = (double)(now_ns() - t0) / 1e9;
        r->rec_complete = done;
        /* held ACK entries (a fast link holds them until its keepalive,
         * PROTOCOL.md R10) are gone before the heap is read */
        scale_run_ms(g, (int)saved.ulKeepaliveMs + 200 > 500 ? (int)saved.ulKeepaliveMs + 200 : 500);
        h_c = heap_in_use();
        r->records = R;
        r->rec_nodes = m.alive;
        r->per_record = (double)(h_c - h_b) / ((double)R * m.alive);
    }
    /* back to the profile's timer; the probe's extra links are trimmed by it */
    for (i = 0; i < g->n; i++)
        if (g->v[i].h && g->v[i].state != SN_DEAD) PeerGraphSetTimers(g->v[i].h, &saved);
}

static void print_mem(const mem_res *r)
{
    printf("  heap in use (glibc mallinfo2 uordblks + hblkhd; kernel socket buffers excluded)\n");
    printf("    per node, all included (graph, %d links, %d presence records, events drained): %.0f B (%.1f KB); "
           "%d nodes: %.1f MB\n",
           r->links, r->live, r->per_node, r->per_node / 1024, r->live, (double)(r->heap_steady - r->heap0) / 1048576.0);
    printf("    per graph, opened and empty: %.0f B\n", r->per_graph_empty);
    printf("    per idle link endpoint: %.0f B (%d extra links between %d pairs; both ends in this process: %.0f B per link)\n",
           r->per_link_end, r->probe_links, r->probe_pairs, 2 * r->per_link_end);
    printf("      (probe: %d connected, %d failed (last 0x%08lX), %d connected then lost)\n", r->probe_ok, r->probe_failed,
           (unsigned long)(DWORD)r->probe_hr, r->probe_lost);
    printf("    per presence record held (the rest of the steady heap / N(N-1)): %.0f B\n", r->per_presence);
    printf("    per application record of %d B held by a node: %.1f B = payload + %.1f B (%d records at %d nodes, "
           "replicated in %.1f s%s)\n",
           REC_PAYLOAD, r->per_record, r->per_record - REC_PAYLOAD, r->records, r->rec_nodes, r->rec_secs,
           r->rec_complete ? "" : ", NOT COMPLETE");
    printf("      (the ID table grows 1.25 times when 3/4 full, every 25%% more records: a window of fewer records\n"
           "      than that, as the default 100, charges a whole growth to its records or none; -r 1000 spans growths)\n");
}

static int g_perf_ctl = -1; /* SCALE_PERF_CTL: a perf --control fifo */

/* ------------------------------------------------------------------------- */
/* S6 debugging (SCALE_DEBUG=1)                                              */
/* ------------------------------------------------------------------------- */

/* SCALE_DEBUG: neighbor events per node during S6 */
typedef struct dbg_node { int connected, failed, disc; HRESULT last; int reasons[8]; } dbg_node;
static dbg_node *g_dbg;
static void dbg_event(scale_graph *g, int node, const PEER_GRAPH_EVENT_DATA *e)
{
    const PEER_EVENT_CONNECTION_CHANGE_DATA *c = &e->connectionChangeData;
    dbg_node *d = &g_dbg[node];
    (void)g;
    if (e->eventType != PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION) return;
    if (c->status == PEER_CONNECTED) d->connected++;
    else if (c->status == PEER_DISCONNECTED) d->disc++;
    else {
        d->failed++;
        d->last = c->hrConnectionFailedReason;
        d->reasons[c->hrConnectionFailedReason == PEER_E_TCP_CONNECTION_REFUSED ? 0
                   : c->hrConnectionFailedReason == PEER_E_CONNECTION_REFUSED ? 1
                   : c->hrConnectionFailedReason == PEER_E_TIMEOUT ? 2
                   : c->hrConnectionFailedReason == PEER_E_ALREADY_EXISTS ? 3 : 4]++;
    }
}

/* SCALE_DEBUG: what the survivors below 2 neighbors see. */
static void stuck_report(scale_graph *g)
{
    int i, shown = 0;
    for (i = 0; i < g->n && shown < 10; i++) {
        scale_node *x = &g->v[i];
        HPEERENUM en;
        ULONG c = 0, nodes = 0;
        DWORD st = 0;
        if (x->state != SN_LIVE || x->deg >= PEER_MIN_NEIGHBORS) continue;
        shown++;
        if (SUCCEEDED(PeerGraphEnumConnections(x->h, PEER_CONNECTION_NEIGHBOR, &en))) {
            PEER_CONNECTION_INFO **items = NULL;
            ULONG k, m = 16;
            PeerGraphGetItemCount(en, &c);
            if (c && SUCCEEDED(PeerGraphGetNextItem(en, &m, (PVOID **)&items)) && items) {
                for (k = 0; k < m; k++) {
                    int j = scale_index_of_id(g, items[k]->ullNodeId);
                    printf("    [debug] node %d: neighbor node %d (state %d)\n", i, j, j >= 0 ? (int)g->v[j].state : -1);
                }
                PeerGraphFreeData(items);
            }
            PeerGraphEndEnumeration(en);
        }
        if (SUCCEEDED(PeerGraphEnumNodes(x->h, NULL, &en))) {
            PeerGraphGetItemCount(en, &nodes);
            PeerGraphEndEnumeration(en);
        }
        PeerGraphGetStatus(x->h, &st);
        printf("    [debug] node %d: %d live neighbors, %lu connected neighbor links, presence known %d (EnumNodes %lu), status 0x%lx\n",
               i, x->deg, (unsigned long)c, x->known, (unsigned long)nodes, (unsigned long)st);
        if (g_dbg)
            printf("            since the kill: %d connected, %d disconnected, %d failed (tcp refused %d, refused %d, timeout %d,"
                   " exists %d, other %d; last 0x%08lX)\n", g_dbg[i].connected, g_dbg[i].disc, g_dbg[i].failed,
                   g_dbg[i].reasons[0], g_dbg[i].reasons[1], g_dbg[i].reasons[2], g_dbg[i].reasons[3], g_dbg[i].reasons[4],
                   (unsigned long)(DWORD)g_dbg[i].last);
    }
}

static void fmt_t(char *b, size_t cb, double ms, double capMs)
{
    if (ms < 0) snprintf(b, cb, "> %.0f s", capMs / 1000);
    else snprintf(b, cb, "%.0f ms (%.0fx RTT)", ms, ms / g_rtt_ms);
}

static double g_s6_svc_max; /* the longest PeerGraphService call during the last S6 */
static long g_s6_steps;
static double g_s6_wall_s, g_s6_svc_pct, g_s6_wait_pct, g_s6_gpf_pct, g_s6_cpu_pct, g_s6_cb_pct; /* the last S6's loop */
static unsigned long long g_s6_cb_calls, g_s6_ctl_calls;
static unsigned long long g_s6_msgs[256], g_s6_bytes[256]; /* sent during the last S6, by type */
static unsigned long long g_s6_floods[5];                   /* ... FLOODs by record type (as floods[] of scale_net) */

/* "FLOOD 1234 (56 KB); ..." for the types sent */
static void print_types(const unsigned long long *msgs, const unsigned long long *bytes)
{
    int t, any = 0;
    for (t = 0; t < 256; t++)
        if (msgs[t]) printf("%s %s %llu (%.0f KB)", any++ ? ";" : "", type_name((unsigned)t), msgs[t], bytes[t] / 1024.0);
    printf("%s\n", any ? "" : " nothing");
}

/* S6 with the SCALE_DEBUG report of survivors left below 2 neighbors. */
static void s6(scale_graph *g, int pct, scale_s6 *r)
{
    int dbg = getenv("SCALE_DEBUG") != NULL, t;
    if (getenv("SCALE_S6_OWNER")) g->s6_owner = atoi(getenv("SCALE_S6_OWNER")); /* 1: killed, -1: spared */
    long long t0;
    double c0;
    if (dbg) {
        g_dbg = (dbg_node *)xcalloc((size_t)g->n, sizeof *g_dbg);
        g->on_event = dbg_event;
        g->on_s6_late = stuck_report;
    }
    real_reset_counters();
    memcpy(g_s6_msgs, SN.msgs, sizeof g_s6_msgs);
    memcpy(g_s6_bytes, SN.msg_bytes, sizeof g_s6_bytes);
    memcpy(g_s6_floods, SN.floods, sizeof g_s6_floods);
    c0 = cpu_s();
    t0 = now_ns();
    /* SCALE_PERF_CTL with SCALE_PERF_S6=pct: perf records this kill's repair only */
    if (g_perf_ctl >= 0 && getenv("SCALE_PERF_S6") && atoi(getenv("SCALE_PERF_S6")) == pct && write(g_perf_ctl, "enable\n", 7) < 0)
        perror(BENCH_NAME ": SCALE_PERF_CTL");
    scale_s6_run(g, pct, (long long)O.cap_s * 1000, O.check_ms, REC_PAYLOAD, r);
    if (g_perf_ctl >= 0 && getenv("SCALE_PERF_S6") && atoi(getenv("SCALE_PERF_S6")) == pct && write(g_perf_ctl, "disable\n", 8) < 0)
        perror(BENCH_NAME ": SCALE_PERF_CTL");
    g_s6_wall_s = (double)(now_ns() - t0) / 1e9;
    g_s6_cpu_pct = 100.0 * (cpu_s() - c0) / g_s6_wall_s;
    g_s6_svc_pct = 100.0 * (double)RD.svc_ns / 1e9 / g_s6_wall_s;
    g_s6_wait_pct = 100.0 * (double)RD.wait_ns / 1e9 / g_s6_wall_s;
    g_s6_gpf_pct = 100.0 * (double)RD.gpf_ns / 1e9 / g_s6_wall_s;
    g_s6_cb_pct = 100.0 * (double)RD.cb_ns / 1e9 / g_s6_wall_s;
    g_s6_cb_calls = RD.cb_calls;
    g_s6_ctl_calls = RD.ctl_calls;
    g_s6_svc_max = RD.svc_max_ms;
    g_s6_steps = RD.steps;
    for (t = 0; t < 256; t++) {
        g_s6_msgs[t] = SN.msgs[t] - g_s6_msgs[t];
        g_s6_bytes[t] = SN.msg_bytes[t] - g_s6_bytes[t];
    }
    for (t = 0; t < 5; t++) g_s6_floods[t] = SN.floods[t] - g_s6_floods[t];
    if (dbg) stuck_report(g);
    g->on_event = NULL;
    g->on_s6_late = NULL;
    free(g_dbg);
    g_dbg = NULL;
}

static void print_kill(const char *prof, const scale_s6 *r)
{
    char a[64], b[64], c[64], d[64], e[64];
    fmt_t(a, sizeof a, r->t_mesh_ms, r->cap_ms);
    fmt_t(b, sizeof b, r->t_rec_ms, r->cap_ms);
    fmt_t(c, sizeof c, r->t_noisolated_ms, r->cap_ms);
    fmt_t(d, sizeof d, r->t_deg_ms, r->cap_ms);
    fmt_t(e, sizeof e, r->t_onecomp_ms, r->cap_ms);
    printf("  %-6s kill %d%%: %d killed (%d sockets), %d survivors; the signature owner (lowest node ID) %s; first check: %d isolated,"
           " %d below 2 neighbors, %d components\n", prof, r->pct, r->killed, r->sockets, r->survivors,
           r->owner_killed ? "among them" : "survived", r->isolated_first, r->below_first, r->comps_first);
    printf("         one component and every survivor >= 2 neighbors: %s after the kill\n", a);
    printf("           (every survivor >= 2 neighbors: %s; one component: %s; no survivor with 0 neighbors: %s)\n", d, e, c);
    printf("         record published 100 ms after the kill at every survivor: %s after publication", b);
    if (r->t_rec_kill_ms >= 0) printf(" (%.0f ms after the kill)", r->t_rec_kill_ms);
    printf("; missing at the end: %d\n", r->rec_missing);
    printf("         isolated 5 s after the kill: %d; at the end: %d survivors, degree %d..%d, %d below 2, %d component(s)"
           " (largest %d)\n", r->isolated_5s, r->end.alive, r->end.min_deg, r->end.max_deg, r->end.below_min,
           r->end.components, r->end.largest);
    printf("         at the end each survivor still lists %.1f dead nodes and misses %.1f live ones (PeerGraphEnumNodes)\n",
           r->stale_presence, r->missing_presence);
    printf("         loop: %ld steps, longest PeerGraphService call %.0f ms; %d mesh checks, %.2f ms each%s\n", g_s6_steps,
           g_s6_svc_max, r->checks, r->check_ms_mean, r->unresolved ? " (WARNING: sockets of unknown owner at the kill)" : "");
    printf("         %.1f s of wall time: PeerGraphService %.1f%%, %s %.1f%%, GetPollFds%s %.1f%% (the rest: event drain,"
           " mesh checks); process CPU %.0f%% of one core\n", g_s6_wall_s, g_s6_svc_pct, wait_name(), g_s6_wait_pct,
           RD.kind == DRV_EPOLL ? " (deadline only)" : "", g_s6_gpf_pct, g_s6_cpu_pct);
    if (RD.kind == DRV_EPOLL)
        printf("         poll callback: %llu calls, %.1f%% of wall time (inside the library calls); %llu epoll_ctl calls"
               " (the kill's DELs included)\n", g_s6_cb_calls, g_s6_cb_pct, g_s6_ctl_calls);
    printf("         sent by the survivors meanwhile (messages, bytes):");
    print_types(g_s6_msgs, g_s6_bytes);
    printf("         FLOODs by record type: application %llu, Graph Info %llu, Signature %llu, Contact %llu, Presence %llu\n",
           g_s6_floods[0], g_s6_floods[1], g_s6_floods[2], g_s6_floods[3], g_s6_floods[4]);
}

/* A graph built for one S6 kill only (graphs B and D): build, settle 3 s,
 * kill pct%, print, close. */
static void kill_graph(scale_graph *g, const char *title, int net, PEER_MAINTENANCE_PROFILE prof, const wchar_t *gid,
                       build_res *br, int pct, scale_s6 *k)
{
    printf("\n[%s]\n", title);
    build(g, net, prof, gid, O.n, br);
    scale_run_ms(g, 3000);
    s6(g, pct, k);
    print_kill(prof == PEER_MAINTENANCE_FAST ? "fast" : "compat", k);
    fflush(stdout);
    scale_close_all(g);
    scale_free(g);
}

/* ------------------------------------------------------------------------- */
/* main                                                                      */
/* ------------------------------------------------------------------------- */

/* SCALE_DEBUG: a join whose last node took over 55 ms: the loop's steps
 * meanwhile (the gap is the time outside wait and Service: event drain, mesh
 * bookkeeping) */
static void s8_join_report(scale_graph *g, int trial, long long t0, long long last)
{
    unsigned long i, from;
    long long prev_end = -1;
    int shown = 0;
    static unsigned long long m0[256], b0[256], f0[5];
    (void)g;
    if (last < 0) {
        memcpy(m0, SN.msgs, sizeof m0);
        memcpy(b0, SN.msg_bytes, sizeof b0);
        memcpy(f0, SN.floods, sizeof f0);
    } else if (RD.trace) {
        unsigned long long m[256], b[256];
        int t;
        for (t = 0; t < 256; t++) { m[t] = SN.msgs[t] - m0[t]; b[t] = SN.msg_bytes[t] - b0[t]; }
        printf("    S8 join %d, sent meanwhile:", trial);
        print_types(m, b);
        printf("      FLOODs by record type: application %llu, Graph Info %llu, Signature %llu, Contact %llu, Presence %llu\n",
               SN.floods[0] - f0[0], SN.floods[1] - f0[1], SN.floods[2] - f0[2], SN.floods[3] - f0[3], SN.floods[4] - f0[4]);
    }
    if (g_perf_ctl >= 0 && (!getenv("SCALE_PERF_TRIAL") || atoi(getenv("SCALE_PERF_TRIAL")) == trial)) {
        /* SCALE_PERF_CTL: perf records the waves only (SCALE_PERF_TRIAL=k: join k's only) */
        const char *cmd = last < 0 ? "enable\n" : "disable\n";
        if (write(g_perf_ctl, cmd, strlen(cmd)) < 0) perror(BENCH_NAME ": SCALE_PERF_CTL");
    }
    if (!RD.trace || last <= (getenv("SCALE_TRACE_MS") ? atoi(getenv("SCALE_TRACE_MS")) * 1000LL : 55000)) return;
    printf("    S8 join %d took %.1f ms: the loop's steps (t from PeerGraphConnect, ms; wait / Service / gap us; ready"
           " sockets), steps under 300 us of Service left out\n", trial, last / 1000.0);
    from = RD.trace_n > TRACE_STEPS ? RD.trace_n - TRACE_STEPS : 0;
    for (i = from; i < RD.trace_n; i++) {
        const struct step_rec *x = &RD.trace[i % TRACE_STEPS];
        long long gap = prev_end < 0 ? 0 : x->t0_us - prev_end;
        prev_end = x->t0_us + x->wait_us + x->svc_us;
        if (x->t0_us < t0 - 2000 || x->t0_us > t0 + last) continue;
        if (x->svc_us < 300 && gap < 300 && x->wait_us < 300) continue;
        if (++shown > 80) break;
        printf("      t %7.2f: %6d / %6d / %6lld us, %4d ready\n", (x->t0_us - t0) / 1000.0, x->wait_us, x->svc_us, gap,
               x->nready);
    }
}

/* ------------------------------------------------------------------------- */
/* S8 spread over processes (--procs P)                                      */
/* ------------------------------------------------------------------------- */

/*
 * One graph of N nodes over P processes: P forks of this program, each with
 * its own library instance and host loop (the epoll driver), all on real
 * loopback.  Rank r holds nodes r, r + P, r + 2P, ... of the run (its local
 * node i is node i * P + r, peer name "n<i * P + r>", listening in address
 * block 127.<SPREAD_NET0 + r>).  In one process a join's flood wave, about
 * 2,400 FLOODs over 2,100 links, is one thread's work, so S8 there measures
 * how fast one core sends and reads them all; spread over the machine's
 * cores, the processes do their shares of the wave at once, as separate
 * machines would.
 *
 * The processes share one anonymous mapping made before the forks (spread_sh
 * and the arrays after it).  Each rank writes its nodes' listen ports, its
 * live count, its readiness and, per trial, when each of its nodes popped
 * NODE_CHANGED CONNECTED for the joiner (CLOCK_MONOTONIC: one clock for every
 * process); rank 0 sequences the phases through `cmd` and reads the rest.
 * Joins go to a random live node of the whole run.  Built = in every rank,
 * every node live, at 2..7 neighbors and holding every presence (components
 * are not checked across processes: a node holding all N presences has been
 * reached by every node's flood).  Trial k's joiner opens in rank k % P and
 * joins a random live node of the run; its node ID is published before its
 * PeerGraphConnect, and every rank reads it after each wait and before
 * draining events, so no sighting is missed.
 */
#define SPREAD_MAXP 8
#define SPREAD_NET0 40
enum { SP_BUILD = 0, SP_SETTLE = 1, SP_QUIT = 2, SP_FAILED = 3, SP_TRIAL = 16 };

typedef struct spread_sh {
    volatile int cmd;                  /* rank 0: SP_* (SP_TRIAL + k: trial k) */
    volatile int ready[SPREAD_MAXP];   /* rank r: built */
    volatile int live[SPREAD_MAXP];    /* rank r: live nodes */
    volatile int degsum[SPREAD_MAXP];  /* rank r: neighbors of its nodes, summed (at its last check) */
    volatile int mindeg[SPREAD_MAXP], maxdeg[SPREAD_MAXP];
    volatile int done[SPREAD_MAXP];    /* rank r: trials finished here */
    volatile ULONGLONG watch;          /* the current trial's joiner (0: not yet opened) */
} spread_sh;

static struct {
    spread_sh *sh;
    unsigned short *port;   /* [rank][cap]: listen port (host order), 0 = not live */
    long long *t0, *tl;     /* [trial]: the joiner's PeerGraphConnect, its listen (us) */
    long long *seen;        /* [trial][rank][cap]: NODE_CHANGED for the joiner (us); -1 not seen, -2 not counted */
    long long *target;      /* [trial]: the node the joiner joined (rank * cap + local index) */
    long long picked;       /* this process: spread_pick's last choice */
    int p, rank, cap, trials;
    size_t bytes;
    pid_t parent, kids[SPREAD_MAXP];
} SPR;

#define SP_SEEN(k, r, i) SPR.seen[((size_t)(k) * SPR.p + (r)) * SPR.cap + (i)]

/* The mapping, then the forks: returns this process's rank (0: the parent). */
static int spread_fork(void)
{
    size_t nport = (size_t)SPR.p * SPR.cap, nseen = (size_t)O.trials * nport;
    unsigned char *m;
    int r;
    SPR.trials = O.trials;
    SPR.bytes = sizeof(spread_sh) + 16 + nport * sizeof(unsigned short) + 16 + 3 * (size_t)O.trials * sizeof(long long) +
                nseen * sizeof(long long);
    m = (unsigned char *)mmap(NULL, SPR.bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) { perror(BENCH_NAME ": mmap"); exit(2); }
    SPR.sh = (spread_sh *)m;
    SPR.port = (unsigned short *)(m + ((sizeof(spread_sh) + 15) & ~(size_t)15));
    SPR.t0 = (long long *)((unsigned char *)SPR.port + ((nport * sizeof(unsigned short) + 15) & ~(size_t)15));
    SPR.tl = SPR.t0 + O.trials;
    SPR.target = SPR.tl + O.trials;
    SPR.seen = SPR.target + O.trials;
    fflush(stdout);
    fflush(stderr);
    SPR.parent = getpid();
    for (r = 1; r < SPR.p; r++) {
        pid_t pid = fork();
        if (pid < 0) { perror(BENCH_NAME ": fork"); exit(2); }
        if (pid == 0) {
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
            if (getppid() != SPR.parent) _exit(1); /* the parent died before the signal was set */
            return SPR.rank = r;
        }
        SPR.kids[r] = pid;
    }
    return SPR.rank = 0;
}

/* A random live node of the run (not node i of this rank) for node i's join. */
static int spread_pick(scale_graph *g, int i, PEER_ADDRESS *to)
{
    int tries;
    for (tries = 0; tries < 100000; tries++) {
        int r = scale_rand_below(g, SPR.p), j = scale_rand_below(g, SPR.cap);
        unsigned short port = SPR.port[(size_t)r * SPR.cap + j];
        if (!port || (r == SPR.rank && j == i)) continue;
        memset(to, 0, sizeof *to);
        to->dwSize = sizeof *to;
        to->sin6 = scale_addr(SPREAD_NET0 + r, j);
        to->sin6.sin6_port = htons(port);
        SPR.picked = (long long)r * SPR.cap + j;
        return 1;
    }
    return 0;
}

/* Ports and the live count out, the other ranks' live counts in. */
static void spread_publish(scale_graph *g)
{
    int i, live = 0, r, extra = 0;
    for (i = 0; i < g->n; i++)
        if (g->v[i].state == SN_LIVE) {
            live++;
            if (!SPR.port[(size_t)SPR.rank * SPR.cap + i]) SPR.port[(size_t)SPR.rank * SPR.cap + i] = ntohs(g->v[i].addr.sin6.sin6_port);
        }
    SPR.sh->live[SPR.rank] = live;
    for (r = 0; r < SPR.p; r++)
        if (r != SPR.rank) extra += SPR.sh->live[r];
    g->extra_live = extra;
}

/* Every node of this rank at 2..7 neighbors (any rank's); the sums for the report. */
static int spread_degrees_ok(scale_graph *g)
{
    int i, ok = 1, sum = 0, lo = 1 << 30, hi = 0;
    for (i = 0; i < g->n; i++) {
        HPEERENUM en;
        ULONG c = 0;
        if (g->v[i].state != SN_LIVE || FAILED(PeerGraphEnumConnections(g->v[i].h, PEER_CONNECTION_NEIGHBOR, &en))) {
            ok = 0;
            continue;
        }
        PeerGraphGetItemCount(en, &c);
        PeerGraphEndEnumeration(en);
        sum += (int)c;
        if ((int)c < lo) lo = (int)c;
        if ((int)c > hi) hi = (int)c;
        if (c < PEER_MIN_NEIGHBORS || c > PEER_MAX_NEIGHBORS) ok = 0;
    }
    SPR.sh->degsum[SPR.rank] = sum;
    SPR.sh->mindeg[SPR.rank] = lo;
    SPR.sh->maxdeg[SPR.rank] = hi;
    return ok;
}

/* Trial cmd - SP_TRIAL begins here (if it has not): marks cleared and, in
 * the joiner's rank, the joiner opened, published and started.  Called with
 * the latest cmd after each wait as well, before the events are drained: a
 * sighting of a new joiner cannot arrive before its trial's cmd is visible. */
static void spread_switch(scale_graph *g, int cmd, int *trial, int *joiner, long long *ttrial)
{
    int i;
    if (cmd < SP_TRIAL || cmd - SP_TRIAL == *trial) return;
    *trial = cmd - SP_TRIAL;
    for (i = 0; i < g->n; i++) g->v[i].t_mark = -1;
    g->watch_node = 0;
    g->watch_ct = PEER_NODE_CHANGE_CONNECTED;
    *joiner = -1;
    *ttrial = scale_now(g);
    if (*trial % SPR.p != SPR.rank) return;
    if ((*joiner = scale_open(g)) < 0) { fprintf(stderr, BENCH_NAME ": no room for joiner %d\n", *trial); exit(2); }
    g->watch_node = g->v[*joiner].id;
    SPR.sh->watch = g->watch_node;
    __sync_synchronize();
    scale_join_start(g, *joiner);
    SPR.t0[*trial] = g->v[*joiner].t_join;
    SPR.target[*trial] = SPR.picked;
}

/* A rank's whole run: build, settle, trials, close.  Rank 0 also sequences
 * the phases; returns 0, or -1 if the build timed out or a rank failed. */
static int spread_rank(int count)
{
    scale_graph g;
    spread_sh *sh = SPR.sh;
    int i, r, trial = -1, joiner = -1, rc = 0;
    long long tcheck = 0, tphase = real_now_us(NULL), ttrial = 0, tpause = 0, tbuild = tphase;
    scale_init(&g, SPR.cap, L"bench-scale-s", SPREAD_NET0 + SPR.rank, PEER_MAINTENANCE_FAST, &DRV, O.seed + (unsigned)SPR.rank,
               &REC_TYPE);
    g.parallel = O.parallel;
    g.no_create = SPR.rank != 0;
    g.name_mul = SPR.p;
    g.name_add = SPR.rank;
    g.pick_remote = spread_pick;
    for (i = 0; i < count; i++) scale_open(&g);
    if (SPR.rank == 0) scale_listen(&g, 0);
    spread_publish(&g);
    for (;;) {
        int cmd = sh->cmd;
        long long now = scale_now(&g);
        __sync_synchronize(); /* cmd before anything it orders (watch, done) */
        if (cmd == SP_QUIT || cmd == SP_FAILED) break;
        if (SPR.rank && getppid() != SPR.parent) _exit(1); /* rank 0 is gone (no parent-death signal off Linux) */
        spread_switch(&g, cmd, &trial, &joiner, &ttrial);
        if (cmd == SP_BUILD) {
            int left = SPR.port[0] ? scale_join_tick(&g, 0, g.n) : g.n; /* rank 0's node 0 first */
            if (now - tcheck >= 50000) {
                tcheck = now;
                sh->ready[SPR.rank] = !left && scale_presence_complete(&g) && spread_degrees_ok(&g);
            }
        }
        if (cmd >= SP_TRIAL && sh->done[SPR.rank] == trial) { /* this trial, not finished here */
            int all = 1;
            if (joiner >= 0) {
                scale_join_tick(&g, joiner, joiner + 1);
                if (g.v[joiner].state == SN_LIVE && !SPR.tl[trial]) SPR.tl[trial] = g.v[joiner].t_listen;
            }
            for (i = 0; i < g.n && all; i++)
                if (i != joiner && g.v[i].state == SN_LIVE && g.v[i].t_mark < 0) all = 0;
            if ((all && (joiner < 0 || SPR.tl[trial])) || now - ttrial > 10000000) {
                for (i = 0; i < SPR.cap; i++)
                    SP_SEEN(trial, SPR.rank, i) = i >= g.n || i == joiner || g.v[i].state != SN_LIVE ? -2 : g.v[i].t_mark;
                __sync_synchronize();
                sh->done[SPR.rank] = trial + 1;
            }
        }
        if (SPR.rank == 0) { /* the sequencer */
            for (r = 1; r < SPR.p; r++) {
                int st;
                if (SPR.kids[r] > 0 && waitpid(SPR.kids[r], &st, WNOHANG) == SPR.kids[r]) {
                    fprintf(stderr, BENCH_NAME ": rank %d ended early (status %d)\n", r, st);
                    SPR.kids[r] = 0;
                    sh->cmd = SP_FAILED;
                    rc = -1;
                }
            }
            if (rc) {
                /* a rank ended: SP_FAILED stands (nothing below may overwrite it) */
            } else if (cmd == SP_BUILD) {
                int all = 1;
                for (r = 0; r < SPR.p; r++) all &= sh->ready[r];
                if (all) {
                    int links = 0, lo = 1 << 30, hi = 0;
                    for (r = 0; r < SPR.p; r++) {
                        links += sh->degsum[r];
                        if (sh->mindeg[r] < lo) lo = sh->mindeg[r];
                        if (sh->maxdeg[r] > hi) hi = sh->maxdeg[r];
                    }
                    printf("  built: %d nodes in %d processes in %.1f s; %d links, degree %d..%d, every presence at every node\n",
                           O.n, SPR.p, (double)(now - tbuild) / 1e6, links / 2, lo, hi);
                    fflush(stdout);
                    sh->cmd = SP_SETTLE;
                    tphase = now;
                } else if (now - tbuild > (O.quick ? 120000000LL : 900000000LL)) {
                    printf("  build TIMED OUT after %.0f s:", (double)(now - tbuild) / 1e6);
                    for (r = 0; r < SPR.p; r++) printf(" rank %d: %d live, %s;", r, sh->live[r], sh->ready[r] ? "ready" : "not ready");
                    printf("\n");
                    sh->cmd = SP_FAILED;
                    rc = -1;
                }
            } else if (cmd == SP_SETTLE && now - tphase >= 4000000) { /* maintenance rounds done, as before S8 in one process */
                sh->watch = 0;
                __sync_synchronize();
                sh->cmd = SP_TRIAL;
            } else if (cmd >= SP_TRIAL) {
                int k = cmd - SP_TRIAL, all = 1;
                for (r = 0; r < SPR.p; r++) all &= sh->done[r] == k + 1;
                if (all && !tpause) tpause = now;
                if (all && now - tpause >= 300000) { /* 300 ms of quiet, as in one process */
                    tpause = 0;
                    sh->watch = 0;
                    __sync_synchronize();
                    sh->cmd = k + 1 == SPR.trials ? SP_QUIT : cmd + 1;
                }
            }
        }
        scale_step(&g, 5);
        __sync_synchronize();
        cmd = sh->cmd;
        __sync_synchronize();
        spread_switch(&g, cmd, &trial, &joiner, &ttrial);
        if (!g.watch_node && trial >= 0 && sh->watch) g.watch_node = sh->watch;
        scale_drain(&g);
        spread_publish(&g);
    }
    scale_close_all(&g);
    scale_free(&g);
    return sh->cmd == SP_FAILED ? -1 : rc;
}

/* Rank 0, after the run: the trials of every rank as one scale_vis. */
static void spread_collect(scale_vis *v)
{
    int k, r, i;
    scale_vis_alloc(v, SPR.trials, SPR.p * SPR.cap);
    for (k = 0; k < SPR.trials; k++) {
        long long last = 0, t0 = SPR.t0[k];
        int ok = 1, done = 1;
        for (r = 0; r < SPR.p; r++) done &= SPR.sh->done[r] >= k + 1;
        if (!t0 || !done) continue; /* not run, or cut short (a rank failed): its sightings were never written */
        v->trials++;
        if (SPR.tl[k]) v->sync[v->nsync++] = SPR.tl[k] - t0;
        for (r = 0; r < SPR.p; r++)
            for (i = 0; i < SPR.cap; i++) {
                long long s = SP_SEEN(k, r, i);
                if (s == -2) continue;
                if (s < 0) { v->missing++; ok = 0; continue; }
                v->lat[v->nlat++] = s - t0;
                if (SPR.tl[k]) v->lat_pub[v->npub++] = s - SPR.tl[k];
                if (s - t0 > last) last = s - t0;
            }
        v->complete += ok;
        if (ok) v->last[v->nlast++] = last;
        if (getenv("SCALE_DEBUG"))
            printf("    S8 join %d: joiner in rank %d joined rank %lld's node %lld; synchronized and listening after %.1f ms,"
                   " last node %.1f ms after PeerGraphConnect\n", k, k % SPR.p, SPR.target[k] / SPR.cap,
                   SPR.target[k] % SPR.cap, SPR.tl[k] ? (SPR.tl[k] - t0) / 1000.0 : -1.0, last / 1000.0);
    }
    scale_sort_ll(v->lat, v->nlat);
    scale_sort_ll(v->lat_pub, v->npub);
    scale_sort_ll(v->last, v->nlast);
    scale_sort_ll(v->sync, v->nsync);
}

/* The S8 join lines of the summary (one process or spread). */
static void print_s8_join(const scale_vis *v, const char *where)
{
    char a[64], b[64], c[64], d[64];
    double jp99 = pct_us(v->lat, v->nlat, 990);
    printf("\nS8  presence of a joining node at every node (%d joins x %d nodes, %s):\n", v->trials, O.n, where);
    printf("      from PeerGraphConnect:  p50 %s, p99 %s, max %s\n", ms_rtt(a, sizeof a, pct_us(v->lat, v->nlat, 500)),
           ms_rtt(b, sizeof b, jp99), ms_rtt(c, sizeof c, v->nlat ? v->lat[v->nlat - 1] / 1000.0 : 0));
    printf("      from its listen (presence published): p50 %s, p99 %s\n",
           ms_rtt(a, sizeof a, pct_us(v->lat_pub, v->npub, 500)), ms_rtt(b, sizeof b, pct_us(v->lat_pub, v->npub, 990)));
    printf("      join to synchronized: p50 %s, max %s; the last node: p50 %s, max %s; never seen %d\n",
           ms_rtt(a, sizeof a, pct_us(v->sync, v->nsync, 500)), ms_rtt(b, sizeof b, v->nsync ? v->sync[v->nsync - 1] / 1000.0 : 0),
           ms_rtt(c, sizeof c, pct_us(v->last, v->nlast, 500)), ms_rtt(d, sizeof d, v->nlast ? v->last[v->nlast - 1] / 1000.0 : 0),
           v->missing);
    printf("      target p99 <= 50 ms: %s\n", met(v->nlat && !v->missing && v->trials == O.trials && jp99 <= 50));
}

/* --procs P: the whole run of every rank after the library's set-up; rank 0
 * prints the summary.  Returns the exit status. */
static int spread_main(long long *rtt, long long tstart)
{
    int count = (O.n - SPR.rank + SPR.p - 1) / SPR.p, rc, r, bad = 0;
    scale_vis v;
    double rtt_p99;
    if (SPR.rank == 0) {
        printf("\n[fast profile, graph S: %d nodes in %d processes (rank r holds nodes r, r + %d, ...), S8 joins only]\n", O.n,
               SPR.p, SPR.p);
        fflush(stdout);
    }
    rc = spread_rank(count);
    PeerGraphShutdown();
    scale_net_free();
    if (SPR.rank != 0) {
        fflush(stdout);
        _exit(rc ? 1 : 0);
    }
    for (r = 1; r < SPR.p; r++) {
        int st = 0;
        if (SPR.kids[r] > 0 && (waitpid(SPR.kids[r], &st, 0) != SPR.kids[r] || !WIFEXITED(st) || WEXITSTATUS(st))) bad++;
    }
    if (rc) bad++;
    spread_collect(&v);
    printf("  S8 join: %d joins, %d reached every node within 10 s%s\n", v.trials, v.complete,
           bad ? "; the run FAILED (see above and stderr)" : "");
    raw_pingpong(rtt + PING_ROUNDS, PING_ROUNDS);
    sort_ll(rtt, 2 * PING_ROUNDS);
    g_rtt_ms = pct_ms(rtt, 2 * PING_ROUNDS, 50);
    rtt_p99 = pct_ms(rtt, 2 * PING_ROUNDS, 99);
    printf("\n==== summary (N = %d in %d processes, %s driver in each) ====\n", O.n, SPR.p, drv_name());
    printf("machine: loopback RTT (64 B ping-pong, start and end of the run pooled) p50 %.4f ms, p99 %.4f ms;"
           " every time below is also given in RTTs\n", g_rtt_ms, rtt_p99);
    {
        char where[64];
        snprintf(where, sizeof where, "the nodes spread over %d processes", SPR.p);
        print_s8_join(&v, where);
    }
    printf("\ntotal run time %.1f s\n", (double)(now_ns() - tstart) / 1e9);
    scale_vis_free(&v);
    munmap((void *)SPR.sh, SPR.bytes);
    return rc || bad ? 1 : 0;
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [-n N] [--quick] [-t TRIALS] [-r RECORDS] [-w IDLE_S] [-c CAP_S] [-p JOINS] [-s SEED] [-d DBDIR]"
            " [--no-compat] [--s8] [--procs P] [--poll | --epoll]\n"
            "  defaults: N 1000, 20 trials (S8), 100 records (S9), 10 s idle (S12), 30 s cap (S6), 16 joins at once\n"
            "  -w 300 or more: S12 also measures a window holding a renewal of every presence (the steady state)\n"
            "  --quick: N 100, 5 trials, 20 records, 3 s idle, 15 s cap\n"
            "  --s8: graph A only, S8 only (no S12, S9, S6: for profiling the joins and kills)\n"
            "  --procs P (2..8): S8 joins only, the N nodes spread over P processes (one loop each)\n"
            "  host loop: --epoll (the default on Linux: PeerGraphSetPollCallback + epoll_wait) or --poll\n"
            "  (PeerGraphGetPollFds + poll() at every step)\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    PEER_VERSION_DATA vd;
    HRESULT hr;
    struct rlimit rl;
    rlim_t before;
    long long *rtt = (long long *)xcalloc(2 * PING_ROUNDS, sizeof *rtt), tstart = now_ns();
    scale_net_ops ops;
    scale_graph g;
    build_res bA, bB, bC, bD;
    idle_res iFast, iCompat;
    refresh_res rFast;
    renew_res nFast;
    idle_res iRest;
    int live0 = 0;
    mem_res mem;
    scale_vis vJoin, vKill;
    scale_s6 kF50, kF80, kC50, kC80;
    int i, rtt_n = 0;
    double rtt_p99;

    O.n = 1000; O.trials = 20; O.records = 100; O.idle_s = 10; O.cap_s = 30; O.compat = 1; O.check_ms = 25;
    O.parallel = 16; O.seed = 1; O.dbdir = DB_DIR_N;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) { O.quick = 1; O.n = 100; O.trials = 5; O.records = 20; O.idle_s = 3; O.cap_s = 15; }
    }
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) continue;
        else if (!strcmp(argv[i], "--no-compat")) O.compat = 0;
        else if (!strcmp(argv[i], "--s8")) { O.s8_only = 1; O.compat = 0; }
        else if (!strcmp(argv[i], "--procs") && i + 1 < argc) { O.procs = atoi(argv[++i]); O.s8_only = 1; O.compat = 0; }
        else if (!strcmp(argv[i], "--poll")) O.poll_driver = 1;
        else if (!strcmp(argv[i], "--epoll")) O.poll_driver = 0;
        else if (!strcmp(argv[i], "-n") && i + 1 < argc) O.n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-t") && i + 1 < argc) O.trials = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) O.records = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-w") && i + 1 < argc) O.idle_s = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-c") && i + 1 < argc) O.cap_s = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-p") && i + 1 < argc) O.parallel = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc) O.seed = strtoull(argv[++i], NULL, 10);
        else if (!strcmp(argv[i], "-d") && i + 1 < argc) O.dbdir = argv[++i];
        else usage(argv[0]);
    }
    if (O.n < 10 || O.n > 60000 || O.trials < 1 || O.records < 1 || O.idle_s < 1 || O.cap_s < 6 || O.parallel < 1 ||
        (O.procs && (O.procs < 2 || O.procs > SPREAD_MAXP)))
        usage(argv[0]);
#ifndef __linux__
    O.poll_driver = 1; /* epoll is Linux only */
#endif
    RD.kind = O.poll_driver ? DRV_POLL : DRV_EPOLL;

    if (raise_nofile(&rl, &before) != 0) fprintf(stderr, BENCH_NAME ": could not raise RLIMIT_NOFILE\n");
    printf("bench_scale: N nodes of one graph in one process, one thread, one host loop, real IPv4 loopback sockets\n"
           "(node i listens on its own 127.x.y.z and its links leave from it; kills close every socket of a node at once)\n");
    print_command_machine(argc, argv);
    if (RD.kind == DRV_EPOLL)
        printf("driver: epoll (PeerGraphSetPollCallback keeps a level-triggered epoll set; each step: PeerGraphGetPollFds"
               "(NULL, 0) for the deadline only, epoll_wait, PeerGraphService)%s\n",
               getenv("SCALE_EPOLL_CHECK") ? "; SCALE_EPOLL_CHECK: the set checked against PeerGraphGetPollFds at every"
                                             " step (timings not meaningful)" : "");
    else
        printf("driver: poll (each step: PeerGraphGetPollFds of every socket, poll() of all but zombies, PeerGraphService)\n");
    printf("N = %d; S8 trials %d; S9 records %d x %d B; S12 idle window %d s; S6 cap %d s; seed %llu; databases in %s;"
           " open files limit %llu\n",
           O.n, O.trials, O.records, REC_PAYLOAD, O.idle_s, O.cap_s, O.seed, O.dbdir, (unsigned long long)rl.rlim_cur);
    fflush(stdout);

    if (setup_db_dir(O.dbdir) != 0) return 2;
    if ((g_devnull = open("/dev/null", O_RDWR | O_CLOEXEC)) < 0) { perror("/dev/null"); return 2; }
    if (O.procs > 1) { /* the ranks fork here: each sets up its own library instance and loop below */
        SPR.p = O.procs;
        SPR.cap = (O.n + O.procs - 1) / O.procs + O.trials + 1;
        spread_fork();
    }
    ops.ctx = NULL;
    ops.kill_socket = real_kill_socket;
    ops.close_zombie = real_close_zombie;
    ops.new_zombie = real_new_zombie;
    if (FAILED(hr = scale_net_install(PeerGraphGetPlatformNetShim(), &ops))) die_hr("PeerGraphSetNetShim", hr);
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) die_hr("PeerGraphStartup", hr);
    DRV.ctx = &RD;
    DRV.step = real_step;
    DRV.now_us = real_now_us;
#ifdef __linux__
    if (RD.kind == DRV_EPOLL) {
        if ((RD.epfd = epoll_create1(EPOLL_CLOEXEC)) < 0) { perror(BENCH_NAME ": epoll_create1"); return 2; }
        RD.check = getenv("SCALE_EPOLL_CHECK") != NULL;
        if (FAILED(hr = PeerGraphSetPollCallback(ep_on_poll, &RD))) die_hr("PeerGraphSetPollCallback", hr);
        DRV.step = ep_step;
    }
#endif

    if (O.procs > 1 && SPR.rank != 0) return spread_main(rtt, tstart); /* the other ranks print nothing */
    raw_pingpong(rtt, PING_ROUNDS);
    rtt_n = PING_ROUNDS;
    {
        long long tmp[PING_ROUNDS];
        memcpy(tmp, rtt, sizeof tmp);
        sort_ll(tmp, PING_ROUNDS);
        g_rtt_ms = pct_ms(tmp, PING_ROUNDS, 50);
    }
    printf("machine (start): raw TCP ping-pong of %d B over [::1], both ends in one poll() loop: RTT p50 %.4f ms\n",
           PING_BYTES, g_rtt_ms);
    fflush(stdout);

    if (O.procs > 1) {
        int st = spread_main(rtt, tstart);
        free(rtt);
        close(g_devnull);
        return st;
    }
    memset(&iCompat, 0, sizeof iCompat);
    memset(&kC50, 0, sizeof kC50);
    memset(&kC80, 0, sizeof kC80);

    /* --- fast profile, graph A: S12, S9, S8, S6 50% --- */
    printf("\n[fast profile, graph A]\n");
    build(&g, 11, PEER_MAINTENANCE_FAST, L"bench-scale-a", O.n + O.trials + 1, &bA);
    scale_run_ms(&g, 3000); /* settled: maintenance rounds done */
    if (!O.s8_only) { /* S12 measures a graph at rest: wait until no link has opened for 2 s (30 s at most) */
        long long t0 = scale_now(&g), quiet = t0;
        unsigned long long c0 = SN.msgs[2];
        while (scale_now(&g) - quiet < 2000000 && scale_now(&g) - t0 < 30000000) {
            scale_run_ms(&g, 250);
            if (SN.msgs[2] != c0) { c0 = SN.msgs[2]; quiet = scale_now(&g); }
        }
        printf("  at rest %.1f s after the 3 s settle (no CONNECT for 2 s%s)\n", (double)(scale_now(&g) - t0) / 1e6,
               scale_now(&g) - quiet < 2000000 ? ": NOT reached within 30 s" : "");
    }
    memset(&iFast, 0, sizeof iFast);
    memset(&rFast, 0, sizeof rFast);
    memset(&nFast, 0, sizeof nFast);
    memset(&iRest, 0, sizeof iRest);
    memset(&mem, 0, sizeof mem);
    memset(&kF50, 0, sizeof kF50);
    memset(&kF80, 0, sizeof kF80);
    memset(&bB, 0, sizeof bB);
    if (!O.s8_only) {
        for (i = 0; i < g.n; i++) live0 += g.v[i].state == SN_LIVE;
        if (O.idle_s >= 300) { /* at rest first, then a window holding a renewal of every presence */
            double v0, v1;
            s12_idle(&g, 10, &iRest);
            print_idle("fast", &iRest);
            v0 = presence_version_sum(g.v[0].h);
            s12_idle(&g, O.idle_s, &iFast);
            v1 = presence_version_sum(g.v[0].h);
            print_idle("fast", &iFast);
            renew_cost(&iRest, &iFast, v1 - v0, &nFast);
            printf("         the window held %.0f presence renewals (node 0's view): %.1f B per node and %.0f us of CPU for"
                   " the graph each, above the window at rest\n",
                   nFast.renewals, nFast.bytes_per_renewal_node, nFast.cpu_us_per_renewal);
            if (nFast.ran) {
                double b, c;
                steady_at(&iRest, &nFast, live0, 300, &b, &c);
                printf("         steady state, presences living 300 s (%.2f renewals/s graph-wide): %.1f B/s per node, %.2f%% of one core\n",
                       live0 / 280.0, b, c);
                steady_at(&iRest, &nFast, live0, 3600, &b, &c);
                printf("         steady state, presences living 3600 s (%.2f renewals/s graph-wide): %.1f B/s per node, %.2f%% of one core\n",
                       live0 / 3580.0, b, c);
            }
        } else {
            s12_idle(&g, O.idle_s, &iFast);
            iRest = iFast;
            print_idle("fast", &iFast);
            printf("         (a window at rest: no presence renewal falls in it; -w 300 measures one that holds a renewal of every presence)\n");
        }
        s12_refresh(&g, &iRest, &rFast);
        printf("         a presence change (SetNodeAttributes: the whole record flooded): %.1f B per node, %.0f us of CPU for the graph"
               " (%d changes in %.1f s, above the window at rest)\n",
               rFast.bytes_per_version_node, rFast.cpu_us_per_version, rFast.versions, rFast.secs);
        fflush(stdout);
        s9_memory(&g, &bA, &mem);
        print_mem(&mem);
        fflush(stdout);
    } else {
        scale_mesh m;
        scale_mesh_check(&g, &m);
        mem.links = m.links;
    }
    /* S8 starts once maintenance has trimmed S9's extra links */
    {
        long long t0 = scale_now(&g);
        scale_mesh m;
        for (;;) {
            scale_run_ms(&g, 250);
            scale_mesh_check(&g, &m);
            if (m.links <= mem.links + O.n / 100 || scale_now(&g) - t0 > 30000000LL) break;
        }
        printf("  before S8: %d links (%d before S9's extra ones) %lld ms after S9; then 1 s more\n", m.links, mem.links,
               (scale_now(&g) - t0) / 1000);
        scale_run_ms(&g, 1000);
    }
    real_reset_counters();
    if (getenv("SCALE_DEBUG")) {
        RD.trace = (struct step_rec *)xcalloc(TRACE_STEPS, sizeof *RD.trace);
        g.on_s8_join = s8_join_report;
    }
    if (getenv("SCALE_PERF_CTL")) { /* a perf --control fifo: `perf record -D -1 --control fifo:F ...` */
        if ((g_perf_ctl = open(getenv("SCALE_PERF_CTL"), O_WRONLY | O_CLOEXEC)) < 0) perror(BENCH_NAME ": SCALE_PERF_CTL");
        g.on_s8_join = s8_join_report;
    }
    scale_s8_join(&g, O.trials, 10000, 300, &vJoin);
    g.on_s8_join = NULL;
    printf("  S8 join: %d joins, %d reached every node within 10 s; longest PeerGraphService call %.0f ms\n", vJoin.trials,
           vJoin.complete, RD.svc_max_ms);
    fflush(stdout);
    real_reset_counters();
    scale_s8_kill(&g, O.trials, 10000, 1000, &vKill);
    printf("  S8 kill: %d kills, %d seen gone by every node within 10 s; longest PeerGraphService call %.0f ms\n",
           vKill.trials, vKill.complete, RD.svc_max_ms);
    fflush(stdout);
    if (!O.s8_only) {
        scale_run_ms(&g, 2000);
        s6(&g, 50, &kF50);
        print_kill("fast", &kF50);
        fflush(stdout);
    }
    scale_close_all(&g);
    scale_free(&g);

    /* --- fast profile, graph B: S6 80% --- */
    if (!O.s8_only) kill_graph(&g, "fast profile, graph B", 12, PEER_MAINTENANCE_FAST, L"bench-scale-b", &bB, 80, &kF80);

    if (O.compat) {
        printf("\n[compat profile, graph C]\n");
        build(&g, 13, PEER_MAINTENANCE_COMPAT, L"bench-scale-c", O.n, &bC);
        scale_run_ms(&g, 3000);
        s12_idle(&g, O.idle_s, &iCompat);
        print_idle("compat", &iCompat);
        s6(&g, 50, &kC50);
        print_kill("compat", &kC50);
        fflush(stdout);
        scale_close_all(&g);
        scale_free(&g);

        kill_graph(&g, "compat profile, graph D", 14, PEER_MAINTENANCE_COMPAT, L"bench-scale-d", &bD, 80, &kC80);
    }

    raw_pingpong(rtt + PING_ROUNDS, PING_ROUNDS);
    rtt_n = 2 * PING_ROUNDS;
    sort_ll(rtt, rtt_n);
    g_rtt_ms = pct_ms(rtt, rtt_n, 50);
    rtt_p99 = pct_ms(rtt, rtt_n, 99);
    PeerGraphShutdown();
    scale_net_free();
#ifdef __linux__
    if (RD.kind == DRV_EPOLL) {
        printf("\nepoll set after PeerGraphShutdown: %ld fds (0 expected); epoll_ctl errors %llu; zombies reported ready %llu",
               RD.watched, RD.ctl_errors, RD.zombie_ready);
        if (RD.check) printf("; SCALE_EPOLL_CHECK: %llu mismatches in %llu steps", RD.check_bad, RD.check_steps);
        printf("\n");
        close(RD.epfd);
        free(RD.evs); free(RD.eready);
    }
#endif

    /* --- summary --- */
    printf("\n==== summary (N = %d, %s driver) ====\n", O.n, drv_name());
    printf("machine: loopback RTT (64 B ping-pong, start and end of the run pooled) p50 %.4f ms, p99 %.4f ms;"
           " every time below is also given in RTTs; driver: %s\n", g_rtt_ms, rtt_p99, drv_name());
    {
        char a[64], b[64], c[64], d[64];
        double kp99 = pct_us(vKill.lat, vKill.nlat, 990);
        print_s8_join(&vJoin, "one process");
        printf("    a killed node seen gone by every node (%d kills):\n", vKill.trials);
        printf("      p50 %s, p99 %s, max %s; the last node: p50 %s; never seen %d\n",
               ms_rtt(a, sizeof a, pct_us(vKill.lat, vKill.nlat, 500)), ms_rtt(b, sizeof b, kp99),
               ms_rtt(c, sizeof c, vKill.nlat ? vKill.lat[vKill.nlat - 1] / 1000.0 : 0),
               ms_rtt(d, sizeof d, pct_us(vKill.last, vKill.nlast, 500)), vKill.missing);
        printf("      target p99 <= 200 ms: %s\n", met(vKill.nlat && !vKill.missing && kp99 <= 200));
    }
    if (O.s8_only) goto summary_end;
    {
        double link = mem.per_link_end, rec = mem.per_record - REC_PAYLOAD;
        printf("\nS9  heap per node %.1f KB (graph + links + %d presence records); per idle link endpoint %.0f B"
               " (per link, both ends: %.0f B); per %d-B record held %.1f B = payload + %.1f B\n",
               mem.per_node / 1024, mem.live, link, 2 * link, REC_PAYLOAD, mem.per_record, rec);
        printf("      targets: <= 2 KB per idle link (endpoint): %s; <= payload + 48 B per record: %s\n",
               met(link > 0 && link <= 2048), met(rec <= 48));
    }
    printf("\nS12 idle (fast), at rest (%.0f s, no renewal in it): %.1f B/s per node, CPU %.2f%% of one core for %d nodes (%.1f us per"
           " node-second = %.2fx RTT)\n",
           iRest.secs, iRest.bytes_per_node_s, iRest.cpu_pct, O.n, iRest.cpu_us_per_node_s, iRest.cpu_us_per_node_s / 1000 / g_rtt_ms);
    printf("      targets: <= 20 B/s per node: %s; <= 1%% of one core: %s\n", met(iRest.bytes_per_node_s <= 20), met(iRest.cpu_pct <= 1.0));
    if (nFast.ran) {
        double b300, c300, b3600, c3600;
        steady_at(&iRest, &nFast, live0, 300, &b300, &c300);
        steady_at(&iRest, &nFast, live0, 3600, &b3600, &c3600);
        printf("      the %.0f s window, a renewal of every presence in it: %.1f B/s per node, CPU %.2f%%\n", iFast.secs,
               iFast.bytes_per_node_s, iFast.cpu_pct);
        printf("      steady state with the presence renewals (RENEW entries, PROTOCOL.md P19): %.1f B/s per node, %.2f%% of a core"
               " (ulPresenceLifetime 300 s, the default): %s; %.1f B/s, %.2f%% (3600 s): %s\n",
               b300, c300, met(b300 <= 20), b3600, c3600, met(b3600 <= 20));
    } else
        printf("      steady state with the presence renewals: not measured (-w 300 or more)\n");
    printf("      host loop (%s): wall time in PeerGraphService %.1f%%, in %s %.1f%%, in GetPollFds%s %.1f%%; %.0f steps/s\n",
           drv_name(), iFast.svc_pct, wait_name(), iFast.wait_pct, RD.kind == DRV_EPOLL ? " (deadline only)" : "",
           iFast.gpf_pct, iFast.steps_per_s);
    if (iCompat.ran)
        printf("    idle (compat): %.1f B/s per node, CPU %.2f%% of one core (%.1f us per node-second = %.2fx RTT)\n",
               iCompat.bytes_per_node_s, iCompat.cpu_pct, iCompat.cpu_us_per_node_s, iCompat.cpu_us_per_node_s / 1000 / g_rtt_ms);
    {
        char a[64], b[64], c[64], d[64];
        printf("\nS6  kill at once       %-28s %-28s\n", "one component, >= 2 nbrs", "record at every survivor");
        fmt_t(a, sizeof a, kF50.t_mesh_ms, kF50.cap_ms);
        fmt_t(b, sizeof b, kF50.t_rec_ms, kF50.cap_ms);
        printf("    fast   50%%         %-28s %-28s isolated at 5 s: %d\n", a, b, kF50.isolated_5s);
        fmt_t(a, sizeof a, kF80.t_mesh_ms, kF80.cap_ms);
        fmt_t(b, sizeof b, kF80.t_rec_ms, kF80.cap_ms);
        printf("    fast   80%%         %-28s %-28s isolated at 5 s: %d\n", a, b, kF80.isolated_5s);
        if (kC50.ran) {
            fmt_t(c, sizeof c, kC50.t_mesh_ms, kC50.cap_ms);
            fmt_t(d, sizeof d, kC50.t_rec_ms, kC50.cap_ms);
            printf("    compat 50%%         %-28s %-28s isolated at 5 s: %d\n", c, d, kC50.isolated_5s);
        }
        if (kC80.ran) {
            fmt_t(c, sizeof c, kC80.t_mesh_ms, kC80.cap_ms);
            fmt_t(d, sizeof d, kC80.t_rec_ms, kC80.cap_ms);
            printf("    compat 80%%         %-28s %-28s isolated at 5 s: %d\n", c, d, kC80.isolated_5s);
        }
        printf("    targets (fast): one component with >= 2 neighbors within 1 s (50%%): %s, 3 s (80%%): %s;\n",
               met(kF50.t_mesh_ms >= 0 && kF50.t_mesh_ms <= 1000), met(kF80.t_mesh_ms >= 0 && kF80.t_mesh_ms <= 3000));
        printf("      record at 100%% of survivors within 2 s (50%%): %s, 5 s (80%%): %s; no isolated survivor after 5 s: %s\n",
               met(kF50.t_rec_ms >= 0 && kF50.t_rec_ms <= 2000), met(kF80.t_rec_ms >= 0 && kF80.t_rec_ms <= 5000),
               met(kF50.isolated_5s == 0 && kF80.isolated_5s == 0));
    }
summary_end:
    printf("\nbuilds: fast A %.1f s, fast B %.1f s", bA.build_ms / 1000, bB.build_ms / 1000);
    if (O.compat) printf(", compat C %.1f s, compat D %.1f s", bC.build_ms / 1000, bD.build_ms / 1000);
    printf(" (joins %d at a time, each to a random live node, until one component with 2..7 neighbors each and every presence everywhere)\n",
           O.parallel);
    printf("total run time %.1f s\n", (double)(now_ns() - tstart) / 1e9);
    scale_vis_free(&vJoin);
    scale_vis_free(&vKill);
    free(rtt);
    free(RD.want); free(RD.ready); free(RD.pf); free(RD.trace);
    free(RD.announced); free(RD.inset);
    close(g_devnull);
    (void)before;
    return 0;
}
#endif
