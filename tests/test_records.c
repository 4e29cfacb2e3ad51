/*
 * test_records.c - the replicated record database on the fake network and
 * synthetic clock: the records API, flooding through lines and rings, Sync
 * All for a late joiner, Time-based sync after being offline, expiration,
 * the database file (reopen, torn tail), hostile FLOODs, the wire form, and a
 * crash test (a child killed with SIGKILL while writing).
 */
#include "rawpeer.h"
#include <mbedtls/md.h>
#ifndef _WIN32
#include <signal.h>
#include <sys/types.h>
#include <sys/wait.h>
#endif

static const GUID T1 = {0x11111111, 0x2222, 0x3333, {1, 2, 3, 4, 5, 6, 7, 8}};
static const GUID T2 = {0x99999999, 0x2222, 0x3333, {1, 2, 3, 4, 5, 6, 7, 8}};

static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

static ULONGLONG ft64(FILETIME f) { return ((ULONGLONG)f.dwHighDateTime << 32) | f.dwLowDateTime; }

static ULONGLONG pt_now(HGRAPH h)
{
    FILETIME u, p;
    ULONGLONG utc = 134116992000000000ULL + fake_net_now() * 10000ULL; /* the fake's UTC */
    u.dwLowDateTime = (DWORD)utc;
    u.dwHighDateTime = (DWORD)(utc >> 32);
    assert_int_equal(PeerGraphUniversalTimeToPeerTime(h, &u, &p), S_OK);
    return ft64(p);
}

static void rec_init(PEER_RECORD *r, HGRAPH h, const GUID *type, const char *data, ULONGLONG lifeSec)
{
    ULONGLONG exp = pt_now(h) + lifeSec * 10000000ULL;
    memset(r, 0, sizeof *r);
    r->dwSize = sizeof *r;
    r->type = *type;
    r->ftExpiration.dwLowDateTime = (DWORD)exp;
    r->ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    r->data.cbData = (ULONG)strlen(data);
    r->data.pbData = (PBYTE)data;
}

static GUID add(HGRAPH h, const GUID *type, const char *data)
{
    PEER_RECORD r;
    GUID id;
    rec_init(&r, h, type, data, 3600);
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    return id;
}

/* The data of a live record, or "" if missing. */
static const char *data_of(HGRAPH h, const GUID *id, char *buf, size_t n)
{
    PPEER_RECORD r = NULL;
    buf[0] = 0;
    if (PeerGraphGetRecord(h, id, &r) != S_OK) return buf;
    if (r->data.cbData < n) { memcpy(buf, r->data.pbData, r->data.cbData); buf[r->data.cbData] = 0; }
    PeerGraphFreeData(r);
    return buf;
}

static int count_record_events(HPEEREVENT e, PEER_RECORD_CHANGE_TYPE ct)
{
    PPEER_GRAPH_EVENT_DATA d;
    int n = 0;
    while ((d = tu_event(e, PEER_GRAPH_EVENT_RECORD_CHANGED)) != NULL) {
        if (d->recordChangeData.changeType == ct) n++;
        PeerGraphFreeData(d);
    }
    return n;
}

static ULONG record_count(HGRAPH h, const GUID *type)
{
    HPEERENUM en;
    ULONG n;
    assert_int_equal(PeerGraphEnumRecords(h, type, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    return n;
}

static void test_api_rules(void **st)
{
    HGRAPH h = tu_create(L"R", L"alice"), j = tu_open(L"R", L"bob");
    HPEEREVENT e = tu_register_all(h);
    PEER_RECORD r;
    PPEER_RECORD got;
    GUID id, bad = {0x00000100, 0, 0, {0}};
    char buf[64];
    static char big[5000];
    (void)st;
    rec_init(&r, h, &T1, "hello", 3600);
    assert_int_equal(PeerGraphAddRecord(h, NULL, &id), E_INVALIDARG);
    assert_int_equal(PeerGraphAddRecord(h, &r, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphAddRecord(j, &r, &id), PEER_E_GRAPH_NOT_READY);
    r.dwSize--;
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), E_INVALIDARG);
    r.dwSize++;
    r.type = bad;
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), E_INVALIDARG);
    r.type = T1;
    r.dwFlags = PEER_RECORD_FLAG_AUTOREFRESH;
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), E_INVALIDARG);
    r.dwFlags = 0;
    r.pwzCreatorId = (PWSTR)L"mallory";
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), E_INVALIDARG);
    r.pwzCreatorId = NULL;
    r.data.pbData = NULL;
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), E_INVALIDARG);
    r.data.pbData = (PBYTE)"hello";
    r.ftExpiration.dwHighDateTime = 0;
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), E_INVALIDARG);
    rec_init(&r, h, &T1, "hello", 3600);
    r.data.cbData = 70u * 1024u * 1024u; /* over the default 60 MB */
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), PEER_E_MAX_RECORD_SIZE_EXCEEDED);
    assert_int_equal(count_record_events(e, PEER_RECORD_ADDED), 0); /* nothing changed */
    rec_init(&r, h, &T1, "hello", 3600);
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    assert_int_equal(count_record_events(e, PEER_RECORD_ADDED), 1);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    assert_int_equal(got->dwSize, sizeof(PEER_RECORD));
    assert_memory_equal(&got->id, &id, sizeof id);
    assert_memory_equal(&got->type, &T1, sizeof T1);
    assert_int_equal(got->dwVersion, 1);
    assert_true(wcscmp(got->pwzCreatorId, L"alice") == 0);
    assert_null(got->pwzModifiedById);
    assert_int_equal(got->data.cbData, 5);
    assert_memory_equal(got->data.pbData, "hello", 5);
    assert_memory_equal(&got->ftCreation, &got->ftLastModified, sizeof(FILETIME));
    /* update: new data, version 2, modified by us; expiration may not shrink */
    got->data.cbData = 3;
    got->data.pbData = (PBYTE)"bye";
    fake_net_advance(10);
    assert_int_equal(PeerGraphUpdateRecord(h, got), S_OK);
    assert_int_equal(count_record_events(e, PEER_RECORD_UPDATED), 1);
    got->ftExpiration.dwLowDateTime -= 1;
    if (got->ftExpiration.dwLowDateTime == 0xFFFFFFFFu) got->ftExpiration.dwHighDateTime--;
    assert_int_equal(PeerGraphUpdateRecord(h, got), E_INVALIDARG);
    got->ftExpiration.dwLowDateTime += 1;
    if (got->ftExpiration.dwLowDateTime == 0) got->ftExpiration.dwHighDateTime++;
    got->type = T2;
    assert_int_equal(PeerGraphUpdateRecord(h, got), E_INVALIDARG);
    PeerGraphFreeData(got);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "bye");
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    assert_int_equal(got->dwVersion, 2);
    assert_true(wcscmp(got->pwzModifiedById, L"alice") == 0);
    PeerGraphFreeData(got);
    /* max record size of a small graph */
    {
        HGRAPH s = tu_create_db(L"small", L"alice", L"smalldb", 4096);
        memset(big, 'x', sizeof big - 1);
        rec_init(&r, s, &T1, big, 3600);
        assert_int_equal(PeerGraphAddRecord(s, &r, &id), PEER_E_MAX_RECORD_SIZE_EXCEEDED);
        r.data.cbData = 4096;
        assert_int_equal(PeerGraphAddRecord(s, &r, &id), S_OK);
    }
    /* delete: graph-wide, then gone */
    id = add(h, &T2, "two");
    assert_int_equal(PeerGraphDeleteRecord(h, &id, FALSE), S_OK);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(PeerGraphDeleteRecord(h, &id, FALSE), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(count_record_events(e, PEER_RECORD_DELETED), 1);
    assert_int_equal(record_count(h, NULL), 1);
    assert_int_equal(record_count(h, &T2), 0);
    /* enumerate by creator */
    {
        HPEERENUM en;
        ULONG n = 10;
        PEER_RECORD **items;
        assert_int_equal(PeerGraphEnumRecords(h, NULL, L"alice", &en), S_OK);
        assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
        assert_int_equal(n, 1);
        assert_int_equal(items[0]->data.cbData, 3);
        PeerGraphFreeData(items);
        assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
        assert_int_equal(PeerGraphEnumRecords(h, NULL, L"bob", &en), S_OK);
        assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
        assert_int_equal(n, 0);
        assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    }
}

