/*
 * bench/tls.c - the cost of link security (PROTOCOL.md section 6): p2pgraph's
 * TLS links (p2pgraph-tls-psk, p2pgraph-tls-cert) next to its plain links and
 * next to mbedTLS on its own, all measured in the same run.
 *
 * The credentials are made at run time with mbedTLS (a graph CA and one EC
 * P-256 certificate per peer ID, subject CN = the peer ID); the PSK graphs
 * share one secret.  Every TLS figure has two neighbours: the same thing over
 * plain links, and mbedTLS doing the same work without p2pgraph.
 *
 *   0. machine  mbedTLS on one core, each figure the best of 5 short trials
 *               (a ceiling): the AEAD of ChaCha20-Poly1305 (the suite both
 *               providers negotiate) and of AES-128-GCM, encrypt-and-tag and
 *               authenticated decryption of 16 KiB records (TLS's largest)
 *               with a 13-byte AAD, as a TLS record layer calls them; and the
 *               record layer: mbedtls_ssl_write + mbedtls_ssl_read of one
 *               record on a handshaken TLS-PSK pair in memory, at 64 B and at
 *               16 KiB, giving a cost per record and a cost per byte.
 *   1. handshakes  one process, one thread, one poll() loop over [::1]: a
 *               listening graph (PeerGraphCreate + PeerGraphListen, registered
 *               for DIRECT_CONNECTION) and a connecting graph (PeerGraphOpen)
 *               that, one at a time, calls PeerGraphOpenDirectConnection,
 *               waits for PEER_CONNECTED and closes the link with
 *               PeerGraphCloseDirectConnection.  A direct connection goes
 *               through the whole handshake of a neighbor link (TCP, AUTH_INFO,
 *               TLS, CONNECT / WELCOME) without the synchronization after it.
 *               The clock runs from the first open to the listener's last
 *               DISCONNECTED event, so every close is paid for inside it.  Both
 *               ends live in this process: the rate and the CPU per handshake
 *               are those of both sides together.
 *               raw mbedTLS: a client and a server mbedtls_ssl_context in the
 *               same thread over two in-memory byte queues, with the
 *               library's settings (TLS 1.2 only, the same suite lists,
 *               curves X25519 then P-256 then P-384, CTR_DRBG, client session
 *               tickets off; PSK: a server PSK callback that checks the
 *               identity; certificates: the same P-256 CA and node
 *               certificates, VERIFY_REQUIRED both ways).  Each handshake
 *               sets up two fresh contexts and frees them, as the library
 *               does per connection.  Every row runs in 5 rounds, the rows
 *               interleaved, and the samples are pooled: a slow spell of the
 *               machine falls on all of them alike.
 *   2. flooding  N = 10 graphs in one process over [::1] in a "ladder": node
 *               i connects to nodes i-1 and i-2 (degrees 2..4; the library's
 *               maintenance timers set to an hour so the links stay the
 *               planned ones).  M records of 256 B are added at node 0, in
 *               two patterns: "burst", a service step every 16 adds, and
 *               "paced", a service step after every add (messages then share
 *               TLS records less).  The clock and the process CPU (getrusage)
 *               run from the first PeerGraphAddRecord until every other node
 *               has popped RECORD_CHANGED (ADDED) for every record.  A
 *               counting socket shim sums the bytes sent and parses the TLS
 *               streams, counting the application-data records and their
 *               lengths; at part 0's per-record and per-byte costs that is
 *               the "record layer floor": what mbedTLS alone needs to encrypt
 *               and decrypt the same records.  Repeated (--reps), modes
 *               interleaved; the run with the median CPU is reported.
 *   3. SendData  two processes (fork), one per end: the receiver creates the
 *               graph and listens, the sender opens it and makes a direct
 *               connection, then PeerGraphSendData of 64 KiB messages (on
 *               PEER_E_SEND_QUEUE_FULL it waits for SEND_READY).  The clock
 *               runs from the first send to the receiver holding the last
 *               message; the receiver checks count, size, order and a
 *               checksum.  raw mbedTLS TLS: the same two processes with
 *               blocking sockets over [::1] (TCP_NODELAY) and mbedTLS alone,
 *               TLS-PSK with ChaCha20-Poly1305, 64 KiB messages written with
 *               mbedtls_ssl_write (16 KiB records) and read with
 *               mbedtls_ssl_read.  Repeated (--reps), median reported.
 *   4. memory   K direct connections between two graphs of this process,
 *               idle and established; heap growth (glibc mallinfo2: uordblks
 *               + hblkhd) from before the first to after the last (plus 300
 *               ms of servicing), per link endpoint (2K endpoints).  raw
 *               mbedTLS: K handshaken client/server context pairs kept alive.
 *
 * Usage: bench_tls [--quick] [--reps N] [--batch N] [--only LIST]
 *   --quick      small counts (about 10 s) instead of the defaults: handshakes
 *                200 plain / 100 PSK / 30 certificate (2000 / 1000 / 300),
 *                flooded records 200 (2000), SendData 32 MB plain and 16 MB
 *                TLS (512 / 256), memory K = 20 (50); a default run takes
 *                about a minute
 *   --reps N     repetitions of parts 2 and 3 (default 3; --quick 1)
 *   --batch N    part 2: only this pattern, N records added between two
 *                service steps (default: both 16 and 1)
 *   --only LIST  comma-separated subset of hs,flood,data,mem
 * Databases go to a mkdtemp directory under $TMPDIR (or /tmp), removed at the
 * end.  Exits 0 when every measurement completed (a missed target is a
 * result, not a failure), 1 when something failed, 2 on a setup error.
 */
#include "p2pgraph.h"

#ifdef _WIN32
#include <stdio.h>
int main(void)
{
    fprintf(stderr, "bench_tls: POSIX only (fork, poll)\n");
    return 0;
}
#else

#include <arpa/inet.h>
#include <dirent.h>
#include <math.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdarg.h>
#include <sys/wait.h>
#include <mbedtls/chachapoly.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/ecp.h>
#include <mbedtls/entropy.h>
#include <mbedtls/error.h>
#include <mbedtls/gcm.h>
#include <mbedtls/net_sockets.h>
#include <mbedtls/pk.h>
#include <mbedtls/ssl.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if defined(__GLIBC__)
#include <malloc.h>
#if __GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 33)
#define HAVE_MALLINFO2 1
#endif
#endif

#define BENCH_NAME "bench_tls"
#include "bench_util.h"

#define GRAPH_ID L"bench-tls"
#define SECRET "bench-tls graph secret"
#define CA_CN "bench-tls graph CA"
#define REC_PAYLOAD 256
#define MSG_SIZE 65536
#define AEAD_RECORD 16384
#define FLOOD_NODES 10
#define TARGET_CPU 1.25
#define TARGET_THRU 0.7
#define CHILD_LIMIT_S 120
#define PARENT_WAIT_MS 150000
#define STEP_LIMIT_NS (30LL * 1000000000LL)
#define HOUR_MS 3600000u
#define HS_ROUNDS 5
#define BEST_OF 5 /* machine ceilings: the best of this many short trials */

enum { M_PLAIN, M_PSK, M_CERT, M_COUNT };
static const char *const mname[M_COUNT] = {"plain", "TLS-PSK", "TLS-cert"};

static const GUID REC_TYPE = {0x7e5b0c11, 0x4a2d, 0x4f0e, {0x8b, 0x31, 0x06, 0xd2, 0x9a, 0x55, 0x17, 0xc4}};
static const GUID DATA_TYPE = {0x7e5b0c12, 0x4a2d, 0x4f0e, {0x8b, 0x31, 0x06, 0xd2, 0x9a, 0x55, 0x17, 0xc4}};

static host_poll hp;
static int g_batch = 16; /* flooding: adds between two service steps (set by main) */
static char g_dir[512];
static pid_t g_main_pid;

/* ------------------------------------------------------------------------- */
/* small helpers                                                             */
/* ------------------------------------------------------------------------- */

/* A measurement failed: says why and ends the run with status 1. */
static void fail(const char *fmt, ...)
{
    va_list ap;
    fflush(stdout);
    fprintf(stderr, BENCH_NAME ": FAILED: ");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n");
    exit(1);
}

static long long cpu_now_ns(void)
{
    struct rusage u;
    getrusage(RUSAGE_SELF, &u);
    return ((long long)u.ru_utime.tv_sec + u.ru_stime.tv_sec) * 1000000000LL +
           ((long long)u.ru_utime.tv_usec + u.ru_stime.tv_usec) * 1000LL;
}

static long long heap_now(void)
{
#ifdef HAVE_MALLINFO2
    struct mallinfo2 mi = mallinfo2();
    return (long long)(mi.uordblks + mi.hblkhd);
#else
    return -1;
#endif
}

static void wname(wchar_t *w, size_t n, const char *s) { swprintf(w, n, L"%s", s); }

