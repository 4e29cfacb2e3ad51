/*
 * bench/connect.c - concurrent connection set-up over real loopback ([::1]),
 * one thread, one poll() loop, with the machine's own ceiling measured in the
 * same run.
 *
 * For each K (default 1 100 1000):
 *   raw       K non-blocking TCP connects + accept + a 32-byte echo each,
 *             driven by one poll() loop.  Per connection: connect() call to
 *             the echo fully read back.
 *   p2pgraph  K initiator graphs (PeerGraphOpen) connecting as neighbors to
 *             R = ceil(K / PEER_MAX_NEIGHBORS) responder graphs
 *             (PeerGraphCreate) sharing one listening port; initiator i asks
 *             for responder i % R by peer ID.  Driven by PeerGraphGetPollFds
 *             + poll() + PeerGraphService.  Per connection: PeerGraphConnect
 *             call to the host popping its NEIGHBOR_CONNECTION/PEER_CONNECTED
 *             event.  Graph creation (an fsync'ed file each) is not timed.
 * After each p2pgraph run settles, heap in use (glibc mallinfo2) gives the
 * user-space bytes per graph and per idle link endpoint.
 *
 * Usage: bench_connect [K...]     (run from the repository root: the
 * databases go to build/tmp-bench-connect)
 */
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_connect: POSIX only (poll, setrlimit)\n");
    return 0;
}
#else

#include <netinet/tcp.h>
#include <arpa/inet.h>
#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
#define HAVE_MALLINFO2 1
#endif
#endif

#define BENCH_NAME "bench_connect"
#include "bench_util.h"

#define DB_DIR_N "build/tmp-bench-connect"
#define GRAPH_ID L"bench-connect"
#define ECHO_BYTES 32
#define RUN_LIMIT_NS (30LL * 1000000000LL)   /* give up on a run after 30 s */
#define SETTLE_LIMIT_NS (5LL * 1000000000LL) /* and on settling after 5 s */
#define DIAG_LIMIT_NS (8LL * 1000000000LL)   /* the backlog-128 diagnostic: SYN retries at 1, 3, 7 s */
#define TARGET_RATIO 1.5
#define TARGET_LINK_BYTES 2048.0
#define RAW_BACKLOG 4096 /* the raw listener's backlog: the kernel caps it at net.core.somaxconn */
#define LIB_BACKLOG 128  /* a small backlog for the diagnostic row (net_posix.c asks for 4096) */

/* ------------------------------------------------------------------------- */
/* helpers                                                                   */
/* ------------------------------------------------------------------------- */

static long heap_in_use(void)
{
#ifdef HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    return (long)mi.uordblks;
#else
    return -1;
#endif
}

typedef struct stats {
    int ran;             /* this row has figures */
    int k, reps, attempts, ok, failed;
    double total_ms;     /* first connect call to last completion (median over repetitions) */
    double mean_ms, p50_ms, p99_ms, max_ms;
    long overflows, syn_retrans; /* kernel TcpExt deltas over the run, -1 unknown */
} stats;

/* A TcpExt counter of /proc/net/netstat (Linux; -1 elsewhere).  Counters are
 * per network namespace, so other traffic of the machine can add to them. */
static long tcpext(const char *name)
{
    char names[4096], vals[4096];
    long v = -1;
    FILE *f = fopen("/proc/net/netstat", "r");
    if (!f) return -1;
    while (fgets(names, sizeof names, f) && fgets(vals, sizeof vals, f)) {
        char *sn, *sv, *n, *x;
        if (strncmp(names, "TcpExt:", 7)) continue;
        n = strtok_r(names + 7, " \n", &sn);
        x = strtok_r(vals + 7, " \n", &sv);
        while (n && x) {
            if (!strcmp(n, name)) { v = atol(x); break; }
            n = strtok_r(NULL, " \n", &sn);
            x = strtok_r(NULL, " \n", &sv);
        }
        break;
    }
    fclose(f);
    return v;
}

typedef struct kcount { long ovf, syn; } kcount;
static kcount kcount_now(void)
{
    kcount k;
    k.ovf = tcpext("ListenOverflows");
    k.syn = tcpext("TCPSynRetrans");
    return k;
}
static void kcount_delta(stats *st, kcount a)
{
    kcount b = kcount_now();
    st->overflows = a.ovf < 0 || b.ovf < 0 ? -1 : b.ovf - a.ovf;
    st->syn_retrans = a.syn < 0 || b.syn < 0 ? -1 : b.syn - a.syn;
}

/* Per-connection durations (ns) of the completed connections -> stats. */
static void summarize(stats *st, long long *dur, int n)
{
    double sum = 0;
    int i;
    if (n == 0) return;
    sort_ll(dur, n);
    for (i = 0; i < n; i++) sum += (double)dur[i];
    st->mean_ms = sum / n / 1e6;
    st->p50_ms = pct_ms(dur, n, 50);
    st->p99_ms = pct_ms(dur, n, 99);
    st->max_ms = (double)dur[n - 1] / 1e6;
}

