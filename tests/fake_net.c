/*
 * fake_net.c - deterministic in-memory network for unit tests (see
 * fake_net.h for the model).  Standard C99 plus p2pgraph.h only.
 */
#include "fake_net.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FN_FIRST_SOCKET     1000u
#define FN_MAX_SOCKETS      0x10000000u /* keeps every id well inside an int */
#define FN_LISTEN_PORT_BASE 40000u
#define FN_LISTEN_PORT_SPAN (65536u - FN_LISTEN_PORT_BASE)
#define FN_CLIENT_PORT_BASE 50000u
#define FN_CLIENT_PORT_SPAN (65536u - FN_CLIENT_PORT_BASE)
#define FN_DEFAULT_SEED     0x9E3779B97F4A7C15ULL
#define FN_XORSHIFT_MUL     0x2545F4914F6CDD1DULL
/* 2026-01-01T00:00:00Z in 100-ns units since 1601-01-01. */
#define FN_UTC_BASE         134116992000000000ULL

enum { FN_LISTENER = 1, FN_STREAM = 2 };
enum { FN_OWN_LIB = 1, FN_OWN_RAW = 2, FN_OWN_PENDING = 3 };
enum { FN_CONNECTED = 0, FN_CONNECTING = 1, FN_BLACKHOLED = 2, FN_REFUSED = 3 };

typedef struct fn_ep fn_ep;
struct fn_ep {
    size_t index;        /* socket = FN_FIRST_SOCKET + index */
    int kind;            /* FN_LISTENER / FN_STREAM */
    int owner;           /* FN_OWN_* */
    SOCKADDR_IN6 local;
    SOCKADDR_IN6 remote; /* streams only */

    /* listener: server sides not accepted yet, oldest first */
    fn_ep **backlog;
    size_t cBacklog, capBacklog;

    /* stream */
    fn_ep *peer;         /* NULL once the other side is gone */
    int conn;            /* FN_CONNECTED ... */
    int eof;             /* the peer will send nothing more */
    int reset;           /* the connection was reset */
    int shut;            /* this side shut down its sending side */
    unsigned char *buf;  /* receive buffer: buf[off .. off + len) */
    size_t off, len, cap;
};

/* All state; zero-initialised equals the state after fake_net_reset(). */
static fn_ep **g_eps;
static size_t g_cEps, g_capEps;
static SOCKADDR_IN6 *g_side;        /* fake_net_partition: the addresses of side A */
static SOCKADDR_IN6 g_source;       /* fake_net_set_source */
static int g_hasSource;
static size_t g_cSide;
static ULONGLONG g_bytesSent;       /* fake_net_bytes_sent */
static ULONGLONG g_now;
static ULONG g_maxIo;
static ULONG g_sendCap;
static SOCKADDR_IN6 *g_holes;
static size_t g_cHoles, g_capHoles;
static unsigned g_nextListenPort; /* offset from FN_LISTEN_PORT_BASE */
static unsigned g_nextClientPort; /* offset from FN_CLIENT_PORT_BASE */
static ULONGLONG g_rng;           /* 0 = not seeded yet: use the default */

/* ------------------------------------------------------------------------ */
/* Addresses                                                                 */
/* ------------------------------------------------------------------------ */

static void set_port(SOCKADDR_IN6 *a, unsigned short port)
{
    unsigned char *p = (unsigned char *)&a->sin6_port;
    p[0] = (unsigned char)(port >> 8);
    p[1] = (unsigned char)(port & 0xFFu);
}

unsigned short fake_net_port(const SOCKADDR_IN6 *addr)
{
    const unsigned char *p;
    if (addr == NULL)
        return 0;
    p = (const unsigned char *)&addr->sin6_port;
    return (unsigned short)(((unsigned)p[0] << 8) | p[1]);
}

static int is_family6(const SOCKADDR_IN6 *a)
{
    return a != NULL && a->sin6_family == AF_INET6;
}

static int addr_bytes_equal(const SOCKADDR_IN6 *a, const SOCKADDR_IN6 *b)
{
    return memcmp(a->sin6_addr.s6_addr, b->sin6_addr.s6_addr, 16) == 0;
}

static int addr_is_unspecified(const SOCKADDR_IN6 *a)
{
    static const unsigned char zero[16];
    return memcmp(a->sin6_addr.s6_addr, zero, 16) == 0;
}

static int addr_is_v4mapped(const SOCKADDR_IN6 *a)
{
    static const unsigned char prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xFF, 0xFF };
    return memcmp(a->sin6_addr.s6_addr, prefix, 12) == 0;
}

int fake_net_addr_equal(const SOCKADDR_IN6 *a, const SOCKADDR_IN6 *b)
{
    if (!is_family6(a) || !is_family6(b))
        return 0;
    return addr_bytes_equal(a, b) && fake_net_port(a) == fake_net_port(b);
}