/* Attributes on records and PeerGraphSearchRecords over them. */
static void test_attributes_and_search(void **st)
{
    HGRAPH h = tu_create(L"search", L"alice");
    PEER_RECORD r;
    GUID id;
    HPEERENUM en;
    ULONG n;
    int i;
    (void)st;
    rec_init(&r, h, &T1, "x", 3600);
    r.pwzAttributes = (PWSTR)L"<attributes><attribute name=\"Priority\" type=\"int\">1</attributes>";
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), PEER_E_INVALID_ATTRIBUTES);
    r.pwzAttributes = (PWSTR)L"<attributes><attribute name=\"peercreatorid\" type=\"string\">x</attribute></attributes>";
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), PEER_E_INVALID_ATTRIBUTES);
    for (i = 0; i < 10; i++) {
        wchar_t a[200];
        swprintf(a, 200, L"<attributes><attribute name=\"Priority\" type=\"int\">%d</attribute>"
                         L"<attribute name=\"Title\" type=\"string\">item %d</attribute></attributes>", i, i);
        r.pwzAttributes = a;
        assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    }
    assert_int_equal(PeerGraphSearchRecords(h, L"<peersearch><clause attrib=\"Priority\" type=\"int\" "
                                               L"compare=\"greaterorequal\">7</clause></peersearch>", &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(n, 3);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    assert_int_equal(PeerGraphSearchRecords(h, L"<peersearch><and><clause attrib=\"Title\" type=\"string\">item ?"
                                               L"</clause><clause attrib=\"peercreatorid\" type=\"string\">ali*</clause>"
                                               L"</and></peersearch>", &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(n, 10);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    assert_int_equal(PeerGraphSearchRecords(h, L"<peersearch><and></and></peersearch>", &en), PEER_E_INVALID_SEARCH);
    assert_int_equal(PeerGraphSearchRecords(h, L"<peersearch><clause attrib=\"T\" type=\"string\">a\\q</clause>"
                                               L"</peersearch>", &en), E_INVALIDARG);
    assert_int_equal(PeerGraphSearchRecords(h, NULL, &en), E_INVALIDARG);
}

/* Open with a sync precedence: that type is solicited first and raises
 * PEER_GRAPH_EVENT_SYNCHRONIZED (filtered by type); peer time round-trips. */
static void test_sync_precedence_and_peer_time(void **st)
{
    HGRAPH a = tu_create(L"prec", L"alice"), b;
    PEER_ADDRESS la = tu_listen(a);
    ULONGLONG cid;
    GUID prec[1];
    PEER_GRAPH_EVENT_REGISTRATION reg[2];
    HPEEREVENT e;
    PPEER_GRAPH_EVENT_DATA d;
    FILETIME u, p, back;
    int syncs = 0;
    (void)st;
    add(a, &T1, "one");
    add(a, &T2, "two");
    prec[0] = T2;
    PeerGraphDelete(L"prec", L"bob", L"precdb");
    assert_int_equal(PeerGraphOpen(L"prec", L"bob", L"precdb", NULL, 1, NULL, &b), E_INVALIDARG);
    assert_int_equal(PeerGraphOpen(L"prec", L"bob", L"precdb", NULL, 0, prec, &b), E_INVALIDARG);
    assert_int_equal(PeerGraphOpen(L"prec", L"bob", L"precdb", NULL, 1, prec, &b), PEER_S_GRAPH_DATA_CREATED);
    reg[0].eventType = PEER_GRAPH_EVENT_SYNCHRONIZED;
    reg[0].pType = (GUID *)&T2;
    reg[1].eventType = PEER_GRAPH_EVENT_SYNCHRONIZED;
    reg[1].pType = (GUID *)&T1; /* never prioritized: never raised */
    assert_int_equal(PeerGraphRegisterEvent(b, NULL, 2, reg, &e), S_OK);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(10, 1);
    while ((d = tu_event(e, PEER_GRAPH_EVENT_SYNCHRONIZED)) != NULL) {
        assert_int_equal(d->synchronizedData.dwSize, sizeof d->synchronizedData);
        assert_memory_equal(&d->synchronizedData.recordType, &T2, sizeof(GUID));
        syncs++;
        PeerGraphFreeData(d);
    }
    assert_int_equal(syncs, 1);
    /* peer time: UTC minus the delta learned from alice (clocks agree here) */
    u.dwLowDateTime = 0x12345678;
    u.dwHighDateTime = 0x01DC0000;
    assert_int_equal(PeerGraphUniversalTimeToPeerTime(b, &u, &p), S_OK);
    assert_int_equal(PeerGraphPeerTimeToUniversalTime(b, &p, &back), S_OK);
    assert_memory_equal(&u, &back, sizeof u);
    assert_int_equal(PeerGraphUniversalTimeToPeerTime(b, NULL, &p), E_INVALIDARG);
}

/* A record much larger than a frame (here 200 KB, 13 frames) floods and
 * syncs intact; RECORD_CHANGED registrations filter by record type. */
static void test_large_record_and_type_filter(void **st)
{
    HGRAPH a = tu_create(L"big", L"alice"), b = tu_open(L"big", L"bob");
    PEER_ADDRESS la = tu_listen(a);
    PEER_GRAPH_EVENT_REGISTRATION reg = {PEER_GRAPH_EVENT_RECORD_CHANGED, (GUID *)&T2};
    HPEEREVENT eT2;
    ULONGLONG cid;
    PEER_RECORD r;
    GUID id, id2, small;
    PPEER_RECORD got;
    static unsigned char big[200000];
    size_t i;
    (void)st;
    for (i = 0; i < sizeof big; i++) big[i] = (unsigned char)(i * 7 + 3);
    rec_init(&r, a, &T1, "x", 3600);
    r.data.cbData = sizeof big;
    r.data.pbData = big;
    assert_int_equal(PeerGraphAddRecord(a, &r, &id), S_OK); /* before b joins: goes by sync */
    assert_int_equal(PeerGraphRegisterEvent(b, NULL, 1, &reg, &eT2), S_OK);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(20, 1);
    assert_int_equal(PeerGraphGetRecord(b, &id, &got), S_OK);
    assert_int_equal(got->data.cbData, sizeof big);
    assert_memory_equal(got->data.pbData, big, sizeof big);
    PeerGraphFreeData(got);
    big[12345] ^= 0xFF;
    assert_int_equal(PeerGraphAddRecord(a, &r, &id2), S_OK); /* after: goes by flood */
    small = add(a, &T2, "typed");
    tu_pump(20, 1);
    assert_int_equal(PeerGraphGetRecord(b, &id2, &got), S_OK);
    assert_memory_equal(got->data.pbData, big, sizeof big);
    PeerGraphFreeData(got);
    /* the T2 registration saw only the T2 record */
    {
        PPEER_GRAPH_EVENT_DATA d;
        int n = 0;
        while (PeerGraphGetEventData(eT2, &d) == S_OK) {
            assert_int_equal(d->eventType, PEER_GRAPH_EVENT_RECORD_CHANGED);
            assert_memory_equal(&d->recordChangeData.recordType, &T2, sizeof(GUID));
            assert_memory_equal(&d->recordChangeData.recordId, &small, sizeof(GUID));
            n++;
            PeerGraphFreeData(d);
        }
        assert_int_equal(n, 1);
    }
}

/* Export from a joined node, wipe it, import into a fresh Open. */
static void test_export_import(void **st)
{
    HGRAPH a = tu_create(L"exim", L"alice"), b, c;
    PEER_ADDRESS la = tu_listen(a);
    ULONGLONG cid;
    GUID ids[5];
    wchar_t db[32];
    char buf[16];
    DWORD status;
    int i;
    (void)st;
    for (i = 0; i < 5; i++) ids[i] = add(a, &T1, "exported");
    b = tu_open(L"exim", L"bob");
    swprintf(db, 32, L"db%d", tu_db_counter);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(10, 1);
    assert_int_equal(PeerGraphExportDatabase(b, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphExportDatabase(b, L"build/nonexistent-dir/x.p2pg"), E_ACCESSDENIED);
    assert_int_equal(PeerGraphExportDatabase(b, TU_DBDIR_W L"/bob-export.p2pg"), S_OK);
    assert_int_equal(PeerGraphImportDatabase(b, TU_DBDIR_W L"/bob-export.p2pg"), PEER_E_GRAPH_IN_USE);
    assert_int_equal(PeerGraphImportDatabase(a, TU_DBDIR_W L"/bob-export.p2pg"), PEER_E_GRAPH_IN_USE);
    {
        HGRAPH cr = tu_create(L"exim2", L"bob"); /* a creator's handle, never used on the network */
        assert_int_equal(PeerGraphImportDatabase(cr, TU_DBDIR_W L"/bob-export.p2pg"), E_ACCESSDENIED);
    }
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphDelete(L"exim", L"bob", db), S_OK);
    assert_int_equal(PeerGraphOpen(L"exim", L"bob", db, NULL, 0, NULL, &b), PEER_S_GRAPH_DATA_CREATED);
    assert_int_equal(PeerGraphImportDatabase(b, TU_DBDIR_W L"/missing.p2pg"), PEER_E_DATABASE_NOT_PRESENT);
    assert_int_equal(PeerGraphImportDatabase(b, TU_DBDIR_W L"/bob-export.p2pg"), S_OK);
    assert_int_equal(PeerGraphGetStatus(b, &status), S_OK);
    assert_true(status & PEER_GRAPH_STATUS_SYNCHRONIZED);
    for (i = 0; i < 5; i++) assert_string_equal(data_of(b, &ids[i], buf, sizeof buf), "exported");
    /* another peer's export is refused */
    c = tu_open(L"exim", L"carol");
    assert_int_equal(PeerGraphImportDatabase(c, TU_DBDIR_W L"/bob-export.p2pg"), PEER_E_INVALID_DATABASE);
    {
        FILE *f = fopen(TU_DBDIR_N "/garbage.p2pg", "wb");
        fwrite("not a database", 1, 14, f);
        fclose(f);
    }
    assert_int_equal(PeerGraphImportDatabase(c, TU_DBDIR_W L"/garbage.p2pg"), PEER_E_INVALID_DATABASE);
}

/* N graphs; graph i connects to graph link[i] (a line or a ring). */
#define NMAX 10
static HGRAPH G[NMAX];
static HPEEREVENT E[NMAX];

static void build(int n, int ring)
{
    int i;
    PEER_ADDRESS a[NMAX];
    ULONGLONG id;
    G[0] = tu_create(L"net", L"n0");
    E[0] = tu_register_all(G[0]);
    a[0] = tu_listen(G[0]);
    for (i = 1; i < n; i++) {
        wchar_t p[8];
        swprintf(p, 8, L"n%d", i);
        G[i] = tu_open(L"net", p);
        E[i] = tu_register_all(G[i]);
        assert_int_equal(PeerGraphConnect(G[i], NULL, &a[i - 1], &id), S_OK);
        tu_pump(10, 1);
        a[i] = tu_listen(G[i]);
    }
    if (ring) {
        assert_int_equal(PeerGraphConnect(G[0], NULL, &a[n - 1], &id), S_OK);
        tu_pump(10, 1);
    }
    for (i = 0; i < n; i++) {
        DWORD s;
        assert_int_equal(PeerGraphGetStatus(G[i], &s), S_OK);
        assert_true(s & PEER_GRAPH_STATUS_SYNCHRONIZED);
        while (count_record_events(E[i], PEER_RECORD_ADDED)) {}
    }
}

static void flood_checks(int n)
{
    int i;
    GUID id;
    char buf[32];
    PPEER_RECORD r;
    id = add(G[n - 1], &T1, "from the end");
    tu_pump(20, 1);
    for (i = 0; i < n; i++) {
        assert_string_equal(data_of(G[i], &id, buf, sizeof buf), "from the end");
        assert_int_equal(count_record_events(E[i], PEER_RECORD_ADDED), 1); /* exactly once */
    }
    assert_int_equal(PeerGraphGetRecord(G[0], &id, &r), S_OK);
    r->data.cbData = 7;
    r->data.pbData = (PBYTE)"updated";
    assert_int_equal(PeerGraphUpdateRecord(G[0], r), S_OK);
    PeerGraphFreeData(r);
    tu_pump(20, 1);
    for (i = 0; i < n; i++) {
        assert_string_equal(data_of(G[i], &id, buf, sizeof buf), "updated");
        assert_int_equal(count_record_events(E[i], PEER_RECORD_UPDATED), 1);
    }
    assert_int_equal(PeerGraphDeleteRecord(G[n / 2], &id, FALSE), S_OK);
    tu_pump(20, 1);
    for (i = 0; i < n; i++) {
        assert_int_equal(PeerGraphGetRecord(G[i], &id, &r), PEER_E_RECORD_NOT_FOUND);
        assert_int_equal(count_record_events(E[i], PEER_RECORD_DELETED), 1);
    }
}

static void test_flood_line(void **st) { (void)st; build(NMAX, 0); flood_checks(NMAX); }
static void test_flood_ring(void **st) { (void)st; build(NMAX, 1); flood_checks(NMAX); }

/* A late joiner gets everything by Sync All, and the graph's properties
 * through the Graph Info record. */
static void test_late_join(void **st)
{
    HGRAPH a = tu_create(L"late", L"alice"), b;
    HPEEREVENT eb;
    PEER_ADDRESS la = tu_listen(a);
    GUID ids[50];
    ULONGLONG cid;
    char buf[16], want[16];
    int i;
    PPEER_GRAPH_PROPERTIES p;
    (void)st;
    for (i = 0; i < 50; i++) { sprintf(want, "rec%d", i); ids[i] = add(a, i % 2 ? &T1 : &T2, want); }
    assert_int_equal(PeerGraphDeleteRecord(a, &ids[0], FALSE), S_OK);
    b = tu_open(L"late", L"bob");
    eb = tu_register_all(b);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(20, 1);
    for (i = 1; i < 50; i++) {
        sprintf(want, "rec%d", i);
        assert_string_equal(data_of(b, &ids[i], buf, sizeof buf), want);
    }
    assert_string_equal(data_of(b, &ids[0], buf, sizeof buf), "");
    assert_int_equal(count_record_events(eb, PEER_RECORD_ADDED), 49); /* the tombstone raises nothing */
    assert_int_equal(PeerGraphGetProperties(b, &p), S_OK);
    assert_true(wcscmp(p->pwzCreatorId, L"alice") == 0);
    assert_true(wcscmp(p->pwzFriendlyName, L"test graph") == 0);
    PeerGraphFreeData(p);
}

/* Offline while records changed: the reopened node resyncs by time. */
static void test_offline_resync(void **st)
{
    HGRAPH a = tu_create(L"off", L"alice"), b;
    PEER_ADDRESS la = tu_listen(a);
    GUID keep, upd, del, fresh;
    ULONGLONG cid;
    char buf[16];
    PPEER_RECORD r;
    wchar_t db[32];
    HPEEREVENT eb;
    (void)st;
    keep = add(a, &T1, "keep");
    upd = add(a, &T1, "old");
    del = add(a, &T1, "doomed");
    b = tu_open(L"off", L"bob");
    swprintf(db, 32, L"db%d", tu_db_counter);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(10, 1);
    assert_string_equal(data_of(b, &upd, buf, sizeof buf), "old");
    assert_int_equal(PeerGraphClose(b), S_OK);
    tu_pump(3, 1000);
    /* while bob is away */
    assert_int_equal(PeerGraphGetRecord(a, &upd, &r), S_OK);
    r->data.cbData = 3;
    r->data.pbData = (PBYTE)"new";
    assert_int_equal(PeerGraphUpdateRecord(a, r), S_OK);
    PeerGraphFreeData(r);
    assert_int_equal(PeerGraphDeleteRecord(a, &del, FALSE), S_OK);
    fresh = add(a, &T2, "fresh");
    tu_pump(3, 1000);
    /* bob comes back: his database is there (S_OK), and time-based sync catches up */
    assert_int_equal(PeerGraphOpen(L"off", L"bob", db, NULL, 0, NULL, &b), S_OK);
    eb = tu_register_all(b);
    assert_string_equal(data_of(b, &upd, buf, sizeof buf), "old");
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(10, 1);
    assert_string_equal(data_of(b, &keep, buf, sizeof buf), "keep");
    assert_string_equal(data_of(b, &upd, buf, sizeof buf), "new");
    assert_string_equal(data_of(b, &fresh, buf, sizeof buf), "fresh");
    assert_int_equal(PeerGraphGetRecord(b, &del, &r), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(count_record_events(eb, PEER_RECORD_UPDATED) , 1);
}

static void test_expiration(void **st)
{
    HGRAPH h = tu_create(L"exp", L"alice");
    HPEEREVENT e = tu_register_all(h);
    PEER_RECORD r;
    GUID id;
    PPEER_RECORD got;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    rec_init(&r, h, &T1, "short", 60);
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    tu_pump(1, 1);
    tu_pump(1, 59000);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    PeerGraphFreeData(got);
    tu_pump(1, 1000);
    /* expired: invisible at once, purged and reported by the expiry pass */
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), PEER_E_RECORD_NOT_FOUND);
    tu_pump(2, 15000);
    while ((d = tu_event(e, PEER_GRAPH_EVENT_RECORD_CHANGED)) != NULL) {
        if (d->recordChangeData.changeType == PEER_RECORD_EXPIRED) {
            assert_memory_equal(&d->recordChangeData.recordId, &id, sizeof id);
            PeerGraphFreeData(d);
            break;
        }
        PeerGraphFreeData(d);
    }
    assert_non_null(d);
    {
        PEER_DATABASE_INFO di;
        di.dwSize = sizeof di;
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
        assert_int_equal(di.cRecords, 1); /* only the Graph Info record is left */
    }
    /* the Graph Info record is refreshed by its creator and never expires */
    tu_pump(30, 60000);
    {
        PEER_DATABASE_INFO di;
        di.dwSize = sizeof di;
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
        assert_int_equal(di.cRecords, 1);
    }
}

/* Churn through the record table: 3000 short-lived records enter and
 * expire (leaving tombstones behind, which force rebuilds of the table at
 * the same size) while 40 long-lived ones, each updated many times
 * meanwhile, must stay findable once each, and no expired one may be
 * found. */
static void test_record_table_churn(void **st)
{
    HGRAPH h = tu_create(L"churn", L"alice");
    GUID keep[40], last[50];
    char buf[16];
    int i, k, cycle;
    (void)st;
    for (i = 0; i < 40; i++) keep[i] = add(h, &T1, "kept");
    for (cycle = 0; cycle < 60; cycle++) {
        for (k = 0; k < 50; k++) {
            PEER_RECORD r;
            rec_init(&r, h, &T2, "brief", 2);
            assert_int_equal(PeerGraphAddRecord(h, &r, &last[k]), S_OK);
            { /* a new version replaces a kept record: it must be found while the table moves */
                PPEER_RECORD got = NULL;
                assert_int_equal(PeerGraphGetRecord(h, &keep[(cycle * 50 + k) % 40], &got), S_OK);
                fake_net_advance(1);
                assert_int_equal(PeerGraphUpdateRecord(h, got), S_OK);
                PeerGraphFreeData(got);
            }
        }
        for (i = 0; i < 40; i += 3) assert_string_equal(data_of(h, &keep[i], buf, sizeof buf), "kept");
        tu_pump(3, 10000); /* they expire, and the expiry pass purges them */
        for (k = 0; k < 50; k += 7) assert_string_equal(data_of(h, &last[k], buf, sizeof buf), "");
    }
    for (i = 0; i < 40; i++) assert_string_equal(data_of(h, &keep[i], buf, sizeof buf), "kept");
    assert_int_equal(record_count(h, &T1), 40); /* no version left behind */
    assert_int_equal(record_count(h, &T2), 0);
    {
        PEER_DATABASE_INFO di;
        di.dwSize = sizeof di;
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
        assert_int_equal(di.cRecords, 41); /* and the Graph Info record */
    }
}

/* Records survive Close/Open; local deletes too; a torn tail is dropped. */
static void test_persistence_and_torn_tail(void **st)
{
    HGRAPH h = tu_create_db(L"persist", L"alice", L"pdb", 0);
    GUID ids[20];
    int i;
    char buf[16], want[16];
    PEER_DATABASE_INFO di;
    (void)st;
    for (i = 0; i < 20; i++) { sprintf(want, "p%d", i); ids[i] = add(h, &T1, want); }
    assert_int_equal(PeerGraphDeleteRecord(h, &ids[3], TRUE), S_OK);
    assert_int_equal(PeerGraphClose(h), S_OK);
    assert_int_equal(PeerGraphOpen(L"persist", L"alice", L"pdb", NULL, 0, NULL, &h), S_OK);
    for (i = 0; i < 20; i++) {
        sprintf(want, "p%d", i);
        assert_string_equal(data_of(h, &ids[i], buf, sizeof buf), i == 3 ? "" : want);
    }
    assert_int_equal(PeerGraphClose(h), S_OK);
    /* a torn write at the end */
    {
        char path[512];
        FILE *f;
        tu_db_file_path("persist", "alice", "pdb", path, sizeof path);
        f = fopen(path, "ab");
        assert_non_null(f);
        fwrite("\x00\x00\x01\x00\x02partial", 1, 12, f);
        fclose(f);
    }
    assert_int_equal(PeerGraphOpen(L"persist", L"alice", L"pdb", NULL, 0, NULL, &h), S_OK);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
    assert_int_equal(di.cbTornTailDropped, 12);
    assert_int_equal(di.cRecords, 20); /* 19 + Graph Info */
    assert_string_equal(data_of(h, &ids[19], buf, sizeof buf), "p19");
}

/* Compaction keeps the file bounded under repeated updates. */
static void test_compaction(void **st)
{
    HGRAPH h = tu_create(L"compact", L"alice");
    GUID id = add(h, &T1, "v");
    PPEER_RECORD r;
    PEER_DATABASE_INFO di;
    static char data[2000];
    int i;
    (void)st;
    memset(data, 'd', sizeof data);
    for (i = 0; i < 3000; i++) {
        assert_int_equal(PeerGraphGetRecord(h, &id, &r), S_OK);
        r->data.cbData = sizeof data;
        r->data.pbData = (PBYTE)data;
        fake_net_advance(1);
        assert_int_equal(PeerGraphUpdateRecord(h, r), S_OK);
        PeerGraphFreeData(r);
        if (i % 100 == 0) tu_pump(1, 1);
    }
    tu_pump(1, 1);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
    assert_true(di.cbFile < 2 * di.cbRecords + 2 * 1024 * 1024); /* 3000 x 2 KB written */
    assert_true(di.cbFile > di.cbRecords);
}

/* The record table through many growths (1.25 times each, the records
 * moving a few slots per insert and the rest in the next service call):
 * 12,000 records added, every 5th deleted again and every 11th updated
 * (tombstones), a service every 7 adds; after each add, the records added
 * just before and halfway back are found with their data, whichever
 * table holds them; at the end every record is where it should be, also
 * after reopening from the file. */
static void test_record_table_growth(void **st)
{
    enum { N = 12000 };
    static GUID ids[N];
    static char live[N], upd[N];
    HGRAPH h = tu_create(L"grow", L"alice");
    wchar_t db[32];
    char want[16], buf[16];
    ULONG n = 0;
    int i, pass;
    (void)st;
    swprintf(db, 32, L"db%d", tu_db_counter);
    for (i = 0; i < N; i++) {
        snprintf(want, sizeof want, "r%d", i);
        ids[i] = add(h, &T1, want);
        live[i] = 1;
        n++;
        if (i % 5 == 4) { /* delete the one before: a tombstone */
            assert_int_equal(PeerGraphDeleteRecord(h, &ids[i - 1], FALSE), S_OK);
            live[i - 1] = 0;
            n--;
        }
        if (i % 11 == 10 && live[i - 2]) { /* a new version: a tombstone and an insert */
            PPEER_RECORD r = NULL;
            assert_int_equal(PeerGraphGetRecord(h, &ids[i - 2], &r), S_OK);
            snprintf(want, sizeof want, "u%d", i - 2);
            r->data.cbData = (ULONG)strlen(want);
            r->data.pbData = (PBYTE)want;
            assert_int_equal(PeerGraphUpdateRecord(h, r), S_OK);
            PeerGraphFreeData(r);
            upd[i - 2] = 1;
        }
        if (i % 7 == 6) tu_pump(1, 1);
        if (live[i / 2]) assert_true(data_of(h, &ids[i / 2], buf, sizeof buf)[0] != 0);
        assert_true(data_of(h, &ids[i], buf, sizeof buf)[0] != 0);
    }
    for (pass = 0; pass < 2; pass++) {
        assert_int_equal(record_count(h, &T1), n);
        for (i = 0; i < N; i++) {
            PPEER_RECORD r = NULL;
            HRESULT hr = PeerGraphGetRecord(h, &ids[i], &r);
            if (!live[i]) {
                if (hr == S_OK) { /* a deleted record stays as a tombstone record until it expires */
                    assert_true(r->dwFlags & PEER_RECORD_FLAG_DELETED);
                    PeerGraphFreeData(r);
                }
                continue;
            }
            assert_int_equal(hr, S_OK);
            snprintf(want, sizeof want, upd[i] ? "u%d" : "r%d", i);
            assert_int_equal(r->data.cbData, strlen(want));
            assert_memory_equal(r->data.pbData, want, strlen(want));
            PeerGraphFreeData(r);
        }
        assert_int_equal(PeerGraphClose(h), S_OK);
        if (!pass) assert_int_equal(PeerGraphOpen(L"grow", L"alice", db, NULL, 0, NULL, &h), S_OK);
    }
}

/* Hash sync: a node that was offline added records of its own; after the
 * time-based sync brings it the responder's new records, the hash sync
 * finds the ranges that differ and sends the responder what it lacks.  The
 * responder holds 0, 1, 10, 11 and 1000 new records. */
static void test_hash_sync(void **st)
{
    static const int counts[] = {0, 1, 10, 11, 1000};
    size_t t;
    (void)st;
    for (t = 0; t < sizeof counts / sizeof counts[0]; t++) {
        HGRAPH a, b;
        PEER_ADDRESS la;
        ULONGLONG cid;
        GUID mine[3], *theirs = (GUID *)malloc(sizeof(GUID) * (size_t)(counts[t] + 1));
        wchar_t db[32], gid[16];
        char buf[16];
        int i;
        swprintf(gid, 16, L"hash%d", (int)t);
        a = tu_create(gid, L"alice");
        la = tu_listen(a);
        b = tu_open(gid, L"bob");
        swprintf(db, 32, L"db%d", tu_db_counter);
        assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
        tu_pump(10, 1);
        assert_int_equal(PeerGraphClose(b), S_OK);
        tu_pump(2, 1000);
        assert_int_equal(PeerGraphOpen(gid, L"bob", db, NULL, 0, NULL, &b), S_OK);
        for (i = 0; i < 3; i++) mine[i] = add(b, &T2, "bob's");        /* offline additions */
        for (i = 0; i < counts[t]; i++) theirs[i] = add(a, &T1, "alice's");
        tu_pump(1, 1000);
        assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
        tu_pump(30, 1);
        for (i = 0; i < 3; i++) assert_string_equal(data_of(a, &mine[i], buf, sizeof buf), "bob's");
        for (i = 0; i < counts[t]; i++) assert_string_equal(data_of(b, &theirs[i], buf, sizeof buf), "alice's");
        assert_int_equal(record_count(a, NULL), (ULONG)counts[t] + 3);
        assert_int_equal(record_count(b, NULL), (ULONG)counts[t] + 3);
        free(theirs);
        assert_int_equal(PeerGraphClose(a), S_OK);
        assert_int_equal(PeerGraphClose(b), S_OK);
        tu_pump(2, 3000);
    }
}

/* Hash-based sync sends only the differences: with the responder ahead by
 * one record and holding one old record the initiator lacks (its presence,
 * never persisted by the initiator), the initiator must not send back the
 * records of its other ranges (a bug once did: it extended the last
 * advertised range instead of its own last range). */
static void test_hash_sync_only_differences(void **st)
{
    HGRAPH a = tu_create(L"hd", L"alice"), b;
    PEER_ADDRESS la = tu_listen(a); /* alice's presence: the oldest record */
    ULONGLONG cid, before;
    wchar_t db[32];
    int i;
    (void)st;
    tu_pump(1, 1000);
    for (i = 0; i < 3000; i++) add(a, &T1, "alice's");
    b = tu_open(L"hd", L"bob");
    swprintf(db, 32, L"db%d", tu_db_counter);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(30, 1);
    assert_int_equal(record_count(b, NULL), 3000);
    assert_int_equal(PeerGraphClose(b), S_OK);
    tu_pump(2, 1000);
    add(a, &T1, "one more");
    assert_int_equal(PeerGraphOpen(L"hd", L"bob", db, NULL, 0, NULL, &b), S_OK);
    tu_pump(1, 1000);
    before = fake_net_bytes_sent();
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(30, 1);
    assert_int_equal(record_count(b, NULL), 3001);
    /* SOLICIT_HASH is 4 B per record (12 KB here); sending the records back
     * would be well over 100 KB */
    assert_true(fake_net_bytes_sent() - before < 40000);
    assert_int_equal(PeerGraphClose(a), S_OK);
    assert_int_equal(PeerGraphClose(b), S_OK);
    tu_pump(2, 3000);
}

/* ---- an independent PEER_RECORD encoder (UTF-16LE strings, big-endian
 * integers, GUIDs in textual byte order) for hostile and exact-byte tests ---- */
typedef struct { unsigned char b[4096]; size_t n; } wbuf;
static void w8(wbuf *w, unsigned v) { w->b[w->n++] = (unsigned char)v; }
static void w32(wbuf *w, unsigned long v) { w8(w, (unsigned)(v >> 24) & 0xFF); w8(w, (unsigned)(v >> 16) & 0xFF); w8(w, (unsigned)(v >> 8) & 0xFF); w8(w, (unsigned)v & 0xFF); }
static void w64(wbuf *w, ULONGLONG v) { w32(w, (unsigned long)(v >> 32)); w32(w, (unsigned long)(v & 0xFFFFFFFFu)); }
/* UTF-8 (1 to 3 bytes a character) to UTF-16 code units, without a NUL. */
static size_t u8_to_u16(const char *s, unsigned short *out)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t n = 0;
    while (*p) {
        if (*p < 0x80) out[n++] = *p++;
        else if ((*p & 0xE0) == 0xC0) { out[n++] = (unsigned short)((p[0] & 0x1F) << 6 | (p[1] & 0x3F)); p += 2; }
        else { out[n++] = (unsigned short)((p[0] & 0x0F) << 12 | (p[1] & 0x3F) << 6 | (p[2] & 0x3F)); p += 3; }
    }
    return n;
}
static void wstr(wbuf *w, const char *s)
{
    unsigned short u[300];
    size_t i, n = u8_to_u16(s, u);
    if (!s[0]) { w32(w, 0); return; }
    w32(w, (unsigned long)(n + 1));
    for (i = 0; i < n; i++) { w8(w, u[i] & 0xFF); w8(w, u[i] >> 8); }
    w8(w, 0); w8(w, 0);
}
typedef struct {
    unsigned char type[16], id[16];
    unsigned long version;
    unsigned flags;
    const char *creator, *modby, *graph, *data, *attr;
    ULONGLONG created, expires, modified;
    unsigned proto;
    size_t ndata; /* bytes of data when not 0 (binary data); else strlen(data) */
    const unsigned char *sec; /* security data: nsec bytes */
    size_t nsec;
} xrec;
static void x_id_for(const char *creator, unsigned char id[16], unsigned char low)
{
    unsigned char u16[600], h[16];
    unsigned short u[300];
    size_t i, n = u8_to_u16(creator, u);
    for (i = 0; i < n; i++) { u16[2 * i] = (unsigned char)(u[i] & 0xFF); u16[2 * i + 1] = (unsigned char)(u[i] >> 8); }
    mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_MD5), u16, 2 * n, h);
    for (i = 0; i < 8; i++) id[i] = h[i] ^ h[8 + i];
    memset(id + 8, low, 8);
}
static void x_encode(const xrec *x, wbuf *w)
{
    w->n = 0;
    memcpy(w->b, x->type, 16); memcpy(w->b + 16, x->id, 16); w->n = 32;
    w32(w, x->version);
    w8(w, 0); w8(w, 0); w8(w, 0); w8(w, x->flags);
    wstr(w, x->creator);
    wstr(w, x->modby);
    w32(w, (unsigned long)x->nsec);
    if (x->nsec) { memcpy(w->b + w->n, x->sec, x->nsec); w->n += x->nsec; }
    w64(w, x->created); w64(w, x->expires); w64(w, x->modified);
    wstr(w, x->graph);
    w8(w, x->proto >> 8); w8(w, x->proto & 0xFF);
    {
        size_t nd = x->ndata ? x->ndata : strlen(x->data);
        w32(w, (unsigned long)nd);
        memcpy(w->b + w->n, x->data, nd); w->n += nd;
    }
    wstr(w, x->attr);
}
static void x_default(xrec *x, HGRAPH h, unsigned char low)
{
    static const unsigned char t1[16] = {0x11, 0x11, 0x11, 0x11, 0x22, 0x22, 0x33, 0x33, 1, 2, 3, 4, 5, 6, 7, 8};
    memset(x, 0, sizeof *x);
    memcpy(x->type, t1, 16);
    x->creator = "mallory";
    x_id_for(x->creator, x->id, low);
    x->version = 1;
    x->modby = "";
    x->graph = "hostile";
    x->data = "payload";
    x->attr = "";
    x->created = x->modified = pt_now(h) - 10000000ULL;
    x->expires = pt_now(h) + 3600 * 10000000ULL;
    x->proto = 0x0100;
}
/* Writes a FLOOD of the record from a raw neighbor (no service). */
static void x_write_flood(PEER_SOCKET s, const xrec *x)
{
    wbuf w;
    unsigned char hdr[14];
    size_t size;
    x_encode(x, &w);
    size = 12 + w.n;
    hdr[0] = (unsigned char)((size + 0) >> 8); hdr[1] = (unsigned char)size; /* frame */
    hdr[2] = 0; hdr[3] = 0; hdr[4] = (unsigned char)(size >> 8); hdr[5] = (unsigned char)size;
    hdr[6] = 0x10; hdr[7] = 0x0B; hdr[8] = 0; hdr[9] = 0; hdr[10] = 0; hdr[11] = 12; hdr[12] = 0; hdr[13] = 0;
    fake_net_raw_write(s, hdr, 14);
    fake_net_raw_write(s, w.b, w.n);
}
/* FLOOD the record from a raw neighbor; returns after one service. */
static void x_flood(PEER_SOCKET s, const xrec *x)
{
    x_write_flood(s, x);
    tu_pump(1, 1);
}
static GUID x_guid(const unsigned char *b)
{
    GUID g;
    g.Data1 = ((unsigned long)b[0] << 24) | ((unsigned long)b[1] << 16) | ((unsigned long)b[2] << 8) | b[3];
    g.Data2 = (unsigned short)((b[4] << 8) | b[5]);
    g.Data3 = (unsigned short)((b[6] << 8) | b[7]);
    memcpy(g.Data4, b + 8, 8);
    return g;
}
/* A raw neighbor connected to h (which listens): AUTH_INFO + CONNECT, with
 * node ID `node`. */
