/*
 * net_posix.c - the socket shim (PEER_NET_SHIM) for Linux and other POSIX
 * systems.  The only file of the library that calls the operating system's
 * sockets, clocks and random source.
 *
 * Design:
 *  - Every socket is non-blocking and close-on-exec (fcntl), and never raises
 *    SIGPIPE (MSG_NOSIGNAL, or SO_NOSIGPIPE where that is the mechanism).
 *  - Addresses cross the shim as sockaddr_in6 only.  Listeners are AF_INET6
 *    (dual-stack when bound to ::); an IPv4 peer is ::ffff:a.b.c.d.  A connect
 *    to a v4-mapped address goes out on an AF_INET socket, so it works even
 *    where dual-stack sockets are disabled.
 *  - Waiting uses poll(), never select(): fd_set breaks for fd >= FD_SETSIZE.
 *  - errno becomes an HRESULT in one place, hr_from_errno().
 *  - No state: the table is const and pvContext is unused.
 */
#if defined(__linux__) && !defined(_GNU_SOURCE)
#define _GNU_SOURCE /* accept4 */
#endif
#include "p2pgraph.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/uio.h>

/* getrandom(): Linux (glibc >= 2.25, musl).  Build with -DNET_NO_GETRANDOM
 * to use /dev/urandom only. */
#if !defined(NET_NO_GETRANDOM) && defined(__linux__) && defined(__has_include)
#  if __has_include(<sys/random.h>)
#    include <sys/random.h>
#    define NET_HAVE_GETRANDOM 1
#  endif
#endif

#ifndef MSG_NOSIGNAL
#  define MSG_NOSIGNAL 0 /* BSD/macOS: SO_NOSIGPIPE is set on each socket */
#endif

#define NET_LISTEN_BACKLOG 4096 /* many nodes may share one port: bursts of connects must not overflow (the kernel caps it at somaxconn) */
#define NET_STACK_POLLFDS  64

/* ------------------------------------------------------------------------- */
/* Helpers                                                                    */
/* ------------------------------------------------------------------------- */

/*
 * The one place errno becomes an HRESULT.  fConnect: the connect contract
 * allows only refused, timeout and "failed".
 */
static HRESULT hr_from_errno(int err, int fConnect)
{
    switch (err) {
    case ECONNREFUSED: return PEER_E_TCP_CONNECTION_REFUSED;
    case ETIMEDOUT:    return PEER_E_TIMEOUT;
    default:           break;
    }
    if (fConnect)
        return PEER_E_CONNECTION_FAILED;
    switch (err) {
    case EADDRINUSE:   return PEER_E_ALREADY_LISTENING;
    case EAFNOSUPPORT: return PEER_E_IPV6_NOT_INSTALLED;
    case EADDRNOTAVAIL:
    case EINVAL:       return E_INVALIDARG;
    case EACCES:
    case EPERM:        return E_ACCESSDENIED;
    case ENOMEM:
    case ENOBUFS:
    case EMFILE:
    case ENFILE:       return E_OUTOFMEMORY;
    default:           return E_FAIL;
    }
}

/* Non-blocking, close-on-exec, no SIGPIPE.  0 or an errno value. */
/* Where the kernel can set the flags at creation (Linux: SOCK_NONBLOCK,
 * SOCK_CLOEXEC, accept4), prepare_socket has nothing left to do but
 * SO_NOSIGPIPE; elsewhere it uses fcntl. */
#if defined(SOCK_NONBLOCK) && defined(SOCK_CLOEXEC) && defined(__linux__)
#define NET_SOCK_FLAGS (SOCK_NONBLOCK | SOCK_CLOEXEC)
#define NET_HAVE_ACCEPT4 1
#else
#define NET_SOCK_FLAGS 0
#endif

