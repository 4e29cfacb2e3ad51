/*
 * testutil.h - shared helpers for the cmocka suites: start the library on
 * the fake network (or the real one), make graphs, drive the service loop on
 * the synthetic clock, and pull events.
 */
#ifndef TESTUTIL_H
#define TESTUTIL_H

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <stdlib.h>
#include <cmocka.h>
#include "p2pgraph.h"
#include "fake_net.h"
#include <mbedtls/md.h>
#ifdef _WIN32
#include <direct.h>
#define tu_mkdir(p) _mkdir(p)
#else
#include <sys/stat.h>
#include <unistd.h>
#define tu_mkdir(p) mkdir(p, 0700)
#endif

#define TU_DBDIR_N "build/tmp-db"
#define TU_DBDIR_W L"build/tmp-db"

static int tu_db_counter;

/* Starts the library on the fake network with a fresh database dir. */
static inline void tu_start_fake(void)
{
    PEER_VERSION_DATA vd;
    fake_net_reset();
    if (getenv("P2PG_TEST_SEED")) /* hunting a seed-dependent failure: vary the fake network's randomness */
        fake_net_seed(strtoull(getenv("P2PG_TEST_SEED"), NULL, 10));
    assert_int_equal(PeerGraphSetNetShim(fake_net_shim()), S_OK);
    tu_mkdir("build");
    tu_mkdir(TU_DBDIR_N);
    assert_int_equal(PeerGraphSetDatabaseDirectory(TU_DBDIR_W), S_OK);
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK);
}

/* Starts the library on the platform's real sockets with the same database
 * dir (the loopback and two-process tests). */
static inline void tu_start_real(void)
{
    PEER_VERSION_DATA vd;
    assert_int_equal(PeerGraphSetNetShim(NULL), S_OK);
    tu_mkdir("build");
    tu_mkdir(TU_DBDIR_N);
    assert_int_equal(PeerGraphSetDatabaseDirectory(TU_DBDIR_W), S_OK);
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK);
}

static inline void tu_stop_fake(void)
{
    assert_int_equal(PeerGraphShutdown(), S_OK);
    assert_int_equal(fake_net_open_sockets(), 0);
    assert_int_equal(PeerGraphSetNetShim(NULL), S_OK);
    fake_net_reset();
}

/* A unique database name per call. */
static inline void tu_dbname(wchar_t *out, size_t n)
{
    swprintf(out, n, L"db%d", ++tu_db_counter);
}

static inline HGRAPH tu_create(const wchar_t *graphId, const wchar_t *peerId)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h = NULL;
    wchar_t db[32];
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)graphId;
    p.pwzCreatorId = (PWSTR)peerId;
    p.pwzFriendlyName = (PWSTR)L"test graph";
    p.cPresenceMax = (ULONG)-1;
    tu_dbname(db, 32);
    PeerGraphDelete(graphId, peerId, db);
    assert_int_equal(PeerGraphCreate(&p, db, NULL, &h), S_OK);
    return h;
}

/* The documented database file name:
 * <dir>/<name>.<first 8 bytes of MD5(graph NUL peer)>.p2pg */
static inline void tu_db_file_path(const char *graph, const char *peer, const char *name, char *out, size_t n)
{
    unsigned char buf[256], h[16];
    size_t lg = strlen(graph), lp = strlen(peer);
    memcpy(buf, graph, lg);
    buf[lg] = 0;
    memcpy(buf + lg + 1, peer, lp);
    assert_int_equal(mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_MD5), buf, lg + lp + 1, h), 0);
    snprintf(out, n, "%s/%s.%02x%02x%02x%02x%02x%02x%02x%02x.p2pg", TU_DBDIR_N, name, h[0], h[1], h[2], h[3], h[4],
             h[5], h[6], h[7]);
}

/* Creates graph `graphId` with creator `peerId` in database `db` (a stale
 * one is deleted first); dwMaxRecordSize as given (0 = default). */
static inline HGRAPH tu_create_db(const wchar_t *graphId, const wchar_t *peerId, const wchar_t *db, DWORD maxRecord)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h = NULL;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)graphId;
    p.pwzCreatorId = (PWSTR)peerId;
    p.dwMaxRecordSize = maxRecord;
    PeerGraphDelete(graphId, peerId, db);
    assert_int_equal(PeerGraphCreate(&p, db, NULL, &h), S_OK);
    return h;
}

/* A GUID as record wire bytes (Data1..Data3 big-endian, then Data4). */
static inline void tu_guid_wire(unsigned char *b, const GUID *g)
{
    b[0] = (unsigned char)(g->Data1 >> 24); b[1] = (unsigned char)(g->Data1 >> 16);
    b[2] = (unsigned char)(g->Data1 >> 8); b[3] = (unsigned char)g->Data1;
    b[4] = (unsigned char)(g->Data2 >> 8); b[5] = (unsigned char)g->Data2;
    b[6] = (unsigned char)(g->Data3 >> 8); b[7] = (unsigned char)g->Data3;
    memcpy(b + 8, g->Data4, 8);
}

