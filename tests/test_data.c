/*
 * test_data.c - application data (PeerGraphSendData, direct connections,
 * flow control) on the fake network and the synthetic clock: every size
 * boundary, one-byte reads and writes, the queue limit and SEND_READY, close
 * with data queued, bad IDs and arguments, records overtaking a big transfer
 * on a neighbor link, a receiver that stops taking events, and the wire seen
 * by a plain MS-PPGRH peer and by a hostile one.
 */
#include "rawpeer.h"

static const GUID DT = {0xda7a0001, 0x1234, 0x5678, {1, 2, 3, 4, 5, 6, 7, 8}};
static const GUID DT2 = {0xda7a0002, 0x1234, 0x5678, {1, 2, 3, 4, 5, 6, 7, 8}};
static const GUID PING = {0x0ccbb0d2, 0xbe41, 0x4bd6, {0x91, 0x4b, 0x05, 0x8e, 0xc5, 0xdc, 0xce, 0x64}};

#define FRAME_PAYLOAD 16351u /* PT2PT data filling one frame exactly (16379 - 28) */

static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

/* The byte at offset i of test message number seq. */
static unsigned char pat(unsigned seq, size_t i) { return (unsigned char)(seq * 31u + i * 7u + (i >> 9)); }

static unsigned char *make_msg(unsigned seq, size_t n)
{
    unsigned char *p = (unsigned char *)malloc(n ? n : 1);
    size_t i;
    assert_non_null(p);
    for (i = 0; i < n; i++) p[i] = pat(seq, i);
    return p;
}

static HPEEREVENT reg(HGRAPH h, int direct, int data)
{
    PEER_GRAPH_EVENT_REGISTRATION r[4];
    HPEEREVENT e = NULL;
    ULONG n = 0;
    r[n].eventType = PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION; r[n++].pType = NULL;
    if (direct) { r[n].eventType = PEER_GRAPH_EVENT_DIRECT_CONNECTION; r[n++].pType = NULL; }
    if (data) { r[n].eventType = PEER_GRAPH_EVENT_INCOMING_DATA; r[n++].pType = NULL; }
    r[n].eventType = PEER_GRAPH_EVENT_SEND_READY; r[n++].pType = NULL;
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, n, r, &e), S_OK);
    return e;
}

/* A's direct connection to B (B registered with eb); returns A's ID and B's. */
static ULONGLONG open_direct(HGRAPH a, HPEEREVENT ea, PEER_ADDRESS *bAddr, HPEEREVENT eb, ULONGLONG *bId)
{
    ULONGLONG id;
    PPEER_GRAPH_EVENT_DATA d;
    assert_int_equal(PeerGraphOpenDirectConnection(a, L"B", bAddr, &id), S_OK);
    tu_pump(4, 1);
    d = tu_event(ea, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
    assert_non_null(d);
    assert_true(d->connectionChangeData.ullConnectionId == id);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    PeerGraphFreeData(d);
    d = tu_event(eb, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    *bId = d->connectionChangeData.ullConnectionId;
    PeerGraphFreeData(d);
    return id;
}

/* Pops the next INCOMING_DATA (skipping nothing else: e is data-only). */
static PPEER_GRAPH_EVENT_DATA next_data(HPEEREVENT e)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    HRESULT hr = PeerGraphGetEventData(e, &d);
    assert_true(SUCCEEDED(hr));
    if (hr == PEER_S_NO_EVENT_DATA) return NULL;
    assert_int_equal(d->eventType, PEER_GRAPH_EVENT_INCOMING_DATA);
    return d;
}

/* Pumps until an INCOMING_DATA is there (reading is bounded per service). */
static PPEER_GRAPH_EVENT_DATA wait_data(HPEEREVENT e)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    int i;
    for (i = 0; i < 1000 && !(d = next_data(e)); i++) tu_pump(1, 0);
    return d;
}

static void check_data(PPEER_GRAPH_EVENT_DATA d, ULONGLONG conn, const GUID *t, unsigned seq, size_t n)
{
    size_t i;
    assert_non_null(d);
    assert_int_equal(d->incomingData.dwSize, sizeof d->incomingData);
    assert_true(d->incomingData.ullConnectionId == conn);
    assert_memory_equal(&d->incomingData.type, t, sizeof *t);
    assert_int_equal(d->incomingData.data.cbData, n);
    if (!n) { assert_null(d->incomingData.data.pbData); return; }
    for (i = 0; i < n; i++)
        if (d->incomingData.data.pbData[i] != pat(seq, i)) fail_msg("message %u differs at byte %lu", seq, (unsigned long)i);
}

