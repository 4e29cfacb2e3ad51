/*
 * test_security.c - the graph security providers on the fake network and the
 * synthetic clock: TLS-PSK and certificate links between graphs, every
 * authentication failure with its own reason (wrong secret, untrusted,
 * expired and misnamed certificates, graphs secured differently), the
 * security interface's argument checks, handshakes with a forced
 * WANT_READ/WANT_WRITE before every BIO operation and one byte per socket
 * call, tampered ciphertext (that link dropped, others fine), a test-side
 * mbedTLS peer, and a 10-node secured graph replicating records.
 */
#include "rawpeer.h"
#include "tlsutil.h"
#include "rawtls.h"
#include <mbedtls/ssl.h>

static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

/* ------------------------------------------------------------------------- */
/* helpers                                                                   */
/* ------------------------------------------------------------------------- */

static int auth_failed[8]; /* pfnAuthFailed calls, by pvContext index */
static HRESULT CALLBACK on_auth_failed(HGRAPH h, PVOID ctx)
{
    (void)h;
    auth_failed[(intptr_t)ctx]++;
    return S_OK;
}

static PEER_SECURITY_INTERFACE psk(const char *secret, int ctx)
{
    PEER_SECURITY_INTERFACE s = tu_sec_psk(secret);
    s.pvContext = (PVOID)(intptr_t)ctx;
    s.pfnAuthFailed = on_auth_failed;
    return s;
}


static ULONG record_count(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0;
    assert_int_equal(PeerGraphEnumRecords(h, NULL, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    return n;
}

static const GUID T_APP = {0x5ec0a11d, 0x1, 0x2, {1, 2, 3, 4, 5, 6, 7, 8}};

static GUID add_record(HGRAPH h, const char *payload)
{
    PEER_RECORD r;
    GUID id;
    FILETIME exp;
    ULONGLONG t;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = T_APP;
    r.data.cbData = (ULONG)strlen(payload);
    r.data.pbData = (PBYTE)payload;
    t = 134116992000000000ULL + fake_net_now() * 10000ULL + 3600ULL * 10000000ULL; /* an hour from now (fake UTC) */
    exp.dwLowDateTime = (DWORD)t;
    exp.dwHighDateTime = (DWORD)(t >> 32);
    assert_int_equal(PeerGraphUniversalTimeToPeerTime(h, &exp, &r.ftExpiration), S_OK);
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    return id;
}

static int has_record(HGRAPH h, const GUID *id, const char *payload)
{
    PPEER_RECORD r = NULL;
    int ok;
    if (PeerGraphGetRecord(h, id, &r) != S_OK) return 0;
    ok = r->data.cbData == strlen(payload) && !memcmp(r->data.pbData, payload, r->data.cbData);
    PeerGraphFreeData(r);
    return ok;
}


/* Two secured graphs: A creates and listens, B opens and connects; a record
 * from each end reaches the other and application data flows both ways. */
static void pair_works(PEER_SECURITY_INTERFACE *sa, PEER_SECURITY_INTERFACE *sb)
{
    HGRAPH a = tu_create_sec(L"sec-graph", L"Alice", sa);
    HGRAPH b = tu_open_sec(L"sec-graph", L"Bob", sb);
    HPEEREVENT eb = tu_register_all(b);
    PEER_ADDRESS la = tu_listen(a);
    HRESULT why = S_OK;
    GUID ra, rb;
    PPEER_GRAPH_EVENT_DATA d;
    ULONGLONG conn;
    static const GUID dt = {0xda7a, 0, 0, {0}};
    int got = 0, i;
    ra = add_record(a, "from alice, secret stuff");
    assert_int_equal(tu_connect_outcome(b, eb, &la, L"Alice", &why), PEER_CONNECTED);
    tu_wait_sync(b);
    assert_true(has_record(b, &ra, "from alice, secret stuff"));
    rb = add_record(b, "from bob");
    tu_pump(20, 5);
    assert_true(has_record(a, &rb, "from bob"));
    /* data on the neighbor link, from A's side */
    {
        HPEERENUM en;
        ULONG n = 1;
        PEER_CONNECTION_INFO **ci;
        assert_int_equal(PeerGraphEnumConnections(a, PEER_CONNECTION_NEIGHBOR, &en), S_OK);
        assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&ci), S_OK);
        assert_int_equal(n, 1);
        conn = ci[0]->ullConnectionId;
        assert_true(wcscmp(ci[0]->pwzPeerId, L"Bob") == 0);
        PeerGraphFreeData(ci);
        PeerGraphEndEnumeration(en);
    }
    assert_int_equal(PeerGraphSendData(a, conn, &dt, 11, "hello, bob!"), S_OK);
    for (i = 0; i < 50 && !got; i++) {
        tu_pump(1, 5);
        while ((d = tu_event(eb, PEER_GRAPH_EVENT_INCOMING_DATA)) != NULL) {
            assert_int_equal(d->incomingData.data.cbData, 11);
            assert_memory_equal(d->incomingData.data.pbData, "hello, bob!", 11);
            got = 1;
            PeerGraphFreeData(d);
        }
    }
    assert_true(got);
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_pump(10, 300);
}

/* ------------------------------------------------------------------------- */
/* arguments                                                                 */
/* ------------------------------------------------------------------------- */

