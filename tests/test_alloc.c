/*
 * test_alloc.c - allocation failure.  A test allocator (PeerGraphSetAllocator)
 * fails the N-th allocation of a scenario that goes through the connect,
 * synchronization and flooding paths (create, listen, open, connect, sync of
 * existing records, floods both ways, application data, enumerations,
 * close, shutdown), for every N from 1 to the number of allocations the
 * scenario makes: every API call returns S_OK or E_OUTOFMEMORY (or the
 * documented consequence of an earlier failure), nothing crashes, and after
 * PeerGraphShutdown no allocation is left (nothing leaks).  The same for a
 * secured (TLS-PSK) graph.  A second run fails every allocation from the
 * N-th on.
 */
#include "testalloc.h"

/* ---- the scenario -------------------------------------------------------- */

static int s_failed; /* an API call returned E_OUTOFMEMORY */

/* hr must be S_OK or E_OUTOFMEMORY, or one of the extra codes given. */
static int ok_or_oom(HRESULT hr, HRESULT alt1, HRESULT alt2, int line)
{
    if (hr == S_OK || hr == PEER_S_GRAPH_DATA_CREATED) return 1;
    if (hr == E_OUTOFMEMORY) { s_failed = 1; return 0; }
    if (hr == alt1 || hr == alt2) return 0;
    fail_msg("line %d: unexpected 0x%08lx (allocation %lld failed)", line, (unsigned long)(uint32_t)hr, a_fail);
    return 0;
}
#define OK(call) ok_or_oom((call), S_OK, S_OK, __LINE__)
#define OK2(call, a, b) ok_or_oom((call), (a), (b), __LINE__)

static const GUID T_REC = {0xa110c, 1, 2, {3, 4, 5, 6, 7, 8, 9, 10}};

static void add(HGRAPH h, const char *payload)
{
    PEER_RECORD r;
    GUID id;
    FILETIME exp;
    ULONGLONG t = 134116992000000000ULL + fake_net_now() * 10000ULL + 36000000000ULL;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = T_REC;
    r.data.cbData = (ULONG)strlen(payload);
    r.data.pbData = (PBYTE)payload;
    r.pwzAttributes = (PWSTR)L"<attributes><attribute name=\"n\" type=\"int\">7</attribute></attributes>";
    exp.dwLowDateTime = (DWORD)t;
    exp.dwHighDateTime = (DWORD)(t >> 32);
    if (!OK(PeerGraphUniversalTimeToPeerTime(h, &exp, &r.ftExpiration))) return;
    OK2(PeerGraphAddRecord(h, &r, &id), PEER_E_GRAPH_NOT_READY, S_OK);
}

static void pump(int n)
{
    int i;
    for (i = 0; i < n; i++) {
        fake_net_advance(10);
        OK(PeerGraphService(NULL, 0, fake_net_now()));
    }
}

static void drain(HPEEREVENT e)
{
    PPEER_GRAPH_EVENT_DATA d;
    HRESULT hr;
    if (!e) return;
    while ((hr = PeerGraphGetEventData(e, &d)) == S_OK) PeerGraphFreeData(d);
    assert_true(hr == PEER_S_NO_EVENT_DATA);
}

/* Returns the records B holds at the end (-1: could not enumerate). */
static int scenario(const char *secret)
{
    PEER_VERSION_DATA vd;
    PEER_GRAPH_PROPERTIES p;
    PEER_SECURITY_INTERFACE sec, *ps = NULL;
    PEER_GRAPH_EVENT_REGISTRATION reg[3] = {{PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, NULL},
                                           {PEER_GRAPH_EVENT_RECORD_CHANGED, NULL},
                                           {PEER_GRAPH_EVENT_INCOMING_DATA, NULL}};
    HGRAPH a = NULL, b = NULL;
    HPEEREVENT ea = NULL, eb = NULL;
    PEER_ADDRESS la;
    int have_addr = 0, records = -1;
    static const GUID dt = {0xda7a, 0, 0, {0}};
    if (secret) {
        memset(&sec, 0, sizeof sec);
        sec.dwSize = sizeof sec;
        sec.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_PSK;
        sec.cbSecurityInfo = (ULONG)strlen(secret);
        sec.pbSecurityInfo = (PBYTE)secret;
        ps = &sec;
    }
    fake_net_reset();
    assert_int_equal(PeerGraphSetNetShim(fake_net_shim()), S_OK);
    assert_int_equal(PeerGraphSetDatabaseDirectory(TU_DBDIR_W), S_OK);
    if (!OK(PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) return -1;

    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)L"alloc-graph";
    p.pwzCreatorId = (PWSTR)L"Alice";
    p.cPresenceMax = (ULONG)-1;
    if (OK2(PeerGraphCreate(&p, L"alloca", ps, &a), PEER_E_DATABASE_ACCESSDENIED, S_OK)) {
        PPEER_NODE_INFO ni;
        OK(PeerGraphRegisterEvent(a, NULL, 3, reg, &ea));
        add(a, "first record of alice");
        add(a, "second record of alice");
        if (OK(PeerGraphListen(a, PEER_GRAPH_SCOPE_ANY, 0, 0)) && OK(PeerGraphGetNodeInfo(a, 0, &ni))) {
            la = ni->pAddresses[0];
            memset(la.sin6.sin6_addr.s6_addr, 0, 16);
            la.sin6.sin6_addr.s6_addr[15] = 1;
            have_addr = 1;
            PeerGraphFreeData(ni);
        }
    }
    if (OK2(PeerGraphOpen(L"alloc-graph", L"Bob", L"allocb", ps, 0, NULL, &b), PEER_E_DATABASE_ACCESSDENIED,
            PEER_E_INVALID_DATABASE)) {
        ULONGLONG cid;
        OK(PeerGraphRegisterEvent(b, NULL, 3, reg, &eb));
        if (have_addr) OK(PeerGraphConnect(b, L"Alice", &la, &cid));
    }
    pump(30);
    drain(ea);
    drain(eb);
    if (a) add(a, "flooded from alice");
    if (b) add(b, "flooded from bob");
    pump(10);
    if (b) {
        HPEERENUM en;
        ULONG n = 0;
        if (OK2(PeerGraphEnumConnections(b, PEER_CONNECTION_NEIGHBOR, &en), S_OK, S_OK)) {
            PEER_CONNECTION_INFO **ci;
            ULONG k = 1;
            if (OK(PeerGraphGetNextItem(en, &k, (PVOID **)&ci))) {
                if (k) OK2(PeerGraphSendData(b, ci[0]->ullConnectionId, &dt, 5, "hello"), PEER_E_CONNECTION_NOT_FOUND, S_OK);
                PeerGraphFreeData(ci);
            }
            PeerGraphEndEnumeration(en);
        }
        if (OK2(PeerGraphEnumRecords(b, NULL, NULL, &en), PEER_E_GRAPH_NOT_READY, S_OK)) {
            if (OK(PeerGraphGetItemCount(en, &n))) records = (int)n;
            PeerGraphEndEnumeration(en);
        }
        if (OK2(PeerGraphSearchRecords(b, L"<peersearch><clause attrib=\"n\" type=\"int\" compare=\"equal\">7</clause></peersearch>", &en),
                PEER_E_GRAPH_NOT_READY, S_OK))
            PeerGraphEndEnumeration(en);
    }
    pump(5);
    drain(ea);
    drain(eb);
    if (b) OK(PeerGraphClose(b));
    if (a) OK(PeerGraphClose(a));
    pump(5);
    OK(PeerGraphShutdown());
    return records;
}

