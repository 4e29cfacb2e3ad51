/*
 * bench/sync.c - database synchronization over real loopback ([::1]), one
 * process, one thread, one poll() loop, with the machine's own ceiling
 * measured in the same run.
 *
 * Part 1 (join + Sync All): node A (PeerGraphCreate) holds J records of 256
 *   payload bytes (default J = 10000); a fresh node B (PeerGraphOpen, new
 *   database) connects to A.  Per repetition, the clock runs from the
 *   PeerGraphConnect call to B's status gaining PEER_GRAPH_STATUS_SYNCHRONIZED.
 *   Wire bytes are counted by a socket shim (PeerGraphSetNetShim) wrapping the
 *   platform's send/recv and decoding the MS-PPGRH frames per socket.
 *   Machine ceiling: connect() + sending the J records' payload+ID bytes
 *   (J x 272) over one loopback TCP connection, the receiver handing each
 *   record to a file with one write() (the library's durability rule: every
 *   change reaches the OS before it is acknowledged).
 *
 * Part 2 (re-sync of two databases of H records, default H = 100000): A is
 *   grown to H records, B joins once (Sync All, timed), then for each D in
 *   1 10 100 1000, twice:
 *     A ahead: B is closed, A adds D records, B reopens and connects.
 *     B ahead: B reopens, adds D records while unconnected, then connects.
 *   Coming back with one neighbor, the library runs Time-based sync (since B
 *   left) and then Hash-based sync (PROTOCOL.md S4).  The shim splits the
 *   bytes by phase and message type and the conversation's round trips are
 *   counted.  Rounds are cumulative (after each, both sides hold the same
 *   records), so each differs by exactly D.
 *
 * Usage: bench_sync [-j J] [-r REPS] [-H H]   (run from the repository root;
 *   the databases go to build/tmp-bench-sync and are deleted at the end)
 */
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_sync: POSIX only (poll, setrlimit)\n");
    return 0;
}
#else

#include <netinet/tcp.h>
#include <arpa/inet.h>

#define BENCH_NAME "bench_sync"
#include "bench_util.h"

#define DB_DIR_N "build/tmp-bench-sync"
#define GRAPH_ID L"bench-sync"
#define PEER_A L"nodeA"
#define PEER_B L"nodeB"
#define PAYLOAD 256
#define ID_BYTES 16
#define TARGET_P99_MS 120.0
#define TARGET_WIRE_RATIO 1.1
#define STEP_LIMIT_NS (60LL * 1000000000LL) /* give up on one wait after 60 s */

static const GUID REC_TYPE = {0x5e1ec7ed, 0xbe7c, 0x4a11, {0x90, 0x1d, 0xb3, 0x2c, 0x4e, 0x55, 0x01, 0x02}};

/* ------------------------------------------------------------------------- */
/* counting shim: wraps the platform shim, decodes MS-PPGRH frames per socket */
/* ------------------------------------------------------------------------- */

#define NTYPES 16
static const char *const type_names[NTYPES] = {"?", "AUTH_INFO", "CONNECT", "WELCOME", "REFUSE", "DISCONNECT",
                                               "SOLICIT_NEW", "SOLICIT_TIME", "SOLICIT_HASH", "ADVERTISE",
                                               "REQUEST", "FLOOD", "SYNC_END", "PT2PT", "ACK", "BATCH"};
enum { T_SOLICIT_NEW = 6, T_SOLICIT_TIME, T_SOLICIT_HASH, T_ADVERTISE, T_REQUEST, T_FLOOD, T_SYNC_END, T_PT2PT,
       T_ACK };

typedef struct sockstat {
    int outbound;          /* created by pfnConnect (the initiator's end) */
    unsigned fh;           /* frame header bytes seen (0..1) */
    uint8_t fhb[2];
    unsigned frame_left;   /* payload bytes left in the current frame */
    uint8_t hdr[6];
    unsigned hlen;         /* message header bytes seen (0..6) */
    uint32_t msg_left;     /* bytes left in the current message after its header */
    int type;
    unsigned pend;         /* frame-header bytes not yet attributed to a message */
} sockstat;

typedef struct tstat { unsigned long long msgs, bytes; } tstat;

typedef struct msglog { long long t; uint8_t dir, type, phase; uint32_t size; } msglog;

static PEER_NET_SHIM g_plat;
static sockstat *g_ss;
static size_t g_ss_cap;
/* [phase][dir][type]; dir 0 = initiator -> responder, 1 = responder -> initiator;
 * phase 0 = before the first SOLICIT_HASH of the window, 1 = from it on */