static HRESULT create_with(PEER_SECURITY_INTERFACE *s, const wchar_t *peer)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h = NULL;
    HRESULT hr;
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)L"args";
    p.pwzCreatorId = (PWSTR)peer;
    PeerGraphDelete(L"args", peer, L"argsdb");
    hr = PeerGraphCreate(&p, L"argsdb", s, &h);
    if (SUCCEEDED(hr)) {
        assert_int_equal(PeerGraphClose(h), S_OK);
        assert_int_equal(PeerGraphDelete(L"args", peer, L"argsdb"), S_OK);
    }
    return hr;
}

static HRESULT CALLBACK v_ok(HGRAPH h, PVOID c, PPEER_RECORD r, PEER_RECORD_CHANGE_TYPE t)
{
    (void)h, (void)c, (void)r, (void)t;
    return S_OK;
}

static void test_interface_arguments(void **st)
{
    PEER_SECURITY_INTERFACE s = tu_sec_psk("secret");
    PEER_TLS_CERT_INFO ci;
    tu_cred ca, bob, other;
    (void)st;
    assert_int_equal(create_with(&s, L"Bob"), S_OK);
    s.dwSize = sizeof s - 1;
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_psk("secret");
    s.pwzSspFilename = (PWSTR)L"c:\\windows\\system32\\schannel.dll"; /* nothing is loaded from files */
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_psk("secret");
    s.pwzPackageName = (PWSTR)L"Kerberos";
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_psk("secret");
    s.cbSecurityInfo = 0; /* an empty secret */
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s.cbSecurityInfo = PEER_MAX_SECRET_SIZE + 1;
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_psk("secret");
    s.pbSecurityInfo = NULL;
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_psk("secret");
    s.pfnValidateRecord = v_ok; /* without pfnSecureRecord */
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    /* no package: record callbacks only, no security info */
    memset(&s, 0, sizeof s);
    s.dwSize = sizeof s;
    assert_int_equal(create_with(&s, L"Bob"), S_OK);
    s.cbSecurityInfo = 3;
    s.pbSecurityInfo = (PBYTE) "abc";
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);

    /* certificates */
    tu_ca(&ca, "graph ca");
    tu_node_cert(&bob, "Bob", &ca, "graph ca");
    tu_node_cert(&other, "Carol", &ca, "graph ca");
    s = tu_sec_cert(&ci, &ca, &bob);
    assert_int_equal(create_with(&s, L"Bob"), S_OK);
    assert_int_equal(create_with(&s, L"Dave"), PEER_E_INVALID_CREDENTIAL_INFO); /* the certificate names Bob */
    ci.pszKeyPem = other.key; /* not Bob's key */
    assert_int_equal(create_with(&s, L"Bob"), PEER_E_INVALID_CREDENTIAL_INFO);
    s = tu_sec_cert(&ci, &ca, &bob);
    ci.pszCaPem = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
    assert_int_equal(create_with(&s, L"Bob"), PEER_E_INVALID_CREDENTIAL_INFO);
    s = tu_sec_cert(&ci, &ca, &bob);
    ci.pszCertPem = NULL;
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_cert(&ci, &ca, &bob);
    ci.dwSize = 4;
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    s = tu_sec_cert(&ci, &ca, &bob);
    s.cbSecurityInfo = 4;
    assert_int_equal(create_with(&s, L"Bob"), E_INVALIDARG);
    tu_cred_free(&ca);
    tu_cred_free(&bob);
    tu_cred_free(&other);
}

/* ------------------------------------------------------------------------- */
/* links                                                                     */
/* ------------------------------------------------------------------------- */

static void test_psk_link(void **st)
{
    PEER_SECURITY_INTERFACE sa = psk("correct horse battery staple", 0), sb = psk("correct horse battery staple", 1);
    (void)st;
    memset(auth_failed, 0, sizeof auth_failed);
    pair_works(&sa, &sb);
    assert_int_equal(auth_failed[0] + auth_failed[1], 0);
}

static void test_cert_link(void **st)
{
    tu_cred ca, alice, bob;
    PEER_TLS_CERT_INFO ia, ib;
    PEER_SECURITY_INTERFACE sa, sb;
    (void)st;
    tu_ca(&ca, "graph ca");
    tu_node_cert(&alice, "Alice", &ca, "graph ca");
    tu_node_cert(&bob, "Bob", &ca, "graph ca");
    sa = tu_sec_cert(&ia, &ca, &alice);
    sb = tu_sec_cert(&ib, &ca, &bob);
    pair_works(&sa, &sb);
    tu_cred_free(&ca);
    tu_cred_free(&alice);
    tu_cred_free(&bob);
}

/* A joins B's graph with sb; returns the reason of B's failure (and checks
 * that nothing of the graph was learned). */
static HRESULT join_fails(PEER_SECURITY_INTERFACE *sa, PEER_SECURITY_INTERFACE *sb)
{
    HGRAPH a = tu_create_sec(L"sec-graph", L"Alice", sa);
    HGRAPH b = tu_open_sec(L"sec-graph", L"Bob", sb);
    HPEEREVENT eb = tu_register_all(b);
    PEER_ADDRESS la = tu_listen(a);
    HRESULT why = S_OK;
    add_record(a, "members only");
    assert_int_equal(tu_connect_outcome(b, eb, &la, L"Alice", &why), PEER_CONNECTION_FAILED);
    tu_pump(10, 10);
    {   /* nothing was learned: B never synchronized */
        HPEERENUM en;
        DWORD stb = 0;
        assert_int_equal(PeerGraphGetStatus(b, &stb), S_OK);
        assert_false(stb & PEER_GRAPH_STATUS_SYNCHRONIZED);
        assert_int_equal(PeerGraphEnumRecords(b, NULL, NULL, &en), PEER_E_GRAPH_NOT_READY);
    }
    assert_int_equal(tu_neighbors(a), 0);
    assert_int_equal(tu_neighbors(b), 0);
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_pump(10, 300);
    return why;
}

