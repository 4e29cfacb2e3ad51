/*
 * test_graph.c - the self-maintaining graph on the fake network and the
 * synthetic clock: presence records, EnumNodes / GetNodeInfo /
 * SetNodeAttributes / SetPresence, NODE_CHANGED events, and connection
 * maintenance: 100 nodes joining through one seed end up as one connected
 * graph with 2..7 neighbors each and every node visible everywhere; when 30%
 * leave at once the survivors reconnect.
 */
#include "rawpeer.h"

static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

static ULONG count_nodes(HGRAPH h, const wchar_t *peer)
{
    HPEERENUM en;
    ULONG n = 0;
    assert_int_equal(PeerGraphEnumNodes(h, peer, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    return n;
}

static HPEEREVENT reg_nodes(HGRAPH h)
{
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_NODE_CHANGED, NULL};
    HPEEREVENT e;
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, &r, &e), S_OK);
    return e;
}

/* Counts NODE_CHANGED events of a type about `node` (0 = any), draining e. */
static int node_events(HPEEREVENT e, PEER_NODE_CHANGE_TYPE ct, ULONGLONG node, const wchar_t *peer)
{
    PPEER_GRAPH_EVENT_DATA d;
    int n = 0;
    while ((d = tu_event(e, PEER_GRAPH_EVENT_NODE_CHANGED)) != NULL) {
        assert_int_equal(d->nodeChangeData.dwSize, sizeof d->nodeChangeData);
        if (d->nodeChangeData.changeType == ct && (!node || d->nodeChangeData.ullNodeId == node)) {
            if (peer) assert_true(wcscmp(d->nodeChangeData.pwzPeerId, peer) == 0);
            n++;
        }
        PeerGraphFreeData(d);
    }
    return n;
}

/* A raw peer joins the graph listening at a: AUTH_INFO (capability bits
 * ext) and CONNECT as node `node`; rb is cleared for its replies. */
static PEER_SOCKET raw_join(const SOCKADDR_IN6 *a, unsigned ext, const char *graph, const char *peer, const char *target,
                            ULONGLONG node, rxbuf *rb, msg *m)
{
    PEER_SOCKET s = fake_net_raw_connect(a);
    memset(rb, 0, sizeof *rb);
    m_auth(m, 1, ext, graph, peer, target);
    send_msg(s, m);
    m_connect(m, 0x01, node, NULL, 0, NULL);
    send_msg(s, m);
    return s;
}

