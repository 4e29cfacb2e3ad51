/*
 * fake_net.h - a deterministic in-memory network for unit tests.
 *
 * fake_net_shim() returns a PEER_NET_SHIM whose functions simulate TCP in
 * memory: no OS socket is touched, nothing blocks, nothing sleeps, and the
 * clock and random numbers are synthetic.  All state is global; call
 * fake_net_reset() in test setup and teardown.
 *
 * Model
 *   - Sockets are integers handed out from 1000 upward and never reused until
 *     fake_net_reset().  Closed or unknown sockets make every function fail
 *     (PEER_NET_FAILED, E_INVALIDARG) instead of crashing.
 *   - Two kinds of owner: the library (sockets created through the shim table,
 *     counted by fake_net_open_sockets) and the test ("raw" endpoints created
 *     with fake_net_raw_*).  Shim functions refuse raw sockets and the raw
 *     functions refuse library sockets, so a mix-up shows as an error.
 *   - pfnListen: port 0 takes an ephemeral port (40000 upward).  Any listener
 *     already on the same port makes the bind fail with
 *     PEER_E_ALREADY_LISTENING.  A listener bound to [::] matches every
 *     address with its port (dual stack); otherwise address and port must
 *     match exactly (scope IDs are ignored).
 *   - pfnConnectFrom: pfnConnect with the client's local address taken from
 *     pFrom (port assigned as below).
 *   - pfnConnect: returns S_FALSE (in progress).  If a listener matches, the
 *     connection exists at once (the server side waits in the listener's
 *     backlog) and pfnConnectResult returns S_OK from its next call on; until
 *     then send/recv return PEER_NET_WOULDBLOCK.  If nothing listens,
 *     pfnConnectResult returns PEER_E_TCP_CONNECTION_REFUSED.  A blackholed
 *     address (fake_net_blackhole) stays S_FALSE forever.  The connecting
 *     socket's local address is [::1] (or ::ffff:127.0.0.1 when the target is
 *     v4-mapped) with a distinct port from 50000 upward; the accepted side
 *     reports that as its remote address.
 *   - pfnRecv: reset -> PEER_NET_FAILED (buffered bytes are discarded), else
 *     bytes if any, else 0 after the peer shut down its sending side or
 *     closed, else PEER_NET_WOULDBLOCK.
 *   - pfnSend: PEER_NET_FAILED once the peer closed or was reset, or after our
 *     own pfnShutdownSend; PEER_NET_WOULDBLOCK when the peer's receive buffer
 *     is at the send capacity.
 *   - pfnSendV: the pieces in order, as pfnSend would take them, stopping at
 *     the first short write (max_io limits the whole call).
 *   - pfnClose: the peer reads EOF (orderly).  Closing a listener resets the
 *     clients of connections still waiting in its backlog.
 *   - pfnWait never blocks, never sleeps and never moves the clock.  A wanted
 *     socket is reported with PEER_POLL_READ when it has data, EOF or a reset
 *     (a listener: a non-empty backlog), with PEER_POLL_WRITE when pfnSend
 *     would not return PEER_NET_WOULDBLOCK (a connecting socket: when its
 *     connect has an outcome), and with PEER_POLL_ERROR (whether wanted or
 *     not) when reset or refused.  A closed, unknown or raw socket in the
 *     want list fails the call with E_INVALIDARG.
 *   - Zero-length or NULL-buffer sends/receives return PEER_NET_FAILED.
 *   - pfnRandom: xorshift64* seeded by fake_net_reset (fake_net_seed changes
 *     it).  pfnTickCount: fake_net_now().  pfnUtcNow: 2026-01-01T00:00:00Z
 *     as FILETIME units plus fake_net_now() * 10000.
 *
 * C99; uses only the standard library and p2pgraph.h.
 */
#ifndef FAKE_NET_H
#define FAKE_NET_H

#include <stddef.h>
#include "p2pgraph.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The shim table (dwSize = sizeof(PEER_NET_SHIM), pvContext NULL); pass it to
 * PeerGraphSetNetShim before PeerGraphStartup. */
const PEER_NET_SHIM *fake_net_shim(void);

/* Frees every endpoint and restores the defaults: clock 0, max_io 0,
 * send capacity 0, no blackholes, default random seed, counters (sockets
 * from 1000, listener ports from 40000, client ports from 50000). */
void fake_net_reset(void);

/* ---- clock (what pfnTickCount returns, in milliseconds) ---------------- */
/* Sets the synthetic monotonic clock. */
void fake_net_set_now(ULONGLONG ms);
/* Current synthetic clock. */
ULONGLONG fake_net_now(void);
/* Moves the clock forward by ms. */
void fake_net_advance(ULONGLONG ms);

/* ---- failures ---------------------------------------------------------- */
/* Splits the network in two: side A is every endpoint whose address is one
 * of pSideA[0..cSideA) (ports ignored), side B everything else.  Across the
 * split nothing is seen: bytes sent stay in flight (the receiver reads
 * nothing and is not reported readable), neither end sees an end of stream
 * or a reset, and library connects across it never complete.  Connections
 * that survive a heal get their bytes then, as TCP would.  Nodes need an
 * address of their own: listen on it, and their outbound connections leave
 * from it (pfnConnectFrom).  cSideA 0 heals.  Returns 0 when out of memory. */
int fake_net_partition(const SOCKADDR_IN6 *pSideA, size_t cSideA);
/* Resets every connection across the current partition at both ends, as
 * TCP gives up on a peer that stays unreachable (after minutes). */
void fake_net_reset_across(void);
/* Library connects made without a source address (pfnConnect, or before
 * the graph listens) leave from addr's address instead of [::1] /
 * 127.0.0.1: set it to a node's own address around its PeerGraphConnect so
 * its join link belongs to it too.  NULL restores the default. */