static int prepare_socket(int fd)
{
    int fl;
    if (NET_SOCK_FLAGS) return 0;
    fl = fcntl(fd, F_GETFL, 0);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return errno;
    fl = fcntl(fd, F_GETFD, 0);
    if (fl < 0 || fcntl(fd, F_SETFD, fl | FD_CLOEXEC) < 0)
        return errno;
#ifdef SO_NOSIGPIPE
    {
        int one = 1;
        if (setsockopt(fd, SOL_SOCKET, SO_NOSIGPIPE, &one, sizeof one) < 0)
            return errno;
    }
#endif
    return 0;
}

/* Best effort: a connection that cannot disable Nagle still works. */
static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int is_v4mapped(const struct in6_addr *a)
{
    static const unsigned char prefix[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };
    return memcmp(a->s6_addr, prefix, sizeof prefix) == 0;
}

/* Any socket address -> sockaddr_in6 (AF_INET as ::ffff:a.b.c.d). */
static HRESULT to_sin6(const struct sockaddr_storage *ss, SOCKADDR_IN6 *out)
{
    if (ss->ss_family == AF_INET6) {
        memcpy(out, ss, sizeof *out);
        return S_OK;
    }
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *v4 = (const struct sockaddr_in *)ss;
        memset(out, 0, sizeof *out);
        out->sin6_family = AF_INET6;
#ifdef SIN6_LEN
        out->sin6_len = sizeof *out;
#endif
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
    (void)pvContext;
    return S_OK;
}

static void net_cleanup(PVOID pvContext)
{
    (void)pvContext;
}

/* SOCKADDR_IN6 -> what the OS takes (v4-mapped as a plain IPv4 address). */
static const struct sockaddr *os_addr(const SOCKADDR_IN6 *p, struct sockaddr_in6 *a6, struct sockaddr_in *a4,
                                      socklen_t *plen)
{
    if (is_v4mapped(&p->sin6_addr)) {
        memset(a4, 0, sizeof *a4);
        a4->sin_family = AF_INET;
        a4->sin_port = p->sin6_port;
        memcpy(&a4->sin_addr, &p->sin6_addr.s6_addr[12], 4);
        *plen = sizeof *a4;
        return (const struct sockaddr *)a4;
    }
    *a6 = *p;
#ifdef SIN6_LEN
    a6->sin6_len = sizeof *a6;
#endif
    *plen = sizeof *a6;
    return (const struct sockaddr *)a6;
}

static int is_loopback6(const SOCKADDR_IN6 *p)
{
    static const unsigned char lo[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    return is_v4mapped(&p->sin6_addr) ? p->sin6_addr.s6_addr[12] == 127 : memcmp(p->sin6_addr.s6_addr, lo, 16) == 0;
}

static HRESULT net_listen(PVOID pvContext, const SOCKADDR_IN6 *pAddr, PEER_SOCKET *ps, SOCKADDR_IN6 *pBound)
{
    struct sockaddr_in6 a;
    struct sockaddr_in a4;
    const struct sockaddr *sa;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss, salen;
    int fd, err, one = 1, v6only;
    (void)pvContext;

    if (pAddr == NULL || ps == NULL || pBound == NULL || pAddr->sin6_family != AF_INET6)
        return E_INVALIDARG;
    sa = os_addr(pAddr, &a, &a4, &salen); /* a v4-mapped address: an IPv4 socket */
    v6only = !IN6_IS_ADDR_UNSPECIFIED(&pAddr->sin6_addr);

    fd = socket(sa->sa_family, SOCK_STREAM | NET_SOCK_FLAGS, IPPROTO_TCP);
    if (fd < 0)
        return hr_from_errno(errno, 0);
    err = prepare_socket(fd);
    if (err == 0 && sa->sa_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &v6only, sizeof v6only) < 0)
        err = errno;
    if (err == 0 && setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0)
        err = errno;
    if (err == 0 && bind(fd, sa, salen) < 0)
        err = errno;
    if (err == 0 && listen(fd, NET_LISTEN_BACKLOG) < 0)
        err = errno;
    if (err == 0 && getsockname(fd, (struct sockaddr *)&ss, &len) < 0)
        err = errno;
    if (err == 0 && FAILED(to_sin6(&ss, pBound)))
        err = EAFNOSUPPORT;
    if (err != 0) {
        close(fd);
        return hr_from_errno(err, 0);
    }
    *ps = fd;
    return S_OK;
}

