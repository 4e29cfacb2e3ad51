/*
 * test_handshake.c - the MS-PPGRH handshake driven through the fake network
 * and the synthetic clock.  The test plays the remote peer byte by byte with
 * its own encoder (independent of the library's), or runs two library
 * graphs against each other.
 */
#include "testutil.h"

#include "rawpeer.h"

/* --------------------------------------------------------------- fixtures */
static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

/* Library graph h connects to the raw node; returns the accepted raw socket
 * after reading AUTH_INFO and CONNECT into a and c. */
static PEER_SOCKET connect_to_raw(HGRAPH h, const wchar_t *peer, PEER_SOCKET l, const SOCKADDR_IN6 *addr,
                                  ULONGLONG *id, rxbuf *r, msg *a, msg *c)
{
    PEER_ADDRESS pa = peer_addr(*addr);
    PEER_SOCKET s;
    assert_int_equal(PeerGraphConnect(h, peer, &pa, id), S_OK);
    tu_pump(2, 1);
    s = fake_net_raw_accept(l);
    assert_true(s != PEER_INVALID_SOCKET);
    memset(r, 0, sizeof *r);
    assert_true(recv_msg(s, r, a) > 0);
    assert_true(recv_msg(s, r, c) > 0);
    return s;
}

static PPEER_GRAPH_EVENT_DATA conn_event(HPEEREVENT e)
{
    return tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION);
}

static void expect_conn_event(HPEEREVENT e, ULONGLONG id, PEER_CONNECTION_STATUS st, HRESULT hr)
{
    PPEER_GRAPH_EVENT_DATA d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.dwSize, sizeof d->connectionChangeData);
    assert_true(d->connectionChangeData.ullConnectionId == id);
    assert_int_equal(d->connectionChangeData.status, st);
    assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, hr);
    PeerGraphFreeData(d);
}

/* ------------------------------------------------------------------ tests */

/* Initiator: exact AUTH_INFO / CONNECT bytes, WELCOME, Ping, the Sync All
 * sequence and the SYNCHRONIZED status. */
static void test_initiator_wire_and_sync(void **st)
{
    HGRAPH h = tu_open(L"TestGraph", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr), s;
    ULONGLONG id;
    static rxbuf r;
    static msg a, c, m;
    PPEER_GRAPH_EVENT_DATA d;
    static const unsigned char want_auth[] = {0, 0, 0, 0x24, 0x10, 1, 0, 0, 1, 0x9f, 0, 0x10, 0, 0x1a, 0, 0x20,
                                              'T', 'e', 's', 't', 'G', 'r', 'a', 'p', 'h', 0, 'A', 'l', 'i', 'c', 'e', 0,
                                              'B', 'o', 'b', 0};
    static const unsigned char graph_info[16] = {0, 0, 1, 0}, presence[16] = {0, 0, 4, 0};
    DWORD status;
    (void)st;
    s = connect_to_raw(h, L"Bob", l, &addr, &id, &r, &a, &c);
    assert_int_equal(a.n, sizeof want_auth);
    assert_memory_equal(a.b, want_auth, sizeof want_auth);
    /* CONNECT: neighbor list wanted, not listening, our node ID */
    assert_int_equal(c.n, 24);
    assert_int_equal(c.b[5], 2);
    assert_int_equal(c.b[8], 0x01);
    assert_int_equal(c.b[9], 0);
    assert_int_equal(g16(c.b + 10), 24);
    assert_int_equal(g16(c.b + 12), 24);
    assert_true(g64(c.b + 16) == local_node(h));
    assert_null(conn_event(e));
    /* WELCOME from a plain MS-PPGRH responder (no capability bits) */
    m_welcome(&m, 0x1122334455667788ULL, 0, NULL, 0, "Bob", 0);
    send_msg(s, &m);
    tu_pump(1, 1);
    d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    assert_true(d->connectionChangeData.ullConnectionId == id);
    assert_true(d->connectionChangeData.ullNodeId == 0x1122334455667788ULL);
    PeerGraphFreeData(d);
    /* Ping, then SOLICIT_NEW for the Graph Info type */
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.n, 28);
    assert_int_equal(m.b[5], 0x0D);
    assert_int_equal(g16(m.b + 8), 28);
    assert_true(m.b[12] == 0x0c && m.b[13] == 0xcb && m.b[27] == 0x64);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[5], 0x06);
    assert_int_equal(m.n, 28);
    assert_int_equal(m.b[8], 1);
    assert_int_equal(m.b[9], 0);
    assert_memory_equal(m.b + 12, graph_info, 16);
    assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
    assert_int_equal(status, PEER_GRAPH_STATUS_HAS_CONNECTIONS);
    m_sync_end(&m);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0); /* Presence */
    assert_int_equal(m.b[5], 0x06);
    assert_memory_equal(m.b + 12, presence, 16);
    m_sync_end(&m);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0); /* everything else: exclusion of both */
    assert_int_equal(m.b[5], 0x06);
    assert_int_equal(m.b[8], 0);
    assert_int_equal(m.b[9], 2);
    assert_int_equal(m.n, 12 + 32);
    assert_memory_equal(m.b + 12, graph_info, 16);
    assert_memory_equal(m.b + 28, presence, 16);
    assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
    assert_int_equal(status & PEER_GRAPH_STATUS_SYNCHRONIZED, 0);
    m_sync_end(&m);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
    assert_int_equal(status, PEER_GRAPH_STATUS_HAS_CONNECTIONS | PEER_GRAPH_STATUS_SYNCHRONIZED);
    d = tu_event(e, PEER_GRAPH_EVENT_STATUS_CHANGED);
    assert_non_null(d);
    PeerGraphFreeData(d); /* HAS_CONNECTIONS */
    d = tu_event(e, PEER_GRAPH_EVENT_STATUS_CHANGED);
    assert_non_null(d);
    assert_int_equal(d->dwStatus, PEER_GRAPH_STATUS_HAS_CONNECTIONS | PEER_GRAPH_STATUS_SYNCHRONIZED);
    PeerGraphFreeData(d);
    /* now it may listen; the neighbor hears our address in CONNECT U=1 */
    assert_int_equal(PeerGraphListen(h, PEER_GRAPH_SCOPE_ANY, 0, 0), S_OK);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[5], 2);
    assert_int_equal(m.b[8], 0x08);
    assert_int_equal(m.b[9], 1);
    assert_int_equal(g16(m.b + 24), 0x17);
    assert_true(g16(m.b + 26) >= 40000);
    /* Close: DISCONNECT(LEAVING) with no addresses, then FIN */
    assert_int_equal(PeerGraphClose(h), S_OK);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.n, 12);
    assert_int_equal(m.b[5], 5);
    assert_int_equal(m.b[8], 1);
    assert_int_equal(g16(m.b + 10), 12);
    assert_int_equal(fake_net_raw_eof(s), 1);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
}

