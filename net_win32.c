/*
 * net_win32.c - the socket shim (PEER_NET_SHIM) for Windows (Winsock 2.2;
 * built with mingw-w64 or MSVC, tested under wine).
 *
 * Design:
 *  - pfnStartup/pfnCleanup are WSAStartup/WSACleanup (the library calls them
 *    once, at the first PeerGraphStartup and the last PeerGraphShutdown).
 *  - Every socket is non-blocking (FIONBIO) and not inherited by child
 *    processes.  Listeners use SO_EXCLUSIVEADDRUSE so no other program can
 *    steal the port; :: gives a dual-stack listener (IPV6_V6ONLY 0).
 *  - Addresses cross the shim as SOCKADDR_IN6 only (IPv4 as ::ffff:a.b.c.d);
 *    a connect to a v4-mapped address goes out on an AF_INET socket.
 *  - Waiting uses select(), not WSAPoll: before Windows 10 2004, WSAPoll did
 *    not report a failed non-blocking connect, and select() reports it only
 *    in exceptfds.  So every socket waiting for WRITE is also put in
 *    exceptfds, and an exceptfds hit is PEER_POLL_ERROR.  FD_SETSIZE is raised
 *    to NET_FD_SETSIZE (Windows' fd_set is an array, not a bitmap, so this is
 *    just its capacity); larger sets are refused with E_INVALIDARG.
 *  - Winsock errors become HRESULTs in one place, hr_from_wsa().
 *  - No state besides Winsock's own: the table is const.
 */
#define NET_FD_SETSIZE 1024
#ifndef FD_SETSIZE
#  define FD_SETSIZE NET_FD_SETSIZE /* must precede winsock2.h (via p2pgraph.h) */
#endif

#include "p2pgraph.h"

#include <bcrypt.h>
#include <limits.h>
#include <string.h>

#if FD_SETSIZE < NET_FD_SETSIZE
#  error "winsock2.h was included before net_win32.c could raise FD_SETSIZE"
#endif

#define NET_LISTEN_BACKLOG SOMAXCONN

/* ------------------------------------------------------------------------- */
/* Helpers                                                                    */
/* ------------------------------------------------------------------------- */

/*
 * The one place a Winsock error becomes an HRESULT.  fConnect: the connect
 * contract allows only refused, timeout and "failed".
 */
static HRESULT hr_from_wsa(int err, BOOL fConnect)
{
    switch (err) {
    case WSAECONNREFUSED: return PEER_E_TCP_CONNECTION_REFUSED;
    case WSAETIMEDOUT:    return PEER_E_TIMEOUT;
    default:              break;
    }
    if (fConnect)
        return PEER_E_CONNECTION_FAILED;
    switch (err) {
    case WSAEADDRINUSE:   return PEER_E_ALREADY_LISTENING;
    case WSAEAFNOSUPPORT: return PEER_E_IPV6_NOT_INSTALLED;
    case WSAEADDRNOTAVAIL:
    case WSAEINVAL:
    case WSAEFAULT:       return E_INVALIDARG;
    case WSAEACCES:       return E_ACCESSDENIED;
    case WSAENOBUFS:
    case WSAEMFILE:       return E_OUTOFMEMORY;
    case WSANOTINITIALISED: return PEER_E_NOT_INITIALIZED;
    default:              return HRESULT_FROM_WIN32((unsigned long)err);
    }
}

/* Non-blocking, not inherited.  0 or a Winsock error. */
static int prepare_socket(SOCKET s)
{
    u_long one = 1;
    if (ioctlsocket(s, FIONBIO, &one) == SOCKET_ERROR)
        return WSAGetLastError();
    /* Best effort: fails only for sockets of a layered provider. */
    (void)SetHandleInformation((HANDLE)s, HANDLE_FLAG_INHERIT, 0);
    return 0;
}

/* Best effort: a connection that cannot disable Nagle still works. */
static void set_nodelay(SOCKET s)
{
    BOOL one = TRUE;
    (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, (const char *)&one, sizeof one);
}

