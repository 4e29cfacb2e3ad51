/*
 * ecdsa_records.h - an example record security provider for p2pgraph: every
 * record version is signed with the ECDSA key of the member that publishes
 * it, so that one member cannot forge another member's records.
 *
 * One header, nothing to link but p2pgraph and mbedTLS 2.28 (mbedtls,
 * mbedx509, mbedcrypto; on Windows also bcrypt and advapi32 for the entropy
 * source).  All functions are static.
 *
 * Usage (one ecdsa_records per open graph; it must outlive the graph):
 *
 *     ecdsa_records er;
 *     PEER_TLS_CERT_INFO ci = { sizeof ci, caPem, myCertPem, myKeyPem, NULL };
 *     PEER_SECURITY_INTERFACE sec = { sizeof sec };
 *     if (ecdsa_records_init(&er, L"my-graph", caPem, myCertPem, myKeyPem, NULL) != 0) ...;
 *     sec.pwzPackageName = PEER_SECURITY_PACKAGE_CERT;  (or the PSK package, or NULL)
 *     sec.pbSecurityInfo = (PBYTE)&ci;
 *     sec.cbSecurityInfo = sizeof ci;
 *     ecdsa_records_attach(&er, &sec);   sets pvContext and the three record callbacks
 *     PeerGraphOpen(L"my-graph", L"my-peer-id", L"mydb", &sec, 0, NULL, &h);
 *     ...
 *     PeerGraphClose(h);
 *     printf("%lu signed, %lu accepted, %lu rejected\n", er.cSigned, er.cAccepted, er.cRejected);
 *     ecdsa_records_free(&er);
 *
 * The credentials are those of PEER_SECURITY_PACKAGE_CERT (README, "Securing
 * a graph"): a graph CA, and for each member a certificate signed by it
 * (leaf first, then any intermediate CAs) whose subject CN is the member's
 * peer ID in UTF-8, and its EC private key.  The package fields of the
 * security interface are left to the caller: the same credentials with
 * PEER_SECURITY_PACKAGE_CERT (members authenticated on every link and their
 * records signed), a graph secret with PEER_SECURITY_PACKAGE_PSK, or no link
 * security at all (records are still signed and checked end to end, through
 * any number of relaying members).  pfnAuthFailed, if the caller sets it,
 * receives this ecdsa_records as its pvContext.
 *
 * Security data (PEER_RECORD.securityData) of every record version:
 *
 *   offset  size  field
 *   0       4     magic "ECRS"
 *   4       1     format version, 1
 *   5       1     n, the number of certificates, 1..ECDSA_RECORDS_MAX_CHAIN
 *   6       ...   n times: a 2-byte big-endian length L (1..65535), then L
 *                 bytes of a DER certificate: the signer's first, then the
 *                 intermediate CAs (the graph CA itself is not sent)
 *   ...     2     S, big-endian, 1..MBEDTLS_PK_SIGNATURE_MAX_SIZE
 *   ...     S     the ECDSA signature (DER, as mbedTLS writes it) over the
 *                 SHA-256 digest of the record's canonical form (below)
 *   nothing may follow; the whole is at most PEER_MAX_SECURITY_DATA bytes
 *   (about 380 bytes with one P-256 certificate).
 *
 * Canonical form of a record (every PEER_RECORD field except securityData,
 * the same bytes whatever the platform's wchar_t): a sequence of fields,
 * each a 4-byte big-endian length in bytes followed by that many bytes:
 *
 *   1  the ASCII tag "p2pgraph-ecdsa-records-v1"
 *   2  the graph ID given to ecdsa_records_init (a string; empty when NULL)
 *   3  type, 4  id: 16 bytes each, Data1, Data2, Data3 big-endian, then Data4
 *   5  dwVersion, 6  dwFlags: 4 bytes big-endian each
 *   7  pwzCreatorId, 8  pwzModifiedById, 9  pwzAttributes: strings
 *   10 ftCreation, 11 ftExpiration, 12 ftLastModified: 8 bytes big-endian
 *      each (dwHighDateTime, then dwLowDateTime)
 *   13 data: the bytes as they are
 *
 * A string is its Unicode code points, 4 bytes big-endian each, without the
 * terminating NUL (a UTF-16 surrogate pair, as wchar_t holds it on Windows,
 * is one code point); NULL and "" are both empty.
 *
 * The signer of a record version is pwzModifiedById when set, else
 * pwzCreatorId: the member that published that version.  pfnSecureRecord
 * signs only versions whose signer is this member (the subject CN of its own
 * certificate); any other version is refused with PEER_E_NOT_AUTHORIZED
 * (with the certificate package the library never asks for one: the peer ID
 * must be the CN).
 *
 * Policy of pfnValidateRecord (PEER_E_INVALID_RECORD, or S_OK):
 *   1. the security data has the layout above;
 *   2. the signer's certificate chains to the graph CA and is within its
 *      validity period (mbedTLS checks it against the wall clock), has an EC
 *      key, allows digital signatures if it has a key usage extension, and
 *      has exactly one subject CN, equal to the signer in UTF-8;
 *   3. the signature verifies with that certificate's key;
 *   4. the signer is the record's creator (pwzModifiedById unset or equal
 *      to pwzCreatorId): only its creator may update or delete a record.
 *      This holds for application records and for the graph's internal
 *      Graph Info {00000100-...}, Contact {00000300-...} and Presence
 *      {00000400-...} records, which p2pgraph only ever publishes under
 *      their creator's name, so nobody can rewrite another member's
 *      presence or the Graph Info either.  The one exception is the
 *      Signature record {00000200-0000-0000-0000-000000000000}, which
 *      MS-PPGRH lets any member take over; each of its versions must still
 *      be signed by the member named as its signer.
 * Check 4 comes first: a version that breaks it costs no cryptography.
 *
 * A rejected version is not stored or passed on (the library counts it in
 * PEER_DATABASE_INFO.cRejectedRecords, this provider in cRejected, and
 * pszLastRejection says why); the sender's link stays.  The member that
 * published it keeps it in its own database (records are checked where they
 * are received, not where they are made) and sends it again whenever a
 * neighbor offers it an older version; each copy is rejected again.  An old
 * genuine version replayed by anyone loses to the newer one held, by the
 * graph's ordinary version order.
 *
 * Costs (P-256 with mbedTLS 2.28 on one x86-64 server core): a signature,
 * about 0.7 ms, per version published (presence and other internal records
 * included); a verification, about 1.5 ms, per version received or loaded
 * from the database; and, the first time a certificate is seen, one more
 * verification for its chain.  A node synchronizing 1,000 records thus
 * spends about 1.5 s of CPU on them.  Verified chains are kept in a cache of
 * ECDSA_RECORDS_CACHE entries keyed by the SHA-256 of the certificate bytes
 * (least recently used out; an entry is checked again after
 * ECDSA_RECORDS_CACHE_SECONDS or once a certificate in it has expired).  The
 * callbacks allocate nothing beyond the returned security data and the
 * cache, and call no PeerGraph* function.
 *
 * Limits of the example: no certificate revocation (to exclude a member,
 * re-key the graph under a new CA); a record is only as trustworthy as the
 * CA; the graph ID is bound into the signature only when given to
 * ecdsa_records_init (every member must give the same one); the callbacks
 * are not thread-safe (p2pgraph calls them from the thread that drives it).
 */