static HRESULT net_accept(PVOID pvContext, PEER_SOCKET sListen, PEER_SOCKET *ps, SOCKADDR_IN6 *pRemote)
{
    struct sockaddr_storage ss;
    socklen_t len;
    int fd, err;
    (void)pvContext;

    if (ps == NULL || pRemote == NULL)
        return E_INVALIDARG;
    for (;;) {
        len = sizeof ss;
#ifdef NET_HAVE_ACCEPT4
        fd = accept4(sListen, (struct sockaddr *)&ss, &len, NET_SOCK_FLAGS);
#else
        fd = accept(sListen, (struct sockaddr *)&ss, &len);
#endif
        if (fd >= 0)
            break;
        switch (errno) {
        case EAGAIN:
#if EWOULDBLOCK != EAGAIN
        case EWOULDBLOCK:
#endif
            return S_FALSE;
        /* Interrupted, or the pending connection died before we took it
         * (Linux reports such network errors from accept): try the next. */
        case EINTR: case ECONNABORTED: case EPROTO: case ENETDOWN: case ENOPROTOOPT:
        case EHOSTDOWN: case EHOSTUNREACH: case EOPNOTSUPP: case ENETUNREACH:
            continue;
        default:
            return hr_from_errno(errno, 0);
        }
    }
    if ((err = prepare_socket(fd)) != 0 || FAILED(to_sin6(&ss, pRemote))) {
        close(fd);
        return err != 0 ? hr_from_errno(err, 0) : E_FAIL;
    }
    set_nodelay(fd);
    *ps = fd;
    return S_OK;
}

/* pFrom (optional): bind the source address first, when it can reach pTo
 * (same family; a loopback source only towards loopback). */
static HRESULT net_connect_from(PVOID pvContext, const SOCKADDR_IN6 *pFrom, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps)
{
    struct sockaddr_in6 a6, f6;
    struct sockaddr_in a4, f4;
    const struct sockaddr *sa;
    socklen_t salen;
    int fd, err;
    (void)pvContext;

    if (pTo == NULL || ps == NULL || pTo->sin6_family != AF_INET6)
        return E_INVALIDARG;
    sa = os_addr(pTo, &a6, &a4, &salen);
    fd = socket(sa->sa_family, SOCK_STREAM | NET_SOCK_FLAGS, IPPROTO_TCP);
    if (fd < 0)
        return hr_from_errno(errno, 1);
    if ((err = prepare_socket(fd)) != 0) {
        close(fd);
        return hr_from_errno(err, 1);
    }
    set_nodelay(fd);
    if (pFrom != NULL && pFrom->sin6_family == AF_INET6 &&
        is_v4mapped(&pFrom->sin6_addr) == is_v4mapped(&pTo->sin6_addr) && (!is_loopback6(pFrom) || is_loopback6(pTo))) {
        SOCKADDR_IN6 from = *pFrom;
        socklen_t flen;
        const struct sockaddr *fa;
        from.sin6_port = 0;
        fa = os_addr(&from, &f6, &f4, &flen);
        if (bind(fd, fa, flen) != 0) {
            err = errno;
            close(fd);
            return hr_from_errno(err, 1);
        }
    }
    if (connect(fd, sa, salen) == 0) {
        *ps = fd;
        return S_OK;
    }
    err = errno;
    if (err == EINPROGRESS || err == EINTR) { /* EINTR: it goes on in the background */
        *ps = fd;
        return S_FALSE;
    }
    close(fd);
    return hr_from_errno(err, 1);
}

static HRESULT net_connect(PVOID pvContext, const SOCKADDR_IN6 *pTo, PEER_SOCKET *ps)
{
    return net_connect_from(pvContext, NULL, pTo, ps);
}

