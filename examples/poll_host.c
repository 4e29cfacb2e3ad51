/*
 * poll_host.c - the two-node scenario of two_nodes.c, but the host owns the
 * event loop and waits with poll() itself, the way a program that already
 * has a poll() loop (for its own sockets, pipes, timers) would embed
 * p2pgraph:
 *
 *   1. PeerGraphGetPollFds: which sockets the library wants watched (READ
 *      and/or WRITE) and by when it must be serviced again (the deadline).
 *   2. poll() on those sockets (plus the host's own, if it had any) with a
 *      timeout that ends no later than the deadline.
 *   3. PeerGraphService: hand back what poll() saw and the current time.
 *   4. PeerGraphGetEventData: pull the events that produced.
 *
 * POSIX only; on Windows use WSAPoll the same way (or PeerGraphRunOnce).
 */
#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    printf("poll_host: POSIX only\n");
    return 0;
}
#else

#include "p2pgraph.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define GRAPH_ID L"poll-host"
#define DB_NAME  L"poll_host"
#define TIME_LIMIT_MS 5000

/* The host's arrays, grown when the library needs more entries. */
static PEER_POLL_FD *want, *ready;
static struct pollfd *pfds;
static ULONG cap;

static int grow(ULONG n)
{
    PEER_POLL_FD *w, *r;
    struct pollfd *p;
    if ((w = (PEER_POLL_FD *)realloc(want, n * sizeof *w)) != NULL) want = w;
    if ((r = (PEER_POLL_FD *)realloc(ready, n * sizeof *r)) != NULL) ready = r;
    if ((p = (struct pollfd *)realloc(pfds, n * sizeof *p)) != NULL) pfds = p;
    if (!w || !r || !p) return 0;
    cap = n;
    return 1;
}

/* One turn of the host loop.  Waits at most until `limit` (host time, ms)
 * even when the library has no deadline, so the caller can check its own
 * conditions.  Returns 0 on a fatal error. */
static int host_step(ULONGLONG limit)
{
    ULONG n = 0, nready = 0, i;
    ULONGLONG deadline, now;
    HRESULT hr;
    int timeout;

    /* 1. what to watch; grow the arrays until everything fits */
    for (;;) {
        hr = PeerGraphGetPollFds(want, cap, &n, &deadline);
        if (hr != E_NOT_SUFFICIENT_BUFFER) break;
        if (!grow(n + 8)) return 0;
    }
    if (FAILED(hr)) return 0;

    /* 2. how long to wait: until the library's deadline (PEER_NO_DEADLINE:
     * as long as we like; here: until our own limit), 0 if it has passed */
    now = PeerGraphGetTickCount();
    if (deadline > limit) deadline = limit; /* PEER_NO_DEADLINE is the largest value */
    if (deadline <= now) timeout = 0;
    else if (deadline - now > INT_MAX) timeout = INT_MAX;
    else timeout = (int)(deadline - now);

    for (i = 0; i < n; i++) {
        pfds[i].fd = want[i].s;
        pfds[i].events = 0;
        if (want[i].dwEvents & PEER_POLL_READ) pfds[i].events |= POLLIN;
        if (want[i].dwEvents & PEER_POLL_WRITE) pfds[i].events |= POLLOUT;
        pfds[i].revents = 0;
    }
    if (poll(pfds, n, timeout) < 0) {
        if (errno == EINTR) return 1;
        perror("poll");
        return 0;
    }

    /* 3. what poll saw, in the library's terms: a hang-up reads as READ (the
     * library then reads the end of stream), errors as ERROR */
    for (i = 0; i < n; i++) {
        DWORD ev = 0;
        if (pfds[i].revents & (POLLIN | POLLHUP)) ev |= PEER_POLL_READ;
        if (pfds[i].revents & POLLOUT) ev |= PEER_POLL_WRITE;
        if (pfds[i].revents & (POLLERR | POLLNVAL)) ev |= PEER_POLL_ERROR;
        if (!ev) continue;
        ready[nready].s = want[i].s;
        ready[nready].dwEvents = ev;
        nready++;
    }
    /* Note: `ready` is never NULL here (main allocates it up front).  A NULL
     * array would mean "readiness unknown: try every socket". */
    return SUCCEEDED(PeerGraphService(ready, nready, PeerGraphGetTickCount()));
}

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