static BOOL is_v4mapped(const IN6_ADDR *a)
{
    static const unsigned char prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    return memcmp(a->s6_addr, prefix, sizeof prefix) == 0;
}

static BOOL is_unspecified(const IN6_ADDR *a)
{
    static const unsigned char zero[16] = { 0 };
    return memcmp(a->s6_addr, zero, sizeof zero) == 0;
}

/* Any socket address -> SOCKADDR_IN6 (AF_INET as ::ffff:a.b.c.d). */
static HRESULT to_sin6(const SOCKADDR_STORAGE *ss, SOCKADDR_IN6 *out)
{
    if (ss->ss_family == AF_INET6) {
        memcpy(out, ss, sizeof *out);
        return S_OK;
    }
    if (ss->ss_family == AF_INET) {
        const SOCKADDR_IN *v4 = (const SOCKADDR_IN *)ss;
        memset(out, 0, sizeof *out);
        out->sin6_family = AF_INET6;
        out->sin6_port = v4->sin_port;
        out->sin6_addr.s6_addr[10] = 0xff;
        out->sin6_addr.s6_addr[11] = 0xff;
        memcpy(&out->sin6_addr.s6_addr[12], &v4->sin_addr, 4);
        return S_OK;
    }
    return E_FAIL;
}

/* ------------------------------------------------------------------------- */
/* Shim functions                                                             */
/* ------------------------------------------------------------------------- */

static HRESULT net_startup(PVOID pvContext)
{
    WSADATA wsa;
    int err;
    (void)pvContext;

    err = WSAStartup(MAKEWORD(2, 2), &wsa);
    if (err != 0)
        return HRESULT_FROM_WIN32((unsigned long)err);
    if (wsa.wVersion != MAKEWORD(2, 2)) {
        WSACleanup();
        return HRESULT_FROM_WIN32(WSAVERNOTSUPPORTED);
    }
    return S_OK;
}

static void net_cleanup(PVOID pvContext)
{
    (void)pvContext;
    WSACleanup();
}

/* SOCKADDR_IN6 -> what the OS takes (v4-mapped as a plain IPv4 address). */
static const struct sockaddr *os_addr(const SOCKADDR_IN6 *p, SOCKADDR_IN6 *a6, SOCKADDR_IN *a4, int *plen)
{
    if (is_v4mapped(&p->sin6_addr)) {
        memset(a4, 0, sizeof *a4);
        a4->sin_family = AF_INET;
        a4->sin_port = p->sin6_port;
        memcpy(&a4->sin_addr, &p->sin6_addr.s6_addr[12], 4);
        *plen = (int)sizeof *a4;
        return (const struct sockaddr *)a4;
    }
    *a6 = *p;
    *plen = (int)sizeof *a6;
    return (const struct sockaddr *)a6;
}

