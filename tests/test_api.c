/*
 * test_api.c - argument checking, lifecycle, database files, properties,
 * events and enumerations, on the fake network and synthetic clock.
 */
#include "testutil.h"

static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

static void test_startup_version_and_counting(void **st)
{
    PEER_VERSION_DATA vd;
    HGRAPH h;
    (void)st;
    assert_int_equal(PeerGraphStartup(MAKEWORD(2, 0), &vd), PEER_E_UNSUPPORTED_VERSION);
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK); /* second start */
    assert_int_equal(vd.wVersion, PEER_GRAPH_VERSION);
    assert_int_equal(vd.wHighestVersion, PEER_GRAPH_VERSION);
    h = tu_create(L"g", L"alice");
    assert_int_equal(PeerGraphShutdown(), S_OK); /* one left: graph survives */
    {
        DWORD s;
        assert_int_equal(PeerGraphGetStatus(h, &s), S_OK);
    }
    /* shim cannot change while started */
    assert_int_equal(PeerGraphSetNetShim(fake_net_shim()), E_ACCESSDENIED);
}

static void test_not_initialized(void **st)
{
    HGRAPH h = NULL;
    DWORD s;
    ULONG n;
    ULONGLONG d;
    (void)st;
    assert_int_equal(PeerGraphShutdown(), S_OK);
    assert_int_equal(PeerGraphShutdown(), PEER_E_NOT_INITIALIZED);
    assert_int_equal(PeerGraphGetStatus(h, &s), PEER_E_NOT_INITIALIZED);
    assert_int_equal(PeerGraphGetPollFds(NULL, 0, &n, &d), PEER_E_NOT_INITIALIZED);
    assert_int_equal(PeerGraphService(NULL, 0, 0), PEER_E_NOT_INITIALIZED);
    assert_int_equal(PeerGraphOpen(L"g", L"p", L"db", NULL, 0, NULL, &h), PEER_E_NOT_INITIALIZED);
    {
        PEER_VERSION_DATA vd;
        assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK); /* for teardown */
    }
}

static void test_create_arguments(void **st)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h;
    wchar_t longid[300];
    int i;
    (void)st;
    for (i = 0; i < 299; i++) longid[i] = L'x';
    longid[299] = 0;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)L"g";
    p.pwzCreatorId = (PWSTR)L"alice";
    assert_int_equal(PeerGraphCreate(NULL, L"db", NULL, &h), E_INVALIDARG);
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphCreate(&p, NULL, NULL, &h), E_INVALIDARG);
    assert_int_equal(PeerGraphCreate(&p, L"dir/db", NULL, &h), E_INVALIDARG);
    assert_int_equal(PeerGraphCreate(&p, L"..", NULL, &h), E_INVALIDARG);
    p.dwSize = 4;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.dwSize = sizeof p;
    p.pwzGraphId = longid;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.pwzGraphId = (PWSTR)L"";
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.pwzGraphId = (PWSTR)L"g";
    p.pwzCreatorId = NULL;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.pwzCreatorId = (PWSTR)L"alice";
    p.dwMaxRecordSize = 100;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.dwMaxRecordSize = 0;
    p.dwScope = 9;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.dwScope = 0;
    p.ulPresenceLifetime = 10;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
    p.ulPresenceLifetime = 0;
    p.dwFlags = 0x80;
    assert_int_equal(PeerGraphCreate(&p, L"db", NULL, &h), E_INVALIDARG);
}