static double median_d(double *v, int n)
{
    if (n <= 0) return 0;
    sort_d(v, n);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

static double ratio(double a, double b) { return b > 0 ? a / b : 0; }
static const char *pass(int c) { return c ? "PASS" : "MISS"; }

static void clean_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *de;
    char path[1200];
    if (d) {
        while ((de = readdir(d)) != NULL) {
            if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
            snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void at_exit_clean(void)
{
    if (getpid() == g_main_pid && g_dir[0]) clean_dir(g_dir);
}

/* Counting socket shim: the platform's, with the bytes sent summed and,
 * while g_parse_tls is set (a secured flooding run), the TLS records on every
 * socket counted: an outbound stream is one clear frame (AUTH_INFO: 2-byte
 * length + payload) and then TLS records, an inbound one TLS records only
 * (PROTOCOL.md 6, T1). */
typedef struct sock_parse {
    int clear_frame;          /* still inside the leading clear frame */
    unsigned fh;              /* bytes of its 2-byte length seen */
    uint8_t fhb[2];
    unsigned long frame_left;
    uint8_t hdr[5];           /* TLS record header */
    unsigned hlen;
    unsigned long rec_left;
} sock_parse;

static PEER_NET_SHIM g_plat;
static unsigned long long g_wire, g_tls_recs, g_tls_rec_bytes; /* application-data records and their lengths */
static unsigned long long g_sends, g_recvs; /* successful pfnSend/pfnSendV and pfnRecv calls */
static int g_parse_tls;
static sock_parse *g_sp;
static size_t g_sp_cap;

static sock_parse *sp_get(PEER_SOCKET s)
{
    if (s < 0) return NULL;
    if ((size_t)s >= g_sp_cap) {
        size_t nc = g_sp_cap ? g_sp_cap : 256;
        sock_parse *n;
        while (nc <= (size_t)s) nc *= 2;
        n = (sock_parse *)realloc(g_sp, nc * sizeof *n);
        if (!n) {
            fprintf(stderr, BENCH_NAME ": out of memory\n");
            exit(2);
        }
        memset(n + g_sp_cap, 0, (nc - g_sp_cap) * sizeof *n);
        g_sp = n;
        g_sp_cap = nc;
    }
    return &g_sp[s];
}

static void sp_reset(PEER_SOCKET s, int outbound)
{
    sock_parse *st = sp_get(s);
    if (!st) return;
    memset(st, 0, sizeof *st);
    st->clear_frame = outbound;
}

static void sp_feed(PEER_SOCKET s, const uint8_t *p, size_t n)
{
    sock_parse *st;
    if (!g_parse_tls || !(st = sp_get(s))) return;
    while (n) {
        size_t k;
        if (st->clear_frame) {
            if (st->fh < 2) {
                st->fhb[st->fh++] = *p++;
                n--;
                if (st->fh == 2) {
                    st->frame_left = ((unsigned long)st->fhb[0] << 8) | st->fhb[1];
                    if (!st->frame_left) st->clear_frame = 0;
                }
                continue;
            }
            k = n < st->frame_left ? n : st->frame_left;
            p += k;
            n -= k;
            st->frame_left -= k;
            if (!st->frame_left) st->clear_frame = 0;
            continue;
        }
        if (st->hlen < 5) {
            st->hdr[st->hlen++] = *p++;
            n--;
            if (st->hlen == 5) {
                st->rec_left = ((unsigned long)st->hdr[3] << 8) | st->hdr[4];
                if (st->hdr[0] == 23) {
                    g_tls_recs++;
                    g_tls_rec_bytes += st->rec_left;
                }
                if (!st->rec_left) st->hlen = 0;
            }
            continue;
        }
        k = n < st->rec_left ? n : st->rec_left;
        p += k;
        n -= k;
        st->rec_left -= k;
        if (!st->rec_left) st->hlen = 0;
    }
}

static long cs_send(PVOID ctx, PEER_SOCKET s, const void *pv, ULONG cb)
{
    long k = g_plat.pfnSend(ctx, s, pv, cb);
    if (k > 0) {
        g_sends++;
        g_wire += (unsigned long long)k;
        sp_feed(s, (const uint8_t *)pv, (size_t)k);
    }
    return k;
}

static long cs_sendv(PVOID ctx, PEER_SOCKET s, const PEER_NET_BUF *b, ULONG n)
{
    long k = g_plat.pfnSendV(ctx, s, b, n);
    if (k > 0) {
        size_t left = (size_t)k;
        ULONG i;
        g_sends++;
        g_wire += (unsigned long long)k;
        for (i = 0; i < n && left; i++) {
            size_t c = b[i].cb < left ? b[i].cb : left;
            sp_feed(s, (const uint8_t *)b[i].pv, c);
            left -= c;
        }
    }
    return k;
}

static long cs_recv(PVOID ctx, PEER_SOCKET s, void *pv, ULONG cb)
{
    long k = g_plat.pfnRecv(ctx, s, pv, cb);
    if (k > 0) g_recvs++;
    return k;
}

static HRESULT cs_connect(PVOID ctx, const SOCKADDR_IN6 *to, PEER_SOCKET *ps)
{
    HRESULT hr = g_plat.pfnConnect(ctx, to, ps);
    if (SUCCEEDED(hr)) sp_reset(*ps, 1);
    return hr;
}

static HRESULT cs_connect_from(PVOID ctx, const SOCKADDR_IN6 *from, const SOCKADDR_IN6 *to, PEER_SOCKET *ps)
{
    HRESULT hr = g_plat.pfnConnectFrom(ctx, from, to, ps);
    if (SUCCEEDED(hr)) sp_reset(*ps, 1);
    return hr;
}

static HRESULT cs_accept(PVOID ctx, PEER_SOCKET l, PEER_SOCKET *ps, SOCKADDR_IN6 *remote)
{
    HRESULT hr = g_plat.pfnAccept(ctx, l, ps, remote);
    if (hr == S_OK) sp_reset(*ps, 0);
    return hr;
}

static void install_counting_shim(void)
{
    PEER_NET_SHIM s;
    HRESULT hr;
    g_plat = *PeerGraphGetPlatformNetShim();
    s = g_plat;
    s.pfnSend = cs_send;
    s.pfnConnect = cs_connect;
    s.pfnAccept = cs_accept;
    s.pfnRecv = cs_recv;
    if (g_plat.pfnSendV) s.pfnSendV = cs_sendv;
    if (g_plat.pfnConnectFrom) s.pfnConnectFrom = cs_connect_from;
    if (FAILED(hr = PeerGraphSetNetShim(&s))) die_hr("PeerGraphSetNetShim", hr);
}

static void lib_start(void)
{
    PEER_VERSION_DATA vd;
    HRESULT hr;
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) die_hr("PeerGraphStartup", hr);
    if (setup_db_dir(g_dir) != 0) exit(2);
}

static void lib_stop(void)
{
    host_run_ms(&hp, 20); /* DISCONNECTs and close_notify out */
    PeerGraphShutdown();
    host_poll_free(&hp);
}

/* ------------------------------------------------------------------------- */
/* credentials: a graph CA and one P-256 certificate per peer ID             */
/* ------------------------------------------------------------------------- */

typedef struct cred {
    char cn[32];
    char key[1024]; /* PEM */
    char crt[2048]; /* PEM */
    mbedtls_pk_context pk;
} cred;

#define MAX_CREDS 24
static cred g_ca, g_creds[MAX_CREDS];
static int g_ncreds;
static mbedtls_entropy_context g_ent;
static mbedtls_ctr_drbg_context g_drbg;

static void drbg_seed(mbedtls_entropy_context *e, mbedtls_ctr_drbg_context *d)
{
    mbedtls_entropy_init(e);
    mbedtls_ctr_drbg_init(d);
    if (mbedtls_ctr_drbg_seed(d, mbedtls_entropy_func, e, (const unsigned char *)"bench_tls", 9) != 0) {
        fprintf(stderr, BENCH_NAME ": mbedtls_ctr_drbg_seed failed\n");
        exit(2);
    }
}

/* A certificate for cn signed by issuer (NULL: a self-signed CA). */
static void cred_make(cred *c, const char *cn, const cred *issuer)
{
    static int serial_no = 1;
    mbedtls_x509write_cert w;
    mbedtls_mpi serial;
    char subj[64], iss[64];
    int bad;
    snprintf(c->cn, sizeof c->cn, "%s", cn);
    mbedtls_pk_init(&c->pk);
    bad = mbedtls_pk_setup(&c->pk, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) ||
          mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(c->pk), mbedtls_ctr_drbg_random, &g_drbg) ||
          mbedtls_pk_write_key_pem(&c->pk, (unsigned char *)c->key, sizeof c->key);
    snprintf(subj, sizeof subj, "CN=%s", cn);
    snprintf(iss, sizeof iss, "CN=%s", issuer ? issuer->cn : cn);
    mbedtls_x509write_crt_init(&w);
    mbedtls_mpi_init(&serial);
    bad = bad || mbedtls_mpi_lset(&serial, serial_no++);
    mbedtls_x509write_crt_set_version(&w, MBEDTLS_X509_CRT_VERSION_3);
    mbedtls_x509write_crt_set_md_alg(&w, MBEDTLS_MD_SHA256);
    mbedtls_x509write_crt_set_subject_key(&w, &c->pk);
    mbedtls_x509write_crt_set_issuer_key(&w, issuer ? (mbedtls_pk_context *)&issuer->pk : &c->pk);
    bad = bad || mbedtls_x509write_crt_set_subject_name(&w, subj) || mbedtls_x509write_crt_set_issuer_name(&w, iss) ||
          mbedtls_x509write_crt_set_serial(&w, &serial) ||
          mbedtls_x509write_crt_set_validity(&w, "20200101000000", "20991231235959") ||
          mbedtls_x509write_crt_set_basic_constraints(&w, issuer ? 0 : 1, -1) ||
          mbedtls_x509write_crt_pem(&w, (unsigned char *)c->crt, sizeof c->crt, mbedtls_ctr_drbg_random, &g_drbg);
    mbedtls_x509write_crt_free(&w);
    mbedtls_mpi_free(&serial);
    if (bad) {
        fprintf(stderr, BENCH_NAME ": could not make a certificate for %s\n", cn);
        exit(2);
    }
}

static const cred *cred_for(const char *cn)
{
    int i;
    for (i = 0; i < g_ncreds; i++)
        if (!strcmp(g_creds[i].cn, cn)) return &g_creds[i];
    if (g_ncreds == MAX_CREDS) {
        fprintf(stderr, BENCH_NAME ": too many certificates\n");
        exit(2);
    }
    cred_make(&g_creds[g_ncreds], cn, &g_ca);
    return &g_creds[g_ncreds++];
}

/* The security interface of mode for peer (NULL: plain). */
typedef struct secbox {
    PEER_SECURITY_INTERFACE si;
    PEER_TLS_CERT_INFO ci;
} secbox;

static PEER_SECURITY_INTERFACE *sec_for(int mode, const char *peer, secbox *b)
{
    memset(b, 0, sizeof *b);
    if (mode == M_PLAIN) return NULL;
    b->si.dwSize = sizeof b->si;
    if (mode == M_PSK) {
        b->si.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_PSK;
        b->si.cbSecurityInfo = (ULONG)strlen(SECRET);
        b->si.pbSecurityInfo = (PBYTE)SECRET;
    } else {
        const cred *c = cred_for(peer);
        b->ci.dwSize = sizeof b->ci;
        b->ci.pszCaPem = g_ca.crt;
        b->ci.pszCertPem = c->crt;
        b->ci.pszKeyPem = c->key;
        b->si.pwzPackageName = (PWSTR)PEER_SECURITY_PACKAGE_CERT;
        b->si.cbSecurityInfo = sizeof b->ci;
        b->si.pbSecurityInfo = (PBYTE)&b->ci;
    }
    return &b->si;
}

/* PeerGraphCreate (creator = peer) or PeerGraphOpen of a fresh database. */
static HGRAPH graph_new(int create, const char *peer, int mode)
{
    wchar_t wp[64], wd[64];
    char db[64];
    secbox b;
    HGRAPH h = NULL;
    HRESULT hr;
    snprintf(db, sizeof db, "tls-%s", peer);
    wname(wp, 64, peer);
    wname(wd, 64, db);
    PeerGraphDelete(GRAPH_ID, wp, wd);
    if (create) {
        PEER_GRAPH_PROPERTIES p;
        memset(&p, 0, sizeof p);
        p.dwSize = sizeof p;
        p.dwScope = PEER_GRAPH_SCOPE_LOOPBACK;
        p.pwzGraphId = (PWSTR)GRAPH_ID;
        p.pwzCreatorId = wp;
        p.cPresenceMax = (ULONG)-1;
        if (FAILED(hr = PeerGraphCreate(&p, wd, sec_for(mode, peer, &b), &h))) die_hr("PeerGraphCreate", hr);
    } else {
        hr = PeerGraphOpen(GRAPH_ID, wp, wd, sec_for(mode, peer, &b), 0, NULL, &h);
        if (hr != PEER_S_GRAPH_DATA_CREATED) die_hr("PeerGraphOpen", hr);
    }
    return h;
}

static void graph_gone(HGRAPH h, const char *peer)
{
    wchar_t wp[64], wd[64];
    char db[64];
    snprintf(db, sizeof db, "tls-%s", peer);
    wname(wp, 64, peer);
    wname(wd, 64, db);
    PeerGraphClose(h);
    PeerGraphDelete(GRAPH_ID, wp, wd);
}

static HPEEREVENT reg_events(HGRAPH h, PEER_GRAPH_EVENT_TYPE a, PEER_GRAPH_EVENT_TYPE b, const GUID *typeA)
{
    PEER_GRAPH_EVENT_REGISTRATION r[2];
    HPEEREVENT ev = NULL;
    HRESULT hr;
    r[0].eventType = a;
    r[0].pType = (GUID *)typeA;
    r[1].eventType = b;
    r[1].pType = NULL;
    if (FAILED(hr = PeerGraphRegisterEvent(h, NULL, b ? 2 : 1, r, &ev))) die_hr("PeerGraphRegisterEvent", hr);
    return ev;
}

static PEER_ADDRESS graph_listen(HGRAPH h)
{
    PPEER_NODE_INFO ni = NULL;
    PEER_ADDRESS a;
    HRESULT hr;
    if (FAILED(hr = PeerGraphListen(h, PEER_GRAPH_SCOPE_LOOPBACK, 0, 0))) die_hr("PeerGraphListen", hr);
    if (FAILED(hr = PeerGraphGetNodeInfo(h, 0, &ni)) || ni->cAddresses < 1) die_hr("PeerGraphGetNodeInfo", hr);
    a = ni->pAddresses[0];
    PeerGraphFreeData(ni);
    memset(&a.sin6.sin6_addr, 0, sizeof a.sin6.sin6_addr);
    a.sin6.sin6_addr.s6_addr[15] = 1;
    return a;
}

/* ------------------------------------------------------------------------- */
/* raw mbedTLS: configurations as the library's (sec_setup in p2pgraph.c)    */
/* ------------------------------------------------------------------------- */

static const int psk_suites[] = {MBEDTLS_TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256, 0};
static const int cert_suites[] = {MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
                                  MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
                                  MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, 0};
static const mbedtls_ecp_group_id tls_curves[] = {MBEDTLS_ECP_DP_CURVE25519, MBEDTLS_ECP_DP_SECP256R1,
                                                  MBEDTLS_ECP_DP_SECP384R1, MBEDTLS_ECP_DP_NONE};

typedef struct rawtls {
    int mode;
    mbedtls_ssl_config conf[2]; /* client, server */
    mbedtls_x509_crt ca, crt[2];
    mbedtls_pk_context key[2];
    unsigned char psk[32];
    const char *identity;
    mbedtls_entropy_context ent;
    mbedtls_ctr_drbg_context drbg;
} rawtls;

static int raw_psk_cb(void *p, mbedtls_ssl_context *ssl, const unsigned char *id, size_t n)
{
    rawtls *t = (rawtls *)p;
    if (n != strlen(t->identity) || memcmp(id, t->identity, n) != 0) return -1;
    return mbedtls_ssl_set_hs_psk(ssl, t->psk, sizeof t->psk);
}

/* psk: the 32-byte key both ends use; names: the client's and the server's
 * certificate (mode M_CERT). */
static void rawtls_init(rawtls *t, int mode, const unsigned char *psk, const char *client, const char *server)
{
    int i, bad = 0;
    const char *names[2];
    memset(t, 0, sizeof *t);
    t->mode = mode;
    t->identity = client;
    names[0] = client;
    names[1] = server;
    memcpy(t->psk, psk, sizeof t->psk);
    drbg_seed(&t->ent, &t->drbg);
    mbedtls_x509_crt_init(&t->ca);
    for (i = 0; i < 2; i++) {
        mbedtls_ssl_config_init(&t->conf[i]);
        mbedtls_x509_crt_init(&t->crt[i]);
        mbedtls_pk_init(&t->key[i]);
    }
    if (mode == M_CERT) {
        bad = mbedtls_x509_crt_parse(&t->ca, (const unsigned char *)g_ca.crt, strlen(g_ca.crt) + 1) != 0;
        for (i = 0; i < 2 && !bad; i++) {
            const cred *c = cred_for(names[i]);
            bad = mbedtls_x509_crt_parse(&t->crt[i], (const unsigned char *)c->crt, strlen(c->crt) + 1) != 0 ||
                  mbedtls_pk_parse_key(&t->key[i], (const unsigned char *)c->key, strlen(c->key) + 1, NULL, 0) != 0;
        }
    }
    for (i = 0; i < 2 && !bad; i++) {
        mbedtls_ssl_config *cf = &t->conf[i];
        if (mbedtls_ssl_config_defaults(cf, i ? MBEDTLS_SSL_IS_SERVER : MBEDTLS_SSL_IS_CLIENT, MBEDTLS_SSL_TRANSPORT_STREAM,
                                        MBEDTLS_SSL_PRESET_DEFAULT)) {
            bad = 1;
            break;
        }
        mbedtls_ssl_conf_rng(cf, mbedtls_ctr_drbg_random, &t->drbg);
        mbedtls_ssl_conf_min_version(cf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_max_version(cf, MBEDTLS_SSL_MAJOR_VERSION_3, MBEDTLS_SSL_MINOR_VERSION_3);
        mbedtls_ssl_conf_curves(cf, tls_curves);
#if defined(MBEDTLS_SSL_SESSION_TICKETS)
        if (!i) mbedtls_ssl_conf_session_tickets(cf, MBEDTLS_SSL_SESSION_TICKETS_DISABLED);
#endif
        if (mode == M_PSK) {
            mbedtls_ssl_conf_ciphersuites(cf, psk_suites);
            if (i) mbedtls_ssl_conf_psk_cb(cf, raw_psk_cb, t);
            else if (mbedtls_ssl_conf_psk(cf, t->psk, sizeof t->psk, (const unsigned char *)client, strlen(client)))
                bad = 1;
        } else {
            mbedtls_ssl_conf_ciphersuites(cf, cert_suites);
            mbedtls_ssl_conf_authmode(cf, MBEDTLS_SSL_VERIFY_REQUIRED);
            mbedtls_ssl_conf_ca_chain(cf, &t->ca, NULL);
            if (mbedtls_ssl_conf_own_cert(cf, &t->crt[i], &t->key[i])) bad = 1;
        }
    }
    if (bad) {
        fprintf(stderr, BENCH_NAME ": raw mbedTLS configuration failed\n");
        exit(2);
    }
}

static void rawtls_free(rawtls *t)
{
    int i;
    for (i = 0; i < 2; i++) {
        mbedtls_ssl_config_free(&t->conf[i]);
        mbedtls_x509_crt_free(&t->crt[i]);
        mbedtls_pk_free(&t->key[i]);
    }
    mbedtls_x509_crt_free(&t->ca);
    mbedtls_ctr_drbg_free(&t->drbg);
    mbedtls_entropy_free(&t->ent);
}

/* In-memory transport: two byte queues, one per direction. */
typedef struct mq {
    unsigned char b[32768];
    size_t off, n;
} mq;

typedef struct mq_end {
    mq *in, *out;
} mq_end;

static int mq_send(void *ctx, const unsigned char *p, size_t n)
{
    mq *q = ((mq_end *)ctx)->out;
    if (q->off && q->off + q->n + n > sizeof q->b) {
        memmove(q->b, q->b + q->off, q->n);
        q->off = 0;
    }
    if (q->off + q->n + n > sizeof q->b) n = sizeof q->b - q->off - q->n;
    if (!n) return MBEDTLS_ERR_SSL_WANT_WRITE;
    memcpy(q->b + q->off + q->n, p, n);
    q->n += n;
    return (int)n;
}

static int mq_recv(void *ctx, unsigned char *p, size_t n)
{
    mq *q = ((mq_end *)ctx)->in;
    if (!q->n) return MBEDTLS_ERR_SSL_WANT_READ;
    if (n > q->n) n = q->n;
    memcpy(p, q->b + q->off, n);
    q->off += n;
    q->n -= n;
    if (!q->n) q->off = 0;
    return (int)n;
}

/* The contexts of one connection, client and server.  The transport is
 * shared: a handshaken pair never uses its BIO again. */
typedef struct raw_pair {
    mbedtls_ssl_context ssl[2];
} raw_pair;

static mq g_mq[2];        /* client to server, server to client */
static mq_end g_mq_end[2];

/* One full handshake between fresh contexts in *p; 0 ok.  The contexts stay
 * set up (raw_pair_free frees them). */
static int raw_pair_handshake(rawtls *t, raw_pair *p)
{
    int i, done[2] = {0, 0}, rounds;
    memset(g_mq, 0, sizeof g_mq);
    g_mq_end[0].out = g_mq_end[1].in = &g_mq[0];
    g_mq_end[1].out = g_mq_end[0].in = &g_mq[1];
    for (i = 0; i < 2; i++) {
        mbedtls_ssl_init(&p->ssl[i]);
        if (mbedtls_ssl_setup(&p->ssl[i], &t->conf[i]) != 0) return -1;
        mbedtls_ssl_set_bio(&p->ssl[i], &g_mq_end[i], mq_send, mq_recv, NULL);
    }
    for (rounds = 0; (!done[0] || !done[1]) && rounds < 1000; rounds++)
        for (i = 0; i < 2; i++) {
            int r;
            if (done[i]) continue;
            r = mbedtls_ssl_handshake(&p->ssl[i]);
            if (r == 0) done[i] = 1;
            else if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) {
                char e[128];
                mbedtls_strerror(r, e, sizeof e);
                fprintf(stderr, BENCH_NAME ": raw %s handshake: %s\n", i ? "server" : "client", e);
                return -1;
            }
        }
    return done[0] && done[1] && !g_mq[0].n && !g_mq[1].n ? 0 : -1;
}

static void raw_pair_free(raw_pair *p)
{
    mbedtls_ssl_free(&p->ssl[0]);
    mbedtls_ssl_free(&p->ssl[1]);
}

/* ------------------------------------------------------------------------- */
/* 0. machine: AEAD on one core                                              */
/* ------------------------------------------------------------------------- */

typedef struct aead_res {
    double enc_mbs, dec_mbs; /* MB/s (10^6) of plaintext */
} aead_res;

/* ChaCha20-Poly1305 (aes 0) or AES-128-GCM (aes 1) on 16 KiB records:
 * encrypt-and-tag with a new nonce each time, then authenticated decryption
 * of the last record again and again (its tag must verify every time). */
static void aead_rate(int aes, double seconds, aead_res *r)
{
    static unsigned char in[AEAD_RECORD], out[AEAD_RECORD], back[AEAD_RECORD];
    unsigned char key[32], nonce[12], aad[13], tag[16];
    mbedtls_chachapoly_context cp;
    mbedtls_gcm_context gcm;
    long long t0, t1, n;
    int k, bad = 0;
    memset(key, 0x42, sizeof key);
    memset(nonce, 0x17, sizeof nonce);
    memset(aad, 0x23, sizeof aad);
    memset(in, 0x5a, sizeof in);
    mbedtls_chachapoly_init(&cp);
    mbedtls_gcm_init(&gcm);
    if (aes) bad = mbedtls_gcm_setkey(&gcm, MBEDTLS_CIPHER_ID_AES, key, 128) != 0;
    else bad = mbedtls_chachapoly_setkey(&cp, key) != 0;
    t0 = now_ns();
    n = 0;
    do {
        for (k = 0; k < 16 && !bad; k++, n++) {
            memcpy(nonce + 4, &n, 8);
            bad = aes ? mbedtls_gcm_crypt_and_tag(&gcm, MBEDTLS_GCM_ENCRYPT, sizeof in, nonce, 12, aad, 13, in, out, 16, tag)
                      : mbedtls_chachapoly_encrypt_and_tag(&cp, sizeof in, nonce, aad, 13, in, out, tag);
        }
        t1 = now_ns();
    } while (!bad && t1 - t0 < (long long)(seconds * 1e9));
    r->enc_mbs = (double)n * sizeof in / 1e6 / ((double)(t1 - t0) / 1e9);
    t0 = now_ns();
    n = 0;
    do {
        for (k = 0; k < 16 && !bad; k++, n++)
            bad = aes ? mbedtls_gcm_auth_decrypt(&gcm, sizeof out, nonce, 12, aad, 13, tag, 16, out, back)
                      : mbedtls_chachapoly_auth_decrypt(&cp, sizeof out, nonce, aad, 13, tag, out, back);
        t1 = now_ns();
    } while (!bad && t1 - t0 < (long long)(seconds * 1e9));
    r->dec_mbs = (double)n * sizeof in / 1e6 / ((double)(t1 - t0) / 1e9);
    if (!bad && memcmp(in, back, sizeof in) != 0) bad = 1;
    mbedtls_chachapoly_free(&cp);
    mbedtls_gcm_free(&gcm);
    if (bad) fail("%s: the AEAD self-check failed", aes ? "AES-128-GCM" : "ChaCha20-Poly1305");
}

/* mbedTLS's record layer alone: mbedtls_ssl_write of one record of `size`
 * plaintext bytes on a handshaken TLS-PSK client, mbedtls_ssl_read of it on
 * the server (in memory, one thread); microseconds per record.  Cost of a
 * record = a + b x size: a and b from two sizes. */
typedef struct rec_cost {
    double us_small, us_big; /* per record of REC_SMALL and AEAD_RECORD bytes */
    double a_us, b_us;       /* per record, per byte */
} rec_cost;

#define REC_SMALL 64

static double record_us(raw_pair *p, size_t size, double seconds)
{
    static unsigned char in[AEAD_RECORD], out[AEAD_RECORD];
    long long t0 = now_ns(), t1, n = 0;
    memset(in, 0x5a, sizeof in);
    do {
        int k;
        for (k = 0; k < 16; k++, n++) {
            int w = mbedtls_ssl_write(&p->ssl[0], in, size), r = mbedtls_ssl_read(&p->ssl[1], out, sizeof out);
            if (w != (int)size || r != (int)size || memcmp(in, out, size) != 0) fail("mbedTLS record layer: write %d, read %d", w, r);
        }
        t1 = now_ns();
    } while (t1 - t0 < (long long)(seconds * 1e9));
    return (double)(t1 - t0) / 1e3 / (double)n;
}

static void record_cost(double seconds, rec_cost *c)
{
    static raw_pair p;
    rawtls t;
    unsigned char psk[32];
    if (mbedtls_ctr_drbg_random(&g_drbg, psk, sizeof psk) != 0) exit(2);
    rawtls_init(&t, M_PSK, psk, "hs-c", "hs-l");
    if (raw_pair_handshake(&t, &p) != 0) fail("raw mbedTLS handshake (record layer)");
    c->us_small = record_us(&p, REC_SMALL, seconds);
    c->us_big = record_us(&p, AEAD_RECORD, seconds);
    c->b_us = (c->us_big - c->us_small) / (AEAD_RECORD - REC_SMALL);
    c->a_us = c->us_small - REC_SMALL * c->b_us;
    raw_pair_free(&p);
    rawtls_free(&t);
}

/* ------------------------------------------------------------------------- */
/* 1. handshakes                                                             */
/* ------------------------------------------------------------------------- */

/* Handshake samples, pooled over the rounds (hs_add), then summarized. */
typedef struct hs_res {
    int n, cap;
    long long wall_ns, cpu_ns; /* sums over the timed stretches */
    long long *lat;            /* open -> connected, ns */
    double per_s, cpu_ms;      /* handshakes per second (wall), CPU ms per handshake (both ends) */
    double p50_ms, p99_ms;
} hs_res;

static void hs_add(hs_res *r, long long wall, long long cpu, const long long *lat, int n)
{
    if (r->n + n > r->cap) {
        long long *nl;
        r->cap = (r->n + n) * 2;
        nl = (long long *)realloc(r->lat, (size_t)r->cap * sizeof *nl);
        if (!nl) {
            fprintf(stderr, BENCH_NAME ": out of memory\n");
            exit(2);
        }
        r->lat = nl;
    }
    memcpy(r->lat + r->n, lat, (size_t)n * sizeof *lat);
    r->n += n;
    r->wall_ns += wall;
    r->cpu_ns += cpu;
}

static void hs_summarize(hs_res *r)
{
    if (!r->n) return;
    r->per_s = r->n / ((double)r->wall_ns / 1e9);
    r->cpu_ms = (double)r->cpu_ns / 1e6 / r->n;
    sort_ll(r->lat, r->n);
    r->p50_ms = pct_ms(r->lat, r->n, 50);
    r->p99_ms = pct_ms(r->lat, r->n, 99);
}

/* Listener-side counters of DIRECT_CONNECTION events. */
static int g_l_up, g_l_down;

static void hs_pop_listener(HPEEREVENT el)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    while (PeerGraphGetEventData(el, &d) == S_OK) {
        if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION) {
            if (d->connectionChangeData.status == PEER_CONNECTED) g_l_up++;
            else g_l_down++;
        }
        PeerGraphFreeData(d);
    }
}