static BOOL is_loopback6(const SOCKADDR_IN6 *p)
{
    static const unsigned char lo[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    return is_v4mapped(&p->sin6_addr) ? p->sin6_addr.s6_addr[12] == 127 : memcmp(p->sin6_addr.s6_addr, lo, 16) == 0;
}

static HRESULT net_listen(PVOID pvContext, const SOCKADDR_IN6 *pAddr, PEER_SOCKET *ps, SOCKADDR_IN6 *pBound)
{
    SOCKADDR_IN6 a;
    SOCKADDR_IN a4;
    const struct sockaddr *sa;
    SOCKADDR_STORAGE ss;
    int len = (int)sizeof ss, salen;
    DWORD v6only;
    BOOL one = TRUE;
    SOCKET s;
    int err;
    (void)pvContext;

    if (pAddr == NULL || ps == NULL || pBound == NULL || pAddr->sin6_family != AF_INET6)
        return E_INVALIDARG;
    sa = os_addr(pAddr, &a, &a4, &salen); /* a v4-mapped address: an IPv4 socket */
    v6only = is_unspecified(&pAddr->sin6_addr) ? 0 : 1;

    s = socket(sa->sa_family, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return hr_from_wsa(WSAGetLastError(), FALSE);
    err = prepare_socket(s);
    if (err == 0 && sa->sa_family == AF_INET6 &&
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, (const char *)&v6only, sizeof v6only) == SOCKET_ERROR)
        err = WSAGetLastError();
    if (err == 0 && setsockopt(s, SOL_SOCKET, SO_EXCLUSIVEADDRUSE, (const char *)&one, sizeof one) == SOCKET_ERROR)
        err = WSAGetLastError();
    if (err == 0 && bind(s, sa, salen) == SOCKET_ERROR) {
        err = WSAGetLastError();
        /* A port held exclusively by another socket, or reserved by the
         * system (excluded port ranges), fails with WSAEACCES. */
        if (err == WSAEACCES)
            err = WSAEADDRINUSE;
    }
    if (err == 0 && listen(s, NET_LISTEN_BACKLOG) == SOCKET_ERROR)
        err = WSAGetLastError();
    if (err == 0 && getsockname(s, (struct sockaddr *)&ss, &len) == SOCKET_ERROR)
        err = WSAGetLastError();
    if (err == 0 && FAILED(to_sin6(&ss, pBound)))
        err = WSAEAFNOSUPPORT;
    if (err != 0) {
        closesocket(s);
        return hr_from_wsa(err, FALSE);
    }
    *ps = s;
    return S_OK;
}

static HRESULT net_accept(PVOID pvContext, PEER_SOCKET sListen, PEER_SOCKET *ps, SOCKADDR_IN6 *pRemote)
{
    SOCKADDR_STORAGE ss;
    int len, err;
    SOCKET s;
    (void)pvContext;

    if (ps == NULL || pRemote == NULL)
        return E_INVALIDARG;
    for (;;) {
        len = (int)sizeof ss;
        s = accept(sListen, (struct sockaddr *)&ss, &len);
        if (s != INVALID_SOCKET)
            break;
        err = WSAGetLastError();
        if (err == WSAEWOULDBLOCK)
            return S_FALSE;
        if (err != WSAECONNRESET && err != WSAEINTR) /* reset before we took it: next */
            return hr_from_wsa(err, FALSE);
    }
    err = prepare_socket(s);
    if (err == 0 && FAILED(to_sin6(&ss, pRemote)))
        err = WSAEAFNOSUPPORT;
    if (err != 0) {
        closesocket(s);
        return hr_from_wsa(err, FALSE);
    }
    set_nodelay(s);
    *ps = s;
    return S_OK;
}

/* pFrom (optional): bind the source address first, when it can reach pTo
 * (same family; a loopback source only towards loopback). */
static HRESULT net_connect_from(PVOID pvContext, const SOCKADDR_IN6 *pFrom, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps)
{
    SOCKADDR_IN6 a6, f6;
    SOCKADDR_IN a4, f4;
    const struct sockaddr *sa;
    int salen, err;
    SOCKET s;
    (void)pvContext;

    if (pTo == NULL || ps == NULL || pTo->sin6_family != AF_INET6)
        return E_INVALIDARG;
    sa = os_addr(pTo, &a6, &a4, &salen);
    s = socket(sa->sa_family, SOCK_STREAM, IPPROTO_TCP);
    if (s == INVALID_SOCKET)
        return hr_from_wsa(WSAGetLastError(), TRUE);
    err = prepare_socket(s);
    if (err != 0) {
        closesocket(s);
        return hr_from_wsa(err, TRUE);
    }
    set_nodelay(s);
    if (pFrom != NULL && pFrom->sin6_family == AF_INET6 &&
        is_v4mapped(&pFrom->sin6_addr) == is_v4mapped(&pTo->sin6_addr) && (!is_loopback6(pFrom) || is_loopback6(pTo))) {
        SOCKADDR_IN6 from = *pFrom;
        int flen;
        const struct sockaddr *fa;
        from.sin6_port = 0;
        fa = os_addr(&from, &f6, &f4, &flen);
        if (bind(s, fa, flen) != 0) {
            err = WSAGetLastError();
            closesocket(s);
            return hr_from_wsa(err, TRUE);
        }
    }
    if (connect(s, sa, salen) == 0) {
        *ps = s;
        return S_OK;
    }
    err = WSAGetLastError();
    if (err == WSAEWOULDBLOCK) {
        *ps = s;
        return S_FALSE;
    }
    closesocket(s);
    return hr_from_wsa(err, TRUE);
}

static HRESULT net_connect(PVOID pvContext, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps)
{
    return net_connect_from(pvContext, NULL, pTo, ps);
}

static HRESULT net_connect_result(PVOID pvContext, PEER_SOCKET s)
{
    fd_set wfds, efds;
    struct timeval tv = { 0, 0 };
    int n, soerr = 0, len = (int)sizeof soerr;
    (void)pvContext;

    FD_ZERO(&wfds);
    FD_ZERO(&efds);
    FD_SET(s, &wfds);
    FD_SET(s, &efds);
    n = select(0, NULL, &wfds, &efds, &tv);
    if (n == 0)
        return S_FALSE;
    if (n == SOCKET_ERROR)
        return hr_from_wsa(WSAGetLastError(), TRUE);
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, (char *)&soerr, &len) == SOCKET_ERROR)
        return hr_from_wsa(WSAGetLastError(), TRUE);
    if (soerr != 0)
        return hr_from_wsa(soerr, TRUE);
    if (FD_ISSET(s, &efds)) /* failed, though the reason was not kept */
        return PEER_E_CONNECTION_FAILED;
    return S_OK;
}