static tstat g_ts[2][2][NTYPES];
static unsigned long long g_sent, g_recvd;
static int g_phase;
static msglog *g_log;
static size_t g_log_n, g_log_cap;
static int g_log_on;
static long long g_t0; /* the window's start, for the conversation's time stamps */

static sockstat *ss_get(PEER_SOCKET s)
{
    if (s < 0) return NULL;
    if ((size_t)s >= g_ss_cap) {
        size_t nc = g_ss_cap ? g_ss_cap : 256;
        sockstat *n;
        while (nc <= (size_t)s) nc *= 2;
        n = (sockstat *)realloc(g_ss, nc * sizeof *n);
        if (!n) { fprintf(stderr, "bench_sync: out of memory\n"); exit(2); }
        memset(n + g_ss_cap, 0, (nc - g_ss_cap) * sizeof *n);
        g_ss = n;
        g_ss_cap = nc;
    }
    return &g_ss[s];
}

static void counters_reset(void)
{
    memset(g_ts, 0, sizeof g_ts);
    g_sent = g_recvd = 0;
    g_phase = 0;
    g_log_n = 0;
}

static void msg_start(sockstat *st, int dir, uint32_t size)
{
    int ty = st->type;
    if (ty == T_SOLICIT_HASH) g_phase = 1;
    g_ts[g_phase][dir][ty].msgs++;
    g_ts[g_phase][dir][ty].bytes += 6 + st->pend;
    st->pend = 0;
    if (g_log_on) {
        if (g_log_n == g_log_cap) {
            size_t nc = g_log_cap ? 2 * g_log_cap : 4096;
            msglog *n = (msglog *)realloc(g_log, nc * sizeof *n);
            if (!n) { fprintf(stderr, "bench_sync: out of memory\n"); exit(2); }
            g_log = n;
            g_log_cap = nc;
        }
        g_log[g_log_n].t = now_ns();
        g_log[g_log_n].dir = (uint8_t)dir;
        g_log[g_log_n].type = (uint8_t)ty;
        g_log[g_log_n].phase = (uint8_t)g_phase;
        g_log[g_log_n].size = size;
        g_log_n++;
    }
}

/* Accounts n bytes sent on socket st: frames (2-byte length + payload), the
 * payload a stream of messages (4-byte size, version, type, ...). */
static void account(sockstat *st, const uint8_t *p, size_t n)
{
    int dir = st->outbound ? 0 : 1;
    while (n) {
        size_t k;
        if (st->frame_left == 0) {
            st->fhb[st->fh++] = *p++;
            n--;
            if (st->fh == 2) {
                st->frame_left = ((unsigned)st->fhb[0] << 8) | st->fhb[1];
                st->fh = 0;
                st->pend += 2;
            }
            continue;
        }
        k = n < st->frame_left ? n : st->frame_left;
        st->frame_left -= (unsigned)k;
        n -= k;
        while (k) {
            if (st->hlen < 6) {
                st->hdr[st->hlen++] = *p++;
                k--;
                if (st->hlen == 6) {
                    uint32_t size = ((uint32_t)st->hdr[0] << 24) | ((uint32_t)st->hdr[1] << 16) |
                                    ((uint32_t)st->hdr[2] << 8) | st->hdr[3];
                    st->type = st->hdr[5] < NTYPES - 1 ? st->hdr[5] : st->hdr[5] == 0x80 ? NTYPES - 1 : 0; /* 0x80: p2pgraph BATCH */
                    st->msg_left = size > 6 ? size - 6 : 0;
                    msg_start(st, dir, size);
                    if (!st->msg_left) st->hlen = 0;
                }
            } else {
                size_t t = k < st->msg_left ? k : st->msg_left;
                g_ts[g_phase][dir][st->type].bytes += t + st->pend;
                st->pend = 0;
                st->msg_left -= (uint32_t)t;
                p += t;
                k -= t;
                if (!st->msg_left) st->hlen = 0;
            }
        }
    }
}