/* count direct connections, one at a time: open, PEER_CONNECTED, close; then
 * until the listener has seen every one end. */
static void hs_cycles(HGRAPH c, HPEEREVENT ec, HPEEREVENT el, PEER_ADDRESS *a, int count, long long *lat)
{
    int i;
    long long t;
    HRESULT hr;
    g_l_up = g_l_down = 0;
    for (i = 0; i < count; i++) {
        ULONGLONG cid = 0;
        int up = 0;
        long long ts = now_ns();
        if (FAILED(hr = PeerGraphOpenDirectConnection(c, L"hs-l", a, &cid))) die_hr("PeerGraphOpenDirectConnection", hr);
        while (!up) {
            PPEER_GRAPH_EVENT_DATA d = NULL;
            if (now_ns() - ts > 10000000000LL) fail("handshake %d: no outcome within 10 s", i);
            host_step(&hp, 100);
            while (PeerGraphGetEventData(ec, &d) == S_OK) {
                const PEER_EVENT_CONNECTION_CHANGE_DATA *cc = &d->connectionChangeData;
                if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION && cc->ullConnectionId == cid) {
                    if (cc->status == PEER_CONNECTED) up = 1;
                    else fail("handshake %d: status %d, reason 0x%08lX", i, (int)cc->status,
                              (unsigned long)(uint32_t)cc->hrConnectionFailedReason);
                }
                PeerGraphFreeData(d);
            }
            hs_pop_listener(el);
        }
        if (lat) lat[i] = now_ns() - ts;
        if (FAILED(hr = PeerGraphCloseDirectConnection(c, cid))) die_hr("PeerGraphCloseDirectConnection", hr);
    }
    t = now_ns();
    while (g_l_down < count) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        if (now_ns() - t > 10000000000LL) fail("the listener saw %d of %d closes", g_l_down, count);
        host_step(&hp, 100);
        while (PeerGraphGetEventData(ec, &d) == S_OK) PeerGraphFreeData(d);
        hs_pop_listener(el);
    }
    if (g_l_up != count) fail("the listener saw %d of %d connections", g_l_up, count);
}