/* 4. Pops and prints a node's events; notes B's connection and sync. */
static void drain(const char *name, HPEEREVENT ev, int *connected, int *synchronized)
{
    PPEER_GRAPH_EVENT_DATA d;
    while (PeerGraphGetEventData(ev, &d) == S_OK) {
        if (d->eventType == PEER_GRAPH_EVENT_STATUS_CHANGED) {
            printf("%s: status now%s%s%s\n", name,
                   (d->dwStatus & PEER_GRAPH_STATUS_LISTENING) ? " LISTENING" : "",
                   (d->dwStatus & PEER_GRAPH_STATUS_HAS_CONNECTIONS) ? " HAS_CONNECTIONS" : "",
                   (d->dwStatus & PEER_GRAPH_STATUS_SYNCHRONIZED) ? " SYNCHRONIZED" : "");
            if (d->dwStatus & PEER_GRAPH_STATUS_SYNCHRONIZED) *synchronized = 1;
        } else if (d->eventType == PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION) {
            const PEER_EVENT_CONNECTION_CHANGE_DATA *c = &d->connectionChangeData;
            printf("%s: neighbor connection %s (connection 0x%llx, remote node 0x%llx, hr 0x%08lx)\n", name,
                   c->status == PEER_CONNECTED ? "CONNECTED" :
                   c->status == PEER_DISCONNECTED ? "DISCONNECTED" : "FAILED",
                   (unsigned long long)c->ullConnectionId, (unsigned long long)c->ullNodeId,
                   (unsigned long)(DWORD)c->hrConnectionFailedReason);
            if (c->status == PEER_CONNECTED) *connected = 1;
        } else
            printf("%s: event type %d\n", name, (int)d->eventType);
        PeerGraphFreeData(d);
    }
}

int main(void)
{
    PEER_VERSION_DATA version;
    PEER_GRAPH_PROPERTIES props;
    PPEER_NODE_INFO info = NULL;
    PEER_ADDRESS addr;
    HGRAPH a = NULL, b = NULL;
    HPEEREVENT evA = NULL, evB = NULL;
    ULONGLONG connId, limit;
    int aConnected = 0, aSynced = 0, bConnected = 0, bSynced = 0, rc = 1;

    if (!grow(2) || FAILED(PeerGraphStartup(PEER_GRAPH_VERSION, &version))) { /* 2: small on purpose, to grow */
        free(want);
        free(ready);
        free(pfds);
        return 1;
    }
    mkdir("build", 0700);
    mkdir("build/ex-db", 0700);
    PeerGraphSetDatabaseDirectory(L"build/ex-db");
    PeerGraphDelete(GRAPH_ID, L"alice", DB_NAME);
    PeerGraphDelete(GRAPH_ID, L"bob", DB_NAME);

    /* node A: create, listen on [::1]:<any> */
    memset(&props, 0, sizeof props);
    props.dwSize = sizeof props;
    props.pwzGraphId = (PWSTR)GRAPH_ID;
    props.pwzCreatorId = (PWSTR)L"alice";
    if (FAILED(PeerGraphCreate(&props, DB_NAME, NULL, &a))) goto done;
    if (!(evA = register_all_events(a))) goto done;
    if (FAILED(PeerGraphListen(a, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0))) goto done;
    if (FAILED(PeerGraphGetNodeInfo(a, 0, &info))) goto done;
    addr = info->pAddresses[0];
    PeerGraphFreeData(info);
    memset(&addr.sin6.sin6_addr, 0, sizeof addr.sin6.sin6_addr);
    addr.sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
    printf("alice listens on [::1]:%u\n", (unsigned)ntohs(addr.sin6.sin6_port));

    /* node B: open (unsynchronized), connect to A */
    if (FAILED(PeerGraphOpen(GRAPH_ID, L"bob", DB_NAME, NULL, 0, NULL, &b))) goto done;
    if (!(evB = register_all_events(b))) goto done;
    if (FAILED(PeerGraphConnect(b, NULL, &addr, &connId))) goto done;
    printf("bob connects (connection 0x%llx)\n", (unsigned long long)connId);

    limit = PeerGraphGetTickCount() + TIME_LIMIT_MS;
    while (!(bConnected && bSynced)) {
        if (PeerGraphGetTickCount() >= limit) {
            printf("bob did not get connected and synchronized within %d ms\n", TIME_LIMIT_MS);
            goto done;
        }
        if (!host_step(limit)) goto done;
        drain("alice", evA, &aConnected, &aSynced);
        drain("bob  ", evB, &bConnected, &bSynced);
    }
    printf("bob is connected to alice and synchronized: done\n");
    rc = 0;
done:
    if (rc) printf("poll_host: failed\n");
    if (b) PeerGraphClose(b);
    if (a) PeerGraphClose(a);
    PeerGraphShutdown();
    PeerGraphSetDatabaseDirectory(NULL); /* back to the default; frees the library's copy */
    free(want);
    free(ready);
    free(pfds);
    return rc;
}
#endif
