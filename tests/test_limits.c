/*
 * test_limits.c - exhaustion, on the fake network with the counting
 * allocator of testalloc.h measuring the library's heap:
 *   - thousands of connections that never speak: at most
 *     PEER_MAX_PENDING_ACCEPTS stay open, the heap stays under a bound, the
 *     authentication timer closes them, and real peers connect meanwhile;
 *   - neighbors that never read: each one's queue stops at
 *     PEER_MAX_SEND_QUEUE and the link is dropped; the heap stays bounded;
 *     a real peer still joins and gets every record;
 *   - the record limits (PeerGraphSetRecordLimits), for local adds and for
 *     records from the network;
 *   - a host that never takes its events: the queue stops at
 *     PEER_MAX_EVENTS_QUEUED and the overflow is reported.
 */
#include "rawpeer.h"
#include "testalloc.h"

static int setup(void **st)
{
    (void)st;
    a_install();
    tu_start_fake();
    return 0;
}
static int teardown(void **st)
{
    (void)st;
    tu_stop_fake();
    assert_int_equal(a_live, 0); /* everything the library allocated came back */
    assert_int_equal(PeerGraphSetAllocator(NULL), S_OK);
    return 0;
}

static const GUID T_LIM = {0x11a17, 1, 2, {3, 4, 5, 6, 7, 8, 9, 10}};

static HRESULT add_sized(HGRAPH h, size_t n, GUID *id)
{
    static unsigned char buf[65536];
    PEER_RECORD r;
    FILETIME exp;
    GUID dummy;
    ULONGLONG t = 134116992000000000ULL + fake_net_now() * 10000ULL + 36000000000ULL;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = T_LIM;
    memset(buf, 'r', n);
    r.data.cbData = (ULONG)n;
    r.data.pbData = buf;
    exp.dwLowDateTime = (DWORD)t;
    exp.dwHighDateTime = (DWORD)(t >> 32);
    assert_int_equal(PeerGraphUniversalTimeToPeerTime(h, &exp, &r.ftExpiration), S_OK);
    return PeerGraphAddRecord(h, &r, id ? id : &dummy);
}