static void hs_p2p(int mode, int count, hs_res *r)
{
    HGRAPH l, c;
    HPEEREVENT el, ec;
    PEER_ADDRESS a;
    long long *lat = (long long *)xcalloc((size_t)count, sizeof *lat), t0, c0;
    int warm = count / 20 < 3 ? 3 : count / 20 > 10 ? 10 : count / 20;
    lib_start();
    l = graph_new(1, "hs-l", mode);
    c = graph_new(0, "hs-c", mode);
    el = reg_events(l, PEER_GRAPH_EVENT_DIRECT_CONNECTION, (PEER_GRAPH_EVENT_TYPE)0, NULL);
    ec = reg_events(c, PEER_GRAPH_EVENT_DIRECT_CONNECTION, (PEER_GRAPH_EVENT_TYPE)0, NULL);
    a = graph_listen(l);
    host_step(&hp, 0);
    hs_cycles(c, ec, el, &a, warm, NULL);
    t0 = now_ns();
    c0 = cpu_now_ns();
    hs_cycles(c, ec, el, &a, count, lat);
    c0 = cpu_now_ns() - c0;
    hs_add(r, now_ns() - t0, c0, lat, count);
    PeerGraphUnregisterEvent(el);
    PeerGraphUnregisterEvent(ec);
    graph_gone(c, "hs-c");
    graph_gone(l, "hs-l");
    lib_stop();
    free(lat);
}

static void hs_raw(int mode, int count, hs_res *r)
{
    static raw_pair p;
    rawtls t;
    unsigned char psk[32];
    long long *lat = (long long *)xcalloc((size_t)count, sizeof *lat), t0, c0;
    int i, warm = count / 20 < 3 ? 3 : count / 20 > 10 ? 10 : count / 20;
    if (mbedtls_ctr_drbg_random(&g_drbg, psk, sizeof psk) != 0) exit(2);
    rawtls_init(&t, mode, psk, "hs-c", "hs-l");
    for (i = 0; i < warm; i++) {
        if (raw_pair_handshake(&t, &p) != 0) fail("raw mbedTLS %s handshake", mname[mode]);
        raw_pair_free(&p);
    }
    t0 = now_ns();
    c0 = cpu_now_ns();
    for (i = 0; i < count; i++) {
        long long ts = now_ns();
        if (raw_pair_handshake(&t, &p) != 0) fail("raw mbedTLS %s handshake", mname[mode]);
        lat[i] = now_ns() - ts;
        raw_pair_free(&p);
    }
    c0 = cpu_now_ns() - c0;
    hs_add(r, now_ns() - t0, c0, lat, count);
    rawtls_free(&t);
    free(lat);
}

/* ------------------------------------------------------------------------- */
/* 2. flooding                                                               */
/* ------------------------------------------------------------------------- */

typedef struct flood_res {
    int links;
    double ms, cpu_ms;           /* wall and process CPU from the first add to the last delivery */
    unsigned long long wire;     /* bytes sent meanwhile, all sockets */
    unsigned long long recs, rec_bytes; /* TLS application-data records sent meanwhile, their lengths */
    unsigned long long sends, recvs;    /* socket sends and reads that moved bytes */
} flood_res;

typedef struct fnode {
    HGRAPH h;
    HPEEREVENT ev;
    char peer[16];
    wchar_t wpeer[16];
    PEER_ADDRESS addr;
    int got;
} fnode;

static fnode g_fn[FLOOD_NODES];

/* Pops every node's events: counts RECORD_CHANGED (ADDED) of REC_TYPE, and
 * settles a pending neighbor connection (*cid of node `from`). */
static void flood_pop(int from, ULONGLONG *cid, int *state, HRESULT *why)
{
    int i;
    for (i = 0; i < FLOOD_NODES; i++) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        while (PeerGraphGetEventData(g_fn[i].ev, &d) == S_OK) {
            if (d->eventType == PEER_GRAPH_EVENT_RECORD_CHANGED && d->recordChangeData.changeType == PEER_RECORD_ADDED)
                g_fn[i].got++;
            else if (d->eventType == PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION && i == from && cid &&
                     d->connectionChangeData.ullConnectionId == *cid) {
                const PEER_EVENT_CONNECTION_CHANGE_DATA *cc = &d->connectionChangeData;
                if (cc->status == PEER_CONNECTED) *state = 1;
                else if (cc->status == PEER_CONNECTION_FAILED && cc->ullNextConnectionId) *cid = cc->ullNextConnectionId;
                else {
                    *state = 2;
                    *why = cc->hrConnectionFailedReason;
                }
            }
            PeerGraphFreeData(d);
        }
    }
}

static void flood_link(int from, int to, int wait_sync)
{
    ULONGLONG cid = 0;
    int state = 0;
    HRESULT hr, why = S_OK;
    long long t0 = now_ns();
    if (FAILED(hr = PeerGraphConnect(g_fn[from].h, g_fn[to].wpeer, &g_fn[to].addr, &cid))) die_hr("PeerGraphConnect", hr);
    while (state != 1 || (wait_sync && !(status_of(g_fn[from].h) & PEER_GRAPH_STATUS_SYNCHRONIZED))) {
        if (state == 2) fail("flood: node %d could not connect to node %d (0x%08lX)", from, to, (unsigned long)(uint32_t)why);
        if (now_ns() - t0 > STEP_LIMIT_NS) fail("flood: node %d to node %d: no outcome", from, to);
        host_step(&hp, 50);
        flood_pop(from, &cid, &state, &why);
    }
}

static int flood_count_links(void)
{
    int i, ends = 0;
    for (i = 0; i < FLOOD_NODES; i++) {
        HPEERENUM en;
        ULONG c = 0;
        if (FAILED(PeerGraphEnumConnections(g_fn[i].h, PEER_CONNECTION_NEIGHBOR, &en))) continue;
        PeerGraphGetItemCount(en, &c);
        PeerGraphEndEnumeration(en);
        ends += (int)c;
    }
    return ends / 2;
}

