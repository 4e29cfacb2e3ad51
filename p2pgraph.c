/*
 * p2pgraph.c - the core: graphs, connections, the MS-PPGRH handshake, events,
 * enumerations and the host-driven service loop.
 *
 * Reading order (each section starts with a short design note):
 *   1. Utilities: allocation, big-endian codec, strings (wchar_t <-> UTF-8).
 *   2. Library state: handles, the socket table, the clock.
 *   3. Events: per-registration bounded queues, pulled by the host.
 *   4. Enumerations: snapshots handed out in self-contained blocks.
 *   5. Database file: what a graph persists (graph metadata for now).
 *   6. Wire: framing and message encoding/decoding ([MS-PPGRH] section 2).
 *   7. Connections: buffers, I/O, closing, poll interest.
 *   8. Handshake: AUTH_INFO, CONNECT, WELCOME, REFUSE, DISCONNECT, sync start.
 *   9. Listeners and accepting.
 *  10. Service loop and timers.
 *  11. Public API.
 *
 * Single-threaded by design: nothing here locks, nothing blocks, and no
 * application code is called except the poll callback (documented as not
 * re-entrant).  Objects are freed only at the end of a public call (sweep), so
 * code that closes a connection may keep using its pointer until then.
 */
#if !defined(_WIN32) && !defined(_POSIX_C_SOURCE)
#define _POSIX_C_SOURCE 200809L
#endif
#include "p2pgraph.h"

#include <stdlib.h>
#include <string.h>
#include <stdio.h>
#include <math.h>
#include <errno.h>
#include <mbedtls/md.h>
#ifndef _WIN32
#include <unistd.h>
#endif

/* ========================================================================= */
/* 1. Utilities                                                              */
/* Allocation goes through pg_alloc/pg_free so a test allocator can be put   */
/* in later.  Wire integers are big-endian, written byte by byte.  Strings:  */
/* the API is wchar_t (UTF-16 on Windows, UTF-32 elsewhere); the handshake   */
/* wire is UTF-8; lengths are counted in UTF-16 units as on Windows.         */
/* ========================================================================= */

static void *pg_alloc(size_t cb) { return malloc(cb ? cb : 1); }
static void *pg_calloc(size_t n, size_t cb) { return calloc(n ? n : 1, cb ? cb : 1); }
static void *pg_realloc(void *p, size_t cb) { return realloc(p, cb ? cb : 1); }
static void pg_free(void *p) { free(p); }

static void put16(uint8_t *p, unsigned v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v; }
static void put64(uint8_t *p, uint64_t v) { put32(p, (uint32_t)(v >> 32)); put32(p + 4, (uint32_t)v); }
static unsigned get16(const uint8_t *p) { return ((unsigned)p[0] << 8) | p[1]; }
static uint32_t get32(const uint8_t *p) { return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3]; }
static uint64_t get64(const uint8_t *p) { return ((uint64_t)get32(p) << 32) | get32(p + 4); }

static void guid_put(uint8_t *p, const GUID *g)
{
    put32(p, g->Data1);
    put16(p + 4, g->Data2);
    put16(p + 6, g->Data3);
    memcpy(p + 8, g->Data4, 8);
}

/* A growable byte buffer; [off, len) holds the unconsumed bytes. */
typedef struct pg_buf {
    uint8_t *p;
    size_t off, len, cap;
} pg_buf;

static int buf_reserve(pg_buf *b, size_t extra)
{
    size_t need;
    if (b->off && b->off == b->len) b->off = b->len = 0;
    if (b->len + extra <= b->cap) return 1;
    if (b->off) { /* compact first */
        memmove(b->p, b->p + b->off, b->len - b->off);
        b->len -= b->off;
        b->off = 0;
        if (b->len + extra <= b->cap) return 1;
    }
    need = b->cap ? b->cap : 256;
    while (need < b->len + extra) need *= 2;
    {
        uint8_t *np = (uint8_t *)pg_realloc(b->p, need);
        if (!np) return 0;
        b->p = np;
        b->cap = need;
    }
    return 1;
}
static int buf_append(pg_buf *b, const void *pv, size_t cb)
{
    if (!buf_reserve(b, cb)) return 0;
    if (cb) memcpy(b->p + b->len, pv, cb);
    b->len += cb;
    return 1;
}
static size_t buf_used(const pg_buf *b) { return b->len - b->off; }
static void buf_consume(pg_buf *b, size_t cb)
{
    b->off += cb;
    if (b->off >= b->len) b->off = b->len = 0;
}
static void buf_free(pg_buf *b) { pg_free(b->p); memset(b, 0, sizeof *b); }

/* Decode one code point from a wchar_t string; returns chars consumed, 0 on
 * an invalid sequence (lone surrogate, out of range). */
static int wc_decode(const wchar_t *w, uint32_t *cp)
{
    uint32_t c = (uint32_t)w[0];
#if WCHAR_MAX <= 0xFFFF
    if (c >= 0xD800 && c <= 0xDBFF) {
        uint32_t d = (uint32_t)w[1];
        if (d < 0xDC00 || d > 0xDFFF) return 0;
        *cp = 0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00);
        return 2;
    }
    if (c >= 0xDC00 && c <= 0xDFFF) return 0;
#else
    if ((c >= 0xD800 && c <= 0xDFFF) || c > 0x10FFFF) return 0;
#endif
    *cp = c;
    return 1;
}

/* Length in UTF-16 units (without NUL), or -1 if the string is invalid. */
static long wcs_units16(const wchar_t *w)
{
    long n = 0;
    while (*w) {
        uint32_t cp;
        int k = wc_decode(w, &cp);
        if (!k) return -1;
        w += k;
        n += cp >= 0x10000 ? 2 : 1;
    }
    return n;
}

/* A string argument within maxChars UTF-16 units including the NUL. */
static int wcs_valid(const wchar_t *w, long maxChars, int allowEmpty)
{
    long n;
    if (!w) return 0;
    n = wcs_units16(w);
    if (n < 0 || n + 1 > maxChars) return 0;
    return allowEmpty || n > 0;
}

static wchar_t *pg_wcsdup(const wchar_t *w)
{
    size_t n;
    wchar_t *r;
    if (!w) return NULL;
    n = wcslen(w) + 1;
    r = (wchar_t *)pg_alloc(n * sizeof(wchar_t));
    if (r) memcpy(r, w, n * sizeof(wchar_t));
    return r;
}

static int wcs_eq(const wchar_t *a, const wchar_t *b)
{
    if (!a || !b) return a == b;
    return wcscmp(a, b) == 0;
}

/* UTF-8 bytes needed for w (without NUL). */
static size_t utf8_len(const wchar_t *w)
{
    size_t n = 0;
    while (*w) {
        uint32_t cp = 0;
        int k = wc_decode(w, &cp);
        if (!k) { cp = 0xFFFD; k = 1; }
        w += k;
        n += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
    }
    return n;
}

/* Writes w as UTF-8 plus NUL into out (utf8_len(w)+1 bytes). */
static void utf8_put(uint8_t *out, const wchar_t *w)
{
    while (*w) {
        uint32_t cp = 0;
        int k = wc_decode(w, &cp);
        if (!k) { cp = 0xFFFD; k = 1; }
        w += k;
        if (cp < 0x80) *out++ = (uint8_t)cp;
        else if (cp < 0x800) { *out++ = (uint8_t)(0xC0 | (cp >> 6)); *out++ = (uint8_t)(0x80 | (cp & 0x3F)); }
        else if (cp < 0x10000) {
            *out++ = (uint8_t)(0xE0 | (cp >> 12)); *out++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F));
            *out++ = (uint8_t)(0x80 | (cp & 0x3F));
        } else {
            *out++ = (uint8_t)(0xF0 | (cp >> 18)); *out++ = (uint8_t)(0x80 | ((cp >> 12) & 0x3F));
            *out++ = (uint8_t)(0x80 | ((cp >> 6) & 0x3F)); *out++ = (uint8_t)(0x80 | (cp & 0x3F));
        }
    }
    *out = 0;
}

static char *wcs_to_utf8(const wchar_t *w)
{
    size_t n = utf8_len(w);
    char *r = (char *)pg_alloc(n + 1);
    if (r) utf8_put((uint8_t *)r, w);
    return r;
}

/* Strict UTF-8 decoding of p[0..n) (no NUL inside).  Returns a new wchar_t
 * string, or NULL (invalid or out of memory; *pInvalid tells which). */
static wchar_t *utf8_to_wcs(const uint8_t *p, size_t n, int *pInvalid)
{
    wchar_t *r = (wchar_t *)pg_alloc((n + 1) * sizeof(wchar_t)), *o = r;
    size_t i = 0;
    *pInvalid = 0;
    if (!r) return NULL;
    while (i < n) {
        uint32_t c = p[i], cp, min;
        int k, j;
        if (c < 0x80) { cp = c; k = 1; min = 0; }
        else if ((c & 0xE0) == 0xC0) { cp = c & 0x1F; k = 2; min = 0x80; }
        else if ((c & 0xF0) == 0xE0) { cp = c & 0x0F; k = 3; min = 0x800; }
        else if ((c & 0xF8) == 0xF0) { cp = c & 0x07; k = 4; min = 0x10000; }
        else goto bad;
        if (c == 0 || i + (size_t)k > n) goto bad;
        for (j = 1; j < k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) goto bad;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) goto bad;
        i += (size_t)k;
#if WCHAR_MAX <= 0xFFFF
        if (cp >= 0x10000) {
            cp -= 0x10000;
            *o++ = (wchar_t)(0xD800 + (cp >> 10));
            *o++ = (wchar_t)(0xDC00 + (cp & 0x3FF));
            continue;
        }
#endif
        *o++ = (wchar_t)cp;
    }
    *o = 0;
    return r;
bad:
    pg_free(r);
    *pInvalid = 1;
    return NULL;
}

