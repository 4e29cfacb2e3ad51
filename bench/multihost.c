/*
 * bench/multihost.c - one "host" of a multi-host run: K nodes of one graph in
 * this process, on this host's address, joining a seed that may sit in
 * another network namespace (bench/netns.sh starts one process per
 * namespace; it also runs alone on loopback).
 *
 *   bench_multihost --addr A [--seed S:P | --create P] [--nodes K]
 *                   [--expect N] [--fast] [--timeout SEC] [--stop FILE]
 *                   [--db DIR] [--name TAG]
 *
 *   --create P   this process holds the seed: its node 0 creates the graph
 *                and listens on A:P; the other nodes join it.
 *   --seed S:P   join the seed at IPv4 address S, port P.
 *   --expect N   nodes in the whole run (all hosts): a host is done when each
 *                of its nodes sees N nodes (presence) and N records (one
 *                published by every node after it joined).
 *
 * Prints "<name> joined <ms>" when all its nodes are synchronized and
 * listening, then "<name> done <ms> ..." with per-node completion times, and
 * keeps serving until FILE exists (so late hosts still find everyone) or the
 * timeout passes.  Exit status 0 done, 1 timed out, 2 setup error.
 */
#define BENCH_NAME "bench_multihost"
#include "p2pgraph.h"
#include "bench_util.h"
#include <arpa/inet.h>

#define MAXK 256

static const GUID REC_TYPE = {0x6d756c74, 0x6968, 0x6f73, {0x74, 0x20, 0x72, 0x65, 0x63, 0x6f, 0x72, 0x64}};

static HGRAPH g[MAXK];
static int joined[MAXK], listening[MAXK], published[MAXK];
static long long done_at[MAXK];

static SOCKADDR_IN6 v4mapped(const char *ip, unsigned port)
{
    SOCKADDR_IN6 a;
    struct in_addr in;
    memset(&a, 0, sizeof a);
    a.sin6_family = AF_INET6;
    if (inet_pton(AF_INET, ip, &in) != 1) {
        fprintf(stderr, BENCH_NAME ": bad IPv4 address %s\n", ip);
        exit(2);
    }
    a.sin6_addr.s6_addr[10] = 0xFF;
    a.sin6_addr.s6_addr[11] = 0xFF;
    memcpy(&a.sin6_addr.s6_addr[12], &in, 4);
    a.sin6_port = htons((unsigned short)port);
    return a;
}

static void service(int ms)
{
    PEER_POLL_FD fds[4096], ready[4096];
    struct pollfd p[4096];
    ULONG n = 0, i, nr = 0;
    ULONGLONG dl = PEER_NO_DEADLINE, now = now_ms();
    HRESULT hr = PeerGraphGetPollFds(fds, 4096, &n, &dl);
    int wait = ms;
    if (FAILED(hr)) die_hr("PeerGraphGetPollFds", hr);
    if (dl != PEER_NO_DEADLINE) wait = dl <= now ? 0 : (dl - now < (ULONGLONG)ms ? (int)(dl - now) : ms);
    for (i = 0; i < n; i++) {
        p[i].fd = fds[i].s;
        p[i].events = (short)(((fds[i].dwEvents & PEER_POLL_READ) ? POLLIN : 0) | ((fds[i].dwEvents & PEER_POLL_WRITE) ? POLLOUT : 0));
        p[i].revents = 0;
    }
    if (poll(p, n, wait) < 0 && errno != EINTR) { perror("poll"); exit(2); }
    for (i = 0; i < n; i++)
        if (p[i].revents) {
            ready[nr].s = p[i].fd;
            ready[nr].dwEvents = ((p[i].revents & POLLIN) ? PEER_POLL_READ : 0) | ((p[i].revents & POLLOUT) ? PEER_POLL_WRITE : 0) |
                                 ((p[i].revents & (POLLERR | POLLHUP)) ? PEER_POLL_ERROR : 0);
            nr++;
        }
    hr = PeerGraphService(ready, nr, now_ms());
    if (FAILED(hr)) die_hr("PeerGraphService", hr);
}

static ULONG count_records(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0;
    if (PeerGraphEnumRecords(h, &REC_TYPE, NULL, &en) != S_OK) return 0;
    PeerGraphGetItemCount(en, &n);
    PeerGraphEndEnumeration(en);
    return n;
}

