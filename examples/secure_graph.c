/*
 * secure_graph.c - a graph whose members sign their records (ecdsa_records.h).
 *
 * Three members, Alice, Bob and Carol, run in this one process and talk over
 * real TCP connections on [::1]:
 *
 *   - the program makes a graph CA and a certificate for each member (EC
 *     P-256, subject CN = the member's peer ID) with mbedTLS at run time; a
 *     real deployment makes them once with openssl, as README ("Securing a
 *     graph") shows, and gives each member its own key only;
 *   - every member opens the graph with PEER_SECURITY_PACKAGE_CERT (TLS on
 *     every link, both ends authenticated by the CA) and the record callbacks
 *     of ecdsa_records.h (every record version signed with its publisher's
 *     key and checked by every member that receives it);
 *   - Alice creates the graph; Bob joins her; Carol joins her and links to
 *     Bob; each publishes a record and every member ends up holding all
 *     three, each signature checked;
 *   - then Carol updates Alice's record.  The API lets her, and her own node
 *     keeps her version, but it is signed by Carol, not by the record's
 *     creator: Alice and Bob reject it and keep Alice's version.
 *
 * Build (after `make build/libp2pgraph.a`):
 *   cc -std=c99 -Wall -Wextra -Werror -D_POSIX_C_SOURCE=200809L -D_DEFAULT_SOURCE -O2 -g -I. -Ibuild/gen \
 *      examples/secure_graph.c build/libp2pgraph.a -o build/ex_secure_graph -lmbedtls -lmbedx509 -lmbedcrypto -lm
 *
 * Exit status: 0 when everything happened as described; 1 (with a message)
 * otherwise, or if it takes longer than TIME_LIMIT_MS.
 */
#include "p2pgraph.h"
#include "examples/ecdsa_records.h"

#include <mbedtls/ecp.h>
#include <mbedtls/x509_crt.h>

#include <stdio.h>
#include <string.h>
#include <time.h>
#ifdef _WIN32
#  include <direct.h>
#  define make_dir(p) _mkdir(p)
#else
#  include <sys/stat.h>
#  define make_dir(p) mkdir(p, 0700)
#endif

#define GRAPH_ID L"secure-graph"
#define DB_NAME  L"secure"
#define N 3
#define TIME_LIMIT_MS 10000

static const GUID NOTE_TYPE = {0x5ec0e0c5, 0x7032, 0x7067, {'n', 'o', 't', 'e', 0, 0, 0, 1}};

typedef struct member {
    const char *name;
    const wchar_t *peerId;
    char key[1024], crt[1024];   /* its credentials, PEM */
    PEER_TLS_CERT_INFO ci;
    PEER_SECURITY_INTERFACE sec;
    ecdsa_records er;
    HGRAPH h;
    HPEEREVENT ev;
    PEER_ADDRESS addr;           /* [::1]:port once listening */
    int listening, links;        /* links: its own connections that came up */
    DWORD status;
    GUID rec;                    /* the record it published */
} member;

static member m[N];
static const char *const names[N] = {"Alice", "Bob", "Carol"};
static const wchar_t *const peerIds[N] = {L"Alice", L"Bob", L"Carol"};
static char caKey[1024], caCrt[1024];
static ULONGLONG t0;

static unsigned long elapsed(void) { return (unsigned long)(PeerGraphGetTickCount() - t0); }

/* ---- credentials: what `openssl req` / `openssl x509 -req` would make --------- */

static mbedtls_entropy_context entropy;
static mbedtls_ctr_drbg_context drbg;

/* "YYYYMMDDhhmmss" (UTC) for now + seconds. */
static void x509_time(char out[16], long seconds)
{
    time_t t = time(NULL) + seconds;
    strftime(out, 16, "%Y%m%d%H%M%S", gmtime(&t));
}

/* A P-256 key and a certificate "CN=<cn>" signed by the CA (cn NULL: the CA
 * itself, self-signed), valid from an hour ago for a day. */