static long cs_send(PVOID ctx, PEER_SOCKET s, const void *pv, ULONG cb)
{
    long k = g_plat.pfnSend(ctx, s, pv, cb);
    if (k > 0) {
        sockstat *st = ss_get(s);
        g_sent += (unsigned long long)k;
        if (st) account(st, (const uint8_t *)pv, (size_t)k);
    }
    return k;
}
static long cs_recv(PVOID ctx, PEER_SOCKET s, void *pv, ULONG cb)
{
    long k = g_plat.pfnRecv(ctx, s, pv, cb);
    if (k > 0) g_recvd += (unsigned long long)k;
    return k;
}
static HRESULT cs_connect(PVOID ctx, const SOCKADDR_IN6 *to, PEER_SOCKET *ps)
{
    HRESULT hr = g_plat.pfnConnect(ctx, to, ps);
    if (SUCCEEDED(hr)) {
        sockstat *st = ss_get(*ps);
        if (st) { memset(st, 0, sizeof *st); st->outbound = 1; }
    }
    return hr;
}
static HRESULT cs_accept(PVOID ctx, PEER_SOCKET l, PEER_SOCKET *ps, SOCKADDR_IN6 *remote)
{
    HRESULT hr = g_plat.pfnAccept(ctx, l, ps, remote);
    if (hr == S_OK) {
        sockstat *st = ss_get(*ps);
        if (st) memset(st, 0, sizeof *st);
    }
    return hr;
}

static void install_counting_shim(void)
{
    PEER_NET_SHIM s;
    HRESULT hr;
    g_plat = *PeerGraphGetPlatformNetShim();
    s = g_plat;
    s.pfnSend = cs_send;
    s.pfnRecv = cs_recv;
    s.pfnConnect = cs_connect;
    s.pfnAccept = cs_accept;
    if (FAILED(hr = PeerGraphSetNetShim(&s))) die_hr("PeerGraphSetNetShim", hr);
}

static unsigned long long ts_bytes(int phase, int dir, int type) { return g_ts[phase][dir][type].bytes; }
static unsigned long long ts_msgs(int phase, int dir, int type) { return g_ts[phase][dir][type].msgs; }
static unsigned long long ts_sum_bytes(int type)
{
    return g_ts[0][0][type].bytes + g_ts[0][1][type].bytes + g_ts[1][0][type].bytes + g_ts[1][1][type].bytes;
}
/* ------------------------------------------------------------------------- */
/* host loop: GetPollFds + poll() + Service                                  */
/* ------------------------------------------------------------------------- */

static host_poll hp;

/* ------------------------------------------------------------------------- */
/* graphs and records                                                        */
/* ------------------------------------------------------------------------- */

static unsigned long g_rec_seq;

/* Adds n records of PAYLOAD bytes (distinct contents) to h. */
static void add_records(HGRAPH h, int n)
{
    uint8_t data[PAYLOAD];
    PEER_RECORD r;
    GUID id;
    ULONGLONG exp = peer_now(h) + 24ULL * 3600ULL * 10000000ULL; /* one day */
    int i, k;
    HRESULT hr;
    for (i = 0; i < n; i++) {
        unsigned long s = ++g_rec_seq;
        for (k = 0; k < PAYLOAD; k++) data[k] = (uint8_t)(s * 2654435761u >> ((k % 4) * 8)) ^ (uint8_t)k;
        init_record(&r, &REC_TYPE, exp, data, PAYLOAD);
        if (FAILED(hr = PeerGraphAddRecord(h, &r, &id))) die_hr("PeerGraphAddRecord", hr);
    }
}

static HGRAPH create_a(PEER_ADDRESS *addr)
{
    PEER_GRAPH_PROPERTIES p;
    PPEER_NODE_INFO ni = NULL;
    HGRAPH h;
    HRESULT hr;
    PeerGraphDelete(GRAPH_ID, PEER_A, L"sa");
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.dwScope = PEER_GRAPH_SCOPE_LOOPBACK;
    p.pwzGraphId = (PWSTR)GRAPH_ID;
    p.pwzCreatorId = (PWSTR)PEER_A;
    p.cPresenceMax = (ULONG)-1;
    if (FAILED(hr = PeerGraphCreate(&p, L"sa", NULL, &h))) die_hr("PeerGraphCreate", hr);
    if (FAILED(hr = PeerGraphListen(h, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0))) die_hr("PeerGraphListen", hr);
    if (FAILED(hr = PeerGraphGetNodeInfo(h, 0, &ni)) || ni->cAddresses < 1) die_hr("PeerGraphGetNodeInfo", hr);
    *addr = ni->pAddresses[0];
    PeerGraphFreeData(ni);
    memset(&addr->sin6.sin6_addr, 0, sizeof addr->sin6.sin6_addr);
    addr->sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
    return h;
}

/* Closes h and runs the loop a little so that its DISCONNECT goes out and A
 * drops the link. */
static void close_graph(HGRAPH h)
{
    HRESULT hr;
    if (FAILED(hr = PeerGraphClose(h))) die_hr("PeerGraphClose", hr);
    host_run_ms(&hp, 20);
}

/* ------------------------------------------------------------------------- */
/* machine ceiling: connect + stream J x 272 bytes + one write() per record  */
/* ------------------------------------------------------------------------- */

