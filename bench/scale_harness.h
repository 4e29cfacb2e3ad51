/*
 * bench/scale_harness.h - N nodes of one peer graph in one process: their
 * set-up and joins, what they see (neighbors, components, presence and record
 * arrival), and killing a set of them at once as a crash would.  Used by
 * bench/scale.c; written so that a test can drive the same scenarios on the
 * fake network (tests/fake_net.h) with its synthetic clock.
 *
 * Three layers, each usable without the next:
 *
 *  1. scale_net: a PEER_NET_SHIM wrapped around any base shim (the platform's,
 *     or fake_net_shim()).  Every socket is tracked with the node that owns it:
 *     a node listens on an address of its own (PeerGraphListenAddress) and its
 *     outbound links leave from it (pfnConnectFrom), so a socket's local
 *     address names its node.  Killing a set of nodes makes every socket they
 *     own a zombie at once: the base socket is dropped as a crashed process's
 *     would be (scale_net_ops.kill_socket: on real sockets dup2() of /dev/null
 *     over the fd, so the kernel sends FIN/RST while the number stays valid;
 *     on the fake network its pfnClose), and from then on the library sees a
 *     socket that never becomes readable, swallows everything sent, never
 *     connects.  A dead node's new connects get zombies that never complete
 *     (scale_net_ops.new_zombie).  Bytes sent by live nodes are counted and
 *     decoded by message type (SN.msgs, SN.msg_bytes; keepalive frames as type 0xFF).
 *  2. scale_graph: the nodes (node i listens on 127.<net>.<i/250>.<1+i%250>,
 *     v4-mapped, port 0), joins with a bounded number in flight, the event
 *     drain that time-stamps what each node sees, mesh checks (neighbor
 *     counts and components from PeerGraphEnumConnections), kills, and the
 *     scenarios S8 (scale_s8_join, scale_s8_kill) and S6 (scale_s6_run).
 *     Time and the loop come from a scale_driver.
 *  3. scale_driver: one loop step and a clock.  bench/scale.c has the real one
 *     (PeerGraphGetPollFds + poll() + PeerGraphService); when
 *     tests/fake_net.h is included before this header, scale_fake_driver()
 *     returns one for the fake network: it never blocks and moves the
 *     synthetic clock to the library's next deadline when nothing is ready.
 *
 * One graph may also be spread over several processes, each holding a
 * scale_graph of its own nodes (bench/scale --procs): no_create, name_mul /
 * name_add, extra_live and pick_remote let a process join nodes held
 * elsewhere, reached by address; mesh checks then see only local links.
 *
 * C99 and p2pgraph.h only (no OS call: those are in scale_net_ops).  Include
 * it once per program; everything is static inline, so a program may use any
 * part.  The shim is process-wide, and so is scale_net's state (one
 * scale_graph at a time uses it).
 *
 * On the fake network, sketch (a test would assert on the results):
 *
 *     #include "fake_net.h"
 *     #include "scale_harness.h"
 *     scale_fake f; scale_net_ops ops; scale_driver d = scale_fake_driver(&f, &ops);
 *     scale_graph g; scale_mesh m; scale_s6 r;
 *     fake_net_reset();
 *     scale_net_install(fake_net_shim(), &ops);   (then PeerGraphStartup)
 *     scale_init(&g, 204, L"g", 7, PEER_MAINTENANCE_FAST, &d, seed, &recType);
 *     scale_build(&g, 200, 50, 600000, &m);       (synthetic ms; -1 on timeout)
 *     scale_s6_run(&g, 50, 30000, 10, 256, &r);    (r.t_mesh_ms, r.t_rec_ms, ...)
 *     scale_close_all(&g); scale_free(&g);        (then PeerGraphShutdown)
 *     scale_net_free(); scale_fake_free(&f);
 *
 * Same seed, same results (checked: N = 60 and 200 give identical figures run
 * after run).  On the fake network data moves in zero synthetic time, so
 * latencies there count timers, not CPU.
 */
#ifndef SCALE_HARNESS_H
#define SCALE_HARNESS_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <wchar.h>
#include "p2pgraph.h"

/* ========================================================================= */
/* 1. scale_net: the wrapping shim                                           */
/* ========================================================================= */

/* What killing needs from the socket layer underneath. */
typedef struct scale_net_ops {
    void *ctx;
    /* Drops base socket s as a crash would (the peer sees FIN or RST); the
     * number must stay reserved until close_zombie. */
    void (*kill_socket)(void *ctx, PEER_SOCKET s);
    /* The library closes a zombie: release the number (fresh: it came from
     * new_zombie, not kill_socket). */
    void (*close_zombie)(void *ctx, PEER_SOCKET s, int fresh);
    /* A fresh number for a zombie (a dead node's connect, which then never
     * completes), or PEER_INVALID_SOCKET (the connect then fails at once:
     * see the note at sn_connect_from). */
    PEER_SOCKET (*new_zombie)(void *ctx);
} scale_net_ops;

/* Who owns an address, and whether a node is dead (set by scale_graph). */
typedef struct scale_net_owner {
    void *ctx;
    int (*owner_of)(void *ctx, const SOCKADDR_IN6 *a); /* node index, -1 if none */
    int (*owner_of_node)(void *ctx, unsigned long long node); /* node index by node ID, -1 if none */
    int (*is_dead)(void *ctx, int node);
    const SOCKADDR_IN6 *(*addr_of)(void *ctx, int node); /* the node's own address, port 0 */
} scale_net_owner;

/* What a socket has sent, decoded: frames (2-byte length, payload) carrying
 * a stream of MS-PPGRH messages (4-byte size, version, type, ...). */
typedef struct scale_dec {
    unsigned fh;            /* frame-length bytes held (0..1) */
    unsigned char fhb[2];
    unsigned frame_left;    /* payload bytes left in the current frame */
    unsigned char hdr[6];   /* the current message's first bytes */
    unsigned hlen;
    unsigned msg_left;      /* bytes left in the current message after hdr */
    unsigned type;
    unsigned pend;          /* frame-header bytes not yet charged to a message */
    unsigned moff;          /* FLOOD / CONNECT: message bytes seen, while reading what is wanted */
    unsigned char rt[4];    /* ... a FLOOD's record type's first 4 bytes (message offsets 12..15) */
    unsigned char nid[8];   /* ... a CONNECT's node ID (offsets 16..23) */
    int nid_ready;          /* a CONNECT's node ID was read */
} scale_dec;

typedef struct scale_sock {
    PEER_SOCKET s;
    unsigned char used;    /* 0 empty, 1 in use, 2 deleted */
    unsigned char zombie;  /* its node was killed */
    unsigned char listener;
    unsigned char fresh;   /* a zombie from new_zombie (a dead node's connect) */
    int owner;             /* node index, -1 unknown */
    scale_dec dec;
} scale_sock;

typedef struct scale_net {
    PEER_NET_SHIM base;   /* the shim underneath */
    scale_net_ops ops;
    scale_net_owner own;
    int actor;            /* owner of sockets from pfnConnect (no pFrom): set around PeerGraphConnect */
    scale_sock *tab;
    size_t cap, used, deleted;
    /* counters */
    unsigned long long bytes_sent;   /* by sockets of live (or unknown) owners */
    unsigned long long send_calls;   /* pfnSend / pfnSendV calls that moved bytes */
    unsigned long long zombie_bytes; /* swallowed from dead nodes */
    unsigned long long unknown_owner;/* sockets created with no known owner */
    unsigned long long adopted;      /* ... then given one by the CONNECT sent on it */
    unsigned long long msgs[256], msg_bytes[256]; /* by message type, frame bytes included */
    unsigned long long floods[5]; /* FLOODs by record type: 0 application, 1 Graph Info, 2 Signature, 3 Contact, 4 Presence */
    PEER_POLL_FD *wscratch;
    ULONG wcap;
} scale_net;

static scale_net SN;

static inline size_t scale_net_hash(PEER_SOCKET s)
{
    unsigned long long x = (unsigned long long)s * 0x9E3779B97F4A7C15ULL;
    return (size_t)(x >> 17);
}

static inline scale_sock *scale_net_find(PEER_SOCKET s)
{
    size_t i, m;
    if (!SN.cap) return NULL;
    m = SN.cap - 1;
    for (i = scale_net_hash(s) & m;; i = (i + 1) & m) {
        if (SN.tab[i].used == 0) return NULL;
        if (SN.tab[i].used == 1 && SN.tab[i].s == s) return &SN.tab[i];
    }
}

static inline void scale_net_grow(void)
{
    scale_sock *old = SN.tab;
    size_t oc = SN.cap, i, nc = oc ? oc : 1024;
    while ((SN.used + 1) * 2 > nc) nc *= 2;
    SN.tab = (scale_sock *)calloc(nc, sizeof *SN.tab);
    if (!SN.tab) { fprintf(stderr, "scale_harness: out of memory\n"); exit(2); }
    SN.cap = nc;
    SN.used = SN.deleted = 0;
    for (i = 0; i < oc; i++)
        if (old[i].used == 1) {
            size_t j, m = nc - 1;
            for (j = scale_net_hash(old[i].s) & m; SN.tab[j].used; j = (j + 1) & m) {}
            SN.tab[j] = old[i];
            SN.used++;
        }
    free(old);
}

