/*
 * epoll_host.c - the two-node scenario of two_nodes.c on a Linux epoll loop.
 *
 * Instead of asking for the whole socket list every turn (poll_host.c), the
 * host installs a poll callback (PeerGraphSetPollCallback).  The library
 * calls it whenever the events it wants on a socket change, and with
 * dwEvents 0 just before it closes a socket; the callback mirrors that into
 * the epoll set with epoll_ctl.  The loop is then:
 *
 *   1. PeerGraphGetPollFds(NULL, 0, NULL, &deadline) only for the deadline (the sockets
 *      are already in the epoll set; E_NOT_SUFFICIENT_BUFFER just says how
 *      many there are, the deadline is filled in either way).
 *   2. epoll_wait until that deadline.
 *   3. PeerGraphService with the ready sockets and the current time.
 *   4. PeerGraphGetEventData for the events.
 *
 * The callback runs inside library calls and must not call the library.
 */
#ifndef __linux__
#include <stdio.h>
int main(void)
{
    printf("epoll_host: Linux only (epoll); see poll_host.c\n");
    return 0;
}
#else

#include "p2pgraph.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

#define GRAPH_ID L"epoll-host"
#define DB_NAME  L"epoll_host"
#define TIME_LIMIT_MS 5000
#define MAX_READY 64

typedef struct host {
    int epfd;
    int failed; /* an epoll_ctl failed: the loop gives up */
    int watched;
} host;

/* The poll callback: keep the epoll set equal to what the library wants. */
static void on_poll_change(PVOID ctx, PEER_SOCKET s, DWORD dwEvents)
{
    host *h = (host *)ctx;
    struct epoll_event ev;
    if (dwEvents == 0) {
        /* not interested any more, or about to close: remove it now, while
         * the descriptor is still open */
        if (epoll_ctl(h->epfd, EPOLL_CTL_DEL, s, NULL) == 0) h->watched--;
        else if (errno != ENOENT) h->failed = 1;
        return;
    }
    memset(&ev, 0, sizeof ev);
    ev.data.fd = s;
    if (dwEvents & PEER_POLL_READ) ev.events |= EPOLLIN;
    if (dwEvents & PEER_POLL_WRITE) ev.events |= EPOLLOUT;
    /* level-triggered; EPOLLERR and EPOLLHUP are always reported */
    if (epoll_ctl(h->epfd, EPOLL_CTL_MOD, s, &ev) == 0) return;
    if (errno == ENOENT && epoll_ctl(h->epfd, EPOLL_CTL_ADD, s, &ev) == 0) { h->watched++; return; }
    perror("epoll_ctl");
    h->failed = 1;
}

/* One turn of the loop; waits at most until `limit`.  0 on a fatal error. */
static int host_step(host *h, ULONGLONG limit)
{
    struct epoll_event evs[MAX_READY];
    PEER_POLL_FD ready[MAX_READY];
    ULONGLONG deadline, now;
    HRESULT hr;
    int timeout, n, i;

    hr = PeerGraphGetPollFds(NULL, 0, NULL, &deadline); /* the deadline only: O(1) */
    if (FAILED(hr)) return 0;
    now = PeerGraphGetTickCount();
    if (deadline > limit) deadline = limit; /* also caps PEER_NO_DEADLINE */
    if (deadline <= now) timeout = 0;
    else if (deadline - now > INT_MAX) timeout = INT_MAX;
    else timeout = (int)(deadline - now);

    n = epoll_wait(h->epfd, evs, MAX_READY, timeout);
    if (n < 0) {
        if (errno == EINTR) return 1;
        perror("epoll_wait");
        return 0;
    }
    /* more than MAX_READY ready sockets: level-triggered epoll reports the
     * rest on the next turn */
    for (i = 0; i < n; i++) {
        DWORD e = 0;
        if (evs[i].events & (EPOLLIN | EPOLLHUP)) e |= PEER_POLL_READ;
        if (evs[i].events & EPOLLOUT) e |= PEER_POLL_WRITE;
        if (evs[i].events & EPOLLERR) e |= PEER_POLL_ERROR;
        ready[i].s = evs[i].data.fd;
        ready[i].dwEvents = e;
    }
    if (FAILED(PeerGraphService(ready, (ULONG)n, PeerGraphGetTickCount()))) return 0;
    return !h->failed;
}

static HPEEREVENT register_all_events(HGRAPH g)
{
    PEER_GRAPH_EVENT_REGISTRATION reg[9];
    HPEEREVENT ev = NULL;
    int i;
    for (i = 0; i < 9; i++) {
        reg[i].eventType = (PEER_GRAPH_EVENT_TYPE)(PEER_GRAPH_EVENT_STATUS_CHANGED + i);
        reg[i].pType = NULL;
    }
    if (FAILED(PeerGraphRegisterEvent(g, NULL, 9, reg, &ev))) return NULL;
    return ev;
}

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
    host h;

    memset(&h, 0, sizeof h);
    h.epfd = epoll_create1(EPOLL_CLOEXEC);
    if (h.epfd < 0) { perror("epoll_create1"); return 1; }
    if (FAILED(PeerGraphStartup(PEER_GRAPH_VERSION, &version))) { close(h.epfd); return 1; }
    /* from now on every socket the library wants watched reaches the callback */
    PeerGraphSetPollCallback(on_poll_change, &h);

    mkdir("build", 0700);
    mkdir("build/ex-db", 0700);
    PeerGraphSetDatabaseDirectory(L"build/ex-db");
    PeerGraphDelete(GRAPH_ID, L"alice", DB_NAME);
    PeerGraphDelete(GRAPH_ID, L"bob", DB_NAME);

    /* node A: create, listen on [::1]:<any> (the listener reaches epoll now) */
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
    printf("alice listens on [::1]:%u (epoll watches %d socket)\n", (unsigned)ntohs(addr.sin6.sin6_port), h.watched);

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
        if (!host_step(&h, limit)) goto done;
        drain("alice", evA, &aConnected, &aSynced);
        drain("bob  ", evB, &bConnected, &bSynced);
    }
    printf("bob is connected to alice and synchronized (epoll watches %d sockets): done\n", h.watched);
    rc = 0;
done:
    if (rc) printf("epoll_host: failed\n");
    if (b) PeerGraphClose(b);
    if (a) PeerGraphClose(a);
    PeerGraphShutdown(); /* closes the lingering sockets: the callback removes them */
    PeerGraphSetDatabaseDirectory(NULL); /* back to the default; frees the library's copy */
    printf("after shutdown epoll watches %d sockets\n", h.watched);
    if (h.watched != 0) rc = 1;
    close(h.epfd);
    return rc;
}
#endif