/* One run; returns ns from connect() to the last record written, or -1. */
static long long raw_transfer(int J, int recBytes, int withWrite)
{
    struct sockaddr_in6 sa;
    int lfd, cfd, sfd = -1, one = 1, fd = -1;
    size_t total = (size_t)J * (size_t)recBytes, sent = 0, got = 0, written = 0;
    uint8_t *src = (uint8_t *)xcalloc(total, 1), *dst = (uint8_t *)xcalloc(total, 1);
    long long t0, t1 = -1;
    char path[256];
    size_t i;
    for (i = 0; i < total; i++) src[i] = (uint8_t)(i * 131u);
    snprintf(path, sizeof path, "%s/raw-%d.bin", DB_DIR_N, (int)getpid());
    lfd = loopback_listener(&sa, 16, 1);
    if (withWrite && (fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644)) < 0) {
        perror("bench_sync: raw file");
        exit(2);
    }
    t0 = now_ns();
    cfd = socket(AF_INET6, SOCK_STREAM, 0);
    if (cfd < 0 || set_nonblock(cfd) < 0) { perror("bench_sync: raw socket"); exit(2); }
    (void)setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (connect(cfd, (struct sockaddr *)&sa, sizeof sa) < 0 && errno != EINPROGRESS) { perror("connect"); exit(2); }
    while (written < total && now_ns() - t0 < STEP_LIMIT_NS) {
        struct pollfd pf[3];
        int np = 0;
        pf[np].fd = lfd; pf[np].events = sfd < 0 ? POLLIN : 0; pf[np++].revents = 0;
        pf[np].fd = cfd; pf[np].events = sent < total ? POLLOUT : 0; pf[np++].revents = 0;
        pf[np].fd = sfd; pf[np].events = POLLIN; pf[np++].revents = 0;
        if (poll(pf, (nfds_t)np, 100) < 0 && errno != EINTR) { perror("poll"); exit(2); }
        if (sfd < 0 && (pf[0].revents & POLLIN)) {
            sfd = accept(lfd, NULL, NULL);
            if (sfd >= 0) { set_nonblock(sfd); (void)setsockopt(sfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); }
        }
        if (pf[1].revents & POLLOUT) {
            while (sent < total) {
                ssize_t k = send(cfd, src + sent, total - sent, MSG_NOSIGNAL);
                if (k <= 0) break;
                sent += (size_t)k;
            }
        }
        if (sfd >= 0) {
            for (;;) {
                ssize_t k = recv(sfd, dst + got, total - got, 0);
                if (k <= 0) break;
                got += (size_t)k;
            }
            /* hand every complete record to the file, one write() each */
            while (written + (size_t)recBytes <= got) {
                if (withWrite && write(fd, dst + written, (size_t)recBytes) != (ssize_t)recBytes) { perror("write"); exit(2); }
                written += (size_t)recBytes;
            }
        }
    }
    if (written >= total) t1 = now_ns() - t0;
    close(cfd);
    if (sfd >= 0) close(sfd);
    close(lfd);
    if (fd >= 0) { close(fd); unlink(path); }
    free(src);
    free(dst);
    return t1;
}

/* ------------------------------------------------------------------------- */
/* report helpers                                                            */
/* ------------------------------------------------------------------------- */

/* The sync conversation of phase ph from the message log: runs of the same
 * direction (ACK and PT2PT left out, they answer nothing), e.g.
 * "B:SOLICIT_HASH A:ADVERTISE B:REQUEST A:SYNC_END".  Returns the round
 * trips: initiator runs followed by a responder run.  Each run is stamped with
 * the ms since g_t0 at which its first message was sent. */
static int conversation(int ph, char *out, size_t cap)
{
    size_t i, o = 0;
    int lastDir = -1, rtt = 0, lastType = -1;
    unsigned long cnt = 0;
    out[0] = 0;
    for (i = 0; i <= g_log_n; i++) {
        int dir = -1, ty = -1;
        if (i < g_log_n) {
            const msglog *m = &g_log[i];
            if (m->phase != ph || m->type == T_ACK || m->type == T_PT2PT || m->type < T_SOLICIT_NEW) continue;
            dir = m->dir;
            ty = m->type;
        }
        if (lastType >= 0 && (ty != lastType || dir != lastDir)) { /* flush the previous (dir, type) group */
            int n = snprintf(out + o, o < cap ? cap - o : 0, cnt > 1 ? "%s%s x%lu" : "%s%s", "",
                             type_names[lastType], cnt);
            if (n > 0) o += (size_t)n;
            cnt = 0;
        }
        if (i == g_log_n) break;
        if (dir != lastDir) {
            int n = snprintf(out + o, o < cap ? cap - o : 0, "%s%s@%.0f:", o ? "  " : "", dir == 0 ? "B" : "A",
                             (double)(g_log[i].t - g_t0) / 1e6);
            if (n > 0) o += (size_t)n;
            if (dir == 1 && lastDir == 0) rtt++;
        } else if (ty != lastType) {
            int n = snprintf(out + o, o < cap ? cap - o : 0, ",");
            if (n > 0) o += (size_t)n;
        }
        lastDir = dir;
        lastType = ty;
        cnt++;
    }
    if (o >= cap && cap > 4) strcpy(out + cap - 4, "...");
    return rtt;
}