/* Tracks socket s (replacing a stale entry for the same number). */
static inline scale_sock *scale_net_add(PEER_SOCKET s, int owner, int listener)
{
    scale_sock *e = scale_net_find(s);
    size_t i, m;
    if (!e) {
        if ((SN.used + SN.deleted + 1) * 2 > SN.cap) scale_net_grow();
        m = SN.cap - 1;
        for (i = scale_net_hash(s) & m; SN.tab[i].used == 1; i = (i + 1) & m) {}
        if (SN.tab[i].used == 2) SN.deleted--;
        e = &SN.tab[i];
        SN.used++;
    }
    e->s = s;
    e->used = 1;
    e->zombie = 0;
    e->fresh = 0;
    e->listener = (unsigned char)listener;
    e->owner = owner;
    memset(&e->dec, 0, sizeof e->dec);
    if (owner < 0 && !listener) SN.unknown_owner++;
    return e;
}

/* Counts n bytes sent on a socket into SN.msgs / SN.msg_bytes by type. */
static inline void scale_net_account(scale_dec *st, const unsigned char *p, size_t n)
{
    while (n) {
        size_t k;
        if (st->frame_left == 0) {
            st->fhb[st->fh++] = *p++;
            n--;
            if (st->fh == 2) {
                st->fh = 0;
                if (st->fhb[0] > 0x80) { /* a fast-profile keepalive frame (PROTOCOL.md P17): counted as type 0xFF */
                    SN.msgs[0xFF]++;
                    SN.msg_bytes[0xFF] += 2;
                    continue;
                }
                st->frame_left = ((unsigned)st->fhb[0] << 8) | st->fhb[1];
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
                    unsigned size = ((unsigned)st->hdr[0] << 24) | ((unsigned)st->hdr[1] << 16) |
                                    ((unsigned)st->hdr[2] << 8) | st->hdr[3];
                    st->type = st->hdr[5];
                    st->msg_left = size > 6 ? size - 6 : 0;
                    SN.msgs[st->type]++;
                    SN.msg_bytes[st->type] += 6 + st->pend;
                    st->pend = 0;
                    st->moff = st->type == 0x0B || st->type == 0x02 ? 6 : 24;
                    if (!st->msg_left) st->hlen = 0;
                }
            } else {
                size_t t = k < st->msg_left ? k : st->msg_left, j;
                unsigned lim = st->type == 0x0B ? 16 : st->type == 0x02 ? 24 : 0;
                for (j = 0; j < t && st->moff < lim; j++, st->moff++) /* a FLOOD's record type (record at offset 12) */
                    if (st->type == 0x02) { /* a CONNECT's node ID: whose socket this is */
                        if (st->moff >= 16) st->nid[st->moff - 16] = p[j];
                        if (st->moff == 23) st->nid_ready = 1;
                    } else if (st->moff >= 12) {
                        st->rt[st->moff - 12] = p[j];
                        if (st->moff == 15) {
                            int internal = !st->rt[0] && !st->rt[1] && !st->rt[3] && st->rt[2] >= 1 && st->rt[2] <= 4;
                            SN.floods[internal ? st->rt[2] : 0]++;
                        }
                    }
                SN.msg_bytes[st->type] += t + st->pend;
                st->pend = 0;
                st->msg_left -= (unsigned)t;
                p += t;
                k -= t;
                if (!st->msg_left) st->hlen = 0;
            }
        }
    }
}

/* A socket opened with no known owner (a library connect made before its
 * node listens leaves from no address of its own) belongs to the node
 * whose CONNECT goes out on it: so a kill closes it too. */
static inline void scale_net_adopt(scale_sock *e)
{
    unsigned long long id = 0;
    int i;
    if (e->owner >= 0 || !e->dec.nid_ready || !SN.own.owner_of_node) return;
    e->dec.nid_ready = 0;
    for (i = 0; i < 8; i++) id = id << 8 | e->dec.nid[i];
    e->owner = SN.own.owner_of_node(SN.own.ctx, id);
    if (e->owner >= 0) SN.adopted++;
}

static inline void scale_net_del(scale_sock *e)
{
    e->used = 2;
    SN.used--;
    SN.deleted++;
}

static inline int scale_net_owner_dead(int owner) { return owner >= 0 && SN.own.is_dead && SN.own.is_dead(SN.own.ctx, owner); }

/* 1 if the library must not wait on s (a zombie): hosts filter their poll set with it. */
static inline int scale_net_is_zombie(PEER_SOCKET s)
{
    const scale_sock *e = scale_net_find(s);
    return e && e->zombie;
}

static inline HRESULT sn_startup(PVOID ctx) { (void)ctx; return SN.base.pfnStartup(SN.base.pvContext); }
static inline void sn_cleanup(PVOID ctx) { (void)ctx; SN.base.pfnCleanup(SN.base.pvContext); }

static inline HRESULT sn_listen(PVOID ctx, const SOCKADDR_IN6 *a, PEER_SOCKET *ps, SOCKADDR_IN6 *bound)
{
    int owner = a && SN.own.owner_of ? SN.own.owner_of(SN.own.ctx, a) : -1;
    HRESULT hr;
    (void)ctx;
    if (scale_net_owner_dead(owner)) return E_FAIL;
    hr = SN.base.pfnListen(SN.base.pvContext, a, ps, bound);
    if (SUCCEEDED(hr)) scale_net_add(*ps, owner, 1);
    return hr;
}

static inline HRESULT sn_accept(PVOID ctx, PEER_SOCKET l, PEER_SOCKET *ps, SOCKADDR_IN6 *remote)
{
    scale_sock *e = scale_net_find(l);
    HRESULT hr;
    (void)ctx;
    if (e && e->zombie) return S_FALSE;
    hr = SN.base.pfnAccept(SN.base.pvContext, l, ps, remote);
    if (hr == S_OK) scale_net_add(*ps, e ? e->owner : -1, 0);
    return hr;
}

static inline HRESULT sn_connect_from(PVOID ctx, const SOCKADDR_IN6 *from, const SOCKADDR_IN6 *to, PEER_SOCKET *ps)
{
    int owner = from && SN.own.owner_of ? SN.own.owner_of(SN.own.ctx, from) : -1;
    HRESULT hr;
    (void)ctx;
    if (owner < 0 && SN.actor >= 0) { /* PeerGraphConnect before the node listens: leave from its address all the same */
        owner = SN.actor;
        if (SN.own.addr_of) from = SN.own.addr_of(SN.own.ctx, owner);
    }
    if (scale_net_owner_dead(owner)) {
        /* A dead node reaches nobody.  Its connect neither completes nor
         * fails: a connect failing at once while the graph has no neighbor
         * makes the library retry at once, with no delay, so a dead graph
         * would spin (and on the fake network's frozen clock never return). */
        PEER_SOCKET z = SN.ops.new_zombie ? SN.ops.new_zombie(SN.ops.ctx) : PEER_INVALID_SOCKET;
        if (z == PEER_INVALID_SOCKET) return PEER_E_CONNECTION_FAILED;
        {
            scale_sock *e = scale_net_add(z, owner, 0);
            e->zombie = 1;
            e->fresh = 1;
        }
        *ps = z;
        return S_FALSE;
    }
    if (SN.base.pfnConnectFrom) hr = SN.base.pfnConnectFrom(SN.base.pvContext, from, to, ps);
    else hr = SN.base.pfnConnect(SN.base.pvContext, to, ps);
    if (SUCCEEDED(hr)) scale_net_add(*ps, owner, 0);
    return hr;
}

static inline HRESULT sn_connect(PVOID ctx, const SOCKADDR_IN6 *to, PEER_SOCKET *ps) { return sn_connect_from(ctx, NULL, to, ps); }

static inline HRESULT sn_connect_result(PVOID ctx, PEER_SOCKET s)
{
    const scale_sock *e = scale_net_find(s);
    (void)ctx;
    if (e && e->zombie) return S_FALSE;
    return SN.base.pfnConnectResult(SN.base.pvContext, s);
}

static inline long sn_send(PVOID ctx, PEER_SOCKET s, const void *pv, ULONG cb)
{
    scale_sock *e = scale_net_find(s);
    long k;
    (void)ctx;
    if (e && e->zombie) { SN.zombie_bytes += cb; return cb ? (long)cb : PEER_NET_FAILED; }
    k = SN.base.pfnSend(SN.base.pvContext, s, pv, cb);
    if (k > 0) {
        SN.bytes_sent += (unsigned long long)k;
        SN.send_calls++;
        if (e) {
            scale_net_account(&e->dec, (const unsigned char *)pv, (size_t)k);
            scale_net_adopt(e);
        }
    }
    return k;
}

