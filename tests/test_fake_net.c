/*
 * test_fake_net.c - exercises the in-memory fake network through its shim
 * table, the way the library would use it, plus its test-side controls.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "fake_net.h"

static const PEER_NET_SHIM *N;

/* The address by pointer (rotating storage: valid for a few calls). */
static const SOCKADDR_IN6 *P(SOCKADDR_IN6 a)
{
    static SOCKADDR_IN6 slots[8];
    static unsigned next;
    SOCKADDR_IN6 *p = &slots[next++ % 8];
    *p = a;
    return p;
}

static int setup(void **state)
{
    (void)state;
    fake_net_reset();
    N = fake_net_shim();
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    fake_net_reset();
    return 0;
}

/* Listens through the shim; returns the socket and the bound address. */
static PEER_SOCKET lib_listen(SOCKADDR_IN6 addr, SOCKADDR_IN6 *pBound)
{
    PEER_SOCKET s = PEER_INVALID_SOCKET;
    SOCKADDR_IN6 bound;
    assert_int_equal(N->pfnListen(N->pvContext, &addr, &s, &bound), S_OK);
    assert_true(s != PEER_INVALID_SOCKET);
    if (pBound != NULL)
        *pBound = bound;
    return s;
}

/* Connects through the shim and completes the connect. */
static PEER_SOCKET lib_connect(SOCKADDR_IN6 to)
{
    PEER_SOCKET s = PEER_INVALID_SOCKET;
    assert_int_equal(N->pfnConnect(N->pvContext, &to, &s), S_FALSE);
    assert_int_equal(N->pfnConnectResult(N->pvContext, s), S_OK);
    return s;
}

static PEER_SOCKET lib_accept(PEER_SOCKET l, SOCKADDR_IN6 *pRemote)
{
    PEER_SOCKET s = PEER_INVALID_SOCKET;
    SOCKADDR_IN6 remote;
    assert_int_equal(N->pfnAccept(N->pvContext, l, &s, &remote), S_OK);
    if (pRemote != NULL)
        *pRemote = remote;
    return s;
}

/* pfnWait on one socket; returns the reported events (0 = not ready). */
static DWORD wait_one(PEER_SOCKET s, DWORD want)
{
    PEER_POLL_FD w, r;
    ULONG c = 99;
    w.s = s;
    w.dwEvents = want;
    memset(&r, 0, sizeof(r));
    assert_int_equal(N->pfnWait(N->pvContext, &w, 1, &r, &c, 1000), S_OK);
    if (c == 0)
        return 0;
    assert_int_equal(c, 1);
    assert_true(r.s == s);
    return r.dwEvents;
}

static void test_table(void **state)
{
    (void)state;
    assert_non_null(N);
    assert_int_equal(N->dwSize, sizeof(PEER_NET_SHIM));
    assert_non_null(N->pfnStartup);
    assert_non_null(N->pfnCleanup);
    assert_non_null(N->pfnListen);
    assert_non_null(N->pfnAccept);
    assert_non_null(N->pfnConnect);
    assert_non_null(N->pfnConnectResult);
    assert_non_null(N->pfnSend);
    assert_non_null(N->pfnRecv);
    assert_non_null(N->pfnLocalAddress);
    assert_non_null(N->pfnShutdownSend);
    assert_non_null(N->pfnClose);
    assert_non_null(N->pfnWait);
    assert_non_null(N->pfnTickCount);
    assert_non_null(N->pfnUtcNow);
    assert_non_null(N->pfnRandom);
    assert_int_equal(N->pfnStartup(N->pvContext), S_OK);
    N->pfnCleanup(N->pvContext);
}