static void flood_run(int mode, int M, flood_res *r)
{
    int i, k;
    long long t0, c0;
    unsigned long long w0;
    uint8_t data[REC_PAYLOAD];
    HRESULT hr;
    unsigned long long r0, rb0, s0, v0;
    lib_start();
    g_parse_tls = mode != M_PLAIN; /* from the first connection on: the parser follows every stream */
    memset(g_fn, 0, sizeof g_fn);
    for (i = 0; i < FLOOD_NODES; i++) {
        fnode *x = &g_fn[i];
        PEER_GRAPH_TIMERS tm;
        snprintf(x->peer, sizeof x->peer, "n%d", i);
        wname(x->wpeer, 16, x->peer);
        x->h = graph_new(i == 0, x->peer, mode);
        x->ev = reg_events(x->h, PEER_GRAPH_EVENT_RECORD_CHANGED, PEER_GRAPH_EVENT_NEIGHBOR_CONNECTION, &REC_TYPE);
        /* no maintenance during the run: the links stay the planned ones */
        memset(&tm, 0, sizeof tm);
        tm.dwSize = sizeof tm;
        if (FAILED(hr = PeerGraphGetTimers(x->h, &tm))) die_hr("PeerGraphGetTimers", hr);
        tm.ulMaintenanceMs = tm.ulMaintenanceIdleMs = tm.ulRetryMs = HOUR_MS;
        if (FAILED(hr = PeerGraphSetTimers(x->h, &tm))) die_hr("PeerGraphSetTimers", hr);
    }
    host_step(&hp, 0);
    g_fn[0].addr = graph_listen(g_fn[0].h);
    for (i = 1; i < FLOOD_NODES; i++) {
        flood_link(i, i - 1, 1);
        g_fn[i].addr = graph_listen(g_fn[i].h);
        if (i >= 2) flood_link(i, i - 2, 0);
    }
    host_run_ms(&hp, 300);
    flood_pop(-1, NULL, NULL, NULL);
    r->links = flood_count_links();
    for (i = 0; i < FLOOD_NODES; i++) g_fn[i].got = 0;

    w0 = g_wire;
    r0 = g_tls_recs;
    rb0 = g_tls_rec_bytes;
    s0 = g_sends;
    v0 = g_recvs;
    t0 = now_ns();
    c0 = cpu_now_ns();
    for (k = 0; k < M; k++) {
        PEER_RECORD rec;
        GUID id;
        ULONGLONG exp = peer_now(g_fn[0].h) + 3600ULL * 10000000ULL;
        for (i = 0; i < REC_PAYLOAD; i++) data[i] = (uint8_t)(k * 7 + i);
        init_record(&rec, &REC_TYPE, exp, data, REC_PAYLOAD);
        if (FAILED(hr = PeerGraphAddRecord(g_fn[0].h, &rec, &id))) die_hr("PeerGraphAddRecord", hr);
        if (k % g_batch == g_batch - 1) {
            host_step(&hp, 0);
            flood_pop(-1, NULL, NULL, NULL);
        }
    }
    for (;;) {
        int left = 0;
        for (i = 1; i < FLOOD_NODES; i++) left += g_fn[i].got < M;
        if (!left) break;
        if (now_ns() - t0 > STEP_LIMIT_NS) {
            for (i = 1; i < FLOOD_NODES; i++)
                if (g_fn[i].got < M) fprintf(stderr, BENCH_NAME ": node %d holds %d of %d records\n", i, g_fn[i].got, M);
            fail("flood (%s): records missing after 30 s", mname[mode]);
        }
        host_step(&hp, 50);
        flood_pop(-1, NULL, NULL, NULL);
    }
    r->cpu_ms = (double)(cpu_now_ns() - c0) / 1e6;
    r->ms = (double)(now_ns() - t0) / 1e6;
    r->wire = g_wire - w0;
    r->recs = g_tls_recs - r0;
    r->rec_bytes = g_tls_rec_bytes - rb0;
    r->sends = g_sends - s0;
    r->recvs = g_recvs - v0;
    for (i = 1; i < FLOOD_NODES; i++)
        if (g_fn[i].got != M) fail("flood (%s): node %d popped %d ADDED events for %d records", mname[mode], i, g_fn[i].got, M);
    for (i = 0; i < FLOOD_NODES; i++) {
        PeerGraphUnregisterEvent(g_fn[i].ev);
        graph_gone(g_fn[i].h, g_fn[i].peer);
    }
    lib_stop();
    g_parse_tls = 0;
}

/* ------------------------------------------------------------------------- */
/* 3. SendData throughput: two processes                                     */
/* ------------------------------------------------------------------------- */

enum { TP_PLAIN = M_PLAIN, TP_PSK = M_PSK, TP_CERT = M_CERT, TP_RAW, TP_COUNT };
static const char *const tpname[TP_COUNT] = {"p2pgraph plain", "p2pgraph TLS-PSK", "p2pgraph TLS-cert",
                                             "raw mbedTLS TLS-PSK"};

typedef struct tp_params {
    int kind;
    long long count;  /* messages of MSG_SIZE */
    int port;
    int portfd, out, ctl;
} tp_params;

typedef struct tp_result {
    int ok;
    char err[200];
    long long t0, t1;   /* sender's first send, receiver's last message (CLOCK_MONOTONIC) */
    long long msgs, bad;
    uint64_t sum;
    long long cpu_ns;   /* this end's CPU while the data moved */
} tp_result;

static unsigned char g_tp_psk[32]; /* the raw TLS pair's key, chosen before the fork */


static void child_fail(const tp_params *p, tp_result *r, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(r->err, sizeof r->err, fmt, ap);
    va_end(ap);
    r->ok = 0;
    fprintf(stderr, BENCH_NAME ": %s\n", r->err);
    write_all(p->out, r, sizeof *r);
    _exit(1);
}


static void msg_check(tp_result *r, const uint8_t *b, size_t n)
{
    if (n != MSG_SIZE) r->bad++;
    else {
        if (msg_seq(b) != (uint64_t)r->msgs) r->bad++;
        r->sum = msg_sum(r->sum, b, n);
    }
    r->msgs++;
}

/* --- p2pgraph ends --- */

static void tp_p2p_start(const tp_params *p, tp_result *r)
{
    PEER_VERSION_DATA vd;
    HRESULT hr;
    memset(&hp, 0, sizeof hp);
    if (FAILED(hr = PeerGraphStartup(PEER_GRAPH_VERSION, &vd))) child_fail(p, r, "PeerGraphStartup: 0x%08lX", (unsigned long)(uint32_t)hr);
    if (setup_db_dir(g_dir) != 0) child_fail(p, r, "database directory");
}

static void tp_p2p_recv(const tp_params *p)
{
    tp_result r;
    HGRAPH g;
    HPEEREVENT ev;
    PEER_ADDRESS a;
    int port;
    memset(&r, 0, sizeof r);
    tp_p2p_start(p, &r);
    g = graph_new(1, "tp-recv", p->kind);
    ev = reg_events(g, PEER_GRAPH_EVENT_DIRECT_CONNECTION, PEER_GRAPH_EVENT_INCOMING_DATA, NULL);
    a = graph_listen(g);
    port = ntohs(a.sin6.sin6_port);
    write_all(p->portfd, &port, sizeof port);
    while (r.msgs < p->count) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        host_step(&hp, 100);
        while (PeerGraphGetEventData(ev, &d) == S_OK) {
            if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION) {
                if (d->connectionChangeData.status == PEER_CONNECTED) r.cpu_ns = cpu_now_ns();
                else child_fail(p, &r, "receiver: direct connection status %d (0x%08lX) after %lld messages",
                                (int)d->connectionChangeData.status,
                                (unsigned long)(uint32_t)d->connectionChangeData.hrConnectionFailedReason, r.msgs);
            } else if (d->eventType == PEER_GRAPH_EVENT_INCOMING_DATA) {
                if (memcmp(&d->incomingData.type, &DATA_TYPE, sizeof DATA_TYPE) != 0) r.bad++;
                msg_check(&r, d->incomingData.data.pbData, d->incomingData.data.cbData);
                if (r.msgs == p->count) {
                    r.t1 = now_ns();
                    r.cpu_ns = cpu_now_ns() - r.cpu_ns;
                }
            }
            PeerGraphFreeData(d);
        }
    }
    r.ok = 1;
    write_all(p->out, &r, sizeof r);
    while (!ctl_ready(p->ctl, 0)) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        host_step(&hp, 20);
        while (PeerGraphGetEventData(ev, &d) == S_OK) PeerGraphFreeData(d);
    }
    PeerGraphUnregisterEvent(ev);
    graph_gone(g, "tp-recv");
    PeerGraphShutdown();
}

/* Sender: pops events; 1 when SEND_READY came for cid. */
static int tp_send_pop(const tp_params *p, tp_result *r, HPEEREVENT ev, ULONGLONG cid, int *connected)
{
    PPEER_GRAPH_EVENT_DATA d = NULL;
    int ready = 0;
    while (PeerGraphGetEventData(ev, &d) == S_OK) {
        if (d->eventType == PEER_GRAPH_EVENT_SEND_READY && d->sendReadyData.ullConnectionId == cid) ready = 1;
        else if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION && d->connectionChangeData.ullConnectionId == cid) {
            if (d->connectionChangeData.status == PEER_CONNECTED && connected) *connected = 1;
            else
                child_fail(p, r, "sender: direct connection status %d (0x%08lX) after %lld messages",
                           (int)d->connectionChangeData.status,
                           (unsigned long)(uint32_t)d->connectionChangeData.hrConnectionFailedReason, r->msgs);
        }
        PeerGraphFreeData(d);
    }
    return ready;
}

static void tp_p2p_send(const tp_params *p)
{
    tp_result r;
    HGRAPH g;
    HPEEREVENT ev;
    PEER_ADDRESS a;
    ULONGLONG cid = 0;
    ULONG q = 0;
    HRESULT hr;
    int connected = 0;
    long long i, t;
    uint8_t *buf = (uint8_t *)xcalloc(MSG_SIZE, 1);
    memset(&r, 0, sizeof r);
    for (i = 0; i < MSG_SIZE; i++) buf[i] = (uint8_t)(i * 131 + 7);
    tp_p2p_start(p, &r);
    g = graph_new(0, "tp-send", p->kind);
    ev = reg_events(g, PEER_GRAPH_EVENT_DIRECT_CONNECTION, PEER_GRAPH_EVENT_SEND_READY, NULL);
    memset(&a, 0, sizeof a);
    a.dwSize = sizeof a;
    a.sin6.sin6_family = AF_INET6;
    a.sin6.sin6_addr = in6addr_loopback;
    a.sin6.sin6_port = htons((uint16_t)p->port);
    host_step(&hp, 0);
    if (FAILED(hr = PeerGraphOpenDirectConnection(g, L"tp-recv", &a, &cid)))
        child_fail(p, &r, "PeerGraphOpenDirectConnection: 0x%08lX", (unsigned long)(uint32_t)hr);
    t = now_ns();
    while (!connected) {
        if (now_ns() - t > 10000000000LL) child_fail(p, &r, "direct connection: no outcome within 10 s");
        host_step(&hp, 100);
        tp_send_pop(p, &r, ev, cid, &connected);
    }
    r.t0 = now_ns();
    r.cpu_ns = cpu_now_ns();
    for (i = 0; i < p->count;) {
        msg_stamp(buf, MSG_SIZE, (uint64_t)i);
        hr = PeerGraphSendData(g, cid, &DATA_TYPE, MSG_SIZE, buf);
        if (hr == S_OK) {
            r.sum = msg_sum(r.sum, buf, MSG_SIZE);
            i++;
            continue;
        }
        if (hr != PEER_E_SEND_QUEUE_FULL) child_fail(p, &r, "PeerGraphSendData: 0x%08lX after %lld messages", (unsigned long)(uint32_t)hr, i);
        t = now_ns();
        for (;;) {
            host_step(&hp, 100);
            if (tp_send_pop(p, &r, ev, cid, NULL)) break;
            if (now_ns() - t > 5000000000LL) child_fail(p, &r, "no SEND_READY within 5 s");
        }
    }
    r.msgs = p->count;
    t = now_ns();
    while (SUCCEEDED(hr = PeerGraphGetDataQueue(g, cid, &q, NULL)) && q > 0) {
        host_step(&hp, 100);
        tp_send_pop(p, &r, ev, cid, NULL);
        if (now_ns() - t > 20000000000LL) child_fail(p, &r, "queue not drained within 20 s");
    }
    r.cpu_ns = cpu_now_ns() - r.cpu_ns;
    r.ok = 1;
    write_all(p->out, &r, sizeof r);
    while (!ctl_ready(p->ctl, 0)) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        host_step(&hp, 20);
        while (PeerGraphGetEventData(ev, &d) == S_OK) PeerGraphFreeData(d);
    }
    free(buf);
    PeerGraphUnregisterEvent(ev);
    graph_gone(g, "tp-send");
    PeerGraphShutdown();
}

/* --- raw mbedTLS over blocking sockets --- */

static int fd_send(void *ctx, const unsigned char *p, size_t n)
{
    for (;;) {
        ssize_t k = send(*(int *)ctx, p, n, MSG_NOSIGNAL);
        if (k >= 0) return (int)k;
        if (errno != EINTR) return MBEDTLS_ERR_NET_SEND_FAILED;
    }
}

