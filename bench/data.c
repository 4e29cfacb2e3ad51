/*
 * bench/data.c - application data over a p2pgraph direct connection, next to
 * raw TCP and ENet 1.3, all measured in the same run.
 *
 * Every measurement runs between two processes (fork), one per end, so the
 * two ends use two cores as a real pair of programs would.  The parent only
 * forks, passes the listening port on, and collects each end's result through
 * a pipe; it holds no library state.  Times are CLOCK_MONOTONIC, shared by the
 * two processes.
 *
 *   raw TCP   blocking sockets over 127.0.0.1 (see --ipv6), TCP_NODELAY (as the library sets
 *             it), each message a 4-byte length + payload written with one
 *             send(); the receiver reads 256 KB at a time and parses message
 *             boundaries, as the library must.  The ratios are to this row.
 *   raw TCP batched (throughput only)  the same stream, but the sender packs
 *             messages into 64 KB send()s: what a sender that coalesces small
 *             messages reaches.  For reference; no target uses it.
 *   p2pgraph  the receiver PeerGraphCreate + PeerGraphListen (dual-stack) port 0,
 *             registered for DIRECT_CONNECTION and INCOMING_DATA; the sender
 *             PeerGraphOpen + PeerGraphOpenDirectConnection, then
 *             PeerGraphSendData; on PEER_E_SEND_QUEUE_FULL it waits for
 *             PEER_GRAPH_EVENT_SEND_READY.  Both ends run the host loop of
 *             bench_util.h (PeerGraphGetPollFds + poll() + PeerGraphService)
 *             and pop every event with PeerGraphGetEventData.
 *   raw UDP   (round trip only) blocking datagram echo over 127.0.0.1: the floor
 *             of ENet's transport, as raw TCP is p2pgraph's.
 *   ENet      one host per process on 127.0.0.1 (ENet 1.3 is IPv4 only), one
 *             channel, ENET_PACKET_FLAG_RELIABLE, ENet fragmenting what
 *             exceeds its MTU.  ENet queues without limit, so the sender keeps
 *             at most 1 MiB un-acknowledged (the p2pgraph queue's default),
 *             counted with the packets' free callback.
 *
 * 1. Throughput, one direction: messages of 64 B, 1 KB, 64 KB; 8, 128 and
 *    512 MB per run.  The clock runs from the sender's first send to the
 *    receiver holding the last message.  The receiver checks the count, each
 *    message's size and sequence number, and a checksum over three 8-byte
 *    words of every message (first, middle, last: the sender stamps the
 *    sequence number into the first and last), so loss, reordering,
 *    truncation and boundary errors all show.  Repeated (--reps, default 5;
 *    transports interleaved); the median is reported.  Beside it: each end's
 *    CPU time (getrusage) over the elapsed time, and page faults per message.
 * 2. Round trip: 64-byte ping-pong, one message in flight, 20000 round trips
 *    after 1000 unmeasured; mean, p50, p99, max (median over the repetitions).
 * 3. p2pgraph memory with a receiver that does not read: the sender calls
 *    SendData until PEER_E_SEND_QUEUE_FULL persists (300 ms without
 *    progress), then reports PeerGraphGetDataQueue and its heap growth (glibc
 *    mallinfo2: uordblks + hblkhd); then again after raising the limit to
 *    8 MiB with PeerGraphSetDataQueueLimit.  Three cases: 64 KB messages to a
 *    receiver that does not service at all (TCP pushes back); 64 KB and 16 B
 *    messages to one that services but does not pop its events
 *    (PEER_MAX_INCOMING_DATA pauses its reading).  Afterwards the receiver pops
 *    everything and checks that every accepted message arrives, in order.
 *
 * Usage: bench_data [--quick] [--reps N] [--scale F] [--rtt N] [--size BYTES]
 *                   [--only LIST] [--no-rtt] [--no-mem] [--pin] [--ipv6]
 *   --quick       totals / 16, 2000 round trips, 1 repetition (about 5 s)
 *   --scale F     multiply the byte totals by F
 *   --size BYTES  only this message size in test 1
 *   --only LIST   comma-separated subset of raw,batched,p2p,enet,udp
 *   --pin         pin the receiver to CPU 1 and the sender to CPU 0 (Linux)
 *   --ipv6        raw TCP, raw UDP and p2pgraph over [::1] instead of 127.0.0.1
 *                 (ENet stays on 127.0.0.1; before 3 December 2026 this was
 *                 the default, so ENet ran over IPv4 and the others over IPv6)
 * Databases go to a mkdtemp directory under $TMPDIR (or /tmp), removed at the
 * end.  Needs libenet-dev (make bench installs it).
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* sched_setaffinity */
#endif
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_data: POSIX only (fork, poll)\n");
    return 0;
}
#else

#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/ioctl.h>
#include <sys/uio.h>
#include <sys/wait.h>
#ifdef __linux__
#include <sched.h>
#endif
#include <enet/enet.h>
#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
#define HAVE_MALLINFO2 1
#endif
#endif

#define BENCH_NAME "bench_data"
#include "bench_util.h"

#define GRAPH_ID L"bench-data"
#define RECV_PEER L"data-recv"
#define SEND_PEER L"data-send"
#define RECV_DB L"bench-data-r"
#define SEND_DB L"bench-data-s"

#define RTT_SIZE 64
#define ENET_UNACKED_CAP (1024 * 1024) /* bytes ENet may hold un-acknowledged: p2pgraph's default queue */
#define RAISED_LIMIT (8u * 1024u * 1024u)
#define STALL_NS (300LL * 1000000LL)   /* no progress for this long: the sender is stopped by the receiver */
#define CHILD_LIMIT_S 120              /* a child that runs longer kills itself (alarm) */
#define PARENT_WAIT_MS 150000
#define DRAIN_LIMIT_NS (20LL * 1000000000LL)

#define TARGET_THRU 0.8
#define TARGET_RTT 1.2

enum { T_RAW, T_RAWB, T_P2P, T_ENET, T_UDP, T_COUNT };
static const char *const tname[T_COUNT] = {"raw TCP", "raw TCP batched", "p2pgraph direct", "ENet reliable", "raw UDP"};
static const char *const tkey[T_COUNT] = {"raw", "batched", "p2p", "enet", "udp"};

enum { K_THRU, K_RTT, K_MEM_STALL, K_MEM_NOPOP };

static const GUID DATA_TYPE = {0x6c1ed0a1, 0x0b5e, 0x4d2c, {0x9a, 0x41, 0x5d, 0x0e, 0x7b, 0x33, 0xc2, 0x18}};

/* ------------------------------------------------------------------------- */
/* what the parent tells an end, and what an end reports back                */
/* ------------------------------------------------------------------------- */

typedef struct params {
    int kind;         /* K_* */
    int size;         /* message bytes */
    long long count;  /* messages, or round trips */
    int port;         /* the receiver's port (for the sender) */
    const char *dbdir;
    int portfd;       /* receiver: where to write its port */
    int ctl;          /* read end of the parent's control pipe */
    int out;          /* write end of the result pipe */
} params;

typedef struct mem_fill {
    long long accepted_msgs, accepted_bytes; /* SendData S_OK since the start */
    long long queued, limit;                 /* PeerGraphGetDataQueue at the stall */
    long long heap;                          /* heap growth since before the first SendData */
    long long kernel_outq;                   /* bytes in the sender's socket send queue */
    long long nfull;
    double ms;
} mem_fill;

typedef struct result {
    int ok;
    char err[200];
    long long t0, t1;          /* ns: sender's first send, receiver's last message */
    long long msgs, bad;       /* messages seen; wrong size / sequence / type */
    uint64_t sum;              /* checksum over the messages (sent or seen) */
    long long nfull;           /* QUEUE_FULL returns (p2pgraph), waits at the cap (ENet) */
    long long cpu_ns, flt;     /* this process's CPU time and page faults while it moved the data */
    double mean_us, p50_us, p99_us, min_us, max_us;
    /* memory test */
    mem_fill fill[2];          /* default limit, raised limit */
    int disconnected;          /* the connection went down during the test */
    long long rheap;           /* receiver: heap growth while not reading */
    long long rkernel_inq;     /* receiver: bytes waiting in its socket receive queue */
    long long overflow_events; /* receiver: STATUS_CHANGED events seen (event queue overflow) */
    double drain_ms;           /* receiver: time to receive everything once it reads again */
} result;

static long long heap_now(void)
{
#ifdef HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
#else
    return -1;
#endif
}