static void test_connect_accept_exchange(void **state)
{
    SOCKADDR_IN6 bound, remote, local, expect;
    PEER_SOCKET l, c, a, a2;
    char buf[64];
    long n;
    (void)state;

    l = lib_listen(fake_net_addr_any(0), &bound);
    assert_int_equal(l, 1000);
    assert_int_equal(fake_net_port(&bound), 40000);
    expect = fake_net_addr_any(40000);
    assert_true(fake_net_addr_equal(&bound, &expect));
    assert_int_equal(N->pfnLocalAddress(N->pvContext, l, &local), S_OK);
    assert_true(fake_net_addr_equal(&local, &bound));

    /* nothing pending yet */
    assert_int_equal(N->pfnAccept(N->pvContext, l, &a, &remote), S_FALSE);
    assert_int_equal(wait_one(l, PEER_POLL_READ), 0);

    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr_loopback6(40000)), &c), S_FALSE);
    /* in progress: writable (outcome known), I/O would block */
    assert_int_equal(wait_one(c, PEER_POLL_READ | PEER_POLL_WRITE), PEER_POLL_WRITE);
    assert_int_equal(N->pfnSend(N->pvContext, c, "x", 1), PEER_NET_WOULDBLOCK);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), PEER_NET_WOULDBLOCK);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), S_OK);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), S_OK);

    assert_int_equal(wait_one(l, PEER_POLL_READ), PEER_POLL_READ);
    a = lib_accept(l, &remote);
    assert_int_equal(N->pfnLocalAddress(N->pvContext, c, &local), S_OK);
    expect = fake_net_addr_loopback6(50000);
    assert_true(fake_net_addr_equal(&local, &expect));
    assert_true(fake_net_addr_equal(&remote, &local));
    assert_int_equal(N->pfnLocalAddress(N->pvContext, a, &local), S_OK);
    expect = fake_net_addr_loopback6(40000);
    assert_true(fake_net_addr_equal(&local, &expect));
    assert_int_equal(N->pfnAccept(N->pvContext, l, &a2, NULL), S_FALSE);
    assert_int_equal(N->pfnConnectResult(N->pvContext, a), S_OK);

    /* client -> server */
    assert_int_equal(wait_one(a, PEER_POLL_READ), 0);
    assert_int_equal(N->pfnSend(N->pvContext, c, "hello", 5), 5);
    assert_int_equal(wait_one(a, PEER_POLL_READ | PEER_POLL_WRITE), PEER_POLL_READ | PEER_POLL_WRITE);
    memset(buf, 0, sizeof(buf));
    n = N->pfnRecv(N->pvContext, a, buf, sizeof(buf));
    assert_int_equal(n, 5);
    assert_memory_equal(buf, "hello", 5);
    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, sizeof(buf)), PEER_NET_WOULDBLOCK);

    /* server -> client, read in two parts */
    assert_int_equal(N->pfnSend(N->pvContext, a, "world!", 6), 6);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, 4), 4);
    assert_memory_equal(buf, "worl", 4);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 2);
    assert_memory_equal(buf, "d!", 2);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), PEER_NET_WOULDBLOCK);

    assert_int_equal(fake_net_open_sockets(), 3);
    N->pfnClose(N->pvContext, a);
    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, l);
    assert_int_equal(fake_net_open_sockets(), 0);
    assert_false(fake_net_is_open(l));
    assert_false(fake_net_is_open(c));
    assert_false(fake_net_is_open(a));
}

static void test_v4mapped_and_specific_bind(void **state)
{
    SOCKADDR_IN6 remote, expect, bound;
    PEER_SOCKET l, l2, c, a;
    (void)state;

    /* [::] listener takes v4-mapped connects (dual stack) */
    l = lib_listen(fake_net_addr_any(7000), NULL);
    c = lib_connect(fake_net_addr_v4mapped(192, 0, 2, 7, 7000));
    a = lib_accept(l, &remote);
    expect = fake_net_addr_v4mapped(127, 0, 0, 1, 50000);
    assert_true(fake_net_addr_equal(&remote, &expect));
    assert_int_equal(N->pfnLocalAddress(N->pvContext, a, &bound), S_OK);
    expect = fake_net_addr_v4mapped(192, 0, 2, 7, 7000);
    assert_true(fake_net_addr_equal(&bound, &expect));
    N->pfnClose(N->pvContext, a);
    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, l);

    /* a listener on [::1] does not take connects to another address */
    l2 = lib_listen(fake_net_addr6("::1", 7001), &bound);
    expect = fake_net_addr_loopback6(7001);
    assert_true(fake_net_addr_equal(&bound, &expect));
    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr6("fe80::1", 7001)), &c), S_FALSE);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), PEER_E_TCP_CONNECTION_REFUSED);
    N->pfnClose(N->pvContext, c);
    c = lib_connect(fake_net_addr_loopback6(7001));
    a = lib_accept(l2, NULL);
    assert_true(a != c);
    N->pfnClose(N->pvContext, a);
    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, l2);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_max_io_partial(void **state)
{
    PEER_SOCKET l, c, a;
    const char msg[] = "abcdef";
    char got[16];
    size_t sent = 0, rcvd = 0;
    int calls = 0;
    (void)state;

    l = lib_listen(fake_net_addr_any(0), NULL);
    c = lib_connect(fake_net_addr_loopback6(40000));
    a = lib_accept(l, NULL);
    fake_net_set_max_io(1);

    while (sent < 6) {
        long n = N->pfnSend(N->pvContext, c, msg + sent, (ULONG)(6 - sent));
        assert_int_equal(n, 1);
        sent += (size_t)n;
        calls++;
    }
    assert_int_equal(calls, 6);
    calls = 0;
    while (rcvd < 6) {
        long n = N->pfnRecv(N->pvContext, a, got + rcvd, (ULONG)(sizeof(got) - rcvd));
        assert_int_equal(n, 1);
        rcvd += (size_t)n;
        calls++;
    }
    assert_int_equal(calls, 6);
    assert_memory_equal(got, msg, 6);
    assert_int_equal(N->pfnRecv(N->pvContext, a, got, sizeof(got)), PEER_NET_WOULDBLOCK);

    fake_net_set_max_io(4);
    assert_int_equal(N->pfnSend(N->pvContext, a, msg, 6), 4);
    assert_int_equal(N->pfnSend(N->pvContext, a, msg + 4, 2), 2);
    assert_int_equal(N->pfnRecv(N->pvContext, c, got, sizeof(got)), 4);
    assert_int_equal(N->pfnRecv(N->pvContext, c, got + 4, sizeof(got)), 2);
    assert_memory_equal(got, msg, 6);

    fake_net_set_max_io(0);
    assert_int_equal(N->pfnSend(N->pvContext, a, msg, 6), 6);
    assert_int_equal(N->pfnRecv(N->pvContext, c, got, sizeof(got)), 6);
}

