/*
 * rawpeer.h - a test-side MS-PPGRH encoder and decoder, independent of the
 * library's, for tests that play the remote peer byte by byte on the fake
 * network (test_handshake, test_data).
 */
#ifndef RAWPEER_H
#define RAWPEER_H
#include "testutil.h"

/* ---------------------------------------------------------------- encoder */
typedef struct { unsigned char b[70000]; size_t n; } msg;

static inline void p8(msg *m, unsigned v) { m->b[m->n++] = (unsigned char)v; }
static inline void p16(msg *m, unsigned v) { p8(m, v >> 8); p8(m, v & 0xFF); }
static inline void p32(msg *m, unsigned long v) { p16(m, (unsigned)(v >> 16)); p16(m, (unsigned)(v & 0xFFFF)); }
static inline void p64(msg *m, ULONGLONG v) { p32(m, (unsigned long)(v >> 32)); p32(m, (unsigned long)(v & 0xFFFFFFFFu)); }
static inline void pstr(msg *m, const char *s) { size_t k = strlen(s) + 1; memcpy(m->b + m->n, s, k); m->n += k; }
static inline void paddr(msg *m, const SOCKADDR_IN6 *a)
{
    p16(m, 0x17);
    p16(m, fake_net_port(a));
    memcpy(m->b + m->n, a->sin6_addr.s6_addr, 16);
    m->n += 16;
}
static inline void hdr(msg *m, int type) { m->n = 0; p32(m, 0); p8(m, 0x10); p8(m, (unsigned)type); p16(m, 0); }
static inline void fin(msg *m) { m->b[0] = (unsigned char)(m->n >> 24); m->b[1] = (unsigned char)(m->n >> 16); m->b[2] = (unsigned char)(m->n >> 8); m->b[3] = (unsigned char)m->n; }

static inline void m_auth(msg *m, int type, unsigned ext, const char *graph, const char *src, const char *dst)
{
    size_t lg = strlen(graph) + 1, ls = strlen(src) + 1, ld = dst ? strlen(dst) + 1 : 0;
    hdr(m, 1);
    p8(m, (unsigned)type);
    p8(m, ext);
    p16(m, 16);
    p16(m, (unsigned)(16 + lg));
    p16(m, (unsigned)(16 + lg + ls));
    pstr(m, graph);
    pstr(m, src);
    if (dst) pstr(m, dst);
    (void)ld;
    fin(m);
}
static inline void m_connect(msg *m, unsigned flags, ULONGLONG node, const SOCKADDR_IN6 *addrs, unsigned n, const char *name)
{
    unsigned i;
    hdr(m, 2);
    p8(m, flags);
    p8(m, n);
    p16(m, 24);
    p16(m, 24 + 20 * n);
    p16(m, 0);
    p64(m, node);
    for (i = 0; i < n; i++) paddr(m, &addrs[i]);
    if (name) pstr(m, name);
    fin(m);
}
static inline void m_welcome(msg *m, ULONGLONG node, ULONGLONG pt, const SOCKADDR_IN6 *addrs, unsigned n, const char *peer,
                      unsigned ext)
{
    unsigned i;
    hdr(m, 3);
    p64(m, node);
    p64(m, pt);
    p8(m, n);
    p8(m, ext);
    p16(m, n ? 32 : 0);
    p16(m, 32 + 20 * n);
    p16(m, (unsigned)(32 + 20 * n + strlen(peer) + 1));
    for (i = 0; i < n; i++) paddr(m, &addrs[i]);
    pstr(m, peer);
    fin(m);
}
static inline void m_simple(msg *m, int type, unsigned code, const SOCKADDR_IN6 *addrs, unsigned n)
{
    unsigned i;
    hdr(m, type);
    p8(m, code);
    p8(m, n);
    p16(m, n ? 12 : (type == 5 ? 12 : 0));
    for (i = 0; i < n; i++) paddr(m, &addrs[i]);
    fin(m);
}
static inline void m_sync_end(msg *m) { hdr(m, 0x0C); p8(m, 1); p8(m, 0); p16(m, 0); fin(m); }