static void test_psk_wrong_secret(void **st)
{
    PEER_SECURITY_INTERFACE sa = psk("the right secret", 0), sb = psk("a wrong secret", 1);
    (void)st;
    memset(auth_failed, 0, sizeof auth_failed);
    assert_int_equal(join_fails(&sa, &sb), PEER_E_INVALID_CREDENTIAL);
    assert_int_equal(auth_failed[0], 1); /* the responder */
    assert_int_equal(auth_failed[1], 1); /* the initiator */
}

static void test_secured_differently(void **st)
{
    PEER_SECURITY_INTERFACE sa = psk("secret", 0), none;
    tu_cred ca, bob;
    PEER_TLS_CERT_INFO ib;
    PEER_SECURITY_INTERFACE sb;
    (void)st;
    memset(&none, 0, sizeof none);
    none.dwSize = sizeof none; /* record callbacks only: plain links */
    memset(auth_failed, 0, sizeof auth_failed);
    /* a plain node knocking at a secured graph, and the other way round */
    assert_int_equal(join_fails(&sa, NULL), PEER_E_CONNECTION_NOT_AUTHENTICATED);
    assert_int_equal(auth_failed[0], 1);
    assert_int_equal(join_fails(NULL, &sa), PEER_E_CONNECTION_NOT_AUTHENTICATED);
    assert_int_equal(join_fails(&none, &sa), PEER_E_CONNECTION_NOT_AUTHENTICATED);
    /* PSK against certificates: no common suite */
    tu_ca(&ca, "graph ca");
    tu_node_cert(&bob, "Bob", &ca, "graph ca");
    sb = tu_sec_cert(&ib, &ca, &bob);
    assert_int_equal(join_fails(&sa, &sb), PEER_E_CONNECTION_NOT_AUTHENTICATED);
    tu_cred_free(&ca);
    tu_cred_free(&bob);
}

static void test_cert_failures(void **st)
{
    tu_cred ca, ca2, alice, bob, bob_other_ca, bob_expired, bob_future;
    PEER_TLS_CERT_INFO ia, ib;
    PEER_SECURITY_INTERFACE sa, sb;
    (void)st;
    tu_ca(&ca, "graph ca");
    tu_ca(&ca2, "another ca");
    tu_node_cert(&alice, "Alice", &ca, "graph ca");
    tu_node_cert(&bob, "Bob", &ca, "graph ca");
    tu_node_cert(&bob_other_ca, "Bob", &ca2, "another ca");
    tu_cert(&bob_expired, "Bob", &ca, "graph ca", "20200101000000", "20210101000000");
    tu_cert(&bob_future, "Bob", &ca, "graph ca", "20900101000000", "20991231235959");
    sa = tu_sec_cert(&ia, &ca, &alice);
    sa.pfnAuthFailed = on_auth_failed;
    memset(auth_failed, 0, sizeof auth_failed);

    /* Bob's certificate is from another CA (Bob trusts the graph CA) */
    sb = tu_sec_cert(&ib, &ca, &bob_other_ca);
    assert_int_equal(join_fails(&sa, &sb), PEER_E_CERTIFICATE_NOT_TRUSTED);
    assert_int_equal(auth_failed[0], 1);
    /* Bob trusts another CA: Alice's certificate is the untrusted one */
    sb = tu_sec_cert(&ib, &ca2, &bob_other_ca);
    assert_int_equal(join_fails(&sa, &sb), PEER_E_CERTIFICATE_NOT_TRUSTED);
    /* expired */
    sb = tu_sec_cert(&ib, &ca, &bob_expired);
    assert_int_equal(join_fails(&sa, &sb), PEER_E_INVALID_TIME_PERIOD);
    assert_int_equal(auth_failed[0], 3);
    /* not valid yet: our own check says so; the remote's alert is generic */
    sb = tu_sec_cert(&ib, &ca, &bob_future);
    {
        HRESULT hr = join_fails(&sa, &sb);
        assert_true(hr == PEER_E_INVALID_TIME_PERIOD || hr == PEER_E_CONNECTION_NOT_AUTHENTICATED);
    }
    tu_cred_free(&ca);
    tu_cred_free(&ca2);
    tu_cred_free(&alice);
    tu_cred_free(&bob);
    tu_cred_free(&bob_other_ca);
    tu_cred_free(&bob_expired);
    tu_cred_free(&bob_future);
}

/* ------------------------------------------------------------------------- */
/* a test-side mbedTLS peer on a raw fake-network socket                     */
/* ------------------------------------------------------------------------- */


