/*
 * test_ecdsa_records.c - examples/ecdsa_records.h, the example record
 * security provider that signs every record version with its publisher's
 * ECDSA key: its canonical form (the same bytes whatever wchar_t is), its
 * policy and every rejection reason, called directly; malformed security
 * data of every length and with flipped bytes; and on the fake network:
 * three members with certificate links replicating signed records (and
 * reloading them from the database), a test-side member "Mallory" with a
 * valid certificate FLOODing forged records over her TLS link, and one real
 * member updating and deleting another's record.
 */
#include "rawpeer.h"
#include "tlsutil.h"
#include "rawtls.h"
#include <mbedtls/ssl.h>
#include "examples/ecdsa_records.h"

#define GRAPH L"ecdsa-graph"

static int setup(void **st) { (void)st; tu_start_fake(); return 0; }
static int teardown(void **st) { (void)st; tu_stop_fake(); return 0; }

/* ------------------------------------------------------------------------- */
/* credentials, made once                                                    */
/* ------------------------------------------------------------------------- */

static tu_cred ca, ca2, alice, bob, carol, mallory, dave, zoe, eve_other_ca, alice_expired;

static int group_setup(void **st)
{
    (void)st;
    tu_ca(&ca, "graph ca");
    tu_ca(&ca2, "another ca");
    tu_node_cert(&alice, "Alice", &ca, "graph ca");
    tu_node_cert(&bob, "Bob", &ca, "graph ca");
    tu_node_cert(&carol, "Carol", &ca, "graph ca");
    tu_node_cert(&mallory, "Mallory", &ca, "graph ca");
    tu_node_cert(&dave, "Dave", &ca, "graph ca");
    tu_node_cert(&zoe, "Zo\xc3\xab\xf0\x9f\x98\x80", &ca, "graph ca"); /* "Zoë😀" in UTF-8 */
    tu_node_cert(&eve_other_ca, "Alice", &ca2, "another ca");
    tu_cert(&alice_expired, "Alice", &ca, "graph ca", "20200101000000", "20210101000000");
    return 0;
}

static int group_teardown(void **st)
{
    (void)st;
    tu_cred_free(&ca);
    tu_cred_free(&ca2);
    tu_cred_free(&alice);
    tu_cred_free(&bob);
    tu_cred_free(&carol);
    tu_cred_free(&mallory);
    tu_cred_free(&dave);
    tu_cred_free(&zoe);
    tu_cred_free(&eve_other_ca);
    tu_cred_free(&alice_expired);
    return 0;
}

static void er_init(ecdsa_records *er, const tu_cred *who)
{
    assert_int_equal(ecdsa_records_init(er, GRAPH, ca.crt, who->crt, who->key, NULL), 0);
}

/* The DER form of a credential's certificate. */
static size_t der_of(const tu_cred *c, unsigned char *out, size_t max)
{
    mbedtls_x509_crt x;
    size_t n;
    mbedtls_x509_crt_init(&x);
    assert_int_equal(mbedtls_x509_crt_parse(&x, (const unsigned char *)c->crt, strlen(c->crt) + 1), 0);
    n = x.raw.len;
    assert_true(n <= max);
    memcpy(out, x.raw.p, n);
    mbedtls_x509_crt_free(&x);
    return n;
}

/* Security data in the documented layout, made here rather than by the
 * provider: certOf's certificate and a signature by signer's key over the
 * record's canonical digest (as `hasher`, a context bound to GRAPH, computes
 * it).  Returns its size. */
static ULONG make_sd(unsigned char *out, const PEER_RECORD *r, const ecdsa_records *hasher, tu_cred *signer,
                     const tu_cred *certOf)
{
    unsigned char hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE];
    size_t n = 0, k, sl = 0;
    memcpy(out, "ECRS", 4);
    out[4] = 1;
    out[5] = 1;
    k = der_of(certOf, out + 8, 4000);
    out[6] = (unsigned char)(k >> 8);
    out[7] = (unsigned char)k;
    n = 8 + k;
    assert_int_equal(ecdsa_records_record_hash(hasher, r, hash), 0);
    assert_int_equal(mbedtls_pk_sign(&signer->pk, MBEDTLS_MD_SHA256, hash, 32, sig, &sl, tu_rng, NULL), 0);
    out[n] = (unsigned char)(sl >> 8);
    out[n + 1] = (unsigned char)sl;
    memcpy(out + n + 2, sig, sl);
    return (ULONG)(n + 2 + sl);
}

/* The subject CN of the first certificate in security data (in the
 * documented layout), as UTF-8 in out; 0 if it does not parse. */
static int sd_cn(const PEER_DATA *sd, char *out, size_t max)
{
    mbedtls_x509_crt x;
    const mbedtls_x509_name *nm;
    size_t k;
    int ok = 0;
    if (sd->cbData < 8 || memcmp(sd->pbData, "ECRS", 4) || sd->pbData[4] != 1) return 0;
    k = ((size_t)sd->pbData[6] << 8) | sd->pbData[7];
    if (k > sd->cbData - 8) return 0;
    mbedtls_x509_crt_init(&x);
    if (mbedtls_x509_crt_parse_der(&x, sd->pbData + 8, k) == 0)
        for (nm = &x.subject; nm; nm = nm->next)
            if (nm->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &nm->oid) == 0 && nm->val.len < max) {
                memcpy(out, nm->val.p, nm->val.len);
                out[nm->val.len] = 0;
                ok = 1;
            }
    mbedtls_x509_crt_free(&x);
    return ok;
}

/* ------------------------------------------------------------------------- */
/* direct calls: canonical form, policy, reasons                            */
/* ------------------------------------------------------------------------- */

static const GUID T_APP = {0xec5a0001, 0x1, 0x2, {1, 2, 3, 4, 5, 6, 7, 8}};
static const GUID T_SIGNATURE = {0x200, 0, 0, {0}};
static const GUID T_PRESENCE = {0x400, 0, 0, {0}};

static PEER_RECORD base_record(const wchar_t *creator, const char *payload)
{
    static const GUID id = {0x11223344, 0x5566, 0x7788, {0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0}};
    PEER_RECORD r;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = T_APP;
    r.id = id;
    r.dwVersion = 1;
    r.pwzCreatorId = (PWSTR)creator;
    r.ftCreation.dwHighDateTime = 0x01dc7a00;
    r.ftCreation.dwLowDateTime = 0x12345678;
    r.ftLastModified = r.ftCreation;
    r.ftExpiration.dwHighDateTime = 0x01dc7a10;
    r.ftExpiration.dwLowDateTime = 0x9abcdef0;
    r.data.cbData = (ULONG)strlen(payload);
    r.data.pbData = (PBYTE)payload;
    return r;
}