static int make_cred(const char *cn, char *keyPem, char *crtPem, size_t max)
{
    mbedtls_pk_context key, issuerKey;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    char subject[64], from[16], to[16];
    static int nextSerial = 1;
    int rc;
    mbedtls_pk_init(&key);
    mbedtls_pk_init(&issuerKey);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    snprintf(subject, sizeof subject, "CN=%s", cn ? cn : "secure-graph CA");
    x509_time(from, -3600);
    x509_time(to, 86400);
    if ((rc = mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY))) != 0 ||
        (rc = mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key), mbedtls_ctr_drbg_random, &drbg)) != 0 ||
        (rc = mbedtls_pk_write_key_pem(&key, (unsigned char *)keyPem, max)) != 0)
        goto done;
    if (cn && (rc = mbedtls_pk_parse_key(&issuerKey, (const unsigned char *)caKey, strlen(caKey) + 1, NULL, 0)) != 0)
        goto done;
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &key);
    mbedtls_x509write_crt_set_issuer_key(&w, cn ? &issuerKey : &key);
    if ((rc = mbedtls_mpi_lset(&serial, nextSerial++)) != 0 ||
        (rc = mbedtls_x509write_crt_set_subject_name(&w, subject)) != 0 ||
        (rc = mbedtls_x509write_crt_set_issuer_name(&w, "CN=secure-graph CA")) != 0 ||
        (rc = mbedtls_x509write_crt_set_serial(&w, &serial)) != 0 ||
        (rc = mbedtls_x509write_crt_set_validity(&w, from, to)) != 0 ||
        (rc = mbedtls_x509write_crt_set_basic_constraints(&w, cn ? 0 : 1, -1)) != 0)
        goto done;
    rc = mbedtls_x509write_crt_pem(&w, (unsigned char *)crtPem, max, mbedtls_ctr_drbg_random, &drbg);
done:
    mbedtls_mpi_free(&serial);
    mbedtls_x509write_crt_free(&w);
    mbedtls_pk_free(&issuerKey);
    mbedtls_pk_free(&key);
    if (rc) printf("secure_graph: making the credentials of %s failed (mbedTLS -0x%04x)\n", cn ? cn : "the CA", -rc);
    return rc == 0;
}

/* ---- the library ----------------------------------------------------------------- */

static const char *hr_name(HRESULT hr)
{
    static char other[16];
    switch (hr) {
    case S_OK: return "S_OK";
    case PEER_S_GRAPH_DATA_CREATED: return "PEER_S_GRAPH_DATA_CREATED";
    case PEER_E_INVALID_RECORD: return "PEER_E_INVALID_RECORD";
    case PEER_E_NOT_AUTHORIZED: return "PEER_E_NOT_AUTHORIZED";
    case PEER_E_CONNECTION_NOT_AUTHENTICATED: return "PEER_E_CONNECTION_NOT_AUTHENTICATED";
    case PEER_E_CERTIFICATE_NOT_TRUSTED: return "PEER_E_CERTIFICATE_NOT_TRUSTED";
    case PEER_E_INVALID_PEER_NAME: return "PEER_E_INVALID_PEER_NAME";
    case PEER_E_RECORD_NOT_FOUND: return "PEER_E_RECORD_NOT_FOUND";
    default:
        snprintf(other, sizeof other, "0x%08lx", (unsigned long)(DWORD)hr);
        return other;
    }
}

static void on_event(member *n, const PEER_GRAPH_EVENT_DATA *d)
{
    switch (d->eventType) {
    case PEER_GRAPH_EVENT_STATUS_CHANGED:
        n->status = (DWORD)d->dwStatus;
        break;
    case PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION: {
        const PEER_EVENT_CONNECTION_CHANGE_DATA *c = &d->connectionChangeData;
        if (c->status == PEER_CONNECTED) {
            n->links++;
            printf("[%5lu ms] %s: TLS link up (certificate checked by the graph CA)\n", elapsed(), n->name);
        } else if (c->status == PEER_CONNECTION_FAILED)
            printf("[%5lu ms] %s: connection failed: %s\n", elapsed(), n->name, hr_name(c->hrConnectionFailedReason));
        break;
    }
    case PEER_GRAPH_EVENT_RECORD_CHANGED:
        if (!memcmp(&d->recordChangeData.recordType, &NOTE_TYPE, sizeof NOTE_TYPE)) {
            PPEER_RECORD r = NULL;
            if (PeerGraphGetRecord(n->h, &d->recordChangeData.recordId, &r) == S_OK) {
                printf("[%5lu ms] %s: record %s: \"%.*s\" (version %lu by %ls)\n", elapsed(), n->name,
                       d->recordChangeData.changeType == PEER_RECORD_ADDED ? "added" : "updated", (int)r->data.cbData,
                       (const char *)r->data.pbData, (unsigned long)r->dwVersion,
                       r->pwzModifiedById ? r->pwzModifiedById : r->pwzCreatorId);
                PeerGraphFreeData(r);
            }
        }
        break;
    default:
        break;
    }
}