static long net_sendv(PVOID pvContext, PEER_SOCKET s, const PEER_NET_BUF *pBufs, ULONG cBufs)
{
    WSABUF wb[256];
    DWORD sent = 0;
    ULONG i;
    int err;
    (void)pvContext;

    if (cBufs > 256)
        cBufs = 256; /* a partial write: the caller continues */
    for (i = 0; i < cBufs; i++) {
        wb[i].buf = (CHAR *)(uintptr_t)pBufs[i].pv;
        wb[i].len = pBufs[i].cb;
    }
    if (WSASend(s, wb, (DWORD)cBufs, &sent, 0, NULL, NULL) == 0)
        return (long)sent;
    err = WSAGetLastError();
    if (err == WSAEWOULDBLOCK || err == WSAEINTR)
        return PEER_NET_WOULDBLOCK;
    return PEER_NET_FAILED;
}

static long net_send(PVOID pvContext, PEER_SOCKET s, const void *pv, ULONG cb)
{
    int n, err;
    (void)pvContext;

    if (cb > INT_MAX)
        cb = INT_MAX;
    n = send(s, (const char *)pv, (int)cb, 0);
    if (n != SOCKET_ERROR)
        return n;
    err = WSAGetLastError();
    if (err == WSAEWOULDBLOCK || err == WSAEINTR)
        return PEER_NET_WOULDBLOCK;
    return PEER_NET_FAILED;
}

/* cb must be > 0: 0 means end of stream. */
static long net_recv(PVOID pvContext, PEER_SOCKET s, void *pv, ULONG cb)
{
    int n, err;
    (void)pvContext;

    if (cb > INT_MAX)
        cb = INT_MAX;
    n = recv(s, (char *)pv, (int)cb, 0);
    if (n != SOCKET_ERROR)
        return n;
    err = WSAGetLastError();
    if (err == WSAEWOULDBLOCK || err == WSAEINTR)
        return PEER_NET_WOULDBLOCK;
    return PEER_NET_FAILED;
}

static HRESULT net_local_address(PVOID pvContext, PEER_SOCKET s, SOCKADDR_IN6 *pAddr)
{
    SOCKADDR_STORAGE ss;
    int len = (int)sizeof ss;
    (void)pvContext;

    if (pAddr == NULL)
        return E_INVALIDARG;
    if (getsockname(s, (struct sockaddr *)&ss, &len) == SOCKET_ERROR)
        return hr_from_wsa(WSAGetLastError(), FALSE);
    return to_sin6(&ss, pAddr);
}

static void net_shutdown_send(PVOID pvContext, PEER_SOCKET s)
{
    (void)pvContext;
    (void)shutdown(s, SD_SEND);
}

static void net_close(PVOID pvContext, PEER_SOCKET s)
{
    (void)pvContext;
    (void)closesocket(s);
}