static HRESULT net_connect_result(PVOID pvContext, PEER_SOCKET s)
{
    struct pollfd p;
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    int n, soerr = 0;
    (void)pvContext;

    /* a peer: connected (one system call on the common path) */
    if (getpeername(s, (struct sockaddr *)&ss, &len) == 0)
        return S_OK;
    if (errno != ENOTCONN && errno != EINVAL) /* (EINVAL: some BSDs, after a failed connect) */
        return hr_from_errno(errno, 1);
    /* no peer: failed (SO_ERROR says why) or still in progress */
    len = sizeof soerr;
    if (getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &len) < 0)
        return hr_from_errno(errno, 1);
    if (soerr != 0)
        return hr_from_errno(soerr, 1);
    /* in progress, unless the socket is already done (an error read
     * earlier): then it failed */
    p.fd = s;
    p.events = POLLOUT;
    p.revents = 0;
    n = poll(&p, 1, 0);
    if (n == 0 || (n < 0 && errno == EINTR))
        return S_FALSE;
    if (n < 0)
        return hr_from_errno(errno, 1);
    return PEER_E_CONNECTION_FAILED;
}

static long net_send(PVOID pvContext, PEER_SOCKET s, const void *pv, ULONG cb)
{
    ssize_t n;
    (void)pvContext;

    if (cb > INT_MAX)
        cb = INT_MAX;
    n = send(s, pv, cb, MSG_NOSIGNAL);
    if (n >= 0)
        return (long)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return PEER_NET_WOULDBLOCK;
    return PEER_NET_FAILED;
}

static long net_sendv(PVOID pvContext, PEER_SOCKET s, const PEER_NET_BUF *pBufs, ULONG cBufs)
{
    struct iovec iov[256];
    struct msghdr mh;
    ssize_t n;
    ULONG i;
    (void)pvContext;

    if (cBufs > 256)
        cBufs = 256; /* a partial write: the caller continues */
    for (i = 0; i < cBufs; i++) {
        iov[i].iov_base = (void *)(uintptr_t)pBufs[i].pv;
        iov[i].iov_len = pBufs[i].cb;
    }
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = iov;
    mh.msg_iovlen = cBufs;
    n = sendmsg(s, &mh, MSG_NOSIGNAL);
    if (n >= 0)
        return n > LONG_MAX ? LONG_MAX : (long)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return PEER_NET_WOULDBLOCK;
    return PEER_NET_FAILED;
}

/* cb must be > 0: 0 means end of stream. */
static long net_recv(PVOID pvContext, PEER_SOCKET s, void *pv, ULONG cb)
{
    ssize_t n;
    (void)pvContext;

    if (cb > INT_MAX)
        cb = INT_MAX;
    n = recv(s, pv, cb, 0);
    if (n >= 0)
        return (long)n;
    if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
        return PEER_NET_WOULDBLOCK;
    return PEER_NET_FAILED;
}

static HRESULT net_local_address(PVOID pvContext, PEER_SOCKET s, SOCKADDR_IN6 *pAddr)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof ss;
    (void)pvContext;

    if (pAddr == NULL)
        return E_INVALIDARG;
    if (getsockname(s, (struct sockaddr *)&ss, &len) < 0)
        return hr_from_errno(errno, 0);
    return to_sin6(&ss, pAddr);
}

static void net_shutdown_send(PVOID pvContext, PEER_SOCKET s)
{
    (void)pvContext;
    (void)shutdown(s, SHUT_WR);
}

static void net_close(PVOID pvContext, PEER_SOCKET s)
{
    (void)pvContext;
    (void)close(s);
}