static PEER_SOCKET raw_neighbor_ext(PEER_ADDRESS *la, const char *graph, unsigned char node, unsigned char ext)
{
    PEER_SOCKET s = fake_net_raw_connect(&la->sin6);
    unsigned char m[64];
    size_t lg = strlen(graph) + 1, n = 16 + lg + 8, k;
    unsigned char fr[2];
    memset(m, 0, sizeof m);
    m[3] = (unsigned char)n; m[4] = 0x10; m[5] = 1; m[8] = 1; m[11] = 16; m[13] = (unsigned char)(16 + lg); m[15] = (unsigned char)n;
    m[9] = ext; /* p2pgraph capability bits (PROTOCOL.md section 4) */
    memcpy(m + 16, graph, lg);
    memcpy(m + 16 + lg, "mallory", 8);
    fr[0] = 0; fr[1] = (unsigned char)n;
    fake_net_raw_write(s, fr, 2);
    fake_net_raw_write(s, m, n);
    memset(m, 0, 24);
    m[3] = 24; m[4] = 0x10; m[5] = 2; m[11] = 24; m[13] = 24; m[23] = node;
    fr[1] = 24;
    fake_net_raw_write(s, fr, 2);
    fake_net_raw_write(s, m, 24);
    tu_pump(1, 1);
    k = fake_net_raw_pending(s);
    assert_true(k > 0); /* WELCOME */
    return s;
}
static PEER_SOCKET raw_neighbor_node(PEER_ADDRESS *la, const char *graph, unsigned char node)
{
    return raw_neighbor_ext(la, graph, node, 0);
}
static PEER_SOCKET raw_neighbor(PEER_ADDRESS *la, const char *graph) { return raw_neighbor_node(la, graph, 0x42); }

/* FLOOD messages waiting on a raw socket (the rest is read and dropped). */
static int floods_waiting(PEER_SOCKET s)
{
    static rxbuf r;
    static msg m;
    int n = 0;
    memset(&r, 0, sizeof r);
    while (recv_msg(s, &r, &m) > 0) n += m.b[5] == 0x0B;
    return n;
}

/* Relaying (PROTOCOL.md R12): a record that comes in on two links in one
 * read pass goes out on the third only, not back on either; one that comes
 * on one link goes to both others. */