static inline HGRAPH tu_open(const wchar_t *graphId, const wchar_t *peerId)
{
    HGRAPH h = NULL;
    wchar_t db[32];
    tu_dbname(db, 32);
    PeerGraphDelete(graphId, peerId, db);
    assert_int_equal(PeerGraphOpen(graphId, peerId, db, NULL, 0, NULL, &h), PEER_S_GRAPH_DATA_CREATED);
    return h;
}

/* A big-endian 64-bit value (a node ID, as records and messages carry it). */
static inline ULONGLONG g64(const unsigned char *p)
{
    ULONGLONG v = 0;
    int i;
    for (i = 0; i < 8; i++) v = (v << 8) | p[i];
    return v;
}

/* The record type of Contact records ([MS-PPGRH] 3.1.7.12). */
static const GUID TU_CONTACT_TYPE = {0x00000300, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};

/* The Signature record as h holds it: its version (0: none) and the node ID
 * it names in *value (0: none). */
static inline ULONG tu_signature(HGRAPH h, ULONGLONG *value)
{
    static const GUID sigType = {0x00000200, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
    HPEERENUM en;
    PEER_RECORD **items;
    ULONG n = 4, ver = 0;
    *value = 0;
    assert_int_equal(PeerGraphEnumRecords(h, &sigType, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    if (n == 1 && items[0]->data.cbData == 8) {
        ver = items[0]->dwVersion;
        *value = g64(items[0]->data.pbData);
    }
    if (n) PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    return ver;
}

/* The live Contact record h holds from `creator`: its version (0: none)
 * and the signature it names in *sig. */
static inline ULONG tu_contact_of(HGRAPH h, const wchar_t *creator, ULONGLONG *sig)
{
    HPEERENUM en;
    PEER_RECORD **items;
    ULONG n = 64, k, ver = 0;
    *sig = 0;
    assert_int_equal(PeerGraphEnumRecords(h, &TU_CONTACT_TYPE, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    for (k = 0; k < n; k++)
        if (!wcscmp(items[k]->pwzCreatorId, creator) && items[k]->data.cbData >= 20) {
            ver = items[k]->dwVersion;
            *sig = g64(items[k]->data.pbData);
        }
    if (n) PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    return ver;
}

static inline HPEEREVENT tu_register_all(HGRAPH h)
{
    PEER_GRAPH_EVENT_REGISTRATION r[9];
    HPEEREVENT e = NULL;
    int i;
    for (i = 0; i < 9; i++) { r[i].eventType = (PEER_GRAPH_EVENT_TYPE)(i + 1); r[i].pType = NULL; }
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 9, r, &e), S_OK);
    return e;
}

/* Services n times on the fake clock, stepping it by stepMs each time. */
static inline void tu_pump(int n, ULONGLONG stepMs)
{
    int i;
    for (i = 0; i < n; i++) {
        fake_net_advance(stepMs);
        assert_int_equal(PeerGraphService(NULL, 0, fake_net_now()), S_OK);
    }
}

/* A host that handles socket readiness at once but wakes for timers only
 * every stepMs (20 simulated minutes in few calls): after each clock step,
 * Service is called again, the clock unchanged, while the fake network
 * reports a socket ready (at most 500 times).  tu_pump instead moves every
 * message one hop per step. */
static inline void tu_pump_host(int n, ULONGLONG stepMs)
{
    const PEER_NET_SHIM *net = fake_net_shim();
    PEER_POLL_FD *want = NULL, *ready = NULL;
    ULONG cap = 0;
    int i, k;
    for (i = 0; i < n; i++) {
        fake_net_advance(stepMs);
        assert_int_equal(PeerGraphService(NULL, 0, fake_net_now()), S_OK);
        for (k = 0; k < 500; k++) {
            ULONG cw = 0, cr = 0;
            ULONGLONG deadline;
            HRESULT hr;
            while ((hr = PeerGraphGetPollFds(want, cap, &cw, &deadline)) == E_NOT_SUFFICIENT_BUFFER) {
                cap = cw + 64;
                want = (PEER_POLL_FD *)realloc(want, cap * sizeof *want);
                ready = (PEER_POLL_FD *)realloc(ready, cap * sizeof *ready);
                assert_non_null(want);
                assert_non_null(ready);
            }
            assert_int_equal(hr, S_OK);
            assert_int_equal(net->pfnWait(net->pvContext, want, cw, ready, &cr, 0), S_OK);
            if (!cr) break;
            assert_int_equal(PeerGraphService(ready, cr, fake_net_now()), S_OK);
        }
    }
    free(want);
    free(ready);
}

/* Listens on an ephemeral port; returns the loopback address of it. */
static inline PEER_ADDRESS tu_listen(HGRAPH h)
{
    PPEER_NODE_INFO ni = NULL;
    PEER_ADDRESS a;
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_ANY, 0, 0), S_OK);
    assert_int_equal(PeerGraphGetNodeInfo(h, 0, &ni), S_OK);
    assert_int_equal(ni->cAddresses, 1);
    a = ni->pAddresses[0];
    PeerGraphFreeData(ni);
    memset(a.sin6.sin6_addr.s6_addr, 0, 16);
    a.sin6.sin6_addr.s6_addr[15] = 1; /* [::1]:port */
    return a;
}

/* Listens on an address of its own (fake network: "fd00::N"; its links
 * then leave from it too, so fake_net_partition can cut it off). */
static inline PEER_ADDRESS tu_listen_at(HGRAPH h, const char *addr6)
{
    PPEER_NODE_INFO ni = NULL;
    PEER_ADDRESS a;
    memset(&a, 0, sizeof a);
    a.dwSize = sizeof a;
    a.sin6 = fake_net_addr6(addr6, 0);
    assert_int_equal(PeerGraphListenAddress(h, &a), S_OK);
    assert_int_equal(PeerGraphGetNodeInfo(h, 0, &ni), S_OK);
    assert_int_equal(ni->cAddresses, 1);
    a = ni->pAddresses[0];
    PeerGraphFreeData(ni);
    return a;
}

/* Next event of the given type (skipping others), or NULL if none queued. */
static inline PPEER_GRAPH_EVENT_DATA tu_event(HPEEREVENT e, PEER_GRAPH_EVENT_TYPE type)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    for (;;) {
        HRESULT hr = PeerGraphGetEventData(e, &d);
        assert_true(SUCCEEDED(hr));
        if (hr == PEER_S_NO_EVENT_DATA) return NULL;
        if (d->eventType == type) return d;
        PeerGraphFreeData(d);
    }
}

