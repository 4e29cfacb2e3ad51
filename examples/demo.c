/*
 * demo.c - `make demo`: a peer graph forming and losing a member, live.
 *
 * Six nodes of the graph "demo-graph" run in this one process and talk over
 * real TCP connections on the loopback address [::1]:
 *
 *   - node0 creates the graph (so it is synchronized at once) and listens;
 *   - node1..node5 open the graph with empty databases and join it one by
 *     one: node i connects (peer ID NULL: whoever listens there) to node
 *     (i-1)/2 as soon as that node listens, giving a binary tree
 *
 *                 node0
 *                /     \
 *            node1     node2
 *            /   \       |
 *        node3  node4  node5
 *
 *     and each node starts listening once it reports
 *     PEER_GRAPH_STATUS_SYNCHRONIZED (a node may only accept neighbors after
 *     it has synchronized with the graph);
 *   - the demo prints each node's neighbors, then node0 leaves
 *     (PeerGraphClose) and its neighbors report PEER_DISCONNECTED.
 *
 * Every node runs the fast maintenance profile
 * (PeerGraphSetMaintenanceProfile(PEER_MAINTENANCE_FAST), set before Listen
 * and Connect so every link agrees on it; PROTOCOL.md section 4, bit 0x20),
 * and every listening node publishes its presence (cPresenceMax = -1): the
 * presence records are where a node finds new neighbors.  Without node0 the
 * tree normally falls apart (node1 with node3 and node4, node2 with node5);
 * the demo then only keeps running the library, with no Connect call of its
 * own, and waits until the library has re-linked the five into one
 * connected graph in which every node has at least PEER_MIN_NEIGHBORS (2)
 * neighbors, the minimum its connection maintenance refills a node to at
 * once.  The links the library makes are printed as NEIGHBOR_CONNECTION
 * events as they come, after the NODE_CHANGED (disconnected) of node0's
 * presence.  An attempt may fail on the way (PEER_E_TCP_CONNECTION_REFUSED):
 * a node can still hold node0's address as a referral from when it joined;
 * the library then tries another node ulRetryMs (100 ms) later.  The demo
 * fails if the graph is not repaired within REPAIR_LIMIT_MS.
 *
 * Every event of every node is printed as it is pulled.  (Spreading the
 * joiners matters: a node accepts at most PEER_MAX_NEIGHBORS = 7 neighbors
 * and refuses more as busy; the refused node then sees
 * PEER_CONNECTION_FAILED, with ullNextConnectionId naming the attempt the
 * library started by itself towards an address the busy node referred it to.
 * The demo follows such a referral if one happens.)
 *
 * Then records: node5 publishes a chat-like record; every node gets it by
 * flooding (RECORD_CHANGED added) and reads its text with PeerGraphGetRecord;
 * node2 updates it and node4 deletes it, and both changes reach everyone.
 *
 * Exit status: 0 on success; 1 (with a message) if something fails or the
 * demo does not finish within its time limit.
 */
#include "p2pgraph.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32
#  include <direct.h>
#  define make_dir(p) _mkdir(p)
#else
#  include <sys/stat.h>
#  define make_dir(p) mkdir(p, 0700)
#endif

#define N_NODES 6
#define GRAPH_ID L"demo-graph"
#define DB_NAME  L"demo"
#define TIME_LIMIT_MS 10000 /* for the demo up to node0's departure; it normally needs well under a second */
#define REPAIR_LIMIT_MS 10000 /* for the re-linking after it; the fast profile normally needs well under one */

typedef struct node {
    char name[8];
    wchar_t peerId[8];
    HGRAPH h;
    HPEEREVENT ev;
    ULONGLONG nodeId;
    DWORD status;      /* last STATUS_CHANGED */
    int listening;     /* Listen succeeded; addr is valid */
    PEER_ADDRESS addr; /* [::1]:port it listens on */
    int joining;       /* Connect issued */
    int joined;        /* its own connection reported PEER_CONNECTED */
    ULONGLONG connId;  /* its own (current) connection attempt */
    int disconnects;   /* PEER_DISCONNECTED events seen */
    int rec_changes[5];/* RECORD_CHANGED seen, by PEER_RECORD_CHANGE_TYPE */
} node;

static node nodes[N_NODES];
static ULONGLONG t0;

/* ---- names for what the library returns --------------------------------- */