static void test_relay_skips_senders(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET a = raw_neighbor_node(&la, "hostile", 0x42), b = raw_neighbor_node(&la, "hostile", 0x43),
                c = raw_neighbor_node(&la, "hostile", 0x44);
    xrec x;
    GUID id;
    char buf[32];
    (void)st;
    tu_pump(2, 1);
    floods_waiting(a); floods_waiting(b); floods_waiting(c);
    x_default(&x, h, 0x51);
    id = x_guid(x.id);
    x_write_flood(a, &x);
    x_write_flood(b, &x);
    tu_pump(1, 1); /* both read in one pass */
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "payload");
    assert_int_equal(floods_waiting(c), 1);
    assert_int_equal(floods_waiting(a), 0);
    assert_int_equal(floods_waiting(b), 0);
    x_default(&x, h, 0x52);
    x_flood(c, &x);
    assert_int_equal(floods_waiting(a), 1);
    assert_int_equal(floods_waiting(b), 1);
    assert_int_equal(floods_waiting(c), 0);
    fake_net_raw_close(a);
    fake_net_raw_close(b);
    fake_net_raw_close(c);
}

/* Contact records whose IDs fold to the same 64-bit key (the core's contact
 * set is keyed by ID high ^ low) and one whose halves are equal (folds to
 * 0, which no map key may be): each is stored and enumerable, replacing
 * and deleting them in any order leaves the link up and the graph working,
 * and nothing dangles (ASan, valgrind). */
static void contact_rec(xrec *x, HGRAPH h, const char *creator, const unsigned char low[8], unsigned long version,
                        unsigned flags)
{
    static unsigned char body[20]; /* signature 0, node 7, no addresses */
    int i;
    x_default(x, h, 0);
    memset(x->type, 0, 16);
    x->type[2] = 0x03; /* GUID {00000300-0000-0000-0000-000000000000} */
    x->creator = creator;
    x_id_for(creator, x->id, 0);
    for (i = 0; i < 8; i++) x->id[8 + i] = low[i];
    memset(body, 0, sizeof body);
    body[15] = 7;
    x->data = (const char *)body;
    x->ndata = (flags & 2) ? 0 : sizeof body;
    if (flags & 2) x->data = "";
    x->version = version;
    x->flags = flags;
    x->modified = x->created + version;
}
static void test_contact_ids_folding_alike(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET a = raw_neighbor(&la, "hostile");
    const char *who[4] = {"mallory", "trudy", "eve", "oscar"};
    unsigned char hi[4][16], low[4][8];
    xrec x;
    GUID id;
    char buf[32];
    int i, k;
    (void)st;
    tu_pump(2, 1);
    for (i = 0; i < 4; i++) x_id_for(who[i], hi[i], 0);
    for (k = 0; k < 8; k++) {
        low[0][k] = (unsigned char)(0x11 * (k + 1));
        low[1][k] = (unsigned char)(hi[0][k] ^ low[0][k] ^ hi[1][k]); /* trudy's ID folds as mallory's */
        low[2][k] = hi[2][k];                                         /* eve's folds to 0 */
        low[3][k] = (unsigned char)(hi[3][k] ^ (k == 7));            /* oscar's to 1, eve's stand-in key */
    }
    for (i = 0; i < 4; i++) {
        contact_rec(&x, h, who[i], low[i], 1, 1);
        x_flood(a, &x);
    }
    assert_int_equal(record_count(h, &TU_CONTACT_TYPE), 4);
    /* replace, delete and replace again, the colliding ones in both orders */
    contact_rec(&x, h, who[1], low[1], 2, 1); x_flood(a, &x);
    contact_rec(&x, h, who[0], low[0], 2, 2); x_flood(a, &x);
    contact_rec(&x, h, who[2], low[2], 2, 2); x_flood(a, &x);
    contact_rec(&x, h, who[3], low[3], 2, 1); x_flood(a, &x);
    contact_rec(&x, h, who[0], low[0], 3, 1); x_flood(a, &x);
    assert_int_equal(record_count(h, &TU_CONTACT_TYPE), 3); /* eve's is deleted */
    tu_pump(30, 1000); /* contact maintenance and timers walk the set meanwhile */
    /* the link is still up and the graph takes records from it */
    x_default(&x, h, 0x5a);
    id = x_guid(x.id);
    x_flood(a, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "payload");
    assert_int_equal(tu_neighbors(h), 1);
    assert_int_equal(PeerGraphClose(h), S_OK);
    tu_pump(2, 1);
    fake_net_raw_close(a);
}

/* Paced renewals (PROTOCOL.md R13): a new Signature record is relayed when
 * the pass ends; a renewal (same signature, a higher version) 50-150 ms
 * later, and not to a neighbor whose copy came meanwhile; a changed
 * signature at once again. */
/* A Signature record naming node `owner`, published by `modby` (its value
 * lives until the next call). */
static void sig_rec_by(xrec *x, HGRAPH h, unsigned long version, ULONGLONG owner, const char *modby)
{
    static const unsigned char sig_id[16] = {0x4c, 0x51, 0x5c, 0x94, 0x42, 0x52, 0x49, 0x4f,
                                             0x84, 0x40, 0x34, 0xcc, 0x79, 0x76, 0x9c, 0x81};
    static unsigned char value[8];
    int i;
    x_default(x, h, 0x60);
    memset(x->type, 0, 16);
    x->type[2] = 0x02; /* GUID {00000200-0000-0000-0000-000000000000} */
    memcpy(x->id, sig_id, 16);
    x->version = version;
    x->flags = 1; /* auto-refresh, as a publisher sets it */
    x->modby = modby;
    for (i = 0; i < 8; i++) value[i] = (unsigned char)(owner >> (56 - 8 * i));
    x->data = (const char *)value;
    x->ndata = 8;
    x->modified = x->created + version;
    x->expires = pt_now(h) + 300 * 10000000ULL;
}
static void sig_rec(xrec *x, HGRAPH h, unsigned long version, unsigned char owner)
{
    sig_rec_by(x, h, version, owner, "mallory");
}

static void test_renewal_relay_paced(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET a = raw_neighbor_node(&la, "hostile", 0x42), b = raw_neighbor_node(&la, "hostile", 0x43);
    xrec x;
    int waited;
    (void)st;
    tu_pump(2, 1);
    floods_waiting(a); floods_waiting(b);
    sig_rec(&x, h, 1, 0x05);
    x_flood(a, &x);
    assert_int_equal(floods_waiting(b), 1); /* a new signature: at once */
    /* a renewal: not within 40 ms, then once */
    sig_rec(&x, h, 2, 0x05);
    x_flood(a, &x);
    tu_pump(4, 10);
    assert_int_equal(floods_waiting(b), 0);
    for (waited = 40; waited < 400 && !floods_waiting(b); waited += 10) tu_pump(1, 10);
    assert_true(waited >= 50 && waited <= 160);
    tu_pump(30, 10);
    assert_int_equal(floods_waiting(b), 0);
    assert_int_equal(floods_waiting(a), 0);
    /* a renewal that b sends too while it is held: b is left out */
    sig_rec(&x, h, 3, 0x05);
    x_flood(a, &x);
    tu_pump(2, 10);
    x_flood(b, &x);
    tu_pump(30, 10);
    assert_int_equal(floods_waiting(b), 0);
    assert_int_equal(floods_waiting(a), 0);
    /* another owner (a lower node took over): at once */
    sig_rec(&x, h, 4, 0x03);
    x_flood(a, &x);
    assert_int_equal(floods_waiting(b), 1);
    fake_net_raw_close(a);
    fake_net_raw_close(b);
}

/* Fast profile, the signature owner: a Signature record of the same version
 * as its own that names a lower node loses the tie (Last Modified By), but
 * that node is taking over, so the owner stops renewing for
 * ulSignatureStaleMs (6 s): a renewal would meet the taker's next claim at
 * the same version and beat it again, and with slow floods the two kept
 * overwriting each other for good.  Then, no claim having come, it renews
 * again.  The same for an older version naming a lower node; one naming a
 * higher node changes nothing.  (PROTOCOL.md P13) */
static void test_signature_owner_yields_to_lower_claim(void **st)
{
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"sigdb", 0);
    PEER_ADDRESS la;
    PEER_SOCKET a;
    ULONGLONG own, held;
    ULONG v0, v;
    xrec x;
    (void)st;
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    la = tu_listen(h);
    a = raw_neighbor_node(&la, "hostile", 0x42);
    own = local_node(h);
    tu_pump(30, 100); /* it claims the signature, then renews it every 2 s */
    v0 = tu_signature(h, &held);
    assert_true(v0 >= 2);
    assert_true(held == own);
    sig_rec_by(&x, h, v0, own - 1, "aaa"); /* "aaa" is below "alice": it loses the tie */
    x_write_flood(a, &x);
    tu_pump(1, 1);
    assert_int_equal(tu_signature(h, &held), v0); /* ours kept */
    assert_true(held == own);
    tu_pump(50, 100); /* 5 s: no renewal */
    assert_int_equal(tu_signature(h, &held), v0);
    tu_pump(30, 100); /* past 6 s, no claim came: renewing again */
    v = tu_signature(h, &held);
    assert_true(v > v0);
    assert_true(held == own);
    /* an older version naming a lower node: that node is behind in
     * versions (its copy was old when it claimed), not gone; the owner
     * yields too, so that the taker's next claim wins */
    x.version = v - 1;
    x.modified += 10000000ULL;
    x_write_flood(a, &x);
    tu_pump(1, 1);
    assert_int_equal(tu_signature(h, &held), v); /* ours kept */
    tu_pump(50, 100);
    assert_int_equal(tu_signature(h, &held), v); /* 5 s: no renewal */
    tu_pump(30, 100);
    v = tu_signature(h, &held);
    assert_true(held == own);
    /* a losing record naming a higher node is no taker: renewals go on */
    sig_rec_by(&x, h, v, own + 1, "aaa");
    x_write_flood(a, &x);
    tu_pump(30, 100);
    assert_true(tu_signature(h, &held) > v);
    assert_true(held == own);
    fake_net_raw_close(a);
}

/* Fast profile: a claim by a higher node that replaced the signature of a
 * lower one seen within ulSignatureStaleMs (6 s) is left to that lower
 * node to answer; a node in between does not claim in 0.1 s as it does
 * otherwise, so that one node that missed the renewals does not set off a
 * claim at every node below it.  Once the lower node's news is 6 s old,
 * it claims.  (PROTOCOL.md P15)  Meanwhile its contact keeps naming the
 * lower node (P11): a holder that followed the claim made the count of
 * contacts naming the real signature dip below Cmin. */
static void test_signature_claim_waits_for_lower_owner(void **st)
{
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"sigwait", 0);
    PEER_ADDRESS la;
    PEER_SOCKET a;
    ULONGLONG own, held, named, who[2];
    ULONG v0;
    xrec x;
    int k;
    (void)st;
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    la = tu_listen(h);
    a = raw_neighbor_node(&la, "hostile", 0x42);
    own = local_node(h);
    tu_pump(30, 100);
    v0 = tu_signature(h, &held);
    assert_true(held == own);
    assert_true(tu_contact_of(h, L"alice", &named) > 0); /* a contact holder (two nodes, Cmin > 2) */
    assert_true(named == own);
    who[0] = 1;                      /* lower than any node */
    who[1] = 0xFFFFFFFFFFFFFFF0ULL; /* higher than ours */
    for (k = 0; k < 2; k++) {
        sig_rec_by(&x, h, v0 + 1 + (ULONG)k, who[k], k ? "zed" : "bob");
        x_write_flood(a, &x);
        tu_pump(1, 1);
        assert_int_equal(tu_signature(h, &held), v0 + 1 + (ULONG)k);
        assert_true(held == who[k]);
        assert_true(tu_contact_of(h, L"alice", &named) > 0);
        assert_true(named == who[0]); /* the contact follows bob, not zed's claim (P11) */
    }
    tu_pump(40, 100); /* 4 s: the higher claim stands */
    assert_int_equal(tu_signature(h, &held), v0 + 2);
    assert_true(held == who[1]);
    assert_true(tu_contact_of(h, L"alice", &named) > 0);
    assert_true(named == who[0]);
    tu_pump(30, 100); /* the lower node's news is 6 s old: claim */
    assert_true(tu_signature(h, &held) > v0 + 2);
    assert_true(held == own);
    assert_true(tu_contact_of(h, L"alice", &named) > 0);
    assert_true(named == own);
    fake_net_raw_close(a);
}

/* Reads what h sent on raw socket s; the keepalive frames go to r->ka_log. */
static void drain_frames(PEER_SOCKET s, rxbuf *r)
{
    static msg m;
    while (recv_msg_all(s, r, &m) > 0) {}
}
static void raw_keepalive(PEER_SOCKET s, unsigned char k0, unsigned char k1)
{
    unsigned char f[2];
    f[0] = k0;
    f[1] = k1;
    fake_net_raw_write(s, f, 2);
}

/* Fast profile, the signature owner (PROTOCOL.md P17): while every neighbor
 * link agreed to the fast profile it renews by beat, not by a new version:
 * its keepalive frames carry its tag and a counter one up every 2 s.  Once a
 * neighbor that cannot carry beats (a plain peer) joins, it renews by a new
 * version again. */
static void test_signature_renewed_by_beat(void **st)
{
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"beatdb", 0);
    PEER_ADDRESS la;
    PEER_SOCKET a, p;
    static rxbuf r;
    ULONGLONG own, held;
    ULONG v0;
    unsigned seen = 0, i;
    int k, advances = 0, have = 0;
    unsigned char tag, last = 0;
    (void)st;
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    la = tu_listen(h);
    a = raw_neighbor_ext(&la, "hostile", 0x42, 0x20);
    own = local_node(h);
    for (k = 0; k < 30; k++) {
        if (!(k % 10)) raw_keepalive(a, 0xFF, 0);
        tu_pump(1, 100);
    }
    v0 = tu_signature(h, &held);
    assert_true(held == own);
    tag = (unsigned char)(0x81 + own % 126);
    memset(&r, 0, sizeof r);
    drain_frames(a, &r);
    seen = r.ka;
    for (k = 0; k < 100; k++) { /* 10 s */
        if (!(k % 10)) raw_keepalive(a, 0xFF, 0);
        tu_pump(1, 100);
        drain_frames(a, &r);
        for (i = seen; i < r.ka; i++) {
            const unsigned char *f = r.ka_log[i & 255];
            assert_int_equal(f[0], tag);
            if (have && f[1] != last) {
                assert_int_equal(f[1], (unsigned char)(last + 1));
                advances++;
            }
            last = f[1];
            have = 1;
        }
        seen = r.ka;
    }
    assert_true(advances >= 4);
    assert_int_equal(tu_signature(h, &held), v0); /* no new version */
    assert_true(held == own);
    p = raw_neighbor_node(&la, "hostile", 0x43); /* a plain peer */
    for (k = 0; k < 30; k++) {
        if (!(k % 10)) raw_keepalive(a, 0xFF, 0);
        tu_pump(1, 100);
    }
    assert_true(tu_signature(h, &held) > v0);
    assert_true(held == own);
    fake_net_raw_close(a);
    fake_net_raw_close(p);
}

/* RENEW from a raw peer: one entry renewing record x's version `base`. */
static void x_renew(PEER_SOCKET s, const xrec *x, unsigned long base, unsigned long ver, unsigned long flags, ULONGLONG mod,
                    ULONGLONG exp)
{
    static msg m;
    int i;
    hdr(&m, 0x82);
    for (i = 0; i < 16; i++) p8(&m, x->id[i]);
    p32(&m, base);
    p32(&m, ver);
    p32(&m, flags);
    p64(&m, mod);
    p64(&m, exp);
    fin(&m);
    send_msg(s, &m);
}