/* The outcome event of connection id (pumping a little first). */
static HRESULT conn_failure(HPEEREVENT e, ULONGLONG id)
{
    PPEER_GRAPH_EVENT_DATA d;
    int i;
    for (i = 0; i < 100; i++) {
        tu_pump(1, 5);
        while ((d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            if (d->connectionChangeData.ullConnectionId == id && d->connectionChangeData.status == PEER_CONNECTION_FAILED) {
                HRESULT hr = d->connectionChangeData.hrConnectionFailedReason;
                PeerGraphFreeData(d);
                return hr;
            }
            assert_int_not_equal(d->connectionChangeData.status, PEER_CONNECTED);
            PeerGraphFreeData(d);
        }
    }
    fail_msg("no failure event");
    return S_OK;
}

/* A member whose certificate names another peer than the one it claims. */
static void test_cert_misnamed_peer(void **st)
{
    tu_cred ca, alice, mallory;
    PEER_TLS_CERT_INFO ia;
    PEER_SECURITY_INTERFACE sa;
    HGRAPH a;
    HPEEREVENT ea;
    PEER_ADDRESS la;
    raw_tls t;
    msg m;
    rxbuf rx;
    PEER_SOCKET s, l;
    SOCKADDR_IN6 ra;
    ULONGLONG id;
    (void)st;
    tu_ca(&ca, "graph ca");
    tu_node_cert(&alice, "Alice", &ca, "graph ca");
    tu_node_cert(&mallory, "Mallory", &ca, "graph ca");
    sa = tu_sec_cert(&ia, &ca, &alice);
    sa.pfnAuthFailed = on_auth_failed;
    sa.pvContext = (PVOID)(intptr_t)2;
    memset(auth_failed, 0, sizeof auth_failed);
    a = tu_create_sec(L"sec-graph", L"Alice", &sa);
    ea = tu_register_all(a);
    la = tu_listen(a);

    /* 1. Mallory's certificate, AUTH_INFO says Bob: the responder refuses */
    s = fake_net_raw_connect(&la.sin6);
    assert_true(s != PEER_INVALID_SOCKET);
    m_auth(&m, 1, 0x41, "sec-graph", "Bob", NULL); /* EXT_REASONS | EXT_TLS */
    send_msg(s, &m);
    raw_tls_init(&t, s, 0, &ca, &mallory, NULL, 0);
    assert_int_equal(raw_tls_handshake(&t), MBEDTLS_ERR_SSL_FATAL_ALERT_MESSAGE);
    assert_int_equal(auth_failed[2], 1);
    raw_tls_free(&t);
    fake_net_raw_close(s);
    tu_pump(5, 10);
    assert_int_equal(tu_neighbors(a), 0);

    /* 2. the library asks for Carol; the responder's certificate names
     * Mallory: refused inside the handshake */
    l = raw_node(&ra);
    s = raw_accept_auth(a, l, &ra, L"Carol", &id, &rx);
    raw_tls_init(&t, s, 1, &ca, &mallory, rx.b + rx.off, rx.n - rx.off);
    assert_true(raw_tls_handshake(&t) != 0);
    assert_int_equal(conn_failure(ea, id), PEER_E_INVALID_PEER_NAME);
    assert_int_equal(auth_failed[2], 2);
    raw_tls_free(&t);
    fake_net_raw_close(s);

    /* 3. no peer ID asked for: the handshake completes, then WELCOME says
     * Carol while the certificate says Mallory */
    s = raw_accept_auth(a, l, &ra, NULL, &id, &rx);
    raw_tls_init(&t, s, 1, &ca, &mallory, rx.b + rx.off, rx.n - rx.off);
    assert_int_equal(raw_tls_handshake(&t), 0);
    assert_int_equal(raw_tls_recv_msg(&t, &m), 1);
    assert_int_equal(m.b[5], 2); /* CONNECT, inside TLS */
    m_welcome(&m, 0x1234, 0, NULL, 0, "Carol", 0);
    raw_tls_send_msg(&t, &m);
    assert_int_equal(conn_failure(ea, id), PEER_E_INVALID_PEER_NAME);
    assert_int_equal(auth_failed[2], 3);
    raw_tls_free(&t);
    fake_net_raw_close(s);

    /* 4. the same, but WELCOME says Mallory: a member */
    s = raw_accept_auth(a, l, &ra, NULL, &id, &rx);
    raw_tls_init(&t, s, 1, &ca, &mallory, rx.b + rx.off, rx.n - rx.off);
    assert_int_equal(raw_tls_handshake(&t), 0);
    assert_int_equal(raw_tls_recv_msg(&t, &m), 1);
    m_welcome(&m, 0x1234, 0, NULL, 0, "Mallory", 0);
    raw_tls_send_msg(&t, &m);
    tu_pump(5, 5);
    assert_int_equal(tu_neighbors(a), 1);
    raw_tls_free(&t);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
    tu_pump(5, 5);

    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_cred_free(&ca);
    tu_cred_free(&alice);
    tu_cred_free(&mallory);
}

/* ------------------------------------------------------------------------- */
/* forced WANT_READ / WANT_WRITE, one byte per socket call                   */
/* ------------------------------------------------------------------------- */

static void set_env(const char *kv)
{
#ifdef _WIN32
    _putenv(kv);
#else
    putenv((char *)kv);
#endif
}

static void test_forced_want_every_operation(void **st)
{
    PEER_SECURITY_INTERFACE sa = psk("nbio secret", 0), sb = psk("nbio secret", 1);
    tu_cred ca, alice, bob;
    PEER_TLS_CERT_INFO ia, ib;
    (void)st;
    tu_stop_fake();
    set_env("P2PGRAPH_TLS_NBIO=1"); /* read at Startup */
    tu_start_fake();
    fake_net_set_max_io(1);
    memset(auth_failed, 0, sizeof auth_failed);
    pair_works(&sa, &sb);
    tu_ca(&ca, "graph ca");
    tu_node_cert(&alice, "Alice", &ca, "graph ca");
    tu_node_cert(&bob, "Bob", &ca, "graph ca");
    sa = tu_sec_cert(&ia, &ca, &alice);
    sb = tu_sec_cert(&ib, &ca, &bob);
    pair_works(&sa, &sb);
    /* and a failure still tells its reason */
    sa = psk("right", 0);
    sb = psk("wrong", 1);
    assert_int_equal(join_fails(&sa, &sb), PEER_E_INVALID_CREDENTIAL);
    tu_stop_fake();
    set_env("P2PGRAPH_TLS_NBIO=0");
    tu_start_fake();
    tu_cred_free(&ca);
    tu_cred_free(&alice);
    tu_cred_free(&bob);
}

/* ------------------------------------------------------------------------- */
/* tampering: a relay between two members flips one bit                     */
/* ------------------------------------------------------------------------- */

static unsigned char seen[1 << 20];
static size_t seen_n;

/* Moves what x's peer sent to y; flips the last bit of the first chunk of
 * over 8 bytes when *flip. */
static void relay_dir(PEER_SOCKET x, PEER_SOCKET y, int *flip)
{
    static unsigned char buf[65536];
    size_t k;
    while ((k = fake_net_raw_read(x, buf, sizeof buf)) > 0) {
        if (seen_n + k <= sizeof seen) { memcpy(seen + seen_n, buf, k); seen_n += k; }
        if (flip && *flip && k > 8) { buf[k - 1] ^= 1; *flip = 0; }
        fake_net_raw_write(y, buf, k);
    }
}

static int contains(const unsigned char *h, size_t n, const char *needle)
{
    size_t k = strlen(needle), i;
    for (i = 0; i + k <= n; i++)
        if (!memcmp(h + i, needle, k)) return 1;
    return 0;
}

static void test_tampered_ciphertext(void **st)
{
    PEER_SECURITY_INTERFACE sa = psk("tamper", 0), sb = psk("tamper", 1), sc = psk("tamper", 2);
    HGRAPH a, b, c;
    HPEEREVENT ea, eb, ec;
    PEER_ADDRESS la, lr;
    PEER_SOCKET l, s1, s2;
    SOCKADDR_IN6 ra;
    HRESULT why;
    GUID id;
    ULONGLONG cid = 0;
    int flip = 0, i, lost = 0;
    PPEER_GRAPH_EVENT_DATA d;
    static const GUID dt = {0xda7a, 0, 0, {0}};
    static unsigned char big[3000];
    (void)st;
    seen_n = 0;
    a = tu_create_sec(L"sec-graph", L"Alice", &sa);
    ea = tu_register_all(a);
    la = tu_listen(a);
    id = add_record(a, "TOPSECRET-PAYLOAD");
    c = tu_open_sec(L"sec-graph", L"Carol", &sc);
    ec = tu_register_all(c);
    assert_int_equal(tu_connect_outcome(c, ec, &la, L"Alice", &why), PEER_CONNECTED);
    /* B reaches A through the relay */
    b = tu_open_sec(L"sec-graph", L"Bob", &sb);
    eb = tu_register_all(b);
    l = raw_node(&ra);
    lr = peer_addr(ra);
    {
        ULONGLONG bid;
        assert_int_equal(PeerGraphConnect(b, L"Alice", &lr, &bid), S_OK);
        tu_pump(2, 5);
        s1 = fake_net_raw_accept(l);
        assert_true(s1 != PEER_INVALID_SOCKET);
        s2 = fake_net_raw_connect(&la.sin6);
        assert_true(s2 != PEER_INVALID_SOCKET);
    }
    for (i = 0; i < 100; i++) {
        relay_dir(s1, s2, NULL);
        relay_dir(s2, s1, NULL);
        tu_pump(1, 5);
    }
    assert_true(has_record(b, &id, "TOPSECRET-PAYLOAD"));
    assert_false(contains(seen, seen_n, "TOPSECRET")); /* the record crossed the relay encrypted */
    assert_false(contains(seen, seen_n, "Carol"));     /* so did the referrals and presence */
    assert_int_equal(tu_neighbors(a), 2);
    /* B's link to A carries data; the relay flips one bit of it */
    {
        HPEERENUM en;
        ULONG n = 1;
        PEER_CONNECTION_INFO **ci;
        assert_int_equal(PeerGraphEnumConnections(b, PEER_CONNECTION_NEIGHBOR, &en), S_OK);
        assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&ci), S_OK);
        assert_int_equal(n, 1);
        cid = ci[0]->ullConnectionId;
        PeerGraphFreeData(ci);
        PeerGraphEndEnumeration(en);
    }
    memset(big, 'x', sizeof big);
    assert_int_equal(PeerGraphSendData(b, cid, &dt, sizeof big, big), S_OK);
    tu_pump(1, 1);
    flip = 1;
    for (i = 0; i < 40; i++) {
        relay_dir(s1, s2, &flip);
        relay_dir(s2, s1, NULL);
        if (fake_net_raw_eof(s2)) fake_net_raw_close(s1), s1 = PEER_INVALID_SOCKET;
        tu_pump(1, 5);
        if (s1 == PEER_INVALID_SOCKET) break;
    }
    assert_int_equal(flip, 0);
    /* A dropped that link, with the reason; its link to C is fine */
    while ((d = tu_event(ea, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
        if (d->connectionChangeData.status == PEER_DISCONNECTED) {
            assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_PROTOCOL_ERROR);
            lost++;
        }
        PeerGraphFreeData(d);
    }
    assert_int_equal(lost, 1);
    while ((d = tu_event(ea, PEER_GRAPH_EVENT_INCOMING_DATA)) != NULL) {
        fail_msg("tampered data was delivered");
        PeerGraphFreeData(d);
    }
    assert_int_equal(tu_neighbors(a) >= 1, 1);
    {
        GUID id2 = add_record(a, "after the attack");
        tu_pump(10, 5);
        assert_true(has_record(c, &id2, "after the attack"));
    }
    if (s1 != PEER_INVALID_SOCKET) fake_net_raw_close(s1);
    fake_net_raw_close(s2);
    fake_net_raw_close(l);
    (void)eb;
    assert_int_equal(PeerGraphClose(b), S_OK);
    assert_int_equal(PeerGraphClose(c), S_OK);
    assert_int_equal(PeerGraphClose(a), S_OK);
    tu_pump(10, 300);
}