/* Joins h to the node at a; pumps until h is synchronized, then listens. */
/* Joins through a; then listens (on addr6, an address of its own, if given). */
static PEER_ADDRESS join_at(HGRAPH h, PEER_ADDRESS *a, const char *addr6)
{
    ULONGLONG id;
    DWORD st = 0;
    int i;
    HPEEREVENT ev = tu_register_all(h);
    SOCKADDR_IN6 src;
    if (addr6) { src = fake_net_addr6(addr6, 0); fake_net_set_source(&src); } /* the join link is ours too */
    assert_int_equal(PeerGraphConnect(h, NULL, a, &id), S_OK);
    for (i = 0; i < 2000 && !(st & PEER_GRAPH_STATUS_SYNCHRONIZED); i++) { /* busy nodes: retried on the 30 s timer */
        tu_pump(1, i < 50 ? 10 : 100);
        assert_int_equal(PeerGraphGetStatus(h, &st), S_OK);
    }
    if (!(st & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
        PPEER_GRAPH_EVENT_DATA d;
        print_message("not synchronized: status %lx, %lu neighbors; attempts:\n", (unsigned long)st,
                      (unsigned long)tu_neighbors(h));
        while ((d = tu_event(ev, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            print_message("  connection %llu status %d reason %lx\n", (unsigned long long)d->connectionChangeData.ullConnectionId,
                          d->connectionChangeData.status, (unsigned long)d->connectionChangeData.hrConnectionFailedReason);
            PeerGraphFreeData(d);
        }
    }
    assert_true(st & PEER_GRAPH_STATUS_SYNCHRONIZED);
    assert_int_equal(PeerGraphUnregisterEvent(ev), S_OK);
    fake_net_set_source(NULL);
    return addr6 ? tu_listen_at(h, addr6) : tu_listen(h);
}
static PEER_ADDRESS join(HGRAPH h, PEER_ADDRESS *a) { return join_at(h, a, NULL); }

/* Presence: every listening node is enumerable everywhere with its peer ID,
 * address and attributes; attribute changes and departures are NODE_CHANGED
 * events; SetPresence / EnumNodes argument rules. */
static void test_presence_and_nodes(void **st)
{
    HGRAPH a = tu_create(L"G", L"A"), b = tu_open(L"G", L"B"), c = tu_open(L"G", L"C");
    HPEEREVENT ea = reg_nodes(a), ec = reg_nodes(c), eb = reg_nodes(b);
    PEER_ADDRESS aa = tu_listen(a), ba, ca;
    HPEERENUM en;
    PEER_NODE_INFO **items;
    PPEER_NODE_INFO ni;
    ULONG n = 10, i;
    ULONGLONG nb = local_node(b);
    (void)st;
    assert_int_equal(PeerGraphEnumNodes(b, NULL, &en), PEER_E_GRAPH_NOT_READY);
    ba = join(b, &aa);
    ca = join(c, &aa);
    tu_pump(10, 10);
    assert_int_equal(count_nodes(a, NULL), 3);
    assert_int_equal(count_nodes(b, NULL), 3);
    assert_int_equal(count_nodes(c, NULL), 3);
    assert_int_equal(count_nodes(c, L"B"), 1);
    assert_int_equal(count_nodes(c, L"nobody"), 0);
    assert_int_equal(node_events(ea, PEER_NODE_CHANGE_CONNECTED, nb, L"B"), 1);
    assert_int_equal(PeerGraphEnumNodes(c, L"B", &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    assert_int_equal(n, 1);
    assert_true(items[0]->ullNodeId == nb);
    assert_true(wcscmp(items[0]->pwzPeerId, L"B") == 0);
    assert_int_equal(items[0]->cAddresses, 1);
    assert_int_equal(fake_net_port(&items[0]->pAddresses[0].sin6), fake_net_port(&ba.sin6));
    assert_null(items[0]->pwzAttributes);
    PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    /* attributes travel in the presence record */
    node_events(ec, PEER_NODE_CHANGE_UPDATED, 0, NULL);
    assert_int_equal(PeerGraphSetNodeAttributes(b, L"<role>host</role>"), S_OK);
    assert_int_equal(node_events(eb, PEER_NODE_CHANGE_UPDATED, 0, L"B"), 1); /* local: node ID 0 */
    tu_pump(5, 10);
    assert_int_equal(node_events(ec, PEER_NODE_CHANGE_UPDATED, nb, L"B"), 1);
    assert_int_equal(PeerGraphGetNodeInfo(c, nb, &ni), S_OK);
    assert_true(wcscmp(ni->pwzPeerId, L"B") == 0);
    assert_true(ni->pwzAttributes && wcscmp(ni->pwzAttributes, L"<role>host</role>") == 0);
    assert_int_equal(ni->cAddresses, 1);
    PeerGraphFreeData(ni);
    assert_int_equal(PeerGraphGetNodeInfo(c, 0x1234, &ni), PEER_E_NODE_NOT_FOUND);
    assert_int_equal(PeerGraphSetPresence(c, TRUE), S_OK);
    assert_int_equal(PeerGraphSetPresence(NULL, TRUE), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphEnumNodes(c, NULL, NULL), E_INVALIDARG);
    /* B leaves: its presence is deleted, the others see it go */
    assert_int_equal(PeerGraphClose(b), S_OK);
    tu_pump(5, 10);
    assert_int_equal(node_events(ea, PEER_NODE_CHANGE_DISCONNECTED, nb, L"B"), 1);
    assert_int_equal(node_events(ec, PEER_NODE_CHANGE_DISCONNECTED, nb, L"B"), 1);
    assert_int_equal(count_nodes(a, NULL), 2);
    assert_int_equal(count_nodes(c, NULL), 2);
    (void)ca;
    for (i = 0; i < 2; i++) tu_pump(1, 10);
}

/* ---- many nodes ---- */

#define NN 100
static HGRAPH gs[NN];
static ULONGLONG ids[NN];

static int index_of_node(ULONGLONG id)
{
    int i;
    for (i = 0; i < NN; i++)
        if (gs[i] && ids[i] == id) return i;
    return -1;
}

/* Neighbor node IDs of graph i into out (max 16); returns the count. */
static ULONG neighbor_ids(int i, ULONGLONG *out)
{
    HPEERENUM en;
    PEER_CONNECTION_INFO **items;
    ULONG n = 16, k;
    assert_int_equal(PeerGraphEnumConnections(gs[i], PEER_CONNECTION_NEIGHBOR, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    for (k = 0; k < n; k++) out[k] = items[k]->ullNodeId;
    if (n) PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    return n;
}

/* Every live node of gs[lo..hi) has 2..7 neighbors, all in the group, and
 * the group's live nodes form one component. */
static int check_group(int lo, int hi, int verbose)
{
    int seen[NN] = {0}, stack[NN], sp = 0, live = 0, reached = 0, i, ok = 1;
    for (i = lo; i < hi; i++) {
        ULONGLONG nb[16];
        ULONG n, k;
        if (!gs[i]) continue;
        live++;
        n = neighbor_ids(i, nb);
        if (n < PEER_MIN_NEIGHBORS || n > PEER_MAX_NEIGHBORS) {
            if (verbose) print_message("node %d has %lu neighbors\n", i, (unsigned long)n);
            ok = 0;
        }
        for (k = 0; k < n; k++) {
            int j = index_of_node(nb[k]);
            if (j < lo || j >= hi) {
                if (verbose) print_message("node %d has a neighbor outside %d..%d\n", i, lo, hi - 1);
                ok = 0;
            }
        }
    }
    for (i = lo; i < hi && !gs[i]; i++) {}
    if (i == hi) return 0;
    seen[i] = 1;
    stack[sp++] = i;
    while (sp) {
        ULONGLONG nb[16];
        int cur = stack[--sp];
        ULONG n = neighbor_ids(cur, nb), k;
        reached++;
        for (k = 0; k < n; k++) {
            int j = index_of_node(nb[k]);
            if (j >= 0 && !seen[j]) { seen[j] = 1; stack[sp++] = j; }
        }
    }
    if (reached != live) {
        if (verbose) print_message("one component holds %d of %d nodes\n", reached, live);
        ok = 0;
    }
    return ok;
}
static int check_mesh(int verbose) { return check_group(0, NN, verbose); }

/* Pumps in steps of stepMs until check_mesh holds (at most maxSteps). */
static int settle(int maxSteps, ULONGLONG stepMs)
{
    int i;
    for (i = 0; i < maxSteps; i++) {
        tu_pump(1, stepMs);
        if (i % 10 == 9 && check_mesh(0)) return 1;
    }
    return check_mesh(1);
}

static void test_hundred_nodes_through_one_seed(void **st)
{
    PEER_ADDRESS seed;
    int i, left = 0;
    ULONG live;
    (void)st;
    gs[0] = tu_create(L"big", L"n0");
    seed = tu_listen(gs[0]);
    ids[0] = local_node(gs[0]);
    for (i = 1; i < NN; i++) {
        wchar_t p[16];
        swprintf(p, 16, L"n%d", i);
        gs[i] = tu_open(L"big", p);
        ids[i] = local_node(gs[i]);
        join(gs[i], &seed);
    }
    /* the graph maintenance timer (300 s) brings everyone to the ideal count */
    assert_true(settle(200, 5000));
    tu_pump(20, 1000);
    for (i = 0; i < NN; i++) assert_int_equal(count_nodes(gs[i], NULL), NN);
    /* 30% leave at once; the survivors repair the graph */
    for (i = 1; i < NN; i += 3) {
        assert_int_equal(PeerGraphClose(gs[i]), S_OK);
        gs[i] = NULL;
        left++;
    }
    assert_true(left >= 30);
    assert_true(settle(200, 5000));
    /* A node that left at the same moment as its neighbors took its presence
     * deletion with it; in the compat profile such a presence disappears
     * when it expires (ulPresenceLifetime, 300 s). */
    tu_pump(330, 1000); /* (1 s steps: a refreshed presence needs a step per hop to beat its 20 s margin) */
    live = NN - (ULONG)left;
    for (i = 0; i < NN; i++)
        if (gs[i]) assert_int_equal(count_nodes(gs[i], NULL), live);
    for (i = 0; i < NN; i++)
        if (gs[i]) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    tu_pump(3, 3000);
}

/* Fast profile against a raw peer: Pings keep an idle link alive; a peer
 * that agreed to the fast profile (capability 0x20) and falls silent is
 * dropped after PEER_FAST_DEAD_MS with PEER_E_TIMEOUT; a plain peer that
 * stays silent is not. */
static void fast_case(unsigned ext, int expectDrop)
{
    HGRAPH h = tu_create(L"G", L"A");
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, NULL};
    HPEEREVENT e;
    PEER_ADDRESS la;
    PEER_SOCKET s;
    static rxbuf rb;
    static msg m;
    int pings = 0, frames = 0, i;
    PPEER_GRAPH_EVENT_DATA d;
    PEER_GRAPH_TIMERS tm;
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, &r, &e), S_OK);
    assert_int_equal(PeerGraphGetTimers(h, &tm), S_OK);
    assert_int_equal(tm.ulMaintenanceMs, PEER_MAINT_CONNECTED_MS);
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, (PEER_MAINTENANCE_PROFILE)7), E_INVALIDARG);
    assert_int_equal(PeerGraphGetTimers(h, &tm), S_OK);
    assert_int_equal(tm.dwSize, sizeof tm);
    assert_int_equal(tm.ulMaintenanceMs, PEER_FAST_MAINT_MS);
    assert_int_equal(tm.ulKeepaliveMs, PEER_FAST_KEEPALIVE_MS);
    assert_int_equal(tm.ulDeadMs, PEER_FAST_DEAD_MS);
    tm.ulDeadMs = tm.ulKeepaliveMs; /* dead must be at least two keepalives */
    assert_int_equal(PeerGraphSetTimers(h, &tm), E_INVALIDARG);
    tm.ulDeadMs = PEER_FAST_DEAD_MS;
    tm.dwSize = 4;
    assert_int_equal(PeerGraphSetTimers(h, &tm), E_INVALIDARG);
    tm.dwSize = sizeof tm;
    assert_int_equal(PeerGraphSetTimers(h, NULL), E_INVALIDARG);
    assert_int_equal(PeerGraphSetTimers(NULL, &tm), PEER_E_INVALID_GRAPH);
    assert_int_equal(PeerGraphSetTimers(h, &tm), S_OK);
    la = tu_listen(h);
    s = raw_join(&la.sin6, ext, "G", "Raw", "A", 0x4242, &rb, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &rb, &m) > 0);
    assert_int_equal(m.b[5], 3);                    /* WELCOME */
    assert_int_equal(m.b[25], ext & 0x3f);          /* the fast bit is agreed (we run fast) */
    d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    PeerGraphFreeData(d);
    /* PEER_FAST_DEAD_MS - 100 ms of silence from the peer (a plain peer: 5 s
     * more): we keep the link busy (Pings when nothing else goes out: no
     * gap over PEER_FAST_KEEPALIVE_MS + a step), the link stays */
    {
        ULONGLONG last = fake_net_now();
        int sent = 0, steps = (int)(PEER_FAST_DEAD_MS / 100) - 1 + (expectDrop ? 0 : 50);
        for (i = 0; i < steps; i++) {
            unsigned ka = rb.ka;
            tu_pump(1, 100);
            while (recv_msg_all(s, &rb, &m) > 0) {
                if (m.b[5] == 0x0D && m.n == 28) pings++;
                sent++;
                last = fake_net_now();
            }
            if (rb.ka != ka) { /* keepalive frames (P17): only to a peer that agreed to 0x20 */
                assert_true(ext & 0x20);
                frames += (int)(rb.ka - ka);
                last = fake_net_now();
            }
            assert_true(fake_net_now() - last <= PEER_FAST_KEEPALIVE_MS + 100);
        }
        assert_true(sent + frames >= 2);
        if (ext & 0x20) { /* the keepalive is the 2-byte frame (test_signature_beat looks inside) */
            assert_int_equal(pings, 0);
            assert_true(frames >= 1);
        } else
            assert_true(pings >= 1);
    }
    assert_null(tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION));
    /* past PEER_FAST_DEAD_MS */
    tu_pump(3, 100);
    d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION);
    if (expectDrop) {
        assert_non_null(d);
        assert_int_equal(d->connectionChangeData.status, PEER_DISCONNECTED);
        assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_TIMEOUT);
        PeerGraphFreeData(d);
    } else {
        assert_null(d);
        tu_pump(30, 100);
        assert_null(tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION));
        assert_int_equal(tu_neighbors(h), 1);
    }
    fake_net_raw_close(s);
    assert_int_equal(PeerGraphClose(h), S_OK);
    tu_pump(2, 10);
}

static void test_fast_profile_keepalive(void **st)
{
    (void)st;
    fast_case(0x3f, 1);
    fast_case(0x1f, 0);
}

/* DEPARTED (0x81) from a raw peer: k entries of node ID + presence version. */
static void m_departed(msg *m, const ULONGLONG *nodes, const unsigned long *vers, int k)
{
    int i;
    hdr(m, 0x81);
    for (i = 0; i < k; i++) {
        p64(m, nodes[i]);
        p32(m, vers[i]);
    }
    fin(m);
}

/* After hostile input on a raw link: the last NEIGHBOR_CONNECTION event of
 * e says the link stayed (ok) or closed with PEER_E_PROTOCOL_ERROR, and h
 * has `links` neighbors (the others carry on). */