/* EXT_PIPELINE: a responder that echoes bit 0x02 gets every Sync All request
 * at once; answered one by one, the sync completes. */
static void test_pipelined_sync_initiator(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr), s;
    static rxbuf r;
    static msg a, c, m;
    ULONGLONG id;
    DWORD status;
    int i;
    (void)st;
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    assert_int_equal(a.b[9], 0x9f); /* reasons, pipelining, data fragments, ACK-less sync, batches, push */
    m_welcome(&m, 0x55, 0, NULL, 0, "Bob", 3);
    send_msg(s, &m);
    tu_pump(1, 1);
    /* no Ping on this link: a p2pgraph responder's WELCOME shows it alive (PROTOCOL H8) */
    for (i = 0; i < 3; i++) { /* Graph Info, Presence, everything else: all at once */
        assert_true(recv_msg(s, &r, &m) > 0);
        assert_int_equal(m.b[5], 0x06);
        assert_int_equal(m.b[8], i < 2 ? 1 : 0);
    }
    assert_int_equal(recv_msg(s, &r, &m), 0);
    for (i = 0; i < 3; i++) {
        assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
        assert_int_equal(status & PEER_GRAPH_STATUS_SYNCHRONIZED, 0);
        m_sync_end(&m);
        send_msg(s, &m);
        tu_pump(1, 1);
    }
    assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
    assert_true(status & PEER_GRAPH_STATUS_SYNCHRONIZED);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
}

/* EXT_PUSH, initiator: a never-synchronized joiner asks (bit 0x80 in
 * AUTH_INFO) to have its Sync All pushed; a responder that echoes the bit
 * gets nothing after its WELCOME (no Ping, no SOLICIT), and the three pushed
 * SYNC_ENDs complete the sync.  A synchronized graph does not ask. */
static void test_pushed_sync_initiator(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice"), h2;
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr), s;
    static rxbuf r;
    static msg a, c, m;
    ULONGLONG id;
    DWORD status;
    PPEER_GRAPH_EVENT_DATA d;
    int i;
    (void)st;
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    assert_int_equal(a.b[9], 0x9f);
    m_welcome(&m, 0x55, 0, NULL, 0, "Bob", 0x9f);
    send_msg(s, &m);
    tu_pump(2, 1);
    d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    PeerGraphFreeData(d);
    assert_int_equal(recv_msg(s, &r, &m), 0); /* the joiner sends nothing */
    for (i = 0; i < 3; i++) {
        assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
        assert_int_equal(status & PEER_GRAPH_STATUS_SYNCHRONIZED, 0);
        m_sync_end(&m);
        send_msg(s, &m);
        tu_pump(1, 1);
    }
    assert_int_equal(PeerGraphGetStatus(h, &status), S_OK);
    assert_true(status & PEER_GRAPH_STATUS_SYNCHRONIZED);
    assert_int_equal(recv_msg(s, &r, &m), 0);
    fake_net_raw_close(s);
    /* a synchronized graph (its creator) does not ask, and a responder
     * claiming to push anyway is not believed: it pulls as before */
    h2 = tu_create(L"G", L"Carol");
    s = connect_to_raw(h2, NULL, l, &addr, &id, &r, &a, &c);
    assert_int_equal(a.b[9], 0x1f);
    m_welcome(&m, 0x56, 0, NULL, 0, "Bob", 0x9f);
    send_msg(s, &m);
    tu_pump(2, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_true(m.b[5] == 0x06 || m.b[5] == 0x07); /* SOLICIT_NEW or _TIME */
    fake_net_raw_close(s);
    fake_net_raw_close(l);
}

/* EXT_PUSH, responder: asked by a neighbor's AUTH_INFO, the Sync All answers
 * (Graph Info first, three SYNC_ENDs) follow the WELCOME in the same pass,
 * unasked; not on a direct connection, and not without the bit. */
static void test_pushed_sync_responder(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    static rxbuf r;
    static msg m;
    static const unsigned char graph_info[16] = {0, 0, 1, 0};
    int k;
    (void)st;
    (void)e;
    for (k = 0; k < 3; k++) { /* 0: pushed; 1: direct; 2: no bit */
        PEER_SOCKET s = fake_net_raw_connect(&la.sin6);
        unsigned ext = k == 2 ? 0x03 : 0x83;
        int floods = 0, ends = 0, first = -1;
        memset(&r, 0, sizeof r);
        m_auth(&m, k == 1 ? 2 : 1, ext, "G", "Alice", NULL);
        send_msg(s, &m);
        m_connect(&m, k == 1 ? 0x04 : 0x01, 0x700 + (ULONGLONG)k, NULL, 0, NULL);
        send_msg(s, &m);
        tu_pump(1, 1);
        assert_true(recv_msg(s, &r, &m) > 0);
        assert_int_equal(m.b[5], 3);
        assert_int_equal(m.b[25], k == 0 ? 0x83 : 0x03);
        while (recv_msg(s, &r, &m) > 0) {
            if (m.b[5] == 0x0B) {
                if (first < 0) first = !memcmp(m.b + 12, graph_info, 16);
                floods++;
            } else if (m.b[5] == 0x0C)
                ends++;
        }
        if (k == 0) {
            assert_int_equal(first, 1); /* Graph Info is answered first */
            assert_true(floods >= 1);
            assert_int_equal(ends, 3);
        } else {
            assert_int_equal(floods, 0);
            assert_int_equal(ends, 0);
        }
        fake_net_raw_close(s);
        tu_pump(1, 1);
    }
}

/* A responder answers solicitations that arrive back to back in order, one
 * SYNC_END each (and holds at most 16 waiting). */
static void test_responder_queues_solicitations(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s = fake_net_raw_connect(&la.sin6);
    static rxbuf r;
    static msg m;
    int i, floods = 0, ends = 0;
    (void)st;
    memset(&r, 0, sizeof r);
    m_auth(&m, 1, 0, "G", "Alice", NULL);
    send_msg(s, &m);
    m_connect(&m, 0x01, 0x77, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0); /* WELCOME */
    for (i = 0; i < 3; i++) { /* all types, three times */
        hdr(&m, 6); p8(&m, 0); p8(&m, 0); p16(&m, 12); fin(&m);
        send_msg(s, &m);
    }
    tu_pump(3, 1);
    while (recv_msg(s, &r, &m) > 0) {
        if (m.b[5] == 0x0B) { assert_int_equal(floods, ends); floods++; } /* one FLOOD per answer, before its end */
        else if (m.b[5] == 0x0C) ends++;
    }
    assert_int_equal(floods, 3);
    assert_int_equal(ends, 3);
    /* 17 waiting at once: the 17th is one too many */
    for (i = 0; i < 18; i++) {
        hdr(&m, 6); p8(&m, 0); p8(&m, 0); p16(&m, 12); fin(&m);
        send_msg(s, &m);
    }
    tu_pump(1, 1);
    assert_int_equal(tu_neighbors(h), 0);
    fake_net_raw_close(s);
}