/* ------------------------------------------------------------------------- */
/* 1. raw TCP: connect + accept + 32-byte echo, one poll() loop              */
/* ------------------------------------------------------------------------- */

enum { C_CONNECTING, C_WRITING, C_READING, C_DONE, C_FAILED };

/* One run; the completed connections' durations go to dur[0..st->ok). */
static void raw_run(int K, int backlog, long long limitNs, stats *st, long long *dur)
{
    struct sockaddr_in6 sa;
    int lfd, one = 1, i, left, nsrv = 0;
    int *cfd = (int *)xcalloc((size_t)K, sizeof(int));
    int *cst = (int *)xcalloc((size_t)K, sizeof(int));
    int *cio = (int *)xcalloc((size_t)K, sizeof(int)); /* bytes written / read */
    long long *t0 = (long long *)xcalloc((size_t)K, sizeof(long long));
    int *sfd = (int *)xcalloc((size_t)K, sizeof(int));
    int *srd = (int *)xcalloc((size_t)K, sizeof(int));
    int *swr = (int *)xcalloc((size_t)K, sizeof(int));
    unsigned char (*sbuf)[ECHO_BYTES] = (unsigned char (*)[ECHO_BYTES])xcalloc((size_t)K, ECHO_BYTES);
    struct pollfd *pf = (struct pollfd *)xcalloc((size_t)(2 * K + 1), sizeof *pf);
    int *pidx = (int *)xcalloc((size_t)(2 * K + 1), sizeof(int)); /* >=0 client, <0 ~server, listener K */
    unsigned char msg[ECHO_BYTES];
    long long tstart, tlast = 0;
    int nd = 0;
    kcount kc;

    memset(st, 0, sizeof *st);
    st->ran = 1;
    st->k = K;
    st->reps = 1;
    st->attempts = K;
    memset(msg, 'x', sizeof msg);
    lfd = loopback_listener(&sa, backlog, 1);

    kc = kcount_now();
    tstart = now_ns();
    for (i = 0; i < K; i++) {
        int fd;
        t0[i] = now_ns();
        fd = socket(AF_INET6, SOCK_STREAM, 0);
        cfd[i] = fd;
        if (fd < 0 || set_nonblock(fd) < 0) { cst[i] = C_FAILED; continue; }
        (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one); /* as net_posix.c does */
        if (connect(fd, (struct sockaddr *)&sa, sizeof sa) == 0) cst[i] = C_WRITING;
        else if (errno == EINPROGRESS) cst[i] = C_CONNECTING;
        else cst[i] = C_FAILED;
    }
    for (i = 0, left = 0; i < K; i++) left += cst[i] != C_FAILED;

    while (left > 0 && now_ns() - tstart < limitNs) {
        int n = 0, r, j;
        pf[n].fd = lfd;
        pf[n].events = POLLIN;
        pidx[n++] = K;
        for (i = 0; i < K; i++) {
            short ev = cst[i] == C_CONNECTING || cst[i] == C_WRITING ? POLLOUT : cst[i] == C_READING ? POLLIN : 0;
            if (!ev) continue;
            pf[n].fd = cfd[i];
            pf[n].events = ev;
            pidx[n++] = i;
        }
        for (i = 0; i < nsrv; i++) {
            short ev = (short)((srd[i] < ECHO_BYTES ? POLLIN : 0) | (swr[i] < srd[i] ? POLLOUT : 0));
            if (!ev) continue;
            pf[n].fd = sfd[i];
            pf[n].events = ev;
            pidx[n++] = ~i;
        }
        for (j = 0; j < n; j++) pf[j].revents = 0;
        r = poll(pf, (nfds_t)n, 100);
        if (r < 0) {
            if (errno == EINTR) continue;
            perror("bench_connect: poll");
            exit(2);
        }
        for (j = 0; j < n && r > 0; j++) {
            int x = pidx[j];
            if (!pf[j].revents) continue;
            r--;
            if (x == K) { /* listener */
                for (;;) {
                    int s = accept(lfd, NULL, NULL);
                    if (s < 0) break;
                    if (nsrv >= K || set_nonblock(s) < 0) { close(s); continue; }
                    (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
                    sfd[nsrv++] = s;
                }
            } else if (x >= 0) { /* client */
                if (cst[x] == C_CONNECTING) {
                    int err = 0;
                    socklen_t el = sizeof err;
                    if (getsockopt(cfd[x], SOL_SOCKET, SO_ERROR, &err, &el) < 0 || err) {
                        cst[x] = C_FAILED;
                        left--;
                        continue;
                    }
                    cst[x] = C_WRITING;
                }
                if (cst[x] == C_WRITING) {
                    ssize_t k = send(cfd[x], msg + cio[x], (size_t)(ECHO_BYTES - cio[x]), MSG_NOSIGNAL);
                    if (k > 0) cio[x] += (int)k;
                    else if (k < 0 && errno != EAGAIN && errno != EWOULDBLOCK) { cst[x] = C_FAILED; left--; continue; }
                    if (cio[x] == ECHO_BYTES) { cst[x] = C_READING; cio[x] = 0; }
                } else if (cst[x] == C_READING) {
                    unsigned char b[ECHO_BYTES];
                    ssize_t k = recv(cfd[x], b, (size_t)(ECHO_BYTES - cio[x]), 0);
                    if (k > 0) cio[x] += (int)k;
                    else if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) { cst[x] = C_FAILED; left--; continue; }
                    if (cio[x] == ECHO_BYTES) {
                        long long t = now_ns();
                        cst[x] = C_DONE;
                        dur[nd++] = t - t0[x];
                        if (t > tlast) tlast = t;
                        left--;
                    }
                }
            } else { /* server side of a connection: echo */
                int s = ~x;
                if (srd[s] < ECHO_BYTES && (pf[j].revents & (POLLIN | POLLHUP | POLLERR))) {
                    ssize_t k = recv(sfd[s], sbuf[s] + srd[s], (size_t)(ECHO_BYTES - srd[s]), 0);
                    if (k > 0) srd[s] += (int)k;
                    else if (k == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) srd[s] = swr[s] = ECHO_BYTES; /* dead */
                }
                if (swr[s] < srd[s]) {
                    ssize_t k = send(sfd[s], sbuf[s] + swr[s], (size_t)(srd[s] - swr[s]), MSG_NOSIGNAL);
                    if (k > 0) swr[s] += (int)k;
                }
            }
        }
    }
    kcount_delta(st, kc);
    st->ok = nd;
    st->failed = K - nd;
    st->total_ms = nd ? (double)(tlast - tstart) / 1e6 : 0;

    for (i = 0; i < K; i++)
        if (cfd[i] >= 0) close(cfd[i]);
    for (i = 0; i < nsrv; i++) close(sfd[i]);
    close(lfd);
    free(cfd); free(cst); free(cio); free(t0);
    free(sfd); free(srd); free(swr); free(sbuf); free(pf); free(pidx);
}