static void expect_link_outcome(HPEEREVENT e, HGRAPH h, int ok, ULONG links)
{
    PPEER_GRAPH_EVENT_DATA d, last = NULL;
    while ((d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
        if (last) PeerGraphFreeData(last);
        last = d;
    }
    assert_non_null(last);
    if (ok)
        assert_int_equal(last->connectionChangeData.status, PEER_CONNECTED);
    else {
        assert_int_equal(last->connectionChangeData.status, PEER_DISCONNECTED);
        assert_int_equal(last->connectionChangeData.hrConnectionFailedReason, PEER_E_PROTOCOL_ERROR);
    }
    assert_int_equal(tu_neighbors(h), links);
    PeerGraphFreeData(last);
}

/* The hostile-input cases below: a fast node h takes raw links, one per
 * case; each case sends something, then the link either stays (counted in
 * links) or closes with PEER_E_PROTOCOL_ERROR, and nothing else changes. */
typedef struct hostile {
    HGRAPH h;
    HPEEREVENT e;
    PEER_ADDRESS la;
    int links; /* raw links that stayed */
} hostile;

static void hostile_open(hostile *x)
{
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, NULL};
    memset(x, 0, sizeof *x);
    x->h = tu_create(L"G", L"A");
    assert_int_equal(PeerGraphRegisterEvent(x->h, NULL, 1, &r, &x->e), S_OK);
    assert_int_equal(PeerGraphSetMaintenanceProfile(x->h, PEER_MAINTENANCE_FAST), S_OK);
    x->la = tu_listen(x->h);
}

/* A raw link as node `node`, agreeing to the fast profile (0x3f) or not (0x1f). */
static PEER_SOCKET hostile_link(hostile *x, int agreed, ULONGLONG node, rxbuf *rb, msg *m)
{
    PEER_SOCKET s = raw_join(&x->la.sin6, agreed ? 0x3f : 0x1f, "G", "Raw", "A", node, rb, m);
    tu_pump(1, 1);
    return s;
}

/* After the case's input on s: the outcome checked; a closed link's socket closed. */
static void hostile_outcome(hostile *x, PEER_SOCKET s, int ok)
{
    tu_pump(2, 1);
    x->links += ok;
    expect_link_outcome(x->e, x->h, ok, (ULONG)x->links);
    if (!ok) fake_net_raw_close(s);
}

static void hostile_close(hostile *x)
{
    assert_int_equal(PeerGraphClose(x->h), S_OK);
    tu_pump(2, 10);
}

/* DEPARTED from a raw peer (PROTOCOL.md section 4): entries about unknown
 * nodes are harmless; a message of no whole entry, of a size that is not
 * 16 or 8 + 12 k, of more than 4096 entries, or on a link that did not
 * agree to the fast profile closes that link with PEER_E_PROTOCOL_ERROR and
 * nothing else. */
static void test_departed_hostile(void **st)
{
    hostile x;
    static rxbuf rb;
    static msg m;
    static ULONGLONG nodes[4097];
    static unsigned long vers[4097];
    int c, i;
    (void)st;
    for (i = 0; i < 4097; i++) { nodes[i] = 0x123456789ULL + (ULONGLONG)i; vers[i] = 1; }
    hostile_open(&x);
    for (c = 0; c < 7; c++) {
        PEER_SOCKET s = hostile_link(&x, c != 2, 0x5000 + (ULONGLONG)c, &rb, &m);
        switch (c) {
        case 0: m_departed(&m, nodes, vers, 1); m.n -= 4; fin(&m); break; /* 16 bytes: one node, no version */
        case 1: hdr(&m, 0x81); fin(&m); break;                            /* no entry */
        case 2: m_departed(&m, nodes, vers, 1); break;                    /* not agreed */
        case 3: m_departed(&m, nodes, vers, 1); p8(&m, 0); fin(&m); break; /* 21 bytes */
        case 4: m_departed(&m, nodes, vers, 2); m.n -= 5; fin(&m); break; /* 27 bytes */
        case 5: m_departed(&m, nodes, vers, 4097); break;                 /* one entry too many */
        case 6: m_departed(&m, nodes, vers, 4096); break;                 /* the most */
        }
        send_msg(s, &m);
        hostile_outcome(&x, s, c == 0 || c == 6); /* (the links that stay carry on) */
    }
    hostile_close(&x);
}

/* RENEW (0x82, PROTOCOL.md P19) from a raw peer: k entries of record ID
 * (its last bytes = the entry's index), the version renewed, the new
 * version, no flag and the new times. */
static void m_renew(msg *m, unsigned long base, unsigned long ver, int k)
{
    int i, j;
    hdr(m, 0x82);
    for (i = 0; i < k; i++) {
        for (j = 0; j < 14; j++) p8(m, 0xA0 + (unsigned)j);
        p16(m, (unsigned)i);
        p32(m, base);
        p32(m, ver);
        p32(m, 0);
        p64(m, 130000000000000000ULL);
        p64(m, 130000000000000000ULL + 3600 * 10000000ULL);
    }
    fin(m);
}

/* The WANT h sent on s (type 0x83): its entry count, -1 if none came. */
static int want_entries(PEER_SOCKET s, rxbuf *rb, msg *m)
{
    while (recv_msg(s, rb, m) > 0) {
        if (m->b[5] != 0x83) continue;
        assert_int_equal((m->n - 8) % 16, 0);
        return (int)((m->n - 8) / 16);
    }
    return -1;
}

/* RENEW and WANT from a raw peer (PROTOCOL.md P19): renewals of records we
 * do not hold are asked for in one WANT (here 1 and 1024 of them); a RENEW
 * or WANT of no whole entry, of a size that is not 8 + 44 k (16 k), of more
 * than 1024 entries, with a version not above the one renewed, a renewed
 * version 0 or an unknown flag, or on a link that did not agree to the fast profile closes that
 * link with PEER_E_PROTOCOL_ERROR and nothing else. */
static void test_renew_hostile(void **st)
{
    hostile x;
    static rxbuf rb;
    static msg m;
    int c;
    (void)st;
    hostile_open(&x);
    for (c = 0; c < 11; c++) {
        PEER_SOCKET s = hostile_link(&x, c != 2, 0x7000 + (ULONGLONG)c, &rb, &m);
        int ok = c == 0 || c == 10;
        switch (c) {
        case 0: m_renew(&m, 1, 2, 1); break;                       /* a record h lacks */
        case 1: hdr(&m, 0x82); fin(&m); break;                     /* no entry */
        case 2: m_renew(&m, 1, 2, 1); break;                       /* not agreed */
        case 3: m_renew(&m, 1, 2, 1); p8(&m, 0); fin(&m); break;   /* 53 bytes */
        case 4: m_renew(&m, 3, 3, 2); break;                       /* not a later version */
        case 5: m_renew(&m, 0, 2, 1); break;                       /* version 0 renewed */
        case 6: hdr(&m, 0x83); p64(&m, 1); p64(&m, 2); p8(&m, 3); fin(&m); break; /* WANT of 25 bytes */
        case 7: hdr(&m, 0x83); fin(&m); break;                     /* WANT of no entry */
        case 8: m_renew(&m, 1, 2, 1); m.b[8 + 27] = 2; break;      /* an unknown flag */
        case 9: m_renew(&m, 1, 2, 1025); break;                    /* one entry too many */
        case 10: m_renew(&m, 1, 2, 1024); break;                   /* the most */
        }
        send_msg(s, &m);
        hostile_outcome(&x, s, ok);
        if (ok) assert_int_equal(want_entries(s, &rb, &m), c ? 1024 : 1);
    }
    hostile_close(&x);
}

/* Keepalive frames from a raw peer (PROTOCOL.md P17): 0xFF 0x00, a beat of
 * a signature we do not hold, and one between two frames of a message are
 * taken; 0xFF with a second byte, a frame size of 32,769, or any keepalive
 * frame on a link that did not agree to the fast profile closes that link
 * with PEER_E_PROTOCOL_ERROR and nothing else. */
static void test_keepalive_frames_hostile(void **st)
{
    hostile x;
    static rxbuf rb;
    static msg m;
    static const unsigned char frames[6][2] = {{0xFF, 0}, {0xFF, 1}, {0xFF, 0}, {0x80, 1}, {0x85, 7}, {0xFF, 0}};
    ULONGLONG node = 0x777;
    unsigned long ver = 1;
    int c;
    (void)st;
    hostile_open(&x);
    for (c = 0; c < 6; c++) {
        PEER_SOCKET s = hostile_link(&x, c != 2, 0x6000 + (ULONGLONG)c, &rb, &m);
        if (c == 5) { /* a DEPARTED in two frames, the keepalive frame between them */
            unsigned char fh[2];
            m_departed(&m, &node, &ver, 1);
            fh[0] = 0; fh[1] = 10;
            fake_net_raw_write(s, fh, 2);
            fake_net_raw_write(s, m.b, 10);
            fake_net_raw_write(s, frames[c], 2);
            fh[1] = (unsigned char)(m.n - 10);
            fake_net_raw_write(s, fh, 2);
            fake_net_raw_write(s, m.b + 10, m.n - 10);
        } else
            fake_net_raw_write(s, frames[c], 2);
        hostile_outcome(&x, s, c == 0 || c == 4 || c == 5);
    }
    hostile_close(&x);
}

/* Timers set with PeerGraphSetTimers take effect: a 300 ms dead time drops a
 * silent fast peer within half a second. */