#ifndef ECDSA_RECORDS_H
#define ECDSA_RECORDS_H

#include "p2pgraph.h"

#include <mbedtls/version.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/oid.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/x509.h>
#include <mbedtls/x509_crt.h>

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <wchar.h>

#if MBEDTLS_VERSION_NUMBER >= 0x03000000
#error "ecdsa_records.h is written for mbedTLS 2.x (2.28)"
#endif

#define ECDSA_RECORDS_FORMAT        1
#define ECDSA_RECORDS_MAX_CHAIN     4   /* certificates in one record's security data */
#define ECDSA_RECORDS_CACHE         16  /* verified certificate chains kept */
#define ECDSA_RECORDS_CACHE_SECONDS 600 /* a cached chain is verified again after this */
#define ECDSA_RECORDS_MAX_CN        (3 * PEER_MAX_ID_CHARS) /* a peer ID in UTF-8 */

/* ecdsa_records_init errors (mbedTLS's own codes are -1 .. -0x7FFF). */
#define ECDSA_RECORDS_ERR_ARGS         (-0x10001) /* a NULL PEM */
#define ECDSA_RECORDS_ERR_NOT_EC       (-0x10002) /* the key is not an ECDSA key */
#define ECDSA_RECORDS_ERR_KEY_MISMATCH (-0x10003) /* the key is not the certificate's */
#define ECDSA_RECORDS_ERR_NO_CN        (-0x10004) /* the certificate has no (or several) subject CN */
#define ECDSA_RECORDS_ERR_UNTRUSTED    (-0x10005) /* the certificate does not chain to the CA, or has expired */
#define ECDSA_RECORDS_ERR_TOO_BIG      (-0x10006) /* too many or too large certificates */
#define ECDSA_RECORDS_ERR_MEMORY       (-0x10007)

