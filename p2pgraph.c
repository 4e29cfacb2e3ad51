/*
 * p2pgraph.c - the core: graphs, connections, the MS-PPGRH handshake, events,
 * enumerations and the host-driven service loop.
 *
 * Reading order (each section starts with a short design note):
 *   1. Utilities: allocation, big-endian codec, strings (wchar_t <-> UTF-8).
 *  1b/1c. The hash maps; the record slab (records named by 4-byte handles).
 *   2. Library state: handles, the socket table, the clock.
 *   3. Events: per-registration bounded queues, pulled by the host.
 *   4. Enumerations: snapshots handed out in self-contained blocks.
 *   5. Records: the wire form, parsing, validation, conflict order, table.
 *  5b. Record attribute XML and search queries.
 *   6. Database file: an append-only, checksummed log with compaction.
 *   7. Wire: framing and message headers ([MS-PPGRH] section 2).
 *   8. Connections: buffers, I/O, closing, poll interest.
 *  8b. Application data: SendData, direct connections, flow control.
 *  8c. Link security: the TLS graph security providers (mbedTLS, sans-I/O).
 *   9. Handshake: AUTH_INFO, CONNECT, WELCOME, REFUSE, DISCONNECT, sync start;
 *      then flooding, ACK, synchronization answers, expiry, Graph Info.
 *  10. Listeners and accepting.
 *  11. Service loop and timers.
 *  12. Public API.
 *
 * Single-threaded by design: nothing here locks, nothing blocks, and no
 * application code is called except the poll callback and the security
 * callbacks (neither may call back in: L.in_callback makes the API refuse).  Objects are freed only at the end of a public call (sweep), so
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
#include <stddef.h>
#include <mbedtls/md.h>
#include <mbedtls/ssl.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/x509_crt.h>
#include <mbedtls/oid.h>
#include <mbedtls/version.h>
#ifdef _WIN32
#include <io.h>
#else
#include <unistd.h>
#endif

/* ========================================================================= */
/* 1. Utilities                                                              */
/* Allocation goes through pg_alloc/pg_free: the C library's, or the host's  */
/* (PeerGraphSetAllocator; tests fail the N-th allocation with it).  Wire integers are big-endian, written byte by byte.  Strings:  */
/* the API is wchar_t (UTF-16 on Windows, UTF-32 elsewhere); the handshake   */
/* wire is UTF-8; lengths are counted in UTF-16 units as on Windows.         */
/* ========================================================================= */

static PEER_ALLOCATOR g_alloc; /* PeerGraphSetAllocator; pfnAlloc NULL = the C library */

static void *pg_alloc(size_t cb)
{
    if (!cb) cb = 1;
    return g_alloc.pfnAlloc ? g_alloc.pfnAlloc(g_alloc.pvContext, cb) : malloc(cb);
}
static void *pg_calloc(size_t n, size_t cb)
{
    void *p;
    if (!n) n = 1;
    if (!cb) cb = 1;
    if (!g_alloc.pfnAlloc) return calloc(n, cb);
    if (n > (size_t)-1 / cb) return NULL;
    p = g_alloc.pfnAlloc(g_alloc.pvContext, n * cb);
    if (p) memset(p, 0, n * cb);
    return p;
}
static void *pg_realloc(void *p, size_t cb)
{
    if (!cb) cb = 1;
    return g_alloc.pfnAlloc ? g_alloc.pfnRealloc(g_alloc.pvContext, p, cb) : realloc(p, cb);
}
static void pg_free(void *p)
{
    if (!p) return;
    if (g_alloc.pfnAlloc) g_alloc.pfnFree(g_alloc.pvContext, p);
    else free(p);
}

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
/* An emptied buffer gives its memory back: idle connections cost no buffer
 * space (a busy one pays a malloc per burst, which is cheap next to a read). */
static void buf_consume(pg_buf *b, size_t cb)
{
    b->off += cb;
    if (b->off >= b->len) {
        pg_free(b->p);
        b->p = NULL;
        b->off = b->len = b->cap = 0;
    }
}
static void buf_free(pg_buf *b) { pg_free(b->p); memset(b, 0, sizeof *b); }

static HRESULT md5(const void *pv, size_t cb, uint8_t out[16])
{
    const mbedtls_md_info_t *mi = mbedtls_md_info_from_type(MBEDTLS_MD_MD5);
    if (!mi || mbedtls_md(mi, (const unsigned char *)pv, cb, out) != 0) return E_FAIL;
    return S_OK;
}



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
/* 1b. Hash maps                                                             */
/* One open-addressing map type (pg_map) for every index: sockets, handles,  */
/* graphs by ID, presence by node ID, the contact and departed sets.  Growth */
/* is spread over later changes (tests/test_map.c drives it against a       */
/* reference; the section is extracted for it like 5b for test_search).      */
/* ========================================================================= */

typedef struct sock_slot { uint64_t key; void *obj; } sock_slot;
/* Open-addressing hash from a 64-bit key (never 0) to an object (never
 * NULL): sockets and the three kinds of handles, graphs by ID, presence
 * records by node ID, contact and departed records by record ID.  Growing
 * is incremental: the old slots stay beside the new ones and each change
 * moves MAP_STEP of them, so no single call rehashes a whole table (a thousand graphs in one process, holding the same
 * records, would otherwise all rehash in the same Service call). */
typedef struct pg_map {
    sock_slot *slots; size_t cap, n; /* n: entries in both tables */
    sock_slot *old; size_t oldcap, mig; /* while growing: the old slots, [0, mig) moved (obj NULL) */
} pg_map;

static size_t map_hash(uint64_t k, size_t cap)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdULL;
    k ^= k >> 33;
    return (size_t)k & (cap - 1);
}

#define MAP_STEP 16 /* old slots moved per change while growing */

/* Puts k in the new table (room guaranteed); 1 if it was not there. */
static int map_place(pg_map *m, uint64_t k, void *obj)
{
    size_t i;
    for (i = map_hash(k, m->cap);; i = (i + 1) & (m->cap - 1)) {
        if (!m->slots[i].key || m->slots[i].key == k) {
            int fresh = !m->slots[i].key;
            m->slots[i].key = k;
            m->slots[i].obj = obj;
            return fresh;
        }
    }
}

/* Moves up to `budget` old slots (all: SIZE_MAX) into the new table.  A
 * moved slot keeps its key with obj NULL, so the old probe chains hold. */
static void map_migrate(pg_map *m, size_t budget)
{
    while (m->old && budget--) {
        if (m->mig == m->oldcap) {
            pg_free(m->old);
            m->old = NULL;
            m->oldcap = m->mig = 0;
            return;
        }
        if (m->old[m->mig].key && m->old[m->mig].obj) {
            map_place(m, m->old[m->mig].key, m->old[m->mig].obj);
            m->old[m->mig].obj = NULL;
        }
        m->mig++;
    }
}

/* The old slot of k still holding it, or NULL. */
static sock_slot *map_old_slot(const pg_map *m, uint64_t k)
{
    size_t i;
    if (!m->old) return NULL;
    for (i = map_hash(k, m->oldcap); m->old[i].key; i = (i + 1) & (m->oldcap - 1))
        if (m->old[i].key == k) return m->old[i].obj ? &m->old[i] : NULL;
    return NULL;
}

static int map_grow(pg_map *m)
{
    size_t ncap = m->cap ? m->cap * 2 : 16;
    sock_slot *n;
    map_migrate(m, SIZE_MAX); /* (never while growing: see map_put) */
    if (!(n = (sock_slot *)pg_calloc(ncap, sizeof *n))) return 0;
    if (m->n) {
        m->old = m->slots;
        m->oldcap = m->cap;
        m->mig = 0;
    } else
        pg_free(m->slots);
    m->slots = n;
    m->cap = ncap;
    return 1;
}

static int map_put(pg_map *m, uint64_t k, void *obj)
{
    sock_slot *o;
    map_migrate(m, MAP_STEP);
    /* a table at half load grows; the old one is gone by then (it is moved
     * MAP_STEP slots a change, and growing again takes cap/4 more entries) */
    if ((m->n + 1) * 2 > m->cap && !map_grow(m)) return 0;
    if ((o = map_old_slot(m, k)) != NULL) { o->obj = NULL; m->n--; }
    m->n += (size_t)map_place(m, k, obj);
    return 1;
}

static void *map_get(const pg_map *m, uint64_t k)
{
    size_t i;
    const sock_slot *o;
    if (!m->cap || !k) return NULL;
    for (i = map_hash(k, m->cap); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (m->slots[i].key == k) return m->slots[i].obj;
    o = map_old_slot(m, k);
    return o ? o->obj : NULL;
}

static void map_del(pg_map *m, uint64_t k)
{
    size_t i, j;
    sock_slot *o;
    if (!m->cap) return;
    map_migrate(m, MAP_STEP);
    if ((o = map_old_slot(m, k)) != NULL) { o->obj = NULL; m->n--; return; }
    for (i = map_hash(k, m->cap); m->slots[i].key; i = (i + 1) & (m->cap - 1))
        if (m->slots[i].key == k) break;
    if (!m->slots[i].key) return;
    m->slots[i].key = 0;
    m->n--;
    /* backward-shift deletion keeps probe chains intact */
    for (j = (i + 1) & (m->cap - 1); m->slots[j].key; j = (j + 1) & (m->cap - 1)) {
        size_t h = map_hash(m->slots[j].key, m->cap);
        if ((j > i && (h <= i || h > j)) || (j < i && (h <= i && h > j))) {
            m->slots[i] = m->slots[j];
            m->slots[j].key = 0;
            i = j;
        }
    }
}

/* Visiting every entry: positions 0 .. map_span(m) - 1, of which map_at
 * gives the entry's object and key, or NULL for an empty position. */
static size_t map_span(const pg_map *m) { return m->cap + (m->old ? m->oldcap : 0); }
static void *map_at(const pg_map *m, size_t pos, uint64_t *key)
{
    const sock_slot *x = pos < m->cap ? &m->slots[pos] : &m->old[pos - m->cap];
    if (!x->key || !x->obj) return NULL;
    if (key) *key = x->key;
    return x->obj;
}

static void map_free(pg_map *m) { pg_free(m->slots); pg_free(m->old); memset(m, 0, sizeof *m); }

/* ========================================================================= */
/* 1c. Record slab                                                           */
/* Records without a heap block each: equal slots in chunks, named by 32-bit */
/* handles (tests/test_slab.c drives it against a reference; the section is  */
/* extracted for it like 1b for test_map).                                   */
/* ========================================================================= */

/* Records live in chunks cut into equal slots, one size class per
 * RS_UNIT (4) bytes up to RS_MAX_SLOT; a bigger record gets a chunk of its
 * own.  A record is named by a 32-bit handle, its chunk's number <<
 * RS_OFF_BITS | its offset in the chunk in RS_UNIT units, so the ID table
 * holds 4 bytes a slot instead of a pointer's 8, and a record costs its
 * size rounded up to 4 instead of a heap block (on glibc 8 bytes of
 * header, the whole rounded up to 16).  Slots are 4-aligned: struct pg_rec
 * has no 8-byte field.  No handle is below RS_HDR / RS_UNIT in its low
 * bits, so 0 and 1 name nothing (the table's "empty" and "tombstone").  Records never move;
 * a chunk all of whose slots are free again goes back to the heap at once
 * (a class keeps nothing in reserve), and a class's chunks grow from 1 KB
 * to RS_CHUNK as it fills, so a class with few records holds little.
 * Every graph's records share the classes (RS is process-wide, like L).
 * Limit: PEER_MAX_RECORD_CHUNKS chunks in the process (2^18: 16 GB of
 * small records, or 262,144 records bigger than RS_MAX_SLOT);
 * beyond, a record cannot be stored (E_OUTOFMEMORY, as with no memory). */
#define RS_UNIT 4u
#define RS_OFF_BITS 14
#define RS_CHUNK (RS_UNIT << RS_OFF_BITS) /* 64 KB: every offset fits RS_OFF_BITS */
#define RS_MAX_SLOT 2048u
#define RS_CLASSES (RS_MAX_SLOT / RS_UNIT)
#ifndef RS_MAX_CHUNKS /* (tests/test_slab.c sets a small one) */
#define RS_MAX_CHUNKS PEER_MAX_RECORD_CHUNKS /* (at most 1 << (32 - RS_OFF_BITS)) */
#endif
typedef struct rs_chunk {
    struct rs_chunk *next, *prev; /* the class's chunks with a free slot */
    uint32_t id;                  /* its number */
    uint32_t free;                /* the first free slot (offset; 0: none); a free slot holds the next */
    uint32_t end, lim;            /* offsets: the first slot never handed out; the end of the slots */
    uint16_t cls;                 /* slot size / RS_UNIT; 0: one record of any size */
    uint16_t live;                /* slots in use */
} rs_chunk;
#define RS_HDR ((sizeof(rs_chunk) + 7) / 8 * 8)
static struct {
    rs_chunk **chunk;  /* by number (NULL: free) */
    rs_chunk **sorted; /* by address (rs_chunk_of) */
    uint32_t *spare;   /* free numbers below n, reused first */
    uint32_t n, cap, nsorted, nspare;
    rs_chunk *partial[RS_CLASSES + 1]; /* per class: chunks with a free slot */
    uint32_t count[RS_CLASSES + 1];    /* per class: chunks (the next one's size) */
} RS;

static void *rs_ptr(uint32_t h)
{
    return (uint8_t *)RS.chunk[h >> RS_OFF_BITS] + RS_UNIT * (size_t)(h & ((1u << RS_OFF_BITS) - 1));
}

/* The chunk holding p: the last one at or below it by address. */
static size_t rs_sorted_at(const void *p)
{
    size_t lo = 0, hi = RS.nsorted; /* the answer is in [lo, hi) */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if ((uintptr_t)RS.sorted[mid] <= (uintptr_t)p) lo = mid;
        else hi = mid;
    }
    return lo;
}
static rs_chunk *rs_chunk_of(const void *p) { return RS.sorted[rs_sorted_at(p)]; }
static uint32_t rs_handle(const void *p)
{
    rs_chunk *c = rs_chunk_of(p);
    return c->id << RS_OFF_BITS | (uint32_t)(((const uint8_t *)p - (const uint8_t *)c) / RS_UNIT);
}

static void rs_partial_unlink(rs_chunk *c)
{
    if (c->prev) c->prev->next = c->next;
    else RS.partial[c->cls] = c->next;
    if (c->next) c->next->prev = c->prev;
    c->next = c->prev = NULL;
}
static void rs_partial_push(rs_chunk *c)
{
    c->prev = NULL;
    c->next = RS.partial[c->cls];
    if (c->next) c->next->prev = c;
    RS.partial[c->cls] = c;
}

/* The tables, once no chunk is left (also at shutdown: a table grown for
 * a chunk that then could not be allocated). */
static void rs_release(void)
{
    if (RS.nsorted) return;
    pg_free(RS.chunk);
    pg_free(RS.sorted);
    pg_free(RS.spare);
    memset(&RS, 0, sizeof RS);
}

/* A chunk of `bytes` (its header included) for class cls, numbered and
 * filed; NULL when out of memory or of numbers. */
static rs_chunk *rs_chunk_new(size_t bytes, unsigned cls, size_t slot)
{
    rs_chunk *c;
    size_t k;
    if (!RS.nspare && RS.n == RS.cap) {
        uint32_t ncap = RS.cap ? 2 * RS.cap : 64;
        rs_chunk **a, **b;
        uint32_t *sp;
        if (RS.cap >= RS_MAX_CHUNKS) return NULL;
        if (ncap > RS_MAX_CHUNKS) ncap = RS_MAX_CHUNKS;
        if (!(a = (rs_chunk **)pg_realloc(RS.chunk, ncap * sizeof *a))) return NULL;
        RS.chunk = a;
        if (!(b = (rs_chunk **)pg_realloc(RS.sorted, ncap * sizeof *b))) return NULL;
        RS.sorted = b;
        if (!(sp = (uint32_t *)pg_realloc(RS.spare, ncap * sizeof *sp))) return NULL;
        RS.spare = sp;
        RS.cap = ncap;
    }
    if (!(c = (rs_chunk *)pg_alloc(bytes))) return NULL;
    memset(c, 0, sizeof *c);
    c->id = RS.nspare ? RS.spare[--RS.nspare] : RS.n++;
    c->cls = (uint16_t)cls;
    c->end = (uint32_t)(RS_HDR / RS_UNIT);
    c->lim = (uint32_t)(c->end + (bytes - RS_HDR) / slot * (slot / RS_UNIT));
    RS.chunk[c->id] = c;
    k = RS.nsorted && (uintptr_t)RS.sorted[0] < (uintptr_t)c ? rs_sorted_at(c) + 1 : 0;
    memmove(RS.sorted + k + 1, RS.sorted + k, (RS.nsorted - k) * sizeof *RS.sorted);
    RS.sorted[k] = c;
    RS.nsorted++;
    RS.count[cls]++;
    return c;
}

static void rs_chunk_free(rs_chunk *c)
{
    size_t k = rs_sorted_at(c);
    memmove(RS.sorted + k, RS.sorted + k + 1, (RS.nsorted - k - 1) * sizeof *RS.sorted);
    RS.nsorted--;
    RS.chunk[c->id] = NULL;
    RS.spare[RS.nspare++] = c->id;
    RS.count[c->cls]--;
    pg_free(c);
    if (!RS.nsorted) rs_release(); /* nothing stored: the tables go too */
}

/* n bytes (4-aligned) for a record, and its handle in *h; NULL when out of
 * memory or of chunk numbers (RS_MAX_CHUNKS). */
static void *rs_alloc(size_t n, uint32_t *h)
{
    size_t slot = (n + RS_UNIT - 1) / RS_UNIT * RS_UNIT;
    unsigned cls = slot && slot <= RS_MAX_SLOT ? (unsigned)(slot / RS_UNIT) : 0;
    rs_chunk *c;
    uint32_t off;
    if (!cls) {
        if (n > SIZE_MAX - RS_HDR || !(c = rs_chunk_new(RS_HDR + n, 0, slot ? slot : RS_UNIT))) return NULL;
        c->live = 1;
        *h = c->id << RS_OFF_BITS | (uint32_t)(RS_HDR / RS_UNIT);
        return (uint8_t *)c + RS_HDR;
    }
    if (!(c = RS.partial[cls])) {
        unsigned k = RS.count[cls] < 6 ? RS.count[cls] : 6;
        size_t bytes = (size_t)1024 << k; /* 1 KB, doubling to RS_CHUNK */
        if (bytes < RS_HDR + 2 * slot) bytes = RS_HDR + 2 * slot;
        if (bytes > RS_CHUNK) bytes = RS_CHUNK;
        bytes = RS_HDR + (bytes - RS_HDR) / slot * slot; /* whole slots: no tail */
        if (!(c = rs_chunk_new(bytes, cls, slot))) return NULL;
        rs_partial_push(c);
    }
    if (c->free) {
        off = c->free;
        memcpy(&c->free, (uint8_t *)c + RS_UNIT * (size_t)off, 4);
    } else {
        off = c->end;
        c->end += cls;
    }
    c->live++;
    if (!c->free && c->end + cls > c->lim) rs_partial_unlink(c); /* full */
    *h = c->id << RS_OFF_BITS | off;
    return (uint8_t *)c + RS_UNIT * (size_t)off;
}

static void rs_free(void *p)
{
    rs_chunk *c;
    uint32_t off;
    if (!p) return;
    c = rs_chunk_of(p);
    if (c->cls) {
        int was_full = !c->free && c->end + c->cls > c->lim;
        off = (uint32_t)(((uint8_t *)p - (uint8_t *)c) / RS_UNIT);
        memcpy(p, &c->free, 4);
        c->free = off;
        if (--c->live) {
            if (was_full) rs_partial_push(c);
            return;
        }
        if (!was_full) rs_partial_unlink(c);
    }
    rs_chunk_free(c);
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
    CS_CLOSING,
    CS_TLS          /* secured graph: the TLS handshake after AUTH_INFO */
};

/* Sync state of a link on the initiating side. */
enum { SYNC_NONE = 0, SYNC_NEW, SYNC_TIME, SYNC_HASH };

/* p2pgraph capability bits, carried in AUTH_INFO.Reserved2 (initiator) and
 * WELCOME.Reserved2 (responder, only when the initiator sent them). */
#define EXT_REASONS  0x01 /* REFUSE may carry codes 0x80.. in answer to AUTH_INFO */
#define EXT_PIPELINE 0x02 /* the initiator may send all Sync All / Time requests at once */
#define EXT_FRAGMENT 0x04 /* PT2PT data above one frame goes as 16 KB fragments */
#define EXT_SYNC_NOACK 0x08 /* the initiator does not ACK FLOODs while its sync runs */
#define EXT_BATCH    0x10 /* sync answers travel as compact BATCH messages */
#define EXT_FAST     0x20 /* both nodes run the fast profile: keepalive frames, silence = dead */
#define EXT_ALL      (EXT_REASONS | EXT_PIPELINE | EXT_FRAGMENT | EXT_SYNC_NOACK | EXT_BATCH | EXT_FAST)
#define EXT_TLS      0x40 /* AUTH_INFO only: TLS follows it (a secured graph; PROTOCOL.md section 6) */
#define EXT_PUSH     0x80 /* neighbor link of a never-synchronized initiator: the responder
                           * answers a Sync All right behind its WELCOME, unasked */
#define MT_BATCH     0x80 /* p2pgraph message, only with EXT_BATCH (PROTOCOL.md section 4) */
#define MT_DEPARTED  0x81 /* p2pgraph message, only with EXT_FAST: a node was found dead */
#define MT_RENEW     0x82 /* p2pgraph message, only with EXT_FAST: new versions that only move a record's times (P19) */
#define MT_WANT      0x83 /* p2pgraph message, only with EXT_FAST: records a RENEW could not be applied to (P19) */
#define KA_NO_BEAT   0xFF /* keepalive frame (EXT_FAST, PROTOCOL.md P17): 0xFF 0x00, no beat; 0x81..0xFE n: a beat */
#define SOLQ_MAX     16   /* solicitations a responder holds while answering one */
#define KEEPALIVE_SLACK_MS 32 /* fast profile: keepalive deadlines are rounded up to this */
#define PRUNE_EVIDENCE 16     /* fast profile: floods a link's utility must have seen before it is pruned */
#define TIMER_SLACK_MS    16  /* timer passes are rounded up to this ... */
#define TIMER_SLACK_CONNS 256 /* ... in a process with at least this many connections */
#define APP_BURST     65536u /* application data written in one go when no graph message waits */
#define APP_BATCH_MAX 65536u /* small messages share buffers up to this size */
#define APP_SMALL     4096u  /* messages up to this size (framed) are batched */
#define BLK_MIN       16384u /* blocks from this size go through the block cache */
#define BLK_CACHE_N   32     /* ... which holds at most this many */
#define BLK_CACHE_BYTES (1024u * 1024u) /* ... and this many bytes */

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
typedef struct pg_rec pg_rec;
#define TYPE_CHUNK 16 /* the record type table (section 5) grows by chunks that never move: views point into it */
#define TYPE_MAX 255
typedef struct pg_query pg_query;
typedef struct pg_reg pg_reg;
struct pg_conn;

/* Link and record security of a graph (section 8c): what Create/Open were
 * given, shared by reference with the graph's TLS connections. */
enum { SEC_NONE = 0, SEC_PSK, SEC_CERT };
typedef struct pg_sec {
    int refs, kind;
    PEER_SECURITY_INTERFACE cb;     /* callbacks and pvContext (no strings kept) */
    mbedtls_ctr_drbg_context drbg;
    mbedtls_ssl_config conf[2];     /* [0] initiator (client), [1] responder (server) */
    mbedtls_x509_crt ca, own;
    mbedtls_pk_context key;
    uint8_t psk[32];
    char *identity;                 /* our peer ID, UTF-8: the PSK identity */
} pg_sec;

/* One TLS connection (section 8c). */
typedef struct pg_tls {
    mbedtls_ssl_context ssl;        /* first: callbacks get from it to us */
    struct pg_conn *conn;
    pg_sec *sec;                    /* a reference */
    pg_buf out;                     /* ciphertext for the socket */
    pg_buf in;                      /* ciphertext read but not yet given to mbedTLS */
    const uint8_t *win;             /* ... and the current read's, being given */
    size_t win_n;
    size_t wpend;                   /* a write that got WANT_WRITE: its length, repeated */
    int done, notified, first_seen;
    unsigned nbio_r, nbio_w;        /* forced WANT_READ / WANT_WRITE (tests) */
    wchar_t *cn;                    /* certificates: the remote's subject CN */
} pg_tls;

/* One PeerGraphSendData message, framed and ready for the socket.  `unit`
 * is the size of the pieces that must go out whole (a fragment, or the whole
 * message when it is not fragmented). */
typedef struct pg_appmsg {
    struct pg_appmsg *next;
    size_t len, unit, cap;  /* cap: bytes allocated for data */
    ULONG counted;          /* what it counts against the data queue limit */
    int batch;              /* small messages appended back to back */
    uint8_t data[1];
} pg_appmsg;

typedef struct pg_conn {
    int kind; /* OBJ_CONN */
    struct pg_conn *next, *prev;   /* L.conns */
    struct pg_conn *deadnext;      /* L.dead: killed, freed by the next sweep */
    struct pg_conn *gnext, *gprev; /* the graph's own list (c->graph) */
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
    int sync, sync_step;    /* initiator-side synchronization: requests sent */
    int sync_done;          /* ... and answered (final SYNC_ENDs) */
    pg_buf solq;            /* responder: solicitations waiting for the current answer */
    int solq_n;
    int referral_hops;      /* how many referrals led to this attempt */
    int repair;             /* opened by partition detection */
    ULONGLONG cand_node;    /* a maintenance attempt: the node whose presence gave the address */
    int half_closed;
    uint32_t utility;       /* connection utility (3.1.7.33) */
    uint32_t verdicts;      /* how many floods have updated it (saturating) */
    ULONGLONG sig_offered;  /* fast profile: when our Signature record last went to it on another's beat (P17) */
    pg_buf acks;            /* ACK entries not sent yet (ACK_DELAY_MS, or the next keepalive) */
    pg_buf deps;            /* a DEPARTED message being filled (header + entries), sent by flush_dirty */
    pg_buf renews;          /* a RENEW message being filled (P19), sent with other output or the keepalive */
    struct pg_conn *aknext, *akprev; /* L.ackq: connections holding ACK entries, oldest first */
    int ack_listed;         /* ACK entries held: 1 on L.ackq, 2 until the keepalive is due (PROTOCOL.md R10) */
    ULONGLONG ack_due;      /* when the entries go out on their own */
    uint8_t *out_ids;       /* sync answer: record IDs still to FLOOD */
    size_t out_n, out_i;
    int out_end;            /* 1: FLOOD out_ids then SYNC_END; 2: FLOOD only */
    int hash_phase;         /* initiator: 1 awaiting ADVERTISE, 2 awaiting SYNC_END */
    int hash_resp;          /* responder: ADVERTISE sent, REQUEST expected */
    uint8_t *hash_send;     /* initiator: records the responder lacks */
    size_t hash_send_n;
    int poke;               /* needs processing at the next service */
    int pending_counted;    /* counted in listener->pending (unauthenticated) */
    DWORD announced;        /* poll interest the host was told about */
    /* application data out (section 8b) */
    pg_appmsg *appq, *appq_tail;
    size_t app_off;         /* bytes of appq written */
    size_t app_unit_end;    /* != 0: writing appq up to here, nothing may cut in */
    ULONG app_queued, app_limit;
    int want_ready;         /* SendData refused: SEND_READY owed */
    unsigned long app_epoch;/* L.epoch when SendData last wrote at once */
    int tx_to_tail;         /* conn_send appends to `tail` (after the data) */
    pg_buf tail;            /* framed messages that go after the data (DISCONNECT) */
    /* application data in: the event block being filled */
    PPEER_GRAPH_EVENT_DATA in_ev;
    GUID in_type;
    size_t in_total, in_off;/* whole data size; bytes filled */
    size_t in_msg_left;     /* payload bytes of the current PT2PT still to come */
    int in_active;          /* a fragmented message is being reassembled */
    int in_skip;            /* the current PT2PT is a Ping (bytes dropped) */
    int in_last;            /* the current PT2PT completes the data */
    int in_divert;          /* frame bytes go to pt2pt_data, not rx */
    size_t in_cap;          /* bytes allocated for in_ev */
    struct pg_conn *dnext;  /* L.dirty list */
    int dirty;
    struct pg_conn *inext;  /* L.itouch list: its poll interest may have changed */
    int itouched;
    struct pg_conn *anext;  /* L.attn list: needs a look at the next service */
    int attn;
    size_t hidx;            /* its place in L.theap + 1 (0: no timer) */
    ULONGLONG last_rx, last_tx; /* fast profile: keepalive and silence */
    ULONGLONG connected_at;  /* when it became CONNECTED */
    pg_tls *tls;             /* secured graph: the TLS layer (section 8c) */
} pg_conn;

struct pg_listener {
    int kind; /* OBJ_LISTENER */
    pg_listener *next;
    PEER_SOCKET s;
    SOCKADDR_IN6 bound;
    int refs;
    ULONG pending;          /* accepted connections not yet bound to a graph */
    DWORD announced;
};

typedef struct pg_referral {
    SOCKADDR_IN6 addr;
    ULONGLONG seq;
    int attempted;
} pg_referral;


#define LOST_MAX 8 /* lost addresses kept per graph (lost_add) */
struct pg_graph {
    pg_graph *next;
    uintptr_t handle;
    wchar_t *graph_id, *peer_id, *db_name;
    uint8_t *gid_u;        /* the graph ID as record wire units (records are stored without it) */
    uint32_t n_gid_u;
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
    SOCKADDR_IN6 lost[LOST_MAX]; /* addresses of presences that expired unrefreshed (lost_add) */
    ULONG n_lost;
    ULONGLONG ref_seq, neighbor_seq;
    GUID *sync_types;      /* prioritized record types given to Open */
    ULONG n_sync_types;
    int used_network;      /* Listen or Connect was called */
    pg_conn *conns;        /* connections of this graph (via gnext) */
    pg_reg *regs;          /* event registrations of this graph (via gnext) */
    /* records */
    uint32_t *recs;        /* open-addressing table by record ID of slab handles (section 5, "the table") */
    size_t rec_cap, rec_count, rec_tombs;
    uint32_t *rec_old;     /* while growing: the old table, slots [0, rec_mig) moved (see rec_insert) */
    size_t rec_oldcap, rec_mig;
    ULONGLONG rec_bytes;   /* wire bytes of the records held */
    uint8_t (*types[(TYPE_MAX + TYPE_CHUNK - 1) / TYPE_CHUNK])[16]; /* the type table (struct pg_rec): chunks */
    unsigned n_types, type_last; /* types in it; the last one found (rec_new) */
    uint64_t rec_gen;      /* +1 whenever a record enters or leaves the table */
    struct sort_key *srt;  /* the hash-sync order (rec_sorted), valid for srt_gen until peer time srt_until */
    size_t srt_n;
    uint64_t srt_gen, srt_until;
    ULONGLONG exp_deadline;/* next expiration / autorefresh pass */
    ULONG rejected_records;/* FLOODed records that failed validation */
    /* database file */
    FILE *logf;
    ULONGLONG log_bytes, log_dirty_since, db_torn_bytes, meta_pending_since;
    int meta_pending;      /* a non-durable metadata change not yet written */
    int sync_on_disk;      /* the last metadata written says synchronized (see log_flush_pending) */
    ULONG db_bad_entries;
    int log_dirty;
    int log_listed;         /* on L.logq: entries waiting in logbuf (records from the network) */
    pg_buf logbuf;          /* those entries (at most LOG_BUF_MAX bytes; freed when written) */
    int log_failed;         /* a deferred flush failed: the file is rewritten from memory */
    pg_graph *lognext;
    /* application data */
    ULONG data_limit;      /* data queue limit for new connections */
    int rx_paused;         /* a registration holds too much incoming data */
    pg_graph *idnext;      /* L.gids chain */
    /* presence and graph maintenance (section 9c) */
    wchar_t *node_attrs;   /* PeerGraphSetNodeAttributes */
    int force_presence;    /* PeerGraphSetPresence(TRUE) */
    uint8_t presence_id[16];
    int have_presence_id;
    ULONGLONG maint_deadline, presence_deadline;
    ULONGLONG maint_retry;  /* a failed attempt below the minimum: try another then */
    int maint_due;         /* run graph maintenance at the next service */
    PEER_GRAPH_TIMERS timers;  /* graph maintenance timers (profile defaults or PeerGraphSetTimers) */
    PEER_MAINTENANCE_PROFILE profile;
    ULONGLONG sig_deadline; /* the Signature timer */
    ULONGLONG sig_rx;       /* when the Signature record last changed here (staleness, fast profile) */
    int sig_dead;           /* its owner was announced departed (fast profile) */
    ULONGLONG sig_yield;    /* when a lower node's claim lost to ours on a tie (fast profile; 0: never) */
    ULONGLONG sig_last;     /* the last live signature value seen (0: none) */
    ULONGLONG sig_low, sig_low_at; /* the lowest live signature seen lately, and when (fast profile, P15) */
    ULONGLONG beat_sig, beat_at; /* fast profile (P17): whose signature beat we hold, when it last advanced (0: none) */
    uint8_t beat;           /* ... and its counter */
    uint8_t contact_id[16]; /* our Contact record */
    int have_contact_id;
    ULONGLONG contact_deadline, partition_deadline; /* the Contact and Partition Detection timers */
    ULONG partition_repairs; /* connections opened by partition detection */
    int contacts_due;       /* run contact maintenance at the next service */
    ULONGLONG ltr_last;     /* the last CONNECTION_REQUIRED (long-term repair) */
    struct { ULONGLONG node, at; } tried[16]; /* recent neighbor attempts, to spread the next ones */
    pg_map pres;            /* node ID -> its live presence record (section 5) */
    pg_map contacts;        /* the contact records held (section 5) */
    pg_map departed;        /* presence records marked departed (fast profile; section 9c) */
    pg_map dep_addrs;       /* their addresses (addr_key) -> how many of them list it */
    ULONGLONG last_prune;   /* fast profile: the last least-useful drop on the timer */
    ULONGLONG last_verdict; /* fast profile: the last flood that updated a link's utility */
    unsigned n_tried;
    pg_sec *sec;            /* the security interface given to Create/Open (NULL: none) */
    ULONG max_records;      /* PeerGraphSetRecordLimits */
    ULONGLONG max_rec_bytes;
    pg_rec **deferred;      /* records the validator deferred, oldest first (n_deferred of them) */
    pg_graph *pnext;        /* L.gpoked list: its timers need a look at the next service */
    int poked;
    struct pg_fwd *fwd;     /* records received, to relay at the end of the read pass (section 5) */
    size_t fwd_n, fwd_cap;
    pg_graph *fwdnext;      /* L.fwdq: graphs with records to relay */
    int fwd_listed;
    ULONGLONG fwd_next;     /* the earliest due of g->fwd (0: this pass) */
    ULONG n_deferred, deferred_cap;
    size_t deferred_bytes;
};

typedef struct pg_enum pg_enum;


static struct {
    int started;
    PEER_NET_SHIM shim;
    int shim_set;
    ULONGLONG now;
    uintptr_t next_handle;
    ULONGLONG next_conn_id;
    unsigned long epoch;     /* PeerGraphService calls so far (SendData coalescing) */
    unsigned long rx_reads;  /* reads that brought bytes (a service call that read nothing is idle) */
    size_t rec_growing;      /* graphs whose record table has an old table left (rec_migrate_some) */
    struct { void *p; size_t cap; } bcache[BLK_CACHE_N]; /* freed data blocks kept for reuse */
    size_t bcache_bytes;
    struct { void *p; size_t cap; } bout[8];   /* big event blocks handed to the host */
    unsigned bout_i;
    pg_graph *graphs;
    pg_conn *conns;
    pg_listener *listeners;
    pg_reg *regs;
    pg_enum *enums;
    pg_map socks;          /* key = socket + 1 */
    pg_map hgraphs, hregs, henums; /* key = handle */
    pg_map gids;            /* key = graph_idkey(graph ID, peer ID): chains via idnext */
    void (*poll_cb)(PVOID, PEER_SOCKET, DWORD);
    PVOID poll_ctx;
    PEER_POLL_FD *wait_want, *wait_ready; /* RunOnce scratch */
    ULONG wait_cap;
    char *db_dir;          /* NULL = default */
    uint64_t rng;          /* fast_random64 state */
    int rng_seeded;
    int sweep_needed;
    ULONGLONG min_deadline; /* no timer of any connection or graph is due before this */
    struct pg_conn *dirty;  /* connections given output since the last flush (via dnext) */
    struct pg_conn *itouch; /* connections whose poll interest may have changed (via inext) */
    struct pg_conn *dead;   /* connections killed since the last sweep (via deadnext) */
    ULONG n_conns;          /* connections in L.conns */
    int theap_lost;         /* a timer could not enter the heap: the next pass visits every connection */
    struct pg_conn *attn;   /* connections that need a look at the next service (via anext) */
    struct pg_conn *ackq, *ackq_tail; /* connections holding ACK entries, by ack_due (via aknext) */
    pg_graph *fwdq;         /* graphs with received records still to relay (via fwdnext) */
    pg_graph *logq;         /* graphs with log entries still in the stdio buffer (via lognext) */
    ULONGLONG fwd_due;      /* the earliest due among them (PEER_NO_DEADLINE: none) */
    struct pg_conn **theap; /* connections with a timer: a min-heap on deadline */
    size_t theap_n, theap_cap;
    pg_graph *gpoked;       /* graphs whose timers need a look at the next service (via pnext) */
    int tls_nbio;           /* P2PGRAPH_TLS_NBIO: forced WANT_READ/WANT_WRITE (tests) */
    int in_callback;        /* inside a security callback: the API refuses calls */
    int listeners_new;      /* a listener the poll callback has not been told about */
} L;

/* Timers anywhere (connection deadlines, expiry, database flushes) lower
 * L.min_deadline through this; the service loop scans connections and
 * graphs only once it is reached, and recomputes it exactly then. */
static void wake_at(ULONGLONG t)
{
    /* Timer slack: with many connections, a future wake-up is rounded up to
     * TIMER_SLACK_MS, so the timers of thousands of links and graphs share
     * passes (each pass visits every connection and graph) instead of one
     * pass per millisecond.  Small hosts keep exact timers. */
    if (t > L.now && t != PEER_NO_DEADLINE && L.n_conns >= TIMER_SLACK_CONNS)
        t = (t + TIMER_SLACK_MS - 1) / TIMER_SLACK_MS * TIMER_SLACK_MS;
    if (t < L.min_deadline) L.min_deadline = t;
}
/* Connection timers: a binary min-heap on c->deadline (c->hidx = place + 1),
 * so a due timer costs O(log n) and no pass over every connection.  Out of
 * memory for the heap: a full pass is forced instead (L.theap_lost). */
static void theap_swap(size_t i, size_t j)
{
    struct pg_conn *a = L.theap[i], *b = L.theap[j];
    L.theap[i] = b; L.theap[j] = a;
    b->hidx = i + 1; a->hidx = j + 1;
}
static void theap_up(size_t i)
{
    while (i && L.theap[(i - 1) / 2]->deadline > L.theap[i]->deadline) { theap_swap(i, (i - 1) / 2); i = (i - 1) / 2; }
}
static void theap_down(size_t i)
{
    for (;;) {
        size_t l = 2 * i + 1, m = i;
        if (l < L.theap_n && L.theap[l]->deadline < L.theap[m]->deadline) m = l;
        if (l + 1 < L.theap_n && L.theap[l + 1]->deadline < L.theap[m]->deadline) m = l + 1;
        if (m == i) return;
        theap_swap(i, m);
        i = m;
    }
}
static void theap_remove(struct pg_conn *c)
{
    size_t i;
    if (!c->hidx) return;
    i = c->hidx - 1;
    c->hidx = 0;
    if (i != --L.theap_n) {
        L.theap[i] = L.theap[L.theap_n];
        L.theap[i]->hidx = i + 1;
        theap_up(i);
        theap_down(i);
    }
}
static void conn_set_deadline(struct pg_conn *c, ULONGLONG t)
{
    c->deadline = t;
    if (t == PEER_NO_DEADLINE) { theap_remove(c); return; }
    if (!c->hidx) {
        if (L.theap_n == L.theap_cap) {
            size_t nc = L.theap_cap ? 2 * L.theap_cap : 64;
            struct pg_conn **nh = (struct pg_conn **)pg_realloc(L.theap, nc * sizeof *nh);
            if (!nh) { L.theap_lost = 1; wake_at(t); return; }
            L.theap = nh;
            L.theap_cap = nc;
        }
        L.theap[L.theap_n] = c;
        c->hidx = ++L.theap_n;
    }
    theap_up(c->hidx - 1);
    theap_down(c->hidx - 1);
}

/* "Look at this at the next service": a connection (a connect to check, TLS
 * input left, a sync answer to pump) or a graph (maintenance or contacts
 * due, expiry now) goes on a list; the service looks at the listed ones
 * without a pass over every connection and graph. */
static void conn_attend(struct pg_conn *c);
static void graph_poke(pg_graph *g)
{
    if (g->poked) return;
    g->poked = 1;
    g->pnext = L.gpoked;
    L.gpoked = g;
}
#define graph_set_expiry(g, t) do { \
        (g)->exp_deadline = (t); \
        if ((g)->exp_deadline <= L.now) graph_poke(g); else wake_at((g)->exp_deadline); \
    } while (0)

#define SHIM (&L.shim)

static ULONGLONG utc_now(void) { return SHIM->pfnUtcNow(SHIM->pvContext); }
static ULONGLONG peer_time(const pg_graph *g) { return utc_now() - (ULONGLONG)g->ptd; }

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

/* Record IDs need uniqueness, not secrecy: a splitmix64 sequence seeded once
 * from the shim's randomness saves two system calls per new record. */
static ULONGLONG fast_random64(void)
{
    uint64_t z;
    if (!L.rng_seeded) { L.rng = random64(); L.rng_seeded = 1; }
    z = (L.rng += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
}

static uintptr_t new_handle(void) { return ++L.next_handle; }

static uint64_t sock_key(PEER_SOCKET s) { return (uint64_t)s + 1; }


static int sock_put(PEER_SOCKET s, void *obj) { return map_put(&L.socks, sock_key(s), obj); }
static void *sock_get(PEER_SOCKET s) { return map_get(&L.socks, sock_key(s)); }
static void sock_del(PEER_SOCKET s) { map_del(&L.socks, sock_key(s)); }

/* Closes a socket the library owns: tells the host first (poll callback). */
static void socket_close(PEER_SOCKET s, DWORD *announced)
{
    if (*announced && L.poll_cb) L.poll_cb(L.poll_ctx, s, 0);
    *announced = 0;
    sock_del(s);
    SHIM->pfnClose(SHIM->pvContext, s);
}

static pg_graph *graph_from_handle(HGRAPH h) { return (pg_graph *)map_get(&L.hgraphs, (uintptr_t)h); }

/* FNV-1a over both IDs: finds the graph an AUTH_INFO names without walking
 * every open graph. */
static uint64_t graph_idkey(const wchar_t *gid, const wchar_t *pid)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (; *gid; gid++) h = (h ^ (uint64_t)*gid) * 0x100000001b3ULL;
    h = (h ^ 0xFFFF) * 0x100000001b3ULL;
    for (; *pid; pid++) h = (h ^ (uint64_t)*pid) * 0x100000001b3ULL;
    return h ? h : 1;
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
    pg_reg *gnext;          /* the graph's own list */
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
    size_t data_bytes;      /* bytes of INCOMING_DATA events queued */
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

/* Queues ev (taking it); 0 if it had to be dropped (queue full or no memory). */
static int reg_push(pg_reg *r, PPEER_GRAPH_EVENT_DATA ev)
{
    if (r->count == r->cap) {
        ULONG ncap = r->cap ? r->cap * 2 : 4, i;
        PPEER_GRAPH_EVENT_DATA *nr;
        if (ncap > PEER_MAX_EVENTS_QUEUED) ncap = PEER_MAX_EVENTS_QUEUED;
        if (r->count == ncap || !(nr = (PPEER_GRAPH_EVENT_DATA *)pg_alloc(ncap * sizeof *nr))) {
            r->overflowed = 1;
            pg_free(ev);
            return 0;
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
    return 1;
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
    for (r = g->regs; r; r = r->gnext) {
        size_t extra = peer ? (wcslen(peer) + 1) * sizeof(wchar_t) : 0;
        PPEER_GRAPH_EVENT_DATA ev;
        if (!reg_wants(r, proto->eventType, recType)) continue;
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
    for (c = g->conns; c; c = c->gnext) /* neighbors: a direct link is not membership */
        if (!c->dead && c->state == CS_CONNECTED && !c->direct) { st |= PEER_GRAPH_STATUS_HAS_CONNECTIONS; break; }
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

enum { ENUM_CONNECTIONS = 0, ENUM_RECORDS, ENUM_NODES };
struct pg_enum {
    pg_enum *next;
    uintptr_t handle;
    int kind;
    ULONG n, pos;
    PEER_CONNECTION_INFO *items; /* ENUM_CONNECTIONS: pwzPeerId separately allocated */
    pg_graph *graph;             /* ENUM_RECORDS: IDs, looked up again at GetNextItem */
    uint8_t *ids;
};

static pg_enum *enum_from_handle(HPEERENUM h) { return (pg_enum *)map_get(&L.henums, (uintptr_t)h); }

static void enum_free(pg_enum *e)
{
    ULONG i;
    if (e->items)
        for (i = 0; i < e->n; i++) pg_free(e->items[i].pwzPeerId);
    pg_free(e->items);
    pg_free(e->ids);
    pg_free(e);
}

/* ========================================================================= */
/* 5. Records                                                                */
/* A record lives in memory in a compact stored form (one slot of the       */
/* record slab: a small header of hot keys, then the fields with varint     */
/* lengths and without what every record of the graph shares), found by ID  */
/* in a per-graph open-addressing table of 4-byte slab handles.             */
/* rec_view_of() gives a view of a stored record,                           */
/* rec_parse() of wire bytes; rec_wire_write() rebuilds the exact MS-PPGRH   */
/* bytes that a FLOOD carries and the database file holds.                   */
/* rec_validate() applies [MS-PPGRH] 3.1.7.27; rec_compare() is the conflict */
/* resolution of 3.1.7.32.  Record strings on the wire are UTF-16 in the     */
/* byte order chosen in PROTOCOL.md (R1).  Publishing stores, persists,      */
/* floods to every neighbor and tells the application.                        */
/* ========================================================================= */

#define REC_FIXED 90
#define RF_AUTOREFRESH 0x01
#define RF_DELETED 0x02
#define RF_WIRE 0x03       /* the flags a record carries on the wire (3.1.7.27 allows no others) */
#define RF_NO_MODBY 0x04   /* pg_rec.flags, layout: no last-modified-by (empty), */
#define RF_NO_SEC 0x08     /* ... no security data, */
#define RF_NO_ATTR 0x10    /* ... no attributes, */
#define RF_MOD_CREATED 0x20 /* ... modified at its creation time: those fields are left out of s[] */
#define RF_DEPARTED 0x40   /* pg_rec.flags, local only: a presence whose node was announced dead (fast profile) */
#define RF_DEP_INDEXED 0x80 /* ... and it is in g->departed and g->dep_addrs */
#define FT_SECOND 10000000ULL
#define ACK_BATCH 64
#define FAST_PARALLEL 4 /* fast profile: neighbor attempts at once below the minimum */
/* How long an ACK entry may wait for other output to the same neighbor
 * before it goes out on its own (PROTOCOL.md R10).  An ACK only feeds the
 * link's utility, so holding it costs nothing, while sending it at once puts
 * one more write and one more read on the flood's path at every hop.  On a
 * link that keeps alive (fast profile), entries wait for the keepalive
 * instead and the ACK goes in place of the Ping (PROTOCOL.md R10): the
 * peer hears us then anyway, so the ACK costs no message of its own. */
#define ACK_DELAY_MS 200

static const uint8_t GRAPH_INFO_ID[16] = {0x6c, 0x79, 0x67, 0x68, 0x77, 0x32, 0x40, 0x6b,
                                          0xbc, 0x6e, 0x5e, 0x9c, 0x0d, 0x86, 0x45, 0x80};
static const uint8_t SIGNATURE_ID[16] = {0x4c, 0x51, 0x5c, 0x94, 0x42, 0x52, 0x49, 0x4f,
                                         0x84, 0x40, 0x34, 0xcc, 0x79, 0x76, 0x9c, 0x81};

/* A stored record: the expiry and the flags, then s[] holding, in order:
 * the record ID (16 bytes, as on the wire); the type, as one byte k:
 * 1..255 = the graph's k-th type in its type table (g->types: a record
 * type is shared by many records), 0 = the 16 bytes follow (the table is
 * full); the version as a varint; the creator and the last-modified-by as
 * peer strings (below); the security data as a varint count then the
 * bytes; the creation time as a difference from the expiry, the
 * modification time as one from the creation time (td_put: whole seconds
 * and milliseconds take fewer bytes); the payload (counted
 * like the security data) and the attributes (a varint count of UTF-16
 * units, then the units).  Last-modified-by, security data, attributes
 * and modification time are left out when empty (or equal to the creation
 * time), as the layout bits RF_NO_* and RF_MOD_CREATED in flags say.  A
 * peer string is a varint (units << 2 | narrow << 1 | nul) then its code
 * units: one byte each when narrow (every unit < 0x100, at most
 * REC_NARROW_MAX of them), the trailing NUL unit left out when nul (only
 * with narrow); rec_view_of() widens it into the view.  What every record
 * of the graph shares is left out: the graph ID (it must equal the
 * graph's, 3.1.7.27), the protocol version (0x0100) and the reserved bytes
 * (0); the wire length is computed (rec_len).  A 256-byte record with a
 * 4-character creator and a lifetime of whole seconds takes 292 bytes, 150
 * less than its wire form (296 when the lifetime is not: a time of the
 * application's clock against ours): a slab slot of that size (section
 * 1c; a heap block of its own on glibc took 304) and 4 bytes of the ID
 * table at a load of 3/5 to 3/4. */
struct pg_rec {
    uint32_t exp[2];   /* the expiry, low and high halves (no 8-byte field: slab slots are 4-aligned); rec_expires() */
    uint8_t flags;     /* RF_WIRE bits as on the wire, the layout bits, and the local RF_DEPARTED, RF_DEP_INDEXED */
    uint8_t s[];       /* the stored form (above) */
};
static uint64_t rec_expires(const pg_rec *r) { return (uint64_t)r->exp[1] << 32 | r->exp[0]; }
#define REC_NARROW_MAX 64
#define rec_id(r) ((const uint8_t *)(r)->s)
#define rec_departed(r) ((r)->flags & RF_DEPARTED)

typedef struct rec_view {
    const uint8_t *type, *id;
    uint32_t version;
    uint8_t flags;
    const uint8_t *creator, *modby, *sec, *gid, *data, *attr; /* UTF-16 strings include the NUL unit */
    uint32_t n_creator, n_modby, n_sec, n_gid, n_data, n_attr; /* units for strings, bytes otherwise */
    uint64_t created, expires, modified;
    unsigned proto;
    uint8_t wide[2][2 * REC_NARROW_MAX]; /* a stored record's narrow creator / modby, widened (copy with rec_view_copy) */
} rec_view;

/* *d = *s, keeping d's strings in d. */
static void rec_view_copy(rec_view *d, const rec_view *s)
{
    *d = *s;
    if (s->creator == s->wide[0]) d->creator = d->wide[0];
    if (s->modby == s->wide[1]) d->modby = d->wide[1];
}

static void guid_get(GUID *g, const uint8_t *p)
{
    g->Data1 = get32(p);
    g->Data2 = (uint16_t)get16(p + 4);
    g->Data3 = (uint16_t)get16(p + 6);
    memcpy(g->Data4, p + 8, 8);
}

/* --- UTF-16 wire strings (PROTOCOL.md R1: little-endian code units) --- */
static unsigned u16_get(const uint8_t *p) { return (unsigned)p[0] | ((unsigned)p[1] << 8); }
static void u16_put(uint8_t *p, unsigned v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }

/* Units including the NUL. */
static uint32_t u16_units(const wchar_t *w) { return (uint32_t)wcs_units16(w) + 1; }

/* Writes w as UTF-16 units plus NUL; returns bytes written. */
static size_t u16_write(uint8_t *out, const wchar_t *w)
{
    uint8_t *o = out;
    while (*w) {
        uint32_t cp = 0;
        int k = wc_decode(w, &cp);
        if (!k) { cp = 0xFFFD; k = 1; }
        w += k;
        if (cp >= 0x10000) {
            cp -= 0x10000;
            u16_put(o, 0xD800 + (cp >> 10)); o += 2;
            u16_put(o, 0xDC00 + (cp & 0x3FF)); o += 2;
        } else { u16_put(o, cp); o += 2; }
    }
    u16_put(o, 0);
    return (size_t)(o - out) + 2;
}

/* Checks n units at p: exactly one NUL, at the end, valid surrogate pairs. */
static int u16_valid(const uint8_t *p, uint32_t n)
{
    uint32_t i;
    if (!n || u16_get(p + 2 * (n - 1)) != 0) return 0;
    for (i = 0; i + 1 < n; i++) {
        unsigned c = u16_get(p + 2 * i);
        if (c == 0) return 0;
        if (c >= 0xD800 && c <= 0xDBFF) {
            unsigned d = i + 2 < n ? u16_get(p + 2 * (i + 1)) : 0;
            if (d < 0xDC00 || d > 0xDFFF) return 0;
            i++;
        } else if (c >= 0xDC00 && c <= 0xDFFF) return 0;
    }
    return 1;
}

/* wchar_t characters needed (with NUL) for a valid UTF-16 wire string. */
static size_t u16_wchars(const uint8_t *p, uint32_t n)
{
#if WCHAR_MAX <= 0xFFFF
    (void)p;
    return n;
#else
    size_t k = 0;
    uint32_t i;
    for (i = 0; i < n; i++) {
        unsigned c = u16_get(p + 2 * i);
        if (c >= 0xD800 && c <= 0xDBFF) i++;
        k++;
    }
    return k;
#endif
}

static void u16_to_wcs(wchar_t *out, const uint8_t *p, uint32_t n)
{
    uint32_t i;
    for (i = 0; i < n; i++) {
        unsigned c = u16_get(p + 2 * i);
#if WCHAR_MAX > 0xFFFF
        if (c >= 0xD800 && c <= 0xDBFF) {
            unsigned d = u16_get(p + 2 * (i + 1));
            *out++ = (wchar_t)(0x10000 + ((c - 0xD800) << 10) + (d - 0xDC00));
            i++;
            continue;
        }
#endif
        *out++ = (wchar_t)c;
    }
}

static wchar_t *u16_dup(const uint8_t *p, uint32_t n)
{
    wchar_t *w;
    if (!n) return NULL;
    w = (wchar_t *)pg_alloc(u16_wchars(p, n) * sizeof(wchar_t));
    if (w) u16_to_wcs(w, p, n);
    return w;
}

/* Equality of a wire string and a wchar_t string. */
static int u16_eq(const uint8_t *p, uint32_t n, const wchar_t *w)
{
    uint8_t buf[2 * 2 * PEER_MAX_ID_CHARS + 4];
    size_t k;
    if (!w) return n == 0;
    if (u16_units(w) != n || n > 2 * PEER_MAX_ID_CHARS) return 0;
    k = u16_write(buf, w);
    return k == 2 * (size_t)n && memcmp(buf, p, k) == 0;
}

/* Ordinal comparison of two wire strings by UTF-16 unit. */
static int u16_cmp(const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb)
{
    uint32_t i;
    for (i = 0; i < na && i < nb; i++) {
        unsigned x = u16_get(a + 2 * i), y = u16_get(b + 2 * i);
        if (x != y) return x < y ? -1 : 1;
    }
    return na < nb ? -1 : na > nb ? 1 : 0;
}

/* --- parsing and validation --- */

static int rd_str(const uint8_t *p, size_t n, size_t *i, const uint8_t **s, uint32_t *units)
{
    uint32_t k;
    if (*i + 4 > n) return 0;
    k = get32(p + *i);
    *i += 4;
    if (k > (n - *i) / 2) return 0;
    *s = p + *i;
    *units = k;
    *i += 2 * (size_t)k;
    return 1;
}

/* Structural parse of a PEER_RECORD; 0 if lengths do not add up. */
static int rec_parse(const uint8_t *p, size_t n, rec_view *v)
{
    size_t i = 40;
    if (n < REC_FIXED) return 0;
    v->type = p;
    v->id = p + 16;
    v->version = get32(p + 32);
    v->flags = p[39];
    if (p[36] || p[37] || p[38]) return 0; /* reserved: MUST be 0 */
    if (!rd_str(p, n, &i, &v->creator, &v->n_creator)) return 0;
    if (!rd_str(p, n, &i, &v->modby, &v->n_modby)) return 0;
    if (i + 4 > n) return 0;
    v->n_sec = get32(p + i);
    i += 4;
    if (v->n_sec > n - i) return 0;
    v->sec = p + i;
    i += v->n_sec;
    if (i + 24 > n) return 0;
    v->created = get64(p + i);
    v->expires = get64(p + i + 8);
    v->modified = get64(p + i + 16);
    i += 24;
    if (!rd_str(p, n, &i, &v->gid, &v->n_gid)) return 0;
    if (i + 6 > n) return 0;
    v->proto = get16(p + i);
    v->n_data = get32(p + i + 2);
    i += 6;
    if (v->n_data > n - i) return 0;
    v->data = p + i;
    i += v->n_data;
    if (!rd_str(p, n, &i, &v->attr, &v->n_attr)) return 0;
    return i == n;
}

static int guid_is_internal(const uint8_t *t)
{
    static const uint8_t z[12] = {0};
    return t[0] == 0 && t[1] == 0 && t[3] == 0 && (t[2] >= 1 && t[2] <= 4) && !memcmp(t + 4, z, 12);
}

/* Presence records ({00000400-...}) and the signature and contact records
 * live in memory only: they are never loaded from a database (3.1.4.2). */
static int rec_is_presence(const uint8_t *type) { return type[0] == 0 && type[1] == 0 && type[2] == 4 && guid_is_internal(type); }
static int rec_is_contact(const uint8_t *type) { return type[0] == 0 && type[1] == 0 && type[2] == 3 && guid_is_internal(type); }
static int rec_is_volatile(const uint8_t *type) { return type[0] == 0 && type[1] == 0 && type[2] >= 2 && guid_is_internal(type); }

/* high64(MD5(creator)) XOR low64(...), the record ID's upper half. */
static void creator_fold(const uint8_t *creator, uint32_t units, uint8_t out[8])
{
    uint8_t h[16];
    int i;
    md5(creator, 2 * (size_t)(units ? units - 1 : 0), h); /* without the NUL */
    for (i = 0; i < 8; i++) out[i] = h[i] ^ h[8 + i];
}

static HRESULT attr_validate(const wchar_t *xml);

/* Does v name g's graph?  (Against the graph ID's wire units, cached.) */
static int rec_gid_ours(const pg_graph *g, const rec_view *v)
{
    return v->n_gid == g->n_gid_u && !memcmp(v->gid, g->gid_u, 2 * (size_t)v->n_gid);
}

/* [MS-PPGRH] 3.1.7.27 on a parsed record; 1 if valid for graph g.  `full`
 * 0 skips the costly record ID check (against MD5(creator)) for records
 * read back from our own checksummed file.  Attribute XML is checked
 * always: the search matcher relies on it, and a file can be forged. */
static int rec_validate_ex(const pg_graph *g, const rec_view *v, uint64_t peerNow, int full)
{
    uint8_t fold[8];
    if (v->n_creator < 2 || v->n_creator > PEER_MAX_ID_CHARS || !u16_valid(v->creator, v->n_creator)) return 0;
    if (!(v->n_modby == 0 || (v->n_modby >= 2 && v->n_modby <= PEER_MAX_ID_CHARS && u16_valid(v->modby, v->n_modby))))
        return 0;
    if (!memcmp(v->type, "\0\0\1\0", 4) && guid_is_internal(v->type)) {
        if (memcmp(v->id, GRAPH_INFO_ID, 16)) return 0;
    } else if (!memcmp(v->type, "\0\0\2\0", 4) && guid_is_internal(v->type)) {
        if (memcmp(v->id, SIGNATURE_ID, 16)) return 0;
    } else if (full) {
        creator_fold(v->creator, v->n_creator, fold);
        if (memcmp(fold, v->id, 8)) return 0;
    }
    if (v->expires <= v->modified || v->modified < v->created) return 0;
    if (v->expires <= peerNow) return 0; /* already expired: nothing to keep */
    if (!rec_gid_ours(g, v)) return 0;
    if (v->proto != 0x0100) return 0;
    if ((v->flags & RF_DELETED) && (v->n_data || v->n_attr)) return 0;
    if (v->flags & ~(RF_DELETED | RF_AUTOREFRESH)) return 0;
    if ((uint64_t)v->n_data + 2 * (uint64_t)v->n_attr > g->max_record) return 0;
    if (v->modified == v->created && v->n_modby != 0) return 0;
    if (v->n_attr) { /* always: the matcher relies on it, and a file can be forged */
        wchar_t *a;
        HRESULT hr;
        if (!u16_valid(v->attr, v->n_attr)) return 0;
        if (!(a = u16_dup(v->attr, v->n_attr))) return 0;
        hr = attr_validate(a);
        pg_free(a);
        if (hr != S_OK) return 0;
    }
    return 1;
}

static int rec_validate(const pg_graph *g, const rec_view *v, uint64_t peerNow)
{
    return rec_validate_ex(g, v, peerNow, 1);
}

/* Conflict resolution: >0 if a is newer than b, 0 if the same, <0 older. */
static int rec_compare(const rec_view *a, const rec_view *b)
{
    int c;
    uint32_t m;
    if (a->version != b->version) return a->version > b->version ? 1 : -1;
    if ((a->n_modby != 0) != (b->n_modby != 0)) return a->n_modby ? 1 : -1;
    if (a->n_modby && (c = u16_cmp(a->modby, a->n_modby, b->modby, b->n_modby)) != 0) return c;
    if (a->modified != b->modified) return a->modified > b->modified ? 1 : -1;
    if (a->n_sec != b->n_sec) return a->n_sec > b->n_sec ? 1 : -1;
    m = a->n_sec;
    if (m && (c = memcmp(a->sec, b->sec, m)) != 0) return c > 0 ? 1 : -1;
    return 0;
}

/* Is v's Last Modified By its creator? (A RENEW entry's flag: P19.) */
static int rec_modby_creator(const rec_view *v)
{
    return v->n_modby && !u16_cmp(v->modby, v->n_modby, v->creator, v->n_creator);
}

/* P19: if v is a later version of old in which nothing but the times (last
 * modified, expiry) moved, and Last Modified By, if at all, from empty to
 * the creator (the first update of a record names its modifier), old's
 * version, which a neighbor holding it can turn into v from a RENEW entry;
 * else 0. */
static uint32_t rec_renewal_base(const rec_view *old, const rec_view *v)
{
    if (v->version <= old->version || v->flags != old->flags || v->proto != old->proto || v->created != old->created ||
        memcmp(v->type, old->type, 16) || memcmp(v->id, old->id, 16) || v->n_gid != old->n_gid ||
        (v->n_gid && memcmp(v->gid, old->gid, 2 * (size_t)v->n_gid)) ||
        u16_cmp(v->creator, v->n_creator, old->creator, old->n_creator) ||
        (u16_cmp(v->modby, v->n_modby, old->modby, old->n_modby) && (old->n_modby || !rec_modby_creator(v))) ||
        v->n_sec != old->n_sec ||
        (v->n_sec && memcmp(v->sec, old->sec, v->n_sec)) || v->n_data != old->n_data ||
        (v->n_data && memcmp(v->data, old->data, v->n_data)) ||
        u16_cmp(v->attr, v->n_attr, old->attr, old->n_attr))
        return 0;
    return old->version;
}

/* --- the table --- */

/* A table has any size (below 2^32 slots): the hash's top 32 bits scaled
 * to it. */
static size_t rec_hash(const uint8_t id[16], size_t cap)
{
    uint64_t k = get64(id + 8) ^ (get64(id) * 0x9E3779B97F4A7C15ULL);
    k ^= k >> 29;
    return (size_t)(((k >> 32) * (uint64_t)cap) >> 32);
}
#define rec_next(i, cap) ((i) + 1 < (cap) ? (i) + 1 : 0)

/* Linear probing over slab handles.  A slot is empty (0), a tombstone
 * (REC_TOMB: a record left; probes go on past it, an insert may reuse it)
 * or a record's handle.  Records never move within a table, so a walk over
 * the slots may take records out as it goes. */
#define REC_TOMB 1u
#define rec_of(h) ((pg_rec *)rs_ptr(h))

/* The slot of t (capacity cap) holding id, or NULL. */
static uint32_t *rec_probe(uint32_t *t, size_t cap, const uint8_t id[16])
{
    size_t i = rec_hash(id, cap);
    for (; t[i]; i = rec_next(i, cap))
        if (t[i] != REC_TOMB && !memcmp(rec_id(rec_of(t[i])), id, 16)) return &t[i];
    return NULL;
}

/* The slot holding id: in the new table (*inNew 1), or in the old one
 * while a growth has not moved it yet (*inNew 0). */
static uint32_t *rec_slot(const pg_graph *g, const uint8_t id[16], int *inNew)
{
    uint32_t *pp;
    if (!g->rec_cap) return NULL;
    *inNew = 1;
    if ((pp = rec_probe(g->recs, g->rec_cap, id)) != NULL) return pp;
    *inNew = 0;
    return g->rec_old ? rec_probe(g->rec_old, g->rec_oldcap, id) : NULL;
}

static pg_rec *rec_find(const pg_graph *g, const uint8_t id[16])
{
    int inNew;
    uint32_t *pp = rec_slot(g, id, &inNew);
    return pp ? rec_of(*pp) : NULL;
}

/* Visiting every record: slots 0 .. rec_span(g) - 1 (the new table, then
 * the old one while a growth is under way); rec_at() is the record in a
 * slot or NULL. */
static size_t rec_span(const pg_graph *g) { return g->rec_cap + (g->rec_old ? g->rec_oldcap : 0); }
static uint32_t *rec_pslot(const pg_graph *g, size_t i) { return i < g->rec_cap ? &g->recs[i] : &g->rec_old[i - g->rec_cap]; }
static pg_rec *rec_at(const pg_graph *g, size_t i)
{
    uint32_t h = *rec_pslot(g, i);
    return h > REC_TOMB ? rec_of(h) : NULL;
}

/* The presence index (g->pres): node ID -> the presence record naming it,
 * so that departures and node lookups do not scan the database.  Only
 * records holding a payload are indexed; a record leaving the table leaves
 * the index. */
static int rec_view_of(const pg_graph *g, const pg_rec *r, rec_view *v);
static const uint8_t *rec_type(const pg_graph *g, const pg_rec *r);
static uint32_t rec_len(const pg_graph *g, const pg_rec *r);
static ULONGLONG rec_presence_node(const pg_graph *g, const pg_rec *r)
{
    rec_view v;
    if (!rec_is_presence(rec_type(g, r)) || (r->flags & RF_DELETED) || !rec_view_of(g, r, &v) || v.n_data < 8) return 0;
    return get64(v.data);
}
/* ... and the contact set (g->contacts), so contact maintenance visits the
 * few contact records, not the database.  Every record leaving the table
 * goes through pres_unmap.  The contact and departed sets are keyed by the
 * record ID folded to 64 bits, not by address, so that they are walked in
 * the same order in every run (a seeded test replays exactly); two IDs
 * that fold alike (only a hostile publisher makes them) keep the first
 * one in the set. */
static uint64_t rec_key(const pg_rec *r)
{
    uint64_t k = get64(rec_id(r)) ^ get64(rec_id(r) + 8);
    return k ? k : 1; /* (a map key is never 0) */
}
static void set_add(pg_map *m, pg_rec *r)
{
    if (!map_get(m, rec_key(r))) map_put(m, rec_key(r), r); /* out of memory: not in the set */
}
static void set_del(pg_map *m, const pg_rec *r)
{
    if (map_get(m, rec_key(r)) == r) map_del(m, rec_key(r));
}
static void departed_unindex(pg_graph *g, const pg_rec *r);
static void pres_unmap(pg_graph *g, const pg_rec *r)
{
    ULONGLONG node = rec_presence_node(g, r);
    if (node && map_get(&g->pres, node) == r) map_del(&g->pres, node);
    if (rec_is_contact(rec_type(g, r))) set_del(&g->contacts, r);
    if (r->flags & RF_DEP_INDEXED) departed_unindex(g, r);
}
static void pres_map(pg_graph *g, pg_rec *r)
{
    ULONGLONG node = rec_presence_node(g, r);
    if (node) map_put(&g->pres, node, r); /* out of memory: the node is simply not found */
    if (rec_is_contact(rec_type(g, r))) set_add(&g->contacts, r); /* ... the contact is not counted */
}

/* Empties the slot pp holds a record in; inNew: the slot is in the new
 * table (the old one's tombstones go with it). */
static void rec_slot_clear(pg_graph *g, uint32_t *pp, int inNew)
{
    pg_rec *r = rec_of(*pp);
    *pp = REC_TOMB;
    if (inNew) g->rec_tombs++;
    g->rec_count--;
    g->rec_bytes -= rec_len(g, r);
    g->rec_gen++;
}

static void rec_unlink(pg_graph *g, pg_rec *r)
{
    int inNew;
    uint32_t *pp = rec_slot(g, rec_id(r), &inNew);
    if (pp && rec_of(*pp) == r) rec_slot_clear(g, pp, inNew);
    pres_unmap(g, r);
}

/* Puts the record of handle h in table t (a free slot is certain: the load
 * stays under 3/4). */
static void rec_place(uint32_t *t, size_t cap, uint32_t h, size_t *tombs)
{
    size_t i = rec_hash(rec_id(rec_of(h)), cap);
    while (t[i] && t[i] != REC_TOMB) i = rec_next(i, cap);
    if (t[i] == REC_TOMB && tombs) (*tombs)--;
    t[i] = h;
}

/* Moves up to `budget` old slots (all: SIZE_MAX) into the new table; a
 * moved slot becomes a tombstone, so that probes in the old table still
 * reach the records past it. */
#define REC_STEP 8
static void rec_migrate(pg_graph *g, size_t budget)
{
    while (g->rec_old && budget--) {
        uint32_t h;
        if (g->rec_mig == g->rec_oldcap) {
            pg_free(g->rec_old);
            g->rec_old = NULL;
            L.rec_growing--;
            g->rec_oldcap = g->rec_mig = 0;
            return;
        }
        h = g->rec_old[g->rec_mig];
        if (h > REC_TOMB) {
            g->rec_old[g->rec_mig] = REC_TOMB;
            rec_place(g->recs, g->rec_cap, h, &g->rec_tombs);
        }
        g->rec_mig++;
    }
}

/* A new table for `need` records at a load of 3/5 (on an insert into a
 * table 3/4 full: 1.25 times the size, or the same when tombstones filled
 * it: every new version leaves one), so that the table costs 5.3 to 6.7
 * bytes a record (doubling at 3/4 cost 5.3 to 10.7: S9 counts it).  The
 * records move REC_STEP slots per insert and more at the end of service
 * calls (rec_migrate_some; no call rehashes a whole table: like the maps
 * of section 1b), so the old table goes soon after a growth even when no
 * insert follows; an empty table is simply replaced. */
static int rec_table_grow(pg_graph *g, size_t need)
{
    size_t ncap;
    uint32_t *n;
    rec_migrate(g, SIZE_MAX); /* (never while growing: cap / REC_STEP inserts move all, a growth takes 3 cap / 16) */
    if (need < g->rec_count + 1) need = g->rec_count + 1;
    ncap = need / 3 * 5 + (need % 3 * 5 + 2) / 3; /* ceil(need * 5 / 3), without overflow */
    if (ncap < 8) ncap = 8;
    if (ncap > 0xFFFFFFFFu || !(n = (uint32_t *)pg_calloc(ncap, sizeof *n))) return 0;
    if (g->rec_count) {
        g->rec_old = g->recs;
        g->rec_oldcap = g->rec_cap;
        g->rec_mig = 0;
        L.rec_growing++; /* rec_migrate_some moves the rest */
    } else
        pg_free(g->recs);
    g->recs = n;
    g->rec_cap = ncap;
    g->rec_tombs = 0;
    return 1;
}

/* Moves old table slots of every growing graph, `budget` slots in all,
 * at the end of a service call: REC_IDLE_STEP when the call read nothing
 * (the host is waiting for nothing else; next_deadline() says now until
 * every old table is gone), REC_BUSY_STEP otherwise.  Moving a slot reads
 * the record's ID (a cache miss); with a thousand graphs in one process,
 * all of equal size, their tables grow in the same flood, and moving them
 * all in that call held it for tens of milliseconds (bench/scale S8). */
#define REC_IDLE_STEP 16384
#define REC_BUSY_STEP 256
static void rec_migrate_some(size_t budget)
{
    pg_graph *g;
    for (g = L.graphs; g && budget && L.rec_growing; g = g->next)
        if (g->rec_old) {
            size_t left = g->rec_oldcap - g->rec_mig + 1, b = left < budget ? left : budget;
            rec_migrate(g, b);
            budget -= b;
        }
}

/* --- the stored form (struct pg_rec) --- */
static uint64_t zz(uint64_t a, uint64_t b) /* zigzag of a - b */
{
    int64_t d = (int64_t)(a - b);
    return ((uint64_t)d << 1) ^ (uint64_t)(d >> 63);
}
static uint64_t unzz(uint64_t base, uint64_t z) { return base + (uint64_t)((z >> 1) ^ (0 - (z & 1))); }
static size_t sv_len(uint64_t x)
{
    size_t n = 1;
    while (x >= 0x80) { x >>= 7; n++; }
    return n;
}
static uint8_t *sv_put(uint8_t *p, uint64_t x)
{
    while (x >= 0x80) { *p++ = (uint8_t)(x | 0x80); x >>= 7; }
    *p++ = (uint8_t)x;
    return p;
}
static const uint8_t *sv_get(const uint8_t *p, uint64_t *x) /* our own bytes: no bounds to check */
{
    int sh = 0;
    *x = 0;
    do *x |= (uint64_t)(*p & 0x7F) << sh, sh += 7; while (*p++ & 0x80);
    return p;
}
/* A time difference a - b in the stored form, one varint: whole seconds
 * as zigzag << 1 | 1, whole milliseconds as zigzag << 2 | 2, else 100 ns
 * units as zigzag << 2; 0 (a zero difference is 1, whole seconds) is an
 * escape for a difference too big for that, whose zigzag in 100 ns follows
 * as a second varint.  A record's lifetime and most gaps between its times
 * are whole seconds or milliseconds (the clock counts milliseconds): an
 * hour takes 2 bytes instead of 6. */
static uint64_t td_code(uint64_t a, uint64_t b)
{
    int64_t d = (int64_t)(a - b);
    uint64_t z = zz(a, b);
    if (d % 10000000 == 0) return zz((uint64_t)(d / 10000000), 0) << 1 | 1;
    if (d % 10000 == 0) return zz((uint64_t)(d / 10000), 0) << 2 | 2;
    return z < (1ULL << 62) ? z << 2 : 0;
}
static size_t td_len(uint64_t a, uint64_t b)
{
    uint64_t c = td_code(a, b);
    return sv_len(c) + (c ? 0 : sv_len(zz(a, b)));
}
static uint8_t *td_put(uint8_t *p, uint64_t a, uint64_t b)
{
    uint64_t c = td_code(a, b);
    p = sv_put(p, c);
    return c ? p : sv_put(p, zz(a, b));
}
static const uint8_t *td_get(const uint8_t *p, uint64_t base, uint64_t *a) /* *a = base + the difference */
{
    uint64_t c;
    p = sv_get(p, &c);
    if (!c) {
        p = sv_get(p, &c);
        *a = unzz(base, c);
    } else if (c & 1)
        *a = base + unzz(0, c >> 1) * 10000000u;
    else
        *a = base + unzz(0, c >> 2) * ((c & 2) ? 10000u : 1u);
    return p;
}
static uint8_t *sv_field(uint8_t *p, const uint8_t *b, uint32_t count, size_t bytes)
{
    p = sv_put(p, count);
    if (bytes) memcpy(p, b, bytes);
    return p + bytes;
}
static const uint8_t *sv_field_get(const uint8_t *p, const uint8_t **b, uint32_t *count, size_t unit)
{
    uint64_t k;
    p = sv_get(p, &k);
    *count = (uint32_t)k;
    *b = p;
    return p + unit * (size_t)k;
}

/* Bytes of the MS-PPGRH form of v. */
static size_t rec_wire_size(const rec_view *v)
{
    return REC_FIXED + 2 * ((size_t)v->n_creator + v->n_modby + v->n_gid + v->n_attr) + v->n_sec + v->n_data;
}

/* The type table's k-th type (1..n_types). */
static uint8_t *type_at(const pg_graph *g, unsigned k) { return g->types[(k - 1) / TYPE_CHUNK][(k - 1) % TYPE_CHUNK]; }

/* The type table: k (1..TYPE_MAX) for the type, entered if new; 0 when
 * the table is full or out of memory (the record then holds the type). */
static unsigned type_code(pg_graph *g, const uint8_t *type)
{
    unsigned k;
    if (g->type_last && !memcmp(type_at(g, g->type_last), type, 16)) return g->type_last;
    for (k = 1; k <= g->n_types; k++)
        if (!memcmp(type_at(g, k), type, 16)) return g->type_last = k;
    if (g->n_types == TYPE_MAX) return 0;
    if (!(g->n_types % TYPE_CHUNK) &&
        !(g->types[g->n_types / TYPE_CHUNK] = (uint8_t(*)[16])pg_alloc(TYPE_CHUNK * 16)))
        return 0;
    memcpy(type_at(g, ++g->n_types), type, 16);
    return g->type_last = g->n_types;
}

static const uint8_t *rec_type(const pg_graph *g, const pg_rec *r)
{
    return r->s[16] ? type_at(g, r->s[16]) : r->s + 17;
}

/* The fields after the ID and type. */
static const uint8_t *rec_body(const pg_rec *r) { return r->s + (r->s[16] ? 17 : 33); }

/* Peer strings in the stored form (the comment on struct pg_rec). */
static int pstr_narrow(const uint8_t *b, uint32_t units)
{
    uint32_t i;
    if (!units || units > REC_NARROW_MAX) return 0;
    for (i = 0; i < units; i++)
        if (b[2 * i + 1]) return 0;
    return 1;
}
static size_t pstr_len(const uint8_t *b, uint32_t units)
{
    if (pstr_narrow(b, units)) {
        unsigned nul = !b[2 * (units - 1)];
        return sv_len((uint64_t)units << 2 | 2 | nul) + units - nul;
    }
    return sv_len((uint64_t)units << 2) + 2 * (size_t)units;
}
static uint8_t *pstr_put(uint8_t *p, const uint8_t *b, uint32_t units)
{
    uint32_t i;
    if (pstr_narrow(b, units)) {
        unsigned nul = !b[2 * (units - 1)];
        p = sv_put(p, (uint64_t)units << 2 | 2 | nul);
        for (i = 0; i < units - nul; i++) *p++ = b[2 * i];
        return p;
    }
    p = sv_put(p, (uint64_t)units << 2);
    if (units) memcpy(p, b, 2 * (size_t)units);
    return p + 2 * (size_t)units;
}
/* Reads one into *b, *units: in place, or widened into wide[]. */
static const uint8_t *pstr_get(const uint8_t *p, const uint8_t **b, uint32_t *units, uint8_t *wide)
{
    uint64_t k;
    uint32_t i, n;
    p = sv_get(p, &k);
    *units = n = (uint32_t)(k >> 2);
    if (!(k & 2)) {
        *b = p;
        return p + 2 * (size_t)n;
    }
    n -= (uint32_t)(k & 1);
    for (i = 0; i < n; i++) {
        wide[2 * i] = p[i];
        wide[2 * i + 1] = 0;
    }
    if (k & 1) wide[2 * n] = wide[2 * n + 1] = 0;
    *b = wide;
    return p + n;
}
static const uint8_t *pstr_skip(const uint8_t *p)
{
    uint64_t k;
    p = sv_get(p, &k);
    return p + ((k & 2) ? (size_t)((k >> 2) - (k & 1)) : 2 * (size_t)(k >> 2));
}

/* What an empty field of a view points to. */
static const uint8_t rec_empty[2];

/* A new stored record of g from a parsed one (validated, or read back from
 * our own file) whose graph ID is g's and protocol version 0x0100. */
static pg_rec *rec_new(pg_graph *g, const rec_view *v)
{
    unsigned k = type_code(g, v->type);
    uint8_t lay = (uint8_t)((v->n_modby ? 0 : RF_NO_MODBY) | (v->n_sec ? 0 : RF_NO_SEC) | (v->n_attr ? 0 : RF_NO_ATTR) |
                            (v->modified == v->created ? RF_MOD_CREATED : 0));
    size_t n = 17 + (k ? 0 : 16) + sv_len(v->version) + pstr_len(v->creator, v->n_creator) + td_len(v->created, v->expires) +
               sv_len(v->n_data) + v->n_data;
    pg_rec *r;
    uint8_t *p;
    uint32_t h;
    if (v->n_modby) n += pstr_len(v->modby, v->n_modby);
    if (v->n_sec) n += sv_len(v->n_sec) + v->n_sec;
    if (!(lay & RF_MOD_CREATED)) n += td_len(v->modified, v->created);
    if (v->n_attr) n += sv_len(v->n_attr) + 2 * (size_t)v->n_attr;
    if (!(r = (pg_rec *)rs_alloc(offsetof(pg_rec, s) + n, &h))) return NULL;
    r->exp[0] = (uint32_t)v->expires;
    r->exp[1] = (uint32_t)(v->expires >> 32);
    r->flags = (uint8_t)((v->flags & RF_WIRE) | lay);
    memcpy(r->s, v->id, 16);
    r->s[16] = (uint8_t)k;
    if (!k) memcpy(r->s + 17, v->type, 16);
    p = sv_put(r->s + (k ? 17 : 33), v->version);
    p = pstr_put(p, v->creator, v->n_creator);
    if (v->n_modby) p = pstr_put(p, v->modby, v->n_modby);
    if (v->n_sec) p = sv_field(p, v->sec, v->n_sec, v->n_sec);
    p = td_put(p, v->created, v->expires);
    if (!(lay & RF_MOD_CREATED)) p = td_put(p, v->modified, v->created);
    p = sv_field(p, v->data, v->n_data, v->n_data);
    if (v->n_attr) sv_field(p, v->attr, v->n_attr, 2 * (size_t)v->n_attr);
    return r;
}

static uint32_t rec_version(const pg_rec *r)
{
    uint64_t x;
    sv_get(rec_body(r), &x);
    return (uint32_t)x;
}

/* The view of a stored record (fields point into r, into v's own wide[]
 * and into g's graph ID and type table); always 1, so that it reads like
 * rec_parse() in conditions. */
static int rec_view_of(const pg_graph *g, const pg_rec *r, rec_view *v)
{
    const uint8_t *p = rec_body(r);
    uint64_t x;
    v->id = r->s;
    v->type = rec_type(g, r);
    p = sv_get(p, &x);
    v->version = (uint32_t)x;
    v->flags = r->flags & RF_WIRE;
    p = pstr_get(p, &v->creator, &v->n_creator, v->wide[0]);
    v->modby = v->sec = v->attr = rec_empty;
    v->n_modby = v->n_sec = v->n_attr = 0;
    if (!(r->flags & RF_NO_MODBY)) p = pstr_get(p, &v->modby, &v->n_modby, v->wide[1]);
    if (!(r->flags & RF_NO_SEC)) p = sv_field_get(p, &v->sec, &v->n_sec, 1);
    v->expires = rec_expires(r);
    p = td_get(p, v->expires, &v->created);
    v->modified = v->created;
    if (!(r->flags & RF_MOD_CREATED)) p = td_get(p, v->created, &v->modified);
    v->gid = g->gid_u;
    v->n_gid = g->n_gid_u;
    v->proto = 0x0100;
    p = sv_field_get(p, &v->data, &v->n_data, 1);
    if (!(r->flags & RF_NO_ATTR)) sv_field_get(p, &v->attr, &v->n_attr, 2);
    return 1;
}

/* The last modification time of r, without the rest of the view. */
static uint64_t rec_modified(const pg_rec *r)
{
    const uint8_t *p = rec_body(r);
    uint64_t x, created;
    p = sv_get(p, &x); /* version */
    p = pstr_skip(p);
    if (!(r->flags & RF_NO_MODBY)) p = pstr_skip(p);
    if (!(r->flags & RF_NO_SEC)) {
        p = sv_get(p, &x);
        p += x;
    }
    p = td_get(p, rec_expires(r), &created);
    if (r->flags & RF_MOD_CREATED) return created;
    td_get(p, created, &x);
    return x;
}

/* Writes the MS-PPGRH bytes of v (rec_wire_size(v) of them) to p. */
static void rec_wire_write(const rec_view *v, uint8_t *p)
{
    size_t i;
    memcpy(p, v->type, 16);
    memcpy(p + 16, v->id, 16);
    put32(p + 32, v->version);
    p[36] = p[37] = p[38] = 0;
    p[39] = v->flags;
    i = 40;
    put32(p + i, v->n_creator); i += 4; memcpy(p + i, v->creator, 2 * (size_t)v->n_creator); i += 2 * (size_t)v->n_creator;
    put32(p + i, v->n_modby); i += 4; if (v->n_modby) memcpy(p + i, v->modby, 2 * (size_t)v->n_modby); i += 2 * (size_t)v->n_modby;
    put32(p + i, v->n_sec); i += 4; if (v->n_sec) memcpy(p + i, v->sec, v->n_sec); i += v->n_sec;
    put64(p + i, v->created); put64(p + i + 8, v->expires); put64(p + i + 16, v->modified); i += 24;
    put32(p + i, v->n_gid); i += 4; memcpy(p + i, v->gid, 2 * (size_t)v->n_gid); i += 2 * (size_t)v->n_gid;
    put16(p + i, v->proto); put32(p + i + 2, v->n_data); i += 6;
    if (v->n_data) memcpy(p + i, v->data, v->n_data);
    i += v->n_data;
    put32(p + i, v->n_attr); i += 4;
    if (v->n_attr) memcpy(p + i, v->attr, 2 * (size_t)v->n_attr);
}

/* Bytes of the MS-PPGRH form of a stored record. */
static uint32_t rec_len(const pg_graph *g, const pg_rec *r)
{
    rec_view v;
    rec_view_of(g, r, &v);
    return (uint32_t)rec_wire_size(&v);
}

/* ... of a stored record: rec_len(g, r) bytes. */
static void rec_wire_copy(const pg_graph *g, const pg_rec *r, uint8_t *p)
{
    rec_view v;
    rec_view_of(g, r, &v);
    rec_wire_write(&v, p);
}

/* The MS-PPGRH bytes of a view (the inverse of rec_parse), into out. */
static int rec_wire_of(const rec_view *v, pg_buf *out)
{
    size_t n = rec_wire_size(v);
    out->off = out->len = 0;
    if (!buf_reserve(out, n)) return 0;
    rec_wire_write(v, out->p);
    out->len = n;
    return 1;
}

/* Puts r in the table, replacing (and freeing) any record with its ID. */
static int rec_insert(pg_graph *g, pg_rec *r)
{
    pg_rec *old = rec_find(g, rec_id(r));
    if (old) { rec_unlink(g, old); rs_free(old); }
    rec_migrate(g, REC_STEP);
    /* the records of both tables and the new one's tombstones under 3/4 of it */
    if ((g->rec_count + g->rec_tombs + 1) * 4 > g->rec_cap * 3 && !rec_table_grow(g, 0)) return 0;
    rec_place(g->recs, g->rec_cap, rs_handle(r), &g->rec_tombs);
    g->rec_count++;
    g->rec_bytes += rec_len(g, r);
    g->rec_gen++;
    pres_map(g, r);
    return 1;
}

static void rec_table_free(pg_graph *g)
{
    size_t i;
    for (i = 0; i < rec_span(g); i++) rs_free(rec_at(g, i));
    map_free(&g->pres);
    map_free(&g->contacts);
    map_free(&g->departed);
    map_free(&g->dep_addrs);
    pg_free(g->recs);
    if (g->rec_old) L.rec_growing--;
    pg_free(g->rec_old);
    g->recs = g->rec_old = NULL;
    g->rec_cap = g->rec_count = g->rec_tombs = g->rec_oldcap = g->rec_mig = 0;
    g->rec_gen++;
    pg_free(g->srt);
    g->srt = NULL;
    g->rec_bytes = 0;
}

/* Builds the wire form of a record into a new buffer. */
static uint8_t *rec_build(const pg_graph *g, const uint8_t type[16], const uint8_t id[16], uint32_t version,
                          uint8_t flags, const wchar_t *creator, const wchar_t *modby, const PEER_DATA *sec,
                          uint64_t created, uint64_t expires, uint64_t modified, const PEER_DATA *data,
                          const wchar_t *attr, size_t *plen)
{
    uint32_t nc = u16_units(creator), nm = modby ? u16_units(modby) : 0, ng = u16_units(g->graph_id);
    uint32_t na = attr ? u16_units(attr) : 0, ns = sec ? sec->cbData : 0, nd = data ? data->cbData : 0;
    size_t len = REC_FIXED + 2 * ((size_t)nc + nm + ng + na) + ns + nd, i = 0;
    uint8_t *p = (uint8_t *)pg_alloc(len);
    if (!p) return NULL;
    memcpy(p, type, 16);
    memcpy(p + 16, id, 16);
    put32(p + 32, version);
    p[36] = p[37] = p[38] = 0;
    p[39] = flags;
    i = 40;
    put32(p + i, nc); i += 4; i += u16_write(p + i, creator);
    put32(p + i, nm); i += 4; if (nm) i += u16_write(p + i, modby);
    put32(p + i, ns); i += 4; if (ns) { memcpy(p + i, sec->pbData, ns); i += ns; }
    put64(p + i, created); put64(p + i + 8, expires); put64(p + i + 16, modified); i += 24;
    put32(p + i, ng); i += 4; i += u16_write(p + i, g->graph_id);
    put16(p + i, 0x0100); put32(p + i + 2, nd); i += 6;
    if (nd) { memcpy(p + i, data->pbData, nd); i += nd; }
    put32(p + i, na); i += 4; if (na) i += u16_write(p + i, attr);
    *plen = len;
    return p;
}

/* Record ID for a new record of `creator` ([MS-PPGRH] 3.1.7.2). */
static void rec_new_id(const wchar_t *creator, uint8_t id[16])
{
    uint8_t c16[2 * 2 * PEER_MAX_ID_CHARS + 4], fold[8];
    uint64_t a = fast_random64(), b = fast_random64(), low = a ^ b;
    size_t n = u16_write(c16, creator);
    creator_fold(c16, (uint32_t)(n / 2), fold);
    memcpy(id, fold, 8);
    put64(id + 8, low);
}

/* Size of the API form (PEER_RECORD + strings + data) of a record. */
static size_t rec_api_size(const rec_view *v)
{
    return sizeof(PEER_RECORD) + sizeof(wchar_t) * (u16_wchars(v->creator, v->n_creator) +
                                                     (v->n_modby ? u16_wchars(v->modby, v->n_modby) : 0) +
                                                     (v->n_attr ? u16_wchars(v->attr, v->n_attr) : 0)) +
           v->n_sec + v->n_data;
}

static void ft_set(FILETIME *ft, uint64_t t)
{
    ft->dwLowDateTime = (DWORD)t;
    ft->dwHighDateTime = (DWORD)(t >> 32);
}
static uint64_t ft_get(const FILETIME *ft) { return ((uint64_t)ft->dwHighDateTime << 32) | ft->dwLowDateTime; }

/* Writes the API form at dst (rec_api_size bytes, suitably aligned). */
static void rec_to_api(const rec_view *v, PPEER_RECORD pr)
{
    uint8_t *cur = (uint8_t *)(pr + 1);
    memset(pr, 0, sizeof *pr);
    pr->dwSize = sizeof *pr;
    guid_get(&pr->type, v->type);
    guid_get(&pr->id, v->id);
    pr->dwVersion = v->version;
    pr->dwFlags = v->flags & (RF_AUTOREFRESH | RF_DELETED);
    pr->pwzCreatorId = (PWSTR)cur;
    u16_to_wcs(pr->pwzCreatorId, v->creator, v->n_creator);
    cur += sizeof(wchar_t) * u16_wchars(v->creator, v->n_creator);
    if (v->n_modby) {
        pr->pwzModifiedById = (PWSTR)cur;
        u16_to_wcs(pr->pwzModifiedById, v->modby, v->n_modby);
        cur += sizeof(wchar_t) * u16_wchars(v->modby, v->n_modby);
    }
    if (v->n_attr) {
        pr->pwzAttributes = (PWSTR)cur;
        u16_to_wcs(pr->pwzAttributes, v->attr, v->n_attr);
        cur += sizeof(wchar_t) * u16_wchars(v->attr, v->n_attr);
    }
    ft_set(&pr->ftCreation, v->created);
    ft_set(&pr->ftExpiration, v->expires);
    ft_set(&pr->ftLastModified, v->modified);
    pr->securityData.cbData = v->n_sec;
    if (v->n_sec) { pr->securityData.pbData = cur; memcpy(cur, v->sec, v->n_sec); cur += v->n_sec; }
    pr->data.cbData = v->n_data;
    if (v->n_data) { pr->data.pbData = cur; memcpy(cur, v->data, v->n_data); }
}

/* ========================================================================= */
/* 5b. Record attributes and searches                                        */
/* Attribute XML (PEER_RECORD.pwzAttributes) is checked by attr_validate.    */
/* A search (PeerGraphSearchRecords) is compiled once by query_compile into  */
/* one allocated block: a preorder array of nodes (and / or / clause; the    */
/* children of and/or follow their parent, linked by `next`) and a pool of   */
/* decoded clause strings.  query_match then reads a record's attribute XML  */
/* in one pass with no allocation: values are read through a cursor that    */
/* decodes entity and character references on the fly.                       */
/*                                                                           */
/* The XML subset: an optional BOM, an optional <?xml ...?> declaration, one */
/* root element, whitespace between elements, the five predefined entities   */
/* and numeric references.  Comments, CDATA, processing instructions and     */
/* DOCTYPE are refused.  Element and attribute names are case-sensitive as   */
/* in XML; only xmlns:prefix declarations may appear on the root.            */
/* Strings are handled as Unicode code points (a surrogate pair is one       */
/* character); lengths are counted in UTF-16 units as on Windows.            */
/* ========================================================================= */

#define SX_MAX_CHARS 100000u /* MAX_ATTRIBUTE_STREAM_LENGTH (XP header) */
#define SX_MAX_DEPTH 64      /* nested and/or elements in a search */
#define SX_NAME_MAX 40       /* attribute names: 1..40 of [0-9A-Za-z] */
#define SX_MAX_NS 32         /* xmlns:prefix declarations on a root element */
#define SX_FAST_CLAUSES 256  /* clauses evaluated in one pass over a record */
#define SX_STAR 0xFFFFFFFFu  /* pattern token: any run of characters */
#define SX_ONE 0xFFFFFFFEu   /* pattern token: exactly one character */

enum { SX_T_STRING, SX_T_INT, SX_T_DATE };
enum { SX_C_EQUAL, SX_C_NOTEQUAL, SX_C_LESS, SX_C_GREATER, SX_C_LESSOREQUAL, SX_C_GREATEROREQUAL };
enum { SX_N_CLAUSE, SX_N_AND, SX_N_OR };
enum { SX_F_NONE, SX_F_CREATOR, SX_F_MODBY, SX_F_ID, SX_F_TYPE, SX_F_CTIME, SX_F_MTIME };

static const struct { const char *name; int field; int type; } sx_reserved[] = {
    {"peercreatorid", SX_F_CREATOR, SX_T_STRING},
    {"peerlastmodifiedby", SX_F_MODBY, SX_T_STRING},
    {"peerrecordid", SX_F_ID, SX_T_STRING},
    {"peerrecordtype", SX_F_TYPE, SX_T_STRING},
    {"peercreationtime", SX_F_CTIME, SX_T_DATE},
    {"peerlastmodificationtime", SX_F_MTIME, SX_T_DATE},
};
static const char *const sx_type_names[] = {"string", "int", "date"};
static const char *const sx_cmp_names[] = {"equal", "notequal", "less", "greater", "lessorequal", "greaterorequal"};
static const wchar_t sx_empty[1] = {0};


/* What a search sees of one record.  Times are FILETIME units. */
typedef struct pg_search_rec {
    const wchar_t *attributes;        /* attribute XML (passed attr_validate), may be NULL */
    const wchar_t *creator;           /* peercreatorid */
    const wchar_t *modified_by;       /* peerlastmodifiedby; NULL or empty: the creator */
    const GUID *id, *type;            /* peerrecordid, peerrecordtype */
    uint64_t creation, last_modified; /* peercreationtime, peerlastmodificationtime */
} pg_search_rec;

/* ---- characters ---------------------------------------------------------- */

static int sx_isws(uint32_t c) { return c == 0x20 || c == 0x09 || c == 0x0A || c == 0x0D; }
static int sx_isdigit(uint32_t c) { return c >= '0' && c <= '9'; }
static int sx_isalnum(uint32_t c)
{
    return sx_isdigit(c) || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}
static uint32_t sx_fold(uint32_t c) { return (c >= 'A' && c <= 'Z') ? c + 32 : c; }

/* The XML 1.0 Char production. */
static int sx_char_ok(uint32_t c)
{
    return c == 0x09 || c == 0x0A || c == 0x0D || (c >= 0x20 && c <= 0xD7FF) ||
           (c >= 0xE000 && c <= 0xFFFD) || (c >= 0x10000 && c <= 0x10FFFF);
}

/* Sort key giving UTF-16 ordinal order on code points: supplementary
 * characters (surrogate pairs in UTF-16) sort between U+D7FF and U+E000. */
static uint32_t sx_key(uint32_t c) { return (c >= 0xE000 && c <= 0xFFFF) ? c + 0x200000u : c; }

/* One character of a wchar_t string (UTF-16 or UTF-32): a valid surrogate
 * pair is combined; anything else is returned as it is.  Returns the units
 * used (1 or 2). */
static size_t sx_raw(const wchar_t *p, uint32_t *cp)
{
    uint32_t u = (uint32_t)p[0];
    if (u >= 0xD800 && u <= 0xDBFF) {
        uint32_t v = (uint32_t)p[1];
        if (v >= 0xDC00 && v <= 0xDFFF) {
            *cp = 0x10000u + ((u - 0xD800u) << 10) + (v - 0xDC00u);
            return 2;
        }
    }
    *cp = u;
    return 1;
}

/* p starts with the ASCII string s. */
static int sx_lit(const wchar_t *p, const char *s)
{
    for (; *s; p++, s++)
        if ((uint32_t)*p != (uint32_t)(unsigned char)*s) return 0;
    return 1;
}

/* A reference at p ('&'): &lt; &gt; &amp; &quot; &apos; &#NN; &#xHH;.  Returns
 * the units used and the character, or 0 when malformed or not an XML Char. */
static size_t sx_ref(const wchar_t *p, uint32_t *cp)
{
    static const struct { const char *text; char ch; } ents[] = {
        {"lt;", '<'}, {"gt;", '>'}, {"amp;", '&'}, {"quot;", '"'}, {"apos;", '\''},
    };
    size_t i;
    if ((uint32_t)p[1] == '#') {
        int hex = (uint32_t)p[2] == 'x';
        size_t k = hex ? 3 : 2, first = k;
        uint32_t v = 0;
        for (;; k++) {
            uint32_t c = (uint32_t)p[k], d;
            if (sx_isdigit(c)) d = c - '0';
            else if (hex && c >= 'a' && c <= 'f') d = c - 'a' + 10;
            else if (hex && c >= 'A' && c <= 'F') d = c - 'A' + 10;
            else break;
            v = v * (hex ? 16u : 10u) + d;
            if (v > 0x10FFFF) return 0;
        }
        if (k == first || (uint32_t)p[k] != ';' || !sx_char_ok(v)) return 0;
        *cp = v;
        return k + 1;
    }
    for (i = 0; i < sizeof ents / sizeof ents[0]; i++) {
        if (sx_lit(p + 1, ents[i].text)) {
            *cp = (uint32_t)(unsigned char)ents[i].ch;
            return 1 + strlen(ents[i].text);
        }
    }
    return 0;
}

/* ---- cursor: the characters of a value, decoded lazily ------------------- */

typedef struct sx_cur {
    const wchar_t *p;
    wchar_t stop; /* '<' element text; '"' or '\'' attribute value */
    int xml;      /* 0: a plain string (record field), read up to its NUL */
} sx_cur;

static sx_cur sx_cur_make(const wchar_t *p, wchar_t stop, int xml)
{
    sx_cur c;
    c.p = p;
    c.stop = stop;
    c.xml = xml;
    return c;
}

/* Next code point, or -1 at the end.  In XML, line ends are normalised
 * (CR LF and CR -> LF) and, in attribute values, literal tab/CR/LF become
 * spaces.  Never reads past a NUL, whatever the input. */
static int32_t sx_next(sx_cur *c)
{
    uint32_t u = (uint32_t)c->p[0], cp;
    if (u == 0) return -1;
    if (c->xml) {
        if (u == (uint32_t)c->stop || u == '<') return -1;
        if (u == '&') {
            size_t k = sx_ref(c->p, &cp);
            if (!k) return -1;
            c->p += k;
            return (int32_t)cp;
        }
        if (u == '\r') {
            c->p += (uint32_t)c->p[1] == '\n' ? 2 : 1;
            return c->stop == '<' ? '\n' : ' ';
        }
        if (c->stop != '<' && (u == '\n' || u == '\t')) {
            c->p++;
            return ' ';
        }
    }
    c->p += sx_raw(c->p, &cp);
    return cp > 0x10FFFF ? 0xFFFD : (int32_t)cp;
}

/* A cursor with one character of lookahead, for the number parsers. */
typedef struct sx_rd { sx_cur c; int32_t ch; } sx_rd;

static void sx_rd_adv(sx_rd *r) { r->ch = sx_next(&r->c); }
static void sx_rd_ws(sx_rd *r)
{
    while (r->ch >= 0 && sx_isws((uint32_t)r->ch)) sx_rd_adv(r);
}
static int sx_rd_digits(sx_rd *r, int n, int *v)
{
    *v = 0;
    while (n-- > 0) {
        if (r->ch < 0 || !sx_isdigit((uint32_t)r->ch)) return 0;
        *v = *v * 10 + (r->ch - '0');
        sx_rd_adv(r);
    }
    return 1;
}
static int sx_rd_is(sx_rd *r, char ch)
{
    if (r->ch != (int32_t)(unsigned char)ch) return 0;
    sx_rd_adv(r);
    return 1;
}

/* An int value: optional '-', ASCII digits, within int64; surrounding XML
 * whitespace is allowed. */
static int sx_int(sx_cur c, int64_t *out)
{
    sx_rd r;
    int neg, any = 0;
    uint64_t v = 0, lim;
    r.c = c;
    sx_rd_adv(&r);
    sx_rd_ws(&r);
    neg = sx_rd_is(&r, '-');
    lim = neg ? (uint64_t)INT64_MAX + 1u : (uint64_t)INT64_MAX;
    while (r.ch >= 0 && sx_isdigit((uint32_t)r.ch)) {
        uint64_t d = (uint64_t)(r.ch - '0');
        if (v > (lim - d) / 10u) return 0;
        v = v * 10u + d;
        any = 1;
        sx_rd_adv(&r);
    }
    sx_rd_ws(&r);
    if (!any || r.ch >= 0) return 0;
    if (!neg) *out = (int64_t)v;
    else if (v == (uint64_t)INT64_MAX + 1u) *out = INT64_MIN;
    else *out = -(int64_t)v;
    return 1;
}

static int sx_leap(int y) { return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0; }

/* Days from 1601-01-01 to y-m-d (proleptic Gregorian, 0 <= y <= 9999). */
static int64_t sx_days(int y, int m, int d)
{
    static const int before[12] = {0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334};
    /* days before 1 January of year y, counted from year 0 (a leap year) */
    int64_t a = 365 * (int64_t)y + (y + 3) / 4 - (y + 99) / 100 + (y + 399) / 400;
    int64_t b = 365 * (int64_t)1601 + (1601 + 3) / 4 - (1601 + 99) / 100 + (1601 + 399) / 400;
    return a - b + before[m - 1] + (m > 2 && sx_leap(y)) + (d - 1);
}

/* A W3C NOTE-datetime value: YYYY, YYYY-MM, YYYY-MM-DD, YYYY-MM-DDThh:mmTZD,
 * YYYY-MM-DDThh:mm:ssTZD, YYYY-MM-DDThh:mm:ss.sTZD (one or more fraction
 * digits; the first seven count); TZD is Z, +hh:mm or -hh:mm.  Surrounding
 * XML whitespace is allowed.  Result in FILETIME units (100 ns since
 * 1601-01-01 UTC; negative before 1601). */
static int sx_date(sx_cur c, int64_t *out)
{
    static const int mdays[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    sx_rd r;
    int y, mo = 1, d = 1, h = 0, mi = 0, s = 0, tzh = 0, tzm = 0, tzs = 0, nf = 0;
    int64_t frac = 0, secs;
    r.c = c;
    sx_rd_adv(&r);
    sx_rd_ws(&r);
    if (!sx_rd_digits(&r, 4, &y)) return 0;
    if (sx_rd_is(&r, '-')) {
        if (!sx_rd_digits(&r, 2, &mo)) return 0;
        if (sx_rd_is(&r, '-')) {
            if (!sx_rd_digits(&r, 2, &d)) return 0;
            if (sx_rd_is(&r, 'T')) {
                if (!sx_rd_digits(&r, 2, &h) || !sx_rd_is(&r, ':') || !sx_rd_digits(&r, 2, &mi)) return 0;
                if (sx_rd_is(&r, ':')) {
                    if (!sx_rd_digits(&r, 2, &s)) return 0;
                    if (sx_rd_is(&r, '.')) {
                        int any = 0;
                        while (r.ch >= 0 && sx_isdigit((uint32_t)r.ch)) {
                            if (nf < 7) { frac = frac * 10 + (r.ch - '0'); nf++; }
                            any = 1;
                            sx_rd_adv(&r);
                        }
                        if (!any) return 0;
                        for (; nf < 7; nf++) frac *= 10;
                    }
                }
                if (sx_rd_is(&r, 'Z')) {
                    tzs = 0;
                } else {
                    if (sx_rd_is(&r, '+')) tzs = 1;
                    else if (sx_rd_is(&r, '-')) tzs = -1;
                    else return 0;
                    if (!sx_rd_digits(&r, 2, &tzh) || !sx_rd_is(&r, ':') || !sx_rd_digits(&r, 2, &tzm)) return 0;
                }
            }
        }
    }
    sx_rd_ws(&r);
    if (r.ch >= 0) return 0;
    if (mo < 1 || mo > 12 || d < 1 || d > mdays[mo - 1] + (mo == 2 && sx_leap(y))) return 0;
    if (h > 23 || mi > 59 || s > 59 || tzh > 23 || tzm > 59) return 0;
    secs = ((sx_days(y, mo, d) * 24 + h) * 60 + mi) * 60 + s - (int64_t)tzs * (tzh * 60 + tzm) * 60;
    *out = secs * 10000000 + frac;
    return 1;
}

/* ---- XML scanning -------------------------------------------------------- */

/* Checks character data from p up to the stop character ('<' for element
 * text, the quote for an attribute value): XML Chars only, well-formed
 * references, no "]]>" in text, no '<' in attribute values.  Returns the
 * position of the stop character, or NULL. */
static const wchar_t *sx_scan(const wchar_t *p, wchar_t stop)
{
    for (;;) {
        uint32_t u = (uint32_t)*p, cp;
        size_t k;
        if (u == (uint32_t)stop) return p;
        if (u == 0 || u == '<') return NULL;
        if (u == '&') {
            k = sx_ref(p, &cp);
            if (!k) return NULL;
            p += k;
            continue;
        }
        if (stop == '<' && u == ']' && (uint32_t)p[1] == ']' && (uint32_t)p[2] == '>') return NULL;
        k = sx_raw(p, &cp);
        if (!sx_char_ok(cp)) return NULL;
        p += k;
    }
}

/* The same without checks (record XML, already validated): NULL at a NUL. */
static const wchar_t *sx_skip_to(const wchar_t *p, wchar_t stop)
{
    while (*p != stop) {
        if (!*p) return NULL;
        p++;
    }
    return p;
}

static int sx_skip_ws(const wchar_t **pp)
{
    const wchar_t *p = *pp;
    while (sx_isws((uint32_t)*p)) p++;
    if (p == *pp) return 0;
    *pp = p;
    return 1;
}

/* Length of the XML name at p (ASCII name characters; any non-ASCII unit is
 * accepted as a name character), 0 if none. */
static size_t sx_namelen(const wchar_t *p)
{
    size_t n = 0;
    for (;; n++) {
        uint32_t c = (uint32_t)p[n];
        int start = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || c == '_' || c == ':' || c >= 0x80;
        if (!start && (n == 0 || !(sx_isdigit(c) || c == '-' || c == '.'))) return n;
    }
}

static int sx_name_is(const wchar_t *p, size_t n, const char *s) { return n == strlen(s) && sx_lit(p, s); }

/* At '<' + name: consumes both.  Returns 1 when the name is `name`. */
static int sx_open(const wchar_t **pp, const char *name)
{
    const wchar_t *p = *pp;
    size_t n;
    if ((uint32_t)*p != '<') return 0;
    n = sx_namelen(p + 1);
    if (!sx_name_is(p + 1, n, name)) return 0;
    *pp = p + 1 + n;
    return 1;
}

/* At "</name" S? ">": consumes it. */
static int sx_close(const wchar_t **pp, const char *name)
{
    const wchar_t *p = *pp;
    size_t n;
    if ((uint32_t)p[0] != '<' || (uint32_t)p[1] != '/') return 0;
    n = sx_namelen(p + 2);
    if (!sx_name_is(p + 2, n, name)) return 0;
    p += 2 + n;
    sx_skip_ws(&p);
    if ((uint32_t)*p != '>') return 0;
    *pp = p + 1;
    return 1;
}

typedef struct sx_xattr {
    const wchar_t *name;
    size_t nlen;
    const wchar_t *val; /* after the opening quote */
    wchar_t quote;
} sx_xattr;

/* The next attribute of a start tag, or its end.  Returns 1 (an attribute
 * in *a), 2 ('>': content follows), 3 ("/>": empty element), 0 malformed.
 * strict: check the value's characters and references. */
static int sx_attr_next(const wchar_t **pp, sx_xattr *a, int strict)
{
    const wchar_t *p = *pp;
    int ws = sx_skip_ws(&p);
    if ((uint32_t)*p == '>') {
        *pp = p + 1;
        return 2;
    }
    if ((uint32_t)p[0] == '/' && (uint32_t)p[1] == '>') {
        *pp = p + 2;
        return 3;
    }
    if (!ws || !(a->nlen = sx_namelen(p))) return 0;
    a->name = p;
    p += a->nlen;
    sx_skip_ws(&p);
    if ((uint32_t)*p != '=') return 0;
    p++;
    sx_skip_ws(&p);
    if ((uint32_t)*p != '"' && (uint32_t)*p != '\'') return 0;
    a->quote = *p++;
    a->val = p;
    p = strict ? sx_scan(p, a->quote) : sx_skip_to(p, a->quote);
    if (!p) return 0;
    *pp = p + 1;
    return 1;
}

/* Decodes an attribute value made of printable ASCII into buf (cap bytes
 * with the NUL).  Returns its length; 0 if empty, too long or not ASCII. */
static size_t sx_word(const sx_xattr *a, char *buf, size_t cap)
{
    sx_cur c = sx_cur_make(a->val, a->quote, 1);
    size_t n = 0;
    int32_t ch;
    while ((ch = sx_next(&c)) >= 0) {
        if (ch < 0x21 || ch > 0x7E || n + 1 >= cap) return 0;
        buf[n++] = (char)ch;
    }
    buf[n] = 0;
    return n;
}

/* An attribute name (1..40 of [0-9A-Za-z]) folded to lower case into
 * buf[SX_NAME_MAX + 1]; 0 if invalid. */
static int sx_attr_name(const sx_xattr *a, char *buf)
{
    size_t n = sx_word(a, buf, SX_NAME_MAX + 1), i;
    if (!n) return 0;
    for (i = 0; i < n; i++) {
        if (!sx_isalnum((uint32_t)(unsigned char)buf[i])) return 0;
        buf[i] = (char)sx_fold((uint32_t)(unsigned char)buf[i]);
    }
    return 1;
}

static int sx_lookup(const char *w, const char *const *names, int n)
{
    int i;
    for (i = 0; i < n; i++)
        if (!strcmp(w, names[i])) return i;
    return -1;
}

static int sx_reserved_index(const char *lname)
{
    int i;
    for (i = 0; i < (int)(sizeof sx_reserved / sizeof sx_reserved[0]); i++)
        if (!strcmp(lname, sx_reserved[i].name)) return i;
    return -1;
}

/* The XML declaration's pseudo-attribute `name`, value into buf. */
static int sx_pseudo(const wchar_t **pp, const char *name, char *buf, size_t cap)
{
    const wchar_t *p = *pp;
    sx_xattr a;
    if (sx_attr_next(&p, &a, 1) != 1 || !sx_name_is(a.name, a.nlen, name) || !sx_word(&a, buf, cap)) return 0;
    *pp = p;
    return 1;
}

/* Optional BOM and XML declaration, then whitespace. */
static int sx_prolog(const wchar_t **pp)
{
    const wchar_t *p = *pp;
    char v[32];
    size_t i;
    if ((uint32_t)*p == 0xFEFF) p++;
    if (sx_lit(p, "<?xml") && sx_isws((uint32_t)p[5])) {
        p += 5;
        if (!sx_pseudo(&p, "version", v, sizeof v) || strncmp(v, "1.", 2) || !v[2]) return 0;
        for (i = 2; v[i]; i++)
            if (!sx_isdigit((uint32_t)(unsigned char)v[i])) return 0;
        if (sx_pseudo(&p, "encoding", v, sizeof v)) {
            if (!((v[0] >= 'A' && v[0] <= 'Z') || (v[0] >= 'a' && v[0] <= 'z'))) return 0;
            for (i = 1; v[i]; i++)
                if (!sx_isalnum((uint32_t)(unsigned char)v[i]) && v[i] != '.' && v[i] != '_' && v[i] != '-') return 0;
        }
        if (sx_pseudo(&p, "standalone", v, sizeof v) && strcmp(v, "yes") && strcmp(v, "no")) return 0;
        sx_skip_ws(&p);
        if (!sx_lit(p, "?>")) return 0;
        p += 2;
    }
    sx_skip_ws(&p);
    *pp = p;
    return 1;
}

/* Attributes of a root element: xmlns:prefix="non-empty" only, no
 * duplicates.  Returns sx_attr_next's 2 or 3, or 0. */
static int sx_root_attrs(const wchar_t **pp)
{
    sx_xattr a, seen[SX_MAX_NS];
    size_t ns = 0, i;
    int r;
    while ((r = sx_attr_next(pp, &a, 1)) == 1) {
        if (a.nlen <= 6 || !sx_lit(a.name, "xmlns:") || a.val[0] == a.quote || ns == SX_MAX_NS) return 0;
        for (i = 6; i < a.nlen; i++)
            if ((uint32_t)a.name[i] == ':') return 0;
        for (i = 0; i < ns; i++)
            if (seen[i].nlen == a.nlen && !memcmp(seen[i].name, a.name, a.nlen * sizeof(wchar_t))) return 0;
        seen[ns++] = a;
    }
    return r;
}

/* Measures xml: 1 if it has at most SX_MAX_CHARS UTF-16 units; *starts gets
 * the number of '<' not followed by '/' (an upper bound on elements). */
static int sx_measure(const wchar_t *xml, size_t *units, size_t *starts)
{
    size_t n = 0, s = 0;
    const wchar_t *p;
    for (p = xml; *p; p++) {
#if WCHAR_MAX > 0xFFFF
        n += (uint32_t)*p > 0xFFFF ? 2 : 1;
#else
        n++;
#endif
        if (n > SX_MAX_CHARS) return 0;
        if ((uint32_t)*p == '<' && (uint32_t)p[1] != '/') s++;
    }
    *units = n;
    *starts = s;
    return 1;
}

/* ---- attribute XML ------------------------------------------------------- */

/* One <attribute ...>value</attribute>, after its name. */
static int sx_check_attribute(const wchar_t **pp)
{
    const wchar_t *p = *pp;
    sx_xattr a, name, type;
    unsigned seen = 0;
    char lname[SX_NAME_MAX + 1], tw[8];
    int r, t;
    sx_cur val;
    int64_t v;
    memset(&name, 0, sizeof name);
    memset(&type, 0, sizeof type);
    while ((r = sx_attr_next(&p, &a, 1)) == 1) {
        unsigned bit;
        if (sx_name_is(a.name, a.nlen, "name")) { bit = 1; name = a; }
        else if (sx_name_is(a.name, a.nlen, "type")) { bit = 2; type = a; }
        else return 0;
        if (seen & bit) return 0;
        seen |= bit;
    }
    if (!r || seen != 3) return 0;
    if (!sx_attr_name(&name, lname) || sx_reserved_index(lname) >= 0) return 0;
    if (!sx_word(&type, tw, sizeof tw) || (t = sx_lookup(tw, sx_type_names, 3)) < 0) return 0;
    if (r == 3) {
        val = sx_cur_make(sx_empty, '<', 1);
    } else {
        val = sx_cur_make(p, '<', 1);
        if (!(p = sx_scan(p, '<')) || !sx_close(&p, "attribute")) return 0;
    }
    if (t == SX_T_INT && !sx_int(val, &v)) return 0;
    if (t == SX_T_DATE && !sx_date(val, &v)) return 0;
    *pp = p;
    return 1;
}

static HRESULT attr_validate(const wchar_t *xml)
{
    const wchar_t *p = xml;
    size_t units, starts;
    int r;
    if (!xml) return S_OK;
    if (!sx_measure(xml, &units, &starts) || !sx_prolog(&p) || !sx_open(&p, "attributes"))
        return PEER_E_INVALID_ATTRIBUTES;
    r = sx_root_attrs(&p);
    if (!r) return PEER_E_INVALID_ATTRIBUTES;
    if (r == 2) {
        for (;;) {
            sx_skip_ws(&p);
            if (sx_close(&p, "attributes")) break;
            if (!sx_open(&p, "attribute") || !sx_check_attribute(&p)) return PEER_E_INVALID_ATTRIBUTES;
        }
    }
    sx_skip_ws(&p);
    return *p ? PEER_E_INVALID_ATTRIBUTES : S_OK;
}

/* ---- compiled search ----------------------------------------------------- */

typedef struct sx_node {
    uint8_t kind, type, cmp, field; /* field: SX_F_*, a reserved name */
    uint32_t next;                  /* next sibling (0: none; node 0 is the root) */
    uint32_t slot;                  /* clause number */
    uint32_t pat, npat;             /* string value: pool offset and length */
    int64_t num;                    /* int or date value */
    char name[SX_NAME_MAX + 1];     /* lower case */
} sx_node;

struct pg_query {
    sx_node *nodes;
    uint32_t nnodes, nclauses, cap;
    int need_xml; /* some clause names a non-reserved attribute */
    uint32_t *pool;
    uint32_t npool;
};

typedef struct sx_cc {
    pg_query *q;
    const wchar_t *p;
    int bad_escape;
} sx_cc;

/* A string clause's value: references decoded, escapes \* \? \\ resolved,
 * '*' and '?' turned into tokens, ASCII folded to lower case. */
static void sx_pattern(sx_cc *c, sx_node *n, sx_cur v)
{
    uint32_t *out = c->q->pool + c->q->npool, k = 0;
    int32_t ch;
    n->pat = c->q->npool;
    while ((ch = sx_next(&v)) >= 0) {
        uint32_t u = (uint32_t)ch;
        if (u == '\\') {
            ch = sx_next(&v);
            if (ch != '*' && ch != '?' && ch != '\\') {
                c->bad_escape = 1;
                break;
            }
            u = (uint32_t)ch;
        } else if (u == '*') {
            u = SX_STAR;
        } else if (u == '?') {
            u = SX_ONE;
        } else {
            u = sx_fold(u);
        }
        out[k++] = u;
    }
    n->npat = k;
    c->q->npool += k;
}

/* <clause attrib="" type="" compare="">value</clause>, after its name. */
static int sx_c_clause(sx_cc *c, sx_node *n)
{
    sx_xattr a;
    unsigned seen = 0;
    char w[16];
    int r, i;
    sx_cur val;
    n->kind = SX_N_CLAUSE;
    n->cmp = SX_C_EQUAL;
    while ((r = sx_attr_next(&c->p, &a, 1)) == 1) {
        unsigned bit;
        if (sx_name_is(a.name, a.nlen, "attrib")) {
            bit = 1;
            if (!sx_attr_name(&a, n->name)) return 0;
        } else if (sx_name_is(a.name, a.nlen, "type")) {
            bit = 2;
            if (!sx_word(&a, w, sizeof w) || (i = sx_lookup(w, sx_type_names, 3)) < 0) return 0;
            n->type = (uint8_t)i;
        } else if (sx_name_is(a.name, a.nlen, "compare")) {
            bit = 4;
            if (!sx_word(&a, w, sizeof w) || (i = sx_lookup(w, sx_cmp_names, 6)) < 0) return 0;
            n->cmp = (uint8_t)i;
        } else {
            return 0;
        }
        if (seen & bit) return 0;
        seen |= bit;
    }
    if (!r || (seen & 3) != 3) return 0;
    if (r == 3) {
        val = sx_cur_make(sx_empty, '<', 1);
    } else {
        val = sx_cur_make(c->p, '<', 1);
        if (!(c->p = sx_scan(c->p, '<')) || !sx_close(&c->p, "clause")) return 0;
    }
    if (n->type == SX_T_STRING) sx_pattern(c, n, val);
    else if (n->type == SX_T_INT && !sx_int(val, &n->num)) return 0;
    else if (n->type == SX_T_DATE && !sx_date(val, &n->num)) return 0;
    i = sx_reserved_index(n->name);
    n->field = (uint8_t)(i < 0 ? SX_F_NONE : sx_reserved[i].field);
    if (i < 0) c->q->need_xml = 1;
    n->slot = c->q->nclauses++;
    return 1;
}

/* One <clause>, <and> or <or> at c->p. depth: and/or elements enclosing it + 1. */
static int sx_c_node(sx_cc *c, int depth)
{
    const wchar_t *p = c->p;
    size_t len;
    uint32_t idx, prev = 0;
    sx_node *n;
    const char *name;
    if ((uint32_t)*p != '<' || c->q->nnodes >= c->q->cap) return 0;
    len = sx_namelen(p + 1);
    idx = c->q->nnodes++;
    n = &c->q->nodes[idx];
    memset(n, 0, sizeof *n);
    c->p = p + 1 + len;
    if (sx_name_is(p + 1, len, "clause")) return sx_c_clause(c, n);
    if (sx_name_is(p + 1, len, "and")) name = "and", n->kind = SX_N_AND;
    else if (sx_name_is(p + 1, len, "or")) name = "or", n->kind = SX_N_OR;
    else return 0;
    if (depth > SX_MAX_DEPTH) return 0;
    {
        sx_xattr a;
        if (sx_attr_next(&c->p, &a, 1) != 2) return 0; /* no attributes, not empty */
    }
    for (;;) {
        uint32_t child;
        sx_skip_ws(&c->p);
        if (sx_close(&c->p, name)) break;
        child = c->q->nnodes;
        if (!sx_c_node(c, depth + 1)) return 0;
        if (prev) c->q->nodes[prev].next = child;
        prev = child;
    }
    return prev != 0;
}

static void query_free(pg_query *q) { pg_free(q); }

static size_t sx_round(size_t n) { return (n + 15u) & ~(size_t)15u; }

static HRESULT query_compile(const wchar_t *xml, pg_query **out)
{
    size_t units, starts, hdr, nb;
    pg_query *q;
    sx_cc c;
    int r;
    if (!out) return E_INVALIDARG;
    *out = NULL;
    if (!xml) return E_INVALIDARG;
    if (!sx_measure(xml, &units, &starts) || starts == 0) return PEER_E_INVALID_SEARCH;
    hdr = sx_round(sizeof(pg_query));
    nb = sx_round(starts * sizeof(sx_node));
    q = (pg_query *)pg_alloc(hdr + nb + units * sizeof(uint32_t));
    if (!q) return E_OUTOFMEMORY;
    memset(q, 0, sizeof *q);
    q->nodes = (sx_node *)(void *)((char *)q + hdr);
    q->pool = (uint32_t *)(void *)((char *)q + hdr + nb);
    q->cap = (uint32_t)starts;
    c.q = q;
    c.p = xml;
    c.bad_escape = 0;
    r = sx_prolog(&c.p) && sx_open(&c.p, "peersearch") && sx_root_attrs(&c.p) == 2;
    if (r) {
        sx_skip_ws(&c.p);
        r = sx_c_node(&c, 1);
    }
    if (r) {
        sx_skip_ws(&c.p);
        r = sx_close(&c.p, "peersearch");
    }
    if (r) {
        sx_skip_ws(&c.p);
        r = *c.p == 0;
    }
    if (!r || c.bad_escape) {
        query_free(q);
        return r ? E_INVALIDARG : PEER_E_INVALID_SEARCH;
    }
    *out = q;
    return S_OK;
}

/* ---- matching ------------------------------------------------------------ */

/* Wildcard match of the value v against the pattern (case-insensitive for
 * ASCII).  Classic greedy matching with one backtrack point. */
static int sx_wild(const uint32_t *pat, uint32_t m, sx_cur v)
{
    uint32_t pi = 0, star = 0;
    int have_star = 0;
    sx_cur star_v = v;
    for (;;) {
        sx_cur here = v;
        int32_t ch = sx_next(&v);
        if (ch < 0) break;
        if (pi < m && pat[pi] == SX_STAR) {
            have_star = 1;
            star = pi++;
            star_v = here;
            v = here;
            continue;
        }
        if (pi < m && (pat[pi] == SX_ONE || pat[pi] == sx_fold((uint32_t)ch))) {
            pi++;
            continue;
        }
        if (!have_star) return 0;
        pi = star + 1;
        sx_next(&star_v);
        v = star_v;
    }
    while (pi < m && pat[pi] == SX_STAR) pi++;
    return pi == m;
}

/* Ordinal comparison (UTF-16 order, ASCII case folded) of v with the
 * pattern taken literally ('*' and '?' are ordinary characters here). */
static int sx_strcmp(sx_cur v, const uint32_t *pat, uint32_t m)
{
    uint32_t i;
    for (i = 0;; i++) {
        int32_t ch = sx_next(&v);
        uint32_t a, b;
        if (ch < 0) return i < m ? -1 : 0;
        if (i == m) return 1;
        a = sx_key(sx_fold((uint32_t)ch));
        b = pat[i] == SX_STAR ? '*' : pat[i] == SX_ONE ? '?' : pat[i];
        b = sx_key(b);
        if (a != b) return a < b ? -1 : 1;
    }
}

static int sx_apply(int cmp, int sign)
{
    switch (cmp) {
    case SX_C_EQUAL: return sign == 0;
    case SX_C_NOTEQUAL: return sign != 0;
    case SX_C_LESS: return sign < 0;
    case SX_C_GREATER: return sign > 0;
    case SX_C_LESSOREQUAL: return sign <= 0;
    default: return sign >= 0;
    }
}

static int sx_sign64(int64_t a, int64_t b) { return a < b ? -1 : a > b; }

/* Does a value of the clause's type satisfy the clause? */
static int sx_value_match(const pg_query *q, const sx_node *n, sx_cur v)
{
    int64_t x;
    if (n->type == SX_T_STRING) {
        const uint32_t *pat = q->pool + n->pat;
        if (n->cmp == SX_C_EQUAL) return sx_wild(pat, n->npat, v);
        if (n->cmp == SX_C_NOTEQUAL) return !sx_wild(pat, n->npat, v);
        return sx_apply(n->cmp, sx_strcmp(v, pat, n->npat));
    }
    if (n->type == SX_T_INT ? !sx_int(v, &x) : !sx_date(v, &x)) return 0;
    return sx_apply(n->cmp, sx_sign64(x, n->num));
}

/* A clause on a reserved name, against the record's own fields. */
static int sx_field_match(const pg_query *q, const sx_node *n, const pg_search_rec *r)
{
    static const char hex[] = "0123456789abcdef";
    const wchar_t *s = NULL;
    wchar_t buf[40];
    uint64_t t;
    switch (n->field) {
    case SX_F_CREATOR:
        s = r->creator;
        break;
    case SX_F_MODBY:
        s = (r->modified_by && r->modified_by[0]) ? r->modified_by : r->creator;
        break;
    case SX_F_ID:
    case SX_F_TYPE: {
        const GUID *g = n->field == SX_F_ID ? r->id : r->type;
        uint8_t b[16];
        int i, k = 0;
        if (!g) return 0;
        for (i = 0; i < 4; i++) b[i] = (uint8_t)(g->Data1 >> (24 - 8 * i));
        b[4] = (uint8_t)(g->Data2 >> 8);
        b[5] = (uint8_t)g->Data2;
        b[6] = (uint8_t)(g->Data3 >> 8);
        b[7] = (uint8_t)g->Data3;
        memcpy(b + 8, g->Data4, 8);
        buf[k++] = L'{';
        for (i = 0; i < 16; i++) {
            if (i == 4 || i == 6 || i == 8 || i == 10) buf[k++] = L'-';
            buf[k++] = (wchar_t)hex[b[i] >> 4];
            buf[k++] = (wchar_t)hex[b[i] & 15];
        }
        buf[k++] = L'}';
        buf[k] = 0;
        s = buf;
        break;
    }
    default: /* SX_F_CTIME, SX_F_MTIME */
        if (n->type != SX_T_DATE) return 0;
        t = n->field == SX_F_CTIME ? r->creation : r->last_modified;
        return sx_apply(n->cmp, sx_sign64(t > (uint64_t)INT64_MAX ? INT64_MAX : (int64_t)t, n->num));
    }
    if (!s || n->type != SX_T_STRING) return 0;
    return sx_value_match(q, n, sx_cur_make(s, 0, 0));
}

/* Walks the <attribute> elements of a record's (validated) attribute XML.
 * Tolerant: anything unexpected ends the walk; never reads past the NUL. */
typedef struct sx_rattr {
    char name[SX_NAME_MAX + 1]; /* lower case; empty if unusable */
    int type;                   /* SX_T_*, -1 if unknown */
    sx_cur val;
} sx_rattr;

static const wchar_t *sx_rec_begin(const wchar_t *xml)
{
    const wchar_t *p = xml;
    sx_xattr a;
    int r;
    if (!p) return NULL;
    if ((uint32_t)*p == 0xFEFF) p++;
    if (sx_lit(p, "<?xml")) {
        while (*p && !sx_lit(p, "?>")) p++;
        if (!*p) return NULL;
        p += 2;
    }
    sx_skip_ws(&p);
    if (!sx_open(&p, "attributes")) return NULL;
    while ((r = sx_attr_next(&p, &a, 0)) == 1) {}
    return r == 2 ? p : NULL;
}

static const wchar_t *sx_rec_next(const wchar_t *p, sx_rattr *ra)
{
    sx_xattr a;
    char w[8];
    int r;
    if (!p) return NULL;
    sx_skip_ws(&p);
    if (!sx_open(&p, "attribute")) return NULL;
    ra->name[0] = 0;
    ra->type = -1;
    while ((r = sx_attr_next(&p, &a, 0)) == 1) {
        if (sx_name_is(a.name, a.nlen, "name")) {
            if (!sx_attr_name(&a, ra->name)) ra->name[0] = 0;
        } else if (sx_name_is(a.name, a.nlen, "type")) {
            ra->type = sx_word(&a, w, sizeof w) ? sx_lookup(w, sx_type_names, 3) : -1;
        }
    }
    if (r == 3) {
        ra->val = sx_cur_make(sx_empty, '<', 1);
        return p;
    }
    if (r != 2) return NULL;
    ra->val = sx_cur_make(p, '<', 1);
    if (!(p = sx_skip_to(p, '<')) || !sx_close(&p, "attribute")) return NULL;
    return p;
}

/* A clause on an application attribute: any attribute of that name and type. */
static int sx_attr_clause(const pg_query *q, const sx_node *n, const pg_search_rec *r)
{
    sx_rattr ra;
    const wchar_t *p = sx_rec_begin(r->attributes);
    while ((p = sx_rec_next(p, &ra)) != NULL)
        if (ra.type == n->type && !strcmp(ra.name, n->name) && sx_value_match(q, n, ra.val)) return 1;
    return 0;
}

/* Evaluates node i.  res: precomputed clause results, or NULL to evaluate
 * each clause when it is reached. */
static int sx_eval(const pg_query *q, uint32_t i, const unsigned char *res, const pg_search_rec *r)
{
    const sx_node *n = &q->nodes[i];
    uint32_t ch;
    if (n->kind == SX_N_CLAUSE) {
        if (res) return res[n->slot];
        return n->field ? sx_field_match(q, n, r) : sx_attr_clause(q, n, r);
    }
    for (ch = i + 1;; ch = q->nodes[ch].next) {
        int v = sx_eval(q, ch, res, r);
        if (n->kind == SX_N_AND ? !v : v) return v;
        if (!q->nodes[ch].next) return v;
    }
}

static int query_match(const pg_query *q, const pg_search_rec *r)
{
    unsigned char res[SX_FAST_CLAUSES];
    uint32_t i;
    if (!q || !r || !q->nnodes) return 0;
    if (q->nclauses > SX_FAST_CLAUSES) return sx_eval(q, 0, NULL, r);
    memset(res, 0, q->nclauses);
    for (i = 0; i < q->nnodes; i++) {
        const sx_node *n = &q->nodes[i];
        if (n->kind == SX_N_CLAUSE && n->field) res[n->slot] = (unsigned char)sx_field_match(q, n, r);
    }
    if (q->need_xml) {
        sx_rattr ra;
        const wchar_t *p = sx_rec_begin(r->attributes);
        while ((p = sx_rec_next(p, &ra)) != NULL) {
            if (!ra.name[0] || ra.type < 0) continue;
            for (i = 0; i < q->nnodes; i++) {
                const sx_node *n = &q->nodes[i];
                if (n->kind != SX_N_CLAUSE || n->field || res[n->slot] || n->type != ra.type) continue;
                if (!strcmp(n->name, ra.name) && sx_value_match(q, n, ra.val)) res[n->slot] = 1;
            }
        }
    }
    return sx_eval(q, 0, res, r);
}

/* ========================================================================= */
/* 6. Database file                                                          */
/* One file per (graph ID, peer ID, database name): <dir>/<name>.<hash>.p2pg  */
/* where hash = first 8 bytes of MD5(graphId NUL peerId) in hex (mbedTLS).    */
/* The file is an append-only log: "P2PGLOG2", then entries                   */
/*   u32 length of (kind + body) | u8 kind | body | 16-byte MD5 of kind+body  */
/* kind 1 META (graph metadata: properties, synchronized flag, peer time     */
/* delta, departure time), 2 REC (a record's wire form; the last one of an   */
/* ID wins), 3 DROP (16-byte record ID removed locally).  Opening replays    */
/* it; an entry whose checksum fails is skipped, a length running past the   */
/* end is a torn tail; either way the file is rewritten clean and the loss   */
/* reported (PeerGraphGetDatabaseInfo).  When the log exceeds twice the live */
/* data plus 1 MiB it is rewritten (compaction).  Durability rule: every     */
/* change is written to the operating system before the API call returns    */
/* (survives the process being killed at any point); the file is fsynced by  */
/* the next PeerGraphService, which the poll deadline asks for within        */
/* PEER_DB_SYNC_MS (bounds what a power loss can take).                      */
/* ========================================================================= */

#define LOG_MAGIC "P2PGLOG2"
enum { LE_META = 1, LE_REC = 2, LE_DROP = 3 };

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

static int meta_body(const pg_graph *g, pg_buf *body)
{
    return put_str(body, g->graph_id) && put_str(body, g->peer_id) && put_str(body, g->creator_id) &&
           put_str(body, g->friendly) && put_str(body, g->comment) && put_u32b(body, g->flags) &&
           put_u32b(body, g->scope) && put_u32b(body, g->max_record) && put_u32b(body, g->presence_lifetime) &&
           put_u32b(body, g->presence_max) && put_u32b(body, (uint32_t)g->is_creator) &&
           put_u32b(body, (uint32_t)g->synchronized) && put_u64b(body, (uint64_t)g->ptd) &&
           put_u64b(body, g->left_pt);
}

/* Appends one entry to an open log stream, as one write. */
static int log_write(FILE *f, int kind, const uint8_t *body, size_t n, ULONGLONG *pBytes)
{
    uint8_t small[1024], *e = n + 21 <= sizeof small ? small : (uint8_t *)pg_alloc(n + 21);
    int ok;
    if (!e) return 0;
    put32(e, (uint32_t)(n + 1));
    e[4] = (uint8_t)kind;
    if (n) memcpy(e + 5, body, n);
    md5(e + 4, n + 1, e + 5 + n);
    ok = fwrite(e, 1, n + 21, f) == n + 21;
    if (e != small) pg_free(e);
    if (ok && pBytes) *pBytes += 21 + n;
    return ok;
}

/* The log stream: unbuffered (each entry is already one write) so an idle
 * graph holds no stdio buffer. */
static FILE *log_open_append(const char *path)
{
    FILE *f = fopen(path, "ab");
    if (f) setvbuf(f, NULL, _IONBF, 0);
    return f;
}

static int file_sync(FILE *f)
{
    if (fflush(f) != 0) return 0;
#ifdef _WIN32
    return _commit(_fileno(f)) == 0;
#else
    return fsync(fileno(f)) == 0;
#endif
}

/* Writes g's waiting log entries (logbuf) to the file; 1 if done.  A write
 * that fails now (disk full) cannot undo the records, which are in memory
 * already: the file is rewritten from memory by the next maintenance. */
static int log_flush_graph(pg_graph *g)
{
    size_t n = buf_used(&g->logbuf);
    int ok = 1;
    if (n) {
        ok = g->logf && fwrite(g->logbuf.p + g->logbuf.off, 1, n, g->logf) == n;
        if (!ok) {
            if (g->logf) clearerr(g->logf);
            g->log_failed = 1;
            graph_poke(g);
        }
    }
    buf_free(&g->logbuf);
    return ok;
}

/* Appends to g's log; E_* on failure (nothing committed in memory by the
 * caller then).  `durable` changes (this node's own records and settings)
 * are written at once (after any entries still waiting, in order) and
 * fsynced within PEER_DB_SYNC_MS.  Others (records received from
 * neighbors, which the graph can send again; expiry) wait in g->logbuf
 * until the public call ends (log_flush_pending from finish_call) or
 * LOG_BUF_MAX bytes wait: a synchronization's hundreds of records cost a
 * few write()s instead of one each, and every change is still with the OS
 * when the call returns.  They reach the disk with the next durable change
 * or at Close. */
#define LOG_BUF_MAX 65536u
static HRESULT log_append(pg_graph *g, int kind, const uint8_t *body, size_t n, int durable)
{
    if (!g->logf) return PEER_E_DATABASE_ACCESSDENIED;
    if (!durable) {
        size_t start = g->logbuf.len;
        uint8_t h[5], sum[16];
        put32(h, (uint32_t)(n + 1));
        h[4] = (uint8_t)kind;
        if (buf_append(&g->logbuf, h, 5) && (!n || buf_append(&g->logbuf, body, n)) &&
            SUCCEEDED(md5(g->logbuf.p + start + 4, n + 1, sum)) && buf_append(&g->logbuf, sum, 16)) {
            g->log_bytes += 21 + n;
            if (!g->log_listed) {
                g->log_listed = 1;
                g->lognext = L.logq;
                L.logq = g;
            }
            if (buf_used(&g->logbuf) >= LOG_BUF_MAX) log_flush_graph(g);
            goto written;
        }
        g->logbuf.len = start; /* out of memory: this one is written at once */
    }
    if (buf_used(&g->logbuf)) log_flush_graph(g);
    if (!log_write(g->logf, kind, body, n, &g->log_bytes) || fflush(g->logf) != 0) {
        clearerr(g->logf);
        return PEER_E_DATABASE_ACCESSDENIED;
    }
written:
    if (durable && !g->log_dirty) { g->log_dirty = 1; g->log_dirty_since = L.now; wake_at(L.now + PEER_DB_SYNC_MS); }
    if (g->log_bytes > 2 * (g->rec_bytes + 21 * (ULONGLONG)g->rec_count) + (1u << 20)) graph_poke(g); /* compaction due */
    return S_OK;
}

/* The end of a public call: the log entries waiting in any graph's logbuf
 * are written; except in a graph whose file does not yet say it is
 * synchronized (a joiner until its first synchronization is written, within
 * META_DELAY_MS of it): what it receives waits for that metadata (or the
 * next durable change, LOG_BUF_MAX bytes, or Close).  Losing it loses
 * nothing, since a graph that opens unsynchronized runs Sync All again; and
 * a join's burst of records costs one write instead of one per call. */
static void log_flush_pending(void)
{
    while (L.logq) {
        pg_graph *g = L.logq;
        L.logq = g->lognext;
        g->log_listed = 0; /* listed again by its next entry */
        if (!g->sync_on_disk) continue;
        log_flush_graph(g);
    }
}

/* Writes the graph's metadata.  A non-durable save (synchronized flag,
 * properties learned from the graph) is only noted: db_maintain writes it
 * within META_DELAY_MS, or the next durable save or Close does. */
#define META_DELAY_MS 1000u
static HRESULT db_save(pg_graph *g, int durable)
{
    pg_buf body = {0};
    HRESULT hr;
    if (!durable) {
        if (!g->meta_pending) { g->meta_pending = 1; g->meta_pending_since = L.now; wake_at(L.now + META_DELAY_MS); }
        return S_OK;
    }
    if (!meta_body(g, &body)) { buf_free(&body); return E_OUTOFMEMORY; }
    hr = log_append(g, LE_META, body.p, body.len, durable);
    if (SUCCEEDED(hr)) {
        g->meta_pending = 0;
        g->sync_on_disk = g->synchronized;
    }
    buf_free(&body);
    return hr;
}

/* magic, META, every record: a compact log image (also the export format). */
static int db_write_snapshot(const pg_graph *g, FILE *f, const uint8_t *meta, size_t nmeta, ULONGLONG *bytes)
{
    size_t i;
    pg_buf w = {0};
    int ok = fwrite(LOG_MAGIC, 1, 8, f) == 8 && log_write(f, LE_META, meta, nmeta, bytes);
    for (i = 0; ok && i < rec_span(g); i++) {
        const pg_rec *r = rec_at(g, i);
        rec_view v;
        if (!r || rec_is_volatile(rec_type(g, r))) continue;
        ok = rec_view_of(g, r, &v) && rec_wire_of(&v, &w) && log_write(f, LE_REC, w.p, w.len, bytes);
    }
    buf_free(&w);
    return ok;
}

/* Writes a fresh, compact log (magic, META, every live record) to the file
 * and reopens it for appending.  Used at Create, after a damaged Open, and
 * for compaction. */
static HRESULT db_rewrite(pg_graph *g)
{
    pg_buf body = {0};
    char *tmp;
    FILE *f;
    HRESULT hr = PEER_E_DATABASE_ACCESSDENIED;
    ULONGLONG bytes = 8;
    if (!meta_body(g, &body)) { buf_free(&body); return E_OUTOFMEMORY; }
    tmp = (char *)pg_alloc(strlen(g->db_path) + 5);
    if (!tmp) { buf_free(&body); return E_OUTOFMEMORY; }
    sprintf(tmp, "%s.tmp", g->db_path);
    f = fopen(tmp, "wb");
    if (!f) goto done;
    if (!db_write_snapshot(g, f, body.p, body.len, &bytes) || !file_sync(f)) goto done;
    fclose(f);
    f = NULL;
    if (g->logf) { fclose(g->logf); g->logf = NULL; }
    buf_free(&g->logbuf); /* the snapshot holds what was waiting */
#ifdef _WIN32
    if (!MoveFileExA(tmp, g->db_path, MOVEFILE_REPLACE_EXISTING | MOVEFILE_WRITE_THROUGH)) goto done;
#else
    if (rename(tmp, g->db_path) != 0) goto done;
#endif
    g->logf = log_open_append(g->db_path);
    if (!g->logf) goto done;
    g->log_bytes = bytes;
    g->log_dirty = 0;
    g->meta_pending = 0;
    g->sync_on_disk = g->synchronized;
    hr = S_OK;
done:
    if (f) { fclose(f); remove(tmp); }
    pg_free(tmp);
    buf_free(&body);
    return hr;
}

typedef struct rd { const uint8_t *p; size_t n, i; int bad; } rd;
static uint32_t rd32(rd *r) { if (r->i + 4 > r->n) { r->bad = 1; return 0; } r->i += 4; return get32(r->p + r->i - 4); }
static uint64_t rd64(rd *r) { if (r->i + 8 > r->n) { r->bad = 1; return 0; } r->i += 8; return get64(r->p + r->i - 8); }
static wchar_t *rdstr(rd *r)
{
    uint32_t n = rd32(r);
    int inv;
    wchar_t *w;
    if (r->bad || n == 0xFFFFFFFFu) return NULL;
    if (n > 4096 || r->i + n > r->n) { r->bad = 1; return NULL; }
    w = utf8_to_wcs(r->p + r->i, n, &inv);
    if (!w) { r->bad = 1; return NULL; }
    r->i += n;
    return w;
}

/* A parsed META body. */
typedef struct pg_meta {
    wchar_t *gid, *pid, *creator, *friendly, *comment;
    DWORD flags, scope, maxrec, life, pmax;
    int is_creator, synchronized;
    int64_t ptd;
    uint64_t left;
} pg_meta;

static void meta_free(pg_meta *m)
{
    pg_free(m->gid); pg_free(m->pid); pg_free(m->creator); pg_free(m->friendly); pg_free(m->comment);
    memset(m, 0, sizeof *m);
}

static int meta_parse(const uint8_t *p, size_t n, pg_meta *m)
{
    rd r;
    r.p = p; r.n = n; r.i = 0; r.bad = 0;
    memset(m, 0, sizeof *m);
    m->gid = rdstr(&r);
    m->pid = rdstr(&r);
    m->creator = rdstr(&r);
    m->friendly = rdstr(&r);
    m->comment = rdstr(&r);
    m->flags = rd32(&r); m->scope = rd32(&r); m->maxrec = rd32(&r); m->life = rd32(&r); m->pmax = rd32(&r);
    m->is_creator = rd32(&r) != 0;
    m->synchronized = rd32(&r) != 0;
    m->ptd = (int64_t)rd64(&r);
    if (m->ptd > 315360000000000000LL || m->ptd < -315360000000000000LL) m->ptd = 0; /* over 1000 years: forged */
    m->left = rd64(&r);
    /* the creator's own database names its creator (graph_publish_info needs it) */
    if (r.bad || !m->gid || !m->pid || (m->is_creator && !m->creator)) { meta_free(m); return 0; }
    return 1;
}

/* Applies a META body; 0 if malformed or for another graph/peer. */
static int meta_apply(pg_graph *g, const uint8_t *p, size_t n)
{
    pg_meta m;
    if (!meta_parse(p, n, &m)) return 0;
    if (!wcs_eq(m.gid, g->graph_id) || !wcs_eq(m.pid, g->peer_id)) { meta_free(&m); return 0; }
    pg_free(g->creator_id); g->creator_id = m.creator; m.creator = NULL;
    pg_free(g->friendly); g->friendly = m.friendly; m.friendly = NULL;
    pg_free(g->comment); g->comment = m.comment; m.comment = NULL;
    g->flags = m.flags; g->scope = m.scope; g->max_record = m.maxrec; g->presence_lifetime = m.life;
    g->presence_max = m.pmax; g->is_creator = m.is_creator; g->synchronized = m.synchronized; g->ptd = m.ptd;
    g->left_pt = m.left;
    meta_free(&m);
    return 1;
}

/* Reads a whole file into a new buffer. */
static HRESULT file_read_all(FILE *f, uint8_t **pbuf, size_t *pn)
{
    uint8_t *buf = NULL;
    size_t n = 0, cap = 0;
    long len;
    /* one allocation of the file's size when it can be known (plus one byte
     * so that the loop below sees the end without growing) */
    if (fseek(f, 0, SEEK_END) == 0 && (len = ftell(f)) >= 0 && fseek(f, 0, SEEK_SET) == 0) {
        cap = (size_t)len + 1;
        if (!(buf = (uint8_t *)pg_alloc(cap))) return E_OUTOFMEMORY;
    }
    for (;;) {
        size_t k;
        if (n == cap) {
            uint8_t *nb;
            cap = cap ? cap * 2 : 65536;
            nb = (uint8_t *)pg_realloc(buf, cap);
            if (!nb) { pg_free(buf); return E_OUTOFMEMORY; }
            buf = nb;
        }
        k = fread(buf + n, 1, cap - n, f);
        n += k;
        if (k == 0) break;
    }
    *pbuf = buf;
    *pn = n;
    return S_OK;
}

/* Walks the entries of a log image: calls fn for each entry whose checksum
 * holds; counts skipped entries and torn-tail bytes. */
typedef void (*log_entry_fn)(void *ctx, int kind, const uint8_t *body, size_t n);
static void log_walk(const uint8_t *buf, size_t n, log_entry_fn fn, void *ctx, ULONG *bad, ULONGLONG *torn)
{
    size_t i;
    for (i = 8; i < n;) {
        uint32_t len;
        uint8_t sum[16];
        if (n - i < 5) { *torn += n - i; break; }
        len = get32(buf + i);
        if (len == 0 || len > n - i - 4 || n - i - 4 - len < 16) { *torn += n - i; break; }
        md5(buf + i + 4, len, sum);
        if (memcmp(sum, buf + i + 4 + len, 16) != 0) (*bad)++;
        else fn(ctx, buf[i + 4], buf + i + 5, len - 1);
        i += 4 + (size_t)len + 16;
    }
}

static int rec_validate(const pg_graph *g, const rec_view *v, uint64_t peerNow);

typedef struct load_ctx { pg_graph *g; int have_meta, oom; } load_ctx;

static void load_entry(void *pv, int kind, const uint8_t *body, size_t n)
{
    load_ctx *lc = (load_ctx *)pv;
    pg_graph *g = lc->g;
    if (kind == LE_META) {
        if (meta_apply(g, body, n)) lc->have_meta = 1;
        else g->db_bad_entries++;
    } else if (kind == LE_REC) {
        rec_view v;
        pg_rec *r;
        if (!rec_parse(body, n, &v)) g->db_bad_entries++;
        else if (!rec_gid_ours(g, &v) || v.proto != 0x0100) {
            /* never valid here (3.1.7.27): dropped as the prune would, with any older version */
            if ((r = rec_find(g, v.id)) != NULL) { rec_unlink(g, r); rs_free(r); }
        } else if ((r = rec_new(g, &v)) == NULL || !rec_insert(g, r)) {
            rs_free(r);
            lc->oom = 1;
        }
    } else if (kind == LE_DROP && n == 16) {
        pg_rec *r = rec_find(g, body);
        if (r) { rec_unlink(g, r); rs_free(r); }
    } else
        g->db_bad_entries++;
}

static HRESULT sec_validate(pg_graph *g, const rec_view *v, PEER_RECORD_CHANGE_TYPE ct);
static void sec_defer(pg_graph *g, const rec_view *v);

/* Keeps what is still valid: not expired, and (3.1.4.2) no presence,
 * signature or contact records from an earlier run; with a validator, what
 * it accepts (a deferred record moves to the deferred list). */
static void rec_prune(pg_graph *g)
{
    uint64_t now = peer_time(g);
    size_t i;
    for (i = 0; i < rec_span(g); i++) {
        pg_rec *r = rec_at(g, i);
        rec_view v;
        HRESULT hr = S_OK;
        if (!r) continue;
        rec_view_of(g, r, &v);
        if (rec_validate_ex(g, &v, now, 0) && !(guid_is_internal(v.type) && v.type[2] != 1)) {
            hr = sec_validate(g, &v, (v.flags & RF_DELETED) ? PEER_RECORD_DELETED : PEER_RECORD_ADDED);
            if (hr == S_OK) continue;
            if (hr == PEER_E_DEFERRED_VALIDATION) sec_defer(g, &v);
            else g->rejected_records++;
        }
        rec_slot_clear(g, rec_pslot(g, i), i < g->rec_cap);
        pres_unmap(g, r);
        rs_free(r);
    }
}

/* Loads g from its file.  S_OK, S_FALSE (no file), PEER_E_INVALID_DATABASE
 * (not a database of this graph and peer), E_OUTOFMEMORY. */
static HRESULT db_load(pg_graph *g)
{
    FILE *f = fopen(g->db_path, "rb");
    uint8_t *buf = NULL;
    size_t n = 0;
    HRESULT hr;
    load_ctx lc;
    if (!f) return S_FALSE;
    hr = file_read_all(f, &buf, &n);
    fclose(f);
    if (FAILED(hr)) return hr;
    lc.g = g;
    lc.have_meta = lc.oom = 0;
    hr = PEER_E_INVALID_DATABASE;
    if (g->rec_cap * 3 / 4 < n / 256) rec_table_grow(g, n / 256); /* about one record per 256+ bytes */
    if (n >= 8 && memcmp(buf, LOG_MAGIC, 8) == 0) {
        log_walk(buf, n, load_entry, &lc, &g->db_bad_entries, &g->db_torn_bytes);
        if (lc.oom) hr = E_OUTOFMEMORY;
        else if (lc.have_meta) {
            rec_prune(g);
            g->log_bytes = n;
            g->sync_on_disk = g->synchronized;
            hr = S_OK;
        }
    }
    pg_free(buf);
    if (hr == S_OK) {
        if (g->db_torn_bytes || g->db_bad_entries) hr = db_rewrite(g);
        else if (!(g->logf = log_open_append(g->db_path))) hr = PEER_E_DATABASE_ACCESSDENIED;
    }
    if (FAILED(hr)) rec_table_free(g);
    return hr;
}

/* fsync and compaction, from PeerGraphService. */
static void db_maintain(pg_graph *g)
{
    if (g->meta_pending && L.now >= g->meta_pending_since + META_DELAY_MS) {
        pg_buf body = {0};
        if (meta_body(g, &body) && SUCCEEDED(log_append(g, LE_META, body.p, body.len, 0))) {
            g->meta_pending = 0;
            g->sync_on_disk = g->synchronized;
        }
        buf_free(&body);
    }
    if (g->logf && (g->log_failed || g->log_bytes > 2 * (g->rec_bytes + 21 * (ULONGLONG)g->rec_count) + (1u << 20))) {
        if (SUCCEEDED(db_rewrite(g))) g->log_failed = 0; /* on failure the old log stays valid */
        return;
    }
    if (g->log_dirty && g->logf && L.now >= g->log_dirty_since + PEER_DB_SYNC_MS) {
        log_flush_graph(g);
        file_sync(g->logf);
        g->log_dirty = 0;
    }
}

/* ========================================================================= */
/* 7. Wire                                                                   */
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
    return (c->graph->max_record > PEER_MAX_SYNC_MESSAGE ? (size_t)c->graph->max_record : PEER_MAX_SYNC_MESSAGE) +
           PEER_MESSAGE_OVERHEAD;
}

/* ========================================================================= */
/* 8. Connections                                                            */
/* A connection owns its socket, a reassembly buffer and a send buffer of    */
/* framed bytes bounded by PEER_MAX_SEND_QUEUE.  Closing is always one of:   */
/* conn_abort (now, no goodbye) or conn_close_after_flush (send what is      */
/* queued, e.g. DISCONNECT or REFUSE, half-close, wait for EOF or            */
/* PEER_LINGER_MS, then close).  Application events about the close are      */
/* emitted by the caller's state logic via conn_report_close.                 */
/* ========================================================================= */

/* Moves c to graph g's list (NULL: to no graph).  Unlinking keeps c->gnext,
 * so a loop over a graph's list may unlink the current connection. */
static void conn_touch(pg_conn *c);

static void conn_set_graph(pg_conn *c, pg_graph *g)
{
    if (c->graph == g) return;
    conn_touch(c); /* reading may pause with the graph (rx_paused) */
    if (c->graph) {
        if (c->gprev) c->gprev->gnext = c->gnext;
        else c->graph->conns = c->gnext;
        if (c->gnext) c->gnext->gprev = c->gprev;
        c->gprev = NULL;
    }
    c->graph = g;
    if (g) {
        if (!c->app_limit) c->app_limit = g->data_limit;
        c->gprev = NULL;
        c->gnext = g->conns;
        if (g->conns) g->conns->gprev = c;
        g->conns = c;
    }
}

/* An accepted connection stops counting against its listener's limit. */
static void conn_unpend(pg_conn *c)
{
    if (c->pending_counted && c->listener) c->listener->pending--;
    c->pending_counted = 0;
}

static void conn_destroy_socket(pg_conn *c)
{
    if (c->s != PEER_INVALID_SOCKET) {
        socket_close(c->s, &c->announced);
        c->s = PEER_INVALID_SOCKET;
    }
}

static void conn_flush_acks(pg_conn *c);
static void conn_flush_departed(pg_conn *c);
static void conn_flush_renews(pg_conn *c);

/* Off L.ackq (its entries were sent, or are dropped: an ACK is advisory). */
static void ackq_unlink(pg_conn *c)
{
    if (c->ack_listed != 1) {
        c->ack_listed = 0; /* (2: held for the keepalive, on no list) */
        return;
    }
    if (c->akprev) c->akprev->aknext = c->aknext;
    else L.ackq = c->aknext;
    if (c->aknext) c->aknext->akprev = c->akprev;
    else L.ackq_tail = c->akprev;
    c->aknext = c->akprev = NULL;
    c->ack_listed = 0;
}

static void conn_kill(pg_conn *c)
{
    if (c->dead) return;
    conn_unpend(c);
    conn_destroy_socket(c);
    theap_remove(c);
    ackq_unlink(c);
    c->dead = 1;
    c->deadnext = L.dead;
    L.dead = c;
    L.sweep_needed = 1;
}

static void app_drop(pg_conn *c);
static void blk_free(void *p, size_t cap);
static void tls_free(pg_conn *c);
static long conn_write(pg_conn *c, const uint8_t *p, size_t n);
static int tls_flush(pg_conn *c);
static int tls_close_ready(pg_conn *c);

static void conn_free(pg_conn *c)
{
    tls_free(c);
    app_drop(c);
    blk_free(c->in_ev, c->in_cap);
    buf_free(&c->tail);
    buf_free(&c->rx);
    buf_free(&c->tx);
    buf_free(&c->acks);
    buf_free(&c->deps);
    buf_free(&c->renews);
    buf_free(&c->solq);
    pg_free(c->out_ids);
    pg_free(c->hash_send);
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
    for (pp = &L.itouch; *pp;) { /* the dead leave the touched and attention lists first */
        if ((*pp)->dead) { (*pp)->itouched = 0; *pp = (*pp)->inext; }
        else pp = &(*pp)->inext;
    }
    for (pp = &L.attn; *pp;) {
        if ((*pp)->dead) { (*pp)->attn = 0; *pp = (*pp)->anext; }
        else pp = &(*pp)->anext;
    }
    while (L.dead) { /* only the dead: L.conns is doubly linked */
        pg_conn *c = L.dead;
        L.dead = c->deadnext;
        if (c->prev) c->prev->next = c->next;
        else L.conns = c->next;
        if (c->next) c->next->prev = c->prev;
        L.n_conns--;
        conn_set_graph(c, NULL);
        conn_free(c);
    }
    L.sweep_needed = 0;
}

static ULONG graph_conn_count(const pg_graph *g, int connectedNeighborsOnly)
{
    const pg_conn *c;
    ULONG n = 0;
    for (c = g->conns; c; c = c->gnext) {
        if (c->dead) continue;
        if (connectedNeighborsOnly && (c->state != CS_CONNECTED || c->direct)) continue;
        n++;
    }
    return n;
}

static void graph_poke_maintenance(pg_graph *g);
static void graph_schedule_maintenance(pg_graph *g);
static void graph_default_timers(PEER_MAINTENANCE_PROFILE profile, PEER_GRAPH_TIMERS *t);
static void signature_calc(pg_graph *g);
static void signature_leave(pg_graph *g);
#define DEPARTED_ANY 0xFFFFFFFFu /* DEPARTED without a presence version: the current one */
static void graph_node_departed(pg_graph *g, ULONGLONG node, uint32_t ver, const pg_conn *from);
static void on_departed(pg_conn *c, const uint8_t *m, size_t size);
static void on_renew(pg_conn *c, const uint8_t *m, size_t size);
static void on_want(pg_conn *c, const uint8_t *m, size_t size);
static void presence_maintain(pg_graph *g, int timer);
static void signature_changed(pg_graph *g);
static void signature_contested(pg_graph *g, const rec_view *in);
static void departed_replay(pg_conn *c);
static void graph_poke_contacts(pg_graph *g);
static void srt_release(pg_graph *g, const pg_conn *gone);

/* Tells the application how a connection of its graph ended, once. */
static void conn_report_close(pg_conn *c, HRESULT hr, ULONGLONG next)
{
    pg_graph *g = c->graph;
    if (!g) return;
    if (!c->direct && c->state == CS_CONNECTED)
        graph_poke_maintenance(g); /* a neighbor lost: refill at once */
    else if (!c->direct && c->outbound && g->profile == PEER_MAINTENANCE_FAST && hr == PEER_E_TCP_CONNECTION_REFUSED &&
             graph_conn_count(g, 1) < PEER_MIN_NEIGHBORS)
        graph_poke_maintenance(g); /* fast: nothing listens there (a dead node, marked below): the next at once */
    else if (!c->direct && c->outbound && !graph_conn_count(g, 1))
        graph_schedule_maintenance(g); /* an attempt failed while we have none: the next after ulRetryMs */
    else if (!c->direct && c->outbound && graph_conn_count(g, 1) < PEER_MIN_NEIGHBORS && g->maint_retry == PEER_NO_DEADLINE) {
        g->maint_retry = L.now + g->timers.ulRetryMs; /* below the minimum: another candidate soon */
        wake_at(g->maint_retry);
    }
    if (c->state == CS_CONNECTED) emit_conn(g, c, PEER_DISCONNECTED, hr, 0);
    else if (c->outbound) emit_conn(g, c, PEER_CONNECTION_FAILED, hr, next);
    if (c->state == CS_CONNECTED && !c->direct && g->profile == PEER_MAINTENANCE_FAST &&
        (hr == PEER_E_TIMEOUT || hr == PEER_E_CONNECTION_FAILED))
        graph_node_departed(g, c->remote_node, DEPARTED_ANY, c); /* died, not left: tell the graph */
    else if (c->state != CS_CONNECTED && c->cand_node && g->profile == PEER_MAINTENANCE_FAST &&
             hr == PEER_E_TCP_CONNECTION_REFUSED)
        graph_node_departed(g, c->cand_node, DEPARTED_ANY, c); /* nothing listens where its presence says */
    srt_release(g, c);
    conn_set_graph(c, NULL); /* no further events about it */
    graph_update_status(g);
}

static void conn_abort(pg_conn *c, HRESULT hr)
{
    if (c->dead) return;
    c->close_reason = hr;
    conn_report_close(c, hr, 0);
    conn_kill(c);
}

static void app_sent(pg_conn *c);

static int conn_has_output(const pg_conn *c)
{
    return buf_used(&c->tx) || c->appq || buf_used(&c->tail) || (c->tls && (buf_used(&c->tls->out) || c->tls->wpend));
}

static size_t sync_watermark(const pg_conn *c);

/* A sync answer in progress with room in tx needs another pump now. */
static void conn_check_pump(const pg_conn *c)
{
    if (!c->dead && c->out_end && buf_used(&c->tx) < sync_watermark(c)) conn_attend((pg_conn *)c);
}

/* Its poll interest may have changed: announce_interest looks at it (only the
 * connections touched since the last call, not every connection). */
static void conn_touch(pg_conn *c)
{
    if (c->itouched || c->dead) return; /* a dead one's socket is closed (and announced) already */
    c->itouched = 1;
    c->inext = L.itouch;
    L.itouch = c;
}

static void conn_attend(pg_conn *c)
{
    if (c->attn || c->dead) return;
    c->attn = 1;
    c->anext = L.attn;
    L.attn = c;
}

static void conn_mark_dirty(pg_conn *c)
{
    conn_touch(c);
    if (c->dirty) return;
    c->dirty = 1;
    c->dnext = L.dirty;
    L.dirty = c;
}

/* Writes what the socket takes.  Graph messages (tx) go first, but only
 * between application units: a unit (a fragment, or a whole unfragmented
 * message) is never cut.  While a sync answer is being pumped, one
 * application unit per call, so the two share the link. */
static void conn_try_send(pg_conn *c)
{
    int units = 0;
    conn_touch(c);
    if (c->ack_listed && buf_used(&c->tx)) conn_flush_acks(c); /* held ACKs ride along (R10) */
    if (buf_used(&c->renews) && buf_used(&c->tx)) conn_flush_renews(c); /* so do held renewals (P19) */
    if (c->tls && tls_flush(c) < 0) { conn_abort(c, PEER_E_CONNECTION_FAILED); return; }
    while (!c->dead) {
        const uint8_t *p;
        size_t n;
        long k;
        int app;
        if (c->app_unit_end) {
            app = 1;
            p = c->appq->data + c->app_off;
            n = c->app_unit_end - c->app_off;
        } else if (buf_used(&c->tx)) {
            app = 0;
            p = c->tx.p + c->tx.off;
            n = buf_used(&c->tx);
        } else if (c->appq && !(units && c->out_end)) {
            /* nothing of the graph waits: write up to APP_BURST (whole units) */
            const pg_appmsg *m = c->appq;
            size_t span = m->batch ? m->len : m->unit < APP_BURST ? ((APP_BURST + m->unit - 1) / m->unit) * m->unit : m->unit;
            size_t e = c->app_off + span;
            c->app_unit_end = e < m->len ? e : m->len;
            continue;
        } else if (!c->appq && buf_used(&c->tail)) {
            if (!buf_append(&c->tx, c->tail.p + c->tail.off, buf_used(&c->tail))) { conn_abort(c, E_OUTOFMEMORY); return; }
            buf_free(&c->tail);
            continue;
        } else
            break;
        k = conn_write(c, p, n);
        if (k == PEER_NET_WOULDBLOCK || k == 0) return;
        if (k < 0) {
            conn_abort(c, PEER_E_CONNECTION_FAILED);
            return;
        }
        if (c->state == CS_CLOSING) conn_set_deadline(c, L.now + PEER_LINGER_MS); /* progress: keep lingering */
        c->last_tx = L.now;
        if (!app) { buf_consume(&c->tx, (size_t)k); continue; }
        c->app_off += (size_t)k;
        if (c->app_off < c->app_unit_end) continue;
        c->app_unit_end = 0;
        units++;
        if (c->app_off == c->appq->len) app_sent(c);
    }
    if (!c->dead && c->state == CS_CLOSING && !c->half_closed && !buf_used(&c->tx) && !c->appq &&
        !buf_used(&c->tail) && tls_close_ready(c)) {
        SHIM->pfnShutdownSend(SHIM->pvContext, c->s);
        c->half_closed = 1;
    }
}

/* Where `framed` more bytes for c go (NULL: c is closing or failed).  A full
 * queue fails the connection: the peer is not reading.  A `big` message (a
 * sync list, bounded by the message limit) only needs the queue to be under
 * its limit before it. */
static pg_buf *conn_out(pg_conn *c, size_t framed, int big)
{
    if (c->dead || c->state == CS_CLOSING || c->s == PEER_INVALID_SOCKET) return NULL;
    if (big ? buf_used(&c->tx) > PEER_MAX_SEND_QUEUE : buf_used(&c->tx) + framed > PEER_MAX_SEND_QUEUE) {
        conn_abort(c, PEER_E_CONNECTION_FAILED);
        return NULL;
    }
    return c->tx_to_tail ? &c->tail : &c->tx;
}

/* Frames and queues one whole message. */
static int conn_send_ex(pg_conn *c, const uint8_t *msg, size_t len, int big)
{
    size_t off = 0;
    pg_buf *dst = conn_out(c, len + 2 * (len / PEER_FRAME_SEND_SIZE + 1), big);
    if (!dst) return 0;
    while (off < len) {
        size_t k = len - off > PEER_FRAME_SEND_SIZE ? PEER_FRAME_SEND_SIZE : len - off;
        uint8_t fh[2];
        put16(fh, (unsigned)k);
        if (!buf_append(dst, fh, 2) || !buf_append(dst, msg + off, k)) {
            conn_abort(c, E_OUTOFMEMORY);
            return 0;
        }
        off += k;
    }
    conn_mark_dirty(c);
    return 1;
}
static int conn_send(pg_conn *c, const uint8_t *msg, size_t len) { return conn_send_ex(c, msg, len, 0); }

/* A fast-profile keepalive frame (PROTOCOL.md P17): two bytes, no message. */
static void conn_send_keepalive(pg_conn *c, uint8_t k0, uint8_t k1)
{
    uint8_t f[2];
    pg_buf *dst = conn_out(c, 2, 0);
    f[0] = k0;
    f[1] = k1;
    if (!dst) return;
    if (!buf_append(dst, f, 2)) { conn_abort(c, E_OUTOFMEMORY); return; }
    conn_mark_dirty(c);
}
static int conn_send_big(pg_conn *c, const uint8_t *msg, size_t len) { return conn_send_ex(c, msg, len, 1); }

/* Starts a graceful close: what is queued goes out, then FIN, then the
 * socket closes on EOF or after PEER_LINGER_MS.  The application is told
 * (if it is owed an event) with hr. */
static void conn_close_after_flush(pg_conn *c, HRESULT hr)
{
    if (c->dead || c->state == CS_CLOSING) return;
    if (buf_used(&c->deps)) conn_flush_departed(c);
    if (c->ack_listed) conn_flush_acks(c); /* held ACKs go before the close */
    if (buf_used(&c->renews)) conn_flush_renews(c); /* and held renewals */
    c->close_reason = hr;
    conn_report_close(c, hr, 0);
    c->state = CS_CLOSING;
    conn_set_deadline(c, L.now + PEER_LINGER_MS);
    conn_try_send(c);
}

static DWORD conn_interest(const pg_conn *c)
{
    if (c->dead || c->s == PEER_INVALID_SOCKET) return 0;
    if (c->state == CS_TCP_CONNECTING) return PEER_POLL_WRITE;
    if (c->state == CS_CONNECTED && c->graph && c->graph->rx_paused) /* the host is behind on events */
        return conn_has_output(c) ? PEER_POLL_WRITE : 0;
    return PEER_POLL_READ | (conn_has_output(c) ? PEER_POLL_WRITE : 0);
}

static pg_conn *conn_new(pg_graph *g, PEER_SOCKET s, int outbound)
{
    pg_conn *c = (pg_conn *)pg_calloc(1, sizeof *c);
    if (!c) return NULL;
    c->kind = OBJ_CONN;
    c->id = ++L.next_conn_id;
    c->app_epoch = L.epoch - 1;
    c->s = s;
    c->outbound = outbound;
    if (s != PEER_INVALID_SOCKET && !sock_put(s, c)) { pg_free(c); return NULL; }
    c->deadline = PEER_NO_DEADLINE; /* the caller sets its first timer */
    c->hidx = 0;
    conn_set_graph(c, g); /* touches it */
    conn_touch(c);
    c->next = L.conns;
    c->prev = NULL;
    if (L.conns) L.conns->prev = c;
    L.conns = c;
    L.n_conns++;
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
/* 8b. Application data (PeerGraphSendData, INCOMING_DATA)                   */
/* Out: each SendData builds one framed buffer (a PT2PT message, or between  */
/* p2pgraph nodes a chain of PT2PT fragments of one frame each) and queues   */
/* it on the connection, counted against the connection's data limit; the   */
/* writer (conn_try_send) interleaves graph messages between units.  In: a   */
/* PT2PT's payload is copied straight into the PEER_GRAPH_EVENT_DATA block   */
/* that the host will receive (one copy), fragments appending to it.  When a */
/* registration holds PEER_MAX_INCOMING_DATA bytes the graph stops reading   */
/* its connections until the host catches up (TCP pushes back).             */
/* ========================================================================= */

#define FRAG_MORE     0x0001u  /* PT2PT Reserved2 (EXT_FRAGMENT): more fragments follow */

/* Big data blocks (sent messages, INCOMING_DATA events the host frees with
 * PeerGraphFreeData) are kept in a small cache (BLK_CACHE_BYTES at most)
 * and reused, so a steady stream does not make the C library hand memory
 * back to the OS and fault it in again for every message. */
static void *blk_alloc(size_t n, size_t *cap)
{
    unsigned i, best = BLK_CACHE_N;
    for (i = 0; i < BLK_CACHE_N; i++)
        if (L.bcache[i].p && L.bcache[i].cap >= n && L.bcache[i].cap <= 2 * n + 65536 &&
            (best == BLK_CACHE_N || L.bcache[i].cap < L.bcache[best].cap))
            best = i;
    if (best < BLK_CACHE_N) {
        void *p = L.bcache[best].p;
        *cap = L.bcache[best].cap;
        L.bcache[best].p = NULL;
        L.bcache_bytes -= *cap;
        return p;
    }
    *cap = n;
    return pg_alloc(n);
}
static void blk_free(void *p, size_t cap)
{
    unsigned i;
    if (!p) return;
    if (cap >= BLK_MIN && L.bcache_bytes + cap <= BLK_CACHE_BYTES)
        for (i = 0; i < BLK_CACHE_N; i++)
            if (!L.bcache[i].p) {
                L.bcache[i].p = p;
                L.bcache[i].cap = cap;
                L.bcache_bytes += cap;
                return;
            }
    pg_free(p);
}
/* An event block the host will free with PeerGraphFreeData. */
static void blk_handed_out(void *p, size_t cap)
{
    if (cap < BLK_MIN) return;
    L.bout[L.bout_i].p = p;
    L.bout[L.bout_i].cap = cap;
    L.bout_i = (L.bout_i + 1) % 8;
}
static void blk_release_all(void)
{
    unsigned i;
    for (i = 0; i < BLK_CACHE_N; i++) { pg_free(L.bcache[i].p); L.bcache[i].p = NULL; }
    L.bcache_bytes = 0;
    memset(L.bout, 0, sizeof L.bout);
}
#define FRAG_FIRST_HDR 32u     /* first fragment: 28 + 4-byte total data size */
#define PT2PT_DIVERT_MIN 4096u /* PT2PTs from this size are received without rx */

static void app_drop(pg_conn *c)
{
    while (c->appq) {
        pg_appmsg *m = c->appq;
        c->appq = m->next;
        if (m->batch) pg_free(m); /* batches grow by realloc: not cache material */
        else blk_free(m, offsetof(pg_appmsg, data) + m->cap);
    }
    c->appq_tail = NULL;
    c->app_off = c->app_unit_end = 0;
    c->app_queued = 0;
}

/* The head message is fully written. */
static void app_sent(pg_conn *c)
{
    pg_appmsg *m = c->appq;
    c->appq = m->next;
    if (!c->appq) c->appq_tail = NULL;
    c->app_off = 0;
    c->app_queued -= m->counted;
    if (m->batch) pg_free(m);
    else blk_free(m, offsetof(pg_appmsg, data) + m->cap);
    if (c->want_ready && c->app_queued <= c->app_limit / 2 && c->graph && c->state == CS_CONNECTED) {
        PEER_GRAPH_EVENT_DATA e;
        c->want_ready = 0;
        memset(&e, 0, sizeof e);
        e.eventType = PEER_GRAPH_EVENT_SEND_READY;
        e.sendReadyData.dwSize = sizeof e.sendReadyData;
        e.sendReadyData.ullConnectionId = c->id;
        e.sendReadyData.cbQueued = c->app_queued;
        e.sendReadyData.cbLimit = c->app_limit;
        emit(c->graph, &e, NULL, NULL);
    }
}

static void pt2pt_header(uint8_t *m, size_t size, unsigned doff, unsigned flags, const GUID *t)
{
    msg_header(m, size, MT_PT2PT);
    put16(m + 8, doff);
    put16(m + 10, flags);
    guid_put(m + 12, t);
}

/* Bytes of the framed form of cb bytes of data on c; *unit: the pieces
 * that must go out whole (a fragment, or the whole message). */
static size_t app_framed_len(const pg_conn *c, size_t cb, size_t *unit)
{
    if (!(c->ext & EXT_FRAGMENT) || 28 + cb <= PEER_FRAME_SEND_SIZE) {
        size_t msz = 28 + cb;
        *unit = msz + 2 * ((msz + PEER_FRAME_SEND_SIZE - 1) / PEER_FRAME_SEND_SIZE);
        return *unit;
    } else {
        size_t first = PEER_FRAME_SEND_SIZE - FRAG_FIRST_HDR, rest = PEER_FRAME_SEND_SIZE - 28;
        size_t nfr = 1 + (cb - first + rest - 1) / rest;
        *unit = 2 + PEER_FRAME_SEND_SIZE;
        return 2 * nfr + 28 * nfr + 4 + cb;
    }
}

/* Writes the framed form (app_framed_len bytes) at p.  Fragments are full
 * frames (one PT2PT each) except the last. */
static void app_frame(const pg_conn *c, const GUID *t, const uint8_t *d, size_t cb, uint8_t *p)
{
    size_t off = 0;
    if (!(c->ext & EXT_FRAGMENT) || 28 + cb <= PEER_FRAME_SEND_SIZE) {
        size_t msz = 28 + cb, done = 0;
        uint8_t h[28];
        pt2pt_header(h, msz, 28, 0, t);
        while (done < msz) { /* frames over the concatenation header + data */
            size_t k = msz - done > PEER_FRAME_SEND_SIZE ? PEER_FRAME_SEND_SIZE : msz - done, i = 0;
            put16(p, (unsigned)k);
            p += 2;
            if (done < 28) {
                i = 28 - done < k ? 28 - done : k;
                memcpy(p, h + done, i);
            }
            if (k > i) memcpy(p + i, d + (done + i - 28), k - i);
            p += k;
            done += k;
        }
        return;
    }
    while (off < cb) {
        size_t hdr = off ? 28 : FRAG_FIRST_HDR, k = cb - off > PEER_FRAME_SEND_SIZE - hdr ? PEER_FRAME_SEND_SIZE - hdr : cb - off;
        int more = off + k < cb;
        put16(p, (unsigned)(hdr + k));
        pt2pt_header(p + 2, hdr + k, (unsigned)hdr, more ? FRAG_MORE : 0, t);
        if (!off) put32(p + 2 + 28, (uint32_t)cb);
        memcpy(p + 2 + hdr, d + off, k);
        p += 2 + hdr + k;
        off += k;
    }
}

/* Queues one message: small ones are appended to the last buffer when it is
 * a batch with room (one write carries many), big ones get their own.
 * Returns the bytes it counts against the limit, 0 when out of memory. */
static int app_enqueue(pg_conn *c, const GUID *t, const uint8_t *d, size_t cb, ULONG *added)
{
    size_t unit, len = app_framed_len(c, cb, &unit), cap;
    pg_appmsg *m = c->appq_tail;
    if (len <= APP_SMALL && m && m->batch && m->len + len <= APP_BATCH_MAX) {
        if (m->len + len > m->cap) { /* grow the tail batch (it may move) */
            size_t ncap = m->cap * 2;
            pg_appmsg *nm, **pp;
            while (ncap < m->len + len) ncap *= 2;
            if (ncap > APP_BATCH_MAX) ncap = APP_BATCH_MAX;
            for (pp = &c->appq; *pp != m; pp = &(*pp)->next) {}
            if (!(nm = (pg_appmsg *)pg_realloc(m, offsetof(pg_appmsg, data) + ncap))) return 0;
            *pp = nm;
            c->appq_tail = m = nm;
            m->cap = ncap;
        }
        app_frame(c, t, d, cb, m->data + m->len);
        m->len += len;
        *added = (ULONG)(cb + PEER_DATA_MSG_OVERHEAD);
        m->counted += *added;
        return 1;
    }
    if (len <= APP_SMALL) {
        cap = 4096;
        m = (pg_appmsg *)pg_alloc(offsetof(pg_appmsg, data) + cap);
        if (!m) return 0;
        m->batch = 1;
        m->cap = cap;
    } else {
        m = (pg_appmsg *)blk_alloc(offsetof(pg_appmsg, data) + len, &cap);
        if (!m) return 0;
        m->batch = 0;
        m->cap = cap - offsetof(pg_appmsg, data);
    }
    app_frame(c, t, d, cb, m->data);
    m->next = NULL;
    m->len = len;
    m->unit = unit;
    m->counted = (ULONG)(cb + PEER_DATA_MSG_OVERHEAD);
    if (c->appq_tail) c->appq_tail->next = m;
    else c->appq = m;
    c->appq_tail = m;
    *added = m->counted;
    return 1;
}

#define APP_DIRECT_FRAMES 128 /* a message of up to this many frames may skip the queue */

/* After a direct write that the socket took k of len bytes of (k < len,
 * k < 0 = failed): the rest waits in the queue, continuing where the
 * socket stopped, and a unit begun is never cut. */
static void app_direct_rest(pg_conn *c, const GUID *t, const uint8_t *d, size_t cb, size_t len, long k)
{
    ULONG added;
    if (k == PEER_NET_WOULDBLOCK) k = 0;
    if (k < 0) { conn_abort(c, PEER_E_CONNECTION_FAILED); return; }
    if (k > 0) c->last_tx = L.now;
    if ((size_t)k >= len) return;
    if (!app_enqueue(c, t, d, cb, &added)) { conn_abort(c, E_OUTOFMEMORY); return; }
    c->app_queued += added;
    c->app_off = (size_t)k;
    if (k % c->appq->unit) {
        size_t e = ((size_t)k / c->appq->unit + 1) * c->appq->unit;
        c->app_unit_end = e < len ? e : len;
    }
}

/* With nothing queued, a big message goes straight from the caller's buffer
 * in one gather write (frame and PT2PT headers interleaved); only what the
 * socket does not take is copied into the queue.  Returns 0 when it does not
 * apply (the caller queues as usual), 1 when done. */
static int app_send_direct(pg_conn *c, const GUID *t, const uint8_t *d, size_t cb)
{
    static uint8_t hb[APP_DIRECT_FRAMES][34];
    static PEER_NET_BUF iov[2 * APP_DIRECT_FRAMES];
    size_t unit, len = app_framed_len(c, cb, &unit), off = 0, nf = 0, nb = 0;
    if (c->appq || conn_has_output(c)) return 0;
    if (len <= APP_SMALL) { /* small: framed on the stack, no allocation when the socket takes it */
        static uint8_t sb[APP_SMALL];
        app_frame(c, t, d, cb, sb);
        app_direct_rest(c, t, d, cb, len, conn_write(c, sb, len));
        return 1;
    }
    if (!SHIM->pfnSendV || c->tls) return 0;
    if ((c->ext & EXT_FRAGMENT) && 28 + cb > PEER_FRAME_SEND_SIZE) {
        while (off < cb) {
            size_t hdr = off ? 28 : FRAG_FIRST_HDR, kk = cb - off > PEER_FRAME_SEND_SIZE - hdr ? PEER_FRAME_SEND_SIZE - hdr : cb - off;
            if (nf == APP_DIRECT_FRAMES) return 0;
            put16(hb[nf], (unsigned)(hdr + kk));
            pt2pt_header(hb[nf] + 2, hdr + kk, (unsigned)hdr, off + kk < cb ? FRAG_MORE : 0, t);
            if (!off) put32(hb[nf] + 2 + 28, (uint32_t)cb);
            iov[nb].pv = hb[nf];
            iov[nb++].cb = (ULONG)(2 + hdr);
            iov[nb].pv = d + off;
            iov[nb++].cb = (ULONG)kk;
            nf++;
            off += kk;
        }
    } else {
        size_t msz = 28 + cb, done = 0;
        while (done < msz) {
            size_t kk = msz - done > PEER_FRAME_SEND_SIZE ? PEER_FRAME_SEND_SIZE : msz - done;
            if (nf == APP_DIRECT_FRAMES) return 0;
            put16(hb[nf], (unsigned)kk);
            if (!done) {
                pt2pt_header(hb[nf] + 2, msz, 28, 0, t);
                iov[nb].pv = hb[nf];
                iov[nb++].cb = 30;
                iov[nb].pv = d;
                iov[nb++].cb = (ULONG)(kk - 28);
            } else {
                iov[nb].pv = hb[nf];
                iov[nb++].cb = 2;
                iov[nb].pv = d + done - 28;
                iov[nb++].cb = (ULONG)kk;
            }
            nf++;
            done += kk;
        }
    }
    app_direct_rest(c, t, d, cb, len, SHIM->pfnSendV(SHIM->pvContext, c->s, iov, (ULONG)nb));
    return 1;
}

/* Recomputes whether g's connections may be read (see the section comment). */
static void graph_update_rx_pause(pg_graph *g)
{
    const pg_reg *r;
    int paused = 0;
    for (r = g->regs; r && !paused; r = r->gnext)
        paused = r->data_bytes > PEER_MAX_INCOMING_DATA ||
                 (r->data_bytes && r->count >= PEER_MAX_EVENTS_QUEUED / 2);
    if (g->rx_paused != paused) {
        /* reading stops or resumes: every link's poll interest changes, and
         * TLS links may hold input the socket will not report again */
        pg_conn *c;
        for (c = g->conns; c; c = c->gnext) {
            conn_touch(c);
            if (!paused && c->tls && !c->dead) { c->poke = 1; conn_attend(c); }
        }
    }
    g->rx_paused = paused;
}

/* Hands the finished data block to the registrations that want it (the
 * copies first, then the block itself to the first one).  A registration
 * that cannot take it fails the connection: data is never lost silently. */
static void pt2pt_deliver(pg_conn *c)
{
    PPEER_GRAPH_EVENT_DATA ev = c->in_ev;
    pg_graph *g = c->graph;
    pg_reg *r, *first = NULL;
    size_t cb = c->in_total;
    int ok = 1;
    c->in_ev = NULL;
    c->in_active = 0;
    if (!ev) return;
    if (!g) { blk_free(ev, c->in_cap); return; }
    ev->incomingData.data.pbData = cb ? (PBYTE)(ev + 1) : NULL;
    for (r = g->regs; r; r = r->gnext) {
        PPEER_GRAPH_EVENT_DATA e;
        if (!reg_wants(r, PEER_GRAPH_EVENT_INCOMING_DATA, NULL)) continue;
        if (!first) { first = r; continue; }
        if (!(e = (PPEER_GRAPH_EVENT_DATA)pg_alloc(sizeof *e + cb))) { ok = 0; continue; }
        memcpy(e, ev, sizeof *e + cb);
        e->incomingData.data.pbData = cb ? (PBYTE)(e + 1) : NULL;
        if (reg_push(r, e)) r->data_bytes += cb;
        else ok = 0;
    }
    if (first && reg_push(first, ev)) {
        first->data_bytes += cb;
        blk_handed_out(ev, c->in_cap);
    } else if (first)
        ok = 0;
    else
        blk_free(ev, c->in_cap);
    graph_update_rx_pause(g);
    if (!ok) conn_abort(c, E_OUTOFMEMORY);
}

static int graph_wants(const pg_graph *g, PEER_GRAPH_EVENT_TYPE t)
{
    const pg_reg *r;
    for (r = g->regs; r; r = r->gnext)
        if (reg_wants(r, t, NULL)) return 1;
    return 0;
}

/* Starts a received PT2PT of `size` bytes whose first `have` bytes (at
 * least its Data Offset) are at m.  Returns the Data Offset, or 0 when the
 * message was bad and the connection is closed. */
static unsigned pt2pt_begin(pg_conn *c, const uint8_t *m, size_t size, size_t have)
{
    unsigned doff, flags;
    GUID t;
    size_t len;
    if (size < 28 || have < 28) goto bad;
    doff = get16(m + 8);
    flags = get16(m + 10);
    if (doff > size || doff < 28 || doff > have) goto bad;
    guid_get(&t, m + 12);
    len = size - doff;
    c->in_skip = c->in_last = 0;
    c->in_msg_left = len;
    if (!memcmp(&t, &GUID_PING, sizeof t)) { c->in_skip = 1; return doff; } /* Ping: dropped */
    if (c->in_active) { /* the next fragment of the data being reassembled */
        if (memcmp(&t, &c->in_type, sizeof t) || c->in_off + len > c->in_total) goto bad;
        if (!(flags & FRAG_MORE)) {
            if (c->in_off + len != c->in_total) goto bad;
            c->in_last = 1;
        }
        return doff;
    }
    if ((c->ext & EXT_FRAGMENT) && (flags & FRAG_MORE)) {
        if (doff < FRAG_FIRST_HDR) goto bad;
        c->in_total = get32(m + 28);
        if (c->in_total > PEER_MAX_DATA_SIZE || len > c->in_total) goto bad;
        c->in_active = 1;
    } else {
        if (len > PEER_MAX_DATA_SIZE) goto bad;
        c->in_total = len;
        c->in_last = 1;
    }
    c->in_type = t;
    c->in_off = 0;
    blk_free(c->in_ev, c->in_cap);
    c->in_ev = NULL;
    if (c->graph && graph_wants(c->graph, PEER_GRAPH_EVENT_INCOMING_DATA)) {
        PPEER_GRAPH_EVENT_DATA ev = (PPEER_GRAPH_EVENT_DATA)blk_alloc(sizeof *ev + c->in_total, &c->in_cap);
        if (!ev) { conn_abort(c, E_OUTOFMEMORY); return 0; }
        memset(ev, 0, sizeof *ev);
        ev->eventType = PEER_GRAPH_EVENT_INCOMING_DATA;
        ev->incomingData.dwSize = sizeof ev->incomingData;
        ev->incomingData.ullConnectionId = c->id;
        ev->incomingData.type = t;
        ev->incomingData.data.cbData = (ULONG)c->in_total;
        c->in_ev = ev;
    } /* else nobody listens: the bytes are counted and dropped */
    return doff;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
    return 0;
}

/* Payload bytes of the current PT2PT (never more than in_msg_left). */
static void pt2pt_data(pg_conn *c, const uint8_t *p, size_t n)
{
    if (!c->in_skip) {
        if (c->in_ev && n) memcpy((uint8_t *)(c->in_ev + 1) + c->in_off, p, n);
        c->in_off += n;
    }
    c->in_msg_left -= n;
    if (c->in_msg_left) return;
    c->in_divert = 0;
    if (c->in_skip) c->in_skip = 0;
    else if (c->in_last) pt2pt_deliver(c);
}

/* ========================================================================= */
/* 8c. Link security: TLS 1.2 on mbedTLS (the two graph security providers) */
/* A secured graph (package p2pgraph-tls-psk or p2pgraph-tls-cert) keeps     */
/* AUTH_INFO in the clear, as [MS-PPGRH] says, and runs TLS on the rest of   */
/* the byte stream: the same frames, inside TLS records (PROTOCOL.md 6).    */
/* The engine is sans-I/O: mbedTLS reads ciphertext from `in` (bytes a read */
/* left over) and the window of the current read, and writes into `out`;    */
/* only this connection layer touches the socket.  A write that returned    */
/* WANT_WRITE is repeated with the same length (mbedTLS keeps the record).  */
/* The configurations, keys and the random generator belong to the graph's  */
/* pg_sec, which every TLS connection holds a reference to, so a connection */
/* still closing after its graph closed keeps working.                      */
/* ========================================================================= */

#define TLS_RECORD   16384u          /* plaintext per mbedtls_ssl_write */
#define TLS_OUT_HIGH (64u * 1024u)   /* ciphertext queued before writes wait */
#define REFUSE_X_SECURITY 0x83       /* extended REFUSE: the graphs are secured differently */

static void conn_feed(pg_conn *c, const uint8_t *p, size_t n);
static void send_connect(pg_conn *c, int update);
static void conn_on_eof(pg_conn *c);
static ULONGLONG conn_handshake_ms(const pg_conn *c, ULONGLONG ms);

static void sec_release(pg_sec *s)
{
    if (!s || --s->refs > 0) return;
    mbedtls_ssl_config_free(&s->conf[0]);
    mbedtls_ssl_config_free(&s->conf[1]);
    mbedtls_x509_crt_free(&s->ca);
    mbedtls_x509_crt_free(&s->own);
    mbedtls_pk_free(&s->key);
    mbedtls_ctr_drbg_free(&s->drbg);
    pg_free(s->identity);
    memset(s->psk, 0, sizeof s->psk);
    pg_free(s);
}

/* Entropy for the graph's CTR_DRBG: the shim's random source. */
static int sec_entropy(void *ctx, unsigned char *out, size_t n)
{
    (void)ctx;
    return SUCCEEDED(SHIM->pfnRandom(SHIM->pvContext, out, (ULONG)n)) ? 0 : MBEDTLS_ERR_ENTROPY_SOURCE_FAILED;
}

/* Server side of the PSK handshake: the identity must be the peer ID the
 * initiator gave in AUTH_INFO. */
static int tls_psk_cb(void *p, mbedtls_ssl_context *ssl, const unsigned char *id, size_t n)
{
    pg_sec *s = (pg_sec *)p;
    pg_tls *t = (pg_tls *)(void *)ssl; /* ssl is pg_tls's first member */
    const wchar_t *want = t->conn ? t->conn->remote_peer : NULL;
    size_t k = want ? utf8_len(want) : 0;
    char *u;
    int ok;
    if (!want || k != n || !(u = wcs_to_utf8(want))) return -1;
    ok = memcmp(u, id, n) == 0;
    pg_free(u);
    return ok ? mbedtls_ssl_set_hs_psk(ssl, s->psk, sizeof s->psk) : -1;
}

/* The subject CN of crt as a new wchar_t string (NULL: none, or not UTF-8). */
static wchar_t *x509_cn(const mbedtls_x509_crt *crt)
{
    const mbedtls_x509_name *nm;
    int inv;
    for (nm = &crt->subject; nm; nm = nm->next)
        if (nm->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &nm->oid) == 0)
            return nm->val.len ? utf8_to_wcs(nm->val.p, nm->val.len, &inv) : NULL;
    return NULL;
}

/* Certificate check, per connection: the leaf must name the expected peer
 * ID (the responder: AUTH_INFO's source; the initiator: the peer ID asked
 * for, or, when none was, WELCOME's, checked in on_welcome). */
static int tls_verify_cb(void *p, mbedtls_x509_crt *crt, int depth, uint32_t *flags)
{
    pg_tls *t = (pg_tls *)p;
    const wchar_t *want;
    if (depth != 0 || !t->conn) return 0;
    want = t->conn->outbound ? t->conn->want_peer : t->conn->remote_peer;
    pg_free(t->cn);
    t->cn = x509_cn(crt);
    if (!t->cn || (want && !wcs_eq(t->cn, want))) *flags |= MBEDTLS_X509_BADCERT_CN_MISMATCH;
    return 0;
}

/* Reads the security interface given to Create/Open into *ps (NULL when
 * there is none).  The strings and pbSecurityInfo are not kept. */
static HRESULT sec_setup(const PEER_SECURITY_INTERFACE *psi, const wchar_t *graphId, const wchar_t *peerId,
                         pg_sec **ps)
{
    static const int psk_suites[] = {MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, 0};
    static const int cert_suites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                                      MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                      MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, 0};
    static const mbedtls_ecp_group_id curves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                                  MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};
    pg_sec *s;
    int kind, i;
    HRESULT hr = E_OUTOFMEMORY;
    *ps = NULL;
    if (!psi) return S_OK;
    if (psi->dwSize != sizeof *psi || psi->pwzSspFilename ||
        (psi->pfnValidateRecord == NULL) != (psi->pfnSecureRecord == NULL) ||
        (psi->cbSecurityInfo && !psi->pbSecurityInfo))
        return E_INVALIDARG;
    if (!psi->pwzPackageName) {
        if (psi->cbSecurityInfo || psi->pbSecurityInfo) return E_INVALIDARG;
        kind = SEC_NONE;
    } else if (wcs_eq(psi->pwzPackageName, PEER_SECURITY_PACKAGE_PSK)) {
        if (psi->cbSecurityInfo < 1 || psi->cbSecurityInfo > PEER_MAX_SECRET_SIZE) return E_INVALIDARG;
        kind = SEC_PSK;
    } else if (wcs_eq(psi->pwzPackageName, PEER_SECURITY_PACKAGE_CERT)) {
        const PEER_TLS_CERT_INFO *ci = (const PEER_TLS_CERT_INFO *)(const void *)psi->pbSecurityInfo;
        if (psi->cbSecurityInfo != sizeof *ci || ci->dwSize != sizeof *ci || !ci->pszCaPem || !ci->pszCertPem ||
            !ci->pszKeyPem)
            return E_INVALIDARG;
        kind = SEC_CERT;
    } else
        return E_INVALIDARG;
    if (!(s = (pg_sec *)pg_calloc(1, sizeof *s))) return E_OUTOFMEMORY;
    s->refs = 1;
    s->kind = kind;
    s->cb = *psi;
    s->cb.pwzSspFilename = s->cb.pwzPackageName = NULL;
    s->cb.pbSecurityInfo = NULL;
    s->cb.cbSecurityInfo = 0;
    mbedtls_ctr_drbg_init(&s->drbg);
    mbedtls_ssl_config_init(&s->conf[0]);
    mbedtls_ssl_config_init(&s->conf[1]);
    mbedtls_x509_crt_init(&s->ca);
    mbedtls_x509_crt_init(&s->own);
    mbedtls_pk_init(&s->key);
    if (kind == SEC_NONE) { *ps = s; return S_OK; }
    if (mbedtls_ctr_drbg_seed(&s->drbg, sec_entropy, NULL, (const unsigned char *)"p2pgraph tls", 12)) {
        hr = E_FAIL; /* the shim gave no randomness */
        goto fail;
    }
    if (!(s->identity = wcs_to_utf8(peerId))) goto fail;
    if (kind == SEC_PSK) {
        /* key = HMAC-SHA256(secret, "p2pgraph-psk-v1" NUL graph ID in UTF-8) */
        char *gid = wcs_to_utf8(graphId);
        mbedtls_md_context_t md;
        int bad;
        if (!gid) goto fail;
        mbedtls_md_init(&md);
        bad = mbedtls_md_setup(&md, mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), 1) ||
              mbedtls_md_hmac_starts(&md, psi->pbSecurityInfo, psi->cbSecurityInfo) ||
              mbedtls_md_hmac_update(&md, (const unsigned char *)"p2pgraph-psk-v1", 16) ||
              mbedtls_md_hmac_update(&md, (const unsigned char *)gid, strlen(gid)) ||
              mbedtls_md_hmac_finish(&md, s->psk);
        mbedtls_md_free(&md);
        pg_free(gid);
        if (bad) goto fail;
    } else {
        const PEER_TLS_CERT_INFO *ci = (const PEER_TLS_CERT_INFO *)(const void *)psi->pbSecurityInfo;
        const char *pw = ci->pszKeyPassword;
        wchar_t *cn;
        hr = PEER_E_INVALID_CREDENTIAL_INFO;
        if (mbedtls_x509_crt_parse(&s->ca, (const unsigned char *)ci->pszCaPem, strlen(ci->pszCaPem) + 1) != 0 ||
            mbedtls_x509_crt_parse(&s->own, (const unsigned char *)ci->pszCertPem, strlen(ci->pszCertPem) + 1) != 0)
            goto fail;
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
        if (mbedtls_pk_parse_key(&s->key, (const unsigned char *)ci->pszKeyPem, strlen(ci->pszKeyPem) + 1,
                                 (const unsigned char *)pw, pw ? strlen(pw) : 0, mbedtls_ctr_drbg_random, &s->drbg) != 0)
            goto fail;
        if (mbedtls_pk_check_pair(&s->own.pk, &s->key, mbedtls_ctr_drbg_random, &s->drbg) != 0) goto fail;
#else
        if (mbedtls_pk_parse_key(&s->key, (const unsigned char *)ci->pszKeyPem, strlen(ci->pszKeyPem) + 1,
                                 (const unsigned char *)pw, pw ? strlen(pw) : 0) != 0)
            goto fail;
        if (mbedtls_pk_check_pair(&s->own.pk, &s->key) != 0) goto fail;
#endif
        if (!mbedtls_pk_can_do(&s->key, MBEDTLS_PK_ECKEY)) goto fail; /* the suites are ECDSA */
        cn = x509_cn(&s->own);
        if (!cn || !wcs_eq(cn, peerId)) { pg_free(cn); goto fail; } /* our certificate must name us */
        pg_free(cn);
        hr = E_OUTOFMEMORY;
    }
    for (i = 0; i < 2; i++) {
        mbedtls_ssl_config *cf = &s->conf[i];
        if (mbedtls_ssl_config_defaults(cf, i ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                        MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT))
            goto fail;
        mbedtls_ssl_conf_rng(cf, mbedtls_ctr_drbg_random, &s->drbg);
        mbedtls_ssl_conf_min_version(cf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_max_version(cf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_curves(cf, curves);
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
        if (!i) mbedtls_ssl_conf_session_tickets(cf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
#endif
        if (kind == SEC_PSK) {
            mbedtls_ssl_conf_ciphersuites(cf, psk_suites);
            if (i) mbedtls_ssl_conf_psk_cb(cf, tls_psk_cb, s);
            else if (mbedtls_ssl_conf_psk(cf, s->psk, sizeof s->psk, (const unsigned char *)s->identity,
                                          strlen(s->identity)))
                goto fail;
        } else {
            mbedtls_ssl_conf_ciphersuites(cf, cert_suites);
            mbedtls_ssl_conf_authmode(cf, MBEDTLS_SSL_VERIFY_REQUIRED); /* both ways */
            mbedtls_ssl_conf_ca_chain(cf, &s->ca, NULL);
            if (mbedtls_ssl_conf_own_cert(cf, &s->own, &s->key)) goto fail;
        }
    }
    *ps = s;
    return S_OK;
fail:
    sec_release(s);
    return hr;
}

static void tls_free(pg_conn *c)
{
    pg_tls *t = c->tls;
    if (!t) return;
    mbedtls_ssl_free(&t->ssl);
    buf_free(&t->out);
    buf_free(&t->in);
    pg_free(t->cn);
    sec_release(t->sec);
    pg_free(t);
    c->tls = NULL;
}

/* Forced WANT_READ / WANT_WRITE before every other BIO operation
 * (P2PGRAPH_TLS_NBIO=1 at Startup; tests), as mbedTLS's own nbio=2. */
static int tls_bio_send(void *ctx, const unsigned char *p, size_t n)
{
    pg_tls *t = (pg_tls *)ctx;
    /* alerts (record type 21) are never delayed: mbedTLS does not retry a
     * fatal alert whose write would block, and the remote would not learn
     * the reason (ours never blocks below TLS_OUT_HIGH anyway) */
    if (L.tls_nbio && n && p[0] != 21 && (t->nbio_w ^= 1)) return MBEDTLS_ERR_SSL_WANT_WRITE;
    if (buf_used(&t->out) >= TLS_OUT_HIGH) return MBEDTLS_ERR_SSL_WANT_WRITE;
    if (!buf_append(&t->out, p, n)) return MBEDTLS_ERR_SSL_ALLOC_FAILED;
    return (int)n;
}

static int tls_bio_recv(void *ctx, unsigned char *p, size_t n)
{
    pg_tls *t = (pg_tls *)ctx;
    size_t k;
    if (L.tls_nbio && (t->nbio_r ^= 1)) return MBEDTLS_ERR_SSL_WANT_READ;
    if (buf_used(&t->in)) {
        k = buf_used(&t->in) < n ? buf_used(&t->in) : n;
        memcpy(p, t->in.p + t->in.off, k);
        buf_consume(&t->in, k);
        return (int)k;
    }
    if (!t->win_n) return MBEDTLS_ERR_SSL_WANT_READ;
    k = t->win_n < n ? t->win_n : n;
    memcpy(p, t->win, k);
    t->win += k;
    t->win_n -= k;
    return (int)k;
}

/* Writes queued ciphertext; -1 if the socket failed. */
static int tls_flush(pg_conn *c)
{
    pg_tls *t = c->tls;
    while (buf_used(&t->out)) {
        size_t n = buf_used(&t->out);
        long k = SHIM->pfnSend(SHIM->pvContext, c->s, t->out.p + t->out.off, (ULONG)(n > 0x40000000 ? 0x40000000 : n));
        if (k == PEER_NET_WOULDBLOCK || k == 0) return 0;
        if (k < 0) return -1;
        buf_consume(&t->out, (size_t)k);
        c->last_tx = L.now;
        if (c->state == CS_CLOSING) conn_set_deadline(c, L.now + PEER_LINGER_MS); /* progress: keep lingering */
    }
    return 0;
}

/* pfnSend for a TLS connection: encrypts up to one record of p[0..n).
 * Returns plaintext bytes taken, PEER_NET_WOULDBLOCK or PEER_NET_FAILED. */
static long tls_write(pg_conn *c, const uint8_t *p, size_t n)
{
    pg_tls *t = c->tls;
    int r = MBEDTLS_ERR_SSL_WANT_WRITE, tries;
    if (!t->done) return PEER_NET_WOULDBLOCK; /* nothing plain before the handshake ends */
    if (tls_flush(c) < 0) return PEER_NET_FAILED;
    if (!t->wpend && buf_used(&t->out) >= TLS_OUT_HIGH) return PEER_NET_WOULDBLOCK;
    if (t->wpend) n = t->wpend; /* the same write again: mbedTLS holds its record */
    else if (n > TLS_RECORD) n = TLS_RECORD;
    for (tries = 0; tries < 2; tries++) {
        r = mbedtls_ssl_write(&t->ssl, p, n);
        if (r != MBEDTLS_ERR_SSL_WANT_WRITE && r != MBEDTLS_ERR_SSL_WANT_READ) break;
        t->wpend = n;
        if (tls_flush(c) < 0) return PEER_NET_FAILED;
        if (buf_used(&t->out) >= TLS_OUT_HIGH) return PEER_NET_WOULDBLOCK;
    }
    if (r == MBEDTLS_ERR_SSL_WANT_WRITE || r == MBEDTLS_ERR_SSL_WANT_READ) return PEER_NET_WOULDBLOCK;
    if (r < 0) return PEER_NET_FAILED;
    t->wpend = 0;
    if (tls_flush(c) < 0) return PEER_NET_FAILED;
    return r;
}

/* Plaintext output of a connection, TLS or not. */
static long conn_write(pg_conn *c, const uint8_t *p, size_t n)
{
    if (c->tls) return tls_write(c, p, n);
    return SHIM->pfnSend(SHIM->pvContext, c->s, p, (ULONG)(n > 0x40000000 ? 0x40000000 : n));
}

/* Starts TLS on c: `clear` (framed AUTH_INFO, initiator) goes out first, in
 * the clear.  0 when out of memory. */
static int tls_start(pg_conn *c, pg_sec *s, int server)
{
    pg_tls *t = (pg_tls *)pg_calloc(1, sizeof *t);
    if (!t) return 0;
    mbedtls_ssl_init(&t->ssl);
    if (mbedtls_ssl_setup(&t->ssl, &s->conf[server ? 1 : 0]) != 0) {
        mbedtls_ssl_free(&t->ssl);
        pg_free(t);
        return 0;
    }
    t->conn = c;
    t->sec = s;
    s->refs++;
    mbedtls_ssl_set_bio(&t->ssl, t, tls_bio_send, tls_bio_recv, NULL);
    if (s->kind == SEC_CERT) mbedtls_ssl_set_verify(&t->ssl, tls_verify_cb, t);
    c->tls = t;
    c->state = CS_TLS;
    return 1;
}

/* Why a TLS failure happened, from what mbedTLS returned (r), what our
 * certificate check found, and the alert the remote sent. */
static HRESULT tls_reason(pg_tls *t, int r)
{
    if (t->done) return PEER_E_PROTOCOL_ERROR; /* tampered or malformed records on a running link */
    if (r == MBEDTLS_ERR_X509_CERT_VERIFY_FAILED) {
        uint32_t f = mbedtls_ssl_get_verify_result(&t->ssl);
        if (f & MBEDTLS_X509_BADCERT_NOT_TRUSTED) return PEER_E_CERTIFICATE_NOT_TRUSTED;
        if (f & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)) return PEER_E_INVALID_TIME_PERIOD;
        if (f & MBEDTLS_X509_BADCERT_CN_MISMATCH) return PEER_E_INVALID_PEER_NAME;
        return PEER_E_CONNECTION_NOT_AUTHENTICATED;
    }
    if (r == MBEDTLS_ERR_SSL_INVALID_MAC || r == MBEDTLS_ERR_SSL_BAD_HS_FINISHED || r == MBEDTLS_ERR_SSL_UNKNOWN_IDENTITY)
        return PEER_E_INVALID_CREDENTIAL; /* wrong secret, or a PSK identity other than AUTH_INFO's peer ID */
    if (r == MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE) {
#if MBEDTLS_VERSION_NUMBER >= 0x03000000
        const unsigned char *m = t->ssl.MBEDTLS_PRIVATE(in_msg);
#else
        const unsigned char *m = t->ssl.in_msg;
#endif
        switch (m ? m[1] : 0) {
        case MBEDTLS_SSL_ALERT_MSG_BAD_RECORD_MAC:
        case MBEDTLS_SSL_ALERT_MSG_DECRYPT_ERROR:
        case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_PSK_IDENTITY: return PEER_E_INVALID_CREDENTIAL;
        case MBEDTLS_SSL_ALERT_MSG_UNKNOWN_CA: return PEER_E_CERTIFICATE_NOT_TRUSTED;
        case MBEDTLS_SSL_ALERT_MSG_CERT_EXPIRED: return PEER_E_INVALID_TIME_PERIOD;
        case MBEDTLS_SSL_ALERT_MSG_BAD_CERT: return PEER_E_INVALID_PEER_NAME;
        default: break;
        }
    }
    return PEER_E_CONNECTION_NOT_AUTHENTICATED;
}

/* Tells the application about a failed link authentication (either side). */
static void sec_auth_failed(pg_conn *c)
{
    pg_graph *g = c->graph;
    if (!g || !g->sec || !g->sec->cb.pfnAuthFailed) return;
    L.in_callback++;
    g->sec->cb.pfnAuthFailed((HGRAPH)g->handle, g->sec->cb.pvContext);
    L.in_callback--;
}

static void tls_fail(pg_conn *c, int r)
{
    HRESULT hr = tls_reason(c->tls, r);
    /* the alert mbedTLS queued: the remote learns why */
    tls_flush(c);
    if (hr == PEER_E_INVALID_CREDENTIAL || hr == PEER_E_CERTIFICATE_NOT_TRUSTED || hr == PEER_E_INVALID_TIME_PERIOD ||
        hr == PEER_E_INVALID_PEER_NAME)
        sec_auth_failed(c);
    conn_abort(c, hr);
}

/* The handshake completed: the MS-PPGRH handshake continues inside TLS. */
static void tls_established(pg_conn *c)
{
    if (c->outbound) {
        send_connect(c, 0);
        if (c->dead) return;
        c->state = CS_CONNECT_SENT;
        conn_set_deadline(c, L.now + conn_handshake_ms(c, PEER_CONNECT_TIMER_MS));
        conn_mark_dirty(c);
    } else {
        conn_unpend(c); /* authenticated now */
        c->state = CS_CONNECT_WAIT;
        conn_set_deadline(c, L.now + PEER_CONNECT_TIMER_MS);
    }
}

/* 1 while ciphertext or plaintext waits inside the TLS layer. */
static int tls_has_input(const pg_conn *c)
{
    const pg_tls *t = c->tls;
    return t && (buf_used(&t->in) || t->win_n || mbedtls_ssl_get_bytes_avail(&t->ssl) ||
                 mbedtls_ssl_check_pending(&t->ssl));
}

/* Runs the TLS engine over the ciphertext it has: the handshake, then
 * records, whose plaintext goes to the frame parser. */
static void tls_process(pg_conn *c)
{
    static uint8_t plain[TLS_RECORD];
    pg_tls *t = c->tls;
    while (t && !c->dead && c->tls == t) {
        int r;
        if (!t->done) {
            r = mbedtls_ssl_handshake(&t->ssl);
            if (r == 0) {
                t->done = 1;
                tls_established(c);
                continue;
            }
        } else {
            if (c->state == CS_CONNECTED && c->graph && c->graph->rx_paused) return; /* the host is behind */
            r = mbedtls_ssl_read(&t->ssl, plain, sizeof plain);
            if (r > 0) {
                c->last_rx = L.now;
                conn_feed(c, plain, (size_t)r);
                continue;
            }
        }
        if (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE) {
            if (tls_flush(c) < 0) { conn_abort(c, PEER_E_CONNECTION_FAILED); return; }
            if (buf_used(&t->in) || t->win_n) continue; /* more input (or a forced WANT): go on */
            if (r == MBEDTLS_ERR_SSL_WANT_WRITE && L.tls_nbio && buf_used(&t->out) < TLS_OUT_HIGH) continue;
            return;
        }
        if (r == MBEDTLS_ERR_SSL_PEER_CLOSE_NOTIFY || r == 0) { conn_on_eof(c); return; }
        tls_fail(c, r);
        return;
    }
}

/* Ciphertext read from the socket (or left after AUTH_INFO). */
static void tls_input(pg_conn *c, const uint8_t *p, size_t n)
{
    pg_tls *t = c->tls;
    if (c->outbound && !t->first_seen && n) {
        t->first_seen = 1;
        if (p[0] == 0x00) {
            /* a frame of under 256 bytes in the clear: the responder refused
             * before TLS (REFUSE after our AUTH_INFO) */
            tls_free(c);
            c->state = CS_CONNECT_SENT;
            conn_feed(c, p, n);
            return;
        }
    }
    t->win = p;
    t->win_n = n;
    tls_process(c);
    if (c->tls == t && t->win_n && !buf_append(&t->in, t->win, t->win_n)) conn_abort(c, E_OUTOFMEMORY);
    t->win = NULL;
    t->win_n = 0;
}

/* Resumes a TLS connection whose input was left waiting (the host caught
 * up with its events): the socket may have nothing new to report. */
static void tls_resume(pg_conn *c)
{
    if (c->tls && !c->dead && tls_has_input(c)) tls_process(c);
}

/* Closing: close_notify once everything plain has gone; 1 when the
 * ciphertext is out too (the socket may be half-closed). */
static int tls_close_ready(pg_conn *c)
{
    pg_tls *t = c->tls;
    int tries;
    if (!t) return 1;
    for (tries = 0; t->done && !t->notified && tries < 4; tries++) {
        int r = mbedtls_ssl_close_notify(&t->ssl); /* repeated after WANT_WRITE: it flushes the alert */
        if (r != MBEDTLS_ERR_SSL_WANT_WRITE) t->notified = 1;
        else if (buf_used(&t->out) >= TLS_OUT_HIGH) break;
    }
    if (tls_flush(c) < 0) return 1;
    return buf_used(&t->out) == 0 && (t->notified || !t->done);
}

/* ========================================================================= */
/* 9. Handshake                                                              */
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
static void sync_hash_start(pg_conn *c);

/* Fast profile on a neighbor link: wake up for the next keepalive Ping, or
 * when the link would have been silent too long (only if both sides keep
 * alive: EXT_FAST). */
static int conn_keeps_alive(const pg_conn *c)
{
    return c->graph && c->graph->profile == PEER_MAINTENANCE_FAST && !c->direct && c->state == CS_CONNECTED;
}

static void conn_arm_keepalive(pg_conn *c)
{
    ULONGLONG d;
    if (!conn_keeps_alive(c)) {
        if (c->ack_listed == 2) conn_flush_acks(c); /* held for a keepalive that no longer comes */
        if (buf_used(&c->renews)) conn_flush_renews(c);
        if (c->state == CS_CONNECTED) conn_set_deadline(c, PEER_NO_DEADLINE);
        return;
    }
    d = c->last_tx + c->graph->timers.ulKeepaliveMs;
    if ((c->ext & EXT_FAST) && c->last_rx + c->graph->timers.ulDeadMs < d) d = c->last_rx + c->graph->timers.ulDeadMs;
    if (d <= L.now) d = L.now + 1;
    /* rounded up to a multiple of KEEPALIVE_SLACK_MS: the keepalive timers of
     * many links fall due together, so a process with thousands of links
     * runs its timer pass tens of times a second, not on every millisecond
     * (a Ping or a death noticed that much later changes nothing) */
    d = (d + KEEPALIVE_SLACK_MS - 1) / KEEPALIVE_SLACK_MS * KEEPALIVE_SLACK_MS;
    conn_set_deadline(c, d);
}

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
        for (c = g->conns; c; c = c->gnext) {
            SOCKADDR_IN6 a;
            if (c->dead || c->state != CS_CONNECTED || c->direct || c == except) continue;
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

/* Adds the n PEER_IN6_ADDRESS entries at p to g's Referral List (WELCOME,
 * REFUSE, DISCONNECT); 0 if one is not IPv6 (the message is malformed). */
static int referrals_from(pg_graph *g, const uint8_t *p, ULONG n)
{
    SOCKADDR_IN6 refs[255];
    ULONG i;
    if (n > 255 || !read_addrs(p, n, refs)) return 0;
    for (i = 0; i < n; i++) referral_add(g, &refs[i]);
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
        c->tx_to_tail = c->appq != NULL; /* data accepted by SendData goes first */
        send_simple(c, MT_DISCONNECT, (uint8_t)reason, refs, n);
        c->tx_to_tail = 0;
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
    c->ext = EXT_ALL & (g->profile == PEER_MAINTENANCE_FAST ? ~0u : ~(unsigned)EXT_FAST); /* narrowed by the WELCOME */
    if (!c->direct && !g->synchronized && !g->n_sync_types) c->ext |= EXT_PUSH;
    m[9] = (uint8_t)(c->ext | (g->sec && g->sec->kind != SEC_NONE ? EXT_TLS : 0));
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

static void send_keepalive(pg_conn *c);
static int conn_beats(const pg_conn *c);
static void send_ping(pg_conn *c);

/* A liveness probe on neighbor link c: a keepalive frame between fast
 * nodes (P17), else the MS-PPGRH Ping. */
static void conn_probe(pg_conn *c)
{
    if (conn_beats(c)) send_keepalive(c);
    else send_ping(c);
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

static void solicit_in(pg_conn *c, const uint8_t *m, size_t size, int type);

/* SOLICIT_NEW / SOLICIT_TIME with inclusion (1 type) or exclusion list,
 * sent, or with `push` (EXT_PUSH, the responder's side) taken as if received. */
static void send_solicit(pg_conn *c, int include, const GUID *types, ULONG n, int push)
{
    pg_graph *g = c->graph;
    int time = !push && c->sync == SYNC_TIME;
    size_t fixed = time ? 20 : 12, size = fixed + 16 * (size_t)n;
    uint8_t *m = (uint8_t *)pg_alloc(size);
    ULONG i;
    if (!m) { conn_abort(c, E_OUTOFMEMORY); return; }
    msg_header(m, size, time ? MT_SOLICIT_TIME : MT_SOLICIT_NEW);
    m[8] = (uint8_t)(include ? n : 0);
    m[9] = (uint8_t)(include ? 0 : n);
    put16(m + 10, (unsigned)fixed);
    if (time) put64(m + 12, g->left_pt);
    for (i = 0; i < n; i++) guid_put(m + fixed + 16 * i, &types[i]);
    if (push) solicit_in(c, m, size, m[5]);
    else conn_send(c, m, size);
    pg_free(m);
}

/* The Sync All / Time-based sequence (digest 5.8): step k < 2 + prioritized
 * asks for one type (Graph Info, Presence, then each prioritized type); step
 * 2 + prioritized asks for "everything else"; its SYNC_END ends the sync.  A
 * prioritized type's SYNC_END raises PEER_GRAPH_EVENT_SYNCHRONIZED.  With a
 * p2pgraph responder that agreed to EXT_PIPELINE every request goes out at
 * once (PROTOCOL.md section 4); otherwise one per SYNC_END, as the spec has it. */
static void sync_step_solicit(pg_conn *c, ULONG k, const GUID *prio, ULONG nprio, int push)
{
    ULONG fixedN = 2 + nprio;
    if (k < fixedN) {
        GUID one = k == 0 ? GUID_GRAPH_INFO_TYPE : k == 1 ? GUID_PRESENCE_TYPE : prio[k - 2];
        send_solicit(c, 1, &one, 1, push);
    } else {
        GUID *ex = (GUID *)pg_alloc(sizeof(GUID) * fixedN);
        ULONG i;
        if (!ex) { conn_abort(c, E_OUTOFMEMORY); return; }
        ex[0] = GUID_GRAPH_INFO_TYPE;
        ex[1] = GUID_PRESENCE_TYPE;
        for (i = 0; i < nprio; i++) ex[2 + i] = prio[i];
        send_solicit(c, 0, ex, fixedN, push);
        pg_free(ex);
    }
}

static void sync_send_step(pg_conn *c, ULONG k)
{
    sync_step_solicit(c, k, c->graph->sync_types, c->graph->n_sync_types, 0);
}

/* EXT_PUSH, the responder's side: right after the WELCOME, answer the three
 * requests of a Sync All without prioritized types (the only kind an
 * initiator asks to be pushed) as if they had come, so the answers leave in
 * the WELCOME's write and the joiner sends nothing (PROTOCOL.md section 4). */
static void sync_push(pg_conn *c)
{
    ULONG k;
    for (k = 0; k < 3 && !c->dead; k++) sync_step_solicit(c, k, NULL, 0, 1);
}

static void sync_start(pg_conn *c, int type)
{
    ULONG total = 3 + c->graph->n_sync_types, k;
    c->sync = type;
    c->sync_step = 0;
    c->sync_done = 0;
    for (k = 0; k < ((c->ext & EXT_PIPELINE) ? total : 1) && !c->dead; k++) sync_send_step(c, (ULONG)c->sync_step++);
}

/* A final SYNC_END for the oldest outstanding request. */
static void sync_next(pg_conn *c)
{
    pg_graph *g = c->graph;
    ULONG fixedN = 2 + g->n_sync_types, done = (ULONG)c->sync_done++;
    if (done >= 2 && done < fixedN) { /* a prioritized type is complete */
        PEER_GRAPH_EVENT_DATA e;
        memset(&e, 0, sizeof e);
        e.eventType = PEER_GRAPH_EVENT_SYNCHRONIZED;
        e.synchronizedData.dwSize = sizeof e.synchronizedData;
        e.synchronizedData.recordType = g->sync_types[done - 2];
        emit(g, &e, &e.synchronizedData.recordType, NULL);
    }
    if (done + 1 < fixedN + 1) {
        if ((ULONG)c->sync_step <= done + 1) sync_send_step(c, (ULONG)c->sync_step++); /* sequential mode */
    } else {
        int wasTime = c->sync == SYNC_TIME;
        c->sync = SYNC_NONE;
        if (g->flags & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION) graph_set_expiry(g, L.now);
        graph_set_synchronized(g);
        if (wasTime) sync_hash_start(c); /* then compare everything by hash */
    }
}

static void graph_set_synchronized(pg_graph *g)
{
    if (g->synchronized) return;
    g->synchronized = 1;
    db_save(g, 0); /* best effort: a lost write only means Open will sync again */
    graph_update_status(g);
    presence_maintain(g, 0); /* presence can be published now */
}

/* Peer time from WELCOME (digest 5.4 step 6). */
static void peer_time_update(pg_graph *g, pg_conn *c, ULONGLONG remotePt)
{
    /* remotePt is any 64-bit value off the wire: unsigned arithmetic only
     * until it is known to be within 20 minutes of our own peer time. */
    ULONGLONG tw = peer_time(g), u = utc_now();
    int64_t rtt = (int64_t)(tw - c->t_connect_pt);
    ULONGLONG ptw = remotePt + (ULONGLONG)(rtt > 0 ? rtt / 2 : 0);
    const ULONGLONG twentyMin = 12000000000ULL;
    int64_t ptdRemote;
    if ((ptw >= tw ? ptw - tw : tw - ptw) > twentyMin) return;
    ptdRemote = u >= ptw ? (int64_t)(u - ptw) : -(int64_t)(ptw - u);
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
        for (c = g->conns; c && !skip; c = c->gnext) {
            SOCKADDR_IN6 ra;
            if (!c->dead && conn_reach_addr(c, &ra) && addr_eq(&ra, &g->refs[i].addr)) skip = 1;
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
    for (o = g->conns; o; o = o->gnext) {
        ULONGLONG initC, initO;
        pg_conn *loser;
        if (o == c || o->dead || o->state != CS_CONNECTED || o->direct) continue;
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
    conn_set_deadline(c, PEER_NO_DEADLINE);
    c->last_rx = c->last_tx = c->connected_at = L.now;
    conn_arm_keepalive(c);
    c->neighbor_seq = ++g->neighbor_seq;
    if (!c->direct) {
        g->n_neighbors_ever++;
        graph_schedule_maintenance(g); /* first WELCOME: once the sync has brought the presence records */
    }
    emit_conn(g, c, PEER_CONNECTED, S_OK, 0);
    graph_update_status(g);
    if (!c->direct && (c->ext & EXT_FAST)) departed_replay(c);
}

/* --- responder --- */

static void on_auth_info(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned type = m[8], ext = m[9] & (EXT_ALL | EXT_PUSH), tls = m[9] & EXT_TLS;
    pg_sec *sec;
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
    if (dst) /* the common case: by hash */
        for (g = (pg_graph *)map_get(&L.gids, graph_idkey(gid, dst)); g && !match; g = g->idnext)
            if (g->listener == c->listener && wcs_eq(g->graph_id, gid) && wcs_eq(dst, g->peer_id)) match = g;
    for (g = match ? NULL : L.graphs; g; g = g->next) {
        if (g->listener != c->listener || !wcs_eq(g->graph_id, gid)) continue;
        graphSeen = 1;
        if (!dst) { match = g; break; }
    }
    if (!match) {
        if (ext & EXT_REASONS) {
            send_simple(c, MT_REFUSE, graphSeen ? REFUSE_X_WRONG_PEER : REFUSE_X_WRONG_GRAPH, NULL, 0);
            conn_close_after_flush(c, S_OK);
        } else
            conn_abort(c, S_OK);
        goto done;
    }
    sec = match->sec && match->sec->kind != SEC_NONE ? match->sec : NULL;
    if (!sec != !tls) { /* secured on one side only, or differently: nothing more is said */
        conn_set_graph(c, match);
        sec_auth_failed(c);
        conn_set_graph(c, NULL);
        if (ext & EXT_REASONS) {
            send_simple(c, MT_REFUSE, REFUSE_X_SECURITY, NULL, 0);
            conn_close_after_flush(c, S_OK);
        } else
            conn_abort(c, S_OK);
        goto done;
    }
    conn_set_graph(c, match);
    if (match->profile != PEER_MAINTENANCE_FAST) c->ext &= ~(unsigned)EXT_FAST;
    c->direct = type == 2;
    if (c->direct) c->ext &= ~(unsigned)EXT_PUSH;
    c->remote_peer = src;
    src = NULL;
    if (sec) { /* TLS next; still unauthenticated (counted against the listener) */
        if (!tls_start(c, sec, 1)) conn_abort(c, E_OUTOFMEMORY);
        goto done;
    }
    conn_unpend(c);
    c->state = CS_CONNECT_WAIT; /* authenticated (null security) */
    conn_set_deadline(c, L.now + PEER_CONNECT_TIMER_MS);
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
    if (node == g->node_id) { /* our own CONNECT came back */
        send_refuse(c, (c->ext & EXT_REASONS) ? REFUSE_X_SELF : REFUSE_DUPLICATE, S_OK);
        return;
    }
    /* 2. direct connections: accepted while the application is registered
     * for DIRECT_CONNECTION (and under the connection limit); no referrals,
     * no neighbor checks */
    if ((flags & 0x04) || c->direct) {
        if (c->state == CS_CONNECTED) { conn_abort(c, PEER_E_PROTOCOL_ERROR); return; }
        c->direct = 1;
        if (!graph_wants(g, PEER_GRAPH_EVENT_DIRECT_CONNECTION) || graph_conn_count(g, 0) > PEER_MAX_CONNECTIONS_PER_GRAPH) {
            send_refuse(c, REFUSE_DIRECT_DISALLOWED, S_OK);
            return;
        }
        send_welcome(c, 0);
        if (!c->dead) conn_become_connected(c);
        return;
    }
    /* 3. duplicate: this node is a neighbor over another connection */
    for (o = g->conns; o; o = o->gnext)
        if (o != c && !o->dead && o->state == CS_CONNECTED && !o->direct && o->remote_node == node) {
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
    if (g->flags & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION) graph_set_expiry(g, L.now);
    if (!c->dead && (c->ext & EXT_PUSH)) sync_push(c);
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
    if (n && !referrals_from(g, m + aoff, n)) goto bad;
    /* The responder has accepted; if we cannot keep the link, say goodbye. */
    if (c->remote_node == g->node_id || (c->want_peer && !wcs_eq(c->want_peer, peer))) {
        send_simple(c, MT_DISCONNECT, DISC_APP, NULL, 0);
        conn_close_after_flush(c, c->remote_node == g->node_id ? PEER_E_CONNECT_SELF : PEER_E_PEER_ID_MISMATCH);
        return;
    }
    if (c->tls && c->tls->sec->kind == SEC_CERT && !wcs_eq(c->tls->cn, peer)) {
        /* its certificate names another peer than the one it says it is */
        sec_auth_failed(c);
        send_simple(c, MT_DISCONNECT, DISC_APP, NULL, 0);
        conn_close_after_flush(c, PEER_E_INVALID_PEER_NAME);
        return;
    }
    conn_become_connected(c);
    if (c->direct) return; /* application data only (digest 5.4, INFERRED) */
    if (resolve_cross_connect(c)) return;
    peer_time_update(g, c, get64(m + 16));
    /* Ping every neighbor link (digest 5.4 step 4); a p2pgraph responder
     * (any capability bit in its WELCOME) not on this link, which the WELCOME
     * has just shown alive (PROTOCOL.md H8) */
    for (o = g->conns; o; o = o->gnext)
        if (!o->dead && o->state == CS_CONNECTED && !o->direct && !(o == c && c->ext)) conn_probe(o);
    if (c->dead) return;
    if (g->flags & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION) graph_set_expiry(g, L.now);
    if (!c->direct) {
        /* Sync All the first time; Time-based (then Hash) when coming back;
         * Hash only for a further neighbor while connected (PROTOCOL.md S5). */
        if (c->ext & EXT_PUSH) { /* the responder is answering a Sync All unasked */
            c->sync = SYNC_NEW;
            c->sync_step = 3;
            c->sync_done = 0;
        } else if (g->synchronized && graph_conn_count(g, 1) > 1) {
            sync_hash_start(c);
        } else {
            sync_start(c, g->synchronized ? SYNC_TIME : SYNC_NEW);
        }
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
    case REFUSE_X_SECURITY: hr = PEER_E_CONNECTION_NOT_AUTHENTICATED; break;
    default: goto bad;
    }
    if (code >= 0x80 && !(c->ext & EXT_REASONS)) goto bad;
    if (n && !referrals_from(g, m + aoff, n)) goto bad;
    if (code == REFUSE_BUSY && !c->direct) next = follow_referral(g, hops);
    c->close_reason = hr;
    conn_report_close(c, hr, next);
    conn_kill(c);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* --- both --- */

static void referral_forget(pg_graph *g, const SOCKADDR_IN6 *a);

static void on_disconnect(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned reason, n, aoff;
    if (size < 12) goto bad;
    reason = m[8];
    n = m[9];
    aoff = get16(m + 10);
    if (n * 20 + aoff > size || reason < 1 || reason > 3) goto bad;
    if (n && c->graph && (aoff < 12 || !referrals_from(c->graph, m + aoff, n))) goto bad;
    if (c->in_active) goto bad; /* DISCONNECT inside fragmented data */
    {
        pg_graph *g = c->graph;
        ULONGLONG node = c->remote_node;
        int leaving = reason == DISC_LEAVING && c->state == CS_CONNECTED && !c->direct && g &&
                      g->profile == PEER_MAINTENANCE_FAST;
        SOCKADDR_IN6 ra;
        if (reason == DISC_LEAVING && g && !c->direct && conn_reach_addr(c, &ra)) referral_forget(g, &ra);
        conn_abort(c, c->state == CS_CONNECTED ? S_OK : PEER_E_CONNECTION_REFUSED);
        /* fast profile: a leaving node's departure is announced too, in case its
         * own presence deletion does not get through (its neighbors may be
         * leaving with it) */
        if (leaving) graph_node_departed(g, node, DEPARTED_ANY, c);
    }
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

/* SOLICIT_HASH's own checks (3.1.5.2.7, digest defect 21 read as intended). */
static int solicit_hash_valid(const uint8_t *m, size_t size)
{
    unsigned inc = m[8], exc = m[9], toff = get16(m + 10), hoff;
    uint32_t hc;
    if (size < 20) return 0;
    hc = get32(m + 12);
    hoff = get16(m + 16);
    if ((inc + exc) * 16 + toff > hoff) return 0;
    return hoff <= size && (uint64_t)hc * 40 + hoff <= size; /* Hash Count·0x28 + offset (digest defect 21) */
}

/* A whole PT2PT in the reassembly buffer (small ones; big ones are diverted
 * into their event block as they arrive, see conn_feed). */
static void on_pt2pt(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned doff = pt2pt_begin(c, m, size, size);
    if (doff) pt2pt_data(c, m + doff, size - doff);
}

/* --- publishing, flooding, receiving --- */

static void emit_record(pg_graph *g, PEER_RECORD_CHANGE_TYPE ct, const uint8_t *id, const uint8_t *type)
{
    PEER_GRAPH_EVENT_DATA e;
    GUID t;
    if (guid_is_internal(type)) return; /* internal records are not application records */
    memset(&e, 0, sizeof e);
    e.eventType = PEER_GRAPH_EVENT_RECORD_CHANGED;
    e.recordChangeData.dwSize = sizeof e.recordChangeData;
    e.recordChangeData.changeType = ct;
    guid_get(&e.recordChangeData.recordId, id);
    guid_get(&t, type);
    e.recordChangeData.recordType = t;
    emit(g, &e, &t, NULL);
}

static void graph_arm_expiry(pg_graph *g, uint64_t expires);
static void graph_info_received(pg_graph *g, const rec_view *v);
static void presence_record_changed(pg_graph *g, PEER_RECORD_CHANGE_TYPE ct, const rec_view *v);

/* Sends a FLOOD of r on every CONNECTED neighbor link except `except`. */
/* A received record waiting to be relayed: its version, and the links that
 * have it already (it came on them during this read pass). */
#define FWD_FROM 4
#define FWD_SCAN 64 /* a duplicate looks for its record among the last this many */
typedef struct pg_fwd {
    uint8_t id[16];
    uint32_t version;
    unsigned nfrom;
    const pg_conn *from[FWD_FROM];
    ULONGLONG due;  /* 0: when this read pass ends; else a paced renewal (R13) */
    uint32_t base;  /* the version it renews (P19: only its times moved), or 0 */
} pg_fwd;

/* Paced renewals (PROTOCOL.md R13): a renewal of the Signature record (the
 * same signature, a new version) is relayed FWD_PACE_MS to FWD_PACE_MS +
 * FWD_PACE_JITTER_MS after it came, not at the end of the pass.  Nobody waits
 * for a renewal, and in a large graph its flood wave would otherwise compete
 * with the latency-bound ones (a join's presence) every few seconds; paced,
 * it is spread over a second, and the neighbors whose copy comes meanwhile
 * are left out of the relay. */
#define FWD_PACE_MS 50
#define FWD_PACE_JITTER_MS 100

static int fwd_has(const pg_fwd *f, const pg_conn *c)
{
    unsigned i;
    for (i = 0; f && i < f->nfrom; i++)
        if (f->from[i] == c) return 1;
    return 0;
}

static void conn_queue_renew(pg_conn *c, const pg_rec *r, uint32_t base);
static void conn_renew_cancel(pg_conn *c, const uint8_t *id, uint32_t ver);
static int conn_renews(const pg_conn *c);

/* FLOOD r to every neighbor but the ones in f (NULL: to all).  When r
 * renews version `base` (only its times moved: rec_renewal_base), a link
 * that agreed to the fast profile gets a held RENEW entry instead (P19). */
static void graph_flood_ex(pg_graph *g, const pg_rec *r, const pg_fwd *f, uint32_t base)
{
    pg_conn *c;
    uint8_t *m = NULL;
    size_t size = 12 + rec_len(g, r);
    for (c = g->conns; c; c = c->gnext) {
        if (c->dead || c->state != CS_CONNECTED || c->direct || fwd_has(f, c)) continue;
        if (base && conn_renews(c)) {
            conn_queue_renew(c, r, base);
            continue;
        }
        if (buf_used(&c->renews)) conn_renew_cancel(c, rec_id(r), rec_version(r)); /* superseded */
        if (!m) {
            if (!(m = (uint8_t *)pg_alloc(size))) return;
            msg_header(m, size, MT_FLOOD);
            put16(m + 8, 12);
            put16(m + 10, 0);
            rec_wire_copy(g, r, m + 12);
        }
        conn_send(c, m, size);
    }
    pg_free(m);
}

/* Publishing: FLOOD at once (the caller's order of messages holds). */
static void graph_flood(pg_graph *g, const pg_rec *r, uint32_t base) { graph_flood_ex(g, r, NULL, base); }

/* Relaying: a record that came in on `from` goes out when the read pass
 * ends (flush_dirty), so that the neighbors it comes in on meanwhile, in the
 * same pass, do not get it back (fwd_note).  In a flood wave a node hears a
 * record from every neighbor one hop nearer its source at about the same
 * time: each of those copies saved is a write and a read on both sides. */
static void fwd_defer(pg_graph *g, const pg_rec *r, const pg_conn *from, ULONGLONG due, uint32_t base)
{
    pg_fwd *f;
    if (g->fwd_n == g->fwd_cap) {
        size_t nc = g->fwd_cap ? 2 * g->fwd_cap : 8;
        pg_fwd *nf = (pg_fwd *)pg_realloc(g->fwd, nc * sizeof *nf);
        if (!nf) { pg_fwd one; one.nfrom = 1; one.from[0] = from; graph_flood_ex(g, r, &one, base); return; }
        g->fwd = nf;
        g->fwd_cap = nc;
    }
    f = &g->fwd[g->fwd_n++];
    memcpy(f->id, rec_id(r), 16);
    f->version = rec_version(r);
    f->base = base;
    f->nfrom = 0;
    if (from) f->from[f->nfrom++] = from;
    f->due = due;
    if (!g->fwd_listed) {
        g->fwd_listed = 1;
        g->fwd_next = due;
        g->fwdnext = L.fwdq;
        L.fwdq = g;
    } else if (due < g->fwd_next)
        g->fwd_next = due;
    if (due < L.fwd_due) L.fwd_due = due;
}

/* A copy of record `id` (or an older version) came on c: if we are about to
 * relay it, not to c. */
static void fwd_note(pg_graph *g, const uint8_t *id, const pg_conn *c)
{
    size_t i, stop = g->fwd_n > FWD_SCAN ? g->fwd_n - FWD_SCAN : 0;
    for (i = g->fwd_n; i-- > stop;) {
        pg_fwd *f = &g->fwd[i];
        if (memcmp(f->id, id, 16)) continue;
        if (f->nfrom < FWD_FROM && !fwd_has(f, c)) f->from[f->nfrom++] = c;
        return;
    }
}

/* The end of a read pass: relay what was received (the version still held;
 * a newer one that came meanwhile has its own entry). */
static void fwd_flush(void)
{
    pg_graph *keep = NULL;
    ULONGLONG next = PEER_NO_DEADLINE;
    if (!L.fwdq || L.fwd_due > L.now) return; /* only paced ones, none due */
    while (L.fwdq) {
        pg_graph *g = L.fwdq;
        size_t i, k = 0;
        ULONGLONG gnext = PEER_NO_DEADLINE;
        L.fwdq = g->fwdnext;
        if (g->fwd_next <= L.now) {
            for (i = 0; i < g->fwd_n; i++) {
                const pg_fwd *f = &g->fwd[i];
                const pg_rec *r;
                if (f->due > L.now) { /* a paced renewal not due yet */
                    if (f->due < gnext) gnext = f->due;
                    g->fwd[k++] = *f;
                    continue;
                }
                r = rec_find(g, f->id);
                if (r && rec_version(r) == f->version) graph_flood_ex(g, r, f, f->base);
            }
            g->fwd_n = k;
            g->fwd_next = gnext;
        }
        if (!g->fwd_n) { g->fwd_listed = 0; continue; }
        g->fwdnext = keep;
        keep = g;
        if (g->fwd_next < next) next = g->fwd_next;
    }
    L.fwdq = keep;
    L.fwd_due = next;
}

/* When a paced renewal of r (its record before this version: lv) is due, or
 * 0 (relay it when the pass ends).  Only a renewal that replaces a copy
 * with more than FWD_PACE_MIN_LIFE_S to live is paced: the compat profile's
 * owner renews 20 s before the expiry, and a node on the far side must not
 * see its copy expire because each hop waited for the host's next call. */
#define FWD_PACE_MIN_LIFE_S 60
static ULONGLONG fwd_pace(const pg_graph *g, const pg_rec *local, const rec_view *lv, const rec_view *v)
{
    ULONGLONG t;
    if (!local || memcmp(rec_id(local), SIGNATURE_ID, 16) || ((lv->flags | v->flags) & RF_DELETED) ||
        lv->n_data != v->n_data || (v->n_data && memcmp(lv->data, v->data, v->n_data)) ||
        rec_expires(local) < peer_time(g) + FWD_PACE_MIN_LIFE_S * FT_SECOND)
        return 0;
    t = L.now + FWD_PACE_MS + fast_random64() % FWD_PACE_JITTER_MS;
    if (L.n_conns >= TIMER_SLACK_CONNS) t = (t + TIMER_SLACK_MS - 1) / TIMER_SLACK_MS * TIMER_SLACK_MS; /* as wake_at */
    return t;
}

/* Stores a new version (wire bytes already validated), persists it, and
 * tells the application.  The caller floods.  Returns the stored record or
 * NULL (*phr says why). */
static pg_rec *graph_store(pg_graph *g, const uint8_t *wire, size_t len, int durable, HRESULT *phr)
{
    pg_rec *r, *old;
    rec_view v, ov;
    PEER_RECORD_CHANGE_TYPE ct;
    int hadLive = 0;
    HRESULT hr;
    rec_parse(wire, len, &v);
    old = rec_find(g, v.id);
    if (old) {
        rec_view_of(g, old, &ov);
        hadLive = !(ov.flags & RF_DELETED) && !rec_departed(old) && ov.expires > peer_time(g);
    }
    if ((!old && g->rec_count >= g->max_records) || g->rec_bytes - (old ? rec_len(g, old) : 0) + len > g->max_rec_bytes) {
        *phr = PEER_E_DISK_FULL; /* the graph's record limits */
        return NULL;
    }
    /* presence records are never loaded again (3.1.4.2): not worth a write */
    hr = rec_is_volatile(wire) ? S_OK : log_append(g, LE_REC, wire, len, durable);
    if (FAILED(hr)) { *phr = hr; return NULL; }
    /* a deleted presence carries no payload: the node it names is in the old one */
    if (hadLive && (v.flags & RF_DELETED) && rec_is_presence(wire)) presence_record_changed(g, PEER_RECORD_DELETED, &ov);
    r = rec_new(g, &v);
    if (!r || !rec_insert(g, r)) { rs_free(r); *phr = E_OUTOFMEMORY; return NULL; }
    rec_view_of(g, r, &v);
    /* our own autorefreshed records are renewed 20 s before they expire
     * (graph_expire): the timer must fire then, not at the expiry itself */
    if ((r->flags & RF_AUTOREFRESH) && !(r->flags & RF_DELETED) && rec_expires(r) > 20 * FT_SECOND &&
        u16_eq(v.creator, v.n_creator, g->peer_id))
        graph_arm_expiry(g, rec_expires(r) - 20 * FT_SECOND);
    else
        graph_arm_expiry(g, rec_expires(r));
    if (r->flags & RF_DELETED) ct = PEER_RECORD_DELETED;
    else ct = hadLive ? PEER_RECORD_UPDATED : PEER_RECORD_ADDED;
    if (!(r->flags & RF_DELETED) || hadLive) {
        emit_record(g, ct, rec_id(r), rec_type(g, r));
        if (rec_is_presence(rec_type(g, r)) && ct != PEER_RECORD_DELETED) presence_record_changed(g, ct, &v);
    }
    if (!memcmp(rec_id(r), SIGNATURE_ID, 16)) signature_changed(g); /* received, replaced or deleted */
    else if (rec_is_contact(rec_type(g, r))) graph_poke_contacts(g);

    if (!memcmp(rec_id(r), GRAPH_INFO_ID, 16) && !(r->flags & RF_DELETED)) graph_info_received(g, &v);
    *phr = S_OK;
    return r;
}

/* --- record security: the security interface's record callbacks ---
 * pfnSecureRecord runs on every version this node publishes (graph_publish);
 * pfnValidateRecord on every version about to be stored from the network
 * (record_in) or from a database file (rec_prune, import).  A deferred
 * record waits, as received, on g->deferred (bounded) until
 * PeerGraphValidateDeferredRecords hands it to record_in again. */

/* 1 if the graph holds a live (not deleted, not expired) version of id. */
static int rec_live_local(pg_graph *g, const uint8_t *id)
{
    pg_rec *r = rec_find(g, id);
    rec_view v;
    if (!r) return 0;
    rec_view_of(g, r, &v);
    return !(v.flags & RF_DELETED) && !rec_departed(r) && v.expires > peer_time(g);
}

static PEER_RECORD_CHANGE_TYPE rec_change_type(pg_graph *g, const rec_view *v)
{
    if (v->flags & RF_DELETED) return PEER_RECORD_DELETED;
    return rec_live_local(g, v->id) ? PEER_RECORD_UPDATED : PEER_RECORD_ADDED;
}

/* pfnValidateRecord on a parsed record: S_OK, PEER_E_DEFERRED_VALIDATION,
 * or anything else (= reject). */
static HRESULT sec_validate(pg_graph *g, const rec_view *v, PEER_RECORD_CHANGE_TYPE ct)
{
    PPEER_RECORD pr;
    HRESULT hr;
    if (!g->sec || !g->sec->cb.pfnValidateRecord) return S_OK;
    if (!(pr = (PPEER_RECORD)pg_alloc(rec_api_size(v)))) return E_OUTOFMEMORY;
    rec_to_api(v, pr);
    L.in_callback++;
    hr = g->sec->cb.pfnValidateRecord((HGRAPH)g->handle, g->sec->cb.pvContext, pr, ct);
    L.in_callback--;
    pg_free(pr);
    return hr;
}

/* Parks a record on the deferred list (a newer deferred version replaces an
 * older one); beyond the list's limits it is dropped like a rejected one. */
static void sec_defer(pg_graph *g, const rec_view *v)
{
    pg_rec *r;
    size_t len = rec_wire_size(v);
    ULONG i;
    for (i = 0; i < g->n_deferred; i++) {
        rec_view ov;
        if (memcmp(rec_id(g->deferred[i]), v->id, 16)) continue;
        rec_view_of(g, g->deferred[i], &ov);
        if (rec_compare(v, &ov) <= 0) return; /* as new a version waits already */
        r = g->deferred[i];
        memmove(g->deferred + i, g->deferred + i + 1, (g->n_deferred - i - 1) * sizeof *g->deferred);
        g->n_deferred--;
        g->deferred_bytes -= rec_len(g, r);
        rs_free(r);
        break;
    }
    if (g->n_deferred == g->deferred_cap && g->n_deferred < PEER_MAX_DEFERRED_RECORDS) {
        ULONG ncap = g->deferred_cap ? 2 * g->deferred_cap : 8;
        pg_rec **n = (pg_rec **)pg_realloc(g->deferred, (ncap < PEER_MAX_DEFERRED_RECORDS ? ncap : PEER_MAX_DEFERRED_RECORDS) * sizeof *n);
        if (n) {
            g->deferred = n;
            g->deferred_cap = ncap < PEER_MAX_DEFERRED_RECORDS ? ncap : PEER_MAX_DEFERRED_RECORDS;
        }
    }
    if (g->n_deferred >= g->deferred_cap || g->deferred_bytes + len > PEER_MAX_DEFERRED_BYTES || !(r = rec_new(g, v))) {
        g->rejected_records++; /* beyond the limits, or no memory */
        return;
    }
    g->deferred[g->n_deferred++] = r;
    g->deferred_bytes += len;
}

/* pfnSecureRecord on a version about to be published: *out is NULL (keep
 * wire as it is) or a new wire form carrying the returned security data. */
static HRESULT sec_secure(pg_graph *g, const uint8_t *wire, size_t len, uint8_t **out, size_t *outLen)
{
    const PEER_SECURITY_INTERFACE *cb = &g->sec->cb;
    PPEER_RECORD pr;
    PPEER_DATA sd = NULL;
    rec_view v;
    HRESULT hr;
    *out = NULL;
    rec_parse(wire, len, &v);
    if (!(pr = (PPEER_RECORD)pg_alloc(rec_api_size(&v)))) return E_OUTOFMEMORY;
    rec_to_api(&v, pr);
    L.in_callback++;
    hr = cb->pfnSecureRecord((HGRAPH)g->handle, cb->pvContext, pr, rec_change_type(g, &v), &sd);
    L.in_callback--;
    pg_free(pr);
    if (SUCCEEDED(hr) && sd && sd->cbData) {
        size_t head = (size_t)(v.sec - wire) - 4, tail = (size_t)(v.sec - wire) + v.n_sec;
        if (!sd->pbData) hr = E_INVALIDARG;
        else if (sd->cbData > PEER_MAX_SECURITY_DATA) hr = PEER_E_INVALID_RECORD_SIZE;
        else if (!(*out = (uint8_t *)pg_alloc(len - v.n_sec + sd->cbData))) hr = E_OUTOFMEMORY;
        else {
            memcpy(*out, wire, head);
            put32(*out + head, sd->cbData);
            memcpy(*out + head + 4, sd->pbData, sd->cbData);
            memcpy(*out + head + 4 + sd->cbData, wire + tail, len - tail);
            *outLen = len - v.n_sec + sd->cbData;
        }
    }
    if (sd && cb->pfnFreeSecurityData) {
        L.in_callback++;
        cb->pfnFreeSecurityData((HGRAPH)g->handle, cb->pvContext, sd);
        L.in_callback--;
    }
    return hr;
}

/* Local publication: secure, store, flood to every neighbor. */
static HRESULT graph_publish(pg_graph *g, const uint8_t *wire, size_t len)
{
    HRESULT hr;
    uint8_t *sw = NULL;
    size_t sl = 0;
    pg_rec *r;
    uint32_t base = 0;
    rec_view v, ov;
    if (g->sec && g->sec->cb.pfnSecureRecord) {
        hr = sec_secure(g, wire, len, &sw, &sl);
        if (FAILED(hr)) return hr;
        if (sw) wire = sw, len = sl;
    }
    if (rec_parse(wire, len, &v) && (r = rec_find(g, v.id)) != NULL && rec_view_of(g, r, &ov))
        base = rec_renewal_base(&ov, &v); /* (before the store replaces it) */
    r = graph_store(g, wire, len, 1, &hr);
    pg_free(sw);
    if (!r) return hr;
    graph_flood(g, r, base);
    return S_OK;
}

/* Connection utility ([MS-PPGRH] 3.1.7.33) in integer form. */
/* A flood's verdict on link c: the record it brought (or that we sent and
 * it ACKed) was new, or not.  A record answering our own sync moves the
 * score but is no flood: it does not count as evidence for pruning. */
static void conn_utility(pg_conn *c, int useful)
{
    c->utility = c->utility - c->utility / 32 + (useful ? 128 : 0);
    if (c->sync != SYNC_NONE) return;
    if (c->verdicts < UINT32_MAX) c->verdicts++;
    if (c->graph) c->graph->last_verdict = L.now;
}

/* Sends the ACK entries held so far as one ACK message. */
static void conn_flush_acks(pg_conn *c)
{
    size_t n = buf_used(&c->acks);
    uint8_t *m;
    if (n && !c->dead && (m = (uint8_t *)pg_alloc(12 + n)) != NULL) {
        msg_header(m, 12 + n, MT_ACK);
        put16(m + 8, (unsigned)(n / 20));
        put16(m + 10, 12);
        memcpy(m + 12, c->acks.p + c->acks.off, n);
        conn_send(c, m, 12 + n);
        pg_free(m);
    }
    buf_consume(&c->acks, n);
    ackq_unlink(c);
}

/* ACK entries are held, up to ACK_BATCH of them, until other output goes to
 * that neighbor (conn_try_send puts them behind it: the same write) or
 * ACK_DELAY_MS have passed (service_all).  L.ackq is in order of ack_due, as
 * every entry waits the same time.  On a link that keeps alive (fast
 * profile) they wait for the keepalive instead (R10: the ACK goes
 * in place of the Ping, conn_on_timer), on no list. */
static void conn_queue_ack(pg_conn *c, const uint8_t *id, int useful)
{
    uint8_t e[20];
    memcpy(e, id, 16);
    put32(e + 16, useful ? 1 : 0);
    if (!c->acks.cap) { /* room for two to start with, not a 256-byte buffer per link held 200 ms */
        if (!(c->acks.p = (uint8_t *)pg_alloc(40))) return; /* an ACK is advisory: drop it */
        c->acks.cap = 40;
    }
    if (!buf_append(&c->acks, e, 20)) return;
    if (buf_used(&c->acks) >= 20 * ACK_BATCH) { conn_flush_acks(c); return; }
    if (c->ack_listed) return;
    if (conn_keeps_alive(c)) {
        c->ack_listed = 2;
        return;
    }
    c->ack_listed = 1;
    /* rounded like keepalives, so that the ACKs of many links go in one pass */
    c->ack_due = (L.now + ACK_DELAY_MS + KEEPALIVE_SLACK_MS - 1) / KEEPALIVE_SLACK_MS * KEEPALIVE_SLACK_MS;
    c->aknext = NULL;
    c->akprev = L.ackq_tail;
    if (L.ackq_tail) L.ackq_tail->aknext = c;
    else L.ackq = c;
    L.ackq_tail = c;
}

/* One record to one neighbor, as a FLOOD message of its own; 0 if out of
 * memory (nothing sent). */
static int conn_flood_record(pg_conn *c, const pg_rec *r)
{
    size_t size = 12 + rec_len(c->graph, r);
    uint8_t *m = (uint8_t *)pg_alloc(size);
    if (!m) return 0;
    if (buf_used(&c->renews)) conn_renew_cancel(c, rec_id(r), rec_version(r)); /* superseded */
    msg_header(m, size, MT_FLOOD);
    put16(m + 8, 12);
    put16(m + 10, 0);
    rec_wire_copy(c->graph, r, m + 12);
    conn_send(c, m, size);
    pg_free(m);
    return 1;
}

/* A structurally valid record from the network (c: the link it came on; NULL
 * when a deferred record is validated again): keep the newer version (once
 * the application's validator accepts it) and pass it on, or send ours back
 * when ours is newer.  Returns the comparison with what we held (> 0: it was
 * newer; it may still have been rejected or deferred: *useful says whether
 * it was stored). */
static int record_in(pg_graph *g, pg_conn *c, const uint8_t *rec, size_t len, const rec_view *v, int *useful)
{
    rec_view lv;
    pg_rec *local = rec_find(g, v->id);
    int cmp = 1;
    *useful = 0;
    if (local) {
        rec_view_of(g, local, &lv);
        cmp = rec_compare(v, &lv);
    }
    if (cmp > 0) {
        HRESULT hr = sec_validate(g, v, rec_change_type(g, v));
        pg_rec *r;
        if (hr == PEER_E_DEFERRED_VALIDATION) { sec_defer(g, v); return cmp; }
        if (hr != S_OK) { g->rejected_records++; return cmp; }
        ULONGLONG due = fwd_pace(g, local, &lv, v); /* (before the store frees local) */
        uint32_t base = local ? rec_renewal_base(&lv, v) : 0;
        r = graph_store(g, rec, len, 0, &hr);
        if (r) fwd_defer(g, r, c, due, base);
        else g->rejected_records++; /* the record limits, or no memory */
        *useful = r != NULL;
    } else {
        if (c && g->fwd_n) fwd_note(g, v->id, c); /* it has this version, or gets it back just below */
        if (cmp < 0 && !memcmp(v->id, SIGNATURE_ID, 16)) signature_contested(g, v);
    }
    if (cmp < 0 && c) conn_flood_record(c, local); /* ours is newer: back it goes (no memory: a later sync) */
    return cmp;
}

/* One record received from a neighbor (a FLOOD's, or one of a BATCH):
 * validate it, then record_in; ACK unless the record answers our own sync
 * between p2pgraph nodes (utility is about which link brings new floods
 * first). */
static void flood_in(pg_conn *c, const uint8_t *rec, size_t len)
{
    pg_graph *g = c->graph;
    rec_view v;
    int useful;
    /* a record that fails validation is dropped; the link stays (3.1.7.27) */
    if (!rec_parse(rec, len, &v) || !rec_validate(g, &v, peer_time(g))) {
        g->rejected_records++;
        return;
    }
    if (buf_used(&c->renews)) conn_renew_cancel(c, v.id, v.version); /* it has this version: a renewal held for it is no news */
    record_in(g, c, rec, len, &v, &useful);
    conn_utility(c, useful);
    if (!((c->ext & EXT_SYNC_NOACK) && c->sync != SYNC_NONE)) conn_queue_ack(c, v.id, useful);
}

static void on_flood(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned roff;
    if (size < 16 || get16(m + 10) != 0) goto bad;
    roff = get16(m + 8);
    if (roff < 12 || roff > size) goto bad;
    flood_in(c, m + roff, size - roff);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* --- BATCH (EXT_BATCH): sync answers without MS-PPGRH's per-record cost ---
 * Message: header (type 0x80), u16 count, u16 0, then `count` compact
 * records.  A compact record is the PEER_RECORD's fields in order, where a
 * field equal to the previous record's of the same message (or the graph's
 * own ID for the graph ID) is left out, lengths and times are varints and
 * times are deltas.  Decoding rebuilds the exact MS-PPGRH bytes, so what is
 * stored and flooded on is unchanged.  Layout in PROTOCOL.md section 4. */
#define CR_TYPE 0x01
#define CR_CREATOR 0x02
#define CR_MODBY 0x04
#define CR_SEC 0x08
#define CR_GID 0x10
#define CR_PROTO 0x20
#define CR_ATTR 0x40
#define BATCH_TARGET 16000u     /* bytes of compact records per BATCH */
#define BATCH_MAX_RECORD 65536u /* bigger records travel as FLOODs */

static int vput(pg_buf *b, uint64_t v) /* the stored form's varint (sv_put), appended */
{
    uint8_t t[10];
    return buf_append(b, t, (size_t)(sv_put(t, v) - t));
}
static int vget(const uint8_t *p, size_t n, size_t *i, uint64_t *v)
{
    int sh = 0;
    *v = 0;
    while (*i < n && sh < 64) {
        uint8_t b = p[(*i)++];
        *v |= (uint64_t)(b & 0x7F) << sh;
        if (!(b & 0x80)) return 1;
        sh += 7;
    }
    return 0;
}
static int same_bytes(const uint8_t *a, uint32_t na, const uint8_t *b, uint32_t nb, size_t unit)
{
    return na == nb && (!na || !memcmp(a, b, na * unit));
}

/* Appends r (parsed as v) to a batch; prev is the previous record of the
 * same message (NULL for the first); gid/ngid the graph ID's wire units. */
static int crec_put(pg_buf *b, const rec_view *v, const rec_view *prev, const uint8_t *gid, uint32_t ngid)
{
    uint8_t f = 0, fl[4];
    if (prev && !memcmp(v->type, prev->type, 16)) f |= CR_TYPE;
    if (prev && same_bytes(v->creator, v->n_creator, prev->creator, prev->n_creator, 2)) f |= CR_CREATOR;
    if (prev && same_bytes(v->modby, v->n_modby, prev->modby, prev->n_modby, 2)) f |= CR_MODBY;
    if (prev && same_bytes(v->sec, v->n_sec, prev->sec, prev->n_sec, 1)) f |= CR_SEC;
    if (same_bytes(v->gid, v->n_gid, gid, ngid, 2)) f |= CR_GID;
    if (prev && v->proto == prev->proto) f |= CR_PROTO;
    if (prev && same_bytes(v->attr, v->n_attr, prev->attr, prev->n_attr, 2)) f |= CR_ATTR;
    put16(fl, v->proto);
    if (!buf_append(b, &f, 1)) return 0;
    if (!(f & CR_TYPE) && !buf_append(b, v->type, 16)) return 0;
    if (!buf_append(b, v->id, 16) || !vput(b, v->version) || !buf_append(b, &v->flags, 1)) return 0;
    if (!(f & CR_CREATOR) && (!vput(b, v->n_creator) || !buf_append(b, v->creator, 2 * (size_t)v->n_creator))) return 0;
    if (!(f & CR_MODBY) && (!vput(b, v->n_modby) || !buf_append(b, v->modby, 2 * (size_t)v->n_modby))) return 0;
    if (!(f & CR_SEC) && (!vput(b, v->n_sec) || !buf_append(b, v->sec, v->n_sec))) return 0;
    if (!vput(b, zz(v->created, prev ? prev->created : 0)) || !vput(b, zz(v->expires, v->created)) ||
        !vput(b, zz(v->modified, v->created)))
        return 0;
    if (!(f & CR_GID) && (!vput(b, v->n_gid) || !buf_append(b, v->gid, 2 * (size_t)v->n_gid))) return 0;
    if (!(f & CR_PROTO) && !buf_append(b, fl, 2)) return 0;
    if (!vput(b, v->n_data) || !buf_append(b, v->data, v->n_data)) return 0;
    if (!(f & CR_ATTR) && (!vput(b, v->n_attr) || !buf_append(b, v->attr, 2 * (size_t)v->n_attr))) return 0;
    return 1;
}

/* Reads a length-prefixed field (units of `unit` bytes) of a compact record. */
static int crec_field(const uint8_t *p, size_t n, size_t *i, size_t unit, const uint8_t **s, uint32_t *cnt)
{
    uint64_t k;
    if (!vget(p, n, i, &k) || k > (n - *i) / unit) return 0;
    *s = p + *i;
    *cnt = (uint32_t)k;
    *i += (size_t)k * unit;
    return 1;
}

/* Decodes one compact record at p[*i..n) into v (fields point into p, the
 * previous record's view or gid); 0 if malformed. */
static int crec_get(const uint8_t *p, size_t n, size_t *i, rec_view *v, const rec_view *prev, const uint8_t *gid,
                    uint32_t ngid)
{
    uint8_t f;
    uint64_t x;
    if (*i >= n) return 0;
    f = p[(*i)++];
    if ((f & 0x80) || (!prev && (f & (CR_TYPE | CR_CREATOR | CR_MODBY | CR_SEC | CR_PROTO | CR_ATTR)))) return 0;
    if (f & CR_TYPE) v->type = prev->type;
    else { if (n - *i < 16) return 0; v->type = p + *i; *i += 16; }
    if (n - *i < 16) return 0;
    v->id = p + *i;
    *i += 16;
    if (!vget(p, n, i, &x) || x > 0xFFFFFFFFu || *i >= n) return 0;
    v->version = (uint32_t)x;
    v->flags = p[(*i)++];
    if (f & CR_CREATOR) { v->creator = prev->creator; v->n_creator = prev->n_creator; }
    else if (!crec_field(p, n, i, 2, &v->creator, &v->n_creator)) return 0;
    if (f & CR_MODBY) { v->modby = prev->modby; v->n_modby = prev->n_modby; }
    else if (!crec_field(p, n, i, 2, &v->modby, &v->n_modby)) return 0;
    if (f & CR_SEC) { v->sec = prev->sec; v->n_sec = prev->n_sec; }
    else if (!crec_field(p, n, i, 1, &v->sec, &v->n_sec)) return 0;
    if (!vget(p, n, i, &x)) return 0;
    v->created = unzz(prev ? prev->created : 0, x);
    if (!vget(p, n, i, &x)) return 0;
    v->expires = unzz(v->created, x);
    if (!vget(p, n, i, &x)) return 0;
    v->modified = unzz(v->created, x);
    if (f & CR_GID) { v->gid = gid; v->n_gid = ngid; }
    else if (!crec_field(p, n, i, 2, &v->gid, &v->n_gid)) return 0;
    if (f & CR_PROTO) v->proto = prev->proto;
    else { if (n - *i < 2) return 0; v->proto = get16(p + *i); *i += 2; }
    if (!crec_field(p, n, i, 1, &v->data, &v->n_data)) return 0;
    if (f & CR_ATTR) { v->attr = prev->attr; v->n_attr = prev->n_attr; }
    else if (!crec_field(p, n, i, 2, &v->attr, &v->n_attr)) return 0;
    return 1;
}

static void on_batch(pg_conn *c, const uint8_t *m, size_t size)
{
    rec_view v, prev;
    unsigned count, k;
    size_t i = 12;
    pg_buf w = {0};
    if (!(c->ext & EXT_BATCH) || c->direct || size < 12 || get16(m + 10) != 0) goto bad;
    count = get16(m + 8);
    for (k = 0; k < count && !c->dead; k++) {
        if (!crec_get(m, size, &i, &v, k ? &prev : NULL, c->graph->gid_u, c->graph->n_gid_u)) break;
        if (!rec_wire_of(&v, &w)) { conn_abort(c, E_OUTOFMEMORY); break; }
        flood_in(c, w.p, w.len);
        rec_view_copy(&prev, &v);
    }
    buf_free(&w);
    if (c->dead) return;
    if (k == count && i == size) return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

static void on_ack(pg_conn *c, const uint8_t *m, size_t size)
{
    unsigned n, off, i;
    if (size < 12) goto bad;
    n = get16(m + 8);
    off = get16(m + 10);
    if (off > size || (size_t)n * 20 + off > size || (n && off < 12)) goto bad;
    for (i = 0; i < n; i++) conn_utility(c, get32(m + off + 20 * i + 16) & 1);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* --- synchronization, responder side: paced FLOODs then SYNC_END --- */

/* Does record type t pass a SOLICIT's inclusion/exclusion list? */
static int solicit_wants(const uint8_t *t, const uint8_t *list, unsigned inc, unsigned exc)
{
    unsigned i;
    if (inc) return !memcmp(t, list, 16);
    for (i = 0; i < exc; i++)
        if (!memcmp(t, list + 16 * i, 16)) return 0;
    return 1;
}

static void on_solicit(pg_conn *c, const uint8_t *m, size_t size, int type)
{
    pg_graph *g = c->graph;
    unsigned inc = m[8], exc = m[9], off = get16(m + 10);
    uint64_t since = type == MT_SOLICIT_TIME ? get64(m + 12) : 0, now = peer_time(g);
    size_t i, n = 0;
    (void)size; /* the list was bounds-checked by solicit_valid */
    if (c->out_ids) { /* a new solicitation replaces one still being answered */
        pg_free(c->out_ids);
        c->out_ids = NULL;
    }
    c->out_n = c->out_i = 0;
    if (type != MT_SOLICIT_HASH && g->rec_count) {
        c->out_ids = (uint8_t *)pg_alloc(16 * g->rec_count);
        if (!c->out_ids) { conn_abort(c, E_OUTOFMEMORY); return; }
        for (i = 0; i < rec_span(g); i++) {
            const pg_rec *r = rec_at(g, i);
            if (r) {
                if (rec_expires(r) <= now || rec_modified(r) < since) continue;
                if (!solicit_wants(rec_type(g, r), m + off, inc, exc)) continue;
                memcpy(c->out_ids + 16 * n++, rec_id(r), 16);
            }
        }
    }
    c->out_n = n;
    c->out_end = 1;
}

static void on_solicit_hash(pg_conn *c, const uint8_t *m, size_t size);

/* A valid solicitation: answered now (by conn_pump_out), or queued behind the
 * one being answered. */
static void solicit_in(pg_conn *c, const uint8_t *m, size_t size, int type)
{
    if (c->out_end || c->solq_n) { /* answering one already: keep it in order */
        if (c->solq_n >= SOLQ_MAX || !buf_append(&c->solq, m, size)) conn_abort(c, PEER_E_PROTOCOL_ERROR);
        else c->solq_n++;
    } else if (type == MT_SOLICIT_HASH)
        on_solicit_hash(c, m, size);
    else
        on_solicit(c, m, size, type);
}

/* How far a sync answer fills tx: less while application data waits, so
 * the two alternate (see conn_try_send). */
static size_t sync_watermark(const pg_conn *c)
{
    return c->appq ? PEER_SYNC_WATERMARK / 8 : PEER_SYNC_WATERMARK;
}

/* Sends queued sync FLOODs while the send queue has room (fairness: a big
 * sync never fills the queue past sync_watermark). */
/* Sends the BATCH being built (nb records) and starts the next. */
static void batch_flush(pg_conn *c, pg_buf *b, unsigned *nb)
{
    if (!*nb) return;
    msg_header(b->p + b->off, buf_used(b), MT_BATCH);
    put16(b->p + b->off + 8, *nb);
    put16(b->p + b->off + 10, 0);
    if (!c->dead) conn_send_big(c, b->p + b->off, buf_used(b));
    b->off = b->len = 0;
    *nb = 0;
}

static void conn_pump_out(pg_conn *c)
{
    pg_graph *g = c->graph;
    uint64_t now;
    pg_buf batch = {0};
    rec_view prev;
    unsigned nb = 0;
    int batched;
    if (!c->out_end || c->dead || c->state != CS_CONNECTED || !g) return;
    now = peer_time(g);
    batched = (c->ext & EXT_BATCH) != 0;
    while (c->out_i < c->out_n && buf_used(&c->tx) + buf_used(&batch) < sync_watermark(c) && !c->dead) {
        const pg_rec *r = rec_find(g, c->out_ids + 16 * c->out_i++);
        uint8_t hdr[12];
        size_t size;
        rec_view v;
        if (!r || rec_expires(r) <= now) continue;
        rec_view_of(g, r, &v);
        size = 12 + rec_wire_size(&v);
        if (batched && size - 12 <= BATCH_MAX_RECORD) {
            if (!nb) { /* a new BATCH: header now, count at the end */
                uint8_t h[12] = {0};
                if (!buf_append(&batch, h, 12)) { conn_abort(c, E_OUTOFMEMORY); break; }
            }
            if (!crec_put(&batch, &v, nb ? &prev : NULL, g->gid_u, g->n_gid_u)) { conn_abort(c, E_OUTOFMEMORY); break; }
            rec_view_copy(&prev, &v);
            if (++nb == 0xFFFF || buf_used(&batch) >= BATCH_TARGET) batch_flush(c, &batch, &nb);
            continue;
        }
        batch_flush(c, &batch, &nb); /* keep the order */
        if (size <= PEER_FRAME_SEND_SIZE) { /* the common case: frame it directly */
            uint8_t fh[2];
            msg_header(hdr, size, MT_FLOOD);
            put16(hdr + 8, 12);
            put16(hdr + 10, 0);
            put16(fh, (unsigned)size);
            if (!buf_append(&c->tx, fh, 2) || !buf_append(&c->tx, hdr, 12) || !buf_reserve(&c->tx, size - 12)) {
                conn_abort(c, E_OUTOFMEMORY);
                return;
            }
            rec_wire_write(&v, c->tx.p + c->tx.len);
            c->tx.len += size - 12;
        } else if (!conn_flood_record(c, r)) {
            conn_abort(c, E_OUTOFMEMORY);
            return;
        }
    }
    batch_flush(c, &batch, &nb);
    buf_free(&batch);
    if (c->out_i >= c->out_n && !c->dead) {
        uint8_t e[12];
        msg_header(e, 12, MT_SYNC_END);
        e[8] = 1;
        e[9] = e[10] = e[11] = 0;
        if (c->out_end == 1) conn_send(c, e, 12);
        pg_free(c->out_ids);
        c->out_ids = NULL;
        c->out_n = c->out_i = 0;
        c->out_end = 0;
        if (c->solq_n && !c->dead) { /* the next queued solicitation */
            const uint8_t *q = c->solq.p + c->solq.off;
            size_t qs = get32(q);
            uint8_t *copy = (uint8_t *)pg_alloc(qs);
            if (!copy) { conn_abort(c, E_OUTOFMEMORY); return; }
            memcpy(copy, q, qs);
            buf_consume(&c->solq, qs);
            c->solq_n--;
            if (copy[5] == MT_SOLICIT_HASH) on_solicit_hash(c, copy, qs);
            else on_solicit(c, copy, qs, copy[5]);
            pg_free(copy);
            if (!c->dead && c->out_end) conn_pump_out(c);
            return;
        }
    }
    /* the caller sends: several answers go out in one write */
}

/* --- Hash-based sync (3.1.7.31, 3.1.5.2.7-.11) ---
 * Both sides sort their records by (last modification time, record ID
 * bytes); the initiator cuts its list into ranges of 10 and sends the MD5 of
 * each range's RECORD_ABSTRACTs with the range's upper bound; the responder
 * advertises its abstracts for every range whose hash differs (its records
 * above the last bound count in the last range); the initiator REQUESTs what
 * it lacks or has older and, after the responder's FLOODs and SYNC_END,
 * FLOODs back what the responder lacks or has older.  An empty database
 * sends one range with the MD5 of nothing and a zero bound (PROTOCOL.md S5). */

#define HASH_RANGE 10

static int key_cmp(uint64_t ta, const uint8_t *ia, uint64_t tb, const uint8_t *ib)
{
    if (ta != tb) return ta < tb ? -1 : 1;
    return memcmp(ia, ib, 16);
}

/* Sorting for hash sync: on a key array (time, first ID bytes as a
 * big-endian number, record), not on record pointers, so that a comparison
 * reads no record; a merge sort with the comparison inline.  At 1000 records
 * the pointer sort was a third of a link's hash-sync cost, paid on both
 * sides. */
typedef struct sort_key { uint64_t t, id8; pg_rec *r; } sort_key;

static int sort_key_le(const sort_key *a, const sort_key *b)
{
    if (a->t != b->t) return a->t < b->t;
    if (a->id8 != b->id8) return a->id8 < b->id8;
    return memcmp(rec_id(a->r), rec_id(b->r), 16) <= 0;
}

/* Sorts v[0..n) (stable) with tmp room for n / 2 + 1 keys. */
static void sort_keys(sort_key *v, sort_key *tmp, size_t n)
{
    size_t h, i, j, k;
    if (n < 2) return;
    h = n / 2;
    sort_keys(v, tmp, h);
    sort_keys(v + h, tmp, n - h);
    if (sort_key_le(&v[h - 1], &v[h])) return; /* in order already (records often come in time order) */
    memcpy(tmp, v, h * sizeof *v);
    for (i = 0, j = h, k = 0; i < h && j < n;) v[k++] = sort_key_le(&tmp[i], &v[j]) ? tmp[i++] : v[j++];
    while (i < h) v[k++] = tmp[i++];
}

/* The graph's unexpired records in hash-sync order: valid until a record
 * enters or leaves the table (the caller must not store records while it
 * uses it; it does not free it).  The order is kept while the records stay
 * the same and none of them expires: a node that gains many links at once
 * (a join, a repair) runs a hash sync on each, three sorts apiece.  It is
 * 24 bytes per record, working memory while hash syncs run on the graph's
 * links: the last one to end drops it (srt_release). */
static const sort_key *rec_sorted(pg_graph *g, size_t *pn)
{
    size_t cnt = g->rec_count ? g->rec_count : 1, i, n = 0;
    sort_key *k;
    uint64_t now = peer_time(g), until = UINT64_MAX;
    if (g->srt && g->srt_gen == g->rec_gen && now < g->srt_until) {
        *pn = g->srt_n;
        return g->srt;
    }
    pg_free(g->srt);
    g->srt = NULL;
    k = (sort_key *)pg_alloc(sizeof *k * (cnt + cnt / 2 + 1)); /* the keys, then the merge's room */
    if (!k) return NULL;
    for (i = 0; i < rec_span(g); i++) {
        pg_rec *r = rec_at(g, i);
        if (r && rec_expires(r) > now) {
            k[n].t = rec_modified(r);
            k[n].id8 = get64(rec_id(r));
            k[n].r = r;
            n++;
            if (rec_expires(r) < until) until = rec_expires(r);
        }
    }
    sort_keys(k, k + cnt, n);
    g->srt = k;
    g->srt_n = n;
    g->srt_gen = g->rec_gen;
    g->srt_until = until;
    *pn = n;
    return g->srt;
}

/* A hash sync ended (or a link closed, `gone`): the order is dropped when no
 * other link of g is in one. */
static void srt_release(pg_graph *g, const pg_conn *gone)
{
    const pg_conn *o;
    if (!g || !g->srt) return;
    for (o = g->conns; o; o = o->gnext)
        if (o != gone && !o->dead && (o->sync == SYNC_HASH || o->hash_resp)) return;
    pg_free(g->srt);
    g->srt = NULL;
}

/* MD5 of the RECORD_ABSTRACTs (ID, version) of v[0..n). */
static void abstracts_md5(const sort_key *v, size_t n, uint8_t out[16])
{
    const mbedtls_md_info_t *mi = mbedtls_md_info_from_type(MBEDTLS_MD_MD5);
    mbedtls_md_context_t ctx;
    uint8_t a[20 * HASH_RANGE];
    size_t i, j;
    if (n <= HASH_RANGE) { /* one range: one call, no context to allocate */
        for (i = 0; i < n; i++) {
            memcpy(a + 20 * i, rec_id(v[i].r), 16);
            put32(a + 20 * i + 16, rec_version(v[i].r));
        }
        if (!mi || mbedtls_md(mi, a, 20 * n, out) != 0) memset(out, 0, 16);
        return;
    }
    mbedtls_md_init(&ctx);
    if (mbedtls_md_setup(&ctx, mi, 0) == 0 && mbedtls_md_starts(&ctx) == 0) {
        for (i = 0; i < n; i += j) {
            for (j = 0; j < HASH_RANGE && i + j < n; j++) {
                memcpy(a + 20 * j, rec_id(v[i + j].r), 16);
                put32(a + 20 * j + 16, rec_version(v[i + j].r));
            }
            mbedtls_md_update(&ctx, a, 20 * j);
        }
        mbedtls_md_finish(&ctx, out);
    } else
        memset(out, 0, 16);
    mbedtls_md_free(&ctx);
}

static void sync_hash_start(pg_conn *c)
{
    pg_graph *g = c->graph;
    size_t n, nr, i, size;
    const sort_key *v = rec_sorted(g, &n);
    uint8_t *m;
    if (!v) { conn_abort(c, E_OUTOFMEMORY); return; }
    nr = n ? (n + HASH_RANGE - 1) / HASH_RANGE : 1;
    size = 20 + 40 * nr;
    m = (uint8_t *)pg_alloc(size);
    if (!m) { conn_abort(c, E_OUTOFMEMORY); return; }
    msg_header(m, size, MT_SOLICIT_HASH);
    m[8] = m[9] = 0;
    put16(m + 10, 20);
    put32(m + 12, (uint32_t)nr);
    put16(m + 16, 20);
    put16(m + 18, 0);
    for (i = 0; i < nr; i++) {
        uint8_t *e = m + 20 + 40 * i;
        size_t lo = i * HASH_RANGE, k = n - lo < HASH_RANGE ? n - lo : HASH_RANGE;
        abstracts_md5(v + lo, n ? k : 0, e);
        if (n) {
            put64(e + 16, v[lo + k - 1].t);
            memcpy(e + 24, rec_id(v[lo + k - 1].r), 16);
        } else
            memset(e + 16, 0, 24);
    }
    c->sync = SYNC_HASH;
    c->hash_phase = 1; /* waiting for ADVERTISE */
    conn_send_big(c, m, size);
    pg_free(m);
}

/* Responder: SOLICIT_HASH -> ADVERTISE of the ranges that differ. */
static void on_solicit_hash(pg_conn *c, const uint8_t *m, size_t size)
{
    pg_graph *g = c->graph;
    uint32_t nr = get32(m + 12), i;
    const uint8_t *ent = m + get16(m + 16);
    size_t n, pos = 0, nb = 0, na = 0;
    const sort_key *v = rec_sorted(g, &n);
    pg_buf bnd = {0}, abs = {0};
    uint8_t *out;
    (void)size;
    if (!v) { conn_abort(c, E_OUTOFMEMORY); return; }
    if (!nr) { conn_abort(c, PEER_E_PROTOCOL_ERROR); return; }
    for (i = 0; i < nr; i++) {
        const uint8_t *e = ent + 40 * (size_t)i;
        uint64_t ut = get64(e + 16);
        size_t start = pos, k;
        uint8_t h[16];
        if (i + 1 == nr) pos = n; /* the last range takes everything above */
        else
            while (pos < n && key_cmp(v[pos].t, rec_id(v[pos].r), ut, e + 24) <= 0) pos++;
        abstracts_md5(v + start, pos - start, h);
        if (!memcmp(h, e, 16)) continue;
        {
            uint8_t b[52];
            if (i == 0) memset(b, 0, 24);
            else { memcpy(b, e - 40 + 16, 8); memcpy(b + 8, e - 40 + 24, 16); }
            memcpy(b + 24, e + 16, 8);
            memcpy(b + 32, e + 24, 16);
            put32(b + 48, (uint32_t)(pos - start));
            if (!buf_append(&bnd, b, 52)) goto oom;
            nb++;
        }
        for (k = start; k < pos; k++) {
            uint8_t a[20];
            memcpy(a, rec_id(v[k].r), 16);
            put32(a + 16, rec_version(v[k].r));
            if (!buf_append(&abs, a, 20)) goto oom;
            na++;
        }
    }
    out = (uint8_t *)pg_alloc(24 + bnd.len + abs.len);
    if (!out) goto oom;
    msg_header(out, 24 + bnd.len + abs.len, MT_ADVERTISE);
    put32(out + 8, (uint32_t)nb);
    put32(out + 12, (uint32_t)na);
    put16(out + 16, 24);
    put16(out + 18, 0);
    put32(out + 20, (uint32_t)(24 + bnd.len));
    if (bnd.len) memcpy(out + 24, bnd.p, bnd.len);
    if (abs.len) memcpy(out + 24 + bnd.len, abs.p, abs.len);
    c->hash_resp = 1;
    conn_send_big(c, out, 24 + bnd.len + abs.len);
    pg_free(out);
    buf_free(&bnd);
    buf_free(&abs);
    return;
oom:
    buf_free(&bnd);
    buf_free(&abs);
    conn_abort(c, E_OUTOFMEMORY);
}

static int abs_cmp(const void *a, const void *b) { return memcmp(a, b, 16); }

/* Initiator: ADVERTISE -> REQUEST what we lack; remember what they lack. */
static void on_advertise(pg_conn *c, const uint8_t *m, size_t size)
{
    pg_graph *g = c->graph;
    uint32_t nb, na, boff, aoff, i;
    size_t n, k, nreq = 0, nsend = 0;
    const sort_key *v = NULL;
    uint8_t *req = NULL, *sorted = NULL;
    if (size < 24 || c->sync != SYNC_HASH || c->hash_phase != 1) goto bad;
    nb = get32(m + 8);
    na = get32(m + 12);
    boff = get16(m + 16);
    aoff = get32(m + 20);
    if (boff > aoff || aoff > size || (uint64_t)nb * 52 + boff > aoff || (uint64_t)na * 20 + aoff > size ||
        ((nb || na) && boff < 24))
        goto bad;
    req = (uint8_t *)pg_alloc(16 + 20 * (size_t)na);
    sorted = (uint8_t *)pg_alloc(20 * (size_t)(na ? na : 1));
    v = rec_sorted(g, &n);
    if (!req || !sorted || !v) { pg_free(req); pg_free(sorted); conn_abort(c, E_OUTOFMEMORY); return; }
    /* what they have that we lack or hold older */
    for (i = 0; i < na; i++) {
        const uint8_t *a = m + aoff + 20 * (size_t)i;
        const pg_rec *r = rec_find(g, a);
        memcpy(sorted + 20 * (size_t)i, a, 20);
        if (!r || rec_version(r) < get32(a + 16)) memcpy(req + 16 + 20 * nreq++, a, 20);
    }
    qsort(sorted, na, 20, abs_cmp);
    /* what we have in their differing ranges that they lack or hold older */
    pg_free(c->hash_send);
    c->hash_send = (uint8_t *)pg_alloc(16 * (n ? n : 1));
    if (!c->hash_send) { pg_free(req); pg_free(sorted); conn_abort(c, E_OUTOFMEMORY); return; }
    for (i = 0; i < nb; i++) {
        const uint8_t *b = m + boff + 52 * (size_t)i;
        uint64_t lt = get64(b), ut = get64(b + 24);
        for (k = 0; k < n; k++) {
            const uint8_t *hit;
            if (key_cmp(v[k].t, rec_id(v[k].r), lt, b + 8) <= 0 && (lt || memcmp(b + 8, "\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 16)))
                continue;
            /* above the upper bound: only the last range of our SOLICIT_HASH (whose
             * bound is our newest record) also holds what lies above it */
            if (key_cmp(v[k].t, rec_id(v[k].r), ut, b + 32) > 0 &&
                !(n && key_cmp(v[n - 1].t, rec_id(v[n - 1].r), ut, b + 32) == 0))
                continue;
            hit = (const uint8_t *)bsearch(rec_id(v[k].r), sorted, na, 20, abs_cmp);
            if (!hit || get32(hit + 16) < rec_version(v[k].r)) memcpy(c->hash_send + 16 * nsend++, rec_id(v[k].r), 16);
        }
    }
    c->hash_send_n = nsend;
    msg_header(req, 16 + 20 * nreq, MT_REQUEST);
    put32(req + 8, (uint32_t)nreq);
    put32(req + 12, 16);
    c->hash_phase = 2; /* waiting for FLOODs and SYNC_END */
    conn_send_big(c, req, 16 + 20 * nreq);
    pg_free(req);
    pg_free(sorted);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* Responder: REQUEST -> FLOODs of those records, then SYNC_END. */
static void on_request(pg_conn *c, const uint8_t *m, size_t size)
{
    uint32_t n, off, i;
    if (size < 16 || !c->hash_resp) goto bad;
    n = get32(m + 8);
    off = get32(m + 12);
    if (off > size || (uint64_t)n * 20 + off > size || (n && off < 16)) goto bad;
    pg_free(c->out_ids);
    c->out_ids = (uint8_t *)pg_alloc(16 * (size_t)(n ? n : 1));
    if (!c->out_ids) { conn_abort(c, E_OUTOFMEMORY); return; }
    for (i = 0; i < n; i++) memcpy(c->out_ids + 16 * (size_t)i, m + off + 20 * (size_t)i, 16);
    c->out_n = n;
    c->out_i = 0;
    c->out_end = 1;
    c->hash_resp = 0;
    srt_release(c->graph, NULL);
    return;
bad:
    conn_abort(c, PEER_E_PROTOCOL_ERROR);
}

/* Initiator, final SYNC_END of a hash sync: send what they lack. */
static void sync_hash_finish(pg_conn *c)
{
    pg_free(c->out_ids);
    c->out_ids = c->hash_send; /* the pump FLOODs them; no SYNC_END is owed */
    c->out_n = c->hash_send_n;
    c->out_i = 0;
    c->out_end = 2;
    c->hash_send = NULL;
    c->hash_send_n = 0;
    c->sync = SYNC_NONE;
    c->hash_phase = 0;
    srt_release(c->graph, NULL);
}

/* --- expiration and autorefresh timers (3.1.6.7, 3.1.7.22) --- */

#define EXPIRY_MIN_MS 15000ULL
#define EXPIRY_MAX_MS 86400000ULL

static ULONGLONG pt_to_deadline(const pg_graph *g, uint64_t pt)
{
    uint64_t now = peer_time(g);
    return L.now + (pt > now ? (pt - now) / 10000 : 0);
}

static void graph_arm_expiry(pg_graph *g, uint64_t expires)
{
    ULONGLONG d = pt_to_deadline(g, expires);
    if (d < g->exp_deadline) graph_set_expiry(g, d);
}

static HRESULT graph_refresh(pg_graph *g, pg_rec *r);

static void graph_expire(pg_graph *g)
{
    uint64_t now = peer_time(g), next = (uint64_t)-1, refresh = (uint64_t)-1;
    size_t i, nref = 0, k;
    uint8_t (*due)[16] = NULL;
    ULONGLONG d;
    if ((g->flags & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION) && !(graph_compute_status(g) & PEER_GRAPH_STATUS_HAS_CONNECTIONS)) {
        g->exp_deadline = PEER_NO_DEADLINE; /* re-armed by the next connection */
        return;
    }
    /* 1. autorefresh first: our own records flagged for it that expire within
     * 20 s (or already did, if the host was away) get a new version */
    for (i = 0; i < rec_span(g); i++) {
        pg_rec *r = rec_at(g, i);
        if (r) {
            rec_view v;
            if (!(r->flags & RF_AUTOREFRESH) || (r->flags & RF_DELETED)) continue;
            rec_view_of(g, r, &v);
            if (!u16_eq(v.creator, v.n_creator, g->peer_id)) continue;
            if (rec_expires(r) > now + 20 * FT_SECOND) {
                if (rec_expires(r) - 20 * FT_SECOND < refresh) refresh = rec_expires(r) - 20 * FT_SECOND;
                continue;
            }
            if (!(nref & 15)) {
                uint8_t (*nd)[16] = (uint8_t (*)[16])pg_realloc(due, (nref + 16) * 16);
                if (!nd) break;
                due = nd;
            }
            memcpy(due[nref++], rec_id(r), 16);
        }
    }
    for (k = 0; k < nref; k++) {
        pg_rec *r = rec_find(g, due[k]);
        if (r) graph_refresh(g, r);
        if ((r = rec_find(g, due[k])) != NULL && rec_expires(r) - 20 * FT_SECOND < refresh)
            refresh = rec_expires(r) - 20 * FT_SECOND;
    }
    pg_free(due);
    /* 2. purge what expired */
    for (i = 0; i < rec_span(g); i++) {
        pg_rec *r = rec_at(g, i);
        if (r) {
            if (rec_expires(r) <= now) {
                uint8_t type[16];
                int notify = !(r->flags & RF_DELETED);
                memcpy(type, rec_type(g, r), 16);
                rec_slot_clear(g, rec_pslot(g, i), i < g->rec_cap);
                pres_unmap(g, r);
                if (!rec_is_volatile(type)) log_append(g, LE_DROP, rec_id(r), 16, 0);
                if (notify) emit_record(g, PEER_RECORD_EXPIRED, rec_id(r), type);
                if (notify && !rec_departed(r) && rec_is_presence(type)) {
                    rec_view v;
                    rec_view_of(g, r, &v);
                    presence_record_changed(g, PEER_RECORD_EXPIRED, &v);
                }
                if (rec_is_contact(type)) graph_poke_contacts(g);
                rs_free(r);
                continue;
            }
            if (rec_expires(r) < next) next = rec_expires(r);
        }
    }
    if (!rec_find(g, SIGNATURE_ID)) signature_calc(g); /* it may have just expired */
    d = next == (uint64_t)-1 ? PEER_NO_DEADLINE : pt_to_deadline(g, next);
    if (d != PEER_NO_DEADLINE) {
        if (d < L.now + EXPIRY_MIN_MS) d = L.now + EXPIRY_MIN_MS;
        if (d > L.now + EXPIRY_MAX_MS) d = L.now + EXPIRY_MAX_MS;
    }
    if (refresh != (uint64_t)-1) {
        ULONGLONG rd = pt_to_deadline(g, refresh);
        if (rd < L.now + 4000) rd = L.now + 4000;
        if (rd < d) d = rd;
    }
    graph_set_expiry(g, d);
}

/* --- Graph Info record (2.2.3.1): the creator's properties, replicated --- */

static size_t gi_str(uint8_t *p, const wchar_t *w)
{
    if (!w) { put32(p, 0); return 4; }
    put32(p, u16_units(w));
    return 4 + u16_write(p + 4, w);
}

static HRESULT graph_publish_info(pg_graph *g)
{
    if (!g->creator_id) return E_FAIL; /* not the creator's database (guarded at load too) */
    size_t n = 4 * 6 + 4 * 4 + 2 * ((size_t)u16_units(g->graph_id) + u16_units(g->creator_id) +
                                     (g->friendly ? u16_units(g->friendly) : 0) + (g->comment ? u16_units(g->comment) : 0));
    uint8_t *p = (uint8_t *)pg_alloc(n), type[16], *wire;
    size_t i = 0, len;
    PEER_DATA d;
    pg_rec *old = rec_find(g, GRAPH_INFO_ID);
    uint64_t now = peer_time(g);
    HRESULT hr;
    if (!p) return E_OUTOFMEMORY;
    put32(p, (uint32_t)n);
    put32(p + 4, g->flags & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION);
    put32(p + 8, g->scope);
    i = 12;
    i += gi_str(p + i, g->graph_id);
    i += gi_str(p + i, g->creator_id);
    i += gi_str(p + i, g->friendly);
    i += gi_str(p + i, g->comment);
    put32(p + i, g->presence_lifetime);
    put32(p + i + 4, g->presence_max);
    put32(p + i + 8, g->max_record == PEER_DEFAULT_MAX_RECORD_SIZE ? 0 : g->max_record);
    i += 12;
    put32(p, (uint32_t)i);
    d.cbData = (ULONG)i;
    d.pbData = p;
    guid_put(type, &GUID_GRAPH_INFO_TYPE);
    if (old) {
        rec_view v;
        rec_view_of(g, old, &v);
        wire = rec_build(g, type, GRAPH_INFO_ID, v.version + 1, RF_AUTOREFRESH, g->creator_id, g->peer_id, NULL,
                         v.created, now + 300 * FT_SECOND, now > v.created ? now : v.created + 1, &d, NULL, &len);
    } else
        wire = rec_build(g, type, GRAPH_INFO_ID, 1, RF_AUTOREFRESH, g->creator_id, NULL, NULL, now,
                         now + 300 * FT_SECOND, now, &d, NULL, &len);
    pg_free(p);
    if (!wire) return E_OUTOFMEMORY;
    hr = graph_publish(g, wire, len);
    pg_free(wire);
    return hr;
}

static const uint8_t *gi_rdstr(const uint8_t *p, size_t n, size_t *i, uint32_t *units, uint32_t max)
{
    const uint8_t *s;
    if (!rd_str(p, n, i, &s, units) || *units > max || (*units && !u16_valid(s, *units))) return NULL;
    return s;
}

/* A joiner learns the graph's properties from the Graph Info record. */
static void graph_info_received(pg_graph *g, const rec_view *v)
{
    const uint8_t *p = v->data, *gid, *cr, *fr, *co;
    size_t n = v->n_data, i = 12;
    uint32_t ng, nc, nf, nco, life, pmax, maxrec;
    wchar_t *wc = NULL, *wf = NULL, *wco = NULL;
    if (g->is_creator || n < 12 || get32(p) != n) return;
    if (!(gid = gi_rdstr(p, n, &i, &ng, PEER_MAX_ID_CHARS)) || !u16_eq(gid, ng, g->graph_id)) return;
    if (!(cr = gi_rdstr(p, n, &i, &nc, PEER_MAX_ID_CHARS)) || nc < 2) return;
    if (!(fr = gi_rdstr(p, n, &i, &nf, PEER_MAX_FRIENDLY_NAME_CHARS)) && nf) return;
    if (!(co = gi_rdstr(p, n, &i, &nco, PEER_MAX_COMMENT_CHARS)) && nco) return;
    if (i + 12 != n) return;
    life = get32(p + i);
    pmax = get32(p + i + 4);
    maxrec = get32(p + i + 8);
    if (maxrec && (maxrec < PEER_MIN_RECORD_SIZE || maxrec > PEER_DEFAULT_MAX_RECORD_SIZE)) return;
    if (life && life < 300) return;
    if (!(wc = u16_dup(cr, nc)) || (nf && !(wf = u16_dup(fr, nf))) || (nco && !(wco = u16_dup(co, nco)))) {
        pg_free(wc); pg_free(wf); pg_free(wco);
        return;
    }
    pg_free(g->creator_id); g->creator_id = wc;
    pg_free(g->friendly); g->friendly = wf;
    pg_free(g->comment); g->comment = wco;
    g->flags = get32(p + 4) & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION;
    g->scope = get32(p + 8);
    g->presence_lifetime = life ? life : 300;
    g->presence_max = pmax;
    g->max_record = maxrec ? maxrec : PEER_DEFAULT_MAX_RECORD_SIZE;
    db_save(g, 0);
    {
        PEER_GRAPH_EVENT_DATA e;
        memset(&e, 0, sizeof e);
        e.eventType = PEER_GRAPH_EVENT_PROPERTY_CHANGED;
        emit(g, &e, NULL, NULL);
    }
}

/* Autorefresh: a new version of our record with the same lifetime. */
static HRESULT graph_refresh(pg_graph *g, pg_rec *r)
{
    rec_view v;
    uint64_t now = peer_time(g), life, mod;
    uint8_t *wire;
    size_t len;
    PEER_DATA sec, data;
    wchar_t *creator, *attr = NULL;
    HRESULT hr;
    rec_view_of(g, r, &v);
    life = v.expires > v.modified ? v.expires - v.modified : 300 * FT_SECOND;
    mod = now > v.modified ? now : v.modified + 1;
    if (!memcmp(rec_id(r), GRAPH_INFO_ID, 16) && g->is_creator) return graph_publish_info(g);
    creator = u16_dup(v.creator, v.n_creator);
    if (v.n_attr) attr = u16_dup(v.attr, v.n_attr);
    sec.cbData = v.n_sec; sec.pbData = (PBYTE)v.sec;
    data.cbData = v.n_data; data.pbData = (PBYTE)v.data;
    if (!creator || (v.n_attr && !attr)) { pg_free(creator); pg_free(attr); return E_OUTOFMEMORY; }
    wire = rec_build(g, v.type, v.id, v.version + 1, v.flags, creator, g->peer_id, &sec, v.created, mod + life, mod,
                     &data, attr, &len);
    pg_free(creator);
    pg_free(attr);
    if (!wire) return E_OUTOFMEMORY;
    hr = graph_publish(g, wire, len);
    pg_free(wire);
    return hr;
}

/* One complete message.  Acceptance follows digest 4.5. */
static void conn_dispatch(pg_conn *c, const uint8_t *m, size_t size)
{
    int type = m[5];
    if (m[4] != PEER_VERSION_BYTE || ((type < MT_AUTH_INFO || type > MT_ACK) && !(type == MT_BATCH && (c->ext & EXT_BATCH)) &&
                                      !(type >= MT_DEPARTED && type <= MT_WANT && (c->ext & EXT_FAST)))) {
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
        if (c->direct || !solicit_valid(m, size, type == MT_SOLICIT_NEW ? 12 : 20) ||
            (type == MT_SOLICIT_HASH && !solicit_hash_valid(m, size)))
            conn_abort(c, PEER_E_PROTOCOL_ERROR);
        else
            solicit_in(c, m, size, type);
        break;
    case MT_SYNC_END:
        if (size < 12) { conn_abort(c, PEER_E_PROTOCOL_ERROR); break; }
        if (!(m[8] & 0x01)) break;
        if (c->sync == SYNC_HASH && c->hash_phase == 2) sync_hash_finish(c);
        else if (c->sync == SYNC_NEW || c->sync == SYNC_TIME) sync_next(c);
        break;
    case MT_FLOOD:
        if (c->direct) conn_abort(c, PEER_E_PROTOCOL_ERROR);
        else on_flood(c, m, size);
        break;
    case MT_ACK:
        on_ack(c, m, size);
        break;
    case MT_BATCH: on_batch(c, m, size); break;
    case MT_DEPARTED: on_departed(c, m, size); break;
    case MT_RENEW: on_renew(c, m, size); break;
    case MT_WANT: on_want(c, m, size); break;
    case MT_ADVERTISE: on_advertise(c, m, size); break;
    case MT_REQUEST: on_request(c, m, size); break;
    default: /* AUTH_INFO, WELCOME, REFUSE on an established link */
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        break;
    }
}

/* After AUTH_INFO started TLS (responder): what followed AUTH_INFO is
 * ciphertext.  AUTH_INFO must have ended its frame. */
static void feed_to_tls(pg_conn *c, const uint8_t *rest, size_t n, int clean)
{
    if (!clean || c->frame_left || buf_used(&c->rx)) { conn_abort(c, PEER_E_PROTOCOL_ERROR); return; }
    c->fhdr_len = 0;
    tls_input(c, rest, n);
}

static void beat_in(pg_conn *from, uint8_t tag, uint8_t n);

/* A frame header above PEER_FRAME_MAX_SIZE: a keepalive frame (PROTOCOL.md
 * P17) on a link that agreed to the fast profile, else 0 (malformed). */
static int keepalive_in(pg_conn *c)
{
    uint8_t k0 = c->fhdr[0], k1 = c->fhdr[1];
    if (!(c->ext & EXT_FAST) || c->direct || c->state != CS_CONNECTED || !c->graph || k0 <= 0x80) return 0;
    if (k0 == KA_NO_BEAT) return k1 == 0;
    if (c->graph->profile == PEER_MAINTENANCE_FAST) beat_in(c, k0, k1);
    return 1;
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
                if (c->frame_left > PEER_FRAME_MAX_SIZE && keepalive_in(c)) {
                    c->frame_left = c->fhdr_len = 0; /* a frame of its own, no payload */
                    continue;
                }
                if (c->frame_left == 0 || c->frame_left > PEER_FRAME_MAX_SIZE) {
                    conn_abort(c, PEER_E_PROTOCOL_ERROR);
                    return;
                }
            }
            continue;
        }
        k = n < c->frame_left ? n : c->frame_left;
        if (c->in_divert) { /* payload of a big PT2PT: straight into its event block */
            if (k > c->in_msg_left) k = c->in_msg_left;
            pt2pt_data(c, p, k);
            if (c->dead) return;
        } else if (!buf_used(&c->rx) && k >= MSG_HDR) {
            /* nothing pending: whole messages in this chunk are handled in place */
            size_t used = 0;
            while (!c->dead && k - used >= 4) {
                size_t sz = get32(p + used);
                if (sz < MSG_HDR || sz > conn_msg_limit(c)) { conn_abort(c, PEER_E_PROTOCOL_ERROR); return; }
                if (sz > k - used) break;
                conn_dispatch(c, p + used, sz);
                used += sz;
                if (c->state == CS_TLS && !c->dead) {
                    c->frame_left -= (unsigned)k;
                    feed_to_tls(c, p + k, n - k, used == k);
                    return;
                }
            }
            if (c->dead) return;
            if (used < k && !buf_append(&c->rx, p + used, k - used)) {
                conn_abort(c, E_OUTOFMEMORY);
                return;
            }
        } else if (!buf_append(&c->rx, p, k)) {
            conn_abort(c, E_OUTOFMEMORY);
            return;
        }
        p += k;
        n -= k;
        c->frame_left -= (unsigned)k;
        if (!c->frame_left) c->fhdr_len = 0;
        /* dispatch every complete message */
        while (!c->dead && !c->in_divert && buf_used(&c->rx) >= 4) {
            const uint8_t *mp = c->rx.p + c->rx.off;
            size_t sz = get32(mp), have = buf_used(&c->rx);
            if (sz < MSG_HDR || sz > conn_msg_limit(c)) { conn_abort(c, PEER_E_PROTOCOL_ERROR); return; }
            if (have < sz) {
                /* A big PT2PT whose header is here: the rest bypasses rx. */
                if (sz >= PT2PT_DIVERT_MIN && have >= 28 && c->state == CS_CONNECTED && mp[4] == PEER_VERSION_BYTE &&
                    mp[5] == MT_PT2PT && get16(mp + 8) <= have) {
                    unsigned doff = pt2pt_begin(c, mp, sz, have);
                    if (!doff) return;
                    c->in_divert = 1;
                    pt2pt_data(c, mp + doff, have - doff);
                    buf_consume(&c->rx, have);
                }
                break;
            }
            conn_dispatch(c, mp, sz);
            if (c->dead) return;
            buf_consume(&c->rx, sz);
            if (c->state == CS_TLS) { feed_to_tls(c, p, n, 1); return; }
        }
    }
}

/* The remote ended its stream (TCP FIN, or TLS close_notify). */
static void conn_on_eof(pg_conn *c)
{
    if (c->state == CS_CLOSING) conn_kill(c);
    else conn_abort(c, c->state == CS_CONNECTED ? PEER_E_CONNECTION_FAILED
                       : c->outbound ? PEER_E_CONNECTION_NOT_AUTHENTICATED : S_OK);
}

/* Reads what is there (bounded per call so one busy peer cannot starve the
 * others).  A TLS connection's bytes go through the TLS layer first. */
static void conn_on_readable(pg_conn *c, int drain)
{
    static uint8_t buf[65536]; /* single-threaded library: one read buffer */
    size_t total = 0;
    while (!c->dead && total < 262144) {
        long k;
        if (c->state == CS_CONNECTED && c->graph && c->graph->rx_paused) break; /* host behind on events */
        k = SHIM->pfnRecv(SHIM->pvContext, c->s, buf, sizeof buf);
        if (k == PEER_NET_WOULDBLOCK) break;
        if (k == 0) { /* orderly end of stream */
            conn_on_eof(c);
            return;
        }
        if (k < 0) {
            if (c->state == CS_CLOSING) conn_kill(c);
            else conn_abort(c, PEER_E_CONNECTION_FAILED);
            return;
        }
        total += (size_t)k;
        L.rx_reads++;
        c->last_rx = L.now;
        if (c->tls) tls_input(c, buf, (size_t)k);
        else conn_feed(c, buf, (size_t)k);
        /* With readiness from the host (level-triggered), a short read means
         * drained for now: the socket is reported again if more arrives. */
        if (!drain && (size_t)k < sizeof buf) break;
    }
}

/* TCP connect finished (or failed) for an outbound connection. */
/* An outbound handshake's time limit: the spec's `ms`, or in the fast
 * profile the dead time (a node that does not answer within it is as good
 * as dead, and refilling must not wait minutes on it). */
static ULONGLONG conn_handshake_ms(const pg_conn *c, ULONGLONG ms)
{
    const pg_graph *g = c->graph;
    if (g && g->profile == PEER_MAINTENANCE_FAST && ms > g->timers.ulDeadMs) ms = g->timers.ulDeadMs;
    return ms;
}

static void conn_on_connect_result(pg_conn *c)
{
    HRESULT hr = SHIM->pfnConnectResult(SHIM->pvContext, c->s);
    if (hr == S_FALSE) return;
    if (FAILED(hr)) { conn_abort(c, hr); return; }
    send_auth_info(c);
    if (c->dead) return;
    if (c->graph->sec && c->graph->sec->kind != SEC_NONE) {
        /* secured: AUTH_INFO in the clear, then the TLS handshake (its
         * timer is the authentication timer set when the connect began) */
        if (!tls_start(c, c->graph->sec, 0)) { conn_abort(c, E_OUTOFMEMORY); return; }
        if (!buf_append(&c->tls->out, c->tx.p + c->tx.off, buf_used(&c->tx))) { conn_abort(c, E_OUTOFMEMORY); return; }
        buf_consume(&c->tx, buf_used(&c->tx));
        tls_process(c); /* ClientHello */
        if (!c->dead) conn_try_send(c);
        return;
    }
    /* null security: authenticated as soon as AUTH_INFO is out */
    send_connect(c, 0);
    if (c->dead) return;
    c->state = CS_CONNECT_SENT;
    conn_set_deadline(c, L.now + conn_handshake_ms(c, PEER_CONNECT_TIMER_MS));
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
    if (SHIM->pfnConnectFrom && g->listener && !addr_is_unspecified(&g->listener->bound)) {
        SOCKADDR_IN6 from = g->listener->bound; /* leave from the address we listen on */
        addr_set_port(&from, 0);
        hr = SHIM->pfnConnectFrom(SHIM->pvContext, &from, a, &s);
    } else
        hr = SHIM->pfnConnect(SHIM->pvContext, a, &s);
    if (FAILED(hr)) {
        /* reported as an event at the next service, like any failure */
        c->close_reason = hr;
        conn_set_deadline(c, L.now);
    } else {
        c->s = s;
        conn_touch(c);
        if (!sock_put(s, c)) {
            SHIM->pfnClose(SHIM->pvContext, s);
            c->s = PEER_INVALID_SOCKET;
            conn_kill(c);
            *phr = E_OUTOFMEMORY;
            return NULL;
        }
        conn_set_deadline(c, L.now + conn_handshake_ms(c, auth_timer_ms(graph_conn_count(g, 0) - 1)));
        c->poke = 1; /* check the connect at the next service even without readiness */
        conn_attend(c);
    }
    g->used_network = 1;
    *phr = S_OK;
    return c;
}

/* ========================================================================= */
/* 9c. Presence, nodes and graph maintenance                                 */
/* A node is known to the others by its Presence record (node ID, attribute  */
/* string, listening addresses; autorefreshed).  NODE_CHANGED events follow  */
/* the presence records of other nodes as they arrive, change, are deleted   */
/* or expire.  Graph maintenance ([MS-PPGRH] 3.1.7.16) runs on its timer     */
/* and on triggers (listening, first WELCOME, a neighbor link lost): presence */
/* maintenance, then connection maintenance: below the minimum (or below the  */
/* ideal count on the timer) connect to a random known node; above the ideal  */
/* count on the timer drop the least useful link.  Then the Signature       */
/* record (lowest node ID), Contact records (Cmin..Cmax), partition repair   */
/* and, in the fast profile, DEPARTED with its departed index (PROTOCOL.md   */
/* P10-P13).  Candidates come from the presence index and the referrals.     */
/* ========================================================================= */

static const GUID GUID_PRESENCE_TYPE_G = {0x00000400, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};

typedef struct presence_view {
    ULONGLONG node;
    const uint8_t *attrs;   /* UTF-16 units incl. NUL, or NULL */
    uint32_t n_attrs;
    uint32_t n_addrs;
    const uint8_t *addrs;   /* 32 bytes each */
} presence_view;


static int presence_parse(const rec_view *v, presence_view *pv)
{
    const uint8_t *p = v->data;
    size_t n = v->n_data, i = 12;
    if (n < 16) return 0;
    pv->node = get64(p);
    pv->n_attrs = get32(p + 8);
    if (pv->n_attrs > (n - 12) / 2 || pv->n_attrs > 65536) return 0;
    pv->attrs = pv->n_attrs ? p + 12 : NULL;
    if (pv->n_attrs && !u16_valid(pv->attrs, pv->n_attrs)) return 0;
    i += 2 * (size_t)pv->n_attrs;
    if (n - i < 4) return 0;
    pv->n_addrs = get32(p + i);
    i += 4;
    if (pv->n_addrs > (n - i) / 32) return 0;
    pv->addrs = p + i;
    return i + 32 * (size_t)pv->n_addrs == n;
}

/* PEER_ADDRESS on the wire (PROTOCOL.md P1): size 0x20, family 0x0017, port,
 * flow info (big-endian), the 16 address bytes, 4 zero bytes. */
static void peer_addr_put(uint8_t *p, const SOCKADDR_IN6 *a)
{
    put32(p, 0x20);
    put16(p + 4, 0x0017);
    memcpy(p + 6, &a->sin6_port, 2);
    put32(p + 8, 0);
    memcpy(p + 12, a->sin6_addr.s6_addr, 16);
    put32(p + 28, 0);
}
static int peer_addr_get(const uint8_t *p, SOCKADDR_IN6 *a)
{
    if (get32(p) != 0x20 || get16(p + 4) != 0x0017) return 0;
    addr_make(a, p + 12, get16(p + 6));
    return 1;
}

/* Where others can reach us: the bound address, or when bound to [::] the
 * local addresses of our neighbor links (with the listening port), else
 * [::1]. */
static ULONG presence_addrs(const pg_graph *g, SOCKADDR_IN6 *out, ULONG max)
{
    const pg_conn *c;
    ULONG n = 0, i;
    if (!g->listener || !max) return 0;
    if (!addr_is_unspecified(&g->listener->bound)) { out[0] = g->listener->bound; return 1; }
    for (c = g->conns; c && n < max; c = c->gnext) {
        SOCKADDR_IN6 a;
        if (c->dead || c->state != CS_CONNECTED || c->s == PEER_INVALID_SOCKET || !local_listen_addr(g, c, &a)) continue;
        if (addr_is_unspecified(&a)) continue;
        for (i = 0; i < n && !addr_eq(&out[i], &a); i++) {}
        if (i == n) out[n++] = a;
    }
    if (!n) {
        static const uint8_t lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
        addr_make(&out[0], lo, addr_port(&g->listener->bound));
        n = 1;
    }
    return n;
}

/* Our live presence record, if any. */
static pg_rec *presence_own(const pg_graph *g)
{
    pg_rec *r = g->have_presence_id ? rec_find(g, g->presence_id) : NULL;
    if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= peer_time(g)) return NULL;
    return r;
}

#define PRESENCE_MAX_ADDRS 16

static HRESULT presence_publish(pg_graph *g)
{
    SOCKADDR_IN6 a[PRESENCE_MAX_ADDRS];
    ULONG na = presence_addrs(g, a, PRESENCE_MAX_ADDRS), i;
    uint32_t nattr = g->node_attrs ? u16_units(g->node_attrs) : 0;
    size_t n = 8 + 4 + 2 * (size_t)nattr + 4 + 32 * (size_t)na, len;
    uint8_t *p = (uint8_t *)pg_alloc(n), type[16], *wire;
    pg_rec *old = g->have_presence_id ? rec_find(g, g->presence_id) : NULL;
    uint64_t now = peer_time(g), life = (g->presence_lifetime ? g->presence_lifetime : 300) * FT_SECOND;
    PEER_DATA d;
    HRESULT hr;
    if (!p) return E_OUTOFMEMORY;
    put64(p, g->node_id);
    put32(p + 8, nattr);
    if (nattr) u16_write(p + 12, g->node_attrs);
    put32(p + 12 + 2 * (size_t)nattr, na);
    for (i = 0; i < na; i++) peer_addr_put(p + 16 + 2 * (size_t)nattr + 32 * i, &a[i]);
    d.cbData = (ULONG)n;
    d.pbData = p;
    guid_put(type, &GUID_PRESENCE_TYPE_G);
    if (!g->have_presence_id) { rec_new_id(g->peer_id, g->presence_id); g->have_presence_id = 1; }
    if (old) {
        rec_view v;
        rec_view_of(g, old, &v);
        wire = rec_build(g, type, g->presence_id, v.version + 1, RF_AUTOREFRESH, g->peer_id, g->peer_id, NULL, v.created,
                         now + life, now > v.modified ? now : v.modified + 1, &d, NULL, &len);
    } else
        wire = rec_build(g, type, g->presence_id, 1, RF_AUTOREFRESH, g->peer_id, NULL, NULL, now, now + life, now, &d,
                         NULL, &len);
    pg_free(p);
    if (!wire) return E_OUTOFMEMORY;
    hr = graph_publish(g, wire, len);
    pg_free(wire);
    return hr;
}

/* Deletes our presence record (leaving, or no longer listening). */
static void presence_delete(pg_graph *g)
{
    pg_rec *old = presence_own(g);
    rec_view v;
    uint8_t *wire;
    size_t len;
    PEER_DATA d;
    uint64_t now = peer_time(g);
    if (!old) return;
    rec_view_of(g, old, &v);
    d.cbData = 0; /* a deleted record carries no payload */
    d.pbData = NULL;
    wire = rec_build(g, v.type, v.id, v.version + 1, RF_DELETED, g->peer_id, g->peer_id, NULL, v.created, v.expires,
                     now > v.modified ? now : v.modified + 1, &d, NULL, &len);
    if (wire) graph_publish(g, wire, len);
    pg_free(wire);
}

/* Does our presence record say what it should (addresses, attributes)? */
static int presence_current(const pg_graph *g, const pg_rec *r)
{
    rec_view v;
    presence_view pv;
    SOCKADDR_IN6 a[PRESENCE_MAX_ADDRS];
    ULONG na = presence_addrs(g, a, PRESENCE_MAX_ADDRS), i;
    if (!rec_view_of(g, r, &v) || !presence_parse(&v, &pv) || pv.n_addrs != na) return 0;
    if (g->node_attrs ? !(pv.attrs && u16_eq(pv.attrs, pv.n_attrs, g->node_attrs)) : pv.attrs != NULL) return 0;
    for (i = 0; i < na; i++) {
        uint8_t w[32];
        peer_addr_put(w, &a[i]);
        if (memcmp(w, pv.addrs + 32 * i, 32)) return 0;
    }
    return 1;
}

static ULONG presence_count(const pg_graph *g)
{
    uint64_t now = peer_time(g);
    ULONG n = 0;
    size_t i;
    for (i = 0; i < rec_span(g); i++) {
        const pg_rec *r = rec_at(g, i);
        if (r)
            if (rec_is_presence(rec_type(g, r)) && !(r->flags & RF_DELETED) && !rec_departed(r) && rec_expires(r) > now) n++;
    }
    return n;
}

/* Presence maintenance ([MS-PPGRH] 3.1.7.17, digest 5.19); `timer`: the
 * Presence timer fired. */
static void presence_maintain(pg_graph *g, int timer)
{
    pg_rec *own = presence_own(g);
    ULONG max = g->presence_max;
    if (!g->synchronized) return; /* nothing to publish into yet */
    if (own && !g->listener) { presence_delete(g); return; }
    if (!g->listener) return;
    if (!own && (max == (ULONG)-1 || g->force_presence)) { presence_publish(g); return; }
    if (own && !presence_current(g, own)) { presence_publish(g); return; } /* addresses or attributes changed */
    if (max != 0 && max != (ULONG)-1 && !g->force_presence) {
        ULONG n = presence_count(g);
        int act = (own && n > max + 10) || (!own && n < max);
        if (!act) return;
        if (timer) {
            if (own) presence_delete(g);
            else presence_publish(g);
        } else if (g->presence_deadline == PEER_NO_DEADLINE) {
            g->presence_deadline = L.now + 30000 + random64() % 150001; /* uniform 30..180 s */
            wake_at(g->presence_deadline);
        }
    }
}

/* NODE_CHANGED for a presence record of another node that changed: ct is
 * the record change (added, updated, deleted, expired). */
static void node_event(pg_graph *g, PEER_RECORD_CHANGE_TYPE ct, const rec_view *v)
{
    PEER_GRAPH_EVENT_DATA e;
    presence_view pv;
    wchar_t *peer;
    if (!presence_parse(v, &pv)) return;
    if (pv.node == g->node_id) return; /* our own record: see SetNodeAttributes */
    memset(&e, 0, sizeof e);
    e.eventType = PEER_GRAPH_EVENT_NODE_CHANGED;
    e.nodeChangeData.dwSize = sizeof e.nodeChangeData;
    e.nodeChangeData.changeType = ct == PEER_RECORD_ADDED     ? PEER_NODE_CHANGE_CONNECTED
                                  : ct == PEER_RECORD_UPDATED ? PEER_NODE_CHANGE_UPDATED
                                                              : PEER_NODE_CHANGE_DISCONNECTED;
    e.nodeChangeData.ullNodeId = pv.node;
    peer = u16_dup(v->creator, v->n_creator);
    emit(g, &e, NULL, peer);
    pg_free(peer);
    /* a node we could connect to appeared while we are short of neighbors */
    if (ct == PEER_RECORD_ADDED && g->n_neighbors_ever && graph_conn_count(g, 1) < PEER_MIN_NEIGHBORS)
        graph_schedule_maintenance(g);
}

/* Called by graph_store / graph_expire for every presence record change. */
/* Forgets the referrals to a's address (a node that left or died): refilling
 * the neighbor set should not begin with a dead address. */
static void referral_forget(pg_graph *g, const SOCKADDR_IN6 *a)
{
    ULONG i;
    for (i = 0; i < g->n_refs; i++)
        if (addr_eq(&g->refs[i].addr, a)) { g->refs[i] = g->refs[--g->n_refs]; return; }
}

/* The same for every address of a presence that went away. */
static void referrals_forget_presence(pg_graph *g, const presence_view *pv)
{
    uint32_t k;
    for (k = 0; k < pv->n_addrs; k++) {
        SOCKADDR_IN6 x;
        if (peer_addr_get(pv->addrs + 32 * (size_t)k, &x)) referral_forget(g, &x);
    }
}

/* Nodes whose presence expired without a refresh: crashed, or across a
 * split.  After a split whose parts also lost every contact from the
 * other side (contacts published after the split, the earlier holders
 * gone), the presence records were the last thing either part knew of the
 * other, and once they expire nothing in the protocol joins the parts:
 * MS-PPGRH leaves it to the application (long-term repair).  We keep the
 * last LOST_MAX such addresses (a random one replaced when full) and try
 * one, once each: at long-term repair (a contact holder, or a node left
 * alone), and when connection maintenance has no other candidate
 * (PROTOCOL.md P16).  A crashed node's address costs one refused attempt. */
static const pg_rec *presence_of_node(const pg_graph *g, ULONGLONG node, rec_view *v, presence_view *pv);
static void lost_add(pg_graph *g, const presence_view *pv)
{
    SOCKADDR_IN6 a;
    rec_view v2;
    presence_view pv2;
    ULONG i;
    if (pv->node == g->node_id || !pv->n_addrs || !peer_addr_get(pv->addrs, &a)) return;
    if (presence_of_node(g, pv->node, &v2, &pv2)) return; /* another presence of it is live */
    for (i = 0; i < g->n_lost; i++)
        if (addr_eq(&g->lost[i], &a)) return;
    if (g->n_lost < LOST_MAX) g->lost[g->n_lost++] = a;
    else g->lost[fast_random64() % LOST_MAX] = a;
}

/* A presence of a node at a lost address came back: it is an ordinary
 * candidate again. */
static void lost_forget(pg_graph *g, const presence_view *pv)
{
    SOCKADDR_IN6 a;
    ULONG i;
    if (!pv->n_addrs || !peer_addr_get(pv->addrs, &a)) return;
    for (i = 0; i < g->n_lost; i++)
        if (addr_eq(&g->lost[i], &a)) { g->lost[i] = g->lost[--g->n_lost]; return; }
}

typedef struct cand { SOCKADDR_IN6 a; const pg_rec *rec; int ref; ULONGLONG node; } cand; /* rec: the peer ID's record */
static pg_conn *cand_connect(pg_graph *g, const cand *x);
static int conn_to_addr_exists(const pg_graph *g, const SOCKADDR_IN6 *a, ULONGLONG node);
static int addr_of_departed(const pg_graph *g, const SOCKADDR_IN6 *a);
static int addr_is_own_listener(const pg_graph *g, const SOCKADDR_IN6 *a);

/* Starts a connection to one lost address (taken off the list; `repair`:
 * as a partition-repair attempt); 1 if one was started. */
static int lost_try(pg_graph *g, int repair)
{
    while (g->n_lost) {
        ULONG k = (ULONG)(fast_random64() % g->n_lost);
        cand x;
        pg_conn *nc;
        memset(&x, 0, sizeof x);
        x.a = g->lost[k];
        g->lost[k] = g->lost[--g->n_lost];
        if (conn_to_addr_exists(g, &x.a, 0) || addr_of_departed(g, &x.a) || addr_is_own_listener(g, &x.a)) continue;
        if ((nc = cand_connect(g, &x)) == NULL) return 0;
        nc->repair = repair;
        return 1;
    }
    return 0;
}

static void presence_record_changed(pg_graph *g, PEER_RECORD_CHANGE_TYPE ct, const rec_view *v)
{
    presence_view pv;
    int parsed = (ct == PEER_RECORD_DELETED || ct == PEER_RECORD_EXPIRED) && presence_parse(v, &pv);
    if (parsed && g->n_refs) referrals_forget_presence(g, &pv);
    if (parsed && ct == PEER_RECORD_EXPIRED) lost_add(g, &pv);
    if (ct == PEER_RECORD_ADDED && g->n_lost && presence_parse(v, &pv)) lost_forget(g, &pv);
    node_event(g, ct, v);
}

static void graph_poke_maintenance(pg_graph *g)
{
    g->maint_due = 1;
    graph_poke(g);
}

/* --- the departed index: the presence records marked departed (a set, so
 * the replay to a new link and partition repair visit only them) and their
 * addresses (so a referral to a dead node is skipped without a scan) --- */
static uint64_t addr_key(const SOCKADDR_IN6 *a)
{
    uint64_t h = 1469598103934665603ULL;
    unsigned i, port = addr_port(a);
    for (i = 0; i < 16; i++) h = (h ^ a->sin6_addr.s6_addr[i]) * 1099511628211ULL;
    h = (h ^ (port & 0xFF)) * 1099511628211ULL;
    h = (h ^ (port >> 8)) * 1099511628211ULL;
    return h ? h : 1;
}

/* Adds (+1) or removes (-1) one count per address of presence pv; 0 if out
 * of memory on adding (what was added is taken back). */
static int dep_addrs_adjust(pg_graph *g, const presence_view *pv, int delta, uint32_t upto)
{
    uint32_t k;
    for (k = 0; k < pv->n_addrs && k < upto; k++) {
        SOCKADDR_IN6 x;
        uint64_t key;
        uintptr_t n;
        if (!peer_addr_get(pv->addrs + 32 * (size_t)k, &x)) continue;
        key = addr_key(&x);
        n = (uintptr_t)map_get(&g->dep_addrs, key);
        if (delta > 0) {
            if (!map_put(&g->dep_addrs, key, (void *)(n + 1))) {
                dep_addrs_adjust(g, pv, -1, k);
                return 0;
            }
        } else {
            map_del(&g->dep_addrs, key);
            if (n > 1) map_put(&g->dep_addrs, key, (void *)(n - 1)); /* just freed a slot: no allocation */
        }
    }
    return 1;
}

/* r (a presence, just marked departed) joins the index; out of memory it
 * stays unindexed: its addresses may then be tried, and a new link does not
 * hear of it. */
static void departed_index(pg_graph *g, pg_rec *r, const presence_view *pv)
{
    if (r->flags & RF_DEP_INDEXED) return;
    set_add(&g->departed, r);
    if (map_get(&g->departed, rec_key(r)) != r) return;
    if (!dep_addrs_adjust(g, pv, +1, UINT32_MAX)) { set_del(&g->departed, r); return; }
    r->flags |= RF_DEP_INDEXED;
}

static void departed_unindex(pg_graph *g, const pg_rec *r)
{
    rec_view v;
    presence_view pv;
    set_del(&g->departed, r);
    if (rec_view_of(g, r, &v) && presence_parse(&v, &pv)) dep_addrs_adjust(g, &pv, -1, UINT32_MAX);
}

static const pg_rec *presence_of_node(const pg_graph *g, ULONGLONG node, rec_view *v, presence_view *pv);

/* DEPARTED entries going to one neighbor are gathered into one message
 * (PROTOCOL.md section 4: one or more 12-byte entries), sent when the
 * current phase of the service call flushes its output (flush_dirty): a
 * mass death otherwise costs one message per dead node per link, about
 * a million at N = 1000 with half the nodes killed, and the loop that
 * carries them starves the handshakes that repair the graph. */
#define DEP_ENTRY 12
#define DEP_BATCH 1024        /* entries per message we send */
#define DEP_MAX_ENTRIES 4096  /* entries per message we accept */

/* Messages gathered entry by entry (DEPARTED, RENEW, WANT): the buffer
 * holds an 8-byte header, written when the message goes, then the
 * entries.  0 if out of memory. */
static int held_add(pg_buf *b, const uint8_t *e, size_t n)
{
    static const uint8_t hdr[8] = {0};
    return (buf_used(b) || buf_append(b, hdr, 8)) && buf_append(b, e, n);
}

/* The gathered message goes to c (if any entry is held); the buffer is freed. */
static void held_send(pg_conn *c, pg_buf *b, int type)
{
    size_t n = buf_used(b);
    uint8_t *m = b->p + b->off;
    if (!n) return;
    msg_header(m, n, type);
    if (!c->dead) conn_send(c, m, n);
    buf_consume(b, n);
}

static void conn_queue_departed(pg_conn *c, ULONGLONG node, uint32_t ver)
{
    uint8_t e[DEP_ENTRY];
    if (c->dead || c->state == CS_CLOSING) return;
    put64(e, node);
    put32(e + 8, ver);
    if (!held_add(&c->deps, e, DEP_ENTRY)) { conn_abort(c, E_OUTOFMEMORY); return; }
    if (buf_used(&c->deps) >= 8 + DEP_ENTRY * DEP_BATCH) conn_flush_departed(c);
    else conn_mark_dirty(c);
}

static void conn_flush_departed(pg_conn *c) { held_send(c, &c->deps, MT_DEPARTED); }

/* Fast profile: `node` was found dead (by us, or by the neighbor `from`).
 * Its presence stops counting here (NODE_CHANGED DISCONNECTED) and the news
 * goes on to our fast neighbors; a node that hears it about itself answers
 * with a fresh presence.  A node we still have a link to is not dead. */
static void graph_node_departed(pg_graph *g, ULONGLONG node, uint32_t ver, const pg_conn *from)
{
    rec_view v;
    presence_view pv;
    pg_rec *r;
    pg_conn *c;
    if (node == g->node_id) { /* we are alive: say so, once per version */
        pg_rec *own = presence_own(g);
        if (own && rec_version(own) <= ver) presence_publish(g);
        return;
    }
    r = (pg_rec *)presence_of_node(g, node, &v, &pv);
    if (r && rec_version(r) > ver) return; /* about an older presence: already answered */
    if (r && ver == DEPARTED_ANY) ver = rec_version(r);
    for (c = g->conns; c; c = c->gnext)
        if (c != from && !c->dead && c->state == CS_CONNECTED && !c->direct && c->remote_node == node) {
            if (c->ext & EXT_FAST) conn_queue_departed(c, node, ver); /* alive to us: let it answer for itself */
            return;
        }
    if (!r) return; /* unknown, or already gone: the news stops here */
    r->flags |= RF_DEPARTED;
    departed_index(g, r, &pv);
    referrals_forget_presence(g, &pv);
    if (g->sig_low == node) { /* no longer holds anyone back (P15), nor names our contact (contact_sig) */
        g->sig_low = 0;
        graph_poke_contacts(g);
    }
    if (g->sig_last == node) { g->sig_dead = 1; signature_calc(g); } /* the signature node: elect another */
    node_event(g, PEER_RECORD_DELETED, &v);
    for (c = g->conns; c; c = c->gnext)
        if (c != from && !c->dead && c->state == CS_CONNECTED && !c->direct && (c->ext & EXT_FAST))
            conn_queue_departed(c, node, ver);
}

/* DEPARTED: 16 bytes (one node ID: its current presence), or 8 + 12 k bytes
 * (k entries of node ID + presence version, 1 <= k <= DEP_MAX_ENTRIES);
 * anything else is a protocol error. */
static void on_departed(pg_conn *c, const uint8_t *m, size_t size)
{
    size_t i;
    if (!(c->ext & EXT_FAST) || c->direct ||
        (size != 16 && (size < 8 + DEP_ENTRY || (size - 8) % DEP_ENTRY || (size - 8) / DEP_ENTRY > DEP_MAX_ENTRIES))) {
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    }
    if (size == 16) { graph_node_departed(c->graph, get64(m + 8), DEPARTED_ANY, c); return; }
    for (i = 8; i < size && !c->dead && c->graph; i += DEP_ENTRY) graph_node_departed(c->graph, get64(m + i), get32(m + i + 8), c);
}

/* --- RENEW and WANT (P19): renewals that ride along ---
 * Every record renewed before it expires (presence, contacts, Graph Info,
 * the Signature record, an application's own) gets a new version in which
 * only the times move.  Between fast nodes such a version travels as a
 * 44-byte RENEW entry (record ID, the version it renews, its version, a
 * flag for Last Modified By, last modified, expiry) instead of a FLOOD of the whole record, and it is held
 * like an ACK entry: it rides in the next write that goes to that neighbor
 * anyway, or goes in place of the keepalive, so a renewal adds bytes to
 * writes that happen anyway and no write of its own.  A receiver holding
 * the renewed version rebuilds the new one from it and takes it like a
 * FLOOD (validation, the application's validator, store, events, relay);
 * one that holds another version asks for the record (WANT) and gets it
 * as a FLOOD. */
#define RENEW_ENTRY 44
#define RENEW_MODBY_CREATOR 0x01 /* entry flag: Last Modified By is the creator ID (else as in the renewed version) */
#define RENEW_BATCH 256          /* entries held per link before they go at once */
#define RENEW_MAX_ENTRIES 1024   /* entries per RENEW or WANT we accept */
#define WANT_ENTRY 16

/* Does link c take RENEW entries? (Both ends run the fast profile; the
 * entries wait for the keepalive, so only a link that keeps alive.) */
static int conn_renews(const pg_conn *c)
{
    return (c->ext & EXT_FAST) && conn_keeps_alive(c);
}

static void conn_queue_renew(pg_conn *c, const pg_rec *r, uint32_t base)
{
    uint8_t e[RENEW_ENTRY];
    rec_view v;
    size_t i, n = buf_used(&c->renews);
    uint8_t *held = c->renews.p + c->renews.off;
    if (c->dead || c->state == CS_CLOSING || !rec_view_of(c->graph, r, &v)) return;
    for (i = 8; i < n; i += RENEW_ENTRY)
        if (!memcmp(held + i, v.id, 16)) {
            if (get32(held + i + 20) != base) break; /* (cannot be: every version of it went through here) */
            /* the held entry's version was not sent: this one renews the version it renewed */
            base = get32(held + i + 16);
            memmove(held + i, held + i + RENEW_ENTRY, n - i - RENEW_ENTRY);
            c->renews.len -= RENEW_ENTRY;
            break;
        }
    memcpy(e, v.id, 16);
    put32(e + 16, base);
    put32(e + 20, v.version);
    put32(e + 24, rec_modby_creator(&v) ? RENEW_MODBY_CREATOR : 0);
    put64(e + 28, v.modified);
    put64(e + 36, v.expires);
    if (!held_add(&c->renews, e, RENEW_ENTRY)) { conn_abort(c, E_OUTOFMEMORY); return; }
    if (buf_used(&c->renews) >= 8 + RENEW_ENTRY * RENEW_BATCH) conn_flush_renews(c);
}

/* Record id came on c at version ver: a renewal held for c at that version
 * or an older one is no news to it any more. */
static void conn_renew_cancel(pg_conn *c, const uint8_t *id, uint32_t ver)
{
    uint8_t *p = c->renews.p + c->renews.off;
    size_t n = buf_used(&c->renews), i;
    for (i = 8; i < n; i += RENEW_ENTRY) {
        if (memcmp(p + i, id, 16) || get32(p + i + 20) > ver) continue;
        memmove(p + i, p + i + RENEW_ENTRY, n - i - RENEW_ENTRY);
        c->renews.len -= RENEW_ENTRY;
        if (buf_used(&c->renews) <= 8) buf_consume(&c->renews, buf_used(&c->renews));
        return; /* (one entry per record: conn_queue_renew merges) */
    }
}

static void conn_flush_renews(pg_conn *c) { held_send(c, &c->renews, MT_RENEW); }

/* RENEW: 8 + 44 k bytes, 1 <= k <= RENEW_MAX_ENTRIES, each entry's version
 * above the one it renews and no flag but RENEW_MODBY_CREATOR; anything else is a protocol error.  Entries
 * whose base we do not hold are asked for in one WANT. */
static void on_renew(pg_conn *c, const uint8_t *m, size_t size)
{
    pg_graph *g = c->graph;
    pg_buf want = {0}, wire = {0};
    size_t i;
    if (c->direct || !g || size < 8 + RENEW_ENTRY || (size - 8) % RENEW_ENTRY ||
        (size - 8) / RENEW_ENTRY > RENEW_MAX_ENTRIES) {
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    }
    for (i = 8; i < size; i += RENEW_ENTRY)
        if (get32(m + i + 16) == 0 || get32(m + i + 20) <= get32(m + i + 16) || (get32(m + i + 24) & ~RENEW_MODBY_CREATOR)) {
            conn_abort(c, PEER_E_PROTOCOL_ERROR);
            return;
        }
    for (i = 8; i < size && !c->dead && c->graph; i += RENEW_ENTRY) {
        const uint8_t *e = m + i;
        uint32_t base = get32(e + 16), ver = get32(e + 20);
        pg_rec *local = rec_find(g, e);
        rec_view lv, v;
        int useful;
        if (buf_used(&c->renews)) conn_renew_cancel(c, e, ver); /* it has it: our renewal for it is no news */
        if (local && rec_version(local) > ver) { /* ours is newer: back it goes, as for a FLOOD */
            if (g->fwd_n) fwd_note(g, e, c);
            conn_flood_record(c, local);
            continue;
        }
        if (local && rec_version(local) == ver && rec_view_of(g, local, &lv) && lv.modified == get64(e + 28) &&
            lv.expires == get64(e + 36)) { /* this version: a duplicate */
            if (g->fwd_n) fwd_note(g, e, c);
            continue;
        }
        /* neither the renewed version nor this one (a version of the same
         * number made elsewhere is settled by conflict order on the FLOOD) */
        if (!local || rec_version(local) != base || !rec_view_of(g, local, &lv)) {
            if (!held_add(&want, e, WANT_ENTRY)) break; /* no memory: what it asks for comes later */
            continue;
        }
        v = lv; /* (no wide strings are written: rec_wire_of reads them where lv points) */
        v.version = ver;
        if (get32(e + 24) & RENEW_MODBY_CREATOR) {
            v.modby = lv.creator;
            v.n_modby = lv.n_creator;
        }
        v.modified = get64(e + 28);
        v.expires = get64(e + 36);
        if (!rec_wire_of(&v, &wire)) break; /* no memory: a later renewal or sync brings it */
        if (!rec_parse(wire.p, wire.len, &v) || !rec_validate(g, &v, peer_time(g))) {
            g->rejected_records++; /* a bad time: dropped, the link stays (as a FLOOD's record) */
            continue;
        }
        record_in(g, c, wire.p, wire.len, &v, &useful);
        conn_utility(c, useful);
    }
    buf_free(&wire);
    if (buf_used(&want) > 8) held_send(c, &want, MT_WANT);
    buf_free(&want);
}

/* WANT: 8 + 16 k bytes, 1 <= k <= RENEW_MAX_ENTRIES record IDs; each one we
 * hold goes back as a FLOOD. */
static void on_want(pg_conn *c, const uint8_t *m, size_t size)
{
    size_t i;
    if (c->direct || !c->graph || size < 8 + WANT_ENTRY || (size - 8) % WANT_ENTRY ||
        (size - 8) / WANT_ENTRY > RENEW_MAX_ENTRIES) {
        conn_abort(c, PEER_E_PROTOCOL_ERROR);
        return;
    }
    for (i = 8; i < size && !c->dead && c->graph; i += WANT_ENTRY) {
        const pg_rec *r = rec_find(c->graph, m + i);
        if (r && !conn_flood_record(c, r)) break;
    }
}

/* A new fast link hears every departure we hold (presence records still
 * live but marked): after a split heals, each part learns what the other
 * believed, and a node believed dead that is alive answers for itself. */
static void departed_replay(pg_conn *c)
{
    pg_graph *g = c->graph;
    uint64_t now = peer_time(g);
    size_t i;
    for (i = 0; i < map_span(&g->departed) && !c->dead; i++) { /* the departed set, not the database */
        const pg_rec *r = (const pg_rec *)map_at(&g->departed, i, NULL);
        rec_view v;
        presence_view pv;
        if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= now) continue;
        if (!rec_view_of(g, r, &v) || !presence_parse(&v, &pv) || pv.node == c->remote_node) continue;
        conn_queue_departed(c, pv.node, rec_version(r));
    }
}

/* Maintenance soon (timers.ulRetryMs), not inside the current burst. */
static void graph_schedule_maintenance(pg_graph *g)
{
    if (g->maint_retry > L.now + g->timers.ulRetryMs) g->maint_retry = L.now + g->timers.ulRetryMs;
    wake_at(g->maint_retry);
}

/* A candidate for a new neighbor: a node of a presence record or a referral
 * entry that is not us and not already connected or being connected to. */
static int conn_to_addr_exists(const pg_graph *g, const SOCKADDR_IN6 *a, ULONGLONG node)
{
    const pg_conn *c;
    for (c = g->conns; c; c = c->gnext) {
        SOCKADDR_IN6 ra;
        if (c->dead || c->direct) continue;
        if (node && c->remote_node == node) return 1;
        if (conn_reach_addr(c, &ra) && addr_eq(&ra, a)) return 1;
        if (c->outbound && addr_eq(&c->remote, a)) return 1;
    }
    return 0;
}

/* Was `node` tried within the last 10 retry periods? (A dead node's
 * presence may outlive it: pick someone else first.) */
static int recently_tried(const pg_graph *g, ULONGLONG node)
{
    unsigned i;
    for (i = 0; i < 16; i++)
        if (g->tried[i].node == node && g->tried[i].at + 10ULL * g->timers.ulRetryMs > L.now) return 1;
    return 0;
}

/* Room for one more candidate; NULL when out of memory (*cs freed then). */
/* Appends a candidate (ref: referral index + 1, or 0); 0 when out of
 * memory (the list is freed then). */
static int cand_push(cand **cs, size_t *n, size_t *cap, const SOCKADDR_IN6 *a, const pg_rec *rec, int ref, ULONGLONG node)
{
    cand *x;
    if (*n == *cap) {
        cand *nc = (cand *)pg_realloc(*cs, (*cap = *cap ? *cap * 2 : 16) * sizeof **cs);
        if (!nc) { pg_free(*cs); *cs = NULL; return 0; }
        *cs = nc;
    }
    x = *cs + (*n)++;
    x->a = *a;
    x->rec = rec;
    x->ref = ref;
    x->node = node;
    return 1;
}

/* Is a the address of a node announced departed (fast profile)?  (The
 * index; a 64-bit hash collision would only skip one referral.) */
static int addr_of_departed(const pg_graph *g, const SOCKADDR_IN6 *a)
{
    return g->dep_addrs.n && map_get(&g->dep_addrs, addr_key(a)) != NULL;
}

/* Starts the neighbor connection to candidate x; the connection, or NULL. */
static pg_conn *cand_connect(pg_graph *g, const cand *x)
{
    wchar_t *peer = NULL;
    HRESULT hr;
    pg_conn *nc = NULL;
    rec_view v;
    if (x->rec && rec_view_of(g, x->rec, &v)) peer = u16_dup(v.creator, v.n_creator);
    if (x->node) {
        g->tried[g->n_tried % 16].node = x->node;
        g->tried[g->n_tried++ % 16].at = L.now;
    }
    if (x->ref) g->refs[x->ref - 1].attempted = 1;
    if (!x->rec || peer) {
        nc = graph_start_connect(g, peer, &x->a, 0, 0, &hr);
        if (nc) nc->cand_node = x->node;
    }
    pg_free(peer);
    return nc;
}

/* Is there a neighbor link (made or in progress) with node? */
static int conn_to_node_exists(const pg_graph *g, ULONGLONG node)
{
    const pg_conn *c;
    for (c = g->conns; c; c = c->gnext)
        if (!c->dead && !c->direct && c->remote_node == node) return 1;
    return 0;
}

/* Is a our own listener (its address, or loopback at its port)? */
static int addr_is_own_listener(const pg_graph *g, const SOCKADDR_IN6 *a)
{
    SOCKADDR_IN6 la;
    return g->listener && local_listen_addr(g, NULL, &la) && addr_port(&la) == addr_port(a) &&
           (addr_is_loopback(a) || addr_eq(&la, a));
}

/* A referral we may try: not attempted, not connected, not a departed
 * node's, not our own listener. */
static int ref_eligible(const pg_graph *g, ULONG i)
{
    return !g->refs[i].attempted && !conn_to_addr_exists(g, &g->refs[i].addr, 0) &&
           !addr_of_departed(g, &g->refs[i].addr) && !addr_is_own_listener(g, &g->refs[i].addr);
}

/* Large graphs: a random candidate by probing random slots of the presence
 * index (g->pres) instead of visiting every record, which at 1000 nodes
 * made each attempt cost a pass over the database.  Each occupied slot is
 * equally likely; a referral is taken instead in proportion to the eligible
 * referrals.  Returns 1 if a connection was started, 0 if no candidate was
 * found in PROBES tries (the caller then scans). */
#define PROBE_MIN_PRESENCE 64
#define PROBES 64
static int graph_connect_probe(pg_graph *g)
{
    uint64_t now = peer_time(g);
    ULONG i, nref = 0, pick;
    cand x, stale;
    int have_stale = 0, t;
    for (i = 0; i < g->n_refs; i++) nref += (ULONG)ref_eligible(g, i);
    if (nref && random64() % (nref + g->pres.n) < nref) {
        pick = (ULONG)(random64() % nref);
        for (i = 0; i < g->n_refs; i++)
            if (ref_eligible(g, i) && !pick--) break;
        memset(&x, 0, sizeof x);
        x.a = g->refs[i].addr;
        x.ref = (int)i + 1;
        return cand_connect(g, &x) != NULL;
    }
    for (t = 0; t < PROBES; t++) {
        ULONGLONG node = 0;
        const pg_rec *r = (const pg_rec *)map_at(&g->pres, (size_t)(random64() % map_span(&g->pres)), &node);
        rec_view v;
        presence_view pv;
        SOCKADDR_IN6 a;
        if (!node || node == g->node_id || (r->flags & RF_DELETED) || rec_departed(r) || rec_expires(r) <= now) continue;
        if (conn_to_node_exists(g, node)) continue;
        if (!rec_view_of(g, r, &v) || !presence_parse(&v, &pv) || !pv.n_addrs || !peer_addr_get(pv.addrs, &a) ||
            conn_to_addr_exists(g, &a, node))
            continue;
        x.a = a;
        x.rec = r;
        x.ref = 0;
        x.node = node;
        if (!recently_tried(g, node)) return cand_connect(g, &x) != NULL;
        if (!have_stale) { stale = x; have_stale = 1; } /* tried lately: only if nothing else turns up */
    }
    return have_stale ? cand_connect(g, &stale) != NULL : 0;
}

/* Starts one connection to a random candidate; 1 if one was started. */
static int graph_connect_random(pg_graph *g)
{
    cand *cs = NULL;
    size_t n = 0, cap = 0, i;
    uint64_t now = peer_time(g);
    int started = 0;
    if (g->pres.n >= PROBE_MIN_PRESENCE && graph_connect_probe(g)) return 1;
    for (i = 0; i < rec_span(g); i++) {
        const pg_rec *r = rec_at(g, i);
        if (r) {
            rec_view v;
            presence_view pv;
            SOCKADDR_IN6 a;
            if (!rec_is_presence(rec_type(g, r)) || (r->flags & RF_DELETED) || rec_departed(r) || rec_expires(r) <= now) continue;
            if (!rec_view_of(g, r, &v) || !presence_parse(&v, &pv) || pv.node == g->node_id || !pv.n_addrs) continue;
            if (!peer_addr_get(pv.addrs, &a) || conn_to_addr_exists(g, &a, pv.node)) continue;
            if (!cand_push(&cs, &n, &cap, &a, r, 0, pv.node)) return 0;
        }
    }
    for (i = 0; i < g->n_refs; i++) {
        if (!ref_eligible(g, i)) continue;
        if (!cand_push(&cs, &n, &cap, &g->refs[i].addr, NULL, (int)i + 1, 0)) return 0;
    }
    if (n) {
        size_t k = (size_t)(random64() % n), fresh = 0, j;
        for (j = 0; j < n; j++) fresh += !cs[j].node || !recently_tried(g, cs[j].node);
        if (fresh && fresh < n) { /* the k-th candidate not tried lately */
            k = (size_t)(random64() % fresh);
            for (j = 0; j < n; j++)
                if ((!cs[j].node || !recently_tried(g, cs[j].node)) && !k--) break;
            k = j;
        }
        started = cand_connect(g, &cs[k]) != NULL;
    } else
        started = lost_try(g, 0); /* nobody else known (lost_add) */
    pg_free(cs);
    return started;
}

/* Connection maintenance ([MS-PPGRH] 3.1.7.14, digest 5.18.2). */
/* 1 when nothing more is needed or an attempt is under way. */
static int conn_maintain(pg_graph *g, int timer)
{
    pg_conn *c, *least = NULL;
    ULONG n = graph_conn_count(g, 1), pending = 0;
    for (c = g->conns; c; c = c->gnext) {
        if (c->dead || c->direct) continue;
        if (c->state == CS_CONNECTED) {
            /* fast profile: a link gets 5 maintenance periods and
             * PRUNE_EVIDENCE floods to prove useful (new links score lowest:
             * pruning them every 2 s would flap; and a score no flood has
             * moved says nothing) */
            if (g->profile == PEER_MAINTENANCE_FAST && n <= PEER_MAX_NEIGHBORS &&
                (L.now < c->connected_at + 5ULL * g->timers.ulMaintenanceMs || c->verdicts < PRUNE_EVIDENCE))
                continue;
            if (!least || c->utility < least->utility) least = c;
        } else if (c->outbound && c->state != CS_CLOSING && !c->repair)
            pending++; /* (a partition repair attempt does not hold refilling up) */
    }
    if (least && (n > PEER_MAX_NEIGHBORS ||
                  (n > PEER_IDEAL_NEIGHBORS && timer &&
                   (g->profile != PEER_MAINTENANCE_FAST ||
                    (L.now >= g->last_prune + 5ULL * g->timers.ulMaintenanceMs && g->last_verdict > g->last_prune))))) {
        /* above the maximum: at once; the fast profile prunes at most every
         * 5 maintenance periods, and only when floods came since the last
         * prune to tell links apart: a graph at rest does not churn (each
         * prune costs the pruned node a new link and a hash sync,
         * BENCHMARKS.md S12) */
        g->last_prune = L.now;
        conn_disconnect(least, DISC_LEAST_USEFUL, S_OK);
        graph_poke_maintenance(g); /* "after we disconnect a link" */
        return 1;
    }
    /* one attempt at a time; in the fast profile two below the minimum (a
     * dead node's presence may still be around, and its attempt waits),
     * and a node that lost neighbors and is below the minimum starts up to
     * FAST_PARALLEL - n together: after a mass death half the presences it
     * holds may name dead nodes it has not heard about (cut off, it hears
     * no DEPARTED), and one at a time the unlucky ones spent a loop step on
     * each (a joiner, which has lost nothing, keeps to two) */
    if (g->profile == PEER_MAINTENANCE_FAST && n < PEER_MIN_NEIGHBORS && g->n_neighbors_ever > n) {
        int any = 0;
        while (pending < FAST_PARALLEL - n && graph_connect_random(g)) pending++, any = 1;
        return any || pending;
    }
    if (pending >= (g->profile == PEER_MAINTENANCE_FAST && n < PEER_MIN_NEIGHBORS ? 2u : 1u)) return 1;
    if (n == 0 || (n < PEER_MIN_NEIGHBORS && g->n_neighbors_ever) || (n < PEER_IDEAL_NEIGHBORS && timer))
        return graph_connect_random(g);
    return 1;
}

/* --- the graph signature ([MS-PPGRH] 3.1.7.11, digest 5.16): the lowest
 * node ID, published by its owner in the one Signature record --- */
static const GUID GUID_SIGNATURE_TYPE_G = {0x00000200, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};

/* The Signature record held and its value, stale or not; NULL if absent,
 * deleted or expired. */
static pg_rec *signature_held(const pg_graph *g, ULONGLONG *sig)
{
    pg_rec *r = rec_find(g, SIGNATURE_ID);
    rec_view v;
    if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= peer_time(g) || !rec_view_of(g, r, &v) || v.n_data < 8)
        return NULL;
    *sig = get64(v.data);
    return r;
}

/* The live Signature record and its value; NULL if absent or deleted. */
static pg_rec *signature_live(const pg_graph *g, ULONGLONG *sig)
{
    pg_rec *r = signature_held(g, sig);
    if (r && *sig != g->node_id && g->timers.ulSignatureStaleMs &&
        (g->sig_dead || L.now > g->sig_rx + g->timers.ulSignatureStaleMs))
        return NULL; /* fast profile: its owner stopped renewing it, or was announced departed */
    return r;
}

/* Signature calculation: arm the Signature timer (back-off when the record
 * is absent, 0.1 s when it names a higher node than ours). */
static void signature_calc(pg_graph *g)
{
    ULONGLONG sig = 0, delay;
    if (!g->synchronized || !g->listener) return;
    if (signature_live(g, &sig)) {
        if (sig <= g->node_id) return; /* someone at least as low holds it */
        delay = 100;
    } else { /* 1 - e^(-N/65536) with N the top 8 bits, as the spec writes it */
        double n = (double)(g->node_id >> 56);
        delay = (ULONGLONG)((1.0 - exp(-n / 65536.0)) * 29900.0 + 100.0);
    }
    if (g->sig_deadline == PEER_NO_DEADLINE || g->sig_deadline > L.now + delay) {
        g->sig_deadline = L.now + delay;
        wake_at(g->sig_deadline);
    }
}

static void signature_publish(pg_graph *g, int deleted)
{
    pg_rec *old = rec_find(g, SIGNATURE_ID);
    uint8_t type[16], p[8], *wire;
    size_t len;
    uint64_t now = peer_time(g);
    PEER_DATA d;
    put64(p, g->node_id);
    d.cbData = deleted ? 0 : 8;
    d.pbData = deleted ? NULL : p;
    guid_put(type, &GUID_SIGNATURE_TYPE_G);
    /* every version names its publisher (Last Modified By): two nodes
     * publishing the same version at once then resolve the same way
     * everywhere (5.14 rule 3), and the lower one follows up */
    if (old) {
        rec_view v;
        rec_view_of(g, old, &v);
        wire = rec_build(g, type, SIGNATURE_ID, v.version + 1, deleted ? RF_DELETED : RF_AUTOREFRESH, g->peer_id, g->peer_id,
                         NULL, v.created, now + 300 * FT_SECOND, now > v.modified ? now : v.modified + 1, &d, NULL, &len);
    } else /* (modified 100 ns after created: a record naming its modifier must differ there, 3.1.7.27) */
        wire = rec_build(g, type, SIGNATURE_ID, 1, deleted ? RF_DELETED : RF_AUTOREFRESH, g->peer_id, g->peer_id, NULL, now,
                         now + 300 * FT_SECOND, now + 1, &d, NULL, &len);
    if (wire) graph_publish(g, wire, len);
    pg_free(wire);
}

/* --- the signature beat (fast profile, PROTOCOL.md P17) ---
 * Between fast nodes the owner renews its signature by a beat instead of a
 * new version of the record: a counter carried in the 2-byte keepalive
 * frame, tagged with the owner's node ID.  A node that takes a newer beat
 * of the signature it holds counts the signature renewed and passes the
 * beat on to its other fast neighbors at once; keepalives carry the beat
 * while it is fresh.  A renewal thus costs 2 bytes per link direction, not
 * a FLOOD and an ACK of the record through the whole graph. */
static uint8_t beat_tag(ULONGLONG sig) { return (uint8_t)(0x81 + sig % 126); } /* 0x81..0xFE */

static int beat_fresh(const pg_graph *g)
{
    return g->beat_at && L.now <= g->beat_at + g->timers.ulSignatureStaleMs;
}

/* A keepalive frame on fast link c, with the beat we hold if it is fresh. */
static void send_keepalive(pg_conn *c)
{
    const pg_graph *g = c->graph;
    if (beat_fresh(g)) conn_send_keepalive(c, beat_tag(g->beat_sig), g->beat);
    else conn_send_keepalive(c, KA_NO_BEAT, 0);
}

/* A neighbor link that carries beats (both sides run the fast profile). */
static int conn_beats(const pg_conn *c)
{
    return !c->dead && c->state == CS_CONNECTED && !c->direct && (c->ext & EXT_FAST) && c->graph &&
           c->graph->profile == PEER_MAINTENANCE_FAST;
}

/* Every neighbor link of g carries beats: the owner may renew by beat. */
static int graph_links_beat(const pg_graph *g)
{
    const pg_conn *c;
    if (g->profile != PEER_MAINTENANCE_FAST) return 0;
    for (c = g->conns; c; c = c->gnext)
        if (!c->dead && !c->direct && c->state == CS_CONNECTED && !conn_beats(c)) return 0;
    return 1;
}

static void beat_send_all(pg_graph *g, const pg_conn *except)
{
    pg_conn *c;
    for (c = g->conns; c; c = c->gnext)
        if (c != except && conn_beats(c)) send_keepalive(c);
}

/* The owner's renewal. */
static void signature_beat(pg_graph *g)
{
    g->beat_sig = g->node_id;
    g->beat = (uint8_t)(g->beat + 1);
    g->beat_at = L.now;
    beat_send_all(g, NULL);
}

/* Fast profile (PROTOCOL.md P15): a node lower than ours held the
 * signature within the last ulSignatureStaleMs and was not announced
 * departed.  A higher claim that replaced it (a node that missed its
 * renewals took it for gone) is then left to that node to answer: without
 * this, with slow floods every node below the claimant claimed in turn. */
static int signature_lower_alive(const pg_graph *g)
{
    return g->timers.ulSignatureStaleMs && !g->sig_dead && g->sig_low && g->sig_low < g->node_id &&
           L.now <= g->sig_low_at + g->timers.ulSignatureStaleMs;
}

/* Signature timer: claim the signature if nobody lower holds it. */
static void signature_timer(pg_graph *g)
{
    ULONGLONG sig = 0;
    int live;
    g->sig_deadline = L.now + 24u * 3600u * 1000u;
    if (!g->synchronized || !g->listener) { wake_at(g->sig_deadline); return; }
    live = signature_live(g, &sig) != NULL;
    if (!live || sig > g->node_id) {
        if (signature_lower_alive(g)) { /* look again when that news is stale */
            g->sig_deadline = g->sig_low_at + g->timers.ulSignatureStaleMs + 1;
            wake_at(g->sig_deadline);
            return;
        }
        signature_publish(g, 0);
    }
    else if (sig == g->node_id && g->timers.ulSignatureStaleMs &&
             (!g->sig_yield || L.now >= g->sig_yield + g->timers.ulSignatureStaleMs)) {
        /* fast profile: the owner renews it, unless a lower node is taking
         * over: by a beat where every neighbor carries beats, else (a plain
         * neighbor, or custom timers in the compat profile) by a new version */
        if (graph_links_beat(g)) signature_beat(g);
        else signature_publish(g, 0);
    }
    if (g->timers.ulSignatureStaleMs && signature_live(g, &sig) && sig == g->node_id)
        g->sig_deadline = L.now + g->timers.ulSignatureStaleMs / 3;
    wake_at(g->sig_deadline);
}

/* The signature node leaving deletes it: the others race to take over. */
static void signature_leave(pg_graph *g)
{
    ULONGLONG sig = 0;
    if (signature_live(g, &sig) && sig == g->node_id) signature_publish(g, 1);
}

/* A Signature record that lost to ours (the same version, on Last Modified
 * By; or an older one: its publisher claimed from a copy that was old by
 * the time the claim got here) but names a lower node: that node is taking
 * over, and its next claim (one version up from the newest it holds) must
 * not meet a renewal of ours, which it would lose again.  The owner stops
 * renewing for ulSignatureStaleMs.  Without this, with floods slower than
 * the renewal period, two owners kept overwriting each other for good
 * (PROTOCOL.md P13). */
static void signature_contested(pg_graph *g, const rec_view *in)
{
    ULONGLONG sig = 0;
    if (!g->timers.ulSignatureStaleMs || (in->flags & RF_DELETED) || in->n_data < 8) return;
    if (!signature_live(g, &sig) || sig != g->node_id || get64(in->data) >= sig) return;
    g->sig_yield = L.now;
}

/* A renewal of live signature sig (a new version, or a beat): the lowest
 * signature seen lately (P15). */
static void signature_seen(pg_graph *g, ULONGLONG sig)
{
    if (!g->sig_low || sig <= g->sig_low || L.now > g->sig_low_at + g->timers.ulSignatureStaleMs) {
        g->sig_low = sig;
        g->sig_low_at = L.now;
    }
}

/* The Signature record was stored (received, renewed, replaced, deleted). */
static void signature_changed(pg_graph *g)
{
    ULONGLONG sig = 0, held = 0;
    int live;
    g->sig_rx = L.now;
    g->sig_dead = 0;
    if (!signature_held(g, &held) || held != g->beat_sig) g->beat_at = 0; /* another owner: its beat starts anew */
    live = signature_live(g, &sig) != NULL;
    if (live) signature_seen(g, sig);
    if (!live || sig != g->sig_last) graph_poke_contacts(g); /* (not on a mere renewal) */
    if (sig) g->sig_last = sig;
    signature_calc(g);
}

/* A neighbor's beat names another signature than ours: it holds another
 * version of the Signature record (after a split heals, both parts' owners
 * renew by beat, and the hash sync does not exchange two versions of one
 * number).  Ours goes to it; the newer of the two comes back or stays, as
 * for any record, and the lower node then claims (P17).  At most once per
 * renewal period per link. */
static void signature_offer(pg_conn *c)
{
    pg_rec *r = rec_find(c->graph, SIGNATURE_ID);
    if (!r || (c->sig_offered && L.now < c->sig_offered + c->graph->timers.ulSignatureStaleMs / 3)) return;
    c->sig_offered = L.now;
    conn_flood_record(c, r);
}

/* A beat (tag, n) from fast link `from`: one newer than the beat we hold of
 * the signature we hold renews it; ours, a repeated or an older one is
 * dropped and goes no further; another signature's makes us offer ours. */
static void beat_in(pg_conn *from, uint8_t tag, uint8_t n)
{
    pg_graph *g = from->graph;
    ULONGLONG sig = 0, live = 0;
    unsigned d;
    if (!g->timers.ulSignatureStaleMs || !signature_held(g, &sig)) return;
    if (beat_tag(sig) != tag) { signature_offer(from); return; }
    if (sig == g->node_id) return;
    d = (uint8_t)(n - g->beat);
    if (g->beat_sig == sig && beat_fresh(g) && (d == 0 || d >= 128)) return;
    if (!signature_live(g, &live)) graph_poke_contacts(g); /* stale here until now */
    g->beat_sig = sig;
    g->beat = n;
    g->beat_at = g->sig_rx = L.now;
    if (!g->sig_dead) signature_seen(g, sig);
    beat_send_all(g, from);
}

/* --- contacts and partitions ([MS-PPGRH] 3.1.7.12-.15, digest 5.17) ---
 * Between Cmin and Cmax nodes publish a Contact record: the signature they
 * saw and their addresses.  A contact naming another signature than ours
 * was published on the other side of a split: the Partition Detection
 * timer then connects to it, the two databases synchronize, and the lower
 * signature wins on both sides.  Our own contact is re-published when the
 * signature changes (PROTOCOL.md P11), so that only the far side's
 * contacts disagree. */
static const GUID GUID_CONTACT_TYPE_G = {0x00000300, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};

typedef struct contact_view { ULONGLONG sig, node; uint32_t n_addrs; const uint8_t *addrs; } contact_view;

static int contact_parse(const pg_graph *g, const pg_rec *r, contact_view *cv)
{
    rec_view v;
    if ((r->flags & RF_DELETED) || !rec_view_of(g, r, &v) || v.n_data < 20) return 0;
    cv->sig = get64(v.data);
    cv->node = get64(v.data + 8);
    cv->n_addrs = get32(v.data + 16);
    cv->addrs = v.data + 20;
    return cv->n_addrs <= (v.n_data - 20) / 32;
}

/* Our live Contact record, if any. */
static pg_rec *contact_own(const pg_graph *g)
{
    pg_rec *r = g->have_contact_id ? rec_find(g, g->contact_id) : NULL;
    if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= peer_time(g)) return NULL;
    return r;
}

/* Cmin from the signature S: 5 when S >= 2^60, else 60 - floor(log2 S)
 * (digest 5.17.1; PROTOCOL.md P11 for the rounding and S = 0). */
static ULONG contact_cmin(ULONGLONG sig)
{
    ULONG lg = 0;
    if (sig >= (1ULL << 60)) return 5;
    if (!sig) return 60;
    while (sig >>= 1) lg++;
    return 60 - lg;
}

static void contact_publish(pg_graph *g, ULONGLONG sig, int deleted)
{
    SOCKADDR_IN6 a[PRESENCE_MAX_ADDRS];
    ULONG na = deleted ? 0 : presence_addrs(g, a, PRESENCE_MAX_ADDRS), i;
    size_t n = 20 + 32 * (size_t)na, len;
    uint8_t *p = (uint8_t *)pg_alloc(n), type[16], *wire;
    pg_rec *old = g->have_contact_id ? rec_find(g, g->contact_id) : NULL;
    uint64_t now = peer_time(g);
    PEER_DATA d;
    if (!p) return;
    put64(p, sig);
    put64(p + 8, g->node_id);
    put32(p + 16, na);
    for (i = 0; i < na; i++) peer_addr_put(p + 20 + 32 * i, &a[i]);
    d.cbData = deleted ? 0 : (ULONG)n;
    d.pbData = deleted ? NULL : p;
    guid_put(type, &GUID_CONTACT_TYPE_G);
    if (!g->have_contact_id) { rec_new_id(g->peer_id, g->contact_id); g->have_contact_id = 1; }
    if (old) {
        rec_view v;
        rec_view_of(g, old, &v);
        wire = rec_build(g, type, g->contact_id, v.version + 1, deleted ? RF_DELETED : RF_AUTOREFRESH, g->peer_id,
                         g->peer_id, NULL, v.created, deleted ? v.expires : now + 900 * FT_SECOND,
                         now > v.modified ? now : v.modified + 1, &d, NULL, &len);
    } else
        wire = rec_build(g, type, g->contact_id, 1, RF_AUTOREFRESH, g->peer_id, NULL, NULL, now, now + 900 * FT_SECOND,
                         now, &d, NULL, &len);
    pg_free(p);
    if (wire) graph_publish(g, wire, len);
    pg_free(wire);
}

/* Live contacts: how many, and whether one names another signature than
 * `sig` (a node on the far side of a split). */
static ULONG contact_scan(const pg_graph *g, ULONGLONG sig, int *mismatch)
{
    uint64_t now = peer_time(g);
    ULONG n = 0;
    size_t i;
    *mismatch = 0;
    for (i = 0; i < map_span(&g->contacts); i++) { /* the contact set, not the database */
        const pg_rec *r = (const pg_rec *)map_at(&g->contacts, i, NULL);
        contact_view cv;
        if (!r || rec_expires(r) <= now || !contact_parse(g, r, &cv)) continue;
        n++;
        if (cv.sig != sig && cv.node != g->node_id) *mismatch = 1;
    }
    return n;
}

static ULONGLONG timer_between(ULONG lo, ULONG hi) { return L.now + lo + random64() % ((ULONGLONG)hi - lo + 1); }

/* Fast profile: live presence records marked departed.  A contact holder
 * tries them too (P12): a node announced dead may sit across a split whose
 * contacts all happen to be on this side. */
static ULONG departed_candidates(const pg_graph *g)
{
    uint64_t now = peer_time(g);
    ULONG n = 0;
    size_t i;
    for (i = 0; i < map_span(&g->departed); i++) { /* the departed set */
        const pg_rec *r = (const pg_rec *)map_at(&g->departed, i, NULL);
        if (r && !(r->flags & RF_DELETED) && rec_expires(r) > now) n++;
    }
    return n;
}

/* The signature our contact names and counts contacts against: the
 * current one, except that while a lower owner was seen within
 * ulSignatureStaleMs and not announced departed (P15), a higher claim is
 * not followed: that owner answers it, and a contact holder that followed
 * it made the count of contacts naming the real signature dip below Cmin
 * for as long as the claim lasted (PROTOCOL.md P11). */
static ULONGLONG contact_sig(const pg_graph *g, ULONGLONG sig)
{
    if (g->timers.ulSignatureStaleMs && !g->sig_dead && g->sig_low && g->sig_low < sig &&
        L.now <= g->sig_low_at + g->timers.ulSignatureStaleMs)
        return g->sig_low;
    return sig;
}

/* Contact maintenance and partition detection (steps 2 and 3 of graph
 * maintenance; also when a contact arrives or expires, or the signature
 * changes).  `timer`: the Contact timer fired. */
static void contact_maintain(pg_graph *g, int timer)
{
    ULONGLONG sig = 0;
    pg_rec *own;
    ULONG n, cmin;
    int mismatch;
    g->contacts_due = 0;
    if (!g->synchronized) return;
    own = contact_own(g);
    if (own && !g->listener) { contact_publish(g, 0, 1); return; }
    if (!g->listener || !signature_live(g, &sig)) return;
    sig = contact_sig(g, sig);
    if (own) { /* ours names the signature we see now (P11) */
        contact_view cv;
        if (contact_parse(g, own, &cv) && cv.sig != sig) contact_publish(g, sig, 0);
    }
    n = contact_scan(g, sig, &mismatch);
    cmin = contact_cmin(sig);
    if ((!own && n < cmin) || (own && n > cmin + 5)) {
        /* Damping (PROTOCOL.md P11): of the nodes that may act (those
         * without a contact when there are too few, the holders when there
         * are too many), each acts with probability need / pool and tries
         * again a timer later, so a round changes about `need` contacts
         * however many nodes there are.  Every one acting at once made
         * hundreds publish before the first contact reached them, then
         * delete again: with slow floods that never settled. */
        ULONG nodes = (ULONG)g->pres.n, pool = own ? n : (nodes > n ? nodes - n : 1);
        ULONG need = own ? n - (cmin + 5) : cmin - n;
        if (timer && (need >= pool || fast_random64() % pool < need)) contact_publish(g, sig, own != NULL);
        else if (g->contact_deadline == PEER_NO_DEADLINE) {
            g->contact_deadline = timer_between(g->timers.ulContactMinMs, g->timers.ulContactMaxMs);
            wake_at(g->contact_deadline);
        }
    }
    if ((mismatch || (own && g->timers.ulSignatureStaleMs && departed_candidates(g))) &&
        g->partition_deadline == PEER_NO_DEADLINE) {
        g->partition_deadline = timer_between(g->timers.ulPartitionMinMs, g->timers.ulPartitionMaxMs);
        wake_at(g->partition_deadline);
    }
}

static void graph_poke_contacts(pg_graph *g)
{
    g->contacts_due = 1;
    graph_poke(g);
}

/* Is a partition-repair connection still being made? */
static int repair_pending(const pg_graph *g)
{
    const pg_conn *o;
    for (o = g->conns; o; o = o->gnext)
        if (o->repair && !o->dead && o->state != CS_CONNECTED) return 1;
    return 0;
}

/* Partition Detection timer: connect to a node whose contact still names
 * another signature (one, chosen at random; the next run takes another). */
static void partition_timer(pg_graph *g)
{
    ULONGLONG sig = 0;
    uint64_t now = peer_time(g);
    cand *cs = NULL;
    size_t n = 0, cap = 0, i;
    g->partition_deadline = PEER_NO_DEADLINE;
    if (!g->synchronized || !signature_live(g, &sig)) return;
    sig = contact_sig(g, sig);
    if (repair_pending(g)) return; /* one attempt at a time */
    for (i = 0; i < map_span(&g->contacts); i++) { /* the contact set, not the database */
        const pg_rec *r = (const pg_rec *)map_at(&g->contacts, i, NULL);
        contact_view cv;
        SOCKADDR_IN6 a;
        if (!r || rec_expires(r) <= now || !contact_parse(g, r, &cv)) continue;
        if (cv.sig == sig || cv.node == g->node_id || !cv.n_addrs || !peer_addr_get(cv.addrs, &a)) continue;
        if (conn_to_addr_exists(g, &a, cv.node)) continue;
        if (!cand_push(&cs, &n, &cap, &a, r, 0, cv.node)) return;
    }
    if (!n && contact_own(g) && g->timers.ulSignatureStaleMs) { /* P12: nodes announced dead, not tried lately */
        for (i = 0; i < map_span(&g->departed); i++) { /* the departed set */
            const pg_rec *r = (const pg_rec *)map_at(&g->departed, i, NULL);
            rec_view v;
            presence_view pv;
            SOCKADDR_IN6 a;
            if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= now) continue;
            if (!rec_view_of(g, r, &v) || !presence_parse(&v, &pv) || !pv.n_addrs || recently_tried(g, pv.node))
                continue;
            if (!peer_addr_get(pv.addrs, &a) || conn_to_addr_exists(g, &a, pv.node)) continue;
            if (!cand_push(&cs, &n, &cap, &a, r, 0, pv.node)) return;
        }
    }
    if (n) {
        pg_conn *nc = cand_connect(g, &cs[(size_t)(random64() % n)]);
        if (nc) {
            nc->cand_node = 0; /* a repair attempt, not a maintenance one */
            nc->repair = 1;
            g->partition_repairs++;
        }
    }
    pg_free(cs);
}

/* Long-term partition repair (3.1.7.15): a node holding a Contact record
 * asks the application for a connection to some node it finds by other
 * means (PEER_GRAPH_EVENT_CONNECTION_REQUIRED; at most every
 * PEER_MAINT_CONNECTED_MS, PROTOCOL.md P11), and so does a node left alone
 * with nobody known to connect to.  Either also tries one lost address
 * itself (PROTOCOL.md P16). */
static void graph_long_term_repair(pg_graph *g, int attempted)
{
    PEER_GRAPH_EVENT_DATA e;
    int alone = !attempted && g->n_neighbors_ever && !graph_conn_count(g, 1);
    int contact = contact_own(g) && (!g->ltr_last || L.now >= g->ltr_last + PEER_MAINT_CONNECTED_MS);
    if (!alone && !contact) return;
    g->ltr_last = L.now ? L.now : 1;
    memset(&e, 0, sizeof e);
    e.eventType = PEER_GRAPH_EVENT_CONNECTION_REQUIRED;
    emit(g, &e, NULL, NULL);
    if (!repair_pending(g)) lost_try(g, 1); /* and a node of a part we lost touch with, if it is still there (lost_add) */
}

/* The next Graph Maintenance period: between 3/4 of `ms` and `ms`, at
 * random (PROTOCOL.md P14), so that graphs whose timers were set at the
 * same moment (a restart of many nodes, a host setting every graph's timers
 * at once) do not run their maintenance, prunes and refills in step. */
static ULONGLONG maint_period(ULONG ms) { return ms - fast_random64() % (ms / 4 + 1); }

/* Graph maintenance in its strict order; `timer`: the Graph Maintenance
 * timer fired (not a trigger). */
static void graph_maintain(pg_graph *g, int timer)
{
    g->maint_due = 0;
    if (!g->used_network) return;
    if (timer) { /* referrals tried before may have room by now */
        ULONG i;
        for (i = 0; i < g->n_refs; i++) g->refs[i].attempted = 0;
    }
    signature_calc(g);              /* 1. signature */
    contact_maintain(g, 0);         /* 2. contacts, 3. partition detection */
    presence_maintain(g, 0);
    graph_long_term_repair(g, conn_maintain(g, timer)); /* 4. connections, 5. long-term repair */
    g->maint_deadline = L.now + maint_period(graph_conn_count(g, 1) ? g->timers.ulMaintenanceMs : g->timers.ulMaintenanceIdleMs);
    wake_at(g->maint_deadline);
}

/* From the service loop's timer scan. */
static void graph_maintenance_timers(pg_graph *g)
{
    if (g->presence_deadline <= L.now) {
        g->presence_deadline = PEER_NO_DEADLINE;
        presence_maintain(g, 1);
    }
    if (g->maint_retry <= L.now) {
        g->maint_retry = PEER_NO_DEADLINE;
        g->maint_due = 1;
    }
    if (g->sig_deadline <= L.now) signature_timer(g);
    wake_at(g->sig_deadline);
    if (g->contact_deadline <= L.now) {
        g->contact_deadline = PEER_NO_DEADLINE;
        contact_maintain(g, 1);
    } else if (g->contacts_due)
        contact_maintain(g, 0);
    if (g->partition_deadline <= L.now) partition_timer(g);
    if (g->timers.ulSignatureStaleMs && g->sig_last && g->sig_last != g->node_id) {
        if (L.now <= g->sig_rx + g->timers.ulSignatureStaleMs) wake_at(g->sig_rx + g->timers.ulSignatureStaleMs + 1);
        else if (g->sig_deadline > L.now + 30000) signature_calc(g); /* fast profile: the signature went stale */
    }
    wake_at(g->contact_deadline);
    wake_at(g->partition_deadline);
    if (g->maint_deadline <= L.now) graph_maintain(g, 1);
    else if (g->maint_due) graph_maintain(g, 0);
    wake_at(g->maint_deadline);
    wake_at(g->maint_retry);
    wake_at(g->presence_deadline);
}

/* PEER_NODE_INFO from a presence record: size, and the block at dst. */
static size_t node_info_size(const rec_view *v, const presence_view *pv)
{
    return sizeof(PEER_NODE_INFO) + pv->n_addrs * sizeof(PEER_ADDRESS) +
           sizeof(wchar_t) * (u16_wchars(v->creator, v->n_creator) + (pv->attrs ? u16_wchars(pv->attrs, pv->n_attrs) : 0));
}
static void node_info_fill(const rec_view *v, const presence_view *pv, PPEER_NODE_INFO ni)
{
    uint8_t *cur = (uint8_t *)(ni + 1);
    ULONG i;
    memset(ni, 0, sizeof *ni);
    ni->dwSize = sizeof *ni;
    ni->ullNodeId = pv->node;
    ni->pAddresses = pv->n_addrs ? (PPEER_ADDRESS)cur : NULL;
    for (i = 0; i < pv->n_addrs; i++) {
        PEER_ADDRESS a;
        memset(&a, 0, sizeof a);
        a.dwSize = sizeof a;
        if (!peer_addr_get(pv->addrs + 32 * i, &a.sin6)) continue; /* skipped: not IPv6 */
        memcpy(cur, &a, sizeof a);
        cur += sizeof a;
        ni->cAddresses++;
    }
    cur = (uint8_t *)(ni + 1) + pv->n_addrs * sizeof(PEER_ADDRESS);
    ni->pwzPeerId = (PWSTR)cur;
    u16_to_wcs(ni->pwzPeerId, v->creator, v->n_creator);
    cur += sizeof(wchar_t) * u16_wchars(v->creator, v->n_creator);
    if (pv->attrs) {
        ni->pwzAttributes = (PWSTR)cur;
        u16_to_wcs(ni->pwzAttributes, pv->attrs, pv->n_attrs);
    }
}

/* The live presence record of node `node`, parsed; NULL if none. */
static const pg_rec *presence_of_node(const pg_graph *g, ULONGLONG node, rec_view *v, presence_view *pv)
{
    const pg_rec *r = node ? (const pg_rec *)map_get(&g->pres, node) : NULL;
    if (r && !(r->flags & RF_DELETED) && !rec_departed(r) && rec_expires(r) > peer_time(g) && rec_view_of(g, r, v) &&
        presence_parse(v, pv) && pv->node == node)
        return r;
    return NULL;
}

/* ========================================================================= */
/* 10. Listeners                                                             */
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
        if (c->listener == l) { conn_unpend(c); c->listener = NULL; }
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
        ULONG pending = l->pending;
        pg_conn *c;
        HRESULT hr = SHIM->pfnAccept(SHIM->pvContext, l->s, &s, &remote);
        if (hr != S_OK) return;
        if (pending >= PEER_MAX_PENDING_ACCEPTS) {
            /* full of connections that have not authenticated: the oldest
             * (lowest ID; preferably one that never sent AUTH_INFO) makes room, so
             * silent connections cannot keep real peers out */
            pg_conn *c2, *old = NULL;
            for (c2 = L.conns; c2; c2 = c2->next)
                if (!c2->dead && c2->listener == l && c2->pending_counted &&
                    (!old || (c2->state == CS_AUTH_WAIT && old->state != CS_AUTH_WAIT) ||
                     ((c2->state == CS_AUTH_WAIT) == (old->state == CS_AUTH_WAIT) && c2->id < old->id)))
                    old = c2;
            if (!old) { SHIM->pfnClose(SHIM->pvContext, s); continue; }
            conn_abort(old, PEER_E_TIMEOUT);
            pending = l->pending;
        }
        c = conn_new(NULL, s, 0);
        if (!c) { SHIM->pfnClose(SHIM->pvContext, s); return; }
        c->listener = l;
        c->pending_counted = 1;
        l->pending++;
        c->remote = remote;
        c->state = CS_AUTH_WAIT;
        conn_set_deadline(c, L.now + auth_timer_ms(pending));
    }
}

/* ========================================================================= */
/* 11. Service loop and timers                                              */
/* Service = (ready sockets or "try all") + expired timers + flush.  The     */
/* deadline given to the host is the earliest connection timer; a timer set  */
/* to `now` by an API call means "call me now".                               */
/* ========================================================================= */

static void conn_on_timer(pg_conn *c)
{
    conn_touch(c);
    switch (c->state) {
    case CS_TCP_CONNECTING:
        if (c->s == PEER_INVALID_SOCKET) { conn_abort(c, c->close_reason); return; }
        conn_on_connect_result(c); /* one last look before declaring a timeout */
        if (!c->dead && c->state == CS_TCP_CONNECTING) conn_abort(c, PEER_E_TIMEOUT);
        return;
    case CS_AUTH_WAIT:
    case CS_CONNECT_WAIT:
    case CS_CONNECT_SENT:
    case CS_TLS:
        conn_abort(c, PEER_E_TIMEOUT);
        return;
    case CS_CLOSING:
        conn_kill(c);
        return;
    case CS_CONNECTED:
        if (c->graph && c->graph->profile == PEER_MAINTENANCE_FAST && !c->direct) {
            if ((c->ext & EXT_FAST) && L.now >= c->last_rx + c->graph->timers.ulDeadMs) {
                conn_abort(c, PEER_E_TIMEOUT); /* silent: gone (the graph repairs at once) */
                return;
            }
            if (L.now >= c->last_tx + c->graph->timers.ulKeepaliveMs) {
                int held = c->ack_listed || buf_used(&c->renews);
                if (c->ack_listed) conn_flush_acks(c); /* held ACKs keep the link alive (R10) */
                if (buf_used(&c->renews)) conn_flush_renews(c); /* so do held renewals (P19) */
                if (!held) conn_probe(c);
                c->last_tx = L.now; /* queued now, written by this service */
            }
        }
        conn_arm_keepalive(c);
        return;
    default:
        conn_set_deadline(c, PEER_NO_DEADLINE);
    }
}

/* `drain`: readiness is unknown (PeerGraphService with no list), so read
 * until the socket says EAGAIN. */
static void conn_service(pg_conn *c, DWORD ev, int drain)
{
    if (c->dead) return;
    conn_touch(c);
    if (c->state == CS_TCP_CONNECTING) {
        if (c->s != PEER_INVALID_SOCKET && (ev & (PEER_POLL_WRITE | PEER_POLL_ERROR | PEER_POLL_READ)))
            conn_on_connect_result(c);
        return;
    }
    if (ev & (PEER_POLL_READ | PEER_POLL_ERROR)) conn_on_readable(c, drain || (ev & PEER_POLL_ERROR));
    if (!c->dead && c->out_end) conn_pump_out(c);
    if (!c->dead && conn_has_output(c)) conn_try_send(c);
    conn_check_pump(c);
}

/* Tells the poll callback about interest changes. */
static void announce_interest(void)
{
    pg_listener *l;
    pg_conn *c;
    while ((c = L.itouch) != NULL) { /* the touched connections only */
        DWORD want;
        L.itouch = c->inext;
        c->itouched = 0;
        if (!L.poll_cb || c->dead || c->s == PEER_INVALID_SOCKET) continue;
        want = conn_interest(c);
        if (want == c->announced) continue;
        c->announced = want;
        L.poll_cb(L.poll_ctx, c->s, want);
    }
    if (!L.poll_cb || !L.listeners_new) return;
    L.listeners_new = 0;
    for (l = L.listeners; l; l = l->next)
        if (l->announced != PEER_POLL_READ) { l->announced = PEER_POLL_READ; L.poll_cb(L.poll_ctx, l->s, PEER_POLL_READ); }
}

static void flush_dirty(void);

/* Ends every public call that may have changed state. */
static void finish_call(void)
{
    log_flush_pending();
    flush_dirty();
    sweep();
    announce_interest();
}

/* Writes out what connections were given during this call (floods relayed
 * to neighbors, answers): one pass over the dirty list, not over every
 * connection. */
static void flush_dirty(void)
{
    fwd_flush();
    while (L.dirty) {
        pg_conn *c = L.dirty;
        L.dirty = c->dnext;
        c->dirty = 0;
        if (!c->dead && buf_used(&c->deps)) conn_flush_departed(c); /* what this phase found, as one message */
        if (!c->dead && conn_has_output(c)) conn_try_send(c);
        conn_check_pump(c);
    }
}

/* One connection's due work: a pending check, its timer, a sync answer to
 * pump, output; then its next wake-up. */
static void conn_pass(pg_conn *c)
{
    if (c->poke) {
        c->poke = 0;
        conn_touch(c);
        if (c->state == CS_TCP_CONNECTING && c->s != PEER_INVALID_SOCKET) conn_on_connect_result(c);
        else tls_resume(c); /* input left inside TLS while the host was behind */
    }
    if (!c->dead && c->deadline != PEER_NO_DEADLINE && c->deadline <= L.now) conn_on_timer(c);
    if (!c->dead && c->out_end) conn_pump_out(c);
    if (!c->dead && conn_has_output(c)) conn_try_send(c);
    if (c->dead) return;
    if (L.theap_lost) wake_at(c->deadline); /* not in the heap: the next full pass */
    conn_check_pump(c);
}

/* One graph's due work: expiry, maintenance timers, the database; then its
 * next wake-ups. */
static void graph_pass(pg_graph *g)
{
    if (g->exp_deadline <= L.now) graph_expire(g);
    graph_maintenance_timers(g);
    db_maintain(g);
    wake_at(g->exp_deadline);
    if (g->log_dirty) wake_at(g->log_dirty_since + PEER_DB_SYNC_MS);
    if (g->meta_pending) wake_at(g->meta_pending_since + META_DELAY_MS);
}

static void service_all(const PEER_POLL_FD *ready, ULONG n)
{
    pg_conn *c;
    pg_listener *l;
    ULONG i;
    unsigned long reads = L.rx_reads;
    if (!ready) {
        for (l = L.listeners; l; l = l->next) listener_accept(l);
        for (c = L.conns; c; c = c->next) conn_service(c, PEER_POLL_READ | PEER_POLL_WRITE, 1);
    } else {
        for (i = 0; i < n; i++) {
            void *o = sock_get(ready[i].s);
            if (!o || !ready[i].dwEvents) continue;
            if (*(int *)o == OBJ_LISTENER) listener_accept((pg_listener *)o);
            else conn_service((pg_conn *)o, ready[i].dwEvents, 0);
        }
    }
    flush_dirty();
    /* what was asked to be looked at now: the connections listed so far,
     * then the graphs (which the connections may have poked); what is
     * listed meanwhile waits for the next call (next_deadline says now) */
    {
        pg_conn *list = L.attn;
        pg_graph *gl;
        L.attn = NULL;
        while ((c = list) != NULL) {
            list = c->anext;
            c->attn = 0;
            if (!c->dead) conn_pass(c);
        }
        gl = L.gpoked;
        L.gpoked = NULL;
        while (gl) {
            pg_graph *g = gl;
            gl = g->pnext;
            g->poked = 0;
            graph_pass(g);
        }
    }
    /* due connection timers, from the heap */
    while (L.theap_n && L.theap[0]->deadline <= L.now) {
        c = L.theap[0];
        conn_pass(c);
        if (c->hidx == 1 && c->deadline <= L.now) theap_remove(c); /* a timer that did not move: drop it */
    }
    while (L.ackq && L.ackq->ack_due <= L.now) conn_flush_acks(L.ackq); /* ACKs held long enough */
    flush_dirty();
    if (L.rec_growing) rec_migrate_some(L.rx_reads == reads ? REC_IDLE_STEP : REC_BUSY_STEP);
    if (L.now < L.min_deadline) return;
    /* a graph timer is due (or a connection timer is outside the heap): one
     * pass over the graphs, and recompute the next time */
    L.min_deadline = PEER_NO_DEADLINE;
    if (L.theap_lost) {
        L.theap_lost = 0;
        for (c = L.conns; c; c = c->next)
            if (!c->dead) conn_pass(c);
    }
    {
        pg_graph *g;
        for (g = L.graphs; g; g = g->next) graph_pass(g);
    }
    flush_dirty(); /* what expiry and refresh queued */
}

static ULONGLONG next_deadline(void)
{
    ULONGLONG t = L.min_deadline;
    if (L.dirty || L.attn || L.gpoked || L.rec_growing) return L.now;
    if (L.ackq && L.ackq->ack_due < t) t = L.ackq->ack_due;
    if (L.fwdq && L.fwd_due < t) t = L.fwd_due;
    if (L.theap_n && L.theap[0]->deadline < t) {
        t = L.theap[0]->deadline;
        if (t > L.now && L.n_conns >= TIMER_SLACK_CONNS) /* timer slack, as wake_at */
            t = (t + TIMER_SLACK_MS - 1) / TIMER_SLACK_MS * TIMER_SLACK_MS;
        if (t > L.min_deadline) t = L.min_deadline;
    }
    return t;
}

/* ========================================================================= */
/* 12. Public API                                                            */
/* Every entry point checks initialisation and arguments first, does its    */
/* work, then finish_call() frees what died and updates the poll callback.   */
/* ========================================================================= */

#define REQUIRE_STARTED() do { if (!L.started) return PEER_E_NOT_INITIALIZED; \
                                  if (L.in_callback) return E_ACCESSDENIED; } while (0)

HRESULT PeerGraphSetAllocator(const PEER_ALLOCATOR *pAllocator)
{
    if (L.started) return E_ACCESSDENIED;
    if (!pAllocator) { memset(&g_alloc, 0, sizeof g_alloc); return S_OK; }
    if (pAllocator->dwSize != sizeof *pAllocator || !pAllocator->pfnAlloc || !pAllocator->pfnRealloc ||
        !pAllocator->pfnFree)
        return E_INVALIDARG;
    g_alloc = *pAllocator;
    return S_OK;
}

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
    /* process configuration that outlives Startup/Shutdown: the C library's
     * heap, not PeerGraphSetAllocator's (which may change meanwhile) */
    char *d;
    if (!pwzDirectory) { free(L.db_dir); L.db_dir = NULL; return S_OK; }
    if (!*pwzDirectory || wcs_units16(pwzDirectory) < 0 || utf8_len(pwzDirectory) > 1024) return E_INVALIDARG;
    d = (char *)malloc(utf8_len(pwzDirectory) + 1);
    if (!d) return E_OUTOFMEMORY;
    utf8_put((uint8_t *)d, pwzDirectory);
    free(L.db_dir);
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
    L.rng_seeded = 0;
    {
        const char *e = getenv("P2PGRAPH_TLS_NBIO");
        L.tls_nbio = e && *e == '1';
    }
    return S_OK;
}

static void graph_free(pg_graph *g)
{
    size_t i;
    pg_free(g->graph_id);
    pg_free(g->gid_u);
    pg_free(g->peer_id);
    pg_free(g->db_name);
    pg_free(g->db_path);
    pg_free(g->creator_id);
    pg_free(g->friendly);
    pg_free(g->comment);
    pg_free(g->sync_types);
    pg_free(g->node_attrs);
    rec_table_free(g);
    if (g->logf) { log_flush_graph(g); fclose(g->logf); }
    buf_free(&g->logbuf);
    if (g->poked) {
        pg_graph **pp;
        for (pp = &L.gpoked; *pp; pp = &(*pp)->pnext)
            if (*pp == g) { *pp = g->pnext; break; }
    }
    if (g->fwd_listed) {
        pg_graph **pp;
        for (pp = &L.fwdq; *pp; pp = &(*pp)->fwdnext)
            if (*pp == g) { *pp = g->fwdnext; break; }
    }
    if (g->log_listed) {
        pg_graph **pp;
        for (pp = &L.logq; *pp; pp = &(*pp)->lognext)
            if (*pp == g) { *pp = g->lognext; break; }
    }
    pg_free(g->fwd);
    sec_release(g->sec);
    for (i = 0; i < g->n_deferred; i++) rs_free(g->deferred[i]);
    pg_free(g->deferred);
    for (i = 0; i < sizeof g->types / sizeof g->types[0]; i++) pg_free(g->types[i]); /* after every record */
    pg_free(g);
}

/* Close: goodbye to neighbors, drop the rest, free registrations. */
static void graph_close(pg_graph *g)
{
    pg_graph **pp;
    pg_conn *c;
    pg_reg **rp;
    /* events stop now: registrations go first so closing emits nothing */
    map_del(&L.hgraphs, g->handle);
    {
        uint64_t k = graph_idkey(g->graph_id, g->peer_id);
        pg_graph **ip = NULL, *h = (pg_graph *)map_get(&L.gids, k);
        if (h == g) {
            if (g->idnext) map_put(&L.gids, k, g->idnext); /* cannot fail: the key exists */
            else map_del(&L.gids, k);
        } else if (h) {
            for (ip = &h->idnext; *ip && *ip != g; ip = &(*ip)->idnext) {}
            if (*ip) *ip = g->idnext;
        }
    }
    for (rp = &L.regs; *rp;) {
        pg_reg *r = *rp;
        if (r->graph == g) { *rp = r->next; map_del(&L.hregs, r->handle); reg_free(r); }
        else rp = &r->next;
    }
    g->regs = NULL;
    presence_delete(g); /* flooded below, before the DISCONNECTs */
    if (contact_own(g)) contact_publish(g, 0, 1);
    signature_leave(g);
    if (g->used_network || g->synchronized) {
        g->left_pt = peer_time(g);
        db_save(g, 1);
    }
    if (g->logf) { log_flush_graph(g); file_sync(g->logf); }
    while ((c = g->conns) != NULL) {
        if (!c->dead && c->state == CS_CONNECTED) conn_disconnect(c, DISC_LEAVING, S_OK);
        else if (!c->dead) conn_kill(c);
        conn_set_graph(c, NULL);
    }
    if (g->listener) listener_release(g->listener);
    g->listener = NULL;
    {
        pg_enum *e;
        for (e = L.enums; e; e = e->next)
            if (e->graph == g) e->graph = NULL;
    }
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
        if (!c->dead && conn_has_output(c)) conn_try_send(c);
    for (c = L.conns; c; c = c->next) conn_kill(c);
    L.dirty = NULL; /* every connection is dead now */
    L.min_deadline = 0;
    L.fwd_due = PEER_NO_DEADLINE;
    sweep();
    while (L.listeners) { L.listeners->refs = 1; listener_release(L.listeners); }
    while (L.regs) { pg_reg *r = L.regs; L.regs = r->next; reg_free(r); }
    while (L.enums) { pg_enum *e = L.enums; L.enums = e->next; enum_free(e); }
    map_free(&L.socks);
    map_free(&L.hgraphs);
    map_free(&L.gids);
    blk_release_all();
    rs_release(); /* (every graph's records went with it) */
    pg_free(L.theap); /* every connection left it */
    L.theap = NULL;
    L.theap_n = L.theap_cap = 0;
    L.theap_lost = 0;
    map_free(&L.hregs);
    map_free(&L.henums);
    pg_free(L.wait_want);
    pg_free(L.wait_ready);
    L.wait_want = L.wait_ready = NULL;
    L.wait_cap = 0;
    SHIM->pfnCleanup(SHIM->pvContext);
    return S_OK;
}

void PeerGraphFreeData(PVOID pvData)
{
    unsigned i;
    if (pvData)
        for (i = 0; i < 8; i++)
            if (L.bout[i].p == pvData) { /* a data block: keep it for the next one */
                L.bout[i].p = NULL;
                blk_free(pvData, L.bout[i].cap);
                return;
            }
    pg_free(pvData);
}

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
    if (!pullDeadline || (!pFds && cMax) || (!pcFds && pFds)) return E_INVALIDARG;
    if (!pcFds) { *pullDeadline = next_deadline(); return S_OK; } /* the deadline only: O(1) */
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
    L.epoch++;
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
    L.listeners_new = 1;
    for (c = L.conns; c; c = c->next) { c->announced = 0; if (!c->dead) conn_touch(c); }
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
    if (g->graph_id) {
        g->n_gid_u = u16_units(g->graph_id);
        if ((g->gid_u = (uint8_t *)pg_alloc(2 * (size_t)g->n_gid_u)) != NULL) u16_write(g->gid_u, g->graph_id);
    }
    if (!g->graph_id || !g->peer_id || !g->db_name || !g->db_path || !g->gid_u) { graph_free(g); return NULL; }
    g->handle = new_handle(); /* known to the security callbacks while Create/Open load records */
    g->max_records = PEER_DEFAULT_MAX_RECORDS;
    g->max_rec_bytes = PEER_DEFAULT_MAX_RECORD_BYTES;
    g->max_record = PEER_DEFAULT_MAX_RECORD_SIZE;
    g->presence_lifetime = 300;
    g->presence_max = (ULONG)-1;
    g->scope = PEER_GRAPH_SCOPE_GLOBAL;
    g->data_limit = PEER_DEFAULT_DATA_QUEUE;
    g->maint_deadline = g->presence_deadline = g->maint_retry = g->sig_deadline = PEER_NO_DEADLINE;
    g->contact_deadline = g->partition_deadline = PEER_NO_DEADLINE;
    graph_default_timers(PEER_MAINTENANCE_COMPAT, &g->timers);
    wake_at(0); /* first expiry pass */
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

static int graph_link(pg_graph *g)
{
    uint64_t k = graph_idkey(g->graph_id, g->peer_id);
    g->idnext = (pg_graph *)map_get(&L.gids, k);
    if (!map_put(&L.gids, k, g)) return 0;
    if (!map_put(&L.hgraphs, g->handle, g)) {
        if (g->idnext) map_put(&L.gids, k, g->idnext);
        else map_del(&L.gids, k);
        return 0;
    }
    g->next = L.graphs;
    L.graphs = g;
    g->status = graph_compute_status(g);
    return 1;
}

HRESULT PeerGraphCreate(PPEER_GRAPH_PROPERTIES pGraphProperties, PCWSTR pwzDatabaseName,
                        PPEER_SECURITY_INTERFACE pSecurityInterface, HGRAPH *phGraph)
{
    pg_graph *g;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!pGraphProperties || !phGraph || !dbname_valid(pwzDatabaseName) || !props_valid(pGraphProperties))
        return E_INVALIDARG;
    g = graph_alloc(pGraphProperties->pwzGraphId, pGraphProperties->pwzCreatorId, pwzDatabaseName);
    if (!g) return E_OUTOFMEMORY;
    hr = sec_setup(pSecurityInterface, g->graph_id, g->peer_id, &g->sec);
    if (FAILED(hr)) { graph_free(g); return hr; }
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
    graph_set_expiry(g, L.now);
    hr = db_rewrite(g); /* a new file */
    if (SUCCEEDED(hr)) hr = graph_publish_info(g);
    if (SUCCEEDED(hr) && g->log_dirty) { /* Create is durable when it returns */
        log_flush_graph(g);
        file_sync(g->logf);
        g->log_dirty = 0;
    }
    if (FAILED(hr)) {
        char *path = g->db_path;
        g->db_path = NULL;
        graph_free(g); /* closes the file first (Windows cannot remove an open file) */
        remove(path);
        pg_free(path);
        return hr;
    }
    if (!graph_link(g)) { graph_free(g); return E_OUTOFMEMORY; }
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
        !dbname_valid(pwzDatabaseName) ||
        (cRecordTypeSyncPrecedence == 0) != (pRecordTypeSyncPrecedence == NULL) || cRecordTypeSyncPrecedence > 253)
        return E_INVALIDARG;
    g = graph_alloc(pwzGraphId, pwzPeerId, pwzDatabaseName);
    if (!g) return E_OUTOFMEMORY;
    hr = sec_setup(pSecurityInterface, g->graph_id, g->peer_id, &g->sec);
    if (FAILED(hr)) { graph_free(g); return hr; }
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
        hr = db_rewrite(g); /* a new, empty, unsynchronized database */
        if (FAILED(hr)) { graph_free(g); return hr; }
    }
    graph_set_expiry(g, (g->flags & PEER_GRAPH_PROPERTY_DEFER_EXPIRATION) ? PEER_NO_DEADLINE : L.now);
    hr = g->synchronized ? S_OK : PEER_S_GRAPH_DATA_CREATED;
    if (!graph_link(g)) { graph_free(g); return E_OUTOFMEMORY; }
    *phGraph = (HGRAPH)g->handle;
    return hr;
}

/* Listening on `want` (an existing listener of this process on the same
 * non-zero port is shared). */
static HRESULT graph_listen(pg_graph *g, const SOCKADDR_IN6 *want, DWORD scope)
{
    pg_listener *l = NULL;
    pg_conn *c;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if (g->listener) return PEER_E_ALREADY_LISTENING;
    if (addr_port(want))
        for (l = L.listeners; l; l = l->next)
            if (addr_eq(&l->bound, want)) break;
    if (l) l->refs++;
    else {
        HRESULT hr;
        l = (pg_listener *)pg_calloc(1, sizeof *l);
        if (!l) return E_OUTOFMEMORY;
        l->kind = OBJ_LISTENER;
        hr = SHIM->pfnListen(SHIM->pvContext, want, &l->s, &l->bound);
        if (FAILED(hr)) { pg_free(l); return hr; }
        if (!sock_put(l->s, l)) { SHIM->pfnClose(SHIM->pvContext, l->s); pg_free(l); return E_OUTOFMEMORY; }
        l->refs = 1;
        l->next = L.listeners;
        L.listeners = l;
        L.listeners_new = 1;
    }
    g->listener = l;
    g->listen_scope = scope;
    g->used_network = 1;
    /* tell the nodes we connected to where we can now be reached (U=1) */
    for (c = g->conns; c; c = c->gnext)
        if (!c->dead && c->state == CS_CONNECTED && c->outbound && !c->direct) send_connect(c, 1);
    presence_maintain(g, 0);       /* listening start: our presence */
    signature_calc(g);             /* ... and the signature */
    graph_schedule_maintenance(g); /* ... and graph maintenance */
    for (c = g->conns; c; c = c->gnext)
        if (!c->dead && conn_has_output(c)) conn_try_send(c);
    graph_update_status(g);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphListen(HGRAPH hGraph, DWORD dwScope, DWORD dwScopeId, WORD wPort)
{
    pg_graph *g;
    SOCKADDR_IN6 want;
    static const uint8_t any[16] = {0}, lo[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1};
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (dwScope > PEER_GRAPH_SCOPE_LOOPBACK) return E_INVALIDARG;
    if ((dwScope == PEER_GRAPH_SCOPE_SITELOCAL || dwScope == PEER_GRAPH_SCOPE_LINKLOCAL) != (dwScopeId != 0))
        return E_INVALIDARG;
    addr_make(&want, dwScope == PEER_GRAPH_SCOPE_LOOPBACK ? lo : any, wPort);
    return graph_listen(g, &want, dwScope);
}

HRESULT PeerGraphListenAddress(HGRAPH hGraph, const PEER_ADDRESS *pAddress)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pAddress || pAddress->dwSize != sizeof(PEER_ADDRESS) || pAddress->sin6.sin6_family != AF_INET6)
        return E_INVALIDARG;
    return graph_listen(g, &pAddress->sin6, PEER_GRAPH_SCOPE_ANY);
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
    for (c = g->conns; c; c = c->gnext) {
        SOCKADDR_IN6 ra;
        if (c->dead || c->direct) continue;
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
    graph_schedule_maintenance(g); /* arms the Graph Maintenance timer */
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
    db_save(g, 1);
    graph_publish_info(g);
    finish_call();
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
        rec_view v;
        presence_view pv;
        if (presence_of_node(g, ullNodeId, &v, &pv)) { /* what the node publishes */
            ni = (PPEER_NODE_INFO)pg_alloc(node_info_size(&v, &pv));
            if (!ni) return E_OUTOFMEMORY;
            node_info_fill(&v, &pv, ni);
            *ppNodeInfo = ni;
            return S_OK;
        }
        for (c = g->conns; c; c = c->gnext)
            if (!c->dead && c->state == CS_CONNECTED && c->remote_node == ullNodeId) break;
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
        if ((pEventRegistrations[i].eventType < PEER_GRAPH_EVENT_STATUS_CHANGED ||
             pEventRegistrations[i].eventType > PEER_GRAPH_EVENT_SYNCHRONIZED) &&
            pEventRegistrations[i].eventType != PEER_GRAPH_EVENT_SEND_READY)
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
    if (!map_put(&L.hregs, r->handle, r)) { reg_free(r); return E_OUTOFMEMORY; }
    r->next = L.regs;
    L.regs = r;
    r->gnext = g->regs;
    g->regs = r;
    *phPeerEvent = (HPEEREVENT)r->handle;
    return S_OK;
}

static pg_reg *reg_from_handle(HPEEREVENT h) { return (pg_reg *)map_get(&L.hregs, (uintptr_t)h); }

HRESULT PeerGraphUnregisterEvent(HPEEREVENT hPeerEvent)
{
    pg_reg **pp;
    REQUIRE_STARTED();
    if (!hPeerEvent) return E_INVALIDARG;
    {
        pg_reg *r = reg_from_handle(hPeerEvent), **gp;
        pg_graph *g;
        if (!r) return PEER_E_EVENT_HANDLE_NOT_FOUND;
        g = r->graph;
        for (pp = &L.regs; *pp && *pp != r; pp = &(*pp)->next) {}
        if (*pp) *pp = r->next;
        for (gp = &r->graph->regs; *gp && *gp != r; gp = &(*gp)->gnext) {}
        if (*gp) *gp = r->gnext;
        map_del(&L.hregs, r->handle);
        reg_free(r);
        graph_update_rx_pause(g); /* its undelivered data no longer holds reading */
        finish_call();
        return S_OK;
    }
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
    if ((*ppEventData)->eventType == PEER_GRAPH_EVENT_INCOMING_DATA) {
        r->data_bytes -= (*ppEventData)->incomingData.data.cbData;
        if (r->graph->rx_paused) { /* reading may resume */
            graph_update_rx_pause(r->graph);
            if (!r->graph->rx_paused) finish_call();
        }
    }
    return S_OK;
}

/* A live connection of g by ID (any state), or NULL. */
static pg_conn *graph_conn_find(const pg_graph *g, ULONGLONG id)
{
    pg_conn *c;
    for (c = g->conns; c; c = c->gnext)
        if (c->id == id && !c->dead) return c;
    return NULL;
}

HRESULT PeerGraphOpenDirectConnection(HGRAPH hGraph, PCWSTR pwzPeerId, PPEER_ADDRESS pAddress,
                                      ULONGLONG *pullConnectionId)
{
    pg_graph *g;
    pg_conn *c;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pullConnectionId || !peer_address_valid(pAddress) || !pwzPeerId || !wcs_valid(pwzPeerId, PEER_MAX_ID_CHARS, 0))
        return E_INVALIDARG;
    if (g->listener && wcs_eq(pwzPeerId, g->peer_id)) {
        SOCKADDR_IN6 la = g->listener->bound;
        if (addr_port(&la) == addr_port(&pAddress->sin6) &&
            (addr_is_loopback(&pAddress->sin6) || addr_eq(&la, &pAddress->sin6)))
            return PEER_E_CONNECT_SELF;
    }
    c = graph_start_connect(g, pwzPeerId, &pAddress->sin6, 1, 0, &hr);
    if (!c) { finish_call(); return hr; }
    *pullConnectionId = c->id;
    finish_call();
    return S_OK;
}

HRESULT PeerGraphSendData(HGRAPH hGraph, ULONGLONG ullConnectionId, const GUID *pType, ULONG cbData, PVOID pvData)
{
    pg_graph *g;
    pg_conn *c;
    ULONG cost;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pType || (cbData && !pvData) || cbData > PEER_MAX_DATA_SIZE || !memcmp(pType, &GUID_PING, sizeof *pType))
        return E_INVALIDARG;
    c = graph_conn_find(g, ullConnectionId);
    if (!c || c->state != CS_CONNECTED) return PEER_E_CONNECTION_NOT_FOUND;
    cost = cbData + PEER_DATA_MSG_OVERHEAD;
    if (c->app_queued && (c->app_queued >= c->app_limit || cost > c->app_limit - c->app_queued)) {
        c->want_ready = 1;
        return PEER_E_SEND_QUEUE_FULL;
    }
    /* The first message after a service goes out at once (latency); more in
     * the same round wait for the next service and share its writes.  A big
     * one with nothing queued before it is written from pvData directly. */
    conn_touch(c); /* queued data wants the socket writable */
    if (c->app_epoch != L.epoch && app_send_direct(c, pType, (const uint8_t *)pvData, cbData)) {
        c->app_epoch = L.epoch;
        finish_call();
        return S_OK;
    }
    {
        ULONG added;
        if (!app_enqueue(c, pType, (const uint8_t *)pvData, cbData, &added)) return E_OUTOFMEMORY;
        c->app_queued += added;
    }
    if (c->app_epoch != L.epoch) {
        c->app_epoch = L.epoch;
        conn_try_send(c);
    }
    finish_call();
    return S_OK;
}

HRESULT PeerGraphCloseDirectConnection(HGRAPH hGraph, ULONGLONG ullConnectionId)
{
    pg_graph *g;
    pg_conn *c;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    c = graph_conn_find(g, ullConnectionId);
    if (!c || !c->direct || c->state == CS_CLOSING) return PEER_E_CONNECTION_NOT_FOUND;
    if (c->state == CS_CONNECTED) conn_disconnect(c, DISC_APP, S_OK);
    else conn_abort(c, E_ABORT);
    finish_call();
    return S_OK;
}

static void graph_default_timers(PEER_MAINTENANCE_PROFILE profile, PEER_GRAPH_TIMERS *t)
{
    int fast = profile == PEER_MAINTENANCE_FAST;
    memset(t, 0, sizeof *t);
    t->dwSize = sizeof *t;
    t->ulMaintenanceMs = fast ? PEER_FAST_MAINT_MS : PEER_MAINT_CONNECTED_MS;
    t->ulMaintenanceIdleMs = fast ? PEER_FAST_MAINT_IDLE_MS : PEER_MAINT_IDLE_MS;
    t->ulRetryMs = fast ? PEER_FAST_RETRY_MS : PEER_MAINT_RETRY_MS;
    t->ulKeepaliveMs = PEER_FAST_KEEPALIVE_MS;
    t->ulDeadMs = PEER_FAST_DEAD_MS;
    t->ulContactMinMs = fast ? PEER_FAST_CONTACT_MIN_MS : PEER_CONTACT_MIN_MS;
    t->ulContactMaxMs = fast ? PEER_FAST_CONTACT_MAX_MS : PEER_CONTACT_MAX_MS;
    t->ulPartitionMinMs = fast ? PEER_FAST_PARTITION_MIN_MS : PEER_PARTITION_MIN_MS;
    t->ulPartitionMaxMs = fast ? PEER_FAST_PARTITION_MAX_MS : PEER_PARTITION_MAX_MS;
    t->ulSignatureStaleMs = fast ? PEER_FAST_SIGNATURE_STALE_MS : 0;
}

/* New timer values apply at once: a maintenance run due later than the new
 * period is brought forward; keepalive deadlines are recomputed. */
static void graph_timers_changed(pg_graph *g)
{
    pg_conn *c;
    if (g->maint_deadline != PEER_NO_DEADLINE && g->maint_deadline > L.now + g->timers.ulMaintenanceMs) {
        g->maint_deadline = L.now + maint_period(g->timers.ulMaintenanceIdleMs);
        wake_at(g->maint_deadline);
    }
    for (c = g->conns; c; c = c->gnext)
        if (!c->dead) conn_arm_keepalive(c); /* links made before keep their capability bits */
}

HRESULT PeerGraphSetMaintenanceProfile(HGRAPH hGraph, PEER_MAINTENANCE_PROFILE profile)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (profile != PEER_MAINTENANCE_COMPAT && profile != PEER_MAINTENANCE_FAST) return E_INVALIDARG;
    g->profile = profile;
    graph_default_timers(profile, &g->timers);
    graph_timers_changed(g);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphGetTimers(HGRAPH hGraph, PEER_GRAPH_TIMERS *pTimers)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pTimers) return E_INVALIDARG;
    *pTimers = g->timers;
    return S_OK;
}

HRESULT PeerGraphSetTimers(HGRAPH hGraph, const PEER_GRAPH_TIMERS *pTimers)
{
    pg_graph *g;
    const PEER_GRAPH_TIMERS *t = pTimers;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!t || t->dwSize != sizeof *t || t->ulMaintenanceMs < 100 || t->ulMaintenanceIdleMs < 100 || t->ulRetryMs < 10 ||
        t->ulKeepaliveMs < 10 || t->ulDeadMs < 2 * t->ulKeepaliveMs || t->ulMaintenanceMs > 86400000u ||
        t->ulMaintenanceIdleMs > 86400000u || t->ulRetryMs > 86400000u || t->ulKeepaliveMs > 86400000u ||
        t->ulDeadMs > 86400000u || t->ulContactMinMs < 10 || t->ulContactMinMs > t->ulContactMaxMs ||
        t->ulContactMaxMs > 86400000u || t->ulPartitionMinMs < 10 || t->ulPartitionMinMs > t->ulPartitionMaxMs ||
        t->ulPartitionMaxMs > 86400000u || (t->ulSignatureStaleMs && t->ulSignatureStaleMs < 300) ||
        t->ulSignatureStaleMs > 86400000u)
        return E_INVALIDARG;
    g->timers = *t;
    graph_timers_changed(g);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphSetDataQueueLimit(HGRAPH hGraph, ULONGLONG ullConnectionId, ULONG cbLimit)
{
    pg_graph *g;
    pg_conn *c;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (cbLimit < PEER_MIN_DATA_QUEUE || cbLimit > PEER_MAX_DATA_QUEUE) return E_INVALIDARG;
    if (!ullConnectionId) { g->data_limit = cbLimit; return S_OK; }
    if (!(c = graph_conn_find(g, ullConnectionId))) return PEER_E_CONNECTION_NOT_FOUND;
    c->app_limit = cbLimit;
    return S_OK;
}

HRESULT PeerGraphGetDataQueue(HGRAPH hGraph, ULONGLONG ullConnectionId, ULONG *pcbQueued, ULONG *pcbLimit)
{
    pg_graph *g;
    const pg_conn *c;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!(c = graph_conn_find(g, ullConnectionId))) return PEER_E_CONNECTION_NOT_FOUND;
    if (pcbQueued) *pcbQueued = c->app_queued;
    if (pcbLimit) *pcbLimit = c->app_limit;
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
    for (c = g->conns; c; c = c->gnext)
        if (!c->dead && c->state == CS_CONNECTED) n++;
    e->items = (PEER_CONNECTION_INFO *)pg_calloc(n, sizeof *e->items);
    if (!e->items) { pg_free(e); return E_OUTOFMEMORY; }
    for (c = g->conns; c; c = c->gnext) {
        PEER_CONNECTION_INFO *ci;
        DWORD kind;
        if (c->dead || c->state != CS_CONNECTED) continue;
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
    if (!map_put(&L.henums, e->handle, e)) { enum_free(e); return E_OUTOFMEMORY; }
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

/* Next items of a records or nodes enumeration (records looked up again:
 * what was deleted or expired since the snapshot is skipped). */
static HRESULT enum_next_records(pg_enum *e, ULONG *pCount, PVOID **pppvItems)
{
    ULONG want = *pCount, k = 0, i, pos;
    size_t size = 0;
    PVOID *arr;
    uint8_t *cur;
    uint64_t now = peer_time(e->graph);
    /* first pass: sizes of the next `want` live records */
    for (pos = e->pos; pos < e->n && k < want; pos++) {
        const pg_rec *r = rec_find(e->graph, e->ids + 16 * pos);
        rec_view v;
        presence_view pv;
        if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= now) continue;
        rec_view_of(e->graph, r, &v);
        if (e->kind == ENUM_NODES && !presence_parse(&v, &pv)) continue;
        size += ((e->kind == ENUM_NODES ? node_info_size(&v, &pv) : rec_api_size(&v)) + 7) & ~(size_t)7;
        k++;
    }
    *pppvItems = NULL;
    if (!k) { e->pos = e->n; *pCount = 0; return S_OK; }
    arr = (PVOID *)pg_alloc(k * sizeof(PVOID) + 8 + size);
    if (!arr) return E_OUTOFMEMORY;
    cur = (uint8_t *)(arr + k);
    cur += (8 - ((uintptr_t)cur & 7)) & 7;
    for (i = 0; e->pos < pos; e->pos++) {
        const pg_rec *r = rec_find(e->graph, e->ids + 16 * e->pos);
        rec_view v;
        presence_view pv;
        if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= now) continue;
        rec_view_of(e->graph, r, &v);
        if (e->kind == ENUM_NODES) {
            if (!presence_parse(&v, &pv)) continue;
            node_info_fill(&v, &pv, (PPEER_NODE_INFO)cur);
            arr[i++] = cur;
            cur += (node_info_size(&v, &pv) + 7) & ~(size_t)7;
            continue;
        }
        rec_to_api(&v, (PPEER_RECORD)cur);
        arr[i++] = cur;
        cur += (rec_api_size(&v) + 7) & ~(size_t)7;
    }
    *pCount = k;
    *pppvItems = arr;
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
    if (e->kind == ENUM_RECORDS || e->kind == ENUM_NODES) {
        if (!e->graph) {
            *pCount = 0; /* the graph was closed: the enumeration is over */
            *pppvItems = NULL;
            return S_OK;
        }
        return enum_next_records(e, pCount, pppvItems);
    }
    k = e->n - e->pos;
    if (*pCount < k) k = *pCount;
    *pppvItems = NULL;
    if (!k) { *pCount = 0; return S_OK; }
    size = k * sizeof(PVOID) + 8;
    for (i = 0; i < k; i++) size += ((sizeof(PEER_CONNECTION_INFO) + wsize(e->items[e->pos + i].pwzPeerId) + 7) & ~(size_t)7);
    arr = (PVOID *)pg_alloc(size);
    if (!arr) return E_OUTOFMEMORY;
    cur = (uint8_t *)(arr + k);
    for (i = 0; i < k; i++) {
        PEER_CONNECTION_INFO *ci;
        cur += (8 - ((uintptr_t)cur & 7)) & 7; /* each item 8-byte aligned */
        ci = (PEER_CONNECTION_INFO *)cur;
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
    {
        pg_enum *e = enum_from_handle(hPeerEnum);
        if (!e) return PEER_E_NOT_FOUND;
        for (pp = &L.enums; *pp && *pp != e; pp = &(*pp)->next) {}
        if (*pp) *pp = e->next;
        map_del(&L.henums, e->handle);
        enum_free(e);
        return S_OK;
    }
}

/* --- records API --- */

static int guid_reserved(const GUID *t)
{
    uint8_t w[16];
    static const uint8_t z[16] = {0};
    guid_put(w, t);
    return guid_is_internal(w) || !memcmp(w, z, 16);
}

/* Checks what Add and Update share; returns S_OK or the documented error. */
static HRESULT rec_check_app(const pg_graph *g, const PEER_RECORD *pr)
{
    uint64_t size;
    HRESULT hr;
    if (pr->dwSize != sizeof *pr || guid_reserved(&pr->type) || pr->dwFlags) return E_INVALIDARG;
    if ((pr->data.cbData && !pr->data.pbData) || (pr->securityData.cbData && !pr->securityData.pbData) ||
        pr->securityData.cbData > PEER_MAX_SECURITY_DATA)
        return E_INVALIDARG;
    if (pr->pwzAttributes && wcs_units16(pr->pwzAttributes) < 0) return E_INVALIDARG;
    size = (uint64_t)pr->data.cbData + (pr->pwzAttributes ? 2 * (uint64_t)u16_units(pr->pwzAttributes) : 0);
    if (size > g->max_record) return PEER_E_MAX_RECORD_SIZE_EXCEEDED;
    if (pr->pwzAttributes && (hr = attr_validate(pr->pwzAttributes)) != S_OK) return hr;
    return S_OK;
}

HRESULT PeerGraphAddRecord(HGRAPH hGraph, PPEER_RECORD pRecord, GUID *pRecordId)
{
    pg_graph *g;
    uint8_t id[16], type[16], *wire;
    size_t len;
    uint64_t now;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pRecord || !pRecordId) return E_INVALIDARG;
    if (pRecord->pwzCreatorId && !wcs_eq(pRecord->pwzCreatorId, g->peer_id)) return E_INVALIDARG;
    if ((hr = rec_check_app(g, pRecord)) != S_OK) return hr;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    now = peer_time(g);
    if (ft_get(&pRecord->ftExpiration) <= now) return E_INVALIDARG;
    rec_new_id(g->peer_id, id);
    guid_put(type, &pRecord->type);
    wire = rec_build(g, type, id, 1, 0, g->peer_id, NULL, &pRecord->securityData, now, ft_get(&pRecord->ftExpiration),
                     now, &pRecord->data, pRecord->pwzAttributes, &len);
    if (!wire) return E_OUTOFMEMORY;
    hr = graph_publish(g, wire, len);
    pg_free(wire);
    if (SUCCEEDED(hr)) guid_get(pRecordId, id);
    finish_call();
    return hr;
}

/* A live (not deleted, not expired) application record, or NULL. */
static pg_rec *rec_live(pg_graph *g, const GUID *id, rec_view *v)
{
    uint8_t w[16];
    pg_rec *r;
    guid_put(w, id);
    r = rec_find(g, w);
    if (!r || (r->flags & RF_DELETED) || rec_expires(r) <= peer_time(g)) return NULL;
    rec_view_of(g, r, v);
    return r;
}

HRESULT PeerGraphUpdateRecord(HGRAPH hGraph, PPEER_RECORD pRecord)
{
    pg_graph *g;
    pg_rec *r;
    rec_view v;
    uint8_t *wire;
    size_t len;
    uint64_t now, mod;
    wchar_t *creator;
    HRESULT hr;
    GUID t;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pRecord) return E_INVALIDARG;
    if ((hr = rec_check_app(g, pRecord)) != S_OK) return hr;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if (!(r = rec_live(g, &pRecord->id, &v))) return PEER_E_RECORD_NOT_FOUND;
    guid_get(&t, v.type);
    if (memcmp(&t, &pRecord->type, sizeof t) != 0) return E_INVALIDARG; /* the type never changes */
    if (ft_get(&pRecord->ftExpiration) < v.expires) return E_INVALIDARG; /* may only be extended */
    now = peer_time(g);
    mod = now > v.modified ? now : v.modified + 1;
    if (ft_get(&pRecord->ftExpiration) <= mod) return E_INVALIDARG;
    if (!(creator = u16_dup(v.creator, v.n_creator))) return E_OUTOFMEMORY;
    wire = rec_build(g, v.type, v.id, v.version + 1, 0, creator, g->peer_id, &pRecord->securityData, v.created,
                     ft_get(&pRecord->ftExpiration), mod, &pRecord->data, pRecord->pwzAttributes, &len);
    pg_free(creator);
    if (!wire) return E_OUTOFMEMORY;
    hr = graph_publish(g, wire, len);
    pg_free(wire);
    finish_call();
    return hr;
}

HRESULT PeerGraphDeleteRecord(HGRAPH hGraph, const GUID *pRecordId, BOOL fLocal)
{
    pg_graph *g;
    pg_rec *r;
    rec_view v;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pRecordId) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if (!(r = rec_live(g, pRecordId, &v))) return PEER_E_RECORD_NOT_FOUND;
    if (guid_is_internal(v.type)) return E_ACCESSDENIED;
    if (fLocal) {
        uint8_t id[16], type[16];
        memcpy(id, rec_id(r), 16);
        memcpy(type, rec_type(g, r), 16);
        if (FAILED(hr = log_append(g, LE_DROP, id, 16, 1))) return hr;
        rec_unlink(g, r);
        rs_free(r);
        emit_record(g, PEER_RECORD_DELETED, id, type);
        return S_OK;
    } else {
        /* a tombstone: an update with Deleted set and no payload or attributes */
        uint64_t now = peer_time(g), mod = now > v.modified ? now : v.modified + 1;
        wchar_t *creator = u16_dup(v.creator, v.n_creator);
        PEER_DATA sec;
        uint8_t *wire;
        size_t len;
        if (!creator) return E_OUTOFMEMORY;
        sec.cbData = v.n_sec;
        sec.pbData = (PBYTE)v.sec;
        wire = rec_build(g, v.type, v.id, v.version + 1, RF_DELETED, creator, g->peer_id, &sec, v.created,
                         v.expires > mod ? v.expires : mod + 1, mod, NULL, NULL, &len);
        pg_free(creator);
        if (!wire) return E_OUTOFMEMORY;
        hr = graph_publish(g, wire, len);
        pg_free(wire);
        finish_call();
        return hr;
    }
}

HRESULT PeerGraphGetRecord(HGRAPH hGraph, const GUID *pRecordId, PPEER_RECORD *ppRecord)
{
    pg_graph *g;
    rec_view v;
    PPEER_RECORD pr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pRecordId || !ppRecord) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if (!rec_live(g, pRecordId, &v)) return PEER_E_RECORD_NOT_FOUND;
    if (!(pr = (PPEER_RECORD)pg_alloc(rec_api_size(&v)))) return E_OUTOFMEMORY;
    rec_to_api(&v, pr);
    *ppRecord = pr;
    return S_OK;
}

/* Snapshot of the IDs of live records matching a filter (type, creator,
 * compiled query).  Internal record types are listed only when asked for by
 * type. */
static HRESULT enum_records(pg_graph *g, int kind, const GUID *type, const wchar_t *creator, const pg_query *q,
                            HPEERENUM *phPeerEnum)
{
    pg_enum *e;
    uint8_t tw[16];
    size_t i, n = 0;
    uint64_t now = peer_time(g);
    if (type) guid_put(tw, type);
    e = (pg_enum *)pg_calloc(1, sizeof *e);
    if (!e) return E_OUTOFMEMORY;
    e->kind = kind;
    e->graph = g;
    e->ids = (uint8_t *)pg_alloc(16 * (g->rec_count ? g->rec_count : 1));
    if (!e->ids) { pg_free(e); return E_OUTOFMEMORY; }
    for (i = 0; i < rec_span(g); i++) {
        const pg_rec *r = rec_at(g, i);
        if (r) {
            rec_view v;
            if ((r->flags & RF_DELETED) || rec_expires(r) <= now || rec_departed(r)) continue;
            if (type ? memcmp(rec_type(g, r), tw, 16) != 0 : guid_is_internal(rec_type(g, r))) continue;
            rec_view_of(g, r, &v);
            if (creator && !u16_eq(v.creator, v.n_creator, creator)) continue;
            if (q) {
                pg_search_rec sr;
                GUID gid, gtype;
                wchar_t *a = v.n_attr ? u16_dup(v.attr, v.n_attr) : NULL;
                wchar_t *c = u16_dup(v.creator, v.n_creator), *mb = v.n_modby ? u16_dup(v.modby, v.n_modby) : NULL;
                int ok;
                guid_get(&gid, v.id);
                guid_get(&gtype, v.type);
                sr.attributes = a;
                sr.creator = c;
                sr.modified_by = mb;
                sr.id = &gid;
                sr.type = &gtype;
                sr.creation = v.created;
                sr.last_modified = v.modified;
                ok = c && (!v.n_attr || a) && (!v.n_modby || mb) && query_match(q, &sr);
                pg_free(a); pg_free(c); pg_free(mb);
                if (!ok) continue;
            }
            memcpy(e->ids + 16 * n++, rec_id(r), 16);
        }
    }
    e->n = (ULONG)n;
    e->handle = new_handle();
    if (!map_put(&L.henums, e->handle, e)) { enum_free(e); return E_OUTOFMEMORY; }
    e->next = L.enums;
    L.enums = e;
    *phPeerEnum = (HPEERENUM)e->handle;
    return S_OK;
}

HRESULT PeerGraphEnumRecords(HGRAPH hGraph, const GUID *pRecordType, PCWSTR pwzPeerId, HPEERENUM *phPeerEnum)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!phPeerEnum || (pwzPeerId && !wcs_valid(pwzPeerId, PEER_MAX_ID_CHARS, 0))) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    return enum_records(g, ENUM_RECORDS, pRecordType, pwzPeerId, NULL, phPeerEnum);
}

HRESULT PeerGraphEnumNodes(HGRAPH hGraph, PCWSTR pwzPeerId, HPEERENUM *phPeerEnum)
{
    pg_graph *g;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!phPeerEnum || (pwzPeerId && !wcs_valid(pwzPeerId, PEER_MAX_ID_CHARS, 0))) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    hr = enum_records(g, ENUM_NODES, &GUID_PRESENCE_TYPE_G, pwzPeerId, NULL, phPeerEnum);
    return hr;
}

HRESULT PeerGraphSetPresence(HGRAPH hGraph, BOOL fPresent)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    g->force_presence = fPresent ? 1 : 0;
    presence_maintain(g, 0);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphSetNodeAttributes(HGRAPH hGraph, PCWSTR pwzAttributes)
{
    pg_graph *g;
    wchar_t *a = NULL;
    PEER_GRAPH_EVENT_DATA e;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (pwzAttributes && !wcs_valid(pwzAttributes, PEER_MAX_NODE_ATTRIBUTES_CHARS, 1)) return E_INVALIDARG;
    if (pwzAttributes && *pwzAttributes && !(a = pg_wcsdup(pwzAttributes))) return E_OUTOFMEMORY;
    pg_free(g->node_attrs);
    g->node_attrs = a;
    presence_maintain(g, 0); /* republishes a presence record we have */
    memset(&e, 0, sizeof e);
    e.eventType = PEER_GRAPH_EVENT_NODE_CHANGED;
    e.nodeChangeData.dwSize = sizeof e.nodeChangeData;
    e.nodeChangeData.changeType = PEER_NODE_CHANGE_UPDATED;
    e.nodeChangeData.ullNodeId = 0; /* the local node, as the Windows sample reads it */
    emit(g, &e, NULL, g->peer_id);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphSearchRecords(HGRAPH hGraph, PCWSTR pwzCriteria, HPEERENUM *phPeerEnum)
{
    pg_graph *g;
    pg_query *q = NULL;
    HRESULT hr;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pwzCriteria || !phPeerEnum) return E_INVALIDARG;
    if (!g->synchronized) return PEER_E_GRAPH_NOT_READY;
    if ((hr = query_compile(pwzCriteria, &q)) != S_OK) return hr;
    hr = enum_records(g, ENUM_RECORDS, NULL, NULL, q, phPeerEnum);
    query_free(q);
    return hr;
}

/* 1 if id (wire form) is one of the n GUIDs. */
static int id_listed(const uint8_t *id, const GUID *ids, ULONG n)
{
    ULONG i;
    for (i = 0; i < n; i++) {
        uint8_t w[16];
        guid_put(w, &ids[i]);
        if (!memcmp(w, id, 16)) return 1;
    }
    return 0;
}

HRESULT PeerGraphSetRecordLimits(HGRAPH hGraph, ULONG cMaxRecords, ULONGLONG cbMaxBytes)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (cMaxRecords) g->max_records = cMaxRecords;
    if (cbMaxBytes) g->max_rec_bytes = cbMaxBytes;
    return S_OK;
}

HRESULT PeerGraphValidateDeferredRecords(HGRAPH hGraph, ULONG cRecordIds, const GUID *pRecordIds)
{
    pg_graph *g;
    pg_rec **chosen;
    ULONG i, nk = 0, nc = 0;
    pg_buf w = {0};
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (cRecordIds && !pRecordIds) return E_INVALIDARG;
    if (!g->n_deferred) return S_OK;
    /* The records not chosen stay on the list, in order; each chosen one
     * goes through record_in as if just received (3.1.4.10): it may be
     * stored and flooded, rejected, or deferred again (back on the list,
     * after the ones not chosen). */
    if (!(chosen = (pg_rec **)pg_alloc(g->n_deferred * sizeof *chosen))) return E_OUTOFMEMORY;
    g->deferred_bytes = 0;
    for (i = 0; i < g->n_deferred; i++) {
        pg_rec *r = g->deferred[i];
        if (cRecordIds && !id_listed(rec_id(r), pRecordIds, cRecordIds)) {
            g->deferred[nk++] = r;
            g->deferred_bytes += rec_len(g, r);
        } else
            chosen[nc++] = r;
    }
    g->n_deferred = nk;
    for (i = 0; i < nc; i++) {
        rec_view v;
        int useful;
        if (rec_view_of(g, chosen[i], &v) && rec_validate(g, &v, peer_time(g))) { /* it may have expired */
            if (rec_wire_of(&v, &w)) record_in(g, NULL, w.p, w.len, &v, &useful);
            else g->rejected_records++; /* no memory: dropped like a rejected one */
        }
        rs_free(chosen[i]);
    }
    pg_free(chosen);
    buf_free(&w);
    finish_call();
    return S_OK;
}

HRESULT PeerGraphUniversalTimeToPeerTime(HGRAPH hGraph, FILETIME *pftUniversalTime, FILETIME *pftPeerTime)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pftUniversalTime || !pftPeerTime) return E_INVALIDARG;
    ft_set(pftPeerTime, (uint64_t)((int64_t)ft_get(pftUniversalTime) - g->ptd));
    return S_OK;
}

HRESULT PeerGraphPeerTimeToUniversalTime(HGRAPH hGraph, FILETIME *pftPeerTime, FILETIME *pftUniversalTime)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pftUniversalTime || !pftPeerTime) return E_INVALIDARG;
    ft_set(pftUniversalTime, (uint64_t)((int64_t)ft_get(pftPeerTime) + g->ptd));
    return S_OK;
}

HRESULT PeerGraphGetDatabaseInfo(HGRAPH hGraph, PEER_DATABASE_INFO *pInfo)
{
    pg_graph *g;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pInfo || pInfo->dwSize != sizeof *pInfo) return E_INVALIDARG;
    pInfo->cRecords = (ULONG)g->rec_count;
    pInfo->cbRecords = g->rec_bytes;
    pInfo->cbFile = g->log_bytes;
    pInfo->cbTornTailDropped = g->db_torn_bytes;
    pInfo->cCorruptEntriesDropped = g->db_bad_entries;
    pInfo->cRejectedRecords = g->rejected_records;
    return S_OK;
}

/* --- export / import (the file is a compact database log, PROTOCOL.md 3b) --- */

static FILE *wfopen(PCWSTR path, const char *mode)
{
#ifdef _WIN32
    wchar_t wm[4];
    size_t i;
    for (i = 0; mode[i] && i < 3; i++) wm[i] = (wchar_t)mode[i];
    wm[i] = 0;
    return _wfopen(path, wm);
#else
    char *p8 = wcs_to_utf8(path);
    FILE *f = p8 ? fopen(p8, mode) : NULL;
    pg_free(p8);
    return f;
#endif
}

HRESULT PeerGraphExportDatabase(HGRAPH hGraph, PCWSTR pwzFilePath)
{
    pg_graph *g;
    pg_buf meta = {0};
    FILE *f;
    ULONGLONG bytes = 8;
    int ok;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pwzFilePath || !*pwzFilePath || wcs_units16(pwzFilePath) < 0) return E_INVALIDARG;
    if (!meta_body(g, &meta)) { buf_free(&meta); return E_OUTOFMEMORY; }
    f = wfopen(pwzFilePath, "wb");
    if (!f) { buf_free(&meta); return E_ACCESSDENIED; }
    ok = db_write_snapshot(g, f, meta.p, meta.len, &bytes);
    ok = file_sync(f) && ok;
    ok = fclose(f) == 0 && ok;
    buf_free(&meta);
    return ok ? S_OK : E_ACCESSDENIED;
}

typedef struct import_ctx { pg_graph *g; int meta_ok, meta_bad, synced, oom; ULONG added; } import_ctx;

static void import_entry(void *pv, int kind, const uint8_t *body, size_t n)
{
    import_ctx *ic = (import_ctx *)pv;
    pg_graph *g = ic->g;
    if (kind == LE_META) {
        pg_meta m;
        if (!meta_parse(body, n, &m)) { ic->meta_bad = 1; return; }
        if (!wcs_eq(m.gid, g->graph_id) || !wcs_eq(m.pid, g->peer_id)) ic->meta_bad = 1;
        else { ic->meta_ok = 1; ic->synced = m.synchronized; }
        meta_free(&m);
    } else if (kind == LE_REC && ic->meta_ok && !ic->meta_bad) {
        rec_view v, lv;
        pg_rec *local;
        HRESULT hr;
        if (!rec_parse(body, n, &v) || !rec_validate(g, &v, peer_time(g))) return;
        if (guid_is_internal(v.type) && v.type[2] != 1) return; /* no stale presence/contact/signature */
        local = rec_find(g, v.id);
        if (local) {
            rec_view_of(g, local, &lv);
            if (rec_compare(&v, &lv) <= 0) return; /* ours is as new */
        }
        hr = sec_validate(g, &v, rec_change_type(g, &v));
        if (hr == PEER_E_DEFERRED_VALIDATION) { sec_defer(g, &v); return; }
        if (hr != S_OK) { g->rejected_records++; return; }
        if (!graph_store(g, body, n, 1, &hr)) { if (hr == E_OUTOFMEMORY) ic->oom = 1; return; }
        ic->added++;
    }
}

HRESULT PeerGraphImportDatabase(HGRAPH hGraph, PCWSTR pwzFilePath)
{
    pg_graph *g;
    FILE *f;
    uint8_t *buf;
    size_t n;
    HRESULT hr;
    import_ctx ic;
    ULONG bad = 0;
    ULONGLONG torn = 0;
    REQUIRE_STARTED();
    if (!(g = graph_from_handle(hGraph))) return PEER_E_INVALID_GRAPH;
    if (!pwzFilePath || !*pwzFilePath || wcs_units16(pwzFilePath) < 0) return E_INVALIDARG;
    if (g->used_network) return PEER_E_GRAPH_IN_USE;
    if (g->is_creator) return E_ACCESSDENIED; /* only into a graph opened with PeerGraphOpen */
    f = wfopen(pwzFilePath, "rb");
    if (!f) return PEER_E_DATABASE_NOT_PRESENT;
    hr = file_read_all(f, &buf, &n);
    fclose(f);
    if (FAILED(hr)) return hr;
    if (n < 8 || memcmp(buf, LOG_MAGIC, 8) != 0) { pg_free(buf); return PEER_E_INVALID_DATABASE; }
    memset(&ic, 0, sizeof ic);
    ic.g = g;
    /* first pass: the file must name this graph and peer */
    log_walk(buf, n, import_entry, &ic, &bad, &torn);
    pg_free(buf);
    if (!ic.meta_ok || ic.meta_bad) return PEER_E_INVALID_DATABASE;
    if (ic.oom) return E_OUTOFMEMORY;
    if (ic.synced && !g->synchronized) graph_set_synchronized(g);
    finish_call();
    return S_OK;
}