static void test_custom_timers(void **st)
{
    HGRAPH h = tu_create(L"G", L"A");
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, NULL};
    HPEEREVENT e;
    PEER_GRAPH_TIMERS tm;
    PEER_ADDRESS la;
    PEER_SOCKET s;
    static rxbuf rb;
    static msg m;
    PPEER_GRAPH_EVENT_DATA d;
    (void)st;
    assert_int_equal(PeerGraphRegisterEvent(h, NULL, 1, &r, &e), S_OK);
    assert_int_equal(PeerGraphSetMaintenanceProfile(h, PEER_MAINTENANCE_FAST), S_OK);
    assert_int_equal(PeerGraphGetTimers(h, &tm), S_OK);
    tm.ulKeepaliveMs = 100;
    tm.ulDeadMs = 300;
    assert_int_equal(PeerGraphSetTimers(h, &tm), S_OK);
    la = tu_listen(h);
    s = raw_join(&la.sin6, 0x3f, "G", "Raw", "A", 0x4243, &rb, &m);
    tu_pump(1, 1);
    d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_CONNECTED);
    PeerGraphFreeData(d);
    tu_pump(2, 100);
    assert_null(tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION));
    tu_pump(3, 100);
    d = tu_event(e, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION);
    assert_non_null(d);
    assert_int_equal(d->connectionChangeData.status, PEER_DISCONNECTED);
    assert_int_equal(d->connectionChangeData.hrConnectionFailedReason, PEER_E_TIMEOUT);
    PeerGraphFreeData(d);
    fake_net_raw_close(s);
    assert_int_equal(PeerGraphClose(h), S_OK);
}

/* Fast profile between library nodes: idle links survive on Pings; when a
 * node hangs, the graph learns it and repairs within seconds. */
/* n fast-profile nodes of graph `graph` (peer IDs prefix0..): node 0 creates
 * it and listens at fd00::1 (*seed), the others join it; 1 once every node
 * has 2..7 neighbors and sees all n (within 10 s of synthetic time). */
static int fast_mesh(HGRAPH *g, int n, const wchar_t *graph, const wchar_t *prefix, PEER_ADDRESS *seed)
{
    int i, k, ok = 0;
    wchar_t p[16];
    for (i = 0; i < n; i++) {
        swprintf(p, 16, L"%ls%d", prefix, i);
        g[i] = i ? tu_open(graph, p) : tu_create(graph, p);
        assert_int_equal(PeerGraphSetMaintenanceProfile(g[i], PEER_MAINTENANCE_FAST), S_OK);
        if (!i) *seed = tu_listen_at(g[0], "fd00::1");
        else join(g[i], seed);
    }
    for (k = 0; k < 100 && !ok; k++) { /* fast maintenance settles within seconds */
        tu_pump(1, 100);
        for (i = 0, ok = 1; i < n && ok; i++) {
            ULONG c = tu_neighbors(g[i]);
            ok = c >= PEER_MIN_NEIGHBORS && c <= PEER_MAX_NEIGHBORS && count_nodes(g[i], NULL) == (ULONG)n;
        }
    }
    return ok;
}

/* gs[0..n): fast-profile nodes of `graph` with peer IDs prefix0.., node i
 * at fd00::(base + i); gs[0] creates the graph and listens, the others join
 * it one after another (ids[] filled; addrs[i], if given, node i's address). */
/* n nodes of one profile joining through node 0, each at its own address
 * fd00::base+i (in addrs if not NULL). */
static void group_at(int n, const wchar_t *graph, const wchar_t *prefix, int base, SOCKADDR_IN6 *addrs,
                     PEER_MAINTENANCE_PROFILE profile)
{
    PEER_ADDRESS seed;
    int i;
    for (i = 0; i < n; i++) {
        wchar_t p[16];
        char a[32];
        swprintf(p, 16, L"%ls%d", prefix, i);
        snprintf(a, sizeof a, "fd00::%d", base + i);
        gs[i] = i ? tu_open(graph, p) : tu_create(graph, p);
        assert_int_equal(PeerGraphSetMaintenanceProfile(gs[i], profile), S_OK);
        ids[i] = local_node(gs[i]);
        if (!i) seed = tu_listen_at(gs[0], a);
        if (addrs) addrs[i] = i ? join_at(gs[i], &seed, a).sin6 : seed.sin6;
        else if (i) join_at(gs[i], &seed, a);
    }
}
static void fast_group(int n, const wchar_t *graph, const wchar_t *prefix, int base, SOCKADDR_IN6 *addrs)
{
    group_at(n, graph, prefix, base, addrs, PEER_MAINTENANCE_FAST);
}

/* The DEPARTED messages a raw link has received so far: how many, and the
 * node IDs of their entries (the first 8; *nent counts all). */
static int read_departed(PEER_SOCKET s, rxbuf *rb, msg *m, ULONGLONG *nodes, int *nent)
{
    int n = 0;
    *nent = 0;
    while (recv_msg_all(s, rb, m) > 0) {
        size_t i;
        if (m->b[5] != 0x81) continue;
        n++;
        assert_true(m->n >= 20 && (m->n - 8) % 12 == 0);
        for (i = 8; i < m->n; i += 12) {
            if (*nent < 8) nodes[*nent] = g64(m->b + i);
            (*nent)++;
        }
    }
    return n;
}

/* Departures found in one service call go to each fast neighbor as one
 * DEPARTED message (PROTOCOL.md section 4), and a new fast link hears every
 * departure held in one message: two neighbors of A fall silent at once;
 * after one clock step past PEER_FAST_DEAD_MS A's raw fast neighbor reads one
 * message naming both, and a raw peer that connects afterwards reads one
 * message naming both.  (One message per departure per link was half a
 * million messages when half of 1000 nodes died, and the loop carrying them
 * starved the handshakes that repair the graph.) */
static void test_departed_batched(void **st)
{
    SOCKADDR_IN6 addrs[3];
    PEER_SOCKET s, s2;
    static rxbuf rb, rb2;
    static msg m;
    ULONGLONG got[8], unknown[2] = {0x777, 0x778};
    unsigned long v1[2] = {1, 1};
    int k, ok = 0, nent = 0;
    (void)st;
    fast_group(3, L"dep", L"d", 400, addrs);
    for (k = 0; k < 100 && !ok; k++) {
        tu_pump(1, 100);
        ok = tu_neighbors(gs[0]) == 2 && tu_neighbors(gs[1]) == 2 && tu_neighbors(gs[2]) == 2 &&
             count_nodes(gs[0], NULL) == 3;
    }
    assert_true(ok);
    s = raw_join(&addrs[0], 0x3f, "dep", "Raw", "d0", 0x4242, &rb, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s, &rb, &m) > 0);
    assert_int_equal(m.b[5], 3); /* WELCOME */
    assert_int_equal(read_departed(s, &rb, &m, got, &nent), 0);
    for (k = 0; k < 10; k++) { /* the raw link stays up: a harmless DEPARTED of two entries as keepalive */
        m_departed(&m, unknown, v1, 2);
        send_msg(s, &m);
        tu_pump(1, 100);
    }
    assert_int_equal(read_departed(s, &rb, &m, got, &nent), 0);
    assert_int_equal(tu_neighbors(gs[0]), 3);
    /* B and C fall silent; one step past the dead time */
    assert_true(fake_net_partition(&addrs[1], 2));
    m_departed(&m, unknown, v1, 2);
    send_msg(s, &m);
    tu_pump(1, PEER_FAST_DEAD_MS + 500);
    assert_int_equal(tu_neighbors(gs[0]), 1);
    assert_int_equal(count_nodes(gs[0], NULL), 1);
    assert_int_equal(read_departed(s, &rb, &m, got, &nent), 1);
    assert_int_equal(nent, 2);
    assert_true((got[0] == ids[1] && got[1] == ids[2]) || (got[0] == ids[2] && got[1] == ids[1]));
    /* a new fast link: the replay, in one message */
    s2 = raw_join(&addrs[0], 0x3f, "dep", "Raw2", "d0", 0x4343, &rb2, &m);
    tu_pump(1, 1);
    assert_true(recv_msg(s2, &rb2, &m) > 0);
    assert_int_equal(m.b[5], 3); /* WELCOME */
    assert_int_equal(read_departed(s2, &rb2, &m, got, &nent), 1);
    assert_int_equal(nent, 2);
    assert_true((got[0] == ids[1] && got[1] == ids[2]) || (got[0] == ids[2] && got[1] == ids[1]));
    fake_net_raw_close(s);
    fake_net_raw_close(s2);
    assert_true(fake_net_partition(NULL, 0));
    for (k = 0; k < 3; k++) { assert_int_equal(PeerGraphClose(gs[k]), S_OK); gs[k] = NULL; }
    tu_pump(3, 3000);
}

/* Fast profile, refilling after losing every neighbor (PROTOCOL.md P13):
 * x's neighbors close, and at the same instant all but three of the other
 * nodes, so x hears its neighbors leave but nothing of the rest: of its
 * candidates, the three live ones accept and the others refuse at the TCP
 * level (nothing listens).  It tries several at once and the next at once
 * after a refusal, so it is back at two neighbors within 30 ms (one or two
 * at a time with 100 ms after each refusal took longer). */