static int addr_is_v4mapped(const SOCKADDR_IN6 *a)
{
    static const uint8_t pfx[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF};
    return memcmp(a->sin6_addr.s6_addr, pfx, 12) == 0;
}
static int addr_is_loopback(const SOCKADDR_IN6 *a)
{
    static const uint8_t lo6[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    if (memcmp(a->sin6_addr.s6_addr, lo6, 16) == 0) return 1;
    return addr_is_v4mapped(a) && a->sin6_addr.s6_addr[12] == 127;
}
static int addr_is_unspecified(const SOCKADDR_IN6 *a)
{
    static const uint8_t z[16] = {0};
    return memcmp(a->sin6_addr.s6_addr, z, 16) == 0;
}
static unsigned addr_port(const SOCKADDR_IN6 *a) { return get16((const uint8_t *)&a->sin6_port); }
static void addr_set_port(SOCKADDR_IN6 *a, unsigned port) { put16((uint8_t *)&a->sin6_port, port); }
static int addr_eq(const SOCKADDR_IN6 *a, const SOCKADDR_IN6 *b)
{
    return addr_port(a) == addr_port(b) && memcmp(a->sin6_addr.s6_addr, b->sin6_addr.s6_addr, 16) == 0;
}
static void addr_make(SOCKADDR_IN6 *a, const uint8_t ip[16], unsigned port)
{
    memset(a, 0, sizeof *a);
    a->sin6_family = AF_INET6;
    memcpy(a->sin6_addr.s6_addr, ip, 16);
    addr_set_port(a, port);
}

/* ========================================================================= */
/* 2. Library state                                                          */
/* One process-wide state, like Winsock's: Startup is counted, handles are   */
/* never-reused numbers looked up in lists (a stale handle is an error, not  */
/* a dangling pointer), sockets are found through a hash table.  `now` is    */
/* the last time the host gave to PeerGraphService.                          */
/* ========================================================================= */

enum { OBJ_LISTENER = 1, OBJ_CONN = 2 };

/* Connection states.  Outbound: TCP_CONNECTING -> CONNECT_SENT ->
 * CONNECTED.  Inbound: AUTH_WAIT -> CONNECT_WAIT -> CONNECTED.  Any state ->
 * CLOSING (flush what is queued, half-close, wait for EOF or the linger
 * deadline) -> freed. */
enum {
    CS_TCP_CONNECTING = 1,
    CS_AUTH_WAIT,
    CS_CONNECT_WAIT,
    CS_CONNECT_SENT,
    CS_CONNECTED,
    CS_CLOSING
};

/* Sync state of a link on the initiating side. */
enum { SYNC_NONE = 0, SYNC_NEW, SYNC_TIME };

/* p2pgraph capability bits, carried in AUTH_INFO.Reserved2 (initiator) and
 * WELCOME.Reserved2 (responder, only when the initiator sent them). */
#define EXT_REASONS 0x01 /* REFUSE may carry codes 0x80.. in answer to AUTH_INFO */
#define EXT_ALL     EXT_REASONS

/* MS-PPGRH message types. */
enum {
    MT_AUTH_INFO = 0x01, MT_CONNECT, MT_WELCOME, MT_REFUSE, MT_DISCONNECT, MT_SOLICIT_NEW,
    MT_SOLICIT_TIME, MT_SOLICIT_HASH, MT_ADVERTISE, MT_REQUEST, MT_FLOOD, MT_SYNC_END, MT_PT2PT, MT_ACK
};
enum { REFUSE_BUSY = 1, REFUSE_ALREADY_CONNECTED, REFUSE_DUPLICATE, REFUSE_DIRECT_DISALLOWED,
       REFUSE_X_WRONG_GRAPH = 0x80, REFUSE_X_WRONG_PEER = 0x81, REFUSE_X_SELF = 0x82 };
enum { DISC_LEAVING = 1, DISC_LEAST_USEFUL, DISC_APP };

typedef struct pg_graph pg_graph;
typedef struct pg_listener pg_listener;

typedef struct pg_conn {
    int kind; /* OBJ_CONN */
    struct pg_conn *next;
    ULONGLONG id;
    pg_graph *graph;        /* NULL before AUTH_INFO (inbound) or after the graph closed */
    pg_listener *listener;  /* inbound: the listener that accepted it */
    PEER_SOCKET s;
    int outbound, direct, state, dead;
    unsigned ext;           /* capability bits agreed with the remote */
    SOCKADDR_IN6 remote;    /* outbound: the target; inbound: the socket peer */
    wchar_t *want_peer;     /* outbound: requested peer ID (NULL = any) */
    wchar_t *remote_peer;   /* remote's peer ID once known */
    ULONGLONG remote_node;
    ULONG n_raddr;          /* addresses the remote listens on */
    SOCKADDR_IN6 *raddr;
    uint8_t fhdr[2];        /* frame parser */
    unsigned fhdr_len, frame_left;
    pg_buf rx;              /* message reassembly */
    pg_buf tx;              /* framed bytes waiting for the socket */
    ULONGLONG deadline;     /* current timer (auth, connect, linger) */
    HRESULT close_reason;   /* recorded when the close starts */
    ULONGLONG t_connect_pt; /* local peer time when CONNECT was sent */
    ULONGLONG neighbor_seq; /* order in which neighbors were added */
    int sync, sync_step;    /* initiator-side synchronization progress */
    int referral_hops;      /* how many referrals led to this attempt */
    int half_closed;
    int poke;               /* needs processing at the next service */
    DWORD announced;        /* poll interest the host was told about */
} pg_conn;

struct pg_listener {
    int kind; /* OBJ_LISTENER */
    pg_listener *next;
    PEER_SOCKET s;
    SOCKADDR_IN6 bound;
    int refs;
    DWORD announced;
};

typedef struct pg_referral {
    SOCKADDR_IN6 addr;
    ULONGLONG seq;
    int attempted;
} pg_referral;

struct pg_graph {
    pg_graph *next;
    uintptr_t handle;
    wchar_t *graph_id, *peer_id, *db_name;
    char *db_path;
    /* properties */
    DWORD flags, scope, max_record;
    wchar_t *creator_id, *friendly, *comment;
    ULONG presence_lifetime, presence_max;
    int is_creator, synchronized;
    ULONGLONG node_id;
    DWORD status;          /* last status announced */
    pg_listener *listener;
    DWORD listen_scope;
    int64_t ptd;           /* peer time delta, 100-ns units: PT = UTC - ptd */
    ULONGLONG left_pt;     /* peer time when this node last left the graph */
    ULONG n_neighbors_ever;
    pg_referral refs[PEER_MAX_REFERRALS];
    ULONG n_refs;
    ULONGLONG ref_seq, neighbor_seq;
    GUID *sync_types;      /* prioritized record types given to Open */
    ULONG n_sync_types;
    int used_network;      /* Listen or Connect was called */
};

typedef struct pg_reg pg_reg;
typedef struct pg_enum pg_enum;

typedef struct sock_slot { uint64_t key; void *obj; } sock_slot;

static struct {
    int started;
    PEER_NET_SHIM shim;
    int shim_set;
    ULONGLONG now;
    uintptr_t next_handle;
    ULONGLONG next_conn_id;
    pg_graph *graphs;
    pg_conn *conns;
    pg_listener *listeners;
    pg_reg *regs;
    pg_enum *enums;
    sock_slot *socks;      /* open addressing, key = socket + 1 (0 = empty) */
    size_t sock_cap, sock_n;
    void (*poll_cb)(PVOID, PEER_SOCKET, DWORD);
    PVOID poll_ctx;
    PEER_POLL_FD *wait_want, *wait_ready; /* RunOnce scratch */
    ULONG wait_cap;
    char *db_dir;          /* NULL = default */
    int sweep_needed;
} L;

#define SHIM (&L.shim)

static ULONGLONG utc_now(void) { return SHIM->pfnUtcNow(SHIM->pvContext); }
static ULONGLONG peer_time(const pg_graph *g) { return (ULONGLONG)((int64_t)utc_now() - g->ptd); }

static ULONGLONG random64(void)
{
    uint8_t b[8];
    ULONGLONG v = 0;
    int i;
    if (FAILED(SHIM->pfnRandom(SHIM->pvContext, b, sizeof b))) {
        /* The shim failed to give randomness: fall back to time mixing. */
        ULONGLONG t = utc_now() ^ (L.now << 20) ^ (uintptr_t)&v;
        for (i = 0; i < 8; i++) { b[i] = (uint8_t)(t >> (i * 8)); }
    }
    for (i = 0; i < 8; i++) v = (v << 8) | b[i];
    return v;
}

static uintptr_t new_handle(void) { return ++L.next_handle; }

static uint64_t sock_key(PEER_SOCKET s) { return (uint64_t)s + 1; }

static size_t sock_hash(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

static int sock_put(PEER_SOCKET s, void *obj);

static int sock_grow(void)
{
    size_t oldcap = L.sock_cap, i;
    sock_slot *old = L.socks;
    size_t ncap = oldcap ? oldcap * 2 : 64;
    sock_slot *n = (sock_slot *)pg_calloc(ncap, sizeof *n);
    if (!n) return 0;
    L.socks = n;
    L.sock_cap = ncap;
    L.sock_n = 0;
    for (i = 0; i < oldcap; i++)
        if (old[i].key) sock_put((PEER_SOCKET)(old[i].key - 1), old[i].obj);
    pg_free(old);
    return 1;
}

static int sock_put(PEER_SOCKET s, void *obj)
{
    uint64_t k = sock_key(s);
    size_t i;
    if ((L.sock_n + 1) * 2 > L.sock_cap && !sock_grow()) return 0;
    for (i = sock_hash(k, L.sock_cap);; i = (i + 1) & (L.sock_cap - 1)) {
        if (!L.socks[i].key || L.socks[i].key == k) {
            if (!L.socks[i].key) L.sock_n++;
            L.socks[i].key = k;
            L.socks[i].obj = obj;
            return 1;
        }
    }
}

static void *sock_get(PEER_SOCKET s)
{
    uint64_t k = sock_key(s);
    size_t i;
    if (!L.sock_cap) return NULL;
    for (i = sock_hash(k, L.sock_cap); L.socks[i].key; i = (i + 1) & (L.sock_cap - 1))
        if (L.socks[i].key == k) return L.socks[i].obj;
    return NULL;
}

static void sock_del(PEER_SOCKET s)
{
    uint64_t k = sock_key(s);
    size_t i, j;
    if (!L.sock_cap) return;
    for (i = sock_hash(k, L.sock_cap); L.socks[i].key; i = (i + 1) & (L.sock_cap - 1))
        if (L.socks[i].key == k) break;
    if (!L.socks[i].key) return;
    L.socks[i].key = 0;
    L.sock_n--;
    /* backward-shift deletion keeps probe chains intact */
    for (j = (i + 1) & (L.sock_cap - 1); L.socks[j].key; j = (j + 1) & (L.sock_cap - 1)) {
        size_t h = sock_hash(L.socks[j].key, L.sock_cap);
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            L.socks[i] = L.socks[j];
            L.socks[j].key = 0;
            i = j;
        }
    }
}

/* Closes a socket the library owns: tells the host first (poll callback). */
static void socket_close(PEER_SOCKET s, DWORD *announced)
{
    if (*announced && L.poll_cb) L.poll_cb(L.poll_ctx, s, 0);
    *announced = 0;
    sock_del(s);
    SHIM->pfnClose(SHIM->pvContext, s);
}

static pg_graph *graph_from_handle(HGRAPH h)
{
    pg_graph *g;
    if (!h) return NULL;
    for (g = L.graphs; g; g = g->next)
        if (g->handle == (uintptr_t)h) return g;
    return NULL;
}

/* ========================================================================= */
/* 3. Events                                                                 */
/* Each registration owns a ring of ready-made PEER_GRAPH_EVENT_DATA blocks  */
/* (one allocation each, strings inside), so GetEventData just hands one     */
/* over.  The ring is bounded (PEER_MAX_EVENTS_QUEUED); on overflow the new  */
/* event is dropped and the next GetEventData first reports STATUS_CHANGED   */
/* so the host knows to re-read state.  On Windows a registered event handle */
/* is signalled whenever something is queued.                                */
/* ========================================================================= */

struct pg_reg {
    pg_reg *next;
    uintptr_t handle;
    pg_graph *graph;
    HANDLE hEvent;
    ULONG n;
    PEER_GRAPH_EVENT_TYPE *types;
    GUID *filters;
    int *has_filter;
    PPEER_GRAPH_EVENT_DATA *ring;
    ULONG cap, head, count;
    int overflowed;
};

static int reg_wants(const pg_reg *r, PEER_GRAPH_EVENT_TYPE t, const GUID *recType)
{
    ULONG i;
    for (i = 0; i < r->n; i++) {
        if (r->types[i] != t) continue;
        if (r->has_filter[i] && recType && memcmp(&r->filters[i], recType, sizeof(GUID)) != 0) continue;
        return 1;
    }
    return 0;
}

static void reg_push(pg_reg *r, PPEER_GRAPH_EVENT_DATA ev)
{
    if (r->count == r->cap) {
        ULONG ncap = r->cap ? r->cap * 2 : 16, i;
        PPEER_GRAPH_EVENT_DATA *nr;
        if (ncap > PEER_MAX_EVENTS_QUEUED) ncap = PEER_MAX_EVENTS_QUEUED;
        if (r->count == ncap || !(nr = (PPEER_GRAPH_EVENT_DATA *)pg_alloc(ncap * sizeof *nr))) {
            r->overflowed = 1;
            pg_free(ev);
            return;
        }
        for (i = 0; i < r->count; i++) nr[i] = r->ring[(r->head + i) % r->cap];
        pg_free(r->ring);
        r->ring = nr;
        r->cap = ncap;
        r->head = 0;
    }
    r->ring[(r->head + r->count) % r->cap] = ev;
    r->count++;
#ifdef _WIN32
    if (r->hEvent) SetEvent(r->hEvent);
#endif
}

static void reg_free(pg_reg *r)
{
    while (r->count) {
        pg_free(r->ring[r->head]);
        r->head = (r->head + 1) % r->cap;
        r->count--;
    }
    pg_free(r->ring);
    pg_free(r->types);
    pg_free(r->filters);
    pg_free(r->has_filter);
    pg_free(r);
}

/* Queues a copy of *proto (plus an optional peer ID string) to every
 * registration of g that wants it. */
static void emit(pg_graph *g, const PEER_GRAPH_EVENT_DATA *proto, const GUID *recType, const wchar_t *peer)
{
    pg_reg *r;
    for (r = L.regs; r; r = r->next) {
        size_t extra = peer ? (wcslen(peer) + 1) * sizeof(wchar_t) : 0;
        PPEER_GRAPH_EVENT_DATA ev;
        if (r->graph != g || !reg_wants(r, proto->eventType, recType)) continue;
        ev = (PPEER_GRAPH_EVENT_DATA)pg_alloc(sizeof *ev + extra);
        if (!ev) { r->overflowed = 1; continue; }
        *ev = *proto;
        if (peer) {
            ev->nodeChangeData.pwzPeerId = (PWSTR)(ev + 1);
            memcpy(ev + 1, peer, extra);
        }
        reg_push(r, ev);
    }
}

static void emit_conn(pg_graph *g, const pg_conn *c, PEER_CONNECTION_STATUS st, HRESULT hr, ULONGLONG next)
{
    PEER_GRAPH_EVENT_DATA e;
    if (!g) return;
    memset(&e, 0, sizeof e);
    e.eventType = c->direct ? PEER_GRAPH_EVENT_DIRECT_CONNECTION : PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION;
    e.connectionChangeData.dwSize = sizeof e.connectionChangeData;
    e.connectionChangeData.status = st;
    e.connectionChangeData.ullConnectionId = c->id;
    e.connectionChangeData.ullNodeId = c->remote_node;
    e.connectionChangeData.ullNextConnectionId = next;
    e.connectionChangeData.hrConnectionFailedReason = hr;
    emit(g, &e, NULL, NULL);
}

static DWORD graph_compute_status(const pg_graph *g)
{
    DWORD st = 0;
    const pg_conn *c;
    if (g->listener) st |= PEER_GRAPH_STATUS_LISTENING;
    if (g->synchronized) st |= PEER_GRAPH_STATUS_SYNCHRONIZED;
    for (c = L.conns; c; c = c->next)
        if (c->graph == g && !c->dead && c->state == CS_CONNECTED) { st |= PEER_GRAPH_STATUS_HAS_CONNECTIONS; break; }
    return st;
}

/* Announces a status change (STATUS_CHANGED carries the whole mask). */
static void graph_update_status(pg_graph *g)
{
    DWORD st = graph_compute_status(g);
    if (st != g->status) {
        PEER_GRAPH_EVENT_DATA e;
        g->status = st;
        memset(&e, 0, sizeof e);
        e.eventType = PEER_GRAPH_EVENT_STATUS_CHANGED;
        e.dwStatus = (PEER_GRAPH_STATUS_FLAGS)st;
        emit(g, &e, NULL, NULL);
    }
}

/* ========================================================================= */
/* 4. Enumerations                                                           */
/* A snapshot of self-contained items; GetNextItem copies the next items into */
/* one block (pointer array + items + their strings) so one FreeData frees   */
/* all, as on Windows.                                                        */
/* ========================================================================= */

struct pg_enum {
    pg_enum *next;
    uintptr_t handle;
    ULONG n, pos;
    PEER_CONNECTION_INFO *items; /* pwzPeerId separately allocated */
};

static pg_enum *enum_from_handle(HPEERENUM h)
{
    pg_enum *e;
    if (!h) return NULL;
    for (e = L.enums; e; e = e->next)
        if (e->handle == (uintptr_t)h) return e;
    return NULL;
}

static void enum_free(pg_enum *e)
{
    ULONG i;
    for (i = 0; i < e->n; i++) pg_free(e->items[i].pwzPeerId);
    pg_free(e->items);
    pg_free(e);
}

/* ========================================================================= */
/* 5. Database file                                                          */
/* One file per (graph ID, peer ID, database name): <dir>/<name>.<hash>.p2pg  */
/* where hash = first 8 bytes of MD5(graphId NUL peerId) in hex (mbedTLS).    */
/* Until the record store lands it holds the graph's metadata: properties,   */
/* whether it was ever synchronized, the peer time delta and the departure   */
/* time.  Written whole to a temporary file, flushed to disk, renamed over.  */
/* Layout: "P2PGMETA" u32 version=1, u32 body length, body, 16-byte MD5 of   */
/* the body.  Body: strings as u32 length + UTF-8 bytes (0xFFFFFFFF = none), */
/* integers big-endian.                                                       */
/* ========================================================================= */

#define DB_MAGIC "P2PGMETA"
#define DB_VERSION 1

static HRESULT md5(const void *pv, size_t cb, uint8_t out[16])
{
    const mbedtls_md_info_t *mi = mbedtls_md_info_from_type(MBEDTLS_MD_MD5);
    if (!mi || mbedtls_md(mi, (const unsigned char *)pv, cb, out) != 0) return E_FAIL;
    return S_OK;
}

static const char *db_dir(void)
{
    const char *e;
    if (L.db_dir) return L.db_dir;
    e = getenv("P2PGRAPH_DATABASE_DIR");
    return (e && *e) ? e : ".";
}

static int dbname_valid(const wchar_t *w)
{
    const wchar_t *p;
    if (!wcs_valid(w, PEER_MAX_DATABASE_NAME_CHARS + 1, 0)) return 0;
    if (!wcscmp(w, L".") || !wcscmp(w, L"..")) return 0;
    for (p = w; *p; p++)
        if (*p == L'/' || *p == L'\\' || *p == L':' || *p < 0x20) return 0;
    return 1;
}

static char *db_path_for(const wchar_t *graphId, const wchar_t *peerId, const wchar_t *name)
{
    char *g8 = wcs_to_utf8(graphId), *p8 = wcs_to_utf8(peerId), *n8 = wcs_to_utf8(name), *path = NULL;
    if (g8 && p8 && n8) {
        size_t lg = strlen(g8), lp = strlen(p8);
        uint8_t *cat = (uint8_t *)pg_alloc(lg + lp + 1), h[16];
        if (cat) {
            memcpy(cat, g8, lg);
            cat[lg] = 0;
            memcpy(cat + lg + 1, p8, lp);
            if (SUCCEEDED(md5(cat, lg + lp + 1, h))) {
                const char *dir = db_dir();
                size_t n = strlen(dir) + strlen(n8) + 40;
                path = (char *)pg_alloc(n);
                if (path)
                    snprintf(path, n, "%s/%s.%02x%02x%02x%02x%02x%02x%02x%02x.p2pg", dir, n8, h[0], h[1], h[2], h[3],
                             h[4], h[5], h[6], h[7]);
            }
            pg_free(cat);
        }
    }
    pg_free(g8);
    pg_free(p8);
    pg_free(n8);
    return path;
}

static int file_exists(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    fclose(f);
    return 1;
}

static int put_str(pg_buf *b, const wchar_t *w)
{
    uint8_t len[4];
    if (!w) { put32(len, 0xFFFFFFFFu); return buf_append(b, len, 4); }
    {
        size_t n = utf8_len(w);
        uint8_t *tmp = (uint8_t *)pg_alloc(n + 1);
        int ok;
        if (!tmp) return 0;
        utf8_put(tmp, w);
        put32(len, (uint32_t)n);
        ok = buf_append(b, len, 4) && buf_append(b, tmp, n);
        pg_free(tmp);
        return ok;
    }
}
static int put_u32b(pg_buf *b, uint32_t v) { uint8_t t[4]; put32(t, v); return buf_append(b, t, 4); }
static int put_u64b(pg_buf *b, uint64_t v) { uint8_t t[8]; put64(t, v); return buf_append(b, t, 8); }

static HRESULT db_save(const pg_graph *g)
{
    pg_buf body = {0}, all = {0};
    uint8_t h[16];
    char *tmp = NULL;
    FILE *f = NULL;
    HRESULT hr = E_OUTOFMEMORY;
    int ok = put_str(&body, g->graph_id) && put_str(&body, g->peer_id) && put_str(&body, g->creator_id) &&
             put_str(&body, g->friendly) && put_str(&body, g->comment) && put_u32b(&body, g->flags) &&
             put_u32b(&body, g->scope) && put_u32b(&body, g->max_record) && put_u32b(&body, g->presence_lifetime) &&
             put_u32b(&body, g->presence_max) && put_u32b(&body, (uint32_t)g->is_creator) &&
             put_u32b(&body, (uint32_t)g->synchronized) && put_u64b(&body, (uint64_t)g->ptd) &&
             put_u64b(&body, g->left_pt);
    if (!ok) goto done;
    if (FAILED(md5(body.p, body.len, h))) { hr = E_FAIL; goto done; }
    if (!buf_append(&all, DB_MAGIC, 8) || !put_u32b(&all, DB_VERSION) || !put_u32b(&all, (uint32_t)body.len) ||
        !buf_append(&all, body.p, body.len) || !buf_append(&all, h, 16))
        goto done;
    tmp = (char *)pg_alloc(strlen(g->db_path) + 5);
    if (!tmp) goto done;
    sprintf(tmp, "%s.tmp", g->db_path);
    hr = PEER_E_DATABASE_ACCESSDENIED;
    f = fopen(tmp, "wb");
    if (!f) goto done;
    if (fwrite(all.p, 1, all.len, f) != all.len || fflush(f) != 0) goto done;
#ifndef _WIN32
    if (fsync(fileno(f)) != 0) goto done;
#endif
    fclose(f);
    f = NULL;
#ifdef _WIN32
    if (!MoveFileExA(tmp, g->db_path, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) goto done;
#else
    if (rename(tmp, g->db_path) != 0) goto done;
#endif
    hr = S_OK;
done:
    if (f) fclose(f);
    if (tmp && FAILED(hr)) remove(tmp);
    pg_free(tmp);
    buf_free(&body);
    buf_free(&all);
    return hr;
}

typedef struct rd { const uint8_t *p; size_t n, i; int bad; } rd;
static uint32_t rd32(rd *r) { if (r->i + 4 > r->n) { r->bad = 1; return 0; } r->i += 4; return get32(r->p + r->i - 4); }
static uint64_t rd64(rd *r) { if (r->i + 8 > r->n) { r->bad = 1; return 0; } r->i += 8; return get64(r->p + r->i - 8); }
static wchar_t *rdstr(rd *r, int *present)
{
    uint32_t n = rd32(r);
    int inv;
    wchar_t *w;
    *present = 0;
    if (r->bad || n == 0xFFFFFFFFu) return NULL;
    if (n > 4096 || r->i + n > r->n) { r->bad = 1; return NULL; }
    w = utf8_to_wcs(r->p + r->i, n, &inv);
    if (!w) { r->bad = 1; return NULL; }
    r->i += n;
    *present = 1;
    return w;
}

/* Loads g's metadata from g->db_path.  S_OK, S_FALSE (no file),
 * PEER_E_INVALID_DATABASE (corrupt / another graph), E_OUTOFMEMORY. */
static HRESULT db_load(pg_graph *g)
{
    FILE *f = fopen(g->db_path, "rb");
    uint8_t hdr[16], h[16], *body = NULL;
    uint32_t len;
    HRESULT hr = PEER_E_INVALID_DATABASE;
    rd r;
    int pr;
    wchar_t *gid = NULL, *pid = NULL;
    if (!f) return S_FALSE;
    if (fread(hdr, 1, 16, f) != 16 || memcmp(hdr, DB_MAGIC, 8) != 0 || get32(hdr + 8) != DB_VERSION) goto done;
    len = get32(hdr + 12);
    if (len > (1u << 20)) goto done;
    body = (uint8_t *)pg_alloc(len + 16);
    if (!body) { hr = E_OUTOFMEMORY; goto done; }
    if (fread(body, 1, len + 16, f) != len + 16) goto done;
    if (FAILED(md5(body, len, h)) || memcmp(h, body + len, 16) != 0) goto done;
    r.p = body; r.n = len; r.i = 0; r.bad = 0;
    gid = rdstr(&r, &pr);
    pid = rdstr(&r, &pr);
    if (r.bad || !wcs_eq(gid, g->graph_id) || !wcs_eq(pid, g->peer_id)) goto done;
    pg_free(g->creator_id); g->creator_id = rdstr(&r, &pr);
    pg_free(g->friendly); g->friendly = rdstr(&r, &pr);
    pg_free(g->comment); g->comment = rdstr(&r, &pr);
    g->flags = rd32(&r);
    g->scope = rd32(&r);
    g->max_record = rd32(&r);
    g->presence_lifetime = rd32(&r);
    g->presence_max = rd32(&r);
    g->is_creator = rd32(&r) != 0;
    g->synchronized = rd32(&r) != 0;
    g->ptd = (int64_t)rd64(&r);
    g->left_pt = rd64(&r);
    if (r.bad) goto done;
    hr = S_OK;
done:
    pg_free(gid);
    pg_free(pid);
    pg_free(body);
    fclose(f);
    return hr;
}

/* ========================================================================= */
/* 6. Wire                                                                   */
/* Frames: 2-byte payload length (1..32768) + payload; we send frames of at  */
/* most 16,379 bytes and never mix two messages in one frame; we accept a    */
/* frame carrying the tail of one message and the head of the next.  A      */
/* message: the 8-byte PEER_MESSAGE header (size, version 0x10, type, 0)    */
/* and its body.  Builders below produce whole messages into a pg_buf.       */
/* ========================================================================= */

#define MSG_HDR 8
#define PEER_VERSION_BYTE 0x10

static const GUID GUID_GRAPH_INFO_TYPE = {0x00000100, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
static const GUID GUID_PRESENCE_TYPE = {0x00000400, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
static const GUID GUID_PING = {0x0ccbb0d2, 0xbe41, 0x4bd6, {0x91, 0x4b, 0x05, 0x8e, 0xc5, 0xdc, 0xce, 0x64}};

static void msg_header(uint8_t *p, size_t size, int type)
{
    put32(p, (uint32_t)size);
    p[4] = PEER_VERSION_BYTE;
    p[5] = (uint8_t)type;
    p[6] = p[7] = 0;
}

static void addr_put20(uint8_t *p, const SOCKADDR_IN6 *a)
{
    put16(p, 0x0017);
    memcpy(p + 2, &a->sin6_port, 2); /* already network order */
    memcpy(p + 4, a->sin6_addr.s6_addr, 16);
}

/* Message size limit for a connection in its current state. */
static size_t conn_msg_limit(const pg_conn *c)
{
    if (c->state != CS_CONNECTED || !c->graph) return PEER_MAX_HANDSHAKE_MESSAGE;
    return (size_t)c->graph->max_record + PEER_MESSAGE_OVERHEAD;
}

/* ========================================================================= */
/* 7. Connections                                                            */
/* A connection owns its socket, a reassembly buffer and a send buffer of    */
/* framed bytes bounded by PEER_MAX_SEND_QUEUE.  Closing is always one of:   */
/* conn_abort (now, no goodbye) or conn_close_after_flush (send what is      */
/* queued, e.g. DISCONNECT or REFUSE, half-close, wait for EOF or            */
/* PEER_LINGER_MS, then close).  Application events about the close are      */
/* emitted by the caller's state logic via conn_report_close.                 */
/* ========================================================================= */

static void conn_destroy_socket(pg_conn *c)
{
    if (c->s != PEER_INVALID_SOCKET) {
        socket_close(c->s, &c->announced);
        c->s = PEER_INVALID_SOCKET;
    }
}

static void conn_kill(pg_conn *c)
{
    if (c->dead) return;
    conn_destroy_socket(c);
    c->dead = 1;
    L.sweep_needed = 1;
}

static void conn_free(pg_conn *c)
{
    buf_free(&c->rx);
    buf_free(&c->tx);
    pg_free(c->want_peer);
    pg_free(c->remote_peer);
    pg_free(c->raddr);
    pg_free(c);
}

/* Frees dead connections (and after a graph close, nothing else refers to
 * them). */
static void sweep(void)
{
    pg_conn **pp = &L.conns;
    if (!L.sweep_needed) return;
    while (*pp) {
        pg_conn *c = *pp;
        if (c->dead) { *pp = c->next; conn_free(c); }
        else pp = &c->next;
    }
    L.sweep_needed = 0;
}

static ULONG graph_conn_count(const pg_graph *g, int connectedNeighborsOnly)
{
    const pg_conn *c;
    ULONG n = 0;
    for (c = L.conns; c; c = c->next) {
        if (c->graph != g || c->dead) continue;
        if (connectedNeighborsOnly && (c->state != CS_CONNECTED || c->direct)) continue;
        n++;
    }
    return n;
}

/* Tells the application how a connection of its graph ended, once. */
static void conn_report_close(pg_conn *c, HRESULT hr, ULONGLONG next)
{
    pg_graph *g = c->graph;
    if (!g) return;
    if (c->state == CS_CONNECTED) emit_conn(g, c, PEER_DISCONNECTED, hr, 0);
    else if (c->outbound) emit_conn(g, c, PEER_CONNECTION_FAILED, hr, next);
    c->graph = NULL; /* no further events about it */
    graph_update_status(g);
}

static void conn_abort(pg_conn *c, HRESULT hr)
{
    if (c->dead) return;
    c->close_reason = hr;
    conn_report_close(c, hr, 0);
    conn_kill(c);
}

static void conn_try_send(pg_conn *c)
{
    while (!c->dead && buf_used(&c->tx)) {
        size_t n = buf_used(&c->tx);
        long k = SHIM->pfnSend(SHIM->pvContext, c->s, c->tx.p + c->tx.off, (ULONG)(n > 0x40000000 ? 0x40000000 : n));
        if (k == PEER_NET_WOULDBLOCK || k == 0) return;
        if (k < 0) {
            conn_abort(c, PEER_E_CONNECTION_FAILED);
            return;
        }
        buf_consume(&c->tx, (size_t)k);
    }
    if (!c->dead && c->state == CS_CLOSING && !c->half_closed && !buf_used(&c->tx)) {
        SHIM->pfnShutdownSend(SHIM->pvContext, c->s);
        c->half_closed = 1;
    }
}

/* Frames and queues one whole message.  A full queue fails the connection:
 * the peer is not reading. */
static int conn_send(pg_conn *c, const uint8_t *msg, size_t len)
{
    size_t off = 0;
    if (c->dead || c->state == CS_CLOSING || c->s == PEER_INVALID_SOCKET) return 0;
    if (buf_used(&c->tx) + len + 2 * (len / PEER_FRAME_SEND_SIZE + 1) > PEER_MAX_SEND_QUEUE) {
        conn_abort(c, PEER_E_CONNECTION_FAILED);
        return 0;
    }
    while (off < len) {
        size_t k = len - off > PEER_FRAME_SEND_SIZE ? PEER_FRAME_SEND_SIZE : len - off;
        uint8_t fh[2];
        put16(fh, (unsigned)k);
        if (!buf_append(&c->tx, fh, 2) || !buf_append(&c->tx, msg + off, k)) {
            conn_abort(c, E_OUTOFMEMORY);
            return 0;
        }
        off += k;
    }
    return 1;
}

/* Starts a graceful close: what is queued goes out, then FIN, then the
 * socket closes on EOF or after PEER_LINGER_MS.  The application is told
 * (if it is owed an event) with hr. */
static void conn_close_after_flush(pg_conn *c, HRESULT hr)
{
    if (c->dead || c->state == CS_CLOSING) return;
    c->close_reason = hr;
    conn_report_close(c, hr, 0);
    c->state = CS_CLOSING;
    c->deadline = L.now + PEER_LINGER_MS;
    conn_try_send(c);
}

static DWORD conn_interest(const pg_conn *c)
{
    if (c->dead || c->s == PEER_INVALID_SOCKET) return 0;
    if (c->state == CS_TCP_CONNECTING) return PEER_POLL_WRITE;
    return PEER_POLL_READ | (buf_used(&c->tx) ? PEER_POLL_WRITE : 0);
}

static pg_conn *conn_new(pg_graph *g, PEER_SOCKET s, int outbound)
{
    pg_conn *c = (pg_conn *)pg_calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kind = OBJ_CONN;
    c->id = ++L.next_conn_id;
    c->graph = g;
    c->s = s;
    c->outbound = outbound;
    if (s != PEER_INVALID_SOCKET && !sock_put(s, c)) { pg_free(c); return NULL; }
    c->next = L.conns;
    L.conns = c;
    return c;
}

/* Authentication timer ([MS-PPGRH] 3.1.2, digest ambiguity 8):
 * 20 + 280 * e^(-n/10) seconds, n = connections of the graph in progress or
 * alive (or the listener's unauthenticated ones for inbound). */
static ULONGLONG auth_timer_ms(ULONG n)
{
    double s = 20.0 + 280.0 * exp(-(double)n / 10.0);
    return (ULONGLONG)(s * 1000.0);
}

/* ========================================================================= */
/* 8. Handshake                                                              */
/* [MS-PPGRH] with the null security provider: the initiator sends AUTH_INFO */
/* and CONNECT back to back; the responder checks AUTH_INFO (graph ID,       */
/* destination peer ID), then CONNECT in the exact order of section 3.1.5.2.1 */
/* (update, direct, duplicate, busy, already connected, accept) and answers   */
/* WELCOME or REFUSE.  p2pgraph-to-p2pgraph, the responder may explain an     */
/* AUTH_INFO rejection with an extended REFUSE code (PROTOCOL.md).  After     */
/* WELCOME the initiator pings its links, updates peer time and, if it never  */
/* synchronized, walks the Sync All sequence (Graph Info, Presence,          */
/* prioritized types, everything else) on SOLICIT_NEW / SYNC_END.             */
/* ========================================================================= */

static void graph_set_synchronized(pg_graph *g);

/* Addresses this node tells others it listens on, as seen through socket c:
 * the bound address, or c's local address with the listen port when bound to
 * the unspecified address. */
static int local_listen_addr(const pg_graph *g, const pg_conn *c, SOCKADDR_IN6 *out)
{
    if (!g->listener) return 0;
    *out = g->listener->bound;
    if (addr_is_unspecified(out) && c && c->s != PEER_INVALID_SOCKET) {
        SOCKADDR_IN6 la;
        if (SUCCEEDED(SHIM->pfnLocalAddress(SHIM->pvContext, c->s, &la))) {
            unsigned port = addr_port(&g->listener->bound);
            *out = la;
            addr_set_port(out, port);
        }
    }
    return 1;
}

/* The address under which a neighbor can be reached, if any. */
static int conn_reach_addr(const pg_conn *c, SOCKADDR_IN6 *out)
{
    if (c->outbound) { *out = c->remote; return 1; }
    if (c->n_raddr) { *out = c->raddr[0]; return 1; }
    return 0;
}

/* Up to max referral addresses: CONNECTED neighbors other than `except`,
 * least recently added first. */
static ULONG collect_referrals(const pg_graph *g, const pg_conn *except, SOCKADDR_IN6 *out, ULONG max)
{
    ULONG n = 0;
    ULONGLONG last = 0;
    while (n < max) {
        const pg_conn *best = NULL, *c;
        for (c = L.conns; c; c = c->next) {
            SOCKADDR_IN6 a;
            if (c->graph != g || c->dead || c->state != CS_CONNECTED || c->direct || c == except) continue;
            if (except && c->remote_node == except->remote_node) continue;
            if (c->neighbor_seq <= last || !conn_reach_addr(c, &a)) continue;
            if (!best || c->neighbor_seq < best->neighbor_seq) best = c;
        }
        if (!best) break;
        conn_reach_addr(best, &out[n++]);
        last = best->neighbor_seq;
    }
    return n;
}

static void referral_add(pg_graph *g, const SOCKADDR_IN6 *a)
{
    ULONG i, victim = 0;
    for (i = 0; i < g->n_refs; i++)
        if (addr_eq(&g->refs[i].addr, a)) return; /* known already */
    if (g->n_refs < PEER_MAX_REFERRALS) victim = g->n_refs++;
    else
        for (i = 1; i < g->n_refs; i++)
            if (g->refs[i].seq < g->refs[victim].seq) victim = i;
    g->refs[victim].addr = *a;
    g->refs[victim].seq = ++g->ref_seq;
    g->refs[victim].attempted = 0;
}

/* Reads n PEER_IN6_ADDRESS entries at p; 0 if one is not IPv6. */
static int read_addrs(const uint8_t *p, ULONG n, SOCKADDR_IN6 *out)
{
    ULONG i;
    for (i = 0; i < n; i++, p += 20) {
        if (get16(p) != 0x0017) return 0;
        addr_make(&out[i], p + 4, get16(p + 2));
    }
    return 1;
}

static void send_simple(pg_conn *c, int type, uint8_t b8, const SOCKADDR_IN6 *addrs, ULONG n)
{
    /* REFUSE (code) and DISCONNECT (reason): header, code, count, offset, addresses. */
    uint8_t m[12 + 20 * PEER_REFERRALS_SENT];
    ULONG i;
    size_t size = 12 + 20 * (size_t)n;
    msg_header(m, size, type);
    m[8] = b8;
    m[9] = (uint8_t)n;
    /* REFUSE with no addresses: offset 0 (3.1.5.2.1); DISCONNECT: message size (3.1.7.25) */
    put16(m + 10, n ? 12 : (type == MT_DISCONNECT ? 12 : 0));
    for (i = 0; i < n; i++) addr_put20(m + 12 + 20 * i, &addrs[i]);
    conn_send(c, m, size);
}

static void send_refuse(pg_conn *c, int code, HRESULT hrLocal)
{
    SOCKADDR_IN6 refs[PEER_REFERRALS_SENT];
    ULONG n = 0;
    if (code == REFUSE_BUSY && c->graph) n = collect_referrals(c->graph, c, refs, PEER_REFERRALS_SENT);
    send_simple(c, MT_REFUSE, (uint8_t)code, refs, n);
    conn_close_after_flush(c, hrLocal);
}

/* Sends DISCONNECT with up to 10 neighbor addresses, then closes. */
static void conn_disconnect(pg_conn *c, int reason, HRESULT hrEvent)
{
    SOCKADDR_IN6 refs[PEER_REFERRALS_SENT];
    ULONG n = 0;
    if (c->dead || c->state == CS_CLOSING) return;
    if (c->state == CS_CONNECTED) {
        if (c->graph) n = collect_referrals(c->graph, c, refs, PEER_REFERRALS_SENT);
        send_simple(c, MT_DISCONNECT, (uint8_t)reason, refs, n);
    }
    conn_close_after_flush(c, hrEvent);
}

static void send_auth_info(pg_conn *c)
{
    pg_graph *g = c->graph;
    size_t lg = utf8_len(g->graph_id) + 1, lp = utf8_len(g->peer_id) + 1;
    size_t ld = c->want_peer ? utf8_len(c->want_peer) + 1 : 0;
    size_t size = 16 + lg + lp + ld;
    uint8_t *m = (uint8_t *)pg_alloc(size);
    if (!m) { conn_abort(c, E_OUTOFMEMORY); return; }
    msg_header(m, size, MT_AUTH_INFO);
    m[8] = (uint8_t)(c->direct ? 2 : 1);
    m[9] = EXT_ALL;
    c->ext = EXT_ALL; /* narrowed by the WELCOME's answer */
    put16(m + 10, 16);
    put16(m + 12, (unsigned)(16 + lg));
    put16(m + 14, (unsigned)(16 + lg + lp));
    utf8_put(m + 16, g->graph_id);
    utf8_put(m + 16 + lg, g->peer_id);
    if (c->want_peer) utf8_put(m + 16 + lg + lp, c->want_peer);
    conn_send(c, m, size);
    pg_free(m);
}

static void send_connect(pg_conn *c, int update)
{
    pg_graph *g = c->graph;
    SOCKADDR_IN6 la;
    int has = local_listen_addr(g, c, &la);
    size_t lf = g->friendly ? utf8_len(g->friendly) + 1 : 0;
    size_t size = 24 + (has ? 20 : 0) + lf;
    uint8_t *m = (uint8_t *)pg_alloc(size);
    if (!m) { conn_abort(c, E_OUTOFMEMORY); return; }
    msg_header(m, size, MT_CONNECT);
    m[8] = (uint8_t)((update ? 0x08 : 0) | (c->direct ? 0x04 : 0) | (update ? 0 : 0x01));
    m[9] = (uint8_t)(has ? 1 : 0);
    put16(m + 10, 24);
    put16(m + 12, (unsigned)(24 + (has ? 20 : 0)));
    put16(m + 14, 0);
    put64(m + 16, g->node_id);
    if (has) addr_put20(m + 24, &la);
    if (lf) utf8_put(m + 24 + (has ? 20 : 0), g->friendly);
    if (!update) c->t_connect_pt = peer_time(g);
    conn_send(c, m, size);
    pg_free(m);
}

static void send_welcome(pg_conn *c, int withReferrals)
{
    pg_graph *g = c->graph;
    SOCKADDR_IN6 refs[PEER_REFERRALS_SENT];
    ULONG n = withReferrals ? collect_referrals(g, c, refs, PEER_REFERRALS_SENT) : 0, i;
    size_t lp = utf8_len(g->peer_id) + 1, lf = g->friendly ? utf8_len(g->friendly) + 1 : 0;
    size_t aoff = 32, poff = aoff + 20 * (size_t)n, size = poff + lp + lf;
    uint8_t *m = (uint8_t *)pg_alloc(size);
    if (!m) { conn_abort(c, E_OUTOFMEMORY); return; }
    msg_header(m, size, MT_WELCOME);
    put64(m + 8, g->node_id);
    put64(m + 16, peer_time(g));
    m[24] = (uint8_t)n;
    m[25] = (uint8_t)c->ext;
    put16(m + 26, n ? (unsigned)aoff : 0);
    put16(m + 28, (unsigned)poff);
    put16(m + 30, (unsigned)(poff + lp));
    for (i = 0; i < n; i++) addr_put20(m + aoff + 20 * i, &refs[i]);
    utf8_put(m + poff, g->peer_id);
    if (lf) utf8_put(m + poff + lp, g->friendly);
    conn_send(c, m, size);
    pg_free(m);
}

static void send_ping(pg_conn *c)
{
    uint8_t m[28];
    msg_header(m, 28, MT_PT2PT);
    put16(m + 8, 28);
    put16(m + 10, 0);
    guid_put(m + 12, &GUID_PING);
    conn_send(c, m, 28);
}

/* SOLICIT_NEW / SOLICIT_TIME with inclusion (1 type) or exclusion list. */
static void send_solicit(pg_conn *c, int include, const GUID *types, ULONG n)
{
    pg_graph *g = c->graph;
    size_t fixed = c->sync == SYNC_TIME ? 20 : 12, size = fixed + 16 * (size_t)n;
    uint8_t *m = (uint8_t *)pg_alloc(size);
    ULONG i;
    if (!m) { conn_abort(c, E_OUTOFMEMORY); return; }
    msg_header(m, size, c->sync == SYNC_TIME ? MT_SOLICIT_TIME : MT_SOLICIT_NEW);
    m[8] = (uint8_t)(include ? n : 0);
    m[9] = (uint8_t)(include ? 0 : n);
    put16(m + 10, (unsigned)fixed);
    if (c->sync == SYNC_TIME) put64(m + 12, g->left_pt);
    for (i = 0; i < n; i++) guid_put(m + fixed + 16 * i, &types[i]);
    conn_send(c, m, size);
    pg_free(m);
}

/* The Sync All sequence (digest 5.8): step k < 2 + prioritized asks for one
 * type; the step after asks for "everything else"; the one after that ends. */
static void sync_next(pg_conn *c)
{
    pg_graph *g = c->graph;
    ULONG fixedN = 2 + g->n_sync_types, k = (ULONG)c->sync_step;
    GUID one;
    if (k < fixedN) {
        one = k == 0 ? GUID_GRAPH_INFO_TYPE : k == 1 ? GUID_PRESENCE_TYPE : g->sync_types[k - 2];
        c->sync_step++;
        send_solicit(c, 1, &one, 1);
    } else if (k == fixedN) {
        GUID *ex = (GUID *)pg_alloc(sizeof(GUID) * fixedN);
        ULONG i;
        if (!ex) { conn_abort(c, E_OUTOFMEMORY); return; }
        ex[0] = GUID_GRAPH_INFO_TYPE;
        ex[1] = GUID_PRESENCE_TYPE;
        for (i = 0; i < g->n_sync_types; i++) ex[2 + i] = g->sync_types[i];
        c->sync_step++;
        send_solicit(c, 0, ex, fixedN);
        pg_free(ex);
    } else {
        c->sync = SYNC_NONE;
        graph_set_synchronized(g);
    }
}

static void graph_set_synchronized(pg_graph *g)
{
    if (g->synchronized) return;
    g->synchronized = 1;
    db_save(g); /* best effort: a failed write only means Open will sync again */
    graph_update_status(g);
}

/* Peer time from WELCOME (digest 5.4 step 6). */
static void peer_time_update(pg_graph *g, pg_conn *c, ULONGLONG remotePt)
{
    ULONGLONG tw = peer_time(g);
    int64_t rtt = (int64_t)(tw - c->t_connect_pt);
    int64_t ptw = (int64_t)remotePt + (rtt > 0 ? rtt / 2 : 0);
    int64_t diff = ptw - (int64_t)tw;
    const int64_t twentyMin = 12000000000LL;
    int64_t ptdRemote;
    if (diff > twentyMin || diff < -twentyMin) return;
    ptdRemote = (int64_t)utc_now() - ptw;
    if (graph_conn_count(g, 1) <= 1) g->ptd = ptdRemote;
    else g->ptd = (int64_t)(0.8 * (double)g->ptd + 0.2 * (double)ptdRemote);
}

static pg_conn *graph_start_connect(pg_graph *g, const wchar_t *peer, const SOCKADDR_IN6 *a, int direct, int hops,
                                    HRESULT *phr);

/* After a REFUSE(BUSY): try an unattempted referral (digest 5.5 step 4).
 * Returns the new connection ID or 0. */
static ULONGLONG follow_referral(pg_graph *g, int hops)
{
    ULONG i, start, cand = 0, idx[PEER_MAX_REFERRALS];
    if (hops >= PEER_REFERRALS_SENT) return 0; /* bound a referral chase */
    for (i = 0; i < g->n_refs; i++) {
        const pg_conn *c;
        SOCKADDR_IN6 la;
        int skip = g->refs[i].attempted;
        if (!skip && g->listener && local_listen_addr(g, NULL, &la) && addr_port(&la) == addr_port(&g->refs[i].addr) &&
            (addr_is_loopback(&g->refs[i].addr) || addr_eq(&la, &g->refs[i].addr)))
            skip = 1; /* ourselves */
        for (c = L.conns; c && !skip; c = c->next) {
            SOCKADDR_IN6 ra;
            if (c->graph == g && !c->dead && conn_reach_addr(c, &ra) && addr_eq(&ra, &g->refs[i].addr)) skip = 1;
        }
        if (!skip) idx[cand++] = i;
    }
    if (!cand) return 0;
    start = (ULONG)(random64() % cand);
    for (i = 0; i < cand; i++) {
        pg_referral *r = &g->refs[idx[(start + i) % cand]];
        HRESULT hr;
        pg_conn *nc;
        r->attempted = 1;
        nc = graph_start_connect(g, NULL, &r->addr, 0, hops + 1, &hr);
        if (nc) return nc->id;
    }
    return 0;
}

/* Two CONNECTED neighbor links to one node (simultaneous cross-connect,
 * digest 5.7): keep the link initiated by the lower node ID, drop the other
 * with DISCONNECT(LEAST_USEFUL).  Returns 1 if c itself was dropped. */
static int resolve_cross_connect(pg_conn *c)
{
    pg_graph *g = c->graph;
    pg_conn *o;
    for (o = L.conns; o; o = o->next) {
        ULONGLONG initC, initO;
        pg_conn *loser;
        if (o == c || o->graph != g || o->dead || o->state != CS_CONNECTED || o->direct) continue;
        if (o->remote_node != c->remote_node) continue;
        initC = c->outbound ? g->node_id : c->remote_node;
        initO = o->outbound ? g->node_id : o->remote_node;
        if (initC == initO) loser = c->neighbor_seq > o->neighbor_seq ? c : o; /* same side twice: newer loses */
        else loser = initC < initO ? o : c;
        conn_disconnect(loser, DISC_LEAST_USEFUL, PEER_E_ALREADY_EXISTS);
        return loser == c;
    }
    return 0;
}

static void conn_become_connected(pg_conn *c)
{
    pg_graph *g = c->graph;
    c->state = CS_CONNECTED;
    c->deadline = PEER_NO_DEADLINE;
    c->neighbor_seq = ++g->neighbor_seq;
    emit_conn(g, c, PEER_CONNECTED, S_OK, 0);
    graph_update_status(g);
}

/* --- responder --- */

static void on_auth_info(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned type = m[8], ext = m[9] & EXT_ALL;
    size_t og, os, od;
    wchar_t *gid = NULL, *src = NULL, *dst = NULL;
    int inv = 0;
    pg_graph *g, *match = NULL;
    int graphSeen = 0;
    if (size < 16) goto bad;
    og = get16(m + 10);
    os = get16(m + 12);
    od = get16(m + 14);
    if ((type != 1 && type != 2) || og < 16 || !(og < os && os < od && od <= size)) goto bad;
    /* each string is NUL-terminated UTF-8 ending right before the next offset */
    if (m[os - 1] != 0 || m[od - 1] != 0 || os - og < 2 || od - os < 2) goto bad;
    if (od < size && (m[size - 1] != 0 || size - od < 2)) goto bad;
    gid = utf8_to_wcs(m + og, os - og - 1, &inv);
    if (!gid) goto badmem;
    src = utf8_to_wcs(m + os, od - os - 1, &inv);
    if (!src) goto badmem;
    if (od < size && !(dst = utf8_to_wcs(m + od, size - od - 1, &inv))) goto badmem;
    if (!wcs_valid(gid, PEER_MAX_ID_CHARS, 0) || !wcs_valid(src, PEER_MAX_ID_CHARS, 0) ||
        (dst && !wcs_valid(dst, PEER_MAX_ID_CHARS, 0)))
        goto bad;
    c->ext = ext;
    for (g = L.graphs; g; g = g->next) {
        if (g->listener != c->listener || !wcs_eq(g->graph_id, gid)) continue;
        graphSeen = 1;
        if (!dst || wcs_eq(dst, g->peer_id)) { match = g; break; }
    }
    if (!match) {
        if (ext & EXT_REASONS) {
            send_simple(c, MT_REFUSE, graphSeen ? REFUSE_X_WRONG_PEER : REFUSE_X_WRONG_GRAPH, NULL, 0);
            conn_close_after_flush(c, S_OK);
        } else
            conn_abort(c, S_OK);
        goto done;
    }
    c->graph = match;
    c->direct = type == 2;
    c->remote_peer = src;
    src = NULL;
    c->state = CS_CONNECT_WAIT; /* authenticated (null security) */
    c->deadline = L.now + PEER_CONNECT_TIMER_MS;
    goto done;
badmem:
    if (!inv) { conn_abort(c, E_OUTOFMEMORY); goto done; }
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
done:
    pg_free(gid);
    pg_free(src);
    pg_free(dst);
}

static void on_connect(pg_conn *c, const uint8_t *m, size_t size)
{
    pg_graph *g = c->graph;
    unsigned flags, n, aoff, foff;
    ULONGLONG node;
    SOCKADDR_IN6 *addrs = NULL;
    const pg_conn *o;
    if (size < 24) goto bad;
    flags = m[8];
    n = m[9];
    aoff = get16(m + 10);
    foff = get16(m + 12);
    node = get64(m + 16);
    if (n * 20 + aoff > size || foff < n * 20 + aoff || foff > size || (n && aoff < 24)) goto bad;
    if ((flags & 0x08) && n == 0) goto bad;
    if (foff < size && m[size - 1] != 0) goto bad; /* friendly name must be NUL-terminated */
    if (n) {
        addrs = (SOCKADDR_IN6 *)pg_alloc(n * sizeof *addrs);
        if (!addrs) { conn_abort(c, E_OUTOFMEMORY); return; }
        if (!read_addrs(m + aoff, n, addrs)) { pg_free(addrs); goto bad; }
    }
    /* 1. update of a connected link: new addresses, no reply */
    if ((flags & 0x08) && c->state == CS_CONNECTED) {
        pg_free(c->raddr);
        c->raddr = addrs;
        c->n_raddr = n;
        return;
    }
    if (c->state != CS_CONNECTED) {
        c->remote_node = node;
        pg_free(c->raddr);
        c->raddr = addrs;
        c->n_raddr = n;
    } else
        pg_free(addrs);
    /* 2. direct connections: not accepted in this release */
    if ((flags & 0x04) || c->direct) { send_refuse(c, REFUSE_DIRECT_DISALLOWED, S_OK); return; }
    if (node == g->node_id) { /* our own CONNECT came back */
        send_refuse(c, (c->ext & EXT_REASONS) ? REFUSE_X_SELF : REFUSE_DUPLICATE, S_OK);
        return;
    }
    /* 3. duplicate: this node is a neighbor over another connection */
    for (o = L.conns; o; o = o->next)
        if (o != c && o->graph == g && !o->dead && o->state == CS_CONNECTED && !o->direct && o->remote_node == node) {
            send_refuse(c, REFUSE_DUPLICATE, S_OK);
            return;
        }
    /* 4. busy (at Maximum Neighbors, or at the connection limit) */
    if (graph_conn_count(g, 1) >= PEER_MAX_NEIGHBORS || graph_conn_count(g, 0) > PEER_MAX_CONNECTIONS_PER_GRAPH) {
        send_refuse(c, REFUSE_BUSY, S_OK);
        return;
    }
    /* 5. already connected (U clear) */
    if (c->state == CS_CONNECTED) {
        send_refuse(c, REFUSE_ALREADY_CONNECTED, S_OK);
        return;
    }
    /* 6. accept */
    send_welcome(c, (flags & 0x01) != 0);
    if (c->dead) return;
    conn_become_connected(c);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* --- initiator --- */

static void on_welcome(pg_conn *c, const uint8_t *m, size_t size)
{
    pg_graph *g = c->graph;
    unsigned n, aoff, poff, foff;
    wchar_t *peer;
    int inv = 0;
    ULONG i;
    pg_conn *o;
    if (size < 32) goto bad;
    n = m[24];
    aoff = get16(m + 26);
    poff = get16(m + 28);
    foff = get16(m + 30);
    if (n * 20 + aoff >= size || poff < n * 20 + aoff || foff <= poff || foff > size || (n && aoff < 32) || poff < 32)
        goto bad;
    if (m[foff - 1] != 0 || (foff < size && m[size - 1] != 0)) goto bad;
    peer = utf8_to_wcs(m + poff, foff - poff - 1, &inv);
    if (!peer) { if (inv) goto bad; conn_abort(c, E_OUTOFMEMORY); return; }
    if (!wcs_valid(peer, PEER_MAX_ID_CHARS, 0)) { pg_free(peer); goto bad; }
    pg_free(c->remote_peer);
    c->remote_peer = peer;
    c->remote_node = get64(m + 8);
    c->ext &= m[25];
    if (n) {
        SOCKADDR_IN6 refs[255];
        if (!read_addrs(m + aoff, n, refs)) goto bad;
        for (i = 0; i < n; i++) referral_add(g, &refs[i]);
    }
    /* The responder has accepted; if we cannot keep the link, say goodbye. */
    if (c->remote_node == g->node_id || (c->want_peer && !wcs_eq(c->want_peer, peer))) {
        send_simple(c, MT_DISCONNECT, DISC_APP, NULL, 0);
        conn_close_after_flush(c, c->remote_node == g->node_id ? PEER_E_CONNECT_SELF : PEER_E_PEER_ID_MISMATCH);
        return;
    }
    conn_become_connected(c);
    if (resolve_cross_connect(c)) return;
    peer_time_update(g, c, get64(m + 16));
    for (o = L.conns; o; o = o->next)
        if (o->graph == g && !o->dead && o->state == CS_CONNECTED && !o->direct) send_ping(o);
    if (c->dead) return;
    if (!g->synchronized && !c->direct) {
        c->sync = SYNC_NEW;
        c->sync_step = 0;
        sync_next(c);
    }
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

static void on_refuse(pg_conn *c, const uint8_t *m, size_t size)
{
    pg_graph *g = c->graph;
    unsigned code, n, aoff;
    HRESULT hr;
    ULONGLONG next = 0;
    int hops = c->referral_hops;
    if (size < 12) goto bad;
    code = m[8];
    n = m[9];
    aoff = get16(m + 10);
    if (n * 20 + aoff > size || (n && aoff < 12)) goto bad;
    switch (code) {
    case REFUSE_BUSY: case REFUSE_ALREADY_CONNECTED: case REFUSE_DUPLICATE: case REFUSE_DIRECT_DISALLOWED:
        hr = PEER_E_CONNECTION_REFUSED; break;
    case REFUSE_X_WRONG_GRAPH: hr = PEER_E_GRAPH_ID_MISMATCH; break;
    case REFUSE_X_WRONG_PEER: hr = PEER_E_PEER_ID_MISMATCH; break;
    case REFUSE_X_SELF: hr = PEER_E_CONNECT_SELF; break;
    default: goto bad;
    }
    if (code >= 0x80 && !(c->ext & EXT_REASONS)) goto bad;
    if (n) {
        SOCKADDR_IN6 refs[255];
        ULONG i;
        if (!read_addrs(m + aoff, n, refs)) goto bad;
        for (i = 0; i < n; i++) referral_add(g, &refs[i]);
    }
    if (code == REFUSE_BUSY && !c->direct) next = follow_referral(g, hops);
    c->close_reason = hr;
    conn_report_close(c, hr, next);
    conn_kill(c);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* --- both --- */

static void on_disconnect(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned reason, n, aoff;
    if (size < 12) goto bad;
    reason = m[8];
    n = m[9];
    aoff = get16(m + 10);
    if (n * 20 + aoff > size || reason < 1 || reason > 3) goto bad;
    if (n && c->graph) {
        SOCKADDR_IN6 refs[255];
        ULONG i;
        if (aoff < 12 || !read_addrs(m + aoff, n, refs)) goto bad;
        for (i = 0; i < n; i++) referral_add(c->graph, &refs[i]);
    }
    conn_abort(c, c->state == CS_CONNECTED ? S_OK : PEER_E_CONNECTION_REFUSED);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* Checks of a SOLICIT_* (digest 2.4.6-2.4.8); returns 0 if malformed. */
static int solicit_valid(const uint8_t *m, size_t size, size_t fixed)
{
    unsigned inc, exc, off;
    if (size < fixed) return 0;
    inc = m[8];
    exc = m[9];
    off = get16(m + 10);
    if (inc > 1 || (inc && exc)) return 0;
    if ((inc + exc) * 16 + off > size || ((inc + exc) && off < fixed)) return 0;
    return 1;
}

static void on_pt2pt(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned doff;
    GUID t;
    PEER_GRAPH_EVENT_DATA e;
    pg_reg *r;
    if (size < 28) goto bad;
    doff = get16(m + 8);
    if (doff > size || doff < 28) goto bad;
    t.Data1 = get32(m + 12);
    t.Data2 = (uint16_t)get16(m + 16);
    t.Data3 = (uint16_t)get16(m + 18);
    memcpy(t.Data4, m + 20, 8);
    if (!memcmp(&t, &GUID_PING, sizeof t)) return; /* Ping: dropped silently */
    /* Application data: one event per registration, bytes inside the block. */
    memset(&e, 0, sizeof e);
    e.eventType = PEER_GRAPH_EVENT_INCOMING_DATA;
    for (r = L.regs; r; r = r->next) {
        PPEER_GRAPH_EVENT_DATA ev;
        size_t cb = size - doff;
        if (r->graph != c->graph || !reg_wants(r, e.eventType, NULL)) continue;
        ev = (PPEER_GRAPH_EVENT_DATA)pg_alloc(sizeof *ev + cb);
        if (!ev) { r->overflowed = 1; continue; }
        memset(ev, 0, sizeof *ev);
        ev->eventType = PEER_GRAPH_EVENT_INCOMING_DATA;
        ev->incomingData.dwSize = sizeof ev->incomingData;
        ev->incomingData.ullConnectionId = c->id;
        ev->incomingData.type = t;
        ev->incomingData.data.cbData = (ULONG)cb;
        ev->incomingData.data.pbData = cb ? (PBYTE)(ev + 1) : NULL;
        if (cb) memcpy(ev + 1, m + doff, cb);
        reg_push(r, ev);
    }
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* One complete message.  Acceptance follows digest 4.5. */
static void conn_dispatch(pg_conn *c, const uint8_t *m, size_t size)
{
    int type = m[5];
    if (m[4] != PEER_VERSION_BYTE || type < MT_AUTH_INFO || type > MT_ACK) {
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    }
    switch (c->state) {
    case CS_AUTH_WAIT:
        if (type == MT_AUTH_INFO) on_auth_info(c, m, size);
        else conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    case CS_CONNECT_WAIT:
        if (type == MT_CONNECT) on_connect(c, m, size);
        else conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    case CS_CONNECT_SENT:
        if (type == MT_WELCOME) on_welcome(c, m, size);
        else if (type == MT_REFUSE) on_refuse(c, m, size);
        else if (type == MT_DISCONNECT) on_disconnect(c, m, size);
        else conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    case CS_CLOSING:
        return; /* draining: ignore */
    case CS_CONNECTED:
        break;
    default:
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    }
    switch (type) {
    case MT_CONNECT:
        if (c->outbound) conn_abort(c, PEER_E_PROTOCOL_ERROR);
        else on_connect(c, m, size);
        break;
    case MT_DISCONNECT: on_disconnect(c, m, size); break;
    case MT_PT2PT: on_pt2pt(c, m, size); break;
    case MT_SOLICIT_NEW: case MT_SOLICIT_TIME: case MT_SOLICIT_HASH:
        if (c->direct || !solicit_valid(m, size, type == MT_SOLICIT_NEW ? 12 : 20)) {
            conn_abort(c, PEER_E_PROTOCOL_ERROR);
        } else if (type == MT_SOLICIT_HASH) {
            /* Hash sync needs the record store: no hash ranges to compare, so
             * answer as an empty database would. */
            uint8_t e[12];
            msg_header(e, 12, MT_SYNC_END);
            e[8] = 1; e[9] = e[10] = e[11] = 0;
            conn_send(c, e, 12);
        } else {
            /* The record store is not part of this release: the database
             * holds no records to FLOOD, so the answer is SYNC_END(F). */
            uint8_t e[12];
            msg_header(e, 12, MT_SYNC_END);
            e[8] = 1; e[9] = e[10] = e[11] = 0;
            conn_send(c, e, 12);
        }
        break;
    case MT_SYNC_END:
        if (size < 12) { conn_abort(c, PEER_E_PROTOCOL_ERROR); break; }
        if (c->sync != SYNC_NONE && (m[8] & 0x01)) sync_next(c);
        break;
    case MT_FLOOD:
        if (size < 16 || get16(m + 8) > size || get16(m + 10) != 0 || c->direct) conn_abort(c, PEER_E_PROTOCOL_ERROR);
        /* records: not stored in this release */
        break;
    case MT_ACK:
        if (size < 12 || get16(m + 10) > size || (size_t)get16(m + 8) * 20 + get16(m + 10) > size)
            conn_abort(c, PEER_E_PROTOCOL_ERROR);
        break;
    case MT_ADVERTISE: case MT_REQUEST:
        /* only valid during a hash sync we started; we never start one */
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        break;
    default: /* AUTH_INFO, WELCOME, REFUSE on an established link */
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        break;
    }
}

/* Feeds received bytes through the frame parser. */
static void conn_feed(pg_conn *c, const uint8_t *p, size_t n)
{
    while (n && !c->dead) {
        size_t k;
        if (c->fhdr_len < 2) {
            c->fhdr[c->fhdr_len++] = *p++;
            n--;
            if (c->fhdr_len == 2) {
                c->frame_left = get16(c->fhdr);
                if (c->frame_left == 0 || c->frame_left > PEER_FRAME_MAX_SIZE) {
                    conn_abort(c, PEER_E_PROTOCOL_ERROR);
                    return;
                }
            }
            continue;
        }
        k = n < c->frame_left ? n : c->frame_left;
        if (!buf_append(&c->rx, p, k)) { conn_abort(c, E_OUTOFMEMORY); return; }
        p += k;
        n -= k;
        c->frame_left -= (unsigned)k;
        if (!c->frame_left) c->fhdr_len = 0;
        /* dispatch every complete message */
        while (!c->dead && buf_used(&c->rx) >= 4) {
            const uint8_t *mp = c->rx.p + c->rx.off;
            size_t sz = get32(mp);
            if (sz < MSG_HDR || sz > conn_msg_limit(c)) { conn_abort(c, PEER_E_PROTOCOL_ERROR); return; }
            if (buf_used(&c->rx) < sz) break;
            conn_dispatch(c, mp, sz);
            if (c->dead) return;
            buf_consume(&c->rx, sz);
        }
    }
}

/* Reads what is there (bounded per call so one busy peer cannot starve the
 * others). */
static void conn_on_readable(pg_conn *c)
{
    uint8_t buf[16384];
    size_t total = 0;
    while (!c->dead && total < 262144) {
        long k = SHIM->pfnRecv(SHIM->pvContext, c->s, buf, sizeof buf);
        if (k == PEER_NET_WOULDBLOCK) return;
        if (k == 0) { /* orderly end of stream */
            if (c->state == CS_CLOSING) conn_kill(c);
            else conn_abort(c, c->state == CS_CONNECTED ? PEER_E_CONNECTION_FAILED
                               : c->outbound ? PEER_E_CONNECTION_NOT_AUTHENTICATED : S_OK);
            return;
        }
        if (k < 0) {
            if (c->state == CS_CLOSING) conn_kill(c);
            else conn_abort(c, PEER_E_CONNECTION_FAILED);
            return;
        }
        total += (size_t)k;
        conn_feed(c, buf, (size_t)k);
    }
}

/* TCP connect finished (or failed) for an outbound connection. */
static void conn_on_connect_result(pg_conn *c)
{
    HRESULT hr = SHIM->pfnConnectResult(SHIM->pvContext, c->s);
    if (hr == S_FALSE) return;
    if (FAILED(hr)) { conn_abort(c, hr); return; }
    /* null security: authenticated as soon as AUTH_INFO is out */
    send_auth_info(c);
    if (c->dead) return;
    send_connect(c, 0);
    if (c->dead) return;
    c->state = CS_CONNECT_SENT;
    c->deadline = L.now + PEER_CONNECT_TIMER_MS;
    conn_try_send(c);
}

/* Starts an outbound connection; NULL and *phr on failure. */
static pg_conn *graph_start_connect(pg_graph *g, const wchar_t *peer, const SOCKADDR_IN6 *a, int direct, int hops,
                                    HRESULT *phr)
{
    PEER_SOCKET s = PEER_INVALID_SOCKET;
    pg_conn *c;
    HRESULT hr;
    if (graph_conn_count(g, 0) >= PEER_MAX_CONNECTIONS_PER_GRAPH) { *phr = E_OUTOFMEMORY; return NULL; }
    c = conn_new(g, PEER_INVALID_SOCKET, 1);
    if (!c) { *phr = E_OUTOFMEMORY; return NULL; }
    c->remote = *a;
    c->direct = direct;
    c->referral_hops = hops;
    c->state = CS_TCP_CONNECTING;
    if (peer && !(c->want_peer = pg_wcsdup(peer))) { conn_kill(c); *phr = E_OUTOFMEMORY; return NULL; }
    hr = SHIM->pfnConnect(SHIM->pvContext, a, &s);
    if (FAILED(hr)) {
        /* reported as an event at the next service, like any failure */
        c->close_reason = hr;
        c->deadline = L.now;
    } else {
        c->s = s;
        if (!sock_put(s, c)) {
            SHIM->pfnClose(SHIM->pvContext, s);
            c->s = PEER_INVALID_SOCKET;
            conn_kill(c);
            *phr = E_OUTOFMEMORY;
            return NULL;
        }
        c->deadline = L.now + auth_timer_ms(graph_conn_count(g, 0) - 1);
        c->poke = 1; /* check the connect at the next service even without readiness */
    }
    g->used_network = 1;
    *phr = S_OK;
    return c;
}

/* ========================================================================= */
/* 9. Listeners                                                              */
/* One socket per (bound address, port), shared by the graphs listening on   */
/* it.  Accepted connections belong to no graph until their AUTH_INFO names */
/* one; at most PEER_MAX_PENDING_ACCEPTS of them wait per listener.          */
/* ========================================================================= */

static void listener_release(pg_listener *l)
{
    pg_listener **pp;
    pg_conn *c;
    if (--l->refs > 0) return;
    for (c = L.conns; c; c = c->next)
        if (c->listener == l && !c->graph && !c->dead) conn_kill(c);
    for (c = L.conns; c; c = c->next)
        if (c->listener == l) c->listener = NULL;
    for (pp = &L.listeners; *pp; pp = &(*pp)->next)
        if (*pp == l) { *pp = l->next; break; }
    socket_close(l->s, &l->announced);
    pg_free(l);
}

static void listener_accept(pg_listener *l)
{
    int i;
    for (i = 0; i < 64; i++) {
        PEER_SOCKET s;
        SOCKADDR_IN6 remote;
        ULONG pending = 0;
        pg_conn *c;
        HRESULT hr = SHIM->pfnAccept(SHIM->pvContext, l->s, &s, &remote);
        if (hr != S_OK) return;
        for (c = L.conns; c; c = c->next)
            if (c->listener == l && !c->graph && !c->dead && c->state != CS_CLOSING) pending++;
        if (pending >= PEER_MAX_PENDING_ACCEPTS) {
            SHIM->pfnClose(SHIM->pvContext, s);
            continue;
        }
        c = conn_new(NULL, s, 0);
        if (!c) { SHIM->pfnClose(SHIM->pvContext, s); return; }
        c->listener = l;
        c->remote = remote;
        c->state = CS_AUTH_WAIT;
        c->deadline = L.now + auth_timer_ms(pending);
    }
}

/* ========================================================================= */
/* 10. Service loop and timers                                               */
/* Service = (ready sockets or "try all") + expired timers + flush.  The     */
/* deadline given to the host is the earliest connection timer; a timer set  */
/* to `now` by an API call means "call me now".                               */
/* ========================================================================= */

static void conn_on_timer(pg_conn *c)
{
    switch (c->state) {
    case CS_TCP_CONNECTING:
        if (c->s == PEER_INVALID_SOCKET) { conn_abort(c, c->close_reason); return; }
        conn_on_connect_result(c); /* one last look before declaring a timeout */
        if (!c->dead && c->state == CS_TCP_CONNECTING) conn_abort(c, PEER_E_TIMEOUT);
        return;
    case CS_AUTH_WAIT:
    case CS_CONNECT_WAIT:
    case CS_CONNECT_SENT:
        conn_abort(c, PEER_E_TIMEOUT);
        return;
    case CS_CLOSING:
        conn_kill(c);
        return;
    default:
        c->deadline = PEER_NO_DEADLINE;
    }
}

static void conn_service(pg_conn *c, DWORD ev)
{
    if (c->dead) return;
    if (c->state == CS_TCP_CONNECTING) {
        if (c->s != PEER_INVALID_SOCKET && (ev & (PEER_POLL_WRITE | PEER_POLL_ERROR | PEER_POLL_READ)))
            conn_on_connect_result(c);
        return;
    }
    if (ev & (PEER_POLL_READ | PEER_POLL_ERROR)) conn_on_readable(c);
    if (!c->dead && buf_used(&c->tx)) conn_try_send(c);
}

/* Tells the poll callback about interest changes. */
static void announce_interest(void)
{
    pg_listener *l;
    pg_conn *c;
    if (!L.poll_cb) return;
    for (l = L.listeners; l; l = l->next)
        if (l->announced != PEER_POLL_READ) { l->announced = PEER_POLL_READ; L.poll_cb(L.poll_ctx, l->s, PEER_POLL_READ); }
    for (c = L.conns; c; c = c->next) {
        DWORD want = conn_interest(c);
        if (c->dead || c->s == PEER_INVALID_SOCKET || want == c->announced) continue;
        c->announced = want;
        L.poll_cb(L.poll_ctx, c->s, want);
    }
}

/* Ends every public call that may have changed state. */
static void finish_call(void)
{
    sweep();
    announce_interest();
}

static void service_all(const PEER_POLL_FD *ready, ULONG n)
{
    pg_conn *c;
    pg_listener *l;
    ULONG i;
    if (!ready) {
        for (l = L.listeners; l; l = l->next) listener_accept(l);
        for (c = L.conns; c; c = c->next) conn_service(c, PEER_POLL_READ | PEER_POLL_WRITE);
    } else {
        for (i = 0; i < n; i++) {
            void *o = sock_get(ready[i].s);
            if (!o || !ready[i].dwEvents) continue;
            if (*(int *)o == OBJ_LISTENER) listener_accept((pg_listener *)o);
            else conn_service((pg_conn *)o, ready[i].dwEvents);
        }
    }
    for (c = L.conns; c; c = c->next) {
        if (c->dead) continue;
        if (c->poke) {
            c->poke = 0;
            if (c->state == CS_TCP_CONNECTING && c->s != PEER_INVALID_SOCKET) conn_on_connect_result(c);
        }
        if (!c->dead && c->deadline != PEER_NO_DEADLINE && c->deadline <= L.now) conn_on_timer(c);
        if (!c->dead && buf_used(&c->tx)) conn_try_send(c);
    }
}

static ULONGLONG next_deadline(void)
{
    ULONGLONG d = PEER_NO_DEADLINE;
    const pg_conn *c;
    for (c = L.conns; c; c = c->next) {
        if (c->dead) continue;
        if (c->poke) return L.now;
        if (c->deadline < d) d = c->deadline;
    }
    return d;
}

/* ========================================================================= */
/* 11. Public API                                                            */
/* Every entry point checks initialisation and arguments first, does its    */
/* work, then finish_call() frees what died and updates the poll callback.   */
/* ========================================================================= */

#define REQUIRE_STARTED() do { if (!L.started) return PEER_E_NOT_INITIALIZED; } while (0)

HRESULT PeerGraphSetNetShim(const PEER_NET_SHIM *pShim)
{
    if (L.started) return E_ACCESSDENIED;
    if (!pShim) { L.shim_set = 0; return S_OK; }
    if (pShim->dwSize != sizeof(PEER_NET_SHIM) || !pShim->pfnStartup || !pShim->pfnCleanup || !pShim->pfnListen ||
        !pShim->pfnAccept || !pShim->pfnConnect || !pShim->pfnConnectResult || !pShim->pfnSend || !pShim->pfnRecv ||
        !pShim->pfnLocalAddress || !pShim->pfnShutdownSend || !pShim->pfnClose || !pShim->pfnWait ||
        !pShim->pfnTickCount || !pShim->pfnUtcNow || !pShim->pfnRandom)
        return E_INVALIDARG;
    L.shim = *pShim;
    L.shim_set = 1;
    return S_OK;
}

HRESULT PeerGraphSetDatabaseDirectory(PCWSTR pwzDirectory)
{
    char *d;
    if (!pwzDirectory) { pg_free(L.db_dir); L.db_dir = NULL; return S_OK; }
    if (!*pwzDirectory || wcs_units16(pwzDirectory) < 0 || utf8_len(pwzDirectory) > 1024) return E_INVALIDARG;
    d = wcs_to_utf8(pwzDirectory);
    if (!d) return E_OUTOFMEMORY;
    pg_free(L.db_dir);
    L.db_dir = d;
    return S_OK;
}

HRESULT PeerGraphStartup(WORD wVersionRequested, PPEER_VERSION_DATA pVersionData)
{
    HRESULT hr;
    if (!pVersionData) return E_INVALIDARG;
    if (wVersionRequested != PEER_GRAPH_VERSION) return PEER_E_UNSUPPORTED_VERSION;
    pVersionData->wVersion = PEER_GRAPH_VERSION;
    pVersionData->wHighestVersion = PEER_GRAPH_VERSION;
    if (L.started) { L.started++; return S_OK; }
    if (!L.shim_set) L.shim = *PeerGraphGetPlatformNetShim();
    hr = SHIM->pfnStartup(SHIM->pvContext);
    if (FAILED(hr)) return hr;
    L.now = SHIM->pfnTickCount(SHIM->pvContext);
    L.started = 1;
    return S_OK;
}

static void graph_free(pg_graph *g)
{
    pg_free(g->graph_id);
    pg_free(g->peer_id);
    pg_free(g->db_name);
    pg_free(g->db_path);
    pg_free(g->creator_id);
    pg_free(g->friendly);
    pg_free(g->comment);
    pg_free(g->sync_types);
    pg_free(g);
}

/* Close: goodbye to neighbors, drop the rest, free registrations. */
static void graph_close(pg_graph *g)
{
    pg_graph **pp;
    pg_conn *c;
    pg_reg **rp;
    /* events stop now: registrations go first so closing emits nothing */
    for (rp = &L.regs; *rp;) {
        pg_reg *r = *rp;
        if (r->graph == g) { *rp = r->next; reg_free(r); }
        else rp = &r->next;
    }
    if (g->used_network || g->synchronized) {
        g->left_pt = peer_time(g);
        db_save(g);
    }
    for (c = L.conns; c; c = c->next) {
        if (c->graph != g || c->dead) continue;
        if (c->state == CS_CONNECTED) conn_disconnect(c, DISC_LEAVING, S_OK);
        else conn_kill(c);
        c->graph = NULL;
    }
    for (c = L.conns; c; c = c->next)
        if (c->graph == g) c->graph = NULL;
    if (g->listener) listener_release(g->listener);
    g->listener = NULL;
    for (pp = &L.graphs; *pp; pp = &(*pp)->next)
        if (*pp == g) { *pp = g->next; break; }
    graph_free(g);
}

HRESULT PeerGraphShutdown(void)
{
    pg_conn *c;
    REQUIRE_STARTED();
    if (--L.started > 0) return S_OK;
    while (L.graphs) graph_close(L.graphs);
    /* one non-blocking attempt to get the DISCONNECTs out */
    for (c = L.conns; c; c = c->next)
        if (!c->dead && buf_used(&c->tx)) conn_try_send(c);
    for (c = L.conns; c; c = c->next) conn_kill(c);
    sweep();
    while (L.listeners) { L.listeners->refs = 1; listener_release(L.listeners); }
    while (L.regs) { pg_reg *r = L.regs; L.regs = r->next; reg_free(r); }
    while (L.enums) { pg_enum *e = L.enums; L.enums = e->next; enum_free(e); }
    pg_free(L.socks);
    L.socks = NULL;
    L.sock_cap = L.sock_n = 0;
    pg_free(L.wait_want);
    pg_free(L.wait_ready);
    L.wait_want = L.wait_ready = NULL;
    L.wait_cap = 0;
    SHIM->pfnCleanup(SHIM->pvContext);
    return S_OK;
}

void PeerGraphFreeData(PVOID pvData) { pg_free(pvData); }

ULONGLONG PeerGraphGetTickCount(void)
{
    const PEER_NET_SHIM *s = L.started || L.shim_set ? &L.shim : PeerGraphGetPlatformNetShim();
    return s->pfnTickCount(s->pvContext);
}

HRESULT PeerGraphGetPollFds(PEER_POLL_FD *pFds, ULONG cMax, ULONG *pcFds, ULONGLONG *pullDeadline)
{
    ULONG n = 0;
    pg_listener *l;
    pg_conn *c;
    REQUIRE_STARTED();
    if (!pcFds || !pullDeadline || (!pFds && cMax)) return E_INVALIDARG;
    for (l = L.listeners; l; l = l->next) {
        if (n < cMax) { pFds[n].s = l->s; pFds[n].dwEvents = PEER_POLL_READ; }
        n++;
    }
    for (c = L.conns; c; c = c->next) {
        DWORD want = conn_interest(c);
        if (!want) continue;
        if (n < cMax) { pFds[n].s = c->s; pFds[n].dwEvents = want; }
        n++;
    }
    *pcFds = n;
    *pullDeadline = next_deadline();
    return n > cMax ? E_NOT_SUFFICIENT_BUFFER : S_OK;
}

HRESULT PeerGraphService(const PEER_POLL_FD *pReady, ULONG cReady, ULONGLONG ullNow)
{
    REQUIRE_STARTED();
    if (!pReady && cReady) return E_INVALIDARG;
    L.now = ullNow;
    service_all(pReady, pReady ? cReady : 0);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphRunOnce(DWORD dwMaxWaitMs)
{
    ULONG n = 0, nready = 0;
    ULONGLONG deadline, now;
    DWORD wait = dwMaxWaitMs;
    HRESULT hr;
    REQUIRE_STARTED();
    for (;;) {
        hr = PeerGraphGetPollFds(L.wait_want, L.wait_cap, &n, &deadline);
        if (hr != E_NOT_SUFFICIENT_BUFFER) break;
        {
            ULONG cap = n + 16;
            PEER_POLL_FD *w = (PEER_POLL_FD *)pg_realloc(L.wait_want, cap * sizeof *w);
            PEER_POLL_FD *r;
            if (!w) return E_OUTOFMEMORY;
            L.wait_want = w;
            r = (PEER_POLL_FD *)pg_realloc(L.wait_ready, cap * sizeof *r);
            if (!r) return E_OUTOFMEMORY;
            L.wait_ready = r;
            L.wait_cap = cap;
        }
    }
    now = SHIM->pfnTickCount(SHIM->pvContext);
    if (deadline != PEER_NO_DEADLINE) {
        ULONGLONG left = deadline > now ? deadline - now : 0;
        if (left < wait) wait = (DWORD)left;
    }
    hr = SHIM->pfnWait(SHIM->pvContext, L.wait_want, n, L.wait_ready, &nready, wait);
    if (FAILED(hr)) return hr;
    return PeerGraphService(L.wait_ready ? L.wait_ready : L.wait_want, L.wait_ready ? nready : 0,
                            SHIM->pfnTickCount(SHIM->pvContext));
}

HRESULT PeerGraphSetPollCallback(void (*pfn)(PVOID pvContext, PEER_SOCKET s, DWORD dwEvents), PVOID pvContext)
{
    pg_listener *l;
    pg_conn *c;
    REQUIRE_STARTED();
    /* a new callback starts from nothing announced */
    for (l = L.listeners; l; l = l->next) l->announced = 0;
    for (c = L.conns; c; c = c->next) c->announced = 0;
    L.poll_cb = pfn;
    L.poll_ctx = pvContext;
    announce_interest();
    return S_OK;
}

/* Checks a PEER_GRAPH_PROPERTIES for Create. */
static int props_valid(const PEER_GRAPH_PROPERTIES *p)
{
    if (p->dwSize != sizeof *p) return 0;
    if (!wcs_valid(p->pwzGraphId, PEER_MAX_ID_CHARS, 0) || !wcs_valid(p->pwzCreatorId, PEER_MAX_ID_CHARS, 0)) return 0;
    if (p->pwzFriendlyName && !wcs_valid(p->pwzFriendlyName, PEER_MAX_FRIENDLY_NAME_CHARS, 1)) return 0;
    if (p->pwzComment && !wcs_valid(p->pwzComment, PEER_MAX_COMMENT_CHARS, 1)) return 0;
    if (p->dwMaxRecordSize && (p->dwMaxRecordSize < PEER_MIN_RECORD_SIZE || p->dwMaxRecordSize > PEER_DEFAULT_MAX_RECORD_SIZE))
        return 0;
    if (p->dwScope > PEER_GRAPH_SCOPE_LOOPBACK) return 0;
    if (p->dwFlags & ~(DWORD)(PEER_GRAPH_PROPERTY_HEARTBEATS | PEER_GRAPH_PROPERTY_DEFER_EXPIRATION)) return 0;
    if (p->ulPresenceLifetime && p->ulPresenceLifetime < 300) return 0;
    return 1;
}

static pg_graph *graph_alloc(PCWSTR gid, PCWSTR pid, PCWSTR dbname)
{
    pg_graph *g = (pg_graph *)pg_calloc(1, sizeof *g);
    if (!g) return NULL;
    g->graph_id = pg_wcsdup(gid);
    g->peer_id = pg_wcsdup(pid);
    g->db_name = pg_wcsdup(dbname);
    g->db_path = db_path_for(gid, pid, dbname);
    if (!g->graph_id || !g->peer_id || !g->db_name || !g->db_path) { graph_free(g); return NULL; }
    g->max_record = PEER_DEFAULT_MAX_RECORD_SIZE;
    g->presence_lifetime = 300;
    g->presence_max = (ULONG)-1;
    g->scope = PEER_GRAPH_SCOPE_GLOBAL;
    do g->node_id = random64(); while (!g->node_id);
    return g;
}

static int graph_path_open(const char *path)
{
    const pg_graph *g;
    for (g = L.graphs; g; g = g->next)
        if (!strcmp(g->db_path, path)) return 1;
    return 0;
}

static void graph_link(pg_graph *g)
{
    g->handle = new_handle();
    g->next = L.graphs;
    L.graphs = g;
    g->status = graph_compute_status(g);
}

HRESULT PeerGraphCreate(PPEER_GRAPH_PROPERTIES pGraphProperties, PCWSTR pwzDatabaseName,
                        PPEER_SECURITY_INTERFACE pSecurityInterface, HGRAPH *phGraph)
{
    pg_graph *g;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!pGraphProperties || !phGraph || !dbname_valid(pwzDatabaseName) || pSecurityInterface ||
        !props_valid(pGraphProperties))
        return E_INVALIDARG;
    g = graph_alloc(pGraphProperties->pwzGraphId, pGraphProperties->pwzCreatorId, pwzDatabaseName);
    if (!g) return E_OUTOFMEMORY;
    if (graph_path_open(g->db_path) || file_exists(g->db_path)) { graph_free(g); return PEER_E_DUPLICATE_GRAPH; }
    g->flags = pGraphProperties->dwFlags;
    g->scope = pGraphProperties->dwScope ? pGraphProperties->dwScope : PEER_GRAPH_SCOPE_GLOBAL;
    g->max_record = pGraphProperties->dwMaxRecordSize ? pGraphProperties->dwMaxRecordSize : PEER_DEFAULT_MAX_RECORD_SIZE;
    g->presence_lifetime = pGraphProperties->ulPresenceLifetime ? pGraphProperties->ulPresenceLifetime : 300;
    g->presence_max = pGraphProperties->cPresenceMax;
    g->is_creator = 1;
    g->synchronized = 1; /* a brand-new graph is in sync */
    g->creator_id = pg_wcsdup(pGraphProperties->pwzCreatorId);
    if (pGraphProperties->pwzFriendlyName) g->friendly = pg_wcsdup(pGraphProperties->pwzFriendlyName);
    if (pGraphProperties->pwzComment) g->comment = pg_wcsdup(pGraphProperties->pwzComment);
    if (!g->creator_id || (pGraphProperties->pwzFriendlyName && !g->friendly) ||
        (pGraphProperties->pwzComment && !g->comment)) {
        graph_free(g);
        return E_OUTOFMEMORY;
    }
    hr = db_save(g);
    if (FAILED(hr)) { graph_free(g); return hr; }
    graph_link(g);
    *phGraph = (HGRAPH)g->handle;
    return S_OK;
}

HRESULT PeerGraphOpen(PCWSTR pwzGraphId, PCWSTR pwzPeerId, PCWSTR pwzDatabaseName,
                      PPEER_SECURITY_INTERFACE pSecurityInterface, ULONG cRecordTypeSyncPrecedence,
                      const GUID *pRecordTypeSyncPrecedence, HGRAPH *phGraph)
{
    pg_graph *g;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!phGraph || !wcs_valid(pwzGraphId, PEER_MAX_ID_CHARS, 0) || !wcs_valid(pwzPeerId, PEER_MAX_ID_CHARS, 0) ||
        !dbname_valid(pwzDatabaseName) || pSecurityInterface ||
        (cRecordTypeSyncPrecedence == 0) != (pRecordTypeSyncPrecedence == NULL) || cRecordTypeSyncPrecedence > 253)
        return E_INVALIDARG;
    g = graph_alloc(pwzGraphId, pwzPeerId, pwzDatabaseName);
    if (!g) return E_OUTOFMEMORY;
    if (graph_path_open(g->db_path)) { graph_free(g); return PEER_E_DUPLICATE_GRAPH; }
    if (cRecordTypeSyncPrecedence) {
        g->sync_types = (GUID *)pg_alloc(cRecordTypeSyncPrecedence * sizeof(GUID));
        if (!g->sync_types) { graph_free(g); return E_OUTOFMEMORY; }
        memcpy(g->sync_types, pRecordTypeSyncPrecedence, cRecordTypeSyncPrecedence * sizeof(GUID));
        g->n_sync_types = cRecordTypeSyncPrecedence;
    }
    hr = db_load(g);
    if (FAILED(hr)) { graph_free(g); return hr; }
    if (hr == S_FALSE) {
        hr = db_save(g); /* a new, empty, unsynchronized database */
        if (FAILED(hr)) { graph_free(g); return hr; }
    }
    hr = g->synchronized ? S_OK : PEER_S_GRAPH_DATA_CREATED;
    graph_link(g);
    *phGraph = (HGRAPH)g->handle;
    return hr;
}

HRESULT PeerGraphListen(HGRAPH hGraph, DWORD dwScope, DWORD dwScopeId, WORD wPort)
{
    pg_graph *g;
    pg_listener *l;
    SOCKADDR_IN6 want;
    static const uint8_t any[16] = {0}, lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    pg_conn *c;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (dwScope > PEER_GRAPH_SCOPE_LOOPBACK) return E_INVALIDARG;
    if ((dwScope == PEER_GRAPH_SCOPE_SITELOCAL || dwScope == PEER_GRAPH_SCOPE_LINKLOCAL) != (dwScopeId != 0))
        return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if (g->listener) return PEER_E_ALREADY_LISTENING;
    addr_make(&want, dwScope == PEER_GRAPH_SCOPE_LOOPBACK ? lo : any, wPort);
    l = NULL;
    if (wPort)
        for (l = L.listeners; l; l = l->next)
            if (addr_eq(&l->bound, &want)) break;
    if (l) l->refs++;
    else {
        HRESULT hr;
        l = (pg_listener *)pg_calloc(1, sizeof *l);
        if (!l) return E_OUTOFMEMORY;
        l->kind = OBJ_LISTENER;
        hr = SHIM->pfnListen(SHIM->pvContext, &want, &l->s, &l->bound);
        if (FAILED(hr)) { pg_free(l); return hr; }
        if (!sock_put(l->s, l)) { SHIM->pfnClose(SHIM->pvContext, l->s); pg_free(l); return E_OUTOFMEMORY; }
        l->refs = 1;
        l->next = L.listeners;
        L.listeners = l;
    }
    g->listener = l;
    g->listen_scope = dwScope;
    g->used_network = 1;
    /* tell the nodes we connected to where we can now be reached (U=1) */
    for (c = L.conns; c; c = c->next)
        if (c->graph == g && !c->dead && c->state == CS_CONNECTED && c->outbound && !c->direct) send_connect(c, 1);
    for (c = L.conns; c; c = c->next)
        if (c->graph == g && !c->dead && buf_used(&c->tx)) conn_try_send(c);
    graph_update_status(g);
    finish_call();
    return S_OK;
}

static int peer_address_valid(const PEER_ADDRESS *a)
{
    return a && a->dwSize == sizeof(PEER_ADDRESS) && a->sin6.sin6_family == AF_INET6 && addr_port(&a->sin6) != 0 &&
           !addr_is_unspecified(&a->sin6);
}

HRESULT PeerGraphConnect(HGRAPH hGraph, PCWSTR pwzPeerId, PPEER_ADDRESS pAddress, ULONGLONG *pullConnectionId)
{
    pg_graph *g;
    pg_conn *c;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pullConnectionId || !peer_address_valid(pAddress)) return E_INVALIDARG;
    if (pwzPeerId && !wcs_valid(pwzPeerId, PEER_MAX_ID_CHARS, 0)) return E_INVALIDARG;
    if (g->listener) {
        SOCKADDR_IN6 la = g->listener->bound;
        if (addr_port(&la) == addr_port(&pAddress->sin6) &&
            (addr_is_loopback(&pAddress->sin6) || addr_eq(&la, &pAddress->sin6)))
            return PEER_E_CONNECT_SELF;
    }
    for (c = L.conns; c; c = c->next) {
        SOCKADDR_IN6 ra;
        if (c->graph != g || c->dead || c->direct) continue;
        if (c->state == CS_CONNECTED && conn_reach_addr(c, &ra) && addr_eq(&ra, &pAddress->sin6) &&
            (!pwzPeerId || wcs_eq(pwzPeerId, c->remote_peer)))
            return PEER_E_ALREADY_EXISTS;
        if (c->outbound && c->state != CS_CONNECTED && c->state != CS_CLOSING && addr_eq(&c->remote, &pAddress->sin6) &&
            wcs_eq(pwzPeerId, c->want_peer))
            return PEER_E_ALREADY_EXISTS;
    }
    c = graph_start_connect(g, pwzPeerId, &pAddress->sin6, 0, 0, &hr);
    if (!c) { finish_call(); return hr; }
    *pullConnectionId = c->id;
    finish_call();
    return S_OK;
}

HRESULT PeerGraphClose(HGRAPH hGraph)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    graph_close(g);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphDelete(PCWSTR pwzGraphId, PCWSTR pwzPeerId, PCWSTR pwzDatabaseName)
{
    char *path;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!wcs_valid(pwzGraphId, PEER_MAX_ID_CHARS, 0) || !wcs_valid(pwzPeerId, PEER_MAX_ID_CHARS, 0) ||
        !dbname_valid(pwzDatabaseName))
        return E_INVALIDARG;
    path = db_path_for(pwzGraphId, pwzPeerId, pwzDatabaseName);
    if (!path) return E_OUTOFMEMORY;
    if (graph_path_open(path)) hr = E_ACCESSDENIED;
    else if (!file_exists(path)) hr = PEER_E_DATABASE_NOT_PRESENT;
    else hr = remove(path) == 0 ? S_OK : PEER_E_DATABASE_ACCESSDENIED;
    pg_free(path);
    return hr;
}

HRESULT PeerGraphGetStatus(HGRAPH hGraph, DWORD *pdwStatus)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pdwStatus) return E_INVALIDARG;
    *pdwStatus = graph_compute_status(g);
    return S_OK;
}

/* Lays out strings after a struct in one block. */
static size_t wsize(const wchar_t *w) { return w ? (wcslen(w) + 1) * sizeof(wchar_t) : 0; }
static PWSTR wplace(uint8_t **pp, const wchar_t *w)
{
    size_t n = wsize(w);
    PWSTR r;
    if (!w) return NULL;
    r = (PWSTR)*pp;
    memcpy(r, w, n);
    *pp += n;
    return r;
}

HRESULT PeerGraphGetProperties(HGRAPH hGraph, PPEER_GRAPH_PROPERTIES *ppGraphProperties)
{
    pg_graph *g;
    PPEER_GRAPH_PROPERTIES p;
    uint8_t *cur;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!ppGraphProperties) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    p = (PPEER_GRAPH_PROPERTIES)pg_calloc(1, sizeof *p + wsize(g->graph_id) + wsize(g->creator_id) +
                                                 wsize(g->friendly) + wsize(g->comment));
    if (!p) return E_OUTOFMEMORY;
    cur = (uint8_t *)(p + 1);
    p->dwSize = sizeof *p;
    p->dwFlags = g->flags;
    p->dwScope = g->scope;
    p->dwMaxRecordSize = g->max_record;
    p->pwzGraphId = wplace(&cur, g->graph_id);
    p->pwzCreatorId = wplace(&cur, g->creator_id);
    p->pwzFriendlyName = wplace(&cur, g->friendly);
    p->pwzComment = wplace(&cur, g->comment);
    p->ulPresenceLifetime = g->presence_lifetime;
    p->cPresenceMax = g->presence_max;
    *ppGraphProperties = p;
    return S_OK;
}

HRESULT PeerGraphSetProperties(HGRAPH hGraph, PPEER_GRAPH_PROPERTIES pGraphProperties)
{
    pg_graph *g;
    wchar_t *nf = NULL, *nc = NULL;
    PEER_GRAPH_EVENT_DATA e;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pGraphProperties || pGraphProperties->dwSize != sizeof *pGraphProperties) return E_INVALIDARG;
    if (pGraphProperties->pwzFriendlyName && !wcs_valid(pGraphProperties->pwzFriendlyName, PEER_MAX_FRIENDLY_NAME_CHARS, 1))
        return E_INVALIDARG;
    if (pGraphProperties->pwzComment && !wcs_valid(pGraphProperties->pwzComment, PEER_MAX_COMMENT_CHARS, 1))
        return E_INVALIDARG;
    if (pGraphProperties->ulPresenceLifetime && pGraphProperties->ulPresenceLifetime < 300) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if (!g->is_creator) return E_ACCESSDENIED;
    if (pGraphProperties->pwzFriendlyName && !(nf = pg_wcsdup(pGraphProperties->pwzFriendlyName))) return E_OUTOFMEMORY;
    if (pGraphProperties->pwzComment && !(nc = pg_wcsdup(pGraphProperties->pwzComment))) {
        pg_free(nf);
        return E_OUTOFMEMORY;
    }
    pg_free(g->friendly);
    g->friendly = nf;
    pg_free(g->comment);
    g->comment = nc;
    g->presence_lifetime = pGraphProperties->ulPresenceLifetime ? pGraphProperties->ulPresenceLifetime : 300;
    g->presence_max = pGraphProperties->cPresenceMax;
    db_save(g);
    memset(&e, 0, sizeof e);
    e.eventType = PEER_GRAPH_EVENT_PROPERTY_CHANGED;
    emit(g, &e, NULL, NULL);
    return S_OK;
}

HRESULT PeerGraphGetNodeInfo(HGRAPH hGraph, ULONGLONG ullNodeId, PPEER_NODE_INFO *ppNodeInfo)
{
    pg_graph *g;
    PPEER_NODE_INFO ni;
    const wchar_t *peer = NULL;
    const SOCKADDR_IN6 *addrs = NULL;
    SOCKADDR_IN6 one;
    ULONG n = 0, i;
    uint8_t *cur;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!ppNodeInfo) return E_INVALIDARG;
    if (ullNodeId == 0 || ullNodeId == g->node_id) {
        peer = g->peer_id;
        ullNodeId = g->node_id;
        if (g->listener) { one = g->listener->bound; addrs = &one; n = 1; }
    } else {
        const pg_conn *c;
        for (c = L.conns; c; c = c->next)
            if (c->graph == g && !c->dead && c->state == CS_CONNECTED && c->remote_node == ullNodeId) break;
        if (!c) return PEER_E_NODE_NOT_FOUND;
        peer = c->remote_peer;
        if (c->n_raddr) { addrs = c->raddr; n = c->n_raddr; }
        else if (c->outbound) { one = c->remote; addrs = &one; n = 1; }
    }
    ni = (PPEER_NODE_INFO)pg_calloc(1, sizeof *ni + n * sizeof(PEER_ADDRESS) + wsize(peer));
    if (!ni) return E_OUTOFMEMORY;
    ni->dwSize = sizeof *ni;
    ni->ullNodeId = ullNodeId;
    ni->cAddresses = n;
    ni->pAddresses = n ? (PPEER_ADDRESS)(ni + 1) : NULL;
    for (i = 0; i < n; i++) {
        ni->pAddresses[i].dwSize = sizeof(PEER_ADDRESS);
        ni->pAddresses[i].sin6 = addrs[i];
    }
    cur = (uint8_t *)(ni + 1) + n * sizeof(PEER_ADDRESS);
    ni->pwzPeerId = wplace(&cur, peer);
    *ppNodeInfo = ni;
    return S_OK;
}

HRESULT PeerGraphRegisterEvent(HGRAPH hGraph, HANDLE hEvent, ULONG cEventRegistrations,
                               PEER_GRAPH_EVENT_REGISTRATION *pEventRegistrations, HPEEREVENT *phPeerEvent)
{
    pg_graph *g;
    pg_reg *r;
    ULONG i;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!phPeerEvent || !pEventRegistrations || !cEventRegistrations || cEventRegistrations > 1024) return E_INVALIDARG;
#ifndef _WIN32
    if (hEvent) return E_INVALIDARG;
#endif
    for (i = 0; i < cEventRegistrations; i++)
        if (pEventRegistrations[i].eventType < PEER_GRAPH_EVENT_STATUS_CHANGED ||
            pEventRegistrations[i].eventType > PEER_GRAPH_EVENT_SYNCHRONIZED)
            return E_INVALIDARG;
    r = (pg_reg *)pg_calloc(1, sizeof *r);
    if (!r) return E_OUTOFMEMORY;
    r->types = (PEER_GRAPH_EVENT_TYPE *)pg_alloc(cEventRegistrations * sizeof *r->types);
    r->filters = (GUID *)pg_calloc(cEventRegistrations, sizeof *r->filters);
    r->has_filter = (int *)pg_calloc(cEventRegistrations, sizeof *r->has_filter);
    if (!r->types || !r->filters || !r->has_filter) { reg_free(r); return E_OUTOFMEMORY; }
    r->n = cEventRegistrations;
    for (i = 0; i < cEventRegistrations; i++) {
        r->types[i] = pEventRegistrations[i].eventType;
        if (pEventRegistrations[i].pType &&
            (r->types[i] == PEER_GRAPH_EVENT_RECORD_CHANGED || r->types[i] == PEER_GRAPH_EVENT_SYNCHRONIZED)) {
            r->filters[i] = *pEventRegistrations[i].pType;
            r->has_filter[i] = 1;
        }
    }
    r->graph = g;
    r->hEvent = hEvent;
    r->handle = new_handle();
    r->next = L.regs;
    L.regs = r;
    *phPeerEvent = (HPEEREVENT)r->handle;
    return S_OK;
}