static ULONG queued(HGRAPH h, ULONGLONG id)
{
    ULONG q = 0, lim = 0;
    assert_int_equal(PeerGraphGetDataQueue(h, id, &q, &lim), S_OK);
    return q;
}

/* Sends one message and pumps until the queue is empty. */
static void send_and_flush(HGRAPH h, ULONGLONG id, const GUID *t, unsigned seq, size_t n)
{
    unsigned char *p = make_msg(seq, n);
    int i;
    assert_int_equal(PeerGraphSendData(h, id, t, (ULONG)n, n ? p : NULL), S_OK);
    for (i = 0; i < 100000 && queued(h, id); i++) tu_pump(1, 0);
    assert_int_equal(queued(h, id), 0);
    free(p);
}

typedef struct { HGRAPH a, b; HPEEREVENT ea, eb, db; PEER_ADDRESS ba; ULONGLONG ida, idb; } pair;

/* A and B of graph G; B listens and accepts direct connections; eb gets
 * connection events, db gets B's data. */
static void make_pair(pair *p)
{
    p->a = tu_create(L"G", L"A");
    p->b = tu_create(L"G", L"B");
    p->ea = reg(p->a, 1, 0);
    p->eb = reg(p->b, 1, 0);
    {
        PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_INCOMING_DATA, NULL};
        assert_int_equal(PeerGraphRegisterEvent(p->b, NULL, 1, &r, &p->db), S_OK);
    }
    p->ba = tu_listen(p->b);
    p->ida = open_direct(p->a, p->ea, &p->ba, p->eb, &p->idb);
}

/* The last DIRECT_CONNECTION event of e must be DISCONNECTED with hr. */
static void expect_direct_closed(HPEEREVENT e, HRESULT hr)
{
    PPEER_GRAPH_EVENT_DATA d, last = NULL;
    while ((d = tu_event(e, PEER_GRAPH_EVENT_DIRECT_CONNECTION)) != NULL) {
        if (last) PeerGraphFreeData(last);
        last = d;
    }
    assert_non_null(last);
    assert_int_equal(last->connectionChangeData.status, PEER_DISCONNECTED);
    assert_int_equal(last->connectionChangeData.hrConnectionFailedReason, hr);
    PeerGraphFreeData(last);
}

/* ------------------------------------------------------------------ tests */

/* A node not registered for DIRECT_CONNECTION refuses direct connections;
 * the initiator is told PEER_E_CONNECTION_REFUSED. */
static void test_direct_refused_unless_registered(void **st)
{
    HGRAPH a = tu_create(L"G", L"A"), b = tu_create(L"G", L"B");
    HPEEREVENT ea = reg(a, 1, 0), eb = reg(b, 0, 1);
    PEER_ADDRESS ba = tu_listen(b);
    ULONGLONG id;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    assert_int_equal(PeerGraphOpenDirectConnection(a, L"B", &ba, &id), S_OK);
    tu_pump(4, 1);
    d = tu_event(ea, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
    assert_non_null(d);
    assert_true(d->connectionChangeData.ullConnectionId == id);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTION_FAILED);
    assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_CONNECTION_REFUSED);
    PeerGraphFreeData(d);
    assert_null(tu_event(eb, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION));
    assert_int_equal(PeerGraphSendData(a, id, &DT, 1, "x"), PEER_E_CONNECTION_NOT_FOUND);
    /* the peer ID is required, our own is refused at our own listener */
    assert_int_equal(PeerGraphOpenDirectConnection(a, NULL, &ba, &id), E_INVALIDARG);
    assert_int_equal(PeerGraphOpenDirectConnection(a, L"B", NULL, &id), E_INVALIDARG);
    assert_int_equal(PeerGraphOpenDirectConnection(a, L"B", &ba, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphOpenDirectConnection(b, L"B", &ba, &id), PEER_E_CONNECT_SELF);
    assert_int_equal(PeerGraphOpenDirectConnection(NULL, L"B", &ba, &id), PEER_E_INVALID_GRAPH);
}

/* Every size boundary over a direct link between two p2pgraph nodes (data
 * above one frame travels as fragments), in order, nothing else on it;
 * EnumConnections lists the link as direct only. */