static void test_refill_after_losing_all(void **st)
{
    enum { NR = 10 };
    ULONGLONG nb[16], t0;
    ULONG n, j;
    int i, k, ok = 0, closed[NR] = {0}, live = 0, unknown = 0, x = NR - 1;
    (void)st;
    memset(gs, 0, sizeof gs);
    fake_net_seed(7);
    fast_group(NR, L"R", L"r", 301, NULL);
    for (k = 0; k < 100 && !ok; k++) {
        tu_pump(1, 100);
        ok = check_group(0, NR, 0);
        for (i = 0; i < NR && ok; i++) ok = count_nodes(gs[i], NULL) == NR;
    }
    assert_true(ok);
    n = neighbor_ids(x, nb);
    for (j = 0; j < n; j++) closed[index_of_node(nb[j])] = 1;
    for (i = 0; i < x; i++) live += !closed[i];
    for (i = 0; i < x && live > 3; i++)
        if (!closed[i]) { closed[i] = 1; live--; unknown++; }
    assert_true(unknown >= 2); /* dead nodes x will not hear about */
    for (i = 0; i < x; i++)
        if (closed[i]) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    t0 = fake_net_now();
    tu_pump(1, 1); /* x reads the DISCONNECTs: no neighbor left */
    assert_int_equal(tu_neighbors(gs[x]), 0);
    for (k = 0; k < 3000 && tu_neighbors(gs[x]) < PEER_MIN_NEIGHBORS; k++) tu_pump(1, 1);
    assert_true(tu_neighbors(gs[x]) >= PEER_MIN_NEIGHBORS);
    assert_true(fake_net_now() - t0 <= 30);
    for (i = 0; i < NR; i++)
        if (gs[i]) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
}

static void test_fast_profile_mesh(void **st)
{
    HGRAPH g[8];
    PEER_ADDRESS seed;
    int i, k, ok;
    (void)st;
    assert_true(fast_mesh(g, 8, L"F", L"f", &seed));
    /* the seed hangs (no FIN, no data): its neighbors find it dead within
     * PEER_FAST_DEAD_MS, the departure reaches every node (NODE_CHANGED)
     * within 3 s, and everyone is back at two neighbors or more */
    {
        HPEEREVENT ev[8];
        ULONGLONG dead = local_node(g[0]);
        for (i = 1; i < 8; i++) ev[i] = reg_nodes(g[i]);
        assert_true(fake_net_partition(&seed.sin6, 1)); /* cut off: it hears nothing, says nothing */
        for (k = 0; k < 30; k++) tu_pump(1, 100);
        for (i = 1; i < 8; i++) {
            assert_int_equal(node_events(ev[i], PEER_NODE_CHANGE_DISCONNECTED, dead, L"f0"), 1);
            assert_int_equal(count_nodes(g[i], NULL), 7);
        }
        /* all of them lost a link at once: a second attempt may have hit a
         * node that was itself refilling; within 3 s more all are at 2..7 */
        for (k = 0, ok = 0; k < 30 && !ok; k++) {
            tu_pump(1, 100);
            for (i = 1, ok = 1; i < 8 && ok; i++) {
                ULONG n = tu_neighbors(g[i]);
                ok = n >= PEER_MIN_NEIGHBORS && n <= PEER_MAX_NEIGHBORS;
            }
        }
        assert_true(ok);
        /* 10 s idle: the Pings keep every link (no false deaths; a link
         * dropped as least useful is replaced within seconds) */
        for (k = 0; k < 100; k++) tu_pump(1, 100);
        for (i = 1; i < 8; i++) assert_int_equal(node_events(ev[i], PEER_NODE_CHANGE_DISCONNECTED, 0, NULL), 0);
        for (k = 0, ok = 0; k < 50 && !ok; k++) {
            for (i = 1, ok = 1; i < 8 && ok; i++) {
                ULONG n = tu_neighbors(g[i]);
                ok = n >= PEER_MIN_NEIGHBORS && n <= PEER_MAX_NEIGHBORS;
            }
            if (!ok) tu_pump(1, 100);
        }
        assert_true(ok);
    }
    assert_int_equal(PeerGraphClose(g[0]), S_OK);
    assert_true(fake_net_partition(NULL, 0));
    for (i = 1; i < 8; i++) assert_int_equal(PeerGraphClose(g[i]), S_OK);
    tu_pump(3, 3000);
}

/* A node that leaves is not tried again: its address, handed out in
 * WELCOME referral lists, is dropped from every survivor's referrals when its
 * DISCONNECT (LEAVING) or its presence deletion arrives, so refilling goes to
 * live nodes.  A raw listener put at the leaver's address must see no
 * connection attempt. */
static void test_leaver_not_retried(void **st)
{
    HGRAPH g[7];
    PEER_ADDRESS seed;
    PEER_SOCKET raw;
    int i, k, round;
    (void)st;
    for (round = 0; round < 4; round++) {
        fake_net_seed(100 + (ULONGLONG)round);
        assert_true(fast_mesh(g, 7, L"V", L"v", &seed));
        assert_int_equal(PeerGraphClose(g[0]), S_OK);
        tu_pump(1, 1);
        raw = fake_net_raw_listen(&seed.sin6);
        assert_true(raw != PEER_INVALID_SOCKET);
        for (k = 0; k < 50; k++) { /* 5 s: refills, maintenance rounds */
            tu_pump(1, 100);
            assert_true(fake_net_raw_accept(raw) == PEER_INVALID_SOCKET);
        }
        for (i = 1; i < 7; i++) {
            ULONG n = tu_neighbors(g[i]);
            assert_true(n >= PEER_MIN_NEIGHBORS && n <= PEER_MAX_NEIGHBORS);
            assert_int_equal(count_nodes(g[i], NULL), 6);
        }
        fake_net_raw_close(raw);
        for (i = 1; i < 7; i++) assert_int_equal(PeerGraphClose(g[i]), S_OK);
        tu_pump(3, 3000);
    }
}

/* The Signature record ends up naming the lowest node ID, at every node;
 * when that node leaves, the next lowest takes over. */
static ULONGLONG signature_at(HGRAPH h)
{
    ULONGLONG v;
    (void)tu_signature(h, &v);
    return v;
}

/* Every open graph of g[0..n) holds signature sig. */
static int all_signatures(HGRAPH *g, int n, ULONGLONG sig)
{
    int i;
    for (i = 0; i < n; i++)
        if (g[i] && signature_at(g[i]) != sig) return 0;
    return 1;
}

static void test_signature(void **st)
{
    HGRAPH g[10];
    ULONGLONG id[10], low = (ULONGLONG)-1, next = (ULONGLONG)-1;
    PEER_ADDRESS seed;
    int i, lowest = 0, k;
    (void)st;
    g[0] = tu_create(L"S", L"s0");
    seed = tu_listen(g[0]);
    for (i = 1; i < 10; i++) {
        wchar_t p[8];
        swprintf(p, 8, L"s%d", i);
        g[i] = tu_open(L"S", p);
        join(g[i], &seed);
    }
    for (i = 0; i < 10; i++) {
        id[i] = local_node(g[i]);
        if (id[i] < low) { low = id[i]; lowest = i; }
    }
    for (k = 0; k < 50; k++) tu_pump(1, 200);
    for (i = 0; i < 10; i++)
        if (signature_at(g[i]) != low)
            print_message("node %d (%llx) signature %llx, want %llx\n", i, (unsigned long long)id[i],
                          (unsigned long long)signature_at(g[i]), (unsigned long long)low);
    for (i = 0; i < 10; i++) assert_true(signature_at(g[i]) == low);
    for (i = 0; i < 10; i++)
        if (i != lowest && id[i] < next) next = id[i];
    assert_int_equal(PeerGraphClose(g[lowest]), S_OK);
    g[lowest] = NULL;
    /* 10 s; longer only when the lowest node's leaving split the graph
     * (each part then elects its own signature, and the compat profile
     * repairs the split on its maintenance and partition timers) */
    for (k = 0; k < 50 || (k < 50 + 5 * 400 && !all_signatures(g, 10, next)); k++) tu_pump(1, 200);
    if (k > 50) print_message("the parts agreed after %d s\n", k / 5);
    for (i = 0; i < 10; i++)
        if (g[i] && signature_at(g[i]) != next)
            print_message("node %d (%llx) signature %llx, want %llx\n", i, (unsigned long long)id[i],
                          (unsigned long long)signature_at(g[i]), (unsigned long long)next);
    for (i = 0; i < 10; i++)
        if (g[i]) assert_true(signature_at(g[i]) == next);
    for (i = 0; i < 10; i++)
        if (g[i]) assert_int_equal(PeerGraphClose(g[i]), S_OK);
    tu_pump(3, 3000);
}

/* The compat Signature record is renewed by its owner 20 s before it
 * expires, and the renewal must reach every node well before the copy
 * there expires: along a chain of 10 nodes, with a host that handles
 * readiness at once but serves timers only every 4 s (a paced relay waits
 * for that), every node holds the owner's record with more than 16 s to
 * live at every step.  (Renewing at the expiry itself, or pacing each hop of the
 * renewal, leaves the far copies expiring first and starts an election.) */