static int fd_recv(void *ctx, unsigned char *p, size_t n)
{
    for (;;) {
        ssize_t k = recv(*(int *)ctx, p, n, 0);
        if (k >= 0) return (int)k; /* 0: EOF */
        if (errno != EINTR) return MBEDTLS_ERR_NET_RECV_FAILED;
    }
}

static void set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

static int raw_tls_handshake(mbedtls_ssl_context *ssl, rawtls *t, int server, int *fd)
{
    int r;
    mbedtls_ssl_init(ssl);
    if (mbedtls_ssl_setup(ssl, &t->conf[server]) != 0) return -1;
    mbedtls_ssl_set_bio(ssl, fd, fd_send, fd_recv, NULL);
    while ((r = mbedtls_ssl_handshake(ssl)) != 0)
        if (r != MBEDTLS_ERR_SSL_WANT_READ && r != MBEDTLS_ERR_SSL_WANT_WRITE) return r;
    return 0;
}

static void tp_raw_recv(const tp_params *p)
{
    struct sockaddr_in6 sa;
    tp_result r;
    rawtls t;
    mbedtls_ssl_context ssl;
    int lfd = loopback_listener(&sa, 1, 0), fd, port = ntohs(sa.sin6_port), e;
    size_t have = 0;
    uint8_t *buf = (uint8_t *)xcalloc(MSG_SIZE, 1);
    memset(&r, 0, sizeof r);
    rawtls_init(&t, M_PSK, g_tp_psk, "tp-send", "tp-recv");
    write_all(p->portfd, &port, sizeof port);
    if ((fd = accept(lfd, NULL, NULL)) < 0) child_fail(p, &r, "raw accept: %s", strerror(errno));
    close(lfd);
    set_nodelay(fd);
    if ((e = raw_tls_handshake(&ssl, &t, 1, &fd)) != 0) child_fail(p, &r, "raw TLS server handshake: -0x%04X", -e);
    r.cpu_ns = cpu_now_ns();
    while (r.msgs < p->count) {
        int k = mbedtls_ssl_read(&ssl, buf + have, MSG_SIZE - have);
        if (k == MBEDTLS_ERR_SSL_WANT_READ || k == MBEDTLS_ERR_SSL_WANT_WRITE) continue;
        if (k <= 0) child_fail(p, &r, "raw TLS read: -0x%04X after %lld messages", -k, r.msgs);
        have += (size_t)k;
        if (have == MSG_SIZE) {
            msg_check(&r, buf, MSG_SIZE);
            have = 0;
        }
    }
    r.t1 = now_ns();
    r.cpu_ns = cpu_now_ns() - r.cpu_ns;
    r.ok = 1;
    write_all(p->out, &r, sizeof r);
    while (!ctl_ready(p->ctl, 1000)) {}
    mbedtls_ssl_free(&ssl);
    rawtls_free(&t);
    close(fd);
    free(buf);
}

static void tp_raw_send(const tp_params *p)
{
    struct sockaddr_in6 sa;
    tp_result r;
    rawtls t;
    mbedtls_ssl_context ssl;
    int fd = socket(AF_INET6, SOCK_STREAM, 0), e;
    long long i;
    uint8_t *buf = (uint8_t *)xcalloc(MSG_SIZE, 1);
    memset(&r, 0, sizeof r);
    for (i = 0; i < MSG_SIZE; i++) buf[i] = (uint8_t)(i * 131 + 7);
    rawtls_init(&t, M_PSK, g_tp_psk, "tp-send", "tp-recv");
    memset(&sa, 0, sizeof sa);
    sa.sin6_family = AF_INET6;
    sa.sin6_addr = in6addr_loopback;
    sa.sin6_port = htons((uint16_t)p->port);
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0) child_fail(p, &r, "raw connect: %s", strerror(errno));
    set_nodelay(fd);
    if ((e = raw_tls_handshake(&ssl, &t, 0, &fd)) != 0) child_fail(p, &r, "raw TLS client handshake: -0x%04X", -e);
    r.t0 = now_ns();
    r.cpu_ns = cpu_now_ns();
    for (i = 0; i < p->count; i++) {
        size_t off = 0;
        msg_stamp(buf, MSG_SIZE, (uint64_t)i);
        r.sum = msg_sum(r.sum, buf, MSG_SIZE);
        while (off < MSG_SIZE) {
            int k = mbedtls_ssl_write(&ssl, buf + off, MSG_SIZE - off);
            if (k == MBEDTLS_ERR_SSL_WANT_READ || k == MBEDTLS_ERR_SSL_WANT_WRITE) continue;
            if (k <= 0) child_fail(p, &r, "raw TLS write: -0x%04X after %lld messages", -k, i);
            off += (size_t)k;
        }
    }
    r.cpu_ns = cpu_now_ns() - r.cpu_ns;
    r.msgs = p->count;
    r.ok = 1;
    write_all(p->out, &r, sizeof r);
    while (!ctl_ready(p->ctl, 1000)) {}
    mbedtls_ssl_free(&ssl);
    rawtls_free(&t);
    close(fd);
    free(buf);
}

/* An end's process: its pipes into a copy of the parameters, then kind's end. */
static void tp_end(void *ctx, const bench_end *e)
{
    tp_params p = *(const tp_params *)ctx;
    if (e->sender) p.port = e->port;
    p.portfd = e->portfd;
    p.out = e->out;
    p.ctl = e->ctl;
    if (p.kind == TP_RAW) (e->sender ? tp_raw_send : tp_raw_recv)(&p);
    else (e->sender ? tp_p2p_send : tp_p2p_recv)(&p);
}

/* Runs the receiver and the sender of kind in two processes; 0 when both
 * reported success. */
static int tp_pair(int kind, long long count, tp_result *rr, tp_result *rs)
{
    tp_params pa;
    bench_pair bp = {tp_end, NULL, &pa, BENCH_RESULT_LAYOUT(tp_result), CHILD_LIMIT_S, 30000, PARENT_WAIT_MS, 10000, 1};
    memset(&pa, 0, sizeof pa);
    pa.kind = kind;
    pa.count = count;
    return bench_pair_run(&bp, rr, rs);
}

/* ------------------------------------------------------------------------- */
/* 4. memory per idle link                                                   */
/* ------------------------------------------------------------------------- */

typedef struct mem_res {
    int ran, k;
    long long growth;   /* heap growth for K links (2K endpoints) */
} mem_res;

/* Opens n direct connections from c to the listener and waits for all of
 * them on both sides; their IDs go to cids. */
static void mem_open(HGRAPH c, HPEEREVENT ec, HPEEREVENT el, PEER_ADDRESS *a, int n, ULONGLONG *cids)
{
    int i, up = 0;
    long long t = now_ns();
    HRESULT hr;
    g_l_up = g_l_down = 0;
    for (i = 0; i < n; i++)
        if (FAILED(hr = PeerGraphOpenDirectConnection(c, L"hs-l", a, &cids[i]))) die_hr("PeerGraphOpenDirectConnection", hr);
    while (up < n || g_l_up < n) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        if (now_ns() - t > STEP_LIMIT_NS) fail("memory: %d + %d of %d links up after 30 s", up, g_l_up, n);
        host_step(&hp, 50);
        while (PeerGraphGetEventData(ec, &d) == S_OK) {
            if (d->eventType == PEER_GRAPH_EVENT_DIRECT_CONNECTION) {
                if (d->connectionChangeData.status == PEER_CONNECTED) up++;
                else fail("memory: a direct connection failed (status %d, 0x%08lX)", (int)d->connectionChangeData.status,
                          (unsigned long)(uint32_t)d->connectionChangeData.hrConnectionFailedReason);
            }
            PeerGraphFreeData(d);
        }
        hs_pop_listener(el);
    }
}

static void mem_close(HGRAPH c, HPEEREVENT ec, HPEEREVENT el, int n, const ULONGLONG *cids)
{
    int i;
    long long t = now_ns();
    g_l_down = 0;
    for (i = 0; i < n; i++) PeerGraphCloseDirectConnection(c, cids[i]);
    while (g_l_down < n) {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        if (now_ns() - t > 10000000000LL) fail("memory: the listener saw %d of %d closes", g_l_down, n);
        host_step(&hp, 50);
        while (PeerGraphGetEventData(ec, &d) == S_OK) PeerGraphFreeData(d);
        hs_pop_listener(el);
    }
    host_run_ms(&hp, 100);
}

static void mem_p2p(int mode, int K, mem_res *r)
{
    HGRAPH l, c;
    HPEEREVENT el, ec;
    PEER_ADDRESS a;
    ULONGLONG *cids = (ULONGLONG *)xcalloc((size_t)K, sizeof *cids);
    long long h0;
    lib_start();
    l = graph_new(1, "hs-l", mode);
    c = graph_new(0, "hs-c", mode);
    el = reg_events(l, PEER_GRAPH_EVENT_DIRECT_CONNECTION, (PEER_GRAPH_EVENT_TYPE)0, NULL);
    ec = reg_events(c, PEER_GRAPH_EVENT_DIRECT_CONNECTION, (PEER_GRAPH_EVENT_TYPE)0, NULL);
    a = graph_listen(l);
    host_step(&hp, 0);
    /* a first round, closed again: whatever is allocated once is allocated */
    mem_open(c, ec, el, &a, K, cids);
    mem_close(c, ec, el, K, cids);
    host_run_ms(&hp, 100);
    h0 = heap_now();
    mem_open(c, ec, el, &a, K, cids);
    host_run_ms(&hp, 300);
    hs_pop_listener(el);
    {
        PPEER_GRAPH_EVENT_DATA d = NULL;
        while (PeerGraphGetEventData(ec, &d) == S_OK) PeerGraphFreeData(d);
    }
    r->growth = heap_now() - h0;
    r->k = K;
    r->ran = 1;
    mem_close(c, ec, el, K, cids);
    PeerGraphUnregisterEvent(el);
    PeerGraphUnregisterEvent(ec);
    graph_gone(c, "hs-c");
    graph_gone(l, "hs-l");
    lib_stop();
    free(cids);
}

static void mem_raw(int mode, int K, mem_res *r)
{
    rawtls t;
    unsigned char psk[32];
    raw_pair **pp = (raw_pair **)xcalloc((size_t)K, sizeof *pp);
    long long h0;
    int i;
    if (mbedtls_ctr_drbg_random(&g_drbg, psk, sizeof psk) != 0) exit(2);
    rawtls_init(&t, mode, psk, "hs-c", "hs-l");
    h0 = heap_now();
    for (i = 0; i < K; i++) {
        /* two mbedtls_ssl_context (allocated here, as p2pgraph allocates
         * its own) and what mbedTLS allocates for them */
        pp[i] = (raw_pair *)xcalloc(1, sizeof *pp[i]);
        if (raw_pair_handshake(&t, pp[i]) != 0) fail("raw mbedTLS %s handshake", mname[mode]);
    }
    r->growth = heap_now() - h0;
    r->k = K;
    r->ran = 1;
    for (i = 0; i < K; i++) {
        raw_pair_free(pp[i]);
        free(pp[i]);
    }
    free(pp);
    rawtls_free(&t);
}

/* ------------------------------------------------------------------------- */
/* main                                                                      */
/* ------------------------------------------------------------------------- */

typedef struct tp_row {
    int ran;
    double mbs, cpu_s, cpu_r; /* median MB/s; each end's CPU over the elapsed time, % */
    double cpu_mb;            /* median CPU ms (both ends) per MB moved */
    long long bytes;
} tp_row;

#define MAX_REPS 16
#define MAX_PATTERNS 2

/* Part 2 results of one publishing pattern. */
typedef struct flood_set {
    int batch;
    flood_res run[M_COUNT][MAX_REPS];
    int med[M_COUNT]; /* the run with the median CPU */
} flood_set;

static void usage(const char *argv0)
{
    fprintf(stderr, "usage: %s [--quick] [--reps N] [--batch N] [--only hs,flood,data,mem]\n", argv0);
    exit(2);
}

