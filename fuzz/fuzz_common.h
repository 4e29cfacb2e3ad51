/*
 * fuzz_common.h - shared by the libFuzzer targets in fuzz/ and by their plain
 * replay in tests/test_fuzz_replay.c (which includes all four target files
 * in one translation unit, so everything here is static inline or guarded).
 *
 * The library runs on the in-memory network of tests/fake_net.c with a
 * synthetic clock; nothing touches a real socket.  A target keeps its
 * library instance and graphs between inputs (static init-once) and
 * restarts them (PeerGraphShutdown, fake_net_reset, PeerGraphStartup, new
 * graphs) when an input changed their state, so memory stays bounded and
 * each input starts from nearly the same state.
 *
 * Database directory: $P2PG_FUZZ_DB_DIR if set (`make fuzz-run` points it at
 * a tmpfs directory when there is one: the database code fsyncs), else
 * build/tmp-fuzz-db.
 */
#ifndef FUZZ_COMMON_H
#define FUZZ_COMMON_H

#include <stdint.h>
#include <stddef.h>
#include "rawpeer.h" /* testutil.h (cmocka.h, p2pgraph.h, fake_net.h) + the raw MS-PPGRH encoder */

/* The harness's own sanity checks (not the library's behaviour): under
 * libFuzzer a failed one aborts (reported as a crash, with the input); in the
 * replay test it fails the cmocka test. */
#ifdef FUZZ_REPLAY
#define FZ_CHECK(x) assert_true(x)
#else
#define FZ_CHECK(x)                                                                                  \
    do {                                                                                             \
        if (!(x)) {                                                                                  \
            fprintf(stderr, "fuzz harness check failed: %s (%s:%d)\n", #x, __FILE__, __LINE__);      \
            abort();                                                                                 \
        }                                                                                            \
    } while (0)
#endif

/* fake_net's UTC: 2026-01-01T00:00:00Z as FILETIME, plus the clock (fake_net.h). */
#define FZ_UTC_BASE 134116992000000000ULL
#define FZ_SECOND 10000000ULL

#ifdef _WIN32
#include <process.h>
#define fz_getpid() _getpid()
#else
#define fz_getpid() getpid() /* unistd.h, from testutil.h */
#endif

static char fz_dir[512];
static wchar_t fz_wdir[512];

static inline void fz_widen(const char *s, wchar_t *w, size_t n)
{
    size_t i;
    for (i = 0; s[i] && i + 1 < n; i++) w[i] = (wchar_t)(unsigned char)s[i];
    w[i] = 0;
}

static inline const char *fz_db_dir(void)
{
    if (!fz_dir[0]) {
        const char *e = getenv("P2PG_FUZZ_DB_DIR");
        snprintf(fz_dir, sizeof fz_dir, "%s", (e && *e) ? e : "build/tmp-fuzz-db");
        fz_widen(fz_dir, fz_wdir, sizeof fz_wdir / sizeof fz_wdir[0]);
    }
    return fz_dir;
}

/* Database and file names carry the process ID, so that several fuzzer
 * processes (libFuzzer -jobs/-fork, a merge beside a run) may share the
 * directory: base "fuzzwire0" -> "fuzzwire0-1234". */
static inline void fz_name(char *out, size_t n, const char *base)
{
    snprintf(out, n, "%s-%ld", base, (long)fz_getpid());
}
static inline const wchar_t *fz_wname(wchar_t *out, size_t n, const char *base)
{
    char t[128];
    fz_name(t, sizeof t, base);
    fz_widen(t, out, n);
    return out;
}

/* Starts the library on the fake network (fresh clock, sockets, seed). */
static inline void fz_lib_start(void)
{
    PEER_VERSION_DATA vd;
    fake_net_reset();
    FZ_CHECK(PeerGraphSetNetShim(fake_net_shim()) == S_OK);
    tu_mkdir("build");
    tu_mkdir(fz_db_dir());
    FZ_CHECK(PeerGraphSetDatabaseDirectory(fz_wdir) == S_OK);
    FZ_CHECK(PeerGraphStartup(PEER_GRAPH_VERSION, &vd) == S_OK);
}

/* Shuts it down; every library socket must be closed then. */
static inline void fz_lib_stop(void)
{
    FZ_CHECK(PeerGraphShutdown() == S_OK);
    FZ_CHECK(fake_net_open_sockets() == 0);
    FZ_CHECK(PeerGraphSetNetShim(NULL) == S_OK);
    FZ_CHECK(PeerGraphSetDatabaseDirectory(NULL) == S_OK);
    fake_net_reset();
}

/* Closes h and deletes its database file. */
static inline void fz_close_delete(HGRAPH h, const wchar_t *graphId, const wchar_t *peerId, const wchar_t *db)
{
    FZ_CHECK(PeerGraphClose(h) == S_OK);
    PeerGraphDelete(graphId, peerId, db);
}

/* A new graph (any stale database of that name deleted first). */
static inline HGRAPH fz_create(const wchar_t *graphId, const wchar_t *peerId, const wchar_t *db, DWORD maxRecord)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h = NULL;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)graphId;
    p.pwzCreatorId = (PWSTR)peerId;
    p.pwzFriendlyName = (PWSTR)L"fuzz graph";
    p.pwzComment = (PWSTR)L"fuzz";
    p.dwMaxRecordSize = maxRecord;
    p.cPresenceMax = (ULONG)-1;
    PeerGraphDelete(graphId, peerId, db);
    FZ_CHECK(PeerGraphCreate(&p, db, NULL, &h) == S_OK);
    return h;
}