/* ------------------------------------------------------------------------- */
/* a secured graph of 10 nodes                                               */
/* ------------------------------------------------------------------------- */

static void test_ten_secured_nodes(void **st)
{
    enum { N = 10 };
    HGRAPH g[N];
    GUID ids[N];
    PEER_ADDRESS seed;
    PEER_SECURITY_INTERFACE s[N];
    wchar_t peer[N][16];
    char payload[N][32];
    int i, j;
    (void)st;
    memset(auth_failed, 0, sizeof auth_failed);
    for (i = 0; i < N; i++) {
        s[i] = psk("ten nodes", 0);
        swprintf(peer[i], 16, L"node%d", i);
        snprintf(payload[i], 32, "record of node %d", i);
    }
    g[0] = tu_create_sec(L"ten", peer[0], &s[0]);
    seed = tu_listen(g[0]);
    ids[0] = add_record(g[0], payload[0]);
    for (i = 1; i < N; i++) {
        HPEEREVENT e;
        HRESULT why;
        g[i] = tu_open_sec(L"ten", peer[i], &s[i]);
        e = tu_register_all(g[i]);
        assert_int_equal(tu_connect_outcome(g[i], e, &seed, NULL, &why), PEER_CONNECTED);
        tu_wait_sync(g[i]);
        tu_listen(g[i]);
        ids[i] = add_record(g[i], payload[i]);
        assert_int_equal(PeerGraphUnregisterEvent(e), S_OK);
    }
    tu_pump(200, 20);
    for (i = 0; i < N; i++) {
        assert_true(tu_neighbors(g[i]) >= 1);
        for (j = 0; j < N; j++) assert_true(has_record(g[i], &ids[j], payload[j]));
        assert_int_equal(record_count(g[i]), N);
    }
    assert_int_equal(auth_failed[0], 0);
    for (i = N - 1; i >= 0; i--) assert_int_equal(PeerGraphClose(g[i]), S_OK);
    tu_pump(10, 300);
}

