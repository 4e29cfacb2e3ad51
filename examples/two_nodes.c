/*
 * two_nodes.c - the simplest host of p2pgraph: two nodes of one graph in one
 * process, joined over a real loopback TCP connection.
 *
 *   node A  creates the graph "two-nodes" and listens on [::1]:<ephemeral>.
 *   node B  opens the same graph (an empty database: not yet synchronized)
 *           and connects to A.
 *
 * The library never blocks and never starts a thread: the host calls
 * PeerGraphRunOnce() in a loop (it waits on the sockets for a little while
 * and does whatever is due), and pulls each node's events with
 * PeerGraphGetEventData().  See poll_host.c and epoll_host.c for hosts that
 * own their event loop.
 *
 * Exit status: 0 when B is connected and synchronized, 1 otherwise.
 */
#include "p2pgraph.h"

#include <stdio.h>
#include <string.h>
#ifdef _WIN32
#  include <direct.h>
#  define make_dir(p) _mkdir(p)
#else
#  include <sys/stat.h>
#  define make_dir(p) mkdir(p, 0700)
#endif

#define GRAPH_ID L"two-nodes"
#define DB_NAME  L"two_nodes"
#define TIME_LIMIT_MS 5000

/* Registers for every event type of a graph (pType NULL = no record type filter). */
static HPEEREVENT register_all_events(HGRAPH h)
{
    PEER_GRAPH_EVENT_REGISTRATION reg[9];
    HPEEREVENT ev = NULL;
    int i;
    for (i = 0; i < 9; i++) {
        reg[i].eventType = (PEER_GRAPH_EVENT_TYPE)(PEER_GRAPH_EVENT_STATUS_CHANGED + i);
        reg[i].pType = NULL;
    }
    if (FAILED(PeerGraphRegisterEvent(h, NULL, 9, reg, &ev))) return NULL;
    return ev;
}

/* Pops and prints every queued event of one node.  Remembers whether B's
 * connection came up and whether the node reported SYNCHRONIZED. */
static void drain(const char *name, HPEEREVENT ev, int *connected, int *synchronized)
{
    PPEER_GRAPH_EVENT_DATA d;
    while (PeerGraphGetEventData(ev, &d) == S_OK) {
        switch (d->eventType) {
        case PEER_GRAPH_EVENT_STATUS_CHANGED:
            printf("%s: status now%s%s%s\n", name,
                   (d->dwStatus & PEER_GRAPH_STATUS_LISTENING) ? " LISTENING" : "",
                   (d->dwStatus & PEER_GRAPH_STATUS_HAS_CONNECTIONS) ? " HAS_CONNECTIONS" : "",
                   (d->dwStatus & PEER_GRAPH_STATUS_SYNCHRONIZED) ? " SYNCHRONIZED" : "");
            if (d->dwStatus & PEER_GRAPH_STATUS_SYNCHRONIZED) *synchronized = 1;
            break;
        case PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION: {
            const PEER_EVENT_CONNECTION_CHANGE_DATA *c = &d->connectionChangeData;
            printf("%s: neighbor connection %s (connection 0x%llx, remote node 0x%llx, hr 0x%08lx)\n", name,
                   c->status == PEER_CONNECTED ? "CONNECTED" :
                   c->status == PEER_DISCONNECTED ? "DISCONNECTED" : "FAILED",
                   (unsigned long long)c->ullConnectionId, (unsigned long long)c->ullNodeId,
                   (unsigned long)(DWORD)c->hrConnectionFailedReason);
            if (c->status == PEER_CONNECTED) *connected = 1;
            break;
        }
        default:
            printf("%s: event type %d\n", name, (int)d->eventType);
            break;
        }
        PeerGraphFreeData(d); /* every event is one allocation */
    }
}