static void rusage_now(long long *cpu, long long *flt)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    *cpu = ((long long)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000LL +
           ((long long)u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000LL;
    *flt = (long long)u.ru_minflt + u.ru_majflt;
}

/* usage_begin, then usage_end: CPU time and page faults in between. */
static void usage_begin(result *r) { rusage_now(&r->cpu_ns, &r->flt); }
static void usage_end(result *r)
{
    long long c, f;
    rusage_now(&c, &f);
    r->cpu_ns = c - r->cpu_ns;
    r->flt = f - r->flt;
}

static void send_result(const params *p, const result *r) { write_all(p->out, r, sizeof *r); }

/* The end of a plain-socket child (raw TCP, raw UDP): report, wait until
 * the parent says stop (the other end may still be reading), clean up. */
static void socket_child_done(const params *p, result *r, int fd, void *buf)
{
    r->ok = 1;
    send_result(p, r);
    while (!ctl_ready(p->ctl, 1000)) {}
    close(fd);
    free(buf);
}

/* Reports a failure to the parent and ends this process. */
static void child_fail(const params *p, result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    r->ok = 0;
    fprintf(stderr, BENCH_NAME ": %s\n", r->err);
    send_result(p, r);
    _exit(1);
}

/* ------------------------------------------------------------------------- */
/* messages                                                                  */
/* ------------------------------------------------------------------------- */

static void msg_init(uint8_t *b, int n)
{
    int i;
    for (i = 0; i < n; i++) b[i] = (uint8_t)(i * 131 + 7);
}


static void latency_stats(result *r, long long *d, long long n)
{
    long long i;
    double s = 0;
    for (i = 0; i < n; i++) s += (double)d[i];
    sort_ll(d, (int)n);
    r->mean_us = n ? s / (double)n / 1e3 : 0;
    r->p50_us = pctile(d, (int)n, 500) / 1e3;
    r->p99_us = pctile(d, (int)n, 990) / 1e3;
    r->min_us = n ? (double)d[0] / 1e3 : 0;
    r->max_us = n ? (double)d[n - 1] / 1e3 : 0;
}

/* Warm-up round trips before the measured ones. */
static long long warmup_of(long long n) { return n / 20 < 100 ? 100 : n / 20; }

/* ------------------------------------------------------------------------- */
/* raw TCP                                                                   */
/* ------------------------------------------------------------------------- */

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int send_all(int fd, const void *pv, size_t n)
{
    const char *p = (const char *)pv;
    while (n > 0) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

static int recv_all(int fd, void *pv, size_t n)
{
    char *p = (char *)pv;
    while (n > 0) {
        ssize_t k = recv(fd, p, n, 0);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) return -1;
        p += k;
        n -= (size_t)k;
    }
    return 0;
}

/* The loopback address every transport but ENet uses: 127.0.0.1 as a
 * v4-mapped address by default, so that all four run over IPv4 as ENet 1.3
 * must; [::1] with --ipv6.  Servers bind it on an IPv6 socket with
 * IPV6_V6ONLY off (the library's listener is dual-stack too). */
static struct in6_addr g_loop;

/* g_loop at port (the receiver's), for a sender's connect(). */
static struct sockaddr_in6 loop_addr(int port)
{
    struct sockaddr_in6 sa;
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = g_loop;
    sa.sin6_port = htons((uint16_t)port);
    return sa;
}

static int bind_loop(int fd, struct sockaddr_in6 *sa)
{
    socklen_t sl = sizeof *sa;
    int off = 0, one = 1;
    memset(sa, 0, sizeof *sa);
    sa->sin6_family = AF_INET6;
    sa->sin6_addr = g_loop;
    if (setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off) < 0 ||
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 || bind(fd, (struct sockaddr *)sa, sizeof *sa) < 0 ||
        getsockname(fd, (struct sockaddr *)sa, &sl) < 0)
        return -1;
    return 0;
}

static void raw_recv(const params *p)
{
    struct sockaddr_in6 sa;
    result r;
    int lfd = socket(AF_INET6, SOCK_STREAM, 0), fd, port;
    size_t S = (size_t)p->size, cap = 2 * (S + 4) > 256 * 1024 ? 2 * (S + 4) : 256 * 1024, have = 0, off = 0;
    uint8_t *buf = (uint8_t *)xcalloc(cap, 1);
    memset(&r, 0, sizeof r);
    if (lfd < 0 || bind_loop(lfd, &sa) != 0 || listen(lfd, 1) != 0) child_fail(p, &r, "raw listen: %s", strerror(errno));
    port = ntohs(sa.sin6_port);
    write_all(p->portfd, &port, sizeof port);
    if ((fd = accept(lfd, NULL, NULL)) < 0) child_fail(p, &r, "raw accept: %s", strerror(errno));
    close(lfd);
    set_nodelay(fd);
    usage_begin(&r);
    if (p->kind == K_RTT) {
        while (r.msgs < p->count + warmup_of(p->count)) {
            if (recv_all(fd, buf, S + 4) != 0) child_fail(p, &r, "raw pong: recv");
            if (send_all(fd, buf, S + 4) != 0) child_fail(p, &r, "raw pong: send");
            r.msgs++;
        }
        usage_end(&r);
    } else {
        for (;;) {
            ssize_t k;
            while (have - off >= 4) {
                uint32_t len;
                memcpy(&len, buf + off, 4);
                len = ntohl(len);
                if (len != S) child_fail(p, &r, "raw: message of %lu bytes, expected %lu", (unsigned long)len, (unsigned long)S);
                if (have - off < 4 + S) break;
                if (msg_seq(buf + off + 4) != (uint64_t)r.msgs) r.bad++;
                r.sum = msg_sum(r.sum, buf + off + 4, S);
                off += 4 + S;
                if (++r.msgs == p->count) {
                    r.t1 = now_ns();
                    usage_end(&r);
                    goto done;
                }
            }
            if (off) {
                memmove(buf, buf + off, have - off);
                have -= off;
                off = 0;
            }
            k = recv(fd, buf + have, cap - have, 0);
            if (k < 0 && errno == EINTR) continue;
            if (k <= 0) child_fail(p, &r, "raw recv: %s after %lld messages", k ? strerror(errno) : "EOF", r.msgs);
            have += (size_t)k;
        }
    }
done:
    socket_child_done(p, &r, fd, buf);
}

static void raw_send(const params *p)
{
    struct sockaddr_in6 sa;
    result r;
    size_t S = (size_t)p->size;
    uint8_t *buf = (uint8_t *)xcalloc(S + 4, 1);
    uint32_t len = htonl((uint32_t)S);
    long long i, warm = warmup_of(p->count);
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    memset(&r, 0, sizeof r);
    sa = loop_addr(p->port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) child_fail(p, &r, "raw connect: %s", strerror(errno));
    set_nodelay(fd);
    memcpy(buf, &len, 4);
    msg_init(buf + 4, (int)S);
    if (p->kind == K_RTT) {
        long long *d = (long long *)xcalloc((size_t)p->count, sizeof *d);
        usage_begin(&r);
        for (i = 0; i < warm + p->count; i++) {
            long long t;
            msg_stamp(buf + 4, (int)S, (uint64_t)i);
            t = now_ns();
            if (send_all(fd, buf, S + 4) != 0 || recv_all(fd, buf, S + 4) != 0) child_fail(p, &r, "raw ping failed");
            if (i >= warm) d[i - warm] = now_ns() - t;
            if (msg_seq(buf + 4) != (uint64_t)i) r.bad++;
        }
        usage_end(&r);
        latency_stats(&r, d, p->count);
        r.msgs = p->count;
        free(d);
    } else {
        r.t0 = now_ns();
        usage_begin(&r);
        for (i = 0; i < p->count; i++) {
            msg_stamp(buf + 4, (int)S, (uint64_t)i);
            r.sum = msg_sum(r.sum, buf + 4, S);
            if (send_all(fd, buf, S + 4) != 0) child_fail(p, &r, "raw send: %s", strerror(errno));
        }
        usage_end(&r);
        r.msgs = p->count;
    }
    socket_child_done(p, &r, fd, buf);
}

/* Raw UDP (round trip only): the floor of the transport ENet runs on, as raw
 * TCP is p2pgraph's.  Blocking sockets over [::1]; the receiver echoes each
 * datagram (4-byte length + payload, as raw TCP's messages). */