static void test_send_capacity(void **state)
{
    PEER_SOCKET l, c, a;
    char buf[16];
    (void)state;

    l = lib_listen(fake_net_addr_any(0), NULL);
    c = lib_connect(fake_net_addr_loopback6(40000));
    a = lib_accept(l, NULL);
    fake_net_set_send_capacity(4);

    assert_int_equal(wait_one(c, PEER_POLL_WRITE), PEER_POLL_WRITE);
    assert_int_equal(N->pfnSend(N->pvContext, c, "0123456789", 10), 4);
    assert_int_equal(N->pfnSend(N->pvContext, c, "456789", 6), PEER_NET_WOULDBLOCK);
    assert_int_equal(wait_one(c, PEER_POLL_WRITE), 0);
    /* the other direction is independent */
    assert_int_equal(wait_one(a, PEER_POLL_WRITE | PEER_POLL_READ), PEER_POLL_WRITE | PEER_POLL_READ);

    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, 2), 2);
    assert_memory_equal(buf, "01", 2);
    assert_int_equal(wait_one(c, PEER_POLL_WRITE), PEER_POLL_WRITE);
    assert_int_equal(N->pfnSend(N->pvContext, c, "456789", 6), 2);
    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "2345", 4);

    /* raw writes ignore the capacity */
    fake_net_set_send_capacity(1);
    {
        PEER_SOCKET r = fake_net_raw_connect(P(fake_net_addr_loopback6(40000)));
        PEER_SOCKET ra = lib_accept(l, NULL);
        assert_true(r != PEER_INVALID_SOCKET);
        fake_net_raw_write(r, "abcdefgh", 8);
        assert_int_equal(N->pfnRecv(N->pvContext, ra, buf, sizeof(buf)), 8);
        assert_int_equal(N->pfnSend(N->pvContext, ra, "xy", 2), 1);
        assert_int_equal(N->pfnSend(N->pvContext, ra, "y", 1), PEER_NET_WOULDBLOCK);
        assert_int_equal(fake_net_raw_read(r, buf, sizeof(buf)), 1);
        assert_int_equal(N->pfnSend(N->pvContext, ra, "y", 1), 1);
        fake_net_raw_close(r);
        N->pfnClose(N->pvContext, ra);
    }
}

static void test_close_and_shutdown_eof(void **state)
{
    PEER_SOCKET l, c, a;
    char buf[16];
    (void)state;

    l = lib_listen(fake_net_addr_any(0), NULL);
    c = lib_connect(fake_net_addr_loopback6(40000));
    a = lib_accept(l, NULL);

    /* half close: the peer reads the data, then EOF; it can still send */
    assert_int_equal(N->pfnSend(N->pvContext, c, "bye", 3), 3);
    N->pfnShutdownSend(N->pvContext, c);
    N->pfnShutdownSend(N->pvContext, c); /* twice is harmless */
    assert_int_equal(N->pfnSend(N->pvContext, c, "x", 1), PEER_NET_FAILED);
    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, sizeof(buf)), 3);
    assert_int_equal(wait_one(a, PEER_POLL_READ), PEER_POLL_READ);
    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, sizeof(buf)), 0);
    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, sizeof(buf)), 0);
    assert_int_equal(N->pfnSend(N->pvContext, a, "ok", 2), 2);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 2);
    assert_memory_equal(buf, "ok", 2);

    /* close: the peer sees EOF after pending data, sends fail */
    assert_int_equal(N->pfnSend(N->pvContext, a, "last", 4), 4);
    N->pfnClose(N->pvContext, a);
    assert_false(fake_net_is_open(a));
    assert_int_equal(wait_one(c, PEER_POLL_READ), PEER_POLL_READ);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 4);
    assert_memory_equal(buf, "last", 4);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 0);
    N->pfnShutdownSend(N->pvContext, c);
    assert_int_equal(N->pfnSend(N->pvContext, c, "z", 1), PEER_NET_FAILED);

    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, l);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_reset(void **state)
{
    PEER_SOCKET r, c;
    char buf[16];
    (void)state;

    r = fake_net_raw_listen(P(fake_net_addr_loopback6(9000)));
    assert_true(r != PEER_INVALID_SOCKET);
    c = lib_connect(fake_net_addr_loopback6(9000));
    {
        PEER_SOCKET ra = fake_net_raw_accept(r);
        assert_true(ra != PEER_INVALID_SOCKET);
        fake_net_raw_write(ra, "data", 4);
        fake_net_raw_reset(ra);
        assert_false(fake_net_is_open(ra));
    }
    /* pending bytes are discarded by the reset */
    assert_int_equal(wait_one(c, PEER_POLL_READ), PEER_POLL_READ | PEER_POLL_ERROR);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), PEER_NET_FAILED);
    assert_int_equal(N->pfnSend(N->pvContext, c, "x", 1), PEER_NET_FAILED);
    N->pfnClose(N->pvContext, c);
    fake_net_raw_close(r);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_refused(void **state)
{
    PEER_SOCKET c;
    char buf[4];
    (void)state;

    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr_loopback6(1234)), &c), S_FALSE);
    assert_true(fake_net_is_open(c));
    assert_int_equal(wait_one(c, PEER_POLL_WRITE), PEER_POLL_WRITE | PEER_POLL_ERROR);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), PEER_E_TCP_CONNECTION_REFUSED);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), PEER_E_TCP_CONNECTION_REFUSED);
    assert_int_equal(N->pfnSend(N->pvContext, c, "x", 1), PEER_NET_FAILED);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), PEER_NET_FAILED);
    assert_int_equal(fake_net_open_sockets(), 1);
    N->pfnClose(N->pvContext, c);
    assert_int_equal(fake_net_open_sockets(), 0);

    /* a listener closed later: refused again */
    {
        PEER_SOCKET l = lib_listen(fake_net_addr_any(1234), NULL);
        N->pfnClose(N->pvContext, l);
    }
    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr_loopback6(1234)), &c), S_FALSE);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), PEER_E_TCP_CONNECTION_REFUSED);
    N->pfnClose(N->pvContext, c);
}