int main(void)
{
    PEER_VERSION_DATA version;
    PEER_GRAPH_PROPERTIES props;
    PPEER_NODE_INFO info = NULL;
    PEER_ADDRESS addr;
    HGRAPH a = NULL, b = NULL;
    HPEEREVENT evA, evB;
    ULONGLONG connId, deadline;
    int aConnected = 0, aSynced = 0, bConnected = 0, bSynced = 0;
    HRESULT hr;

    if (FAILED(PeerGraphStartup(PEER_GRAPH_VERSION, &version))) return 1;

    /* Databases go to a scratch folder; remove what an earlier run left so
     * Create does not find a duplicate and Open starts unsynchronized. */
    make_dir("build");
    make_dir("build/ex-db");
    PeerGraphSetDatabaseDirectory(L"build/ex-db");
    PeerGraphDelete(GRAPH_ID, L"alice", DB_NAME);
    PeerGraphDelete(GRAPH_ID, L"bob", DB_NAME);

    /* Node A: creates the graph (and is synchronized at once), then listens
     * on the loopback address, port 0 = any free port. */
    memset(&props, 0, sizeof props);
    props.dwSize = sizeof props;
    props.pwzGraphId = (PWSTR)GRAPH_ID;
    props.pwzCreatorId = (PWSTR)L"alice";
    props.pwzFriendlyName = (PWSTR)L"two nodes example";
    hr = PeerGraphCreate(&props, DB_NAME, NULL, &a);
    if (FAILED(hr)) { printf("PeerGraphCreate failed: 0x%08lx\n", (unsigned long)(DWORD)hr); goto fail; }
    evA = register_all_events(a);
    hr = PeerGraphListen(a, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0);
    if (FAILED(hr)) { printf("PeerGraphListen failed: 0x%08lx\n", (unsigned long)(DWORD)hr); goto fail; }

    /* Which port did A get?  Node ID 0 = the local node. */
    if (FAILED(PeerGraphGetNodeInfo(a, 0, &info)) || info->cAddresses < 1) goto fail;
    addr = info->pAddresses[0];
    PeerGraphFreeData(info);
    memset(&addr.sin6.sin6_addr, 0, sizeof addr.sin6.sin6_addr);
    addr.sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
    printf("alice (node A) created the graph and listens on [::1]:%u\n", (unsigned)ntohs(addr.sin6.sin6_port));

    /* Node B: opens the graph (PEER_S_GRAPH_DATA_CREATED: a new, empty
     * database) and connects to A.  NULL peer ID would accept whoever
     * listens there; we ask for "alice" by name. */
    hr = PeerGraphOpen(GRAPH_ID, L"bob", DB_NAME, NULL, 0, NULL, &b);
    if (FAILED(hr)) { printf("PeerGraphOpen failed: 0x%08lx\n", (unsigned long)(DWORD)hr); goto fail; }
    evB = register_all_events(b);
    hr = PeerGraphConnect(b, L"alice", &addr, &connId);
    if (FAILED(hr)) { printf("PeerGraphConnect failed: 0x%08lx\n", (unsigned long)(DWORD)hr); goto fail; }
    printf("bob (node B) opened the graph and is connecting (connection 0x%llx)\n", (unsigned long long)connId);

    /* The loop: let the library work for up to 50 ms, then read events. */
    deadline = PeerGraphGetTickCount() + TIME_LIMIT_MS;
    while (!(bConnected && bSynced)) {
        if (PeerGraphGetTickCount() > deadline) {
            printf("bob did not get connected and synchronized within %d ms\n", TIME_LIMIT_MS);
            goto fail;
        }
        if (FAILED(PeerGraphRunOnce(50))) goto fail;
        drain("alice", evA, &aConnected, &aSynced);
        drain("bob  ", evB, &bConnected, &bSynced);
    }
    printf("bob is connected to alice and synchronized: done\n");

    /* Close both (each sends DISCONNECT to its neighbor) and shut down. */
    PeerGraphClose(b);
    PeerGraphClose(a);
    PeerGraphShutdown();
    PeerGraphSetDatabaseDirectory(NULL); /* back to the default; frees the library's copy */
    return 0;

fail:
    if (b) PeerGraphClose(b);
    if (a) PeerGraphClose(a);
    PeerGraphShutdown();
    PeerGraphSetDatabaseDirectory(NULL); /* back to the default; frees the library's copy */
    return 1;
}