static inline HPEEREVENT fz_register_all(HGRAPH h)
{
    PEER_GRAPH_EVENT_REGISTRATION r[10];
    HPEEREVENT e = NULL;
    int i;
    for (i = 0; i < 9; i++) { r[i].eventType = (PEER_GRAPH_EVENT_TYPE)(i + 1); r[i].pType = NULL; }
    r[9].eventType = PEER_GRAPH_EVENT_SEND_READY;
    r[9].pType = NULL;
    FZ_CHECK(PeerGraphRegisterEvent(h, NULL, 10, r, &e) == S_OK);
    return e;
}

/* Listens on an ephemeral port of [::]; returns [::1]:port. */
static inline SOCKADDR_IN6 fz_listen(HGRAPH h)
{
    PPEER_NODE_INFO ni = NULL;
    unsigned short port;
    FZ_CHECK(PeerGraphListen(h, PEER_GRAPH_SCOPE_ANY, 0, 0) == S_OK);
    FZ_CHECK(PeerGraphGetNodeInfo(h, 0, &ni) == S_OK);
    FZ_CHECK(ni->cAddresses >= 1);
    port = fake_net_port(&ni->pAddresses[0].sin6);
    PeerGraphFreeData(ni);
    return fake_net_addr_loopback6(port);
}

/* Services n times, moving the synthetic clock by step ms each time. */
static inline void fz_pump(int n, ULONGLONG step)
{
    int i;
    for (i = 0; i < n; i++) {
        fake_net_advance(step);
        FZ_CHECK(SUCCEEDED(PeerGraphService(NULL, 0, fake_net_now())));
    }
}

/* The current peer time of h. */
static inline ULONGLONG fz_peer_now(HGRAPH h)
{
    FILETIME u, p;
    ULONGLONG t = FZ_UTC_BASE + fake_net_now() * 10000ULL;
    u.dwLowDateTime = (DWORD)t;
    u.dwHighDateTime = (DWORD)(t >> 32);
    FZ_CHECK(PeerGraphUniversalTimeToPeerTime(h, &u, &p) == S_OK);
    return ((ULONGLONG)p.dwHighDateTime << 32) | p.dwLowDateTime;
}