/* Secures r with er (S_OK expected); the security data copied into buf. */
static ULONG secure_into(ecdsa_records *er, PEER_RECORD *r, unsigned char *buf, size_t max)
{
    PPEER_DATA d = NULL;
    ULONG n;
    assert_int_equal(ecdsa_records_secure(NULL, er, r, PEER_RECORD_ADDED, &d), S_OK);
    assert_non_null(d);
    n = d->cbData;
    assert_true(n <= max && n <= PEER_MAX_SECURITY_DATA);
    memcpy(buf, d->pbData, n);
    assert_int_equal(ecdsa_records_free_data(NULL, er, d), S_OK);
    return n;
}

static HRESULT validate(ecdsa_records *er, PEER_RECORD *r) { return ecdsa_records_validate(NULL, er, r, PEER_RECORD_ADDED); }

/* The canonical form, built here from the documentation with code points
 * given as numbers, against the provider's digest of the same record with
 * wchar_t strings (UTF-16 with a surrogate pair on Windows, UTF-32
 * elsewhere): the same bytes on every platform. */
static void cput(unsigned char *b, size_t *n, const void *p, size_t k)
{
    b[(*n)++] = (unsigned char)(k >> 24);
    b[(*n)++] = (unsigned char)(k >> 16);
    b[(*n)++] = (unsigned char)(k >> 8);
    b[(*n)++] = (unsigned char)k;
    memcpy(b + *n, p, k);
    *n += k;
}
static void cstr(unsigned char *b, size_t *n, const uint32_t *cp, size_t k)
{
    unsigned char t[64];
    size_t i;
    for (i = 0; i < k; i++) {
        t[4 * i] = (unsigned char)(cp[i] >> 24);
        t[4 * i + 1] = (unsigned char)(cp[i] >> 16);
        t[4 * i + 2] = (unsigned char)(cp[i] >> 8);
        t[4 * i + 3] = (unsigned char)cp[i];
    }
    cput(b, n, t, 4 * k);
}

static void test_canonical_form(void **st)
{
    static const uint32_t graph[] = {'e', 'c', 'd', 's', 'a', '-', 'g', 'r', 'a', 'p', 'h'};
    static const uint32_t creator[] = {'Z', 'o', 0xEB, 0x1F600};
    static const uint32_t modby[] = {'B', 0x10348, 'b'};
    static const uint32_t attr[] = {'<', 0x20AC, 0x1F600, '>'};
    static const unsigned char type_be[16] = {0xec, 0x5a, 0x00, 0x01, 0x00, 0x01, 0x00, 0x02, 1, 2, 3, 4, 5, 6, 7, 8};
    static const unsigned char id_be[16] = {0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88,
                                            0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0};
    static const unsigned char ver[4] = {0, 0, 0, 7}, flags[4] = {0, 0, 0, 2};
    static const unsigned char tc[8] = {0x01, 0xdc, 0x7a, 0x00, 0x12, 0x34, 0x56, 0x78};
    static const unsigned char te[8] = {0x01, 0xdc, 0x7a, 0x10, 0x9a, 0xbc, 0xde, 0xf0};
    static const unsigned char tm[8] = {0x01, 0xdc, 0x7a, 0x01, 0x00, 0x00, 0x00, 0x01};
    unsigned char b[1024], want[32], got[32];
    size_t n = 0;
    ecdsa_records er, unbound;
    PEER_RECORD r = base_record(L"Zo\u00eb\U0001F600", "payload");
    (void)st;
    er_init(&er, &alice);
    r.dwVersion = 7;
    r.dwFlags = PEER_RECORD_FLAG_DELETED;
    r.pwzModifiedById = (PWSTR)L"B\U00010348b";
    r.pwzAttributes = (PWSTR)L"<\u20ac\U0001F600>";
    r.ftLastModified.dwHighDateTime = 0x01dc7a01;
    r.ftLastModified.dwLowDateTime = 1;
    cput(b, &n, "p2pgraph-ecdsa-records-v1", 25);
    cstr(b, &n, graph, 11);
    cput(b, &n, type_be, 16);
    cput(b, &n, id_be, 16);
    cput(b, &n, ver, 4);
    cput(b, &n, flags, 4);
    cstr(b, &n, creator, 4);
    cstr(b, &n, modby, 3);
    cstr(b, &n, attr, 4);
    cput(b, &n, tc, 8);
    cput(b, &n, te, 8);
    cput(b, &n, tm, 8);
    cput(b, &n, "payload", 7);
    assert_int_equal(mbedtls_sha256_ret(b, n, want, 0), 0);
    assert_int_equal(ecdsa_records_record_hash(&er, &r, got), 0);
    assert_memory_equal(got, want, 32);
    /* securityData is not part of it */
    r.securityData.cbData = 3;
    r.securityData.pbData = (PBYTE) "xyz";
    assert_int_equal(ecdsa_records_record_hash(&er, &r, got), 0);
    assert_memory_equal(got, want, 32);
    /* NULL and "" are the same empty string; the graph ID is in it */
    r.pwzAttributes = NULL;
    assert_int_equal(ecdsa_records_record_hash(&er, &r, want), 0);
    r.pwzAttributes = (PWSTR)L"";
    assert_int_equal(ecdsa_records_record_hash(&er, &r, got), 0);
    assert_memory_equal(got, want, 32);
    assert_int_equal(ecdsa_records_init(&unbound, NULL, ca.crt, alice.crt, alice.key, NULL), 0);
    assert_int_equal(ecdsa_records_record_hash(&unbound, &r, got), 0);
    assert_memory_not_equal(got, want, 32);
    /* every field counts: each change gives another digest */
    {
        PEER_RECORD v[12];
        int i, j;
        unsigned char h[12][32];
        for (i = 0; i < 12; i++) v[i] = r;
        v[0].type.Data4[7] ^= 1;
        v[1].id.Data1 ^= 1;
        v[2].dwVersion++;
        v[3].dwFlags = 0;
        v[4].pwzCreatorId = (PWSTR)L"Zo\u00eb";
        v[5].pwzModifiedById = NULL;
        v[6].pwzAttributes = (PWSTR)L"<a/>";
        v[7].ftCreation.dwLowDateTime ^= 1;
        v[8].ftExpiration.dwHighDateTime ^= 1;
        v[9].ftLastModified.dwLowDateTime ^= 0x100;
        v[10].data.cbData--;
        v[11].pwzCreatorId = (PWSTR)L"Zo\u00ebB\U00010348b"; /* moving characters between fields */
        v[11].pwzModifiedById = (PWSTR)L"\U0001F600";
        for (i = 0; i < 12; i++) {
            assert_int_equal(ecdsa_records_record_hash(&er, &v[i], h[i]), 0);
            assert_memory_not_equal(h[i], want, 32);
            for (j = 0; j < i; j++) assert_memory_not_equal(h[i], h[j], 32);
        }
    }
    ecdsa_records_free(&er);
    ecdsa_records_free(&unbound);
}