static void print_flood(const flood_set *fs, int flood_m, int reps, const rec_cost *rc)
{
    const flood_res *p = &fs->run[M_PLAIN][fs->med[M_PLAIN]];
    int m, k;
    if (fs->batch == 1) printf("  paced: a service step after every add\n");
    else printf("  burst: a service step after every %d adds\n", fs->batch);
    printf("  %-10s %6s %9s %9s %10s %9s %10s %6s %6s %8s %9s %9s\n", "mode", "links", "wall ms", "CPU ms", "us/record",
           "us/deliv", "wire B/rec", "sends", "reads", "TLS recs", "B/TLS rec", "vs plain");
    for (m = 0; m < M_COUNT; m++) {
        const flood_res *x = &fs->run[m][fs->med[m]];
        char recs[32], rb[32];
        if (m == M_PLAIN) {
            snprintf(recs, sizeof recs, "-");
            snprintf(rb, sizeof rb, "-");
        } else {
            snprintf(recs, sizeof recs, "%.1f", (double)x->recs / flood_m);
            snprintf(rb, sizeof rb, "%.0f", x->recs ? (double)x->rec_bytes / (double)x->recs : 0.0);
        }
        printf("  %-10s %6d %9.1f %9.1f %10.1f %9.2f %10.0f %6.1f %6.1f %8s %9s %8.2fx\n", mname[m], x->links, x->ms, x->cpu_ms,
               1000.0 * x->cpu_ms / flood_m, 1000.0 * x->cpu_ms / flood_m / (FLOOD_NODES - 1), (double)x->wire / flood_m,
               (double)x->sends / flood_m, (double)x->recvs / flood_m, recs, rb, ratio(x->cpu_ms, p->cpu_ms));
    }
    if (reps > 1) {
        printf("  every run's CPU ms:");
        for (m = 0; m < M_COUNT; m++) {
            printf("  %s", mname[m]);
            for (k = 0; k < reps; k++) printf(" %.0f", fs->run[m][k].cpu_ms);
        }
        printf("\n");
    }
    for (m = M_PSK; m < M_COUNT; m++) {
        const flood_res *x = &fs->run[m][fs->med[m]];
        double extra_us = 1000.0 * (x->cpu_ms - p->cpu_ms) / flood_m;
        /* the records' plaintext: length - 16 (Poly1305 tag; ChaCha20-Poly1305 has no explicit nonce) */
        double plain_b = (double)x->rec_bytes - 16.0 * (double)x->recs;
        double floor_us = ((double)x->recs * rc->a_us + plain_b * rc->b_us) / flood_m;
        printf("  %s: %.1f us of CPU per record above plain; mbedTLS's record layer alone needs %.1f us for the same\n"
               "    %.1f records (%.0f B each on average) -> p2pgraph's TLS cost = %.2fx that floor\n",
               mname[m], extra_us, floor_us, (double)x->recs / flood_m, x->recs ? plain_b / (double)x->recs : 0.0,
               ratio(extra_us, floor_us));
    }
}