static SOCKADDR_IN6 make_addr(const unsigned char bytes[16], unsigned short port)
{
    SOCKADDR_IN6 a;
    memset(&a, 0, sizeof(a));
    a.sin6_family = AF_INET6;
    set_port(&a, port);
    memcpy(a.sin6_addr.s6_addr, bytes, 16);
    return a;
}

SOCKADDR_IN6 fake_net_addr_loopback6(unsigned short port)
{
    unsigned char b[16];
    memset(b, 0, sizeof(b));
    b[15] = 1;
    return make_addr(b, port);
}

SOCKADDR_IN6 fake_net_addr_v4mapped(unsigned char a, unsigned char b, unsigned char c,
                                     unsigned char d, unsigned short port)
{
    unsigned char x[16];
    memset(x, 0, sizeof(x));
    x[10] = 0xFF;
    x[11] = 0xFF;
    x[12] = a;
    x[13] = b;
    x[14] = c;
    x[15] = d;
    return make_addr(x, port);
}

SOCKADDR_IN6 fake_net_addr_any(unsigned short port)
{
    unsigned char b[16];
    memset(b, 0, sizeof(b));
    return make_addr(b, port);
}

static int hex_value(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* "a.b.c.d" exactly (n characters) -> 4 bytes. */
static int parse_dotted_quad(const char *s, size_t n, unsigned char out[4])
{
    size_t i = 0;
    int part;
    for (part = 0; part < 4; part++) {
        unsigned v = 0;
        size_t digits = 0;
        if (part > 0) {
            if (i >= n || s[i] != '.')
                return 0;
            i++;
        }
        while (i < n && s[i] >= '0' && s[i] <= '9') {
            v = v * 10u + (unsigned)(s[i] - '0');
            i++;
            if (++digits > 3)
                return 0;
        }
        if (digits == 0 || v > 255u)
            return 0;
        out[part] = (unsigned char)v;
    }
    return i == n;
}

/* Colon-separated groups without "::" (n characters; n may be 0).  A dotted
 * quad is allowed as the last token when allowQuad.  Writes at most maxGroups
 * 16-bit groups; returns their number or -1. */
static int parse_groups(const char *s, size_t n, unsigned groups[8], int maxGroups, int allowQuad)
{
    size_t i = 0;
    int count = 0;
    if (n == 0)
        return 0;
    for (;;) {
        size_t start = i, end;
        while (i < n && s[i] != ':')
            i++;
        end = i;
        if (end == start)
            return -1;
        if (memchr(s + start, '.', end - start) != NULL) {
            unsigned char q[4];
            if (!allowQuad || end != n || count + 2 > maxGroups ||
                !parse_dotted_quad(s + start, end - start, q))
                return -1;
            groups[count++] = ((unsigned)q[0] << 8) | q[1];
            groups[count++] = ((unsigned)q[2] << 8) | q[3];
        } else {
            unsigned v = 0;
            size_t k;
            if (end - start > 4 || count + 1 > maxGroups)
                return -1;
            for (k = start; k < end; k++) {
                int h = hex_value(s[k]);
                if (h < 0)
                    return -1;
                v = (v << 4) | (unsigned)h;
            }
            groups[count++] = v;
        }
        if (i == n)
            return count;
        i++; /* the ':' */
        if (i == n)
            return -1; /* trailing single ':' */
    }
}

static int parse_ipv6(const char *text, unsigned char out[16], unsigned long *pScope)
{
    const char *pct = strchr(text, '%');
    size_t n = pct != NULL ? (size_t)(pct - text) : strlen(text);
    const char *dbl = NULL;
    unsigned head[8], tail[8];
    int cHead, cTail, i;
    size_t k;

    *pScope = 0;
    if (pct != NULL) {
        const char *p = pct + 1;
        unsigned long v = 0;
        if (*p == '\0')
            return 0;
        for (; *p != '\0'; p++) {
            if (*p < '0' || *p > '9')
                return 0;
            v = v * 10ul + (unsigned long)(*p - '0');
            if (v > 0xFFFFFFFFul)
                return 0;
        }
        *pScope = v;
    }
    if (n == 0)
        return 0;
    for (k = 0; k + 1 < n; k++) {
        if (text[k] == ':' && text[k + 1] == ':') {
            dbl = text + k;
            break;
        }
    }
    if (dbl == NULL) {
        cHead = parse_groups(text, n, head, 8, 1);
        if (cHead != 8)
            return 0;
        cTail = 0;
    } else {
        size_t nHead = (size_t)(dbl - text);
        const char *t = dbl + 2;
        size_t nTail = n - nHead - 2;
        /* no second "::" and no ":::" */
        for (k = 0; k + 1 < nTail; k++)
            if (t[k] == ':' && t[k + 1] == ':')
                return 0;
        if (nTail > 0 && t[0] == ':')
            return 0;
        cHead = parse_groups(text, nHead, head, 7, 0);
        if (cHead < 0)
            return 0;
        cTail = parse_groups(t, nTail, tail, 7 - cHead, 1);
        if (cTail < 0)
            return 0;
    }
    memset(out, 0, 16);
    for (i = 0; i < cHead; i++) {
        out[2 * i] = (unsigned char)(head[i] >> 8);
        out[2 * i + 1] = (unsigned char)(head[i] & 0xFFu);
    }
    for (i = 0; i < cTail; i++) {
        int g = 8 - cTail + i;
        out[2 * g] = (unsigned char)(tail[i] >> 8);
        out[2 * g + 1] = (unsigned char)(tail[i] & 0xFFu);
    }
    return 1;
}

SOCKADDR_IN6 fake_net_addr6(const char *text, unsigned short port)
{
    unsigned char b[16];
    unsigned long scope;
    SOCKADDR_IN6 a;
    if (text == NULL)
        return fake_net_addr_loopback6(port);
    if (!parse_ipv6(text, b, &scope)) {
        memset(&a, 0, sizeof(a)); /* sin6_family 0: rejected by the shim */
        set_port(&a, port);
        return a;
    }
    a = make_addr(b, port);
    a.sin6_scope_id = (ULONG)scope;
    return a;
}

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                 */
/* ------------------------------------------------------------------------ */

static PEER_SOCKET sock_of(const fn_ep *ep)
{
    return (PEER_SOCKET)(FN_FIRST_SOCKET + ep->index);
}

static fn_ep *lookup(PEER_SOCKET s)
{
    size_t idx;
    if (s == PEER_INVALID_SOCKET || s < (PEER_SOCKET)FN_FIRST_SOCKET)
        return NULL;
    idx = (size_t)(s - (PEER_SOCKET)FN_FIRST_SOCKET);
    if (idx >= g_cEps)
        return NULL;
    return g_eps[idx];
}

static fn_ep *lookup_owned(PEER_SOCKET s, int owner)
{
    fn_ep *ep = lookup(s);
    return ep != NULL && ep->owner == owner ? ep : NULL;
}

static fn_ep *lookup_stream(PEER_SOCKET s, int owner)
{
    fn_ep *ep = lookup_owned(s, owner);
    return ep != NULL && ep->kind == FN_STREAM ? ep : NULL;
}

static fn_ep *ep_new(int kind, int owner)
{
    fn_ep *ep;
    if (g_cEps >= FN_MAX_SOCKETS)
        return NULL;
    if (g_cEps == g_capEps) {
        size_t cap = g_capEps ? g_capEps * 2 : 16;
        fn_ep **p = (fn_ep **)realloc(g_eps, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        g_eps = p;
        g_capEps = cap;
    }
    ep = (fn_ep *)calloc(1, sizeof(*ep));
    if (ep == NULL)
        return NULL;
    ep->index = g_cEps;
    ep->kind = kind;
    ep->owner = owner;
    g_eps[g_cEps++] = ep;
    return ep;
}

static void ep_free_memory(fn_ep *ep)
{
    g_eps[ep->index] = NULL;
    free(ep->buf);
    free(ep->backlog);
    free(ep);
}

/* Closes ep: orderly (the peer reads EOF) or abortive (the peer is reset).
 * A listener's pending connections are dropped and their clients reset. */
static void ep_destroy(fn_ep *ep, int abortive)
{
    size_t i;
    if (ep->kind == FN_STREAM && ep->peer != NULL) {
        fn_ep *peer = ep->peer;
        peer->peer = NULL;
        if (abortive)
            peer->reset = 1;
        else
            peer->eof = 1;
        ep->peer = NULL;
    }
    if (ep->kind == FN_LISTENER) {
        for (i = 0; i < ep->cBacklog; i++)
            ep_destroy(ep->backlog[i], 1);
        ep->cBacklog = 0;
    }
    ep_free_memory(ep);
}

static int buf_append(fn_ep *ep, const void *pv, size_t cb)
{
    if (cb == 0)
        return 1;
    if (ep->cap - ep->off - ep->len < cb) {
        if (ep->off > 0) {
            memmove(ep->buf, ep->buf + ep->off, ep->len);
            ep->off = 0;
        }
        if (ep->cap - ep->len < cb) {
            size_t cap = ep->cap ? ep->cap : 256;
            unsigned char *p;
            while (cap - ep->len < cb) {
                if (cap > (size_t)-1 / 2)
                    return 0;
                cap *= 2;
            }
            p = (unsigned char *)realloc(ep->buf, cap);
            if (p == NULL)
                return 0;
            ep->buf = p;
            ep->cap = cap;
        }
    }
    memcpy(ep->buf + ep->off + ep->len, pv, cb);
    ep->len += cb;
    return 1;
}

static size_t buf_take(fn_ep *ep, void *pv, size_t cb)
{
    size_t n = cb < ep->len ? cb : ep->len;
    if (n == 0)
        return 0;
    memcpy(pv, ep->buf + ep->off, n);
    ep->off += n;
    ep->len -= n;
    if (ep->len == 0)
        ep->off = 0;
    return n;
}

static int backlog_push(fn_ep *listener, fn_ep *ep)
{
    if (listener->cBacklog == listener->capBacklog) {
        size_t cap = listener->capBacklog ? listener->capBacklog * 2 : 8;
        fn_ep **p = (fn_ep **)realloc(listener->backlog, cap * sizeof(*p));
        if (p == NULL)
            return 0;
        listener->backlog = p;
        listener->capBacklog = cap;
    }
    listener->backlog[listener->cBacklog++] = ep;
    return 1;
}

static fn_ep *backlog_pop(fn_ep *listener)
{
    fn_ep *ep;
    if (listener->cBacklog == 0)
        return NULL;
    ep = listener->backlog[0];
    listener->cBacklog--;
    memmove(listener->backlog, listener->backlog + 1, listener->cBacklog * sizeof(*listener->backlog));
    return ep;
}

static int port_in_use(unsigned short port)
{
    size_t i;
    for (i = 0; i < g_cEps; i++) {
        const fn_ep *ep = g_eps[i];
        if (ep != NULL && ep->kind == FN_LISTENER && fake_net_port(&ep->local) == port)
            return 1;
    }
    return 0;
}

static fn_ep *find_listener(const SOCKADDR_IN6 *to)
{
    unsigned short port = fake_net_port(to);
    size_t i;
    if (port == 0)
        return NULL;
    for (i = 0; i < g_cEps; i++) {
        fn_ep *ep = g_eps[i];
        if (ep != NULL && ep->kind == FN_LISTENER && fake_net_port(&ep->local) == port &&
            (addr_is_unspecified(&ep->local) || addr_bytes_equal(&ep->local, to)))
            return ep;
    }
    return NULL;
}

static int is_blackholed(const SOCKADDR_IN6 *to)
{
    size_t i;
    for (i = 0; i < g_cHoles; i++) {
        unsigned short hp = fake_net_port(&g_holes[i]);
        if (addr_bytes_equal(&g_holes[i], to) && (hp == 0 || hp == fake_net_port(to)))
            return 1;
    }
    return 0;
}

/* fake_net_partition: is addr on side A? */
static int on_side_a(const SOCKADDR_IN6 *a)
{
    size_t i;
    for (i = 0; i < g_cSide; i++)
        if (addr_bytes_equal(&g_side[i], a))
            return 1;
    return 0;
}

/* Does the partition lie between this stream's two ends? */
static int is_cut(const fn_ep *ep)
{
    return g_cSide != 0 && on_side_a(&ep->local) != on_side_a(&ep->remote);
}

static HRESULT listen_common(const SOCKADDR_IN6 *pAddr, int owner, fn_ep **pep)
{
    unsigned short port;
    fn_ep *ep;
    *pep = NULL;
    if (!is_family6(pAddr))
        return E_INVALIDARG;
    port = fake_net_port(pAddr);
    if (port == 0) {
        unsigned tries;
        for (tries = 0; tries < FN_LISTEN_PORT_SPAN; tries++) {
            unsigned short cand =
                (unsigned short)(FN_LISTEN_PORT_BASE + (g_nextListenPort++ % FN_LISTEN_PORT_SPAN));
            if (!port_in_use(cand)) {
                port = cand;
                break;
            }
        }
        if (port == 0)
            return PEER_E_ALREADY_LISTENING;
    } else if (port_in_use(port)) {
        return PEER_E_ALREADY_LISTENING;
    }
    ep = ep_new(FN_LISTENER, owner);
    if (ep == NULL)
        return E_OUTOFMEMORY;
    ep->local = *pAddr;
    ep->local.sin6_flowinfo = 0;
    set_port(&ep->local, port);
    *pep = ep;
    return S_OK;
}

/* A client socket towards *pTo.  Library connects (immediate 0) honour
 * blackholes and yield a refused socket when nothing listens; raw connects
 * (immediate 1) complete at once and yield NULL (*phr S_FALSE) when nothing
 * listens. */
static fn_ep *connect_common(const SOCKADDR_IN6 *pFrom, const SOCKADDR_IN6 *pTo, int owner, int immediate,
                             HRESULT *phr)
{
    fn_ep *client, *server, *listener;
    *phr = E_INVALIDARG;
    if (!is_family6(pTo))
        return NULL;
    listener = find_listener(pTo);
    if (immediate && listener == NULL) {
        *phr = S_FALSE;
        return NULL;
    }
    client = ep_new(FN_STREAM, owner);
    if (client == NULL) {
        *phr = E_OUTOFMEMORY;
        return NULL;
    }
    if (pFrom != NULL)
        client->local = *pFrom;
    else if (g_hasSource && owner == FN_OWN_LIB)
        client->local = g_source;
    else if (addr_is_v4mapped(pTo))
        client->local = fake_net_addr_v4mapped(127, 0, 0, 1, 0);
    else
        client->local = fake_net_addr_loopback6(0);
    set_port(&client->local,
             (unsigned short)(FN_CLIENT_PORT_BASE + (g_nextClientPort++ % FN_CLIENT_PORT_SPAN)));
    client->remote = *pTo;
    client->remote.sin6_flowinfo = 0;
    *phr = S_OK;
    if (!immediate && (is_blackholed(pTo) || is_cut(client))) {
        client->conn = FN_BLACKHOLED;
        return client;
    }
    if (listener == NULL) {
        client->conn = FN_REFUSED;
        return client;
    }
    server = ep_new(FN_STREAM, FN_OWN_PENDING);
    if (server == NULL || !backlog_push(listener, server)) {
        if (server != NULL)
            ep_free_memory(server);
        ep_free_memory(client);
        *phr = E_OUTOFMEMORY;
        return NULL;
    }
    server->local = *pTo;
    server->local.sin6_flowinfo = 0;
    server->remote = client->local;
    server->peer = client;
    client->peer = server;
    client->conn = immediate ? FN_CONNECTED : FN_CONNECTING;
    return client;
}

/* What pfnWait would report for ep, before masking with the wanted set. */
static DWORD ready_bits(const fn_ep *ep)
{
    DWORD r = 0;
    if (ep->kind == FN_LISTENER)
        return ep->cBacklog > 0 ? PEER_POLL_READ : 0;
    switch (ep->conn) {
    case FN_CONNECTING:
        return PEER_POLL_WRITE;
    case FN_BLACKHOLED:
        return 0;
    case FN_REFUSED:
        return PEER_POLL_WRITE | PEER_POLL_ERROR;
    default:
        break;
    }
    if (is_cut(ep)) /* nothing crosses, not even an end of stream */
        return ep->shut || ep->peer == NULL || g_sendCap == 0 || ep->peer->len < g_sendCap ? PEER_POLL_WRITE : 0;
    if (ep->reset)
        return PEER_POLL_READ | PEER_POLL_WRITE | PEER_POLL_ERROR;
    if (ep->len > 0 || ep->eof)
        r |= PEER_POLL_READ;
    if (ep->shut || ep->peer == NULL || g_sendCap == 0 || ep->peer->len < g_sendCap)
        r |= PEER_POLL_WRITE;
    return r;
}

static ULONGLONG rng_next(void)
{
    ULONGLONG x = g_rng != 0 ? g_rng : FN_DEFAULT_SEED;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    g_rng = x;
    return x * FN_XORSHIFT_MUL;
}

/* ------------------------------------------------------------------------ */
/* The shim table                                                            */
/* ------------------------------------------------------------------------ */

static HRESULT fn_startup(PVOID pvContext)
{
    (void)pvContext;
    return S_OK;
}

static void fn_cleanup(PVOID pvContext)
{
    (void)pvContext;
}

static HRESULT fn_listen(PVOID pvContext, const SOCKADDR_IN6 *pAddr, PEER_SOCKET *ps, SOCKADDR_IN6 *pBound)
{
    fn_ep *ep;
    HRESULT hr;
    (void)pvContext;
    if (ps == NULL)
        return E_INVALIDARG;
    hr = listen_common(pAddr, FN_OWN_LIB, &ep);
    if (FAILED(hr))
        return hr;
    *ps = sock_of(ep);
    if (pBound != NULL)
        *pBound = ep->local;
    return S_OK;
}

static HRESULT fn_accept(PVOID pvContext, PEER_SOCKET sListen, PEER_SOCKET *ps, SOCKADDR_IN6 *pRemote)
{
    fn_ep *listener = lookup_owned(sListen, FN_OWN_LIB);
    fn_ep *ep;
    (void)pvContext;
    if (listener == NULL || listener->kind != FN_LISTENER || ps == NULL)
        return E_INVALIDARG;
    ep = backlog_pop(listener);
    if (ep == NULL)
        return S_FALSE;
    ep->owner = FN_OWN_LIB;
    *ps = sock_of(ep);
    if (pRemote != NULL)
        *pRemote = ep->remote;
    return S_OK;
}

static HRESULT fn_connect(PVOID pvContext, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps)
{
    HRESULT hr;
    fn_ep *ep;
    (void)pvContext;
    if (ps == NULL)
        return E_INVALIDARG;
    ep = connect_common(NULL, pTo, FN_OWN_LIB, 0, &hr);
    if (ep == NULL)
        return hr;
    *ps = sock_of(ep);
    return S_FALSE;
}

static HRESULT fn_connect_from(PVOID pvContext, const SOCKADDR_IN6 *pFrom, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps)
{
    HRESULT hr;
    fn_ep *ep;
    (void)pvContext;
    if (ps == NULL || (pFrom != NULL && !is_family6(pFrom)))
        return E_INVALIDARG;
    ep = connect_common(pFrom, pTo, FN_OWN_LIB, 0, &hr);
    if (ep == NULL)
        return hr;
    *ps = sock_of(ep);
    return S_FALSE;
}

static HRESULT fn_connect_result(PVOID pvContext, PEER_SOCKET s)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_LIB);
    (void)pvContext;
    if (ep == NULL)
        return E_INVALIDARG;
    switch (ep->conn) {
    case FN_CONNECTING:
        ep->conn = FN_CONNECTED;
        return S_OK;
    case FN_BLACKHOLED:
        return S_FALSE;
    case FN_REFUSED:
        return PEER_E_TCP_CONNECTION_REFUSED;
    default:
        return S_OK;
    }
}