static void test_direct_sizes(void **st)
{
    static const size_t sizes[] = {0, 1, FRAME_PAYLOAD - 1, FRAME_PAYLOAD, FRAME_PAYLOAD + 1, 16347, 16348,
                                   16347 + 16351, 16347 + 16351 + 1, 100000, PEER_MAX_DATA_SIZE};
    pair p;
    unsigned i;
    HPEERENUM en;
    ULONG n;
    PEER_CONNECTION_INFO **items;
    unsigned char *big;
    (void)st;
    make_pair(&p);
    assert_int_equal(PeerGraphEnumConnections(p.a, PEER_CONNECTION_DIRECT, &en), S_OK);
    n = 10;
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    assert_int_equal(n, 1);
    assert_true(items[0]->ullConnectionId == p.ida);
    assert_int_equal(items[0]->dwFlags, PEER_CONNECTION_DIRECT);
    PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    assert_int_equal(tu_neighbors(p.a), 0);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        PPEER_GRAPH_EVENT_DATA d;
        send_and_flush(p.a, p.ida, i & 1 ? &DT2 : &DT, i, sizes[i]);
        d = wait_data(p.db);
        check_data(d, p.idb, i & 1 ? &DT2 : &DT, i, sizes[i]);
        PeerGraphFreeData(d);
        assert_null(next_data(p.db));
    }
    big = make_msg(0, 16);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, PEER_MAX_DATA_SIZE + 1, big), E_INVALIDARG);
    free(big);
    /* the other direction works too */
    {
        PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_INCOMING_DATA, NULL};
        HPEEREVENT da;
        PPEER_GRAPH_EVENT_DATA d;
        assert_int_equal(PeerGraphRegisterEvent(p.a, NULL, 1, &r, &da), S_OK);
        send_and_flush(p.b, p.idb, &DT, 77, 50000);
        tu_pump(3, 0);
        d = next_data(da);
        check_data(d, p.ida, &DT, 77, 50000);
        PeerGraphFreeData(d);
    }
}

/* One byte per send and per receive: fragments and whole messages survive
 * arbitrary cuts. */
static void test_one_byte_io(void **st)
{
    static const size_t sizes[] = {0, 1, FRAME_PAYLOAD, FRAME_PAYLOAD + 1, 40000};
    pair p;
    unsigned i;
    (void)st;
    make_pair(&p);
    fake_net_set_max_io(1);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        unsigned char *m = make_msg(i, sizes[i]);
        assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, (ULONG)sizes[i], m), S_OK);
        free(m);
    }
    tu_pump(50, 0);
    for (i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        PPEER_GRAPH_EVENT_DATA d = next_data(p.db);
        check_data(d, p.idb, &DT, i, sizes[i]);
        PeerGraphFreeData(d);
    }
    assert_null(next_data(p.db));
    assert_int_equal(queued(p.a, p.ida), 0);
}

/* The queue limit: PEER_E_SEND_QUEUE_FULL when full (nothing queued), never
 * above the bound, SEND_READY at half, everything delivered in order. */
static void test_queue_full_and_drain(void **st)
{
    pair p;
    unsigned sent = 0, got = 0, fulls = 0, readies = 0, i;
    ULONG q, lim;
    unsigned char *m = make_msg(0, 1000);
    (void)st;
    make_pair(&p);
    fake_net_set_send_capacity(8192);
    assert_int_equal(PeerGraphSetDataQueueLimit(p.a, p.ida, 100), E_INVALIDARG);
    assert_int_equal(PeerGraphSetDataQueueLimit(p.a, p.ida, PEER_MAX_DATA_QUEUE + 1), E_INVALIDARG);
    assert_int_equal(PeerGraphSetDataQueueLimit(p.a, 12345, 65536), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphSetDataQueueLimit(p.a, p.ida, 16384), S_OK);
    assert_int_equal(PeerGraphGetDataQueue(p.a, p.ida, &q, &lim), S_OK);
    assert_int_equal(q, 0);
    assert_int_equal(lim, 16384);
    while (got < 400) {
        HRESULT hr;
        PPEER_GRAPH_EVENT_DATA d;
        for (;;) {
            for (i = 0; i < 1000; i++) m[i] = pat(sent, i);
            if (sent >= 400) break;
            hr = PeerGraphSendData(p.a, p.ida, &DT, 1000, m);
            if (hr == PEER_E_SEND_QUEUE_FULL) { fulls++; break; }
            assert_int_equal(hr, S_OK);
            sent++;
            assert_true(queued(p.a, p.ida) <= 16384);
        }
        tu_pump(1, 0);
        while ((d = tu_event(p.ea, PEER_GRAPH_EVENT_SEND_READY)) != NULL) {
            assert_true(d->sendReadyData.ullConnectionId == p.ida);
            assert_true(d->sendReadyData.cbQueued <= 8192);
            assert_int_equal(d->sendReadyData.cbLimit, 16384);
            readies++;
            PeerGraphFreeData(d);
        }
        while ((d = next_data(p.db)) != NULL) {
            check_data(d, p.idb, &DT, got++, 1000);
            PeerGraphFreeData(d);
        }
    }
    free(m);
    assert_true(fulls > 0);
    assert_true(readies > 0 && readies <= fulls);
    assert_int_equal(queued(p.a, p.ida), 0);
    /* one message larger than the limit is still accepted into an empty queue */
    send_and_flush(p.a, p.ida, &DT, 500, 100000);
    tu_pump(2, 0);
    {
        PPEER_GRAPH_EVENT_DATA d = next_data(p.db);
        check_data(d, p.idb, &DT, 500, 100000);
        PeerGraphFreeData(d);
    }
}