typedef struct ecdsa_records_chain {
    mbedtls_x509_crt *chain;  /* NULL: free slot */
    unsigned char key[32];    /* SHA-256 of the certificate block (count byte and certificates) */
    const unsigned char *cn;  /* the leaf's subject CN, inside chain */
    size_t cnLen;
    time_t verifiedAt;
    unsigned long lastUse;
} ecdsa_records_chain;

typedef struct ecdsa_records {
    /* counters for the application (read them; nothing else to touch) */
    unsigned long cSigned;             /* versions this member signed */
    unsigned long cAccepted;           /* versions received or loaded that passed */
    unsigned long cRejected;           /* ... and that did not */
    unsigned long cChainVerifications; /* certificate chains verified (cache misses) */
    const char *pszLastRejection;      /* why the last rejected version was rejected (static text) */

    /* private */
    int inited;
    mbedtls_x509_crt ca, own;
    mbedtls_pk_context key;
    mbedtls_entropy_context entropy;
    mbedtls_ctr_drbg_context drbg;
    wchar_t *graphId;                  /* NULL: not bound */
    unsigned char *prefix;             /* our security data up to the signature */
    size_t prefixLen;
    unsigned char ownCn[ECDSA_RECORDS_MAX_CN];
    size_t ownCnLen;
    ecdsa_records_chain cache[ECDSA_RECORDS_CACHE];
    unsigned long useClock;
} ecdsa_records;

/* ------------------------------------------------------------------------- */
/* helpers                                                                   */
/* ------------------------------------------------------------------------- */

static const unsigned char ecdsa_records_magic_[4] = {'E', 'C', 'R', 'S'};

/* The next code point of a NUL-terminated wchar_t string (UTF-16 on
 * Windows: a surrogate pair is one code point). */
static inline uint32_t ecdsa_records_next_cp_(const wchar_t **ps)
{
    const wchar_t *s = *ps;
    uint32_t c = (uint32_t)*s++;
#if WCHAR_MAX <= 0xFFFF
    if (c >= 0xD800 && c <= 0xDBFF && (uint32_t)*s >= 0xDC00 && (uint32_t)*s <= 0xDFFF) {
        c = 0x10000 + ((c - 0xD800) << 10) + ((uint32_t)*s - 0xDC00);
        s++;
    }
#endif
    *ps = s;
    return c;
}

/* s in UTF-8 into out (at most max bytes); its length, or (size_t)-1 if it
 * does not fit. */
static inline size_t ecdsa_records_utf8_(const wchar_t *s, unsigned char *out, size_t max)
{
    size_t n = 0;
    while (*s) {
        uint32_t c = ecdsa_records_next_cp_(&s);
        unsigned char b[4];
        size_t k;
        if (c < 0x80) { b[0] = (unsigned char)c; k = 1; }
        else if (c < 0x800) { b[0] = (unsigned char)(0xC0 | (c >> 6)); b[1] = (unsigned char)(0x80 | (c & 0x3F)); k = 2; }
        else if (c < 0x10000) {
            b[0] = (unsigned char)(0xE0 | (c >> 12));
            b[1] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            b[2] = (unsigned char)(0x80 | (c & 0x3F));
            k = 3;
        } else if (c < 0x110000) {
            b[0] = (unsigned char)(0xF0 | (c >> 18));
            b[1] = (unsigned char)(0x80 | ((c >> 12) & 0x3F));
            b[2] = (unsigned char)(0x80 | ((c >> 6) & 0x3F));
            b[3] = (unsigned char)(0x80 | (c & 0x3F));
            k = 4;
        } else
            return (size_t)-1;
        if (k > max - n) return (size_t)-1;
        memcpy(out + n, b, k);
        n += k;
    }
    return n;
}

static inline void ecdsa_records_be32_(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char)(v >> 24);
    p[1] = (unsigned char)(v >> 16);
    p[2] = (unsigned char)(v >> 8);
    p[3] = (unsigned char)v;
}

/* One field of the canonical form: 4-byte length, bytes. */
static inline int ecdsa_records_field_(mbedtls_sha256_context *h, const void *p, uint32_t n)
{
    unsigned char b[4];
    ecdsa_records_be32_(b, n);
    if (mbedtls_sha256_update_ret(h, b, 4) != 0) return -1;
    if (n && (!p || mbedtls_sha256_update_ret(h, (const unsigned char *)p, n) != 0)) return -1;
    return 0;
}