static pg_reg *reg_from_handle(HPEEREVENT h)
{
    pg_reg *r;
    for (r = L.regs; r; r = r->next)
        if (r->handle == (uintptr_t)h) return r;
    return NULL;
}

HRESULT PeerGraphUnregisterEvent(HPEEREVENT hPeerEvent)
{
    pg_reg **pp;
    REQUIRE_STARTED();
    if (!hPeerEvent) return E_INVALIDARG;
    for (pp = &L.regs; *pp; pp = &(*pp)->next)
        if ((*pp)->handle == (uintptr_t)hPeerEvent) {
            pg_reg *r = *pp;
            *pp = r->next;
            reg_free(r);
            return S_OK;
        }
    return PEER_E_EVENT_HANDLE_NOT_FOUND;
}

HRESULT PeerGraphGetEventData(HPEEREVENT hPeerEvent, PPEER_GRAPH_EVENT_DATA *ppEventData)
{
    pg_reg *r;
    REQUIRE_STARTED();
    if (!hPeerEvent || !ppEventData) return E_INVALIDARG;
    if (!(r = reg_from_handle(hPeerEvent))) return PEER_E_EVENT_HANDLE_NOT_FOUND;
    *ppEventData = NULL;
    if (r->overflowed && reg_wants(r, PEER_GRAPH_EVENT_STATUS_CHANGED, NULL)) {
        PPEER_GRAPH_EVENT_DATA ev = (PPEER_GRAPH_EVENT_DATA)pg_calloc(1, sizeof *ev);
        if (!ev) return E_OUTOFMEMORY;
        r->overflowed = 0;
        ev->eventType = PEER_GRAPH_EVENT_STATUS_CHANGED;
        ev->dwStatus = (PEER_GRAPH_STATUS_FLAGS)graph_compute_status(r->graph);
        *ppEventData = ev;
        return S_OK;
    }
    r->overflowed = 0;
    if (!r->count) return PEER_S_NO_EVENT_DATA;
    *ppEventData = r->ring[r->head];
    r->head = (r->head + 1) % r->cap;
    r->count--;
    return S_OK;
}