static void test_create_duplicate_delete_open(void **st)
{
    PEER_GRAPH_PROPERTIES p, *got = NULL;
    HGRAPH h, h2;
    DWORD s;
    (void)st;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)L"graph-\x00e9\x4e2d";
    p.pwzCreatorId = (PWSTR)L"alice";
    p.pwzFriendlyName = (PWSTR)L"Friendly";
    p.pwzComment = (PWSTR)L"comment";
    p.dwMaxRecordSize = 4096;
    p.ulPresenceLifetime = 600;
    p.cPresenceMax = 5;
    PeerGraphDelete(p.pwzGraphId, L"alice", L"cdo");
    assert_int_equal(PeerGraphCreate(&p, L"cdo", NULL, &h), S_OK);
    assert_int_equal(PeerGraphCreate(&p, L"cdo", NULL, &h2), PEER_E_DUPLICATE_GRAPH);
    assert_int_equal(PeerGraphGetStatus(h, &s), S_OK);
    assert_int_equal(s, PEER_GRAPH_STATUS_SYNCHRONIZED);
    assert_int_equal(PeerGraphGetProperties(h, &got), S_OK);
    assert_true(wcscmp(got->pwzGraphId, p.pwzGraphId) == 0);
    assert_true(wcscmp(got->pwzCreatorId, L"alice") == 0);
    assert_true(wcscmp(got->pwzFriendlyName, L"Friendly") == 0);
    assert_int_equal(got->dwMaxRecordSize, 4096);
    assert_int_equal(got->ulPresenceLifetime, 600);
    assert_int_equal(got->cPresenceMax, 5);
    PeerGraphFreeData(got);
    /* open while open: refused; delete while open: refused */
    assert_int_equal(PeerGraphOpen(p.pwzGraphId, L"alice", L"cdo", NULL, 0, NULL, &h2), PEER_E_DUPLICATE_GRAPH);
    assert_int_equal(PeerGraphDelete(p.pwzGraphId, L"alice", L"cdo"), E_ACCESSDENIED);
    assert_int_equal(PeerGraphClose(h), S_OK);
    assert_int_equal(PeerGraphClose(h), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphGetStatus(h, &s), PEER_E_INVALID_GRAPH);
    /* reopen: S_OK, synchronized, properties persisted */
    assert_int_equal(PeerGraphOpen(p.pwzGraphId, L"alice", L"cdo", NULL, 0, NULL, &h2), S_OK);
    assert_ptr_not_equal(h2, h);
    assert_int_equal(PeerGraphGetProperties(h2, &got), S_OK);
    assert_true(wcscmp(got->pwzComment, L"comment") == 0);
    assert_int_equal(got->dwMaxRecordSize, 4096);
    PeerGraphFreeData(got);
    assert_int_equal(PeerGraphClose(h2), S_OK);
    assert_int_equal(PeerGraphDelete(p.pwzGraphId, L"alice", L"cdo"), S_OK);
    assert_int_equal(PeerGraphDelete(p.pwzGraphId, L"alice", L"cdo"), PEER_E_DATABASE_NOT_PRESENT);
    /* open of a missing database: created, not synchronized */
    assert_int_equal(PeerGraphOpen(p.pwzGraphId, L"alice", L"cdo", NULL, 0, NULL, &h2), PEER_S_GRAPH_DATA_CREATED);
    assert_int_equal(PeerGraphGetStatus(h2, &s), S_OK);
    assert_int_equal(s, 0);
    assert_int_equal(PeerGraphGetProperties(h2, &got), PEER_E_GRAPH_NOT_READY);
    assert_int_equal(PeerGraphListen(h2, 0, 0, 0), PEER_E_GRAPH_NOT_READY);
    assert_int_equal(PeerGraphClose(h2), S_OK);
    /* still not synchronized on the next open */
    assert_int_equal(PeerGraphOpen(p.pwzGraphId, L"alice", L"cdo", NULL, 0, NULL, &h2), PEER_S_GRAPH_DATA_CREATED);
    assert_int_equal(PeerGraphClose(h2), S_OK);
    assert_int_equal(PeerGraphDelete(p.pwzGraphId, L"alice", L"cdo"), S_OK);
}