/* A raw neighbor connected to listening graph h (AUTH_INFO + CONNECT read
 * back as a WELCOME). */
static PEER_SOCKET raw_neighbor_of(PEER_ADDRESS *la, rxbuf *r, ULONGLONG node)
{
    PEER_SOCKET s = fake_net_raw_connect(&la->sin6);
    static msg m;
    memset(r, 0, sizeof *r);
    m_auth(&m, 1, 0, "G", "Alice", NULL);
    send_msg(s, &m);
    m_connect(&m, 0x01, node, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, r, &m) > 0);
    assert_int_equal(m.b[5], 3);
    return s;
}

/* Malformed or out-of-place record-layer messages (ACK, SOLICIT_*, ADVERTISE,
 * REQUEST) close that one link with PEER_E_PROTOCOL_ERROR; another link of
 * the same graph carries on. */
static void test_bad_sync_messages(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    static rxbuf r, r2;
    static msg m;
    PEER_SOCKET keep = raw_neighbor_of(&la, &r2, 900);
    int k;
    (void)st;
    for (k = 0; k < 9; k++) {
        PEER_SOCKET s = raw_neighbor_of(&la, &r, 1000 + (ULONGLONG)k);
        PPEER_GRAPH_EVENT_DATA d;
        while ((d = conn_event(e)) != NULL) PeerGraphFreeData(d);
        switch (k) {
        case 0: hdr(&m, 0x0E); p16(&m, 5); p16(&m, 12); fin(&m); break;              /* ACK: 5 entries, none there */
        case 1: hdr(&m, 0x0E); p16(&m, 0); p16(&m, 200); fin(&m); break;             /* ACK offset past the end */
        case 2: hdr(&m, 0x06); p8(&m, 2); p8(&m, 0); p16(&m, 12); fin(&m); break;     /* inclusion count 2 */
        case 3: hdr(&m, 0x06); p8(&m, 1); p8(&m, 1); p16(&m, 12); fin(&m); break;     /* inclusion and exclusion */
        case 4: hdr(&m, 0x07); p8(&m, 0); p8(&m, 0); p16(&m, 20); fin(&m); break;     /* SOLICIT_TIME too short */
        case 5: hdr(&m, 0x08); p8(&m, 0); p8(&m, 0); p16(&m, 20); p32(&m, 3); p16(&m, 20); p16(&m, 0); fin(&m); break; /* 3 hash entries, none there */
        case 6: hdr(&m, 0x08); p8(&m, 0); p8(&m, 0); p16(&m, 20); p32(&m, 0); p16(&m, 20); p16(&m, 0); fin(&m); break; /* hash count 0 */
        case 7: hdr(&m, 0x09); p32(&m, 0); p32(&m, 0); p16(&m, 24); p16(&m, 0); p32(&m, 24); fin(&m); break; /* ADVERTISE unasked */
        case 8: hdr(&m, 0x0A); p32(&m, 0); p32(&m, 16); fin(&m); break;              /* REQUEST unasked */
        }
        send_msg(s, &m);
        tu_pump(1, 1);
        d = conn_event(e);
        assert_non_null(d);
        assert_int_equal(d->connectionChangeData.status, PEER_DISCONNECTED);
        assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_PROTOCOL_ERROR);
        PeerGraphFreeData(d);
        assert_true(fake_net_raw_eof(s) != 0);
        fake_net_raw_close(s);
        assert_int_equal(tu_neighbors(h), 1); /* the other link stays */
    }
    /* the surviving link still syncs */
    hdr(&m, 6); p8(&m, 0); p8(&m, 0); p16(&m, 12); fin(&m);
    send_msg(keep, &m);
    tu_pump(1, 1);
    do assert_true(recv_msg(keep, &r2, &m) > 0); while (m.b[5] != 0x0C);
    fake_net_raw_close(keep);
}

/* Garbage in every byte of a SOLICIT_HASH: the responder answers or closes
 * the link; never crashes, never leaks; the graph carries on. */
static void test_garbage_in_solicit_hash(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    PEER_ADDRESS la = tu_listen(h);
    static rxbuf r;
    static msg good, m;
    size_t i;
    int v;
    (void)st;
    hdr(&good, 0x08); p8(&good, 0); p8(&good, 0); p16(&good, 20); p32(&good, 2); p16(&good, 20); p16(&good, 0);
    for (i = 0; i < 80; i++) p8(&good, (unsigned)(i * 37));
    fin(&good);
    for (i = 0; i < good.n; i++) {
        for (v = 0; v < 2; v++) {
            PEER_SOCKET s = raw_neighbor_of(&la, &r, 5000 + i * 2 + (size_t)v);
            m = good;
            m.b[i] = v ? 0xFF : (unsigned char)(m.b[i] ^ 0x01);
            send_msg(s, &m);
            tu_pump(1, 1);
            fake_net_raw_close(s);
            tu_pump(2, PEER_LINGER_MS);
        }
    }
    assert_int_equal(tu_neighbors(h), 0);
    assert_int_equal(fake_net_open_sockets(), 1);
}