static void test_blackhole(void **state)
{
    PEER_SOCKET l, c, c2, c3, a;
    char buf[4];
    (void)state;

    l = lib_listen(fake_net_addr_any(8000), NULL);
    fake_net_blackhole(P(fake_net_addr_loopback6(8000)));
    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr_loopback6(8000)), &c), S_FALSE);
    fake_net_advance(120000);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), S_FALSE);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c), S_FALSE);
    assert_int_equal(wait_one(c, PEER_POLL_READ | PEER_POLL_WRITE), 0);
    assert_int_equal(N->pfnSend(N->pvContext, c, "x", 1), PEER_NET_WOULDBLOCK);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), PEER_NET_WOULDBLOCK);
    /* nothing reached the listener */
    assert_int_equal(N->pfnAccept(N->pvContext, l, &a, NULL), S_FALSE);

    /* another address with the same port still works */
    c2 = lib_connect(fake_net_addr_v4mapped(127, 0, 0, 1, 8000));
    a = lib_accept(l, NULL);

    /* port 0 blackholes every port of the address */
    fake_net_blackhole(P(fake_net_addr6("2001:db8::5", 0)));
    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr6("2001:db8::5", 8000)), &c3), S_FALSE);
    assert_int_equal(N->pfnConnectResult(N->pvContext, c3), S_FALSE);

    assert_int_equal(fake_net_open_sockets(), 5);
    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, c2);
    N->pfnClose(N->pvContext, c3);
    N->pfnClose(N->pvContext, a);
    N->pfnClose(N->pvContext, l);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_duplicate_bind(void **state)
{
    PEER_SOCKET l, l2 = PEER_INVALID_SOCKET, r;
    SOCKADDR_IN6 bound;
    (void)state;

    l = lib_listen(fake_net_addr_any(6000), NULL);
    assert_int_equal(N->pfnListen(N->pvContext, P(fake_net_addr_any(6000)), &l2, &bound),
                     PEER_E_ALREADY_LISTENING);
    assert_int_equal(N->pfnListen(N->pvContext, P(fake_net_addr_loopback6(6000)), &l2, &bound),
                     PEER_E_ALREADY_LISTENING);
    assert_true(l2 == PEER_INVALID_SOCKET);
    assert_true(fake_net_raw_listen(P(fake_net_addr_loopback6(6000))) == PEER_INVALID_SOCKET);
    assert_int_equal(fake_net_open_sockets(), 1);

    /* ephemeral ports skip taken ones */
    r = fake_net_raw_listen(P(fake_net_addr_any(40000)));
    assert_true(r != PEER_INVALID_SOCKET);
    l2 = lib_listen(fake_net_addr_any(0), &bound);
    assert_int_equal(fake_net_port(&bound), 40001);
    {
        PEER_SOCKET l3 = lib_listen(fake_net_addr_loopback6(0), &bound);
        assert_int_equal(fake_net_port(&bound), 40002);
        N->pfnClose(N->pvContext, l3);
    }

    /* a closed listener frees its port */
    N->pfnClose(N->pvContext, l);
    l = lib_listen(fake_net_addr_any(6000), NULL);
    N->pfnClose(N->pvContext, l);
    N->pfnClose(N->pvContext, l2);
    fake_net_raw_close(r);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_raw_listener(void **state)
{
    PEER_SOCKET r, ra, c;
    SOCKADDR_IN6 addr, expect, local;
    char buf[16];
    (void)state;

    r = fake_net_raw_listen(P(fake_net_addr_any(0)));
    assert_true(r != PEER_INVALID_SOCKET);
    assert_true(fake_net_raw_local_address(r, &addr));
    assert_int_equal(fake_net_port(&addr), 40000);
    assert_true(fake_net_raw_accept(r) == PEER_INVALID_SOCKET);
    assert_int_equal(fake_net_open_sockets(), 0); /* raw endpoints do not count */

    c = lib_connect(fake_net_addr_loopback6(40000));
    assert_int_equal(fake_net_open_sockets(), 1);
    /* the library may send before the test accepts */
    assert_int_equal(N->pfnSend(N->pvContext, c, "early", 5), 5);
    ra = fake_net_raw_accept(r);
    assert_true(ra != PEER_INVALID_SOCKET);
    assert_true(fake_net_raw_accept(r) == PEER_INVALID_SOCKET);
    assert_true(fake_net_raw_remote_address(ra, &addr));
    assert_int_equal(N->pfnLocalAddress(N->pvContext, c, &local), S_OK);
    assert_true(fake_net_addr_equal(&addr, &local));
    assert_true(fake_net_raw_local_address(ra, &addr));
    expect = fake_net_addr_loopback6(40000);
    assert_true(fake_net_addr_equal(&addr, &expect));

    assert_int_equal(fake_net_raw_pending(ra), 5);
    assert_int_equal(fake_net_raw_read(ra, buf, 2), 2);
    assert_memory_equal(buf, "ea", 2);
    assert_int_equal(fake_net_raw_pending(ra), 3);
    assert_int_equal(fake_net_raw_read(ra, buf, sizeof(buf)), 3);
    assert_memory_equal(buf, "rly", 3);
    assert_int_equal(fake_net_raw_read(ra, buf, sizeof(buf)), 0);
    assert_int_equal(fake_net_raw_eof(ra), 0);

    /* byte-by-byte delivery from the test */
    fake_net_raw_write(ra, "h", 1);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 1);
    fake_net_raw_write(ra, "i", 1);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 1);
    assert_int_equal(buf[0], 'i');

    /* the library shuts down its sending side */
    N->pfnShutdownSend(N->pvContext, c);
    assert_int_equal(fake_net_raw_eof(ra), 1);

    /* raw half close, then raw close */
    fake_net_raw_write(ra, "tail", 4);
    fake_net_raw_shutdown(ra);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 4);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 0);
    fake_net_raw_close(ra);
    assert_false(fake_net_is_open(ra));
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 0);

    N->pfnClose(N->pvContext, c);
    fake_net_raw_close(r);
    assert_false(fake_net_is_open(r));
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_raw_connect(void **state)
{
    PEER_SOCKET l, r, a;
    SOCKADDR_IN6 remote, addr;
    char buf[16];
    (void)state;

    assert_true(fake_net_raw_connect(P(fake_net_addr_loopback6(5555))) == PEER_INVALID_SOCKET);
    assert_true(fake_net_raw_connect(NULL) == PEER_INVALID_SOCKET);

    l = lib_listen(fake_net_addr_any(5555), NULL);
    r = fake_net_raw_connect(P(fake_net_addr_v4mapped(10, 1, 2, 3, 5555)));
    assert_true(r != PEER_INVALID_SOCKET);
    /* completes at once: the test may write before the library accepts */
    fake_net_raw_write(r, "CONNECT", 7);
    assert_int_equal(wait_one(l, PEER_POLL_READ), PEER_POLL_READ);
    a = lib_accept(l, &remote);
    assert_true(fake_net_raw_local_address(r, &addr));
    assert_true(fake_net_addr_equal(&remote, &addr));
    assert_int_equal(N->pfnRecv(N->pvContext, a, buf, sizeof(buf)), 7);
    assert_memory_equal(buf, "CONNECT", 7);
    assert_int_equal(N->pfnSend(N->pvContext, a, "WELCOME", 7), 7);
    assert_int_equal(fake_net_raw_read(r, buf, sizeof(buf)), 7);
    assert_memory_equal(buf, "WELCOME", 7);

    /* the library closes: the raw side sees EOF, its writes are dropped */
    N->pfnClose(N->pvContext, a);
    assert_int_equal(fake_net_raw_eof(r), 1);
    fake_net_raw_write(r, "lost", 4);

    /* a library listener closed with a connection in its backlog resets it */
    {
        PEER_SOCKET r2 = fake_net_raw_connect(P(fake_net_addr_loopback6(5555)));
        assert_true(r2 != PEER_INVALID_SOCKET);
        assert_int_equal(fake_net_open_sockets(), 1); /* backlog entries are not the library's yet */
        N->pfnClose(N->pvContext, l);
        assert_int_equal(fake_net_raw_eof(r2), 2);
        fake_net_raw_close(r2);
    }
    fake_net_raw_close(r);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_listener_close_resets_pending_lib_client(void **state)
{
    PEER_SOCKET r, c;
    char buf[4];
    (void)state;

    r = fake_net_raw_listen(P(fake_net_addr_loopback6(4444)));
    c = lib_connect(fake_net_addr_loopback6(4444));
    fake_net_raw_close(r);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), PEER_NET_FAILED);
    N->pfnClose(N->pvContext, c);
}