static void test_init_errors(void **st)
{
    ecdsa_records er;
    static const char *bad = "-----BEGIN CERTIFICATE-----\nnot base64 at all\n-----END CERTIFICATE-----\n";
    (void)st;
    assert_int_equal(ecdsa_records_init(&er, GRAPH, NULL, alice.crt, alice.key, NULL), ECDSA_RECORDS_ERR_ARGS);
    assert_int_equal(ecdsa_records_init(&er, GRAPH, ca.crt, alice.crt, bob.key, NULL), ECDSA_RECORDS_ERR_KEY_MISMATCH);
    assert_int_equal(ecdsa_records_init(&er, GRAPH, ca.crt, eve_other_ca.crt, eve_other_ca.key, NULL),
                     ECDSA_RECORDS_ERR_UNTRUSTED);
    assert_int_equal(ecdsa_records_init(&er, GRAPH, ca.crt, alice_expired.crt, alice_expired.key, NULL),
                     ECDSA_RECORDS_ERR_UNTRUSTED);
    assert_true(ecdsa_records_init(&er, GRAPH, bad, alice.crt, alice.key, NULL) < 0);
    assert_true(ecdsa_records_init(&er, GRAPH, ca.crt, alice.crt, "no key here", NULL) < 0);
    ecdsa_records_free(&er); /* harmless after a failure */
    er_init(&er, &alice);
    ecdsa_records_free(&er);
    ecdsa_records_free(&er); /* and twice */
}

/* Every reason a record is rejected, and what passes. */
static void test_policy_and_reasons(void **st)
{
    ecdsa_records ea, eb, ev, ez;
    unsigned char sd[4096];
    PEER_RECORD r;
    PPEER_DATA d = NULL;
    PEER_SECURITY_INTERFACE psi;
    unsigned long chains;
    int i;
    (void)st;
    er_init(&ea, &alice);
    er_init(&eb, &bob);
    er_init(&ev, &dave); /* a member that only checks */

    /* attach sets the context and the three callbacks only */
    memset(&psi, 0, sizeof psi);
    psi.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_PSK;
    ecdsa_records_attach(&ev, &psi);
    assert_ptr_equal(psi.pvContext, &ev);
    assert_true(psi.pfnSecureRecord == ecdsa_records_secure && psi.pfnValidateRecord == ecdsa_records_validate &&
                psi.pfnFreeSecurityData == ecdsa_records_free_data && psi.pfnAuthFailed == NULL);
    assert_true(wcscmp(psi.pwzPackageName, PEER_SECURITY_PACKAGE_PSK) == 0);

    /* Alice's record, signed by Alice: accepted; any change breaks it */
    r = base_record(L"Alice", "hello");
    r.securityData.cbData = secure_into(&ea, &r, sd, sizeof sd);
    r.securityData.pbData = sd;
    assert_int_equal(ea.cSigned, 1);
    assert_int_equal(validate(&ev, &r), S_OK);
    r.data.pbData = (PBYTE) "jello";
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the signature does not verify");
    r.data.pbData = (PBYTE) "hello";
    r.ftExpiration.dwHighDateTime++;
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    r.ftExpiration.dwHighDateTime--;
    assert_int_equal(validate(&ev, &r), S_OK);
    assert_int_equal(ev.cAccepted, 2);
    assert_int_equal(ev.cRejected, 2);

    /* a member signs only versions published under its own name */
    r = base_record(L"Bob", "not mine");
    assert_int_equal(ecdsa_records_secure(NULL, &ea, &r, PEER_RECORD_ADDED, &d), PEER_E_NOT_AUTHORIZED);
    assert_null(d);
    r = base_record(L"Bob", "mine");
    r.pwzModifiedById = (PWSTR)L"Alice"; /* Alice's update of Bob's record: she signs it ... */
    r.dwVersion = 2;
    r.securityData.cbData = secure_into(&ea, &r, sd, sizeof sd);
    r.securityData.pbData = sd;
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD); /* ... and nobody takes it */
    assert_string_equal(ev.pszLastRejection, "changed by a member other than its creator");
    r.type = T_PRESENCE; /* the internal records too */
    r.securityData.cbData = secure_into(&ea, &r, sd, sizeof sd);
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "changed by a member other than its creator");
    r.type = T_SIGNATURE; /* but any member may take over the Signature record */
    r.securityData.cbData = secure_into(&ea, &r, sd, sizeof sd);
    assert_int_equal(validate(&ev, &r), S_OK);
    r.pwzModifiedById = (PWSTR)L"Bob"; /* still signed by whoever published the version */
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the certificate does not name the signer");
    /* an update by the creator herself */
    r = base_record(L"Alice", "v2");
    r.dwVersion = 2;
    r.pwzModifiedById = (PWSTR)L"Alice";
    r.ftLastModified.dwLowDateTime++;
    r.securityData.cbData = secure_into(&ea, &r, sd, sizeof sd);
    r.securityData.pbData = sd;
    assert_int_equal(validate(&ev, &r), S_OK);
    r.dwFlags = PEER_RECORD_FLAG_DELETED; /* her deletion */
    r.data.cbData = 0;
    r.data.pbData = NULL;
    r.securityData.cbData = secure_into(&ea, &r, sd, sizeof sd);
    assert_int_equal(validate(&ev, &r), S_OK);

    /* forgeries by a member: Bob's certificate and key, Alice as creator */
    r = base_record(L"Alice", "forged");
    r.securityData.pbData = sd;
    r.securityData.cbData = make_sd(sd, &r, &ev, &bob, &bob);
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the certificate does not name the signer");
    r.securityData.cbData = make_sd(sd, &r, &ev, &bob, &alice); /* Alice's certificate, Bob's signature */
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the signature does not verify");
    r.securityData.cbData = make_sd(sd, &r, &ev, &eve_other_ca, &eve_other_ca); /* "Alice" from another CA */
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the certificate is not signed by the graph CA");
    r.securityData.cbData = make_sd(sd, &r, &ev, &alice_expired, &alice_expired); /* Alice's old certificate */
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the certificate is outside its validity period");
    r.securityData.cbData = make_sd(sd, &r, &ev, &alice, &alice); /* the real thing, made by the test */
    assert_int_equal(validate(&ev, &r), S_OK);
    r.securityData.cbData = 0;
    r.securityData.pbData = NULL;
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "malformed security data");
    r.pwzCreatorId = NULL;
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "no creator");
    assert_int_equal(ecdsa_records_validate(NULL, &ev, NULL, PEER_RECORD_ADDED), PEER_E_INVALID_RECORD);
    assert_int_equal(ecdsa_records_validate(NULL, NULL, &r, PEER_RECORD_ADDED), PEER_E_INVALID_RECORD);
    assert_int_equal(ecdsa_records_secure(NULL, &ea, &r, PEER_RECORD_ADDED, NULL), E_INVALIDARG);

    /* a record signed for another graph ID */
    {
        ecdsa_records other;
        assert_int_equal(ecdsa_records_init(&other, L"another-graph", ca.crt, alice.crt, alice.key, NULL), 0);
        r = base_record(L"Alice", "elsewhere");
        r.securityData.cbData = secure_into(&other, &r, sd, sizeof sd);
        r.securityData.pbData = sd;
        assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
        assert_string_equal(ev.pszLastRejection, "the signature does not verify");
        ecdsa_records_free(&other);
    }

    /* a peer ID outside ASCII and the BMP, matched against a UTF-8 CN */
    er_init(&ez, &zoe);
    r = base_record(L"Zo\u00eb\U0001F600", "hi");
    r.securityData.cbData = secure_into(&ez, &r, sd, sizeof sd);
    r.securityData.pbData = sd;
    assert_int_equal(validate(&ev, &r), S_OK);
    r.pwzCreatorId = (PWSTR)L"Zo\u00eb";
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    assert_string_equal(ev.pszLastRejection, "the certificate does not name the signer");

    /* the cache: Bob's chain is verified once for many records */
    chains = ev.cChainVerifications;
    for (i = 0; i < 20; i++) {
        char p[16];
        snprintf(p, sizeof p, "bob %d", i);
        r = base_record(L"Bob", p);
        r.securityData.cbData = secure_into(&eb, &r, sd, sizeof sd);
        r.securityData.pbData = sd;
        assert_int_equal(validate(&ev, &r), S_OK);
    }
    assert_int_equal(ev.cChainVerifications, chains + 1);
    ecdsa_records_free(&ea);
    ecdsa_records_free(&eb);
    ecdsa_records_free(&ev);
    ecdsa_records_free(&ez);
}