static const char *hr_name(HRESULT hr)
{
    static char other[16];
    switch (hr) {
    case S_OK: return "S_OK";
    case S_FALSE: return "S_FALSE";
    case E_FAIL: return "E_FAIL";
    case E_ACCESSDENIED: return "E_ACCESSDENIED";
    case E_OUTOFMEMORY: return "E_OUTOFMEMORY";
    case E_INVALIDARG: return "E_INVALIDARG";
    case E_NOT_SUFFICIENT_BUFFER: return "E_NOT_SUFFICIENT_BUFFER";
    case PEER_E_IPV6_NOT_INSTALLED: return "PEER_E_IPV6_NOT_INSTALLED";
    case PEER_E_NOT_INITIALIZED: return "PEER_E_NOT_INITIALIZED";
    case PEER_E_CANNOT_START_SERVICE: return "PEER_E_CANNOT_START_SERVICE";
    case PEER_E_NOT_LICENSED: return "PEER_E_NOT_LICENSED";
    case PEER_E_INVALID_GRAPH: return "PEER_E_INVALID_GRAPH";
    case PEER_E_DBNAME_CHANGED: return "PEER_E_DBNAME_CHANGED";
    case PEER_E_DUPLICATE_GRAPH: return "PEER_E_DUPLICATE_GRAPH";
    case PEER_E_GRAPH_NOT_READY: return "PEER_E_GRAPH_NOT_READY";
    case PEER_E_GRAPH_SHUTTING_DOWN: return "PEER_E_GRAPH_SHUTTING_DOWN";
    case PEER_E_GRAPH_IN_USE: return "PEER_E_GRAPH_IN_USE";
    case PEER_E_INVALID_DATABASE: return "PEER_E_INVALID_DATABASE";
    case PEER_E_TOO_MANY_ATTRIBUTES: return "PEER_E_TOO_MANY_ATTRIBUTES";
    case PEER_E_CONNECTION_NOT_FOUND: return "PEER_E_CONNECTION_NOT_FOUND";
    case PEER_E_CONNECT_SELF: return "PEER_E_CONNECT_SELF";
    case PEER_E_ALREADY_LISTENING: return "PEER_E_ALREADY_LISTENING";
    case PEER_E_NODE_NOT_FOUND: return "PEER_E_NODE_NOT_FOUND";
    case PEER_E_CONNECTION_FAILED: return "PEER_E_CONNECTION_FAILED";
    case PEER_E_CONNECTION_NOT_AUTHENTICATED: return "PEER_E_CONNECTION_NOT_AUTHENTICATED";
    case PEER_E_CONNECTION_REFUSED: return "PEER_E_CONNECTION_REFUSED";
    case PEER_E_RECORD_NOT_FOUND: return "PEER_E_RECORD_NOT_FOUND";
    case PEER_E_DATABASE_ACCESSDENIED: return "PEER_E_DATABASE_ACCESSDENIED";
    case PEER_E_DBINITIALIZATION_FAILED: return "PEER_E_DBINITIALIZATION_FAILED";
    case PEER_E_MAX_RECORD_SIZE_EXCEEDED: return "PEER_E_MAX_RECORD_SIZE_EXCEEDED";
    case PEER_E_DATABASE_ALREADY_PRESENT: return "PEER_E_DATABASE_ALREADY_PRESENT";
    case PEER_E_DATABASE_NOT_PRESENT: return "PEER_E_DATABASE_NOT_PRESENT";
    case PEER_E_EVENT_HANDLE_NOT_FOUND: return "PEER_E_EVENT_HANDLE_NOT_FOUND";
    case PEER_E_INVALID_SEARCH: return "PEER_E_INVALID_SEARCH";
    case PEER_E_INVALID_ATTRIBUTES: return "PEER_E_INVALID_ATTRIBUTES";
    case PEER_E_INVALID_RECORD: return "PEER_E_INVALID_RECORD";
    case PEER_E_NOT_AUTHORIZED: return "PEER_E_NOT_AUTHORIZED";
    case PEER_E_DEFERRED_VALIDATION: return "PEER_E_DEFERRED_VALIDATION";
    case PEER_E_INVALID_RECORD_EXPIRATION: return "PEER_E_INVALID_RECORD_EXPIRATION";
    case PEER_E_INVALID_RECORD_SIZE: return "PEER_E_INVALID_RECORD_SIZE";
    case PEER_E_UNSUPPORTED_VERSION: return "PEER_E_UNSUPPORTED_VERSION";
    case PEER_E_TIMEOUT: return "PEER_E_TIMEOUT";
    case PEER_E_INVALID_ADDRESS: return "PEER_E_INVALID_ADDRESS";
    case PEER_S_GRAPH_DATA_CREATED: return "PEER_S_GRAPH_DATA_CREATED";
    case PEER_S_NO_EVENT_DATA: return "PEER_S_NO_EVENT_DATA";
    case PEER_S_ALREADY_CONNECTED: return "PEER_S_ALREADY_CONNECTED";
    case PEER_E_ALREADY_EXISTS: return "PEER_E_ALREADY_EXISTS";
    case PEER_E_NOT_FOUND: return "PEER_E_NOT_FOUND";
    case PEER_E_TCP_CONNECTION_REFUSED: return "PEER_E_TCP_CONNECTION_REFUSED";
    case PEER_E_GRAPH_ID_MISMATCH: return "PEER_E_GRAPH_ID_MISMATCH";
    case PEER_E_PEER_ID_MISMATCH: return "PEER_E_PEER_ID_MISMATCH";
    case PEER_E_PROTOCOL_ERROR: return "PEER_E_PROTOCOL_ERROR";
    default:
        snprintf(other, sizeof other, "0x%08lx", (unsigned long)(DWORD)hr);
        return other;
    }
}