/* ------------------------------------------------------------------------- */
/* 2. p2pgraph neighbor handshakes                                           */
/* ------------------------------------------------------------------------- */

typedef struct failure_count { HRESULT hr; int n; } failure_count;

typedef struct p2p_result {
    stats st;
    int responders;
    int connect_call_failures;  /* PeerGraphConnect itself failed */
    int referrals_followed;
    failure_count fails[16];
    int nfails;
    double create_ms;           /* graph creation (not in the timing) */
    /* where the handshake window's wall time went */
    double connect_calls_ms;    /* the K PeerGraphConnect calls */
    double getpollfds_ms, poll_ms, service_ms;
    double event_poll_ms;       /* PeerGraphGetEventData over pending initiators */
    double window_ms;           /* first Connect call to the last PEER_CONNECTED */
    int loop_iterations;
    /* memory (bytes of heap in use, -1 if unknown) */
    long heap_base, heap_graphs, heap_links;
    int settled, synchronized;
    int measured;           /* this run settled and measured the heap (the last repetition) */
    int links;                  /* neighbor links alive when measured */
    int nsynced;                /* initiators that reported SYNCHRONIZED within the run */
    stats sync;                 /* PeerGraphConnect to SYNCHRONIZED (pooled over repetitions) */
} p2p_result;

static void count_failure(p2p_result *res, HRESULT hr)
{
    int i;
    for (i = 0; i < res->nfails; i++)
        if (res->fails[i].hr == hr) { res->fails[i].n++; return; }
    if (res->nfails < (int)(sizeof res->fails / sizeof res->fails[0])) {
        res->fails[res->nfails].hr = hr;
        res->fails[res->nfails++].n = 1;
    }
}

static void db_name(wchar_t *out, size_t n, char kind, int i) { swprintf(out, n, L"bc-%c%d", kind, i); }
static void peer_name(wchar_t *out, size_t n, char kind, int i) { swprintf(out, n, L"%s%d", kind == 'r' ? L"resp" : L"init", i); }

/* One run; the completed handshakes' durations go to dur[0..res->st.ok).
 * measure: let the links settle and read the heap (about a second: only the
 * last repetition of a K does it). */