/* A string field: its code points, 4 bytes each. */
static inline int ecdsa_records_str_(mbedtls_sha256_context *h, const wchar_t *s)
{
    unsigned char buf[256];
    const wchar_t *p;
    size_t n = 0, k = 0;
    if (s)
        for (p = s; *p;) {
            ecdsa_records_next_cp_(&p);
            n++;
        }
    if (n > 0x3FFFFFFF) return -1;
    ecdsa_records_be32_(buf, (uint32_t)(4 * n));
    if (mbedtls_sha256_update_ret(h, buf, 4) != 0) return -1;
    if (s)
        for (p = s; *p;) {
            ecdsa_records_be32_(buf + k, ecdsa_records_next_cp_(&p));
            k += 4;
            if (k == sizeof buf) {
                if (mbedtls_sha256_update_ret(h, buf, k) != 0) return -1;
                k = 0;
            }
        }
    return k && mbedtls_sha256_update_ret(h, buf, k) != 0 ? -1 : 0;
}

static inline void ecdsa_records_guid_(unsigned char out[16], const GUID *g)
{
    ecdsa_records_be32_(out, (uint32_t)g->Data1);
    out[4] = (unsigned char)(g->Data2 >> 8);
    out[5] = (unsigned char)g->Data2;
    out[6] = (unsigned char)(g->Data3 >> 8);
    out[7] = (unsigned char)g->Data3;
    memcpy(out + 8, g->Data4, 8);
}

static inline int ecdsa_records_time_(mbedtls_sha256_context *h, const FILETIME *ft)
{
    unsigned char b[8];
    ecdsa_records_be32_(b, (uint32_t)ft->dwHighDateTime);
    ecdsa_records_be32_(b + 4, (uint32_t)ft->dwLowDateTime);
    return ecdsa_records_field_(h, b, 8);
}

/*
 * ecdsa_records_record_hash: SHA-256 of the canonical form of r (see the top
 * of this file) as this context signs and checks it (the graph ID it was
 * given is part of it).  0, or -1 (r NULL, data with a NULL pointer).
 */
static inline int ecdsa_records_record_hash(const ecdsa_records *er, const PEER_RECORD *r, unsigned char out[32])
{
    static const char tag[] = "p2pgraph-ecdsa-records-v1";
    mbedtls_sha256_context h;
    unsigned char b[16];
    int e = 0;
    if (!er || !r) return -1;
    mbedtls_sha256_init(&h);
    e |= mbedtls_sha256_starts_ret(&h, 0);
    e |= ecdsa_records_field_(&h, tag, (uint32_t)(sizeof tag - 1));
    e |= ecdsa_records_str_(&h, er->graphId);
    ecdsa_records_guid_(b, &r->type);
    e |= ecdsa_records_field_(&h, b, 16);
    ecdsa_records_guid_(b, &r->id);
    e |= ecdsa_records_field_(&h, b, 16);
    ecdsa_records_be32_(b, (uint32_t)r->dwVersion);
    e |= ecdsa_records_field_(&h, b, 4);
    ecdsa_records_be32_(b, (uint32_t)r->dwFlags);
    e |= ecdsa_records_field_(&h, b, 4);
    e |= ecdsa_records_str_(&h, r->pwzCreatorId);
    e |= ecdsa_records_str_(&h, r->pwzModifiedById);
    e |= ecdsa_records_str_(&h, r->pwzAttributes);
    e |= ecdsa_records_time_(&h, &r->ftCreation);
    e |= ecdsa_records_time_(&h, &r->ftExpiration);
    e |= ecdsa_records_time_(&h, &r->ftLastModified);
    e |= ecdsa_records_field_(&h, r->data.pbData, (uint32_t)r->data.cbData);
    e |= mbedtls_sha256_finish_ret(&h, out);
    mbedtls_sha256_free(&h);
    return e ? -1 : 0;
}

/* The one subject CN of crt (0 if it has none, or several, or it is empty). */
static inline int ecdsa_records_cn_(const mbedtls_x509_crt *crt, const unsigned char **p, size_t *n)
{
    const mbedtls_x509_name *nm;
    int found = 0;
    for (nm = &crt->subject; nm; nm = nm->next)
        if (nm->oid.p && MBEDTLS_OID_CMP(MBEDTLS_OID_AT_CN, &nm->oid) == 0) {
            *p = nm->val.p;
            *n = nm->val.len;
            found++;
        }
    return found == 1 && *n > 0;
}

/* The signer of a version: the modifier when set, else the creator. */
static inline const wchar_t *ecdsa_records_signer_(const PEER_RECORD *r)
{
    return r->pwzModifiedById && r->pwzModifiedById[0] ? r->pwzModifiedById : r->pwzCreatorId;
}