static void drain(void)
{
    int i;
    for (i = 0; i < N; i++) {
        PPEER_GRAPH_EVENT_DATA d;
        if (!m[i].h) continue;
        while (PeerGraphGetEventData(m[i].ev, &d) == S_OK) {
            on_event(&m[i], d);
            PeerGraphFreeData(d);
        }
    }
}

/* Runs the library until done() holds, or gives up at the time limit. */
static int run_until(int (*done)(void), const char *what)
{
    while (!done()) {
        if (PeerGraphGetTickCount() - t0 > TIME_LIMIT_MS) {
            printf("secure_graph: gave up waiting for %s\n", what);
            return 0;
        }
        if (FAILED(PeerGraphRunOnce(20))) { printf("secure_graph: PeerGraphRunOnce failed\n"); return 0; }
        drain();
    }
    return 1;
}

static int listen_on_loopback(member *n)
{
    PPEER_NODE_INFO info = NULL;
    HRESULT hr = PeerGraphListen(n->h, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0);
    if (FAILED(hr) || FAILED(PeerGraphGetNodeInfo(n->h, 0, &info)) || info->cAddresses < 1) {
        printf("secure_graph: %s cannot listen: %s\n", n->name, hr_name(hr));
        if (info) PeerGraphFreeData(info);
        return 0;
    }
    n->addr = info->pAddresses[0];
    PeerGraphFreeData(info);
    memset(&n->addr.sin6.sin6_addr, 0, sizeof n->addr.sin6.sin6_addr);
    n->addr.sin6.sin6_addr.s6_addr[15] = 1; /* [::1] */
    n->listening = 1;
    return 1;
}

static int connect_to(member *from, member *to)
{
    ULONGLONG id;
    HRESULT hr = PeerGraphConnect(from->h, to->peerId, &to->addr, &id);
    if (FAILED(hr)) { printf("secure_graph: %s cannot connect: %s\n", from->name, hr_name(hr)); return 0; }
    printf("[%5lu ms] %s connects to %s\n", elapsed(), from->name, to->name);
    return 1;
}

static int synced(member *n) { return (n->status & PEER_GRAPH_STATUS_SYNCHRONIZED) != 0; }
static int bob_ready(void) { return m[1].links >= 1 && synced(&m[1]); }
static int carol_ready(void) { return m[2].links >= 1 && synced(&m[2]); }
static int triangle(void) { return m[2].links >= 2; }

static ULONG notes(member *n)
{
    HPEERENUM en;
    ULONG count = 0;
    if (FAILED(PeerGraphEnumRecords(n->h, &NOTE_TYPE, NULL, &en))) return 0;
    PeerGraphGetItemCount(en, &count);
    PeerGraphEndEnumeration(en);
    return count;
}
static int all_hold_all(void)
{
    int i;
    for (i = 0; i < N; i++)
        if (notes(&m[i]) < N) return 0;
    return 1;
}

static unsigned long rejectedBefore[N];
static int forgery_seen(void) { return m[0].er.cRejected > rejectedBefore[0] && m[1].er.cRejected > rejectedBefore[1]; }

/* Prints n's copy of id; returns its version (0: none). */
static DWORD show(member *n, const GUID *id)
{
    PPEER_RECORD r = NULL;
    DWORD v;
    if (PeerGraphGetRecord(n->h, id, &r) != S_OK) {
        printf("  %-5s holds no such record\n", n->name);
        return 0;
    }
    printf("  %-5s holds \"%.*s\" (version %lu, by %ls, %lu bytes of signature data)\n", n->name, (int)r->data.cbData,
           (const char *)r->data.pbData, (unsigned long)r->dwVersion,
           r->pwzModifiedById ? r->pwzModifiedById : r->pwzCreatorId, (unsigned long)r->securityData.cbData);
    v = r->dwVersion;
    PeerGraphFreeData(r);
    return v;
}