static long fn_send(PVOID pvContext, PEER_SOCKET s, const void *pv, ULONG cb)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_LIB);
    size_t n = cb;
    (void)pvContext;
    if (ep == NULL || pv == NULL || cb == 0)
        return PEER_NET_FAILED;
    if (ep->conn == FN_CONNECTING || ep->conn == FN_BLACKHOLED)
        return PEER_NET_WOULDBLOCK;
    if (ep->conn == FN_REFUSED || ep->shut || ((ep->reset || ep->peer == NULL) && !is_cut(ep)))
        return PEER_NET_FAILED;
    if (ep->peer == NULL)
        return (long)(g_maxIo != 0 && n > g_maxIo ? g_maxIo : n); /* the far end is gone: unseen across the cut */
    if (g_maxIo != 0 && n > g_maxIo)
        n = g_maxIo;
    if (g_sendCap != 0) {
        if (ep->peer->len >= g_sendCap)
            return PEER_NET_WOULDBLOCK;
        if (n > g_sendCap - ep->peer->len)
            n = g_sendCap - ep->peer->len;
    }
    if (n > (size_t)LONG_MAX)
        n = (size_t)LONG_MAX;
    if (!buf_append(ep->peer, pv, n))
        return PEER_NET_FAILED;
    g_bytesSent += n;
    return (long)n;
}