static void udp_recv(const params *p)
{
    struct sockaddr_in6 sa, from;
    socklen_t fl;
    result r;
    size_t S = (size_t)p->size;
    uint8_t *buf = (uint8_t *)xcalloc(S + 4, 1);
    int fd = socket(AF_INET6, SOCK_DGRAM, 0), port;
    memset(&r, 0, sizeof r);
    if (fd < 0 || bind_loop(fd, &sa) != 0) child_fail(p, &r, "udp bind: %s", strerror(errno));
    port = ntohs(sa.sin6_port);
    write_all(p->portfd, &port, sizeof port);
    usage_begin(&r);
    while (r.msgs < p->count + warmup_of(p->count)) {
        ssize_t k;
        fl = sizeof from;
        k = recvfrom(fd, buf, S + 4, 0, (struct sockaddr *)&from, &fl);
        if (k < 0 && errno == EINTR) continue;
        if (k != (ssize_t)(S + 4)) child_fail(p, &r, "udp pong: recv %ld", (long)k);
        if (sendto(fd, buf, S + 4, 0, (struct sockaddr *)&from, fl) != (ssize_t)(S + 4)) child_fail(p, &r, "udp pong: send");
        r.msgs++;
    }
    usage_end(&r);
    socket_child_done(p, &r, fd, buf);
}

static void udp_send(const params *p)
{
    struct sockaddr_in6 sa;
    struct timeval tv = {5, 0};
    result r;
    size_t S = (size_t)p->size;
    uint8_t *buf = (uint8_t *)xcalloc(S + 4, 1);
    uint32_t len = htonl((uint32_t)S);
    long long i, warm = warmup_of(p->count), *d = (long long *)xcalloc((size_t)p->count, sizeof *d);
    int fd = socket(AF_INET6, SOCK_DGRAM, 0);
    memset(&r, 0, sizeof r);
    sa = loop_addr(p->port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) child_fail(p, &r, "udp connect: %s", strerror(errno));
    (void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv); /* a lost datagram fails the run */
    memcpy(buf, &len, 4);
    msg_init(buf + 4, (int)S);
    usage_begin(&r);
    for (i = 0; i < warm + p->count; i++) {
        long long t;
        ssize_t k;
        msg_stamp(buf + 4, (int)S, (uint64_t)i);
        t = now_ns();
        if (send(fd, buf, S + 4, 0) != (ssize_t)(S + 4)) child_fail(p, &r, "udp ping: send: %s", strerror(errno));
        do k = recv(fd, buf, S + 4, 0);
        while (k < 0 && errno == EINTR);
        if (k != (ssize_t)(S + 4)) child_fail(p, &r, "udp ping: no reply (%s)", k < 0 ? strerror(errno) : "short");
        if (i >= warm) d[i - warm] = now_ns() - t;
        if (msg_seq(buf + 4) != (uint64_t)i) r.bad++;
    }
    usage_end(&r);
    latency_stats(&r, d, p->count);
    r.msgs = p->count;
    free(d);
    socket_child_done(p, &r, fd, buf);
}

/* The same stream, but messages are gathered into 64 KB writes: what a
 * sender that coalesces its queue could reach (throughput only). */
static void raw_send_batched(const params *p)
{
    struct sockaddr_in6 sa;
    result r;
    size_t S = (size_t)p->size, cap = 65536 > S + 4 ? 65536 : S + 4, fill = 0;
    uint8_t *msg = (uint8_t *)xcalloc(S, 1), *out = (uint8_t *)xcalloc(cap, 1);
    uint32_t len = htonl((uint32_t)S);
    long long i;
    int fd = socket(AF_INET6, SOCK_STREAM, 0);
    memset(&r, 0, sizeof r);
    sa = loop_addr(p->port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) child_fail(p, &r, "raw connect: %s", strerror(errno));
    set_nodelay(fd);
    msg_init(msg, (int)S);
    r.t0 = now_ns();
    usage_begin(&r);
    for (i = 0; i < p->count; i++) {
        msg_stamp(msg, (int)S, (uint64_t)i);
        r.sum = msg_sum(r.sum, msg, S);
        if (fill + 4 + S > cap) {
            if (send_all(fd, out, fill) != 0) child_fail(p, &r, "raw send: %s", strerror(errno));
            fill = 0;
        }
        memcpy(out + fill, &len, 4);
        memcpy(out + fill + 4, msg, S);
        fill += 4 + S;
    }
    if (fill && send_all(fd, out, fill) != 0) child_fail(p, &r, "raw send: %s", strerror(errno));
    usage_end(&r);
    r.msgs = p->count;
    socket_child_done(p, &r, fd, msg);
    free(out);
}

/* ------------------------------------------------------------------------- */
/* p2pgraph                                                                  */
/* ------------------------------------------------------------------------- */

typedef struct p2p_end {
    HGRAPH g;
    HPEEREVENT ev;
    host_poll hp;
    ULONGLONG cid;
} p2p_end;

static void p2p_start(const params *p, result *r, p2p_end *e)
{
    PEER_VERSION_DATA vd;
    HRESULT hr;
    memset(e, 0, sizeof *e);
    e->hp.untimed = 1; /* no step timing here: a lean host loop (two clock reads a step) */
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) child_fail(p, r, "PeerGraphStartup: 0x%08lX", (unsigned long)(uint32_t)hr);
    if (setup_db_dir(p->dbdir) != 0) child_fail(p, r, "database directory %s", p->dbdir);
}

static void p2p_stop(p2p_end *e, PCWSTR peer, PCWSTR db)
{
    PeerGraphUnregisterEvent(e->ev);
    PeerGraphClose(e->g);
    PeerGraphDelete(GRAPH_ID, peer, db);
    PeerGraphShutdown();
    host_poll_free(&e->hp);
}

/* Sums an ioctl (TIOCOUTQ / FIONREAD) over the library's sockets. */
static long long p2p_kernel_bytes(int outq)
{
    PEER_POLL_FD fds[16];
    ULONG n = 0, i;
    ULONGLONG dl;
    long long sum = 0;
    HRESULT hr = PeerGraphGetPollFds(fds, 16, &n, &dl);
    if (FAILED(hr) && hr != E_NOT_SUFFICIENT_BUFFER) return -1;
    if (n > 16) n = 16;
    for (i = 0; i < n; i++) {
        int v = 0;
#ifdef TIOCOUTQ
        if (ioctl(fds[i].s, outq ? TIOCOUTQ : FIONREAD, &v) == 0 && v > 0) sum += v;
#else
        (void)outq;
        return -1;
#endif
    }
    return sum;
}

/* A connection event of ours; fails the child when it is not PEER_CONNECTED. */
static int p2p_conn_event(const params *p, result *r, p2p_end *e, const PEER_GRAPH_EVENT_DATA *d)
{
    const PEER_EVENT_CONNECTION_CHANGE_DATA *cc = &d->connectionChangeData;
    if (d->eventType != PEER_GRAPH_EVENT_DIRECT_CONNECTION) return 0;
    if (e->cid && cc->ullConnectionId != e->cid) return 0;
    if (cc->status == PEER_CONNECTED) {
        e->cid = cc->ullConnectionId;
        return 1;
    }
    r->disconnected = 1;
    if (p->kind == K_MEM_STALL || p->kind == K_MEM_NOPOP) return -1;
    child_fail(p, r, "direct connection status %d (reason 0x%08lX) after %lld messages", (int)cc->status,
               (unsigned long)(uint32_t)cc->hrConnectionFailedReason, r->msgs);
    return -1;
}

/* Checks one INCOMING_DATA event against the message expected next. */
static void p2p_take_data(result *r, const PEER_EVENT_INCOMING_DATA *in, int size)
{
    if (in->data.cbData != (ULONG)size || memcmp(&in->type, &DATA_TYPE, sizeof DATA_TYPE) != 0) {
        r->bad++;
    } else {
        if (msg_seq(in->data.pbData) != (uint64_t)r->msgs) r->bad++;
        r->sum = msg_sum(r->sum, in->data.pbData, (size_t)size);
    }
    r->msgs++;
}

/* Receiver side: pops events; data goes through p2p_take_data, or is echoed
 * (K_RTT).  Returns how many events it popped. */
static int p2p_recv_pop(const params *p, result *r, p2p_end *e, int *connected)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    int n = 0;
    HRESULT hr;
    while (PeerGraphGetEventData(e->ev, &d) == S_OK) {
        n++;
        if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION) {
            if (p2p_conn_event(p, r, e, d) == 1) *connected = 1;
        } else if (d->eventType == PEER_GRAPH_EVENT_INCOMING_DATA) {
            if (p->kind == K_RTT) {
                if ((hr = PeerGraphSendData(e->g, d->incomingData.ullConnectionId, &DATA_TYPE, d->incomingData.data.cbData,
                                            d->incomingData.data.pbData)) != S_OK)
                    child_fail(p, r, "PeerGraphSendData (pong): 0x%08lX", (unsigned long)(uint32_t)hr);
                r->msgs++;
            } else
                p2p_take_data(r, &d->incomingData, p->size);
            if (p->kind != K_RTT && r->msgs == p->count && !r->t1) {
                r->t1 = now_ns();
                usage_end(r);
            }
        } else if (d->eventType == PEER_GRAPH_EVENT_STATUS_CHANGED)
            r->overflow_events++;
        PeerGraphFreeData(d);
    }
    return n;
}

