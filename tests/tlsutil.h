/*
 * tlsutil.h - test credentials made with mbedTLS at run time: a graph CA and
 * node certificates (EC P-256, ECDSA-SHA256), PEM, with any validity period
 * and subject CN, and the security interfaces of the two providers (cmocka
 * tests; bench/tls.c has its own copy of the certificate code, without cmocka).
 */
#ifndef TLSUTIL_H
#define TLSUTIL_H

#include "testutil.h"
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/pk.h>
#include <mbedtls/x509_crt.h>

typedef struct tu_cred {
    char key[1024];  /* PEM private key */
    char crt[2048];  /* PEM certificate */
    mbedtls_pk_context pk;
} tu_cred;

/* A deterministic random generator for key generation (tests only). */
static int tu_rng(void *ctx, unsigned char *out, size_t n)
{
    static uint64_t x = 0x9E3779B97F4A7C15ULL;
    size_t i;
    (void)ctx;
    for (i = 0; i < n; i++) {
        x ^= x << 13; x ^= x >> 7; x ^= x << 17;
        out[i] = (unsigned char)(x >> 32);
    }
    return 0;
}

static inline void tu_keygen(tu_cred *c)
{
    mbedtls_pk_init(&c->pk);
    assert_int_equal(mbedtls_pk_setup(&c->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)), 0);
    assert_int_equal(mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(c->pk), tu_rng, NULL), 0);
    assert_int_equal(mbedtls_pk_write_key_pem(&c->pk, (unsigned char *)c->key, sizeof c->key), 0);
}

/* A certificate for `cn` (subject "CN=<cn>"), signed by issuer (NULL:
 * self-signed CA), valid from..to ("YYYYMMDDhhmmss"). */
static inline void tu_cert(tu_cred *c, const char *cn, const tu_cred *issuer, const char *issuerCn, const char *from,
                           const char *to)
{
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    char subj[300], iss[300];
    static int n = 1;
    tu_keygen(c);
    snprintf(subj, sizeof subj, "CN=%s", cn);
    snprintf(iss, sizeof iss, "CN=%s", issuer ? issuerCn : cn);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    assert_int_equal(mbedtls_mpi_lset(&serial, n++), 0);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &c->pk);
    mbedtls_x509write_crt_set_issuer_key(&w, issuer ? (mbedtls_pk_context *)&issuer->pk : &c->pk);
    assert_int_equal(mbedtls_x509write_crt_set_subject_name(&w, subj), 0);
    assert_int_equal(mbedtls_x509write_crt_set_issuer_name(&w, iss), 0);
    assert_int_equal(mbedtls_x509write_crt_set_serial(&w, &serial), 0);
    assert_int_equal(mbedtls_x509write_crt_set_validity(&w, from, to), 0);
    assert_int_equal(mbedtls_x509write_crt_set_basic_constraints(&w, issuer ? 0 : 1, -1), 0);
    assert_int_equal(mbedtls_x509write_crt_pem(&w, (unsigned char *)c->crt, sizeof c->crt, tu_rng, NULL), 0);
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
}

static inline void tu_ca(tu_cred *c, const char *cn) { tu_cert(c, cn, NULL, NULL, "20200101000000", "20991231235959"); }
static inline void tu_node_cert(tu_cred *c, const char *cn, const tu_cred *ca, const char *caCn)
{
    tu_cert(c, cn, ca, caCn, "20200101000000", "20991231235959");
}
static inline void tu_cred_free(tu_cred *c) { mbedtls_pk_free(&c->pk); }

/* A security interface for the PSK provider (secret as given). */
static inline PEER_SECURITY_INTERFACE tu_sec_psk(const char *secret)
{
    PEER_SECURITY_INTERFACE s;
    memset(&s, 0, sizeof s);
    s.dwSize = sizeof s;
    s.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_PSK;
    s.cbSecurityInfo = (ULONG)strlen(secret);
    s.pbSecurityInfo = (PBYTE)secret;
    return s;
}

/* ... and for the certificate provider; *info must outlive Create/Open. */
static inline PEER_SECURITY_INTERFACE tu_sec_cert(PEER_TLS_CERT_INFO *info, const tu_cred *ca, const tu_cred *node)
{
    PEER_SECURITY_INTERFACE s;
    memset(info, 0, sizeof *info);
    info->dwSize = sizeof *info;
    info->pszCaPem = ca->crt;
    info->pszCertPem = node->crt;
    info->pszKeyPem = node->key;
    memset(&s, 0, sizeof s);
    s.dwSize = sizeof s;
    s.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_CERT;
    s.cbSecurityInfo = sizeof *info;
    s.pbSecurityInfo = (PBYTE)info;
    return s;
}

/* Create / Open with a security interface (databases as tu_create/tu_open). */
static inline HGRAPH tu_create_sec(const wchar_t *graphId, const wchar_t *peerId, PEER_SECURITY_INTERFACE *sec)
{
    PEER_GRAPH_PROPERTIES p;
    HGRAPH h = NULL;
    wchar_t db[32];
    memset(&p, 0, sizeof p);
    p.dwSize = sizeof p;
    p.pwzGraphId = (PWSTR)graphId;
    p.pwzCreatorId = (PWSTR)peerId;
    p.cPresenceMax = (ULONG)-1;
    tu_dbname(db, 32);
    PeerGraphDelete(graphId, peerId, db);
    assert_int_equal(PeerGraphCreate(&p, db, sec, &h), S_OK);
    return h;
}

static inline HGRAPH tu_open_sec(const wchar_t *graphId, const wchar_t *peerId, PEER_SECURITY_INTERFACE *sec)
{
    HGRAPH h = NULL;
    wchar_t db[32];
    tu_dbname(db, 32);
    PeerGraphDelete(graphId, peerId, db);
    assert_int_equal(PeerGraphOpen(graphId, peerId, db, sec, 0, NULL, &h), PEER_S_GRAPH_DATA_CREATED);
    return h;
}

#endif