/* Malformed security data: every truncation, every byte flipped (some
 * sampled in the certificate), extra bytes, garbage, absurd lengths. */
static void test_malformed_security_data(void **st)
{
    ecdsa_records ea, ev;
    unsigned char sd[4096], *p;
    PEER_RECORD r;
    ULONG n, k, i;
    uint64_t x = 88172645463325252ULL;
    (void)st;
    er_init(&ea, &alice);
    er_init(&ev, &dave);
    r = base_record(L"Alice", "the record");
    n = secure_into(&ea, &r, sd, sizeof sd);
    r.securityData.cbData = n;
    r.securityData.pbData = sd;
    assert_int_equal(validate(&ev, &r), S_OK);
    /* every truncation, each in a block of exactly its size */
    for (k = 0; k < n; k++) {
        p = (unsigned char *)malloc(k ? k : 1);
        memcpy(p, sd, k);
        r.securityData.cbData = k;
        r.securityData.pbData = k ? p : NULL;
        assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
        free(p);
    }
    /* one byte more */
    p = (unsigned char *)malloc(n + 1);
    memcpy(p, sd, n);
    p[n] = 0;
    r.securityData.cbData = n + 1;
    r.securityData.pbData = p;
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    /* a byte flipped: the framing and the signature at every position, the
     * certificate at every 7th (each costs a chain verification) */
    for (i = 0; i < n; i++) {
        size_t certEnd = 8 + (((size_t)sd[6] << 8) | sd[7]);
        if (i >= 8 && i < certEnd && i % 7) continue;
        memcpy(p, sd, n);
        p[i] ^= (unsigned char)(i & 1 ? 0x01 : 0xFF);
        r.securityData.cbData = n;
        assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    }
    memcpy(p, sd, n); /* intact again: still good */
    assert_int_equal(validate(&ev, &r), S_OK);
    free(p);
    /* garbage of every length up to 700, with and without the right header */
    p = (unsigned char *)malloc(PEER_MAX_SECURITY_DATA + 1);
    for (k = 0; k <= 700; k++) {
        for (i = 0; i < k; i++) {
            x ^= x << 13; x ^= x >> 7; x ^= x << 17;
            p[i] = (unsigned char)x;
        }
        if (k >= 6 && (k & 1)) memcpy(p, "ECRS\001\001", 6);
        r.securityData.cbData = k;
        r.securityData.pbData = p;
        assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    }
    /* lengths that claim more than there is, none, too many certificates */
    {
        static const unsigned char a1[] = {'E', 'C', 'R', 'S', 1, 1, 0xFF, 0xFF, 0x30, 0x00, 0, 1, 0};
        static const unsigned char a2[] = {'E', 'C', 'R', 'S', 1, 0, 0, 1, 0};
        static const unsigned char a3[] = {'E', 'C', 'R', 'S', 1, 5, 0, 1, 0x30, 0, 1, 0x30, 0, 1, 0x30, 0, 1, 0x30, 0, 1, 0x30, 0, 1, 0};
        static const unsigned char a4[] = {'E', 'C', 'R', 'S', 1, 1, 0, 0, 0, 0};
        static const unsigned char a5[] = {'E', 'C', 'R', 'S', 2, 1, 0, 1, 0x30, 0, 1, 0};
        static const unsigned char a6[] = {'E', 'C', 'R', 'S', 1, 1, 0, 1, 0x30, 0, 0};
        static const unsigned char a7[] = {'E', 'C', 'R', 'S', 1, 1, 0, 1, 0x30, 0xFF, 0xFF, 0};
        const unsigned char *all[] = {a1, a2, a3, a4, a5, a6, a7};
        size_t sizes[] = {sizeof a1, sizeof a2, sizeof a3, sizeof a4, sizeof a5, sizeof a6, sizeof a7};
        for (i = 0; i < 7; i++) {
            r.securityData.cbData = (ULONG)sizes[i];
            r.securityData.pbData = (PBYTE)all[i];
            assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
            assert_string_equal(ev.pszLastRejection, "malformed security data");
        }
    }
    /* bigger than PEER_MAX_SECURITY_DATA, though well formed inside */
    memset(p, 0, PEER_MAX_SECURITY_DATA + 1);
    memcpy(p, sd, n);
    r.securityData.cbData = PEER_MAX_SECURITY_DATA + 1;
    r.securityData.pbData = p;
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    r.securityData.pbData = NULL; /* a size without bytes */
    assert_int_equal(validate(&ev, &r), PEER_E_INVALID_RECORD);
    free(p);
    assert_int_equal(ev.cAccepted, 2);
    ecdsa_records_free(&ea);
    ecdsa_records_free(&ev);
}