static void p2p_run(int K, host_poll *hp, p2p_result *res, long long *dur, long long *sdur, int measure)
{
    int R = (K + PEER_MAX_NEIGHBORS - 1) / PEER_MAX_NEIGHBORS, i, j;
    HGRAPH *resp = (HGRAPH *)xcalloc((size_t)R, sizeof *resp);
    HGRAPH *init = (HGRAPH *)xcalloc((size_t)K, sizeof *init);
    HPEEREVENT *ev = (HPEEREVENT *)xcalloc((size_t)K, sizeof *ev);
    ULONGLONG *cid = (ULONGLONG *)xcalloc((size_t)K, sizeof *cid);
    long long *t0 = (long long *)xcalloc((size_t)K, sizeof *t0);
    int *state = (int *)xcalloc((size_t)K, sizeof *state); /* 0 pending, 1 connected, 2 failed */
    int *pend = (int *)xcalloc((size_t)K, sizeof *pend);   /* indices still pending (not connected or not synchronized) */
    char *synced = (char *)xcalloc((size_t)K, 1);
    wchar_t (*rpeer)[16] = (wchar_t (*)[16])xcalloc((size_t)R, sizeof *rpeer);
    int npend = 0, nd = 0, nsd = 0;
    long long tstart, tlast = 0, tc;
    PEER_VERSION_DATA vd;
    PEER_GRAPH_EVENT_REGISTRATION reg[2];
    PEER_ADDRESS addr;
    HRESULT hr;
    kcount kc;

    memset(res, 0, sizeof *res);
    res->st.ran = 1;
    res->st.k = K;
    res->st.reps = 1;
    res->st.attempts = K;
    res->responders = R;
    host_poll_grow(hp, (ULONG)(3 * K + 2 * R + 64));

    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) die_hr_at("PeerGraphStartup", 0, hr);
    res->heap_base = heap_in_use();

    /* --- graphs (not timed) --- */
    tc = now_ns();
    for (i = 0; i < R; i++) {
        PEER_GRAPH_PROPERTIES p;
        wchar_t db[32];
        peer_name(rpeer[i], 16, 'r', i);
        db_name(db, 32, 'r', i);
        PeerGraphDelete(GRAPH_ID, rpeer[i], db);
        memset(&p, 0, sizeof p);
        p.dwSize = sizeof p;
        p.dwScope = PEER_GRAPH_SCOPE_LOOPBACK;
        p.pwzGraphId = (PWSTR)GRAPH_ID;
        p.pwzCreatorId = rpeer[i];
        p.cPresenceMax = (ULONG)-1;
        if (FAILED(hr = PeerGraphCreate(&p, db, NULL, &resp[i]))) die_hr_at("PeerGraphCreate", i, hr);
        if (i == 0) {
            PPEER_NODE_INFO ni = NULL;
            if (FAILED(hr = PeerGraphListen(resp[0], PEER_GRAPH_SCOPE_LOOPBACK, 0, 0))) die_hr_at("PeerGraphListen", 0, hr);
            if (FAILED(hr = PeerGraphGetNodeInfo(resp[0], 0, &ni)) || ni->cAddresses < 1) die_hr_at("PeerGraphGetNodeInfo", 0, hr);
            addr = ni->pAddresses[0];
            PeerGraphFreeData(ni);
            memset(&addr.sin6.sin6_addr, 0, sizeof addr.sin6.sin6_addr);
            addr.sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
        } else if (FAILED(hr = PeerGraphListen(resp[i], PEER_GRAPH_SCOPE_LOOPBACK, 0, ntohs(addr.sin6.sin6_port))))
            die_hr_at("PeerGraphListen", i, hr);
    }
    reg[0].eventType = PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION;
    reg[1].eventType = PEER_GRAPH_EVENT_STATUS_CHANGED;
    reg[0].pType = reg[1].pType = NULL;
    for (i = 0; i < K; i++) {
        wchar_t db[32], pid[16];
        peer_name(pid, 16, 'i', i);
        db_name(db, 32, 'i', i);
        PeerGraphDelete(GRAPH_ID, pid, db);
        hr = PeerGraphOpen(GRAPH_ID, pid, db, NULL, 0, NULL, &init[i]);
        if (hr != PEER_S_GRAPH_DATA_CREATED) die_hr_at("PeerGraphOpen", i, hr);
        if (FAILED(hr = PeerGraphRegisterEvent(init[i], NULL, 2, reg, &ev[i]))) die_hr_at("PeerGraphRegisterEvent", i, hr);
    }
    res->create_ms = (double)(now_ns() - tc) / 1e6;
    /* bring the library's clock (the last ullNow) past the slow graph creation */
    host_step(hp, 0);
    res->heap_graphs = heap_in_use();

    /* --- K concurrent handshakes (timed) --- */
    kc = kcount_now();
    tstart = now_ns();
    for (i = 0; i < K; i++) {
        t0[i] = now_ns();
        hr = PeerGraphConnect(init[i], rpeer[i % R], &addr, &cid[i]);
        if (FAILED(hr)) {
            state[i] = 2;
            res->connect_call_failures++;
            count_failure(res, hr);
        } else
            pend[npend++] = i;
    }
    res->connect_calls_ms = (double)(now_ns() - tstart) / 1e6;
    hp->getpollfds_ns = hp->poll_ns = hp->service_ns = 0;
    while (npend > 0 && now_ns() - tstart < RUN_LIMIT_NS) {
        long long te;
        host_step(hp, 100);
        res->loop_iterations++;
        te = now_ns();
        for (j = 0; j < npend;) {
            PPEER_GRAPH_EVENT_DATA d = NULL;
            i = pend[j];
            while (state[i] != 2 && !synced[i] && (hr = PeerGraphGetEventData(ev[i], &d)) == S_OK) {
                const PEER_EVENT_CONNECTION_CHANGE_DATA *cc = &d->connectionChangeData;
                if (d->eventType == PEER_GRAPH_EVENT_STATUS_CHANGED && (d->dwStatus & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
                    synced[i] = 1;
                    sdur[nsd++] = now_ns() - t0[i];
                } else if (state[i] == 0 && d->eventType == PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION && cc->ullConnectionId == cid[i]) {
                    if (cc->status == PEER_CONNECTED) {
                        long long t = now_ns();
                        state[i] = 1;
                        dur[nd++] = t - t0[i];
                        if (t > tlast) tlast = t;
                    } else if (cc->status == PEER_CONNECTION_FAILED && cc->ullNextConnectionId) {
                        cid[i] = cc->ullNextConnectionId; /* referred on: keep waiting */
                        res->referrals_followed++;
                    } else {
                        state[i] = 2;
                        count_failure(res, cc->hrConnectionFailedReason);
                    }
                }
                PeerGraphFreeData(d);
            }
            if (state[i] == 2 || synced[i]) pend[j] = pend[--npend];
            else j++;
        }
        res->event_poll_ms += (double)(now_ns() - te) / 1e6;
    }
    res->getpollfds_ms = (double)hp->getpollfds_ns / 1e6;
    res->poll_ms = (double)hp->poll_ns / 1e6;
    res->service_ms = (double)hp->service_ns / 1e6;
    kcount_delta(&res->st, kc);
    for (j = 0; j < npend; j++)
        if (state[pend[j]] == 0) count_failure(res, PEER_E_TIMEOUT); /* never resolved within RUN_LIMIT */
    res->nsynced = nsd;
    res->st.ok = nd;
    res->st.failed = K - nd;
    res->st.total_ms = nd ? (double)(tlast - tstart) / 1e6 : 0;
    res->window_ms = res->st.total_ms;

    /* --- settle: every initiator synchronized, nothing queued, a quiet poll --- */
    res->measured = measure;
    if (measure) {
        long long ts = now_ns();
        int quiet = 0, synced = 0;
        while (now_ns() - ts < SETTLE_LIMIT_NS) {
            ULONG nr = host_step(hp, 20);
            int ww = hp->want_write;
            ULONGLONG dl = hp->deadline;
            if (!synced) {
                synced = 1;
                for (i = 0; i < K && synced; i++) {
                    DWORD s = 0;
                    if (state[i] == 1 && (FAILED(PeerGraphGetStatus(init[i], &s)) || !(s & PEER_GRAPH_STATUS_SYNCHRONIZED)))
                        synced = 0;
                }
            }
            if (synced && nr == 0 && !ww && (dl == PEER_NO_DEADLINE || dl > now_ms() + 1000)) quiet++;
            else quiet = 0;
            if (quiet >= 3) { res->settled = 1; break; }
        }
        res->synchronized = synced;
        for (i = 0; i < K; i++) { /* nothing left queued for the host */
            PPEER_GRAPH_EVENT_DATA d = NULL;
            while (PeerGraphGetEventData(ev[i], &d) == S_OK) PeerGraphFreeData(d);
        }
        for (i = 0; i < R; i++) {
            HPEERENUM en;
            ULONG c = 0;
            if (SUCCEEDED(PeerGraphEnumConnections(resp[i], PEER_CONNECTION_NEIGHBOR, &en))) {
                PeerGraphGetItemCount(en, &c);
                PeerGraphEndEnumeration(en);
            }
            res->links += (int)c;
        }
        res->heap_links = heap_in_use();
    }

    /* --- tear down --- */
    for (i = 0; i < K; i++) PeerGraphClose(init[i]);
    for (i = 0; i < R; i++) PeerGraphClose(resp[i]);
    for (i = 0; i < R; i++) {
        wchar_t db[32];
        db_name(db, 32, 'r', i);
        PeerGraphDelete(GRAPH_ID, rpeer[i], db);
    }
    for (i = 0; i < K; i++) {
        wchar_t db[32], pid[16];
        peer_name(pid, 16, 'i', i);
        db_name(db, 32, 'i', i);
        PeerGraphDelete(GRAPH_ID, pid, db);
    }
    PeerGraphShutdown();
    free(resp); free(init); free(ev); free(cid); free(t0); free(state); free(pend); free(synced); free(rpeer);
}