#define NCH 10
static const PEER_RECORD *signature_rec(HGRAPH h, HPEERENUM *en, PEER_RECORD ***items)
{
    static const GUID sigType = {0x00000200, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
    ULONG n = 4;
    assert_int_equal(PeerGraphEnumRecords(h, &sigType, NULL, en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(*en, &n, (PVOID **)items), S_OK);
    if (n == 1) return (*items)[0];
    if (n) PeerGraphFreeData(*items);
    *items = NULL;
    return NULL;
}
static void test_signature_renewed_in_time(void **st)
{
    const PEER_NET_SHIM *net = fake_net_shim();
    HGRAPH g[NCH];
    PEER_ADDRESS prev;
    ULONGLONG low = (ULONGLONG)-1;
    DWORD v0 = 0, vlow = 0;
    HPEEREVENT ev[NCH];
    int i, k, lowest = 0;
    (void)st;
    g[0] = tu_create(L"R", L"r0");
    prev = tu_listen(g[0]);
    for (i = 1; i < NCH; i++) { /* a chain: each joins the one before */
        wchar_t p[8];
        swprintf(p, 8, L"r%d", i);
        g[i] = tu_open(L"R", p);
        prev = join(g[i], &prev);
    }
    for (i = 0; i < NCH; i++)
        if (local_node(g[i]) < low) { low = local_node(g[i]); lowest = i; }
    for (k = 0; k < 50; k++) tu_pump(1, 200);
    for (i = 0; i < NCH; i++) ev[i] = reg_nodes(g[i]);
    for (k = 0; k <= 300; k++) { /* 20 minutes, timers served every 4 s: four renewals */
        ULONGLONG ft;
        if (k) tu_pump_host(1, 4000);
        ft = net->pfnUtcNow(net->pvContext);
        for (i = 0; i < NCH; i++) {
            HPEERENUM en;
            PEER_RECORD **items;
            const PEER_RECORD *r = signature_rec(g[i], &en, &items);
            ULONGLONG exp = 0;
            int ok = r && signature_at(g[i]) == low;
            if (r) exp = ((ULONGLONG)r->ftExpiration.dwHighDateTime << 32) | r->ftExpiration.dwLowDateTime;
            ok = ok && exp > ft + 16 * 10000000ULL;
            if (!ok)
                print_message("step %d: node %d holds signature %llx (want %llx), %lld ms to live\n", k, i,
                              (unsigned long long)signature_at(g[i]), (unsigned long long)low,
                              r ? (long long)(exp - ft) / 10000 : -1LL);
            if (r && !k && i == lowest) v0 = r->dwVersion;
            if (r && i == lowest) vlow = r->dwVersion;
            if (items) PeerGraphFreeData(items);
            PeerGraphEndEnumeration(en);
            assert_true(ok);
        }
    }
    assert_true(vlow >= v0 + 4); /* (the renewals did happen) */
    for (i = 0; i < NCH; i++) /* nor did any presence lapse */
        assert_int_equal(node_events(ev[i], PEER_NODE_CHANGE_DISCONNECTED, 0, NULL), 0);
    for (i = 0; i < NCH; i++) assert_int_equal(PeerGraphClose(g[i]), S_OK);
    tu_pump(3, 3000);
}

/* 30% of 40 fast-profile nodes are cut off at once (dead as far as the rest
 * can tell): within 8 s the survivors are one component with 2..7 neighbors
 * each, and every survivor's node list comes to hold exactly the survivors. */
#define NK 40
static void test_kill_thirty_percent(void **st)
{
    HGRAPH dead[NK];
    SOCKADDR_IN6 cut[NK];
    SOCKADDR_IN6 addrs[NK];
    int i, k, nd = 0, ok = 0;
    (void)st;
    for (i = 0; i < NN; i++) gs[i] = NULL;
    fast_group(NK, L"kill", L"k", 200, addrs);
    for (i = 1; i < NK; i++)
        if (i % 10 < 3 || i == NK - 1) cut[nd++] = addrs[i]; /* 1, 2, 10, 11, 12, 20, ..., 39: 30% */
    assert_true(settle(300, 100));
    tu_pump(30, 100);
    for (i = 0; i < NK; i++) assert_int_equal(count_nodes(gs[i], NULL), NK);
    assert_true(fake_net_partition(cut, (size_t)nd));
    for (i = 1, k = 0; i < NK; i++)
        if (i % 10 < 3 || i == NK - 1) { dead[k++] = gs[i]; gs[i] = NULL; } /* out of the checks */
    assert_int_equal(k, nd);
    assert_int_equal(nd, 12);
    for (k = 0; k < 80 && !ok; k++) { /* 2 s to see the deaths, a dead candidate costs 2 s more */
        tu_pump(1, 100);
        ok = check_group(0, NK, 0);
    }
    if (!ok) check_group(0, NK, 1);
    assert_true(ok);
    /* Departures: announced by the witnesses of each death (a lost link, a
     * failed attempt).  A victim whose every neighbor died with it has no
     * witness until someone tries it; its presence expires at the latest. */
    for (k = 0, ok = 0; k < 400 && !ok; k++) {
        tu_pump(1, 1000);
        for (i = 0, ok = 1; i < NK && ok; i++)
            if (gs[i]) ok = count_nodes(gs[i], NULL) == (ULONG)(NK - nd);
    }
    if (!ok)
        for (i = 0; i < NK; i++)
            if (gs[i]) print_message("node %d sees %lu nodes\n", i, (unsigned long)count_nodes(gs[i], NULL));
    assert_true(ok);
    assert_true(settle(100, 100)); /* (a link dropped as least useful may leave a node briefly below 2) */
    for (i = 0; i < NK; i++)
        if (gs[i]) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    for (k = 0; k < nd; k++) assert_int_equal(PeerGraphClose(dead[k]), S_OK);
    assert_true(fake_net_partition(NULL, 0));
    tu_pump(3, 3000);
}

/* Contacts (compat timers): after a while between Cmin and Cmax nodes hold
 * a Contact record naming the current signature, everywhere the same set;
 * each holder asks the application for a long-term repair connection
 * (CONNECTION_REQUIRED), nobody else does. */
#define NCT 24
static ULONG contacts_at(HGRAPH h, ULONGLONG sig, wchar_t holders[][8], ULONG max)
{
    HPEERENUM en;
    PEER_RECORD **items;
    ULONG n = 64, k, good = 0;
    assert_int_equal(PeerGraphEnumRecords(h, &TU_CONTACT_TYPE, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    for (k = 0; k < n; k++) {
        assert_true(items[k]->data.cbData >= 20 + 32);
        if (g64(items[k]->data.pbData) != sig) continue;
        if (holders && good < max) wcsncpy(holders[good], items[k]->pwzCreatorId, 7);
        good++;
    }
    if (n) PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    return good;
}
/* Contacts with slow floods (fast profile, 100 nodes; PROTOCOL.md P11
 * damping): the holders all leave at once and every hop takes 500 ms; the
 * others refill to between Cmin and Cmin + 5 within 30 s, stay in that
 * range for the next 20 s, and agree.  With every node lacking a contact
 * publishing when its timer fired, dozens published before the first
 * contact reached them, then deleted again: the count swung between 0 and
 * 45 for good. */
static ULONG contact_cmin_of(ULONGLONG s)
{
    ULONG lg = 0;
    if (s >= (1ULL << 60)) return 5;
    while (s >>= 1) lg++;
    return 60 - lg;
}
static void test_contacts_settle_with_slow_floods(void **st)
{
    wchar_t h0[20][8];
    ULONGLONG sig;
    ULONG c, cmin;
    int i, k, obs = -1, same = 0;
    (void)st;
    fast_group(NN, L"cs", L"c", 0x100, NULL);
    for (k = 0; k < 100; k++) tu_pump(1, 100);
    sig = signature_at(gs[0]);
    c = contacts_at(gs[0], sig, h0, 20);
    assert_true(c >= 1 && c <= 20);
    for (k = 0; k < (int)c; k++) { /* every holder leaves at once */
        i = (int)wcstol(h0[k] + 1, NULL, 10);
        assert_true(i >= 0 && i < NN && gs[i]);
        assert_int_equal(PeerGraphClose(gs[i]), S_OK);
        gs[i] = NULL;
    }
    for (k = 0; k < 60; k++) tu_pump(1, 500); /* 30 s, 500 ms a hop */
    for (i = 0; i < NN; i++)
        if (gs[i] && obs < 0) obs = i;
    sig = signature_at(gs[obs]);
    cmin = contact_cmin_of(sig);
    for (k = 0; k < 40; k++) { /* 20 s more, always in range */
        c = contacts_at(gs[obs], sig, NULL, 0);
        if (c < cmin || c > cmin + 5) print_message("%d s: %lu contacts, Cmin %lu\n", 30 + k / 2, (unsigned long)c, (unsigned long)cmin);
        assert_true(c >= cmin && c <= cmin + 5);
        tu_pump(1, 500);
    }
    for (k = 0; k < 20 && !same; k++) { /* everyone agrees (a change may be on its way) */
        c = contacts_at(gs[obs], sig, NULL, 0);
        for (i = 0, same = 1; i < NN && same; i++)
            if (gs[i]) same = signature_at(gs[i]) == sig && contacts_at(gs[i], sig, NULL, 0) == c;
        if (!same) tu_pump(1, 500);
    }
    assert_true(same);
    for (i = 0; i < NN; i++)
        if (gs[i]) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    tu_pump(3, 3000);
}

static void test_contacts(void **st)
{
    PEER_ADDRESS seed;
    PEER_GRAPH_EVENT_REGISTRATION reg = {PEER_GRAPH_EVENT_CONNECTION_REQUIRED, NULL};
    HPEEREVENT ev[NCT];
    wchar_t holders[20][8];
    ULONGLONG sig, s = 0;
    ULONG c, cmin = 0, lg = 0;
    int i, k;
    (void)st;
    for (i = 0; i < NN; i++) gs[i] = NULL;
    gs[0] = tu_create(L"ct", L"c0");
    seed = tu_listen(gs[0]);
    ids[0] = local_node(gs[0]);
    for (i = 1; i < NCT; i++) {
        wchar_t p[8];
        swprintf(p, 8, L"c%d", i);
        gs[i] = tu_open(L"ct", p);
        ids[i] = local_node(gs[i]);
        join(gs[i], &seed);
    }
    for (i = 0; i < NCT; i++) assert_int_equal(PeerGraphRegisterEvent(gs[i], NULL, 1, &reg, &ev[i]), S_OK);
    tu_pump_host(240, 5000); /* 20 minutes: contact timers (10-180 s) and maintenance (300 s) run */
    /* Contacts churn now and then (a node that counts fewer than Cmin while
     * one is in flight publishes its own); a relay waiting for its timer
     * may leave a FLOOD on its way: every node must agree within 100 steps
     * of 10 ms. */
    for (k = 0; k < 100; k++) {
        ULONGLONG sg = signature_at(gs[0]);
        ULONG c0 = contacts_at(gs[0], sg, NULL, 0);
        int same = 1;
        for (i = 1; i < NCT && same; i++) same = contacts_at(gs[i], sg, NULL, 0) == c0 && signature_at(gs[i]) == sg;
        if (same) break;
        tu_pump(1, 10);
    }
    assert_true(k < 100);
    sig = signature_at(gs[0]);
    for (i = 0; i < NCT; i++) if (!s || ids[i] < s) s = ids[i];
    if (sig != s)
        for (i = 0; i < NCT; i++)
            print_message("node %d: ID %016llx, signature %016llx\n", i, (unsigned long long)ids[i],
                          (unsigned long long)signature_at(gs[i]));
    assert_true(sig == s); /* the lowest node ID */
    if (sig >= (1ULL << 60)) cmin = 5;
    else { while (s >>= 1) lg++; cmin = 60 - lg; }
    c = contacts_at(gs[0], sig, holders, 20);
    assert_true(c >= cmin && c <= cmin + 5);
    for (i = 1; i < NCT; i++) assert_int_equal(contacts_at(gs[i], sig, NULL, 0), c);
    for (i = 0; i < NCT; i++) {
        wchar_t p[8];
        int holds = 0, got = 0;
        PPEER_GRAPH_EVENT_DATA d;
        swprintf(p, 8, L"c%d", i);
        for (k = 0; k < (int)c; k++) holds |= !wcscmp(holders[k], p);
        while ((d = tu_event(ev[i], PEER_GRAPH_EVENT_CONNECTION_REQUIRED)) != NULL) { got++; PeerGraphFreeData(d); }
        assert_int_equal(got > 0, holds);
    }
    /* a holder that leaves deletes its contact; the others refill to Cmin */
    for (i = 1; i < NCT; i++) { /* (not c0, where we look, nor the signature node: its leaving changes the signature) */
        wchar_t p[8];
        int holds = 0;
        swprintf(p, 8, L"c%d", i);
        for (k = 0; k < (int)c; k++) holds |= !wcscmp(holders[k], p);
        if (holds && ids[i] != sig) break;
    }
    if (i < NCT) {
        assert_int_equal(PeerGraphClose(gs[i]), S_OK);
        gs[i] = NULL;
        tu_pump(20, 20);
        assert_int_equal(contacts_at(gs[0], sig, NULL, 0), c - 1);
        tu_pump(120, 5000);
        /* (5 s steps move a flood one hop each: a contact's refresh, sent
         * 20 s before it expires, can reach c0 after the old version
         * expired there; 1 s steps let what is in flight arrive) */
        for (k = 0; k < 30; k++) {
            c = contacts_at(gs[0], sig, NULL, 0);
            if (c >= cmin && c <= cmin + 5) break;
            tu_pump(1, 1000);
        }
        assert_true(c >= cmin && c <= cmin + 5);
    }
    for (i = 0; i < NCT; i++)
        if (gs[i]) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    tu_pump(3, 3000);
}

/* A split network (fast profile, synthetic clock): each side repairs itself
 * and elects a signature of its own; records published on both sides during
 * the split stay there.  After the heal, contacts naming the other side's
 * signature are found, one connection joins the parts, and every record,
 * every node and one signature are everywhere again. */
#define NP 16
static const GUID partType = {0x9a7b0001, 0x1234, 0x5678, {1, 2, 3, 4, 5, 6, 7, 8}};

static GUID add_rec(HGRAPH h, const char *text)
{
    PEER_RECORD r;
    GUID id;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = partType;
    r.ftExpiration.dwHighDateTime = 0x7FFFFFFF;
    r.data.cbData = (ULONG)strlen(text);
    r.data.pbData = (PBYTE)text;
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    return id;
}
static int has_rec(HGRAPH h, const GUID *id)
{
    PPEER_RECORD r = NULL;
    HRESULT hr = PeerGraphGetRecord(h, id, &r);
    if (hr == S_OK) PeerGraphFreeData(r);
    return hr == S_OK;
}

/* The sum of the versions of the presence records h holds, and how many. */
static ULONG presence_versions(HGRAPH h, ULONG *count)
{
    static const GUID presType = {0x00000400, 0, 0, {0, 0, 0, 0, 0, 0, 0, 0}};
    HPEERENUM en;
    PEER_RECORD **items;
    ULONG n = 64, k, sum = 0;
    assert_int_equal(PeerGraphEnumRecords(h, &presType, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    for (k = 0; k < n; k++) sum += items[k]->dwVersion;
    if (n) PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    *count = n;
    return sum;
}

/* Renewals between fast nodes (PROTOCOL.md P19), 8 nodes over 650 s
 * (the default presence lifetime is 300 s: two renewals of every
 * presence): every presence stays live everywhere (no node seen leaving),
 * every node ends with the same versions, and a raw fast neighbor (of a
 * node below the maximum of neighbors) hears the renewals as RENEW entries, at least 16 (the first of each
 * names the modifier: the entry's flag), and no presence FLOOD. */
static void test_presences_renewed_by_renew(void **st)
{
    HGRAPH g[8];
    HPEEREVENT e[8];
    PEER_ADDRESS seed;
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_NODE_CHANGED, NULL};
    PPEER_GRAPH_EVENT_DATA d;
    static rxbuf rb;
    static msg m;
    static const unsigned char presence[16] = {0, 0, 4, 0};
    PEER_SOCKET s;
    ULONG sum0, cnt, first, n = 1;
    HPEERENUM en;
    PEER_NODE_INFO **items;
    SOCKADDR_IN6 at;
    wchar_t name[8];
    char target[8];
    int obs;
    int i, k, gone = 0, floods = 0, renews = 0;
    (void)st;
    assert_true(fast_mesh(g, 8, L"ren", L"n", &seed));
    for (k = 0; k < 60; k++) tu_pump(1, 500);
    for (obs = 0; obs < 8 && tu_neighbors(g[obs]) >= PEER_MAX_NEIGHBORS; obs++) {} /* one that takes another neighbor */
    assert_true(obs < 8);
    swprintf(name, 8, L"n%d", obs);
    assert_int_equal(PeerGraphEnumNodes(g[0], name, &en), S_OK);
    assert_int_equal(PeerGraphGetNextItem(en, &n, (PVOID **)&items), S_OK);
    assert_int_equal(n, 1);
    at = items[0]->pAddresses[0].sin6;
    PeerGraphFreeData(items);
    PeerGraphEndEnumeration(en);
    snprintf(target, sizeof target, "n%d", obs);
    s = raw_join(&at, 0x3f, "ren", "Raw", target, 0x9000, &rb, &m);
    tu_pump(2, 10);
    assert_true(recv_msg_all(s, &rb, &m) > 0);
    assert_int_equal(m.b[5], 3); /* WELCOME */
    while (recv_msg_all(s, &rb, &m) > 0) {}
    for (i = 0; i < 8; i++) assert_int_equal(PeerGraphRegisterEvent(g[i], NULL, 1, &r, &e[i]), S_OK);
    first = presence_versions(g[0], &cnt);
    assert_int_equal(cnt, 8);
    for (k = 0; k < 1300; k++) {
        static const unsigned char ka[2] = {0xFF, 0};
        fake_net_raw_write(s, ka, 2);
        tu_pump(1, 500);
        while (recv_msg_all(s, &rb, &m) > 0) {
            if (m.b[5] == 0x0B && m.n >= 12 + 16 && !memcmp(m.b + 12, presence, 16)) floods++;
            if (m.b[5] == 0x82) renews += (int)((m.n - 8) / 44);
        }
    }
    for (i = 0; i < 8; i++)
        while ((d = tu_event(e[i], PEER_GRAPH_EVENT_NODE_CHANGED)) != NULL) {
            gone += d->nodeChangeData.changeType == PEER_NODE_CHANGE_DISCONNECTED;
            PeerGraphFreeData(d);
        }
    assert_int_equal(gone, 0);
    assert_int_equal(floods, 0);
    assert_true(renews >= 16);
    sum0 = presence_versions(g[0], &cnt);
    assert_int_equal(cnt, 8);
    assert_true(sum0 >= first + 16);
    for (i = 1; i < 8; i++) {
        assert_int_equal(presence_versions(g[i], &cnt), sum0);
        assert_int_equal(cnt, 8);
        assert_int_equal(count_nodes(g[i], NULL), 8);
    }
    fake_net_raw_close(s);
    for (i = 0; i < 8; i++) assert_int_equal(PeerGraphClose(g[i]), S_OK);
    tu_pump(3, 3000);
}

/* Fast profile at rest (PROTOCOL.md P18): with no flood coming, a node above
 * the ideal count keeps its links (a score no flood has moved tells links
 * apart no better than a coin, and every prune costs the pruned node a new
 * link and a hash sync): over 60 s no link opens or closes anywhere.  Once
 * records flood, the least useful link of a node above the ideal count is
 * dropped again on the timer. */
#define NR 12
static void test_fast_mesh_at_rest_keeps_links(void **st)
{
    HGRAPH g[NR];
    HPEEREVENT e[NR];
    PEER_ADDRESS seed;
    PEER_GRAPH_EVENT_REGISTRATION r = {PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, NULL};
    PPEER_GRAPH_EVENT_DATA d;
    int i, k, ok, events = 0, above = 0, drops = 0;
    (void)st;
    assert_true(fast_mesh(g, NR, L"rest", L"r", &seed));
    for (k = 0; k < 300; k++) tu_pump(1, 100); /* 30 s: the joins' floods end, the last prunes follow */
    for (i = 0; i < NR; i++) {
        assert_int_equal(PeerGraphRegisterEvent(g[i], NULL, 1, &r, &e[i]), S_OK);
        above += tu_neighbors(g[i]) > PEER_IDEAL_NEIGHBORS;
    }
    assert_true(above > 0); /* (the joins leave some above the ideal count) */
    for (k = 0; k < 600; k++) tu_pump(1, 100); /* 60 s at rest */
    for (i = 0; i < NR; i++)
        while ((d = tu_event(e[i], PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            events++;
            PeerGraphFreeData(d);
        }
    assert_int_equal(events, 0);
    for (k = 0; k < 200; k++) { /* 20 s of floods: a record every 100 ms from node k % NR */
        char text[32];
        snprintf(text, sizeof text, "flood %d", k);
        add_rec(g[k % NR], text);
        tu_pump(1, 100);
    }
    for (i = 0; i < NR; i++)
        while ((d = tu_event(e[i], PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION)) != NULL) {
            drops += d->connectionChangeData.status == PEER_DISCONNECTED;
            PeerGraphFreeData(d);
        }
    assert_true(drops > 0);
    for (k = 0, ok = 0; k < 50 && !ok; k++) { /* a node just pruned refills within a maintenance period */
        tu_pump(1, 100);
        for (i = 0, ok = 1; i < NR && ok; i++) {
            ULONG n = tu_neighbors(g[i]);
            ok = n >= PEER_MIN_NEIGHBORS && n <= PEER_MAX_NEIGHBORS;
        }
    }
    assert_true(ok);
    for (i = 0; i < NR; i++) assert_int_equal(PeerGraphClose(g[i]), S_OK);
    tu_pump(3, 3000);
}

static void test_partition_heals(void **st)
{
    SOCKADDR_IN6 addrs[NP];
    GUID ra, rb;
    ULONGLONG sa, sb;
    int i, k, ok = 0;
    (void)st;
    for (i = 0; i < NN; i++) gs[i] = NULL;
    fast_group(NP, L"part", L"q", 100, addrs); /* side A: the first NP / 2 */
    assert_true(settle(300, 100));
    tu_pump(30, 100);
    for (i = 0; i < NP; i++) assert_int_equal(count_nodes(gs[i], NULL), NP);
    for (i = 1; i < NP; i++) assert_true(signature_at(gs[i]) == signature_at(gs[0]));

    /* the split: each side ends up one component of its own, with its own signature */
    assert_true(fake_net_partition(addrs, NP / 2));
    for (k = 0; k < 600 && !ok; k++) {
        tu_pump(1, 100);
        if (k % 10 == 9) {
            sa = signature_at(gs[0]);
            sb = signature_at(gs[NP - 1]);
            ok = check_group(0, NP / 2, 0) && check_group(NP / 2, NP, 0) && sa != sb;
            for (i = 1; i < NP && ok; i++) ok = signature_at(gs[i]) == (i < NP / 2 ? sa : sb);
        }
    }
    if (!ok) { check_group(0, NP / 2, 1); check_group(NP / 2, NP, 1); }
    assert_true(ok);
    ra = add_rec(gs[1], "left");
    rb = add_rec(gs[NP - 2], "right");
    tu_pump(20, 100);
    for (i = 0; i < NP; i++) {
        assert_int_equal(has_rec(gs[i], &ra), i < NP / 2);
        assert_int_equal(has_rec(gs[i], &rb), i >= NP / 2);
    }

    /* the heal: within 30 s everything is everywhere again */
    assert_true(fake_net_partition(NULL, 0));
    ok = 0;
    for (k = 0; k < 300 && !ok; k++) {
        tu_pump(1, 100);
        if (k % 10 == 9) {
            ok = check_mesh(0);
            sa = signature_at(gs[0]);
            for (i = 0; i < NP && ok; i++)
                ok = has_rec(gs[i], &ra) && has_rec(gs[i], &rb) && signature_at(gs[i]) == sa &&
                     count_nodes(gs[i], NULL) == NP;
        }
    }
    if (!ok) {
        check_mesh(1);
        for (i = 0; i < NP; i++)
            print_message("node %d: records %d%d nodes %lu signature %llx\n", i, has_rec(gs[i], &ra), has_rec(gs[i], &rb),
                          (unsigned long)count_nodes(gs[i], NULL), (unsigned long long)signature_at(gs[i]));
    }
    assert_true(ok);
    for (i = 0; i < NP; i++) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    tu_pump(3, 3000);
}

/* Compat profile: a split that outlives everything each part knew of the
 * other (PROTOCOL.md P16).  After 1000 s apart, the other part's presence
 * records (300 s) and contacts (900 s) have expired on each side, so no
 * contact names the other side's signature and no presence is left to
 * connect to: MS-PPGRH leaves the join to the application (long-term
 * repair).  A contact holder also tries the address of a node whose
 * presence expired unrefreshed; once the network is back, the parts join
 * within two maintenance periods, and every node is known everywhere. */
static void test_split_outlives_contacts(void **st)
{
    SOCKADDR_IN6 addrs[NP];
    int i, k, ok = 0;
    (void)st;
    for (i = 0; i < NN; i++) gs[i] = NULL;
    group_at(NP, L"lost", L"l", 600, addrs, PEER_MAINTENANCE_COMPAT);
    assert_true(settle(200, 5000));
    tu_pump(20, 1000);
    for (i = 0; i < NP; i++) assert_int_equal(count_nodes(gs[i], NULL), NP);
    assert_true(fake_net_partition(addrs, NP / 2));
    tu_pump(60, 5000);
    fake_net_reset_across(); /* TCP gives up on the links across (no keepalive in compat) */
    tu_pump(140, 5000); /* 1000 s apart in all */
    for (i = 0; i < NP; i++) assert_true(count_nodes(gs[i], NULL) <= NP / 2); /* nothing of the other part is left */
    assert_true(fake_net_partition(NULL, 0));
    for (k = 0; k < 130 && !ok; k++) { /* 650 s */
        tu_pump(1, 5000);
        if (k % 10 == 9) {
            ok = check_mesh(0);
            for (i = 0; i < NP && ok; i++) ok = count_nodes(gs[i], NULL) == NP;
        }
    }
    if (!ok) check_mesh(1);
    assert_true(ok);
    for (i = 0; i < NP; i++) { assert_int_equal(PeerGraphClose(gs[i]), S_OK); gs[i] = NULL; }
    tu_pump(3, 3000);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_presence_and_nodes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_hundred_nodes_through_one_seed, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_profile_keepalive, setup, teardown),
        cmocka_unit_test_setup_teardown(test_custom_timers, setup, teardown),
        cmocka_unit_test_setup_teardown(test_departed_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_renew_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_keepalive_frames_hostile, setup, teardown),
        cmocka_unit_test_setup_teardown(test_departed_batched, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_profile_mesh, setup, teardown),
        cmocka_unit_test_setup_teardown(test_fast_mesh_at_rest_keeps_links, setup, teardown),
        cmocka_unit_test_setup_teardown(test_presences_renewed_by_renew, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refill_after_losing_all, setup, teardown),
        cmocka_unit_test_setup_teardown(test_leaver_not_retried, setup, teardown),
        cmocka_unit_test_setup_teardown(test_partition_heals, setup, teardown),
        cmocka_unit_test_setup_teardown(test_split_outlives_contacts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contacts, setup, teardown),
        cmocka_unit_test_setup_teardown(test_contacts_settle_with_slow_floods, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_thirty_percent, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature, setup, teardown),
        cmocka_unit_test_setup_teardown(test_signature_renewed_in_time, setup, teardown),
    };
    if (getenv("P2PG_TEST_FILTER")) cmocka_set_test_filter(getenv("P2PG_TEST_FILTER"));
    return cmocka_run_group_tests(tests, NULL, NULL);
}