static void test_corrupt_database(void **st)
{
    HGRAPH h = tu_create_db(L"corrupt", L"alice", L"cdb", 0);
    FILE *f;
    char path[512];
    long size;
    (void)st;
    assert_int_equal(PeerGraphClose(h), S_OK);
    tu_db_file_path("corrupt", "alice", "cdb", path, sizeof path);
    f = fopen(path, "r+b");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    size = ftell(f);
    assert_true(size > 40);
    /* flip one byte in the body: the checksum catches it */
    fseek(f, 30, SEEK_SET);
    {
        int c = fgetc(f);
        fseek(f, 30, SEEK_SET);
        fputc(c ^ 0x55, f);
    }
    fclose(f);
    /* the damaged entry (the first metadata entry) is skipped and reported;
     * the rest of the file (later metadata, the Graph Info record) opens */
    assert_int_equal(PeerGraphOpen(L"corrupt", L"alice", L"cdb", NULL, 0, NULL, &h), S_OK);
    {
        PEER_DATABASE_INFO di;
        memset(&di, 0, sizeof di);
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), E_INVALIDARG);
        di.dwSize = sizeof di;
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
        assert_int_equal(di.cCorruptEntriesDropped, 1);
        assert_int_equal(di.cbTornTailDropped, 0);
        assert_int_equal(PeerGraphClose(h), S_OK);
    }
    /* reopened clean: the file was rewritten without the bad entry */
    assert_int_equal(PeerGraphOpen(L"corrupt", L"alice", L"cdb", NULL, 0, NULL, &h), S_OK);
    {
        PEER_DATABASE_INFO di;
        di.dwSize = sizeof di;
        assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
        assert_int_equal(di.cCorruptEntriesDropped, 0);
        assert_int_equal(PeerGraphClose(h), S_OK);
    }
    /* nothing but the magic: no metadata at all is not a database of ours */
    f = fopen(path, "wb");
    assert_non_null(f);
    fwrite("P2PGMETA", 1, 8, f);
    fclose(f);
    assert_int_equal(PeerGraphOpen(L"corrupt", L"alice", L"cdb", NULL, 0, NULL, &h), PEER_E_INVALID_DATABASE);
    assert_int_equal(PeerGraphDelete(L"corrupt", L"alice", L"cdb"), S_OK);
    assert_int_equal(PeerGraphOpen(L"corrupt", L"alice", L"cdb", NULL, 0, NULL, &h), PEER_S_GRAPH_DATA_CREATED);
}

static void test_properties_set(void **st)
{
    HGRAPH h = tu_create(L"props", L"alice"), j;
    HPEEREVENT e = tu_register_all(h);
    PEER_GRAPH_PROPERTIES p, *got;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    memset(&p, 0, sizeof p);
    assert_int_equal(PeerGraphSetProperties(h, &p), E_INVALIDARG);
    p.dwSize = sizeof p;
    p.pwzFriendlyName = (PWSTR)L"new name";
    p.pwzGraphId = (PWSTR)L"ignored";
    p.ulPresenceLifetime = 100;
    assert_int_equal(PeerGraphSetProperties(h, &p), E_INVALIDARG);
    p.ulPresenceLifetime = 900;
    p.cPresenceMax = 3;
    assert_int_equal(PeerGraphSetProperties(h, &p), S_OK);
    d = tu_event(e, PEER_GRAPH_EVENT_PROPERTY_CHANGED);
    assert_non_null(d);
    PeerGraphFreeData(d);
    assert_int_equal(PeerGraphGetProperties(h, &got), S_OK);
    assert_true(wcscmp(got->pwzFriendlyName, L"new name") == 0);
    assert_true(wcscmp(got->pwzGraphId, L"props") == 0);
    assert_null(got->pwzComment);
    assert_int_equal(got->ulPresenceLifetime, 900);
    assert_int_equal(got->cPresenceMax, 3);
    PeerGraphFreeData(got);
    /* a joiner may not change the creator's properties */
    j = tu_open(L"props", L"bob");
    assert_int_equal(PeerGraphSetProperties(j, &p), PEER_E_GRAPH_NOT_READY);
    assert_int_equal(PeerGraphSetProperties(NULL, &p), PEER_E_INVALID_GRAPH);
}