/* Reads what h sent on s until a message of `type` about record `id`
 * (its first entry, or a FLOOD's record); 1 if one came. */
static int got_about(PEER_SOCKET s, rxbuf *r, msg *m, int type, const unsigned char *id)
{
    while (recv_msg(s, r, m) > 0) {
        size_t at = type == 0x0B ? 12u + 16u : 8u;
        if (m->b[5] == type && m->n >= at + 16 && !memcmp(m->b + at, id, 16)) return 1;
    }
    return 0;
}


/* Fast profile, renewals (PROTOCOL.md P19).  A RENEW entry from a fast
 * neighbor turns the version we hold into the next one (version, last
 * modified and expiry; the data stays); it goes on as a RENEW entry held
 * for the keepalive to the other fast neighbor and as a FLOOD of the whole
 * record to the plain one.  Our own record, updated with nothing but a
 * later expiry, goes out the same way, its first update (which names the
 * modifier) too, with the entry's flag.  A RENEW of a version we do not
 * hold is answered with a WANT (so is one of the version we hold with other
 * times), one of an older version with a FLOOD of ours, and a WANT with a
 * FLOOD of our copy; an entry with the flag gives the record its creator as
 * modifier.  A renewal held for a neighbor that sends us that version
 * itself is dropped, and two held renewals of a record go as one entry. */
static void test_renew_relayed(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la;
    PEER_SOCKET a, b, p;
    static rxbuf ra, rb, rp;
    static msg m;
    xrec x;
    GUID id, mine;
    PPEER_RECORD got = NULL;
    ULONGLONG mod, exp;
    unsigned char mineb[16];
    char buf[32];
    int k, n;
    (void)st;
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    la = tu_listen(h);
    a = raw_neighbor_ext(&la, "hostile", 0x42, 0x20);
    b = raw_neighbor_ext(&la, "hostile", 0x43, 0x20);
    p = raw_neighbor_node(&la, "hostile", 0x44);
    x_default(&x, h, 0x61);
    id = x_guid(x.id);
    x_flood(a, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "payload");
    memset(&ra, 0, sizeof ra); memset(&rb, 0, sizeof rb); memset(&rp, 0, sizeof rp);
    assert_true(got_about(b, &rb, &m, 0x0B, x.id)); /* version 1: a FLOOD to both */
    assert_true(got_about(p, &rp, &m, 0x0B, x.id));
    mod = pt_now(h);
    exp = x.expires + 3600 * 10000000ULL;
    x_renew(a, &x, 1, 2, 0, mod, exp);
    tu_pump(1, 1);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    assert_int_equal(got->dwVersion, 2);
    assert_true(ft64(got->ftLastModified) == mod);
    assert_true(ft64(got->ftExpiration) == exp);
    assert_true(ft64(got->ftCreation) == x.created);
    assert_int_equal(got->data.cbData, 7);
    assert_memory_equal(got->data.pbData, "payload", 7);
    PeerGraphFreeData(got);
    assert_true(got_about(p, &rp, &m, 0x0B, x.id)); /* the plain neighbor: the whole record, at once */
    assert_int_equal(g16(m.b + 12 + 32) << 16 | g16(m.b + 12 + 34), 2);
    assert_false(got_about(b, &rb, &m, 0x0B, x.id)); /* the fast one: no FLOOD */
    assert_false(got_about(b, &rb, &m, 0x82, x.id)); /* and the entry waits for the keepalive */
    for (k = 0; k < 12 && !got_about(b, &rb, &m, 0x82, x.id); k++) {
        raw_keepalive(a, 0xFF, 0);
        raw_keepalive(b, 0xFF, 0);
        tu_pump(1, 100);
    }
    assert_true(k < 12);
    assert_int_equal(m.n, 8 + 44);
    assert_int_equal(g16(m.b + 24) << 16 | g16(m.b + 26), 1);
    assert_int_equal(g16(m.b + 28) << 16 | g16(m.b + 30), 2);
    assert_int_equal(g16(m.b + 32) << 16 | g16(m.b + 34), 0); /* x names no modifier */
    assert_true(g64(m.b + 36) == mod);
    assert_true(g64(m.b + 44) == exp);
    assert_false(got_about(a, &ra, &m, 0x82, x.id)); /* not back where it came from */

    /* our own record: added, updated (modifier named), then renewed */
    mine = add(h, &T1, "mine");
    tu_pump(1, 1);
    mineb[0] = (unsigned char)(mine.Data1 >> 24); mineb[1] = (unsigned char)(mine.Data1 >> 16);
    mineb[2] = (unsigned char)(mine.Data1 >> 8); mineb[3] = (unsigned char)mine.Data1;
    mineb[4] = (unsigned char)(mine.Data2 >> 8); mineb[5] = (unsigned char)mine.Data2;
    mineb[6] = (unsigned char)(mine.Data3 >> 8); mineb[7] = (unsigned char)mine.Data3;
    memcpy(mineb + 8, mine.Data4, 8);
    assert_true(got_about(a, &ra, &m, 0x0B, mineb)); /* version 1 */
    assert_true(got_about(b, &rb, &m, 0x0B, mineb));
    assert_true(got_about(p, &rp, &m, 0x0B, mineb));
    assert_int_equal(PeerGraphGetRecord(h, &mine, &got), S_OK);
    fake_net_advance(10);
    assert_int_equal(PeerGraphUpdateRecord(h, got), S_OK); /* nothing new but the modifier's name */
    tu_pump(1, 1);
    assert_true(got_about(p, &rp, &m, 0x0B, mineb));
    assert_int_equal(g16(m.b + 12 + 34), 2);
    for (k = 0, n = 0; k < 12 && n < 2; k++) {
        n += got_about(b, &rb, &m, 0x82, mineb);
        if (got_about(a, &ra, &m, 0x82, mineb)) {
            n++;
            assert_int_equal(g16(m.b + 26), 1);
            assert_int_equal(g16(m.b + 30), 2);
            assert_int_equal(g16(m.b + 34), 1); /* Last Modified By: the creator */
        }
        raw_keepalive(a, 0xFF, 0);
        raw_keepalive(b, 0xFF, 0);
        tu_pump(1, 100);
    }
    assert_int_equal(n, 2);
    assert_false(got_about(a, &ra, &m, 0x0B, mineb));
    assert_false(got_about(b, &rb, &m, 0x0B, mineb));
    got->ftExpiration.dwHighDateTime += 1; /* later: about 430 s */
    fake_net_advance(10);
    assert_int_equal(PeerGraphUpdateRecord(h, got), S_OK);
    PeerGraphFreeData(got);
    tu_pump(1, 1);
    assert_true(got_about(p, &rp, &m, 0x0B, mineb));
    assert_int_equal(g16(m.b + 12 + 34), 3);
    for (k = 0; k < 12 && !got_about(a, &ra, &m, 0x82, mineb); k++) {
        raw_keepalive(a, 0xFF, 0);
        raw_keepalive(b, 0xFF, 0);
        tu_pump(1, 100);
    }
    assert_true(k < 12);
    assert_int_equal(g16(m.b + 26), 2);
    assert_int_equal(g16(m.b + 30), 3);
    assert_int_equal(g16(m.b + 34), 1);
    assert_false(got_about(b, &rb, &m, 0x0B, mineb));

    /* a version we do not hold: WANT; a WANT: our copy */
    x_renew(a, &x, 5, 6, 0, mod, exp);
    tu_pump(1, 1);
    assert_true(got_about(a, &ra, &m, 0x83, x.id));
    assert_int_equal(m.n, 8 + 16);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    assert_int_equal(got->dwVersion, 2);
    PeerGraphFreeData(got);
    hdr(&m, 0x83);
    for (k = 0; k < 16; k++) p8(&m, x.id[k]);
    fin(&m);
    send_msg(a, &m);
    tu_pump(1, 1);
    assert_true(got_about(a, &ra, &m, 0x0B, x.id));
    assert_int_equal(g16(m.b + 12 + 34), 2);
    /* the flag: Last Modified By becomes the creator */
    x_renew(a, &x, 2, 3, 1, mod + 10, exp + 10);
    tu_pump(1, 1);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    assert_int_equal(got->dwVersion, 3);
    assert_non_null(got->pwzModifiedById);
    assert_true(wcscmp(got->pwzModifiedById, L"mallory") == 0);
    assert_memory_equal(got->data.pbData, "payload", 7);
    PeerGraphFreeData(got);
    assert_true(got_about(p, &rp, &m, 0x0B, x.id)); /* rebuilt byte for byte: "mallory" in it */
    assert_int_equal(g16(m.b + 12 + 34), 3);
    /* the same again: a duplicate; version 3 with other times: WANT; an older one: our copy */
    x_renew(a, &x, 2, 3, 1, mod + 10, exp + 10);
    tu_pump(1, 1);
    assert_false(got_about(a, &ra, &m, 0x83, x.id));
    assert_false(got_about(a, &ra, &m, 0x0B, x.id));
    x_renew(a, &x, 2, 3, 1, mod + 20, exp + 20);
    tu_pump(1, 1);
    assert_true(got_about(a, &ra, &m, 0x83, x.id));
    x_renew(a, &x, 1, 2, 0, mod, exp);
    tu_pump(1, 1);
    assert_true(got_about(a, &ra, &m, 0x0B, x.id));
    assert_int_equal(g16(m.b + 12 + 34), 3);
    for (k = 0; k < 12; k++) { /* what is held goes */
        raw_keepalive(a, 0xFF, 0);
        raw_keepalive(b, 0xFF, 0);
        tu_pump(1, 100);
    }
    while (got_about(b, &rb, &m, 0x82, x.id)) {}
    /* a renewal held for b that b then sends us itself is dropped; two held
     * renewals of one record go as one entry (the first's base, the last's version) */
    x_renew(a, &x, 3, 4, 1, mod + 30, exp + 30);
    tu_pump(1, 1);
    x_renew(b, &x, 3, 4, 1, mod + 30, exp + 30);
    tu_pump(1, 1);
    x_renew(a, &x, 4, 5, 1, mod + 40, exp + 40);
    tu_pump(1, 1);
    x_renew(a, &x, 5, 6, 1, mod + 50, exp + 50);
    tu_pump(1, 1);
    for (k = 0; k < 12 && !got_about(b, &rb, &m, 0x82, x.id); k++) {
        raw_keepalive(a, 0xFF, 0);
        raw_keepalive(b, 0xFF, 0);
        tu_pump(1, 100);
    }
    assert_true(k < 12);
    for (k = 0, n = 0; 8 + 44 * (size_t)k < m.n; k++) { /* (the Signature record's renewals may share it) */
        const unsigned char *e = m.b + 8 + 44 * k;
        if (memcmp(e, x.id, 16)) continue;
        n++; /* one entry about x: 4 -> 6 (the 3 -> 4 one was dropped) */
        assert_int_equal(g16(e + 18), 4);
        assert_int_equal(g16(e + 22), 6);
        assert_true(g64(e + 28) == mod + 50);
    }
    assert_int_equal(n, 1);
    assert_false(got_about(b, &rb, &m, 0x83, x.id)); /* its 3 -> 4 was a duplicate here */
    assert_int_equal(tu_neighbors(h), 3);
    fake_net_raw_close(a);
    fake_net_raw_close(b);
    fake_net_raw_close(p);
}

/* Fast profile, a node that holds another's signature (PROTOCOL.md P17): a
 * newer beat of it counts as a renewal (no claim however long the record
 * stays the same) and goes on at once to its other fast neighbors; a
 * repeated beat, an older one and another owner's go nowhere (the last
 * makes it send its Signature record to that neighbor).  When the
 * beats stop, the signature is stale after ulSignatureStaleMs and it
 * claims. */
static void test_signature_beat_relayed(void **st)
{
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"beatrel", 0);
    PEER_ADDRESS la;
    PEER_SOCKET a, b;
    static rxbuf r;
    ULONGLONG own, held;
    xrec x;
    unsigned seen;
    int k;
    unsigned char n = 250; /* (the counter wraps) */
    (void)st;
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    la = tu_listen(h);
    a = raw_neighbor_ext(&la, "hostile", 0x42, 0x20);
    b = raw_neighbor_ext(&la, "hostile", 0x43, 0x20);
    own = local_node(h);
    sig_rec_by(&x, h, 5, 1, "bob"); /* node 1 holds the signature */
    x_flood(a, &x);
    assert_int_equal(tu_signature(h, &held), 5);
    assert_true(held == 1);
    memset(&r, 0, sizeof r);
    for (k = 0; k < 8; k++, n++) { /* a beat every 1.5 s: 12 s, twice the stale time */
        int j;
        drain_frames(b, &r);
        seen = r.ka;
        raw_keepalive(a, 0x82, n); /* tag of node 1: 0x81 + 1 % 126 */
        raw_keepalive(b, 0xFF, 0);
        tu_pump(1, 1);
        drain_frames(b, &r);
        assert_true(r.ka > seen); /* passed on at once */
        assert_int_equal(r.ka_last[0], 0x82);
        assert_int_equal(r.ka_last[1], n);
        if (k == 3) { /* a repeat, an older beat, another owner's: not passed on (b's keepalive is not due) */
            tu_pump(3, 100);
            drain_frames(b, &r);
            seen = r.ka;
            floods_waiting(a); /* (what went to a so far) */
            raw_keepalive(a, 0x82, n);
            tu_pump(1, 1);
            raw_keepalive(a, 0x82, (unsigned char)(n - 1));
            tu_pump(1, 1);
            raw_keepalive(a, 0x83, (unsigned char)(n + 5));
            tu_pump(1, 1);
            drain_frames(b, &r);
            assert_int_equal(r.ka, seen);
            /* ... but a neighbor beating another signature gets ours (once
             * per renewal period): the newer version wins, as after a split */
            assert_int_equal(floods_waiting(a), 1);
            raw_keepalive(a, 0x83, (unsigned char)(n + 6));
            tu_pump(1, 1);
            assert_int_equal(floods_waiting(a), 0);
            tu_pump(11, 100);
        } else
            for (j = 0; j < 14; j++) tu_pump(1, 100);
    }
    assert_int_equal(tu_signature(h, &held), 5); /* renewed by the beats alone */
    assert_true(held == 1);
    for (k = 0; k < 80; k++) { /* no more beats: stale after 6 s, then it claims */
        if (!(k % 10)) { raw_keepalive(a, 0xFF, 0); raw_keepalive(b, 0xFF, 0); }
        tu_pump(1, 100);
    }
    assert_true(tu_signature(h, &held) > 5);
    assert_true(held == own);
    fake_net_raw_close(a);
    fake_net_raw_close(b);
}

/* A library initiator joining through a raw responder with capabilities ext. */
static PEER_SOCKET raw_responder(HGRAPH h, unsigned ext, PEER_SOCKET *listener, rxbuf *r)
{
    SOCKADDR_IN6 addr;
    PEER_SOCKET s;
    PEER_ADDRESS pa;
    ULONGLONG id;
    static msg m;
    *listener = raw_node(&addr);
    pa = peer_addr(addr);
    assert_int_equal(PeerGraphConnect(h, NULL, &pa, &id), S_OK);
    tu_pump(2, 1);
    s = fake_net_raw_accept(*listener);
    memset(r, 0, sizeof *r);
    assert_true(recv_msg(s, r, &m) > 0); /* AUTH_INFO */
    assert_true(recv_msg(s, r, &m) > 0); /* CONNECT */
    m_welcome(&m, 0x4343, 0, NULL, 0, "mallory", ext);
    send_msg(s, &m);
    tu_pump(1, 1);
    return s;
}