/* A gather write: the pieces in order, as one pfnSend would take them (the
 * max_io limit applies to the whole call). */
static long fn_sendv(PVOID pvContext, PEER_SOCKET s, const PEER_NET_BUF *pBufs, ULONG cBufs)
{
    long total = 0;
    size_t budget = g_maxIo != 0 ? g_maxIo : (size_t)-1;
    ULONG i;
    for (i = 0; i < cBufs && budget; i++) {
        ULONG cb = pBufs[i].cb;
        long k;
        if (cb == 0)
            continue;
        if (cb > budget)
            cb = (ULONG)budget;
        k = fn_send(pvContext, s, pBufs[i].pv, cb);
        if (k < 0)
            return total ? total : k;
        total += k;
        budget -= (size_t)k;
        if ((ULONG)k < pBufs[i].cb)
            break;
    }
    return total ? total : PEER_NET_WOULDBLOCK;
}

static long fn_recv(PVOID pvContext, PEER_SOCKET s, void *pv, ULONG cb)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_LIB);
    size_t n = cb;
    (void)pvContext;
    if (ep == NULL || pv == NULL || cb == 0)
        return PEER_NET_FAILED;
    if (ep->conn == FN_CONNECTING || ep->conn == FN_BLACKHOLED)
        return PEER_NET_WOULDBLOCK;
    if (is_cut(ep))
        return PEER_NET_WOULDBLOCK; /* in flight until the partition heals */
    if (ep->conn == FN_REFUSED || ep->reset)
        return PEER_NET_FAILED;
    if (ep->len == 0)
        return ep->eof ? 0 : PEER_NET_WOULDBLOCK;
    if (g_maxIo != 0 && n > g_maxIo)
        n = g_maxIo;
    if (n > (size_t)LONG_MAX)
        n = (size_t)LONG_MAX;
    return (long)buf_take(ep, pv, n);
}