static int publish(member *n)
{
    char text[64];
    PEER_RECORD rec;
    FILETIME utc, pt;
    ULONGLONG exp, u = ((ULONGLONG)time(NULL) + 11644473600ULL) * 10000000ULL; /* now, FILETIME units */
    HRESULT hr;
    snprintf(text, sizeof text, "hello from %s", n->name);
    memset(&rec, 0, sizeof rec);
    rec.dwSize = sizeof rec;
    rec.type = NOTE_TYPE;
    rec.data.cbData = (ULONG)strlen(text);
    rec.data.pbData = (PBYTE)text;
    utc.dwLowDateTime = (DWORD)u;
    utc.dwHighDateTime = (DWORD)(u >> 32);
    PeerGraphUniversalTimeToPeerTime(n->h, &utc, &pt);
    exp = (((ULONGLONG)pt.dwHighDateTime << 32) | pt.dwLowDateTime) + 3600ULL * 10000000ULL; /* an hour */
    rec.ftExpiration.dwLowDateTime = (DWORD)exp;
    rec.ftExpiration.dwHighDateTime = (DWORD)(exp >> 32);
    hr = PeerGraphAddRecord(n->h, &rec, &n->rec);
    if (FAILED(hr)) { printf("secure_graph: %s: PeerGraphAddRecord: %s\n", n->name, hr_name(hr)); return 0; }
    printf("[%5lu ms] %s publishes \"%s\" (signed with the publisher's key)\n", elapsed(), n->name, text);
    return 1;
}

static int open_member(member *n, int create)
{
    PEER_GRAPH_EVENT_REGISTRATION reg[3] = {{PEER_GRAPH_EVENT_STATUS_CHANGED, NULL},
                                            {PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, NULL},
                                            {PEER_GRAPH_EVENT_RECORD_CHANGED, NULL}};
    HRESULT hr;
    int rc = ecdsa_records_init(&n->er, GRAPH_ID, caCrt, n->crt, n->key, NULL);
    if (rc != 0) { printf("secure_graph: ecdsa_records_init(%s): %d\n", n->name, rc); return 0; }
    n->ci.dwSize = sizeof n->ci;
    n->ci.pszCaPem = caCrt;
    n->ci.pszCertPem = n->crt;
    n->ci.pszKeyPem = n->key;
    n->sec.dwSize = sizeof n->sec;
    n->sec.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_CERT; /* TLS links, certificates from the CA */
    n->sec.pbSecurityInfo = (PBYTE)&n->ci;
    n->sec.cbSecurityInfo = sizeof n->ci;
    ecdsa_records_attach(&n->er, &n->sec); /* and signed records */
    PeerGraphDelete(GRAPH_ID, n->peerId, DB_NAME); /* a database of an earlier run */
    if (create) {
        PEER_GRAPH_PROPERTIES props;
        memset(&props, 0, sizeof props);
        props.dwSize = sizeof props;
        props.pwzGraphId = (PWSTR)GRAPH_ID;
        props.pwzCreatorId = (PWSTR)n->peerId;
        props.pwzFriendlyName = (PWSTR)L"signed records";
        hr = PeerGraphCreate(&props, DB_NAME, &n->sec, &n->h);
    } else
        hr = PeerGraphOpen(GRAPH_ID, n->peerId, DB_NAME, &n->sec, 0, NULL, &n->h);
    if (FAILED(hr)) { printf("secure_graph: %s cannot open the graph: %s\n", n->name, hr_name(hr)); return 0; }
    if (FAILED(PeerGraphRegisterEvent(n->h, NULL, 3, reg, &n->ev))) return 0;
    printf("[%5lu ms] %s %s the graph\n", elapsed(), n->name, create ? "creates" : "opens");
    return 1;
}