/* Deletes the scenario's databases (no failures injected). */
static void cleanup(void)
{
    PEER_VERSION_DATA vd;
    long long f = a_fail;
    a_fail = 0;
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK);
    PeerGraphDelete(L"alloc-graph", L"Alice", L"alloca");
    PeerGraphDelete(L"alloc-graph", L"Bob", L"allocb");
    assert_int_equal(PeerGraphShutdown(), S_OK);
    a_fail = f;
}

static void every_allocation(const char *secret, int sticky)
{
    long long total, n, step = 1, failures = 0;
    const char *e = getenv("P2PG_ALLOC_STEP"); /* valgrind runs take every k-th N */
    int full;
    tu_mkdir("build");
    tu_mkdir(TU_DBDIR_N);
    a_install();
    /* a clean run: how many allocations, and what success looks like */
    a_fail = 0;
    a_count = 0;
    cleanup();
    a_count = 0;
    a_live = 0;
    full = scenario(secret);
    total = a_count;
    assert_int_equal(a_live, 0);
    assert_int_equal(full, 4); /* B holds Alice's three records and its own */
    cleanup();
    if (e && atoi(e) > 1) step = atoi(e);
    a_sticky = sticky;
    for (n = 1; n <= total; n += step) {
        a_fail = n;
        a_count = 0;
        a_live = 0;
        s_failed = 0;
        scenario(secret);
        if (a_live != 0) fail_msg("failing allocation %lld of %lld leaked %lld blocks", n, total, a_live);
        failures += s_failed;
        cleanup();
    }
    a_fail = 0;
    a_sticky = 0;
    assert_int_equal(PeerGraphSetAllocator(NULL), S_OK);
    print_message("%s%s: %lld allocations, each failed in turn; %lld runs saw E_OUTOFMEMORY from the API\n",
                  secret ? "TLS-PSK graph" : "plain graph", sticky ? " (every one from N on)" : "", total, failures);
    assert_true(failures > 0); /* the API did report failures */
}

static void test_allocator_arguments(void **st)
{
    PEER_ALLOCATOR al;
    PEER_VERSION_DATA vd;
    (void)st;
    memset(&al, 0, sizeof al);
    assert_int_equal(PeerGraphSetAllocator(&al), E_INVALIDARG);
    al.dwSize = sizeof al;
    al.pfnAlloc = a_alloc;
    assert_int_equal(PeerGraphSetAllocator(&al), E_INVALIDARG); /* realloc and free missing */
    al.pfnRealloc = a_realloc;
    al.pfnFree = a_free;
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK);
    assert_int_equal(PeerGraphSetAllocator(&al), E_ACCESSDENIED); /* not while started */
    assert_int_equal(PeerGraphShutdown(), S_OK);
    assert_int_equal(PeerGraphSetAllocator(&al), S_OK);
    assert_int_equal(PeerGraphSetAllocator(NULL), S_OK);
}

static void test_every_allocation_plain(void **st) { (void)st; every_allocation(NULL, 0); }
static void test_every_allocation_tls(void **st) { (void)st; every_allocation("alloc secret", 0); }
static void test_all_allocations_from_n(void **st) { (void)st; every_allocation(NULL, 1); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_allocator_arguments),
        cmocka_unit_test(test_every_allocation_plain),
        cmocka_unit_test(test_every_allocation_tls),
        cmocka_unit_test(test_all_allocations_from_n),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