static HRESULT fn_local_address(PVOID pvContext, PEER_SOCKET s, SOCKADDR_IN6 *pAddr)
{
    fn_ep *ep = lookup_owned(s, FN_OWN_LIB);
    (void)pvContext;
    if (ep == NULL || pAddr == NULL)
        return E_INVALIDARG;
    *pAddr = ep->local;
    return S_OK;
}

static void fn_shutdown_send(PVOID pvContext, PEER_SOCKET s)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_LIB);
    (void)pvContext;
    if (ep == NULL || ep->shut)
        return;
    ep->shut = 1;
    if (ep->peer != NULL)
        ep->peer->eof = 1;
}

static void fn_close(PVOID pvContext, PEER_SOCKET s)
{
    fn_ep *ep = lookup_owned(s, FN_OWN_LIB);
    (void)pvContext;
    if (ep != NULL)
        ep_destroy(ep, 0);
}

static HRESULT fn_wait(PVOID pvContext, const PEER_POLL_FD *pWant, ULONG cWant,
                       PEER_POLL_FD *pReady, ULONG *pcReady, DWORD dwTimeoutMs)
{
    ULONG i, c = 0;
    (void)pvContext;
    (void)dwTimeoutMs;
    if (pcReady == NULL)
        return E_INVALIDARG;
    *pcReady = 0;
    if (cWant > 0 && (pWant == NULL || pReady == NULL))
        return E_INVALIDARG;
    for (i = 0; i < cWant; i++)
        if (lookup_owned(pWant[i].s, FN_OWN_LIB) == NULL)
            return E_INVALIDARG;
    for (i = 0; i < cWant; i++) {
        const fn_ep *ep = lookup(pWant[i].s);
        DWORD ev = ready_bits(ep) & (pWant[i].dwEvents | PEER_POLL_ERROR);
        if (ev != 0) {
            pReady[c].s = pWant[i].s;
            pReady[c].dwEvents = ev;
            c++;
        }
    }
    *pcReady = c;
    return S_OK;
}