/* The raw responder s ends h's sync (three SYNC_ENDs, a service after
 * each): h is synchronized. */
static void raw_sync_done(HGRAPH h, PEER_SOCKET s)
{
    static msg m;
    DWORD status;
    int i;
    for (i = 0; i < 3; i++) {
        m_sync_end(&m);
        send_msg(s, &m);
        tu_pump(1, 1);
    }
    assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
    assert_true(status & PEER_GRAPH_STATUS_SYNCHRONIZED);
}

/* How many of the records x[0..n) the database file at path holds (by ID). */
static int ids_in_file(const char *path, const xrec *x, int n)
{
    unsigned char *file = (unsigned char *)malloc(1 << 20);
    size_t len, k;
    FILE *f;
    int i, count = 0;
    assert_non_null(file);
    f = fopen(path, "rb");
    assert_non_null(f);
    len = fread(file, 1, 1 << 20, f);
    fclose(f);
    for (i = 0; i < n; i++) {
        int found = 0;
        for (k = 0; k + 16 <= len && !found; k++) found = !memcmp(file + k, x[i].id, 16);
        count += found;
    }
    free(file);
    return count;
}

/* Records from the network are written to the database file together when
 * the call that read them ends (one write, not one per record), and are
 * there when PeerGraphService returns. */
static void test_received_records_on_disk_when_call_returns(void **st)
{
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"flushdb", 0);
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET a = raw_neighbor_node(&la, "hostile", 0x42);
    char path[512];
    xrec x[10];
    int i;
    (void)st;
    tu_pump(2, 1);
    for (i = 0; i < 10; i++) {
        x_default(&x[i], h, (unsigned char)(0x70 + i));
        x_write_flood(a, &x[i]);
    }
    tu_pump(1, 1); /* one Service reads all ten */
    tu_db_file_path("hostile", "alice", "flushdb", path, sizeof path);
    assert_int_equal(ids_in_file(path, x, 10), 10);
    fake_net_raw_close(a);
}

/* A joiner's first Sync All: the records wait in memory until its file says
 * synchronized (within 1 s), then go in one write; killed before, it would
 * open unsynchronized and sync again.  From then on, received records are
 * with the OS when the call returns again. */
static void test_joiner_records_wait_for_sync_flag(void **st)
{
    HGRAPH h = NULL, h2 = NULL;
    PEER_SOCKET l, s;
    static rxbuf r;
    xrec x[11];
    char path[512];
    int i;
    (void)st;
    PeerGraphDelete(L"hostile", L"alice", L"joindb");
    assert_int_equal(PeerGraphOpen(L"hostile", L"alice", L"joindb", NULL, 0, NULL, &h), PEER_S_GRAPH_DATA_CREATED);
    tu_db_file_path("hostile", "alice", "joindb", path, sizeof path);
    s = raw_responder(h, 0x03, &l, &r);
    for (i = 0; i < 10; i++) {
        x_default(&x[i], h, (unsigned char)(0x30 + i));
        x_flood(s, &x[i]);
    }
    raw_sync_done(h, s);
    assert_int_equal(ids_in_file(path, x, 10), 0);
    tu_pump(12, 100); /* the synchronized flag is written within 1 s, the records before it */
    assert_int_equal(ids_in_file(path, x, 10), 10);
    x_default(&x[10], h, 0x3a);
    x_flood(s, &x[10]);
    tu_pump(1, 1);
    assert_int_equal(ids_in_file(path, x + 10, 1), 1);
    /* and the file now opens synchronized, with all of them */
    assert_int_equal(PeerGraphClose(h), S_OK);
    assert_int_equal(PeerGraphOpen(L"hostile", L"alice", L"joindb", NULL, 0, NULL, &h2), S_OK);
    for (i = 0; i < 11; i++) {
        PPEER_RECORD rec = NULL;
        GUID g = x_guid(x[i].id);
        assert_int_equal(PeerGraphGetRecord(h2, &g, &rec), S_OK);
        PeerGraphFreeData(rec);
    }
    assert_int_equal(PeerGraphClose(h2), S_OK);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
}

/* ACKs during a sync: a plain responder gets one per FLOOD (MS-PPGRH); a
 * p2pgraph responder that offered capability 0x08 gets none until the
 * sync is over (PROTOCOL.md section 4); after it, FLOODs are ACKed again. */
static void sync_ack_case(unsigned ext, int acksDuringSync)
{
    HGRAPH h = tu_open(L"hostile", L"alice");
    PEER_SOCKET l, s;
    static rxbuf r;
    static msg m;
    xrec x;
    int acks = 0, i;
    s = raw_responder(h, ext, &l, &r);
    x_default(&x, h, 1);
    x_flood(s, &x); /* an answer to the first solicitation */
    tu_pump(25, 10); /* an ACK may be held up to 200 ms (PROTOCOL.md R10) */
    while (recv_msg(s, &r, &m) > 0) if (m.b[5] == 0x0E) acks++;
    assert_int_equal(acks, acksDuringSync);
    raw_sync_done(h, s);
    acks = 0;
    while (recv_msg(s, &r, &m) > 0) if (m.b[5] == 0x0E) acks++;
    /* After the sync: an ACK is held while nothing else goes to that
     * neighbor, and the entries of FLOODs read in separate passes within
     * ACK_DELAY_MS (200 ms) go out together, in one ACK message. */
    for (i = 0; i < 3; i++) {
        x_default(&x, h, (unsigned char)(2 + i));
        x_flood(s, &x);
        tu_pump(5, 10);
        while (recv_msg(s, &r, &m) > 0) assert_int_not_equal(m.b[5], 0x0E); /* held */
    }
    tu_pump(20, 10); /* 60 + 200 ms after the first: due */
    while (recv_msg(s, &r, &m) > 0)
        if (m.b[5] == 0x0E) {
            acks++;
            assert_int_equal((m.b[8] << 8) | m.b[9], 3); /* three entries */
        }
    assert_int_equal(acks, 1);
    /* A FLOOD that goes back to the sender (ours is newer) takes the held
     * ACK with it, at once. */
    x_default(&x, h, 2);
    x.version = 2;
    x_flood(s, &x);
    tu_pump(25, 10);
    while (recv_msg(s, &r, &m) > 0) {}
    x.version = 1; /* older than ours now */
    x_flood(s, &x);
    acks = 0;
    {
        int floods = 0;
        while (recv_msg(s, &r, &m) > 0) {
            if (m.b[5] == 0x0E) acks++;
            if (m.b[5] == 0x0B) floods++;
        }
        assert_int_equal(floods, 1);
        assert_int_equal(acks, 1);
    }
    fake_net_raw_close(s);
    fake_net_raw_close(l);
    assert_int_equal(PeerGraphClose(h), S_OK);
}
static void test_sync_ack_policy(void **st)
{
    (void)st;
    sync_ack_case(0, 1);
    sync_ack_case(0x08, 0);
}

/* Fast profile (PROTOCOL.md R10): ACK entries wait for the keepalive and go
 * in its place.  After three FLOODs nothing goes back until the link has
 * been idle PEER_FAST_KEEPALIVE_MS; then one ACK with the three entries goes
 * instead of a Ping, and with nothing held the next keepalive is a Ping. */
static void test_fast_ack_rides_keepalive(void **st)
{
    HGRAPH h = tu_open(L"hostile", L"alice");
    PEER_SOCKET l, s;
    static rxbuf r;
    static msg m;
    xrec x;
    int i, acks = 0, pings = 0;
    ULONGLONG last, ack_at = 0;
    (void)st;
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    s = raw_responder(h, 0, &l, &r); /* a plain peer: we keep alive, it need not */
    raw_sync_done(h, s);
    while (recv_msg(s, &r, &m) > 0) {}
    last = fake_net_now(); /* our last output to it */
    for (i = 0; i < 3; i++) {
        x_default(&x, h, (unsigned char)(2 + i));
        x_flood(s, &x);
    }
    /* 20 ms steps for two keepalive periods: the first message back is the
     * ACK, one keepalive (on the 32 ms grid) after our last output */
    while (fake_net_now() < last + 2 * PEER_FAST_KEEPALIVE_MS + 100) {
        tu_pump(1, 20);
        while (recv_msg(s, &r, &m) > 0) {
            if (m.b[5] == 0x0E) {
                assert_int_equal(acks, 0);
                assert_int_equal(pings, 0); /* the ACK went instead of a Ping */
                assert_int_equal((m.b[8] << 8) | m.b[9], 3);
                ack_at = fake_net_now();
                acks++;
            } else if (m.b[5] == 0x0D) {
                assert_int_equal(acks, 1); /* a Ping only after the ACK, */
                assert_true(fake_net_now() >= ack_at + PEER_FAST_KEEPALIVE_MS); /* a keepalive later */
                pings++;
            } else
                fail_msg("unexpected message type %u", m.b[5]);
        }
    }
    assert_int_equal(acks, 1);
    assert_true(ack_at >= last + PEER_FAST_KEEPALIVE_MS);
    assert_true(ack_at <= last + PEER_FAST_KEEPALIVE_MS + 32 + 20);
    assert_int_equal(pings, 1);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
    assert_int_equal(PeerGraphClose(h), S_OK);
}

/* ---- compact records (capability 0x10), encoded here independently ---- */
static void wv(wbuf *w, ULONGLONG v)
{
    do { unsigned b = (unsigned)(v & 0x7F); v >>= 7; w8(w, v ? b | 0x80 : b); } while (v);
}
static void wzz(wbuf *w, ULONGLONG a, ULONGLONG b)
{
    ULONGLONG d = a - b;
    wv(w, (d << 1) ^ ((d >> 63) ? ~(ULONGLONG)0 : 0));
}
static void wvstr(wbuf *w, const char *s)
{
    size_t i, n = strlen(s);
    if (!n) { wv(w, 0); return; }
    wv(w, n + 1);
    for (i = 0; i <= n; i++) { w8(w, (unsigned char)s[i]); w8(w, 0); }
}
/* Appends x, sharing with prev (same message) whatever is equal. */
static void x_crec(wbuf *w, const xrec *x, const xrec *prev, int gidIsGraph)
{
    unsigned f = 0;
    if (prev && !memcmp(x->type, prev->type, 16)) f |= 0x01;
    if (prev && !strcmp(x->creator, prev->creator)) f |= 0x02;
    if (prev && !strcmp(x->modby, prev->modby)) f |= 0x04;
    if (prev) f |= 0x08; /* both without security data */
    if (gidIsGraph) f |= 0x10;
    if (prev && x->proto == prev->proto) f |= 0x20;
    if (prev && !strcmp(x->attr, prev->attr)) f |= 0x40;
    w8(w, f);
    if (!(f & 0x01)) { memcpy(w->b + w->n, x->type, 16); w->n += 16; }
    memcpy(w->b + w->n, x->id, 16);
    w->n += 16;
    wv(w, x->version);
    w8(w, x->flags);
    if (!(f & 0x02)) wvstr(w, x->creator);
    if (!(f & 0x04)) wvstr(w, x->modby);
    if (!(f & 0x08)) wv(w, 0);
    wzz(w, x->created, prev ? prev->created : 0);
    wzz(w, x->expires, x->created);
    wzz(w, x->modified, x->created);
    if (!(f & 0x10)) wvstr(w, x->graph);
    if (!(f & 0x20)) { w8(w, x->proto >> 8); w8(w, x->proto & 0xFF); }
    wv(w, strlen(x->data));
    memcpy(w->b + w->n, x->data, strlen(x->data));
    w->n += strlen(x->data);
    if (!(f & 0x40)) wvstr(w, x->attr);
}
/* Sends a BATCH message holding body (count records). */
static void x_batch(PEER_SOCKET s, const wbuf *body, unsigned count)
{
    static msg m;
    hdr(&m, 0x80);
    p16(&m, count);
    p16(&m, 0);
    memcpy(m.b + m.n, body->b, body->n);
    m.n += body->n;
    fin(&m);
    send_msg(s, &m);
    tu_pump(1, 1);
}
/* BATCH: records sharing fields are rebuilt to the exact MS-PPGRH form
 * (what GetRecord returns matches); a record of another graph inside is
 * dropped like a bad FLOOD; a malformed BATCH, or one on a link that did
 * not negotiate it, closes that link with PEER_E_PROTOCOL_ERROR. */