static void test_invalid_sockets(void **state)
{
    PEER_SOCKET l, c, a, r, s;
    PEER_SOCKET bad[5];
    SOCKADDR_IN6 addr;
    PEER_POLL_FD w, rd;
    ULONG cReady = 7;
    char buf[4];
    size_t i;
    (void)state;

    l = lib_listen(fake_net_addr_any(0), NULL);
    c = lib_connect(fake_net_addr_loopback6(40000));
    a = lib_accept(l, NULL);
    N->pfnClose(N->pvContext, a);
    r = fake_net_raw_listen(P(fake_net_addr_any(3000)));

    bad[0] = a;                   /* closed */
    bad[1] = (PEER_SOCKET)5;      /* below the range */
    bad[2] = (PEER_SOCKET)99999;  /* never handed out */
    bad[3] = PEER_INVALID_SOCKET;
    bad[4] = r;                   /* owned by the test */
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(N->pfnAccept(N->pvContext, bad[i], &s, &addr), E_INVALIDARG);
        assert_int_equal(N->pfnConnectResult(N->pvContext, bad[i]), E_INVALIDARG);
        assert_int_equal(N->pfnSend(N->pvContext, bad[i], "x", 1), PEER_NET_FAILED);
        assert_int_equal(N->pfnRecv(N->pvContext, bad[i], buf, sizeof(buf)), PEER_NET_FAILED);
        assert_int_equal(N->pfnLocalAddress(N->pvContext, bad[i], &addr), E_INVALIDARG);
        N->pfnShutdownSend(N->pvContext, bad[i]);
        N->pfnClose(N->pvContext, bad[i]);
        w.s = bad[i];
        w.dwEvents = PEER_POLL_READ;
        assert_int_equal(N->pfnWait(N->pvContext, &w, 1, &rd, &cReady, 0), E_INVALIDARG);
        assert_int_equal(cReady, 0);
    }
    assert_true(fake_net_is_open(r)); /* the shim's close did not touch it */

    /* raw functions refuse library sockets */
    fake_net_raw_write(c, "x", 1);
    assert_int_equal(fake_net_raw_read(c, buf, sizeof(buf)), 0);
    assert_int_equal(fake_net_raw_pending(c), 0);
    assert_int_equal(fake_net_raw_eof(c), 0);
    fake_net_raw_close(c);
    fake_net_raw_reset(c);
    fake_net_raw_shutdown(c);
    assert_true(fake_net_raw_accept(l) == PEER_INVALID_SOCKET);
    assert_false(fake_net_raw_local_address(c, &addr));
    assert_true(fake_net_is_open(c));
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, sizeof(buf)), 0); /* peer closed: EOF */

    /* wrong kinds and bad arguments */
    assert_int_equal(N->pfnAccept(N->pvContext, c, &s, &addr), E_INVALIDARG);
    assert_int_equal(N->pfnAccept(N->pvContext, l, NULL, &addr), E_INVALIDARG);
    assert_int_equal(N->pfnConnectResult(N->pvContext, l), E_INVALIDARG);
    assert_int_equal(N->pfnSend(N->pvContext, l, "x", 1), PEER_NET_FAILED);
    assert_int_equal(N->pfnRecv(N->pvContext, l, buf, sizeof(buf)), PEER_NET_FAILED);
    assert_int_equal(N->pfnSend(N->pvContext, c, NULL, 1), PEER_NET_FAILED);
    assert_int_equal(N->pfnRecv(N->pvContext, c, buf, 0), PEER_NET_FAILED);
    assert_int_equal(N->pfnLocalAddress(N->pvContext, c, NULL), E_INVALIDARG);
    assert_int_equal(N->pfnListen(N->pvContext, NULL, &s, &addr), E_INVALIDARG);
    assert_int_equal(N->pfnListen(N->pvContext, P(fake_net_addr_any(1)), NULL, &addr),
                     E_INVALIDARG);
    addr = fake_net_addr6("not an address", 80);
    assert_int_equal(N->pfnListen(N->pvContext, &addr, &s, NULL), E_INVALIDARG);
    assert_int_equal(N->pfnConnect(N->pvContext, &addr, &s), E_INVALIDARG);
    assert_int_equal(N->pfnConnect(N->pvContext, NULL, &s), E_INVALIDARG);
    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr_any(1)), NULL), E_INVALIDARG);
    assert_int_equal(N->pfnWait(N->pvContext, NULL, 1, &rd, &cReady, 0), E_INVALIDARG);
    assert_int_equal(N->pfnWait(N->pvContext, NULL, 0, NULL, NULL, 0), E_INVALIDARG);
    assert_int_equal(N->pfnWait(N->pvContext, NULL, 0, NULL, &cReady, 0), S_OK);
    assert_int_equal(cReady, 0);
    assert_int_equal(N->pfnRandom(N->pvContext, NULL, 4), E_INVALIDARG);
    assert_int_equal(N->pfnRandom(N->pvContext, NULL, 0), S_OK);

    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, l);
    fake_net_raw_close(r);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_wait_many(void **state)
{
    PEER_SOCKET l, c1, c2, a1, a2, bh;
    PEER_POLL_FD want[6], ready[6];
    ULONG cReady = 0;
    (void)state;

    l = lib_listen(fake_net_addr_any(0), NULL);
    c1 = lib_connect(fake_net_addr_loopback6(40000));
    c2 = lib_connect(fake_net_addr_loopback6(40000));
    a1 = lib_accept(l, NULL);
    fake_net_blackhole(P(fake_net_addr_loopback6(1)));
    assert_int_equal(N->pfnConnect(N->pvContext, P(fake_net_addr_loopback6(1)), &bh), S_FALSE);
    assert_int_equal(N->pfnSend(N->pvContext, c1, "q", 1), 1);

    want[0].s = l;  want[0].dwEvents = PEER_POLL_READ;  /* c2 pending: ready */
    want[1].s = c1; want[1].dwEvents = PEER_POLL_READ;  /* nothing to read */
    want[2].s = a1; want[2].dwEvents = PEER_POLL_READ;  /* "q" */
    want[3].s = c2; want[3].dwEvents = PEER_POLL_WRITE;
    want[4].s = bh; want[4].dwEvents = PEER_POLL_WRITE; /* never */
    assert_int_equal(N->pfnWait(N->pvContext, want, 5, ready, &cReady, 0xFFFFFFFFu), S_OK);
    assert_int_equal(cReady, 3);
    assert_true(ready[0].s == l);
    assert_int_equal(ready[0].dwEvents, PEER_POLL_READ);
    assert_true(ready[1].s == a1);
    assert_int_equal(ready[1].dwEvents, PEER_POLL_READ);
    assert_true(ready[2].s == c2);
    assert_int_equal(ready[2].dwEvents, PEER_POLL_WRITE);
    /* the clock did not move */
    assert_int_equal(fake_net_now(), 0);

    a2 = lib_accept(l, NULL);
    assert_int_equal(N->pfnWait(N->pvContext, want, 1, ready, &cReady, 0), S_OK);
    assert_int_equal(cReady, 0);

    N->pfnClose(N->pvContext, a2);
    N->pfnClose(N->pvContext, a1);
    N->pfnClose(N->pvContext, c2);
    N->pfnClose(N->pvContext, c1);
    N->pfnClose(N->pvContext, bh);
    N->pfnClose(N->pvContext, l);
    assert_int_equal(fake_net_open_sockets(), 0);
}