static ULONGLONG fn_tick_count(PVOID pvContext)
{
    (void)pvContext;
    return g_now;
}

static ULONGLONG fn_utc_now(PVOID pvContext)
{
    (void)pvContext;
    return FN_UTC_BASE + g_now * 10000u;
}

static HRESULT fn_random(PVOID pvContext, void *pv, ULONG cb)
{
    unsigned char *p = (unsigned char *)pv;
    ULONG i = 0;
    (void)pvContext;
    if (pv == NULL && cb > 0)
        return E_INVALIDARG;
    while (i < cb) {
        ULONGLONG x = rng_next();
        int k;
        for (k = 0; k < 8 && i < cb; k++, i++) {
            p[i] = (unsigned char)(x & 0xFFu);
            x >>= 8;
        }
    }
    return S_OK;
}

static const PEER_NET_SHIM g_shim = {
    .dwSize = sizeof(PEER_NET_SHIM),
    .pvContext = NULL,
    .pfnStartup = fn_startup,
    .pfnCleanup = fn_cleanup,
    .pfnListen = fn_listen,
    .pfnAccept = fn_accept,
    .pfnConnect = fn_connect,
    .pfnConnectResult = fn_connect_result,
    .pfnSend = fn_send,
    .pfnRecv = fn_recv,
    .pfnLocalAddress = fn_local_address,
    .pfnShutdownSend = fn_shutdown_send,
    .pfnClose = fn_close,
    .pfnWait = fn_wait,
    .pfnTickCount = fn_tick_count,
    .pfnUtcNow = fn_utc_now,
    .pfnRandom = fn_random,
    .pfnSendV = fn_sendv,
    .pfnConnectFrom = fn_connect_from,
};