static ULONG count_nodes(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0;
    if (PeerGraphEnumNodes(h, NULL, &en) != S_OK) return 0;
    PeerGraphGetItemCount(en, &n);
    PeerGraphEndEnumeration(en);
    return n;
}

static void publish(int i, const char *name)
{
    PEER_RECORD r;
    GUID id;
    char text[96];
    HRESULT hr;
    FILETIME ft;
    ULONGLONG exp = peer_now(g[i]) + 3600ULL * 10000000ULL;
    snprintf(text, sizeof text, "%s node %d", name, i);
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = REC_TYPE;
    ft.dwLowDateTime = (DWORD)exp;
    ft.dwHighDateTime = (DWORD)(exp >> 32);
    r.ftExpiration = ft;
    r.data.cbData = (ULONG)strlen(text);
    r.data.pbData = (PBYTE)text;
    hr = PeerGraphAddRecord(g[i], &r, &id);
    if (FAILED(hr)) die_hr_at("PeerGraphAddRecord", i, hr);
    published[i] = 1;
}

int main(int argc, char **argv)
{
    const char *addr = NULL, *seed = NULL, *stop = NULL, *db = "build/tmp-multihost", *name = "host";
    unsigned create_port = 0;
    int k = 4, fast = 0, a, i, all_joined = 0, all_done = 0;
    ULONG expect = 0;
    double timeout = 120;
    long long t0;
    PEER_VERSION_DATA vd;
    SOCKADDR_IN6 seed_addr;
    HRESULT hr;
    wchar_t dbw[256];
    for (a = 1; a < argc; a++) {
        if (!strcmp(argv[a], "--addr") && a + 1 < argc) addr = argv[++a];
        else if (!strcmp(argv[a], "--seed") && a + 1 < argc) seed = argv[++a];
        else if (!strcmp(argv[a], "--create") && a + 1 < argc) create_port = (unsigned)atoi(argv[++a]);
        else if (!strcmp(argv[a], "--nodes") && a + 1 < argc) k = atoi(argv[++a]);
        else if (!strcmp(argv[a], "--expect") && a + 1 < argc) expect = (ULONG)atol(argv[++a]);
        else if (!strcmp(argv[a], "--fast")) fast = 1;
        else if (!strcmp(argv[a], "--timeout") && a + 1 < argc) timeout = atof(argv[++a]);
        else if (!strcmp(argv[a], "--stop") && a + 1 < argc) stop = argv[++a];
        else if (!strcmp(argv[a], "--db") && a + 1 < argc) db = argv[++a];
        else if (!strcmp(argv[a], "--name") && a + 1 < argc) name = argv[++a];
        else {
            fprintf(stderr, "usage: %s --addr A (--create PORT | --seed S:P) [--nodes K] [--expect N] [--fast]\n"
                            "       [--timeout SEC] [--stop FILE] [--db DIR] [--name TAG]\n", argv[0]);
            return 2;
        }
    }
    if (!addr || (!seed && !create_port) || k < 1 || k > MAXK) {
        fprintf(stderr, BENCH_NAME ": need --addr, --create or --seed, and 1..%d nodes\n", MAXK);
        return 2;
    }
    if (!expect) expect = (ULONG)k;
    if (seed) {
        char ip[64];
        const char *colon = strrchr(seed, ':');
        if (!colon || colon - seed >= (long)sizeof ip) { fprintf(stderr, BENCH_NAME ": --seed wants IPv4:port\n"); return 2; }
        memcpy(ip, seed, (size_t)(colon - seed));
        ip[colon - seed] = 0;
        seed_addr = v4mapped(ip, (unsigned)atoi(colon + 1));
    } else
        seed_addr = v4mapped(addr, create_port);
    if (setup_db_dir(db) != 0) return 2;
    swprintf(dbw, 256, L"%s", db);
    if ((hr = PeerGraphSetDatabaseDirectory(dbw)) != S_OK) die_hr("PeerGraphSetDatabaseDirectory", hr);
    if ((hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd)) != S_OK) die_hr("PeerGraphStartup", hr);
    t0 = now_ns();
    for (i = 0; i < k; i++) {
        wchar_t peer[64];
        swprintf(peer, 64, L"%s-%d", name, i);
        PeerGraphDelete(L"multihost", peer, L"mh"); /* a stale database of an earlier run */
        if (create_port && i == 0) {
            PEER_GRAPH_PROPERTIES p;
            memset(&p, 0, sizeof p);
            p.dwSize = sizeof p;
            p.pwzGraphId = (PWSTR)L"multihost";
            p.pwzCreatorId = peer;
            p.cPresenceMax = (ULONG)-1; /* every node publishes its presence */
            hr = PeerGraphCreate(&p, L"mh", NULL, &g[0]);
            if (FAILED(hr)) die_hr("PeerGraphCreate", hr);
            joined[0] = 1;
        } else {
            hr = PeerGraphOpen(L"multihost", peer, L"mh", NULL, 0, NULL, &g[i]);
            if (FAILED(hr)) die_hr_at("PeerGraphOpen", i, hr);
        }
        if (fast && (hr = PeerGraphSetMaintenanceProfile(g[i], PEER_MAINTENANCE_FAST)) != S_OK)
            die_hr_at("PeerGraphSetMaintenanceProfile", i, hr);
    }
    for (;;) {
        double el = (double)(now_ns() - t0) / 1e9;
        if (el > timeout) {
            printf("%s timeout after %.1f s:", name, el);
            for (i = 0; i < k; i++) printf(" %d:%c%lu/%lu", i, joined[i] ? 'j' : '-', (unsigned long)count_nodes(g[i]),
                                          (unsigned long)count_records(g[i]));
            printf("\n");
            return 1;
        }
        for (i = 0; i < k; i++) {
            DWORD st = status_of(g[i]);
            if (!joined[i] && !listening[i]) { /* join: a connection attempt at a time, retried */
                ULONGLONG id;
                if (!(st & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
                    HPEERENUM en;
                    ULONG nc = 0;
                    if (PeerGraphEnumConnections(g[i], PEER_CONNECTION_NEIGHBOR, &en) == S_OK) {
                        PeerGraphGetItemCount(en, &nc);
                        PeerGraphEndEnumeration(en);
                    }
                    if (!nc && (i == 0 || listening[0] || !create_port)) {
                        PEER_ADDRESS pa;
                        memset(&pa, 0, sizeof pa);
                        pa.dwSize = sizeof pa;
                        pa.sin6 = seed_addr;
                        PeerGraphConnect(g[i], NULL, &pa, &id); /* PEER_E_ALREADY_EXISTS while one is under way */
                    }
                    continue;
                }
                joined[i] = 1;
            }
            if (joined[i] && !listening[i] && (st & PEER_GRAPH_STATUS_SYNCHRONIZED)) {
                PEER_ADDRESS la;
                memset(&la, 0, sizeof la);
                la.dwSize = sizeof la;
                la.sin6 = v4mapped(addr, create_port && i == 0 ? create_port : 0);
                hr = PeerGraphListenAddress(g[i], &la);
                if (FAILED(hr)) die_hr_at("PeerGraphListenAddress", i, hr);
                listening[i] = 1;
            }
            if (listening[i] && !published[i]) publish(i, name);
            if (published[i] && !done_at[i] && count_nodes(g[i]) >= expect && count_records(g[i]) >= expect)
                done_at[i] = now_ns() - t0;
        }
        if (!all_joined) {
            for (i = 0; i < k && listening[i]; i++) {}
            if (i == k) {
                all_joined = 1;
                printf("%s joined %.1f ms\n", name, (double)(now_ns() - t0) / 1e6);
                fflush(stdout);
            }
        }
        if (!all_done) {
            long long worst = 0;
            for (i = 0; i < k && done_at[i]; i++)
                if (done_at[i] > worst) worst = done_at[i];
            if (i == k) {
                all_done = 1;
                printf("%s done %.1f ms (%d nodes, each sees %lu nodes and %lu records)\n", name, (double)worst / 1e6, k,
                       (unsigned long)expect, (unsigned long)expect);
                fflush(stdout);
                if (!stop) break;
            }
        }
        if (all_done && stop && access(stop, F_OK) == 0) break;
        service(50);
    }
    for (i = 0; i < k; i++) PeerGraphClose(g[i]);
    for (i = 0; i < 20; i++) service(10);
    PeerGraphShutdown();
    return 0;
}