/* ------------------------------------------------------------------------- */
/* record callbacks: secure, validate (accept, reject, defer), re-validate   */
/* ------------------------------------------------------------------------- */

typedef struct rec_ctx {
    int secured[4], validated[4];   /* calls by PEER_RECORD_CHANGE_TYPE */
    int freed;
    int defer_ok;                   /* 1: "LATER" records are accepted now */
    int reject_hello;               /* 1: "hello" is rejected (reload test) */
    int reentry;                    /* what an API call made from a callback returned */
    PEER_DATA out;
    char mark[64];
} rec_ctx;

static int starts(const PEER_RECORD *r, const char *p)
{
    size_t k = strlen(p);
    return r->data.cbData >= k && !memcmp(r->data.pbData, p, k);
}

static HRESULT CALLBACK cb_secure(HGRAPH h, PVOID ctx, PPEER_RECORD r, PEER_RECORD_CHANGE_TYPE ct, PPEER_DATA *out)
{
    rec_ctx *c = (rec_ctx *)ctx;
    DWORD st;
    assert_true(ct >= 1 && ct <= 3);
    c->secured[ct]++;
    c->reentry = PeerGraphGetStatus(h, &st);
    if (starts(r, "FORBIDDEN")) return PEER_E_NOT_AUTHORIZED;
    /* the "signature": creator, version and change type */
    snprintf(c->mark, sizeof c->mark, "sig:%ls:%lu:%d", r->pwzCreatorId, (unsigned long)r->dwVersion, (int)ct);
    c->out.cbData = (ULONG)strlen(c->mark);
    c->out.pbData = (PBYTE)c->mark;
    *out = &c->out;
    return S_OK;
}

static HRESULT CALLBACK cb_free(HGRAPH h, PVOID ctx, PPEER_DATA d)
{
    rec_ctx *c = (rec_ctx *)ctx;
    (void)h;
    assert_ptr_equal(d, &c->out);
    c->freed++;
    return S_OK;
}