/* The graph's Signature record type {00000200-0000-0000-0000-000000000000}. */
static inline int ecdsa_records_is_signature_type_(const GUID *t)
{
    static const unsigned char z[8] = {0};
    return t->Data1 == 0x200 && t->Data2 == 0 && t->Data3 == 0 && !memcmp(t->Data4, z, 8);
}

/* Parsed security data. */
typedef struct ecdsa_records_parsed_ {
    const unsigned char *block; /* count byte and certificates */
    size_t blockLen;
    unsigned nCerts;
    const unsigned char *sig;
    size_t sigLen;
} ecdsa_records_parsed_;

static inline int ecdsa_records_parse_(const unsigned char *p, size_t n, ecdsa_records_parsed_ *o)
{
    size_t i = 6, k;
    unsigned c;
    if (!p || n < 6 || n > PEER_MAX_SECURITY_DATA) return 0;
    if (memcmp(p, ecdsa_records_magic_, 4) || p[4] != ECDSA_RECORDS_FORMAT) return 0;
    o->nCerts = p[5];
    if (o->nCerts < 1 || o->nCerts > ECDSA_RECORDS_MAX_CHAIN) return 0;
    for (c = 0; c < o->nCerts; c++) {
        if (n - i < 2) return 0;
        k = ((size_t)p[i] << 8) | p[i + 1];
        i += 2;
        if (k < 1 || k > n - i) return 0;
        i += k;
    }
    o->block = p + 5;
    o->blockLen = i - 5;
    if (n - i < 2) return 0;
    k = ((size_t)p[i] << 8) | p[i + 1];
    i += 2;
    if (k < 1 || k > MBEDTLS_PK_SIGNATURE_MAX_SIZE || k != n - i) return 0;
    o->sig = p + i;
    o->sigLen = k;
    return 1;
}

static inline void ecdsa_records_drop_(ecdsa_records_chain *e)
{
    if (e->chain) {
        mbedtls_x509_crt_free(e->chain);
        free(e->chain);
    }
    memset(e, 0, sizeof *e);
}

/* A cached chain still good to use without verifying it again. */
static inline int ecdsa_records_fresh_(const ecdsa_records_chain *e, time_t now)
{
    const mbedtls_x509_crt *c;
    if (now == (time_t)-1 || now < e->verifiedAt || difftime(now, e->verifiedAt) >= ECDSA_RECORDS_CACHE_SECONDS) return 0;
    for (c = e->chain; c && c->raw.len; c = c->next)
        if (mbedtls_x509_time_is_past(&c->valid_to) || mbedtls_x509_time_is_future(&c->valid_from)) return 0;
    return 1;
}

/*
 * The verified chain of the certificate block of a record whose signer is
 * signer (UTF-8): from the cache, or parsed, checked and verified against the
 * CA, then cached.  NULL with *why set when it does not qualify.
 */