/* CloseDirectConnection with data queued: it all arrives, then DISCONNECT. */
static void test_close_with_data_queued(void **st)
{
    pair p;
    unsigned i, n = 0;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    make_pair(&p);
    fake_net_set_send_capacity(4096);
    for (i = 0; i < 20; i++) {
        unsigned char *m = make_msg(i, 30000);
        assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, 30000, m), S_OK);
        free(m);
    }
    assert_true(queued(p.a, p.ida) > 0);
    assert_int_equal(PeerGraphCloseDirectConnection(p.a, p.ida), S_OK);
    d = tu_event(p.ea, PEER_GRAPH_EVENT_DIRECT_CONNECTION); /* reported at once */
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_DISCONNECTED);
    assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, S_OK);
    PeerGraphFreeData(d);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, 1, "x"), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphCloseDirectConnection(p.a, p.ida), PEER_E_CONNECTION_NOT_FOUND);
    for (i = 0; i < 400 && n < 20; i++) {
        tu_pump(1, 1);
        while ((d = next_data(p.db)) != NULL) {
            check_data(d, p.idb, &DT, n++, 30000);
            PeerGraphFreeData(d);
        }
    }
    assert_int_equal(n, 20);
    tu_pump(3, 1);
    d = tu_event(p.eb, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_DISCONNECTED);
    assert_true(d->connectionChangeData.ullConnectionId == p.idb);
    PeerGraphFreeData(d);
    tu_pump(3, 1);
    assert_int_equal(fake_net_open_sockets(), 1); /* only B's listener */
}

/* Close while the peer does not read (its host is behind on events): the
 * sender lingers while bytes move and gives up PEER_LINGER_MS after they
 * stop; the receiver gets whole messages in order, then a failure event. */
static void test_close_peer_never_reads(void **st)
{
    pair p;
    unsigned i, got = 0;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    make_pair(&p);
    fake_net_set_send_capacity(256 * 1024);
    assert_int_equal(PeerGraphSetDataQueueLimit(p.a, p.ida, 16u << 20), S_OK);
    for (i = 0; i < 8; i++) {
        unsigned char *m = make_msg(i, 1u << 20);
        assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, 1u << 20, m), S_OK);
        free(m);
    }
    tu_pump(40, 1);                        /* B holds > PEER_MAX_INCOMING_DATA and stops reading */
    assert_true(queued(p.a, p.ida) > 0);
    assert_int_equal(PeerGraphCloseDirectConnection(p.a, p.ida), S_OK);
    tu_pump(1, PEER_LINGER_MS - 1);
    assert_int_equal(fake_net_open_sockets(), 3); /* still lingering */
    tu_pump(2, PEER_LINGER_MS);
    assert_int_equal(fake_net_open_sockets(), 2); /* A gave up: B's listener and link remain */
    for (i = 0; i < 100; i++) {
        while ((d = next_data(p.db)) != NULL) {
            check_data(d, p.idb, &DT, got++, 1u << 20);
            PeerGraphFreeData(d);
        }
        tu_pump(1, 1);
    }
    assert_true(got >= 4 && got < 8);
    expect_direct_closed(p.eb, PEER_E_CONNECTION_FAILED);
}