static void p2p_recv(const params *p)
{
    p2p_end e;
    result r;
    PEER_GRAPH_PROPERTIES gp;
    PEER_GRAPH_EVENT_REGISTRATION reg[2];
    PPEER_NODE_INFO ni = NULL;
    PEER_ADDRESS la;
    HRESULT hr;
    int port, connected = 0;
    long long target, heap0 = 0;

    memset(&r, 0, sizeof r);
    p2p_start(p, &r, &e);
    PeerGraphDelete(GRAPH_ID, RECV_PEER, RECV_DB);
    memset(&gp, 0, sizeof gp);
    gp.dwSize = sizeof gp;
    gp.dwScope = PEER_GRAPH_SCOPE_LOOPBACK;
    gp.pwzGraphId = (PWSTR)GRAPH_ID;
    gp.pwzCreatorId = (PWSTR)RECV_PEER;
    gp.cPresenceMax = (ULONG)-1;
    if (FAILED(hr = PeerGraphCreate(&gp, RECV_DB, NULL, &e.g))) child_fail(p, &r, "PeerGraphCreate: 0x%08lX", (unsigned long)(uint32_t)hr);
    reg[0].eventType = PEER_GRAPH_EVENT_DIRECT_CONNECTION;
    reg[0].pType = NULL;
    reg[1].eventType = PEER_GRAPH_EVENT_INCOMING_DATA;
    reg[1].pType = NULL;
    if (FAILED(hr = PeerGraphRegisterEvent(e.g, NULL, 2, reg, &e.ev)))
        child_fail(p, &r, "PeerGraphRegisterEvent: 0x%08lX", (unsigned long)(uint32_t)hr);
    memset(&la, 0, sizeof la);
    la.dwSize = sizeof la;
    la.sin6.sin6_family = AF_INET6;
    la.sin6.sin6_addr = g_loop; /* the library makes an IPv4 socket for a v4-mapped address */
    if (FAILED(hr = PeerGraphListenAddress(e.g, &la)))
        child_fail(p, &r, "PeerGraphListenAddress: 0x%08lX", (unsigned long)(uint32_t)hr);
    if (FAILED(hr = PeerGraphGetNodeInfo(e.g, 0, &ni)) || ni->cAddresses < 1)
        child_fail(p, &r, "PeerGraphGetNodeInfo: 0x%08lX", (unsigned long)(uint32_t)hr);
    port = ntohs(ni->pAddresses[0].sin6.sin6_port);
    PeerGraphFreeData(ni);
    write_all(p->portfd, &port, sizeof port);

    target = p->kind == K_RTT ? p->count + warmup_of(p->count) : p->count;
    if (p->kind == K_MEM_STALL || p->kind == K_MEM_NOPOP) {
        long long accepted = 0, t;
        while (!connected) {
            host_step(&e.hp, 100);
            p2p_recv_pop(p, &r, &e, &connected);
        }
        heap0 = heap_now();
        if (p->kind == K_MEM_STALL) {
            while (!ctl_ready(p->ctl, 1000)) {} /* not even servicing: the kernel buffers fill */
        } else {
            while (!ctl_ready(p->ctl, 0)) host_step(&e.hp, 10); /* servicing, but no GetEventData */
        }
        r.rheap = heap_now() - heap0;
        r.rkernel_inq = p2p_kernel_bytes(0);
        if (read_full_ms(p->ctl, &accepted, sizeof accepted, 5000) != 0) child_fail(p, &r, "no count from the parent");
        /* now read everything the sender had accepted, checking the order */
        t = now_ns();
        while (r.msgs < accepted && now_ns() - t < DRAIN_LIMIT_NS && !r.disconnected) {
            p2p_recv_pop(p, &r, &e, &connected);
            if (r.msgs < accepted) host_step(&e.hp, 50);
        }
        p2p_recv_pop(p, &r, &e, &connected);
        r.drain_ms = (double)(now_ns() - t) / 1e6;
    } else {
        usage_begin(&r);
        while (r.msgs < target) {
            host_step(&e.hp, 100);
            p2p_recv_pop(p, &r, &e, &connected);
        }
        if (p->kind == K_RTT) usage_end(&r);
    }
    r.ok = 1;
    send_result(p, &r);
    while (!ctl_ready(p->ctl, 0)) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        host_step(&e.hp, 20);
        while (PeerGraphGetEventData(e.ev, &d) == S_OK) PeerGraphFreeData(d);
    }
    p2p_stop(&e, RECV_PEER, RECV_DB);
}

/* Sender side: pops events; returns 1 if a SEND_READY for our connection came. */
static int p2p_send_pop(const params *p, result *r, p2p_end *e, int *got_data, int *connected)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    int ready = 0;
    while (PeerGraphGetEventData(e->ev, &d) == S_OK) {
        if (d->eventType == PEER_GRAPH_EVENT_SEND_READY && d->sendReadyData.ullConnectionId == e->cid)
            ready = 1;
        else if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION) {
            if (p2p_conn_event(p, r, e, d) == 1 && connected) *connected = 1;
        } else if (d->eventType == PEER_GRAPH_EVENT_INCOMING_DATA && got_data) {
            if (d->incomingData.data.cbData != (ULONG)p->size || msg_seq(d->incomingData.data.pbData) != (uint64_t)r->msgs)
                r->bad++;
            *got_data = 1;
        }
        PeerGraphFreeData(d);
    }
    return ready;
}

/* Fills the queue of a connection whose receiver does not read, until
 * SendData has refused for STALL_NS with nothing moving. */
static void p2p_fill(const params *p, result *r, p2p_end *e, uint8_t *buf, long long *seq, mem_fill *f, long long heap0)
{
    long long t0 = now_ns(), last = t0;
    ULONG q = 0, lim = 0, lastq = (ULONG)-1;
    HRESULT hr;
    for (;;) {
        msg_stamp(buf, p->size, (uint64_t)*seq);
        hr = PeerGraphSendData(e->g, e->cid, &DATA_TYPE, (ULONG)p->size, buf);
        if (hr == S_OK) {
            (*seq)++;
            f->accepted_msgs++;
            f->accepted_bytes += p->size;
            last = now_ns();
            continue;
        }
        if (hr != PEER_E_SEND_QUEUE_FULL) {
            if (r->disconnected) break;
            child_fail(p, r, "PeerGraphSendData (fill): 0x%08lX after %lld messages", (unsigned long)(uint32_t)hr, *seq);
        }
        f->nfull++;
        host_step(&e->hp, 5);
        p2p_send_pop(p, r, e, NULL, NULL);
        if (r->disconnected) break;
        if (FAILED(hr = PeerGraphGetDataQueue(e->g, e->cid, &q, &lim)))
            child_fail(p, r, "PeerGraphGetDataQueue: 0x%08lX", (unsigned long)(uint32_t)hr);
        if (q != lastq) {
            lastq = q;
            last = now_ns();
        }
        if (now_ns() - last > STALL_NS) break;
    }
    if (!r->disconnected && SUCCEEDED(PeerGraphGetDataQueue(e->g, e->cid, &q, &lim))) {
        f->queued = q;
        f->limit = lim;
    }
    f->heap = heap_now() - heap0;
    f->kernel_outq = p2p_kernel_bytes(1);
    f->ms = (double)(now_ns() - t0) / 1e6;
}