static inline const ecdsa_records_chain *ecdsa_records_chain_(ecdsa_records *er, const ecdsa_records_parsed_ *sd,
                                                              const unsigned char *signer, size_t signerLen,
                                                              const char **why)
{
    unsigned char key[32];
    time_t now = time(NULL);
    ecdsa_records_chain *slot = NULL;
    mbedtls_x509_crt *chain;
    const unsigned char *cn = NULL;
    size_t i, off, cnLen = 0;
    uint32_t flags = 0;
    unsigned c;
    if (mbedtls_sha256_ret(sd->block, sd->blockLen, key, 0) != 0) { *why = "hash failure"; return NULL; }
    for (i = 0; i < ECDSA_RECORDS_CACHE; i++) {
        ecdsa_records_chain *e = &er->cache[i];
        if (!e->chain || memcmp(e->key, key, 32)) continue;
        if (!ecdsa_records_fresh_(e, now)) {
            ecdsa_records_drop_(e); /* verify it again below */
            break;
        }
        e->lastUse = ++er->useClock;
        if (e->cnLen != signerLen || memcmp(e->cn, signer, signerLen)) {
            *why = "the certificate does not name the signer";
            return NULL;
        }
        return e;
    }
    /* not cached: parse, check the name (cheap) before the chain (costly) */
    if (!(chain = (mbedtls_x509_crt *)malloc(sizeof *chain))) { *why = "out of memory"; return NULL; }
    mbedtls_x509_crt_init(chain);
    for (c = 0, off = 1; c < sd->nCerts; c++) {
        size_t k = ((size_t)sd->block[off] << 8) | sd->block[off + 1];
        if (mbedtls_x509_crt_parse_der(chain, sd->block + off + 2, k) != 0) { *why = "a certificate does not parse"; goto fail; }
        off += 2 + k;
    }
    if (!ecdsa_records_cn_(chain, &cn, &cnLen)) { *why = "the certificate has no single subject CN"; goto fail; }
    if (cnLen != signerLen || memcmp(cn, signer, signerLen)) { *why = "the certificate does not name the signer"; goto fail; }
    if (!mbedtls_pk_can_do(&chain->pk, MBEDTLS_PK_ECDSA)) { *why = "the certificate's key is not an ECDSA key"; goto fail; }
#if defined(MBEDTLS_X509_CHECK_KEY_USAGE)
    if (mbedtls_x509_crt_check_key_usage(chain, MBEDTLS_X509_KU_DIGITAL_SIGNATURE) != 0) {
        *why = "the certificate does not allow signatures";
        goto fail;
    }
#endif
    er->cChainVerifications++;
    if (mbedtls_x509_crt_verify(chain, &er->ca, NULL, NULL, &flags, NULL, NULL) != 0) {
        *why = (flags & (MBEDTLS_X509_BADCERT_EXPIRED | MBEDTLS_X509_BADCERT_FUTURE)) && !(flags & MBEDTLS_X509_BADCERT_NOT_TRUSTED)
                   ? "the certificate is outside its validity period"
                   : "the certificate is not signed by the graph CA";
        goto fail;
    }
    /* cache it: a free slot, else the least recently used */
    for (i = 0; i < ECDSA_RECORDS_CACHE; i++) {
        ecdsa_records_chain *e = &er->cache[i];
        if (!e->chain) { slot = e; break; }
        if (!slot || e->lastUse < slot->lastUse) slot = e;
    }
    ecdsa_records_drop_(slot);
    slot->chain = chain;
    memcpy(slot->key, key, 32);
    slot->cn = cn;
    slot->cnLen = cnLen;
    slot->verifiedAt = now;
    slot->lastUse = ++er->useClock;
    return slot;
fail:
    mbedtls_x509_crt_free(chain);
    free(chain);
    return NULL;
}

/* The whole check of pfnValidateRecord: NULL if r passes, else why not. */
static inline const char *ecdsa_records_check_(ecdsa_records *er, const PEER_RECORD *r)
{
    ecdsa_records_parsed_ sd;
    const ecdsa_records_chain *e;
    const wchar_t *signer;
    unsigned char u8[ECDSA_RECORDS_MAX_CN], hash[32];
    const char *why = NULL;
    size_t n;
    if (!r || !r->pwzCreatorId || !r->pwzCreatorId[0]) return "no creator";
    signer = ecdsa_records_signer_(r);
    /* policy first: it needs no cryptography */
    if (!ecdsa_records_is_signature_type_(&r->type) && wcscmp(signer, r->pwzCreatorId) != 0)
        return "changed by a member other than its creator";
    if (!ecdsa_records_parse_(r->securityData.pbData, r->securityData.cbData, &sd)) return "malformed security data";
    if ((n = ecdsa_records_utf8_(signer, u8, sizeof u8)) == (size_t)-1) return "the signer's ID is too long";
    if (!(e = ecdsa_records_chain_(er, &sd, u8, n, &why))) return why;
    if (ecdsa_records_record_hash(er, r, hash) != 0) return "the record cannot be hashed";
    if (mbedtls_pk_verify(&e->chain->pk, MBEDTLS_MD_SHA256, hash, sizeof hash, sd.sig, sd.sigLen) != 0)
        return "the signature does not verify";
    return NULL;
}

/* ------------------------------------------------------------------------- */
/* the record callbacks                                                      */
/* ------------------------------------------------------------------------- */