void fake_net_set_source(const SOCKADDR_IN6 *addr);

/* Bytes the library's sockets have sent so far (what their peers received
 * or will receive). */
ULONGLONG fake_net_bytes_sent(void);

/* ---- random ------------------------------------------------------------ */
/* Reseeds pfnRandom's generator (0 is replaced by a fixed non-zero value). */
void fake_net_seed(ULONGLONG seed);

/* ---- fault and flow controls -------------------------------------------- */
/* Library connects to addr's address and port (port 0: every port of that
 * address) never complete: pfnConnectResult stays S_FALSE and pfnWait never
 * reports the socket.  Takes precedence over a matching listener.  Applies to
 * connects started after the call. */
void fake_net_blackhole(const SOCKADDR_IN6 *addr);
/* Each pfnRecv / pfnSend moves at most cb bytes (1 = byte at a time; 0 =
 * unlimited, the default).  Raw endpoint functions are not limited. */
void fake_net_set_max_io(ULONG cb);
/* At most cb bytes may sit unread in any receive buffer; pfnSend beyond it
 * returns PEER_NET_WOULDBLOCK (0 = unlimited, the default).  fake_net_raw_write
 * ignores it. */
void fake_net_set_send_capacity(ULONG cb);

/* ---- raw endpoints: the test plays the remote peer ---------------------- */
/* A listener owned by the test (port 0 = ephemeral; read it back with
 * fake_net_raw_local_address).  PEER_INVALID_SOCKET if the port is taken or
 * addr is NULL / not AF_INET6. */
PEER_SOCKET fake_net_raw_listen(const SOCKADDR_IN6 *addr);
/* The server side of the oldest connection pending on a raw listener, or
 * PEER_INVALID_SOCKET when none is pending. */
PEER_SOCKET fake_net_raw_accept(PEER_SOCKET listener);
/* A test-side client connected (at once) to whatever listens at *to; its
 * server side waits in that listener's backlog.  PEER_INVALID_SOCKET if
 * nothing listens there.  Blackholes do not apply. */
PEER_SOCKET fake_net_raw_connect(const SOCKADDR_IN6 *to);
/* Appends bytes to the library side's receive buffer (ignores capacity and
 * max_io).  Dropped silently if the library side is gone. */
void fake_net_raw_write(PEER_SOCKET s, const void *pv, size_t cb);
/* Reads up to cbMax bytes the library sent to this endpoint; returns how many
 * (0 when none are waiting or s is not a raw stream). */
size_t fake_net_raw_read(PEER_SOCKET s, void *pv, size_t cbMax);
/* Bytes waiting to be read with fake_net_raw_read. */
size_t fake_net_raw_pending(PEER_SOCKET s);
/* 0 while the library side may still send; 1 once it shut down its sending
 * side or closed (orderly; bytes may still be pending); 2 if the connection
 * was reset (e.g. a library listener closed with it in the backlog). */
int fake_net_raw_eof(PEER_SOCKET s);
/* Half-close: the library side reads EOF after the pending bytes; s stays
 * open for reading. */
void fake_net_raw_shutdown(PEER_SOCKET s);
/* Orderly close and free of s (a stream or a raw listener): the library side
 * reads EOF after the pending bytes. */
void fake_net_raw_close(PEER_SOCKET s);
/* Abortive close and free of s: the library side's pfnRecv then returns
 * PEER_NET_FAILED (pending bytes are discarded) and pfnSend fails. */
void fake_net_raw_reset(PEER_SOCKET s);
/* Local / remote address of a raw endpoint (a listener's local address has
 * the real port).  Returns nonzero on success, 0 if s is not a raw endpoint
 * (or, for remote, not a stream). */
int fake_net_raw_local_address(PEER_SOCKET s, SOCKADDR_IN6 *pAddr);
int fake_net_raw_remote_address(PEER_SOCKET s, SOCKADDR_IN6 *pAddr);

/* ---- inspection --------------------------------------------------------- */
/* Sockets the library currently holds open (listeners, connecting and
 * connected sockets; not raw endpoints, not connections still waiting in a
 * backlog).  0 after PeerGraphShutdown means nothing leaked. */
int fake_net_open_sockets(void);
/* Nonzero while s names a live endpoint (library, raw, or waiting in a
 * backlog); 0 once closed, or if never handed out. */
int fake_net_is_open(PEER_SOCKET s);

/* ---- addresses (sin6_family AF_INET6, sin6_port in network byte order) --- */
/* Parses "::1", "::", "fe80::1", "2001:db8::a:b", "::ffff:192.0.2.1", full
 * 8-group forms, and an optional numeric "%scope" suffix (sin6_scope_id).
 * NULL means [::1].  On a parse error the result has sin6_family 0, which
 * the shim rejects. */
SOCKADDR_IN6 fake_net_addr6(const char *text, unsigned short port);
/* [::1]:port */
SOCKADDR_IN6 fake_net_addr_loopback6(unsigned short port);
/* [::ffff:a.b.c.d]:port */
SOCKADDR_IN6 fake_net_addr_v4mapped(unsigned char a, unsigned char b, unsigned char c,
                                     unsigned char d, unsigned short port);
/* [::]:port */
SOCKADDR_IN6 fake_net_addr_any(unsigned short port);
/* The port of *addr in host byte order. */
unsigned short fake_net_port(const SOCKADDR_IN6 *addr);
/* Nonzero if both are AF_INET6 with the same 16 address bytes and port. */
int fake_net_addr_equal(const SOCKADDR_IN6 *a, const SOCKADDR_IN6 *b);

#ifdef __cplusplus
}
#endif
#endif /* FAKE_NET_H */