/* ------------------------------------------------------------------------- */
/* graph helpers                                                             */
/* ------------------------------------------------------------------------- */



/* Fake UTC now, in FILETIME units (fake_net.h), as peer time of h. */
static ULONGLONG peer_now(HGRAPH h)
{
    ULONGLONG t = 134116992000000000ULL + fake_net_now() * 10000ULL;
    FILETIME u, p;
    u.dwLowDateTime = (DWORD)t;
    u.dwHighDateTime = (DWORD)(t >> 32);
    assert_int_equal(PeerGraphUniversalTimeToPeerTime(h, &u, &p), S_OK);
    return ((ULONGLONG)p.dwHighDateTime << 32) | p.dwLowDateTime;
}

static void ft_put(FILETIME *ft, ULONGLONG t)
{
    ft->dwLowDateTime = (DWORD)t;
    ft->dwHighDateTime = (DWORD)(t >> 32);
}

static GUID add_record(HGRAPH h, const char *payload, const wchar_t *attrs)
{
    PEER_RECORD r;
    GUID id;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = T_APP;
    r.data.cbData = (ULONG)strlen(payload);
    r.data.pbData = (PBYTE)payload;
    r.pwzAttributes = (PWSTR)attrs;
    ft_put(&r.ftExpiration, peer_now(h) + 3600ULL * 10000000ULL);
    assert_int_equal(PeerGraphAddRecord(h, &r, &id), S_OK);
    return id;
}

/* 1 if h holds id with this payload (and version, when not 0). */
static int has_record(HGRAPH h, const GUID *id, const char *payload, DWORD version)
{
    PPEER_RECORD r = NULL;
    int ok;
    if (PeerGraphGetRecord(h, id, &r) != S_OK) return 0;
    ok = r->data.cbData == strlen(payload) && !memcmp(r->data.pbData, payload, r->data.cbData) &&
         (!version || r->dwVersion == version);
    PeerGraphFreeData(r);
    return ok;
}

static ULONG rejected(HGRAPH h)
{
    PEER_DATABASE_INFO di;
    memset(&di, 0, sizeof di);
    di.dwSize = sizeof di;
    assert_int_equal(PeerGraphGetDatabaseInfo(h, &di), S_OK);
    return di.cRejectedRecords;
}

static ULONG app_records(HGRAPH h)
{
    HPEERENUM en;
    ULONG n = 0;
    assert_int_equal(PeerGraphEnumRecords(h, &T_APP, NULL, &en), S_OK);
    assert_int_equal(PeerGraphGetItemCount(en, &n), S_OK);
    assert_int_equal(PeerGraphEndEnumeration(en), S_OK);
    return n;
}

/* A member: its credentials, provider and graph. */
typedef struct member {
    ecdsa_records er;
    PEER_TLS_CERT_INFO ci;
    PEER_SECURITY_INTERFACE sec;
    HGRAPH h;
    HPEEREVENT e;
    PEER_ADDRESS addr;
    wchar_t db[32];
} member;

static void member_init(member *m, const tu_cred *c)
{
    memset(m, 0, sizeof *m);
    er_init(&m->er, c);
    m->sec = tu_sec_cert(&m->ci, &ca, c);
    ecdsa_records_attach(&m->er, &m->sec);
}

static void member_create(member *m, const tu_cred *c, const wchar_t *peer)
{
    member_init(m, c);
    m->h = tu_create_sec(GRAPH, peer, &m->sec);
    m->e = tu_register_all(m->h);
    m->addr = tu_listen(m->h);
}

/* Opens the graph and joins `to` (then listens). */
static void member_join(member *m, const tu_cred *c, const wchar_t *peer, member *to, const wchar_t *toPeer)
{
    HRESULT why;
    member_init(m, c);
    tu_dbname(m->db, 32);
    PeerGraphDelete(GRAPH, peer, m->db);
    assert_int_equal(PeerGraphOpen(GRAPH, peer, m->db, &m->sec, 0, NULL, &m->h), PEER_S_GRAPH_DATA_CREATED);
    m->e = tu_register_all(m->h);
    assert_int_equal(tu_connect_outcome(m->h, m->e, &to->addr, toPeer, &why), PEER_CONNECTED);
    tu_wait_sync(m->h);
    m->addr = tu_listen(m->h);
}

static void member_close(member *m)
{
    if (m->h) assert_int_equal(PeerGraphClose(m->h), S_OK);
    m->h = NULL;
}

/* Bob joins Alice (created); Carol joins Alice, then links to Bob. */
static void triangle_join(member *a, member *b, member *c)
{
    HRESULT why;
    int i;
    member_join(b, &bob, L"Bob", a, L"Alice");
    member_join(c, &carol, L"Carol", a, L"Alice");
    if (tu_neighbors(c->h) < 2) assert_int_equal(tu_connect_outcome(c->h, c->e, &b->addr, L"Bob", &why), PEER_CONNECTED);
    for (i = 0; i < 50; i++) tu_pump(1, 5);
    assert_int_equal(tu_neighbors(a->h), 2);
    assert_int_equal(tu_neighbors(b->h), 2);
    assert_int_equal(tu_neighbors(c->h), 2);
}

static void triangle(member *a, member *b, member *c)
{
    member_create(a, &alice, L"Alice");
    triangle_join(a, b, c);
}

/* ------------------------------------------------------------------------- */
/* (a) three members replicate signed records                                */
/* ------------------------------------------------------------------------- */