/* pfnSecureRecord: security data = our certificates and our signature. */
static inline HRESULT CALLBACK ecdsa_records_secure(HGRAPH hGraph, PVOID pvContext, PPEER_RECORD pRecord,
                                                    PEER_RECORD_CHANGE_TYPE changeType, PPEER_DATA *ppSecurityData)
{
    ecdsa_records *er = (ecdsa_records *)pvContext;
    unsigned char hash[32], sig[MBEDTLS_PK_SIGNATURE_MAX_SIZE], u8[ECDSA_RECORDS_MAX_CN];
    size_t sigLen = 0, n;
    const wchar_t *signer;
    PPEER_DATA d;
    (void)hGraph;
    (void)changeType;
    if (!ppSecurityData) return E_INVALIDARG;
    *ppSecurityData = NULL;
    if (!er || !er->inited || !pRecord || !pRecord->pwzCreatorId) return E_INVALIDARG;
    signer = ecdsa_records_signer_(pRecord);
    n = ecdsa_records_utf8_(signer, u8, sizeof u8);
    if (n != er->ownCnLen || memcmp(u8, er->ownCn, n)) return PEER_E_NOT_AUTHORIZED; /* not ours to sign */
    if (ecdsa_records_record_hash(er, pRecord, hash) != 0) return E_INVALIDARG;
    if (mbedtls_pk_sign(&er->key, MBEDTLS_MD_SHA256, hash, sizeof hash, sig, &sigLen, mbedtls_ctr_drbg_random,
                        &er->drbg) != 0 ||
        sigLen < 1 || sigLen > sizeof sig)
        return E_FAIL;
    if (!(d = (PPEER_DATA)malloc(sizeof *d + er->prefixLen + 2 + sigLen))) return E_OUTOFMEMORY;
    d->pbData = (PBYTE)(d + 1);
    d->cbData = (ULONG)(er->prefixLen + 2 + sigLen);
    memcpy(d->pbData, er->prefix, er->prefixLen);
    d->pbData[er->prefixLen] = (BYTE)(sigLen >> 8);
    d->pbData[er->prefixLen + 1] = (BYTE)sigLen;
    memcpy(d->pbData + er->prefixLen + 2, sig, sigLen);
    *ppSecurityData = d;
    er->cSigned++;
    return S_OK;
}

/* pfnFreeSecurityData: what ecdsa_records_secure returned. */
static inline HRESULT CALLBACK ecdsa_records_free_data(HGRAPH hGraph, PVOID pvContext, PPEER_DATA pSecurityData)
{
    (void)hGraph;
    (void)pvContext;
    free(pSecurityData);
    return S_OK;
}

/* pfnValidateRecord: S_OK or PEER_E_INVALID_RECORD (never deferred). */
static inline HRESULT CALLBACK ecdsa_records_validate(HGRAPH hGraph, PVOID pvContext, PPEER_RECORD pRecord,
                                                      PEER_RECORD_CHANGE_TYPE changeType)
{
    ecdsa_records *er = (ecdsa_records *)pvContext;
    const char *why;
    (void)hGraph;
    (void)changeType;
    if (!er || !er->inited) return PEER_E_INVALID_RECORD;
    if ((why = ecdsa_records_check_(er, pRecord)) != NULL) {
        er->cRejected++;
        er->pszLastRejection = why;
        return PEER_E_INVALID_RECORD;
    }
    er->cAccepted++;
    return S_OK;
}

/* ------------------------------------------------------------------------- */
/* setup                                                                     */
/* ------------------------------------------------------------------------- */

/* Frees everything ecdsa_records_init made (the counters are zeroed too). */
static inline void ecdsa_records_free(ecdsa_records *er)
{
    size_t i;
    if (!er || !er->inited) return;
    for (i = 0; i < ECDSA_RECORDS_CACHE; i++) ecdsa_records_drop_(&er->cache[i]);
    mbedtls_x509_crt_free(&er->ca);
    mbedtls_x509_crt_free(&er->own);
    mbedtls_pk_free(&er->key);
    mbedtls_ctr_drbg_free(&er->drbg);
    mbedtls_entropy_free(&er->entropy);
    free(er->graphId);
    free(er->prefix);
    memset(er, 0, sizeof *er);
}

/*
 * ecdsa_records_init: this member's credentials, as PEM text (NUL-terminated):
 * caPem the graph CA certificate(s), certPem this member's certificate (then
 * any intermediates), keyPem its EC private key (encrypted with keyPassword
 * when that is not NULL).  pwzGraphId: the graph ID, bound into every
 * signature (NULL: not bound; every member must do the same).
 * Returns 0; a negative mbedTLS error (a PEM that does not parse, a wrong
 * password); or ECDSA_RECORDS_ERR_*: the key is not an EC key or not the
 * certificate's, the certificate has no single subject CN, does not chain to
 * the CA or has expired, or the chain does not fit the security data.
 * On failure nothing is held (ecdsa_records_free is harmless).
 */