static HRESULT CALLBACK cb_validate(HGRAPH h, PVOID ctx, PPEER_RECORD r, PEER_RECORD_CHANGE_TYPE ct)
{
    rec_ctx *c = (rec_ctx *)ctx;
    char want[64];
    DWORD st;
    assert_true(ct >= 1 && ct <= 3);
    c->validated[ct]++;
    c->reentry = PeerGraphGetStatus(h, &st);
    if (r->type.Data1 != T_APP.Data1) return S_OK; /* the graph's own records: not ours to judge */
    snprintf(want, sizeof want, "sig:%ls:%lu:%d", r->pwzCreatorId, (unsigned long)r->dwVersion,
             (int)((r->dwFlags & PEER_RECORD_FLAG_DELETED) ? PEER_RECORD_DELETED : r->dwVersion > 1 ? PEER_RECORD_UPDATED : PEER_RECORD_ADDED));
    if (r->securityData.cbData != strlen(want) || memcmp(r->securityData.pbData, want, strlen(want))) return PEER_E_INVALID_RECORD;
    if (starts(r, "BAD")) return PEER_E_INVALID_RECORD;
    if (starts(r, "LATER") && !c->defer_ok) return PEER_E_DEFERRED_VALIDATION;
    if (starts(r, "hello") && c->reject_hello) return PEER_E_INVALID_RECORD;
    return S_OK;
}

static PEER_SECURITY_INTERFACE rec_sec(rec_ctx *c, const char *secret)
{
    PEER_SECURITY_INTERFACE s;
    if (secret) s = tu_sec_psk(secret);
    else { memset(&s, 0, sizeof s); s.dwSize = sizeof s; }
    s.pvContext = c;
    s.pfnSecureRecord = cb_secure;
    s.pfnValidateRecord = cb_validate;
    s.pfnFreeSecurityData = cb_free;
    return s;
}

static int record_events(HPEEREVENT e, PEER_RECORD_CHANGE_TYPE ct)
{
    PPEER_GRAPH_EVENT_DATA d;
    int n = 0;
    while ((d = tu_event(e, PEER_GRAPH_EVENT_RECORD_CHANGED)) != NULL) {
        if (d->recordChangeData.changeType == ct && d->recordChangeData.recordType.Data1 == T_APP.Data1) n++;
        PeerGraphFreeData(d);
    }
    return n;
}

static ULONG rejected(HGRAPH h)
{
    PEER_DATABASE_INFO di;
    memset(&di, 0, sizeof di);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
    return di.cRejectedRecords;
}