static void test_large_transfer(void **state)
{
    enum { TOTAL = 1 << 20, CHUNK = 3000 };
    unsigned char *src = (unsigned char *)malloc(TOTAL);
    unsigned char *dst = (unsigned char *)malloc(TOTAL);
    size_t sent = 0, rcvd = 0, i;
    PEER_SOCKET l, c, a;
    (void)state;

    assert_non_null(src);
    assert_non_null(dst);
    for (i = 0; i < TOTAL; i++)
        src[i] = (unsigned char)(i * 7u + (i >> 9));
    l = lib_listen(fake_net_addr_any(0), NULL);
    c = lib_connect(fake_net_addr_loopback6(40000));
    a = lib_accept(l, NULL);
    fake_net_set_send_capacity(65536);
    while (rcvd < TOTAL) {
        long n;
        while (sent < TOTAL) {
            size_t want = TOTAL - sent < CHUNK ? TOTAL - sent : CHUNK;
            n = N->pfnSend(N->pvContext, c, src + sent, (ULONG)want);
            if (n == PEER_NET_WOULDBLOCK)
                break;
            assert_true(n > 0);
            sent += (size_t)n;
        }
        n = N->pfnRecv(N->pvContext, a, dst + rcvd, 5000);
        assert_true(n > 0);
        rcvd += (size_t)n;
    }
    assert_memory_equal(src, dst, TOTAL);
    N->pfnClose(N->pvContext, c);
    assert_int_equal(N->pfnRecv(N->pvContext, a, dst, 1), 0);
    N->pfnClose(N->pvContext, a);
    N->pfnClose(N->pvContext, l);
    free(src);
    free(dst);
}