static ULONG app_records(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0;
    assert_int_equal(PeerGraphEnumRecords(h, &T_LIM, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    return n;
}

/* Opens a graph that joins through la; returns once it is connected. */
static HGRAPH join(const wchar_t *peer, PEER_ADDRESS *la)
{
    HGRAPH b = tu_open(L"lim", peer);
    HPEEREVENT e = tu_register_all(b);
    ULONGLONG id;
    DWORD st = 0;
    int i;
    assert_int_equal(PeerGraphConnect(b, NULL, la, &id), S_OK);
    for (i = 0; i < 100 && !(st & PEER_GRAPH_STATUS_SYNCHRONIZED); i++) {
        tu_pump(1, 5);
        assert_int_equal(PeerGraphGetStatus(b, &st), S_OK);
    }
    if (!(st & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
        PPEER_GRAPH_EVENT_DATA d;
        while ((d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            print_message("join: connection status %d reason 0x%lx\n", d->connectionChangeData.status,
                          (unsigned long)d->connectionChangeData.hrConnectionFailedReason);
            PeerGraphFreeData(d);
        }
    }
    assert_true(st & PEER_GRAPH_STATUS_SYNCHRONIZED);
    assert_int_equal(PeerGraphUnregisterEvent(e), S_OK);
    return b;
}

/* ---- connections that never speak ---------------------------------------- */

static void test_silent_connections(void **st)
{
    enum { WAVES = 6, PER_WAVE = 800 }; /* 6 real peers: A stays under its 7 neighbors */
    HGRAPH a = tu_create(L"lim", L"Alice"), b[WAVES];
    PEER_ADDRESS la = tu_listen(a);
    static PEER_SOCKET silent[WAVES * PER_WAVE];
    long long base, per_pending;
    int w, i, open_silent = 0;
    wchar_t peer[16];
    (void)st;
    tu_pump(2, 5);
    base = a_bytes;
    for (w = 0; w < WAVES; w++) {
        for (i = 0; i < PER_WAVE; i++) silent[w * PER_WAVE + i] = fake_net_raw_connect(&la.sin6);
        tu_pump(10, 1); /* accepted 64 per service */
        /* the heap holds at most PEER_MAX_PENDING_ACCEPTS of them */
        assert_true(fake_net_open_sockets() <= 1 + PEER_MAX_PENDING_ACCEPTS + 2 * w);
        /* a real peer joins while every slot is taken by a silent one */
        swprintf(peer, 16, L"real%d", w);
        b[w] = join(peer, &la);
    }
    per_pending = (a_peak - base) / PEER_MAX_PENDING_ACCEPTS;
    print_message("%d connections that never speak: peak heap growth %lld B (%lld B per pending slot)\n",
                  WAVES * PER_WAVE, a_peak - base, per_pending);
    /* the bound: every pending slot full plus the real peers' links and records */
    assert_true(a_peak - base < PEER_MAX_PENDING_ACCEPTS * 1024LL + WAVES * 16384LL);
    /* the authentication timer (20 + 280 e^(-n/10) s) closes the rest */
    tu_pump(40, 10000);
    for (i = 0; i < WAVES * PER_WAVE; i++) open_silent += !fake_net_raw_eof(silent[i]);
    assert_int_equal(open_silent, 0);
    for (i = 0; i < WAVES * PER_WAVE; i++) fake_net_raw_close(silent[i]);
    assert_true(tu_neighbors(a) >= 1);
    for (w = 0; w < WAVES; w++) assert_int_equal(PeerGraphClose(b[w]), S_OK);
    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_pump(5, 3000);
}

/* ---- neighbors that never read ------------------------------------------ */

static void test_slow_readers(void **st)
{
    enum { SLOW = 6, RECS = 200, SIZE = 8000 };
    HGRAPH a = tu_create(L"lim", L"Alice"), b;
    HPEEREVENT ea = tu_register_all(a);
    PEER_ADDRESS la = tu_listen(a);
    PEER_SOCKET s[SLOW];
    static msg m;
    long long base, growth;
    int i, dropped = 0;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    fake_net_set_send_capacity(65536); /* a kernel buffer: writes block once it is full */
    for (i = 0; i < SLOW; i++) {
        char name[16];
        snprintf(name, sizeof name, "slow%d", i);
        s[i] = fake_net_raw_connect(&la.sin6);
        m_auth(&m, 1, 0, "lim", name, NULL);
        send_msg(s[i], &m);
        m_connect(&m, 0x01, 0x5100 + (ULONGLONG)i, NULL, 0, NULL);
        send_msg(s[i], &m);
    }
    tu_pump(5, 5);
    assert_int_equal(tu_neighbors(a), SLOW);
    while ((d = tu_event(ea, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) PeerGraphFreeData(d);
    base = a_bytes;
    a_peak = a_bytes;
    for (i = 0; i < RECS; i++) {
        assert_int_equal(add_sized(a, SIZE, NULL), S_OK);
        tu_pump(1, 1);
    }
    while ((d = tu_event(ea, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
        if (d->connectionChangeData.status == PEER_DISCONNECTED) {
            assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_CONNECTION_FAILED);
            dropped++;
        }
        PeerGraphFreeData(d);
    }
    assert_int_equal(dropped, SLOW); /* none of them ever read: all dropped */
    growth = a_peak - base;
    print_message("%d neighbors that never read, %d records of %d B flooded: peak heap growth %lld B "
                  "(records held %lld B, bound %u B of queue per link)\n",
                  SLOW, RECS, SIZE, growth, (long long)RECS * SIZE, PEER_MAX_SEND_QUEUE);
    assert_true(growth < (long long)SLOW * (PEER_MAX_SEND_QUEUE + 65536) + 2LL * RECS * (SIZE + 512));
    /* a real peer still joins and gets everything */
    b = join(L"Bob", &la);
    tu_pump(20, 5);
    assert_int_equal(app_records(b), RECS);
    for (i = 0; i < SLOW; i++) fake_net_raw_close(s[i]);
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_pump(5, 3000);
}

/* ---- records per graph ------------------------------------------------- */

static void test_record_limits(void **st)
{
    HGRAPH a = tu_create(L"lim", L"Alice"), b;
    PEER_ADDRESS la = tu_listen(a);
    PEER_DATABASE_INFO di;
    ULONG held;
    int i;
    (void)st;
    assert_int_equal(PeerGraphSetRecordLimits(NULL, 1, 1), PEER_E_INVALID_GRAPH);
    b = join(L"Bob", &la);
    tu_pump(10, 5);
    memset(&di, 0, sizeof di);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(b, &di), S_OK);
    held = di.cRecords; /* the graph's own records (Graph Info, presence, ...) */
    assert_int_equal(PeerGraphSetRecordLimits(b, held + 3, 0), S_OK);
    for (i = 0; i < 10; i++) assert_int_equal(add_sized(a, 100, NULL), S_OK);
    tu_pump(10, 5);
    assert_int_equal(app_records(b), 3); /* the rest were refused... */
    assert_int_equal(PeerGraphGetDatabaseInfo(b, &di), S_OK);
    assert_true(di.cRejectedRecords >= 7); /* ...and counted */
    assert_int_equal(tu_neighbors(b), 1);  /* the link stays */
    assert_int_equal(add_sized(b, 100, NULL), PEER_E_DISK_FULL);
    /* bytes */
    assert_int_equal(PeerGraphSetRecordLimits(a, 0, 1), S_OK);
    assert_int_equal(add_sized(a, 100, NULL), PEER_E_DISK_FULL);
    assert_int_equal(PeerGraphSetRecordLimits(a, 0, PEER_DEFAULT_MAX_RECORD_BYTES), S_OK);
    assert_int_equal(add_sized(a, 100, NULL), S_OK);
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_pump(5, 3000);
}

/* ---- the record table's growth gives its old table back ----------------- */

/* A growth allocates the table 1.25 times bigger and moves the records a
 * few slots per insert; the next service calls move the rest (16,384
 * slots each when they read nothing) and free the old table, so a graph that stops adding records does not keep two
 * tables (S9 counts the table: 5.3 to 6.7 bytes a record).  Records of
 * 1 byte, 20,000 of them: the tables pass 64 KB (a slab chunk's most), so
 * a jump above that is a table. */
static void test_record_table_old_freed(void **st)
{
    HGRAPH a = tu_create(L"lim", L"Alice");
    int i, growths = 0;
    (void)st;
    for (i = 0; i < 20000; i++) {
        long long before = a_bytes, jump;
        assert_int_equal(add_sized(a, 1, NULL), S_OK);
        jump = a_bytes - before;
        if (jump > 65536 + 4096) { /* a new table (and maybe a chunk) */
            long long held = a_bytes;
            tu_pump(4, 1); /* (16,384 slots a call) */
            print_message("record %d: table of %lld B, then %lld B freed by 4 service calls\n", i, jump, held - a_bytes);
            assert_true(held - a_bytes >= (jump - 65536) / 2); /* the old one: 0.8 of the new one */
            assert_true(jump - 65536 <= 4LL * (i + 100) * 5 / 3 + 64);   /* the new one: load 3/5 */
            growths++;
        }
    }
    assert_true(growths >= 2);
    assert_int_equal(PeerGraphClose(a), S_OK);
}

/* ---- a host that never takes its events --------------------------------- */

static void test_event_queue_bound(void **st)
{
    HGRAPH a = tu_create(L"lim", L"Alice");
    PEER_GRAPH_EVENT_REGISTRATION r[2] = {{PEER_GRAPH_EVENT_RECORD_CHANGED, NULL}, {PEER_GRAPH_EVENT_STATUS_CHANGED, NULL}};
    HPEEREVENT e;
    PPEER_GRAPH_EVENT_DATA d;
    long long before;
    int i, changed = 0, status = 0;
    HRESULT hr;
    (void)st;
    assert_int_equal(PeerGraphRegisterEvent(a, NULL, 2, r, &e), S_OK);
    for (i = 0; i < PEER_MAX_EVENTS_QUEUED; i++) assert_int_equal(add_sized(a, 1, NULL), S_OK);
    before = a_bytes;
    for (i = 0; i < 1000; i++) assert_int_equal(add_sized(a, 1, NULL), S_OK);
    /* 1000 more records, but no more queued events: the heap grew by the records only */
    assert_true(a_bytes - before < 1000LL * 400);
    while ((hr = PeerGraphGetEventData(e, &d)) == S_OK) {
        if (d->eventType == PEER_GRAPH_EVENT_RECORD_CHANGED) changed++;
        if (d->eventType == PEER_GRAPH_EVENT_STATUS_CHANGED) status++;
        PeerGraphFreeData(d);
    }
    assert_int_equal(hr, PEER_S_NO_EVENT_DATA);
    assert_int_equal(changed, PEER_MAX_EVENTS_QUEUED);
    assert_int_equal(status, 1); /* the overflow: re-read the state */
    assert_int_equal(PeerGraphClose(a), S_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_silent_connections, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_readers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_limits, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_table_old_freed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_event_queue_bound, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