/* Responder: AUTH_INFO + CONNECT in, WELCOME out with the right fields. */
static void test_responder_welcome_and_disconnect(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s = fake_net_raw_connect(&la.sin6);
    static rxbuf r;
    static msg m;
    SOCKADDR_IN6 adv = fake_net_addr6("2001:db8::5", 4242);
    PPEER_GRAPH_EVENT_DATA d;
    PPEER_NODE_INFO ni;
    HPEERENUM en;
    PEER_CONNECTION_INFO **items;
    ULONG n = 10;
    (void)st;
    memset(&r, 0, sizeof r);
    m_auth(&m, 1, 1, "G", "Alice", "Bob");
    send_msg(s, &m);
    m_connect(&m, 0x01, 0xABCDEF, &adv, 1, "alice's box");
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[5], 3);
    assert_true(g64(m.b + 8) == local_node(h));
    assert_int_equal(m.b[24], 0);    /* no other neighbors to refer */
    assert_int_equal(m.b[25], 1);    /* capability echo */
    assert_int_equal(g16(m.b + 28), 32);
    assert_string_equal((const char *)m.b + 32, "Bob");
    assert_string_equal((const char *)m.b + g16(m.b + 30), "test graph");
    d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    assert_true(d->connectionChangeData.ullNodeId == 0xABCDEF);
    PeerGraphFreeData(d);
    /* the neighbor is visible through the API */
    assert_int_equal(PeerGraphGetNodeInfo(h, 0xABCDEF, &ni), S_OK);
    assert_true(wcscmp(ni->pwzPeerId, L"Alice") == 0);
    assert_int_equal(ni->cAddresses, 1);
    assert_int_equal(fake_net_port(&ni->pAddresses[0].sin6), 4242);
    PeerGraphFreeData(ni);
    assert_int_equal(PeerGraphEnumConnections(h, PEER_CONNECTION_NEIGHBOR, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    assert_int_equal(n, 1);
    assert_int_equal(items[0]->dwFlags, PEER_CONNECTION_NEIGHBOR);
    assert_true(items[0]->ullNodeId == 0xABCDEF);
    assert_true(wcscmp(items[0]->pwzPeerId, L"Alice") == 0);
    PeerGraphFreeData(items);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    /* CONNECT U=1 updates the addresses, no reply */
    adv = fake_net_addr6("2001:db8::6", 4343);
    m_connect(&m, 0x08, 0xABCDEF, &adv, 1, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_int_equal(fake_net_raw_pending(s), 0);
    assert_int_equal(PeerGraphGetNodeInfo(h, 0xABCDEF, &ni), S_OK);
    assert_int_equal(fake_net_port(&ni->pAddresses[0].sin6), 4343);
    PeerGraphFreeData(ni);
    /* a solicitation of everything is answered: the Graph Info record, SYNC_END */
    hdr(&m, 6); p8(&m, 0); p8(&m, 0); p16(&m, 12); fin(&m);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[5], 0x0B);
    assert_int_equal(m.b[12 + 2], 1); /* type {00000100-...} */
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[5], 0x0C);
    assert_int_equal(m.b[8], 1);
    /* DISCONNECT -> PEER_DISCONNECTED, S_OK */
    m_simple(&m, 5, 1, NULL, 0);
    send_msg(s, &m);
    tu_pump(1, 1);
    d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_DISCONNECTED);
    assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, S_OK);
    PeerGraphFreeData(d);
    assert_int_equal(tu_neighbors(h), 0);
    assert_int_equal(fake_net_raw_eof(s), 1);
    fake_net_raw_close(s);
}

/* Every REFUSE code, standard and extended, maps to its reason. */
static void test_refuse_codes(void **st)
{
    static const struct { unsigned code; HRESULT hr; } cases[] = {
        {1, PEER_E_CONNECTION_REFUSED}, {2, PEER_E_CONNECTION_REFUSED}, {3, PEER_E_CONNECTION_REFUSED},
        {4, PEER_E_CONNECTION_REFUSED}, {0x80, PEER_E_GRAPH_ID_MISMATCH}, {0x81, PEER_E_PEER_ID_MISMATCH},
        {0x82, PEER_E_CONNECT_SELF}, {0x05, PEER_E_PROTOCOL_ERROR}, {0x00, PEER_E_PROTOCOL_ERROR}};
    HGRAPH h = tu_open(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr);
    size_t i;
    (void)st;
    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        static rxbuf r;
        static msg a, c, m;
        ULONGLONG id;
        PEER_SOCKET s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
        m_simple(&m, 4, cases[i].code, NULL, 0);
        send_msg(s, &m);
        tu_pump(1, 1);
        expect_conn_event(e, id, PEER_CONNECTION_FAILED, cases[i].hr);
        assert_true(fake_net_raw_eof(s) != 0);
        fake_net_raw_close(s);
    }
    fake_net_raw_close(l);
}

/* REFUSE(BUSY) with referrals: the next attempt goes to a referral and the
 * event says which connection ID it has; referrals to ourselves are skipped. */
static void test_refuse_busy_follows_referrals(void **st)
{
    HGRAPH h = tu_create(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS self = tu_listen(h);
    SOCKADDR_IN6 a1, a2, refs[2];
    PEER_SOCKET l1 = raw_node(&a1), l2 = raw_node(&a2), s, s2;
    static rxbuf r;
    static msg a, c, m;
    ULONGLONG id;
    PPEER_GRAPH_EVENT_DATA d;
    ULONGLONG next;
    (void)st;
    s = connect_to_raw(h, L"Bob", l1, &a1, &id, &r, &a, &c);
    refs[0] = self.sin6;
    refs[1] = a2;
    m_simple(&m, 4, 1, refs, 2);
    send_msg(s, &m);
    tu_pump(1, 1);
    d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTION_FAILED);
    assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_CONNECTION_REFUSED);
    next = d->connectionChangeData.ullNextConnectionId;
    assert_true(next != 0 && next != id);
    PeerGraphFreeData(d);
    tu_pump(2, 1);
    s2 = fake_net_raw_accept(l2);
    assert_true(s2 != PEER_INVALID_SOCKET);
    memset(&r, 0, sizeof r);
    assert_true(recv_msg(s2, &r, &a) > 0);
    assert_int_equal(g16(a.b + 14), a.n); /* referral attempts name no peer */
    /* the second node is busy too, with no referrals left: the chain ends */
    m_simple(&m, 4, 1, NULL, 0);
    send_msg(s2, &m);
    tu_pump(1, 1);
    d = conn_event(e);
    assert_non_null(d);
    assert_true(d->connectionChangeData.ullConnectionId == next);
    assert_true(d->connectionChangeData.ullNextConnectionId == 0);
    PeerGraphFreeData(d);
    fake_net_raw_close(s);
    fake_net_raw_close(s2);
    fake_net_raw_close(l1);
    fake_net_raw_close(l2);
}

/* Connect timer (60 s after CONNECT) and authentication timer (TCP connect
 * that never completes: 300 s with no other connection). */
static void test_timers(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr, hole = fake_net_addr6("2001:db8::99", 5000);
    PEER_SOCKET l = raw_node(&addr), s;
    static rxbuf r;
    static msg a, c;
    ULONGLONG id, id2;
    PEER_ADDRESS pa = peer_addr(hole);
    ULONG n;
    ULONGLONG dl;
    (void)st;
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    tu_pump(1, 58000);
    assert_null(conn_event(e));
    tu_pump(1, 2000);
    expect_conn_event(e, id, PEER_CONNECTION_FAILED, PEER_E_TIMEOUT);
    assert_true(fake_net_raw_eof(s) != 0);
    fake_net_raw_close(s);
    fake_net_blackhole(&hole);
    assert_int_equal(PeerGraphConnect(h, NULL, &pa, &id2), S_OK);
    tu_pump(1, 1);
    assert_int_equal(PeerGraphGetPollFds(NULL, 0, &n, &dl), E_NOT_SUFFICIENT_BUFFER);
    assert_true(dl > fake_net_now() && dl <= fake_net_now() + 300000); /* the auth timer, or graph maintenance first */
    tu_pump(1, 290000);
    assert_null(conn_event(e));
    tu_pump(1, 10000);
    expect_conn_event(e, id2, PEER_CONNECTION_FAILED, PEER_E_TIMEOUT);
    fake_net_raw_close(l);
}