/* "LISTENING|HAS_CONNECTIONS|SYNCHRONIZED", or "none". */
static const char *status_names(DWORD st)
{
    static char buf[64];
    buf[0] = '\0';
    if (st & PEER_GRAPH_STATUS_LISTENING) strcat(buf, "|LISTENING");
    if (st & PEER_GRAPH_STATUS_HAS_CONNECTIONS) strcat(buf, "|HAS_CONNECTIONS");
    if (st & PEER_GRAPH_STATUS_SYNCHRONIZED) strcat(buf, "|SYNCHRONIZED");
    return buf[0] ? buf + 1 : "none";
}

static const char *event_name(PEER_GRAPH_EVENT_TYPE t)
{
    switch (t) {
    case PEER_GRAPH_EVENT_STATUS_CHANGED: return "STATUS_CHANGED";
    case PEER_GRAPH_EVENT_PROPERTY_CHANGED: return "PROPERTY_CHANGED";
    case PEER_GRAPH_EVENT_RECORD_CHANGED: return "RECORD_CHANGED";
    case PEER_GRAPH_EVENT_DIRECT_CONNECTION: return "DIRECT_CONNECTION";
    case PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION: return "NEIGHBOR_CONNECTION";
    case PEER_GRAPH_EVENT_INCOMING_DATA: return "INCOMING_DATA";
    case PEER_GRAPH_EVENT_CONNECTION_REQUIRED: return "CONNECTION_REQUIRED";
    case PEER_GRAPH_EVENT_NODE_CHANGED: return "NODE_CHANGED";
    case PEER_GRAPH_EVENT_SYNCHRONIZED: return "SYNCHRONIZED";
    case PEER_GRAPH_EVENT_SEND_READY: return "SEND_READY";
    }
    return "UNKNOWN_EVENT";
}

/* The demo's name of a node ID ("node3"), or "?" for one it does not know. */
static const char *name_of(ULONGLONG nodeId)
{
    int i;
    for (i = 0; i < N_NODES; i++)
        if (nodes[i].nodeId == nodeId) return nodes[i].name;
    return "?";
}

static unsigned long elapsed(void) { return (unsigned long)(PeerGraphGetTickCount() - t0); }

/* ---- events ---------------------------------------------------------------- */

