/*
 * bench/flood.c - record flooding through a graph of N nodes over real
 * loopback ([::1]), all in one process, one thread, one poll() loop, with the
 * machine's own loopback round trip measured in the same run.
 *
 * For each N (default 10 100):
 *   topology  node 0 creates the graph; every node gets a degree target of
 *             3..7 (PEER_MAX_NEIGHBORS = 7).  A random tree first (node i joins
 *             a random earlier node with room, waits until synchronized, then
 *             listens on its own port), then random extra links between nodes
 *             still under their targets, all started at once.  A refused or
 *             failed link is counted and left out (a REFUSE(BUSY) may be
 *             followed to a referral: the links that exist are read back with
 *             PeerGraphEnumConnections).
 *   flooding  M records (default 200) of 256 payload bytes, each added at a
 *             random node, one at a time: the clock runs from the
 *             PeerGraphAddRecord call until the last of the N-1 other nodes
 *             pops RECORD_CHANGED for it.  A counting socket shim
 *             (PeerGraphSetNetShim) decodes the frames every socket sends and
 *             counts FLOOD and ACK messages and bytes.
 *   machine   a raw TCP ping-pong of 64 bytes over [::1] (both ends in this
 *             process and one poll() loop, like the nodes): round trip p50.
 *
 * Usage: bench_flood [-m M] [-s SEED] [-d DBDIR] [N...]   (run from the
 *   repository root; the databases go to build/tmp-bench-flood unless -d is
 *   given, and are deleted at the end)
 */
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_flood: POSIX only (poll, setrlimit)\n");
    return 0;
}
#else

#include <netinet/tcp.h>
#include <arpa/inet.h>

#define BENCH_NAME "bench_flood"
#include "bench_util.h"

#define DB_DIR_N "build/tmp-bench-flood"
#define GRAPH_ID L"bench-flood"
#define PAYLOAD 256
#define MIN_DEG 3
#define PING_BYTES 64
#define PING_ROUNDS 2000
#define RECORD_LIMIT_NS (10LL * 1000000000LL) /* give up on one record after 10 s */
#define STEP_LIMIT_NS (30LL * 1000000000LL)

static const GUID REC_TYPE = {0xf100d000, 0xbe7c, 0x4a11, {0x90, 0x1d, 0xb3, 0x2c, 0x4e, 0x55, 0x01, 0x03}};

/* ------------------------------------------------------------------------- */
/* helpers                                                                   */
/* ------------------------------------------------------------------------- */

static uint64_t rng_state = 1;
static uint32_t rnd(void) /* xorshift64*: reproducible from -s */
{
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (uint32_t)((rng_state * 0x2545F4914F6CDD1DULL) >> 32);
}
static int rnd_below(int n) { return (int)(rnd() % (uint32_t)n); }

/* ------------------------------------------------------------------------- */
/* counting shim: wraps the platform shim, decodes MS-PPGRH frames per socket */
/* ------------------------------------------------------------------------- */

#define NTYPES 16
enum { T_FLOOD = 11, T_ACK = 14 };
static const char *const type_names[NTYPES] = {"?", "AUTH_INFO", "CONNECT", "WELCOME", "REFUSE", "DISCONNECT",
                                               "SOLICIT_NEW", "SOLICIT_TIME", "SOLICIT_HASH", "ADVERTISE",
                                               "REQUEST", "FLOOD", "SYNC_END", "PT2PT", "ACK", "?"};

typedef struct sockstat {
    unsigned fh;
    uint8_t fhb[2];
    unsigned frame_left;
    uint8_t hdr[6];
    unsigned hlen;
    uint32_t msg_left;
    int type;
    unsigned pend;
} sockstat;

static PEER_NET_SHIM g_plat;
static sockstat *g_ss;
static size_t g_ss_cap;
static unsigned long long g_msgs[NTYPES], g_bytes[NTYPES], g_sent;

static sockstat *ss_get(PEER_SOCKET s)
{
    if (s < 0) return NULL;
    if ((size_t)s >= g_ss_cap) {
        size_t nc = g_ss_cap ? g_ss_cap : 256;
        sockstat *n;
        while (nc <= (size_t)s) nc *= 2;
        n = (sockstat *)realloc(g_ss, nc * sizeof *n);
        if (!n) { fprintf(stderr, "bench_flood: out of memory\n"); exit(2); }
        memset(n + g_ss_cap, 0, (nc - g_ss_cap) * sizeof *n);
        g_ss = n;
        g_ss_cap = nc;
    }
    return &g_ss[s];
}

static void counters_reset(void)
{
    memset(g_msgs, 0, sizeof g_msgs);
    memset(g_bytes, 0, sizeof g_bytes);
    g_sent = 0;
}

/* Accounts n bytes sent on a socket: frames (2-byte length + payload), the
 * payload a stream of messages (4-byte size, version, type, ...). */