/* Inbound connection that never sends AUTH_INFO is closed by the auth timer;
 * one that authenticates but never sends CONNECT by the connect timer. */
static void test_inbound_timers(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s1 = fake_net_raw_connect(&la.sin6), s2 = fake_net_raw_connect(&la.sin6);
    static msg m;
    (void)st;
    m_auth(&m, 1, 0, "G", "Alice", NULL);
    tu_pump(1, 1);
    send_msg(s2, &m);
    tu_pump(1, 1);
    tu_pump(1, 59000);
    assert_int_equal(fake_net_raw_eof(s1), 0);
    tu_pump(1, 2000);
    assert_int_equal(fake_net_raw_eof(s2), 1); /* connect timer */
    assert_int_equal(fake_net_raw_eof(s1), 0);
    tu_pump(1, 300000);
    assert_int_equal(fake_net_raw_eof(s1), 1); /* auth timer */
    assert_int_equal(fake_net_open_sockets(), 1);
    fake_net_raw_close(s1);
    fake_net_raw_close(s2);
}

static void test_tcp_refused(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS pa = peer_addr(fake_net_addr_loopback6(1));
    ULONGLONG id;
    (void)st;
    assert_int_equal(PeerGraphConnect(h, NULL, &pa, &id), S_OK);
    tu_pump(1, 1);
    expect_conn_event(e, id, PEER_CONNECTION_FAILED, PEER_E_TCP_CONNECTION_REFUSED);
    assert_int_equal(fake_net_open_sockets(), 0);
}

/* Two library graphs: success, wrong graph, wrong peer, NULL peer ID,
 * PEER_E_ALREADY_EXISTS, Close -> DISCONNECTED at the other end. */
static void test_library_to_library(void **st)
{
    HGRAPH A = tu_create(L"G", L"Alice"), B = tu_open(L"G", L"Bob"), C = tu_open(L"H", L"Carol"),
           D = tu_open(L"G", L"Dave");
    HPEEREVENT eA = tu_register_all(A), eB = tu_register_all(B), eC = tu_register_all(C), eD = tu_register_all(D);
    PEER_ADDRESS la = tu_listen(A);
    ULONGLONG idB, idC, idD, idB2;
    DWORD st2;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    assert_int_equal(PeerGraphConnect(B, NULL, &la, &idB), S_OK);
    assert_int_equal(PeerGraphConnect(C, NULL, &la, &idC), S_OK);
    assert_int_equal(PeerGraphConnect(D, L"Zed", &la, &idD), S_OK);
    tu_pump(10, 1);
    expect_conn_event(eB, idB, PEER_CONNECTED, S_OK);
    expect_conn_event(eC, idC, PEER_CONNECTION_FAILED, PEER_E_GRAPH_ID_MISMATCH);
    expect_conn_event(eD, idD, PEER_CONNECTION_FAILED, PEER_E_PEER_ID_MISMATCH);
    d = conn_event(eA);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    assert_true(d->connectionChangeData.ullNodeId == local_node(B));
    PeerGraphFreeData(d);
    assert_null(conn_event(eA)); /* the refused ones never reached A's application */
    assert_int_equal(PeerGraphGetStatus(B, &st2), S_OK);
    assert_int_equal(st2, PEER_GRAPH_STATUS_HAS_CONNECTIONS | PEER_GRAPH_STATUS_SYNCHRONIZED);
    assert_int_equal(PeerGraphConnect(B, NULL, &la, &idB2), PEER_E_ALREADY_EXISTS);
    assert_int_equal(PeerGraphConnect(B, L"Alice", &la, &idB2), PEER_E_ALREADY_EXISTS);
    assert_int_equal(tu_neighbors(A), 1);
    assert_int_equal(tu_neighbors(B), 1);
    /* B (joined) can listen now */
    tu_listen(B);
    assert_int_equal(PeerGraphClose(A), S_OK);
    tu_pump(3, 1);
    expect_conn_event(eB, idB, PEER_DISCONNECTED, S_OK);
    assert_int_equal(tu_neighbors(B), 0);
    (void)eD;
}

/* A connects to B and B to A at the same moment: one link survives, on both
 * sides, chosen by node ID. */
static void test_simultaneous_cross_connect(void **st)
{
    HGRAPH A = tu_create(L"G", L"Alice"), B = tu_create(L"G", L"Bob");
    HPEEREVENT eA = tu_register_all(A), eB = tu_register_all(B);
    PEER_ADDRESS la = tu_listen(A), lb = tu_listen(B);
    ULONGLONG idA, idB;
    int i;
    (void)st;
    for (i = 0; i < 6; i++) {
        assert_int_equal(PeerGraphConnect(A, NULL, &lb, &idA), S_OK);
        assert_int_equal(PeerGraphConnect(B, NULL, &la, &idB), S_OK);
        tu_pump(10, 1);
        assert_int_equal(tu_neighbors(A), 1);
        assert_int_equal(tu_neighbors(B), 1);
        /* the dropped link is reported, never left half-open */
        {
            int okA = tu_count_conn_events(eA, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, PEER_CONNECTED);
            assert_true(okA >= 1);
        }
        tu_count_conn_events(eB, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, PEER_CONNECTED);
        /* tear down and try again with new node IDs */
        assert_int_equal(PeerGraphClose(A), S_OK);
        assert_int_equal(PeerGraphClose(B), S_OK);
        tu_pump(3, 1);
        A = tu_create(L"G", L"Alice");
        B = tu_create(L"G", L"Bob");
        eA = tu_register_all(A);
        eB = tu_register_all(B);
        la = tu_listen(A);
        lb = tu_listen(B);
    }
}

/* Every byte delivered and sent one at a time. */
static void test_one_byte_at_a_time(void **st)
{
    HGRAPH A = tu_create(L"G", L"Alice"), B = tu_open(L"G", L"Bob");
    HPEEREVENT eB = tu_register_all(B);
    PEER_ADDRESS la = tu_listen(A);
    ULONGLONG id;
    DWORD s;
    (void)st;
    fake_net_set_max_io(1);
    assert_int_equal(PeerGraphConnect(B, NULL, &la, &id), S_OK);
    tu_pump(400, 1);
    expect_conn_event(eB, id, PEER_CONNECTED, S_OK);
    assert_int_equal(PeerGraphGetStatus(B, &s), S_OK);
    assert_int_equal(s, PEER_GRAPH_STATUS_HAS_CONNECTIONS | PEER_GRAPH_STATUS_SYNCHRONIZED);
}