/* ------------------------------------------------------------------------- */
/* report                                                                    */
/* ------------------------------------------------------------------------- */

static const char *hr_name(HRESULT hr)
{
    switch (hr) {
    case PEER_E_TCP_CONNECTION_REFUSED: return "PEER_E_TCP_CONNECTION_REFUSED";
    case PEER_E_TIMEOUT: return "PEER_E_TIMEOUT";
    case PEER_E_CONNECTION_FAILED: return "PEER_E_CONNECTION_FAILED";
    case PEER_E_GRAPH_ID_MISMATCH: return "PEER_E_GRAPH_ID_MISMATCH";
    case PEER_E_PEER_ID_MISMATCH: return "PEER_E_PEER_ID_MISMATCH";
    case PEER_E_CONNECTION_REFUSED: return "PEER_E_CONNECTION_REFUSED";
    case PEER_E_ALREADY_EXISTS: return "PEER_E_ALREADY_EXISTS";
    case PEER_E_CONNECT_SELF: return "PEER_E_CONNECT_SELF";
    case PEER_E_CONNECTION_NOT_AUTHENTICATED: return "PEER_E_CONNECTION_NOT_AUTHENTICATED";
    case PEER_E_PROTOCOL_ERROR: return "PEER_E_PROTOCOL_ERROR";
    case E_OUTOFMEMORY: return "E_OUTOFMEMORY";
    case E_INVALIDARG: return "E_INVALIDARG";
    default: return "other";
    }
}