/* Drains e and counts events of the given type and (for connection events)
 * status. */
static inline int tu_count_conn_events(HPEEREVENT e, PEER_GRAPH_EVENT_TYPE type, PEER_CONNECTION_STATUS st)
{
    PPEER_GRAPH_EVENT_DATA d;
    int n = 0;
    while ((d = tu_event(e, type)) != NULL) {
        if (d->connectionChangeData.status == st) n++;
        PeerGraphFreeData(d);
    }
    return n;
}

/* Connected neighbors of a graph. */
static inline ULONG tu_neighbors(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0;
    assert_int_equal(PeerGraphEnumConnections(h, PEER_CONNECTION_NEIGHBOR, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    return n;
}

/* Connects h to a (peer: the peer ID asked for, or NULL) and pumps until the
 * outcome, following referrals; returns the status and puts the failure
 * reason in *why. */
static inline PEER_CONNECTION_STATUS tu_connect_outcome(HGRAPH h, HPEEREVENT e, PEER_ADDRESS *a, const wchar_t *peer, HRESULT *why)
{
    ULONGLONG id;
    int i;
    assert_int_equal(PeerGraphConnect(h, peer, a, &id), S_OK);
    for (i = 0; i < 400; i++) {
        PPEER_GRAPH_EVENT_DATA d;
        tu_pump(1, 5);
        while ((d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            if (d->connectionChangeData.ullConnectionId == id && d->connectionChangeData.status == PEER_CONNECTION_FAILED &&
                d->connectionChangeData.ullNextConnectionId) {
                id = d->connectionChangeData.ullNextConnectionId; /* refused busy: a referral is tried */
            } else if (d->connectionChangeData.ullConnectionId == id &&
                (d->connectionChangeData.status == PEER_CONNECTED ||
                 d->connectionChangeData.status == PEER_CONNECTION_FAILED)) {
                PEER_CONNECTION_STATUS st = d->connectionChangeData.status;
                *why = d->connectionChangeData.hrConnectionFailedReason;
                PeerGraphFreeData(d);
                return st;
            }
            PeerGraphFreeData(d);
        }
    }
    fail_msg("no outcome for the connection");
    return PEER_DISCONNECTED;
}

/* Pumps until h is synchronized. */
static inline void tu_wait_sync(HGRAPH h)
{
    DWORD st = 0;
    int i;
    for (i = 0; i < 400 && !(st & PEER_GRAPH_STATUS_SYNCHRONIZED); i++) {
        tu_pump(1, 5);
        assert_int_equal(PeerGraphGetStatus(h, &st), S_OK);
    }
    assert_true(st & PEER_GRAPH_STATUS_SYNCHRONIZED);
}

#endif