ULONGLONG fake_net_bytes_sent(void)
{
    return g_bytesSent;
}

void fake_net_set_source(const SOCKADDR_IN6 *addr)
{
    g_hasSource = addr != NULL;
    if (addr != NULL)
        g_source = *addr;
}

int fake_net_partition(const SOCKADDR_IN6 *pSideA, size_t cSideA)
{
    SOCKADDR_IN6 *n = NULL;
    if (cSideA != 0) {
        if (pSideA == NULL || (n = (SOCKADDR_IN6 *)malloc(cSideA * sizeof *n)) == NULL)
            return 0;
        memcpy(n, pSideA, cSideA * sizeof *n);
    }
    free(g_side);
    g_side = n;
    g_cSide = cSideA;
    return 1;
}

void fake_net_reset_across(void)
{
    size_t i;
    for (i = 0; i < g_cEps; i++) {
        fn_ep *ep = g_eps[i];
        if (ep != NULL && ep->kind == FN_STREAM && ep->peer != NULL && is_cut(ep)) {
            ep->peer->peer = NULL;
            ep->peer->reset = 1;
            ep->peer = NULL;
            ep->reset = 1;
        }
    }
}

const PEER_NET_SHIM *fake_net_shim(void)
{
    return &g_shim;
}

/* ------------------------------------------------------------------------ */
/* Controls                                                                  */
/* ------------------------------------------------------------------------ */

void fake_net_reset(void)
{
    size_t i;
    free(g_side);
    g_side = NULL;
    g_cSide = 0;
    g_hasSource = 0;
    g_bytesSent = 0;
    for (i = 0; i < g_cEps; i++)
        if (g_eps[i] != NULL)
            ep_free_memory(g_eps[i]);
    free(g_eps);
    g_eps = NULL;
    g_cEps = g_capEps = 0;
    free(g_holes);
    g_holes = NULL;
    g_cHoles = g_capHoles = 0;
    g_now = 0;
    g_maxIo = 0;
    g_sendCap = 0;
    g_nextListenPort = 0;
    g_nextClientPort = 0;
    g_rng = FN_DEFAULT_SEED;
}

void fake_net_set_now(ULONGLONG ms)
{
    g_now = ms;
}