static void test_three_members_replicate(void **st)
{
    member m[3];
    ecdsa_records ev;
    GUID ids[4];
    static const char *const payloads[4] = {"alice's record", "bob's record", "carol's record", "alice's early record"};
    static const char *const cns[4] = {"Alice", "Bob", "Carol", "Alice"};
    const wchar_t *attrs = L"<attributes><attribute name=\"n\" type=\"string\">caf\u00e9 \U0001F600</attribute></attributes>";
    int i, j;
    (void)st;
    er_init(&ev, &dave);
    /* one record before anyone joins: Bob and Carol get it by synchronization */
    member_create(&m[0], &alice, L"Alice");
    ids[3] = add_record(m[0].h, payloads[3], attrs);
    triangle_join(&m[0], &m[1], &m[2]);
    for (i = 0; i < 3; i++) ids[i] = add_record(m[i].h, payloads[i], i == 1 ? attrs : NULL);
    tu_pump(30, 5);
    for (i = 0; i < 3; i++) {
        assert_int_equal(app_records(m[i].h), 4);
        for (j = 0; j < 4; j++) {
            PPEER_RECORD r = NULL;
            char cn[64];
            assert_int_equal(PeerGraphGetRecord(m[i].h, &ids[j], &r), S_OK);
            assert_memory_equal(r->data.pbData, payloads[j], strlen(payloads[j]));
            /* the security data verifies, names the creator, fits */
            assert_true(r->securityData.cbData > 100 && r->securityData.cbData <= PEER_MAX_SECURITY_DATA);
            assert_true(sd_cn(&r->securityData, cn, sizeof cn));
            assert_string_equal(cn, cns[j]);
            assert_int_equal(validate(&ev, r), S_OK);
            PeerGraphFreeData(r);
        }
        assert_int_equal(rejected(m[i].h), 0);
        assert_int_equal(m[i].er.cRejected, 0);
        assert_true(m[i].er.cSigned >= 2);   /* presence and the record (and Graph Info at Alice) */
        assert_true(m[i].er.cAccepted >= 4); /* the others' presences and records, Graph Info */
        assert_true(m[i].er.cChainVerifications <= 2); /* each other member's chain once */
    }
    /* ten minutes on: the graph's own records (Graph Info, presence,
     * contact, Signature) are refreshed and taken over; all pass */
    {
        unsigned long acc[3];
        for (i = 0; i < 3; i++) acc[i] = m[i].er.cAccepted;
        tu_pump(600, 1000);
        for (i = 0; i < 3; i++) {
            assert_int_equal(m[i].er.cRejected, 0);
            assert_int_equal(rejected(m[i].h), 0);
            assert_true(m[i].er.cAccepted >= acc[i] + 4);
            assert_int_equal(tu_neighbors(m[i].h), 2);
            for (j = 0; j < 4; j++) assert_true(has_record(m[i].h, &ids[j], payloads[j], 1));
        }
    }
    /* Bob updates his record and deletes it: both accepted everywhere */
    {
        PPEER_RECORD r = NULL;
        assert_int_equal(PeerGraphGetRecord(m[1].h, &ids[1], &r), S_OK);
        r->data.cbData = 6;
        r->data.pbData = (PBYTE) "bob v2";
        assert_int_equal(PeerGraphUpdateRecord(m[1].h, r), S_OK);
        PeerGraphFreeData(r);
        tu_pump(10, 5);
        for (i = 0; i < 3; i++) assert_true(has_record(m[i].h, &ids[1], "bob v2", 2));
        assert_int_equal(PeerGraphDeleteRecord(m[1].h, &ids[1], FALSE), S_OK);
        tu_pump(10, 5);
        for (i = 0; i < 3; i++) {
            assert_int_equal(PeerGraphGetRecord(m[i].h, &ids[1], &r), PEER_E_RECORD_NOT_FOUND);
            assert_int_equal(rejected(m[i].h), 0);
        }
    }
    /* Carol leaves and comes back: her database is checked as it loads */
    {
        unsigned long before;
        member_close(&m[2]);
        tu_pump(10, 50);
        ecdsa_records_free(&m[2].er);
        er_init(&m[2].er, &carol);
        ecdsa_records_attach(&m[2].er, &m[2].sec);
        assert_int_equal(PeerGraphOpen(GRAPH, L"Carol", m[2].db, &m[2].sec, 0, NULL, &m[2].h), S_OK);
        before = m[2].er.cAccepted;
        assert_true(before >= 3); /* Alice's record, her own, Bob's tombstone, Graph Info */
        assert_int_equal(m[2].er.cRejected, 0);
        assert_true(has_record(m[2].h, &ids[0], payloads[0], 1));
        assert_true(has_record(m[2].h, &ids[2], payloads[2], 1));
    }
    for (i = 2; i >= 0; i--) member_close(&m[i]);
    tu_pump(10, 300);
    for (i = 0; i < 3; i++) ecdsa_records_free(&m[i].er);
    ecdsa_records_free(&ev);
}

/* ------------------------------------------------------------------------- */
/* (b) Mallory, a member with a valid certificate, forges over her link      */
/* ------------------------------------------------------------------------- */


/* A PEER_RECORD as the test puts it on the wire (MS-PPGRH 2.2.1.9, strings
 * UTF-16LE as PROTOCOL.md R1), independent of the library's encoder. */
typedef struct trec {
    PEER_RECORD r; /* the API view: what the validator sees */
    unsigned char id[16];
} trec;

static void wstr16(msg *m, const wchar_t *w)
{
    size_t n, i;
    if (!w) { p32(m, 0); return; }
    n = wcslen(w);
    p32(m, (unsigned long)(n + 1));
    for (i = 0; i <= n; i++) {
        unsigned u = (unsigned)w[i];
        assert_true(u < 0xD800); /* the test's strings are in the BMP */
        p8(m, u & 0xFF);
        p8(m, u >> 8);
    }
}

static ULONGLONG ft_of(const FILETIME *ft) { return ((ULONGLONG)ft->dwHighDateTime << 32) | ft->dwLowDateTime; }