static inline long sn_sendv(PVOID ctx, PEER_SOCKET s, const PEER_NET_BUF *b, ULONG n)
{
    scale_sock *e = scale_net_find(s);
    long k;
    (void)ctx;
    if (e && e->zombie) {
        unsigned long long t = 0;
        ULONG i;
        for (i = 0; i < n; i++) t += b[i].cb;
        SN.zombie_bytes += t;
        return t ? (long)t : PEER_NET_FAILED;
    }
    if (SN.base.pfnSendV) k = SN.base.pfnSendV(SN.base.pvContext, s, b, n);
    else { /* the base has none: the first piece only (a short write, as allowed) */
        ULONG i = 0;
        while (i < n && !b[i].cb) i++;
        k = i < n ? SN.base.pfnSend(SN.base.pvContext, s, b[i].pv, b[i].cb) : PEER_NET_FAILED;
    }
    if (k > 0) {
        unsigned long long left = (unsigned long long)k;
        ULONG i;
        SN.bytes_sent += left;
        SN.send_calls++;
        for (i = 0; e && i < n && left; i++) {
            size_t t = b[i].cb < left ? b[i].cb : (size_t)left;
            scale_net_account(&e->dec, (const unsigned char *)b[i].pv, t);
            scale_net_adopt(e);
            left -= t;
        }
    }
    return k;
}

static inline long sn_recv(PVOID ctx, PEER_SOCKET s, void *pv, ULONG cb)
{
    const scale_sock *e = scale_net_find(s);
    (void)ctx;
    if (e && e->zombie) return PEER_NET_WOULDBLOCK;
    return SN.base.pfnRecv(SN.base.pvContext, s, pv, cb);
}

static inline HRESULT sn_local_address(PVOID ctx, PEER_SOCKET s, SOCKADDR_IN6 *a)
{
    const scale_sock *e = scale_net_find(s);
    (void)ctx;
    if (e && e->zombie) return E_FAIL;
    return SN.base.pfnLocalAddress(SN.base.pvContext, s, a);
}

static inline void sn_shutdown_send(PVOID ctx, PEER_SOCKET s)
{
    const scale_sock *e = scale_net_find(s);
    (void)ctx;
    if (e && e->zombie) return;
    SN.base.pfnShutdownSend(SN.base.pvContext, s);
}

static inline void sn_close(PVOID ctx, PEER_SOCKET s)
{
    scale_sock *e = scale_net_find(s);
    (void)ctx;
    if (e && e->zombie) SN.ops.close_zombie(SN.ops.ctx, s, e->fresh);
    else SN.base.pfnClose(SN.base.pvContext, s);
    if (e) scale_net_del(e);
}

static inline HRESULT sn_wait(PVOID ctx, const PEER_POLL_FD *want, ULONG n, PEER_POLL_FD *ready, ULONG *pcReady, DWORD ms)
{
    ULONG i, k = 0;
    (void)ctx;
    if (n > SN.wcap) {
        free(SN.wscratch);
        SN.wcap = n + 256;
        SN.wscratch = (PEER_POLL_FD *)malloc(SN.wcap * sizeof *SN.wscratch);
        if (!SN.wscratch) { SN.wcap = 0; return E_OUTOFMEMORY; }
    }
    for (i = 0; i < n; i++)
        if (!scale_net_is_zombie(want[i].s)) SN.wscratch[k++] = want[i];
    return SN.base.pfnWait(SN.base.pvContext, SN.wscratch, k, ready, pcReady, ms);
}

static inline ULONGLONG sn_tick(PVOID ctx) { (void)ctx; return SN.base.pfnTickCount(SN.base.pvContext); }
static inline ULONGLONG sn_utc(PVOID ctx) { (void)ctx; return SN.base.pfnUtcNow(SN.base.pvContext); }
static inline HRESULT sn_random(PVOID ctx, void *pv, ULONG cb) { (void)ctx; return SN.base.pfnRandom(SN.base.pvContext, pv, cb); }

/* Installs the wrapper around *base (PeerGraphSetNetShim: call before
 * PeerGraphStartup).  Returns PeerGraphSetNetShim's result. */
static inline HRESULT scale_net_install(const PEER_NET_SHIM *base, const scale_net_ops *ops)
{
    PEER_NET_SHIM s;
    memset(&SN, 0, sizeof SN);
    SN.base = *base;
    SN.ops = *ops;
    SN.actor = -1;
    memset(&s, 0, sizeof s);
    s.dwSize = sizeof s;
    s.pvContext = &SN;
    s.pfnStartup = sn_startup;
    s.pfnCleanup = sn_cleanup;
    s.pfnListen = sn_listen;
    s.pfnAccept = sn_accept;
    s.pfnConnect = sn_connect;
    s.pfnConnectResult = sn_connect_result;
    s.pfnSend = sn_send;
    s.pfnRecv = sn_recv;
    s.pfnLocalAddress = sn_local_address;
    s.pfnShutdownSend = sn_shutdown_send;
    s.pfnClose = sn_close;
    s.pfnWait = sn_wait;
    s.pfnTickCount = sn_tick;
    s.pfnUtcNow = sn_utc;
    s.pfnRandom = sn_random;
    s.pfnSendV = sn_sendv;
    s.pfnConnectFrom = sn_connect_from;
    return PeerGraphSetNetShim(&s);
}

/* Frees the socket table (after PeerGraphShutdown). */
static inline void scale_net_free(void)
{
    free(SN.tab);
    free(SN.wscratch);
    SN.tab = NULL;
    SN.wscratch = NULL;
    SN.cap = SN.used = SN.deleted = 0;
    SN.wcap = 0;
}

/* Makes every socket of a dead node (is_dead) a zombie; returns how many. */
static inline int scale_net_kill_dead(void)
{
    size_t i;
    int k = 0;
    for (i = 0; i < SN.cap; i++) {
        scale_sock *e = &SN.tab[i];
        if (e->used != 1 || e->zombie || !scale_net_owner_dead(e->owner)) continue;
        SN.ops.kill_socket(SN.ops.ctx, e->s);
        e->zombie = 1;
        k++;
    }
    return k;
}

/* ========================================================================= */
/* 2. scale_graph: the nodes                                                 */
/* ========================================================================= */

/* One loop step and the clock (see section 3). */
typedef struct scale_driver {
    void *ctx;
    /* Waits at most maxWaitMs for the library's sockets (zombies left out:
     * scale_net_is_zombie) or its next deadline, then PeerGraphService. */
    void (*step)(void *ctx, int maxWaitMs);
    /* The clock given to PeerGraphService, in microseconds. */
    long long (*now_us)(void *ctx);
} scale_driver;

enum { SN_CLOSED = 0, SN_OPEN, SN_JOINING, SN_LIVE, SN_DEAD };

#define SCALE_MAX_DEG 16  /* neighbor slots read per node in a mesh check */

typedef struct scale_node {
    HGRAPH h;
    HPEEREVENT ev;
    wchar_t peer[24], db[40];
    SOCKADDR_IN6 own;       /* its address, port 0 */
    PEER_ADDRESS addr;      /* where it listens (valid in SN_LIVE) */
    ULONGLONG id;           /* node ID */
    int state;              /* SN_* */
    ULONGLONG cid;          /* its join attempt */
    int attempts;           /* join attempts started */
    long long t_join, t_listen; /* us: join started, listening (presence published) */
    long long t_attempt;    /* us: the current join attempt started */
    int known;              /* other nodes whose presence it holds (NODE_CHANGED in - out) */
    long long t_mark;       /* first NODE_CHANGED matching the watch (-1: none yet) */
    long long t_rec;        /* the watched record arrived (-1: not yet) */
    int recs;               /* RECORD_CHANGED ADDED of rec_type seen */
    int deg;                /* live neighbors at the last mesh check */
} scale_node;

typedef struct scale_mesh {
    int alive;       /* SN_LIVE nodes */
    int min_deg, max_deg;
    int below_min;   /* live nodes with fewer than PEER_MIN_NEIGHBORS live neighbors */
    int isolated;    /* ... with none */
    int above_max;
    int components, largest;
    int links;       /* distinct live-live links */
    int ok;          /* every live node 2..7 neighbors, one component */
} scale_mesh;

typedef struct scale_graph {
    scale_node *v;
    int n, cap;               /* nodes in use (indexes 0..n-1), room */
    wchar_t gid[40];
    PEER_MAINTENANCE_PROFILE profile;
    int net;                  /* address block: 127.<net>.x.y */
    const scale_driver *drv;
    unsigned long long rng;
    GUID rec_type;            /* application record type counted in recs */
    int parallel;             /* joins in flight at once */
    /* watches, time-stamped by scale_drain */
    ULONGLONG watch_node;     /* NODE_CHANGED about this node ID (0: none) ... */
    PEER_NODE_CHANGE_TYPE watch_ct; /* ... of this change type -> t_mark */
    GUID watch_rec;           /* RECORD_CHANGED ADDED of this ID -> t_rec */
    int watch_rec_on;
    /* node ID -> index */
    ULONGLONG *idk;
    int *idv;
    size_t idcap;
    /* mesh scratch */
    int *adj, *uf;
    long nbr_events;          /* NEIGHBOR_CONNECTION events seen */
    void (*on_s6_late)(struct scale_graph *g); /* S6: called once if a survivor is below 2 neighbors 1 s after the kill */
    /* S8: called before each join (last -1) and after it with its start and the last node's latency (us, driver clock) */
    void (*on_s8_join)(struct scale_graph *g, int trial, long long t0, long long last);
    /* optional: sees every event scale_drain pops (after the harness's own use) */
    void (*on_event)(struct scale_graph *g, int node, const PEER_GRAPH_EVENT_DATA *e);
    void *user;
    long join_failures;       /* join attempts that failed (retried elsewhere) */
    /* one graph spread over several processes (bench/scale --procs): each
     * holds a scale_graph of its own nodes; the others are reached by address */
    int no_create;            /* node 0 joins like the others: the graph is created elsewhere */
    int name_mul, name_add;   /* node i's peer name is "n<i * name_mul + name_add>" (0, 0: "n<i>") */
    int extra_live;           /* live nodes elsewhere (scale_presence_complete counts them) */
    /* optional: a join target for node i elsewhere (1, *to set) or 0: a local one */
    int (*pick_remote)(struct scale_graph *g, int i, PEER_ADDRESS *to);
    /* S6: the lowest live node ID (the signature owner once settled) is
     * among the victims (1), spared (-1), or as the draw falls (0) */
    int s6_owner;
} scale_graph;