/* Returns 0 if the demo cannot go on (a joiner's connection failed for good). */
static int on_event(node *n, const PEER_GRAPH_EVENT_DATA *d)
{
    printf("[%5lu ms] %s %s", elapsed(), n->name, event_name(d->eventType));
    switch (d->eventType) {
    case PEER_GRAPH_EVENT_STATUS_CHANGED:
        printf(" %s\n", status_names((DWORD)d->dwStatus));
        n->status = (DWORD)d->dwStatus;
        break;
    case PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION:
    case PEER_GRAPH_EVENT_DIRECT_CONNECTION: {
        const PEER_EVENT_CONNECTION_CHANGE_DATA *c = &d->connectionChangeData;
        int own = n->joining && c->ullConnectionId == n->connId;
        if (c->status == PEER_CONNECTED) {
            printf(" connected conn=0x%llx node=0x%016llx (%s)\n", (unsigned long long)c->ullConnectionId,
                   (unsigned long long)c->ullNodeId, name_of(c->ullNodeId));
            if (own) n->joined = 1;
        } else if (c->status == PEER_DISCONNECTED) {
            printf(" disconnected conn=0x%llx node=0x%016llx (%s) reason=%s\n", (unsigned long long)c->ullConnectionId,
                   (unsigned long long)c->ullNodeId, name_of(c->ullNodeId), hr_name(c->hrConnectionFailedReason));
            n->disconnects++;
        } else {
            printf(" failed conn=0x%llx reason=%s", (unsigned long long)c->ullConnectionId,
                   hr_name(c->hrConnectionFailedReason));
            if (c->ullNextConnectionId)
                printf(" next=0x%llx (the library follows a referral)", (unsigned long long)c->ullNextConnectionId);
            printf("\n");
            if (own) {
                if (!c->ullNextConnectionId) {
                    printf("demo: %s could not join the graph (%s)\n", n->name, hr_name(c->hrConnectionFailedReason));
                    return 0;
                }
                n->connId = c->ullNextConnectionId; /* wait for that attempt instead */
            }
        }
        break;
    }
    case PEER_GRAPH_EVENT_NODE_CHANGED:
        printf(" %s node=0x%016llx peer=%ls\n",
               d->nodeChangeData.changeType == PEER_NODE_CHANGE_CONNECTED ? "connected" :
               d->nodeChangeData.changeType == PEER_NODE_CHANGE_DISCONNECTED ? "disconnected" : "updated",
               (unsigned long long)d->nodeChangeData.ullNodeId,
               d->nodeChangeData.pwzPeerId ? d->nodeChangeData.pwzPeerId : L"(none)");
        break;
    case PEER_GRAPH_EVENT_INCOMING_DATA:
        printf(" conn=0x%llx %lu bytes\n", (unsigned long long)d->incomingData.ullConnectionId,
               (unsigned long)d->incomingData.data.cbData);
        break;
    case PEER_GRAPH_EVENT_RECORD_CHANGED: {
        static const char *const kinds[] = {"?", "added", "updated", "deleted", "expired"};
        int ct = (int)d->recordChangeData.changeType;
        PPEER_RECORD r = NULL;
        printf(" %s", ct >= 1 && ct <= 4 ? kinds[ct] : "?");
        if (ct >= 1 && ct <= 4) n->rec_changes[ct]++;
        if (PeerGraphGetRecord(n->h, &d->recordChangeData.recordId, &r) == S_OK) {
            printf(" \"%.*s\" (version %lu, by %ls)", (int)r->data.cbData, (const char *)r->data.pbData,
                   (unsigned long)r->dwVersion, r->pwzModifiedById ? r->pwzModifiedById : r->pwzCreatorId);
            PeerGraphFreeData(r);
        }
        printf("\n");
        break;
    }
    case PEER_GRAPH_EVENT_SYNCHRONIZED:
        printf(" record type %08lx-...\n", (unsigned long)d->synchronizedData.recordType.Data1);
        break;
    default:
        printf("\n");
        break;
    }
    return 1;
}

/* Every node (still open) has seen `n` RECORD_CHANGED events of kind ct. */
static int want_kind, want_count;
static int records_seen(void)
{
    int i;
    for (i = 0; i < N_NODES; i++)
        if (nodes[i].h && nodes[i].rec_changes[want_kind] < want_count) return 0;
    return 1;
}

/* Pops every queued event of every open node.  0 if the demo must stop. */
static int drain_all(void)
{
    int i, ok = 1;
    for (i = 0; i < N_NODES; i++) {
        PPEER_GRAPH_EVENT_DATA d;
        if (!nodes[i].h) continue; /* closed: its registration went with it */
        while (PeerGraphGetEventData(nodes[i].ev, &d) == S_OK) {
            if (!on_event(&nodes[i], d)) ok = 0;
            PeerGraphFreeData(d);
        }
    }
    return ok;
}

/* ---- setup helpers ----------------------------------------------------------- */

static int register_events(node *n)
{
    PEER_GRAPH_EVENT_REGISTRATION reg[9];
    int i;
    for (i = 0; i < 9; i++) {
        reg[i].eventType = (PEER_GRAPH_EVENT_TYPE)(PEER_GRAPH_EVENT_STATUS_CHANGED + i);
        reg[i].pType = NULL;
    }
    return SUCCEEDED(PeerGraphRegisterEvent(n->h, NULL, 9, reg, &n->ev));
}