/* Reads every character of a returned string (ASan sees a missing NUL). */
static volatile unsigned fz_sink;
static inline void fz_touch_wcs(const wchar_t *w)
{
    if (w) fz_sink += (unsigned)wcslen(w);
}
static inline void fz_touch_bytes(const void *p, size_t n)
{
    const unsigned char *b = (const unsigned char *)p;
    size_t i;
    unsigned s = 0;
    for (i = 0; i < n; i++) s += b[i];
    fz_sink += s;
}
static inline void fz_touch_record(const PEER_RECORD *r)
{
    FZ_CHECK(r->dwSize == sizeof *r);
    fz_touch_wcs(r->pwzCreatorId);
    fz_touch_wcs(r->pwzModifiedById);
    fz_touch_wcs(r->pwzAttributes);
    fz_touch_bytes(r->data.pbData, r->data.cbData);
    fz_touch_bytes(r->securityData.pbData, r->securityData.cbData);
}

/* Takes every queued event; returns a bit mask of the event types seen
 * (bit = type, SEND_READY as bit 0). */
static inline unsigned fz_drain(HPEEREVENT e)
{
    PPEER_GRAPH_EVENT_DATA d;
    unsigned mask = 0;
    for (;;) {
        HRESULT hr = PeerGraphGetEventData(e, &d);
        FZ_CHECK(SUCCEEDED(hr));
        if (hr == PEER_S_NO_EVENT_DATA) break;
        mask |= d->eventType == PEER_GRAPH_EVENT_SEND_READY ? 1u : 1u << ((unsigned)d->eventType & 31);
        if (d->eventType == PEER_GRAPH_EVENT_INCOMING_DATA)
            fz_touch_bytes(d->incomingData.data.pbData, d->incomingData.data.cbData);
        else if (d->eventType == PEER_GRAPH_EVENT_NODE_CHANGED)
            fz_touch_wcs(d->nodeChangeData.pwzPeerId);
        PeerGraphFreeData(d);
    }
    return mask;
}

/* Events after which a target restarts: the graph's content changed (the
 * status is compared with its value after the restart instead). */
#define FZ_STATE_EVENTS                                                                              \
    ((1u << PEER_GRAPH_EVENT_PROPERTY_CHANGED) | (1u << PEER_GRAPH_EVENT_RECORD_CHANGED) |          \
     (1u << PEER_GRAPH_EVENT_NODE_CHANGED) | (1u << PEER_GRAPH_EVENT_SYNCHRONIZED))

/* CONNECTED connections of h (neighbor and direct), each read. */
static inline ULONG fz_connections(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0, k, i;
    PVOID *items = NULL;
    FZ_CHECK(PeerGraphEnumConnections(h, PEER_CONNECTION_NEIGHBOR | PEER_CONNECTION_DIRECT, &en) == S_OK);
    FZ_CHECK(PeerGraphGetItemCount(en, &n) == S_OK);
    k = n;
    FZ_CHECK(PeerGraphGetNextItem(en, &k, &items) == S_OK);
    FZ_CHECK(k == n);
    for (i = 0; i < k; i++) fz_touch_wcs(((const PEER_CONNECTION_INFO *)items[i])->pwzPeerId);
    PeerGraphFreeData(items);
    FZ_CHECK(PeerGraphEndEnumeration(en) == S_OK);
    return n;
}

static inline ULONG fz_record_count(HGRAPH h)
{
    PEER_DATABASE_INFO di;
    memset(&di, 0, sizeof di);
    di.dwSize = sizeof di;
    FZ_CHECK(PeerGraphGetDatabaseInfo(h, &di) == S_OK);
    return di.cRecords;
}

/* Walks an enumeration of records, reading each one. */
static inline ULONG fz_walk_records(HPEERENUM en)
{
    ULONG total = 0, cnt = 0, i;
    PVOID *items = NULL;
    FZ_CHECK(PeerGraphGetItemCount(en, &cnt) == S_OK);
    for (;;) {
        ULONG k = 3;
        HRESULT hr = PeerGraphGetNextItem(en, &k, &items);
        FZ_CHECK(SUCCEEDED(hr));
        if (!k) { PeerGraphFreeData(items); break; }
        for (i = 0; i < k; i++) fz_touch_record((const PEER_RECORD *)items[i]);
        total += k;
        PeerGraphFreeData(items);
        if (total > cnt + 16) break; /* GetNextItem never ends: let ASan/the caller see it */
    }
    FZ_CHECK(total <= cnt);
    FZ_CHECK(PeerGraphEndEnumeration(en) == S_OK);
    return total;
}