static void p2p_send(const params *p)
{
    p2p_end e;
    result r;
    PEER_GRAPH_EVENT_REGISTRATION reg[3];
    PEER_ADDRESS addr;
    HRESULT hr;
    int connected = 0;
    size_t S = (size_t)p->size;
    uint8_t *buf = (uint8_t *)xcalloc(S, 1);
    long long i, t;

    memset(&r, 0, sizeof r);
    p2p_start(p, &r, &e);
    PeerGraphDelete(GRAPH_ID, SEND_PEER, SEND_DB);
    hr = PeerGraphOpen(GRAPH_ID, SEND_PEER, SEND_DB, NULL, 0, NULL, &e.g);
    if (hr != PEER_S_GRAPH_DATA_CREATED) child_fail(p, &r, "PeerGraphOpen: 0x%08lX", (unsigned long)(uint32_t)hr);
    reg[0].eventType = PEER_GRAPH_EVENT_DIRECT_CONNECTION;
    reg[1].eventType = PEER_GRAPH_EVENT_INCOMING_DATA;
    reg[2].eventType = PEER_GRAPH_EVENT_SEND_READY;
    reg[0].pType = reg[1].pType = reg[2].pType = NULL;
    if (FAILED(hr = PeerGraphRegisterEvent(e.g, NULL, 3, reg, &e.ev)))
        child_fail(p, &r, "PeerGraphRegisterEvent: 0x%08lX", (unsigned long)(uint32_t)hr);
    memset(&addr, 0, sizeof addr);
    addr.dwSize = sizeof addr;
    addr.sin6.sin6_family = AF_INET6;
    addr.sin6.sin6_addr = g_loop;
    addr.sin6.sin6_port = htons((uint16_t)p->port);
    host_step(&e.hp, 0); /* the library's clock past the set-up */
    if (FAILED(hr = PeerGraphOpenDirectConnection(e.g, RECV_PEER, &addr, &e.cid)))
        child_fail(p, &r, "PeerGraphOpenDirectConnection: 0x%08lX", (unsigned long)(uint32_t)hr);
    t = now_ns();
    while (!connected) {
        if (now_ns() - t > 10000000000LL) child_fail(p, &r, "direct connection: no outcome within 10 s");
        host_step(&e.hp, 100);
        p2p_send_pop(p, &r, &e, NULL, &connected);
    }
    msg_init(buf, (int)S);

    if (p->kind == K_RTT) {
        long long warm = warmup_of(p->count), *d = (long long *)xcalloc((size_t)p->count, sizeof *d);
        usage_begin(&r);
        for (i = 0; i < warm + p->count; i++) {
            int got = 0;
            long long t1 = now_ns();
            msg_stamp(buf, (int)S, (uint64_t)i);
            if ((hr = PeerGraphSendData(e.g, e.cid, &DATA_TYPE, (ULONG)S, buf)) != S_OK)
                child_fail(p, &r, "PeerGraphSendData (ping): 0x%08lX", (unsigned long)(uint32_t)hr);
            while (!got) {
                host_step(&e.hp, 1000);
                p2p_send_pop(p, &r, &e, &got, NULL);
                if (now_ns() - t1 > 10000000000LL) child_fail(p, &r, "no pong within 10 s");
            }
            r.msgs++;
            if (i >= warm) d[i - warm] = now_ns() - t1;
        }
        usage_end(&r);
        latency_stats(&r, d, p->count);
        r.msgs = p->count;
        free(d);
    } else if (p->kind == K_THRU) {
        ULONG q = 0;
        r.t0 = now_ns();
        usage_begin(&r);
        for (i = 0; i < p->count;) {
            msg_stamp(buf, (int)S, (uint64_t)i);
            hr = PeerGraphSendData(e.g, e.cid, &DATA_TYPE, (ULONG)S, buf);
            if (hr == S_OK) {
                r.sum = msg_sum(r.sum, buf, S);
                i++;
                continue;
            }
            if (hr != PEER_E_SEND_QUEUE_FULL)
                child_fail(p, &r, "PeerGraphSendData: 0x%08lX after %lld messages", (unsigned long)(uint32_t)hr, i);
            r.nfull++;
            t = now_ns();
            for (;;) { /* wait for SEND_READY */
                host_step(&e.hp, 100);
                if (p2p_send_pop(p, &r, &e, NULL, NULL)) break;
                if (now_ns() - t > 5000000000LL) {
                    ULONG lim = 0;
                    PeerGraphGetDataQueue(e.g, e.cid, &q, &lim);
                    child_fail(p, &r, "no SEND_READY within 5 s (queued %lu of %lu)", (unsigned long)q, (unsigned long)lim);
                }
            }
        }
        r.msgs = p->count;
        /* the rest leaves the library's queue only when serviced */
        t = now_ns();
        while (SUCCEEDED(hr = PeerGraphGetDataQueue(e.g, e.cid, &q, NULL)) && q > 0) {
            host_step(&e.hp, 100);
            p2p_send_pop(p, &r, &e, NULL, NULL);
            if (now_ns() - t > DRAIN_LIMIT_NS) child_fail(p, &r, "queue not drained within 20 s (%lu bytes)", (unsigned long)q);
        }
        usage_end(&r);
    } else { /* K_MEM_STALL, K_MEM_NOPOP */
        long long seq = 0, heap0;
        HRESULT h2;
        heap0 = heap_now();
        p2p_fill(p, &r, &e, buf, &seq, &r.fill[0], heap0);
        if (!r.disconnected) {
            if (FAILED(h2 = PeerGraphSetDataQueueLimit(e.g, e.cid, RAISED_LIMIT)))
                child_fail(p, &r, "PeerGraphSetDataQueueLimit: 0x%08lX", (unsigned long)(uint32_t)h2);
            r.fill[1] = r.fill[0];
            r.fill[1].nfull = 0;
            p2p_fill(p, &r, &e, buf, &seq, &r.fill[1], heap0);
        }
        r.msgs = seq;
    }
    r.ok = 1;
    send_result(p, &r);
    /* keep servicing (the receiver may still be reading) until told to stop;
     * the receiver may close first */
    while (!ctl_ready(p->ctl, 0)) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        host_step(&e.hp, 20);
        while (PeerGraphGetEventData(e.ev, &d) == S_OK) PeerGraphFreeData(d);
    }
    free(buf);
    p2p_stop(&e, SEND_PEER, SEND_DB);
}

/* ------------------------------------------------------------------------- */
/* ENet                                                                      */
/* ------------------------------------------------------------------------- */

static long long g_enet_freed; /* payload bytes whose packets ENet has freed (acknowledged) */

static void ENET_CALLBACK enet_freed(ENetPacket *pk) { g_enet_freed += (long long)pk->dataLength; }

static ENetHost *enet_start(const params *p, result *r, int server)
{
    ENetAddress a;
    ENetHost *h;
    if (enet_initialize() != 0) child_fail(p, r, "enet_initialize");
    memset(&a, 0, sizeof a);
    enet_address_set_host_ip(&a, "127.0.0.1");
    a.port = 0;
    h = enet_host_create(server ? &a : NULL, 1, 1, 0, 0);
    if (!h) child_fail(p, r, "enet_host_create");
    return h;
}

static void enet_stop(ENetHost *h, ENetPeer *peer)
{
    ENetEvent ev;
    long long t = now_ns();
    if (peer) {
        enet_peer_disconnect(peer, 0);
        while (now_ns() - t < 200000000LL && enet_host_service(h, &ev, 10) >= 0) {
            if (ev.type == ENET_EVENT_TYPE_RECEIVE) enet_packet_destroy(ev.packet);
            if (ev.type == ENET_EVENT_TYPE_DISCONNECT) break;
        }
    }
    enet_host_destroy(h);
    enet_deinitialize();
}

static void enet_send_packet(const params *p, result *r, ENetPeer *peer, const void *data, size_t n)
{
    ENetPacket *pk = enet_packet_create(data, n, ENET_PACKET_FLAG_RELIABLE);
    if (!pk) child_fail(p, r, "enet_packet_create");
    pk->freeCallback = enet_freed;
    if (enet_peer_send(peer, 0, pk) != 0) child_fail(p, r, "enet_peer_send");
}

static void enet_recv(const params *p)
{
    result r;
    ENetHost *h;
    ENetPeer *peer = NULL;
    ENetEvent ev;
    ENetAddress a;
    int port;
    long long target = p->kind == K_RTT ? p->count + warmup_of(p->count) : p->count;

    memset(&r, 0, sizeof r);
    h = enet_start(p, &r, 1);
    if (enet_socket_get_address(h->socket, &a) != 0) child_fail(p, &r, "enet_socket_get_address");
    port = a.port;
    write_all(p->portfd, &port, sizeof port);
    usage_begin(&r);
    while (r.msgs < target) {
        int k = enet_host_service(h, &ev, 100);
        if (k < 0) child_fail(p, &r, "enet_host_service");
        if (k == 0) continue;
        if (ev.type == ENET_EVENT_TYPE_CONNECT) peer = ev.peer;
        else if (ev.type == ENET_EVENT_TYPE_DISCONNECT) child_fail(p, &r, "ENet: disconnected after %lld messages", r.msgs);
        else if (ev.type == ENET_EVENT_TYPE_RECEIVE) {
            if (p->kind == K_RTT) {
                enet_send_packet(p, &r, ev.peer, ev.packet->data, ev.packet->dataLength);
                enet_host_flush(h);
                r.msgs++;
            } else {
                if (ev.packet->dataLength != (size_t)p->size) r.bad++;
                else {
                    if (msg_seq(ev.packet->data) != (uint64_t)r.msgs) r.bad++;
                    r.sum = msg_sum(r.sum, ev.packet->data, (size_t)p->size);
                }
                if (++r.msgs == p->count) {
                    r.t1 = now_ns();
                    usage_end(&r);
                }
            }
            enet_packet_destroy(ev.packet);
        }
    }
    if (p->kind == K_RTT) usage_end(&r);
    r.ok = 1;
    send_result(p, &r);
    while (!ctl_ready(p->ctl, 0)) { /* the sender may still wait for our acknowledgements */
        if (enet_host_service(h, &ev, 10) > 0 && ev.type == ENET_EVENT_TYPE_RECEIVE) enet_packet_destroy(ev.packet);
    }
    enet_stop(h, peer);
}