/* Bad connection IDs and arguments get the documented errors. */
static void test_bad_ids_and_args(void **st)
{
    pair p;
    ULONGLONG pending, nb;
    PEER_ADDRESS nowhere = peer_addr(fake_net_addr6("2001:db8::9", 1234));
    (void)st;
    make_pair(&p);
    fake_net_blackhole(&nowhere.sin6);
    assert_int_equal(PeerGraphSendData(p.a, 0, &DT, 1, "x"), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphSendData(p.a, 999999, &DT, 1, "x"), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphSendData(p.b, p.ida, &DT, 1, "x"), p.ida == p.idb ? S_OK : PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, NULL, 1, "x"), E_INVALIDARG);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, &PING, 1, "x"), E_INVALIDARG);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, 1, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, 0, NULL), S_OK);
    assert_int_equal(PeerGraphSendData(NULL, p.ida, &DT, 1, "x"), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphGetDataQueue(p.a, 999999, NULL, NULL), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphGetDataQueue(NULL, p.ida, NULL, NULL), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphCloseDirectConnection(p.a, 999999), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphCloseDirectConnection(NULL, p.ida), PEER_E_INVALID_GRAPH);
    /* an attempt in progress: no data yet; closing it cancels (E_ABORT) */
    assert_int_equal(PeerGraphOpenDirectConnection(p.a, L"B", &nowhere, &pending), S_OK);
    assert_int_equal(PeerGraphSendData(p.a, pending, &DT, 1, "x"), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphGetDataQueue(p.a, pending, NULL, NULL), S_OK);
    assert_int_equal(PeerGraphCloseDirectConnection(p.a, pending), S_OK);
    {
        PPEER_GRAPH_EVENT_DATA d = tu_event(p.ea, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
        assert_non_null(d);
        assert_true(d->connectionChangeData.ullConnectionId == pending);
        assert_int_equal(d->connectionChangeData.status, PEER_CONNECTION_FAILED);
        assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, E_ABORT);
        PeerGraphFreeData(d);
    }
    /* a neighbor connection is not a direct one */
    assert_int_equal(PeerGraphConnect(p.a, L"B", &p.ba, &nb), S_OK);
    tu_pump(5, 1);
    assert_int_equal(tu_neighbors(p.a), 1);
    assert_int_equal(PeerGraphCloseDirectConnection(p.a, nb), PEER_E_CONNECTION_NOT_FOUND);
    assert_int_equal(PeerGraphSendData(p.a, nb, &DT, 3, "abc"), S_OK);
    /* closing the graph invalidates everything */
    assert_int_equal(PeerGraphClose(p.a), S_OK);
    assert_int_equal(PeerGraphSendData(p.a, p.ida, &DT, 1, "x"), PEER_E_INVALID_GRAPH);
    tu_pump(5, 1);
    {
        PPEER_GRAPH_EVENT_DATA d = next_data(p.db);
        check_data(d, p.idb, &DT, 0, 0);
        PeerGraphFreeData(d);
        d = next_data(p.db);
        assert_non_null(d);
        assert_int_equal(d->incomingData.data.cbData, 3);
        assert_memory_equal(d->incomingData.data.pbData, "abc", 3);
        PeerGraphFreeData(d);
    }
}

/* On a neighbor link a record added while megabytes of data are queued
 * reaches the other side long before the data is through. */