static void test_clock_and_random(void **state)
{
    unsigned char r1[37], r2[37], r3[37];
    (void)state;

    assert_int_equal(fake_net_now(), 0);
    assert_int_equal(N->pfnTickCount(N->pvContext), 0);
    assert_true(N->pfnUtcNow(N->pvContext) == 134116992000000000ULL);
    fake_net_set_now(5000);
    fake_net_advance(250);
    assert_int_equal(fake_net_now(), 5250);
    assert_int_equal(N->pfnTickCount(N->pvContext), 5250);
    assert_true(N->pfnUtcNow(N->pvContext) == 134116992000000000ULL + 5250ULL * 10000ULL);

    assert_int_equal(N->pfnRandom(N->pvContext, r1, sizeof(r1)), S_OK);
    fake_net_reset();
    assert_int_equal(fake_net_now(), 0);
    assert_int_equal(N->pfnRandom(N->pvContext, r2, sizeof(r2)), S_OK);
    assert_memory_equal(r1, r2, sizeof(r1));
    fake_net_seed(42);
    assert_int_equal(N->pfnRandom(N->pvContext, r3, sizeof(r3)), S_OK);
    assert_memory_not_equal(r1, r3, sizeof(r1));
    fake_net_seed(42);
    assert_int_equal(N->pfnRandom(N->pvContext, r2, sizeof(r2)), S_OK);
    assert_memory_equal(r2, r3, sizeof(r2));
    /* successive calls differ */
    assert_int_equal(N->pfnRandom(N->pvContext, r2, sizeof(r2)), S_OK);
    assert_memory_not_equal(r2, r3, sizeof(r2));
}

static void expect_addr(const char *text, const unsigned char bytes[16], unsigned long scope)
{
    SOCKADDR_IN6 a = fake_net_addr6(text, 0x1234);
    const unsigned char *p = (const unsigned char *)&a.sin6_port;
    assert_int_equal(a.sin6_family, AF_INET6);
    assert_int_equal(p[0], 0x12);
    assert_int_equal(p[1], 0x34);
    assert_int_equal(fake_net_port(&a), 0x1234);
    assert_memory_equal(a.sin6_addr.s6_addr, bytes, 16);
    assert_int_equal(a.sin6_scope_id, scope);
    assert_int_equal(a.sin6_flowinfo, 0);
}