static inline void *scale_xcalloc(size_t n, size_t cb)
{
    void *p = calloc(n ? n : 1, cb ? cb : 1);
    if (!p) { fprintf(stderr, "scale_harness: out of memory\n"); exit(2); }
    return p;
}

static inline void scale_die(const char *what, int i, HRESULT hr)
{
    fprintf(stderr, "scale_harness: %s (node %d) failed: 0x%08lX\n", what, i, (unsigned long)(DWORD)hr);
    exit(2);
}

static inline unsigned scale_rand(scale_graph *g)
{
    g->rng ^= g->rng >> 12;
    g->rng ^= g->rng << 25;
    g->rng ^= g->rng >> 27;
    return (unsigned)((g->rng * 0x2545F4914F6CDD1DULL) >> 32);
}
static inline int scale_rand_below(scale_graph *g, int n) { return n > 0 ? (int)(scale_rand(g) % (unsigned)n) : 0; }

static inline long long scale_now(const scale_graph *g) { return g->drv->now_us(g->drv->ctx); }
static inline void scale_step(const scale_graph *g, int maxWaitMs) { g->drv->step(g->drv->ctx, maxWaitMs); }

/* ::ffff:127.net.(i/250).(1+i%250), port 0 */
static inline SOCKADDR_IN6 scale_addr(int net, int i)
{
    SOCKADDR_IN6 a;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr.s6_addr[10] = 0xFF;
    a.sin6_addr.s6_addr[11] = 0xFF;
    a.sin6_addr.s6_addr[12] = 127;
    a.sin6_addr.s6_addr[13] = (unsigned char)net;
    a.sin6_addr.s6_addr[14] = (unsigned char)(i / 250);
    a.sin6_addr.s6_addr[15] = (unsigned char)(1 + i % 250);
    return a;
}