/* A message split across many tiny frames is reassembled. */
static void test_message_across_frames(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    PEER_SOCKET s = fake_net_raw_connect(&la.sin6);
    static msg m;
    (void)st;
    m_auth(&m, 1, 0, "G", "Alice", NULL);
    send_msg_chunked(s, &m, 3);
    m_connect(&m, 0, 77, NULL, 0, NULL);
    send_msg_chunked(s, &m, 1);
    tu_pump(1, 1);
    {
        PPEER_GRAPH_EVENT_DATA d = conn_event(e);
        assert_non_null(d);
        assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
        assert_true(d->connectionChangeData.ullNodeId == 77);
        PeerGraphFreeData(d);
    }
    fake_net_raw_close(s);
    tu_pump(1, 1);
}

/* The remote closes or resets at each step. */
static void test_peer_closes_at_every_step(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr), s;
    static rxbuf r;
    static msg a, c, m;
    ULONGLONG id;
    (void)st;
    /* closed before answering: lost during authentication */
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    fake_net_raw_close(s);
    tu_pump(1, 1);
    expect_conn_event(e, id, PEER_CONNECTION_FAILED, PEER_E_CONNECTION_NOT_AUTHENTICATED);
    /* reset before answering */
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    fake_net_raw_reset(s);
    tu_pump(1, 1);
    expect_conn_event(e, id, PEER_CONNECTION_FAILED, PEER_E_CONNECTION_FAILED);
    /* WELCOME then close: connected, then disconnected with a network reason */
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    m_welcome(&m, 99, 0, NULL, 0, "Bob", 0);
    send_msg(s, &m);
    tu_pump(1, 1);
    expect_conn_event(e, id, PEER_CONNECTED, S_OK);
    fake_net_raw_close(s);
    tu_pump(1, 1);
    expect_conn_event(e, id, PEER_DISCONNECTED, PEER_E_CONNECTION_FAILED);
    /* half a message, then close */
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    m_welcome(&m, 99, 0, NULL, 0, "Bob", 0);
    fake_net_raw_write(s, "\x00\x20", 2);
    fake_net_raw_write(s, m.b, 10);
    fake_net_raw_close(s);
    tu_pump(1, 1);
    expect_conn_event(e, id, PEER_CONNECTION_FAILED, PEER_E_CONNECTION_NOT_AUTHENTICATED);
    /* inbound: close after AUTH_INFO: nothing reaches the application */
    assert_int_equal(PeerGraphClose(h), S_OK);
    fake_net_raw_close(l);
    {
        HGRAPH g = tu_create(L"G", L"Bob");
        HPEEREVENT eg = tu_register_all(g);
        PEER_ADDRESS la = tu_listen(g);
        PEER_SOCKET x = fake_net_raw_connect(&la.sin6);
        m_auth(&m, 1, 0, "G", "Alice", NULL);
        send_msg(x, &m);
        tu_pump(1, 1);
        fake_net_raw_close(x);
        tu_pump(1, 1);
        assert_null(conn_event(eg));
        assert_int_equal(fake_net_open_sockets(), 1); /* only the listener */
    }
}

/* Framing and header violations each close the connection with
 * PEER_E_PROTOCOL_ERROR; the graph carries on. */
static void test_bad_frames_and_headers(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr), s;
    int k;
    (void)st;
    for (k = 0; k < 9; k++) {
        static rxbuf r;
        static msg a, c, m;
        ULONGLONG id;
        s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
        m_welcome(&m, 99, 0, NULL, 0, "Bob", 0);
        switch (k) {
        case 0: fake_net_raw_write(s, "\x00\x00", 2); break;                 /* frame size 0 */
        case 1: fake_net_raw_write(s, "\x80\x01", 2); break;                 /* frame > 32768 */
        case 2: m.b[3] = 7; send_msg(s, &m); break;                          /* message size < 8 */
        case 3: m.b[0] = 0x7F; send_msg(s, &m); break;                       /* absurd message size */
        case 4: m.b[4] = 0x11; send_msg(s, &m); break;                       /* version */
        case 5: m.b[5] = 0x00; send_msg(s, &m); break;                       /* type 0 */
        case 6: m.b[5] = 0x0F; send_msg(s, &m); break;                       /* unknown type */
        case 7: m.b[5] = 0x01; send_msg(s, &m); break;                       /* AUTH_INFO to initiator */
        case 8: hdr(&m, 0x0B); p16(&m, 12); p16(&m, 0); p32(&m, 0); fin(&m); send_msg(s, &m); break; /* FLOOD early */
        }
        tu_pump(1, 1);
        expect_conn_event(e, id, PEER_CONNECTION_FAILED, PEER_E_PROTOCOL_ERROR);
        assert_true(fake_net_raw_eof(s) != 0);
        fake_net_raw_close(s);
    }
    fake_net_raw_close(l);
}

/* Garbage in every byte of WELCOME: the library either connects or fails
 * with a reason; never crashes (ASan/valgrind watch), never leaks a socket. */
static void test_garbage_in_every_welcome_byte(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    HPEEREVENT e = tu_register_all(h);
    SOCKADDR_IN6 addr, ref = fake_net_addr6("2001:db8::1", 9);
    PEER_SOCKET l = raw_node(&addr), s;
    static msg good;
    size_t i;
    int v, connected = 0, failed = 0;
    (void)st;
    m_welcome(&good, 99, 0, &ref, 1, "Bob", 0);
    for (i = 0; i < good.n; i++) {
        for (v = 0; v < 2; v++) {
            static rxbuf r;
            static msg a, c, m;
            ULONGLONG id;
            PPEER_GRAPH_EVENT_DATA d;
            s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
            m = good;
            m.b[i] = v ? 0xFF : (unsigned char)(m.b[i] ^ 0x01);
            send_msg(s, &m);
            tu_pump(1, 1);
            d = conn_event(e);
            if (!d) { /* incomplete message (size grew): the remote gives up */
                fake_net_raw_close(s);
                tu_pump(1, 1);
                d = conn_event(e);
            }
            assert_non_null(d);
            assert_true(d->connectionChangeData.ullConnectionId == id);
            if (d->connectionChangeData.status == PEER_CONNECTED) connected++;
            else {
                assert_int_equal(d->connectionChangeData.status, PEER_CONNECTION_FAILED);
                assert_true(FAILED(d->connectionChangeData.hrConnectionFailedReason));
                failed++;
            }
            PeerGraphFreeData(d);
            fake_net_raw_close(s);
            tu_pump(2, PEER_LINGER_MS);
            while ((d = conn_event(e)) != NULL) PeerGraphFreeData(d);
        }
    }
    assert_true(connected > 0 && failed > 0);
    assert_int_equal(fake_net_open_sockets(), 0);
    fake_net_raw_close(l);
}