/* Was the hash exchange completed in the log: a REQUEST (B) and after it a
 * SYNC_END (A)? */
static int hash_done(void)
{
    size_t i;
    int req = 0;
    for (i = 0; i < g_log_n; i++) {
        if (g_log[i].dir == 0 && g_log[i].type == T_REQUEST) req = 1;
        if (req && g_log[i].dir == 1 && g_log[i].type == T_SYNC_END) return 1;
    }
    return 0;
}

/* ------------------------------------------------------------------------- */
/* main                                                                      */
/* ------------------------------------------------------------------------- */

typedef struct round_res {
    int d, bAhead;
    double ms, open_ms;
    unsigned long long total, phase0, phase1, flood0, flood1, solicit_hash, advertise, request, ack, hs;
    unsigned long long flood_msgs1;
    unsigned long recsB; /* B's records when it connects */
    int rtt0, rtt1;
    char conv0[512], conv1[512];
} round_res;

int main(int argc, char **argv)
{
    int J = 10000, REPS = 15, H = 100000, i, r;
    static const int DS[] = {1, 10, 100, 1000};
    PEER_VERSION_DATA vd;
    PEER_ADDRESS addr;
    HGRAPH A, B;
    HRESULT hr;
    struct rlimit rl;
    long long *join, *raw, *rawnw, tstart = now_ns();
    unsigned long long *wire;
    unsigned long long joinBytes[NTYPES];
    int nJoin = 0;
    double addA_ms, addA2_ms, full_ms, recWire;
    unsigned long long fullBytes, fullFlood, fullAck;
    round_res rr[8];
    int nr = 0;
    PEER_DATABASE_INFO di;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-j") && i + 1 < argc) J = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-r") && i + 1 < argc) REPS = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-H") && i + 1 < argc) H = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: %s [-j J] [-r REPS] [-H H]   (defaults 10000 15 100000)\n", argv[0]);
            return 2;
        }
    }
    if (J < 1 || REPS < 1 || H < J + 1111) {
        fprintf(stderr, "bench_sync: need J >= 1, REPS >= 1, H >= J + 1111\n");
        return 2;
    }
    raise_nofile(&rl, NULL);
    join = (long long *)xcalloc((size_t)REPS, sizeof *join);
    raw = (long long *)xcalloc((size_t)REPS, sizeof *raw);
    rawnw = (long long *)xcalloc((size_t)REPS, sizeof *rawnw);
    wire = (unsigned long long *)xcalloc((size_t)REPS, sizeof *wire);
    memset(joinBytes, 0, sizeof joinBytes);

    printf("bench_sync: join + Sync All, and Time+Hash re-sync, over [::1], one process, one thread, one poll() loop\n");
    print_command_machine(argc, argv);
    printf("records: %d-byte payload, 16-byte ID; graph ID \"%ls\", peer IDs \"%ls\" / \"%ls\"\n", PAYLOAD, GRAPH_ID,
           PEER_A, PEER_B);

    if (setup_db_dir(DB_DIR_N) != 0) return 2;
    install_counting_shim();
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) die_hr("PeerGraphStartup", hr);
    host_poll_grow(&hp, 64);

    /* ---------------- part 1: join + Sync All of J records ---------------- */
    A = create_a(&addr);
    {
        long long t = now_ns();
        add_records(A, J);
        addA_ms = (double)(now_ns() - t) / 1e6;
    }
    host_run_ms(&hp, 150); /* the log's fsync, off the clock */
    for (r = -1; r < REPS; r++) { /* r = -1: warm-up, discarded */
        wchar_t db[32];
        ULONGLONG cid;
        long long t0, t1 = 0;
        int t;
        swprintf(db, 32, L"sb-%d", r + 1);
        PeerGraphDelete(GRAPH_ID, PEER_B, db);
        hr = PeerGraphOpen(GRAPH_ID, PEER_B, db, NULL, 0, NULL, &B);
        if (hr != PEER_S_GRAPH_DATA_CREATED) die_hr("PeerGraphOpen (fresh B)", hr);
        host_step(&hp, 0);
        counters_reset();
        t0 = now_ns();
        if (FAILED(hr = PeerGraphConnect(B, PEER_A, &addr, &cid))) die_hr("PeerGraphConnect", hr);
        while (!(status_of(B) & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
            if (now_ns() - t0 > STEP_LIMIT_NS) { fprintf(stderr, "bench_sync: join did not finish\n"); return 1; }
            host_step(&hp, 100);
        }
        t1 = now_ns() - t0;
        host_run_ms(&hp, 10); /* trailing ACKs */
        di = db_info(B);
        if (di.cRecords != db_info(A).cRecords) {
            fprintf(stderr, "bench_sync: B holds %lu records, A %lu\n", (unsigned long)di.cRecords,
                    (unsigned long)db_info(A).cRecords);
            return 1;
        }
        if (r >= 0) {
            join[nJoin] = t1;
            wire[nJoin] = g_sent;
            for (t = 0; t < NTYPES; t++) joinBytes[t] += ts_sum_bytes(t);
            nJoin++;
        }
        close_graph(B);
        PeerGraphDelete(GRAPH_ID, PEER_B, db);
        /* the machine, interleaved */
        {
            long long x = raw_transfer(J, PAYLOAD + ID_BYTES, 1), y = raw_transfer(J, PAYLOAD + ID_BYTES, 0);
            if (r >= 0) { raw[r] = x; rawnw[r] = y; }
        }
    }
    /* record wire size as stored */
    di = db_info(A);
    recWire = (double)di.cbRecords / di.cRecords;

    /* ---------------- part 2: re-sync of H-record databases --------------- */
    {
        long long t = now_ns();
        add_records(A, H - J - 1111); /* the rounds add 1111 more */
        addA2_ms = (double)(now_ns() - t) / 1e6;
    }
    host_run_ms(&hp, 150);
    PeerGraphDelete(GRAPH_ID, PEER_B, L"sbh");
    hr = PeerGraphOpen(GRAPH_ID, PEER_B, L"sbh", NULL, 0, NULL, &B);
    if (hr != PEER_S_GRAPH_DATA_CREATED) die_hr("PeerGraphOpen (B for part 2)", hr);
    host_step(&hp, 0);
    counters_reset();
    {
        ULONGLONG cid;
        long long t0 = now_ns();
        if (FAILED(hr = PeerGraphConnect(B, PEER_A, &addr, &cid))) die_hr("PeerGraphConnect", hr);
        while (!(status_of(B) & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
            if (now_ns() - t0 > STEP_LIMIT_NS) { fprintf(stderr, "bench_sync: full sync did not finish\n"); return 1; }
            host_step(&hp, 100);
        }
        full_ms = (double)(now_ns() - t0) / 1e6;
        host_run_ms(&hp, 10);
        fullBytes = g_sent;
        fullFlood = ts_sum_bytes(T_FLOOD);
        fullAck = ts_sum_bytes(T_ACK);
    }
    close_graph(B);

    for (i = 0; i < 4; i++) {
        int side;
        for (side = 0; side < 2; side++) {
            round_res *x = &rr[nr++];
            int D = DS[i];
            ULONGLONG cid;
            long long t0, to;
            memset(x, 0, sizeof *x);
            x->d = D;
            x->bAhead = side;
            if (!side) add_records(A, D);
            to = now_ns();
            hr = PeerGraphOpen(GRAPH_ID, PEER_B, L"sbh", NULL, 0, NULL, &B);
            if (hr != S_OK) die_hr("PeerGraphOpen (B again)", hr);
            x->open_ms = (double)(now_ns() - to) / 1e6;
            if (side) add_records(B, D);
            host_run_ms(&hp, 120); /* B's fsync, off the clock */
            x->recsB = db_info(B).cRecords;
            counters_reset();
            g_log_on = 1;
            t0 = g_t0 = now_ns();
            if (FAILED(hr = PeerGraphConnect(B, PEER_A, &addr, &cid))) die_hr("PeerGraphConnect", hr);
            for (;;) {
                if (now_ns() - t0 > STEP_LIMIT_NS) { fprintf(stderr, "bench_sync: re-sync did not finish\n"); return 1; }
                host_step(&hp, 100);
                if (hash_done() && db_info(A).cRecords == db_info(B).cRecords) break;
            }
            x->ms = (double)(now_ns() - t0) / 1e6;
            host_run_ms(&hp, 10); /* trailing ACKs */
            g_log_on = 0;
            x->total = g_sent;
            {
                int t, d;
                for (t = 0; t < NTYPES; t++)
                    for (d = 0; d < 2; d++) {
                        int hsType = t >= 1 && t <= 5;
                        if (hsType || t == T_PT2PT) x->hs += ts_bytes(0, d, t) + ts_bytes(1, d, t);
                        else if (t != T_ACK) { x->phase0 += ts_bytes(0, d, t); x->phase1 += ts_bytes(1, d, t); }
                    }
            }
            x->flood0 = ts_bytes(0, 0, T_FLOOD) + ts_bytes(0, 1, T_FLOOD);
            x->flood1 = ts_bytes(1, 0, T_FLOOD) + ts_bytes(1, 1, T_FLOOD);
            x->flood_msgs1 = ts_msgs(1, 0, T_FLOOD) + ts_msgs(1, 1, T_FLOOD);
            x->solicit_hash = ts_sum_bytes(T_SOLICIT_HASH);
            x->advertise = ts_sum_bytes(T_ADVERTISE);
            x->request = ts_sum_bytes(T_REQUEST);
            x->ack = ts_sum_bytes(T_ACK);
            x->rtt0 = conversation(0, x->conv0, sizeof x->conv0);
            x->rtt1 = conversation(1, x->conv1, sizeof x->conv1);
            if (db_info(A).cRecords != db_info(B).cRecords) {
                fprintf(stderr, "bench_sync: databases differ after re-sync\n");
                return 1;
            }
            close_graph(B);
        }
    }
    di = db_info(A);
    PeerGraphClose(A);
    host_run_ms(&hp, 20);
    PeerGraphDelete(GRAPH_ID, PEER_A, L"sa");
    PeerGraphDelete(GRAPH_ID, PEER_B, L"sbh");
    PeerGraphShutdown();

    /* ------------------------------- report ------------------------------- */
    {
        double p50, p99, mx, rp50, rp99, np50, np99, payload = (double)J * PAYLOAD, pid = (double)J * (PAYLOAD + ID_BYTES);
        unsigned long long w50;
        int t;
        sort_ll(join, nJoin);
        sort_ll(raw, nJoin);
        sort_ll(rawnw, nJoin);
        p50 = pct_ms(join, nJoin, 50);
        p99 = pct_ms(join, nJoin, 99);
        mx = (double)join[nJoin - 1] / 1e6;
        rp50 = pct_ms(raw, nJoin, 50);
        rp99 = pct_ms(raw, nJoin, 99);
        np50 = pct_ms(rawnw, nJoin, 50);
        np99 = pct_ms(rawnw, nJoin, 99);
        w50 = wire[nJoin / 2];
        printf("\n1. Join + Sync All of %d records (A: PeerGraphCreate + %d x AddRecord took %.0f ms, untimed)\n", J, J,
               addA_ms);
        printf("   %d repetitions (after 1 warm-up), each a fresh B.  Times in ms; p99 = the slowest of %d.\n", nJoin,
               nJoin);
        printf("   %-46s %9s %9s %9s\n", "", "p50", "p99", "max");
        printf("   %-46s %9.2f %9.2f %9.2f\n", "raw TCP: connect + stream J x 272 B", np50, np99,
               (double)rawnw[nJoin - 1] / 1e6);
        printf("   %-46s %9.2f %9.2f %9.2f\n", "raw TCP + one write() per record (machine)", rp50, rp99,
               (double)raw[nJoin - 1] / 1e6);
        printf("   %-46s %9.2f %9.2f %9.2f\n", "p2pgraph: PeerGraphConnect -> SYNCHRONIZED", p50, p99, mx);
        printf("   %-46s %8.1fx %8.1fx\n", "ratio p2pgraph / machine (with write())", p50 / rp50, p99 / rp99);
        printf("   target p99 < %.0f ms: %s (p99 %.1f ms)\n", TARGET_P99_MS, p99 < TARGET_P99_MS ? "MET" : "MISSED", p99);
        printf("\n   wire bytes of one join (both directions, handshake included; median run): %llu\n", w50);
        printf("     payload            %10.0f   wire / payload         %.3fx\n", payload, (double)w50 / payload);
        printf("     payload + IDs      %10.0f   wire / (payload + IDs) %.3fx   target < %.1fx: %s\n", pid,
               (double)w50 / pid, TARGET_WIRE_RATIO, (double)w50 / pid < TARGET_WIRE_RATIO ? "MET" : "MISSED");
        printf("   mean bytes per join by message type:\n");
        for (t = 1; t < NTYPES; t++)
            if (joinBytes[t])
                printf("     %-13s %10.0f  (%.1f per record)\n", type_names[t], (double)joinBytes[t] / nJoin,
                       (double)joinBytes[t] / nJoin / J);
        printf("   Between two p2pgraph nodes the sync answer travels as BATCH messages (capability 0x10,\n"
               "   PROTOCOL.md section 4) and is not ACKed (0x08).  Against a plain MS-PPGRH peer each record is a\n"
               "   FLOOD: 2 (frame length) + 12 (FLOOD header) + %.0f (record: 90 fixed + UTF-16 creator \"%ls\" %d +\n"
               "   graph ID %d + payload %d) + 20 ACK entry back (ACK header 12 + frame 2 per 64) = %.1f B per record\n"
               "   = %.3fx payload+IDs, the floor of that format for these IDs.\n",
               recWire, PEER_A, (int)(2 * (wcslen(PEER_A) + 1)), (int)(2 * (wcslen(GRAPH_ID) + 1)), PAYLOAD,
               2 + 12 + recWire + 20 + 14.0 / 64, (2 + 12 + recWire + 20 + 14.0 / 64) / (PAYLOAD + ID_BYTES));

        printf("\n2. Re-sync of two %d-record databases (A grown by %d more AddRecords in %.0f ms = %.0f records/s,"
               " untimed)\n", H, H - J - 1111, addA2_ms, (H - J - 1111) / (addA2_ms / 1000.0));
        printf("   B's first join (Sync All of %d records): %.0f ms, %llu wire bytes (FLOOD %llu, ACK %llu) = %.1f B/record\n",
               H - 1111 + 1, full_ms, fullBytes, fullFlood, fullAck, (double)fullBytes / (H - 1111));
        printf("   Each round: B reopens its database (Open, timed separately), connects; the library runs Time-based\n"
               "   sync (3 SOLICIT_TIME) then Hash-based sync.  'time' and 'hash' are the sync bytes before / from\n"
               "   the first SOLICIT_HASH; handshake (AUTH_INFO..WELCOME, PT2PT ping) and ACK bytes are apart.\n"
               "   MS-PPGRH baseline (Hash-based sync as specified): SOLICIT_HASH = 40 B per 10 records = 4 B per\n"
               "   record, %.0f bytes for %d records, whatever the difference.\n\n", 4.0 * H, H);
        printf("   %5s %-5s %7s %7s %9s %9s %9s %9s %7s %7s %7s %9s %5s %5s\n", "D", "ahead", "open ms", "sync ms",
               "total B", "time B", "hash B", "SOL_HASH", "B/rec", "ADVERT", "REQUEST", "hashFLOOD", "RTT-t", "RTT-h");
        for (i = 0; i < nr; i++) {
            const round_res *x = &rr[i];
            printf("   %5d %-5s %7.0f %7.1f %9llu %9llu %9llu %9llu %7.2f %7llu %7llu %9llu %5d %5d\n", x->d,
                   x->bAhead ? "B" : "A", x->open_ms, x->ms, x->total, x->phase0, x->phase1, x->solicit_hash,
                   (double)x->solicit_hash / x->recsB, x->advertise, x->request, x->flood1, x->rtt0, x->rtt1);
        }
        printf("\n   sync conversations (B = initiator, A = responder; @ms since PeerGraphConnect; ACK/PT2PT omitted):\n");
        for (i = 0; i < nr; i++)
            printf("   D=%-4d %s ahead:  time: %s\n                  hash: %s\n", rr[i].d, rr[i].bAhead ? "B" : "A",
                   rr[i].conv0, rr[i].conv1);
        printf("\n   ideal for a difference of D: D x (16 B ID + 4 B version) to name them, plus the records.\n");
        printf("   SOLICIT_HASH (B/rec: its bytes per record B holds) = the MS-PPGRH baseline of 4 B per record:\n"
               "   %.3fx at D=1000 (B ahead; 40-byte entries per 10 records + 20-byte header + 2-byte frames), and it\n"
               "   is paid in full at every re-sync whatever D is.  Against the ideal D x 20 B for D=1: %.0fx.\n",
               (double)rr[nr - 1].solicit_hash / (4.0 * rr[nr - 1].recsB), (double)rr[0].solicit_hash / 20.0);
        printf("\ntotal run time %.1f s\n", (double)(now_ns() - tstart) / 1e9);
    }
    free(join); free(raw); free(rawnw); free(wire); free(g_ss); free(g_log);
    host_poll_free(&hp);
    return 0;
}
#endif