static inline int scale_owner_of(void *ctx, const SOCKADDR_IN6 *a)
{
    const scale_graph *g = (const scale_graph *)ctx;
    const unsigned char *b = a->sin6_addr.s6_addr;
    static const unsigned char pre[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    int i;
    if (a->sin6_family != AF_INET6 || memcmp(b, pre, 12) || b[12] != 127 || b[13] != g->net || b[15] == 0 || b[15] > 250)
        return -1;
    i = b[14] * 250 + b[15] - 1;
    return i < g->n ? i : -1;
}
static inline int scale_is_dead(void *ctx, int i)
{
    const scale_graph *g = (const scale_graph *)ctx;
    return i >= 0 && i < g->n && g->v[i].state == SN_DEAD;
}
static inline const SOCKADDR_IN6 *scale_addr_of(void *ctx, int i)
{
    const scale_graph *g = (const scale_graph *)ctx;
    return i >= 0 && i < g->n ? &g->v[i].own : NULL;
}

static inline void scale_id_put(scale_graph *g, ULONGLONG id, int idx)
{
    size_t m, i;
    if (!g->idcap || g->idcap < (size_t)g->cap * 2) {
        size_t oc = g->idcap, nc = 64, j;
        ULONGLONG *ok = g->idk;
        int *ov = g->idv;
        while (nc < (size_t)g->cap * 2 + 2) nc *= 2;
        g->idk = (ULONGLONG *)scale_xcalloc(nc, sizeof *g->idk);
        g->idv = (int *)scale_xcalloc(nc, sizeof *g->idv);
        g->idcap = nc;
        for (j = 0; j < oc; j++)
            if (ok[j]) scale_id_put(g, ok[j], ov[j]);
        free(ok);
        free(ov);
    }
    m = g->idcap - 1;
    for (i = (size_t)(id * 0x9E3779B97F4A7C15ULL >> 20) & m; g->idk[i] && g->idk[i] != id; i = (i + 1) & m) {}
    g->idk[i] = id;
    g->idv[i] = idx;
}

/* Index of the node with this node ID, or -1. */
static inline int scale_index_of_id(const scale_graph *g, ULONGLONG id)
{
    size_t m, i;
    if (!g->idcap || !id) return -1;
    m = g->idcap - 1;
    for (i = (size_t)(id * 0x9E3779B97F4A7C15ULL >> 20) & m; g->idk[i]; i = (i + 1) & m)
        if (g->idk[i] == id) return g->idv[i];
    return -1;
}
static inline int scale_owner_of_node(void *ctx, unsigned long long node)
{
    return scale_index_of_id((const scale_graph *)ctx, (ULONGLONG)node);
}

/* Sets up an empty scale_graph for up to cap nodes of graph gid, in address
 * block net (1..254: distinct per graph of a run, so no old socket or
 * TIME_WAIT is ever confused with a new one), under one maintenance profile.
 * Makes it the owner table of scale_net. */
static inline void scale_init(scale_graph *g, int cap, const wchar_t *gid, int net, PEER_MAINTENANCE_PROFILE profile,
                       const scale_driver *drv, unsigned long long seed, const GUID *recType)
{
    memset(g, 0, sizeof *g);
    g->cap = cap;
    g->v = (scale_node *)scale_xcalloc((size_t)cap, sizeof *g->v);
    g->adj = (int *)scale_xcalloc((size_t)cap * SCALE_MAX_DEG, sizeof *g->adj);
    g->uf = (int *)scale_xcalloc((size_t)cap, sizeof *g->uf);
    swprintf(g->gid, sizeof g->gid / sizeof g->gid[0], L"%ls", gid);
    g->net = net;
    g->profile = profile;
    g->drv = drv;
    g->rng = seed * 2654435761ULL + 1;
    if (recType) g->rec_type = *recType;
    g->parallel = 16;
    SN.own.ctx = g;
    SN.own.owner_of = scale_owner_of;
    SN.own.is_dead = scale_is_dead;
    SN.own.addr_of = scale_addr_of;
    SN.own.owner_of_node = scale_owner_of_node;
}

/* Frees it (the graphs must be closed: scale_close_all). */
static inline void scale_free(scale_graph *g)
{
    if (SN.own.ctx == g) memset(&SN.own, 0, sizeof SN.own);
    free(g->v); free(g->adj); free(g->uf); free(g->idk); free(g->idv);
    memset(g, 0, sizeof *g);
}

/* Opens node i (index g->n; node 0 creates the graph), with the profile set
 * and one event registration: NODE_CHANGED, NEIGHBOR_CONNECTION and
 * RECORD_CHANGED of rec_type.  Its database is deleted first. */
static inline int scale_open(scale_graph *g)
{
    int i = g->n;
    scale_node *x;
    HRESULT hr;
    PEER_GRAPH_EVENT_REGISTRATION regs[3];
    PPEER_NODE_INFO ni = NULL;
    if (i >= g->cap) return -1;
    x = &g->v[i];
    memset(x, 0, sizeof *x);
    g->n++;
    swprintf(x->peer, sizeof x->peer / sizeof x->peer[0], L"n%d", g->name_mul ? i * g->name_mul + g->name_add : i);
    swprintf(x->db, sizeof x->db / sizeof x->db[0], L"sc%d-%d", g->net, i);
    x->own = scale_addr(g->net, i);
    x->t_mark = x->t_rec = -1;
    PeerGraphDelete(g->gid, x->peer, x->db);
    if (i == 0 && !g->no_create) {
        PEER_GRAPH_PROPERTIES p;
        memset(&p, 0, sizeof p);
        p.dwSize = sizeof p;
        p.dwScope = PEER_GRAPH_SCOPE_GLOBAL;
        p.pwzGraphId = g->gid;
        p.pwzCreatorId = x->peer;
        p.cPresenceMax = (ULONG)-1; /* every node publishes presence */
        if (FAILED(hr = PeerGraphCreate(&p, x->db, NULL, &x->h))) scale_die("PeerGraphCreate", i, hr);
    } else if ((hr = PeerGraphOpen(g->gid, x->peer, x->db, NULL, 0, NULL, &x->h)) != PEER_S_GRAPH_DATA_CREATED)
        scale_die("PeerGraphOpen", i, hr);
    if (FAILED(hr = PeerGraphSetMaintenanceProfile(x->h, g->profile))) scale_die("PeerGraphSetMaintenanceProfile", i, hr);
    regs[0].eventType = PEER_GRAPH_EVENT_NODE_CHANGED;
    regs[0].pType = NULL;
    regs[1].eventType = PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION;
    regs[1].pType = NULL;
    regs[2].eventType = PEER_GRAPH_EVENT_RECORD_CHANGED;
    regs[2].pType = &g->rec_type;
    if (FAILED(hr = PeerGraphRegisterEvent(x->h, NULL, 3, regs, &x->ev))) scale_die("PeerGraphRegisterEvent", i, hr);
    if (FAILED(hr = PeerGraphGetNodeInfo(x->h, 0, &ni))) scale_die("PeerGraphGetNodeInfo", i, hr);
    x->id = ni->ullNodeId;
    PeerGraphFreeData(ni);
    scale_id_put(g, x->id, i);
    x->state = SN_OPEN;
    return i;
}

/* Node i listens on its own address (port 0); presence follows. */
static inline void scale_listen(scale_graph *g, int i)
{
    scale_node *x = &g->v[i];
    PPEER_NODE_INFO ni = NULL;
    HRESULT hr;
    memset(&x->addr, 0, sizeof x->addr);
    x->addr.dwSize = sizeof x->addr;
    x->addr.sin6 = x->own;
    if (FAILED(hr = PeerGraphListenAddress(x->h, &x->addr))) scale_die("PeerGraphListenAddress", i, hr);
    if (FAILED(hr = PeerGraphGetNodeInfo(x->h, 0, &ni)) || ni->cAddresses < 1) scale_die("PeerGraphGetNodeInfo", i, hr);
    x->addr = ni->pAddresses[0];
    PeerGraphFreeData(ni);
    x->state = SN_LIVE;
    x->t_listen = scale_now(g);
}

/* Starts node i's join towards a random live node (PeerGraphConnect with
 * scale_net's actor set, so the socket is known to be node i's). */
static inline void scale_join_start(scale_graph *g, int i)
{
    scale_node *x = &g->v[i];
    int t, tries, again;
    HRESULT hr;
    PEER_ADDRESS far;
    for (again = 0;; again++) {
        PEER_ADDRESS *to = &far;
        if (!g->pick_remote || !g->pick_remote(g, i, &far)) {
            for (tries = 0;; tries++) {
                t = scale_rand_below(g, g->n);
                if (t != i && g->v[t].state == SN_LIVE) break;
                if (tries > 100000) { fprintf(stderr, "scale_harness: no live node to join\n"); exit(2); }
            }
            to = &g->v[t].addr;
        }
        SN.actor = i;
        hr = PeerGraphConnect(x->h, NULL, to, &x->cid);
        SN.actor = -1;
        /* a retried join may pick a node the joiner is already linked or
         * linking to (its first attempt, or its own maintenance): another */
        if (hr != PEER_E_ALREADY_EXISTS || again >= 16) break;
    }
    if (FAILED(hr) && hr != PEER_E_ALREADY_EXISTS) scale_die("PeerGraphConnect", i, hr);
    x->t_attempt = scale_now(g);
    if (!x->attempts++) x->t_join = x->t_attempt;
    x->state = SN_JOINING;
}

/* Pops every queued event of every open graph (dead ones too: their queues
 * must not fill), time-stamping what the watches ask for. */
static inline void scale_drain(scale_graph *g)
{
    int i;
    long long t = -1;
    for (i = 0; i < g->n; i++) {
        scale_node *x = &g->v[i];
        PPEER_GRAPH_EVENT_DATA d = NULL;
        if (!x->h) continue;
        while (PeerGraphGetEventData(x->ev, &d) == S_OK) {
            switch (d->eventType) {
            case PEER_GRAPH_EVENT_NODE_CHANGED:
                if (d->nodeChangeData.changeType == PEER_NODE_CHANGE_CONNECTED) x->known++;
                else if (d->nodeChangeData.changeType == PEER_NODE_CHANGE_DISCONNECTED) x->known--;
                if (g->watch_node && d->nodeChangeData.ullNodeId == g->watch_node &&
                    d->nodeChangeData.changeType == g->watch_ct && x->t_mark < 0) {
                    if (t < 0) t = scale_now(g);
                    x->t_mark = t;
                }
                break;
            case PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION:
                g->nbr_events++;
                if (x->state == SN_JOINING && d->connectionChangeData.ullConnectionId == x->cid &&
                    d->connectionChangeData.status == PEER_CONNECTION_FAILED) {
                    if (d->connectionChangeData.ullNextConnectionId) x->cid = d->connectionChangeData.ullNextConnectionId;
                    else {
                        x->state = SN_OPEN; /* try elsewhere */
                        g->join_failures++;
                    }
                }
                break;
            case PEER_GRAPH_EVENT_RECORD_CHANGED:
                if (d->recordChangeData.changeType == PEER_RECORD_ADDED) {
                    x->recs++;
                    if (g->watch_rec_on && x->t_rec < 0 &&
                        !memcmp(&d->recordChangeData.recordId, &g->watch_rec, sizeof g->watch_rec)) {
                        if (t < 0) t = scale_now(g);
                        x->t_rec = t;
                    }
                }
                break;
            default:
                break;
            }
            if (g->on_event) g->on_event(g, i, d);
            PeerGraphFreeData(d);
        }
    }
}

/* One loop step, then the event drain. */
static inline void scale_pump(scale_graph *g, int maxWaitMs)
{
    scale_step(g, maxWaitMs);
    scale_drain(g);
}

/* Runs the loop for ms milliseconds of the driver's clock, each wait at most
 * maxWaitMs (the library's deadlines wake it sooner). */
static inline void scale_run_ms_ex(scale_graph *g, int ms, int maxWaitMs)
{
    long long end = scale_now(g) + (long long)ms * 1000;
    for (;;) {
        long long left = end - scale_now(g);
        if (left <= 0) break;
        scale_pump(g, left / 1000 < maxWaitMs ? (int)(left / 1000) + 1 : maxWaitMs);
    }
}

/* Runs the loop for ms milliseconds, waking at least every 5 ms. */
static inline void scale_run_ms(scale_graph *g, int ms) { scale_run_ms_ex(g, ms, 5); }

#define SCALE_JOIN_RETRY_MS 15000 /* a join attempt not synchronized by then is started again elsewhere */

/* Advances joins: starts up to g->parallel joins of SN_OPEN nodes in
 * [from, to), makes synchronized joiners listen.  Returns the nodes of
 * [from, to) not yet live. */
static inline int scale_join_tick(scale_graph *g, int from, int to)
{
    int i, inflight = 0, left = 0;
    long long now = scale_now(g);
    for (i = from; i < to; i++) {
        scale_node *x = &g->v[i];
        if (x->state == SN_JOINING) {
            DWORD st = 0;
            PeerGraphGetStatus(x->h, &st);
            if (st & PEER_GRAPH_STATUS_SYNCHRONIZED) scale_listen(g, i);
            else if (now - x->t_attempt > SCALE_JOIN_RETRY_MS * 1000LL) {
                x->state = SN_OPEN;
                g->join_failures++;
            } else
                inflight++;
        }
    }
    for (i = from; i < to; i++) {
        scale_node *x = &g->v[i];
        if (x->state == SN_OPEN && inflight < g->parallel) {
            scale_join_start(g, i);
            inflight++;
        }
        if (x->state != SN_LIVE) left++;
    }
    return left;
}

/* Mesh check over the live nodes: neighbor links between live nodes, read
 * with PeerGraphEnumConnections; components with union-find. */
static inline int scale_uf_find(int *uf, int a)
{
    while (uf[a] != a) { uf[a] = uf[uf[a]]; a = uf[a]; }
    return a;
}

static inline void scale_mesh_check(scale_graph *g, scale_mesh *m)
{
    int i, k;
    memset(m, 0, sizeof *m);
    m->min_deg = 1 << 30;
    for (i = 0; i < g->n; i++) {
        scale_node *x = &g->v[i];
        HPEERENUM en;
        PVOID *items = NULL;
        ULONG c = SCALE_MAX_DEG;
        g->uf[i] = i;
        x->deg = 0;
        if (x->state != SN_LIVE) continue;
        m->alive++;
        if (FAILED(PeerGraphEnumConnections(x->h, PEER_CONNECTION_NEIGHBOR, &en))) continue;
        if (SUCCEEDED(PeerGraphGetNextItem(en, &c, &items)) && items) {
            for (k = 0; k < (int)c; k++) {
                int j = scale_index_of_id(g, ((const PEER_CONNECTION_INFO *)items[k])->ullNodeId);
                if (j >= 0 && j != i && g->v[j].state == SN_LIVE && x->deg < SCALE_MAX_DEG)
                    g->adj[(size_t)i * SCALE_MAX_DEG + x->deg++] = j;
            }
            PeerGraphFreeData(items);
        }
        PeerGraphEndEnumeration(en);
    }
    for (i = 0; i < g->n; i++) {
        scale_node *x = &g->v[i];
        if (x->state != SN_LIVE) continue;
        if (x->deg < m->min_deg) m->min_deg = x->deg;
        if (x->deg > m->max_deg) m->max_deg = x->deg;
        if (x->deg < PEER_MIN_NEIGHBORS) m->below_min++;
        if (x->deg == 0) m->isolated++;
        if (x->deg > PEER_MAX_NEIGHBORS) m->above_max++;
        for (k = 0; k < x->deg; k++) {
            int j = g->adj[(size_t)i * SCALE_MAX_DEG + k], a = scale_uf_find(g->uf, i), b = scale_uf_find(g->uf, j);
            if (j > i) m->links++;
            if (a != b) g->uf[a] = b;
        }
    }
    {
        int *size = (int *)scale_xcalloc((size_t)g->n, sizeof(int));
        for (i = 0; i < g->n; i++) {
            int r;
            if (g->v[i].state != SN_LIVE) continue;
            r = scale_uf_find(g->uf, i);
            if (!size[r]++) m->components++;
            if (size[r] > m->largest) m->largest = size[r];
        }
        free(size);
    }
    if (!m->alive) m->min_deg = 0;
    m->ok = m->alive > 0 && m->below_min == 0 && m->above_max == 0 && m->components == 1;
}

/* Every live node holds the presence of every other live node (by the
 * NODE_CHANGED count; dead nodes not yet seen gone count against it). */
static inline int scale_presence_complete(const scale_graph *g)
{
    int i, alive = g->extra_live;
    for (i = 0; i < g->n; i++) alive += g->v[i].state == SN_LIVE;
    for (i = 0; i < g->n; i++)
        if (g->v[i].state == SN_LIVE && g->v[i].known != alive - 1) return 0;
    return 1;
}

/* Builds the graph: opens nodes up to `count` (node 0 creates and listens),
 * joins them all (parallel at a time, each to a random live node), then
 * runs until the mesh is whole (every node 2..7 neighbors, one component)
 * and every node holds every presence.  checkMs: mesh checks at most this
 * often.  Returns the driver time taken (us), or -1 on timeout (*m: the
 * last mesh check). */
static inline long long scale_build(scale_graph *g, int count, int checkMs, long long timeoutMs, scale_mesh *m)
{
    long long t0 = scale_now(g), tcheck = 0;
    int i;
    while (g->n < count) scale_open(g);
    if (g->v[0].state == SN_OPEN) scale_listen(g, 0);
    memset(m, 0, sizeof *m);
    for (;;) {
        long long t = scale_now(g);
        int left = scale_join_tick(g, 0, g->n);
        if (t - t0 > timeoutMs * 1000) return -1;
        scale_pump(g, 5);
        if (left) continue;
        if (t - tcheck >= (long long)checkMs * 1000) {
            tcheck = t;
            if (!scale_presence_complete(g)) continue;
            scale_mesh_check(g, m);
            if (m->ok) break;
        }
    }
    for (i = 0; i < g->n; i++) g->v[i].t_mark = -1;
    return scale_now(g) - t0;
}

/* Sockets created with no known owner (the library followed a referral or
 * connected before its node listened) get one: the connection info of the
 * node at the other end lists the socket's local address as the remote. */
static inline int scale_resolve_owners(scale_graph *g)
{
    typedef struct { SOCKADDR_IN6 a; int owner; } seen_t;
    seen_t *seen;
    int ns = 0, i, fixed = 0;
    size_t k;
    int unknown = 0;
    for (k = 0; k < SN.cap; k++)
        if (SN.tab[k].used == 1 && SN.tab[k].owner < 0 && !SN.tab[k].listener && !SN.tab[k].zombie) unknown++;
    if (!unknown) return 0;
    seen = (seen_t *)scale_xcalloc((size_t)g->n * SCALE_MAX_DEG, sizeof *seen);
    for (i = 0; i < g->n; i++) {
        HPEERENUM en;
        PVOID *items = NULL;
        ULONG c = SCALE_MAX_DEG, j;
        if (!g->v[i].h || g->v[i].state == SN_DEAD) continue;
        if (FAILED(PeerGraphEnumConnections(g->v[i].h, PEER_CONNECTION_NEIGHBOR | PEER_CONNECTION_DIRECT, &en))) continue;
        if (SUCCEEDED(PeerGraphGetNextItem(en, &c, &items)) && items) {
            for (j = 0; j < c; j++) {
                const PEER_CONNECTION_INFO *ci = (const PEER_CONNECTION_INFO *)items[j];
                seen[ns].a = ci->address.sin6;
                seen[ns].owner = scale_index_of_id(g, ci->ullNodeId);
                ns++;
            }
            PeerGraphFreeData(items);
        }
        PeerGraphEndEnumeration(en);
    }
    for (k = 0; k < SN.cap; k++) {
        scale_sock *e = &SN.tab[k];
        SOCKADDR_IN6 la;
        if (e->used != 1 || e->owner >= 0 || e->listener || e->zombie) continue;
        if (FAILED(SN.base.pfnLocalAddress(SN.base.pvContext, e->s, &la))) continue;
        for (i = 0; i < ns; i++)
            if (seen[i].owner >= 0 && seen[i].a.sin6_port == la.sin6_port &&
                !memcmp(&seen[i].a.sin6_addr, &la.sin6_addr, sizeof la.sin6_addr)) {
                e->owner = seen[i].owner;
                fixed++;
                break;
            }
    }
    free(seen);
    return unknown - fixed;
}

/* Kills the nodes idx[0..k) at once: they are marked dead and every socket
 * they own becomes a zombie in the same instant.  Their graphs stay open
 * (close them with scale_close_all).  Returns the sockets killed. */
static inline int scale_kill(scale_graph *g, const int *idx, int k)
{
    int i;
    for (i = 0; i < k; i++) g->v[idx[i]].state = SN_DEAD;
    return scale_net_kill_dead();
}

/* k distinct random live nodes into out (k <= live nodes). */
static inline int scale_pick_live(scale_graph *g, int *out, int k)
{
    int *pool = (int *)scale_xcalloc((size_t)g->n, sizeof(int)), np = 0, i;
    for (i = 0; i < g->n; i++)
        if (g->v[i].state == SN_LIVE) pool[np++] = i;
    if (k > np) k = np;
    for (i = 0; i < k; i++) {
        int r = i + scale_rand_below(g, np - i), t = pool[i];
        pool[i] = pool[r];
        pool[r] = t;
        out[i] = pool[i];
    }
    free(pool);
    return k;
}

/* Closes every graph (dead ones too), lets the DISCONNECTs go, deletes the
 * databases. */
static inline void scale_close_all(scale_graph *g)
{
    int i;
    for (i = 0; i < g->n; i++)
        if (g->v[i].h) { PeerGraphClose(g->v[i].h); g->v[i].h = NULL; }
    scale_run_ms(g, 300);
    for (i = 0; i < g->n; i++) {
        PeerGraphDelete(g->gid, g->v[i].peer, g->v[i].db);
        g->v[i].state = SN_CLOSED;
    }
}

/* ========================================================================= */
/* 2b. scenarios: S8 (presence of a joiner, a killed node seen gone) and S6  */
/* (a fraction killed at once).  Times are the driver's, in microseconds.    */
/* ========================================================================= */

static inline int scale_cmp_ll(const void *a, const void *b)
{
    long long x = *(const long long *)a, y = *(const long long *)b;
    return x < y ? -1 : x > y;
}
static inline void scale_sort_ll(long long *v, int n) { if (n > 1) qsort(v, (size_t)n, sizeof *v, scale_cmp_ll); }

/* Nearest-rank percentile (per mille) of n sorted values; 0 if n == 0. */
static inline long long scale_pctile(const long long *v, int n, int pm)
{
    long long k = ((long long)n * pm + 999) / 1000;
    if (n == 0) return 0;
    if (k < 1) k = 1;
    return v[k - 1];
}

/* Peer time now as graph h sees it (for record expirations). */
static inline ULONGLONG scale_peer_now(HGRAPH h)
{
    const PEER_NET_SHIM *sh = SN.base.pfnUtcNow ? &SN.base : PeerGraphGetPlatformNetShim();
    ULONGLONG utc = sh->pfnUtcNow(sh->pvContext);
    FILETIME u, p;
    HRESULT hr;
    u.dwLowDateTime = (DWORD)utc;
    u.dwHighDateTime = (DWORD)(utc >> 32);
    if (FAILED(hr = PeerGraphUniversalTimeToPeerTime(h, &u, &p))) scale_die("PeerGraphUniversalTimeToPeerTime", -1, hr);
    return ((ULONGLONG)p.dwHighDateTime << 32) | p.dwLowDateTime;
}

/* Adds a record of g->rec_type with cb bytes of data (fill byte) at node i,
 * expiring in an hour; *id receives its ID. */
static inline void scale_add_record(scale_graph *g, int i, ULONG cb, unsigned char fill, GUID *id)
{
    PEER_RECORD r;
    ULONGLONG exp = scale_peer_now(g->v[i].h) + 3600ULL * 10000000ULL;
    unsigned char *data = (unsigned char *)scale_xcalloc(cb, 1);
    HRESULT hr;
    memset(data, fill, cb);
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = g->rec_type;
    r.ftExpiration.dwLowDateTime = (DWORD)exp;
    r.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    r.data.cbData = cb;
    r.data.pbData = data;
    if (FAILED(hr = PeerGraphAddRecord(g->v[i].h, &r, id))) scale_die("PeerGraphAddRecord", i, hr);
    free(data);
}

/* S8 figures: latencies in us. */
typedef struct scale_vis {
    int trials, complete;  /* trials; trials where every live node saw it within the limit */
    long long *lat;        /* per (trial, node): from the join start / the kill */
    int nlat;
    long long *lat_pub;    /* joins: per (trial, node) from the joiner's listen (presence published) */
    int npub;
    long long *last;       /* per complete trial: the last node */
    int nlast;
    long long *sync;       /* joins: join start to synchronized and listening */
    int nsync;
    int missing;           /* (trial, node) not seen within the limit */
} scale_vis;

static inline void scale_vis_alloc(scale_vis *r, int trials, int n)
{
    memset(r, 0, sizeof *r);
    r->lat = (long long *)scale_xcalloc((size_t)trials * (size_t)n, sizeof *r->lat);
    r->lat_pub = (long long *)scale_xcalloc((size_t)trials * (size_t)n, sizeof *r->lat_pub);
    r->last = (long long *)scale_xcalloc((size_t)trials, sizeof *r->last);
    r->sync = (long long *)scale_xcalloc((size_t)trials, sizeof *r->sync);
}
static inline void scale_vis_free(scale_vis *r)
{
    free(r->lat); free(r->lat_pub); free(r->last); free(r->sync);
    memset(r, 0, sizeof *r);
}

/* Runs until every live node but `self` has t_mark, or limitMs; joiner >= 0:
 * its join is advanced meanwhile.  1 if all. */
static inline int scale_wait_marks(scale_graph *g, int self, long long limitMs, int joiner)
{
    long long t0 = scale_now(g);
    for (;;) {
        int i, all = 1;
        if (joiner >= 0) scale_join_tick(g, joiner, joiner + 1);
        for (i = 0; i < g->n && all; i++)
            if (i != self && g->v[i].state == SN_LIVE && g->v[i].t_mark < 0) all = 0;
        if (all) return 1;
        if (scale_now(g) - t0 > limitMs * 1000) return 0;
        scale_pump(g, 5);
    }
}

/* S8 (a): `trials` new nodes (room needed in g->cap) join one after another,
 * each to a random live node; per trial, the time from its PeerGraphConnect
 * (and from its listen) until each live node pops NODE_CHANGED CONNECTED for
 * it (limitMs at most), then pauseMs of quiet. */
static inline void scale_s8_join(scale_graph *g, int trials, long long limitMs, int pauseMs, scale_vis *r)
{
    int k, i;
    scale_vis_alloc(r, trials, g->cap);
    for (k = 0; k < trials; k++) {
        int j = scale_open(g), ok;
        long long t0, last = 0;
        long nbr0 = g->nbr_events;
        if (j < 0) break;
        for (i = 0; i < g->n; i++) g->v[i].t_mark = -1;
        g->watch_node = g->v[j].id;
        g->watch_ct = PEER_NODE_CHANGE_CONNECTED;
        if (g->on_s8_join) g->on_s8_join(g, k, scale_now(g), -1);
        scale_join_start(g, j);
        t0 = g->v[j].t_join;
        ok = scale_wait_marks(g, j, limitMs, j);
        r->trials++;
        r->complete += ok;
        if (g->v[j].state == SN_LIVE) r->sync[r->nsync++] = g->v[j].t_listen - t0;
        for (i = 0; i < g->n; i++) {
            if (i == j || g->v[i].state != SN_LIVE) continue;
            if (g->v[i].t_mark < 0) { r->missing++; continue; }
            r->lat[r->nlat++] = g->v[i].t_mark - t0;
            r->lat_pub[r->npub++] = g->v[i].t_mark - g->v[j].t_listen;
            if (g->v[i].t_mark - t0 > last) last = g->v[i].t_mark - t0;
        }
        if (ok) r->last[r->nlast++] = last;
        if (g->on_s8_join) g->on_s8_join(g, k, t0, last);
        if (getenv("SCALE_DEBUG"))
            printf("    S8 join %d: node %d, %d attempt(s), listening %.1f ms after PeerGraphConnect, last node %.1f ms"
                   " after it (%.1f ms after the listen); %ld NEIGHBOR_CONNECTION events meanwhile\n", k, j, g->v[j].attempts,
                   (g->v[j].t_listen - t0) / 1000.0, last / 1000.0, (last - (g->v[j].t_listen - t0)) / 1000.0,
                   g->nbr_events - nbr0);
        g->watch_node = 0;
        scale_run_ms(g, pauseMs);
    }
    scale_sort_ll(r->lat, r->nlat);
    scale_sort_ll(r->lat_pub, r->npub);
    scale_sort_ll(r->last, r->nlast);
    scale_sort_ll(r->sync, r->nsync);
}

/* S8 (b): `trials` random live nodes killed one after another; per trial, the
 * time from the kill until each live node pops NODE_CHANGED DISCONNECTED for
 * it (limitMs at most), then pauseMs for the mesh to repair. */
static inline void scale_s8_kill(scale_graph *g, int trials, long long limitMs, int pauseMs, scale_vis *r)
{
    int k, i;
    scale_vis_alloc(r, trials, g->cap);
    for (k = 0; k < trials; k++) {
        int v, ok;
        long long t0, last = 0;
        scale_resolve_owners(g);
        if (scale_pick_live(g, &v, 1) < 1) break;
        for (i = 0; i < g->n; i++) g->v[i].t_mark = -1;
        g->watch_node = g->v[v].id;
        g->watch_ct = PEER_NODE_CHANGE_DISCONNECTED;
        t0 = scale_now(g);
        scale_kill(g, &v, 1);
        ok = scale_wait_marks(g, v, limitMs, -1);
        r->trials++;
        r->complete += ok;
        for (i = 0; i < g->n; i++) {
            if (g->v[i].state != SN_LIVE) continue;
            if (g->v[i].t_mark < 0) { r->missing++; continue; }
            r->lat[r->nlat++] = g->v[i].t_mark - t0;
            if (g->v[i].t_mark - t0 > last) last = g->v[i].t_mark - t0;
        }
        if (ok) r->last[r->nlast++] = last;
        g->watch_node = 0;
        scale_run_ms(g, pauseMs);
    }
    scale_sort_ll(r->lat, r->nlat);
    scale_sort_ll(r->last, r->nlast);
}

/* Per live node, on average: dead nodes it still lists in PeerGraphEnumNodes
 * (*stale: not seen gone), and live nodes it does not list (*missing). */
static inline void scale_presence_audit(scale_graph *g, double *stale, double *missing)
{
    long long st = 0, mi = 0;
    int i, alive = 0;
    for (i = 0; i < g->n; i++) alive += g->v[i].state == SN_LIVE;
    for (i = 0; i < g->n; i++) {
        HPEERENUM en;
        PVOID *items = NULL;
        ULONG c = 0, k;
        int seen = 0;
        if (g->v[i].state != SN_LIVE) continue;
        if (FAILED(PeerGraphEnumNodes(g->v[i].h, NULL, &en))) continue;
        PeerGraphGetItemCount(en, &c);
        if (c && SUCCEEDED(PeerGraphGetNextItem(en, &c, &items)) && items) {
            for (k = 0; k < c; k++) {
                int j = scale_index_of_id(g, ((const PEER_NODE_INFO *)items[k])->ullNodeId);
                if (j == i || j < 0) continue;
                if (g->v[j].state == SN_LIVE) seen++;
                else if (g->v[j].state == SN_DEAD) st++;
            }
            PeerGraphFreeData(items);
        }
        PeerGraphEndEnumeration(en);
        mi += alive - 1 - seen;
    }
    *stale = alive ? (double)st / alive : 0;
    *missing = alive ? (double)mi / alive : 0;
}

/* S6 figures; times in ms after the kill unless said, -1 = not within the cap. */
typedef struct scale_s6 {
    int ran, pct, killed, survivors, sockets;
    double t_mesh_ms;       /* one component and every survivor >= 2 live neighbors (both at one check) */
    double t_deg_ms;        /* every survivor >= 2 live neighbors */
    double t_onecomp_ms;    /* the survivors form one component */
    double t_noisolated_ms; /* no survivor without a live neighbor */
    double t_rec_ms;        /* from its publication: the record at every survivor */
    double t_rec_kill_ms;   /* ... from the kill */
    int isolated_first, below_first, comps_first; /* the first check, just after the kill */
    int isolated_5s;        /* survivors without a live neighbor 5 s after the kill (at the end if sooner) */
    int owner_killed;       /* the lowest live node ID (the signature owner) was among the victims */
    int rec_missing;        /* survivors without the record at the end */
    double stale_presence;  /* at the end, per survivor: dead nodes it still lists (PeerGraphEnumNodes) */
    double missing_presence;/* ... live nodes it does not list */
    scale_mesh end;         /* the last check */
    double cap_ms, check_ms_mean;
    int checks, unresolved;
} scale_s6;

/* S6: kills pct% of the live nodes at once (random), publishes a record of
 * recBytes at a random survivor 100 ms later, checks the mesh every checkMs,
 * and runs until the mesh is whole, the record is everywhere and 5 s have
 * passed, or capMs. */
static inline void scale_s6_run(scale_graph *g, int pct, long long capMs, int checkMs, ULONG recBytes, scale_s6 *r)
{
    int live = 0, i, k, *vic, pub = -1;
    long long t0, tnow, tcheck = -1, tpub = 0, checkus = 0, tshown = -1000000;
    int dbg = getenv("SCALE_DEBUG") != NULL, late_done = 0; /* the repair as it goes, every 100 ms */
    scale_mesh m;
    memset(r, 0, sizeof *r);
    r->ran = 1;
    r->pct = pct;
    r->t_mesh_ms = r->t_deg_ms = r->t_onecomp_ms = r->t_noisolated_ms = r->t_rec_ms = r->t_rec_kill_ms = -1;
    r->isolated_5s = -1;
    r->cap_ms = (double)capMs;
    r->unresolved = scale_resolve_owners(g);
    for (i = 0; i < g->n; i++) live += g->v[i].state == SN_LIVE;
    k = live * pct / 100;
    vic = (int *)scale_xcalloc((size_t)k + 1, sizeof(int));
    k = scale_pick_live(g, vic, k);
    {
        int low = -1, at = -1, j;
        for (i = 0; i < g->n; i++)
            if (g->v[i].state == SN_LIVE && (low < 0 || g->v[i].id < g->v[low].id)) low = i;
        for (j = 0; j < k; j++)
            if (vic[j] == low) at = j;
        if (g->s6_owner > 0 && at < 0 && k > 0) vic[at = 0] = low;
        else if (g->s6_owner < 0 && at >= 0) { /* another live node in its place, at random */
            int tries;
            for (tries = 0; tries < 100000; tries++) {
                int used = 0;
                i = scale_rand_below(g, g->n);
                if (i == low || g->v[i].state != SN_LIVE) continue;
                for (j = 0; j < k && !used; j++) used = vic[j] == i;
                if (!used) break;
            }
            if (tries < 100000) { vic[at] = i; at = -1; }
        }
        r->owner_killed = at >= 0;
    }
    for (i = 0; i < g->n; i++) g->v[i].t_rec = -1;
    g->watch_rec_on = 0;
    t0 = scale_now(g);
    r->sockets = scale_kill(g, vic, k);
    r->killed = k;
    r->survivors = live - k;
    free(vic);
    for (;;) {
        scale_pump(g, 2);
        tnow = scale_now(g);
        if (pub < 0 && tnow - t0 >= 100000) { /* the record, 100 ms after the kill */
            scale_pick_live(g, &pub, 1);
            g->watch_rec_on = 1;
            scale_add_record(g, pub, recBytes, 0x5c, &g->watch_rec);
            tpub = scale_now(g);
            scale_drain(g); /* the publisher's own RECORD_CHANGED */
            if (g->v[pub].t_rec < 0) g->v[pub].t_rec = tpub;
        }
        if (pub >= 0 && r->t_rec_ms < 0) {
            int all = 1;
            long long last = 0;
            for (i = 0; i < g->n && all; i++)
                if (g->v[i].state == SN_LIVE) {
                    if (g->v[i].t_rec < 0) all = 0;
                    else if (g->v[i].t_rec > last) last = g->v[i].t_rec;
                }
            if (all) {
                r->t_rec_ms = (double)(last - tpub) / 1000.0;
                r->t_rec_kill_ms = (double)(last - t0) / 1000.0;
            }
        }
        if (tcheck < 0 || tnow - tcheck >= (long long)checkMs * 1000) {
            long long a = scale_now(g);
            double at;
            scale_mesh_check(g, &m);
            checkus += scale_now(g) - a;
            tcheck = tnow;
            at = (double)(tnow - t0) / 1000.0;
            if (!r->checks++) {
                r->isolated_first = m.isolated;
                r->below_first = m.below_min;
                r->comps_first = m.components;
            }
            if (r->t_noisolated_ms < 0 && m.isolated == 0) r->t_noisolated_ms = at;
            if (r->t_deg_ms < 0 && m.below_min == 0) r->t_deg_ms = at;
            if (r->t_onecomp_ms < 0 && m.components == 1) r->t_onecomp_ms = at;
            if (r->t_mesh_ms < 0 && m.ok) r->t_mesh_ms = at;
            if (r->isolated_5s < 0 && tnow - t0 >= 5000000) r->isolated_5s = m.isolated;
            if (g->on_s6_late && m.below_min && tnow - t0 >= 1000000 && !late_done) {
                late_done = 1;
                g->on_s6_late(g);
            }
            if (dbg && (m.isolated || m.below_min || m.components > 1) && tnow - tshown >= 100000) {
                tshown = tnow;
                printf("    S6 %d%% at %5.0f ms: %d isolated, %d below 2 neighbors, %d components, %d links\n", pct, at,
                       m.isolated, m.below_min, m.components, m.links);
            }
        }
        if ((r->t_mesh_ms >= 0 && r->t_rec_ms >= 0 && r->isolated_5s >= 0) || tnow - t0 > capMs * 1000) break;
    }
    scale_mesh_check(g, &m);
    r->end = m;
    if (r->isolated_5s < 0) r->isolated_5s = m.isolated;
    for (i = 0; i < g->n; i++)
        if (g->v[i].state == SN_LIVE && g->v[i].t_rec < 0) r->rec_missing++;
    scale_presence_audit(g, &r->stale_presence, &r->missing_presence);
    r->check_ms_mean = r->checks ? (double)checkus / r->checks / 1000.0 : 0;
    g->watch_rec_on = 0;
}

/* ========================================================================= */
/* 3. the fake-network driver (tests/fake_net.h included first)              */
/* ========================================================================= */
#ifdef FAKE_NET_H

typedef struct scale_fake {
    PEER_POLL_FD *want, *ready;
    ULONG cap;
} scale_fake;

/* One step: GetPollFds, the fake's pfnWait (never blocks), Service at the
 * synthetic clock; with nothing ready, the clock moves to the library's next
 * deadline (at most maxWaitMs on). */
static inline void scale_fake_step(void *ctx, int maxWaitMs)
{
    scale_fake *f = (scale_fake *)ctx;
    const PEER_NET_SHIM *fs = fake_net_shim();
    ULONG n = 0, nr = 0, i, k = 0;
    ULONGLONG dl = PEER_NO_DEADLINE, now = fake_net_now();
    HRESULT hr;
    for (;;) {
        hr = PeerGraphGetPollFds(f->want, f->cap, &n, &dl);
        if (hr != E_NOT_SUFFICIENT_BUFFER) break;
        free(f->want); free(f->ready);
        f->cap = n + 256;
        f->want = (PEER_POLL_FD *)scale_xcalloc(f->cap, sizeof *f->want);
        f->ready = (PEER_POLL_FD *)scale_xcalloc(f->cap, sizeof *f->ready);
    }
    if (FAILED(hr)) scale_die("PeerGraphGetPollFds", -1, hr);
    for (i = 0; i < n; i++)
        if (!scale_net_is_zombie(f->want[i].s)) f->want[k++] = f->want[i];
    if (k && FAILED(hr = fs->pfnWait(fs->pvContext, f->want, k, f->ready, &nr, 0))) scale_die("pfnWait", -1, hr);
    if (!nr && dl > now) fake_net_advance(dl == PEER_NO_DEADLINE || dl - now > (ULONGLONG)maxWaitMs ? (ULONGLONG)maxWaitMs : dl - now);
    if (FAILED(hr = PeerGraphService(f->ready, nr, fake_net_now()))) scale_die("PeerGraphService", -1, hr);
}

static inline long long scale_fake_now(void *ctx) { (void)ctx; return (long long)fake_net_now() * 1000; }

static inline void scale_fake_kill_socket(void *ctx, PEER_SOCKET s) { (void)ctx; fake_net_shim()->pfnClose(NULL, s); }
/* A zombie's number on the fake network: a test-side listener nobody uses
 * (released again with fake_net_raw_close). */
static inline PEER_SOCKET scale_fake_new_zombie(void *ctx)
{
    SOCKADDR_IN6 a;
    (void)ctx;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    a.sin6_addr.s6_addr[10] = 0xFF;
    a.sin6_addr.s6_addr[11] = 0xFF;
    a.sin6_addr.s6_addr[12] = 127;
    a.sin6_addr.s6_addr[13] = 255;
    a.sin6_addr.s6_addr[15] = 1;
    return fake_net_raw_listen(&a);
}
/* A killed socket was closed on the fake network already; a fresh zombie is
 * a raw listener. */
static inline void scale_fake_close_zombie(void *ctx, PEER_SOCKET s, int fresh)
{
    (void)ctx;
    if (fresh) fake_net_raw_close(s);
}

/* The driver, and the scale_net ops for the fake network: install with
 * scale_net_install(fake_net_shim(), &ops) before PeerGraphStartup. */
static inline scale_driver scale_fake_driver(scale_fake *f, scale_net_ops *ops)
{
    scale_driver d;
    memset(f, 0, sizeof *f);
    d.ctx = f;
    d.step = scale_fake_step;
    d.now_us = scale_fake_now;
    ops->ctx = NULL;
    ops->kill_socket = scale_fake_kill_socket;
    ops->close_zombie = scale_fake_close_zombie;
    ops->new_zombie = scale_fake_new_zombie;
    return d;
}

static inline void scale_fake_free(scale_fake *f)
{
    free(f->want); free(f->ready);
    memset(f, 0, sizeof *f);
}
#endif /* FAKE_NET_H */

#endif /* SCALE_HARNESS_H */