static void test_records_overtake_data(void **st)
{
    HGRAPH a = tu_create(L"G", L"A"), b = tu_create(L"G", L"B");
    HPEEREVENT eb = reg(b, 0, 0), ea = reg(a, 0, 0), db;
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_INCOMING_DATA, NULL};
    PEER_ADDRESS aa = tu_listen(a);
    ULONGLONG id, idA = 0;
    PEER_RECORD rec;
    FILETIME ft;
    GUID rid;
    unsigned i, got = 0;
    int seen = 0;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    assert_int_equal(PeerGraphRegisterEvent(b, NULL, 1, &r, &db), S_OK);
    assert_int_equal(PeerGraphConnect(b, L"A", &aa, &id), S_OK);
    tu_pump(20, 1);
    assert_int_equal(tu_neighbors(b), 1);
    while ((d = tu_event(ea, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
        if (d->connectionChangeData.status == PEER_CONNECTED) idA = d->connectionChangeData.ullConnectionId;
        PeerGraphFreeData(d);
    }
    assert_true(idA != 0);
    assert_int_equal(PeerGraphSetDataQueueLimit(a, idA, 16u << 20), S_OK);
    fake_net_set_send_capacity(32768);
    for (i = 0; i < 8; i++) {
        unsigned char *m = make_msg(i, 1u << 20);
        assert_int_equal(PeerGraphSendData(a, idA, &DT, 1u << 20, m), S_OK);
        free(m);
    }
    memset(&rec, 0, sizeof rec);
    rec.dwSize = sizeof rec;
    rec.type = DT2;
    {
        ULONGLONG t = 134116992000000000ULL + fake_net_now() * 10000ULL + 36000000000ULL;
        ft.dwLowDateTime = (DWORD)t;
        ft.dwHighDateTime = (DWORD)(t >> 32);
        assert_int_equal(PeerGraphUniversalTimeToPeerTime(a, &ft, &rec.ftExpiration), S_OK);
    }
    rec.data.cbData = 5;
    rec.data.pbData = (PBYTE) "hello";
    assert_int_equal(PeerGraphAddRecord(a, &rec, &rid), S_OK);
    for (i = 0; i < 5000 && got < 8; i++) {
        PPEER_RECORD pr = NULL;
        tu_pump(1, 0);
        if (!seen && PeerGraphGetRecord(b, &rid, &pr) == S_OK) {
            PeerGraphFreeData(pr);
            seen = 1;
            assert_true(got < 2); /* the record came through within the first MB or two */
        }
        while ((d = next_data(db)) != NULL) {
            check_data(d, id, &DT, got++, 1u << 20);
            PeerGraphFreeData(d);
        }
    }
    assert_true(seen);
    assert_int_equal(got, 8);
    (void)eb;
}

/* A receiver that does not take its events stops reading once
 * PEER_MAX_INCOMING_DATA bytes wait: the sender's queue fills and stays at
 * its bound; nothing is lost when the receiver catches up. */
static void test_slow_receiver_pushes_back(void **st)
{
    pair p;
    unsigned sent = 0, got = 0, fulls = 0, i;
    unsigned char *m = make_msg(0, 60000);
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    make_pair(&p);
    fake_net_set_send_capacity(256 * 1024);
    /* phase 1: B never calls GetEventData */
    for (i = 0; i < 300; i++) {
        HRESULT hr;
        size_t j;
        for (j = 0; j < 60000; j++) m[j] = pat(sent, j);
        hr = PeerGraphSendData(p.a, p.ida, &DT, 60000, m);
        if (hr == S_OK) sent++;
        else { assert_int_equal(hr, PEER_E_SEND_QUEUE_FULL); fulls++; }
        assert_true(queued(p.a, p.ida) <= PEER_DEFAULT_DATA_QUEUE);
        tu_pump(1, 1);
    }
    assert_true(fulls > 100);                   /* pushed back */
    assert_true(sent * 60000u < 12u << 20);     /* bounded: nowhere near 300 messages */
    /* what waits at B: at most the limit plus what one read round brings */
    {
        unsigned waiting = 0;
        while ((d = next_data(p.db)) != NULL) {
            check_data(d, p.idb, &DT, got++, 60000);
            PeerGraphFreeData(d);
            waiting++;
        }
        assert_true(waiting * 60000u > PEER_MAX_INCOMING_DATA);
        assert_true(waiting * 60000u <= PEER_MAX_INCOMING_DATA + 320u * 1024u);
    }
    /* phase 2: B keeps up; the rest flows */
    for (i = 0; i < 2000 && got < sent; i++) {
        tu_pump(1, 1);
        while ((d = next_data(p.db)) != NULL) {
            check_data(d, p.idb, &DT, got++, 60000);
            PeerGraphFreeData(d);
        }
    }
    assert_int_equal(got, sent);
    free(m);
}

/* Two registrations for INCOMING_DATA each get their own copy. */
static void test_two_registrations(void **st)
{
    pair p;
    HPEEREVENT db2;
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_INCOMING_DATA, NULL};
    PPEER_GRAPH_EVENT_DATA d1, d2;
    (void)st;
    make_pair(&p);
    assert_int_equal(PeerGraphRegisterEvent(p.b, NULL, 1, &r, &db2), S_OK);
    send_and_flush(p.a, p.ida, &DT, 3, 70000);
    tu_pump(2, 0);
    d1 = next_data(p.db);
    d2 = next_data(db2);
    check_data(d1, p.idb, &DT, 3, 70000);
    check_data(d2, p.idb, &DT, 3, 70000);
    assert_true(d1->incomingData.data.pbData != d2->incomingData.data.pbData);
    PeerGraphFreeData(d1);
    PeerGraphFreeData(d2);
    assert_int_equal(PeerGraphUnregisterEvent(db2), S_OK);
}

/* ------------------------------------------------------- raw-peer wire tests */

static void m_pt2pt(msg *m, const GUID *t, unsigned flags, long total, const unsigned char *d, size_t n)
{
    unsigned i;
    hdr(m, 0x0D);
    p16(m, total >= 0 ? 32 : 28);
    p16(m, flags);
    p32(m, t->Data1);
    p16(m, t->Data2);
    p16(m, t->Data3);
    for (i = 0; i < 8; i++) p8(m, t->Data4[i]);
    if (total >= 0) p32(m, (unsigned long)total);
    if (n) memcpy(m->b + m->n, d, n);
    m->n += n;
    fin(m);
}