static HRESULT net_wait(PVOID pvContext, const PEER_POLL_FD *pWant, ULONG cWant,
                        PEER_POLL_FD *pReady, ULONG *pcReady, DWORD dwTimeoutMs)
{
    struct pollfd stackfds[NET_STACK_POLLFDS];
    struct pollfd *fds = stackfds;
    int timeout = dwTimeoutMs > INT_MAX ? INT_MAX : (int)dwTimeoutMs;
    ULONG i, cReady = 0;
    int n;
    HRESULT hr = S_OK;
    (void)pvContext;

    if (pcReady == NULL || (cWant > 0 && (pWant == NULL || pReady == NULL)))
        return E_INVALIDARG;
    *pcReady = 0;
    if (cWant > NET_STACK_POLLFDS) {
        fds = calloc(cWant, sizeof *fds); /* calloc checks the multiplication */
        if (fds == NULL)
            return E_OUTOFMEMORY;
    }
    for (i = 0; i < cWant; i++) {
        /* An entry that wants nothing is skipped (poll ignores fd -1), as on
         * Windows; otherwise a hung-up socket would make poll spin. */
        fds[i].fd = (pWant[i].dwEvents & (PEER_POLL_READ | PEER_POLL_WRITE)) ? pWant[i].s : -1;
        fds[i].events = (short)(((pWant[i].dwEvents & PEER_POLL_READ) ? POLLIN : 0)
                              | ((pWant[i].dwEvents & PEER_POLL_WRITE) ? POLLOUT : 0));
        fds[i].revents = 0;
    }

    n = poll(fds, (nfds_t)cWant, timeout);
    if (n < 0) {
        if (errno != EINTR) /* EINTR: a signal; report nothing ready */
            hr = hr_from_errno(errno, 0);
    } else {
        for (i = 0; i < cWant && n > 0; i++) {
            DWORD ev = 0;
            short r = fds[i].revents;
            if (r == 0)
                continue;
            n--;
            if (r & POLLIN)
                ev |= PEER_POLL_READ;
            if (r & POLLOUT)
                ev |= PEER_POLL_WRITE;
            if (r & (POLLERR | POLLHUP | POLLNVAL))
                ev |= PEER_POLL_ERROR;
            if (r & POLLHUP) /* the end of stream is still to be read */
                ev |= PEER_POLL_READ;
            pReady[cReady].s = pWant[i].s;
            pReady[cReady].dwEvents = ev;
            cReady++;
        }
        *pcReady = cReady;
    }
    if (fds != stackfds)
        free(fds);
    return hr;
}

static ULONGLONG net_tick_count(PVOID pvContext)
{
    struct timespec ts;
    (void)pvContext;

    if (clock_gettime(CLOCK_MONOTONIC, &ts) != 0)
        return 0;
    return (ULONGLONG)ts.tv_sec * 1000u + (ULONGLONG)ts.tv_nsec / 1000000u;
}

static ULONGLONG net_utc_now(PVOID pvContext)
{
    /* 100-ns intervals from 1601-01-01 to 1970-01-01. */
    const ULONGLONG ullUnixEpoch = 116444736000000000ull;
    struct timespec ts;
    (void)pvContext;

    if (clock_gettime(CLOCK_REALTIME, &ts) != 0)
        return 0;
    return ullUnixEpoch + (ULONGLONG)ts.tv_sec * 10000000u + (ULONGLONG)ts.tv_nsec / 100u;
}

static HRESULT random_from_urandom(unsigned char *p, size_t cb)
{
    int fd;

    do {
        fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC);
    } while (fd < 0 && errno == EINTR);
    if (fd < 0)
        return E_FAIL;
    while (cb > 0) {
        ssize_t n = read(fd, p, cb);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            close(fd);
            return E_FAIL;
        }
        p += n;
        cb -= (size_t)n;
    }
    close(fd);
    return S_OK;
}

static HRESULT net_random(PVOID pvContext, void *pv, ULONG cb)
{
    unsigned char *p = pv;
    size_t left = cb;
    (void)pvContext;

    if (pv == NULL && cb > 0)
        return E_INVALIDARG;
#ifdef NET_HAVE_GETRANDOM
    while (left > 0) {
        ssize_t n = getrandom(p, left, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && errno == ENOSYS) /* kernel older than 3.17 */
            return random_from_urandom(p, left);
        if (n <= 0)
            return E_FAIL;
        p += n;
        left -= (size_t)n;
    }
    return S_OK;
#else
    return random_from_urandom(p, left);
#endif
}

/* ------------------------------------------------------------------------- */

static const PEER_NET_SHIM g_posixShim = {
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
    return &g_posixShim;
}
