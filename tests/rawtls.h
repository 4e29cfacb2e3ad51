/*
 * rawtls.h - a test-side mbedTLS peer on a raw fake-network socket: the test
 * plays a member (or a forger) inside TLS, certificates from tlsutil.h.
 * test_security, test_ecdsa_records.
 */
#ifndef RAWTLS_H
#define RAWTLS_H
#include "rawpeer.h"
#include "tlsutil.h"
#include <mbedtls/ssl.h>

typedef struct raw_tls {
    PEER_SOCKET s;
    mbedtls_ssl_context ssl;
    mbedtls_ssl_config conf;
    mbedtls_x509_crt ca, own;
    mbedtls_pk_context key;
    unsigned char pre[8192]; /* bytes already read from s, given to mbedTLS first */
    size_t pre_n, pre_off;
    unsigned char acc[20000]; /* plaintext read, not yet a whole frame */
    size_t acc_n;
} raw_tls;

static int raw_send(void *ctx, const unsigned char *p, size_t n)
{
    fake_net_raw_write(((raw_tls *)ctx)->s, p, n);
    return (int)n;
}
static int raw_recv(void *ctx, unsigned char *p, size_t n)
{
    raw_tls *t = (raw_tls *)ctx;
    size_t k;
    if (t->pre_off < t->pre_n) {
        k = t->pre_n - t->pre_off < n ? t->pre_n - t->pre_off : n;
        memcpy(p, t->pre + t->pre_off, k);
        t->pre_off += k;
        return (int)k;
    }
    k = fake_net_raw_read(t->s, p, n);
    if (k) return (int)k;
    return fake_net_raw_eof(t->s) ? 0 : MBEDTLS_ERR_SSL_WANT_READ;
}

static void raw_tls_init(raw_tls *t, PEER_SOCKET s, int server, const tu_cred *ca, const tu_cred *own,
                         const unsigned char *pre, size_t pre_n)
{
    static const int suites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, 0};
    memset(t, 0, sizeof *t);
    t->s = s;
    assert_true(pre_n <= sizeof t->pre);
    if (pre_n) memcpy(t->pre, pre, pre_n);
    t->pre_n = pre_n;
    mbedtls_ssl_init(&t->ssl);
    mbedtls_ssl_config_init(&t->conf);
    mbedtls_x509_crt_init(&t->ca);
    mbedtls_x509_crt_init(&t->own);
    mbedtls_pk_init(&t->key);
    assert_int_equal(mbedtls_x509_crt_parse(&t->ca, (const unsigned char *)ca->crt, strlen(ca->crt) + 1), 0);
    assert_int_equal(mbedtls_x509_crt_parse(&t->own, (const unsigned char *)own->crt, strlen(own->crt) + 1), 0);
    assert_int_equal(mbedtls_pk_parse_key(&t->key, (const unsigned char *)own->key, strlen(own->key) + 1, NULL, 0), 0);
    assert_int_equal(mbedtls_ssl_config_defaults(&t->conf, server ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT,
                                                 MBEDTLS_SSL_TRANSPORT_STREAM, MBEDTLS_SSL_PRESET_DEFAULT),
                     0);
    mbedtls_ssl_conf_rng(&t->conf, tu_rng, NULL);
    mbedtls_ssl_conf_ciphersuites(&t->conf, suites);
    mbedtls_ssl_conf_authmode(&t->conf, MBEDTLS_SSL_VERIFY_REQUIRED);
    mbedtls_ssl_conf_ca_chain(&t->conf, &t->ca, NULL);
    assert_int_equal(mbedtls_ssl_conf_own_cert(&t->conf, &t->own, &t->key), 0);
    assert_int_equal(mbedtls_ssl_setup(&t->ssl, &t->conf), 0);
    mbedtls_ssl_set_bio(&t->ssl, t, raw_send, raw_recv, NULL);
}

static void raw_tls_free(raw_tls *t)
{
    mbedtls_ssl_free(&t->ssl);
    mbedtls_ssl_config_free(&t->conf);
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_x509_crt_free(&t->own);
    mbedtls_pk_free(&t->key);
}

/* Runs the raw side's handshake while servicing the library; returns its
 * last result (0 = done). */
static int raw_tls_handshake(raw_tls *t)
{
    int i, r = MBEDTLS_ERR_SSL_WANT_READ;
    for (i = 0; i < 200 && (r == MBEDTLS_ERR_SSL_WANT_READ || r == MBEDTLS_ERR_SSL_WANT_WRITE); i++) {
        r = mbedtls_ssl_handshake(&t->ssl);
        tu_pump(1, 5);
    }
    return r;
}

/* Writes a framed message through the raw side's TLS. */
static void raw_tls_send_msg(raw_tls *t, const msg *m)
{
    static unsigned char f[16384 + 2];
    assert_true(m->n <= 16379);
    f[0] = (unsigned char)(m->n >> 8);
    f[1] = (unsigned char)m->n;
    memcpy(f + 2, m->b, m->n);
    assert_int_equal(mbedtls_ssl_write(&t->ssl, f, m->n + 2), (int)(m->n + 2));
}

/* Reads one framed message through the raw side's TLS (0: none yet). */
static int raw_tls_recv_msg(raw_tls *t, msg *m)
{
    unsigned char *acc = t->acc;
    size_t n = t->acc_n;
    int r, i;
    for (i = 0; i < 100; i++) {
        if (n >= 6) {
            size_t fl = ((size_t)acc[0] << 8) | acc[1];
            if (n >= 2 + fl) {
                memcpy(m->b, acc + 2, fl);
                m->n = fl;
                memmove(acc, acc + 2 + fl, n - 2 - fl);
                t->acc_n = n - 2 - fl;
                return 1;
            }
        }
        r = mbedtls_ssl_read(&t->ssl, acc + n, sizeof t->acc - n);
        if (r > 0) { n += (size_t)r; continue; }
        tu_pump(1, 5);
    }
    t->acc_n = n;
    return 0;
}

/* Connects the library to a raw node; returns the raw side, accepted, with
 * the library's AUTH_INFO read (what came after it in *rest). */
static PEER_SOCKET raw_accept_auth(HGRAPH h, PEER_SOCKET l, SOCKADDR_IN6 *ra, const wchar_t *peer, ULONGLONG *id,
                                   rxbuf *rx)
{
    PEER_ADDRESS pa = peer_addr(*ra);
    PEER_SOCKET s;
    msg m;
    assert_int_equal(PeerGraphConnect(h, peer, &pa, id), S_OK);
    tu_pump(2, 5);
    s = fake_net_raw_accept(l);
    assert_true(s != PEER_INVALID_SOCKET);
    memset(rx, 0, sizeof *rx);
    assert_true(recv_msg_all(s, rx, &m) > 0); /* AUTH_INFO, in the clear */
    assert_int_equal(m.b[5], 1);
    assert_int_equal(m.b[9] & 0x40, 0x40); /* TLS follows */
    assert_true(rx->n > rx->off);
    assert_int_equal(rx->b[rx->off], 0x16); /* a TLS handshake record: the ClientHello */
    return s;
}

#endif