/* Every live record of h: application records and each internal type. */
static inline void fz_read_all_records(HGRAPH h)
{
    static const GUID internal[4] = {{0x100, 0, 0, {0}}, {0x200, 0, 0, {0}}, {0x300, 0, 0, {0}}, {0x400, 0, 0, {0}}};
    HPEERENUM en;
    int i;
    if (PeerGraphEnumRecords(h, NULL, NULL, &en) == S_OK) fz_walk_records(en);
    for (i = 0; i < 4; i++)
        if (PeerGraphEnumRecords(h, &internal[i], NULL, &en) == S_OK) fz_walk_records(en);
}

/* Every node of h (presence records): EnumNodes and GetNodeInfo of each. */
static inline void fz_read_nodes(HGRAPH h)
{
    HPEERENUM en;
    PVOID *items = NULL;
    ULONG k, i, j;
    if (PeerGraphEnumNodes(h, NULL, &en) != S_OK) return;
    for (;;) {
        k = 4;
        FZ_CHECK(SUCCEEDED(PeerGraphGetNextItem(en, &k, &items)));
        if (!k) { PeerGraphFreeData(items); break; }
        for (i = 0; i < k; i++) {
            const PEER_NODE_INFO *ni = (const PEER_NODE_INFO *)items[i];
            PPEER_NODE_INFO again = NULL;
            fz_touch_wcs(ni->pwzPeerId);
            fz_touch_wcs(ni->pwzAttributes);
            for (j = 0; j < ni->cAddresses; j++) fz_touch_bytes(&ni->pAddresses[j], sizeof ni->pAddresses[j]);
            if (PeerGraphGetNodeInfo(h, ni->ullNodeId, &again) == S_OK) {
                fz_touch_wcs(again->pwzPeerId);
                fz_touch_wcs(again->pwzAttributes);
                PeerGraphFreeData(again);
            }
        }
        PeerGraphFreeData(items);
    }
    FZ_CHECK(PeerGraphEndEnumeration(en) == S_OK);
}

/* A few searches over the attribute names the seeds use. */
static inline void fz_fixed_searches(HGRAPH h)
{
    static const wchar_t *const q[] = {
        L"<peersearch><clause attrib=\"s\" type=\"string\" compare=\"equal\">*o*</clause></peersearch>",
        L"<peersearch><or><clause attrib=\"n\" type=\"int\" compare=\"greater\">7</clause>"
        L"<clause attrib=\"a\" type=\"string\">?</clause></or></peersearch>",
        L"<peersearch><and><clause attrib=\"d\" type=\"date\" compare=\"lessorequal\">2030-01-01T00:00:00Z</clause>"
        L"<clause attrib=\"peercreatorid\" type=\"string\" compare=\"notequal\">x*</clause></and></peersearch>",
        L"<peersearch><clause attrib=\"multi\" type=\"string\" compare=\"greaterorequal\">\\*</clause></peersearch>",
    };
    size_t i;
    for (i = 0; i < sizeof q / sizeof q[0]; i++) {
        HPEERENUM en;
        if (PeerGraphSearchRecords(h, q[i], &en) == S_OK) fz_walk_records(en);
    }
}

/* Attribute XML of the records the targets start with (tests/test_search.c). */
static const wchar_t fz_attrs1[] =
    L"<attributes>"
    L"<attribute name=\"s\" type=\"string\">Hello World</attribute>"
    L"<attribute name=\"n\" type=\"int\">42</attribute>"
    L"<attribute name=\"d\" type=\"date\">2003-02-15T12:00:00Z</attribute>"
    L"<attribute name=\"multi\" type=\"string\">red</attribute>"
    L"<attribute name=\"MULTI\" type=\"string\">green</attribute>"
    L"<attribute name=\"mixed\" type=\"int\">7</attribute>"
    L"<attribute name=\"mixed\" type=\"string\">seven</attribute>"
    L"<attribute name=\"empty\" type=\"string\"/>"
    L"</attributes>";