static void test_addresses(void **state)
{
    static const unsigned char loop[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    static const unsigned char any[16] = { 0 };
    static const unsigned char ll[16] = { 0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1 };
    static const unsigned char v4[16] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 192, 0, 2, 33 };
    static const unsigned char doc[16] = { 0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0xab, 0xcd };
    static const unsigned char head[16] = { 0, 1, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0 };
    static const char *bad[] = { "", ":", ":::", "1::2::3", "12345::", "1:2:3:4:5:6:7:8:9", "1:2:3:4:5:6:7",
                                 "::ffff:1.2.3", "::ffff:1.2.3.256", "1.2.3.4", "::g", "1:", ":1", "fe80::1%",
                                 "fe80::1%x", "::1.2.3.4:5", "1:2:3:4:5:6:7::8:9" };
    SOCKADDR_IN6 a, b;
    size_t i;
    (void)state;

    expect_addr(NULL, loop, 0);
    expect_addr("::1", loop, 0);
    expect_addr("::", any, 0);
    expect_addr("fe80::1", ll, 0);
    expect_addr("FE80::1%3", ll, 3);
    expect_addr("::ffff:192.0.2.33", v4, 0);
    expect_addr("2001:db8::1:0:0:abcd", doc, 0);
    expect_addr("2001:0db8:0000:0000:0001:0000:0000:abcd", doc, 0);
    expect_addr("1:2::", head, 0);
    expect_addr("0:0:0:0:0:0:0:1", loop, 0);
    expect_addr("::ffff:c000:221", v4, 0);
    for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        a = fake_net_addr6(bad[i], 1);
        if (a.sin6_family != 0)
            fail_msg("\"%s\" parsed", bad[i]);
    }

    a = fake_net_addr_loopback6(80);
    assert_memory_equal(a.sin6_addr.s6_addr, loop, 16);
    a = fake_net_addr_any(80);
    assert_memory_equal(a.sin6_addr.s6_addr, any, 16);
    a = fake_net_addr_v4mapped(192, 0, 2, 33, 65535);
    assert_memory_equal(a.sin6_addr.s6_addr, v4, 16);
    assert_int_equal(fake_net_port(&a), 65535);
    b = fake_net_addr6("::ffff:192.0.2.33", 65535);
    assert_true(fake_net_addr_equal(&a, &b));
    b = fake_net_addr6("::ffff:192.0.2.33", 65534);
    assert_false(fake_net_addr_equal(&a, &b));
    assert_false(fake_net_addr_equal(&a, NULL));
    assert_int_equal(fake_net_port(NULL), 0);
}

static void test_reset_frees_everything(void **state)
{
    PEER_SOCKET l, c, r;
    (void)state;

    l = lib_listen(fake_net_addr_any(0), NULL);
    c = lib_connect(fake_net_addr_loopback6(40000));
    (void)c;
    r = fake_net_raw_connect(P(fake_net_addr_loopback6(40000)));
    fake_net_raw_write(r, "pending", 7);
    assert_int_equal(N->pfnSend(N->pvContext, c, "queued", 6), 6);
    fake_net_set_max_io(3);
    fake_net_set_send_capacity(9);
    fake_net_blackhole(P(fake_net_addr_loopback6(40000)));
    fake_net_set_now(77);
    assert_int_equal(fake_net_open_sockets(), 2);

    fake_net_reset();
    assert_int_equal(fake_net_open_sockets(), 0);
    assert_false(fake_net_is_open(l));
    assert_false(fake_net_is_open(r));
    assert_int_equal(fake_net_now(), 0);

    /* numbering, ports and controls start over */
    l = lib_listen(fake_net_addr_any(0), NULL);
    assert_int_equal(l, 1000);
    c = lib_connect(fake_net_addr_loopback6(40000)); /* no blackhole any more */
    assert_int_equal(N->pfnSend(N->pvContext, c, "0123456789", 10), 10); /* no max_io, no capacity */
    N->pfnClose(N->pvContext, c);
    N->pfnClose(N->pvContext, l); /* drops the unaccepted connection */
    assert_int_equal(fake_net_open_sockets(), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_connect_accept_exchange, setup, teardown),
        cmocka_unit_test_setup_teardown(test_v4mapped_and_specific_bind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_max_io_partial, setup, teardown),
        cmocka_unit_test_setup_teardown(test_send_capacity, setup, teardown),
        cmocka_unit_test_setup_teardown(test_close_and_shutdown_eof, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset, setup, teardown),
        cmocka_unit_test_setup_teardown(test_refused, setup, teardown),
        cmocka_unit_test_setup_teardown(test_blackhole, setup, teardown),
        cmocka_unit_test_setup_teardown(test_duplicate_bind, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_listener, setup, teardown),
        cmocka_unit_test_setup_teardown(test_raw_connect, setup, teardown),
        cmocka_unit_test_setup_teardown(test_listener_close_resets_pending_lib_client, setup, teardown),
        cmocka_unit_test_setup_teardown(test_invalid_sockets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_wait_many, setup, teardown),
        cmocka_unit_test_setup_teardown(test_large_transfer, setup, teardown),
        cmocka_unit_test_setup_teardown(test_clock_and_random, setup, teardown),
        cmocka_unit_test_setup_teardown(test_addresses, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reset_frees_everything, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