int main(void)
{
    PEER_VERSION_DATA version;
    member *alice = &m[0], *bob = &m[1], *carol = &m[2];
    int i, ok = 0;
    static const char pers[] = "secure_graph example";

    printf("secure_graph: Alice, Bob and Carol form a graph over TLS on [::1]; every record is signed by its\n"
           "publisher (ecdsa_records.h).  Then Carol rewrites Alice's record, and the others refuse it.\n\n");

    for (i = 0; i < N; i++) {
        m[i].name = names[i];
        m[i].peerId = peerIds[i];
    }
    mbedtls_entropy_init(&entropy);
    mbedtls_ctr_drbg_init(&drbg);
    if (mbedtls_ctr_drbg_seed(&drbg, mbedtls_entropy_func, &entropy, (const unsigned char *)pers, sizeof pers - 1) != 0 ||
        !make_cred(NULL, caKey, caCrt, sizeof caCrt))
        goto fail_early;
    for (i = 0; i < N; i++)
        if (!make_cred(m[i].name, m[i].key, m[i].crt, sizeof m[i].crt)) goto fail_early;
    printf("made a graph CA and certificates for Alice, Bob and Carol (EC P-256; CN = peer ID)\n");

    if (FAILED(PeerGraphStartup(PEER_GRAPH_VERSION, &version))) { printf("secure_graph: PeerGraphStartup failed\n"); goto fail_early; }
    t0 = PeerGraphGetTickCount();
    make_dir("build");
    make_dir("build/ex-db");
    PeerGraphSetDatabaseDirectory(L"build/ex-db");

    /* the graph: Alice creates it; Bob joins; Carol joins and links to Bob */
    if (!open_member(alice, 1) || !listen_on_loopback(alice)) goto done;
    if (!open_member(bob, 0) || !connect_to(bob, alice) || !run_until(bob_ready, "Bob to join")) goto done;
    if (!listen_on_loopback(bob)) goto done;
    if (!open_member(carol, 0) || !connect_to(carol, alice) || !run_until(carol_ready, "Carol to join")) goto done;
    if (!connect_to(carol, bob) || !run_until(triangle, "Carol's link to Bob")) goto done;

    /* each publishes a record; everyone gets all three, each signature checked */
    printf("\n");
    for (i = 0; i < N; i++)
        if (!publish(&m[i])) goto done;
    if (!run_until(all_hold_all, "the records to spread")) goto done;
    printf("\n[%5lu ms] every member holds every record; Alice's, as each member holds it:\n", elapsed());
    for (i = 0; i < N; i++) show(&m[i], &alice->rec);

    /* Carol rewrites Alice's record */
    {
        PPEER_RECORD r = NULL;
        static const char text[] = "Alice owes Carol 1000 euros";
        HRESULT hr;
        for (i = 0; i < N; i++) rejectedBefore[i] = m[i].er.cRejected;
        if (PeerGraphGetRecord(carol->h, &alice->rec, &r) != S_OK) goto done;
        r->data.cbData = (ULONG)strlen(text);
        r->data.pbData = (PBYTE)text;
        hr = PeerGraphUpdateRecord(carol->h, r);
        PeerGraphFreeData(r);
        printf("\n[%5lu ms] Carol updates Alice's record: PeerGraphUpdateRecord returns %s\n", elapsed(), hr_name(hr));
        if (hr != S_OK) goto done;
        if (!run_until(forgery_seen, "Alice and Bob to see Carol's version")) goto done;
        for (i = 0; i < 10; i++) { PeerGraphRunOnce(5); drain(); } /* let anything else arrive */
        printf("[%5lu ms] Alice rejected it: %s; Bob rejected it: %s\n", elapsed(),
               alice->er.pszLastRejection, bob->er.pszLastRejection);
        printf("Alice's record now:\n");
        ok = show(alice, &alice->rec) == 1 && show(bob, &alice->rec) == 1 && show(carol, &alice->rec) == 2;
    }

    printf("\n  member  signed  accepted  rejected  chains verified  cRejectedRecords\n");
    for (i = 0; i < N; i++) {
        PEER_DATABASE_INFO di;
        memset(&di, 0, sizeof di);
        di.dwSize = sizeof di;
        PeerGraphGetDatabaseInfo(m[i].h, &di);
        printf("  %-6s  %6lu  %8lu  %8lu  %15lu  %16lu\n", m[i].name, m[i].er.cSigned, m[i].er.cAccepted,
               m[i].er.cRejected, m[i].er.cChainVerifications, (unsigned long)di.cRejectedRecords);
    }
    if (ok)
        printf("\nsummary: 3 members exchanged signed records over TLS; Carol's rewrite of Alice's record stayed on "
               "Carol's node: Alice and Bob kept Alice's version (%lu ms in all).\n", elapsed());
done:
    for (i = N - 1; i >= 0; i--)
        if (m[i].h) PeerGraphClose(m[i].h);
    for (i = 0; i < N; i++) PeerGraphDelete(GRAPH_ID, m[i].peerId, DB_NAME);
    PeerGraphShutdown();
    for (i = 0; i < N; i++) ecdsa_records_free(&m[i].er); /* after the graphs that use them */
    PeerGraphSetDatabaseDirectory(NULL);
fail_early:
    mbedtls_ctr_drbg_free(&drbg);
    mbedtls_entropy_free(&entropy);
    if (!ok) printf("secure_graph: FAILED\n");
    return ok ? 0 : 1;
}