/* Reads this node's own node ID (node ID 0 = "me"); with `port`, also the
 * port it listens on, as the address [::1]:port. */
static int read_node_info(node *n, int port)
{
    PPEER_NODE_INFO info = NULL;
    HRESULT hr = PeerGraphGetNodeInfo(n->h, 0, &info);
    if (FAILED(hr)) { printf("demo: PeerGraphGetNodeInfo(%s): %s\n", n->name, hr_name(hr)); return 0; }
    n->nodeId = info->ullNodeId;
    if (port) {
        if (info->cAddresses < 1) { PeerGraphFreeData(info); return 0; }
        n->addr = info->pAddresses[0];
        memset(&n->addr.sin6.sin6_addr, 0, sizeof n->addr.sin6.sin6_addr);
        n->addr.sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
    }
    PeerGraphFreeData(info);
    return 1;
}

static int start_listening(node *n)
{
    HRESULT hr = PeerGraphListen(n->h, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0);
    if (FAILED(hr)) { printf("demo: PeerGraphListen(%s): %s\n", n->name, hr_name(hr)); return 0; }
    if (!read_node_info(n, 1)) return 0;
    n->listening = 1;
    printf("[%5lu ms] %s listens on [::1]:%u\n", elapsed(), n->name, (unsigned)ntohs(n->addr.sin6.sin6_port));
    return 1;
}

/* The node a joiner connects to: its parent in the binary tree. */
static int parent_of(int i) { return (i - 1) / 2; }

/* One pass over the joiners: connect those whose parent listens, and let
 * those that have synchronized listen in turn. */
static int advance(void)
{
    int i;
    for (i = 1; i < N_NODES; i++) {
        node *n = &nodes[i], *p = &nodes[parent_of(i)];
        if (!n->joining && p->listening) {
            HRESULT hr = PeerGraphConnect(n->h, NULL, &p->addr, &n->connId);
            if (FAILED(hr)) { printf("demo: PeerGraphConnect(%s): %s\n", n->name, hr_name(hr)); return 0; }
            n->joining = 1;
            printf("[%5lu ms] %s connects to %s at [::1]:%u (conn=0x%llx)\n", elapsed(), n->name, p->name,
                   (unsigned)ntohs(p->addr.sin6.sin6_port), (unsigned long long)n->connId);
        }
        if (!n->listening && (n->status & PEER_GRAPH_STATUS_SYNCHRONIZED) && !start_listening(n)) return 0;
    }
    return 1;
}

static int formed(void)
{
    int i;
    DWORD all = PEER_GRAPH_STATUS_LISTENING | PEER_GRAPH_STATUS_HAS_CONNECTIONS | PEER_GRAPH_STATUS_SYNCHRONIZED;
    for (i = 0; i < N_NODES; i++) {
        if (nodes[i].status != all) return 0;
        if (i > 0 && !nodes[i].joined) return 0;
    }
    return 1;
}

/* Prints each open node's neighbors (PeerGraphEnumConnections); returns the
 * number of links seen (each counted at both ends). */
static int show_graph(void)
{
    int i, ends = 0;
    for (i = 0; i < N_NODES; i++) {
        HPEERENUM en;
        ULONG count = 0, k;
        PEER_CONNECTION_INFO **items = NULL;
        if (!nodes[i].h) continue;
        printf("  %s (node 0x%016llx) neighbors:", nodes[i].name, (unsigned long long)nodes[i].nodeId);
        if (FAILED(PeerGraphEnumConnections(nodes[i].h, PEER_CONNECTION_NEIGHBOR, &en))) { printf(" ?\n"); continue; }
        PeerGraphGetItemCount(en, &count);
        if (count && SUCCEEDED(PeerGraphGetNextItem(en, &count, (PVOID **)&items))) {
            for (k = 0; k < count; k++) printf(" %ls", items[k]->pwzPeerId);
            ends += (int)count;
            PeerGraphFreeData(items); /* one block: the array and the items */
        } else
            printf(" (none)");
        printf("\n");
        PeerGraphEndEnumeration(en);
    }
    return ends;
}

/* ---- the demo ------------------------------------------------------------------ */

/* run_until gives up at this tick count: t0 + TIME_LIMIT_MS, then, for the
 * repair, REPAIR_LIMIT_MS after node0 leaves. */
static ULONGLONG deadline;