static void account(sockstat *st, const uint8_t *p, size_t n)
{
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
                    st->type = st->hdr[5] < NTYPES ? st->hdr[5] : 0;
                    st->msg_left = size > 6 ? size - 6 : 0;
                    g_msgs[st->type]++;
                    g_bytes[st->type] += 6 + st->pend;
                    st->pend = 0;
                    if (!st->msg_left) st->hlen = 0;
                }
            } else {
                size_t t = k < st->msg_left ? k : st->msg_left;
                g_bytes[st->type] += t + st->pend;
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
static HRESULT cs_connect(PVOID ctx, const SOCKADDR_IN6 *to, PEER_SOCKET *ps)
{
    HRESULT hr = g_plat.pfnConnect(ctx, to, ps);
    if (SUCCEEDED(hr)) {
        sockstat *st = ss_get(*ps);
        if (st) memset(st, 0, sizeof *st);
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
    s.pfnConnect = cs_connect;
    s.pfnAccept = cs_accept;
    if (FAILED(hr = PeerGraphSetNetShim(&s))) die_hr_at("PeerGraphSetNetShim", 0, hr);
}

/* ------------------------------------------------------------------------- */
/* host loop: GetPollFds + poll() + Service                                  */
/* ------------------------------------------------------------------------- */

static host_poll hp;

/* ------------------------------------------------------------------------- */
/* machine: raw TCP ping-pong of 64 bytes, both ends in one poll() loop      */
/* ------------------------------------------------------------------------- */

static void raw_pingpong(long long *rtt, int rounds)
{
    struct sockaddr_in6 sa;
    int lfd, cfd, sfd, one = 1, i;
    uint8_t buf[PING_BYTES], msg[PING_BYTES];
    memset(msg, 'p', sizeof msg);
    lfd = loopback_listener(&sa, 4, 0);
    cfd = socket(AF_INET6, SOCK_STREAM, 0);
    if (cfd < 0 || connect(cfd, (struct sockaddr *)&sa, sizeof sa) < 0 || (sfd = accept(lfd, NULL, NULL)) < 0) {
        perror("bench_flood: raw connect");
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
        while (atCli < PING_BYTES) { /* one poll() loop over both ends, as the nodes are driven */
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

/* ------------------------------------------------------------------------- */
/* the graph                                                                 */
/* ------------------------------------------------------------------------- */

typedef struct node {
    HGRAPH h;
    HPEEREVENT ev;
    wchar_t peer[16], db[32];
    PEER_ADDRESS addr;
    int listening;
    int tgt, deg;   /* degree target, planned degree */
    int got;        /* the current record arrived */
    long long t_got;
} node;

static node *nodes;
static int g_n;
static unsigned char *adj; /* N x N, links as read back */
static const char *g_dbdir = DB_DIR_N;

static void node_listen(int i)
{
    PPEER_NODE_INFO ni = NULL;
    HRESULT hr;
    if (FAILED(hr = PeerGraphListen(nodes[i].h, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0))) die_hr_at("PeerGraphListen", i, hr);
    if (FAILED(hr = PeerGraphGetNodeInfo(nodes[i].h, 0, &ni)) || ni->cAddresses < 1) die_hr_at("PeerGraphGetNodeInfo", i, hr);
    nodes[i].addr = ni->pAddresses[0];
    PeerGraphFreeData(ni);
    memset(&nodes[i].addr.sin6.sin6_addr, 0, sizeof nodes[i].addr.sin6.sin6_addr);
    nodes[i].addr.sin6.sin6_addr.s6_addr[15] = 1;
    nodes[i].listening = 1;
}

/* Pops every queued event of every node; RECORD_CHANGED(ADDED) for *want
 * marks the node. */
static void drain_events(const GUID *want, long long t)
{
    int i;
    for (i = 0; i < g_n; i++) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        while (PeerGraphGetEventData(nodes[i].ev, &d) == S_OK) {
            if (want && d->eventType == PEER_GRAPH_EVENT_RECORD_CHANGED &&
                d->recordChangeData.changeType == PEER_RECORD_ADDED &&
                !memcmp(&d->recordChangeData.recordId, want, sizeof *want) && !nodes[i].got) {
                nodes[i].got = 1;
                nodes[i].t_got = t;
            }
            PeerGraphFreeData(d);
        }
    }
}

/* Pending connection attempts: poll_conn_events pops every node's events and
 * settles them (state 1 connected, 2 failed with hr); a FAILED event that
 * names a next attempt (a referral followed by the library) moves cid on. */
typedef struct pend_conn { int from, to; ULONGLONG cid; int state; HRESULT hr; int referred; } pend_conn;

static void poll_conn_events(pend_conn *pc, int npc)
{
    int i, k;
    for (i = 0; i < g_n; i++) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        while (PeerGraphGetEventData(nodes[i].ev, &d) == S_OK) {
            if (d->eventType == PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION) {
                const PEER_EVENT_CONNECTION_CHANGE_DATA *cc = &d->connectionChangeData;
                for (k = 0; k < npc; k++) {
                    if (pc[k].from != i || pc[k].state || pc[k].cid != cc->ullConnectionId) continue;
                    if (cc->status == PEER_CONNECTED) pc[k].state = 1;
                    else if (cc->status == PEER_CONNECTION_FAILED && cc->ullNextConnectionId) {
                        pc[k].cid = cc->ullNextConnectionId;
                        pc[k].referred++;
                    } else {
                        pc[k].state = 2;
                        pc[k].hr = cc->hrConnectionFailedReason;
                    }
                }
            }
            PeerGraphFreeData(d);
        }
    }
}

static int peer_index(const wchar_t *p)
{
    int i;
    if (!p || p[0] != L'n') return -1;
    i = (int)wcstol(p + 1, NULL, 10);
    return i >= 0 && i < g_n ? i : -1;
}

/* Reads the links back: adj, and returns the number of links. */
static int read_links(void)
{
    int i, links = 0;
    memset(adj, 0, (size_t)g_n * (size_t)g_n);
    for (i = 0; i < g_n; i++) {
        HPEERENUM en;
        ULONG c = 0, k;
        PVOID *items = NULL;
        if (FAILED(PeerGraphEnumConnections(nodes[i].h, PEER_CONNECTION_NEIGHBOR, &en))) continue;
        PeerGraphGetItemCount(en, &c);
        if (c && SUCCEEDED(PeerGraphGetNextItem(en, &c, &items))) {
            for (k = 0; k < c; k++) {
                const PEER_CONNECTION_INFO *ci = (const PEER_CONNECTION_INFO *)items[k];
                int j = peer_index(ci->pwzPeerId);
                if (j >= 0) adj[(size_t)i * g_n + j] = adj[(size_t)j * g_n + i] = 1;
            }
            PeerGraphFreeData(items);
        }
        PeerGraphEndEnumeration(en);
    }
    for (i = 0; i < g_n; i++) {
        int j;
        for (j = i + 1; j < g_n; j++) links += adj[(size_t)i * g_n + j];
    }
    return links;
}

/* Hops from s to the farthest node (-1 if some node is unreachable). */
static int eccentricity(int s, int *dist, int *queue)
{
    int h = 0, t = 0, i, far = 0;
    for (i = 0; i < g_n; i++) dist[i] = -1;
    dist[s] = 0;
    queue[t++] = s;
    while (h < t) {
        int u = queue[h++];
        for (i = 0; i < g_n; i++)
            if (adj[(size_t)u * g_n + i] && dist[i] < 0) {
                dist[i] = dist[u] + 1;
                if (dist[i] > far) far = dist[i];
                queue[t++] = i;
            }
    }
    return t == g_n ? far : -1;
}

/* ------------------------------------------------------------------------- */
/* machine: the same flood by hand over the same links                       */
/* Every link is a loopback TCP connection; a copy is a 2-byte length and    */
/* COPY_BYTES bytes (the size of p2pgraph's FLOOD frame here), forwarded on  */
/* first receipt to every neighbor but the sender.  With `mirror`, each copy */
/* received is also answered with a 34-byte ACK and written to the node's    */
/* file with one write(), as the library does.                               */
/* ------------------------------------------------------------------------- */

#define COPY_BYTES 388 /* + 2-byte length = 390, p2pgraph's FLOOD frame for these IDs */
#define RAW_ACK_BYTES 32

typedef struct rawfd { int node, peer; uint8_t buf[1024]; size_t have; } rawfd;

static void raw_send_all(int fd, const uint8_t *p, size_t n)
{
    while (n) {
        ssize_t k = send(fd, p, n, MSG_NOSIGNAL);
        if (k > 0) { p += k; n -= (size_t)k; continue; }
        if (k < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            struct pollfd pf;
            pf.fd = fd; pf.events = POLLOUT; pf.revents = 0;
            poll(&pf, 1, 100);
            continue;
        }
        perror("bench_flood: raw send");
        exit(2);
    }
}

/* Latencies (ns) of the M records to the last node, sorted, in lat. */
static void raw_flood(int N, const int *origins, int M, int mirror, long long *lat)
{
    struct sockaddr_in6 sa;
    int lfd, one = 1, i, j, k, nfd = 0, maxfd = 0;
    int *fds = (int *)xcalloc((size_t)N * PEER_MAX_NEIGHBORS * 2 + 2, sizeof(int));
    int *nbfd = (int *)xcalloc((size_t)N * (size_t)N, sizeof(int)); /* node i's fd to node j, -1 none */
    rawfd *rf;
    int *wfd = (int *)xcalloc((size_t)N, sizeof(int));
    unsigned char *seen = (unsigned char *)xcalloc((size_t)N, 1);
    struct pollfd *pf;
    char path[300];
    for (i = 0; i < N * N; i++) nbfd[i] = -1;
    lfd = loopback_listener(&sa, 64, 0);
    for (i = 0; i < N; i++)
        for (j = i + 1; j < N; j++) {
            int c, a;
            if (!adj[(size_t)i * N + j]) continue;
            c = socket(AF_INET6, SOCK_STREAM, 0);
            if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof sa) < 0 || (a = accept(lfd, NULL, NULL)) < 0) {
                perror("bench_flood: raw link");
                exit(2);
            }
            set_nonblock(c);
            set_nonblock(a);
            (void)setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            (void)setsockopt(a, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
            nbfd[(size_t)i * N + j] = c;
            nbfd[(size_t)j * N + i] = a;
            fds[nfd++] = c;
            fds[nfd++] = a;
            if (c > maxfd) maxfd = c;
            if (a > maxfd) maxfd = a;
        }
    close(lfd);
    rf = (rawfd *)xcalloc((size_t)maxfd + 1, sizeof *rf);
    for (i = 0; i < N; i++)
        for (j = 0; j < N; j++) {
            int fd = nbfd[(size_t)i * N + j];
            if (fd >= 0) { rf[fd].node = i; rf[fd].peer = j; }
        }
    if (mirror)
        for (i = 0; i < N; i++) {
            snprintf(path, sizeof path, "%s/raw-%d-%d.bin", g_dbdir, (int)getpid(), i);
            if ((wfd[i] = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644)) < 0) { perror(path); exit(2); }
        }
    pf = (struct pollfd *)xcalloc((size_t)nfd, sizeof *pf);
    for (k = 0; k < M; k++) {
        uint8_t msg[2 + COPY_BYTES];
        int o = origins[k], left = N - 1;
        long long t0 = now_ns(), tl = t0;
        memset(msg, 0, sizeof msg);
        msg[0] = (uint8_t)(COPY_BYTES >> 8);
        msg[1] = (uint8_t)COPY_BYTES;
        memcpy(msg + 2, &k, sizeof k);
        memset(seen, 0, (size_t)N);
        seen[o] = 1;
        for (j = 0; j < N; j++)
            if (nbfd[(size_t)o * N + j] >= 0) raw_send_all(nbfd[(size_t)o * N + j], msg, sizeof msg);
        while (left > 0 && now_ns() - t0 < RECORD_LIMIT_NS) {
            int r;
            for (i = 0; i < nfd; i++) { pf[i].fd = fds[i]; pf[i].events = POLLIN; pf[i].revents = 0; }
            r = poll(pf, (nfds_t)nfd, 100);
            if (r < 0 && errno != EINTR) { perror("poll"); exit(2); }
            for (i = 0; i < nfd && r > 0; i++) {
                rawfd *x;
                if (!pf[i].revents) continue;
                r--;
                x = &rf[pf[i].fd];
                for (;;) {
                    ssize_t got = recv(pf[i].fd, x->buf + x->have, sizeof x->buf - x->have, 0);
                    size_t off = 0;
                    if (got <= 0) break;
                    x->have += (size_t)got;
                    while (x->have - off >= 2) {
                        size_t len = ((size_t)x->buf[off] << 8) | x->buf[off + 1];
                        if (x->have - off < 2 + len) break;
                        if (len == COPY_BYTES) { /* a copy */
                            int kk;
                            memcpy(&kk, x->buf + off + 2, sizeof kk);
                            if (mirror) {
                                uint8_t ack[2 + RAW_ACK_BYTES];
                                memset(ack, 0, sizeof ack);
                                ack[1] = RAW_ACK_BYTES;
                                raw_send_all(pf[i].fd, ack, sizeof ack);
                            }
                            if (kk == k && !seen[x->node]) {
                                seen[x->node] = 1;
                                left--;
                                tl = now_ns();
                                if (mirror && write(wfd[x->node], x->buf + off + 2, len) != (ssize_t)len) {
                                    perror("write");
                                    exit(2);
                                }
                                for (j = 0; j < N; j++) {
                                    int fd = nbfd[(size_t)x->node * N + j];
                                    if (fd >= 0 && j != x->peer) raw_send_all(fd, x->buf + off, 2 + len);
                                }
                            }
                        }
                        off += 2 + len;
                    }
                    memmove(x->buf, x->buf + off, x->have - off);
                    x->have -= off;
                }
            }
        }
        lat[k] = left ? RECORD_LIMIT_NS : tl - t0;
        /* let duplicates still in flight arrive before the next record */
        for (;;) {
            int r, any = 0;
            for (i = 0; i < nfd; i++) { pf[i].fd = fds[i]; pf[i].events = POLLIN; pf[i].revents = 0; }
            r = poll(pf, (nfds_t)nfd, 1);
            if (r <= 0) break;
            for (i = 0; i < nfd; i++) {
                rawfd *x = &rf[pf[i].fd];
                if (!pf[i].revents) continue;
                for (;;) {
                    ssize_t got = recv(pf[i].fd, x->buf + x->have, sizeof x->buf - x->have, 0);
                    size_t off = 0;
                    if (got <= 0) break;
                    any = 1;
                    x->have += (size_t)got;
                    while (x->have - off >= 2) {
                        size_t len = ((size_t)x->buf[off] << 8) | x->buf[off + 1];
                        if (x->have - off < 2 + len) break;
                        if (len == COPY_BYTES && mirror) {
                            uint8_t ack[2 + RAW_ACK_BYTES];
                            memset(ack, 0, sizeof ack);
                            ack[1] = RAW_ACK_BYTES;
                            raw_send_all(pf[i].fd, ack, sizeof ack);
                        }
                        off += 2 + len;
                    }
                    memmove(x->buf, x->buf + off, x->have - off);
                    x->have -= off;
                }
            }
            if (!any) break;
        }
    }
    sort_ll(lat, M);
    for (i = 0; i < nfd; i++) close(fds[i]);
    if (mirror)
        for (i = 0; i < N; i++) {
            close(wfd[i]);
            snprintf(path, sizeof path, "%s/raw-%d-%d.bin", g_dbdir, (int)getpid(), i);
            unlink(path);
        }
    free(fds); free(nbfd); free(rf); free(wfd); free(seen); free(pf);
}

typedef struct flood_res {
    int n, m, links, planned, failed_links, referred, connected_ok;
    int degmin, degmax;
    double degmean, diam, ecc_mean;
    double build_ms;
    double p50, p99, max, mean_deliv_p50;
    unsigned long long flood_msgs, flood_bytes, ack_msgs, ack_bytes, other_bytes, sent;
    double service_max_ms;
    long service_slow;
    int lost;
    HRESULT fail_hr;
    double raw_p50, raw_p99, rawm_p50, rawm_p99;
} flood_res;

static void run_n(int N, int M, flood_res *res)
{
    int i, j, k, npc = 0, maxpc;
    pend_conn *pc;
    PEER_GRAPH_EVENT_REGISTRATION regs[2];
    HRESULT hr;
    long long tb = now_ns(), *lat, *deliv;
    int *dist = (int *)xcalloc((size_t)N, sizeof(int)), *queue = (int *)xcalloc((size_t)N, sizeof(int));
    double eccSum = 0;
    int nlat = 0, ndeliv = 0;
    int *origins = (int *)xcalloc((size_t)M, sizeof(int));

    memset(res, 0, sizeof *res);
    res->n = N;
    res->m = M;
    g_n = N;
    nodes = (node *)xcalloc((size_t)N, sizeof *nodes);
    adj = (unsigned char *)xcalloc((size_t)N * (size_t)N, 1);
    maxpc = N * PEER_MAX_NEIGHBORS;
    pc = (pend_conn *)xcalloc((size_t)maxpc, sizeof *pc);
    lat = (long long *)xcalloc((size_t)M, sizeof *lat);
    deliv = (long long *)xcalloc((size_t)M * (size_t)N, sizeof *deliv);
    regs[0].eventType = PEER_GRAPH_EVENT_RECORD_CHANGED;
    regs[0].pType = NULL;
    regs[1].eventType = PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION;
    regs[1].pType = NULL;

    /* --- nodes --- */
    for (i = 0; i < N; i++) {
        node *x = &nodes[i];
        swprintf(x->peer, 16, L"n%d", i);
        swprintf(x->db, 32, L"fl-%d-%d", N, i);
        x->tgt = MIN_DEG + rnd_below(PEER_MAX_NEIGHBORS - MIN_DEG + 1);
        PeerGraphDelete(GRAPH_ID, x->peer, x->db);
        if (i == 0) {
            PEER_GRAPH_PROPERTIES p;
            memset(&p, 0, sizeof p);
            p.dwSize = sizeof p;
            p.dwScope = PEER_GRAPH_SCOPE_LOOPBACK;
            p.pwzGraphId = (PWSTR)GRAPH_ID;
            p.pwzCreatorId = x->peer;
            p.cPresenceMax = (ULONG)-1;
            if (FAILED(hr = PeerGraphCreate(&p, x->db, NULL, &x->h))) die_hr_at("PeerGraphCreate", i, hr);
        } else {
            hr = PeerGraphOpen(GRAPH_ID, x->peer, x->db, NULL, 0, NULL, &x->h);
            if (hr != PEER_S_GRAPH_DATA_CREATED) die_hr_at("PeerGraphOpen", i, hr);
        }
        if (FAILED(hr = PeerGraphRegisterEvent(x->h, NULL, 2, regs, &x->ev))) die_hr_at("PeerGraphRegisterEvent", i, hr);
    }
    host_step(&hp, 0);
    node_listen(0);

    /* --- a random tree: node i joins an earlier node with room --- */
    for (i = 1; i < N; i++) {
        int cand[4096], nc = 0, p;
        long long t0 = now_ns();
        ULONGLONG cid;
        for (j = 0; j < i; j++)
            if (nodes[j].deg < nodes[j].tgt) cand[nc++] = j;
        if (!nc)
            for (j = 0; j < i; j++)
                if (nodes[j].deg < PEER_MAX_NEIGHBORS) cand[nc++] = j;
        if (!nc) { fprintf(stderr, "bench_flood: no room for node %d\n", i); exit(2); }
        p = cand[rnd_below(nc)];
        if (FAILED(hr = PeerGraphConnect(nodes[i].h, nodes[p].peer, &nodes[p].addr, &cid))) die_hr_at("PeerGraphConnect", i, hr);
        npc = 1;
        memset(pc, 0, sizeof *pc);
        pc[0].from = i;
        pc[0].to = p;
        pc[0].cid = cid;
        while (!pc[0].state || !(status_of(nodes[i].h) & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
            if (now_ns() - t0 > STEP_LIMIT_NS || pc[0].state == 2) {
                fprintf(stderr, "bench_flood: node %d could not join node %d (0x%08lX)\n", i, p,
                        (unsigned long)(uint32_t)pc[0].hr);
                exit(2);
            }
            host_step(&hp, 50);
            poll_conn_events(pc, npc);
        }
        nodes[i].deg++;
        nodes[p].deg++;
        adj[(size_t)i * N + p] = adj[(size_t)p * N + i] = 1;
        node_listen(i);
    }

    /* --- extra links between nodes under their targets, all at once --- */
    {
        int npairs = N * (N - 1) / 2, *pairs = (int *)xcalloc((size_t)npairs, 2 * sizeof(int)), q = 0;
        long long t0;
        for (i = 0; i < N; i++)
            for (j = i + 1; j < N; j++) { pairs[2 * q] = i; pairs[2 * q + 1] = j; q++; }
        for (q = npairs - 1; q > 0; q--) { /* shuffle */
            int r = rnd_below(q + 1), a = pairs[2 * q], b = pairs[2 * q + 1];
            pairs[2 * q] = pairs[2 * r]; pairs[2 * q + 1] = pairs[2 * r + 1];
            pairs[2 * r] = a; pairs[2 * r + 1] = b;
        }
        npc = 0;
        for (q = 0; q < npairs && npc < maxpc; q++) {
            int u = pairs[2 * q], v = pairs[2 * q + 1];
            if (adj[(size_t)u * N + v] || nodes[u].deg >= nodes[u].tgt || nodes[v].deg >= nodes[v].tgt) continue;
            if (rnd_below(2)) { int t = u; u = v; v = t; }
            nodes[u].deg++;
            nodes[v].deg++;
            adj[(size_t)u * N + v] = adj[(size_t)v * N + u] = 1;
            pc[npc].from = u;
            pc[npc].to = v;
            npc++;
        }
        res->planned = N - 1 + npc;
        for (k = 0; k < npc; k++) {
            hr = PeerGraphConnect(nodes[pc[k].from].h, nodes[pc[k].to].peer, &nodes[pc[k].to].addr, &pc[k].cid);
            if (FAILED(hr)) { pc[k].state = 2; pc[k].hr = hr; }
        }
        t0 = now_ns();
        for (;;) {
            int open = 0;
            for (k = 0; k < npc; k++) open += !pc[k].state;
            if (!open || now_ns() - t0 > STEP_LIMIT_NS) break;
            host_step(&hp, 50);
            poll_conn_events(pc, npc);
        }
        for (k = 0; k < npc; k++) {
            res->referred += pc[k].referred;
            if (pc[k].state == 1) res->connected_ok++;
            else { res->failed_links++; res->fail_hr = pc[k].hr; }
        }
        free(pairs);
    }
    host_run_ms(&hp, 300); /* syncs finish, logs fsynced */
    drain_events(NULL, 0);
    res->links = read_links();
    res->build_ms = (double)(now_ns() - tb) / 1e6;
    res->degmin = PEER_MAX_NEIGHBORS + 1;
    {
        int dsum = 0, diam = 0;
        for (i = 0; i < N; i++) {
            int d = 0, e;
            for (j = 0; j < N; j++) d += adj[(size_t)i * N + j];
            dsum += d;
            if (d < res->degmin) res->degmin = d;
            if (d > res->degmax) res->degmax = d;
            e = eccentricity(i, dist, queue);
            if (e < 0) { fprintf(stderr, "bench_flood: the graph is not connected\n"); exit(2); }
            if (e > diam) diam = e;
        }
        res->degmean = (double)dsum / N;
        res->diam = diam;
    }

    /* --- M records, one at a time --- */
    counters_reset();
    hp.service_max_ms = 0;
    hp.service_slow = 0;
    for (k = 0; k < M; k++) {
        int o = origins[k] = rnd_below(N), left;
        PEER_RECORD r;
        GUID id;
        uint8_t data[PAYLOAD];
        ULONGLONG exp = peer_now(nodes[o].h) + 3600ULL * 10000000ULL;
        long long t0, tlast = 0;
        for (j = 0; j < PAYLOAD; j++) data[j] = (uint8_t)(k * 7 + j);
        init_record(&r, &REC_TYPE, exp, data, PAYLOAD);
        for (i = 0; i < N; i++) nodes[i].got = 0;
        nodes[o].got = 1;
        eccSum += eccentricity(o, dist, queue);
        t0 = now_ns();
        if (FAILED(hr = PeerGraphAddRecord(nodes[o].h, &r, &id))) die_hr_at("PeerGraphAddRecord", o, hr);
        left = N - 1;
        while (left > 0) {
            long long t;
            if (now_ns() - t0 > RECORD_LIMIT_NS) break;
            host_step(&hp, 50);
            t = now_ns();
            drain_events(&id, t);
            for (left = 0, i = 0; i < N; i++) left += !nodes[i].got;
        }
        if (left) { res->lost += left; continue; }
        for (i = 0; i < N; i++) {
            if (i == o) continue;
            deliv[ndeliv++] = nodes[i].t_got - t0;
            if (nodes[i].t_got > tlast) tlast = nodes[i].t_got;
        }
        lat[nlat++] = tlast - t0;
    }
    host_run_ms(&hp, 50); /* trailing ACKs */
    drain_events(NULL, 0);
    res->service_max_ms = hp.service_max_ms;
    res->service_slow = hp.service_slow;
    res->ecc_mean = eccSum / M;
    sort_ll(lat, nlat);
    sort_ll(deliv, ndeliv);
    res->p50 = pct_ms(lat, nlat, 50);
    res->p99 = pct_ms(lat, nlat, 99);
    res->max = nlat ? (double)lat[nlat - 1] / 1e6 : 0;
    res->mean_deliv_p50 = pct_ms(deliv, ndeliv, 50);
    res->flood_msgs = g_msgs[T_FLOOD];
    res->flood_bytes = g_bytes[T_FLOOD];
    res->ack_msgs = g_msgs[T_ACK];
    res->ack_bytes = g_bytes[T_ACK];
    res->sent = g_sent;
    res->other_bytes = g_sent - g_bytes[T_FLOOD] - g_bytes[T_ACK];
    {
        int t;
        for (t = 0; t < NTYPES; t++)
            if (t != T_FLOOD && t != T_ACK && g_msgs[t])
                printf("  (N=%d: during flooding also %llu %s messages, %llu bytes)\n", N, g_msgs[t], type_names[t],
                       g_bytes[t]);
    }

    /* --- tear down --- */
    for (i = 0; i < N; i++) PeerGraphClose(nodes[i].h);
    host_run_ms(&hp, 50);
    for (i = 0; i < N; i++) PeerGraphDelete(GRAPH_ID, nodes[i].peer, nodes[i].db);

    /* --- the machine: the same flood by hand over the same links --- */
    raw_flood(N, origins, M, 0, lat);
    res->raw_p50 = pct_ms(lat, M, 50);
    res->raw_p99 = pct_ms(lat, M, 99);
    raw_flood(N, origins, M, 1, lat);
    res->rawm_p50 = pct_ms(lat, M, 50);
    res->rawm_p99 = pct_ms(lat, M, 99);
    free(nodes); free(adj); free(pc); free(lat); free(deliv); free(dist); free(queue); free(origins);
    nodes = NULL;
    adj = NULL;
}

int main(int argc, char **argv)
{
    int M = 200, nn = 0, i, *ns = (int *)xcalloc((size_t)argc + 2, sizeof(int));
    PEER_VERSION_DATA vd;
    HRESULT hr;
    struct rlimit rl;
    long long *rtt = (long long *)xcalloc(PING_ROUNDS, sizeof *rtt), tstart = now_ns();
    flood_res *res;
    double rtt50, rtt99;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "-m") && i + 1 < argc) M = atoi(argv[++i]);
        else if (!strcmp(argv[i], "-s") && i + 1 < argc) rng_state = strtoull(argv[++i], NULL, 10) * 2654435761ULL + 1;
        else if (!strcmp(argv[i], "-d") && i + 1 < argc) g_dbdir = argv[++i];
        else if (argv[i][0] >= '0' && argv[i][0] <= '9' && atoi(argv[i]) >= 2 && atoi(argv[i]) <= 4096)
            ns[nn++] = atoi(argv[i]);
        else {
            fprintf(stderr, "usage: %s [-m M] [-s SEED] [-d DBDIR] [N...]   (2 <= N <= 4096; defaults: M 200, N 10 100)\n",
                    argv[0]);
            return 2;
        }
    }
    if (!nn) { ns[0] = 10; ns[1] = 100; nn = 2; }
    if (M < 1) M = 1;
    raise_nofile(&rl, NULL);
    res = (flood_res *)xcalloc((size_t)nn, sizeof *res);

    printf("bench_flood: flooding through N nodes over [::1], one process, one thread, one poll() loop\n");
    print_command_machine(argc, argv);
    printf("records: %d-byte payload; %d per N, each added at a random node after the previous one reached every node;"
           " databases in %s\n", PAYLOAD, M, g_dbdir);

    if (setup_db_dir(g_dbdir) != 0) return 2;
    install_counting_shim();
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) die_hr_at("PeerGraphStartup", 0, hr);

    raw_pingpong(rtt, PING_ROUNDS);
    sort_ll(rtt, PING_ROUNDS);
    rtt50 = pct_ms(rtt, PING_ROUNDS, 50);
    rtt99 = pct_ms(rtt, PING_ROUNDS, 99);
    for (i = 0; i < nn; i++) run_n(ns[i], M, &res[i]);
    PeerGraphShutdown();

    printf("\nmachine: raw TCP ping-pong of %d B over [::1], both ends in one poll() loop, %d rounds:"
           " RTT p50 %.3f ms, p99 %.3f ms\n", PING_BYTES, PING_ROUNDS, rtt50, rtt99);
    printf("\ntopology (degree target 3..7 per node; a random tree, then random extra links)\n");
    printf("  %5s %6s %8s %6s %9s %8s %8s %10s\n", "N", "links", "planned", "failed", "referred", "degree",
           "diameter", "build ms");
    for (i = 0; i < nn; i++) {
        const flood_res *x = &res[i];
        char deg[32];
        snprintf(deg, sizeof deg, "%d/%.1f/%d", x->degmin, x->degmean, x->degmax);
        printf("  %5d %6d %8d %6d %9d %8s %8.0f %10.0f\n", x->n, x->links, x->planned, x->failed_links, x->referred, deg,
               x->diam, x->build_ms);
        if (x->failed_links)
            printf("        (last failure 0x%08lX)\n", (unsigned long)(uint32_t)x->fail_hr);
    }
    printf("  degree = min/mean/max of the links read back with PeerGraphEnumConnections; build ms includes\n"
           "  creating the graphs, the joins one after another, the extra links and a 300 ms settle\n");

    printf("\nlatency to the last node (ms): p2pgraph = PeerGraphAddRecord -> the last node pops RECORD_CHANGED;\n"
           "raw = the same records from the same origins flooded by hand over the same links (TCP, one poll loop):\n"
           "forward on first receipt to all neighbors but the sender, %d-byte copies; raw+ = also a 34-byte ACK per\n"
           "copy and one write() per delivery, as the library does.  hops = mean eccentricity of the origins.\n",
           COPY_BYTES + 2);
    printf("  %5s %-22s %8s %8s %8s %10s %6s %9s %9s %6s\n", "N", "what", "p50", "p99", "max", "node p50", "hops",
           "ratio p50", "ratio p99", "lost");
    for (i = 0; i < nn; i++) {
        const flood_res *x = &res[i];
        printf("  %5d %-22s %8.3f %8.3f\n", x->n, "raw relay (machine)", x->raw_p50, x->raw_p99);
        printf("  %5d %-22s %8.3f %8.3f\n", x->n, "raw+ ACK + write()", x->rawm_p50, x->rawm_p99);
        printf("  %5d %-22s %8.3f %8.3f %8.3f %10.3f %6.2f %8.1fx %8.1fx %6d\n", x->n, "p2pgraph", x->p50, x->p99,
               x->max, x->mean_deliv_p50, x->ecc_mean, x->p50 / x->raw_p50, x->p99 / x->raw_p99, x->lost);
        printf("  %5s %-22s %8s %8s %8s %10s %6s %8.1fx %8.1fx   (p2pgraph / raw+)\n", "", "", "", "", "", "", "",
               x->p50 / x->rawm_p50, x->p99 / x->rawm_p99);
        printf("  %5s %-22s p50 = %.0f loopback RTTs; %.3f ms per hop = %.0fx half an RTT\n", "", "", x->p50 / rtt50,
               x->p50 / x->ecc_mean, x->p50 / x->ecc_mean / (rtt50 / 2));
    }
    printf("  node p50 = median over every (record, node) delivery\n");

    printf("\ncopies and bytes (counted by the socket shim over all %d records)\n", M);
    printf("  %5s %11s %13s %9s %9s %12s %12s %14s %12s\n", "N", "FLOOD msgs", "per delivery", "RMR", "predicted",
           "B per copy", "ACK B/copy", "wire B/record", "per node");
    for (i = 0; i < nn; i++) {
        const flood_res *x = &res[i];
        double deliveries = (double)x->m * (x->n - 1), perDel = (double)x->flood_msgs / deliveries;
        double pred = (2.0 * x->links - (x->n - 1)) / (x->n - 1);
        printf("  %5d %11llu %13.2f %9.2f %9.2f %12.1f %12.1f %14.0f %12.1f\n", x->n, x->flood_msgs, perDel, perDel - 1,
               pred, (double)x->flood_bytes / x->flood_msgs, (double)x->ack_bytes / x->flood_msgs,
               (double)x->sent / x->m, (double)x->sent / deliveries);
    }
    printf("  per delivery = FLOOD messages / (M x (N-1)); RMR = that - 1 (0 = each node got exactly one copy);\n"
           "  predicted = (2 x links - (N-1)) / (N-1): every node forwards once to all neighbors but the sender.\n"
           "  B per copy = FLOOD bytes (frame + 12-byte header + record) per message; ACK B/copy = ACK bytes per FLOOD;\n"
           "  wire B/record = every byte sent while flooding / M; per node = / (N-1).\n");
    printf("\nhost: longest PeerGraphService call while flooding, and calls over 10 ms:");
    for (i = 0; i < nn; i++) printf("  N=%d: %.1f ms, %ld", res[i].n, res[i].service_max_ms, res[i].service_slow);
    printf("\n\ntotal run time %.1f s\n", (double)(now_ns() - tstart) / 1e9);
    free(ns); free(rtt); free(res); free(g_ss);
    host_poll_free(&hp);
    return 0;
}
#endif