static void enet_send(const params *p)
{
    result r;
    ENetHost *h;
    ENetPeer *peer;
    ENetEvent ev;
    ENetAddress a;
    size_t S = (size_t)p->size;
    uint8_t *buf = (uint8_t *)xcalloc(S, 1);
    long long i, t, sent = 0;
    int connected = 0;

    memset(&r, 0, sizeof r);
    h = enet_start(p, &r, 0);
    memset(&a, 0, sizeof a);
    enet_address_set_host_ip(&a, "127.0.0.1");
    a.port = (enet_uint16)p->port;
    if (!(peer = enet_host_connect(h, &a, 1, 0))) child_fail(p, &r, "enet_host_connect");
    t = now_ns();
    while (!connected) {
        if (now_ns() - t > 10000000000LL) child_fail(p, &r, "ENet connect: no outcome within 10 s");
        if (enet_host_service(h, &ev, 100) > 0) {
            if (ev.type == ENET_EVENT_TYPE_CONNECT) connected = 1;
            else if (ev.type == ENET_EVENT_TYPE_DISCONNECT) child_fail(p, &r, "ENet connect failed");
        }
    }
    msg_init(buf, (int)S);
    if (p->kind == K_RTT) {
        long long warm = warmup_of(p->count), *d = (long long *)xcalloc((size_t)p->count, sizeof *d);
        usage_begin(&r);
        for (i = 0; i < warm + p->count; i++) {
            int got = 0;
            long long t1 = now_ns();
            msg_stamp(buf, (int)S, (uint64_t)i);
            enet_send_packet(p, &r, peer, buf, S);
            enet_host_flush(h);
            while (!got) {
                int k = enet_host_service(h, &ev, 1000);
                if (k < 0) child_fail(p, &r, "enet_host_service");
                if (k == 0) {
                    if (now_ns() - t1 > 10000000000LL) child_fail(p, &r, "ENet: no pong within 10 s");
                    continue;
                }
                if (ev.type == ENET_EVENT_TYPE_DISCONNECT) child_fail(p, &r, "ENet: disconnected");
                if (ev.type == ENET_EVENT_TYPE_RECEIVE) {
                    if (ev.packet->dataLength != S || msg_seq(ev.packet->data) != (uint64_t)i) r.bad++;
                    enet_packet_destroy(ev.packet);
                    got = 1;
                }
            }
            if (i >= warm) d[i - warm] = now_ns() - t1;
        }
        usage_end(&r);
        latency_stats(&r, d, p->count);
        r.msgs = p->count;
        free(d);
    } else {
        long long since = 0; /* bytes queued since the last service */
        r.t0 = now_ns();
        usage_begin(&r);
        for (i = 0; i < p->count;) {
            if (sent - g_enet_freed + (long long)S <= ENET_UNACKED_CAP || sent == g_enet_freed) {
                msg_stamp(buf, (int)S, (uint64_t)i);
                r.sum = msg_sum(r.sum, buf, S);
                enet_send_packet(p, &r, peer, buf, S);
                sent += (long long)S;
                since += (long long)S;
                i++;
                if (since < 16384) continue;
                since = 0;
                while (enet_host_service(h, &ev, 0) > 0)
                    if (ev.type == ENET_EVENT_TYPE_DISCONNECT) child_fail(p, &r, "ENet: disconnected");
            } else {
                r.nfull++;
                since = 0;
                if (enet_host_service(h, &ev, 1) > 0 && ev.type == ENET_EVENT_TYPE_DISCONNECT)
                    child_fail(p, &r, "ENet: disconnected");
            }
        }
        r.msgs = p->count;
        t = now_ns();
        while (g_enet_freed < sent) { /* until every packet is acknowledged */
            if (enet_host_service(h, &ev, 1) > 0 && ev.type == ENET_EVENT_TYPE_DISCONNECT)
                child_fail(p, &r, "ENet: disconnected");
            if (now_ns() - t > DRAIN_LIMIT_NS) child_fail(p, &r, "ENet: not acknowledged within 20 s");
        }
        usage_end(&r);
    }
    r.ok = 1;
    send_result(p, &r);
    while (!ctl_ready(p->ctl, 0)) {
        if (enet_host_service(h, &ev, 10) > 0 && ev.type == ENET_EVENT_TYPE_RECEIVE) enet_packet_destroy(ev.packet);
    }
    free(buf);
    enet_stop(h, peer);
}

/* ------------------------------------------------------------------------- */
/* the parent: one pair of processes per measurement                         */
/* ------------------------------------------------------------------------- */

static void (*const recv_fn[T_COUNT])(const params *) = {raw_recv, raw_recv, p2p_recv, enet_recv, udp_recv};
static void (*const send_fn[T_COUNT])(const params *) = {raw_send, raw_send_batched, p2p_send, enet_send, udp_send};

/* --pin: the receiver on CPU 1, the sender on CPU 0.  Off by default: on the
 * 2-vCPU VM of BENCHMARKS.md every cross-CPU wake-up then costs ~100 us, so
 * the round trips measure the hypervisor's IPIs (209 us vs 28 us unpinned). */
static int g_pin = 0;

static void pin_to(int cpu)
{
#ifdef __linux__
    cpu_set_t set;
    if (!g_pin || sysconf(_SC_NPROCESSORS_ONLN) < 2) return;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    (void)sched_setaffinity(0, sizeof set, &set);
#else
    (void)cpu;
#endif
}

/* One measurement: transport t with the parameters pa (what bench_pair runs). */
typedef struct pair_job {
    int t;
    params pa;
} pair_job;

/* An end's process: its pipes into a copy of the parameters, then t's end. */
static void pair_end(void *ctx, const bench_end *e)
{
    const pair_job *j = (const pair_job *)ctx;
    params p = j->pa;
    pin_to(e->sender ? 0 : 1);
    if (e->sender) p.port = e->port;
    p.portfd = e->portfd;
    p.out = e->out;
    p.ctl = e->ctl;
    (e->sender ? send_fn : recv_fn)[j->t](&p);
}

/* The memory test's receiver starts reading once the sender reported: tell it
 * how many messages to expect. */
static void pair_sent(void *ctx, int ctl, const void *rs)
{
    long long accepted = ((const result *)rs)->msgs;
    (void)ctx;
    write_all(ctl, &accepted, sizeof accepted);
}

/* Runs the receiver and the sender of transport t; 0 when both reported. */
static int run_pair(int t, params pa, result *rr, result *rs)
{
    pair_job j;
    bench_pair bp = {pair_end, pair_sent, &j, BENCH_RESULT_LAYOUT(result), CHILD_LIMIT_S, 30000, PARENT_WAIT_MS, 10000, 0};
    j.t = t;
    j.pa = pa;
    return bench_pair_run(&bp, rr, rs);
}

/* ------------------------------------------------------------------------- */
/* report                                                                    */
/* ------------------------------------------------------------------------- */

typedef struct thru_row {
    int ran, fails;
    double mbs, msgs_s;   /* medians */
    double cpu_s, cpu_r;  /* sender's / receiver's CPU time over the elapsed time (median, %) */
    double flt;           /* page faults per message, both ends (median) */
    long long bad;
    int checked;          /* every run: count and checksum matched */
    char err[200];
} thru_row;

typedef struct rtt_row {
    int ran, fails;
    double mean_us, p50_us, p99_us, max_us; /* medians over repetitions */
    double cpu_us;                          /* both ends' CPU time per round trip (median) */
    long long bad;
    char err[200];
} rtt_row;