static void test_batch_messages(void **st)
{
    HGRAPH h = tu_open(L"hostile", L"alice");
    HPEEREVENT e = tu_register_all(h);
    PEER_SOCKET l, s;
    static rxbuf r;
    xrec x1, x2, x3;
    wbuf w;
    PPEER_RECORD pr;
    GUID id;
    int bad;
    (void)st;
    s = raw_responder(h, 0x18, &l, &r);
    x_default(&x1, h, 1);
    x_default(&x2, h, 2);
    x2.data = "second, sharing type, creator, times base";
    x2.created += 12345;
    x2.modified = x2.created + 7;
    x_default(&x3, h, 3);
    x3.graph = "other";
    w.n = 0;
    x_crec(&w, &x1, NULL, 1);
    x_crec(&w, &x2, &x1, 1);
    x_crec(&w, &x3, &x2, 0);
    x_batch(s, &w, 3);
    raw_sync_done(h, s); /* the sync completes */
    id = x_guid(x1.id);
    assert_int_equal(PeerGraphGetRecord(h, &id, &pr), S_OK);
    assert_int_equal(pr->data.cbData, 7);
    assert_memory_equal(pr->data.pbData, "payload", 7);
    assert_string_equal(pr->pwzCreatorId, L"mallory");
    PeerGraphFreeData(pr);
    id = x_guid(x2.id);
    assert_int_equal(PeerGraphGetRecord(h, &id, &pr), S_OK);
    assert_int_equal(pr->data.cbData, strlen(x2.data));
    assert_memory_equal(pr->data.pbData, x2.data, strlen(x2.data));
    {
        ULONGLONG c = ((ULONGLONG)pr->ftCreation.dwHighDateTime << 32) | pr->ftCreation.dwLowDateTime;
        ULONGLONG mo = ((ULONGLONG)pr->ftLastModified.dwHighDateTime << 32) | pr->ftLastModified.dwLowDateTime;
        assert_true(c == x2.created);
        assert_true(mo == x2.created + 7);
    }
    PeerGraphFreeData(pr);
    id = x_guid(x3.id);
    assert_int_equal(PeerGraphGetRecord(h, &id, &pr), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(count_record_events(e, PEER_RECORD_ADDED), 2);
    assert_true(fake_net_is_open(s) && !fake_net_raw_eof(s));
    fake_net_raw_close(s);
    fake_net_raw_close(l);
    tu_pump(2, 1);
    for (bad = 0; bad < 5; bad++) {
        PPEER_GRAPH_EVENT_DATA d, last = NULL;
        s = raw_responder(h, bad == 4 ? 0x08 : 0x18, &l, &r);
        x_default(&x1, h, (unsigned char)(10 + bad));
        w.n = 0;
        x_crec(&w, &x1, NULL, 1);
        switch (bad) {
        case 0: x_batch(s, &w, 2); break;                   /* fewer records than counted */
        case 1: w8(&w, 0); x_batch(s, &w, 1); break;        /* bytes after the last record */
        case 2: w.n -= 3; x_batch(s, &w, 1); break;          /* truncated */
        case 3: w.b[0] |= 0x02; x_batch(s, &w, 1); break;    /* "same as previous" in the first */
        default: x_batch(s, &w, 1); break;                  /* BATCH not negotiated */
        }
        while ((d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            if (last) PeerGraphFreeData(last);
            last = d;
        }
        assert_non_null(last);
        assert_int_equal(last->connectionChangeData.status, PEER_DISCONNECTED);
        assert_int_equal(last->connectionChangeData.hrConnectionFailedReason, PEER_E_PROTOCOL_ERROR);
        PeerGraphFreeData(last);
        fake_net_raw_close(s);
        fake_net_raw_close(l);
        tu_pump(1, 1);
    }
}

/* Every validation rule: the bad record never reaches the database nor the
 * application; the link stays up; a good record still gets through. */
static void test_hostile_floods(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s = raw_neighbor(&la, "hostile");
    xrec x;
    int k;
    PEER_DATABASE_INFO di;
    GUID id;
    PPEER_RECORD got;
    static char bigdata[3000];
    (void)st;
    memset(bigdata, 'b', sizeof bigdata - 1);
    for (k = 0; k < 14; k++) {
        x_default(&x, h, (unsigned char)(k + 1));
        switch (k) {
        case 0: x.id[0] ^= 1; break;                                   /* ID not derived from creator */
        case 1: x.graph = "another"; break;                             /* other graph */
        case 2: x.proto = 0x0200; break;                                /* protocol version */
        case 3: x.flags = 0x02; break;                                  /* deleted with payload */
        case 4: x.expires = pt_now(h) - 1; break;                       /* expired */
        case 5: x.expires = x.modified; break;                          /* expiration <= modification */
        case 6: x.modified = x.created - 1; break;                      /* modified before created */
        case 7: x.modby = "bob"; break;                                 /* modifier on an unmodified record */
        case 8: x.flags = 0x80; break;                                  /* reserved flag bit */
        case 9: x.creator = ""; break;                                  /* no creator */
        case 10: x.attr = "<nope>"; break;                              /* bad attribute XML */
        case 11: x.data = bigdata; break;                               /* over the graph's 2048 B limit? (set below) */
        case 12: x.type[0] = 0; x.type[1] = 0; x.type[2] = 1; memset(x.type + 3, 0, 13); break; /* fake Graph Info ID */
        case 13: x.version = 0; x.created = 0; break;                   /* nonsense, still parses: version 0 ok, created 0 */
        }
        if (k == 11) continue; /* the default graph allows 60 MB; size is tested in test_api_rules */
        x_flood(s, &x);
        id = x_guid(x.id);
        if (k != 13) assert_int_equal(PeerGraphGetRecord(h, &id, &got), PEER_E_RECORD_NOT_FOUND);
        else { assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK); PeerGraphFreeData(got); }
        assert_int_equal(tu_neighbors(h), 1); /* the link stays */
    }
    assert_int_equal(count_record_events(e, PEER_RECORD_ADDED), 1);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
    assert_int_equal(di.cRejectedRecords, 12);
    /* a structurally broken record (lengths that do not add up) likewise */
    {
        unsigned char junk[14 + 100];
        size_t size = 12 + 100;
        memset(junk, 0x41, sizeof junk);
        junk[0] = 0; junk[1] = (unsigned char)size;
        junk[2] = 0; junk[3] = 0; junk[4] = 0; junk[5] = (unsigned char)size; junk[6] = 0x10; junk[7] = 0x0B;
        junk[8] = 0; junk[9] = 0; junk[10] = 0; junk[11] = 12; junk[12] = 0; junk[13] = 0;
        fake_net_raw_write(s, junk, sizeof junk);
        tu_pump(1, 1);
        assert_int_equal(tu_neighbors(h), 1);
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
        assert_int_equal(di.cRejectedRecords, 13);
    }
    /* a FLOOD whose reserved field is not 0 is a bad message: the link closes */
    {
        unsigned char bad[14] = {0, 12, 0, 0, 0, 12, 0x10, 0x0B, 0, 12, 0, 1};
        fake_net_raw_write(s, bad, 14);
        tu_pump(1, 1);
        assert_int_equal(tu_neighbors(h), 0);
    }
    fake_net_raw_close(s);
}

/* Conflict resolution order and "send back the newer copy". */
static void test_conflicts(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s = raw_neighbor(&la, "hostile");
    xrec x;
    GUID id;
    char buf[32];
    unsigned char junk[8192];
    (void)st;
    x_default(&x, h, 0x77);
    id = x_guid(x.id);
    x_flood(s, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "payload");
    fake_net_raw_read(s, junk, sizeof junk);
    /* rule 1: higher version wins */
    x.version = 3; x.data = "v3"; x.modified += 10; x.modby = "bob";
    x_flood(s, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "v3");
    /* lower version: ignored, and our newer copy goes back to the sender */
    fake_net_raw_read(s, junk, sizeof junk);
    x.version = 2; x.data = "v2";
    x_flood(s, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "v3");
    {
        size_t n = fake_net_raw_read(s, junk, sizeof junk), i;
        int sawFlood = 0;
        for (i = 0; i + 8 <= n; i++) if (junk[i + 6] == 0x10 && junk[i + 7] == 0x0B) sawFlood = 1;
        assert_true(sawFlood);
    }
    /* rule 3: same version, both modified: the higher modifier ID wins */
    x.version = 3; x.modby = "zed"; x.data = "zed";
    x_flood(s, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "zed");
    x.modby = "carol"; x.data = "carol"; x.modified += 100;
    x_flood(s, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "zed");
    /* rule 4: same modifier: the later modification wins */
    x.modby = "zed"; x.data = "later";
    x_flood(s, &x);
    assert_string_equal(data_of(h, &id, buf, sizeof buf), "later");
    fake_net_raw_close(s);
}

/* What we put on the wire for a local record, read by the test's decoder. */
static void test_record_wire_form(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s = raw_neighbor(&la, "hostile");
    unsigned char in[8192], id16[16];
    size_t n, i;
    GUID id;
    (void)st;
    fake_net_raw_read(s, in, sizeof in); /* WELCOME etc. */
    id = add(h, &T1, "wire");
    tu_pump(1, 1);
    n = fake_net_raw_read(s, in, sizeof in);
    assert_true(n > 14);
    assert_int_equal(in[2 + 4], 0x10);
    assert_int_equal(in[2 + 5], 0x0B);
    assert_int_equal(in[2 + 9], 12); /* record offset */
    i = 2 + 12;
    assert_int_equal(in[i + 0], 0x11); /* type, textual byte order */
    assert_int_equal(in[i + 4], 0x22);
    x_id_for("alice", id16, 0);
    assert_memory_equal(in + i + 16, id16, 8); /* the ID's high half folds MD5(creator) */
    assert_int_equal(in[i + 35], 1);   /* version 1 */
    assert_int_equal(in[i + 39], 0);   /* flags */
    assert_int_equal(in[i + 43], 6);   /* creator length: "alice" + NUL */
    assert_int_equal(in[i + 44], 'a'); /* UTF-16LE */
    assert_int_equal(in[i + 45], 0);
    (void)id;
    fake_net_raw_close(s);
}

/* One database log entry (length, kind, body, MD5 of kind and body) appended to f. */
static void log_entry(FILE *f, unsigned kind, const unsigned char *body, size_t n)
{
    static unsigned char e[4096 + 21];
    e[0] = (unsigned char)((n + 1) >> 24); e[1] = (unsigned char)((n + 1) >> 16);
    e[2] = (unsigned char)((n + 1) >> 8); e[3] = (unsigned char)(n + 1);
    e[4] = (unsigned char)kind;
    memcpy(e + 5, body, n);
    assert_int_equal(mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_MD5), e + 4, n + 1, e + 5 + n), 0);
    assert_int_equal(fwrite(e, 1, n + 21, f), n + 21);
}

/* Records are held without their graph ID (it must be the graph's), so a
 * database file entry naming another graph, or another protocol version,
 * is dropped when the file is read, as the checks after loading dropped it
 * before: together with any older version of its ID that the file held.
 * Such entries are not counted as corrupt (their checksums are right), and
 * the rest of the file loads. */
static void test_file_foreign_records(void **st)
{
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"foreign", 0);
    GUID keep = add(h, &T1, "keep"), gone = add(h, &T1, "gone"), gx;
    xrec x[3];
    wbuf w;
    char path[512], buf[16];
    PEER_DATABASE_INFO di;
    PPEER_RECORD r;
    FILE *f;
    int k;
    (void)st;
    x_default(&x[0], h, 1);
    x[0].graph = "other";           /* another graph */
    x_default(&x[1], h, 2);
    x[1].graph = "hostile";
    x[1].proto = 0x0200;            /* another protocol version */
    x_default(&x[2], h, 3);
    tu_guid_wire(x[2].id, &gone);      /* "gone", version 2, of another graph */
    x[2].creator = "alice";
    x[2].version = 2;
    x[2].graph = "other";
    assert_int_equal(PeerGraphClose(h), S_OK);
    tu_db_file_path("hostile", "alice", "foreign", path, sizeof path);
    f = fopen(path, "ab");
    assert_non_null(f);
    for (k = 0; k < 3; k++) {
        x_encode(&x[k], &w);
        log_entry(f, 2, w.b, w.n);
    }
    fclose(f);
    assert_int_equal(PeerGraphOpen(L"hostile", L"alice", L"foreign", NULL, 0, NULL, &h), S_OK);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
    assert_int_equal(di.cCorruptEntriesDropped, 0);
    assert_int_equal(di.cRecords, 2); /* "keep" + Graph Info */
    assert_string_equal(data_of(h, &keep, buf, sizeof buf), "keep");
    assert_string_equal(data_of(h, &gone, buf, sizeof buf), "");
    for (k = 0; k < 2; k++) {
        gx = x_guid(x[k].id);
        assert_int_equal(PeerGraphGetRecord(h, &gx, &r), PEER_E_RECORD_NOT_FOUND);
    }
    assert_int_equal(PeerGraphClose(h), S_OK);
}

/* The raw neighbor s asks h (pumped) for a hash sync of one range that
 * matches nothing; returns 1 if h's ADVERTISE lists record `id`.  Then,
 * if `finish`, it asks for none and reads the SYNC_END; if not, the sync
 * stays open. */
static int hash_ask(PEER_SOCKET s, rxbuf *r, msg *m, const GUID *id, int finish)
{
    unsigned long na, k, off;
    int got = 0, i, listed = 0;
    hdr(m, 0x08); /* SOLICIT_HASH */
    p8(m, 0);
    p8(m, 0);
    p16(m, 20);
    p32(m, 1);
    p16(m, 20);
    p16(m, 0);
    for (i = 0; i < 40; i++) p8(m, 0);
    fin(m);
    send_msg(s, m);
    tu_pump(1, 1);
    while (recv_msg_all(s, r, m) > 0)
        if (m->b[5] == 0x09) {
            got++;
            na = ((unsigned long)g16(m->b + 12) << 16) | g16(m->b + 14);
            off = ((unsigned long)g16(m->b + 20) << 16) | g16(m->b + 22);
            for (k = 0; k < na; k++) {
                GUID g = x_guid(m->b + off + 20 * k);
                listed |= !memcmp(&g, id, sizeof g);
            }
        }
    assert_int_equal(got, 1);
    if (!finish) return listed;
    hdr(m, 0x0A); /* REQUEST of nothing */
    p32(m, 0);
    p32(m, 16);
    fin(m);
    send_msg(s, m);
    tu_pump(1, 1);
    while (recv_msg_all(s, r, m) > 0) {}
    return listed;
}

/* A node keeps its hash-sync order of records while hash syncs run on its
 * links (rec_sorted), but never past a change: a record added, or one that
 * expires (before the expiry pass purges it: "short" expires at 60 s, the
 * pass after the one at 50 s comes at 65 s), while a sync stays open on
 * another link shows in the next ADVERTISE. */
static void test_hash_order_kept_fresh(void **st)
{
    HGRAPH h = tu_create(L"hostile", L"alice");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s, open1;
    static rxbuf r, r1;
    static msg m;
    PEER_RECORD rec;
    GUID x, y, shortId;
    int i;
    (void)st;
    for (i = 0; i < 5; i++) x = add(h, &T1, "x");
    rec_init(&rec, h, &T1, "short", 60);
    assert_int_equal(PeerGraphAddRecord(h, &rec, &shortId), S_OK);
    rec_init(&rec, h, &T1, "shorter", 50); /* its purge at 50 s puts the next pass at 65 s */
    assert_int_equal(PeerGraphAddRecord(h, &rec, &y), S_OK);
    open1 = raw_neighbor_node(&la, "hostile", 0x41);
    s = raw_neighbor_node(&la, "hostile", 0x42);
    memset(&r, 0, sizeof r);
    memset(&r1, 0, sizeof r1);
    while (recv_msg_all(s, &r, &m) > 0) {}
    while (recv_msg_all(open1, &r1, &m) > 0) {}
    assert_true(hash_ask(open1, &r1, &m, &x, 0)); /* held open: the order is kept */
    assert_true(hash_ask(s, &r, &m, &shortId, 1)); /* the same order again */
    y = add(h, &T1, "y");
    tu_pump(1, 1);
    assert_true(hash_ask(s, &r, &m, &y, 1)); /* added since */
    for (i = 0; i < 59; i++) tu_pump(1, 1000);
    tu_pump(1, 690); /* 59.7 s after "short" was added */
    assert_true(hash_ask(s, &r, &m, &shortId, 1));
    tu_pump(1, 400); /* "short" has expired, not yet purged */
    assert_false(hash_ask(s, &r, &m, &shortId, 1));
    assert_true(hash_ask(s, &r, &m, &y, 1));
    fake_net_raw_close(s);
    fake_net_raw_close(open1);
    assert_int_equal(PeerGraphClose(h), S_OK);
}

/* 1 if the file holds the bytes b[0..n). */
static int file_holds(const char *path, const unsigned char *b, size_t n)
{
    static unsigned char f[1 << 16];
    size_t len, i;
    FILE *fp = fopen(path, "rb");
    assert_non_null(fp);
    len = fread(f, 1, sizeof f, fp);
    fclose(fp);
    for (i = 0; i + n <= len; i++)
        if (!memcmp(f + i, b, n)) return 1;
    return 0;
}

/* Records are held in a compact stored form (no graph ID, varint lengths:
 * p2pgraph.c section 5) and rebuilt when they go out: what a neighbor is
 * relayed, what an export holds and what a reopened database exports are
 * exactly the bytes received, for a record with every field present
 * (modifier, security data, attributes, binary payload) and for one with
 * every optional field empty. */
/* PeerGraphGetRecord of x gives its creator, modifier, times, security
 * data and payload (the API's view of the stored form). */