HRESULT PeerGraphEnumConnections(HGRAPH hGraph, DWORD dwFlags, HPEERENUM *phPeerEnum)
{
    pg_graph *g;
    pg_enum *e;
    const pg_conn *c;
    ULONG n = 0;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!phPeerEnum || !dwFlags || (dwFlags & ~(DWORD)(PEER_CONNECTION_NEIGHBOR | PEER_CONNECTION_DIRECT)))
        return E_INVALIDARG;
    e = (pg_enum *)pg_calloc(1, sizeof *e);
    if (!e) return E_OUTOFMEMORY;
    for (c = L.conns; c; c = c->next)
        if (c->graph == g && !c->dead && c->state == CS_CONNECTED) n++;
    e->items = (PEER_CONNECTION_INFO *)pg_calloc(n, sizeof *e->items);
    if (!e->items) { pg_free(e); return E_OUTOFMEMORY; }
    for (c = L.conns; c; c = c->next) {
        PEER_CONNECTION_INFO *ci;
        DWORD kind;
        if (c->graph != g || c->dead || c->state != CS_CONNECTED) continue;
        kind = c->direct ? PEER_CONNECTION_DIRECT : PEER_CONNECTION_NEIGHBOR;
        if (!(dwFlags & kind)) continue;
        ci = &e->items[e->n++];
        ci->dwSize = sizeof *ci;
        ci->dwFlags = kind;
        ci->ullConnectionId = c->id;
        ci->ullNodeId = c->remote_node;
        ci->address.dwSize = sizeof(PEER_ADDRESS);
        ci->address.sin6 = c->remote;
        if (c->remote_peer && !(ci->pwzPeerId = pg_wcsdup(c->remote_peer))) { enum_free(e); return E_OUTOFMEMORY; }
    }
    e->handle = new_handle();
    e->next = L.enums;
    L.enums = e;
    *phPeerEnum = (HPEERENUM)e->handle;
    return S_OK;
}