static void test_events_registration(void **st)
{
    HGRAPH h = tu_create(L"ev", L"alice");
    PEER_GRAPH_EVENT_REGISTRATION r[2] = {{PEER_GRAPH_EVENT_STATUS_CHANGED, NULL}, {(PEER_GRAPH_EVENT_TYPE)42, NULL}};
    HPEEREVENT e, e2;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 2, r, &e), E_INVALIDARG);
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 0, r, &e), E_INVALIDARG);
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, NULL, &e), E_INVALIDARG);
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, r, NULL), E_INVALIDARG);
#ifndef _WIN32
    assert_int_equal(PeerGraphRegisterEvent(h, (HANDLE)1, 1, r, &e), E_INVALIDARG);
#endif
    assert_int_equal(PeerGraphRegisterEvent(NULL, NULL, 1, r, &e), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, r, &e), S_OK);
    r[0].eventType = PEER_GRAPH_EVENT_PROPERTY_CHANGED;
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, r, &e2), S_OK);
    assert_int_equal(PeerGraphGetEventData(e, &d), PEER_S_NO_EVENT_DATA);
    assert_null(d);
    assert_int_equal(PeerGraphGetEventData(e, NULL), E_INVALIDARG);
    /* listening is a status change: only e sees it */
    tu_listen(h);
    assert_int_equal(PeerGraphGetEventData(e, &d), S_OK);
    assert_int_equal(d->eventType, PEER_GRAPH_EVENT_STATUS_CHANGED);
    assert_int_equal(d->dwStatus, PEER_GRAPH_STATUS_LISTENING | PEER_GRAPH_STATUS_SYNCHRONIZED);
    PeerGraphFreeData(d);
    assert_int_equal(PeerGraphGetEventData(e, &d), PEER_S_NO_EVENT_DATA);
    assert_int_equal(PeerGraphGetEventData(e2, &d), PEER_S_NO_EVENT_DATA);
    assert_int_equal(PeerGraphUnregisterEvent(e), S_OK);
    assert_int_equal(PeerGraphUnregisterEvent(e), PEER_E_EVENT_HANDLE_NOT_FOUND);
    assert_int_equal(PeerGraphGetEventData(e, &d), PEER_E_EVENT_HANDLE_NOT_FOUND);
    assert_int_equal(PeerGraphUnregisterEvent(NULL), E_INVALIDARG);
    /* Close frees the remaining registration */
    assert_int_equal(PeerGraphClose(h), S_OK);
    assert_int_equal(PeerGraphGetEventData(e2, &d), PEER_E_EVENT_HANDLE_NOT_FOUND);
}

#ifdef _WIN32
/* On Windows a registered event handle is signalled when an event is queued. */
static void test_win32_event_handle(void **st)
{
    HGRAPH h = tu_create(L"evh", L"alice");
    HANDLE ev = CreateEvent(NULL, FALSE, FALSE, NULL);
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_STATUS_CHANGED, NULL};
    HPEEREVENT e;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    assert_non_null(ev);
    assert_int_equal(PeerGraphRegisterEvent(h, ev, 1, &r, &e), S_OK);
    assert_int_equal(WaitForSingleObject(ev, 0), WAIT_TIMEOUT);
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_ANY, 0, 0), S_OK);
    assert_int_equal(WaitForSingleObject(ev, 0), WAIT_OBJECT_0);
    assert_int_equal(PeerGraphGetEventData(e, &d), S_OK);
    PeerGraphFreeData(d);
    assert_int_equal(PeerGraphUnregisterEvent(e), S_OK);
    CloseHandle(ev);
}
#endif