static void m_flood(msg *m, const PEER_RECORD *r)
{
    unsigned char g[16];
    hdr(m, 0x0B);
    p16(m, 12);
    p16(m, 0);
    tu_guid_wire(g, &r->type);
    memcpy(m->b + m->n, g, 16);
    m->n += 16;
    tu_guid_wire(g, &r->id);
    memcpy(m->b + m->n, g, 16);
    m->n += 16;
    p32(m, r->dwVersion);
    p8(m, 0); p8(m, 0); p8(m, 0);
    p8(m, (unsigned)r->dwFlags);
    wstr16(m, r->pwzCreatorId);
    wstr16(m, r->pwzModifiedById);
    p32(m, r->securityData.cbData);
    if (r->securityData.cbData) memcpy(m->b + m->n, r->securityData.pbData, r->securityData.cbData);
    m->n += r->securityData.cbData;
    p64(m, ft_of(&r->ftCreation));
    p64(m, ft_of(&r->ftExpiration));
    p64(m, ft_of(&r->ftLastModified));
    wstr16(m, GRAPH);
    p16(m, 0x0100);
    p32(m, r->data.cbData);
    memcpy(m->b + m->n, r->data.pbData, r->data.cbData);
    m->n += r->data.cbData;
    wstr16(m, r->pwzAttributes);
    fin(m);
}

/* A new record of `creator` (its ID per [MS-PPGRH] 3.1.7.2: the fold of
 * MD5(creator in UTF-16LE), then 8 unique bytes), version 1, made now. */
static PEER_RECORD new_record(HGRAPH h, const wchar_t *creator, const char *payload)
{
    static unsigned serial;
    unsigned char u16[64], md[16], id[16];
    size_t n = wcslen(creator), i;
    PEER_RECORD r;
    ULONGLONG now = peer_now(h);
    for (i = 0; i < n; i++) { u16[2 * i] = (unsigned char)creator[i]; u16[2 * i + 1] = 0; }
    assert_int_equal(mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_MD5), u16, 2 * n, md), 0);
    for (i = 0; i < 8; i++) id[i] = md[i] ^ md[8 + i];
    for (i = 8; i < 16; i++) id[i] = (unsigned char)(0xA0 + i);
    id[15] = (unsigned char)++serial;
    memset(&r, 0, sizeof r);
    r.dwSize = sizeof r;
    r.type = T_APP;
    r.id.Data1 = ((DWORD)id[0] << 24) | ((DWORD)id[1] << 16) | ((DWORD)id[2] << 8) | id[3];
    r.id.Data2 = (WORD)((id[4] << 8) | id[5]);
    r.id.Data3 = (WORD)((id[6] << 8) | id[7]);
    memcpy(r.id.Data4, id + 8, 8);
    r.dwVersion = 1;
    r.pwzCreatorId = (PWSTR)creator;
    ft_put(&r.ftCreation, now - 10000000ULL);
    r.ftLastModified = r.ftCreation;
    ft_put(&r.ftExpiration, now + 3600ULL * 10000000ULL);
    r.data.cbData = (ULONG)strlen(payload);
    r.data.pbData = (PBYTE)payload;
    return r;
}

/* Mallory FLOODs r to Alice; returns 1 if Alice stored it.  Checks that the
 * link stays, and that Alice's rejection counters moved together. */
static int flood_to(raw_tls *t, member *a, PEER_RECORD *r)
{
    static msg m;
    ULONG before = rejected(a->h);
    unsigned long erBefore = a->er.cRejected;
    PPEER_RECORD got = NULL;
    int stored;
    m_flood(&m, r);
    raw_tls_send_msg(t, &m);
    tu_pump(10, 5);
    assert_int_equal(tu_neighbors(a->h), 2); /* Bob and Mallory: the link stays */
    stored = PeerGraphGetRecord(a->h, &r->id, &got) == S_OK && got->dwVersion == r->dwVersion;
    if (got) PeerGraphFreeData(got);
    assert_int_equal(rejected(a->h) - before, stored ? 0 : 1);
    assert_int_equal(a->er.cRejected - erBefore, stored ? 0 : 1);
    return stored;
}