HRESULT PeerGraphGetItemCount(HPEERENUM hPeerEnum, ULONG *pCount)
{
    pg_enum *e;
    REQUIRE_STARTED();
    if (!hPeerEnum || !pCount) return E_INVALIDARG;
    if (!(e = enum_from_handle(hPeerEnum))) return PEER_E_NOT_FOUND;
    *pCount = e->n - e->pos;
    return S_OK;
}

HRESULT PeerGraphGetNextItem(HPEERENUM hPeerEnum, ULONG *pCount, PVOID **pppvItems)
{
    pg_enum *e;
    ULONG k, i;
    size_t size;
    PVOID *arr;
    uint8_t *cur;
    REQUIRE_STARTED();
    if (!hPeerEnum || !pCount || !pppvItems) return E_INVALIDARG;
    if (!(e = enum_from_handle(hPeerEnum))) return PEER_E_NOT_FOUND;
    k = e->n - e->pos;
    if (*pCount < k) k = *pCount;
    *pppvItems = NULL;
    if (!k) { *pCount = 0; return S_OK; }
    size = k * sizeof(PVOID);
    for (i = 0; i < k; i++) size += sizeof(PEER_CONNECTION_INFO) + wsize(e->items[e->pos + i].pwzPeerId);
    arr = (PVOID *)pg_alloc(size);
    if (!arr) return E_OUTOFMEMORY;
    cur = (uint8_t *)(arr + k);
    for (i = 0; i < k; i++) {
        PEER_CONNECTION_INFO *ci = (PEER_CONNECTION_INFO *)cur;
        *ci = e->items[e->pos + i];
        cur += sizeof *ci;
        ci->pwzPeerId = wplace(&cur, e->items[e->pos + i].pwzPeerId);
        arr[i] = ci;
    }
    e->pos += k;
    *pCount = k;
    *pppvItems = arr;
    return S_OK;
}

HRESULT PeerGraphEndEnumeration(HPEERENUM hPeerEnum)
{
    pg_enum **pp;
    REQUIRE_STARTED();
    if (!hPeerEnum) return E_INVALIDARG;
    for (pp = &L.enums; *pp; pp = &(*pp)->next)
        if ((*pp)->handle == (uintptr_t)hPeerEnum) {
            pg_enum *e = *pp;
            *pp = e->next;
            enum_free(e);
            return S_OK;
        }
    return PEER_E_NOT_FOUND;
}