static inline int ecdsa_records_init(ecdsa_records *er, PCWSTR pwzGraphId, const char *caPem, const char *certPem,
                                     const char *keyPem, const char *keyPassword)
{
    static const char pers[] = "p2pgraph ecdsa_records";
    const mbedtls_x509_crt *c;
    const unsigned char *cn = NULL;
    size_t n = 0, total = 6, cnLen = 0;
    uint32_t flags = 0;
    int rc;
    memset(er, 0, sizeof *er);
    mbedtls_x509_crt_init(&er->ca);
    mbedtls_x509_crt_init(&er->own);
    mbedtls_pk_init(&er->key);
    mbedtls_entropy_init(&er->entropy);
    mbedtls_ctr_drbg_init(&er->drbg);
    er->inited = 1;
    if (!caPem || !certPem || !keyPem) { rc = ECDSA_RECORDS_ERR_ARGS; goto fail; }
    if (pwzGraphId) {
        size_t k = wcslen(pwzGraphId) + 1;
        if (!(er->graphId = (wchar_t *)malloc(k * sizeof(wchar_t)))) { rc = ECDSA_RECORDS_ERR_MEMORY; goto fail; }
        memcpy(er->graphId, pwzGraphId, k * sizeof(wchar_t));
    }
    if ((rc = mbedtls_x509_crt_parse(&er->ca, (const unsigned char *)caPem, strlen(caPem) + 1)) != 0 ||
        (rc = mbedtls_x509_crt_parse(&er->own, (const unsigned char *)certPem, strlen(certPem) + 1)) != 0 ||
        (rc = mbedtls_pk_parse_key(&er->key, (const unsigned char *)keyPem, strlen(keyPem) + 1,
                                   (const unsigned char *)keyPassword, keyPassword ? strlen(keyPassword) : 0)) != 0) {
        if (rc > 0) rc = MBEDTLS_ERR_X509_INVALID_FORMAT; /* some certificates of a list did not parse */
        goto fail;
    }
    if (!mbedtls_pk_can_do(&er->key, MBEDTLS_PK_ECDSA) || !mbedtls_pk_can_do(&er->own.pk, MBEDTLS_PK_ECDSA)) {
        rc = ECDSA_RECORDS_ERR_NOT_EC;
        goto fail;
    }
    if (mbedtls_pk_check_pair(&er->own.pk, &er->key) != 0) { rc = ECDSA_RECORDS_ERR_KEY_MISMATCH; goto fail; }
    if (!ecdsa_records_cn_(&er->own, &cn, &cnLen) || cnLen > sizeof er->ownCn) { rc = ECDSA_RECORDS_ERR_NO_CN; goto fail; }
    memcpy(er->ownCn, cn, cnLen);
    er->ownCnLen = cnLen;
    if (mbedtls_x509_crt_verify(&er->own, &er->ca, NULL, NULL, &flags, NULL, NULL) != 0) {
        rc = ECDSA_RECORDS_ERR_UNTRUSTED;
        goto fail;
    }
    /* the security data up to the signature: magic, format, certificates */
    for (c = &er->own; c && c->raw.len; c = c->next) {
        if (++n > ECDSA_RECORDS_MAX_CHAIN || c->raw.len > 0xFFFF) { rc = ECDSA_RECORDS_ERR_TOO_BIG; goto fail; }
        total += 2 + c->raw.len;
    }
    if (total + 2 + MBEDTLS_PK_SIGNATURE_MAX_SIZE > PEER_MAX_SECURITY_DATA) { rc = ECDSA_RECORDS_ERR_TOO_BIG; goto fail; }
    if (!(er->prefix = (unsigned char *)malloc(total))) { rc = ECDSA_RECORDS_ERR_MEMORY; goto fail; }
    memcpy(er->prefix, ecdsa_records_magic_, 4);
    er->prefix[4] = ECDSA_RECORDS_FORMAT;
    er->prefix[5] = (unsigned char)n;
    er->prefixLen = 6;
    for (c = &er->own; c && c->raw.len; c = c->next) {
        er->prefix[er->prefixLen] = (unsigned char)(c->raw.len >> 8);
        er->prefix[er->prefixLen + 1] = (unsigned char)c->raw.len;
        memcpy(er->prefix + er->prefixLen + 2, c->raw.p, c->raw.len);
        er->prefixLen += 2 + c->raw.len;
    }
    if ((rc = mbedtls_ctr_drbg_seed(&er->drbg, mbedtls_entropy_func, &er->entropy, (const unsigned char *)pers,
                                    sizeof pers - 1)) != 0)
        goto fail;
    return 0;
fail:
    ecdsa_records_free(er);
    return rc;
}

/* Sets psi's pvContext, pfnSecureRecord, pfnValidateRecord and
 * pfnFreeSecurityData; the package fields and pfnAuthFailed are the
 * caller's. */
static inline void ecdsa_records_attach(ecdsa_records *er, PEER_SECURITY_INTERFACE *psi)
{
    psi->pvContext = er;
    psi->pfnSecureRecord = ecdsa_records_secure;
    psi->pfnValidateRecord = ecdsa_records_validate;
    psi->pfnFreeSecurityData = ecdsa_records_free_data;
}

#endif /* ECDSA_RECORDS_H */