static const wchar_t fz_attrs2[] =
    L"<?xml version=\"1.0\"?><attributes><attribute name=\"a\" type=\"string\">it&apos;s &#x263A; a &lt;b&gt;</attribute>"
    L"<attribute name=\"n\" type=\"int\">-9</attribute></attributes>";

/* Adds an application record (type {fuzz0000-...-n}) to h; expires in
 * `days` days of peer time. */
static inline void fz_add_record(HGRAPH h, unsigned n, const char *data, const wchar_t *attrs, unsigned days)
{
    PEER_RECORD r;
    GUID id;
    ULONGLONG exp = fz_peer_now(h) + (ULONGLONG)days * 86400ULL * FZ_SECOND;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type.Data1 = 0xF0220000u + n;
    r.type.Data2 = 0x1234;
    r.type.Data3 = 0x5678;
    r.type.Data4[7] = (unsigned char)n;
    r.ftExpiration.dwLowDateTime = (DWORD)exp;
    r.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    r.data.cbData = (ULONG)strlen(data);
    r.data.pbData = (PBYTE)data;
    r.pwzAttributes = (PWSTR)attrs;
    FZ_CHECK(PeerGraphAddRecord(h, &r, &id) == S_OK);
}

/* ---- record wire form (MS-PPGRH PEER_RECORD, PROTOCOL.md R1/R2) ---------- */

typedef struct fz_rec_layout {
    size_t creator, n_creator; /* byte offset of the creator's units, units (NUL included) */
    size_t times;              /* offset of creation, expiration, last modification */
    size_t len;                /* bytes of the whole record */
} fz_rec_layout;

static inline unsigned long fz_get32(const uint8_t *p)
{
    return ((unsigned long)p[0] << 24) | ((unsigned long)p[1] << 16) | ((unsigned long)p[2] << 8) | p[3];
}
static inline ULONGLONG fz_get64(const uint8_t *p) { return ((ULONGLONG)fz_get32(p) << 32) | fz_get32(p + 4); }
static inline void fz_put32(uint8_t *p, unsigned long v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline void fz_put64(uint8_t *p, ULONGLONG v) { fz_put32(p, (unsigned long)(v >> 32)); fz_put32(p + 4, (unsigned long)v); }

/* Structural layout of the record at p[0..n) (its length may be less than
 * n); 0 if the lengths do not fit. */
static inline int fz_rec_parse(const uint8_t *p, size_t n, fz_rec_layout *l)
{
    size_t i = 40, k;
    int f;
    memset(l, 0, sizeof *l);
    if (n < 90) return 0;
    for (f = 0; f < 7; f++) {
        if (f == 3) { /* the three times */
            if (n - i < 24) return 0;
            l->times = i;
            i += 24;
            continue;
        }
        if (f == 5) { /* protocol version, then the data */
            if (n - i < 2) return 0;
            i += 2;
        }
        if (n - i < 4) return 0;
        k = fz_get32(p + i);
        i += 4;
        if (f == 0) { l->creator = i; l->n_creator = k; }
        if (f != 2 && f != 5) { /* UTF-16 strings: units */
            if (k > (n - i) / 2) return 0;
            k *= 2;
        } else if (k > n - i)
            return 0;
        i += k;
    }
    l->len = i;
    return 1;
}

static inline void fz_md5(const uint8_t *p, size_t n, uint8_t out[16])
{
    FZ_CHECK(mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_MD5), p, n, out) == 0);
}

/* Makes the record ID's upper half match its creator (PROTOCOL.md R2). */
static inline void fz_rec_fix_id(uint8_t *p, const fz_rec_layout *l)
{
    uint8_t h[16];
    int i;
    fz_md5(p + l->creator, l->n_creator ? 2 * (l->n_creator - 1) : 0, h);
    for (i = 0; i < 8; i++) p[16 + i] = (uint8_t)(h[i] ^ h[8 + i]);
}