static double median_d(double *v, int n)
{
    if (n <= 0) return 0;
    sort_d(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

static const char *pass(int c) { return c ? "PASS" : "MISS"; }

static void fmt_bytes(char *out, size_t n, long long b)
{
    if (b < 0) snprintf(out, n, "n/a");
    else if (b >= 10LL * 1024 * 1024) snprintf(out, n, "%.1f MiB", (double)b / 1048576.0);
    else if (b >= 10 * 1024) snprintf(out, n, "%.0f KiB", (double)b / 1024.0);
    else snprintf(out, n, "%lld B", b);
}

static void clean_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[1200];
    if (d) {
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void usage(const char *argv0)
{
    fprintf(stderr,
            "usage: %s [--quick] [--reps N] [--scale F] [--rtt N] [--size BYTES] [--only raw,batched,p2p,enet,udp]\n"
            "          [--no-rtt] [--no-mem] [--pin] [--ipv6]\n",
            argv0);
    exit(2);
}

int main(int argc, char **argv)
{
    int sizes[3] = {64, 1024, 65536}, NS = 3, do_rtt = 1, big = 2;
    double total_mb[3] = {8, 128, 512}; /* bytes per run, 10^6 */
    int reps = 5, quick = 0, do_mem = 1, i, s, t, k, rttN = 20000, use[T_COUNT], ipv6 = 0;
    double scale = 1;
    thru_row thru[3][T_COUNT];
    rtt_row rtt[T_COUNT];
    double rtt_rep[T_COUNT][16]; /* each repetition's mean round trip (0: that run failed), for paired ratios */
    result mem[3][2];
    int mem_ran[3] = {0, 0, 0}, mem_ok[3] = {0, 0, 0};
    static const int mem_kind[3] = {K_MEM_STALL, K_MEM_NOPOP, K_MEM_NOPOP};
    static const int mem_size[3] = {65536, 65536, 16};
    char dir[512];
    const char *tmp = getenv("TMPDIR");
    params pa;

    for (t = 0; t < T_COUNT; t++) use[t] = 1;
    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--no-mem")) do_mem = 0;
        else if (!strcmp(argv[i], "--no-rtt")) do_rtt = 0;
        else if (!strcmp(argv[i], "--pin")) g_pin = 1;
        else if (!strcmp(argv[i], "--ipv6")) ipv6 = 1;
        else if (!strcmp(argv[i], "--size") && i + 1 < argc) {
            NS = 1;
            sizes[0] = atoi(argv[++i]);
            total_mb[0] = sizes[0] >= 65536 ? 512 : sizes[0] >= 1024 ? 128 : 8;
            if (sizes[0] < 16 || sizes[0] > (int)PEER_MAX_DATA_SIZE) usage(argv[0]);
        }
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rtt") && i + 1 < argc) rttN = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--scale") && i + 1 < argc) scale = atof(argv[++i]);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            char *list = argv[++i];
            for (t = 0; t < T_COUNT; t++) use[t] = strstr(list, tkey[t]) != NULL;
        } else
            usage(argv[0]);
    }
    if (NS == 1) big = sizes[0] == 65536 ? 0 : -1;
    if (quick) {
        scale /= 16;
        if (rttN == 20000) rttN = 2000;
        reps = 1;
    }
    if (reps < 1 || rttN < 1 || scale <= 0) usage(argv[0]);
    if (ipv6) g_loop = in6addr_loopback;
    else {
        memset(&g_loop, 0, sizeof g_loop);
        g_loop.s6_addr[10] = g_loop.s6_addr[11] = 0xff;
        g_loop.s6_addr[12] = 127;
        g_loop.s6_addr[15] = 1;
    }
    signal(SIGPIPE, SIG_IGN);
    snprintf(dir, sizeof dir, "%s/bench_data.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        perror(BENCH_NAME ": mkdtemp");
        return 2;
    }
    memset(thru, 0, sizeof thru);
    memset(rtt, 0, sizeof rtt);
    memset(mem, 0, sizeof mem);
    memset(&pa, 0, sizeof pa);
    pa.dbdir = dir;

    printf("bench_data: application data between two processes over loopback: p2pgraph direct connection,\n"
           "raw TCP and ENet %d.%d.%d (reliable), measured in the same run\n",
           ENET_VERSION_MAJOR, ENET_VERSION_MINOR, ENET_VERSION_PATCH);
    print_command_machine(argc, argv);

    /* warm-up (discarded): first use of each stack, the allocator, the disk */
    for (t = 0; t < T_COUNT; t++) {
        result a, b;
        if (!use[t] || t == T_UDP) continue; /* round trip only */
        pa.kind = K_THRU;
        pa.size = 1024;
        pa.count = 2000;
        run_pair(t, pa, &a, &b);
    }

    /* 1. throughput */
    for (s = 0; s < NS; s++) {
        long long count = (long long)(total_mb[s] * scale * 1e6 / sizes[s]);
        double mbs[T_COUNT][16], mps[T_COUNT][16], cs[T_COUNT][16], cr[T_COUNT][16], fl[T_COUNT][16];
        int n[T_COUNT] = {0};
        if (count < 1) count = 1;
        if (reps > 16) reps = 16;
        for (t = 0; t < T_COUNT; t++) thru[s][t].checked = 1;
        for (k = 0; k < reps; k++)
            for (t = 0; t < T_COUNT; t++) {
                result rr, rs;
                thru_row *row = &thru[s][t];
                double sec;
                if (!use[t] || t == T_UDP) continue;
                pa.kind = K_THRU;
                pa.size = sizes[s];
                pa.count = count;
                row->ran = 1;
                if (run_pair(t, pa, &rr, &rs) != 0) {
                    row->fails++;
                    snprintf(row->err, sizeof row->err, "%s", rr.err[0] ? rr.err : rs.err);
                    continue;
                }
                if (rr.msgs != count || rr.sum != rs.sum || rr.bad) row->checked = 0;
                row->bad += rr.bad;
                sec = (double)(rr.t1 - rs.t0) / 1e9;
                mbs[t][n[t]] = (double)count * sizes[s] / 1e6 / sec;
                cs[t][n[t]] = 100.0 * (double)rs.cpu_ns / 1e9 / sec;
                cr[t][n[t]] = 100.0 * (double)rr.cpu_ns / 1e9 / sec;
                fl[t][n[t]] = (double)(rs.flt + rr.flt) / (double)count;
                mps[t][n[t]++] = (double)count / sec;
            }
        for (t = 0; t < T_COUNT; t++) {
            thru[s][t].mbs = median_d(mbs[t], n[t]);
            thru[s][t].msgs_s = median_d(mps[t], n[t]);
            thru[s][t].cpu_s = median_d(cs[t], n[t]);
            thru[s][t].cpu_r = median_d(cr[t], n[t]);
            thru[s][t].flt = median_d(fl[t], n[t]);
        }
    }

    /* 2. round trips */
    if (do_rtt) {
        double v[T_COUNT][5][16];
        int n[T_COUNT] = {0};
        memset(rtt_rep, 0, sizeof rtt_rep);
        for (k = 0; k < reps; k++)
            for (t = 0; t < T_COUNT; t++) {
                result rr, rs;
                if (!use[t] || t == T_RAWB) continue;
                pa.kind = K_RTT;
                pa.size = RTT_SIZE;
                pa.count = rttN;
                rtt[t].ran = 1;
                if (run_pair(t, pa, &rr, &rs) != 0) {
                    rtt[t].fails++;
                    snprintf(rtt[t].err, sizeof rtt[t].err, "%s", rs.err[0] ? rs.err : rr.err);
                    continue;
                }
                rtt[t].bad += rs.bad;
                v[t][0][n[t]] = rs.mean_us;
                v[t][1][n[t]] = rs.p50_us;
                v[t][2][n[t]] = rs.p99_us;
                v[t][3][n[t]] = rs.max_us;
                v[t][4][n[t]++] = (double)(rs.cpu_ns + rr.cpu_ns) / 1e3 / (double)(rttN + warmup_of(rttN));
                rtt_rep[t][k] = rs.mean_us;
            }
        for (t = 0; t < T_COUNT; t++) {
            rtt[t].mean_us = median_d(v[t][0], n[t]);
            rtt[t].p50_us = median_d(v[t][1], n[t]);
            rtt[t].p99_us = median_d(v[t][2], n[t]);
            rtt[t].max_us = median_d(v[t][3], n[t]);
            rtt[t].cpu_us = median_d(v[t][4], n[t]);
        }
    }

    /* 3. memory with a receiver that does not read */
    if (do_mem && use[T_P2P])
        for (i = 0; i < 3; i++) {
            pa.kind = mem_kind[i];
            pa.size = mem_size[i];
            pa.count = 0;
            mem_ran[i] = 1;
            mem_ok[i] = run_pair(T_P2P, pa, &mem[i][0], &mem[i][1]) == 0;
        }
    clean_dir(dir);

    /* ---------------- report ---------------- */
    printf("\n1. Throughput, one direction (payload MB/s, 1 MB = 10^6 B; median of %d run%s; ratio = / raw TCP)\n", reps,
           reps > 1 ? "s" : "");
    printf("CPU: each end's CPU time (user + system) over the elapsed time; faults: page faults per message, both ends.\n");
    printf("%7s %9s  %-16s %9s %11s %8s %6s %6s %7s  %s\n", "size", "messages", "what", "MB/s", "msgs/s", "ratio", "CPU s",
           "CPU r", "faults", "checked");
    for (s = 0; s < NS; s++) {
        long long count = (long long)(total_mb[s] * scale * 1e6 / sizes[s]);
        if (count < 1) count = 1;
        for (t = 0; t < T_COUNT; t++) {
            const thru_row *r = &thru[s][t];
            char rs[32];
            if (!r->ran) continue;
            if (r->fails == reps) {
                printf("%7d %9lld  %-16s FAILED: %s\n", sizes[s], count, tname[t], r->err);
                continue;
            }
            if (thru[s][T_RAW].mbs > 0) snprintf(rs, sizeof rs, "%7.2fx", ratio(r->mbs, thru[s][T_RAW].mbs));
            else snprintf(rs, sizeof rs, "%8s", "-");
            printf("%7d %9lld  %-16s %9.1f %11.0f %s %5.0f%% %5.0f%% %7.2f  %s%s\n", sizes[s], count, tname[t], r->mbs,
                   r->msgs_s, rs, r->cpu_s, r->cpu_r, r->flt, r->checked ? "ok" : "MISMATCH",
                   r->fails ? "  (some runs failed)" : "");
        }
    }

    if (do_rtt) printf("\n2. Round trip, %d-byte ping-pong, one in flight (%d round trips after %lld warm-up; us; median of %d run%s)\n",
           RTT_SIZE, rttN, warmup_of(rttN), reps, reps > 1 ? "s" : "");
    if (do_rtt) printf("%-16s %9s %9s %9s %9s %9s %12s %12s\n", "what", "mean", "p50", "p99", "max", "CPU/rt", "mean ratio", "p50 ratio");
    for (t = 0; t < T_COUNT; t++) {
        const rtt_row *r = &rtt[t];
        if (!r->ran) continue;
        if (r->fails == reps) {
            printf("%-16s FAILED: %s\n", tname[t], r->err);
            continue;
        }
        printf("%-16s %9.1f %9.1f %9.1f %9.1f %9.1f", tname[t], r->mean_us, r->p50_us, r->p99_us, r->max_us, r->cpu_us);
        if (rtt[T_RAW].mean_us > 0)
            printf(" %11.2fx %11.2fx", ratio(r->mean_us, rtt[T_RAW].mean_us), ratio(r->p50_us, rtt[T_RAW].p50_us));
        printf("%s\n", r->bad ? "  (wrong replies!)" : "");
    }

    if (do_mem && use[T_P2P]) {
        static const char *const what[3] = {"receiver not servicing at all, 64 KB messages",
                                            "receiver servicing, not popping events, 64 KB messages",
                                            "receiver servicing, not popping events, 16 B messages"};
        printf("\n3. p2pgraph sender memory with a receiver that does not read (heap: glibc uordblks + hblkhd)\n");
        for (i = 0; i < 3; i++) {
            const result *rr = &mem[i][0], *rs = &mem[i][1];
            int f;
            if (!mem_ran[i]) continue;
            printf("  %s\n", what[i]);
            if (!rs->ok) {
                printf("    FAILED: %s\n", rs->err);
                continue;
            }
            for (f = 0; f < 2; f++) {
                const mem_fill *m = &rs->fill[f];
                long long bound = m->limit > (long long)mem_size[i] + PEER_DATA_MSG_OVERHEAD ? m->limit
                                                                                            : (long long)mem_size[i] + PEER_DATA_MSG_OVERHEAD;
                char a[32], q[32], l[32], h[32], ko[32];
                fmt_bytes(a, sizeof a, m->accepted_bytes);
                fmt_bytes(q, sizeof q, m->queued);
                fmt_bytes(l, sizeof l, m->limit);
                fmt_bytes(h, sizeof h, m->heap);
                fmt_bytes(ko, sizeof ko, m->kernel_outq);
                printf("    limit %-8s accepted %-9s (%lld msgs); queued %-9s heap growth %-9s (%.2fx queued);"
                       " sender kernel sndq %s;  queued <= bound: %s\n",
                       l, a, m->accepted_msgs, q, h, ratio((double)m->heap, (double)m->queued), ko,
                       pass(m->queued <= bound && m->queued > 0));
            }
            if (rs->disconnected) printf("    the connection went down during the fill\n");
            if (rr->ok) {
                char h[32], ki[32];
                fmt_bytes(h, sizeof h, rr->rheap);
                fmt_bytes(ki, sizeof ki, rr->rkernel_inq);
                printf("    receiver: heap growth %s, kernel rcvq %s; then read %lld of %lld accepted messages in %.0f ms,"
                       " %lld out of order/wrong, %lld STATUS_CHANGED events: %s\n",
                       h, ki, rr->msgs, rs->msgs, rr->drain_ms, rr->bad, rr->overflow_events,
                       pass(rr->msgs == rs->msgs && rr->bad == 0));
            } else
                printf("    receiver FAILED: %s\n", rr->err);
        }
    }

    printf("\nTargets\n");
    if (use[T_RAW] && use[T_P2P] && big >= 0) {
        double r64 = ratio(thru[big][T_P2P].mbs, thru[big][T_RAW].mbs);
        printf("  p2pgraph >= %.1fx raw TCP throughput at 64 KB: %.2fx %s\n", TARGET_THRU, r64,
               pass(r64 >= TARGET_THRU && thru[big][T_P2P].checked));
    }
    if (use[T_RAW] && use[T_P2P] && do_rtt) {
        double rm = ratio(rtt[T_P2P].mean_us, rtt[T_RAW].mean_us), rp = ratio(rtt[T_P2P].p50_us, rtt[T_RAW].p50_us);
        printf("  p2pgraph 64 B round trip <= %.1fx raw (mean and p50): %.2fx / %.2fx %s\n", TARGET_RTT, rm, rp,
               pass(rm > 0 && rp > 0 && rm <= TARGET_RTT && rp <= TARGET_RTT));
    }
    if (use[T_ENET] && use[T_P2P]) {
        for (s = 0; s < NS; s++)
            printf("  p2pgraph ahead of ENet, throughput %5d B: %.2fx ENet %s\n", sizes[s],
                   ratio(thru[s][T_P2P].mbs, thru[s][T_ENET].mbs), pass(thru[s][T_P2P].mbs > thru[s][T_ENET].mbs));
        if (do_rtt)
            printf("  p2pgraph ahead of ENet, round trip (mean): %.2fx ENet's time %s\n",
                   ratio(rtt[T_P2P].mean_us, rtt[T_ENET].mean_us),
                   pass(rtt[T_P2P].mean_us > 0 && rtt[T_P2P].mean_us < rtt[T_ENET].mean_us));
        if (do_rtt) {
            /* Runs of one build spread about as much as the two libraries differ,
             * so compare each run with the ENet run next to it, and CPU too. */
            double pr[16];
            int np = 0, wins = 0;
            for (k = 0; k < reps; k++)
                if (rtt_rep[T_P2P][k] > 0 && rtt_rep[T_ENET][k] > 0) {
                    pr[np] = rtt_rep[T_P2P][k] / rtt_rep[T_ENET][k];
                    wins += pr[np++] < 1.0;
                }
            printf("  (no target) round trip paired by run: p2pgraph faster in %d of %d runs, median %.2fx ENet's time; "
                   "CPU per round trip %.2fx ENet's\n",
                   wins, np, median_d(pr, np), ratio(rtt[T_P2P].cpu_us, rtt[T_ENET].cpu_us));
        }
    }
    if (do_rtt && use[T_UDP] && use[T_RAW] && rtt[T_UDP].mean_us > 0 && rtt[T_RAW].mean_us > 0) {
        printf("  (no target) each over its own transport's floor, round trip mean:");
        if (use[T_P2P]) printf(" p2pgraph %.2fx raw TCP;", ratio(rtt[T_P2P].mean_us, rtt[T_RAW].mean_us));
        if (use[T_ENET]) printf(" ENet %.2fx raw UDP;", ratio(rtt[T_ENET].mean_us, rtt[T_UDP].mean_us));
        printf(" raw UDP is %.2fx raw TCP here\n", ratio(rtt[T_UDP].mean_us, rtt[T_RAW].mean_us));
    }
    for (i = 0; i < 3; i++)
        if (mem_ran[i] && !mem_ok[i]) printf("  memory test %d did not complete\n", i + 1);
    return 0;
}
#endif