int main(int argc, char **argv)
{
    int quick = 0, reps = 3, do_hs = 1, do_flood = 1, do_data = 1, do_mem = 1, i, m, k, b, npat = 2;
    int hs_n[M_COUNT], flood_m, mem_k, batch_opt = 0;
    long long tp_mb[TP_COUNT];
    double aead_s, tstart = (double)now_ns();
    const char *tmp = getenv("TMPDIR");
    aead_res aead[2];
    rec_cost rc;
    hs_res hs[M_COUNT], hsraw[M_COUNT];
    static flood_set fls[MAX_PATTERNS];
    tp_row tp[TP_COUNT];
    mem_res mem[M_COUNT], memraw[M_COUNT];
    int failures = 0, tp_runs = 0;

    for (i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--quick")) quick = 1;
        else if (!strcmp(argv[i], "--reps") && i + 1 < argc) reps = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc) {
            batch_opt = atoi(argv[++i]);
            if (batch_opt < 1) usage(argv[0]);
        } else if (!strcmp(argv[i], "--only") && i + 1 < argc) {
            const char *l = argv[++i];
            do_hs = strstr(l, "hs") != NULL;
            do_flood = strstr(l, "flood") != NULL;
            do_data = strstr(l, "data") != NULL;
            do_mem = strstr(l, "mem") != NULL;
        } else
            usage(argv[0]);
    }
    if (quick && reps == 3) reps = 1;
    if (reps < 1 || reps > MAX_REPS) usage(argv[0]);
    hs_n[M_PLAIN] = quick ? 200 : 2000;
    hs_n[M_PSK] = quick ? 100 : 1000;
    hs_n[M_CERT] = quick ? 30 : 300;
    flood_m = quick ? 200 : 2000;
    mem_k = quick ? 20 : 50;
    tp_mb[TP_PLAIN] = quick ? 32 : 512;
    tp_mb[TP_PSK] = tp_mb[TP_CERT] = tp_mb[TP_RAW] = quick ? 16 : 256;
    aead_s = quick ? 0.1 : 0.5;
    fls[0].batch = 16;
    fls[1].batch = 1;
    if (batch_opt) {
        npat = 1;
        fls[0].batch = batch_opt;
    }

    signal(SIGPIPE, SIG_IGN);
    g_main_pid = getpid();
    snprintf(g_dir, sizeof g_dir, "%s/bench_tls.XXXXXX", tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(g_dir)) {
        perror(BENCH_NAME ": mkdtemp");
        return 2;
    }
    atexit(at_exit_clean);
    memset(hs, 0, sizeof hs);
    memset(hsraw, 0, sizeof hsraw);
    memset(tp, 0, sizeof tp);
    memset(mem, 0, sizeof mem);
    memset(memraw, 0, sizeof memraw);

    printf("bench_tls: p2pgraph's TLS links (PROTOCOL.md 6) against plain links and against mbedTLS %s alone,\n"
           "measured in the same run\n", MBEDTLS_VERSION_STRING);
    print_command_machine(argc, argv);
    {
        FILE *f = fopen("/proc/loadavg", "r");
        char la[128] = "";
        if (f) {
            if (fgets(la, sizeof la, f)) la[strcspn(la, "\n")] = 0;
            fclose(f);
            printf("load at start (/proc/loadavg): %s\n", la);
        }
    }
    fflush(stdout);

    drbg_seed(&g_ent, &g_drbg);
    cred_make(&g_ca, CA_CN, NULL);
    install_counting_shim();

    /* 0. machine */
    memset(aead, 0, sizeof aead);
    memset(&rc, 0, sizeof rc);
    for (k = 0; k < BEST_OF; k++) { /* a ceiling: the best of short trials, interleaved */
        aead_res a;
        rec_cost c;
        for (i = 0; i < 2; i++) {
            aead_rate(i, aead_s / BEST_OF, &a);
            if (a.enc_mbs > aead[i].enc_mbs) aead[i].enc_mbs = a.enc_mbs;
            if (a.dec_mbs > aead[i].dec_mbs) aead[i].dec_mbs = a.dec_mbs;
        }
        record_cost(aead_s / BEST_OF / 2, &c);
        if (!k || c.us_small < rc.us_small) rc.us_small = c.us_small;
        if (!k || c.us_big < rc.us_big) rc.us_big = c.us_big;
    }
    rc.b_us = (rc.us_big - rc.us_small) / (AEAD_RECORD - REC_SMALL);
    rc.a_us = rc.us_small - REC_SMALL * rc.b_us;

    /* 1. handshakes, in HS_ROUNDS rounds of everything (a slow spell of the
     * machine then falls on every row alike) */
    if (do_hs) {
        int rd;
        for (rd = 0; rd < HS_ROUNDS; rd++) {
            for (m = M_PSK; m < M_COUNT; m++) hs_raw(m, hs_n[m] / HS_ROUNDS, &hsraw[m]);
            for (m = 0; m < M_COUNT; m++) hs_p2p(m, hs_n[m] / HS_ROUNDS, &hs[m]);
        }
        for (m = 0; m < M_COUNT; m++) {
            hs_summarize(&hs[m]);
            hs_summarize(&hsraw[m]);
        }
    }

    /* 2. flooding, modes interleaved */
    if (do_flood) {
        flood_res warm;
        g_batch = fls[0].batch;
        flood_run(M_PLAIN, flood_m / 10, &warm); /* unmeasured: first use of the files, the allocator, the stack */
        for (b = 0; b < npat; b++) {
            flood_set *fs = &fls[b];
            g_batch = fs->batch;
            for (k = 0; k < reps; k++)
                for (m = 0; m < M_COUNT; m++) flood_run(m, flood_m, &fs->run[m][k]);
            for (m = 0; m < M_COUNT; m++) {
                double v[MAX_REPS], med;
                for (k = 0; k < reps; k++) v[k] = fs->run[m][k].cpu_ms;
                med = median_d(v, reps);
                fs->med[m] = 0;
                for (k = 0; k < reps; k++)
                    if (fabs(fs->run[m][k].cpu_ms - med) < fabs(fs->run[m][fs->med[m]].cpu_ms - med)) fs->med[m] = k;
            }
        }
    }

    /* 3. SendData throughput, kinds interleaved */
    if (do_data) {
        double mbs[TP_COUNT][MAX_REPS], cs[TP_COUNT][MAX_REPS], cr[TP_COUNT][MAX_REPS], cm[TP_COUNT][MAX_REPS];
        int t;
        (void)cred_for("tp-recv"); /* the children inherit the certificates */
        (void)cred_for("tp-send");
        if (mbedtls_ctr_drbg_random(&g_drbg, g_tp_psk, sizeof g_tp_psk) != 0) exit(2);
        for (t = 0; t < TP_COUNT; t++) { /* unmeasured warm-up of each kind: 1/16 of its bytes */
            tp_result rr, rs;
            if (tp_pair(t, tp_mb[t] * 1000000LL / MSG_SIZE / 16, &rr, &rs) != 0) {
                fprintf(stderr, BENCH_NAME ": FAILED: %s (warm-up): %s\n", tpname[t],
                        rr.err[0] ? rr.err : rs.err[0] ? rs.err : "a child failed");
                failures++;
            }
        }
        for (k = 0; k < reps; k++) {
            for (t = 0; t < TP_COUNT; t++) {
                tp_result rr, rs;
                long long count = tp_mb[t] * 1000000LL / MSG_SIZE;
                double sec;
                if (tp_pair(t, count, &rr, &rs) != 0) {
                    fprintf(stderr, BENCH_NAME ": FAILED: %s: %s\n", tpname[t], rr.err[0] ? rr.err : rs.err[0] ? rs.err : "a child failed");
                    failures++;
                    continue;
                }
                if (rr.msgs != count || rr.bad || rr.sum != rs.sum) {
                    fprintf(stderr, BENCH_NAME ": FAILED: %s: %lld of %lld messages, %lld wrong, checksum %s\n", tpname[t],
                            rr.msgs, count, rr.bad, rr.sum == rs.sum ? "ok" : "MISMATCH");
                    failures++;
                    continue;
                }
                sec = (double)(rr.t1 - rs.t0) / 1e9;
                mbs[t][tp[t].ran] = (double)count * MSG_SIZE / 1e6 / sec;
                cs[t][tp[t].ran] = 100.0 * (double)rs.cpu_ns / 1e9 / sec;
                cr[t][tp[t].ran] = 100.0 * (double)rr.cpu_ns / 1e9 / sec;
                cm[t][tp[t].ran] = (double)(rs.cpu_ns + rr.cpu_ns) / 1e6 / ((double)count * MSG_SIZE / 1e6);
                tp[t].bytes = count * MSG_SIZE;
                tp[t].ran++;
            }
            tp_runs++;
        }
        for (t = 0; t < TP_COUNT; t++) {
            if (tp[t].ran != tp_runs) continue; /* a failed run: no figure (the run fails) */
            tp[t].mbs = median_d(mbs[t], tp_runs);
            tp[t].cpu_s = median_d(cs[t], tp_runs);
            tp[t].cpu_r = median_d(cr[t], tp_runs);
            tp[t].cpu_mb = median_d(cm[t], tp_runs);
        }
    }

    /* 4. memory */
    if (do_mem) {
        for (m = M_PSK; m < M_COUNT; m++) mem_raw(m, mem_k, &memraw[m]);
        for (m = 0; m < M_COUNT; m++) mem_p2p(m, mem_k, &mem[m]);
    }

    /* ---------------- report ---------------- */
    {
        double cc_enc = aead[0].enc_mbs, cc_dec = aead[0].dec_mbs;
        double ceil_mbs = cc_enc < cc_dec ? cc_enc : cc_dec;

        printf("\n0. Machine: mbedTLS on one core (MB/s, 1 MB = 10^6 B)\n");
        printf("  AEAD, 16 KiB records, 13-byte AAD (best of %d trials of %.2f s):\n", BEST_OF, aead_s / BEST_OF);
        printf("  %-20s %10s %10s\n", "cipher", "encrypt", "decrypt");
        printf("  %-20s %10.0f %10.0f   (the suite both providers negotiate)\n", "ChaCha20-Poly1305", aead[0].enc_mbs,
               aead[0].dec_mbs);
        printf("  %-20s %10.0f %10.0f   (AES-NI support %s; offered by p2pgraph-tls-cert after ChaCha20)\n", "AES-128-GCM",
               aead[1].enc_mbs, aead[1].dec_mbs,
#if defined(MBEDTLS_AESNI_C)
               "compiled in"
#else
               "not compiled in"
#endif
        );
        printf("  record layer, TLS-PSK ChaCha20-Poly1305, mbedtls_ssl_write + mbedtls_ssl_read of one record in memory\n"
               "  (best of %d):\n", BEST_OF);
        printf("  %.2f us at %d B, %.2f us at %d B -> %.2f us per record + %.3f ns per byte (%.0f MB/s)\n",
               rc.us_small, REC_SMALL, rc.us_big, AEAD_RECORD, rc.a_us, rc.b_us * 1000.0, rc.b_us > 0 ? 1.0 / rc.b_us : 0.0);

        if (do_hs) {
            printf("\n1. Handshakes, one at a time, both ends in this process and thread (full handshakes, no resumption;\n"
                   "   %d rounds of every row, pooled)\n", HS_ROUNDS);
            printf("  p2pgraph: OpenDirectConnection -> PEER_CONNECTED -> CloseDirectConnection over [::1]; the clock\n"
                   "  stops at the listener's last DISCONNECTED.  raw mbedTLS: client + server contexts over memory.\n");
            printf("  %-24s %6s %10s %11s %9s %9s\n", "what", "count", "per s", "CPU ms/hs", "p50 ms", "p99 ms");
            for (m = M_PSK; m < M_COUNT; m++)
                printf("  %-24s %6d %10.1f %11.3f %9.3f %9.3f\n", m == M_PSK ? "raw mbedTLS ECDHE-PSK" : "raw mbedTLS ECDHE-ECDSA",
                       hsraw[m].n, hsraw[m].per_s, hsraw[m].cpu_ms, hsraw[m].p50_ms, hsraw[m].p99_ms);
            for (m = 0; m < M_COUNT; m++) {
                char w[40];
                snprintf(w, sizeof w, "p2pgraph %s", mname[m]);
                printf("  %-24s %6d %10.1f %11.3f %9.3f %9.3f\n", w, hs[m].n, hs[m].per_s, hs[m].cpu_ms, hs[m].p50_ms,
                       hs[m].p99_ms);
            }
            for (m = M_PSK; m < M_COUNT; m++) {
                double extra = 1000.0 / hs[m].per_s - 1000.0 / hs[M_PLAIN].per_s, raw = 1000.0 / hsraw[m].per_s;
                double cextra = hs[m].cpu_ms - hs[M_PLAIN].cpu_ms;
                printf("  %s: p2pgraph rate / raw mbedTLS rate = %.2fx (CPU per handshake: raw / p2pgraph = %.2fx)\n"
                       "    the TLS part of a link = %.3f ms of wall time over a plain link's %.3f ms = %.2fx mbedTLS's own\n"
                       "    handshake (%.3f ms); in CPU %.3f ms over plain = %.2fx mbedTLS's %.3f ms\n",
                       mname[m], ratio(hs[m].per_s, hsraw[m].per_s), ratio(hsraw[m].cpu_ms, hs[m].cpu_ms), extra,
                       1000.0 / hs[M_PLAIN].per_s, ratio(extra, raw), raw, cextra, ratio(cextra, hsraw[m].cpu_ms),
                       hsraw[m].cpu_ms);
            }
        }

        if (do_flood) {
            printf("\n2. Flooding: %d nodes in one process over [::1], ladder (node i -> i-1, i-2), %d records of %d B added\n"
                   "   at node 0; process CPU and wall time from the first add until every node popped every record\n"
                   "   (the run with the median CPU of %d, modes interleaved, after one unmeasured plain run;\n"
                   "   us/deliv = / (records x %d receiving nodes); sends, reads = socket calls that moved bytes, per\n"
                   "   flooded record; TLS recs = application-data records sent per flooded record, counted on the\n"
                   "   wire; B/TLS rec = their average length)\n",
                   FLOOD_NODES, flood_m, REC_PAYLOAD, reps, FLOOD_NODES - 1);
            for (b = 0; b < npat; b++) print_flood(&fls[b], flood_m, reps, &rc);
        }

        if (do_data) {
            printf("\n3. SendData throughput, two processes, one direct connection, %d B messages, one direction\n"
                   "   (MB/s, 1 MB = 10^6 B; median of %d run%s after one unmeasured; CPU = each end's CPU time over\n"
                   "   the elapsed time)\n",
                   MSG_SIZE, reps, reps > 1 ? "s" : "");
            printf("  %-20s %6s %9s %9s %9s %7s %7s %10s %9s\n", "what", "MB", "MB/s", "vs plain", "vs AEAD", "CPU s",
                   "CPU r", "CPU ms/MB", "x plain");
            for (k = 0; k < TP_COUNT; k++) {
                if (tp[k].ran != tp_runs) {
                    printf("  %-20s FAILED (see above)\n", tpname[k]);
                    continue;
                }
                printf("  %-20s %6lld %9.1f %8.2fx %8.2fx %6.0f%% %6.0f%% %10.3f %8.2fx\n", tpname[k], tp[k].bytes / 1000000LL,
                       tp[k].mbs, ratio(tp[k].mbs, tp[TP_PLAIN].mbs), ratio(tp[k].mbs, ceil_mbs), tp[k].cpu_s, tp[k].cpu_r,
                       tp[k].cpu_mb, ratio(tp[k].cpu_mb, tp[TP_PLAIN].cpu_mb));
            }
            printf("  vs AEAD = / the ChaCha20-Poly1305 ceiling of part 0 with a core per end: the slower of encrypt and\n"
                   "  decrypt, %.0f MB/s.  With both ends on one core it would be 1 / (1/encrypt + 1/decrypt) = %.0f MB/s.\n"
                   "  CPU ms/MB = both ends' CPU time per MB moved (does not depend on how the two ends were scheduled).\n",
                   ceil_mbs, 1.0 / (1.0 / cc_enc + 1.0 / cc_dec));
            if (tp[TP_PLAIN].ran == tp_runs && tp[TP_PLAIN].cpu_s + tp[TP_PLAIN].cpu_r < 130)
                printf("  note: the two ends together got %.0f%% of a core in the plain run: something else was running on\n"
                       "  this 2-CPU machine, so each end did not have a core of its own.\n",
                       tp[TP_PLAIN].cpu_s + tp[TP_PLAIN].cpu_r);
        }

        if (do_mem) {
            printf("\n4. Memory of K = %d idle, established links (heap growth, glibc mallinfo2 uordblks + hblkhd;\n"
                   "   both ends in this process: per endpoint = growth / 2K)\n", mem_k);
            printf("  %-24s %12s %14s %16s\n", "what", "growth", "per endpoint", "above plain");
            for (m = M_PSK; m < M_COUNT; m++)
                printf("  %-24s %12lld %14.0f\n", m == M_PSK ? "raw mbedTLS ECDHE-PSK" : "raw mbedTLS ECDHE-ECDSA",
                       memraw[m].growth, (double)memraw[m].growth / (2.0 * memraw[m].k));
            for (m = 0; m < M_COUNT; m++) {
                char w[40];
                double pe = (double)mem[m].growth / (2.0 * mem[m].k), pp = (double)mem[M_PLAIN].growth / (2.0 * mem[M_PLAIN].k);
                snprintf(w, sizeof w, "p2pgraph %s", mname[m]);
                if (m == M_PLAIN) printf("  %-24s %12lld %14.0f\n", w, mem[m].growth, pe);
                else
                    printf("  %-24s %12lld %14.0f %16.0f  (%.2fx raw mbedTLS's endpoint)\n", w, mem[m].growth, pe, pe - pp,
                           ratio(pe - pp, (double)memraw[m].growth / (2.0 * memraw[m].k)));
            }
        }

        printf("\nTargets\n");
        if (do_flood)
            for (b = 0; b < npat; b++)
                for (m = M_PSK; m < M_COUNT; m++) {
                    const flood_set *fs = &fls[b];
                    const flood_res *x = &fs->run[m][fs->med[m]], *p = &fs->run[M_PLAIN][fs->med[M_PLAIN]];
                    double r = ratio(x->cpu_ms, p->cpu_ms);
                    double floor_ms = ((double)x->recs * rc.a_us + ((double)x->rec_bytes - 16.0 * (double)x->recs) * rc.b_us) / 1000.0;
                    double best = ratio(p->cpu_ms + floor_ms, p->cpu_ms);
                    printf("  %s CPU per flooded record, %s (%d per step), <= %.2fx plain: %.2fx %s\n"
                           "    (plain + mbedTLS's record layer alone = %.2fx: the target is %s with mbedTLS %s)\n",
                           mname[m], fs->batch == 1 ? "paced" : "burst", fs->batch, TARGET_CPU, r, pass(r > 0 && r <= TARGET_CPU),
                           best, best <= TARGET_CPU ? "reachable" : "out of reach", MBEDTLS_VERSION_STRING);
                }
        if (do_data)
            for (m = M_PSK; m < M_COUNT; m++) {
                double r = ratio(tp[m].mbs, tp[TP_PLAIN].mbs);
                printf("  %s SendData throughput >= %.1fx plain: %.2fx %s (%.0f of %.0f MB/s; the AEAD ceiling is %.0f MB/s,\n"
                       "    %.2fx plain, so the target is %s on this machine)\n",
                       mname[m], TARGET_THRU, r, pass(tp[m].ran == tp_runs && r >= TARGET_THRU), tp[m].mbs, tp[TP_PLAIN].mbs,
                       ceil_mbs, ratio(ceil_mbs, tp[TP_PLAIN].mbs),
                       ceil_mbs >= TARGET_THRU * tp[TP_PLAIN].mbs ? "reachable" : "out of reach");
            }
        if (do_hs)
            for (m = M_PSK; m < M_COUNT; m++)
                printf("  %s handshakes (no target): %.0f per s = %.2fx raw mbedTLS's %.0f per s\n", mname[m], hs[m].per_s,
                       ratio(hs[m].per_s, hsraw[m].per_s), hsraw[m].per_s);
        if (do_mem)
            for (m = M_PSK; m < M_COUNT; m++)
                printf("  %s memory per idle link endpoint (no target; README: about 40 KB): %.1f KB, plain %.1f KB\n", mname[m],
                       (double)mem[m].growth / (2.0 * mem[m].k) / 1000.0,
                       (double)mem[M_PLAIN].growth / (2.0 * mem[M_PLAIN].k) / 1000.0);
    }
    printf("\ntotal run time %.1f s\n", ((double)now_ns() - tstart) / 1e9);
    fflush(stdout);
    mbedtls_ctr_drbg_free(&g_drbg);
    mbedtls_entropy_free(&g_ent);
    free(g_sp);
    for (m = 0; m < M_COUNT; m++) {
        free(hs[m].lat);
        free(hsraw[m].lat);
    }
    if (failures) {
        fprintf(stderr, BENCH_NAME ": %d measurement%s failed\n", failures, failures > 1 ? "s" : "");
        return 1;
    }
    return 0;
}
#endif