/* Reads the three times as signed offsets from `now` (FILETIME units). */
static inline void fz_rec_fix_times(uint8_t *p, const fz_rec_layout *l, ULONGLONG now)
{
    int i;
    for (i = 0; i < 3; i++) fz_put64(p + l->times + 8 * i, now + fz_get64(p + l->times + 8 * i));
}

/* ---- the raw peer ---------------------------------------------------------- */

/* What the library sends is checked as it is read (README, PROTOCOL.md F1,
 * F4, P17): frames of 1..16,379 payload bytes or 2-byte keepalive frames
 * between messages; messages of at least 8 bytes with
 * version 0x10 and a zero reserved field; a frame never holds the end of
 * one message and the start of the next. */
typedef struct fz_out {
    unsigned fh, mh;          /* frame / message header bytes held */
    unsigned char fhdr[2], mhdr[8];
    size_t frame_left, msg_left;
} fz_out;

static inline void fz_out_feed(fz_out *o, const unsigned char *p, size_t n)
{
    while (n) {
        size_t k;
        if (!o->frame_left) {
            o->fhdr[o->fh++] = *p++;
            n--;
            if (o->fh == 2) {
                o->fh = 0;
                if (o->fhdr[0] > 0x80) { /* a fast-profile keepalive frame (PROTOCOL.md P17), between messages */
                    FZ_CHECK(!o->mh && (o->fhdr[0] < 0xFF || !o->fhdr[1]));
                    continue;
                }
                o->frame_left = ((size_t)o->fhdr[0] << 8) | o->fhdr[1];
                FZ_CHECK(o->frame_left >= 1 && o->frame_left <= PEER_FRAME_SEND_SIZE);
            }
            continue;
        }
        if (o->mh < 8) {
            o->mhdr[o->mh++] = *p++;
            n--;
            o->frame_left--;
            if (o->mh == 8) {
                size_t size = (size_t)fz_get32(o->mhdr);
                FZ_CHECK(size >= 8 && o->mhdr[4] == 0x10 && o->mhdr[6] == 0 && o->mhdr[7] == 0);
                o->msg_left = size - 8;
                if (!o->msg_left) { FZ_CHECK(!o->frame_left); o->mh = 0; }
            }
            continue;
        }
        k = n < o->frame_left ? n : o->frame_left;
        if (k > o->msg_left) k = o->msg_left;
        p += k, n -= k;
        o->frame_left -= k;
        o->msg_left -= k;
        if (!o->msg_left) { FZ_CHECK(!o->frame_left); o->mh = 0; }
    }
}

/* Reads whatever the library sent to s (checked when o is not NULL). */
static inline void fz_raw_drain(PEER_SOCKET s, fz_out *o)
{
    static unsigned char sink[65536];
    size_t k;
    while ((k = fake_net_raw_read(s, sink, sizeof sink)) > 0)
        if (o) fz_out_feed(o, sink, k);
}

/* Sends msg m as frames of at most `chunk` bytes. */
static inline void fz_send(PEER_SOCKET s, const msg *m) { send_msg_chunked(s, m, PEER_FRAME_SEND_SIZE); }

/* Connects a raw peer to `to` and (handshake 1) sends AUTH_INFO, (2) also
 * CONNECT; type 2 / D for a direct link.  No service in between: the
 * library reads both in one pass. */
static inline PEER_SOCKET fz_raw_join(const SOCKADDR_IN6 *to, int handshake, int direct, unsigned ext,
                                      const char *graph, ULONGLONG node)
{
    static msg m;
    PEER_SOCKET s = fake_net_raw_connect(to);
    FZ_CHECK(s != PEER_INVALID_SOCKET);
    if (handshake >= 1) {
        m_auth(&m, direct ? 2 : 1, ext, graph, "Alice", NULL);
        fz_send(s, &m);
    }
    if (handshake >= 2) {
        m_connect(&m, direct ? 0x04 : 0x01, node, NULL, 0, NULL);
        fz_send(s, &m);
    }
    return s;
}

#endif /* FUZZ_COMMON_H */