static void stored_record_check(HGRAPH h, const xrec *x)
{
    PPEER_RECORD got = NULL;
    GUID id = x_guid(x->id);
    unsigned short u[300];
    size_t i, n;
    size_t nd = x->ndata ? x->ndata : strlen(x->data);
    assert_int_equal(PeerGraphGetRecord(h, &id, &got), S_OK);
    n = u8_to_u16(x->creator, u);
    assert_int_equal(wcslen(got->pwzCreatorId), n);
    for (i = 0; i < n; i++) assert_int_equal((unsigned)got->pwzCreatorId[i], u[i]);
    n = u8_to_u16(x->modby, u);
    if (!n) assert_true(!got->pwzModifiedById || !got->pwzModifiedById[0]);
    else {
        assert_int_equal(wcslen(got->pwzModifiedById), n);
        for (i = 0; i < n; i++) assert_int_equal((unsigned)got->pwzModifiedById[i], u[i]);
    }
    assert_int_equal(got->dwVersion, x->version);
    assert_int_equal(((ULONGLONG)got->ftCreation.dwHighDateTime << 32) | got->ftCreation.dwLowDateTime, x->created);
    assert_int_equal(((ULONGLONG)got->ftLastModified.dwHighDateTime << 32) | got->ftLastModified.dwLowDateTime, x->modified);
    assert_int_equal(got->securityData.cbData, x->nsec);
    if (x->nsec) assert_memory_equal(got->securityData.pbData, x->sec, x->nsec);
    assert_int_equal(got->data.cbData, nd);
    if (nd) assert_memory_equal(got->data.pbData, x->data, nd);
    PeerGraphFreeData(got);
}

static void test_stored_form_exact(void **st)
{
    static const unsigned char sec[5] = {1, 0, 0x80, 0xFF, 7};
    static unsigned char bin[300];
    static rxbuf r;
    static msg m;
    HGRAPH h = tu_create_db(L"hostile", L"alice", L"stored-form", 0);
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET a = raw_neighbor_node(&la, "hostile", 0x42), b = raw_neighbor_node(&la, "hostile", 0x43);
    const char *exp = TU_DBDIR_N "/stored-form-export.p2pg";
    /* 64 characters and the NUL: one unit more than the stored form narrows */
    static const char long_id[] = "p12345678901234567890123456789012345678901234567890123456789abcd";
    static const char *const same_len[8] = {"peer-a1", "peer-b2", "peer-c3", "peer-d4",
                                             "peer-e5", "peer-f6", "peer-g7", "peer-h8"};
    static const char max_narrow[] = "q12345678901234567890123456789012345678901234567890123456789012"; /* 63 + NUL */
    enum { NX = 14 };
    HGRAPH h2;
    ULONGLONG cid;
    xrec x[NX];
    wbuf w[NX];
    int k, seen[NX] = {0};
    (void)st;
    for (k = 0; k < (int)sizeof bin; k++) bin[k] = (unsigned char)(k * 7);
    x_default(&x[0], h, 1);
    x[0].version = 300; /* a two-byte varint */
    x[0].modby = "bob";
    x[0].modified = x[0].created + 12345;
    x[0].sec = sec;
    x[0].nsec = sizeof sec;
    x[0].data = (const char *)bin;
    x[0].ndata = sizeof bin;
    x[0].attr = "<attributes><attribute name=\"T\" type=\"string\">v</attribute></attributes>";
    x_default(&x[1], h, 2);
    x[1].data = "";
    x[1].created -= 5; /* modified after created, no modifier named */
    /* the peer strings' three stored shapes: one byte a unit (U+00E9 too),
     * two (U+20AC), and two for a string longer than REC_NARROW_MAX */
    x_default(&x[2], h, 3);
    x[2].creator = "m\xc3\xa9lanie";
    x_id_for(x[2].creator, x[2].id, 3);
    x[2].modby = "\xe2\x82\xac-peer";
    x[2].modified = x[2].created + 1;
    x_default(&x[3], h, 4);
    x[3].creator = "\xe2\x82\xac";
    x_id_for(x[3].creator, x[3].id, 4);
    x[3].modby = "b\xc3\xbf";
    x[3].modified = x[3].created + 2;
    x[3].sec = sec;
    x[3].nsec = 1;
    x_default(&x[4], h, 5);
    x[4].creator = long_id;
    x_id_for(x[4].creator, x[4].id, 5);
    x[4].modby = "zed";
    x[4].modified = x[4].created + 3;
    x[4].attr = "<attributes></attributes>";
    x_default(&x[5], h, 6);
    x[5].creator = max_narrow;
    x_id_for(x[5].creator, x[5].id, 6);
    x[5].data = "";
    for (k = 6; k < NX; k++) { /* creators of one length, for the BATCH's "same as previous" */
        x_default(&x[k], h, (unsigned char)(k + 1));
        x[k].creator = same_len[k - 6];
        x_id_for(x[k].creator, x[k].id, (unsigned char)(k + 1));
    }
    /* the stored time differences' shapes (creation from expiry, a
     * negative one; modification from creation): whole seconds (the
     * defaults), whole milliseconds, 100 ns units, and one too big for
     * those (an expiry 29,000 years away) */
    x[6].expires = 0x7FFFFFFFFFFFFF00ULL;
    x[7].expires += 70000;                  /* 7 ms */
    x[7].modified = x[7].created + 30000000; /* 3 s */
    x[8].expires += 3;                      /* 300 ns */
    x[8].modified = x[8].created + 20000;   /* 2 ms */
    memset(&r, 0, sizeof r);
    while (recv_msg(b, &r, &m) > 0) {} /* WELCOME, sync */
    for (k = 0; k < NX; k++) {
        x_encode(&x[k], &w[k]);
        x_write_flood(a, &x[k]);
    }
    tu_pump(3, 1);
    while (recv_msg(b, &r, &m) > 0)
        for (k = 0; k < NX; k++)
            if (m.b[5] == 0x0B && m.n == 12 + w[k].n && !memcmp(m.b + 12, w[k].b, w[k].n)) seen[k]++;
    for (k = 0; k < NX; k++) {
        assert_int_equal(seen[k], 1); /* relayed once, byte for byte */
        stored_record_check(h, &x[k]);
    }
    /* a p2pgraph joiner gets them from the stored form in BATCH messages */
    h2 = tu_open(L"hostile", L"bob");
    assert_int_equal(PeerGraphConnect(h2, NULL, &la, &cid), S_OK);
    tu_pump(20, 1);
    for (k = 0; k < NX; k++) stored_record_check(h2, &x[k]);
    assert_int_equal(PeerGraphClose(h2), S_OK);
    assert_int_equal(PeerGraphExportDatabase(h, TU_DBDIR_W L"/stored-form-export.p2pg"), S_OK);
    for (k = 0; k < NX; k++) assert_true(file_holds(exp, w[k].b, w[k].n));
    fake_net_raw_close(a);
    fake_net_raw_close(b);
    assert_int_equal(PeerGraphClose(h), S_OK);
    /* read back from the file into the stored form, then out again */
    assert_int_equal(PeerGraphOpen(L"hostile", L"alice", L"stored-form", NULL, 0, NULL, &h), S_OK);
    remove(exp);
    assert_int_equal(PeerGraphExportDatabase(h, TU_DBDIR_W L"/stored-form-export.p2pg"), S_OK);
    for (k = 0; k < NX; k++) {
        assert_true(file_holds(exp, w[k].b, w[k].n));
        stored_record_check(h, &x[k]);
    }
    assert_int_equal(PeerGraphClose(h), S_OK);
    remove(exp);
}

/* Records of 300 types: past the 255 a graph's type table holds, a record
 * keeps its type itself.  Every record keeps its own type at the node that
 * made it, at one that synchronized it, and after both reopen (the table
 * is rebuilt in load order). */
#define NTYPES 300
static void types_check(HGRAPH h, const GUID *ids, const GUID *types)
{
    int i;
    for (i = 0; i < NTYPES; i++) {
        PPEER_RECORD got = NULL;
        char want[16];
        assert_int_equal(PeerGraphGetRecord(h, &ids[i], &got), S_OK);
        assert_memory_equal(&got->type, &types[i], sizeof(GUID));
        snprintf(want, sizeof want, "t%d", i);
        assert_int_equal(got->data.cbData, strlen(want));
        assert_memory_equal(got->data.pbData, want, strlen(want));
        PeerGraphFreeData(got);
        if (i % 37 == 0 || i >= 250) assert_int_equal(record_count(h, &types[i]), 1); /* the type filter */
    }
}

static void test_type_table_full(void **st)
{
    static GUID ids[NTYPES], types[NTYPES];
    HGRAPH a = tu_create_db(L"types", L"alice", L"types-a", 0), b = NULL;
    PEER_ADDRESS la = tu_listen(a);
    ULONGLONG cid;
    int i;
    (void)st;
    PeerGraphDelete(L"types", L"bob", L"types-b");
    assert_int_equal(PeerGraphOpen(L"types", L"bob", L"types-b", NULL, 0, NULL, &b), PEER_S_GRAPH_DATA_CREATED);
    for (i = 0; i < NTYPES; i++) {
        char data[16];
        types[i] = T1;
        types[i].Data1 = 0x5000 + (unsigned long)i;
        types[i].Data4[7] = (unsigned char)i;
        snprintf(data, sizeof data, "t%d", i);
        ids[i] = add(a, &types[i], data);
    }
    types_check(a, ids, types);
    assert_int_equal(PeerGraphConnect(b, NULL, &la, &cid), S_OK);
    tu_pump(20, 1);
    types_check(b, ids, types);
    assert_int_equal(PeerGraphClose(a), S_OK);
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphOpen(L"types", L"alice", L"types-a", NULL, 0, NULL, &a), S_OK);
    assert_int_equal(PeerGraphOpen(L"types", L"bob", L"types-b", NULL, 0, NULL, &b), S_OK);
    types_check(a, ids, types);
    types_check(b, ids, types);
    assert_int_equal(PeerGraphClose(a), S_OK);
    assert_int_equal(PeerGraphClose(b), S_OK);
}

#ifndef _WIN32
/* A child adds records and reports each acknowledged one on a pipe; it is
 * killed with SIGKILL at a random moment; the database must open and hold
 * every acknowledged record. */
static void test_crash_kill9(void **st)
{
    int round;
    (void)st;
    assert_int_equal(PeerGraphShutdown(), S_OK);
    srand(12345);
    for (round = 0; round < 25; round++) {
        int fds[2];
        pid_t pid;
        static GUID acked[20000];
        int nacked = 0, i;
        HGRAPH h;
        PEER_VERSION_DATA vd;
        assert_int_equal(pipe(fds), 0);
        pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            HGRAPH c;
            close(fds[0]);
            assert_int_equal(PeerGraphSetNetShim(NULL), S_OK);
            PeerGraphStartup(PEER_GRAPH_VERSION, &vd);
            if (round == 0) {
                PEER_GRAPH_PROPERTIES p;
                memset(&p, 0, sizeof p);
                p.dwSize = sizeof p;
                p.pwzGraphId = (PWSTR)L"crash";
                p.pwzCreatorId = (PWSTR)L"alice";
                PeerGraphDelete(L"crash", L"alice", L"crashdb");
                if (PeerGraphCreate(&p, L"crashdb", NULL, &c) != S_OK) _exit(3);
            } else if (PeerGraphOpen(L"crash", L"alice", L"crashdb", NULL, 0, NULL, &c) != S_OK)
                _exit(4);
            { /* ready: the kill is meant for the AddRecord stream, not for Create (slow under ASan and load) */
                static const GUID ready = {0xFFFFFFFF, 0xFFFF, 0xFFFF, {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF}};
                if (write(fds[1], &ready, sizeof ready) != (ssize_t)sizeof ready) _exit(6);
            }
            for (;;) {
                PEER_RECORD r;
                GUID id;
                static char d[300];
                ULONGLONG exp = 134116992000000000ULL * 2;
                memset(&r, 0, sizeof r);
                r.dwSize = sizeof r;
                r.type = T1;
                r.ftExpiration.dwLowDateTime = (DWORD)exp;
                r.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
                memset(d, 'c', sizeof d);
                r.data.cbData = 1 + (ULONG)(rand() % 299);
                r.data.pbData = (PBYTE)d;
                if (PeerGraphAddRecord(c, &r, &id) != S_OK) _exit(5);
                if (write(fds[1], &id, sizeof id) != (ssize_t)sizeof id) _exit(6);
                PeerGraphService(NULL, 0, PeerGraphGetTickCount());
            }
        }
        close(fds[1]);
        { /* wait for the child's graph to be there */
            GUID ready;
            assert_int_equal(read(fds[0], &ready, sizeof ready), (ssize_t)sizeof ready);
            assert_int_equal(ready.Data1, 0xFFFFFFFFu);
        }
        {
            struct timespec ts;
            ts.tv_sec = 0;
            ts.tv_nsec = (long)(1 + rand() % 40) * 1000000L;
            nanosleep(&ts, NULL);
        }
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        for (;;) {
            ssize_t k = read(fds[0], &acked[nacked], sizeof(GUID));
            if (k != (ssize_t)sizeof(GUID) || nacked + 1 >= 20000) break;
            nacked++;
        }
        close(fds[0]);
        assert_int_equal(PeerGraphSetNetShim(NULL), S_OK);
        assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK);
        assert_int_equal(PeerGraphOpen(L"crash", L"alice", L"crashdb", NULL, 0, NULL, &h), S_OK);
        for (i = 0; i < nacked; i++) {
            PPEER_RECORD got;
            assert_int_equal(PeerGraphGetRecord(h, &acked[i], &got), S_OK);
            PeerGraphFreeData(got);
        }
        assert_int_equal(PeerGraphClose(h), S_OK);
        assert_int_equal(PeerGraphShutdown(), S_OK);
    }
    {
        PEER_VERSION_DATA vd;
        assert_int_equal(PeerGraphSetNetShim(fake_net_shim()), S_OK);
        assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK); /* for teardown */
    }
}
#endif

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_api_rules, setup, teardown),
        cmocka_unit_test_setup_teardown(test_attributes_and_search, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export_import, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_record_and_type_filter, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_precedence_and_peer_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood_line, setup, teardown),
        cmocka_unit_test_setup_teardown(test_flood_ring, setup, teardown),
        cmocka_unit_test_setup_teardown(test_late_join, setup, teardown),
        cmocka_unit_test_setup_teardown(test_offline_resync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_expiration, setup, teardown),
        cmocka_unit_test_setup_teardown(test_persistence_and_torn_tail, setup, teardown),
        cmocka_unit_test_setup_teardown(test_file_foreign_records, setup, teardown),
        cmocka_unit_test_setup_teardown(test_compaction, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_table_growth, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_sync_only_differences, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hostile_floods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_conflicts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_relay_skips_senders, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contact_ids_folding_alike, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renewal_relay_paced, setup, teardown),
        cmocka_unit_test_setup_teardown(test_received_records_on_disk_when_call_returns, setup, teardown),
        cmocka_unit_test_setup_teardown(test_joiner_records_wait_for_sync_flag, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_owner_yields_to_lower_claim, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_claim_waits_for_lower_owner, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_renewed_by_beat, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_beat_relayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_relayed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_stored_form_exact, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hash_order_kept_fresh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_wire_form, setup, teardown),
        cmocka_unit_test_setup_teardown(test_type_table_full, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_table_churn, setup, teardown),
        cmocka_unit_test_setup_teardown(test_sync_ack_policy, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_ack_rides_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batch_messages, setup, teardown),
#ifndef _WIN32
        cmocka_unit_test_setup_teardown(test_crash_kill9, setup, teardown),
#endif
    };
    if (getenv("P2PG_TEST_FILTER")) cmocka_set_test_filter(getenv("P2PG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