static void test_forgery_over_the_wire(void **st)
{
    member a, b;
    ecdsa_records hasher;
    raw_tls t;
    msg m;
    rxbuf rx;
    PEER_SOCKET s, l;
    SOCKADDR_IN6 ra;
    ULONGLONG cid;
    PEER_RECORD r;
    GUID real;
    static unsigned char sd[4096], junk[300];
    unsigned i;
    (void)st;
    er_init(&hasher, &dave); /* computes digests the way every member does */
    member_create(&a, &alice, L"Alice");
    member_join(&b, &bob, L"Bob", &a, L"Alice");
    real = add_record(a.h, "alice's real record", NULL);
    tu_pump(10, 5);
    assert_true(has_record(b.h, &real, "alice's real record", 1));

    /* Alice connects to Mallory, a member: certificate for "Mallory" from the
     * graph CA; the TLS handshake completes and WELCOME names Mallory */
    l = raw_node(&ra);
    s = raw_accept_auth(a.h, l, &ra, NULL, &cid, &rx);
    raw_tls_init(&t, s, 1, &ca, &mallory, rx.b + rx.off, rx.n - rx.off);
    assert_int_equal(raw_tls_handshake(&t), 0);
    assert_int_equal(raw_tls_recv_msg(&t, &m), 1);
    assert_int_equal(m.b[5], 2); /* CONNECT */
    m_welcome(&m, 0x4d616c6c6f7279ULL, 0, NULL, 0, "Mallory", 0);
    raw_tls_send_msg(&t, &m);
    tu_pump(5, 5);
    assert_int_equal(tu_neighbors(a.h), 2);

    /* 1. "Alice's" record, signed with Mallory's key and certificate */
    r = new_record(a.h, L"Alice", "forged by mallory");
    r.securityData.pbData = sd;
    r.securityData.cbData = make_sd(sd, &r, &hasher, &mallory, &mallory);
    assert_false(flood_to(&t, &a, &r));
    assert_string_equal(a.er.pszLastRejection, "the certificate does not name the signer");
    /* 2. Alice's certificate, Mallory's signature */
    r.securityData.cbData = make_sd(sd, &r, &hasher, &mallory, &alice);
    assert_false(flood_to(&t, &a, &r));
    assert_string_equal(a.er.pszLastRejection, "the signature does not verify");
    /* 3. an update of Alice's real record, honestly signed by Mallory */
    {
        PPEER_RECORD cur = NULL;
        assert_int_equal(PeerGraphGetRecord(a.h, &real, &cur), S_OK);
        r = *cur;
        r.dwVersion = 2;
        r.pwzModifiedById = (PWSTR)L"Mallory";
        ft_put(&r.ftLastModified, ft_of(&cur->ftLastModified) + 1);
        r.data.cbData = 5;
        r.data.pbData = (PBYTE) "pwned";
        r.securityData.pbData = sd;
        r.securityData.cbData = make_sd(sd, &r, &hasher, &mallory, &mallory);
        assert_false(flood_to(&t, &a, &r));
        assert_string_equal(a.er.pszLastRejection, "changed by a member other than its creator");
        /* ... or claiming Alice made the change */
        r.pwzModifiedById = (PWSTR)L"Alice";
        r.securityData.cbData = make_sd(sd, &r, &hasher, &mallory, &mallory);
        assert_false(flood_to(&t, &a, &r));
        assert_string_equal(a.er.pszLastRejection, "the certificate does not name the signer");
        PeerGraphFreeData(cur);
        assert_true(has_record(a.h, &real, "alice's real record", 1));
    }
    /* 4. Mallory's own record, properly signed: accepted and passed on */
    r = new_record(a.h, L"Mallory", "mallory's own record");
    r.securityData.pbData = sd;
    r.securityData.cbData = make_sd(sd, &r, &hasher, &mallory, &mallory);
    assert_true(flood_to(&t, &a, &r));
    tu_pump(10, 5);
    assert_true(has_record(b.h, &r.id, "mallory's own record", 1));
    /* 5. truncated, garbage, and no security data: rejected, the link stays */
    {
        ULONG full;
        PEER_RECORD bad = new_record(a.h, L"Mallory", "truncated");
        bad.securityData.pbData = sd;
        bad.securityData.cbData = make_sd(sd, &bad, &hasher, &mallory, &mallory);
        full = bad.securityData.cbData;
        bad.securityData.cbData = full / 2;
        assert_false(flood_to(&t, &a, &bad));
        assert_string_equal(a.er.pszLastRejection, "malformed security data");
        bad.securityData.cbData = full - 1;
        assert_false(flood_to(&t, &a, &bad));
        bad = new_record(a.h, L"Mallory", "garbage");
        for (i = 0; i < sizeof junk; i++) junk[i] = (unsigned char)(i * 37 + 11);
        memcpy(junk, "ECRS\001\001", 6);
        bad.securityData.pbData = junk;
        bad.securityData.cbData = sizeof junk;
        assert_false(flood_to(&t, &a, &bad));
        bad = new_record(a.h, L"Mallory", "unsigned");
        assert_false(flood_to(&t, &a, &bad));
        assert_string_equal(a.er.pszLastRejection, "malformed security data");
    }
    /* Bob saw none of the forgeries: Alice passed on only what she kept */
    tu_pump(10, 5);
    assert_int_equal(rejected(b.h), 0);
    assert_int_equal(b.er.cRejected, 0);
    assert_true(has_record(b.h, &real, "alice's real record", 1));
    assert_int_equal(app_records(b.h), 2);
    assert_int_equal(app_records(a.h), 2);
    assert_int_equal(a.er.cRejected, 8);

    raw_tls_free(&t);
    fake_net_raw_close(s);
    fake_net_raw_close(l);
    member_close(&b);
    member_close(&a);
    tu_pump(10, 300);
    ecdsa_records_free(&a.er);
    ecdsa_records_free(&b.er);
    ecdsa_records_free(&hasher);
}

/* ------------------------------------------------------------------------- */
/* (c) a real member updates and deletes another's record                   */
/* ------------------------------------------------------------------------- */

static void test_update_by_other_member(void **st)
{
    member a, b, c;
    GUID id;
    PPEER_RECORD r = NULL;
    ULONG ra, rc;
    (void)st;
    triangle(&a, &b, &c);
    id = add_record(a.h, "alice's", NULL);
    tu_pump(10, 5);
    assert_true(has_record(b.h, &id, "alice's", 1));
    assert_true(has_record(c.h, &id, "alice's", 1));
    ra = rejected(a.h);
    rc = rejected(c.h);

    /* Bob updates it: his node takes it (the API allows it), nobody else */
    assert_int_equal(PeerGraphGetRecord(b.h, &id, &r), S_OK);
    r->data.cbData = 12;
    r->data.pbData = (PBYTE) "bob was here";
    assert_int_equal(PeerGraphUpdateRecord(b.h, r), S_OK);
    PeerGraphFreeData(r);
    tu_pump(10, 5);
    assert_true(has_record(b.h, &id, "bob was here", 2));
    assert_true(has_record(a.h, &id, "alice's", 1));
    assert_true(has_record(c.h, &id, "alice's", 1));
    assert_true(rejected(a.h) > ra);
    assert_true(rejected(c.h) > rc);
    assert_true(a.er.cRejected >= 1);
    assert_true(c.er.cRejected >= 1);
    assert_string_equal(a.er.pszLastRejection, "changed by a member other than its creator");
    assert_string_equal(c.er.pszLastRejection, "changed by a member other than its creator");

    /* Bob deletes it: the same */
    assert_int_equal(PeerGraphDeleteRecord(b.h, &id, FALSE), S_OK);
    tu_pump(10, 5);
    assert_int_equal(PeerGraphGetRecord(b.h, &id, &r), PEER_E_RECORD_NOT_FOUND);
    assert_true(has_record(a.h, &id, "alice's", 1));
    assert_true(has_record(c.h, &id, "alice's", 1));

    /* Alice's own updates still go through */
    assert_int_equal(PeerGraphGetRecord(a.h, &id, &r), S_OK);
    r->data.cbData = 9;
    r->data.pbData = (PBYTE) "alice's 2";
    assert_int_equal(PeerGraphUpdateRecord(a.h, r), S_OK);
    PeerGraphFreeData(r);
    tu_pump(10, 5);
    assert_true(has_record(a.h, &id, "alice's 2", 2));
    assert_true(has_record(c.h, &id, "alice's 2", 2));
    assert_int_equal(b.er.cRejected, 0); /* Bob's (deleted) version 3 beats it there: nothing to check */
    assert_int_equal(tu_neighbors(a.h), 2);

    member_close(&c);
    member_close(&b);
    member_close(&a);
    tu_pump(10, 300);
    ecdsa_records_free(&a.er);
    ecdsa_records_free(&b.er);
    ecdsa_records_free(&c.er);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_canonical_form),
        cmocka_unit_test(test_init_errors),
        cmocka_unit_test(test_policy_and_reasons),
        cmocka_unit_test(test_malformed_security_data),
        cmocka_unit_test_setup_teardown(test_three_members_replicate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_forgery_over_the_wire, setup, teardown),
        cmocka_unit_test_setup_teardown(test_update_by_other_member, setup, teardown),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