/* Garbage in every byte of AUTH_INFO and CONNECT at the responder: it answers
 * or closes; afterwards a clean connection still succeeds. */
static void test_garbage_at_responder(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    SOCKADDR_IN6 adv = fake_net_addr6("2001:db8::5", 4242);
    static msg ga, gc, m;
    size_t i, total;
    int which;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    m_auth(&ga, 1, 1, "G", "Alice", "Bob");
    m_connect(&gc, 0x01, 0x1234, &adv, 1, "x");
    total = ga.n + gc.n;
    for (i = 0; i < total; i++) {
        for (which = 0; which < 2; which++) {
            PEER_SOCKET s = fake_net_raw_connect(&la.sin6);
            static msg a2, c2;
            a2 = ga;
            c2 = gc;
            if (i < ga.n) a2.b[i] = which ? 0xFF : (unsigned char)(a2.b[i] ^ 0x01);
            else c2.b[i - ga.n] = which ? 0xFF : (unsigned char)(c2.b[i - ga.n] ^ 0x01);
            send_msg(s, &a2);
            send_msg(s, &c2);
            tu_pump(1, 1);
            fake_net_raw_close(s);
            tu_pump(2, PEER_LINGER_MS);
            while ((d = conn_event(e)) != NULL) PeerGraphFreeData(d);
            assert_int_equal(tu_neighbors(h), 0);
        }
    }
    assert_int_equal(fake_net_open_sockets(), 1);
    {
        PEER_SOCKET s = fake_net_raw_connect(&la.sin6);
        send_msg(s, &ga);
        send_msg(s, &gc);
        tu_pump(1, 1);
        assert_int_equal(tu_neighbors(h), 1);
        fake_net_raw_close(s);
    }
    (void)m;
}

/* Responder decisions: wrong graph / wrong peer without and with the
 * extension bit, direct refused, duplicate, busy with referrals, already
 * connected. */
static void test_responder_decisions(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob");
    PEER_ADDRESS la = tu_listen(h);
    static rxbuf r;
    static msg m;
    PEER_SOCKET s, ns[8];
    SOCKADDR_IN6 adv[8];
    int i;
    (void)st;
    /* wrong graph, plain peer: just closed */
    s = fake_net_raw_connect(&la.sin6);
    memset(&r, 0, sizeof r);
    m_auth(&m, 1, 0, "Other", "Alice", NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_int_equal(fake_net_raw_pending(s), 0);
    assert_true(fake_net_raw_eof(s) != 0);
    fake_net_raw_close(s);
    /* wrong graph / wrong peer with the extension: REFUSE 0x80 / 0x81 */
    for (i = 0; i < 2; i++) {
        s = fake_net_raw_connect(&la.sin6);
        memset(&r, 0, sizeof r);
        m_auth(&m, 1, 1, i ? "G" : "Other", "Alice", i ? "Zed" : NULL);
        send_msg(s, &m);
        tu_pump(1, 1);
        assert_true(recv_msg(s, &r, &m) > 0);
        assert_int_equal(m.b[5], 4);
        assert_int_equal(m.b[8], i ? 0x81 : 0x80);
        assert_true(fake_net_raw_eof(s) != 0);
        fake_net_raw_close(s);
    }
    /* direct: refused with code 4 */
    s = fake_net_raw_connect(&la.sin6);
    memset(&r, 0, sizeof r);
    m_auth(&m, 2, 0, "G", "Alice", NULL);
    send_msg(s, &m);
    m_connect(&m, 0x04, 5, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[5], 4);
    assert_int_equal(m.b[8], 4);
    fake_net_raw_close(s);
    /* seven neighbors */
    for (i = 0; i < 7; i++) {
        ns[i] = fake_net_raw_connect(&la.sin6);
        adv[i] = fake_net_addr6("2001:db8::7", (unsigned short)(6000 + i));
        m_auth(&m, 1, 0, "G", "N", NULL);
        send_msg(ns[i], &m);
        m_connect(&m, 0x01, 1000 + (ULONGLONG)i, &adv[i], 1, NULL);
        send_msg(ns[i], &m);
        tu_pump(1, 1);
    }
    assert_int_equal(tu_neighbors(h), 7);
    /* duplicate node ID: code 3 */
    s = fake_net_raw_connect(&la.sin6);
    memset(&r, 0, sizeof r);
    m_auth(&m, 1, 0, "G", "N", NULL);
    send_msg(s, &m);
    m_connect(&m, 0x01, 1003, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[8], 3);
    fake_net_raw_close(s);
    /* eighth: busy, with referrals to the others (least recently added first) */
    s = fake_net_raw_connect(&la.sin6);
    memset(&r, 0, sizeof r);
    m_auth(&m, 1, 0, "G", "N", NULL);
    send_msg(s, &m);
    m_connect(&m, 0x01, 2000, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &r, &m) > 0);
    assert_int_equal(m.b[8], 1);
    assert_int_equal(m.b[9], 7);
    assert_int_equal(g16(m.b + 10), 12);
    assert_int_equal(m.n, 12 + 7 * 20);
    assert_int_equal(g16(m.b + 12 + 2), 6000);
    assert_int_equal(g16(m.b + 12 + 6 * 20 + 2), 6006);
    fake_net_raw_close(s);
    /* CONNECT again on a connected link without U: busy first (spec order) */
    m_connect(&m, 0x01, 1000, NULL, 0, NULL);
    send_msg(ns[0], &m);
    tu_pump(1, 1);
    memset(&r, 0, sizeof r);
    assert_true(recv_msg(ns[0], &r, &m) > 0); /* WELCOME from earlier */
    assert_int_equal(m.b[5], 3);
    assert_true(recv_msg(ns[0], &r, &m) > 0);
    assert_int_equal(m.b[5], 4);
    assert_int_equal(m.b[8], 1);
    assert_int_equal(tu_neighbors(h), 6);
    /* with room: already connected (code 2) */
    m_connect(&m, 0x01, 1001, NULL, 0, NULL);
    send_msg(ns[1], &m);
    tu_pump(1, 1);
    memset(&r, 0, sizeof r);
    assert_true(recv_msg(ns[1], &r, &m) > 0);
    assert_true(recv_msg(ns[1], &r, &m) > 0);
    assert_int_equal(m.b[5], 4);
    assert_int_equal(m.b[8], 2);
    for (i = 0; i < 7; i++) fake_net_raw_close(ns[i]);
    tu_pump(1, 1);
}