/* A raw peer (capabilities ext) opens a direct link to B; returns its socket. */
static PEER_SOCKET raw_direct(PEER_ADDRESS *ba, rxbuf *r, unsigned ext, ULONGLONG node)
{
    PEER_SOCKET s = fake_net_raw_connect(&ba->sin6);
    static msg m;
    memset(r, 0, sizeof *r);
    m_auth(&m, 2, ext, "G", "Raw", "B");
    send_msg(s, &m);
    m_connect(&m, 0x05, node, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(2, 1);
    assert_true(recv_msg(s, r, &m) > 0);
    assert_int_equal(m.b[5], 3);          /* WELCOME */
    assert_int_equal(m.b[24], 0);         /* no referrals on a direct link */
    assert_int_equal(m.b[25], ext & 0x1f); /* capabilities echoed */
    return s;
}

/* A plain MS-PPGRH peer (no capability bits): our big data goes as one
 * PT2PT over several frames; its big PT2PT, Pings between messages and the
 * fragment flag it does not know are all handled as the spec says. */
static void test_plain_peer_wire(void **st)
{
    HGRAPH b = tu_create(L"G", L"B");
    HPEEREVENT eb = reg(b, 1, 0), db;
    PEER_GRAPH_EVENT_REGISTRATION rr = {PEER_GRAPH_EVENT_INCOMING_DATA, NULL};
    PEER_ADDRESS ba = tu_listen(b);
    static rxbuf r;
    static msg m;
    unsigned char *pay = make_msg(9, 40000);
    PPEER_GRAPH_EVENT_DATA d;
    ULONGLONG idb;
    PEER_SOCKET s;
    (void)st;
    assert_int_equal(PeerGraphRegisterEvent(b, NULL, 1, &rr, &db), S_OK);
    s = raw_direct(&ba, &r, 0, 0x77);
    d = tu_event(eb, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
    assert_non_null(d);
    idb = d->connectionChangeData.ullConnectionId;
    assert_true(d->connectionChangeData.ullNodeId == 0x77);
    PeerGraphFreeData(d);
    /* ours: 40000 bytes = one PT2PT of 40028 bytes in three frames */
    assert_int_equal(PeerGraphSendData(b, idb, &DT, 40000, pay), S_OK);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.n, 40028);
    assert_int_equal(m.b[5], 0x0D);
    assert_int_equal(g16(m.b + 8), 28);
    assert_int_equal(g16(m.b + 10), 0);
    assert_int_equal(m.b[12], 0xda);
    assert_memory_equal(m.b + 28, pay, 40000);
    /* theirs: Ping, a 40000-byte PT2PT in 16379-byte frames, a flagged one
     * (the flag means nothing without the capability), Ping */
    m_pt2pt(&m, &PING, 0, -1, NULL, 0);
    send_msg(s, &m);
    m_pt2pt(&m, &DT, 0, -1, pay, 40000);
    send_msg(s, &m);
    m_pt2pt(&m, &DT2, 0x0001, -1, pay, 100);
    send_msg(s, &m);
    m_pt2pt(&m, &PING, 0, -1, NULL, 0);
    send_msg_chunked(s, &m, 7);
    tu_pump(2, 1);
    d = next_data(db);
    check_data(d, idb, &DT, 9, 40000);
    PeerGraphFreeData(d);
    d = next_data(db);
    check_data(d, idb, &DT2, 9, 100);
    PeerGraphFreeData(d);
    assert_null(next_data(db));
    /* DISCONNECT from the peer: the app sees the direct link go */
    m_simple(&m, 5, 3, NULL, 0);
    send_msg(s, &m);
    tu_pump(2, 1);
    expect_direct_closed(eb, S_OK);
    fake_net_raw_close(s);
    free(pay);
}

/* A peer with the fragment capability: interleaved Pings are fine; every
 * malformed fragment sequence closes that one link with
 * PEER_E_PROTOCOL_ERROR while another direct link carries on. */
static void test_fragment_wire_and_hostile(void **st)
{
    HGRAPH b = tu_create(L"G", L"B");
    HPEEREVENT eb = reg(b, 1, 0), db;
    PEER_GRAPH_EVENT_REGISTRATION rr = {PEER_GRAPH_EVENT_INCOMING_DATA, NULL};
    PEER_ADDRESS ba = tu_listen(b);
    static rxbuf r, r2;
    static msg m;
    unsigned char *pay = make_msg(4, 40000);
    PPEER_GRAPH_EVENT_DATA d;
    PEER_SOCKET keep, s;
    ULONGLONG idKeep;
    int c;
    (void)st;
    assert_int_equal(PeerGraphRegisterEvent(b, NULL, 1, &rr, &db), S_OK);
    keep = raw_direct(&ba, &r2, 7, 0x10);
    d = tu_event(eb, PEER_GRAPH_EVENT_DIRECT_CONNECTION);
    idKeep = d->connectionChangeData.ullConnectionId;
    PeerGraphFreeData(d);
    /* valid: 40000 bytes as 16347 + Ping + 16351 + 7302 */
    m_pt2pt(&m, &DT, 1, 40000, pay, 16347);
    send_msg(keep, &m);
    m_pt2pt(&m, &PING, 0, -1, NULL, 0);
    send_msg(keep, &m);
    m_pt2pt(&m, &DT, 1, -1, pay + 16347, 16351);
    send_msg(keep, &m);
    m_pt2pt(&m, &DT, 0, -1, pay + 32698, 40000 - 32698);
    send_msg(keep, &m);
    tu_pump(2, 1);
    d = next_data(db);
    check_data(d, idKeep, &DT, 4, 40000);
    PeerGraphFreeData(d);
    /* hostile sequences, each on its own link */
    for (c = 0; c < 6; c++) {
        s = raw_direct(&ba, &r, 7, 0x20 + (ULONGLONG)c);
        switch (c) {
        case 0: m_pt2pt(&m, &DT, 1, (long)PEER_MAX_DATA_SIZE + 1, pay, 100); send_msg(s, &m); break;
        case 1: m_pt2pt(&m, &DT, 1, 50, pay, 100); send_msg(s, &m); break;         /* more than the total */
        case 2: m_pt2pt(&m, &DT, 1, 1000, pay, 100); send_msg(s, &m);
                m_pt2pt(&m, &DT2, 0, -1, pay, 900); send_msg(s, &m); break;       /* type changes */
        case 3: m_pt2pt(&m, &DT, 1, 1000, pay, 100); send_msg(s, &m);
                m_pt2pt(&m, &DT, 0, -1, pay, 800); send_msg(s, &m); break;        /* ends short */
        case 4: m_pt2pt(&m, &DT, 1, 1000, pay, 100); send_msg(s, &m);
                m_simple(&m, 5, 3, NULL, 0); send_msg(s, &m); break;              /* DISCONNECT inside */
        default: m_pt2pt(&m, &DT, 0, -1, pay, 10); m.b[8] = 0; m.b[9] = 27; send_msg(s, &m); break; /* bad offset */
        }
        tu_pump(2, 1);
        expect_direct_closed(eb, PEER_E_PROTOCOL_ERROR);
        fake_net_raw_close(s);
    }
    assert_null(next_data(db)); /* nothing half-made was delivered */
    /* the first link still works */
    m_pt2pt(&m, &DT2, 0, -1, pay, 5);
    send_msg(keep, &m);
    tu_pump(2, 1);
    d = next_data(db);
    check_data(d, idKeep, &DT2, 4, 5);
    PeerGraphFreeData(d);
    /* and what B sends a fragment-capable peer is fragmented */
    assert_int_equal(PeerGraphSendData(b, idKeep, &DT, 40000, pay), S_OK);
    tu_pump(1, 1);
    assert_true(recv_msg(keep, &r2, &m) > 0);
    assert_int_equal(m.n, 16379);
    assert_int_equal(g16(m.b + 8), 32);
    assert_int_equal(g16(m.b + 10), 1);
    assert_int_equal(((unsigned)m.b[28] << 24 | (unsigned)m.b[29] << 16 | (unsigned)m.b[30] << 8 | m.b[31]), 40000);
    assert_memory_equal(m.b + 32, pay, 16347);
    assert_true(recv_msg(keep, &r2, &m) > 0);
    assert_int_equal(m.n, 16379);
    assert_int_equal(g16(m.b + 8), 28);
    assert_int_equal(g16(m.b + 10), 1);
    assert_true(recv_msg(keep, &r2, &m) > 0);
    assert_int_equal(m.n, 28 + 40000 - 32698);
    assert_int_equal(g16(m.b + 10), 0);
    assert_memory_equal(m.b + 28, pay + 32698, 40000 - 32698);
    fake_net_raw_close(keep);
    free(pay);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_direct_refused_unless_registered, setup, teardown),
        cmocka_unit_test_setup_teardown(test_direct_sizes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_byte_io, setup, teardown),
        cmocka_unit_test_setup_teardown(test_queue_full_and_drain, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_with_data_queued, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_peer_never_reads, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_ids_and_args, setup, teardown),
        cmocka_unit_test_setup_teardown(test_records_overtake_data, setup, teardown),
        cmocka_unit_test_setup_teardown(test_slow_receiver_pushes_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_two_registrations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_plain_peer_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fragment_wire_and_hostile, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