/* Repetitions: small K are repeated (and their connections pooled) so that
 * the percentiles rest on enough samples: at least 200 at every K, so a p99
 * is the third slowest or later rather than the single slowest (25 runs of
 * K = 1 made one scheduling hiccup the p99). */
static int reps_for(int K) { return K >= 1000 ? 2 : (1000 + K - 1) / K; }

static double median(double *v, int n)
{
    sort_d(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static void stats_add(stats *a, const stats *b)
{
    a->ran = 1;
    a->k = b->k;
    a->reps++;
    a->attempts += b->attempts;
    a->ok += b->ok;
    a->failed += b->failed;
    a->overflows = a->overflows < 0 || b->overflows < 0 ? -1 : a->overflows + b->overflows;
    a->syn_retrans = a->syn_retrans < 0 || b->syn_retrans < 0 ? -1 : a->syn_retrans + b->syn_retrans;
}

/* Sums a repetition into a; memory figures are those of the last one. */
static void p2p_add(p2p_result *a, const p2p_result *b)
{
    int f, n = a->st.reps;
    stats_add(&a->st, &b->st);
    a->responders = b->responders;
    a->connect_call_failures += b->connect_call_failures;
    a->referrals_followed += b->referrals_followed;
    for (f = 0; f < b->nfails; f++) {
        int j;
        for (j = 0; j < a->nfails && a->fails[j].hr != b->fails[f].hr; j++) {}
        if (j == a->nfails) {
            if (j == (int)(sizeof a->fails / sizeof a->fails[0])) continue;
            a->fails[a->nfails].hr = b->fails[f].hr;
            a->fails[a->nfails++].n = 0;
        }
        a->fails[j].n += b->fails[f].n;
    }
    /* running means over repetitions */
#define RMEAN(x) a->x = (a->x * n + b->x) / (n + 1)
    RMEAN(create_ms);
    RMEAN(connect_calls_ms);
    RMEAN(getpollfds_ms);
    RMEAN(poll_ms);
    RMEAN(service_ms);
    RMEAN(event_poll_ms);
    RMEAN(window_ms);
#undef RMEAN
    a->loop_iterations += b->loop_iterations;
    if (b->measured) {
        a->measured = 1;
        a->heap_base = b->heap_base;
        a->heap_graphs = b->heap_graphs;
        a->heap_links = b->heap_links;
        a->settled = b->settled;
        a->synchronized = b->synchronized;
        a->links = b->links;
    }
}

static void print_row(const char *what, const stats *s)
{
    char ok[24];
    snprintf(ok, sizeof ok, "%d/%d", s->ok, s->attempts);
    char total[24], ov[24], rt[24];
    snprintf(total, sizeof total, s->total_ms < 0 ? "-" : "%.3f", s->total_ms);
    snprintf(ov, sizeof ov, s->overflows < 0 ? "-" : "%ld", s->overflows);
    snprintf(rt, sizeof rt, s->syn_retrans < 0 ? "-" : "%ld", s->syn_retrans);
    printf("%6d %3d  %-22s %10s %9.3f %9.3f %9.3f %9.3f %10s %6s %6s\n", s->k, s->reps, what, total, s->mean_ms,
           s->p50_ms, s->p99_ms, s->max_ms, ok, ov, rt);
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }

int main(int argc, char **argv)
{
    static const int defK[] = {1, 100, 1000};
    int nk = argc > 1 ? argc - 1 : 3, i, maxK, all_ok = 1;
    int *ks = (int *)xcalloc((size_t)nk, sizeof(int));
    stats *raw, *raw_lib;
    p2p_result *p2p;
    host_poll hp;
    struct rlimit rl;
    rlim_t before;

    for (i = 0; i < nk; i++) {
        ks[i] = argc > 1 ? atoi(argv[i + 1]) : defK[i];
        if (ks[i] < 1) {
            fprintf(stderr, "usage: %s [K...]   (K >= 1; default 1 100 1000)\n", argv[0]);
            return 2;
        }
    }
    raw = (stats *)xcalloc((size_t)nk, sizeof *raw);
    raw_lib = (stats *)xcalloc((size_t)nk, sizeof *raw_lib);
    p2p = (p2p_result *)xcalloc((size_t)nk, sizeof *p2p);
    memset(&hp, 0, sizeof hp);

    /* K concurrent connections with both ends here need 2K descriptors + slack */
    switch (raise_nofile(&rl, &before)) {
    case -1: perror("getrlimit"); return 2;
    case -2: perror("setrlimit"); break;
    }
    maxK = rl.rlim_cur == RLIM_INFINITY || rl.rlim_cur > 1000000 ? 500000 : (int)((rl.rlim_cur - 64) / 2);

    printf("bench_connect: K concurrent connections over [::1], one process, one thread, one poll() loop\n");
    print_command_machine(argc, argv);
    printf("RLIMIT_NOFILE: %llu (was %llu); largest K possible: %d\n", (unsigned long long)rl.rlim_cur,
           (unsigned long long)before, maxK);
    for (i = 0; i < nk; i++)
        if (ks[i] > maxK) {
            printf("K=%d needs %d descriptors but RLIMIT_NOFILE allows %llu: capped to K=%d\n", ks[i], 2 * ks[i] + 64,
                   (unsigned long long)rl.rlim_cur, maxK);
            ks[i] = maxK;
        }

    if (setup_db_dir(DB_DIR_N) != 0) return 2;

    /* warm-up (discarded): first use of the stack, the allocator, the disk */
    {
        stats ws;
        p2p_result wp;
        long long wd[1], wsd[1];
        raw_run(1, RAW_BACKLOG, RUN_LIMIT_NS, &ws, wd);
        p2p_run(1, &hp, &wp, wd, wsd, 0);
    }
    for (i = 0; i < nk; i++) {
        int K = ks[i], reps = reps_for(K), r, nr = 0, np = 0, ns = 0;
        long long *poolR = (long long *)xcalloc((size_t)K * (size_t)reps, sizeof(long long));
        long long *poolP = (long long *)xcalloc((size_t)K * (size_t)reps, sizeof(long long));
        long long *poolS = (long long *)xcalloc((size_t)K * (size_t)reps, sizeof(long long));
        double *totR = (double *)xcalloc((size_t)reps, sizeof(double));
        double *totP = (double *)xcalloc((size_t)reps, sizeof(double));
        for (r = 0; r < reps; r++) { /* interleaved, so both see the same machine state */
            stats rs;
            p2p_result pr;
            raw_run(K, RAW_BACKLOG, RUN_LIMIT_NS, &rs, poolR + nr);
            nr += rs.ok;
            totR[r] = rs.total_ms;
            stats_add(&raw[i], &rs);
            p2p_run(K, &hp, &pr, poolP + np, poolS + ns, r == reps - 1);
            np += pr.st.ok;
            ns += pr.nsynced;
            totP[r] = pr.st.total_ms;
            p2p_add(&p2p[i], &pr);
        }
        summarize(&raw[i], poolR, nr);
        summarize(&p2p[i].st, poolP, np);
        p2p[i].sync = p2p[i].st;
        p2p[i].sync.ok = ns;
        p2p[i].sync.failed = p2p[i].sync.attempts - ns;
        p2p[i].sync.total_ms = p2p[i].sync.overflows = p2p[i].sync.syn_retrans = -1; /* not shown */
        summarize(&p2p[i].sync, poolS, ns);
        raw[i].total_ms = median(totR, reps);
        p2p[i].st.total_ms = median(totP, reps);
        if (K > LIB_BACKLOG && p2p[i].st.overflows > 0) {
            /* diagnostic, only when the library's listener overflowed: the
             * machine with the library's listen backlog */
            raw_run(K, LIB_BACKLOG, DIAG_LIMIT_NS, &raw_lib[i], poolR);
            summarize(&raw_lib[i], poolR, raw_lib[i].ok);
        }
        free(poolR); free(poolP); free(poolS); free(totR); free(totP);
    }

    printf("\nPer-connection time: raw = socket() to 32-byte echo read back; p2pgraph = PeerGraphConnect()\n"
           "to the host popping PEER_CONNECTED.  Times in ms.  Ratios are p2pgraph / raw of the same K.\n"
           "synchronized (no target): PeerGraphConnect() to the initiator's STATUS_CHANGED with SYNCHRONIZED.\n"
           "rep: runs pooled (small K are repeated); total is the median run, the others are over all connections.\n"
           "lstovf / synrtx: kernel TcpExt ListenOverflows / TCPSynRetrans during the row (SYNs dropped because\n"
           "the accept queue was full, and client SYN retransmissions: each costs >= 1 s).\n\n");
    printf("%6s %3s  %-22s %10s %9s %9s %9s %9s %10s %6s %6s\n", "K", "rep", "what", "total", "mean", "p50", "p99",
           "max", "done", "lstovf", "synrtx");
    for (i = 0; i < nk; i++) {
        const stats *r = &raw[i], *p = &p2p[i].st;
        double rm = ratio(p->mean_ms, r->mean_ms), r50 = ratio(p->p50_ms, r->p50_ms), r99 = ratio(p->p99_ms, r->p99_ms);
        int met = p->failed == 0 && p->ok > 0 && rm <= TARGET_RATIO && r50 <= TARGET_RATIO && r99 <= TARGET_RATIO;
        print_row("raw TCP (machine)", r);
        print_row("p2pgraph handshake", p);
        printf("%6s %3s  %-22s %9.2fx %8.2fx %8.2fx %8.2fx %8.2fx   target <= %.1fx: %s\n", "", "", "ratio",
               ratio(p->total_ms, r->total_ms), rm, r50, r99, ratio(p->max_ms, r->max_ms), TARGET_RATIO,
               met ? "MET" : "MISSED");
        print_row("p2pgraph synchronized", &p2p[i].sync);
        if (raw_lib[i].ran) {
            print_row("raw TCP, backlog 128", &raw_lib[i]);
            printf("%6s %3s  (diagnostic: the machine with the library's listen backlog; stopped after %d s)\n", "", "",
                   (int)(DIAG_LIMIT_NS / 1000000000LL));
        }
        if (!met) all_ok = 0;
    }

    printf("\np2pgraph details\n");
    for (i = 0; i < nk; i++) {
        const p2p_result *p = &p2p[i];
        int f;
        printf("  K=%d: %d responders sharing one port; graph creation %.0f ms (untimed); %d loop iterations\n"
               "        per run (mean of %d): handshake window %.1f ms = PeerGraphConnect calls %.1f + GetPollFds %.1f\n"
               "        + poll() %.1f + PeerGraphService %.1f + popping events (GetEventData per pending initiator) %.1f\n",
               p->st.k, p->responders, p->create_ms, p->loop_iterations / (p->st.reps ? p->st.reps : 1), p->st.reps,
               p->window_ms, p->connect_calls_ms, p->getpollfds_ms, p->poll_ms, p->service_ms, p->event_poll_ms);
        if (p->st.failed || p->connect_call_failures || p->referrals_followed) {
            printf("        failures: %d (PeerGraphConnect calls failing: %d); referrals followed: %d\n", p->st.failed,
                   p->connect_call_failures, p->referrals_followed);
            for (f = 0; f < p->nfails; f++)
                printf("          %5d x 0x%08lX %s\n", p->fails[f].n, (unsigned long)(uint32_t)p->fails[f].hr,
                       hr_name(p->fails[f].hr));
        }
    }

    printf("\nUser-space heap (glibc mallinfo2 uordblks; kernel socket buffers excluded)\n");
#ifdef HAVE_MALLINFO2
    for (i = 0; i < nk; i++) {
        const p2p_result *p = &p2p[i];
        int graphs = p->st.k + p->responders;
        double perGraph = (double)(p->heap_graphs - p->heap_base) / graphs;
        double perEnd = p->links ? (double)(p->heap_links - p->heap_graphs) / (2.0 * p->links) : 0;
        printf("  K=%d: %d graphs: %.0f bytes/graph;  %d neighbor links (%d endpoints): %.0f bytes/idle link endpoint"
               " (%.0f per link, both ends)  target < %.0f per endpoint: %s%s%s\n",
               p->st.k, graphs, perGraph, p->links, 2 * p->links, perEnd, 2 * perEnd, TARGET_LINK_BYTES,
               p->links && perEnd < TARGET_LINK_BYTES ? "MET" : "MISSED",
               p->settled ? "" : p->synchronized ? "  (not quiet within 5 s)" : "  (initiators not all synchronized)",
               p->links < 50 ? "\n        (few links: freed chunks parked in glibc's tcache count as in use and are"
                               " reused, so this reads low; trust K >= 100)" : "");
    }
#else
    printf("  not measured: needs glibc >= 2.33 (mallinfo2)\n");
#endif
    printf("\nTargets\n  each handshake within %.1fx the raw figure (mean, p50, p99), every K: %s\n", TARGET_RATIO,
           all_ok ? "MET" : "MISSED");
    for (i = 0; i < nk; i++)
        if (ks[i] >= 1000)
            printf("  %d concurrent connections complete: %s (%d/%d)\n", ks[i], p2p[i].st.failed == 0 ? "MET" : "MISSED",
                   p2p[i].st.ok, p2p[i].st.attempts);
    free(ks); free(raw); free(raw_lib); free(p2p);
    host_poll_free(&hp);
    return 0;
}
#endif