/* Sends m as one frame (or several of at most `chunk` bytes). */
static inline void send_msg_chunked(PEER_SOCKET s, const msg *m, size_t chunk)
{
    size_t off = 0;
    while (off < m->n) {
        size_t k = m->n - off > chunk ? chunk : m->n - off;
        unsigned char fh[2] = {(unsigned char)(k >> 8), (unsigned char)k};
        fake_net_raw_write(s, fh, 2);
        fake_net_raw_write(s, m->b + off, k);
        off += k;
    }
}
static inline void send_msg(PEER_SOCKET s, const msg *m) { send_msg_chunked(s, m, 16379); }

/* ---------------------------------------------------------------- decoder */
typedef struct {
    unsigned char b[70000];
    size_t n;
    size_t off;
    unsigned ka;             /* fast-profile keepalive frames read (PROTOCOL.md P17) */
    unsigned char ka_last[2]; /* the last one */
    unsigned char ka_log[256][2]; /* the last 256: frame i at ka_log[i & 255] */
} rxbuf;

/* Reads one whole message the library sent on s into m; 0 if none yet
 * (nothing is consumed then). */
static inline int recv_msg_all(PEER_SOCKET s, rxbuf *r, msg *m)
{
    size_t off = r->off;
    r->n += fake_net_raw_read(s, r->b + r->n, sizeof r->b - r->n);
    m->n = 0;
    for (;;) {
        size_t fl;
        if (m->n >= 4) {
            size_t sz = ((size_t)m->b[0] << 24) | ((size_t)m->b[1] << 16) | ((size_t)m->b[2] << 8) | m->b[3];
            if (m->n >= sz) {
                assert_int_equal(m->n, sz); /* the library never mixes messages in a frame */
                break;
            }
        }
        if (r->n - off < 2) return 0;
        if (r->b[off] > 0x80) { /* a keepalive frame: two bytes, between frames */
            assert_true(r->b[off] < 0xFF || r->b[off + 1] == 0);
            memcpy(r->ka_log[r->ka++ & 255], r->b + off, 2);
            memcpy(r->ka_last, r->b + off, 2);
            off += 2;
            if (!m->n) r->off = off;
            continue;
        }
        fl = ((size_t)r->b[off] << 8) | r->b[off + 1];
        assert_true(fl >= 1 && fl <= 16379); /* we never send larger frames */
        if (r->n - off < 2 + fl) return 0;
        memcpy(m->b + m->n, r->b + off + 2, fl);
        m->n += fl;
        off += 2 + fl;
    }
    r->off = off;
    assert_int_equal(m->b[4], 0x10);
    assert_int_equal(m->b[6], 0);
    assert_int_equal(m->b[7], 0);
    return (int)m->n;
}

/* Like recv_msg_all, but skips FLOODs of Presence records (type
 * {00000400-...}), which a listening node publishes on its own; the tests
 * that look at presence use recv_msg_all. */
static inline int recv_msg(PEER_SOCKET s, rxbuf *r, msg *m)
{
    static const unsigned char presence[16] = {0, 0, 4, 0};
    for (;;) {
        int n = recv_msg_all(s, r, m);
        if (n <= 0) return n;
        if (m->b[5] == 0x0B && m->n >= 12 + 16 && !memcmp(m->b + 12, presence, 16)) continue;
        return n;
    }
}

static inline unsigned g16(const unsigned char *p) { return ((unsigned)p[0] << 8) | p[1]; }

static inline ULONGLONG local_node(HGRAPH h)
{
    PPEER_NODE_INFO ni;
    ULONGLONG id;
    assert_int_equal(PeerGraphGetNodeInfo(h, 0, &ni), S_OK);
    id = ni->ullNodeId;
    PeerGraphFreeData(ni);
    return id;
}

static inline PEER_ADDRESS peer_addr(SOCKADDR_IN6 a)
{
    PEER_ADDRESS pa;
    memset(&pa, 0, sizeof pa);
    pa.dwSize = sizeof pa;
    pa.sin6 = a;
    return pa;
}

/* A raw listener standing in for a remote node. */
static inline PEER_SOCKET raw_node(SOCKADDR_IN6 *addr)
{
    SOCKADDR_IN6 a = fake_net_addr_loopback6(0);
    PEER_SOCKET l = fake_net_raw_listen(&a);
    assert_true(l != PEER_INVALID_SOCKET);
    assert_true(fake_net_raw_local_address(l, addr));
    return l;
}

#endif