static void test_listen_arguments_and_node_info(void **st)
{
    HGRAPH h = tu_create(L"li", L"alice"), h2 = tu_create(L"li2", L"bob");
    PPEER_NODE_INFO ni;
    WORD port;
    (void)st;
    assert_int_equal(PeerGraphListen(h, 7, 0, 0), E_INVALIDARG);
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_LINKLOCAL, 0, 0), E_INVALIDARG);
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_GLOBAL, 3, 0), E_INVALIDARG);
    assert_int_equal(PeerGraphListen(NULL, 0, 0, 0), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphGetNodeInfo(h, 0, &ni), S_OK);
    assert_int_equal(ni->cAddresses, 0);
    assert_true(wcscmp(ni->pwzPeerId, L"alice") == 0);
    assert_true(ni->ullNodeId != 0);
    PeerGraphFreeData(ni);
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_GLOBAL, 0, 0), S_OK);
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_GLOBAL, 0, 0), PEER_E_ALREADY_LISTENING);
    assert_int_equal(PeerGraphGetNodeInfo(h, 0, &ni), S_OK);
    assert_int_equal(ni->cAddresses, 1);
    port = fake_net_port(&ni->pAddresses[0].sin6);
    assert_true(port >= 40000);
    assert_int_equal(ni->pAddresses[0].dwSize, sizeof(PEER_ADDRESS));
    PeerGraphFreeData(ni);
    /* a second graph shares the port */
    assert_int_equal(PeerGraphListen(h2, PEER_GRAPH_SCOPE_GLOBAL, 0, port), S_OK);
    assert_int_equal(PeerGraphGetNodeInfo(h2, 0, &ni), S_OK);
    assert_int_equal(fake_net_port(&ni->pAddresses[0].sin6), port);
    PeerGraphFreeData(ni);
    assert_int_equal(PeerGraphGetNodeInfo(h, 12345, &ni), PEER_E_NODE_NOT_FOUND);
    assert_int_equal(PeerGraphGetNodeInfo(h, 0, NULL), E_INVALIDARG);
    assert_int_equal(fake_net_open_sockets(), 1);
    assert_int_equal(PeerGraphClose(h), S_OK);
    assert_int_equal(fake_net_open_sockets(), 1); /* still shared by h2 */
    assert_int_equal(PeerGraphClose(h2), S_OK);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_connect_arguments(void **st)
{
    HGRAPH h = tu_create(L"ca", L"alice");
    PEER_ADDRESS a, self;
    ULONGLONG id;
    wchar_t longid[300];
    int i;
    (void)st;
    for (i = 0; i < 299; i++) longid[i] = L'p';
    longid[299] = 0;
    memset(&a, 0, sizeof a);
    a.dwSize = sizeof a;
    a.sin6 = fake_net_addr_loopback6(7000);
    assert_int_equal(PeerGraphConnect(h, NULL, NULL, &id), E_INVALIDARG);
    assert_int_equal(PeerGraphConnect(h, NULL, &a, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphConnect(h, longid, &a, &id), E_INVALIDARG);
    assert_int_equal(PeerGraphConnect(NULL, NULL, &a, &id), PEER_E_INVALID_GRAPH);
    a.dwSize = 3;
    assert_int_equal(PeerGraphConnect(h, NULL, &a, &id), E_INVALIDARG);
    a.dwSize = sizeof a;
    a.sin6.sin6_family = 0;
    assert_int_equal(PeerGraphConnect(h, NULL, &a, &id), E_INVALIDARG);
    a.sin6 = fake_net_addr_loopback6(0);
    assert_int_equal(PeerGraphConnect(h, NULL, &a, &id), E_INVALIDARG);
    a.sin6 = fake_net_addr_any(7000);
    assert_int_equal(PeerGraphConnect(h, NULL, &a, &id), E_INVALIDARG);
    self = tu_listen(h);
    assert_int_equal(PeerGraphConnect(h, NULL, &self, &id), PEER_E_CONNECT_SELF);
    /* in progress to the same address and peer: PEER_E_ALREADY_EXISTS */
    a.sin6 = fake_net_addr_loopback6(7000);
    assert_int_equal(PeerGraphConnect(h, L"bob", &a, &id), S_OK);
    assert_int_equal(PeerGraphConnect(h, L"bob", &a, &id), PEER_E_ALREADY_EXISTS);
    assert_int_equal(PeerGraphConnect(h, NULL, &a, &id), S_OK); /* another peer ID: allowed */
}

static void test_enumeration_api(void **st)
{
    HGRAPH h = tu_create(L"en", L"alice");
    HPEERENUM en;
    ULONG n = 5;
    PVOID *items = (PVOID *)1;
    (void)st;
    assert_int_equal(PeerGraphEnumConnections(h, 0, &en), E_INVALIDARG);
    assert_int_equal(PeerGraphEnumConnections(h, 8, &en), E_INVALIDARG);
    assert_int_equal(PeerGraphEnumConnections(h, PEER_CONNECTION_NEIGHBOR, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphEnumConnections(h, PEER_CONNECTION_NEIGHBOR | PEER_CONNECTION_DIRECT, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(n, 0);
    n = 5;
    assert_int_equal(PeerGraphGetNextItem(en, &n, &items), S_OK);
    assert_int_equal(n, 0);
    assert_null(items);
    assert_int_equal(PeerGraphGetNextItem(en, NULL, &items), E_INVALIDARG);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), PEER_E_NOT_FOUND);
    assert_int_equal(PeerGraphGetItemCount(en, &n), PEER_E_NOT_FOUND);
    assert_int_equal(PeerGraphEndEnumeration(NULL), E_INVALIDARG);
    /* Shutdown frees an enumeration left open (checked by ASan/valgrind) */
    assert_int_equal(PeerGraphEnumConnections(h, PEER_CONNECTION_NEIGHBOR, &en), S_OK);
}

static void test_poll_fds_and_deadline(void **st)
{
    HGRAPH h = tu_create(L"pf", L"alice");
    PEER_POLL_FD fds[4];
    ULONG n;
    ULONGLONG d;
    PEER_ADDRESS a;
    ULONGLONG id;
    (void)st;
    /* a new graph has timers to run (expiry, database sync): call now */
    assert_int_equal(PeerGraphGetPollFds(NULL, 0, &n, &d), S_OK);
    assert_int_equal(n, 0);
    assert_true(d <= fake_net_now());
    tu_pump(1, 1);
    assert_int_equal(PeerGraphGetPollFds(NULL, 0, &n, &d), S_OK);
    assert_true(d > fake_net_now() && d != PEER_NO_DEADLINE); /* next: the Graph Info refresh */
    assert_int_equal(PeerGraphGetPollFds(NULL, 1, &n, &d), E_INVALIDARG);
    assert_int_equal(PeerGraphGetPollFds(fds, 4, NULL, &d), E_INVALIDARG);
    {
        ULONGLONG d2 = 0;
        assert_int_equal(PeerGraphGetPollFds(NULL, 0, NULL, &d2), S_OK); /* the deadline only */
        assert_true(d2 == d);
    }
    assert_int_equal(PeerGraphGetPollFds(NULL, 0, NULL, NULL), E_INVALIDARG);
    tu_listen(h);
    assert_int_equal(PeerGraphGetPollFds(fds, 4, &n, &d), S_OK);
    assert_int_equal(n, 1);
    assert_int_equal(fds[0].dwEvents, PEER_POLL_READ);
    memset(&a, 0, sizeof a);
    a.dwSize = sizeof a;
    a.sin6 = fake_net_addr_loopback6(7001); /* nothing listens: refused */
    assert_int_equal(PeerGraphConnect(h, NULL, &a, &id), S_OK);
    assert_int_equal(PeerGraphGetPollFds(fds, 1, &n, &d), E_NOT_SUFFICIENT_BUFFER);
    assert_int_equal(n, 2);
    assert_true(d <= fake_net_now()); /* work pending: call now */
    assert_int_equal(PeerGraphService(NULL, 5, 0), E_INVALIDARG);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_startup_version_and_counting, setup, teardown),
        cmocka_unit_test_setup_teardown(test_not_initialized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_create_duplicate_delete_open, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_database, setup, teardown),
        cmocka_unit_test_setup_teardown(test_properties_set, setup, teardown),
        cmocka_unit_test_setup_teardown(test_events_registration, setup, teardown),
#ifdef _WIN32
        cmocka_unit_test_setup_teardown(test_win32_event_handle, setup, teardown),
#endif
        cmocka_unit_test_setup_teardown(test_listen_arguments_and_node_info, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_enumeration_api, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_fds_and_deadline, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