static void record_callbacks(const char *secret)
{
    rec_ctx ca, cb;
    PEER_SECURITY_INTERFACE sa, sb;
    HGRAPH a, b;
    HPEEREVENT eb;
    PEER_ADDRESS la;
    HRESULT why;
    GUID hello, bad, later, later2;
    PPEER_RECORD r;
    wchar_t dbb[32];
    memset(&ca, 0, sizeof ca);
    memset(&cb, 0, sizeof cb);
    sa = rec_sec(&ca, secret);
    sb = rec_sec(&cb, secret);
    a = tu_create_sec(L"rec-graph", L"Alice", &sa);
    assert_true(ca.secured[PEER_RECORD_ADDED] >= 1); /* the Graph Info record, published by Create */
    tu_dbname(dbb, 32);
    PeerGraphDelete(L"rec-graph", L"Bob", dbb);
    assert_int_equal(PeerGraphOpen(L"rec-graph", L"Bob", dbb, &sb, 0, NULL, &b), PEER_S_GRAPH_DATA_CREATED);
    eb = tu_register_all(b);
    la = tu_listen(a);
    hello = add_record(a, "hello");
    assert_int_equal(tu_connect_outcome(b, eb, &la, L"Alice", &why), PEER_CONNECTED);
    tu_wait_sync(b);
    tu_pump(10, 5);
    /* the record arrived with A's security data and passed B's validator */
    assert_int_equal(PeerGraphGetRecord(b, &hello, &r), S_OK);
    assert_int_equal(r->securityData.cbData, strlen("sig:Alice:1:1"));
    assert_memory_equal(r->securityData.pbData, "sig:Alice:1:1", r->securityData.cbData);
    PeerGraphFreeData(r);
    assert_true(cb.validated[PEER_RECORD_ADDED] >= 2); /* Graph Info, hello (and A's presence) */
    assert_int_equal(ca.freed, ca.secured[1] + ca.secured[2] + ca.secured[3]);
    assert_int_equal(ca.reentry, E_ACCESSDENIED); /* no API calls from inside a callback */
    assert_int_equal(cb.reentry, E_ACCESSDENIED);
    assert_int_equal(record_events(eb, PEER_RECORD_ADDED), 1);

    /* rejected: not stored, not passed on, counted */
    bad = add_record(a, "BAD apple");
    tu_pump(10, 5);
    assert_int_equal(PeerGraphGetRecord(b, &bad, &r), PEER_E_RECORD_NOT_FOUND);
    assert_true(rejected(b) >= 1);
    assert_int_equal(tu_neighbors(b), 1); /* the link stays */

    /* deferred: held back until PeerGraphValidateDeferredRecords */
    later = add_record(a, "LATER one");
    later2 = add_record(a, "LATER two");
    tu_pump(10, 5);
    assert_int_equal(PeerGraphGetRecord(b, &later, &r), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(PeerGraphValidateDeferredRecords(b, 0, NULL), S_OK); /* still deferred */
    assert_int_equal(PeerGraphGetRecord(b, &later, &r), PEER_E_RECORD_NOT_FOUND);
    cb.defer_ok = 1;
    assert_int_equal(PeerGraphValidateDeferredRecords(b, 1, &later2), S_OK); /* only that one */
    assert_int_equal(PeerGraphGetRecord(b, &later, &r), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(PeerGraphGetRecord(b, &later2, &r), S_OK);
    PeerGraphFreeData(r);
    assert_int_equal(PeerGraphValidateDeferredRecords(b, 0, NULL), S_OK);
    assert_int_equal(PeerGraphGetRecord(b, &later, &r), S_OK);
    PeerGraphFreeData(r);
    assert_int_equal(record_events(eb, PEER_RECORD_ADDED), 2);
    assert_int_equal(PeerGraphValidateDeferredRecords(b, 1, NULL), E_INVALIDARG);

    /* a change the secure callback refuses does not happen */
    {
        PEER_RECORD rr;
        GUID id;
        FILETIME exp;
        ULONGLONG t = 134116992000000000ULL + fake_net_now() * 10000ULL + 36000000000ULL;
        memset(&rr, 0, sizeof rr);
        rr.dwSize = sizeof rr;
        rr.type = T_APP;
        rr.data.cbData = 9;
        rr.data.pbData = (PBYTE) "FORBIDDEN";
        exp.dwLowDateTime = (DWORD)t;
        exp.dwHighDateTime = (DWORD)(t >> 32);
        assert_int_equal(PeerGraphUniversalTimeToPeerTime(a, &exp, &rr.ftExpiration), S_OK);
        assert_int_equal(PeerGraphAddRecord(a, &rr, &id), PEER_E_NOT_AUTHORIZED);
        assert_int_equal(record_count(a), 4);
    }

    /* update and delete are secured and validated with their change types */
    {
        PPEER_RECORD u;
        assert_int_equal(PeerGraphGetRecord(a, &hello, &u), S_OK);
        u->data.cbData = 6;
        u->data.pbData = (PBYTE) "hello2";
        assert_int_equal(PeerGraphUpdateRecord(a, u), S_OK);
        PeerGraphFreeData(u);
        assert_int_equal(ca.secured[PEER_RECORD_UPDATED], 1);
        tu_pump(10, 5);
        assert_int_equal(record_events(eb, PEER_RECORD_UPDATED), 1);
        assert_int_equal(PeerGraphDeleteRecord(a, &later, FALSE), S_OK);
        assert_int_equal(ca.secured[PEER_RECORD_DELETED], 1);
        tu_pump(10, 5);
        assert_int_equal(cb.validated[PEER_RECORD_DELETED], 1);
        assert_int_equal(PeerGraphGetRecord(b, &later, &r), PEER_E_RECORD_NOT_FOUND);
    }

    /* loading: B's validator runs on its database; a rejected record is not loaded */
    assert_int_equal(PeerGraphClose(a), S_OK);
    assert_int_equal(PeerGraphClose(b), S_OK);
    tu_pump(10, 300);
    memset(cb.validated, 0, sizeof cb.validated);
    cb.reject_hello = 1;
    assert_int_equal(PeerGraphOpen(L"rec-graph", L"Bob", dbb, &sb, 0, NULL, &b), S_OK);
    assert_true(cb.validated[PEER_RECORD_ADDED] >= 2);
    assert_int_equal(PeerGraphGetRecord(b, &hello, &r), PEER_E_RECORD_NOT_FOUND);
    assert_int_equal(PeerGraphGetRecord(b, &later2, &r), S_OK);
    PeerGraphFreeData(r);
    assert_int_equal(PeerGraphClose(b), S_OK);
    /* deferred at load: invisible until validated */
    cb.reject_hello = 0;
    cb.defer_ok = 0;
    assert_int_equal(PeerGraphOpen(L"rec-graph", L"Bob", dbb, &sb, 0, NULL, &b), S_OK);
    assert_int_equal(PeerGraphGetRecord(b, &later2, &r), PEER_E_RECORD_NOT_FOUND);
    cb.defer_ok = 1;
    assert_int_equal(PeerGraphValidateDeferredRecords(b, 0, NULL), S_OK);
    assert_int_equal(PeerGraphGetRecord(b, &later2, &r), S_OK);
    PeerGraphFreeData(r);
    assert_int_equal(PeerGraphClose(b), S_OK);
    PeerGraphDelete(L"rec-graph", L"Bob", dbb);
}

static void test_record_callbacks_plain_links(void **st) { (void)st; record_callbacks(NULL); }
static void test_record_callbacks_tls_links(void **st) { (void)st; record_callbacks("record secret"); }

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_interface_arguments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psk_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cert_link, setup, teardown),
        cmocka_unit_test_setup_teardown(test_psk_wrong_secret, setup, teardown),
        cmocka_unit_test_setup_teardown(test_secured_differently, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cert_failures, setup, teardown),
        cmocka_unit_test_setup_teardown(test_cert_misnamed_peer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forced_want_every_operation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tampered_ciphertext, setup, teardown),
        cmocka_unit_test_setup_teardown(test_ten_secured_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_callbacks_plain_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_record_callbacks_tls_links, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