/* Runs the library until done() holds or the demo's time is up. */
static int run_until(int (*done)(void), int (*step)(void))
{
    while (!done()) {
        if (PeerGraphGetTickCount() > deadline) {
            printf("demo: not finished after %lu ms: giving up\n", elapsed());
            return 0;
        }
        if (FAILED(PeerGraphRunOnce(20))) { printf("demo: PeerGraphRunOnce failed\n"); return 0; }
        if (!drain_all()) return 0;
        if (step && !step()) return 0;
    }
    return 1;
}

static int leaver_neighbors; /* how many links node0 had when it left */
static int departure_seen(void)
{
    int i, seen = 0;
    for (i = 1; i < N_NODES; i++) seen += nodes[i].disconnects;
    return seen >= leaver_neighbors;
}

/* The open nodes form one connected graph (links seen from both ends, by
 * PeerGraphEnumConnections on every node, like show_graph) and each has at
 * least PEER_MIN_NEIGHBORS neighbors.  With five nodes that minimum can be
 * met by all (a ring of five already does).  Between the minimum and
 * PEER_IDEAL_NEIGHBORS (3) a node adds links only on its maintenance timer
 * (every 2 s in the fast profile), so the ideal count is not waited for. */
static int repaired(void)
{
    int adj[N_NODES][N_NODES], comp[N_NODES], i, j, k, changed;
    memset(adj, 0, sizeof adj);
    for (i = 0; i < N_NODES; i++) {
        HPEERENUM en;
        ULONG count = 0;
        PEER_CONNECTION_INFO **items = NULL;
        if (!nodes[i].h) continue;
        if (FAILED(PeerGraphEnumConnections(nodes[i].h, PEER_CONNECTION_NEIGHBOR, &en))) return 0;
        PeerGraphGetItemCount(en, &count);
        if (count && SUCCEEDED(PeerGraphGetNextItem(en, &count, (PVOID **)&items))) {
            for (k = 0; k < (int)count; k++)
                for (j = 0; j < N_NODES; j++)
                    if (nodes[j].h && j != i && nodes[j].nodeId == items[k]->ullNodeId) adj[i][j] = 1;
            PeerGraphFreeData(items);
        }
        PeerGraphEndEnumeration(en);
    }
    /* component labels: the lowest index reachable, by relaxation */
    for (i = 0; i < N_NODES; i++) comp[i] = i;
    do {
        changed = 0;
        for (i = 0; i < N_NODES; i++)
            for (j = 0; j < N_NODES; j++)
                if (adj[i][j] && adj[j][i] && comp[j] < comp[i]) { comp[i] = comp[j]; changed = 1; }
    } while (changed);
    k = -1;
    for (i = 0; i < N_NODES; i++) {
        int degree = 0;
        if (!nodes[i].h) continue;
        if (k < 0) k = comp[i];
        if (comp[i] != k) return 0;
        for (j = 0; j < N_NODES; j++) degree += adj[i][j] && adj[j][i];
        if (degree < PEER_MIN_NEIGHBORS) return 0;
    }
    return 1;
}