ULONGLONG fake_net_now(void)
{
    return g_now;
}

void fake_net_advance(ULONGLONG ms)
{
    g_now += ms;
}

void fake_net_seed(ULONGLONG seed)
{
    g_rng = seed != 0 ? seed : FN_DEFAULT_SEED;
}

void fake_net_blackhole(const SOCKADDR_IN6 *addr)
{
    if (!is_family6(addr))
        return;
    if (g_cHoles == g_capHoles) {
        size_t cap = g_capHoles ? g_capHoles * 2 : 4;
        SOCKADDR_IN6 *p = (SOCKADDR_IN6 *)realloc(g_holes, cap * sizeof(*p));
        if (p == NULL) {
            fputs("fake_net: out of memory\n", stderr);
            abort();
        }
        g_holes = p;
        g_capHoles = cap;
    }
    g_holes[g_cHoles++] = *addr;
}

void fake_net_set_max_io(ULONG cb)
{
    g_maxIo = cb;
}

void fake_net_set_send_capacity(ULONG cb)
{
    g_sendCap = cb;
}

/* ------------------------------------------------------------------------ */
/* Raw endpoints                                                             */
/* ------------------------------------------------------------------------ */

PEER_SOCKET fake_net_raw_listen(const SOCKADDR_IN6 *addr)
{
    fn_ep *ep;
    if (FAILED(listen_common(addr, FN_OWN_RAW, &ep)))
        return PEER_INVALID_SOCKET;
    return sock_of(ep);
}

PEER_SOCKET fake_net_raw_accept(PEER_SOCKET listener)
{
    fn_ep *l = lookup_owned(listener, FN_OWN_RAW);
    fn_ep *ep;
    if (l == NULL || l->kind != FN_LISTENER)
        return PEER_INVALID_SOCKET;
    ep = backlog_pop(l);
    if (ep == NULL)
        return PEER_INVALID_SOCKET;
    ep->owner = FN_OWN_RAW;
    return sock_of(ep);
}

PEER_SOCKET fake_net_raw_connect(const SOCKADDR_IN6 *to)
{
    HRESULT hr;
    fn_ep *ep = connect_common(NULL, to, FN_OWN_RAW, 1, &hr);
    return ep != NULL ? sock_of(ep) : PEER_INVALID_SOCKET;
}

void fake_net_raw_write(PEER_SOCKET s, const void *pv, size_t cb)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_RAW);
    if (ep == NULL || ep->peer == NULL || pv == NULL || cb == 0)
        return;
    if (!buf_append(ep->peer, pv, cb)) {
        fputs("fake_net: out of memory\n", stderr);
        abort();
    }
}

size_t fake_net_raw_read(PEER_SOCKET s, void *pv, size_t cbMax)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_RAW);
    if (ep == NULL || pv == NULL)
        return 0;
    return buf_take(ep, pv, cbMax);
}

size_t fake_net_raw_pending(PEER_SOCKET s)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_RAW);
    return ep != NULL ? ep->len : 0;
}

int fake_net_raw_eof(PEER_SOCKET s)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_RAW);
    if (ep == NULL)
        return 0;
    if (ep->reset)
        return 2;
    return ep->eof ? 1 : 0;
}

void fake_net_raw_shutdown(PEER_SOCKET s)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_RAW);
    if (ep == NULL || ep->shut)
        return;
    ep->shut = 1;
    if (ep->peer != NULL)
        ep->peer->eof = 1;
}

void fake_net_raw_close(PEER_SOCKET s)
{
    fn_ep *ep = lookup_owned(s, FN_OWN_RAW);
    if (ep != NULL)
        ep_destroy(ep, 0);
}

void fake_net_raw_reset(PEER_SOCKET s)
{
    fn_ep *ep = lookup_owned(s, FN_OWN_RAW);
    if (ep != NULL)
        ep_destroy(ep, 1);
}

int fake_net_raw_local_address(PEER_SOCKET s, SOCKADDR_IN6 *pAddr)
{
    fn_ep *ep = lookup_owned(s, FN_OWN_RAW);
    if (ep == NULL || pAddr == NULL)
        return 0;
    *pAddr = ep->local;
    return 1;
}

int fake_net_raw_remote_address(PEER_SOCKET s, SOCKADDR_IN6 *pAddr)
{
    fn_ep *ep = lookup_stream(s, FN_OWN_RAW);
    if (ep == NULL || pAddr == NULL)
        return 0;
    *pAddr = ep->remote;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Inspection                                                                */
/* ------------------------------------------------------------------------ */

int fake_net_open_sockets(void)
{
    size_t i;
    int n = 0;
    for (i = 0; i < g_cEps; i++)
        if (g_eps[i] != NULL && g_eps[i]->owner == FN_OWN_LIB)
            n++;
    return n;
}

int fake_net_is_open(PEER_SOCKET s)
{
    return lookup(s) != NULL;
}