/* Shutdown with a live neighbor: DISCONNECT(LEAVING) is on the wire. */
static void test_shutdown_sends_disconnect(void **st)
{
    HGRAPH h = tu_open(L"G", L"Alice");
    SOCKADDR_IN6 addr;
    PEER_SOCKET l = raw_node(&addr), s;
    static rxbuf r;
    static msg a, c, m;
    ULONGLONG id;
    PEER_VERSION_DATA vd;
    (void)st;
    s = connect_to_raw(h, NULL, l, &addr, &id, &r, &a, &c);
    m_welcome(&m, 99, 0, NULL, 0, "Bob", 0);
    send_msg(s, &m);
    tu_pump(1, 1);
    assert_int_equal(PeerGraphShutdown(), S_OK);
    assert_int_equal(fake_net_open_sockets(), 0);
    do assert_true(recv_msg(s, &r, &m) > 0); while (m.b[5] != 5);
    assert_int_equal(m.b[8], 1);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
    assert_int_equal(PeerGraphStartup(PEER_GRAPH_VERSION, &vd), S_OK);
}

/* Limits: at most PEER_MAX_PENDING_ACCEPTS unauthenticated inbound
 * connections per listener (beyond, the oldest silent one is closed, so real
 * peers still get in), and at most PEER_MAX_CONNECTIONS_PER_GRAPH
 * connections per graph. */
static void test_limits(void **st)
{
    HGRAPH h = tu_create(L"G", L"Bob"), j = tu_open(L"G", L"Joiner");
    HPEEREVENT e = tu_register_all(h);
    PEER_ADDRESS la = tu_listen(h);
    static PEER_SOCKET silent[PEER_MAX_PENDING_ACCEPTS + 20];
    static msg m;
    PEER_SOCKET s;
    int i, closed = 0;
    ULONGLONG id;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    for (i = 0; i < PEER_MAX_PENDING_ACCEPTS + 20; i++) silent[i] = fake_net_raw_connect(&la.sin6);
    tu_pump(8, 1); /* accepts are batched 64 per service */
    for (i = 0; i < PEER_MAX_PENDING_ACCEPTS + 20; i++) closed += fake_net_raw_eof(silent[i]) != 0;
    assert_int_equal(closed, 20);
    for (i = 0; i < 20; i++) assert_true(fake_net_raw_eof(silent[i]) != 0); /* the oldest made room */
    assert_int_equal(fake_net_open_sockets(), 1 + PEER_MAX_PENDING_ACCEPTS);
    /* a real peer still gets in while every slot is taken */
    s = fake_net_raw_connect(&la.sin6);
    m_auth(&m, 1, 0, "G", "Alice", NULL);
    send_msg(s, &m);
    m_connect(&m, 0x01, 4242, NULL, 0, NULL);
    send_msg(s, &m);
    tu_pump(1, 1);
    d = conn_event(e);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    PeerGraphFreeData(d);
    for (i = 0; i < PEER_MAX_PENDING_ACCEPTS + 20; i++) fake_net_raw_close(silent[i]);
    fake_net_raw_close(s);
    tu_pump(1, 1);
    /* connections per graph: attempts to unreachable addresses count too */
    {
        SOCKADDR_IN6 all = fake_net_addr6("2001:db8::77", 0); /* every port */
        fake_net_blackhole(&all);
    }
    for (i = 0; i < PEER_MAX_CONNECTIONS_PER_GRAPH; i++) {
        PEER_ADDRESS a = peer_addr(fake_net_addr6("2001:db8::77", (unsigned short)(1000 + i)));
        assert_int_equal(PeerGraphConnect(j, NULL, &a, &id), S_OK);
    }
    {
        PEER_ADDRESS a = peer_addr(fake_net_addr6("2001:db8::77", 999));
        assert_int_equal(PeerGraphConnect(j, NULL, &a, &id), E_OUTOFMEMORY);
    }
}

/* The poll callback sees each socket's interest and a 0 before it closes. */
static int cb_calls, cb_zero;
static void poll_cb(PVOID ctx, PEER_SOCKET s, DWORD ev)
{
    (void)ctx;
    (void)s;
    cb_calls++;
    if (!ev) cb_zero++;
}
static void test_poll_callback(void **st)
{
    HGRAPH A = tu_create(L"G", L"Alice"), B = tu_open(L"G", L"Bob");
    PEER_ADDRESS la;
    ULONGLONG id;
    (void)st;
    cb_calls = cb_zero = 0;
    assert_int_equal(PeerGraphSetPollCallback(poll_cb, NULL), S_OK);
    la = tu_listen(A);
    assert_int_equal(cb_calls, 1);
    assert_int_equal(PeerGraphConnect(B, NULL, &la, &id), S_OK);
    assert_int_equal(cb_calls, 2); /* connecting socket: WRITE */
    tu_pump(5, 1);
    assert_true(cb_calls >= 4);
    assert_int_equal(PeerGraphClose(A), S_OK);
    assert_int_equal(PeerGraphClose(B), S_OK);
    tu_pump(2, PEER_LINGER_MS + 1);
    assert_int_equal(fake_net_open_sockets(), 0);
    assert_int_equal(cb_zero, 3); /* listener + both ends */
    assert_int_equal(PeerGraphSetPollCallback(NULL, NULL), S_OK);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_initiator_wire_and_sync, setup, teardown),
        cmocka_unit_test_setup_teardown(test_responder_welcome_and_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pipelined_sync_initiator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pushed_sync_initiator, setup, teardown),
        cmocka_unit_test_setup_teardown(test_pushed_sync_responder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_sync_messages, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_in_solicit_hash, setup, teardown),
        cmocka_unit_test_setup_teardown(test_responder_queues_solicitations, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_codes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refuse_busy_follows_referrals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_inbound_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tcp_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_library_to_library, setup, teardown),
        cmocka_unit_test_setup_teardown(test_simultaneous_cross_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_one_byte_at_a_time, setup, teardown),
        cmocka_unit_test_setup_teardown(test_message_across_frames, setup, teardown),
        cmocka_unit_test_setup_teardown(test_peer_closes_at_every_step, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_frames_and_headers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_in_every_welcome_byte, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_at_responder, setup, teardown),
        cmocka_unit_test_setup_teardown(test_responder_decisions, setup, teardown),
        cmocka_unit_test_setup_teardown(test_shutdown_sends_disconnect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_poll_callback, setup, teardown),
        cmocka_unit_test_setup_teardown(test_limits, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