static HRESULT net_wait(PVOID pvContext, const PEER_POLL_FD *pWant, ULONG cWant,
                        PEER_POLL_FD *pReady, ULONG *pcReady, DWORD dwTimeoutMs)
{
    /* Three 8 KB sets: fine on the stack (1 MB by default). */
    fd_set rfds, wfds, efds;
    struct timeval tv;
    ULONG i, cReady = 0, cSet = 0;
    int n;
    (void)pvContext;

    if (pcReady == NULL || (cWant > 0 && (pWant == NULL || pReady == NULL)) || cWant > FD_SETSIZE)
        return E_INVALIDARG;
    *pcReady = 0;

    FD_ZERO(&rfds);
    FD_ZERO(&wfds);
    FD_ZERO(&efds);
    for (i = 0; i < cWant; i++) {
        if (pWant[i].dwEvents & PEER_POLL_READ) {
            FD_SET(pWant[i].s, &rfds);
            cSet++;
        }
        if (pWant[i].dwEvents & PEER_POLL_WRITE) { /* exceptfds: a failed connect */
            FD_SET(pWant[i].s, &wfds);
            FD_SET(pWant[i].s, &efds);
            cSet++;
        }
    }
    if (cSet == 0) { /* select() with no socket fails on Windows */
        Sleep(dwTimeoutMs);
        return S_OK;
    }

    tv.tv_sec = (long)(dwTimeoutMs / 1000u);
    tv.tv_usec = (long)(dwTimeoutMs % 1000u) * 1000L;
    n = select(0, &rfds, &wfds, &efds, &tv);
    if (n == SOCKET_ERROR) {
        int err = WSAGetLastError();
        return err == WSAEINTR ? S_OK : hr_from_wsa(err, FALSE);
    }
    for (i = 0; i < cWant && n > 0; i++) {
        DWORD ev = 0;
        if ((pWant[i].dwEvents & PEER_POLL_READ) && FD_ISSET(pWant[i].s, &rfds))
            ev |= PEER_POLL_READ;
        if ((pWant[i].dwEvents & PEER_POLL_WRITE) && FD_ISSET(pWant[i].s, &wfds))
            ev |= PEER_POLL_WRITE;
        if ((pWant[i].dwEvents & PEER_POLL_WRITE) && FD_ISSET(pWant[i].s, &efds))
            ev |= PEER_POLL_ERROR;
        if (ev == 0)
            continue;
        pReady[cReady].s = pWant[i].s;
        pReady[cReady].dwEvents = ev;
        cReady++;
    }
    *pcReady = cReady;
    return S_OK;
}

static ULONGLONG net_tick_count(PVOID pvContext)
{
    (void)pvContext;
    return GetTickCount64();
}

static ULONGLONG net_utc_now(PVOID pvContext)
{
    FILETIME ft;
    (void)pvContext;

    GetSystemTimeAsFileTime(&ft);
    return ((ULONGLONG)ft.dwHighDateTime << 32) | ft.dwLowDateTime;
}

static HRESULT net_random(PVOID pvContext, void *pv, ULONG cb)
{
    NTSTATUS st;
    (void)pvContext;

    if (pv == NULL && cb > 0)
        return E_INVALIDARG;
    st = BCryptGenRandom(NULL, (PUCHAR)pv, cb, BCRYPT_USE_SYSTEM_PREFERRED_RNG);
    return BCRYPT_SUCCESS(st) ? S_OK : E_FAIL;
}

/* ------------------------------------------------------------------------- */

static const PEER_NET_SHIM g_win32Shim = {
    sizeof(PEER_NET_SHIM),
    NULL,
    net_startup,
    net_cleanup,
    net_listen,
    net_accept,
    net_connect,
    net_connect_result,
    net_send,
    net_recv,
    net_local_address,
    net_shutdown_send,
    net_close,
    net_wait,
    net_tick_count,
    net_utc_now,
    net_random,
    net_sendv,
    net_connect_from
};

const PEER_NET_SHIM *PeerGraphGetPlatformNetShim(void)
{
    return &g_win32Shim;
}