int main(void)
{
    PEER_VERSION_DATA version;
    PEER_GRAPH_PROPERTIES props;
    HRESULT hr;
    int i, ok = 0, ends, links_formed = 0, ms_formed = 0, ms_repair = 0;
    ULONGLONG t_leave;

    printf("p2pgraph demo: %d nodes of graph \"demo-graph\" in one process join over real TCP on [::1],\n"
           "one by one, into a tree; a record published at node5 is flooded to all, updated at node2\n"
           "and deleted at node4.  Then node0 leaves, its neighbors see it go, and the library\n"
           "(fast maintenance profile) re-links the rest on its own.\n\n",
           N_NODES);

    hr = PeerGraphStartup(PEER_GRAPH_VERSION, &version);
    if (FAILED(hr)) { printf("demo: PeerGraphStartup: %s\n", hr_name(hr)); return 1; }
    t0 = PeerGraphGetTickCount();
    deadline = t0 + TIME_LIMIT_MS;
    make_dir("build");
    make_dir("build/ex-db");
    PeerGraphSetDatabaseDirectory(L"build/ex-db");

    for (i = 0; i < N_NODES; i++) {
        snprintf(nodes[i].name, sizeof nodes[i].name, "node%d", i);
        swprintf(nodes[i].peerId, sizeof nodes[i].peerId / sizeof(wchar_t), L"node%d", i);
        PeerGraphDelete(GRAPH_ID, nodes[i].peerId, DB_NAME); /* stale database of an earlier run */
    }

    /* node0 creates the graph and listens */
    memset(&props, 0, sizeof props);
    props.dwSize = sizeof props;
    props.pwzGraphId = (PWSTR)GRAPH_ID;
    props.pwzCreatorId = nodes[0].peerId;
    props.pwzFriendlyName = (PWSTR)L"p2pgraph demo";
    /* every listening node publishes its presence: that is how the others
     * find a new neighbor when they lose one (with 0, nobody would) */
    props.cPresenceMax = (ULONG)-1;
    hr = PeerGraphCreate(&props, DB_NAME, NULL, &nodes[0].h);
    if (FAILED(hr)) { printf("demo: PeerGraphCreate: %s\n", hr_name(hr)); goto done; }
    if (!register_events(&nodes[0])) goto done;
    printf("[%5lu ms] node0 creates the graph\n", elapsed());
    hr = PeerGraphSetMaintenanceProfile(nodes[0].h, PEER_MAINTENANCE_FAST); /* before Listen */
    if (FAILED(hr)) { printf("demo: PeerGraphSetMaintenanceProfile(node0): %s\n", hr_name(hr)); goto done; }
    if (!start_listening(&nodes[0])) goto done;

    /* the others open it (a new, empty database each: not synchronized) */
    for (i = 1; i < N_NODES; i++) {
        hr = PeerGraphOpen(GRAPH_ID, nodes[i].peerId, DB_NAME, NULL, 0, NULL, &nodes[i].h);
        if (FAILED(hr)) { printf("demo: PeerGraphOpen(%s): %s\n", nodes[i].name, hr_name(hr)); goto done; }
        if (!register_events(&nodes[i]) || !read_node_info(&nodes[i], 0)) goto done;
        printf("[%5lu ms] %s opens the graph: %s\n", elapsed(), nodes[i].name, hr_name(hr));
        hr = PeerGraphSetMaintenanceProfile(nodes[i].h, PEER_MAINTENANCE_FAST); /* before Connect */
        if (FAILED(hr)) {
            printf("demo: PeerGraphSetMaintenanceProfile(%s): %s\n", nodes[i].name, hr_name(hr));
            goto done;
        }
    }

    /* formation: connect, synchronize, listen, until every node is in */
    if (!advance() || !run_until(formed, advance)) goto done;
    ms_formed = (int)elapsed();

    printf("\nThe graph after %d ms (PeerGraphEnumConnections on each node):\n", ms_formed);
    links_formed = show_graph() / 2;
    printf("  %d links\n\n", links_formed);

    /* records: published at a leaf, flooded to all; updated; deleted */
    {
        static const GUID chatType = {0x6d6f6564, 0x7032, 0x7067, {'c', 'h', 'a', 't', 0, 0, 0, 1}};
        PEER_RECORD rec;
        PPEER_RECORD got = NULL;
        GUID id;
        FILETIME utc, pt;
        ULONGLONG exp = 0;
        const char *hello = "hello from node5";
        memset(&rec, 0, sizeof rec);
        rec.dwSize = sizeof rec;
        rec.type = chatType;
        /* expiration is peer time: one hour from now, converted from UTC */
        {
            ULONGLONG u = ((ULONGLONG)time(NULL) + 11644473600ULL) * 10000000ULL; /* FILETIME units */
            utc.dwLowDateTime = (DWORD)u;
            utc.dwHighDateTime = (DWORD)(u >> 32);
            PeerGraphUniversalTimeToPeerTime(nodes[5].h, &utc, &pt);
            exp = (((ULONGLONG)pt.dwHighDateTime << 32) | pt.dwLowDateTime) + 3600ULL * 10000000ULL;
        }
        rec.ftExpiration.dwLowDateTime = (DWORD)exp;
        rec.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
        rec.data.cbData = (ULONG)strlen(hello);
        rec.data.pbData = (PBYTE)hello;
        rec.pwzAttributes = (PWSTR)L"<attributes><attribute name=\"room\" type=\"string\">lobby</attribute></attributes>";
        printf("[%5lu ms] node5 publishes a record (PeerGraphAddRecord)\n", elapsed());
        hr = PeerGraphAddRecord(nodes[5].h, &rec, &id);
        if (FAILED(hr)) { printf("demo: PeerGraphAddRecord: %s\n", hr_name(hr)); goto done; }
        want_kind = PEER_RECORD_ADDED;
        want_count = 1;
        if (!run_until(records_seen, NULL)) goto done;
        printf("[%5lu ms] every node has it\n", elapsed());
        if (PeerGraphGetRecord(nodes[2].h, &id, &got) != S_OK) { printf("demo: node2 lacks the record\n"); goto done; }
        got->data.cbData = (ULONG)strlen("edited by node2");
        got->data.pbData = (PBYTE)"edited by node2";
        printf("[%5lu ms] node2 updates it (PeerGraphUpdateRecord)\n", elapsed());
        hr = PeerGraphUpdateRecord(nodes[2].h, got);
        PeerGraphFreeData(got);
        if (FAILED(hr)) { printf("demo: PeerGraphUpdateRecord: %s\n", hr_name(hr)); goto done; }
        want_kind = PEER_RECORD_UPDATED;
        if (!run_until(records_seen, NULL)) goto done;
        printf("[%5lu ms] node4 deletes it (PeerGraphDeleteRecord)\n", elapsed());
        hr = PeerGraphDeleteRecord(nodes[4].h, &id, FALSE);
        if (FAILED(hr)) { printf("demo: PeerGraphDeleteRecord: %s\n", hr_name(hr)); goto done; }
        want_kind = PEER_RECORD_DELETED;
        if (!run_until(records_seen, NULL)) goto done;
        printf("[%5lu ms] the record was added, updated and deleted on all %d nodes\n\n", elapsed(), N_NODES);
    }

    /* departure: node0 closes; its neighbors get DISCONNECT (reason LEAVING) */
    {
        HPEERENUM en;
        ULONG count = 0;
        if (SUCCEEDED(PeerGraphEnumConnections(nodes[0].h, PEER_CONNECTION_NEIGHBOR, &en))) {
            PeerGraphGetItemCount(en, &count);
            PeerGraphEndEnumeration(en);
        }
        leaver_neighbors = (int)count;
    }
    printf("[%5lu ms] node0 leaves the graph (PeerGraphClose)\n", elapsed());
    t_leave = PeerGraphGetTickCount();
    PeerGraphClose(nodes[0].h);
    nodes[0].h = NULL;
    if (!run_until(departure_seen, NULL)) goto done;

    printf("\nThe graph without node0, at once:\n");
    ends = show_graph();
    printf("  %d links\n\n", ends / 2);

    /* repair: the host only runs the library (no Connect call) until the rest
     * is one graph again, each node with at least PEER_MIN_NEIGHBORS */
    printf("[%5lu ms] waiting for the library to re-link the %d nodes left (at most %d ms)\n", elapsed(),
           N_NODES - 1, REPAIR_LIMIT_MS);
    deadline = PeerGraphGetTickCount() + REPAIR_LIMIT_MS;
    if (!run_until(repaired, NULL)) {
        printf("\nThe graph without node0, %lu ms after it left:\n", (unsigned long)(PeerGraphGetTickCount() - t_leave));
        ends = show_graph();
        printf("  %d links: not one connected graph with at least %d neighbors per node after %d ms\n", ends / 2,
               PEER_MIN_NEIGHBORS, REPAIR_LIMIT_MS);
        goto done;
    }
    ms_repair = (int)(PeerGraphGetTickCount() - t_leave);

    printf("\nThe graph without node0, repaired:\n");
    ends = show_graph();
    printf("  %d links: the graph re-linked itself in %d ms (no Connect call from the host)\n\n", ends / 2,
           ms_repair);
    printf("summary: %d nodes formed a graph of %d links over real sockets in %d ms, replicated a record's add, "
           "update and delete to every node; node0 left, its %d neighbors saw it go, and the library re-linked "
           "the other %d into one graph (%d links, each node with %d or more neighbors) in %d ms on its own "
           "(%lu ms in all).\n",
           N_NODES, links_formed, ms_formed, leaver_neighbors, N_NODES - 1, ends / 2, PEER_MIN_NEIGHBORS, ms_repair,
           elapsed());
    ok = 1;
done:
    for (i = 0; i < N_NODES; i++)
        if (nodes[i].h) PeerGraphClose(nodes[i].h);
    PeerGraphShutdown();
    PeerGraphSetDatabaseDirectory(NULL); /* back to the default; frees the library's copy */
    if (!ok) printf("demo: FAILED\n");
    return ok ? 0 : 1;
}
